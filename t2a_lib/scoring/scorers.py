"""Judges and rankers: two independent sets of learned scorers that are never mixed.

- **Rankers** are used *inside* the methods: ranking samples for the preference set, the reward
  model's embeddings, the simulated annotators.
- **Judges** are used *only* to evaluate. They come from other seeds and another architecture
  (a dilated temporal CNN with no recurrence and a GRU text encoder, where rankers use a
  conv + BiGRU trunk and a Transformer), so a method that overfits its ranker shows up instead of hiding.

Each model stores its role in its config and refuses to load under the other one; method code
calls ``require_role(scorers, "ranker", purpose)`` and evaluation code ``... "judge" ...``.

``judge_clips`` is the one evaluation entry point: per-clip presence, order and CLAP score plus
the detector outputs that FAD, KL and IS need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .audiotext import AudioTextConfig, AudioTextModel
from ..world.captions import parse_caption_or_none
from .detector import DetectorConfig, DetectorOutput, EventDetector
from .event_metrics import order_correct, order_margin, presence, presence_probability

ROLES = ("judge", "ranker")

# architectures per role: judges differ from rankers in architecture as well as seed
DEFAULT_ARCH = {
    "judge": {"detector": {"arch": "tcn"}, "audiotext": {"audio_arch": "tcn", "text_arch": "gru"}},
    "ranker": {"detector": {"arch": "conv1d_gru"}, "audiotext": {"audio_arch": "conv1d_gru", "text_arch": "transformer"}},
}
DEFAULT_SEEDS = {"judge": 1000, "ranker": 0}


class RoleError(RuntimeError):
    """A judge used where a ranker belongs, or the reverse."""


@dataclass
class Scorers:
    role: str
    detector: EventDetector
    audiotext: list[AudioTextModel] = field(default_factory=list)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        for m in [self.detector, *self.audiotext]:
            if m.role != self.role:
                raise RoleError(f"a {m.role} model cannot join the {self.role}s")

    def save(self, folder) -> Path:
        folder = Path(folder)
        self.detector.save(folder / "detector")
        for i, m in enumerate(self.audiotext):
            m.save(folder / f"audiotext_{i}")
        return folder

    @classmethod
    def load(cls, folder, role: str) -> "Scorers":
        folder = Path(folder)
        if not folder.exists():
            raise FileNotFoundError(f"no {role}s in {folder}: run notebook 01 (judges and rankers) first")
        models = [AudioTextModel.load(p, role) for p in sorted(folder.glob("audiotext_*"))]
        return cls(role, EventDetector.load(folder / "detector", role), models)

    def clap_scores(self, mels: torch.Tensor, captions: list[str]) -> np.ndarray:
        """Cosine of clip i with caption i, averaged over the ensemble."""
        return np.mean([m.score(mels, captions) for m in self.audiotext], axis=0)


def require_role(scorers, role: str, purpose: str) -> None:
    """Raise unless ``scorers`` (a Scorers or a single model) has ``role``."""
    have = getattr(scorers, "role", None)
    if have != role:
        raise RoleError(f"{purpose} must use {role}s, got {have!r}: judges evaluate, rankers train, never both")


def judges_dir(run_dir) -> Path:
    return Path(run_dir) / "scorers" / "judges"


def rankers_dir(run_dir) -> Path:
    return Path(run_dir) / "scorers" / "rankers"


def ranker_scores(rankers, waves, captions: list[str]) -> np.ndarray:
    """Each ranker's cosine of clip i with caption i, shape (N, rankers): the world's audio-text
    models on the clips' log-mels, or a real CLAP (real data: :mod:`t2a_lib.scoring.clap_family`)
    on the waveforms, one column."""
    if hasattr(rankers, "score_waves"):
        return rankers.score_waves(waves, captions)[:, None]
    from ..audio.features import waves_to_mel

    mels = waves_to_mel(waves)
    return np.stack([m.score(mels, captions) for m in rankers.audiotext], axis=1)


def load_judges(run_dir):
    """The run's judges: the world's (notebook 01 trained them), or on real data without timelines the
    real CLAP notebook 01 recorded (:mod:`t2a_lib.scoring.clap_family`)."""
    from . import clap_family

    return clap_family.load(run_dir, "judge") or Scorers.load(judges_dir(run_dir), "judge")


def load_rankers(run_dir):
    """The run's rankers, the world's or the real CLAP notebook 01 recorded (as :func:`load_judges`)."""
    from . import clap_family

    return clap_family.load(run_dir, "ranker") or Scorers.load(rankers_dir(run_dir), "ranker")


def scorer_configs(role: str, seed: int, n_audiotext: int, detector_epochs: int, audiotext_epochs: int,
                   **overrides) -> tuple[DetectorConfig, list[AudioTextConfig]]:
    """The configs notebook 01 trains for a role: one detector and ``n_audiotext`` audio-text
    models (the rankers are an ensemble of two, as in Tango 2), seeds offset per model."""
    arch = DEFAULT_ARCH[role]
    det = DetectorConfig(role=role, seed=seed, epochs=detector_epochs, **arch["detector"], **overrides.get("detector", {}))
    ats = [AudioTextConfig(role=role, seed=seed + 1 + i, epochs=audiotext_epochs, **arch["audiotext"],
                           **overrides.get("audiotext", {})) for i in range(n_audiotext)]
    return det, ats


@dataclass
class Judgement:
    """Per-clip verdicts (``table``) plus the detector outputs for FAD / KL / IS."""

    table: pd.DataFrame
    detector: DetectorOutput


def _detector_columns(labels: list[str], classes: list, caption: str) -> list[int]:
    """The detector's class index of each caption label (raises if the detector lacks one)."""
    col = {str(c): k for k, c in enumerate(classes)}
    missing = [lab for lab in labels if lab not in col]
    if missing:
        raise ValueError(f"caption {caption!r} prompts {missing}, which the detector does not know")
    return [col[lab] for lab in labels]


