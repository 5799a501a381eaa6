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
# # 05 · BATON: label generated audio, train a reward model
#
# BATON asks people one yes/no question per generated clip:
#
# - **Integrity** (two-event prompts): *are both events present?*
# - **Temporal** (three-event prompts): *are the events in this order?*
#
# It then fits a **reward model** on the answers, frozen CLAP audio and text embeddings
# concatenated and passed through an MLP:
#
# $$r_\phi(x, c) = \sigma\big(\mathrm{MLP}_\phi([\,a(x)\,;\,e(c)\,])\big),\qquad
#   \mathcal{L}_\text{BCE} = -\big[y \log r_\phi + (1-y)\log(1-r_\phi)\big],$$
#
# and uses it to label more audio (notebook 06 fine-tunes on both). Here $a$, $e$ are the
# *ranker* audio-text model's embeddings (its own sample rate, each clip against its own
# caption — BATON's scorer fed 16 kHz audio to a 48 kHz CLAP and scored audio against the
# sample index).
#
# **In a workshop** set `interactive = True` and your name as `labeller`, and label in the
# widgets below, one per question (yes / no / skip / undo, or the keys y / n / s / u with the
# mouse over the widget; every answer is written to disk at once and a restarted kernel resumes).
# Or let everyone label in their own browser with `make workshop` (no code to touch): both write
# to `<run_dir>/workshop/people/`, and the merge cell takes every person's answers, question by
# question. **Under papermill** simulated annotators answer from the ranker family's event
# detector, with 10% of answers flipped.

# %% tags=["parameters"]
run_dir = "papermill_runs/dev"
profile = "dev"
seed = 0
n_integrity = 60
n_temporal = 60
samples_per_prompt = 4
n_rd_prompts = 60
sample_steps = 10
guidance = 3.0
annotator_flip = 0.1
interactive = False
labeller = "simulated"
rm_epochs = 60
rm_lr = 1e-3
held_out = 0.25
n_boot = 1000
baton_hd_file = None  # BATON's released human labels (data/HA/*_HA.json) instead of labelling generated clips
baton_rd_file = None  # BATON's released reward-model labels (data/RM/*_RA.json) instead of the RD set made here
baton_root = None  # the folder holding the Baton checkout: relative locations (Baton/data/Audio/...) are taken from it

# %%
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Audio, Markdown, display

from t2a_lib.audio.features import waves_to_mel, load_waves
from t2a_lib.audio.manifest import ManifestRecord, read_manifest
from t2a_lib.evaluate import evaluation
from t2a_lib.feedback import label_items, released, reward, widgets
from t2a_lib.feedback.labels import merge_feedback
from t2a_lib.model import base_model
from t2a_lib.scoring import metrics, scorers

run_dir = label_items.resolve_run_dir(run_dir)  # the same folder from the repository root and from notebooks/
baton_dir = run_dir / "baton"
baton_dir.mkdir(parents=True, exist_ok=True)
(run_dir / "figures").mkdir(parents=True, exist_ok=True)
t_start, timings = time.time(), {}
pipe = base_model.load_run_pipeline(run_dir)
rankers = scorers.load_rankers(run_dir)

# %% [markdown]
# ## Prompts and samples
#
# Prompts come from the world grammar, phrased freely ("…, then …", "… followed by …",
# "… while …", "… with … in the background"). None of them is one of the run's BATON
# evaluation prompts (written by notebook 02, `eval/baton.parquet`).
#
# **BATON's released labels.** With `baton_hd_file` (and `baton_rd_file`) the clips and answers
# are BATON's own, read as published (`t2a_lib.feedback.released`; a relative location such as
# `Baton/data/Audio/...` is taken from `baton_root`, the folder holding the Baton checkout): each clip is encoded by the base
# model's VAE, so notebook 06 fine-tunes on them as on clips generated here, and nobody (no
# simulated annotator either) labels anything.

# %%
t0 = time.time()
eval_prompts = set(evaluation.load_eval_set(run_dir, "baton").prompt)
if baton_hd_file:
    hd = released.import_feedback(baton_hd_file, baton_dir / "hd", pipe.vae, baton_root)
    hd_prompts = hd[["task", "caption"]].drop_duplicates()
    print(f"{len(hd)} clips with BATON's human labels from {baton_hd_file}")
else:
    hd_prompts = reward.baton_prompts(n_integrity, n_temporal, seed=seed, exclude=eval_prompts)
    hd = reward.sample_set(pipe, hd_prompts, samples_per_prompt, sample_steps, guidance, seed, baton_dir / "hd")
