"""The caption grammar: round trips, truthfulness to the timeline, perturbations, tokenizer.

Word order is measured here from the raw caption text (where each class's phrase occurs),
independently of ``parse_caption``; time order comes from the scene's timeline.
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from t2a_lib.world import captions as C
from t2a_lib.world.captions import (
    PERTURBATIONS, CallablePerturber, CaptionError, CaptionSpec, GrammarPerturber, caption_scene,
    parse_caption, perturb_spec, render_caption,
)
from t2a_lib.world.scenes import CLASSES, TEXTURES, clip_rng, sample_scene

N_SCENES = 2000


def _samples(seed: int = 0, n: int = N_SCENES):
    out = []
    for i in range(n):
        rng = clip_rng(seed, i)
        scene = sample_scene(rng)
        caption, spec = caption_scene(scene, rng)
        out.append((scene, caption, spec))
    return out


@pytest.fixture(scope="module")
def samples():
    return _samples()


def _text_positions(caption: str, labels) -> dict[str, int]:
    """Where each label's phrase first appears in the caption text (independent of the parser)."""
    low = caption.lower()
    pos = {}
    for lab in labels:
        clauses, gerunds = C.PHRASES[lab]
        hits = [m.start() for p in clauses + gerunds for m in re.finditer(r"\b" + re.escape(p) + r"\b", low)]
        assert hits, f"no phrase of {lab!r} in {caption!r}"
        pos[lab] = min(hits)
    return pos


def _word_order(caption: str, labels) -> list[str]:
    pos = _text_positions(caption, labels)
    return sorted(pos, key=pos.get)


def _onset_order(scene) -> list[str]:
    return [e.label for e in sorted(scene.foreground, key=lambda e: e.onset)]


# ----------------------------------------------------------------------------------------------
# round trip and truthfulness


def test_render_parse_round_trip(samples):
    for scene, caption, spec in samples:
        assert parse_caption(caption) == spec, caption
        # re-rendering with other synonyms parses to the same spec too
        for k in range(2):
            assert parse_caption(render_caption(spec, np.random.default_rng(k))) == spec


def test_round_trip_over_every_spec_shape():
    rng = np.random.default_rng(0)
    for rel in C.RELATIONS:
        for n in (1, 2, 3):
            for bg in (None, "rain"):
                try:
                    spec = CaptionSpec(tuple(["dog_bark", "siren", "bell"][:n]), rel, bg)
                except CaptionError:
                    continue
                for _ in range(20):
                    cap = render_caption(spec, rng)
                    assert parse_caption(cap) == spec, cap
                    assert parse_caption(cap.lower() + ".") == spec
                    assert parse_caption("  " + cap.upper() + "  ") == spec


def test_caption_mentions_exactly_the_scene_classes(samples):
    for scene, caption, spec in samples:
        truth = sorted(e.label for e in scene.events)
        assert sorted(spec.all_labels) == truth, caption
        present = [lab for lab in CLASSES if any(
            re.search(r"\b" + re.escape(p) + r"\b", caption.lower()) for p in sum(C.PHRASES[lab], []))]
        assert sorted(present) == truth, (caption, present)
        if scene.background is not None:
            assert spec.background == scene.background.label
            assert caption.lower().endswith("in the background")
        else:
            assert spec.background is None and "background" not in caption.lower()


def test_time_order_matches_the_timeline(samples):
    for scene, caption, spec in samples:
        if spec.relation in ("then", "followed", "before", "after"):
            assert spec.time_order == _onset_order(scene), caption
            words = _word_order(caption, spec.labels)
            expected = _onset_order(scene)[::-1] if spec.relation == "after" else _onset_order(scene)
            assert words == expected, (caption, words, expected)
            for a, b in zip(scene.foreground, scene.foreground[1:]):
                assert a.offset <= b.onset, f"{caption!r}: temporal relation on overlapping events"


def test_after_reverses_word_order(samples):
    afters = [(s, c) for s, c, spec in samples if spec.relation == "after"]
    assert afters
    for scene, caption in afters:
        order = _onset_order(scene)
        assert len(order) == 2
        assert _word_order(caption, order) == order[::-1], caption
        assert " after " in caption
        # the first-mentioned event really starts later
        first_word = _word_order(caption, order)[0]
        onsets = {e.label: e.onset for e in scene.foreground}
        assert onsets[first_word] > min(onsets.values())


