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


# -- profiles and sources: parsed strictly ---------------------------------------------------

def paired_project(tmp_path, stems=("00_a", "01_b")):
    """A notebooks folder of jupytext pairs (.py source, .ipynb made from it) and a profile."""
    import jupytext

    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    for stem in stems:
        src = ('# %% [markdown]\n# A stage.\n\n# %% tags=["parameters"]\nrun_dir = ""\nprofile = ""\nseed = 0\n'
               'x = 1\n\n# %%\nprint(x)\n')
        (nbs / f"{stem}.py").write_text(src)
        nb = jupytext.read(nbs / f"{stem}.py")
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        jupytext.write(nb, nbs / f"{stem}.ipynb")
    (tmp_path / "p.yaml").write_text("seed: 0\n")
    return nbs, tmp_path / "p.yaml"


@pytest.mark.parametrize("text, where", [
    ("seed: 0\nnotebooks:\n  01_b: {x: 1}\n  01_b: {x: 2}\n", "duplicate key '01_b' (first at line 3)"),
    ("seed: 0\nparameters:\n  x: 1\n  x: 2\n", "duplicate key 'x'"),
    ("seed: [1,\n", "bad YAML at line 2"),
    ("seed: 0\n  description: x\n", "bad YAML at line 2"),
    ("", "the profile is empty"),
    ("# only a comment\n", "the profile is empty"),
    ("{}\n", "the profile is empty"),
])
def test_bad_profiles_exit_2_naming_the_file_and_line(tmp_path, capsys, text, where):
    from t2a_lib.run import runner

    nbs, prof = paired_project(tmp_path)
    prof.write_text(text)
    code = runner.main(["--profile", str(prof), "--notebooks-dir", str(nbs), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and str(prof) in err and where in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_notebook_that_differs_from_its_py_is_refused_before_running(tmp_path):
    from t2a_lib.run import profiles
    from t2a_lib.run.runner import RunnerError

    nbs, prof = paired_project(tmp_path)
    assert list(profiles.plan(prof, None, nbs)[2]) == ["00_a", "01_b"]  # in agreement: accepted
    src = nbs / "01_b.py"
    src.write_text(src.read_text().replace("print(x)", "print(x + 1)"))
    with pytest.raises(RunnerError) as err:
        profiles.plan(prof, None, nbs)
    msg = str(err.value)
    assert "01_b.ipynb is out of date with its source" in msg and "cell 3 differs" in msg and "00_a" not in msg
    assert "jupytext --to ipynb" in msg and err.value.exit_code == 2


def test_committed_notebooks_agree_with_their_sources():
    from t2a_lib.run import sources

    found = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert found and sources.check_pairs({p.stem: p for p in found}) == []


def test_a_stray_notebook_copy_is_not_a_stage(tmp_path, capsys):
    from t2a_lib.run import profiles

    nbs, prof = paired_project(tmp_path)
    shutil.copy(nbs / "01_b.ipynb", nbs / "01_b_copy.ipynb")
    assert list(profiles.discover_notebooks(nbs)) == ["00_a", "01_b"]
    capsys.readouterr()
    assert list(profiles.plan(prof, None, nbs)[2]) == ["00_a", "01_b"]
    err = capsys.readouterr().err
    assert "warning: ignoring" in err and "01_b_copy.ipynb" in err and "not a stage" in err


@pytest.mark.parametrize("run_dir", ["notebooks", "t2a_lib/run", ".", "papermill_runs/profiles", "releases/base"])
def test_a_run_dir_in_the_source_tree_is_refused(capsys, run_dir):
    from t2a_lib.run import runner

    before = sorted(p.name for p in (ROOT / run_dir).iterdir())
    code = runner.main(["--profile", "smoke", "--run-dir", run_dir, "--only", "00"])
    err = capsys.readouterr().err
    assert code == 2 and "lies in the source tree" in err and "--run-dir" in err, err
    assert sorted(p.name for p in (ROOT / run_dir).iterdir()) == before  # nothing written there


# -- failing cleanly -------------------------------------------------------------------------

def bare_project(tmp_path):
    """Two bare notebooks (no .py sources) and a profile: the runner's fixture of the first catalogue."""
    from test_bad_input import fixture_project

    return fixture_project(tmp_path)


class _FullDisk:
    """``open`` for t2a_lib.run.files on a full disk: a write raises ENOSPC unless it overwrites
    bytes an existing file already holds (as on a real full disk: no new blocks are needed)."""

    def __init__(self, real):
        self.real = real

    def __call__(self, file, mode="r", *args, **kwargs):
        import errno
        import os

        f = self.real(file, mode, *args, **kwargs)
        room = os.fstat(f.fileno()).st_size if "r+" in mode else 0
        write = f.write

        def full_write(data):
            if f.tell() + len(data) > room:
                raise OSError(errno.ENOSPC, "No space left on device")
            return write(data)
        f.write = full_write
        return f


def test_a_full_disk_shows_the_stage_error_first_and_leaves_runner_json_failed(tmp_path, capsys, monkeypatch):
    from papermill.exceptions import PapermillExecutionError

    from t2a_lib.run import files, runner

    def fill_the_disk():
        monkeypatch.setattr(files, "open", _FullDisk(open), raising=False)
        (run_dir / "01_b.ipynb").write_text('{"cells": [{"cell_type": "co')  # papermill's copy, cut short
        raise PapermillExecutionError(1, 1, "pass", "OSError", "[Errno 28] No space left on device", [])

    run_dir = tmp_path / "run"
    _fake_papermill(monkeypatch, on_01_b=fill_the_disk)
    nbs, prof = bare_project(tmp_path)
    code = runner.main(["--profile", str(prof), "--notebooks-dir", str(nbs), "--run-dir", str(run_dir),
                        "--report-dir", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith("error: stage 01_b failed in cell 2"), err  # the real error, first
    assert "No space left on device" in "\n".join(lines[:4])
    assert "01_b.ipynb (cut short, not readable" in err  # the truncated executed copy is named as such
    assert any(line.startswith("warning: cannot write") and "runner.json" in line for line in lines)
    state = json.loads((run_dir / "runner.json").read_text())
    assert state["status"] == "failed" and [s["status"] for s in state["stages"]] == ["ok", "failed"]
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind


def test_atomic_writes_use_a_temporary_name_unique_to_the_process_and_call(tmp_path, monkeypatch):
    import os

    from t2a_lib.run import files

    seen = []
    real = os.replace
    monkeypatch.setattr(files.os, "replace", lambda a, b: (seen.append(Path(a).name), real(a, b)))
    files.write_json(tmp_path / "r.json", {"a": 1})
    files.write_json(tmp_path / "r.json", {"a": 2})
    assert len(set(seen)) == 2 and all(f".r.json.{os.getpid()}." in name for name in seen)
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 2}


def _old_report(report_dir: Path) -> None:
    (report_dir / "notebooks").mkdir(parents=True)
    (report_dir / "index.html").write_text("old index")
    (report_dir / "summary.json").write_text('{"old": true}')
    (report_dir / "notebooks" / "00_gone.html").write_text("a page of a stage no longer run")


def test_the_report_is_swapped_in_whole_or_not_at_all(tmp_path, monkeypatch, capsys):
    from t2a_lib.evaluate import report
    from t2a_lib.run import runner

    run_dir, report_dir = tmp_path / "run", tmp_path / "rep"
    run_dir.mkdir()
    _old_report(report_dir)
    (tmp_path / ".rep.building-999999999").mkdir()  # a build SIGKILLed half way (no such pid now)

    def dies_half_way(run, out, name):  # notebook pages written, then the build fails
        (Path(out) / "notebooks").mkdir(parents=True)
        (Path(out) / "notebooks" / "00_a.html").write_text("new page")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "build_report", dies_half_way)
    assert runner._build_report(run_dir, report_dir, "p") is None
    assert "the report could not be built" in capsys.readouterr().err
    assert sorted(p.relative_to(report_dir).as_posix() for p in report_dir.rglob("*")) == \
        ["index.html", "notebooks", "notebooks/00_gone.html", "summary.json"]  # the old report, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "run"]  # no half-built folder left
    monkeypatch.undo()
    path = runner._build_report(run_dir, report_dir, "p")
    assert path == report_dir / "index.html" and "old index" not in path.read_text()
    assert not (report_dir / "notebooks" / "00_gone.html").exists()  # nothing of the old one left beside it
    assert json.loads((report_dir / "summary.json").read_text())["profile"] == "p"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "run"]


# -- one runner per run folder ---------------------------------------------------------------

def _fake_papermill(monkeypatch, on_01_b=None):
    """papermill.execute_notebook copying the notebook and writing its results; ``on_01_b()`` runs
    in place of stage 01_b when given (to make it fail)."""
    import papermill

    def execute(src, out, **kw):
        if on_01_b is not None and "01_b" in src:
            on_01_b()
        Path(out).write_text(Path(src).read_text())
        Path(out).with_suffix(".json").write_text("{}")
    monkeypatch.setattr(papermill, "execute_notebook", execute)


def test_a_second_runner_on_a_folder_in_use_exits_2_naming_the_holder(tmp_path, capsys, monkeypatch):
    import os
    import signal
    import subprocess
    import sys

    from t2a_lib.run import runner
    from t2a_lib.run.lock import LOCK_FILE

    _fake_papermill(monkeypatch)
    nbs, prof = bare_project(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(  # the first runner, holding the folder
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from t2a_lib.run.lock import acquire; "
         "acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)", str(run_dir)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = ["--profile", str(prof), "--notebooks-dir", str(nbs), "--run-dir", str(run_dir), "--report-dir",
                str(tmp_path / "rep")]
        code = runner.main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert f"in use by another runner (pid {holder.pid} on this host" in err
        assert not (run_dir / "runner.json").exists()  # it wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run_dir / LOCK_FILE).exists()  # left by the killed runner: stale
    assert runner.main(argv) == 0
    err = capsys.readouterr().err
    assert "taking over the stale lock" in err and f"pid {holder.pid}" in err
    assert json.loads((run_dir / "runner.json").read_text())["status"] == "ok"
    assert not (run_dir / LOCK_FILE).exists()  # released when the run ended


def test_a_lock_held_on_another_host_is_not_taken_over(tmp_path):
    from t2a_lib.run.lock import LOCK_FILE, FolderInUse, acquire

    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "then"}))
    with pytest.raises(FolderInUse, match="pid 1 on host elsewhere"):
        acquire(tmp_path)


