"""The claims table: verdict logic, paired effects, seed pooling and the minimum detectable effect,
each against an independent computation."""

import numpy as np
import pandas as pd
import pytest

from t2a_lib.evaluate import claims, inference
from t2a_lib.evaluate.claims import CLAIMS, Claim, answer, minimum_detectable_effect, paired_effect, verdict


def test_verdict_cases():
    assert verdict(0.1, 0.02, 0.18) == "reproduced"
    assert verdict(-0.1, -0.18, -0.02) == "contradicted"
    assert verdict(0.01, -0.05, 0.07) == "not shown"
    assert verdict(-0.1, -0.18, -0.02, direction=-1) == "reproduced"
    assert verdict(0.1, 0.02, 0.18, direction=-1) == "contradicted"
    assert verdict(0.0, np.nan, np.nan) == "not measured"
    assert verdict(0.0, 0.0, 0.1) == "not shown"  # an interval touching zero does not exclude it


def test_mde_closed_form_and_power_by_simulation():
    rng = np.random.default_rng(0)
    d = rng.normal(0, 0.5, 400)
    z = 1.959963984540054 + 0.8416212335729143  # z_0.975 + z_0.80, written out
    assert minimum_detectable_effect(d) == pytest.approx(z * d.std(ddof=1) / 20, rel=1e-12)
    # a true effect of the MDE is detected (|mean| / SE > 1.96) about 80% of the time
    n, sd = 200, 1.0
    mde = z * sd / np.sqrt(n)
    sims = rng.normal(mde, sd, (4000, n))
    detected = np.abs(sims.mean(1) / (sims.std(1, ddof=1) / np.sqrt(n))) > 1.959963984540054
    assert detected.mean() == pytest.approx(0.80, abs=0.03)
    with pytest.raises(ValueError, match="at least 2"):
        minimum_detectable_effect([0.1])


def test_paired_effect_matches_direct_bootstrap():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 2, 300).astype(float), rng.integers(0, 2, 300).astype(float)
    a[:10] = np.nan  # undefined items are dropped from both sides
    e = paired_effect(a, b, n_boot=500, seed=3)
    d = a[10:] - b[10:]
    idx = np.random.default_rng(3).integers(0, len(d), size=(500, len(d)))
    lo, hi = np.quantile(d[idx].mean(1), [0.025, 0.975])
    assert e["n"] == 290
    assert e["difference"] == pytest.approx(d.mean())
    assert (e["low"], e["high"]) == pytest.approx((lo, hi))
    assert e["half_width"] == pytest.approx((hi - lo) / 2)
    assert e["mde"] == pytest.approx(minimum_detectable_effect(d))
    with pytest.raises(ValueError, match="differ in length"):
        paired_effect(a, b[:-1])


def _table(outcomes, relation="then", task=None):
    n = len(outcomes)
    t = pd.DataFrame({"caption": [f"p{i}" for i in range(n)], "n_events": 2, "relation": relation,
                      "order": np.asarray(outcomes, float), "presence": 1.0, "all_present": 1.0, "clap": 0.5,
                      "order_margin": np.asarray(outcomes, float) * 0.3, "presence_prob": 0.9})
    if task is not None:
        t["task"] = task
    return t


def test_answer_pools_seeds_and_reports_each():
    claim = Claim("k", "c", "p", "dpo", "base", "tango", "temporal", "order")
    base = _table([0] * 100)
    s0 = _table([1] * 60 + [0] * 40)  # +0.6
    s1 = _table([1] * 20 + [0] * 80)  # +0.2
    row = answer(claim, {"dpo": [s0, s1], "base": [base]}, n_boot=200)
    assert row["n"] == 100 and row["seeds"] == 2
    assert row["difference"] == pytest.approx(0.4)  # the pooled (mean of seeds) difference
    assert row["per seed"].startswith("+0.600") and "; +0.200" in row["per seed"]
    assert row["continuous"].startswith("order_margin +0.120")
    # prompts alone would call it: the prompts-only interval is far from zero ...
    assert row["prompt-only low"] > 0.3
    # ... but two seeds 0.4 apart leave the sign of a re-run's effect open (t with about 1 df)
    e = inference.seed_prompt_effect(np.stack([s0.order, s1.order]), base.order.to_numpy(float)[None])
    assert (row["low"], row["high"], row["p"]) == pytest.approx((e.low, e.high, e.p))
    assert row["low"] < 0 < row["high"] and row["verdict"] == "not shown"
    assert row["target half-width"] == 0.05 and row["powered"] is False


