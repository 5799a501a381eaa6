"""Event detectors, audio-text models, the judge/ranker separation and the corruptions."""

import numpy as np
import pandas as pd
import pytest
import torch

from t2a_lib.scoring import corrupt
from t2a_lib.scoring.audiotext import (AudioTextConfig, AudioTextModel, contrastive_loss, evaluate_audiotext,
                               hard_negative, semantic_key, train_audiotext)
from t2a_lib.audio.features import frame_targets, split_mels
from t2a_lib.scoring.detector import DetectorConfig, EventDetector, evaluate_detector, train_detector
from t2a_lib.scoring.event_metrics import events_from_frames
from t2a_lib.scoring.scorers import RoleError, Scorers, judge_clips, require_role
from t2a_lib.world.captions import parse_caption, phrase_choices, reorder_twin
from t2a_lib.world.datasets import build_world, load_split
from t2a_lib.world.scenes import CLASSES

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("world")
    build_world(d, 320, 16, 64, seed=5, workers=2, progress=False)
    return d


def _tiny_detector(role="judge", arch="tcn"):
    torch.manual_seed(0)
    return EventDetector(DetectorConfig(role=role, arch=arch, width=16, hidden=8)).eval()


def _tiny_audiotext(role="judge", arch="tcn", text="gru"):
    torch.manual_seed(0)
    return AudioTextModel(AudioTextConfig(role=role, audio_arch=arch, text_arch=text, dim=16, width=16,
                                          hidden=8, text_dim=16)).eval()


# -- detector -----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["tcn", "conv1d_gru"])
def test_detector_outputs_agree_with_an_independent_computation(arch):
    det = _tiny_detector(arch=arch)
    mels = torch.randn(3, 64, 256) * 2 - 6
    out = det.analyse(mels)
    with torch.no_grad():
        logits, feats = det(mels)
    assert out.frame_probs.shape == (3, 128, len(CLASSES))
    np.testing.assert_allclose(out.frame_probs, torch.sigmoid(logits).numpy(), atol=1e-6)
    # clip probability = max over frames of the frame probabilities (sigmoid is monotone)
    np.testing.assert_allclose(out.clip_probs, out.frame_probs.max(1), atol=1e-6)
    np.testing.assert_allclose(out.embeddings, feats.mean(1).numpy(), atol=1e-5)
    expected = [events_from_frames(p, CLASSES, 0.02, 0.5, det.config.min_duration, det.config.merge_gap)
                for p in out.frame_probs]
    assert det.events(out.frame_probs) == expected


def test_detector_save_load_roundtrip_and_role_check(tmp_path):
    det = _tiny_detector()
    det.save(tmp_path / "d")
    back = EventDetector.load(tmp_path / "d", role="judge")
    mels = torch.randn(2, 64, 256) - 6
    np.testing.assert_array_equal(det.analyse(mels).frame_probs, back.analyse(mels).frame_probs)
    with pytest.raises(ValueError, match="judges and rankers never mix"):
        EventDetector.load(tmp_path / "d", role="ranker")
    with pytest.raises(FileNotFoundError, match="notebook 01"):
        EventDetector.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="role"):
        DetectorConfig(role="referee")


@pytest.mark.slow
def test_detector_learns_the_world(world):
    """Trained briefly on 320 clips, held-out frame accuracy removes a good share of the error of
    predicting "nothing sounds" (every frame's majority) and events are found. (Quality at scale
    is in notebook 01's model cards.)"""
    (tr, rtr), (te, rte) = split_mels(world / "train.jsonl"), split_mels(world / "test.jsonl")
    cfg = DetectorConfig(role="ranker", arch="conv1d_gru", epochs=6, batch_size=16, seed=0)
    det, losses = train_detector(cfg, tr, frame_targets(rtr, 128, 0.02), progress=False)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    y = frame_targets(rte, 128, 0.02)
    scores = evaluate_detector(det, te, y, rte)
    baseline = float((y == 0).float().mean())
    assert scores["frame_accuracy"] > baseline + 0.3 * (1 - baseline), (scores, baseline)
    assert scores["event_f1"] > 0.3, scores  # an untrained detector finds ~no events


