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


def join(workshop, name):
    return workshop.join(name, workshop.session["code"])["token"]


def test_join_needs_the_code_and_keeps_unicode_names_apart(workshop):
    with pytest.raises(AnswerError, match="session code") as e:
        workshop.join("Ana", "wrong")
    assert e.value.status == 403
    names = ["Ana", "Anna B", "anna.b", "Zoë", "Zoé", "李雷", "Merged"]
    tokens = [join(workshop, n) for n in names]
    people = workshop.roster.people()
    assert [p.name for p in people.values()] == names and len(set(tokens)) == len(names)
    assert [workshop.overview(t)["name"] for t in tokens] == names  # the token says who, not the name
    assert list(people) == [f"p.{k:03d}" for k in range(1, len(names) + 1)]  # a folder per id, never per name
    again = workshop.join("anything", workshop.session["code"], tokens[0])
    assert (again["id"], again["token"]) == ("p.001", tokens[0])  # the same browser: the same person
    with pytest.raises(AnswerError, match="taken") as e:
        workshop.join("  Ana ", workshop.session["code"])  # another laptop typing her name
    assert e.value.status == 409
    for bad in ("", "x" * 41, "a\u0000b", ["Ana"]):
        with pytest.raises(AnswerError):
            workshop.join(bad, workshop.session["code"])
    for forged in (None, "", "Ana", "p.001"):
        with pytest.raises(AnswerError, match="token") as e:
            workshop.state(forged, "pairs")
        assert e.value.status in (401, 403)


def test_shares_mix_one_gold_pair_in_four_and_rotate(workshop):
    tokens = [join(workshop, n) for n in ("Ana", "Bo")]
    items = workshop.tasks["pairs"].items
    for k, token in enumerate(tokens):
        ids = [s for s in workshop.assigned(workshop.roster.by_token(token), "pairs")]
        assert list(items.loc[ids, "set"]) == ["preferences", "preferences", "gold"]  # 3 per person: the last
        ranked = items.index[items.set != "gold"]
        assert ids[:2] == [ranked[i] for i in label_items.assign(len(ranked), k, 2, 4, 0)]
    people = [workshop.roster.by_token(t) for t in tokens]
    golds = {workshop.assigned(p, "pairs")[2] for p in people}
    assert len(golds) == 2  # the two gold pairs go round the room
    big = label_items.assign_with_truth(100, 8, 3, 12, 3, 0)
    assert [pool for pool, _ in big].count("truth") == 3 and [k for k, (pool, _) in enumerate(big) if pool == "truth"] == [3, 7, 11]


def test_gold_clips_carry_the_worlds_answer_to_each_question(run, workshop):
    clips = label_items.truth_clips(run)
    # g0 is an "order" pair (its loser swaps two events), g1 a "presence" pair (its loser misses one)
    assert {(r.task, r.id): r.truth for r in clips.itertuples()} == {
        ("integrity", "gold-g0_w"): 1, ("integrity", "gold-g0_l"): 1, ("integrity", "gold-g1_w"): 1,
        ("integrity", "gold-g1_l"): 0, ("temporal", "gold-g0_w"): 1, ("temporal", "gold-g0_l"): 0,
        ("temporal", "gold-g1_w"): 1}
    token = join(workshop, "Ana")
    for answer in ("no", "no", "no", "no"):
        workshop.answer(token, "temporal", workshop.state(token, "temporal")["item"]["id"], answer)
    share = workshop.assigned(workshop.roster.by_token(token), "temporal")
    gold = share[3]
    assert gold.startswith("gold-") and not any(i.startswith("gold-") for i in share[:3])
    truth = {(r.task, r.id): r.truth for r in clips.itertuples()}[("temporal", gold)]
    assert workshop.state(token, "temporal")["truth"] == {"n": 1, "agree": int(truth == 0)}
    view = workshop.teacher()["tasks"]["temporal"]["truth"]
    assert view["people"]["Ana"] == {"n": 1, "agree": float(truth == 0)} and view["items"] == 3


