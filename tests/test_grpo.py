"""Online RL (GRPO) over the stochastic sampler: each step's log-probability against an independent
Gaussian density, the DDPM posterior against diffusers' DDIM (η = 1), the group advantage and the
clipped objective against hand computations, a toy reward moved the right way, the KL to the
reference (zero at step 0, positive after), bit-identical resume, and the rankers-only rule."""

import json
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from scipy.stats import norm

from t2a_lib.align.dpo import make_train_scheduler_like
from t2a_lib.align.grpo import (GRPOConfig, RankerReward, clipped_objective, fit_grpo, group_advantages, grpo_loss,
                                train_grpo)
from t2a_lib.align.sde_sampler import (gaussian_kl, posterior, sample_trajectories, step_means,
                                       timestep_grid, transition_log_prob)
from t2a_lib.model.base_model import assemble, text_bank
from t2a_lib.model.components import make_text_encoder, make_unet, make_vae, model_config
from t2a_lib.scoring.audiotext import AudioTextConfig, AudioTextModel
from t2a_lib.scoring.detector import DetectorConfig, EventDetector
from t2a_lib.scoring.scorers import RoleError, Scorers
from t2a_lib.world.text import build_world_tokenizer

torch.set_num_threads(2)
TINY = model_config("tiny", n_frames=32)  # latents (8, 8, 16): seconds on a loaded CPU
PROMPTS = ["A dog barks, then a siren wails", "Rain falls"]


def tiny_pipe(seed: int = 0):
    torch.manual_seed(seed)
    tok = build_world_tokenizer()
    return assemble(make_vae(TINY), make_text_encoder(TINY, len(tok)).eval(), tok, make_unet(TINY).eval(), None, TINY)


def conditioning(pipe, prompts):
    return text_bank(pipe.text_encoder, pipe.tokenizer, prompts)


class MeanLatent:
    """A toy reward declared a ranker: the final latent's mean (a "louder" clip scores higher)."""

    role = "ranker"

    def __init__(self):
        self.calls = 0

    def __call__(self, latents, prompts):
        self.calls += 1
        assert len(latents) == len(prompts)
        return latents.mean(dim=(1, 2, 3)).numpy()


def fresh_mean_reward(pipe, config, seed=123, per_prompt=4):
    """The toy reward of fresh chains from the pipeline's UNet, the same noise every call."""
    rows = torch.arange(len(PROMPTS)).repeat_interleave(per_prompt)
    noise = torch.randn((len(rows), *pipe.latent_shape()), generator=torch.Generator().manual_seed(seed))
    traj = sample_trajectories(pipe.unet.eval(), make_train_scheduler_like(pipe), conditioning(pipe, PROMPTS).rows(rows),
                               noise, config.sample_steps, config.guidance, torch.Generator().manual_seed(seed + 1))
    return float(traj.final.mean())


def toy_config(**kw):
    base = dict(steps=6, batch_size=2, group_size=4, minibatch_size=4, sample_steps=3, guidance=1.0, lr=3e-3,
                warmup=1, clip_range=0.2, kl_coef=0.0, checkpoint_every=2, seed=3)
    return GRPOConfig(**{**base, **kw})


