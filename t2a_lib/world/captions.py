"""The caption grammar: render AudioCaps-style captions, parse them back, and perturb them.

A caption is described by a :class:`CaptionSpec`: the foreground labels in *word* order, a
relation, and an optional background label. Relations:

========== ============================================== ==========================
relation   example                                        time order of labels
========== ============================================== ==========================
single     "A dog barks"                                  --
then       "A dog barks, then a siren wails"              word order
followed   "A dog barks followed by a siren wailing"      word order
before     "A dog barks before a siren wails"             word order
after      "A siren wails after a dog barks"              reversed (text != time)
while      "Rain falls while a bird chirps"               simultaneous (no order)
========== ============================================== ==========================

Any of them may end in "... with G in the background" (``background`` set). The same grammar
renders perturbed captions (swap a concept, drop one, add one, reorder), which stand in for
Tango 2's GPT-4 perturbations; :class:`CallablePerturber` plugs an LLM in through the same
interface.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable, Protocol

import numpy as np

from .scenes import CLASSES, TEXTURES, Scene

# finite clauses and gerund phrases per class; every phrase belongs to exactly one class
PHRASES: dict[str, tuple[list[str], list[str]]] = {
    "dog_bark": (["a dog barks", "a dog is barking", "a puppy yaps", "a dog barks loudly"],
                 ["a dog barking", "a puppy yapping", "a dog barking loudly"]),
    "siren": (["a siren wails", "a siren blares", "an emergency siren sounds", "a police siren wails"],
              ["a siren wailing", "a siren blaring", "an emergency siren sounding"]),
    "bell": (["a bell rings", "a bell chimes", "a church bell tolls"],
             ["a bell ringing", "a bell chiming", "a church bell tolling"]),
    "rain": (["rain falls", "rain pours down", "heavy rain falls"],
             ["rain falling", "rain pouring down", "heavy rain falling"]),
    "clock_tick": (["a clock ticks", "a clock is ticking", "a clock ticks steadily"],
                   ["a clock ticking", "a clock ticking steadily"]),
    "bird_chirp": (["a bird chirps", "a bird sings", "birds tweet"],
                   ["a bird chirping", "a bird singing", "birds tweeting"]),
    "engine_hum": (["an engine hums", "an engine idles", "a motor rumbles"],
                   ["an engine humming", "an engine idling", "a motor rumbling"]),
    "whistle": (["someone whistles", "a whistle blows", "a person whistles a tune"],
                ["someone whistling", "a whistle blowing", "a person whistling a tune"]),
    "knock": (["someone knocks on a door", "a door is knocked on", "someone knocks on wood"],
              ["someone knocking on a door", "knocking on a door", "someone knocking on wood"]),
    "beep": (["a device beeps", "an alarm beeps", "a machine beeps"],
             ["a device beeping", "an alarm beeping", "a machine beeping"]),
    "wind": (["wind blows", "the wind howls", "strong wind gusts"],
             ["wind blowing", "the wind howling", "strong wind gusting"]),
    "drum": (["a drum beats", "someone plays a drum", "drums pound"],
             ["a drum beating", "someone playing a drum", "drums pounding"]),
}
assert set(PHRASES) == set(CLASSES)

RELATIONS = ("single", "then", "followed", "before", "after", "while")
TEMPORAL = ("then", "followed", "before", "after")  # relations that prompt an order
_CLAUSE = {p: lab for lab, (cl, _) in PHRASES.items() for p in cl}
_GERUND = {p: lab for lab, (_, ge) in PHRASES.items() for p in ge}
_PHRASE_WORDS = sorted(((p.split(), lab) for lab, forms in PHRASES.items() for p in forms[0] + forms[1]),
                       key=lambda x: -len(x[0]))  # every phrase as words, longest first
_BG = re.compile(r"^(.*?),? with (.+) in the background$")


class CaptionError(ValueError):
    """A caption the grammar cannot read."""


@dataclass(frozen=True)
class CaptionSpec:
    labels: tuple[str, ...]
    relation: str
    background: str | None = None

    def __post_init__(self):
        if self.relation not in RELATIONS:
            raise CaptionError(f"unknown relation {self.relation!r}")
        n = len(self.labels)
        if (self.relation == "single") != (n == 1) or n == 0 or n > 3:
            raise CaptionError(f"relation {self.relation!r} cannot take {n} labels")
        if self.relation in ("before", "after", "while") and n != 2:
            raise CaptionError(f"relation {self.relation!r} takes exactly 2 labels")

    @property
    def time_order(self) -> list[str] | None:
        """Foreground labels in the order they should sound; None when simultaneous."""
        if self.relation == "while":
            return None
        return list(self.labels[::-1]) if self.relation == "after" else list(self.labels)

    @property
    def all_labels(self) -> list[str]:
        return list(self.labels) + ([self.background] if self.background else [])

    @property
    def kind(self) -> str:
        """The relation kind for statistics: the relation, or 'background' for one foreground
        event over a bed."""
        return "background" if self.background and self.relation == "single" else self.relation

    @property
    def is_temporal(self) -> bool:
        return self.relation in TEMPORAL


# ----------------------------------------------------------------------------------------------
# rendering


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def render_caption(spec: CaptionSpec, rng: np.random.Generator, choices: dict[str, int] | None = None) -> str:
    """One AudioCaps-style caption for the spec, synonyms drawn from ``rng`` (or fixed per label
    by ``choices``: label -> synonym index, as returned by :func:`phrase_choices`)."""
    def word(lab: str, form: int) -> str:
        options = PHRASES[lab][form]
        return options[choices[lab] % len(options)] if choices and lab in choices else _pick(rng, options)

    cl = [word(lab, 0) for lab in spec.labels]
    ge = [word(lab, 1) for lab in spec.labels]
    r = spec.relation
    if r == "single":
        form = int(rng.integers(3))
        text = [cl[0], ge[0], f"the sound of {ge[0]}"][form] if not spec.background else cl[0]
    elif r == "then":
        text = ", then ".join(cl)
    elif r == "followed":
        text = cl[0] + "".join(f", followed by {g}" for g in ge[1:]) if len(cl) == 3 else f"{cl[0]} followed by {ge[1]}"
    else:  # before / after / while
        text = f"{cl[0]} {r} {cl[1]}"
    if spec.background:
        text += f" with {word(spec.background, 1)} in the background"
    return text[0].upper() + text[1:]


def spec_from_scene(scene: Scene, rng: np.random.Generator) -> CaptionSpec:
    """Choose a relation that truthfully describes the scene's timeline."""
    fg = [e.label for e in scene.foreground]
    bg = scene.background.label if scene.background else None
    if scene.layout == "overlap":
        return CaptionSpec(tuple(fg[:: 1 if rng.random() < 0.5 else -1]), "while")
    if len(fg) == 1:
        return CaptionSpec(tuple(fg), "single", bg)
    if len(fg) == 3:
        return CaptionSpec(tuple(fg), _pick(rng, ["then", "followed"]), bg)
    rel = _pick(rng, ["then", "followed", "before", "after"])
    return CaptionSpec(tuple(fg[::-1] if rel == "after" else fg), rel, bg)


