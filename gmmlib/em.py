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
  ``[P_1ᵀ; …; P_Kᵀ] @ X_chunkᵀ`` with ``P_k`` the upper Cholesky factor of component k's
  precision (``Σ_k⁻¹ = P_k P_kᵀ``), then subtracts ``mu_k P_k``, squares and sums: a (K·D, n)
  temporary, never (N, K, D). Every family's E-step works on (K, n) arrays, points along
  contiguous memory: the log-sum-exp over a few components then runs along rows, and the
  responsibilities reach the sums without a transpose (2.5-7x faster than the (n, K) layout
  for the log-sum-exp, 1.5-3x for a whole pass at (1e6, 2, 8), measured). The tied family,
  with one ``P``, expands the square instead:
  ``|x P|² - 2 (x P)(mu_k P) + |mu_k P|²``, two small products. The diagonal family uses the
  two small products ``x² @ prec`` and ``x @ (mu prec)``, as scikit-learn does; the isotropic
  ones (one variance per component) only the second, plus ``|x|² p_k``, an outer product with
  the rows' squared norms. Every expanded form cancels when a component sits far from the
  data's mean in its own standard deviations (a component collapsed onto an outlier), and the
  full family's product rounds in proportion to the data's size in the component's whitened
  coordinates: a component past its dtype's limit (``_MAX_WHITENED_OFFSET``, or the predicted
  rounding of ``_FULL_TOLERANCE``) takes the same form in float64 (float32 data), or beyond
  float64's the centred form ``(x - mu_k) P_k``, so every E-step and scoring path agrees with
  :meth:`GaussianMixture.log_prob` (scikit-learn uses the expanded forms without this guard
  and was measured 4e4 nats off on such a model).
* One pass per iteration: each block's responsibilities are turned at once into the M-step's
  sums (:class:`~gmmlib.moments.Moments`: ``sum r``, ``sum r (x - c)`` and the scatter about
  centres ``c``, in float64) and dropped, so no (K, N) matrix is ever formed; sums from several
  blocks, a stream's batches or several processes simply add. The full family's sums are
  centred on the current means, a batched product ``Z_kᵀ (r_k ∘ Z_k)`` with ``Z_k = X_block -
  mu_k`` (never ``E[x²] - E[x]²``, which cancels catastrophically in float32); the scatter
  about the new means then differs from them by a rank-one correction. For float64 data with
  D < 2K they are summed about the data's mean instead, one wide product with the rows'
  ``x_i x_j`` (3x faster sums at (1e5, 16, 16); :mod:`gmmlib.moments`), under the guard
  below and the tied family's eigenvalue check. The tied family needs
  only the sum over the components, about the data's mean ``sum_n x xᵀ - sum_k n_k mu_k
  mu_kᵀ`` (scikit-learn's formula, in float64, with ``sum_n x xᵀ`` kept once for in-memory
  data): K times fewer products, 3-7x faster a pass at (1e5, 16..64, 16). Its E-step sums
  the expanded form in float64 whatever the data's dtype, as (D, n) products. Where the
  difference would cost the covariance's smallest eigenvalue more than 1e-9 of itself
  (far-apart clusters of an ill-conditioned covariance), every component is summed again,
  centred.
* The diagonal families' sums are ONE (K, n) x (n, 2D + 1) product, ``r [x; x²; 1]ᵀ``
  (``sum_n r x``, ``sum_n r x²`` and ``sum_n r``), accumulated in float64 whatever the
  data's dtype (the isotropic ones need ``sum_n r |x|²`` for the second moment: one column,
  not D). Measured at (1e5, 64, 16) float32, 2 threads, in one process against the
  per-feature centred sums: 27-30 ms a pass against 39-41 ms (two products then; one product
  into a reused float64 buffer took another 15-25% off the pass). Whatever the family, a
  component whose scatter would lose more than 5 of float64's digits (a narrow component far
  from the data's mean, or a mean that jumped many of its standard deviations) is summed
  again, centred on its new mean, in a second pass for those components only (for tied,
  whose scatter is one sum, all of them). Measured at
  (1e5, 64, 16) against a float64 reference: 5.7e-8 relative in float32 (the centred float32
  sum: 8.3e-7), 1.6e-12 in float64, and 2-4x faster than the centred sum.
* In-memory data are copied once, shifted by their mean (EM is translation-equivariant), which
  keeps the whitening products accurate in float32 for data far from the origin; a stream's
  batches are shifted batch by batch into a new array. The caller's data are never
  written to.
* A component with no responsibility at all (``sum_n r_nk = 0``) keeps a defined update:
  ``n_k`` carries scikit-learn's ``10 eps``, so its mean is the data's mean (scikit-learn's,
  computed in raw coordinates, is the origin), its covariance ``reg_covar`` times the identity
  and its weight ``10 eps / N``.
* Memory beyond the data: the blocks whose responsibilities await summing (about 2^19 values),
  per-block temporaries, O(block x K x D), and the O(K x D²) sums, whatever N is (a stream is
  never held whole; see :mod:`gmmlib.sources`).

Two different things keep the covariances away from singular, and they are not the same:

* ``reg_covar`` is scikit-learn's ridge: ``S + reg I``, every eigenvalue *shifted up* by
  ``reg``, even those far above it. It changes the objective (it is the stationary point of
  :class:`~gmmlib.RidgePrior`), so EM with ``reg_covar > 0`` is not monotone in the likelihood.
* the model's ``min_variance = v`` is a *constraint*: the M-step maximises EM's auxiliary
  function subject to every eigenvalue >= v, whose exact solution clips the estimate's
  eigenvalues below ``v`` to ``v`` and leaves the others alone (per variance, or the mean
  variance, for the axis-aligned families). EM stays monotone, and it climbs the same
  constrained likelihood that :func:`~gmmlib.fit_gd` descends with the same floor. With
  ``reg_covar >= min_variance`` (the defaults) the floor never binds.

The covariance is stored in the model's own parametrisation and the E-step evaluates the
factor the model computes from it, so it always evaluates the density the model will.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import torch

from ._validation import (check_nonnegative, check_nonnegative_int, check_positive_int, checked,
                          optional, user_stacklevel)
from .history import FitHistory, Snapshot
from .init import ILL_DEFINED, _initialize, check_method, check_model, check_start, make_generator
from .mixture import GaussianMixture, unchanged_on_error
from ._threads import fit_threads, mixture_work
from .distributed import (agree, all_reduce_sum, all_reduce_sum_together, attempt,
                          broadcast_parameters, gather_rows, rank, rank_generator, resolve_group,
                          same_arguments, sample_over_ranks, sum_attempted, world_size)
