"""Spectral norms without full SVDs: block power iteration on matrices and matrix products.

The largest singular value of a linear map M (m x n) is

    ||M||_2 = sigma_1(M) = sqrt(lambda_max(M^T M)).

Plain power iteration x <- M^T M x / ||.|| converges like (sigma_2 / sigma_1)^(2k), which is
slow for random-like weight matrices whose top singular values nearly tie. We use *block*
(subspace) iteration instead (Golub & Van Loan, "Matrix Computations", sec. 8.2.4): a block of
b vectors, re-orthonormalised each step, with Rayleigh-Ritz extraction of the top singular
value. Its error falls like (sigma_{b+1} / sigma_1)^(2k), so a block of 8 converges in a few
dozen steps even when sigma_1 ~ sigma_2.

Only matrix-vector products with M and M^T are needed, so ||W_down @ W_up||_2 is computed
through both factors (2 * d * f flops per vector) without forming the d x d product.

`spectral_norm_differentiable` is the training-time variant: sigma = u^T M v with u, v the
(detached) top singular vectors from a few power steps. Because d sigma_1 / dM = u v^T at the
singular vectors, the gradient is exact once u, v have converged, and persisting u, v across
steps (as in spectral normalisation, Miyato et al. 2018) makes one step per call enough.
"""

from __future__ import annotations

import contextlib
import itertools
import zlib
from collections.abc import Callable, Iterator, Sequence

import torch

MatVec = Callable[[torch.Tensor], torch.Tensor]


SMALL_DIM = 1024  # below this width, linear algebra runs on one thread (see single_thread)


