"""Kernel audio distance (KAD), and when a Fréchet distance may be reported at all.

KAD (after kadtk) is the unbiased squared maximum mean discrepancy between two embedding sets
with a Gaussian RBF kernel ``k(x, y) = exp(−‖x − y‖² / (2σ²))``:

    MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j) − 2/(mn) Σ_{i,j} k(x_i, y_j).

Unlike the Fréchet distance it makes no Gaussian assumption and has no small-sample bias, so it
stays meaningful on a few dozen clips. The bandwidth σ is the median pairwise distance of the
reference set unless given (the median heuristic), and KAD is reported ×1000 as kadtk does.
An unbiased estimate can fall below zero by chance; a reader sees it at the floor, 0.

A Fréchet distance fits a ``d × d`` covariance to each set: below ``d`` clips that covariance is
singular, and its bias (``≈ d(d+1)/(2n)`` for n clips of one Gaussian) swamps any difference.
:data:`FD_MIN_CLIPS_PER_DIM` sets the rule, ``n ≥ 2d``, from the simulation in
``tests/test_kernel_distance.py``: for two sets drawn from one Gaussian, the bias correction of
:func:`t2a_lib.scoring.metrics.frechet_distance_ci` leaves under 15% of the bias from ``n = 2d``
clips on, and more below (about a fifth at ``n = d``, most of it at ``n = d/2``).
"""

from __future__ import annotations

import numpy as np

from .metrics import checked_array

FD_MIN_CLIPS_PER_DIM = 2
KAD_SCALE = 1000.0


def fd_minimum_clips(dim: int) -> int:
    """The fewest clips in a set for which a Fréchet distance over ``dim``-dimensional embeddings is
    reported (``FD_MIN_CLIPS_PER_DIM · dim``)."""
    return FD_MIN_CLIPS_PER_DIM * int(dim)


def median_bandwidth(x: np.ndarray) -> float:
    """The median pairwise Euclidean distance between the rows of ``x`` (distinct pairs)."""
    sq = _squared_distances(x, x)
    d = np.sqrt(sq[np.triu_indices(len(x), k=1)])
    bandwidth = float(np.median(d))
    if not bandwidth > 0:
        raise ValueError("the reference embeddings are all equal: no bandwidth for the kernel")
    return bandwidth


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(sq, 0.0)


def _mmd2_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m, n = len(kxx), len(kyy)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2 * kxy.mean())


def kernel_audio_distance(emb_ref, emb_gen, bandwidth: float | None = None, scale: float = KAD_SCALE) -> float:
    """KAD: ``scale`` × the unbiased MMD² of the two sets (rows = clips) with an RBF kernel of
    ``bandwidth`` (default: :func:`median_bandwidth` of ``emb_ref``). Both sets need ≥ 2 rows."""
    x, y = checked_array(emb_ref, "emb_ref", ndim=2), checked_array(emb_gen, "emb_gen", ndim=2)
    if len(x) < 2 or len(y) < 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need two sets of >= 2 rows of one dimension, got {x.shape} and {y.shape}")
    sigma = median_bandwidth(x) if bandwidth is None else float(bandwidth)
    gamma = 1.0 / (2 * sigma ** 2)
    kernels = [np.exp(-gamma * _squared_distances(a, b)) for a, b in ((x, x), (y, y), (x, y))]
    return scale * _mmd2_from_kernels(*kernels)


def kernel_audio_distance_ci(emb_ref, emb_gen, n_boot: int = 200, alpha: float = 0.05, seed: int = 0,
                             bandwidth: float | None = None) -> tuple[float, float, float]:
    """(estimate, low, high): KAD with a percentile bootstrap interval, resampling each set's rows
    with replacement (pairs of a row with its own copy are left out of the within-set sums, so a
    replicate stays unbiased). The bandwidth is fixed from the full reference set. Everything is
    floored at 0 (KAD's floor), and the interval is widened to the estimate where the percentile
    interval misses it."""
    x, y = checked_array(emb_ref, "emb_ref", ndim=2), checked_array(emb_gen, "emb_gen", ndim=2)
    if len(x) < 2 or len(y) < 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need two sets of >= 2 rows of one dimension, got {x.shape} and {y.shape}")
    sigma = median_bandwidth(x) if bandwidth is None else float(bandwidth)
    gamma = 1.0 / (2 * sigma ** 2)
    kxx, kyy, kxy = (np.exp(-gamma * _squared_distances(a, b)) for a, b in ((x, x), (y, y), (x, y)))
    estimate = KAD_SCALE * _mmd2_from_kernels(kxx, kyy, kxy)  # the kernels once, for the estimate and its replicates
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for b in range(n_boot):
        i, j = rng.integers(0, len(x), len(x)), rng.integers(0, len(y), len(y))
        boot[b] = KAD_SCALE * (_within(kxx, i) + _within(kyy, j) - 2 * kxy[np.ix_(i, j)].mean())
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    estimate, low, high = (max(0.0, float(v)) for v in (estimate, low, high))
    return estimate, min(low, estimate), max(high, estimate)


def _within(k: np.ndarray, idx: np.ndarray) -> float:
    """Mean kernel value over the pairs of resampled rows that are different draws of different rows."""
    sub = k[np.ix_(idx, idx)]
    distinct = idx[:, None] != idx[None, :]
    return float(sub[distinct].mean())
