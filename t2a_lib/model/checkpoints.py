"""Load real text-to-audio checkpoints onto the suite's pipeline components, offline.

Every loader returns the miniature Tango's component dict: ``vae`` (diffusers AutoencoderKL,
log-mel (B, 1, T, 64) <-> latent (B, 8, T/4, 16)), ``text_encoder``, ``tokenizer``, ``unet``
(diffusers UNet2DConditionModel), ``scheduler``, ``vocoder`` (transformers SpeechT5HifiGan,
(B, T, 64) -> (B, 160 T) samples at 16 kHz), plus ``scale_factor`` (latent = scale_factor * z),
``conditioning`` ("cross_attention" for Tango, "class_embedding" for AudioLDM) and ``info``.

Tango / Tango 2 (HF declare-lab/tango, tango2, tango-full-ft-audiocaps), as read from
declare-lab/tango's ``tango.py``, ``models.py`` and ``audioldm/``; a snapshot holds

- ``main_config.json``: the kwargs of ``AudioDiffusion``: text_encoder_name (google/flan-t5-large),
  scheduler_name (stabilityai/stable-diffusion-2-1), unet_model_name (null),
  unet_model_config_path (``configs/diffusion_model_config.json``, a file of the *code* repository,
  not of the snapshot), snr_gamma, ...
- ``pytorch_model_main.bin``: the AudioDiffusion state dict, ``unet.*`` (UNet2DConditionModel built
  from that config) and ``text_encoder.*`` (T5EncoderModel of flan-t5-large, frozen).
- ``vae_config.json`` + ``pytorch_model_vae.bin``: AudioLDM's own AutoencoderKL (latent-diffusion
  names ``encoder.down.0.block.0.norm1.weight``, ``mid.attn_1.q`` 1x1 convs, ``quant_conv``...,
  ``scale_factor`` 0.9227914214134216) *including* ``vocoder.*``: AudioLDM's 16 kHz HiFi-GAN, built
  with its weight norm already removed, so the file holds plain ``.weight`` tensors. Files with
  ``weight_g``/``weight_v`` (or ``parametrizations.weight.original0/1``) are folded here too.
- ``stft_config.json`` + ``pytorch_model_stft.bin``: TacotronSTFT buffers (``mel_basis``,
  ``stft_fn.forward_basis``, ``stft_fn.inverse_basis``); optional here, only checked against our mel.

The scheduler is SD 2.1's config loaded as DDPMScheduler: 1000 steps, scaled-linear betas
0.00085-0.012, v-prediction. Nothing is ever downloaded: ``.bin`` files load with
``torch.load(..., map_location="cpu", weights_only=True)`` (never a full unpickle), safetensors
where present, HF folders with ``local_files_only=True``.

This module holds what both formats share and ``load_real_checkpoint``; ``tango_checkpoint`` loads Tango
snapshots, ``audioldm_checkpoint`` converts AudioLDM's original VAE / HiFi-GAN weights and loads diffusers
AudioLDM folders. The tests write tiny random checkpoints in the real layouts (tests/checkpoint_fixtures.py).
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from ..scoring.clap_real import WeightsNotFoundError

__all__ = ["WeightsNotFoundError", "CheckpointError", "load_real_checkpoint", "load_weights_file", "check_finite",
           "check_dtypes"]

TANGO_REQUIRED = ("main_config.json", "pytorch_model_main.bin", "vae_config.json", "pytorch_model_vae.bin")


TANGO_HOW_TO = ("On a machine with internet run `huggingface-cli download declare-lab/tango2 --local-dir <folder>` "
                "(or declare-lab/tango, declare-lab/tango-full-ft-audiocaps), copy the folder here and pass its path")


AUDIOLDM_HOW_TO = ("On a machine with internet run `huggingface-cli download cvssp/audioldm-s-full-v2 "
                   "--local-dir <folder>`, copy the folder here and pass its path")


class CheckpointError(ValueError):
    """A checkpoint that is present but cannot be mapped: wrong or missing tensors, an unsupported
    variant, or a file that is not a plain dict of tensors."""


def load_weights_file(path) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` from a .safetensors or .bin/.pt/.ckpt file, on CPU, never fully unpickled."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"No weights file at '{path}'.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            sd = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"'{path}' is not a readable safetensors file (truncated or corrupt): {exc}") from None
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"'{path}' could not be read with torch.load(weights_only=True) -- it is "
                                  f"corrupt or holds pickled objects other than tensors, and untrusted "
                                  f"pickles are never unpickled here: {first}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]  # a Lightning-style checkpoint
    if not isinstance(sd, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
        raise CheckpointError(f"'{path}' is not a flat dict of named tensors (got {type(sd).__name__}).")
    check_finite(sd, path)
    return dict(sd)


def check_finite(sd: dict, source) -> None:
    """Refuse a checkpoint with NaN or Inf in any floating tensor, naming the tensors (a model built
    from it would fail far downstream, in whichever module first meets the NaN)."""
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"'{source}' holds NaN or Inf values in {len(bad)} tensor(s) ({few(bad)}): the "
                              f"weights are damaged; download the checkpoint again.")


def check_dtypes(expected: dict, sd: dict, what: str, source) -> None:
    """Refuse a file tensor whose dtype is of another kind (integer vs floating) than the model's, naming
    it: load_state_dict would silently copy int32 numbers into float weights."""
    wrong = [f"{k}: file {sd[k].dtype} vs model {expected[k].dtype}" for k in sorted(set(sd) & set(expected))
             if sd[k].is_floating_point() != expected[k].is_floating_point()
             or (sd[k].dtype == torch.bool) != (expected[k].dtype == torch.bool)]
    if wrong:
        raise CheckpointError(f"The {what} weights from '{source}' have {len(wrong)} tensor(s) of the wrong dtype "
                              f"({few(wrong, 3)}): the file's header does not describe float weights.")


def weights_path(folder: Path, stem: str) -> Path | None:
    """``<stem>.safetensors`` where present, else ``<stem>.bin`` (stem like 'pytorch_model_main')."""
    for name in (f"{stem}.safetensors", f"{stem.replace('pytorch_', '')}.safetensors", f"{stem}.bin"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_config(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"'{path}' is not valid JSON: {exc}") from None


def resolve_folder(path, how_to: str) -> Path:
    """A local folder, or an ``owner/name`` repo already in the HF cache (never downloaded)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    text = str(path)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not p.exists():
        try:
            from huggingface_hub import snapshot_download
            return Path(snapshot_download(text, local_files_only=True))
        except Exception:  # any miss of the local cache: report below, never go online
            pass
    raise WeightsNotFoundError(f"No checkpoint folder at '{p}' (nor an HF-cache snapshot of '{text}'). {how_to}.")


