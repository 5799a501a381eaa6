"""`make workshop` in real browsers: participants join by the printed URL (its session code) or
by typing the code, label at once (buttons, keys, undo), their files on disk match their clicks,
a reload resumes, a second tab cannot answer a stale item, and the teacher's page (with the
teacher's token) merges per question and scores the gold pairs. The server is the one
`make workshop` starts, on a free loopback port; each person keeps one browser context (their
laptop: its storage holds their token)."""

import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from browser import ARTIFACTS, MEDIA_READY, browser  # noqa: F401 (fixture)
from run_fixture import make_run

from t2a_lib.feedback import label_items, labels

ROOT = Path(__file__).resolve().parents[1]
SHARES = {"pairs_per_person": 3, "clips_per_person": 4, "raters": 4}  # neighbours share 2 pairs, 3 clips


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m t2a_lib.feedback.workshop_server` on a fixture run (port 0: a free one); stopped afterwards."""
    run = make_run(tmp_path_factory.mktemp("browser_workshop") / "run")
    args = [f"--{k.replace('_', '-')}={v}" for k, v in SHARES.items()]
    proc = subprocess.Popen([sys.executable, "-m", "t2a_lib.feedback.workshop_server", "--run-dir", str(run), "--port", "0", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines: queue.Queue = queue.Queue()  # read in a thread: never block past the deadline
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
        urls, deadline, seen = {}, time.time() + 90, []
        while len(urls) < 2 and time.time() < deadline and proc.poll() is None:
            try:
                seen.append(lines.get(timeout=1.0))
            except queue.Empty:
                continue
            for key, pattern in (("join", r"participants: (http://127\.0\.0\.1:\d+/\?code=\w+)"),
                                 ("teacher", r"teacher .*: (http://127\.0\.0\.1:\d+/teacher\?token=\S+)")):
                m = re.search(pattern, seen[-1])
                urls.update({key: m.group(1)} if m else {})
        assert len(urls) == 2, f"the workshop server did not start: {''.join(seen)}"
        yield urls, run
    finally:
        proc.terminate()
        proc.wait(timeout=10)


LAPTOPS: dict = {}  # name -> browser context: one per person, kept across the tests


def join(browser, urls, name, by="url"):  # noqa: F811
    """A page of ``name``'s laptop on the join URL: the first time they enter their name (and the
    code, ``by="code"``: a URL without it); later the page knows them from its stored token."""
    known = name in LAPTOPS
    context = LAPTOPS.setdefault(name, browser.new_context(viewport={"width": 1000, "height": 800}))
    page = context.new_page()
    page.goto(urls["join"] if by == "url" else urls["join"].split("?")[0])
    if not known:
        if by == "code":
            page.fill("#code", urls["join"].split("code=")[1])
        page.fill("#name", name)
        page.click("#join-form button")
    page.wait_for_selector("#task-list button")
    assert page.inner_text("#who") == name
    return page


def open_task(page, task):
    page.click(f"#task-list button[data-task={task}]")
    page.wait_for_selector("#item:not([hidden])")


def current(page) -> tuple[str, str]:
    """(progress text, item id) shown now."""
    return page.inner_text("#progress"), page.evaluate("state.item ? state.item.id : null")


def act(page, how: str) -> None:
    """Answer by clicking a button ("click:yes") or pressing a key ("key:n"), then wait for the page."""
    before = page.evaluate("JSON.stringify(state)")
    kind, value = how.split(":")
    if kind == "click":
        page.click(f"#buttons button[data-answer='{value}']")
    else:
        page.keyboard.press(value)
    page.wait_for_function("before => JSON.stringify(state) !== before", arg=before)


def assigned(run, task, index):
    """A share, as the server cuts it: the run's items with, last, one whose truth is known."""
    if task == "pairs":
        items = label_items.pair_items(run)
        pools = {"items": items[items.set != "gold"].pair_id, "truth": items[items.set == "gold"].pair_id}
    else:
        pools = {"items": label_items.feedback_items(run).query(f"task == '{task}'").id,
                 "truth": label_items.truth_clips(run).query(f"task == '{task}'").id}
    per = SHARES["pairs_per_person"] if task == "pairs" else SHARES["clips_per_person"]
    picks = label_items.assign_with_truth(len(pools["items"]), len(pools["truth"]), index, per, SHARES["raters"], 0)
    return [pools[pool].iloc[i] for pool, i in picks]


def test_two_participants_label_at_once_and_merge_on_the_teacher_page(browser, server):  # noqa: F811
    urls, run = server
    ana, bo = join(browser, urls, "Ana"), join(browser, urls, "Bo")
    for page in (ana, bo):
        open_task(page, "integrity")
    # the page plays the assigned clips, with spectrograms
    ana.wait_for_function(MEDIA_READY, timeout=10000)
    assert ana.evaluate("document.querySelectorAll('#players audio').length") == 1
    # interleaved: Ana y (key), n then undo, n, y, n; Bo n, y (key), y, skip
    ana_steps = ["key:y", "click:no", "click:undo", "click:no", "click:yes", "key:n"]
    bo_steps = ["click:no", "key:y", "click:yes", "key:s"]
    for i in range(max(len(ana_steps), len(bo_steps))):
        for page, steps in ((ana, ana_steps), (bo, bo_steps)):
            if i < len(steps):
                act(page, steps[i])
    # the files on disk hold exactly the clicks, in order, on the assigned clips
    ws = run / "workshop"
    ana_log = labels.read_jsonl(ws / "people" / "p.001" / "feedback_integrity.events.jsonl")
    ids = assigned(run, "integrity", 0)
    assert [(x["id"], x.get("action"), bool(x.get("undo"))) for x in ana_log] == [
        (ids[0], "yes", False), (ids[1], "no", False), (ids[1], None, True), (ids[1], "no", False),
        (ids[2], "yes", False), (ids[3], "no", False)]
    bo_log = labels.read_jsonl(ws / "people" / "p.002" / "feedback_integrity.events.jsonl")
    assert [(x["id"], x["action"]) for x in bo_log] == list(zip(assigned(run, "integrity", 1), ["no", "yes", "yes", "skip"]))
    # done: no empty players, no broken images
    assert ana.inner_text("#progress") == "all 4 done" and ana.evaluate("document.querySelectorAll('#players *').length") == 0

    teacher = browser.new_context(viewport={"width": 1100, "height": 1000}).new_page()
    teacher.goto(urls["teacher"].split("?")[0])  # without the token: refused
    assert "teacher token" in teacher.inner_text("body")
    teacher.goto(urls["teacher"])
    teacher.wait_for_selector("td[data-person='p.002'][data-task=integrity][data-done='4']")
    card = teacher.locator("section.card[data-task=integrity]")
    # by hand: ana on o0..o2 = y n y and her gold clip n, bo on o1..o3 = n y y and his gold clip skipped
    # -> o0 yes, o1 no, o2 yes, o3 yes, ana's gold clip no
    assert card.locator("dd[data-fact=merged]").inner_text() == "yes 3, no 2, tie 0"
    # on o1, o2 both said n, y: p_o = 1, p_e = 1/2*1/2 + 1/2*1/2 = 1/2 -> kappa 1
    assert card.locator("td[data-kappa='Ana vs Bo']").inner_text() == "1.00"
    assert teacher.locator("section.card[data-task=temporal] dd[data-fact=merged]").inner_text() == "nothing yet"
    teacher.click("#merge")
    teacher.wait_for_selector("#written li[data-task=integrity]")
    # the room's models: not trained yet, said on both pages (the training itself: test_smoke_run)
    teacher.wait_for_function("document.getElementById('room-status').textContent.includes('not been trained')")
    assert teacher.inner_text("#error") == "" and teacher.is_enabled("#train")
    ana.click("#back")
    ana.wait_for_function("document.getElementById('room-status').textContent.includes('not been trained')")
    merged = labels.load_labels(ws / "merged" / "feedback_integrity.jsonl")
    bo_ids = assigned(run, "integrity", 1)
    assert dict(zip(merged.id, merged.feedback)) == {ids[0]: 1, ids[1]: 0, ids[2]: 1, bo_ids[2]: 1, ids[3]: 0}


def test_pairs_resume_after_a_reload_and_merge(browser, server):  # noqa: F811
    urls, run = server
    ana, bo = join(browser, urls, "Ana"), join(browser, urls, "Bo")  # their laptops remember them
    li = join(browser, urls, "李雷", by="code")  # a third joins by typing the code
    open_task(li, "pairs")
    for key in ("a", "b", "a"):
        act(li, f"key:{key}")
    assert "pairs whose better clip is known" in li.inner_text("#prompt")  # their own agreement with the truth
    for page in (ana, bo):
        open_task(page, "pairs")
    act(ana, "click:A")
    act(bo, "key:b")
    act(ana, "key:b")
    progress, item = current(bo)
    bo.reload()
    bo.wait_for_selector("#item:not([hidden])")
    assert current(bo) == (progress, item) == ("item 2 of 3", assigned(run, "pairs", 1)[1])
    bo.wait_for_function(MEDIA_READY, timeout=10000)
    bo.screenshot(path=str(ARTIFACTS / "workshop_participant.png"), full_page=True)
    act(bo, "click:A")
    act(ana, "click:skip")
    act(bo, "click:A")
    # each line maps the button back through the pair's own A/B draw
    pressed = {"p.001": ["A", "B", "skip"], "p.002": ["B", "A", "A"], "p.003": ["A", "B", "A"]}
    verdicts = {}
    for who, index in (("p.001", 0), ("p.002", 1), ("p.003", 2)):
        lines = labels.read_jsonl(run / "workshop" / "people" / who / "pairs.jsonl")
        assert [x["pair_id"] for x in lines] == assigned(run, "pairs", index)
        for x, button in zip(lines, pressed[who]):
            other = "rejected" if x["shown_as_a"] == "chosen" else "chosen"
            assert x["choice"] == {"A": x["shown_as_a"], "B": other, "skip": "skip"}[button]
            if x["choice"] != "skip":
                verdicts.setdefault(x["pair_id"], []).append(x["choice"])
    expected = {"chosen": 0, "rejected": 0, "tie": 0}
    for v in verdicts.values():
        c, r = v.count("chosen"), v.count("rejected")
        expected["chosen" if c > r else "rejected" if r > c else "tie"] += 1
    teacher = browser.new_context().new_page()
    teacher.goto(urls["teacher"])
    teacher.wait_for_selector("td[data-person='p.002'][data-task=pairs][data-done='3']")
    shown = teacher.locator("section.card[data-task=pairs] dd[data-fact=merged]").inner_text()
    assert shown == ", ".join(f"{k} {v}" for k, v in expected.items())
    # the gold pair (the last of each share): each person's agreement with the truth, beside the room's
    for who in pressed:
        gold = labels.read_jsonl(run / "workshop" / "people" / who / "pairs.jsonl")[-1]
        text = "–" if gold["choice"] == "skip" else f"{100 if gold['choice'] == 'chosen' else 0}% of 1"
        assert teacher.inner_text(f"td[data-truth='{who}'][data-truth-task=pairs]") == text
    card = teacher.locator("section.card[data-task=pairs]")
    assert card.locator("dd[data-fact='the ranker agrees with the truth']").inner_text() == "50% of 2"
    teacher.screenshot(path=str(ARTIFACTS / "workshop_teacher.png"), full_page=True)


def test_a_stale_tab_cannot_answer_the_wrong_item(browser, server):  # noqa: F811
    urls, run = server
    first, second = join(browser, urls, "Cy"), join(browser, urls, "Cy")  # one person, two tabs of one laptop
    for page in (first, second):
        open_task(page, "temporal")
    shown = current(second)
    act(first, "click:yes")
    second.click("#buttons button[data-answer='no']")  # still showing the clip the first tab answered
    second.wait_for_function("document.getElementById('error').textContent.includes('no longer')")
    second.wait_for_function("id => state.item && state.item.id !== id", arg=shown[1])
    lines = labels.read_jsonl(run / "workshop" / "people" / "p.004" / "feedback_temporal.events.jsonl")
    assert [(x["id"], x["action"]) for x in lines] == [(shown[1], "yes")]
