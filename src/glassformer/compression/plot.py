"""Heat maps of head scores: layers down, heads across, one panel per head measure."""

from __future__ import annotations

import os
from pathlib import Path

from glassformer.compression.importance import Scores

PANELS = (
    ("heads", "gradient importance |dL/dxi|", "viridis"),
    ("head_confidence", "confidence (mean max weight)", "magma"),
    ("head_entropy", "attention entropy (nats)", "cividis"),
)


def plot_heads(scores: Scores, path: str | os.PathLike[str], title: str = "") -> Path:
    """Write a PNG with a layers x heads heat map of each head measure present in `scores`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(getattr(scores, k), label, cmap) for k, label, cmap in PANELS]
    panels = [p for p in panels if p[0] is not None]
    if not panels:
        raise ValueError("plot: the scores have no head measure")
    n_layers, n_heads = panels[0][0].shape
    width = min(4 + 0.45 * n_heads, 9)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(width * len(panels), 1.5 + 0.28 * n_layers), squeeze=False
    )
    for ax, (values, label, cmap) in zip(axes[0], panels, strict=True):
        image = ax.imshow(values.numpy(), aspect="auto", cmap=cmap, interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(n_heads))
        fig.colorbar(image, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
