"""The base text encoder's timeline term: which words name which event, and when that event sounds."""

import numpy as np
import torch

from t2a_lib.audio.manifest import ManifestRecord
from t2a_lib.scoring.audiotext import AudioTextConfig, AudioTextModel, timeline_loss, timeline_targets
from t2a_lib.world.captions import CaptionSpec, render_caption
from t2a_lib.world.captions import word_labels
from t2a_lib.world.scenes import CLASSES, TEXTURES

CONNECTIVES = {"then", "followed", "by", "before", "after", "while", "with", "in", "background", ","}


def test_word_labels_name_each_phrase_and_nothing_else():
    rng = np.random.default_rng(0)
    for _ in range(300):
        fg = [c for c in rng.permutation(CLASSES) if c not in TEXTURES][:3]
        relation = str(rng.choice(["single", "then", "followed", "before", "after", "while"]))
        n = 1 if relation == "single" else (3 if relation in ("then", "followed") and rng.random() < 0.3 else 2)
        bg = str(rng.choice(TEXTURES)) if rng.random() < 0.4 else None
        spec = CaptionSpec(tuple(fg[:n]), relation, bg)
        caption = render_caption(spec, rng)
        labels = word_labels(caption)
        words = caption.lower().replace(",", " ,").split()
        assert len(labels) == len(words), caption
        assert set(labels) - {None} == set(spec.all_labels), caption
        for w, lab in zip(words, labels):
            if w in CONNECTIVES - {"the"}:  # "the" also opens phrases ("the wind howls")
                assert lab is None, (caption, w)
        # each named event's words are one contiguous run, in the caption's word order
        runs = [lab for i, lab in enumerate(labels) if lab is not None and (i == 0 or labels[i - 1] != lab)]
        assert runs == list(spec.labels) + ([bg] if bg else []), caption


def test_timeline_targets_against_hand_computed_shares():
    # 2.56 s clip, 256 frames of 10 ms, 8 bins of 0.32 s. The dog fills bins 0-3 exactly; the
    # siren starts halfway through bin 5 (1.76 s) and runs to the end.
    rec = ManifestRecord("world", "x.wav", "A dog barks, then a siren wails",
                         events=[{"label": "dog_bark", "onset": 0.0, "offset": 1.28},
                                 {"label": "siren", "onset": 1.76, "offset": 2.56}])
    targets, mask = timeline_targets([rec], n_bins=8, n_frames=256)
    dog = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=np.float32)
    siren = np.array([0, 0, 0, 0, 0, 0.5, 1, 1], dtype=np.float32)
    expected = [dog, dog, dog, None, None, siren, siren, siren]  # a dog barks , then a siren wails
    for j, e in enumerate(expected):
        if e is None:
            assert mask[0, j] == 0 and targets[0, j].abs().sum() == 0
        else:
            assert mask[0, j] == 1
            np.testing.assert_allclose(targets[0, j].numpy(), e, atol=1e-6)
    assert mask[0, len(expected):].sum() == 0


def test_timeline_loss_equals_masked_bce_computed_by_hand():
    torch.manual_seed(0)
    model = AudioTextModel(AudioTextConfig(role="base", text_arch="t5", timeline_bins=4))
    captions = ["A dog barks, then a siren wails", "Rain falls"]
    targets = torch.rand(2, 32, 4)
    mask = torch.zeros(2, 32)
    mask[0, [0, 1, 2, 5, 6, 7]] = 1
    mask[1, [0, 1]] = 1
    with torch.no_grad():
        got = timeline_loss(model, captions, targets, mask)
        tok = model.tokenizer(captions, padding=True, return_tensors="pt")
        logits = model.timeline_head(model.text(tok.input_ids, tok.attention_mask))
    total, count = 0.0, 0
    for i in range(2):
        for j in range(logits.shape[1]):
            if mask[i, j]:
                p = torch.sigmoid(logits[i, j])
                y = targets[i, j]
                total += float((-(y * torch.log(p) + (1 - y) * torch.log(1 - p))).mean())
                count += 1
    assert abs(float(got) - total / count) < 1e-5


