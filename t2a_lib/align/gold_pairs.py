"""Gold pairs: preference pairs whose label is known, rendered by the world (a positive control).

Tango 2's pairs are ranked by CLAP, and a ranker is sometimes wrong. The world can do what no
real data set can: render a caption's scene *and* a perturbed scene, so the winner is known.
For a training caption with two or more foreground events (every one, or only the ranked
set's own prompts, as many pairs as it has: ``matched_config``):

- **order** pair (temporal captions): the winner is the scene as captioned; the loser is the
  same scene with two foreground events trading places in time (same onsets, durations, gains);
- **presence** pair: the loser is the scene with one foreground event removed.

Winner and loser are rendered from one random stream, so they differ by the perturbation and the
per-event variation it implies, not by the noise floor. Both are encoded through the base
model's VAE into the same latent space as the ranked set, and written in its layout
(``preferences.parquet`` + ``latents.safetensors``), so DPO trains on them unchanged. DPO on
gold pairs is the ceiling that the ranked set's noise is measured against; ``ranker_accuracy``
measures that noise directly: how often the ranker prefers the true winner.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..world.captions import TEMPORAL, parse_caption
from ..run.files import read_json
from ..world.scenes import Scene, WorldConfig, render_scene

KINDS = ("order", "presence")


@dataclass
class GoldConfig:
    n_order: int = 600  # pairs whose loser has two events trading places in time
    n_presence: int = 600  # pairs whose loser misses one event
    seed: int = 0
    # only these training captions (the ranked set's prompts), each scene perturbed as often as the
    # counts need; empty: every training caption once per kind
    prompts: tuple[str, ...] = ()


def matched_config(ranked_prompts, n_pairs: int, seed: int = 0) -> GoldConfig:
    """Gold pairs matched to a ranked set: on its own prompts, as many pairs as it has (half order,
    half presence), so DPO on the two differs in the labels' source, not in prompts or pair count."""
    return GoldConfig(n_order=n_pairs // 2, n_presence=n_pairs - n_pairs // 2, seed=seed,
                      prompts=tuple(sorted(set(ranked_prompts))))


@dataclass
class GoldPair:
    pair_id: str
    kind: str  # "order" | "presence"
    prompt: str
    winner: Scene
    loser: Scene
    stream: int  # the random stream both are rendered from


