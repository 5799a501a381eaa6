"""Online RL for the diffusion model: GRPO over the stochastic sampler of
:mod:`t2a_lib.align.sde_sampler` (DDPO, Black et al. 2023; Flow-GRPO, Liu et al. 2025), rewarded
by the **rankers** only.

Each round draws P prompts and K chains per prompt from the current policy, recording every
step's log-probability log p_old(x_{k+1} | x_k) (exact Gaussians, summed over the D = C·H·W latent
elements). The rankers score each chain's final latent (r_{g,i}: prompt g, sample i), and the
advantage is group-relative:

    A_{g,i} = clip( (r_{g,i} − mean_j r_{g,j}) / (std_j r_{g,j} + ε), −A_max, A_max )

(population std over the K samples of the group). The policy's transitions are then refit for
``inner_epochs`` passes over the round's chains in minibatches, every denoising step of a chain
in one batch. Per (chain, step), with the log-ratio taken per latent element as DDPO and
Flow-GRPO do (the summed log-ratio of D ≈ 10⁴ elements would saturate any clip),

    ρ = exp( (log p_θ(x_{k+1} | x_k) − log p_old(x_{k+1} | x_k)) / D )
    L = mean_{chains, steps} [ −min(ρ A, clip(ρ, 1 − ε_c, 1 + ε_c) A) + β_KL · KL_k / D ]
    KL_k = ‖μ_θ(x_k) − μ_ref(x_k)‖² / (2 σ_k²)

where μ_ref is the frozen reference model's mean (the base UNet; with LoRA, the UNet with its
adapters off) and σ_k is the step's fixed standard deviation. KL_k is exact: both transitions are
Gaussians of the same σ_k. The logged ``kl`` is Σ_k KL_k, the chain's KL (chain rule), averaged
over the minibatch; it is zero while the policy equals the reference.

The reward cannot come from the judges: :func:`train_grpo` takes only a reward whose ``role`` is
``"ranker"`` (:func:`t2a_lib.scoring.scorers.require_role`), and :class:`RankerReward` builds one
only from ranker-role scorers. Training runs in :func:`t2a_lib.model.diffusion.train_loop`
(checkpoints, exact resume, progress bar); a checkpoint always falls on a round boundary, so a
resumed run resamples exactly the chains the uninterrupted run drew.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..model.diffusion import FineTuneConfig, Shard, TextBank, batch_indices, step_generator, train_loop
from ..scoring.scorers import require_role
from .dpo import make_train_scheduler_like, reference_of, trainable_with_reference, with_unet
from .sde_sampler import Trajectory, gaussian_kl, sample_trajectories, step_means, transition_log_prob

REWARDS = ("clap", "events", "clap+events")


@dataclass
class GRPOConfig(FineTuneConfig):
    steps: int = 64  # optimizer steps; a round of sampling every ``updates_per_round`` of them
    batch_size: int = 4  # prompts per round
    group_size: int = 4  # K: samples per prompt, the group of the relative advantage
    minibatch_size: int = 8  # chains per optimizer step (all of each chain's denoising steps)
    inner_epochs: int = 1  # passes over a round's chains
    sample_steps: int = 10  # steps of the stochastic sampler
    guidance: float = 3.0  # classifier-free guidance inside the policy
    clip_range: float = 1e-4  # ε_c on the per-element ratio (DDPO's default)
    kl_coef: float = 0.01  # β_KL
    adv_eps: float = 1e-4  # ε in the group std's denominator
    adv_clip: float = 5.0  # A_max
    reward: str = "clap"  # RankerReward's kind
    lora_rank: int | None = None  # None: full fine-tuning against a frozen copy
    checkpoint_every: int = 16

    @property
    def clips_per_round(self) -> int:
        return self.batch_size * self.group_size

    @property
    def updates_per_round(self) -> int:
        return self.inner_epochs * self.clips_per_round // self.minibatch_size

    def sampled_clips(self, steps: int | None = None) -> int:
        """Clips sampled by the first ``steps`` optimizer steps (all of them by default): the budget."""
        steps = self.steps if steps is None else steps
        return -(-steps // self.updates_per_round) * self.clips_per_round

    def __post_init__(self):
        if self.group_size < 2:
            raise ValueError(f"group_size must be at least 2 (a group-relative advantage), got {self.group_size}")
        if self.clips_per_round % self.minibatch_size:
            raise ValueError(f"batch_size × group_size = {self.clips_per_round} must be a multiple of "
                             f"minibatch_size = {self.minibatch_size}")
        for name in ("steps", "checkpoint_every"):
            if getattr(self, name) % self.updates_per_round:
                raise ValueError(f"{name} = {getattr(self, name)} must be a multiple of the {self.updates_per_round} "
                                 f"updates per round (checkpoints fall between rounds)")
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")


def group_advantages(rewards, eps: float = 1e-4, clip: float | None = None) -> np.ndarray:
    """(r − group mean) / (group std + ε) for rewards of shape (prompts, K), population std,
    optionally clipped to ±``clip``."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] < 2:
        raise ValueError(f"rewards must have shape (prompts, K >= 2), got {r.shape}")
    adv = (r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + eps)
    return adv if clip is None else np.clip(adv, -clip, clip)