def ddim(prediction_type):
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          prediction_type=prediction_type, clip_sample=False, set_alpha_to_one=False)
    sched.set_timesteps(10)  # "leading": 900, 800, ..., 0; the step from 500 goes to 400
    return sched


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_posterior_step_is_ddim_with_eta_one_and_its_log_prob_a_closed_form_gaussian(prediction_type):
    sched = ddim(prediction_type)
    g = torch.Generator().manual_seed(0)
    x_t, pred = torch.randn(3, 8, 4, 4, generator=g), torch.randn(3, 8, 4, 4, generator=g)
    t, s = torch.full((3,), 500), torch.full((3,), 400)
    mean, std = posterior(sched, x_t, pred, t, s)
    # diffusers' DDIM step with η = 1: zero noise gives the mean, unit noise the mean plus σ
    zero = sched.step(pred, 500, x_t, eta=1.0, variance_noise=torch.zeros_like(x_t)).prev_sample
    one = sched.step(pred, 500, x_t, eta=1.0, variance_noise=torch.ones_like(x_t)).prev_sample
    np.testing.assert_allclose(mean.numpy(), zero.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose((one - zero).numpy(), std.view(-1, 1, 1, 1).expand_as(x_t).numpy(), rtol=1e-4)
    x_s = mean + std.float().view(-1, 1, 1, 1) * torch.randn(x_t.shape, generator=g)
    expected = [norm.logpdf(x_s[i].double().numpy(), mean[i].double().numpy(), float(std[i])).sum() for i in range(3)]
    np.testing.assert_allclose(transition_log_prob(x_s, mean, std).numpy(), expected, rtol=1e-12)


def test_sampler_records_each_steps_exact_log_prob():
    pipe = tiny_pipe()
    sched, cond = make_train_scheduler_like(pipe), conditioning(pipe, PROMPTS)
    noise = torch.randn((2, *pipe.latent_shape()), generator=torch.Generator().manual_seed(1))
    traj = sample_trajectories(pipe.unet, sched, cond, noise, 4, 3.0, torch.Generator().manual_seed(2))
    assert traj.timesteps.tolist() == [999, 749, 500, 250, 0] == timestep_grid(sched, 4).tolist()
    assert traj.latents.shape == (2, 5, *pipe.latent_shape()) and torch.equal(traj.latents[:, 0], noise)
    for k in range(4):  # every step stochastic (σ > 0, the last one too) and its density exact
        rows, steps = torch.arange(2), torch.full((2,), k)
        with torch.no_grad():
            mean, std = step_means(pipe.unet, sched, traj, rows, steps, cond, 3.0, "cpu")
        assert (std > 0).all()
        x = traj.latents[:, k + 1].double().numpy()
        expected = [norm.logpdf(x[i], mean[i].double().numpy(), float(std[i])).sum() for i in range(2)]
        np.testing.assert_allclose(traj.log_probs[:, k].numpy(), expected, rtol=1e-9)


def test_group_advantages_match_a_hand_computation():
    rewards = [[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [0.0, 0.0, 10.0]]
    sd = math.sqrt(2 / 3)  # population std of 1, 2, 3
    got = group_advantages(rewards, eps=1e-4)
    np.testing.assert_allclose(got[0], [-1 / (sd + 1e-4), 0.0, 1 / (sd + 1e-4)], rtol=1e-12)
    np.testing.assert_array_equal(got[1], [0.0, 0.0, 0.0])  # a tied group teaches nothing
    sd3 = math.sqrt(((10 / 3) ** 2 * 2 + (20 / 3) ** 2) / 3)
    np.testing.assert_allclose(got[2], [-(10 / 3) / (sd3 + 1e-4)] * 2 + [(20 / 3) / (sd3 + 1e-4)], rtol=1e-12)
    np.testing.assert_allclose(group_advantages(rewards, eps=1e-4, clip=1.0)[2], [-0.7071, -0.7071, 1.0], atol=1e-4)
    with pytest.raises(ValueError, match="K >= 2"):
        group_advantages([[1.0], [2.0]])


def test_clipped_objective_and_loss_match_a_hand_computation():
    ratio = torch.tensor([0.5, 1.0, 1.5, 1.5, 0.5], dtype=torch.float64)
    adv = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    log_ratio = ratio.log().requires_grad_(True)
    loss, clipped = clipped_objective(log_ratio, adv, 0.2)
    # -min(ρA, clip(ρ, 0.8, 1.2)A): 0.5 (unclipped), 1, 1.2 (clipped), -1.5 (unclipped), -0.8 (clipped)
    np.testing.assert_allclose(loss.detach().numpy(), [-0.5, -1.0, -1.2, 1.5, 0.8], rtol=1e-12)
    np.testing.assert_array_equal(clipped.numpy(), [0, 0, 1, 0, 1])
    loss.sum().backward()  # a clipped row has no gradient; the others d(−ρA)/d log ρ = −ρA
    np.testing.assert_allclose(log_ratio.grad.numpy(), [-0.5, -1.0, 0.0, 1.5, 0.0], rtol=1e-12)
    # the full loss: log-ratios per element, plus β_KL · KL / D
    cfg = GRPOConfig(steps=1, batch_size=1, group_size=2, minibatch_size=2, checkpoint_every=1, clip_range=0.2,
                     kl_coef=0.5)
    d, old = 4, torch.tensor([-3.0, -3.0, -3.0, -3.0, -3.0], dtype=torch.float64)
    new, kl = old + d * ratio.log(), torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    total, logs = grpo_loss(new, old, adv, kl, d, cfg)
    assert total.item() == pytest.approx(np.mean([-0.5, -1.0, -1.2, 1.5, 0.8]) + 0.5 * np.mean([0, 1, 2, 3, 4]) / 4)
    assert logs["clip_frac"].item() == pytest.approx(0.4) and logs["ratio_dev"].item() == pytest.approx(0.5)


def test_gaussian_kl_is_the_closed_form_of_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mp, mq, std = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g), torch.tensor([0.1, 0.5, 2.0])
    s = std.view(-1, 1, 1, 1).expand_as(mp)
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mp.double(), s.double()),
                                                 torch.distributions.Normal(mq.double(), s.double())).sum((1, 2, 3))
    np.testing.assert_allclose(gaussian_kl(mp, mq, std).numpy(), expected.numpy(), rtol=1e-12)
    assert gaussian_kl(mp, mp, std).abs().max().item() == 0.0


