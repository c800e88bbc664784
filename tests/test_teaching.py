"""gmmlib.book.teaching: the naive formulas agree with references where they work, and break where
the book says; EM's lower bound, the path between two mixtures and the circle penalty of
chapter 5 against independent computations."""
import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

import gmmlib
from conftest import FAMILIES, random_model
from gmmlib import numerics
from gmmlib.book import covariance_2d, naive_gaussian_log_prob, naive_mixture_log_prob
from gmmlib.book.teaching import circle_penalty, em_lower_bound, interpolate_mixtures


def test_covariance_2d_entries_and_positive_definite():
    S = covariance_2d(2.0, 0.5, -0.3)
    assert torch.allclose(S, torch.tensor([[4.0, -0.3], [-0.3, 0.25]], dtype=torch.float64))
    assert bool((torch.linalg.eigvalsh(S) > 0).all())
    assert torch.linalg.eigvalsh(covariance_2d(1.0, 1.0, 1.5)).min() < 0  # |rho| > 1: not PD
    with pytest.raises(ValueError, match="sigma1 must be a positive finite standard deviation, got 0.0"):
        covariance_2d(0.0, 1.0, 0.0)


@pytest.mark.parametrize("args, match", [
    ((1.0, -1.0, 0.0), "sigma2 must be a positive finite standard deviation, got -1.0"),
    ((1.0, float("inf"), 0.0), "sigma2 must be a positive finite standard deviation, got inf"),
    ((float("nan"), 1.0, 0.0), "sigma1 must be a positive finite standard deviation, got nan"),
    ((1.0, 1.0, float("nan")), "rho must be a finite correlation"),
])
def test_covariance_2d_names_the_bad_argument(args, match):
    """A negative sigma2 was reported as 'sigma1 and sigma2'; an infinite one or a NaN rho passed."""
    with pytest.raises(ValueError, match=match):
        covariance_2d(*args)


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


# ------------------------------------------------------------------------------------------------
# chapter 5: EM's lower bound, the straight path between two mixtures, the circle penalty
# ------------------------------------------------------------------------------------------------
def _bound_by_scipy(model, X, q):
    """(1/N) sum_n sum_k q_nk (log pi_k + log N(x_n | mu_k, Sigma_k) - log q_nk), by scipy."""
    w, m, C = (t.numpy() for t in (model.weights, model.means, model.covariances))
    log_joint = np.stack([np.log(w[k]) + stats.multivariate_normal(m[k], C[k]).logpdf(X)
                          for k in range(len(w))], -1).reshape(len(X), len(w))
    q = np.asarray(q)
    terms = np.where(q > 0, q * (log_joint - np.log(np.where(q > 0, q, 1.0))), 0.0)
    return terms.sum(-1).mean(), log_joint


@pytest.mark.parametrize("family", FAMILIES)
def test_em_lower_bound_matches_scipy_and_touches_at_the_posterior(family):
    model = random_model(family, K=3, D=2, seed=4)
    X = model.sample(300, generator=0)
    q = torch.distributions.Dirichlet(torch.ones(3, dtype=torch.float64)).sample((300,))
    want, log_joint = _bound_by_scipy(model, X.numpy(), q.numpy())
    got = em_lower_bound(model, X, q)
    assert got.shape == () and got.item() == pytest.approx(want, rel=1e-12)
    loglik = logsumexp(log_joint, axis=1).mean()  # the mean log-likelihood, by scipy
    assert got.item() < loglik  # Jensen: strictly below for q far from the posterior
    # the gap is the mean KL(q_n || posterior_n)
    post = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
    kl = (q.numpy() * np.log(q.numpy() / post)).sum(-1).mean()
    assert loglik - got.item() == pytest.approx(kl, rel=1e-9)
    tight = em_lower_bound(model, X, model.predict_proba(X)).item()
    assert tight == pytest.approx(loglik, abs=1e-12)
    assert tight == pytest.approx(-model.nll(X).item(), abs=1e-12)


def test_em_lower_bound_hard_assignments_and_bad_input():
    model = random_model("full", K=3, D=2, seed=1)
    X = model.sample(50, generator=1)
    hard = torch.nn.functional.one_hot(torch.arange(50) % 3, 3).double()  # q log q = 0
    log_joint = model.log_weights.detach() + model.component_log_prob(X)
    want = log_joint[torch.arange(50), torch.arange(50) % 3].mean()
    assert em_lower_bound(model, X, hard).item() == pytest.approx(want.item(), rel=1e-12)
    with pytest.raises(ValueError, match="shape"):
        em_lower_bound(model, X, hard[:, :2])
    with pytest.raises(ValueError, match="distribution"):
        em_lower_bound(model, X, 2 * hard)


@pytest.mark.parametrize("family", FAMILIES)
def test_interpolate_mixtures_endpoints_and_midpoint(family):
    a, b = random_model(family, seed=1), random_model(family, seed=2)
    if family == "constant":  # the same fixed variance on both ends
        b.set_parameters(covariances=a.sklearn_covariances())
    for t, ref in ((0.0, a), (1.0, b)):
        m = interpolate_mixtures(a, b, t)
        assert m.covariance_type == family
        for x, y in ((m.weights, ref.weights), (m.means, ref.means),
                     (m.covariances, ref.covariances)):
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
    mid = interpolate_mixtures(a, b, 0.5)
    torch.testing.assert_close(mid.means, (a.means + b.means) / 2)
    torch.testing.assert_close(mid.covariances, (a.covariances + b.covariances) / 2)
    torch.testing.assert_close(mid.weights, (a.weights + b.weights) / 2)


