"""Fitting by expectation-maximisation, step for step as scikit-learn does it, but as matrix products.

One EM iteration is an E-step (responsibilities ``r_nk = p(k | x_n)`` under the current
parameters, and the mean log-likelihood, which is scikit-learn's "lower bound") followed by a
closed-form M-step per covariance family::

    n_k = sum_n r_nk (+ 10 eps, as scikit-learn)      w_k = n_k / sum_j n_j
    mu_k = sum_n r_nk x_n / n_k
    full:              S_k = sum_n r_nk (x_n - mu_k)(x_n - mu_k)ᵀ / n_k + reg I
    tied:              S   = sum_k n_k S_k / sum_k n_k                  + reg I
    diagonal:          s²_kd = sum_n r_nk (x_nd - mu_kd)² / n_k         + reg
    isotropic:         s²_k  = mean_d s²_kd
    shared_isotropic:  s²    = sum_k n_k s²_k / sum_k n_k
    constant:          the variance is fixed; only weights and means move

Where the time goes, and how it is kept small (see ``benchmarks/bench_em.py``):

* The E-step whitens every point against every component in ONE product per chunk of rows,
  ``X_chunk @ [P_1 … P_K]`` with ``P_k`` the upper Cholesky factor of component k's precision
  (``Σ_k⁻¹ = P_k P_kᵀ``), then subtracts ``mu_k P_k``, squares and sums: an (n, K·D) temporary,
  never (N, K, D). The diagonal families use the two small products ``x² @ prec`` and ``x @ (mu
  prec)``, as scikit-learn does.
* The full and tied M-steps compute their scatter matrices *centred* on the new means (never
  ``E[x²] - E[x]²``, which cancels catastrophically in float32), chunk by chunk, as a batched
  product ``Z_kᵀ (r_k ∘ Z_k)`` with ``Z_k = X_chunk - mu_k``.
* The diagonal families' scatter is two (K, N) x (N, D) products, ``sum_n r x²`` and
  ``sum_n r x``, accumulated in float64 whatever the data's dtype; a component whose
  difference would lose more than 5 of float64's digits (narrow and far from the data's mean)
  is recomputed centred. Measured at (1e5, 64, 16) against a float64 reference: 5.7e-8
  relative in float32 (the centred float32 sum: 8.3e-7), 1.6e-12 in float64, and 2-4x faster
  than the centred sum.
* The data are shifted once by their mean (EM is translation-equivariant), which keeps the
  whitening products accurate in float32 for data far from the origin.
* Memory beyond the data: the (N, K) responsibilities and per-chunk temporaries.

The model's ``min_variance`` floor is applied exactly as the model applies it (on the Cholesky
diagonal or the standard deviations), so the E-step always evaluates the density the model will
evaluate; with ``reg_covar >= min_variance`` (the defaults) the floor never binds.
"""
from __future__ import annotations

import inspect
import math
import numbers
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ._validation import (as_data, check_dtype_device, check_nonnegative, check_nonnegative_int,
                          check_positive_int, float_dtype_like)
from .families import get_family
from .history import FitHistory, Snapshot
from .init import METHODS, check_model, initialize, make_generator
from .mixture import GaussianMixture
from .numerics import LOG_2PI

__all__ = ["fit_em", "GaussianMixtureEM", "ConvergenceWarning"]


class ConvergenceWarning(RuntimeWarning):
    """EM stopped at ``max_iter`` before the log-likelihood gain fell below ``tol``."""


_FAIL = ("Fitting the mixture model failed because some components have ill-defined empirical "
         "covariance (for instance caused by singleton or collapsed samples). Try to decrease "
         "the number of components, increase reg_covar, or scale the input data.")


# ------------------------------------------------------------------------------------------------
# The state EM iterates on: plain tensors, in data coordinates shifted by ``shift``.
# ------------------------------------------------------------------------------------------------
@dataclass
class _State:
    log_weights: torch.Tensor  # (K,)
    means: torch.Tensor  # (K, D), shifted coordinates
    factor: torch.Tensor  # tril: Cholesky factor of the covariance (K', D, D); std: std (K', D')


def _read_state(model: GaussianMixture, shift: torch.Tensor) -> _State:
    """The model's effective parameters (floor applied), as EM's state."""
    with torch.no_grad():
        return _State(model.log_weights.detach().clone(), model.loc.detach() - shift,
                      model.factor().detach().clone())


@torch.no_grad()
def _write_state(model: GaussianMixture, state: _State, shift: torch.Tensor) -> None:
    """Store ``state`` in the model's unconstrained parameters."""
    model.logits.copy_(state.log_weights)
    model.loc.copy_(state.means + shift)
    if model.family.learned:
        model.raw_scale.copy_(model.family.raw_from_factor(state.factor).reshape(model.raw_scale.shape))


