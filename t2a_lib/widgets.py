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
  location, captions, feedback, id, labeller, question}. A label is appended to it
  (``append_record``); an undo rewrites it atomically (``write_manifest``), or deletes it when no
  label is left (an empty manifest is unreadable); it is rebuilt from the log on start, healing a
  crash between the two writes. Skips live only in the log. ``load_labels`` folds the log.

Keyboard shortcuts (a/b/s/u, y/n/s/u) need the optional ``ipyevents`` (and a click on the widget
to focus it): plain ipywidgets has no key events, so without it the buttons are the interface.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import warnings
from datetime import datetime, timezone
from functools import lru_cache
from itertools import combinations
from pathlib import Path

import ipywidgets as W
import numpy as np
import pandas as pd
import soundfile as sf

from .audio import SAMPLE_RATE, read_wav
from .manifest import ManifestRecord, append_record, parse_record, read_manifest, write_manifest

__all__ = ["PairListener", "FeedbackLabeller", "load_labels", "merge_labellers", "write_merged",
           "cohen_kappa", "fleiss_kappa", "events_path", "append_jsonl", "read_jsonl"]


def _now() -> str:
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
                warnings.warn(f"{path}: dropping torn last line {data[start:][:80]!r}",
                              stacklevel=2)
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


def events_path(out_path) -> Path:
    """The FeedbackLabeller's log beside its BATON file: labels.jsonl -> labels.events.jsonl."""
    return Path(out_path).with_suffix(".events.jsonl")


def _fold(lines: list[dict], key: str) -> tuple[dict, list]:
    """Standing answer per id (the latest wins, an undo removes it) and their order of answer."""
    answers, history = {}, []
    for line in lines:
        k = str(line[key])
        if k in history:
            history.remove(k)
        answers.pop(k, None)
        if not line.get("undo"):
            answers[k] = line
            history.append(k)
    return answers, history


