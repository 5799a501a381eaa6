"""Log-mel -> 16 kHz waveform: a small HiFi-GAN trained on the world, Griffin-Lim as fallback.

Layouts. Our mels are ``(B, 64, T)`` (``t2a_lib.audio.mel`` / ``features.waves_to_mel``: T = samples
// 160). transformers' ``SpeechT5HifiGan`` takes Tango's layout ``(B, T, 64)`` and returns
``(B, T * 160)`` samples (the product of its upsample rates is the hop), so every call here
transposes: ``model(log_mel.transpose(1, 2))``. ``vocode`` does this for you.

Training (``train_vocoder``) has no discriminator, which a 2-core CPU cannot afford. The
generator is fitted on random mel segments and the matching audio with

    loss = mel_weight * | logmel(G(m)) - logmel(x) |_1                   (our MelFrontEnd)
         + stft_weight * mean_r [ SC_r + LogMag_r ]                      (multi-resolution STFT)
    SC_r     = || |S_r(x)| - |S_r(G(m))| ||_F / || |S_r(x)| ||_F          (spectral convergence)
    LogMag_r = mean | log|S_r(x)| - log|S_r(G(m))| |                      (log-magnitude L1)

over resolutions r = (n_fft, hop) in ``VocoderConfig.stft_resolutions``, |S| =
sqrt(max(re^2 + im^2, 1e-7)), periodic Hann window of length n_fft, centred STFT. Without an
adversary the phase is only constrained through the overlapping STFT frames, so the audio sounds
a little buzzy, but its log-mel -- all the judges and rankers see -- stays close to the input.
A deterministic generator that steps by the hop also turns a steady mel into a 160-sample-periodic
wave (harmonics of 100 Hz), so steady tones below ~2 kHz land up to half a harmonic off.

Measured on the default world (3000 training clips, 200 held-out test clips; "F1" is the event F1
of the detector judge trained on clean audio, collar 0.2 s, 0.964 on the originals; log-mel L1 is
between the re-analysed vocoded audio and the original's log-mel; judged as notebook 02,
section 3, does):

    vocoder                                     train     log-mel L1   F1 (delta)       clips/s (batches of 4)
    HiFi-GAN, 4000 steps of 8 x 0.16 s (default) ~250 s    0.377        0.937 (-0.027)   ~35
    HiFi-GAN, 2800 steps of 8                    ~170 s    0.397        0.902 (-0.062)
    HiFi-GAN, 4000 steps of 4                    ~156 s    0.417        0.888 (-0.076)
    Griffin-Lim, 32 momentum iterations          none      0.11         0.964 (0.000)    ~13

    (two otherwise idle cores; clips/s: 2 cores, 32 clips, in batches of 4 - one batch of 32 runs
    2.5x slower)

The pitched classes are where steps go: event F1 on sirens 0.62 -> 0.96 and on bells 0.81 -> 0.88
from 2800 to 4000 steps (the others move by a few hundredths). The number of segments seen matters,
not the number of steps: 4000 steps of 4 are cheaper (0.047 s/step against 0.077) but worse.
Earlier alternatives, 2800 steps on 1500 clips (log-mel L1 / F1): mel_weight 4 -> 0.387 / 0.923;
lr 1e-3 -> 0.397 / 0.917; lr 5e-3 -> 0.416 / 0.903; HiFi-GAN's five stages [5, 4, 2, 2, 2]
(4 channels at 16 kHz) -> 0.481 / 0.879; 600 / 1200 / 2800 steps -> 0.51 / 0.45 / 0.42.
Griffin-Lim is the more faithful inversion; HiFi-GAN is about 3x faster to run, which keeps
sampling above 4 clips/s.

Griffin-Lim (``griffin_lim``) needs no training: exp of the log-mel, a non-negative inverse of
the mel filterbank (pseudo-inverse, then multiplicative updates), then fast Griffin-Lim
(Perraudin, Balazs & Sondergaard 2013: Griffin-Lim with momentum) on Tango's STFT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .diffusion import make_accelerator
from ..audio.mel import MelConfig, MelFrontEnd, mel_filterbank

HOP = 160


@dataclass
class VocoderConfig:
    """A small HiFi-GAN (``SpeechT5HifiGanConfig`` fields) and how to train it."""

    # -- the generator (SpeechT5HifiGanConfig fields). Three upsampling stages (8 x 5 x 4 = the hop
    # 160) keep 64/32/16 channels, where HiFi-GAN's five-stage [5, 4, 2, 2, 2] would end with 4
    # channels at 16 kHz; each layer's kernel - stride must be even for an exact rate x upsampling.
    model_in_dim: int = 64
    sampling_rate: int = 16000
    upsample_rates: list = field(default_factory=lambda: [8, 5, 4])
    upsample_kernel_sizes: list = field(default_factory=lambda: [16, 11, 8])
    upsample_initial_channel: int = 128
    resblock_kernel_sizes: list = field(default_factory=lambda: [3, 7])
    resblock_dilation_sizes: list = field(default_factory=lambda: [[1, 3], [1, 3]])
    leaky_relu_slope: float = 0.1
    # Standardise each mel bin with the training set's mean / std before the first conv. The
    # statistics live in the model's own ``mean`` / ``scale`` buffers (saved with it), so callers
    # still pass raw log-mels.
    normalize_before: bool = True
    # -- training: many small steps beat few large ones on a CPU (figures in the module docstring)
    steps: int = 4000
    batch_size: int = 8
    segment_frames: int = 16  # 0.16 s of audio per example
    context_frames: int = 0  # extra mel frames fed on each side; their audio is cut before the loss
    lr: float = 2e-3
    mel_weight: float = 1.0
    stft_weight: float = 1.0
    stft_resolutions: list = field(default_factory=lambda: [[256, 64], [512, 128], [1024, 256]])
    seed: int = 0

    def __post_init__(self):
        prod = int(np.prod(self.upsample_rates))
        if prod != HOP:
            raise ValueError(f"upsample_rates must multiply to the hop {HOP}, got {self.upsample_rates} = {prod}")
        if len(self.upsample_kernel_sizes) != len(self.upsample_rates):
            raise ValueError("upsample_kernel_sizes and upsample_rates need the same length")
        for k, r in zip(self.upsample_kernel_sizes, self.upsample_rates):
            if k < r or (k - r) % 2:
                raise ValueError(f"upsample kernel {k} with rate {r}: need kernel >= rate and kernel - rate even "
                                 "(otherwise the output is not exactly rate x longer)")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes need the same length")
        if self.segment_frames * HOP <= 1024 // 2:
            raise ValueError(f"segment_frames must exceed {1024 // 2 // HOP} (the mel loss reflect-pads 512 samples)")

    def hifigan_config(self):
        from transformers import SpeechT5HifiGanConfig

        return SpeechT5HifiGanConfig(
            model_in_dim=self.model_in_dim, sampling_rate=self.sampling_rate,
            upsample_initial_channel=self.upsample_initial_channel,
            upsample_rates=list(self.upsample_rates), upsample_kernel_sizes=list(self.upsample_kernel_sizes),
            resblock_kernel_sizes=list(self.resblock_kernel_sizes),
            resblock_dilation_sizes=[list(d) for d in self.resblock_dilation_sizes],
            leaky_relu_slope=self.leaky_relu_slope, normalize_before=self.normalize_before,
        )


def make_hifigan(config: VocoderConfig | None = None):
    """A freshly initialised ``SpeechT5HifiGan`` for ``config`` (seed it with ``torch.manual_seed``).

    transformers initialises every conv with N(0, 0.01), as HiFi-GAN does under weight norm;
    without weight norm the generator then starts near silence and learns slowly, so the
    convolutions are re-initialised with PyTorch's default (Kaiming-uniform) scheme.
    """
    from transformers import SpeechT5HifiGan

    config = config or VocoderConfig()
    model = SpeechT5HifiGan(config.hifigan_config())
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
            m.reset_parameters()
    return model


# ---------------------------------------------------------------------------------------------
# losses


def stft_magnitude(wave: torch.Tensor, n_fft: int, hop: int, eps: float = 1e-7) -> torch.Tensor:
    """(B, N) -> (B, n_fft//2 + 1, frames): sqrt(max(|STFT|^2, eps)), periodic Hann, centred."""
    window = torch.hann_window(n_fft, periodic=True, dtype=wave.dtype, device=wave.device)
    spec = torch.stft(wave, n_fft=n_fft, hop_length=hop, win_length=n_fft, window=window, center=True,
                      pad_mode="reflect", return_complex=True)
    return torch.sqrt(torch.clamp(spec.real ** 2 + spec.imag ** 2, min=eps))


def stft_loss(pred: torch.Tensor, target: torch.Tensor, n_fft: int, hop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectral convergence and log-magnitude L1 at one resolution (see the module docstring)."""
    p, t = stft_magnitude(pred, n_fft, hop), stft_magnitude(target, n_fft, hop)
    sc = torch.linalg.vector_norm(t - p) / torch.linalg.vector_norm(t)
    log_mag = (torch.log(t) - torch.log(p)).abs().mean()
    return sc, log_mag


def multi_resolution_stft_loss(pred: torch.Tensor, target: torch.Tensor,
                               resolutions=((256, 64), (512, 128), (1024, 256))) -> torch.Tensor:
    """mean over resolutions of (spectral convergence + log-magnitude L1); 0 iff the magnitudes match."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    total = pred.new_zeros(())
    for n_fft, hop in resolutions:
        sc, log_mag = stft_loss(pred, target, int(n_fft), int(hop))
        total = total + sc + log_mag
    return total / len(resolutions)


# ---------------------------------------------------------------------------------------------
# training


def _segments(waves: torch.Tensor, mels: torch.Tensor, batch_size: int, frames: int, context: int,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (mel (B, 64, frames + 2 context), audio (B, frames * 160)) pairs; mel frame t is
    centred on sample 160 t, the audio covers the central ``frames`` frames."""
    idx = torch.randint(len(waves), (batch_size,), generator=gen)
    start = context + torch.randint(mels.shape[-1] - frames - 2 * context + 1, (batch_size,), generator=gen)
    mel = torch.stack([mels[i, :, s - context:s + frames + context] for i, s in zip(idx.tolist(), start.tolist())])
    audio = torch.stack([waves[i, s * HOP:(s + frames) * HOP] for i, s in zip(idx.tolist(), start.tolist())])
    return mel.float(), audio.float()


def _training_pairs(waves: np.ndarray, config: VocoderConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The checked training clips (N, S) as a tensor and their log-mels (N, 64, S // 160), exactly what the
    VAE is trained on; ValueError for a wrong shape, NaN/inf, or clips too short for one segment."""
    from ..audio.features import waves_to_mel

    waves = np.asarray(waves, dtype=np.float32)
    if waves.ndim != 2:
        raise ValueError(f"waves must be (N, samples), got shape {waves.shape}")
    if not np.isfinite(waves).all():
        raise ValueError("waves contain NaN or inf")
    n_frames = waves.shape[1] // HOP
    if n_frames < config.segment_frames + 2 * config.context_frames:
        raise ValueError(f"clips of {waves.shape[1]} samples give {n_frames} frames, fewer than "
                         f"segment_frames + 2 context_frames = {config.segment_frames + 2 * config.context_frames}")
    wave_t = torch.from_numpy(waves)
    return wave_t, waves_to_mel(wave_t)


def train_vocoder(waves: np.ndarray, config: VocoderConfig | None = None, progress: bool = True):
    """Fit a small HiFi-GAN on ``waves`` (N, S) float32 at 16 kHz; returns ``(model, losses)``.

    Each step draws ``batch_size`` random segments of ``segment_frames`` mel frames and the
    matching ``segment_frames * 160`` samples (a seeded ``torch.Generator``), and minimises the
    mel L1 + multi-resolution STFT loss of the module docstring with AdamW and a one-cycle
    schedule. ``losses`` is one dict per step: total, mel (log-mel L1) and stft. The model is
    returned in eval mode on the CPU.
    """
    from tqdm.auto import tqdm

    config = config or VocoderConfig()
    wave_t, mels = _training_pairs(waves, config)
    torch.manual_seed(config.seed)
    model = make_hifigan(config)
    if config.normalize_before:  # per-bin statistics of the training mels, stored in the model's buffers
        model.mean.copy_(mels.mean(dim=(0, 2)))
        model.scale.copy_(mels.std(dim=(0, 2)).clamp(min=1e-3))
    front = MelFrontEnd(MelConfig())
    ctx = config.context_frames
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.8, 0.99), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=max(config.steps, 1), pct_start=0.1)
    acc = make_accelerator()  # float32 (diffusion.make_accelerator: one precision per state)
    model, opt, front = acc.prepare(model, opt, front)
    gen = torch.Generator().manual_seed(config.seed)
    resolutions = [tuple(r) for r in config.stft_resolutions]

    losses = []
    bar = tqdm(total=config.steps, desc="vocoder (HiFi-GAN)", disable=not progress)
    model.train()
    for _ in range(config.steps):
        mel, audio = _segments(wave_t, mels, config.batch_size, config.segment_frames, ctx, gen)
        mel, audio = mel.to(acc.device), audio.to(acc.device)
        pred = model(mel.transpose(1, 2))  # (B, frames, 64) -> (B, frames * 160)
        pred = pred[:, ctx * HOP:pred.shape[1] - ctx * HOP]
        mel_l1 = (front(pred) - front(audio)).abs().mean()
        stft = multi_resolution_stft_loss(pred, audio, resolutions)
        loss = config.mel_weight * mel_l1 + config.stft_weight * stft
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        acc.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        losses.append({"total": loss.item(), "mel": mel_l1.item(), "stft": stft.item()})
        bar.update()
        bar.set_postfix(mel=f"{mel_l1.item():.3f}", stft=f"{stft.item():.3f}")
    bar.close()
    return acc.unwrap_model(model).cpu().eval(), losses


# ---------------------------------------------------------------------------------------------
# Griffin-Lim


_MEL_BASIS: dict = {}


def _mel_basis(dtype=torch.float32) -> torch.Tensor:
    c = MelConfig()
    if dtype not in _MEL_BASIS:
        fb = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax)
        _MEL_BASIS[dtype] = torch.from_numpy(fb).to(dtype)
    return _MEL_BASIS[dtype]