def judge_clips(judges: Scorers, mels: torch.Tensor, captions: list[str], ids: list[str] | None = None) -> Judgement:
    """Score clips against the captions they were generated from, with the judges only: the one
    evaluation entry point (see :func:`score_clips` for the table)."""
    require_role(judges, "judge", "evaluation")
    return score_clips(judges, mels, captions, ids)


def rank_clips(rankers: Scorers, mels: torch.Tensor, captions: list[str], ids: list[str] | None = None) -> Judgement:
    """The same table as :func:`judge_clips`, from the rankers: what a method may look at while it
    is trained or tuned (e.g. choosing DPO's settings on validation prompts)."""
    require_role(rankers, "ranker", "ranking")
    return score_clips(rankers, mels, captions, ids)


def score_clips(family: Scorers, mels: torch.Tensor, captions: list[str], ids: list[str] | None = None) -> Judgement:
    """Score clips against the captions they were generated from, with one family of scorers.

    Per clip: prompted events (from the caption grammar), presence recall, whether all are
    present, whether they sound in the prompted order (temporal captions only; NaN otherwise),
    the family's CLAP score, and the detected events. Two continuous forms of the verdicts come
    from the detector's frame posteriors: ``presence_prob`` (:func:`~t2a_lib.scoring.metrics.presence_probability`
    over ``spec.all_labels``, every parsed caption) and ``order_margin`` in seconds
    (:func:`~t2a_lib.scoring.metrics.order_margin` over ``spec.time_order``; temporal captions only, NaN
    otherwise). Free-form captions get NaN in every caption-derived column.
    """
    if len(mels) != len(captions):
        raise ValueError(f"{len(mels)} clips but {len(captions)} captions")
    out = family.detector.analyse(mels)
    detected = family.detector.events(out.frame_probs)
    clap = family.clap_scores(mels, captions) if family.audiotext else np.full(len(captions), np.nan)
    classes, hop = family.detector.config.classes, family.detector.config.hop_seconds
    rows = []
    for i, (cap, est) in enumerate(zip(captions, detected)):
        spec = parse_caption_or_none(cap)  # None for a free-form caption: CLAP score only
        row = {"id": ids[i] if ids else i, "caption": cap, "clap": float(clap[i]),
               "detected": [e.label for e in sorted(est, key=lambda e: e.onset)]}
        if spec is not None:
            pres = presence(spec.all_labels, est)
            probs = out.frame_probs[i]
            row.update(relation=spec.kind, n_events=len(spec.all_labels), presence=pres["recall"],
                       all_present=float(pres["all_present"]),
                       order=float(order_correct(spec.time_order, est)) if spec.is_temporal else np.nan,
                       presence_prob=presence_probability(probs, _detector_columns(spec.all_labels, classes, cap)),
                       order_margin=order_margin(probs, _detector_columns(spec.time_order, classes, cap), hop)
                       if spec.is_temporal else np.nan)
        rows.append(row)
    return Judgement(pd.DataFrame(rows), out)


