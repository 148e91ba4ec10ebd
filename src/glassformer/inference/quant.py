"""Weight-only quantisation formats: int8 per channel (or group-wise) and int4 group-wise.

A linear layer y = x W^T keeps float32 activations; only W [N, K] (N outputs, K inputs) is
stored in fewer bits and expanded on the fly. Columns are cut into groups of `group` (a multiple
of 32 that divides K); every (row, group) pair has its own scale.

int8, symmetric (per channel when group = K):
    s[n, g] = max_{k in g} |W[n, k]| / 127
    q[n, k] = round(W[n, k] / s[n, g])  in [-127, 127]          W ~= s q
    error per weight <= s / 2 = max|W_g| / 254

int4, asymmetric (GGUF's Q4_1 when group = 32):
    W ~= d q + mn,  q[n, k] = clamp(round((W[n, k] - mn) / d), 0, 15)
    min/max:        d = (hi - lo) / 15, mn = lo  (lo, hi: min and max of the group);
                    error per weight <= d / 2 = (hi - lo) / 30
    least squares (default): for several candidate grids (15 + delta) / (hi - lo),
                    delta in [-1.5, 1.5], assign codes, then solve for the (d, mn) minimising
                    sum_k (W_k - d q_k - mn)^2 given those codes (a 2x2 linear system); keep
                    the best. Clipping a rare extreme weight buys finer steps for the rest.
    d and mn are rounded to float16 before the final codes are computed.

The asymmetric form spends no code on a sign and represents a group whose weights are not
centred on zero as well as one that is; Q4_0's symmetric d (q - 8) is the special case
mn = -8 d, which is how such GGUF blocks are imported.

Storage (see `native.py` for the int4 nibble order): int8 codes [N, K] + float32 scales
[N, K / group]; int4 codes packed 4 per int16 [N, K / 4] + float16 d, mn [N, K / group].
Bytes per weight: int8 1 + 4 / group; int4 0.5 + 4 / group (0.625 at group 32) vs 4 for fp32.

The `dequantize_*` functions are the reference the kernels are tested against; they compute
d * q first and then add mn, rounding after each, as the GGUF reference decoder does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Int8Weight:
    q: torch.Tensor  # int8 [N, K]
    scales: torch.Tensor  # float32 [N, K / group]
    group: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.q.shape[0], self.q.shape[1])

    def nbytes(self) -> int:
        return self.q.numel() + self.scales.numel() * 4


@dataclass
class Int4Weight:
    q: torch.Tensor  # int16 [N, K / 4], see pack_int4
    d: torch.Tensor  # float16 [N, K / group]
    mn: torch.Tensor  # float16 [N, K / group]
    group: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.q.shape[0], self.q.shape[1] * 4)

    def nbytes(self) -> int:
        return self.q.numel() * 2 + (self.d.numel() + self.mn.numel()) * 2


def check_group(k: int, group: int, chunk: int) -> None:
    if group % 32 or k % group:
        raise ValueError(f"group: {group} must be a multiple of 32 that divides K={k}")
    if k % chunk:
        raise ValueError(f"K={k} is not a multiple of {chunk}")


# --- int8 -----------------------------------------------------------------------------------


def quantize_int8(w: torch.Tensor, group: int | None = None) -> Int8Weight:
    """Symmetric int8 with one scale per (row, group); group None = per channel (group = K)."""
    n, k = w.shape
    group = group or k
    check_group(k, group, 32)
    wg = w.detach().float().reshape(n, k // group, group)
    scales = wg.abs().amax(-1) / 127.0
    # An all-zero group gets scale 1 (any scale represents zeros exactly; avoids 0 / 0).
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    q = torch.round(wg / scales[..., None]).clamp_(-127, 127).to(torch.int8)
    return Int8Weight(q.reshape(n, k).contiguous(), scales.contiguous(), group)


def dequantize_int8(w: Int8Weight, rows: torch.Tensor | None = None) -> torch.Tensor:
    """float32 [N, K] (or only `rows`, for embedding lookups)."""
    if rows is None:
        q, s = w.q, w.scales
    else:
        q, s = w.q.index_select(0, rows), w.scales.index_select(0, rows)
    n, k = q.shape
    out = q.reshape(n, k // w.group, w.group).float() * s[..., None]
    return out.reshape(n, k)


# --- int4 -----------------------------------------------------------------------------------


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes 0..15 [N, K] (K % 64 == 0) -> int16 [N, K / 4].

    Chunk c of 64 columns becomes 16 lanes; nibble s of lane j is column 64 c + 16 s + j.
    """
    n, k = codes.shape
    if k % 64:
        raise ValueError(f"pack_int4: K={k} is not a multiple of 64")
    c = codes.to(torch.int32).reshape(n, k // 64, 4, 16)  # [n, chunk, s, j]
    shifts = (4 * torch.arange(4, dtype=torch.int32)).view(1, 1, 4, 1)
    lanes = (c << shifts).sum(2)  # [n, chunk, j]: the nibbles do not overlap, so + is |
    lanes = torch.where(lanes >= 2**15, lanes - 2**16, lanes)  # as a signed 16-bit pattern
    return lanes.to(torch.int16).reshape(n, k // 4).contiguous()


def unpack_int4(q: torch.Tensor) -> torch.Tensor:
    """int16 [N, K / 4] -> uint8 codes [N, K] (inverse of pack_int4)."""
    n, w = q.shape
    lanes = q.to(torch.int32).reshape(n, w // 16, 1, 16)
    shifts = (4 * torch.arange(4, dtype=torch.int32)).view(1, 1, 4, 1)
    # & 15 after the shift also discards the sign bits an arithmetic shift brings in.
    return ((lanes >> shifts) & 15).to(torch.uint8).reshape(n, w * 4)


def _fit_int4(wg: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group (rows of wg [G, group]): the (d, mn) of least squared error found by trying
    `steps` code assignments around min/max and refitting d, mn by least squares to each
    (the search of llama.cpp's make_qkx2_quants, unweighted). Returns float32 d, mn [G]."""
    lo, hi = wg.amin(-1, keepdim=True), wg.amax(-1, keepdim=True)
    span = (hi - lo).clamp(min=1e-12)
    n = wg.shape[-1]
    sum_x = wg.sum(-1, keepdim=True)
    best_err = torch.full_like(lo, float("inf"))
    best_d, best_m = span / 15.0, lo.clone()
    # iscale = (15 + delta) / span, delta from -1.5 to +1.5: a slightly narrower or wider grid
    # than min/max trades clipping the extremes against finer steps for the bulk.
    for i in range(steps):
        delta = -1.5 + 3.0 * i / max(steps - 1, 1) if steps > 1 else 0.0
        codes = torch.round((wg - lo) * ((15.0 + delta) / span)).clamp_(0, 15)
        sum_l, sum_l2 = codes.sum(-1, keepdim=True), (codes * codes).sum(-1, keepdim=True)
        sum_xl = (codes * wg).sum(-1, keepdim=True)
        det = n * sum_l2 - sum_l * sum_l
        ok = det > 0
        safe = torch.where(ok, det, torch.ones_like(det))
        d = torch.where(ok, (n * sum_xl - sum_x * sum_l) / safe, span / 15.0)
        m = torch.where(ok, (sum_l2 * sum_x - sum_l * sum_xl) / safe, lo)
        err = (d * codes + m - wg).pow(2).sum(-1, keepdim=True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_d = torch.where(better, d, best_d)
        best_m = torch.where(better, m, best_m)
    return best_d.squeeze(-1), best_m.squeeze(-1)


def quantize_int4(w: torch.Tensor, group: int = 32, search: int = 16) -> Int4Weight:
    """Asymmetric int4 with one (d, mn) pair per (row, group).

    search = 0: min/max (d = (hi - lo) / 15, mn = lo). search = s > 0: the least-squares fit
    over s candidate grids (`_fit_int4`), which on real checkpoints roughly halves the squared
    error of min/max. Either way codes are then computed against the float16-rounded d and mn
    the kernel will use. Rows are processed in blocks to bound the temporaries.
    """
    n, k = w.shape
    check_group(k, group, 64)
    packed = torch.empty(n, k // 4, dtype=torch.int16)
    d_out = torch.empty(n, k // group, dtype=torch.float16)
    mn_out = torch.empty(n, k // group, dtype=torch.float16)
    rows = max(1, (1 << 20) // k)
    for start in range(0, n, rows):
        wg = w[start : start + rows].detach().float().reshape(-1, k // group, group)
        flat = wg.reshape(-1, group)
        if search:
            d32, lo = _fit_int4(flat, search)
        else:
            d32, lo = (flat.amax(-1) - flat.amin(-1)) / 15.0, flat.amin(-1)
        d, mn = d32.half(), lo.half()
        dq = d.float()
        dq = torch.where(dq > 0, dq, torch.ones_like(dq))  # constant group: all codes 0
        codes = torch.round((flat - mn.float()[:, None]) / dq[:, None]).clamp_(0, 15)
        stop = start + wg.shape[0]
        packed[start:stop] = pack_int4(codes.to(torch.uint8).reshape(-1, k))
        d_out[start:stop] = d.reshape(-1, k // group)
        mn_out[start:stop] = mn.reshape(-1, k // group)
    return Int4Weight(packed, d_out, mn_out, group)


def dequantize_int4(w: Int4Weight, rows: torch.Tensor | None = None) -> torch.Tensor:
    if rows is None:
        q, d, mn = w.q, w.d, w.mn
    else:  # index_select: a plain row gather (advanced indexing is slower)
        q, d, mn = (t.index_select(0, rows) for t in (w.q, w.d, w.mn))
    codes = unpack_int4(q)
    n, k = codes.shape
    out = codes.reshape(n, k // w.group, w.group).float() * d.float()[..., None]
    out += mn.float()[..., None]
    return out.reshape(n, k)


def quantize(w: torch.Tensor, quant: str, group: int | None) -> Int8Weight | Int4Weight:
    if quant == "int8":
        return quantize_int8(w, group)
    if quant == "int4":
        return quantize_int4(w, group or 32)
    raise ValueError(f"quant: expected 'int8' or 'int4', got {quant!r}")


def dequantize(w: Int8Weight | Int4Weight, rows: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(w, Int8Weight):
        return dequantize_int8(w, rows)
    return dequantize_int4(w, rows)


def pick_group(k: int, quant: str, group: int | None) -> int | None:
    """The group size actually used for a K-wide layer, or None when the format cannot hold it
    (K not a multiple of 32 for int8, of 64 for int4). A requested group that does not divide
    K falls back to the largest of 128, 64, 32 that does (K = 576 takes 64 instead of 128)."""
    chunk = 64 if quant == "int4" else 32
    if k % chunk:
        return None
    if quant == "int8" and group is None:
        return k
    want = group or 32
    for g in (want, 128, 64, 32):
        if g <= want and g % 32 == 0 and k % g == 0:
            return g
    return None
