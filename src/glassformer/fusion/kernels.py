"""Running a `Gemm` node: its generated Triton kernel, and the reference PyTorch program.

`reference` interprets the node's program op by op on whole tensors (what each kernel must
equal); `run` launches the kernel `codegen` generates from the same program. Inputs are 2-D
[rows, width] (rows = batch x tokens); `params` maps a module path of the block (the node's
weights, the prologue's norm, each step's `param`) to its module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from glassformer.fusion.codegen import _Gen, backward_unsupported, compile_source, layout
from glassformer.fusion.ir import Gemm, Step

__all__ = ["CacheSlots", "node_apply", "reference", "run", "tiles"]


def tiles(device: torch.device, node: Gemm | None = None) -> tuple[int, int, int]:
    """(BM, BK, BN): on a GPU, tiles for tensor cores, with fewer rows when a row reduction
    keeps a whole row (d_model columns) of accumulators in one program; under the interpreter,
    tiles small enough that the tiny test shapes cross several of them."""
    if device.type != "cuda":
        return 32, 32, 32
    widest = max((p.size for p in layout(node)[1]), default=64) if node is not None else 64
    return (64 if widest <= 256 else 16), 32, 64


# --- parameters and expert routing ------------------------------------------------------------
def weight_of(params: Mapping[str, nn.Module], path: str) -> torch.Tensor:
    """The weight at `path`: a module's `.weight`, or a stacked expert parameter of the block."""
    m = params.get(path)
    return m.weight if m is not None else params[""].get_parameter(path)


def bias_of(params: Mapping[str, nn.Module], path: str) -> torch.Tensor:
    m = params.get(path)
    return m.bias if m is not None else params[""].get_parameter(path + "_bias")


def key_of(params: Mapping[str, nn.Module], path: str, kind: str) -> str:
    """The parameter's name in the block ("w": weight, "b": bias)."""
    if params.get(path) is not None:
        return f"{path}.{'bias' if kind == 'b' else 'weight'}"
    return path + ("_bias" if kind == "b" else "")


@dataclass(frozen=True)
class Route:
    """Rows of a grouped expert GEMM: (token, choice) pairs sorted by expert, each expert's run
    padded to the kernel's BM rows so that a row block has one expert. `row_src`: the input row
    of each row (-1: padding); `row_expert`; `block_expert`: each row block's expert; `pair`:
    the flat (token * k + choice) index of each row (-1: padding)."""

    row_src: torch.Tensor
    row_expert: torch.Tensor
    block_expert: torch.Tensor
    pair: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        return self.row_src >= 0

    def rows_of_output(self) -> Route:
        """The same rows read back by the next grouped GEMM: its input row is the row itself."""
        rows = torch.arange(self.row_src.numel(), device=self.row_src.device)
        return Route(
            torch.where(self.valid, rows, -1), self.row_expert, self.block_expert, self.pair
        )


