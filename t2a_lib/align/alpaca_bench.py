"""Benchmark: memory and time of the audio-alpaca import (:mod:`t2a_lib.align.audio_alpaca`) as the pair
count grows, on synthetic shards in the published layout (10.24 s clips, Tango's length).

    python -m t2a_lib.align.alpaca_bench --pairs 1000 5000

For each count, shards of ``--shard-pairs`` rows (``prompt``, ``chosen``, ``rejected``, ``strategy``; audio
cells ``{bytes, path}`` holding a FLAC of a distinct tone with a little noise, so every clip is encoded)
are written to a scratch folder, then imported in a fresh process through a small random VAE (the
import's memory is what is measured, not a real VAE's weights). Printed per count: peak RSS of that
process, seconds per 1,000 pairs, and the latents file's size. A flat peak RSS from 1,000 to 5,000
pairs is what the streamed import promises; the released set has 15,025 pairs.
"""
from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLIP_SECONDS = 10.24


def tone_flac(seed: int, seconds: float = CLIP_SECONDS) -> bytes:
    """A distinct 16 kHz mono clip (a tone at a seed-dependent pitch, plus noise) as FLAC bytes."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    wave = 0.3 * np.sin(2 * np.pi * (100 + (seed % 5000) * 0.7) * t) + 0.01 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, wave.astype(np.float32), 16000, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def write_shards(folder: Path, n_pairs: int, shard_pairs: int) -> Path:
    """``data/train-000NN-of-000MM.parquet`` holding ``n_pairs`` pairs of distinct clips."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    audio = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("prompt", pa.string()), ("chosen", audio), ("rejected", audio), ("strategy", pa.string())])
    n_shards = -(-n_pairs // shard_pairs)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        rows = [{"prompt": f"a tone, pair {i}", "chosen": {"bytes": tone_flac(2 * i), "path": f"{2 * i}.flac"},
                 "rejected": {"bytes": tone_flac(2 * i + 1), "path": f"{2 * i + 1}.flac"}, "strategy": "synthetic"}
                for i in range(s * shard_pairs, min(n_pairs, (s + 1) * shard_pairs))]
        pq.write_table(pa.Table.from_pylist(rows, schema=schema),
                       folder / "data" / f"train-{s:05d}-of-{n_shards:05d}.parquet")
    return folder


def small_vae():
    """A random diffusers AutoencoderKL in Tango's latent layout (mel (1, T, 64) -> (8, T/4, 16)), small."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(in_channels=1, out_channels=1, latent_channels=8, block_out_channels=[8, 8, 8],
                         down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
                         layers_per_block=1, norm_num_groups=4, mid_block_add_attention=False).eval()


def import_once(source: Path, out_dir: Path, batch_size: int) -> dict:
    """One import in this process: its pairs, seconds and peak RSS (MiB)."""
    import torch

    from .audio_alpaca import import_audio_alpaca

    torch.set_num_threads(1)
    vae = small_vae()
    t0 = time.perf_counter()
    with torch.no_grad():
        df = import_audio_alpaca(source, out_dir, vae, n_frames=int(CLIP_SECONDS * 100), n_listen=1,
                                 batch_size=batch_size)
    seconds = time.perf_counter() - t0
    return {"pairs": len(df), "seconds": round(seconds, 1), "peak_rss_mib": resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss // 1024, "latents_mib": (out_dir / "latents.safetensors").stat().st_size >> 20}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m t2a_lib.align.alpaca_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--shard-pairs", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--scratch", help="folder for the shards and outputs (default: a temporary one, removed)")
    ap.add_argument("--one", nargs=2, metavar=("SOURCE", "OUT"), help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(import_once(Path(args.one[0]), Path(args.one[1]), args.batch_size)))
        return []
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="alpaca-bench-"))
    rows = []
    try:
        for n in args.pairs:
            source = write_shards(scratch / f"alpaca-{n}", n, args.shard_pairs)
            child = subprocess.run([sys.executable, "-m", "t2a_lib.align.alpaca_bench", "--batch-size",
                                    str(args.batch_size), "--one", str(source), str(scratch / f"out-{n}")],
                                   check=True, capture_output=True, text=True)
            row = json.loads(child.stdout.strip().splitlines()[-1])
            row["seconds_per_1000_pairs"] = round(1000 * row["seconds"] / row["pairs"], 1)
            rows.append(row)
            print(f"{row['pairs']:6d} pairs: peak RSS {row['peak_rss_mib']} MiB, {row['seconds_per_1000_pairs']} s "
                  f"per 1,000 pairs, latents {row['latents_mib']} MiB on disk", flush=True)
            shutil.rmtree(source)
    finally:
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
