"""Manifest readers/writers: the anchors' quirks pass, anything else names file, line and field."""

import json
import os
import subprocess
import sys

import pytest

from t2a_lib.audio.manifest import (
    ManifestError, ManifestRecord, append_record, check_audio_exists, read_manifest, write_manifest,
)

TANGO = [
    {"dataset": "world", "location": "audio/0001.wav", "captions": "a dog barks",
     "id": "0001", "events": [{"label": "bark", "onset": 0.5, "offset": 1.25}]},
    {"dataset": "world", "location": "audio/0002.wav", "captions": "rain then a bell",
     "id": "0002", "relation": "before",
     "events": [{"label": "rain", "onset": 0, "offset": 3}, {"label": "bell", "onset": 3.5,
                                                              "offset": 4.0}]},
    {"dataset": "audiocaps", "location": "/abs/elsewhere.wav", "captions": "wind", "seed": 7},
]


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reads_tango_file(tmp_path):
    path = write_lines(tmp_path / "train.json", [json.dumps(o) for o in TANGO])
    recs = read_manifest(path)
    assert [r.captions for r in recs] == [o["captions"] for o in TANGO]
    assert recs[0].location == str(tmp_path / "audio" / "0001.wav")  # resolved
    assert recs[2].location == "/abs/elsewhere.wav"  # absolute paths untouched
    assert recs[0].events == [{"label": "bark", "onset": 0.5, "offset": 1.25}]
    assert recs[1].relation == "before" and recs[1].events[0]["offset"] == 3.0
    assert recs[2].extra == {"seed": 7} and recs[2].id is None
    assert all(r.feedback is None for r in recs)
    assert [r.line for r in recs] == [1, 2, 3]
    raw = read_manifest(path, resolve_audio=False)
    assert raw[0].location == "audio/0001.wav"


def test_reads_baton_file_with_trailing_commas_blank_lines_and_sed(tmp_path):
    lines = [
        '{"dataset": "world", "location": "a.wav", "captions": "a dog barks", "feedback": 1},',
        "",
        '{"dataset": "world", "location": "b.wav", "captions": "a siren", "feedback": 0},',
        '   ',
        '{"dataset": "world", "location": "c.wav", "captions": "a bell", "SED": 0.625},',
    ]
    recs = read_manifest(write_lines(tmp_path / "fb.json", lines), kind="feedback")
    assert [r.feedback for r in recs] == [1.0, 0.0, 0.625]
    assert [r.line for r in recs] == [1, 3, 5]
    assert "SED" not in recs[2].extra
    assert read_manifest(tmp_path / "fb.json", kind="auto") == recs


