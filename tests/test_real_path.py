"""The real path's pieces without running notebooks: CLAP-only evaluation tables, claims that say why
they are not measured, BATON's task from its files, the real CLAP family recorded and loaded."""

import json

import numpy as np
import pandas as pd
import pytest

from t2a_lib.evaluate import claims, evaluation
from t2a_lib.feedback.released import task_of
from t2a_lib.scoring import clap_family


def _clap_table(values, seed_shift=0.0):
    return pd.DataFrame({"id": range(len(values)), "caption": [f"a man speaks {i}" for i in range(len(values))],
                         "clap": np.asarray(values, float) + seed_shift, "detected": [[] for _ in values],
                         "kind": "free", "source_id": None})


def test_a_clap_only_table_answers_the_clap_claims_and_says_why_not_the_judges():
    base = _clap_table([0.10, 0.20, 0.15, 0.05, 0.12])
    dpo = _clap_table([0.30, 0.35, 0.25, 0.20, 0.40])
    dpo_seeds = [dpo, _clap_table([0.30, 0.35, 0.25, 0.20, 0.40], seed_shift=0.01)]
    answered = claims.answer_all({"tango": {"base": [base], "dpo": dpo_seeds}}, n_boot=200).set_index("key")
    row = answered.loc["dpo_clap"]
    assert row.n == 5 and row.verdict == "reproduced"
    assert row.difference == pytest.approx(float((dpo.clap - base.clap).mean()) + 0.005)
    for key in ("dpo_multi_presence", "dpo_temporal_order"):
        assert answered.loc[key, "verdict"] == "not measured"
        assert clap_family.WHY_NOT in answered.loc[key, "why"]
    assert answered.loc["gold_temporal_order", "why"] == "not evaluated: gold"
    claims.plot_effects(answered.reset_index().iloc[1:3], "nothing measured")  # rows without an interval: no error


def test_summarize_a_clap_only_table_gives_the_clap_score_per_kind():
    table = _clap_table([0.1, 0.2, 0.3, 0.4])
    summary = evaluation.summarize(table, n_boot=100)
    assert list(summary.index) == ["all", "free"] and summary.loc["all", "clap"] == pytest.approx(0.25)
    assert summary.loc["all", "clap_n"] == 4 and "presence" not in summary
    shown = evaluation.format_ci(summary)
    assert list(shown.columns) == ["clips", "clap"] and shown.loc["all", "clap"].startswith("0.250 [")


def test_batons_task_comes_from_the_file():
    assert task_of("2label_HA", "x.json") == "integrity"
    assert task_of(None, "data/RM/3label_RA.json") == "temporal"
    assert task_of("audiocaps", "labels.json") == "released"


def test_the_real_clap_family_is_recorded_for_both_roles_and_loaded(tmp_path):
    from t2a_lib.scoring import scorers
    from t2a_lib.scoring.clap_real import WeightsNotFoundError, make_tiny_clap

    judge, ranker = make_tiny_clap(tmp_path / "judge", seed=1), make_tiny_clap(tmp_path / "ranker", seed=2)
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="real_clap_path"):
        clap_family.install(run, None)
    with pytest.raises(WeightsNotFoundError, match="huggingface-cli download"):
        clap_family.install(run, tmp_path / "absent")
    record = clap_family.install(run, judge, ranker)
    assert json.loads(clap_family.record_path(run).read_text()) == record and not record["same_model"]
    judges, rankers = scorers.load_judges(run), scorers.load_rankers(run)
    assert (judges.role, rankers.role) == ("judge", "ranker")
    waves = np.random.default_rng(0).normal(0, 0.1, (3, 16000)).astype(np.float32)
    caps = ["a dog barks", "rain falls", "a car passes"]
    table = judges.judge_waves(waves, caps).table
    assert list(table.caption) == caps and np.allclose(table.clap, judges.score_waves(waves, caps))
    assert not np.allclose(judges.score_waves(waves, caps), rankers.score_waves(waves, caps))  # two models
    with pytest.raises(scorers.RoleError):
        rankers.judge_waves(waves, caps)
