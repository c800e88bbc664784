"""Mock data: the seed project's generator, for every covariance family."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ._validation import check_positive, check_positive_int
from .families import get_family
from .mixture import GaussianMixture

__all__ = ["GeneratedData", "generate_data", "random_covariances"]


class GeneratedData(NamedTuple):
    """Points, the component each came from, and the mixture that generated them."""
    X: torch.Tensor  # (N, D)
    labels: torch.Tensor  # (N,)
    truth: GaussianMixture


def random_covariances(rng: np.random.Generator, n_components: int, n_features: int,
                       covariance_type: str, *, scale: float = 1.0,
                       constant_variance: float = 1.0) -> np.ndarray:
    """Random covariances of a family, in scikit-learn's shape, with variances near ``scale``.

    Full ones are ``Q diag(v) Qᵀ`` with a random rotation ``Q`` and variances ``v`` drawn
    log-uniformly in [scale/4, scale]; the other families restrict that.
    """
    return get_family(covariance_type).random_covariances(
        rng, n_components, n_features, scale=scale, constant_variance=constant_variance)


def generate_data(n_samples: int = 1000, n_components: int = 5, n_features: int = 2,
                  radius: float = 8.0, covariance_type: str = "full", seed: int | None = 0, *,
                  constant_variance: float = 1.0, dtype=torch.float64) -> GeneratedData:
    """Sample a data set from a random mixture, as the seed's demo does.

    Means are uniform in ``[-radius, radius]^D``, weights near-uniform (Dirichlet(5)),
    covariances random members of ``covariance_type`` (see :func:`random_covariances`).

    Returns
    -------
    GeneratedData
        ``(X, labels, truth)``: points (N, D), component labels (N,), the true mixture.

    Examples
    --------
    >>> X, labels, truth = generate_data(500, 3, 2, seed=1)
    >>> X.shape, truth.n_components
    (torch.Size([500, 2]), 3)
    """
    N = check_positive_int(n_samples, "n_samples")
    K = check_positive_int(n_components, "n_components")
    D = check_positive_int(n_features, "n_features")
    radius = check_positive(radius, "radius")
    if radius > 1e100:
        raise ValueError(f"radius must be at most 1e100 (the data's squared distances must not "
                         f"overflow), got {radius:g}")
    rng = np.random.default_rng(seed)
    means = rng.uniform(-radius, radius, size=(K, D))
    weights = rng.dirichlet(np.full(K, 5.0))
    cov = random_covariances(rng, K, D, covariance_type, constant_variance=constant_variance)
    truth = GaussianMixture.from_parameters(weights, means, cov, covariance_type, dtype=dtype)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    X, labels = truth.sample(N, generator=gen, return_labels=True)
    return GeneratedData(X, labels, truth)
