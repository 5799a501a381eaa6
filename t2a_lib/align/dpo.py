"""Diffusion-DPO (Wallace et al. 2023; Tango 2), SFT on winners, and the pair data they train on.

For a pair (winner x_w, loser x_l) of the same prompt c, the policy ε_θ and the frozen reference
ε_ref see the *same* timestep t and noise ε (and the same classifier-free dropout). With
per-sample errors averaged over C×H×W,

    m_w = ‖f_θ(x_w,t) − target_w‖²,  m_l = ‖f_θ(x_l,t) − target_l‖²,  r_w, r_l the same for ref,
    L_DPO = −log σ( −½ β [ (m_w − m_l) − (r_w − r_l) ] ),   β = 2000 (Tango 2)

L_DPO = ln 2 at initialisation (policy = reference). The *implicit accuracy* is the share of pairs
where the policy lowered the winner's error more than the loser's, relative to the reference:
(m_w − m_l) − (r_w − r_l) < 0. We log it and the four errors, not only the loss.

With LoRA the reference is the same UNet with its adapters disabled (no second copy in memory);
with full fine-tuning it is a frozen copy.

**The winner safeguard** (``DPOConfig.safeguard``; Diffusion-SDPO: Fu et al. 2025, "Diffusion-SDPO:
Safeguarded Direct Preference Optimization for Diffusion Models", arXiv:2511.03317; code
AIDC-AI/Diffusion-SDPO). Plain Diffusion-DPO can raise the winner's error while its loss falls
(both likelihoods drop, the loser's faster). SDPO scales the *loser's gradient* by
λ ∈ [0, 1] so that, to first order in output space, a step cannot raise the winners' error:
with e_w, e_l the batch's prediction errors (prediction − target) on winners and losers,
g_w ∝ e_w and g_l ∝ e_l the gradients of their mean squared errors w.r.t. the predictions,
requiring (−g_w + λ g_l)·g_w ≤ −μ‖g_w‖² gives

    λ = min(1, (1 − μ)·‖e_w‖² / ⟨e_l, e_w⟩)  when ⟨e_l, e_w⟩ > 0,   λ = 1 otherwise,

μ ∈ [0, 1] (larger: more conservative; the authors' SD1.5 Diffusion-DPO script uses 0.9).
λ (detached) only rescales the loser term's gradient, m_l ← sg(m_l) + λ·(m_l − sg(m_l)): the
loss value is plain DPO's.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..model.diffusion import (FineTuneConfig, Shard, TextBank, mean_square, per_sample_mse, prediction_error,
                        sample_timesteps, train_loop)
from ..model.precision import at_least_float32, float32


def safeguard_scale(err_w: torch.Tensor, err_l: torch.Tensor, mu: float) -> torch.Tensor:
    """Diffusion-SDPO's loser-gradient scale λ (a detached 0-d tensor) from the batch's winner
    and loser prediction errors (same shape): min(1, (1 − μ)‖e_w‖²/⟨e_l, e_w⟩) where the
    inner product is positive, else 1."""
    if not 0.0 <= mu <= 1.0:
        raise ValueError(f"the safeguard's mu must lie in [0, 1], got {mu}")
    err_w, err_l = err_w.detach().float(), err_l.detach().float()
    inner = (err_w * err_l).sum()
    if inner <= 0:
        return torch.ones((), device=err_w.device)
    return ((1.0 - mu) * err_w.pow(2).sum() / inner).clamp(0.0, 1.0)


def scale_gradient(value: torch.Tensor, scale) -> torch.Tensor:
    """``value`` unchanged, its gradient multiplied by ``scale``: sg(v) + scale·(v − sg(v))."""
    return value.detach() + scale * (value - value.detach())


def dpo_loss(mse_w, mse_l, ref_w, ref_l, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair Diffusion-DPO loss and implicit accuracy (both shape (B,)), in float32 whatever
    autocast is active (precision.FLOAT32: β times a small difference)."""
    with float32(mse_w.device.type):
        mse_w, mse_l, ref_w, ref_l = (at_least_float32(v) for v in (mse_w, mse_l, ref_w, ref_l))
        inside = -0.5 * beta * ((mse_w - mse_l) - (ref_w - ref_l))
        return -F.logsigmoid(inside), (inside > 0).float()