def test_answers_are_appended_and_stale_ones_refused(workshop):
    ana = join(workshop, "ana")
    s = workshop.state(ana, "integrity")
    first = s["item"]["id"]
    s = workshop.answer(ana, "integrity", first, "yes")
    assert s["done"] == 1 and s["item"]["position"] == 2 and s["can_undo"]
    log = workshop.out_dir / "people" / "p.001" / "feedback_integrity.events.jsonl"
    line = labels.read_jsonl(log)[-1]
    assert (line["id"], line["action"], line["feedback"], line["labeller"]) == (first, "yes", 1, "ana")
    clip = workshop.tasks["integrity"].items.loc[first].location
    assert resolve_location(line["location"], log.parent) == clip  # resolves from the log's folder
    with pytest.raises(AnswerError, match="no longer the one") as e:
        workshop.answer(ana, "integrity", first, "no")  # a second tab still showing the first clip
    assert e.value.status == 409 and len(labels.read_jsonl(log)) == 1
    with pytest.raises(ValueError, match="answer must be"):
        workshop.answer(ana, "integrity", s["item"]["id"], "maybe")
    with pytest.raises(AnswerError, match="unknown task") as e:
        workshop.answer(ana, ["integrity"], s["item"]["id"], "yes")
    assert e.value.status == 400
    before = log.read_bytes()
    assert workshop.undo(ana, "integrity")["item"]["id"] == first
    assert log.read_bytes().startswith(before)  # append-only
    assert workshop.undo(ana, "integrity")["message"] == "Nothing to undo."


def test_pair_answers_map_back_from_a_and_b_and_score_the_gold_pair(workshop):
    ana = join(workshop, "ana")
    for button in ("A", "B", "skip"):
        pid = workshop.state(ana, "pairs")["item"]["id"]
        workshop.answer(ana, "pairs", pid, button)
        line = labels.read_jsonl(workshop.out_dir / "people" / "p.001" / "pairs.jsonl")[-1]
        a = labels.shown_as_a(pid, 0)
        other = "rejected" if a == "chosen" else "chosen"
        assert line["choice"] == {"A": a, "B": other, "skip": "skip"}[button] and line["shown_as_a"] == a
    done = workshop.state(ana, "pairs")
    assert done["item"] is None and done["truth"] == {"n": 0, "agree": 0}  # the gold pair was skipped
    workshop.undo(ana, "pairs")
    with pytest.raises(AnswerError, match="A, B or skip"):
        workshop.answer(ana, "pairs", pid, "C")
    gold = workshop.state(ana, "pairs")["item"]["id"]
    workshop.answer(ana, "pairs", gold, "A" if labels.shown_as_a(gold, 0) == "chosen" else "B")
    assert workshop.state(ana, "pairs")["truth"] == {"n": 1, "agree": 1}


def test_media_comes_from_the_items_never_from_the_request(workshop):
    pid = workshop.tasks["pairs"].items.index[0]
    row = workshop.tasks["pairs"].items.loc[pid]
    a = labels.shown_as_a(pid, 0)
    assert workshop.media("pairs", pid, "a") == Path(row[a])
    assert workshop.media("pairs", pid, "b") == Path(row["rejected" if a == "chosen" else "chosen"])
    for bad in (("pairs", "../../etc/passwd", "a"), ("pairs", pid, "clip"), ("nope", pid, "a")):
        with pytest.raises(AnswerError, match="no such clip"):
            workshop.media(*bad)


def label(workshop, plan: dict) -> dict:
    """Each person answers their share in order: {name: {task: [answers]}}; returns their tokens."""
    tokens = {}
    for name, tasks in plan.items():
        tokens[name] = join(workshop, name)
        for task, answers in tasks.items():
            for a in answers:
                workshop.answer(tokens[name], task, workshop.state(tokens[name], task)["item"]["id"], a)
    return tokens