def mel_to_linear(mel: torch.Tensor, n_iter: int = 64) -> torch.Tensor:
    """Non-negative linear magnitude (B, 513, T) whose mel (filterbank @ it) matches ``mel`` (B, 64, T).

    ``mel`` is linear (exp of a log-mel). Start from the pseudo-inverse clamped to >= 0 (raised to
    a small floor so no bin is stuck at 0), then ``n_iter`` multiplicative updates that minimise
    the generalised KL divergence between ``mel`` and ``M x`` (Lee & Seung):
    x <- x * M^T(mel / M x) / M^T 1. They keep x >= 0 and fit relative (log-domain) error, which is
    what a log-mel sees. Bins no filter covers (0 Hz and 8 kHz) come out 0.
    """
    basis = _mel_basis(mel.dtype).to(mel.device)  # (64, 513)
    inv = torch.linalg.pinv(basis.double()).to(mel.dtype)  # (513, 64)
    x = torch.clamp(inv @ mel, min=0.0)
    x = torch.maximum(x, 1e-3 * (basis.T @ mel) / basis.sum(0).clamp(min=1e-12)[:, None])
    col = basis.sum(0)[:, None]  # M^T 1
    covered = (col > 0).to(mel.dtype)
    for _ in range(n_iter):
        ratio = mel / (basis @ x).clamp(min=1e-12)
        x = x * (basis.T @ ratio) / col.clamp(min=1e-12)
    return x * covered