def test_while_means_overlap(samples):
    whiles = [(s, c, spec) for s, c, spec in samples if spec.relation == "while"]
    assert whiles
    for scene, caption, spec in whiles:
        a, b = scene.foreground
        assert min(a.offset, b.offset) - max(a.onset, b.onset) > 0, caption
        assert spec.time_order is None
        assert " while " in caption
    # conversely, overlapping foreground events are never given a temporal relation
    for scene, caption, spec in samples:
        fg = scene.foreground
        overlaps = any(min(a.offset, b.offset) > max(a.onset, b.onset) for a, b in zip(fg, fg[1:]))
        if overlaps:
            assert spec.relation == "while", caption


def test_all_relations_and_kinds_are_seen(samples):
    relations = Counter(spec.relation for _, _, spec in samples)
    kinds = Counter(spec.kind for _, _, spec in samples)
    assert set(relations) == {"single", "then", "followed", "before", "after", "while"}, relations
    assert "background" in kinds, kinds
    assert min(relations.values()) >= 20, relations
    for _, caption, spec in samples:
        if spec.kind == "background":
            assert spec.relation == "single" and spec.background in TEXTURES


def test_single_captions_name_one_event(samples):
    for scene, caption, spec in samples:
        if spec.relation == "single":
            assert len(scene.foreground) == 1 and spec.labels == (scene.foreground[0].label,)


def test_spec_validation():
    with pytest.raises(CaptionError):
        CaptionSpec(("dog_bark",), "then")
    with pytest.raises(CaptionError):
        CaptionSpec(("dog_bark", "siren", "bell"), "before")
    with pytest.raises(CaptionError):
        CaptionSpec(("dog_bark", "siren"), "single")
    with pytest.raises(CaptionError):
        CaptionSpec(("dog_bark", "siren"), "during")
    with pytest.raises(CaptionError):
        CaptionSpec((), "then")


@pytest.mark.parametrize("caption", [
    "A cat meows",
    "A dog barks, then a cat meows",
    "Something happens before something else",
    "A dog barks with a cat meowing in the background",
    "",
    "A dog barks before a siren wails before a bell rings",
])
def test_unreadable_caption_raises_naming_it(caption):
    with pytest.raises(CaptionError) as info:
        parse_caption(caption)
    assert repr(caption) in str(info.value) or caption in str(info.value)


def test_phrases_belong_to_one_class():
    seen = {}
    for lab, (clauses, gerunds) in C.PHRASES.items():
        for p in clauses + gerunds:
            assert p not in seen, f"{p!r} used by {seen.get(p)} and {lab}"
            seen[p] = lab
    assert set(C.PHRASES) == set(CLASSES)


# ----------------------------------------------------------------------------------------------
# perturbations


def _temporal_or_labels(spec: CaptionSpec) -> list[str]:
    return list(spec.time_order) if spec.time_order is not None else list(spec.labels)


def _is_subsequence(short, long) -> bool:
    it = iter(long)
    return all(x in it for x in short)


def check_swap(old: CaptionSpec, new: CaptionSpec):
    assert len(new.labels) == len(old.labels)
    assert new.background == old.background
    assert new.relation == old.relation
    a, b = _temporal_or_labels(old), _temporal_or_labels(new)
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    assert len(diff) == 1, (old, new)
    assert b[diff[0]] not in old.all_labels, (old, new)


def check_drop(old: CaptionSpec, new: CaptionSpec):
    assert len(new.all_labels) == len(old.all_labels) - 1, (old, new)
    removed = Counter(old.all_labels) - Counter(new.all_labels)
    assert sum(removed.values()) == 1 and not (Counter(new.all_labels) - Counter(old.all_labels))
    if new.background != old.background:  # the bed was dropped: foreground untouched
        assert new.background is None and new.labels == old.labels and new.relation == old.relation
    else:
        if old.time_order is not None and new.time_order is not None:
            assert _is_subsequence(new.time_order, old.time_order), (old, new)


def check_add(old: CaptionSpec, new: CaptionSpec):
    assert new.background == old.background
    assert len(new.labels) == len(old.labels) + 1
    added = Counter(new.all_labels) - Counter(old.all_labels)
    assert sum(added.values()) == 1 and not (Counter(old.all_labels) - Counter(new.all_labels))
    (lab,) = added
    assert lab not in old.all_labels
    assert new.time_order is not None  # a three- or two-event sequence
    kept = [x for x in new.time_order if x != lab]
    if old.time_order is not None:
        assert kept == old.time_order, (old, new)
    else:
        assert sorted(kept) == sorted(old.labels)


