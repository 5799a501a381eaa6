"""Preflight: every real input a profile names, checked before any stage runs.

    python -m t2a_lib.run --profile real --check     # (--list shows the plan and checks too)

One small check per kind of input, reading names, headers and manifests, never weights or audio
samples, so a whole profile is checked in seconds. Each says, for its input: present; absent,
with the command that fetches it and the folder it goes to; or present but wrong, naming the
first bad file and why. ``check_inputs`` runs them all, so every problem is shown at once.

Inputs (parameter -> check): ``00_world.external_manifests`` (+ ``audio_root``) -> AudioCaps
manifests and clips; ``01_judges.real_clap_path`` / ``real_ranker_clap_path`` -> transformers CLAP
folders; ``02_base_model.base_checkpoint`` -> a Tango snapshot (or diffusers AudioLDM folder);
``02_base_model.text_encoder_path`` -> google/flan-t5-large's config and tokenizer (a Tango base
needs them); ``03_preferences.audio_alpaca_path`` -> Tango 2's released preference set;
``05_feedback.baton_hd_file`` / ``baton_rd_file`` (+ ``baton_root``) -> BATON's label files and clips.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

FLAN_T5 = "google/flan-t5-large"
FLAN_FILES = "config.json tokenizer.json tokenizer_config.json spiece.model special_tokens_map.json"
TANGO_FILES = ("main_config.json", "vae_config.json", "pytorch_model_main.bin", "pytorch_model_vae.bin")
LFS_POINTER = b"version https://git-lfs"
LAION_CLAPS = ("larger_clap_general", "larger_clap_music", "larger_clap_music_and_speech", "clap-htsat-unfused",
               "clap-htsat-fused")


@dataclass
class Finding:
    """One input: ``status`` is "present", "absent" or "wrong"; ``detail`` says what was found (or the
    first bad file and why); ``fetch`` the command that fetches an absent input."""

    name: str
    parameter: str
    status: str
    detail: str
    fetch: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "present"

    def lines(self) -> list[str]:
        head = f"  {self.status.upper():8s} {self.name} ({self.parameter}): {self.detail}"
        return [head] + ([f"           fetch: {self.fetch}"] if self.fetch and not self.ok else [])


def hf_download(repo: str, folder, files: str = "", dataset: bool = False) -> str:
    return (f"huggingface-cli download {repo}{' ' + files if files else ''}"
            f"{' --repo-type dataset' if dataset else ''} --local-dir {folder}")


def _first_bytes(path: Path, n: int = 64) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def bad_weights_file(path: Path) -> str | None:
    """Why a weights file cannot be what it claims (read from its first bytes), or None."""
    if not path.is_file():
        return f"{path.name} is absent"
    head = _first_bytes(path)
    if head.startswith(LFS_POINTER):
        return f"{path} is a Git LFS pointer, not the weights (run `git lfs pull`, or fetch it again)"
    if path.suffix == ".bin" and not head.startswith((b"PK\x03\x04", b"\x80")):
        return f"{path} is neither a torch zip archive nor a pickle (first bytes {head[:8]!r})"
    if path.suffix == ".safetensors" and (len(head) < 9 or head[8:9] != b"{"):
        return f"{path} is not a safetensors file (no JSON header after the length)"
    return None


def bad_json(path: Path, **expect) -> str | None:
    """Why a JSON config cannot be read, or lacks the ``expect``ed values, or None."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return f"{path} is not valid JSON ({exc})"
    for key, allowed in expect.items():
        if data.get(key) not in allowed:
            return f"{path}: {key} is {data.get(key)!r}, expected one of {sorted(allowed)}"
    return None