def test_training_with_the_timeline_term_learns_when_and_checks_its_inputs():
    import pytest
    from t2a_lib.scoring.audiotext import train_audiotext

    rng = np.random.default_rng(1)
    recs = []
    for i in range(128):  # "A then B": A in the first half, B in the second
        a, b = rng.choice([c for c in CLASSES if c not in TEXTURES], 2, replace=False)
        spec = CaptionSpec((str(a), str(b)), "then")
        recs.append(ManifestRecord("world", f"{i}.wav", render_caption(spec, rng),
                                   events=[{"label": str(a), "onset": 0.1, "offset": 1.1},
                                           {"label": str(b), "onset": 1.4, "offset": 2.4}]))
    targets, mask = timeline_targets(recs, n_bins=4, n_frames=256)
    mels = torch.randn(len(recs), 64, 64)  # the timeline head reads the text alone; the audio is filler
    cfg = AudioTextConfig(role="base", text_arch="t5", timeline_bins=4, epochs=40, batch_size=32, seed=0)
    with pytest.raises(ValueError, match="timeline"):
        train_audiotext(cfg, mels, [r.captions for r in recs], progress=False)
    torch.manual_seed(0)
    before = float(timeline_loss(AudioTextModel(cfg), [r.captions for r in recs], targets, mask).detach())
    model, _ = train_audiotext(cfg, mels, [r.captions for r in recs], progress=False, timeline=(targets, mask))
    with torch.no_grad():
        after = float(timeline_loss(model, [r.captions for r in recs], targets, mask))
        tok = model.tokenizer([r.captions for r in recs], padding=True, return_tensors="pt")
        p = torch.sigmoid(model.timeline_head(model.text(tok.input_ids, tok.attention_mask)))
    # BCE against soft targets cannot go below their entropy: measure progress above that floor
    t = targets.clamp(1e-6, 1 - 1e-6)
    entropy = -(t * t.log() + (1 - t) * (1 - t).log()).mean(-1)
    floor = float((entropy * mask).sum() / mask.sum())
    assert after - floor < 0.5 * (before - floor), (before, after, floor)
    # the first event's words say "early", the second's "late" (the same words occur in both roles)
    right = []
    for i, r in enumerate(recs):
        labels = word_labels(r.captions)
        first = [j for j, lab in enumerate(labels) if lab == r.events[0]["label"]]
        second = [j for j, lab in enumerate(labels) if lab == r.events[1]["label"]]
        early = lambda js: float(p[i, js, :2].mean() - p[i, js, 2:].mean())  # noqa: E731
        right.append(early(first) > 0 > early(second))
    assert np.mean(right) > 0.9, np.mean(right)


class _PositionStates(torch.nn.Module):
    """A stand-in text encoder whose states say only where each token stands (or, with
    ``bag=True``, only which word it is): the two cases the order probe must tell apart."""

    def __init__(self, bag: bool = False):
        super().__init__()
        self.bag = bag

    def forward(self, input_ids, attention_mask):
        pos = torch.arange(input_ids.shape[1], dtype=torch.float32).expand_as(input_ids)
        feat = input_ids.float() if self.bag else pos
        states = torch.stack([feat, torch.ones_like(feat)], -1) * attention_mask[..., None]
        return type("Out", (), {"last_hidden_state": states})()


def test_order_probe_reads_position_and_not_a_bag_of_words():
    from t2a_lib.model.base_model import order_probe
    from t2a_lib.world.text import build_world_tokenizer

    rng = np.random.default_rng(0)
    captions = []
    for _ in range(400):
        a, b = [c for c in rng.permutation(CLASSES) if c not in TEXTURES][:2]
        captions.append(render_caption(CaptionSpec((a, b), str(rng.choice(["then", "followed", "before", "after"]))), rng))
    tok = build_world_tokenizer()
    # states that carry the word's position: the earlier phrase is first in time except after "after"
    by_position = order_probe(_PositionStates(), tok, captions[:300], captions[300:])
    assert by_position["then"] == by_position["followed"] == by_position["before"] == 1.0
    assert by_position["after"] == 0.0  # the text order is the reverse of the time order
    # states that carry only the word: each event's phrase looks the same wherever it stands
    bag = order_probe(_PositionStates(bag=True), tok, captions[:300], captions[300:])
    assert 0.35 < bag["held_out"] < 0.65


def test_order_probe_skips_captions_outside_the_grammar():
    from t2a_lib.model.base_model import order_probe
    from t2a_lib.world.text import build_world_tokenizer

    free = ["people talk in a crowded hall", "a man speaks, then a crowd cheers loudly"]
    out = order_probe(_PositionStates(), build_world_tokenizer(), free, free)
    assert out["n_held_out"] == 0 and np.isnan(out["held_out"])
