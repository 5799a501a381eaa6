"""The papers' claims as data, and how the reproduction answers each one.

``CLAIMS`` is the one table: per claim, what the paper says, the paper's figure, the measure
(model, baseline, prompt set, subset, per-clip metric), the claimed direction and its family.
Notebook 07 answers every row from the judges' per-clip tables; the report renders what 07 wrote.

An answer is a **paired** difference: every model is sampled on the same prompts with the same
noise, so ``d_i = y_model,i − y_baseline,i`` removes the prompt's own difficulty (a model's seeds
averaged per prompt). For each row:

- the 95% interval over prompts **and training seeds** (:mod:`t2a_lib.evaluate.inference`): what a
  re-run with new seeds would meet; the prompts-only bootstrap interval beside it, named so;
- each seed's own difference, the unadjusted p, and Holm's adjusted p within the row's family
  (the paper's claims, our controls, beyond the papers), with the interval at the Holm level;
- the verdict at the adjusted p: *reproduced* (the claimed side), *contradicted* (the other side),
  *not shown*; a *matched* claim (``margin``) is tested for equivalence (TOST) instead;
- the minimum detectable effect at 80% power, ``(t_{1−α/2} + t_{0.8}) · se``;
- *powered* (blank where the row has no target): the half-width meets ±0.05 for a rate against the
  base, ±0.07 between two methods.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import t as scipy_t

from . import inference
from .inference import minimum_detectable_effect, paired_effect  # noqa: F401 (the claims' API)

RATE_METRICS = ("presence", "all_present", "order")
# the continuous judge score reported beside each binary rate (None: the metric is continuous)
CONTINUOUS = {"presence": "presence_prob", "all_present": "presence_prob", "order": "order_margin", "clap": None}
HALF_WIDTH_VS_BASE = 0.05
HALF_WIDTH_BETWEEN = 0.07
# a per-clip column "ranker_gap_<metric>" holds the rankers' value minus the judges' (t2a_lib.evaluate.ranker_gap): a
# model − base difference of it is the rankers' gain minus the judges' gain. Its rows claim direction −1
# (the judges see at least the rankers' gain): "contradicted" is reward hacking made visible, "not shown"
# a gap the interval cannot tell from zero (read its MDE), "reproduced" judges that see more than the rankers.
GAP_PREFIX = "ranker_gap_"
# a gap row claims the judges *match* the rankers' gain: an equivalence test within these margins
# (CLAP gaps are in base-model standard deviations, a small effect; rate gaps share the rates' ±0.05)
GAP_MARGIN = {"clap": 0.10, "all_present": 0.05}
FAMILIES = ("paper", "control", "beyond")  # Holm's familywise 5% holds within each
ALPHA = 0.05

# model identifiers; display names are derived from them, never the other way round
MODEL_NAMES = {
    "base": "base (Tango-full-FT's role)",
    "sft": "SFT on winners",
    "dpo": "Tango 2 (DPO)",
    "gold": "DPO on gold pairs",
    "dpo_wo_s1": "Tango 2 w/o S1",
    "dpo_wo_s2s3": "Tango 2 w/o S2&S3",
    "crpo": "CRPO (TangoFlux)",
    "baton_hd": "BATON HD",
    "baton_rd": "BATON RD",
    "baton_hd_rd": "BATON HD+RD",
    "dpo_safe": "DPO with the SDPO safeguard",
    "kto_hd": "Diffusion-KTO HD",
    "kto_hd_rd": "Diffusion-KTO HD+RD",
}
# models the `default` profile leaves out: the notebook switch that trains each, and the profile that has it on
SWITCHED_OFF_IN_DEFAULT = {
    "sft": ("04_dpo.with_sft", "full"), "crpo": ("04_dpo.with_crpo", "full"),
    "dpo_wo_s1": ("07_reproduce.ablations", "full"), "dpo_wo_s2s3": ("07_reproduce.ablations", "full"),
    "baton_rd": ("06_baton.with_rd", "full"), "dpo_safe": ("04_dpo.safeguard", "beyond"),
    "kto_hd": ("06_baton.with_kto", "beyond"), "kto_hd_rd": ("06_baton.with_kto", "beyond"),
}
BATON_FAMILY = ("baton_hd", "baton_rd", "baton_hd_rd", "kto_hd", "kto_hd_rd")  # trained on BATON's feedback


def prompt_set(model_id: str) -> str:
    """The evaluation set a fine-tuned model is judged on: BATON's for models trained on BATON's
    feedback, Tango 2's for the rest."""
    return "baton" if model_id in BATON_FAMILY else "tango"

