"""fit_em and GaussianMixtureEM: step-for-step parity with scikit-learn's EM, the closed-form
M-step for the families scikit-learn lacks, monotone likelihood, float32 far from the origin,
input checks, n_init, the convergence warning, and the scikit-learn interface."""
import copy
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture as SkGMM

import gmmlib
from conftest import FAMILIES, SKLEARN
from gmmlib import ConvergenceWarning, GaussianMixtureEM, fit_em


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------
# data sets and the shared start
# ------------------------------------------------------------------------------------------------
def blobs(seed=1):
    """Four overlapping 3-D Gaussian clusters of different shapes (2000 points)."""
    return gmmlib.generate_data(2000, 4, 3, 3.0, "full", seed=seed).X.numpy()


def stretched(seed=2):
    """Five elongated, correlated 5-D clusters, far from the origin and unevenly sized."""
    rng = np.random.default_rng(seed)
    sizes = [600, 300, 200, 100, 300]
    parts = []
    for k, n in enumerate(sizes):
        A = rng.normal(size=(5, 5)) * [3.0, 1.0, 0.5, 0.2, 0.1]
        parts.append(rng.normal(size=(n, 5)) @ A + rng.normal(scale=4, size=5) + 50.0)
    return rng.permutation(np.concatenate(parts))


def wide(seed=5):
    """Three correlated 50-D clusters (1500 points): wide enough for the full family's split
    E-step product (``gmmlib.em.SPLIT_FROM``)."""
    rng = np.random.default_rng(seed)
    parts = [rng.normal(size=(500, 50)) @ (np.eye(50) + 0.3 * rng.normal(size=(50, 50)))
             + rng.normal(scale=3, size=50) for _ in range(3)]
    return rng.permutation(np.concatenate(parts))


DATASETS = {"blobs": (blobs, 4), "stretched": (stretched, 5), "wide": (wide, 3)}


def start(X, K, family, seed=3, dtype=torch.float64):
    """A model of ``family`` initialised by gmmlib from k-means++ seeds."""
    model = gmmlib.GaussianMixture(K, X.shape[1], family, dtype=dtype)
    gmmlib.initialize(model, X, "kmeans++", generator=seed)
    return model


def sklearn_from(model, **kwargs):
    """scikit-learn's GaussianMixture started from exactly ``model``'s parameters."""
    fam = model.family.name
    cov = model.sklearn_covariances().numpy()
    precisions = np.linalg.inv(cov) if fam in ("full", "tied") else 1.0 / cov
    return SkGMM(model.n_components, covariance_type=SKLEARN[fam], weights_init=model.weights.numpy(),
                 means_init=model.means.numpy(), precisions_init=precisions, **kwargs)


def run_quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit_em(*args, **kwargs)


