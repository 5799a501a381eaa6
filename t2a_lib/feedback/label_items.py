"""What people listen to and label, read straight from a run folder, and who labels which.

- ``pair_items``: the winner/loser pairs of the preference set (notebook 03,
  ``preferences/preferences.parquet``) and of the gold set (``gold/preferences.parquet``).
- ``feedback_items``: BATON's human-feedback clips (notebook 05, ``baton/hd/clips.parquet``),
  each with its task and question (``reward.TASKS``).
- ``assign``: a participant's share of the items: a seeded order of the items, cut in windows
  that overlap, so every item is heard by about ``raters`` people and neighbours share items
  (what agreement is computed on).
- ``resolve_run_dir``: a relative run folder means the same from the repository root (where
  papermill runs) and from ``notebooks/`` (where ``make lab`` opens JupyterLab).

Audio paths come back absolute, whatever the working folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..audio.manifest import ManifestRecord

PAIR_SETS = ("preferences", "gold")
MARKER = Path("papermill_runs") / "profiles"  # what makes a folder the project root


def find_project_root(start=None) -> Path | None:
    """The nearest folder at or above ``start`` (default: the working folder) holding
    ``papermill_runs/profiles``; None when there is none."""
    here = Path(start or os.getcwd()).resolve()
    return next((p for p in (here, *here.parents) if (p / MARKER).is_dir()), None)


def resolve_run_dir(run_dir) -> Path:
    """An absolute run folder. A relative one is taken from the working folder when it exists
    there, else from the project root (so ``papermill_runs/dev`` works from ``notebooks/``)."""
    run_dir = Path(run_dir)
    if run_dir.is_absolute() or run_dir.exists():
        return run_dir.absolute()
    root = find_project_root()
    return (root / run_dir if root else run_dir).absolute()


def _absolute(folder: Path, location: str) -> str:
    return location if os.path.isabs(location) else str((folder / location).resolve())


def pair_items(run_dir, sets=PAIR_SETS) -> pd.DataFrame:
    """Every winner/loser pair with both clips on disk: pair_id, prompt, chosen, rejected
    (absolute paths), strategy, set, ranker_right (the rankers' scores put the chosen clip first: 1 /
    0, NaN where the set has no scores). Raises ``FileNotFoundError`` naming what was looked for."""
    run_dir, frames = resolve_run_dir(run_dir), []
    for name in sets:
        path = run_dir / name / "preferences.parquet"
        if not path.is_file():
            continue
        df = pd.read_parquet(path)
        missing = [c for c in ("prompt", "chosen", "rejected", "strategy", "chosen_id", "rejected_id")
                   if c not in df]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}")
        df = df[(df.chosen != "") & (df.rejected != "")]
        frames.append(pd.DataFrame({
            "pair_id": [f"{a}~{b}" for a, b in zip(df.chosen_id, df.rejected_id)],
            "prompt": df.prompt.astype(str), "strategy": df.strategy.astype(str), "set": name,
            "chosen": [_absolute(path.parent, c) for c in df.chosen],
            "rejected": [_absolute(path.parent, r) for r in df.rejected],
            # the rankers' own verdict where the set keeps their scores (gold pairs do): 1 right, 0 wrong
            "ranker_right": ((df.chosen_score > df.rejected_score).astype(float) if "chosen_score" in df
                             else np.nan)}))
    if not frames:
        wanted = ", ".join(str(run_dir / s / "preferences.parquet") for s in sets)
        raise FileNotFoundError(f"no preference pairs in {run_dir} (looked for {wanted}); run notebook 03")
    items = pd.concat(frames, ignore_index=True)
    repeat = items.groupby("pair_id").cumcount()
    items["pair_id"] = [p if k == 0 else f"{p}#{k}" for p, k in zip(items.pair_id, repeat)]
    absent = [p for p in pd.concat([items.chosen, items.rejected]) if not os.path.isfile(p)]
    if absent:
        raise FileNotFoundError(f"{len(absent)} pair audio file(s) missing, e.g. {absent[:3]}")
    return items


def feedback_items(run_dir, folder: str = "baton/hd") -> pd.DataFrame:
    """BATON's human-feedback clips: id, task, question, dataset, location (absolute), captions.
    The audio is ``<folder>/audio/<id>.wav`` (``reward.sample_set``), wherever the run moved."""
    from .reward import TASKS

    path = resolve_run_dir(run_dir) / folder / "clips.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no feedback clips; run notebook 05 (its sampling cell) first")
    df = pd.read_parquet(path)
    unknown = sorted(set(df.task) - set(TASKS))
    if unknown:
        raise ValueError(f"{path}: unknown task(s) {unknown}; known: {list(TASKS)}")
    items = pd.DataFrame({"id": df.id.astype(str), "task": df.task, "question": df.task.map(TASKS),
                          "dataset": "world-baton", "captions": df.caption.astype(str),
                          "location": [str(path.parent / "audio" / f"{i}.wav") for i in df.id]})
    absent = [p for p in items.location if not os.path.isfile(p)]
    if absent:
        raise FileNotFoundError(f"{len(absent)} feedback audio file(s) missing, e.g. {absent[:3]}")
    return items


# the answer the world knows to each BATON question, for a gold pair's winner ("chosen") and for its
# loser by the gold kind: a "presence" loser misses an event, an "order" loser has two trade places
GOLD_ANSWERS = {"integrity": {"chosen": 1.0, "presence": 0.0, "order": 1.0}, "temporal": {"chosen": 1.0, "order": 0.0}}


def truth_clips(run_dir) -> pd.DataFrame:
    """Clips whose answer to BATON's questions is known: the gold pairs' rendered audio (notebook
    03), the winner and the loser each asked the questions ``GOLD_ANSWERS`` answers. Columns of
    ``feedback_items`` plus ``truth`` (1 yes / 0 no); empty without gold audio."""
    from .reward import TASKS

    path = resolve_run_dir(run_dir) / "gold" / "preferences.parquet"
    columns = ["id", "task", "question", "dataset", "captions", "location", "truth"]
    df = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
    if "kind" not in df:
        return pd.DataFrame(columns=columns)
    rows = []
    for r in df[(df.chosen != "") & (df.rejected != "")].itertuples():
        for task, answers in GOLD_ANSWERS.items():
            for clip_id, clip, key in ((r.chosen_id, r.chosen, "chosen"), (r.rejected_id, r.rejected, r.kind)):
                if key in answers:
                    rows.append({"id": f"gold-{clip_id}", "task": task, "question": TASKS[task], "dataset": "world-gold",
                                 "captions": str(r.prompt), "location": _absolute(path.parent, clip), "truth": answers[key]})
    return pd.DataFrame(rows, columns=columns)


def records(items: pd.DataFrame) -> list[ManifestRecord]:
    """Feedback items as manifest records (what ``FeedbackLabeller`` takes)."""
    return [ManifestRecord(r.dataset, r.location, r.captions, id=r.id) for r in items.itertuples()]


def assign(n_items: int, index: int, per_person: int, raters: int = 2, seed: int = 0) -> list[int]:
    """The item indices of the ``index``-th participant (0-based, in order of joining).

    The items are put in a seeded order; participant k gets ``per_person`` consecutive items of
    it starting at k * stride (stride = per_person // raters, at least 1), wrapping around. So
    once the participants go round the list, each item is heard by about ``raters`` people, and
    neighbours share per_person - stride items."""
    if n_items <= 0:
        return []
    if per_person < 1 or raters < 1 or index < 0:
        raise ValueError(f"need per_person >= 1, raters >= 1, index >= 0 (got {per_person}, {raters}, {index})")
    order = np.random.default_rng(seed).permutation(n_items)
    stride = max(1, per_person // raters)
    start = index * stride
    return [int(order[(start + j) % n_items]) for j in range(min(per_person, n_items))]


def assign_with_truth(n_items: int, n_truth: int, index: int, per_person: int, raters: int = 2,
                      seed: int = 0, every: int = 4) -> list[tuple[str, int]]:
    """A share that mixes items whose truth is known (gold pairs) into the others, about one in
    ``every``: ``[("items", i) | ("truth", j), ...]``. The truth items sit at positions every-1,
    2*every-1, ... (the last position when the share is shorter); each pool is cut as ``assign``
    cuts it, so the known items rotate through the room too."""
    k = 0 if n_truth <= 0 or per_person < 2 else min(n_truth, max(1, round(per_person / every)))
    if n_items <= 0:
        k = min(n_truth, per_person)
    rest = assign(n_items, index, per_person - k, raters, seed)
    truth = assign(n_truth, index, k, raters, seed + 1) if k else []
    slots = sorted({min((j + 1) * every, len(rest) + k) - 1 for j in range(k)})
    slots += [s for s in range(len(rest) + k - 1, -1, -1) if s not in slots][:k - len(slots)]
    out, rest_iter, truth_iter = [], iter(rest), iter(truth)
    for position in range(len(rest) + len(truth)):
        out.append(("truth", next(truth_iter)) if position in slots else ("items", next(rest_iter)))
    return out
