"""The Triton LM-head cross-entropy (fusion/lm_head_loss.py) against PyTorch's unfused loss:
F.cross_entropy(softcap(h W^T)) with reduction="sum" and ignore_index=-100, forward and both
gradients, on shapes that are no multiple of any tile (37 rows, vocabulary 1000, width 48).

On a CPU the kernels run under Triton's interpreter (TRITON_INTERPRET=1, set by
tests/conftest.py before triton is imported)."""

import pytest
import torch
import torch.nn.functional as F

from glassformer.components.head_loss import linear_cross_entropy
from glassformer.fusion.lm_head_loss import linear_cross_entropy_triton
from tests.fusion.needs_triton import require_triton

require_triton()

# On a GPU the kernels are compiled; elsewhere they run under the interpreter.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

ROWS, VOCAB, WIDTH = 37, 1000, 48
# Several tiles in every dimension, the last one partial in each (the interpreter's time is
# per program, so a few larger tiles keep each test near a second).
TILES = (16, 128, 32)


def _inputs(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(ROWS, WIDTH, generator=gen).to(dtype)
    w = (torch.randn(VOCAB, WIDTH, generator=gen) * 0.3).to(dtype)
    y = torch.randint(0, VOCAB, (ROWS,), generator=gen)
    y[[0, 17, 36]] = -100  # ignored rows, in the first, a middle and the last (partial) block
    return h.to(DEVICE), w.to(DEVICE), y.to(DEVICE)


def _reference(h, w, y, softcap):
    """Loss and gradients of the unfused program in float64."""
    h64 = h.detach().cpu().double().requires_grad_()
    w64 = w.detach().cpu().double().requires_grad_()
    z = h64 @ w64.t()
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    loss = F.cross_entropy(z, y.cpu(), ignore_index=-100, reduction="sum")
    loss.backward()
    return loss.detach(), h64.grad, w64.grad


def _triton(h, w, y, softcap, scale=1.0):
    h = h.clone().requires_grad_()
    w = w.clone().requires_grad_()
    loss = linear_cross_entropy_triton(h, w, y, softcap, tiles=TILES)
    (loss * scale).backward()
    return loss.detach().cpu(), h.grad.cpu(), w.grad.cpu()


@pytest.mark.parametrize("softcap", [None, 4.0])
def test_float32_loss_and_gradients_equal_unfused(softcap):
    h, w, y = _inputs(torch.float32)
    loss, dh, dw = _triton(h, w, y, softcap)
    ref_loss, ref_dh, ref_dw = _reference(h, w, y, softcap)
    assert loss.dtype == torch.float32
    assert dh.dtype == dw.dtype == torch.float32
    assert abs(loss.item() - ref_loss.item()) <= 1e-5 * abs(ref_loss.item())
    assert (dh.double() - ref_dh).abs().max().item() <= 1e-5
    assert (dw.double() - ref_dw).abs().max().item() <= 1e-5
    # the ignored rows get no gradient at all
    assert dh[[0, 17, 36]].abs().max().item() == 0.0


def test_bfloat16_within_bf16_rounding():
    h, w, y = _inputs(torch.bfloat16, seed=1)
    loss, dh, dw = _triton(h, w, y, 30.0)
    ref_loss, ref_dh, ref_dw = _reference(h, w, y, 30.0)  # the same bf16 inputs, in float64
    assert dh.dtype == dw.dtype == torch.bfloat16
    assert abs(loss.item() - ref_loss.item()) <= 1e-4 * abs(ref_loss.item())
    # dL/dz is rounded to bf16 before its GEMMs (as the forward's inputs are): relative 2^-8
    assert (dh.double() - ref_dh).abs().max().item() <= 1e-2 * ref_dh.abs().max().item()
    assert (dw.double() - ref_dw).abs().max().item() <= 1e-2 * ref_dw.abs().max().item()


def test_matches_the_cpu_chunked_loss_and_scales_by_the_incoming_gradient():
    """Same semantics as the CPU path's `linear_cross_entropy` (chunks of 16 rows here), with
    a gradient of 0.5 flowing in (a mean over tokens, a loss weight)."""
    h, w, y = _inputs(torch.float32, seed=2)
    loss, dh, dw = _triton(h, w, y, None, scale=0.5)
    hc, wc = h.clone().requires_grad_(), w.clone().requires_grad_()
    cpu = linear_cross_entropy(hc, wc, y, None, chunk_tokens=16)
    (cpu * 0.5).backward()
    assert abs(loss.item() - cpu.item()) <= 1e-5 * abs(cpu.item())
    assert (dh - hc.grad.cpu()).abs().max().item() <= 1e-5
    assert (dw - wc.grad.cpu()).abs().max().item() <= 1e-5


def test_frozen_head_and_batched_labels():
    """A frozen head (LoRA) asks only for dL/dh; [batch, seq] hidden states and labels are
    flattened; all-ignored labels give a zero loss and zero gradient."""
    h, w, y = _inputs(torch.float32, seed=3)
    hb = h[:36].reshape(4, 9, WIDTH).clone().requires_grad_()
    loss = linear_cross_entropy_triton(hb, w, y[:36].reshape(4, 9), tiles=TILES)
    loss.backward()
    ref_loss, ref_dh, _ = _reference(h[:36], w, y[:36], None)
    assert abs(loss.item() - ref_loss.item()) <= 1e-5 * abs(ref_loss.item())
    assert (hb.grad.reshape(36, WIDTH).cpu().double() - ref_dh).abs().max().item() <= 1e-5
    hz = h.clone().requires_grad_()
    none = linear_cross_entropy_triton(hz, w, torch.full((ROWS,), -100, device=DEVICE), tiles=TILES)
    none.backward()
    assert none.item() == 0.0 and hz.grad.abs().max().item() == 0.0


def test_bad_labels_and_tiles_raise_naming_the_argument():
    h, w, y = _inputs(torch.float32)
    y[5] = VOCAB
    with pytest.raises(ValueError, match=r"labels: .* got 1000 at flat position 5"):
        linear_cross_entropy_triton(h, w, y)
    with pytest.raises(ValueError, match="labels: expected shape"):
        linear_cross_entropy_triton(h, w, y[:-1])
    with pytest.raises(ValueError, match="tiles: expected powers of two"):
        linear_cross_entropy_triton(h, w, y.clamp(max=VOCAB - 1), tiles=(16, 48, 16))
    with pytest.raises(ValueError, match="weight: expected the dtype"):
        linear_cross_entropy_triton(h, w.double(), y.clamp(max=VOCAB - 1))


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_model_training_loss_on_the_kernel(family):
    """`use_for_training_loss` gives the same loss and parameter gradients as the plain model
    (Gemma 2: soft-capped final logits, tied embeddings; Llama: an untied head)."""
    from glassformer.fusion.lm_head_loss import use_for_training_loss
    from glassformer.model import Transformer
    from tests.families import our_config

    torch.manual_seed(0)
    plain = Transformer(our_config(family)).to(DEVICE)
    fused = Transformer(plain.config).to(DEVICE)
    fused.load_state_dict(plain.state_dict())
    assert use_for_training_loss(fused) is fused
    ids = torch.randint(0, plain.config.vocab_size, (2, 21), device=DEVICE)
    labels = ids[:, 1:].clone()
    labels[0, :3] = -100
    losses = []
    for m in (plain, fused):
        loss = m(ids[:, :-1], labels=labels)
        loss.backward()
        losses.append(loss.item())
    assert abs(losses[0] - losses[1]) <= 1e-5 * abs(losses[0])
    for (name, p), q in zip(plain.named_parameters(), fused.parameters(), strict=True):
        assert (p.grad - q.grad).abs().max().item() <= 1e-5, name
