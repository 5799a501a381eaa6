"""A small synthetic run folder, laid out like a run of the runner, for the report, label and
workshop tests (CI has no real run): preference and gold pairs, BATON feedback clips, the
listening set, stage JSONs with claims, paper-layout tables, figures, runner.json and two
executed notebooks (math, a plot, a progress-bar widget)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import soundfile as sf

SR = 16000
STRATEGIES = ["S1.1", "S1.2", "S2", "S3", "S1.1", "S2"]
MODELS = {"base": "base (Tango-full-FT's role)", "dpo": "Tango 2 (DPO)", "gold": "DPO on gold pairs",
          "baton_hd_rd": "BATON HD+RD"}
CLAIMS = [
    {"key": "dpo_clap", "claim": "DPO raises CLAP over the base model", "paper": "Tango 2 Table 3: CLAP 0.54 → 0.57",
     "measure": "clap on all: dpo − base", "n": 13, "seeds": 2, "ours": "+0.020 [+0.005, +0.035]",
     "per seed": "+0.02 [+0.00, +0.04]; +0.02 [+0.01, +0.03]", "half-width": 0.015, "MDE": 0.021,
     "continuous": None, "powered": True, "verdict": "reproduced"},
    {"key": "dpo_temporal_order", "claim": "… and on temporal prompts (order)", "paper": "Tango 2 Table 5",
     "measure": "order on temporal: dpo − base", "n": 8, "seeds": 2, "ours": "-0.100 [-0.180, -0.020]",
     "per seed": "-0.1; -0.1", "half-width": 0.08, "MDE": 0.11, "continuous": "order_margin -0.02 [-0.04, -0.01]",
     "powered": False, "verdict": "contradicted"},
    {"key": "gold_multi_presence", "claim": "Positive control: gold pairs improve presence", "paper": "(not in the papers)",
     "measure": "presence on multi-event: gold − base", "n": 11, "seeds": 2, "ours": "+0.000 [-0.040, +0.040]",
     "per seed": "+0.0; +0.0", "half-width": 0.04, "MDE": 0.06, "continuous": None, "powered": True,
     "verdict": "not shown"},
    {"key": "crpo_vs_dpo", "claim": "CRPO beats a static preference set", "paper": "TangoFlux",
     "measure": "clap on all: crpo − dpo", "n": 0, "seeds": 0, "ours": "", "per seed": "", "half-width": None,
     "MDE": None, "continuous": None, "powered": False, "verdict": "not measured"},
]


def tone(path: Path, freq: float, seconds: float = 0.5) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(SR * seconds)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR, subtype="PCM_16")
    return str(path)


def png_bytes(color: str = "tab:blue") -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2), dpi=50)
    ax = fig.add_subplot()
    ax.errorbar([0.1, -0.05], [0, 1], xerr=[0.05, 0.03], fmt="o", color=color)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _pairs(run: Path) -> None:
    rows = []
    for i, s in enumerate(STRATEGIES):
        rows.append({"prompt": f"A dog barks, then a bell rings ({i})", "strategy": s,
                     "chosen": f"audio/p{i}_w.wav", "rejected": f"audio/p{i}_l.wav",
                     "chosen_id": f"p{i}_w", "rejected_id": f"p{i}_l", "margin": 0.01 * i})
        tone(run / "preferences" / "audio" / f"p{i}_w.wav", 300 + 40 * i)
        tone(run / "preferences" / "audio" / f"p{i}_l.wav", 1200 + 40 * i)
    pd.DataFrame(rows).to_parquet(run / "preferences" / "preferences.parquet", index=False)
    gold = []
    for i in range(2):
        kind = ("order", "presence")[i]
        gold.append({"prompt": f"A siren wails followed by a knock ({i})", "strategy": f"gold {kind}", "kind": kind,
                     "chosen": f"audio/g{i}_w.wav", "rejected": f"audio/g{i}_l.wav",
                     "chosen_id": f"g{i}_w", "rejected_id": f"g{i}_l",
                     "chosen_score": 0.3 - 0.2 * i, "rejected_score": 0.2})  # the rankers: right on g0, wrong on g1
        tone(run / "gold" / "audio" / f"g{i}_w.wav", 500 + 30 * i)
        tone(run / "gold" / "audio" / f"g{i}_l.wav", 900 + 30 * i)
    pd.DataFrame(gold).to_parquet(run / "gold" / "preferences.parquet", index=False)


def _feedback(run: Path, n_per_task: int = 6) -> None:
    rows = []
    for t, task in enumerate(("integrity", "temporal")):
        for i in range(n_per_task):
            cid = f"hd_{t * n_per_task + i:05d}"
            # stored as the notebook stores it: a path relative to the repository root
            rows.append({"task": task, "caption": f"{task} prompt {i}: a bell, then a knock",
                         "labels": ["bell", "knock"], "all_labels": ["bell", "knock"], "id": cid,
                         "location": f"papermill_runs/elsewhere/baton/hd/audio/{cid}.wav"})
            tone(run / "baton" / "hd" / "audio" / f"{cid}.wav", 350 + 25 * (t * n_per_task + i))
    pd.DataFrame(rows).to_parquet(run / "baton" / "hd" / "clips.parquet", index=False)


def _listening(run: Path) -> None:
    prompts = []
    for k, (name, models) in enumerate((("tango", ("base", "dpo", "gold")), ("baton", ("base", "baton_hd_rd")))):
        for i in range(2):
            clips = {m: f"listening/{name}_{i}_{m}.wav" for m in models}
            for j, rel in enumerate(clips.values()):
                tone(run / rel, 250 + 100 * j + 10 * i + 5 * k)
            prompts.append({"set": name, "prompt": f"{name} prompt {i}: a drum, then rain", "clips": clips})
    pairs = []
    for s in ("S1.1", "S2", "gold order"):
        safe = s.replace(" ", "_")
        pairs.append({"strategy": s, "prompt": f"pair prompt {s}",
                      "chosen": tone(run / "listening" / f"pair_{safe}_w.wav", 400).replace(str(run) + "/", ""),
                      "rejected": tone(run / "listening" / f"pair_{safe}_l.wav", 800).replace(str(run) + "/", "")})
    index = {"prompts": prompts, "pairs": pairs, "models": MODELS}
    (run / "listening" / "index.json").write_text(json.dumps(index, indent=1))


def _tables(run: Path) -> None:
    tables = run / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    cell = "0.250 [0.100, 0.400]"
    t3 = pd.DataFrame({"FAD": ["112.978 [102.104, 126.129]", "113.096 [102.211, 126.252]"],
                       "order": [cell, np.nan], "paper FAD": [2.51, 2.69], "paper CLAP": [0.54, np.nan],
                       "CLAP": ["-0.062 [-0.101, -0.033]", "nan [nan, nan]"]},
                      index=["base (Tango-full-FT's role)", "Tango 2 (DPO)"])
    t3.to_csv(tables / "table3.csv")
    (tables / "table3.md").write_text(t3.to_markdown())
    t4 = pd.DataFrame([{"model": "Tango 2 (DPO)", "subset": "multi-event", "clips": 11, "FAD": "1.0 [0.9, 1.1]",
                        "KL": "0.1 [0.0, 0.2]", "IS": "1.0 [1.0, 1.0]", "CLAP": "0.5 [0.4, 0.6]",
                        "paper FAD/KL/IS/CLAP": "2.6/1.11/8.98/0.57"}])
    t4.to_csv(tables / "table4.csv", index=False)
    (tables / "table4.md").write_text(t4.to_markdown(index=False))
    pd.DataFrame(CLAIMS).to_csv(tables / "claims.csv", index=False)
    (tables / "claims.md").write_text(pd.DataFrame(CLAIMS).to_markdown(index=False))
    baton = pd.DataFrame([{"model": "BATON HD+RD", "seed": 0, "task": "Temporal", "judge metric": "order",
                           "value": cell, "CLAP": cell, "paper": "CLAP +6.0% over Tango"}])
    baton.to_csv(tables / "baton.csv", index=False)
    gap = pd.DataFrame([
        {"model": "Tango 2 (DPO)", "model id": "dpo", "trained against": "the rankers' CLAP", "prompts": "tango",
         "subset": "all", "metric": "clap", "unit": "base-model sd", "rankers gain": 0.31, "rankers low": 0.2,
         "rankers high": 0.42, "judges gain": 0.05, "judges low": -0.04, "judges high": 0.14, "gap": 0.26,
         "gap low": 0.15, "gap high": 0.37, "n": 368, "reading": "rankers see more: reward hacking"},
        {"model": "BATON HD+RD", "model id": "baton_hd_rd", "trained against": "labels from the rankers' detector",
         "prompts": "baton", "subset": "Integrity", "metric": "all_present", "unit": "rate", "rankers gain": 0.02,
         "rankers low": -0.03, "rankers high": 0.07, "judges gain": 0.01, "judges low": -0.04, "judges high": 0.06,
         "gap": 0.01, "gap low": -0.03, "gap high": 0.05, "n": 128, "reading": "matched within the interval"}])
    gap.to_csv(tables / "ranker_judge_gap.csv", index=False)


def _notebook(path: Path, title: str, figure_name: str) -> None:
    nb = nbformat.v4.new_notebook()
    png = base64.b64encode(png_bytes()).decode()
    widget_id = "0123456789abcdef"
    state = {
        widget_id: {"model_name": "HBoxModel", "model_module": "@jupyter-widgets/controls", "model_module_version": "2.0.0",
                    "state": {"children": [f"IPY_MODEL_{widget_id}_a", f"IPY_MODEL_{widget_id}_b", f"IPY_MODEL_{widget_id}_c"]}},
        f"{widget_id}_a": {"model_name": "HTMLModel", "model_module": "@jupyter-widgets/controls",
                           "model_module_version": "2.0.0", "state": {"value": "sampling: 100%"}},
        f"{widget_id}_b": {"model_name": "FloatProgressModel", "model_module": "@jupyter-widgets/controls",
                           "model_module_version": "2.0.0", "state": {"value": 16, "max": 16, "bar_style": "success"}},
        f"{widget_id}_c": {"model_name": "HTMLModel", "model_module": "@jupyter-widgets/controls",
                           "model_module_version": "2.0.0", "state": {"value": " 16/16 [00:02&lt;00:00]"}},
    }
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": state, "version_major": 2,
                                                                             "version_minor": 0}}
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\nThe filter keeps pairs with $s_w \\ge \\alpha$ and"
                                      " `$not math$` in code.\n\n$$\\mathcal{L} = -\\log\\sigma\\big(-\\tfrac12"
                                      " \\beta (\\Delta_w - \\Delta_l)\\big)$$"),
        nbformat.v4.new_code_cell("run_dir = 'x'", outputs=[nbformat.v4.new_output(
            "display_data", data={"application/vnd.jupyter.widget-view+json":
                                  {"model_id": widget_id, "version_major": 2, "version_minor": 0},
                                  "text/plain": "sampling:   0%|          | 0/16"})]),
        nbformat.v4.new_markdown_cell("## A figure"),
        nbformat.v4.new_code_cell(f"fig.savefig(fig_dir / '{figure_name}')", outputs=[nbformat.v4.new_output(
            "display_data", data={"image/png": png, "text/plain": "<Figure>"})]),
    ]
    nbformat.write(nb, path)


def _stages(run: Path) -> list[dict]:
    figures = run / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for name, color in (("00_world_statistics", "tab:blue"), ("04_effects", "tab:green"), ("07_claims", "tab:red"),
                        ("04_dpo_drift", "tab:orange"), ("07_ranker_judge_gap", "tab:purple")):
        (figures / f"{name}.png").write_bytes(png_bytes(color))
    data = {
        "00_world": {"profile": "fixture", "sizes": {"train": 96, "val": 24, "test": 24}, "wall_seconds": 1.6,
                     "relations": {f"rel{i}": i for i in range(30)}},
        "04_dpo": {"profile": "fixture", "settings": {"lr": 2e-5, "beta": 2000.0},
                   "dpo_final": {f"dpo/s{i}": {"dpo_loss": 0.69 + i / 100, "implicit_acc": 0.5} for i in range(3)},
                   "sweep": [{"candidate": f"c{i}", "lr": 1e-4, "score": 0.25} for i in range(3)]},
        "07_reproduce": {"profile": "fixture", "claims": CLAIMS, "models": {"base": 1, "dpo": 2},
                         "results": {m: {"order": [0.2 + 0.1 * k, 0.1 + 0.1 * k, 0.3 + 0.1 * k],
                                         "CLAP": [0.5, 0.45, 0.55], "presence": [np.nan, np.nan, np.nan]}
                                     for k, m in enumerate(("base", "dpo", "gold"))}},
    }
    stages = []
    for stem, d in data.items():
        (run / f"{stem}.json").write_text(json.dumps(d, indent=1))
        stages.append({"stage": stem, "status": "ok", "seconds": 12.5, "started": "2026-01-01T00:00:00+00:00",
                       "parameters": {"run_dir": str(run), "profile": "fixture", "seed": 0}})
    _notebook(run / "00_world.ipynb", "00 · The world", "00_world_statistics.png")
    _notebook(run / "07_reproduce.ipynb", "07 · Reproducing the papers' tables", "07_claims.png")
    return stages


def make_run(run: Path) -> Path:
    """Write the synthetic run folder at ``run`` and return it."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    _pairs(run)
    _feedback(run)
    _listening(run)
    _tables(run)
    stages = _stages(run)
    (run / "runner.json").write_text(json.dumps({
        "profile": "fixture", "description": "a synthetic run for the browser tests", "seed": 0,
        "parameters": {}, "run_dir": str(run), "status": "ok", "stages": stages}, indent=1))
    return run