# -- audio-text ---------------------------------------------------------------------------------


def test_contrastive_loss_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    a, t, h = (torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=-1) for _ in range(3))
    s = torch.tensor(7.0)
    got = contrastive_loss(a, t, h, s).item()
    # independent: written out with explicit log-sum-exp per row
    A, T, H = a.double().numpy(), t.double().numpy(), h.double().numpy()
    la = [-(7 * A[i] @ T[i]) + np.log(np.exp(7 * A[i] @ T.T).sum() + np.exp(7 * A[i] @ H.T).sum()) for i in range(5)]
    lt = [-(7 * T[i] @ A[i]) + np.log(np.exp(7 * T[i] @ A.T).sum()) for i in range(5)]
    assert got == pytest.approx((np.mean(la) + np.mean(lt)) / 2, rel=1e-6)
    # without hard negatives, perfectly separated pairs at high scale give ~0 loss
    eye = torch.eye(4)
    assert contrastive_loss(eye, eye, None, torch.tensor(100.0)).item() < 1e-6


def test_hard_negatives_and_reordered_twins():
    rng = np.random.default_rng(0)
    cap = "A dog barks loudly, then a police siren wails"
    twin = reorder_twin(cap)
    assert parse_caption(twin).time_order == parse_caption(cap).time_order[::-1]
    assert phrase_choices(twin) == phrase_choices(cap)  # same synonyms: only the order differs
    assert hard_negative(cap, rng) == twin
    single = "A bell rings"
    neg = hard_negative(single, rng)
    assert parse_caption(neg).labels != parse_caption(single).labels
    assert hard_negative("a free-form caption the grammar cannot read", rng) == \
        "a free-form caption the grammar cannot read"
    assert semantic_key("A dog barks, then a siren wails") == semantic_key("A puppy yaps followed by a siren blaring")
    assert semantic_key("A siren wails after a dog barks") == semantic_key("A dog barks before a siren wails")
    assert semantic_key("A dog barks, then a siren wails") != semantic_key("A siren wails, then a dog barks")


def test_audio_embedding_sees_when_not_only_what():
    """Structural: the same frames in another temporal arrangement embed differently."""
    m = _tiny_audiotext()
    mel = torch.full((1, 64, 256), -11.0)
    mel[0, 10:20, 20:80] = 0.0  # a low event early
    mel[0, 40:50, 160:220] = 0.0  # a high event late
    swapped = torch.full_like(mel, -11.0)
    swapped[0, 10:20, 160:220] = 0.0
    swapped[0, 40:50, 20:80] = 0.0
    a, b = m.embed_audio(mel), m.embed_audio(swapped)
    assert float((a * b).sum()) < 0.999


def test_audiotext_score_pairs_clip_i_with_caption_i_and_roundtrips(tmp_path):
    m = _tiny_audiotext()
    mels = torch.randn(3, 64, 256) - 6
    caps = ["A dog barks", "A bell rings, then rain falls", "Wind blows while a bird sings"]
    s = m.score(mels, caps)
    full = m.embed_audio(mels) @ m.embed_text(caps).T
    np.testing.assert_allclose(s, np.diag(full), atol=1e-6)
    np.testing.assert_allclose(m.score(mels, caps[::-1]), [full[0, 2], full[1, 1], full[2, 0]], atol=1e-6)
    with pytest.raises(ValueError, match="pair clip i with caption i"):
        m.score(mels, caps[:2])
    m.save(tmp_path / "m")
    back = AudioTextModel.load(tmp_path / "m", role="judge")
    np.testing.assert_array_equal(back.score(mels, caps), s)
    with pytest.raises(ValueError, match="never mix"):
        AudioTextModel.load(tmp_path / "m", role="ranker")


