"""Listening/labelling widgets, driven headlessly through the methods their buttons call."""

import json
import math

import ipywidgets as W
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from t2a_lib.audio.manifest import ManifestRecord, read_manifest, write_manifest
from t2a_lib.audio.media import wav_bytes
from t2a_lib.audio.wav import read_wav
from t2a_lib.feedback.agreement import cohen_kappa, fleiss_kappa
from t2a_lib.feedback.labels import events_path, load_labels, merge_labellers, write_merged
from t2a_lib.feedback.widgets import FeedbackLabeller, PairListener

STRATEGIES = ["S1.1", "S1.1", "S2", "S2", "S3", "S3"]


def make_wav(path, freq):
    t = np.arange(4000) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)
    return str(path)


@pytest.fixture
def pairs(tmp_path):
    rows = []
    for i, strategy in enumerate(STRATEGIES):
        rows.append({"prompt": f"a dog barks then bell {i}", "strategy": strategy,
                     "chosen": make_wav(tmp_path / f"c{i}.wav", 300 + 50 * i),
                     "rejected": make_wav(tmp_path / f"r{i}.wav", 1500 + 50 * i),
                     "pair_id": f"p{i}"})
    return pd.DataFrame(rows)


@pytest.fixture
def records(tmp_path):
    return [ManifestRecord("world", make_wav(tmp_path / f"clip{i}.wav", 400 + 80 * i),
                           f"a bell rings then a knock {i}", id=f"c{i}") for i in range(5)]


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def pick(pl, target):
    """Answer so that the listener's choice is ``target`` ("chosen"/"rejected"/"skip")."""
    if target == "skip":
        return pl.answer("skip")
    pid = pl.pairs.pair_id[pl.current]
    return pl.answer("A" if pl.shown_as_a(pid) == target else "B")


def widget_texts(widget):
    out = []
    if isinstance(widget, (W.HTML, W.Label, W.Button)):
        out.append(widget.description if isinstance(widget, W.Button) else widget.value)
    for child in getattr(widget, "children", ()):
        out += widget_texts(child)
    return out


# ---------------------------------------------------------------- PairListener

def test_pair_answers_map_back_and_are_on_disk_at_once(pairs, tmp_path):
    out = tmp_path / "pairs.jsonl"
    pl = PairListener(pairs, out, listener="ana")
    for n, key in enumerate(["A", "B", "A", "skip"], start=1):
        pid = pairs.pair_id[pl.current]
        a = pl.shown_as_a(pid)
        pl.answer(key)
        last = lines(out)[-1]  # read back before the next action
        assert len(lines(out)) == n
        other = "rejected" if a == "chosen" else "chosen"
        assert last["choice"] == {"A": a, "B": other, "skip": "skip"}[key]
        assert last["shown_as_a"] == a and last["pair_id"] == pid and last["listener"] == "ana"
        row = pairs.set_index("pair_id").loc[pid]
        assert last["prompt"] == row.prompt and last["strategy"] == row.strategy
        assert "timestamp" in last
    with pytest.raises(ValueError):
        pl.answer("C")


def test_blind_order_is_seeded_per_pair_and_hidden(pairs, tmp_path):
    one = PairListener(pairs, tmp_path / "1.jsonl", seed=0)
    two = PairListener(pairs.iloc[::-1], tmp_path / "2.jsonl", seed=0)  # row order is irrelevant
    ids = [f"x{i}" for i in range(40)]
    assert [one.shown_as_a(i) for i in ids] == [two.shown_as_a(i) for i in ids]
    assert {one.shown_as_a(i) for i in ids} == {"chosen", "rejected"}
    other = PairListener(pairs, tmp_path / "3.jsonl", seed=1)
    assert [one.shown_as_a(i) for i in ids] != [other.shown_as_a(i) for i in ids]
    # player A really plays the clip recorded as shown_as_a, and nothing names it
    row = pairs.iloc[0]
    a = one.shown_as_a(row.pair_id)
    b = "rejected" if a == "chosen" else "chosen"
    assert one.clips[0].audio.value == wav_bytes(read_wav(row[a]))
    assert one.clips[1].audio.value == wav_bytes(read_wav(row[b]))
    texts = " ".join(widget_texts(one.widget)).lower()
    assert "chosen" not in texts and "rejected" not in texts and ".wav" not in texts
    assert PairListener(pairs, tmp_path / "4.jsonl", blind=False).shown_as_a("p3") == "chosen"


