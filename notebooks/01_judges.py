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
# # 01 · Judges and rankers: scorers we can trust, and metrics that move the right way
#
# Tango 2 ranks its training pairs with CLAP **and** grades the result with CLAP. A model
# optimised against a scorer learns that scorer's blind spots, and the same scorer cannot
# see them. So this suite keeps two independent families:
#
# | family | used for | audio trunk | text encoder | seeds |
# |---|---|---|---|---|
# | **rankers** | inside the methods: ranking pairs, reward-model features, simulated annotators | 1-D conv + BiGRU | Transformer | 0, 1, 2 (an ensemble of two audio-text models, as Tango 2 used) |
# | **judges** | evaluation only | dilated temporal CNN (no recurrence) | BiGRU | 1000, 1001 |
#
# Each family has an **event detector**, trained frame by frame on the world's exact
# timelines with binary cross-entropy over $T'$ frames and $C$ classes,
#
# $$\mathcal{L}_\text{SED} = -\frac{1}{T'C}\sum_{t,c} \big[y_{tc}\log\sigma(z_{tc}) + (1-y_{tc})\log(1-\sigma(z_{tc}))\big],$$
#
# and a **CLAP-style audio-text model**, trained contrastively with *hard negatives*: each
# caption brings its reordered twin ("a siren wails, then a dog barks" for "a dog barks, then
# a siren wails"), which competes only against its own clip:
#
# $$\mathcal{L}_\text{CLAP} = \tfrac12\Big[\mathrm{CE}\big(s\,A\,[T;H]^\top,\ I\big) + \mathrm{CE}\big(s\,T A^\top,\ I\big)\Big],$$
#
# with $A$, $T$, $H$ the unit-norm audio, caption and twin embeddings of a batch and $s$ a
# learned inverse temperature. Without $H$ a contrastive model learns *which* events occur
# and ignores *when*. The audio embedding pools four stretches of time separately so "early"
# and "late" stay readable.

# %% tags=["parameters"]
run_dir = "papermill_runs/dev"
profile = "dev"
seed = 0
detector_epochs = 3
audiotext_epochs = 4
n_rankers = 2
n_demo = 200
n_boot = 1000
workers = 1  # > 1: train the five models in that many processes (one thread each on 2 cores)
real_clap_path = None  # a local laion/clap-htsat-unfused folder (or a laion_clap .pt) to score with too
real_ranker_clap_path = None  # data without timelines: the rankers' CLAP folder (None: real_clap_path ranks too)
use_release = True  # load releases/scorers when they were trained on this run's world

# %%
import json
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Audio, Markdown, display
from scipy.special import softmax

from t2a_lib.audio.features import load_waves, split_mels, waves_to_mel
from t2a_lib.model import release
from t2a_lib.scoring import clap_family, corrupt, event_metrics, metrics, scorers
from t2a_lib.world import datasets
from t2a_lib.world.scenes import CLASSES

torch.set_num_threads(max(1, torch.get_num_threads()))
run_dir = Path(run_dir)
world_dir = run_dir / "world"
world_info = datasets.require_world(world_dir)  # the world 00_world finished (synthetic or external)
(run_dir / "figures").mkdir(parents=True, exist_ok=True)
t_start = time.time()

train = split_mels(world_dir / "train.jsonl")
val = split_mels(world_dir / "val.jsonl")
test = split_mels(world_dir / "test.jsonl")
print({name: tuple(m.shape) for name, (m, _) in {"train": train, "val": val, "test": test}.items()})

