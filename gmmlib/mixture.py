"""The Gaussian mixture model: a ``torch.nn.Module`` with every covariance family.

Parameters are unconstrained so any optimiser can move them: mixture logits (K,), means (K, D)
and the family's raw scale (see :mod:`gmmlib.families`). Everything is computed in log space.
"""
from __future__ import annotations

import copy
import functools
import math

import torch
from torch import nn

from . import numerics
from ._validation import (FLOAT_DTYPES, as_data, as_numbers, check_dtype_device, check_nonnegative,
                          check_positive, check_positive_int, check_probability_vector,
                          checked, make_generator)
from .families import get_family
from .sources import as_source, is_stream

__all__ = ["GaussianMixture", "match_components", "unchanged_on_error"]


def unchanged_on_error(fit):
    """Decorate a fit whose first argument is the model it fits in place (or another writer of
    it: :meth:`GaussianMixture.load_state_dict`): when it raises (an
    ``Exception``; an interrupt keeps the iterations done, and so does a warning that a filter
    turned into an error, which the fit raises once done), the model is put back as it was on
    entry, parameters, buffers and variance floor, never left half-initialised or half-fitted."""
    @functools.wraps(fit)
    def guarded(model, *args, **kwargs):
        if not isinstance(model, GaussianMixture):  # the fit's own checks name the problem
            return fit(model, *args, **kwargs)
        state = copy.deepcopy(model.state_dict())  # parameters and the floor (extra state)
        try:
            return fit(model, *args, **kwargs)
        except Warning:  # a warning a filter made an error: the fit itself completed
            raise
        except Exception:
            with torch.no_grad():
                model.load_state_dict(state)
            raise
    return guarded


def _check_constant(variance: float, min_variance: float, rounding: float = 0.0) -> None:
    """The constant family learns nothing, so its fixed variance must itself respect the floor
    (to ``rounding``, relative: the stored variance's round trip through its dtype)."""
    if variance < min_variance * (1 - rounding):
        raise ValueError(f"the constant family's variance {variance:g} is below min_variance="
                         f"{min_variance:g}; the floor bounds every covariance, so lower "
                         "min_variance or raise constant_variance")


def _numbers(value, name: str, *, dtype, device) -> torch.Tensor:
    return as_numbers(value, name, "an array of numbers with a regular shape", dtype=dtype, device=device)


_ARGUMENTS = {"n_components": check_positive_int, "n_features": check_positive_int,
              "covariance_type": lambda value, name: get_family(value),
              "constant_variance": check_positive, "min_variance": check_nonnegative}


