"""Mixture of Experts feed-forward layer (Shazeer et al. 2017; Fedus et al. 2021).

A router scores each token against E experts and sends it to the top k of them:
    s = softmax(x W_r (+ b_r))  (Mixtral, Qwen-MoE, gpt-oss)  or  s = sigmoid(x W_r)  (DeepSeek-V3)
    chosen = top_k(s + b)    b: DeepSeek-V3's auxiliary-loss-free balancing bias, used only to
                             choose experts, never to weight them (Wang et al. 2024)
    w = s[chosen] (/ sum s[chosen] when normalised) * routed_scaling
    y = sum_{e in chosen} w_e GLU_e(x)  +  sum_shared GLU_shared(x)
    (Llama 4, top-1 sigmoid: y = sum_{e in chosen} GLU_e(w_e x) + GLU_shared(x); the weight
    scales the expert's input, which differs from scaling its output since GLU is not linear)
    (Qwen2-MoE, Qwen3-Next, Qwen3.5: one shared expert scaled by sigmoid(x w_g), a per-token gate)
Grouped routing (DeepSeek-V3): experts are split into n_groups; each group is scored by the sum
of its two best (biased) scores, only the best topk_groups groups stay eligible, which bounds how
many devices a token's experts live on. Shared experts (DeepSeek-MoE, Dai et al. 2024) see every
token. Expert weights are stored stacked, [E, out, in], so a layer of 256 experts is three tensors.
Renormalised softmax weights are the softmax of the k chosen logits alone, which is how gpt-oss
(OpenAI 2025) spells its routing (top-k of the logits, then a softmax over those k); its router
has a bias b_r, its experts biases on every projection (Config.mlp_bias) and the clamped SwiGLU
of `mlp.glu_fn`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glassformer.components.mlp import MLP, activation_fn, glu_fn
from glassformer.config import Config


class Router(nn.Module):
    def __init__(self, config: Config, n_experts: int | None = None) -> None:
        super().__init__()
        e = n_experts or config.n_experts
        self.weight = nn.Parameter(torch.empty(e, config.d_model))
        self.bias = nn.Parameter(torch.empty(e)) if config.router_logit_bias else None
        if config.router_bias:
            self.register_buffer("score_bias", torch.zeros(e))
        else:
            self.score_bias = None
        self.top_k = config.n_experts_per_token
        self.score = config.router_score
        self.normalise = config.router_norm_topk
        self.n_groups, self.topk_groups = config.router_n_groups, config.router_topk_groups
        self.scaling = config.routed_scaling

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [N, d] -> (weights [N, k], expert ids [N, k], router logits [N, E])."""
        bias = None if self.bias is None else self.bias.float()
        logits = F.linear(x.float(), self.weight.float(), bias)
        scores = logits.softmax(-1) if self.score == "softmax" else logits.sigmoid()
        choice = scores if self.score_bias is None else scores + self.score_bias.float()
        if self.n_groups > 1:
            choice = self._mask_groups(choice)
        ids = choice.topk(self.top_k, dim=-1).indices
        weights = scores.gather(-1, ids)
        if self.normalise:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return (weights * self.scaling).to(x.dtype), ids, logits

    def _mask_groups(self, choice: torch.Tensor) -> torch.Tensor:
        n, e = choice.shape
        grouped = choice.view(n, self.n_groups, e // self.n_groups)
        group_scores = grouped.topk(2, dim=-1).values.sum(-1)
        keep = group_scores.topk(self.topk_groups, dim=-1).indices
        group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep, True)
        expert_mask = group_mask[:, :, None].expand_as(grouped).reshape(n, e)
        return choice.masked_fill(~expert_mask, float("-inf"))


class Experts(nn.Module):
    """E gated MLPs as stacked weights; each expert runs only on the tokens routed to it."""

    def __init__(
        self, config: Config, d_ff: int | None = None, n_experts: int | None = None
    ) -> None:
        super().__init__()
        e, d, f = n_experts or config.n_experts, config.d_model, d_ff or config.moe_d_ff
        self.gated = config.mlp == "glu"
        self.gate_proj = nn.Parameter(torch.empty(e, f, d)) if self.gated else None
        self.up_proj = nn.Parameter(torch.empty(e, f, d))
        self.down_proj = nn.Parameter(torch.empty(e, d, f))
        if config.mlp_bias:
            self.gate_proj_bias = nn.Parameter(torch.empty(e, f)) if self.gated else None
            self.up_proj_bias = nn.Parameter(torch.empty(e, f))
            self.down_proj_bias = nn.Parameter(torch.empty(e, d))
        else:
            self.gate_proj_bias = self.up_proj_bias = self.down_proj_bias = None
        self.act = activation_fn(config.activation)
        self.glu = glu_fn(config)
        self.scale_input = config.router_scales_input

    def forward(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        # token_index[e] / slot[e]: which tokens chose expert e, and as their which choice
        flat_ids = ids.flatten()
        order = flat_ids.argsort(stable=True)
        counts = torch.bincount(flat_ids, minlength=self.up_proj.shape[0]).tolist()
        token_of = order // ids.shape[1]
        weight_of = weights.flatten()[order]
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            tokens = token_of[start : start + count]
            weight = weight_of[start : start + count, None]
            h = x[tokens] * weight if self.scale_input else x[tokens]
            up = F.linear(h, self.up_proj[expert], self._bias(self.up_proj_bias, expert))
            if self.gate_proj is not None:
                gate_bias = self._bias(self.gate_proj_bias, expert)
                h = self.glu(F.linear(h, self.gate_proj[expert], gate_bias), up)
            else:
                h = self.act(up)
            h = F.linear(h, self.down_proj[expert], self._bias(self.down_proj_bias, expert))
            if not self.scale_input:
                h = h * weight
            out.index_add_(0, tokens, h)
            start += count
        return out

    @staticmethod
    def _bias(bias: torch.Tensor | None, expert: int) -> torch.Tensor | None:
        return None if bias is None else bias[expert]


class MoE(nn.Module):
    def __init__(self, config: Config, layer: int | None = None) -> None:
        super().__init__()
        # a pruned model's layers may differ in expert count and width
        e = None if layer is None else config.layer_n_experts(layer)
        self.router = Router(config, e)
        self.experts = Experts(config, None if layer is None else config.layer_moe_d_ff(layer), e)
        self.shared = MLP(config, d_ff=config.shared_d_ff) if config.n_shared_experts else None
        self.shared_gate = (
            nn.Linear(config.d_model, 1, bias=False) if config.shared_expert_gate else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        weights, ids, _ = self.router(flat)
        out = self.experts(flat, ids, weights).view(shape)
        if self.shared is not None:
            shared = self.shared(x)
            if self.shared_gate is not None:
                shared = torch.sigmoid(self.shared_gate(x)) * shared
            out = out + shared
        return out
