"""Workshop mode: listening and labelling pages for participants' browsers, a live teacher page.

``python -m t2a_lib.workshop --run-dir papermill_runs/default`` (``make workshop``) serves, from a
run folder:

- ``/``: a participant enters a name and gets an assigned share of each task: Tango 2's blind
  A/B pairs (preference and gold sets) and BATON's yes/no questions (one task per question),
  with players, spectrograms, buttons and keys (a/b or y/n, s skip, u undo). Every answer is
  appended to the participant's own file before the page moves on; a reload resumes.
- ``/teacher``: every participant's progress, agreement (pairwise Cohen's kappa, Fleiss' kappa
  on the items the same number of people heard) and the merges, kept per question, refreshed
  every two seconds; a button writes the merged files to ``<out>/merged/``.

Files (``t2a_lib.labels``, the same the notebook widgets write): ``<out>/<name>/pairs.jsonl``,
``<out>/<name>/feedback_<task>.events.jsonl``, and ``<out>/roster.jsonl`` (who joined, in order:
a participant's position picks their share, ``label_items.assign``). ``<out>`` defaults to
``<run_dir>/workshop``. Nothing is ever rewritten; the server keeps no state but these files,
so it can be stopped and restarted at any time.

Why a small server of our own (the standard library's ``http.server``): twenty participants
need no kernel each (Voilà starts one per page, each importing torch), no code in sight
(JupyterLab shows notebooks), no new dependency, and pages that load nothing from the network.
It binds to 127.0.0.1; reach it from other machines through a tunnel or proxy you control.
"""

from __future__ import annotations

import argparse
import json
import math
import mimetypes
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlparse

import numpy as np
import pandas as pd

from . import label_items, labels
from .manifest import ManifestRecord
from .media import clip_media

STATIC = Path(__file__).with_name("static")
PAGES = {"/": "workshop.html", "/teacher": "teacher.html"}
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


# ---------------------------------------------------------------------------- HTTP

class Handler(BaseHTTPRequestHandler):
    """Routes: pages, /static/*, /media/<task>/<id>/<a|b|clip>.<wav|png>, /api/*."""

    workshop: Workshop  # set on the subclass ``serve`` makes
    server_version = "t2a-workshop"

    def log_message(self, fmt, *args):  # quiet: the teacher's terminal is not a request log
        pass

    def do_GET(self):
        self._guard(self._get)

    def do_POST(self):
        self._guard(self._post)

    def _guard(self, fn) -> None:
        try:
            fn(urlparse(self.path))
        except AnswerError as e:
            self._json({"error": str(e)}, e.status)
        except (ValueError, KeyError) as e:
            self._json({"error": f"{type(e).__name__}: {e}"}, HTTPStatus.BAD_REQUEST)

    def _get(self, url) -> None:
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        w, parts = self.workshop, url.path.strip("/").split("/")
        if url.path in PAGES:
            self._file(STATIC / PAGES[url.path])
        elif parts[0] == "static" and len(parts) == 2 and (STATIC / parts[1]).is_file() and not parts[1].startswith("."):
            self._file(STATIC / parts[1])
        elif parts[0] == "media" and len(parts) == 4:
            which, _, ext = parts[3].partition(".")
            if ext not in ("wav", "png"):
                raise AnswerError(f"no media {parts[3]!r}", 404)
            wav, picture = clip_media(w.media(unquote(parts[1]), unquote(parts[2]), which))
            self._bytes(picture if ext == "png" else wav, "image/png" if ext == "png" else "audio/wav")
        elif url.path == "/api/overview":
            self._json(w.overview(q.get("name", "")))
        elif url.path == "/api/state":
            self._json(w.state(q.get("name", ""), q.get("task", "")))
        elif url.path == "/api/teacher":
            self._json(w.teacher())
        else:
            raise AnswerError(f"no page {url.path}", 404)

    def _post(self, url) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        w = self.workshop
        if url.path == "/api/join":
            self._json(w.join(body.get("name", "")))
        elif url.path == "/api/answer":
            self._json(w.answer(body.get("name", ""), body.get("task", ""), body.get("id", ""), body.get("answer", "")))
        elif url.path == "/api/undo":
            self._json(w.undo(body.get("name", ""), body.get("task", "")))
        elif url.path == "/api/merge":
            self._json(w.write_merges())
        else:
            raise AnswerError(f"no endpoint {url.path}", 404)

    def _json(self, obj, status=HTTPStatus.OK) -> None:
        self._bytes(json.dumps(jsonable(obj), allow_nan=False).encode(), "application/json", status)

    def _file(self, path: Path) -> None:
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._bytes(path.read_bytes(), kind + ("; charset=utf-8" if kind.startswith("text/") else ""))

    def _bytes(self, data: bytes, kind: str, status=HTTPStatus.OK) -> None:
        """The whole body, or the byte range asked for (media elements seek with Range)."""
        start, end = 0, len(data) - 1
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and status == HTTPStatus.OK and data:
            first, _, last = rng[6:].split(",")[0].partition("-")
            start = int(first) if first else max(0, len(data) - int(last or 0))
            end = min(int(last), end) if first and last else end
            status = HTTPStatus.PARTIAL_CONTENT
        body = data[start:end + 1]
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Cache-Control", "no-store")
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def make_server(config: WorkshopConfig) -> ThreadingHTTPServer:
    """The server, bound (``config.port`` 0: a free port; see ``server.server_address``), not yet serving."""
    workshop = Workshop(config)
    handler = type("WorkshopHandler", (Handler,), {"workshop": workshop})
    server = ThreadingHTTPServer((config.host, config.port), handler)
    server.daemon_threads = True
    return server


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m t2a_lib.workshop")
    p.add_argument("--run-dir", required=True, help="a run folder (papermill_runs/<profile>)")
    p.add_argument("--out-dir", help="where answers go (default: <run-dir>/workshop)")
    p.add_argument("--port", type=int, default=WorkshopConfig.port, help="0: any free port")
    p.add_argument("--pairs-per-person", type=int, default=WorkshopConfig.pairs_per_person)
    p.add_argument("--clips-per-person", type=int, default=WorkshopConfig.clips_per_person)
    p.add_argument("--raters", type=int, default=WorkshopConfig.raters, help="about how many people hear each item")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    config = WorkshopConfig(args.run_dir, args.out_dir, port=args.port, pairs_per_person=args.pairs_per_person,
                            clips_per_person=args.clips_per_person, raters=args.raters, seed=args.seed)
    server = make_server(config)
    host, port = server.server_address[:2]
    w = server.RequestHandlerClass.workshop
    print(f"workshop: {', '.join(f'{t.name} ({len(t.items)} items)' for t in w.tasks.values())}; answers in {w.out_dir}")
    print(f"participants: http://{host}:{port}/   teacher: http://{host}:{port}/teacher   (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
