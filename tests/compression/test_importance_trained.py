"""On a tiny model trained to copy (an induction task, where some heads carry the work and
others idle), the gradient head importance ranks heads as masking them really hurts: removing
the k lowest-scored raises the held-out loss less than removing the k highest, and less than k
heads chosen at random."""

from __future__ import annotations

import pytest
import torch

import glassformer as gf
from glassformer.compression.head_mask import HeadMask
from glassformer.compression.importance import compute_importance

VOCAB, HALF = 24, 12


def _copy_task(g: torch.Generator, n: int) -> torch.Tensor:
    """BOS (0), HALF random tokens, the same tokens again: the second half is predictable only
    by attending back to the first (induction heads)."""
    half = torch.randint(1, VOCAB, (n, HALF), generator=g)
    return torch.cat((torch.zeros(n, 1, dtype=torch.long), half, half), 1)


def _loss(model: gf.Transformer, ids: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    labels = torch.full_like(ids, -100)
    labels[:, :-1] = ids[:, 1:]
    with torch.no_grad(), HeadMask(model, mask):
        return (model(ids, labels=labels) / (labels != -100).sum()).item()


@pytest.fixture(scope="module")
def trained() -> gf.Transformer:
    return train_copier()


def train_copier(steps: int = 150) -> gf.Transformer:
    torch.manual_seed(0)
    config = gf.Config.preset(
        "tiny", vocab_size=VOCAB, d_model=48, n_layers=2, n_heads=6, n_kv_heads=3, head_dim=8,
        d_ff=96, max_seq_len=32,
    )  # fmt: skip
    model = gf.Transformer(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = _copy_task(g, 16)
        labels = torch.full_like(ids, -100)
        labels[:, :-1] = ids[:, 1:]
        loss = model(ids, labels=labels) / (labels != -100).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.slow
def test_the_fixture_learned_to_copy(trained: gf.Transformer) -> None:
    held = _copy_task(torch.Generator().manual_seed(3), 64)
    # the first half is noise (ln 23 = 3.1 nats a token), the copy nearly free once learned
    assert _loss(trained, held) < 0.6 * torch.tensor(VOCAB - 1.0).log().item()


@pytest.mark.slow
@pytest.mark.parametrize("k", [2, 3])
def test_removing_the_least_important_heads_hurts_least(trained: gf.Transformer, k: int) -> None:
    c = trained.config
    g = torch.Generator().manual_seed(2)
    calibration, held = _copy_task(g, 16), _copy_task(g, 64)
    scores = compute_importance(trained, calibration, measures=["heads"]).heads.flatten()
    base = _loss(trained, held)

    def rise(heads: torch.Tensor) -> float:
        mask = torch.ones(c.n_layers * c.n_heads)
        mask[heads] = 0
        return _loss(trained, held, mask.view(c.n_layers, c.n_heads)) - base

    order = scores.argsort()
    lowest, highest = rise(order[:k]), rise(order[-k:])
    n = c.n_layers * c.n_heads
    randoms = [
        rise(torch.randperm(n, generator=torch.Generator().manual_seed(r))[:k]) for r in range(8)
    ]
    assert lowest < highest
    assert lowest < sum(randoms) / len(randoms)
