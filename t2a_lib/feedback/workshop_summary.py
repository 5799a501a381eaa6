"""What the teacher's page shows, computed from the answer logs without re-reading them.

``LogCache`` keeps each append-only log's lines and re-reads only the bytes appended since the
last look (a poll costs a ``stat`` per log when nothing changed). ``TaskSummary`` turns every
person's standing answers to one task into the numbers ``labels.merge_labellers`` /
``labels.merge_pairs`` give (the same votes, the same ``agreement``), with numpy instead of a
DataFrame per person, and recomputes a task only when one of its logs changed. Answers to items
whose truth is known (gold pairs) are also scored against that truth: per person, for the room's
majority and for the rankers.
"""

from __future__ import annotations

import json
import math
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from . import labels
from .agreement import agreement


def jsonable(obj):
    """NaN and infinities as null, numpy scalars as Python ones (JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class LogCache:
    """{path: lines} of append-only JSON-lines logs, read incrementally (complete lines only)."""

    def __init__(self):
        self._logs: dict[Path, tuple[int, list, dict]] = {}
        self._lock = threading.Lock()

    def size(self, path: Path) -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0

    def lines(self, path: Path) -> list[dict]:
        path = path if isinstance(path, Path) else Path(path)
        size = self.size(path)
        with self._lock:
            offset, lines, folds = self._logs.get(path, (0, [], {}))
            if size < offset:  # replaced, not appended: read it again
                offset, lines, folds = 0, [], {}
            if size > offset:
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read(size - offset)
                complete = data[:data.rfind(b"\n") + 1]  # a line still being written waits for the next look
                lines = lines + [json.loads(raw) for raw in complete.split(b"\n") if raw.strip()]
                offset, folds = offset + len(complete), {}
            self._logs[path] = (offset, lines, folds)
        return lines

    def folded(self, path: Path, key: str) -> tuple[dict, list]:
        """``labels.fold`` of the log, kept until the log grows."""
        path = path if isinstance(path, Path) else Path(path)
        lines = self.lines(path)
        folds = self._logs.get(path, (0, [], {}))[2]
        if key not in folds:
            folds[key] = labels.fold(lines, key)
        return folds[key]


@lru_cache(maxsize=8192)
def log_of(path: Path) -> Path:
    """A feedback file's log (``labels.events_path``), remembered: the teacher asks every poll."""
    return labels.events_path(path)


def _standing(answers: dict, history: list) -> list[dict]:
    return [answers[k] for k in history]


def _name(rows: list[dict], who_key: str, fallback: str) -> str:
    return next((str(r[who_key]) for r in rows if r.get(who_key) is not None), fallback)


def feedback_votes(paths: list[Path], cache: LogCache) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Every labeller's 0/1 votes (skips are no vote), named as ``merge_labellers`` names them."""
    names, votes = [], {}
    for p in paths:
        rows = [r for r in _standing(*cache.folded(log_of(p), "id")) if r.get("action") != "skip"]
        name = _name(rows, "labeller", Path(p).stem)
        name = f"{name}@{Path(p).parent.name}/{Path(p).stem}" if name in names else name
        names.append(name)
        votes[name] = {str(r["id"]): float(r["feedback"]) for r in rows}
    return names, votes


def pair_votes(paths: list[Path], cache: LogCache) -> tuple[list[str], dict[str, dict[str, float]], list[dict]]:
    """Every listener's verdicts (1: the ranker's chosen clip, 0: the other; skips no vote) and
    the verdict rows themselves, as ``merge_pairs`` reads them."""
    names, votes, verdicts = [], {}, []
    for p in paths:
        rows = _standing(*cache.folded(p, "pair_id"))
        for row in rows:
            who = str(row.get("listener"))
            if who not in votes:
                names.append(who)
                votes[who] = {}
            if row["choice"] != "skip":
                votes[who][str(row["pair_id"])] = 1.0 if row["choice"] == "chosen" else 0.0
                verdicts.append(row)
    return names, votes, verdicts


def vote_table(names: list[str], votes: dict[str, dict[str, float]]) -> pd.DataFrame:
    """items x people, NaN where a person gave no vote (items sorted, as a pivot sorts them)."""
    items = sorted({i for v in votes.values() for i in v})
    where = {item: k for k, item in enumerate(items)}
    table = np.full((len(items), len(names)), np.nan)
    for j, name in enumerate(names):
        for item, v in votes[name].items():
            table[where[item], j] = v
    return pd.DataFrame(table, index=items, columns=names)


def ranker_shares(verdicts: list[dict]) -> dict:
    share = lambda rows: float(np.mean([r["choice"] == "chosen" for r in rows])) if rows else float("nan")  # noqa: E731
    by_strategy: dict[str, list] = {}
    for r in verdicts:
        by_strategy.setdefault(str(r["strategy"]), []).append(r)
    return {"verdicts": len(verdicts), "agree_with_ranker": share(verdicts),
            "per_strategy": {s: {"verdicts": len(rows), "agree_with_ranker": share(rows)}
                             for s, rows in sorted(by_strategy.items())}}


