"""The suite's own released base model and scorers, as Tango 2 starts from a released Tango.

``releases/`` holds, in safetensors with a model card each:

- ``releases/base/``: the base ``TangoPipeline`` (``pipeline/``, as ``save_pretrained`` writes it)
  and ``release.json``: the training settings, the training curves and held-out scores of
  every component, and the **fingerprint of the world** it was trained on;
- ``releases/scorers/``: the judges and the rankers (``judges/``, ``rankers/``), each model as
  notebook 01 saves it (``config.json``, ``model.safetensors``, ``model_card.json``,
  ``losses.json``, and an audio-text model's ``tokenizer/``).

``release.json`` lists the sha256 of every other file of its release (``files``); loading a release
checks them and refuses a changed file, naming it (restore it with ``git checkout``).

A run uses a release only when its own world has the same fingerprint (``world_fingerprint``:
every split's ids, captions, timelines and relations, and the audio of the first clips of each
split, so a changed synthesiser shows too). Otherwise the notebooks train, saying why.
``make base`` rebuilds both from the world up (the ``scratch`` profile's notebooks 00-02, then
:func:`export`).

    python -m t2a_lib.model.release export papermill_runs/scratch     # what `make base` runs after 00-02
    python -m t2a_lib.model.release check papermill_runs/default/world
    python -m t2a_lib.model.release hash releases/base                # rewrite its file hashes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

from ..run.files import git_restore_advice, read_json
from ..run.runner import STATE_FILE

ROOT = Path(__file__).resolve().parents[2]
RELEASES = ROOT / "releases"
N_AUDIO = 16  # clips of each split whose audio bytes enter the fingerprint
COMMAND = "make base"


class ReleaseError(RuntimeError):
    """A release that is missing, incomplete or made for another world."""


# ----------------------------------------------------------------------------- world fingerprint


def _fingerprint(splits: dict[str, list[dict]], audio: dict[str, list[Path]]) -> str:
    h = hashlib.sha256()
    for split in sorted(splits):
        for rec in splits[split]:
            h.update(json.dumps(rec, sort_keys=True).encode())
        for path in audio[split]:
            h.update(Path(path).read_bytes())
    return h.hexdigest()[:24]


def _record(id_, caption, events, relation) -> dict:
    return {"id": id_, "caption": caption, "relation": relation,
            "events": [{k: round(float(e[k]), 4) if k != "label" else e[k] for k in ("label", "onset", "offset")}
                       for e in events or []]}


def world_fingerprint(world_dir, n_audio: int = N_AUDIO) -> str:
    """The fingerprint of a built world folder (``world.json`` and its split manifests)."""
    from ..world.datasets import SPLITS, load_split

    world_dir = Path(world_dir)
    if not (world_dir / "world.json").is_file():
        raise ReleaseError(f"{world_dir}: no world.json (notebook 00 has not built this world)")
    splits, audio = {}, {}
    for split in SPLITS:
        records = load_split(world_dir, split)
        splits[split] = [_record(r.id, r.captions, r.events, r.relation) for r in records]
        audio[split] = [Path(r.location) for r in records[:n_audio]]
    return _fingerprint(splits, audio)


def planned_world_fingerprint(n_train: int, n_val: int, n_test: int, seed: int, clip_seconds: float, tmp_dir,
                              n_audio: int = N_AUDIO) -> str:
    """The fingerprint the world of these parameters would have, rendering only the clips whose
    audio enters it (seconds, not the minute a whole world takes): how a test checks that the
    committed release is not stale for the ``default`` profile's world."""
    from ..world.datasets import SPLITS, _render_one, plan_world
    from ..world.scenes import WorldConfig

    config = WorldConfig(clip_seconds=clip_seconds)
    plan = plan_world({"train": n_train, "val": n_val, "test": n_test}, seed, config)
    splits, audio = {}, {}
    for split in SPLITS:
        clips = [c for c in plan if c.split == split]
        splits[split] = [_record(f"{split}_{c.index:07d}", c.caption, c.scene.timeline(), c.kind) for c in clips]
        audio[split] = [Path(tmp_dir) / _render_one((c, seed, config, str(tmp_dir)))[1] for c in clips[:n_audio]]
    return _fingerprint(splits, audio)


