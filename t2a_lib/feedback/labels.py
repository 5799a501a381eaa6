"""People's answers on disk: append-only logs, their folding and merging (``agreement`` measures how far
the labellers agree).

Shared by the notebook widgets (:mod:`t2a_lib.feedback.widgets`) and the workshop server
(:mod:`t2a_lib.feedback.workshop`, served by ``workshop_server``), so a file written by one is read by the other.

- A **log** is JSON lines, one per click, appended with flush + fsync (``append_jsonl``); an
  undo appends ``{<id key>: ..., "undo": true}``. Folding a log (``fold``) gives the standing
  answer per item: the latest wins, an undo removes it. Nothing is ever rewritten.
- **Pair answers** (Tango 2 blind A/B): {pair_id, prompt, listener, choice ("chosen" |
  "rejected" | "skip"), shown_as_a, strategy, timestamp}.
- **Feedback answers** (BATON yes/no), in ``<out>.events.jsonl``: {id, dataset, location,
  captions, action ("yes" | "no" | "skip"), feedback (1 / 0 / null), labeller, question,
  timestamp}; ``location`` relative to the log's folder (``manifest.portable_location``).
- A **workshop folder** holds one folder per person under ``<root>/people/``: ``pairs.jsonl`` and
  ``feedback_<task>.events.jsonl`` (``participant_files``). Merges are kept per question (one per
  feedback task, one for the pairs) in ``<root>/merged/``, outside the people's namespace.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ..audio.manifest import ManifestRecord, portable_location, read_manifest, resolve_location, write_manifest
from .agreement import agreement

PAIR_CHOICES = ("chosen", "rejected", "skip")
FEEDBACK_ACTIONS = {"yes": 1, "no": 0, "skip": None}
LABEL_COLUMNS = ["id", "dataset", "location", "captions", "feedback", "labeller", "question"]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def append_jsonl(path, obj: dict) -> None:
    """Append one JSON line, flush + fsync; a torn last line (crash mid-write) is mended first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(size - 1, 0))
        if size and f.read(1) != b"\n":
            f.seek(0)
            data = f.read()
            start = data.rfind(b"\n") + 1
            try:
                json.loads(data[start:])
                f.write(b"\n")
            except json.JSONDecodeError:
                warnings.warn(f"{path}: dropping torn last line {data[start:][:80]!r}", stacklevel=2)
                f.truncate(start)
        f.write((json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path) -> list[dict]:
    """All lines of a log ([] if absent); a torn last line is skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for n, raw in enumerate(lines, start=1):
        if raw.strip():
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError as exc:
                if n < len(lines):
                    raise ValueError(f"{path} line {n}: invalid JSON ({exc.msg})") from exc
                warnings.warn(f"{path} line {n}: ignoring torn last line", stacklevel=2)
    return out


def fold(lines: list[dict], key: str) -> tuple[dict, list]:
    """Standing answer per id (the latest wins, an undo removes it) and their order of answer."""
    answers, history = {}, []
    for n, line in enumerate(lines, start=1):
        if key not in line:
            raise ValueError(f"log line {n} has no field {key!r}: {str(line)[:80]}")
        k = str(line[key])
        if k in history:
            history.remove(k)
        answers.pop(k, None)
        if not line.get("undo"):
            answers[k] = line
            history.append(k)
    return answers, history


def events_path(out_path) -> Path:
    """A feedback file's log beside it: labels.jsonl -> labels.events.jsonl."""
    return Path(out_path).with_suffix(".events.jsonl")


# ---------------------------------------------------------------------------- line schemas

def shown_as_a(pair_id, seed: int = 0, blind: bool = True) -> str:
    """"chosen" or "rejected": which clip of a pair plays as A, drawn per pair from an RNG seeded
    by (seed, pair_id): reproducible and independent of row order; always "chosen" unblinded."""
    if not blind:
        return "chosen"
    digest = hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return "chosen" if rng.random() < 0.5 else "rejected"


def pair_line(pair_id, prompt, strategy, listener: str, choice: str, shown_a: str) -> dict:
    if choice not in PAIR_CHOICES:
        raise ValueError(f"choice must be one of {PAIR_CHOICES}, got {choice!r}")
    return {"pair_id": str(pair_id), "prompt": str(prompt), "listener": listener, "choice": choice,
            "shown_as_a": shown_a, "strategy": str(strategy), "timestamp": now()}


def feedback_line(rec: ManifestRecord, item_id, action: str, labeller: str, question: str,
                  folder) -> dict:
    """One yes/no/skip answer; the clip's location is stored relative to the log's ``folder``."""
    if action not in FEEDBACK_ACTIONS:
        raise ValueError(f"answer must be one of {list(FEEDBACK_ACTIONS)}, got {action!r}")
    return {"id": str(item_id), "dataset": rec.dataset,
            "location": portable_location(rec.location, folder), "captions": rec.captions,
            "action": action, "feedback": FEEDBACK_ACTIONS[action], "labeller": labeller,
            "question": question, "timestamp": now()}


def undo_line(id_key: str, item_id, who_key: str, who: str) -> dict:
    return {id_key: str(item_id), "undo": True, who_key: who, "timestamp": now()}


# ---------------------------------------------------------------------------- workshop folders

def slug(name: str) -> str:
    """A person's name as a folder name: lower case letters, digits, '-' and '_' (1-40)."""
    out = re.sub(r"[^a-z0-9_-]+", "-", str(name).strip().lower()).strip("-")[:40]
    if not out:
        raise ValueError(f"name {name!r} has no letters or digits")
    return out


PEOPLE, MERGED = "people", "merged"  # <root>/people/<folder>/: one per person; <root>/merged/: the merges


def person_folder(root, key: str) -> Path:
    """A person's folder: ``<root>/people/<key>`` (``key``: a workshop participant id such as
    ``p.001``, or a notebook labeller's ``slug``; the '.' keeps the two apart)."""
    if not key or "/" in key or key.startswith("."):
        raise ValueError(f"not a person folder name: {key!r}")
    return Path(root) / PEOPLE / key


def participant_files(root, name: str, tasks=("integrity", "temporal"), key: str | None = None) -> dict[str, Path]:
    """A person's files in a workshop folder: {"pairs": .../pairs.jsonl, task: .../feedback_<task>.jsonl}
    (the feedback answers themselves live in that file's log, ``events_path``), in the folder
    ``key`` (default: the name's slug) under ``<root>/people/``."""
    folder = person_folder(root, key or slug(name))
    return {"pairs": folder / "pairs.jsonl", **{t: folder / f"feedback_{t}.jsonl" for t in tasks}}


def person_folders(root) -> list[Path]:
    """Every person's folder: ``<root>/people/*``, and the folders of the earlier layout
    (``<root>/<name>/``) other than ``people`` and ``merged``, so older answers are still read
    and a merge is never read back as a person."""
    root = Path(root)
    inside = sorted(p for p in (root / PEOPLE).glob("*") if p.is_dir() and not p.name.startswith("."))
    legacy = sorted(p for p in root.glob("*") if p.is_dir() and p.name not in (PEOPLE, MERGED)
                    and not p.name.startswith("."))
    return inside + legacy


def feedback_files(root) -> dict[str, list[Path]]:
    """Every person's feedback files in a workshop folder, per task: {task: [out paths]}."""
    out: dict[str, list[Path]] = {}
    for folder in person_folders(root):
        for log in sorted(folder.glob("feedback_*.events.jsonl")):
            task = log.name[len("feedback_"):-len(".events.jsonl")]
            out.setdefault(task, []).append(log.with_name(f"feedback_{task}.jsonl"))
    return out


def pair_files(root) -> list[Path]:
    """Every person's pair answers in a workshop folder (never ``<root>/merged/``)."""
    return [p for p in (f / "pairs.jsonl" for f in person_folders(root)) if p.is_file() and p.stat().st_size]


# ---------------------------------------------------------------------------- reading answers

def load_labels(out_path, include_skips: bool = False) -> pd.DataFrame:
    """One row per clip with its standing label (columns ``LABEL_COLUMNS``; a skip has feedback
    NaN and appears only with ``include_skips``). Reads the log beside ``out_path`` (locations
    resolved against its folder), else ``out_path`` itself as a plain BATON file."""
    log = events_path(out_path)
    if log.exists():
        lines = read_jsonl(log)
        who = sorted({str(x.get("labeller")) for x in lines if not x.get("undo")})
        if len(who) > 1:
            raise ValueError(f"{log} holds labels by several labellers ({', '.join(who)}); one would hide "
                             f"the others: read each person's file and merge them (merge_labellers)")
        answers, history = fold(lines, "id")
        rows = [{**answers[k], "location": resolve_location(answers[k]["location"], log.parent)}
                for k in history if include_skips or answers[k]["action"] != "skip"]
    elif Path(out_path).exists():
        rows = [{**r.to_dict(), "id": r.id if r.id is not None else r.location}
                for r in read_manifest(out_path, kind="feedback")]
    else:
        rows = []
    return pd.DataFrame(rows, columns=LABEL_COLUMNS).astype({"feedback": float})


def load_pair_answers(paths) -> pd.DataFrame:
    """Standing pair answers of every listener in ``paths`` (a file may hold several listeners;
    a listener may not appear in two files): pair_id, prompt, strategy, listener, choice."""
    rows, seen = [], {}
    for path in paths:
        by_listener: dict[str, list] = {}
        for line in read_jsonl(path):
            by_listener.setdefault(str(line.get("listener")), []).append(line)
        for who, lines in by_listener.items():
            if who in seen:
                raise ValueError(f"listener {who!r} answers in both {seen[who]} and {path}")
            seen[who] = path
            answers, history = fold(lines, "pair_id")
            rows += [answers[k] for k in history]
    return pd.DataFrame(rows, columns=["pair_id", "prompt", "strategy", "listener", "choice"])




# ---------------------------------------------------------------------------- merging

def merge_labellers(paths: list) -> tuple[pd.DataFrame, dict]:
    """Merge several labellers' files (one question) into one label per clip by majority vote.

    Returns (merged, agreement). ``merged``: id, dataset, location, captions, votes ({labeller:
    0/1}), n_yes, n_no, feedback (1 / 0 by majority; NaN on a tie, e.g. 1-1: undecided, left out
    by ``write_merged``; a skip is no vote); empty when nobody has labelled yet.
    ``agreement``: :func:`~t2a_lib.feedback.agreement.agreement`'s numbers, the question, and cohen_kappa (two labellers)
    or n_items_all (three or more: the clips every labeller labelled)."""
    if not paths:
        raise ValueError("merge_labellers needs at least one label file")
    tables, names = [], []
    for p in paths:
        t = load_labels(p)
        name = str(t.labeller.dropna().iloc[0]) if t.labeller.notna().any() else Path(p).stem
        name = f"{name}@{Path(p).parent.name}/{Path(p).stem}" if name in names else name
        names.append(name)
        tables.append(t.assign(labeller=name))
    labels = pd.concat(tables, ignore_index=True)
    asked = sorted(labels.question.dropna().unique())
    if len(asked) > 1:
        raise ValueError(f"labels answer different questions: {asked} (merge each question apart)")
    if not labels.feedback.isin([0.0, 1.0]).all():
        raise ValueError("merge_labellers expects 0/1 human labels")
    votes = labels.pivot(index="id", columns="labeller", values="feedback").reindex(columns=names)
    n_yes, n_no = (votes == 1).sum(axis=1), (votes == 0).sum(axis=1)
    merged = labels.drop_duplicates("id").set_index("id").loc[votes.index,
                                                             ["dataset", "location", "captions"]]
    merged["votes"] = [{k: int(v) for k, v in row.dropna().items()} for _, row in votes.iterrows()]
    merged["n_yes"], merged["n_no"] = n_yes, n_no
    merged["feedback"] = np.where(n_yes > n_no, 1.0, np.where(n_no > n_yes, 0.0, np.nan))
    agr = {"question": asked[0] if asked else None, **agreement(votes)}
    agr["labellers"] = names
    if len(names) == 2:
        agr["cohen_kappa"] = next(iter(agr["pairwise"].values()), {}).get("cohen_kappa", float("nan"))
    elif len(names) > 2:
        agr["n_items_all"] = int(votes.notna().all(axis=1).sum())
    return merged.reset_index(), agr


def merge_pairs(paths) -> tuple[pd.DataFrame, dict]:
    """Merge listeners' pair answers by majority: pair_id, prompt, strategy, votes ({listener:
    "chosen"/"rejected"}), n_chosen, n_rejected, majority ("chosen" / "rejected" / "tie" on a
    tie). ``agreement``: :func:`agreement` on the verdicts (skips are no vote), plus verdicts,
    agree_with_ranker (share of verdicts that picked the ranker's chosen clip) and per_strategy."""
    answers = load_pair_answers(paths)
    verdicts = answers[answers.choice != "skip"]
    names = list(dict.fromkeys(answers.listener))
    votes = (verdicts.assign(v=(verdicts.choice == "chosen").astype(float))
             .pivot(index="pair_id", columns="listener", values="v").reindex(columns=names))
    info = verdicts.drop_duplicates("pair_id").set_index("pair_id").loc[votes.index, ["prompt", "strategy"]]
    merged = info.assign(
        votes=[{k: ("chosen" if v else "rejected") for k, v in row.dropna().items()} for _, row in votes.iterrows()],
        n_chosen=(votes == 1).sum(axis=1), n_rejected=(votes == 0).sum(axis=1))
    merged["majority"] = [("chosen" if c > r else "rejected" if r > c else "tie")
                          for c, r in zip(merged.n_chosen, merged.n_rejected)]
    agr = agreement(votes)
    share = lambda d: float((d.choice == "chosen").mean()) if len(d) else float("nan")  # noqa: E731
    agr.update(verdicts=len(verdicts), agree_with_ranker=share(verdicts),
               per_strategy={s: {"verdicts": len(d), "agree_with_ranker": share(d)}
                             for s, d in verdicts.groupby("strategy")})
    return merged.reset_index(), agr


def merge_feedback(root) -> dict[str, tuple[pd.DataFrame, dict]]:
    """Every person's feedback in a workshop folder, merged per question: {task: (merged, agreement)}."""
    return {task: merge_labellers(paths) for task, paths in feedback_files(root).items()}


def write_merged(path, merged: pd.DataFrame) -> int:
    """Write the decided labels (ties left out) as a clean BATON file; returns how many."""
    decided = merged[merged.feedback.notna()]
    if decided.empty:
        raise ValueError("no decided labels to write (every clip is a tie or unlabelled)")
    write_manifest(path, [ManifestRecord(r.dataset, r.location, r.captions, id=str(r.id),
                                         feedback=int(r.feedback), extra={"votes": r.votes})
                          for r in decided.itertuples()])
    return len(decided)


def write_merged_pairs(path, merged: pd.DataFrame) -> int:
    """Write the merged pair verdicts as JSON lines (atomically); returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    rows = merged.to_dict("records")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False, default=int) + "\n" for r in rows))
    os.replace(tmp, path)
    return len(rows)
