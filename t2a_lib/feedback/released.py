"""BATON's released feedback files as the fine-tunes' data: its human (HA) and reward-model (RA) labels.

BATON publishes JSON lines ``{"dataset", "location", "captions", "feedback"}`` (``data/HA/*_HA.json``,
0/1 from people) and the same with the score under ``SED`` (``data/RM/*_RA.json``, reward-model scores
in [0, 1]); :func:`read_released` reads them as published: a relative ``location``
(``Baton/data/Audio/...``) is taken from ``baton_root``, the folder that holds the Baton checkout, as
BATON's trainer takes it, or found from the label file's own path (``<root>/Baton/data/HA/x.json``),
with the label file's folder as the fallback (:mod:`t2a_lib.audio.locations`). :func:`import_feedback` turns one into what notebook 05
writes for clips it generated itself, so notebook 06 trains on it unchanged: ``clips.parquet`` (one
row per clip: id, task, caption, location, feedback), the clips' latents under the base model's VAE
(``latents.safetensors``, keyed by id).
"""

from __future__ import annotations

from pathlib import Path

BATON_HOW_TO = ("BATON's labels are in its repository: `git clone https://github.com/Hannieliao/Baton <root>/Baton` "
                "gives Baton/data/HA/*_HA.json (human labels) and Baton/data/RM/*_RA.json (reward-model labels); put "
                "the audio they label at each line's 'location' under <root> (Baton/data/Audio/...) and pass "
                "baton_root=<root> (a relative location is taken from there, else from the label file's folder)")


def task_of(dataset: str | None, path) -> str:
    """BATON's task from a file's ``dataset`` field or name: 2label files ask for integrity (both
    events present), 3label files for temporal order."""
    text = f"{dataset or ''} {Path(path).name}"
    return "temporal" if "3label" in text else "integrity" if "2label" in text else "released"


def read_released(path, baton_root=None) -> list:
    """A BATON HA or RA file's records, each location resolved by BATON's convention (module docstring).
    An absent file, or a clip found nowhere, raises naming it, the places tried and what to fetch."""
    from ..audio.locations import baton_candidates, resolve_baton
    from ..audio.manifest import read_manifest

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no BATON label file at {path}. {BATON_HOW_TO}")
    records = read_manifest(path, kind="feedback", resolve_audio=False)
    missing = []
    for rec in records:
        stored, rec.location = rec.location, resolve_baton(rec.location, path, baton_root)
        if not Path(rec.location).is_file():
            missing.append((rec, [str(c) for c in baton_candidates(stored, path, baton_root)]))
    if missing:
        rec, tried = missing[0]
        raise FileNotFoundError(f"{len(missing)} of {len(records)} clips of {path} not found; first: line {rec.line}, "
                                f"tried {', '.join(tried)}. {BATON_HOW_TO}")
    return records


def import_feedback(path, out_dir, vae, baton_root=None) -> pd.DataFrame:
    """Read a BATON HA or RA file (:func:`read_released`), encode its clips with ``vae`` (the base
    model's) and write ``out_dir/clips.parquet`` and ``out_dir/latents.safetensors``; returns the
    clips' table. An absent file or clip raises naming it and what to fetch."""
    import pandas as pd
    from safetensors.torch import save_file

    from ..audio.features import load_waves, waves_to_mel
    from ..model.autoencoder import encode_mels, frames_per_latent

    path, out_dir = Path(path), Path(out_dir)
    records = read_released(path, baton_root)
    waves = load_waves(records)
    mels = waves_to_mel(waves)
    per_latent = frames_per_latent(vae.config)
    latents = encode_mels(vae, mels[..., : mels.shape[-1] // per_latent * per_latent])
    clips = pd.DataFrame({"id": [f"{out_dir.name}_{i:05d}" for i in range(len(records))],
                          "task": [task_of(r.dataset, path) for r in records],
                          "caption": [r.captions for r in records], "location": [r.location for r in records],
                          "feedback": [float(r.feedback) for r in records]})
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({i: z.contiguous() for i, z in zip(clips.id, latents)}, out_dir / "latents.safetensors")
    clips.to_parquet(out_dir / "clips.parquet", index=False)
    return clips


def embed_clips(rankers, records, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The reward model's features of each clip and its own caption: the world's ranker audio-text
    model on log-mels, or a real CLAP (:class:`t2a_lib.scoring.clap_family.ClapFamily`) on the waveforms."""
    import torch

    from ..audio.features import load_waves, waves_to_mel
    from .reward import embed_pairs

    waves = load_waves(records)
    if hasattr(rankers, "embed_pairs"):
        audio, text = rankers.embed_pairs(waves, captions)
        return torch.from_numpy(audio), torch.from_numpy(text)
    return embed_pairs(rankers.audiotext[0], waves_to_mel(waves), captions)
