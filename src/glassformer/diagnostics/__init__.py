"""Spectral telemetry and rank-collapse diagnostics.

- `lyapunov`: the weight-only "1:1 rule" analysis (spectral ratio rho_l, covariance recursion
  C_{l+1} = A_l C_l A_l^T / ||.||_2, effective rank, collapse layer);
- `activations`: rank collapse measured on a real forward pass (token cosine, rank-1 residual,
  effective rank, residual-stream norm);
- `weightwatcher_metrics`: per-matrix spectral metrics (stable rank, log spectral norm,
  power-law alpha with KS-chosen xmin);
- `spectral`: block power iteration, norms of matrix products without forming them;
- `report`: everything together, JSON / PNG / HTML;
- `callback`: `telemetry_snapshot`, `TelemetryCallback` for training, the balance regulariser.

See docs/telemetry.md.
"""

from glassformer.diagnostics.activations import (
    activation_analysis,
    encode_chunks,
    probe_text,
    projection_metrics,
    representation_measures,
)
from glassformer.diagnostics.callback import (
    BalanceRegularizer,
    TelemetryCallback,
    balance_loss,
    probe_sequences,
    telemetry_snapshot,
)
from glassformer.diagnostics.lyapunov import (
    WeightAnalysis,
    lyapunov_recursion,
    spectral_ratios,
    spectrum_stats,
    weight_analysis,
)
from glassformer.diagnostics.report import analyze_model, plot_report, render_html, to_json
from glassformer.diagnostics.spectral import (
    matrix_spectral_norm,
    product_spectral_norm,
    top_singular_value,
)
from glassformer.diagnostics.weightwatcher_metrics import fit_power_law, matrix_metrics

__all__ = [
    "BalanceRegularizer",
    "TelemetryCallback",
    "WeightAnalysis",
    "activation_analysis",
    "analyze_model",
    "balance_loss",
    "encode_chunks",
    "fit_power_law",
    "lyapunov_recursion",
    "matrix_metrics",
    "matrix_spectral_norm",
    "plot_report",
    "probe_sequences",
    "probe_text",
    "product_spectral_norm",
    "projection_metrics",
    "render_html",
    "representation_measures",
    "spectral_ratios",
    "spectrum_stats",
    "telemetry_snapshot",
    "to_json",
    "top_singular_value",
    "weight_analysis",
]
