"""glassformer's own tokenizers: byte-level BPE and SentencePiece-style BPE, plus chat templates.

Everything is implemented here in Python (Hugging Face ``tokenizers`` and llama.cpp are only
references in tests and benchmarks). The output matches llama.cpp's tokenisation of the same
GGUF file token for token.

>>> tok = load_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
>>> tok.encode("Hello world")  # doctest: +SKIP
[19556, 905]
"""

from __future__ import annotations

import os
from pathlib import Path

from .chat import ChatTemplateError, render_chat_template
from .core import TokenAttr, TokenIdError, Tokenizer
from .from_gguf import read_gguf_metadata, tokenizer_from_gguf
from .from_hf import tokenizer_from_hf_dir, tokenizer_from_tokenizer_json
from .pretokenize import PRE_TOKENIZER_PATTERNS, PreTokenizer, known_pre_tokenizers

__all__ = [
    "PRE_TOKENIZER_PATTERNS",
    "ChatTemplateError",
    "PreTokenizer",
    "TokenAttr",
    "TokenIdError",
    "Tokenizer",
    "known_pre_tokenizers",
    "load_tokenizer",
    "read_gguf_metadata",
    "render_chat_template",
    "tokenizer_from_gguf",
    "tokenizer_from_hf_dir",
    "tokenizer_from_tokenizer_json",
]


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Load a tokenizer from a ``.gguf`` file, an HF model directory or a ``tokenizer.json``.

    This takes a filesystem path only; resolving model names to paths belongs to the caller.
    """
    p = Path(path)
    if p.is_dir():
        if any(p.glob("tokenizer.json")):
            return tokenizer_from_hf_dir(p)
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return tokenizer_from_gguf(ggufs[0])
        raise ValueError(f"{p}: expected tokenizer.json or exactly one .gguf file in the directory")
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    if p.suffix == ".gguf" or _is_gguf(p):
        return tokenizer_from_gguf(p)
    if p.name.endswith(".json"):
        config = p.with_name("tokenizer_config.json")
        return tokenizer_from_tokenizer_json(p, config if config.exists() else None)
    raise ValueError(f"{p}: not a .gguf file, tokenizer.json or Hugging Face directory")


def _is_gguf(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == b"GGUF"
