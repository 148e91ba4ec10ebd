"""A static, preallocated key/value cache for incremental decoding.

Each attention layer stores what later tokens need to attend to its past:
- standard attention: K and V per KV head, [batch, n_kv_heads, L, head_dim];
- MLA: only the compressed latent c_kv [batch, L, kv_lora_rank] and the one shared rotary key
  [batch, L, qk_rope_head_dim] (DeepSeek-V2's point: the cache shrinks from
  2 * n_heads * head_dim to kv_lora_rank + qk_rope_head_dim numbers per token).
Full-attention layers keep L = max_seq_len slots written in order. Sliding-window layers keep
only L = window slots used as a ring (slot = position mod window): older keys can never be seen
again, so they are overwritten. Chunked layers (Llama 4) use the same ring with L = chunk size:
a query sees only keys of its own chunk, all within the last `chunk` positions. Each slot
remembers the position it holds (-1 when empty); the attention mask is computed from those
positions, which makes the ring order irrelevant.
A linear-attention layer (Gated DeltaNet) keeps no keys at all: its entry in `KVCache.layers` is
the layer's fixed-size state (`components.gated_deltanet.LinearAttentionState`, with `nbytes`
and `reset`), carried from one call to the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class LayerCache:
    """One layer's cache. For MLA `keys` holds c_kv and `values` the shared rotary key."""

    keys: torch.Tensor  # [B, Hkv, L, Dk] or MLA [B, L, kv_lora_rank]
    values: torch.Tensor  # [B, Hkv, L, Dv] or MLA [B, L, qk_rope_head_dim]
    positions: torch.Tensor  # [L] int64, -1 = empty
    ring: bool  # sliding window: slots reused modulo L
    seq_dim: int  # which dim of keys/values indexes the slots

    @property
    def capacity(self) -> int:
        return self.positions.shape[0]

    def update(
        self, new_keys: torch.Tensor, new_values: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Store the new entries; return everything the new queries may attend to.

        Returns (keys, values, key_positions). For a full layer that is the written prefix of
        the buffer; for a ring the old slots plus the new entries, concatenated before the
        write, because a chunk longer than the window still needs its own early keys.
        """
        start, n = int(positions[0]), positions.shape[0]
        if not self.ring:
            if start + n > self.capacity:
                raise ValueError(
                    f"KV cache full: {start + n} positions exceed its capacity {self.capacity}"
                )
            self._slot(self.keys, start, n).copy_(new_keys)
            self._slot(self.values, start, n).copy_(new_values)
            self.positions[start : start + n] = positions
            end = start + n
            return (
                self._slot(self.keys, 0, end),
                self._slot(self.values, 0, end),
                self.positions[:end],
            )
        keys = torch.cat((self.keys, new_keys), dim=self.seq_dim)
        values = torch.cat((self.values, new_values), dim=self.seq_dim)
        key_positions = torch.cat((self.positions, positions))
        keep = min(n, self.capacity)  # only the last `window` entries can be seen again
        slots = positions[-keep:] % self.capacity
        self.keys.index_copy_(self.seq_dim, slots, new_keys.narrow(self.seq_dim, n - keep, keep))
        self.values.index_copy_(
            self.seq_dim, slots, new_values.narrow(self.seq_dim, n - keep, keep)
        )
        self.positions[slots] = positions[-keep:]
        return keys, values, key_positions

    def _slot(self, buf: torch.Tensor, start: int, n: int) -> torch.Tensor:
        return buf.narrow(self.seq_dim, start, n)

    def nbytes(self) -> int:
        return (
            self.keys.numel() * self.keys.element_size()
            + self.values.numel() * self.values.element_size()
        )

    def reset(self) -> None:
        """Mark every slot empty (the buffers are overwritten as positions come back)."""
        self.positions.fill_(-1)


class KVCache:
    """All layers' caches plus the number of tokens already processed. An entry of `layers` is a
    `LayerCache` (attention), a fixed-size state object (linear attention), both with `nbytes()`
    and `reset()`, or None (a layer that attends to another layer's cache: Gemma 4's KV
    sharing)."""

    def __init__(self, layers: list[Any], max_seq_len: int) -> None:
        self.layers = layers
        self.max_seq_len = max_seq_len
        self.length = 0
        # Padded batches only: which positions of each row hold real tokens.
        self.key_valid: torch.Tensor | None = None  # [B, max_seq_len] bool
        # LongRoPE models only: the tokens so far, to re-run them when the frequencies switch.
        self.token_ids: torch.Tensor | None = None  # [B, max_seq_len] int64

    def reset(self) -> None:
        self.length = 0
        self.key_valid = None
        for layer in self.layers:
            if layer is not None:
                layer.reset()

    def record_padding(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """Note which of the next tokens are real; returns key validity by position, or None
        while the batch has no padding at all."""
        if attention_mask is None:
            return self.key_valid  # new tokens are real; slots were initialised to True
        if self.key_valid is None:
            self.key_valid = torch.ones(
                attention_mask.shape[0],
                self.max_seq_len,
                dtype=torch.bool,
                device=attention_mask.device,
            )
        t = attention_mask.shape[1]
        self.key_valid[:, self.length : self.length + t] = attention_mask.bool()
        return self.key_valid

    def record_ids(self, input_ids: torch.Tensor) -> None:
        """Keep the next tokens' ids (LongRoPE: see `Transformer.hidden_states`)."""
        if self.token_ids is None:
            self.token_ids = torch.zeros(
                input_ids.shape[0], self.max_seq_len, dtype=torch.long, device=input_ids.device
            )
        self.token_ids[:, self.length : self.length + input_ids.shape[1]] = input_ids

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers if layer is not None)

    @staticmethod
    def allocate(
        shapes: list[Any],
        dtype: torch.dtype,
        device: torch.device | str | None,
        max_seq_len: int,
    ) -> KVCache:
        """shapes: per layer (keys shape, values shape, capacity, ring, seq_dim), or a state
        object already allocated (linear layers) or None (no cache), kept as it is."""

        def build(shape: Any) -> Any:
            if not isinstance(shape, tuple):
                return shape
            k_shape, v_shape, capacity, ring, seq_dim = shape
            return LayerCache(
                keys=torch.zeros(k_shape, dtype=dtype, device=device),
                values=torch.zeros(v_shape, dtype=dtype, device=device),
                positions=torch.full((capacity,), -1, dtype=torch.long, device=device),
                ring=ring,
                seq_dim=seq_dim,
            )

        layers = [build(shape) for shape in shapes]
        return KVCache(layers, max_seq_len)


