"""Training the miniature Tango on the world, one component at a time, each resumable.

    fit_text_encoder  T5 pre-trained contrastively on (clip, caption) with reordered twins, frozen
    fit_vae           AutoencoderKL on log-mel crops; scaling factor calibrated
    fit_vocoder       a small HiFi-GAN on world audio (Griffin-Lim when skipped)
    fit_unet          UNet2DConditionModel on cached latents and cached text states
    assemble          the TangoPipeline, saved with save_pretrained

Each ``fit_*`` writes its component under ``folder`` and, called again with the same config,
loads it instead of retraining.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from transformers import T5EncoderModel

from ..scoring.audiotext import AudioTextConfig, AudioTextModel, evaluate_audiotext, train_audiotext
from .autoencoder import VAETrainConfig, calibrate_scaling, frames_per_latent, train_vae
from ..world.captions import TEMPORAL, parse_caption_or_none, word_labels
from .components import MiniTangoConfig, make_sample_scheduler, make_train_scheduler, make_unet, make_vae, n_params
from .diffusion import TextBank, TrainConfig, train_unet
from .fits import claim_folder, fingerprint
from ..run.files import load_fit, save_fit
from .tango import TangoPipeline, load_unet, realigned


def fit_text_encoder(folder, mels, captions, test=None, epochs: int = 4, seed: int = 0,
                     model_config: MiniTangoConfig = MiniTangoConfig(), progress: bool = True, timeline=None):
    """Returns (T5EncoderModel, tokenizer, results). The audio side is thrown away.

    ``timeline``: the (targets, mask) pair from ``audiotext.timeline_targets`` for the clips; with
    it each event word's state is also trained to say when its event sounds."""
    folder = Path(folder)
    bins = 0 if timeline is None else timeline[0].shape[-1]
    key = {"epochs": epochs, "seed": seed, "dim": model_config.text_dim, "n": len(captions),
              "position_std": MiniTangoConfig().text_position_std,  # the encoder is built from the defaults
              "timeline_bins": bins, "data": fingerprint(mels, *(timeline or ())), "captions": hashlib.sha1("\n".join(captions).encode()).hexdigest()}
    if (fit := load_fit(folder, key, ("audiotext",))) is not None:
        model = AudioTextModel.load(folder / "audiotext", role="base")
        return realigned(model.text.t5).eval(), model.tokenizer, fit
    at_cfg = AudioTextConfig(role="base", seed=seed, text_arch="t5", text_dim=model_config.text_dim, epochs=epochs,
                             timeline_bins=bins)
    t0 = time.time()
    model, losses = train_audiotext(at_cfg, mels, captions, progress, timeline=timeline)
    results = {"seconds": round(time.time() - t0, 1), "final_loss": sum(losses[-20:]) / 20}
    if test is not None:
        results.update(evaluate_audiotext(model, test[0], [r.captions for r in test[1]],
                                          n_candidates=min(100, len(test[1]))))
    model.save(folder / "audiotext")
    save_fit(folder, key, **results, losses=losses)
    return model.text.t5.eval(), model.tokenizer, results


def fit_vae(folder, mels, config: VAETrainConfig, model_config: MiniTangoConfig = MiniTangoConfig(),
            progress: bool = True):
    folder = Path(folder)
    model = {k: v for k, v in model_config.to_dict().items()  # the VAE's own fields: UNet settings don't matter here
             if k in ("n_frames", "n_mels", "latent_channels", "vae_channels")}
    key = {"train": asdict(config), "model": model, "n": len(mels), "data": fingerprint(mels)}
    if (fit := load_fit(folder, key, ("vae",))) is not None:
        return realigned(AutoencoderKL.from_pretrained(folder / "vae")).eval(), fit
    vae = make_vae(model_config)
    out = train_vae(vae, mels, config, progress)
    factor = calibrate_scaling(vae, mels[: min(len(mels), 512)])
    vae.save_pretrained(folder / "vae")
    results = save_fit(folder, key, seconds=round(out["seconds"], 1), scaling_factor=factor,
                      final_l1=sum(out["losses"][-20:]) / 20, losses=out["losses"])
    return vae, results


