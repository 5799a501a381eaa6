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
# # 04 · Diffusion-DPO (Tango 2), on ranked and on gold pairs; SFT on winners; online CLAP-ranked rounds
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
# DPO trains twice, with the same settings: on notebook 03's **ranked** pairs (Tango 2) and on
# its **gold** pairs, whose labels are right by construction (the positive control). Each trains
# with `n_seeds` seeds, so the claims table can show whether a verdict holds across seeds.
# Baselines: **SFT on winners** (the plain diffusion loss on chosen samples), and TangoFlux's
# **CRPO**: each round samples $N$ clips per prompt from the *current* model, the ranker's best
# against its worst, trained with $\mathcal{L}_\text{DPO} + \ell(x^w)$. The baselines answer the
# DPO − SFT and CRPO − DPO rows (`with_sft`, `with_crpo`: on in the `full`, `scratch` and `beyond`
# profiles, off in `default`, which keeps to its 30-minute budget).
#
# **Choosing β, the learning rate and the steps.** With `sweep_*` lists set (the `scratch` and
# `gpu` profiles), each value is tried with the others fixed, and the candidates are scored on
# *validation* prompts by the **rankers** (never by the judges, never on test prompts); the best
# is used below. The `default` profile uses the values the `scratch` profile's sweep chose.
#
# **A DPO that cannot unlearn its winners** (`safeguard`, `drift`; off by default, on in the `beyond`
# profile). DPO's loss falls whenever the loser's error rises faster than the winner's, so both can
# rise together: the winners are unlearned. Diffusion-SDPO (Fu et al. 2025) scales the loser's
# gradient by $\lambda$ so that, to first order, a step cannot raise the winners' error: with
# $e_w, e_l$ the batch's prediction errors on winners and losers,
#
# $$\lambda = \min\Big(1,\ \frac{(1-\mu)\,\lVert e_w\rVert^2}{\langle e_l, e_w\rangle}\Big)\ \text{when}\ \langle e_l, e_w\rangle > 0,\ \text{else}\ 1,\qquad \mu = 0.9 .$$
#
# With `safeguard` the safeguarded DPO trains beside DPO with the same settings and seeds (a claims
# row compares the two); with `drift` plain and safeguarded DPO train once more at `drift_lr`, the
# learning rate at which plain DPO was seen to unlearn its winners, to show the winners' error over
# the steps with and without the safeguard.

# %% tags=["parameters"]
run_dir = "papermill_runs/dev"
profile = "dev"
seed = 0
beta = 2000.0
dpo_steps = 150
sft_first_steps = 0
batch_size = 8
lr = 2e-5
lora_rank = None
n_seeds = 2  # DPO and gold-pair DPO train with this many seeds
sweep_lr = []  # learning rates to try (empty: no sweep)
sweep_beta = []
sweep_steps = []
sweep_prompts = 64  # validation prompts the rankers score each candidate on
with_sft = True  # also train SFT on the ranked winners ("sft": the DPO − SFT row)
with_crpo = True  # also train CRPO, online rounds ("crpo": the CRPO − DPO row)
crpo_rounds = 1
crpo_prompts = 32
crpo_samples = 4
crpo_steps = 40
safeguard = False  # also train DPO with the SDPO winner safeguard ("dpo_safe", n_seeds seeds)
safeguard_mu = 0.9
drift = False  # plain and safeguarded DPO at drift_lr: the winners' error over the steps
drift_lr = 1e-4
sample_steps = 10
guidance = 3.0
eval_output = "audio"
n_boot = 1000
workers = 1  # > 1: fine-tune and sample in that many processes (one thread each on 2 cores)
checkpoint_every = 100  # steps between a fine-tune's checkpoints, from which a killed run resumes

# %%
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Audio, Markdown, display

from t2a_lib.align import dpo, preferences
from t2a_lib.evaluate import claims, evaluation, reproduce
from t2a_lib.model import base_model
from t2a_lib.run import parallel
from t2a_lib.scoring import scorers
from t2a_lib.world.datasets import load_split