class NegatedMeanLatent(MeanLatent):
    def __call__(self, latents, prompts):
        return -super().__call__(latents, prompts)


def test_updates_move_a_toy_reward_its_way_and_the_kl_starts_at_zero():
    """Two rounds of one on-policy update each: the mean latent of fresh chains (same noise)
    rises under the reward and falls under its negation, so the direction is the reward's, not
    drift; the KL to the reference is exactly zero before the first update and positive after."""
    cfg = toy_config(steps=2, minibatch_size=8, sample_steps=2, checkpoint_every=1)
    before = fresh_mean_reward(tiny_pipe(), cfg)
    after = {}
    for reward in (MeanLatent(), NegatedMeanLatent()):
        pipe = tiny_pipe()
        out = train_grpo(pipe, reward, PROMPTS, cfg, progress=False)
        after[type(reward).__name__] = fresh_mean_reward(pipe, cfg)
        h = out["history"]
        assert h[0]["kl"] == 0.0 and h[1]["kl"] > 0.0  # policy == reference bit for bit, then apart
        assert h[0]["ratio_dev"] < 1e-5 and h[0]["clip_frac"] == 0.0  # each round's first update is on-policy
        assert reward.calls == cfg.steps // cfg.updates_per_round == 2
        assert [x["clips"] for x in h] == [8, 16] and out["sampled_clips"] == 16
    assert after["MeanLatent"] > before + 0.01 and after["NegatedMeanLatent"] < before - 0.01, (before, after)


def test_resume_from_a_checkpoint_is_bit_identical(tmp_path):
    """Two rounds straight, against one round, a "crash", and a fresh process resuming the second
    round from the checkpoint: the same chains are resampled, so the same weights, bit for bit."""
    config = lambda steps: toy_config(steps=steps, minibatch_size=8, sample_steps=1, checkpoint_every=1)  # noqa: E731
    straight = tiny_pipe()
    base = {k: v.clone() for k, v in straight.unet.state_dict().items()}
    whole = train_grpo(straight, MeanLatent(), PROMPTS, config(2), out_dir=tmp_path / "a", progress=False)
    train_grpo(tiny_pipe(), MeanLatent(), PROMPTS, config(1), out_dir=tmp_path / "b", progress=False)
    state_file = tmp_path / "b" / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    state["config"]["steps"] = 2
    state_file.write_text(json.dumps(state))
    resumed, reward = tiny_pipe(), MeanLatent()
    out = train_grpo(resumed, reward, PROMPTS, config(2), out_dir=tmp_path / "b", progress=False)
    assert out["resumed_from"] == 1 and reward.calls == 1  # only the second round was sampled again
    assert out["history"] == whole["history"]
    assert any(not torch.equal(v, base[k]) for k, v in straight.unet.state_dict().items())  # it did train
    for (k, a), (_, b) in zip(straight.unet.state_dict().items(), resumed.unet.state_dict().items()):
        assert torch.equal(a, b), k


def test_checkpoints_fall_between_rounds_and_configs_are_checked():
    with pytest.raises(ValueError, match="checkpoint_every = 3 must be a multiple of the 2 updates"):
        toy_config(checkpoint_every=3)
    with pytest.raises(ValueError, match="minibatch_size"):
        toy_config(minibatch_size=3)
    with pytest.raises(ValueError, match="group_size"):
        toy_config(group_size=1)
    with pytest.raises(ValueError, match="reward must be one of"):
        toy_config(reward="judges")


def tiny_scorers(role):
    torch.manual_seed(0)
    arch = {"ranker": ("conv1d_gru", "transformer"), "judge": ("tcn", "gru")}[role]
    det = EventDetector(DetectorConfig(role=role, arch=arch[0], width=16, hidden=8)).eval()
    text = AudioTextModel(AudioTextConfig(role=role, audio_arch=arch[0], text_arch=arch[1], dim=16, width=16, hidden=8,
                                          text_dim=16)).eval()
    return Scorers(role, det, [text])


