"""A generated corpus of hostile model files: GGUF, safetensors and config.json.

Each case is built here by code (GGUFs with `gguf.GGUFWriter`, then header fields patched in
place to lie; safetensors headers and config.json files written by hand) and carries the
substrings its error must contain. Every case must end in one `ValueError`-family exception
whose message is one line and names the file, within bounded memory and time: all cases run in
one child process under `resource.setrlimit` (address space and CPU time) with a per-case
alarm, so a regression that allocates gigabytes or loops over a claimed 2**32 layers fails the
case instead of hanging CI. A few cases check the command line as well (one `error:` line,
exit code 2), and the cases that describe a huge but consistent model (a config.json alone
with 10**9 layers) must succeed, quickly: the explorer and `info` use closed forms.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MEMORY_LIMIT = 3 * 2**30  # address space of the child (importing torch maps ~0.7 GiB)
CASE_SECONDS = 20  # per-case alarm; every case takes well under a second when healthy

# A 2-layer Llama (zero-initialised weights are enough for header checks; load cases get
# small random ones so that decoding runs).
D, LAYERS, HEADS, KV, FF, VOCAB = 32, 2, 4, 2, 64, 97


@dataclass
class Case:
    name: str
    call: str  # what the child runs on `path` (see `_run_case`)
    path: str
    expect: list[str] = field(default_factory=list)  # substrings of the one-line error
    ok: bool = False  # a valid (if huge) input that must succeed within the limits
    args: list[str] = field(default_factory=list)


# --- GGUF ------------------------------------------------------------------------------------


def write_gguf(
    path: Path,
    kv: dict[str, tuple[str, Any]] | None = None,
    drop: tuple[str, ...] = (),
    tokenizer_tokens: int | None = None,
    nan_in: str | None = None,
) -> Path:
    """A valid tiny llama GGUF; `kv` overrides metadata: key -> (writer method, value)."""
    import gguf

    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    meta: dict[str, tuple[str, Any]] = {
        "general.name": ("add_string", "hostile"),
        "llama.block_count": ("add_uint32", LAYERS),
        "llama.context_length": ("add_uint32", 128),
        "llama.embedding_length": ("add_uint32", D),
        "llama.feed_forward_length": ("add_uint32", FF),
        "llama.attention.head_count": ("add_uint32", HEADS),
        "llama.attention.head_count_kv": ("add_uint32", KV),
        "llama.attention.layer_norm_rms_epsilon": ("add_float32", 1e-5),
        "llama.rope.freq_base": ("add_float32", 10000.0),
    }
    meta.update(kv or {})
    for key, (method, value) in meta.items():
        if key not in drop:
            getattr(writer, method)(key, value)
    if tokenizer_tokens is not None:
        tokens = [chr(0x100 + i) if i >= 94 else chr(33 + i) for i in range(tokenizer_tokens)]
        tokens[-1] = '!"'
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_types([1] * tokenizer_tokens)
        writer.add_token_merges(['! "'])  # "!" + '"' -> the last token
    hd = D // HEADS

    def tensor(name: str, *shape: int) -> None:
        w = rng.standard_normal(shape).astype(np.float32) * 0.02
        if name == nan_in:
            w.flat[3] = np.nan
        writer.add_tensor(name, w)

    tensor("token_embd.weight", VOCAB, D)
    tensor("output_norm.weight", D)
    tensor("output.weight", VOCAB, D)
    for i in range(LAYERS):
        p = f"blk.{i}."
        tensor(p + "attn_norm.weight", D)
        tensor(p + "attn_q.weight", HEADS * hd, D)
        tensor(p + "attn_k.weight", KV * hd, D)
        tensor(p + "attn_v.weight", KV * hd, D)
        tensor(p + "attn_output.weight", D, HEADS * hd)
        tensor(p + "ffn_norm.weight", D)
        tensor(p + "ffn_gate.weight", FF, D)
        tensor(p + "ffn_up.weight", FF, D)
        tensor(p + "ffn_down.weight", D, FF)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _find_record(data: bytes, name: str) -> int:
    """Byte offset just past a length-prefixed string `name` (a key or a tensor name)."""
    needle = struct.pack("<Q", len(name)) + name.encode()
    at = data.find(needle)
    assert at >= 0, name
    return at + len(needle)


def patch_tensor(path: Path, name: str, **changes: int | list[int]) -> Path:
    """Rewrite a tensor-info record in place: n_dims, ne (list), ggml_type or offset."""
    data = bytearray(path.read_bytes())
    pos = _find_record(bytes(data), name)
    (n_dims,) = struct.unpack_from("<I", data, pos)
    if "n_dims" in changes:
        struct.pack_into("<I", data, pos, changes["n_dims"])
    if "ne" in changes:
        for i, d in enumerate(changes["ne"]):  # type: ignore[arg-type]
            struct.pack_into("<Q", data, pos + 4 + 8 * i, d)
    type_at = pos + 4 + 8 * n_dims
    if "ggml_type" in changes:
        struct.pack_into("<I", data, type_at, changes["ggml_type"])
    if "offset" in changes:
        struct.pack_into("<Q", data, type_at + 4, changes["offset"])
    path.write_bytes(bytes(data))
    return path


def tensor_offset(path: Path, name: str) -> int:
    data = path.read_bytes()
    pos = _find_record(data, name)
    (n_dims,) = struct.unpack_from("<I", data, pos)
    return struct.unpack_from("<Q", data, pos + 4 + 8 * n_dims + 4)[0]


def patch_bytes(path: Path, at: int, fmt: str, value: Any) -> Path:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, at, value)
    path.write_bytes(bytes(data))
    return path


def gguf_cases(tmp: Path) -> list[Case]:
    cases: list[Case] = []

    def new(name: str, **kw: Any) -> Path:
        return write_gguf(tmp / f"{name}.gguf", **kw)

    def add(name: str, path: Path, *expect: str, call: str = "gguf_config") -> None:
        cases.append(Case(f"gguf/{name}", call, str(path), list(expect)))

    add(
        "block_count_1e7",
        new("bc7", kv={"llama.block_count": ("add_uint32", 10**7)}),
        "block_count = 10000000",
        "holds only",
    )
    add(
        "block_count_2e32",
        new("bc32", kv={"llama.block_count": ("add_uint32", 2**32 - 1)}),
        "block_count = 4294967295",
    )
    add(
        "block_count_u64",
        new("bc64", kv={"llama.block_count": ("add_uint64", 2**62)}),
        "block_count",
    )
    add(
        "block_count_1e7_load",
        new("bc7l", kv={"llama.block_count": ("add_uint32", 10**7)}),
        "block_count = 10000000",
        call="gguf_load",
    )
    add(
        "block_count_too_few",
        new("bc1", kv={"llama.block_count": ("add_uint32", 1)}),
        "block_count = 1",
        "block 1",
    )
    add("block_count_zero", new("bc0", kv={"llama.block_count": ("add_uint32", 0)}), "block_count")
    add(
        "block_count_string",
        new("bcs", kv={"llama.block_count": ("add_string", "2")}),
        "llama.block_count",
        "should be int",
    )
    add(
        "block_count_float",
        new("bcf", kv={"llama.block_count": ("add_float32", 2.0)}),
        "llama.block_count",
    )
    add("block_count_missing", new("bcm", drop=("llama.block_count",)), "llama.block_count")
    add(
        "head_count_zero",
        new("hc0", kv={"llama.attention.head_count": ("add_uint32", 0)}),
        "head_count",
    )
    add("head_count_5", new("hc5", kv={"llama.attention.head_count": ("add_uint32", 5)}), "n_heads")
    add(
        "rope_base_inf",
        new("rinf", kv={"llama.rope.freq_base": ("add_float32", math.inf)}),
        "rope_theta",
        "finite",
    )
    add(
        "rope_base_nan",
        new("rnan", kv={"llama.rope.freq_base": ("add_float32", math.nan)}),
        "rope_theta",
        "finite",
    )
    add(
        "eps_negative",
        new("eps", kv={"llama.attention.layer_norm_rms_epsilon": ("add_float32", -1.0)}),
        "norm_eps",
    )
    add(
        "embedding_length_string",
        new("els", kv={"llama.embedding_length": ("add_string", "32")}),
        "llama.embedding_length",
    )
    add(
        "vocab_size_lies",
        new("voc", kv={"llama.vocab_size": ("add_uint32", 1000)}),
        "token_embd.weight",
        "shape",
    )
    add(
        "context_length_string",
        new("ctx", kv={"llama.context_length": ("add_string", "big")}),
        "llama.context_length",
    )

    add(
        "alignment_3",
        new("al3", kv={"general.alignment": ("add_uint32", 3)}),
        "general.alignment",
    )
    add(
        "vocab_size_string",
        new("vs", kv={"llama.vocab_size": ("add_string", "97")}),
        "llama.vocab_size",
    )

    # header structure
    p = new("magic")
    add("bad_magic", patch_bytes(p, 0, "4s", b"GGUX"), "not a GGUF file")
    add("version_99", patch_bytes(new("ver"), 4, "<I", 99), "unsupported GGUF version")
    add("big_endian", patch_bytes(new("be"), 4, ">I", 3), "big-endian")
    add("n_tensors_huge", patch_bytes(new("nt"), 8, "<Q", 2**63), "exceed the file size")
    add("n_kv_huge", patch_bytes(new("nkv"), 16, "<Q", 2**60), "exceed the file size")
    add("n_tensors_short", patch_bytes(new("nt2"), 8, "<Q", 3), "block_count = 2")
    p = new("strlen")
    at = _find_record(p.read_bytes(), "general.name") + 4  # past the value type
    add("string_longer_than_file", patch_bytes(p, at, "<Q", 2**40), "truncated GGUF header")
    p = new("strneg")
    add("key_length_2e64", patch_bytes(p, 24, "<Q", 2**64 - 1), "truncated GGUF header")
    p = new("vtype")
    at = _find_record(p.read_bytes(), "general.name")
    add("unknown_value_type", patch_bytes(p, at, "<I", 99), "unknown value type 99")
    p = new("arr", kv={"tokenizer.ggml.scores": ("add_array", [0.5, 0.25, 0.125])})
    at = _find_record(p.read_bytes(), "tokenizer.ggml.scores") + 8  # type, element type
    add("array_count_huge", patch_bytes(p, at, "<Q", 2**61), "truncated GGUF header")
    p = new("arrtype", kv={"tokenizer.ggml.scores": ("add_array", [0.5, 0.25, 0.125])})
    at = _find_record(p.read_bytes(), "tokenizer.ggml.scores") + 4
    add("array_element_type", patch_bytes(p, at, "<I", 42), "unsupported element type 42")
    p = new("utf8")
    at = _find_record(p.read_bytes(), "general.name") + 12
    add("string_not_utf8", patch_bytes(p, at, "2s", b"\xff\xfe"), "not valid UTF-8")

    # tensor-info records that lie
    add("tensor_n_dims_7", patch_tensor(new("nd"), "output_norm.weight", n_dims=7), "7 dimensions")
    add(
        "tensor_dim_zero",
        patch_tensor(new("dz"), "output_norm.weight", ne=[0]),
        "zero or negative dimension",
    )
    add(
        "tensor_dim_minus_one",
        patch_tensor(new("dm"), "output_norm.weight", ne=[2**64 - 1]),
        "output_norm.weight",
    )
    add(
        "tensor_dims_huge",
        patch_tensor(new("dh"), "token_embd.weight", ne=[2**32, 2**31]),
        "truncated GGUF data",
        "token_embd.weight",
    )
    add(
        "tensor_shape_transposed",
        patch_tensor(new("dt"), "token_embd.weight", ne=[VOCAB, D]),
        "token_embd.weight",
        "shape",
    )
    add(
        "tensor_offset_past_eof",
        patch_tensor(new("off"), "output.weight", offset=2**40),
        "truncated GGUF data",
        "output.weight",
    )
    add(
        "tensor_offset_misaligned",
        patch_tensor(new("mis"), "output.weight", offset=1),
        "not aligned",
    )
    p = new("ovl")
    add(
        "tensors_overlap",
        patch_tensor(p, "output.weight", offset=tensor_offset(p, "token_embd.weight")),
        "overlap",
    )
    add(
        "tensor_type_unknown",
        patch_tensor(new("ty"), "output_norm.weight", ggml_type=999),
        "unknown ggml type id 999",
    )
    add(
        "tensor_type_block_mismatch",
        patch_tensor(new("tq"), "output_norm.weight", ggml_type=12),  # Q4_K: rows of 256
        "output_norm.weight",
        "not a multiple",
    )
    add(
        "tensor_type_relabelled",  # F32 data declared F16: half the bytes, a hole after
        patch_tensor(new("f16"), "output_norm.weight", ggml_type=1),
        "corrupt GGUF layout",
        "output.weight",
    )
    add(
        "tensor_dim_halved",
        patch_tensor(new("half"), "blk.0.ffn_up.weight", ne=[D, FF // 2]),
        "corrupt GGUF layout",
    )
    p = new("dup")
    data = p.read_bytes().replace(b"blk.1.ffn_up.weight", b"blk.0.ffn_up.weight")
    p.write_bytes(data)
    add("tensor_name_twice", p, "appears twice")
    p = new("trunc")
    p.write_bytes(p.read_bytes()[: p.stat().st_size - 1000])
    add("file_truncated", p, "truncated GGUF data", call="gguf_load")
    add(
        "weights_nan",
        new("nan", nan_in="blk.1.ffn_up.weight"),
        "inf/NaN",
        "blk.1.ffn_up.weight",
        call="gguf_load",
    )
    add(
        "tokenizer_larger_than_embedding",
        new("tok", tokenizer_tokens=VOCAB + 20),
        "tokenizer has 117 tokens",
        "97 rows",
        call="load",
    )
    # consistent files with claims nothing should be sized by: they must load and generate
    for name, kw in (
        ("context_length_2e62", {"kv": {"llama.context_length": ("add_uint64", 2**62)}}),
        ("tokenizer_smaller_than_embedding", {}),
    ):
        path = new(name, tokenizer_tokens=60, **kw)
        cases.append(Case(f"gguf/{name}", "generate", str(path), ok=True))
    return cases


# --- safetensors -----------------------------------------------------------------------------


def write_st(path: Path, header: Any, data: bytes = b"", length: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def st_cases(tmp: Path) -> list[Case]:
    cases: list[Case] = []
    t = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    ok_data = bytes(16)

    def add(name: str, header: Any, *expect: str, data: bytes = ok_data, **kw: Any) -> None:
        path = write_st(tmp / f"{name}.safetensors", header, data, **kw)
        cases.append(Case(f"safetensors/{name}", "st_load", str(path), list(expect)))

    add("header_length_past_eof", {"w": t}, "truncated safetensors header", length=10**6)
    add("header_length_2e63", {"w": t}, "corrupt safetensors header length", length=2**63)
    add("header_not_json", b"{nope", "not JSON")
    add("header_not_utf8", b"\xff\xfe\xfd", "not JSON")
    add("header_is_list", [1, 2], "not a JSON object")
    add("metadata_not_object", {"__metadata__": [1], "w": t}, "__metadata__")
    add("unknown_dtype", {"w": {**t, "dtype": "F33"}}, "unknown dtype 'F33'")
    add("dtype_not_string", {"w": {**t, "dtype": 4}}, "unknown dtype")
    add("dtype_list", {"w": {**t, "dtype": ["F32"]}}, "unknown dtype")
    add("offsets_floats", {"w": {**t, "data_offsets": [0.0, 16.0]}}, "bad data_offsets")
    add("offsets_one", {"w": {**t, "data_offsets": [16]}}, "bad data_offsets")
    add("shape_bytes_mismatch", {"w": {**t, "shape": [2, 3]}}, "needs 24 bytes")
    add("negative_dim", {"w": {**t, "shape": [-2, -2]}}, "bad shape")
    add("shape_string", {"w": {**t, "shape": ["2", 2]}}, "bad shape")
    add("shape_huge", {"w": {**t, "shape": [2**40, 2**40]}}, "needs")
    add("offsets_reversed", {"w": {**t, "data_offsets": [16, 0]}}, "bad data_offsets")
    add("offsets_bool", {"w": {**t, "data_offsets": [False, True]}}, "bad data_offsets")
    add(
        "offsets_past_data",
        {"w": {**t, "shape": [4, 4], "data_offsets": [0, 64]}},
        "truncated safetensors data",
    )
    add(
        "offsets_huge",
        {"w": {**t, "shape": [2**30, 2**30], "data_offsets": [0, 2**62]}},
        "truncated safetensors data",
    )
    add("tensors_overlap", {"a": t, "b": t}, "overlaps")
    add("gap_between", {"a": {**t, "data_offsets": [16, 32]}}, "gap", data=bytes(32))
    add("bytes_after_last", {"a": t}, "after the last tensor", data=bytes(40))
    add("entry_extra_key", {"w": {**t, "sharding": 1}}, "malformed header entry")
    add("entry_not_object", {"w": [1, 2]}, "malformed header entry")
    return cases


# --- config.json and HF directories ------------------------------------------------------------

VALID_LLAMA = {
    "model_type": "llama",
    "vocab_size": VOCAB,
    "hidden_size": D,
    "intermediate_size": FF,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}


def hf_dir(tmp: Path, name: str, config: Any, raw: bytes | None = None, nan: bool = False) -> Path:
    """An HF directory with the valid 2-layer weights and the given config.json."""
    from glassformer.config import Config
    from glassformer.hf.weights import ours_to_hf
    from glassformer.loaders.safetensors_io import write_hf_dir
    from glassformer.model import Transformer

    directory = tmp / name
    model = Transformer(Config.from_hf(VALID_LLAMA))
    state = model.state_dict()
    if nan:
        state["layers.1.mlp.up_proj.weight"][3, 4] = float("nan")
    write_hf_dir(directory, VALID_LLAMA, ours_to_hf(model.config, state))
    text = raw if raw is not None else json.dumps(config).encode()
    (directory / "config.json").write_bytes(text)
    return directory


def config_cases(tmp: Path) -> list[Case]:
    cases: list[Case] = []

    def add(
        name: str,
        change: dict[str, Any] | None,
        *expect: str,
        raw: bytes | None = None,
        call: str = "hf_dir",
    ) -> None:
        config = {**VALID_LLAMA, **(change or {})}
        directory = hf_dir(tmp, name, config, raw)
        path = directory if call == "hf_dir" else directory / "config.json"
        cases.append(Case(f"config/{name}", call, str(path), list(expect)))

    add("json_list", None, "expected a JSON object", raw=b"[1, 2, 3]")
    add("json_list_config_only", None, "expected a JSON object", raw=b"[1]", call="hf_config")
    add("not_json", None, "not valid JSON", raw=b"{model_type: llama")
    add("not_utf8", None, "not valid JSON", raw=b"\xff\xfe{}")
    add("tie_string_false", {"tie_word_embeddings": "false"}, "tie_word_embeddings", "boolean")
    add("tie_number", {"tie_word_embeddings": 0}, "tie_word_embeddings", "boolean")
    add("rope_theta_inf", {"rope_theta": math.inf}, "rope_theta", "finite")
    add("rope_theta_nan", {"rope_theta": math.nan}, "rope_theta", "finite")
    add(
        "rope_parameters_inf",
        {"rope_parameters": {"rope_type": "default", "rope_theta": math.inf}, "rope_theta": None},
        "rope_theta",
        "finite",
    )
    add(
        "rope_scaling_factor_zero", {"rope_scaling": {"rope_type": "linear", "factor": 0}}, "factor"
    )
    add(
        "rope_scaling_factor_string",
        {"rope_scaling": {"rope_type": "linear", "factor": "2"}},
        "factor",
    )
    add("heads_zero", {"num_attention_heads": 0}, "num_attention_heads", "positive integer")
    add("heads_negative", {"num_attention_heads": -4}, "num_attention_heads")
    add("hidden_size_string", {"hidden_size": "32"}, "hidden_size", "positive integer")
    add("hidden_size_float", {"hidden_size": 32.0}, "hidden_size")
    add("layers_bool", {"num_hidden_layers": True}, "num_hidden_layers")
    add("vocab_negative", {"vocab_size": -5}, "vocab_size")
    add("eps_nan", {"rms_norm_eps": math.nan}, "rms_norm_eps", "finite")
    add("eps_negative", {"rms_norm_eps": -1e-5}, "norm_eps")
    add("unknown_key", {"attention_chunk_size": 8}, "attention_chunk_size")
    add("model_type_unknown", {"model_type": "bert"}, "model_type")
    add(
        "layers_1e9_with_weights",
        {"num_hidden_layers": 10**9},
        "num_hidden_layers = 1000000000",
        "tensors",
    )
    add("layers_3_with_2_in_weights", {"num_hidden_layers": 3}, "layer 2")
    add("hidden_size_mismatch", {"hidden_size": 64, "num_attention_heads": 4}, "64")
    add("vocab_mismatch", {"vocab_size": 500}, "500")
    directory = hf_dir(tmp, "weights_nan", VALID_LLAMA, nan=True)
    cases.append(Case("config/weights_nan", "hf_dir", str(directory), ["inf/NaN", "up_proj"]))
    return cases


def huge_config_cases(tmp: Path) -> list[Case]:
    """Consistent configs of absurd size, without weights: info and explore must answer
    within the limits (closed forms), not build anything per layer."""
    path = tmp / "huge" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({**VALID_LLAMA, "num_hidden_layers": 10**9}))
    gpath = tmp / "huge_gemma.json"
    gemma = {
        "model_type": "gemma3_text",
        "vocab_size": VOCAB,
        "hidden_size": D,
        "intermediate_size": FF,
        "num_hidden_layers": 10**9,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV,
        "head_dim": 8,
        "sliding_window": 16,
    }
    gpath.write_text(json.dumps(gemma))
    qpath = tmp / "huge_qwen2.json"
    qwen = {
        **VALID_LLAMA, "model_type": "qwen2", "num_hidden_layers": 10**9,
        "use_sliding_window": True, "sliding_window": 16, "max_window_layers": 1,
    }  # fmt: skip
    qpath.write_text(json.dumps(qwen))
    return [
        Case("huge/info_1e9_layers", "cli", str(path), ok=True, args=["info", "--json"]),
        Case("huge/explore_1e9_layers", "cli", str(path), ok=True, args=["explore", "--json"]),
        Case(
            "huge/explore_train_1e9",
            "cli",
            str(path),
            ok=True,
            args=["explore", "--json", "--mode", "train"],
        ),
        # a per-layer sliding/global pattern is no closed form: refused before it is built
        Case("huge/gemma_pattern_1e9", "hf_config", str(gpath), ["num_hidden_layers", "1048576"]),
        Case("huge/qwen2_window_layers_1e9", "hf_config", str(qpath)),
    ]


# --- the child process ---------------------------------------------------------------------------


def _run_case(case: dict[str, Any]) -> Any:
    path = case["path"]
    call = case["call"]
    if call == "gguf_config":
        from glassformer.loaders.gguf import config_from_gguf

        return config_from_gguf(path)
    if call == "gguf_load":
        from glassformer.loaders.gguf import load_gguf

        return load_gguf(path)
    if call == "st_load":
        from glassformer.loaders.safetensors_io import load_safetensors

        return load_safetensors(path)
    if call == "hf_dir":
        from glassformer.loaders.safetensors_io import load_hf_dir

        return load_hf_dir(path)
    if call == "hf_config":
        from glassformer.config import Config

        return Config.from_hf(path)
    if call == "load":
        import glassformer

        return glassformer.load(path)
    if call == "generate":  # load, then a few tokens: nothing may be sized by a claimed size
        import glassformer

        model, tokenizer = glassformer.load(path)
        config = glassformer.GenerationConfig(max_new_tokens=4)
        return glassformer.generate(model, tokenizer, "!#", config)
    if call == "cli":
        import contextlib
        import io

        from glassformer.cli import main

        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([case["args"][0], path, *case["args"][1:]])
            except SystemExit as exit_:
                code = int(exit_.code or 0)
        if code:
            raise RuntimeError(f"exit {code}: {err.getvalue()}")
        json.loads(out.getvalue())  # the whole JSON report came out
        return None
    raise AssertionError(call)


def child_main(spec_path: str) -> None:
    """Run every case under the limits; write one result per case."""
    import resource
    import signal

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    cases = json.loads(Path(spec_path).read_text())

    def alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"case ran past {CASE_SECONDS} s")

    signal.signal(signal.SIGALRM, alarm)
    import torch

    import glassformer.cli
    import glassformer.loaders.gguf  # noqa: F401  (import time is not a case's time)
    from glassformer.config import Config
    from glassformer.model import Transformer

    with torch.device("meta"):  # torch's first meta-device init imports seconds of machinery
        Transformer(Config.from_hf(VALID_LLAMA))

    results = {}
    for case in cases:
        start = time.perf_counter()
        signal.alarm(CASE_SECONDS)
        try:
            _run_case(case)
            outcome = {"type": None, "message": ""}
        except BaseException as err:  # the exception's type is the result
            outcome = {"type": type(err).__name__, "message": str(err)}
            outcome["value_error"] = isinstance(err, ValueError)
        finally:
            signal.alarm(0)
        outcome["seconds"] = time.perf_counter() - start
        results[case["name"]] = outcome
    Path(spec_path).with_suffix(".out.json").write_text(json.dumps(results))


def build_corpus(tmp: Path) -> list[Case]:
    return gguf_cases(tmp) + st_cases(tmp) + config_cases(tmp) + huge_config_cases(tmp)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Case], dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("bad_files")
    cases = build_corpus(tmp)
    spec = tmp / "spec.json"
    spec.write_text(json.dumps([c.__dict__ for c in cases]))
    code = (
        "import sys; from tests.hardening.test_bad_files import child_main; child_main(sys.argv[1])"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CASE_SECONDS * len(cases) + 120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cases, json.loads(spec.with_suffix(".out.json").read_text())


def test_every_hostile_file_gets_a_clean_one_line_error(corpus) -> None:
    cases, results = corpus
    failures = []
    for case in cases:
        r = results[case.name]
        if case.ok:
            if r["type"] is not None:
                failures.append(f"{case.name}: expected success, got {r['type']}: {r['message']}")
            continue
        message = r["message"]
        problems = []
        if not r.get("value_error"):
            problems.append(f"raised {r['type']}, not a ValueError")
        if "\n" in message:
            problems.append("message spans several lines")
        if Path(case.path).name not in message:
            problems.append("message does not name the file")
        problems += [f"missing {e!r}" for e in case.expect if e not in message]
        if problems:
            failures.append(f"{case.name}: {'; '.join(problems)} -- {r['type']}: {message}")
    assert not failures, "\n".join(failures)
    assert len(cases) >= 80


def test_the_cases_finish_quickly(corpus) -> None:
    """Bounded time per case (the alarm is the hard limit; this is the margin below it)."""
    cases, results = corpus
    slow = {c.name: round(results[c.name]["seconds"], 1) for c in cases}
    slow = {k: v for k, v in slow.items() if v > CASE_SECONDS / 2}
    assert not slow, slow
