"""Event metrics of one clip or a corpus: prompted-label presence, event order, event-based F1 (with a
collar), their continuous forms on frame posteriors, and events from frame posteriors.

An event is the world's ``Event`` (label, onset, offset in seconds); a dict with those keys is accepted
wherever events are. Bad input raises ``ValueError`` naming the problem.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..world.scenes import Event
from .metrics import checked_array

_TIME_TOL = 1e-9  # seconds; absorbs float rounding in collar / gap / duration comparisons


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
    p = checked_array(frame_probs, "frame_probs", ndim=2)
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
    by least total onset distance).

    Undefined ratios: here precision is 0.0 when nothing was detected (tp + fp = 0), recall 0.0
    when nothing was to be found (tp + fn = 0), and F1 0.0 whenever tp = 0, so every clip has a
    number and corpus means stay defined (an empty detection on a clip with events counts as a
    miss, and spurious detections on an empty clip count against it). sed_eval (0.2.x,
    ``sed_eval.metric.precision`` / ``recall``) returns NaN for those ratios instead, its F-measure
    is then NaN too (0.0 only when precision and recall are both 0), and its class-wise averages
    skip them with ``nanmean``. The counts tp / fp / fn are the same in both."""
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
    p = checked_array(frame_probs, "frame_probs", ndim=2)
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
