"""The per-clip judge tables behind every claim, written where a reader can recompute each row.

``<run_dir>/tables/per_clip/<prompt set>/<model>_s<seed>.parquet`` holds one model seed's judged
clips on one evaluation set (the base model as ``base_s0``): the caption, the subset columns
(``relation``, ``n_events``, ``task``) and every judge metric, ranker-judge gap columns included.
From these files and :data:`t2a_lib.evaluate.claims.CLAIMS` alone,
``claims.answer_all(read_per_clip(run_dir))`` gives the claims table again.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd

PER_CLIP_DIR = Path("tables") / "per_clip"
NAME = re.compile(r"^(?P<model>.+)_s(?P<seed>\d+)\.parquet$")


def write_per_clip(run_dir, tables: dict[str, dict[str, list[pd.DataFrame]]]) -> Path:
    """Write ``tables[prompt set][model id]`` (each seed's judge table) under the run's
    ``tables/per_clip``, replacing what an earlier run of notebook 07 left there (built in a temporary
    folder and swapped in, so a reader never meets a half-written set). Returns the folder."""
    out = Path(run_dir) / PER_CLIP_DIR
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for prompt_set, models in tables.items():
        (tmp / prompt_set).mkdir(parents=True, exist_ok=True)
        for model_id, seeds in models.items():
            for k, table in enumerate(seeds):
                table.reset_index(drop=True).to_parquet(tmp / prompt_set / f"{model_id}_s{k}.parquet", index=False)
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def read_per_clip(run_dir) -> dict[str, dict[str, list[pd.DataFrame]]]:
    """What :func:`write_per_clip` wrote: ``{prompt set: {model id: [table of seed 0, 1, ...]}}``."""
    root = Path(run_dir) / PER_CLIP_DIR
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no per-clip tables (notebook 07 writes them)")
    out: dict[str, dict[str, list[pd.DataFrame]]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        found = {}
        for path in folder.glob("*.parquet"):
            m = NAME.match(path.name)
            if m is None:
                raise ValueError(f"{path}: not a per-clip table name (<model>_s<seed>.parquet)")
            found.setdefault(m["model"], {})[int(m["seed"])] = pd.read_parquet(path)
        for model_id, seeds in found.items():
            if sorted(seeds) != list(range(len(seeds))):
                raise ValueError(f"{folder}: {model_id}'s seeds are {sorted(seeds)}, not 0..{len(seeds) - 1}")
        out[folder.name] = {m: [seeds[k] for k in range(len(seeds))] for m, seeds in sorted(found.items())}
    return out