def test_pair_kernel_death_resumes_and_loses_nothing(pairs, tmp_path):
    out = tmp_path / "pairs.jsonl"
    pl = PairListener(pairs, out)
    for key in ["A", "B", "skip"]:
        pl.answer(key)
    before = out.read_bytes()
    del pl  # the kernel dies
    pl = PairListener(pairs, out)
    assert pl.current == 3 and not pl.done
    assert pl.progress.value == "4 of 6"
    assert out.read_bytes() == before
    assert pl.agreement()["answered"] == 2 and pl.agreement()["skipped"] == 1
    # another listener on the same file starts from the beginning
    assert PairListener(pairs, out, listener="bo").current == 0


def test_pair_undo_is_append_only_and_resumable(pairs, tmp_path):
    out = tmp_path / "pairs.jsonl"
    pl = PairListener(pairs, out)
    assert pl.undo() is None
    pl.answer("A")
    pl.answer("B")
    before = out.read_bytes()
    assert pl.undo() == "p1" and pl.current == 1
    assert out.read_bytes().startswith(before)  # never rewritten
    assert lines(out)[-1]["undo"] is True and lines(out)[-1]["pair_id"] == "p1"
    assert PairListener(pairs, out).current == 1  # the undo survives a restart
    pl.answer("skip")
    assert pl.undo() == "p1" and pl.undo() == "p0" and pl.current == 0
    assert pl.undo() is None
    assert PairListener(pairs, out).current == 0


def test_pair_agreement_matches_hand_count(pairs, tmp_path):
    pl = PairListener(pairs, tmp_path / "pairs.jsonl")
    for target in ["chosen", "rejected", "chosen", "chosen", "skip", "rejected"]:
        pick(pl, target)
    assert pl.done and pl.progress.value == "6 of 6 (done)"
    with pytest.raises(RuntimeError):
        pl.answer("A")
    agr = pl.agreement()
    assert (agr["answered"], agr["skipped"], agr["n_pairs"]) == (5, 1, 6)
    assert agr["agree_with_ranker"] == pytest.approx(3 / 5)
    per = agr["per_strategy"]
    assert per.loc["S1.1"].tolist() == [2, 0, 0.5]
    assert per.loc["S2"].tolist() == [2, 0, 1.0]
    assert per.loc["S3"].tolist() == [1, 1, 0.0]


def test_pair_widget_renders_and_buttons_drive_it(pairs, tmp_path):
    out = tmp_path / "pairs.jsonl"
    pl = PairListener(pairs, out)
    assert isinstance(pl.widget, W.Box) and "application/vnd.jupyter.widget-view+json" in \
        pl._repr_mimebundle_()
    for clip in pl.clips:
        assert clip.audio.value[:4] == b"RIFF" and clip.image.value[:4] == b"\x89PNG"
    assert pl.progress.value == "1 of 6" and pl.buttons["Undo last"].disabled
    pl.buttons["B is better"].click()
    pl.buttons["Skip"].click()
    assert [x["choice"] for x in lines(out)][1] == "skip" and pl.current == 2
    pl.buttons["Undo last"].click()
    assert pl.current == 1
    pl._on_key({"key": "a"})
    assert pl.current == 2


# ---------------------------------------------------------------- FeedbackLabeller

def test_feedback_is_baton_and_round_trips(records, tmp_path):
    out = tmp_path / "labels.jsonl"
    fl = FeedbackLabeller(records, out, "Are both events present?", labeller="ana")
    assert fl.progress.value == "1 of 5"
    for n, (value, on_disk) in enumerate(zip(["yes", "no", "skip", "yes"], [1, 2, 2, 3])):
        fl.answer(value)
        assert fl.progress.value == f"{n + 2} of 5"
        assert len(read_manifest(out, kind="feedback")) == on_disk  # on disk right after the call
    raw = lines(out)
    assert [(r["id"], r["feedback"]) for r in raw] == [("c0", 1), ("c1", 0), ("c3", 1)]
    assert {"dataset", "location", "captions", "feedback", "labeller", "id"} <= set(raw[0])
    recs = read_manifest(out, kind="feedback")
    assert recs[0].location == records[0].location and recs[0].extra["labeller"] == "ana"
    assert recs[0].extra["question"] == "Are both events present?"
    labels = load_labels(out)
    assert labels.id.tolist() == ["c0", "c1", "c3"] and labels.feedback.tolist() == [1, 0, 1]
    assert [x["action"] for x in lines(events_path(out))] == ["yes", "no", "skip", "yes"]
    assert fl.current == 4
    fl.answer("no")
    assert fl.done and fl.progress.value == "5 of 5 (done)"