def griffin_lim(log_mel: torch.Tensor, n_iter: int = 32, momentum: float = 0.99, seed: int = 0) -> torch.Tensor:
    """(B, 64, T) log-mel -> (B, T * 160) waveform by fast Griffin-Lim on Tango's STFT.

    exp -> ``mel_to_linear`` -> magnitude |S|; phase starts from a seeded random draw (the same
    for the same ``seed`` and for every clip of the batch, so each clip's result is deterministic
    and independent of what it is batched with) and is refined by ``n_iter`` rounds of
    ``t_n = stft(istft(|S| e^{i phase_n}))``, ``e^{i phase_{n+1}} = phase of t_n + momentum (t_n - t_{n-1})``
    (only the phase is kept, so this is the phase of t_n - momentum / (1 + momentum) t_{n-1}). STFT: n_fft = win
    = 1024, hop 160, periodic Hann, centred; the last frame's sample 160 T is cut.
    """
    if log_mel.dim() == 2:
        return griffin_lim(log_mel[None], n_iter, momentum, seed)[0]
    if log_mel.dim() != 3 or log_mel.shape[1] != MelConfig().n_mels:
        raise ValueError(f"griffin_lim expects (B, 64, T), got {tuple(log_mel.shape)}")
    if len(log_mel) > 1:  # batched FFTs round differently from single ones: one clip at a time
        return torch.cat([griffin_lim(m[None], n_iter, momentum, seed) for m in log_mel])
    c = MelConfig()
    log_mel = log_mel.float()
    mag = mel_to_linear(torch.exp(log_mel))  # (B, 513, T)
    b, _, t = mag.shape
    length = t * c.hop_length
    window = torch.hann_window(c.win_length, periodic=True, dtype=mag.dtype, device=mag.device)
    kw = dict(n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length, window=window, center=True)
    gen = torch.Generator().manual_seed(seed)
    # one draw per clip shape, shared by every clip: a clip's audio does not depend on its batch
    phase = (torch.rand(mag.shape[1:], generator=gen, dtype=mag.dtype) * (2 * np.pi)).expand_as(mag)
    angles = torch.polar(torch.ones_like(mag), phase.to(mag.device))
    prev = torch.zeros_like(angles)
    alpha = momentum / (1 + momentum)
    for _ in range(n_iter):
        wave = torch.istft(mag * angles, length=length, **kw)
        rebuilt = torch.stft(wave, pad_mode="reflect", return_complex=True, **kw)[..., :t]
        angles = rebuilt - alpha * prev if momentum else rebuilt
        angles = angles / angles.abs().clamp(min=1e-16)
        prev = rebuilt
    return torch.istft(mag * angles, length=length, **kw)


