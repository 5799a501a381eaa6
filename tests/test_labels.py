"""Answers on disk (t2a_lib.feedback.labels), items from a run folder (t2a_lib.feedback.label_items), and the
widgets built from a run folder: paths that travel, merges per question, agreement by hand."""

import json
import math
import os

import numpy as np
import pandas as pd
import pytest
from run_fixture import make_run

from t2a_lib.audio.manifest import ManifestRecord, portable_location, read_manifest, write_manifest
from t2a_lib.feedback import label_items, labels
from t2a_lib.feedback.agreement import agreement, cohen_kappa
from t2a_lib.feedback.reward import TASKS, write_feedback
from t2a_lib.feedback.widgets import feedback_labellers_from_run, pair_listener_from_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("labels") / "run")


def test_locations_are_stored_relative_to_the_file_and_resolve_from_any_folder(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "dev"
    (run / "baton" / "hd" / "audio").mkdir(parents=True)
    (run / "baton" / "hd" / "audio" / "x.wav").write_bytes(b"RIFF")
    monkeypatch.chdir(tmp_path)  # the notebook's working folder: locations relative to it
    write_feedback("runs/dev/baton/hd_labels.jsonl", ["runs/dev/baton/hd/audio/x.wav"], ["a bell"], [1], ["x"])
    stored = json.loads((run / "baton" / "hd_labels.jsonl").read_text())["location"]
    assert stored == "hd/audio/x.wav"  # relative to the file, as the reader resolves it
    monkeypatch.chdir(run / "baton" / "hd")  # any other working folder
    rec = read_manifest(run / "baton" / "hd_labels.jsonl", kind="feedback")[0]
    assert rec.location == str(run / "baton" / "hd" / "audio" / "x.wav") and os.path.isfile(rec.location)
    # three folders up stays relative (a workshop log reaching the run audio); further goes absolute
    folder = run / "workshop" / "people" / "ana"
    assert portable_location(str(run / "baton" / "hd" / "audio" / "x.wav"), folder) == "../../../baton/hd/audio/x.wav"
    assert portable_location("/elsewhere/x.wav", folder) == "/elsewhere/x.wav"
    write_manifest(folder / "m.jsonl", [ManifestRecord("w", str(run / "baton" / "hd" / "audio" / "x.wav"), "c")])
    assert read_manifest(folder / "m.jsonl")[0].location == str(run / "baton" / "hd" / "audio" / "x.wav")


def test_agreement_on_an_assigned_design_matches_hand_computation():
    # 6 items, 4 raters, each item rated by the two or three people it was assigned to
    n = np.nan
    votes = pd.DataFrame({"ana": [1, 1, n, n, 1, 0], "bo": [1, 0, 0, n, n, 0],
                          "cy": [n, n, 0, 1, n, 1], "dee": [n, n, n, 0, 1, n]}, index=list("abcdef"))
    agr = agreement(votes)
    # ana vs bo on a, b, f: (1,1) (1,0) (0,0): p_o = 2/3; ana yes 2/3, bo yes 1/3:
    # p_e = 2/3*1/3 + 1/3*2/3 = 4/9; kappa = (2/3 - 4/9) / (5/9) = 2/5
    assert agr["pairwise"]["ana vs bo"]["n"] == 3
    assert agr["pairwise"]["ana vs bo"]["cohen_kappa"] == pytest.approx(0.4)
    assert agr["pairwise"]["ana vs bo"]["percent_agreement"] == pytest.approx(200 / 3)
    # other pairs: ana-cy (f: 0/1) 0; bo-cy (c 0/0, f 0/1) p_o 1/2 = p_e -> 0; cy-dee (d) 0;
    # ana-dee (e: 1/1) p_e = 1 -> NaN, left out of the mean; bo-dee share nothing
    assert sorted(agr["pairwise"]) == ["ana vs bo", "ana vs cy", "ana vs dee", "bo vs cy", "cy vs dee"]
    assert math.isnan(agr["pairwise"]["ana vs dee"]["cohen_kappa"])
    assert agr["mean_cohen_kappa"] == pytest.approx((0.4 + 0 + 0 + 0) / 4)
    # Fleiss over the items with the usual two ratings (a-e; f has three):
    # (no, yes) = (0,2) (1,1) (2,0) (1,1) (0,2): P_i = 1, 0, 1, 0, 1 -> P_bar = 3/5
    # p_yes = 6/10 -> P_e = 0.36 + 0.16 = 0.52; kappa = (0.6 - 0.52) / 0.48 = 1/6
    assert (agr["fleiss_raters"], agr["fleiss_items"]) == (2, 5)
    assert agr["fleiss_kappa"] == pytest.approx(1 / 6)
    assert (agr["items_rated"], agr["items_multi"]) == (6, 6)
    votes.loc[["a", "b", "c"], "dee"] = 1  # now four items have three ratings, two have two
    agr = agreement(votes)
    assert (agr["fleiss_raters"], agr["fleiss_items"]) == (3, 4)


def write_pairs(path, who, choices):
    for pid, (choice, strategy) in choices.items():
        labels.append_jsonl(path, labels.pair_line(pid, f"prompt {pid}", strategy, who, choice, "chosen"))


def test_merge_pairs_majority_and_agreement_by_hand(tmp_path):
    write_pairs(tmp_path / "ana" / "pairs.jsonl", "ana",
                {"p1": ("chosen", "S1"), "p2": ("rejected", "S1"), "p3": ("skip", "S2"), "p4": ("chosen", "S2")})
    write_pairs(tmp_path / "bo" / "pairs.jsonl", "bo",
                {"p1": ("chosen", "S1"), "p2": ("chosen", "S1"), "p3": ("chosen", "S2")})
    labels.append_jsonl(tmp_path / "bo" / "pairs.jsonl", labels.undo_line("pair_id", "p3", "listener", "bo"))
    merged, agr = labels.merge_pairs(labels.pair_files(tmp_path))
    m = merged.set_index("pair_id")
    assert sorted(m.index) == ["p1", "p2", "p4"]  # p3: ana skipped, bo's answer undone
    assert m.majority["p1"] == "chosen" and m.majority["p2"] == "tie" and m.majority["p4"] == "chosen"
    assert m.votes["p2"] == {"ana": "rejected", "bo": "chosen"}
    # verdicts: ana chosen, rejected, chosen; bo chosen, chosen -> 4 of 5 agree with the ranker
    assert agr["verdicts"] == 5 and agr["agree_with_ranker"] == pytest.approx(0.8)
    assert agr["per_strategy"]["S1"] == {"verdicts": 4, "agree_with_ranker": 0.75}
    assert agr["pairwise"]["ana vs bo"] == {"n": 2, "percent_agreement": 50.0,
                                            "cohen_kappa": cohen_kappa([1, 0], [1, 1])}
    with pytest.raises(ValueError, match="answers in both"):
        labels.merge_pairs([tmp_path / "ana" / "pairs.jsonl", tmp_path / "ana" / "pairs.jsonl"])


def test_assign_gives_overlapping_windows_covering_each_item_about_raters_times():
    n, per, raters = 12, 6, 2
    shares = [label_items.assign(n, k, per, raters, seed=3) for k in range(4)]
    assert all(len(s) == per == len(set(s)) for s in shares)
    counts = np.bincount(np.concatenate(shares), minlength=n)
    assert counts.tolist() == [raters] * n  # 4 people x 6 items = 24 = 12 items x 2
    assert len(set(shares[0]) & set(shares[1])) == per - per // raters
    assert label_items.assign(n, 5, per, raters, seed=3) == shares[1]  # wraps around
    assert len(label_items.assign(3, 0, 10)) == 3 and label_items.assign(0, 0, 5) == []
    with pytest.raises(ValueError, match="per_person"):
        label_items.assign(5, 0, 0)


def test_run_dir_resolves_the_same_from_the_notebooks_folder(tmp_path, monkeypatch):
    (tmp_path / "papermill_runs" / "profiles").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # where `make lab` starts JupyterLab
    assert label_items.resolve_run_dir("papermill_runs/dev") == tmp_path / "papermill_runs" / "dev"
    monkeypatch.chdir(tmp_path)  # where papermill runs
    assert label_items.resolve_run_dir("papermill_runs/dev") == tmp_path / "papermill_runs" / "dev"
    assert label_items.resolve_run_dir("/abs/run") == label_items.Path("/abs/run")


def test_items_come_straight_from_a_run_folder(run, tmp_path):
    pairs = label_items.pair_items(run)
    assert len(pairs) == 8 and pairs.pair_id.is_unique and set(pairs.set) == {"preferences", "gold"}
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in pairs.chosen)
    items = label_items.feedback_items(run)  # the parquet stores repo-relative paths; the audio is found
    assert items.groupby("task").size().to_dict() == {"integrity": 6, "temporal": 6}
    assert set(items.question) == set(TASKS.values()) and all(os.path.isfile(p) for p in items.location)
    with pytest.raises(FileNotFoundError, match="notebook 03"):
        label_items.pair_items(tmp_path)
    with pytest.raises(FileNotFoundError, match="clips.parquet"):
        label_items.feedback_items(tmp_path)


