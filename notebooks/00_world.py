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
# # 00 · The sound world: audio with ground truth
#
# Tango 2 and BATON both try to fix the same failure of text-to-audio models: a prompt names
# events ("a dog barks, **then** a siren wails") and the model drops one, or plays them in the
# wrong order. To measure that, you need to know what is *really* in a clip and when. AudioCaps
# cannot tell you; the papers fall back on CLAP, a learned proxy that also ranks their training
# pairs.
#
# This notebook builds a **procedural sound world** where the answer is known. Twelve
# parametric synthesisers (bark, siren, bell, rain, ticking clock, bird chirp, engine hum,
# whistle, knock, beep, wind, drum), each with per-instance randomness, are placed on a
# timeline. A clip with events $k = 1..K$ (class $c_k$, onset $\tau_k$, duration $d_k$,
# gain $g_k$) is
#
# $$x(t) = \sum_{k=1}^{K} g_k\, s_{c_k}(t-\tau_k;\,\theta_k)\,\mathbb{1}[\tau_k \le t < \tau_k+d_k] \;+\; \sigma\, n(t),$$
#
# with $\theta_k$ the instance's random parameters (pitch, timbre, rate) and $\sigma n(t)$ a
# faint noise floor. Every clip gets an AudioCaps-style caption from a grammar with synonyms and
# relations: *then*, *followed by*, *before*, *after* (word order ≠ time order), *while* and
# *in the background*. The same grammar perturbs captions (swap, drop, add, reorder an event),
# which later stands in for Tango 2's GPT-4 perturbations.
#
# Splits are made by a hash of the caption text, so **no caption appears in two splits**. Held out
# by wording is not held out by content: a test prompt can ask for the same ordered events as a
# training caption in other words. The statistics below count the temporal test prompts whose
# ordered events no training caption asks for (`t2a_lib.world.overlap`); notebook 07 measures the
# methods on that subset too.

# %% tags=["parameters"]
run_dir = "papermill_runs/dev"
profile = "dev"
seed = 0
n_train = 200
n_val = 40
n_test = 40
clip_seconds = 2.56
workers = 2
n_listen = 4
external_manifests = None  # {"train": path, "val": path, "test": path}: use real data instead
audio_root = None  # with external_manifests: where their clips are when a location is not found (e.g. Tango's /data/deep/...)

# %%
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Audio, Markdown, display

from t2a_lib.audio.mel import log_mel
from t2a_lib.audio.wav import read_wav
from t2a_lib.world import captions, datasets, overlap, scenes

run_dir = Path(run_dir)
(run_dir / "figures").mkdir(parents=True, exist_ok=True)
world_dir = run_dir / "world"

# %% [markdown]
# ## Build the splits
#
# Scenes and captions are drawn first (cheap), assigned to a split by caption hash, then
# rendered in parallel and written as 16 kHz wavs plus Tango-format JSON-lines manifests with
# the timeline attached. A second run with the same parameters finds the cached world.

# %%
t0 = time.time()
if external_manifests:
    info = datasets.use_external(world_dir, external_manifests, audio_root)  # every row checked; later stages read these
else:
    config = scenes.WorldConfig(clip_seconds=clip_seconds)
    info = datasets.build_world(world_dir, n_train, n_val, n_test, seed=seed, config=config, workers=workers)
splits = {s: datasets.load_split(world_dir, s) for s in datasets.SPLITS}
wall = time.time() - t0
print(f"{sum(len(r) for r in splits.values())} clips ready in {wall:.1f} s "
      f"(built in {info.get('build_seconds', 0)} s)")

# %% [markdown]
# ## What is in it
#
# Relation kinds and classes per split. Multi-event clips are oversampled on purpose: order is
# the hard part for a model, and the part the papers target.

# %%
rows = []
for split, recs in splits.items():
    for r in recs:
        rows.append({"split": split, "relation": r.relation or "unknown", "n_events": len(r.events or []),
                     "caption": r.captions})
df = pd.DataFrame(rows)
relation_table = pd.crosstab(df.relation, df.split)
display(relation_table)
class_rows = [{"split": s, "class": e["label"]} for s, recs in splits.items() for r in recs for e in (r.events or [])]
class_table = pd.crosstab(pd.DataFrame(class_rows)["class"], pd.DataFrame(class_rows)["split"]) if class_rows else pd.DataFrame()
display(class_table)

