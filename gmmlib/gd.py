"""Fitting by gradient descent on the mean negative log-likelihood, with the singularity guard.

This is the seed project's method: two Adam optimisers, one for the mixture logits and one for
the components (means and covariances), each on a cosine learning-rate schedule, made to
converge in a few hundred steps from a k-means++ start. The guard against Bishop's
singularity (PRML §9.2.1) has two parts: the model's variance floor ``min_variance`` and, here,
the reset of a collapsing component to a data point and the data covariance.

The data are a tensor or an array, or a re-iterable stream of batches (:mod:`gmmlib.sources`:
a ``DataLoader``, an ``IterableDataset``, a list of arrays, a memmap), one optimiser step per
batch. Across processes (:mod:`gmmlib.distributed`) every rank holds a shard and the gradients
are summed over the ranks, so that all take the step of the single-process fit of the union.
"""
from __future__ import annotations

import collections.abc
import math
import time
import warnings
from dataclasses import dataclass

import torch

from ._validation import (check_nonnegative, check_nonnegative_int, check_positive, check_positive_int,
                          checked, optional, user_stacklevel)
from ._threads import fit_threads, mixture_work
from .distributed import (agree, all_reduce_sum_together, attempt, broadcast_parameters,
                          gather_rows, rank_generator, resolve_group, same_arguments,
                          sample_over_ranks, sum_attempted, world_size)
from .history import FitHistory, Snapshot
from .init import (_initialize, check_method, check_model, check_start, data_covariance_as,
                   make_generator)
from .mixture import unchanged_on_error
from .priors import RidgePrior
from .sources import Source, as_source, is_stream, survey

__all__ = ["fit_gd", "minibatches", "collapsed_components", "reset_components", "reset_scale",
           "snapshot"]


def snapshot(model, step: int, loss: float) -> Snapshot:
    """The model's current parameters as a :class:`Snapshot`."""
    return Snapshot(step, model.weights.cpu().numpy(), model.means.cpu().numpy(),
                    model.covariances.cpu().numpy(), float(loss))


@torch.no_grad()
def collapsed_components(model, n_samples: int, *, threshold: float, reset_to=None) -> torch.Tensor:
    """Indices of components whose free variance fell to ``threshold`` or whose weight is ~0.

    The covariance is ``L Lᵀ + v I`` (variances ``s² + v``) with ``v`` the floor; a component
    is collapsing when any diagonal entry of its free part ``L`` (or any ``s``) has fallen to
    ``sqrt(threshold)`` or below (``fit_gd`` passes the floor itself, so the floor then carries
    at least half of the variance in some direction), or when its weight is below
    ``0.01 / n_samples`` (it explains less than a hundredth of one point).

    ``reset_to`` (optional, (K', D') like that diagonal; :func:`fit_gd` passes
    :func:`reset_scale` of its data): what a reset would give each entry. An entry counts only
    where that is above ``2 sqrt(threshold)``, a free variance of 4 floors: where the data
    themselves have no spread (a constant feature, features on a line), a component at the
    floor fits them and a reset cannot lift it (it was reset at every step, onto random
    points), and where they have little (a free variance under 4 floors) a reset would lift it
    so little that the next steps bring it back; such a component is left at the floor.
    """
    K = model.n_components
    if model.family.learned:
        diag = model.family.diagonal(model.family.free_factor(model.raw_scale))  # (K', D')
        low = diag <= math.sqrt(threshold)
        if reset_to is not None:
            low &= reset_to > 2 * math.sqrt(threshold)
        small = low.reshape(diag.shape[0], -1).any(-1) | ~torch.isfinite(diag).all(-1)
        small = small.expand(K) if small.shape[0] == 1 else small
    else:
        small = torch.zeros(K, dtype=torch.bool, device=model.loc.device)
    return torch.nonzero(small | (model.weights < 0.01 / n_samples)).reshape(-1)


