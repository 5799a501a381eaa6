"""The anchors' files as published: BATON's and Tango's JSON manifests read as they are.

The fixtures are written here in the released files' shapes (field names, layout, quirks), not
copied: BATON's ``data/Audiocaps/test_audiocaps_2label.json`` is one pretty-printed JSON array
whose 14th object (starting on line 67) spells ``dataset`` as ``datasetresult``; its reward-model
files (``data/RM/*_RA.json``) are JSON lines scored under ``SED``; its human files
(``data/HA/*_HA.json``) JSON lines with 0/1 ``feedback``; Tango's ``data/*_with_labels.json``
add AudioSet label ids under ``labels``.
"""

import json
import warnings

import pytest

from t2a_lib.audio.manifest import ManifestError, ManifestRecord, read_manifest, write_manifest

CAPTIONS = ["a man speaks", "Water trickling with man speaking", "A woman talks as a baby cries",
            "A helicopter flying as a man talks in the background"]


def baton_audiocaps_2label(path, n=20, typo_at=13):
    """A JSON array, indent 4, one object per 5 lines from line 2; object ``typo_at`` (0-based)
    has ``datasetresult`` instead of ``dataset``."""
    objs = []
    for i in range(n):
        key = "datasetresult" if i == typo_at else "dataset"
        objs.append({key: "audiocaps", "location": f"/data/deep/audioset/data/clip{i:02d}_30.wav",
                     "captions": CAPTIONS[i % len(CAPTIONS)]})
    path.write_text(json.dumps(objs, indent=4))
    return path


def read_quietly(path, **kw):
    """read_manifest with every warning an error: the test fails if the reader warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read_manifest(path, **kw)


def test_baton_typo_line_is_kept_with_a_warning_naming_file_line_and_field(tmp_path):
    path = baton_audiocaps_2label(tmp_path / "test_audiocaps_2label.json")
    text = path.read_text().splitlines()
    assert text[66].strip() == "{" and "datasetresult" in text[67]  # the object starts on line 67
    with pytest.warns(UserWarning) as caught:
        recs = read_manifest(path, kind="tango", resolve_audio=False)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert "test_audiocaps_2label.json line 67: unknown field 'datasetresult'" in messages[0]
    assert len(recs) == 20 and recs[13].line == 67
    assert recs[13].dataset is None and recs[13].extra == {"datasetresult": "audiocaps"}
    assert recs[13].captions == CAPTIONS[13 % 4]
    assert all(r.dataset == "audiocaps" for i, r in enumerate(recs) if i != 13)


def test_one_warning_per_field_however_many_lines_have_it(tmp_path):
    lines = [json.dumps({"location": f"{i}.wav", "captions": "x", "seed": i}) for i in range(5)]
    path = tmp_path / "m.json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"m\.json line 1: unknown field 'seed' \(and 4 more"):
        recs = read_manifest(path)
    assert [r.extra["seed"] for r in recs] == list(range(5))


def test_baton_reward_model_and_human_files_read_without_warnings(tmp_path):
    ra = tmp_path / "2label_RA.json"
    ra.write_text("".join(json.dumps({"dataset": "2label_RA", "location": f"Baton/Audio/{i}_{c}_0.wav",
                                      "captions": c, "SED": s}) + "\n"
                          for i, (c, s) in enumerate(zip(CAPTIONS, [0.882, 1, 0.0001, 0]))))
    ha = tmp_path / "2label_HA.json"
    ha.write_text("".join(json.dumps({"dataset": "2label_HA", "location": f"/home/x/{i}.wav",
                                      "captions": c, "feedback": i % 2}) + "\n"
                          for i, c in enumerate(CAPTIONS)))
    assert [r.feedback for r in read_quietly(ra, kind="feedback")] == [0.882, 1.0, 0.0001, 0.0]
    assert [r.feedback for r in read_quietly(ha, kind="feedback")] == [0.0, 1.0, 0.0, 1.0]


def test_tango_manifest_with_audioset_labels_reads_without_warnings(tmp_path):
    path = tmp_path / "test_audiocaps_subset_with_labels.json"
    path.write_text("".join(json.dumps({"dataset": "audiocaps", "location": f"/data/{i}.wav",
                                        "captions": c, "labels": "/m/09x0r,/m/0llzx"}) + "\n"
                            for i, c in enumerate(CAPTIONS)))
    recs = read_quietly(path)
    assert [r.captions for r in recs] == CAPTIONS and recs[0].extra == {"labels": "/m/09x0r,/m/0llzx"}


def test_dataset_is_optional_and_stays_absent_when_written_back(tmp_path):
    src = tmp_path / "in.json"
    src.write_text(json.dumps({"location": "a.wav", "captions": "a man speaks"}) + "\n")
    recs = read_quietly(src)
    assert recs[0].dataset is None
    write_manifest(tmp_path / "out.json", recs)
    assert json.loads((tmp_path / "out.json").read_text()) == {"location": "a.wav", "captions": "a man speaks"}
    through_pandas = ManifestRecord(float("nan"), "a.wav", "a man speaks")  # a None cell read back as NaN
    assert through_pandas.to_dict() == {"location": "a.wav", "captions": "a man speaks"}


@pytest.mark.parametrize("obj, field", [
    ({"dataset": "audiocaps", "location": "a.wav"}, "captions"),
    ({"datasetresult": "audiocaps", "captions": "a man speaks"}, "location"),
    ({"dataset": "audiocaps", "locaton": "a.wav", "captions": "x"}, "location"),
])
def test_required_fields_stay_required(tmp_path, obj, field):
    path = tmp_path / "bad.json"
    good = {"dataset": "audiocaps", "location": "b.wav", "captions": "x"}
    path.write_text(json.dumps([good, good, obj], indent=4))
    with pytest.raises(ManifestError, match=rf"bad\.json line 12: missing field '{field}'"):
        read_manifest(path)


def test_an_empty_dataset_is_still_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"dataset": " ", "location": "a.wav", "captions": "x"}) + "\n")
    with pytest.raises(ManifestError, match=r"bad\.json line 1: field 'dataset' must be a non-empty"):
        read_manifest(path)


# declare-lab/tango2's file list as the hub publishes it (https://huggingface.co/declare-lab/tango2/tree/main),
# written down here once: the fixture snapshot must hold exactly these names.
TANGO2_ON_THE_HUB = [".gitattributes", "README.md", "config.json", "main_config.json", "pytorch_model_main.bin",
                     "pytorch_model_stft.bin", "pytorch_model_vae.bin", "stft_config.json", "vae_config.json"]


def test_the_tango_fixture_holds_exactly_the_published_files(tmp_path):
    from checkpoint_fixtures import FLAN_FOLDER, TANGO2_PUBLISHED_FILES, make_tiny_tango

    folder = make_tiny_tango(tmp_path / "tango2")
    assert sorted(p.name for p in folder.iterdir()) == TANGO2_ON_THE_HUB == sorted(TANGO2_PUBLISHED_FILES)
    assert not (folder / "text_encoder").exists() and (tmp_path / FLAN_FOLDER / "config.json").is_file()
