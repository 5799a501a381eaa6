"""Evaluation metrics: FAD (+ bias-corrected bootstrap CI), KL, IS, CLAP score, event presence /
order / F1 and their continuous forms, bootstrap CIs, cache.

Everything is computed in numpy float64. Bad input (NaN/inf, wrong shapes, empty sets, unknown
ids) raises ``ValueError`` naming the problem; nothing returns a sentinel such as -1.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import xlogy

EPS = 1e-12  # probabilities are clamped to [EPS, 1] (or [EPS, 1 - EPS] for Bernoulli) before logs
_TIME_TOL = 1e-9  # seconds; absorbs float rounding in collar / gap / duration comparisons


def _array(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
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
    mu1, mu2 = np.atleast_1d(_array(mu1, "mu1")), np.atleast_1d(_array(mu2, "mu2"))
    s1, s2 = np.atleast_2d(_array(sigma1, "sigma1")), np.atleast_2d(_array(sigma2, "sigma2"))
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
    x = _array(x, "embeddings", ndim=2)
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
    ref, gen = _array(emb_ref, "emb_ref", ndim=2), _array(emb_gen, "emb_gen", ndim=2)
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
                  form: str = "softmax", per_clip: bool = False) -> float | np.ndarray:
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
    With ids, rows are paired by id (the same set of unique ids on both sides), else by position.
    Returns the mean over clips, or the per-clip array (ordered like ``p_ref``) if ``per_clip``.
    """
    if direction not in ("ref||gen", "gen||ref"):
        raise ValueError(f"direction must be 'ref||gen' or 'gen||ref', got {direction!r}")
    if form not in ("softmax", "probs", "sigmoid"):
        raise ValueError(f"form must be 'softmax', 'probs' or 'sigmoid', got {form!r}")
    a, b = _array(p_ref, "p_ref", ndim=2), _array(p_gen, "p_gen", ndim=2)
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"p_ref is empty, shape {a.shape}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"class counts differ: p_ref {a.shape[1]} vs p_gen {b.shape[1]}")
    a, b = _pair_by_ids(a, b, ids_ref, ids_gen)
    p, q = _to_probs(a, form, "p_ref"), _to_probs(b, form, "p_gen")
    if direction == "gen||ref":
        p, q = q, p
    if form == "sigmoid":
        p, q = np.clip(p, EPS, 1 - EPS), np.clip(q, EPS, 1 - EPS)
        kl = (p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))).sum(axis=1)
    else:
        p, q = np.clip(p, EPS, 1.0), np.clip(q, EPS, 1.0)
        kl = (p * np.log(p / q)).sum(axis=1)
    return kl if per_clip else float(kl.mean())


# ----------------------------------------------------------------------------- IS and CLAP score

