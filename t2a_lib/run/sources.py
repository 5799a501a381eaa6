"""The notebooks a run executes, checked against their sources before anything runs.

- A notebook's ``.py`` (jupytext percent format) is its source: an ``.ipynb`` whose cells differ
  from it is stale and refused, naming the first cell that differs and the command that
  regenerates it.
- In a folder of paired notebooks, an ``NN_name.ipynb`` without its ``.py`` (a stray copy such as
  ``04_dpo_copy.ipynb``) is not a stage: it is ignored, with a warning naming it.
- A run or report folder inside the source tree (the repository root, ``notebooks/``,
  ``t2a_lib/``, ...) is refused: the executed copies would overwrite the sources.
"""
from __future__ import annotations

import sys
from pathlib import Path

SOURCE_DIRS = ("notebooks", "t2a_lib", "tests", "releases", "docs", "scripts", ".git", "papermill_runs/profiles")


def paired_only(found: dict[str, Path], notebooks_dir: Path, relative=str) -> dict[str, Path]:
    """``found`` without the notebooks that lack a ``.py`` source, when the folder holds any pair."""
    paired = {s: p for s, p in found.items() if p.with_suffix(".py").is_file()}
    if not paired:  # a folder of bare notebooks (no .py sources at all): every notebook is a stage
        return found
    for stem, path in found.items():
        if stem not in paired:
            print(f"warning: ignoring {relative(path)}: no {path.with_suffix('.py').name} beside it, so it is "
                  f"not a stage (stages are the paired notebooks of {relative(notebooks_dir)})", file=sys.stderr)
    return paired


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells if c.cell_type in ("code", "markdown")]


def pair_problem(ipynb: Path, relative=str) -> str | None:
    """Why ``ipynb`` does not hold the cells of its ``.py`` source, or None (or no ``.py``)."""
    import jupytext
    import nbformat

    source = ipynb.with_suffix(".py")
    if not source.is_file():
        return None
    want, have = _cells(jupytext.read(source)), _cells(nbformat.read(ipynb, as_version=4))
    if want == have:
        return None
    i = next((i for i, (a, b) in enumerate(zip(want, have)) if a != b), min(len(want), len(have)))
    what = (f"cell {i + 1} differs" if i < min(len(want), len(have))
            else f"the .py has {len(want)} cells, the .ipynb {len(have)}")
    return (f"{relative(ipynb)} is out of date with its source {relative(source)} ({what}); regenerate it with "
            f"`jupytext --to ipynb {relative(source)}` (or `make notebooks`)")


def check_pairs(notebooks: dict[str, Path], relative=str) -> list[str]:
    """One line per stage notebook that disagrees with its ``.py``."""
    return [p for p in (pair_problem(path, relative) for path in notebooks.values()) if p]


def inside_sources(folder: Path, root: Path, notebooks_dir: Path) -> str | None:
    """The source folder that ``folder`` lies in (or is, or contains), or None."""
    folder = folder.resolve()
    if folder == root.resolve() or root.resolve().is_relative_to(folder):
        return str(root)
    for src in [notebooks_dir, *(root / d for d in SOURCE_DIRS)]:
        if folder.is_relative_to(Path(src).resolve()):
            return str(src)
    return None
