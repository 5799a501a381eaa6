"""Workshop mode: what participants label and what the teacher sees, kept in answer files.

``Workshop`` is the state behind the pages that ``workshop_server`` serves
(``python -m t2a_lib.feedback.workshop_server --run-dir papermill_runs/default``, ``make workshop``) from a
run folder:

- ``/``: a participant enters a name and gets an assigned share of each task: Tango 2's blind
  A/B pairs (preference and gold sets) and BATON's yes/no questions (one task per question),
  with players, spectrograms, buttons and keys (a/b or y/n, s skip, u undo). Every answer is
  appended to the participant's own file before the page moves on; a reload resumes.
- ``/teacher``: every participant's progress, agreement (pairwise Cohen's kappa, Fleiss' kappa
  on the items the same number of people heard) and the merges, kept per question, refreshed
  every two seconds; a button writes the merged files to ``<out>/merged/``.

Files (``t2a_lib.feedback.labels``, the same the notebook widgets write): ``<out>/<name>/pairs.jsonl``,
``<out>/<name>/feedback_<task>.events.jsonl``, and ``<out>/roster.jsonl`` (who joined, in order:
a participant's position picks their share, ``label_items.assign``). ``<out>`` defaults to
``<run_dir>/workshop``. Nothing is ever rewritten; the server keeps no state but these files,
so it can be stopped and restarted at any time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from . import label_items, labels
from ..audio.manifest import ManifestRecord

KEYS = {"pairs": {"a": "A", "b": "B", "s": "skip", "u": "undo"},
        "feedback": {"y": "yes", "n": "no", "s": "skip", "u": "undo"}}


@dataclass
class WorkshopConfig:
    run_dir: str | Path
    out_dir: str | Path | None = None  # default: <run_dir>/workshop
    host: str = "127.0.0.1"
    port: int = 8765  # 0: any free port
    pairs_per_person: int = 10
    clips_per_person: int = 12  # per BATON question
    raters: int = 3  # about how many people hear each item
    seed: int = 0
    blind: bool = True


class AnswerError(ValueError):
    """A request the page should show, with its HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Task:
    name: str
    kind: str  # "pairs" | "feedback"
    question: str
    items: pd.DataFrame  # indexed by item id
    per_person: int


