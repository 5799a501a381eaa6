"""Diffusion-DPO: the loss against its formula, ln 2 at initialisation, gradient direction, LoRA, the
Diffusion-SDPO winner safeguard."""

import math

import numpy as np
import pytest
import torch

from t2a_lib.model.components import MiniTangoConfig, make_train_scheduler, make_unet
from t2a_lib.model.diffusion import TextBank, per_sample_mse
from t2a_lib.align.dpo import (DPOConfig, PairBank, add_lora, dpo_loss, reference_of, safeguard_scale, scale_gradient,
                         train_dpo)

torch.set_num_threads(2)
TINY = MiniTangoConfig(unet_channels=(16, 16, 16), unet_head_dim=8, text_dim=32)


def test_dpo_loss_matches_an_independent_computation():
    rng = np.random.default_rng(0)
    mw, ml, rw, rl = (rng.uniform(0, 0.02, 64) for _ in range(4))
    beta = 2000.0
    loss, acc = dpo_loss(*(torch.tensor(v, dtype=torch.float64) for v in (mw, ml, rw, rl)), beta)
    z = -0.5 * beta * ((mw - ml) - (rw - rl))
    expected = np.log1p(np.exp(-z))  # -log sigmoid(z)
    np.testing.assert_allclose(loss.numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(acc.numpy(), (z > 0).astype(float))
    # policy == reference -> ln 2 exactly, whatever the errors
    same = torch.tensor(mw)
    assert torch.allclose(dpo_loss(same, same * 2, same, same * 2, beta)[0], torch.tensor(math.log(2), dtype=same.dtype))


def test_dpo_gradient_lowers_the_winners_error_relative_to_the_losers():
    mw, ml = torch.tensor([0.010], requires_grad=True), torch.tensor([0.012], requires_grad=True)
    loss, _ = dpo_loss(mw, ml, torch.tensor([0.011]), torch.tensor([0.011]), 2000.0)
    loss.sum().backward()
    assert mw.grad.item() > 0 and ml.grad.item() < 0  # descent lowers m_w and raises m_l
    assert mw.grad.item() == pytest.approx(-ml.grad.item())


def _pairs(n=8, length=5, dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = TextBank(torch.randn(n, length, dim, generator=g), torch.ones(n, length, dtype=torch.long),
                    torch.zeros(1, length, dim), torch.tensor([[1, 0, 0, 0, 0]]))
    return PairBank(torch.randn(n, 8, 64, 16, generator=g), torch.randn(n, 8, 64, 16, generator=g), text)


@pytest.mark.parametrize("lora_rank", [None, 4])
def test_first_step_is_ln2_and_training_raises_implicit_accuracy(lora_rank):
    torch.manual_seed(0)
    unet, sched, pairs = make_unet(TINY), make_train_scheduler(TINY), _pairs()
    cfg = DPOConfig(steps=12, batch_size=8, lr=2e-3 if lora_rank else 5e-4, warmup=1, lora_rank=lora_rank, seed=1)
    out = train_dpo(unet, sched, pairs, cfg, progress=False)
    h = out["history"]
    assert h[0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert h[0]["mse_w"] == pytest.approx(h[0]["ref_w"], rel=1e-5)
    # on a fixed batch the policy now fits winners better than losers, relative to the reference
    g = torch.Generator().manual_seed(99)
    noise, t = torch.randn(8, 8, 64, 16, generator=g), torch.randint(100, 900, (8,), generator=g)
    s, m = pairs.text.states, pairs.text.mask
    with torch.no_grad():
        mw, ml = (per_sample_mse(unet, sched, x, s, m, noise, t) for x in (pairs.winners, pairs.losers))
        ctx = reference_of(unet, None) if lora_rank else None
        if lora_rank:
            with ctx as ref:
                rw, rl = (per_sample_mse(ref, sched, x, s, m, noise, t) for x in (pairs.winners, pairs.losers))
        else:
            torch.manual_seed(0)
            ref = make_unet(TINY).eval()
            rw, rl = (per_sample_mse(ref, sched, x, s, m, noise, t) for x in (pairs.winners, pairs.losers))
    margin = ((mw - ml) - (rw - rl)).mean().item()
    assert margin < 0, margin
    assert np.mean([x["implicit_acc"] for x in h[-4:]]) > 0.5


def test_lora_reference_is_the_same_unet_with_adapters_off():
    torch.manual_seed(0)
    unet = make_unet(TINY)
    base = {k: v.clone() for k, v in unet.state_dict().items()}
    add_lora(unet, 4)
    trainable = [n for n, p in unet.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)  # make the adapters matter
    x, t, s = torch.randn(2, 9, 64, 16), torch.tensor([10, 500]), torch.randn(2, 4, 32)  # 8 latent + time channel
    plain = make_unet(TINY)
    plain.load_state_dict(base)
    with torch.no_grad():
        with reference_of(unet, None) as ref:
            off = ref(x, t, encoder_hidden_states=s).sample
        on = unet(x, t, encoder_hidden_states=s).sample
        expected = plain(x, t, encoder_hidden_states=s).sample
    assert torch.allclose(off, expected, atol=1e-5)
    assert not torch.allclose(on, expected, atol=1e-4)


def test_sft_phase_then_dpo_and_config_checks():
    torch.manual_seed(0)
    out = train_dpo(make_unet(TINY), make_train_scheduler(TINY), _pairs(),
                    DPOConfig(steps=4, batch_size=4, sft_first_steps=2, seed=0), progress=False)
    assert [h["phase"] for h in out["history"]] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="loss must be"):
        DPOConfig(loss="ppo")


def test_safeguard_scale_matches_hand_computations():
    e_w = torch.tensor([[1.0, 0.0]])
    # <e_l, e_w> = 1, ||e_w||² = 1: λ = (1 − μ)·1/1
    assert safeguard_scale(e_w, torch.tensor([[1.0, 1.0]]), mu=0.5).item() == pytest.approx(0.5)
    assert safeguard_scale(e_w, torch.tensor([[1.0, 1.0]]), mu=0.9).item() == pytest.approx(0.1)
    # <e_l, e_w> = 4: λ = 0.5·1/4
    assert safeguard_scale(e_w, torch.tensor([[4.0, -3.0]]), mu=0.5).item() == pytest.approx(0.125)
    # opposed or orthogonal gradients: nothing to guard against
    assert safeguard_scale(e_w, torch.tensor([[-1.0, 2.0]]), mu=0.5).item() == 1.0
    assert safeguard_scale(e_w, torch.tensor([[0.0, 2.0]]), mu=0.5).item() == 1.0
    # the bound above 1 is clipped: (1 − 0)·1/0.5 = 2 -> 1
    assert safeguard_scale(e_w, torch.tensor([[0.5, 9.0]]), mu=0.0).item() == 1.0
    with pytest.raises(ValueError, match="mu"):
        safeguard_scale(e_w, e_w, mu=1.5)


def test_safeguarded_step_cannot_raise_the_winners_error_to_first_order():
    g = torch.Generator().manual_seed(0)
    for mu in (0.0, 0.5, 0.9):
        for _ in range(20):
            e_w = torch.randn(4, 3, 5, 2, generator=g, dtype=torch.float64)
            e_l = 0.8 * e_w + 0.5 * torch.randn(4, 3, 5, 2, generator=g, dtype=torch.float64)
            lam = safeguard_scale(e_w, e_l, mu).double()
            # the output-space step −∇A + λ∇B (∇A ∝ e_w, ∇B ∝ e_l) against ∇A
            change = ((-e_w + lam * e_l) * e_w).sum()
            assert change <= -mu * e_w.pow(2).sum() + 1e-5 * e_w.pow(2).sum()  # λ is float32


def test_scale_gradient_keeps_the_value_and_scales_the_losers_gradient():
    mw, rw, rl = torch.tensor([0.010]), torch.tensor([0.011]), torch.tensor([0.011])
    plain = torch.tensor([0.012], requires_grad=True)
    guarded = torch.tensor([0.012], requires_grad=True)
    a, _ = dpo_loss(mw, plain, rw, rl, 2000.0)
    b, _ = dpo_loss(mw, scale_gradient(guarded, torch.tensor(0.25)), rw, rl, 2000.0)
    assert a.item() == b.item()
    a.sum().backward()
    b.sum().backward()
    assert guarded.grad.item() == pytest.approx(0.25 * plain.grad.item())


def test_safeguarded_training_logs_the_loser_scale():
    torch.manual_seed(0)
    out = train_dpo(make_unet(TINY), make_train_scheduler(TINY), _pairs(),
                    DPOConfig(steps=3, batch_size=4, lr=1e-3, warmup=1, safeguard=True, seed=0), progress=False)
    scales = [h["loser_scale"] for h in out["history"]]
    assert out["history"][0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert all(0.0 <= s <= 1.0 for s in scales) and min(scales) < 1.0
    with pytest.raises(ValueError, match="safeguard_mu"):
        DPOConfig(safeguard_mu=-0.1)
