"""Optional real audio-text backends (LAION-CLAP) behind the same small interface as our CLAP models.

Nothing here downloads anything: HF weights load with ``local_files_only=True`` (a local folder or
the HF cache), and ``laion_clap`` checkpoints are files the user provides. Audio at any rate is
resampled to the encoder's own rate (48 kHz for LAION-CLAP) -- BATON fed 16 kHz audio to a 48 kHz
CLAP -- and ``score`` pairs audio i with caption i, never with an index. Clips longer than the
encoder's window are cut deterministically to their first ``max_length_s`` seconds, so the same
input always gives the same embedding. ``make_tiny_clap`` writes a small random ClapModel folder
laid out like ``laion/clap-htsat-unfused``, to exercise the real code path without weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..audio.wav import resample

LAION_SAMPLE_RATE = 48000
ROLES = ("ranker", "judge")
HOW_TO_GET = (
    "On a machine with internet run `huggingface-cli download laion/clap-htsat-unfused "
    "--local-dir <folder>`, copy the folder here and pass its path"
)


class WeightsNotFoundError(FileNotFoundError):
    """Model weights that are not on this machine (nothing is ever downloaded at run time)."""


@runtime_checkable
class AudioTextScorer(Protocol):
    role: str
    sample_rate: int

    def embed_audio(self, waves, sample_rate: int) -> np.ndarray: ...
    def embed_text(self, texts: list[str]) -> np.ndarray: ...
    def score(self, waves, texts, sample_rate: int) -> np.ndarray: ...


def _as_clips(waves) -> list[np.ndarray]:
    """A 1-D array (one clip), an (N, T) array or a list of 1-D arrays -> list of float32 clips."""
    if isinstance(waves, np.ndarray) or torch.is_tensor(waves):
        arr = np.asarray(waves, dtype=np.float32)
        if arr.ndim not in (1, 2):
            raise ValueError(f"audio must be 1-D or (N, T) mono, got shape {arr.shape}")
        clips = [arr] if arr.ndim == 1 else list(arr)
    else:
        clips = [np.asarray(w, dtype=np.float32) for w in waves]
    if not clips:
        raise ValueError("no audio clips given")
    for i, c in enumerate(clips):
        if c.ndim != 1 or c.size == 0:
            raise ValueError(f"clip {i}: expected a non-empty 1-D mono waveform, got shape {c.shape}")
        if not np.all(np.isfinite(c)):
            raise ValueError(f"clip {i}: contains NaN or infinite samples")
    return clips


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def _pooled(out) -> torch.Tensor:
    """get_*_features returns a tensor in transformers 4.x and a ModelOutput in 5.x."""
    return out if torch.is_tensor(out) else out.pooler_output


class _ScorerBase:
    sample_rate: int
    max_samples: int

    def _prepare(self, waves, sample_rate: int) -> list[np.ndarray]:
        """Resample every clip to the encoder's rate, then keep at most its first max_samples."""
        if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
        return [resample(c, int(sample_rate), self.sample_rate)[: self.max_samples]
                for c in _as_clips(waves)]

    def score(self, waves, texts, sample_rate: int) -> np.ndarray:
        """Cosine of audio i with caption i, shape (N,)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        a = self.embed_audio(waves, sample_rate)
        if len(a) != len(texts):
            raise ValueError(f"{len(a)} audio clips but {len(texts)} captions; score pairs them row by row")
        return np.sum(a * self.embed_text(texts), axis=1).astype(np.float32)


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return role


class HFClapScorer(_ScorerBase):
    """LAION-CLAP through transformers' ClapModel + ClapProcessor, loaded only from local files."""

    def __init__(self, path_or_name, role: str, device: str = "cpu", local_files_only: bool = True,
                 batch_size: int = 16):
        from transformers import ClapModel, ClapProcessor

        self.role, self.device, self.batch_size = _check_role(role), torch.device(device), int(batch_size)
        name = str(path_or_name)
        p = Path(name).expanduser()
        if p.exists() or p.is_absolute() or name.startswith((".", "~")) or name.count("/") != 1:
            if not (p / "config.json").is_file():
                raise WeightsNotFoundError(
                    f"No CLAP model at '{p}': expected a folder with config.json, model.safetensors, "
                    f"preprocessor_config.json and tokenizer files. {HOW_TO_GET}.")
            name = str(p)
        try:
            self.processor = ClapProcessor.from_pretrained(name, local_files_only=local_files_only)
            self.model = ClapModel.from_pretrained(name, local_files_only=local_files_only)
        except (OSError, ValueError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            from huggingface_hub.constants import HF_HUB_CACHE
            where = f"the folder '{name}'" if Path(name).is_dir() else f"the HF cache '{HF_HUB_CACHE}'"
            raise WeightsNotFoundError(
                f"Could not load CLAP weights '{name}' from {where} (local_files_only={local_files_only}): "
                f"{msg} {HOW_TO_GET}.") from None
        self.model.to(self.device).eval()
        self.fe, self.tokenizer = self.processor.feature_extractor, self.processor.tokenizer
        self.sample_rate = int(self.fe.sampling_rate)
        self.max_samples = int(self.fe.nb_max_samples)
        # an unfused model takes one mel ("rand_trunc" layout), a fused one four ("fusion")
        self.truncation = "fusion" if self.model.config.audio_config.enable_fusion else "rand_trunc"
        tcfg = self.model.config.text_config
        self.max_text_len = int(min(getattr(self.tokenizer, "model_max_length", 512) or 512,
                                    tcfg.max_position_embeddings - 2))

    def _features(self, clips: list[np.ndarray]):
        # The extractor draws from the global numpy RNG (fusion picks a random "longer" clip);
        # keep the caller's RNG untouched and make is_longer truthful: we cropped every clip.
        state = np.random.get_state()
        try:
            inputs = self.fe(clips, sampling_rate=self.sample_rate, truncation=self.truncation,
                             return_tensors="pt")
        finally:
            np.random.set_state(state)
        inputs["is_longer"] = torch.zeros_like(inputs["is_longer"], dtype=torch.bool)
        return inputs

    @torch.no_grad()
    def embed_audio(self, waves, sample_rate: int) -> np.ndarray:
        clips, out = self._prepare(waves, sample_rate), []
        for i in range(0, len(clips), self.batch_size):
            inputs = self._features(clips[i:i + self.batch_size])
            feats = self.model.get_audio_features(
                input_features=inputs["input_features"].to(self.device, torch.float32),
                is_longer=inputs["is_longer"].to(self.device))
            out.append(_pooled(feats).float().cpu().numpy())
        return _l2(np.concatenate(out))

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("no captions given")
        out = []
        for i in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                 max_length=self.max_text_len, return_tensors="pt")
            feats = self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                 attention_mask=tok["attention_mask"].to(self.device))
            out.append(_pooled(feats).float().cpu().numpy())
        return _l2(np.concatenate(out))