# %% [markdown]
# ## Train (or load) both families
#
# The suite releases its own scorers (`releases/scorers`, with a model card; rebuilt by
# `make base`). With `use_release = True` and a world whose fingerprint matches the release's,
# they are copied into this run and loaded; otherwise they train here. A model saved with the
# same config and trained on the same data (by content) is loaded instead of retrained, so
# re-running the notebook is cheap. Every model gets a `model_card.json` with its held-out scores on the
# test split. With `workers = 2` (the profiles' setting) the five models train in two
# processes of one thread each: on two cores a second thread speeds these small recurrent and
# convolutional models up by far less than a second model running beside them
# (`t2a_lib.run.parallel` has the numbers).
#
# **Real data** (AudioCaps-format manifests: free-form captions, no event timelines) has nothing
# to train the detectors on. There the judges are the real CLAP at `real_clap_path` and the
# rankers the one at `real_ranker_clap_path` (local transformers `ClapModel` folders; without the
# second, the judge's CLAP ranks too), recorded in `scorers/real_clap.json` for the later
# notebooks. They measure the CLAP score only, so the sections below that need the world's
# timelines (held-out detector quality, the metric check on corrupted clips) are skipped.

# %%
has_timelines = all(r.events is not None for r in train[1] + test[1])  # the world's clips: yes; AudioCaps: no
if has_timelines:
    clap_family.record_path(run_dir).unlink(missing_ok=True)  # this run scores with the world's scorers
    families = {role: (folder, *scorers.scorer_configs(role, scorers.DEFAULT_SEEDS[role] + seed,
                                                       n_rankers if role == "ranker" else 1,
                                                       detector_epochs, audiotext_epochs))
                for role, folder in (("ranker", scorers.rankers_dir(run_dir)), ("judge", scorers.judges_dir(run_dir)))}
    data = scorers.data_key(train, test)  # what a saved scorer must have been trained on to be loaded
    used, why = release.install_scorers(run_dir, data) if use_release else (False, "use_release is off")
    print("scorers: the release (releases/scorers), trained on this world" if used else f"scorers: training here: {why}")
    fitted, cards = scorers.fit_scorers(families, train, test, workers=workers)
    judges, rankers = fitted["judge"], fitted["ranker"]
else:  # no timelines: nothing to train the detectors on; a real CLAP per role (every later notebook loads it)
    real_record = clap_family.install(run_dir, real_clap_path, real_ranker_clap_path)
    used, why, cards = False, "the data has no event timelines: real CLAP for both roles", {}
    print(f"scorers: {why}: judge {real_record['judge']}, ranker {real_record['ranker']}"
          + (" (the same model: a gain cannot be told from reward hacking)" if real_record["same_model"] else ""))

# %% [markdown]
# ## Held-out quality
#
# Event detectors: event-based F1 with a 0.2 s onset collar, accuracy of "all events
# present", and order accuracy on temporal clips. Audio-text models: caption retrieval R@1
# among 100 clips whose captions assert different things, and how often the true caption
# beats its reordered twin.

# %%
if has_timelines:
    quality = pd.DataFrame({name: {**card["held_out"], "train_seconds": card["train_seconds"]}
                            for name, card in cards.items()}).T
    display(quality.style.format(precision=3, na_rep="—"))

# %%
if has_timelines:
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
    for name in cards:
        losses = json.loads((run_dir / "scorers" / (name.split("/")[0] + "s") / name.split("/")[1] / "losses.json").read_text())
        ax = axes[0] if "detector" in name else axes[1]
        ax.plot(np.convolve(losses, np.ones(10) / 10, mode="valid"), label=name)
    axes[0].set(title="event detectors: frame BCE", xlabel="step", yscale="log")
    axes[1].set(title="audio-text models: contrastive loss", xlabel="step")
    for ax in axes:
        ax.legend(fontsize=8)
    plt.show()

# %% [markdown]
# ## Confusion of the judge's detector
#
# On single-event held-out clips: the true class against the class with the highest
# clip-level posterior.

