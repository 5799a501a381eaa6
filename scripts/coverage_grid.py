"""Coverage of the claims table's interval (prompts and training seeds) over a grid of seed spreads
and seed counts, beside the prompts-only normal interval: the table behind docs/lab-notes.md,
"Intervals over prompts and training seeds". 0/1 outcomes on 150 prompts, true effect +0.05.

Usage: python scripts/coverage_grid.py [STUDIES]   (default 2000 per cell; a minute or two)"""
import sys

import numpy as np

from t2a_lib.evaluate.inference import seed_prompt_effect

studies = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
rng = np.random.default_rng(1)
print("seed sd  seeds  prompts+seeds  prompts only")
for seed_sd in (0.0, 0.02, 0.04, 0.06, 0.10):
    for k in (2, 3, 4):
        ours = only = 0
        for _ in range(studies):
            rate = rng.uniform(0.3, 0.7, 150)
            base = (rng.random(150) < rate).astype(float)
            u = rng.normal(0, seed_sd, k)
            model = (rng.random((k, 150)) < np.clip(rate + 0.05 + u[:, None], 0, 1)).astype(float)
            e = seed_prompt_effect(model, base)
            ours += e.low <= 0.05 <= e.high
            only += abs(e.difference - 0.05) <= 1.96 * e.prompt_se
        print(f"{seed_sd:7.2f}  {k:5d}  {ours / studies:13.3f}  {only / studies:12.3f}")
