"""Check notebook parameters before anything runs: types from the ``parameters`` cell, ranges here.

A value's type must match the default in the notebook's ``parameters`` cell (an int where the
default is an int, a number where it is a float, a bool, a string, a list); a ``None`` default
takes anything its range allows. Ranges are one table (``RANGES``), keyed by parameter name,
since a name means the same thing in every notebook (``batch_size``, ``lr``, ``n_boot``), with
``stem.name`` entries where one notebook differs. Numbers written the YAML 1.1 way (``1e-4``)
are numbers here (``parse_value``), on the command line and in profiles alike.
"""
from __future__ import annotations

import ast
import math
import re

import yaml

_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")  # what YAML 1.1 leaves a string

# name -> (kind, low, high, inclusive_low); kind "int" counts, "num" reals, "choice" a set,
# "prob" [0, 1]. A None default allows None besides.
_POS_INT = ("int", 1, None)
_NONNEG_INT = ("int", 0, None)
_POS = ("num", 0.0, None, False)
_NONNEG = ("num", 0.0, None)
RANGES = {
    **{k: _POS_INT for k in (
        "n_train", "n_val", "n_test", "workers", "detector_epochs", "audiotext_epochs", "n_rankers",
        "n_demo", "n_boot", "text_epochs", "vae_steps", "vocoder_steps", "unet_steps", "batch_size",
        "sample_steps", "eval_per_kind", "eval_temporal", "eval_other_per_kind", "eval_integrity",
        "eval_temporal_baton", "n_prompts", "s12_seeds", "steps", "dpo_steps", "n_seeds",
        "sweep_prompts", "crpo_prompts", "crpo_steps", "n_integrity", "n_temporal",
        "samples_per_prompt", "rm_epochs", "pretrain_batch_size", "n_pretrain", "lora_rank", "checkpoint_every")},
    **{k: _NONNEG_INT for k in (
        "n_listen", "timeline_bins", "n_vocoder_check", "n_agreement", "s2_perturbations",
        "s3_perturbations", "n_listen_pairs", "gold_order", "gold_presence", "sft_first_steps",
        "crpo_rounds", "n_rd_prompts")},
    "crpo_samples": ("int", 2, None),
    "clip_seconds": ("num", 0.5, 30.0), "base_sample_seconds": ("num", 0.04, 30.0),
    "lr": _POS, "rm_lr": _POS, "min_snr_gamma": _POS, "kto_lr": _POS, "drift_lr": _POS,
    "kto_beta": _POS, "kto_lambda_desirable": _POS, "kto_lambda_undesirable": _POS,
    "safeguard_mu": ("num", 0.0, 1.0),
    "beta": _POS, "06_baton.beta": _NONNEG,
    "grounding_weight": _NONNEG, "guidance": _NONNEG,
    "ema_decay": ("num", 0.0, 1.0), "annotator_flip": ("num", 0.0, 1.0),
    "held_out": ("num", 0.0, 1.0, False),
    "eval_output": ("choice", {"audio", "mel"}), "gold_prompts": ("choice", {"ranked", "train"}),
    "sweep_lr": ("list", _POS), "sweep_beta": ("list", _POS), "sweep_steps": ("list", _POS_INT),
    "s11_steps": ("list", _POS_INT),
    "external_manifests": ("manifests",),
}


def parse_value(text: str):
    """A ``--set`` value: YAML, except that ``1e-4`` (a string to YAML 1.1) is the float it reads as."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return numbers(value)


def numbers(value):
    """``value`` with every string that reads as a decimal number made that number (in lists and maps too)."""
    if isinstance(value, str) and _FLOAT.match(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items()}
    return value


def _default(info: dict):
    try:
        return ast.literal_eval(info.get("default", "None"))
    except (ValueError, SyntaxError):
        return None


def _type_problem(value, default):
    if default is None or value is None and default is None:
        return None
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, want = isinstance(value, str), "a string"
    elif isinstance(default, (list, tuple)):
        ok, want = isinstance(value, (list, tuple)), "a list"
    elif isinstance(default, dict):
        ok, want = isinstance(value, dict), "a mapping"
    else:
        return None
    return None if ok else f"must be {want} (its default is {default!r})"


def _range_problem(value, rule):
    kind = rule[0]
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            return "must be a list"
        bad = [p for p in (_range_problem(v, rule[1]) for v in value) if p]
        return f"every element {bad[0]}" if bad else None
    if kind == "choice":
        return None if value in rule[1] else f"must be one of {', '.join(sorted(map(repr, rule[1])))}"
    if kind == "manifests":
        if not isinstance(value, dict) or set(value) != {"train", "val", "test"} \
                or not all(isinstance(v, str) and v for v in value.values()):
            return "must be null or a mapping of train, val and test to manifest paths"
        return None
    low, high = rule[1], rule[2]
    closed = rule[3] if len(rule) > 3 else True
    if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
        return "must be an integer" + (f" >= {low}" if low is not None else "")
    if kind == "num" and (isinstance(value, bool) or not isinstance(value, (int, float))
                          or not math.isfinite(value)):
        return "must be a finite number"
    if low is not None and (value < low or value == low and not closed):
        return f"must be {'>=' if closed else '>'} {low}" + (f" and <= {high}" if high is not None else "")
    if high is not None and value > high:
        return f"must be <= {high}"
    return None


def check_value(stem: str, name: str, value, info: dict | None = None) -> str | None:
    """What is wrong with ``stem``'s parameter ``name`` = ``value`` (None when nothing is)."""
    default = _default(info or {})
    problem = _type_problem(value, default)
    rule = RANGES.get(f"{stem}.{name}", RANGES.get(name))
    if problem is None and rule is not None and not (value is None and default is None):
        problem = _range_problem(value, rule)
    return problem and f"{stem}.{name} = {value!r}: {problem}"


def check_values(declared: dict[str, dict], params: dict[str, dict]) -> list[str]:
    """Every problem with the values ``params[stem][name]`` against ``declared[stem][name]``."""
    return [p for stem, values in params.items() for name, value in values.items()
            if (p := check_value(stem, name, value, declared.get(stem, {}).get(name)))]
