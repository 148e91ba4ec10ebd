"""Dequantisation of the GGML tensor formats stored in GGUF files, written out by hand.

A GGML tensor is a sequence of rows; each row is cut into *blocks* of `block_size` consecutive
values, and each block is stored as `type_size` bytes that hold a few scales plus small integer
codes. Dequantising is therefore "unpack the codes, multiply by the scale, add the offset",
block by block. All multi-byte fields are little-endian; `f16` is an IEEE half.

Legacy formats (32 values per block, one scale per block):

    Q4_0  (18 B)  d:f16 | qs:u8[16]
                  q_j = qs[j] & 0xF  (j < 16),   q_{j+16} = qs[j] >> 4
                  x = d * (q - 8)
    Q4_1  (20 B)  d:f16 | m:f16 | qs:u8[16]          (nibbles as Q4_0)
                  x = d * q + m
    Q5_0  (22 B)  d:f16 | qh:u32 | qs:u8[16]         (low nibbles as Q4_0; bit j of qh is
                  bit 4 of value j)                   x = d * (q - 16)
    Q5_1  (24 B)  d:f16 | m:f16 | qh:u32 | qs:u8[16]  x = d * q + m
    Q8_0  (34 B)  d:f16 | qs:i8[32]                  x = d * q

"K-quants" (Kawrakow, llama.cpp #1684): a 256-value *super-block* of 8 or 16 sub-blocks, each
sub-block with its own small integer scale (and min), which are in turn scaled by f16 super-block
scales `d` (and `dmin`). Two levels of scales give nearly the accuracy of per-32 f16 scales at a
fraction of the bytes.

    Q2_K  (84 B)  scales:u8[16] | qs:u8[64] | d:f16 | dmin:f16
                  16 sub-blocks of 16; scales[s] = min<<4 | scale (4 bits each).
                  Codes are 2-bit: byte qs[32*h + l] holds, at shift 2*k, the value
                  128*h + 32*k + l (h: half 0/1, k: 0..3).
                  x = d * scale_s * q - dmin * min_s
    Q3_K  (110 B) hmask:u8[32] | qs:u8[64] | scales:u8[12] | d:f16
                  16 sub-blocks of 16 with 6-bit signed scales (stored +32, low 4 bits in
                  scales[0:8] nibbles, high 2 bits in scales[8:12]); 2 low bits of each code as
                  in Q2_K, the third bit in hmask (bit k of hmask[l] for value 32*k + l), and a
                  *cleared* bit means "subtract 4":  q = low2 - 4 * (1 - hbit)  in [-4, 3].
                  x = d * (scale_s - 32) * q
    Q4_K  (144 B) d:f16 | dmin:f16 | scales:u8[12] | qs:u8[128]
                  8 sub-blocks of 32, each with a 6-bit scale sc and 6-bit min m packed in
                  12 bytes (see `_k_scale_min`). Codes: 4 chunks of 64 values; chunk c uses
                  qs[32c:32c+32], low nibbles for values 64c..64c+31, high for 64c+32..64c+63.
                  x = (d * sc_s) * q - (dmin * m_s)
    Q5_K  (176 B) d:f16 | dmin:f16 | scales:u8[12] | qh:u8[32] | qs:u8[128]
                  as Q4_K plus a fifth bit: bit s of qh[l] belongs to value 32*s + l.
                  x = (d * sc_s) * q - (dmin * m_s)
    Q6_K  (210 B) ql:u8[128] | qh:u8[64] | scales:i8[16] | d:f16
                  16 sub-blocks of 16 with signed 8-bit scales. Two halves of 128 values;
                  in half h, ql[64h + l] holds values 128h + l (low nibble) and 128h + 64 + l
                  (high nibble) for l < 64; qh[32h + l] holds the 2 high bits of values
                  128h + 32k + l at shift 2k.  q = (low4 | high2 << 4) - 32
                  x = (d * scale_s) * q

Microscaling (OCP MX v1.0; gpt-oss's expert weights):

    MXFP4 (17 B)  e:u8 | qs:u8[16]                   (nibbles as Q4_0)
                  e8m0 scale 2^(e - 127), stored halved as ggml does (2^(e - 128), the
                  subnormal pattern for e < 2), times doubled E2M1 codes
                  k = (0, 1, 2, 3, 4, 6, 8, 12, -0, -1, -2, -3, -4, -6, -8, -12)
                  x = half_scale(e) * k[q]

Plain formats: F32 (4 B), F16 (2 B, IEEE half), BF16 (2 B: the top 16 bits of an f32, so
x = bits << 16 reinterpreted as f32).

Every function here computes in float32 in the same order of operations as ggml's reference
(`dequantize_row_*` in ggml-quants.c, and `gguf.quants` in Python), so the results agree bit for
bit. The tests check that against `gguf.quants.dequantize`.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

import numpy as np

QK_K = 256  # values per K-quant super-block


class GGMLType(IntEnum):
    """ggml's tensor type ids, as stored in a GGUF tensor-info record."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39