@contextlib.contextmanager
def single_thread(active: bool = True) -> Iterator[None]:
    """Run small CPU ops on one thread, then restore the setting.

    Power iteration is hundreds of tiny matmuls/QRs on [n, 8] blocks; with several intra-op
    threads on a busy machine each op waits for a descheduled worker, which can make them
    many times slower (up to 100x on the 2-core reference machine under load). One thread
    loses nothing at these sizes.
    """
    n = torch.get_num_threads()
    if n == 1 or not active:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def top_singular_value(
    matvec: MatVec,
    rmatvec: MatVec,
    n: int,
    *,
    block: int = 8,
    tol: float = 1e-10,
    max_iter: int = 300,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> float:
    """sigma_1 of the operator M: R^n -> R^m given x -> M x and y -> M^T y on [n, b] blocks.

    Stops when the Ritz estimate changes by less than `tol` (relative) between steps.
    """
    with single_thread():
        return _top_singular_value(matvec, rmatvec, n, block, tol, max_iter, dtype, device, seed)


def _top_singular_value(
    matvec: MatVec,
    rmatvec: MatVec,
    n: int,
    block: int,
    tol: float,
    max_iter: int,
    dtype: torch.dtype,
    device: torch.device | str | None,
    seed: int,
) -> float:
    b = min(block, n)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(n, b, generator=gen, dtype=dtype).to(device)
    q, _ = torch.linalg.qr(q)
    prev = 0.0
    sigma = 0.0
    for _ in range(max_iter):
        mq = matvec(q)
        # Rayleigh-Ritz on span(q): the top singular value of M q bounds sigma_1 from below
        # and converges to it from below, monotonically up to rounding.
        sigma = float(torch.linalg.svdvals(mq)[0])
        if sigma == 0.0:
            return 0.0
        if abs(sigma - prev) <= tol * sigma:
            break
        prev = sigma
        q, _ = torch.linalg.qr(rmatvec(mq))
    return sigma


def matrix_spectral_norm(w: torch.Tensor, **kwargs: object) -> float:
    """||W||_2 by block power iteration (float64)."""
    w = w.detach().to(torch.float64)
    wt = w.T.contiguous()  # a strided transpose makes every matmul several times slower
    return top_singular_value(
        lambda x: w @ x,
        lambda y: wt @ y,
        w.shape[1],
        device=w.device,
        **kwargs,  # type: ignore[arg-type]
    )


def _product_matvecs(
    mats: Sequence[torch.Tensor], mats_t: Sequence[torch.Tensor]
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """x -> F_1 ... F_k x and y -> (F_1 ... F_k)^T y = F_k^T ... F_1^T y, from the factors
    `mats` and their transposes `mats_t`, never forming the product."""

    def mv(x: torch.Tensor) -> torch.Tensor:
        for m in reversed(mats):
            x = m @ x
        return x

    def rmv(y: torch.Tensor) -> torch.Tensor:
        for mt in mats_t:
            y = mt @ y
        return y

    return mv, rmv


def product_spectral_norm(factors: Sequence[torch.Tensor], **kwargs: object) -> float:
    """||F_1 F_2 ... F_k||_2 through matvecs with each factor, never forming the product.

    For the MLP path of the 1:1 rule: product_spectral_norm([W_down, W_up]).
    """
    mats = [f.detach().to(torch.float64).contiguous() for f in factors]
    mats_t = [m.T.contiguous() for m in mats]
    for left, right in itertools.pairwise(mats):
        if left.shape[1] != right.shape[0]:
            raise ValueError(
                f"factors: shapes {tuple(left.shape)} and {tuple(right.shape)} do not chain"
            )

    mv, rmv = _product_matvecs(mats, mats_t)
    return top_singular_value(mv, rmv, mats[-1].shape[1], device=mats[-1].device, **kwargs)  # type: ignore[arg-type]


def exact_spectral_norm(w: torch.Tensor) -> float:
    """||W||_2 from a full SVD (reference; slow for large matrices)."""
    return float(torch.linalg.matrix_norm(w.detach().to(torch.float64), ord=2))


class PowerIterationState:
    """Persistent left/right vectors for differentiable spectral norms, keyed by name."""

    def __init__(self) -> None:
        self.vectors: dict[str, torch.Tensor] = {}

    def get(self, key: str, n: int, like: torch.Tensor) -> torch.Tensor:
        v = self.vectors.get(key)
        if v is None or v.shape[0] != n or v.device != like.device:
            gen = torch.Generator(device="cpu").manual_seed(zlib.crc32(key.encode()))  # stable
            v = torch.randn(n, generator=gen, dtype=torch.float32).to(like.device)
            v = v / v.norm()
        return v

    def put(self, key: str, v: torch.Tensor) -> None:
        self.vectors[key] = v


def spectral_norm_differentiable(
    factors: Sequence[torch.Tensor],
    *,
    state: PowerIterationState | None = None,
    key: str = "",
    n_iter: int = 1,
    method: str = "power",
) -> torch.Tensor:
    """sigma_1(F_1 ... F_k) as a differentiable scalar.

    method="power": u^T (F_1 ... F_k) v with u, v from `n_iter` power steps under no_grad
    (stop-gradient on the vectors), warm-started from `state`; cheap: O(k) matvecs.
    method="exact": torch.linalg.matrix_norm(product, ord=2) (a full SVD; exact gradient).
    """
    small = min(min(f.shape) for f in factors) < SMALL_DIM
    with single_thread(small):
        return _spectral_norm_differentiable(factors, state, key, n_iter, method)


def _spectral_norm_differentiable(
    factors: Sequence[torch.Tensor],
    state: PowerIterationState | None,
    key: str,
    n_iter: int,
    method: str,
) -> torch.Tensor:
    if method == "exact":
        prod = factors[0]
        for f in factors[1:]:
            prod = prod @ f
        return torch.linalg.matrix_norm(prod.float(), ord=2)
    if method != "power":
        raise ValueError(f"method: expected 'power' or 'exact', got {method!r}")
    n = factors[-1].shape[1]
    with torch.no_grad():
        mats = [f.detach().float() for f in factors]
        mv, rmv = _product_matvecs(mats, [m.T for m in mats])
        cold = state is None or key not in state.vectors
        if cold:
            n_iter = max(n_iter, 30)  # no warm start: converge first, then 1 step per call
        if state is not None:
            v = state.get(key, n, mats[-1])
        else:
            v = torch.randn(n, device=mats[-1].device)
            v = v / v.norm()
        for _ in range(max(1, n_iter)):
            v = rmv(mv(v))
            v = v / (v.norm() + 1e-30)
        if state is not None:
            state.put(key, v)
        u = mv(v)
        u = u / (u.norm() + 1e-30)
    x = v.to(factors[-1].dtype)
    for f in reversed(factors):
        x = f @ x
    return torch.dot(u.to(x.dtype), x)
