"""gmmlib.priors: the inverse-Wishart log-density against scipy, the MAP objective's gradient
against finite differences, and each prior's fixed point against an independent closed form
(the conjugate MAP update) or scikit-learn's ``reg_covar`` M-step."""
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.mixture import GaussianMixture as SkGMM

import gmmlib
from gmmlib.priors import InverseWishartPrior, RidgePrior, covariance_factors, inverse_wishart_log_prob

from conftest import random_model


def random_spd(rng, D, scale=1.0):
    A = rng.normal(size=(D, D))
    return scale * (A @ A.T / D + 0.3 * np.eye(D))


@pytest.mark.parametrize("D,df", [(1, 0.5), (1, 3.0), (2, 1.5), (2, 4.0), (3, 7.5), (5, 5.0)])
def test_inverse_wishart_log_density_matches_scipy(D, df):
    rng = np.random.default_rng(D * 10 + int(df))
    Psi = random_spd(rng, D, 2.0)
    covs = np.stack([random_spd(rng, D, s) for s in (0.05, 1.0, 30.0)])  # (3, D, D)
    L = torch.linalg.cholesky(torch.as_tensor(covs))
    ours = inverse_wishart_log_prob(L, df, Psi).numpy()
    ref = np.array([scipy.stats.invwishart(df=df, scale=Psi).logpdf(c) for c in covs])
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


def test_inverse_wishart_scalar_scale_means_identity():
    L = torch.linalg.cholesky(torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=torch.float64))
    ref = scipy.stats.invwishart(df=4.0, scale=0.7 * np.eye(2)).logpdf(L.numpy() @ L.numpy().T)
    assert float(inverse_wishart_log_prob(L, 4.0, 0.7)) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("family", ["full", "tied", "diagonal", "isotropic", "shared_isotropic"])
def test_prior_sums_inverse_wishart_over_distinct_covariances(family):
    model = random_model(family, K=3, D=2, seed=1)
    Psi = np.array([[1.0, 0.2], [0.2, 0.5]])
    covs = model.covariances.numpy()  # (K, D, D)
    distinct = covs if model.family.per_component else covs[:1]
    ref = sum(scipy.stats.invwishart(df=3.5, scale=Psi).logpdf(c) for c in distinct)
    assert float(InverseWishartPrior(3.5, Psi)(model).detach()) == pytest.approx(ref, rel=1e-10)
    L, w = covariance_factors(model)
    assert L.shape == (len(distinct), 2, 2) and w.shape == (len(distinct),)


def test_priors_are_zero_for_the_constant_family():
    model = random_model("constant")
    assert float(InverseWishartPrior(3.0, 1.0)(model)) == 0.0
    assert float(RidgePrior(0.1, 10)(model)) == 0.0


@pytest.mark.parametrize("family", ["full", "tied", "diagonal", "isotropic", "shared_isotropic"])
def test_ridge_penalty_is_the_weighted_trace_of_the_inverse_covariances(family):
    """Per distinct covariance, its weight (1 for a shared one) times tr(Σ⁻¹), numpy's inverse;
    the axis-aligned families take it from the variances, never a (D, D) matrix."""
    model = random_model(family, K=3, D=4, seed=2)
    w, covs = model.weights.numpy(), model.covariances.numpy()
    if not model.family.per_component:
        w, covs = np.ones(1), covs[:1]
    ref = -0.5 * 0.3 * 50 * sum(wk * np.trace(np.linalg.inv(c)) for wk, c in zip(w, covs))
    assert float(RidgePrior(0.3, 50)(model).detach()) == pytest.approx(ref, rel=1e-12)


_PEAK = """
import resource, torch, gmmlib
model = gmmlib.GaussianMixture(8, 1500, "{0}", dtype=torch.float64)
prior = gmmlib.InverseWishartPrior(1503.0, 1.0) if "{1}" == "iw" else gmmlib.RidgePrior(0.1, 100)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
prior(model).backward()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in kB is Linux's")
@pytest.mark.parametrize("which", ["iw", "ridge"])
@pytest.mark.parametrize("family", ["diagonal", "isotropic"])
def test_priors_of_axis_aligned_families_form_no_k_by_d_by_d_array(family, which):
    """Both priors went through (K, D, D) diagonal factors and D³ triangular solves: at K = 8,
    D = 1500 one such array is 144 MB. From the variances, the peak grows by what Ψ's own
    (D, D) factor takes (the inverse-Wishart's, cached once), in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _PEAK.format(family, which)], capture_output=True,
                         text=True, check=True)
    assert float(out.stdout.split()[-1]) < 250, out.stdout  # MB


def map_objective(model, X, prior):
    return model.nll(X) - prior(model) / X.shape[0]


