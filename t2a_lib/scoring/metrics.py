"""Evaluation metrics: FAD (+ bias-corrected bootstrap CI), KL, IS, CLAP score, bootstrap CIs.

Event presence / order / F1 and their continuous forms are in ``event_metrics``; the content-keyed
disk cache the notebooks keep their numbers in is ``cache``.

Everything is computed in numpy float64. Bad input (NaN/inf, wrong shapes, empty sets, unknown
ids) raises ``ValueError`` naming the problem; nothing returns a sentinel such as -1.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from scipy.special import xlogy

EPS = 1e-12  # probabilities are clamped to [EPS, 1] (or [EPS, 1 - EPS] for Bernoulli) before logs


def checked_array(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """``x`` as a float64 array; raise if it is not finite or has the wrong number of dims."""
    a = np.asarray(x, dtype=np.float64)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


# ----------------------------------------------------------------------------- Fréchet distance

def _sqrt_eigs(w: np.ndarray) -> np.ndarray:
    """Square roots of PSD eigenvalues; negatives and rounding noise (< d·eps·max) set to 0."""
    tol = w.size * np.finfo(np.float64).eps * np.abs(w).max(initial=0.0)
    return np.sqrt(np.where(w > tol, w, 0.0))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix via eigh."""
    w, v = np.linalg.eigh(sigma)
    return (v * _sqrt_eigs(w)) @ v.T


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """``tr (Σ1 Σ2)^{1/2}``: the summed square roots of the eigenvalues of Σ1 Σ2, taken from a
    symmetric matrix with the same eigenvalues: ``Lᵀ Σ2 L`` with ``Σ1 = L Lᵀ`` (Cholesky, when
    Σ1 is positive definite: a tenth of an eigh's time, which the FD bootstrap repeats hundreds
    of times) or else ``S1 Σ2 S1`` with ``S1 = Σ1^{1/2}`` (eigh; rank-deficient Σ1)."""
    try:
        low = np.linalg.cholesky(s1)
    except np.linalg.LinAlgError:
        low = _psd_sqrt(s1)  # symmetric
    m = low.T @ s2 @ low
    return float(_sqrt_eigs(np.linalg.eigvalsh((m + m.T) / 2)).sum())


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``‖μ1−μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^{1/2}``. The last trace is taken in a symmetric
    form with the same non-zero eigenvalues as Σ1 Σ2 (:func:`_trace_sqrt_product`); eigenvalues
    below ``d·eps·λ_max`` count as 0, so rank-deficient covariances need no regularising offset
    and their null space adds no sqrt-of-rounding-noise error. Scalars
    (d = 1) are accepted, with ``sigma`` the variance. Rounding can leave results of order ±1e-12 around 0.
    """
    mu1, mu2 = np.atleast_1d(checked_array(mu1, "mu1")), np.atleast_1d(checked_array(mu2, "mu2"))
    s1, s2 = np.atleast_2d(checked_array(sigma1, "sigma1")), np.atleast_2d(checked_array(sigma2, "sigma2"))
    d = mu1.shape[0]
    if mu1.ndim != 1 or mu2.shape != (d,):
        raise ValueError(f"mu1 and mu2 must be vectors of the same length, got {mu1.shape}, {mu2.shape}")
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"sigma1 {s1.shape} and sigma2 {s2.shape} must both be ({d}, {d})")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    tr_covmean = _trace_sqrt_product(s1, s2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def embedding_stats(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof=1) of embeddings ``x`` of shape (n_samples, dim), n ≥ 2."""
    x = checked_array(x, "embeddings", ndim=2)
    if x.shape[0] < 2:
        raise ValueError(f"embedding_stats needs at least 2 rows, got {x.shape[0]}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False, ddof=1))


def frechet_audio_distance(emb_ref: Any, emb_gen: Any) -> float:
    """FAD between two embedding sets (rows = clips), e.g. VGGish embeddings."""
    mu1, s1 = embedding_stats(emb_ref)
    mu2, s2 = embedding_stats(emb_gen)
    if mu1.shape != mu2.shape:
        raise ValueError(f"embedding dims differ: ref {mu1.shape[0]} vs gen {mu2.shape[0]}")
    return frechet_distance(mu1, s1, mu2, s2)


def _fd_of_rows(ref: np.ndarray, gen: np.ndarray) -> float:
    """FD between the mean/covariance (ddof=1) of two already-validated embedding arrays."""
    return frechet_distance(ref.mean(axis=0), np.atleast_2d(np.cov(ref, rowvar=False, ddof=1)),
                            gen.mean(axis=0), np.atleast_2d(np.cov(gen, rowvar=False, ddof=1)))


def frechet_distance_ci(emb_ref: Any, emb_gen: Any, n_boot: int = 200, alpha: float = 0.05,
                        seed: int = 0) -> dict:
    """Bias-corrected FD between two embedding sets with a basic (reverse-percentile) bootstrap CI.

    ``fd`` = FD(ref, gen) of the full sets, biased upward in finite samples (for two n-row sets
    from one d-dim Gaussian by ≈ ``2d/n + d(d+1)/(2n)``). Each of ``n_boot`` replicates resamples
    the rows of ``emb_ref`` and of ``emb_gen`` independently with replacement and takes
    ``fd*_b`` = FD(ref*, gen*); the replicates sit above ``fd`` by about that same bias, so
    ``bias = mean_b fd*_b − fd`` estimates it. Reported: the bias-corrected estimate
    ``estimate = fd − bias = 2·fd − mean_b fd*_b`` and the basic interval
    ``[low, high] = [2·fd − q_hi, 2·fd − q_lo]`` with ``q_lo, q_hi`` the ``alpha/2`` and
    ``1 − alpha/2`` quantiles of ``fd*`` (the interval reflects the bootstrap spread around
    ``fd``, so it is shifted down by the bias too). The percentile interval ``[q_lo, q_hi]``
    (what :func:`bootstrap_ci_fn` gives) sits about two biases above the truth and can exclude
    ``fd`` itself; it is returned as ``percentile_low/high`` only for comparison. The estimate
    (and the interval) can be slightly negative when the sets are close.

    The interval always contains ``estimate``: it does unless ``mean fd*`` falls outside
    ``[q_lo, q_hi]``, which only a pathological bootstrap distribution (a few huge replicates,
    e.g. with a handful of rows) produces; then the violated end is moved to ``estimate`` and
    ``widened`` is True. Deterministic for a given seed. Both sets need ≥ 2 rows of one dim.
    Returns ``{fd, estimate, low, high, bias, percentile_low, percentile_high, n_boot, widened}``.
    """
    ref, gen = checked_array(emb_ref, "emb_ref", ndim=2), checked_array(emb_gen, "emb_gen", ndim=2)
    for name, x in (("emb_ref", ref), ("emb_gen", gen)):
        if x.shape[0] < 2:
            raise ValueError(f"frechet_distance_ci needs at least 2 rows in {name}, got {x.shape[0]}")
    if ref.shape[1] != gen.shape[1]:
        raise ValueError(f"embedding dims differ: ref {ref.shape[1]} vs gen {gen.shape[1]}")
    if n_boot < 2 or not 0 < alpha < 1:
        raise ValueError(f"need n_boot >= 2 and 0 < alpha < 1; got {n_boot}, {alpha}")
    fd = _fd_of_rows(ref, gen)
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot, dtype=np.float64)
    for b in range(n_boot):
        i = rng.integers(0, ref.shape[0], size=ref.shape[0])
        j = rng.integers(0, gen.shape[0], size=gen.shape[0])
        boot[b] = _fd_of_rows(ref[i], gen[j])
    q_lo, q_hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    estimate = 2 * fd - boot.mean()
    low, high = 2 * fd - q_hi, 2 * fd - q_lo
    widened = not low <= estimate <= high
    low, high = min(low, estimate), max(high, estimate)
    return dict(fd=fd, estimate=float(estimate), low=float(low), high=float(high),
                bias=float(boot.mean() - fd), percentile_low=float(q_lo), percentile_high=float(q_hi),
                n_boot=int(n_boot), widened=bool(widened))