def _reset_raw(model, X: torch.Tensor) -> torch.Tensor:
    """The raw scale parameter every component would take in a reset: the data's covariance,
    floored (the model's shape)."""
    K, D = model.n_components, model.n_features
    data_cov = data_covariance_as(model.family, X, model.weights, max(model.min_variance, 1e-6))
    return model.family.encode(data_cov, K, D, model.min_variance).reshape(model.raw_scale.shape)


@torch.no_grad()
def reset_scale(model, X: torch.Tensor) -> torch.Tensor | None:
    """The diagonal of the free part (see :func:`collapsed_components`) that a reset by
    :func:`reset_components` gives each component, from data ``X``; None for a family whose
    covariance is not learned."""
    if not model.family.learned:
        return None
    return model.family.diagonal(model.family.free_factor(_reset_raw(model, X)))


@torch.no_grad()
def reset_components(model, X: torch.Tensor, components, generator: torch.Generator, optimizers=()):
    """Move each listed component to a random data point with the data covariance.

    Its weight is set to the mean weight ``1 / K`` (the other weights keep their proportions);
    Adam's moment estimates for the reset entries are cleared so the optimiser does not push
    them straight back.
    """
    comps = torch.as_tensor(components, dtype=torch.long, device=model.loc.device).reshape(-1)
    if comps.numel() == 0:
        return
    idx = torch.randint(X.shape[0], (comps.numel(),), generator=generator, device=generator.device)
    model.loc[comps] = X[idx.to(X.device)]
    K, logits = model.n_components, model.logits
    kept = torch.ones(K, dtype=torch.bool, device=logits.device)
    kept[comps] = False
    r = K - int(kept.sum())  # distinct components reset
    # w_c = e^a / (sum_kept e^l + r e^a) = 1 / K  <=>  a = logsumexp(kept) - log(K - r); the
    # mean of the logits (before) gave the geometric mean: 2.9e-8 beside two logits 50 above
    rest = torch.logsumexp(logits[kept], 0) - math.log(K - r) if r < K else None
    logits[comps] = 0.0 if rest is None or not bool(torch.isfinite(rest)) else rest
    if model.family.learned:
        rows = model.family.rows(comps)
        model.raw_scale[rows] = _reset_raw(model, X)[rows]
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
                         f"gmmlib.RidgePrior(reg_covar), got {prior!r}")
    return prior


_FIT_GD = {"model": check_model, "iterations": optional(check_positive_int), "mixture_lr": check_positive,
           "component_lr": check_positive, "log_every": check_nonnegative_int,
           "init": optional(check_method), "tol": optional(check_positive),
           "batch_size": optional(check_positive_int), "min_variance": optional(check_nonnegative),
           "prior": optional(_check_prior), "epochs": optional(check_positive_int),
           "init_sample": check_positive_int, "distributed": resolve_group}


def _check_length(X, stream: bool, iterations, epochs, batch_size, tol) -> None:
    """How long the fit runs: ``iterations`` steps or ``epochs`` passes, never both; a stream
    sets its own batches and needs ``epochs``."""
    if stream:
        if isinstance(X, collections.abc.Iterator):
            raise ValueError(f"X is an iterator ({type(X).__name__}), which can be read only once, but "
                             "fit_gd reads the data once per epoch and once more to measure the loss: "
                             "pass a re-iterable source (a DataLoader, an IterableDataset, a list of "
                             "arrays, a memmap)")
        if epochs is None:
            raise ValueError("X is a stream of batches: pass epochs, the number of passes over it "
                             "(each batch is one optimiser step)")
        if iterations is not None:
            raise ValueError("iterations counts the steps over in-memory data; over a stream each "
                             "batch is one step: choose the length with epochs instead")
        if batch_size is not None:
            raise ValueError("batch_size splits in-memory data; a stream's batches are its own: set "
                             "the batch size on the DataLoader and leave batch_size=None")
        if tol is not None:
            raise ValueError("tol stops on the change of the loss, which minibatches make noisy; "
                             "with a stream, choose the number of passes with epochs instead")
    elif iterations is not None and epochs is not None:
        raise ValueError(f"pass iterations (steps, got {iterations}) or epochs (passes over X, got "
                         f"{epochs}), not both")
    if batch_size is not None and tol is not None:
        raise ValueError("tol stops on the change of the loss, which minibatches make noisy; "
                         "with batch_size, choose the number of steps with iterations instead")


