"""Wav reading and writing, resampling and the small waveform utilities Tango uses.

Every clip in the suite is 16 kHz mono float32 in [-1, 1]. ``read_wav`` enforces that (mixing
channels down and resampling when asked), ``write_wav`` writes 16-bit PCM atomically, and the
rest are one-line transforms with the anchors' exact constants.
"""

from __future__ import annotations

import os
import struct
import tempfile
import warnings
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SAMPLE_RATE = 16000
SILENCE_PEAK = 1e-6  # a clip whose peak is below this is treated as silent


class AudioError(ValueError):
    """A wav file or waveform that cannot be used (corrupt, empty, non-finite, silent, ...)."""


def read_wav(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    resample: bool = True,
    allow_silent: bool = False,
) -> np.ndarray:
    """Read an audio file as a float32 mono array at ``sample_rate``.

    - Multi-channel files are mixed down to mono by averaging the channels.
    - A file at another rate is resampled (``resample()``, polyphase) when ``resample`` is True,
      otherwise an ``AudioError`` naming both rates is raised.
    - A missing file raises ``FileNotFoundError``; a corrupt or unreadable file, an empty file,
      non-finite samples, or (unless ``allow_silent``) a silent clip raise ``AudioError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: audio file not found")
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for corrupt input
        raise AudioError(f"{path}: cannot read audio ({exc})") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio file is empty (0 samples)")
    check_wav_length(path, data.shape[0])
    audio = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    peak = float(np.max(np.abs(data)))
    if peak > 1.0 + 1e-6:  # only float files can hold such samples
        raise AudioError(f"{path}: samples outside [-1, 1] (peak {peak:.3f}); normalise the file first")
    if file_sr != sample_rate:
        if not resample:
            raise AudioError(
                f"{path}: sample rate is {file_sr} Hz, expected {sample_rate} Hz (resample=False)"
            )
        audio = _resample(audio, file_sr, sample_rate)  # the argument shadows resample()
    if not allow_silent and float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise AudioError(f"{path}: audio is silent (peak < {SILENCE_PEAK:g})")
    return np.ascontiguousarray(audio, dtype=np.float32)


def wav_data_bytes(path: Path) -> tuple[int, int, int] | None:
    """(declared data bytes, bytes present, bytes per frame) of a RIFF/WAVE file, else None."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        frame = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            kind, n = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if kind == b"fmt ":
                fmt = f.read(n + (n & 1))
                frame = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
                continue
            if kind == b"data":
                return n, size - f.tell(), frame or 1
            f.seek(n + (n & 1), os.SEEK_CUR)


def check_wav_length(path: Path, n_read: int) -> None:
    """Raise ``AudioError`` when a wav's header promises more samples than the file holds."""
    info = wav_data_bytes(path)
    if info is None:
        return
    declared, present, frame = info
    if declared in (0, 0xFFFFFFFF) or present >= declared:  # 0 / -1: a streamed header, size unknown
        return
    raise AudioError(f"{path}: truncated: its header declares {declared // frame} samples but the "
                     f"file holds {present // frame} (read {n_read}); re-export or drop it")


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
              durable: bool = True) -> None:
    """Write a 1-D float waveform as a 16-bit PCM wav, atomically.

    Samples must be finite. Samples outside [-1, 1] are clipped with a warning that says how many
    (a clipped clip usually means a missing normalisation upstream). Parent folders are created.
    The file is written to a temporary name in the same folder and moved into place with
    ``os.replace``, so a crash never leaves a half-written wav behind. ``durable=False`` skips
    the fsync (bulk writes of re-buildable data, e.g. a world; labels and outputs keep it).
    """
    path = Path(path)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise AudioError(f"{path}: write_wav expects a 1-D waveform, got shape {audio.shape}")
    if audio.size == 0:
        raise AudioError(f"{path}: refusing to write an empty waveform")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: waveform contains NaN or infinite samples")
    n_clipped = int(np.count_nonzero(np.abs(audio) > 1.0))
    if n_clipped:
        warnings.warn(
            f"{path}: clipping {n_clipped} of {audio.size} samples to [-1, 1] "
            f"(peak {float(np.max(np.abs(audio))):.3f})",
            stacklevel=2,
        )
        audio = np.clip(audio, -1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            sf.write(f, audio, sample_rate, format="WAV", subtype="PCM_16")
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample along the last axis with a polyphase filter (``scipy.signal.resample_poly``).

    The up/down factors are ``target_sr`` and ``orig_sr`` divided by their gcd, so 22050 -> 16000
    uses 320/441. The output has ``ceil(n * target_sr / orig_sr)`` samples and is float32.
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    audio = np.asarray(audio, dtype=np.float32)
    if orig_sr == target_sr:
        return audio.copy()
    g = gcd(int(orig_sr), int(target_sr))
    out = resample_poly(audio, int(target_sr) // g, int(orig_sr) // g, axis=-1)
    return out.astype(np.float32)


_resample = resample


def normalize_peak(audio: np.ndarray, peak: float = 0.5) -> np.ndarray:
    """Scale so that max |x| equals ``peak``. A silent (all-zero) clip is returned unchanged."""
    audio = np.asarray(audio, dtype=np.float32)
    current = float(np.max(np.abs(audio))) if audio.size else 0.0
    if current == 0.0:
        return audio.copy()
    return (audio * (peak / current)).astype(np.float32)


def tango_normalize(audio: np.ndarray) -> np.ndarray:
    """Tango's wav normalisation: remove the mean, divide by (max |x| + 1e-8), times 0.5."""
    audio = np.asarray(audio, dtype=np.float32)
    audio = audio - audio.mean()
    audio = audio / (np.max(np.abs(audio)) + 1e-8)
    return (audio * 0.5).astype(np.float32)


def pad_or_trim(audio: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad at the end or cut the last axis to exactly ``n`` samples."""
    if n < 0:
        raise ValueError(f"pad_or_trim: n must be >= 0, got {n}")
    audio = np.asarray(audio)
    length = audio.shape[-1]
    if length >= n:
        return audio[..., :n].copy()
    widths = [(0, 0)] * (audio.ndim - 1) + [(0, n - length)]
    return np.pad(audio, widths)
