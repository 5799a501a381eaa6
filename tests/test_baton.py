"""BATON: prompts, simulated annotators, reward model, AUC, reward-weighted fine-tuning."""

import numpy as np
import pytest
import torch

from t2a_lib.audio.manifest import read_manifest
from t2a_lib.feedback.baton import BatonConfig, train_reward_weighted
from t2a_lib.model.components import MiniTangoConfig, make_train_scheduler, make_unet
from t2a_lib.model.diffusion import TextBank, diffusion_loss, sample_timesteps, step_generator, batch_indices
from t2a_lib.scoring.detector import DetectorConfig, EventDetector
from t2a_lib.world.captions import parse_caption
from t2a_lib.feedback.reward import (SimulatedAnnotator, baton_prompts, roc_auc, split_by_prompt, train_reward_model,
                            reward, write_feedback)
from t2a_lib.scoring.scorers import RoleError

torch.set_num_threads(2)
TINY = MiniTangoConfig(unet_channels=(16, 16, 16), unet_head_dim=8, text_dim=32)


def test_prompts_have_the_papers_shapes_and_respect_exclusions():
    p = baton_prompts(20, 20, seed=0)
    assert (p.task == "integrity").sum() == 20 and (p.task == "temporal").sum() == 20
    assert p.caption.is_unique
    for row in p.itertuples():
        spec = parse_caption(row.caption)
        assert len(spec.all_labels) == (2 if row.task == "integrity" else 3)
        if row.task == "temporal":
            assert spec.time_order == row.labels
    q = baton_prompts(20, 20, seed=1, exclude=set(p.caption))
    assert not set(q.caption) & set(p.caption)


def test_roc_auc_matches_the_trapezoid_area_of_the_roc_curve():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.4
    s = y * 0.5 + rng.random(300)
    order = np.argsort(-s)
    tpr = np.r_[0, np.cumsum(y[order]) / y.sum()]
    fpr = np.r_[0, np.cumsum(~y[order]) / (~y).sum()]
    assert roc_auc(y, s) == pytest.approx(np.trapezoid(tpr, fpr), abs=1e-9)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5  # ties count half
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_split_by_prompt_keeps_prompts_whole():
    prompts = [f"p{i % 10}" for i in range(40)]
    mask = split_by_prompt(prompts, 0.3, seed=0)
    assert not {p for p, m in zip(prompts, mask) if m} & {p for p, m in zip(prompts, mask) if not m}
    assert 0 < mask.mean() < 1


def test_reward_model_learns_a_separable_problem():
    gen = torch.Generator().manual_seed(0)  # its own stream: independent of test order
    a, t = torch.randn(1200, 8, generator=gen), torch.randn(1200, 8, generator=gen)
    y = ((a[:, 0] * t[:, 0]) > 0).float().numpy()  # depends on the audio-text *pair* (an XOR of signs)
    model, losses = train_reward_model(a[:1000], t[:1000], y[:1000], epochs=40, lr=3e-3, seed=0)
    r = reward(model, a[1000:], t[1000:])
    # no function of the audio alone (or the text alone) beats chance here; the MLP must combine them
    assert ((r > 0.5) == y[1000:]).mean() > 0.8
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert ((r >= 0) & (r <= 1)).all()


def test_simulated_annotators_come_from_the_ranker_family_and_flip_labels():
    judge = EventDetector(DetectorConfig(role="judge", width=16, hidden=8))
    with pytest.raises(RoleError):
        SimulatedAnnotator(judge)
    ranker = EventDetector(DetectorConfig(role="ranker", arch="conv1d_gru", width=16, hidden=8)).eval()
    prompts = baton_prompts(30, 30, seed=0)
    mels = torch.randn(60, 64, 256) - 6
    clean = SimulatedAnnotator(ranker, flip=0.0).label(mels, prompts)
    noisy = SimulatedAnnotator(ranker, flip=0.5, seed=1).label(mels, prompts)
    assert set(np.unique(clean)) <= {0.0, 1.0}
    assert 0.3 < (clean != noisy).mean() < 0.7


