"""The diffusion objective, the training loop's exact resume, and the TangoPipeline."""

import numpy as np
import pytest
import torch

from t2a_lib.model.base_model import assemble, load_pipeline, text_bank
from t2a_lib.world.captions import reorder_twin
from t2a_lib.model.components import (MiniTangoConfig, add_time_channel, make_sample_scheduler, make_text_encoder, make_train_scheduler,
                                make_unet, make_vae)
from t2a_lib.model.diffusion import (TextBank, TrainConfig, diffusion_loss, min_snr_weight, noisy_and_target,
                               per_sample_mse, train_unet)
from t2a_lib.world.text import build_world_tokenizer

torch.set_num_threads(2)
TINY = MiniTangoConfig(vae_channels=(8, 16, 16), text_dim=32, text_heads=2, unet_channels=(16, 16, 16),
                       unet_head_dim=8)


@pytest.fixture(scope="module")
def tiny_pipe():
    torch.manual_seed(0)
    tok = build_world_tokenizer()
    return assemble(make_vae(TINY), make_text_encoder(TINY, len(tok)).eval(), tok, make_unet(TINY).eval(), None, TINY)


def test_v_target_and_min_snr_weights_match_closed_forms():
    sched = make_train_scheduler(MiniTangoConfig())
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 8, 4, 4, generator=g), torch.randn(4, 8, 4, 4, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    noisy, target = noisy_and_target(sched, x0, eps, t)
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1).double()
    np.testing.assert_allclose(noisy.double(), a.sqrt() * x0 + (1 - a).sqrt() * eps, atol=1e-5)
    np.testing.assert_allclose(target.double(), a.sqrt() * eps - (1 - a).sqrt() * x0, atol=1e-5)
    s = (a / (1 - a)).flatten()
    np.testing.assert_allclose(min_snr_weight(sched, t, 5.0).double(), torch.clamp(s, max=5) / (s + 1), rtol=1e-5)
    np.testing.assert_allclose(min_snr_weight(sched, t, None), 1.0)
    # Tango's schedule: scaled-linear betas from 0.00085 to 0.012 over 1000 steps
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    np.testing.assert_allclose(sched.alphas_cumprod.double(), np.cumprod(1 - betas), rtol=1e-5)


def test_per_sample_loss_is_mean_over_chw():
    torch.manual_seed(0)
    unet, sched = make_unet(TINY).eval(), make_train_scheduler(TINY)
    x0, eps = torch.randn(3, 8, 64, 16), torch.randn(3, 8, 64, 16)
    states, mask = torch.randn(3, 5, 32), torch.ones(3, 5, dtype=torch.long)
    t = torch.tensor([5, 300, 900])
    with torch.no_grad():
        got = per_sample_mse(unet, sched, x0, states, mask, eps, t)
        noisy, target = noisy_and_target(sched, x0, eps, t)
        ramp = torch.linspace(-1, 1, 64).view(1, 1, 64, 1).expand(3, 1, 64, 16)  # the time channel, by hand
        pred = unet(torch.cat([noisy, ramp], 1), t, encoder_hidden_states=states, encoder_attention_mask=mask).sample
        for i in range(3):  # one sample at a time: no cross-talk between rows
            assert got[i].item() == pytest.approx(((pred[i] - target[i]) ** 2).mean().item(), rel=1e-5)
        weighted = diffusion_loss(unet, sched, x0, states, mask, eps, t, 5.0)
    np.testing.assert_allclose(weighted, got * min_snr_weight(sched, t, 5.0), rtol=1e-5)


def test_time_channel_is_a_ramp_over_time_and_absent_for_real_layouts():
    x = torch.randn(2, 8, 64, 16)
    with_channel, without = make_unet(TINY), make_unet(MiniTangoConfig(**{**TINY.__dict__, "time_channel": False}))
    assert with_channel.config.in_channels == 9 and without.config.in_channels == 8
    y = add_time_channel(with_channel, x)
    assert torch.equal(y[:, :8], x)
    ramp = y[:, 8]
    assert torch.equal(ramp[0], ramp[1]) and (ramp[:, :, 0:1] == ramp).all()  # constant across mel bins
    assert ramp[0, 0, 0] == -1 and ramp[0, -1, 0] == 1 and (ramp[0, 1:, 0] > ramp[0, :-1, 0]).all()
    assert add_time_channel(without, x) is x  # Tango / AudioLDM checkpoints: latents unchanged
    with pytest.raises(ValueError, match="input channels"):
        add_time_channel(with_channel, torch.randn(2, 6, 64, 16))


