"""Loading: GGUF metadata (the loader's header reader vs gguf.GGUFReader), clear errors,
llama.cpp's defaults."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gguf
import pytest

from glassformer.tokenizer import Tokenizer, load_tokenizer, read_gguf_metadata
from glassformer.tokenizer.bpe import bytes_to_unicode

BYTE_CHARS = list(bytes_to_unicode().values())


def write_gguf(path: Path, tokenizer: dict[str, Any] | None = None, **extra: Any) -> Path:
    """A tensor-less GGUF file holding the given tokenizer fields, written by gguf's writer."""
    writer = gguf.GGUFWriter(str(path), arch="llama")
    tok = tokenizer or {}
    if "model" in tok:
        writer.add_tokenizer_model(tok["model"])
    if "pre" in tok:
        writer.add_tokenizer_pre(tok["pre"])
    if "tokens" in tok:
        writer.add_token_list(tok["tokens"])
    if "types" in tok:
        writer.add_token_types(tok["types"])
    if "merges" in tok:
        writer.add_token_merges(tok["merges"])
    if "scores" in tok:
        writer.add_token_scores(tok["scores"])
    for key, value in extra.items():
        name = key.replace("__", ".")
        if isinstance(value, bool):
            writer.add_bool(name, value)
        elif isinstance(value, int):
            writer.add_uint32(name, value)
        elif isinstance(value, float):
            writer.add_float32(name, value)
        elif isinstance(value, str):
            writer.add_string(name, value)
        else:
            writer.add_array(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tiny_bpe(pre: str = "gpt2", extra_tokens: tuple[str, ...] = ()) -> dict[str, Any]:
    tokens = [*BYTE_CHARS, "Ġt", "he", "Ġthe", "<|im_end|>", "<|eot_id|>", *extra_tokens]
    types = [1] * len(tokens)
    types[tokens.index("<|im_end|>")] = 4  # user-defined, but llama.cpp promotes it
    return {
        "model": "gpt2",
        "pre": pre,
        "tokens": tokens,
        "types": types,
        "merges": ["Ġ t", "h e", "Ġt he"],
    }


def test_fast_reader_matches_gguf_reader(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "kv.gguf",
        tiny_bpe(),
        test__flag=True,
        test__count=7,
        test__ratio=0.25,
        test__name="ünïcode ✓",
        test__floats=[0.5, -1.25, 3.0],
        test__ints=[1, 2, 3],
    )
    ours = read_gguf_metadata(path)
    reader = gguf.GGUFReader(path)
    ref = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert ours.keys() == ref.keys()
    for key, value in ref.items():
        if isinstance(value, float):
            assert math.isclose(ours[key], value), key
        else:
            assert ours[key] == value, key
    assert ours["test.name"] == "ünïcode ✓" and ours["test.flag"] is True


def test_tiny_byte_level_vocabulary(tmp_path: Path) -> None:
    tok = Tokenizer.from_gguf(write_gguf(tmp_path / "t.gguf", tiny_bpe()))
    the = tok.token_to_id("Ġthe")
    assert tok.encode(" the he", add_special_tokens=False) == [the, tok.token_to_id("Ġ"), 257]
    assert tok.decode([the]) == " the"
    assert tok.bos_id == 11 and not tok.add_bos  # llama.cpp's defaults without metadata
    # "<|im_end|>" is user-defined in the file, llama.cpp makes it a control token: it is
    # then matched in text only with special parsing, and it ends generation.
    im_end = tok.token_to_id("<|im_end|>")
    assert im_end in tok.eos_ids and tok.token_to_id("<|eot_id|>") in tok.eos_ids
    assert tok.encode("<|im_end|>") == [im_end]
    assert tok.encode("<|im_end|>", add_special_tokens=False) == [im_end]
    assert im_end not in tok.encode("<|im_end|>", parse_special=False)


def test_llama3_kind_ignores_merges_and_adds_bos(tmp_path: Path) -> None:
    spec = tiny_bpe(pre="llama-bpe", extra_tokens=("abc",))
    tok = Tokenizer.from_gguf(write_gguf(tmp_path / "l3.gguf", spec))
    assert tok.encode("abc", add_special_tokens=False) == [tok.token_to_id("abc")]
    assert tok.add_bos and tok.encode("abc")[0] == 11
    plain = Tokenizer.from_gguf(write_gguf(tmp_path / "g2.gguf", tiny_bpe(extra_tokens=("abc",))))
    assert plain.encode("abc", add_special_tokens=False) == [plain.token_to_id(c) for c in "abc"]


def test_sentencepiece_vocabulary_defaults(tmp_path: Path) -> None:
    pieces = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], "▁", "a", "▁a"]
    types = [2, 3, 3, *[6] * 256, 1, 1, 1]
    scores = [0.0] * 259 + [-1.0, -2.0, -0.5]
    spec = {"model": "llama", "tokens": pieces, "types": types, "scores": scores}
    tok = Tokenizer.from_gguf(write_gguf(tmp_path / "spm.gguf", spec))
    # llama.cpp: BOS 1, EOS 2, UNK 0, add BOS, and a space before text that starts the input.
    assert (tok.bos_id, tok.eos_id, tok.unk_id, tok.add_bos) == (1, 2, 0, True)
    assert tok.encode("a") == [1, pieces.index("▁a")]
    assert tok.encode("é", add_special_tokens=False) == [
        pieces.index("▁"),
        pieces.index("<0xC3>"),
        pieces.index("<0xA9>"),
    ]
    # The prefix space is dropped from the first token only (llama.cpp, HF's Strip decoder);
    # after a visible BOS it stays. Skipping BOS drops it from the first text token (HF).
    assert tok.decode(tok.encode("a a")) == "<s> a a"
    assert tok.decode(tok.encode("a a", add_special_tokens=False)) == "a a"
    assert tok.decode(tok.encode("a a"), skip_special_tokens=True) == "a a"


