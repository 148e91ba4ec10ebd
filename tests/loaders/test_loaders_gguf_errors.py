"""Truncated and corrupt GGUF files give a ValueError that names the file and the problem."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glassformer.loaders.gguf import config_from_gguf, load_gguf, read_header
from tests.loaders.gguf_builders import write_gguf

D, FF, VOCAB = 32, 64, 64
KV = {
    "context_length": 64,
    "embedding_length": D,
    "block_count": 1,
    "feed_forward_length": FF,
    "attention.head_count": 4,
    "attention.head_count_kv": 2,
    "attention.layer_norm_rms_epsilon": 1e-5,
    "rope.freq_base": 10000.0,
    "tokenizer.ggml.tokens": [f"t{i}" for i in range(VOCAB)],
}


def tensors(**changes: np.ndarray | None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)

    def r(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    out = {
        "token_embd.weight": r(VOCAB, D),
        "blk.0.attn_norm.weight": r(D),
        "blk.0.attn_q.weight": r(D, D),
        "blk.0.attn_k.weight": r(D // 2, D),
        "blk.0.attn_v.weight": r(D // 2, D),
        "blk.0.attn_output.weight": r(D, D),
        "blk.0.ffn_norm.weight": r(D),
        "blk.0.ffn_gate.weight": r(FF, D),
        "blk.0.ffn_up.weight": r(FF, D),
        "blk.0.ffn_down.weight": r(D, FF),
        "output_norm.weight": r(D),
    }
    for name, value in changes.items():
        name = name.replace("__", ".")
        if value is None:
            out.pop(name)
        else:
            out[name] = value
    return out


def build(path: Path, kv: dict | None = None, arch: str = "llama", **changes) -> Path:
    return write_gguf(
        path,
        arch,
        KV if kv is None else kv,
        tensors(**changes),
        default_qtype=GGMLQuantizationType.Q8_0,
    )


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return build(tmp_path / "good.gguf")


def expect_error(path: Path, match: str, fn=load_gguf) -> None:
    with pytest.raises(ValueError, match=match) as info:
        fn(path)
    assert str(path) in str(info.value)


def test_good_file_loads(good: Path) -> None:
    cfg, state = load_gguf(good)
    assert cfg.vocab_size == VOCAB and cfg.n_kv_heads == 2 and cfg.tie_embeddings
    assert len(state) == 11


def test_wrong_magic(tmp_path: Path, good: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + good.read_bytes()[4:])
    expect_error(bad, "not a GGUF file")


def test_empty_and_tiny_files(tmp_path: Path) -> None:
    for size in (0, 3, 23):
        bad = tmp_path / f"tiny{size}.gguf"
        bad.write_bytes(b"GGUF\x03\x00\x00\x00"[:size].ljust(size, b"\0"))
        expect_error(bad, "truncated GGUF header", read_header)


def test_truncated_anywhere_in_the_header(tmp_path: Path, good: Path) -> None:
    data = good.read_bytes()
    end = read_header(good).data_offset
    bad = tmp_path / "cut.gguf"
    for cut in range(0, end, 3):
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"truncated|not a GGUF|corrupt") as info:
            load_gguf(bad)
        assert str(bad) in str(info.value)


def test_truncated_in_the_data(tmp_path: Path, good: Path) -> None:
    data = good.read_bytes()
    header = read_header(good)
    bad = tmp_path / "cut.gguf"
    for cut in (header.data_offset, header.data_offset + 100, len(data) - 1):
        bad.write_bytes(data[:cut])
        expect_error(bad, "truncated GGUF data")
        expect_error(bad, "truncated GGUF data", config_from_gguf)


def test_wrong_shape(tmp_path: Path) -> None:
    bad = build(tmp_path / "shape.gguf", blk__0__attn_q__weight=np.zeros((D + 32, D), np.float32))
    expect_error(bad, r"'blk.0.attn_q.weight' has shape \[64, 32\].*implies \[32, 32\]")
    expect_error(bad, "has shape", config_from_gguf)


def test_missing_and_unexpected_tensors(tmp_path: Path) -> None:
    expect_error(
        build(tmp_path / "m.gguf", blk__0__ffn_up__weight=None), "missing: layers.0.mlp.up"
    )
    extra = build(tmp_path / "x.gguf", blk__0__mystery__weight=np.zeros(D, np.float32))
    expect_error(extra, "unexpected tensor.*blk.0.mystery.weight")
    expect_error(build(tmp_path / "e.gguf", token_embd__weight=None), "token_embd.weight")


def test_untied_head(tmp_path: Path) -> None:
    cfg, state = load_gguf(
        build(tmp_path / "h.gguf", output__weight=np.ones((VOCAB, D), np.float32))
    )
    assert not cfg.tie_embeddings  # the head is untied when output.weight is present
    assert torch.allclose(state["lm_head.weight"], torch.ones(VOCAB, D), atol=1e-3)  # Q8_0


def test_nan_scale_is_rejected(tmp_path: Path, good: Path) -> None:
    info = read_header(good).tensors["blk.0.ffn_up.weight"]
    data = bytearray(good.read_bytes())
    data[info.offset : info.offset + 2] = np.float16(np.nan).tobytes()  # first block's scale
    bad = tmp_path / "nan.gguf"
    bad.write_bytes(bytes(data))
    expect_error(bad, "'blk.0.ffn_up.weight' .*inf/NaN")
    _, state = load_gguf(bad, check_finite=False)
    assert torch.isnan(state["layers.0.mlp.up_proj.weight"][0, :32]).all()


def _patch(path: Path, out: Path, offset: int, fmt: str, value: int) -> Path:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    out.write_bytes(bytes(data))
    return out


def _offset_field(path: Path, name: str) -> int:
    """Byte position of a tensor-info record's data-offset field."""
    data = path.read_bytes()
    at = data.index(name.encode()) + len(name)
    (n_dims,) = struct.unpack_from("<I", data, at)
    return at + 4 + 8 * n_dims + 4


