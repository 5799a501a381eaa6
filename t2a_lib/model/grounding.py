"""Grounding: each event word's cross-attention should fall where its event sounds.

Order is the hard part of the base model (DESIGN.md): the denoising loss says "put a bark
early" only weakly, through many steps, and on 2 cores the diffusion loss alone does not teach
the UNet to read word order at the default budget, even from order-aware text states (order
given both present 0.41; with this term and the plain v-loss 0.86; notebook 02, section 9). The world knows every event's onset and offset, and cross-attention is where a
word's content enters the latent, so the timelines can supervise it directly (after
TokenCompose, Wang et al. 2024, who supervise each noun's attention map with its segmentation
mask). For event word j, let a_j(p) be its cross-attention over the latent's time positions p
(mean over heads, or over the first ``TrainConfig.grounding_heads``, and frequency; normalised
over p), and s_j(p) the share of position p that its event fills; then

    L_ground = mean over event words j of (1 − Σ_p a_j(p) s_j(p))²

added as ``weight · L_ground`` to the diffusion loss. The maps come from a second forward pass
on *pure noise* at a high timestep (``TrainConfig.grounding_min_t`` .. 1000): on the training
latents themselves the UNet meets the term by attending to wherever the event's content already
shows — and still does not read order (measured in notebook 02). With no content to follow, only
the word's "when" in the text states and the frame's position can place it: the layout decision
of the first sampling steps. Use it with the plain v-loss: min-SNR weighting leaves those steps
almost no diffusion loss, the term then owns them and presence falls (0.56). It acts only in
training: the UNet stays a plain ``UNet2DConditionModel`` and sampling is unchanged.

    record_cross_attention(unet, latent_hw)   context manager: the maps of every cross-attention layer
    grounding_loss(maps, targets, mask)       L_ground against ``audiotext.timeline_targets``
    word_time_attention(unet, states, ...)    each word's attention over time on pure noise (a probe)
"""

from __future__ import annotations

import contextlib
import math

import torch

from .components import add_time_channel


class AttentionRecorder:
    """A cross-attention processor that computes attention explicitly (as diffusers'
    ``AttnProcessor`` does) and keeps each call's map, averaged over heads (the first ``heads``
    of them when given) and frequency: ``(B, T_level, L)`` for a latent of ``latent_hw = (time,
    freq)`` seen at a coarser level."""

    def __init__(self, maps: list, latent_hw: tuple[int, int], heads: int | None = None):
        self.maps, self.latent_hw, self.heads = maps, latent_hw, heads

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if hidden_states.ndim != 3 or attn.spatial_norm is not None or attn.group_norm is not None:
            raise ValueError("AttentionRecorder expects the transformer blocks' (B, tokens, C) cross-attention")
        batch, n_query, _ = hidden_states.shape
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attn.norm_cross and encoder_hidden_states is not None:
            context = attn.norm_encoder_hidden_states(context)
        attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key, value = attn.head_to_batch_dim(attn.to_k(context)), attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)  # (B·heads, Q, L)
        self.maps.append(self._time_map(probs, batch, attn.heads, n_query))
        out = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(torch.bmm(probs, value))))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor

    def _time_map(self, probs, batch, heads, n_query):
        t, f = self.latent_hw
        down = math.isqrt(t * f // n_query)  # each level halves both axes
        if (t // down) * (f // down) != n_query:
            raise ValueError(f"{n_query} attention queries do not tile a {t}x{f} latent")
        if self.heads is not None and not 1 <= self.heads <= heads:
            raise ValueError(f"cannot record the first {self.heads} of {heads} attention heads")
        return probs.view(batch, heads, t // down, f // down, -1)[:, : self.heads].mean(dim=(1, 3))


@contextlib.contextmanager
def record_cross_attention(unet, latent_hw: tuple[int, int], heads: int | None = None):
    """Within the block, every cross-attention layer (``attn2``) of ``unet`` appends its time map
    (mean over all heads, or over the first ``heads``) to the yielded list; the original
    processors come back afterwards."""
    original = unet.attn_processors
    maps: list[torch.Tensor] = []
    recorder = AttentionRecorder(maps, latent_hw, heads)
    unet.set_attn_processor({k: recorder if k.endswith("attn2.processor") else p for k, p in original.items()})
    try:
        yield maps
    finally:
        unet.set_attn_processor(original)


def pool_targets(targets: torch.Tensor, n_positions: int) -> torch.Tensor:
    """Timeline shares ``(B, W, K)`` averaged down to ``n_positions`` (K must be a multiple)."""
    k = targets.shape[-1]
    if k % n_positions:
        raise ValueError(f"{k} timeline bins do not pool to {n_positions} attention positions")
    return targets.unflatten(-1, (n_positions, k // n_positions)).mean(-1)


def grounding_loss(maps: list[torch.Tensor], targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_ground averaged over layers. ``maps``: ``(B, T_l, L)`` per layer; ``targets``: ``(B, W, K)``
    timeline shares per word (the world tokenizer is word-level: token j is word j); ``mask``:
    ``(B, W)``, 1 on the event words to supervise."""
    if not maps:
        raise ValueError("no cross-attention maps were recorded: was the forward pass inside record_cross_attention?")
    losses = []
    for a in maps:
        n = min(a.shape[-1], targets.shape[1])
        share = pool_targets(targets[:, :n].to(a), a.shape[1])  # (B, n, T_l)
        a = a[..., :n].transpose(1, 2).float()
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-8)
        inside = (a * share).sum(-1)
        m = mask[:, :n].to(inside)
        losses.append(((1 - inside).pow(2) * m).sum() / m.sum().clamp(min=1.0))
    return torch.stack(losses).mean()


@torch.no_grad()
def word_time_attention(unet, states: torch.Tensor, mask: torch.Tensor | None, latent_shape: tuple[int, int, int],
                        timestep: int = 800, seed: int = 0) -> torch.Tensor:
    """Each word's cross-attention over time, ``(B, T, L)`` normalised over T, at the finest
    attention level (mean over its layers), for pure-noise latents at ``timestep``: what the
    UNet makes of the caption *before* the latent shows any content, i.e. where it would put
    each event when layout is decided."""
    x = torch.randn(len(states), *latent_shape, generator=torch.Generator().manual_seed(seed))
    with record_cross_attention(unet, tuple(latent_shape[1:])) as maps:
        unet(add_time_channel(unet, x.to(unet.device, unet.dtype)), torch.full((len(states),), timestep, device=unet.device),
             encoder_hidden_states=states.to(unet.device, unet.dtype),
             encoder_attention_mask=None if mask is None else mask.to(unet.device))
    finest = max(m.shape[1] for m in maps)
    a = torch.stack([m for m in maps if m.shape[1] == finest]).mean(0).float().cpu()
    return a / a.sum(1, keepdim=True).clamp_min(1e-12)