def inception_score(probs: Any, n_splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """Inception score ``exp(E_x KL(p(y|x) ‖ p(y)))``: mean and std over ``n_splits`` splits.

    Rows are shuffled with ``np.random.default_rng(seed).permutation`` and split with
    ``np.array_split``; p(y) is the mean within each split. One class → 1; balanced one-hot over
    C classes → C only when each split is itself balanced (with shuffling, a split's score is
    ``exp(H(class counts in the split))``, slightly below C; ``n_splits=1`` gives exactly C).
    """
    p = _array(probs, "probs", ndim=2)
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
    a, b = _array(a, "a", ndim=2), _array(b, "b", ndim=2)
    if a.shape != b.shape or a.shape[0] == 0:
        raise ValueError(f"need two non-empty arrays of the same shape, got {a.shape} and {b.shape}")
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    if np.any(na == 0) or np.any(nb == 0):
        raise ValueError("zero-norm embedding row: cosine similarity undefined")
    return (a / na[:, None] * (b / nb[:, None])).sum(axis=1)


def clap_score(audio_emb: Any, text_emb: Any) -> float:
    """CLAP score: mean cosine similarity between row-paired audio and caption embeddings."""
    return float(cosine_similarity_rows(audio_emb, text_emb).mean())


# ----------------------------------------------------------------------------- events

@dataclass(frozen=True)
class Event:
    label: str
    onset: float
    offset: float


def as_event(e: Event | dict) -> Event:
    """An ``Event`` from an Event or a dict with keys label/onset/offset; validates times."""
    if isinstance(e, dict):
        missing = {"label", "onset", "offset"} - set(e)
        if missing:
            raise ValueError(f"event {e!r} lacks keys {sorted(missing)}")
        e = Event(str(e["label"]), float(e["onset"]), float(e["offset"]))
    elif not isinstance(e, Event):
        raise ValueError(f"not an event (Event or dict): {e!r}")
    if not (np.isfinite(e.onset) and np.isfinite(e.offset)) or e.offset < e.onset:
        raise ValueError(f"event times must be finite with offset >= onset: {e!r}")
    return e


def _labels(prompted: Sequence[str]) -> list[str]:
    if isinstance(prompted, str) or len(prompted) == 0:
        raise ValueError(f"prompted labels must be a non-empty list of labels, got {prompted!r}")
    return list(prompted)


def presence(prompted_labels: Sequence[str], detected_events: Sequence[Event | dict]) -> dict:
    """Label-set presence for one clip: recall (share of prompted labels detected), precision
    (share of detected labels that were prompted; 0.0 if nothing was detected, as in sed_eval),
    and ``all_present``."""
    prompted = set(_labels(prompted_labels))
    detected = {as_event(e).label for e in detected_events}
    hit = prompted & detected
    return dict(recall=len(hit) / len(prompted),
                precision=len(hit) / len(detected) if detected else 0.0,
                all_present=hit == prompted)


def order_correct(prompted_labels_in_time_order: Sequence[str],
                  detected_events: Sequence[Event | dict]) -> bool:
    """True iff every prompted event is detected and their onsets strictly increase in prompted order.

    A label repeated in the prompt maps its k-th occurrence to the k-th earliest detected onset of
    that label (so "knock, bell, knock" needs two knocks around a bell). One prompted event:
    True iff present.
    """
    prompted = _labels(prompted_labels_in_time_order)
    onsets: dict[str, list[float]] = {}
    for e in map(as_event, detected_events):
        onsets.setdefault(e.label, []).append(e.onset)
    seen: dict[str, int] = {}
    seq = []
    for lab in prompted:
        k = seen.get(lab, 0)
        found = sorted(onsets.get(lab, []))
        if k >= len(found):
            return False
        seq.append(found[k])
        seen[lab] = k + 1
    return bool(np.all(np.diff(seq) > 0))



def _frame_posteriors(frame_probs: Any) -> np.ndarray:
    """One clip's frame posteriors as a float64 (T × C) array with T, C ≥ 1 and values in [0, 1]."""
    p = _array(frame_probs, "frame_probs", ndim=2)
    if p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"frame_probs must have at least one frame and one class, got shape {p.shape}")
    if np.any(p < 0) or np.any(p > 1):
        raise ValueError("frame_probs must lie in [0, 1]")
    return p


def _class_indices(class_indices: Sequence[int], n_classes: int) -> list[int]:
    """A non-empty list of integer class indices, each in [0, n_classes)."""
    if isinstance(class_indices, (str, bytes)) or len(class_indices) == 0:
        raise ValueError(f"class_indices must be a non-empty list of class indices, got {class_indices!r}")
    out = []
    for k in class_indices:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"class index {k!r} is not an integer")
        if not 0 <= k < n_classes:
            raise ValueError(f"class index {k} out of range for {n_classes} classes")
        out.append(int(k))
    return out


def presence_probability(frame_probs: Any, class_indices: Sequence[int]) -> float:
    """Mean presence probability of the prompted events in one clip (a continuous presence rate).

    ``(1/K) Σ_j max_t p_{k_j}(t)`` over the K prompted events ``k_1..k_K`` (column indices of the
    T × C posteriors ``frame_probs``): an event's presence probability is its class's largest
    frame posterior. A class prompted twice counts twice (once per prompted occurrence, with the
    same value, since a clip-level maximum cannot tell one occurrence from two); the binary
    :func:`presence` recall counts the label set instead, so the two weight repeats differently.
    """
    p = _frame_posteriors(frame_probs)
    ks = _class_indices(class_indices, p.shape[1])
    return float(p[:, ks].max(axis=0).mean())


def order_margin(frame_probs: Any, class_indices_in_time_order: Sequence[int],
                 hop_seconds: float) -> float:
    """Continuous order score for one clip: the smallest gap (s) between successive prompted
    events' posterior-weighted time centroids; > 0 iff they sound in the prompted order.

    Frame t (0-based) is centred at ``τ_t = (t + 0.5)·hop``; event k's centroid is
    ``c_k = Σ_t τ_t p_k(t) / Σ_t p_k(t)`` and the margin is ``min_k (c_{k+1} − c_k)``.
    NaN (no order to score) when fewer than 2 events are prompted, when a class is prompted more
    than once (one centroid cannot place two occurrences), or when a prompted class has zero
    posterior mass (``Σ_t p_k(t) = 0``: no centroid).
    """
    p = _frame_posteriors(frame_probs)
    ks = _class_indices(class_indices_in_time_order, p.shape[1])
    if not (np.isfinite(hop_seconds) and hop_seconds > 0):
        raise ValueError(f"hop_seconds must be finite and > 0, got {hop_seconds}")
    if len(ks) < 2 or len(set(ks)) < len(ks):
        return float("nan")
    w = p[:, ks]
    mass = w.sum(axis=0)
    if np.any(mass == 0):
        return float("nan")
    tau = (np.arange(p.shape[0]) + 0.5) * hop_seconds
    centroids = tau @ w / mass
    return float(np.diff(centroids).min())

