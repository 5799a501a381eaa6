"""BATON's reward-weighted fine-tuning (Lee et al. 2023; Liao et al. 2024).

With ℓ the per-sample (min-SNR, γ = 5) diffusion loss, pre-training clips D_pre with their
captions, and generated clips D_fb with rewards r (0/1 human labels, or reward-model scores in
[0, 1]),

    L = β · mean_{D_pre} ℓ + mean_{D_fb} r · ℓ,        β = 0.25

The feedback term pulls the model toward the clips people (or the reward model) accepted; the
pre-training term keeps it from drifting off the data distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.diffusion import (FineTuneConfig, Shard, TextBank, batch_indices, config_key, diffusion_loss,
                               sample_timesteps, train_loop)
from ..model.fits import fingerprint, fit_finetuned


@dataclass
class BatonConfig(FineTuneConfig):
    pretrain_batch_size: int = 8
    beta: float = 0.25
    min_snr_gamma: float | None = 5.0
    # "paper": min(SNR, γ)/(SNR+1) for v-prediction; "tango": min(SNR, γ)/SNR, as Tango's training
    # script computes it and BATON's fine-tuning inherited (t2a_lib.model.diffusion.min_snr_weight)
    min_snr_weighting: str = "paper"
    p_uncond: float = 0.1


def _term(model, scheduler, latents, text: TextBank, idx, g, config, device, shard=Shard()):
    """Per-sample loss of this process's rows of the global batch ``idx`` (draws made for all rows)."""
    noise = shard(torch.randn((len(idx), *latents.shape[1:]), generator=g)).to(device)
    t = shard(sample_timesteps(len(idx), g, config.high_noise_share)).to(device)
    drop = shard(torch.rand(len(idx), generator=g) < config.p_uncond)
    idx = shard(idx)
    x0 = latents[idx].to(device)
    states, mask = (v.to(device) for v in text.batch(idx, drop))
    return diffusion_loss(model, scheduler, x0, states, mask, noise, t, config.min_snr_gamma,
                          config.min_snr_weighting)


def train_reward_weighted(unet, scheduler, pre_latents, pre_text: TextBank, fb_latents, fb_text: TextBank,
                          rewards: torch.Tensor, config: BatonConfig, out_dir=None, progress: bool = True) -> dict:
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if len(rewards) != len(fb_latents) or rewards.min() < 0 or rewards.max() > 1 or rewards.isnan().any():
        raise ValueError("rewards must be one number in [0, 1] per feedback clip")

    def step_loss(model, idx, g, step, device, shard=Shard()):
        pre_idx = batch_indices(len(pre_latents), config.pretrain_batch_size, config.seed + 1, step)
        l_pre = _term(model, scheduler, pre_latents, pre_text, pre_idx, g, config, device, shard).mean()
        l_fb = (shard(rewards[idx]).to(device)
                * _term(model, scheduler, fb_latents, fb_text, idx, g, config, device, shard)).mean()
        return config.beta * l_pre + l_fb, {"pretrain": l_pre, "feedback": l_fb}

    return train_loop(unet, len(fb_latents), config, step_loss, out_dir, progress, desc="BATON")


def fit_baton_model(folder, base_unet, scheduler, pre_latents, pre_text, fb_latents, fb_text, rewards,
                    config: BatonConfig, progress: bool = True):
    """Train-or-load (see :func:`t2a_lib.model.fits.fit_finetuned`)."""
    key = {"config": config_key(config), "feedback": len(fb_latents), "pretrain": len(pre_latents),
           "data": fingerprint(pre_latents, pre_text.states, fb_latents, fb_text.states, torch.as_tensor(rewards))}
    return fit_finetuned(folder, base_unet, key,
                         lambda unet: train_reward_weighted(unet, scheduler, pre_latents, pre_text, fb_latents,
                                                            fb_text, rewards, config, folder, progress))


# --- the run's training data, written once, read by every fine-tune (in any process) -----------

FEEDBACK = {"baton_hd": ("hd",), "baton_rd": ("rd",), "baton_hd_rd": ("hd", "rd")}  # model id -> feedback sets
TRAINING_DATA = "training_data.safetensors"