class GaussianMixture(nn.Module):
    """A mixture of ``n_components`` Gaussians in ``n_features`` dimensions.

    Parameters
    ----------
    n_components : int
        Number of components K.
    n_features : int
        Dimension D of the data.
    covariance_type : str
        One of ``full``, ``tied``, ``diagonal``, ``isotropic``, ``shared_isotropic``,
        ``constant`` (scikit-learn's ``diag`` and ``spherical`` are accepted as aliases).
    constant_variance : float
        The fixed variance of the ``constant`` family.
    min_variance : float
        The variance floor ``v``: every eigenvalue of every covariance is at least ``v``, in
        every direction, because the covariance is parametrised as ``L Lᵀ + v I`` (variances
        ``s² + v`` in the axis-aligned families; see :mod:`gmmlib.families`). So no density
        exceeds ``(2 pi v)^(-D/2)``: Bishop's singularity cannot be reached. 0 turns it off.
        Setting ``model.min_variance`` later keeps the covariances, raising any eigenvalue
        below the new floor to it. The ``constant`` family's fixed variance must be at least
        ``v``.
    dtype, device
        Where the parameters live; ``.to(...)`` moves them later.

    Examples
    --------
    >>> import torch, gmmlib
    >>> model = gmmlib.GaussianMixture(3, 2, "diag")
    >>> model.log_prob(torch.zeros(4, 2)).shape
    torch.Size([4])
    """

    def __init__(self, n_components: int, n_features: int, covariance_type: str = "full", *,
                 constant_variance: float = 1.0, min_variance: float = 1e-6, dtype=None, device=None):
        super().__init__()
        K, D, family, constant_variance, min_variance = checked(_ARGUMENTS, locals()).values()
        dtype, device = check_dtype_device(dtype, device)
        if not family.learned:
            _check_constant(constant_variance, min_variance)
        self.n_components, self.n_features, self.family = K, D, family
        self._min_variance = min_variance
        factory = {"dtype": dtype, "device": device}
        self.logits = nn.Parameter(torch.zeros(K, **factory))
        self.loc = nn.Parameter(torch.zeros(K, D, **factory))
        raw = torch.zeros(family.raw_shape(K, D), **factory)
        if family.learned:
            self.raw_scale = nn.Parameter(raw)
        else:
            self.register_buffer("raw_scale", raw + 0.5 * math.log(constant_variance))

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_parameters(cls, weights, means, covariances, covariance_type: str = "full", *,
                        min_variance: float = 0.0, dtype=torch.float64, device=None) -> "GaussianMixture":
        """Build a mixture from weights (K,), means (K, D) and covariances in scikit-learn's shape.

        Covariance shapes per family: full (K, D, D); tied (D, D); diagonal (K, D);
        isotropic (K,); shared_isotropic and constant: a scalar variance.
        The variance floor is off by default so the model is exactly the one described; with
        ``min_variance > 0`` covariances below it are floored as :meth:`set_parameters` says.
        """
        family = get_family(covariance_type)
        means = _numbers(means, "means", dtype=dtype, device=device)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (n_components, n_features), got {tuple(means.shape)}")
        K, D = means.shape
        cov = _numbers(covariances, "covariances", dtype=dtype, device=device)
        kwargs = {}
        if family.name == "constant":
            family.check_shape(cov, K, D)
            variance = float(cov.reshape(-1)[0])
            if not (math.isfinite(variance) and variance > 0):
                raise ValueError(f"covariances must be a positive finite variance for the constant "
                                 f"family, got {variance}")
            kwargs["constant_variance"] = variance
        model = cls(K, D, family.name, min_variance=min_variance, dtype=dtype, device=device, **kwargs)
        # the covariances as given: set_parameters factorises them before rounding to dtype
        model.set_parameters(weights=weights, means=means, covariances=covariances)
        return model

    @classmethod
    def from_sklearn(cls, estimator, *, dtype=torch.float64, device=None) -> "GaussianMixture":
        """The same mixture as a fitted ``sklearn.mixture.GaussianMixture``."""
        if not hasattr(estimator, "means_"):
            raise ValueError("estimator is not fitted; call estimator.fit(X) first")
        return cls.from_parameters(estimator.weights_, estimator.means_, estimator.covariances_,
                                   estimator.covariance_type, dtype=dtype, device=device)

    @torch.no_grad()
    def set_parameters(self, weights=None, means=None, covariances=None) -> "GaussianMixture":
        """Overwrite any of weights (K,), means (K, D), covariances (scikit-learn's shape).

        Weights are non-negative and sum to 1; a weight of exactly 0 is kept as such (log
        weight -inf), so that component adds nothing to any density, as in scikit-learn.
        Covariances must be symmetric positive definite (positive variances); semi-definite
        (non-negative variances) is enough when ``min_variance > 0``. One with an
        eigenvalue below ``min_variance`` is floored: each such eigenvalue is raised to
        ``min_variance`` and the eigenvectors are kept (for the axis-aligned families, each
        variance below it is raised to it). That is the nearest covariance, in Frobenius norm,
        that satisfies the floor; it is stored to within a rounding margin (about ``10 D eps``
        of the largest eigenvalue).

        Every value given is checked before any is written: when one is rejected, the model
        keeps all its parameters.
        """
        self._check_dtype()
        K, D = self.n_components, self.n_features
        like = {"dtype": self.loc.dtype, "device": self.loc.device}

        def shaped(value, name, shape):
            x = _numbers(value, name, **like)
            if x.shape != shape:
                raise ValueError(f"{name} should have the shape of {shape}, but got "
                                 f"{tuple(x.shape)}")
            return x

        def new_logits(value):
            w = check_probability_vector(shaped(value, "weights", (K,)))
            return w.log()  # a weight of 0 is a log weight of -inf: that component never counts

        def new_loc(value):
            m = shaped(value, "means", (K, D))
            if not bool(torch.isfinite(m).all()):
                raise ValueError("means contain NaN or infinity; pass finite means")
            return m

        def new_raw_scale(value):
            cov = _numbers(value, "covariances", **like)  # (checks it fits the model's dtype)
            if not self.family.learned:
                raw = self.family.encode(cov, K, D)
                _check_constant(float(cov.reshape(-1)[0]), self.min_variance)
            else:  # factorised in float64, the factor then rounded: a covariance rounded to
                # float32 first loses eigenvalues 1e-6 of its largest (as EM's M-step did)
                exact = _numbers(value, "covariances", dtype=torch.float64, device=like["device"])
                raw = self.family.encode(exact, K, D, self.min_variance).to(cov.dtype)
            return raw.reshape(self.raw_scale.shape)

        # argument: (its check, returning the new value; the parameter it is written to)
        table = {"weights": (new_logits, self.logits), "means": (new_loc, self.loc),
                 "covariances": (new_raw_scale, self.raw_scale)}
        given = {"weights": weights, "means": means, "covariances": covariances}
        writes = [(table[name][1], table[name][0](value)) for name, value in given.items()
                  if value is not None]
        for parameter, value in writes:
            parameter.copy_(value)
        return self

    @property
    def min_variance(self) -> float:
        """The variance floor (see the class docstring); setting it keeps the covariances,
        floored at the new value."""
        return self._min_variance

    @min_variance.setter
    def min_variance(self, value: float) -> None:
        value = check_nonnegative(value, "min_variance")
        if value == self._min_variance:
            return
        self._check_dtype()  # a float16 constant family's rounding let a floor above it through
        if not self.family.learned:
            stored = float(self.raw_scale.exp().square().amin())  # exp(2 log s), rounded
            _check_constant(stored, value, 8 * torch.finfo(self.raw_scale.dtype).eps)
            self._min_variance = value
            return
        cov = self.sklearn_covariances()
        previous, self._min_variance = self._min_variance, value
        try:
            self.set_parameters(covariances=cov)
        except BaseException:  # the floor and the covariances change together or not at all
            self._min_variance = previous
            raise

    # -- parameters in the reader's terms ----------------------------------------------------
    @property
    def covariance_type(self) -> str:
        return self.family.name

    @property
    def log_weights(self) -> torch.Tensor:
        """log of the mixture weights, (K,), differentiable."""
        return torch.log_softmax(self.logits, dim=-1)

    def factor(self) -> torch.Tensor:
        """Differentiable Cholesky factor (tril families) or standard deviations (std families)."""
        self._check_dtype()  # every covariance, density and sample goes through here
        return self.family.factor(self.raw_scale, self.min_variance)

    def scale_tril(self) -> torch.Tensor:
        """Cholesky factor of every component's covariance, (K, D, D), differentiable."""
        return self.family.scale_tril(self.factor(), self.n_components, self.n_features)

    @property
    def weights(self) -> torch.Tensor:
        """Mixture weights (K,), a detached copy."""
        return torch.softmax(self.logits.detach(), dim=-1)

    @property
    def means(self) -> torch.Tensor:
        """Component means (K, D), a detached copy."""
        return self.loc.detach().clone()

    @property
    def covariances(self) -> torch.Tensor:
        """Component covariances (K, D, D), a detached copy, for every family."""
        with torch.no_grad():
            L = self.scale_tril()
            return L @ L.transpose(-1, -2)

    @torch.no_grad()
    def sklearn_covariances(self) -> torch.Tensor:
        """Covariances in scikit-learn's shape for this family (see ``from_parameters``), a
        detached copy, squared from the family's own factor (the axis-aligned families never
        form a (K, D, D) array: 2.6 GB at K = 20, D = 4000)."""
        fam = self.family
        return fam.own_to_sklearn(fam.square(self.factor()).expand(fam.raw_shape(self.n_components,
                                                                                  self.n_features)))

    @torch.no_grad()
    def sklearn_precisions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(precisions, precisions_cholesky)`` in scikit-learn's shapes for this family.

        The precision ``Σ⁻¹ = P Pᵀ`` with ``P`` upper triangular (scikit-learn's
        ``precisions_cholesky_``), formed from the Cholesky factor by one triangular solve
        (1 / standard deviation for the axis-aligned families); no matrix is inverted.
        """
        fam, K, D = self.family, self.n_components, self.n_features
        P = fam.precision_factor(self.factor()).expand(fam.raw_shape(K, D))  # (K', D, D) or (K', D')
        return fam.own_to_sklearn(fam.square(P)), fam.own_to_sklearn(P)

    def sklearn_init(self) -> dict:
        """This mixture as the starting point of a ``sklearn.mixture.GaussianMixture``.

        Returns ``{"weights_init", "means_init", "precisions_init"}`` as NumPy arrays in
        scikit-learn's shapes: ``GaussianMixture(K, covariance_type=..., **model.sklearn_init())``
        starts EM exactly here (scikit-learn's ``covariance_type`` is
        ``model.family.sklearn_name``; ``shared_isotropic`` and ``constant`` have none).
        """
        precisions, _ = self.sklearn_precisions()
        return {"weights_init": self.weights.cpu().numpy(), "means_init": self.means.cpu().numpy(),
                "precisions_init": precisions.cpu().numpy()}

    # -- densities ---------------------------------------------------------------------------
    def _chunk_rows(self) -> int:
        """Rows per chunk whose (K, D, n) log-density temporaries hold about 2^20 values."""
        return max(1, (1 << 20) // (self.n_components * self.n_features))

    def _by_rows(self, fn, X: torch.Tensor) -> torch.Tensor:
        """``fn`` of the component log-densities (n, K) of the rows of ``X``, in chunks of rows
        when no gradient is needed, so that the (K, D, n) temporaries of the log-density stay
        near 2^20 elements whatever N is (with a gradient, autograd keeps every chunk's
        temporaries anyway: :meth:`_nll_backward` does not); ``X`` is trusted."""
        f = self.factor()

        def apply(x):
            return fn(self.family.log_prob(x, self.loc, f))
        n = self._chunk_rows()
        grad = torch.is_grad_enabled() and (X.requires_grad or any(p.requires_grad for p in self.parameters()))
        if grad or X.shape[0] <= n:
            return apply(X)
        return torch.cat([apply(X[a:a + n]) for a in range(0, X.shape[0], n)])

    def _nll_backward(self, X: torch.Tensor, divisor: float) -> torch.Tensor:
        """``-sum_n log p(x_n) / divisor`` over the rows of ``X`` (trusted), detached, with its
        gradient added to the parameters' ``.grad``: row chunk by row chunk (:meth:`_by_rows`'s
        size), each chunk's backward run before the next chunk's forward, so only one chunk's
        (K, D, n) temporaries are ever held (one graph over all of a (1e5, 64, 16) float32
        batch held 2.4 GB). The factor and the log weights are computed once, and their own
        backward runs once, after the chunks."""
        n = self._chunk_rows()
        if X.shape[0] <= n:  # one chunk: one graph (the leaves below cost 7% of a small step)
            nll = self._log_prob(X).sum().neg() / divisor
            if nll.requires_grad:
                nll.backward()
            return nll.detach()
        factor, log_weights = self.factor(), self.log_weights
        leaves = [t.detach().requires_grad_(t.requires_grad) for t in (factor, log_weights)]
        total = torch.zeros((), dtype=self.loc.dtype, device=self.loc.device)
        for a in range(0, X.shape[0], n):
            c = self.family.log_prob(X[a:a + n], self.loc, leaves[0])  # (n, K)
            part = numerics.mixture_log_prob(leaves[1], c).sum().neg() / divisor
            if part.requires_grad:
                part.backward()
            total += part.detach()
        heads = [(t, leaf.grad) for t, leaf in zip((factor, log_weights), leaves)
                 if leaf.grad is not None]
        if heads:
            torch.autograd.backward([t for t, _ in heads], [g for _, g in heads])
        return total

    def _component_log_prob(self, X: torch.Tensor) -> torch.Tensor:
        """log N(x_n | mu_k, Sigma_k), (N, K); ``X`` is trusted."""
        return self._by_rows(lambda c: c, X)

    def _log_prob(self, X: torch.Tensor) -> torch.Tensor:
        lw = self.log_weights
        return self._by_rows(lambda c: numerics.mixture_log_prob(lw, c), X)

    def _check(self, X, min_rows: int = 1) -> torch.Tensor:
        # keep_grad: the densities are differentiable in X too (a mixture as the prior of an
        # encoder's output, a score function d log p / dx)
        return as_data(X, n_features=self.n_features, dtype=self.loc.dtype, device=self.loc.device,
                       min_rows=min_rows, keep_grad=True)

    def _rows(self, fn, X) -> torch.Tensor:
        """``fn`` of the component log-densities of the rows of ``X``: a tensor or array at once
        (differentiable), a stream of batches (:mod:`gmmlib.sources`) batch by batch, detached,
        concatenated in the stream's order."""
        self._check_dtype()
        if not is_stream(X):
            return self._by_rows(fn, self._check(X))
        source = as_source(X, n_features=self.n_features, dtype=self.loc.dtype,
                           device=self.loc.device)
        with torch.no_grad():
            parts = [self._by_rows(fn, x) for x in source]
        if not parts:
            raise ValueError("X yielded no rows: found array with 0 sample(s) while a minimum "
                             "of 1 is required")
        return torch.cat(parts)

    def component_log_prob(self, X) -> torch.Tensor:
        """log N(x_n | mu_k, Sigma_k) for each point and component, (N, K). ``X``: (N, D) array
        or tensor, or a stream of batches (a DataLoader, an IterableDataset, a memmap),
        scored batch by batch (then detached); the same holds for every scorer below."""
        return self._rows(lambda c: c, X)

    def log_prob(self, X) -> torch.Tensor:
        """log p(x_n) of each point under the mixture, (N,)."""
        lw = self.log_weights
        return self._rows(lambda c: numerics.mixture_log_prob(lw, c), X)

    forward = log_prob

    def nll(self, X) -> torch.Tensor:
        """Mean negative log-likelihood of the data, a scalar (the objective ``fit_gd`` lowers)."""
        return -self.log_prob(X).mean()

    @torch.no_grad()
    def predict_proba(self, X) -> torch.Tensor:
        """Responsibilities p(k | x_n), (N, K), detached; each row sums to 1."""
        lw = self.log_weights
        return self._rows(lambda c: numerics.log_responsibilities(lw, c).exp(), X)

    @torch.no_grad()
    def predict(self, X) -> torch.Tensor:
        """Most responsible component of each point, (N,) int64."""
        lw = self.log_weights
        return self._rows(lambda c: (c + lw).argmax(-1), X)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | int | None = None, *, return_labels: bool = False):
        """Draw ``n`` points, (n, D); with ``return_labels`` also their components, (n,).
        ``generator``: a torch.Generator, an int seed, or None for torch's global generator."""
        n = check_positive_int(n, "n")
        self._check_dtype()
        if generator is not None:
            generator = make_generator(generator, device=self.loc.device)
        dev = generator.device if generator is not None else self.loc.device
        labels = torch.multinomial(self.weights.to(dev), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.n_features, generator=generator, device=dev, dtype=self.loc.dtype)
        labels, eps = labels.to(self.loc.device), eps.to(self.loc.device)
        F = self.factor()  # (K', D, D) Cholesky factors, or (K', D') standard deviations
        tril = self.family.kind == "tril"
        # x = mu_k + L_k eps, the rows of each component at once: L[labels] would be (n, D, D);
        # the axis-aligned families scale eps by the deviations (no (K, D, D) diagonal matrix)
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=self.n_components).tolist()
        X = torch.empty_like(eps)
        for k, rows in enumerate(order.split(counts)):
            if len(rows):
                f = F[k if F.shape[0] > 1 else 0]
                X[rows] = torch.addmm(self.loc[k], eps[rows], f.T) if tril else \
                    torch.addcmul(self.loc[k], eps[rows], f)
        return (X, labels) if return_labels else X

    def _check_dtype(self) -> None:
        """A ``ValueError`` for parameters in a dtype gmmlib cannot compute in (``.half()``,
        ``.to(torch.bfloat16)``: the constructor refuses them, ``Module.to`` does not), or with
        no values (the 'meta' device, which the constructor accepts for torch's deferred
        initialisation)."""
        if self.loc.dtype not in FLOAT_DTYPES:
            raise ValueError(f"this GaussianMixture holds {self.loc.dtype} parameters; gmmlib computes "
                             "in torch.float32 or torch.float64 only (the covariance factorisations "
                             "have no half-precision kernels): call model.float() or model.double()")
        if self.loc.is_meta:  # torch's own errors came from deep inside (.item(), bincount)
            raise ValueError("this GaussianMixture's parameters are on the 'meta' device (shapes, "
                             "no values): give it values first, e.g. model.to_empty(device='cpu') "
                             "then model.load_state_dict(...), or build it on a real device")

    @torch.no_grad()
    def permuted(self, order) -> "GaussianMixture":
        """A copy whose component ``k`` is this model's component ``order[k]``.

        The mixture is the same distribution (its log-likelihood is identical): the K!
        orderings of the components are the label-switching symmetry of the likelihood.
        ``order`` is a permutation of ``0 .. K-1`` (a sequence or an int tensor); this model is
        unchanged. A shared covariance (``tied``, ``shared_isotropic``, ``constant``) is kept.
        """
        K = self.n_components
        try:
            idx = torch.as_tensor(order)
        except (TypeError, RuntimeError, ValueError):
            idx = None
        if idx is None or idx.ndim != 1 or idx.dtype.is_floating_point or idx.dtype.is_complex \
                or idx.dtype == torch.bool or sorted(idx.tolist()) != list(range(K)):
            raise ValueError(f"order must be a permutation of 0..{K - 1} (a sequence or a 1-D int "
                             f"tensor), got {order!r}")
        idx = idx.to(device=self.loc.device, dtype=torch.long)
        model = copy.deepcopy(self)
        model.logits.copy_(self.logits[idx])
        model.loc.copy_(self.loc[idx])
        if self.family.per_component:
            model.raw_scale.copy_(self.raw_scale[idx])
        return model

    # -- model selection ---------------------------------------------------------------------
    def n_parameters(self) -> int:
        """Number of free parameters: (K - 1) weights, K·D means and the family's covariances."""
        K, D = self.n_components, self.n_features
        return (K - 1) + K * D + self.family.n_covariance_parameters(K, D)

    @torch.no_grad()
    def bic(self, X) -> float:
        """Bayesian information criterion, ``-2 log L + p log N`` (lower is better)."""
        lp = self.log_prob(X)  # (N,)
        return float(-2.0 * lp.sum() + self.n_parameters() * math.log(lp.shape[0]))

    @torch.no_grad()
    def aic(self, X) -> float:
        """Akaike information criterion, ``-2 log L + 2 p`` (lower is better)."""
        return float(-2.0 * self.log_prob(X).sum() + 2 * self.n_parameters())

    def to_distribution(self) -> torch.distributions.MixtureSameFamily:
        """An equivalent ``torch.distributions.MixtureSameFamily`` (differentiable)."""
        D = torch.distributions
        return D.MixtureSameFamily(D.Categorical(logits=self.log_weights),
                                   D.MultivariateNormal(self.loc, scale_tril=self.scale_tril()))

    def extra_repr(self) -> str:
        return (f"n_components={self.n_components}, n_features={self.n_features}, "
                f"covariance_type={self.family.name!r}, min_variance={self.min_variance:g}")

    # min_variance is a plain attribute; keep it in state_dict so a saved model reloads exactly
    # (the raw parameters loaded beside it are relative to it: set it without re-encoding).
    # The family too: the raw parameters of two families can have the same shape (constant and
    # shared_isotropic; isotropic too at K = 1) and mean different covariances.
    def get_extra_state(self):
        return {"min_variance": self.min_variance, "covariance_type": self.family.name}

    def set_extra_state(self, state):
        if not isinstance(state, dict) or "min_variance" not in state:
            raise ValueError("the state_dict's _extra_state must be a GaussianMixture's, a dict "
                             f"with its min_variance; got {state!r}")
        # a NaN floor scored NaN, a negative one switched the floor off in silence
        self._min_variance = check_nonnegative(state["min_variance"],
                                               "the state_dict's min_variance")

    @unchanged_on_error
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``torch.nn.Module.load_state_dict``, all or nothing: a state_dict refused (a
        size, the family, the floor) leaves the model as it was. torch's own loads every
        tensor that fits before it raises: the floor of a mixture of another size came in,
        and every covariance, stored relative to it, moved (1.0 to 0.5)."""
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        family = (state_dict.get(prefix + "_extra_state") or {}).get("covariance_type")
        if family is not None and family != self.family.name:  # nothing of it is loaded
            error_msgs.append(f"the state_dict is of a covariance_type={family!r} mixture, this "
                              f"model's is {self.family.name!r}; build GaussianMixture(..., "
                              f"covariance_type={family!r}) to load it")
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


@torch.no_grad()
def match_components(model: GaussianMixture, reference: GaussianMixture) -> torch.Tensor:
    """The order of ``model``'s components that best matches ``reference``'s, a (K,) int64 tensor.

    ``model.permuted(match_components(model, reference))`` puts at position ``k`` the component
    of ``model`` matched to the reference's component ``k``: the assignment minimises the sum
    of squared distances between matched means (the Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``). Use it to undo label switching: to compare two
    fits component by component, or to keep a component's colour across the frames of a figure.

    The two may have different numbers of components (a K = 5 fit against a 3-cluster truth):
    then min(K, K_ref) pairs are matched, the matched components of ``model`` come first,
    in the order of the reference components they match, and the unmatched ones follow in
    their own order. The dimensions D must be equal.

    Examples
    --------
    >>> import gmmlib
    >>> a = gmmlib.GaussianMixture.from_parameters([.5, .5], [[0., 0.], [5., 5.]], [1., 1.], "isotropic")
    >>> match_components(a.permuted([1, 0]), a)
    tensor([1, 0])
    """
    if not isinstance(model, GaussianMixture) or not isinstance(reference, GaussianMixture):
        raise TypeError("model and reference must be gmmlib.GaussianMixture instances")
    if model.n_features != reference.n_features:
        raise ValueError(f"model has D = {model.n_features} features but reference has "
                         f"{reference.n_features}; they must be equal")
    from scipy.optimize import linear_sum_assignment  # scipy loads on first use only

    # squared distances from the differences: cdist's |a|² + |b|² - 2 a·b (its path past 25
    # rows) cancels for means far from the origin next to their separations
    diff = reference.loc.double().cpu().unsqueeze(1) - model.loc.double().cpu().unsqueeze(0)
    cost = diff.square().sum(-1)  # (K_ref, K)
    rows, cols = linear_sum_assignment(cost.numpy())  # rows ascending: reference order
    matched = [int(c) for c in cols]
    rest = [k for k in range(model.n_components) if k not in set(matched)]
    return torch.as_tensor(matched + rest, dtype=torch.long)
