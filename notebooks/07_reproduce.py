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
# # 07 · Reproducing the papers' tables
#
# Every model the earlier notebooks trained — the base model (in Tango-full-FT's role), DPO
# (Tango 2) on ranked and on gold pairs, BATON with human (HD) and both (HD+RD) feedback, and, in
# the `full` profile, SFT on winners, Tango 2's ablations, CRPO and BATON on reward-model (RD)
# labels alone — sampled on the **same held-out prompts with the same seeds** and scored **by the
# judges only** (never the rankers the methods were trained against):
#
# - FAD: Fréchet distance of the judge detector's embeddings, generated vs all test clips;
#   $\mathrm{FD} = \lVert\mu_1-\mu_2\rVert^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2 - 2\operatorname{tr}(\Sigma_1\Sigma_2)^{1/2}$,
#   bias-corrected, and shown only on sets of at least $2d$ clips for $d$-dimensional embeddings
#   (below that its bias swamps it: `t2a_lib.scoring.kernel_distance`); "—" elsewhere.
# - KAD beside it: the unbiased squared MMD with a Gaussian kernel (×1000, as kadtk reports it),
#   $\mathrm{MMD}^2_u = \frac{1}{m(m-1)}\sum_{i\ne j}k(x_i,x_j) + \frac{1}{n(n-1)}\sum_{i\ne j}k(y_i,y_j) - \frac{2}{mn}\sum_{i,j}k(x_i,y_j)$,
#   meaningful on a few dozen clips.
# - KL$(p_\text{ref}\Vert p_\text{gen})$, paired with each prompt's source clip; IS (the mean over
#   splits, with the splits' t interval); CLAP score (the judge audio-text model's cosine).
# - **presence**, **all present**, **order** (all prompted events detected, in the prompted order),
#   event F1 (0.2 s collar) against the source clip's timeline.
#
# Each figure comes with a 95% interval inside the metric's range (FAD: a basic bootstrap interval;
# the others a percentile bootstrap over clips). The papers' numbers stand beside ours for orientation
# only: they are AudioCaps numbers from real 866M-parameter models, **not comparable in scale**.
#
# **The claims table** (first in the report) answers every row of `t2a_lib.evaluate.claims.CLAIMS`: a
# claim of a paper (or a control of ours, or a question beyond the papers), as a paired difference
# $\bar d = \frac1n\sum_i d_i$, $d_i = \bar y_{\text{model},i} - \bar y_{\text{baseline},i}$, over the same
# prompts and noise, each model's seeds averaged per prompt. Its interval counts what a re-run would
# change: the prompts, and the training seeds. With $y_{s,i} = \mu + u_s + p_i + e_{s,i}$ for seed $s$
# of $k$ on prompt $i$ of $n$,
#
# $$\operatorname{Var}(\bar d) = \frac{\operatorname{Var}_i(d_i)}{n} + \sum_{\text{sides}} \frac{\sigma_u^2}{k},
# \qquad \widehat{\sigma_u^2/k} = \frac{\max(0,\ \mathrm{MS}_\text{seed} - \mathrm{MS}_\text{resid})}{n k},$$
#
# from the two-way mean squares of each side's seeds × prompts values, and Student's $t$ with
# Satterthwaite's degrees of freedom (`t2a_lib.evaluate.inference`). The prompts-only bootstrap interval
# stands beside it, named so. Rows fall in three families (the papers' claims, our controls, beyond the
# papers); within each, Holm's step-down method adjusts the p-values,
# $\tilde p_{(j)} = \max_{i \le j} \min\{1, (m-i+1)\,p_{(i)}\}$, so the chance of any false
# *reproduced* in a family stays at 5%. The verdict is *reproduced* when the adjusted p is below 0.05 on
# the claimed side, *contradicted* on the other side, *not shown* otherwise, and *not measured* when the
# run did not train one of its models (the row names the switch and profile that do). A *matched* claim
# (the ranker–judge gap) is tested for equivalence within its stated margin by two one-sided tests. A row
# is *powered* when its half-width meets its target (±0.05 for a rate against the base, ±0.07 between two
# methods; blank where a row has no target), and the minimum detectable effect at 80% power is
# $\mathrm{MDE} = (t_{0.975} + t_{0.8})\,\mathrm{se}$. The per-clip tables behind every row are written to
# `tables/per_clip/`, from which `claims.answer_all(per_clip.read_per_clip(run_dir))` recomputes the table.
#
# **The ranker–judge gap.** Every method was trained against rankers (Tango 2's family: the rankers'
# CLAP ranking; BATON's and KTO: labels from the rankers' detector and a reward model on their
# embeddings) and is graded by independent judges. The same evaluation samples are scored by the
# rankers too, so each model's gain over the base can be read twice: as the scorers it was trained
# against see it, and as the judges see it. CLAP gains are in standard deviations of the base model's
# per-clip CLAP under each family (the two families' cosines are not on one scale); detector rates
# are rates. A gain the rankers see and the judges do not is reward hacking.