timings["generate_hd"] = time.time() - t0
display(hd[["task", "caption"]].drop_duplicates().groupby("task").head(3))

# %% [markdown]
# ## Labels

# %%
labels_path = baton_dir / f"hd_labels_{labeller}.jsonl"
records = [ManifestRecord(dataset="world-baton", location=r.location, captions=r.caption, id=r.id)
           for r in hd.itertuples()]
if interactive:  # one widget per question, writing to <run_dir>/workshop/people/<labeller>/ (as `make workshop` does)
    for task, ui in widgets.feedback_labellers_from_run(run_dir, labeller).items():
        display(Markdown(f"### {task}: {ui.question}"), ui.widget)
elif baton_hd_file:  # the released answers, in this run's label file (with the clips' ids)
    reward.write_feedback(labels_path, hd.location.tolist(), hd.caption.tolist(), hd.feedback.tolist(), hd.id.tolist())
else:
    annotator = reward.SimulatedAnnotator(rankers.detector, flip=annotator_flip, seed=seed)
    hd["feedback"] = annotator.label(waves_to_mel(load_waves(records)), hd)
    reward.write_feedback(labels_path, hd.location.tolist(), hd.caption.tolist(), hd.feedback.tolist(), hd.id.tolist())

# %% [markdown]
# When people labelled interactively, run the cell below after labelling: it merges everyone's
# answers in `<run_dir>/workshop/` (the widgets' and the workshop pages'), each question apart
# (majority vote; a tie stays undecided and is left out; agreement and Cohen's/Fleiss' kappa
# reported), and keeps the clips with a decided label.

# %%
if interactive:
    merged = merge_feedback(widgets.workshop_dir(run_dir))  # {task: (labels, agreement)}
    for task, (m, agreement) in merged.items():
        print(f"{task}: {len(agreement['labellers'])} labeller(s), {int(m.feedback.notna().sum())} decided, "
              f"mean Cohen's kappa {agreement['mean_cohen_kappa']:.2f}, Fleiss' kappa {agreement['fleiss_kappa']:.2f}")
    decided = pd.concat([m[["id", "feedback"]] for m, _ in merged.values()] or [pd.DataFrame(columns=["id", "feedback"])])
    hd = hd.merge(decided.dropna(subset=["feedback"]), on="id", how="inner")  # hd's order is kept
    by_id = {r.id: r for r in records}
    records = [by_id[i] for i in hd.id]
    if hd.caption.nunique() < 2:
        raise RuntimeError(f"{len(hd)} labelled clip(s) of {hd.caption.nunique()} prompt(s) in {widgets.workshop_dir(run_dir)}: "
                           "label clips of at least two prompts above (or on the `make workshop` pages), then run this cell again")
    reward.write_feedback(labels_path, hd.location.tolist(), hd.caption.tolist(), hd.feedback.tolist(), hd.id.tolist())
labels = read_manifest(labels_path, kind="feedback")  # the BATON file round-trips through the reader
print(f"{len(labels)} labelled clips; positive share by task:", hd.groupby("task").feedback.mean().round(3).to_dict())

# %% [markdown]
# ## The reward model
#
# Held out **by prompt** (no prompt on both sides). Compared with the majority-class baseline.

# %%
t0 = time.time()
a_emb, t_emb = released.embed_clips(rankers, records, hd.caption.tolist())  # a real CLAP's on real data
test_mask = reward.split_by_prompt(hd.caption.tolist(), held_out, seed)
y = hd.feedback.to_numpy()
rm, rm_losses = reward.train_reward_model(a_emb[~test_mask], t_emb[~test_mask], y[~test_mask], epochs=rm_epochs,
                                          lr=rm_lr, seed=seed)
scores_test = reward.reward(rm, a_emb[test_mask], t_emb[test_mask])
timings["reward_model"] = time.time() - t0
y_test = y[test_mask].astype(bool)
majority = float(max(y[~test_mask].mean(), 1 - y[~test_mask].mean()))
majority_label = y[~test_mask].mean() >= 0.5
acc = float(((scores_test >= 0.5) == y_test).mean())
auc = reward.roc_auc(y_test, scores_test)
auc_ci = reward.auc_ci(y_test, scores_test, n_boot=n_boot, seed=seed)  # stratified: no resample loses a class
acc_ci = metrics.bootstrap_ci(((scores_test >= 0.5) == y_test).astype(float), n_boot=n_boot, seed=seed)
base_acc = float((y_test == majority_label).mean())
rm_table = pd.DataFrame({"held-out accuracy": [f"{acc_ci[0]:.3f} [{acc_ci[1]:.3f}, {acc_ci[2]:.3f}]"],
                         "majority-class accuracy": [f"{base_acc:.3f}"],
                         "AUC": [f"{auc_ci[0]:.3f} [{auc_ci[1]:.3f}, {auc_ci[2]:.3f}]"],
                         "held-out clips": [int(test_mask.sum())]})
