"""How held out a held-out prompt is: its words, and what it asks for.

The splits keep every caption's *text* in one split (``datasets.caption_split``), so no test
prompt is a training caption word for word. Its *content* can still recur: "a dog barks, then a
bell rings" and "a dog is barking followed by a bell ringing" ask for the same ordered events.
This module reads captions back through the grammar and compares what they ask for:

- ``text_leaks``: test prompts whose normalised text is a training caption (must be none);
- ``order_key``: a temporal prompt's ordered foreground events, e.g. ``("dog", "bell")``;
- ``novel_order``: test prompts whose ordered events occur in no training caption, the subset
  on which a method's gain is a generalisation to an unseen combination;
- ``overlap_report``: how many temporal prompts are novel, and what share of the rest also
  shares its background with some training caption.
"""

from __future__ import annotations

import numpy as np

from .captions import parse_caption_or_none


def _temporal_spec(caption: str):
    spec = parse_caption_or_none(caption)
    return spec if spec is not None and spec.is_temporal and spec.time_order is not None else None


def order_key(caption: str) -> tuple[str, ...] | None:
    """The ordered foreground events a temporal grammar caption asks for; None otherwise."""
    spec = _temporal_spec(caption)
    return None if spec is None else tuple(spec.time_order)


def content_key(caption: str) -> tuple | None:
    """What a temporal caption asks for, whatever its wording: ordered events and background."""
    spec = _temporal_spec(caption)
    return None if spec is None else (tuple(spec.time_order), spec.background)


def normalised(caption: str) -> str:
    """Caption text without case, repeated spaces or a final full stop."""
    return " ".join(caption.lower().strip().rstrip(".").split())


def text_leaks(test_captions, train_captions) -> list[str]:
    """Test captions whose normalised text is a training caption's."""
    train = {normalised(c) for c in train_captions}
    return [c for c in test_captions if normalised(c) in train]


def novel_order(captions, train_captions) -> np.ndarray:
    """Per caption: True when it is temporal and its ordered events occur in no training caption."""
    seen = {order_key(c) for c in train_captions} - {None}
    keys = [order_key(c) for c in captions]
    return np.array([k is not None and k not in seen for k in keys], bool)


def overlap_report(test_captions, train_captions) -> dict:
    """Temporal test prompts, how many ask for an unseen order of events, and the share of the rest
    whose whole content (ordered events and background) some training caption asks for too."""
    temporal = [c for c in test_captions if order_key(c) is not None]
    novel = novel_order(temporal, train_captions)
    seen_content = {content_key(c) for c in train_captions} - {None}
    rest = [c for c, n in zip(temporal, novel) if not n]
    same = sum(content_key(c) in seen_content for c in rest)
    return {"temporal prompts": len(temporal), "novel order": int(novel.sum()),
            "rest sharing their whole content with a training caption": same / len(rest) if rest else float("nan")}