def test_feedback_files_round_trip_in_both_anchor_formats(tmp_path):
    locs = [str(tmp_path / f"{i}.wav") for i in range(3)]
    write_feedback(tmp_path / "hd.jsonl", locs, ["A dog barks"] * 3, [1, 0, 1], ["a", "b", "c"])
    write_feedback(tmp_path / "rd.jsonl", locs, ["A dog barks"] * 3, [0.2, 0.9, 0.5], ["a", "b", "c"], field="SED")
    assert [r.feedback for r in read_manifest(tmp_path / "hd.jsonl", kind="feedback")] == [1, 0, 1]
    assert '"SED"' in (tmp_path / "rd.jsonl").read_text()
    assert [r.feedback for r in read_manifest(tmp_path / "rd.jsonl", kind="feedback")] == [0.2, 0.9, 0.5]


def _bank(n, seed):
    g = torch.Generator().manual_seed(seed)
    return TextBank(torch.randn(n, 4, 32, generator=g), torch.ones(n, 4, dtype=torch.long),
                    torch.zeros(1, 4, 32), torch.tensor([[1, 0, 0, 0]]))


def test_reward_weighted_loss_is_beta_pretrain_plus_mean_r_times_loss():
    torch.manual_seed(0)
    unet, sched = make_unet(TINY), make_train_scheduler(TINY)
    g0 = torch.Generator().manual_seed(5)
    pre, fb = torch.randn(6, 8, 64, 16, generator=g0), torch.randn(4, 8, 64, 16, generator=g0)
    pre_t, fb_t, r = _bank(6, 1), _bank(4, 2), torch.tensor([1.0, 0.0, 0.5, 1.0])
    cfg = BatonConfig(steps=1, batch_size=4, pretrain_batch_size=3, p_uncond=0.0, lr=0.0, seed=3)
    ref = make_unet(TINY)
    ref.load_state_dict(unet.state_dict())
    out = train_reward_weighted(unet, sched, pre, pre_t, fb, fb_t, r, cfg, progress=False)
    # independent: replay step 0's draws in the same order and combine by hand
    g = step_generator(cfg.seed, 0)
    pre_idx = batch_indices(6, 3, cfg.seed + 1, 0)
    fb_idx = batch_indices(4, 4, cfg.seed, 0)

    def term(x, bank, idx):
        noise = torch.randn(x[idx].shape, generator=g)
        t = sample_timesteps(len(idx), g, 0.0)
        torch.rand(len(idx), generator=g)  # the dropout draw
        return diffusion_loss(ref.eval(), sched, x[idx], bank.states[idx], bank.mask[idx], noise, t, 5.0)

    with torch.no_grad():
        l_pre, l_fb = term(pre, pre_t, pre_idx).mean(), (r[fb_idx] * term(fb, fb_t, fb_idx)).mean()
    assert out["history"][0]["loss"] == pytest.approx((0.25 * l_pre + l_fb).item(), rel=1e-4)
    with pytest.raises(ValueError, match="one number in"):
        train_reward_weighted(unet, sched, pre, pre_t, fb, fb_t, torch.tensor([1.0, 2.0, 0.0, 0.0]), cfg, progress=False)


def test_auc_interval_is_stratified_and_contains_the_estimate():
    from t2a_lib.feedback.reward import auc_ci

    rng = np.random.default_rng(1)
    y = np.r_[np.ones(5), np.zeros(40)].astype(bool)  # few positives: plain resampling would lose them
    s = y * 0.3 + rng.random(45)
    est, lo, hi = auc_ci(y, s, n_boot=300, seed=0)
    assert est == pytest.approx(roc_auc(y, s)) and lo <= est <= hi and hi - lo > 0
    assert all(np.isnan(auc_ci(np.ones(4, bool), rng.random(4))))