def data_key(train: tuple, test: tuple) -> str:
    """What a scorer's training depends on besides its config: the content of the train and
    test mels and of their records' captions and timelines."""
    import json

    from ..model.fits import fingerprint

    labels = json.dumps([[r.captions, r.events] for _, recs in (train, test) for r in recs]).encode()
    return fingerprint(train[0], test[0], torch.frombuffer(bytearray(labels), dtype=torch.uint8))


SCORER_FILES = ("config.json", "model.safetensors", "model_card.json", "losses.json")  # a complete scorer


def fit_key(config: DetectorConfig | AudioTextConfig, data: str) -> dict:
    """The train-or-load key of one scorer (:func:`t2a_lib.run.files.load_fit`): its config, less
    ``vocab_size`` (the tokenizer sets it while training), and :func:`data_key` of its data."""
    from dataclasses import asdict

    return {"config": {k: v for k, v in asdict(config).items() if k != "vocab_size"}, "data": data}


def saved_config(folder) -> DetectorConfig | AudioTextConfig:
    """The config a saved scorer in ``folder`` was trained with (its ``config.json``)."""
    from ..run.files import read_json

    saved = read_json(Path(folder) / "config.json", "model config")
    kinds = {"event_detector": DetectorConfig, "audio_text": AudioTextConfig}
    kind = saved.pop("kind", None)
    if kind not in kinds:
        raise ValueError(f"{Path(folder) / 'config.json'}: not a scorer's config (kind {kind!r})")
    return kinds[kind](**saved)


def train_scorer(folder, config: DetectorConfig | AudioTextConfig, train: tuple, test: tuple,
                 progress: bool = True, key: dict | None = None) -> dict:
    """Train one detector or audio-text model on ``train``, save it in ``folder`` with its loss per
    step (``losses.json``) and a model card of its scores on ``test``; return the card. With
    ``key`` (:func:`fit_key`), ``fit.json`` records it last, so a model killed half-saved retrains.

    ``train`` and ``test`` are ``(mels, records)`` pairs from :func:`t2a_lib.audio.features.split_mels`.
    """
    import json
    import time
    from dataclasses import replace

    from ..run.files import save_fit

    from .audiotext import evaluate_audiotext, train_audiotext
    from .detector import evaluate_detector, train_detector, write_model_card
    from ..audio.features import frame_targets

    folder = Path(folder)
    (folder / "fit.json").unlink(missing_ok=True)  # the record of whatever was saved here before
    config = replace(config)  # training sets an audio-text model's vocab_size: not on the caller's config
    (tr_mels, tr_recs), (te_mels, te_recs) = train, test
    t0 = time.time()
    if isinstance(config, DetectorConfig):
        n_frames, hop = tr_mels.shape[-1] // 2, config.hop_seconds
        model, losses = train_detector(config, tr_mels, frame_targets(tr_recs, n_frames, hop), progress)
        seconds = time.time() - t0
        scores = evaluate_detector(model, te_mels, frame_targets(te_recs, n_frames, hop), te_recs)
    else:
        model, losses = train_audiotext(config, tr_mels, [r.captions for r in tr_recs], progress)
        seconds = time.time() - t0
        scores = evaluate_audiotext(model, te_mels, [r.captions for r in te_recs], n_candidates=min(100, len(te_recs)))
    model.save(folder)
    (folder / "losses.json").write_text(json.dumps(losses))
    write_model_card(folder, scores, seconds, len(tr_recs))
    if key is not None:
        save_fit(folder, key)  # written last: a model with a fit record is complete
    return json.loads((folder / "model_card.json").read_text())