@pytest.mark.parametrize("family", ["full", "tied", "diagonal", "isotropic"])
@pytest.mark.parametrize("which", ["iw", "ridge"])
def test_map_objective_gradient_matches_finite_differences(family, which):
    X = gmmlib.generate_data(40, 2, 2, seed=3).X
    model = random_model(family, K=2, D=2, seed=4)
    prior = InverseWishartPrior(3.0, np.array([[0.8, 0.1], [0.1, 0.4]])) if which == "iw" else RidgePrior(0.05, 40)
    # The ridge holds the weights constant (detached), so it is differentiated in the means and
    # covariances only; the inverse-Wishart in every parameter.
    names = ["loc", "raw_scale"] if which == "ridge" else ["logits", "loc", "raw_scale"]

    class Objective(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, X):
            return map_objective(self.m, X, prior)

    obj = Objective()

    def f(*ps):
        return torch.func.functional_call(obj, {f"m.{n}": p for n, p in zip(names, ps)}, (X,))

    inputs = tuple(getattr(model, n).detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_inverse_wishart_map_fixed_point_is_the_conjugate_update():
    # K = 1: the MAP mean is the sample mean and the MAP covariance is (N S + Psi) / (N + nu + D + 1)
    X = gmmlib.generate_data(30, 1, 3, seed=5).X
    N, D = X.shape
    mu = X.mean(0)
    S = (X - mu).T @ (X - mu) / N
    prior = InverseWishartPrior(6.0, np.diag([0.5, 1.0, 2.0]))
    Sigma = prior.map_covariance(S, N)
    expected = (N * S.numpy() + np.diag([0.5, 1.0, 2.0])) / (N + 6.0 + D + 1)
    np.testing.assert_allclose(Sigma.numpy(), expected, rtol=1e-12)
    model = gmmlib.GaussianMixture.from_parameters([1.0], mu[None], Sigma[None], "full")
    map_objective(model, X, prior).backward()
    assert float(model.loc.grad.abs().max()) < 1e-12 and float(model.raw_scale.grad.abs().max()) < 1e-12
    # ... and the maximum-likelihood covariance is NOT a stationary point of the MAP objective
    model = gmmlib.GaussianMixture.from_parameters([1.0], mu[None], S[None], "full")
    map_objective(model, X, prior).backward()
    assert float(model.raw_scale.grad.abs().max()) > 1e-2


def test_gradient_descent_map_fit_reaches_the_conjugate_update():
    X = gmmlib.generate_data(50, 1, 2, seed=6).X
    N, D = X.shape
    S = torch.cov(X.T, correction=0)
    prior = InverseWishartPrior.from_variance(0.5, 2)
    model = gmmlib.GaussianMixture(1, 2, dtype=torch.float64)
    gmmlib.fit_gd(model, X, iterations=400, component_lr=0.05, prior=prior, guard=False, generator=0,
                  progress=False)
    np.testing.assert_allclose(model.covariances[0].numpy(), prior.map_covariance(S, N).numpy(), atol=1e-4)


@pytest.mark.parametrize("family", ["full", "tied", "diagonal", "isotropic"])
def test_ridge_fixed_point_is_scikit_learns_reg_covar(family):
    X = gmmlib.generate_data(120, 2, 2, seed=7).X.numpy()
    sk_name = {"diagonal": "diag", "isotropic": "spherical"}.get(family, family)
    sk = SkGMM(2, covariance_type=sk_name, reg_covar=0.5, tol=1e-14, max_iter=5000, random_state=0).fit(X)
    for prior, small in ((RidgePrior(0.5, len(X)), True), (None, False)):
        model = gmmlib.GaussianMixture.from_sklearn(sk)
        objective = model.nll(X) if prior is None else map_objective(model, X, prior)
        objective.backward()
        g = max(float(p.grad.abs().max()) for p in (model.logits, model.loc, model.raw_scale))
        assert (g < 1e-7) if small else (g > 1e-2), (prior, g)


@pytest.mark.parametrize("kwargs,match", [
    ({"df": 0.5, "scale": 1.0}, "df must be a number > D - 1 = 1"),
    ({"df": 4.0, "scale": np.eye(3)}, r"scale must be a positive number or a \(2, 2\)"),
    ({"df": 4.0, "scale": np.array([[1.0, 2.0], [2.0, 1.0]])}, "scale must be positive definite"),
])
def test_inverse_wishart_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        inverse_wishart_log_prob(torch.eye(2, dtype=torch.float64), **kwargs)


@pytest.mark.parametrize("make,match", [
    (lambda: InverseWishartPrior(-1.0), "df must be a positive"),
    (lambda: InverseWishartPrior(3.0, scale=0.0), "scale must be a positive"),
    (lambda: InverseWishartPrior(3.0, scale="abc"), "scale must be a positive number or a positive-definite matrix"),
    (lambda: InverseWishartPrior(3.0, scale=np.ones(3)), r"finite square \(D, D\).*shape \(3,\)"),
    (lambda: InverseWishartPrior(3.0, scale=[[np.nan, 0.0], [0.0, 1.0]]), "finite square"),
    (lambda: InverseWishartPrior(3.0, scale=[[1.0, 2.0], [2.0, 1.0]]), "scale must be positive definite"),
    (lambda: InverseWishartPrior.from_variance(0.1, 3, df=1.0), "df must be a number > D - 1 = 2"),
    (lambda: RidgePrior(0.0, 10), "reg_covar must be a positive"),
    (lambda: RidgePrior(1e-3, 0), "n_samples must be a positive integer"),
])
def test_prior_constructor_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_from_variance_sets_the_empty_component_covariance():
    prior = InverseWishartPrior.from_variance(0.2, 3)
    assert prior.df == 5.0
    np.testing.assert_allclose(prior.map_covariance(torch.zeros(3, 3, dtype=torch.float64), 0).numpy(),
                               0.2 * np.eye(3), rtol=1e-12)
    assert math.isclose(prior.scale, (5 + 3 + 1) * 0.2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64, torch.float32])
