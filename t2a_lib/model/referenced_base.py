"""A real checkpoint as a run's base, referenced in the run folder instead of copied into it.

Tango 2's snapshot is about 5 GB; saving it again as ``<run_dir>/base/pipeline`` doubles that for every
run. When the checkpoint is a local folder, notebook 02 writes only ``<run_dir>/base/checkpoint.json``:
where the snapshot and its text encoder are, the latent size it samples, and the signature (name,
size, modification time) of every file they hold. Every later stage loads the base from there
(:func:`load_referenced`), and refuses, naming the file, when a file changed since it was referenced.
"""
from __future__ import annotations

from pathlib import Path


class ReferencedBaseChanged(RuntimeError):
    """The referenced checkpoint's files are not those notebook 02 recorded."""


def signature(*folders) -> dict[str, list[int]]:
    """``{path: [size, mtime_ns]}`` of every file under ``folders`` (None entries skipped)."""
    out = {}
    for folder in folders:
        if folder is None:
            continue
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                st = p.stat()
                out[str(p.resolve())] = [st.st_size, st.st_mtime_ns]
    return out


def text_encoder_folder(checkpoint, text_encoder_path) -> str | None:
    """The text encoder folder a Tango load used (explicit, inside or beside the snapshot), for the signature."""
    if text_encoder_path:
        return str(Path(text_encoder_path).resolve())
    for near in (Path(checkpoint) / "text_encoder", Path(checkpoint).parent / "flan-t5-large"):
        if (near / "config.json").is_file():
            return str(near.resolve())
    return None


def reference_record(checkpoint, text_encoder_path, sample_size) -> dict:
    """What ``base/checkpoint.json`` holds for a referenced base (besides the sampling facts)."""
    te = text_encoder_folder(checkpoint, text_encoder_path)
    return {"referenced": True, "text_encoder_path": str(Path(text_encoder_path).resolve()) if text_encoder_path
            else None, "unet_sample_size": list(sample_size), "files": signature(checkpoint, te)}


def load_referenced(record: dict, record_path):
    """The base pipeline from the checkpoint ``record`` names, at its recorded sample size; raises
    ``ReferencedBaseChanged`` naming the first file that differs from the recorded signature."""
    from .tango import pipeline_from_checkpoint

    te = text_encoder_folder(record["checkpoint"], record.get("text_encoder_path"))
    now, then = signature(record["checkpoint"], te), record["files"]
    changed = sorted(set(now) ^ set(then) | {p for p in set(now) & set(then) if now[p] != then[p]})
    if changed:
        raise ReferencedBaseChanged(f"{record_path}: the base checkpoint changed since notebook 02 referenced it "
                                    f"({len(changed)} file(s); first: {changed[0]}); run 02_base_model again")
    kw = {"text_encoder_path": record["text_encoder_path"]} if record.get("text_encoder_path") else {}
    pipe = pipeline_from_checkpoint(record["checkpoint"], **kw)
    pipe.unet.register_to_config(sample_size=list(record["unet_sample_size"]))
    return pipe