def few(items, n: int = 5) -> str:
    items = list(items)
    return ", ".join(map(str, items[:n])) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def nearest_names(names: list[str], others: list[str], n: int = 5) -> str:
    """The first ``n`` of ``names``, each with its nearest name among ``others`` (difflib), so a renamed
    key shows what it is called on the other side: ``a.b (nearest: a.c), ...``."""
    import difflib

    shown = []
    for name in names[:n]:
        close = difflib.get_close_matches(name, others, n=1, cutoff=0.6)
        shown.append(f"{name} (nearest: {close[0]})" if close else name)
    return ", ".join(shown) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def load_checked(module: nn.Module, sd: dict, what: str, source, hint: str = "") -> None:
    """load_state_dict(strict=True), after a readable report of missing/unexpected/misshapen keys."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(sd) & set(expected)) if sd[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing ({nearest_names(missing, unexpected)})" if missing else "",
                 f"{len(unexpected)} unexpected ({nearest_names(unexpected, missing)})" if unexpected else "",
                 f"{len(shapes)} of another shape ({few(shapes, 3)})" if shapes else ""]
        raise CheckpointError(f"The {what} weights from '{source}' do not fit the model built for them: "
                              f"{'; '.join(p for p in parts if p)}.{' ' + hint if hint else ''}")
    check_dtypes(expected, sd, what, source)
    check_finite(sd, source)  # the tensors as converted (a folded weight norm can make NaN too)
    module.load_state_dict(sd, strict=True)


def load_real_checkpoint(path, **kw) -> dict:
    """Load whatever real checkpoint ``path`` holds: Tango files -> load_tango, model_index.json -> load_audioldm."""
    from .audioldm_checkpoint import load_audioldm
    from .tango_checkpoint import load_tango

    folder = resolve_folder(path, f"{TANGO_HOW_TO}; or for AudioLDM: {AUDIOLDM_HOW_TO}")
    if (folder / "model_index.json").is_file():
        return load_audioldm(folder, **kw)
    names = {p.name for p in folder.iterdir()}
    if names & {"main_config.json", "pytorch_model_main.bin", "pytorch_model_main.safetensors",
                "vae_config.json", "pytorch_model_vae.bin"}:
        return load_tango(folder, **kw)
    raise WeightsNotFoundError(f"'{folder}' is neither a Tango checkpoint ({', '.join(TANGO_REQUIRED)}) nor a "
                               f"diffusers AudioLDM folder (model_index.json); it holds: "
                               f"{few(sorted(names), 8) or 'nothing'}.")
