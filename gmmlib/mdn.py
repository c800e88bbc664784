"""Mixture density network head (Bishop, 1994): a layer that turns features into a mixture.

Stack it on any network: ``MDNHead(hidden, K, D)`` maps features ``h`` (B, H) to the
parameters of a Gaussian mixture over targets ``y`` (B, D) — mixture logits (B, K), means
(B, K, D) and a scale per component — and ``head.nll(h, y)`` is the mean negative conditional
log-likelihood to minimise. The seed project promised this stacking; here it is, in log space.
"""
from __future__ import annotations


import torch
from torch import nn

from ._validation import check_nonnegative, check_positive_int, checked
from .families import get_family

__all__ = ["MDNHead", "MDNOutput"]

_SUPPORTED = ("full", "diagonal", "isotropic")


class MDNOutput:
    """Per-input mixture parameters produced by :class:`MDNHead`."""

    def __init__(self, log_weights, means, factor, family):
        self.log_weights = log_weights  # (B, K)
        self.means = means  # (B, K, D)
        self.factor = factor  # (B, K, D, D) Cholesky factors, or (B, K, D or 1) standard deviations
        self.family = family

    def scale_tril(self) -> torch.Tensor:
        """Cholesky factors (B, K, D, D) for every family."""
        return self.family.scale_tril(self.factor, *self.means.shape[-2:])

    def component_log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """log N(y_b | mu_bk, Sigma_bk), (B, K)."""
        B, K, D = self.means.shape
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (B, D):
            shape = tuple(y.shape) if hasattr(y, "shape") else type(y).__name__
            raise ValueError(f"targets must be a tensor of shape (batch, n_features) = ({B}, {D}), got "
                             f"{shape}" + (" (use y.reshape(-1, 1) for one target feature)"
                                           if getattr(y, "ndim", 0) == 1 else ""))
        diff = (y.unsqueeze(1) - self.means).unsqueeze(-1)  # (B, K, D, 1): one point per Gaussian
        return self.family.log_density(diff, self.factor).squeeze(-1)  # the model's formula

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """log p(y_b | x_b), (B,)."""
        return torch.logsumexp(self.log_weights + self.component_log_prob(y), dim=-1)

    def mean(self) -> torch.Tensor:
        """Conditional mean E[y | x], (B, D)."""
        return (self.log_weights.exp().unsqueeze(-1) * self.means).sum(1)

    def to_distribution(self) -> torch.distributions.MixtureSameFamily:
        """An equivalent batched ``torch.distributions.MixtureSameFamily``."""
        D = torch.distributions
        return D.MixtureSameFamily(D.Categorical(logits=self.log_weights),
                                   D.MultivariateNormal(self.means, scale_tril=self.scale_tril()))

    @torch.no_grad()
    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw of y for each input, (B, D)."""
        B, K, D = self.means.shape
        k = torch.multinomial(self.log_weights.exp(), 1, generator=generator).squeeze(-1)  # (B,)
        eps = torch.randn(B, D, 1, generator=generator, dtype=self.means.dtype, device=self.means.device)
        rows = torch.arange(B, device=self.means.device)
        return self.means[rows, k] + (self.scale_tril()[rows, k] @ eps).squeeze(-1)


def _check_family(covariance_type, name: str):
    family = get_family(covariance_type)
    if family.name not in _SUPPORTED:
        raise ValueError(f"MDNHead supports {name} in {_SUPPORTED}, got {covariance_type!r}")
    return family


_ARGUMENTS = {"in_features": check_positive_int, "n_components": check_positive_int,
              "n_features": check_positive_int, "covariance_type": _check_family,
              "min_variance": check_nonnegative}


class MDNHead(nn.Module):
    """Linear layer from features to a Gaussian mixture over ``n_features``-dimensional targets.

    Parameters
    ----------
    in_features : int
        Size of the features fed to the head (the last hidden layer of your network).
    n_components, n_features : int
        K mixture components over D-dimensional targets.
    covariance_type : str
        ``full``, ``diagonal`` (default) or ``isotropic``.
    min_variance : float
        The variance floor ``v`` (the singularity guard; an MDN collapses just like a mixture):
        each covariance is ``L Lᵀ + v I`` (variances ``s² + v``), as in
        :class:`~gmmlib.GaussianMixture`, so every eigenvalue is at least ``v``.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(), MDNHead(32, 3, 1))
    >>> net(torch.zeros(5, 1)).log_prob(torch.zeros(5, 1)).shape
    torch.Size([5])
    """

    def __init__(self, in_features: int, n_components: int, n_features: int = 1,
                 covariance_type: str = "diagonal", *, min_variance: float = 1e-6):
        super().__init__()
        H, K, D, family, min_variance = checked(_ARGUMENTS, locals()).values()
        self.n_components, self.n_features, self.family = K, D, family
        self.min_variance = min_variance
        self.in_features = H
        n_scale = {"full": D * (D + 1) // 2, "diagonal": D, "isotropic": 1}[family.name]
        self.n_scale = n_scale
        self.linear = nn.Linear(H, K * (1 + D + n_scale))
        if family.name == "full":
            self.register_buffer("_tril_index", torch.tril_indices(D, D), persistent=False)

    def forward(self, h: torch.Tensor) -> MDNOutput:
        if not isinstance(h, torch.Tensor):
            raise ValueError(f"features must be a torch.Tensor, got {type(h).__name__}; convert with "
                             "torch.as_tensor(h, dtype=torch.float32)")
        if h.ndim != 2 or h.shape[-1] != self.in_features:
            raise ValueError(f"features must be 2-D (batch, in_features={self.in_features}), got shape "
                             f"{tuple(h.shape)}")
        weight = self.linear.weight
        if h.dtype != weight.dtype:
            raise ValueError(f"features are {h.dtype} but the head's weights are {weight.dtype}; "
                             f"convert one of them (h.to({weight.dtype}) or head.to({h.dtype}))")
        B = h.shape[0]
        K, D = self.n_components, self.n_features
        out = self.linear(h)
        logits, means, raw = out.split([K, K * D, K * self.n_scale], dim=-1)
        log_weights = torch.log_softmax(logits, dim=-1)  # (B, K)
        means = means.reshape(B, K, D)
        raw = raw.reshape(B, K, self.n_scale)
        if self.family.name == "full":
            L = raw.new_zeros(B, K, D, D)
            L[..., self._tril_index[0], self._tril_index[1]] = raw
            raw = L
        # the same transform (exp of the diagonal, variance floor) as GaussianMixture's
        return MDNOutput(log_weights, means, self.family.factor(raw, self.min_variance), self.family)

    def nll(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean negative conditional log-likelihood ``-1/B sum_b log p(y_b | h_b)``."""
        if getattr(h, "shape", (1,))[0] == 0:
            raise ValueError("nll needs at least one (features, target) pair; the batch is empty")
        return -self(h).log_prob(y).mean()
