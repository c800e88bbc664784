"""Deliberately naive formulas, kept only so the book can show where they break.

The book's first chapters compare the textbook formulas, evaluated literally, with the stable
log-space forms that :mod:`gmmlib.numerics` uses. The literal forms live here, tested, so that
notebooks call one function instead of growing private helpers. Nothing else in gmmlib imports
this module; do not use these functions for real work.

Dims are named once: ``N`` points, ``K`` components, ``D`` features.
"""
from __future__ import annotations

import math

import torch

__all__ = ["covariance_2d", "naive_gaussian_log_prob", "naive_mixture_log_prob"]


def covariance_2d(sigma1: float, sigma2: float, rho: float, *, dtype=torch.float64) -> torch.Tensor:
    """The 2×2 covariance with standard deviations ``sigma1``, ``sigma2`` and correlation ``rho``.

    Parameters
    ----------
    sigma1, sigma2 : float
        Standard deviations along the two axes, > 0.
    rho : float
        Correlation coefficient; the matrix is positive definite exactly when ``-1 < rho < 1``.
    dtype : torch.dtype, default torch.float64

    Returns
    -------
    (2, 2) tensor ``[[s1², rho s1 s2], [rho s1 s2, s2²]]``.

    Raises
    ------
    ValueError
        If a standard deviation is not positive.

    Examples
    --------
    >>> covariance_2d(2.0, 1.0, 0.5)
    tensor([[4., 1.],
            [1., 1.]], dtype=torch.float64)
    """
    if not (sigma1 > 0 and sigma2 > 0):
        raise ValueError(f"sigma1 and sigma2 must be positive standard deviations, got {sigma1}, {sigma2}")
    c = rho * sigma1 * sigma2
    return torch.tensor([[sigma1 ** 2, c], [c, sigma2 ** 2]], dtype=dtype)


def naive_gaussian_log_prob(X: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """``log N(x | mean, cov)`` evaluated literally: inverse, determinant, ``exp``, then ``log``.

    This is the textbook density
    ``exp(-(x-mu)ᵀ Σ⁻¹ (x-mu) / 2) / sqrt((2 pi)^D det Σ)`` followed by a logarithm, exactly the
    way the book warns against. ``det`` underflows to 0 or overflows to inf for large ``D`` or
    tiny/huge variances, and ``exp`` underflows to 0 for far points, so the result becomes
    ``±inf`` where :func:`gmmlib.numerics.gaussian_log_prob_tril` stays finite.

    Parameters
    ----------
    X : (N, D) tensor
    mean : (D,) tensor
    cov : (D, D) tensor

    Returns
    -------
    (N,) tensor, in the dtype of ``X``.

    Examples
    --------
    >>> X = torch.zeros(1, 2, dtype=torch.float64)
    >>> round(float(naive_gaussian_log_prob(X, torch.zeros(2, dtype=torch.float64),
    ...                                      torch.eye(2, dtype=torch.float64))), 4)
    -1.8379
    """
    D = X.shape[-1]
    diff = X - mean  # (N, D)
    maha = ((diff @ torch.linalg.inv(cov)) * diff).sum(-1)  # (N,)
    density = torch.exp(-0.5 * maha) / torch.sqrt((2 * math.pi) ** D * torch.linalg.det(cov))
    return torch.log(density)


def naive_mixture_log_prob(log_weights: torch.Tensor, component_log_prob: torch.Tensor) -> torch.Tensor:
    """``log sum_k exp(log w_k + log N_k(x))`` without the log-sum-exp shift. (N, K) -> (N,).

    Every term is exponentiated first; for a point far from all components each term underflows
    to 0 and the result is ``-inf``, where :func:`gmmlib.numerics.mixture_log_prob` is finite.

    Examples
    --------
    >>> a = torch.tensor([[-1000.0, -1001.0]], dtype=torch.float64)
    >>> naive_mixture_log_prob(torch.zeros(2, dtype=torch.float64), a)
    tensor([-inf], dtype=torch.float64)
    """
    return torch.log(torch.exp(component_log_prob + log_weights).sum(-1))