display(rm_table)

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.4))
axes[0].plot(np.convolve(rm_losses, np.ones(20) / 20, mode="valid"))
axes[0].set(title="reward model: training BCE", xlabel="step")
order = np.argsort(-scores_test)
tpr = np.cumsum(y_test[order]) / max(1, y_test.sum())
fpr = np.cumsum(~y_test[order]) / max(1, (~y_test).sum())
axes[1].plot(np.r_[0, fpr], np.r_[0, tpr], label=f"AUC {auc:.3f}")
axes[1].plot([0, 1], [0, 1], "k:")
axes[1].set(title="ROC on held-out prompts", xlabel="false positive rate", ylabel="true positive rate")
axes[1].legend()
bins = np.linspace(0, 1, 6)
which = np.clip(np.digitize(scores_test, bins) - 1, 0, 4)
centres = [scores_test[which == b].mean() for b in range(5) if (which == b).any()]
rates = [y_test[which == b].mean() for b in range(5) if (which == b).any()]
axes[2].plot(centres, rates, "o-", label="reward model")
axes[2].plot([0, 1], [0, 1], "k:", label="perfect calibration")
axes[2].set(title="calibration (held-out)", xlabel="predicted reward", ylabel="share labelled yes")
axes[2].legend()
fig.tight_layout()
fig.savefig(run_dir / "figures" / "05_reward_model.png", dpi=90)
plt.show()

# %% [markdown]
# ## Reward-model labels for more audio (BATON's RD set)
#
# New prompts, new samples, scored by the reward model: written in the anchors' RM format
# (the score under `SED`).

# %%
t0 = time.time()
if baton_rd_file:  # BATON's reward model's scores, as released
    rd = released.import_feedback(baton_rd_file, baton_dir / "rd", pipe.vae, baton_root)
else:
    rd_prompts = reward.baton_prompts(n_rd_prompts // 2, n_rd_prompts - n_rd_prompts // 2, seed=seed + 1,
                                      exclude=set(hd_prompts.caption) | eval_prompts)
    rd = reward.sample_set(pipe, rd_prompts, samples_per_prompt, sample_steps, guidance, seed + 1, baton_dir / "rd")
    rd_records = [ManifestRecord("world-baton", loc, cap) for loc, cap in zip(rd.location, rd.caption)]
    rd["feedback"] = reward.reward(rm, *released.embed_clips(rankers, rd_records, rd.caption.tolist()))
reward.write_feedback(baton_dir / "rd_labels.jsonl", rd.location.tolist(), rd.caption.tolist(), rd.feedback.tolist(),
                      rd.id.tolist(), field="SED")
timings["generate_and_label_rd"] = time.time() - t0
print(f"{len(rd)} RD clips; mean reward {rd.feedback.mean():.3f}; read back:",
      len(read_manifest(baton_dir / "rd_labels.jsonl", kind="feedback")))
best, worst = rd.feedback.idxmax(), rd.feedback.idxmin()
for name, i in (("highest reward", best), ("lowest reward", worst)):
    display(Markdown(f"*{name}* ({rd.feedback[i]:.3f}): **{rd.caption[i]}**"), Audio(rd.location[i], rate=16000))

# %%
results = {
    "profile": profile,
    "hd_clips": len(hd), "rd_clips": len(rd),
    "positive_share": hd.groupby("task").feedback.mean().to_dict(),
    "reward_model": {"accuracy": acc_ci, "majority_baseline": base_acc, "auc": auc_ci, "held_out": int(test_mask.sum())},
    "rd_mean_reward": float(rd.feedback.mean()),
    "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
    "wall_seconds": round(time.time() - t_start, 1),
}
if baton_hd_file or baton_rd_file:
    results["released_labels"] = {"hd": baton_hd_file, "rd": baton_rd_file}
(run_dir / "05_feedback.json").write_text(json.dumps(results, indent=2, default=float))
rm_table