# -- workers bound to their parent -----------------------------------------------------------

ORPHAN_SCRIPT = """
import os, sys, time
from t2a_lib.run.parallel import start_pool
pool = start_pool(2, 1)
pids = [f.result() for f in [pool.submit(os.getpid) for _ in range(4)]]  # workers started and initialised
[pool.submit(time.sleep, 120) for _ in range(2)]  # then busy for two minutes
print(" ".join(str(p) for p in sorted(set(pool._processes))), flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has ended


@pytest.mark.slow  # spawns two workers that import torch, diffusers and transformers (~20 s on 2 busy cores)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_workers_of_a_sigkilled_parent_end_within_10_s():
    import os
    import signal
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_running(p) for p in workers)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while any(_running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    orphans = [p for p in workers if _running(p)]
    for p in orphans:  # leave nothing behind, then fail
        os.kill(p, signal.SIGKILL)
    assert not orphans, f"workers {orphans} outlived their SIGKILLed parent by 10 s"


# -- weights that lie ------------------------------------------------------------------------

def _retype(path: Path, key: str, dtype: str = "I32") -> None:
    """Rewrite one tensor's dtype in a safetensors header (same byte size: F32 -> I32)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header[key]["dtype"] = dtype
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n
    path.write_bytes(data[:8] + text.ljust(n, b" ") + data[8 + n:])