# ------------------------------------------------------------------------------------------------
# parity with scikit-learn, iteration by iteration
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data", list(DATASETS))
@pytest.mark.parametrize("family", list(SKLEARN))
def test_every_iteration_matches_sklearn(data, family):
    make, K = DATASETS[data]
    X = make()
    model = start(X, K, family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0 never converges, on either side
        sk = sklearn_from(model, max_iter=20, tol=0.0, reg_covar=1e-6).fit(X)
    history = run_quiet(model, X, init=None, max_iter=20, tol=0.0, reg_covar=1e-6, progress=False)

    ours = -np.asarray(history.loss[:20])  # mean log-likelihood before each M-step
    theirs = np.asarray(sk.lower_bounds_)
    assert history.n_iter == 20 and len(theirs) == 20
    np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=0)
    assert history.lower_bound == pytest.approx(sk.lower_bound_, rel=1e-10)
    assert theirs[-1] - theirs[0] > 1e-3  # a real trajectory, not a flat line
    # the final parameters, and the final likelihood under them
    np.testing.assert_allclose(model.weights.numpy(), sk.weights_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(model.means.numpy(), sk.means_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(model.sklearn_covariances().numpy(), sk.covariances_, rtol=1e-6, atol=1e-9)
    assert history.final_loss == pytest.approx(-sk.score(X), rel=1e-10)


@pytest.mark.parametrize("family", ["full", "tied"])
def test_centred_sums_in_pieces_match_sklearn(monkeypatch, family):
    """A GPU cuts the full family's centred products into pieces of rows (``moments.CUDA_PIECE``);
    here on the CPU in pieces of 256 (1500 rows: five pieces and a ragged 220), taken by full
    (tied sums about the shift here, so none: its pooled centred sums are checked against the
    einsum below): every float64 iteration matches scikit-learn to 1e-8, and a float32 fit
    the float64 fit, in pieces or in one product per component, to float32's rounding."""
    from gmmlib import moments
    pieces = []
    shipped = moments.Moments._add_pieces
    monkeypatch.setattr(moments.Moments, "_add_pieces", lambda self, xt, r, s, m, rows:
                        pieces.append(s) or shipped(self, xt, r, s, m, rows))
    X = wide()
    model = start(X, 3, family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = sklearn_from(model, max_iter=10, tol=0.0, reg_covar=1e-6).fit(X)
    fits = {}
    for piece in (256, 0):
        monkeypatch.setattr(moments, "CPU_PIECE", piece)
        for dtype in (torch.float64, torch.float32):
            m = copy.deepcopy(model).to(dtype)  # Module.to works in place
            h = run_quiet(m, torch.as_tensor(X, dtype=dtype), init=None, max_iter=10, tol=0.0,
                          reg_covar=1e-6, progress=False)
            fits[piece, dtype] = m, h
        if piece:
            assert (5 in pieces) == (family == "full")  # tied sums about the shift: no pieces
    m, h = fits[256, torch.float64]
    np.testing.assert_allclose(-np.asarray(h.loss[:10]), sk.lower_bounds_, rtol=1e-8)
    np.testing.assert_allclose(m.means.numpy(), sk.means_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(m.sklearn_covariances().numpy(), sk.covariances_, rtol=1e-6, atol=1e-9)
    (a, ha), (b, hb) = fits[256, torch.float32], fits[0, torch.float32]
    # each float32 fit within float32's rounding of the float64 one (3e-5 of the loss; before
    # the M-step factorised in float64 both were 0.86 nats off it, and 1e-5 of each other)
    for hh in (ha, hb):
        np.testing.assert_allclose(hh.loss, h.loss, rtol=3e-5)
    torch.testing.assert_close(a.means, b.means, rtol=0, atol=1e-5 * float(b.means.abs().max()))
    cov_a, cov_b = a.sklearn_covariances(), b.sklearn_covariances()
    torch.testing.assert_close(cov_a, cov_b, rtol=0, atol=1e-5 * float(cov_b.abs().max()))


@pytest.mark.parametrize("family", ["shared_isotropic", "constant", "full", "isotropic"])
def test_one_step_is_the_closed_form(family):
    """One EM step against the M-step written out from the model's own responsibilities
    (computed by GaussianMixture.predict_proba, a different code path from fit_em's E-step)."""
    X = torch.as_tensor(blobs(seed=4))
    N, D = X.shape
    model = start(X, 3, family)
    R = model.predict_proba(X)  # (N, K)
    old_cov = model.covariances
    ll0 = float(model.log_prob(X).detach().mean())
    h = run_quiet(model, X, init=None, max_iter=1, reg_covar=1e-6, progress=False)
    assert h.loss[0] == pytest.approx(-ll0, rel=1e-12)

    nk = R.sum(0) + 10 * torch.finfo(X.dtype).eps
    mu = (R.T @ X) / nk[:, None]
    torch.testing.assert_close(model.weights, nk / nk.sum(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model.means, mu, rtol=1e-10, atol=1e-10)
    diff = X[:, None, :] - mu[None]  # (N, K, D)
    if family == "shared_isotropic":
        var = (R[:, :, None] * diff ** 2).sum() / (nk.sum() * D) + 1e-6
        expected = var * torch.eye(D, dtype=X.dtype).expand(3, D, D)
    elif family == "constant":
        expected = old_cov  # the variance is fixed
    elif family == "isotropic":
        var = ((R[:, :, None] * diff ** 2).sum(0) / nk[:, None]).mean(-1) + 1e-6  # (K,)
        expected = var[:, None, None] * torch.eye(D, dtype=X.dtype)
    else:
        expected = torch.einsum("nk,nkd,nke->kde", R, diff, diff) / nk[:, None, None] \
            + 1e-6 * torch.eye(D, dtype=X.dtype)
    torch.testing.assert_close(model.covariances, expected, rtol=1e-9, atol=1e-12)


def test_history_and_the_fitted_model_agree(family):
    X = blobs(seed=5)
    model = start(X, 4, family)
    h = fit_em(model, X, init=None, max_iter=2000, tol=1e-6, progress=False, log_every=3)
    assert h.converged and h.method == "em"
    assert len(h.loss) == h.n_iter + 1 == len(h.time)
    # the last loss is the NLL the fitted model evaluates (its own, independent density code)
    assert h.final_loss == pytest.approx(float(model.nll(X).detach()), rel=1e-12)
    assert h.lower_bound == pytest.approx(-h.loss[h.n_iter - 1], rel=1e-15)
    steps = [s.step for s in h.snapshots]
    assert steps[:-1] == list(range(0, h.n_iter, 3)) and steps[-1] == h.n_iter
    assert h.snapshots[-1].loss == h.final_loss
    np.testing.assert_allclose(h.snapshots[-1].covariances, model.covariances.numpy(), rtol=1e-12)


def test_variance_floor_is_what_log_prob_sees():
    """With min_variance above reg_covar the model's floor binds, and the E-step uses it."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(scale=1e-3, size=(200, 2)), rng.normal(5, 1, size=(200, 2))])
    for family in ["diagonal", "full"]:
        model = gmmlib.GaussianMixture(2, 2, family, min_variance=1e-2, dtype=torch.float64)
        h = fit_em(model, X, generator=0, progress=False)
        assert float(torch.linalg.eigvalsh(model.covariances).min()) >= 1e-2 * (1 - 1e-9) or family == "full"
        assert torch.diagonal(model.scale_tril(), dim1=-2, dim2=-1).min() >= 0.1 * (1 - 1e-12)
        assert h.final_loss == pytest.approx(float(model.nll(X).detach()), rel=1e-12)
        assert np.all(np.diff(h.loss) < 1e-9)


# ------------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(family=st.sampled_from(FAMILIES), K=st.integers(1, 4), D=st.integers(1, 3),
       n_per=st.integers(12, 40), spread=st.floats(0.2, 5.0), seed=st.integers(0, 10_000))
def test_log_likelihood_never_decreases(family, K, D, n_per, spread, seed):
    """EM's guarantee holds for the exact M-step, so reg_covar=0 here (the model's variance floor
    still guards against collapse). A positive reg_covar is a perturbation of the maximiser:
    hypothesis found a 1-D component of variance 2e-6 whose reg_covar=1e-6 cost 8e-7 nats."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread * 3, size=(K, D))
    X = np.concatenate([c + rng.normal(scale=rng.uniform(0.1, 1.0), size=(n_per, D)) for c in centres])
    model = gmmlib.GaussianMixture(K, D, family, dtype=torch.float64)
    try:
        h = run_quiet(model, X, init="random_from_data", generator=seed, max_iter=25, tol=0.0,
                      reg_covar=0.0, progress=False)
    except ValueError as exc:  # without reg_covar a full covariance of < D + 1 points is singular
        assume("positive definite" not in str(exc) and "ill-defined" not in str(exc))
        raise
    loss = np.asarray(h.loss)  # before each M-step, then the fitted model's
    assert np.all(np.isfinite(loss))
    assert np.all(np.diff(loss) <= 1e-9 * (1 + np.abs(loss[:-1]))), np.diff(loss).max()


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_far_from_the_origin(family):
    """1e4 + a spread of 1e-2: E[x²] - E[x]² would lose every digit in float32."""
    rng = np.random.default_rng(0)
    centres = 1e4 + rng.normal(scale=0.1, size=(3, 2))
    X = np.concatenate([c + rng.normal(scale=1e-2, size=(300, 2)) for c in centres])
    kwargs = dict(constant_variance=1e-4) if family == "constant" else {}
    m64 = gmmlib.GaussianMixture(3, 2, family, dtype=torch.float64, min_variance=1e-9, **kwargs)
    gmmlib.initialize(m64, X, "kmeans++", generator=0)
    m32 = gmmlib.GaussianMixture(3, 2, family, dtype=torch.float32, min_variance=1e-9, **kwargs)
    m32.load_state_dict(m64.state_dict())
    h32 = run_quiet(m32, X.astype(np.float32), init=None, max_iter=30, reg_covar=1e-8, progress=False)
    h64 = run_quiet(m64, X, init=None, max_iter=30, reg_covar=1e-8, progress=False)
    assert all(math.isfinite(v) for v in h32.loss)
    var32 = torch.diagonal(m32.covariances, dim1=-2, dim2=-1)
    assert bool((var32 > 0).all()) and bool(torch.isfinite(m32.covariances).all())
    assert bool(torch.isfinite(m32.log_prob(X.astype(np.float32))).all())
    # and close to the float64 fit: variances to a few percent, the NLL to 1e-3
    var64 = torch.diagonal(m64.covariances, dim1=-2, dim2=-1)
    torch.testing.assert_close(var32.double(), var64, rtol=0.05, atol=0)
    assert h32.final_loss == pytest.approx(h64.final_loss, abs=1e-2)


# ------------------------------------------------------------------------------------------------
# n_init, convergence, bad input
# ------------------------------------------------------------------------------------------------
def test_n_init_keeps_the_best_run():
    X = blobs(seed=6)
    runs = []
    g = torch.Generator().manual_seed(11)
    for _ in range(6):
        m = gmmlib.GaussianMixture(6, 3, "full", dtype=torch.float64)
        h = run_quiet(m, X, init="random_from_data", generator=g, max_iter=30, progress=False)
        runs.append((h.lower_bound, m.means))
    assert len({round(lb, 6) for lb, _ in runs}) > 1  # the starts do lead to different optima
    model = gmmlib.GaussianMixture(6, 3, "full", dtype=torch.float64)
    h = run_quiet(model, X, init="random_from_data", generator=torch.Generator().manual_seed(11),
                  n_init=6, max_iter=30, progress=False)
    best = max(range(6), key=lambda i: runs[i][0])
    assert h.lower_bound == runs[best][0]  # that run's own bound, not the last run's
    torch.testing.assert_close(model.means, runs[best][1], rtol=0, atol=0)


def test_warns_when_it_does_not_converge_and_not_otherwise():
    X = blobs()
    model = gmmlib.GaussianMixture(4, 3, dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        h = fit_em(model, X, max_iter=2, tol=1e-12, generator=0, progress=False)
    assert not h.converged and h.n_iter == 2
    assert issubclass(ConvergenceWarning, RuntimeWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = fit_em(model, X, max_iter=500, generator=0, progress=False)
    assert h.converged and h.n_iter < 500


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_iter=-1), "max_iter"), (dict(max_iter=2.5), "max_iter"), (dict(n_init=0), "n_init"),
    (dict(tol=-1e-3), "tol"), (dict(tol=float("nan")), "tol"), (dict(reg_covar=-1.0), "reg_covar"),
    (dict(reg_covar=float("inf")), "reg_covar"), (dict(init="bogus"), "init"),
    (dict(init=None, n_init=3), "n_init"), (dict(log_every=-1), "log_every"),
])
def test_bad_arguments_raise(kwargs, match):
    X = blobs()[:100]
    with pytest.raises(ValueError, match=match):
        fit_em(gmmlib.GaussianMixture(3, 3), X, progress=False, **kwargs)


def test_bad_data_raise():
    model = gmmlib.GaussianMixture(3, 2)
    with pytest.raises(ValueError, match="2-D"):
        fit_em(model, np.zeros(10), progress=False)
    with pytest.raises(ValueError, match="features"):
        fit_em(model, np.zeros((10, 3)), progress=False)
    X = np.random.default_rng(0).normal(size=(10, 2))
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_em(model, X, progress=False)
    with pytest.raises(ValueError, match="at least 3"):
        fit_em(model, np.ones((2, 2)), progress=False)
    with pytest.raises(ValueError, match="GaussianMixture"):
        fit_em("not a model", X, progress=False)


def test_singular_covariance_is_caught_with_a_remedy():
    points = np.random.default_rng(0).normal(scale=5, size=(3, 2))
    X = np.repeat(points, 10, axis=0)  # 3 distinct points: each component collapses onto one
    model = gmmlib.GaussianMixture.from_parameters(np.ones(3) / 3, points, np.stack([np.eye(2)] * 3))
    with pytest.raises(ValueError, match="increase reg_covar"):
        run_quiet(model, X, init=None, reg_covar=0.0, progress=False)
    # the default reg_covar keeps the same fit finite
    h = run_quiet(model, X, init=None, progress=False)
    assert math.isfinite(h.final_loss)


# ------------------------------------------------------------------------------------------------
# the scikit-learn interface
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(SKLEARN))
def test_estimator_matches_sklearn(family):
    X = stretched(seed=7)
    model = start(X, 5, family)
    sk = sklearn_from(model, max_iter=200, tol=1e-6).fit(X)
    ours = GaussianMixtureEM(5, covariance_type=SKLEARN[family], weights_init=model.weights.numpy(),
                             means_init=model.means.numpy(), precisions_init=sk.precisions_init,
                             max_iter=200, tol=1e-6).fit(X)
    assert ours.n_iter_ == sk.n_iter_ and ours.converged_ == sk.converged_
    assert ours.lower_bound_ == pytest.approx(sk.lower_bound_, rel=1e-9)
    np.testing.assert_allclose(ours.lower_bounds_, sk.lower_bounds_, rtol=1e-8)
    for name in ["weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"]:
        a, b = getattr(ours, name), getattr(sk, name)
        assert isinstance(a, np.ndarray) and a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(ours.score_samples(X), sk.score_samples(X), rtol=1e-9)
    assert ours.score(X) == pytest.approx(sk.score(X), rel=1e-10)
    assert ours.score(X) < 0 or ours.score(X) == sk.score(X)  # mean log-likelihood, sklearn's sign
    assert ours.bic(X) == pytest.approx(sk.bic(X), rel=1e-10)
    assert ours.aic(X) == pytest.approx(sk.aic(X), rel=1e-10)
    np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), atol=1e-8)
    np.testing.assert_array_equal(ours.predict(X), sk.predict(X))
    assert isinstance(ours.model_, gmmlib.GaussianMixture)


