"""Priors on the covariances: maximum a posteriori (MAP) fitting against Bishop's singularity.

The likelihood of a mixture is unbounded (PRML §9.2.1): a component whose mean sits on a data
point can shrink its covariance to zero and send the log-likelihood to +∞. A prior on the
covariances that vanishes as a covariance becomes singular turns the problem into a well-posed
MAP problem. Both priors here are callables ``prior(model) -> scalar log-prior`` that
:func:`gmmlib.fit_gd` adds to its objective (``nll - prior(model) / N``):

* :class:`InverseWishartPrior` – the conjugate prior of a Gaussian covariance,
  ``IW(Σ | Ψ, ν) ∝ |Σ|^{-(ν+D+1)/2} exp(-tr(Ψ Σ⁻¹) / 2)``, on every distinct covariance of the
  model. The ``tr(Ψ Σ⁻¹)`` term grows like ``1/σ²`` while the likelihood gains only
  ``log(1/σ)``, so no covariance can collapse. Its MAP update for a component with ``n`` points
  of scatter ``S`` is ``(n S + Ψ) / (n + ν + D + 1)`` (:meth:`InverseWishartPrior.map_covariance`).
* :class:`RidgePrior` – scikit-learn's ``reg_covar``: the penalty
  ``-(ε N / 2) Σ_k π_k tr(Σ_k⁻¹)`` (weights held constant) whose stationary point is exactly
  scikit-learn's regularised M-step ``Σ_k = S_k + ε I``.

Nothing here forms an inverse or a determinant: with ``Σ = L Lᵀ`` and ``Ψ = C Cᵀ``,
``log|Σ| = 2 Σ log L_dd`` and ``tr(Ψ Σ⁻¹) = ||L⁻¹ C||_F²`` come from one triangular solve.
"""
from __future__ import annotations

import math
import numbers

import torch

from ._validation import FLOAT_DTYPES, as_numbers, check_positive, check_positive_int, float_dtype_like
from .numerics import cholesky

__all__ = ["inverse_wishart_log_prob", "covariance_factors", "InverseWishartPrior", "RidgePrior"]


def _scale_matrix(scale, D: int, *, dtype, device, name: str = "scale") -> torch.Tensor:
    """``scale`` as a (D, D) matrix: a positive number means ``scale * I``."""
    if isinstance(scale, numbers.Real) and not isinstance(scale, bool):
        s = check_positive(scale, name)
        return s * torch.eye(D, dtype=dtype, device=device)
    S = as_numbers(scale, name, f"a positive number or a ({D}, {D}) positive-definite matrix",
                   dtype=dtype, device=device)
    if S.shape != (D, D):
        raise ValueError(f"{name} must be a positive number or a ({D}, {D}) positive-definite "
                         f"matrix for {D}-dimensional covariances, got shape {tuple(S.shape)}")
    return S


def _check_df(df, D: int) -> float:
    if isinstance(df, bool) or not isinstance(df, numbers.Real) or not math.isfinite(df) or df <= D - 1:
        raise ValueError(f"df must be a number > D - 1 = {D - 1} for an inverse-Wishart on "
                         f"{D}x{D} matrices, got {df!r}; D + 2 is a common weak choice")
    return float(df)


def inverse_wishart_log_prob(scale_tril: torch.Tensor, df: float, scale) -> torch.Tensor:
    """Log-density of the inverse-Wishart ``IW(Σ | Ψ, ν)`` at ``Σ = L Lᵀ``, from its Cholesky factor.

    ``log IW = ν/2 log|Ψ| - νD/2 log 2 - log Γ_D(ν/2) - (ν+D+1)/2 log|Σ| - tr(Ψ Σ⁻¹)/2``,
    the density of ``scipy.stats.invwishart(df=ν, scale=Ψ)``.

    Parameters
    ----------
    scale_tril : (..., D, D) tensor
        Lower-triangular Cholesky factors ``L`` (positive diagonal) of the matrices ``Σ``.
    df : float
        Degrees of freedom ``ν > D - 1``.
    scale : float or (D, D) array
        The scale matrix ``Ψ`` (positive definite); a number ``s`` means ``s I``.

    Returns
    -------
    (...) tensor
        One log-density per matrix, differentiable with respect to ``scale_tril``.

    Raises
    ------
    ValueError
        If ``df <= D - 1``, ``scale`` is not positive definite or has the wrong shape, or
        ``scale_tril`` is not a lower-triangular factor with a positive diagonal.

    Examples
    --------
    >>> import torch
    >>> L = torch.eye(2, dtype=torch.float64)
    >>> round(float(inverse_wishart_log_prob(L, 4.0, 1.0)), 4)  # scipy.stats.invwishart(4, I).logpdf(I)
    -4.2242
    """
    if not isinstance(scale_tril, torch.Tensor) or scale_tril.ndim < 2 \
            or scale_tril.shape[-1] != scale_tril.shape[-2] or scale_tril.dtype not in FLOAT_DTYPES:
        got = (f"{scale_tril.dtype} of shape {tuple(scale_tril.shape)}"
               if isinstance(scale_tril, torch.Tensor) else type(scale_tril).__name__)
        raise ValueError(f"scale_tril must be a float32 or float64 tensor of (..., D, D) Cholesky "
                         f"factors (no half-precision Cholesky kernels), got {got}")
    with torch.no_grad():  # the factor's contract: finite, lower triangular, positive diagonal
        diag = torch.diagonal(scale_tril, dim1=-2, dim2=-1)
        if not (bool(torch.isfinite(scale_tril).all()) and bool((diag > 0).all())
                and bool((torch.triu(scale_tril, 1) == 0).all())):
            raise ValueError("scale_tril must be lower-triangular Cholesky factors with a positive "
                             "diagonal (finite): pass torch.linalg.cholesky(Sigma), not Sigma")
    D = scale_tril.shape[-1]
    nu = _check_df(df, D)
    Psi = _scale_matrix(scale, D, dtype=scale_tril.dtype, device=scale_tril.device)
    return _iw_log_prob(scale_tril, nu, cholesky(Psi, name="scale"))


