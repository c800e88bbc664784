"""Deliberately naive formulas, and the small formulas the book draws, kept here, tested.

The book's first chapters compare the textbook formulas, evaluated literally, with the stable
log-space forms that :mod:`gmmlib.numerics` uses. The literal forms live here, tested, so that
notebooks call one function instead of growing private helpers. The EM chapter's pieces live
here too: EM's lower bound :func:`em_lower_bound`, the straight path between two mixtures
:func:`interpolate_mixtures` along which the chapter draws it, and :func:`circle_penalty`,
the chapter's example of a penalty that EM's closed form cannot take. Nothing else in gmmlib
imports this module; do not use these functions for real work.

Dims are named once: ``N`` points, ``K`` components, ``D`` features.
"""
from __future__ import annotations

import math

import torch

__all__ = ["covariance_2d", "naive_gaussian_log_prob", "naive_mixture_log_prob", "em_lower_bound",
           "interpolate_mixtures", "circle_penalty"]


def covariance_2d(sigma1: float, sigma2: float, rho: float, *, dtype=torch.float64) -> torch.Tensor:
    """The 2×2 covariance with standard deviations ``sigma1``, ``sigma2`` and correlation ``rho``.

    Parameters
    ----------
    sigma1, sigma2 : float
        Standard deviations along the two axes, > 0.
    rho : float
        Correlation coefficient; the matrix is positive definite exactly when ``-1 < rho < 1``.
        Any other finite ``rho`` is allowed on purpose: the matrix is then built as written,
        singular at ``rho = ±1`` and with a negative eigenvalue beyond, so that the first
        chapter can show what :func:`gmmlib.numerics.cholesky` says about such a "covariance".
    dtype : torch.dtype, default torch.float64

    Returns
    -------
    (2, 2) tensor ``[[s1², rho s1 s2], [rho s1 s2, s2²]]``.

    Raises
    ------
    ValueError
        If a standard deviation is not a positive finite number, or ``rho`` is not finite.

    Examples
    --------
    >>> covariance_2d(2.0, 1.0, 0.5)
    tensor([[4., 1.],
            [1., 1.]], dtype=torch.float64)
    """
    for name, value in (("sigma1", sigma1), ("sigma2", sigma2)):
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a positive finite standard deviation, got {value!r}; "
                             "pass the square root of the variance, not its sign or logarithm")
    if not math.isfinite(rho):
        raise ValueError(f"rho must be a finite correlation (in (-1, 1) for a positive-definite "
                         f"matrix), got {rho!r}")
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


def em_lower_bound(model, X: torch.Tensor, resp: torch.Tensor) -> torch.Tensor:
    """EM's lower bound on the mean log-likelihood, for label distributions ``resp``.

    ``L(q, theta) = (1/N) sum_n sum_k q_nk (log pi_k + log N(x_n | mu_k, Sigma_k) - log q_nk)``
    with ``q = resp`` and ``theta`` the parameters of ``model``. By Jensen's inequality it is
    at most the mean log-likelihood ``(1/N) sum_n log p(x_n)`` (``-model.nll(X)``), with
    equality when ``resp`` is the posterior ``model.predict_proba(X)``; the gap is the mean
    Kullback-Leibler divergence from ``resp`` to the posterior. Terms with ``q_nk = 0``
    contribute 0 (the limit of ``q log q``), even where the component's density is 0.

    Parameters
    ----------
    model : GaussianMixture
    X : (N, D) tensor
    resp : (N, K) tensor
        A distribution over the K components for every point: non-negative, rows summing to 1.

    Returns
    -------
    0-d tensor, in the dtype of ``model`` (detached).

    Raises
    ------
    ValueError
        If ``resp`` is not (N, K), has negative entries, or rows that do not sum to 1.

    Examples
    --------
    >>> import gmmlib
    >>> X = gmmlib.generate_data(200, 2, 2, seed=0).X
    >>> model = gmmlib.GaussianMixture(2, 2, dtype=X.dtype)
    >>> _ = gmmlib.initialize(model, X, "kmeans++", generator=0)
    >>> tight = em_lower_bound(model, X, model.predict_proba(X))
    >>> abs(tight.item() + model.nll(X).item()) < 1e-12
    True
    >>> float(em_lower_bound(model, X, torch.full((200, 2), 0.5, dtype=X.dtype))) < float(tight)
    True
    """
    X = torch.as_tensor(X, dtype=model.loc.dtype)
    resp = torch.as_tensor(resp, dtype=model.loc.dtype)
    N, K = X.shape[0], model.n_components
    if resp.shape != (N, K):
        raise ValueError(f"resp must have shape (N, K) = ({N}, {K}), got {tuple(resp.shape)}")
    if bool((resp < 0).any()) or not torch.allclose(resp.sum(-1), resp.new_ones(N), atol=1e-6):
        raise ValueError("resp must hold a distribution over the components for every point: "
                         "non-negative entries, each row summing to 1")
    with torch.no_grad():
        log_joint = model.log_weights + model.component_log_prob(X)  # (N, K)
        terms = torch.where(resp > 0, resp * (log_joint - resp.log()), 0.0)  # (N, K)
        return terms.sum(-1).mean()


