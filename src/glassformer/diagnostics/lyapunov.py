"""The "1:1 rule": weight-only Lyapunov analysis of spectral balance in the residual stream.

Reference: Y. Gamaleldin (Rafat), "The 1:1 Rule: Lyapunov Analysis of Spectral Balance in
Transformers" (2026), github.com/yousef-rafat/the-1-1-rule. Its claim: the ratio of spectral
norms of the MLP and attention paths predicts whether the residual stream collapses to rank 1
by the last layers, with a safe band of about 0.5 <= rho <= 2.

Definitions (exactly the study's, with the choices it leaves open made explicit):

    W_mlp^l  = W_down^l W_up^l                     (d x d; gated MLPs: the gate is dropped,
                                                     the up half used)
    W_attn^l = W_o^l            if W_o is d x d     (the study uses it directly)
             = W_o^l W_o^l^T    otherwise            (d x d "covariance contribution"; then
                                                     ||W_attn||_2 = ||W_o||_2^2)
    rho_l    = ||W_mlp^l||_2 / ||W_attn^l||_2        (largest singular values)
    A_l      = I + W_mlp^l + W_attn^l
    C_0 = I,  C_{l+1} = A_l C_l A_l^T / ||A_l C_l A_l^T||_2           (float64)

Per layer l we report the statistics of C_{l+1} (the covariance *after* block l, so layer l's
numbers line up with the activations measured at the output of block l):

    p_i = lambda_i / sum_j lambda_j
    erank(C) = exp(-sum_i p_i log p_i)               (Roy & Vetterli 2007)
    PR(C)    = 1 / sum_i p_i^2                       (participation ratio)
    kappa(C) = lambda_max / lambda_min, over eigenvalues above the study's noise floor
               eps_64 * max(1, lambda_max) * d ("nonzero")

and the summaries: mean ||A_l||_2, the collapse layer (the first 0-based layer whose erank
falls below 1.05, configurable; None if none does), and the in-band fraction (layers with
0.5 <= rho_l <= 2).

MoE layers (a choice the study does not make; it analysed dense models only): `moe="mean"`
uses the expected map under a uniform router, W_mlp = routed_scaling * mean_e W_down^e W_up^e,
plus the shared experts' W_down W_up when the layer has them (they see every token);
`moe="shared"` uses the shared experts alone (falling back to "mean" without them).

Weaknesses of the convention, worth keeping in mind when reading its numbers:
- the gate of a GLU is dropped: act(W_gate x) * (W_up x) is treated as W_up x, so a gate that
  is mostly closed (or saturates) is invisible;
- all norms are dropped: pre-norms rescale every token to unit RMS, so the Jacobian of a real
  block is not I + W; Gemma's sandwich post-norms rescale the branch outputs by learned gains
  that can dwarf the weights, which a weight-only ratio cannot see;
- V and the softmax are dropped: the attention path is represented by W_o alone (or W_o W_o^T,
  which is positive semi-definite and so can never rotate or cancel the residual); the
  attention pattern itself, the very mechanism of rank collapse in Dong et al. (2021), is absent;
- A_l mixes two maps of different meaning (W_o W_o^T is quadratic in the weights, W_down W_up
  a product of two different matrices), so rho compares a squared norm with a product norm
  for GQA/non-square models but a plain norm for square ones: rho is not scale-consistent
  across architectures (doubling every weight multiplies rho by 1 or 2 depending on W_o's shape);
- the activations, the embedding statistics and the token mixing are all absent, so the
  recursion describes a deep *linear* network, not the model: its "collapse" is that of a
  product of matrices, which always drifts towards rank 1 as depth grows unless A_l is close
  to orthogonal.
Two optional variants, off by default, address parts of this (not part of the study):
`fold_norms=True` folds the learned norm gains into the maps (W_up diag(g_pre), diag(g_post)
W_down, ...), and `attention="ov"` replaces W_o by the value-output circuit W_o W_v (the
attention map with the softmax replaced by the identity), which is d x d for every model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from glassformer.diagnostics.spectral import (
    SMALL_DIM,
    matrix_spectral_norm,
    product_spectral_norm,
    single_thread,
    top_singular_value,
)

MoEChoice = Literal["mean", "shared"]
AttentionChoice = Literal["study", "ov"]

DEFAULT_ERANK_THRESHOLD = 1.05
DEFAULT_BAND = (0.5, 2.0)


# --- weight extraction ---------------------------------------------------------------------------
def _norm_gain(norm: nn.Module | None, d: int) -> torch.Tensor | None:
    """The learned per-channel scale of a norm module (None: no norm or no weight)."""
    if norm is None or getattr(norm, "weight", None) is None:
        return None
    w = norm.weight.detach().to(torch.float64)
    if w.shape != (d,):
        return None
    return 1.0 + w if getattr(norm, "unit_offset", False) else w


def mlp_factor_pairs(
    block: nn.Module, moe: MoEChoice = "mean"
) -> list[tuple[float, torch.Tensor, torch.Tensor]]:
    """(coefficient, W_down [d, f], W_up [f, d]) terms whose weighted sum is W_mlp."""
    mlp = block.mlp
    if hasattr(mlp, "experts"):  # MoE
        terms: list[tuple[float, torch.Tensor, torch.Tensor]] = []
        shared = getattr(mlp, "shared", None)
        if shared is not None:
            terms.append((1.0, shared.down_proj.weight, shared.up_proj.weight))
        if moe == "mean" or not terms:
            ex = mlp.experts
            e = ex.up_proj.shape[0]
            scale = float(getattr(mlp.router, "scaling", 1.0)) / e
            terms += [(scale, ex.down_proj[i], ex.up_proj[i]) for i in range(e)]
        return terms
    return [(1.0, mlp.down_proj.weight, mlp.up_proj.weight)]


def _ov_matrix(attn: nn.Module) -> torch.Tensor | None:
    """W_o W_v (d x d), with each KV head shared by its group of query heads (GQA)."""
    if getattr(attn, "v_proj", None) is None:
        # MLA: V comes out of the latent; Gemma 4's keys-equal-values and KV-sharing layers
        # have no v projection of their own: no plain OV circuit
        return None
    wv = attn.v_proj.weight.detach().to(torch.float64)  # [n_kv * hd, d]
    wo = attn.o_proj.weight.detach().to(torch.float64)  # [d, n_h * hd]
    groups = attn.n_heads // attn.n_kv_heads
    if groups > 1:
        hd = attn.head_dim
        wv = wv.view(attn.n_kv_heads, hd, -1).repeat_interleave(groups, 0).reshape(-1, wv.shape[1])
    return wo @ wv


@dataclass
class LayerMaps:
    """The d x d maps of one block in float64, as the study linearises it."""

    w_mlp: torch.Tensor
    w_attn: torch.Tensor
    mlp_norm: float  # ||W_mlp||_2
    attn_norm: float  # ||W_attn||_2
    attn_square: bool  # W_o was d x d (used directly) rather than W_o W_o^T


def layer_maps(
    block: nn.Module,
    *,
    moe: MoEChoice = "mean",
    attention: AttentionChoice = "study",
    fold_norms: bool = False,
) -> LayerMaps:
    """Build W_mlp and W_attn of one block (float64, on the weights' device)."""
    wo = block.attn.o_proj.weight.detach().to(torch.float64)
    d = wo.shape[0]
    g_attn_pre = _norm_gain(block.attn_norm, d) if fold_norms else None
    g_attn_post = _norm_gain(getattr(block, "post_attn_norm", None), d) if fold_norms else None
    g_mlp_pre = _norm_gain(block.mlp_norm, d) if fold_norms else None
    g_mlp_post = _norm_gain(getattr(block, "post_mlp_norm", None), d) if fold_norms else None

    w_mlp = torch.zeros(d, d, dtype=torch.float64, device=wo.device)
    for coef, down, up in mlp_factor_pairs(block, moe):
        w_mlp += coef * (down.detach().to(torch.float64) @ up.detach().to(torch.float64))
    if g_mlp_pre is not None:
        w_mlp = w_mlp * g_mlp_pre[None, :]
    if g_mlp_post is not None:
        w_mlp = g_mlp_post[:, None] * w_mlp

    square = wo.shape[1] == d
    if attention == "ov":
        ov = _ov_matrix(block.attn)
        if ov is None:
            attention = "study"
        else:
            w_attn, square = ov, True
    if attention == "study":
        w_attn = wo if square else wo @ wo.T
    elif attention != "ov":
        raise ValueError(f"attention: expected 'study' or 'ov', got {attention!r}")
    if g_attn_pre is not None and attention == "ov":
        w_attn = w_attn * g_attn_pre[None, :]
    if g_attn_post is not None:
        w_attn = g_attn_post[:, None] * w_attn
        if not square and attention == "study":
            w_attn = w_attn * g_attn_post[None, :]  # W_o W_o^T sandwiched by the gain
    return LayerMaps(
        w_mlp=w_mlp,
        w_attn=w_attn,
        mlp_norm=matrix_spectral_norm(w_mlp),
        attn_norm=matrix_spectral_norm(w_attn),
        attn_square=square,
    )


def spectral_ratios(model: nn.Module, moe: MoEChoice = "mean") -> list[dict[str, float]]:
    """rho_l per layer by power iteration through the factors, never forming d x d products.

    The cheap path (used by the training callback): ||W_down W_up||_2 by matvecs through both
    factors, ||W_o W_o^T||_2 = ||W_o||_2^2. MoE terms are summed as operators.
    """
    d = model.layers[0].attn.o_proj.weight.shape[0]
    with torch.no_grad(), single_thread(d < SMALL_DIM):
        return [_layer_ratio(block, moe) for block in model.layers]


def _layer_ratio(block: nn.Module, moe: MoEChoice) -> dict[str, float]:
    terms = [
        (c, down.detach().to(torch.float64), up.detach().to(torch.float64))
        for c, down, up in mlp_factor_pairs(block, moe)
    ]
    if len(terms) == 1:
        c, down, up = terms[0]
        mlp_norm = abs(c) * product_spectral_norm([down, up])
    else:  # MoE: the weighted sum of expert maps, applied term by term

        def mv(x: torch.Tensor) -> torch.Tensor:
            return sum(c * (dn @ (up @ x)) for c, dn, up in terms)  # type: ignore[return-value]

        def rmv(y: torch.Tensor) -> torch.Tensor:
            return sum(c * (up.T @ (dn.T @ y)) for c, dn, up in terms)  # type: ignore[return-value]

        first_up = terms[0][2]
        mlp_norm = top_singular_value(mv, rmv, first_up.shape[1], device=first_up.device)
    wo = block.attn.o_proj.weight
    o_norm = matrix_spectral_norm(wo)
    attn_norm = o_norm if wo.shape[0] == wo.shape[1] else o_norm**2
    return {
        "mlp_spectral_norm": mlp_norm,
        "attn_spectral_norm": attn_norm,
        "spectral_ratio": _ratio(mlp_norm, attn_norm),
    }


def _ratio(num: float, den: float) -> float:
    if den == 0.0:
        return math.inf if num > 0 else math.nan
    return num / den


# --- spectrum statistics -------------------------------------------------------------------------
def spectrum_stats(eigvals: torch.Tensor, dim: int | None = None) -> dict[str, float]:
    """erank, participation ratio and condition number of a PSD spectrum (any order).

    Negative eigenvalues from rounding are clamped to 0; the condition number ignores those
    below the study's noise floor eps * max(1, lambda_max) * dim.
    """
    lam = eigvals.detach().to(torch.float64).clamp(min=0.0)
    dim = dim or lam.numel()
    total = float(lam.sum())
    lam_max = float(lam.max()) if lam.numel() else 0.0
    if total <= 0.0:
        return {"effective_rank": 0.0, "participation_ratio": 0.0, "condition_number": math.inf}
    p = lam / total
    nz = p[p > 0]
    erank = math.exp(float(-(nz * nz.log()).sum()))
    pr = 1.0 / float((p * p).sum())
    floor = torch.finfo(torch.float64).eps * max(1.0, lam_max) * dim
    above = lam[lam > floor]
    cond = lam_max / float(above.min()) if above.numel() else math.inf
    return {"effective_rank": erank, "participation_ratio": pr, "condition_number": cond}


def effective_rank(eigvals: torch.Tensor) -> float:
    return spectrum_stats(eigvals)["effective_rank"]


# --- the recursion -------------------------------------------------------------------------------
@dataclass
class LayerSpectral:
    layer: int
    mlp_spectral_norm: float
    attn_spectral_norm: float
    spectral_ratio: float
    in_band: bool
    A_spectral_norm: float
    effective_rank: float
    participation_ratio: float
    condition_number: float
    lambda_max_unnormalised: float  # ||A_l C_l A_l^T||_2 before normalising (growth factor)
    attn_square: bool


@dataclass
class WeightAnalysis:
    layers: list[LayerSpectral]
    erank_threshold: float
    band: tuple[float, float]
    d_model: int
    conventions: dict[str, Any] = field(default_factory=dict)

    @property
    def spectral_ratio_mean(self) -> float:
        vals = [x.spectral_ratio for x in self.layers if math.isfinite(x.spectral_ratio)]
        return sum(vals) / len(vals) if vals else math.nan

    @property
    def effective_rank_min(self) -> float:
        return min(x.effective_rank for x in self.layers)

    @property
    def collapse_layer(self) -> int | None:
        for x in self.layers:
            if x.effective_rank < self.erank_threshold:
                return x.layer
        return None

    @property
    def in_band_fraction(self) -> float:
        return sum(x.in_band for x in self.layers) / len(self.layers)

    @property
    def A_spectral_norm_mean(self) -> float:
        return sum(x.A_spectral_norm for x in self.layers) / len(self.layers)

    def summary(self) -> dict[str, Any]:
        ratios = sorted(x.spectral_ratio for x in self.layers)
        return {
            "spectral_ratio_mean": self.spectral_ratio_mean,
            "spectral_ratio_median": ratios[len(ratios) // 2],
            "effective_rank_min": self.effective_rank_min,
            "effective_rank_final": self.layers[-1].effective_rank,
            "collapse_layer": self.collapse_layer,
            "in_band_fraction": self.in_band_fraction,
            "A_spectral_norm_mean": self.A_spectral_norm_mean,
            "erank_threshold": self.erank_threshold,
            "band": list(self.band),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [asdict(x) for x in self.layers],
            **self.summary(),
            "conventions": self.conventions,
        }


def lyapunov_recursion(
    maps: Iterable[LayerMaps],
    *,
    erank_threshold: float = DEFAULT_ERANK_THRESHOLD,
    band: tuple[float, float] = DEFAULT_BAND,
    progress: Callable[[int], None] | None = None,
) -> WeightAnalysis:
    """Run C_{l+1} = A_l C_l A_l^T / ||.||_2 over the layers' maps (float64)."""
    rows: list[LayerSpectral] = []
    c: torch.Tensor | None = None
    d = 0
    for i, m in enumerate(maps):
        d = m.w_mlp.shape[0]
        eye = torch.eye(d, dtype=torch.float64, device=m.w_mlp.device)
        if c is None:
            c = eye
        a = eye + m.w_mlp + m.w_attn
        a_norm = matrix_spectral_norm(a)
        nxt = a @ c @ a.T
        nxt = 0.5 * (nxt + nxt.T)  # symmetric by construction; remove rounding asymmetry
        lam = torch.linalg.eigvalsh(nxt)
        # ||.||_2 of a PSD matrix is its largest eigenvalue; normalising keeps C bounded
        # without changing erank, PR or the condition number.
        top = float(lam[-1])
        scale = top if top > 0 else 1.0
        c = nxt / scale
        stats = spectrum_stats(lam / scale, d)
        ratio = _ratio(m.mlp_norm, m.attn_norm)
        rows.append(
            LayerSpectral(
                layer=i,
                mlp_spectral_norm=m.mlp_norm,
                attn_spectral_norm=m.attn_norm,
                spectral_ratio=ratio,
                in_band=bool(band[0] <= ratio <= band[1]),
                A_spectral_norm=a_norm,
                effective_rank=stats["effective_rank"],
                participation_ratio=stats["participation_ratio"],
                condition_number=stats["condition_number"],
                lambda_max_unnormalised=top,
                attn_square=m.attn_square,
            )
        )
        if progress is not None:
            progress(i)
    if not rows:
        raise ValueError("lyapunov_recursion: no layers")
    return WeightAnalysis(rows, erank_threshold, band, d)


def weight_analysis(
    model: nn.Module,
    *,
    erank_threshold: float = DEFAULT_ERANK_THRESHOLD,
    band: tuple[float, float] = DEFAULT_BAND,
    moe: MoEChoice = "mean",
    attention: AttentionChoice = "study",
    fold_norms: bool = False,
    progress: Callable[[int], None] | None = None,
) -> WeightAnalysis:
    """The study's weight-only analysis of a glassformer `Transformer` (no data, no forward)."""
    d = model.layers[0].attn.o_proj.weight.shape[0]
    # d x d float64 work at d < 1024 gains nothing from threads and loses a lot to contention
    with torch.no_grad(), single_thread(d < SMALL_DIM):
        maps = (
            layer_maps(b, moe=moe, attention=attention, fold_norms=fold_norms) for b in model.layers
        )
        result = lyapunov_recursion(
            maps, erank_threshold=erank_threshold, band=band, progress=progress
        )
    result.conventions = {
        "moe": moe,
        "attention": attention,
        "fold_norms": fold_norms,
        "reference": "the 1:1 rule (github.com/yousef-rafat/the-1-1-rule)",
    }
    return result
