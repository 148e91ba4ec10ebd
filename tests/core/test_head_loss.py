"""The fused, chunked LM-head cross-entropy against HF transformers' own loss and PyTorch's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import glassformer as gf
from glassformer.components.head_loss import IGNORE, linear_cross_entropy
from glassformer.model import linear_into_aligned_rows
from tests.families import SEQ, VOCAB, build_hf

pytest.importorskip("transformers")


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2"])
def test_loss_and_gradients_match_hf(family: str) -> None:
    """HF's `labels=` loss (mean next-token CE; Gemma 2 soft-caps the logits first) and every
    parameter's gradient, against ours from the fused head, chunked in 7-token pieces."""
    hf = build_hf(family).eval()  # eval: no dropout; gradients flow all the same
    ours = gf.from_hf(hf).eval()
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(3))
    ids[1, :5] = 5  # not 0: HF's Gemma embedding has padding_idx 0, whose row gets no gradient
    labels = ids.clone()
    labels[1, :5] = IGNORE  # HF ignores these label positions too
    hf_loss = hf(input_ids=ids, labels=labels).loss
    hf_loss.backward()

    targets = torch.cat([labels[:, 1:], torch.full((2, 1), IGNORE)], dim=1)
    count = int((targets != IGNORE).sum())
    hidden = ours.final_norm(ours.hidden_states(ids)[0])
    weight = ours.embed.weight if ours.lm_head is None else ours.lm_head.weight
    cap = ours.config.final_logit_softcap
    loss = linear_cross_entropy(hidden, weight, targets, cap, chunk_tokens=7) / count
    loss.backward()
    assert abs(loss.item() - hf_loss.item()) <= 1e-5

    # Compare gradients through the same round trip that converts the weights.
    ours_grads = gf.to_hf(_grads_as_model(ours)).state_dict()
    hf_grads = {n: p.grad for n, p in hf.named_parameters() if p.grad is not None}
    assert hf_grads
    for name, grad in hf_grads.items():
        err = (ours_grads[name] - grad).abs().max().item()
        assert err <= 1e-5, f"{family}: gradient of {name} differs by {err:.3g}"


def _grads_as_model(model: gf.Transformer) -> gf.Transformer:
    """A copy of `model` whose parameters hold its gradients (zeros where there is none)."""
    import copy

    clone = copy.deepcopy(model)
    with torch.no_grad():
        for p, src in zip(clone.parameters(), model.parameters(), strict=True):
            p.copy_(src.grad if src.grad is not None else torch.zeros_like(p))
    return clone


@pytest.mark.parametrize("softcap", [None, 2.5])
@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_matches_plain_cross_entropy(softcap: float | None, chunk: int) -> None:
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(3, 11, 16, generator=gen, requires_grad=True)
    w = torch.randn(50, 16, generator=gen, requires_grad=True)
    y = torch.randint(0, 50, (3, 11), generator=gen)
    y[0, :4] = IGNORE
    fused = linear_cross_entropy(h, w, y, softcap, chunk_tokens=chunk)
    (2.0 * fused).backward()  # a non-unit incoming gradient
    grads = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    z = h @ w.t()
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    plain = F.cross_entropy(z.reshape(-1, 50), y.reshape(-1), reduction="sum")
    (2.0 * plain).backward()
    assert torch.allclose(fused, plain, rtol=1e-6, atol=1e-5)
    assert torch.allclose(grads[0], h.grad, atol=1e-5)
    assert torch.allclose(grads[1], w.grad, atol=1e-5)
    with torch.no_grad():  # the loss-only path
        assert torch.allclose(linear_cross_entropy(h, w, y, softcap, chunk), plain, rtol=1e-6)


def test_model_forward_with_labels_and_bf16_autocast() -> None:
    model = gf.Transformer(gf.Config.preset("tiny"))
    ids = torch.randint(0, model.config.vocab_size, (2, 24))
    targets = torch.roll(ids, -1, 1)
    logits = model(ids)
    plain = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
    )
    assert torch.allclose(model(ids, labels=targets), plain, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(ids, labels=targets)
        loss.backward()
    assert loss.dtype == torch.float32
    assert abs(loss.item() - plain.item()) / plain.item() < 0.02  # bf16 matmuls
    assert model.embed.weight.grad is not None and model.embed.weight.grad.dtype == torch.float32


def test_frozen_head_gets_no_gradient() -> None:
    """A frozen head (LoRA fine-tuning freezes it) gets no dL/dW; dL/dh is unchanged."""
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(9, 16, generator=gen, requires_grad=True)
    w = torch.randn(40, 16, generator=gen)
    y = torch.randint(0, 40, (9,), generator=gen)
    linear_cross_entropy(h, w, y, chunk_tokens=4).backward()
    fused = h.grad.clone()
    h.grad = None
    F.cross_entropy(h @ w.t(), y, reduction="sum").backward()
    assert w.grad is None
    assert torch.allclose(fused, h.grad, atol=1e-5)


def test_labels_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="labels: expected shape"):
        linear_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(5, 4), torch.zeros(2, 4).long())


