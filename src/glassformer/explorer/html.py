"""The interactive page: one self-contained HTML file (no network at view time).

How the page recomputes: it embeds the op list of every mode as *symbolic formulas* (the very
expressions `ops.py` builds, serialised by `expr.to_json`) together with the dtype and hardware
tables. `evalExpr` / `evalOp` in page.html are line-for-line ports of `expr.evaluate` and
`costs.evaluate_op`, so changing batch, sequence/context, dtype, hardware, attention kernel or
mode re-evaluates the same formulas in the browser, at any value (no precomputed grid). The
Python figures at the initial settings are embedded too (`reference`), and the browser test
checks that the page reproduces them.

The page shows: a summary, the data-flow graph of one section (ops as nodes, shapes on the
edges), a table of all ops sortable by any column, a roofline chart with each op placed at its
arithmetic intensity, and the details of the op clicked in any of them.
"""

from __future__ import annotations

import html
import json
import os
from importlib.resources import files
from pathlib import Path
from typing import Any

from glassformer.config import Config
from glassformer.explorer.costs import CONVENTIONS, DTYPES, analyze
from glassformer.explorer.expr import to_json
from glassformer.explorer.hardware import FALLBACK, PRESETS
from glassformer.explorer.ops import MODES, Op, Section, build_sections

_FIELDS = (
    "flops_mm",
    "flops_mm_causal",
    "flops_other",
    "w_read",
    "w_write",
    "a_read",
    "a_write",
    "kv_read",
    "kv_write",
    "f32_read",
    "f32_write",
    "cache_elems",
    "state_f32_read",
    "state_f32_write",
    "state_f32_elems",
    "saved",
    "fused_saved",
)


def _op_json(op: Op) -> dict[str, Any]:
    return {
        "name": op.name,
        "kind": op.kind,
        "params": op.params,
        "inputs": [{"src": e.src, "shape": [to_json(s) for s in e.shape]} for e in op.inputs],
        "out": [to_json(s) for s in op.out_shape],
        "f": {k: to_json(getattr(op, k)) for k in _FIELDS},
        "fuse_into": op.fuse_into,
        "note": op.note,
    }


# The graph boxes the ops whose names share a prefix ("attn.", "mlp.experts.", ...): one box per
# prefix, labelled by its last component. The token mixer's label follows the layer type the
# section's key names (block.<type>.<moe|dense>[.nope], "<type>_shared" for a layer reading
# another layer's keys and values).
_GROUP_LABELS = {
    "mlp": "MLP",
    "experts": "routed experts",
    "shared": "shared expert",
    "moe": "experts beside the MLP",
    "per_layer_input": "per-layer input",
    "per_layer_embed": "per-layer embeddings",
    "block": "block",
}
_MIXER_LABELS = {
    "full": "attention",
    "sliding": "sliding-window attention",
    "chunked": "chunked attention",
    "linear": "linear attention (Gated DeltaNet): conv, delta rule, gated norm",
}


def _group_labels(s: Section) -> dict[str, str]:
    """{prefix: label} for every op-name prefix in the section."""
    ops_in: dict[str, list[Op]] = {}
    for op in s.ops:
        parts = op.name.split(".")
        for i in range(1, len(parts)):
            ops_in.setdefault(".".join(parts[:i]), []).append(op)
    layer_type = s.key.split(".")[1] if s.kind == "block" else "full"
    labels = {}
    for prefix, ops in ops_in.items():
        last = prefix.rsplit(".", 1)[-1]
        if last == "attn":
            base = layer_type.removesuffix("_shared")
            label = _MIXER_LABELS.get(base, f"{base} attention")
            names = {op.name.rsplit(".", 1)[-1] for op in ops}
            extras = [
                "sinks" if any(op.kind == "softmax" and "sink" in op.note for op in ops) else "",
                "output gate" if "output_gate" in names else "",
                "keys and values of another layer" if layer_type.endswith("_shared") else "",
                "NoPE" if s.key.endswith(".nope") else "",
            ]
            extras = [e for e in extras if e]
            labels[prefix] = label + (f" ({', '.join(extras)})" if extras else "")
        elif last == "mlp" and any(op.kind == "router" for op in ops):
            labels[prefix] = "mixture of experts"
        else:
            labels[prefix] = _GROUP_LABELS.get(last, last)
    return labels


def _section_json(s: Section) -> dict[str, Any]:
    return {
        "key": s.key,
        "title": s.title,
        "kind": s.kind,
        "count": s.count,
        "layers": s.layers.to_json(),
        "groups": _group_labels(s),
        "ops": [_op_json(op) for op in s.ops],
    }


def page_data(cfg: Config, mtp: bool | None = None, **settings: Any) -> dict[str, Any]:
    """The page's data: the settings it opens with are `analyze`'s (mode, batch, seq, dtype,
    hardware, attention, with its defaults), and its analysis is the page's reference."""
    reference = analyze(cfg, mtp=mtp, **settings)
    hw = reference["hardware"]
    hardware_table = {name: h.to_dict() for name, h in PRESETS.items()}
    if hw["name"] not in hardware_table:  # this-cpu: measured when the page was written
        hardware_table[hw["name"]] = hw
    modes = {m: [_section_json(s) for s in build_sections(cfg, m, None, mtp)] for m in MODES}
    return {
        "model": {
            "name": cfg.name,
            "family": cfg.hf_model_type,
            "config": cfg.to_dict(),
            "params_total": reference["params_total"],
            "params_active": reference["params_active"],
            "d_model": cfg.d_model,
            "attention": cfg.attention,
        },
        "defaults": {
            "mode": reference["mode"],
            "batch": reference["batch"],
            "seq": reference["seq"],
            "dtype": reference["dtype"]["name"],
            "hardware": hw["name"],
            "attention": reference["attention_kernel"],
        },
        "dtypes": {k: d.to_dict() for k, d in DTYPES.items()},
        "hardware": hardware_table,
        "fallback": {k: list(v) for k, v in FALLBACK.items()},
        "conventions": CONVENTIONS,
        "modes": modes,
        "reference": {
            k: reference[k]
            for k in (
                "flops_matmul",
                "flops_matmul_causal",
                "flops_other",
                "weights_bytes",
                "kv_cache_bytes",
                "traffic_bytes",
            )
        }
        | {"time_s": reference["roofline"]["time_s"]},
    }


# Inside <script>, "</script" ends the element and "<!--<script" makes the parser skip past the
# page's own code; a model file chooses its name and config strings, so no "<", ">" or "&" may
# reach the element as such. JSON's \\u003c-style escapes keep the data identical for JSON.parse.
# U+2028/U+2029 are escaped too: older JavaScript engines end a line at them.
_SCRIPT_SAFE = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def script_json(data: Any) -> str:
    """JSON text that is safe inside an HTML <script> element, whatever strings it holds."""
    return json.dumps(data, separators=(",", ":")).translate(_SCRIPT_SAFE)


def render_html(cfg: Config, **settings: Any) -> str:
    data = page_data(cfg, **settings)
    template = files("glassformer.explorer").joinpath("page.html").read_text(encoding="utf-8")
    title = html.escape(f"{cfg.name}: Transformer Math Explorer")
    # One pass over the template: a title that spells the data marker must stay text.
    head, tail = template.split("/*__DATA__*/{}", 1)
    return head.replace("__TITLE__", title) + script_json(data) + tail


def write_html(cfg: Config, path: str | Path, **settings: Any) -> Path:
    """Write the page; a temporary name renamed into place, so a failure leaves no half page."""
    path = Path(path)
    text = render_html(cfg, **settings)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
