"""Terminal rendering of an analysis (rich tables) and human-readable number formatting.

Units: FLOPs and parameters with SI prefixes (k, M, G, T, P; 1 G = 1e9), bytes in binary
units (KiB, MiB, GiB, TiB; 1 GiB = 2^30 bytes), times in s/ms/us/ns. Per-op rows are one
instance; the `x` column says how many layers run it.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def si(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def nbytes(x: float | None) -> str:
    if x is None:
        return "-"
    for factor, prefix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}"
    return f"{x:.3g} B"


def seconds(x: float | None) -> str:
    if x is None:
        return "-"
    for factor, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {unit}"
    return f"{x / 1e-9:.3g} ns"


def shape(s: list[Any]) -> str:
    return "[" + ",".join(str(v) for v in s) + "]"


def params_count(n: int) -> str:
    return f"{n:,} ({si(n)})"


def summary_rows(a: dict[str, Any]) -> list[tuple[str, str]]:
    r = a["roofline"]
    mem = a["memory"]
    rows = [
        ("params total", params_count(a["params_total"])),
        ("params active", params_count(a["params_active"])),
        ("flops_matmul", si(a["flops_matmul"], "FLOP")),
        ("flops_matmul_causal", si(a["flops_matmul_causal"], "FLOP")),
        ("flops_other", si(a["flops_other"], "FLOP")),
        ("weights", nbytes(a["weights_bytes"])),
        (_cache_label(a), nbytes(a["kv_cache_bytes"])),
        ("HBM traffic", nbytes(a["traffic_bytes"])),
        ("intensity / ridge", f"{r['intensity'] or 0:.3g} / {r['ridge_intensity']:.3g} FLOP/B"),
        ("time (ops in sequence)", seconds(r["time_s"])),
        ("time (fully overlapped)", seconds(r["time_overlapped_s"])),
        ("bound", r["bound"]),
        ("tokens/s", si(r["tokens_per_s"])),
        ("memory needed", nbytes(mem["total_bytes"])),
    ]
    if a["mode"] == "train":
        rows.append(("memory, checkpointed", nbytes(mem["total_checkpointed_bytes"])))
    return rows


def default_console() -> Console:
    """The terminal's width when it is one; 140 columns when piped (rich would use 80, which
    squeezes the per-op tables)."""
    console = Console()
    return console if console.is_terminal else Console(width=140)


def render(a: dict[str, Any], per_op: bool = False, console: Console | None = None) -> None:
    console = console or default_console()
    hw = a["hardware"]
    seq_name = "context" if a["mode"] == "decode" else "sequence"
    console.print(
        f"[bold]{a['model']}[/bold] ({a['family'] or 'custom'}) - {a['mode']}, batch {a['batch']}, "
        f"{seq_name} {a['seq']}, {a['dtype']['name']}, {hw['label']}, "
        f"{a['attention_kernel']} attention"
        + (f", MLA {a['mla_order']} order" if a.get("mla_order") else "")
    )
    table = Table(title="summary", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for k, v in summary_rows(a):
        table.add_row(k, v)
    console.print(table)
    _memory(a, console)
    if "moe" in a:
        m = a["moe"]
        t = Table(title="mixture of experts", show_header=False)
        t.add_column("", style="bold")
        t.add_column("")
        t.add_row(
            "experts", f"{m['n_experts']} routed, top-{m['top_k']}, {m['n_shared_experts']} shared"
        )
        t.add_row("MoE layers", str(m["moe_layers"]))
        t.add_row(
            "routed params total / active",
            f"{si(m['params_routed_total'])} / {si(m['params_routed_active'])}",
        )
        t.add_row("expert FLOPs at top-k", si(m["expert_flops_topk"], "FLOP"))
        t.add_row("expert FLOPs if all experts ran", si(m["expert_flops_if_dense"], "FLOP"))
        t.add_row(
            "experts touched per layer (expected)", f"{m['expected_experts_hit_per_layer']:.1f}"
        )
        console.print(t)
    if "mla" in a:
        m = a["mla"]
        t = Table(title="multi-head latent attention")
        for col in ("", "plain order", "absorbed order"):
            t.add_column(col)
        p, q = m["orders"]["plain"], m["orders"]["absorbed"]
        t.add_row(
            "attn matmul FLOPs / layer",
            si(p["flops_matmul_per_layer"]),
            si(q["flops_matmul_per_layer"]),
        )
        t.add_row("attn bytes / layer", nbytes(p["bytes_per_layer"]), nbytes(q["bytes_per_layer"]))
        t.add_row(
            "attn time / layer", seconds(p["time_per_layer_s"]), seconds(q["time_per_layer_s"])
        )
        console.print(t)
        console.print(
            f"KV cache: latent {nbytes(m['kv_cache_bytes'])} vs MHA-equivalent "
            f"{nbytes(m['mha_equivalent_kv_cache_bytes'])} ({m['compression']:.1f}x smaller; "
            f"{m['cache_elems_per_token_per_layer']} vs "
            f"{m['mha_equivalent_elems_per_token_per_layer']} numbers per token per layer)"
        )
    if "sliding" in a:
        s = a["sliding"]
        console.print(
            f"sliding window {s['window']}: {s['sliding_layers']} sliding + "
            f"{s['full_layers']} full layers; KV cache {nbytes(s['kv_cache_bytes'])} "
            "(all-full would be "
            f"{nbytes(s['kv_cache_bytes_if_all_full'])})"
        )
    if "chunked" in a:
        c = a["chunked"]
        console.print(
            f"attention chunk {c['chunk']}: {c['chunked_layers']} chunked + "
            f"{c['other_layers']} other layers; KV cache {nbytes(c['kv_cache_bytes'])} "
            f"(all-full would be {nbytes(c['kv_cache_bytes_if_all_full'])})"
        )
    if "linear_attention" in a:
        s = a["linear_attention"]
        console.print(
            f"linear attention: {s['linear_layers']} Gated DeltaNet + {s['attention_layers']} "
            f"attention layers; cache {nbytes(s['state_bytes'])} of fixed-size state + "
            f"{nbytes(s['attention_kv_bytes'])} of keys and values (all-attention would be "
            f"{nbytes(s['kv_cache_bytes_if_all_attention'])})"
        )
    _epilogue(a, console)
    if per_op:
        _ops(a, console)
    console.print(
        "[dim]FLOPs: 2 per multiply-accumulate. flops_matmul: full query x key grid (unmasked "
        "kernel, = FlopCounterMode on eager); flops_matmul_causal: visible pairs only (flash); "
        "flops_other: norms, softmax, activations, RoPE, residuals. Roofline per op: "
        "max(compute, bytes/bandwidth).[/dim]"
    )


def _cache_label(a: dict[str, Any]) -> str:
    """Gated DeltaNet layers keep a fixed-size state where attention layers keep keys/values."""
    return "KV cache / state" if "linear_attention" in a else "KV cache"


def _memory(a: dict[str, Any], console: Console) -> None:
    mem = a["memory"]
    t = Table(title="memory", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    for key, label in (
        ("weights_bytes", "weights"),
        ("gradients_bytes", "gradients"),
        ("optimizer_bytes", "AdamW states"),
        ("kv_cache_bytes", _cache_label(a)),
        ("activations_bytes", "activations"),
        ("activations_checkpointed_bytes", "activations, checkpointed"),
        ("total_bytes", "total"),
        ("total_checkpointed_bytes", "total, checkpointed"),
    ):
        if key in mem:
            t.add_row(label, nbytes(mem[key]))
    if mem.get("device_bytes"):
        t.add_row(
            "device memory",
            f"{nbytes(mem['device_bytes'])} ({'fits' if mem['fits'] else 'does not fit'})",
        )
    console.print(t)


def _epilogue(a: dict[str, Any], console: Console) -> None:
    t = Table(title="GEMM-epilogue fusion (per instance; x = instances)")
    for col in (
        "section",
        "x",
        "bytes unfused",
        "bytes fused",
        "saved",
        "time unfused",
        "time fused",
        "saved",
    ):
        t.add_column(col, justify="right" if col not in ("section",) else "left")

    def cells(e: dict[str, Any]) -> list[str]:
        return [
            nbytes(e["bytes_unfused"]),
            nbytes(e["bytes_fused"]),
            nbytes(e["bytes_saved"]),
            seconds(e["time_unfused_s"]),
            seconds(e["time_fused_s"]),
            seconds(e["time_saved_s"]),
        ]

    for e in a["epilogue"]["sections"]:
        t.add_row(e["title"], str(e["count"]), *cells(e))
    t.add_row("[bold]whole pass[/bold]", "", *cells(a["epilogue"]["total"]))
    console.print(t)


def _ops(a: dict[str, Any], console: Console) -> None:
    for sec in a["sections"]:
        t = Table(title=f"{sec['title']} (x{sec['count']})")
        t.add_column("op", no_wrap=True)  # names are what people search for: never cut
        t.add_column("in -> out", overflow="fold")
        for col in ("params", "FLOPs mm", "mm causal", "other", "bytes", "AI", "time", "bound"):
            t.add_column(col, justify="left" if col == "bound" else "right")
        for r in a["ops"]:
            if r["section"] != sec["key"]:
                continue
            ins = " ".join(shape(e["shape"]) for e in r["inputs"])
            t.add_row(
                r["name"],
                f"{ins} -> {shape(r['output_shape'])}",
                si(r["params"]) if r["params"] else "",
                si(r["flops_matmul"]),
                si(r["flops_matmul_causal"]),
                si(r["flops_other"]),
                nbytes(r["bytes"]),
                f"{r['intensity']:.3g}" if r["intensity"] is not None else "-",
                seconds(r["time_s"]),
                r["bound"],
            )
        console.print(t)


COMPARE_ROWS: list[tuple[str, Any]] = [
    ("family", lambda a: a["family"] or "custom"),
    ("params total", lambda a: si(a["params_total"])),
    ("params active", lambda a: si(a["params_active"])),
    ("flops_matmul", lambda a: si(a["flops_matmul"], "FLOP")),
    ("flops_matmul_causal", lambda a: si(a["flops_matmul_causal"], "FLOP")),
    ("flops_other", lambda a: si(a["flops_other"], "FLOP")),
    ("weights", lambda a: nbytes(a["weights_bytes"])),
    ("KV cache / state", lambda a: nbytes(a["kv_cache_bytes"])),
    ("HBM traffic", lambda a: nbytes(a["traffic_bytes"])),
    ("intensity (FLOP/B)", lambda a: f"{a['roofline']['intensity'] or 0:.3g}"),
    ("time", lambda a: seconds(a["roofline"]["time_s"])),
    ("time, overlapped", lambda a: seconds(a["roofline"]["time_overlapped_s"])),
    ("bound", lambda a: a["roofline"]["bound"]),
    ("tokens/s", lambda a: si(a["roofline"]["tokens_per_s"])),
    ("memory needed", lambda a: nbytes(a["memory"]["total_bytes"])),
    ("connections", lambda a: a["connections"]["kind"]),
    ("  their params", lambda a: si(a["connections"]["params"])),
    (
        "  their FLOPs (mm + other)",
        lambda a: si(a["connections"]["flops_matmul"] + a["connections"]["flops_other"], "FLOP"),
    ),
    ("  their traffic", lambda a: nbytes(a["connections"]["bytes"])),
    ("  activations held", lambda a: nbytes(a["connections"]["resident_bytes"])),
    ("  saved for backward", lambda a: nbytes(a["connections"]["saved_bytes"])),
    (
        "epilogue fusion saves",
        lambda a: (
            f"{nbytes(a['epilogue']['total']['bytes_saved'])}, "
            f"{seconds(a['epilogue']['total']['time_saved_s'])}"
        ),
    ),
]


def render_compare(analyses: list[dict[str, Any]], console: Console | None = None) -> None:
    console = console or default_console()
    first = analyses[0]
    seq_name = "context" if first["mode"] == "decode" else "sequence"
    t = Table(
        title=f"{first['mode']}, batch {first['batch']}, {seq_name} {first['seq']}, "
        f"{first['dtype']['name']}, {first['hardware']['label']}"
    )
    t.add_column("", style="bold")
    for a in analyses:
        t.add_column(a["model"], justify="right")
    for label, fn in COMPARE_ROWS:
        t.add_row(label, *(str(fn(a)) for a in analyses))
    console.print(t)


IMAGE_ROWS = (
    ("image path", lambda c: c["path"]),
    ("image (resized)", lambda c: "x".join(map(str, c["resized"]))),
    ("image tokens", lambda c: str(c["image_tokens"])),
    ("encoder / embedder params", lambda c: params_count(c["encoder"]["params"])),
    ("encoder / embedder FLOPs", lambda c: si(c["encoder"]["flops"])),
    ("decoder prefill FLOPs", lambda c: si(c["decoder"]["flops_executed"])),
    ("prefill FLOPs (total)", lambda c: si(c["prefill_flops"])),
    ("weights", lambda c: nbytes(c["weights_bytes"])),
    ("encoder / embedder time", lambda c: seconds(c["encoder"]["time_s"])),
    ("time to first token", lambda c: seconds(c["ttft_s"])),
)


def render_images(costs: list[dict[str, Any]], console: Console | None = None) -> None:
    """One image's cost per model (`explorer.multimodal`), side by side."""
    console = console or default_console()
    first = costs[0]
    t = Table(
        title=f"one {first['image'][0]}x{first['image'][1]} image: prefill of its tokens, "
        f"{first['dtype']}, {first['hardware']}"
    )
    t.add_column("", style="bold")
    for c in costs:
        t.add_column(c["model"], justify="right")
    for label, fn in IMAGE_ROWS:
        t.add_row(label, *(fn(c) for c in costs))
    console.print(t)


def render_audio(cost: dict[str, Any], console: Console | None = None) -> None:
    """One audio clip's cost (`explorer.multimodal.audio_cost`)."""
    console = console or default_console()
    t = Table(title=f"{cost['seconds']} s of audio, {cost['dtype']}, {cost['hardware']}")
    t.add_column("", style="bold")
    t.add_column(cost["model"], justify="right")
    rows = (
        ("audio tokens", str(cost["audio_tokens"])),
        ("embedder params", params_count(cost["encoder"]["params"])),
        ("embedder FLOPs", si(cost["encoder"]["flops"])),
        ("decoder prefill FLOPs", si(cost["decoder"]["flops_executed"])),
        ("time to first token", seconds(cost["ttft_s"])),
    )
    for label, value in rows:
        t.add_row(label, value)
    console.print(t)
