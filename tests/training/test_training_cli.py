"""The command line: help everywhere, tokenizer training, data preparation, plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glassformer.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [["train"], ["finetune"], ["plot"], ["data", "prepare"], ["tokenizer", "train"], ["data"]],
)
def test_help(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_tokenizer_train_and_data_prepare(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    tok = tmp_path / "tok"
    args = f"tokenizer train {corpus} --vocab-size 300 --out {tok} --json"
    result = runner.invoke(app, args.split())
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["vocab_size"] <= 300 and (tmp_path / "tok" / "tokenizer.json").exists()
    data = tmp_path / "data"
    args = f"data prepare {corpus} --out {data} --tokenizer {tok} --json"
    result = runner.invoke(app, args.split())
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["splits"]["train"]["tokens"] > 0 and manifest["dtype"] == "uint16"


def test_train_json_then_plot(tmp_path: Path, tiny_data: Path) -> None:
    out = tmp_path / "run"
    args = (
        f"train --data {tiny_data} --out {out} --seq-len 32 --batch-size 4 --max-steps 6 "
        "--eval-every 3 --eval-batches 1 --sample-tokens 4 --checkpoint-every 3 --no-progress "
        "--json --set n_layers=2 --schedule wsd --threads 1"
    )
    result = runner.invoke(app, args.split())
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["steps"] == 6
    assert json.loads((out / "config.json").read_text())["n_layers"] == 2
    assert (out / "final" / "model.safetensors").exists()
    assert (out / "final" / "tokenizer.json").exists()
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert summary["threads"] == 1
    # train draws the curves itself; `plot` draws them again
    assert summary["plot"] == str(out / "curves.png")
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(app, ["plot", str(out), "-o", str(out / "again.png")])
    assert result.exit_code == 0, result.output
    png = out / "again.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the exported model loads back through the library's own loader
    from glassformer.generation import load

    model, tok = load(out / "final")
    assert model.config.n_layers == 2 and tok.vocab_size == model.config.vocab_size
    # the same command again would start a second run beside the first: one error line
    result = runner.invoke(app, args.split())
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "--force" in result.output


def test_plot_without_metrics_fails_cleanly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plot", str(tmp_path)])
    assert result.exit_code == 2
