"""Per-layer input embeddings (Gemma 3n, Gemma 4; Gemma Team 2025, "Gemma 3n"; Gemma Team 2026,
"Gemma 4").

Besides the residual stream's embedding, every token looks up a second, wide table that holds a
small vector of width p for each of the L layers. It is mixed with a projection of the token's
(scaled) main embedding x_0, so each layer gets its own input e_l (l = 1 .. L):

    t_l = E_ple[token]_l * sqrt(p)                          token identity, [L, p]
    c_l = RMSNorm( (x_0 W_proj)_l / sqrt(d) )               context from the main embedding
    e_l = (c_l + t_l) / sqrt(2)

Inside block l, after attention and the feed-forward layer, a gated projection adds it to the
residual stream:

    x <- x + RMSNorm( W_up ( act(x W_gate) * e_l ) )        W_gate: d -> p, W_up: p -> d

The table is large (vocab x L p) but only looked up, so it costs memory, not compute; that is
how the "effective" E2B/E4B models keep a small compute footprint.
"""

from __future__ import annotations

import torch
from torch import nn

from glassformer.components.mlp import activation_fn
from glassformer.components.norms import make_norm
from glassformer.config import Config


class PerLayerEmbeddings(nn.Module):
    """Token ids and the main embedding -> every layer's input e [B, T, L, p]."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        n, p = config.n_layers, config.per_layer_dim
        self.n_layers, self.dim, self.d_model = n, p, config.d_model
        self.embed = nn.Embedding(config.per_layer_vocab_size, n * p)
        self.projection = nn.Linear(config.d_model, n * p, bias=False)
        self.norm = make_norm(config, p)

    def forward(self, input_ids: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(input_ids)
        # HF rounds the scales to the weights' dtype before multiplying, as for the main table.
        tokens = tokens * torch.tensor(self.dim**0.5, dtype=tokens.dtype)
        context = self.projection(x0) * self.d_model**-0.5
        context = self.norm(context.view(*x0.shape[:-1], self.n_layers, self.dim))
        return (context + tokens.view_as(context)) * 2.0**-0.5


class PerLayerInput(nn.Module):
    """One block's gated injection of its per-layer input into the residual stream."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.gate = nn.Linear(config.d_model, config.per_layer_dim, bias=False)
        self.projection = nn.Linear(config.per_layer_dim, config.d_model, bias=False)
        self.norm = make_norm(config)
        self.act = activation_fn(config.activation)

    def forward(self, x: torch.Tensor, per_layer_input: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.projection(self.act(self.gate(x)) * per_layer_input))
