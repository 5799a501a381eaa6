"""World datasets on disk: manifests, wavs (checked with soundfile directly), splits, caching."""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from t2a_lib.audio.manifest import read_manifest
from t2a_lib.world import datasets
from t2a_lib.world.captions import parse_caption
from t2a_lib.world.scenes import CLASSES, WorldConfig

SIZES = {"train": 30, "val": 8, "test": 8}
SEED = 3
SR = 16000
CLIP_S = WorldConfig().clip_seconds
N = int(round(CLIP_S * SR))
SPLITS = ("train", "val", "test")


def _build(folder, seed=SEED, **kw):
    return datasets.build_world(folder, SIZES["train"], SIZES["val"], SIZES["test"], seed=seed,
                                workers=kw.pop("workers", 2), progress=False, **kw)


@pytest.fixture(scope="module")
def world_a(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world_a")
    info = _build(folder)
    return folder, info


@pytest.fixture(scope="module")
def world_b(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world_b")
    return folder, _build(folder, workers=1)


def _json(d):
    """As world.json stores it (a fresh build returns tuples where the file has lists)."""
    return json.loads(json.dumps(d))


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def _audio_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((folder / "audio").rglob("*.wav"))}


def _records(folder):
    return {s: read_manifest(Path(folder) / f"{s}.jsonl") for s in SPLITS}


# ----------------------------------------------------------------------------------------------


def test_layout_on_disk(world_a):
    folder, info = world_a
    for s in SPLITS:
        assert (folder / f"{s}.jsonl").is_file(), f"{s}.jsonl missing"
    assert (folder / "world.json").is_file()
    on_disk = json.loads((folder / "world.json").read_text())
    assert on_disk == _json(info)
    assert info["seed"] == SEED and info["sizes"] == SIZES


def test_manifests_read_and_sizes_match(world_a):
    folder, _ = world_a
    recs = _records(folder)
    for s in SPLITS:
        assert len(recs[s]) == SIZES[s], s
        assert recs[s] == datasets.load_split(folder, s)
        for r in recs[s]:
            assert r.dataset and r.captions and r.id and r.events
    ids = [r.id for s in SPLITS for r in recs[s]]
    assert len(set(ids)) == len(ids)
    # the raw lines are Tango's format plus the timeline
    for s in SPLITS:
        for line in (folder / f"{s}.jsonl").read_text().splitlines():
            obj = json.loads(line)
            assert {"dataset", "location", "captions", "events"} <= set(obj)
            assert not os.path.isabs(obj["location"]), "locations are relative to the world folder"
    with pytest.raises(ValueError):
        datasets.load_split(folder, "dev")


def test_every_location_is_a_16k_mono_wav_of_clip_length(world_a):
    folder, _ = world_a
    for s, recs in _records(folder).items():
        for r in recs:
            path = Path(r.location)
            assert path.is_file(), r.location
            assert path.resolve().is_relative_to(folder.resolve())
            info = sf.info(str(path))
            assert info.format == "WAV"
            assert info.samplerate == SR and info.channels == 1
            assert info.frames == N, (r.location, info.frames)
            x, sr = sf.read(str(path), dtype="float64")
            assert sr == SR and x.shape == (N,)
            assert np.all(np.isfinite(x)) and np.max(np.abs(x)) <= 1.0
            assert np.max(np.abs(x)) > 0.01, f"{r.location} is nearly silent"


def test_audio_energy_follows_the_manifest_timeline(world_a):
    folder, _ = world_a
    checked = 0
    for recs in _records(folder).values():
        for r in recs:
            x, _ = sf.read(r.location, dtype="float64")
            covered = np.zeros(len(x), bool)
            for e in r.events:
                covered[max(int(e["onset"] * SR) - 64, 0): int(e["offset"] * SR) + 64] = True
            free = x[~covered]
            if free.size < 1600:
                continue
            floor = np.sqrt(np.mean(free ** 2)) + 1e-9
            for e in r.events:
                seg = x[int(e["onset"] * SR): int(e["offset"] * SR)]
                assert 20 * np.log10(np.sqrt(np.mean(seg ** 2)) / floor) >= 20, (r.location, e)
            checked += 1
    assert checked >= 10


def test_no_caption_in_two_splits(world_a):
    folder, _ = world_a
    recs = _records(folder)
    caps = {s: {r.captions.strip().lower() for r in recs[s]} for s in SPLITS}
    assert not caps["train"] & caps["val"]
    assert not caps["train"] & caps["test"]
    assert not caps["val"] & caps["test"]


def test_caption_split_is_deterministic_and_proportional():
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    rng = np.random.default_rng(0)
    caps = [f"caption {i} {rng.integers(1 << 30)}" for i in range(20000)]
    got = Counter(datasets.caption_split(c, fractions) for c in caps)
    for s, f in fractions.items():
        assert abs(got[s] / len(caps) - f) < 0.015, got
    for c in caps[:100]:
        assert datasets.caption_split(c, fractions) == datasets.caption_split("  " + c.upper() + " ", fractions)


def test_events_match_the_caption(world_a):
    folder, _ = world_a
    for s, recs in _records(folder).items():
        for r in recs:
            spec = parse_caption(r.captions)
            labels = [e["label"] for e in r.events]
            assert sorted(labels) == sorted(spec.all_labels), (r.captions, labels)
            assert set(labels) <= set(CLASSES)
            assert r.relation == spec.kind
            for e in r.events:
                assert 0.0 <= e["onset"] < e["offset"] <= CLIP_S + 1e-6
            fg = sorted((e for e in r.events if e["label"] != spec.background), key=lambda e: e["onset"])
            if spec.time_order is not None:
                assert [e["label"] for e in fg] == spec.time_order, r.captions
                for a, b in zip(fg, fg[1:]):
                    assert a["offset"] <= b["onset"]
            else:
                a, b = fg
                assert min(a["offset"], b["offset"]) > max(a["onset"], b["onset"]), r.captions


def test_world_json_stats_agree_with_manifests(world_a):
    folder, info = world_a
    recs = _records(folder)
    for s in SPLITS:
        st = info["stats"][s]
        assert st["clips"] == SIZES[s]
        assert st["unique_captions"] == len({r.captions for r in recs[s]})
        assert st["relations"] == dict(Counter(r.relation for r in recs[s]))
        assert st["classes"] == dict(Counter(e["label"] for r in recs[s] for e in r.events))
    assert info["config"]["clip_seconds"] == CLIP_S


def test_second_build_is_a_cache_hit(world_a):
    folder, info = world_a
    before = _snapshot(folder)
    t0 = time.time()
    again = _build(folder)
    assert time.time() - t0 < 2.0
    assert _json(again) == _json(info)
    assert _snapshot(folder) == before, "a cache hit must not touch any file"


def test_changed_inputs_rebuild(tmp_path):
    folder = tmp_path / "w"
    _build(folder)
    first = _audio_hashes(folder)
    # a different clip length is a different world, even in the same folder
    cfg = WorldConfig(clip_seconds=2.0)
    info = datasets.build_world(folder, SIZES["train"], SIZES["val"], SIZES["test"], seed=SEED,
                                config=cfg, workers=1, progress=False)
    assert info["config"]["clip_seconds"] == 2.0
    for recs in _records(folder).values():
        for r in recs:
            assert sf.info(r.location).frames == int(round(2.0 * SR))
    assert _audio_hashes(folder) != first


def test_different_seed_gives_different_audio(world_a, tmp_path):
    folder, _ = world_a
    other = tmp_path / "seed_other"
    _build(other, seed=SEED + 1)
    a, b = set(_audio_hashes(folder).values()), set(_audio_hashes(other).values())
    assert len(a) == sum(SIZES.values())
    assert not a & b
    caps_a = [r.captions for recs in _records(folder).values() for r in recs]
    caps_b = [r.captions for recs in _records(other).values() for r in recs]
    assert caps_a != caps_b


def test_builds_are_deterministic_across_folders_and_workers(world_a, world_b):
    (fa, ia), (fb, ib) = world_a, world_b
    for s in SPLITS:
        la = [json.loads(x) for x in (fa / f"{s}.jsonl").read_text().splitlines()]
        lb = [json.loads(x) for x in (fb / f"{s}.jsonl").read_text().splitlines()]
        for d in la + lb:
            d.pop("location")
        assert la == lb, s
    ha, hb = _audio_hashes(fa), _audio_hashes(fb)
    assert ha == hb  # same relative paths, same bytes
    strip = lambda d: {k: v for k, v in _json(d).items() if k != "build_seconds"}
    assert strip(ia) == strip(ib)


def test_plan_world_rejects_empty_sizes():
    with pytest.raises(ValueError):
        datasets.plan_world({"train": 0, "val": 0, "test": 0}, 0, WorldConfig())


def test_plan_world_fills_quotas_and_respects_split_hash():
    sizes = {"train": 40, "val": 10, "test": 10}
    plan = datasets.plan_world(sizes, 5, WorldConfig())
    assert Counter(c.split for c in plan) == Counter(sizes)
    fractions = {s: n / sum(sizes.values()) for s, n in sizes.items()}
    for c in plan:
        assert datasets.caption_split(c.caption, fractions) == c.split
    assert len({c.index for c in plan}) == len(plan)
