"""Reproducing the papers' tables: every model, the same prompts and seeds, judges only.

The claims are answered by :mod:`t2a_lib.evaluate.claims`; this module makes the papers' tables.
Each held-out evaluation prompt is the caption of a real test clip (its *source*), so KL can be
paired by clip id against the source (KL(ref‖gen), the anchors' direction) and event F1 scored
against the source's timeline. FAD is the Fréchet distance between the judge detector's
embeddings of the generated clips and of all test clips. Every figure has a 95% bootstrap
interval over prompts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import softmax

from ..scoring import event_metrics, kernel_distance, metrics
from .claims import MODEL_NAMES  # model identifier -> display name
from ..scoring.scorers import require_role
from ..model.tango import load_unet

BASE = "base"


def model_dir(run_dir, model_id: str, seed_index: int = 0) -> Path:
    """Where a fine-tuned model lives: ``<run_dir>/models/<id>/s<k>`` (k: its seed's index)."""
    if model_id not in MODEL_NAMES or model_id == BASE:
        raise ValueError(f"unknown fine-tuned model {model_id!r}; known: {', '.join(m for m in MODEL_NAMES if m != BASE)}")
    return Path(run_dir) / "models" / model_id / f"s{seed_index}"


# the papers' figures (docs/reference.md); AudioCaps, real models: not comparable in scale
PAPER_TABLE3 = pd.DataFrame(
    [["Tango-full-FT", 2.51, 1.15, 7.87, 0.54], ["Tango 2", 2.69, 1.12, 9.09, 0.57],
     ["Tango 2 w/o S2&S3", 2.64, 1.13, 8.06, 0.54], ["Tango 2 w/o S1", 2.47, 1.13, 8.58, 0.56]],
    columns=["paper model", "FAD", "KL", "IS", "CLAP"])
PAPER_ROW = {BASE: "Tango-full-FT", "dpo": "Tango 2", "dpo_wo_s1": "Tango 2 w/o S1", "dpo_wo_s2s3": "Tango 2 w/o S2&S3"}
PAPER_TABLE4 = {"Tango-full-FT": {"multi-event": (2.69, 1.16, 7.85, 0.54), "single-event": (7.52, 1.01, 4.87, 0.51)},
                "Tango 2": {"multi-event": (2.60, 1.11, 8.98, 0.57), "single-event": (5.48, 1.00, 4.95, 0.52)}}
PAPER_TABLE5 = {"Tango-full-FT": {"temporal": (2.55, 1.16, 5.82, 0.55), "non-temporal": (3.04, 1.15, 7.70, 0.53)},
                "Tango 2": {"temporal": (3.29, 1.07, 6.88, 0.58), "non-temporal": (2.84, 1.16, 8.62, 0.55)}}
PAPER_BATON = {"integrity": "CLAP +2.3% over Tango", "temporal": "CLAP +6.0% over Tango"}  # by task


# Tango 2's ablations: DPO on a subset of the preference set's strategies
ABLATIONS = {"dpo_wo_s1": ["S2", "S3"], "dpo_wo_s2s3": ["S1.1", "S1.2"]}


def train_ablations(run_dir, settings: dict, seed: int, workers: int = 1) -> None:
    """Train the :data:`ABLATIONS` with notebook 04's DPO ``settings`` (steps, beta, lr, batch_size of
    ``04_dpo.json``) and its first seed, into :func:`model_dir`; independent, so with ``workers`` > 1 they
    train side by side, one thread each (:mod:`t2a_lib.run.parallel`)."""
    import torch

    from ..align import dpo
    from ..run import parallel

    config = dpo.DPOConfig(steps=settings["steps"], beta=settings["beta"], lr=settings["lr"],
                           batch_size=settings["batch_size"], seed=seed,
                           mixed_precision="bf16" if torch.cuda.is_available() else "no")
    parallel.run_jobs(dpo.fit_from_run, [(run_dir, model_dir(run_dir, m), config, "preferences", strategies)
                                         for m, strategies in ABLATIONS.items()],
                      workers, names=list(ABLATIONS), desc="ablations")


def retire_stale_models(run_dir, model_ids, kept) -> list[Path]:
    """Move aside every ``models/<id>/s<k>`` of ``model_ids`` (the models a notebook trains) that
    ``kept`` (its ``(id, k)`` jobs this time) does not name, to ``models/<id>/superseded-s<k>``: a
    seed (or a model) no longer requested is never read by :func:`model_folders`, the claims or 07;
    nothing is deleted. Returns the new names, each also printed."""
    from ..model.fits import _free_name

    kept, moved = {(m, int(k)) for m, k in kept}, []
    for model_id in model_ids:
        for folder in sorted((Path(run_dir) / "models" / model_id).glob("s[0-9]*")):
            if folder.name[1:].isdigit() and (model_id, int(folder.name[1:])) not in kept:
                moved.append(_free_name(folder.with_name(f"superseded-{folder.name}")))
                os.replace(folder, moved[-1])
                print(f"moved aside (not requested by these parameters): {folder} -> {moved[-1].name}")
    return moved


def model_folders(run_dir, model_ids=None) -> dict[str, list[Path]]:
    """The saved UNet folders under ``run_dir/models``: ``{model id: [unet of seed 0, seed 1, ...]}``,
    for ``model_ids`` (default: every fine-tuned model); only ``s<k>`` folders with their fit record."""
    out = {}
    for model_id in model_ids or MODEL_NAMES:
        folders = [f for f in (Path(run_dir) / "models" / model_id).glob("s[0-9]*/unet")  # a record vouches for it
                   if f.parent.name[1:].isdigit() and (f.parent / "fit.json").is_file()] if model_id != BASE else []
        if folders:
            out[model_id] = sorted(folders, key=lambda f: int(f.parent.name[1:]))
    return out


def load_models(run_dir, model_ids=None) -> dict[str, list]:
    """Every fine-tuned UNet under ``run_dir/models`` (or those of ``model_ids``): ``{model id:
    [UNet of seed 0, seed 1, ...]}`` (the base is added by the caller)."""
    return {m: [load_unet(f) for f in folders] for m, folders in model_folders(run_dir, model_ids).items()}


# what a metric cannot go below (or above): an interval is clipped to its range
RANGES = {"FAD": (0.0, np.inf), "KAD": (0.0, np.inf), "KL": (0.0, np.inf), "IS": (1.0, np.inf),
          "CLAP": (-1.0, 1.0), "presence": (0.0, 1.0), "all present": (0.0, 1.0), "order": (0.0, 1.0),
          "event F1": (0.0, 1.0)}
NAN3 = (np.nan, np.nan, np.nan)


def inception_score_ci(probs: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """IS as the anchors report it, the mean over splits (up to 10, of at least 5 clips), with a t
    interval from the splits' spread (NaN bounds with one split). A bootstrap with replacement does
    not serve a diversity score: duplicated clips lower it, so its interval sat below the estimate."""
    n_splits = min(10, max(1, len(probs) // 5))
    mean, sd = metrics.inception_score(probs, n_splits=n_splits, seed=seed)
    if n_splits < 2:
        return (mean, np.nan, np.nan)
    half = stats.t.ppf(0.975, n_splits - 1) * sd * np.sqrt(n_splits / (n_splits - 1)) / np.sqrt(n_splits)
    return (mean, mean - half, mean + half)


def _distances(ref_embeddings, emb, n_boot: int, seed: int) -> dict:
    """FAD (only from ``fd_minimum_clips`` clips on: NaN below) and KAD, each (estimate, low, high)."""
    enough = min(len(emb), len(ref_embeddings)) >= kernel_distance.fd_minimum_clips(emb.shape[1])
    fad = metrics.frechet_distance_ci(ref_embeddings, emb, n_boot=max(50, n_boot // 5), seed=seed) if enough else {}
    return {"FAD": tuple(fad[k] for k in ("estimate", "low", "high")) if fad else NAN3,
            "KAD": kernel_distance.kernel_audio_distance_ci(ref_embeddings, emb, n_boot=max(50, n_boot // 5),
                                                            seed=seed) if len(emb) > 1 else NAN3}


def within_range(name: str, value: tuple) -> tuple:
    """(estimate, low, high) clipped to the metric's :data:`RANGES`."""
    lo, hi = RANGES.get(name, (-np.inf, np.inf))
    return tuple(v if np.isnan(v) else float(np.clip(v, lo, hi)) for v in value)


def corpus_metrics(judges, judgement, source_out, ref_embeddings, sources, n_boot: int = 1000, seed: int = 0,
                   mask=None) -> dict:
    """FAD, KAD, KL(ref‖gen), IS, CLAP, presence, all present, order, event F1 — each (estimate,
    low, high), within the metric's range — over the clips selected by ``mask``. ``sources``: each
    clip's source test record (its timeline scores event F1; its judge outputs ``source_out`` pair
    KL). FAD is the bias-corrected Fréchet distance with its basic bootstrap interval
    (:func:`t2a_lib.scoring.metrics.frechet_distance_ci`), NaN on fewer clips than
    :func:`t2a_lib.scoring.kernel_distance.fd_minimum_clips`; KAD is beside it on any number."""
    require_role(judges, "judge", "evaluation")
    t, det = judgement.table, judgement.detector
    m = np.ones(len(t), bool) if mask is None else np.asarray(mask, bool)
    idx = np.flatnonzero(m)
    emb, logits, ref_logits = det.embeddings[idx], det.clip_logits[idx], source_out.clip_logits[idx]
    events = judges.detector.events(det.frame_probs[idx])
    f1 = np.array([event_metrics.event_f1(sources[i].events or [], e)["f1"] for i, e in zip(idx, events)])
    kl = metrics.kl_divergence(ref_logits, logits, per_clip=True)
    out = {**_distances(ref_embeddings, emb, n_boot, seed),
           "KL": metrics.bootstrap_ci(kl, n_boot=n_boot, seed=seed),
           "IS": inception_score_ci(softmax(logits, axis=1), seed),
           "event F1": metrics.bootstrap_ci(f1, n_boot=n_boot, seed=seed)}
    for col, name in (("clap", "CLAP"), ("presence", "presence"), ("all_present", "all present"), ("order", "order")):
        v = t[col].to_numpy(float)[idx]
        v = v[~np.isnan(v)]
        out[name] = metrics.bootstrap_ci(v, n_boot=n_boot, seed=seed) if len(v) > 1 else NAN3
    return {name: within_range(name, value) for name, value in out.items()}


def cell(value: tuple) -> str:
    """'estimate [low, high]' to three decimals; '—' where not measured, the estimate alone without bounds."""
    if np.isnan(value[0]):
        return "—"
    if np.isnan(value[1]):
        return f"{value[0]:.3f}"
    return f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]"


def metric_table(results: dict[str, dict], columns=("FAD", "KAD", "KL", "IS", "CLAP", "presence", "all present",
                                                    "order", "event F1")) -> pd.DataFrame:
    """:func:`cell` strings, one row per model."""
    return pd.DataFrame({name: {c: cell(r[c]) for c in columns if c in r} for name, r in results.items()}).T


def write_listening_set(run_dir, pipe, tango: dict[str, np.ndarray], tango_table: pd.DataFrame, n_prompts: int = 3,
                        baton: dict[str, np.ndarray] | None = None, baton_table: pd.DataFrame | None = None) -> dict:
    """Write what the report plays: for ``n_prompts`` held-out temporal prompts (and as many
    BATON Temporal ones), each model's first-seed sample vocoded to a wav; and one winner/loser
    pair of every strategy of the preference set and the gold set. ``tango`` / ``baton`` map a
    model id to its samples on that evaluation set (log-mels, or waveforms). Returns and writes
    ``run_dir/listening/index.json``::

        {"prompts": [{"set", "prompt", "clips": {model id: "listening/<file>.wav"}}],
         "pairs": [{"strategy", "prompt", "chosen", "rejected"}], "models": {model id: display name}}

    Paths are relative to ``run_dir``."""
    import json
    import shutil

    from ..audio.wav import write_wav
    from .evaluation import to_audio

    run_dir = Path(run_dir)
    out = run_dir / "listening"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    def wave(x):
        return to_audio(x, pipe.vocoder)

    prompts = []
    for name, models, table in (("tango", tango, tango_table), ("baton", baton or {}, baton_table)):
        if table is None or not models:
            continue
        if "task" in table:
            temporal = (table.task == "temporal").to_numpy()
        else:  # a CLAP-only table of free-form captions (real data): no order to listen for, the first prompts
            temporal = table.order.notna().to_numpy() if "order" in table else np.ones(len(table), bool)
        for i in np.flatnonzero(temporal)[:n_prompts]:
            clips = {}
            for model_id, samples in models.items():
                rel = f"listening/{name}_{i}_{model_id}.wav"
                write_wav(run_dir / rel, np.clip(wave(samples[i]), -1, 1), durable=False)
                clips[model_id] = rel
            prompts.append({"set": name, "prompt": str(table.caption[i]), "clips": clips})
    pairs = []
    for folder in ("preferences", "gold"):
        path = run_dir / folder / "preferences.parquet"
        if not path.exists():
            continue
        df = pd.read_parquet(path)
        df = df[(df.chosen != "") & (df.rejected != "")] if "chosen" in df else df.iloc[:0]
        for strategy, g in df.groupby("strategy", sort=True):
            row = g.iloc[0]
            entry = {"strategy": strategy, "prompt": row.prompt}
            for side in ("chosen", "rejected"):
                rel = f"listening/{folder}_{row[side + '_id']}.wav"
                shutil.copy2(run_dir / folder / row[side], run_dir / rel)
                entry[side] = rel
            pairs.append(entry)
    index = {"prompts": prompts, "pairs": pairs, "models": {m: MODEL_NAMES[m] for m in {**tango, **(baton or {})}}}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index
