"""Wav I/O, resampling and normalisation, checked against soundfile/numpy directly."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from t2a_lib.audio.wav import (
    AudioError, normalize_peak, pad_or_trim, read_wav, resample, tango_normalize, write_wav,
)

SR = 16000


def tone(freq, sr=SR, seconds=1.0, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_freq(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)]


def test_write_read_round_trip(tmp_path):
    x = (0.4 * np.random.default_rng(0).standard_normal(SR)).clip(-0.99, 0.99).astype(np.float32)
    path = tmp_path / "sub" / "dir" / "a.wav"  # parent folders are created
    write_wav(path, x)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    y = read_wav(path)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) <= 1.0 / 32768 + 1e-7  # one PCM16 step
    assert not [p for p in os.listdir(path.parent) if p != "a.wav"]  # no temp files left


def test_wrong_rate_is_resampled(tmp_path):
    path = tmp_path / "a22k.wav"
    sf.write(str(path), tone(440.0, sr=22050), 22050, subtype="PCM_16")
    y = read_wav(path)
    assert len(y) == SR  # 1 s at 22050 -> 1 s at 16000
    assert abs(dominant_freq(y, SR) - 440.0) < 2.0
    expected = tone(440.0)
    inner = slice(200, -200)  # away from the filter's edge transients
    assert np.max(np.abs(y[inner] - expected[inner])) < 5e-3


def test_wrong_rate_raises_without_resample(tmp_path):
    path = tmp_path / "a22k.wav"
    sf.write(str(path), tone(440.0, sr=22050), 22050)
    with pytest.raises(AudioError, match=r"22050.*16000") as err:
        read_wav(path, resample=False)
    assert str(path) in str(err.value)


def test_corrupt_file_raises_naming_path(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioError, match="corrupt.wav"):
        read_wav(path)


def test_truncated_header_raises(tmp_path):
    good = tmp_path / "good.wav"
    write_wav(good, tone(440.0))
    bad = tmp_path / "truncated.wav"
    bad.write_bytes(good.read_bytes()[:20])
    with pytest.raises(AudioError, match="truncated.wav"):
        read_wav(bad)


def test_empty_wav_raises(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(str(path), np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="empty"):
        read_wav(path)


def test_silent_wav_raises_unless_allowed(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(str(path), np.zeros(SR, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="silent"):
        read_wav(path)
    y = read_wav(path, allow_silent=True)
    assert y.shape == (SR,) and not np.any(y)


def test_nan_in_file_raises(tmp_path):
    path = tmp_path / "nan.wav"
    x = tone(440.0)
    x[100] = np.nan
    sf.write(str(path), x, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        read_wav(path)


def test_missing_file_raises_file_not_found(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        read_wav(path)


def test_stereo_is_mixed_down(tmp_path):
    left, right = tone(440.0, amp=0.6), tone(1000.0, amp=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, right], axis=1), SR, subtype="FLOAT")
    np.testing.assert_allclose(read_wav(path), (left + right) / 2, atol=1e-6)


def test_write_rejects_bad_input(tmp_path):
    bad = tone(440.0)
    bad[5] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        write_wav(tmp_path / "nan.wav", bad)
    with pytest.raises(AudioError, match="1-D"):
        write_wav(tmp_path / "2d.wav", np.zeros((2, 100), dtype=np.float32))
    assert not list(tmp_path.iterdir())  # nothing written, not even a temp file


def test_write_clips_with_warning(tmp_path):
    x = np.array([0.0, 0.5, 1.5, -2.0, 0.25] * 100, dtype=np.float32)
    path = tmp_path / "loud.wav"
    with pytest.warns(UserWarning, match="clipping 200 of 500"):
        write_wav(path, x)
    y, _ = sf.read(str(path), dtype="float32")
    assert y.max() <= 1.0 and y.min() == -1.0 and abs(y[2] - 1.0) < 1e-4


def test_crash_during_write_keeps_old_file(tmp_path):
    """Kill a writer mid-way: the target is either the old file or the new one, never half."""
    path = tmp_path / "a.wav"
    write_wav(path, tone(440.0))
    before = path.read_bytes()
    code = (
        "import soundfile, os\n"
        "from t2a_lib.audio import wav as audio\n"
        "def boom(*a, **k): os._exit(1)\n"
        "audio.os.replace = boom\n"  # die after the temp file is written, before the rename
        f"audio.write_wav({str(path)!r}, audio.np.zeros(32000, dtype='float32') + 0.1)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 1
    assert path.read_bytes() == before


def test_resample_length_and_dtype():
    x = tone(440.0, sr=22050)
    y = resample(x, 22050, 16000)
    assert y.dtype == np.float32 and len(y) == int(np.ceil(len(x) * 16000 / 22050))
    z = resample(tone(300.0, sr=48000, seconds=0.5), 48000, 16000)
    assert len(z) == 8000 and abs(dominant_freq(z, 16000) - 300.0) < 3.0
    np.testing.assert_array_equal(resample(x, 22050, 22050), x)


def test_normalize_peak_and_tango_normalize():
    x = np.array([0.1, -0.4, 0.2, 0.3], dtype=np.float32)
    np.testing.assert_allclose(np.max(np.abs(normalize_peak(x, 0.9))), 0.9, rtol=1e-6)
    np.testing.assert_allclose(normalize_peak(x), x * 1.25, rtol=1e-6)
    assert not np.any(normalize_peak(np.zeros(4, dtype=np.float32)))
    centred = x - x.mean()
    expected = 0.5 * centred / (np.abs(centred).max() + 1e-8)
    np.testing.assert_allclose(tango_normalize(x), expected, rtol=1e-6)
    assert abs(float(tango_normalize(x + 3.0).mean())) < 1e-6


def test_pad_or_trim():
    x = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(pad_or_trim(x, 3), [0, 1, 2])
    np.testing.assert_array_equal(pad_or_trim(x, 7), [0, 1, 2, 3, 4, 0, 0])
    assert pad_or_trim(np.ones((2, 5)), 8).shape == (2, 8)
    with pytest.raises(ValueError):
        pad_or_trim(x, -1)