def test_estimator_protocol():
    X = blobs(seed=8)
    est = GaussianMixtureEM(4, covariance_type="diag", random_state=0, n_init=2)
    labels = est.fit_predict(X)
    np.testing.assert_array_equal(labels, est.fit(X).predict(X))
    again = clone(est).fit(X)  # scikit-learn's clone: get_params / set_params
    np.testing.assert_array_equal(again.means_, est.means_)  # same random_state, same fit
    assert est.get_params()["n_init"] == 2 and est.set_params(n_init=3).n_init == 3
    assert "covariance_type='diag'" in repr(est)
    P = est.predict_proba(X[:50])
    assert P.shape == (50, 4) and np.allclose(P.sum(1), 1)
    Xs, ys = est.sample(300)
    assert Xs.shape == (300, 3) and ys.shape == (300,) and np.all(np.diff(ys) >= 0)
    np.testing.assert_array_equal(est.sample(300)[0], Xs)  # an int random_state repeats draws
    assert est.score(X) == pytest.approx(float(est.model_.log_prob(X).detach().mean()), rel=1e-12)
    assert est.covariances_.shape == (4, 3) and est.precisions_cholesky_.shape == (4, 3)
    with pytest.raises(NotFittedError, match="not fitted"):
        GaussianMixtureEM(2).predict(X)
    with pytest.raises(ValueError, match="init_params"):
        GaussianMixtureEM(2, init_params="best").fit(X)
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(bogus=1)
    with pytest.raises(ValueError, match="features"):
        est.predict(X[:, :2])