run_dir = Path(run_dir)
(run_dir / "figures").mkdir(parents=True, exist_ok=True)
t_start, timings = time.time(), {}
base = base_model.load_run_pipeline(run_dir)
judges, rankers = scorers.load_judges(run_dir), scorers.load_rankers(run_dir)
sched = dpo.make_train_scheduler_like(base)
bank, pairs = dpo.load_preference_pairs(run_dir / "preferences", base.text_encoder, base.tokenizer)
has_gold = (run_dir / "gold" / "preferences.parquet").exists()  # notebook 03 renders them from the world only
gold_bank, gold = dpo.load_preference_pairs(run_dir / "gold", base.text_encoder, base.tokenizer) if has_gold else ([], None)
print(f"{len(bank)} ranked pairs:", pairs.strategy.value_counts().to_dict())
print(f"{len(gold_bank)} gold pairs:", gold.strategy.value_counts().to_dict() if has_gold else
      "none (real data: no world scenes to render), so no gold-pair DPO")
common = dict(batch_size=batch_size, lora_rank=lora_rank, checkpoint_every=checkpoint_every,
              mixed_precision="bf16" if torch.cuda.is_available() else "no")

# %% [markdown]
# ## Choosing the settings on validation prompts, by the rankers

# %%
sweep = None
if sweep_lr or sweep_beta or sweep_steps:
    t0 = time.time()
    val_prompts = preferences.seed_prompts(load_split(run_dir / "world", "val"), sweep_prompts, seed)
    grid = {"lr": sweep_lr, "beta": sweep_beta, "steps": sweep_steps}
    sweep = dpo.sweep(run_dir / "models" / "sweep", base, sched, bank,
                      dpo.DPOConfig(steps=dpo_steps, beta=beta, lr=lr, seed=seed, **common), grid,
                      rankers, val_prompts, sample_steps, guidance)
    chosen = dpo.sweep_choice(sweep)
    lr, beta, dpo_steps = chosen["lr"], chosen["beta"], chosen["steps"]
    timings["sweep"] = time.time() - t0
    display(sweep.style.format(precision=4))
print(f"DPO settings used below: lr {lr:g}, β {beta:g}, {dpo_steps} steps of {batch_size} pairs")

# %% [markdown]
# ## Train: DPO on ranked and on gold pairs, SFT on winners, CRPO
#
# CRPO runs online rounds: each samples `crpo_samples` clips for each of `crpo_prompts` training
# prompts from the current model, pairs the rankers' best with their worst, and trains on them.
# The fine-tunes are independent: with `workers = 2` they train side by side, one thread each
# (`t2a_lib.run.parallel`). A model or seed these parameters do not train (say `s1` after
# `n_seeds = 1`) is moved aside to `superseded-s1`, so notebook 07 and the claims never read it.

# %%
t0 = time.time()
crpo_pool = preferences.seed_prompts(load_split(run_dir / "world", "train"), crpo_prompts, seed + 1)
jobs = {}
for k in range(n_seeds):
    cfg = dpo.DPOConfig(steps=dpo_steps, beta=beta, lr=lr, sft_first_steps=sft_first_steps, seed=seed + k, **common)
    for model_id, pair_set in (("dpo", "preferences"), ("gold", "gold"))[: 2 if has_gold else 1]:
        jobs[model_id, k] = (dpo.fit_from_run, run_dir, reproduce.model_dir(run_dir, model_id, k), cfg, pair_set)
if with_crpo:
    jobs["crpo", 0] = (dpo.fit_crpo_from_run, run_dir, reproduce.model_dir(run_dir, "crpo"), crpo_pool, crpo_rounds,
                       crpo_samples, dpo.DPOConfig(steps=crpo_steps, beta=beta, lr=lr, seed=seed, **common),
                       sample_steps, guidance)
if with_sft:
    jobs["sft", 0] = (dpo.fit_from_run, run_dir, reproduce.model_dir(run_dir, "sft"),
                      dpo.DPOConfig(steps=dpo_steps, lr=lr, loss="sft", seed=seed, **common), "preferences")
guarded = dict(safeguard=True, safeguard_mu=safeguard_mu)
for k in range(n_seeds if safeguard else 0):
    cfg = dpo.DPOConfig(steps=dpo_steps, beta=beta, lr=lr, sft_first_steps=sft_first_steps, seed=seed + k, **common,
                        **guarded)
    jobs["dpo_safe", k] = (dpo.fit_from_run, run_dir, reproduce.model_dir(run_dir, "dpo_safe", k), cfg, "preferences")
