"""Perplexity, the quality guard of the quantised modes (`inference/evaluate.py`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import glassformer as gf
from glassformer.inference.evaluate import perplexity


def test_perplexity_windows_with_and_without_bos() -> None:
    """Against a direct computation: cross-entropy of each window's next-token predictions."""
    torch.manual_seed(0)
    model = gf.Transformer(gf.Config.preset("tiny")).eval()
    ids = torch.randint(3, 2048, (23,))
    with torch.inference_mode():
        plain = perplexity(model, ids, window=10)
        nll = sum(
            F.cross_entropy(model(c[None])[0, :-1], c[1:], reduction="sum").item()
            for c in ids.split(10)
        )
        assert (plain.tokens, plain.windows) == (20, 3)
        assert math.isclose(plain.nll, nll / 20, rel_tol=1e-5)
        bos = perplexity(model, ids, window=10, bos_id=1)
        nll = 0.0
        for c in ids.split(9):
            logits = model(torch.cat((torch.tensor([1]), c))[None])[0, :-1]
            nll += F.cross_entropy(logits, c, reduction="sum").item()
        assert (bos.tokens, bos.windows) == (23, 3)
        assert math.isclose(bos.nll, nll / 23, rel_tol=1e-5)
