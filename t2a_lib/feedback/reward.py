"""BATON's feedback side: its prompts, simulated annotators, and the reward model.

- **Prompts**: two-event *Integrity* prompts ("are both events present?") and three-event
  *Temporal* prompts ("are the events in this order?"), phrased freely by the world grammar.
- **Simulated annotators** answer from the *ranker* family's event detector (never a judge), with
  a configurable flip rate, so papermill can run BATON without people.
- **Reward model**: frozen ranker audio and text embeddings → concat → MLP → sigmoid, trained with
  BCE (BATON: LAION-CLAP 512+512 → Linear(1024, 512) → ReLU → Linear(512, 1)). Audio is embedded
  at the encoder's own rate; each clip is scored against *its own caption* (BATON's RM scored
  audio against the sample index at inference). Held-out split by prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..world.captions import CaptionSpec, render_caption
from ..audio.manifest import ManifestRecord, write_manifest
from ..scoring.event_metrics import order_correct, presence
from ..scoring.scorers import require_role
from ..world.scenes import CLASSES, TEXTURES

TASKS = {"integrity": "Are both events present?", "temporal": "Are the events in this order?"}


def baton_prompts(n_integrity: int, n_temporal: int, seed: int = 0, exclude: set | None = None) -> pd.DataFrame:
    """Distinct prompts: ``task``, ``caption``, ``labels`` (prompted classes, time order for
    temporal ones). ``exclude`` holds captions not to reuse (e.g. evaluation prompts)."""
    rng = np.random.default_rng(seed)
    exclude, rows, seen = set(exclude or ()), [], set()
    foreground = [c for c in CLASSES if c not in TEXTURES]
    for task, n in (("integrity", n_integrity), ("temporal", n_temporal)):
        tries = 0
        while sum(r["task"] == task for r in rows) < n and tries < 100 * n:
            tries += 1
            if task == "integrity":
                rel = ("then", "followed", "while", "single")[int(rng.integers(4))]
                if rel == "single":  # "A dog barks with rain in the background"
                    spec = CaptionSpec((str(rng.choice(foreground)),), "single", str(rng.choice(TEXTURES)))
                else:
                    spec = CaptionSpec(tuple(str(c) for c in rng.choice(CLASSES, 2, replace=False)), rel)
            else:
                spec = CaptionSpec(tuple(str(c) for c in rng.choice(CLASSES, 3, replace=False)),
                                   ("then", "followed")[int(rng.integers(2))])
            caption = render_caption(spec, rng)
            if caption in seen or caption in exclude:
                continue
            seen.add(caption)
            rows.append({"task": task, "caption": caption, "labels": spec.time_order or spec.all_labels,
                         "all_labels": spec.all_labels})
    return pd.DataFrame(rows)


@dataclass
class SimulatedAnnotator:
    """Answers BATON's question from a ranker detector's events, flipping a share of answers."""

    detector: object
    flip: float = 0.1
    seed: int = 0

    def __post_init__(self):
        require_role(self.detector, "ranker", "simulated annotation")

    def label(self, mels: torch.Tensor, prompts: pd.DataFrame) -> np.ndarray:
        out = self.detector.analyse(mels)
        events = self.detector.events(out.frame_probs)
        truth = np.array([
            presence(p.all_labels, ev)["all_present"] if p.task == "integrity" else order_correct(p.labels, ev)
            for p, ev in zip(prompts.itertuples(), events)], dtype=float)
        flips = np.random.default_rng(self.seed).random(len(truth)) < self.flip
        return np.where(flips, 1 - truth, truth)


class RewardModel(nn.Module):
    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, audio_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Logits; ``torch.sigmoid`` gives the reward in [0, 1]."""
        return self.mlp(torch.cat([audio_emb, text_emb], -1)).squeeze(-1)


