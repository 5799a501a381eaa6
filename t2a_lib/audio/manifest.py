"""Tango / BATON JSON-lines manifests: read strictly, write cleanly, append safely.

One JSON object per line:

    Tango:    {"dataset": "world", "location": "audio/0001.wav", "captions": "a dog barks"}
    ours:     + "id": "0001", "events": [{"label": "bark", "onset": 0.5, "offset": 1.2}],
                "relation": "before"
    BATON:    {"dataset", "location", "captions", "feedback"}  feedback: 0/1 (people) or a score
              in [0, 1] (reward model); the anchors' reward-model files call it "SED".

Locations are stored relative to the file's folder (``portable_location``) and resolved
against it when read (``resolve_location``), so a file means the same from any working folder.

Accepted quirks: a trailing comma after each line (``{...},``), blank lines, and a file holding
one JSON array of objects. Required fields are ``location`` and ``captions``; ``dataset`` is
optional (no loader uses it; BATON's released ``test_audiocaps_2label.json`` spells it
``datasetresult`` on one line). A missing or malformed required field raises ``ManifestError``
naming the file, the 1-based line and the field. Fields we do not know are kept in
``ManifestRecord.extra`` and written back; ``read_manifest`` warns once per file and field,
naming the first line that has it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

REQUIRED = ("location", "captions")
KNOWN = ("dataset",) + REQUIRED + ("id", "events", "relation", "feedback", "SED")
# fields kept in ``extra`` without a warning: Tango's AudioSet label ids (its
# ``*_with_labels.json``) and what our own writers add (merged votes, a labeller's question)
QUIET_EXTRA = ("labels", "votes", "labeller", "question")


class ManifestError(ValueError):
    """A manifest that breaks the format; the message names the file, line and field."""


@dataclass
class ManifestRecord:
    """One manifest line. ``location`` is resolved against the manifest's folder when read with
    ``resolve_audio=True``; ``source`` and ``line`` say where the record came from. ``dataset``
    is None when the line has none (it is then not written back)."""

    dataset: str | None
    location: str
    captions: str
    id: str | None = None
    events: list[dict] | None = None
    relation: str | None = None
    feedback: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    source: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object for this record (``feedback`` always under that name, never ``SED``)."""
        out: dict[str, Any] = {}
        if self.id is not None:
            out["id"] = self.id
        if isinstance(self.dataset, str):  # absent: None (or NaN, through a pandas table)
            out["dataset"] = self.dataset
        out.update(location=self.location, captions=self.captions)
        for key in ("events", "relation", "feedback"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update(self.extra)
        return out


def _number(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ManifestError(f"{where}: {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ManifestError(f"{where}: {name} must be finite, got {value!r}")
    return float(value)


def _string(obj: dict, key: str, where: str) -> str:
    value = obj[key]
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{where}: field '{key}' must be a non-empty string, got {value!r}")
    return value


def _check_finite(value: Any, where: str, name: str) -> None:
    """Reject NaN/inf anywhere inside an extra field."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ManifestError(f"{where}: field {name} must be finite, got {value!r}")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, where, f"{name}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, where, f"{name}[{i}]")


def _parse_events(value: Any, where: str) -> list[dict]:
    if not isinstance(value, list):
        raise ManifestError(f"{where}: field 'events' must be a list, got {type(value).__name__}")
    events = []
    for i, ev in enumerate(value):
        if not isinstance(ev, dict):
            raise ManifestError(f"{where}: events[{i}] must be an object, got {ev!r}")
        for key in ("label", "onset", "offset"):
            if key not in ev:
                raise ManifestError(f"{where}: events[{i}] is missing field '{key}'")
        if not isinstance(ev["label"], str) or not ev["label"].strip():
            raise ManifestError(f"{where}: events[{i}].label must be a non-empty string")
        onset = _number(ev["onset"], where, f"events[{i}].onset")
        offset = _number(ev["offset"], where, f"events[{i}].offset")
        if onset < 0:
            raise ManifestError(f"{where}: events[{i}].onset must be >= 0, got {onset}")
        if onset > offset:
            raise ManifestError(f"{where}: events[{i}]: onset {onset} > offset {offset}")
        events.append({**ev, "onset": onset, "offset": offset})
    return events


def parse_record(obj: Any, where: str, require_feedback: bool = False) -> ManifestRecord:
    """Validate one decoded JSON object; ``where`` (e.g. "train.json line 7") prefixes errors."""
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    obj = dict(obj)
    if "SED" in obj:  # the anchors' reward-model files
        sed = obj.pop("SED")
        if "feedback" in obj and obj["feedback"] != sed:
            raise ManifestError(f"{where}: fields 'feedback' and 'SED' disagree")
        obj["feedback"] = sed
    for key in REQUIRED + (("feedback",) if require_feedback else ()):
        if key not in obj:
            raise ManifestError(f"{where}: missing field '{key}'")
    dataset = _string(obj, "dataset", where) if obj.get("dataset") is not None else None
    rec = ManifestRecord(dataset, *(_string(obj, k, where) for k in REQUIRED))
    if obj.get("id") is not None:
        if isinstance(obj["id"], bool) or not isinstance(obj["id"], (str, int)):
            raise ManifestError(f"{where}: field 'id' must be a string or integer")
        rec.id = str(obj["id"])
    if obj.get("events") is not None:
        rec.events = _parse_events(obj["events"], where)
    if obj.get("relation") is not None:
        if not isinstance(obj["relation"], str):
            raise ManifestError(f"{where}: field 'relation' must be a string")
        rec.relation = obj["relation"]
    if obj.get("feedback") is not None:
        rec.feedback = _number(obj["feedback"], where, "field 'feedback'")
        if not 0.0 <= rec.feedback <= 1.0:
            raise ManifestError(f"{where}: field 'feedback' must be in [0, 1], got {rec.feedback}")
    elif require_feedback:
        raise ManifestError(f"{where}: field 'feedback' must be a number in [0, 1], got null")
    rec.extra = {k: v for k, v in obj.items() if k not in KNOWN}
    for k, v in rec.extra.items():
        _check_finite(v, where, f"'{k}'")
    return rec


def _decode_array(text: str, path: Path) -> list[tuple[int, Any]]:
    """(line number, object) for each element of a JSON-array file."""
    decoder, items = json.JSONDecoder(), []
    pos = text.index("[") + 1
    try:
        while True:
            pos = len(text) - len(text[pos:].lstrip())
            if text[pos:pos + 1] == "]" and not items:
                break
            obj, end = decoder.raw_decode(text, pos)
            items.append((text.count("\n", 0, pos) + 1, obj))
            pos = len(text) - len(text[end:].lstrip())
            if text[pos:pos + 1] == "]":
                break
            if text[pos:pos + 1] != ",":
                raise json.JSONDecodeError("expected ',' or ']'", text, pos)
            pos += 1
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} line {exc.lineno}: invalid JSON ({exc.msg})") from exc
    if text[pos + 1:].strip():
        line = text.count("\n", 0, pos) + 1
        raise ManifestError(f"{path} line {line}: invalid JSON (extra data after the array)")
    return items


def _decode(path: Path) -> list[tuple[int, Any]]:
    """(1-based line number, decoded object) pairs from a JSON-lines or JSON-array file."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ManifestError(f"{path} line {line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {col}); "
                            f"re-save the file as UTF-8") from None
    if not text.strip():
        raise ManifestError(f"{path} is empty")
    if text.lstrip().startswith("["):
        return _decode_array(text, path)
    out = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.endswith(","):  # the anchors' trailing-comma quirk
            line = line[:-1].rstrip()
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path} line {n}: invalid JSON ({exc.msg})") from exc
    return out


def read_manifest(
    path: str | os.PathLike, kind: str = "auto", resolve_audio: bool = True
) -> list[ManifestRecord]:
    """Read and validate a manifest.

    ``kind``: "tango" (feedback optional), "feedback" (BATON; every line needs feedback/SED) or
    "auto" (feedback required on every line if the first line has it). With ``resolve_audio``,
    relative ``location``s become absolute paths under the manifest's folder (the file's own
    string is kept when False). A file holding one JSON array of objects is also accepted; its
    errors name the line where the offending element starts.
    """
    if kind not in ("tango", "feedback", "auto"):
        raise ValueError(f"kind must be 'tango', 'feedback' or 'auto', got {kind!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    items = _decode(path)
    if not items:
        raise ManifestError(f"{path} is empty (no records)")
    if kind == "auto":
        first = items[0][1]
        has_feedback = isinstance(first, dict) and ("feedback" in first or "SED" in first)
        kind = "feedback" if has_feedback else "tango"
    records: list[ManifestRecord] = []
    seen_ids: dict[str, int] = {}
    for n, obj in items:
        where = f"{path} line {n}"
        rec = parse_record(obj, where, require_feedback=(kind == "feedback"))
        if rec.id is not None:
            if rec.id in seen_ids:
                first = seen_ids[rec.id]
                raise ManifestError(f"{where}: duplicate id {rec.id!r} (first on line {first})")
            seen_ids[rec.id] = n
        if resolve_audio:
            rec.location = resolve_location(rec.location, path.resolve().parent)
        rec.source, rec.line = str(path), n
        records.append(rec)
    warn_unknown_fields(records, path)
    return records


def warn_unknown_fields(records: list[ManifestRecord], path) -> None:
    """One warning per field we do not know (``extra``, less ``QUIET_EXTRA``), naming the file,
    the first line that has it and how many lines do; the records keep it in ``extra``."""
    lines: dict[str, list[int]] = {}
    for rec in records:
        for key in rec.extra:
            if key not in QUIET_EXTRA:
                lines.setdefault(key, []).append(rec.line)
    for key, at in lines.items():
        more = f" (and {len(at) - 1} more line(s))" if len(at) > 1 else ""
        warnings.warn(f"{path} line {at[0]}: unknown field {key!r}{more} ignored (no loader "
                      f"reads it; kept in the record's extra fields)", UserWarning, stacklevel=3)


# how far above a file's folder a location may lie and still be written relative to it: a run
# folder's label files (run/workshop/<name>/x.jsonl) reach the run's audio (run/baton/hd/audio)
RELATIVE_LEVELS_UP = 3  # a workshop log, <run>/workshop/people/<id>/, reaches the run's audio


def portable_location(location: str, folder) -> str:
    """How a file in ``folder`` should store ``location`` (absolute, or as this process opens
    it): relative to ``folder`` when it lies inside it or at most ``RELATIVE_LEVELS_UP`` folders
    above, so the folder travels whole; otherwise absolute. Readers resolve it against the file's
    folder (``resolve_location``), from any working folder."""
    target = os.path.abspath(location)
    rel = os.path.relpath(target, os.path.abspath(folder))
    parts = Path(rel).parts
    ups = next((i for i, part in enumerate(parts) if part != ".."), len(parts))
    return rel if ups <= RELATIVE_LEVELS_UP else target


def resolve_location(location: str, folder) -> str:
    """A stored location as an absolute path: a relative one is relative to the file's folder."""
    if os.path.isabs(location):
        return location
    return os.path.normpath(os.path.join(os.path.abspath(folder), location))


def _line(rec: ManifestRecord, folder: Path, where: str) -> str:
    """One validated JSON line; an absolute location near ``folder`` is made relative to it
    (``portable_location``); a relative one is kept: it is already relative to the file."""
    d = rec.to_dict()
    if os.path.isabs(rec.location):
        d["location"] = portable_location(rec.location, folder)
    parse_record(d, where)  # never write what we would refuse to read
    return json.dumps(d, ensure_ascii=False, allow_nan=False) + "\n"


def _umask() -> int:
    return _UMASK


_UMASK = os.umask(0o022)  # read once, at import (os.umask can only be read by setting it)
os.umask(_UMASK)


def write_manifest(path: str | os.PathLike, records: Iterable[ManifestRecord]) -> None:
    """Write clean JSON lines (no trailing commas) atomically: temp file, fsync, ``os.replace``.

    Absolute locations in or near the manifest's folder are written relative to it
    (``portable_location``), so a manifest read with ``resolve_audio=True`` and written back
    unchanged keeps its original paths, and a run folder can be moved whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.resolve().parent
    lines = [_line(r, folder, f"{path} record {i}") for i, r in enumerate(records, start=1)]
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, mode)  # mkstemp makes 0600: keep the file's own mode (a new one: the umask's)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def append_record(path: str | os.PathLike, record: ManifestRecord) -> None:
    """Append one validated line and flush + fsync, so a dying kernel loses nothing written.

    If the file ends in a torn line (no newline: a write interrupted by a crash), that fragment is
    dropped with a warning when it is not valid JSON, or terminated when it is, before appending.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = _line(record, path.resolve().parent, f"{path} (appended record)")
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(size - 1, 0))
        if size and f.read(1) != b"\n":
            f.seek(0)
            data = f.read()
            start = data.rfind(b"\n") + 1
            tail = data[start:].decode("utf-8", "replace").strip().rstrip(",")
            try:
                json.loads(tail)
                f.write(b"\n")
            except json.JSONDecodeError:
                warnings.warn(f"{path}: dropping torn last line {tail[:80]!r}", stacklevel=2)
                f.truncate(start)
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def check_audio_exists(records: Iterable[ManifestRecord]) -> None:
    """Raise ``ManifestError`` naming each missing audio file with its manifest and line."""
    missing = []
    for rec in records:
        if not os.path.isfile(rec.location):
            where = f"{rec.source} line {rec.line}" if rec.source else "record"
            missing.append(f"{where}: audio file not found: {rec.location}")
    if missing:
        shown = missing[:10] + ([f"... and {len(missing) - 10} more"] if len(missing) > 10 else [])
        raise ManifestError(f"{len(missing)} audio file(s) missing:\n" + "\n".join(shown))