# ----------------------------------------------------------------------------- KL divergence

def _pair_by_ids(a: np.ndarray, b: np.ndarray, ids_a: Sequence | None, ids_b: Sequence | None):
    """Reorder rows of ``b`` to match ``ids_a``; both id lists must be unique and hold the same ids."""
    if ids_a is None and ids_b is None:
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"row counts differ ({a.shape[0]} vs {b.shape[0]}) and no ids given")
        return a, b
    if ids_a is None or ids_b is None:
        raise ValueError("give both ids_ref and ids_gen, or neither")
    ids_a, ids_b = list(ids_a), list(ids_b)
    for name, ids, arr in (("ids_ref", ids_a, a), ("ids_gen", ids_b, b)):
        if len(ids) != arr.shape[0]:
            raise ValueError(f"{name} has {len(ids)} ids for {arr.shape[0]} rows")
        if len(set(ids)) != len(ids):
            raise ValueError(f"{name} contains duplicate ids")
    missing_gen = [i for i in ids_a if i not in set(ids_b)]
    missing_ref = [i for i in ids_b if i not in set(ids_a)]
    if missing_gen or missing_ref:
        raise ValueError(f"unpaired ids: missing in gen {missing_gen[:10]}, "
                         f"missing in ref {missing_ref[:10]}")
    pos = {k: j for j, k in enumerate(ids_b)}
    return a, b[[pos[k] for k in ids_a]]