@dataclass
class PairBank:
    """Winner and loser latents of each pair and its prompt's frozen text states."""

    winners: torch.Tensor  # (N, C, H, W) scaled latents
    losers: torch.Tensor
    text: TextBank  # one row per pair: the ORIGINAL prompt (S2/S3 losers came from perturbed ones)

    def __len__(self) -> int:
        return len(self.winners)


@dataclass
class DPOConfig(FineTuneConfig):
    steps: int = 400  # batch_size: pairs per step
    beta: float = 2000.0
    sft_first_steps: int = 0  # Tango 2's SFT-on-winners epoch, in steps
    loss: str = "dpo"  # "dpo" | "sft" (winners only) | "crpo" (DPO + winner diffusion loss)
    lora_rank: int | None = None  # None: full fine-tuning against a frozen copy
    safeguard: bool = False  # Diffusion-SDPO's winner safeguard on the loser's gradient (module docstring)
    safeguard_mu: float = 0.9
    # p_uncond (FineTuneConfig): if > 0, winner AND loser of a row are dropped together

    def __post_init__(self):
        if self.loss not in ("dpo", "sft", "crpo"):
            raise ValueError(f"loss must be 'dpo', 'sft' or 'crpo', got {self.loss!r}")
        if not 0.0 <= self.safeguard_mu <= 1.0:
            raise ValueError(f"safeguard_mu must lie in [0, 1], got {self.safeguard_mu}")


LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def add_lora(unet, rank: int, seed: int = 0):
    """Attach LoRA adapters (peft) to the attention projections; freeze everything else."""
    from peft import LoraConfig

    torch.manual_seed(seed)
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
    return unet


@contextmanager
def reference_of(unet, frozen_copy):
    """Yield the reference model: the frozen copy, or the same UNet with its adapters off."""
    if frozen_copy is not None:
        yield frozen_copy
        return
    unet = getattr(unet, "module", unet)  # under DDP (accelerate launch): the wrapped UNet
    unet.disable_adapters()
    try:
        yield unet
    finally:
        unet.enable_adapters()


def trainable_with_reference(unet, lora_rank: int | None, seed: int = 0):
    """Make ``unet`` trainable against a frozen reference: with ``lora_rank``, LoRA adapters on a
    frozen UNet (the reference is the same UNet with its adapters off: returns None); without,
    every weight, against a frozen copy of the UNet as it is now (returned). Use the result with
    :func:`reference_of`."""
    if lora_rank:
        add_lora(unet, lora_rank, seed)
        return None
    frozen = copy.deepcopy(unet).requires_grad_(False).eval()
    unet.requires_grad_(True)
    return frozen


