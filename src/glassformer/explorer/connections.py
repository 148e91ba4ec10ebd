"""The cost of cross-layer connections (components/connections/), as op-list entries.

    denseformer  DWA_i: |J_i| scalar weights; sum_j alpha_j X_j costs (2|J_i| - 1) FLOPs per
                 element, reads |J_i| d-vectors per token and writes one. The block outputs
                 X_j stay alive until the last DWA that reads them (`resident`).
    mudd         DA_i: RMSNorm(X_i) W1 (D x C(i+1)), GELU, W2 (C(i+1) x C(i+1)) per token,
                 then C weighted sums over i+1 outputs; every X_j stays alive. Blocks with four
                 streams normalise the key and value streams too (the same norm weights).
    hyper / mhc  per sublayer: the dynamic weights RMSNorm(H) W (n x D times D x (n+2)), the
                 width mix A^T H ((1+n) x n times n x D), the depth update H' + B^T y
                 (2 n D FLOPs per token), and for mHC the Sinkhorn iterations on n x n.
                 The residual stream is n times wider, end to end.

Matrix products (flops_mm) are exactly those the modules run as matmuls: the projections of
the dynamic weights and Hyper-Connections' width mix. The weighted sums of DenseFormer and
MUDDFormer run elementwise (flops_other).
"""

from __future__ import annotations

from glassformer.config import Config
from glassformer.explorer.expr import B, Value
from glassformer.explorer.ops import ACT_FLOPS, NORM_FLOPS, Edge, Op

TANH_FLOPS = 4  # tanh / sigmoid per element (as the activations' convention)


def connection_params(cfg: Config) -> int:
    """Parameters of the topology module (0 for the plain residual stream)."""
    if cfg.connections == "denseformer":
        from glassformer.components.connections.denseformer import dwa_sources

        return sum(len(js) for js in dwa_sources(cfg).values())
    if cfg.connections == "mudd":
        return sum(cfg.d_model * w + w * w + w for w in mudd_widths(cfg))
    if cfg.connections in ("hyper", "mhc"):
        return 2 * cfg.n_layers * hyper_params(cfg)
    return 0


def mudd_widths(cfg: Config) -> list[int]:
    """C (i+1) of each dynamic dense connection DA_i: its weights per token."""
    from glassformer.components.connections.mudd import mudd_streams

    return [c * (i + 1) for i, c in enumerate(mudd_streams(cfg), start=1)]


def hyper_static_params(cfg: Config) -> int:
    """One Hyper-Connection's static A (n x (1+n)) and B (n)."""
    n = cfg.hyper_streams
    return n * (1 + n) + n


def hyper_dynamic_params(cfg: Config) -> int:
    """One Hyper-Connection's dynamic W (D x (n+2)) and its scales (0 when static)."""
    if not cfg.hyper_dynamic:
        return 0
    return cfg.d_model * (cfg.hyper_streams + 2) + (3 if cfg.connections == "mhc" else 2)


def hyper_params(cfg: Config) -> int:
    """One Hyper-Connection: its static and dynamic parameters."""
    return hyper_static_params(cfg) + hyper_dynamic_params(cfg)


def resident_per_token(cfg: Config) -> int:
    """Activation elements per token held across layers beyond the plain network's one
    d-vector: DenseFormer's and MUDDFormer's stored block outputs (at the widest point), the
    n - 1 extra streams of Hyper-Connections."""
    d = cfg.d_model
    if cfg.connections == "denseformer":
        from glassformer.components.connections.denseformer import dwa_sources

        sources = dwa_sources(cfg)
        # at the DWA after block i, X_j (j <= i) is alive if that DWA or a later one reads it
        widest = 1
        for i in range(cfg.n_layers + 1):
            alive = {j for m, js in sources.items() if m >= i for j in js if j <= i}
            widest = max(widest, len(alive | {i}))
        return (widest - 1) * d
    if cfg.connections == "mudd":
        return cfg.n_layers * d  # X_0 .. X_L all feed the last connection
    if cfg.connections in ("hyper", "mhc"):
        return (cfg.hyper_streams - 1) * d
    return 0


