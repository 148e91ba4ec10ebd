"""The block as GEMMs with epilogue programs: a small IR built from the `Config`.

CODA's view of a Transformer block (GEMM-epilogue fusion): almost everything between two matrix
products is per row, so it can run on the GEMM's output tile before that tile is stored:

    y = epilogue(prologue(x) W)

A block is a list of nodes. A `Gemm` node multiplies one input by one or more weights that share
it (gate and up; the experts as one grouped node) and runs a `Step` program on the
accumulators: element-wise ops (bias, activation, GLU, RoPE, residual add, row scale) and row
reductions (RMSNorm over the row or over each head, the next norm's statistics). Its prologue
may normalise the input on the fly (x * w per input column, 1/rms per row in the epilogue), so a
normalised tensor is never written. An `Opaque` node is what cannot live in an epilogue because
it mixes rows: attention (softmax over keys), the router's top-k and the scatter back of expert
outputs, a linear-attention layer's recurrence. Its cost is the explorer's, unfused.

Traffic (`Gemm.traffic`) is counted in activation elements per token: a fused kernel reads its
input and the tensors its program loads and writes what it stores; the unfused sequence also
writes every intermediate once and reads it back once per reader. Weights move the same either
way and are not counted. The explorer's epilogue view (`explorer_fusion`) is derived from these
counts, and the code generator (`codegen.py`) emits one kernel per `Gemm` from the same program.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from glassformer.config import Config

StepKind = Literal["elementwise", "row_reduction"]

# op -> kind; what each op computes (x: the first argument, y: the second)
OPS: dict[str, tuple[StepKind, str]] = {
    "bias": ("elementwise", "x + b[col]"),
    "row_scale": ("elementwise", "x * rstd[row]  (the input norm's 1/rms)"),
    "act": ("elementwise", "act(x)"),
    "glu": ("elementwise", "act(x) * y  (clamped SwiGLU when alpha/limit/offset are set)"),
    "rope": ("elementwise", "rotate pairs of dims by cos/sin[row] (half-split or interleaved)"),
    "add": ("elementwise", "x + y"),
    "mul": ("elementwise", "x * y"),
    "rms_norm": ("row_reduction", "x / sqrt(mean(x^2) + eps) * w  over each group of columns"),
    "layer_norm": ("row_reduction", "(x - mean(x)) / sqrt(var(x) + eps) * w + b  over the row"),
    "sumsq": (
        "row_reduction",
        "sum(x^2) over the row: the next norm's statistics (its consumer takes "
        "1 / sqrt(sumsq / width + eps)); column tiles add their partial sums",
    ),
}


@dataclass(frozen=True)
class Step:
    """out = op(args...). `param`: the vector parameter it reads (a module path in the block);
    `explorer`: the explorer op whose traffic this step removes when fused."""

    op: str
    out: str
    args: tuple[str, ...]
    param: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    explorer: str | None = None

    @property
    def kind(self) -> StepKind:
        return OPS[self.op][0]


@dataclass(frozen=True)
class Load:
    """A tensor the program reads besides the accumulators: `width` elements per token
    (per row of the GEMM); `kind` "rows" [tokens, width], "positions" cos/sin [tokens, width]."""

    name: str
    width: int
    kind: str = "rows"


@dataclass(frozen=True)
class Store:
    """A tensor the kernel writes: `width` elements per row, `f32` for statistics. A `cache`
    store writes the rows straight into the KV cache's slots ([batch, heads, slots,
    `head_dim`], token t of a sequence to slot start + t) instead of a tensor of its own: the
    attention then reads the keys from the cache, and the separate copy into the cache (a read
    and a write of the keys) is gone."""

    name: str
    width: int
    f32: bool = False
    cache: bool = False
    head_dim: int = 0


@dataclass(frozen=True)
class Prologue:
    """The input's norm applied inside the GEMM: each input column scaled by the norm's weight
    (w, or 1 + w), each row by 1/rms (the `row_scale` step). `stats`: "loop" when the kernel
    accumulates sum(x^2) while it streams x through the K loop, else the name of a loaded
    statistics tensor written by the kernel that produced x. `gate`: the input is o * sigmoid(g)
    (gated attention), g loaded beside it."""

    norm: str | None = None  # module path of the norm, None: no norm
    kind: str = "rmsnorm"  # or "layernorm" (mean and variance in the K loop)
    unit_offset: bool = False
    eps: float = 1e-6
    stats: str = "loop"
    gate: str | None = None
    explorer: str | None = None  # the norm's explorer op, when this node hosts its saving


@dataclass(frozen=True)
class Rope:
    """Where RoPE acts inside each group (head): `dim` dims from `offset`, paired half-split or
    interleaved."""

    offset: int
    dim: int
    interleaved: bool


@dataclass(frozen=True)
class Gemm:
    """acc_w = prologue(input) W_w^T for each weight w, then `program`. `width`: output columns
    per weight; `group`: the columns a row reduction spans (a head, or the whole row); `experts`:
    a grouped GEMM over that many experts, each row through `top_k` of them."""

    name: str
    input: str
    in_width: int
    weights: tuple[str, ...]  # module paths; one accumulator per weight: acc_<last part>
    width: int
    program: tuple[Step, ...]
    stores: tuple[Store, ...]
    loads: tuple[Load, ...] = ()
    prologue: Prologue = Prologue()
    group: int | None = None
    rope: Rope | None = None
    experts: int = 0
    top_k: int = 1
    explorer: str = ""  # the explorer op of the (first) GEMM

    @property
    def accs(self) -> tuple[str, ...]:
        return tuple("acc_" + w.split(".")[-1].removesuffix("_proj") for w in self.weights)

    @property
    def rows(self) -> int:
        """GEMM rows per token (top_k for the experts)."""
        return self.top_k if self.experts else 1

    def traffic(self) -> dict[str, Any]:
        """Activation elements moved per token by the fused kernel (its input, loads and
        stores) and by the unfused op sequence (each op reads its inputs and writes its output;
        each weight's GEMM reads the input again), and the difference split by explorer op."""
        r = self.rows
        pro = self.prologue
        loads = {ld.name: r * ld.width for ld in self.loads}
        if pro.norm and pro.stats != "loop":
            loads[pro.stats] = r
        stores = {s.name: r * s.width for s in self.stores}
        saved: dict[str, int] = {}
        for s in self.stores:
            if s.cache:  # unfused: the cache append reads the stored rows and writes them again
                unfused_cache = 2 * r * s.width
                saved["attn.kv_cache_write"] = saved.get("attn.kv_cache_write", 0) + unfused_cache
        fused_in = r * self.in_width * (2 if pro.gate else 1)
        fused = fused_in + sum(loads.values()) + sum(stores.values())

        def credit(key: str | None, n: int) -> None:
            key = key or self.explorer
            saved[key] = saved.get(key, 0) + n

        unfused = r * (self.in_width + self.width) * len(self.weights)
        unfused += sum(saved.values())  # the cache appends' read and write (fused: none)
        if pro.gate:  # o * sigmoid(g): read both, write the product
            unfused += 3 * r * self.in_width
            credit(pro.explorer, 2 * r * self.in_width)  # its write and the GEMM's read of it
        elif pro.norm and pro.explorer:  # the norm's read and write of x (its host node only)
            unfused += 2 * r * self.in_width
            credit(pro.explorer, 2 * r * self.in_width)  # its write and one GEMM's read
        if pro.norm and pro.stats != "loop":
            credit(pro.explorer or pro.norm, -r)  # the statistics it loads
        alias = {a: a for a in self.accs}
        width = {a: self.width for a in self.accs}
        stored = set(stores)
        read: set[tuple[str, tuple[int, int] | None]] = set()
        for step in self.program:
            if step.op in ("row_scale", "bias"):  # part of the GEMM (or the norm) unfused
                alias[step.out], width[step.out] = alias[step.args[0]], width[step.args[0]]
                continue
            if step.op == "sumsq":  # the norm's statistics: unfused, the norm computes them
                width[step.out] = 1
                credit(step.explorer, -r)  # stored; recomputing them would read the row
                continue
            cols = step.attrs.get("columns")
            span = cols[1] - cols[0] if cols else width[step.args[0]]
            if step.attrs.get("rope_columns_only"):  # MLA's q: the rope part of each head
                assert self.rope is not None and self.group is not None
                span = span // self.group * self.rope.dim
            unfused += r * span  # its output
            for a in step.args:
                if a in loads or a in ("cos", "sin"):
                    unfused += loads[a]
                    continue
                src = alias.get(a, a)
                unfused += r * span
                credit(step.explorer, r * span)  # not read back
                key = (src, cols)
                if key not in read and src not in stored:
                    credit(step.explorer, r * span)  # nor written by its producer
                read.add(key)
            alias[step.out], width[step.out] = step.out, span
        removed = unfused - fused
        credit(self.explorer, removed - sum(saved.values()))  # the input read once, not per weight
        return {
            "fused": fused,
            "unfused": unfused,
            "saved": {k: v for k, v in saved.items() if v},
            "loads": loads,
            "stores": stores,
        }


@dataclass(frozen=True)
class Opaque:
    """A node that ends a kernel: it mixes rows (or carries state across them)."""

    name: str
    label: str
    explorer: tuple[str, ...] = ()


Node = Gemm | Opaque


@dataclass(frozen=True)
class BlockProgram:
    layer: int
    layer_type: str
    nodes: tuple[Node, ...]

    def gemm(self, name: str) -> Gemm:
        node = next(n for n in self.nodes if n.name == name)
        assert isinstance(node, Gemm)
        return node

    @property
    def gemms(self) -> list[Gemm]:
        return [n for n in self.nodes if isinstance(n, Gemm)]

    def traffic(self) -> dict[str, int]:
        """Per token: fused and unfused elements over the block's GEMM nodes."""
        t = [g.traffic() for g in self.gemms]
        return {"fused": sum(x["fused"] for x in t), "unfused": sum(x["unfused"] for x in t)}

    def to_json(self) -> dict[str, Any]:
        nodes = []
        for n in self.nodes:
            d = asdict(n)
            d["node"] = "gemm" if isinstance(n, Gemm) else "opaque"
            if isinstance(n, Gemm):
                d["traffic_per_token"] = n.traffic()
                for s, step in zip(d["program"], n.program, strict=True):
                    s["kind"] = step.kind
            nodes.append(d)
        return {"layer": self.layer, "layer_type": self.layer_type, "nodes": nodes}


# --- building the program from a Config ----------------------------------------------------
def block_program(cfg: Config, layer: int, cached: bool = False) -> BlockProgram:
    """The block of `layer` as GEMM nodes and opaque nodes, as the config builds it. `cached`:
    decoding with a KV cache, the K and V projections store into the cache's slots."""
    b = _Builder(cfg, layer, cached)
    return BlockProgram(layer, cfg.layer_type(layer), tuple(b.build()))


class _Builder:
    def __init__(self, cfg: Config, layer: int, cached: bool = False) -> None:
        self.cfg, self.layer, self.cached = cfg, layer, cached
        self.nodes: list[Node] = []
        self.placement = cfg.norm_placement

    # the norm of the block input feeding the token mixer, and of the residual feeding the MLP
    def _input_norm(self, path: str, explorer: str, stats: str = "loop") -> Prologue:
        c = self.cfg
        if self.placement in ("output", "post"):
            return Prologue()
        return Prologue(path, c.norm, c.norm_unit_offset, c.norm_eps, stats, explorer=explorer)

    def build(self) -> list[Node]:
        c, layer = self.cfg, self.layer
        if c.layer_type(layer) == "linear":
            self.nodes.append(
                Opaque(
                    "attn",
                    "Gated DeltaNet linear attention (projections, short conv, chunked delta-rule "
                    "recurrence, gated norm, out_proj): not fused",
                )
            )
        elif c.attention == "mla":
            self._mla()
        else:
            self._mha()
        mix_out = "attn.out_proj" if c.layer_type(layer) == "linear" else "attn.o_proj"
        if c.layer_type(layer) != "linear":
            self.nodes.append(self._out_proj(mix_out))
        else:
            self.nodes.append(self._residual_only("attn"))
        self._ffn()
        return self.nodes

    def _residual_only(self, src: str) -> Opaque:
        return Opaque("attn_residual", f"x + {src}(x) outside a GEMM epilogue (not fused)")

    # --- attention ---
    def _mha(self) -> None:
        c, layer = self.cfg, self.layer
        h, hd = c.layer_n_heads(layer), c.layer_head_dim(layer)
        hkv = c.layer_n_kv_heads(layer)
        own_kv = c.kv_source(layer) is None
        rope = c.uses_rope(layer)
        rot = c.rope_dim_of(c.layer_type(layer)) if rope else 0
        r = Rope(0, rot, c.rope_interleaved) if rope else None
        prologue = self._input_norm("attn_norm", "attn_norm")
        gated = c.attn_output_gate
        heads = [("q", h)]
        if own_kv:
            heads.append(("k", hkv))
            if not c.layer_k_eq_v(layer):
                heads.append(("v", hkv))
        for i, (which, n_heads) in enumerate(heads):
            steps: list[Step] = []
            acc = f"acc_{which}"
            name = f"attn.{which}_proj"
            pro = prologue if i == 0 else replace(prologue, explorer=None)
            x = acc
            if pro.norm:
                steps.append(Step("row_scale", f"{which}0", (x,), explorer=pro.explorer and None))
                x = f"{which}0"
            if c.qkv_bias:
                steps.append(Step("bias", f"{which}1", (x,), name))
                x = f"{which}1"
            width = n_heads * hd * (2 if gated and which == "q" else 1)
            group = hd
            if which in ("q", "k") and c.qk_norm:
                scope_all = c.qk_norm_scope == "all"
                steps.append(
                    Step(
                        "rms_norm",
                        f"{which}_n",
                        (x,),
                        f"attn.{which}_norm",
                        {
                            "eps": c.norm_eps,
                            "unit_offset": c.norm_unit_offset,
                            "group": "row" if scope_all else "head",
                        },
                        explorer=f"attn.{which}_norm",
                    )
                )
                x = f"{which}_n"
            if which == "v" and c.v_norm:
                steps.append(
                    Step(
                        "rms_norm",
                        "v_n",
                        (x,),
                        None,
                        {"eps": c.norm_eps, "group": "head"},
                        explorer="attn.v_norm",
                    )
                )
                x = "v_n"
            if which in ("q", "k") and r is not None:
                steps.append(
                    Step("rope", f"{which}_r", (x, "cos", "sin"), explorer=f"attn.rope_{which}")
                )
                x = f"{which}_r"
                if c.qk_l2_norm:
                    steps.append(
                        Step(
                            "rms_norm",
                            f"{which}_l2",
                            (x,),
                            None,
                            {"eps": c.norm_eps, "group": "head"},
                            explorer=f"attn.{which}_l2norm",
                        )
                    )
                    x = f"{which}_l2"
            if gated and which == "q":
                # [q_h, g_h] per head: the gate rides along to the o_proj prologue; the query
                # half's norm and RoPE run unfused (`attn.q_gate_split`)
                steps = [s for s in steps if s.op in ("row_scale", "bias")]
                r_q = None
            else:
                r_q = r if which in ("q", "k") else None
            if steps and steps[-1].out != which:
                steps[-1] = Step(
                    steps[-1].op,
                    which,
                    steps[-1].args,
                    steps[-1].param,
                    steps[-1].attrs,
                    steps[-1].explorer,
                )
            out = which if steps else acc
            loads = (
                (Load("cos", rot // 2, "positions"), Load("sin", rot // 2, "positions"))
                if (r_q is not None)
                else ()
            )
            self.nodes.append(
                Gemm(
                    name,
                    "x",
                    c.d_model,
                    (name,),
                    width,
                    tuple(steps),
                    (Store(out, width, cache=self.cached and which != "q", head_dim=hd),),
                    loads,
                    pro,
                    group,
                    r_q,
                    explorer=name,
                )
            )
        if gated:
            self.nodes.append(
                Opaque(
                    "attn.q_gate_split",
                    "split [q_h, g_h] per head; the query's norm and RoPE unfused",
                )
            )
        self.nodes.append(
            Opaque(
                "attn.core",
                "softmax(scale q k^T + mask) v: a softmax over keys mixes rows (flash kernel"
                + (
                    "; keys and values read from the cache its K/V kernels wrote"
                    if own_kv and self.cached
                    else "; KV-cache append"
                    if own_kv
                    else "; keys and values of an earlier layer"
                )
                + ")",
                ("attn.scores", "attn.softmax", "attn.value")
                + (() if own_kv and self.cached else ("attn.kv_cache_write",)),
            )
        )

    def _latent_steps(
        self, norm: bool, proj: str, tmp: str, out: str, attrs: dict
    ) -> tuple[list[Step], str]:
        """MLA's down-projection `attn.<proj>_proj` epilogue: the input norm's row scale, the
        bias, then the latent's RMSNorm `attn.<proj>_norm` into `out` (`attrs`: its extra
        attributes). Returns the steps and the name of the tensor the norm reads."""
        steps = [Step("row_scale", f"{tmp}0", (f"acc_{proj}",))] if norm else []
        x = f"{tmp}0" if norm else f"acc_{proj}"
        if self.cfg.qkv_bias:
            steps.append(Step("bias", f"{tmp}1", (x,), f"attn.{proj}_proj"))
            x = f"{tmp}1"
        steps.append(
            Step(
                "rms_norm",
                out,
                (x,),
                f"attn.{proj}_norm",
                {"eps": 1e-6, "group": "row", **attrs},
                explorer=f"attn.{proj}_norm",
            )
        )
        return steps, x

    def _mla(self) -> None:
        c = self.cfg
        h = c.n_heads
        nope, rope_d, rank = c.qk_nope_head_dim, c.qk_rope_head_dim, c.kv_lora_rank
        qk = nope + rope_d
        pro = self._input_norm("attn_norm", "attn_norm")
        r = Rope(nope, rope_d, c.rope_interleaved) if c.position == "rope" else None
        rope_loads = (Load("cos", rope_d // 2, "positions"), Load("sin", rope_d // 2, "positions"))
        first = pro
        plain = replace(pro, explorer=None)
        if c.q_lora_rank is None:
            steps = [Step("row_scale", "q0", ("acc_q",))] if pro.norm else []
            x = "q0" if pro.norm else "acc_q"
            if r is not None:
                steps.append(
                    Step(
                        "rope",
                        "q",
                        (x, "cos", "sin"),
                        attrs={"rope_columns_only": True},
                        explorer="attn.rope_q",
                    )
                )
            self.nodes.append(
                Gemm(
                    "attn.q_proj",
                    "x",
                    c.d_model,
                    ("attn.q_proj",),
                    h * qk,
                    tuple(steps),
                    (Store("q", h * qk),),
                    rope_loads if r else (),
                    first,
                    qk,
                    r,
                    explorer="attn.q_proj",
                )
            )
        else:
            rq = c.q_lora_rank
            steps, _ = self._latent_steps(pro.norm, "q_a", "cq", "c_q", {})
            self.nodes.append(
                Gemm(
                    "attn.q_a_proj",
                    "x",
                    c.d_model,
                    ("attn.q_a_proj",),
                    rq,
                    tuple(steps),
                    (Store("c_q", rq),),
                    (),
                    first,
                    rq,
                    explorer="attn.q_a_proj",
                )
            )
            steps = (
                [
                    Step(
                        "rope",
                        "q",
                        ("acc_q_b", "cos", "sin"),
                        attrs={"rope_columns_only": True},
                        explorer="attn.rope_q",
                    )
                ]
                if r
                else []
            )
            self.nodes.append(
                Gemm(
                    "attn.q_b_proj",
                    "c_q",
                    rq,
                    ("attn.q_b_proj",),
                    h * qk,
                    tuple(steps),
                    (Store("q" if r else "acc_q_b", h * qk),),
                    rope_loads if r else (),
                    Prologue(),
                    qk,
                    r,
                    explorer="attn.q_b_proj",
                )
            )
            first = plain
        # kv_a: [c_kv | k_rope]; the latent's norm spans its first `rank` columns (one group),
        # RoPE the rope key's columns: two groups of different widths, so two programs
        steps, x = self._latent_steps(first.norm, "kv_a", "ckv", "c_kv", {"columns": (0, rank)})
        if r is not None:
            steps.append(
                Step(
                    "rope",
                    "k_rope",
                    (x, "cos", "sin"),
                    attrs={"columns": (rank, rank + rope_d)},
                    explorer="attn.rope_k",
                )
            )
        self.nodes.append(
            Gemm(
                "attn.kv_a_proj",
                "x",
                c.d_model,
                ("attn.kv_a_proj",),
                rank + rope_d,
                tuple(steps),
                (Store("c_kv", rank), Store("k_rope", rope_d)),
                rope_loads if r else (),
                first,
                rank + rope_d,
                Rope(rank, rope_d, c.rope_interleaved) if r else None,
                explorer="attn.kv_a_proj",
            )
        )
        self.nodes.append(
            Opaque(
                "attn.core",
                "KV-cache append of c_kv and k_rope, kv_b_proj expansion, softmax(q k^T) v "
                "(rows mix in the softmax)",
                (
                    "attn.kv_b_proj",
                    "attn.scores",
                    "attn.softmax",
                    "attn.value",
                    "attn.kv_cache_write",
                ),
            )
        )

    # --- output projection + residual (+ the next norm's statistics) ---
    def _out_proj(self, name: str) -> Gemm:
        c, layer = self.cfg, self.layer
        if c.attention == "mla":
            in_width = c.n_heads * c.v_head_dim
        else:
            in_width = c.layer_n_heads(layer) * c.layer_head_dim(layer)
        pro = Prologue()
        if c.attn_output_gate:
            pro = Prologue(gate="gate", explorer="attn.output_gate")
        steps, x = self._bias_steps(name, "acc_o", c.attn_out_bias)
        steps, x, stores = self._residual_tail(
            steps,
            x,
            "post_attn_norm",
            "attn_residual",
            "attn_norm" if self.placement == "post" else "mlp_norm",
            "x",
            "h",
        )
        return Gemm(
            name,
            "attn_out",
            in_width,
            (name,),
            c.d_model,
            tuple(steps),
            stores,
            (Load("x", c.d_model),),
            pro,
            c.d_model,
            explorer=name,
        )

    def _bias_steps(self, name: str, acc: str, bias: bool) -> tuple[list[Step], str]:
        if bias:
            return [Step("bias", "o1", (acc,), name)], "o1"
        return [], acc

    def _residual_tail(
        self,
        steps: list[Step],
        x: str,
        post_norm: str,
        residual: str,
        next_norm: str,
        stream: str,
        out: str,
    ) -> tuple[list[Step], str, tuple[Store, ...]]:
        """post norm (sandwich / output placement) -> + the residual stream -> post-placement
        norm, or the next norm's statistics."""
        c = self.cfg
        op = "rms_norm" if c.norm == "rmsnorm" else "layer_norm"
        norm_attrs = {"eps": c.norm_eps, "unit_offset": c.norm_unit_offset, "group": "row"}
        if self.placement in ("sandwich", "output"):
            steps.append(Step(op, "b", (x,), post_norm, norm_attrs, explorer=post_norm))
            x = "b"
        summed = out + "_sum" if self.placement == "post" else out
        steps.append(Step("add", summed, (x, stream), explorer=residual))
        stores: tuple[Store, ...] = (Store(summed, c.d_model),)
        if self.placement == "post":
            steps.append(Step(op, out, (summed,), next_norm, norm_attrs, explorer=next_norm))
            stores = (Store(out, c.d_model),)
        elif next_norm == "mlp_norm" and self._stats_for_mlp():
            steps.append(Step("sumsq", "sumsq", (out,), explorer=next_norm))
            stores += (Store("sumsq", 1, f32=True),)
        return steps, out, stores

    def _stats_for_mlp(self) -> bool:
        """Whether the output projection stores the MLP norm's 1/rms for the gate/up kernel:
        an RMSNorm on the MLP's input, read by a dense MLP (the router of an MoE layer reads
        the normalised tokens themselves)."""
        c = self.cfg
        dense = not c.is_moe_layer(self.layer) or c.moe_beside_mlp
        return self.placement in ("pre", "sandwich") and c.norm == "rmsnorm" and dense

    # --- feed-forward ---
    def _ffn(self) -> None:
        c, layer = self.cfg, self.layer
        beside = c.moe_beside_mlp and c.is_moe_layer(layer)
        moe = c.is_moe_layer(layer) and not beside
        stats = "sumsq" if self._stats_for_mlp() else "loop"
        pro = self._input_norm("mlp_norm", "mlp_norm", stats)
        if self.placement == "post":
            pro = Prologue()
        if moe:
            self._moe()
        else:
            self._mlp("mlp", c.layer_d_ff(layer), pro, "h")
            self.nodes.append(self._down("mlp", c.layer_d_ff(layer), "mlp.down_proj"))
        if beside:
            self.nodes.append(
                Opaque(
                    "moe", "routed experts beside the dense MLP (Gemma 4): not fused", ("moe.sum",)
                )
            )
        if c.per_layer_dim:
            self.nodes.append(
                Opaque("per_layer_input", "per-layer input embedding gate (Gemma 4): not fused")
            )
        if c.layer_scalar:
            self.nodes.append(Opaque("layer_scalar", "x * layer_scalar: not fused"))

    def _mlp(
        self, prefix: str, d_ff: int, pro: Prologue, src: str, experts: int = 0, top_k: int = 1
    ) -> None:
        c = self.cfg
        gated = c.mlp == "glu"
        weights = (f"{prefix}.gate_proj", f"{prefix}.up_proj") if gated else (f"{prefix}.up_proj",)
        accs = ("acc_gate", "acc_up") if gated else ("acc_up",)
        steps: list[Step] = []
        xs = []
        for w, a in zip(weights, accs, strict=True):
            x = a
            if pro.norm:
                steps.append(Step("row_scale", a[4:] + "0", (x,)))
                x = a[4:] + "0"
            if c.mlp_bias:
                steps.append(Step("bias", a[4:] + "1", (x,), w))
                x = a[4:] + "1"
            xs.append(x)
        if gated:
            steps.append(
                Step(
                    "glu",
                    "a",
                    tuple(xs),
                    attrs={
                        "act": c.activation,
                        "alpha": c.glu_alpha,
                        "limit": c.glu_limit,
                        "offset": c.glu_up_offset,
                    },
                    explorer=f"{prefix}.act",
                )
            )
        else:
            steps.append(
                Step("act", "a", tuple(xs), attrs={"act": c.activation}, explorer=f"{prefix}.act")
            )
        self.nodes.append(
            Gemm(
                f"{prefix}.gate_up" if gated else f"{prefix}.up_proj",
                src,
                c.d_model,
                weights,
                d_ff,
                tuple(steps),
                (Store("a", d_ff),),
                (),
                pro,
                None,
                None,
                experts,
                top_k,
                explorer=weights[0],
            )
        )

    def _down(
        self,
        prefix: str,
        d_ff: int,
        name: str,
        residual: bool = True,
        experts: int = 0,
        top_k: int = 1,
    ) -> Gemm:
        c = self.cfg
        steps, x = self._bias_steps(name, "acc_down", c.mlp_bias)
        if not residual:
            return Gemm(
                name,
                "a",
                d_ff,
                (name,),
                c.d_model,
                tuple(steps),
                (Store(x if steps else "acc_down", c.d_model),),
                experts=experts,
                top_k=top_k,
                explorer=name,
            )
        steps, x, stores = self._residual_tail(
            steps,
            x,
            "post_mlp_norm",
            "mlp_residual",
            "mlp_norm" if self.placement == "post" else "attn_norm",
            "h",
            "y",
        )
        return Gemm(
            name,
            "a",
            d_ff,
            (name,),
            c.d_model,
            tuple(steps),
            stores,
            (Load("h", c.d_model),),
            group=c.d_model,
            explorer=name,
        )

    def _moe(self) -> None:
        c = self.cfg
        e, k = c.layer_n_experts(self.layer), c.n_experts_per_token
        norm = (
            "mlp_norm(h), written once: the router reads it too; "
            if (self.placement != "output")
            else ""
        )
        self.nodes.append(
            Opaque(
                "mlp.router",
                f"{norm}router GEMM in fp32 and top-{k} of {e} "
                "(a row's choice mixes its experts' scores; not fused)",
                ("mlp_norm", "mlp.router", "mlp.router_topk"),
            )
        )
        src = "hn_scaled" if c.router_scales_input else "hn"
        self._mlp("mlp.experts", c.layer_moe_d_ff(self.layer), Prologue(), src, e, k)
        self.nodes.append(
            self._down(
                "mlp.experts",
                c.layer_moe_d_ff(self.layer),
                "mlp.experts.down_proj",
                residual=False,
                experts=e,
                top_k=k,
            )
        )
        if c.n_shared_experts:
            self._mlp("mlp.shared", c.shared_d_ff, Prologue(), "hn")
            self.nodes.append(
                self._down("mlp.shared", c.shared_d_ff, "mlp.shared.down_proj", residual=False)
            )
        self.nodes.append(
            Opaque(
                "mlp.combine",
                "weighted sum of each token's experts (+ shared experts) "
                "and the residual add: a scatter across rows (not fused)",
                ("mlp.combine", "mlp_residual", "post_mlp_norm"),
            )
        )


# --- views -----------------------------------------------------------------------------------
def model_programs(cfg: Config) -> list[BlockProgram]:
    """One program per distinct kind of layer (identical layers share a program)."""
    seen: dict[str, BlockProgram] = {}
    for i in range(cfg.n_layers):
        p = block_program(cfg, i)
        key = json.dumps(p.to_json()["nodes"], sort_keys=True, default=str)
        seen.setdefault(key, p)
    return list(seen.values())


def explorer_fusion(cfg: Config, layer: int) -> dict[str, tuple[str, int]]:
    """explorer op name -> (host GEMM's explorer op, activation elements per token that fusing
    it removes). The explorer's epilogue view reads its `fuse_into`/`fused_saved` from here."""
    out: dict[str, tuple[str, int]] = {}
    for g in block_program(cfg, layer).gemms:
        for op, n in g.traffic()["saved"].items():
            if op == g.name or n == 0:
                continue
            host, prev = out.get(op, (g.explorer, 0))
            out[op] = (host, prev + n)
    return out


def format_program(p: BlockProgram) -> str:
    """The block as text: one paragraph per node."""
    lines = [f"block {p.layer} ({p.layer_type})"]
    for n in p.nodes:
        if isinstance(n, Opaque):
            lines.append(f"  [{n.name}]  opaque: {n.label}")
            continue
        ws = " ; ".join(n.weights)
        grouped = f"  grouped over {n.experts} experts, top-{n.top_k}" if n.experts else ""
        lines.append(
            f"  [{n.name}]  {n.input}[{n.in_width}] x W[{ws}] -> {len(n.weights)} x "
            f"{n.width}{grouped}"
        )
        pro = n.prologue
        if pro.norm:
            w = f"(1 + {pro.norm}.weight)" if pro.unit_offset else f"{pro.norm}.weight"
            src = (
                "sum(x^2) accumulated in the K loop"
                if pro.stats == "loop"
                else f"sum(x^2) loaded: {pro.stats}"
            )
            lines.append(f"      prologue  x * {w} per input column; rstd from {src}")
        if pro.gate:
            lines.append(f"      prologue  x * sigmoid({pro.gate})")
        if n.rope:
            lines.append(
                f"      rope      dims {n.rope.offset}..{n.rope.offset + n.rope.dim} of "
                f"each {n.group}-wide group, "
                + ("interleaved" if n.rope.interleaved else "half-split")
            )
        for s in n.program:
            param = f" [{s.param}]" if s.param else ""
            extra = {k: v for k, v in s.attrs.items() if v is not None}
            lines.append(
                f"      {s.out:<8} = {s.op}({', '.join(s.args)}){param}"
                + (f"  {extra}" if extra else "")
                + f"   ({s.kind})"
            )
        st = ", ".join(f"{s.name}[{s.width}]" + (" f32" if s.f32 else "") for s in n.stores)
        ld = ", ".join(f"{ld.name}[{ld.width}]" for ld in n.loads)
        t = n.traffic()
        lines.append(
            f"      store {st}"
            + (f"; load {ld}" if ld else "")
            + f"; per token: fused {t['fused']}, unfused {t['unfused']} elements"
        )
    return "\n".join(lines)