def train_dpo(unet, scheduler, pairs: PairBank, config: DPOConfig, out_dir=None, progress: bool = True) -> dict:
    """Fine-tune ``unet`` in place (or its LoRA adapters) on preference pairs.

    History per step: loss, phase (0 = SFT, 1 = preference), implicit_acc, mse_w, mse_l, ref_w,
    ref_l. Checkpoints and resume as in :func:`t2a_lib.model.diffusion.train_loop`.
    """
    frozen = trainable_with_reference(unet, config.lora_rank, config.seed)

    def step_loss(model, idx, g, step, device, shard=Shard()):
        if frozen is not None and frozen.device.type != torch.device(device).type:
            frozen.to(device)  # the frozen copy follows the policy onto accelerate's device (a GPU)
        # the global batch's draws, then this process's rows (diffusion.Shard; all rows in one process)
        noise = shard(torch.randn((len(idx), *pairs.winners.shape[1:]), generator=g)).to(device)
        t = shard(sample_timesteps(len(idx), g, config.high_noise_share)).to(device)
        drop = shard(torch.rand(len(idx), generator=g) < config.p_uncond)
        idx = shard(idx)
        xw, xl = pairs.winners[idx].to(device), pairs.losers[idx].to(device)
        states, mask = (v.to(device) for v in pairs.text.batch(idx, drop))
        if config.loss == "sft" or step < config.sft_first_steps:
            mse = per_sample_mse(model, scheduler, xw, states, mask, noise, t)
            return mse.mean(), {"phase": 0.0, "mse_w": mse.mean()}
        # winner and loser in one batch, sharing text, noise and timestep; the reference sees the same
        both = (torch.cat([xw, xl]), states.repeat(2, 1, 1), mask.repeat(2, 1), noise.repeat(2, 1, 1, 1), t.repeat(2))
        err_w, err_l = prediction_error(model, scheduler, *both).chunk(2)
        mse_w, mse_l = mean_square(err_w), mean_square(err_l)
        with torch.no_grad(), reference_of(model, frozen) as ref:
            ref_w, ref_l = per_sample_mse(ref, scheduler, *both).chunk(2)
        scale = safeguard_scale(err_w, err_l, config.safeguard_mu) if config.safeguard else torch.tensor(1.0)
        loss, acc = dpo_loss(mse_w, scale_gradient(mse_l, scale), ref_w, ref_l, config.beta)
        total = loss.mean() + (mse_w.mean() if config.loss == "crpo" else 0.0)
        return total, {"phase": 1.0, "dpo_loss": loss.mean(), "implicit_acc": acc.mean(), "mse_w": mse_w.mean(),
                       "mse_l": mse_l.mean(), "ref_w": ref_w.mean(), "ref_l": ref_l.mean(), "loser_scale": scale}

    return train_loop(unet, len(pairs), config, step_loss, out_dir, progress, desc=f"{config.loss.upper()}")


def pair_bank(text_encoder, tokenizer, prompts: list[str], winners: torch.Tensor, losers: torch.Tensor) -> PairBank:
    """Pairs with their prompts' frozen text states (one row per pair)."""
    from ..model.base_model import text_bank

    if not (len(prompts) == len(winners) == len(losers)):
        raise ValueError(f"{len(prompts)} prompts, {len(winners)} winners, {len(losers)} losers: one row per pair")
    return PairBank(winners, losers, text_bank(text_encoder, tokenizer, prompts))


def crpo_round(pipe, rankers, prompts: list[str], n_samples: int, steps: int, guidance: float, seed: int,
               batch_size: int | None = None) -> tuple[PairBank, pd.DataFrame]:
    """One round of TangoFlux's CLAP-ranked preference optimisation: ``n_samples`` per prompt
    from the *current* model, the ranker ensemble's best against its worst."""
    from ..scoring.scorers import ranker_scores, require_role

    require_role(rankers, "ranker", "CRPO ranking")
    expanded = [p for p in prompts for _ in range(n_samples)]
    out = pipe(expanded, num_inference_steps=steps, guidance_scale=guidance, batch_size=batch_size,
               generator=torch.Generator().manual_seed(seed), return_latents=True, progress=False)
    scores = ranker_scores(rankers, out.audios, expanded).mean(1).reshape(len(prompts), n_samples)
    best, worst = scores.argmax(1), scores.argmin(1)
    lat = torch.from_numpy(out.latents).view(len(prompts), n_samples, *out.latents.shape[1:])
    rows = np.arange(len(prompts))
    bank = pair_bank(pipe.text_encoder, pipe.tokenizer, prompts, lat[rows, best], lat[rows, worst])
    table = pd.DataFrame({"prompt": prompts, "best": scores.max(1), "worst": scores.min(1), "mean": scores.mean(1)})
    return bank, table


def run_crpo(pipe, rankers, prompts: list[str], rounds: int, n_samples: int, config: DPOConfig, steps: int,
             guidance: float, out_dir=None, progress: bool = True) -> list[dict]:
    """Alternate sampling and DPO + winner-diffusion training; the reference of each round is
    the model at the start of that round (full fine-tuning)."""
    from dataclasses import replace

    if config.lora_rank:
        raise ValueError("CRPO here fine-tunes the full UNet (a fresh reference each round)")
    log = []
    for r in range(rounds):
        bank, table = crpo_round(pipe, rankers, prompts, n_samples, steps, guidance, seed=config.seed + 1000 * r)
        cfg = replace(config, loss="crpo", seed=config.seed + r)
        folder = Path(out_dir) / f"round_{r}" if out_dir else None
        hist = train_dpo(pipe.unet, make_train_scheduler_like(pipe), bank, cfg, folder, progress)["history"]
        pipe.unet.eval()
        log.append({"round": r, "ranker_best": float(table.best.mean()), "ranker_mean": float(table["mean"].mean()),
                    "implicit_acc": float(np.mean([h.get("implicit_acc", np.nan) for h in hist[-20:]])),
                    "history": hist})
    return log


