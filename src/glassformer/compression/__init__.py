"""Compression: measuring what a trained Transformer does not need, and removing it.

Importance measures (each module opens with its definition and paper), all gathered in one pass
over a calibration set by `importance.compute_importance` into a `Scores`:

    head_gradient.py       attention heads, |dL/dxi_h| of a head mask (Michel et al. 2019)
    head_entropy.py        attention heads, entropy of their attention rows
    head_confidence.py     attention heads, mean maximum attention weight (Voita et al. 2019)
    neurons.py             MLP neurons and expert channels, activation-weighted magnitude
                           (Minitron 2024, Wanda 2023)
    experts.py             whole experts, routing frequency and gate mass
    block_influence.py     whole layers, 1 - cos(x_in, x_out) (ShortGPT 2024)
    embedding_channels.py  residual-stream channels, normalised activation size (Minitron 2024)
    head_mask.py           a multiplier per head on the attention output, as a forward hook
    calibration.py         calibration token windows from the default training corpus
    plot.py                layers x heads heat maps of the head measures

Removal:

    prune.py      structured pruning: heads, MLP neurons, expert channels, whole layers
    heal.py       healing by distillation from the unpruned model
    export.py     a pruned model as a model directory (safetensors + GGUF)
"""
