"""The papers' tables print possible numbers: IS with an interval around its estimate, every
interval inside its metric's range, three decimals, '—' where nothing was measured."""

import numpy as np
import pytest
from scipy import stats

from t2a_lib.evaluate import reproduce
from t2a_lib.scoring import metrics


def test_inception_score_interval_is_the_splits_t_interval_around_its_mean():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (60, 10))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    est, lo, hi = reproduce.inception_score_ci(probs, seed=1)
    # by hand: the same ten shuffled splits, their scores, mean ± t_{9} · sd / sqrt(10)
    shuffled = probs[np.random.default_rng(1).permutation(60)]
    scores = [np.exp((p * (np.log(p) - np.log(p.mean(0)))).sum(1).mean()) for p in np.array_split(shuffled, 10)]
    half = stats.t.ppf(0.975, 9) * np.std(scores, ddof=1) / np.sqrt(10)
    assert (est, lo, hi) == pytest.approx((np.mean(scores), np.mean(scores) - half, np.mean(scores) + half))
    assert lo <= est <= hi and est == pytest.approx(metrics.inception_score(probs, 10, seed=1)[0])
    assert np.isnan(reproduce.inception_score_ci(probs[:7])[1])  # one split: no interval


def test_intervals_stay_within_the_metric_range():
    assert reproduce.within_range("FAD", (3.0, -19.3, 120.0)) == (3.0, 0.0, 120.0)
    assert reproduce.within_range("IS", (1.2, 0.8, 1.6)) == (1.2, 1.0, 1.6)
    assert reproduce.within_range("order", (0.98, 0.95, 1.01)) == (0.98, 0.95, 1.0)
    low = reproduce.within_range("KL", (np.nan, np.nan, np.nan))
    assert all(np.isnan(v) for v in low)


def test_cells_read_as_three_decimals_or_a_dash():
    assert reproduce.cell((5.6161, 5.2, 6.01)) == "5.616 [5.200, 6.010]"
    assert reproduce.cell((np.nan, np.nan, np.nan)) == "—"
    assert reproduce.cell((0.5, np.nan, np.nan)) == "0.500"
    table = reproduce.metric_table({"base": {"FAD": (np.nan,) * 3, "KAD": (1.0, 0.5, 2.0)}})
    assert table.loc["base"].tolist() == ["—", "1.000 [0.500, 2.000]"]