def section_ops(cfg: Config, tokens: Value) -> list[Op]:
    """The topology's ops outside the blocks: DenseFormer's DWAs, MUDDFormer's dense
    connections, Hyper-Connections' expansion into n streams and their final mean."""
    d = cfg.d_model
    n = B * tokens
    lead = (B, tokens)
    if cfg.connections == "denseformer":
        from glassformer.components.connections.denseformer import dwa_sources

        sources = dwa_sources(cfg)
        reads = sum(len(js) for js in sources.values())
        terms = sum(2 * len(js) - 1 for js in sources.values())
        count = len(sources)
        return [
            Op(
                "dwa",
                "elementwise",
                [Edge("x", (*lead, d))],
                (*lead, d),
                params=reads,
                flops_other=terms * n * d,
                w_read=reads,
                a_read=reads * n * d,
                a_write=count * n * d,
                saved=count * n * d,  # each average is a new tensor the next block keeps
                note=f"{count} depth-weighted averages over {reads} stored block outputs",
            )
        ]
    if cfg.connections == "mudd":
        from glassformer.components.connections.mudd import mudd_streams

        streams = mudd_streams(cfg)
        widths = mudd_widths(cfg)
        w1 = sum(d * w for w in widths)
        w2 = sum(w * w for w in widths)
        hidden = sum(widths)
        reads = hidden  # each weight reads one stored d-vector
        terms = sum(c * (2 * (i + 1) - 1) for i, c in enumerate(streams, start=1))
        mixed = sum(streams)
        count = len(streams)
        return [
            Op(
                "mudd.weights",
                "matmul",
                [Edge("x", (*lead, d))],
                (*lead, hidden),
                params=w1 + w2 + hidden,
                flops_mm=2 * n * (w1 + w2),
                flops_other=n
                * (count * NORM_FLOPS["rmsnorm"] * d + ACT_FLOPS["gelu"] * hidden + hidden),
                w_read=w1 + w2 + hidden,
                a_read=n * (count * d + hidden),
                a_write=n * 2 * hidden,
                saved=n * (count * d + 2 * hidden),
                note=f"{count} dynamic dense connections: RMSNorm, W1, GELU, W2 (+ static bias)",
            ),
            Op(
                "mudd.mix",
                "elementwise",
                [Edge("mudd.weights", (*lead, hidden)), Edge("x", (*lead, d))],
                (*lead, d),
                flops_other=terms * n * d,
                a_read=reads * n * d + n * hidden,
                a_write=mixed * n * d,
                saved=mixed * n * d,  # the streams the blocks' norms keep
                note=f"{mixed} streams, weighted sums over the stored block outputs",
            ),
        ]
    if cfg.connections in ("hyper", "mhc"):
        s = cfg.hyper_streams
        return [
            Op(
                "streams.expand",
                "elementwise",
                [Edge("x", (*lead, d))],
                (*lead, s, d),
                a_read=n * d,
                a_write=n * s * d,
                note=f"H_0: {s} copies of the embeddings",
            ),
            Op(
                "streams.mean",
                "elementwise",
                [Edge("x", (*lead, s, d))],
                (*lead, d),
                flops_other=n * s * d,
                a_read=n * s * d,
                a_write=n * d,
                note="the final norm reads the mean of the streams",
            ),
        ]
    return []


def hyper_sublayer_ops(
    cfg: Config, prefix: str, n: Value, lead: tuple[Value, ...]
) -> tuple[list[Op], Op]:
    """(width ops before the sublayer, the depth update replacing its residual add)."""
    d, s = cfg.d_model, cfg.hyper_streams
    mhc = cfg.connections == "mhc"
    ops: list[Op] = []
    static = hyper_static_params(cfg)
    src = "x"
    if cfg.hyper_dynamic:
        params = hyper_dynamic_params(cfg)
        coeff = n * s * (s + 2)
        other = NORM_FLOPS["rmsnorm"] * n * s * d + coeff * (TANH_FLOPS + 2)
        if mhc:  # exp, then per iteration a column and a row sum and division
            other += n * s * s * (1 + 4 * cfg.mhc_sinkhorn_iters)
        ops.append(
            Op(
                f"{prefix}_hc.dynamic",
                "matmul",
                [Edge("x", (*lead, s, d))],
                (*lead, s, s + 2),
                params=params,
                flops_mm=2 * n * s * d * (s + 2),
                flops_other=other,
                w_read=params,
                a_read=n * s * d,
                a_write=2 * coeff,
                saved=n * s * d + 2 * coeff,
                note="token-dependent connection weights: RMSNorm(H) W"
                + (", sigmoid / Sinkhorn-Knopp" if mhc else ", tanh"),
            )
        )
        src = f"{prefix}_hc.dynamic"
    elif mhc:
        ops.append(
            Op(
                f"{prefix}_hc.sinkhorn",
                "elementwise",
                [Edge("x", (s, s))],
                (s, s),
                flops_other=s * s * (1 + 4 * cfg.mhc_sinkhorn_iters),
                note="static stream mixing made doubly stochastic",
            )
        )
    ops.append(
        Op(
            f"{prefix}_hc.width",
            "matmul",
            [Edge(src, (*lead, s, 1 + s)), Edge("x", (*lead, s, d))],
            (*lead, 1 + s, d),
            params=static,
            flops_mm=2 * n * (1 + s) * s * d,
            w_read=static,
            a_read=n * s * d,
            a_write=n * (1 + s) * d,
            saved=n * s * d,
            note="A^T H: the sublayer input and the mixed streams",
        )
    )
    depth = Op(
        f"{prefix}_residual",
        "residual",
        [Edge(f"{prefix}_hc.width", (*lead, s, d)), Edge("x", (*lead, d))],
        (*lead, s, d),
        flops_other=2 * n * s * d,
        a_read=n * s * d + n * d,
        a_write=n * s * d,
        saved=n * d,
        note="depth connection: H' + B^T y, into every stream",
    )
    return ops, depth
