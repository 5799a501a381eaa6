"""The sections of the report's results page: claims, the papers' tables, effects, listening.

Each function takes what the run left and returns an HTML fragment; files a section needs
(audio, spectrograms, plots) are written under the report folder and referenced relatively.
"""

from __future__ import annotations

import ast
import html
import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd

CLAIM_COLUMNS = ["claim", "family", "paper", "measure", "n", "seeds", "ours", "prompt-only interval", "per seed",
                 "p", "adjusted p", "MDE", "continuous", "powered", "verdict", "why"]
HOW_TO_READ = """Each row is a claim of a paper (or a control of ours, or a question beyond the papers),
answered on this run's held-out prompts as a paired difference: the model minus its baseline, on the same
prompts and noise, scored by the judges only. <b>ours</b> is that difference with its 95% interval, and the
interval counts both things a re-run would change: which prompts were drawn, and the training seeds (two seeds
that disagree widen it). <b>prompt-only interval</b> is the narrower interval that treats the trained models as
fixed; it is shown for comparison, never used for a verdict. <b>per seed</b> is each seed's own difference.
<b>p</b> is the chance of a difference at least this large if the true one were zero; because a table of many
rows finds some by luck, the verdicts use <b>adjusted p</b> (Holm's method within each family: the papers'
claims, our controls, beyond the papers), which keeps the chance of any false <i>reproduced</i> in a family
at 5%. The verdict is
<span class="verdict v-reproduced">reproduced</span> when the adjusted p is below 0.05 and the difference lies on
the claimed side, <span class="verdict v-contradicted">contradicted</span> when it lies on the other side,
<span class="verdict v-not-shown">not shown</span> otherwise (the data cannot tell the effect from zero after
the adjustment: an absence of evidence, not evidence of absence; read its MDE), and
<span class="verdict v-not-measured">not measured</span> when the run had no data for it. A claim that two
things are <i>matched</i> (the ranker–judge gap) is tested for equivalence: reproduced only when the gap is
shown to lie within the stated margin. <b>MDE</b> is the smallest effect the row could detect at 80% power;
<b>continuous</b> a continuous judge score beside the binary rate. <b>powered</b> (blank where a row has no
target): the interval is as narrow as its target (±0.05 on a rate against the base, ±0.07 between two
methods). Every verdict is conditional on this run's base model."""
TABLES = {  # tables/<stem>.csv: title, note
    "table3": ("Tango 2, Table 3: held-out prompts", "First seed of each model."),
    "table4": ("Tango 2, Table 4: multi-event and single-event prompts", "First seed of each model."),
    "table5": ("Tango 2, Table 5: temporal and non-temporal prompts", "First seed of each model."),
    "baton": ("BATON: Integrity and Temporal prompts", "Every seed of each model."),
    "clap": ("Real data: every model's CLAP score", "The run's real CLAP judge on each evaluation set; every "
             "seed of each model. Tables 3-5 and BATON's need the world's judges (event timelines)."),
}
TABLES_NOTE = """Every figure of ours is an estimate with its 95% interval, within the metric's range. FAD is shown
only on sets of at least twice as many clips as its embedding has dimensions (below that its bias swamps it: "—");
KAD, an unbiased kernel distance, stands beside it on every set. The papers' columns
(shaded) are AudioCaps figures from real 866M-parameter models, beside ours for orientation only: they
are not comparable in scale. A blank cell was not measured."""
CAPTIONS = {
    "00_world_statistics": "The world: relation kinds and event classes per split.",
    "00_world_spectrograms": "World clips: spectrograms with their captions.",
    "01_confusion": "Event detectors: training loss and confusion between classes on held-out clips.",
    "01_metric_demo": "The judge metrics on ground-truth against deliberately corrupted clips.",
    "02_base_samples": "Base model samples on held-out prompts, with what the judge hears.",
    "02_base_by_kind": "The base model judged on held-out prompts per caption kind (95% bootstrap intervals).",
    "02_word_attention": "Cross-attention over time for each word of a caption.",
    "03_preference_set": "The preference set: the ranker's margins, and how often its winner is really better.",
    "04_dpo_training": "Diffusion-DPO training: loss, implicit accuracy and errors relative to the reference.",
    "04_effects": "Fine-tunes against the base: paired effects on held-out prompts (judges; 95% intervals over prompts and seeds).",
    "05_reward_model": "The reward model: training loss, ROC and calibration on held-out prompts.",
    "06_baton_effects": "BATON: paired effects on held-out prompts (judges; 95% intervals over prompts and seeds).",
    "07_claims": "Every claim: paired difference with its 95% interval over prompts and seeds (green reproduced, "
                 "red contradicted, after Holm's adjustment).",
    "07_one_prompt_grid": "One held-out prompt across every model: spectrograms and what the judge hears.",
    "04_dpo_drift": "Plain and safeguarded (SDPO) DPO at the learning rate that broke plain DPO: the winners' and "
                    "losers' errors relative to the reference's, and the loser-gradient scale.",
    "06_kto_training": "Diffusion-KTO training: loss, share of clips on their label's side, and the error shift "
                       "on liked and disliked clips.",
    "07_ranker_judge_gap": "Each model's gain over the base as its rankers see it (x) and as the judges see it (y), "
                           "with 95% intervals; below the diagonal the rankers see more.",
}
GAP_TABLE = "ranker_judge_gap"  # tables/<GAP_TABLE>.csv: notebook 07's ranker-judge gap
BEYOND_FIGURES = ("07_ranker_judge_gap", "04_dpo_drift")
BEYOND_NOTE = """Beyond the papers. <b>The ranker–judge gap</b>: every method is trained against rankers and
graded by independent judges; the same samples scored by both show each model's gain over the base twice.
A gain the rankers see and the judges do not is reward hacking. CLAP gains are in standard deviations of the
base model's per-clip CLAP under each family; detector rates are rates. <b>The winners' drift</b>: plain
Diffusion-DPO can raise the winners' error while its loss falls; the SDPO safeguard scales the loser's
gradient so that, to first order, it cannot."""
EFFECT_FIGURES = ("07_claims", "04_effects", "06_baton_effects")
BLANK = re.compile(r"^\s*(nan|none|null|nat)?(\s*\[\s*nan\s*,\s*nan\s*\])?\s*$", re.I)