def test_holm_within_a_family_turns_a_borderline_row_into_not_shown():
    """Three paper rows: alone, the middle one is reproduced (p < 0.05); adjusted with its family
    (Holm: 2 x p) it is not; the control family is adjusted on its own."""
    rng = np.random.default_rng(5)
    base = _table([0] * 200)
    tables = {"base": [base]}
    outcomes = {"dpo": 0.16, "gold": 0.6}
    for model, rate in outcomes.items():
        tables[model] = [_table((rng.random(200) < rate).astype(float)) for _ in range(3)]
    rows = [Claim("a", "c", "p", "dpo", "base", "tango", "temporal", "presence"),  # presence: 1 - 1 = 0
            Claim("b", "c", "p", "dpo", "base", "tango", "temporal", "order"),
            Claim("c", "c", "p", "gold", "base", "tango", "temporal", "order"),
            Claim("d", "c", "p", "gold", "base", "tango", "temporal", "order", family="control")]
    alone = {c.key: answer(c, tables) for c in rows}
    table = claims.answer_all({"tango": tables}, rows).set_index("key")
    paper = [k for k in "abc"]
    expected = inference.holm([alone[k]["p"] for k in paper])
    assert table.loc[paper, "adjusted p"].to_numpy(float) == pytest.approx(expected)
    assert table.loc["d", "adjusted p"] == pytest.approx(alone["d"]["p"])  # a family of one
    assert table.loc[paper, "p"].to_numpy(float) == pytest.approx([alone[k]["p"] for k in paper])
    for key in table.index:
        shown = table.loc[key, "adjusted p"] < 0.05
        assert (table.loc[key, "verdict"] == "reproduced") == bool(shown), key


def test_a_matched_claim_is_an_equivalence_test():
    claim = Claim("g", "c", "p", "dpo", "base", "tango", "temporal", "order", direction=-1, margin=0.05)
    base = _table([0] * 400)
    rng = np.random.default_rng(6)
    small = {"dpo": [_table(rng.normal(0.0, 0.1, 400)) for _ in range(2)], "base": [base]}
    large = {"dpo": [_table(rng.normal(0.5, 0.1, 400) + d) for d in (0.0, 0.01)], "base": [base]}
    row = answer(claim, small)
    assert row["test"] == "equivalence within ±0.05" and row["powered"] is None
    assert row["verdict"] == "reproduced"  # |gap| < 0.05 shown
    assert answer(claim, large)["verdict"] == "contradicted"  # the rankers see 0.5 more than the judges


def test_a_fine_tune_trained_once_borrows_the_seed_variance_of_its_kind():
    base = _table([0] * 100)
    seeded = [_table([1] * 60 + [0] * 40), _table([1] * 40 + [0] * 60)]
    once = _table([1] * 50 + [0] * 50)
    claim = Claim("k", "c", "p", "sft", "base", "tango", "temporal", "order")
    row = answer(claim, {"sft": [once], "dpo": seeded, "base": [base]})
    lent = inference.pooled_seed_variance([np.stack([t.order.to_numpy(float) for t in seeded])])
    e = inference.seed_prompt_effect(once.order.to_numpy(float), base.order.to_numpy(float), borrowed=(lent, None))
    assert lent[0] > 0 and (row["low"], row["high"]) == pytest.approx((e.low, e.high))
    alone = answer(claim, {"sft": [once], "base": [base]})
    assert alone["verdict"] == "not shown" and "one training seed" in alone["why"]


def test_powered_is_blank_where_a_row_has_no_target():
    t = _table([1, 0] * 50)
    row = answer(next(c for c in CLAIMS if c.key == "dpo_clap"), {"dpo": [t, t], "base": [t]})
    assert row["target half-width"] is None and row["powered"] is None


def test_answer_subset_and_missing_model():
    claim = Claim("k", "c", "p", "baton_hd", "base", "baton", "Temporal", "order", direction=1)
    base = pd.concat([_table([0] * 50, task="temporal"), _table([1] * 50, task="integrity")], ignore_index=True)
    base["caption"] = [f"p{i}" for i in range(100)]
    model = base.copy()
    model.loc[:49, "order"] = 0.0  # no change on Temporal; integrity rows must not count
    model.loc[50:, "order"] = 0.0
    row = answer(claim, {"baton_hd": [model, model], "base": [base]}, n_boot=100)
    assert row["n"] == 50 and row["difference"] == 0.0 and row["verdict"] == "not shown"
    missing = answer(claim, {"base": [base]})
    assert missing["verdict"] == "not measured" and "baton_hd" in missing["why"]


def test_seeds_on_other_prompts_are_refused():
    claim = CLAIMS[0]
    a, b = _table([1, 0, 1]), _table([1, 0, 1])
    b["caption"] = ["x", "y", "z"]
    with pytest.raises(ValueError, match="different prompts"):
        answer(claim, {"dpo": [a, b], "base": [a]})