def wav_bytes(wave: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.asarray(wave, np.float32), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def spectrogram_png(wave: np.ndarray) -> bytes:
    """A small log-mel picture (pyplot-free, so nothing leaks into the notebook's own figures)."""
    from matplotlib.figure import Figure

    from .mel import log_mel

    mel = log_mel(wave)
    fig = Figure(figsize=(3.4, 1.5), dpi=80)
    ax = fig.add_axes((0.13, 0.25, 0.85, 0.72))
    ax.imshow(mel, origin="lower", aspect="auto", cmap="magma",
              extent=(0, len(wave) / SAMPLE_RATE, 0, mel.shape[0]))
    ax.set_xlabel("time (s)", fontsize=7, labelpad=1)
    ax.set_ylabel("mel bin", fontsize=7, labelpad=1)
    ax.tick_params(labelsize=6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@lru_cache(maxsize=32)
def _media(path: str, stamp: tuple) -> tuple[bytes, bytes]:
    """(wav bytes, spectrogram png) of a file; ``stamp`` (mtime, size) keys out stale entries."""
    wave = read_wav(path)
    return wav_bytes(wave), spectrogram_png(wave)


class _Clip:
    """Title, HTML5 player and spectrogram of one clip, updated in place."""

    def __init__(self):
        self.title = W.HTML()
        self.audio = W.Audio(format="wav", autoplay=False, loop=False, controls=True)
        self.image = W.Image(format="png")
        self.box = W.VBox([self.title, self.audio, self.image])

    def show(self, path, title: str) -> None:
        st = os.stat(path)
        self.audio.value, self.image.value = _media(str(path), (st.st_mtime_ns, st.st_size))
        self.title.value = f"<b>{html.escape(title)}</b>"

    def clear(self) -> None:
        self.title.value, self.audio.value, self.image.value = "", b"", b""


class _Session:
    """What both widgets share: the log, resume, undo, progress, buttons and keys."""

    _id_key = _who_key = ""

    def _start(self, ids: list[str], who: str, log_path: Path, lines: list[dict]) -> None:
        if len(set(ids)) != len(ids):
            raise ValueError("item ids must be unique")
        self._ids, self._who, self.log_path = ids, who, Path(log_path)
        self._answers, self._history = _fold(lines, self._id_key)

    def _build(self, clips: list[_Clip], buttons: list[tuple], keys: dict) -> None:
        self.clips, self.progress, self.prompt, self.status = clips, W.Label(), W.HTML(), W.HTML()
        self.buttons = {}
        for label, fn, style in buttons:
            b = W.Button(description=label, button_style=style)
            b.on_click(lambda _b, fn=fn: self._safe(fn))
            self.buttons[label] = b
        self._keys = keys
        self.widget = W.VBox([self.progress, self.prompt, W.HBox([c.box for c in clips]),
                              W.HBox(list(self.buttons.values())), self.status])
        try:  # optional: plain ipywidgets cannot listen to keys
            from ipyevents import Event
            self._events = Event(source=self.widget, watched_events=["keydown"])
            self._events.on_dom_event(self._on_key)
        except ImportError:
            self._events = None

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
        append_jsonl(self.log_path, {self._id_key: key, "undo": True, self._who_key: self._who,
                                     "timestamp": _now()})
        self._history.pop()
        self._undone(self._answers.pop(key))
        self._go(f"Undid {key}.")
        return key

    _answered = _undone = staticmethod(lambda line: None)  # hooks: after an answer, an undo

    def _go(self, message: str = "") -> None:
        n = len(self._ids)
        self.current = next((i for i, k in enumerate(self._ids) if k not in self._answers), n)
        self.progress.value = f"{min(self.current + 1, n)} of {n}" + " (done)" * self.done
        for label, button in self.buttons.items():
            button.disabled = not self._history if label.startswith("Undo") else self.done
        self.status.value = html.escape(message)
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

    Which of chosen/rejected plays as A is drawn per pair from an RNG seeded by (seed, pair_id), so
    it is reproducible and independent of row order; the UI never names it. ``blind=False`` always
    plays the ranker's chosen clip as A and says so (for teaching, not for measuring). Several
    listeners may share ``out_path``: each resumes from, undoes and scores only their own lines.
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
        if not self.blind:
            return "chosen"
        digest = hashlib.sha256(f"{self.seed}:{pair_id}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return "chosen" if rng.random() < 0.5 else "rejected"

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
        return self._record({"pair_id": row.pair_id, "prompt": str(row.prompt),
                             "listener": self.listener, "choice": choice, "shown_as_a": a,
                             "strategy": str(row.strategy), "timestamp": _now()})

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

    ``records``: ManifestRecords or a DataFrame with manifest columns. Item ids are ``record.id``,
    or the location when a record has none. ``shuffle`` orders the clips by a permutation seeded
    with ``seed``. Files: see the module docstring.
    """

    _id_key, _who_key = "id", "labeller"

    def __init__(self, records, out_path, question: str, labeller: str = "anonymous",
                 shuffle: bool = False, seed: int = 0):
        if isinstance(records, pd.DataFrame):  # manifest columns; NaN cells count as absent
            records = [parse_record({k: v for k, v in r.items() if not pd.api.types.is_scalar(v)
                                     or pd.notna(v)}, f"records row {i}")
                       for i, r in enumerate(records.to_dict("records"))]
        recs = list(records)
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
        others = sorted({str(x.get("labeller")) for x in lines} - {labeller})
        if others:
            raise ValueError(f"{log} holds labels by {others}; use one out_path per labeller")
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
        rec = self._by_id[key]
        return self._record({"id": key, "dataset": rec.dataset, "location": rec.location,
                             "captions": rec.captions, "action": action,
                             "feedback": {"yes": 1, "no": 0}.get(action),
                             "labeller": self.labeller, "question": self.question,
                             "timestamp": _now()})

    @staticmethod
    def _baton(line: dict) -> ManifestRecord:
        return ManifestRecord(line["dataset"], line["location"], line["captions"], id=line["id"],
                              feedback=line["feedback"],
                              extra={"labeller": line["labeller"], "question": line["question"]})

    def _answered(self, line: dict) -> None:
        if line["action"] != "skip":  # the file holds exactly the standing labels, so no duplicate
            append_record(self.out_path, self._baton(line))

    def _undone(self, line: dict) -> None:
        if line["action"] != "skip":
            self._rewrite_baton()

    def _rewrite_baton(self) -> None:
        recs = [self._baton(self._answers[k]) for k in self._history
                if self._answers[k]["action"] != "skip"]
        if recs:
            write_manifest(self.out_path, recs)
        elif self.out_path.exists():
            self.out_path.unlink()

    def _render(self, i: int) -> None:
        rec = self.records[i]
        self.prompt.value = (f"<b>Prompt:</b> {html.escape(rec.captions)}<br>"
                             f"<b>{html.escape(self.question)}</b>")
        self.clips[0].show(rec.location, f"Clip {self._ids[i]}")


_LABEL_COLUMNS = ["id", "dataset", "location", "captions", "feedback", "labeller", "question"]


def load_labels(out_path, include_skips: bool = False) -> pd.DataFrame:
    """One row per clip with its final label (columns ``_LABEL_COLUMNS``; a skip has feedback NaN
    and appears only with ``include_skips``). Reads the events log, else a plain BATON file."""
    log = events_path(out_path)
    if log.exists():
        answers, history = _fold(read_jsonl(log), "id")
        rows = [answers[k] for k in history if include_skips or answers[k]["action"] != "skip"]
    else:
        rows = [{**r.to_dict(), "id": r.id if r.id is not None else r.location}
                for r in read_manifest(out_path, kind="feedback")]
    return pd.DataFrame(rows, columns=_LABEL_COLUMNS).astype({"feedback": float})


def cohen_kappa(a, b) -> float:
    """Cohen's kappa of two raters' labels: (p_o - p_e) / (1 - p_e), p_e from each rater's
    marginals. NaN when p_e == 1 (both raters always gave the same single label)."""
    a, b = np.asarray(a), np.asarray(b)
    p_o = float(np.mean(a == b))
    p_e = sum(float(np.mean(a == c)) * float(np.mean(b == c)) for c in np.union1d(a, b))
    return float("nan") if p_e >= 1.0 else (p_o - p_e) / (1.0 - p_e)


def fleiss_kappa(counts) -> float:
    """Fleiss' kappa from an (items, categories) matrix of rating counts, n raters per item:
    P_i = (sum_j n_ij^2 - n) / (n (n - 1)), p_j = sum_i n_ij / (N n),
    kappa = (mean P_i - sum_j p_j^2) / (1 - sum_j p_j^2); NaN when the chance term is 1."""
    counts = np.asarray(counts, dtype=float)
    n = counts.sum(axis=1)
    if len(counts) == 0 or not np.all(n == n[0]) or n[0] < 2:
        raise ValueError("fleiss_kappa needs items each rated by the same number (>= 2) of raters")
    n = n[0]
    p_bar = float(np.mean(((counts ** 2).sum(axis=1) - n) / (n * (n - 1))))
    p_e = float(((counts.sum(axis=0) / counts.sum()) ** 2).sum())
    return float("nan") if p_e >= 1.0 else (p_bar - p_e) / (1.0 - p_e)


def merge_labellers(paths: list) -> tuple[pd.DataFrame, dict]:
    """Merge several labellers' files into one label per clip by majority vote.

    Returns (merged, agreement). ``merged``: id, dataset, location, captions, votes ({labeller:
    0/1}), n_yes, n_no, feedback (1 / 0 by majority; NaN on a tie, e.g. 1-1: undecided, left out
    by ``write_merged``; a skip is no vote). ``agreement``: labellers; pairwise {"a vs b": n,
    percent_agreement (0-100), cohen_kappa} over the clips both labelled;
    mean_percent_agreement; then cohen_kappa (two labellers) or fleiss_kappa and n_items_all
    (three or more, over the clips that every labeller labelled).
    """
    tables, names = [], []
    for p in paths:
        t = load_labels(p)
        name = str(t.labeller.dropna().iloc[0]) if t.labeller.notna().any() else Path(p).stem
        name = f"{name}@{Path(p).stem}" if name in names else name
        names.append(name)
        tables.append(t.assign(labeller=name))
    labels = pd.concat(tables, ignore_index=True)
    if labels.question.dropna().nunique() > 1:
        asked = sorted(labels.question.dropna().unique())
        raise ValueError(f"labels answer different questions: {asked}")
    if not labels.feedback.isin([0.0, 1.0]).all():
        raise ValueError("merge_labellers expects 0/1 human labels")
    votes = labels.pivot(index="id", columns="labeller", values="feedback").reindex(columns=names)
    n_yes, n_no = (votes == 1).sum(axis=1), (votes == 0).sum(axis=1)
    merged = labels.drop_duplicates("id").set_index("id").loc[votes.index,
                                                             ["dataset", "location", "captions"]]
    merged["votes"] = [{k: int(v) for k, v in row.dropna().items()} for _, row in votes.iterrows()]
    merged["n_yes"], merged["n_no"] = n_yes, n_no
    merged["feedback"] = np.where(n_yes > n_no, 1.0, np.where(n_no > n_yes, 0.0, np.nan))
    agreement = {"labellers": names, "pairwise": {}}
    for a, b in combinations(names, 2):
        both, nan = votes[[a, b]].dropna(), float("nan")
        agreement["pairwise"][f"{a} vs {b}"] = {
            "n": len(both),
            "percent_agreement": 100.0 * float((both[a] == both[b]).mean()) if len(both) else nan,
            "cohen_kappa": cohen_kappa(both[a], both[b]) if len(both) else nan}
    pct = [v["percent_agreement"] for v in agreement["pairwise"].values()]
    agreement["mean_percent_agreement"] = float(np.nanmean(pct)) if pct else float("nan")
    if len(names) == 2:
        agreement["cohen_kappa"] = next(iter(agreement["pairwise"].values()))["cohen_kappa"]
    elif len(names) > 2:
        full = votes.dropna()
        agreement["n_items_all"] = len(full)
        counts = np.stack([(full == 0).sum(axis=1), (full == 1).sum(axis=1)], axis=1)
        agreement["fleiss_kappa"] = fleiss_kappa(counts) if len(full) else float("nan")
    return merged.reset_index(), agreement


def write_merged(path, merged: pd.DataFrame) -> int:
    """Write the decided labels (ties left out) as a clean BATON file; returns how many."""
    decided = merged[merged.feedback.notna()]
    if decided.empty:
        raise ValueError("no decided labels to write (every clip is a tie or unlabelled)")
    write_manifest(path, [ManifestRecord(r.dataset, r.location, r.captions, id=str(r.id),
                                         feedback=int(r.feedback), extra={"votes": r.votes})
                          for r in decided.itertuples()])
    return len(decided)
