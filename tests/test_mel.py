"""Mel front end vs independent librosa computations."""

import librosa
import numpy as np
import pytest
import torch

from t2a_lib.audio.mel import (
    MelConfig, MelFrontEnd, hz_to_mel, log_mel, mel_filterbank, mel_to_hz, pad_or_trim_frames,
)

SR = 16000


def reference_log_mel(y: np.ndarray) -> np.ndarray:
    """Tango's front end written with librosa only, in float64."""
    spec = librosa.stft(y.astype(np.float64), n_fft=1024, hop_length=160, win_length=1024,
                        window="hann", center=True, pad_mode="reflect")
    basis = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64, fmin=0.0, fmax=8000.0,
                                htk=False, norm="slaney", dtype=np.float64)
    return np.log(np.maximum(basis @ np.abs(spec), 1e-5))


def sine(freq: float, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [
    (16000, 1024, 64, 0.0, 8000.0),
    (22050, 1024, 80, 0.0, 8000.0),
    (16000, 512, 40, 50.0, 7600.0),
])
def test_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax):
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                              htk=False, norm="slaney")
    assert ours.shape == ref.shape == (n_mels, n_fft // 2 + 1)
    assert np.max(np.abs(ours - ref)) < 1e-6 * np.max(np.abs(ref))


def test_mel_scale_matches_librosa_and_inverts():
    hz = np.array([0.0, 200.0, 999.0, 1000.0, 1001.0, 4000.0, 8000.0])
    np.testing.assert_allclose(hz_to_mel(hz), librosa.hz_to_mel(hz, htk=False), rtol=1e-12)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, atol=1e-9)


def test_filterbank_rows_have_unit_area():
    # slaney normalisation: each triangle integrates (in Hz) to 1, checked on a fine grid
    fb = mel_filterbank(SR, 1 << 16, 64, 0.0, 8000.0)
    df = SR / (1 << 16)
    np.testing.assert_allclose(fb.sum(axis=1) * df, 1.0, rtol=2e-3)


@pytest.mark.parametrize("kind", ["noise", "sine", "chirp"])
def test_front_end_matches_librosa(kind):
    rng = np.random.default_rng(0)
    if kind == "noise":
        y = (0.3 * rng.standard_normal(SR)).astype(np.float32)
    elif kind == "sine":
        y = sine(440.0)
    else:
        y = librosa.chirp(fmin=100, fmax=7000, sr=SR, duration=1.0).astype(np.float32) * 0.5
    ref = reference_log_mel(y)
    front = MelFrontEnd()
    with torch.no_grad():
        exact = front(torch.from_numpy(y.astype(np.float64))).numpy()
        fast = front(torch.from_numpy(y)).numpy()
    assert exact.shape == ref.shape == (64, 1 + len(y) // 160)
    assert np.max(np.abs(exact - ref)) < 1e-4
    assert fast.dtype == np.float32
    if kind == "noise":  # broadband: float32 is exact to 1e-4 everywhere
        assert np.max(np.abs(fast - ref)) < 1e-4
    # float32 FFT noise is relative to the loudest bin, so compare where the mel has real energy
    loud = ref > ref.max() - 9.0
    assert np.max(np.abs(fast - ref)[loud]) < 1e-3


def test_sine_peaks_in_the_bin_containing_its_frequency():
    mel = log_mel(sine(1000.0))
    fb = mel_filterbank(SR, 1024, 64, 0.0, 8000.0)
    bin_1k = int(round(1000.0 / (SR / 1024)))
    expected = int(np.argmax(fb[:, bin_1k]))
    peak = np.argmax(mel[:, 10:-10].mean(axis=1))
    assert peak == expected
    centers = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(8000.0), 66))[1:-1]
    assert abs(centers[peak] - 1000.0) < 0.5 * (centers[peak + 1] - centers[peak - 1])


@pytest.mark.parametrize("n", [1000, 16000, 16159, 16160, 163840])
def test_frame_count(n):
    front = MelFrontEnd()
    y = torch.randn(n) * 0.1
    assert front(y).shape == (64, 1 + n // 160) == (64, front.n_frames(n))


def test_batch_matches_single_clips():
    rng = np.random.default_rng(1)
    batch = (0.2 * rng.standard_normal((3, 8000))).astype(np.float32)
    out = log_mel(batch)
    assert out.shape == (3, 64, 51)
    for i in range(3):
        np.testing.assert_allclose(out[i], log_mel(batch[i]), atol=1e-5)


def test_log_floor_applies_to_silence():
    out = log_mel(np.zeros(4000, dtype=np.float32))
    np.testing.assert_allclose(out, np.log(1e-5), rtol=1e-6)


def test_rejects_bad_shapes_and_too_short_input():
    front = MelFrontEnd()
    with pytest.raises(ValueError, match="shape"):
        front(torch.zeros(1, 2, 4000))
    with pytest.raises(ValueError, match="512"):
        front(torch.zeros(300))


def test_config_changes_shapes():
    cfg = MelConfig(n_mels=32, fmax=4000.0)
    front = MelFrontEnd(cfg)
    assert front.mel_basis.shape == (32, 513)
    assert "mel_basis" in dict(front.named_buffers())
    assert front(torch.randn(2, 3200)).shape == (2, 32, 21)


def test_pad_or_trim_frames_numpy_and_torch():
    mel = np.arange(10 * 64, dtype=np.float32).reshape(10, 64)
    padded = pad_or_trim_frames(mel, 16)
    assert padded.shape == (16, 64)
    np.testing.assert_array_equal(padded[:10], mel)
    assert np.all(padded[10:] == 0.0)
    np.testing.assert_array_equal(pad_or_trim_frames(mel, 4), mel[:4])
    t = torch.from_numpy(mel)[None]
    tp = pad_or_trim_frames(t, 12, pad_value=-11.5)
    assert tp.shape == (1, 12, 64) and torch.all(tp[0, 10:] == -11.5)
    assert torch.equal(pad_or_trim_frames(t, 3), t[:, :3])