@dataclass
class _Data:
    """The data as the loop reads them, surveyed once and agreed on by every rank."""
    source: Source
    n_rows: int  # N: rows over all ranks
    sample: torch.Tensor  # (n, D) rows to initialise from and reset to, the same on every rank
    per_epoch: int  # steps per pass over this rank's data (the same on every rank with epochs)
    shuffle: torch.Generator  # this rank's: orders its minibatches, draws its sample


class _Counting:
    """``source`` read as it is, counting the batches of the last pass (for :func:`survey`)."""

    def __init__(self, source: Source):
        self.source, self.batches = source, 0

    def __getattr__(self, name):
        return getattr(self.source, name)

    def __iter__(self):
        self.batches = 0
        for x in self.source:
            self.batches += 1
            yield x


def _first_pass(source: Source, K: int, batch_size, epochs, init_sample: int, g: torch.Generator, group) -> _Data:
    """One pass over a stream (none over a tensor): its rows, batches and a uniform sample of
    ``init_sample`` rows over all ranks (an in-memory X of a single process is its own sample)."""
    shuffle = rank_generator(g, group)  # its shuffles leave g, which the ranks share, in step
    if source.in_memory:
        n, sample = source.n_rows, source.tensor
        if group is not None:  # on every rank (a collective): a shard of n <= init_sample
            # rows is its own sample
            sample = agree(group, survey, source, init_sample, shuffle)[1]
        per_epoch = 1 if batch_size is None or batch_size >= n else -(-n // batch_size)
    else:
        counting = _Counting(source)
        sample = agree(group, survey, counting, init_sample, shuffle)[1]
        n, per_epoch = source.n_rows, counting.batches
    N = n
    if group is not None:
        table = gather_rows(torch.tensor([[n, per_epoch]]), group)  # (world, 2): rows, steps per epoch
        N = int(table[:, 0].sum())
        if epochs is not None and bool((table[:, 1] != per_epoch).any()):
            raise ValueError(f"the ranks' data give {table[:, 1].tolist()} steps per epoch, but every "
                             "rank must take the same steps: give each rank as many batches per pass "
                             "(e.g. shards from torch.tensor_split, which differ by at most one row, "
                             "with a batch size that gives each as many batches; DistributedSampler "
                             "evens out the shards by repeating rows, or by dropping them with "
                             "drop_last=True, unless the rows divide evenly over the ranks, and the "
                             "fit is then no longer that of the union), or set the length with "
                             "iterations over in-memory shards")
        sample = sample_over_ranks(sample, table[:, 0].tolist(), init_sample, g.initial_seed(),
                                   shuffle, group)
    if N < K:
        raise ValueError(f"X has {N} sample(s) but a mixture of {K} components needs at least {K} "
                         f"(n_samples={N} should be >= n_components={K}); pass more data or use "
                         "fewer components")
    if sample.shape[0] < K:
        raise ValueError(f"init_sample={init_sample} gave {sample.shape[0]} rows to initialise "
                         f"{K} components from; raise init_sample")
    return _Data(source, N, sample, per_epoch, shuffle)


def _sync_generator(g: torch.Generator, group) -> None:
    """Give ``g`` rank 0's state on every rank (the resets then draw the same points)."""
    if group is not None:
        g.set_state(gather_rows(g.get_state().reshape(1, -1), group)[0].clone())


def _batches(data: _Data, steps: int, epochs, batch_size):
    """``(x, last)`` for each step: the rows of the step, and whether they end an epoch (always
    False without ``epochs``)."""
    source = data.source
    if source.in_memory:
        X, n = source.tensor, source.n_rows
        # a batch of every point is the full-batch fit: same order, same arithmetic
        order = None if batch_size is None or batch_size >= n else \
            minibatches(n, batch_size, data.shuffle, device=X.device)
        for step in range(steps):
            yield (X if order is None else X[next(order)]), epochs is not None and (step + 1) % data.per_epoch == 0
        return
    for epoch in range(epochs):
        it, count = iter(source), 0
        x = next(it, None)
        while x is not None:  # one batch ahead, so the last of the pass is known as such
            ahead = next(it, None)
            count += 1
            if (ahead is None) != (count == data.per_epoch):
                raise ValueError(f"X yielded {'more than ' if ahead is not None else ''}{count} "
                                 f"batches in epoch {epoch + 1} but {data.per_epoch} on the first pass, "
                                 "which counted them: the learning-rate schedule spans epochs x "
                                 "batches, so every pass must yield as many batches (shuffle the "
                                 "rows, keep the batch sizes)")
            yield x, ahead is None
            x = ahead


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


def _objective_backward(model, x: torch.Tensor, prior, N: int, rows=None, world: int = 1):
    """The NLL of the rows ``x`` and the objective, that NLL minus ``prior(model) / N``, both
    detached, after adding their gradient to the parameters' ``.grad``.

    The NLL is the mean, or with ``rows`` (the rows of this step over all ``world`` ranks) the
    sum divided by ``rows``, and the prior is divided by ``N * world``: summed over the ranks,
    both are the single-process values of the union of the ranks' rows. The NLL's backward
    runs chunk by chunk (:meth:`GaussianMixture._nll_backward`), in memory flat in N.
    """
    loss = model._nll_backward(x, x.shape[0] if rows is None else rows)
    if prior is None:
        return loss, loss
    log_prior = prior(model)
    if not isinstance(log_prior, torch.Tensor) or log_prior.numel() != 1:
        got = tuple(log_prior.shape) if isinstance(log_prior, torch.Tensor) else repr(log_prior)
        raise ValueError(f"prior(model) must return a scalar tensor (the log-prior), got {got}")
    term = log_prior.reshape(()) / (N * world)
    if term.requires_grad:
        term.neg().backward()
    return loss, loss - term.detach()


# what a rank's error says where it happened, on the other ranks
_STEP, _PASS = "during a gradient step", "during a full-data loss pass"


def _step_rows(x: torch.Tensor | None, known, group, failed=None):
    """The rows of this step over all ranks: ``known`` (all N, full batch) or summed now; None
    for a single process, whose NLL is a plain mean. ``x`` is None, and ``failed`` this rank's
    error, when reading the step's batch failed: summing the rows then raises on every rank
    (with a full batch, which reads nothing, :func:`_reduce` does)."""
    if group is None:
        return None
    if known is not None:
        return known
    rows = torch.tensor(0.0 if x is None else float(x.shape[0]), dtype=torch.float64,
                        device="cpu" if x is None else x.device)
    return float(all_reduce_sum_together(rows, failed, group, _STEP))


def _backward(model, x, prior, N: int, rows, world: int, group, failed=None):
    """The step's loss and objective (:func:`_objective_backward`, detached) after its backward pass,
    and this rank's error (None if none). When the rank failed earlier in the step
    (``failed``), or fails here, the loss and objective are zeros and the gradients None, for
    :func:`_reduce` to raise on every rank."""
    if failed is None:
        def work():
            with torch.enable_grad():  # a caller's torch.no_grad() made every step a no-op
                return _objective_backward(model, x, prior, N, rows, world)
        done, failed = attempt(group, work)
        if failed is None:
            return (*done, None)
    zero = torch.zeros((), dtype=model.loc.dtype, device=model.loc.device)
    return zero, zero, failed


def _reduce(params, loss, objective, group, failed=None) -> tuple[float, float, bool]:
    """The step's loss and objective, and whether every gradient is finite, after summing the
    gradients, the loss and the objective over the ranks (one all-reduce): every rank then holds
    the same gradients and takes the same step. The same all-reduce carries whether the step
    ``failed`` on any rank, and then every rank raises."""
    if group is None:
        return (float(loss.detach()), float(objective.detach()),
                all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params))
    grads = [torch.zeros_like(p) if p.grad is None or failed is not None else p.grad
             for p in params]
    flat = all_reduce_sum_together(torch.cat([g.reshape(-1) for g in grads]
                                             + [loss.detach().reshape(1),
                                                objective.detach().reshape(1)]),
                                   failed, group, _STEP)
    for p, g in zip(params, flat[:-2].split([p.numel() for p in params])):
        p.grad = g.view_as(p)
    return float(flat[-2]), float(flat[-1]), bool(torch.isfinite(flat[:-2]).all())