# ----------------------------------------------------------------------------- content hashes


def file_hashes(folder) -> dict[str, str]:
    """``{path relative to folder: sha256}`` of every file of a release but its ``release.json``."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "release.json"}


def write_hashes(folder) -> dict:
    """Record the current files of the release in ``folder`` in its ``release.json`` (``files``)."""
    path = Path(folder) / "release.json"
    info = {k: v for k, v in read_release(folder).items() if k != "files"}
    info["files"] = file_hashes(folder)
    path.write_text(json.dumps(info, indent=1, default=float))
    return info


def verify_release(folder, info: dict) -> None:
    """Refuse (ReleaseError naming the file) a release file whose bytes differ from its hash."""
    listed = info.get("files")
    if not isinstance(listed, dict) or not listed:
        raise ReleaseError(f"{_rel(Path(folder) / 'release.json')}: lists no file hashes; rebuild the release "
                           f"with `{COMMAND}`")
    for name, digest in listed.items():
        path = Path(folder) / name
        if not path.is_file():
            raise ReleaseError(f"{_rel(path)}: missing from the release; {restore_advice(path)}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise ReleaseError(f"{_rel(path)}: its content differs from the sha256 in release.json (changed "
                               f"or damaged); {restore_advice(path)}")


def restore_advice(path) -> str:
    """What to do about a damaged release file: restore it from git, never delete it."""
    return git_restore_advice(_rel(path))


# ----------------------------------------------------------------------------- reading a release


def read_release(folder, verify: bool = False) -> dict:
    """``release.json`` of a release folder (a clear error when it is missing or unreadable); with
    ``verify`` every file it lists is checked against its sha256."""
    path = Path(folder) / "release.json"
    if not path.is_file():
        raise ReleaseError(f"no release in {folder} ({path.name} missing): run `{COMMAND}` to build one")
    try:
        info = json.loads(path.read_text())
    except ValueError as e:
        raise ReleaseError(f"{path}: unreadable ({e}); {restore_advice(path)}") from None
    if verify:
        verify_release(folder, info)
    return info


# notebook 02's parameters that decide the trained base (evaluation sizes, workers and the like do not)
RECIPE = ("seed", "text_epochs", "timeline_bins", "vae_steps", "vocoder_steps", "use_hifigan", "unet_steps",
          "batch_size", "lr", "min_snr_gamma", "grounding_weight", "ema_decay", "model_size")


def recipe_mismatch(info: dict, recipe: dict) -> list[str]:
    """Each :data:`RECIPE` parameter whose value in ``recipe`` (notebook 02's, now) differs from the
    release's record, named with both values; empty when they agree."""
    if "recipe" not in info:
        return ["the release records no training recipe"]
    return [f"{k}: the release {info['recipe'].get(k)!r}, this notebook {recipe.get(k)!r}" for k in RECIPE
            if info["recipe"].get(k) != recipe.get(k)]


def matching_release(folder, world_dir, recipe: dict | None = None) -> tuple[dict | None, str]:
    """(release.json, "") when the release in ``folder`` was trained on this world (and, with
    ``recipe``, by notebook 02's parameters as they are now), else (None, why not). A release whose
    files differ from their hashes is refused (ReleaseError)."""
    try:
        info = read_release(folder)
    except ReleaseError as e:
        return None, str(e)
    verify_release(folder, info)
    if recipe is not None and (differ := recipe_mismatch(info, recipe)):
        return None, f"the release in {_rel(folder)} was trained by another recipe: {'; '.join(differ)}"
    mine = world_fingerprint(world_dir)
    if info.get("world_fingerprint") != mine:
        return None, (f"the release in {_rel(folder)} was trained on world {info.get('world_fingerprint')} "
                      f"({info.get('world', {}).get('sizes')}, seed {info.get('world', {}).get('seed')}), "
                      f"this run's world is {mine}")
    return info, ""


def install_scorers(run_dir, data: str, folder=RELEASES / "scorers") -> tuple[bool, str]:
    """Copy the released judges and rankers into ``run_dir/scorers`` when they were trained on
    this run's world, each with the ``fit.json`` that notebook 01's ``fit_scorers`` looks for, so
    it loads them instead of training. ``data`` is ``scorers.data_key`` of this world's train and
    test mels: the world's fingerprint matched, so that is the data the release was trained on.
    Returns (used, why not)."""
    from ..run.files import save_fit
    from ..scoring.scorers import fit_key, saved_config

    info, why = matching_release(folder, Path(run_dir) / "world")
    if info is None:
        return False, why
    for role in ("judges", "rankers"):
        for model in sorted((Path(folder) / role).iterdir()):
            target = Path(run_dir) / "scorers" / role / model.name
            (target / "fit.json").unlink(missing_ok=True)  # the record of the model this one replaces
            shutil.copytree(model, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("fit.json"))
            save_fit(target, fit_key(saved_config(model), data))  # last: the copy is complete
    return True, ""


def load_base(folder=RELEASES / "base"):
    """(TangoPipeline, release.json) of the released base model."""
    from .base_model import load_pipeline

    info = read_release(folder, verify=True)
    return load_pipeline(Path(folder) / "pipeline"), info


# ----------------------------------------------------------------------------- building a release


def _rel(path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _git_commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _world_info(run_dir: Path) -> dict:
    world = read_json(run_dir / "world" / "world.json", "world record")
    return {"sizes": world["sizes"], "seed": world["seed"], "config": world["config"], "key": world["key"]}


def _fit_record(folder: Path) -> dict:
    fit = read_json(folder / "fit.json", "fit record")
    return {k: v for k, v in fit.items() if k != "key"} | {"config": fit.get("key")}


def export(run_dir, out=RELEASES) -> dict:
    """Write ``out/base`` and ``out/scorers`` from a run whose notebooks 00-02 trained everything
    (the ``scratch`` profile). Returns the two release.json dicts."""
    run_dir, out = Path(run_dir), Path(out)
    stage = json.loads((run_dir / "02_base_model.json").read_text())
    common = {"world": _world_info(run_dir), "world_fingerprint": world_fingerprint(run_dir / "world"),
              "command": COMMAND, "git_commit": _git_commit(), "run": _rel(run_dir)}
    base_dir = out / "base"
    shutil.rmtree(base_dir, ignore_errors=True)
    shutil.copytree(run_dir / "base" / "pipeline", base_dir / "pipeline")
    base = {**common, "components": {name: _fit_record(run_dir / "base" / name)
                                     for name in ("text", "vae", "vocoder", "unet")},
            "held_out": {k: stage[k] for k in ("by_kind", "text_order_probe", "vocoder", "order_sensitivity",
                                               "eval_output", "mel_vs_audio_agreement")
                         if k in stage},
            "parameters": _stage_parameters(run_dir, "02_base_model"), "recipe": stage["recipe"]}
    (base_dir / "MODEL_CARD.md").write_text(base_card(base))
    (base_dir / "release.json").write_text(json.dumps(base, indent=1, default=float))
    base = write_hashes(base_dir)
    sc_dir = out / "scorers"
    shutil.rmtree(sc_dir, ignore_errors=True)
    cards = {}
    for role in ("judges", "rankers"):
        for model in sorted((run_dir / "scorers" / role).iterdir()):
            shutil.copytree(model, sc_dir / role / model.name)
            cards[f"{role}/{model.name}"] = json.loads((model / "model_card.json").read_text())
    scorers = {**common, "models": cards, "parameters": _stage_parameters(run_dir, "01_judges")}
    (sc_dir / "MODEL_CARD.md").write_text(scorers_card(scorers))
    (sc_dir / "release.json").write_text(json.dumps(scorers, indent=1, default=float))
    scorers = write_hashes(sc_dir)
    return {"base": base, "scorers": scorers}


def _stage_parameters(run_dir: Path, stem: str) -> dict:
    state = json.loads((run_dir / STATE_FILE).read_text())
    return next((s["parameters"] for s in state["stages"] if s["stage"] == stem), {})


def _header(info: dict, title: str) -> list[str]:
    w = info["world"]
    return [f"# {title}", "",
            f"- world: {w['sizes']} clips, seed {w['seed']}, clip {w['config']['clip_seconds']} s; "
            f"fingerprint `{info['world_fingerprint']}`",
            f"- rebuild: `{info['command']}` (the `scratch` profile's notebooks 00-02, then "
            f"`python -m t2a_lib.model.release export papermill_runs/scratch`)",
            f"- built at commit `{info['git_commit']}` from `{info['run']}`", "",
            "A run uses this release only when its world has the same fingerprint; otherwise it trains.", ""]


def base_card(info: dict) -> str:
    lines = _header(info, "Released base model: Tango in miniature")
    p = info["parameters"]
    lines += ["## Training", "", "| setting | value |", "|--|--|"]
    lines += [f"| {k} | {v} |" for k, v in p.items() if k not in ("run_dir", "profile")]
    judged = {"audio": "vocoded audio", "mel": "the VAE's decoded log-mels"}.get(info["held_out"].get("eval_output"), "?")
    lines += ["", f"## Held-out scores (judges, on {judged}; one sample per prompt, Tango 2's evaluation set)", "",
              "| relation | clips | presence | all present | order given all present |", "|--|--|--|--|--|"]
    for kind, r in info["held_out"].get("by_kind", {}).items():
        lines.append(f"| {kind} | {r['clips']} | {r['presence']:.3f} | {r['all_present']:.3f} | "
                     f"{_maybe(r.get('order|present'))} (n={r.get('order|present_n')}) |")
    probe = info["held_out"].get("text_order_probe", {})
    if probe:
        lines += ["", f"Text encoder order probe (held-out): {_maybe(probe.get('held_out'))}."]
    return "\n".join(lines) + "\n"


def scorers_card(info: dict) -> str:
    lines = _header(info, "Released judges and rankers")
    lines += ["Judges evaluate, rankers train: each model stores its role and refuses to load under the other.", "",
              "| model | held-out scores | train seconds |", "|--|--|--|"]
    for name, card in info["models"].items():
        scores = ", ".join(f"{k} {_maybe(v)}" for k, v in card.get("held_out", {}).items())
        lines.append(f"| {name} | {scores} | {card.get('train_seconds')} |")
    return "\n".join(lines) + "\n"


def _maybe(v) -> str:
    return "—" if v is None or (isinstance(v, float) and v != v) else (f"{v:.3f}" if isinstance(v, float) else str(v))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m t2a_lib.model.release", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="write releases/ from a scratch run's notebooks 00-02")
    e.add_argument("run_dir")
    e.add_argument("--out", default=str(RELEASES))
    c = sub.add_parser("check", help="does the release match this world?")
    c.add_argument("world_dir")
    h = sub.add_parser("hash", help="rewrite the file hashes in a release folder's release.json")
    h.add_argument("folder")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "export":
            info = export(args.run_dir, args.out)
            size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
            print(f"release written to {args.out} ({size / 2**20:.1f} MiB); world {info['base']['world_fingerprint']}")
        elif args.cmd == "hash":
            print(f"{args.folder}: {len(write_hashes(args.folder)['files'])} file hashes written")
        else:
            for part in ("base", "scorers"):
                info, why = matching_release(RELEASES / part, args.world_dir)
                print(f"{part}: {'matches' if info else 'does not match: ' + why}")
    except (ReleaseError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
