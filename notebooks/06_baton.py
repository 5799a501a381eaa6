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
# both (**HD+RD**, BATON's best). Each trains with `n_seeds` seeds; RD alone with `with_rd` (on in
# the `full`, `scratch` and `beyond` profiles, off in `default`). Judged on the run's
# BATON evaluation prompts (notebook 02): all present on Integrity, order on Temporal.
#
# **Diffusion-KTO on the same labels** (`with_kto`; off by default, on in the `beyond` profile). BATON's
# feedback is a like or dislike per clip, $y \in \{+1, -1\}$ (reward-model scores become labels at
# 0.5). Diffusion-KTO (Li et al. 2024) trains on such labels directly, against the frozen base: with
# $\Delta$ the per-sample denoising error of the policy ($\theta$) or the reference,
#
# $$\mathcal{L}_\text{KTO} = \lambda_y\Big(1 - \sigma\big(y\,\beta\,(\Delta_\text{ref} - \Delta_\theta - \bar z)\big)\Big),\qquad
#   \bar z = \max\big(0, \operatorname{mean}_\text{batch}(\Delta_\text{ref} - \Delta_\theta)\big)\ \text{(detached)},$$
#
# $\beta = 1000$ (our DPO's $\tfrac12\beta$, the scale the ranker sweep chose), $\lambda_{\pm1} = 1$. KTO
# trains on the HD and on the HD+RD clips with BATON's steps, batch, seeds and base model, and is
# judged on the same prompts: the claims compare it with the base and with BATON HD.

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
with_rd = True  # also train BATON on the reward model's labels alone ("baton_rd"; HD and HD+RD always train)
with_kto = False  # also train Diffusion-KTO on the HD and HD+RD labels ("kto_hd", "kto_hd_rd")
kto_beta = 1000.0
kto_lr = 2e-5  # our DPO's learning rate: the same loss scale (module t2a_lib.feedback.kto)
kto_lambda_desirable = 1.0
kto_lambda_undesirable = 1.0

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

from t2a_lib.evaluate import claims, evaluation, reproduce
from t2a_lib.feedback import baton, kto
from t2a_lib.model import base_model
from t2a_lib.run import parallel
from t2a_lib.scoring import scorers

run_dir = Path(run_dir)
(run_dir / "figures").mkdir(parents=True, exist_ok=True)
t_start, timings = time.time(), {}
base = base_model.load_run_pipeline(run_dir)
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
# ## Fine-tune: HD, RD, HD+RD (and KTO on HD and HD+RD)
#
# Independent fine-tunes: with `workers = 2` they train side by side, one thread each
# (`t2a_lib.run.parallel`).

# %%
t0 = time.time()
precision = "bf16" if torch.cuda.is_available() else "no"
jobs = {}
trained = [m for m in baton.FEEDBACK if with_rd or m != "baton_rd"]
for model_id in trained:
    for k in range(n_seeds):
        cfg = baton.BatonConfig(steps=steps, batch_size=batch_size, pretrain_batch_size=pretrain_batch_size, lr=lr,
                                beta=beta, seed=seed + k, mixed_precision=precision)
        jobs[model_id, k] = (baton.fit_from_run, run_dir, reproduce.model_dir(run_dir, model_id, k), model_id, cfg)
for model_id in kto.KTO_MODELS if with_kto else ():
    for k in range(n_seeds):
        cfg = kto.KTOConfig(steps=steps, batch_size=batch_size, lr=kto_lr, beta=kto_beta,
                            lambda_desirable=kto_lambda_desirable, lambda_undesirable=kto_lambda_undesirable,
                            seed=seed + k, mixed_precision=precision)
        jobs[model_id, k] = (kto.fit_from_run, run_dir, reproduce.model_dir(run_dir, model_id, k), model_id, cfg)
reproduce.retire_stale_models(run_dir, [*baton.FEEDBACK, *kto.KTO_MODELS], jobs)  # seeds not asked for
histories = parallel.run_fine_tunes(jobs, workers)
kto_histories = {key: histories.pop(key) for key in list(histories) if key[0] in kto.KTO_MODELS}
timings["train"] = time.time() - t0

fig, ax = plt.subplots(figsize=(8, 3))
for (model_id, k), hist in histories.items():
    h = pd.DataFrame(hist)
    ax.plot(h.feedback.rolling(20, min_periods=1).mean(), label=f"{claims.MODEL_NAMES[model_id]}, seed {k}: mean r·ℓ")