def caption_scene(scene: Scene, rng: np.random.Generator) -> tuple[str, CaptionSpec]:
    spec = spec_from_scene(scene, rng)
    return render_caption(spec, rng), spec


# ----------------------------------------------------------------------------------------------
# parsing


def _norm(caption: str) -> str:
    return re.sub(r"\s+", " ", caption.strip().lower().rstrip("."))


def _phrase(text: str, table: dict[str, str], caption: str) -> str:
    if text not in table:
        raise CaptionError(f"cannot read {text!r} in caption {caption!r}")
    return table[text]


def parse_caption(caption: str) -> CaptionSpec:
    """Read a grammar caption back into its spec (raises :class:`CaptionError` otherwise)."""
    text, bg = _norm(caption), None
    m = _BG.match(text)
    if m:
        text, bg = m.group(1), _phrase(m.group(2), _GERUND, caption)
    if ", then " in text:
        labels = [_phrase(p, _CLAUSE, caption) for p in text.split(", then ")]
        return CaptionSpec(tuple(labels), "then", bg)
    if " followed by " in text:
        head, *rest = re.split(r",? followed by ", text)
        labels = [_phrase(head, _CLAUSE, caption)] + [_phrase(p, _GERUND, caption) for p in rest]
        return CaptionSpec(tuple(labels), "followed", bg)
    for rel in ("before", "after", "while"):
        parts = text.split(f" {rel} ")
        if len(parts) == 2:
            return CaptionSpec(tuple(_phrase(p, _CLAUSE, caption) for p in parts), rel, bg)
    if text in _CLAUSE:
        return CaptionSpec((_CLAUSE[text],), "single", bg)
    if text.startswith("the sound of "):
        text = text[len("the sound of "):]
    return CaptionSpec((_phrase(text, _GERUND, caption),), "single", bg)


