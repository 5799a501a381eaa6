"""The procedural sound world, checked against independent signal measurements (numpy/scipy only).

Nothing here compares the world's output with a re-run of its own code path except the
determinism tests; every other property is measured on the audio with features computed here.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from t2a_lib.world import scenes
from t2a_lib.world.scenes import CLASSES, SYNTHS, Event, Scene, WorldConfig, clip_rng, render_scene, sample_scene, synth_event

SR = 16000
CFG = WorldConfig()
N_CLIP = int(round(CFG.clip_seconds * SR))
# classes whose sound fills the whole span (no silent gaps between bursts)
CONTINUOUS = {"siren", "bell", "rain", "engine_hum", "whistle", "wind"}


def _scene(seed: int, index: int, config: WorldConfig = CFG):
    rng = clip_rng(seed, index)
    scene = sample_scene(rng, config)
    return scene, render_scene(scene, rng, config)


def _span(ev: Event, n: int) -> tuple[int, int]:
    return max(int(round(ev.onset * SR)), 0), min(int(round(ev.offset * SR)), n)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)))


def _db(a: float, b: float) -> float:
    return 20 * np.log10(a / b)


def _frame_rms(x: np.ndarray, frame: int) -> np.ndarray:
    k = len(x) // frame
    return np.sqrt((np.asarray(x[: k * frame], np.float64).reshape(k, frame) ** 2).mean(1))


def _longest_run(mask: np.ndarray) -> int:
    best = run = 0
    for v in mask:
        run = run + 1 if v else 0
        best = max(best, run)
    return best


# ----------------------------------------------------------------------------------------------
# basic contract


def test_at_least_twelve_classes_with_synthesisers():
    assert len(CLASSES) >= 12
    assert len(set(CLASSES)) == len(CLASSES)
    assert set(CLASSES) == set(SYNTHS)
    assert set(scenes.TEXTURES) <= set(CLASSES)


@pytest.mark.parametrize("label", CLASSES)
def test_synth_event_shape_and_range(label):
    for seconds in (0.3, 1.0, 2.0):
        x = synth_event(label, seconds, seed=3)
        assert x.dtype == np.float32
        assert x.shape == (int(round(seconds * SR)),)
        assert np.all(np.isfinite(x))
        assert np.max(np.abs(x)) == pytest.approx(0.5, abs=1e-3)  # documented peak


def test_synth_event_rejects_unknown_class():
    with pytest.raises(ValueError, match="unknown sound class"):
        synth_event("cat_meow", 1.0)


# ----------------------------------------------------------------------------------------------
# determinism


@pytest.mark.parametrize("label", CLASSES)
def test_same_seed_same_audio_different_seed_different_audio(label):
    a = synth_event(label, 1.2, seed=11)
    b = synth_event(label, 1.2, seed=11)
    c = synth_event(label, 1.2, seed=12)
    assert a.tobytes() == b.tobytes()
    assert a.shape == c.shape and not np.array_equal(a, c)
    # the synthesiser itself draws everything from the generator it is given
    x1 = SYNTHS[label](np.random.default_rng(5), 8000, SR)
    x2 = SYNTHS[label](np.random.default_rng(5), 8000, SR)
    assert np.array_equal(x1, x2)


def test_rendered_scenes_are_deterministic():
    for i in range(25):
        s1, a1 = _scene(42, i)
        s2, a2 = _scene(42, i)
        assert s1 == s2
        assert a1.tobytes() == a2.tobytes()
        s3, a3 = _scene(43, i)
        assert not np.array_equal(a1, a3)
    # different clip indices of one world are different clips
    assert not np.array_equal(_scene(42, 0)[1], _scene(42, 1)[1])


def test_render_depends_only_on_scene_and_rng():
    scene, _ = _scene(9, 4)
    a = render_scene(scene, np.random.default_rng([9, 4, 1]))
    b = render_scene(scene, np.random.default_rng([9, 4, 1]))
    c = render_scene(scene, np.random.default_rng([9, 4, 2]))
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)


# ----------------------------------------------------------------------------------------------
# per-instance randomness


def _spectrum(x):
    x = np.asarray(x, np.float64)
    p = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return f, p


@pytest.mark.parametrize("label", CLASSES)
def test_instances_of_a_class_differ_in_timbre(label):
    cents, doms = [], []
    for seed in range(8):
        f, p = _spectrum(synth_event(label, 1.0, seed))
        cents.append(np.sum(f * p) / np.sum(p))
        doms.append(f[np.argmax(p)])
    cents = np.array(cents)
    # spectral centroid varies from instance to instance (not a fixed sample played back)
    assert cents.std() / cents.mean() > 0.01, (label, cents)
    rel = np.abs(cents[:, None] - cents[None, :]) / cents.mean()
    assert np.median(rel[np.triu_indices(len(cents), 1)]) > 0.01, (label, cents)


@pytest.mark.parametrize("label", ["dog_bark", "bell", "engine_hum", "whistle", "knock", "beep"])
def test_pitched_classes_have_random_pitch(label):
    doms = []
    for seed in range(8):
        f, p = _spectrum(synth_event(label, 1.0, seed))
        doms.append(f[np.argmax(p)])
    assert max(doms) / min(doms) > 1.15, (label, doms)


def _peak_track(x):
    f, _, S = signal.stft(np.asarray(x, np.float64), SR, nperseg=1024, noverlap=768)
    return f[np.argmax(np.abs(S[:, 2:-2]), axis=0)]


def test_siren_sweep_centre_and_depth_vary():
    centres, depths = [], []
    for seed in range(8):
        track = _peak_track(synth_event("siren", 2.5, seed))
        lo, hi = np.percentile(track, [5, 95])
        centres.append((lo + hi) / 2)
        depths.append(hi - lo)
        assert hi - lo > 200  # it really sweeps
    assert max(centres) / min(centres) > 1.1, centres
    assert max(depths) / min(depths) > 1.15, depths


def test_scene_gains_and_durations_vary():
    scenes = [sample_scene(clip_rng(1, i)) for i in range(200)]
    gains = np.concatenate([s.gains_db for s in scenes])
    durs = np.array([e.offset - e.onset for s in scenes for e in s.foreground])
    assert gains.std() > 1.0 and np.all(gains <= 0)
    assert durs.std() > 0.1


# ----------------------------------------------------------------------------------------------
# classes are recognisably different: an independent nearest-centroid classifier


def _features(x: np.ndarray) -> np.ndarray:
    """Band log-spectrum (Welch), centroid, zero-crossing rate and envelope modulation."""
    x = np.asarray(x, np.float64)
    f, p = signal.welch(x, SR, nperseg=2048)
    edges = np.geomspace(60, 8000, 21)
    bands = np.array([p[(f >= lo) & (f < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])])
    lb = np.log10(bands + 1e-12)
    lb -= lb.max()  # loudness invariant
    centroid = np.sum(f * p) / np.sum(p)
    zcr = np.mean(np.signbit(x[1:]) != np.signbit(x[:-1]))
    hop = 80  # 5 ms envelope
    env = _frame_rms(x, hop) + 1e-6
    le = np.maximum(20 * np.log10(env / env.max()), -60)
    ef, ep = signal.periodogram(le - le.mean(), SR / hop)
    mb = [0, 1, 3, 6, 10, 16, 25, 40, 100]
    mod = np.log10(np.array([ep[(ef >= lo) & (ef < hi)].sum() for lo, hi in zip(mb[:-1], mb[1:])]) + 1e-9)
    return np.concatenate([lb, [np.log10(centroid), zcr * 10, le.std() / 10, np.mean(le > -20)], mod / 2])


def _dataset(seeds):
    X, y = [], []
    for label in CLASSES:
        for s in seeds:
            dur = np.random.default_rng(s + 99).uniform(0.6, 1.6)
            X.append(_features(synth_event(label, dur, s)))
            y.append(label)
    return np.array(X), np.array(y)


def test_classes_are_recognisably_different():
    Xtr, ytr = _dataset(range(12))
    Xte, yte = _dataset(range(1000, 1012))  # held-out instances
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-9
    Ztr, Zte = (Xtr - mu) / sd, (Xte - mu) / sd
    cents = np.stack([Ztr[ytr == c].mean(0) for c in CLASSES])
    pred = np.array(CLASSES)[((Zte[:, None, :] - cents[None]) ** 2).sum(-1).argmin(1)]
    acc = float(np.mean(pred == yte))
    per_class = {c: float(np.mean(pred[yte == c] == c)) for c in CLASSES}
    assert acc >= 0.90, per_class
    assert min(per_class.values()) >= 0.5, per_class  # no class is mostly confused with another


# ----------------------------------------------------------------------------------------------
# timelines agree with the audio


def test_audio_contract_for_many_scenes():
    for i in range(80):
        scene, audio = _scene(5, i)
        assert audio.dtype == np.float32
        assert audio.shape == (N_CLIP,)
        assert np.all(np.isfinite(audio))
        assert np.max(np.abs(audio)) <= 1.0
        assert np.max(np.abs(audio)) > 0.01
        for ev in scene.events:
            assert 0.0 <= ev.onset < ev.offset <= CFG.clip_seconds + 1e-9, (i, ev)
            assert ev.label in CLASSES
        assert len(scene.gains_db) == len(scene.events)


def test_layouts_place_events_as_named():
    seen = set()
    for i in range(600):
        scene = sample_scene(clip_rng(77, i))
        seen.add(scene.layout)
        fg = scene.foreground
        onsets = [e.onset for e in fg]
        assert onsets == sorted(onsets), "foreground must be in time order"
        labels = [e.label for e in scene.events]
        assert len(set(labels)) == len(labels), "classes in a clip are distinct"
        assert 1 <= len(scene.events) <= 3
        if scene.layout == "single":
            assert len(fg) == 1 and scene.background is None
        elif scene.layout == "sequence":
            assert len(fg) in (2, 3) and scene.background is None
            for a, b in zip(fg, fg[1:]):
                assert a.offset <= b.onset, f"sequence events overlap: {a} {b}"
        elif scene.layout == "overlap":
            assert len(fg) == 2 and scene.background is None
            a, b = fg
            overlap = min(a.offset, b.offset) - max(a.onset, b.onset)
            assert overlap > 0.2, f"overlap layout barely overlaps: {fg}"
        elif scene.layout == "background":
            bg = scene.background
            assert bg is not None and bg.label in scenes.TEXTURES
            assert bg.label not in [e.label for e in fg]
            assert (bg.offset - bg.onset) >= 0.85 * CFG.clip_seconds
            for a, b in zip(fg, fg[1:]):
                assert a.offset <= b.onset
            assert scene.gains_db[-1] <= -6 + 1e-9, "a background bed sits under the foreground"
        else:
            pytest.fail(f"unknown layout {scene.layout!r}")
    assert seen == {"single", "sequence", "overlap", "background"}


def test_sequence_gaps_respect_min_gap():
    """WorldConfig.min_gap is the smallest silence between consecutive foreground events."""
    bad = []
    for i in range(3000):
        scene = sample_scene(clip_rng(3, i))
        for a, b in zip(scene.foreground, scene.foreground[1:]):
            if scene.layout != "overlap" and b.onset - a.offset < CFG.min_gap - 1e-9:
                bad.append((i, round(b.onset - a.offset, 4)))
    assert not bad, f"{len(bad)} gaps shorter than min_gap={CFG.min_gap}: {bad[:5]}"


@pytest.mark.parametrize("clip_seconds", [1.0, 1.28, 1.5])
def test_short_clips_work_or_are_refused_clearly(clip_seconds):
    """WorldConfig.clip_seconds is a parameter (notebooks expose it): a length the layouts cannot
    fit must be refused with a message about clip_seconds, not crash inside numpy."""
    i = None
    try:
        cfg = WorldConfig(clip_seconds=clip_seconds)
        for i in range(300):
            scene = sample_scene(clip_rng(0, i), cfg)
            for ev in scene.events:
                assert 0 <= ev.onset < ev.offset <= clip_seconds + 1e-9, (clip_seconds, ev)
    except ValueError as exc:
        assert "clip" in str(exc), f"clip_seconds={clip_seconds}: unhelpful error {exc!r} at draw {i}"


def test_energy_is_inside_the_labelled_spans():
    """Outside every span: only the noise floor. Inside each span: >= 20 dB above it."""
    margin = int(0.002 * SR)
    checked = 0
    for i in range(200):
        scene, audio = _scene(21, i)
        x = audio.astype(np.float64)
        covered = np.zeros(len(x), bool)
        for ev in scene.events:
            s, e = _span(ev, len(x))
            covered[max(s - margin, 0): e + margin] = True
        free = x[~covered]
        if free.size < int(0.05 * SR):
            continue
        checked += 1
        floor = _rms(free)
        assert floor <= 1.5 * CFG.noise_floor, f"clip {i}: energy leaks outside the events ({floor:.2e})"
        for ev in scene.events:
            s, e = _span(ev, len(x))
            assert _db(_rms(x[s:e]), floor) >= 20, (i, ev, _db(_rms(x[s:e]), floor))
    assert checked > 100


def _exclusive_mask(scene: Scene, ev: Event, n: int) -> np.ndarray:
    """Samples of ``ev``'s span that no other event covers."""
    mask = np.zeros(n, bool)
    s, e = _span(ev, n)
    mask[s:e] = True
    for other in scene.events:
        if other is not ev:
            s2, e2 = _span(other, n)
            mask[s2:e2] = False
    return mask


