"""One telemetry report: the weight-only 1:1-rule analysis, the data-driven rank-collapse
measures and weightwatcher metrics, side by side, as JSON, PNG and HTML.

`analyze_model` runs the three analyses (see `lyapunov.py`, `activations.py`,
`weightwatcher_metrics.py` for the equations) and compares the weight-only prediction with the
measurement:

- predicted collapse layer: the first layer whose erank(C_l) < threshold (the study's rule);
- measured collapse layer: the first layer whose data erank (the same entropy rank, of the
  token Gram matrix of a real forward pass) < the same threshold;
- `spearman_erank`: Spearman rank correlation over layers between the predicted erank(C_l)
  and the measured data erank (does the recursion at least get the *shape* right?);
- `spearman_ratio_cosine`: between |log rho_l| (distance from the 1:1 balance) and the
  measured token cosine (does imbalance go with more aligned tokens?).
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glassformer.diagnostics.lyapunov import (
    DEFAULT_BAND,
    DEFAULT_ERANK_THRESHOLD,
    AttentionChoice,
    MoEChoice,
    weight_analysis,
)

Progress = Callable[[str, int, int], None]  # (stage, done, total)

DATA_KEYS = {  # data-driven measure -> per-layer key in the report
    "token_cosine": "token_cosine",
    "rank1_residual": "rank1_residual",
    "effective_rank": "data_effective_rank",
    "effective_rank_centered": "data_effective_rank_centered",
    "residual_norm": "residual_norm",
}


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan if undefined."""
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return math.nan

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2.0
            i = j + 1
        return r

    rx, ry = ranks([a for a, _ in pairs]), ranks([b for _, b in pairs])
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else math.nan


def _first_below(values: Sequence[float], threshold: float) -> int | None:
    for i, v in enumerate(values):
        if v < threshold:
            return i
    return None