def hd_label_file(baton_dir) -> str:
    """The run's human (HD) label file: the first ``hd_labels_<labeller>.jsonl`` by name."""
    from pathlib import Path

    names = sorted(p.name for p in Path(baton_dir).glob("hd_labels_*.jsonl") if not p.name.endswith(".events.jsonl"))
    if not names:
        raise FileNotFoundError(f"no hd_labels_*.jsonl in {baton_dir}: run notebook 05 first")
    return names[0]


def _feedback_clips(baton_dir, name: str, labels_file: str):
    """The clips of feedback set ``name`` that carry a label: (latents, captions, rewards)."""
    import pandas as pd
    from safetensors.torch import load_file

    from ..audio.manifest import read_manifest

    clips = pd.read_parquet(baton_dir / name / "clips.parquet")
    feedback = {r.id: r.feedback for r in read_manifest(baton_dir / labels_file, kind="feedback")}
    clips = clips[clips.id.isin(feedback)].reset_index(drop=True)
    latents = load_file(baton_dir / name / "latents.safetensors")
    return (torch.stack([latents[i] for i in clips.id]), clips.caption.tolist(),
            torch.tensor([feedback[i] for i in clips.id], dtype=torch.float32))


def write_training_data(run_dir, vae, n_pretrain: int, seed: int):
    """Write ``run_dir/baton/training_data.safetensors``: ``n_pretrain`` training-split clips
    encoded by the base VAE (the pre-training term) and the labelled HD and RD clips (latents and
    rewards), with every caption. Returns its path."""
    import json
    from pathlib import Path

    import numpy as np
    from safetensors.torch import save_file

    from ..model.autoencoder import encode_mels
    from ..audio.features import split_mels

    run_dir = Path(run_dir)
    baton_dir = run_dir / "baton"
    mels, records = split_mels(run_dir / "world" / "train.jsonl")
    pick = np.random.default_rng(seed).permutation(len(records))[:n_pretrain]
    tensors = {"pretrain/latents": encode_mels(vae, mels[pick]).contiguous()}
    captions = {"pretrain": [records[i].captions for i in pick]}
    for name, labels in (("hd", hd_label_file(baton_dir)), ("rd", "rd_labels.jsonl")):
        latents, captions[name], rewards = _feedback_clips(baton_dir, name, labels)
        tensors[f"{name}/latents"], tensors[f"{name}/rewards"] = latents.contiguous(), rewards
    path = baton_dir / TRAINING_DATA
    save_file(tensors, path, metadata={"captions": json.dumps(captions)})
    return path


def training_sets(run_dir, text_encoder, tokenizer) -> dict:
    """What :func:`write_training_data` wrote, with frozen text states: ``{"pretrain": (latents,
    TextBank), model id: (latents, TextBank, rewards)}`` for the ids of :data:`FEEDBACK`."""
    import json
    from pathlib import Path

    from safetensors import safe_open

    from ..model.base_model import text_bank

    path = Path(run_dir) / "baton" / TRAINING_DATA
    if not path.exists():
        raise FileNotFoundError(f"no {path}: notebook 06 writes it (baton.write_training_data)")
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        captions = json.loads(f.metadata()["captions"])
    out = {"pretrain": (tensors["pretrain/latents"], text_bank(text_encoder, tokenizer, captions["pretrain"]))}
    for model_id, names in FEEDBACK.items():
        out[model_id] = (torch.cat([tensors[f"{n}/latents"] for n in names]),
                         text_bank(text_encoder, tokenizer, [c for n in names for c in captions[n]]),
                         torch.cat([tensors[f"{n}/rewards"] for n in names]))
    return out


def fit_from_run(run_dir, folder, model_id: str, config: BatonConfig) -> list[dict]:
    """:func:`fit_baton_model` from the run's base pipeline on the feedback of ``model_id``
    (:data:`FEEDBACK`), everything read from ``run_dir``: a job for
    :func:`t2a_lib.run.parallel.run_jobs`. The model lands in ``folder``; returns its history."""
    from ..model.base_model import load_run_pipeline
    from ..align.dpo import make_train_scheduler_like

    base = load_run_pipeline(run_dir)
    data = training_sets(run_dir, base.text_encoder, base.tokenizer)
    (pre_latents, pre_text), (latents, text, rewards) = data["pretrain"], data[model_id]
    return fit_baton_model(folder, base.unet, make_train_scheduler_like(base), pre_latents, pre_text, latents, text,
                           rewards, config, progress=False)[1]
