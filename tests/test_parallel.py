"""Worker processes: thread counts fixed by ``workers`` alone, results in job order, failures named,
and models trained in a worker identical to the same training in this process."""

import json

import numpy as np
import pytest
import torch

from t2a_lib.audio.features import split_mels
from t2a_lib.model import base_model
from t2a_lib.model.vocoder import VocoderConfig
from t2a_lib.run import parallel
from t2a_lib.scoring import scorers
from t2a_lib.world.datasets import build_world

from light_jobs import fail_on_three, threads_and_square
from test_vocoder import TINY, tiny_clips


@pytest.fixture
def threads_of_a_worker():
    """This process at the thread count a worker gets with two workers, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(parallel.threads_per_worker(2))
    yield
    torch.set_num_threads(before)


def test_run_jobs_keeps_job_order_and_the_workers_thread_count():
    out = parallel.run_jobs(threads_and_square, [(i,) for i in range(5)], workers=2, progress=False)
    assert [sq for _, sq in out] == [0, 1, 4, 9, 16]
    assert {n for n, _ in out} == {parallel.threads_per_worker(2)}
    assert parallel.threads_per_worker(2) == max(1, parallel.cpu_count() // 2)
    # one worker: in this process, in turn, at this process's thread count
    assert parallel.run_jobs(threads_and_square, [(2,)], workers=1, progress=False) == [(torch.get_num_threads(), 4)]


def test_a_failing_job_is_named():
    with pytest.raises(parallel.JobError, match="job three failed in a worker process: ValueError: three is not allowed"):
        parallel.run_jobs(fail_on_three, [(1,), (3,), (2,)], workers=2, names=["job one", "job three", "job two"],
                          progress=False)
    job = parallel.start_job(fail_on_three, 3, threads=1, name="background three")
    with pytest.raises(parallel.JobError, match="background three failed"):
        job.result()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("world")
    build_world(d, 96, 8, 24, seed=3, workers=2, progress=False)
    return d


def _tiny_families(root):
    small = {"detector": {"width": 16, "hidden": 8}, "audiotext": {"dim": 16, "width": 16, "hidden": 8, "text_dim": 16}}
    return {role: (root / role, *scorers.scorer_configs(role, seed, 1, 1, 1, **small))
            for role, seed in (("ranker", 0), ("judge", 1000))}


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


@pytest.mark.slow
def test_scorers_trained_in_workers_equal_scorers_trained_here(world, tmp_path, threads_of_a_worker):
    train, test = split_mels(world / "train.jsonl"), split_mels(world / "test.jsonl")
    there, here = _tiny_families(tmp_path / "workers"), _tiny_families(tmp_path / "here")
    sets, cards = scorers.fit_scorers(there, train, test, progress=False, workers=2)
    scorers.fit_scorers(here, train, test, progress=False, workers=1)  # at a worker's thread count
    assert set(cards) == {f"{r}/{m}" for r in ("ranker", "judge") for m in ("detector", "audiotext_0")}
    for role in ("ranker", "judge"):
        assert sets[role].role == role and len(sets[role].audiotext) == 1
        for name in ("detector", "audiotext_0"):
            a, b = _weights(there[role][0] / name), _weights(here[role][0] / name)
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]), (role, name, k)
            assert json.loads((there[role][0] / name / "model_card.json").read_text())["held_out"] == \
                json.loads((here[role][0] / name / "model_card.json").read_text())["held_out"]
    # a second call finds every model saved with its config and trains nothing
    written = {k: c["written"] for k, c in cards.items()}
    _, again = scorers.fit_scorers(there, train, test, progress=False, workers=2)
    assert {k: c["written"] for k, c in again.items()} == written


@pytest.mark.slow
def test_vocoder_trained_beside_this_process_equals_one_trained_here(tmp_path, threads_of_a_worker):
    waves, cfg = tiny_clips(), VocoderConfig(**{**TINY, "steps": 20})
    job = base_model.start_vocoder(tmp_path / "bg", waves, cfg, threads=parallel.threads_per_worker(2))
    assert job is not None
    model_bg, fig_bg = base_model.finish_vocoder(job, tmp_path / "bg", waves, cfg)
    model_here, fig_here = base_model.fit_vocoder(tmp_path / "here", waves, cfg, progress=False)
    assert not (tmp_path / "bg" / "waves.tmp.npy").exists()
    assert fig_bg["losses"] == fig_here["losses"]
    for (k, a), (_, b) in zip(model_bg.state_dict().items(), model_here.state_dict().items()):
        assert torch.equal(a, b), k
    # saved with this config: nothing to start
    assert base_model.start_vocoder(tmp_path / "bg", waves, cfg, threads=1) is None


def test_a_failing_background_vocoder_is_named_and_writes_no_record(tmp_path):
    waves = tiny_clips()
    waves[2, 100] = np.nan
    job = base_model.start_vocoder(tmp_path / "voc", waves, VocoderConfig(**{**TINY, "steps": 2}), threads=1)
    with pytest.raises(parallel.JobError, match="vocoder training failed .*NaN"):
        base_model.finish_vocoder(job, tmp_path / "voc", waves, VocoderConfig(**{**TINY, "steps": 2}))
    assert not (tmp_path / "voc" / "fit.json").exists() and not (tmp_path / "voc" / "waves.tmp.npy").exists()
