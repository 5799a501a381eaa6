"""``TangoPipeline``: text -> audio, as a diffusers ``DiffusionPipeline``.

    pipe = TangoPipeline.from_pretrained("papermill_runs/default/base")
    out = pipe(["A dog barks, then a siren wails"], num_inference_steps=10, guidance_scale=3.0,
               generator=torch.Generator().manual_seed(0))
    out.audios  # (B, 40960) float32 at 16 kHz;  out.mels  # (B, 64, 256) log-mels

Classifier-free guidance runs the unconditional and conditional halves in one batched UNet
forward: ε̂ = ε̂_∅ + w (ε̂_c − ε̂_∅). ``save_pretrained`` writes one folder of safetensors and
configs per component (diffusers' layout), ``from_pretrained`` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from tqdm.auto import tqdm

from .autoencoder import frames_per_latent, image_to_mel
from .components import add_time_channel
from .precision import autocast, float32, sampling_precision


def realigned(module):
    """Copy every parameter and buffer into freshly allocated memory. Weights loaded from
    safetensors are memory-mapped at arbitrary byte offsets; oneDNN picks other kernels for
    unaligned tensors and the outputs drift by ~1e-6, so a reloaded model would not reproduce
    the audio bit for bit. Returns the module."""
    if isinstance(module, torch.nn.Module):
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                t.data = t.data.clone()
    return module


def load_unet(folder):
    """A saved ``UNet2DConditionModel`` in eval mode, its weights in fresh memory (see ``realigned``)."""
    from diffusers import UNet2DConditionModel

    from ..run.files import weights_named

    with weights_named(folder):
        return realigned(UNet2DConditionModel.from_pretrained(folder)).eval()


@dataclass
class TangoOutput(BaseOutput):
    audios: np.ndarray  # (B, samples) float32, 16 kHz
    mels: np.ndarray  # (B, 64, T) log-mels decoded by the VAE
    latents: np.ndarray | None = None


class TangoPipeline(DiffusionPipeline):
    # the vocoder may be None (Griffin-Lim); it must still be a positional component, since
    # diffusers treats arguments with defaults as plain keyword arguments, not modules
    _optional_components = ["vocoder"]

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, vocoder):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              scheduler=scheduler, vocoder=vocoder)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        pipe = super().from_pretrained(*args, **kwargs)
        for name in ("vae", "text_encoder", "unet", "vocoder"):
            realigned(getattr(pipe, name))
        return pipe

    @property
    def conditioning(self) -> str:
        """``cross_attention`` (Tango: T5 token states) or ``class_embedding`` (AudioLDM: one
        CLAP text embedding added to the timestep embedding)."""
        return "class_embedding" if self.unet.config.class_embed_type == "simple_projection" else "cross_attention"

    def latent_shape(self, n_frames: int | None = None) -> tuple[int, int, int]:
        """(C, H, W) of a latent for ``n_frames`` mel frames: the VAE halves time and the 64 mel
        bins per level. Without ``n_frames``: the UNet's (H, W) sample size when it has one,
        else Tango's 10.24 s (1024 frames)."""
        f = frames_per_latent(self.vae.config)
        size = self.unet.config.sample_size
        if n_frames is None:
            n_frames = size[0] * f if isinstance(size, (list, tuple)) else 1024
        return self.vae.config.latent_channels, n_frames // f, 64 // f

    @property
    def default_batch_size(self) -> int:
        """Prompts per batch: 32 on a GPU; 8 on a CPU, where the UNet's 16 rows (with guidance)
        and the VAE stay in cache (2 cores, 32 prompts at 10 steps: 5.0-5.4 clips/s in batches
        of 8, 4.9 in one batch; ``python -m t2a_lib.run.bench``)."""
        return 32 if self.device.type == "cuda" else 8

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str], max_length: int | None = None):
        """Text states (B, L, D) and attention mask (B, L) from the frozen T5 encoder; for
        class-embedding conditioning, the normalised text embeddings (B, D) and no mask."""
        tok = self.tokenizer(list(prompts), padding="max_length" if max_length else True, max_length=max_length,
                             truncation=True, return_tensors="pt")
        # each component on its own device: a UNet trained on a GPU beside a text encoder and VAE on the CPU
        ids, mask = tok.input_ids.to(self.text_encoder.device), tok.attention_mask.to(self.text_encoder.device)
        if self.conditioning == "class_embedding":
            embeds = self.text_encoder(input_ids=ids, attention_mask=mask).text_embeds
            return torch.nn.functional.normalize(embeds, dim=-1), None
        return self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask

    def _predict(self, x, t, states, mask):
        x = add_time_channel(self.unet, x.to(self.unet.device))
        states = states.to(self.unet.device, self.unet.dtype)
        if self.conditioning == "class_embedding":
            return self.unet(x, t, encoder_hidden_states=None, class_labels=states).sample
        mask = None if mask is None else mask.to(self.unet.device)
        return self.unet(x, t, encoder_hidden_states=states, encoder_attention_mask=mask).sample

    @torch.no_grad()
    def latents_to_mel(self, latents: torch.Tensor) -> np.ndarray:
        """The VAE's log-mel (B, 64, T) of scaled latents."""
        return self._decode(latents).float().cpu().numpy()

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Log-mel of scaled latents; never autocast (precision.FLOAT32: the VAE decode)."""
        with float32(self.vae.device.type):
            latents = latents.to(self.vae.device, self.vae.dtype)
            return image_to_mel(self.vae.decode(latents / self.vae.config.scaling_factor).sample)

    @torch.no_grad()
    def latents_to_audio(self, latents: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        from .vocoder import vocode

        mel = self._decode(latents)
        audio = vocode(mel.float().cpu(), self.vocoder)
        return audio[:, : mel.shape[-1] * 160], mel.float().cpu().numpy()  # real HiFi-GAN adds 32 samples

    @torch.no_grad()
    def __call__(self, prompts: str | list[str], num_inference_steps: int = 10, guidance_scale: float = 3.0,
                 generator: torch.Generator | None = None, batch_size: int | None = None, latents: torch.Tensor | None = None,
                 n_frames: int | None = None, return_latents: bool = False, progress: bool = True,
                 output: str = "audio", mixed_precision: str | None = None) -> TangoOutput:
        """Generate one clip per prompt (repeat a prompt for several samples). Batches of
        ``batch_size`` prompts (default ``default_batch_size``); noise is drawn in prompt order
        from ``generator`` on the CPU, so the same seed gives the same noise on any device and
        batch size (and the same audio up to floating-point rounding; bit for bit on the same
        machine and batch size). ``output="mel"`` stops at the VAE's log-mel (no vocoder):
        ``audios`` is then None. ``mixed_precision``: the UNet's forward in ``"bf16"`` autocast or
        ``"no"``; None: bf16 on a GPU, float32 on a CPU (:func:`t2a_lib.model.precision.sampling_precision`);
        the solver's state and the VAE decode stay float32 either way."""
        if output not in ("audio", "mel"):
            raise ValueError(f"output must be 'audio' or 'mel', got {output!r}")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        batch_size = batch_size or self.default_batch_size
        if latents is None:
            latents = torch.randn((len(prompts), *self.latent_shape(n_frames)), generator=generator)
        audios, mels, finals = [], [], []
        use_cfg = guidance_scale != 1.0
        precision = sampling_precision(self.unet.device, mixed_precision)
        bar = tqdm(total=len(prompts), desc="sampling", disable=not progress or len(prompts) <= batch_size)
        for i in range(0, len(prompts), batch_size):
            batch = prompts[i:i + batch_size]
            states, mask = self.encode_prompt(([""] * len(batch) if use_cfg else []) + batch)
            x = latents[i:i + batch_size].to(self.device, self.unet.dtype) * self.scheduler.init_noise_sigma
            self.scheduler.set_timesteps(num_inference_steps, device=self.device)
            for t in self.scheduler.timesteps:
                inp = torch.cat([x, x]) if use_cfg else x
                inp = self.scheduler.scale_model_input(inp, t)
                with autocast(self.unet.device, precision):
                    pred = self._predict(inp, t, states, mask)
                pred = pred.to(x.device, x.dtype)
                if use_cfg:
                    uncond, cond = pred.chunk(2)
                    pred = uncond + guidance_scale * (cond - uncond)
                x = self.scheduler.step(pred, t, x).prev_sample
            if output == "mel":
                audio, mel = None, self.latents_to_mel(x.float())
            else:
                audio, mel = self.latents_to_audio(x.float())
            audios.append(audio)
            mels.append(mel)
            finals.append(x.float().cpu().numpy())
            bar.update(len(batch))
        bar.close()
        return TangoOutput(np.concatenate(audios) if output == "audio" else None, np.concatenate(mels),
                           np.concatenate(finals) if return_latents else None)


def pipeline_from_checkpoint(path, **kw) -> TangoPipeline:
    """A TangoPipeline over real weights: a Tango / Tango 2 snapshot or a diffusers AudioLDM
    folder (see :mod:`t2a_lib.model.checkpoints`). Nothing is downloaded; absent weights raise
    ``WeightsNotFoundError`` saying what to fetch."""
    from diffusers import DPMSolverMultistepScheduler

    from .checkpoints import load_real_checkpoint

    c = load_real_checkpoint(path, **kw)
    if c.get("scale_factor") is not None:
        c["vae"].register_to_config(scaling_factor=float(c["scale_factor"]))
    scheduler = DPMSolverMultistepScheduler.from_config(c["scheduler"].config)
    return TangoPipeline(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"], unet=c["unet"],
                         scheduler=scheduler, vocoder=c.get("vocoder"))
