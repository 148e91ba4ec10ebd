"""Compression: measuring what a trained Transformer does not need, and removing it.

prune.py      structured pruning: heads, MLP neurons, expert channels, whole layers
export.py     a pruned model as a model directory (safetensors + GGUF)
"""