# the subsets of each evaluation prompt set, as masks over a judge table
SUBSETS = {
    "tango": {
        "all": lambda t: t.n_events > 0 if "n_events" in t else pd.Series(True, index=t.index),  # CLAP-only: all
        "multi-event": lambda t: t.n_events >= 2,
        "single-event": lambda t: t.n_events == 1,
        "temporal": lambda t: t.relation.isin(["then", "followed", "before", "after"]),
        # temporal prompts whose ordered events occur in no training caption (t2a_lib.world.overlap)
        "novel order": lambda t: t.novel_order.astype(bool) if "novel_order" in t else pd.Series(False, index=t.index),
        "non-temporal": lambda t: ~t.relation.isin(["then", "followed", "before", "after"]),
    },
    "baton": {
        "Integrity": lambda t: t.task == "integrity",
        "Temporal": lambda t: t.task == "temporal",
    },
}


@dataclass(frozen=True)
class Claim:
    key: str
    claim: str
    paper: str  # the paper's own figure, for orientation (AudioCaps, real models)
    model: str  # model identifier (MODEL_NAMES)
    baseline: str
    prompts: str  # evaluation prompt set: "tango" or "baton"
    subset: str
    metric: str  # per-clip judge column: presence | all_present | order | clap
    direction: int = 1  # +1: the paper claims the model is higher
    family: str = "paper"  # "paper" | "control" | "beyond": Holm's adjustment runs within a family
    margin: float | None = None  # a "matched" claim: tested for equivalence within ±margin (TOST)

    @property
    def measure(self) -> str:
        return f"{self.metric} on {self.subset}: {self.model} − {self.baseline}"

    @property
    def max_half_width(self) -> float | None:
        """The power target of the row's interval (None: a continuous score, no fixed target)."""
        if self.metric not in RATE_METRICS or self.margin is not None:
            return None
        return HALF_WIDTH_VS_BASE if self.baseline == "base" else HALF_WIDTH_BETWEEN


