"""A content-keyed disk cache: results stored under a hash of everything they were computed from, so a
rerun with the same inputs reads them back and changed inputs compute afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

def content_key(*args: Any) -> str:
    """sha256 over the inputs: arrays (and tensors) by dtype, shape and bytes; others by repr."""
    h = hashlib.sha256()
    for x in args:
        if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
            x = x.detach().cpu().numpy()
        if isinstance(x, np.ndarray):
            h.update(f"ndarray|{x.dtype.str}|{x.shape}|".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        else:
            h.update(f"{type(x).__name__}|{x!r}|".encode())
    return h.hexdigest()


def cached(cache_dir: str | os.PathLike, key: str, compute_fn: Callable[[], Any]) -> Any:
    """Return the result stored under ``key`` in ``cache_dir``, computing and storing it if absent.

    Arrays, tuples of arrays and dicts of arrays go to ``<key>.npz``; anything else must be
    JSON-serialisable and goes to ``<key>.json``. Key the cache with ``content_key`` of every
    input so a stored result can never be stale. Writes are atomic (a unique temporary file, then
    a rename), and a miss returns what it stored read back, so a hit and a miss return the same
    types, dtypes and values (tuples of non-arrays come back as lists, dict keys as strings).
    """
    if not key or any(ch in key for ch in "/\\") or key.startswith("."):
        raise ValueError(f"cache key must be a plain file name, got {key!r}")
    d = Path(cache_dir)
    npz, js = d / f"{key}.npz", d / f"{key}.json"
    if not npz.exists() and not js.exists():
        _store(d, key, compute_fn())
    return _read_npz(npz) if npz.exists() else _read_cache_json(js)


def _store(d: Path, key: str, result: Any) -> None:
    """Write ``result`` as ``<key>.npz`` (arrays) or ``<key>.json``, atomically."""
    import tempfile

    arrays = _npz_items(result)
    d.mkdir(parents=True, exist_ok=True)
    suffix = ".npz" if arrays else ".json"
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{key}.", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            if arrays:
                np.savez(f, **arrays)
            else:
                f.write(json.dumps(result).encode())
        os.replace(tmp, d / f"{key}{suffix}")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _npz_items(result: Any) -> dict | None:
    """The members of ``<key>.npz`` for an array, a tuple or a dict of arrays; None for JSON."""
    if isinstance(result, np.ndarray):
        kind, items = "array", {"value": result}
    elif isinstance(result, tuple) and result and all(isinstance(r, np.ndarray) for r in result):
        kind, items = "tuple", {str(i): r for i, r in enumerate(result)}
    elif isinstance(result, dict) and result and all(isinstance(v, np.ndarray) for v in result.values()):
        if "__kind__" in result:
            raise ValueError("'__kind__' is reserved in cached dicts")
        kind, items = "dict", {str(k): v for k, v in result.items()}
    else:
        return None
    if any(v.dtype.hasobject for v in items.values()):
        raise TypeError("cached arrays must hold numbers, not Python objects (they are stored without pickle)")
    return {"__kind__": np.array(kind), **items}


def _read_npz(npz: Path) -> Any:
    try:
        with np.load(npz, allow_pickle=False) as z:
            kind = str(z["__kind__"])
            items = {k: z[k] for k in z.files if k != "__kind__"}
    except (ValueError, OSError, EOFError, KeyError) as e:  # truncated zip, bad member
        raise ValueError(f"{npz}: corrupt cache file ({e}); delete it to recompute") from None
    if kind == "array":
        return items["value"]
    if kind == "tuple":
        return tuple(items[str(i)] for i in range(len(items)))
    return items


def _read_cache_json(js: Path) -> Any:
    from ..run.files import read_json

    return read_json(js, "cache file")
