"""gmmlib.book.teaching: the naive formulas agree with references where they work, and break where the book says."""
import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from gmmlib import numerics
from gmmlib.book import covariance_2d, naive_gaussian_log_prob, naive_mixture_log_prob


def test_covariance_2d_entries_and_positive_definite():
    S = covariance_2d(2.0, 0.5, -0.3)
    assert torch.allclose(S, torch.tensor([[4.0, -0.3], [-0.3, 0.25]], dtype=torch.float64))
    assert bool((torch.linalg.eigvalsh(S) > 0).all())
    assert torch.linalg.eigvalsh(covariance_2d(1.0, 1.0, 1.5)).min() < 0  # |rho| > 1: not PD
    with pytest.raises(ValueError, match="sigma1 and sigma2"):
        covariance_2d(0.0, 1.0, 0.0)


@pytest.mark.parametrize("D", [1, 2, 5])
def test_naive_gaussian_matches_scipy_when_benign(D):
    rng = np.random.default_rng(D)
    A = rng.normal(size=(D, D))
    cov = A @ A.T + D * np.eye(D)
    mean, X = rng.normal(size=D), rng.normal(size=(7, D))
    got = naive_gaussian_log_prob(torch.from_numpy(X), torch.from_numpy(mean), torch.from_numpy(cov))
    np.testing.assert_allclose(got.numpy(), stats.multivariate_normal(mean, cov).logpdf(X).reshape(-1),
                               rtol=1e-10)


def test_naive_gaussian_breaks_where_stable_does_not():
    D = 200  # det(0.01 I) = 1e-400 underflows float64
    cov = 0.01 * torch.eye(D, dtype=torch.float64)
    X, mean = torch.zeros(1, D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64)
    assert torch.isinf(naive_gaussian_log_prob(X, mean, cov)).all()
    stable = numerics.gaussian_log_prob_tril(X, mean[None], torch.linalg.cholesky(cov)[None])
    assert torch.isfinite(stable).all()
    far = torch.full((1, 2), 40.0, dtype=torch.float64)  # exp(-1600) underflows
    eye = torch.eye(2, dtype=torch.float64)
    assert naive_gaussian_log_prob(far, mean[:2], eye).item() == -np.inf
    assert np.isfinite(numerics.gaussian_log_prob_tril(far, mean[:2][None], eye[None]).item())


def test_naive_mixture_matches_logsumexp_then_underflows():
    lw = torch.log(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))
    a = torch.tensor([[-1.0, -2.0, -0.5], [-800.0, -805.0, -900.0]], dtype=torch.float64)
    naive = naive_mixture_log_prob(lw, a)
    stable = numerics.mixture_log_prob(lw, a)
    np.testing.assert_allclose(stable.numpy(), logsumexp((a + lw).numpy(), axis=-1))
    assert np.isclose(naive[0].item(), stable[0].item())
    assert naive[1].item() == -np.inf and np.isfinite(stable[1].item())
