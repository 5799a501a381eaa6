"""What stays float32 under bf16 autocast (t2a_lib.model.precision.FLOAT32), each place checked under
autocast against a float32/float64 computation of the same quantity."""

import numpy as np
import pytest
import torch

from t2a_lib.align.dpo import dpo_loss
from t2a_lib.feedback.kto import kto_loss
from t2a_lib.model.base_model import assemble
from t2a_lib.model.components import make_text_encoder, make_train_scheduler, make_unet, make_vae, model_config
from t2a_lib.model.diffusion import per_sample_mse
from t2a_lib.model.precision import FLOAT32, sampling_precision
from t2a_lib.world.text import build_world_tokenizer

TINY = model_config("tiny")
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def test_the_float32_set_is_the_three_named_places():
    assert set(FLOAT32) == {"vae_decode", "loss_reductions", "dpo_logsigmoid_argument", "kto_sigmoid_argument"}


def test_loss_reduction_is_float32_under_autocast():
    torch.manual_seed(0)
    unet, sched = make_unet(TINY).eval(), make_train_scheduler(TINY)
    x0, noise = torch.randn(3, 8, 16, 16), torch.randn(3, 8, 16, 16)
    states, mask, t = torch.randn(3, 5, TINY.text_dim), torch.ones(3, 5, dtype=torch.long), torch.tensor([10, 500, 900])
    with torch.no_grad(), torch.autocast(**BF16):
        mse = per_sample_mse(unet, sched, x0, states, mask, noise, t)
        noisy = sched.add_noise(x0, noise, t)
        pred = unet(torch.cat([noisy, torch.linspace(-1, 1, 16).view(1, 1, 16, 1).expand(3, 1, 16, 16)], 1), t,
                    encoder_hidden_states=states, encoder_attention_mask=mask).sample
    assert pred.dtype == torch.bfloat16  # the UNet did run in bf16
    assert mse.dtype == torch.float32
    target = sched.get_velocity(x0, noise, t).double()
    expected = (pred.double() - target).pow(2).mean(dim=(1, 2, 3))
    np.testing.assert_allclose(mse.double().numpy(), expected.numpy(), rtol=1e-6)


def test_dpo_argument_is_float32_under_autocast():
    g = torch.Generator().manual_seed(0)
    mw, ml, rw, rl = (0.1 + 0.01 * torch.rand(64, generator=g) for _ in range(4))
    with torch.autocast(**BF16):
        loss, acc = dpo_loss(*(v.to(torch.bfloat16) for v in (mw, ml, rw, rl)), 2000.0)
        loss32, _ = dpo_loss(mw, ml, rw, rl, 2000.0)
    assert loss.dtype == loss32.dtype == torch.float32
    z = -1000.0 * ((mw.double() - ml.double()) - (rw.double() - rl.double()))
    np.testing.assert_allclose(loss32.double().numpy(), torch.nn.functional.softplus(-z).numpy(), atol=2e-6)
    # bf16 inputs are widened before the difference: the loss is the float32 formula of the rounded inputs
    zr = -1000.0 * ((mw.bfloat16().double() - ml.bfloat16().double()) - (rw.bfloat16().double() - rl.bfloat16().double()))
    np.testing.assert_allclose(loss.double().numpy(), torch.nn.functional.softplus(-zr).numpy(), atol=2e-6)


def test_kto_argument_is_float32_under_autocast():
    g = torch.Generator().manual_seed(1)
    mse, ref = (0.1 + 0.01 * torch.rand(64, generator=g) for _ in range(2))
    y = torch.where(torch.rand(64, generator=g) < 0.5, 1.0, -1.0)
    with torch.autocast(**BF16):
        loss, _ = kto_loss(mse.to(torch.bfloat16), ref.to(torch.bfloat16), y, 1000.0)
        loss32, _ = kto_loss(mse, ref, y, 1000.0)
    assert loss.dtype == loss32.dtype == torch.float32
    m, r = mse.bfloat16().double(), ref.bfloat16().double()  # the rounded inputs, widened before the difference
    z = (r - m).mean().clamp(min=0)
    np.testing.assert_allclose(loss.double().numpy(), (1 - torch.sigmoid(y.double() * 1000 * ((r - m) - z))).numpy(),
                               atol=2e-6)


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    tok = build_world_tokenizer()
    return assemble(make_vae(TINY), make_text_encoder(TINY, len(tok)), tok, make_unet(TINY), None, TINY)


def test_vae_decode_is_float32_under_autocast(pipe):
    latents = torch.randn(2, 8, 16, 16)
    plain = pipe.latents_to_mel(latents)
    with torch.autocast(**BF16):
        autocast = pipe.latents_to_mel(latents)
    np.testing.assert_array_equal(plain, autocast)  # a bf16 decode would differ by ~1e-2


def test_sampling_precision(pipe):
    assert sampling_precision(torch.device("cpu")) == "no"  # CPU default: float32, numbers unchanged
    with pytest.raises(ValueError):
        sampling_precision(torch.device("cpu"), "fp16")
    run = lambda mp: pipe(["A dog barks"], num_inference_steps=3, generator=torch.Generator().manual_seed(0),  # noqa: E731
                          output="mel", progress=False, mixed_precision=mp).mels
    default, plain, bf16 = run(None), run("no"), run("bf16")
    np.testing.assert_array_equal(default, plain)
    assert not np.array_equal(plain, bf16) and np.abs(plain - bf16).mean() < 0.1 * np.abs(plain).mean()
