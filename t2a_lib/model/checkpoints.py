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
where present, HF folders with ``local_files_only=True``. ``make_tiny_tango`` and
``make_tiny_audioldm`` write tiny random checkpoints laid out like the real files.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .clap_real import WeightsNotFoundError, _byte_alphabet

__all__ = ["WeightsNotFoundError", "CheckpointError", "load_tango", "load_audioldm", "load_real_checkpoint",
           "load_weights_file", "audioldm_vae_to_diffusers", "hifigan_to_speecht5", "hifigan_output_length",
           "make_tiny_tango",
           "make_tiny_audioldm", "TANGO_SCALE_FACTOR"]

TANGO_REQUIRED = ("main_config.json", "pytorch_model_main.bin", "vae_config.json", "pytorch_model_vae.bin")
TANGO_SCALE_FACTOR = 0.9227914214134216
TANGO_HOW_TO = ("On a machine with internet run `huggingface-cli download declare-lab/tango2 --local-dir <folder>` "
                "(or declare-lab/tango, declare-lab/tango-full-ft-audiocaps), copy the folder here and pass its path")
FLAN_HOW_TO = ("Tango's text encoder config and tokenizer come from google/flan-t5-large (its weights are in "
               "pytorch_model_main.bin). On a machine with internet run `huggingface-cli download "
               "google/flan-t5-large config.json tokenizer.json tokenizer_config.json spiece.model "
               "special_tokens_map.json --local-dir <dir>`, then copy <dir> to '<tango folder>/text_encoder' "
               "or pass text_encoder_path=<dir>")
AUDIOLDM_HOW_TO = ("On a machine with internet run `huggingface-cli download cvssp/audioldm-s-full-v2 "
                   "--local-dir <folder>`, copy the folder here and pass its path")

# configs/diffusion_model_config.json of declare-lab/tango: the UNet of Tango, Tango-full-FT and Tango 2.
TANGO_UNET_CONFIG = {
    "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0,
    "in_channels": 8, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
    "norm_num_groups": 32, "num_class_embeds": None, "only_cross_attention": False, "out_channels": 8,
    "sample_size": [32, 2], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                               "CrossAttnUpBlock2D"],
    "use_linear_projection": True, "upcast_attention": True,
}
# stabilityai/stable-diffusion-2-1's scheduler, which Tango loads as a DDPMScheduler.
TANGO_SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                          "beta_schedule": "scaled_linear", "prediction_type": "v_prediction",
                          "clip_sample": False, "steps_offset": 1}
# AudioLDM's HIFIGAN_16K_64 (audioldm/hifigan/utilities.py) in SpeechT5HifiGanConfig's names.
AUDIOLDM_VOCODER_CONFIG = {"model_in_dim": 64, "sampling_rate": 16000, "upsample_initial_channel": 1024,
                           "upsample_rates": [5, 4, 2, 2, 2], "upsample_kernel_sizes": [16, 16, 8, 4, 4],
                           "resblock_kernel_sizes": [3, 7, 11],
                           "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
                           "normalize_before": False}
_HIFIGAN_NAMES = {"num_mels": "model_in_dim"}  # AudioLDM's config key -> SpeechT5HifiGanConfig's


class CheckpointError(ValueError):
    """A checkpoint that is present but cannot be mapped: wrong or missing tensors, an unsupported
    variant, or a file that is not a plain dict of tensors."""


# ----------------------------------------------------------------------------------------- files

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
    return dict(sd)


def _weights_path(folder: Path, stem: str) -> Path | None:
    """``<stem>.safetensors`` where present, else ``<stem>.bin`` (stem like 'pytorch_model_main')."""
    for name in (f"{stem}.safetensors", f"{stem.replace('pytorch_', '')}.safetensors", f"{stem}.bin"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"'{path}' is not valid JSON: {exc}") from None


def _resolve_folder(path, how_to: str) -> Path:
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


