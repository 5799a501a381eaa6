"""The workshop's logic without a browser: joining, assignment, answers on disk, stale answers,
bad input, media that never comes from a request path, merges, and the make target."""

import json
import re
from pathlib import Path

import pytest
from run_fixture import make_run

from t2a_lib.audio.manifest import resolve_location
from t2a_lib.feedback import label_items, labels
from t2a_lib.feedback.workshop import AnswerError, Workshop, WorkshopConfig
from t2a_lib.feedback.workshop_server import jsonable

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("workshop") / "run")


@pytest.fixture
def workshop(run, tmp_path):
    out = tmp_path / "workshop"  # each test its own answers
    return Workshop(WorkshopConfig(run, out_dir=out, pairs_per_person=3, clips_per_person=4, raters=4))


def test_join_assigns_shares_by_order_of_joining(workshop):
    ana = workshop.join("Ana")
    assert ana["slug"] == "ana" and [t["task"] for t in ana["tasks"]] == ["pairs", "integrity", "temporal"]
    assert workshop.join("  ana ")["name"] == "Ana"  # the same person again, first name kept
    workshop.join("Bo")
    assert workshop.roster() == {"ana": {"name": "Ana", "index": 0}, "bo": {"name": "Bo", "index": 1}}
    items = workshop.tasks["integrity"].items
    expected = [items.index[i] for i in label_items.assign(len(items), 1, 4, 4, 0)]
    assert workshop.assigned("bo", "integrity") == expected
    with pytest.raises(AnswerError, match="1 to 40"):
        workshop.join("")
    with pytest.raises(ValueError, match="no letters"):
        workshop.join("!!!")
    with pytest.raises(AnswerError, match="enter your name") as e:
        workshop.state("cy", "pairs")
    assert e.value.status == 404


def test_answers_are_appended_and_stale_ones_refused(workshop):
    workshop.join("ana")
    s = workshop.state("ana", "integrity")
    first = s["item"]["id"]
    s = workshop.answer("ana", "integrity", first, "yes")
    assert s["done"] == 1 and s["item"]["position"] == 2 and s["can_undo"]
    log = workshop.out_dir / "ana" / "feedback_integrity.events.jsonl"
    line = labels.read_jsonl(log)[-1]
    assert (line["id"], line["action"], line["feedback"], line["labeller"]) == (first, "yes", 1, "ana")
    clip = workshop.tasks["integrity"].items.loc[first].location
    assert resolve_location(line["location"], log.parent) == clip  # resolves from the log's folder
    with pytest.raises(AnswerError, match="no longer the one") as e:
        workshop.answer("ana", "integrity", first, "no")  # a second tab still showing the first clip
    assert e.value.status == 409 and len(labels.read_jsonl(log)) == 1
    with pytest.raises(ValueError, match="answer must be"):
        workshop.answer("ana", "integrity", s["item"]["id"], "maybe")
    before = log.read_bytes()
    assert workshop.undo("ana", "integrity")["item"]["id"] == first
    assert log.read_bytes().startswith(before)  # append-only
    assert workshop.undo("ana", "integrity")["message"] == "Nothing to undo."


def test_pair_answers_map_back_from_a_and_b(workshop):
    workshop.join("ana")
    for button in ("A", "B", "skip"):
        pid = workshop.state("ana", "pairs")["item"]["id"]
        workshop.answer("ana", "pairs", pid, button)
        line = labels.read_jsonl(workshop.out_dir / "ana" / "pairs.jsonl")[-1]
        a = labels.shown_as_a(pid, 0)
        other = "rejected" if a == "chosen" else "chosen"
        assert line["choice"] == {"A": a, "B": other, "skip": "skip"}[button] and line["shown_as_a"] == a
    assert workshop.state("ana", "pairs")["item"] is None  # all 3 done
    workshop.undo("ana", "pairs")
    with pytest.raises(AnswerError, match="A, B or skip"):
        workshop.answer("ana", "pairs", pid, "C")


def test_media_comes_from_the_items_never_from_the_request(workshop):
    pid = workshop.tasks["pairs"].items.index[0]
    row = workshop.tasks["pairs"].items.loc[pid]
    a = labels.shown_as_a(pid, 0)
    assert workshop.media("pairs", pid, "a") == Path(row[a])
    assert workshop.media("pairs", pid, "b") == Path(row["rejected" if a == "chosen" else "chosen"])
    for bad in (("pairs", "../../etc/passwd", "a"), ("pairs", pid, "clip"), ("nope", pid, "a")):
        with pytest.raises(AnswerError, match="no such clip"):
            workshop.media(*bad)


def test_teacher_merges_per_question_and_writes_them(workshop):
    for name, answers in (("ana", ["yes", "no", "yes", "no"]), ("bo", ["no", "yes", "yes", "skip"])):
        workshop.join(name)
        for a in answers:
            workshop.answer(name, "integrity", workshop.state(name, "integrity")["item"]["id"], a)
    view = jsonable(workshop.teacher())
    json.dumps(view, allow_nan=False)  # what the page receives is valid JSON
    assert [p["progress"]["integrity"] for p in view["participants"]] == [{"done": 4, "n": 4}] * 2
    integrity = view["tasks"]["integrity"]
    # ana o0..o3 = y n y n; bo o1..o4 = n y y skip: o0 yes, o1 no, o2 yes, o3 tie (o4 no vote)
    assert integrity["merged"] == {"yes": 2, "no": 1, "tie": 1}
    # on o1..o3: ana 0 1 0, bo 0 1 1: p_o 2/3, p_e 1/3*2/3 + 2/3*1/3 = 4/9 -> kappa 0.4
    assert integrity["agreement"]["pairwise"]["ana vs bo"]["cohen_kappa"] == pytest.approx(0.4)
    assert "merged" not in view["tasks"]["temporal"] and view["tasks"]["temporal"]["agreement"] == {}
    written = workshop.write_merges()
    assert written["integrity"]["rows"] == 3 and "pairs" not in written
    merged = labels.load_labels(written["integrity"]["path"])
    assert sorted(merged.feedback.tolist()) == [0, 1, 1]


def test_make_workshop_serves_the_run_folder():
    make = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^workshop:.*\n((?:\t.*\n)+)", make, re.M)
    assert recipe, "Makefile has no workshop target"
    assert "-m t2a_lib.feedback.workshop_server --run-dir" in recipe.group(1)
    assert "workshop" in re.search(r"^\.PHONY:(.*)$", make, re.M).group(1)
