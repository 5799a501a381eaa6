"""Small file helpers whose errors name the file: JSON records and safetensors weights, read
and written the one way (writes atomic: a unique temporary name in the folder, then a rename)."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path


class CorruptFileError(ValueError):
    """A file that exists but cannot be read (truncated, not JSON, not safetensors); names it."""


def read_json(path, what: str = "record"):
    """``json.loads`` of ``path``; a truncated or non-JSON file raises ``CorruptFileError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise CorruptFileError(f"{path}: corrupt {what} ({e}); delete it (or its folder) to rebuild") from None


def write_json(path, obj, indent: int | None = None) -> None:
    """Write ``obj`` as JSON atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent))


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to a temporary file unique to this process and call, then rename it over
    ``path``; on any failure (a full disk) the temporary file is removed and ``path`` is untouched."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with open(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rewrite_in_place(path, text: str) -> bool:
    """Overwrite an existing ``path`` with ``text`` in its own blocks (no new file, so it works on a
    full disk) when ``text`` is no longer than the file; True when written."""
    path = Path(path)
    data = text.encode("utf-8")
    if not path.is_file() or len(data) > path.stat().st_size:
        return False
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate(len(data))
    return True


def swap_in_folder(built: Path, final: Path) -> None:
    """Replace the folder ``final`` by the complete folder ``built`` (renames in one parent, so a
    reader never sees half of each); the old folder is removed after."""
    import shutil

    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(built, final)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def weights_named(path):
    """Re-raise a failure to read saved weights at ``path`` (file or folder) as
    ``CorruptFileError`` naming it (safetensors, diffusers and transformers name nothing)."""
    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, OSError, ValueError, RuntimeError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CorruptFileError(f"{path}: corrupt weights ({first}); {repair_advice(path)}") from None


RELEASES = Path(__file__).resolve().parents[2] / "releases"


def repair_advice(path) -> str:
    """What to do about a damaged file: a committed release file is restored with git (deleting
    it would lose the release); anything a run wrote is deleted and rebuilt."""
    path = Path(path).resolve()
    if path.is_relative_to(RELEASES):
        return "it is a release file: " + git_restore_advice(path.relative_to(RELEASES.parent).as_posix())
    return "delete it to retrain"


def git_restore_advice(rel: str) -> str:
    return f"restore it with `git checkout -- {rel}` (or rebuild the release with `make base`)"


def load_safetensors(path) -> dict:
    """``safetensors.torch.load_file`` on CPU; a truncated or foreign file raises naming it."""
    from safetensors.torch import load_file

    with weights_named(path):
        return load_file(str(path), device="cpu")


# ----------------------------------------------------------------------------- one way to train or load

def plain(obj):
    """``obj`` as JSON reads it back (tuples become lists, keys strings): what a key compares as."""
    return json.loads(json.dumps(obj, default=str))


def load_fit(folder, key: dict, needs: tuple[str, ...] = ()) -> dict | None:
    """The record in ``folder/fit.json`` (without its key) when it was written for ``key`` and the
    artifacts ``needs`` (names in ``folder``) exist; otherwise None: train, then :func:`save_fit`.

    ``key`` holds everything the artifact depends on: its config *and* a fingerprint of its
    training data's content, so a model trained on other data is never loaded."""
    path = Path(folder) / "fit.json"
    if not path.exists():
        return None
    fit = read_json(path, "fit record")
    if not isinstance(fit, dict) or fit.get("key") != plain(key) or not all((Path(folder) / n).exists() for n in needs):
        return None
    return {k: v for k, v in fit.items() if k != "key"}


def save_fit(folder, key: dict, **record) -> dict:
    """Write ``folder/fit.json`` = ``{"key": key, **record}`` atomically (after the artifact itself,
    so its presence means the artifact is complete); returns ``record`` as a later load reads it."""
    write_json(Path(folder) / "fit.json", {"key": plain(key), **plain(record)}, indent=1)
    return plain(record)


SAFETENSORS_DTYPES = {"<f4": "F32", "<f2": "F16", "<f8": "F64", "<i8": "I64", "<i4": "I32"}


class StreamingSafetensors:
    """A safetensors file written tensor by tensor, holding none of them in memory: each tensor's bytes
    are appended to ``<path>.data.tmp`` as it comes; ``close`` writes the header (the format's 8-byte
    length, JSON of names, dtypes, shapes and offsets) and copies the data after it, then renames the
    result to ``path`` (atomic). ``safetensors.torch.load_file`` reads it like any other."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.data_path = self.path.with_name(f".{self.path.name}.{os.getpid()}.data.tmp")
        self.data, self.header, self.offset = open(self.data_path, "wb"), {}, 0

    def __contains__(self, name) -> bool:
        return name in self.header

    def __len__(self) -> int:
        return len(self.header)

    def add(self, name: str, tensor) -> None:
        array = tensor.detach().cpu().contiguous().numpy()
        data = array.tobytes()
        self.header[name] = {"dtype": SAFETENSORS_DTYPES[array.dtype.str], "shape": list(array.shape),
                             "data_offsets": [self.offset, self.offset + len(data)]}
        self.data.write(data)
        self.offset += len(data)

    def discard(self) -> None:
        """Drop what was appended (an import that failed part way): no file is left behind."""
        self.data.close()
        self.data_path.unlink(missing_ok=True)

    def close(self) -> None:
        import shutil
        import struct

        self.data.close()
        head = json.dumps(self.header, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as out, open(self.data_path, "rb") as data:
            out.write(struct.pack("<Q", len(head)) + head)
            shutil.copyfileobj(data, out, 1 << 20)
        os.replace(tmp, self.path)
        self.data_path.unlink()