def make_train_scheduler_like(pipe):
    """The DDPM training scheduler matching a pipeline's sampling scheduler (same betas, target)."""
    from diffusers import DDPMScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
    return DDPMScheduler(**{k: pipe.scheduler.config[k] for k in keys})


def load_preference_pairs(pref_dir, text_encoder, tokenizer, strategies=None) -> tuple[PairBank, pd.DataFrame]:
    """The preference set written by notebook 03 (parquet + latents), optionally only some
    strategies (the ablations: without S1, without S2 and S3)."""
    from safetensors.torch import load_file

    pref_dir = Path(pref_dir)
    if not (pref_dir / "preferences.parquet").exists():
        raise FileNotFoundError(f"no preference set in {pref_dir}: run notebook 03 first")
    df = pd.read_parquet(pref_dir / "preferences.parquet")
    if strategies is not None:
        df = df[df.strategy.isin(strategies)].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"no pairs of strategies {strategies} in {pref_dir}")
    lat = load_file(pref_dir / "latents.safetensors")
    winners = torch.stack([lat[i] for i in df.chosen_id])
    losers = torch.stack([lat[i] for i in df.rejected_id])
    return pair_bank(text_encoder, tokenizer, df.prompt.tolist(), winners, losers), df


def fit_preference_model(folder, base_unet, scheduler, bank: PairBank, config: DPOConfig, progress: bool = True):
    """Fine-tune a copy of ``base_unet`` (DPO, SFT or CRPO loss), or load it when ``folder``
    holds a model trained from the same base model with the same config on the same pairs."""
    from dataclasses import asdict

    from ..model.fits import fingerprint, fit_finetuned

    key = {"config": asdict(config), "pairs": len(bank),
           "data": fingerprint(bank.winners, bank.losers, bank.text.states, bank.text.mask)}
    return fit_finetuned(folder, base_unet, key,
                         lambda unet: train_dpo(unet, scheduler, bank, config, folder, progress),
                         fuse_lora=bool(config.lora_rank))


def fit_from_run(run_dir, folder, config: DPOConfig, pairs: str = "preferences", strategies=None) -> list[dict]:
    """:func:`fit_preference_model` from the run's base pipeline on the pair set ``run_dir/<pairs>``
    (notebook 03's ``preferences`` or ``gold``), optionally only its ``strategies`` (notebook 07's
    ablations), everything read from ``run_dir``: a job for :func:`t2a_lib.run.parallel.run_jobs`.
    The model lands in ``folder``; returns its training history."""
    from ..model.base_model import load_run_pipeline

    run_dir = Path(run_dir)
    base = load_run_pipeline(run_dir)
    bank, _ = load_preference_pairs(run_dir / pairs, base.text_encoder, base.tokenizer, strategies)
    return fit_preference_model(folder, base.unet, make_train_scheduler_like(base), bank, config, progress=False)[1]


def fit_crpo_from_run(run_dir, folder, prompts: list[str], rounds: int, n_samples: int, config: DPOConfig,
                      steps: int, guidance: float) -> list[dict]:
    """:func:`fit_crpo` from the run's base pipeline and rankers: a job for
    :func:`t2a_lib.run.parallel.run_jobs`. Returns the per-round log."""
    from ..model.base_model import load_run_pipeline
    from ..scoring.scorers import load_rankers

    run_dir = Path(run_dir)
    base = load_run_pipeline(run_dir)
    return fit_crpo(folder, base, load_rankers(run_dir), prompts, rounds, n_samples, config, steps, guidance,
                    progress=False)[1]


