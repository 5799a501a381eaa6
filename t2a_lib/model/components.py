"""Tango in miniature: the components, built from small configs with diffusers and transformers.

Tango's structure is kept; only clip length and widths shrink (docs/reference.md has the real sizes):

    caption -> tokenizer -> T5 encoder -> text states ──────────────┐ cross-attention
    log-mel (B, 1, T=256, 64) -> AutoencoderKL (x4 down, 8 ch) -> latent (B, 8, 64, 16) -> UNet
    latent -> VAE decoder -> log-mel -> vocoder (HiFi-GAN, or Griffin-Lim) -> 16 kHz waveform

As in Tango the VAE reads raw log-mels laid out (time, mel) and the T5 encoder is frozen while
the UNet trains; here the small T5 is first pre-trained contrastively on the world's captions so
its token states carry event order (DESIGN.md: cross-attention sees tokens as a set).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from diffusers import AutoencoderKL, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel
from transformers import T5Config, T5EncoderModel

from ..world.text import build_world_tokenizer


@dataclass
class MiniTangoConfig:
    n_frames: int = 256  # 2.56 s at hop 160
    n_mels: int = 64
    latent_channels: int = 8
    vae_channels: tuple = (16, 32, 64)
    text_dim: int = 128
    text_layers: int = 2
    text_heads: int = 4
    # init std of T5's relative-position bias (one learned scalar per head and distance bucket).
    # At transformers' default, d_model^-0.5 = 0.09, a word's state barely depends on where it
    # stands (2-4% of its norm), contrastive pre-training never grows the bias, and the encoder
    # reads a caption as a bag of words: a linear probe cannot tell from an event's word states
    # whether it comes first (0.52 on "then"). At 2.0 the probe reads it (0.99); notebook 02.
    text_position_std: float = 2.0
    unet_channels: tuple = (32, 64, 64)
    unet_layers_per_block: int = 1
    unet_head_dim: int = 16  # channels per attention head (64 channels -> 4 heads of 16)
    prediction_type: str = "v_prediction"
    # one extra UNet input channel holding the frame's position in time (-1 .. 1). Convolutions
    # and diffusers' attention blocks carry no absolute position, and "which event comes first"
    # is exactly a decision about position; with this channel the model learns order in far
    # fewer steps (figures in the base-model notebook). Real checkpoints have no such channel.
    time_channel: bool = True

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# Named model sizes (notebook 02's ``model_size``). Only the UNet and VAE widths change: the
# text encoder, the mel front end and the latent layout stay as they are, so every later notebook
# reads a model of either size the same way. "default" is MiniTangoConfig() itself (the release's
# recipe, unchanged bit for bit); "gpu" is the larger model the gpu profile trains; "tiny" is a
# seconds-on-a-CPU model for tests and the multi-process check.
MODEL_SIZES = {
    "default": {},
    "gpu": {"unet_channels": (128, 256, 512), "unet_layers_per_block": 2, "unet_head_dim": 32,
            "vae_channels": (32, 64, 128)},
    "tiny": {"n_frames": 64, "vae_channels": (8, 8, 8), "unet_channels": (16, 16), "unet_head_dim": 8,
             "text_dim": 32},
}


def model_config(size: str = "default", **overrides) -> MiniTangoConfig:
    """The :class:`MiniTangoConfig` of a named size (:data:`MODEL_SIZES`), fields overridable."""
    if size not in MODEL_SIZES:
        raise ValueError(f"model_size must be one of {sorted(MODEL_SIZES)}, got {size!r}")
    return MiniTangoConfig(**{**MODEL_SIZES[size], **overrides})


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def make_vae(cfg: MiniTangoConfig) -> AutoencoderKL:
    n = len(cfg.vae_channels)  # n blocks -> n-1 downsamplings (x4 for 3 blocks)
    return AutoencoderKL(in_channels=1, out_channels=1, latent_channels=cfg.latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         block_out_channels=tuple(cfg.vae_channels), layers_per_block=1,
                         norm_num_groups=8, sample_size=cfg.n_frames)


def make_text_encoder(cfg: MiniTangoConfig, vocab_size: int | None = None) -> T5EncoderModel:
    vocab_size = vocab_size or len(build_world_tokenizer())
    t5 = T5Config(vocab_size=vocab_size, d_model=cfg.text_dim, d_kv=cfg.text_dim // cfg.text_heads,
                  d_ff=2 * cfg.text_dim, num_layers=cfg.text_layers, num_heads=cfg.text_heads,
                  relative_attention_num_buckets=16, relative_attention_max_distance=32,
                  dropout_rate=0.0, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
                  decoder_start_token_id=0)
    model = T5EncoderModel(t5)
    bias = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias  # shared by all layers
    nn.init.normal_(bias.weight, std=cfg.text_position_std)
    return model


def unet_heads(cfg: MiniTangoConfig) -> tuple:
    """Heads per level for ``unet_head_dim`` channels each. diffusers' UNet2DConditionModel reads
    its ``attention_head_dim`` argument as the number of *heads* (a naming slip it keeps for
    compatibility), so passing the head size there would give 16 heads of 4 channels: 4x the
    attention cost on a CPU and 4-dimensional query-key matching."""
    if any(c % cfg.unet_head_dim for c in cfg.unet_channels):
        raise ValueError(f"unet_channels {cfg.unet_channels} must be multiples of unet_head_dim {cfg.unet_head_dim}")
    return tuple(c // cfg.unet_head_dim for c in cfg.unet_channels)


def make_unet(cfg: MiniTangoConfig) -> UNet2DConditionModel:
    """No attention at the highest resolution (1,024 tokens is where CPU time goes)."""
    ch = tuple(cfg.unet_channels)
    return UNet2DConditionModel(
        sample_size=(cfg.n_frames // 4, cfg.n_mels // 4), in_channels=cfg.latent_channels + int(cfg.time_channel),
        out_channels=cfg.latent_channels, block_out_channels=ch, layers_per_block=cfg.unet_layers_per_block,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(ch) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(ch) - 1) + ("UpBlock2D",),
        cross_attention_dim=cfg.text_dim, attention_head_dim=unet_heads(cfg), norm_num_groups=8,
        use_linear_projection=True)


def add_time_channel(unet, latents: torch.Tensor) -> torch.Tensor:
    """The UNet's input: the latents, plus a linear ramp over time (axis 2) when the UNet was built
    with ``time_channel`` (its ``in_channels`` is one more than the latents have)."""
    extra = getattr(unet, "module", unet).config.in_channels - latents.shape[1]  # unwrapped from DDP
    if extra == 0:
        return latents
    if extra != 1:
        raise ValueError(f"UNet expects {latents.shape[1] + extra} input channels, latents have {latents.shape[1]}")
    b, _, h, w = latents.shape
    ramp = torch.linspace(-1.0, 1.0, h, device=latents.device, dtype=latents.dtype)
    return torch.cat([latents, ramp.view(1, 1, h, 1).expand(b, 1, h, w)], dim=1)


def _noise_schedule(cfg: MiniTangoConfig) -> dict:
    """Tango's (SD-2.1's) schedule: 1000 steps, scaled-linear betas 0.00085-0.012."""
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type=cfg.prediction_type)


def make_train_scheduler(cfg: MiniTangoConfig) -> DDPMScheduler:
    return DDPMScheduler(**_noise_schedule(cfg))


def make_sample_scheduler(cfg: MiniTangoConfig) -> DPMSolverMultistepScheduler:
    return DPMSolverMultistepScheduler(**_noise_schedule(cfg), algorithm_type="dpmsolver++", solver_order=2)
