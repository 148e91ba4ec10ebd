"""Per-matrix spectral metrics in the style of weightwatcher (Martin & Mahoney).

References: C. H. Martin & M. W. Mahoney, "Implicit Self-Regularization in Deep Neural
Networks" (JMLR 2021) and "Predicting trends in the quality of state-of-the-art neural networks
without access to training or testing data" (Nature Communications 2021); the weightwatcher
package (github.com/CalculatedContent/WeightWatcher), whose default conventions we follow.

For a weight matrix W (N x M) the empirical spectral density (ESD) is that of X = W^T W:

    lambda_i = sigma_i(W)^2          (weightwatcher's default: no 1/N normalisation)

and only lambda_i > 1e-5 enter the fit (weightwatcher's EVALS_THRESH). The metrics:

    spectral_norm      = sigma_1(W)                 (note: weightwatcher's own `spectral_norm`
                                                    column is lambda_max = sigma_1^2)
    log_spectral_norm  = log10(lambda_max)          (weightwatcher's definition)
    stable_rank        = sum_i lambda_i / lambda_max = ||W||_F^2 / ||W||_2^2
    log_norm           = log10(sum_i lambda_i)       = log10 ||W||_F^2
    alpha              : power-law exponent of the ESD tail, p(lambda) ~ lambda^-alpha
    alpha_weighted     = alpha * log10(lambda_max)
    log_alpha_norm     = log10(sum_i lambda_i^alpha)

alpha is the continuous power-law maximum-likelihood (Hill) estimate above xmin (Clauset,
Shalizi & Newman 2009, eq. 3.1):

    alpha(xmin) = 1 + n / sum_{lambda_i >= xmin} log(lambda_i / xmin)

with xmin chosen, as weightwatcher does (its `WW_powerlaw.WWFit`), among the eigenvalues
themselves as the one minimising the Kolmogorov-Smirnov distance between the tail's empirical
CDF and the fitted one, D = max |(1 - (x/xmin)^(1-alpha)) - F_emp(x)|, F_emp = 0, 1/n, ...,
(n-1)/n. For fewer than 20 eigenvalues weightwatcher switches to a bias-corrected estimate
(n - 1 instead of n) with tails of at least 8 and xmin chosen by D - 0.868 / sqrt(n); we do too.
Interpretation (Martin & Mahoney): alpha in [2, 6] is "well trained", alpha < 2 over-fit or
heavy-tailed, alpha > 6 under-trained / random-like.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from glassformer.diagnostics.spectral import SMALL_DIM, single_thread

EVALS_THRESH = 1e-5
SMALL_N_CUTOFF = 20


@dataclass
class PowerLawFit:
    alpha: float
    xmin: float
    D: float  # Kolmogorov-Smirnov distance of the chosen fit
    sigma: float  # (alpha - 1) / sqrt(n_tail), the MLE's standard error
    n_tail: int


def esd(w: torch.Tensor | np.ndarray) -> np.ndarray:
    """Eigenvalues of W^T W (sigma_i^2, min(N, M) of them), ascending, float64.

    Computed as the eigenvalues of the smaller Gram matrix in float64, about twice as fast as
    an SVD; the absolute error, ~1e-16 * lambda_max * min(N, M), is far below the 1e-5 floor.
    """
    if isinstance(w, np.ndarray):
        w = torch.from_numpy(w)
    w = w.detach().to(torch.float64)
    with single_thread(min(w.shape) < SMALL_DIM):
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        lam = torch.linalg.eigvalsh(0.5 * (gram + gram.T)).clamp(min=0.0)
    return np.sort(lam.cpu().numpy())


def fit_power_law(evals: np.ndarray, thresh: float = EVALS_THRESH) -> PowerLawFit:
    """weightwatcher's power-law fit of an ESD (xmin by KS-distance minimisation)."""
    data = np.sort(np.asarray(evals, dtype=np.float64))
    data = data[data > thresh]
    n_all = data.size
    if n_all < 2:
        return PowerLawFit(math.nan, math.nan, math.nan, math.nan, int(n_all))
    if n_all < SMALL_N_CUTOFF:
        return _fit_small_n(data)
    log_data = np.log(data)
    # tail sums of log(lambda) for every candidate xmin = data[i], i = 0 .. N-2
    suffix = np.cumsum(log_data[::-1])[::-1]
    idx = np.arange(n_all - 1)
    n = (n_all - idx).astype(np.float64)
    denom = suffix[idx] - n * log_data[idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        alphas = 1.0 + n / denom
    ds = np.ones(n_all - 1)
    # D for every candidate in blocks, so that memory stays O(block * N)
    block = max(1, 4_000_000 // n_all)
    for start in range(0, n_all - 1, block):
        rows = idx[start : start + block]
        a = alphas[rows]
        ok = np.isfinite(a) & (a > 1)
        if not ok.any():
            continue
        rows, a = rows[ok], a[ok]
        # x / xmin for j >= i (masked below the diagonal)
        ratio = data[None, :] / data[rows, None]
        tail = np.arange(n_all)[None, :] >= rows[:, None]
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            theo = 1.0 - np.where(tail, ratio, 1.0) ** (1.0 - a[:, None])
        emp = (np.arange(n_all)[None, :] - rows[:, None]) / (n_all - rows)[:, None]
        diff = np.where(tail, np.abs(theo - emp), 0.0)
        ds[rows] = diff.max(axis=1)
    best = int(np.argmin(ds))
    alpha = float(alphas[best])
    n_tail = int(n_all - best)
    return PowerLawFit(
        alpha, float(data[best]), float(ds[best]), (alpha - 1) / math.sqrt(n_tail), n_tail
    )


def _fit_small_n(data: np.ndarray, k_min: int = 8) -> PowerLawFit:
    """weightwatcher's small-N variant: bias-corrected MLE, objective D - 0.868 / sqrt(n)."""
    n_all = data.size
    log_data = np.log(data)
    best: tuple[float, int, float, float] | None = None  # (objective, i, alpha, D)
    for i in range(n_all - 1):
        n = n_all - i
        if n < k_min:
            continue
        s = float(log_data[i:].sum() - n * log_data[i])
        if s <= 1e-12:
            continue
        alpha = 1.0 + (n - 1.0) / s
        if alpha <= 1.0:
            continue
        theo = 1.0 - (data[i:] / data[i]) ** (1.0 - alpha)
        d = float(np.max(np.abs(np.arange(n) / n - theo)))
        j = d - 0.868 / math.sqrt(n)
        if best is None or j < best[0]:
            best = (j, i, alpha, d)
    if best is None:  # no admissible tail: the whole spectrum
        s = float(log_data.sum() - n_all * log_data[0])
        if s <= 1e-12:
            return PowerLawFit(1.0, float(data[0]), 1.0, 0.0, int(n_all))
        alpha = 1.0 + (n_all - 1.0) / s
        theo = 1.0 - (data / data[0]) ** (1.0 - alpha)
        d = float(np.max(np.abs(np.arange(n_all) / n_all - theo)))
        best = (0.0, 0, alpha, d)
    _, i, alpha, d = best
    return PowerLawFit(alpha, float(data[i]), d, (alpha - 1) / math.sqrt(n_all - i), n_all - i)


def matrix_metrics(w: torch.Tensor | np.ndarray, fit_alpha: bool = True) -> dict[str, float]:
    """weightwatcher-style metrics of one weight matrix (see the module docstring)."""
    evals = esd(w)
    lam_max = float(evals[-1])
    total = float(evals.sum())
    out: dict[str, float] = {
        "spectral_norm": math.sqrt(lam_max),
        "log_spectral_norm": math.log10(lam_max) if lam_max > 0 else -math.inf,
        "stable_rank": total / lam_max if lam_max > 0 else 0.0,
        "log_norm": math.log10(total) if total > 0 else -math.inf,
    }
    if fit_alpha:
        fit = fit_power_law(evals)
        out.update({k: v for k, v in asdict(fit).items()})
        out["alpha_weighted"] = fit.alpha * out["log_spectral_norm"]
        nz = evals[evals > EVALS_THRESH]
        with np.errstate(over="ignore"):
            s = float(np.sum(nz**fit.alpha)) if math.isfinite(fit.alpha) else math.nan
        out["log_alpha_norm"] = math.log10(s) if s > 0 else math.nan
    return out
