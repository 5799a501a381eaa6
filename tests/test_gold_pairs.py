"""Gold pairs: the loser differs from the winner by exactly the perturbation, checked on the
scenes and, independently, on the rendered audio's energy over time."""

import json

import numpy as np
import pandas as pd
import pytest

from t2a_lib.align import gold_pairs
from t2a_lib.align.gold_pairs import GoldConfig, dropped, plan_gold, ranker_accuracy, render_pairs, swapped
from t2a_lib.world import datasets
from t2a_lib.world.captions import TEMPORAL, parse_caption
from t2a_lib.world.scenes import Event, Scene


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    datasets.build_world(folder, 120, 10, 10, seed=3, progress=False, workers=1)
    return folder


def _scene():
    fg = [Event("dog_bark", 0.1, 0.7), Event("siren", 0.9, 1.5), Event("bell", 1.7, 2.3)]
    return Scene(fg, "sequence", None, [-1.0, -2.0, -3.0])


def test_swapped_trades_places_and_keeps_slots():
    s = _scene()
    out = swapped(s, np.random.default_rng(0))
    assert [(e.onset, e.offset) for e in out.foreground] == [(e.onset, e.offset) for e in s.foreground]
    assert sorted(e.label for e in out.foreground) == sorted(e.label for e in s.foreground)
    moved = [i for i, (a, b) in enumerate(zip(s.foreground, out.foreground)) if a.label != b.label]
    assert len(moved) == 2 and out.gains_db == s.gains_db


def test_dropped_removes_one_event_and_its_gain():
    s = _scene()
    out = dropped(s, np.random.default_rng(1))
    assert len(out.foreground) == 2
    gone = [e for e in s.foreground if e not in out.foreground]
    assert len(gone) == 1
    k = s.foreground.index(gone[0])
    assert out.gains_db == [g for i, g in enumerate(s.gains_db) if i != k]


def test_plan_takes_training_scenes_of_the_world(world):
    pairs = plan_gold(world, GoldConfig(n_order=10, n_presence=10, seed=0))
    train = {r.captions for r in datasets.load_split(world, "train")}
    assert pairs and all(p.prompt in train for p in pairs)
    for p in pairs:
        if p.kind == "order":
            assert parse_caption(p.prompt).relation in TEMPORAL
            assert [e.label for e in p.winner.foreground] != [e.label for e in p.loser.foreground]
        else:
            assert len(p.loser.foreground) == len(p.winner.foreground) - 1
    # the winner's scene is the one the world drew for that caption
    timelines = {r.captions: r.events for r in datasets.load_split(world, "train")}
    for p in pairs:
        assert [e["label"] for e in timelines[p.prompt]] == [e["label"] for e in p.winner.timeline()]


def test_matched_gold_pairs_use_the_ranked_prompts_and_count(world):
    """On a ranked set's prompts (here 8 training captions, some single-event), as many pairs as it
    has: only those prompts, each multi-event scene used evenly, every pair rendered from its own stream."""
    train = datasets.load_split(world, "train")
    prompts = [r.captions for r in train[:8]]
    config = gold_pairs.matched_config(prompts * 3, n_pairs=25, seed=1)  # a set repeats its prompts
    assert config.prompts == tuple(sorted(set(prompts))) and (config.n_order, config.n_presence) == (12, 13)
    pairs = plan_gold(world, config)
    multi = {c for c in prompts if len(parse_caption(c).labels) >= 2}  # two or more foreground events
    assert {p.prompt for p in pairs} <= multi and {p.prompt for p in pairs if p.kind == "presence"} == multi
    assert sum(p.kind == "presence" for p in pairs) == 13
    uses = pd.Series([p.prompt for p in pairs if p.kind == "presence"]).value_counts()
    assert uses.max() - uses.min() <= 1  # as evenly as 13 pairs over the scenes allow
    assert len({p.pair_id for p in pairs}) == len(pairs) and len({p.stream for p in pairs}) == len(pairs)


def test_rendered_loser_is_silent_where_the_dropped_event_was(world):
    pairs = [p for p in plan_gold(world, GoldConfig(n_order=0, n_presence=6, seed=0))]
    win, lose = render_pairs(pairs, world)
    for p, w, l in zip(pairs, win, lose):
        gone = [e for e in p.winner.foreground if e not in p.loser.foreground][0]
        others = p.loser.foreground + ([p.loser.background] if p.loser.background else [])
        # frames of the dropped event that no remaining event covers
        a, b = int(gone.onset * 16000), int(gone.offset * 16000)
        free = np.ones(b - a, bool)
        for e in others:
            free[max(0, int(e.onset * 16000) - a):max(0, int(e.offset * 16000) - a)] = False
        if free.sum() < 1600:
            continue
        seg = slice(a, b)
        assert np.sqrt(np.mean(w[seg][free] ** 2)) > 10 * np.sqrt(np.mean(l[seg][free] ** 2))


def test_ranker_accuracy_by_hand():
    df = pd.DataFrame({"kind": ["order", "order", "presence", "presence", "presence"],
                       "chosen_score": [0.5, 0.2, 0.9, 0.8, 0.1], "rejected_score": [0.4, 0.3, 0.1, 0.8, 0.0]})
    acc = ranker_accuracy(df)
    assert acc.loc["order", "ranker_accuracy"] == 0.5
    assert acc.loc["presence", "ranker_accuracy"] == pytest.approx(2 / 3)  # a tie is not a win
    assert acc.loc["all", "ranker_accuracy"] == pytest.approx(3 / 5)
    assert acc.loc["all", "mean_margin"] == pytest.approx(np.mean([0.1, -0.1, 0.8, 0.0, 0.1]))


def test_build_writes_the_preference_layout_and_caches(world, tmp_path):
    import torch
    from safetensors.torch import load_file

    from t2a_lib.model.components import MiniTangoConfig, make_vae

    torch.manual_seed(0)
    vae = make_vae(MiniTangoConfig()).eval()
    cfg = GoldConfig(n_order=3, n_presence=3, seed=0)
    df = gold_pairs.build_gold_set(tmp_path / "gold", world, vae, cfg, n_listen=1)
    lat = load_file(tmp_path / "gold" / "latents.safetensors")
    assert set(df.chosen_id) | set(df.rejected_id) == set(lat)
    assert (df.strategy.str.startswith("gold ")).all() and len(df) == 6
    assert (tmp_path / "gold" / df.chosen[df.chosen != ""].iloc[0]).exists()
    stamp = (tmp_path / "gold" / "latents.safetensors").stat().st_mtime_ns
    again = gold_pairs.build_gold_set(tmp_path / "gold", world, vae, cfg, n_listen=1)
    assert (tmp_path / "gold" / "latents.safetensors").stat().st_mtime_ns == stamp
    assert again.chosen_id.tolist() == df.chosen_id.tolist()
    assert json.loads((tmp_path / "gold" / "gold.json").read_text())["pairs"] == 6