def test_map_covariance_computes_half_precision_and_integers_in_float64(dtype):
    """(n S + Ψ) / (n + ν + D + 1) by hand in float64. A float16 scatter was computed in
    float16: n S overflowed to inf at n = 1e4, S = 10 I, in silence."""
    prior = InverseWishartPrior(4.0, 2.0)
    S = torch.tensor([[10.0, 3.0], [3.0, 8.0]]).to(dtype)
    n = 1e4
    want = (n * S.double() + 2.0 * torch.eye(2, dtype=torch.float64)) / (n + 4.0 + 2 + 1)
    got = prior.map_covariance(S, n)
    assert got.dtype == (torch.float32 if dtype == torch.float32 else torch.float64)
    torch.testing.assert_close(got.double(), want, rtol=1e-6 if dtype == torch.float32 else 1e-15,
                               atol=0)


def test_map_covariance_of_a_large_float32_scatter_does_not_overflow():
    """(n S + Ψ) / (n + ν + D + 1) of S = 1e35 I in float32 at n = 1e4: n S alone is past
    float32's range (it came back inf), the result is not."""
    prior = InverseWishartPrior(5.0, 1.0)
    got = prior.map_covariance(torch.eye(2) * 1e35, 1e4)
    want = (1e4 * 1e35 * torch.eye(2, dtype=torch.float64) + torch.eye(2, dtype=torch.float64)) \
        / (1e4 + 5.0 + 2 + 1)
    assert got.dtype == torch.float32 and bool(torch.isfinite(got).all())
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("D,excess", [(1, 1e-6), (3, 1e-7), (3, 1e-6), (6, 1e-5), (4, 2.5)])
def test_inverse_wishart_log_prob_in_float32_near_the_smallest_df(D, excess):
    """df = D - 1 + excess against scipy, in float32 and float64. ν/2 was rounded to float32
    before log Γ_D: at D = 3, df = 2 + 1e-7 it landed on the pole and the log-density was -inf
    (scipy: -22.68); at 2 + 1e-6 it was 0.05 off. And fit_gd with such a prior stopped at step
    0 ("non-finite log-prior")."""
    df = D - 1 + excess
    Sigma = np.eye(D) + 0.3 * np.ones((D, D))
    Psi = 2.0 * np.eye(D)
    want = scipy.stats.invwishart.logpdf(Sigma, df=df, scale=Psi) if D > 1 else \
        scipy.stats.invwishart.logpdf(Sigma[0, 0], df=df, scale=Psi[0, 0])
    for dtype, rtol in ((torch.float32, 1e-6), (torch.float64, 1e-12)):
        L = torch.linalg.cholesky(torch.as_tensor(Sigma, dtype=dtype))
        got = float(inverse_wishart_log_prob(L, df, torch.as_tensor(Psi, dtype=dtype)))
        assert got == pytest.approx(want, rel=rtol)


def test_low_level_prior_functions_name_bad_input():
    prior = InverseWishartPrior(4.0, 1.0)
    S = torch.eye(2, dtype=torch.float64)
    for call, match in [(lambda: prior.map_covariance(S, -1), "n must be a finite number of points >= 0"),
                        (lambda: prior.map_covariance(S, float("nan")), "n must be"),
                        (lambda: prior.map_covariance(torch.full((2, 2), float("nan")), 3), "finite square"),
                        (lambda: prior.map_covariance("S", 3), "matrix of numbers"),
                        (lambda: inverse_wishart_log_prob(torch.ones(2, dtype=torch.float64), 4.0, 1.0), r"\(\.\.\., D, D\)"),
                        (lambda: inverse_wishart_log_prob(np.eye(2), 4.0, 1.0), "float32 or float64 tensor")]:
        with pytest.raises(ValueError, match=match):
            call()
    assert torch.equal(prior.map_covariance(S, torch.tensor(3.0)), prior.map_covariance(S, 3))


