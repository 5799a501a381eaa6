"""The bad-input catalogue (issue 17): every case a clear error naming the file, line or field,
or a correct result, and nothing overwritten. Tiny fixtures only; no notebook is executed."""
from __future__ import annotations

import numpy as np
import pytest

from t2a_lib import captions, pipeline
from t2a_lib.params import check_value, parse_value
from t2a_lib.pipeline import PipelineError


# -- parameters: checked before anything runs ------------------------------------------------

@pytest.fixture(scope="module")
def smoke_declared():
    nbs = pipeline.discover_notebooks(pipeline.ROOT / "notebooks")
    return pipeline.load_profile("smoke"), pipeline.declared_parameters(nbs)


@pytest.mark.parametrize("text, value", [
    ("1e-4", 1e-4), ("1E5", 1e5), ("-2.5e-3", -2.5e-3), ("3", 3), ("0.5", 0.5), ("abc", "abc"),
    ("[1e-4, 2e-5]", [1e-4, 2e-5]), ("true", True), ("null", None), ("'x: y", "'x: y"),
])
def test_set_values_parse_as_numbers(text, value):
    got = parse_value(text)
    assert got == value and type(got) is type(value)


def test_set_lr_reaches_the_stage_as_a_float(smoke_declared):
    prof, declared = smoke_declared
    params = pipeline.check_parameters(prof, declared, pipeline._parse_sets(["04_dpo.lr=1e-4"]))
    assert params["04_dpo"]["lr"] == 1e-4 and isinstance(params["04_dpo"]["lr"], float)


@pytest.mark.parametrize("sets, field, why", [
    (["04_dpo.dpo_steps=abc"], "04_dpo.dpo_steps", "must be an integer"),
    (["04_dpo.dpo_steps=-3"], "04_dpo.dpo_steps", ">= 1"),
    (["04_dpo.dpo_steps=0"], "04_dpo.dpo_steps", ">= 1"),
    (["batch_size=0"], "04_dpo.batch_size", ">= 1"),  # refused although the profile sets its own
    (["00_world.n_train=0"], "00_world.n_train", ">= 1"),
    (["04_dpo.lr=-1e-4"], "04_dpo.lr", "> 0"),
    (["04_dpo.lr=fast"], "04_dpo.lr", "must be a number"),
    (["02_base_model.use_release=yes please"], "02_base_model.use_release", "true or false"),
    (["eval_output=wav"], "eval_output", "one of"),
    (["04_dpo.sweep_lr=[1e-4, -1]"], "04_dpo.sweep_lr", "every element"),
    (["05_feedback.held_out=1.5"], "05_feedback.held_out", "<= 1"),
    (["00_world.external_manifests=[a, b]"], "00_world.external_manifests", "train/val/test"),
    (["clip_seconds=.nan"], "clip_seconds", "finite"),
])
def test_nonsense_parameters_refused_naming_the_field(smoke_declared, sets, field, why):
    prof, declared = smoke_declared
    with pytest.raises(PipelineError) as err:
        pipeline.check_parameters(prof, declared, pipeline._parse_sets(sets))
    assert err.value.exit_code == 2 and field in str(err.value) and why in str(err.value)


def test_nonsense_parameter_on_the_command_line_exits_2(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = pipeline.main(["--profile", "smoke", "--run-dir", str(run_dir), "--set", "04_dpo.dpo_steps=abc"])
    err = capsys.readouterr().err
    assert code == 2 and "04_dpo.dpo_steps = 'abc'" in err and "must be an integer" in err
    assert not run_dir.exists()


def test_bad_parameter_refused_before_the_run_folder_is_touched(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "pipeline.json").write_text("{}")
    with pytest.raises(PipelineError, match="04_dpo.dpo_steps = 0") as err:
        pipeline.run_pipeline("smoke", run_dir=run_dir, overrides={"04_dpo.dpo_steps": 0}, report=False)
    assert err.value.exit_code == 2
    assert [p.name for p in run_dir.iterdir()] == ["pipeline.json"]
    assert (run_dir / "pipeline.json").read_text() == "{}"


@pytest.mark.parametrize("value, ok", [(1000, True), (96, True), (1, True), (0, False), (2.5, False)])
def test_n_train_values(value, ok):
    assert (check_value("00_world", "n_train", value, {"default": "200"}) is None) == ok


def test_every_profile_passes_its_own_checks(smoke_declared):
    _, declared = smoke_declared
    for path in sorted(pipeline.PROFILES_DIR.glob("*.yaml")):
        pipeline.check_parameters(pipeline.load_profile(path), declared)


def test_perturbation_demo_survives_three_event_captions():
    """n_train=1000 drew a three-event caption, and `add` raised in notebook 00's demo cell."""
    three = captions.render_caption(captions.CaptionSpec(("dog_bark", "siren", "bell"), "then"),
                                    np.random.default_rng(0))
    rows = captions.perturbation_demo([three], np.random.default_rng(0))
    kinds = {r["perturbation"]: r["perturbed"] for r in rows}
    assert set(kinds) == set(captions.PERTURBATIONS) and kinds["add"] == "—"
    assert kinds["drop"] != "—" and captions.parse_caption(kinds["drop"]).labels != ("dog_bark", "siren", "bell")


def test_deleted_notebook_named_once(tmp_path, smoke_declared):
    prof, declared = smoke_declared
    declared = {k: v for k, v in declared.items() if k != "03_preferences"}
    with pytest.raises(PipelineError) as err:
        pipeline.check_parameters(prof, declared)
    msg = str(err.value)
    assert msg.count("03_preferences") == 1 and "deleted or renamed" in msg