def test_max_iter_zero_only_initialises_like_sklearn():
    """scikit-learn's way to get the initial parameters: max_iter=0 runs no iteration, warns
    nothing, reports lower_bound_ = -inf and keeps the initialisation (here the *_init given).
    (scikit-learn itself fails at max_iter=0 with precisions_init, so it gets only the means.)"""
    X = blobs(seed=13)
    model = start(X, 4, "full")
    precisions = np.linalg.inv(model.covariances.numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither side may warn
        sk = SkGMM(4, means_init=model.means.numpy(), max_iter=0, random_state=0).fit(X)
        ours = GaussianMixtureEM(4, weights_init=model.weights.numpy(), means_init=model.means.numpy(),
                                 precisions_init=precisions, max_iter=0).fit(X)
        h = fit_em(start(X, 4, "full"), X, init=None, max_iter=0, progress=False)
    assert ours.n_iter_ == sk.n_iter_ == 0 and not ours.converged_ and not sk.converged_
    assert ours.lower_bound_ == sk.lower_bound_ == -np.inf and ours.lower_bounds_ == sk.lower_bounds_ == []
    np.testing.assert_allclose(ours.means_, model.means.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.weights_, model.weights.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.precisions_, precisions, rtol=1e-9)
    assert h.n_iter == 0 and len(h.loss) == 1
    assert h.final_loss == pytest.approx(float(model.nll(X).detach()), rel=1e-12)


@pytest.mark.filterwarnings("ignore::gmmlib.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("family", ["full", "diagonal"])
def test_warm_start_continues_like_sklearn(family):
    """Three fits of 4 iterations with warm_start retrace one fit of 12, iteration for
    iteration, and scikit-learn's warm start does the same from the same start."""
    X = stretched(seed=11)
    model = start(X, 5, family)
    sk = sklearn_from(model, max_iter=4, tol=0.0, warm_start=True)
    ours = GaussianMixtureEM(5, covariance_type=SKLEARN[family], weights_init=model.weights.numpy(),
                             means_init=model.means.numpy(), precisions_init=sk.precisions_init,
                             max_iter=4, tol=0.0, warm_start=True)
    bounds, sk_bounds = [], []
    for _ in range(3):
        bounds += ours.fit(X).lower_bounds_
        sk_bounds += sk.fit(X).lower_bounds_
        assert ours.n_iter_ == sk.n_iter_ == 4 and not ours.converged_
    one = GaussianMixtureEM(**{**ours.get_params(), "warm_start": False, "max_iter": 12}).fit(X)
    np.testing.assert_allclose(bounds, one.lower_bounds_, rtol=1e-12)
    np.testing.assert_allclose(one.means_, ours.means_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bounds, sk_bounds, rtol=1e-8)
    np.testing.assert_allclose(ours.covariances_, sk.covariances_, rtol=1e-6, atol=1e-9)


def test_warm_start_after_convergence_and_on_changed_settings():
    X = blobs(seed=12)
    est = GaussianMixtureEM(4, random_state=0, warm_start=True, tol=1e-4, max_iter=500).fit(X)
    first = est.n_iter_
    sk = SkGMM(4, random_state=0, warm_start=True, tol=1e-4, max_iter=500, weights_init=est.weights_,
               means_init=est.means_, precisions_init=est.precisions_).fit(X)
    assert est.converged_ and first > 1
    # refitting a converged model: the first gain is measured from lower_bound_, so one iteration
    assert est.fit(X).n_iter_ == 1 and est.converged_
    assert sk.fit(X).n_iter_ == 1  # scikit-learn's behaviour, the same
    with pytest.raises(ValueError, match="n_components was 4 and is now 3.*warm_start=False"):
        est.set_params(n_components=3).fit(X)
    with pytest.raises(ValueError, match="n_features was 3 and is now 2"):
        est.set_params(n_components=4).fit(X[:, :2])
    assert est.set_params(warm_start=False, n_components=3).fit(X).means_.shape == (3, 3)


@pytest.mark.filterwarnings("ignore::gmmlib.exceptions.ConvergenceWarning")
def test_estimator_float32_follows_input():
    X = blobs(seed=9).astype(np.float32)
    est = GaussianMixtureEM(4, random_state=0).fit(X)
    assert est.model_.loc.dtype == torch.float32 and est.means_.dtype == np.float32
    for dtype in ["float64", np.float64, torch.float64]:
        assert GaussianMixtureEM(2, dtype=dtype, max_iter=2).fit(X).means_.dtype == np.float64
    with pytest.raises(ValueError, match="dtype"):
        GaussianMixtureEM(2, dtype="int64").fit(X)
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64"):
        GaussianMixtureEM(2, dtype="float16").fit(X)


# ------------------------------------------------------------------------------------------------
# CUDA
# ------------------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_matches_cpu(family):
    X = blobs(seed=10)
    cpu = start(X, 4, family)
    gpu = start(X, 4, family).to("cuda")
    gpu.load_state_dict(cpu.state_dict())
    h_cpu = run_quiet(cpu, X, init=None, max_iter=30, tol=0.0, progress=False)
    h_gpu = run_quiet(gpu, torch.as_tensor(X, device="cuda"), init=None, max_iter=30, tol=0.0,
                      progress=False)
    assert gpu.loc.device.type == "cuda"
    np.testing.assert_allclose(h_gpu.loss, h_cpu.loss, rtol=1e-10)
    torch.testing.assert_close(gpu.covariances.cpu(), cpu.covariances, rtol=1e-8, atol=1e-10)
    est = GaussianMixtureEM(4, covariance_type=SKLEARN.get(family, family), device="cuda",
                            random_state=0).fit(X)
    assert est.model_.loc.device.type == "cuda" and isinstance(est.means_, np.ndarray)


# ------------------------------------------------------------------------------------------------
# the diagonal scatter: fast uncentred moments in float64, centred where they would cancel
# ------------------------------------------------------------------------------------------------
def _diagonal_case(X: torch.Tensor, R: torch.Tensor, pooled=False):
    """EM's workspace for data ``X`` (N, D) with responsibilities ``R`` (N, K), the M-step's
    means (shifted coordinates, float64) and the float64 centred scatter
    sum_n r_nk (x_nd - mu_kd)² (with ``pooled``, the isotropic families', its mean over d)."""
    from gmmlib.moments import Moments, Workspace
    K = R.shape[1]
    family = gmmlib.GaussianMixture(K, X.shape[1], "isotropic" if pooled else "diagonal").family
    ws = Workspace(X, K, X.mean(0), family)  # the family decides the workspace's columns
    m = Moments(ws, "std", pooled=pooled)
    for block in ws.blocks():
        m.add(block, R[block.a:block.b].T)
    _, means = m.means(torch.finfo(X.dtype).eps)
    Z = ws.XT.double().T[:, None, :] - means[None]  # (N, K, D)
    reference = torch.einsum("nk,nkd->kd", R.double(), Z ** 2)
    return (ws, m, R), means, reference.mean(-1, keepdim=True) if pooled else reference


def _scatter_diag(case, means, seen=None):
    """The M-step's scatter from the case's sums, repassing (centred) what cancelled."""
    from gmmlib.moments import Moments, scatter
    ws, m, R = case

    def repass(components, centres):
        if seen is not None:
            seen.append(components.tolist())
        again = Moments(ws, "std", centres, components=components, pooled=m.pooled)
        for block in ws.blocks():
            again.add(block, R[block.a:block.b].T)
        return again
    return scatter(m, means, repass)


def _scatter_case(dtype, far, spread, pooled=False):
    """Two unit clusters near the origin and a third, narrow one (``spread``) at ``far``, with
    hard responsibilities; returns the workspace, the means and the float64 centred reference."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0.0, 1.0, (1000, 3)), rng.normal(3.0, 1.0, (1000, 3)),
                        rng.normal(far, spread, (20, 3))])
    labels = np.repeat([0, 1, 2], [1000, 1000, 20])
    R = torch.nn.functional.one_hot(torch.as_tensor(labels), 3).to(dtype)  # (N, K)
    return _diagonal_case(torch.as_tensor(X, dtype=dtype), R, pooled)


@pytest.mark.parametrize("pooled", [False, True], ids=["per-feature", "pooled"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_diagonal_scatter_fast_path_is_accurate(dtype, pooled):
    """On ordinary data every component takes the two-product path, and it is as accurate as
    the centred sum (float32 in: float64 accumulation, so only the output rounding remains);
    so does the isotropic families' pooled sum, from the rows' squared norms."""
    case, means, reference = _scatter_case(dtype, far=6.0, spread=0.5, pooled=pooled)
    seen = []
    S = _scatter_diag(case, means, seen)
    assert not seen
    rtol = 1e-12 if dtype == torch.float64 else 2e-7
    torch.testing.assert_close(S.to(dtype).double(), reference, rtol=rtol, atol=0)


@pytest.mark.parametrize("pooled", [False, True], ids=["per-feature", "pooled"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_diagonal_scatter_recentres_a_narrow_far_component(dtype, pooled, monkeypatch):
    """A component of spread 1e-4 at 1e3 from the data's mean: its uncentred moments cancel in
    ~14 of float64's 16 digits. The guard sends exactly that component to the centred sum."""
    from gmmlib import moments
    case, means, reference = _scatter_case(dtype, far=1e3, spread=1e-4, pooled=pooled)
    seen = []
    S = _scatter_diag(case, means, seen)
    assert seen == [[2]]
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(S.to(dtype).double(), reference, rtol=rtol, atol=0)
    # without the guard the same data lose the narrow component's scatter
    monkeypatch.setattr(moments, "_MAX_CANCELLATION", math.inf)
    bad = _scatter_diag(case, means)
    assert float((bad[2] / reference[2] - 1).abs().max()) > 1e-3  # against 1e-6 with it


@settings(max_examples=60, deadline=None)
@given(K=st.integers(1, 5), D=st.integers(1, 4), offset=st.sampled_from([0.0, 1e2, 1e4, 1e6]),
       log_spread=st.floats(-6, 1), hardness=st.floats(0, 60), seed=st.integers(0, 10_000))
def test_diagonal_scatter_matches_the_centred_sum(K, D, offset, log_spread, hardness, seed):
    """Whatever the clusters' spreads and distances, and however hard the responsibilities
    (hard ones make narrow components, whose moments cancel), the fast scatter with its guard
    equals the float64 centred sum to 1e-9 relative."""
    rng = np.random.default_rng(seed)
    centres = offset + rng.normal(scale=10.0, size=(K, D))
    spreads = 10.0 ** (log_spread + rng.uniform(-1, 1, size=K))
    X = np.concatenate([c + s * rng.normal(size=(30, D)) for c, s in zip(centres, spreads)])
    X = torch.as_tensor(X)
    own = np.repeat(np.eye(K), 30, axis=0)  # (N, K): each point's own cluster
    R = torch.softmax(torch.as_tensor(hardness * own + rng.normal(size=(len(X), K))), -1)
    case, means, reference = _diagonal_case(X, R)
    torch.testing.assert_close(_scatter_diag(case, means), reference, rtol=1e-9, atol=0)


def _pass(ws, family, R: torch.Tensor, centres=None, components=None):
    """One pass of ``family``'s M-step sums over the workspace's blocks, under the
    responsibilities ``R`` (N, K): as EM adds them, about ``centres`` (None: the shift), for
    ``components`` (None: all)."""
    from gmmlib.moments import Moments
    m = Moments.of(ws, family, centres, components=components)
    for block in ws.blocks():
        m.add(block, R[block.a:block.b].T)
    return m


def _covariance_scale(S: torch.Tensor) -> torch.Tensor:
    """sqrt(S_ii S_jj) for (.., D, D) scatters: an entry's error is measured against it (a tiny
    off-diagonal is not accurate to its own size in any form). Floored at 1e-12 of the largest
    variance, for a coordinate whose rows are all equal (float32 data 1e6 out of spread 1e-3)."""
    d = S.diagonal(dim1=-2, dim2=-1)  # (.., D)
    floor = max(1e-12 * float(d.max()), 1e-300)
    return (d.unsqueeze(-1) * d.unsqueeze(-2)).sqrt().clamp_min(floor)


@settings(max_examples=40, deadline=None)
@given(K=st.integers(1, 4), D=st.integers(1, 4), jump=st.sampled_from([0.0, 1.0, 1e3, 1e6]),
       log_spread=st.floats(-6, 1), seed=st.integers(0, 10_000))
def test_full_scatter_about_moved_means_matches_the_centred_sum(K, D, jump, log_spread, seed):
    """The full family's sums are centred on the previous means; when a mean jumps by many of
    its own standard deviations in one step (``jump``), the scatter about the new mean cancels
    and the guard recomputes it centred: always the float64 centred sum to 1e-9 of
    ``sqrt(S_ii S_jj)``. (Not of ``S_ij`` itself: an off-diagonal of a nearly uncorrelated pair
    is tiny, and even the centred sum has no small relative error there. CI once drew a
    correlation of 0.01 whose entry was off by 2.7e-9 of itself, 2.9e-11 of the scale.)"""
    from gmmlib.moments import Workspace, scatter
    rng = np.random.default_rng(seed)
    spreads = 10.0 ** (log_spread + rng.uniform(-1, 1, size=K))
    X = torch.as_tensor(np.concatenate([rng.normal(scale=10.0, size=D) + s * rng.normal(size=(30, D))
                                        for s in spreads]))
    R = torch.as_tensor(np.repeat(np.eye(K), 30, axis=0))  # (N, K) hard
    ws_family = gmmlib.GaussianMixture(K, D, "full").family
    ws = Workspace(X, K, X.mean(0), ws_family)
    old = torch.as_tensor(rng.normal(size=(K, D))) * jump + (R.T @ ws.XT.T) / 30

    def sums(components=None, centres=old):
        return _pass(ws, ws_family, R, centres, components)
    m = sums()
    _, means = m.means(torch.finfo(X.dtype).eps)
    Z = ws.XT.T[:, None, :] - means[None]  # (N, K, D)
    reference = torch.einsum("nk,nkd,nke->kde", R, Z, Z)
    scale = _covariance_scale(reference)
    torch.testing.assert_close(scatter(m, means, sums) / scale, reference / scale,
                               rtol=0, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(K=st.integers(1, 4), D=st.integers(1, 4), offset=st.sampled_from([0.0, 1e2, 1e4, 1e6]),
       log_spread=st.floats(-6, 1), correlation=st.sampled_from([0.0, 0.9, 0.999999]),
       hardness=st.floats(0, 60), seed=st.integers(0, 10_000))
def test_full_scatter_about_the_shift_matches_the_centred_sum(K, D, offset, log_spread,
                                                              correlation, hardness, seed):
    """float64 full sums about the shift (``Workspace.triangle``: one product with the rows'
    x_i x_j, i <= j), whatever the clusters' offsets, spreads and correlations: the guard sends
    what cancelled to the centred sum, so the scatter is the float64 centred sum to 1e-9 of
    sqrt(S_ii S_jj), and its smallest eigenvalue to 1e-6 of itself (of those the centred
    sum itself holds to better than 1e-8)."""
    from gmmlib.moments import Workspace, scatter
    rng = np.random.default_rng(seed)
    spreads = 10.0 ** (log_spread + rng.uniform(-1, 1, size=K))
    mix = (1 - correlation) * np.eye(D) + correlation  # equicorrelated features
    L = np.linalg.cholesky(mix)
    centres = offset + rng.normal(scale=10.0, size=(K, D))
    X = torch.as_tensor(np.concatenate([c + s * rng.normal(size=(30, D)) @ L.T
                                        for c, s in zip(centres, spreads)]))
    own = np.repeat(np.eye(K), 30, axis=0)  # (N, K)
    R = torch.softmax(torch.as_tensor(hardness * own + rng.normal(size=(len(X), K))), -1)
    family = gmmlib.GaussianMixture(K, D, "full").family
    ws = Workspace(X, K, X.mean(0), family, chunk=41)  # ragged blocks

    def sums(components=None, centres=None):
        return _pass(ws, family, R, centres, components)
    m = sums()
    _, means = m.means(torch.finfo(X.dtype).eps)
    Z = ws.XT.T[:, None, :] - means[None]  # (N, K, D)
    reference = torch.einsum("nk,nkd,nke->kde", R, Z, Z)
    S = scatter(m, means, sums)
    scale = _covariance_scale(reference)
    torch.testing.assert_close(S / scale, reference / scale, rtol=0, atol=1e-9)
    ours, exact = torch.linalg.eigvalsh(S)[:, 0], torch.linalg.eigvalsh(reference)[:, 0]
    well_held = exact > 1e-8 * reference.diagonal(dim1=-2, dim2=-1).amax(-1)
    torch.testing.assert_close(ours[well_held], exact[well_held], rtol=1e-6, atol=0)


def test_full_sums_about_the_shift_recentre_an_ill_conditioned_far_component():
    """A component 3e4 from the data's mean, of covariance eigenvalues 1e6, 1e6, 1e-2 (not
    along the axes): about the shift its difference loses ~1e-5 of the smallest eigenvalue
    though no diagonal cancels past the 5-digit guard; the eigenvalue check sends that
    component, and only it, to the centred sum. EM's float64 full fits take this path when
    D < 2K (``Workspace.triangle``)."""
    from gmmlib.moments import Workspace, scatter
    rng = np.random.default_rng(0)
    D, K = 3, 3
    q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    L = np.linalg.cholesky(q @ np.diag([1e6, 1e6, 1e-2]) @ q.T)
    centres = [np.zeros(D), np.full(D, 5e3), 3e4 * rng.normal(size=D)]
    X = torch.as_tensor(np.concatenate([c + rng.normal(size=(500, D)) @ (L.T if k == 2 else 1e3 * np.eye(D))
                                        for k, c in enumerate(centres)]))
    R = torch.as_tensor(np.repeat(np.eye(K), 500, axis=0))  # (N, K) hard
    family = gmmlib.GaussianMixture(K, D, "full").family
    ws = Workspace(X, K, X.mean(0), family)
    assert ws.triangle
    passes = []

    def sums(components=None, centres=None):
        passes.append(None if components is None else components.tolist())
        return _pass(ws, family, R, centres, components)
    m = sums()
    _, means = m.means(torch.finfo(X.dtype).eps)
    S = scatter(m, means, sums)
    assert passes == [None, [2]]  # the fast sums, then the far component centred
    Z = ws.XT.T[:, None, :] - means[None]  # (N, K, D)
    reference = torch.einsum("nk,nkd,nke->kde", R, Z, Z)
    smallest = torch.linalg.eigvalsh(S)[:, 0] / torch.linalg.eigvalsh(reference)[:, 0]
    assert float((smallest - 1).abs().max()) < 1e-7
    unguarded = m.scatter_about(means)[2]  # what the sums about the shift alone give
    assert abs(float(torch.linalg.eigvalsh(unguarded)[0] / torch.linalg.eigvalsh(reference[2])[0]) - 1) > 1e-7


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_full_em_on_an_ill_conditioned_mixture_keeps_scikit_learns_trajectory():
    """Two clusters of covariance eigenvalues 1e4 and 1e-4 (condition 1e8, at 45 degrees), their
    means about 3 of their long deviations from the data's mean: the sums about the shift lost
    27x more of the thin direction than the centred ones, yet the eigenvalue check was gated at
    10x in the diagonals (9.8 here) and never ran; EM drifted 1.2e-8 from scikit-learn's lower
    bounds. With the gate at 2x it recentres them: the centred path's 4.5e-10."""
    from sklearn.mixture import GaussianMixture as SkGMM
    from gmmlib import GaussianMixtureEM
    rng = np.random.default_rng(3)
    q = np.array([[1.0, 1.0], [1.0, -1.0]]) / np.sqrt(2)
    C = 1e4 * (q @ np.diag([1.0, 1e-8]) @ q.T)
    L, m = np.linalg.cholesky(C), np.array([210.0, 210.0])
    X = np.concatenate([m + rng.normal(size=(50_000, 2)) @ L.T, -m + rng.normal(size=(50_000, 2)) @ L.T])
    start = {"weights_init": [0.5, 0.5], "means_init": np.array([m, -m]) + 1.0,
             "precisions_init": np.stack([np.linalg.inv(1.01 * C)] * 2)}
    kw = {"covariance_type": "full", "tol": 0, "max_iter": 8, "reg_covar": 1e-6, **start}
    ours, theirs = GaussianMixtureEM(2, **kw).fit(X), SkGMM(2, **kw).fit(X)
    assert np.abs(np.subtract(ours.lower_bounds_, theirs.lower_bounds_)).max() < 2e-9
    thin = np.linalg.eigvalsh(ours.covariances_)[:, 0] / np.linalg.eigvalsh(theirs.covariances_)[:, 0]
    # 2.8e-6 (one machine) and 3.1e-6 (an AMD EPYC) with the 10x gate, 2.2e-7 with 2x; the
    # other component's 1.2e-6 on the EPYC is the same under either gate
    assert np.abs(thin - 1).max() < 2e-6


def test_centred_sums_over_a_ragged_last_block_keep_their_buffers_and_values():
    """The centred sums' (K, D, rows) temporaries live in the workspace and serve every block
    of every pass: a ragged last block (1000 = 3 x 300 + 100 rows) used to resize them, so each
    pass allocated them twice more. Same buffers after two passes, and the sums equal the
    centred einsum to float64 rounding."""
    from gmmlib.moments import Moments, Workspace
    rng = np.random.default_rng(0)
    K, D = 3, 4
    X = torch.as_tensor(rng.normal(size=(1000, D)))
    R = torch.softmax(torch.as_tensor(rng.normal(size=(1000, K))), 1)
    centres = torch.as_tensor(rng.normal(size=(K, D)))
    ws = Workspace(X, K, X.mean(0), gmmlib.GaussianMixture(K, D, "full").family, chunk=300)
    seen = []
    for _ in range(2):
        m = Moments(ws, "tril", centres)
        for block in ws.blocks():
            m.add(block, R[block.a:block.b].T)
        seen.append({name: ws._buffers[name] for name in ("z", "w")})
    assert all(seen[0][name] is seen[1][name] for name in ("z", "w"))
    Z = ws.XT.T[:, None, :] - centres[None]  # (N, K, D)
    torch.testing.assert_close(m.second, torch.einsum("nk,nkd,nke->kde", R, Z, Z),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.first, torch.einsum("nk,nkd->kd", R, Z), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind,pooled,family", [("tril", False, "full"), ("tril", True, "tied"),
                                                ("std", False, "diagonal"), ("std", True, "isotropic")])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_centred_sums_in_pieces_equal_the_centred_einsum(kind, pooled, family, dtype):
    """Every centred sum (full's, tied's pooled one, the axis-aligned families' recomputation)
    with the rows cut into pieces, as a GPU cuts full's (``Workspace.piece``): pieces of 7
    rows in blocks of 300 (1000 rows: ragged pieces and a ragged block), a subset of the
    components where the sums allow one, against the float64 einsum of the same rows."""
    from gmmlib.moments import Moments, Workspace
    rng = np.random.default_rng(1)
    K, D = 3, 4
    X = torch.as_tensor(rng.normal(size=(1000, D)), dtype=dtype)
    R = torch.softmax(torch.as_tensor(rng.normal(size=(1000, K))), 1).to(dtype)
    centres = torch.as_tensor(rng.normal(size=(K, D)), dtype=dtype)
    ws = Workspace(X, K, X.mean(0), gmmlib.GaussianMixture(K, D, family).family, chunk=300)
    ws.piece = 7
    subset = None if pooled and kind == "tril" else torch.tensor([0, 2])
    k = slice(None) if subset is None else subset
    m = Moments(ws, kind, centres[k], components=subset, pooled=pooled)
    for block in ws.blocks():
        m.add(block, R[block.a:block.b].T)
    Z = (ws.XT.T.double()[:, None, :] - centres.double()[None])[:, k]  # (N, K', D), shifted rows
    R64 = R.double()[:, k]
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(m.first, torch.einsum("nk,nkd->kd", R64, Z), **tol)
    if kind == "tril":
        second = torch.einsum("nk,nkd,nke->kde", R64, Z, Z)
        second = second.sum(0, keepdim=True) if pooled else second
    else:
        second = torch.einsum("nk,nkd->kd", R64, Z * Z)
        second = second.mean(-1, keepdim=True) if pooled else second
    torch.testing.assert_close(m.second, second, **tol)


@settings(max_examples=40, deadline=None)
@given(K=st.integers(1, 4), D=st.integers(1, 4), separation=st.sampled_from([0.0, 3.0, 1e3, 1e6]),
       log_spread=st.floats(-6, 1), hardness=st.floats(0, 30), seed=st.integers(0, 10_000),
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_tied_scatter_about_the_shift_matches_the_centred_sum(K, D, separation, log_spread,
                                                              hardness, seed, dtype):
    """The tied family's sums are taken about the data's mean, where the second moment is
    sum_n x xᵀ whatever the responsibilities; the scatter about the new means subtracts the
    between-cluster part, which cancels for far-apart clusters, and the guard then sums every
    component again centred: always the float64 centred sum, summed over the components, to
    1e-9 of sqrt(S_ii S_jj) in float64. In float32 to 1e-6: the fast sums renormalise the
    float32 responsibilities (rows summing to 1 within ~1e-7) and the centred ones take them as
    they are; a float32 covariance rounds that away (unguarded, the error reaches 1e-4)."""
    from gmmlib.moments import Workspace, scatter
    rng = np.random.default_rng(seed)
    spreads = 10.0 ** (log_spread + rng.uniform(-1, 1, size=K))
    centres = separation * rng.normal(size=(K, D))
    X = torch.as_tensor(np.concatenate([c + s * rng.normal(size=(30, D))
                                        for c, s in zip(centres, spreads)]), dtype=dtype)
    own = np.repeat(np.eye(K), 30, axis=0)  # (N, K)
    R = torch.softmax(torch.as_tensor(hardness * own + rng.normal(size=(len(X), K))), -1)
    R = R.to(dtype)
    family = gmmlib.GaussianMixture(K, D, "tied").family
    ws = Workspace(X, K, X.mean(0), family)

    def sums(components=None, centres=None):
        return _pass(ws, family, R, centres, components)
    m = sums()
    assert m.second.shape == (1, D, D)
    _, means = m.means(torch.finfo(dtype).eps)
    R64 = R.double() / R.double().sum(1, keepdim=True)  # as the sums renormalise them
    Z = ws.XT.double().T[:, None, :] - means[None]  # (N, K, D)
    reference = torch.einsum("nk,nkd,nke->de", R64, Z, Z).unsqueeze(0)  # (1, D, D)
    scale = _covariance_scale(reference)
    torch.testing.assert_close(scatter(m, means, sums) / scale, reference / scale,
                               rtol=0, atol=1e-9 if dtype == torch.float64 else 1e-6)


def test_tied_scatter_keeps_the_smallest_eigenvalue_of_an_ill_conditioned_covariance():
    """Clusters 3e4 apart with a within-cluster covariance of eigenvalues 1e6, 1e6, 1e-2 (not
    along the axes): about the data's mean the difference loses ~1e-5 of the smallest
    eigenvalue although no diagonal cancels past the 5-digit guard; the eigenvalue check sends
    it to the centred sum, whose own rounding (u cond ~ 1e-8) is all that is left."""
    from gmmlib.moments import Workspace, scatter
    rng = np.random.default_rng(0)
    D, K = 3, 3
    q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    L = np.linalg.cholesky(q @ np.diag([1e6, 1e6, 1e-2]) @ q.T)
    centres = 3e4 * rng.normal(size=(K, D))
    X = torch.as_tensor(np.concatenate([c + rng.normal(size=(500, D)) @ L.T for c in centres]))
    R = torch.as_tensor(np.repeat(np.eye(K), 500, axis=0))  # (N, K) hard
    family = gmmlib.GaussianMixture(K, D, "tied").family
    ws = Workspace(X, K, X.mean(0), family)
    passes = []

    def sums(components=None, centres=None):
        passes.append(centres is None)
        return _pass(ws, family, R, centres, components)
    m = sums()
    _, means = m.means(torch.finfo(X.dtype).eps)
    S = scatter(m, means, sums)
    assert passes == [True, False]  # the fast sums, then the centred ones
    Z = ws.XT.T[:, None, :] - means[None]  # (N, K, D)
    reference = torch.einsum("nk,nkd,nke->de", R, Z, Z)
    smallest = torch.linalg.eigvalsh(S[0])[0] / torch.linalg.eigvalsh(reference)[0]
    assert abs(float(smallest) - 1) < 1e-7  # about the shift alone: 1e-5


# ------------------------------------------------------------------------------------------------
# the update of a component with no responsibility, and translation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["full", "tied", "diagonal", "isotropic"])
def test_an_empty_component_gets_the_documented_update(family):
    """A component no point is responsible for (responsibilities exactly 0) moves to the data's
    mean, with covariance reg_covar I and weight 10 eps / N (em.py's docstring), whatever the
    coordinates: translating the data translates that mean and changes nothing else."""
    X = blobs(seed=20)[:400]
    outcomes = []
    for offset in (0.0, 1e4):
        Y = X + offset
        means = np.concatenate([Y[:3], Y.mean(0, keepdims=True) + 1e6])  # the last: far from all
        model = gmmlib.GaussianMixture.from_parameters(
            [0.3, 0.3, 0.3, 0.1], means, np.ones(4) if family == "isotropic" else
            {"full": np.stack([np.eye(3)] * 4), "tied": np.eye(3), "diagonal": np.ones((4, 3))}[family],
            family)
        run_quiet(model, Y, max_iter=1, tol=0, init=None, reg_covar=1e-3, progress=False)
        eps = torch.finfo(torch.float64).eps
        assert float(model.weights[3]) == pytest.approx(10 * eps / len(Y), rel=1e-6)
        np.testing.assert_allclose(model.means[3].numpy(), Y.mean(0), rtol=1e-12)
        if family in ("full", "diagonal", "isotropic"):
            np.testing.assert_allclose(model.covariances[3].numpy(), 1e-3 * np.eye(3), rtol=1e-9)
        outcomes.append((model.means.numpy() - offset, model.covariances.numpy(), model.weights.numpy()))
    for a, b in zip(*outcomes):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("family", ["full", "tied", "diagonal", "isotropic"])
def test_responsibilities_are_softmax_without_subnormals(family, dtype):
    """The E-step's responsibilities (the estimator's predict_proba) and log-densities
    (score_samples) equal softmax and logsumexp of torch.distributions' weighted log-densities
    under the fitted parameters, in float64; a term below the smallest normal number next to
    its row's largest gives a responsibility of exactly 0, never a subnormal one. The clusters
    sit a few standard deviations apart (overlap) to hundreds (most terms underflow)."""
    X = gmmlib.generate_data(3000, 6, 3, 300.0, "full", seed=22).X.numpy()
    X = X.astype(np.float32 if dtype == torch.float32 else np.float64)
    est = GaussianMixtureEM(6, covariance_type=SKLEARN.get(family, family), random_state=0)
    est.fit(X)
    model = est.model_.double()
    mvn = torch.distributions.MultivariateNormal(model.means, model.covariances)
    X64 = torch.as_tensor(X, dtype=torch.float64)
    wlp = mvn.log_prob(X64.unsqueeze(1)) + model.log_weights  # (N, K)
    R = torch.as_tensor(est.predict_proba(X), dtype=torch.float64)
    tiny = torch.finfo(dtype).tiny
    assert ((R == 0) | (R >= tiny)).all()
    assert (R == 0).float().mean() > 0.3  # the case in question does arise
    atol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(R, torch.softmax(wlp, -1), rtol=0, atol=atol)
    lse = torch.as_tensor(est.score_samples(X), dtype=torch.float64)
    torch.testing.assert_close(lse, torch.logsumexp(wlp, -1), rtol=10 * atol, atol=atol)


def test_evaluate_of_no_rows_is_empty_not_an_error_about_none():
    """gmmlib.em.evaluate (the estimator's scorer) on a tensor of 0 rows said "None is empty"
    (a tensor's .name); no rows now score as no rows."""
    from gmmlib.em import evaluate
    model = gmmlib.GaussianMixture(3, 2, dtype=torch.float64)
    log_p, resp = evaluate(model, torch.zeros(0, 2, dtype=torch.float64), resp=True)
    assert log_p.shape == (0,) and resp.shape == (0, 3)


def test_wall_time_is_the_whole_call_every_run_included():
    """wall_time was time[-1]: the kept run's own clock, started after the data's preparation
    and its initialisation, so n_init=3 reported a fraction of the call."""
    import time
    X = gmmlib.generate_data(3000, 4, 2, seed=0).X.double()
    model = gmmlib.GaussianMixture(4, 2, dtype=torch.float64)
    t0 = time.perf_counter()
    h = gmmlib.fit_em(model, X, n_init=3, generator=0, progress=False)
    measured = time.perf_counter() - t0
    # only the call's own overhead is outside (a descheduling between the two clocks can
    # add a few ms on a busy machine); before, the gap was the initialisation and runs
    assert 0 <= measured - h.wall_time <= 0.01 + 0.05 * measured


def test_workspace_buffers_follow_the_dtype_asked_for():
    """A float32 fit's E-step keeps its log-densities in float32 in one pass and float64 in the
    next (once a component is far): a scratch buffer kept by name and shape came back in the
    first pass's dtype, and the second pass's product refused it."""
    from gmmlib.families import get_family
    from gmmlib.moments import Workspace
    ws = Workspace(torch.zeros(10, 2), 2, torch.zeros(2), get_family("diagonal"))
    assert ws.buffer("scratch", (4, 3), torch.float32).dtype == torch.float32
    again = ws.buffer("scratch", (4, 3), torch.float64)
    assert again.dtype == torch.float64 and again.shape == (4, 3)
    assert ws.buffer("scratch", (4, 3), torch.float64) is again  # kept while nothing changes


def test_a_point_no_component_reaches_stops_the_fit_without_float64_advice():
    """A row whose every component log-density is -inf (its squared whitened distance
    overflows float64) makes the log-likelihood -inf: the fit stops with a ValueError (no NaN
    parameters) and leaves the model as it was; its advice was "use float64", to a float64
    fit. (In float32 the far components' E-step runs in float64, where such a row is finite.)"""
    rng = np.random.default_rng(0)
    X = torch.as_tensor(np.concatenate([rng.normal(size=(100, 3)) + c for c in (0.0, 6.0)])) * 1e-6
    model = gmmlib.GaussianMixture(2, 3, "full", dtype=torch.float64, min_variance=0.0)
    gmmlib.fit_em(model, X, generator=0, reg_covar=0.0, progress=False)
    before = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    far = torch.cat([X, torch.full((1, 3), 1e149, dtype=torch.float64)])  # variances ~1e-12
    with pytest.raises(ValueError, match="log-likelihood became -inf") as err:
        gmmlib.fit_em(model, far, init=None, reg_covar=0.0, progress=False)
    assert "use float64" not in str(err.value) and "far from all the others" in str(err.value)
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v)


@pytest.mark.parametrize("family", ["full", "tied"])
def test_a_float32_fit_keeps_the_small_eigenvalue_of_nearly_collinear_features(family):
    """One EM step with K = 1 is the MLE: in float32 the M-step rounded the covariance to
    float32 before factorising it, so an eigenvalue 1e-6 of the largest was lost and the
    floor's margin lifted it to 5.9e-6 where float64 (and the MLE) have 1.44e-6, 0.6 nats a
    point worse. Factorised in float64 now; what is left is float32's own sums (10 %)."""
    rng = np.random.default_rng(0)
    t = rng.normal(size=(500, 1))
    X = torch.tensor(np.hstack([t, t + 1e-3 * rng.normal(size=(500, 1))]), dtype=torch.float32)
    got = {}
    for dt in (torch.float32, torch.float64):
        m = gmmlib.GaussianMixture(1, 2, family, dtype=dt)
        fit_em(m, X.to(dt), init=None, max_iter=1, progress=False)
        m64 = m.double()
        got[dt] = (float(torch.linalg.eigvalsh(m64.covariances)[0, 0]),
                   float(m64.nll(X.double())))
    (eig32, nll32), (eig64, nll64) = got[torch.float32], got[torch.float64]
    assert eig32 == pytest.approx(eig64, rel=0.2)
    assert nll32 == pytest.approx(nll64, abs=0.05)


def test_a_float32_mean_of_a_small_far_cluster_is_not_pulled_towards_the_data():
    """n_k + 10 eps with float32's eps, the sums being float64, pulled every mean towards the
    shift by 10 eps32 / n_k of its offset: 0.024 for 5 points 1e5 out, outside their own
    cluster (spread 0.01), the variance 17x too large and the loss rising during EM."""
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(1e5, 1e-2, (5, 2))])
    X = torch.tensor(X, dtype=torch.float32)
    fits = {}
    for dt in (torch.float32, torch.float64):
        m = gmmlib.GaussianMixture.from_parameters([0.98, 0.02], [[0, 0], [1e5, 1e5]],
                                                   [[1, 1], [1e-4, 1e-4]], "diagonal", dtype=dt)
        h = fit_em(m, X.to(dt), init=None, max_iter=3, tol=0, progress=False)
        fits[dt] = (m.means[1].double(), m.sklearn_covariances()[1].double(), h.loss)
    (mu32, var32, loss32), (mu64, var64, _) = fits[torch.float32], fits[torch.float64]
    ulp = float(torch.finfo(torch.float32).eps) * 1e5  # float32's spacing at 1e5: 0.0078
    assert float((mu32 - mu64).abs().max()) <= ulp
    torch.testing.assert_close(var32, var64, rtol=0.05, atol=0)
    assert all(b <= a + 1e-6 for a, b in zip(loss32, loss32[1:]))  # EM does not go up


@pytest.mark.parametrize("fit", [fit_em, gmmlib.fit_gd])
@pytest.mark.parametrize("where", ["loc", "raw_scale", "logits"])
def test_a_warm_start_from_parameters_that_are_not_numbers_names_the_model(fit, where):
    """init=None from a model holding NaN: the fit ran and blamed the data ("the log-likelihood
    became nan ...; scale the data, increase reg_covar"). A weight of 0 (a logit of -inf) is a
    valid start."""
    X = torch.randn(100, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = gmmlib.GaussianMixture(2, 2, dtype=torch.float64)
    with torch.no_grad():
        getattr(model, where).view(-1)[0] = math.nan
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=f"model's {where}.* holds NaN or infinity, and "
                                         "init=None starts the fit from them"):
        fit(model, X, init=None, progress=False)
    assert all(torch.equal(v, model.state_dict()[k]) or torch.isnan(v).any()
               for k, v in before.items() if isinstance(v, torch.Tensor))
    zero = gmmlib.GaussianMixture(2, 2, dtype=torch.float64)
    gmmlib.initialize(zero, X, generator=0)
    with torch.no_grad():
        zero.logits[0] = -math.inf
    fit(zero, X, init=None, progress=False)
