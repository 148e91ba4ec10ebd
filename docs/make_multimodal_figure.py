"""Writes docs/img/multimodal-paths.png: the two image paths (encoder-free Gemma 4 12B, SigLIP
into Gemma 3 12B) as block diagrams, and one 896 x 896 image's prefill cost through each, from
the explorer's cost model (`glassformer.explorer.multimodal`).

    python docs/make_multimodal_figure.py [--hardware h100-sxm] [--out FILE]
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

import glassformer as gf
from glassformer.explorer.multimodal import image_cost, siglip_image_cost

FREE = [
    "896x896 image -> 768x768\n256 merged 48-px patches (6912 values each)",
    "LayerNorm -> Dense 6912x3840 -> LayerNorm",
    "+ T[x] + T[y] (factorised 2D table) -> LayerNorm",
    "RMSNorm -> Linear 3840x3840",
    "decoder: 48 layers, 256 image tokens\n(both ways within the image on sliding layers)",
]
SIGLIP = [
    "896x896 image\n4096 14-px patches",
    "SigLIP ViT: 27 layers x 1152\n(16 heads over all 4096 patches, MLP 4304)",
    "4x4 average pool -> 256 tokens",
    "RMSNorm -> Linear 1152x3840",
    "decoder: 48 layers, 256 image tokens",
]


def column(ax, x: float, boxes: list[str], title: str, colour: str) -> None:
    ax.text(x, 0.97, title, ha="center", va="top", fontsize=11, weight="bold")
    ys = [0.82 - i * 0.18 for i in range(len(boxes))]
    for i, (y, label) in enumerate(zip(ys, boxes, strict=True)):
        ax.add_patch(
            FancyBboxPatch(
                (x - 0.22, y - 0.06),
                0.44,
                0.12,
                boxstyle="round,pad=0.01",
                fc=colour if 0 < i < len(boxes) - 1 else "#eeeeee",
                ec="k",
            )
        )
        ax.text(x, y, label, ha="center", va="center", fontsize=7.5)
        if i:
            ax.annotate(
                "", (x, y + 0.065), (x, ys[i - 1] - 0.065), arrowprops=dict(arrowstyle="->")
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hardware", default="h100-sxm")
    parser.add_argument("--out", default="docs/img/multimodal-paths.png")
    args = parser.parse_args()
    free = image_cost(gf.Config.preset("gemma-4-12b"), 896, 896, hardware=args.hardware)
    siglip = siglip_image_cost(gf.Config.preset("gemma-3-12b"), hardware=args.hardware)
    fig, (diagram, bars) = plt.subplots(1, 2, figsize=(13, 5.2), width_ratios=[1.5, 1])
    diagram.set_axis_off()
    column(diagram, 0.25, FREE, "Gemma 4 12B: encoder-free", "#cfe8cf")
    column(diagram, 0.75, SIGLIP, "Gemma 3 12B: SigLIP encoder", "#f3d3c4")
    names = ["encoder-free\n(Gemma 4 12B)", "SigLIP\n(Gemma 3 12B)"]
    enc = [c["encoder"]["flops"] / 1e12 for c in (free, siglip)]
    dec = [c["decoder"]["flops_executed"] / 1e12 for c in (free, siglip)]
    bars.bar(names, dec, color="#9bb8d3", label="decoder prefill (256 tokens)")
    bars.bar(names, enc, bottom=dec, color="#e39b7b", label="encoder / embedder")
    for i, c in enumerate((free, siglip)):
        bars.text(
            i,
            enc[i] + dec[i] + 0.2,
            f"TTFT {c['ttft_s'] * 1e3:.1f} ms\n{c['encoder']['params'] / 1e6:.0f}M encoder params",
            ha="center",
            fontsize=9,
        )
    bars.set_ylabel("prefill TFLOPs for one 896x896 image")
    bars.set_ylim(0, max(e + d for e, d in zip(enc, dec, strict=True)) * 1.3)
    bars.set_title(f"one image, bf16, {args.hardware} (explorer cost model)")
    bars.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
