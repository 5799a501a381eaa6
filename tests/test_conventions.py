"""The papers' tools' metric and loss conventions, offered beside ours and checked against
independent computations: audioldm_eval's smoothed KL, Tango's min-SNR weighting for
v-prediction, and what event F1 returns where sed_eval returns NaN."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from t2a_lib.feedback.baton import BatonConfig
from t2a_lib.model.diffusion import TrainConfig, diffusion_loss, min_snr_weight
from t2a_lib.model.tango_checkpoint import TANGO_SCHEDULER_CONFIG
from t2a_lib.scoring.event_metrics import event_f1
from t2a_lib.scoring.metrics import kl_divergence


def softmax(x):
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def audioldm_eval_kl_loops(gen_logits, ref_logits, eps):
    """audioldm_eval's metrics/kl.py, written out: kl_div(log(softmax(gen) + EPS), softmax(ref),
    reduction="sum") / n = (1/n) Σ_i Σ_c p log(p / (q + EPS)), p = softmax(ref), q = softmax(gen)."""
    total = 0.0
    for g, r in zip(gen_logits, ref_logits):
        q = np.exp(g - g.max()) / np.exp(g - g.max()).sum()
        p = np.exp(r - r.max()) / np.exp(r - r.max()).sum()
        total += sum(pc * (np.log(pc) - np.log(qc + eps)) for pc, qc in zip(p, q))
    return total / len(gen_logits)


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)  # sharp logits, so many q are far below eps = 1e-6
    return rng.normal(0, 6, (9, 527)), rng.normal(0, 6, (9, 527))


def test_kl_with_eps_equals_audioldm_eval_to_1e_9(logits):
    ref, gen = logits
    ours = kl_divergence(ref, gen, eps=1e-6)
    assert abs(ours - audioldm_eval_kl_loops(gen, ref, 1e-6)) < 1e-9
    as_torch = torch.nn.functional.kl_div((torch.from_numpy(gen).softmax(1) + 1e-6).log(),
                                          torch.from_numpy(ref).softmax(1), reduction="sum") / len(gen)
    assert abs(ours - float(as_torch)) < 1e-9
    per_clip = kl_divergence(ref, gen, eps=1e-6, per_clip=True)
    assert per_clip.shape == (9,) and abs(per_clip.mean() - ours) < 1e-12


def test_kl_eps_is_an_option_and_changes_the_number(logits):
    ref, gen = logits
    plain = kl_divergence(ref, gen)
    assert plain == kl_divergence(ref, gen, eps=None)  # the default is untouched
    p, q = softmax(ref), softmax(gen)
    assert abs(plain - np.mean((p * np.log(p / np.clip(q, 1e-12, 1))).sum(1))) < 1e-9
    assert plain - kl_divergence(ref, gen, eps=1e-6) > 1e-3  # smoothing caps log(1/q) at log(1/eps)


def test_kl_eps_follows_direction_and_probs(logits):
    ref, gen = logits
    p, q = softmax(ref), softmax(gen)
    swapped = np.mean((q * np.log(q / (p + 1e-6))).sum(1))
    assert abs(kl_divergence(ref, gen, direction="gen||ref", eps=1e-6) - swapped) < 1e-9
    assert abs(kl_divergence(p, q, form="probs", eps=1e-6) - kl_divergence(ref, gen, eps=1e-6)) < 1e-9
    zero = np.array([[0.0, 1.0]])  # 0 log 0 counts 0
    assert abs(kl_divergence(zero, np.array([[0.5, 0.5]]), form="probs", eps=1e-6) - np.log(1 / 0.500001)) < 1e-12


@pytest.mark.parametrize("kw, match", [({"form": "sigmoid", "eps": 1e-6}, "categorical"),
                                       ({"eps": 0.0}, "positive"), ({"eps": -1e-6}, "positive")])
def test_kl_eps_refuses_what_it_does_not_mean(logits, kw, match):
    ref, gen = logits
    if kw.get("form") == "sigmoid":
        ref, gen = 1 / (1 + np.exp(-ref)), 1 / (1 + np.exp(-gen))
    with pytest.raises(ValueError, match=match):
        kl_divergence(ref, gen, **kw)


# ------------------------------------------------------------------------------- min-SNR


def hand_snr(t):
    """SD 2.1's scaled-linear betas 0.00085 .. 0.012 over 1000 steps, in float64."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    ac = np.cumprod(1 - betas)[t]
    return ac / (1 - ac)


