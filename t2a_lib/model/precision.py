"""Mixed precision: what may run in bf16, and what stays float32.

On a GPU the UNet runs under bf16 autocast: in training through accelerate
(``mixed_precision="bf16"``), in sampling through :class:`t2a_lib.model.tango.TangoPipeline`
(:func:`sampling_precision`). Matmuls and convolutions then run in bf16 (8 bits of mantissa,
relative rounding ~4e-3). :data:`FLOAT32` lists what stays float32 regardless, and why; each
place runs inside :func:`float32` and is tested under autocast (``tests/test_precision.py``).
On a CPU nothing is autocast by default, so these guards change no number there.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

FLOAT32 = {
    "vae_decode": "the VAE's log-mel is what the vocoder and the judges hear; its output is not trained "
                  "here, and a bf16 decode would move every score (t2a_lib.model.tango.TangoPipeline.latents_to_mel)",
    "loss_reductions": "the per-sample error is a mean over C×H×W ≈ 10^3-10^5 terms; summed in bf16 it "
                       "loses digits the DPO difference needs (t2a_lib.model.diffusion.per_sample_mse)",
    "dpo_logsigmoid_argument": "-β/2 [(m_w - m_l) - (r_w - r_l)] with β = 2000: a difference of errors "
                               "~1e-3 apart, times 1000; in bf16 it would round to a few levels "
                               "(t2a_lib.align.dpo.dpo_loss)",
    "kto_sigmoid_argument": "y·β·(Δ_ref − Δ_θ − z̄) with β = 1000: the same difference of errors times 1000 "
                            "(t2a_lib.feedback.kto.kto_loss)",
}


@contextmanager
def float32(device_type: str = "cpu"):
    """Autocast off for the block: tensors made inside keep the dtype of their inputs (cast them
    with ``.float()``). A no-op when no autocast is active."""
    with torch.autocast(device_type, enabled=False):
        yield


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or as it is when wider (float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def sampling_precision(device: torch.device, mixed_precision: str | None = None) -> str:
    """``"bf16"`` or ``"no"``: what the UNet's forward runs in when sampling. None: bf16 on a GPU
    that supports it, float32 on a CPU (where bf16 is slower and the default numbers are kept)."""
    if mixed_precision is not None:
        if mixed_precision not in ("bf16", "no"):
            raise ValueError(f"mixed_precision must be 'bf16' or 'no', got {mixed_precision!r}")
        return mixed_precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"


def autocast(device: torch.device, mixed_precision: str):
    """The autocast context for ``mixed_precision`` (``"no"``: disabled, changing nothing)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")
