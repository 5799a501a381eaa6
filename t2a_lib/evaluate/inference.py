"""Intervals and tests for a claim that a re-run would meet: prompts, and training seeds.

A claim compares a model with a baseline on the same ``n`` prompts. A fine-tuned model comes as
``k`` training seeds, so its per-clip values form a ``k × n`` matrix; the base model is one
matrix row. Write one side's value as

    y[s, i] = μ + u_s + p_i + e_si,     u_s ~ (0, σ_u²) the seed,  p_i the prompt,  e_si the rest.

The estimate is the mean over prompts of the seed-averaged difference
``d_i = mean_s y_model[s, i] − mean_t y_baseline[t, i]``. Its variance has a prompt term and, for
each side trained with seeds, a seed term that every prompt shares and so no resampling of
prompts can see:

    Var(d̄) = Var_i(d_i) / n  +  Σ_sides σ_u² / k.

``σ_u² / k`` is estimated from the two-way (seeds × prompts) mean squares of that side,
``(MS_seed − MS_resid) / (n k)`` (floored at 0), and the interval is Student's t with
Satterthwaite's degrees of freedom, which fall towards ``k − 1`` when the seeds dominate: two
seeds that disagree give a wide interval, as they should. ``tests/test_inference.py`` checks its
coverage by simulation for 2, 3 and 4 seeds, beside the prompt-only bootstrap's under-coverage.

A table of many rows is adjusted within each family by Holm's step-down method; rows that claim
two things are *matched* are tested for equivalence (two one-sided tests against a stated margin).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.stats import norm

from ..scoring.metrics import bootstrap_ci


@dataclass(frozen=True)
class SeedPromptEffect:
    """A paired difference with an interval that includes training-seed variance."""
    difference: float
    se: float  # standard error: prompts and seeds
    df: float  # Satterthwaite's degrees of freedom
    low: float
    high: float
    p: float  # two-sided, against zero
    n: int  # prompts used (defined on every seed of both sides)
    prompt_se: float  # the prompt term alone (what a prompts-only interval sees)
    seed_se: float  # the seed terms alone

    def interval(self, alpha: float) -> tuple[float, float]:
        """The two-sided ``1 − alpha`` interval (NaN where the effect is not estimable)."""
        if not np.isfinite(self.se):
            return (np.nan, np.nan)
        half = stats.t.ppf(1 - alpha / 2, self.df) * self.se if self.se > 0 else 0.0
        return (self.difference - half, self.difference + half)

    def equivalence_p(self, margin: float) -> float:
        """Two one-sided tests (TOST): the p-value that |true difference| < ``margin``."""
        if not np.isfinite(self.se):
            return np.nan
        if self.se == 0:
            return 0.0 if abs(self.difference) < margin else 1.0
        below = stats.t.sf((self.difference + margin) / self.se, self.df)  # H0: difference ≤ −margin
        above = stats.t.cdf((self.difference - margin) / self.se, self.df)  # H0: difference ≥ +margin
        return float(max(below, above))


NOT_ESTIMABLE = dict(difference=np.nan, se=np.nan, df=np.nan, low=np.nan, high=np.nan, p=np.nan, n=0,
                     prompt_se=np.nan, seed_se=np.nan)


def seed_mean_squares(x: np.ndarray) -> tuple[float, float]:
    """(MS_seed, MS_resid) of a ``k × n`` matrix (seeds × prompts), two-way without replication:
    ``E MS_seed = n σ_u² + σ_e²`` and ``E MS_resid = σ_e²``."""
    k, n = x.shape
    grand, rows, cols = x.mean(), x.mean(axis=1), x.mean(axis=0)
    ms_seed = n * float(((rows - grand) ** 2).sum()) / (k - 1)
    resid = x - rows[:, None] - cols[None, :] + grand
    ms_resid = float((resid ** 2).sum()) / ((k - 1) * (n - 1))
    return ms_seed, ms_resid


def seed_prompt_effect(model: np.ndarray, baseline: np.ndarray, alpha: float = 0.05,
                       borrowed: tuple | None = None) -> SeedPromptEffect:
    """mean(model − baseline) over prompts, seeds averaged per prompt, with its ``1 − alpha``
    interval over prompts *and* training seeds. ``model`` and ``baseline`` are ``seeds × prompts``
    (a 1-D array is one seed). Prompts undefined (NaN) on any seed of either side are dropped. A side
    with one seed adds no seed term of its own: right for the base model (fixed: every claim starts
    from it), not for a fine-tune trained once, whose seed variance one run cannot show; give such
    a side ``borrowed``: a seed variance pooled from the fine-tunes of its kind and that estimate's
    degrees of freedom (:func:`pooled_seed_variance`)."""
    a, b = np.atleast_2d(np.asarray(model, float)), np.atleast_2d(np.asarray(baseline, float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"model and baseline cover different prompts: {a.shape[1]} vs {b.shape[1]}")
    ok = ~(np.isnan(a).any(axis=0) | np.isnan(b).any(axis=0))
    a, b = a[:, ok], b[:, ok]
    n = int(ok.sum())
    if n < 2:
        return SeedPromptEffect(**{**NOT_ESTIMABLE, "n": n})
    d = a.mean(axis=0) - b.mean(axis=0)
    parts = [(d.var(ddof=1) / n, n - 1)]  # (variance component, its degrees of freedom)
    seed_var = 0.0
    for side, lent in zip((a, b), borrowed or (None, None)):
        k = side.shape[0]
        if k < 2:
            if lent is not None and lent[0] > 0:  # (σ_u², its degrees of freedom) from the model's kind
                parts.append((lent[0], lent[1]))
                seed_var += lent[0]
            continue
        ms_seed, ms_resid = seed_mean_squares(side)
        if ms_seed > ms_resid:  # σ_u² / k estimated as (MS_seed − MS_resid) / (n k), floored at 0
            parts += [(ms_seed / (n * k), k - 1), (-ms_resid / (n * k), (k - 1) * (n - 1))]
            seed_var += (ms_seed - ms_resid) / (n * k)
    var = sum(v for v, _ in parts)
    se = float(np.sqrt(max(var, 0.0)))
    df = var ** 2 / sum(v ** 2 / f for v, f in parts) if var > 0 else float(n - 1)
    diff = float(d.mean())
    p = float(2 * stats.t.sf(abs(diff) / se, df)) if se > 0 else (0.0 if diff != 0 else 1.0)
    half = stats.t.ppf(1 - alpha / 2, df) * se if se > 0 else 0.0
    return SeedPromptEffect(diff, se, float(df), diff - half, diff + half, p, n, float(np.sqrt(parts[0][0])),
                            float(np.sqrt(seed_var)))


def pooled_seed_variance(matrices) -> tuple[float, int] | None:
    """σ_u² pooled over fine-tunes of one kind, each a ``seeds × prompts`` matrix on the same measure
    (NaN prompts dropped; one-seed matrices contribute nothing): ``Σ (k_j − 1) σ̂²_j / Σ (k_j − 1)``
    with ``σ̂²_j = max(0, MS_seed − MS_resid) / n_j``, and its degrees of freedom ``Σ (k_j − 1)``.
    None when no matrix has two seeds."""
    num, dof = 0.0, 0
    for x in matrices:
        x = np.atleast_2d(np.asarray(x, float))
        x = x[:, ~np.isnan(x).any(axis=0)]
        k, n = x.shape
        if k < 2 or n < 2:
            continue
        ms_seed, ms_resid = seed_mean_squares(x)
        num += (k - 1) * max(0.0, ms_seed - ms_resid) / n
        dof += k - 1
    return (num / dof, dof) if dof else None


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (familywise error): sort ascending,
    ``p̃_(j) = max_{i ≤ j} min(1, (m − i + 1) p_(i))``; NaN entries are not in the family and stay NaN."""
    p = np.asarray(p_values, float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m, running = len(order), 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (m - j) * p[i]))
        out[i] = running
    return out


