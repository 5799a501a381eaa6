"""Usage: python scripts/text_encoder_first_losses.py RUN_DIR THREADS (a run whose 02 trained the base).

Does 02's text-encoder training depend on the thread count? The first losses of its training
(scratch's data), on 1 and on 2 threads, against the release's and the scratch run's records."""
import json
import sys

import torch

from t2a_lib.audio.features import split_mels
from t2a_lib.model.components import MiniTangoConfig
from t2a_lib.scoring import audiotext
from t2a_lib.scoring.audiotext import AudioTextConfig, timeline_targets, train_audiotext

run = sys.argv[1]
threads = int(sys.argv[2])
torch.set_num_threads(threads)
mels, recs = split_mels(f"{run}/world/train.jsonl")
captions = [r.captions for r in recs]
timeline = timeline_targets(recs, 8, mels.shape[-1])
seen = []
orig = audiotext.contrastive_loss


class Enough(Exception):
    pass


def recording(*a, **k):
    if len(seen) >= 3:
        raise Enough
    out = orig(*a, **k)
    seen.append(out)
    return out


bce_seen = []
orig_bce = audiotext.timeline_bce


def recording_bce(*a, **k):
    out = orig_bce(*a, **k)
    bce_seen.append(out)
    return out


audiotext.contrastive_loss = recording
audiotext.timeline_bce = recording_bce
cfg = AudioTextConfig(role="base", seed=7, text_arch="t5", text_dim=MiniTangoConfig().text_dim, epochs=4, timeline_bins=8)
try:
    train_audiotext(cfg, mels, captions, progress=False, timeline=timeline)
except Enough:
    pass
rel = json.load(open("releases/base/release.json"))["components"]["text"]["losses"][:3]
scr = json.load(open(f"{run}/base/text/fit.json"))["losses"][:3]
print(f"threads {threads}: total loss of steps 0-2 {[float(c + b) for c, b in zip(seen, bce_seen)]}")
print("release total losses", rel)
print("scratch total losses", scr)
