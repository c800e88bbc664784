"""Chapter 8's digits (issue 13): a mixture of PCA scores generates valid digits and is a better
density of held-out digits than one Gaussian; AIC with a tiny reg_covar prefers memorising."""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split

import gmmlib


@pytest.fixture(scope="module")
def scores():
    pixels = load_digits().data
    train, test = train_test_split(pixels, test_size=0.2, random_state=0)
    pca = PCA(0.99, whiten=True, random_state=0).fit(train)
    return pca, pca.transform(train), pca.transform(test), pixels


def _fit(S, K, reg_covar):
    model = gmmlib.GaussianMixture(K, S.shape[1], "full", dtype=torch.float64)
    gmmlib.fit_em(model, S, init="k-means++", max_iter=200, generator=0, reg_covar=reg_covar,
                  progress=False)
    return model


def test_sampled_digits_are_valid_images(scores):
    pca, S_train, _, pixels = scores
    model = _fit(S_train, 20, 0.1)
    new = pca.inverse_transform(model.sample(500, generator=torch.Generator().manual_seed(0)).numpy())
    assert new.shape == (500, 64) and np.isfinite(new).all()
    assert np.mean((new > -2) & (new < 18)) > 0.9  # 93%: the floor adds noise everywhere
    clipped = np.clip(new, 0, 16)
    assert clipped.min() == pixels.min() == 0 and clipped.max() == pixels.max() == 16
    # each sample's mean grey level is that of real digits, not of noise
    assert abs(clipped.mean() - pixels.mean()) < 0.5


def test_the_mixture_beats_one_gaussian_on_held_out_digits(scores):
    _, S_train, S_test, _ = scores
    mixture, single = _fit(S_train, 20, 0.1), _fit(S_train, 1, 0.1)
    held_mixture, held_single = mixture.nll(S_test).item(), single.nll(S_test).item()
    assert np.isfinite(held_mixture) and held_mixture < held_single - 5  # nats per digit


def test_aic_with_a_tiny_floor_rewards_memorising(scores):
    """More parameters than numbers: training likelihood and AIC improve, held-out collapses."""
    _, S_train, S_test, _ = scores
    small, large = _fit(S_train, 10, 1e-6), _fit(S_train, 110, 1e-6)
    assert large.n_parameters() > S_train.size
    assert large.aic(S_train) < small.aic(S_train)
    assert large.nll(S_test).item() > small.nll(S_test).item() + 50
