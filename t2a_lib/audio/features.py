"""Log-mel features for whole splits, cached on disk keyed by the manifest and every wav's content.

Clips are cut to a whole number of hops: T = samples // 160 frames (256 for 2.56 s), the way
Tango cuts 10.24 s to 1024 frames.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from .wav import SAMPLE_RATE, AudioError, read_wav
from .manifest import ManifestRecord, read_manifest
from .mel import MelConfig, MelFrontEnd
from ..world.scenes import CLASSES

_FRONT_END: MelFrontEnd | None = None


def mel_frames(num_samples: int, hop: int = 160) -> int:
    return num_samples // hop


@torch.no_grad()
def waves_to_mel(waves, batch_size: int = 128) -> torch.Tensor:
    """(N, S) float waves at 16 kHz -> (N, 64, S // 160) float32 log-mels."""
    global _FRONT_END
    if _FRONT_END is None:
        _FRONT_END = MelFrontEnd(MelConfig())
    waves = torch.as_tensor(np.asarray(waves, dtype=np.float32))
    if waves.ndim == 1:
        waves = waves[None]
    t = mel_frames(waves.shape[-1])
    out = [_FRONT_END(waves[i:i + batch_size])[..., :t] for i in range(0, len(waves), batch_size)]
    return torch.cat(out)


MIN_SAMPLES = 1024  # one mel window: a shorter clip has no frame
MAX_LENGTH_RATIO = 2.0  # a clip this many times the split's median length pads every other clip


def _where(rec: ManifestRecord) -> str:
    return f"{rec.location} ({rec.source} line {rec.line})" if rec.source else rec.location


def load_waves(records: list[ManifestRecord], num_samples: int | None = None) -> np.ndarray:
    """Read every record's wav (16 kHz, resampled if needed), padded/cut to ``num_samples``
    (default: the longest clip). A bad, too-short or over-long clip raises ``AudioError`` naming
    the file and its manifest line, before anything is padded."""
    waves = []
    for r in records:
        try:
            waves.append(read_wav(r.location))
        except (AudioError, FileNotFoundError) as e:
            raise type(e)(f"{e} (listed in {r.source} line {r.line})" if r.source else str(e)) from None
    lengths = np.array([len(w) for w in waves])
    short = [i for i, n in enumerate(lengths) if n < MIN_SAMPLES]
    if short:
        i = short[0]
        raise AudioError(f"{_where(records[i])}: {lengths[i] / SAMPLE_RATE:.3f} s is too short for one mel "
                         f"window ({MIN_SAMPLES} samples); {len(short)} such clip(s) in the split")
    median = float(np.median(lengths)) if len(lengths) else 0.0
    if num_samples is None and len(lengths) and lengths.max() > MAX_LENGTH_RATIO * median:
        i = int(lengths.argmax())
        raise AudioError(f"{_where(records[i])}: {lengths[i] / SAMPLE_RATE:.2f} s long while the split's clips "
                         f"are {median / SAMPLE_RATE:.2f} s (median); every clip would be padded to it. "
                         f"Cut the clip or drop the row")
    n = num_samples or int(lengths.max())
    out = np.zeros((len(waves), n), dtype=np.float32)
    for i, w in enumerate(waves):
        out[i, : min(n, len(w))] = w[:n]
    return out


def features_key(manifest_path: Path, records: list[ManifestRecord]) -> str:
    """What a split's features depend on: the manifest, every wav's bytes, the mel settings."""
    h = hashlib.sha256(manifest_path.read_bytes() + repr(MelConfig()).encode())
    for r in records:
        try:
            with open(r.location, "rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
        except FileNotFoundError:
            raise FileNotFoundError(f"{_where(r)}: audio file not found") from None
    return h.hexdigest()[:16]


def split_mels(manifest_path, cache: bool = True) -> tuple[torch.Tensor, list[ManifestRecord]]:
    """Log-mels (N, 64, T) float32 of a manifest's clips, cached next to the manifest.

    The cache is keyed by the manifest, the content of every wav and the mel settings, and
    holds float32, so a hit returns exactly what a miss computes."""
    manifest_path = Path(manifest_path)
    records = read_manifest(manifest_path)
    cache_path = manifest_path.parent / "features" / f"{manifest_path.stem}_{features_key(manifest_path, records)}.npy"
    if cache and cache_path.exists():
        return torch.from_numpy(load_array(cache_path)), records
    mels = waves_to_mel(load_waves(records))
    if cache:
        save_array(cache_path, mels.numpy())
    return mels, records


def load_array(path: Path) -> np.ndarray:
    """``np.load`` of a cache file; a truncated or corrupt one raises naming the file."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CacheError(f"{path}: corrupt cache file ({e}); delete it to recompute") from None


def save_array(path: Path, array: np.ndarray) -> None:
    """Write ``path`` atomically (a unique temporary name, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, np.ascontiguousarray(array, dtype=np.float32))
    tmp.replace(path)


class CacheError(ValueError):
    """A cache file that cannot be read (truncated, corrupt); the message names it."""


def frame_targets(records: list[ManifestRecord], n_frames: int, hop_seconds: float,
                  classes: list[str] = CLASSES) -> torch.Tensor:
    """(N, n_frames, C) 0/1 targets: frame j is on when its centre lies inside an event."""
    centres = (np.arange(n_frames) + 0.5) * hop_seconds
    y = np.zeros((len(records), n_frames, len(classes)), dtype=np.float32)
    for i, r in enumerate(records):
        for e in r.events or []:
            y[i, (centres >= e["onset"]) & (centres < e["offset"]), classes.index(e["label"])] = 1.0
    return torch.from_numpy(y)