def visibility_mask(
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    window: int | None,
    key_valid: torch.Tensor | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """Key j is visible to query i when 0 <= p_i - p_j (< window), both lie in the same chunk
    (p // chunk, counted from the row's first real token) and j is not padding.

    Returns [T, S] bool, or [B, 1, T, S] when `key_valid` ([B, positions] bool, indexed by
    absolute position) marks padded keys. A padding query still sees itself, so its softmax row
    is never empty (its output is ignored, but must not be NaN).
    """
    distance = query_positions[:, None] - key_positions[None, :]
    visible = (distance >= 0) & (key_positions[None, :] >= 0)
    if window is not None:
        visible &= distance < window
    key_pos = key_positions.clamp(min=0)
    if chunk is not None and key_valid is None:
        visible &= (query_positions[:, None] // chunk) == (key_pos[None, :] // chunk)
    if key_valid is None:
        return visible
    valid = key_valid[:, key_pos]  # [B, S]
    visible = visible[None] & valid[:, None, :]
    if chunk is not None:  # a left-padded row's chunks start at its first real token
        lead = key_valid.long().cumsum(1).eq(0).sum(1, keepdim=True)  # [B, 1]
        q_chunk = (query_positions[None, :] - lead) // chunk  # [B, T]
        k_chunk = (key_pos[None, :] - lead) // chunk  # [B, S]
        visible &= q_chunk[:, :, None] == k_chunk[:, None, :]
    visible |= (distance == 0)[None]
    return visible[:, None]


def with_image_blocks(
    visible: torch.Tensor,
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    window: int | None,
    key_valid: torch.Tensor | None,
    blocks: torch.Tensor,
) -> torch.Tensor:
    """`visible` ([T, S] or [B, 1, T, S]) plus, both ways, the keys of the query's own image:
    key j is also visible to query i when both belong to the same image block
    (blocks[b, p] >= 0, indexed by absolute position; -1 for text), j lies within the window
    (p_i - p_j < window, which a later key always does) and is not padding. Returns
    [B, 1, T, S]."""
    key_pos = key_positions.clamp(min=0)
    q_block = blocks[:, query_positions]  # [B, T]
    k_block = blocks[:, key_pos]  # [B, S]
    same = (q_block[:, :, None] == k_block[:, None, :]) & (q_block[:, :, None] >= 0)
    same &= (key_positions >= 0)[None, None, :]
    if window is not None:
        same &= (query_positions[:, None] - key_positions[None, :] < window)[None]
    if key_valid is not None:
        same &= key_valid[:, key_pos][:, None, :]
    if visible.dim() == 2:
        visible = visible[None, None]
    return visible | same[:, None]


def attention_mask(
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    window: int | None,
    key_valid: torch.Tensor | None,
    cached: bool,
    chunk: int | None = None,
    blocks: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """The mask for one attention call, or None when plain causal attention over the new tokens
    is already exact (no cache, no padding, no window or attention chunk shorter than the new
    tokens, no image block seen both ways): then SDPA can take its causal fast path.

    `blocks` [B, positions] (image block ids, -1 for text; see `with_image_blocks`): given on
    the layers where the tokens of one image attend to each other in both directions."""
    if blocks is not None and bool((blocks[:, query_positions] >= 0).any()):
        visible = visibility_mask(query_positions, key_positions, window, key_valid, chunk)
        return with_image_blocks(
            visible, query_positions, key_positions, window, key_valid, blocks
        )
    t = query_positions.shape[0]
    narrower = (window is not None and t > window) or (chunk is not None and t > chunk)
    if cached or key_valid is not None or narrower:
        return visibility_mask(query_positions, key_positions, window, key_valid, chunk)
    return None