from .moments import COVARIANCE, Moments, Workspace, scatter
from .sources import Source, as_source, survey
from .numerics import LOG_2PI, log_responsibilities, mixture_log_prob

__all__ = ["fit_em"]


_FAIL = (f"{ILL_DEFINED}. Try to decrease the number of components, increase reg_covar, or "
         "scale the input data.")


# ------------------------------------------------------------------------------------------------
# The state EM iterates on: plain tensors, in the model's (the data's) coordinates.
# ------------------------------------------------------------------------------------------------
@dataclass
class _State:
    log_weights: torch.Tensor  # (K,)
    means: torch.Tensor  # (K, D)
    raw: torch.Tensor  # the model's raw scale parameter (see gmmlib.families)
    factor: torch.Tensor  # from raw, as the model computes it: tril: Cholesky factor of the
    #                       covariance (K', D, D); std: standard deviations (K', D')


def _read_state(model: GaussianMixture) -> _State:
    """The model's parameters, as EM's state."""
    with torch.no_grad():
        return _State(model.log_weights.detach().clone(), model.loc.detach().clone(),
                      model.raw_scale.detach().clone(), model.factor().detach().clone())


@torch.no_grad()
def _write_state(model: GaussianMixture, state: _State) -> None:
    """Store ``state`` in the model's unconstrained parameters."""
    model.logits.copy_(state.log_weights)
    model.loc.copy_(state.means)
    if model.family.learned:
        model.raw_scale.copy_(state.raw.reshape(model.raw_scale.shape))


# ------------------------------------------------------------------------------------------------
# E-step
# ------------------------------------------------------------------------------------------------
# How far, in its own standard deviations, a component's mean may sit from the point the data
# are centred on before the expanded forms of the axis-aligned families and tied,
# ``x² p - 2 x mu p + mu² p`` and ``|x P|² - 2 (x P)(mu P) + |mu P|²``, are replaced for that
# component. They subtract terms whose difference is the answer and lose about ``u |mu P|²`` of
# the squared distance (``u`` the unit roundoff), which grows with D at a fixed distance per
# coordinate, so the limit is on the 2-norm of ``mu P`` (measured on the largest coordinate,
# the diagonal form lost 1.5e-4 of the log-density at D = 16 and 64, 14.5 deviations per
# coordinate). In float64 the limit keeps the loss below ~1e-11 of the log-density; in
# float32 the diagonal families lose 5e-5 at 30 (the hypothesis bound is 1e-4) and, once a
# component passes 30, all of them up to float64's 300 take the same expanded form in float64
# (``_EStep.mid``), with the block's float64 columns that the sums read next; tied sums its
# form in float64 whatever the data's dtype. Beyond float64's limit the centred form: a
# component collapsed onto an outlier can sit 1e10 out.
_MAX_WHITENED_OFFSET = {torch.float64: 300.0, torch.float32: 30.0}

# The full family's form ``x P_k - mu_k P_k`` does not cancel a square, but the product ``x P_k``
# rounds about ``u || |x| |P_k| ||`` (absolute values, entry by entry) at the points near mu_k,
# which grows with D and with P_k's conditioning, not just with the offset ``mu_k P_k``: two
# float32 clusters 3 deviations per coordinate from the data's mean, at D = 64 under a random
# correlated covariance, lost 3.5e-5 of the log-density (5x the model's own float32 log_prob)
# and 14.5 deviations lost 2e-4, over the 1e-4 bound, while the benchmark's (1e5, 64, 16) blocks
# lost 2.6e-7. Measured over such cases, the error of the log-density was 2-6 u times that
# norm (``_FULL_ROUNDING`` takes 8). A component takes the form in the data's dtype when the
# predicted error is within ``_FULL_TOLERANCE`` of max(1, |log w_k + log N|) at its own points
# (the bound's measure, 10x inside it), for float32 data the form in float64 from the rows as
# given when that is, and the centred form otherwise.
_FULL_ROUNDING = 8.0
_FULL_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


# From this many features on, the full family's E-step product skips the zero quarter of its
# factors: P_kᵀ is lower triangular, so its top h rows need only x's first h coordinates, a
# (K·h, h) product beside the bottom rows' (K·(D - h), D). Measured best of 5 interleaved, on
# 1 and 2 threads: 1.05-1.11x faster at (1e5, 64, 16) and (3e4, 128, 8) in float32 and
# float64; at (1e5, 32, 16) 0.94-1.07x, so from 48 on. Splitting the M-step's symmetric
# scatter the same way gained nothing consistent (0.9-1.1x at (1e5, 64, 16))
SPLIT_FROM = 48


def split_at(D: int, cuda: bool) -> int | None:
    """Where the full family's E-step product splits its D rows (``SPLIT_FROM``), or None.
    Not on a GPU: measured on CPUs only, and the GPU's tables were taken with one product."""
    return D // 2 if D >= SPLIT_FROM and not cuda else None