FREE_KIND = "free"  # the kind of a caption outside the grammar (real data: "a man speaks")


def parse_caption_or_none(caption: str) -> CaptionSpec | None:
    """:func:`parse_caption`, or None for a free-form caption the grammar cannot read, as external
    manifests (AudioCaps) hold; :func:`parse_caption` itself stays strict."""
    try:
        return parse_caption(caption)
    except CaptionError:
        return None


def caption_kind(caption: str) -> str:
    """The relation kind of a grammar caption (``CaptionSpec.kind``), or ``FREE_KIND`` for a
    free-form caption: for grouping prompts by kind."""
    spec = parse_caption_or_none(caption)
    return FREE_KIND if spec is None else spec.kind


def word_labels(caption: str) -> list[str | None]:
    """For each word of a caption (words and commas, as the world tokenizer splits them), the
    class whose phrase it belongs to, or None ("then", "with", ...). Longest phrases match first."""
    words = re.findall(r"[a-z]+|,", caption.lower())
    out: list[str | None] = [None] * len(words)
    for pw, lab in _PHRASE_WORDS:
        for i in range(len(words) - len(pw) + 1):
            if words[i:i + len(pw)] == pw and all(o is None for o in out[i:i + len(pw)]):
                out[i:i + len(pw)] = [lab] * len(pw)
    return out


def phrase_choices(caption: str) -> dict[str, int]:
    """Which synonym each class uses in a caption (index into its clause or gerund list)."""
    text, out = _norm(caption), {}
    for lab, (clauses, gerunds) in PHRASES.items():
        found = [(len(p), i) for form in (clauses, gerunds) for i, p in enumerate(form) if p in text]
        if found:
            out[lab] = max(found)[1]
    return out


def reorder_twin(caption: str) -> str:
    """The same caption with its foreground events in the reverse time order and the same
    synonyms: the hard negative an order-aware scorer must reject."""
    spec = parse_caption(caption)
    if not spec.is_temporal:
        raise CaptionError(f"no time order to reverse in {caption!r} ({spec.relation})")
    twin = replace(spec, labels=spec.labels[::-1])
    return render_caption(twin, np.random.default_rng(0), choices=phrase_choices(caption))


# ----------------------------------------------------------------------------------------------
# perturbations (Tango 2's S2 / S3 losers)

PERTURBATIONS = ("swap", "drop", "add", "reorder")


def _from_order(spec: CaptionSpec, order: list[str]) -> CaptionSpec:
    """A spec whose foreground sounds in ``order`` (for ``while``: the listed labels), keeping
    the relation where it still fits the number of labels and falling back to ``then``."""
    n, rel = len(order), spec.relation
    if n == 1:
        rel = "single"
    elif rel == "single" or (n == 3 and rel in ("before", "after", "while")):
        rel = "then"
    labels = order[::-1] if rel == "after" else order
    return replace(spec, labels=tuple(labels), relation=rel)