@pytest.fixture(scope="module")
def tiny_tango(tmp_path_factory):
    from checkpoint_fixtures import make_tiny_tango

    return make_tiny_tango(tmp_path_factory.mktemp("tango"), seed=0)


def _copy_snapshot(tiny_tango: Path, tmp_path: Path) -> Path:
    """A copy of the tiny snapshot with the flan-t5-large folder that stands beside it, as published."""
    shutil.copytree(tiny_tango.parent / "flan-t5-large", tmp_path / "flan-t5-large")
    return Path(shutil.copytree(tiny_tango, tmp_path / "t"))


def test_a_tango_header_calling_a_float_tensor_i32_is_refused_naming_it(tiny_tango, tmp_path):
    import torch
    from safetensors.torch import save_file

    from t2a_lib.model.checkpoints import CheckpointError
    from t2a_lib.model.tango_checkpoint import load_tango

    folder = _copy_snapshot(tiny_tango, tmp_path)
    main = torch.load(folder / "pytorch_model_main.bin", weights_only=True)
    (folder / "pytorch_model_main.bin").unlink()
    save_file({k: v.clone().contiguous() for k, v in main.items()}, str(folder / "pytorch_model_main.safetensors"))
    assert load_tango(folder)["unet"] is not None  # the safetensors copy as written loads
    _retype(folder / "pytorch_model_main.safetensors", "unet.conv_in.weight")
    with pytest.raises(CheckpointError) as err:
        load_tango(folder)
    msg = str(err.value)
    assert "conv_in.weight: file torch.int32 vs model torch.float32" in msg and "pytorch_model_main.safetensors" in msg


