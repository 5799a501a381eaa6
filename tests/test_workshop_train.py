"""What the room's models train on: the room's majority picks each DPO pair's winner (a pair the
room turned around trains the other way, a tie trains nothing), the decided yes/no labels are
BATON's rewards; the training's progress file and the before / after clips are served with names
checked. (Training itself needs a run's models: `make workshop-train RUN=...`.)"""

import json

import pandas as pd
import pytest
import torch
from run_fixture import make_run
from safetensors.torch import save_file

from t2a_lib.feedback import label_items
from t2a_lib.feedback.workshop import AnswerError, Workshop, WorkshopConfig
from t2a_lib.feedback.workshop_train import Progress, read_progress, room_feedback, room_pairs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("workshop_train") / "run")
    g = torch.Generator().manual_seed(0)
    for folder in ("preferences", "gold"):
        df = pd.read_parquet(run / folder / "preferences.parquet")
        ids = list(df.chosen_id) + list(df.rejected_id)
        save_file({i: torch.randn(2, 3, generator=g) for i in ids}, run / folder / "latents.safetensors")
    return run


def test_the_rooms_majority_picks_each_pairs_winner(run):
    from safetensors.torch import load_file

    items = label_items.pair_items(run)
    pids = list(items.pair_id[:3]) + [items[items.set == "gold"].pair_id.iloc[0]]
    merged = pd.DataFrame({"pair_id": pids, "prompt": [f"prompt {k}" for k in range(4)],
                           "majority": ["chosen", "rejected", "tie", "rejected"]})
    prompts, winners, losers = room_pairs(run, merged)
    assert prompts == ["prompt 0", "prompt 1", "prompt 3"]  # the tie trains nothing
    pref, gold = load_file(run / "preferences" / "latents.safetensors"), load_file(run / "gold" / "latents.safetensors")
    expected = [(pref[pids[0].split("~")[0]], pref[pids[0].split("~")[1]]),
                (pref[pids[1].split("~")[1]], pref[pids[1].split("~")[0]]),  # turned around
                (gold[pids[3].split("~")[1]], gold[pids[3].split("~")[0]])]
    for k, (w, l) in enumerate(expected):
        assert torch.equal(winners[k], w) and torch.equal(losers[k], l)
    with pytest.raises(ValueError, match="decided no pair"):
        room_pairs(run, merged.assign(majority="tie"))


def test_decided_yes_no_labels_are_the_rewards(run):
    integrity = pd.DataFrame({"id": ["hd_00000", "hd_00001", "hd_00002"], "feedback": [1.0, float("nan"), 0.0]})
    temporal = pd.DataFrame({"id": ["hd_00006"], "feedback": [1.0]})
    ids, captions, rewards = room_feedback(run, {"integrity": (integrity, {}), "temporal": (temporal, {}),
                                                 "pairs": (pd.DataFrame(), {})})
    clips = pd.read_parquet(run / "baton" / "hd" / "clips.parquet").set_index("id")
    assert ids == ["hd_00000", "hd_00002", "hd_00006"] and rewards.tolist() == [1.0, 0.0, 1.0]
    assert captions == [clips.caption[i] for i in ids]


def test_progress_and_clips_of_the_room(run, tmp_path):
    w = Workshop(WorkshopConfig(run, out_dir=tmp_path / "ws"))
    assert w.room() == {"running": False, "progress": None}
    progress = Progress(tmp_path / "ws" / "room")
    assert progress.stage("merge", lambda x: x + 1, 1) == 2
    state = read_progress(tmp_path / "ws")
    assert list(state["done"]) == ["merge"] and state["stage"] == "merge" and not state["finished"]
    (tmp_path / "ws" / "room" / "listen" / "dpo").mkdir(parents=True)
    (tmp_path / "ws" / "room" / "listen" / "dpo" / "0.wav").write_bytes(b"RIFF")
    assert w.room_clip("dpo", "0.wav").read_bytes() == b"RIFF"
    for bad in (("dpo", "1.wav"), ("..", "0.wav"), ("dpo", "0.png"), ("progress", "0.wav"), ("dpo", "..%2f0.wav")):
        with pytest.raises(AnswerError, match="no such clip"):
            w.room_clip(*bad)
    json.dumps(w.room())
