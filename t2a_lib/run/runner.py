"""Run the notebooks of a profile in order with papermill, then build the report.

    python -m t2a_lib.pipeline --profile smoke
    python -m t2a_lib.pipeline --profile default --from 03 --set n_steps=200
    python -m t2a_lib.pipeline --profile smoke --list        # show the plan, run nothing

Stages are the sorted ``notebooks/NN_name.ipynb`` files (or the profile's ``stages`` list).
Every notebook receives ``run_dir``, ``profile`` and ``seed``, plus the profile's global
``parameters`` that it declares and its own ``notebooks.<stem>`` entries; a name that no
notebook declares is refused before anything runs, and so is a value of the wrong type (the
notebook's default says which) or out of range (``t2a_lib.params.RANGES``), naming the
parameter (exit status 2; ``--set lr=1e-4`` is a float). Ctrl-C, or SIGTERM (``kill``, a job
scheduler's time limit), ends with one line naming the interrupted stage and the command that
resumes it (exit status 130).

Paths: relative paths (profile files, notebooks_dir, run_dir, report_dir) are taken from the
repository root, and every notebook runs with the repository root as its working directory,
so a notebook can use ``run_dir`` (e.g. ``papermill_runs/smoke``) exactly as it receives it.
The executed copy of each stage goes to ``<run_dir>/<stem>.ipynb``; the notebook itself
writes ``<run_dir>/<stem>.json``; the runner keeps ``<run_dir>/pipeline.json`` (status, wall
time, start time and parameters of each stage). Nothing in run_dir is ever deleted.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from t2a_lib.params import check_values, numbers, parse_value

ROOT = Path(__file__).resolve().parents[1]
PROFILES_DIR = ROOT / "papermill_runs" / "profiles"
REQUIRED = ("run_dir", "profile", "seed")
PROFILE_KEYS = ("description", "seed", "parameters", "notebooks", "stages")
STEM = re.compile(r"^\d\d_\w+$")


class PipelineError(Exception):
    """A bad configuration, refused before anything runs (exit status 2)."""
    exit_code = 2


class Interrupted(PipelineError):
    """Ctrl-C (or SIGTERM) while running; the message says what stopped and how to resume."""
    exit_code = 130


class StageFailed(PipelineError):
    """A stage raised (exit status 1); ``result`` is what run_pipeline would have returned."""
    exit_code = 1

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result


@dataclass
class Profile:
    name: str
    path: Path
    description: str = ""
    seed: int = 0
    parameters: dict = field(default_factory=dict)
    notebooks: dict = field(default_factory=dict)
    stages: list | None = None


def _resolve(path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else ROOT / path


def _rel(path) -> str:
    """A path relative to the repository root where it lies inside it, else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def load_profile(name_or_path) -> Profile:
    """Load ``papermill_runs/profiles/<name>.yaml``, or a profile file given by path."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    text = str(name_or_path)
    is_path = text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text
    path = _resolve(text) if is_path else PROFILES_DIR / f"{text}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))) or "none"
        raise PipelineError(f"profile file not found: {path} (profiles in {_rel(PROFILES_DIR)}: {known})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise PipelineError(f"{path}: bad YAML: {e}") from None
    where = _rel(path)

    def check(ok, message):
        if not ok:
            raise PipelineError(f"{where}: {message}")

    check(isinstance(data, dict), f"a profile must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(PROFILE_KEYS))
    check(not unknown, f"unknown top-level key(s) {', '.join(unknown)}; allowed: {', '.join(PROFILE_KEYS)}")
    seed, params = data.get("seed", 0), numbers(data.get("parameters") or {})
    notebooks, stages = numbers(data.get("notebooks") or {}), data.get("stages")
    check(isinstance(seed, int) and not isinstance(seed, bool), f"seed must be an integer, got {seed!r}")
    check(isinstance(params, dict), "'parameters' must be a mapping of name: value")
    check(isinstance(notebooks, dict) and all(isinstance(v, dict) or v is None for v in notebooks.values()),
          "'notebooks' must map each notebook stem to a mapping of name: value")
    check(stages is None or isinstance(stages, list) and all(isinstance(s, str) for s in stages),
          "'stages' must be a list of notebook stems")
    notebooks = {str(k): dict(v or {}) for k, v in notebooks.items()}
    for label, mapping in [("parameters", params)] + [(f"notebooks.{k}", v) for k, v in notebooks.items()]:
        for key in set(mapping) & set(REQUIRED):
            check(False, f"{label}.{key} cannot be set here "
                         f"({'use the top-level seed' if key == 'seed' else 'the runner sets it'})")
    return Profile(path.stem, path, str(data.get("description") or ""), seed, dict(params), notebooks, stages)


def discover_notebooks(notebooks_dir) -> dict[str, Path]:
    """The ordered stages available: ``{stem: path}`` of the sorted ``NN_*.ipynb`` files."""
    paths = sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    return {p.stem: p for p in paths if STEM.match(p.stem)}


def resolve_stage(ref: str, stages: list[str]) -> str:
    """A stage given by stem (``01_judges``) or by number (``01``)."""
    if ref in stages:
        return ref
    hits = [s for s in stages if s.split("_", 1)[0] == str(ref).zfill(2)]
    if len(hits) != 1:
        why = "is ambiguous" if hits else "matches no stage"
        raise PipelineError(f"stage {ref!r} {why}; stages: {', '.join(stages)}")
    return hits[0]


def declared_parameters(notebooks: dict[str, Path]) -> dict[str, dict]:
    """``{stem: {name: info}}`` read from each notebook's ``parameters`` cell."""
    import nbformat
    import papermill

    declared, problems = {}, []
    for stem, path in notebooks.items():
        cells = nbformat.read(path, as_version=4).cells
        n_tagged = sum("parameters" in c.get("metadata", {}).get("tags", []) for c in cells)
        declared[stem] = {p["name"]: p for p in papermill.inspect_notebook(str(path)).values()}
        missing = [k for k in REQUIRED if k not in declared[stem]]
        if n_tagged != 1:
            problems.append(f"{_rel(path)}: has {n_tagged} cells tagged 'parameters' (exactly one needed)")
        elif missing:
            problems.append(f"{_rel(path)}: its parameters cell does not declare {', '.join(missing)} "
                            f"(every notebook declares {', '.join(REQUIRED)})")
    if problems:
        raise PipelineError("bad notebooks:\n  " + "\n  ".join(problems))
    return declared


