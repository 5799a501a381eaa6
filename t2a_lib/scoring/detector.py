"""Frame-level sound event detection on the mel front end, trained on the world's exact timelines.

An ``EventDetector`` gives, per clip: frame probabilities (T' x C at 20 ms), clip-level logits
and probabilities (max over frames; used for KL and IS), an embedding (mean of the frame
features; used for the Fréchet distance) and a list of events (thresholded frames).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from ..model.diffusion import make_accelerator
from .encoders import AUDIO_TRUNKS, read_model_config
from ..run.files import load_safetensors
from ..world.scenes import CLASSES, Event
from .event_metrics import event_f1_corpus, events_from_frames, order_correct, presence

ROLES = ("judge", "ranker")


@dataclass
class DetectorConfig:
    role: str = "judge"
    arch: str = "tcn"
    seed: int = 0
    classes: list = field(default_factory=lambda: list(CLASSES))
    width: int = 32
    hidden: int = 64
    hop_seconds: float = 0.02  # trunks halve the 10 ms mel hop
    threshold: float = 0.5
    merge_gap: float = 0.2  # bursty classes (ticks, knocks, barks) dip between bursts
    min_duration: float = 0.08
    epochs: int = 3
    batch_size: int = 32
    lr: float = 3e-3

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if self.arch not in AUDIO_TRUNKS:
            raise ValueError(f"unknown detector arch {self.arch!r}; known: {', '.join(AUDIO_TRUNKS)}")


@dataclass
class DetectorOutput:
    frame_probs: np.ndarray  # (N, T', C)
    clip_logits: np.ndarray  # (N, C)
    clip_probs: np.ndarray  # (N, C) sigmoid of clip_logits
    embeddings: np.ndarray  # (N, D)


class EventDetector(nn.Module):
    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.config = config
        self.trunk = AUDIO_TRUNKS[config.arch](width=config.width, hidden=config.hidden)
        self.head = nn.Linear(self.trunk.out_dim, len(config.classes))

    @property
    def role(self) -> str:
        return self.config.role

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.trunk(mel)
        return self.head(feats), feats

    @torch.no_grad()
    def analyse(self, mels: torch.Tensor, batch_size: int = 256) -> DetectorOutput:
        self.eval()
        out = {"frame_probs": [], "clip_logits": [], "embeddings": []}
        for i in range(0, len(mels), batch_size):
            logits, feats = self(mels[i:i + batch_size].float())
            out["frame_probs"].append(torch.sigmoid(logits))
            out["clip_logits"].append(logits.amax(1))
            out["embeddings"].append(feats.mean(1))
        cat = {k: torch.cat(v).numpy().astype(np.float64) for k, v in out.items()}
        return DetectorOutput(cat["frame_probs"], cat["clip_logits"], 1 / (1 + np.exp(-cat["clip_logits"])),
                              cat["embeddings"])

    def events(self, frame_probs: np.ndarray) -> list[list[Event]]:
        """Thresholded events for each clip of ``analyse(...).frame_probs``."""
        c = self.config
        return [events_from_frames(p, c.classes, c.hop_seconds, c.threshold, c.min_duration, c.merge_gap)
                for p in frame_probs]

    # -- persistence: config.json + model.safetensors (+ model_card.json written by training)
    def save(self, folder) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps({"kind": "event_detector", **asdict(self.config)}, indent=2))
        return folder

    @classmethod
    def load(cls, folder, role: str | None = None) -> "EventDetector":
        folder = Path(folder)
        model = cls(DetectorConfig(**read_model_config(folder, "event_detector", "event detector", role)))
        model.load_state_dict(load_safetensors(folder / "model.safetensors"))
        return model.eval()


def train_detector(config: DetectorConfig, mels: torch.Tensor, targets: torch.Tensor,
                   progress: bool = True) -> tuple[EventDetector, list[float]]:
    """BCE on frame targets (N, T', C). Returns the model and the loss per step."""
    torch.manual_seed(config.seed)
    model = EventDetector(config)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    steps = config.epochs * (len(mels) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=max(steps, 1), pct_start=0.15)
    acc = make_accelerator()  # float32 (diffusion.make_accelerator: one precision per state)
    model, opt = acc.prepare(model, opt)
    gen = torch.Generator().manual_seed(config.seed)
    losses, bar = [], tqdm(total=steps, desc=f"detector ({config.role}, {config.arch})", disable=not progress)
    model.train()
    for _ in range(config.epochs):
        perm = torch.randperm(len(mels), generator=gen)
        for i in range(0, len(perm) - config.batch_size + 1, config.batch_size):
            idx = perm[i:i + config.batch_size]
            x, y = mels[idx].float().to(acc.device), targets[idx].to(acc.device)
            x = x + torch.randn(len(x), 1, 1, generator=gen).to(acc.device) * 0.5  # loudness jitter (log domain)
            logits, _ = model(x)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    return acc.unwrap_model(model).eval(), losses


def evaluate_detector(model: EventDetector, mels: torch.Tensor, targets: torch.Tensor, records) -> dict:
    """Held-out quality against ground-truth timelines."""
    from ..world.captions import parse_caption

    out = model.analyse(mels)
    frame_acc = float(((out.frame_probs > model.config.threshold) == targets.numpy().astype(bool)).mean())
    ests = model.events(out.frame_probs)
    refs = [r.events or [] for r in records]
    f1 = event_f1_corpus(refs, ests, collar=0.2)
    all_present, order = [], []
    for r, est in zip(records, ests):
        all_present.append(presence([e["label"] for e in refs[len(all_present)]], est)["all_present"])
        spec = parse_caption(r.captions)
        if spec.is_temporal:
            order.append(order_correct(spec.time_order, est))
    return {"frame_accuracy": frame_acc, "event_f1": f1["f1"], "event_precision": f1["precision"],
            "event_recall": f1["recall"], "all_present_accuracy": float(np.mean(all_present)),
            "order_accuracy": float(np.mean(order)) if order else None, "n_clips": len(records),
            "n_temporal": len(order)}


def write_model_card(folder, scores: dict, train_seconds: float, n_train: int) -> None:
    card = {"held_out": scores, "train_seconds": round(train_seconds, 1), "n_train_clips": n_train,
            "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    (Path(folder) / "model_card.json").write_text(json.dumps(card, indent=2))
