"""k-means is the small-variance limit of EM (PRML §9.3.2), checked against scikit-learn.

A ``constant``-family mixture (every component ``σ² I`` with ``σ²`` fixed, so EM learns only
weights and means) fitted by :func:`gmmlib.fit_em` with ``σ² = 1e-8``, started from the same
k-means++ seeds as ``sklearn.cluster.KMeans(init=seeds, n_init=1)``, must end with the same
labels and the same centres: its responsibilities are one-hot to rounding, so its E-step is
Lloyd's assignment step and its M-step for the means is Lloyd's update step. Its mean NLL,
rescaled, is the k-means distortion ``J``. Chapter 6 of the book (``book/06_kmeans.ipynb``)
shows the same check on one data set; here it runs on several data sets, dimensions and seeds.

Also checked: ``gmmlib.init.kmeans`` (k-means++ then Lloyd) against scikit-learn from the same
seeds, and that the responsibilities of a ``constant`` mixture harden as ``σ²`` shrinks.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings, strategies as st
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

import gmmlib

pytestmark = pytest.mark.usefixtures("one_thread")

SIGMA2 = 1e-8


def _data(source: str, seed: int, K: int, D: int, N: int = 400) -> torch.Tensor:
    if source == "blobs":
        X, _ = make_blobs(N, n_features=D, centers=K, cluster_std=1.0, center_box=(-6, 6),
                          random_state=seed)
        return torch.from_numpy(X)
    return gmmlib.generate_data(N, K, D, radius=5.0, covariance_type=source, seed=seed).X


def _tiny_variance_em(X: torch.Tensor, seeds: torch.Tensor):
    K, D = seeds.shape
    model = gmmlib.GaussianMixture(K, D, "constant", constant_variance=SIGMA2, min_variance=0.0,
                                   dtype=torch.float64)
    model.set_parameters(weights=torch.full((K,), 1.0 / K), means=seeds)
    history = gmmlib.fit_em(model, X, init=None, max_iter=300, tol=1e-9, progress=False)
    return model, history


def _check_limit(X: torch.Tensor, seed: int, K: int):
    N, D = X.shape
    seeds = gmmlib.kmeans_plusplus(X, K, torch.Generator().manual_seed(seed))  # (K, D)
    km = KMeans(K, init=seeds.numpy(), n_init=1, tol=0, max_iter=300).fit(X.numpy())
    model, history = _tiny_variance_em(X, seeds)
    labels = model.predict(X).numpy()
    assert history.converged
    assert adjusted_rand_score(km.labels_, labels) == 1.0
    np.testing.assert_array_equal(labels, km.labels_)  # same order too: both keep the seeds'
    scale = float(X.abs().max())
    np.testing.assert_allclose(model.means.numpy(), km.cluster_centers_, rtol=0,
                               atol=1e-12 * scale)
    # the likelihood becomes the distortion: 2σ²N (f - D/2 log 2πσ²) -> J (up to O(σ²) terms)
    J = 2 * SIGMA2 * N * (history.final_loss - D / 2 * math.log(2 * math.pi * SIGMA2))
    assert J == pytest.approx(km.inertia_, rel=1e-6, abs=1e-4)
    return km, model


CASES = [("blobs", 3, 4, 2), ("blobs", 7, 3, 3), ("blobs", 11, 5, 2), ("full", 0, 3, 2),
         ("full", 4, 4, 3), ("isotropic", 2, 2, 2), ("diagonal", 5, 5, 5), ("tied", 8, 3, 4)]


@pytest.mark.parametrize("source, seed, K, D", CASES)
def test_em_with_vanishing_variance_is_kmeans(source, seed, K, D):
    _check_limit(_data(source, seed, K, D), seed, K)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), K=st.integers(2, 5), D=st.integers(1, 4),
       source=st.sampled_from(["blobs", "full", "diagonal"]))
def test_em_with_vanishing_variance_is_kmeans_on_random_data(seed, K, D, source):
    X = _data(source, seed, K, D, N=200)
    seeds = gmmlib.kmeans_plusplus(X, K, torch.Generator().manual_seed(seed))
    km = KMeans(K, init=seeds.numpy(), n_init=1, tol=0, max_iter=300).fit(X.numpy())
    # the comparison is only meaningful where the answer is unambiguous: every final cluster
    # non-empty (scikit-learn relocates empty clusters, EM keeps them) and no point (near) tied
    # between its two nearest centres (a tie of rounding size may go either way)
    d2 = np.sort(((X.numpy()[:, None] - km.cluster_centers_[None]) ** 2).sum(-1), axis=1)
    assume(np.bincount(km.labels_, minlength=K).min() > 0)
    assume((d2[:, 1] - d2[:, 0]).min() > 1e-6 * d2.max())
    _check_limit(X, seed, K)


@pytest.mark.parametrize("source, seed, K, D", CASES[:4])
def test_gmmlib_kmeans_matches_sklearn_from_the_same_seeds(source, seed, K, D):
    X = _data(source, seed, K, D)
    seeds = gmmlib.kmeans_plusplus(X, K, torch.Generator().manual_seed(seed))
    # same generator seed, n_init=1: gmmlib's k-means starts from exactly these seeds
    centres = gmmlib.init.kmeans(X, K, torch.Generator().manual_seed(seed), n_iter=300, n_init=1)
    km = KMeans(K, init=seeds.numpy(), n_init=1, tol=0, max_iter=300).fit(X.numpy())
    np.testing.assert_allclose(centres.numpy(), km.cluster_centers_, rtol=0, atol=1e-12)
    labels = torch.cdist(X, centres).argmin(1).numpy()
    np.testing.assert_array_equal(labels, km.labels_)
    inertia = float(torch.cdist(X, centres).amin(1).square().sum())
    assert inertia == pytest.approx(km.inertia_, rel=1e-12)


def test_responsibilities_harden_as_the_variance_shrinks():
    X = _data("blobs", 3, 4, 2)
    centres = gmmlib.init.kmeans(X, 4, torch.Generator().manual_seed(1), n_iter=100, n_init=1)
    nearest = torch.cdist(X, centres).argmin(1)
    weights = torch.full((4,), 0.25)
    previous = 0.0
    for s2 in (10.0, 1.0, 0.1, 0.01, 1e-4, 1e-8):
        R = gmmlib.GaussianMixture.from_parameters(weights, centres, s2, "constant").predict_proba(X)
        top = R.amax(1)  # (N,)
        assert torch.equal(R.argmax(1), nearest)  # equal weights: the nearest centre, always
        assert float(top.mean()) >= previous  # never softer for a smaller variance
        previous = float(top.mean())
        if s2 == 10.0:
            assert previous < 0.7  # soft: points are shared between components
    assert float(top.min()) > 1 - 1e-12  # at σ² = 1e-8 every row is one-hot to rounding


def _far_float32_blobs():
    """Three clusters of spread 0.05, 0.5 apart, 3000 from the origin, in float32: |x|² is
    1.8e7, whose float32 rounding (~2) exceeds the squared distances (0.01-0.25)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(3, (600,), generator=g)
    centres = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5]], dtype=torch.float64)
    X64 = 3000 + centres[labels] + 0.05 * torch.randn(600, 2, generator=g, dtype=torch.float64)
    return X64.float()