# %% tags=["parameters"]
run_dir = "papermill_runs/dev"
profile = "dev"
seed = 0
sample_steps = 10
guidance = 3.0
eval_output = "audio"
n_boot = 1000
ablations = True  # train Tango 2's ablations (DPO without S1; without S2 and S3) here (off in `default`, on in `full`)
workers = 1  # > 1: train the ablations and sample the models in that many processes (one thread each)
n_listen = 3  # held-out prompts in the report's listening section

# %%
import json
import textwrap
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Audio, Markdown, display

from t2a_lib.audio.features import split_mels
from t2a_lib.evaluate import claims, evaluation, per_clip, ranker_gap, reproduce
from t2a_lib.model import base_model
from t2a_lib.scoring import clap_family, scorers
from t2a_lib.world import datasets, overlap

run_dir = Path(run_dir)
tables_dir, fig_dir = run_dir / "tables", run_dir / "figures"
tables_dir.mkdir(parents=True, exist_ok=True)
fig_dir.mkdir(parents=True, exist_ok=True)
t_start, timings = time.time(), {}
base = base_model.load_run_pipeline(run_dir)
judges, rankers = scorers.load_judges(run_dir), scorers.load_rankers(run_dir)
dpo_settings = json.loads((run_dir / "04_dpo.json").read_text())["settings"]  # the ablations use 04's DPO exactly
world_judges = not clap_family.uses_real_clap(run_dir)  # real data without timelines: the run's real CLAP judges

# %% [markdown]
# ## Tango 2's ablations: DPO on a subset of the strategies
#
# The same DPO as notebook 04 (its settings, read from `04_dpo.json`; its first seed), trained
# on the pairs of S2 and S3 only ("w/o S1") or of S1.1 and S1.2 only ("w/o S2&S3"). The two are
# independent: with `workers = 2` they train side by side, one thread each (`reproduce.train_ablations`).

# %%
if ablations and not world_judges:  # free-form captions: notebook 03 made S1 pairs only
    print("ablations skipped: without the world grammar the preference set holds S1 pairs only, so "
          "'w/o S1' has no pairs and 'w/o S2&S3' is DPO itself")
elif ablations:
    t0 = time.time()
    reproduce.train_ablations(run_dir, dpo_settings, seed, workers)
    timings["ablations"] = time.time() - t0
seeds = {reproduce.BASE: 1, **{m: len(f) for m, f in reproduce.model_folders(run_dir).items()}}
print({claims.MODEL_NAMES[m]: k for m, k in seeds.items()}, "(seeds per model)")

# %% [markdown]
# ## Sample and judge every model on the run's evaluation sets
#
# Tango 2's family on Tango 2's held-out prompts, BATON's family on BATON's; the base model on
# both. Samples already drawn by notebooks 02, 04 and 06 come from the run's sample cache.

# %%
t0 = time.time()
judged, samples = {}, {}
for name in ("tango", "baton"):  # each family on its paper's prompts; the base on both
    fine_tuned = [m for m in seeds if m != reproduce.BASE and claims.prompt_set(m) == name]
    judged[name], samples[name] = evaluation.evaluate_models(run_dir, base, judges, fine_tuned, name, sample_steps,
                                                             guidance, eval_output, workers)