def _to_probs(x: np.ndarray, form: str, name: str) -> np.ndarray:
    if form == "softmax":
        z = np.exp(x - x.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
    if np.any(x < 0) or np.any(x > 1):
        raise ValueError(f"{name} must lie in [0, 1] for form={form!r}")
    if form == "probs" and not np.allclose(x.sum(axis=1), 1.0, atol=1e-5):
        raise ValueError(f"{name} rows must sum to 1 for form='probs'")
    return x


def kl_divergence(p_ref: Any, p_gen: Any, ids_ref: Sequence | None = None,
                  ids_gen: Sequence | None = None, direction: str = "ref||gen",
                  form: str = "softmax", per_clip: bool = False,
                  eps: float | None = None) -> float | np.ndarray:
    """KL divergence between classifier outputs of paired clips (rows = clips, columns = classes).

    direction: "ref||gen" (default; AudioLDM's toolkit / AudioCraft: ``Σ_c p_ref log(p_ref/p_gen)``)
    or "gen||ref" (the direction Stable Audio's tools compute).
    form: "softmax" — inputs are logits, softmaxed per row; "probs" — rows are probability
    vectors (checked: non-negative, sum 1 within 1e-5); "sigmoid" — inputs are independent
    per-class probabilities in [0, 1] (multi-label, e.g. PANNs' clipwise output; apply the
    sigmoid to logits yourself) and the result is the sum over classes of Bernoulli KLs, a true
    divergence (≥ 0). The anchors' "sigmoid KL" feeds unnormalised sigmoid outputs to a
    categorical KL, which is not a divergence and can go negative; it is deliberately not offered.
    Probabilities are clamped at EPS = 1e-12 before taking logs.
    eps: None (default: the clamping above), or audioldm_eval's smoothing, so numbers line up with
    the tables made with it (AudioLDM, Tango, Tango 2, BATON): ``Σ_c p log(p / (q + eps))`` with
    p unclamped (0 log 0 = 0), q the second distribution of ``direction``, summed over classes and
    averaged over clips. audioldm_eval (``metrics/kl.py``, EPS = 1e-6) computes
    ``kl_div(log(softmax(gen) + EPS), softmax(ref), reduction="sum") / n_clips``: our
    ``direction="ref||gen", form="softmax", eps=1e-6``. Its "sigmoid" KL is not offered (above).
    With ids, rows are paired by id (the same set of unique ids on both sides), else by position.
    Returns the mean over clips, or the per-clip array (ordered like ``p_ref``) if ``per_clip``.
    """
    if direction not in ("ref||gen", "gen||ref"):
        raise ValueError(f"direction must be 'ref||gen' or 'gen||ref', got {direction!r}")
    if form not in ("softmax", "probs", "sigmoid"):
        raise ValueError(f"form must be 'softmax', 'probs' or 'sigmoid', got {form!r}")
    a, b = checked_array(p_ref, "p_ref", ndim=2), checked_array(p_gen, "p_gen", ndim=2)
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"p_ref is empty, shape {a.shape}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"class counts differ: p_ref {a.shape[1]} vs p_gen {b.shape[1]}")
    a, b = _pair_by_ids(a, b, ids_ref, ids_gen)
    p, q = _to_probs(a, form, "p_ref"), _to_probs(b, form, "p_gen")
    if direction == "gen||ref":
        p, q = q, p
    if eps is not None:
        kl = _kl_smoothed(p, q, eps, form)
    elif form == "sigmoid":
        p, q = np.clip(p, EPS, 1 - EPS), np.clip(q, EPS, 1 - EPS)
        kl = (p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))).sum(axis=1)
    else:
        p, q = np.clip(p, EPS, 1.0), np.clip(q, EPS, 1.0)
        kl = (p * np.log(p / q)).sum(axis=1)
    return kl if per_clip else float(kl.mean())