# ---------------------------------------------------------------------------------------------
# inference and persistence


@torch.no_grad()
def vocode(log_mel, vocoder=None, batch_size: int = 4, n_iter: int = 32) -> np.ndarray:
    """(B, 64, T) log-mel (torch or numpy) -> (B, T * 160) float32 waveform at 16 kHz.

    With ``vocoder`` (a ``SpeechT5HifiGan``, e.g. from ``load_vocoder``) the mel is transposed to
    (B, T, 64) and run through it; without one, ``griffin_lim`` with ``n_iter`` iterations (the
    fallback when no trained vocoder is available). Runs in batches of ``batch_size`` under
    ``torch.no_grad``. Each clip whose peak exceeds 1 is scaled down to peak 1. An unbatched
    (64, T) mel gives a (T * 160,) wave. Raises ``ValueError`` if the mel or the audio has NaN.
    Small batches are faster on a CPU (32 clips of 2.56 s on 2 cores: HiFi-GAN 2.2 s in one batch,
    0.9 s in batches of 4; Griffin-Lim 6.5 s and 2.4 s): the activations stay in cache.
    """
    mel = torch.as_tensor(log_mel)
    if mel.dim() == 2:
        return vocode(mel[None], vocoder, batch_size, n_iter)[0]
    if mel.dim() != 3 or mel.shape[1] != MelConfig().n_mels:
        raise ValueError(f"vocode expects a (B, 64, T) log-mel, got shape {tuple(mel.shape)}")
    mel = mel.float()
    if torch.isnan(mel).any():
        raise ValueError(f"vocode: the log-mel contains NaN ({int(torch.isnan(mel).sum())} values)")
    outs = []
    if vocoder is not None:
        vocoder.eval()
        param = next(vocoder.parameters())
    for i in range(0, len(mel), batch_size):
        chunk = mel[i:i + batch_size]
        if vocoder is None:
            wave = griffin_lim(chunk, n_iter=n_iter)
        else:
            wave = vocoder(chunk.transpose(1, 2).to(param.device, param.dtype)).float().cpu()
        outs.append(wave)
    wave = torch.cat(outs) if outs else mel.new_zeros((0, mel.shape[-1] * HOP))
    if torch.isnan(wave).any():
        source = "the HiFi-GAN vocoder" if vocoder is not None else "Griffin-Lim"
        raise ValueError(f"vocode: {source} produced NaN audio")
    peak = wave.abs().amax(dim=-1, keepdim=True)
    wave = torch.where(peak > 1.0, wave / peak.clamp(min=1.0), wave)
    return wave.numpy().astype(np.float32)


def save_vocoder(model, folder, card: dict | None = None) -> Path:
    """``model.save_pretrained(folder)`` (config.json + model.safetensors), plus an optional
    ``vocoder_card.json`` (training config, seconds, losses...)."""
    import json

    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    if card is not None:
        (folder / "vocoder_card.json").write_text(json.dumps(card, indent=2, default=float))
    return folder


def load_vocoder(folder):
    """The ``SpeechT5HifiGan`` saved in ``folder`` by ``save_vocoder`` / ``save_pretrained``, in eval mode."""
    from transformers import SpeechT5HifiGan

    from ..run.files import weights_named

    folder = Path(folder)
    missing = [n for n in ("config.json", "model.safetensors") if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(f"no vocoder in {folder} ({', '.join(missing)} missing); train one with "
                                "t2a_lib.model.vocoder.train_vocoder, or call vocode(mel) without one for Griffin-Lim")
    with weights_named(folder):
        return SpeechT5HifiGan.from_pretrained(folder).eval()