def test_widgets_from_a_run_folder_write_where_the_workshop_writes_and_merge_per_question(run):
    for who, answers in {"ana": ["yes", "no", "yes"], "bo": ["yes", "yes", "skip"]}.items():
        uis = feedback_labellers_from_run(run, who)
        assert {t: ui.question for t, ui in uis.items()} == TASKS
        for ui in uis.values():
            for a in answers:
                ui.answer(a)
            assert ui.status.value.endswith(f"Now: {ui._ids[3]}.")  # names the clip shown
    # the same files a workshop participant writes; one merge per question
    root = run / "workshop"
    assert (root / "people" / "ana" / "feedback_integrity.events.jsonl").is_file()
    merged = labels.merge_feedback(root)
    assert set(merged) == {"integrity", "temporal"}
    for task, (m, agr) in merged.items():
        fb = m.set_index("id").feedback
        assert agr["question"] == TASKS[task] and agr["labellers"] == ["ana", "bo"]
        assert fb.iloc[0] == 1 and math.isnan(fb.iloc[1]) and len(fb) == 3  # 2 votes yes; 1-1 tie; 1 vote
        assert all(os.path.isfile(p) for p in m.location)
    with pytest.raises(ValueError, match="different questions"):
        labels.merge_labellers([root / "people" / "ana" / "feedback_integrity.jsonl", root / "people" / "ana" / "feedback_temporal.jsonl"])
    # a log's relative locations resolve from its own folder, not the working folder
    line = labels.read_jsonl(root / "people" / "ana" / "feedback_integrity.events.jsonl")[0]
    assert line["location"].startswith("../../../baton/hd/audio/")