class _EStep:
    """What the E-step needs from a state, precomputed once per iteration.

    Each component takes one of three forms: its family's fast form (``near``, all
    components unless listed below: the axis-aligned families' expanded products in the
    data's dtype, the full family's ``x P_k - mu_k P_k`` in the data's dtype, tied's expanded
    form in float64); for float32 data, the same form in float64 (``mid``: the axis-aligned
    families' components up to float64's limit once any passes float32's, the full
    family's whose float32 product is predicted to round beyond its tolerance); and the
    centred form ``(x - mu_k) P_k`` (``far``: beyond float64's limits). The limits keep every
    form within the module's accuracy bound, 1e-4 of max(1, |log p|) in float32 and 1e-9 in
    float64 (``tests/test_fast_paths_accuracy.py``), where the model's own
    :meth:`GaussianMixture.log_prob` also lies; measured, the fast forms stayed within 1-9x
    its float32 error.
    """

    def __init__(self, family, state: _State, shift: torch.Tensor):
        K, D = state.means.shape
        self.K, self.D, self.kind = K, D, family.kind
        mu = state.means - shift  # (K, D), in the workspace's shifted coordinates
        f64 = torch.float64
        if family.kind == "tril":
            L = state.factor  # (K', D, D)
            self.shared = L.shape[0] == 1
            if not self.shared:  # full: P_k in the factor's dtype
                eye = torch.eye(D, dtype=L.dtype, device=L.device).expand_as(L)
                P = torch.linalg.solve_triangular(L, eye, upper=False).mT  # (K, D, D): Σ⁻¹ = P Pᵀ
            else:  # tied: -0.5 |x P - mu_k P|² expanded, summed in float64 whatever
                # the data's dtype (it cancels about u |mu P|², which float32's u made 5e-4 of
                # the log-density at D = 16, 30 deviations out)
                # P from L in float64 too: float32's inverse of an ill-conditioned factor (its
                # covariance's condition 3e5, a floor binding at D = 64) cost 4.4e-4 of log p
                eye64 = torch.eye(D, dtype=f64, device=L.device)
                P64 = torch.linalg.solve_triangular(L[0].to(f64), eye64, upper=False).mT  # (D, D)
                self.PT64 = P64.T.contiguous()  # (D, D)
                self.muP64 = (state.means.to(f64) - shift.to(f64)) @ P64  # (K, D)
                # float32 rows are shifted in float64 (exact) for this form, not read as the
                # workspace's float32 shifted rows: their rounding, u |x - shift|, is what P
                # then magnifies (4.4e-4 of log p at D = 64 under a covariance of condition
                # 3e5; the model's own log_prob: 6e-5)
                self.shift64 = None if L.dtype == f64 else shift.to(f64).unsqueeze(-1)  # (D, 1)
                const = -0.5 * self.muP64.square().sum(-1)  # (K,)
                whitened = self.muP64
            half_logdet = -torch.diagonal(L, dim1=-2, dim2=-1).log().sum(-1)  # (K',) log|P_k|
        else:
            self.shared = False
            std = state.factor.expand(K, D)  # (K, D)
            prec = std.pow(-2)  # (K, D)
            # -0.5 (x - mu)² p = -0.5 x² p + x (mu p) - 0.5 mu² p, summed over features; one
            # variance per component (pooled): -0.5 |x|² p_k, an outer product, not a product
            self.pooled = not family.per_feature
            self.half_prec = -0.5 * (prec[:, :1] if self.pooled else prec)  # (K, 1) or (K, D)
            self.muprec = mu * prec  # (K, D)
            const = -0.5 * (mu.square() * prec).sum(-1)  # (K,)
            half_logdet = -std.log().sum(-1)  # (K,)
            whitened = mu / std  # (K, D)
        self.offset = (half_logdet - 0.5 * D * LOG_2PI).expand(K) + state.log_weights  # (K,)
        # the axis-aligned families, and tied (one P for all), take the expanded form:
        # -0.5 |x P - mu_k P|² = -0.5 |x P|² + (x P) (mu_k P) - 0.5 |mu_k P|², two products
        self.expanded = family.kind == "std" or self.shared
        if self.expanded:
            self.const = (const + self.offset).unsqueeze(-1)  # (K, 1) all but the data's terms
            near, mid, far = self._expanded_forms(state, shift, whitened)
        else:
            near, mid, far = self._full_forms(state, shift, P)
        self.near = None if bool(near.all()) else near.nonzero().squeeze(-1)  # None: all
        self.mid = mid.nonzero().squeeze(-1) if bool(mid.any()) else None
        self.far = far.nonzero().squeeze(-1) if bool(far.any()) else None
        # every component in the float64 form: the E-step keeps its log-densities and
        # responsibilities in float64, which the sums take as they are (no float32 round trip)
        self.wide = (self.expanded and self.far is None and self.mid is not None
                     and len(self.mid) == K)
        if self.near is not None and self.expanded:  # only the near components' products
            self.const = self.const[self.near]
            if not self.shared:
                self.half_prec, self.muprec = self.half_prec[self.near], self.muprec[self.near]
            else:
                self.muP64 = self.muP64[self.near]
        if not self.expanded:  # full: (x P_k - mu_k P_k) of the near components
            k = slice(None) if self.near is None else self.near
            self.muP = torch.einsum("kd,kde->ke", mu[k], P[k])  # (K_near, D)
            self.split = split_at(D, P.is_cuda)
            if self.split is None:
                self.PcatT = P[k].mT.reshape(-1, D)  # (K_near·D, D) = [P_1ᵀ; …; P_Kᵀ]
            else:  # P_kᵀ is lower triangular: its top rows read x[:h] only
                h = self.split
                self.PcatT_top = P[k][:, :h, :h].mT.reshape(-1, h)  # (K_near·h, h)
                self.PcatT_bottom = P[k][:, :, h:].mT.reshape(-1, D)  # (K_near·(D - h), D)
            self.near_offset = self.offset[k].unsqueeze(-1)  # (K_near, 1)
        if self.mid is not None:
            mid = self.mid
            if self.expanded:  # weights of the block's float64 columns [x; x² (or |x|²); 1]
                mu64 = state.means[mid].to(f64) - shift.to(f64)  # (K_mid, D), exact
                prec64 = std[mid].to(f64).pow(-2)  # (K_mid, D)
                # -0.5 (x² p - 2 x mu p + mu² p) + offset, the constant on the column of ones
                self.mid_weights = torch.cat([  # (K_mid, 2D + 1) or (K_mid, D + 2)
                    mu64 * prec64, -0.5 * (prec64[:, :1] if self.pooled else prec64),
                    self.offset[mid].to(f64).unsqueeze(-1)
                    - 0.5 * (mu64.square() * prec64).sum(-1, keepdim=True)], 1)
            else:  # full: x P_k - mu_k P_k in float64, from the rows as given
                P64 = P[mid].to(f64)  # (K_mid, D, D)
                self.mid_PcatT = P64.mT.reshape(-1, D)  # (K_mid·D, D)
                self.mid_muP = torch.einsum("kd,kde->ke", state.means[mid].to(f64), P64)
        if self.far is not None:  # the centred form's parameters, for those components only
            far = self.far
            self.family = family
            self.far_mu = state.means[far].unsqueeze(-1)  # (K", D, 1), unshifted: x - mu is exact
            f = state.factor
            self.far_factor = f.expand(K, *f.shape[1:])[far]  # (K", D, D) or (K", D')
            self.far_log_weights = state.log_weights[far]  # (K",)

    def _expanded_forms(self, state, shift, whitened):
        """``(near, mid, far)`` masks (K,) of the expanded forms, by the 2-norm of each
        component's whitened offset from the shift (see ``_MAX_WHITENED_OFFSET``)."""
        offsets = whitened.norm(dim=-1)  # (K,)
        dt = torch.float64 if self.shared else state.means.dtype
        limit = _MAX_WHITENED_OFFSET[dt]
        mid = torch.zeros_like(offsets, dtype=torch.bool)
        if self.kind == "std" and dt == torch.float32:
            # float32's limit is passed by well separated clusters: up to float64's limit, such
            # components take the same expanded form in float64, at a fraction of the centred
            # form's cost
            wide = _MAX_WHITENED_OFFSET[torch.float64]
            mid = (offsets > limit) & (offsets <= wide)
            limit = wide
            if bool(mid.any()):  # then all of them: the float64 product reads the block's
                # float64 columns [x; x²; 1] that the sums read next anyway, and one product
                # for all K ran 1.1-1.4x faster per iteration at (1e5, 64, 16) on 2 threads
                # (1.0-1.15x on 1) than the float32 products for the rest beside it; with no
                # centred component left, the log-sum-exp runs in float64 too (``wide``)
                mid = offsets <= wide
        far = offsets > limit
        return ~(mid | far), mid, far

    def _full_forms(self, state, shift, P):
        """``(near, mid, far)`` masks (K,) of the full family, by the rounding each form's
        product ``x P_k`` is predicted to cost (see ``_FULL_TOLERANCE``)."""
        dt, f64 = state.means.dtype, torch.float64
        # log w_k + log N at a point one deviation from mu_k per coordinate: the size of the
        # log-densities of component k's own points, which the tolerance is relative to
        allowed = (self.offset - 0.5 * self.D).abs().clamp_min(1.0)  # (K,)

        def rounds(x_mu, dtype):  # (K,) predicted error of the log-density: u || |x| |P_k| ||
            size = torch.einsum("kd,kde->ke", x_mu.abs().to(f64), P.abs().to(f64)).norm(dim=-1)
            return _FULL_ROUNDING * torch.finfo(dtype).eps / 2 * size
        near = rounds(state.means - shift, dt) <= _FULL_TOLERANCE[dt] * allowed
        if dt == f64:
            return near, torch.zeros_like(near), ~near
        wide = rounds(state.means, f64) <= _FULL_TOLERANCE[f64] * allowed  # unshifted rows
        return near, ~near & wide, ~(near | wide)

    def _centred(self, x: torch.Tensor) -> torch.Tensor:
        """``log w_k + log N(x_n | mu_k, Σ_k)`` of the rows ``x`` (n, D), as given (not shifted:
        the shift would round each of x and mu on its own), for the ``far`` components, by the
        model's own log-density (K", n)."""
        diff = x.T.unsqueeze(0) - self.far_mu  # (K", D, n)
        return self.family.log_density(diff, self.far_factor) + self.far_log_weights.unsqueeze(-1)

    def weighted_log_prob(self, ws: Workspace, block, reuse: bool = False) -> torch.Tensor:
        """``log w_k + log N(x_n | mu_k, Σ_k)`` for the rows of a :class:`Block`, (K, n): this
        layout keeps every product's output and the log-sum-exp's reductions over K running
        along contiguous rows (the (n, K) layout's per-row reductions over a few components ran
        2.5-7x slower, measured), and hands the sums their (K, n) responsibilities as they are.
        ``reuse``: the caller is done with the result before the next block, so it may live in
        a buffer of the workspace (see :func:`_e_step`)."""
        xt = block.xt  # (D, n), shifted
        n = xt.shape[1]
        dest = None
        if reuse and (self.wide or (self.near is None and self.expanded and not self.shared)):
            dt = torch.float64 if self.wide else xt.dtype
            dest = ws.buffer("log densities", (self.K * ws.chunk,), dt)[:self.K * n].view(self.K, n)
        if self.wide:  # every component in float64: the log-densities stay in float64
            return torch.mm(self.mid_weights, block.columns(), out=dest)  # (K, n)
        D = self.D
        K = self.K if self.near is None else len(self.near)  # the near components
        if K == 0:
            out = None
        elif self.shared:  # tied: the expanded form in whitened coordinates, in float64
            # (D, n) products: the (n, D) layout ran 1.7x slower in float64 (measured)
            x64 = block.float64() if self.shift64 is None else \
                block.x.T.to(torch.float64) - self.shift64  # (D, n), shifted
            y = self.PT64 @ x64  # (D, n) = (x P)ᵀ
            out = torch.addmm(self.const, self.muP64, y)  # (K, n)
            out.add_(torch.linalg.vecdot(y, y, dim=0), alpha=-0.5)
            out = out.to(xt.dtype)
        elif self.kind == "tril":  # (x P_k - mu_k P_k), every near component in one product
            buf = ws.buffer("estep", (self.K * D * ws.chunk,))[:K * D * n]
            if self.split is None:
                y = torch.mm(self.PcatT, xt, out=buf.view(K * D, n)).view(K, D, n)
                out = y.sub_(self.muP.unsqueeze(-1)).square_().sum(1)
            else:  # the factors' zero upper blocks skipped: a quarter of the product
                h = self.split
                top = torch.mm(self.PcatT_top, xt[:h], out=buf[:K * h * n].view(K * h, n))
                bottom = torch.mm(self.PcatT_bottom, xt, out=buf[K * h * n:].view(-1, n))
                out = top.view(K, h, n).sub_(self.muP[:, :h, None]).square_().sum(1)
                out += bottom.view(K, D - h, n).sub_(self.muP[:, h:, None]).square_().sum(1)
            out = out.mul_(-0.5).add_(self.near_offset)  # (K, n)
        else:  # the expanded form, with the -1/2 and the constant terms in its weights
            out = torch.addmm(self.const, self.muprec, xt, out=dest)  # (K, n)
            if self.pooled:
                out.addr_(self.half_prec[:, 0], block.square_norms().to(out.dtype))
            else:
                square = ws.buffer("squares", (D * ws.chunk,))[:D * n].view(D, n)
                out.addmm_(self.half_prec, torch.square(xt, out=square))
        if self.near is not None:  # every component's row, the near ones' filled in
            near, out = out, torch.empty(self.K, n, dtype=xt.dtype, device=xt.device)
            if near is not None:
                out[self.near] = near
        if self.mid is not None:  # the same form in float64 (float32 data)
            if self.kind == "tril":  # full: the rows as given, (K_mid·D, D) x (D, n)
                x64 = block.x.T.to(torch.float64)  # (D, n), exact
                y = (self.mid_PcatT @ x64).view(-1, D, n).sub_(self.mid_muP.unsqueeze(-1))
                mid = y.square_().sum(1).mul_(-0.5).add_(self.offset[self.mid].unsqueeze(-1))
            else:  # with the columns the sums read next: (K_mid, 2D + 1) x (2D + 1, n)
                mid = self.mid_weights @ block.columns()  # (K_mid, n)
            out[self.mid] = mid.to(out.dtype)
        if self.far is not None:
            out[self.far] = self._centred(block.x)
        return out