def _few(items, n: int = 5) -> str:
    items = list(items)
    return ", ".join(map(str, items[:n])) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _load_checked(module: nn.Module, sd: dict, what: str, source, hint: str = "") -> None:
    """load_state_dict(strict=True), after a readable report of missing/unexpected/misshapen keys."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(sd) & set(expected)) if sd[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing ({_few(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({_few(unexpected)})" if unexpected else "",
                 f"{len(shapes)} of another shape ({_few(shapes, 3)})" if shapes else ""]
        raise CheckpointError(f"The {what} weights from '{source}' do not fit the model built for them: "
                              f"{'; '.join(p for p in parts if p)}.{' ' + hint if hint else ''}")
    module.load_state_dict(sd, strict=True)


# ------------------------------------------------------------------------------ AudioLDM VAE keys

_RESNET_PARAMS = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
                  "nin_shortcut": "conv_shortcut"}
_ATTN_PARAMS = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def _vae_key(key: str, n_levels: int) -> tuple[str, bool] | None:
    """Original latent-diffusion VAE name -> (diffusers name, conv-to-linear reshape?); None if unknown."""
    if re.fullmatch(r"(post_)?quant_conv\.(weight|bias)", key):
        return key, False
    m = re.fullmatch(r"(encoder|decoder)\.(.+)\.(weight|bias)", key)
    if not m:
        return None
    part, body, p = m.groups()
    if body in ("conv_in", "conv_out"):
        return f"{part}.{body}.{p}", False
    if body == "norm_out":
        return f"{part}.conv_norm_out.{p}", False
    if m2 := re.fullmatch(r"mid\.block_([12])\.(\w+)", body):
        name = _RESNET_PARAMS.get(m2[2])
        return (f"{part}.mid_block.resnets.{int(m2[1]) - 1}.{name}.{p}", False) if name else None
    if m2 := re.fullmatch(r"mid\.attn_1\.(\w+)", body):
        name = _ATTN_PARAMS.get(m2[1])
        return (f"{part}.mid_block.attentions.0.{name}.{p}", m2[1] != "norm" and p == "weight") if name else None
    level = "down" if part == "encoder" else "up"
    if m2 := re.fullmatch(rf"{level}\.(\d+)\.block\.(\d+)\.(\w+)", body):
        name, i = _RESNET_PARAMS.get(m2[3]), int(m2[1])
        i = i if part == "encoder" else n_levels - 1 - i  # diffusers' up_blocks run in reverse of `up`
        return (f"{part}.{level}_blocks.{i}.resnets.{m2[2]}.{name}.{p}", False) if name else None
    if m2 := re.fullmatch(rf"{level}\.(\d+)\.{level}sample\.conv", body):
        i = int(m2[1]) if part == "encoder" else n_levels - 1 - int(m2[1])
        return f"{part}.{level}_blocks.{i}.{level}samplers.0.conv.{p}", False
    return None  # e.g. down.*.attn.* (attention inside levels): diffusers' DownEncoderBlock2D has none


def audioldm_vae_to_diffusers(sd: dict, n_levels: int) -> dict[str, torch.Tensor]:
    """Rename AudioLDM/latent-diffusion VAE tensors (no ``vocoder.*``) to diffusers' AutoencoderKL.

    The mid-block attention's q/k/v/proj_out are 1x1 convs (C, C, 1, 1); diffusers uses Linear (C, C).
    Every key must be consumed exactly once, else CheckpointError.
    """
    out, unknown = {}, []
    for key, value in sd.items():
        mapped = _vae_key(key, n_levels)
        if mapped is None:
            unknown.append(key)
            continue
        new, reshape = mapped
        if new in out:
            raise CheckpointError(f"VAE keys collide on '{new}' (second source '{key}').")
        out[new] = value.reshape(value.shape[0], value.shape[1]) if reshape else value
    if unknown:
        raise CheckpointError(f"{len(unknown)} VAE tensors have no place in diffusers' AutoencoderKL: {_few(unknown)} "
                              "(attention inside the down/up levels and 3x3 conv shortcuts are not supported).")
    return out


def _diffusers_vae_config(vae_config: dict) -> dict:
    dd = vae_config.get("ddconfig")
    if not isinstance(dd, dict):
        raise CheckpointError("vae_config.json has no 'ddconfig' (AudioLDM's AutoencoderKL kwargs expected).")
    embed = int(vae_config.get("embed_dim", dd.get("z_channels")))
    bad = [f"{k}={dd.get(k)!r}" for k, ok in (
        ("attn_resolutions", not dd.get("attn_resolutions")), ("double_z", dd.get("double_z", True)),
        ("downsample_time_stride4_levels", not dd.get("downsample_time_stride4_levels")),
        ("use_linear_attn", not dd.get("use_linear_attn")), ("resamp_with_conv", dd.get("resamp_with_conv", True)),
        ("z_channels", int(dd["z_channels"]) == embed)) if not ok]
    if int(vae_config.get("subband", 1)) != 1:
        bad.append(f"subband={vae_config['subband']}")
    if bad:
        raise CheckpointError(f"Unsupported AudioLDM VAE variant ({', '.join(bad)}; embed_dim={embed}).")
    n = len(dd["ch_mult"])
    return dict(in_channels=int(dd["in_channels"]), out_channels=int(dd["out_ch"]),
                down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
                block_out_channels=[int(dd["ch"]) * int(m) for m in dd["ch_mult"]],
                layers_per_block=int(dd["num_res_blocks"]), latent_channels=embed, norm_num_groups=32,
                act_fn="silu", sample_size=int(dd.get("resolution", 256)),
                scaling_factor=float(vae_config.get("scale_factor", 1.0)))


# ---------------------------------------------------------------------------------- HiFi-GAN keys

def _fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """weight = g * v / ||v||, the norm over every dim but 0 (torch's weight_norm with dim=0)."""
    norm = v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))
    return g * v / norm