def clipped_objective(log_ratio: torch.Tensor, advantages: torch.Tensor, clip_range: float):
    """PPO's clipped surrogate as a loss, per row: −min(ρA, clip(ρ, 1 − ε, 1 + ε)A), ρ = exp(log_ratio);
    and whether the clip was active (the two terms differ)."""
    ratio = torch.exp(log_ratio)
    plain, clipped = ratio * advantages, torch.clamp(ratio, 1 - clip_range, 1 + clip_range) * advantages
    return -torch.minimum(plain, clipped), (clipped < plain).float()


def grpo_loss(logp_new, logp_old, advantages, kl, n_elements: int, config: GRPOConfig):
    """The minibatch's loss (module docstring) from per-(chain, step) tensors; and its logs."""
    log_ratio = (logp_new - logp_old) / n_elements
    surrogate, clipped = clipped_objective(log_ratio, advantages.to(log_ratio), config.clip_range)
    loss = (surrogate + config.kl_coef * kl / n_elements).mean()
    return loss.float(), {"policy_loss": surrogate.mean(), "clip_frac": clipped.mean(),
                          "ratio_dev": (torch.exp(log_ratio) - 1).abs().max()}


class RankerReward:
    """A chain's reward from the **rankers**: ``"clap"`` the ensemble's audio-text score (a real CLAP's
    on waveforms), ``"events"`` all-present + order (0 off temporal prompts; the sweep's score),
    ``"clap+events"`` their sum. Built only from ranker-role scorers."""

    def __init__(self, pipe, rankers, kind: str = "clap"):
        require_role(rankers, "ranker", "GRPO's reward")
        if kind not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {kind!r}")
        self.pipe, self.rankers, self.kind = pipe, rankers, kind

    @property
    def role(self) -> str:
        return self.rankers.role

    def __call__(self, latents: torch.Tensor, prompts: list[str]) -> np.ndarray:
        from ..scoring.scorers import rank_clips, ranker_scores

        if hasattr(self.rankers, "score_waves"):  # a real CLAP: audio-text scores only
            if self.kind != "clap":
                raise ValueError(f"a real CLAP ranker gives only the 'clap' reward, not {self.kind!r}")
            return ranker_scores(self.rankers, self.pipe.latents_to_audio(latents)[0], prompts).mean(1)
        mels = torch.from_numpy(self.pipe.latents_to_mel(latents))
        if self.kind == "clap":
            return self.rankers.clap_scores(mels, prompts)
        table = rank_clips(self.rankers, mels, prompts).table
        if "all_present" not in table:
            raise ValueError("the 'events' reward needs captions of the world's grammar; free-form prompts take 'clap'")
        events = (table.all_present + table.order.fillna(0.0)).to_numpy(np.float64)
        return events + (table.clap.to_numpy(np.float64) if self.kind == "clap+events" else 0.0)


@dataclass
class Round:
    """One round's chains, their prompts' rows of the text bank, rewards and advantages."""

    index: int
    trajectory: Trajectory
    rows: torch.Tensor  # (P·K,) prompt index of each chain
    rewards: np.ndarray  # (P·K,)
    advantages: torch.Tensor  # (P·K,) float64


def sample_round(unet, scheduler, cond: TextBank, prompts: list[str], reward, config: GRPOConfig,
                 index: int, latent_shape: tuple, generator: torch.Generator, device) -> Round:
    """Round ``index``: P prompts (epoch-wise permutations, as every fine-tune batches), K chains each."""
    rows = batch_indices(len(prompts), config.batch_size, config.seed, index).repeat_interleave(config.group_size)
    noise = torch.randn((len(rows), *latent_shape), generator=generator)
    traj = sample_trajectories(unet, scheduler, cond.rows(rows), noise, config.sample_steps, config.guidance,
                               generator, device)
    rewards = np.asarray(reward(traj.final, [prompts[i] for i in rows]), dtype=np.float64)
    if rewards.shape != (len(rows),) or not np.isfinite(rewards).all():
        bad = sorted({prompts[i] for i, ok in zip(rows.tolist(), np.isfinite(rewards).ravel()) if not ok})[:3]
        raise ValueError(f"round {index}: the reward must give one finite number per clip, got shape "
                         f"{rewards.shape} for {len(rows)} clips" + (f"; not finite for {bad}" if bad else ""))
    adv = group_advantages(rewards.reshape(-1, config.group_size), config.adv_eps, config.adv_clip)
    return Round(index, traj, rows, rewards, torch.from_numpy(adv.reshape(-1)))