def test_unet_heads_have_the_configured_head_size():
    """diffusers reads ``attention_head_dim`` as a head count; check the built attention layers'
    own shapes: every head has ``unet_head_dim`` channels, and the per-head softmax matches a
    hand computation of multi-head attention with that split."""
    cfg = MiniTangoConfig()
    unet = make_unet(cfg)
    attns = [m for n, m in unet.named_modules() if n.endswith(("attn1", "attn2"))]
    assert len(attns) == 14
    for m in attns:
        assert m.to_q.out_features // m.heads == cfg.unet_head_dim == 16
    m = attns[0]  # self-attention at 64 channels: 4 heads of 16
    torch.manual_seed(0)
    x = torch.randn(2, 10, 64)
    q, k, v = m.to_q(x), m.to_k(x), m.to_v(x)
    split = lambda t: t.view(2, 10, 4, 16).transpose(1, 2)
    w = (split(q) @ split(k).transpose(-1, -2) / 4.0).softmax(-1)  # 1/sqrt(16)
    ref = m.to_out[0]((w @ split(v)).transpose(1, 2).reshape(2, 10, 64))
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="multiples"):
        make_unet(MiniTangoConfig(unet_channels=(32, 48, 64), unet_head_dim=32))


def _tiny_bank(n=24, length=6, dim=32):
    g = torch.Generator().manual_seed(1)
    return TextBank(torch.randn(n, length, dim, generator=g), torch.ones(n, length, dtype=torch.long),
                    torch.zeros(1, length, dim), torch.tensor([[1] + [0] * (length - 1)]))


def test_text_encoder_position_bias_is_on_the_scale_of_the_words():
    """T5 knows word order only through its relative-position bias. At transformers' init
    (d_model^-0.5) a word's state barely depends on where it stands; at ``text_position_std`` it
    does: "dog" as the first event and as the second of the same two events."""
    tok = build_world_tokenizer()
    ids = tok(["a dog barks, then a bell rings", "a bell rings, then a dog barks"], return_tensors="pt")
    assert tok.convert_ids_to_tokens(ids.input_ids[0])[1] == tok.convert_ids_to_tokens(ids.input_ids[1])[6] == "dog"

    def shift(std, seed):
        torch.manual_seed(seed)
        te = make_text_encoder(MiniTangoConfig(text_position_std=std), len(tok)).eval()
        bias = te.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
        with torch.no_grad():
            s = te(input_ids=ids.input_ids, attention_mask=ids.attention_mask).last_hidden_state
        return float((s[0, 1] - s[1, 6]).norm() / s[0, 1].norm()), float(bias.std())

    default = MiniTangoConfig().text_position_std
    for seed in range(3):
        ours, std = shift(default, seed)
        theirs, _ = shift(MiniTangoConfig().text_dim ** -0.5, seed)
        assert abs(std - default) < 0.3 * default  # 64 draws of N(0, std^2)
        assert ours > 0.2 and theirs < 0.1 and ours > 5 * theirs, (seed, ours, theirs)


def test_classifier_free_dropout_replaces_whole_rows():
    bank = _tiny_bank()
    drop = torch.tensor([True, False, True])
    s, m = bank.batch(torch.tensor([0, 1, 2]), drop)
    assert torch.equal(s[0], bank.uncond_states[0]) and torch.equal(m[2], bank.uncond_mask[0])
    assert torch.equal(s[1], bank.states[1])


