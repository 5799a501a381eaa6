"""The real-smoke profile's inputs: tiny random weights and small data sets in the real files' layouts.

    python tests/real_smoke_fixtures.py papermill_runs/real-smoke-data   # then
    python -m t2a_lib.run --profile real-smoke

writes, with nothing downloaded:

- ``tango/``: a tiny random Tango snapshot holding exactly declare-lab/tango2's published files
  (``checkpoint_fixtures.make_tiny_tango``), and ``flan-t5-large/`` beside it: the text encoder's config
  and tokenizer, which the snapshot does not hold (``text_encoder_path``);
- ``clap_judge/``, ``clap_ranker/``: two tiny random transformers ``ClapModel`` folders laid out like
  ``laion/clap-htsat-unfused`` (other seeds: the judges are not the rankers);
- ``audiocaps/``: an AudioCaps-format data set as Tango reads it (``train_audiocaps.json``,
  ``valid_audiocaps.json``, ``test_audiocaps_subset.json``: JSON lines ``{"dataset", "location",
  "captions"}``, locations relative to the file) over world clips of 2.56 s (the length the profile
  has the base sample, ``base_sample_seconds``, to keep CI quick), with free-form captions the world
  grammar cannot read and no timelines;
- ``Baton/data/HA/2label_HA.json`` (0/1 ``feedback``) and ``Baton/data/RM/2label_RA.json`` (scores under
  ``SED``): BATON's released label files as its repository lays them out, over clips at locations
  ``Baton/data/Audio/...`` relative to the folder holding ``Baton/`` (``baton_root``);
- ``audio-alpaca/data/train-00000-of-00001.parquet``: Tango 2's released preference set as the hub
  publishes it (columns ``prompt``, ``chosen``, ``rejected``, ``strategy``; audio cells are datasets'
  ``{bytes, path}`` structs holding the encoded wav), over the training clips.

The captions are free text made from each clip's timeline ("recorded outdoors: bark, siren"), so no
caption appears in two splits (the world splits by caption) and none parses.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # checkpoint_fixtures, when run as a script

from checkpoint_fixtures import make_tiny_tango  # noqa: E402

from t2a_lib.scoring.clap_real import make_tiny_clap  # noqa: E402
from t2a_lib.world.captions import parse_caption_or_none  # noqa: E402
from t2a_lib.world.datasets import build_world, load_split  # noqa: E402
from t2a_lib.world.scenes import WorldConfig  # noqa: E402

CLIP_SECONDS = 2.56  # the clips, and what the base samples (base_sample_seconds): Tango samples 10.24 s by default
SIZES = {"train": 16, "val": 6, "test": 8}
AUDIOCAPS_FILES = {"train": "train_audiocaps.json", "val": "valid_audiocaps.json", "test": "test_audiocaps_subset.json"}
SETTINGS = ["indoors", "outdoors", "in a room", "on a street", "far away", "close to the microphone"]


def free_caption(record, i: int) -> str:
    """An AudioCaps-like caption the world grammar cannot read, unique to the clip's own caption."""
    labels = ", ".join(e["label"].replace("_", " ") for e in record.events) or "silence"
    return f"recorded {SETTINGS[i % len(SETTINGS)]}: {labels} ({record.captions.lower().rstrip('.')})"


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def write_audiocaps(world: Path, out: Path) -> dict[str, str]:
    """The world's splits as Tango's AudioCaps manifests: wavs copied under ``out/audio``, free-form
    captions, no timelines, ids or relations. Returns ``{split: manifest path}``."""
    paths = {}
    for split, name in AUDIOCAPS_FILES.items():
        rows = []
        for i, r in enumerate(load_split(world, split)):
            rel = f"audio/{split}/{Path(r.location).name}"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(r.location, out / rel)
            caption = free_caption(r, i)
            assert parse_caption_or_none(caption) is None, caption
            rows.append({"dataset": "audiocaps", "location": rel, "captions": caption})
        paths[split] = _write_jsonl(out / name, rows)
    return paths


BATON_AUDIO = {"hd": "Baton/data/Audio/2label_Integrity_HD_Audio", "rd": "Baton/data/Audio/2label_Integrity_RD_Audio"}


