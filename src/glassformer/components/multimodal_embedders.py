"""Encoder-free multimodal input: raw image patches and raw audio frames as soft tokens.

There is no vision tower and no audio tower (Gemma Team 2026, Gemma 4's unified models; the
idea goes back to Fuyu: Bavishi et al. 2023, "Fuyu-8B: A Multimodal Architecture for AI
Agents", raw patches through one linear layer). An image is resized and cut into p x p-pixel
patches; k x k neighbouring patches are merged into one soft token whose input is its
(k p)^2 * 3 raw pixel values, in [0, 1]. Each soft token also carries its (x, y) cell in the
grid of merged patches; padding tokens (a batch of images of different sizes) have (-1, -1).

Vision embedder, for a merged patch u (P = (k p)^2 * 3 values) at grid cell (x, y):
    h = LN_2(u_proj),  u_proj = W_d LN_1(u) + b_d                  (P -> E)
    h = LN_3(h + T[x, 0] + T[y, 1])     T: factorised 2D position table [posemb, 2, E]
                                        (a coordinate of -1 adds nothing)
    e = W_o (h / sqrt(mean(h^2) + eps))                            (E -> d_model, no bias)
Audio embedder, for one frame f of F raw 16 kHz samples (F = 640: 40 ms a token):
    e = W_a (f / sqrt(mean(f^2) + eps))                            (F -> d_model, no bias)
LN is LayerNorm with a learned scale and bias (eps 1e-5, PyTorch's default, which HF's
modules keep); the RMSNorms have no learned scale.

Placement: the prompt holds one placeholder token per soft token (image_token_id,
audio_token_id). The placeholders are embedded as the padding token, and the soft tokens,
in order (image by image, patch by patch in raster order, padding patches dropped), replace
those embeddings. Which tokens belong to one image (`image_blocks`) is what the attention
mask's image rule reads (`Config.image_bidirectional`; the mask itself is built in
`components/kv_cache.py`).
"""

from __future__ import annotations

import torch
from torch import nn

from glassformer.components.norms import LayerNorm, unit_rms_norm
from glassformer.components.vision_encoder import VisionEncoder
from glassformer.config import Config

# HF's Gemma 4 unified embedder builds its LayerNorms with PyTorch's default eps.
PATCH_LAYERNORM_EPS = 1e-5

# mm_token_type_ids values (HF's processor): text 0, image 1, video 2, audio 3
TEXT, IMAGE, VIDEO, AUDIO = 0, 1, 2, 3


class VisionEmbedder(nn.Module):
    """Merged raw patches [N, M, P] and their grid cells [N, M, 2] -> soft tokens [N, M, d]."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        p, e = config.vision_patch_dim, config.vision_embed_dim
        self.patch_ln1 = LayerNorm(p, PATCH_LAYERNORM_EPS)
        self.patch_dense = nn.Linear(p, e)
        self.patch_ln2 = LayerNorm(e, PATCH_LAYERNORM_EPS)
        # initialised by Transformer.reset_parameters
        self.pos_embedding = nn.Parameter(torch.empty(config.vision_posemb_size, 2, e))
        self.pos_norm = LayerNorm(e, PATCH_LAYERNORM_EPS)
        # A ViT tower over the patches (Config.vision_encoder_layers; none in Gemma 4)
        self.encoder = (
            VisionEncoder(e, config.vision_encoder_layers, config.vision_encoder_heads, 4 * e)
            if config.vision_encoder_layers
            else None
        )
        self.eps = config.vision_norm_eps
        self.projection = nn.Linear(e, config.d_model, bias=False)

    def forward(self, pixel_values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        dtype = self.patch_dense.weight.dtype
        h = self.patch_ln2(self.patch_dense(self.patch_ln1(pixel_values.to(dtype))))
        h = self.pos_norm(h + self.position_embedding(positions))
        if self.encoder is not None:
            h = self.encoder(h, (positions != -1).all(-1))
        return self.projection(unit_rms_norm(h, self.eps))

    def position_embedding(self, positions: torch.Tensor) -> torch.Tensor:
        """T[x, 0] + T[y, 1] per token; a coordinate of -1 (padding) contributes zero."""
        if positions.shape[-1] != 2:
            raise ValueError(f"image_position_ids: expected [..., 2], got {tuple(positions.shape)}")
        n_rows = self.pos_embedding.shape[0]
        if int(positions.max()) >= n_rows:
            raise ValueError(
                f"image_position_ids: coordinate {int(positions.max())} is outside the position "
                f"table of {n_rows} rows (vision_posemb_size)"
            )
        table = self.pos_embedding
        axes = torch.arange(2, device=positions.device)
        rows = table[positions.clamp(min=0).long(), axes]  # [..., 2, E]
        valid = (positions != -1).to(table.dtype).unsqueeze(-1)
        return (rows * valid).sum(-2)


class AudioEmbedder(nn.Module):
    """Raw waveform frames [N, frames, F] -> soft tokens [N, frames, d]."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.eps = config.audio_norm_eps
        self.projection = nn.Linear(config.audio_frame_size, config.d_model, bias=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.to(self.projection.weight.dtype)
        return self.projection(unit_rms_norm(frames, self.eps))


def place_soft_tokens(
    embeds: torch.Tensor, slots: torch.Tensor, soft: torch.Tensor, what: str
) -> torch.Tensor:
    """Write the soft tokens `soft` [n, d], in order, at the positions where `slots` [B, T] is
    True (row by row, left to right) of `embeds` [B, T, d]."""
    n_slots, n_soft = int(slots.sum()), soft.shape[0]
    if n_slots != n_soft:
        raise ValueError(
            f"{what}: the prompt has {n_slots} placeholder tokens but the input gives {n_soft} "
            "soft tokens"
        )
    return embeds.masked_scatter(slots.unsqueeze(-1), soft.to(embeds.dtype))


def image_blocks(mm_token_type_ids: torch.Tensor) -> torch.Tensor:
    """[B, T] token types -> [B, T] block ids: each maximal run of image (or video) tokens gets
    its own id (0, 1, ... per row), every other token -1."""
    is_image = (mm_token_type_ids == IMAGE) | (mm_token_type_ids == VIDEO)
    before = torch.zeros_like(is_image)
    before[:, 1:] = is_image[:, :-1]
    starts = is_image & ~before
    ids = starts.long().cumsum(1) - 1
    return torch.where(is_image, ids, torch.full_like(ids, -1))
