"""Real-checkpoint layouts (tiny random weights) run through the same TangoPipeline."""

import numpy as np
import pytest
import torch

from checkpoint_fixtures import make_tiny_audioldm, make_tiny_tango
from t2a_lib.model.tango import pipeline_from_checkpoint
from t2a_lib.scoring.clap_real import WeightsNotFoundError

torch.set_num_threads(2)


@pytest.mark.parametrize("maker, conditioning", [(make_tiny_tango, "cross_attention"),
                                                 (make_tiny_audioldm, "class_embedding")])
def test_tiny_real_layouts_generate_audio(tmp_path, maker, conditioning):
    folder = maker(tmp_path / "ckpt", seed=0)
    pipe = pipeline_from_checkpoint(folder)
    assert pipe.conditioning == conditioning
    n_frames = 32
    out = pipe(["A dog barks, then a siren wails", "Rain falls"], num_inference_steps=2, guidance_scale=3.0,
               generator=torch.Generator().manual_seed(0), n_frames=n_frames, progress=False)
    assert out.audios.shape == (2, n_frames * 160)  # the real HiFi-GAN's 32 extra samples are trimmed
    assert np.isfinite(out.audios).all()
    again = pipe(["A dog barks, then a siren wails", "Rain falls"], num_inference_steps=2, guidance_scale=3.0,
                 generator=torch.Generator().manual_seed(0), n_frames=n_frames, progress=False)
    assert np.array_equal(out.audios, again.audios)


def test_missing_real_weights_say_what_to_fetch(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises((WeightsNotFoundError, ValueError)) as err:
        pipeline_from_checkpoint(tmp_path / "empty")
    assert "empty" in str(err.value)
    with pytest.raises(WeightsNotFoundError):
        pipeline_from_checkpoint(tmp_path / "does-not-exist")


def test_tango_layout_samples_tangos_10_24_s_by_default(tmp_path):
    """Tango's AudioDiffusion.inference draws (B, 8, 256, 16) latents: 1024 mel frames x hop 160 at
    16 kHz = 10.24 s. The UNet config's leftover sample_size ([8, 4] here, [32, 2] in the real
    file: 1.28 s) must not set the default."""
    folder = make_tiny_tango(tmp_path / "ckpt", seed=0)
    pipe = pipeline_from_checkpoint(folder)
    assert pipe.latent_shape() == (8, 256, 16)
    out = pipe(["A man speaks"], num_inference_steps=2, guidance_scale=3.0,
               generator=torch.Generator().manual_seed(0), progress=False, return_latents=True)
    assert out.latents.shape == (1, 8, 256, 16)
    assert out.audios.shape == (1, round(10.24 * 16000)) == (1, 163840)
    assert np.isfinite(out.audios).all()
    assert pipe.unet.config.sample_size == [256, 16]


def test_the_real_configs_leftover_sample_size_is_replaced():
    """Tango's published UNet config says sample_size [32, 2]: read as the clip, 32 latent frames
    x 4 (the VAE) x hop 160 / 16 kHz = 1.28 s. Tango's inference uses 256 x 16: 10.24 s."""
    from types import SimpleNamespace

    from t2a_lib.model.tango_checkpoint import TANGO_UNET_CONFIG, tango_default_size

    class Stub:
        config = SimpleNamespace(sample_size=TANGO_UNET_CONFIG["sample_size"])

        def register_to_config(self, **kw):
            self.config = SimpleNamespace(**{**vars(self.config), **kw})

    unet = Stub()
    assert unet.config.sample_size[0] * 4 * 160 / 16000 == 1.28  # the bug this guards against
    assert tango_default_size(unet, {"block_out_channels": [128, 256, 512]}) == [32, 2]  # AudioLDM's VAE
    assert unet.config.sample_size == [256, 16]
    assert unet.config.sample_size[0] * 4 * 160 / 16000 == 10.24


def test_a_local_checkpoint_is_referenced_by_the_run_not_copied(tmp_path):
    import json
    import os

    from t2a_lib.model.base_model import install_checkpoint, load_run_pipeline
    from t2a_lib.model.referenced_base import ReferencedBaseChanged

    folder = make_tiny_tango(tmp_path / "ckpt", seed=0)
    run = tmp_path / "run"
    pipe, record = install_checkpoint(run, folder, sample_seconds=0.32)
    assert sorted(p.name for p in (run / "base").iterdir()) == ["checkpoint.json"]  # nothing copied
    assert record["referenced"] and record["latent_shape"] == [8, 8, 16]
    assert json.loads((run / "base" / "checkpoint.json").read_text()) == json.loads(json.dumps(record))
    reloaded = load_run_pipeline(run)
    assert reloaded.latent_shape() == (8, 8, 16)  # the length asked for, recorded with the reference
    args = dict(num_inference_steps=2, guidance_scale=3.0, progress=False)
    a = pipe(["A man speaks"], generator=torch.Generator().manual_seed(0), **args).audios
    b = reloaded(["A man speaks"], generator=torch.Generator().manual_seed(0), **args).audios
    assert np.array_equal(a, b)
    vae = folder / "pytorch_model_vae.bin"
    os.utime(vae, ns=(vae.stat().st_atime_ns, vae.stat().st_mtime_ns + 10**9))  # the file was replaced
    with pytest.raises(ReferencedBaseChanged, match="pytorch_model_vae.bin"):
        load_run_pipeline(run)
    pipe.unet.register_to_config(sample_size=[4, 16])
    pipe.save_pretrained(run / "base" / "pipeline")  # a base trained later in the same run folder: the newer wins
    assert load_run_pipeline(run).latent_shape() == (8, 4, 16)
