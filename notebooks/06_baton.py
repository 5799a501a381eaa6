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
# both (**HD+RD**, BATON's best). Judged on new Integrity and Temporal prompts: presence on
# Integrity, order on Temporal.

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
eval_integrity = 60
eval_temporal = 60
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
from safetensors.torch import load_file

from t2a_lib import base_model, baton, dpo, evaluation, reward, scorers
from t2a_lib.autoencoder import encode_mels
from t2a_lib.features import split_mels
from t2a_lib.manifest import read_manifest
from t2a_lib.scorers import judge_clips
from t2a_lib.features import waves_to_mel

run_dir = Path(run_dir)
baton_dir, models_dir = run_dir / "baton", run_dir / "models"
(run_dir / "figures").mkdir(parents=True, exist_ok=True)
t_start, timings = time.time(), {}
base = base_model.load_pipeline(run_dir / "base" / "pipeline")
judges = scorers.load_judges(run_dir)
sched = dpo.make_train_scheduler_like(base)

# %% [markdown]
# ## Data: pre-training clips, HD labels, RD scores

# %%
train_mels, train_recs = split_mels(run_dir / "world" / "train.jsonl")
pick = np.random.default_rng(seed).permutation(len(train_recs))[:n_pretrain]
pre_latents = encode_mels(base.vae, train_mels[pick])
pre_text = base_model.text_bank(base.text_encoder, base.tokenizer, [train_recs[i].captions for i in pick])


def feedback_set(name, labels_file):
    clips = pd.read_parquet(baton_dir / name / "clips.parquet")
    fb = {r.id: r.feedback for r in read_manifest(baton_dir / labels_file, kind="feedback")}
    clips = clips[clips.id.isin(fb)].reset_index(drop=True)
    lat = load_file(baton_dir / name / "latents.safetensors")
    return (torch.stack([lat[i] for i in clips.id]),
            base_model.text_bank(base.text_encoder, base.tokenizer, clips.caption.tolist()),
            torch.tensor([fb[i] for i in clips.id], dtype=torch.float32), clips)


hd_label_file = sorted(p.name for p in baton_dir.glob("hd_labels_*.jsonl") if not p.name.endswith(".events.jsonl"))[0]
hd = feedback_set("hd", hd_label_file)
rd = feedback_set("rd", "rd_labels.jsonl")
sets = {"HD": hd, "RD": rd,
        "HD+RD": (torch.cat([hd[0], rd[0]]),
                  base_model.text_bank(base.text_encoder, base.tokenizer, hd[3].caption.tolist() + rd[3].caption.tolist()),
                  torch.cat([hd[2], rd[2]]), pd.concat([hd[3], rd[3]], ignore_index=True))}
print({k: {"clips": len(v[0]), "mean reward": round(float(v[2].mean()), 3)} for k, v in sets.items()})

# %% [markdown]
# ## Fine-tune: HD, RD, HD+RD

# %%
cfg = baton.BatonConfig(steps=steps, batch_size=batch_size, pretrain_batch_size=pretrain_batch_size, lr=lr, beta=beta,
                        seed=seed, mixed_precision="bf16" if torch.cuda.is_available() else "no")
runs = {}
for name, (lat, text, r, _) in sets.items():
    t0 = time.time()
    runs[f"BATON {name}"] = baton.fit_baton_model(models_dir / f"baton_{name.lower().replace('+', '_')}", base.unet,
                                                  sched, pre_latents, pre_text, lat, text, r, cfg)
    timings[f"baton_{name}"] = time.time() - t0

fig, ax = plt.subplots(figsize=(8, 3))
for name, (_, hist) in runs.items():
    h = pd.DataFrame(hist)
    ax.plot(h.feedback.rolling(20, min_periods=1).mean(), label=f"{name}: mean r·ℓ")
ax.set(title="feedback term during fine-tuning", xlabel="step", yscale="log")
ax.legend()
plt.show()

# %% [markdown]
# ## Evaluate on new Integrity and Temporal prompts (judges only)

# %%
t0 = time.time()
used = set(hd[3].caption) | set(rd[3].caption)
eval_prompts = reward.baton_prompts(eval_integrity, eval_temporal, seed=seed + 99, exclude=used)
captions = eval_prompts.caption.tolist()
tables, audio = {}, {}
for name, unet in [("base", base.unet)] + [(k, v[0]) for k, v in runs.items()]:
    audio[name] = evaluation.generate(dpo.with_unet(base, unet), captions, seed + 7, sample_steps, guidance,
                                      progress=False, cache_dir=run_dir / "samples")
    t = judge_clips(judges, waves_to_mel(audio[name]), captions).table
    t["task"] = eval_prompts.task.to_numpy()
    tables[name] = t
timings["evaluation"] = time.time() - t0
effects = evaluation.paired_effects(
    tables, "base", metrics=("presence", "all_present", "order", "clap"),
    subsets={"Integrity": lambda t: t.task == "integrity", "Temporal": lambda t: t.task == "temporal"},
    n_boot=n_boot, seed=seed)
key = effects[((effects.subset == "Integrity") & (effects.metric == "all_present")) |
              ((effects.subset == "Temporal") & (effects.metric == "order"))]
display(key)

# %%
fig, ax = plt.subplots(figsize=(9, 3.2))
labels = [f"{r.model}\n{r.subset}: {r.metric}" for r in key.itertuples()]
ax.errorbar(range(len(key)), key.difference, yerr=[key.difference - key.low, key.high - key.difference], fmt="o", capsize=3)
ax.axhline(0, color="k", linestyle=":")
ax.set_xticks(range(len(key)), labels, fontsize=7)
ax.set(title="BATON: change over the base model (judges; paired 95% CIs)")
fig.tight_layout()
fig.savefig(run_dir / "figures" / "06_baton_effects.png", dpi=90)
plt.show()

# %%
i = int(np.argmax(eval_prompts.task.to_numpy() == "temporal"))
display(Markdown(f"**{captions[i]}**"))
for name in tables:
    display(Markdown(f"*{name}* — judge hears {', '.join(tables[name].detected[i]) or 'nothing'}"), Audio(audio[name][i], rate=16000))

# %%
figures = {
    "profile": profile,
    "sets": {k: {"clips": len(v[0]), "mean_reward": float(v[2].mean())} for k, v in sets.items()},
    "effects": json.loads(effects.to_json(orient="records")),
    "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
    "wall_seconds": round(time.time() - t_start, 1),
}
(run_dir / "06_baton.json").write_text(json.dumps(figures, indent=2, default=float))
key