def test_aligned_head_rows_equal_plain_linear() -> None:
    """The no-grad head writes logits into rows padded to 64: same values, padded stride."""
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 5, 8, generator=gen), torch.randn(100, 8, generator=gen)
    out = linear_into_aligned_rows(x, w)
    assert out.shape == (2, 5, 100) and out.stride() == (5 * 128, 128, 1)
    assert torch.equal(out, F.linear(x, w))
    assert linear_into_aligned_rows(x, w[:64]).is_contiguous()  # already aligned: plain
    recorded = linear_into_aligned_rows(x.requires_grad_(), w)  # under autograd: plain
    assert recorded.is_contiguous() and recorded.grad_fn is not None


def test_lora_wrapped_head_takes_the_unfused_loss() -> None:
    """LoRA on an untied lm_head: the head is no longer a plain matrix, so forward(labels=)
    computes the logits through the adapter and the plain loss; both must agree."""
    from glassformer.training.lora import apply_lora

    cfg = gf.Config.preset("tiny").replace(tie_embeddings=False)
    model = gf.Transformer(cfg)
    apply_lora(model, rank=2, targets="lm_head")
    with torch.no_grad():  # a non-zero adapter, so a bypassed one would show
        for name, p in model.named_parameters():
            if "lora" in name:
                p.normal_(0.0, 0.5)
    ids = torch.randint(0, cfg.vocab_size, (2, 12))
    targets = torch.roll(ids, -1, 1)
    targets[:, -1] = IGNORE
    logits = model(ids)
    flat = logits.reshape(-1, logits.shape[-1])
    plain = F.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE, reduction="sum")
    assert torch.allclose(model(ids, labels=targets), plain, rtol=1e-6)


@pytest.mark.parametrize("vocab", [4100, 1201, 50])  # 4 slices of 1025; 1 of 1201; 1 of 50
def test_native_sliced_path_matches_float64(vocab: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU path (logits one vocabulary slice at a time, softmax and gradient in
    `kernels/xent.c`) against float64 cross-entropy: loss, dL/dh and dL/dW, with ignored rows,
    several chunks, and the loss-only path. Counts that the kernel really ran."""
    from glassformer.kernels import autograd, available

    if not available():
        pytest.skip("native kernels unavailable")
    calls = []
    kernel = autograd.softmax_cross_entropy_
    monkeypatch.setattr(
        autograd, "softmax_cross_entropy_", lambda *a: calls.append(a[0].shape) or kernel(*a)
    )
    gen = torch.Generator().manual_seed(vocab)
    h = torch.randn(37, 32, generator=gen, requires_grad=True)
    w = (torch.randn(vocab, 32, generator=gen) * 0.3).requires_grad_()
    y = torch.randint(0, vocab, (37,), generator=gen)
    y[::5] = IGNORE
    y[1] = vocab - 1  # the last column of the last slice
    loss = linear_cross_entropy(h, w, y, chunk_tokens=16)
    (0.5 * loss).backward()
    slices = {4100: 4, 1201: 1, 50: 1}[vocab]
    assert calls == [(slices, 16, vocab // slices)] * 2 + [(slices, 5, vocab // slices)]

    h64, w64 = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = F.cross_entropy(h64 @ w64.t(), y, ignore_index=IGNORE, reduction="sum")
    (0.5 * ref).backward()
    assert abs(loss.item() - ref.item()) <= 1e-5 * ref.item()
    assert torch.allclose(h.grad.double(), h64.grad, atol=2e-6)
    assert torch.allclose(w.grad.double(), w64.grad, atol=2e-6)
    with torch.no_grad():
        assert abs(linear_cross_entropy(h, w, y, chunk_tokens=16).item() - ref.item()) <= 1e-4


def test_vocabulary_slices() -> None:
    """Slice widths: the largest divisor of the vocabulary in [512, 2048]; none -> one slice;
    soft-capping and bf16 autocast take the PyTorch path (None)."""
    from glassformer.kernels import available
    from glassformer.kernels.dispatch import vocab_slices

    if not available():
        pytest.skip("native kernels unavailable")
    h = torch.zeros(4, 8)
    for vocab, slices in [(8192, 4), (50257, 29), (49152, 24), (151936, 128), (300, 1)]:
        assert vocab_slices(h, torch.zeros(vocab, 8), None) == slices, vocab
    assert vocab_slices(h, torch.zeros(8192, 8), 30.0) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert vocab_slices(h, torch.zeros(8192, 8), None) is None


def test_labels_out_of_range_are_refused() -> None:
    h, w = torch.zeros(2, 3, 4), torch.zeros(5, 4)
    expected = r"token ids in \[0, 5\) or -100 \(ignored\), got 5 at flat position 4"
    with pytest.raises(ValueError, match=expected):
        linear_cross_entropy(h, w, torch.tensor([[0, 1, 2], [3, 5, 1]]))
    with pytest.raises(ValueError, match="got -1 at flat position 0"):
        linear_cross_entropy(h, w, torch.tensor([[-1, 1, 2], [3, 4, 1]]))


def test_non_finite_logits_give_a_non_finite_loss() -> None:
    """The trainer stops on a non-finite loss: a NaN or infinite hidden state must not vanish
    in the kernel's row maximum (vector max drops NaN operands) but reach the loss."""
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(1200, 16, generator=gen)
    y = torch.randint(0, 1200, (6,), generator=gen)
    for bad in (float("nan"), float("inf")):
        h = torch.randn(6, 16, generator=gen)
        h[3, 5] = bad
        assert not torch.isfinite(linear_cross_entropy(h, w, y))
        assert not torch.isfinite(linear_cross_entropy(h.requires_grad_(), w, y))
