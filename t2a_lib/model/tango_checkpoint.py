"""Tango / Tango 2 snapshots (HF declare-lab/tango, tango2, tango-full-ft-audiocaps) onto our components.

The layout of a snapshot, and the component dict returned, are described in ``checkpoints``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .audioldm_checkpoint import (audioldm_vae_to_diffusers, diffusers_vae_config, extra_samples, hifigan_to_speecht5,
                                  vocoder_config)
from .autoencoder import frames_per_latent
from .checkpoints import (TANGO_HOW_TO, CheckpointError, WeightsNotFoundError, few, load_checked, load_weights_file,
                          read_config, resolve_folder, weights_path)

TANGO_SCALE_FACTOR = 0.9227914214134216


FLAN_HOW_TO = ("Tango's text encoder config and tokenizer come from google/flan-t5-large (its weights are in "
               "pytorch_model_main.bin). On a machine with internet run `huggingface-cli download "
               "google/flan-t5-large config.json tokenizer.json tokenizer_config.json spiece.model "
               "special_tokens_map.json --local-dir <dir>`, then copy <dir> beside the Tango folder as "
               "'flan-t5-large' (or into it as 'text_encoder'), or pass text_encoder_path=<dir>")


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
# Tango's clip: AudioDiffusion.inference draws latents (B, 8, 256, 16), the VAE's 4x-downsampled
# 1024 mel frames x 64 bins, hop 160 at 16 kHz: 10.24 s. The UNet config's sample_size [32, 2]
# is a leftover of the Stable Diffusion config it was written from; Tango never reads it.
TANGO_CLIP_FRAMES = 1024


# stabilityai/stable-diffusion-2-1's scheduler, which Tango loads as a DDPMScheduler.
TANGO_SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                          "beta_schedule": "scaled_linear", "prediction_type": "v_prediction",
                          "clip_sample": False, "steps_offset": 1}


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
                              f"{len(unet)} unet.*, {len(text)} text_encoder.*, and others: {few(other) or 'none'}.")
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
        return read_config(p), str(p)
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
            return read_config(c), str(c)
    if isinstance(named, str) and Path(named).name == "diffusion_model_config.json":
        return dict(TANGO_UNET_CONFIG), "built-in copy of declare-lab/tango configs/diffusion_model_config.json"
    raise WeightsNotFoundError(f"No UNet config for the Tango checkpoint in '{folder}': tried "
                               f"{few(map(str, candidates), 8)}. Pass unet_config=<dict or json path>.")


def _text_encoder_dir(folder: Path, text_encoder_path, name) -> tuple[Path, str]:
    if text_encoder_path is not None:
        p = Path(text_encoder_path).expanduser()
        if (p / "config.json").is_file():
            return p, str(p)
        raise WeightsNotFoundError(f"text_encoder_path '{p}' has no config.json. {FLAN_HOW_TO}.")
    for near in (folder / "text_encoder", folder.parent / "flan-t5-large"):  # inside, or beside the snapshot
        if (near / "config.json").is_file():
            return near, str(near)
    if isinstance(name, str) and name:
        from huggingface_hub import try_to_load_from_cache
        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            return Path(cached).parent, f"HF cache of {name}"
    raise WeightsNotFoundError(f"No text encoder config for the Tango checkpoint in '{folder}': no text_encoder_path "
                               f"given, no '{folder / 'text_encoder' / 'config.json'}' nor "
                               f"'{folder.parent / 'flan-t5-large' / 'config.json'}', and '{name}' is not in the "
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
    load_checked(model, sd, "text encoder", source, f"Its config came from '{te_dir}'.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(te_dir, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise WeightsNotFoundError(f"No usable tokenizer files in '{te_dir}' ({exc}). {FLAN_HOW_TO}.") from None
    return model.eval(), tokenizer


def _tango_scheduler(folder: Path, name):
    from diffusers import DDPMScheduler
    local = folder / "scheduler" / "scheduler_config.json"
    if local.is_file():
        return DDPMScheduler.from_config(read_config(local)), str(local)
    if isinstance(name, str) and name:
        from huggingface_hub import try_to_load_from_cache
        cached = try_to_load_from_cache(name, "scheduler/scheduler_config.json")
        if isinstance(cached, str):
            return DDPMScheduler.from_config(read_config(Path(cached))), f"HF cache of {name}"
    return DDPMScheduler(**TANGO_SCHEDULER_CONFIG), "built-in copy of stable-diffusion-2-1's scheduler config"


def _stft_info(folder: Path) -> dict:
    cfg_path, weights = folder / "stft_config.json", weights_path(folder, "pytorch_model_stft")
    if not cfg_path.is_file():
        return {"present": False}
    from ..audio.mel import mel_filterbank
    cfg = read_config(cfg_path)
    info = {"present": True, "config": cfg}
    if weights is not None:
        basis = load_weights_file(weights).get("mel_basis")
        if basis is not None:
            ours = mel_filterbank(int(cfg["sampling_rate"]), int(cfg["filter_length"]), int(cfg["n_mel_channels"]),
                                  float(cfg["mel_fmin"]), float(cfg["mel_fmax"]))
            if tuple(basis.shape) == ours.shape:
                info["mel_basis_max_abs_diff_vs_ours"] = float(np.abs(basis.numpy() - ours).max())
    return info


def _vae_and_vocoder(folder: Path, vae_w: Path, vae_config: dict):
    """pytorch_model_vae.bin: AudioLDM's VAE (diffusers AutoencoderKL) and its ``vocoder.*`` HiFi-GAN
    (SpeechT5HifiGan); returns (vae, its diffusers config, vocoder, its config, the vocoder weights' form)."""
    from diffusers import AutoencoderKL
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    vae_all = load_weights_file(vae_w)
    voc_sd = {k[len("vocoder."):]: v for k, v in vae_all.items() if k.startswith("vocoder.")}
    vcfg = diffusers_vae_config(vae_config)
    vae = AutoencoderKL(**vcfg)
    vae_sd = audioldm_vae_to_diffusers({k: v for k, v in vae_all.items() if not k.startswith("vocoder.")},
                                       len(vcfg["block_out_channels"]))
    load_checked(vae, vae_sd, "VAE", vae_w)
    if not voc_sd:
        raise CheckpointError(f"'{vae_w}' has no vocoder.* tensors (Tango stores AudioLDM's HiFi-GAN there).")
    voc_sd, voc_form = hifigan_to_speecht5(voc_sd)
    voc_cfg = vocoder_config(folder, voc_sd)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(**voc_cfg))
    voc_sd.update(mean=torch.zeros(voc_cfg["model_in_dim"]), scale=torch.ones(voc_cfg["model_in_dim"]))
    load_checked(vocoder, voc_sd, "vocoder", vae_w)
    return vae, vcfg, vocoder, voc_cfg, voc_form


