"""Old Faithful (issue 13): the shipped data equal R's, and fits on them equal scikit-learn's from
the same start and mclust's published BIC table."""
import warnings

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import gmmlib

# mclust 6's mclustBIC(faithful) on the raw data, K = 1, 2, 3 (Scrucca et al. 2016). mclust's BIC
# is 2 log L - p log N, the negative of scikit-learn's and gmmlib's. Its model names: VVV = full,
# EEE = tied, VVI = diagonal, VII = isotropic, EII = shared_isotropic.
MCLUST_BIC = {"full": (-2607.623, -2322.192, -2349.696), "tied": (-2607.623, -2325.220, -2314.316),
              "diagonal": (-3055.835, -2346.065, -2342.366),
              "isotropic": (-4024.721, -3458.305, -3336.598),
              "shared_isotropic": (-4024.721, -3452.998, -3377.701)}


def test_load_faithful_is_rs_faithful():
    X = gmmlib.load_faithful()
    assert X.shape == (272, 2) and X.dtype == torch.float64
    np.testing.assert_allclose(X.mean(0).numpy(), [3.487783, 70.897059], atol=5e-7)
    assert X[0].tolist() == [3.6, 79.0] and X[-1].tolist() == [4.467, 74.0]
    assert len(set(map(tuple, X.tolist()))) == 256  # ties: 16 rows repeat
    assert torch.equal(X[:, 1], X[:, 1].round())  # waiting times are whole minutes
    assert gmmlib.load_faithful(dtype=torch.float32).dtype == torch.float32
    X[0, 0] = -1.0  # a fresh tensor each call: the caller may write to it
    assert gmmlib.load_faithful()[0, 0] == 3.6


def test_full_two_component_fit_equals_scikit_learn_from_the_same_start():
    X = gmmlib.load_faithful()
    Z = ((X - X.mean(0)) / X.std(0)).numpy()  # standardised, as in PRML Fig. 9.8
    start = gmmlib.GaussianMixture.from_parameters(
        torch.tensor([0.5, 0.5]), torch.tensor([[-1.0, 1.0], [1.0, -1.0]]),
        torch.eye(2).expand(2, 2, 2) * 0.5)  # a poor start, as in PRML Fig. 9.8
    ours = gmmlib.GaussianMixture(2, 2, "full", dtype=torch.float64)
    ours.set_parameters(weights=start.weights, means=start.means, covariances=start.covariances)
    gmmlib.fit_em(ours, Z, init=None, max_iter=1000, tol=1e-12, reg_covar=1e-6, progress=False)
    sk = SkGaussianMixture(2, covariance_type="full", tol=1e-12, max_iter=1000, reg_covar=1e-6,
                           **start.sklearn_init()).fit(Z)
    log_lik_ours = -ours.nll(Z).item() * len(Z)
    log_lik_sk = sk.score(Z) * len(Z)
    assert log_lik_ours == pytest.approx(log_lik_sk, rel=1e-8)
    assert ours.bic(Z) == pytest.approx(sk.bic(Z), rel=1e-8)
    assert ours.aic(Z) == pytest.approx(sk.aic(Z), rel=1e-8)
    np.testing.assert_allclose(ours.means.numpy(), sk.means_, atol=1e-6)


@pytest.mark.parametrize("family", list(MCLUST_BIC))
def test_bic_matches_mclusts_published_table(family):
    """K = 1 and 2: the same optimum as mclust, to its printed digits (isotropic K = 2: ours is
    0.006 higher in log-likelihood, where mclust's EM stopped). K = 3: at least as good (10
    k-means++ starts find a better optimum than mclust's hierarchical start for three families)."""
    X = gmmlib.load_faithful()
    for K, reference in zip((1, 2, 3), MCLUST_BIC[family]):
        model = gmmlib.GaussianMixture(K, 2, family, dtype=torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gmmlib.fit_em(model, X, n_init=10, generator=0, max_iter=2000, tol=1e-12, reg_covar=0.0,
                          progress=False)
        bic = model.bic(X)
        assert bic <= -reference + 1e-3
        if K <= 2:
            assert bic == pytest.approx(-reference, abs=0.01)


def test_the_data_file_ships_with_the_package():
    """load_faithful reads package data: pyproject.toml must declare it, or a wheel lacks it."""
    import tomllib
    from importlib import resources
    from pathlib import Path
    config = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "datasets/*.csv" in config["tool"]["setuptools"]["package-data"]["gmmlib"]
    assert resources.files("gmmlib").joinpath("datasets/faithful.csv").is_file()


def test_load_faithful_refuses_a_dtype_it_would_truncate():
    """dtype=torch.int64 turned the first eruption, 3.6 minutes, into 3."""
    for dtype in (torch.int64, torch.float16):
        with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64"):
            gmmlib.load_faithful(dtype=dtype)
    assert gmmlib.load_faithful(dtype=torch.float32)[0].tolist() == pytest.approx([3.6, 79.0])


def test_generate_data_gives_one_data_set_whatever_the_dtype():
    """The same seed drew another data set in float32 (randn in the model's dtype): points up
    to 4.5 apart. Drawn in float64 and rounded now; a negative or fractional seed is named."""
    a = gmmlib.generate_data(1000, 3, 2, seed=3)
    b = gmmlib.generate_data(1000, 3, 2, seed=3, dtype=torch.float32)
    assert b.X.dtype == b.truth.loc.dtype == torch.float32
    assert torch.equal(a.X.float(), b.X) and torch.equal(a.labels, b.labels)
    torch.testing.assert_close(b.truth.covariances, a.truth.covariances.float())
    for seed in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed must be a non-negative int or None"):
            gmmlib.generate_data(10, 2, 2, seed=seed)
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64"):
        gmmlib.generate_data(10, 2, 2, dtype=torch.int64)