def esc(value) -> str:
    return html.escape(str(value))


def blank(value) -> bool:
    """NaN, None, '' and 'nan [nan, nan]' all read as not measured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, str) and bool(BLANK.match(value))


def readable(value) -> str:
    """A cell as text: blanks (and empty containers) empty, booleans yes/no, "('a', 'b')" as "a · b",
    floats to three decimals (a p-value under 0.001 as "< 0.001")."""
    if blank(value) or (isinstance(value, (dict, list, tuple)) and not value):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value.startswith("(") and value.endswith(")"):
        try:
            parts = ast.literal_eval(value)
            if isinstance(parts, tuple):
                return " · ".join(str(p) for p in parts)
        except (ValueError, SyntaxError):
            pass
    if isinstance(value, float):
        return "< 0.001" if 0 < value < 0.0005 else f"{value:.3f}"
    return str(value)


def caption(stem: str) -> str:
    return CAPTIONS.get(stem, stem.split("_", 1)[-1].replace("_", " ").capitalize() + ".")


def figure(rel: str, text: str) -> str:
    return (f'<figure><img src="{esc(rel)}" alt="{esc(text)}">'
            f"<figcaption>{esc(text)}</figcaption></figure>")


# ---------------------------------------------------------------------------- claims

def claims_section(claims: list[dict], measures: list[str] | None = None) -> str:
    """The claims table; with ``measures`` (a run on real data: what its judges could measure) a line
    saying which measures were available."""
    if not claims:
        return '<p class="muted">No stage of this run answered claims (notebook 07 writes them).</p>'
    columns = [c for c in CLAIM_COLUMNS if any(c in r for r in claims)]
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    rows = []
    for r in claims:
        verdict = str(r.get("verdict") or "")
        cls = "v-" + re.sub(r"\W+", "-", verdict.lower()) if verdict else ""
        cells = "".join(f'<td class="{"verdict " + cls if c == "verdict" else ""}">'
                        f'{"<br>".join(esc(x) for x in readable(r.get(c)).split("; "))}</td>' for c in columns)
        rows.append(f'<tr class="{cls}">{cells}</tr>')
    available = (f'<p class="how">Measures available on this run: {esc(", ".join(measures))}. The rows that need '
                 "the world's presence and order judges (event timelines) are not measured; their "
                 "<i>why</i> says so.</p>") if measures else ""
    return (f'<p class="how">{HOW_TO_READ}</p>{available}<table class="claims"><tr>{head}</tr>\n'
            + "\n".join(rows) + "</table>")


# ---------------------------------------------------------------------------- the papers' tables

def paper_layout(df: pd.DataFrame) -> pd.DataFrame:
    """Readable row labels, and each 'paper X' column right after our X ('paper A/B/C' split)."""
    df = df.rename(columns={c: ("model" if "model" not in df else "row") for c in df.columns
                            if str(c).startswith("Unnamed") or str(c) == ""})
    for col in [c for c in df.columns if str(c).startswith("paper ") and "/" in str(c)]:
        names = str(col)[6:].split("/")
        split = df[col].map(lambda v: str(v).split("/") if not blank(v) else [""] * len(names))
        for i, name in enumerate(names):
            df[f"paper {name}"] = [s[i] if len(s) == len(names) else "" for s in split]
        df = df.drop(columns=col)
    order = [c for c in df.columns if not str(c).startswith("paper ")]
    for col in [c for c in df.columns if str(c).startswith("paper ")]:
        ours = str(col)[6:]
        order.insert(order.index(ours) + 1 if ours in order else len(order), col)
    return df[order]


def frame_html(df: pd.DataFrame) -> str:
    head = "".join(f'<th{" class=paper" if str(c).startswith("paper") else ""}>{esc(c)}</th>' for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = "".join(f'<td{" class=paper" if str(c).startswith("paper") else ""}>{esc(readable(v))}</td>'
                        for c, v in zip(df.columns, row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>\n" + "\n".join(body) + "</table>"


def tables_section(tables_dir: Path, markdown_html) -> str:
    """Each table of the run once: its CSV in the papers' layout (a Markdown twin is skipped)."""
    own = ("claims", GAP_TABLE)  # each has its own section
    csvs = {p.stem: p for p in sorted(tables_dir.glob("*.csv")) if p.stem not in own}
    mds = [p for p in sorted(tables_dir.glob("*.md")) if p.stem not in csvs and p.stem not in own]
    order = [s for s in TABLES if s in csvs] + [s for s in csvs if s not in TABLES]
    parts = [f'<p class="muted">{TABLES_NOTE}</p>'] if csvs else []
    for stem in order:
        title, note = TABLES.get(stem, (stem, ""))
        parts.append(f'<h3 id="table-{esc(stem)}">{esc(title)}</h3>' + (f"<p class=muted>{esc(note)}</p>" if note else ""))
        try:
            parts.append(frame_html(paper_layout(pd.read_csv(csvs[stem]))))
        except Exception as e:  # noqa: BLE001 - show the problem, keep the rest of the report
            parts.append(f"<p class=failed>{esc(csvs[stem])}: {esc(type(e).__name__)}: {esc(e)}</p>")
    for path in mds:
        parts += [f"<h3>{esc(path.stem)}</h3>", markdown_html(path.read_text())]
    return "\n".join(parts) or '<p class="muted">No tables in this run.</p>'


