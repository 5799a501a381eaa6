"""The grounding term: event words' cross-attention pulled to where their events sound."""

import numpy as np
import pytest
import torch

from t2a_lib.model.components import MiniTangoConfig, add_time_channel, make_train_scheduler, make_unet
from t2a_lib.model.diffusion import TextBank, TrainConfig, train_unet
from t2a_lib.model.grounding import AttentionRecorder, grounding_loss, record_cross_attention, word_time_attention

TINY = MiniTangoConfig(n_frames=64, n_mels=16, unet_channels=(16, 16, 16), text_dim=32)  # latent (8, 16, 4)


def _inputs(b=3, length=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 8, 16, 4, generator=g)
    states = torch.randn(b, length, 32, generator=g)
    mask = torch.ones(b, length, dtype=torch.long)
    mask[0, -2:] = 0  # padding in one row
    return x, torch.randint(0, 1000, (b,), generator=g), states, mask


def test_recording_changes_nothing_and_maps_are_attention_over_words():
    torch.manual_seed(0)
    unet = make_unet(TINY).eval()
    x, t, states, mask = _inputs()
    before = {k: type(p) for k, p in unet.attn_processors.items()}
    with torch.no_grad():
        plain = unet(add_time_channel(unet, x), t, encoder_hidden_states=states, encoder_attention_mask=mask).sample
        with record_cross_attention(unet, (16, 4)) as maps:
            recorded = unet(add_time_channel(unet, x), t, encoder_hidden_states=states,
                            encoder_attention_mask=mask).sample
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-4)
    assert {k: type(p) for k, p in unet.attn_processors.items()} == before  # processors restored
    n_cross = sum(k.endswith("attn2.processor") for k in before)
    assert len(maps) == n_cross == 7  # down 1 + 1, mid 1, up 2 + 2
    assert sorted({m.shape[1] for m in maps}) == [4, 8]  # time positions at the two attention levels
    for m in maps:
        assert m.shape[0] == 3 and m.shape[2] == 5
        torch.testing.assert_close(m.sum(-1), torch.ones(m.shape[:2]))  # a distribution over words
        assert m[0, :, -2:].abs().max() < 1e-6  # padded words get no attention


def test_grounding_loss_against_closed_forms():
    # one word whose event fills the first half of 8 positions
    share = torch.zeros(1, 1, 8)
    share[0, 0, :4] = 1
    mask = torch.ones(1, 1)
    inside = torch.zeros(1, 8, 1)
    inside[0, :4] = 0.25  # all its attention in the first half
    uniform = torch.full((1, 8, 1), 0.125)
    outside = torch.zeros(1, 8, 1)
    outside[0, 4:] = 0.25
    assert grounding_loss([inside], share, mask).item() == pytest.approx(0.0, abs=1e-7)
    assert grounding_loss([uniform], share, mask).item() == pytest.approx(0.25)  # (1 - 1/2)^2
    assert grounding_loss([outside], share, mask).item() == pytest.approx(1.0)
    # the per-map scale does not matter (attention is renormalised over positions)
    assert grounding_loss([uniform * 0.1], share, mask).item() == pytest.approx(0.25)


def test_grounding_loss_equals_a_per_word_loop():
    g = torch.Generator().manual_seed(1)
    maps = [torch.rand(2, 8, 6, generator=g), torch.rand(2, 4, 6, generator=g)]
    share = torch.rand(2, 10, 16, generator=g)  # 16 bins pool to 8 and to 4 positions
    mask = (torch.rand(2, 10, generator=g) > 0.4).float()
    total = 0.0
    for a in maps:
        n_pos, num, den = a.shape[1], 0.0, 0.0
        for b in range(2):
            for j in range(6):  # only words that have a map column
                col = a[b, :, j].numpy() / a[b, :, j].sum().item()
                s = share[b, j].numpy().reshape(n_pos, -1).mean(1)
                num += mask[b, j].item() * (1 - float(col @ s)) ** 2
                den += mask[b, j].item()
        total += num / den
    assert grounding_loss(maps, share, mask).item() == pytest.approx(total / 2, rel=1e-5)


