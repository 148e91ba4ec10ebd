"""Load GGUF files (llama.cpp's format) into a glassformer `Config` and state dict.

File layout (GGUF v2/v3, little-endian; `str` = u64 byte length + UTF-8 bytes, no terminator):

    magic         4 bytes  "GGUF"
    version       u32      2 or 3
    tensor_count  u64
    kv_count      u64
    kv_count x    key: str | value_type: u32 | value
                  value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool (1 byte),
                  8 str, 9 array (elem_type: u32 | count: u64 | count values), 10 u64, 11 i64,
                  12 f64
    tensor_count x name: str | n_dims: u32 | ne: u64[n_dims] | ggml_type: u32 | offset: u64
    padding       zeros up to a multiple of `general.alignment` (default 32)
    tensor data   each tensor at data_start + offset (offsets are multiples of the alignment)

`ne[0]` is the fastest-varying dimension (a row), so a PyTorch [out, in] weight is stored with
ne = [in, out]: the numpy/torch shape is `ne` reversed. Tensor data are in one of the block
formats decoded by `glassformer.loaders.dequant`. The metadata keys are namespaced by
architecture: `llama.block_count`, `gemma3.attention.sliding_window`, ...; the tokenizer lives
under `tokenizer.ggml.*`.

Two conversions that llama.cpp's converter applies must be undone here:

- llama-architecture Q and K rows are permuted from the half-split RoPE layout (HF/GPT-NeoX:
  pairs (i, i + d/2)) to the interleaved one (pairs (2i, 2i+1)) that ggml's rotary kernel uses.
  Per head, `convert_hf_to_gguf.py` does `w.reshape(2, d/2, in).swapaxes(0, 1)`; we invert it.
  (Gemma and Qwen GGUFs use ggml's NeoX rotary mode, so their rows are left alone.)
- Gemma stores RMSNorm weights around zero and multiplies by (1 + w); the converter adds the 1,
  so we subtract it again (glassformer's `norm_unit_offset=True` adds it at run time). Qwen3-Next
  and Qwen3.5 too, except their linear layers' gated norm (`ssm_norm`).
- Qwen3-Next / Qwen3.5 Gated DeltaNet layers: the decay rates are stored as A = -exp(A_log)
  (`ssm_a`, no suffix), dt_bias as `ssm_dt.bias`, the depthwise convolution squeezed to
  [channels, K]; Qwen3-Next's in_proj_qkvz is split into `attn_qkv` ([q; k; v] over all heads)
  and `attn_gate` (z), its in_proj_ba kept whole (`ssm_ba`, split here); Qwen3.5's converter
  reorders the value heads from grouped by key head to tiled, which we undo.

and Phi-3's fused tensors split: `attn_qkv` holds [q; k; v] rows and `ffn_up` [gate; up], as
HF's `qkv_proj` and `gate_up_proj` do (`split_fused`).

This module parses the header itself instead of using `gguf.GGUFReader`: the reader walks every
element of every metadata array in Python (seconds for a 262k-entry vocabulary such as Gemma 3's;
`benchmarks/loading.py` measures both), whereas we only need the lengths to skip it. Every read
is bounds-checked, and every tensor's type, size, offset and shape are validated before any
tensor memory is allocated, so a truncated or corrupt file raises a ValueError naming the file
and the problem.
"""

from __future__ import annotations

import itertools
import math
import mmap
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glassformer.config import Config, RopeScaling
from glassformer.families import GGUF_ARCHITECTURES
from glassformer.loaders.dequant import (
    BLOCK_SIZES,
    SUPPORTED_TYPES,
    GGMLType,
    dequantize,
    type_name,
)

if TYPE_CHECKING:
    import torch

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS

# value type id -> (struct format, size) for the fixed-size scalars
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_NUMPY: dict[int, str] = {
    0: "<u1",
    1: "<i1",
    2: "<u2",
    3: "<i2",
    4: "<u4",
    5: "<i4",
    6: "<f4",
    7: "?",
    10: "<u8",
    11: "<i8",
    12: "<f8",
}
_STRING, _ARRAY = 8, 9

SUPPORTED_ARCHITECTURES = tuple(GGUF_ARCHITECTURES)  # families with a gguf_arch


