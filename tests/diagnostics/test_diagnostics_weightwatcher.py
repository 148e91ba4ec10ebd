"""weightwatcher-style metrics: known spectra, a known power law, and the weightwatcher package
itself as a reference when it is installed (it is not a dependency)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glassformer.diagnostics.weightwatcher_metrics import esd, fit_power_law, matrix_metrics


def with_singular_values(s: np.ndarray, m: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    v, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    return (u * s) @ v.T


def test_esd_matches_numpy_svd() -> None:
    w = np.random.default_rng(0).standard_normal((120, 45))
    expected = np.sort(np.linalg.svd(w, compute_uv=False) ** 2)
    np.testing.assert_allclose(esd(torch.from_numpy(w)), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(esd(w.T), expected, rtol=1e-9, atol=1e-9)  # either orientation


def test_norm_metrics_of_a_known_spectrum() -> None:
    s = np.array([10.0, 3.0, 2.0, 1.0, 0.5])
    w = with_singular_values(s, 40, 25, seed=1)
    m = matrix_metrics(torch.from_numpy(w), fit_alpha=False)
    assert m["spectral_norm"] == pytest.approx(10.0, rel=1e-9)
    assert m["log_spectral_norm"] == pytest.approx(math.log10(100.0), rel=1e-9)
    assert m["stable_rank"] == pytest.approx((s**2).sum() / 100.0, rel=1e-9)
    assert m["log_norm"] == pytest.approx(math.log10((s**2).sum()), rel=1e-9)


@pytest.mark.parametrize("alpha", [2.5, 4.0])
def test_alpha_recovers_a_planted_power_law(alpha: float) -> None:
    # eigenvalues drawn from p(x) ~ x^-alpha on [1, inf) (inverse-CDF sampling), planted as the
    # squared singular values of a matrix (a scaled, row-permuted rectangular identity: exact
    # singular values without a costly random rotation)
    rng = np.random.default_rng(2)
    n = 1000
    lam = (1 - rng.random(n)) ** (-1 / (alpha - 1))
    w = np.zeros((1200, n))
    w[rng.permutation(1200)[:n], np.arange(n)] = np.sqrt(lam)
    fit = fit_power_law(esd(torch.from_numpy(w)))
    # the MLE's standard error is (alpha - 1) / sqrt(n_tail); allow a few of them plus the
    # finite-sample KS choice of xmin
    assert fit.alpha == pytest.approx(alpha, abs=max(0.25, 4 * fit.sigma))
    assert fit.n_tail > 100
    assert fit.xmin >= 1.0 - 1e-9


def test_small_n_fit_is_well_defined() -> None:
    lam = np.array([1.0, 1.3, 1.7, 2.0, 2.6, 3.1, 4.0, 5.5, 7.0, 9.0, 15.0, 30.0])
    fit = fit_power_law(lam)
    assert math.isfinite(fit.alpha) and fit.alpha > 1
    assert fit.n_tail >= 8


def test_degenerate_inputs() -> None:
    assert math.isnan(fit_power_law(np.array([1.0])).alpha)
    assert math.isnan(fit_power_law(np.zeros(30)).alpha)  # everything below the 1e-5 floor


def test_matches_weightwatcher_fit() -> None:
    pytest.importorskip("powerlaw")  # weightwatcher imports it at import time
    wwp = pytest.importorskip("weightwatcher.WW_powerlaw")
    rng = np.random.default_rng(4)
    cases = [
        rng.standard_normal((300, 200)),  # Marchenko-Pastur bulk
        rng.standard_t(3, (500, 300)),  # heavy-tailed
        rng.standard_normal((10, 30)),  # fewer than 20 eigenvalues: the small-N variant
    ]
    for w in cases:
        evals = esd(w)
        ours = fit_power_law(evals)
        theirs = wwp.WWFit(evals[evals > 1e-5])
        assert ours.alpha == pytest.approx(theirs.alpha, rel=1e-9)
        assert ours.xmin == pytest.approx(theirs.xmin, rel=1e-12)
        assert ours.D == pytest.approx(theirs.D, rel=1e-9)  # noqa: SIM300 (D is not a constant)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_matches_weightwatcher_analyze_on_a_layer() -> None:
    pytest.importorskip("powerlaw")
    ww = pytest.importorskip("weightwatcher")
    rng = np.random.default_rng(5)
    lin = torch.nn.Linear(300, 500, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(rng.standard_t(3, (500, 300)), dtype=torch.float32))
    details = ww.WeightWatcher(model=torch.nn.Sequential(lin)).analyze()
    row = details.iloc[0]
    ours = matrix_metrics(lin.weight)
    for key in (
        "alpha",
        "xmin",
        "D",
        "log_spectral_norm",
        "stable_rank",
        "alpha_weighted",
        "log_norm",
    ):
        assert ours[key] == pytest.approx(float(row[key]), rel=1e-5), key
    assert ours["log_alpha_norm"] == pytest.approx(float(row["log_alpha_norm"]), rel=1e-5)
