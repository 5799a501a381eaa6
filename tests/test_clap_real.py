"""Tests for t2a_lib.scoring.clap_real on a tiny random ClapModel written offline (no weights needed)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly

from t2a_lib.scoring.clap_real import (
    AudioTextScorer,
    HFClapScorer,
    LaionClapScorer,
    WeightsNotFoundError,
    load_real_clap,
    make_tiny_clap,
)

CAPTIONS = ["a dog barks", "rain and wind", "a car engine", "the cat"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_clap(tmp_path_factory.mktemp("tiny_clap"), seed=0)


@pytest.fixture(scope="module")
def scorer(tiny_dir):
    return HFClapScorer(tiny_dir, role="judge", local_files_only=True)


def _clip(seed: int, seconds: float = 0.6, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 200.0 + 300.0 * seed
    x = 0.4 * np.sin(2 * np.pi * (f0 * t + 400.0 * t**2)) + 0.05 * rng.standard_normal(t.size)
    return (x * np.hanning(t.size)).astype(np.float32)


class _SpyExtractor:
    """Wraps the feature extractor and records what it is given."""

    def __init__(self, fe):
        self.fe, self.calls = fe, []

    def __call__(self, clips, **kwargs):
        self.calls.append(([len(c) for c in clips], kwargs.get("sampling_rate")))
        return self.fe(clips, **kwargs)


def test_folder_layout(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"} <= names
    assert json.loads((tiny_dir / "config.json").read_text())["model_type"] == "clap"
    assert json.loads((tiny_dir / "preprocessor_config.json").read_text())["sampling_rate"] == 48000


def test_embeddings_shape_norm_deterministic(scorer):
    assert isinstance(scorer, AudioTextScorer)
    assert scorer.sample_rate == 48000 and scorer.role == "judge"
    waves = [_clip(i, 0.3 + 0.2 * i) for i in range(3)]
    a1, a2 = scorer.embed_audio(waves, 16000), scorer.embed_audio(waves, 16000)
    t1, t2 = scorer.embed_text(CAPTIONS), scorer.embed_text(CAPTIONS)
    assert a1.shape == (3, 16) and t1.shape == (4, 16)
    assert a1.dtype == np.float32 and t1.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a1, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(t1, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(t1, t2)
    # a single 1-D clip and an (N, T) array are accepted
    assert scorer.embed_audio(waves[0], 16000).shape == (1, 16)
    stacked = np.stack([_clip(0), _clip(1)])
    np.testing.assert_allclose(scorer.embed_audio(stacked, 16000),
                               scorer.embed_audio([_clip(0), _clip(1)], 16000), atol=1e-6)


def test_long_audio_is_cropped_deterministically_and_rng_untouched(scorer, monkeypatch):
    long = np.tile(_clip(2, 1.0, 48000), 3)  # 3 s at 48 kHz, the tiny model's window is 1 s
    spy = _SpyExtractor(scorer.fe)
    monkeypatch.setattr(scorer, "fe", spy)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    e1, e2 = scorer.embed_audio(long, 48000), scorer.embed_audio(long, 48000)
    np.testing.assert_array_equal(e1, e2)
    assert np.array_equal(np.random.get_state()[1], before)
    assert spy.calls[0] == ([48000], 48000)


def test_score_matches_independent_computation(scorer, tiny_dir):
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    waves16 = [_clip(0), _clip(1, 0.9)]
    texts = ["a dog barks", "rain and wind"]
    got = scorer.score(waves16, texts, 16000)

    model = ClapModel.from_pretrained(tiny_dir, local_files_only=True).eval()
    fe = ClapFeatureExtractor.from_pretrained(tiny_dir, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    waves48 = [resample_poly(w, 3, 1).astype(np.float32) for w in waves16]
    feats = fe(waves48, sampling_rate=48000, truncation="rand_trunc", return_tensors="pt")
    ids = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        a = model.audio_projection(model.audio_model(input_features=feats["input_features"]).pooler_output)
        t = model.text_projection(model.text_model(**ids).pooler_output)
    a, t = a.numpy().astype(np.float64), t.numpy().astype(np.float64)
    want = (a * t).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(t, axis=1))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_input_is_resampled_to_48k(scorer, monkeypatch):
    x16 = _clip(3, 0.5)
    x48 = resample_poly(x16, 3, 1).astype(np.float32)
    e16 = scorer.embed_audio(x16, 16000)
    e48 = scorer.embed_audio(x48, 48000)
    np.testing.assert_allclose(e16, e48, atol=1e-5)
    # the BATON bug: the 16 kHz samples handed over as if they were 48 kHz
    wrong = scorer.embed_audio(x16, 48000)
    assert np.abs(wrong - e48).max() > 1e-3

    spy = _SpyExtractor(scorer.fe)
    monkeypatch.setattr(scorer, "fe", spy)
    scorer.embed_audio([x16, x16[:4000]], 16000)
    scorer.embed_audio(_clip(4, 0.5, 44100), 44100)
    assert spy.calls[0] == ([3 * len(x16), 12000], 48000)
    assert spy.calls[1] == ([24000], 48000)


def test_batching_does_not_change_results(tiny_dir, scorer):
    small = HFClapScorer(tiny_dir, role="ranker", batch_size=2)
    waves = [_clip(i, 0.2 + 0.15 * i) for i in range(5)]
    np.testing.assert_allclose(small.embed_audio(waves, 16000), scorer.embed_audio(waves, 16000), atol=1e-5)
    np.testing.assert_allclose(small.embed_text(CAPTIONS + ["x"]), scorer.embed_text(CAPTIONS + ["x"]),
                               atol=1e-5)


def test_score_pairs_audio_with_its_own_caption(scorer):
    waves = [_clip(i) for i in range(3)]
    texts = CAPTIONS[:3]
    full = scorer.embed_audio(waves, 16000) @ scorer.embed_text(texts).T  # [audio i, caption j]
    s = scorer.score(waves, texts, 16000)
    s_rev = scorer.score(waves, texts[::-1], 16000)
    np.testing.assert_allclose(s, np.diag(full), atol=1e-5)
    np.testing.assert_allclose(s_rev, full[np.arange(3), [2, 1, 0]], atol=1e-5)
    assert not np.allclose(s[[0, 2]], s_rev[[0, 2]], atol=1e-4)
    with pytest.raises(ValueError, match="row by row"):
        scorer.score(waves, texts[:2], 16000)


def test_bad_inputs(scorer, tiny_dir):
    with pytest.raises(ValueError):
        scorer.embed_audio(np.zeros((2, 2, 100), np.float32), 16000)
    with pytest.raises(ValueError):
        scorer.embed_audio(np.array([0.0, np.nan], np.float32), 16000)
    with pytest.raises(ValueError):
        scorer.embed_audio(_clip(0), 0)
    with pytest.raises(ValueError, match="role"):
        HFClapScorer(tiny_dir, role="referee")


def test_missing_weights_raise_clear_error(tmp_path, tiny_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "does" / "not" / "exist"
    for path in (empty, missing):
        with pytest.raises(WeightsNotFoundError, match="huggingface-cli download") as info:
            HFClapScorer(path, role="judge")
        assert str(path) in str(info.value)
        assert isinstance(info.value, FileNotFoundError)
    # config present but no weights: still our error, not a transformers traceback
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(tiny_dir / "config.json", partial / "config.json")
    with pytest.raises(WeightsNotFoundError) as info:
        HFClapScorer(partial, role="judge")
    assert str(partial) in str(info.value)


def test_laion_backend_errors(tmp_path, monkeypatch):
    with pytest.raises(WeightsNotFoundError, match="630k"):
        LaionClapScorer(tmp_path / "missing.pt", role="judge")
    ckpt = tmp_path / "fake.pt"
    ckpt.write_bytes(b"not a checkpoint")
    if importlib.util.find_spec("laion_clap") is None:
        with pytest.raises(ImportError, match="pip install laion-clap"):
            LaionClapScorer(ckpt, role="judge")
    monkeypatch.setitem(sys.modules, "laion_clap", None)  # simulate absence even where installed
    with pytest.raises(ImportError, match="HFClapScorer"):
        LaionClapScorer(ckpt, role="judge")


def test_load_real_clap_dispatch(tiny_dir, tmp_path, monkeypatch):
    s = load_real_clap(tiny_dir, role="ranker")
    assert isinstance(s, HFClapScorer) and s.role == "ranker"
    assert isinstance(load_real_clap(tiny_dir, role="judge", backend="hf"), HFClapScorer)
    with pytest.raises(WeightsNotFoundError, match="nowhere"):
        load_real_clap(tmp_path / "nowhere", role="judge")
    odd = tmp_path / "notes.txt"
    odd.write_text("hello")
    with pytest.raises(ValueError, match="neither"):
        load_real_clap(odd, role="judge")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="bert"):
        load_real_clap(bert, role="judge")
    with pytest.raises(WeightsNotFoundError):
        load_real_clap(tmp_path / "missing.ckpt", role="judge")
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "laion_clap", None)
    with pytest.raises(ImportError):
        load_real_clap(ckpt, role="judge")
    with pytest.raises(ValueError, match="backend"):
        load_real_clap(tiny_dir, role="judge", backend="onnx")
