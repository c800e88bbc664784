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
triangle is the Cholesky factor's and whose diagonal is the *log* of the factor's diagonal, so
any real values give a positive-definite covariance. A ``std`` family stores log standard
deviations of shape (K', D'). A variance floor ``min_variance`` clamps the factor's diagonal at
``sqrt(min_variance)`` (Bishop's singularity guard), which bounds every density by
``(2 pi min_variance)^(-D/2)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .numerics import cholesky

__all__ = ["Family", "FAMILIES", "ALIASES", "get_family"]


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
    def factor(self, raw: torch.Tensor, min_variance: float) -> torch.Tensor:
        """The Cholesky factor (tril kind, (K', D, D)) or standard deviations (std kind)."""
        floor = math.sqrt(min_variance) if min_variance > 0 else 0.0
        if self.kind == "tril":
            diag = torch.diagonal(raw, dim1=-2, dim2=-1).exp()
            if floor > 0 and self.learned:
                diag = diag.clamp_min(floor)
            return torch.tril(raw, diagonal=-1) + torch.diag_embed(diag)
        std = raw.exp()
        if floor > 0 and self.learned:
            std = std.clamp_min(floor)
        return std

    def raw_from_factor(self, factor: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`factor` (above the floor): raw parameter from a Cholesky factor
        (tril kind) or standard deviations (std kind)."""
        if self.kind == "tril":
            return torch.tril(factor, diagonal=-1) + torch.diag_embed(torch.diagonal(factor, dim1=-2, dim2=-1).log())
        return factor.log()

    def encode(self, cov: torch.Tensor, K: int, D: int) -> torch.Tensor:
        """Raw parameter from covariances in this family's scikit-learn shape (see ``to_sklearn``)."""
        cov = self.check_shape(cov, K, D)
        if self.kind == "tril":
            return self.raw_from_factor(cholesky(cov.reshape(-1, D, D)))
        var = cov.reshape(self.raw_shape(K, D))
        if not bool(torch.isfinite(var).all()) or bool((var <= 0).any()):
            raise ValueError(f"covariances of a {self.name} mixture must be positive variances, "
                             f"got {var.reshape(-1).tolist()[:8]}")
        return 0.5 * var.log()

    def check_shape(self, cov: torch.Tensor, K: int, D: int) -> torch.Tensor:
        expected = self.sklearn_shape(K, D)
        if tuple(cov.shape) != expected and not (cov.numel() == 1 and expected in ((), (1,))):
            raise ValueError(f"covariances for covariance_type={self.name!r} must have shape "
                             f"{expected}, got {tuple(cov.shape)}")
        return cov

    def sklearn_shape(self, K: int, D: int) -> tuple[int, ...]:
        """Shape of the covariances as scikit-learn stores them (and ``from_parameters`` takes)."""
        if self.kind == "tril":
            return (K, D, D) if self.per_component else (D, D)
        if self.per_feature:
            return (K, D)
        return (K,) if self.per_component else ()

    # -- full covariances (K, D, D) <-> this family --------------------------------------------
    def to_sklearn(self, full: torch.Tensor) -> torch.Tensor:
        """Covariances (K, D, D) of a model of this family, in scikit-learn's shape."""
        if self.kind == "tril":
            return full if self.per_component else full[0]
        var = torch.diagonal(full, dim1=-2, dim2=-1)  # (K, D)
        if self.per_feature:
            return var
        return var[:, 0] if self.per_component else var[0, 0]

    def project(self, full: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Closest member of this family to per-component covariances ``full`` (K, D, D).

        Used by initialisation and by the singularity guard: a shared covariance is the
        ``weights``-average, a diagonal one keeps the diagonal, an isotropic one the mean variance.
        Returns covariances in scikit-learn's shape for this family.
        """
        if not self.per_component:
            full = (weights.reshape(-1, 1, 1) * full).sum(0, keepdim=True) / weights.sum()
        if self.kind == "tril":
            return full if self.per_component else full[0]
        var = torch.diagonal(full, dim1=-2, dim2=-1)  # (K', D)
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

ALIASES = {"diag": "diagonal", "spherical": "isotropic", "shared": "shared_isotropic",
           "shared_spherical": "shared_isotropic"}


def get_family(covariance_type: str) -> Family:
    """The :class:`Family` called ``covariance_type`` (scikit-learn's names are accepted too)."""
    if isinstance(covariance_type, Family):
        return covariance_type
    name = ALIASES.get(covariance_type, covariance_type) if isinstance(covariance_type, str) else None
    if name not in FAMILIES:
        valid = ", ".join(list(FAMILIES) + list(ALIASES))
        raise ValueError(f"unknown covariance_type {covariance_type!r}; choose one of: {valid}")
    return FAMILIES[name]