tables = {name: {m: [j.table for j in js] for m, js in family.items()} for name, family in judged.items()}
train_captions = [r.captions for r in datasets.load_split(run_dir / "world", "train")]
# the subset of temporal prompts whose order no training caption has: every model judged the same prompts
novel = overlap.novel_order(tables["tango"][reproduce.BASE][0].caption, train_captions)
for judged_seeds in tables["tango"].values():
    for t in judged_seeds:
        t["novel_order"] = novel
n_novel = int(novel.sum())
print(f"{n_novel} of Tango 2's held-out prompts ask for an order of events no training caption asks for")
timings["sampling_and_judging"] = time.time() - t0

# %% [markdown]
# ## The ranker–judge gap: each model's gain as its rankers see it and as the judges see it
#
# The rankers score the samples the judges scored (no new sampling). Per model and measure: the
# gain over the base seen by the rankers, by the judges, and the gap (rankers − judges), each with
# its 95% paired bootstrap interval over prompts, seeds pooled. In the plot, a model below the
# diagonal gains more on its rankers than on the judges.

# %%
t0 = time.time()
gap = pd.DataFrame()
if world_judges:
    ranked = {name: ranker_gap.rank_samples(rankers, samples[name], evaluation.load_eval_set(run_dir, name).prompt.tolist())
              for name in samples}
    gap = pd.concat([ranker_gap.gap_table(tables[name], ranked[name], name, n_boot, seed) for name in tables],
                    ignore_index=True)
    display(gap.drop(columns=["model id"]).style.format(precision=3, na_rep="—"))
    ranker_gap.plot_gap(gap, fig_dir / "07_ranker_judge_gap.png")
    plt.show()
    gap_metrics = {name: [m for _, m in ranker_gap.MEASURES[name]] for name in tables}
    tables = {name: ranker_gap.with_gap_columns(tables[name], ranked[name], gap_metrics[name]) for name in tables}
else:
    print("ranker-judge gap skipped: it compares the world's two scorer families; this run has a real CLAP per role")
timings["ranker_judge_gap"] = time.time() - t0

# %% [markdown]
# ## The claims

# %%
print("per-clip tables:", per_clip.write_per_clip(run_dir, tables))
claims_table = claims.answer_all(tables, n_boot=n_boot, seed=seed)
measures = [m for m in ("presence", "all_present", "order", "clap") if m in tables["tango"]["base"][0]]
print("measured:", ", ".join(measures), "" if world_judges else f"(real CLAP; the other rows: {clap_family.WHY_NOT})")
shown = ["claim", "family", "measure", "n", "seeds", "ours", "prompt-only interval", "per seed", "p", "adjusted p",
         "MDE", "powered", "verdict", "why"]
display(claims_table.reindex(columns=shown).style.format({c: "{:.3f}" for c in ("MDE", "p", "adjusted p")},
                                                          na_rep="—").apply(
    lambda r: ["background-color: #dfd" if r.verdict == "reproduced" else
               "background-color: #fdd" if r.verdict == "contradicted" else "" for _ in r], axis=1))

# %%
show = claims_table.reindex(columns=list(claims_table.columns) + ["difference"] * ("difference" not in claims_table))
show = show[show.difference.notna()].reset_index(drop=True)
fig, ax = plt.subplots(figsize=(10, 0.6 + 0.42 * len(show)))
colour = {"reproduced": "tab:green", "contradicted": "tab:red", "not shown": "tab:gray"}
for i, r in show.iterrows():
    ax.errorbar(r.difference, i, xerr=[[r.difference - r.low], [r.high - r.difference]], fmt="o", capsize=3,
                color=colour.get(r.verdict, "k"))
ax.axvline(0, color="k", linestyle=":")
ax.set_yticks(range(len(show)), [textwrap.shorten(r.claim, 70) for r in show.itertuples()], fontsize=7)
ax.invert_yaxis()
ax.set(title="Every claim: difference with its 95% interval over prompts and seeds\n"
             "(green reproduced, red contradicted, after Holm's adjustment)", xlabel="difference (model − baseline)")
fig.tight_layout()
fig.savefig(fig_dir / "07_claims.png", dpi=90)
plt.show()

