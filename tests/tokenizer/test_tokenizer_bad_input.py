"""Bad tokenizer files and bad ids: each case is a small valid input with one thing broken.

The cases are generated from two valid tokenizers (a GGUF file written with ``gguf``'s own
writer, and a ``tokenizer.json`` written by Hugging Face ``tokenizers``): every case
changes one field and names the error message fragment it must produce. Every error must be
a ``ValueError`` or ``TypeError`` on one line, naming the file (for files) and the field.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import pytest

from glassformer.tokenizer import Tokenizer, load_tokenizer
from glassformer.tokenizer.bpe import bytes_to_unicode

T = gguf.GGUFValueType
K = gguf.Keys.Tokenizer
BYTE_CHARS = list(bytes_to_unicode().values())
UNSET = object()  # a field to leave out of the file


# --- GGUF ------------------------------------------------------------------------------------


def _bpe_fields() -> dict[str, tuple[Any, Any]]:
    tokens = [*BYTE_CHARS, "Ġt", "he", "Ġthe", "<|im_end|>"]
    return {
        K.MODEL: ("gpt2", T.STRING),
        K.PRE: ("gpt2", T.STRING),
        K.LIST: (tokens, T.STRING),
        K.TOKEN_TYPE: ([1] * (len(tokens) - 1) + [3], T.INT32),
        K.MERGES: (["Ġ t", "h e", "Ġt he"], T.STRING),
        K.EOS_ID: (len(tokens) - 1, T.UINT32),
        K.ADD_BOS: (False, T.BOOL),
    }


def _spm_fields() -> dict[str, tuple[Any, Any]]:
    pieces = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], "▁", "a", "▁a"]
    return {
        K.MODEL: ("llama", T.STRING),
        K.LIST: (pieces, T.STRING),
        K.TOKEN_TYPE: ([2, 3, 3, *[6] * 256, 1, 1, 1], T.INT32),
        K.SCORES: ([0.0] * 259 + [-1.0, -2.0, -0.5], T.FLOAT32),
    }


def write_gguf(path: Path, fields: dict[str, tuple[Any, Any]], *, big_endian: bool = False) -> Path:
    endian = gguf.GGUFEndian.BIG if big_endian else gguf.GGUFEndian.LITTLE
    writer = gguf.GGUFWriter(str(path), arch="llama", endianess=endian)
    for key, (value, vtype) in fields.items():
        if value is UNSET:
            continue
        if isinstance(value, list):
            writer.add_key_value(key, value, T.ARRAY, sub_type=vtype)
        else:
            writer.add_key_value(key, value, vtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# (case id, base, {field: (value, type)}, expected fragment after the file name)
GGUF_CASES: list[tuple[str, str, dict[str, tuple[Any, Any]], str]] = [
    ("no model", "bpe", {K.MODEL: (UNSET, None)}, "field 'tokenizer.ggml.model' is missing"),
    ("model bert", "bpe", {K.MODEL: ("bert", T.STRING)}, "unsupported tokenizer model 'bert'"),
    ("no tokens", "bpe", {K.LIST: (UNSET, None)}, "no token list (field 'tokenizer.ggml.tokens')"),
    (
        "tokens as ints",
        "bpe",
        {K.LIST: ([1, 2, 3], T.INT32)},
        "field 'tokenizer.ggml.tokens' must be an array of strings",
    ),
    (
        "tokens a string",
        "bpe",
        {K.LIST: ("abc", T.STRING)},
        "field 'tokenizer.ggml.tokens' must be an array of strings",
    ),
    (
        "types short",
        "bpe",
        {K.TOKEN_TYPE: ([1, 1, 1], T.INT32)},
        "field 'tokenizer.ggml.token_type' has 3 entries for 260 tokens",
    ),
    (
        "type 9",
        "bpe",
        {K.TOKEN_TYPE: ([9] * 260, T.INT32)},
        "field 'tokenizer.ggml.token_type' entry 0 is 9, not a token type 0..6",
    ),
    (
        "types as strings",
        "bpe",
        {K.TOKEN_TYPE: (["x"] * 260, T.STRING)},
        "field 'tokenizer.ggml.token_type' must be an array of numbers",
    ),
    (
        "bos id past the end",
        "bpe",
        {K.BOS_ID: (99999, T.UINT32)},
        "field 'tokenizer.ggml.bos_token_id' is 99999, not a token id in 0..259",
    ),
    (
        "eos id negative",
        "bpe",
        {K.EOS_ID: (-1, T.INT32)},
        "field 'tokenizer.ggml.eos_token_id' is -1, not a token id",
    ),
    (
        "pad id a string",
        "bpe",
        {K.PAD_ID: ("2", T.STRING)},
        "field 'tokenizer.ggml.padding_token_id' is '2', not a token id",
    ),
    (
        "unk id a float",
        "bpe",
        {K.UNK_ID: (1.0, T.FLOAT32)},
        "field 'tokenizer.ggml.unknown_token_id' is 1.0, not a token id",
    ),
    ("no merges", "bpe", {K.MERGES: (UNSET, None)}, "byte-level BPE needs merges"),
    (
        "merge without space",
        "bpe",
        {K.MERGES: (["Ġt", "h e"], T.STRING)},
        "field 'tokenizer.ggml.merges' entry 0 ('Ġt') is not two tokens",
    ),
    (
        "merges as floats",
        "bpe",
        {K.MERGES: ([1.0, 2.0], T.FLOAT32)},
        "field 'tokenizer.ggml.merges' must be an array of strings",
    ),
    (
        "unknown pre",
        "bpe",
        {K.PRE: ("no-such-kind", T.STRING)},
        "unknown pre-tokenizer kind 'no-such-kind' in field 'tokenizer.ggml.pre'",
    ),
    (
        "pre an int",
        "bpe",
        {K.PRE: (3, T.UINT32)},
        "field 'tokenizer.ggml.pre' must be a string",
    ),
    (
        "add_bos an int",
        "bpe",
        {K.ADD_BOS: (1, T.UINT32)},
        "field 'tokenizer.ggml.add_bos_token' must be a bool",
    ),
    (
        "add_eos a string",
        "bpe",
        {K.ADD_EOS: ("yes", T.STRING)},
        "field 'tokenizer.ggml.add_eos_token' must be a bool",
    ),
    (
        "template an int",
        "bpe",
        {K.CHAT_TEMPLATE: (7, T.UINT32)},
        "field 'tokenizer.chat_template' must be a string",
    ),
    (
        "spm without scores",
        "spm",
        {K.SCORES: (UNSET, None)},
        "a SentencePiece tokenizer needs token scores (field 'tokenizer.ggml.scores'",
    ),
    (
        "scores short",
        "spm",
        {K.SCORES: ([0.0] * 10, T.FLOAT32)},
        "field 'tokenizer.ggml.scores' has 10 entries for 262 tokens",
    ),
    (
        "score nan",
        "spm",
        {K.SCORES: ([math.nan] * 262, T.FLOAT32)},
        "field 'tokenizer.ggml.scores' entry 0 is nan, not a token score",
    ),
    (
        "scores as strings",
        "spm",
        {K.SCORES: (["x"] * 262, T.STRING)},
        "field 'tokenizer.ggml.scores' must be an array of numbers",
    ),
    (
        "space prefix an int",
        "spm",
        {K.ADD_PREFIX: (1, T.UINT8)},
        "field 'tokenizer.ggml.add_space_prefix' must be a bool",
    ),
]

# Whole-file damage: (case id, how to damage the bytes of the valid BPE file, fragment).
GGUF_FILE_CASES: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("bad magic", lambda b: b"GGUX" + b[4:], "not a GGUF file"),
    (
        "version 1",
        lambda b: b[:4] + (1).to_bytes(4, "little") + b[8:],
        "unsupported GGUF version 1",
    ),
    ("truncated in the vocabulary", lambda b: b[: len(b) // 2], "truncated GGUF header"),
    ("header only", lambda b: b[:20], "truncated GGUF header"),
    (
        "metadata count too large",
        lambda b: b[:16] + (10**12).to_bytes(8, "little") + b[24:],
        "exceed the file size",
    ),
]


@pytest.mark.parametrize(
    ("base", "changes", "fragment"),
    [pytest.param(base, ch, frag, id=name) for name, base, ch, frag in GGUF_CASES],
)
def test_bad_gguf_tokenizer_metadata(
    tmp_path: Path, base: str, changes: dict[str, tuple[Any, Any]], fragment: str
) -> None:
    fields = {**(_bpe_fields() if base == "bpe" else _spm_fields()), **changes}
    path = write_gguf(tmp_path / "bad.gguf", fields)
    _expect_error(lambda: load_tokenizer(path), f"{path}: ", fragment)


@pytest.mark.parametrize(
    ("damage", "fragment"), [pytest.param(d, f, id=name) for name, d, f in GGUF_FILE_CASES]
)
def test_damaged_gguf_file(tmp_path: Path, damage: Callable[[bytes], bytes], fragment: str) -> None:
    good = write_gguf(tmp_path / "good.gguf", _bpe_fields())
    path = tmp_path / "bad.gguf"
    path.write_bytes(damage(good.read_bytes()))
    _expect_error(lambda: load_tokenizer(path), f"{path}: ", fragment)


def test_big_endian_gguf_is_refused_like_the_weights_loader_does(tmp_path: Path) -> None:
    from glassformer.loaders.gguf import read_header

    path = write_gguf(tmp_path / "be.gguf", _bpe_fields(), big_endian=True)
    _expect_error(lambda: read_header(path), f"{path}: ", "big-endian GGUF files")
    _expect_error(lambda: load_tokenizer(path), f"{path}: ", "big-endian GGUF files")


@pytest.mark.parametrize("base", ["bpe", "spm"])
def test_the_unbroken_gguf_bases_load(tmp_path: Path, base: str) -> None:
    fields = _bpe_fields() if base == "bpe" else _spm_fields()
    tok = load_tokenizer(write_gguf(tmp_path / "good.gguf", fields))
    assert tok.decode(tok.encode("the a", add_special_tokens=False)) == "the a"


# --- tokenizer.json ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_tokenizer_json() -> dict[str, Any]:
    """A byte-level BPE ``tokenizer.json`` as Hugging Face ``tokenizers`` writes it."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import AddedToken, decoders, models, pre_tokenizers

    vocab = {c: i for i, c in enumerate(BYTE_CHARS)}
    vocab.update({"Ġt": 256, "he": 257, "Ġthe": 258})
    hf = tokenizers.Tokenizer(
        models.BPE(vocab=vocab, merges=[("Ġ", "t"), ("h", "e"), ("Ġt", "he")])
    )
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(tokenizers.Regex(r"\d"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken("<|end|>", special=True, normalized=False)])
    return json.loads(hf.to_str())


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        data = data[int(key)] if isinstance(data, list) else data[key]
    if isinstance(data, list):
        data[int(keys[-1])] = value
    elif value is UNSET:
        del data[keys[-1]]
    else:
        data[keys[-1]] = value


