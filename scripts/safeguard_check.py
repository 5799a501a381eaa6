"""Should DPO's winner safeguard be on by default? The judges' answer on VALIDATION prompts.

Issue #21 allows the SDPO safeguard (``DPOConfig.safeguard``) to become the default only if the
judges, on validation prompts, agree. This samples the base, DPO and safeguarded DPO (every seed
the run trained) on 320 validation captions (stratified by relation kind, never test captions),
with the same noise for every model, and judges the vocoded audio. Effects are paired by prompt,
seeds pooled per prompt, with 95% bootstrap intervals over prompts.

Usage: python scripts/safeguard_check.py RUN_DIR   (a `beyond` run: models/dpo and models/dpo_safe)
"""
import sys
import time

import numpy as np
import pandas as pd

from t2a_lib.align import dpo, preferences
from t2a_lib.evaluate import claims, evaluation, reproduce
from t2a_lib.model import base_model, tango
from t2a_lib.scoring import scorers
from t2a_lib.world.datasets import load_split

N_PROMPTS, PROMPT_SEED, SAMPLE_SEED, STEPS, GUIDANCE = 320, 2, 1, 4, 3.0
MEASURES = ("presence", "all_present", "order", "clap")


def judged_tables(run: str, prompts: list[str]) -> dict[str, list[pd.DataFrame]]:
    """{model id: [judges' per-clip table per seed]} for the base, DPO and safeguarded DPO."""
    base, judges = base_model.load_run_pipeline(run), scorers.load_judges(run)
    folders = {"base": [None], **reproduce.model_folders(run, ["dpo", "dpo_safe"])}
    if "dpo_safe" not in folders:
        sys.exit(f"{run}/models/dpo_safe: none; run the `beyond` profile (04_dpo.safeguard) first")
    tables = {}
    for model_id, fs in folders.items():
        for f in fs:
            pipe = base if f is None else dpo.with_unet(base, tango.load_unet(f))
            t0 = time.time()
            judged, _ = evaluation.judge_model(pipe, judges, prompts, SAMPLE_SEED, STEPS, GUIDANCE, progress=False)
            tables.setdefault(model_id, []).append(judged.table)
            print(f"{model_id} {f or ''}: {time.time() - t0:.0f} s", flush=True)
    return tables


def effect(a: list[pd.DataFrame], b: list[pd.DataFrame], measure: str) -> str:
    """``a`` − ``b`` paired by prompt, seeds pooled, as the claims table computes it."""
    e = claims.paired_effect(claims.pooled_values(a, measure), claims.pooled_values(b, measure), n_boot=2000)
    return f"{e['difference']:+.4f} [{e['low']:+.4f}, {e['high']:+.4f}] n={e['n']}"


if __name__ == "__main__":
    run = sys.argv[1] if len(sys.argv) > 1 else "papermill_runs/beyond"
    prompts = preferences.seed_prompts(load_split(f"{run}/world", "val"), N_PROMPTS, PROMPT_SEED)
    tables = judged_tables(run, prompts)
    for m in MEASURES:
        means = {k: np.nanmean(claims.pooled_values(v, m)) for k, v in tables.items()}
        print(f"{m}: " + "  ".join(f"{k} {v:.4f}" for k, v in means.items()))
        for a, b in (("dpo", "base"), ("dpo_safe", "base"), ("dpo_safe", "dpo")):
            print(f"  {a} − {b}: {effect(tables[a], tables[b], m)}")
