"""The audio-alpaca preference set (Tango 2), built from the base model's own samples.

Seed prompts are drawn from the training captions, stratified by relation kind. For each:

- **S1.1** several samples at different step counts; **S1.2** several seeds at one step count.
  The ranker-best sample wins against each of the others.
- **S2** concept-perturbed captions (swap an event) generate the losers; **S3** (temporal prompts
  only) captions with events reordered, added or dropped generate the losers. The winner is the
  best S1.2 sample of the original prompt; a pair is kept when the ranker scores the winner
  above the loser *against the original prompt*.

Scores are the mean cosine of the two ranker audio-text models (Tango 2 used two CLAPs). The
α/β/Δ filters (winner ≥ α, loser ≤ β, Δ_min ≤ margin ≤ Δ_max) are calibrated to our score scale
by quantiles of the candidate pairs and recorded. Judges never rank; they only report how often
the ranker's winner is really better (all prompted events present, and in order).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..audio.wav import write_wav
from ..world.captions import FREE_KIND, CaptionError, GrammarPerturber, Perturber, caption_kind, parse_caption_or_none
from ..evaluate.evaluation import KIND_ORDER
from ..audio.features import waves_to_mel
from ..scoring.scorers import judge_clips, ranker_scores, require_role

STRATEGIES = ("S1.1", "S1.2", "S2", "S3")
PAPER_TABLE2 = pd.DataFrame(  # Tango 2, Table 2 (audio-alpaca); the paper's CLAP scale
    {"pairs": [3004, 2725, 4544, 4752, 15025]}, index=["S1.1", "S1.2", "S2", "S3", "all"])


@dataclass
class PreferenceConfig:
    n_prompts: int = 120
    s11_steps: tuple = (3, 5, 10, 20)  # Tango 2: 5/25/50/100 of 200
    s12_seeds: int = 4
    steps: int = 10
    s2_perturbations: int = 2  # Tango 2: 5
    s3_perturbations: int = 2  # Tango 2: 5
    guidance: float = 3.0
    alpha_quantile: float = 0.1  # winner >= the 10th percentile of candidate winners' scores
    beta_quantile: float = 0.9  # loser <= the 90th percentile of candidate losers' scores
    delta_min_quantile: float = 0.1  # margin >= the 10th percentile of candidate margins
    delta_max_quantile: float = 0.99
    batch_size: int = 32
    seed: int = 0


def seed_prompts(records, n: int, seed: int = 0) -> list[str]:
    """Distinct training captions, stratified by relation kind (Tango 2 clustered AudioCaps
    captions with K-means; the world's relation kinds are its clusters). Free-form captions of
    real data (``captions.caption_kind``: "free") form one more stratum, drawn after the world's."""
    rng = np.random.default_rng(seed)
    by_kind: dict[str, list[str]] = {}
    for r in records:
        by_kind.setdefault(caption_kind(r.captions), []).append(r.captions)
    pools = {k: list(dict.fromkeys(v[i] for i in rng.permutation(len(v)))) for k, v in by_kind.items()}
    out, kinds = [], [k for k in KIND_ORDER + [FREE_KIND] if k in pools]
    while len(out) < n and any(pools[k] for k in kinds):
        for k in kinds:
            if pools[k] and len(out) < n:
                out.append(pools[k].pop())
    return out


@dataclass
class Clip:
    clip_id: str
    prompt: str  # the seed prompt it belongs to
    caption: str  # the caption it was generated from (a perturbation for S2/S3 losers)
    group: str  # "S1.1", "S1.2", "S2", "S3"
    seed: int
    steps: int


def plan_clips(prompts: list[str], config: PreferenceConfig, perturber: Perturber | None = None) -> list[Clip]:
    perturber = perturber or GrammarPerturber()
    rng = np.random.default_rng(config.seed)
    clips = []
    for p, prompt in enumerate(prompts):
        base = config.seed * 100_000 + p * 100
        clips += [Clip(f"p{p}_s11_{k}", prompt, prompt, "S1.1", base + k, s) for k, s in enumerate(config.s11_steps)]
        clips += [Clip(f"p{p}_s12_{k}", prompt, prompt, "S1.2", base + 10 + k, config.steps)
                  for k in range(config.s12_seeds)]
        spec = parse_caption_or_none(prompt)  # None for free text of real data: no S3; S2 only from a
        # perturber that reads it
        variants = [] if spec is None and isinstance(perturber, GrammarPerturber) else \
            [("S2", c) for c in perturber(prompt, "swap", config.s2_perturbations, rng)]
        if spec is not None and spec.is_temporal:
            kinds = [k for k in ("reorder", "add", "drop") if k != "add" or len(spec.labels) < 3]
            for j in range(config.s3_perturbations):
                try:
                    variants += [("S3", c) for c in perturber(prompt, kinds[j % len(kinds)], 1, rng)]
                except CaptionError:
                    pass
        clips += [Clip(f"p{p}_{g.lower().replace('.', '')}_{k}", prompt, cap, g, base + 50 + k, config.steps)
                  for k, (g, cap) in enumerate(variants)]
    return clips


def _sample_clips(pipe, clips: list[Clip], config: PreferenceConfig, out_dir, bar=None) -> tuple[dict, dict]:
    """Sample ``clips`` (each from its own seed's noise; batched by step count) and write their
    wavs: ``({clip id: waveform}, {clip id: final latent})``."""
    audio, latents = {}, {}
    shape = pipe.latent_shape()
    by_steps: dict[int, list[Clip]] = {}
    for c in clips:
        by_steps.setdefault(c.steps, []).append(c)
    for steps, group in sorted(by_steps.items()):
        for i in range(0, len(group), config.batch_size):
            batch = group[i:i + config.batch_size]
            noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(c.seed)) for c in batch])
            out = pipe([c.caption for c in batch], num_inference_steps=steps, guidance_scale=config.guidance,
                       latents=noise, return_latents=True, progress=False)
            for c, a, z in zip(batch, out.audios, out.latents):
                audio[c.clip_id], latents[c.clip_id] = a, torch.from_numpy(z)
                write_wav(Path(out_dir) / "audio" / f"{c.clip_id}.wav", a, durable=False)
            if bar is not None:
                bar.update(len(batch))
    return audio, latents


