"""Log-mel features for whole splits, cached on disk keyed by the manifest's content.

Clips are cut to a whole number of hops: T = samples // 160 frames (256 for 2.56 s), the way
Tango cuts 10.24 s to 1024 frames.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from .audio import read_wav
from .manifest import ManifestRecord, read_manifest
from .mel import MelConfig, MelFrontEnd
from .world import CLASSES

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


def load_waves(records: list[ManifestRecord], num_samples: int | None = None) -> np.ndarray:
    """Read every record's wav (16 kHz, resampled if needed), padded/cut to ``num_samples``."""
    waves = [read_wav(r.location) for r in records]
    n = num_samples or max(len(w) for w in waves)
    out = np.zeros((len(waves), n), dtype=np.float32)
    for i, w in enumerate(waves):
        out[i, : min(n, len(w))] = w[:n]
    return out


def split_mels(manifest_path, cache: bool = True) -> tuple[torch.Tensor, list[ManifestRecord]]:
    """Log-mels (N, 64, T) of a manifest's clips, cached as float16 next to the manifest."""
    manifest_path = Path(manifest_path)
    records = read_manifest(manifest_path)
    key = hashlib.sha256(manifest_path.read_bytes() + repr(MelConfig()).encode()).hexdigest()[:16]
    cache_path = manifest_path.parent / "features" / f"{manifest_path.stem}_{key}.npy"
    if cache and cache_path.exists():
        return torch.from_numpy(np.load(cache_path).astype(np.float32)), records
    mels = waves_to_mel(load_waves(records))
    if cache:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(cache_path.name + ".tmp.npy")
        np.save(tmp, mels.numpy().astype(np.float16))
        tmp.replace(cache_path)
    return mels, records


def frame_targets(records: list[ManifestRecord], n_frames: int, hop_seconds: float,
                  classes: list[str] = CLASSES) -> torch.Tensor:
    """(N, n_frames, C) 0/1 targets: frame j is on when its centre lies inside an event."""
    centres = (np.arange(n_frames) + 0.5) * hop_seconds
    y = np.zeros((len(records), n_frames, len(classes)), dtype=np.float32)
    for i, r in enumerate(records):
        for e in r.events or []:
            y[i, (centres >= e["onset"]) & (centres < e["offset"]), classes.index(e["label"])] = 1.0
    return torch.from_numpy(y)
