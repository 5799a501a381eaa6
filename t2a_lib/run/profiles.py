"""Profiles and the plan of a run: which notebooks run, with which checked parameters.

A profile (``papermill_runs/profiles/<name>.yaml``) names a seed, global ``parameters`` and per-notebook
entries; ``plan`` loads one, finds the ordered ``NN_name.ipynb`` stages and checks every parameter
against the notebooks' ``parameters`` cells (``params.RANGES`` for ranges) before anything runs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .params import check_values, numbers, parse_value
from .sources import check_pairs, paired_only

ROOT = Path(__file__).resolve().parents[2]
PROFILES_DIR = ROOT / "papermill_runs" / "profiles"
REQUIRED = ("run_dir", "profile", "seed")
PROFILE_KEYS = ("description", "seed", "parameters", "notebooks", "stages")
STEM = re.compile(r"^\d\d_\w+$")


class RunnerError(Exception):
    """A bad configuration, refused before anything runs (exit status 2)."""
    exit_code = 2


@dataclass
class Profile:
    name: str
    path: Path
    description: str = ""
    seed: int = 0
    parameters: dict = field(default_factory=dict)
    notebooks: dict = field(default_factory=dict)
    stages: list | None = None


def resolve_path(path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else ROOT / path


def relative(path) -> str:
    """A path relative to the repository root where it lies inside it, else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def load_profile(name_or_path) -> Profile:
    """Load ``papermill_runs/profiles/<name>.yaml``, or a profile file given by path."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    text = str(name_or_path)
    is_path = text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text
    path = resolve_path(text) if is_path else PROFILES_DIR / f"{text}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))) or "none"
        raise RunnerError(f"profile file not found: {path} (profiles in {relative(PROFILES_DIR)}: {known})")
    data = _read_yaml(path)
    where = relative(path)

    def check(ok, message):
        if not ok:
            raise RunnerError(f"{where}: {message}")

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


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1}); YAML would silently "
                                f"keep only the last one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path):
    """The profile's YAML: a syntax error or a duplicate key names the file and line, an empty file is refused."""
    try:
        data = yaml.load(path.read_text(), Loader=_StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        why = " ".join(str(getattr(e, "problem", None) or e).split())
        raise RunnerError(f"{path}: bad YAML{line}: {why}") from None
    if data is None or data == {}:
        raise RunnerError(f"{path}: the profile is empty; give at least a seed or a description "
                          f"(an empty profile would silently run every notebook's defaults)")
    return data


def discover_notebooks(notebooks_dir) -> dict[str, Path]:
    """The ordered stages available: ``{stem: path}`` of the sorted ``NN_*.ipynb`` files (in a folder of
    paired notebooks, only those with their ``.py`` source: a stray copy is ignored with a warning)."""
    paths = sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    return paired_only({p.stem: p for p in paths if STEM.match(p.stem)}, Path(notebooks_dir), relative)


def resolve_stage(ref: str, stages: list[str]) -> str:
    """A stage given by stem (``01_judges``) or by number (``01``)."""
    if ref in stages:
        return ref
    hits = [s for s in stages if s.split("_", 1)[0] == str(ref).zfill(2)]
    if len(hits) != 1:
        why = "is ambiguous" if hits else "matches no stage"
        raise RunnerError(f"stage {ref!r} {why}; stages: {', '.join(stages)}")
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
            problems.append(f"{relative(path)}: has {n_tagged} cells tagged 'parameters' (exactly one needed)")
        elif missing:
            problems.append(f"{relative(path)}: its parameters cell does not declare {', '.join(missing)} "
                            f"(every notebook declares {', '.join(REQUIRED)})")
    if problems:
        raise RunnerError("bad notebooks:\n  " + "\n  ".join(problems))
    return declared


def check_parameters(profile: Profile, declared: dict[str, dict], overrides: dict | None = None
                     ) -> dict[str, dict]:
    """The parameters each stage receives besides run_dir/profile/seed.

    Raises RunnerError naming every key that its target notebook(s) do not declare:
    per-notebook keys, global keys no stage declares, ``--set`` keys (``name`` or ``stem.name``).
    """
    where, stages = relative(profile.path), list(declared)

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
        raise RunnerError("refusing to run; unknown parameters:\n  " + "\n  ".join(problems))
    params = {s: {**{k: v for k, v in glob.items() if k in declared[s]}, **per.get(s, {})} for s in stages}
    given_globally = {s: {k: v for k, v in glob.items() if k in declared[s]} for s in stages}
    bad = list(dict.fromkeys(check_values(declared, given_globally) + check_values(declared, params)))
    if bad:
        raise RunnerError(f"refusing to run (profile {where}); bad parameter values:\n  " + "\n  ".join(bad))
    return params


def plan(profile, overrides=None, notebooks_dir="notebooks"):
    """Load and check everything without running: (profile, seed, {stem: path}, {stem: params})."""
    prof = load_profile(profile)
    overrides = dict(overrides or {})
    for key in ("run_dir", "profile"):
        if key in overrides:
            raise RunnerError(f"--set {key}: use --{key.replace('_', '-')} instead")
    seed = overrides.pop("seed", prof.seed)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise RunnerError(f"--set seed: must be an integer, got {seed!r}")
    nb_dir = resolve_path(notebooks_dir)
    available = discover_notebooks(nb_dir)
    if not available:
        raise RunnerError(f"no NN_name.ipynb notebooks in {nb_dir}")
    stems = prof.stages if prof.stages is not None else list(available)
    missing = [s for s in stems if s not in available]
    if missing:
        raise RunnerError(f"{relative(prof.path)}: stages {', '.join(missing)} not found in {relative(nb_dir)} "
                            f"(notebooks: {', '.join(available)})")
    notebooks = {s: available[s] for s in stems}
    stale = check_pairs(notebooks, relative)
    if stale:
        raise RunnerError("refusing to run a notebook that differs from its .py source:\n  " + "\n  ".join(stale))
    params = check_parameters(prof, declared_parameters(notebooks), overrides)
    return prof, seed, notebooks, params


def parse_sets(items) -> dict:
    overrides = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise RunnerError(f"--set {item!r}: expected key=value")
        overrides[key.strip()] = parse_value(value)
    return overrides


def print_plan(prof, seed, notebooks, params):
    print(f"profile {prof.name} ({relative(prof.path)}), seed {seed}: {prof.description}")
    for i, (stem, p) in enumerate(params.items(), 1):
        given = ", ".join(f"{k}={v!r}" for k, v in p.items()) or "(defaults)"
        print(f"  [{i}/{len(params)}] {stem}  {given}")
