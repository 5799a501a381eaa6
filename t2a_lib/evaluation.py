"""Evaluating a text-to-audio model on held-out prompts, by the judges only.

``evaluation_prompts`` draws held-out captions stratified by relation kind; ``generate`` samples
one clip per prompt with a fixed seed; ``judge_model`` runs both and returns the per-clip verdicts;
``summarize`` reports presence, all-present, order accuracy (given all prompted events present,
as the base-model issue asks) and CLAP score per prompt kind with 95% bootstrap intervals.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .captions import parse_caption
from .features import waves_to_mel
from .metrics import bootstrap_ci, content_key
from .scorers import Judgement, judge_clips, require_role

KIND_ORDER = ["single", "background", "then", "followed", "before", "after", "while"]


def evaluation_prompts(records, per_kind: int, seed: int = 0) -> list[str]:
    """Up to ``per_kind`` distinct held-out captions of each relation kind (seeded)."""
    rng = np.random.default_rng(seed)
    by_kind: dict[str, list[str]] = {}
    for r in records:
        by_kind.setdefault(parse_caption(r.captions).kind, [])
        if r.captions not in by_kind[parse_caption(r.captions).kind]:
            by_kind[parse_caption(r.captions).kind].append(r.captions)
    out = []
    for kind in KIND_ORDER:
        caps = by_kind.get(kind, [])
        out += [caps[i] for i in rng.permutation(len(caps))[:per_kind]]
    return out


def model_fingerprint(*modules) -> str:
    """sha256 of the modules' weights: what a cache of their samples is keyed by."""
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def generate(pipe, prompts: list[str], seed: int, steps: int, guidance: float, batch_size: int | None = None,
             progress: bool = True, cache_dir=None) -> np.ndarray:
    """One clip per prompt. With ``cache_dir``, samples are stored under a key of the model's
    weights, prompts, seed, steps and guidance, and reused when all of them match."""
    path = None
    if cache_dir is not None:
        key = content_key(model_fingerprint(pipe.unet, pipe.vae, pipe.text_encoder), list(prompts), seed, steps,
                          guidance, model_fingerprint(pipe.vocoder) if pipe.vocoder is not None else "griffin-lim")
        path = Path(cache_dir) / f"{key[:24]}.npy"
        if path.exists():
            return np.load(path)
    g = torch.Generator().manual_seed(seed)
    audios = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, generator=g,
                  batch_size=batch_size, progress=progress).audios
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npy")
        np.save(tmp, audios)
        tmp.replace(path)
    return audios


def judge_model(pipe, judges, prompts: list[str], seed: int, steps: int, guidance: float,
                batch_size: int | None = None, progress: bool = True, cache_dir=None) -> tuple[Judgement, np.ndarray]:
    require_role(judges, "judge", "model evaluation")
    audios = generate(pipe, prompts, seed, steps, guidance, batch_size, progress, cache_dir)
    return judge_clips(judges, waves_to_mel(audios), prompts), audios


def _ci(values, n_boot, seed) -> tuple[float, float, float, int]:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return (np.nan, np.nan, np.nan, 0)
    if len(v) == 1:
        return (float(v[0]), np.nan, np.nan, 1)
    return (*bootstrap_ci(v, n_boot=n_boot, seed=seed), len(v))


def summarize(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0, by: str = "relation") -> pd.DataFrame:
    """Per group: presence, all present, order (temporal prompts with every event present),
    CLAP score; each as estimate with [low, high] 95% bootstrap bounds and the count."""
    rows = []
    groups = [("all", table)] + [(k, g) for k, g in table.groupby(by)]
    for name, g in groups:
        row = {by: name, "clips": len(g)}
        given = g[(g.all_present == 1) & g.order.notna()]
        for col, values in (("presence", g.presence), ("all_present", g.all_present),
                            ("order|present", given.order), ("order", g.order), ("clap", g.clap)):
            est, lo, hi, n = _ci(values, n_boot, seed)
            row.update({col: est, f"{col}_lo": lo, f"{col}_hi": hi, f"{col}_n": n})
        rows.append(row)
    out = pd.DataFrame(rows).set_index(by)
    order = [k for k in ["all"] + KIND_ORDER if k in out.index] + [k for k in out.index if k not in KIND_ORDER + ["all"]]
    return out.loc[order]


def format_ci(summary: pd.DataFrame, cols=("presence", "all_present", "order|present", "clap")) -> pd.DataFrame:
    """'0.912 [0.880, 0.940]' strings for display."""
    out = pd.DataFrame(index=summary.index)
    out["clips"] = summary["clips"]
    for c in cols:
        out[c] = [f"{e:.3f} [{lo:.3f}, {hi:.3f}] (n={n})" if n > 1 else ("—" if n == 0 else f"{e:.3f} (n=1)")
                  for e, lo, hi, n in zip(summary[c], summary[f"{c}_lo"], summary[f"{c}_hi"], summary[f"{c}_n"])]
    return out


SUBSETS = {
    "multi-event": lambda t: t.n_events >= 2,
    "single-event": lambda t: t.n_events == 1,
    "temporal": lambda t: t.relation.isin(["then", "followed", "before", "after"]),
    "non-temporal": lambda t: ~t.relation.isin(["then", "followed", "before", "after"]),
}


def paired_effects(tables: dict[str, pd.DataFrame], baseline: str, metrics=("presence", "all_present", "order", "clap"),
                   subsets: dict | None = None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Each model minus the baseline on the *same* prompts and seeds, per subset and metric:
    paired bootstrap 95% intervals of the mean difference. ``order`` counts only temporal
    prompts (it is NaN elsewhere)."""
    from .metrics import bootstrap_ci_paired

    subsets = subsets or SUBSETS
    base = tables[baseline]
    rows = []
    for name, t in tables.items():
        if name == baseline:
            continue
        if list(t.caption) != list(base.caption):
            raise ValueError(f"model {name!r} was evaluated on other prompts than {baseline!r}")
        for sub, select in subsets.items():
            mask = select(base).to_numpy()
            for m in metrics:
                a, b = t[m].to_numpy(float)[mask], base[m].to_numpy(float)[mask]
                ok = ~(np.isnan(a) | np.isnan(b))
                if ok.sum() < 2:
                    continue
                diff, lo, hi = bootstrap_ci_paired(a[ok], b[ok], n_boot=n_boot, seed=seed)
                rows.append({"model": name, "subset": sub, "metric": m, "n": int(ok.sum()),
                             baseline: float(b[ok].mean()), "model value": float(a[ok].mean()),
                             "difference": diff, "low": lo, "high": hi, "excludes zero": bool(lo > 0 or hi < 0)})
    return pd.DataFrame(rows)