def test_training_resumes_exactly(tmp_path):
    latents = torch.randn(24, 8, 64, 16, generator=torch.Generator().manual_seed(2))
    bank, sched = _tiny_bank(), make_train_scheduler(TINY)
    cfg = TrainConfig(steps=6, batch_size=4, checkpoint_every=3, warmup=2, seed=3)

    torch.manual_seed(0)
    straight = make_unet(TINY)
    train_unet(straight, sched, latents, bank, cfg, out_dir=tmp_path / "a", progress=False)

    torch.manual_seed(0)
    interrupted = make_unet(TINY)
    train_unet(interrupted, sched, latents, bank, TrainConfig(**{**cfg.__dict__, "steps": 3}),
               out_dir=tmp_path / "b", progress=False)
    # a "crash" after step 3: a fresh process builds a new UNet and resumes from the checkpoint
    import json

    state = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    state["config"]["steps"] = 6
    (tmp_path / "b" / "checkpoint" / "state.json").write_text(json.dumps(state))
    torch.manual_seed(123)
    resumed = make_unet(TINY)
    out = train_unet(resumed, sched, latents, bank, cfg, out_dir=tmp_path / "b", progress=False)
    assert out["resumed_from"] == 3
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_nan_loss_raises_and_keeps_the_checkpoint(tmp_path):
    latents = torch.full((8, 8, 64, 16), float("nan"))
    with pytest.raises(FloatingPointError, match="step 0"):
        train_unet(make_unet(TINY), make_train_scheduler(TINY), latents, _tiny_bank(8),
                   TrainConfig(steps=2, batch_size=4), out_dir=tmp_path, progress=False)


def test_guidance_is_one_batched_forward_equal_to_two_separate_ones(tiny_pipe):
    """Sampling with guidance w equals an independent loop that runs the unconditional and
    the conditional UNet passes separately and mixes them by hand."""
    pipe, w, steps = tiny_pipe, 3.0, 4
    prompts = ["A dog barks, then a siren wails", "Rain falls"]
    noise = torch.randn(2, *pipe.latent_shape(), generator=torch.Generator().manual_seed(0))
    got = pipe(prompts, num_inference_steps=steps, guidance_scale=w, latents=noise, return_latents=True,
               progress=False).latents
    sched = make_sample_scheduler(TINY)
    sched.set_timesteps(steps)
    cond, cmask = pipe.encode_prompt(prompts)
    unc, umask = pipe.encode_prompt(["", ""])
    length = max(cond.shape[1], unc.shape[1])
    pad = lambda s, m: (torch.nn.functional.pad(s, (0, 0, 0, length - s.shape[1])),  # noqa: E731
                        torch.nn.functional.pad(m, (0, length - m.shape[1])))
    cond, cmask = pad(cond, cmask)
    unc, umask = pad(unc, umask)
    x = noise.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            xin = torch.cat([x, torch.linspace(-1, 1, x.shape[2]).view(1, 1, -1, 1).expand(2, 1, -1, x.shape[3])], 1)
            e_c = pipe.unet(xin, t, encoder_hidden_states=cond, encoder_attention_mask=cmask).sample
            e_u = pipe.unet(xin, t, encoder_hidden_states=unc, encoder_attention_mask=umask).sample
            x = sched.step(e_u + w * (e_c - e_u), t, x).prev_sample
    np.testing.assert_allclose(got, x.numpy(), atol=1e-4)


def test_same_seed_same_audio_any_batch_size_and_bit_exact_reload(tiny_pipe, tmp_path):
    prompts = ["A bell rings", "A dog barks, then a siren wails", "Wind blows"]
    run = lambda p, bs: p(prompts, num_inference_steps=3, generator=torch.Generator().manual_seed(7),  # noqa: E731
                          batch_size=bs, progress=False)
    a = run(tiny_pipe, 3)
    assert a.audios.shape == (3, 256 * 160) and a.mels.shape == (3, 64, 256)
    assert np.isfinite(a.audios).all()
    # the same noise whatever the batch size; kernels round differently per batch shape, so the
    # mels agree to float precision, not bit for bit, and Griffin-Lim's 32 iterations amplify
    # that to a few 1e-3 in the audio of this random pipeline
    one = run(tiny_pipe, 1)
    np.testing.assert_allclose(one.mels, a.mels, atol=1e-4)
    np.testing.assert_allclose(one.audios, a.audios, atol=1e-2)
    tiny_pipe.save_pretrained(tmp_path / "pipe")
    reloaded = load_pipeline(tmp_path / "pipe")
    assert np.array_equal(run(reloaded, 3).audios, a.audios)
    with pytest.raises(FileNotFoundError, match="notebook 02"):
        load_pipeline(tmp_path / "nothing")


