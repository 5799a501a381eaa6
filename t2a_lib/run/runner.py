"""Run the notebooks of a profile in order with papermill, then build the report.

    python -m t2a_lib.run --profile smoke
    python -m t2a_lib.run --profile default --from 03 --set n_steps=200
    python -m t2a_lib.run --profile smoke --list        # show the plan, check its inputs, run nothing
    python -m t2a_lib.run --profile real --check        # check every input the profile names (preflight)

Stages are the sorted ``notebooks/NN_name.ipynb`` files (or the profile's ``stages`` list).
Every notebook receives ``run_dir``, ``profile`` and ``seed``, plus the profile's global
``parameters`` that it declares and its own ``notebooks.<stem>`` entries; a name that no
notebook declares is refused before anything runs, and so is a value of the wrong type (the
notebook's default says which) or out of range (``t2a_lib.run.params.RANGES``), naming the
parameter (exit status 2; ``--set lr=1e-4`` is a float). Ctrl-C, or SIGTERM (``kill``, a job
scheduler's time limit), ends with one line naming the interrupted stage and the command that
resumes it (exit status 130).

Paths: relative paths (profile files, notebooks_dir, run_dir, report_dir) are taken from the
repository root, and every notebook runs with the repository root as its working directory,
so a notebook can use ``run_dir`` (e.g. ``papermill_runs/smoke``) exactly as it receives it.
The executed copy of each stage goes to ``<run_dir>/<stem>.ipynb``; the notebook itself
writes ``<run_dir>/<stem>.json``; the runner keeps ``<run_dir>/runner.json`` (status, wall
time, start time and parameters of each stage). Nothing in run_dir is ever deleted.

One runner per run folder: a second one exits 2 naming the first (``t2a_lib.run.lock``). A run or
report folder inside the source tree, a profile with a duplicate key, and a notebook that differs
from its ``.py`` source are refused before anything runs (``t2a_lib.run.sources``). A failed stage's
error is printed first; ``runner.json`` then says "failed" even on a full disk (it is rewritten in
room it reserves), and the report is built beside ``report_dir`` and swapped in whole.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

from .files import rewrite_in_place, swap_in_folder, write_text_atomic
from .lock import alive, run_folder_lock
from .preflight import report as inputs_report
from .preflight import check_inputs, profile_params, require_inputs
from .profiles import (PROFILES_DIR, ROOT, Profile, RunnerError, parse_sets, plan, print_plan, relative,
                       resolve_path, resolve_stage)

STATE_FILE = "runner.json"  # the runner's records in the run folder (report and release read it)
RESERVE = 4096  # trailing blanks in runner.json: on a full disk its final status is rewritten in their place


class Interrupted(RunnerError):
    """Ctrl-C (or SIGTERM) while running; the message says what stopped and how to resume."""
    exit_code = 130


class StageFailed(RunnerError):
    """A stage raised (exit status 1); ``result`` is what run_profile would have returned."""
    exit_code = 1

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result


def _describe_failure(stem, src, out, err) -> str:
    """Which notebook, which cell (counted in the source notebook), the exception."""
    import nbformat
    cells = nbformat.read(src, as_version=4).cells
    idx = next((i for i, c in enumerate(cells) if c.source == err.source), None)
    where = (f"cell {idx + 1} (index {idx})" if idx is not None
             else f"cell index {err.cell_index} of the executed copy")
    lines = [line for line in err.source.splitlines() if line.strip()][:3]
    return (f"stage {stem} failed in {where} of {relative(src)}:\n"
            + "".join(f"      | {line}\n" for line in lines)
            + f"    {err.ename}: {err.evalue}\n    executed notebook: {relative(out)}{_cut_short(out)}")


def _cut_short(path: Path) -> str:
    """' (cut short: ...)' when the executed copy is not whole JSON (a full disk), else ''."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f" (cut short, not readable: {type(e).__name__}; the error above is the stage's own)"
    return ""


def run_profile(profile, run_dir=None, report_dir=None, start=None, only=None, overrides=None,
                notebooks_dir="notebooks", kernel_name="python3", report=True) -> dict:
    """Run the profile's stages (from ``start``, or only ``only``), record them, build the report.

    Returns ``{"profile", "status", "failed", "run_dir", "report", "stages": [records]}``;
    raises RunnerError on a bad configuration (nothing run) and StageFailed when a stage fails
    (its ``result`` holds the same dict; earlier outputs are kept, the report is still built).
    """
    prof, seed, notebooks, params = plan(profile, overrides, notebooks_dir)
    stems = list(notebooks)
    todo = _stages_to_run(stems, start, only)
    require_inputs({s: params[s] for s in todo})  # every checkpoint and data set the stages name, before any runs
    run_dir = resolve_path(run_dir or f"papermill_runs/{prof.name}")
    report_dir = resolve_path(report_dir or f"reports/{prof.name}")
    _check_outside_sources(run_dir, report_dir, notebooks_dir)
    _check_writable(run_dir)
    with run_folder_lock(run_dir):  # one runner per run folder (a second one exits 2)
        records = RunRecords(run_dir, prof, stems, seed, overrides, notebooks_dir)
        failure, stem, t_all = None, None, time.perf_counter()
        for stem in todo:
            full = {"run_dir": relative(run_dir), "profile": prof.name, "seed": seed, **params[stem]}
            failure = _run_stage(stem, notebooks[stem], full, records, kernel_name,
                                 lambda s=stem: _resume_command(profile, run_dir, s, overrides, notebooks_dir))
            if failure:
                records.not_run(todo[todo.index(stem) + 1:], f"{stem} failed")
                break
        records.finish("failed" if failure else "ok")
        result = {"profile": prof.name, "status": records.state["status"], "failed": stem if failure else None,
                  "seconds": round(time.perf_counter() - t_all, 3), "run_dir": run_dir,
                  "report_dir": report_dir, "report": None, "stages": records.state["stages"]}
        if report:
            result["report"] = _build_report(run_dir, report_dir, prof.name)
        if failure:
            raise StageFailed(failure, result)
        print(f"done: {len(todo)} stage(s) in {result['seconds']:.1f} s; records in {relative(records.path)}")
        return result


def _stages_to_run(stems: list[str], start, only) -> list[str]:
    """The stems from ``start`` on (all without it), kept to those in ``only`` when given."""
    todo = stems[stems.index(resolve_stage(str(start), stems)):] if start is not None else stems
    if only:
        wanted = {resolve_stage(str(o), stems) for o in only}
        todo = [s for s in todo if s in wanted]
    if not todo:
        raise RunnerError("nothing to run: --from/--only select no stage")
    return todo


class RunRecords:
    """``<run_dir>/runner.json``: the run's status and one record per stage, rewritten atomically on every
    change; records of stages not run this time are kept from the previous file."""

    def __init__(self, run_dir: Path, prof: Profile, stems: list[str], seed: int, overrides, notebooks_dir):
        self.path, self.stems = run_dir / STATE_FILE, stems
        try:
            old = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except ValueError as e:
            raise RunnerError(f"{self.path}: unreadable records ({e}); move it aside to start afresh") from None
        if old.get("profile") not in (None, prof.name):
            print(f"warning: {relative(self.path)} holds records of profile {old['profile']!r}", file=sys.stderr)
        self.records = {r["stage"]: r for r in old.get("stages", [])}
        given = {**prof.parameters, **{k: v for k, v in (overrides or {}).items() if k != "seed"}}
        self.state = {"profile": prof.name, "profile_file": relative(prof.path), "description": prof.description,
                      "seed": seed, "parameters": given, "run_dir": relative(run_dir),
                      "notebooks_dir": relative(resolve_path(notebooks_dir)), "status": "running"}

    def start(self, stem: str, parameters: dict, notebook: Path) -> dict:
        rec = self.records[stem] = {"stage": stem, "status": "running", "seconds": None,
                                    "started": datetime.now().astimezone().isoformat(timespec="seconds"),
                                    "parameters": parameters, "notebook": relative(notebook), "results": None}
        self.save()
        return rec

    def not_run(self, stems: list[str], reason: str) -> None:
        for stem in stems:
            self.records[stem] = {"stage": stem, "status": "not run", "seconds": None, "started": None,
                                  "parameters": None, "reason": reason}

    def finish(self, status: str) -> None:
        self.state["status"] = status
        self.save()

    def save(self) -> None:
        order = self.stems + [s for s in self.records if s not in self.stems]
        self.state.update(updated=datetime.now().astimezone().isoformat(timespec="seconds"),
                          stages=[self.records[s] for s in order if s in self.records])
        try:
            text = json.dumps(self.state, indent=2, default=str) + "\n"
            write_text_atomic(self.path, text + " " * RESERVE + "\n")  # room for a last status, in place
        except OSError as e:  # a full disk: the status must still not stay "running"
            compact = json.dumps(self.state, default=str, separators=(",", ":"))
            kept = rewrite_in_place(self.path, compact)
            print(f"warning: cannot write {relative(self.path)} ({e.strerror or e}); "
                  + ("its status was rewritten in place" if kept else "its records are out of date"),
                  file=sys.stderr, flush=True)


def _run_stage(stem: str, notebook: Path, parameters: dict, records: RunRecords, kernel_name: str,
               resume_command) -> str | None:
    """Execute one notebook with papermill into ``<run_dir>/<stem>.ipynb`` and record it; the failure's
    description, or None. Ctrl-C raises Interrupted naming the command that resumes the stage."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    stems, run_dir = records.stems, records.path.parent
    n, out = f"[{stems.index(stem) + 1}/{len(stems)}]", run_dir / f"{stem}.ipynb"
    rec = records.start(stem, parameters, out)
    print(f"{n} {stem} ...", flush=True)
    t0, failure = time.perf_counter(), None
    try:
        papermill.execute_notebook(str(notebook), str(out), parameters=parameters,
                                   kernel_name=kernel_name, progress_bar=True, cwd=str(ROOT))
    except (KeyboardInterrupt, PapermillExecutionError) as e:
        if isinstance(e, PapermillExecutionError) and e.ename != "KeyboardInterrupt":
            failure = _describe_failure(stem, notebook, out, e)
        else:  # Ctrl-C reaches the kernel too: its cell then fails with KeyboardInterrupt
            rec.update(status="interrupted", seconds=round(time.perf_counter() - t0, 3))
            records.finish("interrupted")
            raise Interrupted(f"interrupted: stage {stem} stopped after {rec['seconds']:.1f} s (outputs so "
                              f"far kept in {relative(run_dir)}); resume with: {resume_command()}") from None
    except Exception as e:  # kernel missing or died, unreadable notebook, ...
        failure = f"stage {stem} could not run {relative(notebook)}: {type(e).__name__}: {e}"
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    if failure:  # the stage's own error first, before any bookkeeping that might fail too
        print(f"{n} {stem} FAILED after {rec['seconds']:.1f} s", flush=True)
        print(f"error: {failure}", file=sys.stderr, flush=True)
        rec.update(status="failed", error=failure)
        return failure
    _record_results(stem, run_dir, rec)
    records.save()
    print(f"{n} {stem} ok ({rec['seconds']:.1f} s)", flush=True)
    return None


def _record_results(stem: str, run_dir: Path, rec: dict) -> None:
    """The stage is done: its record points at the ``<stem>.json`` of results it wrote, or warns."""
    results = run_dir / f"{stem}.json"
    if results.is_file():
        rec["results"] = relative(results)
    else:
        rec["warnings"] = [f"the notebook did not write {relative(results)}"]
        print(f"warning: {stem} did not write {relative(results)}", file=sys.stderr)
    rec["status"] = "ok"


def _build_report(run_dir: Path, report_dir: Path, name: str):
    """The report's path, or None with a warning: a broken report must not hide the stage results."""
    from ..evaluate.report import build_report

    import os
    import shutil

    building = report_dir.with_name(f".{report_dir.name}.building-{os.getpid()}")
    for left in report_dir.parent.glob(f".{report_dir.name}.building-*"):  # of a killed runner
        if left.name.rpartition("-")[2].isdigit() and not alive(int(left.name.rpartition("-")[2])):
            shutil.rmtree(left, ignore_errors=True)
    try:  # built whole in a folder beside it, then swapped in: never half old, half new
        path = build_report(run_dir, building, name)
        swap_in_folder(building, report_dir)
        path = report_dir / Path(path).relative_to(building)
        print(f"report: {path}", flush=True)
        return path
    except Exception as e:
        shutil.rmtree(building, ignore_errors=True)
        print(f"warning: the report could not be built: {type(e).__name__}: {e}", file=sys.stderr)
        return None


def _check_writable(run_dir: Path) -> None:
    """Create ``run_dir`` and write a file in it, or refuse (exit 2) naming the folder."""
    import tempfile

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-check-"):
            pass
    except OSError as e:
        raise RunnerError(f"cannot write the run folder {run_dir}: {e.strerror or e}; make it writable "
                            f"or choose another with --run-dir") from None


def _check_outside_sources(run_dir: Path, report_dir: Path, notebooks_dir) -> None:
    """Refuse (exit 2) a run or report folder in the source tree: its outputs would overwrite sources."""
    from .sources import inside_sources

    for option, folder in (("--run-dir", run_dir), ("--report-dir", report_dir)):
        source = inside_sources(folder, ROOT, resolve_path(notebooks_dir))
        if source:
            raise RunnerError(f"{option} {folder} lies in the source tree ({relative(source)}); its outputs would "
                              f"overwrite source files: choose a folder under papermill_runs/ or outside the repository")


def _resume_command(profile, run_dir, stem, overrides, notebooks_dir) -> str:
    import shlex

    name = profile.name if isinstance(profile, Profile) and profile.path.parent == PROFILES_DIR else \
        (relative(profile.path) if isinstance(profile, Profile) else str(profile))
    words = ["python", "-m", "t2a_lib.run", "--profile", name, "--run-dir", relative(run_dir), "--from", stem]
    words += [w for k, v in (overrides or {}).items() for w in ("--set", f"{k}={json.dumps(v)}")]
    if resolve_path(notebooks_dir) != ROOT / "notebooks":
        words += ["--notebooks-dir", relative(resolve_path(notebooks_dir))]
    return " ".join(shlex.quote(w) for w in words)


def _sigterm_as_ctrl_c(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    """The command line; SIGTERM is handled as Ctrl-C while it runs."""
    import signal

    previous = signal.signal(signal.SIGTERM, _sigterm_as_ctrl_c)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m t2a_lib.run", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", required=True, help="a profile in papermill_runs/profiles (smoke, default, full, scratch, beyond, gpu, real), or a path to a .yaml")
    ap.add_argument("--from", dest="start", metavar="STAGE", help="resume from this stage (NN or stem)")
    ap.add_argument("--only", nargs="+", metavar="STAGE", help="run only these stages (NN or stem)")
    ap.add_argument("--run-dir", help="default papermill_runs/<profile>/")
    ap.add_argument("--report-dir", help="default reports/<profile>/")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a parameter (value parsed as YAML, 1e-4 as a number); KEY may be stem.name")
    ap.add_argument("--notebooks-dir", default="notebooks")
    ap.add_argument("--list", action="store_true", help="check the profile and show the stages; run nothing")
    ap.add_argument("--check", action="store_true",
                    help="check every input the profile names (checkpoints, data); exit 2 if any is absent or wrong")
    args = ap.parse_args(argv)
    try:
        overrides = parse_sets(args.set)
        if args.list or args.check:  # --check alone reads the profile, not the notebooks: seconds
            planned = plan(args.profile, overrides, args.notebooks_dir) if args.list else None
            if planned:
                print_plan(*planned)
            findings = check_inputs(planned[3] if planned else profile_params(args.profile, overrides))
            print(inputs_report(findings))
            return 2 if any(not f.ok for f in findings) else 0
        run_profile(args.profile, args.run_dir, args.report_dir, args.start, args.only, overrides,
                     args.notebooks_dir)
    except StageFailed as e:  # its error was printed when the stage failed
        return e.exit_code
    except RunnerError as e:
        print(e if isinstance(e, Interrupted) else f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # before or after the stages (checking, the report)
        print("interrupted before any stage ran or while building the report; run the same command again",
              file=sys.stderr)
        return 130
    return 0