class LaionClapScorer(_ScorerBase):
    """The original ``laion_clap`` package (optional). ``load_ckpt`` uses torch.load on the file, so
    only pass checkpoints you obtained yourself from a source you trust."""

    def __init__(self, checkpoint_path, role: str, amodel: str = "HTSAT-tiny", enable_fusion: bool = False,
                 device: str | None = None):
        self.role = _check_role(role)
        ckpt = Path(checkpoint_path).expanduser()
        if not ckpt.is_file():
            raise WeightsNotFoundError(
                f"No laion_clap checkpoint at '{ckpt}'. Download e.g. 630k-audioset-best.pt from "
                "https://huggingface.co/lukewys/laion_clap on a machine with internet and pass its path.")
        try:
            import laion_clap
        except ImportError as exc:
            raise ImportError(
                "The optional `laion_clap` package is not installed: `pip install laion-clap`, "
                "or use HFClapScorer with a transformers CLAP folder.") from exc
        self.model = laion_clap.CLAP_Module(enable_fusion=enable_fusion, amodel=amodel, device=device)
        self.model.load_ckpt(str(ckpt))
        self.model.eval()
        self.sample_rate, self.max_samples = LAION_SAMPLE_RATE, 10 * LAION_SAMPLE_RATE

    @torch.no_grad()
    def embed_audio(self, waves, sample_rate: int) -> np.ndarray:
        out = []
        for c in self._prepare(waves, sample_rate):  # one at a time: clips may differ in length
            c = (np.clip(c, -1.0, 1.0) * 32767.0).astype(np.int16).astype(np.float32) / 32767.0
            out.append(np.asarray(self.model.get_audio_embedding_from_data(x=c[None, :], use_tensor=False)))
        return _l2(np.concatenate(out))

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        padded = texts * 2 if len(texts) == 1 else texts  # a batch of one is squeezed in laion_clap
        emb = np.asarray(self.model.get_text_embedding(padded, use_tensor=False))
        return _l2(emb[: len(texts)])


