"""Train-or-load: a fitted model's folder records what it was trained from, so a rerun loads it and a
change (another base model, other data, another config) trains again instead of loading a stale one.

``fingerprint`` hashes weights and data into the key; ``claim_folder`` marks a folder for one key and
moves other keys' checkpoints aside; ``cached_fit`` / ``fit_finetuned`` are the load-or-train steps the
base model, DPO, BATON and KTO use.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from ..run.files import load_fit, plain, read_json, save_fit, swap_in_folder, write_json


def fingerprint(*items) -> str:
    """A short hash of tensors and of modules' weights: what a cached model was trained from.
    Part of every train-or-load key, so a changed base model or changed data retrains instead
    of silently loading a model made from the old ones."""
    h = hashlib.sha1()
    for item in items:
        tensors = ([v for _, v in sorted(item.state_dict().items())] if isinstance(item, torch.nn.Module)
                   else [torch.as_tensor(item)])
        for t in tensors:
            t = t.detach().cpu().contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _key_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _free_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ... whichever does not exist yet."""
    n, out = 1, path
    while out.exists():
        n += 1
        out = path.with_name(f"{path.name}-{n}")
    return out


def claim_folder(folder, key: dict) -> None:
    """Mark ``folder`` as training the model that ``key`` identifies. Checkpoints left there by
    training anything else (another base model, other data, another config) are moved aside to
    ``checkpoint.superseded-<hash of their key>`` (a free name: nothing is lost, nothing blocks),
    so a resume never continues another model's run; an interrupted run with the same key still
    resumes, and so does one whose checkpoint was moved aside earlier (its key matches again)."""
    folder, key = Path(folder), json.loads(json.dumps(key))
    marker = folder / "training.json"
    text = json.dumps(key)
    if not marker.exists() or read_json(marker, "training marker") != key:
        old = _key_hash(marker.read_text()) if marker.exists() else "unknown"
        for ckpt in [p for p in folder.rglob("checkpoint") if p.is_dir()]:
            os.replace(ckpt, _free_name(ckpt.with_name(f"checkpoint.superseded-{old}")))
            mine = ckpt.with_name(f"checkpoint.superseded-{_key_hash(text)}")
            if mine.is_dir():  # this key trained here before: continue from where it got to
                os.replace(mine, ckpt)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(marker, key)


def cached_fit(folder, key: dict) -> dict | None:
    """``folder/fit.json`` when it records ``key`` (the model in ``folder/unet`` is then the one
    asked for); otherwise None, and the folder is claimed for training that model.

    The record and its weights are one unit: another key's pair is moved aside together
    (``fit.superseded-<hash of its key>/``) and comes back when its key is asked for again; weights
    without a record (a fit killed between the two) are moved aside as ``unet.unrecorded``, never read."""
    folder = Path(folder)
    fit = load_fit(folder, key, ("unet",))
    kept = folder / f"fit.superseded-{_key_hash(json.dumps(plain(key)))}"
    if fit is None and kept.is_dir() and load_fit(kept, key, ("unet",)) is not None:
        _set_aside_fit(folder)  # going back to an earlier setting: its own weights come back
        os.replace(kept / "unet", folder / "unet")
        os.replace(kept / "fit.json", folder / "fit.json")  # last: the pair is whole again
        kept.rmdir()
        fit = load_fit(folder, key, ("unet",))
    if fit is None:
        _set_aside_fit(folder)
        claim_folder(folder, key)
    return fit


def _set_aside_fit(folder: Path) -> None:
    """Move ``fit.json`` and ``unet`` (another key's pair, or weights without a record) out of the way."""
    record, unet = folder / "fit.json", folder / "unet"
    if record.is_file():
        old = read_json(record, "fit record").get("key")
        aside = _free_name(folder / f"fit.superseded-{_key_hash(json.dumps(old))}")
        aside.mkdir(parents=True)
        os.replace(record, aside / "fit.json")  # first: from here on nothing vouches for ./unet
        if unet.exists():
            os.replace(unet, aside / "unet")
    elif unet.exists():
        os.replace(unet, _free_name(folder / "unet.unrecorded"))


def save_unet(unet, target: Path) -> None:
    """``unet.save_pretrained(target)`` written whole beside it, then renamed into place."""
    building = target.with_name(f".{target.name}.saving-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    unet.save_pretrained(building)
    swap_in_folder(building, target)


def fit_finetuned(folder, base_unet, key: dict, train_fn, fuse_lora: bool = False):
    """Fine-tune a deep copy of ``base_unet`` with ``train_fn(unet) -> train_loop output`` and
    save it under ``folder/unet`` — or load it when ``folder/fit.json`` records the same ``key``.
    LoRA adapters are fused first, so every fine-tuned model loads as a plain UNet. Returns
    ``(unet, history)``."""
    import copy

    from .tango import load_unet

    folder = Path(folder)
    key = {**key, "base_unet": fingerprint(base_unet)}
    fit = cached_fit(folder, key)
    if fit is not None:
        return load_unet(folder / "unet"), fit["history"]
    unet = copy.deepcopy(base_unet)
    out = train_fn(unet)
    if fuse_lora:
        unet.fuse_lora()
        unet.unload_lora()
    save_unet(unet, folder / "unet")
    save_fit(folder, key, seconds=out["seconds"], history=out["history"])  # last: the record vouches for it
    return unet.eval(), out["history"]