# %%
if has_timelines:
    test_mels, test_recs = test
    single = [i for i, r in enumerate(test_recs) if len(r.events or []) == 1]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, (role, fam) in zip(axes, (("judge", judges), ("ranker", rankers))):
        out = fam.detector.analyse(test_mels[single])
        truth = [CLASSES.index(test_recs[i].events[0]["label"]) for i in single]
        cm = np.zeros((len(CLASSES), len(CLASSES)), int)
        for t, p in zip(truth, out.clip_logits.argmax(1)):
            cm[t, p] += 1
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=90, fontsize=7)
        ax.set_yticks(range(len(CLASSES)), CLASSES, fontsize=7)
        ax.set(title=f"{role} detector: {np.trace(cm)}/{cm.sum()} correct", xlabel="predicted", ylabel="true")
        for (r, c), v in np.ndenumerate(cm):
            if v:
                ax.text(c, r, v, ha="center", va="center", fontsize=6, color="w" if v > cm.max() / 2 else "k")
    fig.tight_layout()
    fig.savefig(run_dir / "figures" / "01_confusion.png", dpi=90)
    plt.show()

# %% [markdown]
# ## Every metric, on clips whose answer is known
#
# Held-out ground-truth clips against three corruptions of the *same* clips, scored by the
# judges only: events swapped in time, one event dropped, white noise at 0 dB SNR. Each
# metric should move the right way: order accuracy falls when events are swapped; presence
# falls when one is dropped; FAD (against the validation clips) and KL(ref‖gen) (paired by
# clip id with the clean clip as reference) rise under noise. Intervals are 95% bootstrap
# intervals over clips.

# %%
if has_timelines:
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(test_recs))[: min(n_demo, len(test_recs))]
    recs = [test_recs[i] for i in pick]
    waves = load_waves(recs, num_samples=test_mels.shape[-1] * 160)
    variants = {"ground truth": waves}
    for name, fn in {"events swapped": lambda w, r: corrupt.swap_order(w, r.events),
                     "event dropped": lambda w, r: corrupt.drop_event(w, r.events, rng),
                     "noise 0 dB": lambda w, r: corrupt.add_noise(w, 0.0, rng)}.items():
        variants[name] = np.stack([(fn(w, r) if fn(w, r) is not None else w) for w, r in zip(waves, recs)])
    applies = {"events swapped": [corrupt.swap_order(w, r.events) is not None for w, r in zip(waves, recs)],
               "event dropped": [len(r.events) > 1 for r in recs]}

    captions_demo = [r.captions for r in recs]
    ids = [r.id for r in recs]
    ref_val = judges.detector.analyse(val[0]).embeddings
    judged = {name: scorers.judge_clips(judges, waves_to_mel(w), captions_demo, ids) for name, w in variants.items()}
    gt = judged["ground truth"]


    def row(name, j):
        t = j.table
        mask = np.array(applies.get(name, [True] * len(t)))
        ests = judges.detector.events(j.detector.frame_probs)
        f1 = [event_metrics.event_f1(r.events, e)["f1"] for r, e in zip(recs, ests)]
        out = {"variant": name, "clips": int(mask.sum())}
        for col, values in (("presence", t.presence), ("all present", t.all_present), ("order", t.order),
                            ("event F1", pd.Series(f1)), ("CLAP (judge)", t.clap)):
            v = values.to_numpy(dtype=float)[mask]
            v = v[~np.isnan(v)]
            est, lo, hi = metrics.bootstrap_ci(v, n_boot=n_boot, seed=seed)
            out[col] = f"{est:.3f} [{lo:.3f}, {hi:.3f}]"
            out[col + " value"] = est
        out["FAD vs val"] = metrics.frechet_audio_distance(ref_val, j.detector.embeddings)
        out["KL(ref‖gen)"] = metrics.kl_divergence(gt.detector.clip_logits, j.detector.clip_logits, ids, ids)
        out["IS"] = metrics.inception_score(softmax(j.detector.clip_logits, axis=1), n_splits=10, seed=seed)[0]
        return out


    demo = pd.DataFrame([row(name, j) for name, j in judged.items()]).set_index("variant")
    display(demo[[c for c in demo.columns if not c.endswith(" value")]])

