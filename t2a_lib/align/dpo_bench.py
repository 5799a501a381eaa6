"""LoRA-DPO against full DPO on a real checkpoint: step time, peak memory per pair, trainable parameters.

    python -m t2a_lib.align.dpo_bench CHECKPOINT [--batches 1 2] [--steps 5] [--warmup 1] [--lora-rank 16]
                                      [--frames 1024] [--checkpointing] [--precision auto|no|bf16|fp16]

``CHECKPOINT`` is a Tango / Tango 2 snapshot folder (``huggingface-cli download declare-lab/tango2
--local-dir <folder>``), loaded through :func:`t2a_lib.model.tango.pipeline_from_checkpoint`; the tests
pass the tiny random one that ``tests/checkpoint_fixtures.make_tiny_tango`` writes in the same layout.
Each (mode, batch) runs :func:`t2a_lib.align.dpo.train_dpo` itself, in a fresh process, on random
latents of the checkpoint's clip (Tango: 8 × 256 × 16, 10.24 s; ``--frames`` for another length) and
the text states of real prompts: random latents cost what real ones cost. Printed per row:

- ``step_s_median``: the median over ``steps`` steps after ``warmup`` steps, a step measured from its
  policy forward to the next step's (policy and reference forwards, backward, clipping, AdamW);
  ``step_cpu_s_median`` the same in this process's CPU time (all threads): on a CPU shared with
  other jobs the wall time counts the waiting too, the CPU time much less so;
- memory: on a GPU, ``torch.cuda.max_memory_allocated`` during training, absolute
  (``peak_mib``) and above the loaded UNet (``added_mib``). On a CPU, the process's peak resident
  set (the kernel's VmHWM, reset through ``/proc/self/clear_refs`` before training) minus the
  resident set just before it (freed heap first returned with ``malloc_trim``): ``added_mib``.
  tracemalloc would not do: it sees Python's allocator, not torch's. ``added_mib_per_pair`` divides
  by the batch; with two batches, ``marginal_mib_per_pair`` is the slope between them (the
  activations of one more pair) and ``fixed_mib`` the intercept (frozen copy, gradients, optimiser);
- ``trainable_params``: every UNet weight for full DPO; only the LoRA adapters for LoRA, whose
  reference is the same UNet with its adapters disabled (no second copy).

Speed and memory are measured here, never in timed tests. Figures on a shared CPU are inflated by
whatever else runs: say so when you quote them.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import re
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

PROMPTS = ["A dog barks, then a siren wails", "Rain falls while a bird chirps", "A bell rings after a knock",
           "An engine hums in the background"]


@dataclass
class DPOBenchConfig:
    checkpoint: str
    batches: tuple = (1, 2)  # pairs per step; full and LoRA run at each
    steps: int = 5  # timed steps (the median is reported)
    warmup: int = 1  # steps before the timed ones
    lora_rank: int = 16
    n_frames: int | None = None  # mel frames per clip; None: the checkpoint's (Tango: 1024, 10.24 s)
    checkpointing: bool = False  # gradient checkpointing in the UNet
    precision: str = "auto"  # auto: bf16 on a GPU (fp16 where bf16 is not supported), "no" on a CPU
    isolate: bool = True  # each (mode, batch) in a fresh process (clean peak memory)
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.warmup < 0 or not self.batches or min(self.batches) < 1:
            raise ValueError(f"need steps >= 1, warmup >= 0 and batches >= 1; got steps={self.steps}, "
                             f"warmup={self.warmup}, batches={self.batches}")


def _rss_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else None


def _release_freed_heap() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the baseline may then include reusable freed memory
        pass


class PeakMemory:
    """Peak memory of the block: CUDA's allocator statistics on a GPU, the kernel's peak resident
    set (VmHWM, reset on entry) on a Linux CPU. ``added_mib`` is the rise over the start;
    ``measure`` says which measure it is (None where neither is available)."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mib, self.added_mib, self.measure = device, None, None, None

    def __enter__(self):
        _release_freed_heap()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return self
        self._start = _rss_kib("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            peak, self.measure = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
            self.peak_mib, self.added_mib = peak / 2 ** 20, (peak - self._start) / 2 ** 20
        elif self._start is not None:
            peak, self.measure = _rss_kib("VmHWM"), "peak RSS (VmHWM after /proc/self/clear_refs) - RSS before"
            self.peak_mib, self.added_mib = peak / 1024, (peak - self._start) / 1024
        return False


def load_bench_inputs(config: DPOBenchConfig, batch: int):
    """The checkpoint's UNet and training scheduler, and ``batch`` random pairs with real prompts'
    text states (the text encoder, VAE and vocoder are dropped afterwards)."""
    from ..model.tango import pipeline_from_checkpoint
    from .dpo import make_train_scheduler_like, pair_bank

    pipe = pipeline_from_checkpoint(config.checkpoint)
    if pipe.conditioning != "cross_attention":
        raise ValueError(f"{config.checkpoint}: DPO here trains cross-attention UNets (Tango, Tango 2); this "
                         f"checkpoint conditions by {pipe.conditioning} (AudioLDM)")
    shape = pipe.latent_shape(config.n_frames)
    g = torch.Generator().manual_seed(config.seed)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    bank = pair_bank(pipe.text_encoder, pipe.tokenizer, prompts, torch.randn((batch, *shape), generator=g),
                     torch.randn((batch, *shape), generator=g))
    return pipe.unet, make_train_scheduler_like(pipe), bank, shape


def _precision(config: DPOBenchConfig, device: torch.device) -> str:
    if config.precision != "auto":
        return config.precision
    if device.type != "cuda":
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _step_seconds(starts: list[float], end: float, warmup: int) -> list[float]:
    """Per-step seconds from the policy forwards' start times (two forwards a step: policy, reference)."""
    policy = starts[0::2] + [end]
    return [b - a for a, b in zip(policy[:-1], policy[1:])][warmup:]


def measure(config: DPOBenchConfig, lora: bool, batch: int) -> dict:
    """One row: ``train_dpo`` for warmup + steps steps on ``batch`` pairs, full or LoRA."""
    from .dpo import DPOConfig, train_dpo

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    unet, scheduler, bank, shape = load_bench_inputs(config, batch)
    if config.checkpointing:
        unet.enable_gradient_checkpointing()
    n_steps = config.warmup + config.steps
    dpo = DPOConfig(steps=n_steps, batch_size=batch, lora_rank=config.lora_rank if lora else None, warmup=1,
                    lr=1e-6, mixed_precision=_precision(config, device), seed=config.seed, checkpoint_every=10 ** 9)
    unet_params = sum(p.numel() for p in unet.parameters())
    unet_mib = sum(p.numel() * p.element_size() for p in unet.parameters()) / 2 ** 20
    unet.to(device)  # the weights count as loaded, not as added by training
    starts = []

    def clock(module, args) -> None:  # a pre-hook must return None: anything else replaces the inputs
        if device.type == "cuda":
            torch.cuda.synchronize()
        starts.append((time.perf_counter(), time.process_time()))

    hook = unet.register_forward_pre_hook(clock)
    try:
        with PeakMemory(device) as mem:
            out = train_dpo(unet, scheduler, bank, dpo, progress=False)
            clock(None, None)
            end = starts.pop()
    finally:
        hook.remove()  # the frozen copy of full DPO carries a copy of the hook: two forwards a step
    if len(starts) != 2 * n_steps:
        raise RuntimeError(f"expected 2 UNet forwards per DPO step, saw {len(starts)} in {n_steps} steps")
    seconds = _step_seconds([t for t, _ in starts], end[0], config.warmup)
    cpu = _step_seconds([c for _, c in starts], end[1], config.warmup)
    return {"mode": "lora" if lora else "full", "batch": batch, "latent": list(shape),
            "step_s_median": statistics.median(seconds), "step_s_all": [round(s, 4) for s in seconds],
            "s_per_pair": statistics.median(seconds) / batch, "step_cpu_s_median": statistics.median(cpu),
            "trainable_params": sum(p.numel() for p in unet.parameters() if p.requires_grad),
            "unet_params": unet_params, "unet_weights_mib": unet_mib, "peak_mib": mem.peak_mib,
            "added_mib": mem.added_mib, "added_mib_per_pair": None if mem.added_mib is None else mem.added_mib / batch,
            "memory_measure": mem.measure, "precision": dpo.mixed_precision, "final_dpo_loss": out["losses"][-1]}


def measure_fields(fields: dict, lora: bool, batch: int) -> dict:
    """:func:`measure` from the config's fields (what a fresh process is sent)."""
    return measure(DPOBenchConfig(**{**fields, "batches": tuple(fields["batches"])}), lora, batch)


def _measure_isolated(config: DPOBenchConfig, lora: bool, batch: int) -> dict:
    import importlib
    import multiprocessing as mp

    by_name = importlib.import_module(__spec__.name if __spec__ else __name__)  # not __main__ under python -m
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(by_name.measure_fields, (asdict(replace(config, isolate=False)), lora, batch))


def _marginal(rows: list[dict]) -> dict:
    """Per mode: the memory one more pair adds (slope between the smallest and largest batch) and
    the intercept, where two batches and a memory measure are there."""
    out = {}
    for mode in ("full", "lora"):
        r = sorted((x for x in rows if x["mode"] == mode and x["added_mib"] is not None), key=lambda x: x["batch"])
        if len(r) >= 2 and r[-1]["batch"] > r[0]["batch"]:
            slope = (r[-1]["added_mib"] - r[0]["added_mib"]) / (r[-1]["batch"] - r[0]["batch"])
            out[mode] = {"marginal_mib_per_pair": slope, "fixed_mib": r[0]["added_mib"] - slope * r[0]["batch"]}
    return out


def run(config: DPOBenchConfig, progress: bool = False) -> dict:
    """Every row (full and LoRA at each batch) and the per-pair memory slopes; with ``progress``
    each row is printed as it is measured (a real checkpoint on a CPU takes a while)."""
    one, rows = (_measure_isolated if config.isolate else measure), []
    for b in config.batches:
        for lora in (False, True):
            rows.append(one(config, lora, b))
            if progress:
                print(json.dumps({"row": rows[-1]}, default=float), flush=True)
    cuda = torch.cuda.is_available()
    return {"checkpoint": str(config.checkpoint), "device": torch.cuda.get_device_name() if cuda else "cpu",
            "threads": torch.get_num_threads(), "config": asdict(config), "rows": rows, "memory": _marginal(rows)}


def format_table(result: dict) -> str:
    head = f"{'mode':<5} {'batch':>5} {'step s (median)':>16} {'CPU s':>8} {'s/pair':>8} {'trainable':>12} " \
           f"{'added MiB':>10} {'MiB/pair':>9}"
    lines = [f"{result['checkpoint']} on {result['device']} ({result['threads']} threads)", head]
    for r in result["rows"]:
        mem = ("n/a", "n/a") if r["added_mib"] is None else (f"{r['added_mib']:.1f}", f"{r['added_mib_per_pair']:.1f}")
        lines.append(f"{r['mode']:<5} {r['batch']:>5} {r['step_s_median']:>16.4f} {r['step_cpu_s_median']:>8.4f} "
                     f"{r['s_per_pair']:>8.4f} "
                     f"{r['trainable_params']:>12,} {mem[0]:>10} {mem[1]:>9}")
    lines.append(f"memory: {result['rows'][0]['memory_measure']}")
    for mode, m in result["memory"].items():
        lines.append(f"{mode}: {m['marginal_mib_per_pair']:.1f} MiB per extra pair, {m['fixed_mib']:.1f} MiB fixed")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a Tango / Tango 2 snapshot folder")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--frames", type=int, help="mel frames per clip (default: the checkpoint's; Tango 1024)")
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in the UNet")
    ap.add_argument("--precision", default="auto", choices=["auto", "no", "bf16", "fp16"])
    ap.add_argument("--in-process", action="store_true", help="no fresh process per row (peak memory less clean)")
    ap.add_argument("--json", help="also write the result to this file")
    args = ap.parse_args(argv)
    config = DPOBenchConfig(args.checkpoint, tuple(args.batches), args.steps, args.warmup, args.lora_rank,
                            args.frames, args.checkpointing, args.precision, not args.in_process)
    result = run(config, progress=True)
    print(format_table(result))
    print(json.dumps(result, indent=2, default=float))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