def sweep_choice(sweep_table: pd.DataFrame) -> dict:
    """The settings :func:`sweep` chose: the candidate (never the base row) with the highest
    ranker score; ties go to the earlier candidate. ``{"lr", "beta", "steps"}``."""
    candidates = sweep_table[sweep_table.candidate != "base"].reset_index(drop=True)
    if candidates.empty:
        raise ValueError("the sweep table has no candidates")
    best = candidates.loc[candidates.score.idxmax()]
    return {"lr": float(best.lr), "beta": float(best.beta), "steps": int(best.steps)}


def with_unet(pipe, unet):
    """The same pipeline with another UNet (the other components are shared, not copied)."""
    from ..model.tango import TangoPipeline

    new = TangoPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=unet,
                        scheduler=copy.deepcopy(pipe.scheduler), vocoder=pipe.vocoder)
    new.set_progress_bar_config(disable=True)
    return new


def fit_crpo(folder, base_pipe, rankers, prompts: list[str], rounds: int, n_samples: int, config: DPOConfig,
             steps: int, guidance: float, progress: bool = True):
    """CRPO from the base model, saved as ``folder/unet`` (or loaded when done with the same
    settings). Returns ``(unet, per-round log)``."""
    from dataclasses import asdict

    from ..model.fits import cached_fit, fingerprint, save_unet
    from ..run.files import save_fit
    from ..model.tango import load_unet

    folder = Path(folder)
    key = {"config": asdict(config), "rounds": rounds, "n_samples": n_samples, "prompts": prompts,
           "steps": steps, "guidance": guidance, "base_unet": fingerprint(base_pipe.unet),
           "rankers": fingerprint(*rankers.audiotext)}  # CRPO ranks with the audio-text rankers
    fit = cached_fit(folder, key)
    if fit is not None:
        return load_unet(folder / "unet"), fit["log"]
    pipe = with_unet(base_pipe, copy.deepcopy(base_pipe.unet))
    log = run_crpo(pipe, rankers, prompts, rounds, n_samples, config, steps, guidance, folder, progress)
    save_unet(pipe.unet, folder / "unet")
    save_fit(folder, key, log=log)
    return pipe.unet.eval(), log


def sweep(folder, base_pipe, scheduler, bank: PairBank, config: DPOConfig, grid: dict[str, list], rankers,
          prompts: list[str], steps: int, guidance: float) -> pd.DataFrame:
    """A coordinate sweep of DPO's settings, scored by the **rankers** on ``prompts`` (validation
    prompts: never the judges, never test prompts).

    ``grid`` maps DPOConfig fields (e.g. ``lr``, ``beta``, ``steps``) to values; each value is tried
    with every other field at ``config``'s value. Each candidate (and the base model, for
    reference) samples the prompts with one seed; the rankers' detector gives all-present and
    order (temporal prompts), their audio-text models the CLAP score. A candidate's ``score`` is
    all-present + order, the rate the preference set's ranking is after. One row per candidate."""
    from dataclasses import replace

    from ..evaluate.evaluation import generate
    from ..scoring.scorers import rank_clips

    fields = [f for f, values in grid.items() if values]
    candidates = [config] + [replace(config, **{f: type(getattr(config, f))(v)})
                             for f in fields for v in grid[f] if v != getattr(config, f)]

    def scores(pipe) -> dict:
        mels = generate(pipe, prompts, config.seed, steps, guidance, progress=False, output="mel")
        t = rank_clips(rankers, torch.from_numpy(mels), prompts).table
        row = {"all_present": float(t.all_present.mean()), "order": float(t.order.dropna().mean()),
               "clap": float(t.clap.mean())}
        return {**row, "score": row["all_present"] + row["order"]}

    rows = [{"candidate": "base", **{f: np.nan for f in ("lr", "beta", "steps")}, **scores(base_pipe)}]
    for i, cfg in enumerate(candidates):
        unet, _ = fit_preference_model(Path(folder) / f"c{i}", base_pipe.unet, scheduler, bank, cfg, progress=False)
        rows.append({"candidate": f"c{i}", "lr": cfg.lr, "beta": cfg.beta, "steps": cfg.steps,
                     **scores(with_unet(base_pipe, unet))})
    return pd.DataFrame(rows)  # the "base" row is a reference, never a candidate
