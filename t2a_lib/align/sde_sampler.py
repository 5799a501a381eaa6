"""A stochastic DDPM sampler with exact per-step log-probabilities (DDPO, Black et al. 2023;
Flow-GRPO, Liu et al. 2025): the policy that online RL (:mod:`t2a_lib.align.grpo`) trains.

The model's DDPM noise schedule (ᾱ_t, the training scheduler's ``alphas_cumprod``) is walked on
the grid t_0 > t_1 > … > t_S = 0, t_k = round((T − 1)(1 − k/S)). At each step the (guided)
prediction f = f_∅ + w (f_c − f_∅) gives x̂₀ (ε-prediction: x̂₀ = (x_t − √(1−ᾱ_t) f)/√ᾱ_t;
v-prediction: x̂₀ = √ᾱ_t x_t − √(1−ᾱ_t) f), and the next latent is drawn from the DDPM posterior
q(x_s | x_t, x̂₀) (s = t_{k+1}; α = ᾱ_t/ᾱ_s, β = 1 − α):

    x_s ~ N(μ, σ² I),   μ = √ᾱ_s β/(1−ᾱ_t) · x̂₀ + √α (1−ᾱ_s)/(1−ᾱ_t) · x_t,
                        σ² = (1−ᾱ_s)/(1−ᾱ_t) · β

(DDIM with η = 1). The transition's log-density, summed over the D = C·H·W latent elements,

    log p(x_s | x_t) = Σ_d [ −(x_s,d − μ_d)²/(2σ²) − log σ − ½ log 2π ],

is exact, and so is the KL between two such transitions with the same σ (policy μ_θ, reference
μ_ref): KL = ‖μ_θ − μ_ref‖² / (2σ²). Every step has σ > 0 (the last one ends at t = 0, where
ᾱ_0 < 1), so every UNet call is a stochastic, scoreable action. The clip is the latent at t = 0
(residual noise of std √(1−ᾱ_0) ≈ 0.03). That last step's σ is small (Tango's schedule at 10 steps:
σ = 0.82, 0.78, …, 0.26, then 0.029), so its log-ratio and KL move most per unit change of μ, as in
DDPO (whose last DDIM step ends at ᾱ_0 too). Log-densities and KLs are float64: a ratio of two
sums over D elements must not lose its digits to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..model.components import add_time_channel
from ..model.diffusion import TextBank
from ..model.precision import float32


def timestep_grid(scheduler, steps: int) -> torch.Tensor:
    """t_0 > … > t_S = 0: ``steps + 1`` integer timesteps, evenly spaced over the training schedule."""
    if steps < 1:
        raise ValueError(f"the stochastic sampler needs at least one step, got {steps}")
    last = scheduler.config.num_train_timesteps - 1
    return torch.linspace(last, 0, steps + 1).round().long()


def guided_prediction(unet, x: torch.Tensor, t: torch.Tensor, cond: TextBank, guidance: float) -> torch.Tensor:
    """The UNet's prediction at (x, t) per row (t of shape (B,)), classifier-free guided with weight
    ``guidance`` (unconditional and conditional halves in one forward, as the pipeline does); float32."""
    n = len(x)
    states, mask = cond.states.to(x.device), cond.mask.to(x.device)
    if guidance != 1.0:
        x, t = torch.cat([x, x]), torch.cat([t, t])
        states = torch.cat([cond.uncond_states.to(x.device).expand(n, -1, -1), states])
        mask = torch.cat([cond.uncond_mask.to(x.device).expand(n, -1), mask])
    pred = unet(add_time_channel(unet, x), t, encoder_hidden_states=states, encoder_attention_mask=mask).sample
    with float32(pred.device.type):
        pred = pred.float()
        if guidance == 1.0:
            return pred
        uncond, conditional = pred.chunk(2)
        return uncond + guidance * (conditional - uncond)


def posterior(scheduler, x_t: torch.Tensor, pred: torch.Tensor, t: torch.Tensor, s: torch.Tensor):
    """(μ, σ) of the DDPM posterior step t -> s (< t) given the model's prediction (module
    docstring): μ of x_t's shape (float32, differentiable in ``pred``), σ of shape (B,) (float64)."""
    ac = scheduler.alphas_cumprod.to(x_t.device, torch.float64)
    a_t, a_s = ac[t], ac[s]
    alpha = a_t / a_s
    beta = 1 - alpha
    var = (1 - a_s) / (1 - a_t) * beta
    col = lambda v: v.float().view(-1, 1, 1, 1)  # noqa: E731
    x_t = x_t.float()
    if scheduler.config.prediction_type == "v_prediction":
        x0 = col(a_t.sqrt()) * x_t - col((1 - a_t).sqrt()) * pred
    elif scheduler.config.prediction_type == "epsilon":
        x0 = (x_t - col((1 - a_t).sqrt()) * pred) / col(a_t.sqrt())
    else:
        raise ValueError(f"prediction_type {scheduler.config.prediction_type!r} is not supported (epsilon, v_prediction)")
    mean = col(a_s.sqrt() * beta / (1 - a_t)) * x0 + col(alpha.sqrt() * (1 - a_s) / (1 - a_t)) * x_t
    return mean, var.sqrt()


