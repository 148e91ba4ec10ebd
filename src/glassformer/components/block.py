"""One Transformer block: attention and a feed-forward layer around the residual stream.

    pre-norm (GPT-2, Llama; Xiong et al. 2020):   h = x + Attn(N1(x));   y = h + FFN(N2(h))
    sandwich (Gemma 2/3; Ding et al. 2021):       h = x + N1'(Attn(N1(x))); y = h + N2'(FFN(N2(h)))
    post-norm (Vaswani et al. 2017):              h = N1(x + Attn(x));   y = N2(h + FFN(h))
    output-norm (OLMo 2; Team OLMo 2024):         h = x + N1'(Attn(x));  y = h + N2'(FFN(h))
Output-norm keeps the residual stream unnormalised, like pre-norm, but normalises what each
sublayer adds to it instead of what it reads ("2 OLMo 2 Furious", for training stability).
The token mixer ("Attn") is standard attention (MHA/GQA/MQA), MLA, or, on a layer of type
"linear", Gated DeltaNet linear attention; the feed-forward dense or MoE, as the config says for
this layer. Gemma 4 adds three steps after the feed-forward layer, each set by the config:
routed experts beside the dense MLP (`moe_beside_mlp.py`), the layer's per-layer input
embedding (`per_layer_embeddings.py`), and a stored scalar that multiplies the block's output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from glassformer.components.attention import Attention
from glassformer.components.gated_deltanet import GatedDeltaNet
from glassformer.components.mla import MultiHeadLatentAttention
from glassformer.components.mlp import MLP
from glassformer.components.moe import MoE
from glassformer.components.moe_beside_mlp import MoEBesideMLP
from glassformer.components.norms import make_norm
from glassformer.components.per_layer_embeddings import PerLayerInput
from glassformer.config import Config


class Block(nn.Module):
    def __init__(self, config: Config, layer: int) -> None:
        super().__init__()
        self.placement = config.norm_placement
        # output-norm has no norm on the sublayer inputs
        pre = config.norm_placement != "output"
        self.attn_norm = make_norm(config) if pre else None
        self.linear = config.layer_type(layer) == "linear"
        self.attn: nn.Module = (
            GatedDeltaNet(config, layer)
            if self.linear
            else MultiHeadLatentAttention(config, layer)
            if config.attention == "mla"
            else Attention(config, layer)
        )
        self.mlp_norm = make_norm(config) if pre else None
        beside = config.moe_beside_mlp and config.is_moe_layer(layer)
        if config.is_moe_layer(layer) and not beside:
            self.mlp: nn.Module = MoE(config, layer)
        else:
            self.mlp = MLP(config, d_ff=config.layer_d_ff(layer))
        self.moe = MoEBesideMLP(config) if beside else None
        post = config.norm_placement in ("sandwich", "output")
        self.post_attn_norm = make_norm(config) if post else None
        self.post_mlp_norm = make_norm(config) if post else None
        self.per_layer_input = PerLayerInput(config) if config.per_layer_dim else None
        if config.layer_scalar:
            self.register_buffer("layer_scalar", torch.ones(1))
        else:
            self.layer_scalar = None

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
        cache: Any = None,
        key_valid: torch.Tensor | None = None,
        per_layer_input: torch.Tensor | None = None,
        shared_kv: dict | None = None,
        blocks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`per_layer_input`: this layer's per-layer embedding; `shared_kv`: keys and values
        that KV-sharing layers hand on; `blocks`: image blocks seen both ways on this layer
        (see `Attention.forward`)."""
        if self.placement == "post":
            x = self.attn_norm(x + self.mix(x, rope, positions, cache, key_valid, None, blocks))
            return self.mlp_norm(x + self.mlp(x))
        x = x + self.attn_branch(x, rope, positions, cache, key_valid, shared_kv, blocks)
        x = x + self.mlp_branch(x)
        if self.per_layer_input is not None:
            assert per_layer_input is not None
            x = self.per_layer_input(x, per_layer_input)
        if self.layer_scalar is not None:
            x = x * self.layer_scalar
        return x

    def attn_branch(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
        cache: Any = None,
        key_valid: torch.Tensor | None = None,
        shared_kv: dict | None = None,
        blocks: torch.Tensor | None = None,
        kv_inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """What the attention sublayer adds to the residual stream (pre, sandwich and output
        placements). `kv_inputs`: separate streams the keys and values read (MUDDFormer),
        normalised by the same norm as `x`."""
        if kv_inputs is not None:
            kv_inputs = (_maybe(self.attn_norm, kv_inputs[0]), _maybe(self.attn_norm, kv_inputs[1]))
            h = self.attn(_maybe(self.attn_norm, x), rope, positions, cache, key_valid,
                          shared_kv, blocks, kv_inputs)  # fmt: skip
        else:
            h = self.mix(
                _maybe(self.attn_norm, x), rope, positions, cache, key_valid, shared_kv, blocks
            )
        if self.post_attn_norm is not None:
            h = self.post_attn_norm(h)
        return h

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        """What the feed-forward sublayer adds to the residual stream `x`."""
        h = self.mlp(_maybe(self.mlp_norm, x))
        if self.moe is not None:
            h = self.moe(x, h)
        if self.post_mlp_norm is not None:
            h = self.post_mlp_norm(h)
        return h

    def mix(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
        cache: Any,
        key_valid: torch.Tensor | None,
        shared_kv: dict | None = None,
        blocks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The token mixer. A linear layer needs no positions: its cache entry is its state, and
        of the padding it needs only the new tokens' (key_valid is indexed by position)."""
        if self.linear:
            return self.attn(x, cache, None if key_valid is None else key_valid[:, positions])
        if shared_kv is not None or blocks is not None:  # KV sharing, image blocks (Gemma 4)
            return self.attn(x, rope, positions, cache, key_valid, shared_kv, blocks)
        return self.attn(x, rope, positions, cache, key_valid)


def _maybe(norm: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    return x if norm is None else norm(x)
