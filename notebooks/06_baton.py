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
# both (**HD+RD**, BATON's best). HD and HD+RD train with `n_seeds` seeds. Judged on the run's
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
n_seeds = 2  # HD and HD+RD train with this many seeds (RD with one)
sample_steps = 10
guidance = 3.0
eval_output = "audio"
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

from t2a_lib import base_model, baton, claims, dpo, evaluation, reproduce, scorers
from t2a_lib.autoencoder import encode_mels
from t2a_lib.features import split_mels
from t2a_lib.manifest import read_manifest

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
runs = {}
for name, (lat, text, r, _) in sets.items():
    model_id = {"HD": "baton_hd", "RD": "baton_rd", "HD+RD": "baton_hd_rd"}[name]
    for k in range(1 if name == "RD" else n_seeds):
        t0 = time.time()
        cfg = baton.BatonConfig(steps=steps, batch_size=batch_size, pretrain_batch_size=pretrain_batch_size, lr=lr,
                                beta=beta, seed=seed + k, mixed_precision="bf16" if torch.cuda.is_available() else "no")
        runs[model_id, k] = baton.fit_baton_model(reproduce.model_dir(run_dir, model_id, k), base.unet, sched,
                                                  pre_latents, pre_text, lat, text, r, cfg)
        timings[f"{model_id}/s{k}"] = time.time() - t0

fig, ax = plt.subplots(figsize=(8, 3))
for (model_id, k), (_, hist) in runs.items():
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
tables, samples = {}, {}
for model_id, unets in {"base": [base.unet], **{m: u for m, u in reproduce.load_models(run_dir).items()
                                                if m.startswith("baton")}}.items():
    for unet in unets:
        judged, mels = evaluation.evaluate_on(dpo.with_unet(base, unet), judges, run_dir, "baton", sample_steps,
                                              guidance, output=eval_output)
        tables.setdefault(model_id, []).append(judged.table)
        samples.setdefault(model_id, []).append(mels)
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
    "sets": {k: {"clips": len(v[0]), "mean_reward": float(v[2].mean())} for k, v in sets.items()},
    "effects": json.loads(answered.to_json(orient="records")),
    "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
    "wall_seconds": round(time.time() - t_start, 1),
}
(run_dir / "06_baton.json").write_text(json.dumps(figures, indent=2, default=float))
answered[["claim", "measure", "ours", "verdict"]]
