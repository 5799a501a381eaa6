"""The committed release: made for the default world (a stale release fails here), small, safe
to load, loadable, and used only on the world it was trained on."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from t2a_lib.model import release
from t2a_lib.model.release import RELEASES
from t2a_lib.scoring import scorers
from t2a_lib.world import datasets

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "papermill_runs" / "profiles"


def _profile(name):
    return yaml.safe_load((PROFILES / f"{name}.yaml").read_text())


def test_release_is_made_for_the_default_world(tmp_path):
    prof = _profile("default")
    world = prof["notebooks"]["00_world"]
    expected = release.planned_world_fingerprint(world["n_train"], world["n_val"], world["n_test"], prof["seed"],
                                                 prof["parameters"]["clip_seconds"], tmp_path)
    for part in ("base", "scorers"):
        info = release.read_release(RELEASES / part)
        assert info["world_fingerprint"] == expected, (
            f"releases/{part} was trained on world {info['world_fingerprint']}, the default profile's world is "
            f"{expected}: the release is stale, rebuild it with `make base`")


def test_fingerprint_of_a_built_world_equals_the_planned_one(tmp_path):
    datasets.build_world(tmp_path / "w", 30, 6, 6, seed=5, progress=False, workers=1)
    built = release.world_fingerprint(tmp_path / "w", n_audio=4)
    assert built == release.planned_world_fingerprint(30, 6, 6, 5, 2.56, tmp_path / "plan", n_audio=4)
    assert built != release.planned_world_fingerprint(30, 6, 6, 6, 2.56, tmp_path / "other", n_audio=4)


def test_release_is_small_and_holds_no_pickles():
    files = [p for p in RELEASES.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    assert size <= 25 * 2 ** 20, f"releases/ is {size / 2 ** 20:.1f} MiB, over the 25 MiB budget"
    allowed = {".safetensors", ".json", ".md", ".txt"}
    assert not [p for p in files if p.suffix not in allowed], "only safetensors weights and text files belong in releases/"
    for part in ("base", "scorers"):
        assert (RELEASES / part / "MODEL_CARD.md").is_file()


def test_released_models_load_and_keep_their_roles():
    pipe, info = release.load_base()
    audio = pipe(["A dog barks, then a siren wails"], num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0)).audios
    assert audio.shape == (1, 40960) and np.isfinite(audio).all()
    assert set(info["components"]) == {"text", "vae", "vocoder", "unet"}
    assert info["held_out"]["by_kind"]["all"]["clips"] > 0
    judges = scorers.Scorers.load(RELEASES / "scorers" / "judges", "judge")
    rankers = scorers.Scorers.load(RELEASES / "scorers" / "rankers", "ranker")
    assert len(rankers.audiotext) == 2 and len(judges.audiotext) == 1
    with pytest.raises(ValueError, match="judges and rankers never mix"):
        scorers.Scorers.load(RELEASES / "scorers" / "judges", "ranker")


def test_default_trains_the_release_recipe_when_it_must():
    default, scratch = _profile("default"), _profile("scratch")
    for stem in ("00_world", "01_judges", "02_base_model"):
        mine = {k: v for k, v in default["notebooks"][stem].items() if k != "use_release"}
        theirs = {k: v for k, v in scratch["notebooks"][stem].items() if k != "use_release"}
        if stem == "02_base_model":  # evaluation sizes are not part of the recipe
            mine = {k: v for k, v in mine.items() if not k.startswith(("eval_", "n_"))}
            theirs = {k: v for k, v in theirs.items() if not k.startswith(("eval_", "n_"))}
        assert mine == theirs, f"default and scratch train {stem} differently"
    assert scratch["notebooks"]["01_judges"]["use_release"] is False
    assert scratch["notebooks"]["02_base_model"]["use_release"] is False


def _default_recipe() -> dict:
    """Notebook 02's recipe as `default` runs it: the parameters cell's defaults, the profile's values over them."""
    import ast

    import papermill

    declared = papermill.inspect_notebook("notebooks/02_base_model.ipynb")
    values = {name: ast.literal_eval(info["default"]) for name, info in declared.items()}
    default = _profile("default")
    values.update(seed=default["seed"], **default["notebooks"]["02_base_model"])
    return {k: values[k] for k in release.RECIPE}