# The E-step of the tril families hands its responsibilities to the sums in groups of blocks
# holding about this many (row, component) values, not block by block: alternating the two
# phases on every block ran 1.2-1.6x slower for full at (1e5, 16, 16) (the products' working
# sets evict each other from cache), and groups of ~2^19 values were measured as fast as a
# pass of each phase over all the data. The axis-aligned families gained nothing from it
# (measured at (1e5, 16|64, 16) and (1e6, 2, 8)) and add each block's sums at once, so that the
# E-step and the sums share the block's float64 columns (:meth:`Block.columns`).
_DEFER = 1 << 19


def _e_step(family, state: _State, ws: Workspace, *, moments: Moments | None = None,
            out: list | None = None, resp: bool = False) -> torch.Tensor:
    """One pass over the data: the sum over points of log p(x_n), a float64 0-d tensor (also
    added to ``moments.log_lik``). ``moments``, when given, receives every block's
    responsibility-weighted sums (the M-step's statistics); ``out``, when given, receives per
    block ``log p(x_n)`` (n,) and, with ``resp``, the responsibilities (n, K)."""
    e = _EStep(family, state, ws.shift)
    dt = torch.float64 if e.wide else ws.dtype  # the log-densities' dtype
    total = torch.zeros((), dtype=torch.float64, device=ws.device)
    ones = torch.ones(1, e.K, dtype=dt, device=ws.device)  # (1, K)
    # exp of every term at most ``low`` below its point's largest gives a normal number, and
    # ``floor`` zeroes those terms' responsibilities afterwards (see below)
    tiny = torch.finfo(dt).tiny
    low, floor = math.log(tiny * e.K), 2 * tiny * e.K
    pending, held = [], 0  # blocks whose sums are still to be added, and their size
    defer = _DEFER if family.kind == "tril" else 0
    # a block's log-densities (then responsibilities) are done with before the next block when
    # its sums are added at once and nothing is kept for the caller: they then live in one
    # buffer. A new (K, n) array a block (840 kB at (1e5, 64, 16)) costs its page faults in a
    # process whose allocator hands large blocks out fresh from the OS: a diagonal float32
    # iteration there took 61-82 ms instead of 31-35 (glibc with MALLOC_MMAP_THRESHOLD_ set,
    # and the peers' benchmark process, measured)
    reuse = defer == 0 and out is None
    for block in ws.blocks():
        w = e.weighted_log_prob(ws, block, reuse)  # (K, n)
        # log-sum-exp by hand: exp(w - max) once, for the sum and the responsibilities. exp is
        # fed no term below log(K tiny), tiny the smallest normal number: torch's vectorised
        # exp takes a slow path for results below tiny, and for -inf (measured 5-10x slower
        # over a block where most terms are). Such terms add at most K tiny to a sum >= 1,
        # which changes no digit, and their responsibilities (at most K tiny) are set to
        # exactly 0, so no subnormal number slows the products that follow.
        top = w.amax(0, keepdim=True)  # (1, n)
        # a point no component can have drawn (every log-density -inf, e.g. far out from narrow
        # components) has log p = -inf, as in scikit-learn, not the NaN of -inf - (-inf): such
        # a point is shifted by 0 instead, and its top of -inf is added back to its finite
        # log-sum (one copy a block: ~5x cheaper than masking, measured). Its responsibilities
        # are NaN, as there (a fit stops on the -inf log-likelihood)
        p = w.sub_(top.nan_to_num(neginf=0.0)).clamp_min_(low).exp_()  # (K, n), max 1 a point
        s = ones @ p  # (1, n), >= 1
        lse = s.log().add_(top)  # (1, n)
        total += lse.sum(dtype=torch.float64)
        if moments is not None or resp:
            torch.threshold_(p.div_(s), floor, 0.0)  # (K, n) responsibilities
            if resp:
                p.add_(lse - lse)  # NaN where lse is -inf, else 0
        if moments is not None:
            pending.append((block, p))
            held += p.numel()
            if held >= defer:
                held = 0
                for blk, r in pending:
                    moments.add(blk, r)
                pending.clear()
        if out is not None:
            out.append((lse.squeeze(0).to(ws.dtype), p.T.to(ws.dtype) if resp else None))
    if moments is not None:
        for blk, r in pending:
            moments.add(blk, r)
        moments.log_lik += total
    return total