def check_parameters(profile: Profile, declared: dict[str, dict], overrides: dict | None = None
                     ) -> dict[str, dict]:
    """The parameters each stage receives besides run_dir/profile/seed.

    Raises PipelineError naming every key that its target notebook(s) do not declare:
    per-notebook keys, global keys no stage declares, ``--set`` keys (``name`` or ``stem.name``).
    """
    where, stages = _rel(profile.path), list(declared)

    def names(stems):
        return "; ".join(f"{s}: {', '.join(sorted(declared[s]))}" for s in stems)

    def check_one(label, stem, key):
        if stem not in declared:
            return f"{label}: {stem!r} is not a stage of this profile (stages: {', '.join(stages)})"
        if key not in declared[stem]:
            return f"{label}: notebook {stem} does not declare {key!r}; it declares {names([stem])}"

    problems = []
    for key in profile.parameters:
        if not any(key in d for d in declared.values()):
            problems.append(f"{where}: parameters.{key}: no stage declares {key!r}; declared: {names(stages)}")
    for stem, params in profile.notebooks.items():
        if stem not in declared:  # once per notebook, not once per key
            problems.append(f"{where}: notebooks.{stem}: no such notebook among the stages "
                            f"({', '.join(stages)}); was it deleted or renamed?")
            continue
        problems += [check_one(f"{where}: notebooks.{stem}.{key}", stem, key) for key in params]
    glob, per = dict(profile.parameters), {k: dict(v) for k, v in profile.notebooks.items()}
    for key, value in (overrides or {}).items():
        stem, _, name = key.rpartition(".")
        if stem:
            problems.append(check_one(f"--set {key} (profile {where})", stem, name))
            per.setdefault(stem, {})[name] = value
        else:
            if not any(key in d for d in declared.values()):
                problems.append(f"--set {key}: no stage of profile {where} declares {key!r}; "
                                f"declared: {names(stages)}")
            glob[key] = value
    problems = [p for p in problems if p]
    if problems:
        raise PipelineError("refusing to run; unknown parameters:\n  " + "\n  ".join(problems))
    params = {s: {**{k: v for k, v in glob.items() if k in declared[s]}, **per.get(s, {})} for s in stages}
    given_globally = {s: {k: v for k, v in glob.items() if k in declared[s]} for s in stages}
    bad = list(dict.fromkeys(check_values(declared, given_globally) + check_values(declared, params)))
    if bad:
        raise PipelineError(f"refusing to run (profile {where}); bad parameter values:\n  " + "\n  ".join(bad))
    return params


