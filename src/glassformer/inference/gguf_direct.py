"""Load a GGUF file straight into the int4/int8 layouts, without a float32 copy of the model.

Where the file's block format is one of ours, the codes and scales are only rearranged:

    Q4_1  (d:f16, m:f16, 16 bytes of nibbles)  ->  int4, group 32:  d, mn = m
    Q4_0  (d:f16, 16 bytes of nibbles)         ->  int4, group 32:  d, mn = -8 d  (exact in
                                                    f16; d q + (-8 d) rounds twice where the
                                                    GGUF decoder's d (q - 8) rounds once)
    Q8_0  (d:f16, 32 int8)                     ->  int8, group 32:  s = d

so the dequantised Q4_1 and Q8_0 weights equal the float32 loader's bit for bit.

The nibbles are repacked from GGUF's order (byte j: value j low, value j + 16 high) into the
kernels' lanes (`quant.pack_int4`); llama's Q/K row permutation is undone on whole rows of
codes and scales. Every other tensor (K-quants, F16, a Q8_0 matrix when int4 is asked for, ...)
is decoded to float32 by the loaders' reference decoder one tensor at a time and quantised with
`quant.quantize`, so the float32 copy of the whole model never exists. Norms stay float32.

The LM head (tied embedding or `output.weight`) follows `head_quant` (int8 by default; a
Q4_0/Q4_1 head stays int4 under quant="int4", converting it up would only cost bandwidth).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from glassformer.families import GGUF_ARCHITECTURES
from glassformer.inference.modules import QuantEmbedding, QuantLinear
from glassformer.inference.optimize import InferenceTransformer, optimize
from glassformer.inference.quant import (
    Int4Weight,
    Int8Weight,
    pack_int4,
    pick_group,
    quantize,
)
from glassformer.loaders.dequant import GGMLType, dequantize
from glassformer.loaders.gguf import (
    FUSED_PSEUDO_NAMES,  # fused GGUF tensors, read under these names before splitting
    check_tensors,  # validation of names, shapes and types before any decoding
    config_from_header,
    read_header,
    split_fused,  # Phi-3's attn_qkv and ffn_up, Qwen3-Next's ssm_ba, into our projections
    tensor_transform,  # llama's Q/K un-permutation and Gemma's norm offset, on float tensors
)
from glassformer.model import Transformer

_FOUR_BITS_OR_LESS = frozenset(
    {GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q4_K, GGMLType.Q3_K, GGMLType.Q2_K}
)
_FUSED_SUFFIXES = tuple(f".{name}.weight" for name in FUSED_PSEUDO_NAMES)


def _f16_field(blocks: np.ndarray, start: int) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(blocks[:, start : start + 2]).view(np.float16))


def _int4_from_blocks(raw: np.ndarray, kind: GGMLType, shape: tuple[int, int]) -> Int4Weight:
    n, k = shape
    size = 20 if kind == GGMLType.Q4_1 else 18
    blocks = raw.reshape(-1, size)
    d = _f16_field(blocks, 0).reshape(n, k // 32)
    if kind == GGMLType.Q4_1:
        mn = _f16_field(blocks, 2).reshape(n, k // 32)
    else:
        mn = (d.float() * -8.0).half()  # exact: a power-of-two multiple
    qs = torch.from_numpy(np.ascontiguousarray(blocks[:, size - 16 :]))
    codes = torch.cat((qs & 0x0F, qs >> 4), dim=1).reshape(n, k)  # value j, then j + 16
    return Int4Weight(pack_int4(codes), d.contiguous(), mn.contiguous(), 32)


def _int8_from_blocks(raw: np.ndarray, shape: tuple[int, int]) -> Int8Weight:
    n, k = shape
    blocks = raw.reshape(-1, 34)
    scales = _f16_field(blocks, 0).float().reshape(n, k // 32)
    q = torch.from_numpy(np.ascontiguousarray(blocks[:, 2:]).view(np.int8)).reshape(n, k)
    return Int8Weight(q.contiguous(), scales.contiguous(), 32)


def _permute_rows(w: Int8Weight | Int4Weight, perm: torch.Tensor) -> Int8Weight | Int4Weight:
    if isinstance(w, Int8Weight):
        return Int8Weight(w.q[perm].contiguous(), w.scales[perm].contiguous(), w.group)
    return Int4Weight(
        w.q[perm].contiguous(), w.d[perm].contiguous(), w.mn[perm].contiguous(), w.group
    )


def _unpermute_index(rows: int, n_heads: int) -> torch.Tensor:
    """Row order that undoes llama.cpp's per-head interleaving (see loaders.gguf)."""
    head = rows // n_heads
    idx = np.arange(rows).reshape(n_heads, head // 2, 2).swapaxes(1, 2).reshape(rows)
    return torch.from_numpy(np.ascontiguousarray(idx))


def _direct(
    raw: np.ndarray, kind: int, shape: tuple[int, ...], target: str, group: int | None
) -> Int8Weight | Int4Weight | None:
    """The weight in our layout when the block format maps onto `target` as it is."""
    if len(shape) != 2 or group not in (None, 32):
        return None
    n, k = shape
    if target == "int4" and kind in (GGMLType.Q4_0, GGMLType.Q4_1) and k % 64 == 0:
        return _int4_from_blocks(raw, GGMLType(kind), (n, k))
    if target == "int8" and kind == GGMLType.Q8_0:
        return _int8_from_blocks(raw, (n, k))
    return None


def load_gguf_quantized(
    path: str | os.PathLike[str],
    quant: str = "int4",
    *,
    group_size: int | None = None,
    head_quant: str | None = None,
    fuse: bool = True,
    mixed: bool = True,
) -> InferenceTransformer:
    """An `InferenceTransformer` with int4/int8 linear layers read from a GGUF file.

    Like `optimize(load_model(path), quant, ...)`, but blocks that map onto our formats keep
    the file's own codes and scales (requantising the decoded float32 values would pick new
    ones, and lose accuracy), and the float32 model is never built. `model.direct_tensors`
    counts the tensors mapped without decoding.

    mixed (int4 only, default): matrices the file stores with more than 4 bits (Q5_0, Q6_K,
    Q8_0, F16, ...) become int8 instead of int4, following the precision choices of the file's
    own quantiser (a Q4_K_M file keeps its most sensitive tensors at 5-8 bits). mixed=False
    forces every matrix to int4: on Gemma 3 270M's Q4_K_M file that costs +15.9% perplexity on
    held-out text, against +0.02% mixed (docs/inference.md).
    """
    if quant not in ("int8", "int4"):
        raise ValueError(f"quant: expected 'int8' or 'int4', got {quant!r}")
    head_quant = head_quant or "int8"
    header = read_header(path, decode_arrays=False)
    cfg = config_from_header(header)
    infos = check_tensors(header, cfg)
    arch = header.architecture
    transform = tensor_transform(cfg, arch)
    permuted = GGUF_ARCHITECTURES[arch].gguf_rope_permuted  # llama's Q/K row order
    data = np.memmap(header.path, dtype=np.uint8, mode="r")
    head_name = "embed.weight" if cfg.tie_embeddings else "lm_head.weight"
    assert cfg.n_kv_heads is not None

    with torch.device("meta"):
        model = Transformer(cfg)
    # what `optimize` quantises: the weight of every nn.Linear of the blocks
    linears = {
        f"layers.{name}.weight"
        for name, module in model.layers.named_modules()
        if type(module) is nn.Linear
    }
    floats: dict[str, torch.Tensor] = {}
    quantised: dict[str, Int8Weight | Int4Weight] = {}
    direct = 0

    def target_of(name: str, kind: int) -> tuple[str, int | None]:
        """The format one of our tensors is kept in (and its group size)."""
        if name in linears:
            if mixed and quant == "int4" and kind not in _FOUR_BITS_OR_LESS:
                return "int8", None
            return quant, group_size
        if name == head_name:
            if quant == "int4" and kind in (GGMLType.Q4_0, GGMLType.Q4_1):
                return "int4", None  # already 4-bit: keep it as it is
            return head_quant, None
        return "none", None

    for ours, info in infos.items():
        raw = data[info.offset : info.offset + info.nbytes]
        fused = ours.endswith(_FUSED_SUFFIXES)  # decoded and split below, never mapped directly
        target, group = target_of(ours, info.ggml_type)
        weight = None
        if target != "none" and not fused:
            weight = _direct(raw, info.ggml_type, info.shape, target, group)
        if weight is not None:
            direct += 1
            if permuted and (".attn.q_proj." in ours or ".attn.k_proj." in ours):
                heads = info.shape[0] // cfg.layer_head_dim(int(ours.split(".")[1]))
                weight = _permute_rows(weight, _unpermute_index(info.shape[0], heads))
            quantised[ours] = weight
            continue
        w = transform(ours, dequantize(raw, info.ggml_type, info.shape))
        for name, part in split_fused(cfg, ours, w).items():
            t = torch.from_numpy(np.ascontiguousarray(part))
            if not torch.isfinite(t.sum()) and not torch.isfinite(t).all():
                raise ValueError(f"{header.path}: tensor {info.name!r} decodes to inf/NaN values")
            target, group = target_of(name, info.ggml_type)
            picked = pick_group(t.shape[-1], target, group) if target != "none" else None
            if picked is None:
                floats[name] = t
            else:
                quantised[name] = quantize(t, target, picked)

    model.load_state_dict(floats, strict=False, assign=True)
    for name, weight in quantised.items():
        module_path = name.removesuffix(".weight")
        parent_path, _, attr = module_path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        if name == "embed.weight":
            setattr(parent, attr, QuantEmbedding(weight))
        else:
            setattr(parent, attr, QuantLinear(weight))
    model.build_rotary()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"{header.path}: tensors not loaded: {', '.join(left[:5])}")
    # quant="none" here only means "no further quantising": the blocks already are int4/int8
    fast = optimize(
        model, "none", fuse=fuse, inplace=True, head_quant="none", kv_dtype=torch.float16
    )
    fast.quant = quant
    fast.direct_tensors = direct  # type: ignore[attr-defined]
    return fast