def transition_log_prob(x_s: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x_s; μ, σ² I) summed over each row's C·H·W elements: shape (B,), float64."""
    x, m, s = x_s.double(), mean.double(), std.double().view(-1, 1, 1, 1)
    per_element = -(x - m) ** 2 / (2 * s ** 2) - torch.log(s) - 0.5 * math.log(2 * math.pi)
    return per_element.sum(dim=(1, 2, 3))


def gaussian_kl(mean_p: torch.Tensor, mean_q: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(μ_p, σ² I) ‖ N(μ_q, σ² I)) = ‖μ_p − μ_q‖²/(2σ²) per row: shape (B,), float64."""
    diff = mean_p.double() - mean_q.double()
    return diff.pow(2).sum(dim=(1, 2, 3)) / (2 * std.double() ** 2)


@dataclass
class Trajectory:
    """Sampled chains: latents x_{t_0} … x_{t_S} per row, the grid, and each step's log-probability
    under the sampling policy (the "old" policy of PPO's ratio)."""

    latents: torch.Tensor  # (B, S + 1, C, H, W) float32, on the CPU
    timesteps: torch.Tensor  # (S + 1,) long
    log_probs: torch.Tensor  # (B, S) float64

    @property
    def final(self) -> torch.Tensor:
        return self.latents[:, -1]

    @property
    def steps(self) -> int:
        return len(self.timesteps) - 1


def step_means(unet, scheduler, traj: Trajectory, rows: torch.Tensor, steps: torch.Tensor, cond: TextBank,
               guidance: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, σ) of the transitions (row i, step k) -> k + 1 under ``unet``, for paired index tensors
    ``rows`` and ``steps``, in one batched forward (differentiable in the UNet's weights)."""
    x = traj.latents[rows, steps].to(device)
    t, s = traj.timesteps[steps].to(device), traj.timesteps[steps + 1].to(device)
    pred = guided_prediction(unet, x, t, cond.rows(rows), guidance)
    return posterior(scheduler, x, pred, t, s)


@torch.no_grad()
def sample_trajectories(unet, scheduler, cond: TextBank, noise: torch.Tensor, steps: int, guidance: float,
                        generator: torch.Generator, device="cpu") -> Trajectory:
    """Run the stochastic sampler from ``noise`` (B, C, H, W); each step's Gaussian noise is drawn
    on the CPU from ``generator`` (the same chains on any device), and its log-probability recorded."""
    grid = timestep_grid(scheduler, steps)
    x = noise.float().to(device)
    latents, log_probs = [x.cpu()], []
    for k in range(steps):
        t, s = grid[k].expand(len(x)).to(device), grid[k + 1].expand(len(x)).to(device)
        mean, std = posterior(scheduler, x, guided_prediction(unet, x, t, cond, guidance), t, s)
        z = torch.randn(x.shape, generator=generator).to(device)
        x = (mean + std.float().view(-1, 1, 1, 1) * z).float()
        log_probs.append(transition_log_prob(x, mean, std).cpu())
        latents.append(x.cpu())
    return Trajectory(torch.stack(latents, 1), grid, torch.stack(log_probs, 1))
