"""The building blocks of a decoder-only Transformer, one idea per module.

norms (LayerNorm, RMSNorm), rope (rotary positions and their scaling), attention (multi-head,
grouped-query, multi-query; sliding windows, soft-capping, QK-norm), mla (DeepSeek's multi-head
latent attention), mlp (GELU MLP and gated GLU variants), moe (routed and shared experts),
block (how they are wired around the residual stream), kv_cache (static decoding cache) and
mtp (DeepSeek-V3's multi-token prediction).
"""
