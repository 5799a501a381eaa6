"""Listening and labelling widgets: Tango 2 blind A/B pairs and BATON yes/no feedback.

Show ``w.widget`` (or ``w``) in JupyterLab; drive it headlessly with the methods its buttons
call (``answer``, ``undo``). Every click is appended to a JSON-lines log with flush + fsync before
the view moves on, so a dead kernel loses nothing and a new widget on the same ``out_path``
resumes at the first item without a standing answer (a torn last line from a crash is dropped
with a warning).

- ``PairListener`` logs to ``out_path``: {pair_id, prompt, listener, choice ("chosen" |
  "rejected" | "skip", mapped back from A/B), shown_as_a, strategy, timestamp}; an undo appends
  {pair_id, undo: true, listener, timestamp}.
- ``FeedbackLabeller`` keeps two files, because ``read_manifest`` refuses duplicate ids and a
  BATON file must hold each clip's final label once: ``<out>.events.jsonl``, the append-only log
  of every yes/no/skip/undo (the source of truth), and ``out_path``, the BATON file {dataset,
  location, captions, feedback, id, labeller, question}. After each label or undo it is rebuilt
  atomically from the log on disk (``write_manifest``, keeping the file's permissions), or deleted
  when no label is left (an empty manifest is unreadable), so one labeller with two widgets open
  on it cannot write an id twice; it is rebuilt on start too, healing a crash between the two
  writes. A second labeller on the same ``out_path`` is refused, at start and before every write. Skips live only in the log. ``load_labels`` folds the log. Both
  store clip locations relative to their folder, as ``read_manifest`` resolves them.

The logs, their folding and merging live in :mod:`t2a_lib.feedback.labels`, agreement in
:mod:`t2a_lib.feedback.agreement` (shared with the workshop, :mod:`t2a_lib.feedback.workshop`); ``pair_listener_from_run`` and
``feedback_labellers_from_run`` build the widgets straight from a run folder, writing where the
workshop page writes (``<run_dir>/workshop/people/<folder>/``), so the two merge together.

Keyboard shortcuts (a/b/s/u, y/n/s/u) come from ``ipyevents`` (the notebooks extra) while the
mouse is over the widget; without it the buttons are the interface. When every item is answered
the players are hidden, and the status line names the item now shown.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import ipywidgets as W
import pandas as pd

from . import label_items
from ..audio.manifest import ManifestRecord, parse_record, resolve_location, write_manifest
from ..audio.media import clip_media
from .labels import (append_jsonl, events_path, feedback_line, fold, pair_line, participant_files, read_jsonl,
                     shown_as_a, undo_line)

__all__ = ["PairListener", "FeedbackLabeller", "pair_listener_from_run", "feedback_labellers_from_run", "workshop_dir"]


class _Clip:
    """Title, HTML5 player and spectrogram of one clip, updated in place; hidden when cleared
    (no empty 0:00 player, no broken-image icon)."""

    def __init__(self):
        self.title = W.HTML()
        self.audio = W.Audio(format="wav", autoplay=False, loop=False, controls=True)
        self.image = W.Image(format="png")
        self.box = W.VBox([self.title, self.audio, self.image])

    def show(self, path, title: str) -> None:
        self.audio.value, self.image.value = clip_media(path)
        self.title.value = f"<b>{html.escape(title)}</b>"
        self.box.layout.display = None

    def clear(self) -> None:
        self.box.layout.display = "none"
        self.title.value, self.audio.value, self.image.value = "", b"", b""


class _Session:
    """What both widgets share: the log, resume, undo, progress, buttons and keys."""

    _id_key = _who_key = ""

    def _start(self, ids: list[str], who: str, log_path: Path, lines: list[dict]) -> None:
        if len(set(ids)) != len(ids):
            raise ValueError("item ids must be unique")
        self._ids, self._who, self.log_path = ids, who, Path(log_path)
        self._answers, self._history = fold(lines, self._id_key)

    def _build(self, clips: list[_Clip], buttons: list[tuple], keys: dict) -> None:
        self.clips, self.progress, self.prompt, self.status = clips, W.Label(), W.HTML(), W.HTML()
        self.buttons = {}
        for label, fn, style in buttons:
            b = W.Button(description=label, button_style=style)
            b.on_click(lambda _b, fn=fn: self._safe(fn))
            self.buttons[label] = b
        self._keys = keys
        help_text = " · ".join(f"{k} {label.split()[0].lower()}" for k, (label, *_) in zip(keys, buttons))
        self.keys_help = W.HTML(f"<small>keys (mouse over the widget): {html.escape(help_text)}</small>")
        self.widget = W.VBox([self.progress, self.prompt, W.HBox([c.box for c in clips]),
                              W.HBox(list(self.buttons.values())), self.status, self.keys_help])
        try:  # ipyevents (the notebooks extra) gives key events; plain ipywidgets has none
            from ipyevents import Event
            self._events = Event(source=self.widget, watched_events=["keydown"],
                                 prevent_default_action=True)
            self._events.on_dom_event(self._on_key)
        except ImportError:
            self._events = None
            self.keys_help.value = "<small>(install ipyevents for keyboard shortcuts)</small>"

    def _safe(self, fn) -> None:
        """Button and key handlers: show an error in the widget instead of losing it in a log."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - surfaced to the person at the widget
            self.status.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"

    def _on_key(self, event: dict) -> None:
        fn = self._keys.get(str(event.get("key", "")).lower())
        if fn is not None:
            self._safe(fn)

    @property
    def done(self) -> bool:
        return self.current >= len(self._ids)

    def _record(self, line: dict) -> dict:
        key = line[self._id_key]
        self._before_write()
        append_jsonl(self.log_path, line)  # on disk before anything else changes
        self._answers[key] = line
        self._history.append(key)
        self._answered(line)
        self._go(f"Saved {key}.")
        return line

    def undo(self) -> str | None:
        """Withdraw the latest standing answer (append-only) and go back to it; None if none."""
        if not self._history:
            self.status.value = "Nothing to undo."
            return None
        key = self._history[-1]
        self._before_write()
        append_jsonl(self.log_path, undo_line(self._id_key, key, self._who_key, self._who))
        self._history.pop()
        self._undone(self._answers.pop(key))
        self._go(f"Undid {key}.")
        return key

    _answered = _undone = staticmethod(lambda line: None)  # hooks: after an answer, an undo
    _before_write = staticmethod(lambda: None)  # hook: refuse a write that would mix up files

    def _go(self, message: str = "") -> None:
        n = len(self._ids)
        self.current = next((i for i, k in enumerate(self._ids) if k not in self._answers), n)
        self.progress.value = f"{min(self.current + 1, n)} of {n}" + " (done)" * self.done
        for label, button in self.buttons.items():
            button.disabled = not self._history if label.startswith("Undo") else self.done
        shown = "" if self.done else f" Now: {self._ids[self.current]}."
        self.status.value = html.escape(f"{message}{shown}".strip())
        if self.done:
            self.prompt.value = f"<b>All {n} done, thank you.</b> (Undo still works.)"
            for clip in self.clips:
                clip.clear()
        else:
            self._render(self.current)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