def test_feedback_kernel_death_and_torn_writes(records, tmp_path):
    out = tmp_path / "labels.jsonl"
    fl = FeedbackLabeller(records, out, "Are the events in this order?")
    fl.answer("yes")
    fl.answer("skip")
    fl.answer("no")
    del fl
    with open(out, "a") as f:  # a crash mid-way through the BATON append
        f.write('{"dataset": "wor')
    with open(events_path(out), "a") as f:  # ... and through the log
        f.write('{"id": "c3", "act')
    with pytest.warns(UserWarning, match="torn"):
        fl = FeedbackLabeller(records, out, "Are the events in this order?")
    assert fl.current == 3
    assert [r.feedback for r in read_manifest(out, kind="feedback")] == [1, 0]
    with pytest.warns(UserWarning, match="torn"):
        fl.answer("yes")
    assert read_manifest(out, kind="feedback")[-1].id == "c3"
    assert load_labels(out).id.tolist() == ["c0", "c2", "c3"]
    # a log line whose BATON line never made it (crash between the two writes) heals on start
    out.write_text(out.read_text().splitlines(keepends=True)[0])
    fl = FeedbackLabeller(records, out, "Are the events in this order?")
    assert [r.id for r in read_manifest(out, kind="feedback")] == ["c0", "c2", "c3"]


def test_feedback_undo_and_skip(records, tmp_path):
    out = tmp_path / "labels.jsonl"
    fl = FeedbackLabeller(pd.DataFrame([r.to_dict() for r in records]), out, "Both present?")
    fl.answer("yes")
    fl.answer("no")
    assert fl.undo() == "c1" and fl.current == 1
    assert [r.id for r in read_manifest(out, kind="feedback")] == ["c0"]
    fl.answer("yes")  # a new answer for the undone clip: still one line per id
    got = read_manifest(out, kind="feedback")
    assert [(r.id, r.feedback) for r in got] == [("c0", 1), ("c1", 1)]
    fl.answer("skip")
    assert len(read_manifest(out, kind="feedback")) == 2
    assert load_labels(out, include_skips=True).set_index("id").feedback.isna().tolist() == \
        [False, False, True]
    assert fl.undo() == "c2" and fl.current == 2  # undoing a skip
    assert fl.undo() == "c1" and fl.undo() == "c0" and fl.current == 0
    assert not out.exists() and load_labels(out).empty
    assert FeedbackLabeller(records, out, "Both present?").current == 0


def test_feedback_guards_and_shuffle(records, tmp_path):
    out = tmp_path / "labels.jsonl"
    FeedbackLabeller(records, out, "q", labeller="ana").answer("yes")
    with pytest.raises(ValueError, match="one out_path per labeller"):
        FeedbackLabeller(records, out, "q", labeller="bo")
    foreign = tmp_path / "foreign.jsonl"
    write_manifest(foreign, [ManifestRecord("w", records[0].location, "x", feedback=1)])
    with pytest.raises(ValueError, match="without its log"):
        FeedbackLabeller(records, foreign, "q")
    a = FeedbackLabeller(records, tmp_path / "a.jsonl", "q", shuffle=True, seed=3)
    b = FeedbackLabeller(records, tmp_path / "b.jsonl", "q", shuffle=True, seed=3)
    assert a._ids == b._ids and sorted(a._ids) == [f"c{i}" for i in range(5)]
    assert isinstance(a.widget, W.Box) and a.clips[0].image.value[:4] == b"\x89PNG"
    a.buttons["No"].click()
    a._on_key({"key": "y"})
    assert load_labels(tmp_path / "a.jsonl").feedback.tolist() == [0, 1]


# ---------------------------------------------------------------- merging labellers

def write_labels(path, name, votes, question="q"):
    write_manifest(path, [ManifestRecord("w", f"/a/{i}.wav", f"cap {i}", id=str(i), feedback=v,
                                         extra={"labeller": name, "question": question})
                          for i, v in votes.items()])
    return path


