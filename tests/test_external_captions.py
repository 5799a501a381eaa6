"""Real data with free-form captions (AudioCaps in Tango's manifest layout) becomes the run's world
and the stages that group prompts by kind take it; the world's own caption parser stays strict."""

import json

import numpy as np
import pytest

from t2a_lib.align import preferences
from t2a_lib.audio.manifest import ManifestRecord
from t2a_lib.audio.wav import write_wav
from t2a_lib.evaluate import evaluation
from t2a_lib.world import captions, datasets
from t2a_lib.world.captions import CaptionError, CallablePerturber, caption_kind, parse_caption

FREE = ["a man speaks", "A woman talks nearby as water pours", "Wind blows hard followed by screaming",
        "People laugh and speak", "A bus engine running followed by a bus horn honking"]
WORLD = "A dog barks, then a siren wails"  # a caption of the grammar


def audiocaps_manifests(folder):
    """Tango's data/{train,valid,test}_audiocaps.json layout: JSON lines, "dataset": "audiocaps",
    locations relative to the file, free captions, no timeline; one line without "dataset"."""
    out = {}
    for split in datasets.SPLITS:
        lines = []
        for i, cap in enumerate(FREE):
            rel = f"audiocaps/{split}/Y{split}{i:02d}.wav"
            t = np.arange(16000) / 16000
            write_wav(folder / rel, (0.2 * np.sin(2 * np.pi * (200 + 40 * i) * t)).astype(np.float32), durable=False)
            obj = {"dataset": "audiocaps", "location": rel, "captions": cap}
            if i == 3:
                del obj["dataset"]
            lines.append(json.dumps(obj))
        (folder / f"{split}_audiocaps.json").write_text("\n".join(lines) + "\n")
        out[split] = str(folder / f"{split}_audiocaps.json")
    return out


@pytest.fixture
def audiocaps_world(tmp_path):
    manifests = audiocaps_manifests(tmp_path / "data")
    run_dir = tmp_path / "run"
    info = datasets.use_external(run_dir / "world", manifests)
    return run_dir, info


def test_audiocaps_manifests_become_the_world_with_free_captions(audiocaps_world):
    run_dir, info = audiocaps_world
    assert info["source"] == "external" and info["sizes"] == {"train": 5, "val": 5, "test": 5}
    train = datasets.load_split(run_dir / "world", "train")
    assert [r.captions for r in train] == FREE and all(r.events is None for r in train)
    assert train[3].dataset is None and train[0].dataset == "audiocaps"
    # what notebook 00 does with them: the perturbation demo skips captions outside the grammar
    assert captions.perturbation_demo([r.captions for r in train], np.random.default_rng(0)) == []


def test_the_worlds_parser_stays_strict():
    with pytest.raises(CaptionError, match="cannot read 'a man speaks'"):
        parse_caption("a man speaks")
    assert list(parse_caption(WORLD).time_order) == ["dog_bark", "siren"]
    assert caption_kind("a man speaks") == "free" and caption_kind(WORLD) == "then"


def test_seed_prompts_take_free_captions_after_the_worlds_kinds():
    recs = [ManifestRecord("audiocaps", f"{i}.wav", c) for i, c in enumerate(FREE)]
    recs.append(ManifestRecord("world", "w.wav", WORLD))
    prompts = preferences.seed_prompts(recs, n=6, seed=0)
    assert prompts[0] == WORLD and sorted(prompts[1:]) == sorted(FREE)
    assert preferences.seed_prompts(recs, n=6, seed=0) == prompts


def test_plan_clips_of_a_free_prompt():
    config = preferences.PreferenceConfig()
    grammar = preferences.plan_clips(["a man speaks"], config)
    assert {c.group for c in grammar} == {"S1.1", "S1.2"}  # the grammar cannot perturb free text
    llm = CallablePerturber(lambda cap, kind, n: [f"a woman speaks {k}" for k in range(n)])
    with_llm = preferences.plan_clips(["a man speaks"], config, perturber=llm)
    assert sum(c.group == "S2" for c in with_llm) == config.s2_perturbations
    world = preferences.plan_clips([WORLD], config)
    assert any(c.group == "S3" for c in world)


def test_eval_sets_of_an_audiocaps_world(audiocaps_world):
    run_dir, _ = audiocaps_world
    sets = evaluation.build_eval_sets(run_dir, n_temporal=2, n_other_per_kind=3, n_integrity=1, n_temporal_baton=1)
    tango = sets["tango"]
    assert len(tango) == 3 and set(tango.kind) == {"free"} and set(tango.prompt) <= set(FREE)


def test_absent_data_says_what_to_fetch_and_where(tmp_path):
    manifests = audiocaps_manifests(tmp_path / "data")
    gone = {**manifests, "val": str(tmp_path / "data" / "valid_audiocaps.json")}
    with pytest.raises(FileNotFoundError, match=r"val: .*valid_audiocaps\.json.*declare-lab/tango's data/valid"):
        datasets.use_external(tmp_path / "run" / "world", gone)
    (tmp_path / "data" / "audiocaps" / "test" / "Ytest02.wav").unlink()
    with pytest.raises(Exception, match=r"(?s)test_audiocaps\.json line 3: .*Ytest02\.wav.*put each clip at"):
        datasets.use_external(tmp_path / "run" / "world", manifests)
