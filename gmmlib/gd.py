"""Fitting by gradient descent on the mean negative log-likelihood, with the singularity guard.

This is the seed project's method: two Adam optimisers, one for the mixture logits and one for
the components (means and covariances), each on a cosine learning-rate schedule, made to
converge in a few hundred steps from a k-means++ start. The guard against Bishop's
singularity (PRML §9.2.1) has two parts: the model's variance floor ``min_variance`` and, here,
the reset of a collapsing component to a data point and the data covariance.
"""
from __future__ import annotations

import math
import time
import warnings

import torch

from ._validation import (as_data, check_nonnegative, check_nonnegative_int, check_positive, check_positive_int,
                          checked, optional)
from .history import FitHistory, Snapshot
from .init import _initialize, check_method, check_model, data_covariance, make_generator

__all__ = ["fit_gd", "minibatches", "collapsed_components", "reset_components", "snapshot"]


def snapshot(model, step: int, loss: float) -> Snapshot:
    """The model's current parameters as a :class:`Snapshot`."""
    return Snapshot(step, model.weights.cpu().numpy(), model.means.cpu().numpy(),
                    model.covariances.cpu().numpy(), float(loss))


@torch.no_grad()
def collapsed_components(model, n_samples: int, *, threshold: float) -> torch.Tensor:
    """Indices of components whose free variance fell to ``threshold`` or whose weight is ~0.

    The covariance is ``L Lᵀ + v I`` (variances ``s² + v``) with ``v`` the floor; a component
    is collapsing when any diagonal entry of its free part ``L`` (or any ``s``) has fallen to
    ``sqrt(threshold)`` or below (``fit_gd`` passes the floor itself, so the floor then carries
    at least half of the variance in some direction), or when its weight is below
    ``0.01 / n_samples`` (it explains less than a hundredth of one point).
    """
    K = model.n_components
    if model.family.learned:
        diag = model.family.diagonal(model.family.free_factor(model.raw_scale))  # (K', D')
        small = (diag.reshape(diag.shape[0], -1).amin(-1) <= math.sqrt(threshold)) | ~torch.isfinite(diag).all(-1)
        small = small.expand(K) if small.shape[0] == 1 else small
    else:
        small = torch.zeros(K, dtype=torch.bool, device=model.loc.device)
    return torch.nonzero(small | (model.weights < 0.01 / n_samples)).reshape(-1)


@torch.no_grad()
def reset_components(model, X: torch.Tensor, components, generator: torch.Generator, optimizers=()):
    """Move each listed component to a random data point with the data covariance.

    Its weight is set to the mean weight; Adam's moment estimates for the reset entries are
    cleared so the optimiser does not push them straight back.
    """
    comps = torch.as_tensor(components, dtype=torch.long, device=model.loc.device).reshape(-1)
    if comps.numel() == 0:
        return
    idx = torch.randint(X.shape[0], (comps.numel(),), generator=generator, device=generator.device)
    model.loc[comps] = X[idx.to(X.device)]
    model.logits[comps] = model.logits.mean()
    if model.family.learned:
        K, D = model.n_components, model.n_features
        data_cov = data_covariance(X) + max(model.min_variance, 1e-6) * torch.eye(D, dtype=X.dtype, device=X.device)
        raw = model.family.encode(model.family.project(data_cov.expand(K, D, D), model.weights), K, D,
                                  model.min_variance)
        raw = raw.reshape(model.raw_scale.shape)
        rows = model.family.rows(comps)
        model.raw_scale[rows] = raw[rows]
    reset_rows = {id(model.loc): comps, id(model.logits): comps,
                  id(model.raw_scale): comps if model.family.per_component else None}
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                state = opt.state.get(p, {})
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in state:
                        rows = reset_rows.get(id(p), comps)
                        if rows is None:
                            state[key].zero_()
                        else:
                            state[key][rows] = 0


@torch.no_grad()
def _restore(params, saved) -> None:
    """Copy ``saved`` back into ``params`` (the last parameters whose loss was finite)."""
    for p, good in zip(params, saved):
        p.copy_(good)


def _remedy(guard: bool) -> str:
    return ("Raise min_variance, or lower the learning rates." if guard else
            "Switch the singularity guard on (guard=True) or raise min_variance.")


def minibatches(n: int, batch_size: int, generator: torch.Generator, device="cpu"):
    """Endless index tensors of ``batch_size`` (the last of an epoch may be shorter) that visit
    each of ``n`` points once per epoch, in a fresh random order every epoch."""
    while True:
        order = torch.randperm(n, generator=generator, device=generator.device).to(device)
        yield from order.split(batch_size)