# %% [markdown]
# ## Tango 2, Table 3: Tango 2's held-out prompts (first seed of each model)
#
# Tables 3-5 and BATON's table need the world's judges (FAD, KL and IS on the judge detector's
# outputs, presence and order); on real data without timelines the CLAP table after them stands
# in for them.

# %%
table3_results = {}
if world_judges:
    t0 = time.time()
    prompts = evaluation.load_eval_set(run_dir, "tango")
    test_mels, test_recs = split_mels(run_dir / "world" / "test.jsonl")
    index = {r.id: i for i, r in enumerate(test_recs)}
    sources = [test_recs[index[i]] for i in prompts.source_id]
    source_out = judges.detector.analyse(test_mels[[index[i] for i in prompts.source_id]])
    ref_embeddings = judges.detector.analyse(test_mels).embeddings
    table3_results = {m: reproduce.corpus_metrics(judges, js[0], source_out, ref_embeddings, sources, n_boot, seed)
                      for m, js in judged["tango"].items()}
    table3 = reproduce.metric_table(table3_results)
    paper3 = reproduce.PAPER_TABLE3.set_index("paper model")
    for col in ("FAD", "KL", "IS", "CLAP"):
        table3[f"paper {col}"] = [paper3.loc[reproduce.PAPER_ROW[m], col] if m in reproduce.PAPER_ROW else "" for m in table3.index]
    table3.index = [claims.MODEL_NAMES[m] for m in table3.index]
    display(table3)

# %% [markdown]
# ## Tables 4 and 5: multi- vs single-event, temporal vs non-temporal prompts

# %%
if world_judges:
    def subset_table(subsets: list[str], paper: dict) -> pd.DataFrame:
        rows = []
        base_table = tables["tango"][reproduce.BASE][0]
        for m, js in judged["tango"].items():
            for sub in subsets:
                mask = claims.SUBSETS["tango"][sub](base_table).to_numpy()
                r = reproduce.corpus_metrics(judges, js[0], source_out, ref_embeddings, sources, n_boot, seed, mask=mask)
                row = {"model": claims.MODEL_NAMES[m], "subset": sub, "clips": int(mask.sum())}
                row.update({c: reproduce.cell(r[c]) for c in ("FAD", "KAD", "KL", "IS", "CLAP", "presence", "order")})
                p = paper.get(reproduce.PAPER_ROW.get(m, ""), {}).get(sub)
                row["paper FAD/KL/IS/CLAP"] = "/".join(f"{x:.3f}" for x in p) if p else ""
                rows.append(row)
        return pd.DataFrame(rows)


    table4 = subset_table(["multi-event", "single-event"], reproduce.PAPER_TABLE4)
    table5 = subset_table(["temporal", "non-temporal"], reproduce.PAPER_TABLE5)
    display(table4)
    display(table5)
    timings["tables"] = time.time() - t0

# %% [markdown]
# ## BATON: Integrity and Temporal prompts

# %%
if world_judges:
    baton_rows = []
    for m, ts in tables["baton"].items():
        for task, metric in (("integrity", "all_present"), ("temporal", "order")):
            for k, t in enumerate(ts):
                v = t[t.task == task][metric].to_numpy(float)
                c = t[t.task == task].clap.to_numpy(float)
                est, lo, hi = evaluation.mean_ci(v, n_boot, seed)[:3]
                ce, cl, ch = evaluation.mean_ci(c, n_boot, seed)[:3]
                baton_rows.append({"model": claims.MODEL_NAMES[m], "seed": k, "task": task.capitalize(), "judge metric": metric,
                                   "value": reproduce.cell((est, lo, hi)), "CLAP": reproduce.cell((ce, cl, ch)),
                                   "paper": reproduce.PAPER_BATON[task] if m == "baton_hd_rd" and k == 0 else ""})
    baton_table = pd.DataFrame(baton_rows)
    display(baton_table)

# %% [markdown]
# ## Real data: every model's CLAP score
#
# Without timelines the judges are the run's real CLAP (notebook 01): each model's mean CLAP score
# (first seed and every seed) on each evaluation set, with its 95% bootstrap interval.