def test_nan_tango_vocoder_weights_are_refused_naming_the_tensor(tiny_tango, tmp_path):
    import torch

    from t2a_lib.model.checkpoints import CheckpointError
    from t2a_lib.model.tango_checkpoint import load_tango

    folder = _copy_snapshot(tiny_tango, tmp_path)
    vae = torch.load(folder / "pytorch_model_vae.bin", weights_only=True)
    key = next(k for k in sorted(vae) if k.startswith("vocoder.") and k.endswith("weight"))
    vae[key].view(-1)[0] = float("nan")
    torch.save(vae, folder / "pytorch_model_vae.bin")
    with pytest.raises(CheckpointError) as err:
        load_tango(folder)
    assert key in str(err.value) and "NaN or Inf" in str(err.value) and "pytorch_model_vae.bin" in str(err.value)


@pytest.fixture(scope="module")
def tiny_audioldm(tmp_path_factory):
    from checkpoint_fixtures import make_tiny_audioldm

    return make_tiny_audioldm(tmp_path_factory.mktemp("audioldm"), seed=0)


@pytest.mark.parametrize("fault", ["I32", "NaN"])
def test_audioldm_weights_that_lie_are_refused_naming_them(tiny_audioldm, tmp_path, fault):
    import torch
    from safetensors.torch import load_file, save_file

    from t2a_lib.model.audioldm_checkpoint import load_audioldm
    from t2a_lib.model.checkpoints import CheckpointError

    folder = Path(shutil.copytree(tiny_audioldm, tmp_path / "a"))
    weights = next((folder / "vocoder").glob("*.safetensors"))
    key = "conv_post.weight"
    if fault == "I32":
        _retype(weights, key)
    else:
        sd = load_file(str(weights))
        sd[key].view(-1)[0] = float("inf")
        save_file(sd, str(weights), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as err:
        load_audioldm(folder)
    assert key in str(err.value) and "vocoder" in str(err.value)
    assert ("torch.int32" if fault == "I32" else "NaN or Inf") in str(err.value)


def test_dpo_from_a_nan_base_names_the_cause_and_claims_no_checkpoint(tmp_path):
    import torch

    from t2a_lib.align.dpo import DPOConfig, PairBank, train_dpo
    from t2a_lib.model.components import MiniTangoConfig, make_train_scheduler, make_unet
    from t2a_lib.model.diffusion import TextBank

    tiny = MiniTangoConfig(unet_channels=(16, 16, 16), unet_head_dim=8, text_dim=32)
    torch.manual_seed(0)
    unet = make_unet(tiny)
    with torch.no_grad():
        unet.conv_in.weight.view(-1)[0] = float("nan")
    g = torch.Generator().manual_seed(0)
    text = TextBank(torch.randn(4, 5, 32, generator=g), torch.ones(4, 5, dtype=torch.long),
                    torch.zeros(1, 5, 32), torch.tensor([[1, 0, 0, 0, 0]]))
    pairs = PairBank(torch.randn(4, 8, 64, 16, generator=g), torch.randn(4, 8, 64, 16, generator=g), text)
    with pytest.raises(FloatingPointError) as err:
        train_dpo(unet, make_train_scheduler(tiny), pairs, DPOConfig(steps=2, batch_size=4, lr=1e-3, warmup=1),
                  out_dir=tmp_path / "dpo", progress=False)
    msg = str(err.value)
    assert "at step 0" in msg and "already hold NaN/Inf" in msg and "conv_in.weight" in msg
    assert "no checkpoint was written" in msg and not (tmp_path / "dpo" / "checkpoint").exists()


# -- the run folder holds only what the last run's parameters produce ------------------------

def _tiny_unet():
    import torch

    from t2a_lib.model.components import MiniTangoConfig, make_unet

    torch.manual_seed(0)
    return make_unet(MiniTangoConfig(unet_channels=(16, 16, 16), unet_head_dim=8, text_dim=32))


def _trainer(value: float, calls: list):
    """A 'training' that sets every weight to ``value`` (so the saved weights say which fit made them)."""
    import torch

    def train(unet):
        calls.append(value)
        with torch.no_grad():
            for p in unet.parameters():
                p.fill_(value)
        return {"seconds": 0.0, "history": [{"loss": value}]}
    return train


def _weight(unet) -> float:
    return float(next(unet.parameters()).detach().flatten()[0])


def test_stale_seed_folders_are_moved_aside_and_never_read(tmp_path, capsys):
    from t2a_lib.evaluate import reproduce
    from t2a_lib.model.fits import fit_finetuned

    base, run, calls = _tiny_unet(), tmp_path / "run", []
    for k in (0, 1):  # the first run: n_seeds 2
        fit_finetuned(reproduce.model_dir(run, "dpo", k), base, {"seed": k}, _trainer(0.1 + k, calls))
    assert [len(f) for f in reproduce.model_folders(run).values()] == [2]
    jobs = {("dpo", 0): None}  # the rerun: n_seeds 1 (as notebook 04 calls it, with its jobs)
    moved = reproduce.retire_stale_models(run, ("dpo", "gold"), jobs)
    assert [p.relative_to(run).as_posix() for p in moved] == ["models/dpo/superseded-s1"]
    assert "models/dpo/s1 -> superseded-s1" in capsys.readouterr().out
    assert reproduce.model_folders(run) == {"dpo": [run / "models" / "dpo" / "s0" / "unet"]}  # what 07 reads
    assert [_weight(u) for u in reproduce.load_models(run)["dpo"]] == pytest.approx([0.1])
    (run / "models" / "dpo" / "s2" / "unet").mkdir(parents=True)  # weights without a fit record
    assert len(reproduce.model_folders(run)["dpo"]) == 1


def test_a_fit_killed_between_weights_and_record_never_passes_for_another(tmp_path, monkeypatch):
    from t2a_lib.model import fits
    from t2a_lib.model.tango import load_unet

    base, folder, calls = _tiny_unet(), tmp_path / "dpo" / "s0", []
    unet, _ = fits.fit_finetuned(folder, base, {"lr": 1}, _trainer(0.25, calls))  # setting A, done
    real_save = fits.save_fit

    def killed(*a, **kw):  # setting B dies after its UNet is saved, before its fit.json
        raise KeyboardInterrupt
    monkeypatch.setattr(fits, "save_fit", killed)
    with pytest.raises(KeyboardInterrupt):
        fits.fit_finetuned(folder, base, {"lr": 2}, _trainer(0.75, calls))
    monkeypatch.setattr(fits, "save_fit", real_save)
    unet, history = fits.fit_finetuned(folder, base, {"lr": 1}, _trainer(-1.0, calls))  # back to A
    assert calls == [0.25, 0.75] and _weight(unet) == pytest.approx(0.25) and history == [{"loss": 0.25}]
    assert _weight(load_unet(folder / "unet")) == pytest.approx(0.25)  # A's own weights came back
    assert [p.name for p in folder.glob("unet.unrecorded*")] == ["unet.unrecorded"]  # B's, moved aside
    unet, _ = fits.fit_finetuned(folder, base, {"lr": 2}, _trainer(0.75, calls))  # B again: trained, not trusted
    assert calls == [0.25, 0.75, 0.75] and _weight(unet) == pytest.approx(0.75)


def test_a_truncated_sample_cache_is_named(tmp_path, monkeypatch):
    import numpy as np

    from t2a_lib.audio.features import CacheError
    from t2a_lib.evaluate import evaluation

    path = tmp_path / "cache" / "0123abcd.npy"
    path.parent.mkdir()
    np.save(path, np.ones((4, 4000), np.float32))
    path.write_bytes(path.read_bytes()[:5000])  # cut short (a full disk, a kill)
    monkeypatch.setattr(evaluation, "sample_cache_path", lambda *a: path)
    with pytest.raises(CacheError, match=f"{path}: corrupt cache file"):
        evaluation.generate(None, ["a dog barks"], 0, 2, 1.0, cache_dir=path.parent)


def test_import_then_sampled_then_import_gives_the_releases_pairs(tmp_path):
    import pandas as pd
    import torch
    from safetensors.torch import save_file

    from checkpoint_fixtures import make_tiny_tango
    from real_smoke_fixtures import write_alpaca_shard
    from t2a_lib.align.audio_alpaca import import_audio_alpaca
    from t2a_lib.align.preferences import PreferenceConfig, write_preference_set
    from t2a_lib.model.tango import pipeline_from_checkpoint
    from test_audio_alpaca import _cell, _clip

    pipe = pipeline_from_checkpoint(make_tiny_tango(tmp_path / "tango", seed=0))
    rows = [{"prompt": "A dog barks", "chosen": _cell(_clip(440)), "rejected": _cell(_clip(300)), "strategy": "x"},
            {"prompt": "Rain falls", "chosen": _cell(_clip(550)), "rejected": _cell(_clip(660)), "strategy": "y"}]
    write_alpaca_shard(tmp_path / "copy" / "data" / "train-00000-of-00001.parquet", rows)
    out = tmp_path / "run" / "preferences"
    first = import_audio_alpaca(tmp_path / "copy", out, pipe.vae, 32)
    # the sampled set of notebook 03, written into the same folder
    sampled = pd.DataFrame({"prompt": ["Wind blows"], "chosen_id": ["c0"], "rejected_id": ["c1"], "strategy": ["S1.1"]})
    write_preference_set(out, sampled, {}, PreferenceConfig())
    save_file({"c0": torch.zeros(8, 8, 16), "c1": torch.ones(8, 8, 16)}, out / "latents.safetensors")
    again = import_audio_alpaca(tmp_path / "copy", out, pipe.vae, 32)
    assert again.prompt.tolist() == first.prompt.tolist() == ["A dog barks", "Rain falls"]
    assert pd.read_parquet(out / "preferences.parquet").prompt.tolist() == ["A dog barks", "Rain falls"]