def test_teacher_matches_the_merges_recomputed_from_the_files(workshop):
    label(workshop, {"ana": {"integrity": ["yes", "no", "yes", "no"], "pairs": ["A", "B", "A"]},
                     "bo": {"integrity": ["no", "yes", "yes", "skip"], "pairs": ["B", "B", "A"]},
                     "cy": {"integrity": ["yes", "yes", "no", "no"], "pairs": ["A", "skip", "B"]}})
    view = jsonable(workshop.teacher())
    json.dumps(view, allow_nan=False)  # what the page receives is valid JSON
    assert [p["progress"]["integrity"] for p in view["participants"]] == [{"done": 4, "n": 4}] * 3
    # the teacher's numbers, kept incrementally, equal the merges read afresh from the files
    merged, agr = labels.merge_labellers(labels.feedback_files(workshop.out_dir)["integrity"])
    integrity = view["tasks"]["integrity"]
    for key in ("pairwise", "mean_cohen_kappa", "fleiss_kappa", "fleiss_items", "items_multi", "labellers"):
        assert integrity["agreement"][key] == jsonable(agr)[key]
    fb = merged.feedback
    assert integrity["merged"] == {"yes": int((fb == 1).sum()), "no": int((fb == 0).sum()), "tie": int(fb.isna().sum())}
    pm, pagr = labels.merge_pairs(labels.pair_files(workshop.out_dir))
    pairs = view["tasks"]["pairs"]
    assert pairs["merged"] == pm.majority.value_counts().reindex(["chosen", "rejected", "tie"], fill_value=0).to_dict()
    for key in ("pairwise", "mean_cohen_kappa", "fleiss_kappa", "verdicts", "agree_with_ranker", "per_strategy"):
        assert pairs["agreement"][key] == jsonable(pagr)[key]
    # truth: the gold pairs' chosen clip is the better one; by hand from the answer files
    truth = pairs["truth"]
    for person in workshop.roster.people().values():
        lines = labels.read_jsonl(workshop.out_dir / "people" / person.id / "pairs.jsonl")
        gold = [x["choice"] == "chosen" for x in lines if x["pair_id"].startswith("g") and x["choice"] != "skip"]
        assert truth["people"][person.name] == {"n": len(gold), "agree": (sum(gold) / len(gold)) if gold else None}
    assert truth["ranker"] == {"n": 2, "agree": 0.5}  # the fixture's rankers: right on g0, wrong on g1
    assert "merged" not in view["tasks"]["temporal"] and view["tasks"]["temporal"]["agreement"] == {}


def test_merging_twice_gives_the_same_files_and_a_person_named_merged_keeps_hers(workshop):
    tokens = label(workshop, {"Merged": {"integrity": ["yes", "no", "yes", "no"], "pairs": ["A", "B", "A"]},
                              "bo": {"integrity": ["no", "no", "yes", "skip"], "pairs": ["B", "A", "A"]}})
    hers = {p.name: p.read_bytes() for p in (workshop.out_dir / "people" / "p.001").iterdir()}
    before = jsonable(workshop.teacher())
    first = workshop.write_merges()
    files = {t: Path(w["path"]).read_bytes() for t, w in first.items() if w["path"]}
    assert set(files) == {"integrity", "pairs"}
    assert jsonable(workshop.teacher()) == before  # the merge is not read back as a participant
    assert workshop.write_merges() == first
    assert {t: Path(w["path"]).read_bytes() for t, w in first.items() if w["path"]} == files  # idempotent
    assert {p.name: p.read_bytes() for p in (workshop.out_dir / "people" / "p.001").iterdir()} == hers
    assert workshop.state(tokens["Merged"], "integrity")["done"] == 4
    assert all(labels.MERGED not in p.parts for p in labels.pair_files(workshop.out_dir))
    merged = labels.load_labels(first["integrity"]["path"])
    # shares: 3 run clips then 1 gold clip. Merged on o0..o2 = y n y and gold g = n; bo on o1..o3 = n n y,
    # her gold clip skipped: o0 yes, o1 no, o2 a tie (left out), o3 yes, g no
    assert sorted(merged.feedback.tolist()) == [0, 0, 1, 1] and len(merged) == 4


def test_make_workshop_serves_the_run_folder():
    make = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^workshop:.*\n((?:\t.*\n)+)", make, re.M)
    assert recipe, "Makefile has no workshop target"
    assert "-m t2a_lib.feedback.workshop_server --run-dir" in recipe.group(1)
    assert "workshop" in re.search(r"^\.PHONY:(.*)$", make, re.M).group(1)


def test_the_teacher_lists_the_pairs_of_people_that_agree_least():
    from t2a_lib.feedback.workshop_summary import shown_pairs

    kappas = {"a vs b": 0.5, "a vs c": float("nan"), "b vs c": -0.2, "c vs d": 0.9}
    agr = shown_pairs({"pairwise": {k: {"cohen_kappa": v} for k, v in kappas.items()}}, limit=3)
    assert list(agr["pairwise"]) == ["b vs c", "a vs b", "c vs d"] and agr["pairs_total"] == 4
    assert list(shown_pairs({"pairwise": {"a vs b": {"cohen_kappa": 1.0}}})["pairwise"]) == ["a vs b"]