CLAIMS = [
    Claim("dpo_clap", "DPO on the preference set raises CLAP over the base model", "Tango 2 Table 3: CLAP 0.54 → 0.57",
          "dpo", "base", "tango", "all", "clap"),
    Claim("dpo_multi_presence", "… most on multi-event prompts (presence)",
          "Tango 2 Table 4: multi-event CLAP 0.54 → 0.57, single 0.51 → 0.52", "dpo", "base", "tango", "multi-event",
          "presence"),
    Claim("dpo_temporal_order", "… and on temporal prompts (order)", "Tango 2 Table 5: temporal CLAP 0.55 → 0.58",
          "dpo", "base", "tango", "temporal", "order"),
    Claim("gold_temporal_order", "Positive control: DPO on gold pairs improves order", "(not in the papers)",
          "gold", "base", "tango", "temporal", "order", family="control"),
    Claim("gold_multi_presence", "Positive control: DPO on gold pairs improves presence", "(not in the papers)",
          "gold", "base", "tango", "multi-event", "presence", family="control"),
    Claim("dpo_novel_order", "DPO improves order on temporal prompts whose order of events no training caption has",
          "(not in the papers: generalisation to an unseen combination)", "dpo", "base", "tango", "novel order",
          "order", family="control"),
    Claim("gold_novel_order", "Positive control on unseen orders of events: DPO on gold pairs",
          "(not in the papers)", "gold", "base", "tango", "novel order", "order", family="control"),
    Claim("gold_vs_ranked", "Known labels beat ranked ones: DPO on gold pairs (the world's renders, labels right by "
          "construction) beats DPO on ranked samples, on the same prompts and as many pairs (order)",
          "(not in the papers; the ceiling of the ranked set)", "gold", "dpo", "tango", "temporal", "order",
          family="control"),
    Claim("dpo_vs_sft", "DPO beats SFT on winners (order)", "Tango 2 §4 (SFT epoch, then DPO)",
          "dpo", "sft", "tango", "temporal", "order"),
    Claim("s1_contributes", "S1 contributes (ablation: DPO − w/o S1, CLAP)", "Tango 2 Table 3: CLAP 0.57 vs 0.56",
          "dpo", "dpo_wo_s1", "tango", "all", "clap"),
    Claim("s2s3_contribute", "S2 & S3 contribute (ablation: DPO − w/o S2&S3, order)", "Tango 2 Table 3: CLAP 0.57 vs 0.54",
          "dpo", "dpo_wo_s2s3", "tango", "temporal", "order"),
    Claim("crpo_vs_dpo", "One round of CRPO beats a static preference set (CLAP)", "TangoFlux: CLAP 0.453 vs 0.448",
          "crpo", "dpo", "tango", "all", "clap"),
    Claim("hd_integrity", "BATON with human labels (HD) improves integrity (all present)", "BATON: CLAP +2.3% (Integrity)",
          "baton_hd", "base", "baton", "Integrity", "all_present"),
    Claim("hd_temporal", "BATON HD improves order on Temporal prompts", "BATON: CLAP +6.0% (Temporal)",
          "baton_hd", "base", "baton", "Temporal", "order"),
    Claim("rd_integrity", "BATON with reward-model labels (RD) improves integrity", "BATON §5",
          "baton_rd", "base", "baton", "Integrity", "all_present"),
    Claim("rd_temporal", "BATON RD improves order on Temporal prompts", "BATON §5",
          "baton_rd", "base", "baton", "Temporal", "order"),
    Claim("hdrd_integrity", "BATON HD+RD improves integrity (all present)", "BATON: CLAP +2.3%, MOS-Q 4.55",
          "baton_hd_rd", "base", "baton", "Integrity", "all_present"),
    Claim("hdrd_temporal", "BATON HD+RD improves order on Temporal prompts", "BATON: CLAP +6.0%, MOS-F 4.41",
          "baton_hd_rd", "base", "baton", "Temporal", "order"),
    Claim("hdrd_vs_hd", "HD+RD beats HD alone (order, Temporal)", "BATON §5: combining HD and RD beats either",
          "baton_hd_rd", "baton_hd", "baton", "Temporal", "order"),
    # beyond the papers: Diffusion-KTO on BATON's labels, the winner safeguard, the ranker-judge gap
    Claim("kto_integrity", "Diffusion-KTO on HD labels improves integrity (all present)",
          "(beyond the papers) Li et al. 2024: KTO on per-image likes", "kto_hd", "base", "baton", "Integrity",
          "all_present", family="beyond"),
    Claim("kto_temporal", "Diffusion-KTO on HD labels improves order on Temporal prompts", "(beyond the papers)",
          "kto_hd", "base", "baton", "Temporal", "order", family="beyond"),
    Claim("kto_vs_baton_integrity", "KTO beats reward-weighted fine-tuning on the same HD labels (all present)",
          "(beyond the papers)", "kto_hd", "baton_hd", "baton", "Integrity", "all_present", family="beyond"),
    Claim("kto_vs_baton_temporal", "KTO beats reward-weighted fine-tuning on the same HD labels (order)",
          "(beyond the papers)", "kto_hd", "baton_hd", "baton", "Temporal", "order", family="beyond"),
    Claim("sdpo_vs_dpo", "The winner safeguard (SDPO) beats plain DPO (order, temporal)",
          "(beyond the papers) Fu et al. 2025: SDPO over Diffusion-DPO", "dpo_safe", "dpo", "tango", "temporal",
          "order", family="beyond"),
    Claim("dpo_ranker_gap", "DPO's gain on its rankers is matched by the judges' (CLAP, within ±0.10 base-model sd)",
          "(beyond the papers: reward hacking made visible)", "dpo", "base", "tango", "all", GAP_PREFIX + "clap",
          direction=-1, family="beyond", margin=GAP_MARGIN["clap"]),
    Claim("hdrd_ranker_gap", "BATON HD+RD's gain on its rankers is matched by the judges' (all present, Integrity, "
          "within ±0.05)",
          "(beyond the papers: reward hacking made visible)", "baton_hd_rd", "base", "baton", "Integrity",
          GAP_PREFIX + "all_present", direction=-1, family="beyond", margin=GAP_MARGIN["all_present"]),
]