class PairListener(_Session):
    """Blind A/B listening to audio-alpaca pairs (prompt, chosen, rejected, strategy[, pair_id]).

    Which of chosen/rejected plays as A is drawn per pair from an RNG seeded by (seed, pair_id)
    (``labels.shown_as_a``), so it is reproducible and independent of row order; the UI never
    names it. ``blind=False`` always plays the ranker's chosen clip as A and says so (for
    teaching, not for measuring). Several listeners may share ``out_path``: each resumes from,
    undoes and scores only their own lines.
    """

    _id_key, _who_key = "pair_id", "listener"

    def __init__(self, pairs: pd.DataFrame, out_path, listener: str = "anonymous",
                 blind: bool = True, seed: int = 0):
        missing = [c for c in ("prompt", "chosen", "rejected", "strategy") if c not in pairs]
        if missing:
            raise ValueError(f"pairs lack column(s) {missing}")
        ids = pairs["pair_id"] if "pair_id" in pairs else pairs.index
        self.pairs = pairs.assign(pair_id=[str(i) for i in ids]).reset_index(drop=True)
        paths = pd.concat([self.pairs.chosen, self.pairs.rejected])
        absent = [p for p in paths if not os.path.isfile(p)]
        if absent:
            raise FileNotFoundError(f"{len(absent)} pair audio file(s) missing, e.g. {absent[:3]}")
        self.out_path, self.listener, self.blind, self.seed = Path(out_path), listener, blind, seed
        lines = [x for x in read_jsonl(self.out_path) if x.get("listener") == listener]
        self._start(list(self.pairs.pair_id), listener, self.out_path, lines)
        self._build([_Clip(), _Clip()],
                    [("A is better", lambda: self.answer("A"), "success"),
                     ("B is better", lambda: self.answer("B"), "success"),
                     ("Skip", lambda: self.answer("skip"), ""),
                     ("Undo last", self.undo, "warning")],
                    {"a": lambda: self.answer("A"), "b": lambda: self.answer("B"),
                     "s": lambda: self.answer("skip"), "u": self.undo})
        self._go()

    def shown_as_a(self, pair_id) -> str:
        """"chosen" or "rejected": which clip of this pair plays as A."""
        return shown_as_a(pair_id, self.seed, self.blind)

    def answer(self, which: str) -> dict:
        """Record "A", "B" or "skip" for the current pair (mapped back to chosen/rejected)."""
        which = str(which).strip().lower()
        if which not in ("a", "b", "skip"):
            raise ValueError(f"answer must be 'A', 'B' or 'skip', got {which!r}")
        if self.done:
            raise RuntimeError("every pair is answered; undo() to change the last answer")
        row = self.pairs.iloc[self.current]
        a = self.shown_as_a(row.pair_id)
        b = "rejected" if a == "chosen" else "chosen"
        choice = {"a": a, "b": b}.get(which, "skip")
        return self._record(pair_line(row.pair_id, row.prompt, row.strategy, self.listener, choice, a))

    def _render(self, i: int) -> None:
        row = self.pairs.iloc[i]
        a = self.shown_as_a(row.pair_id)
        b = "rejected" if a == "chosen" else "chosen"
        self.prompt.value = (f"<b>Prompt:</b> {html.escape(str(row.prompt))}<br>"
                             "<i>Which clip matches the prompt better?</i>")
        tag = (lambda s: "") if self.blind else (lambda s: f" (ranker's {s})")
        self.clips[0].show(row[a], "A" + tag(a))
        self.clips[1].show(row[b], "B" + tag(b))

    def agreement(self) -> dict:
        """answered (A/B verdicts; skips not counted), skipped, agree_with_ranker (share of the
        verdicts that picked the ranker's chosen; NaN if none), n_pairs, and ``per_strategy``
        (a DataFrame indexed by strategy with the first three)."""
        df = pd.DataFrame([self._answers[k] for k in self._ids if k in self._answers],
                          columns=["pair_id", "strategy", "choice"])

        def summary(d):
            verdicts = d[d.choice != "skip"]
            agree = float((verdicts.choice == "chosen").mean()) if len(verdicts) else float("nan")
            return {"answered": len(verdicts), "skipped": int((d.choice == "skip").sum()),
                    "agree_with_ranker": agree}

        per = pd.DataFrame([{"strategy": s, **summary(d)} for s, d in df.groupby("strategy")],
                           columns=["strategy", "answered", "skipped", "agree_with_ranker"])
        per = per.set_index("strategy")
        return {**summary(df), "n_pairs": len(self._ids), "per_strategy": per}


