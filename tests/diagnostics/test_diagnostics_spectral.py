"""Power iteration against numpy's SVD, on matrices with known and with nearly tied spectra."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glassformer.diagnostics.spectral import (
    PowerIterationState,
    exact_spectral_norm,
    matrix_spectral_norm,
    product_spectral_norm,
    spectral_norm_differentiable,
)


def with_singular_values(s: np.ndarray, m: int, n: int, seed: int) -> np.ndarray:
    """U diag(s) V^T with Haar-random U (m x k), V (n x k)."""
    rng = np.random.default_rng(seed)
    k = len(s)
    u, _ = np.linalg.qr(rng.standard_normal((m, k)))
    v, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return (u * s) @ v.T


@pytest.mark.parametrize("shape", [(64, 64), (40, 100), (300, 70)])
def test_matrix_norm_matches_numpy_on_random_matrices(shape: tuple[int, int]) -> None:
    # Gaussian matrices: the top singular values nearly tie (gap ~ n^-2/3), the hard case
    w = np.random.default_rng(1).standard_normal(shape)
    expected = np.linalg.norm(w, 2)
    assert matrix_spectral_norm(torch.from_numpy(w)) == pytest.approx(expected, rel=1e-8)


def test_matrix_norm_of_a_known_spectrum() -> None:
    s = np.array([5.0, 4.999, 1.0, 0.5, 0.1])
    w = with_singular_values(s, 50, 30, seed=2)
    assert matrix_spectral_norm(torch.from_numpy(w)) == pytest.approx(5.0, rel=1e-8)


def test_product_norm_without_forming_the_product() -> None:
    rng = np.random.default_rng(3)
    down, up = rng.standard_normal((32, 96)), rng.standard_normal((96, 32))
    expected = np.linalg.norm(down @ up, 2)
    got = product_spectral_norm([torch.from_numpy(down), torch.from_numpy(up)])
    assert got == pytest.approx(expected, rel=1e-8)
    # three factors, float32 input
    third = rng.standard_normal((32, 10))
    expected3 = np.linalg.norm(down @ up @ third, 2)
    f32 = [torch.tensor(x, dtype=torch.float32) for x in (down, up, third)]
    got3 = product_spectral_norm(f32)
    f32_product = np.float32(down) @ np.float32(up) @ np.float32(third)
    assert got3 == pytest.approx(np.linalg.norm(f32_product, 2), rel=1e-5)
    assert got3 == pytest.approx(expected3, rel=1e-4)


def test_product_rejects_shapes_that_do_not_chain() -> None:
    with pytest.raises(ValueError, match="do not chain"):
        product_spectral_norm([torch.zeros(3, 4), torch.zeros(5, 3)])


def test_zero_matrix() -> None:
    assert matrix_spectral_norm(torch.zeros(5, 7)) == 0.0


def test_exact_norm() -> None:
    w = np.random.default_rng(4).standard_normal((20, 9))
    assert exact_spectral_norm(torch.from_numpy(w)) == pytest.approx(np.linalg.norm(w, 2))


@pytest.mark.parametrize("method", ["power", "exact"])
def test_differentiable_norm_value_and_gradient(method: str) -> None:
    torch.manual_seed(0)
    s = np.array([3.0, 1.5, 1.0, 0.5])
    a = torch.tensor(with_singular_values(s, 12, 8, seed=5), dtype=torch.float32)
    b = torch.randn(8, 10)
    a.requires_grad_(True)
    b.requires_grad_(True)
    state = PowerIterationState()
    sigma = spectral_norm_differentiable([a, b], state=state, key="x", method=method)
    ref_a, ref_b = a.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    ref = torch.linalg.matrix_norm((ref_a @ ref_b).double(), ord=2)
    assert float(sigma.detach()) == pytest.approx(float(ref.detach()), rel=1e-4)
    sigma.backward()
    ref.backward()
    assert torch.allclose(a.grad, ref_a.grad.float(), atol=1e-3)
    assert torch.allclose(b.grad, ref_b.grad.float(), atol=1e-3)
    if method == "power":
        assert "x" in state.vectors  # persisted for the next call (one step each after this)


def test_warm_started_single_steps_track_a_drifting_matrix() -> None:
    torch.manual_seed(1)
    w = torch.randn(30, 20)
    state = PowerIterationState()
    spectral_norm_differentiable([w], state=state, key="w")
    for _ in range(5):
        w = w + 0.01 * torch.randn(30, 20)
        got = float(spectral_norm_differentiable([w], state=state, key="w", n_iter=1))
        exact = float(torch.linalg.matrix_norm(w, ord=2))
        # u^T W v <= sigma_1 always; after one warm step it is already very close
        assert got <= exact * (1 + 1e-6)
        assert got == pytest.approx(exact, rel=5e-3)