# ------------------------------------------------------------------------------------------------
# M-step (its arithmetic, shared with initialisation, is in gmmlib.moments)
# ------------------------------------------------------------------------------------------------
def _statistics(family, state: _State, ws: Workspace, group=None) -> Moments:
    """One E-step pass: the M-step's sums under ``state``'s responsibilities, and the
    log-likelihood, summed over the ranks of ``group``. The full family's sums are centred
    on the current means (the M-step's scatter then barely differs from them) unless
    ``ws.triangle`` (float64 or on a GPU, D < 2K), the other families' on the shift (a few
    products per block; see :mod:`gmmlib.moments`)."""
    centred = family.kind == "tril" and family.per_component and not ws.triangle
    centre = (state.means - ws.shift).to(ws.dtype) if centred else None
    return _summed(Moments.of(ws, family, centre), family, state, ws, group)


# what a rank's error says where it happened, on the other ranks
_DURING = "during an EM pass"


def _summed(m: Moments, family, state: _State, ws: Workspace, group) -> Moments:
    """``m`` filled by one E-step pass under ``state``, summed over the ranks of ``group`` (one
    all-reduce). A pass that fails on one rank (its stream changed, its dataset raised) raises
    on every rank, at that all-reduce (:func:`~gmmlib.distributed.all_reduce_sum_together`)."""
    failed = attempt(group, _e_step, family, state, ws, moments=m)[1]
    if group is not None:
        m.load(all_reduce_sum_together(m.vector(), failed, group, _DURING))
    return m