def swapped(scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene with two foreground events trading places in time (labels swap, slots stay)."""
    fg = list(scene.foreground)
    i, j = sorted(rng.choice(len(fg), 2, replace=False))
    fg[i], fg[j] = replace(fg[i], label=fg[j].label), replace(fg[j], label=fg[i].label)
    return replace(scene, foreground=fg)


def dropped(scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene without one of its foreground events (its gain goes with it)."""
    k = int(rng.integers(len(scene.foreground)))
    fg = [e for i, e in enumerate(scene.foreground) if i != k]
    gains = [g for i, g in enumerate(scene.gains_db) if i != k]
    return replace(scene, foreground=fg, gains_db=gains)


def plan_gold(world_dir, config: GoldConfig) -> list[GoldPair]:
    """Pairs from the training split of the world in ``world_dir`` (its scenes are re-drawn from
    ``world.json``'s sizes, seed and config, exactly as notebook 00 drew them)."""
    from ..world.datasets import plan_world

    info = read_json(Path(world_dir) / "world.json", "world record")
    wcfg = WorldConfig(**{**info["config"], "layout_weights": tuple(info["config"]["layout_weights"])})
    wanted = set(config.prompts)
    clips = [c for c in plan_world(info["sizes"], info["seed"], wcfg) if c.split == "train"
             and len(c.scene.foreground) >= 2 and (not wanted or c.caption in wanted)]
    rng = np.random.default_rng([config.seed, 7])
    order = [c for c in clips if parse_caption(c.caption).relation in TEMPORAL]
    pairs = []
    for kind, pool, n, perturb in (("order", order, config.n_order, swapped),
                                   ("presence", clips, config.n_presence, dropped)):
        for k in _draws(rng, len(pool), n, repeat=bool(wanted)):
            c, j = pool[k], len(pairs)
            stream = c.index if not wanted else c.index * 100_000 + j  # a repeated scene renders anew each time
            pairs.append(GoldPair(f"gold_{kind}_{c.index:07d}" + (f"_{j:04d}" if wanted else ""), kind, c.caption,
                                  c.scene, perturb(c.scene, rng), stream=stream))
    return pairs


def _draws(rng: np.random.Generator, pool: int, n: int, repeat: bool) -> np.ndarray:
    """``n`` indices into a pool: distinct (at most the pool) or, with ``repeat``, every index in turn
    in a shuffled order until ``n`` are drawn (each scene used as evenly as the count allows)."""
    if pool == 0:
        return np.array([], int)
    if not repeat:
        return rng.permutation(pool)[:n]
    return np.concatenate([rng.permutation(pool) for _ in range(-(-n // pool))])[:n]


def render_pairs(pairs: list[GoldPair], world_dir, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(winners, losers) waveforms, each pair rendered from its own stream."""
    info = read_json(Path(world_dir) / "world.json", "world record")
    wcfg = WorldConfig(**{**info["config"], "layout_weights": tuple(info["config"]["layout_weights"])})
    win, lose = [], []
    for p in pairs:
        win.append(render_scene(p.winner, np.random.default_rng([seed, p.stream, 2]), wcfg))
        lose.append(render_scene(p.loser, np.random.default_rng([seed, p.stream, 2]), wcfg))
    return np.stack(win), np.stack(lose)


def ranker_accuracy(pairs: pd.DataFrame) -> pd.DataFrame:
    """How often the rankers' audio-text score (the one that ranks Tango 2's pairs) prefers the
    true winner of a gold pair: per kind and overall, the share of pairs with
    ``chosen_score > rejected_score`` (scores written by :func:`build_gold_set`)."""
    right = pairs.chosen_score > pairs.rejected_score
    table = pd.DataFrame({"kind": pairs.kind, "right": right, "margin": pairs.chosen_score - pairs.rejected_score})
    out = table.groupby("kind").agg(pairs=("right", "size"), ranker_accuracy=("right", "mean"),
                                    mean_margin=("margin", "mean"))
    out.loc["all"] = [len(table), right.mean(), table.margin.mean()]
    return out


def build_gold_set(out_dir, world_dir, vae, config: GoldConfig, rankers=None, n_listen: int = 4) -> pd.DataFrame:
    """Render, encode and write the gold pairs to ``out_dir`` in the preference set's layout
    (``preferences.parquet``, ``latents.safetensors``, ``gold.json``), plus the audio of
    ``n_listen`` pairs of each kind under ``audio/``. Returns the pair table (with the rankers'
    scores of winner and loser against the prompt when ``rankers`` is given)."""
    from safetensors.torch import save_file

    from ..audio.wav import write_wav
    from ..model.autoencoder import encode_mels
    from ..audio.features import waves_to_mel
    from ..scoring.scorers import require_role

    from ..model.fits import fingerprint

    out_dir = Path(out_dir)
    key = {"config": json.loads(json.dumps(asdict(config))), "world":  # tuples as gold.json holds them: lists
           read_json(Path(world_dir) / "world.json", "world record")["key"],
           "vae": fingerprint(vae)}
    if (out_dir / "gold.json").exists() and json.loads((out_dir / "gold.json").read_text()).get("key") == key:
        return pd.read_parquet(out_dir / "preferences.parquet")  # built from the same world, config and VAE
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = plan_gold(world_dir, config)
    if not pairs:
        raise ValueError(f"{world_dir}: no training clip with two or more foreground events to make gold pairs from")
    win, lose = render_pairs(pairs, world_dir, config.seed)
    win_mels, lose_mels = waves_to_mel(win), waves_to_mel(lose)
    z_win, z_lose = encode_mels(vae, win_mels), encode_mels(vae, lose_mels)
    latents = {}
    for p, a, b in zip(pairs, z_win, z_lose):
        latents[f"{p.pair_id}_w"], latents[f"{p.pair_id}_l"] = a.contiguous(), b.contiguous()
    save_file(latents, out_dir / "latents.safetensors")
    df = pd.DataFrame({"prompt": [p.prompt for p in pairs], "strategy": [f"gold {p.kind}" for p in pairs],
                       "kind": [p.kind for p in pairs],
                       "chosen_id": [f"{p.pair_id}_w" for p in pairs], "rejected_id": [f"{p.pair_id}_l" for p in pairs],
                       "chosen_events": [json.dumps(p.winner.timeline()) for p in pairs],
                       "rejected_events": [json.dumps(p.loser.timeline()) for p in pairs]})
    if rankers is not None:
        require_role(rankers, "ranker", "scoring gold pairs")
        df["chosen_score"] = rankers.clap_scores(win_mels, df.prompt.tolist())
        df["rejected_score"] = rankers.clap_scores(lose_mels, df.prompt.tolist())
    listen = df.groupby("kind").head(n_listen).index
    for i in listen:
        write_wav(out_dir / "audio" / f"{df.chosen_id[i]}.wav", win[i], durable=False)
        write_wav(out_dir / "audio" / f"{df.rejected_id[i]}.wav", lose[i], durable=False)
    df["chosen"] = [f"audio/{c}.wav" if i in listen else "" for i, c in zip(df.index, df.chosen_id)]
    df["rejected"] = [f"audio/{c}.wav" if i in listen else "" for i, c in zip(df.index, df.rejected_id)]
    df.to_parquet(out_dir / "preferences.parquet", index=False)
    (out_dir / "gold.json").write_text(json.dumps({"key": key, "pairs": len(df),
                                                   "by_kind": df.kind.value_counts().to_dict()}, indent=2))
    return df