@pytest.mark.slow
def test_audiotext_learns_retrieval(world):
    (tr, rtr), (te, rte) = split_mels(world / "train.jsonl"), split_mels(world / "test.jsonl")
    cfg = AudioTextConfig(role="ranker", epochs=6, batch_size=32, seed=1)
    m, losses = train_audiotext(cfg, tr, [r.captions for r in rtr], progress=False)
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    res = evaluate_audiotext(m, te, [r.captions for r in rte], n_candidates=20, n_rounds=3)
    assert res["n_candidates"] == 20
    assert res["r1_audio_to_text"] > 3 / 20, res  # well above chance (1/20)


# -- roles --------------------------------------------------------------------------------------


def test_judges_and_rankers_never_mix(world):
    judge_det, ranker_det = _tiny_detector("judge"), _tiny_detector("ranker", "conv1d_gru")
    with pytest.raises(RoleError):
        Scorers("judge", judge_det, [_tiny_audiotext("ranker", "conv1d_gru", "transformer")])
    rankers = Scorers("ranker", ranker_det, [])
    mels, recs = split_mels(world / "test.jsonl")
    with pytest.raises(RoleError, match="evaluation must use judges"):
        judge_clips(rankers, mels[:2], [r.captions for r in recs[:2]])
    with pytest.raises(RoleError):
        require_role(Scorers("judge", judge_det, []), "ranker", "ranking the preference set")


def test_judge_clips_table(world):
    judges = Scorers("judge", _tiny_detector(), [_tiny_audiotext()])
    mels, recs = split_mels(world / "test.jsonl")
    caps = [r.captions for r in recs[:6]] + ["something the grammar cannot read"]
    j = judge_clips(judges, torch.cat([mels[:6], mels[:1]]), caps)
    t = j.table
    assert len(t) == 7 and {"presence", "all_present", "order", "clap", "presence_prob", "order_margin"} <= set(t.columns)
    for cap, (_, row) in zip(caps[:6], t.iloc[:6].iterrows()):
        assert np.isnan(row.order) == (not parse_caption(cap).is_temporal)
        assert 0 <= row.presence <= 1
    assert np.isnan(t.presence.iloc[6])  # free-form caption: CLAP only



def test_judge_clips_continuous_scores():
    """presence_prob and order_margin against a direct loop over the detector's frame posteriors.
    The detector's classes are in a non-default order and its hop is not the default, so the
    columns must come from ``detector.config``."""
    torch.manual_seed(0)
    classes = list(reversed(CLASSES))
    det = EventDetector(DetectorConfig(role="judge", width=16, hidden=8, classes=classes, hop_seconds=0.05)).eval()
    judges = Scorers("judge", det, [])
    caps = ["A dog barks, then a police siren wails",                # temporal, word order
            "A siren wails after a dog barks",                       # temporal, reversed
            "Rain falls while a bird chirps",                        # not temporal
            "A bell rings with wind blowing in the background",      # single + background
            "A dog barks, then a bell rings, then a dog barks",      # repeated label
            "A clock ticks before a drum beats with rain falling in the background",
            "something the grammar cannot read"]
    g = torch.Generator().manual_seed(3)
    mels = torch.randn(len(caps), 64, 256, generator=g) * 3 - 6
    mels[1] = mels[0]  # the same clip under the "then" and the "after" wording of one time order
    t = judge_clips(judges, mels, caps).table
    probs = det.analyse(mels).frame_probs
    col = {lab: k for k, lab in enumerate(classes)}
    prompted = [["dog_bark", "siren"], ["siren", "dog_bark"], ["rain", "bird_chirp"], ["bell", "wind"],
                ["dog_bark", "bell", "dog_bark"], ["clock_tick", "drum", "rain"]]
    in_time = [["dog_bark", "siren"], ["dog_bark", "siren"], None, None, None, ["clock_tick", "drum"]]
    for i in range(6):
        p = probs[i]
        pres = np.mean([max(p[f, col[lab]] for f in range(p.shape[0])) for lab in prompted[i]])
        assert t.presence_prob.iloc[i] == pytest.approx(pres, abs=1e-12)
        if in_time[i] is None:
            assert np.isnan(t.order_margin.iloc[i])
            continue
        cents = []
        for lab in in_time[i]:
            w = [p[f, col[lab]] for f in range(p.shape[0])]
            cents.append(sum((f + 0.5) * 0.05 * w[f] for f in range(len(w))) / sum(w))
        assert t.order_margin.iloc[i] == pytest.approx(min(np.diff(cents)), abs=1e-9)
    assert t.order_margin.iloc[0] == pytest.approx(t.order_margin.iloc[1], abs=1e-12)  # same clip, same order
    assert t.presence_prob.iloc[0] == pytest.approx(t.presence_prob.iloc[1], abs=1e-12)
    assert np.isnan(t.presence_prob.iloc[6]) and np.isnan(t.order_margin.iloc[6])  # free-form
    # a detector without one of the prompted classes is an error, not a silent zero
    small = EventDetector(DetectorConfig(role="judge", width=16, hidden=8, classes=["dog_bark", "bell"])).eval()
    with pytest.raises(ValueError, match="siren.*does not know"):
        judge_clips(Scorers("judge", small, []), mels[:1], caps[:1])

