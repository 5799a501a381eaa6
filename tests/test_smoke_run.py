"""The smoke profile runs every real notebook end to end through papermill: once straight through,
and once more up to 04 with 01, 02 and 04 killed mid-stage (SIGKILL) and resumed, with caches
present or deleted; stages 00-04 of the two runs must give bit-identical weights and identical
results (05-07 run once: they train and sample with the same seeded jobs as 04)."""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from t2a_lib.evaluate import claims, per_clip
from t2a_lib.evaluate.report import comparable_results
from t2a_lib.run.runner import ROOT, run_profile


def _a_scorer_is_saved(run_dir: Path) -> bool:
    """01: a scorer has finished (its fit.json is written last) while the others train."""
    return any(run_dir.glob("scorers/*/*/fit.json"))


def _a_checkpoint_mid_training(folder: Path) -> bool:
    """02, 04: a training checkpoint written before its last step (``state.json``, written atomically)."""
    for state in folder.rglob("checkpoint/state.json"):
        try:
            saved = json.loads(state.read_text())
        except (OSError, ValueError):  # moved into place while we read
            continue
        if saved["step"] < saved["config"]["steps"]:
            return True
    return False


# stage -> (when to kill it, the caches deleted before it resumes: "caches absent" for 01 and 04)
INTERRUPTIONS = {
    "01_judges": (_a_scorer_is_saved, ["world/features"]),
    "02_base_model": (lambda run: _a_checkpoint_mid_training(run / "base"), []),
    "04_dpo": (lambda run: _a_checkpoint_mid_training(run / "models"), ["samples"]),
}


def _kill_tree(pid: int) -> None:
    """SIGKILL process ``pid`` and every process under it (the kernel, its worker processes):
    each is stopped first, so none starts another while the tree is collected."""
    import psutil

    root, stopped = psutil.Process(pid), {}
    while new := [p for p in [root, *root.children(recursive=True)] if p.pid not in stopped]:
        for proc in new:
            stopped[proc.pid] = proc
            try:
                proc.suspend()
            except psutil.NoSuchProcess:  # ended by itself meanwhile
                pass
    for proc in stopped.values():
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(stopped.values()), timeout=60)


