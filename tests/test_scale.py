"""The scale benchmark (t2a_lib.run.scale): FLOP accounting against torch's own counter, Tango's size,
and well-formed figures from a run on the tiny config; the model sizes of the profiles."""

import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from t2a_lib.model.components import MODEL_SIZES, MiniTangoConfig, make_unet, make_vae, model_config, n_params
from t2a_lib.run import scale

ROOT = Path(__file__).resolve().parents[1]


def _meta_unet(name):
    with torch.device("meta"):  # shapes only: Tango's 866M parameters cost no memory and no time
        return scale.make_scale_unet(scale.SCALES[name])


@pytest.mark.parametrize("name", ["tiny", "tango"])
def test_flop_accounting_matches_torch_flop_counter(name):
    cfg, unet = scale.SCALES[name], _meta_unet(name)
    x, ctx = scale._inputs(cfg, 1, torch.device("meta"))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(x, torch.tensor([500], device="meta"), encoder_hidden_states=ctx)
    assert scale.unet_flops(unet, cfg) == counter.get_total_flops() > 0


def test_tango_size_is_taken_from_the_real_config():
    unet = _meta_unet("tango")
    assert n_params(unet) == 865_933_768  # Tango / SD-2.1 UNet with 8 latent channels: 865.9M
    flops = scale.unet_flops(unet, scale.SCALES["tango"])
    assert flops / 1e12 == pytest.approx(0.80, abs=0.005)  # per 10.24 s clip and forward
    # the bounds at 790 TFLOP/s: 200 guided steps >= 0.41 s per clip, a DPO pair >= 8 ms
    assert 400 * flops / 790e12 == pytest.approx(0.405, abs=0.005)
    assert 8 * flops / 790e12 == pytest.approx(0.0081, abs=0.0001)


def test_tiny_run_prints_well_formed_figures():
    out = scale.run("tiny", batches=(1,))
    assert out["size"] == "tiny" and out["unet_params"] == n_params(scale.make_scale_unet(scale.SCALES["tiny"]))
    flops, peak = out["unet_forward_tflop_per_clip"] * 1e12, out["peak_tflops"] * 1e12
    assert out["limit_sampling_s_per_clip_200_steps"] == pytest.approx(400 * flops / peak, rel=1e-3)
    assert out["limit_dpo_s_per_pair"]["full"] == pytest.approx(8 * flops / peak, rel=1e-3)
    assert [r["batch"] for r in out["sampling"]] == [1]
    for row in out["sampling"]:
        assert math.isfinite(row["s_per_clip_200_steps"]) and row["s_per_clip_200_steps"] > 0
        assert row["share_of_limit"] == pytest.approx(out["limit_sampling_s_per_clip_200_steps"] / row["s_per_clip_200_steps"])
    assert [(r["mode"], r["gradient_checkpointing"]) for r in out["dpo"]] == [
        ("full", False), ("full", True), ("lora", False), ("lora", True)]
    for row in out["dpo"]:
        assert row["pairs_per_s"] > 0 and row["share_of_limit"] > 0 and math.isfinite(row["final_loss"])
        assert row["pairs_per_s"] * row["seconds_per_pair"] == pytest.approx(1.0)
        assert row["peak_memory_gib"] is None  # GPU memory only


def test_default_model_size_is_the_default_config_and_gpu_is_larger():
    assert model_config("default") == MiniTangoConfig()
    assert MODEL_SIZES["default"] == {}
    default, gpu = model_config("default"), model_config("gpu")
    assert n_params(make_unet(default)) == 1_747_592 and n_params(make_vae(default)) == 688_505
    assert n_params(make_unet(gpu)) == 95_744_392 and n_params(make_vae(gpu)) == 2_715_017
    with pytest.raises(ValueError, match="model_size"):
        model_config("huge")


def test_gpu_profile_sets_the_model_size_notebook_02_reads():
    profile = yaml.safe_load((ROOT / "papermill_runs/profiles/gpu.yaml").read_text())
    assert profile["notebooks"]["02_base_model"]["model_size"] == "gpu"
    params = (ROOT / "notebooks/02_base_model.py").read_text().split('# %% tags=["parameters"]')[1].split("# %%")[0]
    assert re.search(r'^model_size = "default"', params, re.M)
    for name in ("default", "smoke", "scratch"):
        prof = yaml.safe_load((ROOT / f"papermill_runs/profiles/{name}.yaml").read_text())
        assert prof["notebooks"].get("02_base_model", {}).get("model_size", "default") == "default"
