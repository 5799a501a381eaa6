"""Write world datasets: wavs + Tango-format JSON-lines manifests with the timeline attached.

``build_world`` plans scenes and captions (cheap), splits them by a hash of the caption text so
no caption appears in two splits, then renders the audio in parallel. The output folder holds::

    world.json            config, seed, sizes, statistics, build time, and the cache key
    train.jsonl val.jsonl test.jsonl
    audio/<split>/<id>.wav

A second call with the same inputs finds ``world.json`` with the same key and returns at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..audio.wav import write_wav
from .captions import caption_scene
from ..run.files import read_json, write_json
from ..audio.manifest import ManifestRecord, read_manifest, write_manifest
from .scenes import Scene, WorldConfig, clip_rng, render_scene, sample_scene

SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1


@dataclass
class PlannedClip:
    index: int
    split: str
    caption: str
    kind: str
    scene: Scene


def caption_split(caption: str, fractions: dict[str, float]) -> str:
    """Deterministic split of a caption from a hash of its normalised text."""
    h = int.from_bytes(hashlib.sha1(caption.strip().lower().encode()).digest()[:8], "big") / 2 ** 64
    edge = 0.0
    for split in ("test", "val", "train"):
        edge += fractions[split]
        if h < edge:
            return split
    return "train"


def plan_world(sizes: dict[str, int], seed: int, config: WorldConfig, max_tries: int = 100) -> list[PlannedClip]:
    """Draw scenes and captions until every split has its quota (rejection by caption hash)."""
    total = sum(sizes.values())
    if total <= 0:
        raise ValueError(f"world sizes must add up to at least one clip, got {sizes}")
    fractions = {s: sizes[s] / total for s in SPLITS}
    counts, plan, i = dict.fromkeys(SPLITS, 0), [], 0
    while any(counts[s] < sizes[s] for s in SPLITS):
        if i > max_tries * total:
            raise RuntimeError(f"could not fill splits {sizes} after {i} draws (got {counts})")
        rng = clip_rng(seed, i)
        scene = sample_scene(rng, config)
        caption, spec = caption_scene(scene, rng)
        split = caption_split(caption, fractions)
        if counts[split] < sizes[split]:
            counts[split] += 1
            plan.append(PlannedClip(i, split, caption, spec.kind, scene))
        i += 1
    return plan


def _render_one(args) -> tuple[int, str]:
    clip, seed, config, out_dir = args
    audio = render_scene(clip.scene, np.random.default_rng([seed, clip.index, 1]), config)
    rel = f"audio/{clip.split}/{clip.split}_{clip.index:07d}.wav"
    write_wav(Path(out_dir) / rel, audio, config.sample_rate, durable=False)  # world.json is written last
    return clip.index, rel


def _world_key(sizes, seed, config) -> str:
    blob = json.dumps({"sizes": sizes, "seed": seed, "config": config.to_dict(), "v": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_world(out_dir, n_train: int, n_val: int, n_test: int, seed: int = 0,
                config: WorldConfig | None = None, workers: int | None = None,
                progress: bool = True, overwrite: bool = False) -> dict:
    """Generate (or find already generated) world splits in ``out_dir``; returns world.json's dict."""
    config = config or WorldConfig()
    out_dir = Path(out_dir)
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    bad = [f"n_{s}={n!r}" for s, n in sizes.items() if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1]
    if bad:  # refused before the old world is touched
        raise ValueError(f"build_world: {', '.join(bad)}: every split needs at least one clip")
    sizes = {k: int(v) for k, v in sizes.items()}
    key = _world_key(sizes, seed, config)
    info_path = out_dir / "world.json"
    if info_path.exists() and not overwrite:  # a cache hit needs the same key and every wav present
        info = read_json(info_path, "world record")
        if info.get("key") == key and all((out_dir / f"{s}.jsonl").exists() for s in SPLITS):
            if all(Path(r.location).exists() for s in SPLITS for r in load_split(out_dir, s)):
                return info
    t0 = time.time()
    info_path.unlink(missing_ok=True)  # written last: its presence means the world is complete
    plan = plan_world(sizes, seed, config)
    workers = workers or min(len(os.sched_getaffinity(0)), 8)
    jobs = [(c, seed, config, str(out_dir)) for c in plan]
    with ProcessPoolExecutor(workers) as pool:
        locations = dict(tqdm(pool.map(_render_one, jobs, chunksize=64), total=len(jobs),
                              desc="rendering world", disable=not progress))
    for split in SPLITS:
        records = [ManifestRecord(dataset="world", location=locations[c.index], captions=c.caption,
                                  id=f"{split}_{c.index:07d}", events=c.scene.timeline(), relation=c.kind)
                   for c in plan if c.split == split]
        write_manifest(out_dir / f"{split}.jsonl", records)
    info = {"key": key, "seed": seed, "sizes": sizes, "config": config.to_dict(),
            "format_version": FORMAT_VERSION, "build_seconds": round(time.time() - t0, 2),
            "draws": plan[-1].index + 1, "stats": world_stats(plan)}
    write_json(info_path, info, indent=2)
    return info