def load_tango(folder, text_encoder_path=None, unet_config=None) -> dict:
    """Load a Tango / Tango 2 snapshot folder (or a cached ``declare-lab/...`` repo id) onto our components.

    ``text_encoder_path``: a local folder with flan-t5-large's config.json and tokenizer files (its weights
    are not needed: they come from pytorch_model_main.bin); by default ``<folder>/text_encoder``,
    ``<folder>/../flan-t5-large`` (beside the snapshot) or the HF cache of main_config's
    ``text_encoder_name``. ``unet_config``: a dict or json path overriding the UNet config search
    (inline in main_config, next to the checkpoint, else Tango's published config).
    """
    from diffusers import UNet2DConditionModel

    folder = resolve_folder(folder, TANGO_HOW_TO)
    main_w, vae_w = weights_path(folder, "pytorch_model_main"), weights_path(folder, "pytorch_model_vae")
    missing = [n for n in ("main_config.json", "vae_config.json") if not (folder / n).is_file()]
    missing += [f"{stem}.bin (or .safetensors)" for stem, w in
                (("pytorch_model_main", main_w), ("pytorch_model_vae", vae_w)) if w is None]
    if missing:
        raise WeightsNotFoundError(f"The Tango checkpoint folder '{folder}' lacks {', '.join(missing)}. "
                                   f"{TANGO_HOW_TO}.")
    main_config = read_config(folder / "main_config.json")
    vae_config = read_config(folder / "vae_config.json")

    unet_sd, te_sd = _split_main(load_weights_file(main_w), main_w)
    ucfg, ucfg_source = _unet_config(folder, main_config, unet_config)
    unet = UNet2DConditionModel.from_config({k: v for k, v in ucfg.items() if not k.startswith("_")})
    load_checked(unet, unet_sd, "UNet", main_w, f"The UNet config came from: {ucfg_source}.")
    te_dir, te_source = _text_encoder_dir(folder, text_encoder_path, main_config.get("text_encoder_name"))
    text_encoder, tokenizer = _t5_encoder(te_dir, te_sd, main_w)

    vae, vcfg, vocoder, voc_cfg, voc_form = _vae_and_vocoder(folder, vae_w, vae_config)
    size_in_config = tango_default_size(unet, vcfg)  # 10.24 s, never the config's leftover
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
            "latent_downsampling": frames_per_latent(vcfg),
            "hop_length": int(np.prod(voc_cfg["upsample_rates"])), "sample_rate": voc_cfg["sampling_rate"],
            "vocoder_extra_samples": extra_samples(voc_cfg), "unet_sample_size_in_config": size_in_config}
    return {"vae": vae.eval(), "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet.eval(),
            "scheduler": scheduler, "vocoder": vocoder.eval(), "scale_factor": float(vcfg["scaling_factor"]),
            "conditioning": "cross_attention", "info": info}


def tango_default_size(unet, vae_config: dict):
    """Set the UNet's ``sample_size`` to Tango's inference latent, ``TANGO_CLIP_FRAMES`` mel frames
    and 64 mel bins each divided by the VAE's downsampling (256 x 16 for the real VAE), so a
    pipeline samples Tango's 10.24 s by default; returns the config's own value, for the record."""
    f = frames_per_latent(vae_config)
    in_config = unet.config.sample_size
    unet.register_to_config(sample_size=[TANGO_CLIP_FRAMES // f, 64 // f])
    return list(in_config) if isinstance(in_config, (list, tuple)) else in_config
