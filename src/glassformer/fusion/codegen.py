"""Triton kernels generated from a `Gemm` node's epilogue program, and the PyTorch reference
program that each kernel must equal.

One program instance computes a block of BM rows and one group of output columns (a head, the
whole row, or a BN-wide tile when the program has no row reduction and no RoPE):

    for k in K in steps of BK:                      prologue, while x streams through
        a = x[rows, k]; ss += sum(a^2)              the input norm's statistics
        a = a * w_norm[k]  (or * sigmoid(gate))     the norm's weight per input column
        acc_w[part] += a @ W_w[part cols, k]^T      one accumulator per weight and part
    epilogue: the steps, per part, in registers; stores

A grouped node (the experts of an MoE layer) gathers its input rows through a row index and
reads the weights of its row block's expert.

A group is cut into parts, column sets that are each a [BM, pow2] tile: RoPE pairs dim i with
i + d/2 (half-split) or 2i with 2i + 1 (interleaved), so the rotated dims become two parts
"lo" and "hi" whose columns are the pairs, and the rotation is element-wise between them; the
dims before and after stay as parts of their own. A row reduction sums over the parts it spans.

The backward kernel (`backward_source`) recomputes the accumulators, replays the program
keeping every intermediate in registers, and walks the steps in reverse, each by its
derivative rule (`_BACKWARD`), to d(acc_w), the gradients of the loaded tensors (the residual)
and of the row statistics; the GEMM's own backward (dX = dacc W, dW = dacc^T X) and the
prologue's are PyTorch matmuls and row ops in `kernels.py`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from glassformer.fusion.ir import Gemm, Step

SUPPORTED_OPS = ("row_scale", "bias", "act", "glu", "rope", "add", "mul", "rms_norm", "sumsq")
ACTS = ("silu", "gelu", "gelu_tanh", "relu")


@dataclass(frozen=True)
class Part:
    """Columns start + i * stride (i < count) of each group."""

    name: str
    start: int
    count: int
    stride: int = 1

    @property
    def size(self) -> int:  # the tile width: a power of two, at least 16 for tl.dot
        return max(16, 1 << (self.count - 1).bit_length())

    def span(self) -> tuple[int, int]:
        return self.start, self.start + (self.count - 1) * self.stride + 1


def unsupported(node: Gemm) -> str | None:
    """Why the generator cannot compile `node` (None: it can)."""
    if node.prologue.norm and node.prologue.kind != "rmsnorm":
        return f"prologue norm {node.prologue.kind!r}"
    for s in node.program:
        if s.op not in SUPPORTED_OPS:
            return f"step {s.op!r}"
        if (
            s.op == "rms_norm"
            and node.rope is not None
            and s.attrs.get("group") == "row"
            and "columns" not in s.attrs
            and node.group != node.width
        ):
            return "a whole-row norm before a per-head RoPE"
        if s.op in ("act", "glu") and s.attrs.get("act") not in ACTS:
            return f"activation {s.attrs.get('act')!r}"
    return None


def layout(node: Gemm, tile: int = 64) -> tuple[int, list[Part], bool]:
    """(group width, parts, tiled): tiled groups are BN-wide column tiles of a program without
    row reductions or RoPE."""
    # a row's sum of squares adds over column tiles (atomically); the other reductions need
    # the whole group in one program
    reduces = node.rope is not None or any(
        s.kind == "row_reduction" and s.op != "sumsq" for s in node.program
    )
    if not reduces:
        g = min(tile, max(16, 1 << (node.width - 1).bit_length()))
        return g, [Part("all", 0, g)], True
    g = node.group or node.width
    assert node.width % g == 0, (node.name, node.width, g)
    if node.rope is None:
        return g, [Part("all", 0, g)], False
    o, r, half = node.rope.offset, node.rope.dim, node.rope.dim // 2
    if node.rope.interleaved:
        rot = [Part("lo", o, half, 2), Part("hi", o + 1, half, 2)]
    else:
        rot = [Part("lo", o, half), Part("hi", o + half, half)]
    parts = ([Part("pre", 0, o)] if o else []) + rot
    if o + r < g:
        parts.append(Part("post", o + r, g - o - r))
    return g, parts, False


def _in_columns(p: Part, step: Step) -> bool:
    cols = step.attrs.get("columns")
    if cols is None:
        return True
    a, b = p.span()
    return cols[0] <= a and b <= cols[1]


def _act(name: str, x: str) -> str:
    if name == "silu":
        return f"({x}) * tl.sigmoid({x})"
    if name == "relu":
        return f"tl.maximum({x}, 0.0)"
    if name == "gelu":
        return f"0.5 * ({x}) * (1.0 + tl.math.erf(({x}) * {1 / math.sqrt(2)!r}))"
    # gelu_tanh: tanh(z) = 2 sigmoid(2 z) - 1
    z = f"{math.sqrt(2 / math.pi)!r} * (({x}) + 0.044715 * ({x}) * ({x}) * ({x}))"
    return f"0.5 * ({x}) * (2.0 * tl.sigmoid(2.0 * ({z})))"


def _dact(name: str, x: str) -> str:
    """d act(x) / dx."""
    if name == "silu":
        s = f"tl.sigmoid({x})"
        return f"({s}) * (1.0 + ({x}) * (1.0 - {s}))"
    if name == "relu":
        return f"tl.where({x} > 0.0, 1.0, 0.0)"
    if name == "gelu":
        return (
            f"0.5 * (1.0 + tl.math.erf(({x}) * {1 / math.sqrt(2)!r})) + ({x}) * "
            f"{1 / math.sqrt(2 * math.pi)!r} * tl.exp(-0.5 * ({x}) * ({x}))"
        )
    c = math.sqrt(2 / math.pi)
    t = f"(2.0 * tl.sigmoid(2.0 * {c!r} * (({x}) + 0.044715 * ({x}) * ({x}) * ({x}))) - 1.0)"
    return (
        f"0.5 * (1.0 + {t}) + 0.5 * ({x}) * (1.0 - {t} * {t}) * {c!r} * "
        f"(1.0 + 3 * 0.044715 * ({x}) * ({x}))"
    )


class _Gen:
    """Source text of one node's kernels."""

    def __init__(self, node: Gemm, tile: int = 64, ieee: bool = True, widen: bool = False) -> None:
        self.ieee = ieee  # float32 products in full precision (no TF32)
        # bf16 operands widened to float32 before tl.dot (exact: a product of two 8-bit
        # significands fits float32's 24): Triton's interpreter mis-reads bf16 in its numpy dot
        self.widen = widen
        why = unsupported(node)
        if why:
            raise ValueError(f"fusion: {node.name}: no generated kernel for {why}")
        self.node = node
        self.group, self.parts, self.tiled = layout(node, tile)
        self.n_groups = -(-node.width // self.group)
        self.params = sorted({s.param for s in node.program if s.param})
        self.loads = [ld.name for ld in node.loads]
        self.lines: list[str] = []

    # --- argument lists ---
    def args(self, backward: bool) -> list[str]:
        n = self.node
        a = ["X"] + (["XG"] if n.prologue.gate else [])
        if n.experts:  # each row's source row of X, each row block's expert
            a += ["ROW_SRC", "BLOCK_EXPERT"]
        if n.prologue.norm:
            a += ["NORM_W"] + ([] if n.prologue.stats == "loop" else ["STATS"])
        a += [f"W{i}" for i in range(len(n.weights))]
        a += [self.pname(p, k) for p in self.params for k in self.pkinds(p)]
        a += [f"L_{x}" for x in self.loads]
        if backward:
            a += [f"DS_{s.name}" for s in n.stores]  # incoming gradients
            a += [f"DACC{i}" for i in range(len(n.weights))]
            a += [f"DL_{x}" for x in self.loads if x not in ("cos", "sin")]
            a += ["DRSTD"] if n.prologue.norm else []
            a += [f"DP_{self.pname(p, k)}" for p in self.params for k in self.pkinds(p)]
        else:
            a += [f"S_{s.name}" for s in n.stores]
            if any(s.cache for s in n.stores):  # the first slot written, slots per sequence
                return [*a, "M", "T_POS", "CACHE_START", "CACHE_L"]
        return [*a, "M", "T_POS"]

    def pkinds(self, param: str) -> list[str]:
        return (
            ["b"] if any(s.op == "bias" and s.param == param for s in self.node.program) else ["w"]
        )

    @staticmethod
    def pname(param: str, kind: str) -> str:
        return "P_" + param.replace(".", "_") + "_" + kind

    def emit(self, line: str, indent: int = 1) -> None:
        self.lines.append("    " * indent + line)

    # --- shared pieces ---
    def head(self, name: str, backward: bool) -> None:
        self.emit("@triton.jit", 0)
        self.emit(
            f"def {name}({', '.join(self.args(backward))}, BM: tl.constexpr, BK: tl.constexpr):", 0
        )
        n = self.node
        self.emit("pid_m = tl.program_id(0)")
        self.emit("pid_g = tl.program_id(1)")
        self.emit("rows = pid_m * BM + tl.arange(0, BM)")
        self.emit("rmask = rows < M")
        if n.experts:
            # rows sorted by expert, each expert's run padded to BM (padding: source -1), so a
            # row block has one expert; the input row is gathered
            self.emit("src = tl.load(ROW_SRC + rows, mask=rmask, other=-1)")
            self.emit("rmask = rmask & (src >= 0)")
            self.emit("src = tl.where(rmask, src, 0)")
            self.emit("ex = tl.load(BLOCK_EXPERT + pid_m)")
        else:
            self.emit("src = rows")
        self.emit("pos = rows % T_POS")
        for p in self.parts:
            self.emit(f"j_{p.name} = tl.arange(0, {p.size})")
            self.emit(f"c_{p.name} = {p.start} + j_{p.name} * {p.stride}  # column in the group")
            self.emit(f"col_{p.name} = pid_g * {self.group} + c_{p.name}")
            self.emit(f"cm_{p.name} = (j_{p.name} < {p.count}) & (col_{p.name} < {n.width})")
            self.emit(f"m_{p.name} = rmask[:, None] & cm_{p.name}[None, :]")
        self.gemm()

    def gemm(self) -> None:
        n = self.node
        K = n.in_width
        for i in range(len(n.weights)):
            for p in self.parts:
                self.emit(f"acc{i}_{p.name} = tl.zeros([BM, {p.size}], dtype=tl.float32)")
        if n.prologue.norm and n.prologue.stats == "loop":
            self.emit("ss = tl.zeros([BM], dtype=tl.float32)")
        self.emit(f"for k0 in range(0, {K}, BK):")
        self.emit("ks = k0 + tl.arange(0, BK)", 2)
        self.emit(f"km = ks < {K}", 2)
        self.emit("am = rmask[:, None] & km[None, :]", 2)
        self.emit(f"a = tl.load(X + src[:, None] * {K} + ks[None, :], mask=am, other=0.0)", 2)
        self.emit("af = a.to(tl.float32)", 2)
        if n.prologue.norm:
            if n.prologue.stats == "loop":
                self.emit("ss += tl.sum(af * af, 1)", 2)
            self.emit("nw = tl.load(NORM_W + ks, mask=km, other=0.0).to(tl.float32)", 2)
            if n.prologue.unit_offset:
                self.emit("nw = nw + 1.0", 2)
            self.emit("af = af * nw[None, :]", 2)
        if n.prologue.gate:
            self.emit(
                f"g = tl.load(XG + rows[:, None] * {K} + ks[None, :], mask=am, "
                "other=0.0).to(tl.float32)",
                2,
            )
            self.emit("af = af * tl.sigmoid(g)", 2)
        self.emit("a = af.to(a.dtype)", 2)
        for i in range(len(n.weights)):
            for p in self.parts:
                base = f"W{i} + ex * {n.width * K}" if n.experts else f"W{i}"
                self.emit(
                    f"b = tl.load({base} + col_{p.name}[None, :] * {K} + ks[:, None], "
                    f"mask=cm_{p.name}[None, :] & km[:, None], other=0.0)",
                    2,
                )
                prec = ", input_precision='ieee'" if self.ieee or self.widen else ""
                if self.widen:
                    self.emit("b = b.to(tl.float32)", 2)
                a = "a.to(tl.float32)" if self.widen else "a"
                self.emit(f"acc{i}_{p.name} = tl.dot({a}, b, acc{i}_{p.name}{prec})", 2)
        if n.prologue.norm:
            if n.prologue.stats == "loop":
                self.emit(f"rstd_in = 1.0 / tl.sqrt(ss / {K} + {n.prologue.eps!r})")
            else:
                self.emit("sumsq = tl.load(STATS + rows, mask=rmask, other=0.0)")
                self.emit(f"rstd_in = 1.0 / tl.sqrt(sumsq / {K} + {n.prologue.eps!r})")

    def load_param(
        self,
        param: str,
        kind: str,
        p: Part,
        offset: int = 0,
        per_group: bool = True,
        unit: bool = False,
    ) -> str:
        """A per-column parameter tile [1, size] for part p."""
        idx = f"c_{p.name} - {offset}" if per_group else f"col_{p.name}"
        if self.node.experts:  # a parameter per expert: [experts, width]
            idx = f"ex * {self.node.width} + {idx}"
        v = f"pv_{self.pname(param, kind)}_{p.name}"
        self.emit(
            f"{v} = tl.load({self.pname(param, kind)} + {idx}, mask=cm_{p.name}, "
            "other=0.0).to(tl.float32)"
        )
        if unit:
            self.emit(f"{v} = {v} + 1.0")
        return v

    def load_rows(self, name: str, p: Part, width: int, offset: int = 0) -> str:
        v = f"ld_{name}_{p.name}"
        self.emit(
            f"{v} = tl.load(L_{name} + rows[:, None] * {width} + (col_{p.name} - "
            f"{offset})[None, :], mask=m_{p.name}, other=0.0).to(tl.float32)"
        )
        return v

    def load_pos(self, name: str, p: Part) -> str:
        """cos/sin [positions, rot/2] for the rotated part p (pair index j)."""
        half = next(ld.width for ld in self.node.loads if ld.name == name)
        v = f"ld_{name}_{p.name}"
        self.emit(
            f"{v} = tl.load(L_{name} + pos[:, None] * {half} + j_{p.name}[None, :], "
            f"mask=m_{p.name}, other=0.0).to(tl.float32)"
        )
        return v

    def weight_offset(self, s: Step) -> tuple[int, bool]:
        """(offset, per-group) indexing of a norm weight: per head its column in the group; a
        column range (MLA's latent) from its first column."""
        cols = s.attrs.get("columns")
        return (cols[0] if cols else 0), True

    # --- forward program ---
    def forward_steps(self, record: bool = False) -> dict[str, dict[str, str]]:
        """Emit the program; return value -> part -> variable. `record` keeps every
        intermediate under a unique name (the backward replays it)."""
        n = self.node
        vals: dict[str, dict[str, str]] = {
            acc: {p.name: f"acc{i}_{p.name}" for p in self.parts} for i, acc in enumerate(n.accs)
        }
        self.saved_rows: dict[str, str] = {}
        for k, s in enumerate(n.program):
            out: dict[str, str] = {}
            x = vals[s.args[0]]
            if s.op == "sumsq":
                self.emit(f"ss{k} = tl.zeros([BM], dtype=tl.float32)")
                for v in x.values():
                    self.emit(f"ss{k} += tl.sum({v} * {v}, 1)")
                vals[s.out] = {"row": f"ss{k}"}
                continue
            if s.op == "rms_norm":
                parts = [p for p in self.parts if p.name in x and _in_columns(p, s)]
                width = self.group
                cols = s.attrs.get("columns")
                if cols:
                    width = cols[1] - cols[0]
                self.emit(f"ss{k} = tl.zeros([BM], dtype=tl.float32)")
                for p in parts:
                    self.emit(f"ss{k} += tl.sum({x[p.name]} * {x[p.name]}, 1)")
                self.emit(f"r{k} = 1.0 / tl.sqrt(ss{k} / {width} + {s.attrs['eps']!r})")
                self.saved_rows[f"r{k}"] = f"r{k}"
                off, _ = self.weight_offset(s)
                for p in parts:
                    v = f"v{k}_{p.name}"
                    expr = f"{x[p.name]} * r{k}[:, None]"
                    if s.param:
                        w = self.load_param(
                            s.param, "w", p, off, True, bool(s.attrs.get("unit_offset"))
                        )
                        expr = f"{expr} * {w}"
                    self.emit(f"{v} = {expr}")
                    out[p.name] = v
                vals[s.out] = out
                continue
            for p in self.parts:
                if p.name not in x or not _in_columns(p, s):
                    continue
                a = x[p.name]
                v = f"v{k}_{p.name}"
                if s.op == "row_scale":
                    e = f"{a} * rstd_in[:, None]"
                elif s.op == "bias":
                    e = f"{a} + {self.load_param(s.param, 'b', p, per_group=False)}"
                elif s.op == "act":
                    e = _act(s.attrs["act"], a)
                elif s.op == "glu":
                    e = self.glu(a, vals[s.args[1]][p.name], s)
                elif s.op in ("add", "mul"):
                    y = s.args[1]
                    b = self.load_rows(y, p, n.width) if y in self.loads else vals[y][p.name]
                    e = f"{a} {'+' if s.op == 'add' else '*'} {b}"
                elif s.op == "rope":
                    if p.name not in ("lo", "hi"):
                        out[p.name] = a  # passes through
                        continue
                    c, sn = self.load_pos("cos", p), self.load_pos("sin", p)
                    other = x["hi" if p.name == "lo" else "lo"]
                    sign = "-" if p.name == "lo" else "+"
                    e = f"{a} * {c} {sign} {other} * {sn}"
                else:  # pragma: no cover - unsupported() refuses it
                    raise AssertionError(s.op)
                self.emit(f"{v} = {e}")
                out[p.name] = v
            vals[s.out] = out
        return vals

    def glu(self, g: str, u: str, s: Step) -> str:
        alpha, limit, offset = (
            s.attrs.get("alpha", 1.0),
            s.attrs.get("limit"),
            s.attrs.get("offset", 0.0),
        )
        if alpha == 1.0 and limit is None and not offset:
            return f"({_act(s.attrs['act'], g)}) * {u}"
        if limit is not None:
            self.emit(f"{g}c = tl.minimum({g}, {limit!r})")
            self.emit(f"{u}c = tl.minimum(tl.maximum({u}, {-limit!r}), {limit!r})")
            g, u = f"{g}c", f"{u}c"
        return f"({u} + {offset!r}) * ({g} * tl.sigmoid({g} * {alpha!r}))"

    def store_columns(self, name: str) -> tuple[int, int]:
        """The column range of the group a store covers (its value's parts)."""
        for s in self.node.program:
            if s.out == name and "columns" in s.attrs:
                return s.attrs["columns"]
        return 0, self.group

    def forward_source(self) -> str:
        n = self.node
        self.lines = []
        self.head("fwd", backward=False)
        vals = self.forward_steps()
        for st in n.stores:
            v = vals[st.name]
            if "row" in v:
                # a partial sum per column tile
                self.emit(f"tl.atomic_add(S_{st.name} + rows, {v['row']}, mask=rmask)")
                continue
            lo, _ = self.store_columns(st.name)
            if st.cache:
                # row b * T_POS + t, column h * head_dim + d -> cache[b, h, CACHE_START + t, d]
                self.emit(
                    f"base_{st.name} = (rows // T_POS).to(tl.int64) * ({st.width} * CACHE_L) + "
                    f"(CACHE_START + pos).to(tl.int64) * {st.head_dim}"
                )
            for p in self.parts:
                if p.name in v:
                    col = f"col_{p.name}" if lo == 0 else f"(col_{p.name} - {lo})"
                    if st.cache:
                        hd = st.head_dim
                        addr = (
                            f"base_{st.name}[:, None] + (({col}) // {hd} * CACHE_L * {hd} + "
                            f"({col}) % {hd})[None, :]"
                        )
                    else:
                        addr = f"rows[:, None] * {st.width} + {col}[None, :]"
                    self.emit(
                        f"tl.store(S_{st.name} + {addr}, "
                        f"{v[p.name]}.to(S_{st.name}.dtype.element_ty), mask=m_{p.name})"
                    )
        return "\n".join(self.lines) + "\n"

    # --- backward program ---
    def backward_source(self) -> str:
        """d(stores) -> d(acc_w) [rows, width] float32, d(loaded rows), d(rstd of the
        prologue) [rows] and the steps' parameter gradients (float32, atomically summed),
        each step by its derivative rule, in reverse order."""
        n = self.node
        self.lines = []
        self.head("bwd", backward=True)
        vals = self.forward_steps()
        grads: dict[str, dict[str, str]] = {}
        counter = [0]

        def acc(value: str, part: str, expr: str) -> None:
            g = grads.setdefault(value, {})
            counter[0] += 1
            v = f"g{counter[0]}_{part}"
            self.emit(f"{v} = {expr}" if part not in g else f"{v} = {g[part]} + ({expr})")
            g[part] = v

        for st in n.stores:
            v = vals[st.name]
            if "row" in v:
                acc(st.name, "row", f"tl.load(DS_{st.name} + rows, mask=rmask, other=0.0)")
                continue
            lo, _ = self.store_columns(st.name)
            for p in self.parts:
                if p.name in v:
                    col = f"col_{p.name}" if lo == 0 else f"(col_{p.name} - {lo})"
                    acc(
                        st.name,
                        p.name,
                        f"tl.load(DS_{st.name} + rows[:, None] * {st.width} + "
                        f"{col}[None, :], mask=m_{p.name}, other=0.0).to(tl.float32)",
                    )
        self.emit("drstd = tl.zeros([BM], dtype=tl.float32)")
        for k in range(len(n.program) - 1, -1, -1):
            s = n.program[k]
            dout = grads.get(s.out)
            if not dout:
                continue
            x = vals[s.args[0]]
            a0 = s.args[0]
            if s.op == "sumsq":
                for p, xv in x.items():
                    acc(a0, p, f"{dout['row']}[:, None] * 2.0 * {xv}")
                continue
            if s.op == "rms_norm":
                parts = [p for p in self.parts if p.name in dout]
                cols = s.attrs.get("columns")
                width = (cols[1] - cols[0]) if cols else self.group
                off, _ = self.weight_offset(s)
                self.emit(f"dot{k} = tl.zeros([BM], dtype=tl.float32)")
                for p in parts:
                    xh = f"xh{k}_{p.name}"
                    self.emit(f"{xh} = {x[p.name]} * r{k}[:, None]")
                    dxh = f"dxh{k}_{p.name}"
                    if s.param:
                        w = self.load_param(
                            s.param, "w", p, off, True, bool(s.attrs.get("unit_offset"))
                        )
                        self.emit(f"{dxh} = {dout[p.name]} * {w}")
                        self.emit(
                            f"tl.atomic_add(DP_{self.pname(s.param, 'w')} + "
                            f"c_{p.name} - {off}, tl.sum({dout[p.name]} * {xh}, 0), "
                            f"mask=cm_{p.name})"
                        )
                    else:
                        self.emit(f"{dxh} = {dout[p.name]}")
                    self.emit(f"dot{k} += tl.sum({dxh} * {xh}, 1)")
                for p in parts:
                    acc(
                        a0,
                        p.name,
                        f"r{k}[:, None] * (dxh{k}_{p.name} - xh{k}_{p.name} * "
                        f"(dot{k} / {width})[:, None])",
                    )
                continue
            for p in self.parts:
                if p.name not in dout:
                    continue
                d = dout[p.name]
                a = x.get(p.name)
                if s.op == "row_scale":
                    acc(a0, p.name, f"{d} * rstd_in[:, None]")
                    self.emit(f"drstd += tl.sum({d} * {a}, 1)")
                elif s.op == "bias":
                    acc(a0, p.name, d)
                    self.emit(
                        f"tl.atomic_add(DP_{self.pname(s.param, 'b')} + "
                        + (f"ex * {n.width} + " if n.experts else "")
                        + f"col_{p.name}, "
                        f"tl.sum({d}, 0), mask=cm_{p.name})"
                    )
                elif s.op == "act":
                    acc(a0, p.name, f"{d} * ({_dact(s.attrs['act'], a)})")
                elif s.op == "glu":
                    u = vals[s.args[1]][p.name]
                    acc(a0, p.name, f"{d} * {u} * ({_dact(s.attrs['act'], a)})")
                    acc(s.args[1], p.name, f"{d} * ({_act(s.attrs['act'], a)})")
                elif s.op == "add":
                    acc(a0, p.name, d)
                    y = s.args[1]
                    if y in self.loads:
                        self.emit(
                            f"tl.store(DL_{y} + rows[:, None] * {n.width} + "
                            f"col_{p.name}[None, :], {d}, mask=m_{p.name})"
                        )
                    else:
                        acc(y, p.name, d)
                elif s.op == "rope":
                    if p.name not in ("lo", "hi"):
                        acc(a0, p.name, d)
                        continue
                    c, sn = f"ld_cos_{p.name}", f"ld_sin_{p.name}"
                    other = "hi" if p.name == "lo" else "lo"
                    do = dout[other]
                    # lo' = lo c - hi s, hi' = hi c + lo s (same c, s for a pair)
                    sign = "+" if p.name == "lo" else "-"
                    acc(a0, p.name, f"{d} * {c} {sign} {do} * {sn}")
                else:  # pragma: no cover - backward_unsupported() refuses it
                    raise AssertionError(s.op)
        for i, a in enumerate(n.accs):
            for p in self.parts:
                g = grads.get(a, {}).get(p.name)
                if g is not None:
                    self.emit(
                        f"tl.store(DACC{i} + rows[:, None] * {n.width} + "
                        f"col_{p.name}[None, :], {g}, mask=m_{p.name})"
                    )
        if n.prologue.norm:
            self.emit("tl.atomic_add(DRSTD + rows, drstd, mask=rmask)")
        return "\n".join(self.lines) + "\n"


def backward_unsupported(node: Gemm) -> str | None:
    """Why the generator has no backward for `node` (None: it has)."""
    why = unsupported(node)
    if why:
        return why
    if any(s.cache for s in node.stores):
        return "a KV-cache store (decoding writes the cache; training stores the keys)"
    for s in node.program:
        if s.op == "mul":
            return "step 'mul'"
        if s.op == "glu" and (
            s.attrs.get("alpha", 1.0) != 1.0 or s.attrs.get("limit") or s.attrs.get("offset")
        ):
            return "the clamped SwiGLU"
    return None


# --- compiling generated source ---------------------------------------------------------------
_CACHE: dict[str, Any] = {}


def compile_source(source: str, name: str) -> Any:
    """triton.jit needs the function's source in a file: write it once per distinct text."""
    # imported here, not with the package: TRITON_INTERPRET is read when triton is imported
    try:
        import triton  # noqa: F401
    except ImportError:
        raise RuntimeError("fusion: triton is not installed (pip install triton)") from None
    key = hashlib.sha1(source.encode()).hexdigest()[:16]
    if key in _CACHE:
        return getattr(_CACHE[key], name)
    text = "import triton\nimport triton.language as tl\n\n\n" + source
    directory = os.path.join(tempfile.gettempdir(), "glassformer_fusion")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"k_{key}.py")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(f"glassformer_fusion_k_{key}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    _CACHE[key] = module
    return getattr(module, name)
