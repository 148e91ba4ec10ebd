"""SentencePiece-style BPE: score-driven merging, safe chunking, round trips, HF agreement."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glassformer.tokenizer import Tokenizer
from glassformer.tokenizer.bpe import bpe_merge, bpe_merge_heap
from glassformer.tokenizer.sentencepiece import SPACE_MARK, SentencePieceBPE

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def merge_by_score(symbols: list[str], scores: dict[str, float]) -> list[str]:
    """SentencePiece's merge: the shared BPE loop with minus the score as the cost."""
    return bpe_merge(symbols, {t: -s for t, s in scores.items()}, joined=True)


def merge_by_score_heap(symbols: list[str], scores: dict[str, float]) -> list[str]:
    return bpe_merge_heap(symbols, {t: -s for t, s in scores.items()}, joined=True)


def test_highest_score_merges_first_and_any_pair_may_join() -> None:
    scores = {"ab": 1.0, "bc": 2.0, "abc": 0.5, "cd": 2.0}
    # (b,c) and (c,d) tie at 2.0 -> leftmost first; then "a"+"bc" is no token, "abc" needs
    # "ab"+"c" or "a"+"bc": here "a"+"bc" forms "abc" (any split may join, unlike BPE merges).
    assert merge_by_score(list("abcd"), scores) == ["abc", "d"]
    assert merge_by_score_heap(list("abcd"), scores) == ["abc", "d"]


@given(
    st.lists(st.sampled_from("abc▁"), max_size=150),
    st.dictionaries(
        st.text(st.sampled_from("abc▁"), min_size=2, max_size=4),
        st.integers(-5, 5).map(float),
        max_size=25,
    ),
)
@SETTINGS
def test_scan_and_heap_agree(symbols: list[str], scores: dict[str, float]) -> None:
    assert merge_by_score(symbols, scores) == merge_by_score_heap(symbols, scores)


def _tiny_model(extra: dict[str, float]) -> SentencePieceBPE:
    pieces = {"▁": -1.0, "a": -2.0, "b": -2.0, ">": -3.0, "▁a": -0.5, "ab": -0.7, **extra}
    vocab = {"<unk>": 0, **{f"<0x{b:02X}>": 1 + b for b in range(256)}}
    for piece in pieces:
        vocab[piece] = len(vocab)
    scores = [0.0] * len(vocab)
    for piece, score in pieces.items():
        scores[vocab[piece]] = score
    byte_ids = {b: 1 + b for b in range(256)}
    return SentencePieceBPE(vocab, scores, unk_id=0, byte_ids=byte_ids)


@given(st.text(st.sampled_from("ab> é\n"), max_size=80))
@SETTINGS
def test_cutting_where_no_token_spans_never_changes_the_result(text: str) -> None:
    # A token spanning ">▁" makes the cut before "▁" unsafe there; the model must notice it.
    model = _tiny_model({">▁a": 5.0, ">▁": 1.0})
    whole = model._encode_piece(text.replace(" ", SPACE_MARK)) if text else []
    assert model.encode_fragment(text) == whole
    assert ">▁" in model._vocab_pairs() and ">" in model._joins_space


def test_unknown_characters_fall_back_to_bytes() -> None:
    model = _tiny_model({})
    assert model.encode_fragment("é") == [1 + 0xC3, 1 + 0xA9]
    assert model.encode_fragment(" a") == [model.vocab["▁a"]]


@given(
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters=SPACE_MARK), max_size=300)
)
@SETTINGS
def test_gemma3_round_trip(gemma3: Tokenizer, text: str) -> None:
    # "▁" itself cannot round-trip: SentencePiece reads every "▁" back as a space.
    assert gemma3.decode(gemma3.encode(text, add_special_tokens=False)) == text


@given(st.text(st.sampled_from(list("ab <>/s\n\tx▁é日")), max_size=60))
@SETTINGS
def test_gemma3_chunking_is_safe(gemma3: Tokenizer, text: str) -> None:
    model = gemma3.model
    assert isinstance(model, SentencePieceBPE)
    whole = model._encode_piece(text.replace(" ", SPACE_MARK)) if text else []
    assert model.encode_fragment(text) == whole


@pytest.mark.parametrize("prepend", [False, True])
def test_hf_sentencepiece_style_tokenizer_json(tmp_path: Path, prepend: bool) -> None:
    # Llama 2 / Gemma layout: BPE with byte_fallback over "▁"-marked text, no pre-tokenizer.
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, normalizers, trainers

    hf = tokenizers.Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    steps = [normalizers.Prepend("▁")] if prepend else []
    hf.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    hf.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        + ([decoders.Strip(" ", 1, 0)] if prepend else [])
    )
    corpus = ["the cat sat on the mat", "a bat and a cat", "the the the mat  mat"] * 10
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)]],
    )
    hf.train_from_iterator(corpus, trainer)
    hf.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        '{"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true}', encoding="utf-8"
    )
    tok = Tokenizer.from_hf_dir(tmp_path)
    assert isinstance(tok.model, SentencePieceBPE)
    assert tok.bos_id == 1 and tok.add_bos
    for text in ["the cat", " the  mat ", "catbat", "héllo 日本", "</s>the<s>cat", ""]:
        want = hf.encode(text, add_special_tokens=False).ids
        assert tok.encode(text, add_special_tokens=False, parse_special=True) == want, text
        assert tok.decode(want) == hf.decode(want, skip_special_tokens=False), text
    assert tok.encode("cat")[0] == 1