for name, extra in (("plain", {}), ("safeguarded", guarded)) if drift else ():
    cfg = dpo.DPOConfig(steps=dpo_steps, beta=beta, lr=drift_lr, seed=seed, **common, **extra)
    jobs[f"drift_{name}", 0] = (dpo.fit_from_run, run_dir, run_dir / "models" / "drift" / name, cfg, "preferences")
reproduce.retire_stale_models(run_dir, ("dpo", "gold", "crpo", "sft", "dpo_safe"), jobs)  # seeds not asked for
histories = parallel.run_fine_tunes(jobs, workers)
crpo_log = histories.pop(("crpo", 0), [])
drift_runs = {m.removeprefix("drift_"): histories.pop((m, k)) for m, k in list(histories) if m.startswith("drift_")}
timings["train"] = time.time() - t0
if crpo_log:
    display(pd.DataFrame([{k: v for k, v in r.items() if k != "history"} for r in crpo_log]).assign(model="CRPO"))

# %%
smooth = lambda s: s.rolling(20, min_periods=1).mean()  # noqa: E731
fig, axes = plt.subplots(1, 3, figsize=(14, 3.2))
for (model_id, k), hist in histories.items():
    if model_id == "sft":
        continue
    h = pd.DataFrame(hist)
    h = h[h.phase == 1]
    label = f"{claims.MODEL_NAMES[model_id]}, seed {k}"
    axes[0].plot(smooth(h.dpo_loss), label=label)
    axes[1].plot(smooth(h.implicit_acc), label=label)
    axes[2].plot(smooth(h.mse_w - h.ref_w), label=f"{label}: winner")
    axes[2].plot(smooth(h.mse_l - h.ref_l), linestyle="--", label=f"{label}: loser")
axes[0].axhline(np.log(2), color="k", linestyle=":")
axes[0].set(title="DPO loss (dotted: ln 2, policy = reference)", xlabel="step")
axes[1].axhline(0.5, color="k", linestyle=":")
axes[1].set(title="implicit accuracy", xlabel="step", ylim=(0, 1))
axes[2].axhline(0, color="k", linestyle=":")
axes[2].set(title="errors relative to the reference", xlabel="step")
for ax in axes:
    ax.legend(fontsize=6)
fig.tight_layout()
fig.savefig(run_dir / "figures" / "04_dpo_training.png", dpi=90)
plt.show()

# %% [markdown]
# ## The winners' error with and without the safeguard, at the learning rate that broke plain DPO
#
# With `drift`: plain and safeguarded DPO at `drift_lr`, same pairs, seed and steps. Left, the
# winners' error relative to the reference's on the same inputs, $m^w_\theta / m^w_\text{ref} - 1$
# (above zero: the winners are being unlearned); middle, the same for the losers; right, the
# safeguard's loser scale $\lambda$ (1 for plain DPO).