def hifigan_to_speecht5(sd: dict) -> tuple[dict[str, torch.Tensor], str]:
    """AudioLDM/HiFi-GAN generator tensors -> SpeechT5HifiGan names; returns (state dict, weight form).

    Weight norm is folded where present (``weight_g``/``weight_v`` or ``parametrizations.weight.
    original0/1``); ``ups.i`` becomes ``upsampler.i``; ``conv_pre``, ``resblocks.*.convs1/convs2``
    and ``conv_post`` keep their names. ``mean``/``scale`` (unused, normalize_before=False) are added.
    """
    folded, plain, forms = {}, dict(sd), set()
    for g_suffix, v_suffix in ((".weight_g", ".weight_v"),
                               (".parametrizations.weight.original0", ".parametrizations.weight.original1")):
        for key in [k for k in plain if k.endswith(g_suffix)]:
            prefix = key[: -len(g_suffix)]
            if prefix + v_suffix not in plain:
                raise CheckpointError(f"Vocoder tensor '{key}' has no matching '{prefix + v_suffix}'.")
            folded[prefix + ".weight"] = _fold_weight_norm(plain.pop(key), plain.pop(prefix + v_suffix))
            forms.add("weight_norm")
    stray = [k for k in plain if k.endswith((".weight_v", ".original1"))]
    if stray:
        raise CheckpointError(f"Vocoder weight-norm tensors without their gain: {_few(stray)}.")
    if any(k.endswith(".weight") for k in plain):
        forms.add("plain")
    out, unknown = {}, []
    for key, value in {**plain, **folded}.items():
        if re.fullmatch(r"(conv_pre|conv_post)\.(weight|bias)|resblocks\.\d+\.convs[12]\.\d+\.(weight|bias)", key):
            out[key] = value
        elif m := re.fullmatch(r"ups\.(\d+)\.(weight|bias)", key):
            out[f"upsampler.{m[1]}.{m[2]}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{len(unknown)} vocoder tensors are not HiFi-GAN generator weights: {_few(unknown)}.")
    return out, "+".join(sorted(forms)) or "empty"


def hifigan_output_length(config: dict, n_frames: int) -> int:
    """Samples a HiFi-GAN gives for ``n_frames`` mel frames: each ConvTranspose1d maps L to
    (L - 1) * u - 2 * ((k - u) // 2) + k. AudioLDM's first layer (k 16, u 5) gives 5 L + 1, so its
    vocoder returns 160 T + 32 samples; trim to 160 T (as diffusers' AudioLDMPipeline does)."""
    n = int(n_frames)
    for u, k in zip(config["upsample_rates"], config["upsample_kernel_sizes"]):
        n = (n - 1) * u - 2 * ((k - u) // 2) + k
    return n


def _extra_samples(config: dict) -> int:
    """Samples the vocoder gives beyond hop * frames (a constant: 32 for AudioLDM's HiFi-GAN)."""
    return hifigan_output_length(config, 1000) - 1000 * int(np.prod(config["upsample_rates"]))


def _vocoder_config(folder: Path, sd: dict) -> dict:
    """AudioLDM's HiFi-GAN config, overridden by an optional vocoder_config.json, widths from the weights."""
    cfg = dict(AUDIOLDM_VOCODER_CONFIG)
    if (folder / "vocoder_config.json").is_file():
        extra = _read_json(folder / "vocoder_config.json")
        cfg.update({_HIFIGAN_NAMES.get(k, k): v for k, v in extra.items() if _HIFIGAN_NAMES.get(k, k) in cfg})
    if "conv_pre.weight" in sd:  # (upsample_initial_channel, n_mels, 7)
        cfg["upsample_initial_channel"], cfg["model_in_dim"] = map(int, sd["conv_pre.weight"].shape[:2])
    n_ups = len({k.split(".")[1] for k in sd if k.startswith("upsampler.")})
    if n_ups != len(cfg["upsample_rates"]):
        raise CheckpointError(f"The vocoder has {n_ups} upsampling layers but the config has "
                              f"{len(cfg['upsample_rates'])} rates; put its HiFi-GAN config in "
                              f"'{folder / 'vocoder_config.json'}'.")
    return cfg


# ------------------------------------------------------------------------------------- loaders

def _split_main(sd: dict, path: Path) -> tuple[dict, dict]:
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}  # saved from a DDP wrapper
    unet = {k[5:]: v for k, v in sd.items() if k.startswith("unet.")}
    text = {k[13:]: v for k, v in sd.items() if k.startswith("text_encoder.")}
    other = sorted(k for k in sd if not k.startswith(("unet.", "text_encoder.")))
    if any(k.startswith(("group_in.", "group_out.")) for k in other):
        raise CheckpointError(f"'{path}' has group_in/group_out adapters: its UNet was initialised from Stable "
                              "Diffusion (unet_model_name set); only Tango's config-built UNet is supported.")
    if other or not unet or not text:
        raise CheckpointError(f"'{path}' should hold only unet.* and text_encoder.* tensors; found "
                              f"{len(unet)} unet.*, {len(text)} text_encoder.*, and others: {_few(other) or 'none'}.")
    return unet, text


def _unet_config(folder: Path, main_config: dict, unet_config) -> tuple[dict, str]:
    """The UNet config: argument, inline in main_config, a file near the checkpoint, else Tango's own."""
    if isinstance(unet_config, dict):
        return dict(unet_config), "argument"
    if unet_config is not None:
        p = Path(unet_config).expanduser()
        p = p / "config.json" if p.is_dir() else p
        if not p.is_file():
            raise WeightsNotFoundError(f"unet_config '{p}' does not exist.")
        return _read_json(p), str(p)
    for key in ("unet_config", "unet_model_config"):
        if isinstance(main_config.get(key), dict):
            return dict(main_config[key]), f"main_config.json['{key}']"
    named = main_config.get("unet_model_config_path") or main_config.get("unet_model_config")
    candidates = []
    if isinstance(named, str) and named:
        n = Path(named).expanduser()
        candidates += [n, folder / n, folder / n.name]
    candidates += [folder / "unet" / "config.json", folder / "diffusion_model_config.json", folder / "unet_config.json"]
    for c in candidates:
        c = c / "config.json" if c.is_dir() else c
        if c.is_file():
            return _read_json(c), str(c)
    if isinstance(named, str) and Path(named).name == "diffusion_model_config.json":
        return dict(TANGO_UNET_CONFIG), "built-in copy of declare-lab/tango configs/diffusion_model_config.json"
    raise WeightsNotFoundError(f"No UNet config for the Tango checkpoint in '{folder}': tried "
                               f"{_few(map(str, candidates), 8)}. Pass unet_config=<dict or json path>.")


