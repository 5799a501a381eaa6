"""Controlled corruptions of ground-truth clips, to show each metric moving the right way.

They cut and paste the clip's own audio using its timeline, so the only thing that changes is
the one the corruption names:

- ``swap_order``: the first and last foreground events trade places in time.
- ``drop_event``: one event's span is replaced by the noise floor.
- ``noise``: white noise at a given SNR over the whole clip.
"""

from __future__ import annotations

import numpy as np

CORRUPTIONS = ("swap_order", "drop_event", "noise")


def _span(ev: dict, sr: int, n: int) -> tuple[int, int]:
    return int(round(ev["onset"] * sr)), min(int(round(ev["offset"] * sr)), n)


def swap_order(wave: np.ndarray, events: list[dict], sr: int = 16000) -> np.ndarray | None:
    """Move the earliest event's audio to the latest's onset and back; None when the clip has
    fewer than two non-overlapping events."""
    evs = sorted(events, key=lambda e: e["onset"])
    evs = [e for e in evs if not (e["onset"] < 0.15 and e["offset"] > wave.size / sr - 0.15)]  # skip beds
    if len(evs) < 2 or evs[0]["offset"] > evs[-1]["onset"]:
        return None
    a, b = _span(evs[0], sr, wave.size), _span(evs[-1], sr, wave.size)
    seg_a, seg_b = wave[a[0]:a[1]].copy(), wave[b[0]:b[1]].copy()
    floor = np.median(np.abs(wave)) * 0.1
    out = wave.copy()
    out[a[0]:a[1]] = floor
    out[b[0]:b[1]] = floor
    out[a[0]:a[0] + min(len(seg_b), wave.size - a[0])] = seg_b[: wave.size - a[0]]
    end = min(b[0] + len(seg_a), wave.size)
    out[b[0]:end] = seg_a[: end - b[0]]
    return out


def drop_event(wave: np.ndarray, events: list[dict], rng: np.random.Generator, sr: int = 16000) -> np.ndarray | None:
    """Silence one event that overlaps no other (its samples are its own) to a faint noise
    floor; None when the clip has no such event or only one event."""
    def alone(ev):
        return all(o is ev or o["offset"] <= ev["onset"] or o["onset"] >= ev["offset"] for o in events)

    candidates = [e for e in events if alone(e)] if len(events) > 1 else []
    if not candidates:
        return None
    s, e = _span(candidates[int(rng.integers(len(candidates)))], sr, wave.size)
    out = wave.copy()
    out[s:e] = rng.standard_normal(e - s).astype(wave.dtype) * 3e-4
    return out


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    power = float(np.mean(wave.astype(np.float64) ** 2))
    noise = rng.standard_normal(wave.size) * np.sqrt(power / 10 ** (snr_db / 10))
    out = wave + noise.astype(wave.dtype)
    return out / max(1.0, float(np.abs(out).max()) / 0.95)