# %%
drift_summary = {}
if drift_runs:
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.2))
    for name, hist in drift_runs.items():
        h = pd.DataFrame(hist)
        axes[0].plot(smooth(h.mse_w / h.ref_w - 1), label=f"{name} DPO, lr {drift_lr:g}")
        axes[1].plot(smooth(h.mse_l / h.ref_l - 1), label=f"{name} DPO, lr {drift_lr:g}")
        axes[2].plot(smooth(h.loser_scale), label=f"{name} DPO")
        tail = h.tail(20)
        drift_summary[name] = {"lr": drift_lr, "winner_drift": float((tail.mse_w / tail.ref_w - 1).mean()),
                               "loser_drift": float((tail.mse_l / tail.ref_l - 1).mean()),
                               "mse_w": float(tail.mse_w.mean()), "ref_w": float(tail.ref_w.mean()),
                               "dpo_loss": float(tail.dpo_loss.mean()), "loser_scale": float(tail.loser_scale.mean())}
    for ax, title in zip(axes, ("winners' error / reference's − 1", "losers' error / reference's − 1",
                                "loser-gradient scale λ")):
        ax.axhline(0 if "error" in title else 1, color="k", linestyle=":")
        ax.set(title=title, xlabel="step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run_dir / "figures" / "04_dpo_drift.png", dpi=90)
    plt.show()
    display(pd.DataFrame(drift_summary).T.style.format(precision=4))

# %% [markdown]
# ## Evaluate: every model on the run's held-out prompts, judged by the judges
#
# Every model samples the evaluation set of notebook 02 with the same seed, so differences are
# paired (same prompt, same noise). Models with several seeds are pooled; the claims that these
# models answer are shown with each seed's effect beside the pooled one (notebook 07 answers the
# rest). On real data without timelines the judge is the run's real CLAP (notebook 01): the CLAP
# rows are measured, and the rows that need the world's presence and order judges say why not.

# %%
t0 = time.time()
fine_tuned = ["dpo"] + ["gold"] * has_gold + ["sft"] * with_sft + ["crpo"] * with_crpo + ["dpo_safe"] * safeguard
judged, samples = evaluation.evaluate_models(run_dir, base, judges, fine_tuned, "tango", sample_steps, guidance,
                                            eval_output, workers)
tables = {m: [j.table for j in js] for m, js in judged.items()}
timings["evaluation"] = time.time() - t0
here = [c for c in claims.CLAIMS if c.prompts == "tango" and c.model in tables and c.baseline in tables
        and not c.metric.startswith(claims.GAP_PREFIX)]  # the ranker-judge gap rows: notebook 07
answered = claims.answer_all({"tango": tables}, here, n_boot=n_boot, seed=seed)
print("measured:", ", ".join(c for c in ("presence", "all_present", "order", "clap") if c in tables["base"][0]))
# a preview: Holm's adjustment here runs over these rows only; notebook 07 adjusts over each whole family
display(answered.reindex(columns=["claim", "measure", "n", "seeds", "ours", "prompt-only interval", "per seed", "p",
                                  "adjusted p", "MDE", "continuous", "verdict", "why"]).dropna(axis=1, how="all"))

# %%
claims.plot_effects(answered, "Paired effects on held-out prompts (judges; 95% intervals over prompts and seeds)",
                    run_dir / "figures" / "04_effects.png")
plt.show()

# %% [markdown]
# ## Before and after: listen
#
# Temporal prompts where the judges' verdicts differ between the base model and DPO on gold pairs.

# %%
base_t = tables["base"][0]
gold_t = tables["gold"][0] if "gold" in tables else base_t  # (no gold pairs: nothing changed)
changed = np.flatnonzero((base_t.order.fillna(-1) != gold_t.order.fillna(-1)).to_numpy())[:3] if "order" in base_t else []
for i in changed:
    display(Markdown(f"**{base_t.caption[i]}**"))
    for model_id in ("base", "dpo", "gold"):
        row = tables[model_id][0].iloc[i]
        display(Markdown(f"*{claims.MODEL_NAMES[model_id]}* — judge hears {', '.join(row.detected) or 'nothing'}; "
                         f"in order: {bool(row.order)}"))
        display(Audio(evaluation.to_audio(samples[model_id][0][i], base.vocoder), rate=16000))

# %% [markdown]
# ## Figures for the report

# %%
final = {f"{m}/s{k}": {c: float(pd.DataFrame(h)[c].tail(20).mean()) for c in
                       ("dpo_loss", "implicit_acc", "mse_w", "mse_l", "ref_w", "ref_l")}
         for (m, k), h in histories.items() if m != "sft"}
results = {
    "profile": profile,
    "pairs": {"ranked": len(bank), "gold": len(gold_bank)},
    "settings": {"lr": lr, "beta": beta, "steps": dpo_steps, "batch_size": batch_size, "seeds": n_seeds,
                 "safeguard": safeguard, "safeguard_mu": safeguard_mu},
    "drift": drift_summary,
    "sweep": None if sweep is None else json.loads(sweep.to_json(orient="records")),
    "dpo_final": final,
    "crpo": [{k: v for k, v in r.items() if k != "history"} for r in crpo_log],
    "effects": json.loads(answered.to_json(orient="records")),
    "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
    "wall_seconds": round(time.time() - t_start, 1),
}
(run_dir / "04_dpo.json").write_text(json.dumps(results, indent=2, default=float))
answered[["claim", "measure", "ours", "verdict"]]
