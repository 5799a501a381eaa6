"""The report in a real browser, offline: claims first, the papers' tables once each, images
that load, audio players with playable sources, stages folded, notebooks with math and plots."""

import json

import pytest
from browser import ARTIFACTS, MEDIA_READY, browser, record_requests  # noqa: F401 (fixture)
from run_fixture import CLAIMS, MODELS, make_run

from t2a_lib.evaluate.report import MAX_STAGE_ROWS, build_report
from t2a_lib.evaluate.report_sections import CAPTIONS


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser_report")
    run = make_run(root / "run")
    return run, build_report(run, root / "report", "fixture")


@pytest.fixture
def offline_page(browser):  # noqa: F811
    context = browser.new_context(offline=True, viewport={"width": 1200, "height": 900})
    requests = record_requests(context)
    yield context.new_page(), requests
    context.close()


def test_report_renders_claims_first_with_media_that_loads(report, offline_page):
    run, index = report
    page, requests = offline_page
    page.goto(index.as_uri())
    page.wait_for_function(MEDIA_READY, timeout=15000)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    # the claims come first, with every claim and its verdict coloured
    assert page.evaluate("document.querySelector('h2').id") == "claims"
    assert page.evaluate("document.querySelector('table').className") == "claims"
    verdicts = page.locator("table.claims td.verdict").all_inner_texts()
    assert verdicts == [c["verdict"] for c in CLAIMS]
    green = page.locator("table.claims td.v-reproduced").evaluate("e => getComputedStyle(e).color")
    red = page.locator("table.claims td.v-contradicted").evaluate("e => getComputedStyle(e).color")
    assert green == "rgb(23, 112, 42)" and red == "rgb(176, 0, 32)"
    assert "how" in page.locator("#claims + p").get_attribute("class")
    order = page.evaluate("[...document.querySelectorAll('h2')].map(h => h.id)")
    assert order == ["claims", "tables", "effects", "beyond", "listening", "stages", "provenance"]
    rows = page.evaluate("document.querySelectorAll('tr').length")
    assert 0 < rows <= 400
    # every image loaded (checked by MEDIA_READY), and there are images to load
    # 16 spectrograms (2 x 3 Tango 2 clips, 2 x 2 BATON clips, 3 pairs of 2), 3 effect plots
    # (claims, DPO effects, judge metrics), 2 beyond-the-papers plots (ranker-judge gap, DPO drift),
    # 5 stage figures (world, DPO effects, DPO drift, claims, ranker-judge gap)
    assert page.evaluate("document.images.length") == 16 + 3 + 2 + 5
    # a playable player for every compared model, its source a wav in the report folder
    players = page.evaluate("""[...document.querySelectorAll('#listening ~ .prompt figure.clip')].map(f =>
        [f.querySelector('figcaption').textContent, f.querySelector('audio').getAttribute('src'),
         f.querySelector('audio').canPlayType('audio/wav')])""")
    assert {name for name, _, _ in players} >= set(MODELS.values())
    assert all(src.startswith("listening/") and (index.parent / src).is_file() and can for _, src, can in players)
    assert requests == []  # nothing fetched from the network


