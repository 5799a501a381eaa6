# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Diffusion-DPO (Tango 2), SFT on winners, and online CLAP-ranked rounds
#
# For a pair of latents of the same prompt $c$, winner $x^w$ and loser $x^l$, the fine-tuned
# UNet $\epsilon_\theta$ and the frozen base $\epsilon_\text{ref}$ see the **same** timestep $t$
# and the **same** noise $\epsilon$. With per-sample errors averaged over $C\times H\times W$,
#
# $$m_\theta^{w} = \lVert f_\theta(x^w_t, t, c) - y^w \rVert^2,\qquad
#   m_\theta^{l},\ m_\text{ref}^{w},\ m_\text{ref}^{l}\ \text{alike},$$
#
# $$\mathcal{L}_\text{DPO} = -\log\sigma\!\Big(-\tfrac{\beta}{2}\big[(m_\theta^{w} - m_\theta^{l}) - (m_\text{ref}^{w} - m_\text{ref}^{l})\big]\Big),\qquad \beta = 2000 .$$
#
# The loss is $\ln 2$ at the start (policy = reference). It falls when the model fits the
# winner *better than the reference does* by more than it fits the loser: it learns the
# difference between the pair, not either sample. The share of pairs on the right side of that
# margin is the **implicit accuracy**; we plot it and the four errors, not only the loss.
#
# Baselines: **SFT on winners** (the plain diffusion loss on chosen samples), and TangoFlux's
# **CRPO**: each round samples $N$ clips per prompt from the *current* model, the ranker's best
# against its worst, trained with $\mathcal{L}_\text{DPO} + \ell(x^w)$.

# %% tags=["parameters"]
run_dir = "papermill_runs/dev"
profile = "dev"
seed = 0
beta = 2000.0
dpo_steps = 300
sft_first_steps = 0
batch_size = 8
lr = 2e-5  # DPO's β-scaled gradients: 1e-4 raised the winners' error 75% in 150 steps
lora_rank = None
crpo_rounds = 2
crpo_prompts = 48
crpo_samples = 4
crpo_steps = 60
eval_per_kind = 40
sample_steps = 10
guidance = 3.0
n_boot = 1000

# %%
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Audio, Markdown, display

from t2a_lib import base_model, dpo, evaluation, preferences, scorers
from t2a_lib.datasets import load_split

run_dir = Path(run_dir)
models_dir = run_dir / "models"
(run_dir / "figures").mkdir(parents=True, exist_ok=True)
t_start, timings = time.time(), {}
base = base_model.load_pipeline(run_dir / "base" / "pipeline")
judges, rankers = scorers.load_judges(run_dir), scorers.load_rankers(run_dir)
sched = dpo.make_train_scheduler_like(base)
bank, pairs = dpo.load_preference_pairs(run_dir / "preferences", base.text_encoder, base.tokenizer)
print(f"{len(bank)} preference pairs:", pairs.strategy.value_counts().to_dict())
common = dict(batch_size=batch_size, lr=lr, lora_rank=lora_rank, seed=seed,
              mixed_precision="bf16" if torch.cuda.is_available() else "no")

# %% [markdown]
# ## Train: DPO, SFT on winners

# %%
runs = {}
t0 = time.time()
runs["DPO (Tango 2)"] = dpo.fit_preference_model(models_dir / "dpo", base.unet, sched, bank,
                                                 dpo.DPOConfig(steps=dpo_steps, beta=beta, sft_first_steps=sft_first_steps, **common))
timings["dpo"] = time.time() - t0
t0 = time.time()
runs["SFT on winners"] = dpo.fit_preference_model(models_dir / "sft", base.unet, sched, bank,
                                                  dpo.DPOConfig(steps=dpo_steps, loss="sft", **common))
timings["sft"] = time.time() - t0

# %%
hist = pd.DataFrame(runs["DPO (Tango 2)"][1])
pref = hist[hist.phase == 1]
smooth = lambda s: s.rolling(20, min_periods=1).mean()  # noqa: E731
fig, axes = plt.subplots(1, 3, figsize=(14, 3.2))
axes[0].plot(smooth(pref.dpo_loss))
axes[0].axhline(np.log(2), color="k", linestyle=":", label="ln 2 (policy = reference)")
axes[0].set(title="DPO loss", xlabel="step")
axes[0].legend()
axes[1].plot(smooth(pref.implicit_acc))
axes[1].axhline(0.5, color="k", linestyle=":")
axes[1].set(title="implicit accuracy", xlabel="step", ylim=(0, 1))
axes[2].plot(smooth(pref.mse_w - pref.ref_w), label="winner: policy − reference")
axes[2].plot(smooth(pref.mse_l - pref.ref_l), label="loser: policy − reference")
axes[2].axhline(0, color="k", linestyle=":")
axes[2].set(title="errors relative to the reference", xlabel="step")
axes[2].legend()
fig.tight_layout()
fig.savefig(run_dir / "figures" / "04_dpo_training.png", dpi=90)
plt.show()

