"""The diffusion objective and the UNet training loop (used by the base model, SFT, DPO, BATON).

For a clean latent x₀, noise ε and timestep t, with ᾱ_t the cumulative signal share:

    x_t = √ᾱ_t x₀ + √(1-ᾱ_t) ε          target = ε (ε-prediction) or v = √ᾱ_t ε - √(1-ᾱ_t) x₀
    ℓ(x₀) = w(t) · mean_{C,H,W} (f_θ(x_t, t, c) - target)²         (per sample: shape (B,))

with min-SNR weighting w(t) = min(SNR_t, γ)/SNR_t for ε and min(SNR_t, γ)/(SNR_t + 1) for v
(Hang et al. 2023; BATON uses γ = 5): ``min_snr_weighting="paper"``, the default. Tango's training
script (``AudioDiffusion.forward``) divides by SNR_t for v-prediction too, min(SNR_t, γ)/SNR_t,
and BATON's fine-tuning inherited it: ``min_snr_weighting="tango"`` reproduces that. Every
random draw of step s comes from a generator seeded by (seed, s), so a resumed run continues
exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .components import add_time_channel
from ..run.files import CorruptFileError, load_safetensors, read_json
from .precision import float32


def snr(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    ac = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    return ac / (1 - ac)


MIN_SNR_WEIGHTINGS = ("paper", "tango")


def min_snr_weight(scheduler, timesteps: torch.Tensor, gamma: float | None,
                   weighting: str = "paper") -> torch.Tensor:
    """w(t) per timestep: 1 without ``gamma``; else min(SNR, γ) over SNR + 1 for v-prediction
    under ``"paper"``, over SNR otherwise (ε-prediction, or ``"tango"``: Tango's script)."""
    if weighting not in MIN_SNR_WEIGHTINGS:
        raise ValueError(f"min_snr_weighting must be one of {MIN_SNR_WEIGHTINGS}, got {weighting!r}")
    s = snr(scheduler, timesteps)
    if gamma is None:
        return torch.ones_like(s)
    clipped = torch.clamp(s, max=gamma)
    v_paper = scheduler.config.prediction_type == "v_prediction" and weighting == "paper"
    return clipped / (s + 1) if v_paper else clipped / s


def noisy_and_target(scheduler, latents, noise, timesteps):
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if scheduler.config.prediction_type == "v_prediction":
        return noisy, scheduler.get_velocity(latents, noise, timesteps)
    return noisy, noise


def prediction_error(unet, scheduler, latents, states, mask, noise, timesteps) -> torch.Tensor:
    """The UNet's prediction minus its target, shape (B, C, H, W), in float32 (the UNet may run
    under autocast; precision.FLOAT32)."""
    noisy, target = noisy_and_target(scheduler, latents, noise, timesteps)
    pred = unet(add_time_channel(unet, noisy), timesteps, encoder_hidden_states=states,
                encoder_attention_mask=mask).sample
    with float32(pred.device.type):
        return pred.float() - target.float()


def per_sample_mse(unet, scheduler, latents, states, mask, noise, timesteps) -> torch.Tensor:
    """Unweighted MSE per sample, averaged over C×H×W: shape (B,). The quantity DPO compares;
    float32 (precision.FLOAT32)."""
    return mean_square(prediction_error(unet, scheduler, latents, states, mask, noise, timesteps))


def mean_square(error: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of the squared error over C×H×W: (B, C, H, W) -> (B,), float32."""
    with float32(error.device.type):
        return error.float().pow(2).mean(dim=(1, 2, 3))


def diffusion_loss(unet, scheduler, latents, states, mask, noise, timesteps, min_snr_gamma=None,
                   min_snr_weighting: str = "paper") -> torch.Tensor:
    """Per-sample (min-SNR weighted) diffusion loss ℓ, shape (B,)."""
    return min_snr_weight(scheduler, timesteps, min_snr_gamma, min_snr_weighting) * per_sample_mse(
        unet, scheduler, latents, states, mask, noise, timesteps)


def sample_timesteps(n: int, generator: torch.Generator, high_noise_share: float = 0.0, t_max: int = 1000):
    """Uniform timesteps, with a share drawn from the noisier half (where layout is decided)."""
    t = torch.randint(0, t_max, (n,), generator=generator)
    high = torch.rand(n, generator=generator) < high_noise_share
    return torch.where(high, torch.randint(t_max // 2, t_max, (n,), generator=generator), t)


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


# ----------------------------------------------------------------------------------------------
# training the UNet on cached latents and cached (frozen) text states


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 1e-4
    p_uncond: float = 0.1  # classifier-free dropout; every row eligible
    min_snr_gamma: float | None = 5.0
    min_snr_weighting: str = "paper"  # or "tango": min(SNR, γ)/SNR for v too (module docstring)
    high_noise_share: float = 0.3
    grad_clip: float = 1.0
    ema_decay: float | None = None
    checkpoint_every: int = 200
    seed: int = 0
    mixed_precision: str = "no"  # "bf16" on a GPU
    # weight of the grounding term (t2a_lib.model.grounding): event words' cross-attention pulled to
    # where their events sound; needs the clips' timelines. 0 = the plain diffusion loss.
    grounding_weight: float = 0.0
    # the grounding pass runs on pure noise at timesteps drawn from [grounding_min_t, 1000)
    grounding_min_t: int = 800
    grounding_batch: int = 8  # rows in that pass (the first captions of the batch not dropped)
    # supervise only the first k attention heads of each layer (0: the mean of all heads), so the
    # other heads stay free to follow content wherever it is
    grounding_heads: int = 0

    def key(self) -> dict:
        """The fields that identify a trained model: all of them (``config_key``)."""
        return config_key(self)

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


# fields added after models were trained and cached: left out of a config's key while at their
# default, so every key (and cached model) from before they existed stays valid
_LATER_FIELDS = {"min_snr_weighting": "paper"}


def config_key(config) -> dict:
    """``asdict(config)`` less the ``_LATER_FIELDS`` that hold their defaults."""
    return {k: v for k, v in asdict(config).items() if _LATER_FIELDS.get(k, object()) != v}


@dataclass
class FineTuneConfig:
    """The fields :func:`train_loop` reads in every fine-tune (DPO, BATON, KTO): AdamW, a linear
    warm-up to a constant learning rate, clipping, EMA, checkpoints, seed, precision; each method's
    config adds its own loss's fields."""

    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-4
    warmup: int = 20
    weight_decay: float = 0.0
    p_uncond: float = 0.0  # classifier-free dropout of the captions
    high_noise_share: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float | None = None
    checkpoint_every: int = 100
    seed: int = 0
    mixed_precision: str = "no"

    def lr_at(self, step: int) -> float:
        return self.lr * min(1.0, (step + 1) / max(1, self.warmup))


@dataclass
class TextBank:
    """Frozen text states for every training caption, plus the unconditional (empty) prompt."""

    states: torch.Tensor  # (N, L, D)
    mask: torch.Tensor  # (N, L)
    uncond_states: torch.Tensor  # (1, L, D)
    uncond_mask: torch.Tensor  # (1, L)

    def rows(self, idx: torch.Tensor) -> "TextBank":
        """The bank of captions ``idx`` (repeats allowed), with the same empty prompt."""
        return TextBank(self.states[idx], self.mask[idx], self.uncond_states, self.uncond_mask)

    def batch(self, idx: torch.Tensor, drop: torch.Tensor):
        s, m = self.states[idx].clone(), self.mask[idx].clone()
        s[drop], m[drop] = self.uncond_states[0], self.uncond_mask[0]
        return s, m


def _save_checkpoint(folder: Path, unet, ema, opt, step: int, history: list, config) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in unet.state_dict().items()}, tmp / "unet.safetensors")
    if ema is not None:
        save_file({k: v.contiguous() for k, v in ema.items()}, tmp / "ema.safetensors")
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "history": history, "config": config_key(config)}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Rows of step ``step``: epoch-wise permutations seeded by (seed, epoch) — resumable."""
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
    return perm[pos * batch_size:(pos + 1) * batch_size]


@dataclass(frozen=True)
class Shard:
    """One process's share of a global batch under ``accelerate launch``: the contiguous rows
    ``[rank·n/world, (rank+1)·n/world)`` of anything of n rows. Every process draws the global
    batch's randomness (noise, timesteps, dropout) in full from the same generator and keeps its
    rows, so the global batch is the one a single process would draw; DDP averages the equal
    shards' gradients, which is the gradient of the global mean. ``Shard()`` keeps every row."""

    rank: int = 0
    world: int = 1

    def __call__(self, rows):
        n = len(rows)
        if n % self.world:
            raise ValueError(f"a batch of {n} rows does not split evenly over {self.world} processes")
        return rows[n * self.rank // self.world: n * (self.rank + 1) // self.world]


def make_accelerator(mixed_precision: str = "no") -> Accelerator:
    """accelerate's Accelerator; without CUDA it runs on the CPU, and under ``accelerate launch
    --multi_gpu --num_processes N`` (torchrun) as N CPU processes over gloo.

    accelerate keeps one precision per process and refuses another one later ("AcceleratorState
    has already been initialized"); a notebook trains the VAE in float32, then the UNet in bf16
    on a GPU. So a change of precision starts a fresh state, keeping the process group."""
    from accelerate.state import AcceleratorState

    current = AcceleratorState._shared_state.get("_mixed_precision")
    if current is not None and current != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())


