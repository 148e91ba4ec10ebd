"""The Transformer: embeddings, a stack of blocks, a final norm and the LM head.

    x_0 = Emb(t) (* sqrt(d) for Gemma) (+ P(pos) for learned absolute positions, GPT-2)
    x_l = Block_l(x_{l-1})                                  l = 1 .. n_layers
          (or another cross-layer topology combines the blocks' outputs:
          components/connections/, `Config.connections`)
          (Gemma 4: Block_l also reads its per-layer input e_l(t, x_0), and its KV-sharing
          layers the keys and values of an earlier layer)
    logits = W_head Norm(x_L)    (W_head = Emb^T when tied; c * tanh(logits / c) when capped)
With image or audio embedders (encoder-free multimodal input, Gemma 4 unified), x_0 at each
image / audio placeholder token is that token's soft embedding instead
(`components/multimodal_embedders.py`), and the tokens of one image may see each other both
ways on the layers the config names (`Config.image_bidirectional`).

Everything that differs between GPT-2, Llama, Qwen, Gemma, Mixtral and DeepSeek-V3 is read from
the `Config`; the blocks are built from the components in `glassformer.components`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from glassformer.components.attention import Attention
from glassformer.components.block import Block
from glassformer.components.connections import ConnectionModule, make_connections
from glassformer.components.gated_deltanet import GatedDeltaNet, GatedRMSNorm
from glassformer.components.head_loss import IGNORE, head_weight, linear_cross_entropy
from glassformer.components.kv_cache import KVCache
from glassformer.components.moe import Experts, Router
from glassformer.components.moe_beside_mlp import ScaledRouter
from glassformer.components.mtp import MTPModule
from glassformer.components.multimodal_embedders import (
    AudioEmbedder,
    VisionEmbedder,
    image_blocks,
    place_soft_tokens,
)
from glassformer.components.norms import make_norm
from glassformer.components.per_layer_embeddings import PerLayerEmbeddings
from glassformer.components.rope import RotaryEmbedding, rotary_for_layer
from glassformer.config import Config


class Transformer(nn.Module):
    # What `new_cache` stores keys and values in when not told; None: the weights' dtype. A
    # narrower cache (float16 under float32 weights) is read back in the queries' dtype.
    kv_dtype: torch.dtype | None = None

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_embed = (
            nn.Embedding(config.max_seq_len, config.d_model)
            if config.position == "learned"
            else None
        )
        self.per_layer_embed = PerLayerEmbeddings(config) if config.per_layer_dim else None
        self.vision_embed = VisionEmbedder(config) if config.vision_patch_size else None
        self.audio_embed = AudioEmbedder(config) if config.audio_frame_size else None
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.connections = make_connections(config)  # None: the plain residual stream
        self.final_norm = make_norm(config)
        self.lm_head = (
            None
            if config.tie_embeddings
            else nn.Linear(config.d_model, config.vocab_size, bias=False)
        )
        # The fused head + loss of `forward(..., labels=...)`; `fusion.fuse` swaps in the
        # Triton kernel (same signature and result).
        self.head_loss = linear_cross_entropy
        self.mtp = (
            nn.ModuleList(MTPModule(config, k) for k in range(config.n_mtp_modules))
            if config.build_mtp
            else None
        )
        self.build_rotary()
        self.reset_parameters()

    def build_rotary(self) -> None:
        """One rotary table per kind of layer (Gemma 3's local layers use their own theta)."""
        self.rotary = nn.ModuleDict()
        if self.config.position == "rope":
            kinds = {self.config.layer_type(i) for i in range(self.config.n_layers)} | {"full"}
            kinds.discard("linear")  # linear attention has no positions
            for kind in sorted(kinds):
                self.rotary[kind] = rotary_for_layer(self.config, local=kind == "sliding")
        # LongRoPE: the sequence length past which every frequency changes (None: no switch)
        self.rope_switch_at = next(
            (r.switch_at for r in self.rotary.values() if r.switch_at is not None), None
        )

    # --- initialisation ------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 style: N(0, init_std), output projections scaled by 1/sqrt(2 n_layers)."""
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                out_proj = name.endswith(("o_proj", "down_proj"))
                nn.init.normal_(module.weight, 0.0, residual_std if out_proj else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding | Router):
                nn.init.normal_(module.weight, 0.0, std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, ScaledRouter):
                nn.init.normal_(module.weight, 0.0, std)
                nn.init.ones_(module.scale)
                nn.init.ones_(module.expert_scale)
            elif isinstance(module, Experts):
                for pname, p in module.named_parameters():
                    if pname.endswith("_bias"):
                        nn.init.zeros_(p)
                    else:
                        nn.init.normal_(p, 0.0, residual_std if pname == "down_proj" else std)
            elif isinstance(module, Attention) and module.sinks is not None:
                nn.init.zeros_(module.sinks)  # one unit of softmax mass on nothing at the start
            elif isinstance(module, GatedDeltaNet):
                module.reset_parameters(std)  # its own scheme (decay rates, convolution)
            elif isinstance(module, VisionEmbedder):
                nn.init.normal_(module.pos_embedding, 0.0, std)
            elif isinstance(module, RotaryEmbedding | nn.Conv1d | GatedRMSNorm):
                continue  # no weights, or set by their GatedDeltaNet above
            elif isinstance(module, ConnectionModule):
                continue  # its paper's initialisation, below
            elif hasattr(module, "weight") and isinstance(module.weight, nn.Parameter):
                # norms: identity scale (Gemma's (1 + w) form stores zeros)
                if getattr(module, "unit_offset", False):
                    nn.init.zeros_(module.weight)
                else:
                    nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        if self.connections is not None:
            self.connections.reset_parameters(std)

    # --- attention implementation ---------------------------------------------------------------
    def set_attention_impl(self, impl: str) -> None:
        """ "native" (the default: glassformer's causal kernel for float32 on the CPU, else
        PyTorch's), "sdpa" (PyTorch's fused kernel) or "eager" (explicit matmul + softmax)."""
        if impl not in ("native", "sdpa", "eager"):
            raise ValueError(f"impl: expected 'native', 'sdpa' or 'eager', got {impl!r}")
        for module in self.modules():
            if hasattr(module, "impl"):
                module.impl = impl

    # --- cache -----------------------------------------------------------------------------------
    def new_cache(
        self,
        batch_size: int,
        max_seq_len: int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> KVCache:
        """A static cache for `batch_size` sequences of up to `max_seq_len` tokens."""
        cfg = self.config
        max_seq_len = max_seq_len or cfg.max_seq_len
        weight = self.embed.weight
        dtype = dtype or self.kv_dtype or weight.dtype
        device = device or weight.device
        shapes: list[Any] = []
        for i in range(cfg.n_layers):
            if cfg.layer_type(i) == "linear":  # a fixed-size state instead of keys and values
                shapes.append(self.layers[i].attn.new_state(batch_size, dtype, device))
                continue
            if cfg.kv_source(i) is not None:  # KV sharing: attends to another layer's cache
                shapes.append(None)
                continue
            window = cfg.kv_span(i)
            ring = window is not None and window < max_seq_len
            capacity = window if ring and window is not None else max_seq_len
            if cfg.attention == "mla":
                shapes.append(
                    (
                        (batch_size, capacity, cfg.kv_lora_rank),
                        (batch_size, capacity, cfg.qk_rope_head_dim),
                        capacity,
                        ring,
                        1,
                    )
                )
            else:
                shape = (batch_size, cfg.layer_n_kv_heads(i), capacity, cfg.layer_head_dim(i))
                shapes.append((shape, shape, capacity, ring, 2))
        return KVCache.allocate(shapes, dtype, device, max_seq_len)

    # --- forward ---------------------------------------------------------------------------------
    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        if self.config.embed_scale:
            # Gemma rounds sqrt(d) to the activation dtype before multiplying.
            x = x * torch.tensor(self.config.d_model**0.5, dtype=x.dtype)
        return x

    def rope_tables(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {kind: rot(positions, dtype) for kind, rot in self.rotary.items()}

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final-normalised hidden states -> logits.

        Without autograd the logits of an odd-sized vocabulary (GPT-2's 50257) come back as a
        view into rows padded to 64 entries: see `linear_into_aligned_rows`.
        """
        weight = self.embed.weight if self.lm_head is None else self.lm_head.weight
        logits = linear_into_aligned_rows(hidden, weight)
        cap = self.config.final_logit_softcap
        if cap is not None:
            logits = cap * torch.tanh(logits / cap)
        return logits

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        **media: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """Run the blocks; returns (last hidden state before the final norm, positions, rope).
        `media`: the multimodal keyword inputs of `forward`."""
        if input_ids.dim() != 2:
            shape = tuple(input_ids.shape)
            raise ValueError(f"input_ids: expected [batch, seq], got shape {shape}")
        t = input_ids.shape[1]
        start = cache.length if cache is not None else 0
        # Learned positions and a static cache have a hard length; RoPE alone does not.
        limit = cache.max_seq_len if cache is not None else self.config.max_seq_len
        if start + t > limit and (cache is not None or self.pos_embed is not None):
            raise ValueError(f"sequence of {start + t} tokens exceeds the limit {limit}")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask: expected shape {tuple(input_ids.shape)}, "
                f"got {tuple(attention_mask.shape)}"
            )
        positions = torch.arange(start, start + t, device=input_ids.device)
        if cache is not None:
            key_valid = cache.record_padding(attention_mask)
            if self.rope_switch_at is not None:
                if 0 < start <= self.rope_switch_at < start + t:
                    return self._rerun_past_rope_switch(input_ids, cache, key_valid)
                cache.record_ids(input_ids)
        else:
            key_valid = attention_mask.bool() if attention_mask is not None else None
        blocks = None
        if self.config.multimodal:
            input_ids, x, blocks = self.embed_multimodal(input_ids, start, **media)
        else:
            if any(v is not None for v in media.values()):
                raise ValueError(
                    "multimodal input given to a model without image or audio embedders"
                )
            x = self.embed_tokens(input_ids)
        if self.pos_embed is not None:
            x = x + self.pos_embed(self._row_positions(positions, key_valid))
        per_layer = (
            self.per_layer_embed(input_ids, x) if self.per_layer_embed is not None else None
        )
        # KV sharing: the keys and values each source layer attended to, for the later layers
        shared_kv: dict | None = {} if self.config.n_kv_shared_layers else None
        # RoPE needs no per-row offsets for left padding: q.k depends only on p_i - p_j.
        rope = self.rope_tables(positions, x.dtype)
        topology = self.connections
        state = topology.start(x) if topology is not None else None
        for i, block in enumerate(self.layers):
            use_rope = rope and self.config.uses_rope(i)
            layer_rope = rope.get(self.config.layer_type(i)) if use_rope else None
            layer_cache = cache.layers[i] if cache is not None else None
            layer_input = per_layer[:, :, i] if per_layer is not None else None
            bidirectional = blocks is not None and self.config.image_blocks_bidirectional(i)
            image = blocks if bidirectional else None
            args = (layer_rope, positions, layer_cache, key_valid, layer_input, shared_kv, image)
            if topology is None:
                x = block(x, *args)
            else:  # the blocks produce outputs, the topology combines them
                state = topology.layer(i, block, state, args)
        if topology is not None:
            x = topology.finish(state)
        if cache is not None:
            cache.length += t
        return x, positions, rope

    def embed_multimodal(
        self,
        input_ids: torch.Tensor,
        start: int,
        pixel_values: torch.Tensor | None = None,
        image_position_ids: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        input_features_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Token embeddings with the soft tokens of the images and audio clips at their
        placeholders. Returns (the ids with placeholders replaced by the padding id, which
        per-layer embeddings read; the embeddings; the image block ids [B, start + T] by
        absolute position for the attention mask, or None).

        pixel_values [N, M, P] merged raw patches of N images (P = Config.vision_patch_dim),
        image_position_ids [N, M, 2] their grid cells ((-1, -1): padding, dropped);
        input_features [A, F, frame] raw audio frames, input_features_mask [A, F] (True: real
        frame; audio is placed only when both are given, as HF does); mm_token_type_ids [B, T]
        (0 text, 1 image, 3 audio) marks which tokens form an image."""
        cfg = self.config
        placeholder = torch.zeros_like(input_ids, dtype=torch.bool)
        for token in (cfg.image_token_id, cfg.audio_token_id, cfg.video_token_id):
            if token is not None:
                placeholder |= input_ids == token
        ids = input_ids.masked_fill(placeholder, cfg.mm_pad_token_id)
        x = self.embed_tokens(ids)
        if pixel_values is not None:
            if self.vision_embed is None or image_position_ids is None:
                raise ValueError(
                    "pixel_values: needs a model with a vision embedder and image_position_ids"
                )
            soft = self.vision_embed(pixel_values, image_position_ids)
            soft = soft[(image_position_ids != -1).all(-1)]
            x = place_soft_tokens(x, input_ids == cfg.image_token_id, soft, "pixel_values")
        if input_features is not None and input_features_mask is not None:
            if self.audio_embed is None:
                raise ValueError("input_features: the model has no audio embedder")
            soft = self.audio_embed(input_features)[input_features_mask.bool()]
            x = place_soft_tokens(x, input_ids == cfg.audio_token_id, soft, "input_features")
        blocks = None
        if mm_token_type_ids is not None and cfg.image_bidirectional != "none":
            if mm_token_type_ids.shape != input_ids.shape:
                raise ValueError(
                    f"mm_token_type_ids: expected shape {tuple(input_ids.shape)}, got "
                    f"{tuple(mm_token_type_ids.shape)}"
                )
            blocks = image_blocks(mm_token_type_ids)
            if start:  # earlier positions belong to no block of this call
                blocks = torch.cat((blocks.new_full((blocks.shape[0], start), -1), blocks), 1)
        return ids, x, blocks

    def _rerun_past_rope_switch(
        self, input_ids: torch.Tensor, cache: KVCache, key_valid: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """The first cached call whose sequence grows past LongRoPE's original context: every
        frequency switches to the long factors, so the cache (keys rotated with the short ones,
        and all later layers' keys computed from them) is refilled by re-running the whole
        sequence from its recorded ids, as HF's Phi-3 generation drops its cache there. Returns
        what `hidden_states` returns for the new tokens only."""
        start, end = cache.length, cache.length + input_ids.shape[1]
        assert cache.token_ids is not None
        ids = torch.cat((cache.token_ids[:, :start], input_ids), dim=1)
        mask = None if key_valid is None else key_valid[:, :end].clone()
        cache.reset()
        hidden, positions, rope = self.hidden_states(ids, cache, mask)
        rope = {kind: (cos[start:], sin[start:]) for kind, (cos, sin) in rope.items()}
        return hidden[:, start:], positions[start:], rope

    @staticmethod
    def _row_positions(positions: torch.Tensor, key_valid: torch.Tensor | None) -> torch.Tensor:
        """Absolute positions count real tokens only, so a left-padded row starts at 0."""
        if key_valid is None:
            return positions
        start, end = int(positions[0]), int(positions[-1]) + 1
        before = key_valid[:, :start].sum(1, keepdim=True)
        return (before + key_valid[:, start:end].long().cumsum(1) - 1).clamp(min=0)

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        pixel_values: torch.Tensor | None = None,
        image_position_ids: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        input_features_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids [batch, seq] -> logits [batch, seq, vocab].

        A model with image or audio embedders also takes HF's multimodal keyword inputs
        (`embed_multimodal` describes them; `glassformer.multimodal` prepares them).

        With a cache, the tokens continue the cached sequence and the cache advances.
        `attention_mask` [batch, seq] (1 = token, 0 = padding) lets rows of a batch have
        different lengths (left padding); padded positions produce logits to be ignored.

        With `labels` [batch, seq] (the token each position should predict, -100 where none)
        it returns instead the float32 sum of cross-entropies over the counted positions,
        with the head and the loss fused so the logits are never materialised
        (`components/head_loss.py`).
        """
        media = dict(
            pixel_values=pixel_values,
            image_position_ids=image_position_ids,
            mm_token_type_ids=mm_token_type_ids,
            input_features=input_features,
            input_features_mask=input_features_mask,
        )
        hidden, _, _ = self.hidden_states(input_ids, cache, attention_mask, **media)
        normed = self.final_norm(hidden)
        if labels is None:
            return self.head(normed)
        weight = head_weight(self.lm_head, self.embed)
        if weight is None:  # a wrapped head (LoRA on lm_head): the unfused loss
            logits = self.head(normed).float()
            flat = logits.reshape(-1, logits.shape[-1])
            return F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE, reduction="sum")
        return self.head_loss(normed, weight, labels, self.config.final_logit_softcap)

    def forward_mtp(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits of the main model and of each MTP depth k (which predicts token i+k+1 at
        position i, for the first seq-k positions)."""
        if self.mtp is None:
            raise ValueError("forward_mtp: the model was built without MTP (Config.build_mtp)")
        hidden, positions, rope = self.hidden_states(input_ids)
        logits = self.head(self.final_norm(hidden))
        extra = []
        for k, module in enumerate(self.mtp, start=1):
            n = hidden.shape[1] - 1
            if n <= 0:
                break
            layer_rope = rope.get("full") if rope else None
            if layer_rope is not None:
                layer_rope = (layer_rope[0][:n], layer_rope[1][:n])
            hidden, normed = module(
                hidden[:, :n], self.embed_tokens(input_ids[:, k:]), layer_rope, positions[:n]
            )
            extra.append(self.head(normed))
        return logits, extra

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.embed.weight.numel()
        return n


ROW_ALIGN = 64


def linear_into_aligned_rows(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """F.linear(x, weight) (no bias) written into an output whose rows are padded to a multiple
    of ROW_ALIGN elements; returns the [..., out_features] view of it.

    BLAS GEMMs slow down when the output's row stride is not a multiple of the cache line: for
    GPT-2's head (50257 logits a row) MKL runs about 25% faster writing rows of 50304 (the same
    reason nanoGPT pads GPT-2's vocabulary). Only the stride changes, not the numbers: the
    view is an ordinary strided tensor (`reshape` works on it, `view` of the last dimension
    does not). Under autograd (`out=` is not differentiable) it is plain F.linear.
    """
    rows = weight.shape[0]
    padded = -(-rows // ROW_ALIGN) * ROW_ALIGN
    recording = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if padded == rows or x.dim() < 2 or recording:
        return F.linear(x, weight)
    out = x.new_empty(*x.shape[:-1], padded)
    torch.mm(x.reshape(-1, x.shape[-1]), weight.t(), out=out.view(-1, padded)[:, :rows])
    return out[..., :rows]
