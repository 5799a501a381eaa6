"""LoRA-DPO on a UNet loaded through the real Tango loader (tiny random weights in the real layout):
its reference is the base UNet itself (adapters disabled, checked against an independently loaded
copy), only the adapters train; and the LoRA-vs-full benchmark command runs and prints its fields."""

import json

import pytest
import torch

from checkpoint_fixtures import make_tiny_tango
from t2a_lib.align import dpo_bench
from t2a_lib.align.dpo import DPOConfig, train_dpo
from t2a_lib.model.tango import pipeline_from_checkpoint

torch.set_num_threads(2)
N_FRAMES = 32  # a short clip keeps the test quick; the loader's default is Tango's 1024


@pytest.fixture(scope="module")
def tiny_tango(tmp_path_factory):
    return make_tiny_tango(tmp_path_factory.mktemp("tango"), seed=0)


def _record_forwards(unet) -> tuple[list, object]:
    """Every forward of ``unet``: (args, kwargs, output), in call order."""
    calls = []

    def hook(module, args, kwargs, output):
        calls.append((args, kwargs, output.sample.detach().clone()))

    return calls, unet.register_forward_hook(hook, with_kwargs=True)


def test_lora_reference_is_the_frozen_base_and_only_adapters_train(tiny_tango):
    unet, scheduler, bank, _ = dpo_bench.load_bench_inputs(
        dpo_bench.DPOBenchConfig(str(tiny_tango), n_frames=N_FRAMES), batch=2)
    base = pipeline_from_checkpoint(tiny_tango).unet.eval()  # loaded again: the independent reference
    calls, handle = _record_forwards(unet)
    config = DPOConfig(steps=3, batch_size=2, lora_rank=4, lr=5e-2, warmup=1, seed=3)
    try:
        history = train_dpo(unet, scheduler, bank, config, progress=False)["history"]
    finally:
        handle.remove()
    assert len(calls) == 2 * config.steps  # policy, then reference, each step
    with torch.no_grad():
        for step in range(config.steps):
            (p_args, p_kwargs, policy), (r_args, r_kwargs, reference) = calls[2 * step], calls[2 * step + 1]
            assert torch.equal(reference, base(*r_args, **r_kwargs).sample), f"step {step}: reference != base"
            if step > 0:  # the adapters have moved: the policy is no longer the base
                assert not torch.allclose(policy, base(*p_args, **p_kwargs).sample, atol=1e-6)
    assert history[0]["mse_w"] == pytest.approx(history[0]["ref_w"], rel=1e-6)  # lora_B starts at zero
    trained = {n for n, p in unet.named_parameters() if p.grad is not None}
    lora = {n for n, p in unet.named_parameters() if "lora_" in n}
    assert lora and trained == lora == {n for n, p in unet.named_parameters() if p.requires_grad}
    base_weights = base.state_dict()
    for name, value in unet.state_dict().items():
        if "lora_" not in name:
            assert torch.equal(value, base_weights[name.replace(".base_layer", "")]), f"{name} changed"


def test_full_dpo_trains_every_weight_against_a_frozen_copy(tiny_tango):
    unet, scheduler, bank, _ = dpo_bench.load_bench_inputs(
        dpo_bench.DPOBenchConfig(str(tiny_tango), n_frames=N_FRAMES), batch=2)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    train_dpo(unet, scheduler, bank, DPOConfig(steps=2, batch_size=2, lr=1e-3, warmup=1), progress=False)
    assert all(p.requires_grad for p in unet.parameters())
    assert all(not torch.equal(v, before[k]) for k, v in unet.state_dict().items() if k.endswith("weight")
               and "norm" not in k and "conv_in" in k)


def test_benchmark_command_prints_full_and_lora_rows(tiny_tango, tmp_path, capsys):
    out = tmp_path / "bench.json"
    dpo_bench.main([str(tiny_tango), "--batches", "1", "2", "--steps", "2", "--warmup", "1", "--lora-rank", "4",
                    "--frames", str(N_FRAMES), "--in-process", "--json", str(out)])
    printed = capsys.readouterr().out
    for field in ("step s (median)", "CPU s", "trainable", "added MiB", "MiB/pair", "memory:"):
        assert field in printed
    result = json.loads(out.read_text())
    rows = {(r["mode"], r["batch"]): r for r in result["rows"]}
    assert set(rows) == {("full", 1), ("lora", 1), ("full", 2), ("lora", 2)}
    full, lora = rows[("full", 2)], rows[("lora", 2)]
    assert full["trainable_params"] == full["unet_params"]
    assert 0 < lora["trainable_params"] < full["unet_params"] / 4
    assert all(r["step_s_median"] > 0 and r["step_cpu_s_median"] > 0 and len(r["step_s_all"]) == 2
               for r in rows.values())
    assert full["latent"] == [8, N_FRAMES // 4, 16]
    if full["memory_measure"] is not None:  # Linux: the kernel's peak resident set
        assert full["added_mib"] is not None and "full" in result["memory"]


def test_benchmark_refuses_bad_settings():
    with pytest.raises(ValueError, match="steps"):
        dpo_bench.DPOBenchConfig("x", steps=0)
    assert dpo_bench._step_seconds([0.0, 0.5, 1.0, 1.4, 3.0, 3.2], 4.5, warmup=1) == [2.0, 1.5]
