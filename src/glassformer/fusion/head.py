"""The LM head's node of the fusion IR: one GEMM whose epilogue ends in the loss.

    z = epilogue(h W^T)            epilogue: soft-cap c tanh(z / c) (Gemma 2), or nothing
    L = sum_rows logsumexp(z) - z[label]

The cross-entropy reduces over the vocabulary (a row of the GEMM's output), so it can close the
GEMM's kernel: `lm_head_loss.py` is that kernel (Cut Cross-Entropy, Wijmans et al. 2024), the
epilogue spliced between each logits tile and the running logsumexp. The backward recomputes the
tiles, so neither the logits nor their gradient ever reach memory.

`HeadLoss.traffic` counts what a training step moves per token, in activation elements (labels
and the weights aside): the kernel's own loads and stores, and the unfused op sequence the
explorer costs (`explorer.ops.head_ops` in train mode, whose cross-entropy saving is derived
from this count). No torch here: the explorer imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from glassformer.config import Config


@dataclass(frozen=True)
class HeadLoss:
    """z = softcap(h W^T) -> per-row cross-entropy over `vocab` columns. `weight`: the module
    path of W (the embedding when tied)."""

    in_width: int
    vocab: int
    weight: str
    softcap: float | None = None

    @property
    def epilogue(self) -> tuple[str, ...]:
        """The element-wise ops between the GEMM tile and the reduction, as text."""
        return (f"z = {self.softcap} * tanh(z / {self.softcap})",) if self.softcap else ()

    def traffic(self) -> dict[str, int]:
        """Activation elements one training step moves per token.

        kernel: the forward reads h (d) and stores the loss and the logsumexp (1 + 1); the
        backward reads h and the logsumexp (d + 1) and stores dL/dh (d).
        unfused (the explorer's train-mode ops): the head GEMM reads h, writes z, and in the
        backward reads dL/dz and h and writes dL/dh (2v + 3d); the soft-cap reads and writes z
        forward and dz, z, dz backward (5v); the cross-entropy reads z and writes the loss, then
        reads the loss's gradient and z and writes dz (3v + 2).
        """
        d, v = self.in_width, self.vocab
        fused = 3 * d + 3
        unfused = 3 * d + 2 + (10 if self.softcap else 5) * v
        return {"fused": fused, "unfused": unfused}

    def format(self) -> str:
        t = self.traffic()
        lines = [f"[lm_head]  h[{self.in_width}] x W[{self.weight}] -> {self.vocab}"]
        lines += [f"    {e}   (elementwise)" for e in self.epilogue]
        lines += [
            "    loss = logsumexp(z) - z[label]  over the vocabulary   (ends the kernel)",
            f"    store loss[1], lse[1] f32; per token (train step): fused {t['fused']}, "
            f"unfused {t['unfused']} elements",
        ]
        return "\n".join(lines)


def head_node(cfg: Config) -> HeadLoss:
    weight = "embed.weight" if cfg.tie_embeddings else "lm_head.weight"
    return HeadLoss(cfg.d_model, cfg.vocab_size, weight, cfg.final_logit_softcap)