EXTERNAL_HOW_TO = ("For AudioCaps as Tango reads it, fetch declare-lab/tango's data/valid_audiocaps.json and "
                   "test_audiocaps_subset.json, a train file in that layout (e.g. Hannieliao/Baton's "
                   "data/Audiocaps/train_audiocaps.json; JSON lines: location, captions, dataset optional) "
                   "and the AudioCaps clips as 16 kHz wavs; put each clip at its line's "
                   "'location' (absolute, or relative to the manifest's folder) and pass "
                   "external_manifests={train: ..., val: ..., test: ...}")


def use_external(out_dir, manifests: dict[str, str], audio_root=None) -> dict:
    """Make ``out_dir`` the world of real data: every row of each split's manifest validated (its
    audio read; an error names the manifest and line), then the manifests copied to
    ``out_dir/<split>.jsonl``, where every later stage reads its data, and ``world.json`` written
    last, recording where they came from and a key of their content. A location not found is looked
    for under ``audio_root`` (:func:`t2a_lib.audio.locations.reroot`: Tango's manifests name
    ``/data/deep/audioset/...``). Silent clips and clips shorter than one mel window (AudioCaps has
    some) are counted and left out with one warning; a missing or unreadable clip is an error."""
    from ..audio.locations import reroot_records
    from ..audio.manifest import ManifestError

    out_dir = Path(out_dir)
    missing = [s for s in SPLITS if s not in (manifests or {})]
    if missing:
        raise ManifestError(f"external_manifests lacks {', '.join(missing)} (give train, val and test)")
    absent = [f"{s}: {manifests[s]}" for s in SPLITS if not Path(manifests[s]).is_file()]
    if absent:
        raise FileNotFoundError(f"external_manifests: no manifest at {'; '.join(absent)}. {EXTERNAL_HOW_TO}")
    (out_dir / "world.json").unlink(missing_ok=True)  # an old world stops being the world now
    splits, problems, skipped, h = {}, [], {}, hashlib.sha256()
    for split in SPLITS:
        records = read_manifest(manifests[split])
        reroot_records(records, audio_root)
        h.update(Path(manifests[split]).read_bytes())
        splits[split] = [r for r in records if _usable_clip(r, h, problems, skipped)]
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise ManifestError(f"{len(problems)} bad row(s) in the external manifests:\n  " + "\n  ".join(shown)
                            + f"\n{EXTERNAL_HOW_TO}")
    if skipped:
        first = next(iter(skipped.values()))
        warnings.warn(f"left out {len(skipped)} silent or too short clip(s) of the external manifests "
                      f"(first: {first})", UserWarning, stacklevel=2)
    for split, records in splits.items():
        write_manifest(out_dir / f"{split}.jsonl", records)
    info = {"source": "external", "key": h.hexdigest()[:16], "manifests": {s: str(Path(p).resolve())
            for s, p in manifests.items()}, "sizes": {s: len(r) for s, r in splits.items()},
            "audio_root": str(Path(audio_root).resolve()) if audio_root else None,
            "skipped": {"clips": len(skipped), "first": next(iter(skipped.values()), None)},
            "format_version": FORMAT_VERSION}
    write_json(out_dir / "world.json", info, indent=2)
    return info


MIN_CLIP_SAMPLES = 1024  # one mel window


def _usable_clip(rec, h, problems: list, skipped: dict) -> bool:
    """Read one clip: True when usable (its bytes hashed into ``h``); a silent or too short clip is
    noted in ``skipped``, a missing or unreadable one in ``problems``."""
    from ..audio.wav import SILENCE_PEAK, AudioError, read_wav

    where = f"{rec.source} line {rec.line}"
    try:
        wave = read_wav(rec.location, allow_silent=True)
    except AudioError as e:
        if "(0 samples)" not in str(e):  # an empty file is the shortest clip, not a broken one
            problems.append(f"{where}: {e}")
            return False
        wave = np.zeros(0, np.float32)
    except FileNotFoundError as e:
        problems.append(f"{where}: {e}")
        return False
    if len(wave) < MIN_CLIP_SAMPLES or float(np.max(np.abs(wave))) < SILENCE_PEAK:
        why = f"{len(wave)} samples" if len(wave) < MIN_CLIP_SAMPLES else f"silent (peak < {SILENCE_PEAK:g})"
        skipped[where] = f"{where}: {rec.location}: {why}"
        return False
    h.update(Path(rec.location).read_bytes())
    return True


def require_world(world_dir) -> dict:
    """``world.json`` of a complete world (00_world writes it last), else an error saying so."""
    path = Path(world_dir) / "world.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no complete world here (00_world writes it last); run 00_world "
                                f"for this run folder first")
    return read_json(path, "world record")


def world_stats(plan: list[PlannedClip]) -> dict:
    """Counts per split of relation kinds, classes, and events per clip."""
    stats = {}
    for split in SPLITS:
        clips = [c for c in plan if c.split == split]
        kinds, classes, n_events = {}, {}, {}
        for c in clips:
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
            for e in c.scene.events:
                classes[e.label] = classes.get(e.label, 0) + 1
            k = str(len(c.scene.events))
            n_events[k] = n_events.get(k, 0) + 1
        stats[split] = {"clips": len(clips), "unique_captions": len({c.caption for c in clips}),
                        "relations": kinds, "classes": classes, "events_per_clip": n_events}
    return stats


def load_split(world_dir, split: str) -> list[ManifestRecord]:
    """Read one split's manifest (locations resolved against the world folder)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    return read_manifest(Path(world_dir) / f"{split}.jsonl")