def test_reads_json_array_file(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text(json.dumps(TANGO, indent=2))
    recs = read_manifest(path, resolve_audio=False)
    assert [r.location for r in recs] == [o["location"] for o in TANGO]


def test_feedback_kind_requires_feedback(tmp_path):
    path = write_lines(tmp_path / "t.json", [json.dumps(o) for o in TANGO[:2]])
    read_manifest(path, kind="tango")
    with pytest.raises(ManifestError, match=r"t\.json line 1: missing field 'feedback'"):
        read_manifest(path, kind="feedback")


def test_auto_kind_requires_feedback_on_every_line_once_the_first_has_it(tmp_path):
    lines = ['{"dataset": "d", "location": "a.wav", "captions": "x", "SED": 0.5}',
             '{"dataset": "d", "location": "b.wav", "captions": "y"}']
    with pytest.raises(ManifestError, match=r"line 2: missing field 'feedback'"):
        read_manifest(write_lines(tmp_path / "m.json", lines))


GOOD = '{"dataset": "d", "location": "a.wav", "captions": "a dog barks"}'


@pytest.mark.parametrize("bad_line,pattern", [
    ('{"dataset": "d", "location": "a.wav", "captions": "x"', r"line 3: invalid JSON"),
    ('{"dataset": "d", "captions": "x"}', r"line 3: missing field 'location'"),
    ('{"dataset": "d", "location": "a.wav", "captions": 5}',
     r"line 3: field 'captions' must be a non-empty string"),
    ('{"dataset": "d", "location": "a.wav", "captions": "  "}',
     r"line 3: field 'captions' must be a non-empty string"),
    ('{"dataset": "d", "location": "a.wav", "captions": "x", "events": '
     '[{"label": "a", "onset": 0, "offset": 1}, {"label": "b", "onset": "1", "offset": 2}]}',
     r"line 3: events\[1\]\.onset must be a number"),
    ('{"dataset": "d", "location": "a.wav", "captions": "x", "events": '
     '[{"label": "a", "onset": 1.2, "offset": 0.9}]}',
     r"line 3: events\[0\]: onset 1.2 > offset 0.9"),
    ('{"dataset": "d", "location": "a.wav", "captions": "x", "events": '
     '[{"label": "a", "onset": 0}]}',
     r"line 3: events\[0\] is missing field 'offset'"),
    ('{"dataset": "d", "location": "a.wav", "captions": "x", "events": '
     '[{"label": "a", "onset": NaN, "offset": 1}]}', r"line 3: events\[0\]\.onset must be finite"),
    ('{"dataset": "d", "location": "a.wav", "captions": "x", "feedback": NaN}',
     r"line 3: field 'feedback' must be finite"),
    ('{"dataset": "d", "location": "a.wav", "captions": "x", "score": Infinity}',
     r"line 3: field 'score' must be finite"),
    ('{"dataset": "d", "location": "a.wav", "captions": "x", "feedback": 1.5}',
     r"line 3: field 'feedback' must be in \[0, 1\]"),
    ('{"dataset": "d", "location": "a.wav", "captions": "x", "SED": -0.1}',
     r"line 3: field 'feedback' must be in \[0, 1\]"),
    ('{"dataset": "d", "location": "a.wav", "captions": "x", "feedback": "1"}',
     r"line 3: field 'feedback' must be a number"),
    ('{"dataset": "d", "location": "a.wav", "captions": "x", "relation": 3}',
     r"line 3: field 'relation' must be a string"),
    ('["dataset", "location"]', r"line 3: expected a JSON object"),
    ('{"dataset": "d", "location": "a.wav", "captions": "x"},,', r"line 3: invalid JSON"),
    ('{"id": "1", "dataset": "d", "location": "b.wav", "captions": "x"}',
     r"line 3: duplicate id '1' \(first on line 1\)"),
])
def test_broken_lines_name_file_line_and_field(tmp_path, bad_line, pattern):
    first = '{"id": "1", "dataset": "d", "location": "a.wav", "captions": "a dog barks"},'
    path = write_lines(tmp_path / "train.json", [first, "", bad_line, GOOD])
    with pytest.raises(ManifestError, match=r"train\.json " + pattern):
        read_manifest(path, kind="tango")


def test_empty_and_blank_files(tmp_path):
    for name, text in [("empty.json", ""), ("blank.json", "\n  \n")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ManifestError, match=rf"{name} is empty"):
            read_manifest(tmp_path / name)
    (tmp_path / "arr.json").write_text(" [ ]\n")
    with pytest.raises(ManifestError, match=r"arr\.json is empty"):
        read_manifest(tmp_path / "arr.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_manifest(tmp_path / "missing.json")


def test_broken_array_file_names_item(tmp_path):
    items = [dict(TANGO[0]), dict(TANGO[1])]
    items[1]["captions"] = ""
    text = "[\n" + ",\n".join(json.dumps(o, indent=2) for o in items) + "\n]\n"
    line = 2 + len(json.dumps(items[0], indent=2).splitlines())  # "[" then the first object
    (tmp_path / "arr.json").write_text(text)
    with pytest.raises(ManifestError, match=rf"arr\.json line {line}: field 'captions'"):
        read_manifest(tmp_path / "arr.json")
    for name, broken in [("cut.json", text[: len(text) // 2]),
                         ("comma.json", text.replace("\n]", ",\n]")),
                         ("extra.json", text + "{}\n")]:
        (tmp_path / name).write_text(broken)
        with pytest.raises(ManifestError, match=rf"{name} line \d+: invalid JSON"):
            read_manifest(tmp_path / name)


def test_write_read_round_trip(tmp_path):
    src = write_lines(tmp_path / "in.json", [json.dumps(o) + "," for o in TANGO])
    recs = read_manifest(src)
    out = tmp_path / "out.json"
    write_manifest(out, recs)
    text = out.read_text()
    lines = text.splitlines()
    assert len(lines) == 3 and text.endswith("}\n")
    assert not any(line.rstrip().endswith(",") for line in lines)
    # locations are written back as they were in the source file
    assert [json.loads(line)["location"] for line in lines] == [o["location"] for o in TANGO]
    assert read_manifest(out) == recs
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_write_manifest_refuses_invalid_records(tmp_path):
    bad = ManifestRecord("d", "a.wav", "x", feedback=2.0)
    with pytest.raises(ManifestError, match="record 2: field 'feedback' must be in"):
        write_manifest(tmp_path / "m.json", [ManifestRecord("d", "a.wav", "x"), bad])
    assert not (tmp_path / "m.json").exists()


def test_append_record_is_durable_and_line_valid(tmp_path):
    path = tmp_path / "labels" / "fb.json"
    append_record(path, ManifestRecord("world", "a.wav", "a dog barks", feedback=1.0))
    # a labelling kernel appends one record and dies without any cleanup
    code = (
        "import os\n"
        "from t2a_lib.audio.manifest import ManifestRecord, append_record\n"
        f"append_record({str(path)!r}, ManifestRecord('world', 'b.wav', 'a siren', feedback=0.0))\n"
        "os._exit(9)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 9
    # ... and another dies half-way through a write, leaving a torn line
    with open(path, "a") as f:
        f.write('{"dataset": "world", "location": "c.wav", "capt')
    with pytest.warns(UserWarning, match="torn"):
        append_record(path, ManifestRecord("world", "d.wav", "a bell", feedback=1.0))
    recs = read_manifest(path, kind="feedback", resolve_audio=False)
    got = [(r.location, r.feedback) for r in recs]
    assert got == [("a.wav", 1.0), ("b.wav", 0.0), ("d.wav", 1.0)]
    for line in path.read_text().splitlines():
        json.loads(line)


def test_append_terminates_a_complete_last_line(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(GOOD)  # written by another tool without a final newline
    append_record(path, ManifestRecord("d", "b.wav", "y"))
    assert [r.location for r in read_manifest(path, resolve_audio=False)] == ["a.wav", "b.wav"]


def test_append_rejects_invalid_record(tmp_path):
    path = tmp_path / "m.json"
    with pytest.raises(ManifestError, match="captions"):
        append_record(path, ManifestRecord("d", "a.wav", ""))
    assert not path.exists() or path.read_text() == ""


def test_check_audio_exists_names_file_and_line(tmp_path):
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "0001.wav").write_bytes(b"x")
    path = write_lines(tmp_path / "train.json", [json.dumps(o) for o in TANGO[:2]])
    recs = read_manifest(path)
    pattern = r"train\.json line 2: audio file not found: .*0002\.wav"
    with pytest.raises(ManifestError, match=pattern):
        check_audio_exists(recs)
    check_audio_exists(recs[:1])