def load_real_clap(path, role: str, backend: str = "auto", **kwargs) -> AudioTextScorer:
    """A transformers folder (config.json, model_type "clap") -> HFClapScorer;
    a .pt/.ckpt/.pth file -> LaionClapScorer; anything else raises a clear error."""
    if backend == "hf":
        return HFClapScorer(path, role, **kwargs)
    if backend == "laion":
        return LaionClapScorer(path, role, **kwargs)
    if backend != "auto":
        raise ValueError(f"backend must be 'auto', 'hf' or 'laion', got {backend!r}")
    p = Path(path).expanduser()
    cfg = p / "config.json"
    if p.is_dir() and cfg.is_file():
        model_type = json.loads(cfg.read_text()).get("model_type")
        if model_type == "clap":
            return HFClapScorer(p, role, **kwargs)
        raise ValueError(f"'{cfg}' has model_type {model_type!r}, not 'clap'")
    if p.suffix in (".pt", ".ckpt", ".pth"):
        return LaionClapScorer(p, role, **kwargs)
    if not p.exists():
        raise WeightsNotFoundError(f"No CLAP model at '{p}'. {HOW_TO_GET}.")
    raise ValueError(f"'{p}' is neither a transformers CLAP folder (config.json with model_type 'clap') "
                     "nor a laion_clap checkpoint (.pt/.ckpt/.pth)")


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (printable bytes map to themselves)."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def make_tiny_clap(folder, seed: int = 0) -> Path:
    """Write a tiny random ClapModel + processor to ``folder`` (layout of laion/clap-htsat-unfused)."""
    from transformers import (ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel,
                              ClapTextConfig, RobertaTokenizer)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in _byte_alphabet():
        vocab.setdefault(ch, len(vocab))
    merges = []
    for word in "a the of and dog cat bird rain wind car engine bark barks sound water".split():
        piece = "\u0120"  # the byte-level stand-in for a leading space
        for ch in word:
            merges.append((piece, ch))
            piece += ch
            vocab.setdefault(piece, len(vocab))
    merges = list(dict.fromkeys(merges))
    vocab["<mask>"] = len(vocab)
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=62)
    fe = ClapFeatureExtractor(feature_size=16, sampling_rate=LAION_SAMPLE_RATE, hop_length=480,
                              max_length_s=1, fft_window_size=512, frequency_min=50, frequency_max=14000)
    text = ClapTextConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=64)
    audio = ClapAudioConfig(num_mel_bins=16, spec_size=64, patch_size=4, patch_stride=[4, 4], window_size=4,
                            depths=[1, 1], num_attention_heads=[2, 4], patch_embeds_hidden_size=16,
                            hidden_size=32, num_hidden_layers=2, mlp_ratio=2.0, num_classes=8)
    config = ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16)
    torch.manual_seed(seed)
    model = ClapModel(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    fe.save_pretrained(folder)  # preprocessor_config.json, as in the hub folder
    tokenizer.save_pretrained(folder)
    return folder