def _text_encoder_dir(folder: Path, text_encoder_path, name) -> tuple[Path, str]:
    if text_encoder_path is not None:
        p = Path(text_encoder_path).expanduser()
        if (p / "config.json").is_file():
            return p, str(p)
        raise WeightsNotFoundError(f"text_encoder_path '{p}' has no config.json. {FLAN_HOW_TO}.")
    if (folder / "text_encoder" / "config.json").is_file():
        return folder / "text_encoder", str(folder / "text_encoder")
    if isinstance(name, str) and name:
        from huggingface_hub import try_to_load_from_cache
        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            return Path(cached).parent, f"HF cache of {name}"
    raise WeightsNotFoundError(f"No text encoder config for the Tango checkpoint in '{folder}': no text_encoder_path "
                               f"given, no '{folder / 'text_encoder' / 'config.json'}', and '{name}' is not in the "
                               f"HF cache. {FLAN_HOW_TO}.")


def _t5_encoder(te_dir: Path, sd: dict, source: Path):
    from transformers import AutoConfig, AutoTokenizer, T5EncoderModel
    try:
        config = AutoConfig.from_pretrained(te_dir, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise WeightsNotFoundError(f"Could not read the text encoder config in '{te_dir}': {exc}. "
                                   f"{FLAN_HOW_TO}.") from None
    if config.model_type not in ("t5", "mt5", "umt5"):
        raise CheckpointError(f"Tango's text encoder here must be T5-family; '{te_dir}' is {config.model_type!r}.")
    for a, b in (("shared.weight", "encoder.embed_tokens.weight"), ("encoder.embed_tokens.weight", "shared.weight")):
        if a in sd and b not in sd:
            sd[b] = sd[a]  # tied embedding, stored once
    model = T5EncoderModel(config)
    _load_checked(model, sd, "text encoder", source, f"Its config came from '{te_dir}'.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(te_dir, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise WeightsNotFoundError(f"No usable tokenizer files in '{te_dir}' ({exc}). {FLAN_HOW_TO}.") from None
    return model.eval(), tokenizer


def _tango_scheduler(folder: Path, name):
    from diffusers import DDPMScheduler
    local = folder / "scheduler" / "scheduler_config.json"
    if local.is_file():
        return DDPMScheduler.from_config(_read_json(local)), str(local)
    if isinstance(name, str) and name:
        from huggingface_hub import try_to_load_from_cache
        cached = try_to_load_from_cache(name, "scheduler/scheduler_config.json")
        if isinstance(cached, str):
            return DDPMScheduler.from_config(_read_json(Path(cached))), f"HF cache of {name}"
    return DDPMScheduler(**TANGO_SCHEDULER_CONFIG), "built-in copy of stable-diffusion-2-1's scheduler config"


def _stft_info(folder: Path) -> dict:
    cfg_path, weights = folder / "stft_config.json", _weights_path(folder, "pytorch_model_stft")
    if not cfg_path.is_file():
        return {"present": False}
    from .mel import mel_filterbank
    cfg = _read_json(cfg_path)
    info = {"present": True, "config": cfg}
    if weights is not None:
        basis = load_weights_file(weights).get("mel_basis")
        if basis is not None:
            ours = mel_filterbank(int(cfg["sampling_rate"]), int(cfg["filter_length"]), int(cfg["n_mel_channels"]),
                                  float(cfg["mel_fmin"]), float(cfg["mel_fmax"]))
            if tuple(basis.shape) == ours.shape:
                info["mel_basis_max_abs_diff_vs_ours"] = float(np.abs(basis.numpy() - ours).max())
    return info


def load_tango(folder, text_encoder_path=None, unet_config=None) -> dict:
    """Load a Tango / Tango 2 snapshot folder (or a cached ``declare-lab/...`` repo id) onto our components.

    ``text_encoder_path``: a local folder with flan-t5-large's config.json and tokenizer files (its weights
    are not needed: they come from pytorch_model_main.bin); by default ``<folder>/text_encoder`` or the
    HF cache of main_config's ``text_encoder_name``. ``unet_config``: a dict or json path overriding the
    UNet config search (inline in main_config, next to the checkpoint, else Tango's published config).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    folder = _resolve_folder(folder, TANGO_HOW_TO)
    main_w, vae_w = _weights_path(folder, "pytorch_model_main"), _weights_path(folder, "pytorch_model_vae")
    missing = [n for n in ("main_config.json", "vae_config.json") if not (folder / n).is_file()]
    missing += [f"{stem}.bin (or .safetensors)" for stem, w in
                (("pytorch_model_main", main_w), ("pytorch_model_vae", vae_w)) if w is None]
    if missing:
        raise WeightsNotFoundError(f"The Tango checkpoint folder '{folder}' lacks {', '.join(missing)}. "
                                   f"{TANGO_HOW_TO}.")
    main_config = _read_json(folder / "main_config.json")
    vae_config = _read_json(folder / "vae_config.json")

    unet_sd, te_sd = _split_main(load_weights_file(main_w), main_w)
    ucfg, ucfg_source = _unet_config(folder, main_config, unet_config)
    unet = UNet2DConditionModel.from_config({k: v for k, v in ucfg.items() if not k.startswith("_")})
    _load_checked(unet, unet_sd, "UNet", main_w, f"The UNet config came from: {ucfg_source}.")
    te_dir, te_source = _text_encoder_dir(folder, text_encoder_path, main_config.get("text_encoder_name"))
    text_encoder, tokenizer = _t5_encoder(te_dir, te_sd, main_w)

    vae_all = load_weights_file(vae_w)
    voc_sd = {k[len("vocoder."):]: v for k, v in vae_all.items() if k.startswith("vocoder.")}
    vcfg = _diffusers_vae_config(vae_config)
    vae = AutoencoderKL(**vcfg)
    vae_sd = audioldm_vae_to_diffusers({k: v for k, v in vae_all.items() if not k.startswith("vocoder.")},
                                       len(vcfg["block_out_channels"]))
    _load_checked(vae, vae_sd, "VAE", vae_w)
    if not voc_sd:
        raise CheckpointError(f"'{vae_w}' has no vocoder.* tensors (Tango stores AudioLDM's HiFi-GAN there).")
    voc_sd, voc_form = hifigan_to_speecht5(voc_sd)
    voc_cfg = _vocoder_config(folder, voc_sd)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(**voc_cfg))
    voc_sd.update(mean=torch.zeros(voc_cfg["model_in_dim"]), scale=torch.ones(voc_cfg["model_in_dim"]))
    _load_checked(vocoder, voc_sd, "vocoder", vae_w)
    scheduler, sched_source = _tango_scheduler(folder, main_config.get("scheduler_name"))

    if unet.config.in_channels != vae.config.latent_channels:
        raise CheckpointError(f"UNet in_channels {unet.config.in_channels} != VAE latent channels "
                              f"{vae.config.latent_channels}.")
    if unet.config.cross_attention_dim != text_encoder.config.d_model:
        raise CheckpointError(f"UNet cross_attention_dim {unet.config.cross_attention_dim} != text encoder width "
                              f"{text_encoder.config.d_model} (config from {te_source}).")
    info = {"format": "tango", "folder": str(folder), "main_config": main_config, "vae_config": vae_config,
            "files": {"main": str(main_w), "vae": str(vae_w)}, "unet_config_source": ucfg_source,
            "text_encoder_source": te_source, "scheduler_source": sched_source, "vocoder_weights": voc_form,
            "vocoder_config": voc_cfg, "stft": _stft_info(folder),
            "latent_downsampling": 2 ** (len(vcfg["block_out_channels"]) - 1),
            "hop_length": int(np.prod(voc_cfg["upsample_rates"])), "sample_rate": voc_cfg["sampling_rate"],
            "vocoder_extra_samples": _extra_samples(voc_cfg)}
    return {"vae": vae.eval(), "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet.eval(),
            "scheduler": scheduler, "vocoder": vocoder.eval(), "scale_factor": float(vcfg["scaling_factor"]),
            "conditioning": "cross_attention", "info": info}


_AUDIOLDM_FILES = {"vae": "config.json", "unet": "config.json", "text_encoder": "config.json",
                   "vocoder": "config.json", "scheduler": "scheduler_config.json", "tokenizer": "tokenizer_config.json"}


def load_audioldm(folder) -> dict:
    """Load a diffusers AudioLDM folder (e.g. cvssp/audioldm-s-full-v2) with local_files_only=True.

    The text embedding (CLAP text projection) enters the UNet as its class embedding, not by
    cross-attention: ``conditioning == "class_embedding"``.
    """
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, ClapTextModelWithProjection, SpeechT5HifiGan

    folder = _resolve_folder(folder, AUDIOLDM_HOW_TO)
    if not (folder / "model_index.json").is_file():
        raise WeightsNotFoundError(f"The AudioLDM folder '{folder}' lacks model_index.json. {AUDIOLDM_HOW_TO}.")
    index = _read_json(folder / "model_index.json")
    if index.get("_class_name") != "AudioLDMPipeline":
        raise CheckpointError(f"'{folder}' holds a {index.get('_class_name')!r}, not an AudioLDMPipeline.")
    missing = [f"{part}/{name}" for part, name in _AUDIOLDM_FILES.items() if not (folder / part / name).is_file()]
    missing += [f"{part}/*.safetensors (or *.bin)" for part in ("vae", "unet", "text_encoder", "vocoder")
                if (folder / part).is_dir() and not any((folder / part).glob("*.safetensors"))
                and not any((folder / part).glob("*.bin"))]
    if missing:
        raise WeightsNotFoundError(f"The AudioLDM folder '{folder}' lacks {', '.join(missing)}. {AUDIOLDM_HOW_TO}.")
    sched_name = (index.get("scheduler") or [None, "DDIMScheduler"])[1]
    sched_cls = getattr(diffusers, str(sched_name), None)
    if sched_cls is None or not issubclass(sched_cls, diffusers.SchedulerMixin):
        raise CheckpointError(f"model_index.json names an unknown scheduler {sched_name!r}.")
    loaders = {
        "vae": lambda: AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True),
        "unet": lambda: UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True),
        "text_encoder": lambda: ClapTextModelWithProjection.from_pretrained(folder / "text_encoder",
                                                                            local_files_only=True),
        "tokenizer": lambda: AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
        "scheduler": lambda: sched_cls.from_pretrained(folder, subfolder="scheduler", local_files_only=True),
        "vocoder": lambda: SpeechT5HifiGan.from_pretrained(folder / "vocoder", local_files_only=True),
    }
    parts = {}
    for part, load in loaders.items():
        try:
            parts[part] = load()
        except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            # every file was checked present above: what fails now is there but unreadable
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            files = ", ".join(sorted(p.name for p in (folder / part).glob("*") if p.suffix in (".bin", ".safetensors")))
            raise CheckpointError(f"Could not load {part} from '{folder / part}' ({files or 'its files'}): they are "
                                  f"corrupt, or a .bin holds pickled objects other than tensors, which are never "
                                  f"unpickled here (torch.load weights_only=True): {first}") from None
    unet, te = parts["unet"], parts["text_encoder"]
    if unet.config.class_embed_type != "simple_projection":
        raise CheckpointError(f"AudioLDM's UNet should take the text embedding as a simple_projection class "
                              f"embedding; '{folder / 'unet'}' has class_embed_type={unet.config.class_embed_type!r}.")
    if unet.config.projection_class_embeddings_input_dim != te.config.projection_dim:
        raise CheckpointError(f"UNet class-embedding input {unet.config.projection_class_embeddings_input_dim} != "
                              f"text projection {te.config.projection_dim}.")
    for m in ("vae", "unet", "text_encoder", "vocoder"):
        parts[m].eval()
    voc = parts["vocoder"].config
    info = {"format": "audioldm", "folder": str(folder), "model_index": index, "scheduler_class": sched_name,
            "latent_downsampling": 2 ** (len(parts["vae"].config.block_out_channels) - 1),
            "hop_length": int(np.prod(voc.upsample_rates)), "sample_rate": int(voc.sampling_rate),
            "vocoder_extra_samples": _extra_samples(voc.to_dict())}
    return {**parts, "scale_factor": float(parts["vae"].config.scaling_factor),
            "conditioning": "class_embedding", "info": info}


def load_real_checkpoint(path, **kw) -> dict:
    """Load whatever real checkpoint ``path`` holds: Tango files -> load_tango, model_index.json -> load_audioldm."""
    folder = _resolve_folder(path, f"{TANGO_HOW_TO}; or for AudioLDM: {AUDIOLDM_HOW_TO}")
    if (folder / "model_index.json").is_file():
        return load_audioldm(folder, **kw)
    names = {p.name for p in folder.iterdir()}
    if names & {"main_config.json", "pytorch_model_main.bin", "pytorch_model_main.safetensors",
                "vae_config.json", "pytorch_model_vae.bin"}:
        return load_tango(folder, **kw)
    raise WeightsNotFoundError(f"'{folder}' is neither a Tango checkpoint ({', '.join(TANGO_REQUIRED)}) nor a "
                               f"diffusers AudioLDM folder (model_index.json); it holds: "
                               f"{_few(sorted(names), 8) or 'nothing'}.")


# ------------------------------------------------------------- tiny checkpoints in the real layouts

def _original_vae_modules(ddconfig: dict, embed_dim: int) -> nn.Module:
    """AudioLDM's AutoencoderKL module tree with its original attribute names (no forward: for weights)."""
    def norm(c):
        return nn.GroupNorm(32, c, eps=1e-6)

    def resnet(cin, cout):
        m = nn.Module()
        m.norm1, m.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        m.norm2, m.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            m.nin_shortcut = nn.Conv2d(cin, cout, 1)
        return m

    def attn(c):
        m = nn.Module()
        m.norm = norm(c)
        m.q, m.k, m.v, m.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))
        return m

    def mid(c):
        m = nn.Module()
        m.block_1, m.attn_1, m.block_2 = resnet(c, c), attn(c), resnet(c, c)
        return m

    def resample(c, stride):
        m = nn.Module()
        m.conv = nn.Conv2d(c, c, 3, stride=stride, padding=0 if stride == 2 else 1)
        return m

    ch, mult, nres, z = int(ddconfig["ch"]), list(ddconfig["ch_mult"]), int(ddconfig["num_res_blocks"]), \
        int(ddconfig["z_channels"])
    enc, dec = nn.Module(), nn.Module()
    enc.conv_in, enc.down, cin = nn.Conv2d(int(ddconfig["in_channels"]), ch, 3, padding=1), nn.ModuleList(), ch
    for i, m in enumerate(mult):
        level = nn.Module()
        level.block = nn.ModuleList(resnet(cin if j == 0 else ch * m, ch * m) for j in range(nres))
        cin = ch * m
        if i != len(mult) - 1:
            level.downsample = resample(cin, 2)
        enc.down.append(level)
    enc.mid, enc.norm_out, enc.conv_out = mid(cin), norm(cin), nn.Conv2d(cin, 2 * z, 3, padding=1)
    dec.conv_in, dec.mid, dec.up = nn.Conv2d(z, cin, 3, padding=1), mid(cin), nn.ModuleList()
    for i in reversed(range(len(mult))):
        level = nn.Module()
        level.block = nn.ModuleList(resnet(cin if j == 0 else ch * mult[i], ch * mult[i]) for j in range(nres + 1))
        cin = ch * mult[i]
        if i != 0:
            level.upsample = resample(cin, 1)
        dec.up.insert(0, level)
    dec.norm_out, dec.conv_out = norm(cin), nn.Conv2d(cin, int(ddconfig["out_ch"]), 3, padding=1)
    root = nn.Module()
    root.encoder, root.decoder = enc, dec
    root.quant_conv, root.post_quant_conv = nn.Conv2d(2 * z, 2 * embed_dim, 1), nn.Conv2d(embed_dim, z, 1)
    return root