def plan(profile, overrides=None, notebooks_dir="notebooks"):
    """Load and check everything without running: (profile, seed, {stem: path}, {stem: params})."""
    prof = load_profile(profile)
    overrides = dict(overrides or {})
    for key in ("run_dir", "profile"):
        if key in overrides:
            raise PipelineError(f"--set {key}: use --{key.replace('_', '-')} instead")
    seed = overrides.pop("seed", prof.seed)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise PipelineError(f"--set seed: must be an integer, got {seed!r}")
    nb_dir = _resolve(notebooks_dir)
    available = discover_notebooks(nb_dir)
    if not available:
        raise PipelineError(f"no NN_name.ipynb notebooks in {nb_dir}")
    stems = prof.stages if prof.stages is not None else list(available)
    missing = [s for s in stems if s not in available]
    if missing:
        raise PipelineError(f"{_rel(prof.path)}: stages {', '.join(missing)} not found in {_rel(nb_dir)} "
                            f"(notebooks: {', '.join(available)})")
    notebooks = {s: available[s] for s in stems}
    params = check_parameters(prof, declared_parameters(notebooks), overrides)
    return prof, seed, notebooks, params


def _describe_failure(stem, src, out, err) -> str:
    """Which notebook, which cell (counted in the source notebook), the exception."""
    import nbformat
    cells = nbformat.read(src, as_version=4).cells
    idx = next((i for i, c in enumerate(cells) if c.source == err.source), None)
    where = (f"cell {idx + 1} (index {idx})" if idx is not None
             else f"cell index {err.cell_index} of the executed copy")
    lines = [line for line in err.source.splitlines() if line.strip()][:3]
    return (f"stage {stem} failed in {where} of {_rel(src)}:\n"
            + "".join(f"      | {line}\n" for line in lines)
            + f"    {err.ename}: {err.evalue}\n    executed notebook: {_rel(out)}")