def test_text_conditioning_is_order_sensitive(tiny_pipe):
    """The loss under a caption and under its word-swapped twin differ: the T5 states carry
    order (relative position biases), so the UNet can tell 'bark then siren' from the reverse."""
    pipe = tiny_pipe
    caps = ["A dog barks, then a siren wails", "A bell rings before rain falls"]
    twins = [reorder_twin(c) for c in caps]
    true, twin = text_bank(pipe.text_encoder, pipe.tokenizer, caps), text_bank(pipe.text_encoder, pipe.tokenizer, twins)
    assert true.states.shape == twin.states.shape
    assert not torch.allclose(true.states.mean(1), twin.states.mean(1), atol=1e-4)
    g = torch.Generator().manual_seed(0)
    x0, eps, t = torch.randn(2, 8, 64, 16, generator=g), torch.randn(2, 8, 64, 16, generator=g), torch.tensor([400, 600])
    sched = make_train_scheduler(TINY)
    with torch.no_grad():
        a = per_sample_mse(pipe.unet, sched, x0, true.states, true.mask, eps, t)
        b = per_sample_mse(pipe.unet, sched, x0, twin.states, twin.mask, eps, t)
    assert (a - b).abs().min() > 1e-7


def test_fingerprint_sees_every_byte_and_a_new_base_model_retrains(tmp_path):
    from t2a_lib.model.components import MiniTangoConfig, make_unet
    from t2a_lib.model.fits import fingerprint, fit_finetuned

    x = torch.randn(4, 3)
    y = x.clone()
    y[2, 1] = torch.nextafter(y[2, 1], torch.tensor(1e9))  # one ulp in one element
    assert fingerprint(x) == fingerprint(x.clone()) != fingerprint(y)
    assert fingerprint(x) != fingerprint(x.reshape(3, 4))  # same bytes, other shape
    assert fingerprint(x) != fingerprint(x.double())

    cfg = MiniTangoConfig(n_frames=64, n_mels=16, unet_channels=(16, 16, 16), text_dim=32)
    torch.manual_seed(0)
    base_a, base_b = make_unet(cfg), make_unet(cfg)  # same architecture, other weights
    calls = []

    def train(unet):
        calls.append(1)
        return {"seconds": 0.0, "history": []}

    fit_finetuned(tmp_path, base_a, {"config": 1}, train)
    fit_finetuned(tmp_path, base_a, {"config": 1}, train)  # cached
    assert len(calls) == 1
    fit_finetuned(tmp_path, base_b, {"config": 1}, train)  # a new base: not the old model
    assert len(calls) == 2


def test_a_checkpoint_from_another_model_is_moved_aside_not_resumed(tmp_path):
    from t2a_lib.model.fits import claim_folder

    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text("{}")
    claim_folder(tmp_path, {"base_unet": "aaa"})  # no marker: whose checkpoint is unknown
    assert not (tmp_path / "checkpoint").exists()
    assert (tmp_path / "checkpoint.superseded-unknown" / "state.json").exists()  # kept, not deleted
    (tmp_path / "round_0" / "checkpoint").mkdir(parents=True)
    claim_folder(tmp_path, {"base_unet": "aaa"})  # same model: an interrupted run resumes
    assert (tmp_path / "round_0" / "checkpoint").exists()
    claim_folder(tmp_path, {"base_unet": "bbb"})  # another base model
    assert not (tmp_path / "round_0" / "checkpoint").exists()
    assert len(list((tmp_path / "round_0").glob("checkpoint.superseded-*"))) == 1