def write_baton(world: Path, root: Path, seed: int = 0) -> dict[str, str]:
    """BATON's HA (0/1 feedback, alternating: random weights hear nothing to label) and RA (reward-model
    scores in [0, 1] under ``SED``) files over the world's validation and test clips, in BATON's literal
    layout under ``root`` (the folder holding the checkout): ``Baton/data/HA/2label_HA.json``,
    ``Baton/data/RM/2label_RA.json``, locations ``Baton/data/Audio/...`` relative to ``root``."""
    rng = np.random.default_rng(seed)
    rows = {"hd": [], "rd": []}
    for k, (split, name) in enumerate((("val", "hd"), ("test", "rd"))):
        for i, r in enumerate(load_split(world, split)):
            caption = free_caption(r, i + 3 * k)
            rel = f"{BATON_AUDIO[name]}/{i:04d}_{caption.split(':')[0]}_{i % 5}.wav"  # BATON's <n>_<caption>_<k>.wav
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(r.location, root / rel)
            if name == "hd":
                rows[name].append({"dataset": "2label_HA", "location": rel, "captions": caption,
                                   "feedback": int(i % 2 == 0)})
            else:
                rows[name].append({"dataset": "2label_RA", "location": rel, "captions": caption,
                                   "SED": round(float(rng.uniform()), 4)})
    return {"hd": _write_jsonl(root / "Baton" / "data" / "HA" / "2label_HA.json", rows["hd"]),
            "rd": _write_jsonl(root / "Baton" / "data" / "RM" / "2label_RA.json", rows["rd"]), "root": str(root)}


ALPACA_COLUMNS = ("prompt", "chosen", "rejected", "strategy")
ALPACA_STRATEGIES = ("inference steps", "temporal perturbation")  # the release's own labels, whatever they are


def write_alpaca_shard(path: Path, rows: list[dict], columns=ALPACA_COLUMNS) -> str:
    """One audio-alpaca parquet shard of ``rows`` (only ``columns``): prompt and strategy strings,
    chosen and rejected as datasets' Audio feature stores them in parquet, ``{bytes, path}``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    audio = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = {"prompt": pa.string(), "chosen": audio, "rejected": audio, "strategy": pa.string()}
    schema = pa.schema([(c, fields[c]) for c in columns])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows], schema=schema), path)
    return str(path)


def write_audio_alpaca(world: Path, out: Path) -> str:
    """A pair for every two training clips: the first is the winner, the second the loser, the
    prompt is the first's free caption. Returns the copy's folder (what ``audio_alpaca_path`` takes)."""
    records = load_split(world, "train")
    rows = []
    for i in range(0, len(records) - 1, 2):
        cell = [{"bytes": Path(r.location).read_bytes(), "path": Path(r.location).name} for r in records[i:i + 2]]
        rows.append({"prompt": free_caption(records[i], i), "chosen": cell[0], "rejected": cell[1],
                     "strategy": ALPACA_STRATEGIES[(i // 2) % len(ALPACA_STRATEGIES)]})
    write_alpaca_shard(out / "data" / "train-00000-of-00001.parquet", rows)
    return str(out)


def write_fixtures(folder, seed: int = 0) -> dict:
    """Write every input of the real-smoke profile into ``folder``; returns their paths."""
    folder = Path(folder)
    make_tiny_tango(folder / "tango", seed=seed)
    make_tiny_clap(folder / "clap_judge", seed=seed + 1)
    make_tiny_clap(folder / "clap_ranker", seed=seed + 2)
    world = folder / "world-source"
    build_world(world, SIZES["train"], SIZES["val"], SIZES["test"], seed=seed,
                config=WorldConfig(clip_seconds=CLIP_SECONDS), workers=1, progress=False)
    manifests = write_audiocaps(world, folder / "audiocaps")
    baton = write_baton(world, folder, seed)
    return {"tango": str(folder / "tango"), "text_encoder": str(folder / "flan-t5-large"), "clap_judge": str(folder / "clap_judge"),
            "clap_ranker": str(folder / "clap_ranker"), "manifests": manifests, "baton": baton,
            "audio_alpaca": write_audio_alpaca(world, folder / "audio-alpaca")}


def overrides(paths: dict) -> dict:
    """The runner's ``--set`` overrides that point the real-smoke profile at fixtures written elsewhere."""
    return {"00_world.external_manifests": paths["manifests"], "01_judges.real_clap_path": paths["clap_judge"],
            "01_judges.real_ranker_clap_path": paths["clap_ranker"], "02_base_model.base_checkpoint": paths["tango"],
            "02_base_model.text_encoder_path": paths["text_encoder"],
            "05_feedback.baton_hd_file": paths["baton"]["hd"], "05_feedback.baton_rd_file": paths["baton"]["rd"],
            "05_feedback.baton_root": paths["baton"]["root"]}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/real_smoke_fixtures.py FOLDER  (e.g. papermill_runs/real-smoke-data)")
    print(json.dumps(write_fixtures(sys.argv[1]), indent=1))