def _train_scorer_from_files(folder, config, train_file, train_records, test_file, test_records, key) -> dict:
    """:func:`train_scorer` in a worker process, reading the mels from ``.npy`` files."""
    load = lambda f: torch.from_numpy(np.load(f))  # noqa: E731
    return train_scorer(folder, config, (load(train_file), train_records), (load(test_file), test_records),
                        progress=False, key=key)


def fit_scorers(families: dict[str, tuple], train: tuple, test: tuple, progress: bool = True,
                workers: int = 1) -> tuple[dict[str, Scorers], dict]:
    """Train (or, where a model of the same config and data is already saved, load) every scorer of
    every role, each with a model card of its held-out scores and a ``fit.json`` of its
    :func:`fit_key` (written as each model finishes, so a killed run keeps the finished ones).

    ``families`` maps a role to ``(folder, detector_config, audiotext_configs)`` (see
    :func:`scorer_configs`); ``train`` and ``test`` are ``(mels, records)`` pairs. With ``workers``
    > 1 the models train in that many one-thread processes (:mod:`t2a_lib.run.parallel`), the
    recurrent rankers first. Returns ``{role: Scorers}`` and ``{"role/model": model card}``.
    """
    import json
    import tempfile

    from ..run import parallel
    from ..run.files import load_fit

    models = {}  # role -> [(folder of one model, its config)], the detector first
    for role, (folder, det_cfg, at_cfgs) in families.items():
        if det_cfg.role != role or any(c.role != role for c in at_cfgs):
            raise RoleError(f"the {role} family's configs must all have role {role!r}")
        models[role] = [(Path(folder) / "detector", det_cfg)] + \
            [(Path(folder) / f"audiotext_{i}", c) for i, c in enumerate(at_cfgs)]
    data = data_key(train, test)
    todo = [(path, cfg) for role_models in models.values() for path, cfg in role_models
            if load_fit(path, fit_key(cfg, data), SCORER_FILES) is None]  # not saved with this config and data
    todo.sort(key=lambda job: (isinstance(job[1], DetectorConfig), job[1].role != "ranker"))  # longest first
    names = [f"{cfg.role}/{path.name}" for path, cfg in todo]
    if workers > 1 and todo:
        with tempfile.TemporaryDirectory(prefix="scorer-inputs-") as tmp:
            files = {}
            for split, (mels, _) in (("train", train), ("test", test)):
                files[split] = str(Path(tmp) / f"{split}.npy")
                np.save(files[split], mels.numpy())
            parallel.run_jobs(_train_scorer_from_files,
                              [(path, cfg, files["train"], train[1], files["test"], test[1], fit_key(cfg, data))
                               for path, cfg in todo],
                              workers, names, desc="scorers", progress=progress)
    else:
        for (path, cfg), name in zip(todo, names):
            print(f"training {name}")
            train_scorer(path, cfg, train, test, progress, key=fit_key(cfg, data))
    sets, cards = {}, {}
    for role, ((det_path, _), *at_models) in models.items():
        sets[role] = Scorers(role, EventDetector.load(det_path, role),
                             [AudioTextModel.load(path, role) for path, _ in at_models])
        for path, _ in [(det_path, None), *at_models]:
            cards[f"{role}/{path.name}"] = json.loads((path / "model_card.json").read_text())
    return sets, cards
