"""Sampling steps for evaluation: the release base at 3/4/6/10 DPM-Solver steps on 160 validation
prompts (seed 1), vocoded audio, scored by the RANKERS (never the judges). Paired by prompt and noise:
presence, all present, order (temporal prompts) and CLAP, each against 10 steps.

Usage: python scripts/sampling_steps_check.py [RUN_DIR]   (a run with base/, scorers/ and world/)"""
import sys
import time

from t2a_lib.align import preferences
from t2a_lib.audio.features import waves_to_mel
from t2a_lib.evaluate import evaluation
from t2a_lib.evaluate.inference import paired_effect
from t2a_lib.model import base_model
from t2a_lib.scoring import scorers
from t2a_lib.world.datasets import load_split

run = sys.argv[1] if len(sys.argv) > 1 else "papermill_runs/default"
pipe = base_model.load_run_pipeline(run); rankers = scorers.load_rankers(run)
prompts = preferences.seed_prompts(load_split(f"{run}/world", "val"), 160, 0)
tables = {}
for steps in (10, 6, 4, 3):
    t0 = time.time()
    waves = evaluation.generate(pipe, prompts, 1, steps, 3.0, progress=False, output="audio")
    dt = time.time() - t0
    t = scorers.rank_clips(rankers, waves_to_mel(waves), prompts).table
    tables[steps] = t
    print(steps, f"{1000*dt/len(prompts):.0f} ms/clip", "rankers: presence %.3f all_present %.3f order %.3f clap %.4f" % (t.presence.mean(), t.all_present.mean(), t.order.dropna().mean(), t.clap.mean()), flush=True)
for steps in (6, 4, 3):
    for m in ("presence", "all_present", "order", "clap"):  # order: on the temporal prompts (defined there only)
        e = paired_effect(tables[steps][m].to_numpy(float), tables[10][m].to_numpy(float), n_boot=2000)
        print(f"{steps} − 10 steps {m} (n {e['n']}): {e['difference']:+.4f} [{e['low']:+.4f}, {e['high']:+.4f}]")
