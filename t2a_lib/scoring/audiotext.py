"""A small CLAP-style audio-text model trained on the world, sensitive to event order.

Contrastive (InfoNCE, both directions) with **hard negatives**: every caption in a batch brings a
perturbed twin (its events reordered when it is temporal, a concept swapped otherwise) that
competes only against its own clip. Without them a contrastive model learns *which* events occur
and ignores *when*; with them it must read "then" and "after".

    L = ½ [ CE(s·A·[T; H]ᵀ, I) + CE(s·T·Aᵀ, I) ]       A, T, H unit-norm audio, caption, twin
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from ..world.captions import CaptionError, GrammarPerturber, parse_caption, reorder_twin, word_labels
from ..model.diffusion import make_accelerator
from .encoders import AUDIO_TRUNKS, TEXT_ENCODERS, masked_mean, read_model_config
from ..audio.features import frame_targets
from ..run.files import weights_named
from ..world.text import build_world_tokenizer
from ..world.scenes import CLASSES

ROLES = ("judge", "ranker", "base")  # "base": a component of the generator (its text encoder)
N_SEGMENTS = 4


@dataclass
class AudioTextConfig:
    role: str = "ranker"
    seed: int = 0
    audio_arch: str = "conv1d_gru"
    text_arch: str = "transformer"
    dim: int = 128
    width: int = 96
    hidden: int = 64
    text_dim: int = 128
    vocab_size: int = 0  # set from the tokenizer
    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    hard_negatives: bool = True
    # > 0: a head reads, from each word of an event's phrase, when that event sounds (the share of
    # each of ``timeline_bins`` stretches of the clip it fills). Only the base model's text encoder
    # uses it: it puts *when* into the token states themselves, where the UNet's cross-attention
    # keys can match it against a latent frame's position, not only into the pooled caption
    # vector the contrastive loss sees.
    timeline_bins: int = 0

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if self.audio_arch not in AUDIO_TRUNKS or self.text_arch not in TEXT_ENCODERS:
            raise ValueError(f"unknown arch {self.audio_arch!r}/{self.text_arch!r}")


class AudioTextModel(nn.Module):
    def __init__(self, config: AudioTextConfig, tokenizer=None):
        super().__init__()
        self.tokenizer = tokenizer or build_world_tokenizer()
        if not config.vocab_size:
            config.vocab_size = len(self.tokenizer)
        self.config = config
        self.audio = AUDIO_TRUNKS[config.audio_arch](width=config.width, hidden=config.hidden)
        self.audio_proj = nn.Linear((N_SEGMENTS + 1) * self.audio.out_dim, config.dim)
        self.text = TEXT_ENCODERS[config.text_arch](config.vocab_size, config.text_dim)
        self.text_proj = nn.Linear(self.text.out_dim, config.dim)
        self.logit_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
        if config.timeline_bins:
            self.timeline_head = nn.Linear(self.text.out_dim, config.timeline_bins)

    @property
    def role(self) -> str:
        return self.config.role

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """Means over N_SEGMENTS consecutive stretches of time (so *when* is linearly readable,
        not only *what*) and a max over the whole clip, projected and normalised."""
        h = self.audio(mel)
        segments = [s.mean(1) for s in h.chunk(N_SEGMENTS, dim=1)]
        return nn.functional.normalize(self.audio_proj(torch.cat(segments + [h.amax(1)], -1)), dim=-1)

    def token_states(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The text encoder's per-token states ``(B, L, D)`` and their attention mask ``(B, L)``."""
        tok = self.tokenizer(list(captions), padding=True, return_tensors="pt")
        ids, mask = tok.input_ids.to(self.logit_scale.device), tok.attention_mask.to(self.logit_scale.device)
        return self.text(ids, mask), mask

    def pool_text(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.text_proj(masked_mean(states, mask)), dim=-1)

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        return self.pool_text(*self.token_states(captions))

    @torch.no_grad()
    def embed_audio(self, mels: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        self.eval()
        return torch.cat([self.encode_audio(mels[i:i + batch_size].float())
                          for i in range(0, len(mels), batch_size)]).numpy()

    @torch.no_grad()
    def embed_text(self, captions: list[str], batch_size: int = 512) -> np.ndarray:
        self.eval()
        return torch.cat([self.encode_text(captions[i:i + batch_size])
                          for i in range(0, len(captions), batch_size)]).numpy()

    def score(self, mels: torch.Tensor, captions: list[str]) -> np.ndarray:
        """Cosine between clip i and caption i (never an index or another row)."""
        if len(mels) != len(captions):
            raise ValueError(f"{len(mels)} clips but {len(captions)} captions: scores pair clip i with caption i")
        return (self.embed_audio(mels) * self.embed_text(list(captions))).sum(-1)

    def save(self, folder) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_model(self, str(folder / "model.safetensors"))  # handles tied weights (T5's shared embedding)
        (folder / "config.json").write_text(json.dumps({"kind": "audio_text", **asdict(self.config)}, indent=2))
        self.tokenizer.save_pretrained(folder / "tokenizer")
        return folder

    @classmethod
    def load(cls, folder, role: str | None = None) -> "AudioTextModel":
        folder = Path(folder)
        cfg = read_model_config(folder, "audio_text", "audio-text model", role)
        model = cls(AudioTextConfig(**cfg), AutoTokenizer.from_pretrained(folder / "tokenizer"))
        with weights_named(folder / "model.safetensors"):
            load_model(model, str(folder / "model.safetensors"))
        return model.eval()


def hard_negative(caption: str, rng: np.random.Generator) -> str:
    """The reordered twin of a temporal caption; a concept swap for any other."""
    try:
        return reorder_twin(caption) if parse_caption(caption).is_temporal else \
            GrammarPerturber()(caption, "swap", 1, rng)[0]
    except CaptionError:
        return caption  # not a grammar caption: no hard negative (a duplicate adds nothing)


def contrastive_loss(a: torch.Tensor, t: torch.Tensor, h: torch.Tensor | None, scale: torch.Tensor) -> torch.Tensor:
    targets = torch.arange(len(a), device=a.device)
    texts = t if h is None else torch.cat([t, h])
    loss_a = nn.functional.cross_entropy(scale * a @ texts.T, targets)
    loss_t = nn.functional.cross_entropy(scale * t @ a.T, targets)
    return (loss_a + loss_t) / 2


def timeline_targets(records, n_bins: int, n_frames: int, hop_seconds: float = 0.01,
                     max_words: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Per word of each caption, *when its own event sounds*: ``(N, max_words, n_bins)``, the share
    of each of ``n_bins`` equal stretches of the clip that the event the word names fills (ground
    truth from the manifest's ``events``), and a ``(N, max_words)`` mask, 1 on words inside an
    event's phrase ("a dog barks"), 0 on connectives ("then", "after") and padding."""
    if n_frames % n_bins:
        raise ValueError(f"{n_frames} frames do not split into {n_bins} timeline bins")
    frames = frame_targets(records, n_frames, hop_seconds)  # (N, T, C)
    per_class = frames.view(len(records), n_bins, n_frames // n_bins, -1).mean(2)  # (N, K, C)
    targets = torch.zeros(len(records), max_words, n_bins)
    mask = torch.zeros(len(records), max_words)
    for i, r in enumerate(records):
        for j, lab in enumerate(word_labels(r.captions)[:max_words]):
            if lab is not None:
                targets[i, j], mask[i, j] = per_class[i, :, CLASSES.index(lab)], 1.0
    return targets, mask


def timeline_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE over the masked words between per-token timeline logits ``(B, L, K)`` and targets
    ``(B, max_words, K)`` (the world tokenizer is word-level, so token j is word j)."""
    n = min(logits.shape[1], targets.shape[1])
    bce = nn.functional.binary_cross_entropy_with_logits(logits[:, :n], targets[:, :n], reduction="none").mean(-1)
    return (bce * mask[:, :n]).sum() / mask[:, :n].sum().clamp(min=1.0)


def timeline_loss(model: AudioTextModel, captions: list[str], targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE between each event word's timeline prediction and its event's timeline."""
    states, _ = model.token_states(captions)
    return timeline_bce(model.timeline_head(states), targets.to(states.device), mask.to(states.device))


def train_audiotext(config: AudioTextConfig, mels: torch.Tensor, captions: list[str],
                    progress: bool = True, timeline: tuple[torch.Tensor, torch.Tensor] | None = None
                    ) -> tuple[AudioTextModel, list[float]]:
    """``timeline``: the (targets, mask) pair from ``timeline_targets`` when the config asks for the
    timeline head."""
    if bool(config.timeline_bins) != (timeline is not None):
        raise ValueError("timeline targets are needed exactly when config.timeline_bins > 0")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = AudioTextModel(config)
    negatives = [hard_negative(c, rng) for c in captions] if config.hard_negatives else None
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    steps = config.epochs * (len(mels) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=max(steps, 1), pct_start=0.1)
    acc = make_accelerator()  # float32 (diffusion.make_accelerator: one precision per state)
    model, opt = acc.prepare(model, opt)
    gen = torch.Generator().manual_seed(config.seed)
    losses = []
    bar = tqdm(total=steps, desc=f"audio-text ({config.role}, {config.audio_arch}+{config.text_arch})",
               disable=not progress)
    model.train()
    for _ in range(config.epochs):
        perm = torch.randperm(len(mels), generator=gen)
        for i in range(0, len(perm) - config.batch_size + 1, config.batch_size):
            idx = perm[i:i + config.batch_size].tolist()
            x = mels[idx].float().to(acc.device)
            x = x + torch.randn(len(x), 1, 1, generator=gen).to(acc.device) * 0.5
            m = acc.unwrap_model(model)
            states, mask = m.token_states([captions[j] for j in idx])  # once: pooled and per-token losses
            a, t = m.encode_audio(x), m.pool_text(states, mask)
            h = m.encode_text([negatives[j] for j in idx]) if negatives else None
            loss = contrastive_loss(a, t, h, m.logit_scale.exp().clamp(max=100))
            if timeline is not None:
                loss = loss + timeline_bce(m.timeline_head(states), timeline[0][idx].to(acc.device),
                                           timeline[1][idx].to(acc.device))
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return acc.unwrap_model(model).eval(), losses


def semantic_key(caption: str) -> tuple:
    """What a caption asserts: its events, their time order (None if simultaneous), its bed."""
    spec = parse_caption(caption)
    order = tuple(spec.time_order) if spec.time_order else tuple(sorted(spec.labels))
    return order, spec.relation == "while", spec.background


def evaluate_audiotext(model: AudioTextModel, mels: torch.Tensor, captions: list[str],
                       n_candidates: int = 100, n_rounds: int = 5, seed: int = 0) -> dict:
    """Retrieval R@1 among ``n_candidates`` clips whose captions assert different things (two
    captions that say the same with other synonyms are not both candidates), and how often the
    true caption beats its reordered twin."""
    rng = np.random.default_rng(seed)
    audio, text = model.embed_audio(mels), model.embed_text(captions)
    keys = [semantic_key(c) for c in captions]
    r1_a2t, r1_t2a = [], []
    for _ in range(n_rounds):
        chosen, seen = [], set()
        for i in rng.permutation(len(captions)):
            if keys[i] not in seen:
                seen.add(keys[i])
                chosen.append(i)
            if len(chosen) == n_candidates:
                break
        sim = audio[chosen] @ text[chosen].T
        r1_a2t.append(float((sim.argmax(1) == np.arange(len(chosen))).mean()))
        r1_t2a.append(float((sim.argmax(0) == np.arange(len(chosen))).mean()))
    temporal = [i for i, c in enumerate(captions) if parse_caption(c).is_temporal]
    twins = model.embed_text([reorder_twin(captions[i]) for i in temporal]) if temporal else np.zeros((0, 1))
    prefer = (audio[temporal] * text[temporal]).sum(-1) > (audio[temporal] * twins).sum(-1) if temporal else []
    return {"r1_audio_to_text": float(np.mean(r1_a2t)), "r1_text_to_audio": float(np.mean(r1_t2a)),
            "n_candidates": len(chosen), "prefers_true_over_reordered": float(np.mean(prefer)) if temporal else None,
            "n_temporal": len(temporal)}
