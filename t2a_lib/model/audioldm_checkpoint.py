"""AudioLDM's weights: its original VAE and HiFi-GAN key names onto diffusers / transformers modules, and
diffusers AudioLDM folders (e.g. cvssp/audioldm-s-full-v2) loaded offline.

Tango stores AudioLDM's VAE and vocoder in the original latent-diffusion names, so ``tango_checkpoint``
uses the conversions here; see ``checkpoints`` for the component dict every loader returns.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch

from .autoencoder import frames_per_latent
from .checkpoints import (AUDIOLDM_HOW_TO, CheckpointError, WeightsNotFoundError, check_dtypes, check_finite, few,
                          read_config, resolve_folder)

# AudioLDM's HIFIGAN_16K_64 (audioldm/hifigan/utilities.py) in SpeechT5HifiGanConfig's names.
AUDIOLDM_VOCODER_CONFIG = {"model_in_dim": 64, "sampling_rate": 16000, "upsample_initial_channel": 1024,
                           "upsample_rates": [5, 4, 2, 2, 2], "upsample_kernel_sizes": [16, 16, 8, 4, 4],
                           "resblock_kernel_sizes": [3, 7, 11],
                           "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
                           "normalize_before": False}


_HIFIGAN_NAMES = {"num_mels": "model_in_dim"}  # AudioLDM's config key -> SpeechT5HifiGanConfig's


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
        raise CheckpointError(f"{len(unknown)} VAE tensors have no place in diffusers' AutoencoderKL: {few(unknown)} "
                              "(attention inside the down/up levels and 3x3 conv shortcuts are not supported).")
    return out


def diffusers_vae_config(vae_config: dict) -> dict:
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
        raise CheckpointError(f"Vocoder weight-norm tensors without their gain: {few(stray)}.")
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
        raise CheckpointError(f"{len(unknown)} vocoder tensors are not HiFi-GAN generator weights: {few(unknown)}.")
    return out, "+".join(sorted(forms)) or "empty"


def hifigan_output_length(config: dict, n_frames: int) -> int:
    """Samples a HiFi-GAN gives for ``n_frames`` mel frames: each ConvTranspose1d maps L to
    (L - 1) * u - 2 * ((k - u) // 2) + k. AudioLDM's first layer (k 16, u 5) gives 5 L + 1, so its
    vocoder returns 160 T + 32 samples; trim to 160 T (as diffusers' AudioLDMPipeline does)."""
    n = int(n_frames)
    for u, k in zip(config["upsample_rates"], config["upsample_kernel_sizes"]):
        n = (n - 1) * u - 2 * ((k - u) // 2) + k
    return n


def extra_samples(config: dict) -> int:
    """Samples the vocoder gives beyond hop * frames (a constant: 32 for AudioLDM's HiFi-GAN)."""
    return hifigan_output_length(config, 1000) - 1000 * int(np.prod(config["upsample_rates"]))


def vocoder_config(folder: Path, sd: dict) -> dict:
    """AudioLDM's HiFi-GAN config, overridden by an optional vocoder_config.json, widths from the weights."""
    cfg = dict(AUDIOLDM_VOCODER_CONFIG)
    if (folder / "vocoder_config.json").is_file():
        extra = read_config(folder / "vocoder_config.json")
        cfg.update({_HIFIGAN_NAMES.get(k, k): v for k, v in extra.items() if _HIFIGAN_NAMES.get(k, k) in cfg})
    if "conv_pre.weight" in sd:  # (upsample_initial_channel, n_mels, 7)
        cfg["upsample_initial_channel"], cfg["model_in_dim"] = map(int, sd["conv_pre.weight"].shape[:2])
    n_ups = len({k.split(".")[1] for k in sd if k.startswith("upsampler.")})
    if n_ups != len(cfg["upsample_rates"]):
        raise CheckpointError(f"The vocoder has {n_ups} upsampling layers but the config has "
                              f"{len(cfg['upsample_rates'])} rates; put its HiFi-GAN config in "
                              f"'{folder / 'vocoder_config.json'}'.")
    return cfg


_AUDIOLDM_FILES = {"vae": "config.json", "unet": "config.json", "text_encoder": "config.json",
                   "vocoder": "config.json", "scheduler": "scheduler_config.json", "tokenizer": "tokenizer_config.json"}


def _audioldm_index(folder: Path):
    """model_index.json of an AudioLDMPipeline folder whose parts are all present: (index, scheduler name,
    scheduler class); WeightsNotFoundError names what is missing."""
    import diffusers

    if not (folder / "model_index.json").is_file():
        raise WeightsNotFoundError(f"The AudioLDM folder '{folder}' lacks model_index.json. {AUDIOLDM_HOW_TO}.")
    index = read_config(folder / "model_index.json")
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
    return index, sched_name, sched_cls


def _check_loaded(module, part_dir: Path) -> None:
    """from_pretrained casts what it reads to the model's dtype: check each safetensors header's
    dtypes against the model (an ``I32`` float weight is refused) and the loaded values for NaN/Inf."""
    from safetensors import safe_open

    expected = module.state_dict()
    for path in sorted(part_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            headers = {k: torch.empty(0, dtype=_dtype(f.get_slice(k).get_dtype())) for k in f.keys()}
        check_dtypes(expected, headers, part_dir.name, path)
    check_finite(expected, part_dir)


def _dtype(name: str) -> torch.dtype:
    """A safetensors header dtype name (``F32``, ``I32``, ``BF16``...) as a torch dtype."""
    table = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
             "BOOL": torch.bool}
    return table.get(name, torch.uint8)


def load_audioldm(folder) -> dict:
    """Load a diffusers AudioLDM folder (e.g. cvssp/audioldm-s-full-v2) with local_files_only=True.

    The text embedding (CLAP text projection) enters the UNet as its class embedding, not by
    cross-attention: ``conditioning == "class_embedding"``.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, ClapTextModelWithProjection, SpeechT5HifiGan

    folder = resolve_folder(folder, AUDIOLDM_HOW_TO)
    index, sched_name, sched_cls = _audioldm_index(folder)
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
    for part in ("vae", "unet", "text_encoder", "vocoder"):
        _check_loaded(parts[part], folder / part)
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
            "latent_downsampling": frames_per_latent(parts["vae"].config),
            "hop_length": int(np.prod(voc.upsample_rates)), "sample_rate": int(voc.sampling_rate),
            "vocoder_extra_samples": extra_samples(voc.to_dict())}
    return {**parts, "scale_factor": float(parts["vae"].config.scaling_factor),
            "conditioning": "class_embedding", "info": info}