def test_interpolate_mixtures_refuses_what_is_not_a_mixture():
    a = gmmlib.GaussianMixture.from_parameters([0.9, 0.1], [[0.0], [1.0]], [[[1.0]], [[1.0]]])
    b = gmmlib.GaussianMixture.from_parameters([0.1, 0.9], [[0.0], [1.0]], [[[0.1]], [[1.0]]])
    with pytest.raises(ValueError, match="weight is negative"):
        interpolate_mixtures(a, b, 1.2)  # 0.1 - 0.2 * 0.8 < 0
    b.set_parameters(weights=[0.9, 0.1])
    with pytest.raises(ValueError, match="positive definite"):
        interpolate_mixtures(a, b, 1.2)  # 1 + 1.2 * (0.1 - 1) < 0
    with pytest.raises(ValueError, match="same covariance type"):
        interpolate_mixtures(a, random_model("diagonal", K=2, D=1), 0.5)


def test_circle_penalty_value_gradient_and_checks():
    means = torch.tensor([[3.0, 0.0], [0.0, 4.0], [1.0, 1.0]], dtype=torch.float64)
    model = gmmlib.GaussianMixture.from_parameters(torch.full((3,), 1 / 3), means,
                                                   torch.eye(2).expand(3, 2, 2))
    value = circle_penalty(3.0, 2.0)(model)
    want = -2.0 * ((0.0) ** 2 + 1.0 ** 2 + (2 ** 0.5 - 3.0) ** 2)
    assert value.item() == pytest.approx(want, rel=1e-12)
    value.backward()
    assert model.loc.grad[0].abs().max().item() == 0.0  # a mean on the circle feels no pull
    # the log-prior rises towards the circle: outwards for the mean inside it, inwards outside
    assert model.loc.grad[2] @ means[2] > 0 and model.loc.grad[1] @ means[1] < 0
    with pytest.raises(ValueError, match="strength"):
        circle_penalty(3.0, 0.0)


# ------------------------------------------------------------------------------------------------
# the printed checks: max_abs_diff and Agreement
# ------------------------------------------------------------------------------------------------
def test_max_abs_diff_refuses_complex_input():
    """Cast to float64, 1+1j and 1+5j agreed (the imaginary parts were dropped)."""
    from gmmlib.book import max_abs_diff
    with pytest.raises(ValueError, match="a is complex"):
        max_abs_diff(np.array([1 + 1j]), np.array([1 + 5j]), tol=0)
    with pytest.raises(ValueError, match="b is complex"):
        max_abs_diff(torch.tensor([1.0]), torch.tensor([1 + 5j]), tol=0)


@pytest.mark.parametrize("tol, shown", [(np.float32(1e-3), "1e-03"), (np.int64(0), "0e+00"),
                                        (torch.tensor(1e-3), "1e-03"), (np.array(0.5), "5e-01")])
def test_max_abs_diff_takes_numpy_and_tensor_tolerances(tol, shown):
    """A NumPy scalar or 0-d tensor tolerance was refused as 'not a number'."""
    from gmmlib.book import max_abs_diff
    assert str(max_abs_diff(1.0, 1.0, tol=tol)) == f"max |diff| = 0e+00 (within {shown})"


@pytest.mark.parametrize("tol", [True, torch.tensor([1.0]), float("nan"), np.float64(-1.0)])
def test_max_abs_diff_still_refuses_what_is_not_a_tolerance(tol):
    from gmmlib.book import max_abs_diff
    with pytest.raises(ValueError, match="tol must be a number >= 0"):
        max_abs_diff(1.0, 1.0, tol=tol)


def test_agreement_docstring_shows_what_it_prints():
    from gmmlib.book import Agreement
    assert str(Agreement(0.02, 1e-12)) == "max |diff| = 2e-02 (EXCEEDS 1e-12)"
    assert "``max |diff| = 2e-02 (EXCEEDS 1e-12)``" in Agreement.__doc__
    assert "0.02" not in Agreement.__doc__


@pytest.mark.parametrize("a, b, match", [
    (np.array([1.0, 2.0, 3.0]), np.array([[1.0], [2.0], [3.0]]), r"same shape, got \(3,\) and \(3, 1\)"),
    (torch.zeros(2, 3), torch.zeros(3), r"same shape, got \(2, 3\) and \(3,\)"),
    (np.array([]), 5.0, r"must not be empty, got shapes \(0,\) and \(\)"),
    (np.zeros((0, 2)), np.zeros((0, 2)), "must not be empty"),
])
def test_max_abs_diff_does_not_broadcast_and_refuses_empty_input(a, b, match):
    """(3,) against (3, 1) compared every entry with every other (2.0); an empty array agreed with 5."""
    from gmmlib.book import max_abs_diff
    with pytest.raises(ValueError, match=match):
        max_abs_diff(a, b, tol=1e-12)


def test_max_abs_diff_compares_every_entry_with_a_single_number():
    from gmmlib.book import max_abs_diff
    assert max_abs_diff(torch.tensor([1.0, 1.0 + 1e-9], dtype=torch.float64), 1.0, tol=1e-8).value == pytest.approx(1e-9)
    assert max_abs_diff(np.array(2.0), [2.0, 2.5], tol=1e-8).value == 0.5
    assert max_abs_diff(np.array([1.0, 2.0]), torch.tensor([1.0, 2.0]), tol=0).value == 0.0