def _m_step(family, state: _State, m: Moments, ws: Workspace, reg_covar: float,
            min_variance: float, group=None) -> _State:
    """New parameters from the E-step's sums ``m``; the covariance is left as it is for the
    ``constant`` family.

    With a floor ``v = min_variance`` the covariance maximises EM's auxiliary function
    subject to every eigenvalue >= v: the estimate's eigenvalues clipped at ``v`` (per
    variance, or of the mean variance, for the axis-aligned families), done by
    :meth:`Family.encode`. That is the exact constrained maximiser, so EM stays monotone
    under the floor (with ``reg_covar = 0``).
    """
    dt = ws.dtype
    # scikit-learn's n_k + 10 eps with float64's eps, the sums' dtype: float32's pulled every
    # mean towards the shift by 10 eps32 / n_k of its offset, 0.024 for 5 points 1e5 out
    # (outside their own cluster of spread 0.01, the variance then 17x too large)
    nk, means = m.means(torch.finfo(torch.float64).eps)  # (K,), (K, D) shifted, float64
    log_weights = (nk / nk.sum()).log().to(dt)  # (K,)
    raw, factor = state.raw, state.factor
    if family.learned:
        def repass(components, centres):
            again = Moments.of(ws, family, centres, components=components)
            return _summed(again, family, state, ws, group)
        cov = COVARIANCE[family.name](scatter(m, means, repass), nk, reg_covar)  # float64
        if not bool(torch.isfinite(cov).all()):
            raise ValueError(_FAIL + _float32_hint(dt))
        # factorised in float64 and the factor then rounded to the data's dtype: rounding the
        # covariance first lost its small eigenvalues (a float32 full fit of nearly collinear
        # features kept 5.9e-6 of an MLE eigenvalue of 1.4e-6, 0.6 nats a point off); without a
        # floor the estimate itself must be positive definite
        raw = family.raw_from_covariance(cov, min_variance,
                                         error=_FAIL + _float32_hint(dt)).to(dt)
        factor = family.factor(raw, min_variance)  # as the model will compute it
    means = (means + ws.shift.to(torch.float64)).to(dt)
    return _State(log_weights, means, raw.reshape(state.raw.shape), factor)


def _float32_hint(dtype):
    return (" The numerical accuracy can also be improved by passing float64 data instead of "
            "float32.") if dtype == torch.float32 else ""


def _covariances(family, state: _State) -> torch.Tensor:
    """Covariances (K, D, D) of a state, for snapshots."""
    L = family.scale_tril(state.factor, *state.means.shape)  # (K, D, D)
    return L @ L.mT


# ------------------------------------------------------------------------------------------------
# The public function
# ------------------------------------------------------------------------------------------------
_FIT_EM = {"model": check_model, "max_iter": check_nonnegative_int, "n_init": check_positive_int,
           "tol": check_nonnegative, "reg_covar": check_nonnegative, "log_every": check_nonnegative_int,
           "init": optional(lambda init, name: check_method(
               init, name, remedy="; or None to start from the model's current parameters")),
           "init_sample": check_positive_int, "distributed": resolve_group}


def fit_em(model: GaussianMixture, X, *, max_iter: int = 100, tol: float = 1e-3,
           reg_covar: float = 1e-6, n_init: int = 1, init: str | None = "kmeans", generator=None,
           progress: bool | None = None, log_every: int = 0, init_sample: int = 100_000,
           distributed=False) -> FitHistory:
    """Fit ``model`` to ``X`` by expectation-maximisation (EM), in place.

    Each iteration is scikit-learn's: an E-step that records the mean log-likelihood of the
    current parameters (scikit-learn's ``lower_bound_``), then the closed-form M-step for the
    model's covariance family (see the module docstring). Started from the same parameters, the
    per-iteration log-likelihoods equal ``sklearn.mixture.GaussianMixture``'s ``lower_bounds_``
    to rounding. Works in float32 and float64, on whatever device the model is on.

    Parameters
    ----------
    model : GaussianMixture
        Fitted in place; its dtype and device are used for the computation. A fit that
        raises leaves it as it was (parameters and floor).
    X : (N, D) array or tensor, or a stream of batches
        A re-iterable source of row batches works as well and gives the same fit to rounding:
        a ``torch.utils.data.DataLoader`` (batches are tensors, or tuples whose first element
        is the data, as a ``TensorDataset`` yields), an ``IterableDataset``, a list of arrays or
        a NumPy ``memmap`` (see :mod:`gmmlib.sources`). EM reads it once per iteration (and
        once before the first, for the mean and the start's sample, and once after the last,
        for the final loss), holding about ``2^19 / K`` rows at a time (the blocks whose
        responsibilities await summing) and O(K x D²) sums: memory does not grow with N.
        Every pass must yield the same rows (in any order).
    max_iter : int
        Maximum number of EM iterations per run; 0 only initialises (as in scikit-learn, a way
        to get the initial parameters), with no warning.
    tol : float
        Stop once the mean log-likelihood changed by less than ``tol`` between two iterations
        (scikit-learn's criterion). 0 runs all ``max_iter`` iterations.
    reg_covar : float
        Added to the diagonal of every covariance estimate (>= 0), as scikit-learn's: a ridge
        that shifts every eigenvalue up. It perturbs the exact M-step, so the likelihood is
        guaranteed never to decrease only with ``reg_covar=0``; otherwise it can dip by about
        ``reg_covar / variance`` nats next to a nearly collapsed component (as in
        scikit-learn). The model's ``min_variance`` is different: a constraint that raises
        only eigenvalues below it, applied as the exact constrained M-step, under which EM
        stays monotone (see the module docstring).
    n_init : int
        Number of runs from different initialisations; the run with the highest final
        lower bound is kept.
    init : str or None
        ``"kmeans"`` (default, as scikit-learn), ``"k-means++"`` (or ``"kmeans++"``),
        ``"random_from_data"`` or ``"random"`` (see :func:`~gmmlib.initialize`); None starts
        from the model's current parameters (then ``n_init`` must be 1).
    generator : torch.Generator or int, optional
        Randomness for the initialisation.
    progress : bool, optional
        Show a tqdm progress bar; default only when stderr is a terminal.
    log_every : int
        Record a parameter :class:`Snapshot` every ``log_every`` iterations (0: none).
    init_sample : int
        The initialisation (k-means and the one-hot M-step) reads at most this many rows: a
        uniform random sample when there are more (every row, in order, when there are fewer;
        scikit-learn reads them all). For a stream it is a reservoir sample drawn in the pass
        that also finds the data's mean; in a distributed fit it is a uniform sample of all
        the processes' rows, whatever their shards' sizes, the same on every process. Measured at (1e6, 8) float32, K = 8: k-means on every row
        took 20-50 s and ~470 MB, on 1e5 rows a few seconds.
    distributed : bool or torch.distributed.ProcessGroup
        True (the default process group) or a group: every process passes its own shard of
        the data; each pass's sums are all-reduced, so every process takes the same steps and
        ends with the parameters of the single-process fit of the union of the shards (to
        rounding). The start is computed once, on rank 0, and broadcast. Needs
        ``torch.distributed.init_process_group`` (``torchrun`` sets it up): gloo on CPUs,
        nccl on GPUs. An error on one process (its stream changed between passes, its dataset
        raised) is raised there and, as a ``ValueError`` naming it, on every other process, at
        the pass's all-reduce (see :mod:`gmmlib.distributed`).

    Returns
    -------
    FitHistory
        Of the kept run: ``loss[i]`` is the mean negative log-likelihood before the i-th M-step
        (``-lower_bounds_[i]`` in scikit-learn's terms) and the last entry is that of the fitted
        model; ``lower_bound`` is scikit-learn's ``lower_bound_``; ``converged``, ``n_iter``.

    Raises
    ------
    ValueError
        On malformed data (wrong shape, NaN/inf, fewer points than components; for a stream,
        naming the batch), a one-shot iterator, a stream whose passes differ, a negative
        ``max_iter``, a non-positive ``n_init``, a negative ``tol`` or ``reg_covar``, an
        unknown ``init``, or when a covariance estimate stops being positive definite.

    Warns
    -----
    gmmlib.exceptions.ConvergenceWarning
        (a subclass of scikit-learn's ``ConvergenceWarning`` and of ``RuntimeWarning``) when the
        kept run stopped at ``max_iter`` without converging.

    Examples
    --------
    >>> import gmmlib, torch
    >>> X = gmmlib.generate_data(500, 3, 2, seed=0).X
    >>> model = gmmlib.GaussianMixture(3, 2, "full", dtype=torch.float64)
    >>> history = gmmlib.fit_em(model, X, generator=0, progress=False)
    >>> history.converged
    True
    """
    called = time.perf_counter()  # history.elapsed: the whole call, validation included
    model, max_iter, n_init, tol, reg_covar, log_every, init, init_sample, group = \
        checked(_FIT_EM, locals()).values()
    same_arguments(group, n_components=model.n_components, n_features=model.n_features,
                   covariance_type=model.family.name, dtype=str(model.loc.dtype),
                   min_variance=model.min_variance, max_iter=max_iter, n_init=n_init, tol=tol,
                   reg_covar=reg_covar, init=init, init_sample=init_sample)
    if init is None and n_init > 1:
        raise ValueError(f"n_init={n_init} runs would all start from the model's current "
                         "parameters (init=None); pass n_init=1 or a random init such as 'kmeans'")
    if init is None:
        check_start(model)
    source = agree(group, as_source, X, n_features=model.n_features, dtype=model.loc.dtype,
                   device=model.loc.device, min_rows=model.n_components if group is None else 1)
    return _fit(model, source, max_iter=max_iter, tol=tol, reg_covar=reg_covar, n_init=n_init,
                init=init, generator=generator, progress=progress, log_every=log_every,
                init_sample=init_sample, group=group, called=called)


