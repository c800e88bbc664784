"""Bishop's singularity (PRML §9.2.1) and its mitigations, on one small collapse scenario.

Two blobs of 40 points and a reading repeated twice far from both (a duplicated record). With
K = 3 one component settles on the duplicate and, with nothing to stop it, shrinks its covariance
to zero while the likelihood grows without bound. Each mitigation alone – the variance floor, the
reset of a collapsed component, a MAP prior on the covariances – keeps the fit finite.
"""
import copy
import math
import warnings

import numpy as np
import pytest
import torch

import gmmlib
from gmmlib.priors import InverseWishartPrior, RidgePrior

DUPLICATE = (3.0, 8.0)


def collapse_data(dtype=torch.float64):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(40, 2)), rng.normal(size=(40, 2)) + [6, 0], np.full((2, 2), DUPLICATE)])
    return torch.as_tensor(X, dtype=dtype)  # (82, 2)


def nll_bound(variance, D=2):
    """No Gaussian with every variance >= ``variance`` has density above (2 pi variance)^(-D/2), so
    the mean NLL of any mixture of them is at least (D / 2) log(2 pi variance)."""
    return 0.5 * D * math.log(2 * math.pi * variance)


def fit(X, family="full", *, iterations=300, lr=0.5, **kwargs):
    model = gmmlib.GaussianMixture(3, 2, family, dtype=X.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a mitigated fit must not even warn
        h = gmmlib.fit_gd(model, X, iterations=iterations, component_lr=lr, generator=0, progress=False, **kwargs)
    return model, h


def assert_finite(model, h, X):
    assert not h.diverged and h.n_iter > 0
    assert np.all(np.isfinite(h.loss))
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert bool(torch.isfinite(model.log_prob(X)).all())


def test_the_likelihood_is_unbounded_as_a_component_shrinks_on_a_data_point():
    # Closed form: with mean on the 2 duplicates and sigma -> 0, each duplicate's log-density is
    # log(pi_k) - D/2 log(2 pi) - D log(sigma) + o(1), the other 80 points are unaffected: the mean
    # NLL falls by (2 / 82) * D * log(10) per decade of sigma, forever.
    X = collapse_data()
    means = np.array([[0.0, 0.0], [6.0, 0.0], DUPLICATE])
    nll = []
    for sigma in 10.0 ** -np.arange(2, 10):
        model = gmmlib.GaussianMixture.from_parameters([0.45, 0.45, 0.1], means, [1.0, 1.0, sigma**2], "isotropic")
        nll.append(float(model.nll(X).detach()))
    np.testing.assert_allclose(np.diff(nll), -(2 / 82) * 2 * math.log(10), rtol=1e-9)


def test_a_single_gaussian_is_bounded():
    # K = 1: a covariance that shrinks onto one point leaves every other point at density ~0, so
    # the NLL goes to +inf, not -inf; the maximum-likelihood Gaussian is the sample mean/covariance.
    X = collapse_data()
    nll = [float(gmmlib.GaussianMixture.from_parameters([1.0], [DUPLICATE], [s], "isotropic").nll(X).detach())
           for s in (1e-1, 1e-3, 1e-6)]
    assert nll[0] < nll[1] < nll[2]


@pytest.mark.parametrize("family", ["full", "diagonal"])
def test_all_mitigations_off_float32_goes_non_finite_and_reports_divergence(family):
    X = collapse_data(torch.float32)
    model = gmmlib.GaussianMixture(3, 2, family)
    with pytest.warns(RuntimeWarning, match="collapsed"):
        h = gmmlib.fit_gd(model, X, iterations=300, component_lr=1.0, guard=False, generator=0, progress=False)
    assert h.diverged and h.n_iter < 300 and not h.resets
    assert np.all(np.isfinite(h.loss))  # the last finite parameters are kept
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    with torch.no_grad():  # one more step's worth of shrinking: the density at the duplicate overflows
        L = model.scale_tril()
        k = int(torch.cdist(model.means, torch.tensor([DUPLICATE])).argmin())
        assert float(torch.diagonal(L[k]).min()) < 1e-15


def test_all_mitigations_off_float64_dives_below_any_floored_fit_and_keeps_falling():
    X = collapse_data()
    (m1, h1), (m2, h2) = (fit(X, guard=False, iterations=n, lr=1.0) for n in (150, 300))
    assert h2.final_loss < nll_bound(1e-2) < min(fit(X, min_variance=1e-2, reset_collapsed=False)[1].loss)
    assert h2.final_loss < h1.final_loss - 1.0  # twice the steps, a much lower loss: no bottom
    assert float(torch.linalg.eigvalsh(m2.covariances).min()) < 1e-100


@pytest.mark.parametrize("family", ["full", "diagonal"])
def test_variance_floor_alone_stays_finite(family):
    X = collapse_data()
    model, h = fit(X, family, min_variance=1e-3, reset_collapsed=False)
    assert_finite(model, h, X)
    assert not h.resets
    assert min(h.loss) >= nll_bound(1e-3)
    assert float(torch.linalg.eigvalsh(model.covariances).min()) >= 1e-3 * (1 - 1e-9)


@pytest.mark.parametrize("family", ["full", "diagonal"])
def test_reset_alone_stays_finite_and_records_a_reset(family):
    X = collapse_data()
    model, h = fit(X, family, min_variance=0.0, reset_collapsed=True)
    assert model.min_variance == 0.0  # no floor: only the reset acts
    assert_finite(model, h, X)
    assert len(h.resets) >= 1 and all(0 < step <= 300 for step, _ in h.resets)
    assert min(h.loss) > nll_bound(1e-6)


@pytest.mark.parametrize("family", ["full", "diagonal"])
@pytest.mark.parametrize("prior", [InverseWishartPrior.from_variance(0.05, 2), RidgePrior(1e-2, 82)], ids=["iw", "ridge"])
def test_map_prior_alone_stays_finite(family, prior):
    X = collapse_data()
    model, h = fit(X, family, guard=False, prior=prior)  # guard off: no floor, no reset
    assert model.min_variance == 0.0
    assert_finite(model, h, X)
    assert not h.resets
    assert min(h.loss) > nll_bound(1e-3)
    assert float(torch.linalg.eigvalsh(model.covariances).min()) > 1e-3


def _on_a_line():
    """Two clusters of 150 points on the line y = 2x + 1 (rank-1 data): no spread across it."""
    t = torch.cat([torch.randn(150, generator=torch.Generator().manual_seed(0)) - 4,
                   torch.randn(150, generator=torch.Generator().manual_seed(1)) + 4]).double()
    return torch.stack([t, 2 * t + 1], 1)


@pytest.mark.parametrize("family,data", [("full", "line"), ("diagonal", "constant feature"),
                                         ("tied", "line")])
def test_the_guard_leaves_components_at_the_floor_where_the_data_have_no_spread(family, data):
    """Where the data themselves have no spread (features on a line, a constant feature), a
    component at the floor fits them: the guard flagged every component at every step there,
    threw the means onto random points (400 resets in 200 steps, both means in one cluster)
    and ended 1.1 nats a point above its start, in silence. Now: no reset, and the fit ends
    near where EM does, from the same start."""
    X = _on_a_line()
    if data == "constant feature":
        X[:, 1] = 3.0
    start = gmmlib.GaussianMixture(2, 2, family, dtype=torch.float64)
    gmmlib.initialize(start, X, "kmeans", generator=0)
    gd, em = copy.deepcopy(start), copy.deepcopy(start)
    h = gmmlib.fit_gd(gd, X, iterations=300, init=None, generator=0, progress=False)
    e = gmmlib.fit_em(em, X, init=None, progress=False)
    assert h.resets == []
    # gradient descent across a floor-thin direction is slow to settle along it: 2e-3 nats and
    # 0.1 along the line after 300 steps (before: 1.1 nats, both means in one cluster, 8 apart)
    assert h.final_loss == pytest.approx(e.final_loss, abs=3e-3)
    order = torch.argsort(gd.means[:, 0])
    torch.testing.assert_close(gd.means[order], em.means[torch.argsort(em.means[:, 0])],
                               atol=0.25, rtol=0)


def test_a_component_collapsing_along_the_datas_line_is_still_reset():
    """The guard still catches a collapse a reset can undo on rank-deficient data: a component
    whose variance along the line fell to the floor (the data spread 4 along it)."""
    X = _on_a_line()
    model = gmmlib.GaussianMixture(2, 2, "full", min_variance=1e-3, dtype=torch.float64)
    cov = torch.stack([torch.tensor([[1.0, 2.0], [2.0, 4.0]]), torch.tensor([[0.0, 0.0], [0.0, 0.0]])])
    model.set_parameters(weights=torch.tensor([0.5, 0.5]), means=X[:2],
                         covariances=cov.double() + 1e-3 * torch.eye(2, dtype=torch.float64))
    reach = gmmlib.gd.reset_scale(model, X)
    assert gmmlib.gd.collapsed_components(model, 300, threshold=1e-3, reset_to=reach).tolist() == [1]
    assert gmmlib.gd.collapsed_components(model, 300, threshold=1e-3).tolist() == [0, 1]


@pytest.mark.parametrize("logits,reset", [([0.0, 0.0, -50.0], [2]), ([3.0, -1.0, 0.5, -2.0], [1, 3]),
                                          ([0.0, -math.inf, 1.0], [1]), ([1.0, 2.0], [0, 1])])
def test_a_reset_component_takes_the_mean_weight(logits, reset):
    """reset_components' docstring: a reset component's weight is the mean weight, 1 / K, and
    the others keep their proportions. It set the logit to the mean of the logits (their
    geometric mean): 2.9e-8 beside two weights of 0.5, under the guard's 0.01 / N at once."""
    K = len(logits)
    model = gmmlib.GaussianMixture(K, 2, "diagonal", dtype=torch.float64)
    with torch.no_grad():
        model.logits.copy_(torch.tensor(logits, dtype=torch.float64))
    before = model.weights
    gmmlib.gd.reset_components(model, collapse_data(), reset, torch.Generator().manual_seed(0))
    after = model.weights
    kept = [k for k in range(K) if k not in reset]
    torch.testing.assert_close(after[reset], torch.full((len(reset),), 1.0 / K, dtype=torch.float64),
                               rtol=1e-12, atol=0)
    if kept:
        torch.testing.assert_close(after[kept] / after[kept].sum(), before[kept] / before[kept].sum(),
                                   rtol=1e-12, atol=0)