# (case id, {dotted path: new value}, expected fragment after the file name)
JSON_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("no model", {"model": UNSET}, "field 'model' must be an object, got NoneType"),
    ("model a list", {"model": []}, "field 'model' must be an object, got list"),
    ("wordpiece", {"model.type": "WordPiece"}, "unsupported tokenizer model 'WordPiece'"),
    ("vocab a list", {"model.vocab": ["a"]}, "field 'model.vocab' must be an object"),
    (
        "vocab id negative",
        {"model.vocab.a": -1},
        "field \"model.vocab['a']\" is -1, not a token id",
    ),
    ("vocab id a string", {"model.vocab.a": "7"}, "is '7', not a token id"),
    ("vocab id a float", {"model.vocab.a": 7.5}, "is 7.5, not a token id"),
    ("vocab id huge", {"model.vocab.a": 10**12}, "not a token id in 0..16777215"),
    ("vocab id twice", {"model.vocab.a": 66}, "field 'model.vocab' gives id 66 to both"),
    ("merges a dict", {"model.merges": {}}, "field 'model.merges' must be a list, got dict"),
    ("merge without space", {"model.merges.0": "Ġt"}, "field 'model.merges' entry 0 ('Ġt')"),
    ("merge of ints", {"model.merges.0": [1, 2]}, "field 'model.merges' entry 0 ([1, 2])"),
    ("merge of three", {"model.merges.1": ["h", "e", "x"]}, "field 'model.merges' entry 1"),
    ("added a dict", {"added_tokens": {}}, "field 'added_tokens' must be a list, got dict"),
    ("added id missing", {"added_tokens.0.id": UNSET}, "field 'added_tokens[0].id' is None"),
    ("added id negative", {"added_tokens.0.id": -5}, "field 'added_tokens[0].id' is -5"),
    ("added content empty", {"added_tokens.0.content": ""}, "'added_tokens[0].content' must be"),
    ("added a string", {"added_tokens.0": "<|end|>"}, "field 'added_tokens[0]' must be an object"),
    (
        "split regex invalid",
        {"pre_tokenizer.pretokenizers.0.pattern.Regex": "(ab"},
        "field 'pre_tokenizer.pretokenizers[0].pattern.Regex' is not a valid regular expression",
    ),
    (
        "split regex empty",
        {"pre_tokenizer.pretokenizers.0.pattern.Regex": ""},
        "field 'pre_tokenizer.pretokenizers[0].pattern.Regex' must be a non-empty string",
    ),
    (
        "split regex a number",
        {"pre_tokenizer.pretokenizers.0.pattern.Regex": 5},
        "field 'pre_tokenizer.pretokenizers[0].pattern.Regex' must be a non-empty string",
    ),
    (
        "split pattern missing",
        {"pre_tokenizer.pretokenizers.0.pattern": UNSET},
        "field 'pre_tokenizer.pretokenizers[0].pattern' must be an object",
    ),
    (
        "split removed",
        {"pre_tokenizer.pretokenizers.0.behavior": "Removed"},
        "unsupported Split behaviour 'Removed' in field 'pre_tokenizer.pretokenizers[0]'",
    ),
    (
        "whitespace pre-tokenizer",
        {"pre_tokenizer.pretokenizers.0": {"type": "Whitespace"}},
        "unsupported pre-tokenizer 'Whitespace' in field 'pre_tokenizer.pretokenizers[0]'",
    ),
    (
        "pre-tokenizers a dict",
        {"pre_tokenizer.pretokenizers": {}},
        "field 'pre_tokenizer.pretokenizers' must be a list",
    ),
    (
        "lowercase normalizer",
        {"normalizer": {"type": "Lowercase"}},
        "unsupported normalizer 'Lowercase' in field 'normalizer'",
    ),
    (
        "normalizer a string",
        {"normalizer": "NFC"},
        "field 'normalizer' must be an object, got str",
    ),
]