# %% [markdown]
# ## CRPO: online rounds ranked by the rankers

# %%
t0 = time.time()
crpo_pool = preferences.seed_prompts(load_split(run_dir / "world", "train"), crpo_prompts, seed + 1)
crpo_unet, crpo_log = dpo.fit_crpo(models_dir / "crpo", base, rankers, crpo_pool, crpo_rounds, crpo_samples,
                                   dpo.DPOConfig(steps=crpo_steps, beta=beta, batch_size=batch_size, lr=lr, seed=seed + 5),
                                   sample_steps, guidance)
runs["CRPO"] = (crpo_unet, [h for r in crpo_log for h in r["history"]])
timings["crpo"] = time.time() - t0
display(pd.DataFrame([{k: v for k, v in r.items() if k != "history"} for r in crpo_log]))

# %% [markdown]
# ## Evaluate: every model on the same held-out prompts and seeds, judged by the judges
#
# Differences are paired (same prompt, same seed) with 95% bootstrap intervals.

# %%
t0 = time.time()
prompts = evaluation.evaluation_prompts(load_split(run_dir / "world", "test"), eval_per_kind, seed=seed)
tables, audio = {}, {}
for name, unet in [("base", base.unet)] + [(k, v[0]) for k, v in runs.items()]:
    j, audio[name] = evaluation.judge_model(dpo.with_unet(base, unet), judges, prompts, seed + 1, sample_steps,
                                            guidance, progress=False, cache_dir=run_dir / "samples")
    tables[name] = j.table
timings["evaluation"] = time.time() - t0
effects = evaluation.paired_effects(tables, "base", metrics=("presence", "all_present", "order", "clap"),
                                    subsets={k: evaluation.SUBSETS[k] for k in ("multi-event", "temporal", "single-event")},
                                    n_boot=n_boot, seed=seed)
display(effects.style.format(precision=3).apply(
    lambda r: ["background-color: #dfd" if r["excludes zero"] and r.difference > 0 else
               "background-color: #fdd" if r["excludes zero"] else "" for _ in r], axis=1))

# %%
show = effects[effects.metric.isin(["presence", "order"]) & effects.subset.isin(["multi-event", "temporal"])]
fig, ax = plt.subplots(figsize=(11, 3.5))
labels = [f"{r.model}\n{r.subset} {r.metric}" for r in show.itertuples()]
ax.errorbar(range(len(show)), show.difference, yerr=[show.difference - show.low, show.high - show.difference],
            fmt="o", capsize=3)
ax.axhline(0, color="k", linestyle=":")
ax.set_xticks(range(len(show)), labels, rotation=60, ha="right", fontsize=7)
ax.set(title="change over the base model (judges; paired 95% CIs)")
fig.tight_layout()
fig.savefig(run_dir / "figures" / "04_effects.png", dpi=90)
plt.show()

# %% [markdown]
# ## Before and after: listen

# %%
temporal_idx = [i for i, r in enumerate(tables["base"].itertuples()) if r.relation in ("then", "after", "before")][:3]
for i in temporal_idx:
    display(Markdown(f"**{prompts[i]}**"))
    for name in tables:
        row = tables[name].iloc[i]
        display(Markdown(f"*{name}* — judge hears {', '.join(row.detected) or 'nothing'}; order {row.order}"))
        display(Audio(audio[name][i], rate=16000))

# %% [markdown]
# ## Figures for the report

# %%
figures = {
    "profile": profile,
    "pairs": len(bank),
    "beta": beta,
    "dpo_final": {k: float(pref[k].tail(20).mean()) for k in ("dpo_loss", "implicit_acc", "mse_w", "mse_l", "ref_w", "ref_l")},
    "crpo": [{k: v for k, v in r.items() if k != "history"} for r in crpo_log],
    "effects": json.loads(effects.to_json(orient="records")),
    "summary": {name: json.loads(evaluation.summarize(t, n_boot=200, seed=seed, by="relation").to_json(orient="index"))
                for name, t in tables.items()},
    "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
    "wall_seconds": round(time.time() - t_start, 1),
}
(run_dir / "04_dpo.json").write_text(json.dumps(figures, indent=2, default=float))
effects[effects.subset.isin(["multi-event", "temporal"])]