class FeedbackLabeller(_Session):
    """BATON-style yes/no labels of clips for one ``question`` ("Are both events present?").

    ``records``: ManifestRecords or a DataFrame with manifest columns; their locations are paths
    as this process opens them. Item ids are ``record.id``, or the location when a record has
    none. ``shuffle`` orders the clips by a permutation seeded with ``seed``. Files: see the
    module docstring; both store locations relative to their folder.
    """

    _id_key, _who_key = "id", "labeller"

    def __init__(self, records, out_path, question: str, labeller: str = "anonymous",
                 shuffle: bool = False, seed: int = 0):
        import numpy as np

        if isinstance(records, pd.DataFrame):  # manifest columns; NaN cells count as absent
            records = [parse_record({k: v for k, v in r.items() if not pd.api.types.is_scalar(v)
                                     or pd.notna(v)}, f"records row {i}")
                       for i, r in enumerate(records.to_dict("records"))]
        recs = [ManifestRecord(r.dataset, os.path.abspath(r.location), r.captions, id=r.id,
                               events=r.events, relation=r.relation) for r in records]
        order = np.random.default_rng(seed).permutation(len(recs)) if shuffle else range(len(recs))
        self.records = [recs[i] for i in order]
        self.out_path, self.question, self.labeller = Path(out_path), question, labeller
        absent = [r.location for r in self.records if not os.path.isfile(r.location)]
        if absent:
            raise FileNotFoundError(f"{len(absent)} audio file(s) missing, e.g. {absent[:3]}")
        log = events_path(self.out_path)
        if self.out_path.exists() and not log.exists():
            raise ValueError(f"{self.out_path} exists without its log {log.name}; "
                             "pick a new out_path")
        lines = read_jsonl(log)
        self._refuse_others(log, lines, labeller)
        self._start([str(r.id if r.id is not None else r.location) for r in self.records],
                    labeller, log, lines)
        self._by_id = dict(zip(self._ids, self.records))
        if lines:
            self._rewrite_baton()  # heal a crash between the log write and the BATON write
        self._build([_Clip()],
                    [("Yes", lambda: self.answer("yes"), "success"),
                     ("No", lambda: self.answer("no"), "danger"),
                     ("Skip", lambda: self.answer("skip"), ""),
                     ("Undo", self.undo, "warning")],
                    {"y": lambda: self.answer("yes"), "n": lambda: self.answer("no"),
                     "s": lambda: self.answer("skip"), "u": self.undo})
        self._go()

    def answer(self, action: str) -> dict:
        """Record "yes" (feedback 1), "no" (0) or "skip" for the current clip."""
        action = str(action).strip().lower()
        if action not in ("yes", "no", "skip"):
            raise ValueError(f"answer must be 'yes', 'no' or 'skip', got {action!r}")
        if self.done:
            raise RuntimeError("every clip is labelled; undo() to change the last label")
        key = self._ids[self.current]
        return self._record(feedback_line(self._by_id[key], key, action, self.labeller,
                                          self.question, self.log_path.parent))

    def _baton(self, line: dict) -> ManifestRecord:
        return ManifestRecord(line["dataset"], resolve_location(line["location"], self.log_path.parent),
                              line["captions"], id=line["id"], feedback=line["feedback"],
                              extra={"labeller": line["labeller"], "question": line["question"]})

    @staticmethod
    def _refuse_others(log: Path, lines: list[dict], labeller: str) -> None:
        others = sorted({str(x.get("labeller")) for x in lines} - {labeller})
        if others:
            raise ValueError(f"{log} holds labels by {others}; several labellers on one out_path are "
                             f"refused: use one out_path per labeller (participant_files)")

    def _before_write(self) -> None:
        """Another labeller may have opened this out_path since: refuse before writing anything."""
        self._refuse_others(self.log_path, read_jsonl(self.log_path), self.labeller)

    def _answered(self, line: dict) -> None:
        if line["action"] != "skip":
            self._rewrite_baton()

    def _undone(self, line: dict) -> None:
        if line["action"] != "skip":
            self._rewrite_baton()

    def _rewrite_baton(self) -> None:
        """The BATON file = the standing labels of the log on disk (the source of truth), so two
        widgets of one labeller on one file never write an id twice."""
        answers, history = fold(read_jsonl(self.log_path), "id")
        recs = [self._baton(answers[k]) for k in history if answers[k]["action"] != "skip"]
        if recs:
            write_manifest(self.out_path, recs)
        elif self.out_path.exists():
            self.out_path.unlink()

    def _render(self, i: int) -> None:
        rec = self.records[i]
        self.prompt.value = (f"<b>Prompt:</b> {html.escape(rec.captions)}<br>"
                             f"<b>{html.escape(self.question)}</b>")
        self.clips[0].show(rec.location, f"Clip {self._ids[i]}")