@unchanged_on_error
def _fit(model, X, *, max_iter, tol, reg_covar, n_init=1, init=None, generator=None,
         progress=False, log_every=0, override=None, previous=-math.inf, monitor=None,
         init_sample=100_000, group=None, called=None) -> FitHistory:
    """fit_em after validation: ``X`` a validated tensor or a :class:`~gmmlib.sources.Source`.
    ``override(model)``, when given, runs after each initialisation; ``previous`` is the lower
    bound the first iteration's gain is measured from (a warm start's); ``monitor``, when
    given, hears ``start(run)``, ``iteration(it, change)`` and ``end(lower_bound, converged)``
    (the estimator's ``verbose`` printing); ``group`` the process group of a distributed fit;
    ``called`` the ``time.perf_counter()`` the caller was entered at (default: now), which
    ``history.elapsed`` counts from."""
    called = time.perf_counter() if called is None else called
    source = Source.of_tensor(X) if isinstance(X, torch.Tensor) else X  # validated already
    device = model.loc.device
    g = make_generator(generator, device=device if device.type == "cuda" else "cpu") \
        if init is not None else None
    family, K = model.family, model.n_components
    sample, shift, N = _prepare(source, model, init_sample, g, group)
    ws = Workspace(source, K, shift, family)
    lead = rank(group) == 0
    show = None if progress is None else bool(progress)  # None: tqdm shows it on a terminal only
    if not lead:
        show = False

    with fit_threads(mixture_work(family.kind, N // world_size(group), K, model.n_features)):
        history = _fit_runs(model, source, ws, g, sample, N, lead, show, max_iter, tol, reg_covar,
                            n_init, init, log_every, override, previous, monitor, group)
    history.elapsed = time.perf_counter() - called  # preparation, initialisations and all runs
    return history


def _fit_runs(model, source, ws, g, sample, N, lead, show, max_iter, tol, reg_covar, n_init,
              init, log_every, override, previous, monitor, group) -> FitHistory:
    """The ``n_init`` runs of :func:`_fit`, the choice of the best and its final loss."""
    family = model.family
    best = None  # (lower_bound, state, history)
    restarts = []  # each run's final mean NLL
    for run in range(n_init):
        if monitor is not None:
            monitor.start(run)
        if init is not None:  # on the lead rank; the others hear if it failed (else they
            # would wait in the broadcast until the backend's timeout)
            agree(group, _initialize if lead else _nothing, model, sample, init, g, reg_covar)
            broadcast_parameters(model, group)
        if override is not None:
            override(model)
        state, history = _run(model, family, ws, N, max_iter, tol, reg_covar, show, log_every,
                              run, previous, monitor, group)
        if monitor is not None and max_iter > 0:
            monitor.end(history.lower_bound, history.converged)
        restarts.append(-history.lower_bound)
        if best is None or history.lower_bound > best[0] or best[0] == -math.inf:  # as scikit-learn
            best = (history.lower_bound, state, history)
    _, state, history = best
    history.restarts = restarts
    _write_state(model, state)

    # the loss of the fitted model, from what the model now holds
    final = _read_state(model)
    zero = torch.zeros((), dtype=torch.float64, device=ws.device)
    loss = sum_attempted(group, _DURING, zero, _e_step, family, final, ws)
    history.loss.append(float(-loss) / N)
    history.time.append(history.time[-1] if history.time else 0.0)
    if history.snapshots:
        history.snapshots[-1].loss = history.loss[-1]
    if not history.converged and max_iter > 0:
        from .exceptions import ConvergenceWarning  # scikit-learn's base class: imported on use
        # scikit-learn's words first, word for word: warning filters match from the start
        warnings.warn("Best performing initialization did not converge. Try different init "
                      "parameters, or increase max_iter, tol, or check for degenerate data. "
                      f"(fit_em: the best of {n_init} run(s) stopped at max_iter={max_iter} with "
                      f"the mean log-likelihood still changing by more than tol={tol:g}.)",
                      ConvergenceWarning, stacklevel=user_stacklevel())
    return history


def _nothing(*args) -> None:
    """What the ranks other than the lead do while it initialises."""


def _prepare(source, model, init_sample: int, g, group):
    """What a fit needs before its first pass: the rows the initialisation reads (None without
    an initialisation), the point the data are centred on (D,) and the number of points.

    In memory, one process: the data themselves (when there are more than ``init_sample``
    rows, the reservoir sample a stream of the same rows gives, so that a fit over a loader
    starts, and ends, as the fit over the tensor) and their mean. A stream, or several
    processes: one pass (:func:`~gmmlib.sources.survey`) for the mean and a reservoir sample
    of ``init_sample`` rows, over several processes a uniform one of all the ranks' rows
    (:func:`~gmmlib.distributed.sample_over_ranks`), the same on every rank."""
    K = model.n_components
    dt = model.loc.dtype
    if g is not None and init_sample < K:
        raise ValueError(f"init_sample={init_sample} rows cannot initialise {K} components; "
                         f"pass init_sample >= {K}")
    if source.in_memory and group is None:
        X = source.tensor
        sample = X
        if g is not None and X.shape[0] > init_sample:  # (a randperm's sample differed from
            # the stream's: EM over a loader of 120k rows ended 2e-5 nats and 2.5e-3 apart)
            sample = survey(source, init_sample, g, sums=False)[1]
        return sample, _shift(X), X.shape[0]
    # several processes: each rank samples its own shard with its own generator (a shared one
    # would pick the same positions on every rank), then sample_over_ranks draws from those
    local = rank_generator(g, group)
    total, sample = agree(group, survey, source, init_sample, local)
    counts = gather_rows(torch.tensor([[source.n_rows]]), group)[:, 0].tolist()  # rows per rank
    N = sum(counts)
    all_reduce_sum(total, group)
    if N < K:
        raise ValueError(f"{source.name} has {N} sample(s) but a mixture of {K} components needs at "
                         f"least {K} (n_samples={N} should be >= n_components={K}); pass more "
                         "data or use fewer components")
    if sample is not None:
        if group is not None:
            sample = sample_over_ranks(sample, counts, init_sample, g.initial_seed(), local,
                                       group)
        if sample.shape[0] < K:
            raise ValueError(f"init_sample={init_sample} rows cannot initialise {K} components; "
                             f"pass init_sample >= {K}")
    return sample, (total / N).to(dt), N


@torch.no_grad()
def evaluate(model: GaussianMixture, X, *, resp: bool = False):
    """The E-step's fast path as a scorer, for a validated tensor ``X`` (N, D) or a
    :class:`~gmmlib.sources.Source`: returns ``log p(x_n)`` (N,) and, with ``resp``, the
    responsibilities (N, K). In-memory data are centred on their own mean, as in a fit, a
    stream on the mixture's mean ``sum_k w_k mu_k``, so it is read once (any point gives the
    same numbers to rounding, and components far from it take a more accurate form)."""
    if isinstance(X, torch.Tensor):
        if not X.shape[0]:  # no rows, no scores (a stream with none is refused below)
            return X.new_empty(0), (X.new_empty(0, model.n_components) if resp else None)
        fam = model.family
        if fam.kind == "tril" and fam.per_component and X.shape[0] < model.n_features:
            # a few rows under full covariances: the fast path's set-up, every component's
            # inverse factor (K D³ / 3), costs more than the model's own log-density (a
            # triangular solve a row): predict on one row at K = 20, D = 300 took 85 ms
            # against 11 (scikit-learn: 4, from its stored precisions_cholesky_)
            lw = model.log_weights.detach()
            c = model._by_rows(lambda c: c, X).detach()  # (N, K)
            return (mixture_log_prob(lw, c),
                    log_responsibilities(lw, c).exp() if resp else None)
        shift = _shift(X)
    else:
        shift = (model.weights.detach() @ model.loc.detach()).to(model.loc.dtype)  # (D,)
    ws = Workspace(X, model.n_components, shift, model.family)
    out = []
    _e_step(model.family, _read_state(model), ws, out=out, resp=resp)
    if not out:
        raise ValueError(f"{X.name} is empty: it yielded no rows")
    log_prob = torch.cat([lp for lp, _ in out])  # (N,)
    return log_prob, (torch.cat([r for _, r in out]) if resp else None)


def _shift(X: torch.Tensor) -> torch.Tensor:
    """The point EM centres the data on: their mean, in their dtype (any point would do, EM being
    translation-equivariant; the mean keeps the products well conditioned)."""
    return X.mean(0)  # (D,)


def _run(model, family, ws, N, max_iter, tol, reg_covar, show, log_every, run, previous=-math.inf,
         monitor=None, group=None):
    """One EM run from the model's current parameters; returns the final state and history.
    Each iteration is one pass over the data (:func:`_statistics`): its log-likelihood, then
    the M-step from the same pass's sums."""
    state = _read_state(model)
    history = FitHistory(method="em")
    from tqdm.auto import tqdm
    bar = tqdm(total=max_iter, desc=f"fit_em run {run + 1}", unit="it", disable=None if show is None else not show)
    lower_bound = previous
    start = time.perf_counter()
    for it in range(1, max_iter + 1):
        previous = lower_bound
        stats = _statistics(family, state, ws, group)
        lower_bound = float(stats.log_lik) / N
        if not math.isfinite(lower_bound):
            raise ValueError(f"fit_em: the log-likelihood became {lower_bound} at iteration {it}; "
                             "scale the data, increase reg_covar"
                             + (", or use float64" if ws.dtype != torch.float64 else
                                ", or look for points far from all the others"))
        history.loss.append(-lower_bound)
        history.time.append(time.perf_counter() - start)
        if log_every and (it - 1) % log_every == 0:
            history.snapshots.append(_snapshot(family, state, it - 1, -lower_bound))
        state = _m_step(family, state, stats, ws, reg_covar, model.min_variance, group)
        history.n_iter = it
        bar.update(1)
        bar.set_postfix(nll=f"{-lower_bound:.5f}", refresh=False)
        if monitor is not None:
            monitor.iteration(it, lower_bound - previous)
        if abs(lower_bound - previous) < tol:
            history.converged = True
            break
    bar.close()
    history.lower_bound = lower_bound
    if log_every:
        # the final parameters, whose loss fit_em computes after choosing the run
        history.snapshots.append(_snapshot(family, state, history.n_iter, float("nan")))
    return state, history


def _snapshot(family, state, step, loss) -> Snapshot:
    return Snapshot(step, state.log_weights.exp().cpu().numpy(), state.means.cpu().numpy(),
                    _covariances(family, state).cpu().numpy(), float(loss))