@pytest.mark.parametrize(
    ("changes", "fragment"), [pytest.param(c, f, id=name) for name, c, f in JSON_CASES]
)
def test_bad_tokenizer_json(
    tmp_path: Path, good_tokenizer_json: dict[str, Any], changes: dict[str, Any], fragment: str
) -> None:
    data = json.loads(json.dumps(good_tokenizer_json))
    for dotted, value in changes.items():
        _set(data, dotted, value)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    _expect_error(lambda: load_tokenizer(path), f"{path}: ", fragment)


JSON_FILE_CASES: list[tuple[str, str, bytes, str]] = [
    ("not json", "tokenizer.json", b'{"model": ', "not valid JSON (Expecting value at line 1"),
    ("not utf-8", "tokenizer.json", b'{"a": "\xff"}', "not UTF-8 text"),
    ("a list", "tokenizer.json", b"[1, 2]", "field '(top level)' must be an object, got list"),
    ("config not json", "tokenizer_config.json", b"{,}", "not valid JSON"),
    ("config a string", "tokenizer_config.json", b'"x"', "must be an object, got str"),
]


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [pytest.param(n, c, f, id=case) for case, n, c, f in JSON_FILE_CASES],
)
def test_unreadable_hf_files(
    tmp_path: Path, good_tokenizer_json: dict[str, Any], name: str, content: bytes, fragment: str
) -> None:
    (tmp_path / "tokenizer.json").write_text(json.dumps(good_tokenizer_json), encoding="utf-8")
    (tmp_path / name).write_bytes(content)
    _expect_error(lambda: load_tokenizer(tmp_path), f"{tmp_path / name}: ", fragment)