T = np.array([0, 10, 120, 250, 500, 999])


def test_min_snr_weightings_against_a_hand_computation():
    sched = DDPMScheduler(**TANGO_SCHEDULER_CONFIG)  # v-prediction, as Tango
    s, t = hand_snr(T), torch.from_numpy(T)
    paper = min_snr_weight(sched, t, 5.0, "paper").double().numpy()
    tango = min_snr_weight(sched, t, 5.0, "tango").double().numpy()
    # the scheduler's ᾱ is float32: 1 - ᾱ near t = 0 keeps about 4-5 digits
    np.testing.assert_allclose(paper, np.minimum(s, 5) / (s + 1), rtol=1e-4)
    np.testing.assert_allclose(tango, np.minimum(s, 5) / s, rtol=1e-4)
    assert tango[-1] == pytest.approx(1.0) and paper[-1] < 0.01  # pure noise: SNR ≈ 0.0047 < γ
    np.testing.assert_array_equal(min_snr_weight(sched, t, 5.0).numpy(), paper)  # default: the paper's
    assert torch.equal(min_snr_weight(sched, t, None, "tango"), torch.ones(len(T)))


def test_epsilon_prediction_is_the_same_under_both():
    sched = DDPMScheduler(**{**TANGO_SCHEDULER_CONFIG, "prediction_type": "epsilon"})
    t = torch.from_numpy(T)
    assert torch.equal(min_snr_weight(sched, t, 5.0, "paper"), min_snr_weight(sched, t, 5.0, "tango"))
    with pytest.raises(ValueError, match="min_snr_weighting"):
        min_snr_weight(sched, t, 5.0, "hang")


def test_diffusion_loss_carries_the_weighting():
    sched = DDPMScheduler(**TANGO_SCHEDULER_CONFIG)
    unet = lambda x, t, **kw: SimpleNamespace(sample=torch.zeros_like(x))  # noqa: E731
    unet.config = SimpleNamespace(in_channels=4)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 8, 4, generator=g), torch.randn(3, 4, 8, 4, generator=g)
    t = torch.tensor([5, 300, 900])
    args = (unet, sched, x0, None, None, noise, t, 5.0)
    ratio = diffusion_loss(*args, min_snr_weighting="tango") / diffusion_loss(*args)
    s = torch.from_numpy(hand_snr(t.numpy()))
    torch.testing.assert_close(ratio.double(), (s + 1) / s, rtol=1e-5, atol=0)


def test_weighting_is_a_config_field_whose_default_keeps_old_keys():
    assert TrainConfig().min_snr_weighting == BatonConfig().min_snr_weighting == "paper"
    assert "min_snr_weighting" not in TrainConfig().key()  # keys of models cached before it existed
    assert TrainConfig(min_snr_weighting="tango").key()["min_snr_weighting"] == "tango"


# ------------------------------------------------------------------------------- event F1

def test_event_f1_undefined_ratios_are_zero_where_sed_eval_gives_nan():
    ev = {"label": "bark", "onset": 1.0, "offset": 2.0}
    for ref, est in (([], []), ([ev], []), ([], [ev])):
        out = event_f1(ref, est)
        assert (out["f1"], out["precision"], out["recall"]) == (0.0, 0.0, 0.0)
        sed_p = np.nan if not est else 0.0  # sed_eval.metric.precision: NaN when Nsys == 0
        sed_r = np.nan if not ref else 0.0  # sed_eval.metric.recall: NaN when Nref == 0
        assert np.isnan(sed_p) or np.isnan(sed_r)  # where ours says 0.0, sed_eval's F is NaN
    assert "NaN" in event_f1.__doc__