def interpolate_mixtures(a, b, t: float):
    """The mixture ``(1 - t) a + t b``, parameter by parameter: weights, means, covariances.

    At ``t = 0`` it is ``a``, at ``t = 1`` it is ``b``; in between (and a little beyond, while
    the weights stay positive and the covariances positive definite) it is the straight line
    through both in parameter space. The EM chapter draws the log-likelihood and EM's bound
    along the line from ``theta_old`` (``a``) to the M-step's ``theta_new`` (``b``). Since a
    linear combination of two covariances of one family is of that family, the result is of
    ``a``'s family, with the floor off (``min_variance=0``).

    Parameters
    ----------
    a, b : GaussianMixture
        Of the same family, number of components and dimension.
    t : float

    Returns
    -------
    GaussianMixture

    Raises
    ------
    ValueError
        If the two mixtures do not match, or at ``t`` a weight is negative or a covariance is
        not positive definite (too far beyond the segment from ``a`` to ``b``).

    Examples
    --------
    >>> import gmmlib
    >>> new = gmmlib.GaussianMixture.from_parameters
    >>> a = new([0.5, 0.5], [[0.0], [1.0]], [1.0, 2.0], "isotropic")
    >>> b = new([0.2, 0.8], [[1.0], [3.0]], [3.0, 2.0], "isotropic")
    >>> mid = interpolate_mixtures(a, b, 0.5)
    >>> [t.numpy().round(3).tolist() for t in (mid.weights, mid.means, mid.sklearn_covariances())]
    [[0.35, 0.65], [[0.5], [2.0]], [2.0, 2.0]]
    """
    if (a.covariance_type, a.n_components, a.n_features) != \
            (b.covariance_type, b.n_components, b.n_features):
        raise ValueError("a and b must have the same covariance type, number of components and "
                         f"features, got {(a.covariance_type, a.n_components, a.n_features)} and "
                         f"{(b.covariance_type, b.n_components, b.n_features)}")
    weights = (1 - t) * a.weights + t * b.weights  # (K,)
    if bool((weights < 0).any()):
        raise ValueError(f"at t={t} a weight is negative: t is too far beyond [0, 1]")
    means = (1 - t) * a.means + t * b.means  # (K, D)
    cov = (1 - t) * a.covariances + t * b.covariances  # (K, D, D)
    if bool((torch.linalg.eigvalsh(cov)[..., 0] <= 0).any()):
        raise ValueError(f"at t={t} a covariance is not positive definite: t is too far "
                         "beyond [0, 1]")
    return type(a).from_parameters(weights / weights.sum(), means, a.family.to_sklearn(cov),
                                   a.covariance_type, dtype=a.loc.dtype, device=a.loc.device)


def circle_penalty(radius: float, strength: float):
    """A log-prior pulling every mean onto the circle (sphere) of ``radius`` about the origin.

    Returns ``prior(model) = -strength * sum_k (|mu_k| - radius)²``, differentiable in the
    means, for :func:`gmmlib.fit_gd`'s ``prior=`` (which divides it by N: with
    ``strength = N`` the loss gains ``sum_k (|mu_k| - radius)²``). A quadratic *penalty*, not
    a constraint: the means end near the circle, not exactly on it.

    Parameters
    ----------
    radius : float
        >= 0.
    strength : float
        > 0.

    Returns
    -------
    callable ``(GaussianMixture) -> 0-d tensor``

    Examples
    --------
    >>> import gmmlib
    >>> model = gmmlib.GaussianMixture.from_parameters([0.5, 0.5], [[3.0, 0.0], [0.0, 2.0]],
    ...                                                torch.eye(2).expand(2, 2, 2))
    >>> circle_penalty(3.0, 10.0)(model).item()
    -10.0
    """
    if not radius >= 0 or not strength > 0:
        raise ValueError(f"radius must be >= 0 and strength > 0, got {radius}, {strength}")

    def prior(model) -> torch.Tensor:
        return -strength * (model.loc.norm(dim=-1) - radius).square().sum()

    return prior