def claims_frame(claims=CLAIMS) -> pd.DataFrame:
    """The claims table as a DataFrame (one row per claim)."""
    return pd.DataFrame([{**c.__dict__, "measure": c.measure, "target half-width": c.max_half_width} for c in claims])


# ----------------------------------------------------------------------------- the statistics


def verdict(diff: float, lo: float, hi: float, direction: int = 1) -> str:
    """'reproduced' when [lo, hi] excludes zero in the claimed direction, 'contradicted' when it
    excludes zero the other way, 'not shown' when it contains zero, 'not measured' without an
    interval."""
    if lo is None or hi is None or np.isnan(lo) or np.isnan(hi):
        return "not measured"
    if (lo > 0 and direction > 0) or (hi < 0 and direction < 0):
        return "reproduced"
    if (hi < 0 and direction > 0) or (lo > 0 and direction < 0):
        return "contradicted"
    return "not shown"


def pooled_values(tables: list[pd.DataFrame], metric: str) -> np.ndarray:
    """Per-clip values averaged over a model's seeds (tables on the same prompts, same order)."""
    if not tables:
        raise ValueError("no tables to pool")
    first = list(tables[0].caption)
    for t in tables[1:]:
        if list(t.caption) != first:
            raise ValueError("a model's seeds were evaluated on different prompts")
    return np.mean([t[metric].to_numpy(float) for t in tables], axis=0)


def _fmt(e: dict) -> str:
    if np.isnan(e["difference"]):
        return "—"
    return f"{e['difference']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}]"


def _where(model_id: str) -> str:
    """A model this run did not evaluate, with the switch and profile that train it."""
    if model_id not in SWITCHED_OFF_IN_DEFAULT:
        return model_id
    switch, profile = SWITCHED_OFF_IN_DEFAULT[model_id]
    return f"{model_id} (trained with {switch}, on in the `{profile}` profile)"


def _why_unmeasured(metric: str, table: pd.DataFrame) -> str:
    """Why a table lacks ``metric``: on real data (a CLAP-only table) the world's judges are absent."""
    if "presence" not in table and (metric in RATE_METRICS or metric.startswith(GAP_PREFIX)):
        from ..scoring.clap_family import WHY_NOT

        what = f"the ranker-judge gap ({metric})" if metric.startswith(GAP_PREFIX) else metric
        return f"{what} {WHY_NOT}"
    return f"no per-clip {metric} in the tables"


def _matrix(tables: list[pd.DataFrame], metric: str, mask: np.ndarray) -> np.ndarray:
    """A model's ``seeds × prompts`` values of ``metric`` on the masked prompts."""
    return np.stack([t[metric].to_numpy(float)[mask] for t in tables])


