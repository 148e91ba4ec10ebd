"""Manifold-constrained Hyper-Connections (mHC).

DeepSeek-AI (Xie et al., 2025), "mHC: Manifold-Constrained Hyper-Connections".

Hyper-Connections (hyper_connections.py) with the three connection matrices projected onto
sets that keep the n-stream residual path stable over depth:

    A_pre  = sigmoid(s_pre  * Hn W_pre  + b_pre)       in (0, 1)^n     (sublayer input weights)
    A_res  = Sinkhorn-Knopp(s_res * Hn W_res + b_res)  doubly stochastic n x n (stream mixing)
    B_post = 2 sigmoid(s_post * Hn W_post + b_post)    in (0, 2)^n     (output distribution)

    width:  h_0 = sum_s A_pre[s] H_s,   H' = A_res^T H
    depth:  H_new = H' + B_post^T T(h_0)

A doubly stochastic A_res has spectral norm 1 and products of such matrices stay doubly
stochastic, so the mixing neither amplifies nor attenuates the streams however deep the
network (the instability unconstrained Hyper-Connections show at scale). Sinkhorn-Knopp runs
`mhc_sinkhorn_iters` alternating column and row normalisations of exp(logits) (DeepSeek: 20).

The dynamic terms here are computed per stream from that stream's normalised state, as in
Hyper-Connections and in the `hyper-connections` package; DeepSeek's paper computes them from
all n streams flattened into one nD vector. Initialisation as the package's: b_pre one-hot on
stream k mod n, b_res = I, b_post = 1, W = 0, s = 0.01. Unlike Hyper-Connections this does not
start as the plain network (sigmoid and Sinkhorn of those logits are not one-hot and I).
The module is `HyperConnection(config, k, constrained=True)`.
"""

from __future__ import annotations

from glassformer.components.connections.hyper_connections import (
    HyperConnection,
    HyperConnections,
    sinkhorn,
)

__all__ = ["HyperConnection", "HyperConnections", "sinkhorn"]
