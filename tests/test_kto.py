"""Diffusion-KTO: the loss against numbers computed by hand (reference point, λ weights, sign),
labels from rewards, and a short fine-tune that moves liked and disliked clips apart."""

import math

import numpy as np
import pytest
import torch

from t2a_lib.feedback.kto import KTOConfig, kto_loss, labels_from_rewards, reference_point, train_kto
from t2a_lib.model.components import MiniTangoConfig, make_train_scheduler, make_unet
from t2a_lib.model.diffusion import TextBank, per_sample_mse

torch.set_num_threads(2)
TINY = MiniTangoConfig(unet_channels=(16, 16, 16), unet_head_dim=8, text_dim=32)


def test_kto_loss_matches_a_hand_computation():
    # g = ref − mse = [+0.001, −0.001, 0, +0.002]; z̄ = mean g = 0.0005
    # inside = y·β·(g − z̄) with β = 1000: [+0.5, −1.5, +0.5, −1.5]
    # loss = λ_y·(1 − σ(inside)), λ_+ = 1, λ_− = 2; σ(0.5) = 0.6224593312, σ(−1.5) = 0.1824255238
    mse = torch.tensor([0.010, 0.012, 0.011, 0.009], dtype=torch.float64)
    ref = torch.full((4,), 0.011, dtype=torch.float64)
    y = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, acc = kto_loss(mse, ref, y, beta=1000.0, lambda_desirable=1.0, lambda_undesirable=2.0)
    np.testing.assert_allclose(loss.numpy(), [0.3775406688, 0.8175744762, 0.7550813376, 1.6351489524], atol=1e-9)
    np.testing.assert_array_equal(acc.numpy(), [1, 0, 1, 0])
    assert reference_point(mse, ref).item() == pytest.approx(0.0005)


def test_reference_point_is_clamped_at_zero_and_detached():
    mse = torch.tensor([0.02, 0.03], requires_grad=True)
    ref = torch.tensor([0.01, 0.01])
    z = reference_point(mse, ref)  # mean(ref − mse) = −0.015 < 0
    assert z.item() == 0.0 and not z.requires_grad
    # with z̄ = 0: inside = y·β·(ref − mse) = [−10, +20] for y = [+1, −1], β = 1000
    loss, _ = kto_loss(mse, ref, torch.tensor([1.0, -1.0]), beta=1000.0)
    expected = [1 - 1 / (1 + math.exp(10)), 1 - 1 / (1 + math.exp(-20))]
    np.testing.assert_allclose(loss.detach().numpy(), expected, rtol=1e-5, atol=1e-7)


def test_sign_convention_and_initial_value():
    ref = torch.tensor([0.010, 0.010])
    y = torch.tensor([1.0, -1.0])
    # policy = reference: every clip's loss is λ_y / 2
    loss, _ = kto_loss(ref.clone(), ref, y, beta=1000.0, lambda_desirable=1.0, lambda_undesirable=1.5)
    np.testing.assert_allclose(loss.numpy(), [0.5, 0.75])
    # a lower error than the reference on a liked clip lowers its loss; on a disliked clip raises it
    lower = torch.tensor([0.009, 0.009])
    loss_lower, _ = kto_loss(lower, ref, y, beta=1000.0, z_ref=0.0)
    assert loss_lower[0] < 0.5 < loss_lower[1]
    # descent lowers the liked clip's error and raises the disliked clip's
    mse = torch.tensor([0.010, 0.010], requires_grad=True)
    kto_loss(mse, ref, y, beta=1000.0)[0].sum().backward()
    assert mse.grad[0] > 0 and mse.grad[1] < 0


def test_the_reference_point_is_the_batch_mean_so_it_couples_the_clips():
    ref = torch.full((3,), 0.010)
    y = torch.tensor([1.0, 1.0, -1.0])
    a, _ = kto_loss(torch.tensor([0.009, 0.010, 0.010]), ref, y, beta=1000.0)
    b, _ = kto_loss(torch.tensor([0.009, 0.007, 0.010]), ref, y, beta=1000.0)
    assert b[0] > a[0]  # the same clip, the same errors: a higher reference point makes it harder


def test_labels_must_be_signs_and_rewards_become_labels():
    with pytest.raises(ValueError, match="\\+1"):
        kto_loss(torch.zeros(2), torch.zeros(2), torch.tensor([1.0, 0.0]), beta=1.0)
    assert labels_from_rewards([0.0, 1.0, 0.49, 0.5]).tolist() == [-1.0, 1.0, -1.0, 1.0]
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        labels_from_rewards([1.2])


def _clips(n=8, length=5, dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = TextBank(torch.randn(n, length, dim, generator=g), torch.ones(n, length, dtype=torch.long),
                    torch.zeros(1, length, dim), torch.tensor([[1, 0, 0, 0, 0]]))
    return torch.randn(n, 8, 64, 16, generator=g), text, torch.tensor([1.0, -1.0] * (n // 2))


def test_training_fits_liked_clips_better_than_disliked_ones_relative_to_the_reference():
    torch.manual_seed(0)
    unet, sched = make_unet(TINY), make_train_scheduler(TINY)
    latents, text, y = _clips()
    out = train_kto(unet, sched, latents, text, y, KTOConfig(steps=12, batch_size=8, lr=5e-4, warmup=1, seed=1),
                    progress=False)
    h = out["history"]
    assert h[0]["kto_loss"] == pytest.approx(0.5, abs=1e-5) and h[0]["z_ref"] == 0.0
    assert h[0]["mse"] == pytest.approx(h[0]["ref_mse"], rel=1e-5)
    g = torch.Generator().manual_seed(99)
    noise, t = torch.randn(latents.shape, generator=g), torch.randint(100, 900, (len(latents),), generator=g)
    torch.manual_seed(0)
    ref = make_unet(TINY).eval()
    with torch.no_grad():
        shift = (per_sample_mse(unet, sched, latents, text.states, text.mask, noise, t)
                 - per_sample_mse(ref, sched, latents, text.states, text.mask, noise, t))
    assert shift[y > 0].mean() < shift[y < 0].mean()
