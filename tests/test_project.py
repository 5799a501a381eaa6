"""Project hygiene: environment files agree, notebooks are clean and paired, profiles are valid,
the two documented commands exist, and no untrusted unpickling in the library.

A required file that does not exist yet makes its test fail with a message saying so (never a
silent skip)."""
from __future__ import annotations

import ast
import re
import subprocess
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PROFILES = ROOT / "papermill_runs" / "profiles"
STEM = re.compile(r"^\d+_")
TORCH_PIN = "torch==2.13.0"
REQUIRED_PARAMS = ("run_dir", "profile", "seed")


def _require(path: Path) -> Path:
    assert path.exists(), f"required file {path.relative_to(ROOT)} does not exist (yet)"
    return path


def _pyproject() -> dict:
    return tomllib.loads(_require(ROOT / "pyproject.toml").read_text())


# ----------------------------------------------------------------------------------------------
# environment.yml == pyproject dependencies + notebooks and dev extras


def _env_pip() -> list[str]:
    env = yaml.safe_load(_require(ROOT / "environment.yml").read_text())
    pips = [d["pip"] for d in env.get("dependencies", []) if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, "environment.yml needs exactly one pip: section"
    return [str(x).strip() for x in pips[0]]


def _by_name(reqs) -> dict[str, Requirement]:
    out = {}
    for r in reqs:
        req = Requirement(r)
        name = canonicalize_name(req.name)
        assert name not in out, f"{name} listed twice"
        out[name] = req
    return out


def test_environment_yml_matches_pyproject():
    project = _pyproject()["project"]
    extras = project.get("optional-dependencies", {})
    for extra in ("notebooks", "dev"):
        assert extra in extras, f"pyproject.toml has no [{extra}] extra"
    expected = _by_name(project["dependencies"] + extras["notebooks"] + extras["dev"])
    pip = _env_pip()
    editable = [p for p in pip if p.startswith("-e")]
    listed = _by_name(p for p in pip if not p.startswith("-e"))
    assert sorted(listed) == sorted(expected), (
        f"only in environment.yml: {sorted(set(listed) - set(expected))}; "
        f"only in pyproject.toml: {sorted(set(expected) - set(listed))}")
    for name, req in expected.items():
        assert str(listed[name].specifier) == str(req.specifier), f"{name}: pins differ"
    assert str(listed["torch"]) == str(expected["torch"]) == TORCH_PIN
    assert len(editable) == 1, "environment.yml installs the package itself with one `-e .[...]` line"
    m = re.fullmatch(r"-e\s+\.\[([\w,\s-]+)\]", editable[0])
    assert m, editable[0]
    assert {x.strip() for x in m.group(1).split(",")} >= {"notebooks", "dev"}


def test_environment_yml_python_version():
    env = yaml.safe_load(_require(ROOT / "environment.yml").read_text())
    deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(re.fullmatch(r"python\s*=\s*3\.11(\.\*)?", d) for d in deps), deps
    assert "pip" in deps


# ----------------------------------------------------------------------------------------------
# notebooks


def _notebooks() -> list[Path]:
    assert NOTEBOOKS.is_dir(), "notebooks/ does not exist"
    nbs = sorted(p for p in NOTEBOOKS.glob("*.ipynb") if STEM.match(p.name))
    assert nbs, "no notebooks/NN_*.ipynb exist yet (run `make notebooks` to pair them with the .py files)"
    return nbs


def test_every_notebook_has_its_py_pair_and_vice_versa():
    assert NOTEBOOKS.is_dir(), "notebooks/ does not exist"
    py = {p.stem for p in NOTEBOOKS.glob("*.py") if STEM.match(p.name)}
    nb = {p.stem for p in NOTEBOOKS.glob("*.ipynb") if STEM.match(p.name)}
    assert py or nb, "no NN_*.py / NN_*.ipynb notebooks at all"
    assert not py - nb, f"percent-format .py without an .ipynb: {sorted(py - nb)}"
    assert not nb - py, f".ipynb without its percent-format .py: {sorted(nb - py)}"


def test_notebooks_are_committed_without_outputs():
    import nbformat
    problems = []
    for path in _notebooks():
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                if cell.get("outputs"):
                    problems.append(f"{path.name} cell {i}: has outputs")
                if cell.get("execution_count") is not None:
                    problems.append(f"{path.name} cell {i}: execution_count {cell.execution_count}")
    assert not problems, "\n".join(problems)


def test_notebooks_have_one_parameters_cell_with_the_runner_parameters():
    import nbformat
    import papermill
    problems = []
    for path in _notebooks():
        cells = nbformat.read(path, as_version=4).cells
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        if len(tagged) != 1:
            problems.append(f"{path.name}: {len(tagged)} cells tagged 'parameters' (need exactly one)")
            continue
        if tagged[0].cell_type != "code":
            problems.append(f"{path.name}: the parameters cell is not a code cell")
        declared = set(papermill.inspect_notebook(str(path)))
        missing = [p for p in REQUIRED_PARAMS if p not in declared]
        if missing:
            problems.append(f"{path.name}: parameters cell does not declare {missing}")
        # every assignment is declared: papermill skips a line it cannot parse (a comment holding " = ")
        assigned = {line.split("=")[0].strip() for line in tagged[0].source.splitlines()
                    if line and not line.startswith(("#", " ")) and "=" in line}
        if assigned - declared:
            problems.append(f"{path.name}: papermill cannot read {sorted(assigned - declared)} in the parameters cell")
    assert not problems, "\n".join(problems)


def test_notebooks_are_in_sync_with_their_percent_scripts():
    import jupytext
    problems = []
    for path in _notebooks():
        py = path.with_suffix(".py")
        if not py.exists():
            problems.append(f"{path.name}: no {py.name}")
            continue
        a = [(c.cell_type, c.source) for c in jupytext.read(path).cells]
        b = [(c.cell_type, c.source) for c in jupytext.read(py).cells]
        if a != b:
            diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            problems.append(f"{path.name} and {py.name} differ (first at cell {diff}; "
                            f"{len(a)} vs {len(b)} cells): run `make notebooks`")
    assert not problems, "\n".join(problems)


def test_percent_scripts_are_percent_format():
    pys = sorted(p for p in NOTEBOOKS.glob("*.py") if STEM.match(p.name))
    assert pys, "no notebooks/NN_*.py"
    for p in pys:
        text = p.read_text()
        assert "format_name: percent" in text, f"{p.name}: not a jupytext percent script"
        assert re.search(r'^# %% tags=\["parameters"\]', text, re.M), f"{p.name}: no tagged parameters cell"


# ----------------------------------------------------------------------------------------------
# profiles


def _profiles() -> list[Path]:
    assert PROFILES.is_dir(), "papermill_runs/profiles/ does not exist"
    paths = sorted(PROFILES.glob("*.yaml"))
    assert paths, "no papermill_runs/profiles/*.yaml yet"
    return paths


def test_documented_profiles_exist():
    names = {p.stem for p in _profiles()}
    # the Makefile's `make reproduce` (PROFILE=default) and `make smoke` need these two
    assert {"smoke", "default"} <= names, f"profiles present: {sorted(names)}"


def test_profiles_only_set_declared_parameters():
    import papermill
    nbs = {p.stem: p for p in _notebooks()}
    declared = {stem: set(papermill.inspect_notebook(str(p))) for stem, p in nbs.items()}
    problems = []
    for path in _profiles():
        data = yaml.safe_load(path.read_text()) or {}
        assert isinstance(data, dict), f"{path.name}: not a mapping"
        stages = data.get("stages") or list(nbs)
        for s in stages:
            if s not in nbs:
                problems.append(f"{path.name}: stage {s!r} is not a notebook")
        for key in (data.get("parameters") or {}):
            if key in REQUIRED_PARAMS:
                problems.append(f"{path.name}: parameters.{key} is set by the runner")
            elif not any(key in declared[s] for s in stages if s in declared):
                problems.append(f"{path.name}: parameters.{key} is declared by no notebook")
        for stem, params in (data.get("notebooks") or {}).items():
            if stem not in declared:
                problems.append(f"{path.name}: notebooks.{stem}: no such notebook")
                continue
            for key in (params or {}):
                if key not in declared[stem]:
                    problems.append(f"{path.name}: notebooks.{stem}.{key} is not declared by {stem}")
    assert not problems, "\n".join(problems)


def test_profiles_pass_the_runner_checker():
    from t2a_lib.run import profiles
    _notebooks()
    for path in _profiles():
        prof, seed, notebooks, params = profiles.plan(str(path))
        assert isinstance(seed, int)
        assert notebooks, f"{path.name}: no stages"


# ----------------------------------------------------------------------------------------------
# the two commands


def test_readme_documents_reproduce_and_test():
    text = _require(ROOT / "README.md").read_text()
    assert "make reproduce" in text, "README.md does not mention `make reproduce`"
    assert "make test" in text, "README.md does not mention `make test`"


def _code_lines(text: str) -> list[str]:
    return [ln.split("#", 1)[0].strip() for ln in text.splitlines() if ln.split("#", 1)[0].strip()]


def test_ci_runs_make_test():
    ci = _require(ROOT / ".ci" / "run")
    lines = _code_lines(ci.read_text())
    assert any(re.search(r"(^|[;&|\s])make\s+test(\s|$)", ln) for ln in lines), ".ci/run does not call `make test`"


def test_makefile_installs_pinned_torch_before_the_package():
    mk = _require(ROOT / "Makefile").read_text()
    lines = _code_lines(mk)
    installs = [i for i, ln in enumerate(lines) if re.search(r"pip\s+install", ln)]
    torch_lines = [i for i in installs if TORCH_PIN in lines[i]]
    pkg_lines = [i for i in installs if re.search(r"\s-e\s+[\"']?\.", lines[i])]
    assert torch_lines, f"Makefile does not `pip install {TORCH_PIN}`"
    assert pkg_lines, "Makefile does not `pip install -e .`"
    assert min(torch_lines) < min(pkg_lines), "torch must be installed before the package"
    assert re.search(r"^test:", mk, re.M) and re.search(r"^reproduce:", mk, re.M)
    # the pin agrees with pyproject
    deps = [Requirement(d) for d in _pyproject()["project"]["dependencies"]]
    assert [str(d) for d in deps if d.name == "torch"] == [TORCH_PIN]


def test_run_outputs_are_git_ignored_but_profiles_are_not():
    def ignored(rel):
        return subprocess.run(["git", "check-ignore", "-q", rel], cwd=ROOT).returncode == 0
    assert ignored("papermill_runs/smoke/00_world.ipynb")
    assert not ignored("papermill_runs/profiles/smoke.yaml")
    assert not ignored("notebooks/00_world.ipynb")


# ----------------------------------------------------------------------------------------------
# weights: never unpickle


def _library_sources() -> list[Path]:
    files = sorted((ROOT / "t2a_lib").rglob("*.py"))
    assert files
    return files


def test_torch_load_always_weights_only():
    problems = []
    for path in _library_sources():
        text = path.read_text()
        tree = ast.parse(text)
        calls = 0
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = (f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else "")
            base = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
            if name == "load" and base == "torch":
                calls += 1
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not ok:
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: torch.load without weights_only=True")
        # a plain-text grep as a second opinion (aliases, strings passed to eval, ...)
        code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
        n_text = len(re.findall(r"\btorch\.load\(", code))
        n_doc = len(re.findall(r"\btorch\.load\(", ast.get_docstring(tree) or ""))
        if n_text - n_doc > calls:
            for m in re.finditer(r"torch\.load\(([^)]*)\)", code):
                if "weights_only=True" not in m.group(1):
                    problems.append(f"{path.relative_to(ROOT)}: `{m.group(0)}`")
        if re.search(r"from\s+torch\s+import\s+[^\n]*\bload\b", code):
            problems.append(f"{path.relative_to(ROOT)}: imports torch.load under another name")
    assert not problems, "\n".join(problems)


def test_no_pickle_loading_in_the_library():
    problems = []
    for path in _library_sources():
        code = path.read_text()
        for pat in (r"\bpickle\.loads?\(", r"allow_pickle\s*=\s*True", r"\bjoblib\.load\(", r"\bdill\.loads?\("):
            for m in re.finditer(pat, code):
                problems.append(f"{path.relative_to(ROOT)}: {m.group(0)}")
    assert not problems, "\n".join(problems)


def test_importing_the_library_puts_numpy_and_scipy_blas_on_one_thread():
    import subprocess
    import sys

    code = ("import t2a_lib\nfrom threadpoolctl import threadpool_info\n"
            "print(sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[1]"


def _profile_yaml(name: str) -> dict:
    return yaml.safe_load((PROFILES / f"{name}.yaml").read_text())


def _with_switches(profile: dict, switches: dict) -> dict:
    """``profile`` without its description, with ``switches[stem]`` laid over each notebook's entry."""
    return {**{k: v for k, v in profile.items() if k != "description"},
            "notebooks": {stem: {**params, **switches.get(stem, {})} for stem, params in profile["notebooks"].items()}}


def _bool_switches(switches: dict) -> list[tuple[str, str]]:
    return [(stem, key) for stem, entry in switches.items() for key, v in entry.items() if isinstance(v, bool)]


def _notebook_default(stem: str, key: str):
    """A notebook parameter's default, as papermill reads it from the parameters cell."""
    import papermill

    return yaml.safe_load(papermill.inspect_notebook(str(ROOT / "notebooks" / f"{stem}.ipynb"))[key]["default"])


def test_default_is_full_less_the_models_its_budget_leaves_out():
    """`default` trains and judges fewer models than `full` and changes nothing else, so every row
    both answer is computed the same way: the models it leaves out are switched on in the notebooks
    (their defaults), in `full` and in `smoke`."""
    default, full, smoke = _profile_yaml("default"), _profile_yaml("full"), _profile_yaml("smoke")
    off = {"02_base_model": {"n_agreement": 0}, "04_dpo": {"with_sft": False, "with_crpo": False},
           "06_baton": {"with_rd": False}, "07_reproduce": {"ablations": False}}
    crpo = ("crpo_rounds", "crpo_prompts", "crpo_samples", "crpo_steps")  # CRPO's settings: unused without CRPO
    trimmed = {**full, "notebooks": {stem: {k: v for k, v in params.items() if not (stem == "04_dpo" and k in crpo)}
                                     for stem, params in full["notebooks"].items()}}
    assert _with_switches(default, {}) == _with_switches(trimmed, off)
    for stem, key in _bool_switches(off):
        assert smoke["notebooks"][stem].get(key, _notebook_default(stem, key)) is True
        assert _notebook_default(stem, key) is True, f"{stem}.{key} must default to on"


def test_beyond_is_full_plus_the_switches_that_go_beyond_the_papers():
    """KTO, the safeguarded DPO and the drift runs are off in the notebooks and in `default`, on in
    `beyond` (`full` with them, which changes nothing else) and in `smoke` (so `make test` runs them)."""
    default, full, beyond, smoke = (_profile_yaml(n) for n in ("default", "full", "beyond", "smoke"))
    switches = {"04_dpo": {"safeguard": True, "drift": True, "drift_lr": 1e-4}, "06_baton": {"with_kto": True}}
    assert _with_switches(beyond, {}) == _with_switches(full, switches)
    for stem, key in _bool_switches(switches):
        assert key not in default["notebooks"][stem] and smoke["notebooks"][stem][key] is True
        assert _notebook_default(stem, key) is False, f"{stem}.{key} must default to off"


def test_no_parameter_is_shadowed_by_an_import():
    """A parameter named like a module the notebook imports (``kto``) would be replaced by the module:
    a switch that is off would read as on."""
    import ast

    for path in _notebooks():
        tree = ast.parse(path.with_suffix(".py").read_text())
        text = path.with_suffix(".py").read_text()
        cell = text.split('# %% tags=["parameters"]', 1)[1].split("# %%", 1)[0]
        params = {t.id for node in ast.parse(cell).body if isinstance(node, ast.Assign) for t in node.targets
                  if isinstance(t, ast.Name)}
        imported = {(a.asname or a.name).split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
        assert not params & imported, f"{path.name}: parameters shadowed by imports: {sorted(params & imported)}"


# ----------------------------------------------------------------------------------------------
# layout: stage subpackages, small modules, short functions

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _subpackages() -> list[Path]:
    return sorted(p.parent for p in (ROOT / "t2a_lib").glob("*/__init__.py"))


def test_the_library_is_stage_subpackages_with_nothing_flat_beside_them():
    subs = _subpackages()
    assert len(subs) >= 4, f"t2a_lib has {len(subs)} subpackages ({', '.join(p.name for p in subs)}); at least 4 stages"
    flat = sorted(p.name for p in (ROOT / "t2a_lib").glob("*.py") if p.name != "__init__.py")
    assert not flat, f"modules outside the stage subpackages: {', '.join(flat)}"
    undocumented = [p.name for p in subs if not ast.get_docstring(ast.parse((p / "__init__.py").read_text()))]
    assert not undocumented, f"subpackages whose __init__.py has no docstring: {', '.join(undocumented)}"
    top = ast.get_docstring(ast.parse((ROOT / "t2a_lib" / "__init__.py").read_text())) or ""
    unmapped = [p.name for p in subs if f"``{p.name}``" not in top]
    assert not unmapped, f"t2a_lib/__init__.py (the map of the data flow) does not name: {', '.join(unmapped)}"


def test_each_notebook_belongs_to_one_stage_subpackage():
    """A stage's __init__ docstring names its notebooks on its first line; each notebook is named by one."""
    heads = {p.name: (ast.get_docstring(ast.parse((p / "__init__.py").read_text())) or "").splitlines()[0]
             for p in _subpackages()}
    problems = []
    for nb in _notebooks():
        owners = [name for name, head in heads.items() if nb.stem in head]
        if len(owners) != 1:
            problems.append(f"{nb.stem}: named by {owners or 'no'} subpackage docstring(s)")
    assert not problems, "\n".join(problems)


def _long_modules(paths, limit: int) -> list[str]:
    return [f"{p.relative_to(ROOT)}: {n} lines" for p in paths if (n := len(p.read_text().splitlines())) > limit]


def test_no_library_module_is_over_the_line_limit():
    long = _long_modules(_library_sources(), MAX_MODULE_LINES)
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern):\n" + "\n".join(long)


def _long_functions(path: Path, limit: int) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            if (n := node.end_lineno - start + 1) > limit:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    return out


def test_no_library_function_is_over_the_line_limit():
    """The whole def counts: decorators, signature, docstring, body (nested functions too)."""
    long = [f for p in _library_sources() for f in _long_functions(p, MAX_FUNCTION_LINES)]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split into named helpers):\n" + "\n".join(long)


def test_the_limits_find_offenders():
    """The two limit checks report what they should: a 61-line function and a 401-line module."""
    import tempfile

    body = "".join(f"    x{i} = {i}\n" for i in range(59))
    with tempfile.TemporaryDirectory(dir=ROOT / "tests") as d:
        path = Path(d) / "long.py"
        path.write_text(f"def f():\n{body}    return 0\n" + "\n" * (MAX_MODULE_LINES - 60))
        assert [s.split(" ", 1)[1] for s in _long_functions(path, MAX_FUNCTION_LINES)] == ["f: 61 lines"]
        assert [s.split(": ")[1] for s in _long_modules([path], MAX_MODULE_LINES)] == [f"{MAX_MODULE_LINES + 1} lines"]
        path.write_text(f"@staticmethod\ndef f():\n{body}")
        assert [s.split(" ", 1)[1] for s in _long_functions(path, MAX_FUNCTION_LINES)] == ["f: 61 lines"]
