"""The ranker–judge gap against an independent computation: gains in the measure's unit (CLAP in
base-model sd), the gap as their difference, seeds pooled, the claims' gap column, the reading."""

import numpy as np
import pandas as pd
import pytest

from t2a_lib.evaluate import claims, ranker_gap
from t2a_lib.scoring.scorers import RoleError


def _tango(rng, n=40, shift=0.0):
    return pd.DataFrame({"caption": [f"c{i}" for i in range(n)], "n_events": rng.integers(1, 3, n),
                         "clap": rng.normal(0.3 + shift, 0.1, n)})


def _sets(seed=0):
    rng = np.random.default_rng(seed)
    base_j, base_r = _tango(rng), _tango(rng)
    judges = {"base": [base_j], "dpo": [_tango(rng, shift=0.01), _tango(rng, shift=0.03)]}
    rankers = {"base": [base_r], "dpo": [_tango(rng, shift=0.08), _tango(rng, shift=0.06)]}
    return judges, rankers


def test_gains_and_gap_match_an_independent_computation():
    judges, rankers = _sets()
    table = ranker_gap.gap_table(judges, rankers, "tango", n_boot=300)
    assert list(table["model id"]) == ["dpo"] and table.unit[0] == "base-model sd"
    row = table.iloc[0]
    sd_r = np.std(rankers["base"][0].clap, ddof=1)
    sd_j = np.std(judges["base"][0].clap, ddof=1)
    pooled = lambda ts: np.mean([t.clap.to_numpy() for t in ts], axis=0)  # noqa: E731
    r_gain = np.mean(pooled(rankers["dpo"]) - rankers["base"][0].clap.to_numpy()) / sd_r
    j_gain = np.mean(pooled(judges["dpo"]) - judges["base"][0].clap.to_numpy()) / sd_j
    assert row["rankers gain"] == pytest.approx(r_gain)
    assert row["judges gain"] == pytest.approx(j_gain)
    assert row["gap"] == pytest.approx(r_gain - j_gain)
    assert row["gap low"] < row["gap"] < row["gap high"] and row["n"] == 40
    assert row["trained against"] == ranker_gap.TRAINED_AGAINST["dpo"]


def test_the_claims_gap_row_reads_the_same_gap():
    judges, rankers = _sets(1)
    gapped = ranker_gap.with_gap_columns(judges, rankers, ["clap"])
    claim = next(c for c in claims.CLAIMS if c.key == "dpo_ranker_gap")
    row = claims.answer(claim, gapped, n_boot=300)
    table = ranker_gap.gap_table(judges, rankers, "tango", n_boot=300)
    assert row["difference"] == pytest.approx(table.gap[0])


def test_rates_keep_their_scale_and_subsets_select_the_task():
    def baton(all_present, order):
        n = len(all_present)
        return pd.DataFrame({"caption": [f"b{i}" for i in range(n)], "task": ["integrity"] * 3 + ["temporal"] * 3,
                             "all_present": all_present, "order": order})

    nan = np.nan
    judges = {"base": [baton([0, 0, 1, 1, 1, 1], [nan] * 3 + [0, 0, 1])],
              "baton_hd": [baton([1, 0, 1, 1, 1, 1], [nan] * 3 + [0, 1, 1])]}
    rankers = {"base": [baton([0, 0, 0, 1, 1, 1], [nan] * 3 + [0, 0, 0])],
               "baton_hd": [baton([1, 1, 1, 1, 1, 1], [nan] * 3 + [1, 1, 1])]}
    t = ranker_gap.gap_table(judges, rankers, "baton", n_boot=200).set_index("subset")
    # Integrity: rankers +3/3, judges +1/3; Temporal order: rankers +3/3, judges +1/3
    assert t.loc["Integrity", "rankers gain"] == pytest.approx(1.0)
    assert t.loc["Integrity", "judges gain"] == pytest.approx(1 / 3)
    assert t.loc["Temporal", "gap"] == pytest.approx(2 / 3) and t.loc["Temporal", "unit"] == "rate"


def test_reading_and_role_and_plot():
    assert ranker_gap.reading(0.1, 0.3).endswith("reward hacking")
    assert ranker_gap.reading(-0.3, -0.1) == "judges see more"
    assert ranker_gap.reading(-0.1, 0.1) == "matched within the interval"
    assert ranker_gap.reading(np.nan, np.nan) == "not measured"

    class Judges:
        role = "judge"

    with pytest.raises(RoleError):
        ranker_gap.rank_samples(Judges(), {"base": [np.zeros((1, 64, 8))]}, ["a dog barks"])
    judges, rankers = _sets(2)
    fig = ranker_gap.plot_gap(ranker_gap.gap_table(judges, rankers, "tango", n_boot=100))
    assert len(fig.axes) == 1


def test_a_run_without_fine_tuned_models_gives_an_empty_table_with_its_columns():
    judges, rankers = _sets(3)
    table = ranker_gap.gap_table({"base": judges["base"]}, {"base": rankers["base"]}, "tango")
    assert table.empty and list(table.columns) == ranker_gap.COLUMNS
    assert len(ranker_gap.plot_gap(table).axes) == 1