def _mean_over_processes(acc: Accelerator, value):
    """A scalar log averaged over processes (as-is in a single process)."""
    value = value.detach() if torch.is_tensor(value) else torch.tensor(float(value))
    return acc.reduce(value.float().to(acc.device), "mean") if acc.num_processes > 1 else value


def _resume(ckpt: Path | None, config, unet, opt) -> tuple[int, list, dict | None]:
    """Load ``ckpt`` (weights, optimizer, EMA) into ``unet`` and ``opt`` when it was written with this
    ``config``: (the step to start at, the history so far, the EMA weights or None); (0, [], None) otherwise."""
    if ckpt is None or not (ckpt / "state.json").exists():
        return 0, [], None
    state = read_json(ckpt / "state.json", "checkpoint state")
    if state["config"] != config_key(config):
        return 0, [], None
    unet.load_state_dict(load_safetensors(ckpt / "unet.safetensors"))
    try:
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    except (RuntimeError, EOFError, OSError) as e:
        raise CorruptFileError(f"{ckpt / 'optimizer.pt'}: corrupt checkpoint ({e}); delete {ckpt} "
                               f"to start over") from None
    ema = load_safetensors(ckpt / "ema.safetensors") if (ckpt / "ema.safetensors").exists() else None
    return state["step"], state["history"], ema


