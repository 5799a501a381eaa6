"""Throughput at Tango's size against the physical limit (``python -m t2a_lib.run.bench --size tango``).

On a Tango-size UNet (``tango_checkpoint.TANGO_UNET_CONFIG``, 865.9M parameters, random weights: they
cost what trained ones cost) with a 10.24 s latent (8 × 256 × 16) and 32 text tokens of width 1024:

- sampling: seconds of UNet + solver per clip at 200 steps, guidance 3 (each step one batched
  forward of 2B rows), by batch size; timed over a few steps and scaled to 200;
- Diffusion-DPO: pairs/s and peak memory, full fine-tuning and LoRA, gradient checkpointing on
  and off (``dpo.train_dpo`` itself);
- each figure's share of the physical limit: the least time the FLOPs need at ``peak_tflops``
  (790 bf16 TFLOP/s, H100/H200 dense, on a GPU; on a CPU the measured float32 matmul rate).
  With F the FLOPs of one UNet forward on one clip (counted by :func:`unet_flops`): sampling
  2·200·F per clip; a DPO pair 8F with full fine-tuning (policy forward + backward ≈ 3F on
  winner and loser, reference forward F on each) and 6F with LoRA (no weight gradients for the
  frozen weights: backward ≈ 2F).

On a CPU the same code runs on the ``tiny`` config (the same block layout, narrow), so it is tested.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch

from ..model.tango_checkpoint import TANGO_UNET_CONFIG

H100_BF16_TFLOPS = 790.0  # dense bf16 (H100/H200 SXM, ~989 spec; the figure the bounds use)


@dataclass
class ScaleConfig:
    """A UNet config (diffusers' UNet2DConditionModel keywords, as data) and the shapes it runs on."""

    unet: dict
    latent: tuple = (8, 256, 16)  # (C, T, F) of one clip: Tango's 10.24 s (1,024 mel frames / 4)
    text_len: int = 32
    clip_seconds: float = 10.24
    sample_batches: tuple = (1, 4, 8, 16, 32)
    dpo_batch: int = 4  # pairs per step
    timed_steps: int = 5  # sampling steps timed (scaled to 200)
    dpo_steps: int = 3  # DPO steps timed (after one warm-up step)


TINY_UNET_CONFIG = {**TANGO_UNET_CONFIG, "block_out_channels": [16, 32, 32, 32], "attention_head_dim": [2, 4, 4, 4],
                    "cross_attention_dim": 32, "layers_per_block": 1, "norm_num_groups": 8}
SCALES = {
    "tango": ScaleConfig(TANGO_UNET_CONFIG),
    "tiny": ScaleConfig(TINY_UNET_CONFIG, latent=(8, 32, 16), text_len=8, clip_seconds=1.28, sample_batches=(1, 2),
                        dpo_batch=2, timed_steps=2, dpo_steps=1),
}


def make_scale_unet(cfg: ScaleConfig, seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**{**cfg.unet, "sample_size": list(cfg.latent[1:])})


def _inputs(cfg: ScaleConfig, batch: int, device) -> tuple:
    g = torch.Generator().manual_seed(0)
    x = torch.randn((batch, *cfg.latent), generator=g).to(device)
    ctx = torch.randn((batch, cfg.text_len, cfg.unet["cross_attention_dim"]), generator=g).to(device)
    return x, ctx


def unet_flops(unet, cfg: ScaleConfig) -> int:
    """FLOPs of one forward on one clip, counted from the modules' shapes (2 per multiply-add):
    every Conv2d and Linear, and attention's two matmuls (QKᵀ and AV, 4·Lq·Lk·inner)."""
    from diffusers.models.attention_processor import Attention

    total, hooks = [0], []

    def conv(m, args, out):
        total[0] += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m, args, out):
        total[0] += 2 * out.numel() * m.in_features

    def attention(m, args, kwargs, out):
        q = args[0] if args else kwargs["hidden_states"]
        kv = kwargs.get("encoder_hidden_states")
        lk = (kv if kv is not None else q).shape[1]
        total[0] += 4 * q.shape[0] * q.shape[1] * lk * m.inner_dim

    for mod in unet.modules():
        if isinstance(mod, torch.nn.Conv2d):
            hooks.append(mod.register_forward_hook(conv))
        elif isinstance(mod, torch.nn.Linear):
            hooks.append(mod.register_forward_hook(linear))
        elif isinstance(mod, Attention):
            hooks.append(mod.register_forward_hook(attention, with_kwargs=True))
    try:
        x, ctx = _inputs(cfg, 1, unet.device)
        with torch.no_grad():
            unet(x, torch.tensor([500], device=unet.device), encoder_hidden_states=ctx)
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def cpu_matmul_tflops(n: int = 1024, repeats: int = 5) -> float:
    """This machine's float32 matmul rate (TFLOP/s): the CPU's practical limit."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0) / 1e12


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def sampling_seconds_per_clip(unet, cfg: ScaleConfig, batch: int, precision: str, steps: int = 200,
                              guidance: float = 3.0) -> float:
    """UNet + DPM-Solver seconds per clip for ``steps`` guided steps (``cfg.timed_steps`` timed)."""
    from diffusers import DPMSolverMultistepScheduler

    from ..model.tango_checkpoint import TANGO_SCHEDULER_CONFIG
    from ..model.precision import autocast

    sched = DPMSolverMultistepScheduler(**{k: v for k, v in TANGO_SCHEDULER_CONFIG.items() if k != "clip_sample"})
    sched.set_timesteps(steps, device=unet.device)
    x, ctx = _inputs(cfg, batch, unet.device)
    ctx = torch.cat([torch.zeros_like(ctx), ctx])

    def step(t):
        nonlocal x
        with torch.no_grad(), autocast(unet.device, precision):
            pred = unet(torch.cat([x, x]), t, encoder_hidden_states=ctx).sample.float()
        uncond, cond = pred.chunk(2)
        x = sched.step(uncond + guidance * (cond - uncond), t, x).prev_sample

    step(sched.timesteps[0])  # warm-up
    _sync(unet.device)
    t0 = time.perf_counter()
    for t in sched.timesteps[1:1 + cfg.timed_steps]:
        step(t)
    _sync(unet.device)
    return (time.perf_counter() - t0) / cfg.timed_steps * steps / batch


def dpo_pairs_per_second(base_unet, cfg: ScaleConfig, lora: bool, checkpointing: bool, precision: str) -> dict:
    """Pairs/s of ``dpo.train_dpo`` over ``cfg.dpo_steps`` steps after one warm-up step, and the
    peak GPU memory (None on a CPU). A step is two UNet forwards (policy, reference): the clock
    starts at the third."""
    from ..model.components import make_train_scheduler, model_config
    from ..model.diffusion import TextBank
    from ..align.dpo import DPOConfig, PairBank, train_dpo

    unet = copy.deepcopy(base_unet)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    n, device = cfg.dpo_batch, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(1)
    states = torch.randn((n, cfg.text_len, cfg.unet["cross_attention_dim"]), generator=g)
    mask = torch.ones(n, cfg.text_len, dtype=torch.long)
    bank = PairBank(torch.randn((n, *cfg.latent), generator=g), torch.randn((n, *cfg.latent), generator=g),
                    TextBank(states, mask, states[:1], mask[:1]))
    config = DPOConfig(steps=1 + cfg.dpo_steps, batch_size=n, lora_rank=16 if lora else None,
                       mixed_precision=precision, checkpoint_every=10 ** 9)
    starts = []

    def clock(module, args):
        _sync(device)
        starts.append(time.perf_counter())

    hook = unet.register_forward_pre_hook(clock)  # deep-copied into the frozen reference too
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        out = train_dpo(unet, make_train_scheduler(model_config()), bank, config, progress=False)
        _sync(device)
        seconds = time.perf_counter() - starts[2]
    finally:
        hook.remove()
    if len(starts) != 2 * config.steps:
        raise RuntimeError(f"expected 2 UNet forwards per DPO step, saw {len(starts)} in {config.steps} steps")
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else None
    pairs = cfg.dpo_steps * n
    return {"pairs_per_s": pairs / seconds, "seconds_per_pair": seconds / pairs,
            "peak_memory_gib": None if peak is None else round(peak, 2), "final_loss": out["losses"][-1]}


def run(size: str = "auto", peak_tflops: float | None = None, batches=None) -> dict:
    """Every figure of this module's docstring for ``size`` (``auto``: tango on a GPU, tiny on a CPU)."""
    from ..model.components import n_params

    cuda = torch.cuda.is_available()
    size = ("tango" if cuda else "tiny") if size == "auto" else size
    if size not in SCALES:
        raise ValueError(f"size must be auto or one of {sorted(SCALES)}, got {size!r}")
    cfg, device = SCALES[size], torch.device("cuda" if cuda else "cpu")
    precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    unet = make_scale_unet(cfg).to(device)
    flops = unet_flops(unet, cfg)
    if peak_tflops is None:
        peak_tflops, peak_source = ((H100_BF16_TFLOPS, "H100/H200 dense bf16") if cuda else
                                    (cpu_matmul_tflops(), "this CPU's measured float32 matmul rate"))
    else:
        peak_source = "given"
    peak = peak_tflops * 1e12
    limit_clip, limit_full, limit_lora = 2 * 200 * flops / peak, 8 * flops / peak, 6 * flops / peak
    out = {"size": size, "device": torch.cuda.get_device_name() if cuda else "cpu", "precision": precision,
           "unet_params": n_params(unet), "latent": list(cfg.latent), "clip_seconds": cfg.clip_seconds,
           "unet_forward_tflop_per_clip": flops / 1e12, "peak_tflops": peak_tflops,
           "peak_source": peak_source, "limit_sampling_s_per_clip_200_steps": limit_clip,
           "limit_dpo_s_per_pair": {"full": limit_full, "lora": limit_lora}, "sampling": [], "dpo": []}
    for b in batches or cfg.sample_batches:
        s = sampling_seconds_per_clip(unet, cfg, b, precision)
        out["sampling"].append({"batch": b, "s_per_clip_200_steps": s, "share_of_limit": limit_clip / s})
    for lora in (False, True):
        for ckpt in (False, True):
            r = dpo_pairs_per_second(unet, cfg, lora, ckpt, precision)
            limit = limit_lora if lora else limit_full
            out["dpo"].append({"mode": "lora" if lora else "full", "gradient_checkpointing": ckpt, **r,
                               "share_of_limit": limit / r["seconds_per_pair"]})
    return out