def test_the_unbroken_tokenizer_json_loads(
    tmp_path: Path, good_tokenizer_json: dict[str, Any]
) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(good_tokenizer_json), encoding="utf-8")
    tok = load_tokenizer(path)
    assert tok.encode("the 42<|end|>", add_special_tokens=False)[-1] == 259
    assert tok.decode(tok.encode("the 42")) == "the 42"


# --- a backtracking split pattern --------------------------------------------------------------

REDOS = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    # The guard must fire well before this: the pattern needs minutes on this input.
    resource.setrlimit(resource.RLIMIT_CPU, (20, 20))
    from glassformer.tokenizer import load_tokenizer

    path = Path(sys.argv[1])
    tok = load_tokenizer(path)
    start = time.process_time()
    try:
        tok.encode("a" * 40)
    except ValueError as exc:
        print(json.dumps({"error": str(exc), "cpu_s": time.process_time() - start}))
    """
)


def test_catastrophic_split_pattern_is_stopped(
    tmp_path: Path, good_tokenizer_json: dict[str, Any]
) -> None:
    # (a|aa)+b on n letters "a" backtracks through Fibonacci(n) ways: about 10^8 on 40.
    data = json.loads(json.dumps(good_tokenizer_json))
    _set(data, "pre_tokenizer.pretokenizers.0.pattern.Regex", "(a|aa)+b")
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-c", REDOS, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    assert run.returncode == 0, run.stderr[-2000:]  # a CPU-limit kill is a failure here
    result = json.loads(run.stdout)
    field = "field 'pre_tokenizer.pretokenizers[0].pattern.Regex'"
    assert result["error"].startswith(f"{path}: {field}: split pattern '(a|aa)+b'")
    assert "catastrophic backtracking" in result["error"] and "\n" not in result["error"]
    assert result["cpu_s"] < 5


# --- ids and text ------------------------------------------------------------------------------

ID_CASES: list[tuple[str, Callable[[Tokenizer], Any], type[Exception], str]] = [
    ("decode -1", lambda t: t.decode([-1]), ValueError, "token id -1 at position 0 is outside"),
    ("decode 1.5", lambda t: t.decode([5, 1.5]), TypeError, "token id 1.5 at position 1 is not"),
    ("decode str", lambda t: t.decode(["7"]), TypeError, "token id '7' at position 0 is not"),
    ("decode bool", lambda t: t.decode([True]), TypeError, "token id True at position 0 is not"),
    ("decode past", lambda t: t.decode([260]), ValueError, "token id 260 at position 0 is outside"),
    ("decode huge", lambda t: t.decode([2**70]), ValueError, "is outside the vocabulary (0..259)"),
    ("decode None", lambda t: t.decode([None]), TypeError, "token id None at position 0 is not"),
    ("bytes -3", lambda t: t.token_bytes(-3), ValueError, "token id -3 is outside"),
    ("id_to_token", lambda t: t.id_to_token(260), IndexError, "token id 260 is outside"),
    ("is_special", lambda t: t.is_special(-1), ValueError, "token id -1 is outside"),
    ("encode bytes", lambda t: t.encode(b"the"), TypeError, "encode() needs a str, got bytes"),
    ("encode None", lambda t: t.encode(None), TypeError, "encode() needs a str, got NoneType"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return load_tokenizer(write_gguf(tmp_path_factory.mktemp("tiny") / "t.gguf", _bpe_fields()))


@pytest.mark.parametrize(
    ("call", "error", "fragment"), [pytest.param(c, e, f, id=n) for n, c, e, f in ID_CASES]
)
def test_bad_ids_and_text(
    tiny: Tokenizer, call: Callable[[Tokenizer], Any], error: type[Exception], fragment: str
) -> None:
    _expect_error(lambda: call(tiny), "", fragment, error)


def test_integer_ids_of_other_types_decode(tiny: Tokenizer) -> None:
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    ids = tiny.encode("the the")
    assert tiny.decode(np.array(ids)) == tiny.decode(torch.tensor(ids)) == "the the"
    with pytest.raises(TypeError, match="is not an integer"):
        tiny.decode(torch.tensor(ids, dtype=torch.float32))


# --- the common check -------------------------------------------------------------------------


def _expect_error(
    call: Callable[[], Any],
    prefix: str,
    fragment: str,
    error: type[Exception] | tuple[type[Exception], ...] = ValueError,
) -> None:
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(prefix), message
    assert fragment in message, message


def test_case_counts() -> None:
    # The report quotes these numbers; they also guard against cases silently vanishing.
    total = len(GGUF_CASES) + len(GGUF_FILE_CASES) + len(JSON_CASES) + len(JSON_FILE_CASES)
    assert (total, len(ID_CASES)) == (62, 12)
