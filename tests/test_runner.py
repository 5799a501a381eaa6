"""The papermill runner and the report, on tiny fixture notebooks written here with nbformat."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import nbformat
import pytest

from t2a_lib.evaluate.report import flatten, fmt, markdown_tables
from t2a_lib.run import profiles, runner
from t2a_lib.run.profiles import RunnerError, load_profile
from t2a_lib.run.runner import StageFailed, run_profile

ROOT = Path(__file__).resolve().parents[1]

A_PARAMS = 'run_dir = ""\nprofile = ""\nseed = 0\nx = 1\nlabel = "a"'
A_BODY = """import json, os, pathlib
out = {"x2": x * 2, "seed": seed, "profile": profile, "cwd": os.getcwd(), "label": label,
       "nested": {"pi": 3.14159265, "big": 123456.789, "inner": {"n": 3}},
       "per_relation": [{"relation": "then", "acc": 0.61234}, {"relation": "after", "acc": 0.68}],
       "claims": [{"claim": "x doubles", "paper": 2 * x, "ours": x * 2}]}
pathlib.Path(run_dir, "00_a.json").write_text(json.dumps(out))"""
B_PARAMS = 'run_dir = ""\nprofile = ""\nseed = 0\ny = 0'
B_BODY = """import json, pathlib
a = json.loads(pathlib.Path(run_dir, "00_a.json").read_text())
leaked = [name for name in ("x", "label") if name in globals()]
pathlib.Path(run_dir, "01_b.json").write_text(json.dumps({"total": a["x2"] + y, "leaked": leaked}))"""
BAD_PARAMS = 'run_dir = ""\nprofile = ""\nseed = 0'

GOOD_PROFILE = """description: "fixture run"
seed: 7
parameters:
  x: 5
notebooks:
  01_b:
    y: 10
