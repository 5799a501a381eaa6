"""The report of a run (the runner's run folder): a results page, and summary.json with every raw number.

``build_report(run_dir, report_dir, profile)`` reads what the run left in ``run_dir``:
``runner.json`` (the runner's records), ``<stem>.json`` (each stage's results),
``tables/*.csv|*.md``, ``figures/*.png``, ``listening/index.json`` with its wavs, and the
executed ``<stem>.ipynb``, and writes a self-contained folder (relative paths, opens from
file://, fetches nothing):

- ``index.html``, in this order: the claims (verdicts coloured, how to read them); the papers'
  tables once each, in the papers' layout with their numbers beside ours; the effect plots with
  their intervals; a listening section (players and spectrograms of the same prompts across
  models, and a winner/loser pair of each preference strategy); each stage folded
  (``<details>``: status, notes, its figures captioned in place, its key numbers, a link to the
  rendered notebook); provenance;
- ``notebooks/<stem>.html``: each executed notebook without its code, math and plots included,
  offline (:mod:`t2a_lib.evaluate.notebook_html`);
- ``figures/``, ``listening/``: what the page shows;
- ``summary.json``: every stage JSON under its stem, plus profile, seed, parameters, status and
  wall time per stage, and provenance (versions, git commit).
"""
from __future__ import annotations

import html
import json
import math
import platform
import re
import shutil
import subprocess
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path

from ..run.runner import STATE_FILE

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("t2a_lib", "torch", "numpy", "scipy", "pandas", "diffusers", "transformers",
            "accelerate", "papermill", "nbconvert")
CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.92em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}th.paper,td.paper{background:#f6f4ec;color:#555}
.ok{color:#17702a}.failed,.interrupted{color:#b00020;font-weight:bold}.muted{color:#777}.how{max-width:60em}
nav a{margin-right:1em}img{max-width:100%;border:1px solid #ddd}code{background:#f6f6f6}figure{margin:.8em 0}
figcaption{color:#444;font-size:.92em}tr.v-reproduced td{background:#e6f4e6}tr.v-contradicted td{background:#fbe3e3}
.verdict{font-weight:bold}.v-reproduced.verdict{color:#17702a}.v-contradicted.verdict{color:#b00020}
.v-not-shown.verdict{color:#666}.v-not-measured.verdict{color:#999;font-weight:normal}
.prompt{border-top:1px solid #eee;padding:.3em 0}.clips{display:flex;flex-wrap:wrap;gap:1em}
figure.clip{margin:0;width:290px}figure.clip img{display:block;width:272px}figure.clip audio{width:272px}
details{border:1px solid #ddd;border-radius:5px;padding:.3em .8em;margin:.5em 0}summary{cursor:pointer;font-weight:bold}"""
MAX_STAGE_ROWS = 28  # table rows (headers included) shown per stage; the rest stay in summary.json


def fmt(value) -> str:
    """A value as a reader reads it: floats to three decimals (large ones as whole numbers, tiny ones to
    three significant figures), booleans
    yes/no, nothing for None and empty containers, a list of numbers by its count and ends (a list of
    words joined), anything else as short text."""
    if value is None or (isinstance(value, (dict, list, tuple)) and not value):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        if 0 < abs(value) < 1e-3:  # a learning rate, a small p: three significant figures
            return f"{value:.3g}"
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.3f}"
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return ", ".join(value) if len(value) <= 12 else ", ".join(value[:12]) + f", … ({len(value)} in all)"
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return fmt(value[0]) if len(value) == 1 else f"{len(value)} values, from {fmt(value[0])} to {fmt(value[-1])}"
    text = json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def flatten(data: dict, prefix: str = ""):
    """Nested dicts to dotted keys; lists of dicts are kept apart as tables: (flat, tables)."""
    flat, tables = {}, {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            sub_flat, sub_tables = flatten(value, name + ".")
            flat.update(sub_flat)
            tables.update(sub_tables)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables[name] = value
        else:
            flat[name] = value
    return flat, tables


def _cell(value, tag="td") -> str:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"<{tag}{' class=num' if number else ''}>{html.escape(fmt(value))}</{tag}>"


def table(rows: list[dict], columns=None) -> str:
    """An HTML table of records (columns: the union of their keys, in order of appearance)."""
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(row.get(c, "")) for c in columns) + "</tr>\n" for row in rows)
    return f"<table><tr>{head}</tr>\n{body}</table>\n"


def markdown_tables(text: str) -> str:
    """Pipe tables of a markdown file as HTML tables; other non-empty lines as paragraphs."""
    out, block = [], []
    for line in text.splitlines() + [""]:
        if line.strip().startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if block:
            rows = [r for r in block if not all(re.fullmatch(r":?-+:?", c) for c in r if c)]
            if rows:
                out.append(table([dict(zip(rows[0], r)) for r in rows[1:]], rows[0]))
            block = []
        if line.strip():
            out.append(f"<p>{html.escape(line.strip().lstrip('#').strip())}</p>")
    return "\n".join(out)


def provenance() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions,
            "git_commit": None, "git_dirty": None,
            "generated": datetime.now().astimezone().isoformat(timespec="seconds")}
    try:
        git = ["git", "-C", str(ROOT)]
        info["git_commit"] = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True,
                                            timeout=10, check=True).stdout.strip()
        info["git_dirty"] = bool(subprocess.run(git + ["status", "--porcelain"], capture_output=True,
                                                text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _stage_records(run_dir: Path, state: dict) -> list[dict]:
    if state.get("stages"):
        return state["stages"]
    stems = sorted({p.stem for p in run_dir.glob("[0-9][0-9]_*") if p.suffix in (".json", ".ipynb")})
    return [{"stage": s, "status": "unknown", "seconds": None} for s in stems]


def _render_notebooks(run_dir: Path, report_dir: Path, stems) -> dict:
    """Executed notebooks to report_dir/notebooks/<stem>.html (offline, without code):
    {stem: href or error}."""
    from .notebook_html import exporter, render_notebook

    links, html_exporter = {}, None
    for stem in stems:
        src = run_dir / f"{stem}.ipynb"
        if not src.is_file():
            continue
        try:
            html_exporter = html_exporter or exporter()
            render_notebook(src, report_dir / "notebooks" / f"{stem}.html", html_exporter)
            links[stem] = f"notebooks/{stem}.html"
        except Exception as e:  # one unreadable notebook must not sink the report
            links[stem] = f"error: {type(e).__name__}: {e}"
    return links


def key_numbers(data) -> list[str]:
    """A stage's results as small tables (timings left out): its scalars, each dict of dicts as a
    matrix, each list of records as a table; at most MAX_STAGE_ROWS table rows in all."""
    data = data if isinstance(data, dict) else {"value": data}
    scalars, blocks = {}, []
    for key, value in data.items():
        if key in ("claims", "profile") or VOLATILE.search(key):
            continue
        if isinstance(value, dict) and value and all(isinstance(v, dict) and v and not any(
                isinstance(x, (dict, list)) and not _short_list(x) for x in v.values()) for v in value.values()):
            blocks.append((key, [{"": k, **{c: x for c, x in v.items() if not VOLATILE.search(c)}}
                                 for k, v in value.items()]))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            blocks.append((key, value))
        else:
            flat, tabs = flatten({key: value})
            scalars.update({k: v for k, v in flat.items() if not VOLATILE.search(k) and fmt(v) != ""})
            blocks += list(tabs.items())
    if scalars:
        blocks.insert(0, ("", [{"figure": k, "value": v} for k, v in scalars.items()]))
    out, budget, shown = [], MAX_STAGE_ROWS, 0
    for key, rows in blocks:  # each table costs its rows and its header row
        if budget < 2:
            break
        part = rows[:budget - 1]
        out += ([f"<h4>{html.escape(key)}</h4>"] if key else []) + [table(part)]
        budget, shown = budget - len(part) - 1, shown + len(part)
    hidden = sum(len(r) for _, r in blocks) - shown
    if hidden:
        out.append(f"<p class=muted>{hidden} more rows of results in summary.json.</p>")
    return out


def _short_list(x) -> bool:
    return isinstance(x, list) and len(x) <= 12 and all(not isinstance(v, (dict, list)) for v in x)


def final_measures(stage_results: dict) -> list[str] | None:
    """What the judges of a run on real data could measure (07's ``measures``), or None (the world's run)."""
    return next((d["measures"] for d in stage_results.values() if isinstance(d, dict) and d.get("measures")
                 and d.get("claims")), None)


def _stage_section(rec: dict, data, link: str, pngs: dict[str, str]) -> str:
    """One stage, folded: status, time, notes, its figures captioned in place, key numbers."""
    from .report_sections import caption, figure

    stem, status = rec["stage"], str(rec.get("status"))
    seconds = rec.get("seconds")
    mine = {s: rel for s, rel in pngs.items() if s.startswith(stem.split("_")[0] + "_")}
    head = (f'<summary>{html.escape(stem)}: <span class="{html.escape(status)}">{html.escape(status)}</span>'
            f'{f", {seconds / 60:.1f} min" if isinstance(seconds, (int, float)) else ""}'
            f'{f", {len(mine)} figure(s)" if mine else ""}</summary>')
    parts = [head]
    if link.startswith("notebooks/"):
        parts.append(f'<p><a href="{html.escape(link)}">the executed notebook</a> (without its code)</p>')
    elif link:
        parts.append(f"<p class=failed>{html.escape(link)}</p>")
    notes = rec.get("warnings", []) + ([rec["reason"]] if rec.get("reason") else [])
    parts += [f"<p class=muted>{html.escape(n)}</p>" for n in notes]
    if rec.get("error"):
        parts.append(f"<pre class=failed>{html.escape(rec['error'])}</pre>")
    parts += [figure(rel, caption(s)) for s, rel in mine.items()]
    parts += key_numbers(data) if data is not None else [f"<p class=muted>no results ({stem}.json missing)</p>"]
    return f'<details id="{html.escape(stem)}">' + "\n".join(parts) + "</details>"


def _copy_figures(run_dir: Path, report_dir: Path) -> dict[str, str]:
    """figures/**/*.png into the report: {stem: relative path}."""
    out = {}
    for png in sorted((run_dir / "figures").rglob("*.png")):
        rel = png.relative_to(run_dir)
        (report_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, report_dir / rel)
        out[png.stem] = rel.as_posix()
    return out


def _read_results(run_dir: Path, records: list[dict]) -> tuple[dict, list[str]]:
    """``{stem: the stage's <stem>.json}`` of the stages that ran, and the files that would not parse."""
    results, problems = {}, []
    for rec in records:
        path = run_dir / f"{rec['stage']}.json"
        if rec.get("status") == "not run" or not path.is_file():
            continue
        try:
            results[rec["stage"]] = json.loads(path.read_text())
        except ValueError as e:
            problems.append(f"{path}: not valid JSON ({e})")
    return results, problems


def _header(name, state: dict, prov: dict, records: list[dict], problems: list[str]) -> list[str]:
    ok = sum(r.get("status") == "ok" for r in records)
    minutes = sum(r.get("seconds") or 0 for r in records) / 60
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in (("claims", "Claims"), ("tables", "Tables"),
                  ("effects", "Effects"), ("beyond", "Beyond"), ("listening", "Listen"), ("stages", "Stages"), ("provenance", "Provenance")))
    failed = [r for r in records if r.get("status") not in ("ok", "not run", None)]
    return ([f"<h1>Report: profile <code>{html.escape(str(name))}</code></h1>",
             f"<p>{html.escape(state.get('description', ''))}</p>",
             f"<p class=muted>{ok} of {len(records)} stages ok, {minutes:.1f} min; seed "
             f"{html.escape(str(state.get('seed')))}; git {html.escape(str(prov['git_commit']))}"
             f"{' (dirty)' if prov['git_dirty'] else ''}; generated {prov['generated']}; raw numbers in "
             f'<a href="summary.json">summary.json</a></p>', f"<nav>{nav}</nav>"]
            + [f'<p class=failed>{html.escape(r["stage"])}: {html.escape(str(r.get("status")))} '
               f'(<a href="#{html.escape(r["stage"])}">details</a>)</p>' for r in failed]
            + [f"<p class=failed>{html.escape(p)}</p>" for p in problems])


def build_report(run_dir, report_dir, profile) -> Path:
    """Write report_dir/index.html and report_dir/summary.json; return the index.html path."""
    from . import report_sections as sections

    run_dir, report_dir = Path(run_dir), Path(report_dir)
    name = getattr(profile, "name", profile)
    report_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    records = _stage_records(run_dir, state)
    stage_results, problems = _read_results(run_dir, records)
    links = _render_notebooks(run_dir, report_dir, [r["stage"] for r in records])
    pngs, prov = _copy_figures(run_dir, report_dir), provenance()
    claims = [c for data in stage_results.values() if isinstance(data, dict)
              for c in (data.get("claims") or []) if isinstance(c, dict)]
    final = next((d for s, d in reversed(stage_results.items()) if isinstance(d, dict) and d.get("results")), {})
    listening = run_dir / "listening" / "index.json"
    names = json.loads(listening.read_text()).get("models", {}) if listening.is_file() else {}
    parts = _header(name, state, prov, records, problems) + [
        '<h2 id="claims">Claims</h2>', sections.claims_section(claims, final_measures(stage_results)),
        "<h2 id=\"tables\">The papers' tables</h2>", sections.tables_section(run_dir / "tables", markdown_tables),
        '<h2 id="effects">Effects</h2>', sections.effects_section(report_dir, pngs, final.get("results", {}), names),
        '<h2 id="beyond">Beyond the papers</h2>', sections.beyond_section(run_dir / "tables", pngs),
        '<h2 id="listening">Listen</h2>', sections.listening_section(run_dir, report_dir),
        '<h2 id="stages">Stages</h2>', '<p class="muted">Each stage folded: click to open.</p>']
    parts += [_stage_section(r, stage_results.get(r["stage"]), links.get(r["stage"], ""), pngs) for r in records]
    staged = {s for r in records for s in pngs if s.startswith(r["stage"].split("_")[0] + "_")}
    others = [sections.figure(rel, sections.caption(s)) for s, rel in pngs.items() if s not in staged]
    if others:
        parts.append("<details><summary>Other figures</summary>" + "".join(others) + "</details>")
    parts += ['<h2 id="provenance">Provenance</h2>', table([{"item": k, "value": v} for k, v in flatten(prov)[0].items()])]
    index = report_dir / "index.html"
    index.write_text(f"<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>Report: {html.escape(str(name))}"
                     f"</title><style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n",
                     encoding="utf-8")
    _write_summary(report_dir, name, state, records, prov, stage_results)
    return index


def _write_summary(report_dir: Path, name, state: dict, records: list[dict], prov: dict, stage_results: dict) -> None:
    summary = {"profile": name, "description": state.get("description"), "seed": state.get("seed"),
               "parameters": state.get("parameters"),
               "stage_parameters": {r["stage"]: r.get("parameters") for r in records},
               "status": {r["stage"]: r.get("status") for r in records},
               "wall_time_s": {r["stage"]: r.get("seconds") for r in records},
               "provenance": prov, **stage_results}
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


# keys whose values measure the machine or the moment, not the result: dropped when two runs are compared
VOLATILE = re.compile(r"(^|\.)(wall_time_s|provenance|stage_parameters)(\.|$)|seconds|_s$|per_s|"
                      r"clips_per|elapsed|started|updated|generated|run_dir|profile_file")


def comparable_results(summary: dict) -> dict:
    """The summary's results with timings, provenance and paths removed: what a rerun must reproduce.

    Tables (lists of dicts) are kept whole, minus their volatile columns."""
    flat, tables = flatten(summary)
    out = {k: v for k, v in flat.items() if not VOLATILE.search(k)}
    for key, rows in tables.items():
        if not VOLATILE.search(key):
            out[key] = [{c: v for c, v in row.items() if not VOLATILE.search(str(c))} for row in rows]
    return out
