"""``accelerate launch`` with 2 CPU processes (gloo) trains DPO (full and LoRA) and BATON to the
model one process trains, from the same seed and global batch.

Tolerance: loss curves within 1e-5 (they are logged to 6 decimals) and final weights within
1e-3 of the update's size, ‖w₂ − w₁‖ ≤ 1e-3 ‖w₁ − w₀‖ (measured: 1.5-2e-5; the two runs differ
only in summation order: a mean over 2 shards' means, gradients summed by all-reduce). Each
process must also have computed half the latent rows, so a run where every process trained on
the whole batch fails."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from t2a_lib.align.dpo import add_lora
from t2a_lib.run import launch

STEPS, BATCH = 4, 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate command is not installed")
    out = tmp_path_factory.mktemp("two")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "t2a_lib.run.launch", "--method", *launch.METHODS, "--steps", str(STEPS), "--batch-size", str(BATCH),
           "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _initial(method: str) -> dict:
    unet, _, _ = launch.tiny_data(16)
    if method == "dpo-lora":
        add_lora(unet, 4, 0)
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


@pytest.mark.parametrize("method", launch.METHODS)
def test_two_processes_train_the_single_process_model(two_processes, method, tmp_path):
    one = launch.train(method, STEPS, BATCH, tmp_path)
    run = json.loads((two_processes / method / "run.json").read_text())
    assert run["processes"] == 2 and len(run["losses"]) == STEPS
    assert max(abs(a - b) for a, b in zip(one["losses"], run["losses"])) <= 1e-5
    w1 = {k: v.detach() for k, v in one["unet"].state_dict().items()}
    w2, w0 = load_file(two_processes / method / "unet.safetensors"), _initial(method)
    assert w1.keys() == w2.keys() == w0.keys()
    diff = torch.cat([(w2[k] - w1[k]).flatten() for k in w1]).norm()
    update = torch.cat([(w1[k] - w0[k]).flatten() for k in w1]).norm()
    assert update > 0 and diff <= 1e-3 * update, (float(diff), float(update))
    rows = [json.loads((two_processes / method / f"rows_{r}.json").read_text()) for r in (0, 1)]
    assert rows == [one["rows"] // 2] * 2
    # the checkpoint the main process wrote holds the final step
    assert json.loads((two_processes / method / "checkpoint" / "state.json").read_text())["step"] == STEPS


def test_a_batch_that_does_not_split_evenly_is_refused():
    from t2a_lib.model.diffusion import Shard

    assert Shard(1, 2)(torch.arange(4)).tolist() == [2, 3]
    assert Shard()(torch.arange(3)).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="split evenly"):
        Shard(0, 2)(torch.arange(3))


def test_a_later_accelerator_may_change_precision():
    """A notebook trains the VAE in float32, then the UNet in bf16 (on a GPU): accelerate alone
    refuses the second precision in the same process."""
    from t2a_lib.model.diffusion import make_accelerator

    assert make_accelerator().mixed_precision == "no"
    assert make_accelerator("bf16").mixed_precision == "bf16"
    assert make_accelerator().mixed_precision == "no"
