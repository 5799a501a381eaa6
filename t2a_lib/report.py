"""The HTML report and summary.json of a pipeline run.

``build_report(run_dir, report_dir, profile)`` reads what the run left in ``run_dir``:
``pipeline.json`` (the runner's records), ``<stem>.json`` (each stage's figures),
``tables/*.csv|*.md``, ``figures/**/*.png`` and the executed ``<stem>.ipynb``, and writes

- ``report_dir/index.html``: title and profile, the claims (if any stage lists ``"claims"``),
  the stage summary, each stage's figures, the tables, the figures, provenance;
- ``report_dir/notebooks/<stem>.html``: each executed notebook rendered without its code;
- ``report_dir/figures/``: the PNGs, referenced relatively;
- ``report_dir/summary.json``: every stage JSON under its stem, plus profile, seed,
  parameters, status and wall time per stage, and provenance (versions, git commit).
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

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("t2a_lib", "torch", "numpy", "scipy", "pandas", "diffusers", "transformers",
            "accelerate", "papermill", "nbconvert")
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#17702a}.failed,.interrupted{color:#b00020;font-weight:bold}.muted{color:#777}
img{max-width:100%;border:1px solid #ddd}code{background:#f6f6f6}"""


def fmt(value) -> str:
    """Numbers to 4 significant figures (ints as they are), anything else as short text."""
    if value is None or isinstance(value, (bool, int, str)):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if 1e4 <= abs(value) < 1e15:
            return f"{float(f'{value:.4g}'):.0f}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) <= 12 and all(
            v is None or isinstance(v, (bool, int, float, str)) for v in value):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
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
    """Executed notebooks to report_dir/notebooks/<stem>.html, without code: {stem: href or error}."""
    from nbconvert import HTMLExporter

    exporter, links = HTMLExporter(exclude_input=True), {}
    (report_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    for stem in stems:
        src = run_dir / f"{stem}.ipynb"
        if not src.is_file():
            continue
        try:
            body, _ = exporter.from_filename(str(src))
            (report_dir / "notebooks" / f"{stem}.html").write_text(body, encoding="utf-8")
            links[stem] = f"notebooks/{stem}.html"
        except Exception as e:  # one unreadable notebook must not sink the report
            links[stem] = f"error: {type(e).__name__}: {e}"
    return links


def build_report(run_dir, report_dir, profile) -> Path:
    """Write report_dir/index.html and report_dir/summary.json; return the index.html path."""
    run_dir, report_dir = Path(run_dir), Path(report_dir)
    name = getattr(profile, "name", profile)
    report_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "pipeline.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    records = _stage_records(run_dir, state)
    stems = [r["stage"] for r in records]

    figures, problems = {}, []
    for rec in records:
        path = run_dir / f"{rec['stage']}.json"
        if rec.get("status") == "not run" or not path.is_file():
            continue
        try:
            figures[rec["stage"]] = json.loads(path.read_text())
        except ValueError as e:
            problems.append(f"{path}: not valid JSON ({e})")
    links = _render_notebooks(run_dir, report_dir, stems)
    prov = provenance()

    claims = [{"stage": stem, **c} for stem, data in figures.items() if isinstance(data, dict)
              for c in (data.get("claims") or []) if isinstance(c, dict)]
    summary_rows = []
    for rec in records:
        link = links.get(rec["stage"], "")
        cell = (f'<a href="{html.escape(link)}">notebook</a>' if link.startswith("notebooks/")
                else html.escape(link))
        notes = "; ".join(rec.get("warnings", []) + ([rec["reason"]] if rec.get("reason") else []))
        summary_rows.append(
            f'<tr><td><a href="#{rec["stage"]}">{rec["stage"]}</a></td>'
            f'<td class="{html.escape(str(rec.get("status")))}">{html.escape(str(rec.get("status")))}</td>'
            f'{_cell(rec.get("seconds"))}<td>{html.escape(str(rec.get("started") or ""))}</td>'
            f'<td>{cell}</td><td>{html.escape(notes)}</td></tr>')
    parts = [f"<h1>Report: profile <code>{html.escape(str(name))}</code></h1>",
             f"<p>{html.escape(state.get('description', ''))}</p>",
             f"<p class=muted>run folder <code>{html.escape(str(run_dir))}</code>, seed "
             f"{html.escape(str(state.get('seed')))}, git {html.escape(str(prov['git_commit']))}"
             f"{' (dirty)' if prov['git_dirty'] else ''}, generated {prov['generated']}</p>"]
    parts += [f"<p class=failed>{html.escape(p)}</p>" for p in problems]
    if claims:
        parts += ["<h2>Claims</h2>", table(claims)]
    parts += ["<h2>Stages</h2><table><tr><th>stage</th><th>status</th><th>wall time (s)</th>"
              "<th>started</th><th>notebook</th><th>notes</th></tr>", "\n".join(summary_rows), "</table>"]
    for rec in records:
        stem = rec["stage"]
        parts.append(f'<h2 id="{stem}">{stem}</h2>')
        if rec.get("error"):
            parts.append(f"<pre class=failed>{html.escape(rec['error'])}</pre>")
        data = figures.get(stem)
        if data is None:
            parts.append(f"<p class=muted>no figures ({stem}.json missing)</p>")
            continue
        flat, sub_tables = flatten({k: v for k, v in data.items() if k != "claims"}
                                   if isinstance(data, dict) else {"value": data})
        if flat:
            parts.append(table([{"key": k, "value": v} for k, v in flat.items()]))
        for key, rows in sub_tables.items():
            parts += [f"<h3>{html.escape(key)}</h3>", table(rows)]

    tables_dir = run_dir / "tables"
    table_files = sorted(tables_dir.glob("*.csv")) + sorted(tables_dir.glob("*.md"))
    if table_files:
        import pandas as pd
        parts.append("<h2>Tables</h2>")
        for path in table_files:
            parts.append(f"<h3>{html.escape(path.name)}</h3>")
            try:
                parts.append(table(pd.read_csv(path).to_dict("records")) if path.suffix == ".csv"
                             else markdown_tables(path.read_text()))
            except Exception as e:  # show the problem, keep the rest of the report
                parts.append(f"<p class=failed>{html.escape(f'{type(e).__name__}: {e}')}</p>")
    pngs = sorted((run_dir / "figures").rglob("*.png"))
    if pngs:
        parts.append("<h2>Figures</h2>")
        for png in pngs:
            rel = png.relative_to(run_dir)
            (report_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(png, report_dir / rel)
            parts.append(f'<figure><img src="{html.escape(rel.as_posix())}" alt="{html.escape(png.stem)}">'
                         f"<figcaption>{html.escape(str(rel))}</figcaption></figure>")
    parts += ["<h2>Provenance</h2>", table([{"item": k, "value": v} for k, v in flatten(prov)[0].items()])]

    index = report_dir / "index.html"
    index.write_text(f"<!doctype html>\n<html><head><meta charset=utf-8><title>Report: {html.escape(str(name))}"
                     f"</title><style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n",
                     encoding="utf-8")
    summary = {"profile": name, "description": state.get("description"), "seed": state.get("seed"),
               "parameters": state.get("parameters"),
               "stage_parameters": {r["stage"]: r.get("parameters") for r in records},
               "status": {r["stage"]: r.get("status") for r in records},
               "wall_time_s": {r["stage"]: r.get("seconds") for r in records},
               "provenance": prov, **figures}
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return index


# keys whose values measure the machine or the moment, not the result: dropped when two runs are compared
VOLATILE = re.compile(r"(^|\.)(wall_time_s|provenance|stage_parameters)(\.|$)|seconds|_s$|per_s|"
                      r"clips_per|elapsed|started|updated|generated|run_dir|profile_file")


def result_figures(summary: dict) -> dict:
    """The summary's figures with timings, provenance and paths removed: what a rerun must reproduce.

    Tables (lists of dicts) are kept whole, minus their volatile columns."""
    flat, tables = flatten(summary)
    out = {k: v for k, v in flat.items() if not VOLATILE.search(k)}
    for key, rows in tables.items():
        if not VOLATILE.search(key):
            out[key] = [{c: v for c, v in row.items() if not VOLATILE.search(str(c))} for row in rows]
    return out