def test_short_time_energy_follows_the_timeline():
    frame = int(0.02 * SR)
    edge = int(0.05 * SR)
    thr = CFG.noise_floor * 10  # floor + 20 dB
    per_class = dict.fromkeys(CLASSES, 0)
    for i in range(400):
        scene, audio = _scene(33, i)
        x = audio.astype(np.float64)
        for ev in scene.foreground:
            mask = _exclusive_mask(scene, ev, len(x))
            s, e = _span(ev, len(x))
            if not mask[s:e].all():
                continue  # shared with another event: its frames say nothing about this one
            per_class[ev.label] += 1
            rms = _frame_rms(x[s:e], frame)
            loud = rms > thr
            if ev.label in CONTINUOUS:
                assert loud.mean() >= 0.6, (i, ev, loud.mean())
            # bursty classes may pause between bursts, but never for long
            assert _longest_run(~loud) * 0.02 <= 0.7, (i, ev, _longest_run(~loud))
            # the event starts at its onset and is still sounding right before its offset
            for name, w in (("onset", x[s:s + edge]), ("offset", x[e - edge:e])):
                assert _db(_rms(w), CFG.noise_floor) >= 6, (i, name, ev, _db(_rms(w), CFG.noise_floor))
            # and it is silent right outside its span where nothing else plays
            for w0, w1 in ((s - edge, s - 40), (e + 40, e + edge)):
                if w0 >= 0 and w1 <= len(x) and not any(
                        _span(o, len(x))[0] < w1 and _span(o, len(x))[1] > w0 for o in scene.events if o is not ev):
                    assert _rms(x[w0:w1]) <= 2 * CFG.noise_floor, (i, ev, w0, w1)
    assert min(per_class.values()) >= 5, per_class