@pytest.mark.parametrize("method", ["kmeans", "k-means++", "random_from_data"])
def test_initialisation_assigns_float32_points_far_out_to_their_nearest_mean(method):
    """initialize's documented assignment, each point to its nearest mean, against the exact
    nearest centre (NumPy, float64 differences): torch.cdist's |x|² + |c|² - 2 x·c in float32
    assigned 383 of 600 points wrongly here, and the weights came out [0.54, 0.46, 2e-9]."""
    X = _far_float32_blobs()
    model = gmmlib.initialize(gmmlib.GaussianMixture(3, 2, dtype=torch.float32), X, method,
                              generator=0)
    x, mu = X.double().numpy(), model.means.double().numpy()
    nearest = ((x[:, None, :] - mu[None]) ** 2).sum(-1).argmin(1)  # (N,)
    shares = np.bincount(nearest, minlength=3) / len(x)
    np.testing.assert_allclose(model.weights.numpy(), shares, atol=1e-6)


def test_kmeans_and_em_on_float32_data_far_out_match_float64():
    """k-means' centres are those of scikit-learn's KMeans (which centres the data) from the
    same data; EM in float32 from gmmlib's default start reaches the float64 fit's NLL, and
    BIC picks the three clusters, as in float64 (it picked four)."""
    X = _far_float32_blobs()
    centres = gmmlib.init.kmeans(X, 3, generator=0).double().numpy()
    sk = KMeans(3, n_init=4, random_state=0).fit(X.double().numpy()).cluster_centers_
    order = [int(np.argmin(((sk - c) ** 2).sum(1))) for c in centres]
    np.testing.assert_allclose(centres, sk[order], atol=1e-3)  # float32 data, 3000 out
    ours = gmmlib.fit_em(gmmlib.GaussianMixture(3, 2, dtype=torch.float32), X, generator=0,
                         progress=False).final_loss
    exact = gmmlib.fit_em(gmmlib.GaussianMixture(3, 2, dtype=torch.float64), X.double(),
                          generator=0, progress=False).final_loss
    assert abs(ours - exact) < 1e-3  # before: -0.145 against -2.067
    assert gmmlib.select_model(X, [1, 2, 3, 4], ["full"], generator=0).best.n_components == 3


@pytest.mark.parametrize("seeding", ["kmeans_plusplus", "random_from_data", "kmeans"])
@pytest.mark.parametrize("bad,phrase", [
    ({"n_components": 0}, "n_components must be a positive integer"),
    ({"n_components": -1}, "n_components must be a positive integer"),
    ({"n_components": 7}, "should be >= n_components"),
    ({"generator": "seed"}, "generator must be None, an int seed"),
    ({"X": np.zeros(6)}, "expected 2D array"),
    ({"X": np.full((6, 2), np.nan)}, "NaN"),
])
def test_seedings_check_their_arguments(seeding, bad, phrase):
    """The public seedings took anything: K = 0 or -1 returned one centre, an int seed or
    None failed inside torch ('int' object has no attribute 'device'), NumPy data and 1-D or
    NaN data failed in torch. They take what the fits take and name what is wrong."""
    args = {"X": np.arange(12.0).reshape(6, 2), "n_components": 2, "generator": 0, **bad}
    with pytest.raises(ValueError, match=phrase):
        getattr(gmmlib.init, seeding)(**args)
    # an int seed, None and NumPy data are accepted, and the int seed is repeatable
    X = np.arange(12.0).reshape(6, 2)
    f = getattr(gmmlib.init, seeding)
    assert torch.equal(f(X, 2, 3), f(X, 2, 3)) and f(X, 2).shape == (2, 2)


def test_kmeans_with_no_lloyd_iteration_is_its_seeding():
    """n_iter=0 returns the k-means++ seeding itself (it was refused for a while)."""
    X = torch.as_tensor(make_blobs(200, centers=3, random_state=0)[0])
    seeds = gmmlib.kmeans_plusplus(X, 3, torch.Generator().manual_seed(5))
    assert torch.equal(gmmlib.init.kmeans(X, 3, torch.Generator().manual_seed(5), n_iter=0, n_init=1), seeds)
