"""Pre-tokenizer patterns against HF ``tokenizers``' pre-tokenizers (Oniguruma regexes)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glassformer.tokenizer import PreTokenizer, known_pre_tokenizers
from glassformer.tokenizer.bpe import to_byte_level
from glassformer.tokenizer.pretokenize import (
    GPT2_PATTERN,
    LLAMA3_PATTERN,
    PRE_TOKENIZER_PATTERNS,
    QWEN2_PATTERN,
    pre_tokenizer_for,
)

pre_tokenizers = pytest.importorskip("tokenizers.pre_tokenizers")
from tokenizers import Regex  # noqa: E402

# Assigned characters only: engines built on different Unicode versions may classify new
# code points differently.
TEXT = st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=80) | st.text(
    st.sampled_from(list("aZ 09١٢\n\r\t'sSlLdD.,!?-_é日😀\u00a0\u3000")), max_size=60
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _isolated(pattern: str) -> Any:
    return pre_tokenizers.Split(Regex(pattern), behavior="isolated")


def _hf_pieces(pre: Any, text: str) -> list[str]:
    return [piece for piece, _ in pre.pre_tokenize_str(text)]


HF_EQUIVALENTS = {
    "gpt2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    "smollm": lambda: pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    ),
    "llama-bpe": lambda: pre_tokenizers.Sequence(
        [
            _isolated(LLAMA3_PATTERN),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    ),
    "qwen2": lambda: pre_tokenizers.Sequence(
        [
            _isolated(QWEN2_PATTERN),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    ),
    "default": lambda: pre_tokenizers.Sequence(
        [_isolated(p) for p in PRE_TOKENIZER_PATTERNS["default"]]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    ),
}


@pytest.mark.parametrize("kind", sorted(HF_EQUIVALENTS))
def test_pre_tokenizer_matches_hf(kind: str) -> None:
    ours = pre_tokenizer_for(kind)
    hf = HF_EQUIVALENTS[kind]()

    @given(TEXT)
    @SETTINGS
    def check(text: str) -> None:
        pieces = ours.split(text)
        assert "".join(pieces) == text
        assert [to_byte_level(p) for p in pieces] == _hf_pieces(hf, text)

    check()


@given(TEXT)
@SETTINGS
def test_fused_smollm_pattern_equals_the_chain(text: str) -> None:
    # PreTokenizer runs the digit-then-GPT-2 chain as one fused regex; stage by stage it is:
    chain = PreTokenizer([r"\p{N}"]).split(text)
    staged = [p for piece in chain for p in PreTokenizer([GPT2_PATTERN]).split(piece)]
    assert pre_tokenizer_for("smollm").split(text) == staged


def test_digits_split_first_so_spaces_end_their_piece() -> None:
    smollm = pre_tokenizer_for("smollm")
    assert smollm.split("a   1") == ["a", "   ", "1"]
    assert smollm.split("x 123 ١٢") == ["x", " ", "1", "2", "3", " ", "١", "٢"]
    assert pre_tokenizer_for("gpt2").split("a   1") == ["a", "  ", " 1"]


def test_llama3_keeps_contractions_case_sensitive_like_llamacpp() -> None:
    llama3 = pre_tokenizer_for("llama-bpe")
    assert llama3.split("I'LL don't") == ["I", "'LL", " don", "'t"]
    # llama.cpp spells the cases out; (?i:) would also fold the long s into 's'.
    assert llama3.split("'ſ") == ["'ſ"]
    assert llama3.split("12345") == ["123", "45"]


def test_known_kinds_and_empty_chain() -> None:
    kinds = known_pre_tokenizers()
    for kind in ("default", "gpt2", "smollm", "llama-bpe", "qwen2"):
        assert kind in kinds
    assert PreTokenizer([]).split("a b") == ["a b"]
    assert PreTokenizer([GPT2_PATTERN]).split("") == []