split_captions = {s: [r.captions for r in recs] for s, recs in splits.items()}
leaks = {f"{a}&{b}": len(overlap.text_leaks(split_captions[b], split_captions[a]))
         for a, b in [("train", "val"), ("train", "test"), ("val", "test")] if a in splits and b in splits}
print("captions shared between splits (normalised text):", leaks)
assert not any(leaks.values()), "caption leakage between splits"
held_out = overlap.overlap_report(split_captions.get("test", []), split_captions.get("train", []))
print("temporal test prompts by what they ask for:", held_out)

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
relation_table.plot.bar(ax=axes[0], title="relation kinds per split")
if not class_table.empty:
    class_table.plot.bar(ax=axes[1], title="event classes per split")
for ax in axes:
    ax.tick_params(axis="x", labelrotation=45)
fig.tight_layout()
fig.savefig(run_dir / "figures" / "00_world_statistics.png", dpi=100)
plt.show()

# %% [markdown]
# ## Look and listen
#
# Log-mel spectrograms in Tango's front end (16 kHz, window 1024, hop 160, 64 mels, 0–8 kHz,
# $\log \max(\cdot, 10^{-5})$) with the ground-truth timeline drawn over them. Note the
# captions whose word order is not the time order ("… *after* …").

# %%
examples = splits["train"][: max(n_listen, 1) * 2]
fig, axes = plt.subplots(len(examples), 1, figsize=(10, 2.2 * len(examples)), squeeze=False)
hop_s = 160 / 16000
colors = plt.cm.tab20(np.linspace(0, 1, len(scenes.CLASSES)))
for ax, rec in zip(axes[:, 0], examples):
    audio = read_wav(rec.location)
    mel = log_mel(audio)
    ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=[0, mel.shape[1] * hop_s, 0, mel.shape[0]])
    for j, ev in enumerate(rec.events or []):
        c = colors[scenes.CLASSES.index(ev["label"])] if ev["label"] in scenes.CLASSES else "w"
        y = 56 - 8 * j
        ax.hlines(y, ev["onset"], ev["offset"], color=c, linewidth=5)
        ax.text(ev["onset"], y + 2, ev["label"], color="white", fontsize=8)
    ax.set_title(rec.captions, fontsize=9)
    ax.set_ylabel("mel bin")
axes[-1, 0].set_xlabel("time (s)")
fig.tight_layout()
fig.savefig(run_dir / "figures" / "00_world_spectrograms.png", dpi=90)
plt.show()

# %%
for rec in examples[:n_listen]:
    display(Markdown(f"**{rec.captions}** — " + ", ".join(
        f"{e['label']} {e['onset']:.2f}–{e['offset']:.2f} s" for e in rec.events or [])))
    display(Audio(read_wav(rec.location), rate=16000))

# %% [markdown]
# ## The grammar reads its own captions back, and perturbs them
#
# `parse_caption` recovers the events and the relation from a caption; `time_order` says in
# which order they should sound. Perturbations change exactly one thing: the losers of
# Tango 2's strategies S2 (concepts) and S3 (temporal: reorder, add, drop).

# %%
rng = np.random.default_rng(seed)
demo = captions.perturbation_demo([r.captions for r in splits["train"][:40]], rng)
display(pd.DataFrame(demo))

# %% [markdown]
# ## Figures for the report

# %%
parsed = sum(1 for recs in splits.values() for r in recs if captions.parse_caption(r.captions)) if not external_manifests else None
results = {
    "profile": profile,
    "sizes": {s: len(r) for s, r in splits.items()},
    "wall_seconds": round(wall, 2),
    "build_seconds": info.get("build_seconds"),
    "relations": {k: int(v) for k, v in df.relation.value_counts().items()},
    "unique_captions": {s: int(df[df.split == s].caption.nunique()) for s in splits},
    "caption_leaks": leaks,
    "held_out_content": held_out,
    "captions_parsed": parsed,
}
(run_dir / "00_world.json").write_text(json.dumps(results, indent=2))
results