def _check_prior(prior, name: str):
    if not callable(prior):
        raise ValueError(f"{name} must be a function prior(model) -> scalar log-prior, such as "
                         f"gmmlib.RidgePrior(reg_covar, n_samples), got {prior!r}")
    return prior


_FIT_GD = {"model": check_model, "iterations": check_positive_int, "mixture_lr": check_positive,
           "component_lr": check_positive, "log_every": check_nonnegative_int,
           "init": optional(check_method), "tol": optional(check_positive),
           "batch_size": optional(check_positive_int), "min_variance": optional(check_nonnegative),
           "prior": optional(_check_prior)}


class _Optimisers:
    """The seed project's optimiser: one Adam for the mixture logits, one for the components
    (means and learned covariances), each on a cosine schedule that anneals to 0 over
    ``iterations`` steps."""

    def __init__(self, model, iterations: int, mixture_lr: float, component_lr: float):
        components = [p for p in (model.loc, model.raw_scale) if p.requires_grad]
        self.params = [model.logits] + components
        self.optimizers = (torch.optim.Adam([model.logits], lr=mixture_lr),
                           torch.optim.Adam(components, lr=component_lr))
        self.schedules = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=iterations)
                          for o in self.optimizers]

    def zero_grad(self):
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)

    def step(self):
        """One Adam step of both, then one step of both schedules."""
        for o in self.optimizers:
            o.step()
        for s in self.schedules:
            s.step()


def _objective(model, x: torch.Tensor, prior, N: int):
    """The mean NLL of the rows ``x`` and the objective: that NLL minus ``prior(model) / N``."""
    loss = -model._log_prob(x).mean()
    if prior is None:
        return loss, loss
    log_prior = prior(model)
    if not isinstance(log_prior, torch.Tensor) or log_prior.numel() != 1:
        got = tuple(log_prior.shape) if isinstance(log_prior, torch.Tensor) else repr(log_prior)
        raise ValueError(f"prior(model) must return a scalar tensor (the log-prior), got {got}")
    return loss, loss - log_prior.reshape(()) / N


def _stop(history: FitHistory, params, last_good, message: str) -> None:
    """Mark the fit diverged, put back the last finite parameters and warn with ``message``."""
    history.diverged = True
    _restore(params, last_good)
    warnings.warn(f"fit_gd: {message}", RuntimeWarning, stacklevel=3)