def holm_levels(p_values, alpha: float = 0.05) -> np.ndarray:
    """Each row's per-test level in Holm's procedure, ``alpha / (m − rank + 1)`` (NaN outside the
    family): the level of its adjusted interval."""
    p = np.asarray(p_values, float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    for j, i in enumerate(order):
        out[i] = alpha / (len(order) - j)
    return out


def t_quantile_mde(effect: SeedPromptEffect, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference a two-sided level-``alpha`` test of this design detects with
    probability ``power``: ``(t_{1−α/2} + t_{power}) · se`` at the effect's degrees of freedom."""
    if not np.isfinite(effect.se):
        return np.nan
    return float((stats.t.ppf(1 - alpha / 2, effect.df) + stats.t.ppf(power, effect.df)) * effect.se)


# ----------------------------------------------------------------------------- prompts only

def minimum_detectable_effect(d, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference a two-sided test at level ``alpha`` detects with
    probability ``power``, given the per-prompt differences ``d``:
    ``(z_{1-α/2} + z_{power}) · sd(d) / √n`` (sd with ddof = 1)."""
    d = np.asarray(d, dtype=float)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"need at least 2 paired differences, got {d.shape}")
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * d.std(ddof=1) / np.sqrt(len(d)))


def paired_effect(a, b, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean of a − b over the items where both are defined, with its 95% paired bootstrap
    interval, half-width, n and minimum detectable effect."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in length: {a.shape} vs {b.shape}")
    ok = ~(np.isnan(a) | np.isnan(b))
    d = a[ok] - b[ok]
    if len(d) < 2:
        return {"difference": np.nan, "low": np.nan, "high": np.nan, "half_width": np.nan, "n": int(len(d)),
                "mde": np.nan}
    diff, lo, hi = bootstrap_ci(d, n_boot=n_boot, seed=seed)
    return {"difference": diff, "low": lo, "high": hi, "half_width": (hi - lo) / 2, "n": int(len(d)),
            "mde": minimum_detectable_effect(d)}