# ---------------------------------------------------------------------------- effects

def metrics_figure(results: dict, names: dict, dest: Path) -> bool:
    """Judge metrics per model with their 95% intervals (from notebook 07's results); False if none."""
    metrics = [m for m in ("presence", "all present", "order", "event F1", "CLAP")
               if any(len(r.get(m) or []) == 3 and not blank(r[m][0]) for r in results.values())]
    if not metrics:
        return False
    from matplotlib.figure import Figure

    models = list(results)
    fig = Figure(figsize=(2.6 * len(metrics), 0.5 + 0.32 * len(models)), dpi=90)
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for y, m in enumerate(models):
            est, lo, hi = (results[m].get(metric) or [math.nan] * 3)[:3]
            if not blank(est):
                ax.errorbar(est, y, xerr=[[est - lo], [hi - est]], fmt="o", capsize=3,
                            color="tab:gray" if m == "base" else "tab:blue")
        ax.set_title(metric, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(range(len(models)), [names.get(m, m) for m in models])
    axes[0].invert_yaxis()
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest)
    return True


def effects_section(report_dir: Path, pngs: dict[str, str], results: dict, names: dict) -> str:
    """The effect plots of the run (claims, DPO, BATON) and the judge metrics of every model."""
    parts = [figure(pngs[s], caption(s)) for s in EFFECT_FIGURES if s in pngs]
    if results and metrics_figure(results, names, report_dir / "figures" / "judge_metrics.png"):
        parts.append(figure("figures/judge_metrics.png", "Judge metrics of every model on Tango 2's held-out "
                            "prompts (first seed), with 95% bootstrap intervals; grey: the base model."))
    return "\n".join(parts) or '<p class="muted">No effect plots in this run.</p>'


# ---------------------------------------------------------------------------- beyond the papers

def _interval(row, name: str) -> str:
    """'+0.120 [+0.050, +0.190]' from a gap-table row's ``<name> gain`` (or ``gap``), low and high."""
    est = row.get("gap" if name == "gap" else f"{name} gain")
    lo, hi = row.get(f"{name} low"), row.get(f"{name} high")
    if blank(est):
        return ""
    return f"{est:+.3f}" + ("" if blank(lo) or blank(hi) else f" [{lo:+.3f}, {hi:+.3f}]")