"""


def write_notebook(path: Path, params: str, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


def tiny_png() -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


@pytest.fixture(autouse=True, scope="module")
def venv_python_on_path():
    """The kernel spec 'python3' runs `python`: make it this interpreter."""
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + old
    yield
    os.environ["PATH"] = old


def make_project(tmp: Path, bad: bool = False, profile: str = GOOD_PROFILE):
    nbs = tmp / "notebooks"
    nbs.mkdir(parents=True, exist_ok=True)
    write_notebook(nbs / "00_a.ipynb", A_PARAMS, A_BODY)
    if bad:
        write_notebook(nbs / "01_bad.ipynb", BAD_PARAMS, "a = 1",
                       "raise ValueError(f'boom {a}')\nprint('unreached')", "print('after')")
    else:
        write_notebook(nbs / "01_b.ipynb", B_PARAMS, B_BODY)
    prof = tmp / "fixture.yaml"
    prof.write_text(profile)
    return nbs, prof


def records(run_dir: Path) -> dict:
    return {r["stage"]: r for r in json.loads((run_dir / "runner.json").read_text())["stages"]}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("good")
    nbs, prof = make_project(tmp)
    run_dir, report_dir = tmp / "run", tmp / "report"
    (run_dir / "tables").mkdir(parents=True)
    (run_dir / "figures").mkdir()
    (run_dir / "tables" / "scores.csv").write_text("model,fad\nbase,1.234567\ntango2,0.98765\n")
    (run_dir / "tables" / "paper.md").write_text("# Table 1\n\n| model | KL |\n|---|---:|\n| base | 1.5 |\n")
    (run_dir / "figures" / "curve.png").write_bytes(tiny_png())
    (run_dir / "keep.txt").write_text("mine")
    result = run_profile(prof, run_dir=run_dir, report_dir=report_dir, notebooks_dir=nbs)
    return result, run_dir, report_dir


@pytest.mark.slow  # executes notebooks (a few seconds)
def test_good_profile_runs_all_stages_and_records_them(good_run):
    result, run_dir, _ = good_run
    assert result["status"] == "ok" and result["failed"] is None
    assert (run_dir / "00_a.ipynb").is_file() and (run_dir / "01_b.ipynb").is_file()
    assert (run_dir / "keep.txt").read_text() == "mine"
    a = json.loads((run_dir / "00_a.json").read_text())
    assert a["x2"] == 10 and a["seed"] == 7 and a["profile"] == "fixture"
    assert a["cwd"] == str(ROOT)  # notebooks run from the repository root
    assert json.loads((run_dir / "01_b.json").read_text()) == {"total": 20, "leaked": []}
    recs = records(run_dir)
    assert list(recs) == ["00_a", "01_b"]
    assert all(r["status"] == "ok" and r["seconds"] > 0 and r["started"] for r in recs.values())
    assert recs["00_a"]["parameters"] == {"run_dir": str(run_dir), "profile": "fixture", "seed": 7, "x": 5}
    assert recs["01_b"]["parameters"] == {"run_dir": str(run_dir), "profile": "fixture", "seed": 7, "y": 10}


@pytest.mark.slow  # executes notebooks (a few seconds)
def test_parameters_injected_only_where_declared(good_run):
    _, run_dir, _ = good_run
    def injected(stem):
        nb = nbformat.read(run_dir / f"{stem}.ipynb", as_version=4)
        return next(c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "x = 5" in injected("00_a") and "y =" not in injected("00_a")
    assert "y = 10" in injected("01_b") and "x =" not in injected("01_b")


@pytest.mark.slow  # executes notebooks (a few seconds)
def test_report_index_and_summary(good_run):
    result, run_dir, report_dir = good_run
    index = report_dir / "index.html"
    assert result["report"] == index and index.is_file()
    page = index.read_text()
    assert "fixture" in page[:page.index("<h2")]  # title and profile first
    assert page.index('<h2 id="claims">') < page.index('<h2 id="stages">') < page.index('id="00_a"')
    assert "x doubles" in page
    assert "nested.pi" in page and "3.142" in page and "3.14159265" not in page
    assert "nested.inner.n" in page and "123,457" in page  # three decimals, large numbers whole
    assert "0.612" in page and "0.6123" not in page and "per_relation" in page
    assert '<h3 id="table-scores">scores</h3>' in page and "1.235" in page
    assert "0.988" in page and "0.9877" not in page
    assert "<h3>paper</h3>" in page and "<th>KL</th>" in page and "---" not in page  # a .md without a .csv
    assert 'src="figures/curve.png"' in page and (report_dir / "figures" / "curve.png").is_file()
    for stem in ("00_a", "01_b"):
        assert f'href="notebooks/{stem}.html"' in page
        render = (report_dir / "notebooks" / f"{stem}.html").read_text()
        assert "pathlib.Path(run_dir" not in render  # code cells excluded
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["00_a"]["x2"] == 10 and summary["01_b"]["total"] == 20
    assert summary["profile"] == "fixture" and summary["seed"] == 7 and summary["parameters"] == {"x": 5}
    assert summary["status"] == {"00_a": "ok", "01_b": "ok"}
    assert summary["wall_time_s"]["00_a"] > 0
    prov = summary["provenance"]
    assert prov["python"] == sys.version.split()[0] and "numpy" in prov["packages"]
    assert "git_commit" in prov


@pytest.mark.parametrize("profile_text, key, where", [
    (GOOD_PROFILE + "  00_a:\n    z: 1\n", "z", "00_a"),
    (GOOD_PROFILE.replace("  x: 5", "  x: 5\n  clip_secs: 2.5"), "clip_secs", "no stage"),
])
def test_unknown_parameters_refused_before_running(tmp_path, profile_text, key, where):
    nbs, prof = make_project(tmp_path, profile=profile_text)
    run_dir = tmp_path / "run"
    with pytest.raises(RunnerError) as err:
        run_profile(prof, run_dir=run_dir, report_dir=tmp_path / "rep", notebooks_dir=nbs)
    msg = str(err.value)
    assert err.value.exit_code == 2
    assert repr(key) in msg and where in msg and "fixture.yaml" in msg
    assert "run_dir, seed, x" in msg or "label, profile, run_dir, seed, x" in msg  # declared names listed
    assert not run_dir.exists()


def test_unknown_set_key_refused_and_cli_exit_2(tmp_path, capsys):
    nbs, prof = make_project(tmp_path)
    run_dir = tmp_path / "run"
    code = runner.main(["--profile", str(prof), "--notebooks-dir", str(nbs), "--run-dir", str(run_dir),
                          "--set", "n_stepz=3"])
    err = capsys.readouterr().err
    assert code == 2 and "n_stepz" in err and "00_a" in err and "01_b" in err
    assert not run_dir.exists()
    with pytest.raises(RunnerError, match="01_b does not declare 'x'"):
        profiles.plan(prof, {"01_b.x": 1}, nbs)
    _, seed, _, params = profiles.plan(prof, {"x": 9, "01_b.y": 1, "seed": 3}, nbs)
    assert seed == 3 and params == {"00_a": {"x": 9}, "01_b": {"y": 1}}


@pytest.mark.slow  # executes notebooks (a few seconds)
def test_failing_stage_stops_and_keeps_outputs(tmp_path, capsys):
    nbs, prof = make_project(tmp_path, bad=True, profile="seed: 1\nparameters:\n  x: 2\n")
    run_dir, report_dir = tmp_path / "run", tmp_path / "rep"
    run_dir.mkdir()
    (run_dir / "keep.txt").write_text("mine")
    code = runner.main(["--profile", str(prof), "--notebooks-dir", str(nbs), "--run-dir", str(run_dir),
                          "--report-dir", str(report_dir)])
    out = capsys.readouterr()
    assert code == 1
    assert "01_bad" in out.err and "cell 3" in out.err and "ValueError: boom 1" in out.err
    assert "raise ValueError" in out.err  # the cell's first line
    assert "[2/2] 01_bad" in out.out
    assert json.loads((run_dir / "00_a.json").read_text())["x2"] == 4
    assert (run_dir / "00_a.ipynb").is_file() and (run_dir / "01_bad.ipynb").is_file()
    assert (run_dir / "keep.txt").read_text() == "mine"
    recs = records(run_dir)
    assert recs["00_a"]["status"] == "ok" and recs["01_bad"]["status"] == "failed"
    assert "cell 3" in recs["01_bad"]["error"]
    assert json.loads((run_dir / "runner.json").read_text())["status"] == "failed"
    assert "failed" in (report_dir / "index.html").read_text()  # report still built
    with pytest.raises(StageFailed):  # the API raises, after the same records
        run_profile(prof, run_dir=run_dir, report_dir=report_dir, notebooks_dir=nbs, start="01", report=False)


@pytest.mark.slow  # executes notebooks (a few seconds)
def test_only_then_from_keeps_earlier_records(tmp_path):
    nbs, prof = make_project(tmp_path)
    run_dir = tmp_path / "run"
    first = run_profile(prof, run_dir=run_dir, notebooks_dir=nbs, only=["00_a"], report=False)
    assert [r["stage"] for r in first["stages"]] == ["00_a"] and not (run_dir / "01_b.ipynb").exists()
    before = records(run_dir)["00_a"]
    mtime = (run_dir / "00_a.ipynb").stat().st_mtime_ns
    second = run_profile(prof, run_dir=run_dir, report_dir=tmp_path / "rep", notebooks_dir=nbs, start="01")
    recs = records(run_dir)
    assert recs["00_a"] == before and (run_dir / "00_a.ipynb").stat().st_mtime_ns == mtime
    assert recs["01_b"]["status"] == "ok" and second["status"] == "ok"
    assert json.loads((run_dir / "01_b.json").read_text())["total"] == 20
    assert json.loads((tmp_path / "rep" / "summary.json").read_text())["status"] == {"00_a": "ok", "01_b": "ok"}


def test_profile_errors(tmp_path, capsys):
    with pytest.raises(RunnerError, match="profile file not found: .*nope.yaml"):
        load_profile(tmp_path / "nope.yaml")
    assert runner.main(["--profile", "no_such_profile_xyz", "--list"]) == 2
    assert "no_such_profile_xyz.yaml" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(RunnerError, match="bad.yaml: bad YAML"):
        load_profile(bad)
    bad.write_text("seed: 1\nparamaters: {}\n")
    with pytest.raises(RunnerError, match="unknown top-level key.*paramaters"):
        load_profile(bad)
    bad.write_text("parameters:\n  seed: 3\n")
    with pytest.raises(RunnerError, match="parameters.seed"):
        load_profile(bad)
    prof = load_profile(tmp_path.joinpath("ok.yaml").write_text(GOOD_PROFILE) and tmp_path / "ok.yaml")
    assert prof.name == "ok" and prof.seed == 7 and prof.notebooks == {"01_b": {"y": 10}} and prof.stages is None


def test_notebook_without_required_parameters_refused(tmp_path):
    nbs, prof = make_project(tmp_path)
    write_notebook(nbs / "02_c.ipynb", "seed = 0\n", "print(1)")
    with pytest.raises(RunnerError, match="02_c.ipynb.*does not declare run_dir, profile"):
        profiles.plan(prof, None, nbs)
    prof.write_text(GOOD_PROFILE + "stages: [00_a, 01_b]\n")
    assert list(profiles.plan(prof, None, nbs)[2]) == ["00_a", "01_b"]  # 02_c not selected
    prof.write_text(GOOD_PROFILE + "stages: [00_a, 05_zz]\n")
    with pytest.raises(RunnerError, match="05_zz"):
        profiles.plan(prof, None, nbs)


def test_resolve_stage():
    stages = ["00_world", "01_judges", "02_base"]
    assert profiles.resolve_stage("01", stages) == "01_judges"
    assert profiles.resolve_stage("1", stages) == "01_judges"
    assert profiles.resolve_stage("02_base", stages) == "02_base"
    with pytest.raises(RunnerError, match="matches no stage"):
        profiles.resolve_stage("07", stages)


def test_cli_list_runs_nothing(tmp_path):
    nbs, prof = make_project(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "t2a_lib.run", "--profile", str(prof), "--notebooks-dir",
                           str(nbs), "--run-dir", str(tmp_path / "run"), "--list"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "[1/2] 00_a  x=5" in proc.stdout and "[2/2] 01_b  y=10" in proc.stdout
    assert not (tmp_path / "run").exists()


def test_report_helpers():
    assert fmt(3.14159265) == "3.142" and fmt(123456.789) == "123,457" and fmt(12) == "12"
    assert fmt(1.23456e-7) == "1.23e-07" and fmt(True) == "yes" and fmt([0.123456, 2]) == "2 values, from 0.123 to 2"
    assert fmt(None) == fmt({}) == fmt([]) == "" and fmt(["a", "b"]) == "a, b" and fmt(float("nan")) == "—"
    flat, tables = flatten({"a": {"b": 1, "c": {"d": 2.0}}, "rows": [{"k": 1}], "e": []})
    assert flat == {"a.b": 1, "a.c.d": 2.0, "e": []} and tables == {"rows": [{"k": 1}]}
    html_text = markdown_tables("| a | b |\n|:--|--:|\n| 1 | 2 |\n")
    assert "<th>a</th>" in html_text and "<td>2</td>" in html_text and "--" not in html_text
