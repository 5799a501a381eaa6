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
    """Two bare notebooks (no .py sources) and a profile: enough for the runner, papermill faked."""
    import nbformat

    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    for stem in ("00_a", "01_b"):
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        cell = nbformat.v4.new_code_cell('run_dir = ""\nprofile = ""\nseed = 0\nx = 1')
        cell.metadata["tags"] = ["parameters"]
        nb.cells = [cell, nbformat.v4.new_code_cell("open('big', 'w').write('x' * 10**9)")]
        nbformat.write(nb, nbs / f"{stem}.ipynb")
    (tmp_path / "p.yaml").write_text("seed: 0\n")
    return nbs, tmp_path / "p.yaml"


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
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from t2a_lib.run import files, runner

    def execute(src, out, **kw):
        if "01_b" in src:
            monkeypatch.setattr(files, "open", _FullDisk(open), raising=False)  # the disk fills up here
            raise PapermillExecutionError(1, 1, "open('big', 'w').write('x' * 10**9)", "OSError",
                                          "[Errno 28] No space left on device", [])
        Path(out).write_text(Path(src).read_text())
        Path(out).with_suffix(".json").write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    nbs, prof = bare_project(tmp_path)
    run_dir = tmp_path / "run"
    code = runner.main(["--profile", str(prof), "--notebooks-dir", str(nbs), "--run-dir", str(run_dir),
                        "--report-dir", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith("error: stage 01_b failed in cell 2"), err  # the real error, first
    assert "No space left on device" in "\n".join(lines[:4])
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

def _fake_papermill(monkeypatch):
    import papermill

    def execute(src, out, **kw):
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


def test_a_tango_header_calling_a_float_tensor_i32_is_refused_naming_it(tiny_tango, tmp_path):
    import torch
    from safetensors.torch import save_file

    from t2a_lib.model.checkpoints import CheckpointError
    from t2a_lib.model.tango_checkpoint import load_tango

    folder = Path(shutil.copytree(tiny_tango, tmp_path / "t"))
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

    folder = Path(shutil.copytree(tiny_tango, tmp_path / "t"))
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