def check_reorder(old: CaptionSpec, new: CaptionSpec):
    assert sorted(new.labels) == sorted(old.labels)
    assert new.background == old.background
    assert new.time_order is not None and new.time_order != old.time_order
    diff = [i for i, (a, b) in enumerate(zip(old.time_order, new.time_order)) if a != b]
    assert len(diff) == 2  # exactly two events swapped places


CHECKS = {"swap": check_swap, "drop": check_drop, "add": check_add, "reorder": check_reorder}


def _applicable(spec: CaptionSpec, kind: str) -> bool:
    if kind == "drop":
        return len(spec.all_labels) >= 2
    if kind == "add":
        return len(spec.labels) < 3
    if kind == "reorder":
        return spec.is_temporal
    return True


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_perturb_spec_changes_exactly_what_it_claims(samples, kind):
    rng = np.random.default_rng(1)
    n = 0
    for _, _, spec in samples[:600]:
        if not _applicable(spec, kind):
            with pytest.raises(CaptionError):
                perturb_spec(spec, kind, rng)
            continue
        new = perturb_spec(spec, kind, rng)
        assert new != spec
        CHECKS[kind](spec, new)
        # the perturbed spec is renderable and reads back
        assert parse_caption(render_caption(new, rng)) == new
        n += 1
    assert n >= 100


def test_reorder_on_non_temporal_raises():
    rng = np.random.default_rng(0)
    for spec in [CaptionSpec(("dog_bark",), "single"), CaptionSpec(("rain", "bell"), "while"),
                 CaptionSpec(("bell",), "single", "wind")]:
        with pytest.raises(CaptionError):
            perturb_spec(spec, "reorder", rng)
    with pytest.raises(CaptionError):
        perturb_spec(CaptionSpec(("dog_bark",), "single"), "drop", rng)
    with pytest.raises(CaptionError):
        perturb_spec(CaptionSpec(("dog_bark", "siren", "bell"), "then"), "add", rng)
    with pytest.raises(CaptionError, match="unknown perturbation"):
        perturb_spec(CaptionSpec(("dog_bark",), "single"), "shuffle", rng)


def test_reorder_of_after_caption_flips_time_not_just_words():
    spec = CaptionSpec(("siren", "dog_bark"), "after")  # dog barks first, siren second
    assert spec.time_order == ["dog_bark", "siren"]
    new = perturb_spec(spec, "reorder", np.random.default_rng(0))
    assert new.time_order == ["siren", "dog_bark"]


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_grammar_perturber_captions(samples, kind):
    perturber = GrammarPerturber()
    rng = np.random.default_rng(2)
    total = 0
    for _, caption, spec in samples[:300]:
        if not _applicable(spec, kind):
            with pytest.raises(CaptionError):
                perturber(caption, kind, 2, rng)
            continue
        out = perturber(caption, kind, 2, rng)
        assert 1 <= len(out) <= 2
        parsed = [parse_caption(c) for c in out]
        assert len(set(parsed)) == len(parsed), out  # distinct perturbations
        for c, new in zip(out, parsed):
            assert c.strip().lower() != caption.strip().lower()
            CHECKS[kind](spec, new)
        total += len(out)
    assert total >= 50


def test_grammar_perturber_is_deterministic(samples):
    p = GrammarPerturber()
    caption = next(c for _, c, s in samples if s.relation == "then")
    a = p(caption, "swap", 3, np.random.default_rng(7))
    b = p(caption, "swap", 3, np.random.default_rng(7))
    assert a == b and len(a) == 3


def test_callable_perturber_validates_output():
    cap = "A dog barks, then a siren wails"
    good = CallablePerturber(lambda c, k, n: ["a dog barks.", "A DOG BARKS, THEN A SIREN WAILS.",
                                              cap, "  " + cap + "  ", "A siren wails, then a dog barks",
                                              "A bell rings"])
    out = good(cap, "reorder", 5, np.random.default_rng(0))
    assert cap not in out and all(o.strip().lower().rstrip(".") != cap.lower() for o in out)
    assert out == ["a dog barks.", "A siren wails, then a dog barks", "A bell rings"]
    assert good(cap, "reorder", 1, np.random.default_rng(0)) == ["a dog barks."]
    for bad in [None, "a siren wails", [1, 2], ["ok", ""], ["ok", "   "], ("a tuple",), [None]]:
        perturber = CallablePerturber(lambda c, k, n, bad=bad: bad)
        with pytest.raises(CaptionError):
            perturber(cap, "swap", 2, np.random.default_rng(0))


