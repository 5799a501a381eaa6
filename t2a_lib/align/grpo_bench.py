"""GRPO on the committed release's base model and rankers: time per round and per sampled clip, and
the rankers' reward round by round (the figures that size a GRPO budget).

    python -m t2a_lib.align.grpo_bench [--release releases] [--rounds 3] [--prompts 4] [--group 4]
                                       [--sample-steps 10] [--minibatch 8] [--reward clap] [--lr 1e-4]
                                       [--kl-coef 0.01] [--clip-range 1e-4] [--lora-rank N] [--json FILE]

Runs :func:`t2a_lib.align.grpo.train_grpo` itself (full fine-tuning unless ``--lora-rank``) on the
first ``--prompts`` of a fixed list of grammar captions, rewarded by the release's rankers
(``releases/scorers/rankers``; never its judges). Printed per round: wall and CPU seconds (all
threads), the round's mean and std reward, the KL to the reference and the clipped share after its
updates. A round's reward is that of the chains it sampled, before its updates. On a CPU shared
with other jobs the wall time counts the waiting too: say so when you quote it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

PROMPTS = ["A dog barks, then a siren wails", "Rain falls while a bird chirps", "A bell rings after someone knocks on a door",
           "A clock ticks before a device beeps", "A drum beats", "Wind blows, followed by someone whistling",
           "An engine hums while a bell rings", "A siren wails, then a dog barks"]  # the world's grammar: any reward


def run(release, config, n_prompts: int) -> list[dict]:
    """Train GRPO from the release's base model; per round: seconds, CPU seconds, reward, KL, clipping."""
    from ..model.base_model import load_pipeline
    from ..scoring.scorers import Scorers
    from .grpo import RankerReward, train_grpo

    release = Path(release)
    pipe = load_pipeline(release / "base" / "pipeline")
    rankers = Scorers.load(release / "scorers" / "rankers", "ranker")
    prompts = PROMPTS[:n_prompts]
    t0, c0 = time.time(), time.process_time()
    out = train_grpo(pipe, RankerReward(pipe, rankers, config.reward), prompts, config, progress=True)
    seconds, cpu = time.time() - t0, time.process_time() - c0
    h, per = out["history"], config.updates_per_round
    rounds = [h[i:i + per] for i in range(0, len(h), per)]
    return [{"round": r, "clips": int(steps[-1]["clips"]), "reward_mean": steps[0]["reward_mean"],
             "reward_std": steps[0]["reward_std"], "kl_after": steps[-1]["kl"],
             "clip_frac": sum(s["clip_frac"] for s in steps) / len(steps),
             "seconds_per_round": seconds / len(rounds), "cpu_seconds_per_round": cpu / len(rounds),
             "seconds_per_clip": seconds / out["sampled_clips"]} for r, steps in enumerate(rounds)]


def main(argv=None) -> None:
    from .grpo import GRPOConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", default="releases")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=4, help=f"prompts per round (at most {len(PROMPTS)})")
    ap.add_argument("--group", type=int, default=4, help="K: samples per prompt")
    ap.add_argument("--sample-steps", type=int, default=10)
    ap.add_argument("--minibatch", type=int, default=8)
    ap.add_argument("--reward", default="clap")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--kl-coef", type=float, default=0.01)
    ap.add_argument("--clip-range", type=float, default=1e-4)
    ap.add_argument("--lora-rank", type=int)
    ap.add_argument("--json", help="also write the result to this file")
    args = ap.parse_args(argv)
    if not 1 <= args.prompts <= len(PROMPTS):
        ap.error(f"--prompts must lie in [1, {len(PROMPTS)}]")
    per_round = args.prompts * args.group // args.minibatch
    config = GRPOConfig(steps=args.rounds * per_round, batch_size=args.prompts, group_size=args.group,
                        minibatch_size=args.minibatch, sample_steps=args.sample_steps, reward=args.reward, lr=args.lr,
                        warmup=1, kl_coef=args.kl_coef, clip_range=args.clip_range, lora_rank=args.lora_rank,
                        checkpoint_every=per_round)
    rows = run(args.release, config, args.prompts)
    for row in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    if args.json:
        Path(args.json).write_text(json.dumps({"config": asdict(config), "rounds": rows}, indent=1))


if __name__ == "__main__":
    main()
