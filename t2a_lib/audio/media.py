"""Clips as things people hear and see: wav bytes and small spectrogram pictures.

Shared by the notebook widgets, the workshop server and the report, so a clip looks the same
everywhere. Pyplot is never touched (a ``Figure`` is drawn directly), so nothing leaks into a
notebook's own figures.
"""

from __future__ import annotations

import io
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from .wav import SAMPLE_RATE, read_wav


def wav_bytes(wave: np.ndarray) -> bytes:
    """A waveform as a 16-bit PCM wav file in memory."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(wave, np.float32), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def spectrogram_png(wave: np.ndarray, size: tuple[float, float] = (3.4, 1.5), dpi: int = 80) -> bytes:
    """A small log-mel picture of a waveform (time in seconds, mel bins)."""
    from matplotlib.figure import Figure

    from .mel import log_mel

    mel = log_mel(wave)
    fig = Figure(figsize=size, dpi=dpi)
    ax = fig.add_axes((0.13, 0.25, 0.85, 0.72))
    ax.imshow(mel, origin="lower", aspect="auto", cmap="magma",
              extent=(0, len(wave) / SAMPLE_RATE, 0, mel.shape[0]))
    ax.set_xlabel("time (s)", fontsize=7, labelpad=1)
    ax.set_ylabel("mel bin", fontsize=7, labelpad=1)
    ax.tick_params(labelsize=6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@lru_cache(maxsize=64)
def _clip_media(path: str, stamp: tuple) -> tuple[bytes, bytes]:
    wave = read_wav(path, allow_silent=True)
    return wav_bytes(wave), spectrogram_png(wave)


def clip_media(path) -> tuple[bytes, bytes]:
    """(wav bytes, spectrogram png) of an audio file, cached until the file changes."""
    st = os.stat(path)
    return _clip_media(str(Path(path).resolve()), (st.st_mtime_ns, st.st_size))
