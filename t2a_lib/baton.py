"""BATON's reward-weighted fine-tuning (Lee et al. 2023; Liao et al. 2024).

With ℓ the per-sample (min-SNR, γ = 5) diffusion loss, pre-training clips D_pre with their
captions, and generated clips D_fb with rewards r (0/1 human labels, or reward-model scores in
[0, 1]),

    L = β · mean_{D_pre} ℓ + mean_{D_fb} r · ℓ,        β = 0.25

The feedback term pulls the model toward the clips people (or the reward model) accepted; the
pre-training term keeps it from drifting off the data distribution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .diffusion import Shard, TextBank, batch_indices, diffusion_loss, fingerprint, fit_finetuned, sample_timesteps, train_loop


@dataclass
class BatonConfig:
    steps: int = 300
    batch_size: int = 8  # feedback clips per step
    pretrain_batch_size: int = 8
    lr: float = 1e-4
    warmup: int = 20
    weight_decay: float = 0.0
    beta: float = 0.25
    min_snr_gamma: float | None = 5.0
    p_uncond: float = 0.1
    high_noise_share: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float | None = None
    checkpoint_every: int = 100
    seed: int = 0
    mixed_precision: str = "no"

    def lr_at(self, step: int) -> float:
        return self.lr * min(1.0, (step + 1) / max(1, self.warmup))


def _term(model, scheduler, latents, text: TextBank, idx, g, config, device, shard=Shard()):
    """Per-sample loss of this process's rows of the global batch ``idx`` (draws made for all rows)."""
    noise = shard(torch.randn((len(idx), *latents.shape[1:]), generator=g)).to(device)
    t = shard(sample_timesteps(len(idx), g, config.high_noise_share)).to(device)
    drop = shard(torch.rand(len(idx), generator=g) < config.p_uncond)
    idx = shard(idx)
    x0 = latents[idx].to(device)
    states, mask = (v.to(device) for v in text.batch(idx, drop))
    return diffusion_loss(model, scheduler, x0, states, mask, noise, t, config.min_snr_gamma)


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
    """Train-or-load (see :func:`t2a_lib.diffusion.fit_finetuned`)."""
    key = {"config": asdict(config), "feedback": len(fb_latents), "pretrain": len(pre_latents),
           "data": fingerprint(pre_latents, pre_text.states, fb_latents, fb_text.states, torch.as_tensor(rewards))}
    return fit_finetuned(folder, base_unet, key,
                         lambda unet: train_reward_weighted(unet, scheduler, pre_latents, pre_text, fb_latents,
                                                            fb_text, rewards, config, folder, progress))