def test_the_release_records_the_recipe_default_would_train_and_a_change_is_named():
    info = release.read_release(RELEASES / "base")
    recipe = _default_recipe()
    assert release.recipe_mismatch(info, recipe) == []
    changed = {**recipe, "unet_steps": recipe["unet_steps"] + 200}
    assert release.recipe_mismatch(info, changed) == [
        f"unet_steps: the release {recipe['unet_steps']}, this notebook {recipe['unet_steps'] + 200}"]
    assert release.recipe_mismatch({k: v for k, v in info.items() if k != "recipe"}, recipe) == [
        "the release records no training recipe"]


def test_another_world_is_refused_with_the_reason(tmp_path):
    run = tmp_path / "run"
    datasets.build_world(run / "world", 30, 6, 6, seed=5, progress=False, workers=1)
    used, why = release.install_scorers(run, "the data key of this world")
    assert not used and "trained on world" in why
    assert not (run / "scorers").exists()
    info, why = release.matching_release(RELEASES / "base", run / "world")
    assert info is None and release.world_fingerprint(run / "world") in why
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "release.json").write_text("{not json")
    with pytest.raises(release.ReleaseError, match="unreadable"):
        release.read_release(tmp_path / "broken")
    assert json.loads((RELEASES / "base" / "release.json").read_text())["command"] == "make base"


def test_default_uses_the_dpo_settings_the_scratch_sweep_chose():
    import pandas as pd

    from t2a_lib.align.dpo import sweep_choice

    recorded = json.loads((ROOT / "docs" / "dpo_sweep.json").read_text())
    chosen = sweep_choice(pd.DataFrame(recorded["table"]))
    dpo = _profile("default")["notebooks"]["04_dpo"]
    assert (dpo["lr"], dpo["beta"], dpo["dpo_steps"]) == (chosen["lr"], chosen["beta"], chosen["steps"])
    scratch = _profile("scratch")["notebooks"]["04_dpo"]  # the sweep's centre, which the recorded table starts from
    assert (scratch["lr"], scratch["beta"], scratch["dpo_steps"]) == tuple(recorded["table"][1][k] for k in ("lr", "beta", "steps"))


def _default_families(run_dir):
    """The scorer configs notebook 01 asks for under the default profile (as its families cell)."""
    prof = _profile("default")
    nb = prof["notebooks"]["01_judges"]
    return {role: (folder, *scorers.scorer_configs(role, scorers.DEFAULT_SEEDS[role] + prof["seed"],
                                                   2 if role == "ranker" else 1,
                                                   nb["detector_epochs"], nb["audiotext_epochs"]))
            for role, folder in (("ranker", scorers.rankers_dir(run_dir)), ("judge", scorers.judges_dir(run_dir)))}


def test_installed_release_is_loaded_by_fit_scorers_for_its_data_only(tmp_path, monkeypatch):
    """install_scorers records each released model under the key fit_scorers looks up: the
    default profile's configs on this world's data load it and train nothing; other data retrains."""
    from t2a_lib.audio.manifest import ManifestRecord
    from t2a_lib.run.files import load_fit

    recs = [ManifestRecord("w", "a.wav", "a dog barks")]
    train, test = (torch.zeros(1, 64, 8), recs), (torch.ones(1, 64, 8), recs)
    data = scorers.data_key(train, test)
    monkeypatch.setattr(release, "matching_release", lambda folder, world: ({}, ""))  # as for the default world
    run = tmp_path / "run"
    (run / "scorers" / "judges" / "detector").mkdir(parents=True)
    (run / "scorers" / "judges" / "detector" / "fit.json").write_text('{"key": "a model trained here"}')
    assert release.install_scorers(run, data) == (True, "")
    families = _default_families(run)
    for folder, det, ats in families.values():
        for name, cfg in [("detector", det)] + [(f"audiotext_{i}", c) for i, c in enumerate(ats)]:
            assert load_fit(Path(folder) / name, scorers.fit_key(cfg, data), scorers.SCORER_FILES) is not None, name
            assert load_fit(Path(folder) / name, scorers.fit_key(cfg, "other data"), scorers.SCORER_FILES) is None

    def no_training(*args, **kwargs):
        raise AssertionError("fit_scorers trained a released model")

    monkeypatch.setattr(scorers, "train_scorer", no_training)
    sets, cards = scorers.fit_scorers(families, train, test, progress=False)
    assert len(sets["ranker"].audiotext) == 2 and len(sets["judge"].audiotext) == 1
    released = json.loads((RELEASES / "scorers" / "rankers" / "detector" / "model_card.json").read_text())
    assert cards["ranker/detector"] == released