@torch.no_grad()
def _full_nll(model, data: _Data, group) -> float:
    """The mean NLL of all the data (over all ranks), read in batches."""
    if data.source.in_memory and group is None:
        return float(-model._log_prob(data.source.tensor).mean())
    zero = torch.zeros((), dtype=torch.float64, device=model.loc.device)
    total = sum_attempted(group, _PASS, zero, _summed_log_prob, model, data.source)
    return -float(total) / data.n_rows


def _summed_log_prob(model, source: Source) -> torch.Tensor:
    """The float64 sum of ``log p(x)`` over this rank's rows, read in batches."""
    total = torch.zeros((), dtype=torch.float64, device=model.loc.device)
    for x in source:
        total += model._log_prob(x).sum(dtype=torch.float64)
    return total


# A full-batch fit without a prior or resets whose final loss is this much (times max(1,
# |start|)) above its first warns: gradient descent that ends worse than its start has failed,
# most often by steps too long for the data's scale (data at 1e-3 went from -16.2 to 7.8e4,
# finite throughout). A reset of a collapsed component may leave the loss above the start by
# design (the guard gives up a likelihood that grows without bound), so it does not warn.
_WORSE = 1e-3


def _stop(history: FitHistory, params, last_good, message: str) -> None:
    """Mark the fit diverged, put back the last finite parameters and warn with ``message``."""
    history.diverged = True
    _restore(params, last_good)
    warnings.warn(f"fit_gd: {message}", RuntimeWarning, stacklevel=user_stacklevel())


