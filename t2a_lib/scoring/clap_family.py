"""Rankers and judges on real data: a real CLAP per role, where the world's scorers cannot be trained.

Real data (AudioCaps-format manifests) has free-form captions and no event timelines, so notebook 01
cannot train the world's event detectors and order-aware audio-text models. On that path each role
is a local transformers ``ClapModel`` folder (:func:`t2a_lib.scoring.clap_real.load_real_clap`):
notebook 01 records the two folders in ``<run_dir>/scorers/real_clap.json`` (:func:`install`), and
:func:`t2a_lib.scoring.scorers.load_judges` / ``load_rankers`` return a :class:`ClapFamily` from it.

A ``ClapFamily`` scores **waveforms** (CLAP has its own front end at its own sample rate), so its
judgements carry the CLAP score only: presence, order and the detector's FAD/KL/IS need the world's
judges, and are left out (the claims that need them say "not measured").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

RECORD = "real_clap.json"
MEASURES = ("clap",)  # what a ClapFamily measures per clip
WHY_NOT = ("needs the world's event judges, which train on event timelines; this run's data has none "
           "(real CLAP only)")


def record_path(run_dir) -> Path:
    return Path(run_dir) / "scorers" / RECORD


@dataclass
class ClapFamily:
    """One role's real CLAP: ``score_waves`` for rankers, ``judge_waves`` for judges."""

    role: str
    path: str
    scorer: object = field(repr=False)
    sample_rate: int = 16000  # the rate of the waveforms it is given (the pipeline's)
    detector = None  # no event detector on real data

    @property
    def audiotext(self) -> list:
        """The CLAP model's weights (what a cached fine-tune ranked by it is keyed by)."""
        return [self.scorer.model]

    def score_waves(self, waves, captions: list[str]) -> np.ndarray:
        """Cosine of clip i with caption i, shape (N,)."""
        return self.scorer.score(list(np.asarray(waves, dtype=np.float32)), list(captions),
                                 sample_rate=self.sample_rate)

    def embed_pairs(self, waves, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The frozen embeddings of each clip and of its own caption (the reward model's features)."""
        return (self.scorer.embed_audio(list(np.asarray(waves, dtype=np.float32)), sample_rate=self.sample_rate),
                self.scorer.embed_text(list(captions)))

    def judge_waves(self, waves, captions: list[str], ids: list | None = None):
        """The evaluation table of :func:`t2a_lib.scoring.scorers.judge_clips`, CLAP column only."""
        from .scorers import Judgement, require_role

        require_role(self, "judge", "evaluation")
        clap = self.score_waves(waves, captions)
        table = pd.DataFrame({"id": ids if ids else list(range(len(captions))), "caption": list(captions),
                              "clap": clap.astype(float), "detected": [[] for _ in captions]})
        return Judgement(table, None)


def install(run_dir, judge_path, ranker_path=None) -> dict:
    """Check that both folders load as CLAP models and record them for the later notebooks. Without
    ``ranker_path`` the judge's folder ranks too, and the record says so: a method trained against its
    judge cannot show reward hacking."""
    from .clap_real import load_real_clap

    if not judge_path:
        raise ValueError("this run's data has no event timelines, so the world's judges cannot be trained: "
                         "give real_clap_path (a local laion/clap-htsat-unfused folder) to score with")
    ranker_path = ranker_path or judge_path
    for role, path in (("judge", judge_path), ("ranker", ranker_path)):
        load_real_clap(path, role)  # raises naming what to fetch when absent
    record = {"judge": str(Path(judge_path).resolve()), "ranker": str(Path(ranker_path).resolve()),
              "same_model": Path(judge_path).resolve() == Path(ranker_path).resolve(), "measures": list(MEASURES)}
    path = record_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return record


def load(run_dir, role: str) -> ClapFamily | None:
    """The run's real CLAP of ``role``, or None when the run uses the world's scorers."""
    from .clap_real import load_real_clap

    path = record_path(run_dir)
    if not path.is_file():
        return None
    folder = json.loads(path.read_text())[role]
    return ClapFamily(role, folder, load_real_clap(folder, role))


def uses_real_clap(run_dir) -> bool:
    return record_path(run_dir).is_file()