def _kill_mid_stage(stem: str, run_dir: Path, report_dir: Path, when) -> None:
    """Run stage ``stem`` as the command line does and SIGKILL it once ``when(run_dir)`` holds."""
    cmd = [sys.executable, "-m", "t2a_lib.run", "--profile", "smoke", "--run-dir", str(run_dir),
           "--report-dir", str(report_dir), "--only", stem]
    with open(run_dir / f"{stem}.killed.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while proc.poll() is None and not when(run_dir):
            time.sleep(0.02)
        if proc.poll() is not None:
            pytest.fail(f"{stem} ended (exit {proc.returncode}) before the moment to kill it; see {log.name}")
        _kill_tree(proc.pid)


def _straight_run(run_dir: Path, report_dir: Path) -> dict:
    return run_profile("smoke", run_dir=run_dir, report_dir=report_dir)


INTERRUPTED_STAGES = ("00_world", "01_judges", "02_base_model", "03_preferences", "04_dpo")


def _interrupted_run(run_dir: Path, report_dir: Path) -> dict:
    """Stages 00-04 of the smoke run with 01, 02 and 04 killed mid-stage, then resumed (the stage
    run again)."""
    run_dir.mkdir(parents=True)
    for stem in INTERRUPTED_STAGES:
        if stem in INTERRUPTIONS:
            when, caches = INTERRUPTIONS[stem]
            _kill_mid_stage(stem, run_dir, report_dir, when)
            for cache in caches:
                shutil.rmtree(run_dir / cache)
        result = run_profile("smoke", run_dir=run_dir, report_dir=report_dir, only=[stem], report=False)
    return result


def _stage_results(run_dir: Path, stems) -> dict:
    """The comparable results of stages ``stems``, read from their stage JSONs."""
    return comparable_results({stem: json.loads((run_dir / f"{stem}.json").read_text()) for stem in stems})


def _on_core(core: int | None):
    """A subprocess ``preexec_fn`` that pins the child, and every process it starts, to one core."""
    return None if core is None else (lambda: os.sched_setaffinity(0, {core}))


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Two smoke runs in separate empty folders, same profile and seed, the second up to 04 only,
    killed and resumed in 01, 02 and 04: [(run_dir, report_dir, result)]. On two or more cores they
    run side by side, each pinned to a core of its own (one thread each, as the one-core
    ``parallel.cpu_count`` gives them), so they give each other's numbers and never oversubscribe.
    Run b runs in a process of its own (this file as a script), run a here."""
    (a, b) = [tmp_path_factory.mktemp(f"smoke_{name}") for name in ("a", "b")]
    cores = sorted(os.sched_getaffinity(0))
    core_a, core_b = cores[:2] if len(cores) >= 2 else (None, None)
    t0 = time.perf_counter()
    with open(b / "interrupted.log", "w") as log:
        proc = subprocess.Popen([sys.executable, __file__, str(b / "run"), str(b / "report")], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_on_core(core_b))
        try:
            if core_a is not None:
                os.sched_setaffinity(0, {core_a})  # this thread; the kernels run_profile starts inherit it
            result_a = _straight_run(a / "run", a / "report")
        except BaseException:
            _kill_tree(proc.pid)
            raise
        finally:
            os.sched_setaffinity(0, cores)
        print(f"smoke run a: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        if proc.wait() != 0:
            pytest.fail(f"the interrupted smoke run failed (exit {proc.returncode}); see {log.name}")
    print(f"smoke run b (beside a): {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    result_b = json.loads((b / "run" / "runner.json").read_text())
    return [(a / "run", a / "report", result_a), (b / "run", b / "report", result_b)]


@pytest.mark.slow
def test_smoke_profile_runs_every_notebook(smoke_runs):
    run_dir, report_dir, result = smoke_runs[0]
    assert result["status"] == "ok", result
    stages = {s["stage"]: s for s in json.loads((run_dir / "runner.json").read_text())["stages"]}
    assert stages and all(s["status"] == "ok" for s in stages.values()), stages
    for stem in stages:
        assert (run_dir / f"{stem}.ipynb").exists()
        assert json.loads((run_dir / f"{stem}.json").read_text()), f"{stem} wrote no results"
    world = json.loads((run_dir / "00_world.json").read_text())
    assert world["sizes"] == {"train": 96, "val": 24, "test": 24}
    assert not any(world["caption_leaks"].values())
    summary = json.loads((report_dir / "summary.json").read_text())
    assert set(stages) <= set(summary)
    assert (report_dir / "index.html").read_text().count("<table") >= 2


@pytest.mark.slow
def test_smoke_profile_runs_what_goes_beyond_the_papers(smoke_runs):
    """KTO, the safeguarded DPO, the drift runs and the ranker-judge gap, at smoke sizes."""
    run_dir, report_dir, result = smoke_runs[0]
    assert result["status"] == "ok", result
    for model_id in ("dpo_safe", "kto_hd", "kto_hd_rd"):  # two seeds each, as the claims need
        assert len(list((run_dir / "models" / model_id).glob("s[0-9]/unet"))) == 2, model_id
    dpo = json.loads((run_dir / "04_dpo.json").read_text())
    assert set(dpo["drift"]) == {"plain", "safeguarded"} and dpo["drift"]["plain"]["loser_scale"] == 1.0
    assert 0.0 <= dpo["drift"]["safeguarded"]["loser_scale"] <= 1.0
    assert (run_dir / "figures" / "04_dpo_drift.png").is_file() and (run_dir / "figures" / "06_kto_training.png").is_file()
    final = json.loads((run_dir / "07_reproduce.json").read_text())
    gap = final["ranker_judge_gap"]
    assert {r["model id"] for r in gap} >= {"dpo", "dpo_safe", "baton_hd_rd", "kto_hd"}
    assert {(r["subset"], r["metric"]) for r in gap} == {("all", "clap"), ("Integrity", "all_present"),
                                                         ("Temporal", "order")}
    measured = {c["key"]: c for c in final["claims"]}
    for key in ("kto_integrity", "kto_vs_baton_temporal", "sdpo_vs_dpo", "dpo_ranker_gap", "hdrd_ranker_gap"):
        assert measured[key]["n"] > 0, measured[key]
    html = (report_dir / "index.html").read_text()
    assert 'id="beyond"' in html and 'class="gap"' in html and "07_ranker_judge_gap.png" in html


@pytest.mark.slow
def test_the_claims_table_is_recomputed_from_the_per_clip_tables_alone(smoke_runs):
    """tables/per_clip and claims.CLAIMS give tables/claims.csv again, every column of every row."""
    run_dir = smoke_runs[0][0]
    final = json.loads((run_dir / "07_reproduce.json").read_text())
    again = claims.answer_all(per_clip.read_per_clip(run_dir), n_boot=final["n_boot"], seed=final["seed"])
    written = pd.read_csv(run_dir / "tables" / "claims.csv")
    again = pd.read_csv(io.StringIO(again.to_csv(index=False)))  # the same round trip as the file
    assert list(again.columns) == list(written.columns) and len(written) == len(claims.CLAIMS)
    assert (written.verdict != "not measured").sum() >= 10  # the smoke run measures most rows
    for col in written.columns:
        if pd.api.types.is_numeric_dtype(written[col]):
            assert np.allclose(again[col].to_numpy(float), written[col].to_numpy(float), equal_nan=True, atol=1e-12), col
        else:
            assert again[col].fillna("").tolist() == written[col].fillna("").tolist(), col


@pytest.mark.slow
def test_two_smoke_runs_with_the_same_seed_give_identical_results(smoke_runs):
    """Determinism, and resuming: every figure of stages 00-04 (timings and provenance aside) of
    the run killed and resumed in 01, 02 and 04 equals the uninterrupted run's, as its report's
    summary.json gives them."""
    (a_dir, a_report, a_result), (b_dir, _, b_result) = smoke_runs
    assert a_result["status"] == b_result["status"] == "ok", (a_result, b_result)
    summary = json.loads((a_report / "summary.json").read_text())
    a = comparable_results({stem: summary[stem] for stem in INTERRUPTED_STAGES})
    b = _stage_results(b_dir, INTERRUPTED_STAGES)
    assert a == _stage_results(a_dir, INTERRUPTED_STAGES)  # the report holds the stage JSONs as written
    assert len(a) > 60  # the comparison covers the stages' results, not an empty dict
    assert {k.split(".")[0] for k in a} == set(INTERRUPTED_STAGES)
    differing = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    assert not differing, {k: (a.get(k), b.get(k)) for k in differing[:10]}


def _weights(run_dir: Path) -> dict[str, str]:
    """sha256 of every safetensors file of a run, by path inside it."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*.safetensors"))}


