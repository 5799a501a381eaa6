"""The bad-input catalogue (issue 17): every case a clear error naming the file, line or field,
or a correct result, and nothing overwritten. Tiny fixtures only; no notebook is executed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from t2a_lib.run import profiles, runner
from t2a_lib.run.params import check_value, parse_value
from t2a_lib.run.runner import RunnerError
from t2a_lib.world import captions


# -- parameters: checked before anything runs ------------------------------------------------

@pytest.fixture(scope="module")
def smoke_declared():
    nbs = profiles.discover_notebooks(profiles.ROOT / "notebooks")
    return profiles.load_profile("smoke"), profiles.declared_parameters(nbs)


@pytest.mark.parametrize("text, value", [
    ("1e-4", 1e-4), ("1E5", 1e5), ("-2.5e-3", -2.5e-3), ("3", 3), ("0.5", 0.5), ("abc", "abc"),
    ("[1e-4, 2e-5]", [1e-4, 2e-5]), ("true", True), ("null", None), ("'x: y", "'x: y"),
])
def test_set_values_parse_as_numbers(text, value):
    got = parse_value(text)
    assert got == value and type(got) is type(value)


def test_set_lr_reaches_the_stage_as_a_float(smoke_declared):
    prof, declared = smoke_declared
    params = profiles.check_parameters(prof, declared, profiles.parse_sets(["04_dpo.lr=1e-4"]))
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
    (["00_world.external_manifests=[a, b]"], "00_world.external_manifests", "train, val and test"),
    (["00_world.external_manifests={train: a.jsonl}"], "00_world.external_manifests", "train, val and test"),
    (["clip_seconds=.nan"], "clip_seconds", "finite"),
])
def test_nonsense_parameters_refused_naming_the_field(smoke_declared, sets, field, why):
    prof, declared = smoke_declared
    with pytest.raises(RunnerError) as err:
        profiles.check_parameters(prof, declared, profiles.parse_sets(sets))
    assert err.value.exit_code == 2 and field in str(err.value) and why in str(err.value)


def test_nonsense_parameter_on_the_command_line_exits_2(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = runner.main(["--profile", "smoke", "--run-dir", str(run_dir), "--set", "04_dpo.dpo_steps=abc"])
    err = capsys.readouterr().err
    assert code == 2 and "04_dpo.dpo_steps = 'abc'" in err and "must be an integer" in err
    assert not run_dir.exists()


def test_bad_parameter_refused_before_the_run_folder_is_touched(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "runner.json").write_text("{}")
    with pytest.raises(RunnerError, match="04_dpo.dpo_steps = 0") as err:
        runner.run_profile("smoke", run_dir=run_dir, overrides={"04_dpo.dpo_steps": 0}, report=False)
    assert err.value.exit_code == 2
    assert [p.name for p in run_dir.iterdir()] == ["runner.json"]
    assert (run_dir / "runner.json").read_text() == "{}"


@pytest.mark.parametrize("value, ok", [(1000, True), (96, True), (1, True), (0, False), (2.5, False)])
def test_n_train_values(value, ok):
    assert (check_value("00_world", "n_train", value, {"default": "200"}) is None) == ok


def test_every_profile_passes_its_own_checks(smoke_declared):
    _, declared = smoke_declared
    for path in sorted(profiles.PROFILES_DIR.glob("*.yaml")):
        profiles.check_parameters(profiles.load_profile(path), declared)


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
    with pytest.raises(RunnerError) as err:
        profiles.check_parameters(prof, declared)
    msg = str(err.value)
    assert msg.count("03_preferences") == 1 and "deleted or renamed" in msg


# -- audio, manifests and cache files: errors that name the file and line --------------------

from t2a_lib.audio import features  # noqa: E402
from t2a_lib.audio.manifest import ManifestError, ManifestRecord, read_manifest, write_manifest  # noqa: E402
from t2a_lib.audio.wav import AudioError, read_wav, write_wav  # noqa: E402


def tone(seconds: float, f: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)


def tiny_split(folder, lengths=(0.2, 0.2, 0.2)):
    recs = []
    for i, sec in enumerate(lengths):
        write_wav(folder / f"c{i}.wav", tone(sec, 300 + 100 * i), durable=False)
        recs.append(ManifestRecord("w", str(folder / f"c{i}.wav"), f"clip {i}"))
    write_manifest(folder / "train.jsonl", recs)
    return folder / "train.jsonl"


def test_truncated_wav_named_not_zero_padded(tmp_path):
    path = tmp_path / "t.wav"
    write_wav(path, tone(2.56), durable=False)
    path.write_bytes(path.read_bytes()[:44 + 1000])  # header says 40,960 samples; 500 remain
    with pytest.raises(AudioError, match=r"t\.wav: truncated: its header declares 40960 samples but the file holds 500"):
        read_wav(path)


def test_over_range_float_wav_named(tmp_path):
    import soundfile as sf
    sf.write(tmp_path / "loud.wav", np.full(2000, 1.5, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"loud\.wav: samples outside \[-1, 1\] \(peak 1\.500\)"):
        read_wav(tmp_path / "loud.wav")


@pytest.mark.parametrize("lengths, bad, why", [
    ((0.2, 0.2, 60.0 / 50), "c2.wav", "long while the split's clips are 0.20 s"),  # 6x the median
    ((0.2, 0.01, 0.2), "c1.wav", "too short for one mel window"),
])
def test_clip_lengths_checked_naming_file_and_line(tmp_path, lengths, bad, why):
    manifest = tiny_split(tmp_path, lengths)
    with pytest.raises(AudioError, match=why) as err:
        features.split_mels(manifest, cache=False)
    line = 1 + [f"c{i}.wav" for i in range(3)].index(bad)
    assert bad in str(err.value) and f"train.jsonl line {line}" in str(err.value)


def test_bad_wav_in_a_split_names_the_manifest_line(tmp_path):
    manifest = tiny_split(tmp_path)
    (tmp_path / "c2.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(AudioError, match=r"c2\.wav: cannot read audio.*train\.jsonl line 3"):
        features.split_mels(manifest, cache=False)


def test_feature_cache_keyed_by_wav_content_and_float32_on_hit_and_miss(tmp_path):
    manifest = tiny_split(tmp_path)
    miss, _ = features.split_mels(manifest)
    hit, _ = features.split_mels(manifest)
    assert miss.dtype == hit.dtype == torch.float32 and torch.equal(miss, hit)
    fresh, _ = features.split_mels(manifest, cache=False)
    assert torch.equal(fresh, hit)
    write_wav(tmp_path / "c1.wav", tone(0.2, 1234.0), durable=False)  # replaced in place
    new, _ = features.split_mels(manifest)
    expected = features.waves_to_mel(np.stack([read_wav(tmp_path / f"c{i}.wav") for i in range(3)]))
    assert torch.equal(new, expected) and not torch.equal(new[1], hit[1])


def test_truncated_feature_cache_named(tmp_path):
    manifest = tiny_split(tmp_path)
    features.split_mels(manifest)
    (cache,) = (tmp_path / "features").glob("*.npy")
    cache.write_bytes(cache.read_bytes()[:200])
    with pytest.raises(features.CacheError, match=str(cache.name)):
        features.split_mels(manifest)


def test_non_utf8_manifest_names_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    before = b'{"dataset": "a", "location": "y.wav", "captions": "caf'
    path.write_bytes(b'{"dataset": "a", "location": "x.wav", "captions": "ok"}\n' + before + b'\xe9"}\n')
    col = len(before) + 1
    with pytest.raises(ManifestError, match=rf"m\.jsonl line 2: not UTF-8 \(byte 0xe9 at column {col}\)"):
        read_manifest(path)


# -- caches and run folders: nothing stale, nothing blocked, corrupt files named -------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from t2a_lib.model.fits import claim_folder  # noqa: E402
from t2a_lib.run.files import CorruptFileError, load_fit, load_safetensors, read_json, save_fit  # noqa: E402
from t2a_lib.scoring.cache import cached  # noqa: E402
from t2a_lib.world import datasets  # noqa: E402


def test_going_back_to_an_earlier_setting_never_blocks_and_reuses_its_checkpoint(tmp_path):
    """dpo_steps 4 (smoke), 8, 4, 8 moved a checkpoint onto an existing superseded name."""
    def train(key):
        claim_folder(tmp_path, key)
        ckpt = tmp_path / "checkpoint"
        found = (ckpt / "who.txt").read_text() if ckpt.is_dir() else None
        ckpt.mkdir(exist_ok=True)
        (ckpt / "who.txt").write_text(json.dumps(key))
        return found
    seen = [train({"steps": s}) for s in (4, 8, 4, 8, 4)]
    assert seen == [None, None, '{"steps": 4}', '{"steps": 8}', '{"steps": 4}']  # each key resumes its own
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint"))
    assert len(left) == 2 and "checkpoint" in left  # the other key's checkpoint kept aside


def test_fit_record_hit_equals_miss_and_other_data_misses(tmp_path):
    key = {"train": {"lr": 1e-4, "steps": (1, 2)}, "data": "abc"}
    (tmp_path / "unet").mkdir()
    miss = save_fit(tmp_path, key, history=[{"loss": 0.5}], seconds=1.0)
    assert load_fit(tmp_path, key, ("unet",)) == miss
    assert load_fit(tmp_path, {**key, "data": "abd"}, ("unet",)) is None  # other training data
    assert load_fit(tmp_path, key, ("vae",)) is None  # the artifact is missing
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, nothing left behind


def test_metrics_cache_returns_the_same_on_hit_and_miss(tmp_path):
    miss = cached(tmp_path, "k", lambda: {"a": (1, 2), "b": 0.1})
    assert miss == cached(tmp_path, "k", lambda: pytest.fail("recomputed")) == {"a": [1, 2], "b": 0.1}


@pytest.mark.parametrize("name", ["fit.json", "world.json", "training.json"])
def test_truncated_json_records_named(tmp_path, name):
    path = tmp_path / name
    path.write_text('{"key": {"a": 1}, "hist')
    with pytest.raises(CorruptFileError, match=f"{path}: corrupt"):
        {"fit.json": lambda: load_fit(tmp_path, {"a": 1}),
         "world.json": lambda: datasets.require_world(tmp_path),
         "training.json": lambda: claim_folder(tmp_path, {"a": 2})}[name]()


def test_world_json_truncated_named_by_build_world(tmp_path):
    (tmp_path / "world.json").write_text('{"key": "ab')
    with pytest.raises(CorruptFileError, match="world.json: corrupt world record"):
        datasets.build_world(tmp_path, 2, 1, 1, progress=False)


def test_truncated_safetensors_named(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "checkpoint" / "unet.safetensors"
    path.parent.mkdir()
    save_file({"w": torch.ones(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CorruptFileError, match=r"checkpoint/unet\.safetensors: corrupt weights"):
        load_safetensors(path)


def test_stage_refuses_a_folder_without_a_finished_world(tmp_path):
    (tmp_path / "train.jsonl").write_text("")  # an old, half-written world
    with pytest.raises(FileNotFoundError, match=r"world\.json: no complete world here.*run 00_world"):
        datasets.require_world(tmp_path)


def external_split(folder, split, n, bad_row=None):
    recs = []
    for i in range(n):
        wav = folder / "audio" / f"{split}{i}.wav"
        write_wav(wav, tone(0.1, 200 + 50 * i), durable=False)
        if i + 1 == bad_row:
            wav.write_bytes(wav.read_bytes()[:500])  # truncated
        recs.append(ManifestRecord("real", str(wav), f"{split} clip {i}"))
    write_manifest(folder / f"{split}.jsonl", recs)
    return str(folder / f"{split}.jsonl")


def test_external_manifest_every_row_checked(tmp_path):
    manifests = {s: external_split(tmp_path / "ext", s, 14 if s == "train" else 2,
                                   bad_row=13 if s == "train" else None) for s in datasets.SPLITS}
    world_dir = tmp_path / "run" / "world"
    with pytest.raises(ManifestError, match=r"(?s)1 bad row.*train\.jsonl line 13: .*train12\.wav: truncated"):
        datasets.use_external(world_dir, manifests)
    assert not (world_dir / "world.json").exists()


def test_external_manifests_become_the_world_every_stage_reads(tmp_path):
    world_dir = tmp_path / "run" / "world"
    datasets.build_world(world_dir, 2, 1, 1, progress=False, workers=1)  # an old synthetic world
    manifests = {s: external_split(tmp_path / "ext", s, 2) for s in datasets.SPLITS}
    info = datasets.use_external(world_dir, manifests)
    assert datasets.require_world(world_dir) == info and info["source"] == "external"
    for s in datasets.SPLITS:
        assert [r.to_dict() for r in datasets.load_split(world_dir, s)] == \
               [r.to_dict() for r in read_manifest(manifests[s])]


# -- weights given as pickles: refused, and said so --------------------------------------------

class _Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


@pytest.fixture(scope="module")
def tiny_audioldm(tmp_path_factory):
    from checkpoint_fixtures import make_tiny_audioldm
    return make_tiny_audioldm(tmp_path_factory.mktemp("audioldm"), seed=0)


@pytest.mark.parametrize("part", ["unet", "vocoder"])
def test_pickle_payload_as_audioldm_weights_refused_as_such(tiny_audioldm, tmp_path, capsys, part):
    import shutil

    from t2a_lib.model.audioldm_checkpoint import load_audioldm
    from t2a_lib.model.checkpoints import CheckpointError
    folder = shutil.copytree(tiny_audioldm, tmp_path / "a")
    for f in (folder / part).glob("*.safetensors"):
        f.unlink()
    name = "diffusion_pytorch_model.bin" if part == "unet" else "pytorch_model.bin"
    torch.save({"w": torch.zeros(1), "x": _Payload()}, folder / part / name)
    with pytest.raises(CheckpointError, match=rf"{part}.*{name}.*pickled objects other than tensors"):
        load_audioldm(folder)
    assert "unpickled!" not in capsys.readouterr().out


def test_truncated_tango_safetensors_named(tmp_path):
    from t2a_lib.model.checkpoints import CheckpointError, load_weights_file
    from safetensors.torch import save_file
    path = tmp_path / "pytorch_model_main.safetensors"
    save_file({"w": torch.ones(32, 32)}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="pytorch_model_main.safetensors' is not a readable safetensors"):
        load_weights_file(path)


# -- labelling that cannot collide ------------------------------------------------------------

@pytest.fixture
def label_clips(tmp_path):
    recs = []
    for i in range(3):
        write_wav(tmp_path / f"l{i}.wav", tone(0.2, 400 + 80 * i), durable=False)
        recs.append(ManifestRecord("world", str(tmp_path / f"l{i}.wav"), f"a bell rings then a knock {i}", id=f"c{i}"))
    return recs


def test_second_labeller_on_one_out_path_refused_even_when_opened_first(tmp_path, label_clips):
    from t2a_lib.feedback.labels import load_labels
    from t2a_lib.feedback.widgets import FeedbackLabeller
    out = tmp_path / "labels.jsonl"
    ana = FeedbackLabeller(label_clips, out, "Both present?", labeller="ana")
    bo = FeedbackLabeller(label_clips, out, "Both present?", labeller="bo")  # opened before ana wrote
    ana.answer("yes")
    with pytest.raises(ValueError, match=r"holds labels by \['ana'\].*refused"):
        bo.answer("no")
    with pytest.raises(ValueError, match="holds labels by"):
        FeedbackLabeller(label_clips, out, "Both present?", labeller="bo")
    assert list(load_labels(out).labeller) == ["ana"] and len(read_manifest(out)) == 1


def test_one_labeller_opened_twice_cannot_corrupt_the_file(tmp_path, label_clips):
    from t2a_lib.feedback.labels import load_labels
    from t2a_lib.feedback.widgets import FeedbackLabeller
    out = tmp_path / "labels.jsonl"
    first = FeedbackLabeller(label_clips, out, "Both present?", labeller="ana")
    second = FeedbackLabeller(label_clips, out, "Both present?", labeller="ana")
    first.answer("yes")
    second.answer("no")  # the same clip c0, from a stale widget
    first.answer("yes")  # c1
    baton = read_manifest(out)  # readable: every id once
    assert sorted(r.id for r in baton) == ["c0", "c1"]
    assert {r.id: r.feedback for r in baton} == {"c0": 0.0, "c1": 1.0}  # the latest answer stands
    assert load_labels(out).set_index("id").feedback.to_dict() == {"c0": 0.0, "c1": 1.0}


def test_a_log_with_two_labellers_is_refused_not_silently_folded(tmp_path, label_clips):
    from t2a_lib.feedback.labels import append_jsonl, events_path, feedback_line, load_labels
    out = tmp_path / "labels.jsonl"
    for who, action in (("ana", "yes"), ("bo", "no")):
        append_jsonl(events_path(out), feedback_line(label_clips[0], "c0", action, who, "q", tmp_path))
    with pytest.raises(ValueError, match=r"several labellers \(ana, bo\)"):
        load_labels(out)


def test_permissions_kept_after_an_undo(tmp_path, label_clips):
    import os
    import stat

    from t2a_lib.feedback.labels import events_path
    from t2a_lib.feedback.widgets import FeedbackLabeller
    out = tmp_path / "labels.jsonl"
    fl = FeedbackLabeller(label_clips, out, "Both present?", labeller="ana")
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    umask = os.umask(0o022)
    os.umask(umask)
    fl.answer("yes")
    assert mode(out) == mode(events_path(out)) == 0o666 & ~umask  # a new file: the umask's mode, not 0600
    fl.answer("no")
    os.chmod(out, 0o644)
    fl.undo()
    assert mode(out) == 0o644
    os.chmod(out, 0o640)
    fl.answer("yes")
    assert mode(out) == 0o640


# -- clean interrupts and unwritable run folders -----------------------------------------------

def fixture_project(tmp_path):
    import nbformat
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    for stem in ("00_a", "01_b"):
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        cell = nbformat.v4.new_code_cell('run_dir = ""\nprofile = ""\nseed = 0\nx = 1')
        cell.metadata["tags"] = ["parameters"]
        nb.cells = [cell, nbformat.v4.new_code_cell("pass")]
        nbformat.write(nb, nbs / f"{stem}.ipynb")
    (tmp_path / "p.yaml").write_text("seed: 0\n")
    return nbs, tmp_path / "p.yaml"


@pytest.mark.parametrize("how", ["in the runner", "in the kernel", "by SIGTERM"])
def test_ctrl_c_is_one_line_saying_what_stopped_and_how_to_resume(tmp_path, capsys, monkeypatch, how):
    import os
    import signal
    import time

    import papermill
    from papermill.exceptions import PapermillExecutionError

    def execute(src, out, **kw):
        if "01_b" in src:
            if how == "in the runner":
                raise KeyboardInterrupt
            if how == "by SIGTERM":
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)  # a stage at work, until the signal arrives
                raise AssertionError("SIGTERM did not stop the stage")
            raise PapermillExecutionError(1, 1, "pass", "KeyboardInterrupt", "", [])
        Path(out).write_text(Path(src).read_text())
        Path(out).with_suffix(".json").write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    nbs, prof = fixture_project(tmp_path)
    run_dir = tmp_path / "run"
    code = runner.main(["--profile", str(prof), "--notebooks-dir", str(nbs), "--run-dir", str(run_dir),
                          "--set", "x=2"])
    err = capsys.readouterr().err.strip()
    assert code == 130 and len(err.splitlines()) == 1, err
    assert err.startswith("interrupted: stage 01_b stopped") and "--from 01_b" in err and "x=2" in err
    state = json.loads((run_dir / "runner.json").read_text())
    assert state["status"] == "interrupted"
    assert [r["status"] for r in state["stages"]] == ["ok", "interrupted"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the runner's handler is gone again


def test_unwritable_run_folder_refused_naming_it(tmp_path, capsys):
    nbs, prof = fixture_project(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code = runner.main(["--profile", str(prof), "--notebooks-dir", str(nbs), "--run-dir", str(blocker / "run")])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot write the run folder {blocker / 'run'}" in err and len(err.splitlines()) == 1


def test_base_model_part_hit_equals_miss_and_other_data_retrains(tmp_path):
    """One way to train or load: a VAE loaded from its fit record is the one trained, with the same
    figures; the same config on other clips trains again (the key holds the data's fingerprint)."""
    from t2a_lib.model import base_model
    from t2a_lib.model.autoencoder import VAETrainConfig
    from t2a_lib.model.components import MiniTangoConfig
    cfg = MiniTangoConfig(vae_channels=(8, 8, 8), n_frames=32)
    train = VAETrainConfig(steps=2, batch_size=2, crop_frames=16)
    mels = torch.randn(4, 64, 32, generator=torch.Generator().manual_seed(0))
    vae, fig = base_model.fit_vae(tmp_path, mels, train, cfg, progress=False)
    again, fig2 = base_model.fit_vae(tmp_path, mels, train, cfg, progress=False)
    assert fig2 == fig and fig2["seconds"] == fig["seconds"]  # loaded, not retrained
    for (k, a), (_, b) in zip(vae.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    _, fig3 = base_model.fit_vae(tmp_path, mels + 1, train, cfg, progress=False)
    assert fig3["losses"] != fig["losses"]
    assert json.loads((tmp_path / "fit.json").read_text())["key"]["data"] != "" and "config" not in \
        json.loads((tmp_path / "fit.json").read_text())


@pytest.mark.parametrize("sizes", [(0, 1, 1), (2, -1, 1), (2, 1, 1.5)])
def test_empty_split_refused_before_the_world_is_touched(tmp_path, sizes):
    (tmp_path / "world.json").write_text('{"key": "old"}')
    with pytest.raises(ValueError, match="every split needs at least one clip"):
        datasets.build_world(tmp_path, *sizes, progress=False)
    assert (tmp_path / "world.json").read_text() == '{"key": "old"}'


def test_truncated_saved_unet_named(tmp_path):
    from t2a_lib.model.components import MiniTangoConfig, make_unet
    from t2a_lib.model.tango import load_unet
    cfg = MiniTangoConfig(vae_channels=(8, 16, 16), text_dim=32, text_heads=2, unet_channels=(16, 16, 16),
                          unet_head_dim=8)
    make_unet(cfg).save_pretrained(tmp_path / "unet")
    (weights,) = (tmp_path / "unet").glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CorruptFileError, match=rf"{tmp_path / 'unet'}: corrupt weights"):
        load_unet(tmp_path / "unet")


# -- a fine-tune killed mid-way and run again equals one never interrupted ----------------------

class _Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs (not even except Exception handlers)."""


def test_fine_tune_killed_then_rerun_is_bit_identical_to_uninterrupted(tmp_path):
    from t2a_lib.model.components import MiniTangoConfig, make_unet
    from t2a_lib.model.diffusion import TrainConfig, train_loop
    from t2a_lib.model.fits import fit_finetuned
    torch.manual_seed(0)
    base = make_unet(MiniTangoConfig(n_frames=16, n_mels=16, unet_channels=(8, 8, 8), text_dim=16,
                                     unet_head_dim=4))
    cfg = TrainConfig(steps=5, batch_size=2, warmup=1, checkpoint_every=1, seed=1)

    steps_run = []

    def run(folder, kill_at=None):
        def step_loss(unet, idx, g, step, device, shard):
            steps_run.append(step)
            if step == kill_at:
                raise _Killed
            loss = sum(((p * torch.randn(p.shape, generator=g)).sum()) ** 2 for p in unet.parameters()) * 1e-6
            return loss, {}
        return fit_finetuned(folder, base, {"config": cfg.key()},
                             lambda unet: train_loop(unet, 8, cfg, step_loss, out_dir=folder, progress=False))

    straight, hist = run(tmp_path / "a")
    with pytest.raises(_Killed):
        run(tmp_path / "b", kill_at=3)
    steps_run.clear()
    resumed, hist_b = run(tmp_path / "b")
    assert steps_run == [3, 4] and hist_b == hist  # resumed from its checkpoint, not retrained
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert json.loads((tmp_path / "b" / "fit.json").read_text())["history"] == hist


def test_a_scorer_trained_on_other_data_is_not_loaded(tmp_path):
    from t2a_lib.scoring import scorers

    (cfg,) = scorers.scorer_configs("judge", 1, 1, 1, 1)[1]
    recs = [ManifestRecord("w", "a.wav", "a dog barks")]
    train, test = (torch.zeros(1, 64, 8), recs), (torch.ones(1, 64, 8), recs)
    data = scorers.data_key(train, test)
    save_fit(tmp_path, scorers.fit_key(cfg, data))  # a record, but no model: trained
    assert load_fit(tmp_path, scorers.fit_key(cfg, data), scorers.SCORER_FILES) is None
    clips = (torch.zeros(4, 64, 64), recs * 4), (torch.ones(2, 64, 64), recs * 2)
    scorers.train_scorer(tmp_path, cfg, *clips, progress=False)  # saved without a key: drops the old record
    assert load_fit(tmp_path, scorers.fit_key(cfg, data), scorers.SCORER_FILES) is None
    scorers.train_scorer(tmp_path, cfg, *clips, progress=False, key=scorers.fit_key(cfg, data))
    assert cfg.vocab_size == 0  # training set the model's vocabulary size, not the caller's config's
    assert load_fit(tmp_path, scorers.fit_key(cfg, data), scorers.SCORER_FILES) is not None
    other = scorers.data_key((train[0] + 1, recs), test)
    assert other != data and load_fit(tmp_path, scorers.fit_key(cfg, other), scorers.SCORER_FILES) is None
    relabelled = scorers.data_key((train[0], [ManifestRecord("w", "a.wav", "a siren wails")]), test)
    assert relabelled != data
    (tmp_path / "losses.json").unlink()  # a model missing one of its files is not loaded either
    assert load_fit(tmp_path, scorers.fit_key(cfg, data), scorers.SCORER_FILES) is None