def _iw_log_prob(scale_tril: torch.Tensor, nu: float, C: torch.Tensor) -> torch.Tensor:
    """:func:`inverse_wishart_log_prob` for checked ``nu`` and the Cholesky factor ``C`` of Ψ."""
    logdet = 2.0 * torch.diagonal(scale_tril, dim1=-2, dim2=-1).log().sum(-1)  # (...)
    Z = torch.linalg.solve_triangular(scale_tril, C.expand_as(scale_tril), upper=False)  # L⁻¹ C
    return _iw_terms(logdet, Z.square().sum((-2, -1)), nu, C)  # tr(Ψ Σ⁻¹) = |L⁻¹ C|²


def _iw_terms(logdet: torch.Tensor, trace: torch.Tensor, nu: float, C: torch.Tensor) -> torch.Tensor:
    """``log IW(Σ | Ψ, ν)`` from ``log|Σ|`` and ``tr(Ψ Σ⁻¹)`` (each (...)), ``C`` Ψ's factor."""
    D = C.shape[-1]
    logdet_psi = 2.0 * torch.diagonal(C).log().sum()
    # log Γ_D(ν/2) in Python's float64: ν/2 rounded to float32 can land on its pole (ν just
    # above D - 1 gave -inf in float32 where the density is finite)
    log_gamma_d = 0.25 * D * (D - 1) * math.log(math.pi) + sum(
        math.lgamma(0.5 * nu + 0.5 * (1 - j)) for j in range(1, D + 1))
    log_norm = 0.5 * nu * logdet_psi - 0.5 * nu * D * math.log(2.0) - log_gamma_d
    return log_norm - 0.5 * (nu + D + 1) * logdet - 0.5 * trace


def _inverse_variances(model) -> tuple[torch.Tensor, torch.Tensor]:
    """An axis-aligned model's distinct ``log|Σ|`` (K',) and inverse variances ``1 / s²``
    (K', D), differentiable: what both priors need of a diagonal Σ, with no (K', D, D) matrix
    and no D³ solve (at K = 4, D = 1500 the factors' route raised a step's peak by ~0.5 GB)."""
    s = model.factor()  # (K', D') standard deviations, D' = 1 for one variance per component
    s = s.expand(s.shape[0], model.n_features)
    return 2.0 * s.log().sum(-1), s.pow(-2)


def _distinct_weights(model) -> torch.Tensor:
    """The detached weight behind each distinct covariance, (K',): ``π_k`` per component, 1
    for a shared covariance."""
    if model.family.per_component:
        return model.weights
    return torch.ones(1, dtype=model.loc.dtype, device=model.loc.device)