def test_cohen_kappa_and_majority_two_labellers(tmp_path):
    # 2x2 table: both yes 4, ana yes/bo no 1, ana no/bo yes 2, both no 3 (10 clips)
    ana = [1] * 4 + [1] + [0] * 2 + [0] * 3
    bo = [1] * 4 + [0] + [1] * 2 + [0] * 3
    # p_o = 7/10; p_e = (5/10)(6/10) + (5/10)(4/10) = 0.5; kappa = (0.7 - 0.5) / 0.5 = 0.4
    assert cohen_kappa(ana, bo) == pytest.approx(0.4)
    pa = write_labels(tmp_path / "ana.jsonl", "ana", dict(enumerate(ana)))
    pb = write_labels(tmp_path / "bo.jsonl", "bo", {**dict(enumerate(bo)), 10: 1})
    merged, agr = merge_labellers([pa, pb])
    assert agr["cohen_kappa"] == pytest.approx(0.4)
    assert agr["pairwise"]["ana vs bo"]["n"] == 10
    assert agr["pairwise"]["ana vs bo"]["percent_agreement"] == pytest.approx(70.0)
    fb = merged.set_index("id").feedback
    assert fb[[str(i) for i in range(4)]].tolist() == [1] * 4 and fb["10"] == 1  # one vote decides
    assert fb[[str(i) for i in range(4, 7)]].isna().all()  # 1-1 ties are undecided
    assert fb[[str(i) for i in range(7, 10)]].tolist() == [0] * 3
    assert merged.set_index("id").votes["4"] == {"ana": 1, "bo": 0}
    assert write_merged(tmp_path / "merged.jsonl", merged) == 8
    back = read_manifest(tmp_path / "merged.jsonl", kind="feedback")
    assert sorted((r.id, r.feedback) for r in back) == sorted(
        [(str(i), 1.0) for i in range(4)] + [("10", 1.0)] + [(str(i), 0.0) for i in range(7, 10)])
    write_labels(tmp_path / "other.jsonl", "cy", {0: 1}, question="other question")
    with pytest.raises(ValueError, match="different questions"):
        merge_labellers([pa, tmp_path / "other.jsonl"])


def test_fleiss_kappa_three_labellers(tmp_path, records):
    # items x raters: i0 (1,1,1) i1 (0,0,0) i2 (1,1,0) i3 (1,0,0)  -> yes counts 3, 0, 2, 1
    # P_i = 1, 1, 1/3, 1/3 -> P_bar = 2/3; p_yes = 6/12 -> P_e = 0.5; kappa = (2/3 - 1/2) / (1/2)
    assert fleiss_kappa([[0, 3], [3, 0], [1, 2], [2, 1]]) == pytest.approx(1 / 3)
    table = {"l1": [1, 0, 1, 1], "l2": [1, 0, 1, 0], "l3": [1, 0, 0, 0]}
    paths = [write_labels(tmp_path / f"{k}.jsonl", k, dict(enumerate(v)))
             for k, v in table.items()]
    merged, agr = merge_labellers(paths)
    assert agr["fleiss_kappa"] == pytest.approx(1 / 3) and agr["n_items_all"] == 4
    pct = {k: v["percent_agreement"] for k, v in agr["pairwise"].items()}
    assert pct == pytest.approx({"l1 vs l2": 75.0, "l1 vs l3": 50.0, "l2 vs l3": 75.0})
    assert agr["mean_percent_agreement"] == pytest.approx(200 / 3)
    assert merged.feedback.tolist() == [1, 0, 1, 0]
    assert math.isnan(cohen_kappa([1, 1], [1, 1]))


def test_merge_reads_widget_logs(records, tmp_path):
    for name, answers in {"ana": ["yes", "no", "skip"], "bo": ["yes", "yes", "no"]}.items():
        fl = FeedbackLabeller(records, tmp_path / f"{name}.jsonl", "q", labeller=name)
        for a in answers:
            fl.answer(a)
    merged, agr = merge_labellers([tmp_path / "ana.jsonl", tmp_path / "bo.jsonl"])
    fb = merged.set_index("id").feedback
    assert fb["c0"] == 1 and math.isnan(fb["c1"]) and fb["c2"] == 0  # ana skipped c2
    assert agr["pairwise"]["ana vs bo"]["n"] == 2