def test_training_with_grounding_learns_where_each_word_goes():
    # every caption has the same two words; word 0's event fills the first half of the clip,
    # word 1's the second. Only position (the time channel) can tell the UNet where to attend.
    torch.manual_seed(0)
    unet = make_unet(TINY)
    n, length = 32, 3
    states = torch.randn(1, length, 32).expand(n, -1, -1).contiguous()
    bank = TextBank(states, torch.ones(n, length, dtype=torch.long), torch.zeros(1, length, 32),
                    torch.ones(1, length, dtype=torch.long))
    share, words = torch.zeros(n, 32, 16), torch.zeros(n, 32)
    share[:, 0, :8], share[:, 1, 8:], words[:, :2] = 1, 1, 1
    latents = torch.randn(n, 8, 16, 4)
    config = TrainConfig(steps=60, batch_size=8, lr=3e-3, warmup=5, p_uncond=0.0, grounding_weight=1.0)
    out = train_unet(unet, make_train_scheduler(TINY), latents, bank, config, progress=False,
                     timeline=(share, words))
    ground = [h["grounding"] for h in out["history"]]
    assert np.mean(ground[-10:]) < 0.5 * np.mean(ground[:5])
    with torch.no_grad(), record_cross_attention(unet, (16, 4)) as maps:
        unet.eval()(add_time_channel(unet, latents[:4]), torch.full((4,), 500), encoder_hidden_states=states[:4])
    early = [m[:, : m.shape[1] // 2] for m in maps]
    share_early = [(e[..., 0].sum(1) / m[..., 0].sum(1)).mean().item() for e, m in zip(early, maps)]
    share_late = [(e[..., 1].sum(1) / m[..., 1].sum(1)).mean().item() for e, m in zip(early, maps)]
    assert np.mean(share_early) > 0.7 and np.mean(share_late) < 0.3  # untrained: about 0.5 each


def test_recorder_keeps_the_first_heads_as_a_hand_computed_softmax():
    """A layer with 2 heads of 8: the map of the first head alone (``heads=1``) and of both,
    against q·k/sqrt(8) softmax per head computed by hand, averaged over frequency."""
    torch.manual_seed(0)
    unet = make_unet(MiniTangoConfig(**{**TINY.__dict__, "unet_head_dim": 8}))
    attn = unet.down_blocks[1].attentions[0].transformer_blocks[0].attn2
    assert attn.heads == 2
    hidden, ctx = torch.randn(2, 8 * 2, 16), torch.randn(2, 5, 32)  # level 2: (16, 4) latent seen as 8 x 2
    q = attn.to_q(hidden).view(2, 16, 2, 8).transpose(1, 2)
    k = attn.to_k(ctx).view(2, 5, 2, 8).transpose(1, 2)
    per_head = (q @ k.transpose(-1, -2) / 8 ** 0.5).softmax(-1)  # (B, heads, 16 queries, 5 words)
    per_head = per_head.view(2, 2, 8, 2, 5).mean(3)  # mean over the 2 frequency rows
    for heads, want in ((1, per_head[:, 0]), (None, per_head.mean(1))):
        maps = []
        with torch.no_grad():
            AttentionRecorder(maps, (16, 4), heads)(attn, hidden, encoder_hidden_states=ctx)
        torch.testing.assert_close(maps[0], want.detach(), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="first 3 of 2"):
        AttentionRecorder([], (16, 4), 3)(attn, hidden, encoder_hidden_states=ctx)


def test_grounding_needs_timelines_and_every_field_is_keyed():
    assert TrainConfig().key()["grounding_weight"] == 0.0  # no exceptions kept for older models
    assert TrainConfig(grounding_weight=0.1, grounding_heads=1).key()["grounding_heads"] == 1
    assert TrainConfig(grounding_weight=0.1).key() != TrainConfig(grounding_weight=0.1, grounding_heads=1).key()
    unet = make_unet(TINY)
    bank = TextBank(torch.zeros(2, 3, 32), torch.ones(2, 3), torch.zeros(1, 3, 32), torch.ones(1, 3))
    with pytest.raises(ValueError, match="timeline"):
        train_unet(unet, make_train_scheduler(TINY), torch.zeros(2, 8, 16, 4), bank,
                   TrainConfig(steps=1, batch_size=2, grounding_weight=0.1), progress=False)


def test_word_time_attention_is_the_finest_maps_renormalised_over_time():
    torch.manual_seed(0)
    unet = make_unet(TINY).eval()
    _, _, states, mask = _inputs(b=2)
    att = word_time_attention(unet, states, mask, (8, 16, 4), timestep=700, seed=3)
    x = torch.randn(2, 8, 16, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), record_cross_attention(unet, (16, 4)) as maps:
        unet(add_time_channel(unet, x), torch.full((2,), 700), encoder_hidden_states=states, encoder_attention_mask=mask)
    fine = torch.stack([m for m in maps if m.shape[1] == 8]).mean(0)
    assert len([m for m in maps if m.shape[1] == 8]) == 3  # down 1, up 2 at the finer level
    torch.testing.assert_close(att[:, :, :3], fine[:, :, :3] / fine[:, :, :3].sum(1, keepdim=True))
    torch.testing.assert_close(att[:, :, :3].sum(1), torch.ones(2, 3))