# (values per block, bytes per block) for every type a GGUF header may name. Knowing the sizes
# of the types we cannot dequantise still lets the header validator check the file's layout.
BLOCK_SIZES: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.Q4_0: (32, 2 + 16),
    GGMLType.Q4_1: (32, 2 + 2 + 16),
    GGMLType.Q5_0: (32, 2 + 4 + 16),
    GGMLType.Q5_1: (32, 2 + 2 + 4 + 16),
    GGMLType.Q8_0: (32, 2 + 32),
    GGMLType.Q8_1: (32, 4 + 4 + 32),
    GGMLType.Q2_K: (QK_K, 2 + 2 + QK_K // 16 + QK_K // 4),
    GGMLType.Q3_K: (QK_K, 2 + QK_K // 4 + QK_K // 8 + 12),
    GGMLType.Q4_K: (QK_K, 2 + 2 + QK_K // 2 + 12),
    GGMLType.Q5_K: (QK_K, 2 + 2 + QK_K // 2 + QK_K // 8 + 12),
    GGMLType.Q6_K: (QK_K, 2 + QK_K // 2 + QK_K // 4 + QK_K // 16),
    GGMLType.Q8_K: (QK_K, 4 + QK_K + QK_K // 8),
    GGMLType.IQ2_XXS: (QK_K, 2 + QK_K // 4),
    GGMLType.IQ2_XS: (QK_K, 2 + QK_K // 4 + QK_K // 32),
    GGMLType.IQ3_XXS: (QK_K, 2 + QK_K // 4 + QK_K // 8),
    GGMLType.IQ1_S: (QK_K, 2 + QK_K // 8 + QK_K // 16),
    GGMLType.IQ4_NL: (32, 2 + 16),
    GGMLType.IQ3_S: (QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    GGMLType.IQ2_S: (QK_K, 2 + QK_K // 4 + QK_K // 16),
    GGMLType.IQ4_XS: (QK_K, 2 + 2 + QK_K // 2 + QK_K // 64),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.F64: (1, 8),
    GGMLType.IQ1_M: (QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    GGMLType.BF16: (1, 2),
    GGMLType.TQ1_0: (QK_K, 2 + 4 * 13),
    GGMLType.TQ2_0: (QK_K, 2 + 64),
    GGMLType.MXFP4: (32, 1 + 16),
}


def type_name(ggml_type: int) -> str:
    try:
        return GGMLType(ggml_type).name
    except ValueError:
        return f"type {ggml_type}"


def tensor_nbytes(ggml_type: int, n_elements: int) -> int:
    """Bytes a tensor of `n_elements` values takes in this format."""
    block, size = BLOCK_SIZES[GGMLType(ggml_type)]
    return n_elements // block * size


_SHIFT_4 = np.array([0, 4], dtype=np.uint8)  # the two nibbles of a byte
_SHIFT_2 = np.array([0, 2, 4, 6], dtype=np.uint8)  # the four 2-bit fields of a byte
_SHIFT_8 = np.arange(8, dtype=np.uint8)  # the eight bits of a byte

# --- helpers --------------------------------------------------------------------------------------


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The f16 field at byte `start` of each block, as an [n, 1] float32 column."""
    return blocks[:, start : start + 2].view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """[n, 16] bytes -> [n, 32] codes: the low nibbles are values 0..15, the high 16..31."""
    return np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=1)


def _bits(qh: np.ndarray) -> np.ndarray:
    """[n, 4] bytes of a little-endian u32 -> [n, 32] bits, bit j of the word first."""
    # unpackbits with bitorder="little" yields bit 0 of byte 0 first, i.e. bit j of the u32.
    return np.unpackbits(qh, axis=1, bitorder="little")


def _k_scale_min(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unpack the 12 scale bytes of Q4_K/Q5_K into 8 six-bit scales and 8 six-bit mins.

    Bytes 0-3 hold scale j (j < 4) in their low 6 bits, bytes 4-7 min j likewise; the top two
    bits of bytes 0-7 are the high bits of scale/min j + 4, whose low 4 bits are the low
    (scales) and high (mins) nibbles of bytes 8-11:

        scale_j = b[j] & 63,            min_j = b[j+4] & 63                     (j < 4)
        scale_j = (b[j+4] & 15) | (b[j-4] >> 6) << 4
        min_j   = (b[j+4] >> 4) | (b[j]   >> 6) << 4                              (j >= 4)
    """
    b = scales.reshape(-1, 3, 4)
    d, m, md = b[:, 0], b[:, 1], b[:, 2]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=1)
    return sc, mn


# --- one function per format -------------------------------------------------------------------
# Each takes [n, type_size] uint8 blocks and writes [n, block_size] float32 values into `out`
# (a slice of the result, so no full-size temporary is made).


def _put_nibbles(qs: np.ndarray, out: np.ndarray) -> None:
    """[n, 16] bytes -> 32 codes per block: low nibbles are values 0..15, high ones 16..31."""
    out[:, :16] = qs & np.uint8(0x0F)
    out[:, 16:] = qs >> np.uint8(4)


def _q4_0(blocks: np.ndarray, out: np.ndarray) -> None:
    _put_nibbles(blocks[:, 2:18], out)
    out -= np.float32(8)  # exact: small integers
    out *= _f16(blocks, 0)


def _q4_1(blocks: np.ndarray, out: np.ndarray) -> None:
    _put_nibbles(blocks[:, 4:20], out)
    out *= _f16(blocks, 0)
    out += _f16(blocks, 2)


def _q5_0(blocks: np.ndarray, out: np.ndarray) -> None:
    high = _bits(blocks[:, 2:6]) << np.uint8(4)
    q = (_nibbles(blocks[:, 6:22]) | high).astype(np.int8) - np.int8(16)
    np.multiply(_f16(blocks, 0), q, out=out)


def _q5_1(blocks: np.ndarray, out: np.ndarray) -> None:
    high = _bits(blocks[:, 4:8]) << np.uint8(4)
    out[:] = _nibbles(blocks[:, 8:24]) | high
    out *= _f16(blocks, 0)
    out += _f16(blocks, 2)


def _q8_0(blocks: np.ndarray, out: np.ndarray) -> None:
    np.multiply(blocks[:, 2:34].view(np.int8), _f16(blocks, 0), out=out)


def _q2_k(blocks: np.ndarray, out: np.ndarray) -> None:
    n = blocks.shape[0]
    scales, qs = blocks[:, 0:16], blocks[:, 16:80]
    d, dmin = _f16(blocks, 80), _f16(blocks, 82)
    dl = (d * (scales & 0x0F).astype(np.float32)).reshape(n, 16, 1)
    ml = (dmin * (scales >> 4).astype(np.float32)).reshape(n, 16, 1)
    # [n, half, shift, 32] is exactly value order 128*half + 32*shift + l
    q = (qs.reshape(n, 2, 1, 32) >> _SHIFT_2.reshape(1, 1, 4, 1)) & np.uint8(3)
    o = out.reshape(n, 16, 16)
    np.multiply(dl, q.reshape(n, 16, 16), out=o)
    o -= ml


def _q3_k(blocks: np.ndarray, out: np.ndarray) -> None:
    n = blocks.shape[0]
    hmask, qs, scales = blocks[:, 0:32], blocks[:, 32:96], blocks[:, 96:108]
    d = _f16(blocks, 108)
    # 16 six-bit scales: low 4 bits are the nibbles of bytes 0-7 (low nibbles for scales 0-7,
    # high nibbles for 8-15), high 2 bits come from bytes 8-11 at shifts 0, 2, 4, 6.
    low = (scales[:, 0:8].reshape(n, 1, 8) >> _SHIFT_4.reshape(1, 2, 1)) & 0x0F
    high = (scales[:, 8:12].reshape(n, 1, 4) >> _SHIFT_2.reshape(1, 4, 1)) & 3
    sc = low.reshape(n, 16) | (high.reshape(n, 16) << np.uint8(4))
    dl = (d * (sc.astype(np.int8) - np.int8(32)).astype(np.float32)).reshape(n, 16, 1)
    low2 = ((qs.reshape(n, 2, 1, 32) >> _SHIFT_2.reshape(1, 1, 4, 1)) & 3).astype(np.int8)
    hbit = (hmask.reshape(n, 1, 32) >> _SHIFT_8.reshape(1, 8, 1)) & 1
    # a *cleared* high bit subtracts 4 (ggml stores the bit inverted)
    q = low2.reshape(n, 16, 16) - ((hbit ^ 1) << 2).astype(np.int8).reshape(n, 16, 16)
    np.multiply(dl, q, out=out.reshape(n, 16, 16))


def _k_codes4(qs: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K low nibbles: [n, 128] bytes -> [n, 8, 32] codes in value order."""
    n = qs.shape[0]
    q = qs.reshape(n, 4, 1, 32) >> _SHIFT_4.reshape(1, 1, 2, 1)
    return (q & np.uint8(0x0F)).reshape(n, 8, 32)


def _k_scales(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K effective [n, 8, 1] scale d * sc and offset dmin * m per sub-block."""
    n = blocks.shape[0]
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    sc, mn = _k_scale_min(blocks[:, 4:16])
    ds = (d * sc.astype(np.float32)).reshape(n, 8, 1)
    dm = (dmin * mn.astype(np.float32)).reshape(n, 8, 1)
    return ds, dm


def _q4_k(blocks: np.ndarray, out: np.ndarray) -> None:
    n = blocks.shape[0]
    ds, dm = _k_scales(blocks)
    o = out.reshape(n, 8, 32)
    np.multiply(ds, _k_codes4(blocks[:, 16:144]), out=o)
    o -= dm


def _q5_k(blocks: np.ndarray, out: np.ndarray) -> None:
    n = blocks.shape[0]
    ds, dm = _k_scales(blocks)
    qh = blocks[:, 16:48].reshape(n, 1, 32) >> _SHIFT_8.reshape(1, 8, 1)
    q = _k_codes4(blocks[:, 48:176]) | ((qh & np.uint8(1)) << np.uint8(4))
    o = out.reshape(n, 8, 32)
    np.multiply(ds, q, out=o)
    o -= dm


def _q6_k(blocks: np.ndarray, out: np.ndarray) -> None:
    n = blocks.shape[0]
    ql, qh, scales = blocks[:, 0:128], blocks[:, 128:192], blocks[:, 192:208]
    d = _f16(blocks, 208)
    ds = (d * scales.view(np.int8).astype(np.float32)).reshape(n, 16, 1)
    low = (ql.reshape(n, 2, 1, 64) >> _SHIFT_4.reshape(1, 1, 2, 1)) & 0x0F
    high = (qh.reshape(n, 2, 1, 32) >> _SHIFT_2.reshape(1, 1, 4, 1)) & 3
    q = (low.reshape(n, 8, 32) | (high.reshape(n, 8, 32) << np.uint8(4))).astype(np.int8)
    q = (q - np.int8(32)).reshape(n, 16, 16)
    np.multiply(ds, q, out=out.reshape(n, 16, 16))


_E2M1_DOUBLED = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float32)


def _mxfp4(blocks: np.ndarray, out: np.ndarray) -> None:
    e = blocks[:, 0:1].astype(np.uint32)
    # ggml_e8m0_to_fp32_half: 2^(e - 128) as float32 bits (subnormal for e < 2)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - np.uint32(1)) << np.uint32(23))
    d = bits.astype(np.uint32).view(np.float32)
    np.multiply(d, _E2M1_DOUBLED[_nibbles(blocks[:, 1:17])], out=out)


_BLOCK_DEQUANT: dict[GGMLType, Callable[[np.ndarray, np.ndarray], None]] = {
    GGMLType.Q4_0: _q4_0,
    GGMLType.Q4_1: _q4_1,
    GGMLType.Q5_0: _q5_0,
    GGMLType.Q5_1: _q5_1,
    GGMLType.Q8_0: _q8_0,
    GGMLType.Q2_K: _q2_k,
    GGMLType.Q3_K: _q3_k,
    GGMLType.Q4_K: _q4_k,
    GGMLType.Q5_K: _q5_k,
    GGMLType.Q6_K: _q6_k,
    GGMLType.MXFP4: _mxfp4,
}

SUPPORTED_TYPES: frozenset[GGMLType] = frozenset(
    [*_BLOCK_DEQUANT, GGMLType.F32, GGMLType.F16, GGMLType.BF16]
)

# Blocks per call of a block function: bounds the temporaries (a few MB) while keeping the
# per-call Python overhead negligible.
_CHUNK_BLOCKS = 1 << 15


def dequantize(raw: np.ndarray, ggml_type: int, shape: tuple[int, ...]) -> np.ndarray:
    """Decode the bytes of one tensor into a float32 array of `shape` (numpy order: the last
    axis is ggml's ne[0], the row).

    `raw` is a 1-D uint8 array (e.g. a slice of a memory map) of exactly the tensor's size.
    Raises ValueError for a size mismatch or a type this module does not decode.
    """
    try:
        kind = GGMLType(ggml_type)
    except ValueError:
        raise ValueError(f"unknown ggml type id {ggml_type}") from None
    if kind not in SUPPORTED_TYPES:
        supported = ", ".join(sorted(t.name for t in SUPPORTED_TYPES))
        raise ValueError(f"cannot dequantise {kind.name} (supported: {supported})")
    n_elements = int(np.prod(shape, dtype=np.int64)) if shape else 1
    block, size = BLOCK_SIZES[kind]
    if n_elements % block:
        raise ValueError(f"{kind.name}: {n_elements} values are not whole blocks of {block}")
    expected = n_elements // block * size
    raw = np.asarray(raw).reshape(-1).view(np.uint8)
    if raw.size != expected:
        raise ValueError(
            f"{kind.name}: expected {expected} bytes for shape {shape}, got {raw.size}"
        )

    if kind == GGMLType.F32:
        return raw.view(np.float32).reshape(shape).copy()
    if kind == GGMLType.F16:
        return raw.view(np.float16).astype(np.float32).reshape(shape)
    if kind == GGMLType.BF16:
        # bf16 is the top half of an f32: widen to 32 bits and shift into place
        return (
            (raw.view(np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32).reshape(shape)
        )

    fn = _BLOCK_DEQUANT[kind]
    blocks = raw.reshape(-1, size)
    out = np.empty((blocks.shape[0], block), dtype=np.float32)
    # Corrupt scales can be inf/NaN; the caller decides what to do with such values (the GGUF
    # loader rejects them), so numpy's warnings would only be noise here.
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, blocks.shape[0], _CHUNK_BLOCKS):
            stop = start + _CHUNK_BLOCKS
            fn(blocks[start:stop], out[start:stop])
    return out.reshape(shape)