# %%
if not world_judges:
    clap_table = pd.DataFrame([
        {"set": name, "model": claims.MODEL_NAMES[m], "seed": k, "prompts": len(t),
         "CLAP": reproduce.cell(evaluation.mean_ci(t.clap.to_numpy(float), n_boot, seed)[:3])}
        for name in tables for m, ts in tables[name].items() for k, t in enumerate(ts)])
    display(clap_table)

# %% [markdown]
# ## One prompt across models: look and listen

# %%
base_table = tables["tango"][reproduce.BASE][0]
k = int(np.argmax(base_table.relation.isin(["then", "after"]).to_numpy())) if "relation" in base_table else 0
names = list(judged["tango"])
fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.6 * len(names)), squeeze=False)
for ax, m in zip(axes[:, 0], names):
    mel = evaluation.to_mel(samples["tango"][m][0][k])
    ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=[0, mel.shape[1] / 100, 0, 64])
    row = tables["tango"][m][0].iloc[k]
    heard = f"judge hears {', '.join(row.detected) or 'nothing'}" if world_judges else f"CLAP {row.clap:.3f}"
    ax.set_title(f"{claims.MODEL_NAMES[m]}: {heard}", fontsize=8)
    ax.set_yticks([])
fig.suptitle(base_table.caption[k], fontsize=10)
fig.tight_layout()
fig.savefig(fig_dir / "07_one_prompt_grid.png", dpi=80)
plt.show()
for m in names:
    display(Markdown(f"*{claims.MODEL_NAMES[m]}*"),
            Audio(evaluation.to_audio(samples["tango"][m][0][k], base.vocoder), rate=16000))

# %% [markdown]
# ## Listening set for the report
#
# A few held-out temporal prompts, each as the base model, DPO, DPO on gold pairs and BATON
# HD+RD render it (first seed, vocoded), and one winner/loser pair of each strategy of the
# preference set and of the gold set: written as wavs with `listening/index.json`, which the
# report turns into players and spectrograms.

# %%
listening = reproduce.write_listening_set(
    run_dir, base, {m: samples["tango"][m][0] for m in ("base", "dpo", "gold") if m in samples["tango"]},
    tables["tango"][reproduce.BASE][0], n_prompts=n_listen,
    baton={m: samples["baton"][m][0] for m in ("base", "baton_hd_rd") if m in samples["baton"]},
    baton_table=tables["baton"][reproduce.BASE][0])
print(f"listening set: {len(listening['prompts'])} prompts, {len(listening['pairs'])} pairs")

# %% [markdown]
# ## Write the tables and figures

# %%
written = (("claims", claims_table), ("table3", table3), ("table4", table4), ("table5", table5),
           ("baton", baton_table), ("ranker_judge_gap", gap)) if world_judges else \
    (("claims", claims_table), ("clap", clap_table))
for name, t in written:
    keep_index = not isinstance(t.index, pd.RangeIndex)  # row numbers are not worth a column
    t.to_csv(tables_dir / f"{name}.csv", index=keep_index)
    (tables_dir / f"{name}.md").write_text(t.to_markdown(index=keep_index))
results = {
    "profile": profile,
    "claims": json.loads(claims_table.reindex(columns=["key", "family", "claim", "paper", "measure", "n", "seeds",
                                                       "ours", "prompt-only interval", "per seed", "half-width", "p",
                                                       "adjusted p", "MDE", "continuous", "powered", "verdict", "why"])
                         .to_json(orient="records")),
    "n_boot": n_boot, "seed": seed, "novel_order_prompts": n_novel,
    "models": seeds,
    "ranker_judge_gap": json.loads(gap.to_json(orient="records")),
    "results": {m: {c: list(v) for c, v in r.items()} for m, r in table3_results.items()},
    "n_prompts": {name: len(evaluation.load_eval_set(run_dir, name)) for name in ("tango", "baton")},
    "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
    "wall_seconds": round(time.time() - t_start, 1),
}
if not world_judges:
    results.update(measures=measures, scorers=json.loads(clap_family.record_path(run_dir).read_text()),
                   clap=json.loads(clap_table.to_json(orient="records")))
(run_dir / "07_reproduce.json").write_text(json.dumps(results, indent=2, default=float))
claims_table[["claim", "measure", "ours", "verdict"]]