def _folder_finding(name, parameter, folder, fetch, problems_of) -> Finding:
    """absent / wrong (first problem) / present, for a folder whose problems ``problems_of`` lists."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return Finding(name, parameter, "absent", f"no folder {folder}", fetch)
    problems = [p for p in problems_of(folder) if p]
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        return Finding(name, parameter, "wrong", problems[0] + more, fetch)
    return Finding(name, parameter, "present", str(folder))


def check_clap(folder, parameter: str) -> Finding:
    """A transformers ClapModel folder (laion/larger_clap_general, laion/clap-htsat-unfused, ...)."""
    name = Path(folder).name
    repo = f"laion/{name}" if name in LAION_CLAPS else "laion/larger_clap_general"  # or another of laion's CLAPs

    def problems(f: Path):
        weights = [f / n for n in ("model.safetensors", "pytorch_model.bin") if (f / n).is_file()]
        yield bad_json(f / "config.json", model_type={"clap"}) if (f / "config.json").is_file() \
            else f"{f / 'config.json'} is absent"
        yield bad_weights_file(weights[0]) if weights else f"{f} has neither model.safetensors nor pytorch_model.bin"
        yield None if (f / "preprocessor_config.json").is_file() else f"{f / 'preprocessor_config.json'} is absent"

    return _folder_finding(f"CLAP {Path(folder).name}", parameter, folder, hf_download(repo, folder), problems)


def check_tango(folder, parameter: str = "02_base_model.base_checkpoint") -> Finding:
    """A Tango / Tango 2 snapshot as declare-lab publishes it, or a diffusers AudioLDM folder."""
    def problems(f: Path):
        if (f / "model_index.json").is_file():
            yield bad_json(f / "model_index.json")
            return
        for name in TANGO_FILES:
            path = f / name
            safetensors = path.with_suffix(".safetensors")
            if name.endswith(".bin") and not path.is_file() and safetensors.is_file():
                path = safetensors
            yield (bad_weights_file(path) if name.endswith(".bin") else bad_json(path)) if path.is_file() \
                else f"{path} is absent"

    return _folder_finding("Tango 2 snapshot", parameter, folder, hf_download("declare-lab/tango2", folder), problems)


def check_text_encoder(base_folder, text_encoder_path, parameter: str = "02_base_model.text_encoder_path"
                       ) -> Finding | None:
    """google/flan-t5-large's config and tokenizer where load_tango looks: ``text_encoder_path``, else
    ``<base>/text_encoder`` or ``flan-t5-large`` beside the base, else the HF cache; None when the base is
    a diffusers AudioLDM folder (its own text encoder)."""
    base = Path(base_folder).expanduser() if base_folder else None
    if base is not None and (base / "model_index.json").is_file():
        return None
    target = text_encoder_path or (base.parent / "flan-t5-large" if base is not None else "checkpoints/flan-t5-large")
    fetch = hf_download(FLAN_T5, target, FLAN_FILES)
    name = f"text encoder {FLAN_T5} (config + tokenizer)"

    def problems(f: Path):
        yield bad_json(f / "config.json", model_type={"t5", "mt5", "umt5"}) if (f / "config.json").is_file() \
            else f"{f / 'config.json'} is absent"
        yield None if any((f / n).is_file() for n in ("spiece.model", "tokenizer.json")) else \
            f"{f} has no tokenizer (spiece.model or tokenizer.json)"

    if text_encoder_path:
        return _folder_finding(name, parameter, text_encoder_path, fetch, problems)
    for near in ((base / "text_encoder", base.parent / "flan-t5-large") if base is not None else ()):
        if (near / "config.json").is_file():  # where load_tango looks without a text_encoder_path
            return _folder_finding(name, parameter, near, fetch, problems)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(FLAN_T5, "config.json")
    if isinstance(cached, str):
        return _folder_finding(name, parameter, Path(cached).parent, fetch, problems)
    return Finding(name, parameter, "absent", f"no {parameter}, no <base_checkpoint>/text_encoder nor "
                   f"../flan-t5-large, not in the HF cache (Tango's snapshot holds the weights, not the config and "
                   f"tokenizer)", fetch)


AUDIOCAPS_FETCH = ("git clone https://github.com/declare-lab/tango && cp tango/data/valid_audiocaps.json "
                   "tango/data/test_audiocaps_subset.json {folder}/; git clone https://github.com/Hannieliao/Baton "
                   "&& cp Baton/data/Audiocaps/train_audiocaps.json {folder}/; the AudioCaps clips as 16 kHz wavs "
                   "(from YouTube: not redistributed) in one folder, passed as 00_world.audio_root")


def check_audiocaps(manifests: dict, audio_root=None, parameter: str = "00_world.external_manifests") -> Finding:
    """Tango-format manifests (train / val / test) and every clip they name (its file, not its samples)."""
    from ..audio.locations import reroot_records
    from ..audio.manifest import ManifestError, read_manifest

    manifests = dict(manifests or {})
    folder = Path(next(iter(manifests.values()), "data/audiocaps")).parent
    fetch, name = AUDIOCAPS_FETCH.format(folder=folder), "AudioCaps manifests + clips"
    absent = [str(p) for p in manifests.values() if not Path(p).is_file()]
    if absent:
        return Finding(name, parameter, "absent", f"no manifest at {', '.join(absent)}", fetch)
    n, missing = 0, []
    for split, path in manifests.items():
        try:
            records = read_manifest(path)
        except (ManifestError, OSError) as exc:
            return Finding(name, parameter, "wrong", f"{split}: {exc}", fetch)
        reroot_records(records, audio_root)
        n += len(records)
        missing += [r for r in records if not os.path.isfile(r.location)]
    if missing:
        r = missing[0]
        where = f" (nor under audio_root {audio_root})" if audio_root else "; pass 00_world.audio_root=<their folder>"
        return Finding(name, parameter, "wrong", f"{len(missing)} of {n} clips not found; first: {r.source} line "
                       f"{r.line}: {r.location}{where}", fetch)
    return Finding(name, parameter, "present", f"{n} clips in {len(manifests)} manifests")


def check_alpaca(source, parameter: str = "03_preferences.audio_alpaca_path") -> Finding:
    """Tango 2's audio-alpaca: its parquet shards' footers (columns), or a JSON file."""
    from ..align.audio_alpaca import REQUIRED, find_alpaca_files

    name, fetch = "audio-alpaca", hf_download("declare-lab/audio-alpaca", source, dataset=True)
    try:
        files = find_alpaca_files(source)
    except FileNotFoundError:
        return Finding(name, parameter, "absent", f"no audio-alpaca files at {source}", fetch)
    for f in (f for f in files if f.suffix == ".parquet"):
        if _first_bytes(f).startswith(LFS_POINTER):
            return Finding(name, parameter, "wrong", f"{f} is a Git LFS pointer, not the shard", fetch)
        import pyarrow.parquet as pq
        try:
            names = pq.ParquetFile(f).schema_arrow.names
        except Exception as exc:  # pyarrow raises several types for a truncated or foreign file
            return Finding(name, parameter, "wrong", f"{f} is not a readable parquet file ({exc})", fetch)
        if set(REQUIRED) - set(names):
            return Finding(name, parameter, "wrong", f"{f} lacks column(s) {sorted(set(REQUIRED) - set(names))}", fetch)
    return Finding(name, parameter, "present", f"{len(files)} file(s) under {source}")


BATON_FETCH = ("git clone https://github.com/Hannieliao/Baton {root}/Baton (labels under Baton/data/HA, "
               "Baton/data/RM), the audio they label at Baton/data/Audio/... under {root}, and "
               "05_feedback.baton_root={root}")


def check_baton(files: dict, baton_root=None, parameter: str = "05_feedback.baton_hd_file/baton_rd_file") -> Finding:
    """BATON's label files (HA, RA) and every clip they name, by BATON's convention (``baton_root``)."""
    from ..audio.manifest import ManifestError
    from ..feedback.released import read_released

    paths = [Path(p) for p in files.values() if p]
    root = baton_root or next((str(a.parent) for p in paths for a in p.parents if a.name == "Baton"), "data")
    name, fetch = "BATON labels + audio", BATON_FETCH.format(root=root)
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        return Finding(name, parameter, "absent", f"no label file at {', '.join(absent)}", fetch)
    n = 0
    for p in paths:
        try:
            n += len(read_released(p, baton_root))
        except (FileNotFoundError, ManifestError) as exc:
            return Finding(name, parameter, "wrong", str(exc).split(". BATON's labels")[0], fetch)
    return Finding(name, parameter, "present", f"{n} labelled clips in {len(paths)} file(s)")


INPUT_STAGES = ("00_world", "01_judges", "02_base_model", "03_preferences", "05_feedback")


def profile_params(profile, overrides: dict | None = None) -> dict[str, dict]:
    """``{stem: {name: value}}`` from the profile file and ``--set`` overrides alone, without reading the
    notebooks (``plan`` does, and checks every name): every parameter naming an input defaults to None
    in its notebook, so what the profile and the overrides give is all there is to check."""
    from .profiles import load_profile

    prof = load_profile(profile)
    glob, per = dict(prof.parameters), {k: dict(v) for k, v in prof.notebooks.items()}
    for key, value in (overrides or {}).items():
        stem, _, name = key.rpartition(".")
        (per.setdefault(stem, {}) if stem else glob)[name or key] = value
    return {stem: {**glob, **per.get(stem, {})} for stem in dict.fromkeys([*INPUT_STAGES, *per])}


def check_inputs(params: dict[str, dict]) -> list[Finding]:
    """Every input the stages' parameters (``{stem: {name: value}}``, as ``plan`` returns them) name."""
    world, judges, base = (params.get(s, {}) for s in ("00_world", "01_judges", "02_base_model"))
    prefs, feedback = params.get("03_preferences", {}), params.get("05_feedback", {})
    found = []
    if world.get("external_manifests"):
        found.append(check_audiocaps(world["external_manifests"], world.get("audio_root")))
    for key in ("real_clap_path", "real_ranker_clap_path"):
        if judges.get(key):
            found.append(check_clap(judges[key], f"01_judges.{key}"))
    if base.get("base_checkpoint"):
        found.append(check_tango(base["base_checkpoint"]))
        found.append(check_text_encoder(base["base_checkpoint"], base.get("text_encoder_path")))
    if prefs.get("audio_alpaca_path"):
        found.append(check_alpaca(prefs["audio_alpaca_path"]))
    labels = {k: feedback.get(k) for k in ("baton_hd_file", "baton_rd_file") if feedback.get(k)}
    if labels:
        found.append(check_baton(labels, feedback.get("baton_root")))
    return [f for f in found if f is not None]


def report(findings: list[Finding]) -> str:
    """The findings as lines, with a last line counting what is missing or wrong."""
    if not findings:
        return "inputs: the profile names no external input (nothing to check)"
    bad = [f for f in findings if not f.ok]
    lines = ["inputs:"] + [line for f in findings for line in f.lines()]
    lines.append(f"{len(findings) - len(bad)} of {len(findings)} inputs present" +
                 (f"; {len(bad)} absent or wrong: fetch them as above, then run again" if bad else ""))
    return "\n".join(lines)


def require_inputs(params: dict[str, dict]) -> list[Finding]:
    """``check_inputs``, raising ``RunnerError`` (exit status 2) with the whole report when any input
    is absent or wrong; the findings otherwise."""
    from .profiles import RunnerError

    findings = check_inputs(params)
    if any(not f.ok for f in findings):
        raise RunnerError("refusing to run: inputs absent or wrong\n" + report(findings))
    return findings