ax.set(title="feedback term during fine-tuning", xlabel="step", yscale="log")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# With `with_kto`: KTO's training curves. Left, the loss ($\tfrac12$ at the start, policy = reference);
# middle, the share of clips on their label's side of the reference point; right, how far the
# policy's error moved from the reference's on liked (solid) and disliked (dashed) clips: KTO
# should lower the first relative to the second.

# %%
if kto_histories:
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.2))
    for (model_id, k), hist in kto_histories.items():
        h = pd.DataFrame(hist)
        label = f"{claims.MODEL_NAMES[model_id]}, seed {k}"
        axes[0].plot(h.kto_loss.rolling(20, min_periods=1).mean(), label=label)
        axes[1].plot(h.acc.rolling(20, min_periods=1).mean(), label=label)
        line, = axes[2].plot(h.liked_shift.rolling(20, min_periods=1).mean(), label=f"{label}: liked")
        axes[2].plot(h.disliked_shift.rolling(20, min_periods=1).mean(), linestyle="--", color=line.get_color(),
                     label=f"{label}: disliked")
    axes[0].axhline(0.5, color="k", linestyle=":")
    axes[2].axhline(0, color="k", linestyle=":")
    for ax, title in zip(axes, ("KTO loss", "share on their label's side", "error − reference's error")):
        ax.set(title=title, xlabel="step")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(run_dir / "figures" / "06_kto_training.png", dpi=90)
    plt.show()

# %% [markdown]
# ## Evaluate on the run's Integrity and Temporal prompts (judges only)
#
# Every model samples the same BATON evaluation prompts with the same seed (paired). Seeds are
# pooled; each seed's effect stands beside the pooled one. On real data without timelines the
# judge is the run's real CLAP: BATON's rows need the world's presence and order judges, and say so.

# %%
t0 = time.time()
fine_tuned = trained + (list(kto.KTO_MODELS) if with_kto else [])
judged, samples = evaluation.evaluate_models(run_dir, base, judges, fine_tuned, "baton", sample_steps, guidance,
                                            eval_output, workers)
tables = {m: [j.table for j in js] for m, js in judged.items()}
timings["evaluation"] = time.time() - t0
here = [c for c in claims.CLAIMS if c.prompts == "baton" and c.model in tables and c.baseline in tables
        and not c.metric.startswith(claims.GAP_PREFIX)]  # the ranker-judge gap rows: notebook 07
answered = claims.answer_all({"baton": tables}, here, n_boot=n_boot, seed=seed)
print("measured:", ", ".join(c for c in ("presence", "all_present", "order", "clap") if c in tables["base"][0]))
# a preview: Holm's adjustment here runs over these rows only; notebook 07 adjusts over each whole family
display(answered.reindex(columns=["claim", "measure", "n", "seeds", "ours", "prompt-only interval", "per seed", "p",
                                  "adjusted p", "MDE", "continuous", "verdict", "why"]).dropna(axis=1, how="all"))

# %%
claims.plot_effects(answered, "BATON: paired effects (judges; 95% intervals over prompts and seeds)",
                    run_dir / "figures" / "06_baton_effects.png")
plt.show()

# %%
base_t = tables["base"][0]
i = int(np.argmax(base_t.task.to_numpy() == "temporal"))
display(Markdown(f"**{base_t.caption[i]}**"))
for model_id in tables:
    row = tables[model_id][0].iloc[i]
    heard = f"CLAP {row.clap:.3f}" if "presence" not in row else f"judge hears {', '.join(row.detected) or 'nothing'}"
    display(Markdown(f"*{claims.MODEL_NAMES[model_id]}* — {heard}"),
            Audio(evaluation.to_audio(samples[model_id][0][i], base.vocoder), rate=16000))

# %%
results = {
    "profile": profile,
    "sets": {m: {"clips": len(data[m][0]), "mean_reward": float(data[m][2].mean())} for m in baton.FEEDBACK},
    "kto": {f"{m}/s{k}": {c: None if np.isnan(v) else v for c in ("kto_loss", "acc", "liked_shift", "disliked_shift")
                          for v in [float(pd.DataFrame(h)[c].tail(20).mean())]}  # None: no such clip in those steps
            for (m, k), h in kto_histories.items()},
    "kto_settings": {"on": with_kto, "beta": kto_beta, "lr": kto_lr, "lambda_desirable": kto_lambda_desirable,
                     "lambda_undesirable": kto_lambda_undesirable},
    "effects": json.loads(answered.to_json(orient="records")),
    "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
    "wall_seconds": round(time.time() - t_start, 1),
}
(run_dir / "06_baton.json").write_text(json.dumps(results, indent=2, default=float))
answered[["claim", "measure", "ours", "verdict"]]