class Workshop:
    """The workshop's logic over its files; the HTTP layer only translates requests."""

    def __init__(self, config: WorkshopConfig):
        self.config = config
        self.run_dir = label_items.resolve_run_dir(config.run_dir)
        self.out_dir = Path(config.out_dir) if config.out_dir else self.run_dir / "workshop"
        self.tasks = self._load_tasks()
        self.lock = threading.Lock()

    def _load_tasks(self) -> dict[str, Task]:
        tasks, problems = {}, []
        try:
            pairs = label_items.pair_items(self.run_dir).set_index("pair_id", drop=False)
            tasks["pairs"] = Task("pairs", "pairs", "Which clip matches the prompt better?", pairs,
                                  self.config.pairs_per_person)
        except FileNotFoundError as e:
            problems.append(str(e))
        try:
            clips = label_items.feedback_items(self.run_dir).set_index("id", drop=False)
            for task, group in clips.groupby("task", sort=False):
                tasks[task] = Task(task, "feedback", group.question.iloc[0], group, self.config.clips_per_person)
        except FileNotFoundError as e:
            problems.append(str(e))
        if not tasks:
            raise FileNotFoundError("nothing to listen to or label: " + "; ".join(problems))
        return tasks

    # ------------------------------------------------------------------ people

    def roster(self) -> dict[str, dict]:
        """{slug: {name, index}} in order of joining (the first name given for a slug stays)."""
        out = {}
        for line in labels.read_jsonl(self.out_dir / "roster.jsonl"):
            out.setdefault(line["slug"], {"name": line["name"], "index": len(out)})
        return out

    def join(self, name: str) -> dict:
        name = str(name or "").strip()
        if not name or len(name) > 40:
            raise AnswerError("enter a name of 1 to 40 characters")
        slug = labels.slug(name)
        with self.lock:
            if slug not in self.roster():
                labels.append_jsonl(self.out_dir / "roster.jsonl", {"slug": slug, "name": name,
                                                                     "joined": labels.now()})
        return self.overview(slug)

    def _person(self, who: str) -> tuple[str, dict]:
        slug = labels.slug(who)
        person = self.roster().get(slug)
        if person is None:
            raise AnswerError(f"unknown participant {who!r}: enter your name first", 404)
        return slug, person

    def assigned(self, slug: str, task: str) -> list[str]:
        t = self.tasks[task]
        index = self.roster()[slug]["index"]
        picks = label_items.assign(len(t.items), index, t.per_person, self.config.raters, self.config.seed)
        return [str(t.items.index[i]) for i in picks]

    def _log(self, slug: str, task: str) -> Path:
        """A person's append-only file for a task (for a BATON question: the feedback file's log)."""
        if self.tasks[task].kind == "pairs":
            return labels.participant_files(self.out_dir, slug, ())["pairs"]
        return labels.events_path(labels.participant_files(self.out_dir, slug, (task,))[task])

    def _answers(self, slug: str, task: str) -> tuple[dict, list]:
        return labels.fold(labels.read_jsonl(self._log(slug, task)), self._id_key(task))

    def _id_key(self, task: str) -> str:
        return "pair_id" if self.tasks[task].kind == "pairs" else "id"

    def overview(self, slug: str) -> dict:
        _, person = self._person(slug)
        tasks = []
        for name, t in self.tasks.items():
            ids = self.assigned(slug, name)
            answers, _ = self._answers(slug, name)
            tasks.append({"task": name, "kind": t.kind, "question": t.question, "n": len(ids),
                          "done": sum(i in answers for i in ids)})
        return {"name": person["name"], "slug": slug, "tasks": tasks}

    # ------------------------------------------------------------------ answering

    def state(self, who: str, task: str, message: str = "") -> dict:
        """What the page shows: progress, the current item (None when all are done), undo."""
        slug, person = self._person(who)
        if task not in self.tasks:
            raise AnswerError(f"unknown task {task!r}; tasks: {list(self.tasks)}", 404)
        t, ids = self.tasks[task], self.assigned(slug, task)
        answers, history = self._answers(slug, task)
        current = next((i for i in ids if i not in answers), None)
        done = sum(i in answers for i in ids)
        item = None
        if current is not None:
            row = t.items.loc[current]
            media = f"/media/{quote(task, safe='')}/{quote(current, safe='')}"
            players = ([{"label": "A", "src": f"{media}/a"}, {"label": "B", "src": f"{media}/b"}]
                       if t.kind == "pairs" else [{"label": "Clip", "src": f"{media}/clip"}])
            item = {"id": current, "prompt": str(row.prompt if t.kind == "pairs" else row.captions),
                    "position": done + 1, "players": players}
        return {"name": person["name"], "slug": slug, "task": task, "kind": t.kind, "question": t.question,
                "n": len(ids), "done": done, "item": item, "can_undo": bool(history), "message": message,
                "keys": KEYS[t.kind]}

    def answer(self, who: str, task: str, item_id: str, answer: str) -> dict:
        """Append one answer for the item the page showed; refuse a stale one (409)."""
        with self.lock:
            state = self.state(who, task)
            if state["item"] is None or state["item"]["id"] != str(item_id):
                raise AnswerError("that item is no longer the one to answer (answered in another tab?); "
                                  "the page now shows the current one", 409)
            t, slug = self.tasks[task], state["slug"]
            row = t.items.loc[str(item_id)]
            if t.kind == "pairs":
                a = labels.shown_as_a(item_id, self.config.seed, self.config.blind)
                b = "rejected" if a == "chosen" else "chosen"
                choice = {"A": a, "B": b, "skip": "skip"}.get(answer)
                if choice is None:
                    raise AnswerError(f"answer must be A, B or skip, got {answer!r}")
                line = labels.pair_line(item_id, row.prompt, row.strategy, state["name"], choice, a)
            else:
                log = self._log(slug, task)
                rec = ManifestRecord(row.dataset, row.location, row.captions, id=row.id)
                line = labels.feedback_line(rec, item_id, str(answer), state["name"], t.question, log.parent)
            labels.append_jsonl(self._log(slug, task), line)
        return self.state(who, task, f"Saved your answer to item {state['item']['position']}.")

    def undo(self, who: str, task: str) -> dict:
        with self.lock:
            slug, person = self._person(who)
            _, history = self._answers(slug, task)
            if not history:
                return self.state(who, task, "Nothing to undo.")
            who_key = "listener" if self.tasks[task].kind == "pairs" else "labeller"
            labels.append_jsonl(self._log(slug, task),
                                labels.undo_line(self._id_key(task), history[-1], who_key, person["name"]))
        return self.state(who, task, "Undid your last answer.")

    def media(self, task: str, item_id: str, which: str) -> Path:
        """The audio file behind a player; never a path from the request itself."""
        t = self.tasks.get(task)
        if t is None or item_id not in t.items.index:
            raise AnswerError("no such clip", 404)
        row = t.items.loc[item_id]
        if t.kind == "feedback" and which == "clip":
            return Path(row.location)
        if t.kind == "pairs" and which in ("a", "b"):
            a = labels.shown_as_a(item_id, self.config.seed, self.config.blind)
            side = a if which == "a" else ("rejected" if a == "chosen" else "chosen")
            return Path(row[side])
        raise AnswerError("no such clip", 404)

    # ------------------------------------------------------------------ the teacher

    def teacher(self) -> dict:
        """Progress per person and task, and per task the agreement and the merge so far."""
        people = []
        for slug, person in self.roster().items():
            progress = {}
            for name in self.tasks:
                ids = self.assigned(slug, name)
                answers, _ = self._answers(slug, name)
                progress[name] = {"done": sum(i in answers for i in ids), "n": len(ids)}
            people.append({"name": person["name"], "slug": slug, "progress": progress})
        merges = self._merges()
        return {"participants": people, "out_dir": str(self.out_dir),
                "tasks": {name: self._merge_summary(name, *merges.get(name, (pd.DataFrame(), {})))
                          for name in self.tasks}}

    def _merges(self) -> dict[str, tuple[pd.DataFrame, dict]]:
        out = {k: v for k, v in labels.merge_feedback(self.out_dir).items() if k in self.tasks}
        pair_files = labels.pair_files(self.out_dir)
        if pair_files and "pairs" in self.tasks:
            out["pairs"] = labels.merge_pairs(pair_files)
        return out

    def _merge_summary(self, task: str, merged: pd.DataFrame, agr: dict) -> dict:
        t = self.tasks[task]
        summary = {"question": t.question, "kind": t.kind, "items": len(t.items), "agreement": agr}
        if t.kind == "pairs" and len(merged):
            summary["merged"] = merged.majority.value_counts().reindex(["chosen", "rejected", "tie"], fill_value=0).to_dict()
        elif len(merged):
            fb = merged.feedback
            summary["merged"] = {"yes": int((fb == 1).sum()), "no": int((fb == 0).sum()), "tie": int(fb.isna().sum())}
        return summary

    def write_merges(self) -> dict:
        """Write ``<out>/merged/pairs.jsonl`` and ``feedback_<task>.jsonl`` (BATON, decided labels)."""
        written = {}
        with self.lock:
            for task, (merged, _) in self._merges().items():
                folder = self.out_dir / "merged"
                if task == "pairs":
                    path = folder / "pairs.jsonl"
                    written[task] = {"path": str(path), "rows": labels.write_merged_pairs(path, merged)}
                elif merged.feedback.notna().any():
                    path = folder / f"feedback_{task}.jsonl"
                    written[task] = {"path": str(path), "rows": labels.write_merged(path, merged)}
                else:
                    written[task] = {"path": None, "rows": 0, "note": "no decided label yet"}
        return written