def _match_count(ref: list[float], est: list[float], collar: float) -> int:
    """Maximum number of one-to-one onset pairs within ``collar`` (ties: least total distance)."""
    if not ref or not est:
        return 0
    dist = np.abs(np.subtract.outer(np.asarray(ref), np.asarray(est)))
    ok = dist <= collar + _TIME_TOL
    big = (min(dist.shape) + 1) * (collar + 1.0)  # one forbidden pair costs more than all allowed ones
    rows, cols = linear_sum_assignment(np.where(ok, dist, big))
    return int(ok[rows, cols].sum())


def _f1_from_counts(tp: int, fp: int, fn: int) -> dict:
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return dict(f1=f1, precision=prec, recall=rec, tp=tp, fp=fp, fn=fn)


def _event_counts(reference_events, estimated_events, collar: float) -> tuple[int, int, int]:
    if not collar >= 0:
        raise ValueError(f"collar must be >= 0, got {collar}")
    ref, est = [as_event(e) for e in reference_events], [as_event(e) for e in estimated_events]
    tp = 0
    for lab in {e.label for e in ref} | {e.label for e in est}:
        tp += _match_count([e.onset for e in ref if e.label == lab],
                           [e.onset for e in est if e.label == lab], collar)
    return tp, len(est) - tp, len(ref) - tp


def event_f1(reference_events: Sequence[Event | dict], estimated_events: Sequence[Event | dict],
             collar: float = 0.2) -> dict:
    """Event-based F1 for one clip: onset-only collar (sed_eval EventBasedMetrics with
    ``evaluate_offset=False``, t_collar=0.2), one-to-one matching within each label by maximum
    bipartite matching (``linear_sum_assignment``; disallowed pairs outside the collar, ties broken
    by least total onset distance). Undefined ratios (no events) are 0.0, as in sed_eval."""
    return _f1_from_counts(*_event_counts(reference_events, estimated_events, collar))


def event_f1_corpus(list_of_refs: Sequence[Sequence], list_of_ests: Sequence[Sequence],
                    collar: float = 0.2) -> dict:
    """Micro-averaged event F1 over clips: tp/fp/fn summed over clips, then F1."""
    if len(list_of_refs) != len(list_of_ests) or len(list_of_refs) == 0:
        raise ValueError(f"need equal, non-zero numbers of clips, "
                         f"got {len(list_of_refs)} and {len(list_of_ests)}")
    counts = np.array([_event_counts(r, e, collar) for r, e in zip(list_of_refs, list_of_ests)])
    return _f1_from_counts(*(int(c) for c in counts.sum(axis=0)))


def events_from_frames(frame_probs: Any, labels: Sequence[str], hop_seconds: float,
                       threshold: float = 0.5, min_duration: float = 0.05,
                       merge_gap: float = 0.05) -> list[Event]:
    """Events from frame-wise class probabilities (T × C); frame t spans [t·hop, (t+1)·hop).

    A frame is active when ``p >= threshold``; runs of active frames become events; gaps shorter
    than ``merge_gap`` between events of one class are closed; then events shorter than
    ``min_duration`` are dropped. Sorted by onset, then label.
    """
    p = _array(frame_probs, "frame_probs", ndim=2)
    if p.shape[1] != len(labels):
        raise ValueError(f"frame_probs has {p.shape[1]} classes but {len(labels)} labels")
    if not hop_seconds > 0:
        raise ValueError(f"hop_seconds must be > 0, got {hop_seconds}")
    out = []
    for c, lab in enumerate(labels):
        active = np.concatenate([[0], (p[:, c] >= threshold).astype(np.int8), [0]])
        edges = np.diff(active)
        runs = list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))
        merged: list[list[float]] = []
        for start, end in runs:
            on, off = start * hop_seconds, end * hop_seconds
            if merged and on - merged[-1][1] < merge_gap - _TIME_TOL:
                merged[-1][1] = off
            else:
                merged.append([on, off])
        out += [Event(str(lab), on, off) for on, off in merged if off - on >= min_duration - _TIME_TOL]
    return sorted(out, key=lambda e: (e.onset, e.label))


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
    v = _array(values, "values", ndim=1)
    if v.size == 0:
        raise ValueError("values is empty")
    return bootstrap_ci_fn(v.size, lambda idx: stat(v[idx]), n_boot, alpha, seed)