# --- header ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    """One tensor-info record. `shape` is in numpy/torch order (ggml's `ne` reversed)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # absolute byte offset of the data in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return type_name(self.ggml_type)

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class GGUFHeader:
    """Everything before the tensor data: metadata and tensor-info records, validated."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]  # in file order
    alignment: int
    data_offset: int  # where the tensor data section starts
    file_size: int
    skipped_arrays: dict[str, int] = field(default_factory=dict)  # key -> length, not decoded

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise ValueError(f"{self.path}: missing metadata key 'general.architecture'")
        return arch


class _Cursor:
    """Bounds-checked little-endian reads from the mapped file."""

    def __init__(self, buf: mmap.mmap | bytes, path: Path) -> None:
        self.buf = buf
        self.size = len(buf)
        self.path = path
        self.pos = 0

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{self.path}: corrupt GGUF header: {what} (at byte {self.pos})")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise ValueError(
                f"{self.path}: truncated GGUF header: {what} needs {n} bytes at byte "
                f"{self.pos}, but the file has only {self.size} bytes"
            )

    def scalar(self, kind: int, what: str) -> Any:
        fmt, n = _SCALARS[kind]
        self.need(n, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def u32(self, what: str) -> int:
        return int(self.scalar(4, what))

    def u64(self, what: str) -> int:
        return int(self.scalar(10, what))

    def string(self, what: str) -> str:
        n = self.u64(f"length of {what}")
        self.need(n, what)
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None

    def skip_strings(self, count: int, what: str) -> None:
        # Only the lengths are needed to find the end; this loop is the hot path for a
        # 262k-token vocabulary, hence the local names.
        unpack, buf, pos, size = struct.unpack_from, self.buf, self.pos, self.size
        for _ in range(count):
            if pos + 8 > size:
                self.pos = pos
                self.need(8, f"length of an element of {what}")
            (n,) = unpack("<Q", buf, pos)
            pos += 8 + n
        if pos > size:
            self.pos = pos - n  # report at the start of the overlong string
            self.need(n, f"an element of {what}")
        self.pos = pos

    def strings(self, count: int, what: str) -> list[str]:
        out = []
        for _ in range(count):
            out.append(self.string(f"an element of {what}"))
        return out

    def value(self, kind: int, what: str, decode_big: bool) -> Any:
        if kind in _SCALARS:
            value = self.scalar(kind, what)
            # float32 metadata (eps, rope base) widen to the float64 the f32 denotes, as HF does
            return float(value) if kind in (6, 12) else value
        if kind == _STRING:
            return self.string(what)
        if kind != _ARRAY:
            raise self.fail(f"{what} has unknown value type {kind}")
        elem = self.u32(f"element type of {what}")
        count = self.u64(f"length of {what}")
        if elem in _SCALARS:
            n = _SCALARS[elem][1]
            self.need(count * n, what)
            # copy at once: a view would pin the memory map
            arr = np.frombuffer(self.buf, dtype=_NUMPY[elem], count=count, offset=self.pos).copy()
            self.pos += count * n
            return arr if count > 64 else arr.tolist()
        if elem == _STRING:
            # every string takes at least its 8-byte length: reject absurd counts up front
            self.need(min(count, self.size) * 8, what)
            if count > 4096 and not decode_big:
                self.skip_strings(count, what)
                return _Skipped(count)
            return self.strings(count, what)
        raise self.fail(f"{what} is an array of unsupported element type {elem}")


@dataclass(frozen=True)
class _Skipped:
    count: int


def read_header(path: str | os.PathLike[str], *, decode_arrays: bool = True) -> GGUFHeader:
    """Parse and validate a GGUF file's header (no tensor data is read).

    With `decode_arrays=False`, string arrays longer than 4096 entries (the vocabulary and
    merges) are skipped over and listed in `skipped_arrays` instead of decoded: a `Config`
    does not need them, and skipping them is several times faster on a large vocabulary
    (`benchmarks/loading.py`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    size = path.stat().st_size
    if size < 24:
        raise ValueError(
            f"{path}: truncated GGUF header: the file has {size} bytes, fewer than the 24 of "
            "magic, version and counts"
        )
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return _parse_header(mm, path, size, decode_arrays)


def _parse_header(mm: mmap.mmap, path: Path, size: int, decode_arrays: bool) -> GGUFHeader:
    cur = _Cursor(mm, path)
    magic = bytes(mm[0:4])
    if magic != GGUF_MAGIC:
        raise ValueError(f"{path}: not a GGUF file (magic bytes {magic!r}, expected b'GGUF')")
    cur.pos = 4
    version = cur.u32("version")
    if version & 0xFFFF == 0 and version:
        raise ValueError(f"{path}: big-endian GGUF files are not supported")
    if version not in (2, 3):
        raise ValueError(f"{path}: unsupported GGUF version {version} (expected 2 or 3)")
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("metadata count")
    # Each KV record takes >= 13 bytes, each tensor record >= 28: a count beyond what the file
    # can hold is corruption, caught before we loop (or allocate) on it.
    if n_kv * 13 + n_tensors * 28 > size - cur.pos:
        raise cur.fail(f"counts ({n_kv} metadata keys, {n_tensors} tensors) exceed the file size")

    metadata: dict[str, Any] = {}
    skipped: dict[str, int] = {}
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}")
        kind = cur.u32(f"value type of {key!r}")
        if key in metadata or key in skipped:
            raise cur.fail(f"duplicate metadata key {key!r}")
        value = cur.value(kind, repr(key), decode_arrays)
        if isinstance(value, _Skipped):
            skipped[key] = value.count
        else:
            metadata[key] = value

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"{path}: general.alignment must be a power of two, got {alignment!r}")

    records = []
    for i in range(n_tensors):
        name = cur.string(f"name of tensor #{i}")
        n_dims = cur.u32(f"n_dims of {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise cur.fail(f"tensor {name!r} has {n_dims} dimensions (expected 1..{MAX_DIMS})")
        ne = [cur.u64(f"dimension {d} of {name!r}") for d in range(n_dims)]
        ggml_type = cur.u32(f"type of {name!r}")
        offset = cur.u64(f"offset of {name!r}")
        records.append((name, ne, ggml_type, offset))

    data_offset = cur.pos + (-cur.pos) % alignment
    tensors: dict[str, TensorInfo] = {}
    for name, ne, ggml_type, offset in records:
        where = f"{path}: tensor {name!r}"
        if name in tensors:
            raise ValueError(f"{where} appears twice")
        if any(d <= 0 for d in ne):
            raise ValueError(f"{where} has a zero or negative dimension {ne}")
        try:
            kind = GGMLType(ggml_type)
        except ValueError:
            raise ValueError(f"{where} has unknown ggml type id {ggml_type}") from None
        block, block_bytes = BLOCK_SIZES[kind]
        if ne[0] % block:
            raise ValueError(
                f"{where}: row length {ne[0]} is not a multiple of the {kind.name} block "
                f"size {block}"
            )
        if offset % alignment:
            raise ValueError(f"{where}: data offset {offset} is not aligned to {alignment}")
        n_elements = math.prod(ne)
        nbytes = n_elements // block * block_bytes
        start = data_offset + offset
        if start + nbytes > size:
            raise ValueError(
                f"{path}: truncated GGUF data: tensor {name!r} ({kind.name}, ne={ne}) needs "
                f"bytes {start}..{start + nbytes}, but the file has only {size} bytes"
            )
        shape = tuple(int(d) for d in reversed(ne))
        tensors[name] = TensorInfo(name, shape, int(kind), start, nbytes)

    spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in tensors.values())
    for (_, end_a, name_a), (start_b, _, name_b) in itertools.pairwise(spans):
        if start_b < end_a:
            raise ValueError(f"{path}: corrupt GGUF: tensors {name_a!r} and {name_b!r} overlap")
    _check_layout(path, tensors, data_offset, alignment)

    return GGUFHeader(path, version, metadata, tensors, alignment, data_offset, size, skipped)