def _lent_seed_variance(claim: Claim, tables: dict, metric: str, mask: np.ndarray) -> tuple | None:
    """Per side, what a fine-tune trained once borrows: the seed variance pooled over this prompt
    set's fine-tunes with two or more seeds (None for the base, or a side with its own seeds).
    Raises LookupError when a one-seed fine-tune has nothing to borrow from."""
    lent = []
    for model_id in (claim.model, claim.baseline):
        if model_id == "base" or len(tables[model_id]) > 1:
            lent.append(None)
            continue
        pooled = inference.pooled_seed_variance([_matrix(ts, metric, mask) for m, ts in tables.items()
                                                 if m != "base" and len(ts) > 1])
        if pooled is None:
            raise LookupError(f"{model_id} has one training seed and no model of its prompt set has two: its seed "
                              f"variance cannot be estimated (train n_seeds >= 2)")
        lent.append(pooled)
    return tuple(lent)


def _effect(claim: Claim, tables: dict, metric: str, mask: np.ndarray) -> inference.SeedPromptEffect:
    """The row's difference with its interval over prompts and training seeds."""
    lent = _lent_seed_variance(claim, tables, metric, mask)
    return inference.seed_prompt_effect(_matrix(tables[claim.model], metric, mask),
                                        _matrix(tables[claim.baseline], metric, mask), ALPHA, lent)


def _interval(effect: inference.SeedPromptEffect) -> str:
    if not np.isfinite(effect.low):
        return "—"
    return f"{effect.difference:+.3f} [{effect.low:+.3f}, {effect.high:+.3f}]"


def answer(claim: Claim, tables: dict[str, list[pd.DataFrame]], n_boot: int = 1000, seed: int = 0) -> dict:
    """One row of the claims table, unadjusted (:func:`answer_all` adjusts a family). ``tables`` maps
    a model identifier to its per-seed judge tables on the claim's prompt set (every model on the
    same prompts, in the same order)."""
    row = {"key": claim.key, "family": claim.family, "claim": claim.claim, "paper": claim.paper,
           "measure": claim.measure}
    if claim.model not in tables or claim.baseline not in tables:
        missing = [m for m in (claim.model, claim.baseline) if m not in tables]
        return {**row, "ours": "—", "verdict": "not measured", "why": "not evaluated: " + ", ".join(map(_where, missing))}
    base_tables = tables[claim.baseline]
    if claim.metric not in base_tables[0]:
        return {**row, "ours": "—", "verdict": "not measured", "why": _why_unmeasured(claim.metric, base_tables[0])}
    mask = SUBSETS[claim.prompts][claim.subset](base_tables[0]).to_numpy()
    if mask.sum() < 2:
        return {**row, "n": int(mask.sum()), "ours": "—", "verdict": "not measured",
                "why": f"{int(mask.sum())} prompts in the subset {claim.subset!r}"}
    b = pooled_values(base_tables, claim.metric)[mask]
    prompts_only = paired_effect(pooled_values(tables[claim.model], claim.metric)[mask], b, n_boot, seed)
    per_seed = [paired_effect(t[claim.metric].to_numpy(float)[mask], b, n_boot, seed) for t in tables[claim.model]]
    row.update({"n": prompts_only["n"], "seeds": len(per_seed), "per seed": "; ".join(_fmt(e) for e in per_seed),
                "prompt-only interval": _fmt(prompts_only), "prompt-only low": prompts_only["low"],
                "prompt-only high": prompts_only["high"],
                "baseline value": float(np.nanmean(b)) if np.isfinite(b).any() else np.nan,
                "target half-width": claim.max_half_width, "margin": claim.margin})
    try:
        e = _effect(claim, tables, claim.metric, mask)
    except LookupError as err:
        return {**row, "ours": "—", "verdict": "not shown", "why": str(err)}
    row.update({"ours": _interval(e), "difference": e.difference, "low": e.low, "high": e.high,
                "half-width": (e.high - e.low) / 2, "se": e.se, "df": e.df, "seed sd": e.seed_se,
                "MDE": inference.t_quantile_mde(e, ALPHA),
                "test": "difference" if claim.margin is None else f"equivalence within ±{claim.margin:g}",
                "p": e.p if claim.margin is None else e.equivalence_p(claim.margin)})
    cont = CONTINUOUS.get(claim.metric)
    if cont is not None and cont in base_tables[0]:
        c = _effect(claim, tables, cont, mask)
        row["continuous"] = f"{cont} {_interval(c)}"
        row["continuous verdict"] = verdict(c.difference, c.low, c.high, claim.direction)
    target = claim.max_half_width
    row["powered"] = None if target is None else bool(np.isfinite(row["half-width"]) and row["half-width"] <= target)
    return {**row, **_adjusted(claim, row, row["p"], ALPHA)}


