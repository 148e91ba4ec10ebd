"""BPE tokenizer training: the incremental trainer against a naive one, and the written
tokenizer.json against HF `tokenizers` and HF `transformers` (same ids, same text)."""

from __future__ import annotations

import json
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from glassformer.training.bpe_trainer import (
    DEFAULT_SPECIAL_TOKENS,
    count_pretokens,
    train_bpe,
    train_tokenizer,
)

SAMPLES = [
    "Hello world! It's a test, isn't it? We'll see: they've 42 apples & 7 pears.",
    "def f(x):\n    return x ** 2  # square\n\n\n\tindented\twith tabs\r\nwindows line",
    "Ünïcödé: naïve café, 日本語のテキスト, emoji 😀🎉, Ελληνικά, русский текст",
    "    leading spaces and trailing   ",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>",
    "numbers 1234567890 3.14159 -273.15 1e-9 0xFF",
    "<|endoftext|>text after a document break<|pad|>",
    "  \n \n\n   x",
    "",
]


def naive_bpe(word_counts: dict[str, int], n_symbols: int) -> list[tuple[int, int]]:
    """Recount every pair after every merge (the textbook loop), same tie-break."""
    words = {tuple(w.encode("utf-8")): c for w, c in word_counts.items()}
    texts = [bytes([b]) for b in range(256)]
    ids = {t: i for i, t in enumerate(texts)}
    merges = []
    while len(texts) < n_symbols:
        counts: Counter[tuple[int, int]] = Counter()
        for w, c in words.items():
            for p in pairwise(w):
                counts[p] += c
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] < 2:
            break
        joined = texts[best[0]] + texts[best[1]]
        new = ids.get(joined)
        if new is None:
            new = ids[joined] = len(texts)
            texts.append(joined)
        merges.append(best)
        merged: dict[tuple[int, ...], int] = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + c
        words = merged
    return merges


def _corpus() -> list[str]:
    from glassformer.training.data import default_corpus

    out, n = [], 0
    for doc in default_corpus():
        out.append(doc.text)
        n += len(doc.text)
        if n > 150_000:
            return out
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    path, result = train_tokenizer(_corpus(), 1024, out)
    assert len(result.vocab) == 1024
    return path


def test_incremental_trainer_equals_naive_recount() -> None:
    text = " ".join(_corpus())[:20_000]
    counts = count_pretokens([text])
    result = train_bpe(counts, 256 + 150, special_tokens=[])
    # Map the merges back to ids of the naive trainer's numbering (bytes first, then new).
    from glassformer.tokenizer.bpe import byte_decoder

    dec = byte_decoder()
    ids = {bytes([b]): b for b in range(256)}
    got = []
    for a, b in result.merges:
        ba, bb = bytes(dec[c] for c in a), bytes(dec[c] for c in b)
        got.append((ids[ba], ids[bb]))
        ids.setdefault(ba + bb, len(ids))
    assert got == naive_bpe(dict(counts), 256 + 150)


def test_vocabulary_layout(trained: Path) -> None:
    data = json.loads(trained.read_text())
    vocab = data["model"]["vocab"]
    assert sorted(vocab.values()) == list(range(1024))
    assert [t["content"] for t in data["added_tokens"]] == list(DEFAULT_SPECIAL_TOKENS)
    assert all(vocab[t] == i for i, t in enumerate(DEFAULT_SPECIAL_TOKENS))
    # every merge's parts and result are in the vocabulary
    for a, b in data["model"]["merges"]:
        assert a in vocab and b in vocab and a + b in vocab


def test_hf_tokenizers_encode_identically(trained: Path) -> None:
    from tokenizers import Tokenizer as HFTokenizer

    from glassformer.tokenizer import Tokenizer

    hf = HFTokenizer.from_file(str(trained))
    ours = Tokenizer.from_tokenizer_json(trained, trained.with_name("tokenizer_config.json"))
    texts = [*SAMPLES, *(doc[:3000] for doc in _corpus()[:40])]
    for text in texts:
        ids = hf.encode(text).ids
        assert ours.encode(text) == ids, text[:80]
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=False) == text
    assert ours.vocab_size == hf.get_vocab_size() == 1024
    assert ours.eos_id == hf.token_to_id("<|endoftext|>") == 0


def test_hf_transformers_loads_it_with_chat_template(trained: Path) -> None:
    from transformers import AutoTokenizer

    from glassformer.tokenizer import load_tokenizer

    hf = AutoTokenizer.from_pretrained(str(trained.parent))
    ours = load_tokenizer(trained.parent)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    text = hf.apply_chat_template(messages, tokenize=False)
    assert text == ours.apply_chat_template(messages, add_generation_prompt=False)
    assert hf.encode(text, add_special_tokens=True) == ours.encode(text)
    assert hf.eos_token == "<|endoftext|>"


def test_too_small_vocab_is_rejected() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe({"ab": 3}, 100)


def test_special_tokens_in_text_do_not_feed_merges() -> None:
    counts = count_pretokens(["<|endoftext|><|endoftext|><|endoftext|>abc"])
    assert "endoftext" not in counts and counts["abc"] == 1