def fit_vocoder(folder, waves, config, progress: bool = True):
    """Returns (SpeechT5HifiGan or None, results); ``config=None`` means Griffin-Lim."""
    from .vocoder import load_vocoder, train_vocoder

    folder = Path(folder)
    if config is None:
        return None, {"vocoder": "griffin-lim"}
    key = _vocoder_key(config, waves)
    if (fit := load_fit(folder, key, ("vocoder",))) is not None:
        return realigned(load_vocoder(folder / "vocoder")), fit
    t0 = time.time()
    model, losses = train_vocoder(waves, config, progress)
    model.save_pretrained(folder / "vocoder")
    return model, save_fit(folder, key, vocoder="hifigan", seconds=round(time.time() - t0, 1), losses=losses)


def _vocoder_key(config, waves) -> dict:
    return {"train": asdict(config), "n": len(waves), "data": fingerprint(np.asarray(waves, dtype=np.float32))}


def _fit_vocoder_from_file(folder, waves_file, config) -> None:
    fit_vocoder(folder, np.load(waves_file), config, progress=False)


def start_vocoder(folder, waves, config, threads: int):
    """Begin :func:`fit_vocoder` in a spawned process of ``threads`` threads, so the vocoder (which
    needs nothing else of the base model) trains while this process trains the text encoder and
    the VAE. Returns a :class:`t2a_lib.run.parallel.BackgroundJob`, or None when there is nothing to
    train (Griffin-Lim, or a vocoder of this config is saved). Collect it with :func:`finish_vocoder`."""
    from ..run import parallel

    folder = Path(folder)
    if config is None or load_fit(folder, _vocoder_key(config, waves), ("vocoder",)) is not None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    waves_file = folder / "waves.tmp.npy"  # the worker reads its clips from here
    np.save(waves_file, np.asarray(waves, dtype=np.float32))
    return parallel.start_job(_fit_vocoder_from_file, folder, str(waves_file), config, threads=threads,
                              name="vocoder training")


def finish_vocoder(job, folder, waves, config):
    """Wait for :func:`start_vocoder`'s job (None: nothing was started) and return what
    :func:`fit_vocoder` returns, loading the vocoder the worker saved."""
    if job is not None:
        try:
            job.result()
        finally:
            (Path(folder) / "waves.tmp.npy").unlink(missing_ok=True)
    return fit_vocoder(folder, waves, config)


@dataclass
class VocoderRun:
    """A vocoder being fitted by :func:`begin_vocoder`; :func:`end_vocoder` returns it."""
    folder: Path
    waves: np.ndarray
    config: object  # VocoderConfig, or None for Griffin-Lim
    in_background: bool = False
    job: object = None  # the second process's job (None: nothing to train there)


def begin_vocoder(folder, waves, config, workers: int) -> VocoderRun:
    """Start fitting the vocoder, which needs nothing else of the base model. With ``workers`` > 1 it
    trains in a second process (:func:`start_vocoder`) until :func:`end_vocoder` while this process
    trains the text encoder and the VAE, each process on half the cores (two threads buy these small
    models far less than two models side by side do); with one worker it trains in
    :func:`end_vocoder`. The same split for the same ``workers``: the same numbers."""
    from ..run import parallel

    run = VocoderRun(Path(folder), waves, config, in_background=workers > 1)
    if run.in_background:
        run.job = start_vocoder(run.folder, waves, config, parallel.threads_per_worker(2))
        torch.set_num_threads(parallel.threads_per_worker(2))
    return run


def end_vocoder(run: VocoderRun):
    """The vocoder of :func:`begin_vocoder` and its fit record, as :func:`fit_vocoder` returns them:
    waits for the second process (and gives this one every core back) or trains here."""
    from ..run import parallel

    if not run.in_background:
        return fit_vocoder(run.folder, run.waves, run.config)
    out = finish_vocoder(run.job, run.folder, run.waves, run.config)
    torch.set_num_threads(parallel.cpu_count())
    return out


def text_bank(text_encoder, tokenizer, captions: list[str], batch_size: int = 256) -> TextBank:
    """Frozen text states for every caption (padded to one length) and for the empty prompt."""
    length = max(len(ids) for ids in tokenizer(list(captions) + [""]).input_ids)
    states, masks = [], []
    with torch.no_grad():
        for i in range(0, len(captions) + 1, batch_size):
            chunk = (list(captions) + [""])[i:i + batch_size]
            tok = tokenizer(chunk, padding="max_length", max_length=length, return_tensors="pt")
            states.append(text_encoder(input_ids=tok.input_ids, attention_mask=tok.attention_mask).last_hidden_state)
            masks.append(tok.attention_mask)
    s, m = torch.cat(states), torch.cat(masks)
    return TextBank(s[:-1], m[:-1], s[-1:], m[-1:])