def embed_pairs(ranker_audiotext, mels: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen ranker embeddings of each clip and of *its own* caption."""
    require_role(ranker_audiotext, "ranker", "reward-model features")
    return (torch.from_numpy(ranker_audiotext.embed_audio(mels)),
            torch.from_numpy(ranker_audiotext.embed_text(list(captions))))


def train_reward_model(audio_emb, text_emb, labels, epochs: int = 50, batch_size: int = 32, lr: float = 1e-3,
                       seed: int = 0) -> tuple[RewardModel, list[float]]:
    """BCE on binary labels; Adam (BATON: lr 0.01, batch 32, ~50 epochs)."""
    torch.manual_seed(seed)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    model = RewardModel(audio_emb.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen, losses = torch.Generator().manual_seed(seed), []
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch_size):
            idx = perm[i:i + batch_size]
            loss = nn.functional.binary_cross_entropy_with_logits(model(audio_emb[idx], text_emb[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return model.eval(), losses


@torch.no_grad()
def reward(model: RewardModel, audio_emb, text_emb) -> np.ndarray:
    return torch.sigmoid(model(audio_emb, text_emb)).numpy()


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties counted half."""
    y, s = np.asarray(labels, bool), np.asarray(scores, float)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def split_by_prompt(prompts: list[str], held_out: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of held-out rows: whole prompts go to one side."""
    unique = sorted(set(prompts))
    rng = np.random.default_rng(seed)
    test = set(rng.choice(unique, max(1, int(round(held_out * len(unique)))), replace=False))
    return np.array([p in test for p in prompts])


def write_feedback(path, locations: list[str], captions: list[str], feedback, ids=None, dataset: str = "world-baton",
                   field: str = "feedback", baton_root=None) -> None:
    """BATON's JSON lines: human labels (0/1) under ``feedback``; reward-model scores in [0, 1]
    (written under ``SED`` when ``field="SED"``, as the anchors' RM files name it).
    ``locations`` are paths as this process opens them (absolute, or relative to the working
    folder); the file stores them relative to itself, as ``read_manifest`` resolves them, or, with
    ``baton_root``, relative to that folder as BATON publishes them (``Baton/data/Audio/...`` from the
    folder holding the checkout), as :func:`t2a_lib.feedback.released.read_released` resolves them."""
    import os

    from ..audio.locations import baton_location

    where = (lambda loc: baton_location(loc, baton_root)) if baton_root else os.path.abspath
    recs = [ManifestRecord(dataset=dataset, location=where(loc), captions=cap, id=ids[i] if ids else None,
                           feedback=float(f)) for i, (loc, cap, f) in enumerate(zip(locations, captions, feedback))]
    write_manifest(path, recs)
    if field == "SED":
        import json

        lines = [json.loads(x) for x in open(path)]
        with open(path, "w") as fh:
            for d in lines:
                d["SED"] = d.pop("feedback")
                fh.write(json.dumps(d) + "\n")


def sample_set(pipe, prompts: pd.DataFrame, per_prompt: int, steps: int, guidance: float, seed: int, out_dir,
               batch_size: int | None = None) -> pd.DataFrame:
    """``per_prompt`` samples of every prompt (BATON: 5), written as wavs with their latents;
    returns one row per clip: id, task, caption, labels, all_labels, location."""
    from pathlib import Path

    from safetensors.torch import save_file

    from ..audio.wav import write_wav

    out_dir = Path(out_dir)
    rows = prompts.loc[prompts.index.repeat(per_prompt)].reset_index(drop=True)
    rows["id"] = [f"{out_dir.name}_{i:05d}" for i in range(len(rows))]
    out = pipe(rows.caption.tolist(), num_inference_steps=steps, guidance_scale=guidance, batch_size=batch_size,
               generator=torch.Generator().manual_seed(seed), return_latents=True)
    rows["location"] = [str(out_dir / "audio" / f"{i}.wav") for i in rows.id]
    for loc, a in zip(rows.location, out.audios):
        write_wav(loc, a, durable=False)
    save_file({i: torch.from_numpy(z).contiguous() for i, z in zip(rows.id, out.latents)}, out_dir / "latents.safetensors")
    rows.to_parquet(out_dir / "clips.parquet", index=False)
    return rows


def auc_ci(labels, scores, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """AUC with a stratified percentile bootstrap (positives and negatives resampled apart, so
    no resample loses a class); NaNs when the labels hold one class only."""
    y, s = np.asarray(labels, bool), np.asarray(scores, float)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = [roc_auc(np.r_[np.ones(len(pos)), np.zeros(len(neg))],
                     np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]) for _ in range(n_boot)]
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return roc_auc(y, s), float(lo), float(hi)
