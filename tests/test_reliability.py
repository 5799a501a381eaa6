"""The third fault catalogue (issue 37): one run per folder, workers that die with their parent,
releases verified by content hash, profiles parsed strictly, failures that fail cleanly, weights
that lie refused, and a run folder that holds only what its last parameters produce. Each test
makes the fault for real (a flipped byte, a second process, a SIGKILL, a write raising ENOSPC)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from t2a_lib.model import release
from t2a_lib.model.release import RELEASES
from t2a_lib.run.files import CorruptFileError, load_safetensors

ROOT = Path(__file__).resolve().parents[1]


# -- releases: content hashes --------------------------------------------------------------

def _copy_release(tmp_path, part="scorers"):
    return Path(shutil.copytree(RELEASES / part, tmp_path / part))


def _flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("part", ["base", "scorers"])
def test_committed_release_hashes_match_its_files(part):
    """release.json lists every file of the committed release with its sha256 (hashed here anew)."""
    info = release.read_release(RELEASES / part)
    on_disk = sorted(p.relative_to(RELEASES / part).as_posix() for p in (RELEASES / part).rglob("*")
                     if p.is_file() and p.name != "release.json")
    assert sorted(info["files"]) == on_disk
    for name, digest in info["files"].items():
        assert hashlib.sha256((RELEASES / part / name).read_bytes()).hexdigest() == digest, name


def test_one_flipped_weight_byte_in_a_release_is_refused_naming_the_file(tmp_path):
    folder = _copy_release(tmp_path)
    weights = folder / "rankers" / "detector" / "model.safetensors"
    release.verify_release(folder, release.read_release(folder))  # intact: accepted
    _flip_byte(weights, weights.stat().st_size - 5)  # in the tensor data: the header still parses
    assert load_safetensors(weights)  # safetensors itself takes it
    with pytest.raises(release.ReleaseError) as err:
        release.read_release(folder, verify=True)
    msg = str(err.value)
    assert "rankers/detector/model.safetensors" in msg and "git checkout" in msg and "delete" not in msg
    with pytest.raises(release.ReleaseError, match="model.safetensors"):  # before the world is compared
        release.matching_release(folder, tmp_path / "no-world")


def test_a_release_without_hashes_or_with_a_missing_file_is_refused(tmp_path):
    folder = _copy_release(tmp_path)
    (folder / "judges" / "detector" / "losses.json").unlink()
    with pytest.raises(release.ReleaseError, match="judges/detector/losses.json: missing"):
        release.read_release(folder, verify=True)
    info = release.read_release(folder)
    del info["files"]
    (folder / "release.json").write_text(json.dumps(info))
    with pytest.raises(release.ReleaseError, match="lists no file hashes"):
        release.read_release(folder, verify=True)


def test_write_hashes_records_what_is_there(tmp_path):
    folder = _copy_release(tmp_path)
    _flip_byte(folder / "MODEL_CARD.md", 3)
    info = release.write_hashes(folder)
    assert info["files"]["MODEL_CARD.md"] == hashlib.sha256((folder / "MODEL_CARD.md").read_bytes()).hexdigest()
    release.verify_release(folder, release.read_release(folder))


def test_a_damaged_release_header_advises_git_not_delete(tmp_path, monkeypatch):
    """The header check's advice fits the file: a release file is restored, a run's is deleted."""
    from t2a_lib.run import files

    folder = _copy_release(tmp_path)
    weights = folder / "judges" / "detector" / "model.safetensors"
    _flip_byte(weights, 2)  # the header length: safetensors refuses it
    monkeypatch.setattr(files, "RELEASES", tmp_path)
    with pytest.raises(CorruptFileError) as err:
        load_safetensors(weights)
    assert "git checkout -- " in str(err.value) and "delete it" not in str(err.value)
    run_copy = tmp_path.parent / f"{tmp_path.name}-run" / "model.safetensors"
    run_copy.parent.mkdir()
    shutil.copy(weights, run_copy)
    with pytest.raises(CorruptFileError, match="delete it to retrain"):
        load_safetensors(run_copy)