def gap_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The ranker-judge gap table as the report shows it: one row per model and measure."""
    return pd.DataFrame({
        "model": df["model"], "trained against": df["trained against"],
        "measure": [f"{m} on {s} ({u})" for m, s, u in zip(df["metric"], df["subset"], df["unit"])],
        "rankers' gain": [_interval(r, "rankers") for _, r in df.iterrows()],
        "judges' gain": [_interval(r, "judges") for _, r in df.iterrows()],
        "gap (rankers − judges)": [_interval(r, "gap") for _, r in df.iterrows()],
        "n": df["n"], "reading": df["reading"]})


def beyond_section(tables_dir: Path, pngs: dict[str, str]) -> str:
    """The ranker-judge gap (table and plot, notebook 07) and the DPO winners' drift (notebook 04)."""
    parts = []
    path = tables_dir / f"{GAP_TABLE}.csv"
    if path.is_file():
        try:
            parts.append('<h3 id="ranker-judge-gap">The ranker–judge gap</h3>'
                         + frame_html(gap_frame(pd.read_csv(path))).replace("<table>", '<table class="gap">', 1))
        except Exception as e:  # noqa: BLE001 - show the problem, keep the rest of the report
            parts.append(f"<p class=failed>{esc(path)}: {esc(type(e).__name__)}: {esc(e)}</p>")
    parts += [figure(pngs[s], caption(s)) for s in BEYOND_FIGURES if s in pngs]
    if not parts:
        return '<p class="muted">Nothing beyond the papers in this run (notebook 07 writes the ranker–judge gap).</p>'
    return f'<p class="muted">{BEYOND_NOTE}</p>' + "\n".join(parts)


# ---------------------------------------------------------------------------- listening

def _clip(run_dir: Path, report_dir: Path, rel: str, label: str) -> str:
    """Copy a clip, draw its spectrogram, and return a labelled player."""
    from ..audio.wav import read_wav
    from ..audio.media import spectrogram_png

    src = run_dir / rel
    if not src.resolve().is_relative_to(run_dir.resolve()) or not src.is_file():
        return f'<figure class="clip"><figcaption>{esc(label)}</figcaption><p class="failed">missing {esc(rel)}</p></figure>'
    (report_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, report_dir / rel)
    png = str(Path(rel).with_suffix(".png"))
    (report_dir / png).write_bytes(spectrogram_png(read_wav(src, allow_silent=True)))
    return (f'<figure class="clip"><figcaption>{esc(label)}</figcaption>'
            f'<img src="{esc(png)}" alt="spectrogram: {esc(label)}">'
            f'<audio controls preload="metadata" src="{esc(rel)}"></audio></figure>')


def listening_section(run_dir: Path, report_dir: Path) -> str:
    """Players and spectrograms from ``listening/index.json`` (notebook 07's contract)."""
    path = run_dir / "listening" / "index.json"
    if not path.is_file():
        return '<p class="muted">No listening set in this run (notebook 07 writes listening/index.json).</p>'
    try:
        index = json.loads(path.read_text())
        prompts, pairs, names = index.get("prompts", []), index.get("pairs", []), index.get("models", {})
    except (ValueError, AttributeError) as e:
        return f"<p class=failed>{esc(path)}: not a listening index ({esc(e)})</p>"
    sets = {"tango": "Tango 2's held-out prompts", "baton": "BATON's Temporal prompts"}
    parts = ['<p class="muted">The same held-out prompt as each model renders it (first seed, vocoded).</p>']
    for p in prompts:
        clips = "".join(_clip(run_dir, report_dir, rel, names.get(m, m)) for m, rel in p.get("clips", {}).items())
        parts.append(f'<div class="prompt"><p><b>{esc(p.get("prompt", ""))}</b> '
                     f'<span class="muted">({esc(sets.get(p.get("set"), p.get("set", "")))})</span></p>'
                     f'<div class="clips">{clips}</div></div>')
    if pairs:
        parts.append('<h3>Winner and loser of each preference strategy</h3><p class="muted">One pair of each '
                     "strategy of the preference set (the ranker's winner first) and of the gold set.</p>")
    for p in pairs:
        clips = (_clip(run_dir, report_dir, p["chosen"], "winner (chosen)")
                 + _clip(run_dir, report_dir, p["rejected"], "loser (rejected)"))
        parts.append(f'<div class="prompt"><p><b>{esc(p.get("strategy", ""))}</b>: {esc(p.get("prompt", ""))}</p>'
                     f'<div class="clips">{clips}</div></div>')
    return "\n".join(parts)
