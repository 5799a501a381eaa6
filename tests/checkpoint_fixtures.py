"""Tiny random checkpoints laid out like the real files (Tango snapshots, diffusers AudioLDM folders),
for the tests of the loaders in ``t2a_lib.model.checkpoints`` (no weights needed, nothing downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from t2a_lib.model.audioldm_checkpoint import AUDIOLDM_VOCODER_CONFIG
from t2a_lib.model.tango_checkpoint import TANGO_SCALE_FACTOR
from t2a_lib.scoring.clap_real import _byte_alphabet

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

    from t2a_lib.audio.mel import mel_filterbank
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


# declare-lab/tango2's files as the hub lists them (huggingface.co/declare-lab/tango2/tree/main): what
# `huggingface-cli download declare-lab/tango2` gives; no text_encoder/ (Tango reads google/flan-t5-large).
TANGO2_PUBLISHED_FILES = (".gitattributes", "README.md", "config.json", "main_config.json", "pytorch_model_main.bin",
                          "pytorch_model_stft.bin", "pytorch_model_vae.bin", "stft_config.json", "vae_config.json")
FLAN_FOLDER = "flan-t5-large"  # the tiny stand-in for google/flan-t5-large, written beside the snapshot


def make_tiny_tango(folder, seed: int = 0, vocoder_weight_norm: bool = False) -> Path:
    """Write a tiny random Tango snapshot to ``folder``, with exactly the published files of declare-lab/tango2
    (``TANGO2_PUBLISHED_FILES``) in the real files' layout and key names.

    Files: main_config.json (the published keys, pointing at configs/diffusion_model_config.json, a file of
    Tango's code repository, plus the tiny UNet's config inline under ``unet_model_config``: the real one's is
    built in), config.json (the same kwargs), pytorch_model_main.bin (``unet.*``, ``text_encoder.*``),
    vae_config.json + pytorch_model_vae.bin (AudioLDM's original VAE names + ``vocoder.*``; plain weights like
    the real file, or weight_g/weight_v with ``vocoder_weight_norm=True``), stft_config.json +
    pytorch_model_stft.bin, .gitattributes, README.md. Beside it, ``../flan-t5-large/``: a tiny T5 config +
    tokenizer standing in for google/flan-t5-large, which the published snapshot does not hold (its own
    weights, saved from another seed, are ignored by load_tango: Tango's come from pytorch_model_main.bin).
    Mel (B, 1, T, 64) -> latent (B, 8, T/4, 16); the vocoder keeps AudioLDM's hop of 160.
    """
    with torch.random.fork_rng():  # leave the caller's global RNG as it was
        return _write_tiny_tango(Path(folder), seed, vocoder_weight_norm)


def _write_tiny_tango(folder: Path, seed: int, vocoder_weight_norm: bool) -> Path:
    from diffusers import UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    from t2a_lib.world.text import build_world_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    tokenizer = build_world_tokenizer()
    t5 = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                  relative_attention_num_buckets=8, relative_attention_max_distance=32, decoder_start_token_id=0,
                  pad_token_id=0, eos_token_id=1, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    torch.manual_seed(seed + 1)
    T5EncoderModel(t5).save_pretrained(folder.parent / FLAN_FOLDER)
    tokenizer.save_pretrained(folder.parent / FLAN_FOLDER)
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
    kwargs = {"text_encoder_name": "google/flan-t5-large", "scheduler_name": "stabilityai/stable-diffusion-2-1",
              "unet_model_name": None, "unet_model_config_path": "configs/diffusion_model_config.json",
              "snr_gamma": 5.0, "freeze_text_encoder": True, "uncondition": False}
    (folder / "config.json").write_text(json.dumps(kwargs))
    (folder / "main_config.json").write_text(json.dumps({**kwargs, "unet_model_config": unet_cfg}))
    (folder / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    (folder / "README.md").write_text("---\nlicense: cc-by-nc-sa-4.0\n---\nA tiny random stand-in for Tango 2.\n")

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
