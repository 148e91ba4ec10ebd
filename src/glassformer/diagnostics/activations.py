"""Rank collapse measured on data: the token representations of a real forward pass.

For each layer l we take X_l in R^{T x d}, the residual stream at the output of block l for T
tokens of one sequence (the embedding output is reported separately as layer "embed"), and
compute

    token_cosine(X)  = 1 / (T (T-1)) sum_{i != j} cos(x_i, x_j)
                       (Noci et al. 2022, "Signal propagation in Transformers: theoretical
                       perspectives and the role of rank collapse": collapse <=> cos -> 1)
    rank1_residual(X) = ||X - 1 xbar^T||_F / ||X||_F,  xbar = mean_t x_t
                       (Dong, Cordonnier & Loukas 2021, "Attention is not all you need: pure
                       attention loses rank doubly exponentially with depth"; they use a
                       composite l1/l_inf norm, we use Frobenius, for which 1 xbar^T is the
                       best rank-1 approximation of the form 1 x^T; collapse <=> -> 0)
    effective_rank(X) = erank of the eigenvalues of X^T X (sigma_i(X)^2), the same
                       Roy-Vetterli entropy rank that the weight-only analysis applies to C_l,
                       so the two are on the same scale (1 = rank one, d = isotropic)
    effective_rank_centered(X) = the same on X - 1 xbar^T (spread around the mean token)
    residual_norm(X)  = mean_t ||x_t||_2

Conventions and why:
- the first position is dropped (`skip_first=1`): in most trained LLMs it is an attention sink
  with a norm 10-100x the others ("massive activations", Sun et al. 2024), and it would
  dominate every measure above (one huge token makes X look rank one);
- measures are computed per sequence (rank collapse is about tokens that attention mixes, so
  tokens of different sequences must not be pooled) and averaged over sequences;
- everything in float64 after the forward pass (float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import torch
from torch import nn

from glassformer.diagnostics.lyapunov import spectrum_stats
from glassformer.diagnostics.spectral import SMALL_DIM, single_thread

MEASURES = (
    "token_cosine",
    "rank1_residual",
    "effective_rank",
    "effective_rank_centered",
    "residual_norm",
)


def probe_text() -> str:
    """The held-out English paragraphs shipped with the package (written for this purpose)."""
    return resources.files("glassformer.diagnostics").joinpath("probe_text.txt").read_text()


def representation_measures(x: torch.Tensor) -> dict[str, float]:
    """The rank-collapse measures of one [T, d] matrix of token representations."""
    with single_thread(min(x.shape) < SMALL_DIM):
        return _representation_measures(x.detach().to(torch.float64))


def _representation_measures(x: torch.Tensor) -> dict[str, float]:
    t = x.shape[0]
    norms = x.norm(dim=1)
    unit = x / norms.clamp_min(1e-300)[:, None]
    s = unit.sum(0)
    # sum_{i,j} cos = ||sum_i u_i||^2; drop the T diagonal terms (each 1)
    cosine = (float(s @ s) - t) / (t * (t - 1)) if t > 1 else math.nan
    mean = x.mean(0, keepdim=True)
    centered = x - mean
    total = float(x.norm())
    residual = float(centered.norm()) / total if total > 0 else math.nan
    # eigenvalues of X^T X are sigma(X)^2; the T x T or d x d Gram, whichever is smaller
    gram = x @ x.T if t <= x.shape[1] else x.T @ x
    gram_c = centered @ centered.T if t <= x.shape[1] else centered.T @ centered
    lam = torch.linalg.eigvalsh(0.5 * (gram + gram.T))
    lam_c = torch.linalg.eigvalsh(0.5 * (gram_c + gram_c.T))
    return {
        "token_cosine": cosine,
        "rank1_residual": residual,
        "effective_rank": spectrum_stats(lam)["effective_rank"],
        "effective_rank_centered": spectrum_stats(lam_c)["effective_rank"],
        "residual_norm": float(norms.mean()),
    }


def encode_chunks(
    tokenizer: Any,
    text: str,
    *,
    seq_len: int = 128,
    max_sequences: int = 8,
    bos_id: int | None = None,
) -> list[list[int]]:
    """Token ids of `text` cut into sequences of `seq_len` tokens, each starting with BOS.

    `tokenizer` needs `encode(text, add_special_tokens=False)` returning ids or an object with
    `.ids` (glassformer's, transformers' and `tokenizers`' all qualify); BOS is its `bos_id`
    unless given. Paragraphs are encoded one by one and concatenated, so that the encoding does not
    depend on how the text is cut.
    """
    ids: list[int] = []
    for para in text.split("\n\n"):
        para = para.strip()
        if para:
            enc = tokenizer.encode(para + "\n\n", add_special_tokens=False)
            ids += list(getattr(enc, "ids", enc))  # HF `tokenizers` returns an Encoding
    if bos_id is None:
        bos_id = getattr(tokenizer, "bos_id", None)
    body = seq_len - (1 if bos_id is not None else 0)
    chunks = []
    for start in range(0, len(ids) - body + 1, body):
        chunk = ids[start : start + body]
        chunks.append(([bos_id] if bos_id is not None else []) + chunk)
        if len(chunks) >= max_sequences:
            break
    if not chunks and ids:  # shorter than one sequence: use it all
        chunks.append(([bos_id] if bos_id is not None else []) + ids)
    return chunks


def byte_chunks(
    text: str, vocab_size: int, *, seq_len: int = 128, max_sequences: int = 8
) -> list[list[int]]:
    """Fallback for models without a tokenizer (random or toy checkpoints): UTF-8 bytes,
    folded into the vocabulary. The measures then describe the model on byte-like input."""
    data = [b % vocab_size for b in text.encode()]
    return [data[i : i + seq_len] for i in range(0, len(data) - seq_len + 1, seq_len)][
        :max_sequences
    ]


@torch.no_grad()
def collect_hidden_states(model: nn.Module, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """[embedding output, output of block 0, ..., output of block L-1], each [B, T, d].

    Forward hooks on the blocks (rather than a copy of the forward loop) keep this right for
    every architecture the model supports, including post-norm and sandwich blocks.
    """
    outputs: list[torch.Tensor] = []
    if getattr(model, "connections", None) is not None:
        return _topology_hidden_states(model, input_ids)
    hooks = []
    first = model.layers[0]

    def pre_hook(_module: nn.Module, args: tuple) -> None:
        outputs.append(args[0].detach())

    def hook(_module: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        outputs.append(out.detach())

    hooks.append(first.register_forward_pre_hook(pre_hook))
    hooks += [b.register_forward_hook(hook) for b in model.layers]
    try:
        model.hidden_states(input_ids)
    finally:
        for h in hooks:
            h.remove()
    return outputs


def _topology_hidden_states(model: nn.Module, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """`collect_hidden_states` under a cross-layer topology (components/connections/), whose
    blocks may be called sublayer by sublayer: the topology's own per-layer representation
    (`hidden`), read after each of its steps."""
    conn = model.connections
    outputs: list[torch.Tensor] = []
    start, layer = conn.start, conn.layer

    def traced_start(x: torch.Tensor) -> Any:
        outputs.append(x.detach())
        return start(x)

    def traced_layer(i: int, block: nn.Module, state: Any, args: Any) -> Any:
        state = layer(i, block, state, args)
        outputs.append(conn.hidden(state).detach())
        return state

    conn.start, conn.layer = traced_start, traced_layer  # instance attributes, removed below
    try:
        model.hidden_states(input_ids)
    finally:
        del conn.start, conn.layer
    return outputs


@torch.no_grad()
def activation_analysis(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    *,
    skip_first: int = 1,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Per-layer rank-collapse measures averaged over `sequences` (each a list of token ids).

    Returns {"embed": {...}, "layers": [{...} per block], "n_sequences", "n_tokens"}.
    """
    if not sequences:
        raise ValueError("activation_analysis: no sequences")
    was_training = model.training
    model.eval()
    sums: list[dict[str, float]] | None = None
    n_tokens = 0
    try:
        for k, seq in enumerate(sequences):
            ids = torch.tensor([list(seq)], dtype=torch.long, device=model.embed.weight.device)
            states = collect_hidden_states(model, ids)
            per_layer = [representation_measures(h[0, skip_first:]) for h in states]
            if sums is None:
                sums = [dict.fromkeys(MEASURES, 0.0) for _ in per_layer]
            for acc, m in zip(sums, per_layer, strict=True):
                for key in MEASURES:
                    acc[key] += m[key]
            n_tokens += ids.shape[1] - skip_first
            if progress is not None:
                progress(k)
    finally:
        model.train(was_training)
    assert sums is not None
    avg = [{key: acc[key] / len(sequences) for key in MEASURES} for acc in sums]
    return {
        "embed": avg[0],
        "layers": avg[1:],
        "n_sequences": len(sequences),
        "n_tokens": n_tokens,
        "skip_first": skip_first,
    }


def projection_matrices(block: nn.Module) -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """The block's projection weights by short name (q, k, v, o, gate, up, down, ...).

    MoE experts come as lists (one matrix per expert) under "experts.<name>"; MLA's latent
    projections under their own names (q_a, q_b, kv_a, kv_b).
    """
    out: dict[str, torch.Tensor | list[torch.Tensor]] = {}
    for name, mod in block.attn.named_children():
        if isinstance(mod, nn.Linear):
            out[name.removesuffix("_proj")] = mod.weight
    mlp = block.mlp
    if hasattr(mlp, "experts"):
        ex = mlp.experts
        for name in ("gate_proj", "up_proj", "down_proj"):
            w = getattr(ex, name, None)
            if w is not None:
                out["experts." + name.removesuffix("_proj")] = list(w.unbind(0))
        if getattr(mlp, "shared", None) is not None:
            mlp = mlp.shared
            prefix = "shared."
        else:
            return out
    else:
        prefix = ""
    for name in ("gate_proj", "up_proj", "down_proj"):
        lin = getattr(mlp, name, None)
        if isinstance(lin, nn.Linear):
            out[prefix + name.removesuffix("_proj")] = lin.weight
    return out


def projection_metrics(
    model: nn.Module,
    *,
    fit_alpha: bool = True,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, dict[str, float]]]:
    """weightwatcher metrics of every projection of every block (experts: the mean)."""
    from glassformer.diagnostics.weightwatcher_metrics import matrix_metrics

    rows = []
    for i, block in enumerate(model.layers):
        row: dict[str, dict[str, float]] = {}
        for name, w in projection_matrices(block).items():
            if isinstance(w, list):
                per = [matrix_metrics(m, fit_alpha) for m in w]
                row[name] = {k: sum(p[k] for p in per) / len(per) for k in per[0]}
            else:
                row[name] = matrix_metrics(w, fit_alpha)
        rows.append(row)
        if progress is not None:
            progress(i)
    return rows