def truth_scores(table: pd.DataFrame, truth: pd.Series, ranker_right: pd.Series) -> dict:
    """Agreement with the known truth (1: the chosen clip is truly better) on the items that have
    one: per person {n, agree}, the room's majority (ties left out) and the rankers' own verdict."""
    rows = table.index.isin(truth.index)
    known, right_answer = table.to_numpy()[rows], truth.reindex(table.index[rows]).to_numpy()
    rated = ~np.isnan(known)
    n, agree = rated.sum(axis=0), ((known == right_answer[:, None]) & rated).sum(axis=0)
    people = {name: {"n": int(k), "agree": float(a / k) if k else None} for name, k, a in zip(table.columns, n, agree)}
    n_yes, n_no = (known == 1).sum(axis=1), (known == 0).sum(axis=1)
    majority = np.where(n_yes > n_no, 1.0, np.where(n_no > n_yes, 0.0, np.nan))
    decided = ~np.isnan(majority)
    room = float(np.mean(majority[decided] == right_answer[decided])) if decided.any() else None
    rank = ranker_right.dropna()
    return {"items": int(len(truth)), "heard": int(len(known)), "people": people,
            "room": {"n": int(decided.sum()), "agree": room},
            "ranker": {"n": int(len(rank)), "agree": float(rank.mean()) if len(rank) else None}}


PAIRS_SHOWN = 30  # a room of 60 shares items in hundreds of pairs: the page lists those that agree least


def shown_pairs(agr: dict, limit: int = PAIRS_SHOWN) -> dict:
    """``agr`` with at most ``limit`` pairwise entries, the lowest Cohen's kappa first (undefined
    last); ``pairs_total`` says how many pairs share items (the means are over all of them)."""
    pairs = agr["pairwise"]
    agr["pairs_total"] = len(pairs)
    if len(pairs) > limit:
        order = sorted(pairs, key=lambda k: (not math.isfinite(pairs[k]["cohen_kappa"]), pairs[k]["cohen_kappa"]))
        agr["pairwise"] = {k: pairs[k] for k in order[:limit]}
    return agr


class TaskSummary:
    """One task's merge counts, agreement and truth scores, recomputed when a log changes."""

    def __init__(self, kind: str, items: pd.DataFrame, cache: LogCache):
        self.kind, self.cache, self._key, self._value = kind, cache, None, None
        if kind == "pairs":  # a gold pair's chosen clip is the better one
            gold = items[items.get("set", pd.Series(dtype=str)) == "gold"]
            self.truth = pd.Series(1.0, index=gold.index.astype(str))
            self.ranker_right = gold.get("ranker_right", pd.Series(dtype=float)).astype(float)
        else:  # a gold clip's answer is known (label_items.truth_clips); the rankers give no yes/no of their own
            known = items.get("truth", pd.Series(dtype=float)).dropna()
            self.truth, self.ranker_right = known.set_axis(known.index.astype(str)), pd.Series(dtype=float)

    def __call__(self, paths: list[Path]) -> dict:
        logs = paths if self.kind == "pairs" else [log_of(p) for p in paths]
        key = tuple((str(p), self.cache.size(p)) for p in logs)
        if key != self._key:
            self._value, self._key = self._compute(paths), key
        return self._value

    def _compute(self, paths: list[Path]) -> dict:
        if not paths:
            return {"agreement": {}}
        if self.kind == "pairs":
            names, votes, verdicts = pair_votes(paths, self.cache)
        else:
            (names, votes), verdicts = feedback_votes(paths, self.cache), None
        table = vote_table(names, votes)
        n_yes, n_no = (table == 1).sum(axis=1), (table == 0).sum(axis=1)
        counts = {"yes": int((n_yes > n_no).sum()), "no": int((n_no > n_yes).sum()), "tie": int((n_yes == n_no).sum())}
        agr = shown_pairs(agreement(table))
        out = {"agreement": agr}
        if self.kind == "pairs":
            agr.update(ranker_shares(verdicts))
            out["merged"] = {"chosen": counts["yes"], "rejected": counts["no"], "tie": counts["tie"]}
            if len(self.truth):
                out["truth"] = truth_scores(table, self.truth, self.ranker_right)
        else:
            agr["labellers"] = names
            if len(names) == 2:
                agr["cohen_kappa"] = next(iter(agr["pairwise"].values()), {}).get("cohen_kappa", float("nan"))
            elif len(names) > 2:
                agr["n_items_all"] = int(table.notna().all(axis=1).sum())
            out["merged"] = counts
            if len(self.truth):
                out["truth"] = truth_scores(table, self.truth, self.ranker_right)
        if not len(table):
            out.pop("merged")
        return out
