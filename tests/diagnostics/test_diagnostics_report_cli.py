"""The report (JSON / PNG / HTML) and `glassformer telemetry` on a random tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from glassformer.config import Config
from glassformer.diagnostics.activations import byte_chunks, probe_text
from glassformer.diagnostics.report import analyze_model, render_html, spearman, to_json
from glassformer.model import Transformer

REQUIRED = {
    "layers",
    "spectral_ratio_mean",
    "effective_rank_min",
    "collapse_layer",
    "in_band_fraction",
}
PER_LAYER = {
    "spectral_ratio",
    "effective_rank",
    "token_cosine",
    "data_effective_rank",
    "rank1_residual",
    "residual_norm",
    "projections",
}


def cli_app() -> typer.Typer:
    from glassformer.cli import telemetry

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        pass

    telemetry.register(app)
    return app


def test_spearman() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)  # ties
    assert math.isnan(spearman([1, 2], [1, 2]))


def test_analyze_model_report_and_json() -> None:
    torch.manual_seed(0)
    model = Transformer(Config.preset("tiny")).eval()
    seqs = byte_chunks(probe_text(), model.config.vocab_size, seq_len=32, max_sequences=2)
    calls: list[tuple[str, int, int]] = []
    report = analyze_model(model, seqs, progress=lambda *a: calls.append(a))
    assert set(report) >= REQUIRED
    assert set(report["layers"][0]) >= PER_LAYER
    assert set(report["layers"][0]["projections"]) == {"q", "k", "v", "o", "gate", "up", "down"}
    assert {"predicted_collapse_layer", "measured_collapse_layer", "spearman_erank"} <= set(
        report["prediction"]
    )
    stages = {c[0] for c in calls}
    assert len(stages) == 3 and all(done <= total for _, done, total in calls)
    report["layers"][0]["condition_number"] = math.inf  # JSON has no inf: written as null
    parsed = json.loads(to_json(report))
    assert parsed["layers"][0]["condition_number"] is None
    html = render_html(report, b"\x89PNG fake")
    assert "<table>" in html and "data:image/png;base64," in html


def test_cli_json_png_html(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png, page = tmp_path / "t.png", tmp_path / "t.html"
    result = CliRunner().invoke(
        cli_app(),
        [
            "telemetry",
            "tiny",
            "--json",
            "--png",
            str(png),
            "--html",
            str(page),
            "--seq-len",
            "32",
            "--sequences",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= REQUIRED
    assert len(report["layers"]) == 4 and set(report["layers"][0]) >= PER_LAYER
    assert report["model"].startswith("tiny (random init")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "<table>" in page.read_text()


def test_cli_table_weight_only_and_errors() -> None:
    runner = CliRunner()
    result = runner.invoke(cli_app(), ["telemetry", "tiny-gemma3", "--no-data", "--no-projections"])
    assert result.exit_code == 0, result.output
    assert "spectral ratio mean" in result.stdout
    bad = runner.invoke(cli_app(), ["telemetry", "no-such-model-xyz"])
    assert bad.exit_code == 2
    assert "unknown model" in bad.output
    bad_moe = runner.invoke(cli_app(), ["telemetry", "tiny", "--moe", "max"])
    assert bad_moe.exit_code != 0


def test_command_is_registered() -> None:
    from glassformer.cli import COMMAND_MODULES

    assert "glassformer.cli.telemetry" in COMMAND_MODULES
    help_ = CliRunner().invoke(cli_app(), ["telemetry", "--help"])
    assert help_.exit_code == 0 and "--html" in help_.stdout and "--png" in help_.stdout
