"""Small audio and text encoders shared by the event detectors and the audio-text models.

Two audio trunks, so a judge and a ranker can differ in architecture, not only in seed:

- ``tcn``: mel bins as channels, residual dilated temporal convolutions, no recurrence.
- ``conv1d_gru``: mel bins as channels, a few 1-D temporal convs, then a BiGRU.

Both take normalised log-mels (B, 64, T) and return frame features (B, T // 2, D) at 20 ms.
Two text encoders: a Transformer with sinusoidal positions on the same scale as the word
embeddings (DESIGN.md: positions ~40x smaller than words made the encoder order-blind) and a
BiGRU (order-aware by construction).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

MEL_MEAN, MEL_STD = -6.0, 3.0  # rough log-mel statistics of the world; a fixed affine, not learned


def normalize_mel(mel: torch.Tensor) -> torch.Tensor:
    return (mel - MEL_MEAN) / MEL_STD


class TCNTrunk(nn.Module):
    """Residual dilated temporal convolutions (no recurrence): receptive field ~2.5 s."""

    def __init__(self, n_mels: int = 64, width: int = 128, hidden: int = 64, dilations=(1, 2, 4, 8, 16)):
        super().__init__()
        self.inp = nn.Sequential(nn.Conv1d(n_mels, width, 5, stride=2, padding=2), nn.BatchNorm1d(width), nn.GELU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv1d(width, width, 3, padding=d, dilation=d), nn.BatchNorm1d(width), nn.GELU(),
                          nn.Conv1d(width, width, 1))
            for d in dilations)
        self.out = nn.Conv1d(width, 2 * hidden, 1)
        self.out_dim = 2 * hidden

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.inp(normalize_mel(mel))  # (B, W, T/2)
        for block in self.blocks:
            x = x + block(x)
        return self.out(x).transpose(1, 2)


class Conv1dGRUTrunk(nn.Module):
    def __init__(self, n_mels: int = 64, width: int = 96, hidden: int = 64):
        super().__init__()
        layers, cin = [nn.Conv1d(n_mels, width, 5, stride=2, padding=2), nn.BatchNorm1d(width), nn.GELU()], width
        for d in (1, 2, 4):
            layers += [nn.Conv1d(cin, width, 3, padding=d, dilation=d), nn.BatchNorm1d(width), nn.GELU()]
        self.convs = nn.Sequential(*layers)
        self.gru = nn.GRU(width, hidden, batch_first=True, bidirectional=True)
        self.out_dim = 2 * hidden

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.convs(normalize_mel(mel))  # (B, W, T/2)
        return self.gru(x.transpose(1, 2))[0]


AUDIO_TRUNKS = {"tcn": TCNTrunk, "conv1d_gru": Conv1dGRUTrunk}


def sinusoid_positions(n: int, dim: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return pe


class TransformerTextEncoder(nn.Module):
    def __init__(self, vocab_size: int, dim: int = 128, layers: int = 2, heads: int = 4, max_len: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        nn.init.normal_(self.embed.weight, std=1.0)  # words and positions on the same scale
        self.register_buffer("pos", sinusoid_positions(max_len, dim), persistent=False)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out_dim = dim

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        return self.encoder(x, src_key_padding_mask=~mask.bool())


class GRUTextEncoder(nn.Module):
    def __init__(self, vocab_size: int, dim: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.gru = nn.GRU(dim, dim // 2, batch_first=True, bidirectional=True)
        self.out_dim = dim

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(ids), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])[0]


class T5TextEncoder(nn.Module):
    """A small transformers ``T5EncoderModel`` (relative position biases), as in Tango. After
    contrastive pre-training its ``t5`` becomes the base model's frozen text encoder."""

    def __init__(self, vocab_size: int, dim: int = 128):
        super().__init__()
        from ..model.components import MiniTangoConfig, make_text_encoder

        self.t5 = make_text_encoder(MiniTangoConfig(text_dim=dim), vocab_size)
        self.out_dim = dim

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.t5(input_ids=ids, attention_mask=mask).last_hidden_state


TEXT_ENCODERS = {"transformer": TransformerTextEncoder, "gru": GRUTextEncoder, "t5": T5TextEncoder}


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def read_model_config(folder, kind: str, what: str, role: str | None = None) -> dict:
    """A saved scorer's config.json, checked: it exists, holds a ``kind`` model, and (when
    ``role`` is given) has that role — judges and rankers never load as each other."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no {what} in {folder} (config.json missing); train it in notebook 01")
    cfg = json.loads((folder / "config.json").read_text())
    if cfg.pop("kind", None) != kind:
        raise ValueError(f"{folder} does not hold an {what}" if what[0] in "aeiou" else f"{folder} does not hold a {what}")
    if role is not None and cfg.get("role") != role:
        raise ValueError(f"{folder} holds a {cfg.get('role')}, asked for a {role}: judges and rankers never mix")
    return cfg
