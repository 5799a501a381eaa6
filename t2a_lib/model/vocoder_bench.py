"""The vocoder's benchmark: ``python -m t2a_lib.model.vocoder_bench --bench [--world DIR] [--detector FOLDER]``.

Trains the default HiFi-GAN (``vocoder.train_vocoder``) on a world and measures it against Griffin-Lim:
training time, clips/s, log-mel L1 to the originals and, given a saved event detector, event F1.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .vocoder import HOP, VocoderConfig, train_vocoder, vocode


def bench(world=None, n_train: int = 3000, n_eval: int = 200, detector=None, config: VocoderConfig | None = None,
          progress: bool = True) -> dict:
    """Train the default HiFi-GAN on ``n_train`` clips of a world (built in a temporary folder
    when ``world`` is None), then vocode ``n_eval`` test clips with it and with Griffin-Lim:
    training seconds, final losses, clips/s (32 clips), log-mel L1 to the originals and, given a
    saved ``EventDetector`` folder, its event F1 on original and vocoded audio."""
    import tempfile

    from ..world.datasets import build_world, load_split
    from ..audio.features import load_waves, waves_to_mel

    tmp = None
    if world is None:
        tmp = tempfile.TemporaryDirectory()
        build_world(tmp.name, n_train, 1, n_eval, seed=0, workers=2, progress=progress)
        world = tmp.name
    train = load_split(world, "train")[:n_train]
    test = load_split(world, "test")[:n_eval]
    n = 256 * HOP
    waves, test_waves = load_waves(train, n), load_waves(test, n)
    mels = waves_to_mel(test_waves)
    out = {"threads": torch.get_num_threads(), "n_train": len(train), "n_eval": len(test)}

    t0, c0 = time.perf_counter(), time.process_time()
    model, losses = train_vocoder(waves, config or VocoderConfig(), progress)
    out["train_seconds"] = round(time.perf_counter() - t0, 1)
    out["train_cpu_seconds_per_thread"] = round((time.process_time() - c0) / torch.get_num_threads(), 1)
    out["params"] = sum(p.numel() for p in model.parameters())
    out["final_losses"] = {k: round(float(np.mean([l[k] for l in losses[-50:]])), 4) for k in losses[0]}
    audio = {}
    for name, voc in (("hifigan", model), ("griffin_lim", None)):
        t0 = time.perf_counter()
        audio[name] = vocode(mels, voc)
        out[f"{name}_clips_per_s"] = round(len(mels) / (time.perf_counter() - t0), 2)
        out[f"{name}_log_mel_l1"] = round(float((waves_to_mel(audio[name]) - mels).abs().mean()), 4)
    if detector is not None:
        from ..scoring.detector import EventDetector
        from ..scoring.event_metrics import event_f1_corpus

        det = EventDetector.load(detector)
        refs = [r.events or [] for r in test]
        for name, m in (("original", mels), *((k, waves_to_mel(a)) for k, a in audio.items())):
            ests = det.events(det.analyse(m).frame_probs)
            out[f"event_f1_{name}"] = round(event_f1_corpus(refs, ests, collar=0.2)["f1"], 4)
    if tmp is not None:
        tmp.cleanup()
    return out


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", action="store_true", help="train the default vocoder and measure it")
    parser.add_argument("--world", help="a built world folder (default: build a small one in a temp folder)")
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--n-eval", type=int, default=200)
    parser.add_argument("--steps", type=int, help="override VocoderConfig.steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detector", help="a saved EventDetector folder, for event F1 on vocoded audio")
    args = parser.parse_args()
    if not args.bench:
        parser.error("nothing to do: pass --bench")
    cfg = VocoderConfig(seed=args.seed, **({"steps": args.steps} if args.steps else {}))
    print(json.dumps(bench(args.world, args.n_train, args.n_eval, args.detector, cfg), indent=2))
