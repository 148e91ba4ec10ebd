"""`glassformer importance`: scores as JSON, the heat map, bad options refused."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from glassformer.cli import app
from glassformer.compression.importance import Scores


def test_importance_json_plot_and_scores_file(tmp_path) -> None:
    png, out = tmp_path / "heads.png", tmp_path / "scores.json"
    args = ["importance", "tiny", "--tokens", "64", "--seq-len", "32", "--json"]
    result = CliRunner().invoke(app, [*args, "--plot", str(png), "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tokens"] == 64 and len(data["heads"]) == 4 and len(data["heads"][0]) == 4
    assert len(data["layers"]) == 4 and len(data["embedding"]) == 128
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = Scores.from_json(out)
    assert saved.heads.shape == (4, 4) and saved.meta["seq_len"] == 32


def test_importance_refuses_unknown_measures() -> None:
    result = CliRunner().invoke(app, ["importance", "tiny", "--measures", "heads,spleen"])
    assert result.exit_code == 2
    assert "--measures" in result.output