def _adjusted(claim: Claim, row: dict, p_adjusted: float, level: float) -> dict:
    """The verdict at Holm's adjusted p, and the interval at the row's Holm level: a difference row is
    *reproduced* when the adjusted test rejects zero on the claimed side (*contradicted*: the other
    side); a matched (equivalence) row when both one-sided tests reject ±margin, *contradicted* when
    its adjusted interval lies wholly beyond the margin on the side the claim denies."""
    if not np.isfinite(p_adjusted):
        return {"adjusted p": np.nan, "adjusted interval": "—", "verdict": "not shown"}
    half = scipy_t.ppf(1 - level / 2, row["df"]) * row["se"] if row["se"] > 0 else 0.0
    lo, hi, d = row["difference"] - half, row["difference"] + half, row["difference"]
    out = {"adjusted p": p_adjusted, "adjusted interval": f"[{lo:+.3f}, {hi:+.3f}]"}
    if claim.margin is None:
        shown = p_adjusted < ALPHA and d != 0
        return {**out, "verdict": "not shown" if not shown else
                "reproduced" if np.sign(d) == claim.direction else "contradicted"}
    if p_adjusted < ALPHA:
        return {**out, "verdict": "reproduced"}
    beyond = lo > claim.margin if claim.direction < 0 else hi < -claim.margin
    return {**out, "verdict": "contradicted" if beyond else "not shown"}


def answer_all(tables: dict[str, dict[str, list[pd.DataFrame]]], claims=CLAIMS, n_boot: int = 1000,
               seed: int = 0) -> pd.DataFrame:
    """Every claim answered: ``tables[prompt_set][model id]`` holds the per-seed judge tables. The
    verdicts are adjusted by Holm's method within each family over its measured rows (familywise 5%);
    each row keeps its unadjusted p beside the adjusted one."""
    rows = [answer(c, tables.get(c.prompts, {}), n_boot, seed) for c in claims]
    by_key = {c.key: c for c in claims}
    for family in FAMILIES:
        members = [r for r in rows if r["family"] == family and np.isfinite(r.get("p", np.nan))]
        p = [r["p"] for r in members]
        for r, p_adj, level in zip(members, inference.holm(p), inference.holm_levels(p, ALPHA)):
            r.update(_adjusted(by_key[r["key"]], r, float(p_adj), float(level)))
    answered = pd.DataFrame(rows)
    for count in ("n", "seeds"):  # counts stay integers beside the rows that have none
        if count in answered:
            answered[count] = answered[count].astype("Int64")
    return answered


def plot_effects(answered: pd.DataFrame, title: str, path=None):
    """Each answered row's difference with its 95% interval, one line per claim (rows
    without an interval left out); saved to ``path`` when given. Returns the figure."""
    import matplotlib.pyplot as plt

    answered = answered.reindex(columns=list(answered.columns) + [c for c in ("difference", "low", "high")
                                                                  if c not in answered])  # nothing measured: empty
    show = answered[answered.difference.notna()]
    fig, ax = plt.subplots(figsize=(10, 0.5 + 0.45 * len(show)))
    y = np.arange(len(show))
    ax.errorbar(show.difference, y, xerr=[show.difference - show.low, show.high - show.difference], fmt="o", capsize=3)
    ax.axvline(0, color="k", linestyle=":")
    ax.set_yticks(y, [textwrap.shorten(c, 70) for c in show.claim], fontsize=7)
    ax.invert_yaxis()
    ax.set(title=title, xlabel="difference")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=90)
    return fig