def test_pair_widget_from_a_run_hides_its_players_when_done(run):
    pl = pair_listener_from_run(run, "cy")
    assert pl.out_path == run / "workshop" / "people" / "cy" / "pairs.jsonl"
    for _ in range(len(pl._ids)):
        pl.answer("A")
    assert pl.done and all(c.box.layout.display == "none" for c in pl.clips)
    assert pl.undo() is not None and all(c.box.layout.display is None for c in pl.clips)
    merged, agr = labels.merge_pairs(labels.pair_files(run / "workshop"))
    assert agr["verdicts"] == len(pl._ids) - 1 and set(merged.pair_id) < set(pl._ids)


def test_pairwise_agreement_at_once_equals_cohen_kappa_pair_by_pair():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2, (40, 9)).astype(float)
    values[rng.random(values.shape) < 0.6] = np.nan  # an assigned design: most people hear few items
    names = [f"r{k}" for k in range(9)]
    agr = agreement(pd.DataFrame(values, columns=names))
    expected = {}
    for i in range(9):
        for j in range(i + 1, 9):
            both = ~np.isnan(values[:, i]) & ~np.isnan(values[:, j])
            if both.any():
                a, b = values[both, i], values[both, j]
                expected[f"r{i} vs r{j}"] = (int(both.sum()), 100 * float(np.mean(a == b)), cohen_kappa(a, b))
    assert list(agr["pairwise"]) == list(expected)
    for key, (n, pct, kappa) in expected.items():
        got = agr["pairwise"][key]
        assert got["n"] == n and got["percent_agreement"] == pytest.approx(pct)
        assert got["cohen_kappa"] == pytest.approx(kappa, nan_ok=True)
    with pytest.raises(ValueError, match="0/1"):
        agreement(pd.DataFrame({"a": [2.0], "b": [1.0]}))
