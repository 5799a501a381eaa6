"""The room's labels, trained on during a coffee break: ``python -m t2a_lib.feedback.workshop_train
--run-dir papermill_runs/default`` (``make workshop-train``, or the teacher page's button).

From the workshop's merged answers (``<out>/merged/``, written first) and the run's models:

1. **DPO on the room's pair verdicts**: each pair the room decided, its majority's clip as the
   winner (so a pair the room turned around trains the other way), on the run's pair latents
   (``preferences/`` and ``gold/latents.safetensors``).
2. **BATON's HD fine-tune on the room's yes/no labels**: reward-weighted diffusion loss on the
   labelled clips' latents (``baton/hd/latents.safetensors``) beside a pre-training term.
3. **BATON's reward model on the same labels** (the rankers' audio-text embeddings, as notebook
   05 trains it): its training AUC says whether the room's labels are learnable at all.
4. **Before / after**: the base model and each room model sample the same held-out prompts
   (the run's ``baton`` evaluation set) from the same noise (one seed); the judges score them, and
   the verdict is the paired difference in "all events present" (and order) with a 95% bootstrap
   interval. ``n_listen`` of the clips are written as WAV files for the pages' players.

Why this is enough to hear: a few dozen steps at the run's learning rate move a small UNet
measurably on the prompts of the clips it saw (notebooks 04 and 06 use the same losses with more
steps); the players use one seed, so what differs between before and after is the model alone.
``WorkshopTrainConfig``'s defaults (40 + 40 steps, 16 judged prompts) are the ``workshop``
profile; they are not yet timed on the default profile's models (docs/workshop.md gives what was
measured), so time them once before a session and lower the steps if a break is short.
Progress goes to ``<out>/room/progress.json`` after every stage.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import label_items, labels
from .workshop import Workshop, WorkshopConfig

STAGES = ["merge", "dpo", "baton_hd", "reward_model", "listen"]


@dataclass
class WorkshopTrainConfig:
    """The ``workshop`` profile: a few dozen steps per model, meant for a coffee break (time it once)."""

    dpo_steps: int = 40
    baton_steps: int = 40
    batch_size: int = 4
    lr: float = 1e-4
    beta: float = 2000.0
    n_pretrain: int = 32
    rm_epochs: int = 50
    n_judge: int = 16  # held-out prompts the judges score, before and after
    n_listen: int = 4  # of which the pages play
    sample_steps: int | None = None  # None: the run's own (runner.json's sample_steps), else 25
    guidance: float = 3.0
    seed: int = 0
    n_boot: int = 1000


class Progress:
    """``<room>/progress.json``: the stage now, the stages done with their seconds, the result."""

    def __init__(self, folder: Path):
        self.path, self.t0 = folder / "progress.json", time.time()
        self.state = {"stages": STAGES, "done": {}, "stage": None, "started": labels.now(), "finished": None,
                      "error": None, "result": None}

    def write(self, **changes) -> None:
        self.state.update(changes)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(".progress.json.tmp")
        tmp.write_text(json.dumps(self.state, default=str))
        os.replace(tmp, self.path)

    def stage(self, name: str, fn, *args):
        self.write(stage=name)
        start = time.time()
        out = fn(*args)
        self.state["done"][name] = round(time.time() - start, 1)
        self.write()
        return out


def read_progress(out_dir) -> dict | None:
    path = Path(out_dir) / "room" / "progress.json"
    return json.loads(path.read_text()) if path.exists() else None


def _pair_latents(run_dir: Path, pair_id: str, items: pd.DataFrame, cache: dict) -> tuple[torch.Tensor, torch.Tensor]:
    from safetensors.torch import load_file

    folder = items.loc[pair_id, "set"]
    if folder not in cache:
        cache[folder] = load_file(run_dir / folder / "latents.safetensors")
    chosen, rejected = pair_id.split("#")[0].split("~")
    return cache[folder][chosen], cache[folder][rejected]


def room_pairs(run_dir: Path, merged: pd.DataFrame) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(prompts, winners, losers) of the pairs the room decided: the majority's clip wins."""
    items = label_items.pair_items(run_dir).set_index("pair_id")
    decided = merged[merged.majority != "tie"]
    cache, winners, losers = {}, [], []
    for row in decided.itertuples():
        chosen, rejected = _pair_latents(run_dir, row.pair_id, items, cache)
        w, l = (chosen, rejected) if row.majority == "chosen" else (rejected, chosen)
        winners.append(w)
        losers.append(l)
    if not winners:
        raise ValueError("the room decided no pair yet (every pair a tie or unanswered)")
    return decided.prompt.tolist(), torch.stack(winners), torch.stack(losers)


