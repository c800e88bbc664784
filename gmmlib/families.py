"""Covariance families: one table row per family, and the few functions that read it.

Each family is described by data, not by a subclass (scikit-learn keeps one small function per
covariance type; we go one step further and let a row of this table say everything):

=================  ======  ===========  ========  =============================================
family             kind    components   features  covariance of component k
=================  ======  ===========  ========  =============================================
full               tril    K            D         L_k L_kᵀ, any symmetric positive definite
tied               tril    1            D         L Lᵀ, the same for every component
diagonal           std     K            D         diag(s_k²)
isotropic          std     K            1         s_k² I
shared_isotropic   std     1            1         s² I, the same for every component
constant           std     1            1         c I with c fixed (not learned)
=================  ======  ===========  ========  =============================================

The unconstrained parameter of a ``tril`` family is a (K', D, D) matrix whose strict lower
triangle is a lower-triangular ``L``'s and whose diagonal is the *log* of ``L``'s diagonal; a
``std`` family stores log scales ``log s`` of shape (K', D'). Any real values are allowed.

The variance floor ``min_variance = v`` (Bishop's singularity guard) is part of the
parametrisation: the covariance is ``L Lᵀ + v I`` (``tril``) or the variances ``s² + v``
(``std``). So every eigenvalue of every covariance is at least ``v``, whatever the parameters,
in every direction (not only along the axes), and every density is at most
``(2 pi v)^(-D/2)``. ``L`` (or ``s``) is the *free part*: the covariance above the floor. The
``constant`` family learns nothing; its fixed variance must itself be at least ``v``.

Going the other way (:meth:`Family.encode`, used by ``set_parameters`` and by EM's M-step), a
covariance with eigenvalues below ``v`` is first floored: those eigenvalues are raised to
``v`` (:func:`~gmmlib.numerics.floor_eigenvalues`; per variance for the axis-aligned
families), the nearest covariance that satisfies the floor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .numerics import cholesky, cholesky_plus_identity, floored_cholesky, gaussian_log_density

__all__ = ["Family", "FAMILIES", "ALIASES", "get_family"]


def _map_diagonal(a: torch.Tensor, fn) -> torch.Tensor:
    """``a``'s strict lower triangle with ``fn`` of its diagonal on the diagonal, (..., D, D):
    one new array, its diagonal written in place (differentiable: ``tril`` keeps no output for
    its backward). ``tril(a, -1) + diag_embed(fn(diag a))`` made three of that size: 32 of a
    one-row ``predict``'s 37 ms at K = 30, D = 400 (measured)."""
    out = torch.tril(a, diagonal=-1)
    out.diagonal(dim1=-2, dim2=-1).copy_(fn(torch.diagonal(a, dim1=-2, dim2=-1)))
    return out


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # "tril" or "std"
    per_component: bool  # one covariance per component (K) or one shared (1)
    per_feature: bool  # std kind: a variance per feature (D) or one for all (1)
    learned: bool = True
    sklearn_name: str | None = None

    def raw_shape(self, K: int, D: int) -> tuple[int, ...]:
        k = K if self.per_component else 1
        if self.kind == "tril":
            return (k, D, D)
        return (k, D if self.per_feature else 1)

    def n_covariance_parameters(self, K: int, D: int) -> int:
        """Free parameters of the covariances alone."""
        if not self.learned:
            return 0
        k = K if self.per_component else 1
        if self.kind == "tril":
            return k * D * (D + 1) // 2
        return k * (D if self.per_feature else 1)

    # -- raw parameter <-> factor ------------------------------------------------------------
    def free_factor(self, raw: torch.Tensor) -> torch.Tensor:
        """The free part: ``L`` (tril kind, (K', D, D)) or ``s`` (std kind, (K', D'))."""
        if self.kind == "tril":
            return _map_diagonal(raw, torch.exp)
        return raw.exp()

    def factor(self, raw: torch.Tensor, min_variance: float) -> torch.Tensor:
        """The covariance's Cholesky factor (tril kind, (K', D, D)) or standard deviations
        (std kind): of ``L Lᵀ + v I`` or ``s² + v``, with ``v = min_variance``; differentiable."""
        free = self.free_factor(raw)
        if min_variance <= 0 or not self.learned:
            return free
        if self.kind == "tril":
            return cholesky_plus_identity(free, min_variance)
        return (free.square() + min_variance).sqrt()

    def encode(self, cov: torch.Tensor, K: int, D: int, min_variance: float = 0.0) -> torch.Tensor:
        """Raw parameter from covariances in this family's scikit-learn shape (see ``to_sklearn``),
        floored at ``min_variance`` first (eigenvalues below it raised to it). They must be
        symmetric positive definite, or semi-definite when ``min_variance > 0``."""
        cov = self.check_shape(cov, K, D)
        if self.kind == "tril":
            cov = cov.reshape(-1, D, D)
            if min_variance > 0:  # the floor lifts a singular covariance: semi-definite will do
                # (the scale: the largest entry, or the floor itself for an all-zero covariance)
                scale = max(float(cov.abs().amax().nan_to_num()), min_variance)
                jitter = 10 * D * torch.finfo(cov.dtype).eps * scale
                cholesky(cov + jitter * torch.eye(D, dtype=cov.dtype, device=cov.device))
            else:
                cholesky(cov)  # raises, saying why, unless symmetric positive definite
        else:
            cov = cov.reshape(self.raw_shape(K, D))
            bad = (cov < 0) if min_variance > 0 else (cov <= 0)
            if not bool(torch.isfinite(cov).all()) or bool(bad.any()):
                kind = "non-negative" if min_variance > 0 else "positive"
                raise ValueError(f"covariances of a {self.name} mixture must be {kind} variances, "
                                 f"got {cov.reshape(-1).tolist()[:8]}")
        return self.raw_from_covariance(cov, min_variance)

    def raw_from_covariance(self, cov: torch.Tensor, min_variance: float, *,
                            error: str = "covariances must be positive definite") -> torch.Tensor:
        """Raw parameter from covariances (K', D, D) or variances (K', D') in this family's
        own layout, trusted to be symmetric and finite. With ``min_variance > 0`` they are
        floored; without, they must be positive definite, else ``ValueError(error)``."""
        if self.kind == "tril":
            return self.raw(floored_cholesky(cov, min_variance, error=error))
        if min_variance <= 0 and not bool((cov > 0).all()):
            raise ValueError(error)
        return self.raw(self.floored_scale(cov, min_variance))

    def raw(self, free: torch.Tensor) -> torch.Tensor:
        """The raw parameter of a free part: the inverse of :meth:`free_factor`."""
        if self.kind == "tril":
            return _map_diagonal(free, torch.log)
        return free.log()

    @staticmethod
    def floored_scale(var: torch.Tensor, min_variance: float) -> torch.Tensor:
        """The free scale ``s`` of positive variances floored at ``v``: ``s² = max(var - v, 0)``,
        kept a rounding error above 0 so that its log is finite (then ``s² + v`` is the floored
        variance to within ``eps v``)."""
        if min_variance <= 0:
            return var.sqrt()
        return (var - min_variance).clamp_min(torch.finfo(var.dtype).eps * min_variance).sqrt()

    def check_shape(self, cov: torch.Tensor, K: int, D: int, name: str = "covariances") -> torch.Tensor:
        expected = self.sklearn_shape(K, D)
        if tuple(cov.shape) != expected and not (cov.numel() == 1 and expected in ((), (1,))):
            raise ValueError(f"{name} for covariance_type={self.name!r} should have the shape "
                             f"of {expected}, but got {tuple(cov.shape)}")
        return cov

    def sklearn_shape(self, K: int, D: int) -> tuple[int, ...]:
        """Shape of the covariances as scikit-learn stores them (and ``from_parameters`` takes)."""
        if self.kind == "tril":
            return (K, D, D) if self.per_component else (D, D)
        if self.per_feature:
            return (K, D)
        return (K,) if self.per_component else ()

    # -- full covariances (K, D, D) <-> this family --------------------------------------------
    # -- what callers used to branch on ------------------------------------------------------
    def scale_tril(self, factor: torch.Tensor, K: int, D: int) -> torch.Tensor:
        """Cholesky factors (..., K, D, D) of every component, from :meth:`factor`'s output
        (leading batch dimensions, as an MDN's, are kept)."""
        batch = factor.shape[:-3] if self.kind == "tril" else factor.shape[:-2]
        if self.kind == "tril":
            return factor.expand(*batch, K, D, D)
        return torch.diag_embed(factor.expand(*batch, K, D))

    def precision_factor(self, factor: torch.Tensor) -> torch.Tensor:
        """Upper-triangular ``P`` with ``Σ⁻¹ = P Pᵀ`` (K', D, D), or ``1 / std`` (std kind)."""
        if self.kind == "tril":
            eye = torch.eye(factor.shape[-1], dtype=factor.dtype, device=factor.device).expand_as(factor)
            return torch.linalg.solve_triangular(factor, eye, upper=False).mT
        return 1.0 / factor

    def log_density(self, diff: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """:func:`~gmmlib.numerics.gaussian_log_density` of differences (..., D, M) under
        :meth:`factor`'s output (leading batch dimensions allowed), (..., M)."""
        tril = self.kind == "tril"
        return gaussian_log_density(diff, factor if tril else factor.unsqueeze(-1), tril=tril)

    def log_prob(self, X: torch.Tensor, means: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """log N(x_n | mu_k, Σ_k), (N, K), from :meth:`factor`'s output."""
        return self.log_density(X.T.unsqueeze(0) - means.unsqueeze(-1), factor).T  # (K, D, N) -> (N, K)

    def square(self, factor: torch.Tensor) -> torch.Tensor:
        """The matrices ``F Fᵀ`` (tril kind) or the squares (std kind) a factor stands for."""
        return factor @ factor.mT if self.kind == "tril" else factor.square()

    def own_to_sklearn(self, x: torch.Tensor) -> torch.Tensor:
        """This family's own layout, (K', D, D) or (K', D'), in scikit-learn's shape."""
        if self.kind == "tril" or self.per_feature:
            return x if self.per_component else x[0]
        return x[:, 0] if self.per_component else x[0, 0]

    def diagonal(self, factor: torch.Tensor) -> torch.Tensor:
        """The diagonal of a factor (the standard deviations of a std kind), (K', D')."""
        return torch.diagonal(factor, dim1=-2, dim2=-1) if self.kind == "tril" else factor

    def rows(self, components: torch.Tensor) -> torch.Tensor:
        """Rows of the raw parameter that hold ``components``' covariances: their own, or the
        one shared row."""
        return components if self.per_component else torch.zeros(1, dtype=torch.long, device=components.device)

    def covariances_from_precisions(self, precisions: torch.Tensor) -> torch.Tensor:
        """Covariances from ``precisions_init`` in scikit-learn's shape (the same shape), or a
        ``ValueError`` naming it."""
        # scikit-learn's words first ("'full precision' should be ..."), where its users search
        said = f"'{self.sklearn_name or self.name} precision'"
        if self.kind == "tril":  # finite, symmetric (the factorisation reads one triangle
            # only: an asymmetric matrix became another one) and positive definite, by name
            try:
                cov = torch.cholesky_inverse(cholesky(precisions, name="precisions_init"))
            except ValueError as e:
                raise ValueError(f"{said} should be symmetric, positive-definite: {e}") from None
            if not bool(torch.isfinite(cov).all()):  # a subnormal precision: an infinite variance
                raise ValueError(f"{said} should be symmetric, positive-definite: precisions_init "
                                 "must have a finite inverse (the covariance); its smallest "
                                 "eigenvalues are too close to 0")
            return cov
        cov = 1.0 / precisions
        # inf passed "> 0" and became a variance of 0; a subnormal one a variance of inf
        if not bool(((precisions > 0) & torch.isfinite(precisions) & torch.isfinite(cov)).all()):
            raise ValueError(f"{said} should be positive: precisions_init must be strictly "
                             "positive and finite, with a finite inverse (the variance)")
        return cov

    def random_covariances(self, rng, K: int, D: int, *, scale: float = 1.0,
                           constant_variance: float = 1.0):
        """Random covariances in scikit-learn's shape (a NumPy array), variances near ``scale``:
        full ones ``Q diag(v) Qᵀ`` with a random rotation ``Q`` and variances ``v`` drawn
        log-uniformly in [scale/4, scale]; the other families restrict that."""
        k = K if self.per_component else 1
        var = scale * np.exp(rng.uniform(np.log(0.25), 0.0, size=(k, D)))
        if self.kind == "tril":
            Q, _ = np.linalg.qr(rng.normal(size=(k, D, D)))
            cov = Q @ (var[:, :, None] * np.swapaxes(Q, -1, -2))
            cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))
            return cov if self.per_component else cov[0]
        if not self.learned:
            return np.asarray(constant_variance, dtype=float)
        if self.per_feature:
            return var
        return var[:, 0] if self.per_component else var[0, 0]

    def to_sklearn(self, full: torch.Tensor) -> torch.Tensor:
        """Covariances (K, D, D) of a model of this family, in scikit-learn's shape."""
        if self.kind == "tril":
            return full if self.per_component else full[0]
        var = torch.diagonal(full, dim1=-2, dim2=-1)  # (K, D)
        if self.per_feature:
            return var
        return var[:, 0] if self.per_component else var[0, 0]

    def project(self, cov: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Closest member of this family to per-component covariances ``cov`` (K, D, D), or,
        for the axis-aligned families, their diagonals (K, D) (all they read: a (D, D) matrix
        for D = 4000 is 128 MB).

        Used by initialisation and by the singularity guard: a shared covariance is the
        ``weights``-average, a diagonal one keeps the diagonal, an isotropic one the mean variance.
        Returns covariances in scikit-learn's shape for this family.
        """
        if self.kind == "std" and cov.ndim == 3:
            cov = torch.diagonal(cov, dim1=-2, dim2=-1)  # (K, D)
        if not self.per_component:
            w = weights.reshape(-1, *[1] * (cov.ndim - 1))
            cov = (w * cov).sum(0, keepdim=True) / weights.sum()
        if self.kind == "tril":
            return cov if self.per_component else cov[0]
        var = cov  # (K', D)
        if self.per_feature:
            return var
        var = var.mean(-1)
        return var if self.per_component else var[0]


FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("full", "tril", True, True, sklearn_name="full"),
    Family("tied", "tril", False, True, sklearn_name="tied"),
    Family("diagonal", "std", True, True, sklearn_name="diag"),
    Family("isotropic", "std", True, False, sklearn_name="spherical"),
    Family("shared_isotropic", "std", False, False),
    Family("constant", "std", False, False, learned=False),
]}

# scikit-learn's names (from the table: sklearn_name is the one name map), and two of gmmlib's own
ALIASES = {f.sklearn_name: f.name for f in FAMILIES.values() if f.sklearn_name not in (None, f.name)}
ALIASES.update({"shared": "shared_isotropic", "shared_spherical": "shared_isotropic"})


def get_family(covariance_type: str) -> Family:
    """The :class:`Family` called ``covariance_type`` (scikit-learn's names are accepted too)."""
    if isinstance(covariance_type, Family):
        return covariance_type
    name = ALIASES.get(covariance_type, covariance_type) if isinstance(covariance_type, str) else None
    if name not in FAMILIES:
        valid = ", ".join(list(FAMILIES) + list(ALIASES))
        raise ValueError(f"unknown covariance_type {covariance_type!r}; choose one of: {valid}")
    return FAMILIES[name]