@pytest.mark.slow
def test_a_run_killed_and_resumed_has_the_weights_of_one_never_interrupted(smoke_runs):
    """Every weights file (scorers, base model, checkpoints, fine-tunes) of the run killed in 01,
    02 and 04 (caches deleted before 01 and 04 resumed) is byte for byte the uninterrupted run's."""
    (a_dir, _, a), (b_dir, _, b) = smoke_runs
    assert a["status"] == b["status"] == "ok"
    for stem in INTERRUPTIONS:  # each was really killed mid-stage, then completed
        assert (b_dir / f"{stem}.killed.log").is_file()
        assert json.loads((b_dir / f"{stem}.json").read_text())
    wa, wb = _weights(a_dir), _weights(b_dir)
    assert len(wb) > 20 and any(k.startswith("scorers/") for k in wb) and any(k.startswith("models/dpo/") for k in wb)
    later = ("models/baton", "models/kto", "models/dpo_wo", "baton/")  # written by 05-07, which run b stops before
    assert {k for k in wa if not k.startswith(later)} == wb.keys(), sorted(set(wa) ^ set(wb))
    differing = [k for k in wb if wa[k] != wb[k]]
    assert not differing, differing


def test_comparable_results_drop_timings_and_provenance_but_keep_results():
    summary = {"wall_time_s": {"00_world": 3.2}, "provenance": {"git_commit": "abc"},
               "02_base_model": {"unet": {"seconds": 12.0, "final_loss": 0.1}, "clips_per_s": 5.0,
                                 "by_kind": {"single": {"presence": 0.9}}},
               "07_reproduce": {"claims": [{"claim": "x", "ours": "+0.1", "train_seconds": 4}]}}
    results = comparable_results(summary)
    assert results == {"02_base_model.unet.final_loss": 0.1, "02_base_model.by_kind.single.presence": 0.9,
                       "07_reproduce.claims": [{"claim": "x", "ours": "+0.1"}]}


if __name__ == "__main__":  # the interrupted run, in the process smoke_runs starts
    run_dir, report_dir = map(Path, sys.argv[1:3])
    result = _interrupted_run(run_dir, report_dir)
    sys.exit(0 if result["status"] == "ok" else 1)


def check_workshop_training(run_dir: Path, out_dir: Path) -> dict:
    """Six scripted participants label a smoke run's workshop; the room's models train (a few
    steps) and play before / after: every stage done, the clips written, a verdict per model."""
    import numpy as np
    import soundfile as sf

    from t2a_lib.feedback.workshop import Workshop, WorkshopConfig
    from t2a_lib.feedback.workshop_train import WorkshopTrainConfig, read_progress, train_room

    w = Workshop(WorkshopConfig(run_dir, out_dir=out_dir, pairs_per_person=6, clips_per_person=8, raters=3))
    rng = np.random.default_rng(0)
    for k in range(6):
        token = w.join(f"P{k}", w.session["code"])["token"]
        for task in w.tasks:
            while (s := w.state(token, task))["item"]:
                w.answer(token, task, s["item"]["id"], str(rng.choice(["A", "B"] if task == "pairs" else ["yes", "no"])))
    result = train_room(run_dir, out_dir, WorkshopTrainConfig(dpo_steps=2, baton_steps=2, n_judge=4, n_listen=2, n_boot=50))
    progress = read_progress(out_dir)
    assert progress["finished"] and not progress["error"] and list(progress["done"]) == progress["stages"]
    assert result["dpo"]["pairs"] > 0 and result["baton_hd"]["clips"] > 0
    clips = result["listen"]["clips"]
    assert len(clips) == 2 and set(clips[0]["players"]) == {"before", "dpo", "baton_hd"}
    before, after = (sf.read(w.room_clip(m, "0.wav"))[0] for m in ("before", "dpo"))
    assert before.shape == after.shape and not np.array_equal(before, after)  # same noise, another model
    assert set(result["listen"]["verdict"]) == {"dpo", "baton_hd"}
    return result


@pytest.mark.slow
def test_the_workshop_trains_on_the_rooms_labels_and_plays_before_and_after(smoke_runs, tmp_path):
    check_workshop_training(smoke_runs[0][0], tmp_path / "workshop")