def room_feedback(run_dir: Path, merges: dict) -> tuple[list[str], list[str], torch.Tensor]:
    """(clip ids, captions, rewards) of every clip the room decided, over BATON's questions."""
    ids, rewards = [], []
    for task, (merged, _) in merges.items():
        if task != "pairs":
            decided = merged[merged.feedback.notna()]
            ids += decided.id.astype(str).tolist()
            rewards += decided.feedback.tolist()
    clips = pd.read_parquet(run_dir / "baton" / "hd" / "clips.parquet").set_index("id")
    keep = [k for k, i in enumerate(ids) if i in clips.index]  # the gold clips (known truth) have no HD latents
    ids, rewards = [ids[k] for k in keep], [rewards[k] for k in keep]
    if not ids:
        raise ValueError("the room decided no yes/no label yet")
    return ids, clips.loc[ids, "caption"].tolist(), torch.tensor(rewards, dtype=torch.float32)


def pretrain_term(run_dir: Path, base, n: int, seed: int):
    """BATON's pre-training term: ``n`` training clips (latents, text states), from notebook 06's
    training data when written, else encoded now by the base VAE."""
    from ..model.base_model import text_bank
    from .baton import TRAINING_DATA, training_sets

    if (run_dir / "baton" / TRAINING_DATA).exists():
        return training_sets(run_dir, base.text_encoder, base.tokenizer)["pretrain"]
    from ..audio.features import split_mels
    from ..model.autoencoder import encode_mels

    mels, records = split_mels(run_dir / "world" / "train.jsonl")
    pick = np.random.default_rng(seed).permutation(len(records))[:n]
    return encode_mels(base.vae, mels[pick]), text_bank(base.text_encoder, base.tokenizer, [records[i].captions for i in pick])


def train_dpo(run_dir: Path, base, merged_pairs: pd.DataFrame, folder: Path, c: WorkshopTrainConfig) -> dict:
    from ..align.dpo import DPOConfig, fit_preference_model, make_train_scheduler_like, pair_bank

    prompts, winners, losers = room_pairs(run_dir, merged_pairs)
    config = DPOConfig(steps=c.dpo_steps, batch_size=c.batch_size, lr=c.lr, beta=c.beta, warmup=5,
                       checkpoint_every=c.dpo_steps, seed=c.seed)
    bank = pair_bank(base.text_encoder, base.tokenizer, prompts, winners, losers)
    unet, history = fit_preference_model(folder, base.unet, make_train_scheduler_like(base), bank, config, progress=False)
    return unet, {"pairs": len(prompts), "steps": c.dpo_steps, "last_loss": _last(history, "dpo_loss")}


def train_baton_hd(run_dir: Path, base, merges: dict, folder: Path, c: WorkshopTrainConfig) -> dict:
    from safetensors.torch import load_file

    from ..align.dpo import make_train_scheduler_like
    from ..model.base_model import text_bank
    from .baton import BatonConfig, fit_baton_model

    ids, captions, rewards = room_feedback(run_dir, merges)
    latents = load_file(run_dir / "baton" / "hd" / "latents.safetensors")
    pre_latents, pre_text = pretrain_term(run_dir, base, c.n_pretrain, c.seed)
    config = BatonConfig(steps=c.baton_steps, batch_size=c.batch_size, pretrain_batch_size=c.batch_size, lr=c.lr,
                         warmup=5, checkpoint_every=c.baton_steps, seed=c.seed)
    unet, history = fit_baton_model(folder, base.unet, make_train_scheduler_like(base), pre_latents, pre_text,
                                 torch.stack([latents[i] for i in ids]), text_bank(base.text_encoder, base.tokenizer, captions),
                                 rewards, config, progress=False)
    return unet, {"clips": len(ids), "yes": int(rewards.sum()), "steps": c.baton_steps, "last_loss": _last(history, "loss")}


def train_reward(run_dir: Path, merges: dict, c: WorkshopTrainConfig) -> dict:
    """BATON's reward model on the room's labels; its AUC on them (training AUC: the room's
    labels are few, so this says whether they are learnable, not how well it generalises)."""
    from ..scoring.scorers import load_rankers
    from .released import embed_clips
    from .reward import reward, roc_auc, train_reward_model

    ids, captions, rewards = room_feedback(run_dir, merges)
    clips = label_items.feedback_items(run_dir).drop_duplicates("id").set_index("id")
    a_emb, t_emb = embed_clips(load_rankers(run_dir), label_items.records(clips.loc[ids].reset_index()), captions)
    model, _ = train_reward_model(a_emb, t_emb, rewards.numpy(), epochs=c.rm_epochs, seed=c.seed)
    two_classes = 0 < float(rewards.mean()) < 1
    return {"clips": len(ids), "train_auc": roc_auc(rewards.numpy(), reward(model, a_emb, t_emb)) if two_classes else None}


