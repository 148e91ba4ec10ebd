"""Our hand-written GGML dequantisation vs the reference `gguf.quants.dequantize`, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as reference
from gguf.quants import quantize
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.loaders.dequant import (
    BLOCK_SIZES,
    SUPPORTED_TYPES,
    GGMLType,
    dequantize,
    tensor_nbytes,
)
from glassformer.loaders.gguf import read_header

TYPES = sorted(SUPPORTED_TYPES)
QUANTISABLE = [
    GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q8_0, GGMLType.MXFP4
]  # fmt: skip


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-for-bit equality (NaN payloads and signed zeros included)."""
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and np.array_equal(a.view(np.uint32), b.view(np.uint32))
    )


def ref(raw: np.ndarray, kind: GGMLType) -> np.ndarray:
    with np.errstate(all="ignore"):  # random bytes make inf/NaN scales
        return reference(raw, GGMLQuantizationType(int(kind)))


def test_block_sizes_match_ggml() -> None:
    for kind, sizes in BLOCK_SIZES.items():
        assert GGML_QUANT_SIZES[GGMLQuantizationType(int(kind))] == sizes, kind.name


@pytest.mark.parametrize("kind", TYPES, ids=lambda t: t.name)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_blocks_bit_exact(kind: GGMLType, data: st.DataObject) -> None:
    block, size = BLOCK_SIZES[kind]
    rows = data.draw(st.integers(1, 3), label="rows")
    blocks_per_row = data.draw(st.integers(1, 4), label="blocks per row")
    raw = data.draw(
        st.binary(min_size=rows * blocks_per_row * size, max_size=rows * blocks_per_row * size)
    )
    arr = np.frombuffer(raw, dtype=np.uint8).reshape(rows, blocks_per_row * size)
    ours = dequantize(arr.reshape(-1), kind, (rows, blocks_per_row * block))
    assert same_bits(ours, ref(arr, kind))


@pytest.mark.parametrize("kind", TYPES, ids=lambda t: t.name)
def test_many_random_blocks_bit_exact(kind: GGMLType) -> None:
    # more blocks than one internal chunk (so the chunk loop is exercised), realistic or not
    block, size = BLOCK_SIZES[kind]
    rng = np.random.default_rng(int(kind))
    n_blocks = 40_000 if block == 32 else 5_000
    raw = rng.integers(0, 256, size=(8, n_blocks // 8 * size), dtype=np.uint8)
    shape = (8, n_blocks // 8 * block)
    assert same_bits(dequantize(raw.reshape(-1), kind, shape), ref(raw, kind))


@pytest.mark.parametrize("kind", QUANTISABLE, ids=lambda t: t.name)
@settings(max_examples=25, deadline=None)
@given(values=st.lists(st.floats(-4.0, 4.0, allow_nan=False, width=32), min_size=64, max_size=64))
def test_quantised_values_bit_exact(kind: GGMLType, values: list[float]) -> None:
    x = np.asarray(values, dtype=np.float32).reshape(2, 32)
    q = quantize(x, GGMLQuantizationType(int(kind)))
    ours = dequantize(q.reshape(-1), kind, x.shape)
    assert same_bits(ours, ref(q, kind))
    # and the values decode to roughly what was quantised (scale ~ range / 2^bits)
    tol = 8.0 / (2 ** {GGMLType.Q8_0: 7}.get(kind, 3)) + 1e-6
    assert np.abs(ours - x).max() <= tol


def test_plain_types() -> None:
    x = np.array([[1.5, -2.25, 3e-5, 65504.0]], dtype=np.float32)
    assert same_bits(dequantize(x.view(np.uint8).reshape(-1), GGMLType.F32, (1, 4)), x)
    h = x.astype(np.float16)
    assert np.array_equal(
        dequantize(h.view(np.uint8).reshape(-1), GGMLType.F16, (1, 4)), h.astype(np.float32)
    )
    bf = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncation to bf16
    out = dequantize(bf.view(np.uint8).reshape(-1), GGMLType.BF16, (1, 4))
    assert np.array_equal(out.view(np.uint32), bf.astype(np.uint32) << 16)


def test_errors() -> None:
    with pytest.raises(ValueError, match="expected 34 bytes"):
        dequantize(np.zeros(33, np.uint8), GGMLType.Q8_0, (32,))
    with pytest.raises(ValueError, match="not whole blocks"):
        dequantize(np.zeros(34, np.uint8), GGMLType.Q8_0, (31,))
    with pytest.raises(ValueError, match="unknown ggml type id 99"):
        dequantize(np.zeros(34, np.uint8), 99, (32,))
    with pytest.raises(ValueError, match="cannot dequantise IQ2_XXS"):
        dequantize(np.zeros(66, np.uint8), GGMLType.IQ2_XXS, (256,))
    assert tensor_nbytes(GGMLType.Q4_K, 512) == 288


def _real_tensor_cases(
    path: Path, max_rows: int = 64
) -> list[tuple[str, np.ndarray, GGMLType, tuple[int, ...]]]:
    """Up to 3 tensors of each type in the file (first `max_rows` rows of big ones)."""
    header = read_header(path, decode_arrays=False)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    per_type: dict[int, int] = {}
    cases = []
    for info in header.tensors.values():
        if per_type.get(info.ggml_type, 0) >= 3:
            continue
        per_type[info.ggml_type] = per_type.get(info.ggml_type, 0) + 1
        rows = min(info.shape[0], max_rows) if len(info.shape) > 1 else 1
        shape = (rows, *info.shape[1:]) if len(info.shape) > 1 else info.shape
        nbytes = info.nbytes // info.shape[0] * rows if len(info.shape) > 1 else info.nbytes
        raw = np.array(data[info.offset : info.offset + nbytes])
        cases.append((info.name, raw, GGMLType(info.ggml_type), shape))
    return cases


def _check_real(path: Path) -> set[str]:
    seen = set()
    for name, raw, kind, shape in _real_tensor_cases(path):
        row_bytes = raw.size // (shape[0] if len(shape) > 1 else 1)
        expected = ref(raw.reshape(-1, row_bytes), kind).reshape(shape)
        assert same_bits(dequantize(raw, kind, shape), expected), name
        seen.add(kind.name)
    return seen


def test_real_tensors_smollm2(smollm2_path: Path) -> None:
    assert _check_real(smollm2_path) == {"F32", "Q4_1", "Q8_0"}


def test_real_tensors_gemma3(gemma3_path: Path) -> None:
    assert _check_real(gemma3_path) == {"F32", "Q5_0", "Q8_0", "Q4_K", "Q6_K"}