# %%
if has_timelines:
    cols = ["presence value", "all present value", "order value", "event F1 value", "CLAP (judge) value"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.5), gridspec_kw={"width_ratios": [3, 1]})
    demo[cols].rename(columns=lambda c: c.replace(" value", "")).T.plot.bar(ax=axes[0], rot=0)
    axes[0].set(title="judge metrics on ground truth vs corrupted clips", ylim=(0, 1.05))
    demo[["FAD vs val", "KL(ref‖gen)"]].T.plot.bar(ax=axes[1], rot=0, legend=False)
    axes[1].set(title="distances (lower is closer)")
    fig.tight_layout()
    fig.savefig(run_dir / "figures" / "01_metric_demo.png", dpi=90)
    plt.show()

# %% [markdown]
# Listen to one clip and what the corruptions did to it:

# %%
if has_timelines:
    k = next((i for i, ok in enumerate(applies["events swapped"]) if ok), 0)
    display(Markdown(f"**{recs[k].captions}**"))
    for name, w in variants.items():
        display(Markdown(f"*{name}* — judge detected: {', '.join(judged[name].table.detected[k]) or 'nothing'}"))
        display(Audio(w[k], rate=16000))

# %% [markdown]
# ## Real CLAP, when you have the weights
#
# The same interface loads LAION-CLAP (transformers' `ClapModel`, or the `laion_clap`
# package), resampling our 16 kHz audio to its 48 kHz: BATON's reward model fed it 16 kHz
# audio. Nothing is downloaded: without a local copy, the wiring is shown on a tiny
# randomly-initialised CLAP laid out like `laion/clap-htsat-unfused` (its scores mean nothing).
#
# On data without timelines the run's two CLAPs are its rankers and judges: each scores held-out
# clips against their own caption and against another clip's caption (a CLAP that reads the
# audio scores the first higher).

# %%
from t2a_lib.scoring import clap_real

if not has_timelines:  # the run's own CLAPs, on held-out clips
    recs = test[1][: min(n_demo, len(test[1]))]
    waves, captions_demo = load_waves(recs), [r.captions for r in recs]
    own_vs_other = pd.DataFrame({role: {"own caption": float(np.mean(s_own)), "another clip's caption": float(np.mean(s_other))}
                                 for role, fam in (("judge", scorers.load_judges(run_dir)), ("ranker", scorers.load_rankers(run_dir)))
                                 for s_own, s_other in [(fam.score_waves(waves, captions_demo),
                                                         fam.score_waves(waves, captions_demo[1:] + captions_demo[:1]))]})
    display(own_vs_other.style.format("{:.4f}"))
if not has_timelines:
    real, real_label = scorers.load_judges(run_dir).scorer, f"the run's judge CLAP ({real_record['judge']})"
elif real_clap_path:
    real = clap_real.load_real_clap(real_clap_path, role="judge")
    real_label = f"LAION-CLAP from {real_clap_path}"
else:
    tiny_dir = Path(tempfile.mkdtemp()) / "tiny-clap"
    clap_real.make_tiny_clap(tiny_dir, seed=seed)
    real = clap_real.HFClapScorer(tiny_dir, role="judge")
    real_label = "tiny random CLAP (wiring check only)"
real_scores = real.score(list(waves[:8]), captions_demo[:8], sample_rate=16000)
print(real_label, "->", np.round(real_scores, 3))

# %% [markdown]
# ## Figures for the report

# %%
if not has_timelines:  # no world scorers: the CLAPs' check is the table to show
    quality, demo = own_vs_other, pd.DataFrame()
results = {
    "profile": profile,
    "models": {name: {**card["held_out"], "train_seconds": card["train_seconds"]} for name, card in cards.items()},
    "metric_demo": {name: {k: (float(v) if isinstance(v, (int, float, np.floating)) else v)
                           for k, v in r.items() if not isinstance(v, str)}
                    for name, r in demo.to_dict(orient="index").items()},
    "real_clap": real_label,
    "release": {"used": used, "why_not": why},
    "wall_seconds": round(time.time() - t_start, 1),
}
if not has_timelines:
    results.update(scorers={"kind": "real CLAP", **real_record,
                            "own_vs_other_caption": json.loads(own_vs_other.to_json())})
(run_dir / "01_judges.json").write_text(json.dumps(results, indent=2, default=float))
quality