def test_ridge_prior_is_sized_by_the_fit_and_a_wrong_count_is_refused():
    """RidgePrior's ε reaches the optimum as ε only when its n_samples is the fit's N: given
    400 for 300 points, fit_gd regularised by 0.5 x 400/300 = 0.667 unseen (and a
    cross-validation's folds could not be given their own counts). Without n_samples the fit
    supplies its N: the same fit, bit for bit; a wrong count is refused by name."""
    X = gmmlib.generate_data(300, 1, 2, seed=0).X

    def fit(prior):
        model = gmmlib.GaussianMixture(1, 2, dtype=torch.float64)
        gmmlib.fit_gd(model, X, iterations=30, prior=prior, guard=False, generator=0,
                      progress=False)
        return model.covariances
    assert torch.equal(fit(RidgePrior(0.5)), fit(RidgePrior(0.5, len(X))))
    with pytest.raises(ValueError, match=r"n_samples=400\) but the fit has N=300.*n_samples=300"):
        fit(RidgePrior(0.5, 400))
    with pytest.raises(ValueError, match="sized by the fit"):
        RidgePrior(0.5)(gmmlib.GaussianMixture(1, 2))


def test_inverse_wishart_log_prob_refuses_what_is_not_a_cholesky_factor():
    """Sigma itself passed as scale_tril scored -8.73 (scipy at Sigma: -6.04), -I gave NaN, and
    an upper entry was ignored: each is now refused by name, with the remedy."""
    for L in ([[2.0, 0.5], [0.5, 1.0]], [[-1.0, 0.0], [0.0, -1.0]], [[1.0, 5.0], [0.0, 1.0]]):
        with pytest.raises(ValueError, match=r"scale_tril must be lower-triangular.*cholesky\(Sigma\)"):
            inverse_wishart_log_prob(torch.tensor(L, dtype=torch.float64), 4.0, 1.0)
    for L in (torch.eye(2).half(), torch.eye(2).bfloat16(), torch.eye(2, dtype=torch.int64)):
        # half precision reached torch's NotImplementedError for "cholesky_cpu"
        with pytest.raises(ValueError, match=r"scale_tril must be a float32 or float64 tensor"):
            inverse_wishart_log_prob(L, 4.0, 1.0)
    Sigma = np.array([[2.0, 0.5], [0.5, 1.0]])
    L = torch.linalg.cholesky(torch.as_tensor(Sigma))
    assert float(inverse_wishart_log_prob(L, 4.0, 1.0)) == pytest.approx(
        scipy.stats.invwishart(4.0, np.eye(2)).logpdf(Sigma), rel=1e-12)


def test_inverse_wishart_prior_follows_a_changed_df_or_scale_and_owns_its_scale():
    model = random_model("full", K=2, D=2, seed=3)
    covs = model.covariances.numpy()

    def ref(df, Psi):
        return sum(scipy.stats.invwishart(df=df, scale=Psi).logpdf(c) for c in covs)

    prior = InverseWishartPrior(3.0, 1.0)
    assert float(prior(model).detach()) == pytest.approx(ref(3.0, np.eye(2)), rel=1e-10)
    prior.scale = 5.0  # after the first call, which factored Ψ
    assert float(prior(model).detach()) == pytest.approx(ref(3.0, 5.0 * np.eye(2)), rel=1e-10)
    prior.df = 4.5
    assert float(prior(model).detach()) == pytest.approx(ref(4.5, 5.0 * np.eye(2)), rel=1e-10)
    prior.df = 1.0  # not > D - 1 for D = 2: refused as at construction, not -inf
    with pytest.raises(ValueError, match="df must be a number > D - 1 = 1"):
        prior(model)
    with pytest.raises(ValueError, match="df must be a positive"):
        prior.df = -1.0
    with pytest.raises(ValueError, match="scale must be positive definite"):
        prior.scale = [[1.0, 2.0], [2.0, 1.0]]

    Psi = np.array([[1.0, 0.2], [0.2, 0.5]])
    prior = InverseWishartPrior(3.5, Psi)
    before = float(prior(model).detach())
    Psi *= 5.0  # the caller's array, not the prior's
    prior.scale[0, 0] = 100.0  # nor the copy the attribute hands out
    assert float(prior(model).detach()) == before == pytest.approx(ref(3.5, Psi / 5.0), rel=1e-10)
    np.testing.assert_allclose(prior.map_covariance(np.eye(2), 0.0).numpy(), Psi / 5.0 / 6.5)