def sample_clips_job(pipeline_dir, clips: list[Clip], config: PreferenceConfig, out_dir) -> tuple[dict, dict]:
    """:func:`_sample_clips` with the pipeline saved in ``pipeline_dir``: a job for
    :func:`t2a_lib.run.parallel.run_jobs`."""
    from ..model.base_model import load_pipeline

    return _sample_clips(load_pipeline(pipeline_dir), clips, config, out_dir)


def generate_clips(pipe, clips: list[Clip], config: PreferenceConfig, out_dir, progress: bool = True,
                   workers: int = 1, pipeline_dir=None) -> dict:
    """Sample every planned clip (its own seed), write wavs and latents; returns ``{clip id:
    waveform}``. With ``workers`` > 1 the clips are split into interleaved chunks sampled in that
    many processes (:mod:`t2a_lib.run.parallel`) from the pipeline saved in ``pipeline_dir``."""
    from ..run import parallel

    out_dir = Path(out_dir)
    if workers > 1:
        if pipeline_dir is None:
            raise ValueError("generate_clips with workers > 1 needs pipeline_dir (the pipeline the workers load)")
        n_chunks = 4 * workers
        chunks = [(pipeline_dir, clips[i::n_chunks], config, out_dir) for i in range(n_chunks) if clips[i::n_chunks]]
        parts = parallel.run_jobs(sample_clips_job, chunks, workers, desc="generating candidates", progress=progress)
        audio = {k: v for part, _ in parts for k, v in part.items()}
        latents = {k: v for _, part in parts for k, v in part.items()}
    else:
        bar = tqdm(total=len(clips), desc="generating candidates", disable=not progress)
        audio, latents = _sample_clips(pipe, clips, config, out_dir, bar)
        bar.close()
    save_file({c.clip_id: latents[c.clip_id].contiguous() for c in clips}, out_dir / "latents.safetensors")
    return {c.clip_id: audio[c.clip_id] for c in clips}


def score_clips(rankers, clips: list[Clip], audio: dict) -> dict[str, np.ndarray]:
    """Each ranker's cosine of every clip against its *seed prompt* (never its own caption)."""
    require_role(rankers, "ranker", "ranking the preference set")
    scores = ranker_scores(rankers, np.stack([audio[c.clip_id] for c in clips]), [c.prompt for c in clips])
    return {c.clip_id: s for c, s in zip(clips, scores)}


