# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · BATON: reward-weighted fine-tuning
#
# With $\ell$ the per-sample diffusion loss (min-SNR weighted, $\gamma = 5$), pre-training clips
# $\mathcal{D}_\text{pre}$ (real world clips and their captions) and generated clips
# $\mathcal{D}_\text{fb}$ with rewards $r$,
#
# $$\mathcal{L} = \beta\,\mathbb{E}_{\mathcal{D}_\text{pre}}\,\ell \;+\; \mathbb{E}_{\mathcal{D}_\text{fb}}\, r\,\ell ,\qquad \beta = 0.25 .$$
#
# The feedback term is maximum likelihood on the clips that were accepted (weighted by how
# much); the pre-training term keeps the model near the data. Rewards are the labels of
# notebook 05 (**HD**, 0/1), the reward model's scores on more audio (**RD**, in $[0, 1]$), or
# both (**HD+RD**, BATON's best). Each trains with `n_seeds` seeds. Judged on the run's
# BATON evaluation prompts (notebook 02): all present on Integrity, order on Temporal.

# %% tags=["parameters"]
run_dir = "papermill_runs/dev"
profile = "dev"
seed = 0
beta = 0.25
steps = 300
batch_size = 8
pretrain_batch_size = 8
lr = 1e-4
n_pretrain = 2500
n_seeds = 2  # every BATON model (HD, RD, HD+RD) trains with this many seeds
sample_steps = 10
guidance = 3.0
eval_output = "audio"
n_boot = 1000
workers = 1  # > 1: fine-tune and sample in that many processes (one thread each on 2 cores)

# %%
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Audio, Markdown, display
from safetensors.torch import load_file

from t2a_lib import base_model, baton, claims, evaluation, parallel, reproduce, scorers

run_dir = Path(run_dir)
(run_dir / "figures").mkdir(parents=True, exist_ok=True)
t_start, timings = time.time(), {}
base = base_model.load_pipeline(run_dir / "base" / "pipeline")
judges = scorers.load_judges(run_dir)

# %% [markdown]
# ## Data: pre-training clips, HD labels, RD scores
#
# Written once to `baton/training_data.safetensors` (pre-training clips encoded by the base VAE,
# the labelled HD and RD clips with their rewards and captions); every fine-tune reads it.

# %%
baton.write_training_data(run_dir, base.vae, n_pretrain, seed)
data = baton.training_sets(run_dir, base.text_encoder, base.tokenizer)
print({claims.MODEL_NAMES[m]: {"clips": len(data[m][0]), "mean reward": round(float(data[m][2].mean()), 3)}
       for m in baton.FEEDBACK}, f"pre-training clips: {len(data['pretrain'][0])}")

# %% [markdown]
# ## Fine-tune: HD, RD, HD+RD
#
# Independent fine-tunes: with `workers = 2` they train side by side, one thread each
# (`t2a_lib.parallel`).

# %%
t0 = time.time()
jobs = {}
for model_id in baton.FEEDBACK:
    for k in range(n_seeds):
        cfg = baton.BatonConfig(steps=steps, batch_size=batch_size, pretrain_batch_size=pretrain_batch_size, lr=lr,
                                beta=beta, seed=seed + k, mixed_precision="bf16" if torch.cuda.is_available() else "no")
        jobs[model_id, k] = (run_dir, reproduce.model_dir(run_dir, model_id, k), model_id, cfg)
histories = dict(zip(jobs, parallel.run_jobs(baton.fit_from_run, list(jobs.values()), workers,
                                             names=[f"{m}/s{k}" for m, k in jobs], desc="BATON fine-tuning")))
timings["train"] = time.time() - t0

fig, ax = plt.subplots(figsize=(8, 3))
for (model_id, k), hist in histories.items():
    h = pd.DataFrame(hist)
    ax.plot(h.feedback.rolling(20, min_periods=1).mean(), label=f"{claims.MODEL_NAMES[model_id]}, seed {k}: mean r·ℓ")
ax.set(title="feedback term during fine-tuning", xlabel="step", yscale="log")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# ## Evaluate on the run's Integrity and Temporal prompts (judges only)
#
# Every model samples the same BATON evaluation prompts with the same seed (paired). Seeds are
# pooled; each seed's effect stands beside the pooled one.

# %%
t0 = time.time()
judged, samples = evaluation.evaluate_models(run_dir, base, judges, list(baton.FEEDBACK), "baton", sample_steps, guidance,
                                            eval_output, workers)
tables = {m: [j.table for j in js] for m, js in judged.items()}
timings["evaluation"] = time.time() - t0
here = [c for c in claims.CLAIMS if c.prompts == "baton"]
answered = claims.answer_all({"baton": tables}, here, n_boot=n_boot, seed=seed)
display(answered[["claim", "measure", "n", "ours", "per seed", "half-width", "MDE", "continuous", "verdict"]])

# %%
claims.plot_effects(answered, "BATON: paired effects (judges; 95% bootstrap intervals; seeds pooled)",
                    run_dir / "figures" / "06_baton_effects.png")
plt.show()

# %%
base_t = tables["base"][0]
i = int(np.argmax(base_t.task.to_numpy() == "temporal"))
display(Markdown(f"**{base_t.caption[i]}**"))
for model_id in tables:
    row = tables[model_id][0].iloc[i]
    display(Markdown(f"*{claims.MODEL_NAMES[model_id]}* — judge hears {', '.join(row.detected) or 'nothing'}"),
            Audio(evaluation.to_audio(samples[model_id][0][i], base.vocoder), rate=16000))

# %%
figures = {
    "profile": profile,
    "sets": {m: {"clips": len(data[m][0]), "mean_reward": float(data[m][2].mean())} for m in baton.FEEDBACK},
    "effects": json.loads(answered.to_json(orient="records")),
    "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
    "wall_seconds": round(time.time() - t_start, 1),
}
(run_dir / "06_baton.json").write_text(json.dumps(figures, indent=2, default=float))
answered[["claim", "measure", "ours", "verdict"]]
