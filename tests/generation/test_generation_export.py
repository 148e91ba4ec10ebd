"""`glassformer export --hf`: HF transformers loads the directory and gives the same logits."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import glassformer as gf
from glassformer.cli import app

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("preset", ["tiny-mixtral", "tiny-gemma3", "tiny-deepseek-v3"])
def test_export_of_an_hf_directory_round_trips(tmp_path, preset: str) -> None:
    torch.manual_seed(0)
    model = gf.Transformer(gf.Config.preset(preset)).eval()
    src = tmp_path / "src"
    gf.to_hf(model).save_pretrained(src)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["export", str(src), "--hf", str(out), "--max-shard-size", "1MB", "--json"]
    )
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert any(f.endswith("model.safetensors.index.json") for f in files)  # sharded
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 40))
    with torch.no_grad():
        assert (hf(ids).logits - model(ids)).abs().max() <= 1e-4


@pytest.mark.slow
def test_export_of_the_real_smollm2_gguf(tmp_path) -> None:
    from glassformer.loaders.resolve import ModelNotInstalledError

    try:
        model, _ = gf.load("smollm2-135m-instruct")
    except ModelNotInstalledError as err:
        pytest.skip(str(err))
    result = CliRunner().invoke(app, ["export", "smollm2-135m-instruct", "--hf", str(tmp_path)])
    assert result.exit_code == 0, result.output
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 4093, 198, 19556, 905, 30]])
    with torch.no_grad():
        assert (hf(ids).logits - model(ids)).abs().max() <= 1e-3