def test_missing_tokenizer_metadata_is_a_clear_error(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "weights_only.gguf")
    with pytest.raises(ValueError, match=r"weights_only\.gguf.*tokenizer\.ggml\.model"):
        Tokenizer.from_gguf(path)


def test_unknown_pre_tokenizer_is_a_clear_error(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "odd.gguf", tiny_bpe(pre="no-such-kind"))
    with pytest.raises(ValueError, match=r"odd\.gguf.*'no-such-kind'.*tokenizer\.ggml\.pre"):
        load_tokenizer(path)


def test_unsupported_model_and_bad_files(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "bert.gguf", {"model": "bert", "tokens": ["[CLS]"]})
    with pytest.raises(ValueError, match=r"bert\.gguf.*'bert'.*tokenizer\.ggml\.model"):
        load_tokenizer(path)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    with pytest.raises(ValueError, match=r"junk\.gguf"):
        load_tokenizer(junk)
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        load_tokenizer(tmp_path / "empty")


def test_load_tokenizer_accepts_a_directory_with_one_gguf(tmp_path: Path) -> None:
    write_gguf(tmp_path / "model.gguf", tiny_bpe())
    assert load_tokenizer(tmp_path).vocab_size == len(tiny_bpe()["tokens"])


def test_smollm2_metadata(smollm2_path: Path) -> None:
    meta = read_gguf_metadata(smollm2_path)
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "smollm"
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert len(meta["tokenizer.ggml.tokens"]) == 49152


def test_metadata_straight_from_the_weights_loader(tmp_path: Path) -> None:
    # read_header keeps long numeric arrays (types, scores) as NumPy arrays; the builder
    # takes them as they come, so a caller holding a header need not read the file twice.
    from glassformer.loaders.gguf import read_header
    from glassformer.tokenizer.from_gguf import tokenizer_from_gguf_metadata

    pieces = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], "▁", "a", "▁a"]
    types = [2, 3, 3, *[6] * 256, 1, 1, 1]
    scores = [0.0] * 259 + [-1.0, -2.0, -0.5]
    spec = {"model": "llama", "tokens": pieces, "types": types, "scores": scores}
    path = write_gguf(tmp_path / "spm.gguf", spec)
    meta = read_header(path).metadata
    assert hasattr(meta["tokenizer.ggml.scores"], "dtype")
    tok = tokenizer_from_gguf_metadata(meta, source=str(path))
    ref = Tokenizer.from_gguf(path)
    for text in ("a a", "é a", "<s>a"):
        assert tok.encode(text) == ref.encode(text)
