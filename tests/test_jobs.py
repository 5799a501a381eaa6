"""Work that notebooks 03, 04, 06 and 07 hand to worker processes: each job reads everything from
the run folder, and gives what the same work gives in this process."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from t2a_lib.align import dpo, preferences
from t2a_lib.evaluate import evaluation, reproduce
from t2a_lib.feedback import baton, kto
from t2a_lib.feedback.reward import baton_prompts, sample_set, write_feedback
from t2a_lib.model.base_model import assemble, load_pipeline, text_bank
from t2a_lib.model.components import MiniTangoConfig, make_text_encoder, make_unet, make_vae
from t2a_lib.model.tango import load_unet
from t2a_lib.run.files import save_fit
from t2a_lib.world.datasets import build_world
from t2a_lib.world.text import build_world_tokenizer

from test_parallel import threads_of_a_worker  # noqa: F401  (a fixture)

TINY = MiniTangoConfig(vae_channels=(8, 16, 16), text_dim=32, text_heads=2, unet_channels=(16, 16, 16),
                       unet_head_dim=8)
PROMPTS = ["A dog barks, then a siren wails", "A bell rings", "Rain falls while a clock ticks", "Wind blows"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder: a tiny base pipeline, a Tango 2 evaluation set, a preference set, a world."""
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    tok = build_world_tokenizer()
    pipe = assemble(make_vae(TINY), make_text_encoder(TINY, len(tok)).eval(), tok, make_unet(TINY).eval(), None, TINY)
    pipe.save_pretrained(run / "base" / "pipeline")
    (run / "eval").mkdir()
    pd.DataFrame({"prompt": PROMPTS, "kind": ["then", "single", "while", "single"]}).to_parquet(run / "eval" / "tango.parquet")
    (run / "eval" / "eval.json").write_text(json.dumps({"sample_seed": 5}))
    g = torch.Generator().manual_seed(1)
    ids = [f"c{i}" for i in range(12)]
    save_file({i: torch.randn(8, 64, 16, generator=g) for i in ids}, _mkdir(run / "preferences") / "latents.safetensors")
    pd.DataFrame({"prompt": [PROMPTS[i % 4] for i in range(6)], "chosen_id": ids[:6], "rejected_id": ids[6:],
                  "strategy": ["S1.1", "S1.2", "S2", "S3", "S3", "S2"]}).to_parquet(run / "preferences" / "preferences.parquet")
    build_world(run / "world", 48, 4, 4, seed=3, workers=1, progress=False)
    return run


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def _perturbed_unet(run, folder):
    """A fine-tuned model's folder: the base UNet with its weights nudged."""
    unet = load_pipeline(run / "base" / "pipeline").unet
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    unet.save_pretrained(folder)
    save_fit(folder.parent, {"perturbed": True})  # as fit_finetuned records it: model_folders reads recorded seeds
    return folder


def test_models_sampled_in_workers_are_what_evaluate_on_reads(run, threads_of_a_worker):
    folder = _perturbed_unet(run, run / "models" / "dpo" / "s0" / "unet")
    assert reproduce.model_folders(run) == {"dpo": [folder]}
    assert evaluation.sample_models(run, [None, folder], "tango", 2, 3.0, "mel", workers=2, progress=False) == 2
    assert evaluation.sample_models(run, [None, folder], "tango", 2, 3.0, "mel", workers=2, progress=False) == 0
    base = load_pipeline(run / "base" / "pipeline")
    tuned = dpo.with_unet(base, reproduce.load_models(run)["dpo"][0])
    for pipe in (base, tuned):
        cached = np.load(evaluation.sample_cache_path(pipe, PROMPTS, 5, 2, 3.0, "mel", run / "samples"))
        here = evaluation.generate(pipe, PROMPTS, 5, 2, 3.0, progress=False, output="mel")  # no cache
        np.testing.assert_allclose(cached, here, atol=1e-5)
    assert not np.allclose(np.load(evaluation.sample_cache_path(base, PROMPTS, 5, 2, 3.0, "mel", run / "samples")),
                           np.load(evaluation.sample_cache_path(tuned, PROMPTS, 5, 2, 3.0, "mel", run / "samples")))