def test_the_online_loop_takes_rankers_only_and_never_calls_a_judge(monkeypatch, tmp_path):
    pipe, judges, rankers = tiny_pipe(), tiny_scorers("judge"), tiny_scorers("ranker")
    cfg = toy_config(steps=2, reward="clap+events")
    for wrong in (lambda: train_grpo(pipe, judges, PROMPTS, cfg, progress=False),
                  lambda: RankerReward(pipe, judges, "clap"),
                  lambda: fit_grpo(tmp_path, pipe, judges, PROMPTS, cfg, progress=False)):
        with pytest.raises(RoleError, match="GRPO's reward must use rankers, got 'judge'"):
            wrong()
    assert not any(tmp_path.iterdir())  # refused before anything was written

    class Judged(Exception):
        pass

    def refuse(*args, **kwargs):
        raise Judged("the online loop called a judge")

    import t2a_lib.scoring.scorers as scorers

    monkeypatch.setattr(scorers, "judge_clips", refuse)
    for model, methods in ((judges.detector, ("forward", "analyse")),
                           (judges.audiotext[0], ("forward", "score", "encode_audio", "embed_text"))):
        for method in methods:  # any use of a judge model fails the test
            monkeypatch.setattr(model, method, refuse)
    calls = {"detector": 0, "audiotext": 0}
    for name, model, method in (("detector", rankers.detector, "analyse"), ("audiotext", rankers.audiotext[0], "score")):
        original = getattr(model, method)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(model, method, counted)
    reward = RankerReward(pipe, rankers, cfg.reward)
    out = train_grpo(pipe, reward, PROMPTS, cfg, progress=False)
    assert calls == {"detector": 1, "audiotext": 1}  # the rankers scored the one round
    assert np.isfinite(out["history"][0]["reward_mean"])


def test_fit_grpo_with_lora_trains_once_then_loads_the_same_model(tmp_path, monkeypatch):
    base, rankers = tiny_pipe(), tiny_scorers("ranker")
    before = {k: v.clone() for k, v in base.unet.state_dict().items()}
    cfg = toy_config(steps=2, minibatch_size=8, sample_steps=2, checkpoint_every=1, lora_rank=2, lr=1e-2)
    unet, history = fit_grpo(tmp_path, base, rankers, PROMPTS, cfg, progress=False)
    assert history[0]["kl"] == 0.0 and history[1]["kl"] > 0.0  # LoRA starts as the identity
    assert history[-1]["clips"] == cfg.sampled_clips() == 16
    assert all(torch.equal(v, before[k]) for k, v in base.unet.state_dict().items())  # the base is untouched
    changed = [k for k, v in unet.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(k.split(".")[-2] in ("to_q", "to_k", "to_v", "0") for k in changed)  # fused adapters only

    def refuse(*args, **kwargs):
        raise AssertionError("a cached fit must not sample or score again")

    monkeypatch.setattr(rankers.audiotext[0], "score", refuse)  # the "clap" reward's ranker
    again, history_again = fit_grpo(tmp_path, base, rankers, PROMPTS, cfg, progress=False)
    assert history_again == history
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in unet.state_dict().items())


def test_a_reward_that_is_not_one_finite_number_per_clip_is_refused():
    class Broken(MeanLatent):
        def __init__(self, fault):
            super().__init__()
            self.fault = fault

        def __call__(self, latents, prompts):
            r = super().__call__(latents, prompts)
            return r[:-1] if self.fault == "short" else np.where(np.arange(len(r)) == 5, np.nan, r)

    cfg = toy_config(steps=2, sample_steps=1)
    with pytest.raises(ValueError, match=r"round 0: .* got shape \(7,\) for 8 clips"):
        train_grpo(tiny_pipe(), Broken("short"), PROMPTS, cfg, progress=False)
    with pytest.raises(ValueError, match="not finite for"):
        train_grpo(tiny_pipe(), Broken("nan"), PROMPTS, cfg, progress=False)


def test_the_benchmark_trains_from_a_release_folder_with_its_rankers(tmp_path, capsys):
    from t2a_lib.align import grpo_bench

    tiny_pipe().save_pretrained(tmp_path / "base" / "pipeline")
    tiny_scorers("ranker").save(tmp_path / "scorers" / "rankers")
    tiny_scorers("judge").save(tmp_path / "scorers" / "judges")  # present, never loaded
    grpo_bench.main(["--release", str(tmp_path), "--rounds", "2", "--prompts", "2", "--group", "2",
                     "--sample-steps", "1", "--minibatch", "4", "--json", str(tmp_path / "bench.json")])
    rows = json.loads((tmp_path / "bench.json").read_text())["rounds"]
    assert [r["clips"] for r in rows] == [4, 8] and [r["round"] for r in rows] == [0, 1]
    assert rows[0]["kl_after"] == 0.0 and rows[1]["kl_after"] > 0.0
    assert all(np.isfinite(r["reward_mean"]) and r["seconds_per_clip"] > 0 for r in rows)
    assert len(capsys.readouterr().out.strip().splitlines()) == 2  # one printed line per round
