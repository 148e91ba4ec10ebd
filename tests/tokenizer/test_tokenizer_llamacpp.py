"""Our encode/decode against llama.cpp's, recorded by benchmarks/make_tokenizer_fixtures.py.

Each fixture holds a few hundred texts (prose, code, whitespace runs, many scripts, emoji,
non-ASCII digits, contractions, special tokens in text, fuzz) with llama.cpp's ids for
``add_special=parse_special=True`` and ``=False``, and llama.cpp's detokenisation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from glassformer.tokenizer import Tokenizer

MODES = ["special", "plain", "detok"]


def _check(tok: Tokenizer, data: dict[str, Any], mode: str) -> None:
    failures = []
    for case in data["cases"]:
        text = case["text"]
        if mode == "special":
            got, want = tok.encode(text, add_special_tokens=True), case["special"]
        elif mode == "plain":
            got = tok.encode(text, add_special_tokens=False, parse_special=False)
            want = case["plain"]
        else:
            got, want = tok.decode(case["plain"]), case["detok"]
        if got != want:
            failures.append(f"{text[:60]!r}: want {str(want)[:80]} got {str(got)[:80]}")
    assert not failures, f"{len(failures)}/{len(data['cases'])} differ:\n" + "\n".join(
        failures[:10]
    )


def _same_file(path: Path, data: dict[str, Any]) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != data["gguf_sha256"]:
        pytest.skip(f"{path.name} differs from the file the fixture was recorded from")


@pytest.mark.parametrize("mode", MODES)
def test_smollm2_matches_llamacpp(smollm2: Tokenizer, llamacpp_fixture: Any, mode: str) -> None:
    data = llamacpp_fixture("smollm2")
    assert len(data["cases"]) > 300
    _check(smollm2, data, mode)


@pytest.mark.parametrize("mode", MODES)
def test_gemma3_matches_llamacpp(gemma3: Tokenizer, llamacpp_fixture: Any, mode: str) -> None:
    data = llamacpp_fixture("gemma3")
    assert len(data["cases"]) > 300
    _check(gemma3, data, mode)


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_vocabulary_facts_match_llamacpp(
    name: str, request: pytest.FixtureRequest, llamacpp_fixture: Any
) -> None:
    tok: Tokenizer = request.getfixturevalue(name)
    data = llamacpp_fixture(name)
    if name == "smollm2":
        _same_file(request.getfixturevalue("smollm2_path"), data)
    assert tok.vocab_size == data["vocab_size"]
    assert tok.add_bos == data["add_bos"]
    assert sorted(tok.eos_ids) == data["eog_ids"]


def test_smollm2_facts(smollm2: Tokenizer) -> None:
    assert smollm2.vocab_size == 49152
    assert smollm2.bos_id == 1 and smollm2.eos_id == 2
    assert smollm2.token_to_id("<|im_end|>") == 2
    assert smollm2.id_to_token(2) == "<|im_end|>"
    assert smollm2.token_to_id("not a token at all") is None
    assert {0, 2} <= smollm2.eos_ids
    assert smollm2.chat_template is not None and "<|im_start|>" in smollm2.chat_template
    # The smollm pre-tokenizer splits every digit, also non-ASCII ones.
    assert smollm2.encode("123", add_special_tokens=False) == [33, 34, 35]
    assert len(smollm2.encode("١٢٣", add_special_tokens=False)) == 6  # two bytes each
    with pytest.raises(IndexError):
        smollm2.id_to_token(49152)


def test_gemma3_facts(gemma3: Tokenizer) -> None:
    assert gemma3.vocab_size == 262144
    assert gemma3.bos_id == 2 and gemma3.add_bos
    assert gemma3.encode("") == [2]
    assert gemma3.encode("", add_special_tokens=False) == []
    end_of_turn = gemma3.token_to_id("<end_of_turn>")
    assert end_of_turn in gemma3.eos_ids and gemma3.eos_id in gemma3.eos_ids
    ids = gemma3.encode("<start_of_turn>user\nHi<end_of_turn>")
    assert ids[:2] == [2, gemma3.token_to_id("<start_of_turn>")]
    assert ids[-1] == end_of_turn
    # Without special parsing the control strings are plain text ...
    assert end_of_turn not in gemma3.encode("<end_of_turn>", parse_special=False)
    # ... but user-defined tokens (here a run of newlines) are always matched whole.
    assert gemma3.encode("\n\n\n", add_special_tokens=False) == [gemma3.token_to_id("\n\n\n")]
    assert gemma3.decode(ids) == "<bos><start_of_turn>user\nHi<end_of_turn>"
    assert gemma3.decode(ids, skip_special_tokens=True) == "user\nHi"
