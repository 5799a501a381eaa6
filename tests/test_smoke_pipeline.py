"""The smoke profile runs every real notebook end to end through papermill."""

import json

import pytest

from t2a_lib.pipeline import run_pipeline
from t2a_lib.report import result_figures


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Two complete smoke runs in separate empty folders, same profile and seed: [(run_dir, report_dir, result)]."""
    runs = []
    for name in ("a", "b"):
        root = tmp_path_factory.mktemp(f"smoke_{name}")
        runs.append((root / "run", root / "report", run_pipeline("smoke", run_dir=root / "run",
                                                                  report_dir=root / "report")))
    return runs


@pytest.mark.slow
def test_smoke_profile_runs_every_notebook(smoke_runs):
    run_dir, report_dir, result = smoke_runs[0]
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


@pytest.mark.slow
def test_smoke_profile_runs_what_goes_beyond_the_papers(smoke_runs):
    """KTO, the safeguarded DPO, the drift runs and the ranker-judge gap, at smoke sizes."""
    run_dir, report_dir, result = smoke_runs[0]
    assert result["status"] == "ok", result
    for model_id in ("dpo_safe", "kto_hd", "kto_hd_rd"):  # two seeds each, as the claims need
        assert len(list((run_dir / "models" / model_id).glob("s[0-9]/unet"))) == 2, model_id
    dpo = json.loads((run_dir / "04_dpo.json").read_text())
    assert set(dpo["drift"]) == {"plain", "safeguarded"} and dpo["drift"]["plain"]["loser_scale"] == 1.0
    assert 0.0 <= dpo["drift"]["safeguarded"]["loser_scale"] <= 1.0
    assert (run_dir / "figures" / "04_dpo_drift.png").is_file() and (run_dir / "figures" / "06_kto_training.png").is_file()
    final = json.loads((run_dir / "07_reproduce.json").read_text())
    gap = final["ranker_judge_gap"]
    assert {r["model id"] for r in gap} >= {"dpo", "dpo_safe", "baton_hd_rd", "kto_hd"}
    assert {(r["subset"], r["metric"]) for r in gap} == {("all", "clap"), ("Integrity", "all_present"),
                                                         ("Temporal", "order")}
    measured = {c["key"]: c for c in final["claims"]}
    for key in ("kto_integrity", "kto_vs_baton_temporal", "sdpo_vs_dpo", "dpo_ranker_gap", "hdrd_ranker_gap"):
        assert measured[key]["n"] > 0, measured[key]
    html = (report_dir / "index.html").read_text()
    assert 'id="beyond"' in html and 'class="gap"' in html and "07_ranker_judge_gap.png" in html


@pytest.mark.slow
def test_two_smoke_runs_with_the_same_seed_give_identical_figures(smoke_runs):
    """Determinism: every figure in summary.json (timings and provenance aside) is reproduced exactly."""
    figures = []
    for run_dir, report_dir, result in smoke_runs:
        assert result["status"] == "ok", result
        figures.append(result_figures(json.loads((report_dir / "summary.json").read_text())))
    a, b = figures
    assert len(a) > 100  # the comparison covers the run's figures, not an empty dict
    assert any(k.startswith("07_reproduce") for k in a)
    differing = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    assert not differing, {k: (a.get(k), b.get(k)) for k in differing[:10]}


def test_result_figures_drop_timings_and_provenance_but_keep_results():
    summary = {"wall_time_s": {"00_world": 3.2}, "provenance": {"git_commit": "abc"},
               "02_base_model": {"unet": {"seconds": 12.0, "final_loss": 0.1}, "clips_per_s": 5.0,
                                 "by_kind": {"single": {"presence": 0.9}}},
               "07_reproduce": {"claims": [{"claim": "x", "ours": "+0.1", "train_seconds": 4}]}}
    figures = result_figures(summary)
    assert figures == {"02_base_model.unet.final_loss": 0.1, "02_base_model.by_kind.single.presence": 0.9,
                       "07_reproduce.claims": [{"claim": "x", "ours": "+0.1"}]}
