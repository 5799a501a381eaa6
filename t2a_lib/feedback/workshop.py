"""Workshop mode: what participants label and what the teacher sees, kept in answer files.

``Workshop`` is the state behind the pages that ``workshop_server`` serves
(``python -m t2a_lib.feedback.workshop_server --run-dir papermill_runs/default``, ``make workshop``) from a
run folder:

- ``/?code=<session code>``: a participant enters a display name (any Unicode) and gets a token
  (``workshop_people``; their browser keeps it) and an assigned share of each task: Tango 2's
  blind A/B pairs, about one in four a gold pair whose better clip is known
  (``label_items.assign_with_truth``), and BATON's yes/no questions (one task per question),
  with players, spectrograms, buttons and keys (a/b or y/n, s skip, u undo). Every answer is
  appended to the participant's own file before the page moves on; a reload resumes. When a
  share is done the page says how often they picked the known better clip.
- ``/teacher?token=<teacher token>``: every participant's progress, agreement (pairwise Cohen's
  kappa, Fleiss' kappa on the items the same number of people heard), the merges kept per
  question, and the agreement with the truth of each person, the room and the rankers
  (``workshop_summary``, recomputed only when a log grew); a button writes the merged files.

Files (``t2a_lib.feedback.labels``, the same the notebook widgets write):
``<out>/people/<id>/pairs.jsonl``, ``<out>/people/<id>/feedback_<task>.events.jsonl``,
``<out>/roster.jsonl`` (who joined, in order: a participant's position picks their share) and
``<out>/session.json`` (the code and the teacher's token); merges go to ``<out>/merged/``,
outside the people's folders. ``<out>`` defaults to ``<run_dir>/workshop``. Nothing is ever
rewritten; the server keeps no state but these files, so it can be stopped and restarted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from functools import lru_cache
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from . import label_items, labels
from .workshop_people import AnswerError, Person, Roster, check_secret, load_session
from .workshop_summary import LogCache, TaskSummary, jsonable, log_of
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


@dataclass
class Task:
    name: str
    kind: str  # "pairs" | "feedback"
    question: str
    items: pd.DataFrame  # indexed by item id
    per_person: int


class Workshop:
    """The workshop's logic over its files; the HTTP layer only translates requests.
    Participants are named by their token (``join`` hands it out), the teacher by theirs."""

    def __init__(self, config: WorkshopConfig):
        self.config = config
        self.run_dir = label_items.resolve_run_dir(config.run_dir)
        self.out_dir = Path(config.out_dir) if config.out_dir else self.run_dir / "workshop"
        self.tasks = self._load_tasks()
        self.session = load_session(self.out_dir)
        self.roster = Roster(self.out_dir)
        self.logs = LogCache()
        self.summaries = {name: TaskSummary(t.kind, t.items, self.logs) for name, t in self.tasks.items()}
        self.lock = threading.Lock()
        self._teacher_lock, self._teacher = threading.Lock(), (None, b"")
        self.trainer: subprocess.Popen | None = None

    def _load_tasks(self) -> dict[str, Task]:
        tasks, problems = {}, []
        try:
            pairs = label_items.pair_items(self.run_dir).set_index("pair_id", drop=False)
            tasks["pairs"] = Task("pairs", "pairs", "Which clip matches the prompt better?", pairs,
                                  self.config.pairs_per_person)
        except FileNotFoundError as e:
            problems.append(str(e))
        try:
            clips = label_items.feedback_items(self.run_dir).assign(truth=float("nan"))
            clips = pd.concat([clips, label_items.truth_clips(self.run_dir)], ignore_index=True).set_index("id", drop=False)
            for task, group in clips.groupby("task", sort=False):
                tasks[task] = Task(task, "feedback", group.question.iloc[0], group, self.config.clips_per_person)
        except FileNotFoundError as e:
            problems.append(str(e))
        if not tasks:
            raise FileNotFoundError("nothing to listen to or label: " + "; ".join(problems))
        return tasks

    # ------------------------------------------------------------------ people

    def join(self, name, code, token=None) -> dict:
        """A participant joins with the session's code (a token they hold: the same participant)."""
        check_secret(code, self.session["code"], "session code (use the join link or ask the teacher)")
        person, token = self.roster.join(name, token)
        return {**self.overview(token), "token": token}

    def check_teacher(self, token) -> None:
        check_secret(token, self.session["teacher_token"], "teacher token (printed in the teacher's terminal)")

    def assigned(self, person: Person, task: str) -> list[str]:
        return list(self._assigned(task, person.index))

    @lru_cache(maxsize=4096)
    def _assigned(self, task: str, index: int) -> tuple[str, ...]:
        """A share: about one in four an item whose truth is known (a gold pair, a gold clip), the rest the run's."""
        t, c = self.tasks[task], self.config
        known = self.summaries[task].truth.index
        pools = {"items": t.items.index[~t.items.index.isin(known)], "truth": t.items.index[t.items.index.isin(known)]}
        picks = label_items.assign_with_truth(len(pools["items"]), len(pools["truth"]), index, t.per_person,
                                              c.raters, c.seed)
        return tuple(str(pools[pool][i]) for pool, i in picks)

    @lru_cache(maxsize=None)
    def _log(self, person: Person, task: str) -> Path:
        """A person's append-only file for a task (for a BATON question: the feedback file's log)."""
        files = labels.participant_files(self.out_dir, person.name, (task,) if task != "pairs" else (), key=person.id)
        return files["pairs"] if self.tasks[task].kind == "pairs" else labels.events_path(files[task])

    def _answers(self, person: Person, task: str) -> tuple[dict, list]:
        return self.logs.folded(self._log(person, task), self._id_key(task))

    def _id_key(self, task: str) -> str:
        return "pair_id" if self.tasks[task].kind == "pairs" else "id"

    def _progress(self, person: Person, task: str) -> dict:
        answers, _ = self._answers(person, task)
        ids = self.assigned(person, task)
        return {"done": sum(i in answers for i in ids), "n": len(ids)}

    def overview(self, token) -> dict:
        person = self.roster.by_token(token)
        tasks = [{"task": name, "kind": t.kind, "question": t.question, **self._progress(person, name)}
                 for name, t in self.tasks.items()]
        return {"name": person.name, "id": person.id, "tasks": tasks}

    # ------------------------------------------------------------------ answering

    def _task(self, task) -> Task:
        if not isinstance(task, str) or task not in self.tasks:
            raise AnswerError(f"unknown task {task!r}; tasks: {list(self.tasks)}", 404 if isinstance(task, str) else 400)
        return self.tasks[task]

    def state(self, token, task, message: str = "") -> dict:
        """What the page shows: progress, the current item (None when all are done), undo, and
        once done, how often this person's answers agreed with the known truth."""
        person, t = self.roster.by_token(token), self._task(task)
        ids = self.assigned(person, task)
        answers, history = self._answers(person, task)
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
        return {"name": person.name, "id": person.id, "task": task, "kind": t.kind, "question": t.question,
                "n": len(ids), "done": done, "item": item, "can_undo": bool(history), "message": message,
                "keys": KEYS[t.kind], "truth": self._own_truth(person, task, answers) if item is None else None}

    def _own_truth(self, person: Person, task: str, answers: dict) -> dict | None:
        """{n, agree}: this person's answers to the items whose truth is known, and how many match it."""
        truth = self.summaries[task].truth
        vote = ((lambda a: {"chosen": 1.0, "rejected": 0.0}.get(a["choice"])) if self.tasks[task].kind == "pairs"
                else (lambda a: a["feedback"]))
        votes = [(vote(a), truth[k]) for k, a in answers.items() if k in truth.index and vote(a) is not None]
        return {"n": len(votes), "agree": int(sum(v == right for v, right in votes))} if len(truth) else None

    def answer(self, token, task, item_id, answer) -> dict:
        """Append one answer for the item the page showed; refuse a stale one (409)."""
        if not isinstance(item_id, str) or not isinstance(answer, str):
            raise AnswerError("id and answer must be text")
        with self.lock:
            state = self.state(token, task)
            if state["item"] is None or state["item"]["id"] != item_id:
                raise AnswerError("that item is no longer the one to answer (answered in another tab?); "
                                  "the page now shows the current one", 409)
            person, t = self.roster.by_token(token), self.tasks[task]
            row, log = t.items.loc[item_id], self._log(person, task)
            if t.kind == "pairs":
                a = labels.shown_as_a(item_id, self.config.seed, self.config.blind)
                b = "rejected" if a == "chosen" else "chosen"
                choice = {"A": a, "B": b, "skip": "skip"}.get(answer)
                if choice is None:
                    raise AnswerError(f"answer must be A, B or skip, got {answer!r}")
                line = labels.pair_line(item_id, row.prompt, row.strategy, person.name, choice, a)
            else:
                rec = ManifestRecord(row.dataset, row.location, row.captions, id=row.id)
                line = labels.feedback_line(rec, item_id, answer, person.name, t.question, log.parent)
            labels.append_jsonl(log, line)
        return self.state(token, task, f"Saved your answer to item {state['item']['position']}.")

    def undo(self, token, task) -> dict:
        with self.lock:
            person = self.roster.by_token(token)
            self._task(task)
            _, history = self._answers(person, task)
            if not history:
                return self.state(token, task, "Nothing to undo.")
            who_key = "listener" if self.tasks[task].kind == "pairs" else "labeller"
            labels.append_jsonl(self._log(person, task),
                                labels.undo_line(self._id_key(task), history[-1], who_key, person.name))
        return self.state(token, task, "Undid your last answer.")

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

    def _answer_files(self) -> dict[str, list[Path]]:
        return {"pairs": labels.pair_files(self.out_dir), **labels.feedback_files(self.out_dir)}

    def teacher(self, files: dict[str, list[Path]] | None = None) -> dict:
        """Progress per person and task, and per task the agreement, the merge so far and, where
        the truth is known, everyone's agreement with it (each recomputed only when its logs grew)."""
        files = self._answer_files() if files is None else files
        people = [{"name": p.name, "id": p.id, "progress": {name: self._progress(p, name) for name in self.tasks}}
                  for p in self.roster.people().values()]
        tasks = {name: {"question": t.question, "kind": t.kind, "items": len(t.items),
                        **self.summaries[name](files.get(name, []))} for name, t in self.tasks.items()}
        return {"participants": people, "out_dir": str(self.out_dir), "tasks": tasks}

    def teacher_json(self) -> bytes:
        """``teacher()`` as JSON, rebuilt only when the roster or an answer log changed size."""
        files = self._answer_files()
        logs = [p if p.name == "pairs.jsonl" else log_of(p) for paths in files.values() for p in paths]
        key = (self.logs.size(self.roster.path), tuple((str(p), self.logs.size(p)) for p in logs))
        with self._teacher_lock:
            if key != self._teacher[0]:
                self._teacher = key, json.dumps(jsonable(self.teacher(files)), allow_nan=False).encode()
            return self._teacher[1]

    # ------------------------------------------------------------------ the room's models

    def start_training(self) -> dict:
        """Start ``workshop_train`` on the room's labels in its own process (one at a time)."""
        with self.lock:
            if self.trainer is not None and self.trainer.poll() is None:
                raise AnswerError("the room's models are already training", 409)
            room = self.out_dir / "room"
            room.mkdir(parents=True, exist_ok=True)
            with open(room / "train.log", "ab") as log:
                self.trainer = subprocess.Popen(
                    [sys.executable, "-m", "t2a_lib.feedback.workshop_train", "--run-dir", str(self.run_dir),
                     "--out-dir", str(self.out_dir)], stdout=log, stderr=subprocess.STDOUT)
        return {"started": True, "pid": self.trainer.pid}

    def room(self) -> dict:
        """The training's progress (``<out>/room/progress.json``) and, when done, the before / after clips."""
        from .workshop_train import read_progress

        progress = read_progress(self.out_dir)
        running = self.trainer is not None and self.trainer.poll() is None
        if progress and not running and not progress.get("finished") and self.trainer is not None:
            progress["error"] = f"the training process ended early (exit {self.trainer.poll()}); see room/train.log"
        return {"running": running, "progress": progress}

    def room_clip(self, model: str, name: str) -> Path:
        """A before / after clip: ``<out>/room/listen/<model>/<k>.wav``, names checked, never a request path."""
        k, _, ext = name.partition(".")
        if model not in ("before", "dpo", "baton_hd") or not k.isdigit() or ext != "wav":
            raise AnswerError("no such clip", 404)
        path = self.out_dir / "room" / "listen" / model / f"{int(k)}.wav"
        if not path.is_file():
            raise AnswerError("no such clip", 404)
        return path

    def _merges(self) -> dict[str, tuple[pd.DataFrame, dict]]:
        out = {k: v for k, v in labels.merge_feedback(self.out_dir).items() if k in self.tasks}
        pair_files = labels.pair_files(self.out_dir)
        if pair_files and "pairs" in self.tasks:
            out["pairs"] = labels.merge_pairs(pair_files)
        return out

    def write_merges(self) -> dict:
        """Write ``<out>/merged/pairs.jsonl`` and ``feedback_<task>.jsonl`` (BATON, decided labels),
        outside the people's folders (``labels.person_folders``): a merge is never read back as a
        person, and merging again gives the same files."""
        written = {}
        with self.lock:
            for task, (merged, _) in self._merges().items():
                folder = self.out_dir / labels.MERGED
                if task == "pairs":
                    path = folder / "pairs.jsonl"
                    written[task] = {"path": str(path), "rows": labels.write_merged_pairs(path, merged)}
                elif merged.feedback.notna().any():
                    path = folder / f"feedback_{task}.jsonl"
                    written[task] = {"path": str(path), "rows": labels.write_merged(path, merged)}
                else:
                    written[task] = {"path": None, "rows": 0, "note": "no decided label yet"}
        return written