class _Workspace:
    """The data as EM reads them, and buffers reused by every iteration.

    ``XT`` holds the data shifted by ``shift`` and transposed, (D, N): a row chunk is the view
    ``XT[:, a:b].T`` for the E-step's product, and a contiguous (D, n) block for the M-step's
    centred scatter, whose batched products then run along contiguous memory (measured ~1.4x
    faster than the (n, D) layout). ``RT`` holds the responsibilities, (K, N).

    Rows per chunk keep every (K, D, n) temporary near ``budget`` elements (measured at
    (1e5, 16, 16) and (1e5, 64, 16) on 2 cores: best between 2^18 and 2^20); the E-step of the
    diagonal families only makes (n, K) temporaries and takes longer chunks.
    """

    def __init__(self, X: torch.Tensor, K: int, shift: torch.Tensor, family, chunk: int | None = None):
        N, D = X.shape
        self.N, self.D, self.K = N, D, K
        self.shift = shift  # (D,)
        self.XT = X.T.contiguous().sub_(shift.unsqueeze(-1))  # (D, N)
        budget = 1 << 24 if X.device.type == "cuda" else 1 << 19
        self.chunk = min(N, int(chunk or max(256, budget // (K * D))))  # M-step, tril E-step
        self.chunk_e = self.chunk if family.kind == "tril" else \
            min(N, int(chunk or max(256, budget // (K + D))))
        self.RT = None  # (K, N), allocated on first use
        self._buffers = {}

    def resp(self) -> torch.Tensor:
        if self.RT is None:
            self.RT = torch.empty(self.K, self.N, dtype=self.XT.dtype, device=self.XT.device)
        return self.RT

    def buffer(self, name: str, shape) -> torch.Tensor:
        b = self._buffers.get(name)
        if b is None or b.shape != tuple(shape):
            b = self._buffers[name] = torch.empty(shape, dtype=self.XT.dtype, device=self.XT.device)
        return b

    def chunks(self, size: int):
        for a in range(0, self.N, size):
            yield a, min(a + size, self.N)


# ------------------------------------------------------------------------------------------------
# E-step
# ------------------------------------------------------------------------------------------------
class _EStep:
    """What the E-step needs from a state, precomputed once per iteration."""

    def __init__(self, family, state: _State):
        K, D = state.means.shape
        self.K, self.D, self.kind = K, D, family.kind
        mu = state.means
        if family.kind == "tril":
            L = state.factor  # (K', D, D)
            eye = torch.eye(D, dtype=L.dtype, device=L.device).expand_as(L)
            P = torch.linalg.solve_triangular(L, eye, upper=False).mT  # (K', D, D), upper: Σ⁻¹ = P Pᵀ
            self.shared = P.shape[0] == 1
            if self.shared:
                self.Pcat = P[0]  # (D, D)
                self.muP = mu @ P[0]  # (K, D)
            else:
                self.Pcat = P.permute(1, 0, 2).reshape(D, K * D)  # (D, K·D) = [P_1 … P_K]
                self.muP = torch.einsum("kd,kde->ke", mu, P)  # (K, D)
            half_logdet = -torch.diagonal(L, dim1=-2, dim2=-1).log().sum(-1)  # (K',) log|P_k|
        else:
            std = state.factor.expand(K, D)  # (K, D)
            prec = std.pow(-2)  # (K, D)
            self.precT = prec.T.contiguous()  # (D, K)
            self.muprecT = (-2.0 * mu * prec).T.contiguous()  # (D, K)
            self.const = (mu.square() * prec).sum(-1)  # (K,)
            half_logdet = -std.log().sum(-1)  # (K,)
        self.offset = (half_logdet - 0.5 * D * LOG_2PI).expand(K) + state.log_weights  # (K,)
        self.ones = torch.ones(D, dtype=mu.dtype, device=mu.device)  # (D,)

    def weighted_log_prob(self, x: torch.Tensor, ws: _Workspace) -> torch.Tensor:
        """``log w_k + log N(x_n | mu_k, Σ_k)`` for a chunk ``x`` (n, D), (n, K)."""
        n = x.shape[0]
        K, D = self.K, self.D
        if self.kind == "tril":
            buf = ws.buffer("estep", (ws.chunk_e, K * D))
            if self.shared:
                y = torch.sub((x @ self.Pcat).unsqueeze(1), self.muP, out=buf[:n].view(n, K, D))
            else:
                y = torch.mm(x, self.Pcat, out=buf[:n]).view(n, K, D).sub_(self.muP)  # (n, K, D)
            y = y.square_()
            if D <= 16:  # torch reduces a short last dim slowly: 25x at D = 2, measured
                maha = (y.view(n * K, D) @ self.ones).view(n, K)  # (n, K)
            else:
                maha = y.sum(-1)  # (n, K)
        else:
            maha = torch.addmm(self.const, x.square(), self.precT).addmm_(x, self.muprecT)  # (n, K)
        return maha.mul_(-0.5).add_(self.offset)


def _e_step(family, state: _State, ws: _Workspace, *, resp: bool = False,
            log_prob: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over points of log p(x_n), a 0-d tensor. With ``resp`` fills ``ws.RT`` (K, N)
    with the responsibilities; ``log_prob`` (N,), when given, receives log p(x_n)."""
    e = _EStep(family, state)
    RT = ws.resp() if resp else None
    dt = ws.XT.dtype
    total = torch.zeros((), dtype=dt, device=ws.XT.device)
    ones = torch.ones(e.K, 1, dtype=dt, device=ws.XT.device)  # (K, 1)
    log_tiny = math.log(torch.finfo(dt).tiny)
    for a, b in ws.chunks(ws.chunk_e):
        w = e.weighted_log_prob(ws.XT[:, a:b].T, ws)  # (n, K)
        # log-sum-exp by hand: exp(w - max) once, for the sum and the responsibilities. Terms
        # below the smallest normal number are set to exactly 0 first: exp producing subnormals
        # was measured 25x slower, and they change neither the sum nor any printed digit.
        top = w.amax(-1, keepdim=True)  # (n, 1)
        z = w.sub_(top)
        p = z.masked_fill_(z < log_tiny, -math.inf).exp_()  # (n, K), max 1 per row
        s = p @ ones  # (n, 1), >= 1
        lse = s.log().add_(top)  # (n, 1)
        total += lse.sum()
        if log_prob is not None:
            log_prob[a:b] = lse.squeeze(-1)
        if RT is not None:
            RT[:, a:b] = p.div_(s).T
    return total


# ------------------------------------------------------------------------------------------------
# M-step: one small function per kind of covariance, picked by the family's name.
# ------------------------------------------------------------------------------------------------
def _scatter_full(ws: _Workspace, means):
    """sum_n r_nk (x_n - mu_k)(x_n - mu_k)ᵀ, centred on the new means, (K, D, D)."""
    K, D = means.shape
    S = torch.zeros(K, D, D, dtype=means.dtype, device=means.device)
    Zb, Wb = ws.buffer("z", (K, D, ws.chunk)), ws.buffer("w", (K, D, ws.chunk))
    mu = means.unsqueeze(-1)  # (K, D, 1)
    for a, b in ws.chunks(ws.chunk):
        n = b - a
        Z = torch.sub(ws.XT[:, a:b], mu, out=Zb[:, :, :n])  # (K, D, n)
        W = torch.mul(Z, ws.RT[:, a:b].unsqueeze(1), out=Wb[:, :, :n])  # (K, D, n)
        S.baddbmm_(Z, W.mT)
    return S


# Largest tolerated ratio sum_n r x² / sum_n r (x - mu)² in the fast diagonal scatter: past it
# the float64 difference has lost more than 5 of its 16 digits and the component is recomputed
# centred. A component sits this far out only when it lies ~300 of its own standard deviations
# from the data's mean.
_MAX_CANCELLATION = 1e5


def _scatter_diag(ws: _Workspace, means):
    """sum_n r_nk (x_nd - mu_kd)², (K, D), in the data's dtype.

    Fast path: the data are already centred on their global mean, so the moments
    ``A = sum_n r x²`` and ``B = sum_n r x`` are two (K, N) x (N, D) products, accumulated in
    float64 whatever the data's dtype (float32 values and their squares are exact in float64),
    and the scatter is ``A - B² / n_k``. That difference cancels where a component is narrow
    and far from the global mean; every component whose ratio ``A / scatter`` exceeds
    ``_MAX_CANCELLATION`` in any coordinate (or whose scatter is not positive) is recomputed
    by the exact centred sum :func:`_scatter_diag_centred`. In float32 this is never the
    E[x²] - E[x]² of the data's own precision, which goes negative: the accumulation is in
    float64 and the guard bounds what cancellation can cost.
    """
    K, D = means.shape
    f64 = torch.float64
    A = torch.zeros(K, D, dtype=f64, device=means.device)
    B = torch.zeros(K, D, dtype=f64, device=means.device)
    n = torch.zeros(K, dtype=f64, device=means.device)
    for a, b in ws.chunks(ws.chunk_e):
        x = ws.XT[:, a:b].to(f64)  # (D, n); the data themselves when they are float64
        r = ws.RT[:, a:b].to(f64)  # (K, n)
        B.addmm_(r, x.T)
        A.addmm_(r, torch.square(x).T)  # not in place: x may be ws.XT
        n += r.sum(1)
    S = A - B.square() / n.clamp_min(torch.finfo(f64).tiny).unsqueeze(-1)  # (K, D)
    bad = (S * _MAX_CANCELLATION <= A).any(-1)  # (K,)
    if bool(bad.any()):
        idx = bad.nonzero().squeeze(-1)
        S[idx] = _scatter_diag_centred(ws, means[idx], idx).to(f64)
    return S.to(means.dtype)


def _scatter_diag_centred(ws: _Workspace, means, components):
    """sum_n r_nk (x_nd - mu_kd)² for the listed ``components`` (with their ``means``),
    centred on the means: the squared norms of the rows of ``sqrt(r_k) ∘ (x - mu_k)``; N·K·D
    element-wise work, against the fast path's two products."""
    K, D = means.shape
    S = torch.zeros(K, D, dtype=means.dtype, device=means.device)
    Zb = ws.buffer("z", (K, D, ws.chunk))
    mu = means.unsqueeze(-1)  # (K, D, 1)
    for a, b in ws.chunks(ws.chunk):
        n = b - a
        r = ws.RT[components, a:b]  # (K, n)
        Z = torch.sub(ws.XT[:, a:b], mu, out=Zb[:, :, :n]).mul_(r.sqrt_().unsqueeze(1))
        S += torch.linalg.vector_norm(Z, dim=-1).square_()  # (K, D)
    return S


def _cov_full(ws, nk, means, reg):
    D = means.shape[1]
    return _scatter_full(ws, means) / nk.reshape(-1, 1, 1) \
        + reg * torch.eye(D, dtype=means.dtype, device=means.device)  # (K, D, D)


def _cov_tied(ws, nk, means, reg):
    D = means.shape[1]
    return (_scatter_full(ws, means).sum(0, keepdim=True) / nk.sum()
            + reg * torch.eye(D, dtype=means.dtype, device=means.device))  # (1, D, D)


def _var_diagonal(ws, nk, means, reg):
    return _scatter_diag(ws, means) / nk.unsqueeze(-1) + reg  # (K, D)


def _var_isotropic(ws, nk, means, reg):
    return _var_diagonal(ws, nk, means, reg).mean(-1, keepdim=True)  # (K, 1)


def _var_shared_isotropic(ws, nk, means, reg):
    D = means.shape[1]
    return (_scatter_diag(ws, means).sum() / (nk.sum() * D) + reg).reshape(1, 1)  # (1, 1)


_COVARIANCE = {"full": _cov_full, "tied": _cov_tied, "diagonal": _var_diagonal,
               "isotropic": _var_isotropic, "shared_isotropic": _var_shared_isotropic}


def _m_step(family, state: _State, ws: _Workspace, reg_covar: float, min_variance: float) -> _State:
    """New parameters from the responsibilities in ``ws.RT``; the covariance is left as it is
    for the ``constant`` family."""
    RT = ws.RT  # (K, N)
    eps = torch.finfo(RT.dtype).eps
    nk = RT.sum(1) + 10 * eps  # (K,)
    means = (RT @ ws.XT.T) / nk.unsqueeze(-1)  # (K, D)
    log_weights = (nk / nk.sum()).log()  # (K,)
    factor = state.factor
    if family.learned:
        floor = math.sqrt(min_variance) if min_variance > 0 else 0.0
        cov = _COVARIANCE[family.name](ws, nk, means, reg_covar)
        if family.kind == "tril":
            L, info = torch.linalg.cholesky_ex(cov)
            if bool((info != 0).any()):
                raise ValueError(_FAIL + _float32_hint(RT))
            if floor > 0:
                torch.diagonal(L, dim1=-2, dim2=-1).clamp_(min=floor)
            factor = L
        else:
            if not bool((cov > 0).all()):
                raise ValueError(_FAIL + _float32_hint(RT))
            factor = cov.sqrt()
            if floor > 0:
                factor = factor.clamp_min(floor)
    return _State(log_weights, means, factor)


def _float32_hint(X):
    return (" The numerical accuracy can also be improved by passing float64 data instead of "
            "float32.") if X.dtype == torch.float32 else ""


def _covariances(family, state: _State) -> torch.Tensor:
    """Covariances (K, D, D) of a state, for snapshots."""
    K, D = state.means.shape
    f = state.factor
    if family.kind == "tril":
        return (f @ f.mT).expand(K, D, D).clone()
    return torch.diag_embed(f.square().expand(K, D))


# ------------------------------------------------------------------------------------------------
# The public function
# ------------------------------------------------------------------------------------------------
def fit_em(model: GaussianMixture, X, *, max_iter: int = 100, tol: float = 1e-3,
           reg_covar: float = 1e-6, n_init: int = 1, init: str | None = "kmeans", generator=None,
           progress: bool | None = None, log_every: int = 0) -> FitHistory:
    """Fit ``model`` to ``X`` by expectation-maximisation (EM), in place.

    Each iteration is scikit-learn's: an E-step that records the mean log-likelihood of the
    current parameters (scikit-learn's ``lower_bound_``), then the closed-form M-step for the
    model's covariance family (see the module docstring). Started from the same parameters, the
    per-iteration log-likelihoods equal ``sklearn.mixture.GaussianMixture``'s ``lower_bounds_``
    to rounding. Works in float32 and float64, on whatever device the model is on.

    Parameters
    ----------
    model : GaussianMixture
        Fitted in place; its dtype and device are used for the computation.
    X : (N, D) array or tensor
    max_iter : int
        Maximum number of EM iterations per run; 0 only initialises (as in scikit-learn, a way
        to get the initial parameters), with no warning.
    tol : float
        Stop once the mean log-likelihood changed by less than ``tol`` between two iterations
        (scikit-learn's criterion). 0 runs all ``max_iter`` iterations.
    reg_covar : float
        Added to the diagonal of every covariance estimate (>= 0); keeps them positive definite.
        It perturbs the exact M-step, so the likelihood is guaranteed never to decrease only
        with ``reg_covar=0``; otherwise it can dip by about ``reg_covar / variance`` nats next
        to a nearly collapsed component (as in scikit-learn).
    n_init : int
        Number of runs from different initialisations; the run with the highest final
        lower bound is kept.
    init : str or None
        ``"kmeans"`` (default, as scikit-learn), ``"kmeans++"`` or ``"random_from_data"``;
        None starts from the model's current parameters (then ``n_init`` must be 1).
    generator : torch.Generator or int, optional
        Randomness for the initialisation.
    progress : bool, optional
        Show a tqdm progress bar; default only when stderr is a terminal.
    log_every : int
        Record a parameter :class:`Snapshot` every ``log_every`` iterations (0: none).

    Returns
    -------
    FitHistory
        Of the kept run: ``loss[i]`` is the mean negative log-likelihood before the i-th M-step
        (``-lower_bounds_[i]`` in scikit-learn's terms) and the last entry is that of the fitted
        model; ``lower_bound`` is scikit-learn's ``lower_bound_``; ``converged``, ``n_iter``.

    Raises
    ------
    ValueError
        On malformed data (wrong shape, NaN/inf, fewer points than components), a negative
        ``max_iter``, a non-positive ``n_init``, a negative ``tol`` or ``reg_covar``, an
        unknown ``init``, or when a covariance estimate stops being positive definite.

    Warns
    -----
    ConvergenceWarning
        (a ``RuntimeWarning``) when the kept run stopped at ``max_iter`` without converging.

    Examples
    --------
    >>> import gmmlib, torch
    >>> X = gmmlib.generate_data(500, 3, 2, seed=0).X
    >>> model = gmmlib.GaussianMixture(3, 2, "full", dtype=torch.float64)
    >>> history = gmmlib.fit_em(model, X, generator=0, progress=False)
    >>> history.converged
    True
    """
    check_model(model)
    max_iter = check_nonnegative_int(max_iter, "max_iter")
    n_init = check_positive_int(n_init, "n_init")
    tol = check_nonnegative(tol, "tol")
    reg_covar = check_nonnegative(reg_covar, "reg_covar")
    log_every = check_nonnegative_int(log_every, "log_every")
    if init is not None and init not in METHODS:
        raise ValueError(f"unknown init {init!r}; choose one of: {', '.join(METHODS)}, or None to "
                         "start from the model's current parameters")
    if init is None and n_init > 1:
        raise ValueError(f"n_init={n_init} runs would all start from the model's current "
                         "parameters (init=None); pass n_init=1 or a random init such as 'kmeans'")
    X = as_data(X, n_features=model.n_features, dtype=model.loc.dtype, device=model.loc.device,
                min_rows=model.n_components)
    return _fit(model, X, max_iter, tol, reg_covar, n_init, init, generator, progress, log_every)


def _fit(model, X, max_iter, tol, reg_covar, n_init, init, generator, progress, log_every,
         override=None, previous=-math.inf) -> FitHistory:
    """fit_em after validation; ``override(model)``, when given, runs after each initialisation;
    ``previous`` is the lower bound the first iteration's gain is measured from (a warm start's)."""
    g = make_generator(generator, device=X.device if X.device.type == "cuda" else "cpu") \
        if init is not None else None
    family, K = model.family, model.n_components
    shift = _shift(X)  # (D,)
    ws = _Workspace(X, K, shift, family)
    show = sys.stderr.isatty() if progress is None else bool(progress)

    best = None  # (lower_bound, state, history)
    for run in range(n_init):
        if init is not None:
            initialize(model, X, init, g, reg_covar=reg_covar)
        if override is not None:
            override(model)
        state, history = _run(model, family, ws, max_iter, tol, reg_covar, show, log_every, run,
                              previous)
        if best is None or history.lower_bound > best[0] or best[0] == -math.inf:  # as scikit-learn
            best = (history.lower_bound, state, history)
    _, state, history = best
    _write_state(model, state, shift)

    # the loss of the fitted model, from what the model now holds
    final = _read_state(model, shift)
    history.loss.append(float(-_e_step(family, final, ws)) / X.shape[0])
    history.time.append(history.time[-1] if history.time else 0.0)
    if history.snapshots:
        history.snapshots[-1].loss = history.loss[-1]
    if not history.converged and max_iter > 0:
        warnings.warn(f"fit_em: the best of {n_init} run(s) did not converge in max_iter={max_iter} "
                      f"iterations (last change of the mean log-likelihood above tol={tol:g}); "
                      "increase max_iter or tol, or check for degenerate data.",
                      ConvergenceWarning, stacklevel=3)
    return history


def _shift(X: torch.Tensor) -> torch.Tensor:
    """The point EM centres the data on: their mean, in their dtype (any point would do, EM being
    translation-equivariant; the mean keeps the products well conditioned)."""
    return X.mean(0)  # (D,)


def _run(model, family, ws, max_iter, tol, reg_covar, show, log_every, run, previous=-math.inf):
    """One EM run from the model's current parameters; returns the final state and history."""
    N, shift = ws.N, ws.shift
    state = _read_state(model, shift)
    history = FitHistory(method="em")
    bar = None
    if show:
        from tqdm.auto import tqdm
        bar = tqdm(total=max_iter, desc=f"fit_em run {run + 1}", unit="it", leave=True)
    lower_bound = previous
    start = time.perf_counter()
    for it in range(1, max_iter + 1):
        previous = lower_bound
        lower_bound = float(_e_step(family, state, ws, resp=True)) / N
        if not math.isfinite(lower_bound):
            raise ValueError(f"fit_em: the log-likelihood became {lower_bound} at iteration {it}; "
                             "scale the data, increase reg_covar, or use float64")
        history.loss.append(-lower_bound)
        history.time.append(time.perf_counter() - start)
        if log_every and (it - 1) % log_every == 0:
            history.snapshots.append(_snapshot(family, state, shift, it - 1, -lower_bound))
        state = _m_step(family, state, ws, reg_covar, model.min_variance)
        history.n_iter = it
        if bar is not None:
            bar.update(1)
            bar.set_postfix(nll=f"{-lower_bound:.5f}")
        if abs(lower_bound - previous) < tol:
            history.converged = True
            break
    if bar is not None:
        bar.close()
    history.lower_bound = lower_bound
    if log_every:
        # the final parameters, whose loss fit_em computes after choosing the run
        history.snapshots.append(_snapshot(family, state, shift, history.n_iter, float("nan")))
    return state, history


def _snapshot(family, state, shift, step, loss) -> Snapshot:
    return Snapshot(step, state.log_weights.exp().cpu().numpy(), (state.means + shift).cpu().numpy(),
                    _covariances(family, state).cpu().numpy(), float(loss))


# ------------------------------------------------------------------------------------------------
# scikit-learn's face
# ------------------------------------------------------------------------------------------------
_SKLEARN_INIT = {"kmeans": "kmeans", "k-means++": "kmeans++", "kmeans++": "kmeans++",
                 "random_from_data": "random_from_data"}


class GaussianMixtureEM:
    """A Gaussian mixture fitted by EM, with scikit-learn's ``GaussianMixture`` interface.

    A drop-in for ``sklearn.mixture.GaussianMixture`` (same parameter names, methods and fitted
    attributes, in the same shapes), computed by :func:`fit_em` in PyTorch; the fitted
    :class:`~gmmlib.GaussianMixture` is ``model_``.

    Parameters
    ----------
    n_components : int
    covariance_type : str
        ``"full"``, ``"tied"``, ``"diag"``, ``"spherical"`` (scikit-learn's names), or gmmlib's
        ``"diagonal"``, ``"isotropic"``, ``"shared_isotropic"``, ``"constant"``.
    tol, reg_covar, max_iter, n_init
        As in :func:`fit_em`.
    init_params : str
        ``"kmeans"``, ``"k-means++"`` or ``"random_from_data"``.
    weights_init, means_init, precisions_init : array-like, optional
        Starting parameters, in scikit-learn's shapes; those given replace the initialisation's.
    random_state : int, numpy or torch generator, optional
        Seeds the initialisation and :meth:`sample` (an int gives the same draws every call,
        as in scikit-learn).
    warm_start : bool
        As in scikit-learn: each :meth:`fit` after the first continues from the fitted
        parameters (``n_init`` and the initialisation are then skipped), and its first
        iteration's gain is measured from the previous ``lower_bound_``. Fitting ``max_iter``
        iterations at a time this way retraces one long fit, iteration for iteration.
    constant_variance : float
        The fixed variance of the ``constant`` family.
    min_variance : float
        The model's variance floor (0, the default, is scikit-learn's behaviour).
    dtype : torch.dtype, optional
        Defaults to float32 for float32 input and float64 otherwise (as scikit-learn).
    device : str or torch.device, optional
        Where to compute; defaults to the device of a tensor ``X``, else the CPU.

    Attributes
    ----------
    weights_ : (K,) ndarray
    means_ : (K, D) ndarray
    covariances_, precisions_, precisions_cholesky_ : ndarray
        Full (K, D, D); tied (D, D); diag (K, D); spherical (K,); shared_isotropic and
        constant: a 0-d array. ``precisions_cholesky_`` is upper triangular, ``Σ⁻¹ = P Pᵀ``.
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean log-likelihood before the last M-step of the best run (scikit-learn's meaning).
    lower_bounds_ : list of float
        The lower bound at each iteration of the best run.
    n_features_in_ : int
    model_ : gmmlib.GaussianMixture
    history_ : FitHistory

    Examples
    --------
    >>> import gmmlib
    >>> X = gmmlib.generate_data(500, 3, 2, seed=0).X.numpy()
    >>> gm = gmmlib.GaussianMixtureEM(3, random_state=0).fit(X)
    >>> gm.means_.shape, gm.predict(X[:4]).shape
    ((3, 2), (4,))
    """

    def __init__(self, n_components: int = 1, *, covariance_type: str = "full", tol: float = 1e-3,
                 reg_covar: float = 1e-6, max_iter: int = 100, n_init: int = 1,
                 init_params: str = "kmeans", weights_init=None, means_init=None,
                 precisions_init=None, random_state=None, warm_start: bool = False,
                 constant_variance: float = 1.0,
                 min_variance: float = 0.0, dtype=None, device=None):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.constant_variance = constant_variance
        self.min_variance = min_variance
        self.dtype = dtype
        self.device = device

    # -- scikit-learn's estimator protocol --------------------------------------------------
    @classmethod
    def _param_names(cls):
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """Constructor parameters, as scikit-learn's ``BaseEstimator.get_params``."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> "GaussianMixtureEM":
        """Set constructor parameters, as scikit-learn's ``BaseEstimator.set_params``."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for GaussianMixtureEM; valid "
                                 f"parameters are: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        default = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = []
        for k, v in self.get_params().items():
            d = default[k]
            same = v is d if isinstance(v, (np.ndarray, torch.Tensor)) or isinstance(d, (np.ndarray, torch.Tensor)) \
                else v == d
            if not same:
                changed.append(f"{k}={v!r}")
        return f"GaussianMixtureEM({', '.join(changed)})"

    # -- helpers ----------------------------------------------------------------------------
    def _seed(self, purpose: str):
        rs = self.random_state
        if rs is None or isinstance(rs, torch.Generator):
            return rs
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            return int(rs)
        if isinstance(rs, (np.random.RandomState, np.random.Generator)):
            return int(rs.integers(2 ** 31) if isinstance(rs, np.random.Generator) else rs.randint(2 ** 31))
        raise ValueError(f"random_state must be None, an int, a numpy RandomState/Generator or a "
                         f"torch.Generator, got {type(rs).__name__} (used for {purpose})")

    def _data(self, X, fitting: bool):
        if fitting:
            dtype = self.dtype
            if isinstance(dtype, str) or (dtype is not None and not isinstance(dtype, torch.dtype)):
                try:  # "float32", np.float32, np.dtype("float64")
                    dtype = torch.from_numpy(np.empty(0, dtype=np.dtype(dtype))).dtype
                except TypeError as exc:
                    raise ValueError(f"dtype must be a floating dtype such as torch.float64 or "
                                     f"'float32', got {self.dtype!r}") from exc
            if dtype is None:
                dtype = float_dtype_like(X)
            device = self.device
            if device is None:
                device = X.device if isinstance(X, torch.Tensor) else "cpu"
            dtype, device = check_dtype_device(dtype, device)
            return as_data(X, dtype=dtype, device=device)
        self._check_fitted()
        m = self.model_
        return as_data(X, n_features=m.n_features, dtype=m.loc.dtype, device=m.loc.device)

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise ValueError("This GaussianMixtureEM instance is not fitted yet; call fit(X) first")

    def _initial_covariances(self, family, K, D, dtype, device):
        """Covariances in scikit-learn's shape from ``precisions_init``."""
        P = torch.as_tensor(np.asarray(self.precisions_init, dtype=float), dtype=dtype, device=device)
        if family.kind == "tril":
            expected = family.sklearn_shape(K, D)
            if tuple(P.shape) != expected:
                raise ValueError(f"precisions_init for covariance_type={self.covariance_type!r} must "
                                 f"have shape {expected}, got {tuple(P.shape)}")
            L = torch.linalg.cholesky_ex(P)
            if bool((L.info != 0).any()):
                raise ValueError("precisions_init must be symmetric positive definite")
            return torch.cholesky_inverse(L.L)
        if not bool((P > 0).all()):
            raise ValueError("precisions_init must be positive")
        return 1.0 / P

    # -- fitting ----------------------------------------------------------------------------
    def _initial_model(self, X, K, D):
        """A new model holding the ``*_init`` parameters given; returns it, those parameters,
        and the initialisation to run (None when every parameter was given)."""
        model = GaussianMixture(K, D, self.covariance_type, constant_variance=self.constant_variance,
                                min_variance=self.min_variance, dtype=X.dtype, device=X.device)
        like = {"dtype": X.dtype, "device": X.device}
        given = {}
        if self.weights_init is not None:
            given["weights"] = torch.as_tensor(np.asarray(self.weights_init, dtype=float), **like)
        if self.means_init is not None:
            given["means"] = torch.as_tensor(np.asarray(self.means_init, dtype=float), **like)
        if self.precisions_init is not None and model.family.learned:
            given["covariances"] = self._initial_covariances(model.family, K, D, **like)
        everything = {"weights", "means"} | ({"covariances"} if model.family.learned else set())
        if given:
            model.set_parameters(**given)  # validates shapes early
        init = None if set(given) >= everything else _SKLEARN_INIT[self.init_params]
        return model, given, init

    def _warm_model(self, X, K):
        """``model_``, to continue from, once checked against this call's settings and data."""
        m = self.model_
        was = (m.n_components, m.family.name, m.n_features, m.loc.dtype, m.loc.device)
        now = (K, get_family(self.covariance_type).name, X.shape[1], X.dtype, X.device)
        if was != now:
            names = ("n_components", "covariance_type", "n_features", "dtype", "device")
            diff = "; ".join(f"{n} was {a} and is now {b}" for n, a, b in zip(names, was, now) if a != b)
            raise ValueError(f"warm_start=True continues the previous fit, which no longer "
                             f"matches: {diff}. Set warm_start=False to fit afresh.")
        m.min_variance = check_nonnegative(self.min_variance, "min_variance")
        return m

    def fit(self, X, y=None) -> "GaussianMixtureEM":
        """Fit the mixture to ``X`` (n_samples, n_features) by EM; returns ``self``."""
        K = check_positive_int(self.n_components, "n_components")
        max_iter = check_nonnegative_int(self.max_iter, "max_iter")
        n_init = check_positive_int(self.n_init, "n_init")
        tol = check_nonnegative(self.tol, "tol")
        reg_covar = check_nonnegative(self.reg_covar, "reg_covar")
        if self.init_params not in _SKLEARN_INIT:
            raise ValueError(f"init_params must be one of {', '.join(_SKLEARN_INIT)}, got "
                             f"{self.init_params!r}")
        X = self._data(X, fitting=True)
        if X.shape[0] < max(K, 2):
            raise ValueError(f"X has {X.shape[0]} samples but n_components={K} needs at least "
                             f"{max(K, 2)}; pass more data or use fewer components")
        D = X.shape[1]
        warm = bool(self.warm_start) and hasattr(self, "model_")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            if warm:  # scikit-learn's warm start: one run, from the fitted parameters
                model = self._warm_model(X, K)
                history = _fit(model, X, max_iter, tol, reg_covar, 1, None, None, False, 0,
                               previous=self.lower_bound_)
            else:
                model, given, init = self._initial_model(X, K, D)
                history = _fit(model, X, max_iter, tol, reg_covar, n_init if init else 1, init,
                               self._seed("the initialisation"), False, 0,
                               override=(lambda m: m.set_parameters(**given)) if given and init else None)
        for w in caught:  # re-raise, from here
            warnings.warn(w.message, w.category, stacklevel=2)
        self.model_, self.history_ = model, history
        self._shift = _shift(X)
        self.converged_ = history.converged
        self.n_iter_ = history.n_iter
        self.lower_bound_ = history.lower_bound
        self.lower_bounds_ = [-v for v in history.loss[:history.n_iter]]
        self.n_features_in_ = D
        self._set_fitted_attributes()
        return self

    @torch.no_grad()
    def _set_fitted_attributes(self):
        m = self.model_
        fam, K, D = m.family, m.n_components, m.n_features
        self.weights_ = m.weights.cpu().numpy()
        self.means_ = m.means.cpu().numpy()
        self.covariances_ = fam.to_sklearn(m.covariances).cpu().numpy()
        f = m.factor().detach()
        if fam.kind == "tril":
            eye = torch.eye(D, dtype=f.dtype, device=f.device).expand_as(f)
            P = torch.linalg.solve_triangular(f, eye, upper=False).mT  # (K', D, D), upper
            prec = P @ P.mT
            P, prec = (P, prec) if fam.per_component else (P[0], prec[0])
        else:
            P = 1.0 / f.expand(fam.raw_shape(K, D))  # (K', D')
            if not fam.per_feature:
                P = P[:, 0] if fam.per_component else P[0, 0]
            prec = P.square()
        self.precisions_cholesky_ = P.cpu().numpy()
        self.precisions_ = prec.cpu().numpy()

    def fit_predict(self, X, y=None) -> np.ndarray:
        """``fit(X).predict(X)``: the component of each training point after fitting."""
        return self.fit(X).predict(X)

    # -- evaluation (the E-step's fast path) ------------------------------------------------
    def _estep(self, X, *, resp=False, log_prob=False):
        X = self._data(X, fitting=False)
        m = self.model_
        ws = _Workspace(X, m.n_components, self._shift, m.family)
        lp = torch.empty(X.shape[0], dtype=X.dtype, device=X.device) if log_prob else None
        _e_step(m.family, _read_state(m, self._shift), ws, resp=resp, log_prob=lp)
        return ws, lp

    def score_samples(self, X) -> np.ndarray:
        """log p(x_n) of each sample, (n_samples,)."""
        return self._estep(X, log_prob=True)[1].cpu().numpy()

    def score(self, X, y=None) -> float:
        """Mean log-likelihood of ``X`` (scikit-learn's sign: higher is better)."""
        return float(self.score_samples(X).mean())

    def predict_proba(self, X) -> np.ndarray:
        """Responsibilities p(k | x_n), (n_samples, n_components)."""
        return self._estep(X, resp=True)[0].RT.T.cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """The most responsible component of each sample, (n_samples,) int64."""
        return self._estep(X, resp=True)[0].RT.argmax(0).cpu().numpy()

    def _n_parameters(self) -> int:
        self._check_fitted()
        return self.model_.n_parameters()

    def bic(self, X) -> float:
        """Bayesian information criterion on ``X`` (lower is better)."""
        lp = self.score_samples(X)
        return float(-2.0 * lp.sum() + self._n_parameters() * math.log(lp.shape[0]))

    def aic(self, X) -> float:
        """Akaike information criterion on ``X`` (lower is better)."""
        return float(-2.0 * self.score_samples(X).sum() + 2 * self._n_parameters())

    def sample(self, n_samples: int = 1):
        """Draw ``n_samples`` points; returns ``(X, y)``: (n, D) ndarray and (n,) labels,
        grouped by component as scikit-learn returns them."""
        self._check_fitted()
        n = check_positive_int(n_samples, "n_samples")
        seed = self._seed("sample")
        g = make_generator(seed, device="cpu") if not isinstance(seed, torch.Generator) else seed
        Xs, labels = self.model_.sample(n, generator=g, return_labels=True)
        order = torch.argsort(labels, stable=True)
        return Xs[order].cpu().numpy(), labels[order].cpu().numpy()