# ---------------------------------------------------------------------------- from a run folder

def workshop_dir(run_dir) -> Path:
    """Where people's answers on a run live: ``<run_dir>/workshop`` (the workshop server's default)."""
    return label_items.resolve_run_dir(run_dir) / "workshop"


def pair_listener_from_run(run_dir, listener: str, blind: bool = True, seed: int = 0,
                           sets=label_items.PAIR_SETS) -> PairListener:
    """A PairListener on every winner/loser pair of a run, writing
    ``<run_dir>/workshop/people/<listener>/pairs.jsonl`` (the same file the workshop page writes)."""
    pairs = label_items.pair_items(run_dir, sets)
    out = participant_files(workshop_dir(run_dir), listener)["pairs"]
    return PairListener(pairs, out, listener=listener, blind=blind, seed=seed)


def feedback_labellers_from_run(run_dir, labeller: str, shuffle: bool = False,
                                seed: int = 0) -> dict[str, FeedbackLabeller]:
    """One FeedbackLabeller per BATON question on a run's human-feedback clips: {task: widget},
    writing ``<run_dir>/workshop/people/<labeller>/feedback_<task>.jsonl`` (and its log)."""
    items = label_items.feedback_items(run_dir)
    files = participant_files(workshop_dir(run_dir), labeller, tuple(items.task.unique()))
    return {task: FeedbackLabeller(label_items.records(group), files[task], group.question.iloc[0],
                                   labeller=labeller, shuffle=shuffle, seed=seed)
            for task, group in items.groupby("task", sort=False)}
