"""The ranker–judge gap: each fine-tune's gain as the scorers it was trained against see it, beside
the gain the judges see, on the same evaluation samples. A method that gains on its rankers and not on
the judges is hacking its rankers.

What each method was trained against (:data:`TRAINED_AGAINST`): Tango 2's family (SFT, DPO and its
ablations, the safeguarded DPO, CRPO) learned from clips ranked by the rankers' audio-text models
(their mean cosine, "CLAP"); BATON's family (reward-weighted and KTO) from labels that annotators
simulated with the rankers' event detector gave (HD), or that a reward model on the rankers'
audio-text embeddings, trained on those labels, gave (RD). So the rankers' view of a model is its
CLAP on Tango 2's prompts, and its detector's all-present rate on Integrity and order on Temporal
prompts; the judges' view is the same measure from the judges. (DPO on gold pairs learned from the
world's ground truth; it is shown for reference.)

For model m, its baseline b (the base model), scorer family s ∈ {rankers, judges} and per-clip
value y (seeds pooled as in :mod:`t2a_lib.evaluate.claims`):

    gain_s = mean_i (y^s_{m,i} − y^s_{b,i}) / σ_s,      gap = gain_rankers − gain_judges

σ_s is 1 for the detectors' 0/1 rates, which share a scale, and the standard deviation of the base
model's per-clip CLAP under family s for CLAP (the two families' cosines are not on one scale), so
CLAP gains read in base-model standard deviations. Each gain and the gap come with their 95% paired
bootstrap interval; a gap whose interval lies above zero is reward hacking made visible.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .claims import GAP_PREFIX, MODEL_NAMES, SUBSETS, paired_effect, pooled_values

RANKED = "the rankers' CLAP"
ANNOTATED = "labels from the rankers' detector"
TRAINED_AGAINST = {
    "sft": RANKED, "dpo": RANKED, "dpo_wo_s1": RANKED, "dpo_wo_s2s3": RANKED, "dpo_safe": RANKED,
    "crpo": RANKED + " (online)", "gold": "the world's ground truth (no ranker)",
    "baton_hd": ANNOTATED, "kto_hd": ANNOTATED, "baton_rd": "a reward model on the rankers' embeddings",
    "baton_hd_rd": ANNOTATED + " and the reward model", "kto_hd_rd": ANNOTATED + " and the reward model",
}
MEASURES = {"tango": [("all", "clap")], "baton": [("Integrity", "all_present"), ("Temporal", "order")]}
BASE = "base"
COLUMNS = ["model", "model id", "trained against", "prompts", "subset", "metric", "unit", "rankers gain",
           "rankers low", "rankers high", "judges gain", "judges low", "judges high", "gap", "gap low", "gap high",
           "n", "reading"]


def rank_samples(rankers, samples: dict[str, list], captions: list[str]) -> dict[str, list[pd.DataFrame]]:
    """The rankers' per-clip table (:func:`t2a_lib.scoring.scorers.rank_clips`) of every seed's samples
    (waveforms or log-mels, one per caption) of every model: ``{model id: [table per seed]}``."""
    import torch

    from ..audio.features import waves_to_mel
    from ..scoring.scorers import rank_clips, require_role

    require_role(rankers, "ranker", "the rankers' view of a model")

    def mels(s):
        s = np.asarray(s)
        return waves_to_mel(s) if s.ndim == 2 else torch.from_numpy(s).float()

    return {model_id: [rank_clips(rankers, mels(s), captions).table for s in per_seed]
            for model_id, per_seed in samples.items()}


def scale(base_table: pd.DataFrame, metric: str) -> float:
    """σ of a metric under one scorer family: 1 for a 0/1 rate, the base model's per-clip standard
    deviation (ddof 1) for CLAP."""
    if metric != "clap":
        return 1.0
    sd = float(np.nanstd(base_table[metric].to_numpy(float), ddof=1))
    if not np.isfinite(sd) or sd == 0:
        raise ValueError("the base model's CLAP has no spread to scale by")
    return sd


def sigmas(judge_tables: dict[str, list[pd.DataFrame]], ranker_tables: dict[str, list[pd.DataFrame]],
           metric: str) -> dict[str, float]:
    """σ of ``metric`` under each scorer family (:func:`scale` of the base model's first table)."""
    return {"rankers": scale(ranker_tables[BASE][0], metric), "judges": scale(judge_tables[BASE][0], metric)}


def with_gap_columns(judge_tables: dict[str, list[pd.DataFrame]], ranker_tables: dict[str, list[pd.DataFrame]],
                     metrics) -> dict[str, list[pd.DataFrame]]:
    """The judges' tables with a column ``ranker_gap_<metric>`` per metric: the rankers' value of each
    clip over σ_rankers minus the judges' over σ_judges (σ from the base model, :func:`scale`). A
    model − base difference of it is the rankers' gain minus the judges' (the claims' gap rows)."""
    sigma = {m: sigmas(judge_tables, ranker_tables, m) for m in metrics}
    out = {}
    for model_id, tables in judge_tables.items():
        if model_id not in ranker_tables:
            out[model_id] = tables
            continue
        out[model_id] = [j.assign(**{GAP_PREFIX + m: r[m].to_numpy(float) / sigma[m]["rankers"]
                                     - j[m].to_numpy(float) / sigma[m]["judges"]
                                     for m in metrics})
                         for j, r in zip(tables, ranker_tables[model_id], strict=True)]
    return out


def gap_table(judge_tables: dict[str, list[pd.DataFrame]], ranker_tables: dict[str, list[pd.DataFrame]],
              prompts: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per fine-tuned model and measure of :data:`MEASURES[prompts]`: what it was trained
    against, the rankers' gain, the judges' gain and the gap (each with its 95% paired bootstrap
    interval), in the measure's unit, n, and a reading of the gap."""
    rows = []
    for subset, metric in MEASURES[prompts]:
        gapped = with_gap_columns(judge_tables, ranker_tables, [metric])
        mask = SUBSETS[prompts][subset](judge_tables[BASE][0]).to_numpy()
        sigma = sigmas(judge_tables, ranker_tables, metric)
        for model_id in [m for m in judge_tables if m != BASE and m in ranker_tables]:
            row = {"model": MODEL_NAMES.get(model_id, model_id), "model id": model_id,
                   "trained against": TRAINED_AGAINST.get(model_id, ""), "prompts": prompts, "subset": subset,
                   "metric": metric, "unit": "base-model sd" if metric == "clap" else "rate"}
            for family, tables in (("rankers", ranker_tables), ("judges", judge_tables)):
                e = paired_effect(pooled_values(tables[model_id], metric)[mask] / sigma[family],
                                  pooled_values(tables[BASE], metric)[mask] / sigma[family], n_boot, seed)
                row.update({f"{family} gain": e["difference"], f"{family} low": e["low"], f"{family} high": e["high"]})
            col = GAP_PREFIX + metric
            e = paired_effect(pooled_values(gapped[model_id], col)[mask], pooled_values(gapped[BASE], col)[mask],
                              n_boot, seed)
            row.update({"gap": e["difference"], "gap low": e["low"], "gap high": e["high"], "n": e["n"],
                        "reading": reading(e["low"], e["high"])})
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def reading(low: float, high: float) -> str:
    """What a gap's interval says."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "not measured"
    if low > 0:
        return "rankers see more: reward hacking"
    if high < 0:
        return "judges see more"
    return "matched within the interval"


def plot_gap(table: pd.DataFrame, path=None):
    """One panel per measure: each model's rankers' gain (x) against its judges' gain (y), with 95%
    intervals; below the diagonal the rankers see more than the judges. Returns the figure."""
    import matplotlib.pyplot as plt

    measures = list(dict.fromkeys(zip(table.subset, table.metric, table.unit)))
    fig, axes = plt.subplots(1, max(1, len(measures)), figsize=(4.2 * max(1, len(measures)), 4), squeeze=False)
    for ax, (subset, metric, unit) in zip(axes[0], measures):
        t = table[(table.subset == subset) & (table.metric == metric)]
        for _, r in t.iterrows():
            x, y = r["rankers gain"], r["judges gain"]
            ax.errorbar(x, y, xerr=[[x - r["rankers low"]], [r["rankers high"] - x]],
                        yerr=[[y - r["judges low"]], [r["judges high"] - y]], fmt="o", capsize=2)
            ax.annotate(r["model"], (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        lim = np.nanmax(np.abs(t[["rankers low", "rankers high", "judges low", "judges high"]].to_numpy(float)),
                        initial=0.05) * 1.1
        ax.plot([-lim, lim], [-lim, lim], "k:", linewidth=1)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.axvline(0, color="grey", linewidth=0.5)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), title=f"{metric} on {subset} ({unit})",
               xlabel="gain seen by the rankers", ylabel="gain seen by the judges")
    fig.suptitle("ranker vs judge gain over the base (below the diagonal: the rankers see more)", fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=90)
    return fig