@pytest.mark.parametrize("label", CLASSES)
def test_every_class_fills_its_span_in_isolation(label):
    """A hand-made single-event scene: the event's energy begins and ends at the labels."""
    frame, edge = int(0.02 * SR), int(0.05 * SR)
    rng = np.random.default_rng(CLASSES.index(label))
    for k in range(6):
        dur = float(rng.uniform(0.45, 1.8))
        on = float(rng.uniform(0.05, CFG.clip_seconds - dur - 0.05))
        ev = Event(label, on, on + dur)
        scene = Scene([ev], "single", None, [float(rng.uniform(-9, 0))])
        x = render_scene(scene, np.random.default_rng(k), CFG).astype(np.float64)
        s, e = _span(ev, len(x))
        floor = _rms(np.concatenate([x[: s - 40], x[e + 40:]]))
        assert floor <= 1.5 * CFG.noise_floor
        assert _db(_rms(x[s:e]), floor) >= 20
        assert _db(_rms(x[s:s + edge]), floor) >= 6, (label, dur, "onset")
        assert _db(_rms(x[e - edge:e]), floor) >= 6, (label, dur, "offset")
        loud = _frame_rms(x[s:e], frame) > floor * 10
        if label in CONTINUOUS:
            assert loud.mean() >= 0.6
        assert _longest_run(~loud) * 0.02 <= 0.7


def test_background_bed_spans_most_of_the_clip_in_audio():
    frame = int(0.02 * SR)
    n_bg = 0
    for i in range(300):
        rng = clip_rng(61, i)
        scene = sample_scene(rng, CFG)
        if scene.background is None:
            continue
        audio = render_scene(scene, rng, CFG)
        n_bg += 1
        loud = _frame_rms(audio, frame) > CFG.noise_floor * 10
        assert loud.mean() >= 0.85, (i, scene, loud.mean())
    assert n_bg >= 20