def route(ids: torch.Tensor, n_experts: int, bm: int) -> Route:
    """ids [tokens, k] (each token's experts) -> the padded, expert-sorted rows."""
    k = ids.shape[1]
    flat = ids.flatten()
    order = flat.argsort(stable=True)
    counts = torch.bincount(flat, minlength=n_experts).tolist()
    src, expert, pair, blocks = [], [], [], []
    start = 0
    for e, c in enumerate(counts):
        if c == 0:
            continue
        padded = -(-c // bm) * bm
        chosen = order[start : start + c]
        pad = torch.full((padded - c,), -1, dtype=torch.long, device=ids.device)
        src.append(torch.cat((chosen // k, pad)))
        pair.append(torch.cat((chosen, pad)))
        expert.append(torch.full((padded,), e, dtype=torch.long, device=ids.device))
        blocks += [e] * (padded // bm)
        start += c
    return Route(
        torch.cat(src),
        torch.cat(expert),
        torch.tensor(blocks, dtype=torch.long, device=ids.device),
        torch.cat(pair),
    )


@dataclass(frozen=True)
class CacheSlots:
    """Where a node's cache store writes: `buffer` [batch, heads, slots, head_dim] (a
    `LayerCache`'s keys or values), token t of each sequence to slot `start` + t."""

    buffer: torch.Tensor
    start: int


def _write_cache(
    node: Gemm, vals: Mapping[str, torch.Tensor], cache: CacheSlots | None, positions: int | None
) -> dict[str, torch.Tensor]:
    """The reference cache store: rows [B * T, H * D] into buffer[:, :, start:start + T]."""
    out = {}
    for st in node.stores:
        if not st.cache:
            out[st.name] = vals[st.name]
            continue
        if cache is None:
            raise ValueError(f"fusion: {node.name}: a cache store needs its cache slots")
        buf = cache.buffer
        m = vals[st.name].shape[0]
        t = positions or m
        rows = vals[st.name].view(m // t, t, -1, st.head_dim).transpose(1, 2)
        buf.narrow(2, cache.start, t).copy_(rows.to(buf.dtype))
        out[st.name] = buf
    return out


# --- the reference program -------------------------------------------------------------------
def _rope_ref(x: torch.Tensor, node: Gemm, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [M, width] -> RoPE on dims offset..offset+dim of each group (as components/rope.py)."""
    assert node.rope is not None
    m = x.shape[0]
    g = node.group or node.width
    x = x.view(m, -1, g)
    o, r = node.rope.offset, node.rope.dim
    seg = x[..., o : o + r]
    c, s = cos[:, None], sin[:, None]
    if node.rope.interleaved:
        a, b = seg[..., 0::2], seg[..., 1::2]
        rot = torch.stack((a * c - b * s, b * c + a * s), -1).flatten(-2)
    else:
        a, b = seg[..., : r // 2], seg[..., r // 2 :]
        rot = torch.cat((a * c - b * s, b * c + a * s), -1)
    return torch.cat((x[..., :o], rot, x[..., o + r :]), -1).reshape(m, -1)


def _act_ref(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "silu":
        return torch.nn.functional.silu(x)
    if name == "relu":
        return torch.relu(x)
    if name == "gelu":
        return torch.nn.functional.gelu(x)
    return torch.nn.functional.gelu(x, approximate="tanh")


def _cols(step: Step, width: int) -> slice:
    c = step.attrs.get("columns")
    return slice(*c) if c else slice(0, width)


def reference(
    node: Gemm,
    params: Mapping[str, nn.Module],
    x: torch.Tensor,
    loads: Mapping[str, torch.Tensor] | None = None,
    gate: torch.Tensor | None = None,
    stats: torch.Tensor | None = None,
    rows: Route | None = None,
    cache: CacheSlots | None = None,
    positions: int | None = None,
) -> dict[str, torch.Tensor]:
    """The node's stores, computed in float32 by PyTorch ops (autograd flows through it).
    `loads`: the tensors its program loads ([rows, width]; cos and sin as [rows, rot/2]);
    `rows`: a grouped node's routing (its padding rows come out zero); `cache`: where a cache
    store writes (its value in the result is the cache buffer), `positions` tokens per
    sequence."""
    loads = dict(loads or {})
    pro = node.prologue
    xf = x.float()
    if gate is not None:
        xf = xf * torch.sigmoid(gate.float())
    rstd_in = None
    if pro.norm:
        w = weight_of(params, pro.norm).float()
        sumsq = xf.pow(2).sum(-1) if stats is None else stats.float()
        rstd_in = torch.rsqrt(sumsq / x.shape[1] + pro.eps)
        xf = xf * (1.0 + w if pro.unit_offset else w)
    a = xf.to(x.dtype)
    vals: dict[str, torch.Tensor] = {}
    for acc, path in zip(node.accs, node.weights, strict=True):
        if rows is None:
            vals[acc] = a.float() @ weight_of(params, path).float().t()
        else:  # each row through its expert's weight
            a_rows = a.float()[rows.row_src.clamp(min=0)]
            w_rows = weight_of(params, path).float()[rows.row_expert]
            vals[acc] = torch.einsum("rk,rnk->rn", a_rows, w_rows)
    for s in node.program:
        v = vals[s.args[0]]
        if s.op == "row_scale":
            assert rstd_in is not None
            out = v * rstd_in[:, None]
        elif s.op == "bias":
            b = bias_of(params, s.param).float()
            out = v + (b if rows is None else b[rows.row_expert])
        elif s.op == "act":
            out = _act_ref(s.attrs["act"], v)
        elif s.op == "glu":
            g, u = v, vals[s.args[1]]
            alpha, limit, off = s.attrs["alpha"], s.attrs.get("limit"), s.attrs["offset"]
            if alpha == 1.0 and limit is None and not off:
                out = _act_ref(s.attrs["act"], g) * u
            else:
                if limit is not None:
                    g, u = g.clamp(max=limit), u.clamp(-limit, limit)
                out = (u + off) * (g * torch.sigmoid(g * alpha))
        elif s.op in ("add", "mul"):
            y = loads[s.args[1]].float() if s.args[1] in loads else vals[s.args[1]]
            out = v + y if s.op == "add" else v * y
        elif s.op == "rope":
            cols = _cols(s, node.width)
            full = _rope_ref(v, node, loads["cos"].float(), loads["sin"].float())
            out = full[:, cols]
        elif s.op == "rms_norm":
            cols = _cols(s, node.width)
            seg = v[:, cols]
            per_head = s.attrs.get("group") == "head"
            m = seg.shape[0]
            grp = seg.view(m, -1, node.group) if per_head else seg.view(m, 1, -1)
            out = grp * torch.rsqrt(grp.pow(2).mean(-1, keepdim=True) + s.attrs["eps"])
            if s.param:
                w = weight_of(params, s.param).float()
                out = out * (1.0 + w if s.attrs.get("unit_offset") else w)
            out = out.reshape(m, -1)
        elif s.op == "sumsq":
            out = v.pow(2).sum(-1)
        else:
            raise ValueError(f"fusion: {node.name}: step {s.op!r} has no reference")
        vals[s.out] = out
    if rows is not None:
        return {st.name: vals[st.name] * rows.valid[:, None] for st in node.stores}
    return _write_cache(node, vals, cache, positions)


# --- the generated kernel ----------------------------------------------------------------------
def _source(node: Gemm, ieee: bool, tile: int, widen: bool) -> tuple[_Gen, str]:
    gen = _Gen(node, tile, ieee, widen)
    return gen, gen.forward_source()


def run(
    node: Gemm,
    params: Mapping[str, nn.Module],
    x: torch.Tensor,
    loads: Mapping[str, torch.Tensor] | None = None,
    gate: torch.Tensor | None = None,
    stats: torch.Tensor | None = None,
    positions: int | None = None,
    rows: Route | None = None,
    cache: CacheSlots | None = None,
) -> dict[str, torch.Tensor]:
    """The node's stores from its generated kernel: outputs in x's dtype, statistics in
    float32. `positions`: tokens per sequence (row r's cos/sin row is r mod positions);
    `rows`: a grouped node's routing (built with this device's BM, `tiles`); `cache`: where a
    cache store writes (its value in the result is the cache buffer)."""
    loads = dict(loads or {})
    bm, bk, bn = tiles(x.device, node)
    gen, src = _source(node, x.dtype == torch.float32, bn, x.device.type != "cuda")
    fn = compile_source(src, "fwd")
    m = x.shape[0] if rows is None else rows.row_src.numel()
    args: list[object] = [x.contiguous()]
    if node.prologue.gate:
        assert gate is not None
        args.append(gate.contiguous())
    if rows is not None:
        args += [rows.row_src, rows.block_expert]
    if node.prologue.norm:
        args.append(weight_of(params, node.prologue.norm))
        if node.prologue.stats != "loop":
            assert stats is not None
            args.append(stats.contiguous())
    args += [weight_of(params, w) for w in node.weights]
    for p in gen.params:
        for k in gen.pkinds(p):
            args.append(bias_of(params, p) if k == "b" else weight_of(params, p))
    args += [loads[name].contiguous() for name in gen.loads]
    outs = {}
    for st in node.stores:
        if st.cache:
            if cache is None:
                raise ValueError(f"fusion: {node.name}: a cache store needs its cache slots")
            t = positions or m
            if cache.start + t > cache.buffer.shape[2]:
                raise ValueError(
                    f"KV cache full: {cache.start + t} positions exceed its capacity "
                    f"{cache.buffer.shape[2]}"
                )
            outs[st.name] = cache.buffer
        elif st.f32 or rows is not None:  # statistics add partial sums; padding rows stay 0
            dtype = torch.float32 if st.f32 else x.dtype
            outs[st.name] = torch.zeros(m, st.width, device=x.device, dtype=dtype)
        else:
            outs[st.name] = torch.empty(m, st.width, device=x.device, dtype=x.dtype)
        args.append(outs[st.name])
    args += [m, positions or m]
    if cache is not None:
        args += [cache.start, cache.buffer.shape[2]]
    grid = (math.ceil(m / bm), gen.n_groups)
    fn[grid](*args, BM=bm, BK=bk)
    # statistics are one float per row: [rows]
    return {k: (v[:, 0] if v.shape[1] == 1 and k == "sumsq" else v) for k, v in outs.items()}


# --- autograd ---------------------------------------------------------------------------------
def node_parameters(node: Gemm, params: Mapping[str, nn.Module]) -> list[torch.Tensor]:
    """Every parameter the node reads: its weights, its prologue norm's, its steps'."""
    return [(bias_of if k == "b" else weight_of)(params, p) for p, k in node_parameter_paths(node)]


def node_parameter_paths(node: Gemm) -> list[tuple[str, str]]:
    """(path, "w" or "b") of every parameter the node reads, in `node_parameters`' order."""
    out = [(w, "w") for w in node.weights]
    if node.prologue.norm:
        out.append((node.prologue.norm, "w"))
    out += [(s.param, "b" if s.op == "bias" else "w") for s in node.program if s.param]
    return out


def run_backward(
    node: Gemm,
    params: Mapping[str, nn.Module],
    x: torch.Tensor,
    grads: Mapping[str, torch.Tensor | None],
    loads: Mapping[str, torch.Tensor] | None = None,
    gate: torch.Tensor | None = None,
    stats: torch.Tensor | None = None,
    positions: int | None = None,
    rows: Route | None = None,
) -> dict[str, torch.Tensor | None]:
    """Gradients of the node's inputs and parameters from the gradients of its stores: the
    generated backward kernel gives d(acc_w), the loaded rows' and the row statistics'
    gradients and the steps' parameter gradients; the GEMM's backward (dX = dacc W,
    dW = dacc^T X) and the prologue's are PyTorch ops here. Keys: "input", "gate", "stats", each
    load's name, and each parameter's name in the block (`key_of`)."""
    loads = dict(loads or {})
    bm, bk, bn = tiles(x.device, node)
    gen = _Gen(node, bn, x.dtype == torch.float32, x.device.type != "cuda")
    fn = compile_source(gen.backward_source(), "bwd")
    m = x.shape[0] if rows is None else rows.row_src.numel()
    f32 = dict(device=x.device, dtype=torch.float32)
    pro = node.prologue
    args: list[object] = [x.contiguous()]
    if pro.gate:
        args.append(gate.contiguous())
    if rows is not None:
        args += [rows.row_src, rows.block_expert]
    if pro.norm:
        args.append(weight_of(params, pro.norm))
        if pro.stats != "loop":
            args.append(stats.contiguous())
    args += [weight_of(params, w) for w in node.weights]
    pargs = []
    for p in gen.params:
        for k in gen.pkinds(p):
            t = bias_of(params, p) if k == "b" else weight_of(params, p)
            args.append(t)
            pargs.append((p, k, t))
    args += [loads[name].contiguous() for name in gen.loads]
    for st in node.stores:
        g = grads.get(st.name)
        shape = (m,) if st.name == "sumsq" else (m, st.width)
        args.append(torch.zeros(shape, **f32) if g is None else g.float().contiguous())
    dacc = [torch.zeros(m, node.width, **f32) for _ in node.weights]
    args += dacc
    dloads = {
        name: torch.zeros(m, loads[name].shape[1], **f32)
        for name in gen.loads
        if name not in ("cos", "sin")
    }
    args += list(dloads.values())
    drstd = torch.zeros(m, **f32)
    if pro.norm:
        args.append(drstd)
    dparams = [torch.zeros(t.shape, **f32) for _, _, t in pargs]
    args += dparams
    args += [m, positions or m]
    fn[(math.ceil(m / bm), gen.n_groups)](*args, BM=bm, BK=bk)

    # the GEMM and the prologue, in PyTorch: a = prologue(x) as the kernel fed it to tl.dot
    out: dict[str, torch.Tensor | None] = {}
    xf = x.float()
    scale = torch.ones_like(xf)
    if pro.gate:
        sg = torch.sigmoid(gate.float())
        scale = scale * sg
    if pro.norm:
        w = weight_of(params, pro.norm).float()
        wn = 1.0 + w if pro.unit_offset else w
        scale = scale * wn
    a = (xf * scale).to(x.dtype).float()
    da = torch.zeros_like(xf)
    for path, d in zip(node.weights, dacc, strict=True):
        weight = weight_of(params, path)
        if rows is None:
            out[key_of(params, path, "w")] = (d.t() @ a).to(weight.dtype)
            da += d @ weight.float()
            continue
        # grouped: each expert's rows through its own weight; rows gathered, gradients added
        dw = torch.zeros(weight.shape, **f32)
        for e in rows.block_expert.unique().tolist():
            sel = (rows.row_expert == e) & rows.valid
            src = rows.row_src[sel]
            dw[e] = d[sel].t() @ a[src]
            da.index_add_(0, src, d[sel] @ weight[e].float())
        out[key_of(params, path, "w")] = dw.to(weight.dtype)
    dx = da * scale
    if pro.gate:
        wpart = wn if pro.norm else 1.0
        out["gate"] = (da * xf * wpart * sg * (1 - sg)).to(gate.dtype)
    if pro.norm:
        sg_part = sg if pro.gate else 1.0
        norm_w = weight_of(params, pro.norm)
        out[key_of(params, pro.norm, "w")] = (da * xf * sg_part).sum(0).to(norm_w.dtype)
        # rstd = (sumsq / K + eps)^-1/2: d rstd / d sumsq = -rstd^3 / (2 K)
        sumsq = xf.pow(2).sum(-1) if pro.stats == "loop" else stats.float()
        rstd = torch.rsqrt(sumsq / x.shape[1] + pro.eps)
        dsumsq = -0.5 * drstd * rstd.pow(3) / x.shape[1]
        if pro.stats == "loop":
            dx = dx + 2.0 * dsumsq[:, None] * xf
        else:
            out["stats"] = dsumsq.to(stats.dtype)
    out["input"] = dx.to(x.dtype)
    for name, d in dloads.items():
        out[name] = d.to(loads[name].dtype)
    for (path, kind, t), d in zip(pargs, dparams, strict=True):
        out[key_of(params, path, kind)] = d.to(t.dtype)
    return out


class _NodeFunction(torch.autograd.Function):
    """Forward: the generated kernel. Backward: the generated backward kernel and the GEMM's
    backward in PyTorch (`run_backward`), or, for a program the generator has no backward for,
    autograd through the reference program recomputed from the saved inputs."""

    @staticmethod
    def forward(ctx, node, params, names, positions, rows, x, gate, stats, *tensors):  # type: ignore[override]
        loads = dict(zip(names, tensors[: len(names)], strict=True))
        outs = run(node, params, x, loads, gate, stats, positions, rows)
        ctx.node, ctx.params, ctx.names, ctx.positions = node, params, names, positions
        ctx.rows = rows
        ctx.save_for_backward(x, gate, stats, *tensors)
        return tuple(outs[s.name] for s in node.stores)

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        x, gate, stats, *tensors = ctx.saved_tensors
        node, names = ctx.node, ctx.names
        n_loads = len(names)
        loads = dict(zip(names, tensors[:n_loads], strict=True))
        g = {s.name: gr for s, gr in zip(node.stores, grads, strict=True)}
        if backward_unsupported(node) is None:
            got = run_backward(node, ctx.params, x, g, loads, gate, stats, ctx.positions, ctx.rows)
            keys = [key_of(ctx.params, p, k) for p, k in node_parameter_paths(node)]
            return (
                None,
                None,
                None,
                None,
                None,
                got.get("input"),
                got.get("gate"),
                got.get("stats"),
                *(got.get(n) for n in names),
                *(got.get(k) for k in keys),
            )
        with torch.enable_grad():
            xs = [
                t.detach().requires_grad_(t.requires_grad) if t is not None else None
                for t in (x, gate, stats)
            ]
            lv = {n: t.detach().requires_grad_(t.requires_grad) for n, t in loads.items()}
            outs = reference(node, ctx.params, xs[0], lv, xs[1], xs[2], ctx.rows)
            everything = (*xs, *lv.values(), *tensors[n_loads:])
            inputs = [t for t in everything if t is not None and t.requires_grad]
            pairs = [
                (outs[s.name], gr)
                for s, gr in zip(node.stores, grads, strict=True)
                if gr is not None
            ]
            got_t = torch.autograd.grad(
                [p[0] for p in pairs], inputs, [p[1] for p in pairs], allow_unused=True
            )
        it = iter(got_t)
        result = []
        for t in everything:
            gr = next(it) if t is not None and t.requires_grad else None
            result.append(None if gr is None else gr.to(t.dtype))
        return (None, None, None, None, None, *result)


def node_apply(
    node: Gemm,
    params: Mapping[str, nn.Module],
    x: torch.Tensor,
    loads: Mapping[str, torch.Tensor] | None = None,
    gate: torch.Tensor | None = None,
    stats: torch.Tensor | None = None,
    positions: int | None = None,
    rows: Route | None = None,
) -> dict[str, torch.Tensor]:
    """`run` with gradients: the node's stores as a dict."""
    loads = {ld.name: loads[ld.name] for ld in node.loads} if node.loads else {}
    names = tuple(loads)
    outs = _NodeFunction.apply(
        node,
        params,
        names,
        positions,
        rows,
        x,
        gate,
        stats,
        *loads.values(),
        *node_parameters(node, params),
    )
    return {s.name: o for s, o in zip(node.stores, outs, strict=True)}