def _original_hifigan_state_dict(cfg: dict, weight_norm: bool, gen: torch.Generator) -> dict:
    """A random HiFi-GAN generator state dict in AudioLDM's names (``ups``; g/v if weight_norm)."""
    root, c0 = nn.Module(), int(cfg["upsample_initial_channel"])
    root.conv_pre, root.ups, root.resblocks = nn.Conv1d(cfg["model_in_dim"], c0, 7, padding=3), nn.ModuleList(), \
        nn.ModuleList()
    for i, (u, k) in enumerate(zip(cfg["upsample_rates"], cfg["upsample_kernel_sizes"])):
        root.ups.append(nn.ConvTranspose1d(c0 // 2 ** i, c0 // 2 ** (i + 1), k, u, padding=(k - u) // 2))
        for rk, dil in zip(cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"]):
            block, c = nn.Module(), c0 // 2 ** (i + 1)
            block.convs1 = nn.ModuleList(nn.Conv1d(c, c, rk, dilation=d, padding=(rk * d - d) // 2) for d in dil)
            block.convs2 = nn.ModuleList(nn.Conv1d(c, c, rk, padding=(rk - 1) // 2) for _ in dil)
            root.resblocks.append(block)
    root.conv_post = nn.Conv1d(c0 // 2 ** len(cfg["upsample_rates"]), 1, 7, padding=3)
    sd = {}
    for key, value in root.state_dict().items():
        scale = 0.05 if key.endswith("bias") else value[0].numel() ** -0.5
        value = torch.randn(value.shape, generator=gen) * scale
        if weight_norm and key.endswith(".weight"):
            norm = value.reshape(value.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (value.dim() - 1)))
            sd[key + "_g"] = norm * (1.0 + 0.2 * torch.rand(norm.shape, generator=gen))  # g != ||v||
            sd[key + "_v"] = value
        else:
            sd[key] = value
    return sd


def _tacotron_stft_buffers(cfg: dict) -> dict:
    """TacotronSTFT's buffers: our Slaney mel basis and the windowed real-DFT bases (closed-form pinv)."""
    from scipy.signal import get_window

    from .mel import mel_filterbank
    n, hop, win = int(cfg["filter_length"]), int(cfg["hop_length"]), int(cfg["win_length"])
    f = np.fft.fft(np.eye(n))[: n // 2 + 1]
    basis = np.vstack([f.real, f.imag])  # (n + 2, n)
    row_sq = (basis ** 2).sum(axis=1)
    pinv_t = basis / np.where(row_sq > 1e-9, row_sq, np.inf)[:, None]  # rows orthogonal: pinv(B).T = B / |row|^2
    window = np.zeros(n)
    window[(n - win) // 2:(n - win) // 2 + win] = get_window("hann", win, fftbins=True)
    return {"mel_basis": torch.from_numpy(mel_filterbank(int(cfg["sampling_rate"]), n, int(cfg["n_mel_channels"]),
                                                         float(cfg["mel_fmin"]), float(cfg["mel_fmax"]))),
            "stft_fn.forward_basis": torch.from_numpy((basis * window)[:, None, :]).float(),
            "stft_fn.inverse_basis": torch.from_numpy((pinv_t / (n / hop) * window)[:, None, :]).float()}


TINY_VAE_CONFIG = {"image_key": "fbank", "subband": 1, "embed_dim": 8, "time_shuffle": 1,
                   "ddconfig": {"double_z": True, "z_channels": 8, "resolution": 256, "downsample_time": False,
                                "in_channels": 1, "out_ch": 1, "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1,
                                "attn_resolutions": [], "dropout": 0.0},
                   "scale_factor": TANGO_SCALE_FACTOR}
TANGO_STFT_CONFIG = {"filter_length": 1024, "hop_length": 160, "win_length": 1024, "n_mel_channels": 64,
                     "sampling_rate": 16000, "mel_fmin": 0, "mel_fmax": 8000}


def make_tiny_tango(folder, seed: int = 0, vocoder_weight_norm: bool = False) -> Path:
    """Write a tiny random Tango snapshot to ``folder``, in the real files' layout and key names.

    Files: main_config.json (pointing at configs/diffusion_model_config.json like the real one),
    diffusion_model_config.json (the tiny UNet's config, next to the checkpoint), pytorch_model_main.bin
    (``unet.*``, ``text_encoder.*``), vae_config.json + pytorch_model_vae.bin (AudioLDM's original VAE
    names + ``vocoder.*``; plain weights like the real file, or weight_g/weight_v with
    ``vocoder_weight_norm=True``), stft_config.json + pytorch_model_stft.bin, and ``text_encoder/``:
    a tiny T5 config + tokenizer standing in for google/flan-t5-large (its own weights, saved from
    another seed, are ignored by load_tango: Tango's come from pytorch_model_main.bin).
    Mel (B, 1, T, 64) -> latent (B, 8, T/4, 16); the vocoder keeps AudioLDM's hop of 160.
    """
    with torch.random.fork_rng():  # leave the caller's global RNG as it was
        return _write_tiny_tango(Path(folder), seed, vocoder_weight_norm)


def _write_tiny_tango(folder: Path, seed: int, vocoder_weight_norm: bool) -> Path:
    from diffusers import UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    from .text import build_world_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    tokenizer = build_world_tokenizer()
    t5 = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                  relative_attention_num_buckets=8, relative_attention_max_distance=32, decoder_start_token_id=0,
                  pad_token_id=0, eos_token_id=1, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    torch.manual_seed(seed + 1)
    T5EncoderModel(t5).save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "text_encoder")
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(t5)
    unet_cfg = {"_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": [2, 4],
                "block_out_channels": [32, 64], "center_input_sample": False, "cross_attention_dim": t5.d_model,
                "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "downsample_padding": 1,
                "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 8, "layers_per_block": 1,
                "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 8,
                "sample_size": [8, 4], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
                "use_linear_projection": True, "upcast_attention": True}
    unet = UNet2DConditionModel.from_config({k: v for k, v in unet_cfg.items() if not k.startswith("_")})
    main = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    main.update({f"text_encoder.{k}": v for k, v in text_encoder.state_dict().items()})
    torch.save(main, folder / "pytorch_model_main.bin")
    (folder / "diffusion_model_config.json").write_text(json.dumps(unet_cfg, indent=2))
    (folder / "main_config.json").write_text(json.dumps({
        "text_encoder_name": "google/flan-t5-large", "scheduler_name": "stabilityai/stable-diffusion-2-1",
        "unet_model_name": None, "unet_model_config_path": "configs/diffusion_model_config.json",
        "snr_gamma": 5.0, "freeze_text_encoder": True, "uncondition": False}))

    vae = _original_vae_modules(TINY_VAE_CONFIG["ddconfig"], TINY_VAE_CONFIG["embed_dim"])
    vae_sd = {}
    for key, value in vae.state_dict().items():  # distinct random values everywhere, norms near 1
        noise = torch.randn(value.shape, generator=gen)
        is_norm_w = value.dim() == 1 and key.endswith("weight") and ".norm" in key
        fan_in = value[0].numel() if value.dim() > 1 else 1
        vae_sd[key] = 1.0 + 0.1 * noise if is_norm_w else noise * (0.05 if value.dim() == 1 else fan_in ** -0.5)
    voc_cfg = dict(AUDIOLDM_VOCODER_CONFIG, upsample_initial_channel=32)
    vae_sd.update({f"vocoder.{k}": v for k, v in _original_hifigan_state_dict(voc_cfg, vocoder_weight_norm,
                                                                               gen).items()})
    torch.save(vae_sd, folder / "pytorch_model_vae.bin")
    (folder / "vae_config.json").write_text(json.dumps(TINY_VAE_CONFIG))
    (folder / "stft_config.json").write_text(json.dumps(TANGO_STFT_CONFIG))
    torch.save(_tacotron_stft_buffers(TANGO_STFT_CONFIG), folder / "pytorch_model_stft.bin")
    return folder


def make_tiny_audioldm(folder, seed: int = 0) -> Path:
    """Write a tiny random diffusers AudioLDM folder (model_index.json + vae/ text_encoder/ tokenizer/
    unet/ scheduler/ vocoder/), laid out like cvssp/audioldm-s-full-v2, via AudioLDMPipeline.save_pretrained."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        _write_tiny_audioldm(folder, seed)
    return folder


def _write_tiny_audioldm(folder: Path, seed: int) -> None:
    from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, RobertaTokenizer, SpeechT5HifiGan, \
        SpeechT5HifiGanConfig

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in _byte_alphabet():
        vocab.setdefault(ch, len(vocab))
    vocab["<mask>"] = len(vocab)
    tokenizer = RobertaTokenizer(vocab=vocab, merges=[], model_max_length=32)
    torch.manual_seed(seed)
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
        max_position_embeddings=40, projection_dim=32, bos_token_id=0, pad_token_id=1, eos_token_id=2))
    unet = UNet2DConditionModel(
        sample_size=(8, 4), in_channels=8, out_channels=8, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(32, 64), class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=32, class_embeddings_concat=True, attention_head_dim=4)
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=8, block_out_channels=[32, 64, 64],
                        down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
                        layers_per_block=1, scaling_factor=TANGO_SCALE_FACTOR)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                              beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(**dict(AUDIOLDM_VOCODER_CONFIG, upsample_initial_channel=32)))
    pipe = AudioLDMPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            vocoder=vocoder)
    pipe.save_pretrained(folder, safe_serialization=True)