def minibatch(config: GRPOConfig, round_index: int, update: int) -> torch.Tensor:
    """The chains of a round's ``update``-th optimizer step: each inner epoch a fresh permutation."""
    per_epoch = config.clips_per_round // config.minibatch_size
    epoch, j = divmod(update, per_epoch)
    perm = torch.randperm(config.clips_per_round, generator=step_generator(config.seed + 7919 * (epoch + 1), round_index))
    return perm[j * config.minibatch_size:(j + 1) * config.minibatch_size]


def train_grpo(pipe, reward, prompts: list[str], config: GRPOConfig, out_dir=None, progress: bool = True) -> dict:
    """Fine-tune ``pipe.unet`` in place (or its LoRA adapters) by GRPO on ``prompts`` with
    ``reward(latents, prompts) -> (N,)``, which must have role ``"ranker"`` (e.g. :class:`RankerReward`).

    History per optimizer step: loss, policy_loss, kl, clip_frac, ratio_dev, and the round's
    reward_mean, reward_std and ``clips`` (clips sampled so far: the budget). Returns
    :func:`train_loop`'s record plus ``sampled_clips``."""
    from ..model.base_model import text_bank

    require_role(reward, "ranker", "GRPO's reward")
    if pipe.conditioning != "cross_attention":
        raise NotImplementedError("GRPO samples cross-attention (Tango) models; this pipeline conditions by class embedding")
    frozen = trainable_with_reference(pipe.unet, config.lora_rank, config.seed)
    scheduler = make_train_scheduler_like(pipe)
    cond = text_bank(pipe.text_encoder, pipe.tokenizer, prompts)
    current: dict = {}

    def step_loss(model, idx, g, step, device, shard=Shard()):
        if shard.world > 1:
            raise NotImplementedError("GRPO trains in one process (launch without accelerate's multi-process)")
        r, update = divmod(step, config.updates_per_round)
        if current.get("round") is None or current["round"].index != r:
            current["round"] = sample_round(model, scheduler, cond, prompts, reward, config, r, pipe.latent_shape(),
                                            g, device)
        rnd = current["round"]
        chains = minibatch(config, r, update)
        n_steps = rnd.trajectory.steps
        i, k = chains.repeat_interleave(n_steps), torch.arange(n_steps).repeat(len(chains))
        step_cond = cond.rows(rnd.rows)
        mean, std = step_means(model, scheduler, rnd.trajectory, i, k, step_cond, config.guidance, device)
        logp = transition_log_prob(rnd.trajectory.latents[i, k + 1].to(device), mean, std)
        if frozen is not None:
            frozen.to(device)  # the frozen copy follows the policy onto accelerate's device
        with torch.no_grad(), reference_of(model, frozen) as ref:
            mean_ref, _ = step_means(ref, scheduler, rnd.trajectory, i, k, step_cond, config.guidance, device)
        kl = gaussian_kl(mean, mean_ref, std)
        n_elements = mean[0].numel()
        loss, logs = grpo_loss(logp, rnd.trajectory.log_probs[i, k].to(device), rnd.advantages[i].to(device),
                               kl, n_elements, config)
        return loss, {**logs, "kl": kl.view(len(chains), n_steps).sum(1).mean(),
                      "reward_mean": float(rnd.rewards.mean()), "reward_std": float(rnd.rewards.std()),
                      "clips": (r + 1) * config.clips_per_round}

    out = train_loop(pipe.unet, len(prompts), config, step_loss, out_dir, progress, desc="GRPO")
    return {**out, "sampled_clips": config.sampled_clips(len(out["history"]))}


def fit_grpo(folder, base_pipe, rankers, prompts: list[str], config: GRPOConfig, progress: bool = True):
    """GRPO from a copy of the base UNet, rewarded by ``rankers``, saved as ``folder/unet`` (or loaded
    when ``folder`` holds the same fit: base model, rankers, prompts, config). Returns ``(unet, history)``;
    the history's last ``clips`` is the number of clips sampled."""
    from ..model.fits import fingerprint, fit_finetuned

    require_role(rankers, "ranker", "GRPO's reward")
    modules = [getattr(rankers, "detector", None), *getattr(rankers, "audiotext", [])]
    key = {"config": asdict(config), "prompts": list(prompts),
           "rankers": fingerprint(*[m for m in modules if isinstance(m, torch.nn.Module)])}

    def train(unet):
        pipe = with_unet(base_pipe, unet)
        return train_grpo(pipe, RankerReward(pipe, rankers, config.reward), prompts, config, folder, progress)

    return fit_finetuned(folder, base_pipe.unet, key, train, fuse_lora=bool(config.lora_rank))
