"""Special tokens in text: the partition equals llama.cpp's fragment algorithm, and special
strings are tokens by default (HF ``tokenizers``, llama.cpp ``special=True``)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glassformer.tokenizer import Tokenizer
from glassformer.tokenizer.core import TokenAttr, _SpecialSplitter

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPECIALS = ["<a>", "a>", "<a", "<<", "aa", ">", "<a><", "  ", "\ue000x"]


def _splitter(flags: list[int]) -> _SpecialSplitter:
    attrs = [TokenAttr.CONTROL | TokenAttr(f) for f in flags]
    items = [(t, i, a) for i, (t, a) in enumerate(zip(SPECIALS, attrs, strict=True))]
    items.sort(key=lambda item: -len(item[0].encode()))
    return _SpecialSplitter(items)


@given(
    st.text(st.sampled_from(list("<>a b\n\ue000x")), max_size=40),
    st.lists(
        st.sampled_from([0, int(TokenAttr.LSTRIP), int(TokenAttr.RSTRIP), 384]),
        min_size=len(SPECIALS),
        max_size=len(SPECIALS),
    ),
)
@SETTINGS
def test_fast_partition_equals_reference(text: str, flags: list[int]) -> None:
    splitter = _splitter(flags)
    assert splitter.split(text) == splitter.split_reference(text)


def test_longest_special_string_is_searched_first() -> None:
    splitter = _splitter([0] * len(SPECIALS))
    ids = {t: i for i, t in enumerate(SPECIALS)}
    # "<a><" (longest) is taken first, although "<a>" starts at the same place.
    assert splitter.split("x<a><y") == ["x", ids["<a><"], "y"]
    # One token after another, not leftmost-longest: "<a>" claims its text before "<<" is
    # searched, although "<<" starts further left.
    assert splitter.split("<<a>") == ["<", ids["<a>"]]
    assert splitter.split("no specials") == ["no specials"]
    assert splitter.split("") == []


def test_strip_flags_eat_neighbouring_ascii_whitespace() -> None:
    flags = [0] * len(SPECIALS)
    flags[SPECIALS.index("<a>")] = int(TokenAttr.LSTRIP | TokenAttr.RSTRIP)
    splitter = _splitter(flags)
    assert splitter.split("x \t<a>\n y") == ["x", 0, "y"]
    assert splitter.split("x\u00a0<a>") == ["x\u00a0", 0]  # C isspace() is ASCII-only


# --- the convention: special-token strings are tokens unless the caller opts out -----------

CHATML = "<|im_start|>user\nWhat's up?<|im_end|>"


def _hf_ids(hf: Any, text: str, split_special_tokens: bool) -> list[int]:
    # tokenizers' encode_special_tokens is transformers' split_special_tokens.
    hf.encode_special_tokens = split_special_tokens
    try:
        return hf.encode(text, add_special_tokens=False).ids
    finally:
        hf.encode_special_tokens = False


def test_chatml_markers_are_tokens_without_bos_eos(smollm2: Tokenizer, hf_smollm2: Any) -> None:
    ids = smollm2.encode(CHATML, add_special_tokens=False)
    assert ids == _hf_ids(hf_smollm2, CHATML, False) and len(ids) == 8
    assert ids[0] == smollm2.token_to_id("<|im_start|>") and ids[-1] == smollm2.eos_id
    plain = smollm2.encode(CHATML, add_special_tokens=False, parse_special=False)
    assert plain == _hf_ids(hf_smollm2, CHATML, True) and len(plain) == 19


def test_smollm2_special_parsing_matches_hf_tokenizers(
    smollm2: Tokenizer, hf_smollm2: Any, llamacpp_fixture: Any
) -> None:
    texts = [case["text"] for case in llamacpp_fixture("smollm2")["cases"]]
    assert sum("<|" in t for t in texts) >= 10  # the corpus holds special strings in text
    for text in texts:
        assert smollm2.encode(text, add_special_tokens=False) == _hf_ids(hf_smollm2, text, False)
        assert smollm2.encode(text, parse_special=False) == _hf_ids(hf_smollm2, text, True)


def test_gemma3_special_parsing_matches_llamacpp(gemma3: Tokenizer, llamacpp_fixture: Any) -> None:
    # llama.cpp's tokenize(text, add_special=True, parse_special=True), recorded, without BOS:
    # add_special_tokens decides BOS only, special strings are tokens either way.
    cases = llamacpp_fixture("gemma3")["cases"]
    assert sum("<start_of_turn>" in c["text"] for c in cases) >= 5
    for case in cases:
        want = case["special"]
        assert want[0] == gemma3.bos_id
        assert gemma3.encode(case["text"], add_special_tokens=False) == want[1:], case["text"]


def test_load_tokenizer_is_a_top_level_name(smollm2_path: Any) -> None:
    import glassformer
    import glassformer.tokenizer

    assert glassformer.load_tokenizer is glassformer.tokenizer.load_tokenizer
    assert "load_tokenizer" in glassformer.__all__
    assert glassformer.load_tokenizer(smollm2_path).encode(CHATML)[-1] == 2