def candidate_pairs(clips: list[Clip], scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """All candidate (winner, loser) pairs before the α/β/Δ filters."""
    rows = []
    by_prompt: dict[str, list[Clip]] = {}
    for c in clips:
        by_prompt.setdefault(c.prompt, []).append(c)
    for prompt, cs in by_prompt.items():
        mean = {c.clip_id: float(scores[c.clip_id].mean()) for c in cs}
        best_s12 = max((c for c in cs if c.group == "S1.2"), key=lambda c: mean[c.clip_id], default=None)
        for group in ("S1.1", "S1.2"):
            members = [c for c in cs if c.group == group]
            if len(members) > 1:
                w = max(members, key=lambda c: mean[c.clip_id])
                rows += [(prompt, group, w, c) for c in members if c is not w]
        for c in cs:
            if c.group in ("S2", "S3") and best_s12 is not None and mean[best_s12.clip_id] > mean[c.clip_id]:
                rows.append((prompt, c.group, best_s12, c))
    df = pd.DataFrame([{
        "prompt": p, "strategy": g, "chosen_id": w.clip_id, "rejected_id": l.clip_id,
        "chosen_caption": w.caption, "rejected_caption": l.caption,
        "chosen_score": float(scores[w.clip_id].mean()), "rejected_score": float(scores[l.clip_id].mean()),
        "chosen_scores": scores[w.clip_id].tolist(), "rejected_scores": scores[l.clip_id].tolist(),
        "chosen_seed": w.seed, "rejected_seed": l.seed, "chosen_steps": w.steps, "rejected_steps": l.steps,
    } for p, g, w, l in rows])
    if len(df):
        df["margin"] = df.chosen_score - df.rejected_score
    return df


def calibrate_filters(cands: pd.DataFrame, config: PreferenceConfig) -> dict:
    """α, β, Δ_min, Δ_max on our score scale, from quantiles of the candidate pairs."""
    return {"alpha": float(cands.chosen_score.quantile(config.alpha_quantile)),
            "beta": float(cands.rejected_score.quantile(config.beta_quantile)),
            "delta_min": float(cands.margin.quantile(config.delta_min_quantile)),
            "delta_max": float(cands.margin.quantile(config.delta_max_quantile))}


def apply_filters(cands: pd.DataFrame, t: dict) -> pd.DataFrame:
    keep = ((cands.chosen_score >= t["alpha"]) & (cands.rejected_score <= t["beta"])
            & (cands.margin >= t["delta_min"]) & (cands.margin <= t["delta_max"]))
    return cands[keep].reset_index(drop=True)


def judge_pairs(judges, pairs: pd.DataFrame, audio: dict) -> pd.DataFrame:
    """The judges' verdict on each clip against the seed prompt: all prompted events present,
    and (temporal prompts) in order. ``truth`` = +1 winner really better, 0 tie, -1 worse."""
    ids = list(dict.fromkeys(pairs.chosen_id.tolist() + pairs.rejected_id.tolist()))
    prompt_of = dict(zip(pairs.chosen_id, pairs.prompt)) | dict(zip(pairs.rejected_id, pairs.prompt))
    table = judge_clips(judges, waves_to_mel(np.stack([audio[i] for i in ids])), [prompt_of[i] for i in ids], ids).table
    quality = {r.id: r.all_present + (0.0 if np.isnan(r.order) else r.order) for r in table.itertuples()}
    out = pairs.copy()
    out["chosen_judge"] = out.chosen_id.map(quality)
    out["rejected_judge"] = out.rejected_id.map(quality)
    out["truth"] = np.sign(out.chosen_judge - out.rejected_judge)
    return out


def statistics_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """Tango 2's Table 2 layout (+ what it could not measure: how often the winner is right); a
    strategy the suite does not name (a released set's own) gets a row after S1.1-S3."""
    rows, names = [], [*STRATEGIES, *sorted(set(pairs.strategy) - set(STRATEGIES))]
    for name, g in [*((s, pairs[pairs.strategy == s]) for s in names), ("all", pairs)]:
        row = {"strategy": name, "pairs": len(g), "winner score": g.chosen_score.mean(),
               "loser score": g.rejected_score.mean(), "margin": g.margin.mean()}
        if "truth" in g:
            row.update({"winner really better": (g.truth > 0).mean(), "tie": (g.truth == 0).mean(),
                        "winner really worse": (g.truth < 0).mean()})
        rows.append(row)
    return pd.DataFrame(rows).set_index("strategy")


def write_preference_set(out_dir, pairs: pd.DataFrame, thresholds: dict, config: PreferenceConfig) -> pd.DataFrame:
    """audio-alpaca columns (prompt, chosen, rejected, strategy) + scores, seeds, steps, as
    ``preferences.parquet`` (wav paths relative to ``out_dir``); returns what it wrote."""
    out_dir = Path(out_dir)
    df = pairs.copy()
    df.insert(1, "chosen", [f"audio/{i}.wav" for i in df.chosen_id])
    df.insert(2, "rejected", [f"audio/{i}.wav" for i in df.rejected_id])
    df.to_parquet(out_dir / "preferences.parquet", index=False)
    (out_dir / "preferences.json").write_text(json.dumps({"thresholds": thresholds, "config": asdict(config),
                                                          "pairs": len(df)}, indent=2))
    return df