def perturb_spec(spec: CaptionSpec, kind: str, rng: np.random.Generator) -> CaptionSpec:
    """Apply one perturbation. ``swap`` replaces one foreground concept by an absent class;
    ``drop`` removes one event (foreground, or the background); ``add`` inserts an absent class
    into the sequence; ``reorder`` swaps the time order of two foreground events (temporal
    captions only). Raises :class:`CaptionError` when the kind does not apply."""
    labels, present = list(spec.time_order or spec.labels), set(spec.all_labels)
    absent = [c for c in CLASSES if c not in present]
    if kind == "swap":
        labels[int(rng.integers(len(labels)))] = _pick(rng, absent)
        return _from_order(spec, labels)
    if kind == "drop":
        if len(spec.all_labels) < 2:
            raise CaptionError("drop needs at least two events")
        if spec.background and (len(labels) == 1 or rng.random() < 0.3):
            return replace(spec, background=None)
        labels.pop(int(rng.integers(len(labels))))
        return _from_order(spec, labels)
    if kind == "add":
        if len(labels) >= 3:
            raise CaptionError("add needs fewer than three foreground events")
        pool = [c for c in absent if c not in TEXTURES] or absent
        labels.insert(int(rng.integers(len(labels) + 1)), _pick(rng, pool))
        return _from_order(spec, labels)
    if kind == "reorder":
        if not spec.is_temporal:
            raise CaptionError(f"reorder needs a temporal caption, not {spec.relation!r}")
        i, j = rng.choice(len(labels), 2, replace=False)
        labels[i], labels[j] = labels[j], labels[i]
        return _from_order(spec, labels)
    raise CaptionError(f"unknown perturbation {kind!r}; known: {', '.join(PERTURBATIONS)}")


class Perturber(Protocol):
    """Anything that turns a caption into ``n`` perturbed captions of a kind."""

    def __call__(self, caption: str, kind: str, n: int, rng: np.random.Generator) -> list[str]: ...


class GrammarPerturber:
    """The deterministic, offline stand-in for Tango 2's GPT-4 perturbations."""

    def __call__(self, caption: str, kind: str, n: int, rng: np.random.Generator) -> list[str]:
        spec, seen, out = parse_caption(caption), set(), []
        for _ in range(n * 10):
            new = perturb_spec(spec, kind, rng)
            if new != spec and new not in seen:
                seen.add(new)
                out.append(render_caption(new, rng))
            if len(out) == n:
                break
        return out


def perturbation_demo(caption_list, rng: np.random.Generator, limit: int = 12,
                      perturber: Perturber | None = None) -> list[dict]:
    """Each kind of perturbation applied to the first temporal captions (about ``limit`` rows);
    a kind that does not apply to a caption (``add`` to three events) shows as "—"."""
    perturber, rows = perturber or GrammarPerturber(), []
    for caption in caption_list:
        spec = parse_caption_or_none(caption)
        if spec is None or not spec.is_temporal:  # a real caption, or not temporal
            continue
        for kind in PERTURBATIONS:
            try:
                out = perturber(caption, kind, 1, rng)
            except CaptionError:
                out = []
            rows.append({"caption": caption, "time order": " → ".join(spec.time_order),
                         "perturbation": kind, "perturbed": out[0] if out else "—"})
        if len(rows) >= limit:
            break
    return rows


class CallablePerturber:
    """Plug in an LLM: ``fn(caption, kind, n) -> list[str]``. Outputs are validated (strings,
    distinct from the caption) but, unlike the grammar, not guaranteed parseable."""

    def __init__(self, fn: Callable[[str, str, int], list[str]]):
        self.fn = fn

    def __call__(self, caption: str, kind: str, n: int, rng: np.random.Generator) -> list[str]:
        out = self.fn(caption, kind, n)
        if not isinstance(out, list) or not all(isinstance(s, str) and s.strip() for s in out):
            raise CaptionError(f"perturber returned {out!r}; expected a list of non-empty strings")
        return [s for s in out if _norm(s) != _norm(caption)][:n]