def test_candidates_sampled_in_workers_equal_those_sampled_here(run, tmp_path, threads_of_a_worker):
    config = preferences.PreferenceConfig(n_prompts=3, s11_steps=(1, 2), s12_seeds=2, steps=2, s2_perturbations=1,
                                          s3_perturbations=1, batch_size=4)
    clips = preferences.plan_clips(PROMPTS[:2], config)
    pipe = load_pipeline(run / "base" / "pipeline")
    here = preferences.generate_clips(pipe, clips, config, tmp_path / "here", progress=False)
    there = preferences.generate_clips(pipe, clips, config, tmp_path / "there", progress=False, workers=2,
                                       pipeline_dir=run / "base" / "pipeline")
    assert list(there) == list(here) == [c.clip_id for c in clips]
    for k in here:  # the chunks batch clips differently: equal to float rounding, which Griffin-Lim's
        np.testing.assert_allclose(there[k], here[k], atol=2e-2)  # 32 iterations amplify (test_diffusion)
        assert (tmp_path / "there" / "audio" / f"{k}.wav").exists()
    a, b = load_file(tmp_path / "here" / "latents.safetensors"), load_file(tmp_path / "there" / "latents.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="pipeline_dir"):
        preferences.generate_clips(pipe, clips, config, tmp_path / "x", progress=False, workers=2)


def test_dpo_from_the_run_folder_equals_dpo_on_the_same_pairs_here(run, tmp_path):
    config = dpo.DPOConfig(steps=3, batch_size=2, lr=1e-4, beta=500.0, seed=0)
    history = dpo.fit_from_run(run, tmp_path / "job", config, "preferences", ["S2", "S3"])
    base = load_pipeline(run / "base" / "pipeline")
    bank, df = dpo.load_preference_pairs(run / "preferences", base.text_encoder, base.tokenizer, ["S2", "S3"])
    assert len(df) == 4
    unet, here = dpo.fit_preference_model(tmp_path / "here", base.unet, dpo.make_train_scheduler_like(base), bank,
                                          config, progress=False)
    assert [h["dpo_loss"] for h in history] == [h["dpo_loss"] for h in here]
    job_unet = load_unet(tmp_path / "job" / "unet").state_dict()
    for k, v in unet.state_dict().items():
        assert torch.equal(job_unet[k], v), k


@pytest.fixture(scope="module")
def feedback(run):
    """BATON's HD and RD clips of the run, labelled."""
    pipe = load_pipeline(run / "base" / "pipeline")
    prompts = baton_prompts(2, 2, seed=0)
    for name, labels in (("hd", [1, 0, 1, 1, 0, 1, 0, 0]), ("rd", [0.9, 0.1, 0.5, 0.7, 0.2, 0.3, 0.8, 0.4])):
        rows = sample_set(pipe, prompts, 2, 2, 3.0, seed=1, out_dir=run / "baton" / name)
        field = "feedback" if name == "hd" else "SED"
        file = "hd_labels_alice.jsonl" if name == "hd" else "rd_labels.jsonl"
        write_feedback(run / "baton" / file, rows.location.tolist(), rows.caption.tolist(), labels[:len(rows)],
                       ids=rows.id.tolist(), field=field)
    return run


def test_baton_training_data_is_written_once_and_hd_rd_is_hd_then_rd(feedback):
    run = feedback
    base = load_pipeline(run / "base" / "pipeline")
    baton.write_training_data(run, base.vae, n_pretrain=10, seed=0)
    data = baton.training_sets(run, base.text_encoder, base.tokenizer)
    hd, rd, both = data["baton_hd"], data["baton_rd"], data["baton_hd_rd"]
    assert len(data["pretrain"][0]) == 10 and len(hd[0]) == len(rd[0]) == 8
    assert torch.equal(both[0], torch.cat([hd[0], rd[0]])) and torch.equal(both[2], torch.cat([hd[2], rd[2]]))
    assert hd[2].tolist() == [1, 0, 1, 1, 0, 1, 0, 0]
    torch.testing.assert_close(rd[2], torch.tensor([0.9, 0.1, 0.5, 0.7, 0.2, 0.3, 0.8, 0.4]))
    clips = pd.read_parquet(run / "baton" / "rd" / "clips.parquet")  # the text states are the captions' own
    torch.testing.assert_close(rd[1].states, text_bank(base.text_encoder, base.tokenizer, clips.caption.tolist()).states)
    assert baton.hd_label_file(run / "baton") == "hd_labels_alice.jsonl"


def test_baton_from_the_run_folder_equals_baton_on_the_same_data_here(feedback, tmp_path):
    run = feedback
    base = load_pipeline(run / "base" / "pipeline")
    baton.write_training_data(run, base.vae, n_pretrain=10, seed=0)
    config = baton.BatonConfig(steps=3, batch_size=2, pretrain_batch_size=2, seed=0)
    history = baton.fit_from_run(run, tmp_path / "job", "baton_hd_rd", config)
    data = baton.training_sets(run, base.text_encoder, base.tokenizer)
    _, here = baton.fit_baton_model(tmp_path / "here", base.unet, dpo.make_train_scheduler_like(base),
                                    *data["pretrain"], *data["baton_hd_rd"], config, progress=False)
    assert [h["feedback"] for h in history] == [h["feedback"] for h in here]
    with pytest.raises(FileNotFoundError, match="notebook 06"):
        baton.training_sets(tmp_path, base.text_encoder, base.tokenizer)


def test_kto_from_the_run_folder_trains_on_batons_clips_with_labels_from_their_rewards(feedback, tmp_path):
    run = feedback
    base = load_pipeline(run / "base" / "pipeline")
    baton.write_training_data(run, base.vae, n_pretrain=10, seed=0)
    config = kto.KTOConfig(steps=3, batch_size=4, seed=0)
    history = kto.fit_from_run(run, tmp_path / "job", "kto_hd_rd", config)
    latents, text, rewards = baton.training_sets(run, base.text_encoder, base.tokenizer)["baton_hd_rd"]
    labels = kto.labels_from_rewards(rewards)  # HD's 0/1 and RD's scores at 0.5
    assert labels.tolist() == [1, -1, 1, 1, -1, 1, -1, -1] + [1, -1, 1, 1, -1, -1, 1, -1]
    _, here = kto.fit_kto_model(tmp_path / "here", base.unet, dpo.make_train_scheduler_like(base), latents, text,
                                labels, config, progress=False)
    assert [h["kto_loss"] for h in history] == [h["kto_loss"] for h in here]
    assert (tmp_path / "job" / "unet").is_dir()
    with pytest.raises(ValueError, match="unknown KTO model"):
        kto.fit_from_run(run, tmp_path / "x", "baton_hd", config)