def _temporal_spec(caption: str):
    """The caption's spec when it is a temporal grammar caption, else None (AudioCaps: no known order)."""
    spec = parse_caption_or_none(caption)
    return spec if spec is not None and spec.is_temporal else None


def event_word_states(text_encoder, tokenizer, captions: list[str]):
    """For every event of every temporal grammar caption: the mean state of its phrase's words ``(N, D)``,
    whether that event comes first *in time* ``(N,)`` and the caption's relation ``(N,)``."""
    pairs = [(c, spec) for c in captions if (spec := _temporal_spec(c)) is not None]  # duplicates kept
    if not pairs:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.bool), np.array([])
    bank = text_bank(text_encoder, tokenizer, [c for c, _ in pairs])
    feats, first, relation = [], [], []
    for i, (c, spec) in enumerate(pairs):
        labels = word_labels(c)
        for lab in spec.labels:
            words = [j for j, w in enumerate(labels) if w == lab and j < bank.states.shape[1]]
            feats.append(bank.states[i, words].mean(0))
            first.append(lab == spec.time_order[0])
            relation.append(spec.relation)
    return torch.stack(feats), torch.tensor(first), np.array(relation)


def order_probe(text_encoder, tokenizer, train_captions, test_captions, steps: int = 300, l2: float = 1e-3) -> dict:
    """Can order be read off the frozen text states? A logistic regression from an event's
    word states to "this event comes first in time", fitted on the training captions and scored
    on held-out ones, overall and per relation (0.5 = the states do not say). The UNet's
    cross-attention keys are linear in the same states, so this bounds what it can read."""
    x, y, _ = event_word_states(text_encoder, tokenizer, train_captions)
    xt, yt, rel = event_word_states(text_encoder, tokenizer, test_captions)
    if not len(x) or not len(xt):
        return {"train": float("nan"), "held_out": float("nan"), "n_held_out": 0}
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, xt = (x - mu) / sd, (xt - mu) / sd
    w = torch.zeros(x.shape[1] + 1, requires_grad=True)
    logits = lambda v: v @ w[:-1] + w[-1]  # noqa: E731
    opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits(x), y.float()) + l2 * w[:-1].pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        hit = ((logits(xt) > 0) == yt).numpy()
        train_acc = float(((logits(x) > 0) == y).float().mean())
    return {"train": train_acc, "held_out": float(hit.mean()), "n_held_out": int(len(hit)),
            **{r: float(hit[rel == r].mean()) for r in TEMPORAL if (rel == r).any()}}


def fit_unet(folder, latents, bank: TextBank, config: TrainConfig, model_config: MiniTangoConfig = MiniTangoConfig(),
             progress: bool = True, timeline=None):
    """Train (resuming from ``folder/checkpoint`` if interrupted) or load the base UNet.
    ``timeline``: the clips' (targets, mask) for the grounding term (``config.grounding_weight``)."""
    folder = Path(folder)
    key = {"train": config.key(), "model": model_config.to_dict(), "n": len(latents),
           "data": fingerprint(latents, bank.states, bank.mask, *(timeline or ()))}
    if (fit := load_fit(folder, key, ("unet",))) is not None:
        return load_unet(folder / "unet"), fit
    claim_folder(folder, key)
    torch.manual_seed(config.seed)
    unet = make_unet(model_config)
    out = train_unet(unet, make_train_scheduler(model_config), latents, bank, config, out_dir=folder, progress=progress,
                     timeline=timeline)
    if out["ema"] is not None:
        unet.load_state_dict(out["ema"])
    unet.save_pretrained(folder / "unet")
    parts = {k: [h[k] for h in out["history"]] for k in ("diffusion", "grounding") if k in out["history"][-1]}
    results = save_fit(folder, key, seconds=round(out["seconds"], 1), resumed_from=out["resumed_from"],
                      final_loss=sum(out["losses"][-50:]) / 50, losses=out["losses"], **parts)
    return unet.eval(), results


