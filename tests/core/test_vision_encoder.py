"""The ViT encoder layer against torch's own nn.TransformerEncoderLayer (pre-norm, GELU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glassformer.components.vision_encoder import VisionEncoder


def test_matches_torch_transformer_encoder_layers_with_padding():
    torch.manual_seed(0)
    width, heads, ff, layers = 32, 4, 64, 2
    ours = VisionEncoder(width, layers, heads, ff).double()
    ref = nn.ModuleList(
        nn.TransformerEncoderLayer(
            width, heads, ff, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        for _ in range(layers)
    ).double()
    for mine, theirs in zip(ours.layers, ref, strict=True):
        for p in mine.parameters():  # perturbed: LayerNorm scales and biases away from 1 and 0
            nn.init.normal_(p, std=0.3)
        theirs.self_attn.in_proj_weight.data.copy_(mine.qkv_proj.weight)
        theirs.self_attn.in_proj_bias.data.copy_(mine.qkv_proj.bias)
        theirs.self_attn.out_proj.weight.data.copy_(mine.o_proj.weight)
        theirs.self_attn.out_proj.bias.data.copy_(mine.o_proj.bias)
        for a, b in (
            ("norm1", "norm1"),
            ("norm2", "norm2"),
            ("up_proj", "linear1"),
            ("down_proj", "linear2"),
        ):
            getattr(theirs, b).load_state_dict(getattr(mine, a).state_dict())
    ref.eval()
    x = torch.randn(2, 7, width, dtype=torch.float64)
    valid = torch.ones(2, 7, dtype=torch.bool)
    valid[1, 5:] = False  # the second image has two padding patches
    got = ours(x, valid)
    want = x
    for layer in ref:
        want = layer(want, src_key_padding_mask=~valid)
    torch.testing.assert_close(got[valid], want[valid], rtol=0, atol=1e-10)
    # Padding patches change nothing for the real ones.
    alone = ours(x[1:, :5], valid[1:, :5])
    torch.testing.assert_close(alone[0], got[1, :5], rtol=0, atol=1e-10)


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match="vision_encoder_heads"):
        VisionEncoder(30, 1, 4, 60)