# -- corruptions --------------------------------------------------------------------------------


def test_corruptions_change_exactly_what_they_name(world):
    recs = load_split(world, "test")
    rec = next(r for r in recs if r.relation in ("then", "before", "followed") and len(r.events) == 2)
    import soundfile as sf

    wave = sf.read(rec.location, dtype="float32")[0]
    a, b = sorted(rec.events, key=lambda e: e["onset"])
    swapped = corrupt.swap_order(wave, rec.events)
    sa, sb = int(round(a["onset"] * 16000)), int(round(b["onset"] * 16000))
    n = int(round((b["offset"] - b["onset"]) * 16000)) - 1
    # the last event's audio now starts where the first one did
    np.testing.assert_array_equal(swapped[sa:sa + n], wave[sb:sb + n])
    rng = np.random.default_rng(0)
    dropped = corrupt.drop_event(wave, rec.events, rng)
    gone = [e for e in rec.events if np.sqrt(np.mean(dropped[int(e["onset"] * 16000):int(e["offset"] * 16000)] ** 2)) < 1e-3]
    assert len(gone) == 1
    quiet = wave * 0.1  # quiet enough that add_noise does not rescale
    noisy = corrupt.add_noise(quiet, 3.0, np.random.default_rng(1))
    assert np.abs(noisy).max() < 0.95
    noise = (noisy - quiet).astype(np.float64)
    snr = 10 * np.log10(np.mean(quiet.astype(np.float64) ** 2) / np.mean(noise ** 2))
    assert snr == pytest.approx(3.0, abs=0.3)
    assert corrupt.swap_order(wave, rec.events[:1]) is None
    assert corrupt.drop_event(wave, rec.events[:1], rng) is None


def test_rank_clips_is_judge_clips_for_rankers_and_roles_hold():
    """The rankers' table has the judges' columns and is computed the same way; each entry
    point refuses the other family."""
    from t2a_lib.scoring.scorers import RoleError, rank_clips

    torch.manual_seed(0)
    caps = ["A dog barks, then a police siren wails", "Rain falls while a bird chirps"]
    mels = torch.randn(2, 64, 256, generator=torch.Generator().manual_seed(1)) * 3 - 6
    made = {}
    for role in ("judge", "ranker"):
        torch.manual_seed(5)  # the same weights under both roles
        made[role] = Scorers(role, EventDetector(DetectorConfig(role=role, width=16, hidden=8)).eval(), [])
    a = judge_clips(made["judge"], mels, caps).table
    b = rank_clips(made["ranker"], mels, caps).table
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(RoleError):
        rank_clips(made["judge"], mels, caps)
    with pytest.raises(RoleError):
        judge_clips(made["ranker"], mels, caps)