def covariance_factors(model) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's distinct covariances as Cholesky factors, and the weight each stands for.

    Returns
    -------
    factors : (K', D, D) tensor
        Differentiable Cholesky factors (variance floor applied): K' = K for per-component
        families, 1 for ``tied`` and ``shared_isotropic``; diagonal for the axis-aligned families.
    weights : (K',) tensor
        Detached mixture weight behind each: ``π_k`` per component, 1 for a shared covariance.
    """
    f = model.factor()
    return model.family.scale_tril(f, f.shape[0], model.n_features), _distinct_weights(model)


class InverseWishartPrior:
    """An inverse-Wishart prior ``IW(Ψ, ν)`` on each distinct covariance of a mixture.

    Call it on a model to get the summed log-prior (a differentiable scalar); pass it to
    :func:`gmmlib.fit_gd` as ``prior=`` for a MAP fit. For the axis-aligned families the density
    is evaluated at the diagonal matrix ``diag(s²)`` (per variance an inverse-gamma kernel), for
    ``constant`` it is 0 (nothing is learned).

    Parameters
    ----------
    df : float
        Degrees of freedom ``ν > D - 1``; the prior weighs like ``ν + D + 1`` pseudo-points.
    scale : float or (D, D) array
        ``Ψ``; a number ``s`` means ``s I``. A component with no points settles at
        ``Ψ / (ν + D + 1)``, so ``Ψ = (ν + D + 1) σ₀² I`` sets that smallest covariance to σ₀² I.

    Examples
    --------
    >>> import gmmlib
    >>> X = gmmlib.generate_data(200, 2, 2, seed=0).X
    >>> model = gmmlib.GaussianMixture(3, 2, dtype=X.dtype)
    >>> prior = InverseWishartPrior(df=4.0, scale=0.7)
    >>> h = gmmlib.fit_gd(model, X, iterations=50, prior=prior, guard=False, progress=False)
    >>> bool(h.diverged)
    False
    """

    def __init__(self, df: float, scale=1.0):
        self.df, self.scale = df, scale

    @property
    def df(self) -> float:
        """``ν``; setting it checks it as the constructor does (against D at the next call)."""
        return self._df

    @df.setter
    def df(self, df: float):
        if isinstance(df, bool) or not isinstance(df, numbers.Real) or not math.isfinite(df) or df <= 0:
            raise ValueError(f"df must be a positive finite number (and > D - 1), got {df!r}")
        self._df = float(df)
        self._factors = {}  # (D, dtype, device) -> Cholesky factor of Ψ, checked once per key

    @property
    def scale(self):
        """``Ψ``: a number, or a float64 copy of the matrix given (changing it changes nothing);
        setting it checks it as the constructor does."""
        return self._scale if isinstance(self._scale, float) else self._scale.clone()

    @scale.setter
    def scale(self, scale):
        if isinstance(scale, numbers.Real) and not isinstance(scale, bool):
            scale = check_positive(scale, "scale")
        else:  # a matrix: check it now, not at the first step of a fit; a copy, not the caller's
            S = as_numbers(scale, "scale", "a positive number or a positive-definite matrix",
                           dtype=torch.float64)
            if S.ndim != 2 or S.shape[0] != S.shape[1] or not bool(torch.isfinite(S).all()):
                raise ValueError(f"scale must be a positive number or a finite square (D, D) "
                                 f"positive-definite matrix, got shape {tuple(S.shape)}")
            cholesky(S, name="scale")  # raises, naming it, unless positive definite
            scale = S.cpu().clone()
        self._scale = scale
        self._factors = {}

    @classmethod
    def from_variance(cls, variance: float, n_features: int, *, df: float | None = None) -> "InverseWishartPrior":
        """The prior under which a component with no data settles at ``variance * I``.

        ``df`` defaults to ``D + 2`` (weak: ``2D + 3`` pseudo-points); ``Ψ = (ν + D + 1) variance I``.
        """
        D = check_positive_int(n_features, "n_features")
        variance = check_positive(variance, "variance")
        nu = float(D + 2) if df is None else _check_df(df, D)
        return cls(nu, (nu + D + 1) * variance)

    def __call__(self, model) -> torch.Tensor:
        if not model.family.learned:
            return torch.zeros((), dtype=model.loc.dtype, device=model.loc.device)
        dt, dev = model.loc.dtype, model.loc.device
        key = (model.n_features, dt, dev)
        if key not in self._factors:  # df and Ψ checked against D once, Ψ factored once
            D = model.n_features
            _check_df(self._df, D)
            Psi = _scale_matrix(self._scale, D, dtype=dt, device=dev)
            self._factors[key] = cholesky(Psi, name="scale")
        C = self._factors[key]
        if model.family.kind == "std":  # Σ = diag(s²): tr(Ψ Σ⁻¹) = sum_d Ψ_dd / s²_d
            logdet, inv = _inverse_variances(model)
            return _iw_terms(logdet, inv @ C.square().sum(-1), self._df, C).sum()
        L, _ = covariance_factors(model)
        return _iw_log_prob(L, self._df, C).sum()

    def map_covariance(self, scatter, n: float) -> torch.Tensor:
        """The MAP covariance ``(n S + Ψ) / (n + ν + D + 1)`` of ``n`` points with scatter ``S``.

        ``S`` is the maximum-likelihood covariance ``(1/n) Σ (x - μ)(x - μ)ᵀ`` of the points (D, D).
        The result is float32 for a float32 ``S`` and float64 for any other (half precision
        and integers included), as scikit-learn promotes.
        """
        S = as_numbers(scatter, "scatter", "a square (D, D) matrix of numbers")
        S = S.to(float_dtype_like(S))  # half precision overflowed: n S was inf at n = 1e4, S = 10
        if S.ndim != 2 or S.shape[0] != S.shape[1] or not bool(torch.isfinite(S).all()):
            raise ValueError(f"scatter must be a finite square (D, D) matrix, got shape {tuple(S.shape)}")
        if isinstance(n, torch.Tensor) and n.numel() == 1:  # e.g. a component's sum of responsibilities
            n = float(n)
        if isinstance(n, bool) or not isinstance(n, numbers.Real) or not math.isfinite(n) or n < 0:
            raise ValueError(f"n must be a finite number of points >= 0, got {n!r}")
        D = S.shape[-1]
        nu = _check_df(self._df, D)
        Psi = _scale_matrix(self._scale, D, dtype=S.dtype, device=S.device)
        c = n + nu + D + 1
        return S * (n / c) + Psi / c  # n S first overflowed: float32 S = 1e35 I at n = 1e4 gave inf

    def __repr__(self):
        return f"InverseWishartPrior(df={self.df:g}, scale={self._scale if isinstance(self._scale, float) else '...'})"


class RidgePrior:
    """scikit-learn's ``reg_covar`` as a penalty for gradient descent.

    ``log prior = -(ε N / 2) Σ_k π_k tr(Σ_k⁻¹)``, with the weights ``π_k`` held constant (shared
    covariances count once, with weight 1). Setting the gradient of ``nll - log prior / N`` with
    respect to ``Σ_k`` to zero gives ``Σ_k = S_k + ε I`` — the covariance scikit-learn's M-step
    computes with ``reg_covar=ε`` — so a converged fit has the same fixed point as
    ``sklearn.mixture.GaussianMixture(reg_covar=ε)``. It is a penalty, not a normalised density.

    Parameters
    ----------
    reg_covar : float
        ``ε > 0``, added to the diagonal of every covariance at the optimum.
    n_samples : int, optional
        ``N``, the number of points of the data set the fit uses (``fit_gd`` divides by it).
        None (default): :func:`~gmmlib.fit_gd` supplies its own N (so each fold of a
        cross-validation gets its own); given, it must be that N (any other would scale ε by
        ``n_samples / N`` unseen), and only then can the prior be evaluated on its own.

    Examples
    --------
    >>> import gmmlib
    >>> X = gmmlib.generate_data(200, 2, 2, seed=0).X
    >>> model = gmmlib.GaussianMixture(2, 2, dtype=X.dtype)
    >>> h = gmmlib.fit_gd(model, X, iterations=50, prior=RidgePrior(1e-2), progress=False)
    """

    def __init__(self, reg_covar: float, n_samples: int | None = None):
        self.reg_covar = check_positive(reg_covar, "reg_covar")
        self.n_samples = None if n_samples is None else check_positive_int(n_samples, "n_samples")

    def sized(self, N: int) -> "RidgePrior":
        """This prior for a fit of ``N`` points (``fit_gd`` calls it): itself, or a new one
        with ``n_samples=N`` when it had none; a ``ValueError`` when its ``n_samples`` is not N."""
        if self.n_samples is None:
            return RidgePrior(self.reg_covar, N)
        if self.n_samples != N:
            raise ValueError(f"prior=RidgePrior(n_samples={self.n_samples}) but the fit has N={N} "
                             f"points, which would make its ridge {self.reg_covar:g} x "
                             f"{self.n_samples}/{N}; pass n_samples={N}, or none (the fit's own)")
        return self

    def __call__(self, model) -> torch.Tensor:
        if self.n_samples is None:
            raise ValueError("RidgePrior(n_samples=None) is sized by the fit (fit_gd); to evaluate "
                             "it on its own, give it n_samples")
        if not model.family.learned:
            return torch.zeros((), dtype=model.loc.dtype, device=model.loc.device)
        if model.family.kind == "std":  # tr(Σ⁻¹) = sum_d 1 / s²_d
            trace_inv = _inverse_variances(model)[1].sum(-1)
        else:  # (K', D, D) factors
            L, _ = covariance_factors(model)
            eye = torch.eye(model.n_features, dtype=L.dtype, device=L.device).expand_as(L)
            trace_inv = torch.linalg.solve_triangular(L, eye, upper=False).square().sum((-2, -1))
        return -0.5 * self.reg_covar * self.n_samples * (_distinct_weights(model) * trace_inv).sum()

    def __repr__(self):
        return f"RidgePrior(reg_covar={self.reg_covar:g}, n_samples={self.n_samples})"