def bootstrap_ci_paired(a: Any, b: Any, n_boot: int = 1000, alpha: float = 0.05,
                        seed: int = 0) -> tuple[float, float, float]:
    """Paired percentile bootstrap CI of mean(a − b), resampling items jointly."""
    a, b = _array(a, "a", ndim=1), _array(b, "b", ndim=1)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in length: {a.shape[0]} vs {b.shape[0]}")
    return bootstrap_ci(a - b, np.mean, n_boot, alpha, seed)


# ----------------------------------------------------------------------------- content-keyed cache

def content_key(*args: Any) -> str:
    """sha256 over the inputs: arrays (and tensors) by dtype, shape and bytes; others by repr."""
    h = hashlib.sha256()
    for x in args:
        if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
            x = x.detach().cpu().numpy()
        if isinstance(x, np.ndarray):
            h.update(f"ndarray|{x.dtype.str}|{x.shape}|".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        else:
            h.update(f"{type(x).__name__}|{x!r}|".encode())
    return h.hexdigest()


def cached(cache_dir: str | os.PathLike, key: str, compute_fn: Callable[[], Any]) -> Any:
    """Return the result stored under ``key`` in ``cache_dir``, computing and storing it if absent.

    Arrays, tuples of arrays and dicts of arrays go to ``<key>.npz``; anything else must be
    JSON-serialisable and goes to ``<key>.json``. Key the cache with ``content_key`` of every
    input so a stored result can never be stale. Writes are atomic (a unique temporary file, then
    a rename), and a miss returns what it stored read back, so a hit and a miss return the same
    types, dtypes and values (tuples of non-arrays come back as lists, dict keys as strings).
    """
    if not key or any(ch in key for ch in "/\\") or key.startswith("."):
        raise ValueError(f"cache key must be a plain file name, got {key!r}")
    d = Path(cache_dir)
    npz, js = d / f"{key}.npz", d / f"{key}.json"
    if not npz.exists() and not js.exists():
        _store(d, key, compute_fn())
    return _read_npz(npz) if npz.exists() else _read_cache_json(js)


def _store(d: Path, key: str, result: Any) -> None:
    """Write ``result`` as ``<key>.npz`` (arrays) or ``<key>.json``, atomically."""
    import tempfile

    arrays = _npz_items(result)
    d.mkdir(parents=True, exist_ok=True)
    suffix = ".npz" if arrays else ".json"
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{key}.", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            if arrays:
                np.savez(f, **arrays)
            else:
                f.write(json.dumps(result).encode())
        os.replace(tmp, d / f"{key}{suffix}")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _npz_items(result: Any) -> dict | None:
    """The members of ``<key>.npz`` for an array, a tuple or a dict of arrays; None for JSON."""
    if isinstance(result, np.ndarray):
        kind, items = "array", {"value": result}
    elif isinstance(result, tuple) and result and all(isinstance(r, np.ndarray) for r in result):
        kind, items = "tuple", {str(i): r for i, r in enumerate(result)}
    elif isinstance(result, dict) and result and all(isinstance(v, np.ndarray) for v in result.values()):
        if "__kind__" in result:
            raise ValueError("'__kind__' is reserved in cached dicts")
        kind, items = "dict", {str(k): v for k, v in result.items()}
    else:
        return None
    if any(v.dtype.hasobject for v in items.values()):
        raise TypeError("cached arrays must hold numbers, not Python objects (they are stored without pickle)")
    return {"__kind__": np.array(kind), **items}


def _read_npz(npz: Path) -> Any:
    try:
        with np.load(npz, allow_pickle=False) as z:
            kind = str(z["__kind__"])
            items = {k: z[k] for k in z.files if k != "__kind__"}
    except (ValueError, OSError, EOFError, KeyError) as e:  # truncated zip, bad member
        raise ValueError(f"{npz}: corrupt cache file ({e}); delete it to recompute") from None
    if kind == "array":
        return items["value"]
    if kind == "tuple":
        return tuple(items[str(i)] for i in range(len(items)))
    return items


def _read_cache_json(js: Path) -> Any:
    from .files import read_json

    return read_json(js, "cache file")
