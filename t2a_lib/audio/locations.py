"""Where a manifest's clips are on this machine: re-rooting locations written on another one.

Tango's AudioCaps manifests hold absolute locations of the machine they were made on
(``/data/deep/audioset/data/<id>.wav``); BATON's label files hold locations relative to the folder
that holds the Baton checkout (``Baton/data/Audio/...``; its trainer opens ``Baton/data/RM/...``
from there), or absolute ones from its authors' machine. Two rules, each a small function:

- ``reroot(location, audio_root)``: a location that is not found is looked for under ``audio_root``
  by its longest tail that exists there (``/data/deep/audioset/data/x.wav`` ->
  ``<audio_root>/data/x.wav``, else ``<audio_root>/x.wav``);
- ``resolve_baton(location, label_file, baton_root)``: a relative location is taken from
  ``baton_root`` (as BATON's trainer does); without one, from the folder above the label file's
  ancestor named like the location's first part (``.../Baton/data/HA/2label_HA.json`` and
  ``Baton/data/Audio/x.wav``: the folder holding ``Baton``); the label file's folder is the fallback.
"""

from __future__ import annotations

import os
from pathlib import Path


def reroot(location: str, audio_root, depth_hint: list[int] | None = None) -> str | None:
    """``audio_root`` joined with the longest tail of ``location`` that names a file there, or None.

    ``depth_hint`` (a one-element list) remembers how many leading parts the last hit dropped, tried
    first, so a manifest of 45,000 clips in one layout costs one ``stat`` per clip."""
    parts = [p for p in Path(location).parts if p not in (os.sep, "/")]
    order = list(range(len(parts)))
    if depth_hint and depth_hint[0] in order:
        order.insert(0, order.pop(order.index(depth_hint[0])))
    for drop in order:
        candidate = Path(audio_root, *parts[drop:])
        if candidate.is_file():
            if depth_hint is not None:
                depth_hint[:] = [drop]
            return str(candidate)
    return None


def reroot_records(records, audio_root) -> int:
    """Point every record whose clip is not where its location says at its copy under ``audio_root``
    (``reroot``); returns how many were moved. Records not found there keep their location."""
    if not audio_root:
        return 0
    hint, moved = [0], 0
    for rec in records:
        if not os.path.isfile(rec.location):
            found = reroot(rec.location, audio_root, hint)
            if found:
                rec.location, moved = found, moved + 1
    return moved


def baton_candidates(location: str, label_file, baton_root=None) -> list[Path]:
    """Where a BATON label line's clip may be, in the order tried (see the module docstring)."""
    loc = Path(location)
    if loc.is_absolute():
        return [loc] + ([Path(f)] if baton_root and (f := reroot(location, baton_root)) else [])
    label_dir = Path(label_file).resolve().parent
    out = [Path(baton_root).expanduser().resolve() / loc] if baton_root else []
    head = loc.parts[0] if loc.parts else ""
    out += [a.parent / loc for a in label_dir.parents if a.name == head and a.parent != a]
    if label_dir.name == head:
        out.append(label_dir.parent / loc)
    return out + [label_dir / loc]


def resolve_baton(location: str, label_file, baton_root=None) -> str:
    """The first of ``baton_candidates`` that is a file, else the first candidate (for the error)."""
    candidates = baton_candidates(location, label_file, baton_root)
    hit = next((c for c in candidates if c.is_file()), candidates[0])
    return os.path.normpath(str(hit))


def baton_location(path, baton_root) -> str:
    """How a label file written for BATON's convention stores ``path``: relative to ``baton_root``
    (the folder holding the checkout) when it lies inside it, else absolute."""
    target, root = os.path.abspath(path), os.path.abspath(baton_root)
    return os.path.relpath(target, root) if Path(target).is_relative_to(root) else target