def test_claims_table_is_complete_data():
    frame = claims.claims_frame()
    assert len(frame) >= 12 and frame.key.is_unique
    for c in CLAIMS:
        assert c.model in claims.MODEL_NAMES and c.baseline in claims.MODEL_NAMES
        assert c.subset in claims.SUBSETS[c.prompts]
        assert c.metric.removeprefix(claims.GAP_PREFIX) in ("presence", "all_present", "order", "clap")
        assert claims.prompt_set(c.model) == c.prompts  # each model on its family's prompts
    targets = {c.key: c.max_half_width for c in CLAIMS}
    assert targets["dpo_temporal_order"] == 0.05 and targets["gold_vs_ranked"] == 0.07 and targets["dpo_clap"] is None
    # beyond the papers: KTO against the base and against BATON on the same labels, the safeguard against DPO
    assert targets["kto_integrity"] == targets["kto_temporal"] == 0.05
    assert targets["kto_vs_baton_integrity"] == targets["kto_vs_baton_temporal"] == targets["sdpo_vs_dpo"] == 0.07
    by_key = {c.key: c for c in CLAIMS}
    assert (by_key["kto_vs_baton_temporal"].model, by_key["kto_vs_baton_temporal"].baseline) == ("kto_hd", "baton_hd")
    gaps = [c for c in CLAIMS if c.metric.startswith(claims.GAP_PREFIX)]
    assert {c.model for c in gaps} == {"dpo", "baton_hd_rd"} and all(c.direction == -1 for c in gaps)


def test_a_claim_without_its_per_clip_column_is_not_measured():
    claim = next(c for c in CLAIMS if c.key == "dpo_ranker_gap")
    t = pd.DataFrame({"caption": ["a", "b"], "n_events": [1, 2], "clap": [0.1, 0.2]})
    row = answer(claim, {"dpo": [t], "base": [t]})
    assert row["verdict"] == "not measured" and "ranker_gap_clap" in row["why"]
    t[claims.GAP_PREFIX + "clap"] = [0.5, 0.1]
    gapped = t.assign(**{claims.GAP_PREFIX + "clap": [0.2, -0.3]})
    row = answer(claim, {"dpo": [gapped, gapped], "base": [t]}, n_boot=200)
    assert row["difference"] == pytest.approx(-0.35)  # mean of (0.2 − 0.5, −0.3 − 0.1)


def test_models_default_leaves_out_are_named_with_the_switch_and_profile_that_train_them():
    """Each switch is off in `default` and on in the profile named, and a row missing such a model
    says where it is measured."""
    import papermill
    import yaml

    from t2a_lib.run.profiles import PROFILES_DIR, ROOT

    def switch_in(profile: str, stem: str, key: str) -> bool:
        declared = papermill.inspect_notebook(str(ROOT / "notebooks" / f"{stem}.ipynb"))[key]["default"]
        entry = yaml.safe_load((PROFILES_DIR / f"{profile}.yaml").read_text())["notebooks"][stem]
        return entry.get(key, declared == "True")

    for model_id, (switch, profile) in claims.SWITCHED_OFF_IN_DEFAULT.items():
        stem, key = switch.split(".")
        assert switch_in("default", stem, key) is False, (model_id, switch)
        assert switch_in(profile, stem, key) is True, (model_id, switch, profile)
    in_claims = {c.model for c in CLAIMS} | {c.baseline for c in CLAIMS}
    assert in_claims - {"base", "dpo", "gold", "baton_hd", "baton_hd_rd"} <= set(claims.SWITCHED_OFF_IN_DEFAULT)
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"caption": list("abcd"), "kind": ["temporal"] * 4, "relation": ["then"] * 4,
                          "order": rng.integers(0, 2, 4).astype(float)})
    row = answer(next(c for c in CLAIMS if c.key == "dpo_vs_sft"), {"dpo": [table], "base": [table]})
    assert row["verdict"] == "not measured"
    assert row["why"] == "not evaluated: sft (trained with 04_dpo.with_sft, on in the `full` profile)"


def test_counts_stay_integers_beside_rows_that_are_not_measured():
    table = pd.DataFrame({"caption": [f"p{i}" for i in range(6)], "kind": ["temporal"] * 6,
                          "relation": ["then"] * 6, "order": [0.0, 1.0, 1.0, 0.0, 1.0, 1.0]})
    keys = ("dpo_temporal_order", "dpo_vs_sft")
    answered = claims.answer_all({"tango": {"dpo": [table, table], "base": [table]}},
                                 [c for c in CLAIMS if c.key in keys], n_boot=50)
    assert answered.n.tolist()[0] == 6 and answered.seeds.tolist()[0] == 2 and pd.isna(answered.n[1])
    assert answered.to_csv(index=False).splitlines()[1].count(",6,2,") == 1  # "6,2", not "6.0,2.0"
