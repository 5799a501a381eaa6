"""Evaluating a text-to-audio model on held-out prompts, by the judges only.

``build_eval_sets`` writes the run's two held-out prompt sets once (Tango 2's and BATON's);
``generate`` samples one clip per prompt with a fixed seed (cached by the model's weights);
``judge_model`` and ``evaluate_on`` sample and judge; ``summarize`` reports presence,
all-present, order given all present, and CLAP score per prompt kind with 95% bootstrap
intervals. Paired effects and the claims are :mod:`t2a_lib.evaluate.claims`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..world.captions import FREE_KIND, caption_kind
from ..audio.features import load_array, waves_to_mel
from ..scoring.metrics import bootstrap_ci
from ..scoring.cache import content_key
from ..scoring.scorers import Judgement, judge_clips, require_role

KIND_ORDER = ["single", "background", "then", "followed", "before", "after", "while"]


def model_fingerprint(*modules) -> str:
    """sha256 of the modules' weights: what a cache of their samples is keyed by."""
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def sample_cache_path(pipe, prompts: list[str], seed: int, steps: int, guidance: float, output: str,
                      cache_dir) -> Path:
    """Where :func:`generate` keeps these samples: keyed by the model's weights (UNet, VAE, text
    encoder, and the vocoder for audio), the prompts, seed, steps, guidance and output."""
    vocoder = model_fingerprint(pipe.vocoder) if pipe.vocoder is not None else "griffin-lim"
    key = content_key(model_fingerprint(pipe.unet, pipe.vae, pipe.text_encoder), list(prompts), seed, steps,
                      guidance, vocoder if output == "audio" else "mel")
    return Path(cache_dir) / f"{key[:24]}.npy"


def generate(pipe, prompts: list[str], seed: int, steps: int, guidance: float, batch_size: int | None = None,
             progress: bool = True, cache_dir=None, output: str = "audio") -> np.ndarray:
    """One clip per prompt: waveforms (N, S), or with ``output="mel"`` the VAE's log-mels
    (N, 64, T) without vocoding. With ``cache_dir``, results are stored under a key of the
    model's weights, prompts, seed, steps, guidance and output, and reused when all match."""
    path = None
    if cache_dir is not None:
        path = sample_cache_path(pipe, prompts, seed, steps, guidance, output, cache_dir)
        if path.exists():
            return load_array(path)  # a truncated cache file is named, never half-read
    g = torch.Generator().manual_seed(seed)
    out = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, generator=g,
               batch_size=batch_size, progress=progress, output=output)
    result = out.audios if output == "audio" else out.mels
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")  # unique per process
        np.save(tmp, result)
        tmp.replace(path)
    return result


def judge_model(pipe, judges, prompts: list[str], seed: int, steps: int, guidance: float,
                batch_size: int | None = None, progress: bool = True, cache_dir=None,
                output: str = "audio") -> tuple[Judgement, np.ndarray]:
    """Sample (or read from the cache) and judge: per-clip verdicts and the samples (waveforms,
    or log-mels with ``output="mel"``)."""
    require_role(judges, "judge", "model evaluation")
    real_clap = hasattr(judges, "judge_waves")  # real data, no timelines: a real CLAP hears waveforms
    if real_clap and output != "audio":
        raise ValueError("a real CLAP judges waveforms: evaluate with eval_output = 'audio'")
    samples = generate(pipe, prompts, seed, steps, guidance, batch_size, progress, cache_dir, output)
    if real_clap:
        return judges.judge_waves(samples, prompts), samples
    mels = waves_to_mel(samples) if output == "audio" else torch.from_numpy(samples)
    return judge_clips(judges, mels, prompts), samples


