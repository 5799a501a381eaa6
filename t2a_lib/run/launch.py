"""DPO and BATON training in one process or many, on a tiny model: the check that
``accelerate launch`` trains the same model as one process.

    python -m t2a_lib.run.launch --method dpo dpo-lora baton --out /tmp/one
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \\
        --dynamo_backend no -m t2a_lib.run.launch --method dpo dpo-lora baton --out /tmp/two

(``--multi_gpu`` selects torchrun; without CUDA each process runs on the CPU over gloo, see
:func:`t2a_lib.model.diffusion.make_accelerator`.) Every process builds the same tiny UNet and pair
bank from the seed; :func:`t2a_lib.model.diffusion.train_loop` splits each global batch of
``--batch-size`` rows over the processes. The main process writes ``unet.safetensors`` (final
weights) and ``run.json`` (loss curve, process count) under ``--out``; each process writes
``rows_<rank>.json``, the latent rows its UNet computed (each under ``--out/<method>``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

METHODS = ("dpo", "dpo-lora", "baton")


def tiny_data(n: int, seed: int = 0):
    """A tiny UNet, its training scheduler, and n random (winner, loser, reward, caption state) rows."""
    from ..model.components import make_train_scheduler, make_unet, model_config
    from ..model.diffusion import TextBank

    cfg = model_config("tiny")
    torch.manual_seed(seed)
    unet = make_unet(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    shape = (n, cfg.latent_channels, cfg.n_frames // 4, cfg.n_mels // 4)
    states = torch.randn(n, 6, cfg.text_dim, generator=g)
    text = TextBank(states, torch.ones(n, 6, dtype=torch.long), torch.zeros(1, 6, cfg.text_dim),
                    torch.ones(1, 6, dtype=torch.long))
    data = {"winners": torch.randn(shape, generator=g), "losers": torch.randn(shape, generator=g),
            "rewards": torch.rand(n, generator=g), "text": text}
    return unet, make_train_scheduler(cfg), data


def train(method: str, steps: int, batch_size: int, out_dir, seed: int = 0, n: int = 16) -> dict:
    """Train the tiny model with ``method``; returns train_loop's output (and the trained UNet)."""
    from ..feedback.baton import BatonConfig, train_reward_weighted
    from ..align.dpo import DPOConfig, PairBank, train_dpo

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    unet, sched, d = tiny_data(n, seed)
    rows = []  # latent rows through the UNet (and copies of it) in this process: the share it trained on
    unet.register_forward_pre_hook(lambda module, args: rows.append(len(args[0])))
    common = dict(steps=steps, batch_size=batch_size, lr=1e-3, warmup=1, checkpoint_every=steps, seed=seed)
    if method == "baton":
        cfg = BatonConfig(pretrain_batch_size=batch_size, **common)
        out = train_reward_weighted(unet, sched, d["losers"], d["text"], d["winners"], d["text"], d["rewards"],
                                    cfg, out_dir, progress=False)
    else:
        cfg = DPOConfig(beta=50.0, lora_rank=4 if method == "dpo-lora" else None, **common)
        out = train_dpo(unet, sched, PairBank(d["winners"], d["losers"], d["text"]), cfg, out_dir, progress=False)
    return {**out, "unet": unet, "rows": sum(rows)}


def main(argv=None) -> None:
    from accelerate import PartialState

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=METHODS, nargs="+", default=["dpo"], help="one or more, each into --out/<method>")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4, help="global batch (rows over all processes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    for method in args.method:
        out_dir = Path(args.out) / method
        out = train(method, args.steps, args.batch_size, out_dir, args.seed)
        state = PartialState()
        (out_dir / f"rows_{state.process_index}.json").write_text(json.dumps(out["rows"]))
        if state.is_main_process:
            weights = {k: v.detach().contiguous() for k, v in out["unet"].state_dict().items()}
            save_file(weights, out_dir / "unet.safetensors")
            (out_dir / "run.json").write_text(json.dumps({"processes": state.num_processes, "method": method,
                                                          "losses": out["losses"], "history": out["history"]}))
        state.wait_for_everyone()


if __name__ == "__main__":
    main()
