"""Speed benchmarks that print their numbers (never timed tests).

    python -m t2a_lib.run.bench                       # default-size model, random weights
    python -m t2a_lib.run.bench --pipeline papermill_runs/default/base/pipeline
    python -m t2a_lib.run.bench --size tango --sections scale   # Tango-size UNet on a GPU (t2a_lib.run.scale)

Prints: sampling throughput (clips/s for 32 prompts at several step counts, guidance 3, VAE and
vocoder included; run in the pipeline's default batches, and for 10 steps also as one batch of
32), one UNet training step (batch 16), one VAE step, and one DPO step (8 pairs).
Random weights cost the same as trained ones, so the default needs no trained model.

Then, under "scale" (:mod:`t2a_lib.run.scale`): on a Tango-size UNet (``--size tango``, 865.9M
parameters; ``auto``: tango on a GPU, a tiny config of the same layout on a CPU), sampling seconds
per 10.24 s clip at 200 guided steps by batch size, DPO pairs/s and peak memory (full and LoRA,
gradient checkpointing off and on), each with its share of the physical limit.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def _time(fn, repeats: int = 3) -> float:
    fn()  # warm-up (kernel selection)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def build_random_pipeline(hifigan: bool = True):
    from ..model.base_model import assemble
    from ..model.components import MiniTangoConfig, make_text_encoder, make_unet, make_vae
    from ..world.text import build_world_tokenizer
    from ..model.vocoder import VocoderConfig, make_hifigan

    torch.manual_seed(0)
    cfg, tok = MiniTangoConfig(), build_world_tokenizer()
    return assemble(make_vae(cfg), make_text_encoder(cfg, len(tok)), tok, make_unet(cfg),
                    make_hifigan(VocoderConfig()) if hifigan else None, cfg)


def run(pipeline: str | None = None, batch: int = 32, steps=(10, 20), repeats: int = 2) -> dict:
    from ..model.autoencoder import mel_to_image
    from ..model.base_model import load_pipeline
    from ..model.diffusion import TextBank
    from ..align.dpo import DPOConfig, PairBank, train_dpo
    from ..model.components import MiniTangoConfig, add_time_channel, make_train_scheduler

    pipe = load_pipeline(pipeline) if pipeline else build_random_pipeline()
    prompts = ["A dog barks, then a siren wails"] * batch
    out = {"threads": torch.get_num_threads(), "prompts": batch, "default_batch_size": pipe.default_batch_size,
           "vocoder": "hifigan" if pipe.vocoder is not None else "griffin-lim"}

    def sample(s, batch_size=None):
        return pipe(prompts, num_inference_steps=s, guidance_scale=3.0, generator=torch.Generator().manual_seed(0),
                    batch_size=batch_size, progress=False)

    for s in steps:
        out[f"sampling_clips_per_s_{s}_steps"] = round(batch / _time(lambda: sample(s), repeats), 2)
    out[f"sampling_clips_per_s_{steps[0]}_steps_one_batch_of_{batch}"] = round(
        batch / _time(lambda: sample(steps[0], batch), repeats), 2)
    sched = make_train_scheduler(MiniTangoConfig())
    unet = pipe.unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    x, ctx = torch.randn(16, *pipe.latent_shape()), torch.randn(16, 20, unet.config.cross_attention_dim)

    def unet_step():
        loss = unet(add_time_channel(unet, x), torch.randint(0, 1000, (16,)), encoder_hidden_states=ctx).sample.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    out["unet_train_step_s_batch16"] = round(_time(unet_step, repeats), 3)
    vae = pipe.vae.train()
    vopt = torch.optim.AdamW(vae.parameters(), lr=1e-5)
    mel = mel_to_image(torch.randn(16, 64, 64) - 6)

    def vae_step():
        loss = (vae(mel).sample - mel).abs().mean()
        vopt.zero_grad()
        loss.backward()
        vopt.step()

    out["vae_train_step_s_batch16_crop64"] = round(_time(vae_step, repeats), 3)
    bank = PairBank(torch.randn(8, *pipe.latent_shape()), torch.randn(8, *pipe.latent_shape()),
                    TextBank(ctx[:8], torch.ones(8, 20, dtype=torch.long), ctx[:1], torch.ones(1, 20, dtype=torch.long)))
    t0 = time.perf_counter()
    train_dpo(unet, sched, bank, DPOConfig(steps=3, batch_size=8), progress=False)
    out["dpo_step_s_8_pairs"] = round((time.perf_counter() - t0) / 3, 3)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", help="a saved TangoPipeline folder (default: random weights)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    ap.add_argument("--sections", nargs="+", choices=["mini", "scale"], default=["mini", "scale"],
                    help="mini: the miniature model's numbers above; scale: t2a_lib.run.scale")
    ap.add_argument("--size", choices=["auto", "tiny", "tango"], default="auto", help="the scale section's UNet")
    ap.add_argument("--scale-batches", type=int, nargs="+", help="sampling batch sizes (default: the size's)")
    ap.add_argument("--peak-tflops", type=float, help="the limit's FLOP rate (default: 790 on a GPU, measured on a CPU)")
    args = ap.parse_args(argv)
    if "mini" in args.sections:
        print(json.dumps(run(args.pipeline, args.batch, tuple(args.steps)), indent=2))
    if "scale" in args.sections:
        from . import scale

        print(json.dumps({"scale": scale.run(args.size, args.peak_tflops, args.scale_batches)}, indent=2))


if __name__ == "__main__":
    main()