def _last(history, key: str):
    rows = [h for h in (history or []) if isinstance(h, dict) and key in h]
    return float(rows[-1][key]) if rows else None


def sample_steps(run_dir: Path, c: WorkshopTrainConfig) -> int:
    if c.sample_steps:
        return c.sample_steps
    runner = run_dir / "runner.json"
    params = json.loads(runner.read_text()).get("parameters", {}) if runner.exists() else {}
    return int(params.get("sample_steps", 25))


def listen(run_dir: Path, base, unets: dict, room: Path, c: WorkshopTrainConfig) -> dict:
    """Base and room models on the same held-out prompts from the same noise: the judges' paired
    verdict (after - before, 95% bootstrap interval) and ``n_listen`` clips each as WAV files."""
    from ..align.dpo import with_unet
    from ..audio.features import waves_to_mel
    from ..audio.wav import write_wav
    from ..evaluate.claims import paired_effect
    from ..evaluate.evaluation import generate, load_eval_set, sample_seed
    from ..scoring.scorers import judge_clips, load_judges

    prompts = load_eval_set(run_dir, "baton").prompt.tolist()[:c.n_judge]
    seed, steps, judges = sample_seed(run_dir), sample_steps(run_dir, c), load_judges(run_dir)
    tables, clips = {}, []
    for name, unet in {"before": base.unet, **unets}.items():
        waves = generate(with_unet(base, unet), prompts, seed, steps, c.guidance, progress=False, output="audio")
        tables[name] = judge_clips(judges, waves_to_mel(waves), prompts).table
        for k in range(min(c.n_listen, len(prompts))):
            write_wav(room / "listen" / name / f"{k}.wav", waves[k])
    for k in range(min(c.n_listen, len(prompts))):
        clips.append({"prompt": prompts[k], "players": {name: f"/room/{name}/{k}.wav" for name in tables}})
    verdict = {name: {metric: paired_effect(tables[name][metric], tables["before"][metric], c.n_boot, c.seed)
                      for metric in ("all_present", "order") if metric in tables[name]}
               for name in unets}
    return {"prompts": len(prompts), "seed": seed, "steps": steps, "clips": clips, "verdict": verdict}


def train_room(run_dir, out_dir=None, config: WorkshopTrainConfig = WorkshopTrainConfig()) -> dict:
    """Every stage of the module docstring; ``<out>/room/progress.json`` follows them."""
    from ..model.base_model import load_run_pipeline

    workshop = Workshop(WorkshopConfig(run_dir, out_dir))
    run_dir, room = workshop.run_dir, workshop.out_dir / "room"
    progress = Progress(room)
    progress.write(config=asdict(config))
    try:
        merges = progress.stage("merge", lambda: (workshop.write_merges(), workshop._merges())[1])
        base = load_run_pipeline(run_dir)
        unets, result = {}, {}
        if "pairs" in merges:
            unets["dpo"], result["dpo"] = progress.stage("dpo", train_dpo, run_dir, base, merges["pairs"][0], room / "dpo", config)
        unets["baton_hd"], result["baton_hd"] = progress.stage("baton_hd", train_baton_hd, run_dir, base, merges,
                                                              room / "baton_hd", config)
        result["reward_model"] = progress.stage("reward_model", train_reward, run_dir, merges, config)
        result["listen"] = progress.stage("listen", listen, run_dir, base, unets, room, config)
    except Exception as e:  # noqa: BLE001 (the pages show it; the terminal gets the traceback)
        progress.write(error=f"{type(e).__name__}: {e}", finished=labels.now())
        raise
    progress.write(stage=None, result=result, finished=labels.now(), seconds=round(time.time() - progress.t0, 1))
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m t2a_lib.feedback.workshop_train")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--out-dir", help="the workshop's answers (default: <run-dir>/workshop)")
    for field, default in asdict(WorkshopTrainConfig()).items():
        p.add_argument(f"--{field.replace('_', '-')}", type=type(default) if default is not None else int, default=default)
    args = vars(p.parse_args(argv))
    run_dir, out_dir = args.pop("run_dir"), args.pop("out_dir")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    result = train_room(run_dir, out_dir, WorkshopTrainConfig(**args))
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