def analyze_model(
    model: nn.Module,
    sequences: Sequence[Sequence[int]] | None = None,
    *,
    name: str | None = None,
    projections: bool = True,
    erank_threshold: float = DEFAULT_ERANK_THRESHOLD,
    band: tuple[float, float] = DEFAULT_BAND,
    moe: MoEChoice = "mean",
    attention: AttentionChoice = "study",
    fold_norms: bool = False,
    skip_first: int = 1,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The full telemetry report of `model` (a glassformer `Transformer`).

    `sequences`: token ids for the data-driven measures (None: weight-only report);
    `projections`: add weightwatcher metrics of every projection (the slowest part).
    """
    n_layers = len(model.layers)
    timings: dict[str, float] = {}

    def tick(stage: str, total: int) -> Callable[[int], None] | None:
        if progress is None:
            return None
        progress(stage, 0, total)
        return lambda i: progress(stage, i + 1, total)

    t0 = time.perf_counter()
    wa = weight_analysis(
        model,
        erank_threshold=erank_threshold,
        band=band,
        moe=moe,
        attention=attention,
        fold_norms=fold_norms,
        progress=tick("weight-only (1:1 rule)", n_layers),
    )
    timings["weight_analysis_s"] = time.perf_counter() - t0
    layers = [
        {k: v for k, v in vars(row).items() if k != "lambda_max_unnormalised"}
        | {"growth": row.lambda_max_unnormalised}
        for row in wa.layers
    ]
    report: dict[str, Any] = {
        "model": name or getattr(getattr(model, "config", None), "name", "model"),
        "d_model": wa.d_model,
        "n_layers": n_layers,
        "layers": layers,
        **wa.summary(),
        "conventions": wa.conventions,
    }

    if sequences is not None:
        from glassformer.diagnostics.activations import activation_analysis

        t0 = time.perf_counter()
        data = activation_analysis(
            model,
            sequences,
            skip_first=skip_first,
            progress=tick("forward passes (data)", len(sequences)),
        )
        timings["activation_analysis_s"] = time.perf_counter() - t0
        for row, measured in zip(layers, data["layers"], strict=True):
            for key, out_key in DATA_KEYS.items():
                row[out_key] = measured[key]
        data_erank = [row["data_effective_rank"] for row in layers]
        cosine = [row["token_cosine"] for row in layers]
        report["data"] = {
            "embed": {DATA_KEYS[k]: v for k, v in data["embed"].items()},
            "n_sequences": data["n_sequences"],
            "n_tokens": data["n_tokens"],
            "skip_first": data["skip_first"],
            "effective_rank_min": min(data_erank),
            "effective_rank_centered_min": min(r["data_effective_rank_centered"] for r in layers),
            "token_cosine_max": max(cosine),
            "token_cosine_final": cosine[-1],
            "rank1_residual_min": min(r["rank1_residual"] for r in layers),
            "collapse_layer": _first_below(data_erank, erank_threshold),
        }
        predicted, measured_layer = wa.collapse_layer, report["data"]["collapse_layer"]
        report["prediction"] = {
            "predicted_collapse_layer": predicted,
            "measured_collapse_layer": measured_layer,
            "collapse_agrees": (predicted is None) == (measured_layer is None),
            "spearman_erank": spearman([r.effective_rank for r in wa.layers], data_erank),
            "spearman_ratio_cosine": spearman(
                [
                    abs(math.log(r.spectral_ratio)) if r.spectral_ratio > 0 else math.inf
                    for r in wa.layers
                ],
                cosine,
            ),
        }

    if projections:
        from glassformer.diagnostics.activations import projection_metrics

        t0 = time.perf_counter()
        proj = projection_metrics(model, progress=tick("weightwatcher metrics", n_layers))
        timings["projection_metrics_s"] = time.perf_counter() - t0
        for row, p in zip(layers, proj, strict=True):
            row["projections"] = p
        alphas = [m["alpha"] for p in proj for m in p.values() if math.isfinite(m["alpha"])]
        report["alpha_mean"] = sum(alphas) / len(alphas) if alphas else math.nan
    report["timings"] = timings
    return report


def _clean(obj: Any) -> Any:
    """JSON has no inf/nan: write them as null (and tensors as floats)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def to_json(report: dict[str, Any], indent: int | None = 2) -> str:
    import json

    return json.dumps(_clean(report), indent=indent)


# --- plots ---------------------------------------------------------------------------------------
def plot_report(report: dict[str, Any], path: str | Path | None = None) -> bytes:
    """Ratio per layer (0.5-2 band shaded), erank per layer, token cosine per layer; PNG bytes.

    Written to `path` when given. Needs matplotlib (Agg backend; no display).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report["layers"]
    x = [r["layer"] for r in layers]
    has_data = "token_cosine" in layers[0]
    n_panels = 3 if has_data else 2
    fig, axes = plt.subplots(n_panels, 1, figsize=(7.5, 2.6 * n_panels), sharex=True)
    lo, hi = report.get("band", DEFAULT_BAND)

    def plot(ax: Any, key: str, style: str, color: str, label: str) -> None:
        """One per-layer measure of the report as a line over the layers."""
        ax.plot(x, [r[key] for r in layers], style, ms=3, color=color, label=label)

    ax = axes[0]
    ax.axhspan(lo, hi, color="tab:green", alpha=0.15, label=f"safe band [{lo:g}, {hi:g}]")
    ax.axhline(1.0, color="tab:green", lw=0.8, ls=":")
    ratio_label = r"$\rho_l = \|W_{mlp}\|_2 / \|W_{attn}\|_2$"
    plot(ax, "spectral_ratio", "o-", "tab:blue", ratio_label)
    ax.set_yscale("log")
    ax.set_ylabel("spectral ratio")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"{report.get('model', '')}: spectral telemetry", fontsize=10)

    ax = axes[1]
    plot(ax, "effective_rank", "o-", "tab:red", r"weight-only erank($C_{l+1}$)")
    if has_data:
        plot(ax, "data_effective_rank", "s-", "tab:purple", "data erank (tokens)")
        plot(ax, "data_effective_rank_centered", "^--", "tab:gray", "data erank (centred)")
    ax.axhline(
        report.get("erank_threshold", DEFAULT_ERANK_THRESHOLD),
        color="k",
        lw=0.8,
        ls=":",
        label="collapse threshold",
    )
    ax.set_yscale("log")
    ax.set_ylabel("effective rank")
    ax.legend(loc="best", fontsize=8)

    if has_data:
        ax = axes[2]
        plot(ax, "token_cosine", "o-", "tab:orange", "mean pairwise token cosine")
        residual_label = r"$\|X - 1\bar{x}^T\|_F / \|X\|_F$"
        plot(ax, "rank1_residual", "s--", "tab:brown", residual_label)
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("token alignment")
        ax.legend(loc="best", fontsize=8)
    axes[-1].set_xlabel("layer (0-based)")
    from matplotlib.ticker import MaxNLocator

    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    png = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(png)
    return png


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
    return html.escape(str(v))


def render_html(report: dict[str, Any], png: bytes | None = None) -> str:
    """A self-contained HTML page: summary, the plot (inline PNG) and the per-layer table."""
    summary_keys = [
        "spectral_ratio_mean",
        "spectral_ratio_median",
        "in_band_fraction",
        "effective_rank_min",
        "collapse_layer",
        "A_spectral_norm_mean",
        "alpha_mean",
    ]
    rows = [(k, report.get(k)) for k in summary_keys if k in report]
    for section in ("data", "prediction"):
        for k, v in report.get(section, {}).items():
            if not isinstance(v, dict):
                rows.append((f"{section}.{k}", v))
    summary = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in rows)
    cols = [
        "layer",
        "spectral_ratio",
        "in_band",
        "mlp_spectral_norm",
        "attn_spectral_norm",
        "A_spectral_norm",
        "effective_rank",
        "participation_ratio",
        "condition_number",
        "data_effective_rank",
        "data_effective_rank_centered",
        "token_cosine",
        "rank1_residual",
        "residual_norm",
    ]
    cols = [c for c in cols if c in report["layers"][0]]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='{'bad' if c == 'in_band' and not r[c] else ''}'>{_fmt(r[c])}</td>"
            for c in cols
        )
        + "</tr>"
        for r in report["layers"]
    )
    proj = ""
    if "projections" in report["layers"][0]:
        names = list(report["layers"][0]["projections"])
        phead = "".join(f"<th>{html.escape(n)} &alpha; / &sigma;<sub>1</sub></th>" for n in names)
        pbody = "".join(
            f"<tr><td>{r['layer']}</td>"
            + "".join(
                f"<td>{_fmt(r['projections'][n]['alpha'])} / "
                f"{_fmt(r['projections'][n]['spectral_norm'])}</td>"
                for n in names
            )
            + "</tr>"
            for r in report["layers"]
        )
        proj = (
            "<h2>Projections (weightwatcher metrics)</h2><table><tr><th>layer</th>"
            f"{phead}</tr>{pbody}</table>"
        )
    img = ""
    if png:
        data = base64.b64encode(png).decode()
        img = f"<img alt='telemetry plot' src='data:image/png;base64,{data}'>"
    title = html.escape(f"glassformer telemetry: {report.get('model', '')}")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}
td.bad {{ background: #fde2e2; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{title}</h1>
<p>Weight-only analysis after the "1:1 rule" (rho = ||W_mlp||_2 / ||W_attn||_2, safe band
0.5&ndash;2, Lyapunov covariance recursion C<sub>l+1</sub> = A C A<sup>T</sup> / ||.||), with the
rank-collapse measures of a real forward pass beside it. See docs/telemetry.md.</p>
<table>{summary}</table>
{img}
<h2>Layers</h2><table><tr>{head}</tr>{body}</table>
{proj}
</body></html>
"""


def write_html(report: dict[str, Any], path: str | Path, png: bytes | None = None) -> None:
    if png is None:
        try:
            png = plot_report(report)
        except ImportError:
            png = None
    Path(path).write_text(render_html(report, png))