def test_callable_perturber_receives_caption_kind_and_n():
    calls = []

    def fn(caption, kind, n):
        calls.append((caption, kind, n))
        return [f"x{i}" for i in range(n + 3)]

    out = CallablePerturber(fn)("A bell rings", "add", 2, np.random.default_rng(0))
    assert calls == [("A bell rings", "add", 2)]
    assert out == ["x0", "x1"]


# ----------------------------------------------------------------------------------------------
# the offline tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    from t2a_lib.world.text import build_world_tokenizer
    return build_world_tokenizer()


def _words(caption: str) -> list[str]:
    return re.findall(r"[a-z]+|,", caption.lower())


def test_tokenizer_special_ids_follow_t5(tokenizer):
    assert tokenizer.pad_token_id == 0
    assert tokenizer.eos_token_id == 1
    assert tokenizer.unk_token_id == 2


def test_every_grammar_word_is_known(tokenizer, samples):
    unk = tokenizer.unk_token_id
    caps = [c for _, c, _ in samples[:500]]
    # and every phrase in every grammatical position
    for lab, (clauses, gerunds) in C.PHRASES.items():
        caps += clauses + gerunds + [f"the sound of {g}" for g in gerunds]
        caps += [f"{clauses[0]} with {g} in the background" for g in gerunds]
    caps += ["A dog barks followed by a siren wailing", "A dog barks before a bell rings",
             "A dog barks after a bell rings", "Rain falls while a bird chirps"]
    for cap in caps:
        ids = tokenizer(cap)["input_ids"]
        assert unk not in ids, (cap, tokenizer.convert_ids_to_tokens(ids))
        assert ids[-1] == tokenizer.eos_token_id and ids.count(tokenizer.eos_token_id) == 1
        assert tokenizer.convert_ids_to_tokens(ids)[:-1] == _words(cap), cap


def test_unknown_words_map_to_unk(tokenizer):
    ids = tokenizer("A zebra barks loudly")["input_ids"]
    toks = tokenizer.convert_ids_to_tokens(ids)
    assert ids[1] == tokenizer.unk_token_id
    assert toks[0] == "a" and toks[2:] == ["barks", "loudly", "</s>"]
    assert tokenizer("DOG")["input_ids"] == tokenizer("dog")["input_ids"]  # lower-cased


def test_distinct_words_get_distinct_ids(tokenizer):
    from t2a_lib.world.text import world_vocabulary
    vocab = world_vocabulary()
    words = sorted({w for _, (cl, ge) in C.PHRASES.items() for p in cl + ge for w in _words(p)})
    ids = [tokenizer.convert_tokens_to_ids(w) for w in words]
    assert len(set(ids)) == len(words)
    assert len(vocab) == len(set(vocab))
    assert tokenizer.vocab_size == len(vocab)


def test_padding_and_batches(tokenizer):
    batch = tokenizer(["A dog barks", "A dog barks, then a siren wails"], padding=True)
    a, b = batch["input_ids"]
    assert len(a) == len(b)
    n_a = len(_words("A dog barks")) + 1
    assert a[n_a:] == [0] * (len(a) - n_a)
    assert batch["attention_mask"][0] == [1] * n_a + [0] * (len(a) - n_a)


def test_tokenizer_save_load_round_trip(tokenizer, samples, tmp_path):
    from transformers import AutoTokenizer
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    caps = [c for _, c, _ in samples[:200]] + ["A zebra barks"]
    for cap in caps:
        assert loaded(cap)["input_ids"] == tokenizer(cap)["input_ids"], cap
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.unk_token_id) == (0, 1, 2)
    assert loaded.model_max_length == tokenizer.model_max_length


def test_longest_grammar_caption_fits_the_tokenizer(tokenizer):
    """Perturbations can make 3 foreground events + a bed (never sampled, but rendered): even the
    longest such caption must not be truncated (it would lose "in the background")."""
    import itertools
    longest_clause = {k: max(v[0], key=lambda p: len(_words(p))) for k, v in C.PHRASES.items()}
    longest_gerund = {k: max(v[1], key=lambda p: len(_words(p))) for k, v in C.PHRASES.items()}
    worst = 0
    for a, b, c in itertools.permutations(CLASSES, 3):
        for bg in TEXTURES:
            if bg in (a, b, c):
                continue
            tail = f" with {longest_gerund[bg]} in the background"
            for text in (", then ".join([longest_clause[a], longest_clause[b], longest_clause[c]]),
                         f"{longest_clause[a]}, followed by {longest_gerund[b]}, followed by {longest_gerund[c]}"):
                worst = max(worst, len(_words(text + tail)) + 1)
    assert worst <= tokenizer.model_max_length, worst
