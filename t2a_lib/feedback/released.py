"""BATON's released feedback files as the fine-tunes' data: its human (HA) and reward-model (RA) labels.

BATON publishes JSON lines ``{"dataset", "location", "captions", "feedback"}`` (``data/HA/*_HA.json``,
0/1 from people) and the same with the score under ``SED`` (``data/RM/*_RA.json``, reward-model scores
in [0, 1]); :func:`t2a_lib.audio.manifest.read_manifest` reads them as published (a relative
``location`` is taken from the file's folder). :func:`import_feedback` turns one into what notebook 05
writes for clips it generated itself, so notebook 06 trains on it unchanged: ``clips.parquet`` (one
row per clip: id, task, caption, location, feedback), the clips' latents under the base model's VAE
(``latents.safetensors``, keyed by id).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

BATON_HOW_TO = ("BATON's labels are in its repository (github.com/Hannieliao/Baton): data/HA/*_HA.json (human "
                "labels) and data/RM/*_RA.json (reward-model labels), with the audio they label; put each clip "
                "at its line's 'location' (absolute, or relative to the file's folder)")


def task_of(dataset: str | None, path) -> str:
    """BATON's task from a file's ``dataset`` field or name: 2label files ask for integrity (both
    events present), 3label files for temporal order."""
    text = f"{dataset or ''} {Path(path).name}"
    return "temporal" if "3label" in text else "integrity" if "2label" in text else "released"


def import_feedback(path, out_dir, vae) -> pd.DataFrame:
    """Read a BATON HA or RA file, encode its clips with ``vae`` (the base model's) and write
    ``out_dir/clips.parquet`` and ``out_dir/latents.safetensors``; returns the clips' table. An absent
    file or clip raises naming it and what to fetch."""
    from safetensors.torch import save_file

    from ..audio.features import load_waves, waves_to_mel
    from ..audio.manifest import read_manifest
    from ..model.autoencoder import encode_mels, frames_per_latent

    path, out_dir = Path(path), Path(out_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no BATON label file at {path}. {BATON_HOW_TO}")
    records = read_manifest(path, kind="feedback")
    try:
        waves = load_waves(records)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}. {BATON_HOW_TO}") from None
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
    from ..audio.features import load_waves, waves_to_mel
    from .reward import embed_pairs

    waves = load_waves(records)
    if hasattr(rankers, "embed_pairs"):
        audio, text = rankers.embed_pairs(waves, captions)
        return torch.from_numpy(audio), torch.from_numpy(text)
    return embed_pairs(rankers.audiotext[0], waves_to_mel(waves), captions)
