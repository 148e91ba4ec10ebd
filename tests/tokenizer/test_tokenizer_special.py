"""The special-token partition: the fast path equals llama.cpp's fragment algorithm."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