def test_bad_version_and_counts(tmp_path: Path, good: Path) -> None:
    expect_error(_patch(good, tmp_path / "v.gguf", 4, "<I", 7), "unsupported GGUF version 7")
    expect_error(_patch(good, tmp_path / "be.gguf", 4, ">I", 3), "big-endian")
    expect_error(_patch(good, tmp_path / "n.gguf", 8, "<Q", 2**40), "exceed the file size")
    expect_error(_patch(good, tmp_path / "k.gguf", 16, "<Q", 2**33), "exceed the file size")


def test_overlapping_and_unaligned_tensors(tmp_path: Path, good: Path) -> None:
    at = _offset_field(good, "blk.0.attn_v.weight")
    expect_error(_patch(good, tmp_path / "o.gguf", at, "<Q", 0), "overlap")
    expect_error(_patch(good, tmp_path / "a.gguf", at, "<Q", 1), "not aligned")


def test_bad_metadata(tmp_path: Path) -> None:
    expect_error(build(tmp_path / "a.gguf", arch="mamba"), "architecture 'mamba' is not supported")
    no_blocks = {k: v for k, v in KV.items() if k != "block_count"}
    expect_error(
        build(tmp_path / "b.gguf", kv=no_blocks), "missing metadata key 'llama.block_count'"
    )
    wrong_type = {**KV, "block_count": "one"}
    expect_error(build(tmp_path / "c.gguf", kv=wrong_type), "llama.block_count should be int")
    bad_heads = {**KV, "attention.head_count_kv": 3}
    expect_error(build(tmp_path / "d.gguf", kv=bad_heads), "invalid model: n_kv_heads")
    moe = {**KV, "expert_count": 8}
    expect_error(build(tmp_path / "e.gguf", kv=moe), "mixture-of-experts")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4)
)
def test_random_header_corruption(tmp_path: Path, flips: list[tuple[int, int]]) -> None:
    good = tmp_path / "fuzz-good.gguf"
    if not good.exists():
        build(good)
    data = bytearray(good.read_bytes())
    end = read_header(good).data_offset
    for pos, xor in flips:
        data[pos % end] ^= xor
    bad = tmp_path / "fuzz.gguf"
    bad.write_bytes(bytes(data))
    try:
        load_gguf(bad)  # a harmless flip (e.g. in a name string) may still load
    except ValueError as err:
        assert str(bad) in str(err)
