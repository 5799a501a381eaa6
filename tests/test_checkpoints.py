"""Tests for t2a_lib.model.checkpoints (tango_checkpoint, audioldm_checkpoint) on tiny random checkpoints written in the real layouts (no weights needed).

The VAE and vocoder mappings are checked without re-using the mapping: tensors are matched by value
(every original tensor is random, so equal values identify it), and the loaded diffusers/transformers
modules are run against a functional re-implementation of the *original* AudioLDM VAE and HiFi-GAN
forwards written here from the original key names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checkpoint_fixtures import FLAN_FOLDER, make_tiny_audioldm, make_tiny_tango
from t2a_lib.model import checkpoints as ck
from t2a_lib.model.audioldm_checkpoint import hifigan_output_length, load_audioldm
from t2a_lib.model.checkpoints import CheckpointError, WeightsNotFoundError, load_real_checkpoint
from t2a_lib.model.tango_checkpoint import load_tango

T = 32  # mel frames in the shape tests


@pytest.fixture(scope="module")
def tango_dir(tmp_path_factory):
    return make_tiny_tango(tmp_path_factory.mktemp("tango"), seed=0)


@pytest.fixture(scope="module")
def tango(tango_dir):
    return load_tango(tango_dir)


@pytest.fixture(scope="module")
def tango_wn_dir(tmp_path_factory):
    return make_tiny_tango(tmp_path_factory.mktemp("tango_wn"), seed=1, vocoder_weight_norm=True)


@pytest.fixture(scope="module")
def audioldm_dir(tmp_path_factory):
    return make_tiny_audioldm(tmp_path_factory.mktemp("audioldm"), seed=0)


def _raw(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _copy(src, tmp_path, name="copy"):
    """A copy of a snapshot, with the flan-t5 stand-in beside it as make_tiny_tango writes it."""
    shutil.copytree(Path(src).parent / FLAN_FOLDER, tmp_path / FLAN_FOLDER, dirs_exist_ok=True)
    return shutil.copytree(src, tmp_path / name)


# ------------------------------------------------------------------------------------ layout

def test_tiny_tango_has_the_real_layout(tango_dir):
    for name in ck.TANGO_REQUIRED + ("stft_config.json", "pytorch_model_stft.bin"):
        assert (tango_dir / name).is_file(), name
    main = _raw(tango_dir / "pytorch_model_main.bin")
    assert {k.split(".")[0] for k in main} == {"unet", "text_encoder"}
    vae = _raw(tango_dir / "pytorch_model_vae.bin")
    for key in ("encoder.down.0.block.0.norm1.weight", "encoder.down.0.downsample.conv.weight",
                "encoder.mid.attn_1.q.weight", "encoder.norm_out.weight", "decoder.up.0.block.0.conv1.weight",
                "decoder.up.2.upsample.conv.weight", "quant_conv.weight", "post_quant_conv.bias",
                "vocoder.conv_pre.weight", "vocoder.ups.0.weight", "vocoder.resblocks.0.convs1.0.weight"):
        assert key in vae, key
    assert vae["encoder.mid.attn_1.q.weight"].shape[2:] == (1, 1)
    assert set(_raw(tango_dir / "pytorch_model_stft.bin")) == {"mel_basis", "stft_fn.forward_basis",
                                                               "stft_fn.inverse_basis"}
    main_config = json.loads((tango_dir / "main_config.json").read_text())
    assert main_config["text_encoder_name"] == "google/flan-t5-large"
    assert json.loads((tango_dir / "vae_config.json").read_text())["scale_factor"] == pytest.approx(0.9227914214134216)


# ------------------------------------------------------------------------------ tango loading

def test_tango_components_and_info(tango):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import SpeechT5HifiGan, T5EncoderModel

    assert isinstance(tango["vae"], AutoencoderKL)
    assert isinstance(tango["unet"], UNet2DConditionModel)
    assert isinstance(tango["text_encoder"], T5EncoderModel)
    assert isinstance(tango["vocoder"], SpeechT5HifiGan)
    assert isinstance(tango["scheduler"], DDPMScheduler)
    assert tango["conditioning"] == "cross_attention"
    assert tango["scale_factor"] == pytest.approx(0.9227914214134216)
    assert tango["vae"].config.scaling_factor == pytest.approx(0.9227914214134216)
    sc = tango["scheduler"].config
    assert (sc.num_train_timesteps, sc.beta_schedule, sc.prediction_type) == (1000, "scaled_linear", "v_prediction")
    assert (sc.beta_start, sc.beta_end) == (0.00085, 0.012)
    info = tango["info"]
    assert info["format"] == "tango" and info["vocoder_weights"] == "plain"
    assert info["latent_downsampling"] == 4 and info["hop_length"] == 160 and info["sample_rate"] == 16000
    assert info["unet_config_source"] == "main_config.json['unet_model_config']"
    assert info["stft"]["mel_basis_max_abs_diff_vs_ours"] < 1e-6


def test_unet_and_text_encoder_tensors_equal_the_file(tango, tango_dir):
    main = _raw(tango_dir / "pytorch_model_main.bin")
    unet_sd, te_sd = tango["unet"].state_dict(), tango["text_encoder"].state_dict()
    assert len(unet_sd) + len(te_sd) == len(main)
    for k, v in unet_sd.items():
        assert torch.equal(v, main[f"unet.{k}"]), k
    for k, v in te_sd.items():
        assert torch.equal(v, main[f"text_encoder.{k}"]), k
    # the flan-t5 stand-in holds its own (other-seed) weights: the ones used are Tango's, from the main file
    from transformers import T5EncoderModel
    standalone = T5EncoderModel.from_pretrained(tango_dir.parent / FLAN_FOLDER, local_files_only=True)
    assert not torch.equal(standalone.shared.weight, te_sd["shared.weight"])


def _flat_key(t: torch.Tensor):
    return t.numel(), t.detach().float().contiguous().numpy().tobytes()


def test_every_original_vae_tensor_lands_exactly_once(tango, tango_dir):
    original = {k: v for k, v in _raw(tango_dir / "pytorch_model_vae.bin").items() if not k.startswith("vocoder.")}
    by_value = {}
    for k, v in original.items():
        by_value.setdefault(_flat_key(v), []).append(k)
    assert all(len(ks) == 1 for ks in by_value.values()), "tiny tensors should be distinct"
    used = []
    for name, t in tango["vae"].state_dict().items():
        hits = by_value.get(_flat_key(t), [])
        assert len(hits) == 1, f"{name} matches {hits}"
        src = original[hits[0]]
        if t.shape != src.shape:  # only the attention 1x1 convs -> linear
            assert src.shape == (*t.shape, 1, 1) and hits[0].split(".")[-2] in ("q", "k", "v", "proj_out"), name
            assert torch.equal(src.reshape(t.shape), t)
        used.append(hits[0])
    assert sorted(used) == sorted(original)  # every original key consumed exactly once


# A functional forward of AudioLDM's original Encoder/Decoder (audioldm/variational_autoencoder/modules.py),
# written from the original key names only.
def _gn(x, sd, p):
    return F.group_norm(x, 32, sd[p + ".weight"], sd[p + ".bias"], eps=1e-6)


def _conv(x, sd, p, **kw):
    return F.conv2d(x, sd[p + ".weight"], sd[p + ".bias"], **kw)


def _resnet(x, sd, p):
    h = _conv(F.silu(_gn(x, sd, p + ".norm1")), sd, p + ".conv1", padding=1)
    h = _conv(F.silu(_gn(h, sd, p + ".norm2")), sd, p + ".conv2", padding=1)
    return (_conv(x, sd, p + ".nin_shortcut") if p + ".nin_shortcut.weight" in sd else x) + h


def _attn(x, sd, p):
    h = _gn(x, sd, p + ".norm")
    q, k, v = (_conv(h, sd, f"{p}.{n}") for n in "qkv")
    b, c, hh, ww = q.shape
    w = torch.softmax(torch.bmm(q.reshape(b, c, -1).transpose(1, 2), k.reshape(b, c, -1)) * c ** -0.5, dim=2)
    out = torch.bmm(v.reshape(b, c, -1), w.transpose(1, 2)).reshape(b, c, hh, ww)
    return x + _conv(out, sd, p + ".proj_out")


def _mid(x, sd, p):
    return _resnet(_attn(_resnet(x, sd, p + ".block_1"), sd, p + ".attn_1"), sd, p + ".block_2")


def _ref_encode(x, sd, n_levels, n_res):
    h = _conv(x, sd, "encoder.conv_in", padding=1)
    for i in range(n_levels):
        for j in range(n_res):
            h = _resnet(h, sd, f"encoder.down.{i}.block.{j}")
        if i != n_levels - 1:
            h = _conv(F.pad(h, (0, 1, 0, 1)), sd, f"encoder.down.{i}.downsample.conv", stride=2)
    h = _mid(h, sd, "encoder.mid")
    h = _conv(F.silu(_gn(h, sd, "encoder.norm_out")), sd, "encoder.conv_out", padding=1)
    return _conv(h, sd, "quant_conv")


def _ref_decode(z, sd, n_levels, n_res):
    h = _conv(_conv(z, sd, "post_quant_conv"), sd, "decoder.conv_in", padding=1)
    h = _mid(h, sd, "decoder.mid")
    for i in reversed(range(n_levels)):
        for j in range(n_res + 1):
            h = _resnet(h, sd, f"decoder.up.{i}.block.{j}")
        if i != 0:
            h = _conv(F.interpolate(h, scale_factor=2.0, mode="nearest"), sd, f"decoder.up.{i}.upsample.conv",
                      padding=1)
    return _conv(F.silu(_gn(h, sd, "decoder.norm_out")), sd, "decoder.conv_out", padding=1)


def test_vae_matches_the_original_forward(tango, tango_dir):
    sd = _raw(tango_dir / "pytorch_model_vae.bin")
    dd = json.loads((tango_dir / "vae_config.json").read_text())["ddconfig"]
    n_levels, n_res = len(dd["ch_mult"]), dd["num_res_blocks"]
    vae = tango["vae"]
    mel = torch.randn(2, 1, T, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # the first layer alone: conv_in is a plain conv2d with the original weights
        assert torch.allclose(vae.encoder.conv_in(mel), F.conv2d(mel, sd["encoder.conv_in.weight"],
                                                                 sd["encoder.conv_in.bias"], padding=1), atol=1e-6)
        moments = vae.encode(mel).latent_dist.parameters
        ref = _ref_encode(mel, sd, n_levels, n_res)
        assert moments.shape == (2, 16, T // 4, 16)
        assert torch.allclose(moments, ref, atol=1e-4, rtol=1e-4), (moments - ref).abs().max()
        z = moments[:, :8]
        dec = vae.decode(z).sample
        ref_dec = _ref_decode(z, sd, n_levels, n_res)
        assert dec.shape == (2, 1, T, 64)
        assert torch.allclose(dec, ref_dec, atol=1e-4, rtol=1e-4), (dec - ref_dec).abs().max()


def test_tango_shapes_and_text_conditioning(tango):
    vae, unet, te, tok = tango["vae"], tango["unet"], tango["text_encoder"], tango["tokenizer"]
    with torch.no_grad():
        latent = vae.encode(torch.randn(1, 1, T, 64)).latent_dist.mode() * tango["scale_factor"]
        assert latent.shape == (1, 8, T // 4, 16)
        assert vae.decode(latent / tango["scale_factor"]).sample.shape == (1, 1, T, 64)
        batch = tok(["a dog barks, then a siren wails", "rain falls"], padding=True, return_tensors="pt")
        states = te(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        assert states.shape[-1] == unet.config.cross_attention_dim
        noisy = torch.cat([latent, latent])
        out = unet(noisy, torch.tensor([10, 500]), encoder_hidden_states=states,
                   encoder_attention_mask=batch.attention_mask.bool()).sample
        assert out.shape == noisy.shape and torch.isfinite(out).all()
        wave = tango["vocoder"](torch.randn(1, T, 64))
    # AudioLDM's HiFi-GAN: 160 samples per frame plus 32 (its first upsampler maps L to 5L + 1)
    assert wave.shape == (1, 160 * T + 32) == (1, hifigan_output_length(tango["info"]["vocoder_config"], T))
    assert tango["info"]["vocoder_extra_samples"] == 32


# ----------------------------------------------------------------------------------- vocoder

def _fold_np(g, v):
    g, v = g.numpy().astype(np.float64), v.numpy().astype(np.float64)
    norm = np.sqrt((v.reshape(v.shape[0], -1) ** 2).sum(axis=1)).reshape((-1,) + (1,) * (v.ndim - 1))
    return g * v / norm


def _ref_hifigan(mel, w, cfg):
    """AudioLDM's Generator.forward (audioldm/hifigan/models.py) on (B, T, n_mels), weights by original name."""
    x = F.conv1d(mel.transpose(1, 2), w["conv_pre.weight"], w["conv_pre.bias"], padding=3)
    nk = len(cfg["resblock_kernel_sizes"])
    for i, (u, k) in enumerate(zip(cfg["upsample_rates"], cfg["upsample_kernel_sizes"])):
        x = F.conv_transpose1d(F.leaky_relu(x, 0.1), w[f"ups.{i}.weight"], w[f"ups.{i}.bias"], stride=u,
                               padding=(k - u) // 2)
        xs = 0
        for j, (rk, dil) in enumerate(zip(cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"])):
            p, y = f"resblocks.{i * nk + j}", x
            for n, d in enumerate(dil):
                t = F.conv1d(F.leaky_relu(y, 0.1), w[f"{p}.convs1.{n}.weight"], w[f"{p}.convs1.{n}.bias"],
                             dilation=d, padding=(rk * d - d) // 2)
                t = F.conv1d(F.leaky_relu(t, 0.1), w[f"{p}.convs2.{n}.weight"], w[f"{p}.convs2.{n}.bias"],
                             padding=(rk - 1) // 2)
                y = y + t
            xs = xs + y
        x = xs / nk
    x = F.conv1d(F.leaky_relu(x), w["conv_post.weight"], w["conv_post.bias"], padding=3)
    return torch.tanh(x).squeeze(1)


def test_weight_norm_vocoder_is_folded(tango_wn_dir):
    loaded = load_tango(tango_wn_dir)
    assert loaded["info"]["vocoder_weights"] == "weight_norm"
    raw = {k[len("vocoder."):]: v for k, v in _raw(tango_wn_dir / "pytorch_model_vae.bin").items()
           if k.startswith("vocoder.")}
    sd = loaded["vocoder"].state_dict()
    n_checked, folded = 0, {}
    for key in [k for k in raw if k.endswith("weight_g")]:
        prefix = key[: -len(".weight_g")]
        expected = _fold_np(raw[key], raw[prefix + ".weight_v"])
        folded[prefix + ".weight"] = torch.from_numpy(expected).float()
        target = prefix.replace("ups.", "upsampler.", 1) if prefix.startswith("ups.") else prefix
        np.testing.assert_allclose(sd[target + ".weight"].numpy(), expected, rtol=1e-5, atol=1e-7)
        assert not np.allclose(expected, raw[prefix + ".weight_v"].numpy())  # g really rescales v
        n_checked += 1
    assert n_checked == 1 + 5 + 5 * 3 * 6 + 1  # conv_pre, ups, resblocks' convs1/convs2, conv_post
    for key in [k for k in raw if k.endswith(".bias")]:
        target = key.replace("ups.", "upsampler.", 1) if key.startswith("ups.") else key
        assert torch.equal(sd[target], raw[key])
    weights = {**{k: v for k, v in raw.items() if k.endswith(".bias")}, **folded}
    mel = torch.randn(1, 12, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours, ref = loaded["vocoder"](mel), _ref_hifigan(mel, weights, loaded["info"]["vocoder_config"])
    assert ours.shape == ref.shape == (1, 160 * 12 + 32)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()


def test_plain_vocoder_weights_are_copied(tango, tango_dir):
    raw = {k[len("vocoder."):]: v for k, v in _raw(tango_dir / "pytorch_model_vae.bin").items()
           if k.startswith("vocoder.")}
    sd = tango["vocoder"].state_dict()
    assert set(sd) - {"mean", "scale"} == {k.replace("ups.", "upsampler.", 1) if k.startswith("ups.") else k
                                           for k in raw}
    for k, v in raw.items():
        assert torch.equal(sd[k.replace("ups.", "upsampler.", 1) if k.startswith("ups.") else k], v), k


# ------------------------------------------------------------------------- safety and errors

def test_bin_files_load_with_weights_only(tango_dir, monkeypatch):
    real_load, calls = torch.load, []

    def checked_load(*args, **kwargs):
        assert kwargs.get("weights_only") is True, kwargs
        assert kwargs.get("map_location") == "cpu", kwargs
        calls.append(str(args[0]))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", checked_load)
    load_tango(tango_dir)
    assert {c.rsplit("/", 1)[-1] for c in calls} == {"pytorch_model_main.bin", "pytorch_model_vae.bin",
                                                     "pytorch_model_stft.bin"}


class _NotATensor:
    pass


def test_pickled_objects_are_refused(tango_dir, tmp_path):
    folder = _copy(tango_dir, tmp_path)
    torch.save({"unet.x": torch.zeros(1), "payload": _NotATensor()}, folder / "pytorch_model_main.bin")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_tango(folder)


def test_missing_folder_and_files(tango_dir, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no_such_tango") as exc:
        load_tango(tmp_path / "no_such_tango")
    assert isinstance(exc.value, FileNotFoundError)
    folder = _copy(tango_dir, tmp_path)
    (folder / "pytorch_model_vae.bin").unlink()
    (folder / "main_config.json").unlink()
    with pytest.raises(WeightsNotFoundError) as exc:
        load_tango(folder)
    msg = str(exc.value)
    assert str(folder) in msg and "pytorch_model_vae.bin" in msg and "main_config.json" in msg
    assert "pytorch_model_main.bin" not in msg and "huggingface-cli download declare-lab/tango2" in msg


def test_missing_text_encoder_config_says_what_to_download(tango_dir, tmp_path, monkeypatch):
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    folder = _copy(tango_dir, tmp_path)
    shutil.rmtree(tmp_path / FLAN_FOLDER)  # the snapshot exactly as published: no text encoder config
    with pytest.raises(WeightsNotFoundError, match="google/flan-t5-large") as exc:
        load_tango(folder)
    assert str(folder / "text_encoder") in str(exc.value) and str(tmp_path / FLAN_FOLDER) in str(exc.value)
    with pytest.raises(WeightsNotFoundError, match="nowhere"):
        load_tango(folder, text_encoder_path=tmp_path / "nowhere")
    flan = tango_dir.parent / FLAN_FOLDER
    loaded = load_tango(folder, text_encoder_path=flan)  # the explicit path works
    assert loaded["info"]["text_encoder_source"] == str(flan)


def test_unet_config_inline_explicit_and_wrong(tango_dir, tmp_path):
    folder = _copy(tango_dir, tmp_path)
    main = json.loads((folder / "main_config.json").read_text())
    cfg = main.pop("unet_model_config")
    main["unet_model_config_path"] = "configs/my_unet.json"
    (folder / "main_config.json").write_text(json.dumps(main))
    with pytest.raises(WeightsNotFoundError, match="my_unet.json"):
        load_tango(folder)
    assert load_tango(folder, unet_config=cfg)["info"]["unet_config_source"] == "argument"
    (folder / "diffusion_model_config.json").write_text(json.dumps(cfg))  # a file next to the checkpoint
    assert load_tango(folder)["info"]["unet_config_source"] == str(folder / "diffusion_model_config.json")
    main["unet_model_config"] = cfg
    (folder / "main_config.json").write_text(json.dumps(main))
    assert "main_config.json" in load_tango(folder)["info"]["unet_config_source"]
    with pytest.raises(CheckpointError, match="UNet weights .* do not fit") as exc:
        load_tango(folder, unet_config={**cfg, "block_out_channels": [32, 32]})
    assert "of another shape" in str(exc.value) and "argument" in str(exc.value)


def test_unexpected_and_missing_keys_are_listed(tango_dir, tmp_path):
    folder = _copy(tango_dir, tmp_path)
    vae = _raw(folder / "pytorch_model_vae.bin")
    vae["encoder.down.0.attn.0.q.weight"] = torch.zeros(32, 32, 1, 1)
    torch.save(vae, folder / "pytorch_model_vae.bin")
    with pytest.raises(CheckpointError, match=r"encoder\.down\.0\.attn\.0\.q\.weight"):
        load_tango(folder)
    vae.pop("encoder.down.0.attn.0.q.weight")
    vae.pop("decoder.up.1.block.0.norm2.bias")
    torch.save(vae, folder / "pytorch_model_vae.bin")
    with pytest.raises(CheckpointError, match=r"1 missing \(decoder\.up_blocks\.1\.resnets\.0\.norm2\.bias\)"):
        load_tango(folder)
    shutil.copy(tango_dir / "pytorch_model_vae.bin", folder / "pytorch_model_vae.bin")
    main = _raw(folder / "pytorch_model_main.bin")
    main["stray.weight"] = torch.zeros(2)
    torch.save(main, folder / "pytorch_model_main.bin")
    with pytest.raises(CheckpointError, match="stray.weight"):
        load_tango(folder)
    main.pop("stray.weight")
    main["group_in.0.weight"] = torch.zeros(512, 8)
    torch.save(main, folder / "pytorch_model_main.bin")
    with pytest.raises(CheckpointError, match="group_in"):
        load_tango(folder)


def test_safetensors_preferred_over_bin(tango_dir, tmp_path, monkeypatch):
    from safetensors.torch import save_file
    folder = _copy(tango_dir, tmp_path)
    main = _raw(folder / "pytorch_model_main.bin")
    main = {k: v.contiguous() for k, v in main.items() if k != "text_encoder.encoder.embed_tokens.weight"}
    save_file(main, folder / "pytorch_model_main.safetensors")  # tied embedding stored once
    (folder / "pytorch_model_main.bin").write_bytes(b"not a checkpoint")
    loaded = load_tango(folder)
    assert loaded["info"]["files"]["main"].endswith("pytorch_model_main.safetensors")
    assert torch.equal(loaded["text_encoder"].encoder.embed_tokens.weight, main["text_encoder.shared.weight"])


# ---------------------------------------------------------------------------------- AudioLDM

def test_audioldm_folder_loads(audioldm_dir):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextModelWithProjection, SpeechT5HifiGan

    for part in ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "vocoder"):
        assert (audioldm_dir / part).is_dir()
    assert json.loads((audioldm_dir / "model_index.json").read_text())["_class_name"] == "AudioLDMPipeline"
    c = load_audioldm(audioldm_dir)
    assert c["conditioning"] == "class_embedding"
    assert isinstance(c["vae"], AutoencoderKL) and isinstance(c["unet"], UNet2DConditionModel)
    assert isinstance(c["text_encoder"], ClapTextModelWithProjection) and isinstance(c["vocoder"], SpeechT5HifiGan)
    assert isinstance(c["scheduler"], DDIMScheduler)
    assert c["scale_factor"] == pytest.approx(0.9227914214134216)
    assert c["info"]["latent_downsampling"] == 4 and c["info"]["hop_length"] == 160
    with torch.no_grad():
        latent = c["vae"].encode(torch.randn(1, 1, T, 64)).latent_dist.mode()
        assert latent.shape == (1, 8, T // 4, 16)
        tokens = c["tokenizer"](["a dog barks"], return_tensors="pt")
        emb = F.normalize(c["text_encoder"](tokens.input_ids).text_embeds, dim=-1)
        out = c["unet"](latent, 10, encoder_hidden_states=None, class_labels=emb).sample
        assert out.shape == latent.shape
        assert c["vocoder"](torch.randn(1, T, 64)).shape == (1, 160 * T + 32)


def test_audioldm_missing_parts(audioldm_dir, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no_such_audioldm"):
        load_audioldm(tmp_path / "no_such_audioldm")
    folder = _copy(audioldm_dir, tmp_path)
    shutil.rmtree(folder / "vocoder")
    for f in (folder / "unet").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(WeightsNotFoundError) as exc:
        load_audioldm(folder)
    msg = str(exc.value)
    assert str(folder) in msg and "vocoder/config.json" in msg and "unet/*.safetensors" in msg
    (folder / "model_index.json").unlink()
    with pytest.raises(WeightsNotFoundError, match="model_index.json"):
        load_audioldm(folder)


def test_load_real_checkpoint_dispatches(tango_dir, audioldm_dir, tmp_path):
    assert load_real_checkpoint(tango_dir)["conditioning"] == "cross_attention"
    assert load_real_checkpoint(audioldm_dir)["conditioning"] == "class_embedding"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "weights.pt").write_bytes(b"")
    with pytest.raises(WeightsNotFoundError, match="neither a Tango checkpoint") as exc:
        load_real_checkpoint(tmp_path / "other")
    assert "weights.pt" in str(exc.value)
    with pytest.raises(WeightsNotFoundError, match="not_there"):
        load_real_checkpoint(tmp_path / "not_there")
    index = json.loads((audioldm_dir / "model_index.json").read_text())
    folder = _copy(audioldm_dir, tmp_path, "aldm2")
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "AudioLDM2Pipeline"}))
    with pytest.raises(CheckpointError, match="AudioLDM2Pipeline"):
        load_real_checkpoint(folder)


def test_makers_leave_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_tiny_audioldm(tmp_path / "a", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_a_renamed_key_is_named_with_its_nearest_name(tango_dir, tmp_path):
    """A 2023 file whose one key another library version spells differently: both sides are listed,
    each with the nearest name on the other side."""
    folder = _copy(tango_dir, tmp_path)
    main = _raw(folder / "pytorch_model_main.bin")
    old = "unet.down_blocks.0.attentions.0.proj_in.weight"
    main[old.replace("proj_in", "proj_input")] = main.pop(old)
    torch.save(main, folder / "pytorch_model_main.bin")
    with pytest.raises(CheckpointError) as exc:
        load_tango(folder)
    msg = str(exc.value)
    assert "1 missing (down_blocks.0.attentions.0.proj_in.weight (nearest: down_blocks.0.attentions.0.proj_input.weight))" in msg
    assert "1 unexpected (down_blocks.0.attentions.0.proj_input.weight (nearest: down_blocks.0.attentions.0.proj_in.weight))" in msg


def test_nearest_names_lists_the_first_few():
    names = ["block.0.weight", "head.bias", "x", "y", "z", "w"]
    assert ck.nearest_names(names, ["block.0.weights", "tail"], n=3) == \
        "block.0.weight (nearest: block.0.weights), head.bias, x, ... (6 in all)"
