"""Preflight (``python -m t2a_lib.run --check``): every input a profile names, each present, absent with
its fetch command, or wrong naming the first bad file; all at once, before any stage runs."""

import json
import shutil
import warnings

import numpy as np
import pytest

from checkpoint_fixtures import FLAN_FOLDER, make_tiny_tango
from t2a_lib.audio.locations import baton_location, reroot, resolve_baton
from t2a_lib.audio.wav import write_wav
from t2a_lib.feedback.released import read_released
from t2a_lib.feedback.reward import write_feedback
from t2a_lib.run import preflight, runner
from t2a_lib.run.profiles import RunnerError

REAL_INPUTS = ["AudioCaps manifests + clips", "CLAP larger_clap_general", "CLAP clap-htsat-unfused",
               "Tango 2 snapshot", "text encoder google/flan-t5-large", "audio-alpaca", "BATON labels + audio"]


def _tone(path, seconds=0.5, amp=0.3):
    t = np.arange(int(16000 * seconds)) / 16000
    write_wav(path, (amp * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    return path


def test_real_on_a_fresh_clone_names_all_seven_inputs_with_their_fetch_commands(capsys):
    assert runner.main(["--profile", "real", "--check"]) == 2
    out = capsys.readouterr().out
    absent = [line for line in out.splitlines() if line.strip().startswith("ABSENT")]
    assert len(absent) == 7 and all(any(name in line for line in absent) for name in REAL_INPUTS)
    assert out.count("fetch: ") == 7 and "0 of 7 inputs present" in out
    for command in ("huggingface-cli download declare-lab/tango2 --local-dir checkpoints/tango2",
                    "huggingface-cli download google/flan-t5-large", "--local-dir checkpoints/flan-t5-large",
                    "huggingface-cli download laion/clap-htsat-unfused --local-dir checkpoints/clap-htsat-unfused",
                    "declare-lab/audio-alpaca --repo-type dataset --local-dir data/audio-alpaca",
                    "git clone https://github.com/Hannieliao/Baton data/Baton"):
        assert command in out, command


def test_list_shows_the_plan_and_the_same_findings(capsys):
    assert runner.main(["--profile", "real", "--list"]) == 2
    out = capsys.readouterr().out
    assert "[3/8] 02_base_model" in out and "0 of 7 inputs present" in out


def test_a_run_refuses_before_any_stage_with_every_problem(tmp_path):
    with pytest.raises(RunnerError, match="refusing to run: inputs absent or wrong") as exc:
        runner.run_profile("real", run_dir=tmp_path / "run", report=False)
    assert str(exc.value).count("ABSENT") == 7 and not (tmp_path / "run" / "runner.json").exists()


def test_the_snapshot_as_published_lacks_only_the_text_encoder(tmp_path, monkeypatch):
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    tango = make_tiny_tango(tmp_path / "tango2")
    flan = shutil.move(tmp_path / FLAN_FOLDER, tmp_path / "elsewhere")  # the published snapshot, nothing beside it
    assert preflight.check_tango(tango).ok
    missing = preflight.check_text_encoder(tango, None)
    assert missing.status == "absent" and "google/flan-t5-large" in missing.fetch
    assert preflight.check_text_encoder(tango, flan).ok
    assert preflight.check_text_encoder(tango, tmp_path / "nowhere").status == "absent"
    (tmp_path / "elsewhere" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    wrong = preflight.check_text_encoder(tango, flan)
    assert wrong.status == "wrong" and "model_type is 'bert'" in wrong.detail


def test_a_git_lfs_pointer_is_named_as_the_first_bad_file(tmp_path):
    tango = make_tiny_tango(tmp_path / "tango2")
    (tango / "pytorch_model_vae.bin").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\n")
    found = preflight.check_tango(tango)
    assert found.status == "wrong" and "pytorch_model_vae.bin is a Git LFS pointer" in found.detail
    (tango / "main_config.json").unlink()
    assert "main_config.json is absent" in preflight.check_tango(tango).detail


def _tango_manifest(path, locations):
    path.write_text("".join(json.dumps({"dataset": "audiocaps", "location": loc, "captions": f"clip {i}"}) + "\n"
                            for i, loc in enumerate(locations)))
    return str(path)


def test_manifests_from_another_machine_are_rerooted_by_audio_root(tmp_path):
    audio = tmp_path / "mine" / "data"
    names = [f"clip{i}_30.wav" for i in range(3)]
    for n in names:
        _tone(audio / n)
    theirs = [f"/data/deep/audioset/data/{n}" for n in names]
    manifests = {s: _tango_manifest(tmp_path / f"{s}.json", theirs) for s in ("train", "val", "test")}
    wrong = preflight.check_audiocaps(manifests)
    assert wrong.status == "wrong" and "9 of 9 clips not found" in wrong.detail and "audio_root" in wrong.detail
    assert preflight.check_audiocaps(manifests, tmp_path / "mine").ok
    assert reroot(theirs[0], tmp_path / "mine") == str(audio / names[0])  # the longest tail that exists
    assert reroot(theirs[0], tmp_path / "elsewhere") is None


def test_silent_and_short_audiocaps_clips_are_counted_and_left_out(tmp_path):
    from t2a_lib.world.datasets import use_external

    good = [str(_tone(tmp_path / f"a{i}.wav")) for i in range(3)]
    silent = str(_tone(tmp_path / "silent.wav", amp=0.0))
    short = str(_tone(tmp_path / "short.wav", seconds=0.01))
    manifests = {"train": _tango_manifest(tmp_path / "train.json", good + [silent, short]),
                 "val": _tango_manifest(tmp_path / "val.json", good[:1]),
                 "test": _tango_manifest(tmp_path / "test.json", good[1:])}
    with pytest.warns(UserWarning, match="left out 2 silent or too short clip"):
        info = use_external(tmp_path / "world", manifests)
    assert info["sizes"] == {"train": 3, "val": 1, "test": 2} and info["skipped"]["clips"] == 2
    assert "silent" in info["skipped"]["first"] and "train.json line 4" in info["skipped"]["first"]


def _baton_checkout(root, n=3):
    """BATON's literal layout under ``root``: Baton/data/HA/2label_HA.json, clips at Baton/data/Audio/..."""
    rows = []
    for i in range(n):
        rel = f"Baton/data/Audio/2label_Integrity_HD_Audio/{i:04d}_a dog barks_{i}.wav"
        _tone(root / rel)
        rows.append({"dataset": "2label_HA", "location": rel, "captions": "a dog barks", "feedback": i % 2})
    label = root / "Baton" / "data" / "HA" / "2label_HA.json"
    label.parent.mkdir(parents=True)
    label.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return label


def test_batons_locations_resolve_from_the_folder_holding_the_checkout(tmp_path):
    label = _baton_checkout(tmp_path / "data")
    expected = str(tmp_path / "data" / "Baton/data/Audio/2label_Integrity_HD_Audio/0000_a dog barks_0.wav")
    assert read_released(label, tmp_path / "data")[0].location == expected  # baton_root given
    assert read_released(label)[0].location == expected  # found from the label file's own path
    assert preflight.check_baton({"hd": label}, tmp_path / "data").ok
    moved = tmp_path / "data" / "Baton/data/Audio/2label_Integrity_HD_Audio/0001_a dog barks_1.wav"
    moved.unlink()
    found = preflight.check_baton({"hd": label}, tmp_path / "data")
    assert found.status == "wrong" and "1 of 3 clips" in found.detail and "line 2" in found.detail


def test_the_label_files_folder_is_the_fallback(tmp_path):
    _tone(tmp_path / "labels" / "clips" / "x.wav")
    assert resolve_baton("clips/x.wav", tmp_path / "labels" / "l.json", tmp_path / "other") == \
        str(tmp_path / "labels" / "clips" / "x.wav")


def test_write_feedback_offers_batons_convention(tmp_path):
    root = tmp_path / "root"
    clips = [str(_tone(root / "Baton" / "data" / "Audio" / f"{i}.wav")) for i in range(2)]
    out = root / "Baton" / "data" / "HA" / "mine_HA.json"
    write_feedback(out, clips, ["a", "b"], [1, 0], baton_root=root)
    stored = [json.loads(line)["location"] for line in out.read_text().splitlines()]
    assert stored == ["Baton/data/Audio/0.wav", "Baton/data/Audio/1.wav"] == [baton_location(c, root) for c in clips]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r.location for r in read_released(out, root)] == clips


def test_a_profile_without_external_inputs_has_nothing_to_check(capsys):
    assert runner.main(["--profile", "smoke", "--check"]) == 0
    assert "names no external input" in capsys.readouterr().out


@pytest.mark.parametrize("profile", ["real", "real-smoke", "smoke"])
def test_check_reads_the_same_inputs_from_the_profile_as_the_full_plan(profile):
    from t2a_lib.run.profiles import plan

    sets = {"02_base_model.text_encoder_path": "somewhere/flan", "00_world.audio_root": "clips"}
    sets = sets if profile != "smoke" else {}
    light = preflight.check_inputs(preflight.profile_params(profile, sets))
    full = preflight.check_inputs(plan(profile, sets)[3])
    assert [(f.name, f.parameter, f.status, f.detail) for f in light] == \
        [(f.name, f.parameter, f.status, f.detail) for f in full]
    if profile == "real":
        assert "somewhere/flan" in next(f.detail for f in light if f.parameter.endswith("text_encoder_path"))
