"""One EM iteration of every covariance family against a hand computation (issue 11).

The responsibilities are computed here from the start's parameters with scipy (not with gmmlib's
E-step), and the M-step is written out in NumPy, one formula per family, as chapter 5 states it:

    pi_k = N_k / N,  mu_k = sum_n r_nk x_n / N_k,  S_k = sum_n r_nk (x_n - mu_k)(x_n - mu_k)ᵀ / N_k
    full: S_k    diagonal: diag(S_k)    isotropic: tr(S_k) / D · I
    tied: sum_k N_k S_k / N    shared_isotropic: sum_k N_k tr(S_k) / (N D) · I
    constant: unchanged

With ``reg_covar = 0`` (and the variance floor off) ``fit_em(max_iter=1)`` must give exactly
these; with ``reg_covar = eps`` every learned variance gains ``eps`` (the covariance ``eps I``)
and the constant family is unchanged. scikit-learn's one M-step is a second, independent
reference for the four families it has. Also here: :attr:`FitHistory.seconds_per_step`, which
the chapter prints.
"""
import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGMM

import gmmlib
from conftest import FAMILIES, SKLEARN, random_model

pytestmark = pytest.mark.usefixtures("one_thread")


def data(D, seed=0, N=400):
    return gmmlib.generate_data(N, 3, D, 3.0, "full", seed=seed).X.numpy()


def start(family, X, seed):
    """A random model of ``family`` (floor off) whose means sit on three data points, so that
    every component takes a fair share of the responsibilities."""
    model = random_model(family, K=3, D=X.shape[1], seed=seed)  # from_parameters: floor off
    rows = np.random.default_rng(seed).choice(len(X), 3, replace=False)
    return model.set_parameters(means=X[rows])


def responsibilities(model, X):
    """The E-step by scipy: r_nk ∝ pi_k N(x_n | mu_k, Sigma_k), (N, K)."""
    w, m, C = (t.numpy() for t in (model.weights, model.means, model.covariances))
    log_joint = np.stack([np.log(w[k]) + stats.multivariate_normal(m[k], C[k]).logpdf(X)
                          for k in range(len(w))], -1).reshape(len(X), len(w))
    return np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))


def hand_m_step(family, X, R, old_covariances):
    """Weights (K,), means (K, D) and covariances (K, D, D) of one M-step, by the formulas."""
    N, D = X.shape
    Nk = R.sum(0)  # (K,)
    means = R.T @ X / Nk[:, None]  # (K, D)
    S = np.stack([(R[:, k, None] * (X - means[k])).T @ (X - means[k]) / Nk[k]
                  for k in range(len(Nk))])  # (K, D, D)
    trace = np.trace(S, axis1=1, axis2=2)  # (K,)
    eye = np.eye(D)
    cov = {
        "full": S,
        "diagonal": np.stack([np.diag(np.diag(s)) for s in S]),
        "isotropic": np.stack([t / D * eye for t in trace]),
        "tied": np.broadcast_to(np.einsum("k,kde->de", Nk, S) / N, S.shape),
        "shared_isotropic": np.broadcast_to((Nk * trace).sum() / (N * D) * eye, S.shape),
        "constant": old_covariances,
    }[family]
    return Nk / N, means, cov


def one_em_step(model, X, reg_covar):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # one iteration does not converge
        gmmlib.fit_em(model, X, max_iter=1, tol=0, reg_covar=reg_covar, init=None, progress=False)
    return model.weights.numpy(), model.means.numpy(), model.covariances.numpy()


@pytest.mark.parametrize("D", [1, 2, 3])
def test_one_m_step_matches_the_hand_formulas(family, D):
    X = data(D, seed=D)
    model = start(family, X, seed=D)
    assert model.min_variance == 0.0
    R = responsibilities(model, X)
    assert R.sum(0).min() > 5  # every component's M-step is a real estimate
    want = hand_m_step(family, X, R, model.covariances.numpy())
    got = one_em_step(model, X, reg_covar=0.0)
    for name, a, b in zip(("weights", "means", "covariances"), got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"{family} {name}")


def test_reg_covar_adds_eps_to_every_learned_variance(family):
    eps, D = 0.05, 3
    X = data(D, seed=5)
    model = start(family, X, seed=7)
    old = model.covariances.numpy()
    w, m, cov = hand_m_step(family, X, responsibilities(model, X), old)
    if family != "constant":
        cov = cov + eps * np.eye(D)
    got = one_em_step(model, X, reg_covar=eps)
    np.testing.assert_allclose(got[0], w, rtol=1e-10)
    np.testing.assert_allclose(got[1], m, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[2], cov, rtol=1e-10, atol=1e-12)
    if family == "constant":
        np.testing.assert_array_equal(got[2], old)


def test_small_floor_does_not_change_the_m_step(family):
    """With a floor far below the variances (the model's default 1e-6), the M-step is the bare
    formula: the floor only binds when an estimate falls below it."""
    X = data(2, seed=11)
    model = start(family, X, seed=11)
    if family != "constant":
        model.min_variance = 1e-9
    R = responsibilities(model, X)
    want = hand_m_step(family, X, R, model.covariances.numpy())
    got = one_em_step(model, X, reg_covar=0.0)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("family", list(SKLEARN))
def test_one_m_step_matches_scikit_learn(family):
    X = data(3, seed=3)
    model = start(family, X, seed=3)
    sk = SkGMM(3, covariance_type=SKLEARN[family], max_iter=1, tol=0, reg_covar=0.0,
               weights_init=model.weights.numpy(), means_init=model.means.numpy(),
               precisions_init=model.family.to_sklearn(torch.linalg.inv(model.covariances)).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X)
    w, m, _ = one_em_step(model, X, reg_covar=0.0)
    np.testing.assert_allclose(w, sk.weights_, rtol=1e-10)
    np.testing.assert_allclose(m, sk.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.sklearn_covariances().numpy(), sk.covariances_, rtol=1e-9)


# ------------------------------------------------------------------------------------------------
# FitHistory.seconds_per_step (the chapter's timing table)
# ------------------------------------------------------------------------------------------------
def test_seconds_per_step_excludes_the_first_step_and_the_final_record():
    h = gmmlib.FitHistory(loss=[4.0, 3.0, 2.0, 1.5, 1.4], time=[2.0, 2.5, 3.0, 3.5, 9.0], n_iter=4)
    assert h.seconds_per_step == pytest.approx(0.5)
    assert np.isnan(gmmlib.FitHistory(time=[1.0, 1.0], n_iter=1).seconds_per_step)
    assert np.isnan(gmmlib.FitHistory().seconds_per_step)


@pytest.mark.parametrize("method", ["em", "gd"])
def test_seconds_per_step_of_real_fits(method):
    X = data(2)
    model = gmmlib.GaussianMixture(3, 2, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        h = (gmmlib.fit_em(model, X, max_iter=20, tol=0, generator=0, progress=False)
             if method == "em" else gmmlib.fit_gd(model, X, iterations=20, generator=0,
                                                  progress=False))
    assert h.n_iter == 20
    per = h.seconds_per_step
    assert 0 < per <= h.wall_time / 19 + 1e-12
    assert per == pytest.approx((h.time[19] - h.time[0]) / 19)