def _check_layout(
    path: Path, tensors: dict[str, TensorInfo], data_offset: int, alignment: int
) -> None:
    """llama.cpp's rule (gguf.cpp): in file order, each tensor starts where the previous one
    ends, padded to the alignment. A record whose type or shape understates its data (F32
    relabelled F16, a halved dimension) leaves a hole and shifts every later offset, so it is
    caught here even though each record alone looks valid."""
    expected = data_offset
    for t in tensors.values():
        if t.offset != expected:
            raise ValueError(
                f"{path}: corrupt GGUF layout: tensor {t.name!r} starts at data offset "
                f"{t.offset - data_offset}, but the tensors before it end at "
                f"{expected - data_offset} (padded to {alignment}); a type or shape does not "
                "match the data"
            )
        expected += t.nbytes + (-t.nbytes) % alignment


# --- metadata -> Config ---------------------------------------------------------------------------


class _Meta:
    """Typed access to `{arch}.*` keys with errors that name the file and the key."""

    def __init__(self, header: GGUFHeader) -> None:
        self.header = header
        self.path = header.path
        self.arch = header.architecture
        self.m = header.metadata

    def raw(self, key: str) -> Any:
        """`{arch}.key` as stored (None when absent), for keys of more than one type."""
        return self.m.get(f"{self.arch}.{key}")

    def get(self, key: str, default: Any = None, kind: type | tuple[type, ...] = (int, float)):
        full = f"{self.arch}.{key}"
        value = self.m.get(full, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(
                f"{self.header.path}: metadata {full} should be {_kind_name(kind)}, got {value!r}"
            )
        return value

    def int(self, key: str, default: int | None = None) -> int:
        value = self.get(key, default, int)
        if value is None:
            raise ValueError(f"{self.header.path}: missing metadata key '{self.arch}.{key}'")
        return value

    def float(self, key: str, default: float | None = None) -> float | None:
        value = self.get(key, default, (int, float))
        return None if value is None else float(value)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _rope_scaling(meta: _Meta) -> RopeScaling | None:
    kind = meta.get("rope.scaling.type", None, str)
    factor = meta.float("rope.scaling.factor")
    if kind in (None, "none") or (factor in (None, 1.0) and kind != "yarn"):
        return None
    if kind == "linear":
        return RopeScaling("linear", float(factor))
    if kind == "yarn":
        return RopeScaling(
            "yarn",
            float(factor or 1.0),
            original_max_seq_len=meta.get("rope.scaling.original_context_length", None, int),
            beta_fast=meta.float("rope.scaling.yarn_beta_fast"),
            beta_slow=meta.float("rope.scaling.yarn_beta_slow"),
        )
    raise ValueError(f"{meta.header.path}: unsupported rope scaling type {kind!r}")


def _llama3_scaling(header: GGUFHeader, cfg: Config) -> RopeScaling:
    """Llama 3.1+ GGUFs carry `rope_freqs.weight` (per-frequency divisors) instead of the
    scaling parameters. Recover them: try the published settings and check they reproduce the
    stored factors (any other factors would make a silently different model)."""
    info = header.tensors["rope_freqs.weight"]
    if info.ggml_type != GGMLType.F32 or info.shape != (cfg.rope_dim // 2,):
        raise ValueError(f"{header.path}: rope_freqs.weight should be F32 [{cfg.rope_dim // 2}]")
    stored = _read_raw(header, info).view("<f4").astype(np.float64)
    inv = 1.0 / cfg.rope_theta ** (np.arange(0, cfg.rope_dim, 2, dtype=np.float64) / cfg.rope_dim)
    wavelen = 2 * math.pi / inv
    for factor, low, high, orig in ((8.0, 1.0, 4.0, 8192), (32.0, 1.0, 4.0, 8192)):
        low_wl, high_wl = orig / low, orig / high
        smooth = (orig / wavelen - low) / (high - low)
        divisor = np.where(
            wavelen < high_wl,
            1.0,
            np.where(wavelen > low_wl, factor, 1.0 / ((1 - smooth) / factor + smooth)),
        )
        if np.allclose(divisor, stored, rtol=1e-5, atol=1e-6):
            return RopeScaling(
                "llama3", factor, original_max_seq_len=orig, low_freq_factor=low,
                high_freq_factor=high,
            )  # fmt: skip
    raise ValueError(
        f"{header.path}: rope_freqs.weight holds llama3-style frequency factors that match no "
        "known setting (factor 8 or 32, low 1, high 4, original context 8192)"
    )


def _first_entry(meta: _Meta, key: str, default: int | None = None) -> int:
    """An integer key, or the first entry of a per-layer array of them."""
    value = meta.raw(key)
    if isinstance(value, list | tuple) or hasattr(value, "shape"):
        if not len(value):
            raise ValueError(f"{meta.path}: metadata {meta.arch}.{key} is an empty array")
        value = value[0]
        if not isinstance(value, int) and hasattr(value, "item"):
            value = value.item()
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{meta.path}: metadata {meta.arch}.{key} should hold integers")
        return value
    return meta.int(key, default)


def proportional_rope(header: GGUFHeader, dim: int) -> RopeScaling | None:
    """Gemma 4's proportional RoPE from `rope_freqs.weight`, llama.cpp's per-frequency divisors
    (w_i = theta^(-2i/dim) / f_i): a prefix of equal divisors f (kept frequencies, divided by
    the factor f) and the rest too large for any position to turn (frequency 0). None without
    the tensor (every frequency kept)."""
    info = header.tensors.get("rope_freqs.weight")
    if info is None:
        return None
    if info.ggml_type != GGMLType.F32 or info.shape != (dim // 2,):
        raise ValueError(f"{header.path}: rope_freqs.weight should be F32 [{dim // 2}]")
    stored = _read_raw(header, info).view("<f4").astype(np.float64)
    factor = float(stored[0])
    kept = int(np.argmax(stored != factor)) if (stored != factor).any() else len(stored)
    if not (factor > 0 and np.all(stored[kept:] >= 1e20)):
        raise ValueError(
            f"{header.path}: rope_freqs.weight is not a proportional-RoPE pattern (a prefix of "
            "equal divisors, then divisors of at least 1e20 for the unrotated pairs)"
        )
    # the proportion whose floor(proportion * dim / 2) is `kept`
    return RopeScaling("proportional", factor, proportion=2 * kept / dim)


def config_from_header(header: GGUFHeader) -> Config:
    """The architecture described by a parsed header (see `config_from_gguf`)."""
    meta = _Meta(header)
    arch = meta.arch
    path = header.path
    if arch not in GGUF_ARCHITECTURES:
        raise ValueError(
            f"{path}: GGUF architecture {arch!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    family = GGUF_ARCHITECTURES[arch]
    n_experts = meta.get("expert_count", 0, int)
    if n_experts and "n_experts" not in family.hf_keys.values():
        raise ValueError(f"{path}: mixture-of-experts GGUFs of {arch!r} are not supported yet")
    tensors = header.tensors
    if "token_embd.weight" not in tensors:
        raise ValueError(f"{path}: missing tensor 'token_embd.weight'")
    d_model = meta.int("embedding_length")
    # per-layer arrays (Gemma 4, deci): the family's reader checks them; the first entry
    # stands in
    n_heads = _first_entry(meta, "attention.head_count")
    n_kv_heads = _first_entry(meta, "attention.head_count_kv", n_heads)
    if n_heads <= 0 or d_model <= 0:
        raise ValueError(f"{path}: bad sizes embedding_length={d_model}, head_count={n_heads}")
    head_dim = meta.int("attention.key_length", d_model // n_heads)
    if head_dim <= 0:
        raise ValueError(f"{path}: bad head size {head_dim}")
    value_dim = meta.int("attention.value_length", head_dim)
    if value_dim != head_dim:
        raise ValueError(f"{path}: key_length {head_dim} != value_length {value_dim}")
    rope_dim = meta.int("rope.dimension_count", head_dim)
    # GLM-4.5's converter counts its next-token-prediction block(s) in block_count, after the
    # model's own; HF's model does not build them, and neither do we
    n_extra = meta.get("nextn_predict_layers", 0, int)
    n_layers = meta.int("block_count") - n_extra
    check_block_count(header, n_layers, n_extra)  # before anything per layer is built
    # The vocabulary size is the embedding's row count; the metadata key is optional.
    vocab_size = meta.int("vocab_size", tensors["token_embd.weight"].shape[0])
    eps = meta.float("attention.layer_norm_rms_epsilon")
    if eps is None:
        raise ValueError(f"{path}: missing metadata key '{arch}.attention.layer_norm_rms_epsilon'")
    eos = header.metadata.get("tokenizer.ggml.eos_token_id")
    bos = header.metadata.get("tokenizer.ggml.bos_token_id")
    # Optional pieces are read off the tensors present, as llama.cpp does.
    has = tensors.__contains__
    common: dict[str, Any] = dict(
        name=str(header.metadata.get("general.name") or path.stem),
        hf_model_type=family.model_type,
        vocab_size=vocab_size,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        # an MoE model whose every layer is routed may have no dense width (Qwen3.5-MoE)
        d_ff=_first_entry(meta, "feed_forward_length", 0 if n_experts else None),
        max_seq_len=meta.int("context_length", 2048),
        position="rope",
        rope_theta=meta.float("rope.freq_base", 10000.0),
        rope_fraction=rope_dim / head_dim,
        rope_scaling=_rope_scaling(meta),
        norm="rmsnorm",
        norm_eps=eps,
        qkv_bias=has("blk.0.attn_q.bias"),
        attn_out_bias=has("blk.0.attn_output.bias"),
        qk_norm=has("blk.0.attn_q_norm.weight"),
        mlp="glu",
        activation="silu",
        tie_embeddings=not has("output.weight"),
        bos_token_id=bos if isinstance(bos, int) else None,
        eos_token_id=eos if isinstance(eos, int) else None,
    )
    if n_experts:  # every layer routed, unless the family's read_gguf interleaves dense ones
        common.update(
            n_experts=n_experts,
            n_experts_per_token=meta.int("expert_used_count"),
            moe_d_ff=meta.int("expert_feed_forward_length", common["d_ff"]),
            router_logit_bias=has("blk.0.ffn_gate_inp.bias"),
            mlp_bias=has("blk.0.ffn_up_exps.bias"),
        )
    common.update(family.traits)  # what llama.cpp fixes per architecture, as HF does
    extra = family.read_gguf(meta, common) if family.read_gguf is not None else {}
    common.update(extra)
    try:
        cfg = Config(**common)
    except ValueError as err:
        raise ValueError(f"{path}: metadata describes an invalid model: {err}") from err
    if "rope_freqs.weight" in tensors and "rope_scaling" not in extra:
        cfg = cfg.replace(rope_scaling=_llama3_scaling(header, cfg))
    return cfg


def config_from_gguf(path: str | os.PathLike[str]) -> Config:
    """Read only the header of a GGUF file and return the architecture it describes."""
    header = read_header(path, decode_arrays=False)
    cfg = config_from_header(header)
    check_tensors(header, cfg)
    return cfg


# --- tensor names and shapes ----------------------------------------------------------------------

_TOP_LEVEL = {
    "token_embd.weight": "embed.weight",
    "output_norm.weight": "final_norm.weight",
    "output.weight": "lm_head.weight",
    # Gemma 4's per-layer input embeddings (names as for Gemma 3n in gguf.constants)
    "per_layer_token_embd.weight": "per_layer_embed.embed.weight",
    "per_layer_model_proj.weight": "per_layer_embed.projection.weight",
    "per_layer_proj_norm.weight": "per_layer_embed.norm.weight",
}
_PER_LAYER = {
    "attn_norm": "attn_norm",
    "attn_q": "attn.q_proj",
    "attn_k": "attn.k_proj",
    "attn_v": "attn.v_proj",
    "attn_output": "attn.o_proj",
    "attn_q_norm": "attn.q_norm",
    "attn_k_norm": "attn.k_norm",
    "post_attention_norm": "post_attn_norm",
    "ffn_norm": "mlp_norm",
    "post_ffw_norm": "post_mlp_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "inp_gate": "per_layer_input.gate",
    "proj": "per_layer_input.projection",
    "post_norm": "per_layer_input.norm",
    "ffn_gate_shexp": "mlp.shared.gate_proj",
    "ffn_up_shexp": "mlp.shared.up_proj",
    "ffn_down_shexp": "mlp.shared.down_proj",
    "ffn_gate_inp_shexp": "mlp.shared_gate",  # Qwen's sigmoid gate on the shared expert
    # Gated DeltaNet (linear) layers, as llama.cpp's qwen3next / qwen35 converters name them
    "attn_qkv": "attn.in_proj_qkv",  # on linear layers; Phi-3's fused q/k/v: `fused_tensors`
    "attn_gate": "attn.in_proj_z",
    "ssm_beta": "attn.in_proj_b",
    "ssm_alpha": "attn.in_proj_a",
    "ssm_conv1d": "attn.conv1d",  # [channels, K]: the converter squeezes the middle axis
    "ssm_norm": "attn.norm",
    "ssm_out": "attn.out_proj",
}
# Tensors whose name does not follow `<ours>.weight|bias`: the attention sinks (one vector per
# layer) and the stacked experts, whose biases are parameters of their own.
_PER_LAYER_EXACT = {
    ("attn_sinks", "weight"): "attn.sinks",
    ("layer_output_scale", "weight"): "layer_scalar",  # Gemma 4: a stored buffer
    ("ffn_gate_inp", "weight"): "mlp.router.weight",
    ("exp_probs_b", "bias"): "mlp.router.score_bias",  # the balancing bias (DeepSeek, GLM)
    ("ffn_gate_inp", "bias"): "mlp.router.bias",
    ("ssm_dt", "bias"): "attn.dt_bias",  # the converter renames dt_bias to dt_proj.bias
    **{
        (f"ffn_{p}_exps", kind): f"mlp.experts.{p}_proj{'_bias' if kind == 'bias' else ''}"
        for p in ("gate", "up", "down")
        for kind in ("weight", "bias")
    },
}
_LAYER_RE = re.compile(r"blk\.(\d+)\.([a-z0-9_]+)\.(weight|bias)")
# Gated DeltaNet's decay rates: stored as -exp(A_log), under a name without a suffix
_SSM_A_RE = re.compile(r"blk\.(\d+)\.ssm_a")
_BLOCK_RE = re.compile(r"blk\.(\d+)\.")
# folded into Config.rope_scaling (llama3's divisors, LongRoPE's factor sets)
_IGNORED = {"rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"}
# Fused GGUF tensors (Phi-3) -> the pseudo-names they are read under -> our parameters
_FUSED_NAMES = {
    "attn_qkv": "attn.qkv_proj",
    "ffn_up": "mlp.gate_up_proj",
    "ssm_ba": "attn.in_proj_ba",  # Qwen3-Next: b and a, grouped by key head
}
FUSED_PSEUDO_NAMES = tuple(_FUSED_NAMES.values())  # what `split_fused` splits


def gguf_to_ours(
    name: str, sandwich: bool = True, fused: frozenset[str] = frozenset()
) -> str | None:
    """Our parameter name for a GGUF tensor name (None: not a parameter of ours).

    `post_attention_norm` is the norm after the attention (Gemma's sandwich, OLMo 2's output
    norm) or, in a pre-norm model (gpt-oss, GLM-4.5, where llama.cpp keeps HF's name), the norm
    before the MLP. Tensors named in `fused` are read whole under a pseudo-name
    (`_FUSED_NAMES`) and split by `split_fused`."""
    if name in _TOP_LEVEL:
        return _TOP_LEVEL[name]
    if a := _SSM_A_RE.fullmatch(name):
        return f"layers.{a.group(1)}.attn.A_log"
    m = _LAYER_RE.fullmatch(name)
    if m and m.group(2) in fused:
        return f"layers.{m.group(1)}.{_FUSED_NAMES[m.group(2)]}.{m.group(3)}"
    if m and (m.group(2), m.group(3)) in _PER_LAYER_EXACT:
        return f"layers.{m.group(1)}.{_PER_LAYER_EXACT[m.group(2), m.group(3)]}"
    if m and m.group(2) == "post_attention_norm" and not sandwich:
        return f"layers.{m.group(1)}.mlp_norm.{m.group(3)}"
    if m and m.group(2) in _PER_LAYER:
        return f"layers.{m.group(1)}.{_PER_LAYER[m.group(2)]}.{m.group(3)}"
    return None


def check_block_count(header: GGUFHeader, n_layers: int, n_extra: int = 0) -> None:
    """`block_count` must name exactly the blocks the file holds tensors for (blk.0 ..
    blk.{n-1}, plus `n_extra` next-token-prediction blocks after them). Checked before anything
    per layer is built: a 1 KB file claiming 2**32 - 1 blocks is refused at once instead of
    building a name table of billions of entries."""
    path, arch = header.path, header.metadata.get("general.architecture")
    if n_extra < 0:
        raise ValueError(f"{path}: metadata {arch}.nextn_predict_layers must be >= 0")
    if n_layers <= 0:
        raise ValueError(f"{path}: metadata {arch}.block_count must be positive, got {n_layers}")
    # every block holds at least one tensor record: a cheap bound before the exact check
    if n_layers > len(header.tensors):
        raise ValueError(
            f"{path}: metadata {arch}.block_count = {n_layers}, but the file holds only "
            f"{len(header.tensors)} tensors"
        )
    blocks = set()
    for name in header.tensors:
        m = _BLOCK_RE.match(name)
        if m:
            blocks.add(int(m.group(1)))
    blocks -= set(range(n_layers, n_layers + n_extra))
    if blocks != set(range(n_layers)):
        beyond = sorted(b for b in blocks if b >= n_layers)
        missing = n_layers - len(blocks - set(beyond))
        what = f"tensors of block {beyond[0]}" if beyond else f"{missing} block(s) without tensors"
        raise ValueError(
            f"{path}: metadata {arch}.block_count = {n_layers} does not match the tensors "
            f"(the file has {what})"
        )


def expected_shapes(
    cfg: Config, fused: frozenset[str] = frozenset()
) -> dict[str, tuple[int, ...]]:
    """Our parameter names and shapes for a standard-attention config, dense or with routed
    experts (and shared experts) in its MoE layers after `first_k_dense` dense layers, in the
    model's order. Fused tensors (`fused`: GGUF names, see `gguf_to_ours`) appear under their
    pseudo-names. Shapes are per layer (Gemma 4's full layers have their own head_dim and KV
    heads; its KV-sharing layers no k/v projections)."""
    d = cfg.d_model
    pre = cfg.norm_placement != "output"  # OLMo 2 normalises the sublayer outputs only
    post = cfg.norm_placement in ("sandwich", "output")
    out: dict[str, tuple[int, ...]] = {"embed.weight": (cfg.vocab_size, d)}
    if cfg.per_layer_dim:
        width = cfg.n_layers * cfg.per_layer_dim
        out["per_layer_embed.embed.weight"] = (cfg.per_layer_vocab_size, width)
        out["per_layer_embed.projection.weight"] = (width, d)
        out["per_layer_embed.norm.weight"] = (cfg.per_layer_dim,)
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        hd, ff = cfg.layer_head_dim(i), cfg.layer_d_ff(i)
        q_out, kv_out = cfg.layer_n_heads(i) * hd, cfg.layer_n_kv_heads(i) * hd
        own_kv = cfg.kv_source(i) is None
        projections = [("q_proj", q_out)]
        projections += [("k_proj", kv_out)] if own_kv else []
        projections += [("v_proj", kv_out)] if own_kv and not cfg.layer_k_eq_v(i) else []
        if pre:
            out[p + "attn_norm.weight"] = (d,)
        if cfg.layer_type(i) == "linear":
            out.update(_linear_attn_shapes(cfg, p + "attn.", fused))
            projections = []  # no attention projections, norms or sinks on this layer
        elif "attn_qkv" in fused:
            out[p + "attn.qkv_proj.weight"] = (q_out + 2 * kv_out, d)
        for proj, n in projections:
            if "attn_qkv" not in fused:
                # with an output gate, q_proj holds [q_h, g_h] per head
                gate = 2 if proj == "q_proj" and cfg.attn_output_gate else 1
                out[p + f"attn.{proj}.weight"] = (n * gate, d)
            if cfg.qkv_bias:
                out[p + f"attn.{proj}.bias"] = (n,)
        if projections:
            out[p + "attn.o_proj.weight"] = (d, q_out)
        if cfg.attn_out_bias and projections:
            out[p + "attn.o_proj.bias"] = (d,)
        if cfg.qk_norm and projections:
            whole = cfg.qk_norm_scope == "all"  # OLMo 2: over the whole projection
            out[p + "attn.q_norm.weight"] = (q_out if whole else hd,)
            if own_kv:
                out[p + "attn.k_norm.weight"] = (kv_out if whole else hd,)
        if cfg.attn_sinks and projections:
            out[p + "attn.sinks"] = (cfg.layer_n_heads(i),)
        if post:
            out[p + "post_attn_norm.weight"] = (d,)
        if pre:
            out[p + "mlp_norm.weight"] = (d,)
        if cfg.is_moe_layer(i):
            out.update(_expert_shapes(cfg, p + "mlp."))
            if cfg.n_shared_experts:
                fs = cfg.shared_d_ff
                out[p + "mlp.shared.gate_proj.weight"] = (fs, d)
                out[p + "mlp.shared.up_proj.weight"] = (fs, d)
                out[p + "mlp.shared.down_proj.weight"] = (d, fs)
            if cfg.shared_expert_gate:
                out[p + "mlp.shared_gate.weight"] = (1, d)
        elif "ffn_up" in fused:
            out[p + "mlp.gate_up_proj.weight"] = (2 * ff, d)
            out[p + "mlp.down_proj.weight"] = (d, ff)
        else:
            out[p + "mlp.gate_proj.weight"] = (ff, d)
            out[p + "mlp.up_proj.weight"] = (ff, d)
            out[p + "mlp.down_proj.weight"] = (d, ff)
        if post:
            out[p + "post_mlp_norm.weight"] = (d,)
        if cfg.per_layer_dim:
            out[p + "per_layer_input.gate.weight"] = (cfg.per_layer_dim, d)
            out[p + "per_layer_input.projection.weight"] = (d, cfg.per_layer_dim)
            out[p + "per_layer_input.norm.weight"] = (d,)
        if cfg.layer_scalar:
            out[p + "layer_scalar"] = (1,)
    out["final_norm.weight"] = (d,)
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = (cfg.vocab_size, d)
    return out


def _linear_attn_shapes(cfg: Config, p: str, fused: frozenset[str]) -> dict[str, tuple[int, ...]]:
    """A Gated DeltaNet layer's tensors as llama.cpp stores them (the convolution [channels,
    K], b and a fused for Qwen3-Next)."""
    assert cfg.linear_n_k_heads and cfg.linear_n_v_heads
    assert cfg.linear_k_head_dim and cfg.linear_v_head_dim
    d, h = cfg.d_model, cfg.linear_n_v_heads
    value = h * cfg.linear_v_head_dim
    conv = 2 * cfg.linear_n_k_heads * cfg.linear_k_head_dim + value
    out: dict[str, tuple[int, ...]] = {
        p + "in_proj_qkv.weight": (conv, d),
        p + "in_proj_z.weight": (value, d),
    }
    if "ssm_ba" in fused:
        out[p + "in_proj_ba.weight"] = (2 * h, d)
    else:
        out.update({p + "in_proj_b.weight": (h, d), p + "in_proj_a.weight": (h, d)})
    out.update({p + "conv1d.weight": (conv, cfg.linear_conv_kernel), p + "A_log": (h,)})
    out.update({p + "dt_bias": (h,), p + "norm.weight": (cfg.linear_v_head_dim,)})
    out[p + "out_proj.weight"] = (d, value)
    return out


def _expert_shapes(cfg: Config, p: str) -> dict[str, tuple[int, ...]]:
    """The router (with its biases) and stacked experts of one MoE layer."""
    d, e, f = cfg.d_model, cfg.n_experts, cfg.moe_d_ff
    out: dict[str, tuple[int, ...]] = {p + "router.weight": (e, d)}
    if cfg.router_logit_bias:
        out[p + "router.bias"] = (e,)
    if cfg.router_bias:
        out[p + "router.score_bias"] = (e,)
    out.update({p + "experts.gate_proj": (e, f, d), p + "experts.up_proj": (e, f, d)})
    out[p + "experts.down_proj"] = (e, d, f)
    if cfg.mlp_bias:
        out.update({p + "experts.gate_proj_bias": (e, f), p + "experts.up_proj_bias": (e, f)})
        out[p + "experts.down_proj_bias"] = (e, d)
    return out


def fused_tensors(header: GGUFHeader) -> frozenset[str]:
    """Which per-layer tensors this file stores fused (llama.cpp's Phi-3: attn_qkv, and ffn_up
    holding gate and up when there is no ffn_gate; Qwen3-Next: ssm_ba)."""
    has = header.tensors.__contains__
    family = GGUF_ARCHITECTURES.get(header.architecture)
    fused = set()
    # the families whose HF checkpoints fuse them (the hybrids' attn_qkv is their linear
    # layers' [q; k; v], which we keep whole)
    if family is not None and family.fused_qkv and has("blk.0.attn_qkv.weight"):
        fused.add("attn_qkv")
    if has("blk.0.ssm_ba.weight"):
        fused.add("ssm_ba")
    if family is not None and family.fused_gate_up and not has("blk.0.ffn_gate.weight"):
        fused.add("ffn_up")
    return frozenset(fused)


def split_fused(cfg: Config, ours: str, w: np.ndarray) -> dict[str, np.ndarray]:
    """A fused tensor read under its pseudo-name -> our parameters ({ours: w} otherwise)."""
    assert cfg.head_dim is not None and cfg.n_kv_heads is not None
    prefix, _, rest = ours.partition(".attn.qkv_proj.")
    if rest:
        q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        parts = np.split(w, [q, q + kv])
        return {f"{prefix}.attn.{p}_proj.{rest}": x for p, x in zip("qkv", parts, strict=True)}
    prefix, _, rest = ours.partition(".mlp.gate_up_proj.")
    if rest:
        gate, up = np.split(w, [cfg.d_ff])
        return {f"{prefix}.mlp.gate_proj.{rest}": gate, f"{prefix}.mlp.up_proj.{rest}": up}
    prefix, _, rest = ours.partition(".attn.in_proj_ba.")
    if rest:  # per key head [b of its r value heads, a of them] (HF's in_proj_ba order)
        assert cfg.linear_n_k_heads and cfg.linear_n_v_heads
        hk, r = cfg.linear_n_k_heads, cfg.linear_n_v_heads // cfg.linear_n_k_heads
        b, a = np.split(w.reshape(hk, 2 * r, -1), [r], axis=1)
        return {
            f"{prefix}.attn.in_proj_b.{rest}": b.reshape(hk * r, -1),
            f"{prefix}.attn.in_proj_a.{rest}": a.reshape(hk * r, -1),
        }
    return {ours: w}


def check_tensors(header: GGUFHeader, cfg: Config) -> dict[str, TensorInfo]:
    """Map every tensor to our name and check its shape and type against the config, before
    anything is decoded; returns ours -> info, in our order."""
    path = header.path
    check_block_count(header, cfg.n_layers, cfg.n_mtp_modules)
    fused = fused_tensors(header)
    expected = expected_shapes(cfg, fused)
    found: dict[str, TensorInfo] = {}
    unknown = []
    sandwich = cfg.norm_placement in ("sandwich", "output")
    for name, info in header.tensors.items():
        m = _BLOCK_RE.match(name)
        if m and int(m.group(1)) >= cfg.n_layers:
            continue  # a next-token-prediction block (check_block_count bounds them)
        ours = gguf_to_ours(name, sandwich, fused)
        if ours is None or ours not in expected:
            if name not in _IGNORED:
                unknown.append(name)
            continue
        if info.shape != expected[ours]:
            raise ValueError(
                f"{path}: tensor {name!r} has shape {list(info.shape)} (ne="
                f"{list(reversed(info.shape))}), but the metadata implies "
                f"{list(expected[ours])} for {ours}"
            )
        found[ours] = info
    if unknown:
        raise ValueError(
            f"{path}: {len(unknown)} unexpected tensor(s) for this {header.architecture} config: "
            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}"
        )
    missing = [ours for ours in expected if ours not in found]
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} tensor(s) missing: {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}"
        )
    bad = [i for i in found.values() if i.ggml_type not in SUPPORTED_TYPES]
    if bad:
        unsupported = sorted({i.type_name for i in bad})
        raise ValueError(
            f"{path}: tensor types {unsupported} cannot be dequantised yet (tensor "
            f"{bad[0].name!r} is {bad[0].type_name})"
        )
    return {ours: found[ours] for ours in expected}


# --- tensor data ----------------------------------------------------------------------------------


def read_f32_vector(header: GGUFHeader, name: str, length: int) -> np.ndarray:
    """A small F32 tensor of the file (LongRoPE's factor sets), checked for type and length."""
    info = header.tensors.get(name)
    if info is None or info.ggml_type != GGMLType.F32 or info.shape != (length,):
        raise ValueError(f"{header.path}: {name} should be an F32 tensor of {length} values")
    return _read_raw(header, info).view("<f4").astype(np.float64)


def _read_raw(header: GGUFHeader, info: TensorInfo) -> np.ndarray:
    with header.path.open("rb") as f:
        f.seek(info.offset)
        raw = np.frombuffer(f.read(info.nbytes), dtype=np.uint8)
    if raw.size != info.nbytes:
        raise ValueError(f"{header.path}: truncated GGUF data in tensor {info.name!r}")
    return raw


def _all_finite(w: np.ndarray) -> bool:
    # inf/NaN propagate through a sum, which is several times cheaper than isfinite().all();
    # only when the sum is not finite (or overflowed) is the exact test needed.
    return bool(np.isfinite(w.sum())) or bool(np.isfinite(w).all())


def _unpermute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Invert llama.cpp's Q/K row permutation (per head: interleaved -> half-split order).

    The converter maps head rows [x_0 .. x_{d/2-1} | y_0 .. y_{d/2-1}] (HF: rotate pairs
    (i, i + d/2)) to [x_0, y_0, x_1, y_1, ...] (ggml: rotate pairs (2i, 2i + 1)).
    """
    rest = w.shape[1:]
    head = w.shape[0] // n_heads
    return w.reshape(n_heads, head // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


def _layer_of(ours: str) -> int:
    return int(ours.split(".")[1])


def tensor_transform(cfg: Config, arch: str) -> Callable[[str, np.ndarray], np.ndarray]:
    """(our name, decoded float tensor) -> the tensor our model expects: Q/K rows un-permuted
    where the converter permuted them (llama), a norm offset taken back out (Gemma)."""
    assert cfg.n_kv_heads is not None
    family = GGUF_ARCHITECTURES[arch]

    def apply(ours: str, w: np.ndarray) -> np.ndarray:
        if ".attn." in ours and cfg.layer_type(int(ours.split(".")[1])) == "linear":
            return _linear_attn_tensor(cfg, ours, w, family.gguf_v_heads_tiled)
        qk = ".attn.q_proj." in ours or ".attn.k_proj." in ours
        if family.gguf_rope_permuted and qk:  # per head of head_dim rows
            return _unpermute_rope(w, w.shape[0] // cfg.layer_head_dim(_layer_of(ours)))
        if family.gguf_norm_offset and ours.endswith("norm.weight"):
            return w - np.float32(1.0)  # the converter stored 1 + w
        return w

    return apply


def _linear_attn_tensor(cfg: Config, ours: str, w: np.ndarray, tiled: bool) -> np.ndarray:
    """A Gated DeltaNet tensor as llama.cpp's converter stored it -> ours: A = -exp(A_log)
    back to A_log, the convolution's middle axis restored, and (Qwen3.5) the value heads from
    tiled back to grouped by key head. The gated norm is stored as it is (the converter adds 1
    to every other norm weight)."""
    assert cfg.linear_n_k_heads and cfg.linear_n_v_heads
    assert cfg.linear_k_head_dim and cfg.linear_v_head_dim
    hk, r = cfg.linear_n_k_heads, cfg.linear_n_v_heads // cfg.linear_n_k_heads
    dv, qk = cfg.linear_v_head_dim, 2 * cfg.linear_n_k_heads * cfg.linear_k_head_dim

    def grouped(x: np.ndarray, axis: int, head: int) -> np.ndarray:
        """[v0 of every key head, v1 of every key head, ...] -> [key head 0: v0, v1, ...]."""
        shape = x.shape
        x = np.moveaxis(x, axis, 0).reshape(r, hk, head, -1).swapaxes(0, 1)
        return np.moveaxis(x.reshape(shape[axis], *np.delete(shape, axis)), 0, axis)

    name = ours.rsplit(".attn.", 1)[1]
    if tiled and r > 1:
        if name in ("in_proj_qkv.weight", "conv1d.weight"):  # only the value rows
            w = np.concatenate((w[:qk], grouped(w[qk:], 0, dv)))
        elif name == "in_proj_z.weight":
            w = grouped(w, 0, dv)
        elif name in ("in_proj_b.weight", "in_proj_a.weight", "A_log", "dt_bias"):
            w = grouped(w, 0, 1)
        elif name == "out_proj.weight":
            w = grouped(w, 1, dv)
    if name == "A_log":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(-w)  # a non-negative A decodes to inf/NaN: refused as corrupt
    if name == "conv1d.weight":
        return w[:, None, :]
    return w


def load_gguf(
    path: str | os.PathLike[str],
    dtype: torch.dtype | None = None,
    *,
    check_finite: bool = True,
) -> tuple[Config, dict[str, torch.Tensor]]:
    """Read a GGUF file into (Config, state dict with glassformer's parameter names).

    The header, the metadata and every tensor's type, size and shape are validated before any
    tensor is decoded. Quantised tensors are dequantised to float32 and cast to `dtype`
    (float32 when None). With `check_finite`, a tensor holding inf/NaN (corrupt scales) raises
    a ValueError.
    """
    import torch  # here, not at the top: reading headers and tokenizers needs no torch

    dtype = dtype or torch.float32
    header = read_header(path, decode_arrays=False)
    cfg = config_from_header(header)
    infos = check_tensors(header, cfg)
    transform = tensor_transform(cfg, header.architecture)
    # np.memmap, not mmap + close: views of a closed map would be dangling, and the map is
    # released as soon as the last view (the `raw` of the last tensor) goes away.
    data = np.memmap(header.path, dtype=np.uint8, mode="r")
    if data.size != header.file_size:
        raise ValueError(f"{header.path}: the file changed size while being read")
    state: dict[str, torch.Tensor] = {}
    for ours, info in infos.items():
        raw = data[info.offset : info.offset + info.nbytes]
        w = transform(ours, dequantize(raw, info.ggml_type, info.shape))
        if check_finite and not _all_finite(w):
            raise ValueError(
                f"{header.path}: tensor {info.name!r} ({info.type_name}) decodes to "
                "inf/NaN values: the file is corrupt"
            )
        for name, part in split_fused(cfg, ours, w).items():
            t = torch.from_numpy(np.ascontiguousarray(part))
            state[name] = t if dtype == torch.float32 else t.to(dtype)
    return cfg, state