@torch.no_grad()
def _update_ema(ema: dict, unet, decay: float) -> None:
    for k, v in unet.state_dict().items():
        ema[k].mul_(decay).add_(v.float(), alpha=1 - decay)


def _nonfinite_loss(unet, loss, step: int, start: int, ckpt, lr: float) -> str:
    """Why the loss is NaN/Inf (weights damaged before training, or a divergence) and which checkpoint,
    if any, holds the last good state."""
    bad = [n for n, p in unet.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad and step == start:
        why = (f"the weights it starts from already hold NaN/Inf ({len(bad)} tensor(s), e.g. {', '.join(bad[:3])}): "
               f"the model it was given is damaged, not the training")
    else:
        why = f"the training diverged at learning rate {lr:.3g} (lower the lr)" if step > start else \
            "the weights are finite, so the batch or the reference model gave it (check the inputs)"
    state = Path(ckpt) / "state.json" if ckpt is not None else None
    kept = (f"the last checkpoint (step {read_json(state, 'checkpoint state').get('step')}) is kept in {ckpt}"
            if state is not None and state.is_file() else "no checkpoint was written")
    return f"loss is {loss.item()} at step {step}: {why}; {kept}"


def train_loop(unet, n_items: int, config, step_loss, out_dir=None, progress: bool = True, desc: str = "UNet") -> dict:
    """The one training loop (base model, SFT, DPO, CRPO, BATON): AdamW on the trainable
    parameters, warm-up + cosine LR, gradient clipping, optional EMA, accelerate, checkpoints in
    ``out_dir/checkpoint`` every ``config.checkpoint_every`` steps (written by the main process
    only), exact resume.

    ``step_loss(unet, idx, generator, step, device, shard) -> (loss, logs)`` computes one step's
    loss on this process's :class:`Shard` of the global batch ``idx`` (``config.batch_size``
    rows); ``logs`` (floats) are kept per step in the returned ``history``, averaged over
    processes. Under ``accelerate launch`` with N processes each takes batch_size / N rows.
    """
    acc = make_accelerator(config.mixed_precision)
    shard = Shard(acc.process_index, acc.num_processes)
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    ckpt = Path(out_dir) / "checkpoint" if out_dir else None
    start, history, ema = _resume(ckpt, config, unet, opt)
    if getattr(config, "ema_decay", None) and ema is None:
        ema = {k: v.detach().clone().float() for k, v in unet.state_dict().items()}
    unet, opt = acc.prepare(unet, opt)
    bar = tqdm(total=config.steps, initial=start, desc=desc, disable=not progress)
    t0 = time.time()
    unet.train()
    for step in range(start, config.steps):
        idx = batch_indices(n_items, config.batch_size, config.seed, step)
        g = step_generator(config.seed, step)
        for group in opt.param_groups:
            group["lr"] = config.lr_at(step)
        with acc.autocast():
            loss, logs = step_loss(unet, idx, g, step, acc.device, shard)
        if not torch.isfinite(loss):
            raise FloatingPointError(_nonfinite_loss(acc.unwrap_model(unet), loss, step, start, ckpt, config.lr_at(step)))
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        if config.grad_clip:
            acc.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        if ema is not None:
            _update_ema(ema, acc.unwrap_model(unet), config.ema_decay)
        if acc.num_processes > 1:
            loss, logs = _mean_over_processes(acc, loss), {k: _mean_over_processes(acc, v) for k, v in logs.items()}
        history.append({"loss": round(loss.item(), 6),
                        **{k: round(float(v.detach() if torch.is_tensor(v) else v), 6) for k, v in logs.items()}})
        bar.update()
        bar.set_postfix(loss=f"{sum(h['loss'] for h in history[-20:]) / len(history[-20:]):.4f}")
        if ckpt is not None and ((step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps):
            if acc.is_main_process:
                _save_checkpoint(ckpt, acc.unwrap_model(unet), ema, opt, step + 1, history, config)
            acc.wait_for_everyone()
    bar.close()
    acc.unwrap_model(unet).eval()
    return {"history": history, "losses": [h["loss"] for h in history], "seconds": time.time() - t0,
            "resumed_from": start, "ema": ema}


def train_unet(unet, scheduler, latents: torch.Tensor, text: TextBank, config: TrainConfig,
               out_dir=None, progress: bool = True, timeline=None) -> dict:
    """Train ``unet`` in place on (latent, caption) pairs with the min-SNR diffusion loss, plus
    ``config.grounding_weight`` × the grounding loss when ``timeline`` (the (targets, mask) pair
    of ``audiotext.timeline_targets`` for the captions) is given."""
    from .grounding import grounding_loss, record_cross_attention

    if bool(config.grounding_weight) != (timeline is not None):
        raise ValueError("timeline targets are needed exactly when config.grounding_weight > 0")

    def step_loss(model, idx, g, step, device, shard=Shard()):
        if timeline is not None and shard.world > 1:
            raise NotImplementedError("the grounding term runs in one process (launch without it)")
        x0 = latents[idx].to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        t = sample_timesteps(len(idx), g, config.high_noise_share).to(device)
        drop = torch.rand(len(idx), generator=g) < config.p_uncond
        states, mask = (v.to(device) for v in text.batch(idx, drop))
        if shard.world > 1:
            x0, noise, t, states, mask = (shard(v) for v in (x0, noise, t, states, mask))
        loss = diffusion_loss(model, scheduler, x0, states, mask, noise, t, config.min_snr_gamma,
                              config.min_snr_weighting).mean()
        if timeline is None:
            return loss, {}
        # a second pass on pure noise: with no content in the latent to follow, attention can only
        # place an event from the word's "when" and the frame's position — the layout decision of
        # the first sampling steps. (On the training latents it learns to follow content instead.)
        keep = (~drop).nonzero().squeeze(1)[: config.grounding_batch]  # dropped captions have no words
        pure = torch.randn(x0.shape, generator=g)[keep].to(device)
        t_pure = torch.randint(config.grounding_min_t, scheduler.config.num_train_timesteps, (len(pure),), generator=g)
        with record_cross_attention(unet, tuple(x0.shape[2:]), heads=config.grounding_heads or None) as maps:
            model(add_time_channel(unet, pure), t_pure.to(device), encoder_hidden_states=states[keep],
                  encoder_attention_mask=mask[keep])
        ground = grounding_loss(maps, timeline[0][idx][keep].to(device), timeline[1][idx][keep].to(device))
        return loss + config.grounding_weight * ground, {"diffusion": loss, "grounding": ground}

    return train_loop(unet, len(latents), config, step_loss, out_dir, progress)