def mel_vs_audio_agreement(pipe, judges, prompts: list[str], n: int, steps: int, guidance: float,
                           seed: int) -> dict:
    """Judge ``n`` clips (every k-th prompt) both ways, as vocoded audio and as the VAE's decoded
    log-mel: the share of equal verdicts (all present; order on temporal prompts) and each way's
    rates. Empty with ``n = 0``."""
    if n == 0:
        return {}
    prompts = prompts[:: max(1, len(prompts) // n)][:n]
    clips = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, progress=False,
                 generator=torch.Generator().manual_seed(seed))  # the same clips, both ways
    via = {"audio": judge_clips(judges, waves_to_mel(clips.audios), prompts).table,
           "mel": judge_clips(judges, torch.from_numpy(clips.mels), prompts).table}
    agreement = {"all_present": float((via["audio"].all_present == via["mel"].all_present).mean())}
    timed = via["audio"].order.notna()
    agreement["order (temporal prompts)"] = float((via["audio"].order == via["mel"].order)[timed].mean())
    agreement.update({f"{m} rate ({out})": float(via[out][m].mean()) for m in ("presence", "all_present", "order")
                      for out in via})
    return agreement


def mean_ci(values, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the defined values: a 95% bootstrap interval (NaN bounds below 2 values)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return (np.nan, np.nan, np.nan, 0)
    if len(v) == 1:
        return (float(v[0]), np.nan, np.nan, 1)
    return (*bootstrap_ci(v, n_boot=n_boot, seed=seed), len(v))


def summarize(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0, by: str = "relation") -> pd.DataFrame:
    """Per group: presence, all present, order (temporal prompts with every event present),
    CLAP score; each as estimate with [low, high] 95% bootstrap bounds and the count. A CLAP-only
    table (real data: :mod:`t2a_lib.scoring.clap_family`) gives the CLAP score per prompt ``kind``."""
    if "presence" not in table:
        return _summarize_clap(table, n_boot, seed, by if by in table else "kind")
    rows = []
    groups = [("all", table)] + [(k, g) for k, g in table.groupby(by)]
    for name, g in groups:
        row = {by: name, "clips": len(g)}
        given = g[(g.all_present == 1) & g.order.notna()]
        for col, values in (("presence", g.presence), ("all_present", g.all_present),
                            ("order|present", given.order), ("order", g.order), ("clap", g.clap)):
            est, lo, hi, n = mean_ci(values, n_boot, seed)
            row.update({col: est, f"{col}_lo": lo, f"{col}_hi": hi, f"{col}_n": n})
        rows.append(row)
    out = pd.DataFrame(rows).set_index(by)
    order = [k for k in ["all"] + KIND_ORDER if k in out.index] + [k for k in out.index if k not in KIND_ORDER + ["all"]]
    return out.loc[order]


def _summarize_clap(table: pd.DataFrame, n_boot: int, seed: int, by: str) -> pd.DataFrame:
    """:func:`summarize` of a CLAP-only table: the CLAP score per group."""
    rows = []
    for name, g in [("all", table)] + ([(k, g) for k, g in table.groupby(by)] if by in table else []):
        est, lo, hi, n = mean_ci(g.clap, n_boot, seed)
        rows.append({by: name, "clips": len(g), "clap": est, "clap_lo": lo, "clap_hi": hi, "clap_n": n})
    return pd.DataFrame(rows).set_index(by)


def format_ci(summary: pd.DataFrame, cols=("presence", "all_present", "order|present", "clap")) -> pd.DataFrame:
    """'0.912 [0.880, 0.940]' strings for display (the columns the summary has)."""
    out = pd.DataFrame(index=summary.index)
    out["clips"] = summary["clips"]
    for c in (c for c in cols if c in summary):
        out[c] = [f"{e:.3f} [{lo:.3f}, {hi:.3f}] (n={n})" if n > 1 else ("—" if n == 0 else f"{e:.3f} (n=1)")
                  for e, lo, hi, n in zip(summary[c], summary[f"{c}_lo"], summary[f"{c}_hi"], summary[f"{c}_n"])]
    return out


# ----------------------------------------------------------------------------- the shared evaluation sets

EVAL_DIR = "eval"
EVAL_STREAM = 9  # the evaluation prompts draw from their own random stream of the run's seed


def build_eval_sets(run_dir, n_temporal: int, n_other_per_kind: int, n_integrity: int, n_temporal_baton: int,
                    seed: int = 0) -> dict[str, pd.DataFrame]:
    """Write the run's two held-out prompt sets once, for every notebook that evaluates:

    - ``tango``: captions of test clips (each with its source clip, for KL and event F1): up to
      ``n_temporal`` temporal ones (then / followed / before / after, where Tango 2's claims
      live) and ``n_other_per_kind`` of each other kind (single, background, while) for the
      papers' subset tables;
    - ``baton``: BATON's Integrity (two events) and Temporal (three events in order) prompts.

    ``eval/eval.json`` records the sizes and the sampling seed every model is sampled with, so
    all models are compared on the same prompts and the same noise. Called again with the same
    sizes it returns what it wrote; other sizes are refused (the models already evaluated would
    no longer be comparable)."""
    from ..world.datasets import load_split
    from ..feedback.reward import baton_prompts

    folder = Path(run_dir) / EVAL_DIR
    spec = {"n_temporal": n_temporal, "n_other_per_kind": n_other_per_kind, "n_integrity": n_integrity,
            "n_temporal_baton": n_temporal_baton, "seed": seed, "sample_seed": seed + 1}
    if (folder / "eval.json").exists():
        have = json.loads((folder / "eval.json").read_text())
        if have != spec:
            raise ValueError(f"{folder / 'eval.json'} holds evaluation sets of other sizes ({have}); "
                             f"asked for {spec}: delete {folder} (and the samples that used it) to rebuild")
        return {name: load_eval_set(run_dir, name) for name in ("tango", "baton")}
    test = load_split(Path(run_dir) / "world", "test")
    rng = np.random.default_rng([seed, EVAL_STREAM])
    by_kind: dict[str, dict[str, str]] = {}
    for r in test:
        by_kind.setdefault(caption_kind(r.captions), {}).setdefault(r.captions, r.id)
    temporal_kinds = [k for k in KIND_ORDER if k in ("then", "followed", "before", "after")]
    kinds = KIND_ORDER + [FREE_KIND]  # free-form captions of real data: n_other_per_kind of them
    pools = {k: [list(by_kind.get(k, {}).items())[i] for i in rng.permutation(len(by_kind.get(k, {})))]
             for k in kinds}
    rows = []
    for k in kinds:
        if k in temporal_kinds:  # as even as the kinds allow, n_temporal in all
            share = [len(pools[t]) for t in temporal_kinds]
            take = _even_split(n_temporal, share)[temporal_kinds.index(k)]
        else:
            take = n_other_per_kind
        rows += [{"prompt": cap, "kind": k, "source_id": sid} for cap, sid in pools[k][:take]]
    tango = pd.DataFrame(rows)
    baton = baton_prompts(n_integrity, n_temporal_baton, seed=[seed, EVAL_STREAM],
                          exclude=set(tango.prompt)).rename(columns={"caption": "prompt"})
    baton["labels"] = baton["labels"].map(list)
    baton["all_labels"] = baton["all_labels"].map(list)
    folder.mkdir(parents=True, exist_ok=True)
    tango.to_parquet(folder / "tango.parquet", index=False)
    baton.to_parquet(folder / "baton.parquet", index=False)
    (folder / "eval.json").write_text(json.dumps(spec, indent=1))
    return {"tango": tango, "baton": baton}


def _even_split(total: int, available: list[int]) -> list[int]:
    """``total`` spread as evenly as possible over pools of the given sizes (none over its size)."""
    take = [0] * len(available)
    while sum(take) < total and any(t < a for t, a in zip(take, available)):
        for i, a in enumerate(available):
            if take[i] < a and sum(take) < total:
                take[i] += 1
    return take


def load_eval_set(run_dir, name: str) -> pd.DataFrame:
    path = Path(run_dir) / EVAL_DIR / f"{name}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no evaluation set {path}: notebook 02 builds the run's evaluation sets")
    return pd.read_parquet(path)


def sample_seed(run_dir) -> int:
    """The seed every model of the run is sampled with on the evaluation sets."""
    path = Path(run_dir) / EVAL_DIR / "eval.json"
    if not path.exists():
        raise FileNotFoundError(f"no {path}: notebook 02 builds the run's evaluation sets")
    return int(json.loads(path.read_text())["sample_seed"])


def evaluate_on(pipe, judges, run_dir, name: str, steps: int, guidance: float, output: str = "mel",
                progress: bool = False) -> tuple[Judgement, np.ndarray]:
    """Sample ``pipe`` on the run's evaluation set ``name`` (cached under ``run_dir/samples``)
    and judge it: the judgement (its per-clip table with the set's columns, kind, task, ...,
    attached) and the samples."""
    prompts = load_eval_set(run_dir, name)
    judged, samples = judge_model(pipe, judges, prompts.prompt.tolist(), sample_seed(run_dir), steps, guidance,
                                  progress=progress, cache_dir=Path(run_dir) / "samples", output=output)
    extra = prompts.drop(columns=["prompt"] + [c for c in ("labels", "all_labels") if c in prompts])
    judged.table = pd.concat([judged.table, extra.reset_index(drop=True)], axis=1)
    return judged, samples


def _with_saved_unet(base, unet_folder):
    """``base``, its UNet replaced by the one saved in ``unet_folder`` (``None``: ``base`` itself)."""
    from ..align.dpo import with_unet
    from ..model.tango import load_unet

    return base if unet_folder is None else with_unet(base, load_unet(unet_folder))


def _run_pipeline(run_dir, unet_folder=None):
    """The run's base pipeline, its UNet replaced by the one saved in ``unet_folder`` if given."""
    from ..model.base_model import load_run_pipeline

    return _with_saved_unet(load_run_pipeline(run_dir), unet_folder)


def sample_eval_set(run_dir, unet_folder, name: str, steps: int, guidance: float, output: str = "audio") -> None:
    """A job for :func:`t2a_lib.run.parallel.run_jobs`: the run's base pipeline (with the UNet saved
    in ``unet_folder``; ``None``: the base) samples evaluation set ``name`` into the run's sample
    cache, where :func:`evaluate_on` finds it."""
    generate(_run_pipeline(run_dir, unet_folder), load_eval_set(run_dir, name).prompt.tolist(), sample_seed(run_dir),
             steps, guidance, progress=False, cache_dir=Path(run_dir) / "samples", output=output)


def sample_models(run_dir, unet_folders: list, name: str, steps: int, guidance: float, output: str = "audio",
                  workers: int = 1, progress: bool = True) -> int:
    """Fill the run's sample cache for every model in ``unet_folders`` (``None``: the base) on
    evaluation set ``name``: the models not yet cached sample in ``workers`` processes
    (:mod:`t2a_lib.run.parallel`), so a following :func:`evaluate_on` only judges. Returns how many
    models were sampled."""
    from ..run import parallel

    run_dir = Path(run_dir)
    base = _run_pipeline(run_dir)
    prompts, seed = load_eval_set(run_dir, name).prompt.tolist(), sample_seed(run_dir)
    todo = [f for f in unet_folders if not sample_cache_path(_with_saved_unet(base, f), prompts, seed, steps, guidance,
                                                             output, run_dir / "samples").exists()]
    names = ["base" if f is None else "/".join(Path(f).parts[-3:-1]) for f in todo]
    parallel.run_jobs(sample_eval_set, [(run_dir, f, name, steps, guidance, output) for f in todo], workers, names,
                      desc=f"sampling the {name} set", progress=progress)
    return len(todo)


def evaluate_models(run_dir, base, judges, model_ids: list[str], name: str, steps: int, guidance: float,
                    output: str = "audio", workers: int = 1) -> tuple[dict, dict]:
    """The base pipeline and every saved seed of the fine-tuned ``model_ids`` on evaluation set
    ``name``: sampled in ``workers`` processes where not cached (:func:`sample_models`), then
    judged here. Returns ``({model id: [Judgement per seed]}, {model id: [samples per seed]})``,
    the base first (as ``"base"``)."""
    from .reproduce import model_folders

    folders = {"base": [None], **model_folders(run_dir, model_ids)}
    sample_models(run_dir, [f for fs in folders.values() for f in fs], name, steps, guidance, output, workers)
    judged, samples = {}, {}
    for model_id, fs in folders.items():
        for f in fs:
            j, s = evaluate_on(_with_saved_unet(base, f), judges, run_dir, name, steps, guidance, output=output)
            judged.setdefault(model_id, []).append(j)
            samples.setdefault(model_id, []).append(s)
    return judged, samples


def to_audio(sample, vocoder) -> np.ndarray:
    """A waveform from one evaluation sample: a waveform as it is, a log-mel (64, T) vocoded."""
    from ..model.vocoder import vocode

    sample = np.asarray(sample)
    return vocode(torch.from_numpy(sample[None]).float(), vocoder)[0] if sample.ndim == 2 else sample


def to_mel(sample) -> np.ndarray:
    """A log-mel (64, T) from one evaluation sample: a log-mel as it is, a waveform analysed."""
    sample = np.asarray(sample)
    return sample if sample.ndim == 2 else waves_to_mel(sample[None])[0].numpy()