def test_beyond_the_papers_shows_the_ranker_judge_gap_and_the_drift_plot(report, offline_page):
    run, index = report
    page, _ = offline_page
    page.goto(index.as_uri())
    page.wait_for_function(MEDIA_READY, timeout=15000)
    page.locator("nav a[href='#beyond']").click()
    assert page.locator("#beyond").is_visible()
    gap = page.locator("table.gap")
    assert gap.is_visible() and gap.locator("tr").count() == 1 + 2  # the head and one row per model and measure
    head = gap.locator("tr").first.locator("th").all_inner_texts()
    assert head[:3] == ["model", "trained against", "measure"] and "gap (rankers − judges)" in head
    first = dict(zip(head, gap.locator("tr").nth(1).locator("td").all_inner_texts()))
    assert first["gap (rankers − judges)"] == "+0.260 [+0.150, +0.370]"
    assert first["reading"] == "rankers see more: reward hacking" and first["measure"] == "clap on all (base-model sd)"
    captions = page.locator("#beyond ~ figure figcaption").all_inner_texts()
    assert CAPTIONS["07_ranker_judge_gap"] in captions and CAPTIONS["04_dpo_drift"] in captions
    plots = page.locator("#beyond ~ figure img[src*='ranker_judge_gap'], #beyond ~ figure img[src*='dpo_drift']")
    assert plots.count() >= 2 and all(w > 0 for w in plots.evaluate_all("imgs => imgs.map(i => i.naturalWidth)"))
    # the gap table has its own section, not a second appearance among the papers' tables
    assert not any("ranker_judge_gap" in t for t in page.locator("#tables ~ h3").all_inner_texts())


def test_report_tables_are_in_the_papers_layout_once_each(report, offline_page):
    run, index = report
    page, _ = offline_page
    page.goto(index.as_uri())
    titles = page.locator("#tables ~ h3").all_inner_texts()
    assert [t for t in titles if t.startswith("Tango 2, Table 3")] == ["Tango 2, Table 3: held-out prompts"]
    assert not any("table3" in t or ".md" in t or ".csv" in t for t in titles)
    t3 = page.locator("#table-table3 + p + table")
    head = t3.locator("tr").first.locator("th").all_inner_texts()
    assert head[0] == "model" and head[head.index("FAD") + 1] == "paper FAD"  # the paper's beside ours
    assert head[head.index("CLAP") + 1] == "paper CLAP"
    body = t3.locator("tr").nth(2).locator("td").all_inner_texts()
    assert body[0] == "Tango 2 (DPO)" and body[head.index("CLAP")] == "" and body[head.index("order")] == ""
    t4 = page.locator("#table-table4 + p + table tr").first.locator("th").all_inner_texts()
    assert t4[t4.index("KL") + 1] == "paper KL" and "paper FAD/KL/IS/CLAP" not in t4
    assert "nan" not in page.locator("body").inner_text().lower().split()


def test_stages_are_folded_with_their_figures_captioned_in_place(report, offline_page):
    run, index = report
    page, _ = offline_page
    page.goto(index.as_uri())
    stages = page.locator("#stages ~ details[id]")
    assert stages.count() == 3 and not stages.first.evaluate("d => d.open")
    world = page.locator("details#\\30 0_world")
    world.locator("summary").click()
    assert world.locator("figcaption").inner_text() == CAPTIONS["00_world_statistics"]
    assert world.locator("img").evaluate("i => i.naturalWidth") > 0
    assert json.loads((index.parent / "summary.json").read_text())["00_world"]["relations"]["rel29"] == 29
    assert world.locator("tr").count() == MAX_STAGE_ROWS  # key numbers only; the rest stays in summary.json
    assert world.locator("p.muted").last.inner_text().endswith("more rows of results in summary.json.")


def test_rendered_notebook_shows_math_plots_and_widgets_offline(report, offline_page):
    run, index = report
    page, requests = offline_page
    page.goto((index.parent / "notebooks" / "07_reproduce.html").as_uri())
    page.wait_for_function(MEDIA_READY, timeout=10000)
    page.screenshot(path=str(ARTIFACTS / "report_notebook.png"), full_page=True)
    math = page.evaluate("[...document.querySelectorAll('math')].map(m => m.getBoundingClientRect().height)")
    assert len(math) == 2 and all(h > 5 for h in math)  # inline and display formula, drawn
    text = page.locator("body").inner_text()
    assert "$s_w" not in text and "\\ge" not in text and "$not math$" in text  # code stays code
    assert page.evaluate("document.images.length") == 1  # the plot
    assert page.evaluate("document.querySelector('progress').value") == 16  # the progress bar, frozen
    assert "sampling: 100%" in text
    assert requests == []