def assemble(vae, text_encoder, tokenizer, unet, vocoder, model_config: MiniTangoConfig = MiniTangoConfig()) -> TangoPipeline:
    for module in (vae, text_encoder, unet, vocoder):
        if module is not None:
            module.eval()  # training mode can pick other attention kernels: outputs would drift
    pipe = TangoPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                         scheduler=make_sample_scheduler(model_config), vocoder=vocoder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_pipeline(folder) -> TangoPipeline:
    """A saved pipeline; for a run's ``base/pipeline`` whose ``base/checkpoint.json`` references a
    real checkpoint instead (:mod:`t2a_lib.model.referenced_base`), that checkpoint."""
    import json

    from .referenced_base import load_referenced

    folder, saved = Path(folder), Path(folder) / "model_index.json"
    record = folder.parent / CHECKPOINT_RECORD
    if folder.name == "pipeline" and record.is_file() and not (  # the newer of the two is this run's base
            saved.exists() and saved.stat().st_mtime_ns > record.stat().st_mtime_ns):
        data = json.loads(record.read_text())
        if data.get("referenced"):
            return load_referenced(data, record)
    if not (folder / "model_index.json").exists():
        raise FileNotFoundError(f"no TangoPipeline in {folder} (model_index.json missing): run notebook 02 first")
    return TangoPipeline.from_pretrained(folder).to("cpu")


def load_run_pipeline(run_dir) -> TangoPipeline:
    """The base pipeline notebook 02 saved in ``run_dir/base/pipeline``."""
    return load_pipeline(Path(run_dir) / "base" / "pipeline")


def load_text_encoder(path) -> T5EncoderModel:
    return T5EncoderModel.from_pretrained(path).eval()


CHECKPOINT_RECORD = "checkpoint.json"


def install_checkpoint(run_dir, checkpoint, sample_seconds: float | None = None,
                       text_encoder_path=None) -> tuple[TangoPipeline, dict]:
    """Make a real checkpoint the run's base: a Tango / Tango 2 snapshot or a diffusers AudioLDM folder
    (:func:`t2a_lib.model.tango.pipeline_from_checkpoint`; absent weights raise naming what to fetch).
    A local folder is referenced, not copied (:mod:`t2a_lib.model.referenced_base`); anything else
    (an HF-cache repo id) is saved as ``run_dir/base/pipeline``. Either way :func:`load_run_pipeline`
    finds it for every later notebook, with ``base/checkpoint.json`` recording where it came from and
    what it samples: its own clip length (Tango's 10.24 s), or ``sample_seconds`` (rounded to whole
    latent frames) when given. ``text_encoder_path``: a Tango snapshot's google/flan-t5-large config +
    tokenizer folder (:func:`t2a_lib.model.tango_checkpoint.load_tango`). Returns the pipeline and the record."""
    import json

    from .referenced_base import reference_record
    from .tango import pipeline_from_checkpoint

    base_dir = Path(run_dir) / "base"
    base_dir.mkdir(parents=True, exist_ok=True)
    pipe = pipeline_from_checkpoint(checkpoint, **({"text_encoder_path": text_encoder_path} if text_encoder_path else {}))
    per_latent = frames_per_latent(pipe.vae.config)
    own = pipe.latent_shape()[1] * per_latent * 160 / 16000
    if sample_seconds:
        frames = max(1, round(sample_seconds * 100 / per_latent)) * per_latent
        pipe.unet.register_to_config(sample_size=[frames // per_latent, 64 // per_latent])  # what latent_shape reads
    referenced = Path(checkpoint).is_dir()
    if not referenced:
        pipe.save_pretrained(base_dir / "pipeline")
        pipe = load_run_pipeline(run_dir)
    shape = pipe.latent_shape()
    record = {"checkpoint": str(Path(checkpoint).resolve()), "conditioning": pipe.conditioning,
              "latent_shape": list(shape), "mel_frames": shape[1] * per_latent,
              "sample_seconds": shape[1] * per_latent * 160 / 16000, "checkpoint_sample_seconds": own,
              "unet_params": n_params(pipe.unet)}
    if referenced:
        record.update(reference_record(checkpoint, text_encoder_path, pipe.unet.config.sample_size))
    (base_dir / CHECKPOINT_RECORD).write_text(json.dumps(record, indent=1))
    return pipe, record
