"""The smoke profile runs every real notebook end to end through papermill."""

import json

import pytest

from t2a_lib.pipeline import run_pipeline


@pytest.mark.slow
def test_smoke_profile_runs_every_notebook(tmp_path):
    run_dir, report_dir = tmp_path / "run", tmp_path / "report"
    result = run_pipeline("smoke", run_dir=run_dir, report_dir=report_dir)
    assert result["status"] == "ok", result
    stages = {s["stage"]: s for s in json.loads((run_dir / "pipeline.json").read_text())["stages"]}
    assert stages and all(s["status"] == "ok" for s in stages.values()), stages
    for stem in stages:
        assert (run_dir / f"{stem}.ipynb").exists()
        assert json.loads((run_dir / f"{stem}.json").read_text()), f"{stem} wrote no figures"
    world = json.loads((run_dir / "00_world.json").read_text())
    assert world["sizes"] == {"train": 96, "val": 24, "test": 24}
    assert not any(world["caption_leaks"].values())
    summary = json.loads((report_dir / "summary.json").read_text())
    assert set(stages) <= set(summary)
    assert (report_dir / "index.html").read_text().count("<table") >= 2
