"""Tango's mel front end (AudioLDM's TacotronSTFT conventions), in torch.

    wave (16 kHz) -> centred STFT (n_fft = win = 1024, hop 160, periodic Hann, reflect pad 512)
                  -> |STFT| (magnitude, not power)
                  -> Slaney mel filterbank (64 bins, 0-8 kHz, slaney area normalisation)
                  -> log(clamp(mel, min=1e-5))

The result is (n_mels, T) per clip with T = 1 + N // hop. Tango then transposes each clip to
(T, 64) and pads or cuts it to a fixed frame count (1024 frames for 10.24 s); see
``pad_or_trim_frames``. The filterbank is our own numpy code so tests can check it against
``librosa.filters.mel``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Slaney's auditory-toolbox mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3.0  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # = 15
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale (librosa's ``htk=False``)."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, mel)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of ``hz_to_mel``."""
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * _F_SP
    log_part = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, hz)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular Slaney mel filters with area ("slaney") normalisation, shape (n_mels, n_fft//2+1).

    Filter i rises from the (i)th to the (i+1)th and falls to the (i+2)th of ``n_mels + 2``
    points spaced evenly on the mel scale between ``fmin`` and ``fmax``; each row is scaled by
    2 / (its bandwidth in Hz) so every filter has unit area. Returned as float32.
    """
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={fmin}, fmax={fmax}")
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)  # (n_mels + 1,)
    dist = edges[:, None] - fft_freqs[None, :]  # (n_mels + 2, n_freqs)
    rising = -dist[:-2] / widths[:-1, None]
    falling = dist[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


@dataclass
class MelConfig:
    """Tango's mel settings; only change them to shrink the model, never per experiment."""

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 160
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    log_floor: float = 1e-5


class MelFrontEnd(torch.nn.Module):
    """Waveform -> log-mel spectrogram with Tango's conventions (see the module docstring)."""

    def __init__(self, config: MelConfig | None = None):
        super().__init__()
        self.config = config = config or MelConfig()
        fb = mel_filterbank(
            config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax
        )
        self.register_buffer("mel_basis", torch.from_numpy(fb), persistent=False)

    def n_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples: 1 + N // hop (centred STFT)."""
        return 1 + num_samples // self.config.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, n_mels, T); an unbatched (N,) wave gives (n_mels, T).

        Computed in the wave's dtype: float32 normally, float64 for exact checks; integers and
        half precision are upcast to float32. The Hann window is built in that dtype on each
        call: a float32 window cast up would leak ~1e-7 of the peak into every bin, which the
        log floor of 1e-5 makes visible.
        """
        c = self.config
        if wave.dim() not in (1, 2):
            raise ValueError(f"MelFrontEnd expects (N,) or (B, N), got shape {tuple(wave.shape)}")
        if wave.shape[-1] <= c.n_fft // 2:
            raise ValueError(
                f"MelFrontEnd needs more than n_fft//2 = {c.n_fft // 2} samples for reflect "
                f"padding, got {wave.shape[-1]}"
            )
        if not wave.is_floating_point() or wave.element_size() < 4:  # ints, fp16, bf16
            wave = wave.float()
        window = torch.hann_window(
            c.win_length, periodic=True, dtype=wave.dtype, device=wave.device
        )
        spec = torch.stft(
            wave,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            win_length=c.win_length,
            window=window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        mel = torch.matmul(self.mel_basis.to(wave.dtype), spec.abs())
        return torch.log(torch.clamp(mel, min=c.log_floor))


def log_mel(wave: np.ndarray, config: MelConfig | None = None) -> np.ndarray:
    """NumPy convenience: (N,) or (B, N) float wave -> (n_mels, T) or (B, n_mels, T) float32."""
    front = MelFrontEnd(config)
    with torch.no_grad():
        out = front(torch.as_tensor(np.asarray(wave, dtype=np.float32)))
    return out.numpy()


def pad_or_trim_frames(mel, n_frames: int, pad_value: float = 0.0):
    """Pad (with ``pad_value``) or cut the time axis to ``n_frames``, Tango style.

    ``mel`` is in Tango's layout (..., T, n_mels), i.e. after transposing our (n_mels, T); it may
    be a numpy array or a torch tensor. Tango pads the log-mel with zeros, the default here.
    """
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    t = mel.shape[-2]
    if t >= n_frames:
        return mel[..., :n_frames, :]
    if isinstance(mel, torch.Tensor):
        return torch.nn.functional.pad(mel, (0, 0, 0, n_frames - t), value=pad_value)
    widths = [(0, 0)] * (mel.ndim - 2) + [(0, n_frames - t), (0, 0)]
    return np.pad(mel, widths, constant_values=pad_value)