def fit_gd(model, X, *, iterations: int = 500, mixture_lr: float = 0.05, component_lr: float = 0.05,
           init: str | None = "kmeans", generator=None, min_variance: float | None = None,
           reset_collapsed: bool = True, guard: bool = True, prior=None, tol: float | None = None,
           batch_size: int | None = None, log_every: int = 0, progress: bool | None = None) -> FitHistory:
    """Fit ``model`` to ``X`` by Adam on the mean negative log-likelihood.

    Parameters
    ----------
    model : GaussianMixture
        Fitted in place.
    X : (N, D) array or tensor
    iterations : int
        Number of optimiser steps (the cosine schedules anneal to zero over them).
    mixture_lr, component_lr : float
        Adam learning rates of the mixture logits and of the means and covariances.
    init : str or None
        ``"kmeans"`` (default: k-means++ seeding refined by Lloyd iterations, as
        scikit-learn's default), ``"k-means++"`` (or ``"kmeans++"``: seeding only),
        ``"random_from_data"`` or ``"random"`` (see :func:`~gmmlib.initialize`); None keeps the
        model's current parameters.
    generator : torch.Generator or int, optional
        Randomness for the initialisation and the resets.
    min_variance : float, optional
        Variance floor to set on the model for the fit (default: keep ``model.min_variance``).
    reset_collapsed : bool
        Reset components that collapse (variance at the floor, or weight ~ 0).
    guard : bool
        False switches the whole singularity guard off: no floor and no resets, so a collapse
        can be watched. The fit still stops at the first non-finite loss and keeps the last
        finite parameters.
    prior : callable, optional
        ``prior(model) -> scalar`` log-prior added to the objective (MAP), divided by N.
    tol : float, optional
        Stop once the loss improved by less than ``tol`` over the last 10 steps (full-batch
        fits only: minibatch losses are too noisy to stop on).
    batch_size : int, optional
        Minibatch gradient descent: each step's loss is the mean NLL of ``batch_size`` points,
        drawn without replacement from a fresh shuffle of the data every epoch (an unbiased
        estimate of the full loss and its gradient). ``iterations`` counts steps, so
        ``iterations * batch_size / N`` passes over the data. None (default) uses all points
        every step. With minibatches ``history.loss`` holds each step's minibatch NLL, and its
        last entry the full-data NLL of the fitted model.
    log_every : int
        Record a parameter :class:`Snapshot` every ``log_every`` steps (0: none).
    progress : bool, optional
        Show a tqdm progress bar; default only when stderr is a terminal.

    Returns
    -------
    FitHistory

    Raises
    ------
    ValueError
        On malformed data, fewer points than components, a non-positive learning rate,
        iteration count or batch size, or ``tol`` given with ``batch_size``.

    Examples
    --------
    >>> import gmmlib, torch
    >>> X = gmmlib.generate_data(500, 3, 2, seed=0).X
    >>> model = gmmlib.GaussianMixture(3, 2, "full", dtype=torch.float64)
    >>> history = gmmlib.fit_gd(model, X, iterations=200, generator=0, progress=False)
    >>> history.n_iter, history.final_loss < history.loss[0]
    (200, True)
    """
    model, iterations, mixture_lr, component_lr, log_every, init, tol, batch_size, min_variance, \
        prior = checked(_FIT_GD, locals()).values()
    if batch_size is not None and tol is not None:
        raise ValueError("tol stops on the change of the loss, which minibatches make noisy; "
                         "with batch_size, choose the number of steps with iterations instead")
    X = as_data(X, n_features=model.n_features, dtype=model.loc.dtype, device=model.loc.device,
                min_rows=model.n_components)
    N = X.shape[0]
    g = make_generator(generator, device=X.device if X.device.type == "cuda" else "cpu")
    if not guard:
        min_variance, reset_collapsed = 0.0, False
    if min_variance is not None:
        model.min_variance = min_variance
    if init is not None:
        _initialize(model, X, init, g, reg_covar=1e-6)
    threshold = model.min_variance if model.min_variance > 0 else \
        1e-12 * float(X.var(0).mean().clamp_min(torch.finfo(X.dtype).tiny))

    opt = _Optimisers(model, iterations, mixture_lr, component_lr)
    history = FitHistory(method="gd")
    from tqdm.auto import tqdm  # disable=None: shown only when stderr is a terminal
    bar = tqdm(total=iterations, desc="fit_gd", unit="step", disable=None if progress is None else not progress)
    # a batch of every point is the full-batch fit: same order, same arithmetic
    batches = None if batch_size is None or batch_size >= N else minibatches(N, batch_size, g, device=X.device)
    last_good = [p.detach().clone() for p in opt.params]  # restored if a step goes non-finite
    start = time.perf_counter()
    for step in range(iterations):
        opt.zero_grad()
        loss, objective = _objective(model, X if batches is None else X[next(batches)], prior, N)
        value = float(loss.detach())
        if not math.isfinite(value) or not math.isfinite(float(objective.detach())):
            _stop(history, opt.params, last_good, f"the loss became {value} at step {step} (a component "
                  "collapsed onto data points, or a prior returned a non-finite value); stopped and "
                  f"kept the last finite parameters. {_remedy(guard)}")
            break
        history.loss.append(value)
        history.time.append(time.perf_counter() - start)
        if log_every and step % log_every == 0:
            history.snapshots.append(snapshot(model, step, value))
        objective.backward()
        if not all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in opt.params):
            _stop(history, (), (), f"the gradient became non-finite at step {step} (a component "
                  "collapsed onto data points); stopped and kept the last finite parameters. "
                  f"{_remedy(guard)}")
            break
        for p, good in zip(opt.params, last_good):
            good.copy_(p.detach())
        opt.step()
        with torch.no_grad():  # one reduction, one sync: NaN/inf anywhere (or a sum near overflow)
            free = model.family.square(model.family.free_factor(model.raw_scale))  # L Lᵀ: finite iff Σ is
            exploded = not math.isfinite(float(free.sum() + model.loc.sum() + model.logits.sum()))
        if exploded:  # steps too long for the data's scale: the covariances overflowed
            _stop(history, opt.params, last_good, f"the parameters overflowed at step {step} (learning "
                  f"rates mixture_lr={mixture_lr:g}, component_lr={component_lr:g} are too large for "
                  "the data's scale); stopped and kept the last finite parameters. Lower the "
                  "learning rates, or standardise X.")
            break
        history.n_iter = step + 1
        if reset_collapsed:
            bad = collapsed_components(model, N, threshold=threshold)
            if bad.numel():
                reset_components(model, X, bad, g, opt.optimizers)
                history.resets.extend((step + 1, int(k)) for k in bad)
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(nll=f"{value:.4f}", refresh=False)
        if tol is not None and step >= 10 and history.loss[-11] - value < tol:
            history.converged = True
            break
    bar.close()
    with torch.no_grad():
        final = float(-model._log_prob(X).mean())
    if math.isfinite(final) and not history.diverged:
        history.loss.append(final)
        history.time.append(time.perf_counter() - start)
        if log_every:
            history.snapshots.append(snapshot(model, history.n_iter, final))
    history.lower_bound = -history.final_loss
    return history
