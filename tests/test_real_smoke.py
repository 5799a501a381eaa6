"""The real-smoke profile runs every notebook on the real path through papermill: a tiny random Tango
snapshot loaded (never trained) as the base, AudioCaps-format data with free-form captions and no
timelines, two tiny real CLAP folders as rankers and judges, BATON's label files as published. What
the world's judges would measure is reported as not measured, with the reason."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from real_smoke_fixtures import overrides, write_fixtures
from t2a_lib.audio.wav import read_wav
from t2a_lib.run.runner import run_profile
from t2a_lib.scoring.clap_family import WHY_NOT
from t2a_lib.world.datasets import load_split

STAGES = ["00_world", "01_judges", "02_base_model", "03_preferences", "04_dpo", "05_feedback", "06_baton",
          "07_reproduce"]


@pytest.fixture(scope="module")
def real_smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("real-smoke")
    paths = write_fixtures(root / "data")
    run_dir = root / "run"
    result = run_profile("real-smoke", run_dir=run_dir, report_dir=root / "report", overrides=overrides(paths))
    return run_dir, result, paths


def _json(run_dir: Path, stem: str) -> dict:
    return json.loads((run_dir / f"{stem}.json").read_text())


@pytest.mark.slow
def test_every_notebook_ran_on_the_real_path(real_smoke):
    run_dir, result, _ = real_smoke
    assert result["status"] == "ok"
    assert [s["stage"] for s in result["stages"]] == STAGES
    assert all(s["status"] == "ok" and s["results"] for s in result["stages"])
    world = json.loads((run_dir / "world" / "world.json").read_text())
    assert world["source"] == "external" and world["sizes"] == {"train": 16, "val": 6, "test": 8}


@pytest.mark.slow
def test_the_scorers_are_the_two_real_claps(real_smoke):
    run_dir, _, paths = real_smoke
    scorers = _json(run_dir, "01_judges")["scorers"]
    assert scorers["kind"] == "real CLAP" and not scorers["same_model"]
    assert scorers["judge"] == str(Path(paths["clap_judge"]).resolve())
    assert scorers["ranker"] == str(Path(paths["clap_ranker"]).resolve())
    assert not (run_dir / "scorers" / "judges").exists()  # nothing of the world's was trained


@pytest.mark.slow
def test_the_base_was_loaded_from_the_checkpoint_at_the_length_asked_for(real_smoke):
    run_dir, _, paths = real_smoke
    base = _json(run_dir, "02_base_model")
    ckpt = base["base_checkpoint"]
    assert ckpt["checkpoint"] == str(Path(paths["tango"]).resolve())
    assert ckpt["checkpoint_sample_seconds"] == pytest.approx(10.24)  # Tango's own length, by default
    assert ckpt["sample_seconds"] == pytest.approx(2.56) and ckpt["latent_shape"] == [8, 64, 16]  # the profile's
    assert base["bit_exact_reload"] and "unet" not in base and "text_encoder" not in base  # nothing trained
    assert not (run_dir / "base" / "unet").exists() and not (run_dir / "base" / "pipeline").exists()  # referenced
    assert ckpt["referenced"] and str(Path(paths["tango"]).resolve() / "pytorch_model_main.bin") in ckpt["files"]
    assert base["measures"] == ["clap"] and base["by_kind"]["all"]["clips"] == 4


@pytest.mark.slow
def test_the_preference_set_is_ranked_by_the_real_clap_with_s1_pairs_only(real_smoke):
    run_dir, _, _ = real_smoke
    pairs = pd.read_parquet(run_dir / "preferences" / "preferences.parquet")
    assert len(pairs) > 0 and set(pairs.strategy) <= {"S1.1", "S1.2"}
    assert {"prompt", "chosen", "rejected", "strategy", "chosen_score", "rejected_score"} <= set(pairs.columns)
    assert (pairs.chosen_score >= pairs.rejected_score).all() and "truth" not in pairs
    assert all((run_dir / "preferences" / p).is_file() for p in pairs.chosen)
    assert len(read_wav(run_dir / "preferences" / pairs.chosen[0])) == 40960  # the base samples 2.56 s
    assert _json(run_dir, "03_preferences")["gold_pairs"]["pairs"] == 0


@pytest.mark.slow
def test_batons_files_were_read_as_the_fine_tunes_data(real_smoke):
    run_dir, _, _ = real_smoke
    feedback = _json(run_dir, "05_feedback")
    assert feedback["released_labels"]["hd"].endswith("2label_HA.json")
    assert feedback["hd_clips"] == 6 and feedback["rd_clips"] == 8
    sets = _json(run_dir, "06_baton")["sets"]
    assert sets["baton_hd"]["clips"] == 6 and sets["baton_rd"]["clips"] == 8 and sets["baton_hd_rd"]["clips"] == 14


@pytest.mark.slow
def test_claims_measure_clap_and_say_why_the_judge_rows_are_not_measured(real_smoke):
    run_dir, _, _ = real_smoke
    claims = pd.DataFrame(_json(run_dir, "07_reproduce")["claims"]).set_index("key")
    assert claims.loc["dpo_clap", "verdict"] in ("reproduced", "contradicted", "not shown")
    assert claims.loc["dpo_clap", "n"] == 4 and claims.loc["crpo_vs_dpo", "verdict"] != "not measured"
    for key in ("dpo_temporal_order", "dpo_multi_presence", "hdrd_integrity", "hd_temporal"):
        assert claims.loc[key, "verdict"] == "not measured" and WHY_NOT in claims.loc[key, "why"], key
    assert claims.loc["gold_temporal_order", "why"] == "not evaluated: gold"
    assert _json(run_dir, "07_reproduce")["measures"] == ["clap"]
    assert (run_dir / "tables" / "clap.csv").is_file() and (run_dir / "tables" / "claims.csv").is_file()


@pytest.fixture(scope="module")
def released_alpaca_run(real_smoke, tmp_path_factory):
    """03 and 04 again, on a copy of the real-smoke run, with Tango 2's released audio-alpaca read
    (``03_preferences.audio_alpaca_path``) instead of a set sampled from the base."""
    run_dir, _, paths = real_smoke
    copy = tmp_path_factory.mktemp("released-alpaca") / "run"
    shutil.copytree(run_dir, copy)
    sets = {**overrides(paths), "03_preferences.audio_alpaca_path": paths["audio_alpaca"]}
    result = run_profile("real-smoke", run_dir=copy, only=["03_preferences", "04_dpo"], overrides=sets, report=False)
    return copy, result, paths


@pytest.mark.slow
def test_dpo_trains_on_the_released_audio_alpaca_as_published(released_alpaca_run):
    run_dir, result, paths = released_alpaca_run
    assert result["status"] == "ok"
    pairs = pd.read_parquet(run_dir / "preferences" / "preferences.parquet")
    train = load_split(Path(paths["audio_alpaca"]).parent / "world-source", "train")
    assert len(pairs) == len(train) // 2 and set(pairs.strategy) == {"inference steps", "temporal perturbation"}
    assert pairs.source_file.str.endswith("train-00000-of-00001.parquet").all() and pairs.chosen_score.isna().all()
    assert pairs.source_row.tolist() == list(range(len(pairs)))
    listened = pairs[pairs.chosen != ""]
    assert len(read_wav(run_dir / "preferences" / listened.chosen.iloc[0])) == 40960  # cut to the base's 2.56 s
    results = _json(run_dir, "03_preferences")
    assert results["pairs"] == len(pairs) and results["released_audio_alpaca"]["source"] == paths["audio_alpaca"]
    assert results["candidate_pairs"] == 0 and "generation_clips_per_second" not in results
    assert _json(run_dir, "04_dpo")["pairs"]["ranked"] == len(pairs)  # DPO trained on the released pairs