@unchanged_on_error
def fit_gd(model, X, *, iterations: int | None = None, mixture_lr: float = 0.05, component_lr: float = 0.05,
           init: str | None = "kmeans", generator=None, min_variance: float | None = None,
           reset_collapsed: bool = True, guard: bool = True, prior=None, tol: float | None = None,
           batch_size: int | None = None, epochs: int | None = None, init_sample: int = 100_000,
           distributed=False, log_every: int = 0, progress: bool | None = None) -> FitHistory:
    """Fit ``model`` to ``X`` by Adam on the mean negative log-likelihood.

    Parameters
    ----------
    model : GaussianMixture
        Fitted in place; a fit that raises leaves it as it was (parameters and floor).
    X : (N, D) array or tensor, or a re-iterable stream of batches
        In memory, or a ``torch.utils.data.DataLoader`` (batches are tensors, or tuples such as
        ``(x, y)`` whose first element is the data), an ``IterableDataset``, a list of arrays or
        a NumPy memmap (read in blocks of 65536 rows). Over a stream each batch is one step,
        ``epochs`` is required, and every pass must yield the same rows in the same number of
        batches (shuffling is fine). A one-shot iterator (a generator) is refused. Never modified.
    iterations : int, optional
        Number of optimiser steps over in-memory data (default 500; the cosine schedules anneal
        to zero over them). Not with a stream, nor with ``epochs``.
    mixture_lr, component_lr : float
        Adam learning rates of the mixture logits and of the means and covariances. Adam moves
        each parameter by about its rate a step whatever the gradient's size, so the means move
        about ``component_lr`` in X's units: the defaults suit data of about unit scale
        (standardise X, or scale the rate with it). A full-batch fit without a prior or resets
        that ends above its starting loss (by 1e-3 of it, at least 1e-3) warns
        (``RuntimeWarning``).
    init : str or None
        ``"kmeans"`` (default: k-means++ seeding refined by Lloyd iterations, as
        scikit-learn's default), ``"k-means++"`` (or ``"kmeans++"``: seeding only),
        ``"random_from_data"`` or ``"random"`` (see :func:`~gmmlib.initialize`); None keeps the
        model's current parameters.
    generator : torch.Generator or int, optional
        Randomness for the initialisation, the resets, the minibatch order and the sample.
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
        Stop, converged, once the loss changed by less than ``tol`` (up or down) over the last
        10 steps (full-batch fits only: minibatch losses are too noisy to stop on).
    batch_size : int, optional
        Minibatch gradient descent over in-memory data: each step's loss is the mean NLL of
        ``batch_size`` points, drawn without replacement from a fresh shuffle of the data every
        epoch (an unbiased estimate of the full loss and its gradient). ``iterations`` counts
        steps, so ``iterations * batch_size / N`` passes over the data. None (default) uses all
        points every step. With minibatches, and over a stream, ``history.loss`` holds each
        step's minibatch NLL, and its last entry the full-data NLL of the fitted model. A stream
        brings its own batches: leave it None.
    epochs : int, optional
        Passes over the data: required with a stream, where it makes ``epochs x batches`` steps
        (the batches are counted on a first pass, which also validates them and draws the
        sample); over in-memory data an alternative to ``iterations`` (``epochs x
        ceil(N / batch_size)`` steps). After each epoch the full-data mean NLL is recorded in
        ``history.epoch_loss``.
    init_sample : int
        Rows to initialise from, and to reset collapsed components to, when ``X`` is a stream
        or a distributed fit's shards: a uniform sample of ``init_sample`` rows (all of them
        when there are fewer) drawn on the first pass, over all the ranks' rows, the same on
        every rank. An in-memory ``X`` of a single process is used whole. Default 100000.
    distributed : bool or ProcessGroup
        True (the default ``torch.distributed`` group) or a ``ProcessGroup``: this process holds
        one shard of the data (a tensor or a stream), and every rank must call ``fit_gd`` with
        the same model and arguments. The gradients, losses and sizes are summed over the ranks,
        so every rank takes the single-process fit's steps on the union of the shards and ends
        with the same parameters. The initialisation and the resets use the ranks' gathered
        samples. With ``epochs``, every rank must have as many batches per epoch. An error on
        one rank (reading a batch, a pass that changed) is raised there and, as a ``ValueError``
        naming it, on every other rank, at the step's or the pass's all-reduce.
    log_every : int
        Record a parameter :class:`Snapshot` every ``log_every`` steps (0: none).
    progress : bool, optional
        Show a tqdm progress bar; default only when stderr is a terminal.

    Returns
    -------
    FitHistory
        ``loss`` per step (global over the ranks), ``epoch_loss`` per epoch when ``epochs`` is
        given.

    Raises
    ------
    ValueError
        On malformed data, fewer points than components, a non-positive learning rate,
        iteration count, epoch count or batch size; ``tol`` given with ``batch_size`` or a
        stream; a stream without ``epochs``, or with ``iterations`` or ``batch_size``; both
        ``iterations`` and ``epochs``; a one-shot iterator; ranks with different numbers of
        batches per epoch; ``distributed`` without an initialised process group.

    Examples
    --------
    >>> import gmmlib, torch
    >>> X = gmmlib.generate_data(500, 3, 2, seed=0).X
    >>> model = gmmlib.GaussianMixture(3, 2, "full", dtype=torch.float64)
    >>> history = gmmlib.fit_gd(model, X, iterations=200, generator=0, progress=False)
    >>> history.n_iter, history.final_loss < history.loss[0]
    (200, True)

    Over a stream of batches, one step per batch:

    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> loader = DataLoader(TensorDataset(X), batch_size=100, shuffle=True)
    >>> history = gmmlib.fit_gd(model, loader, epochs=20, generator=0, progress=False)
    >>> history.n_iter, len(history.epoch_loss), history.final_loss == history.epoch_loss[-1]
    (100, 20, True)
    """
    called = time.perf_counter()  # history.elapsed: the whole call, initialisation included
    model, iterations, mixture_lr, component_lr, log_every, init, tol, batch_size, min_variance, \
        prior, epochs, init_sample, group = checked(_FIT_GD, locals()).values()
    same_arguments(group, n_components=model.n_components, n_features=model.n_features,
                   covariance_type=model.family.name, dtype=str(model.loc.dtype),
                   iterations=iterations, epochs=epochs, tol=tol, batch_size=batch_size,
                   mixture_lr=mixture_lr, component_lr=component_lr, init=init,
                   min_variance=min_variance, model_min_variance=model.min_variance,
                   reset_collapsed=reset_collapsed, guard=guard, init_sample=init_sample)
    _check_length(X, is_stream(X), iterations, epochs, batch_size, tol)
    if init is None:
        check_start(model)
    source = agree(group, as_source, X, n_features=model.n_features, dtype=model.loc.dtype,
                   device=model.loc.device, min_rows=model.n_components if group is None else 1)
    device = model.loc.device
    g = make_generator(generator, device=device if device.type == "cuda" else "cpu")
    if not guard:
        min_variance, reset_collapsed = 0.0, False
    if min_variance is not None:
        model.min_variance = min_variance
    data = _first_pass(source, model.n_components, batch_size, epochs, init_sample, g, group)
    N, world = data.n_rows, world_size(group)
    if isinstance(prior, RidgePrior):  # sized by this fit's N (its own count is checked)
        prior = prior.sized(N)
    if init is not None:  # on every rank (the same error everywhere), then rank 0's wins
        _initialize(model, data.sample, init, g, reg_covar=1e-6)
    broadcast_parameters(model, group)
    _sync_generator(g, group)
    threshold = model.min_variance if model.min_variance > 0 else \
        1e-12 * float(data.sample.var(0, correction=int(data.sample.shape[0] > 1)).mean()  # one row: 0
                      .clamp_min(torch.finfo(data.sample.dtype).tiny))

    # what a reset gives each component (the data's own spread): the guard flags only what a
    # reset can lift (collapsed_components)
    reset_to = reset_scale(model, data.sample) if reset_collapsed else None
    steps = (500 if iterations is None else iterations) if epochs is None else epochs * data.per_epoch
    if not any(p.requires_grad for p in model.parameters()):  # Adam's own error: "empty list"
        raise ValueError("model has no parameter that requires grad (every one was frozen with "
                         "requires_grad_(False)): fit_gd would take no step; unfreeze some")
    opt = _Optimisers(model, steps, mixture_lr, component_lr)
    history = FitHistory(method="gd")
    from tqdm.auto import tqdm  # disable=None: shown only when stderr is a terminal
    bar = tqdm(total=steps, desc="fit_gd", unit="step", disable=None if progress is None else not progress)
    full_batch = source.in_memory and batch_size is None
    last_good = [p.detach().clone() for p in opt.params]  # restored if a step goes non-finite
    measured = False  # whether history.epoch_loss[-1] is the NLL of the current parameters
    rows = -(-N // (world * max(data.per_epoch, 1)))  # per step and rank, for the thread policy
    with fit_threads(mixture_work(model.family.kind, rows, model.n_components, model.n_features)):
        start = time.perf_counter()
        batches = _batches(data, steps, epochs, batch_size)
        for step in range(steps):
            measured = False
            opt.zero_grad()
            # this rank's part of the step: an error in it (reading the batch, ...) is raised on
            # every rank by the step's next all-reduce, which carries it (distributed.attempt)
            got, failed = attempt(group, next, batches)
            x, epoch_end = (None, False) if failed is not None else got
            rows = _step_rows(x, N if full_batch else None, group, failed)
            loss, objective, failed = _backward(model, x, prior, N, rows, world, group, failed)
            value, objective_value, grads_finite = _reduce(opt.params, loss, objective, group, failed)
            if not math.isfinite(value):
                # last_good: the parameters before the previous update (none at step 0)
                history.n_iter = max(step - 1, 0)
                _stop(history, opt.params, last_good, f"the loss became {value} at step {step} (a component "
                      "collapsed onto data points); stopped and kept the last finite parameters. "
                      f"{_remedy(guard)}")
                break
            if not math.isfinite(objective_value):  # the loss is finite: the prior is not
                history.n_iter = max(step - 1, 0)  # last_good, as above
                _stop(history, opt.params, last_good, f"prior returned a non-finite log-prior at step "
                      f"{step} (the objective became {objective_value} with the loss at {value}); "
                      "stopped and kept the last finite parameters. Check prior: it must return a "
                      "finite scalar wherever the parameters go.")
                break
            history.loss.append(value)
            history.time.append(time.perf_counter() - start)
            if log_every and step % log_every == 0:
                history.snapshots.append(snapshot(model, step, value))
            if not grads_finite:
                _stop(history, (), (), f"the gradient became non-finite at step {step} (a component "
                      "collapsed onto data points); stopped and kept the last finite parameters. "
                      f"{_remedy(guard)}")
                break
            for p, good in zip(opt.params, last_good):
                good.copy_(p.detach())
            opt.step()
            with torch.no_grad():  # one reduction, one sync: NaN/inf anywhere (or a sum near overflow)
                free = model.family.square(model.family.free_factor(model.raw_scale))  # L Lᵀ: finite iff Σ is
                logits = model.logits.masked_fill(model.logits == -math.inf, 0.0)  # -inf: weight 0
                exploded = not math.isfinite(float(free.sum() + model.loc.sum() + logits.sum()))
            if exploded:  # steps too long for the data's scale: the covariances overflowed
                _stop(history, opt.params, last_good, f"the parameters overflowed at step {step} (learning "
                      f"rates mixture_lr={mixture_lr:g}, component_lr={component_lr:g} are too large for "
                      "the data's scale); stopped and kept the last finite parameters. Lower the "
                      "learning rates, or standardise X.")
                break
            history.n_iter = step + 1
            if reset_collapsed:  # the same parameters, sample and generator on every rank: the same resets
                bad = collapsed_components(model, N, threshold=threshold, reset_to=reset_to)
                if bad.numel():
                    reset_components(model, data.sample, bad, g, opt.optimizers)
                    history.resets.extend((step + 1, int(k)) for k in bad)
            if epoch_end:
                history.epoch_loss.append(_full_nll(model, data, group))
                measured = True
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(nll=f"{value:.4f}", refresh=False)
            # converged: the loss moved by less than tol, either way (a loss rising by more is
            # not converging, however much less it 'improved')
            if tol is not None and step >= 10 and abs(history.loss[-11] - value) < tol:
                history.converged = True
                break
        bar.close()
        if history.diverged:  # the kept parameters' loss is the last recorded, if any
            final = math.nan if history.loss else _full_nll(model, data, group)
        else:  # the last epoch's NLL when it is the fitted model's (one pass of a stream saved)
            final = history.epoch_loss[-1] if measured else _full_nll(model, data, group)
        if math.isfinite(final):
            history.loss.append(final)
            history.time.append(time.perf_counter() - start)
            if log_every:
                history.snapshots.append(snapshot(model, history.n_iter, final))
            start_loss = history.loss[0]
            if full_batch and prior is None and not history.resets \
                    and final > start_loss + _WORSE * max(1.0, abs(start_loss)):
                warnings.warn(f"fit_gd: the fit ended at a mean NLL of {final:.6g}, above its start's "
                              f"{start_loss:.6g}. Adam moves every parameter about its learning rate a "
                              f"step (mixture_lr={mixture_lr:g}, component_lr={component_lr:g}; the "
                              "means in X's units), too far here: for data far from unit scale, "
                              "standardise X or scale the rates with it; from a start already near "
                              "an optimum (init=None), lower the rates or take more iterations.",
                              RuntimeWarning, stacklevel=user_stacklevel())
        history.lower_bound = -history.final_loss
    history.elapsed = time.perf_counter() - called
    return history