def _kl_smoothed(p: np.ndarray, q: np.ndarray, eps: float, form: str) -> np.ndarray:
    """Per-row ``Σ_c p log(p / (q + eps))`` (audioldm_eval's smoothing); 0 log 0 counts 0."""
    if form == "sigmoid":
        raise ValueError("eps (audioldm_eval's smoothing) applies to categorical KL (form 'softmax' or "
                         "'probs'); its sigmoid variant is not a divergence and is not offered")
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / (q + eps)), 0.0)
    return terms.sum(axis=1)


# ----------------------------------------------------------------------------- IS and CLAP score

def inception_score(probs: Any, n_splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """Inception score ``exp(E_x KL(p(y|x) ‖ p(y)))``: mean and std over ``n_splits`` splits.

    Rows are shuffled with ``np.random.default_rng(seed).permutation`` and split with
    ``np.array_split``; p(y) is the mean within each split. One class → 1; balanced one-hot over
    C classes → C only when each split is itself balanced (with shuffling, a split's score is
    ``exp(H(class counts in the split))``, slightly below C; ``n_splits=1`` gives exactly C).
    """
    p = checked_array(probs, "probs", ndim=2)
    if not 1 <= n_splits <= p.shape[0]:
        raise ValueError(f"n_splits must be in [1, {p.shape[0]}] (rows), got {n_splits}")
    if np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-5):
        raise ValueError("probs rows must be non-negative and sum to 1")
    p = p[np.random.default_rng(seed).permutation(p.shape[0])]
    scores = []
    for part in np.array_split(p, n_splits):
        py = part.mean(axis=0, keepdims=True)
        kl = (xlogy(part, part) - xlogy(part, py)).sum(axis=1)  # 0·log 0 = 0
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def cosine_similarity_rows(a: Any, b: Any) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b`` (float64)."""
    a, b = checked_array(a, "a", ndim=2), checked_array(b, "b", ndim=2)
    if a.shape != b.shape or a.shape[0] == 0:
        raise ValueError(f"need two non-empty arrays of the same shape, got {a.shape} and {b.shape}")
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    if np.any(na == 0) or np.any(nb == 0):
        raise ValueError("zero-norm embedding row: cosine similarity undefined")
    return (a / na[:, None] * (b / nb[:, None])).sum(axis=1)


def clap_score(audio_emb: Any, text_emb: Any) -> float:
    """CLAP score: mean cosine similarity between row-paired audio and caption embeddings."""
    return float(cosine_similarity_rows(audio_emb, text_emb).mean())




# ----------------------------------------------------------------------------- bootstrap

def bootstrap_ci_fn(n_items: int, fn: Callable[[np.ndarray], float], n_boot: int = 1000,
                    alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Percentile bootstrap of any statistic ``fn(idx)`` over resampled item indices.

    Returns ``(fn(arange(n)), low, high)``; use it for statistics that are not means (e.g. FAD of
    a resampled set). Deterministic for a given seed.
    """
    if n_items < 1 or n_boot < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n_items >= 1, n_boot >= 1, 0 < alpha < 1; got {n_items}, {n_boot}, {alpha}")
    estimate = float(fn(np.arange(n_items)))
    idx = np.random.default_rng(seed).integers(0, n_items, size=(n_boot, n_items))
    stats = np.array([fn(i) for i in idx], dtype=np.float64)
    if not (np.isfinite(estimate) and np.all(np.isfinite(stats))):
        raise ValueError("bootstrap statistic returned NaN or inf")
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return estimate, float(low), float(high)


def bootstrap_ci(values: Any, stat: Callable = np.mean, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float, float]:
    """Percentile bootstrap CI of ``stat`` over per-item values (1-D): (estimate, low, high)."""
    v = checked_array(values, "values", ndim=1)
    if v.size == 0:
        raise ValueError("values is empty")
    return bootstrap_ci_fn(v.size, lambda idx: stat(v[idx]), n_boot, alpha, seed)


def bootstrap_ci_paired(a: Any, b: Any, n_boot: int = 1000, alpha: float = 0.05,
                        seed: int = 0) -> tuple[float, float, float]:
    """Paired percentile bootstrap CI of mean(a − b), resampling items jointly."""
    a, b = checked_array(a, "a", ndim=1), checked_array(b, "b", ndim=1)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in length: {a.shape[0]} vs {b.shape[0]}")
    return bootstrap_ci(a - b, np.mean, n_boot, alpha, seed)