def run_pipeline(profile, run_dir=None, report_dir=None, start=None, only=None, overrides=None,
                 notebooks_dir="notebooks", kernel_name="python3", report=True) -> dict:
    """Run the profile's stages (from ``start``, or only ``only``), record them, build the report.

    Returns ``{"profile", "status", "failed", "run_dir", "report", "stages": [records]}``;
    raises PipelineError on a bad configuration (nothing run) and StageFailed when a stage fails
    (its ``result`` holds the same dict; earlier outputs are kept, the report is still built).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    prof, seed, notebooks, params = plan(profile, overrides, notebooks_dir)
    stems = list(notebooks)
    todo = stems[stems.index(resolve_stage(str(start), stems)):] if start is not None else stems
    if only:
        wanted = {resolve_stage(str(o), stems) for o in only}
        todo = [s for s in todo if s in wanted]
    if not todo:
        raise PipelineError("nothing to run: --from/--only select no stage")
    run_dir = _resolve(run_dir or f"papermill_runs/{prof.name}")
    report_dir = _resolve(report_dir or f"reports/{prof.name}")
    _check_writable(run_dir)
    state_path = run_dir / "pipeline.json"
    try:
        old = json.loads(state_path.read_text()) if state_path.is_file() else {}
    except ValueError as e:
        raise PipelineError(f"{state_path}: unreadable records ({e}); move it aside to start afresh") from None
    if old.get("profile") not in (None, prof.name):
        print(f"warning: {_rel(state_path)} holds records of profile {old['profile']!r}", file=sys.stderr)
    records = {r["stage"]: r for r in old.get("stages", [])}
    given = {**prof.parameters, **{k: v for k, v in (overrides or {}).items() if k != "seed"}}
    state = {"profile": prof.name, "profile_file": _rel(prof.path), "description": prof.description,
             "seed": seed, "parameters": given, "run_dir": _rel(run_dir),
             "notebooks_dir": _rel(_resolve(notebooks_dir)), "status": "running"}

    def save():
        order = stems + [s for s in records if s not in stems]
        state.update(updated=datetime.now().astimezone().isoformat(timespec="seconds"),
                     stages=[records[s] for s in order if s in records])
        tmp = state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2, default=str) + "\n")
        tmp.replace(state_path)

    failure, t_all = None, time.perf_counter()
    for stem in todo:
        n = f"[{stems.index(stem) + 1}/{len(stems)}]"
        out = run_dir / f"{stem}.ipynb"
        full = {"run_dir": _rel(run_dir), "profile": prof.name, "seed": seed, **params[stem]}
        rec = records[stem] = {"stage": stem, "status": "running", "seconds": None,
                               "started": datetime.now().astimezone().isoformat(timespec="seconds"),
                               "parameters": full, "notebook": _rel(out), "figures": None}
        save()
        print(f"{n} {stem} ...", flush=True)
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(str(notebooks[stem]), str(out), parameters=full,
                                       kernel_name=kernel_name, progress_bar=True, cwd=str(ROOT))
        except (KeyboardInterrupt, PapermillExecutionError) as e:
            if isinstance(e, PapermillExecutionError) and e.ename != "KeyboardInterrupt":
                failure = _describe_failure(stem, notebooks[stem], out, e)
            else:  # Ctrl-C reaches the kernel too: its cell then fails with KeyboardInterrupt
                rec.update(status="interrupted", seconds=round(time.perf_counter() - t0, 3))
                state["status"] = "interrupted"
                save()
                raise Interrupted(f"interrupted: stage {stem} stopped after {rec['seconds']:.1f} s (outputs so "
                                  f"far kept in {_rel(run_dir)}); resume with: "
                                  f"{_resume_command(profile, run_dir, stem, overrides, notebooks_dir)}") from None
        except Exception as e:  # kernel missing or died, unreadable notebook, ...
            failure = f"stage {stem} could not run {_rel(notebooks[stem])}: {type(e).__name__}: {e}"
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        if failure:
            rec.update(status="failed", error=failure)
            for later in todo[todo.index(stem) + 1:]:
                records[later] = {"stage": later, "status": "not run", "seconds": None, "started": None,
                                  "parameters": None, "reason": f"{stem} failed"}
            print(f"{n} {stem} FAILED after {rec['seconds']:.1f} s", flush=True)
            break
        figures = run_dir / f"{stem}.json"
        if figures.is_file():
            rec["figures"] = _rel(figures)
        else:
            rec["warnings"] = [f"the notebook did not write {_rel(figures)}"]
            print(f"warning: {stem} did not write {_rel(figures)}", file=sys.stderr)
        rec["status"] = "ok"
        save()
        print(f"{n} {stem} ok ({rec['seconds']:.1f} s)", flush=True)

    state["status"] = "failed" if failure else "ok"
    save()
    result = {"profile": prof.name, "status": state["status"], "failed": stem if failure else None,
              "seconds": round(time.perf_counter() - t_all, 3), "run_dir": run_dir,
              "report_dir": report_dir, "report": None, "stages": state["stages"]}
    if report:
        from t2a_lib.report import build_report
        try:
            result["report"] = build_report(run_dir, report_dir, prof.name)
            print(f"report: {result['report']}", flush=True)
        except Exception as e:  # a broken report must not hide the stage results
            print(f"warning: the report could not be built: {type(e).__name__}: {e}", file=sys.stderr)
    if failure:
        raise StageFailed(failure, result)
    print(f"done: {len(todo)} stage(s) in {result['seconds']:.1f} s; records in {_rel(state_path)}")
    return result


def _check_writable(run_dir: Path) -> None:
    """Create ``run_dir`` and write a file in it, or refuse (exit 2) naming the folder."""
    import tempfile

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-check-"):
            pass
    except OSError as e:
        raise PipelineError(f"cannot write the run folder {run_dir}: {e.strerror or e}; make it writable "
                            f"or choose another with --run-dir") from None


def _resume_command(profile, run_dir, stem, overrides, notebooks_dir) -> str:
    import shlex

    name = profile.name if isinstance(profile, Profile) and profile.path.parent == PROFILES_DIR else \
        (_rel(profile.path) if isinstance(profile, Profile) else str(profile))
    words = ["python", "-m", "t2a_lib.pipeline", "--profile", name, "--run-dir", _rel(run_dir), "--from", stem]
    words += [w for k, v in (overrides or {}).items() for w in ("--set", f"{k}={json.dumps(v)}")]
    if _resolve(notebooks_dir) != ROOT / "notebooks":
        words += ["--notebooks-dir", _rel(_resolve(notebooks_dir))]
    return " ".join(shlex.quote(w) for w in words)


def _parse_sets(items) -> dict:
    overrides = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise PipelineError(f"--set {item!r}: expected key=value")
        overrides[key.strip()] = parse_value(value)
    return overrides


def _print_plan(prof, seed, notebooks, params):
    print(f"profile {prof.name} ({_rel(prof.path)}), seed {seed}: {prof.description}")
    for i, (stem, p) in enumerate(params.items(), 1):
        given = ", ".join(f"{k}={v!r}" for k, v in p.items()) or "(defaults)"
        print(f"  [{i}/{len(params)}] {stem}  {given}")


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
    ap = argparse.ArgumentParser(prog="python -m t2a_lib.pipeline", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", required=True, help="smoke|default|gpu|real, or a path to a profile .yaml")
    ap.add_argument("--from", dest="start", metavar="STAGE", help="resume from this stage (NN or stem)")
    ap.add_argument("--only", nargs="+", metavar="STAGE", help="run only these stages (NN or stem)")
    ap.add_argument("--run-dir", help="default papermill_runs/<profile>/")
    ap.add_argument("--report-dir", help="default reports/<profile>/")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a parameter (value parsed as YAML, 1e-4 as a number); KEY may be stem.name")
    ap.add_argument("--notebooks-dir", default="notebooks")
    ap.add_argument("--list", action="store_true", help="check the profile and show the stages; run nothing")
    args = ap.parse_args(argv)
    try:
        overrides = _parse_sets(args.set)
        if args.list:
            _print_plan(*plan(args.profile, overrides, args.notebooks_dir))
            return 0
        run_pipeline(args.profile, args.run_dir, args.report_dir, args.start, args.only, overrides,
                     args.notebooks_dir)
    except PipelineError as e:
        print(e if isinstance(e, Interrupted) else f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # before or after the stages (checking, the report)
        print("interrupted before any stage ran or while building the report; run the same command again",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
