"""Fitting across processes with ``torch.distributed``: what the fits need from it, nothing more.

Every rank holds its own shard of the data. EM all-reduces its per-pass sums
(:class:`~gmmlib.moments.Moments`, one flat float64 tensor per pass), gradient descent its
gradients and losses, so every rank takes the same step and ends with the same parameters,
those of the single-process fit of the union of the shards. Each of those all-reduces also
carries whether the rank's work before it (reading its data) failed, so that a failure on one
rank stops every rank there (:func:`attempt`, :func:`all_reduce_sum_together`) instead of
leaving the others waiting until the backend's timeout. The initialisation is computed once,
on rank 0, from the ranks' gathered samples, and broadcast. The process group is the caller's
(``torch.distributed.init_process_group``, as ``torchrun`` sets up): gloo on CPUs, nccl on GPUs.
"""
from __future__ import annotations

import torch

__all__ = ["resolve_group", "all_reduce_sum", "broadcast_parameters", "gather_rows", "rank",
           "world_size", "agree", "attempt", "Failure", "all_reduce_sum_together", "sum_attempted"]


def resolve_group(distributed, name: str = "distributed"):
    """The process group to reduce over, or None for a single-process fit.

    ``distributed`` is False/None (single process), True (the default group) or a
    ``ProcessGroup``. Raises ``ValueError`` when a group is asked for but none is initialised.
    """
    if distributed is None or distributed is False:
        return None
    import torch.distributed as dist
    if distributed is not True and not (dist.is_available() and isinstance(distributed, dist.ProcessGroup)):
        raise ValueError(f"{name} must be True, False or a torch.distributed ProcessGroup, got "
                         f"{distributed!r}")
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError(f"{name}={distributed!r} needs an initialised torch.distributed process "
                         "group: call torch.distributed.init_process_group('gloo') (or 'nccl' on "
                         "GPUs) in every process first, or launch with torchrun; pass "
                         f"{name}=False for a single-process fit")
    return dist.group.WORLD if distributed is True else distributed


def rank(group) -> int:
    """This process's rank in ``group`` (0 without one)."""
    if group is None:
        return 0
    import torch.distributed as dist
    return dist.get_rank(group)


def world_size(group) -> int:
    """The number of processes in ``group`` (1 without one)."""
    if group is None:
        return 1
    import torch.distributed as dist
    return dist.get_world_size(group)


def _device_for(group, t: torch.Tensor) -> torch.Tensor:
    """nccl reduces CUDA tensors only: move a CPU tensor there (and back by the caller)."""
    import torch.distributed as dist
    if dist.get_backend(group) == "nccl" and t.device.type != "cuda":
        return t.to(torch.device("cuda", torch.cuda.current_device()))
    return t


def all_reduce_sum(t: torch.Tensor, group) -> torch.Tensor:
    """``t`` summed over the ranks of ``group`` (in place when possible; returned)."""
    if group is None:
        return t
    import torch.distributed as dist
    d = _device_for(group, t)
    dist.all_reduce(d, op=dist.ReduceOp.SUM, group=group)
    if d is not t:
        t.copy_(d)
    return t


@torch.no_grad()
def broadcast_parameters(module: torch.nn.Module, group, src: int = 0) -> None:
    """Every parameter and buffer of ``module`` from global rank ``src`` to the others."""
    if group is None:
        return
    import torch.distributed as dist
    for t in list(module.parameters()) + list(module.buffers()):
        d = _device_for(group, t.data)
        dist.broadcast(d, src=src, group=group)
        if d is not t.data:
            t.data.copy_(d)


class Failure:
    """This rank's error, from :func:`attempt`, held until the next collective raises it.

    Raising takes the error out (:meth:`take`): the frames it then passes on its way up hold
    this emptied box, not the error. Had they held the error, each would make a cycle (frame
    -> error -> traceback -> frame) keeping the fit's tensors alive until the interpreter's
    last collection, where gloo's teardown aborted the process in 3 runs of 14 under load
    ("terminate called without an active exception", after every line was printed)."""
    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error

    def __str__(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"

    def take(self) -> BaseException:
        """The error, to raise; the box is empty afterwards."""
        error, self.error = self.error, None
        return error


def attempt(group, fn, *args, **kwargs):
    """This rank's own work between two collectives: ``(fn(*args, **kwargs), None)``, or
    ``(None, Failure(error))`` when it raised, so that the rank still joins the next
    collective, which tells every rank of the failure (:func:`all_reduce_sum_together`).
    Without a group the error is raised at once, as it is."""
    if group is None:
        return fn(*args, **kwargs), None
    try:
        return fn(*args, **kwargs), None
    except Exception as exc:  # any: the other ranks must hear of it whatever it is
        return None, Failure(exc)


def all_reduce_sum_together(t: torch.Tensor, failed, group, what: str) -> torch.Tensor:
    """``t`` summed over the ranks of ``group``, in ONE all-reduce that also carries whether
    each rank's work before it failed (``failed``: its :class:`Failure`, from :func:`attempt`,
    or None).

    A pass over the data can fail on one rank only (its stream yielded other rows than on its
    first pass, its dataset raised a ``RuntimeError`` or an ``OSError`` on a later epoch, ...):
    that rank raised while the others waited in the pass's all-reduce until the backend's
    timeout. Here the failing rank joins the all-reduce (``t`` then holds whatever it summed
    so far: no rank uses it) and every rank raises: the failing rank its own error, the others
    a ``ValueError`` naming it and what it said; ``what`` says where ("during an EM pass").
    Returns the sums as a new tensor (without a group: ``t``, or ``failed`` is raised).
    """
    if group is None:
        if failed is not None:
            raise failed.take()
        return t
    n = world_size(group)
    flags = torch.zeros(n, dtype=t.dtype)
    flags[rank(group)] = float(failed is not None)
    flat = all_reduce_sum(torch.cat([t.reshape(-1), flags.to(t.device)]), group)
    _raise_together(flat[-n:], failed, group, what)
    return flat[:-n].view(t.shape)


def sum_attempted(group, what: str, zero: torch.Tensor, fn, *args) -> torch.Tensor:
    """``fn(*args)``, a tensor, summed over the ranks of ``group``: :func:`attempt` and
    :func:`all_reduce_sum_together` in one. A rank whose ``fn`` failed sends ``zero`` (no rank
    uses the sum then: every rank raises)."""
    value, failed = attempt(group, fn, *args)
    return all_reduce_sum_together(zero if failed is not None else value, failed, group, what)


def _raise_together(flags: torch.Tensor, failed, group, what: str) -> None:
    """Raise on every rank when any of the summed ``flags`` (one per rank) is set: ``failed``
    on the rank it is this rank's error, else a ``ValueError`` naming the failed ranks and
    their errors (gathered now: one more collective, only when a rank failed)."""
    if not bool(flags.any()):
        return
    import torch.distributed as dist
    bad = flags.nonzero().squeeze(-1).tolist()
    said = [None] * world_size(group)
    dist.all_gather_object(said, None if failed is None else str(failed), group=group)
    if failed is not None:
        raise failed.take()
    errors = "; ".join(f"rank {r}: {said[r]}" for r in bad)
    raise ValueError(f"rank(s) {bad} of the process group failed {what} ({errors}); every rank "
                     "stops: see the failing rank's own error and traceback")


def agree(group, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on every rank of ``group``, which then agree on whether it failed.

    An error on one rank (its shard holds NaN, has the wrong width, the caller's dataset
    raised a ``RuntimeError`` or an ``OSError`` while reading, the lead rank's initialisation
    found a singular covariance, ...) would leave the other ranks waiting in the fit's next
    collective until the backend's timeout. Here every rank raises instead: the failing rank
    its own error, the others a ``ValueError`` that names it (see
    :func:`all_reduce_sum_together`, whose one all-reduce here carries only the failures).
    """
    result, failed = attempt(group, fn, *args, **kwargs)
    if group is not None:
        all_reduce_sum_together(torch.zeros(0, dtype=torch.float64), failed, group,
                                "at the start of the fit")
    return result


def same_arguments(group, **arguments) -> None:
    """Raise ``ValueError`` on every rank of ``group`` unless all passed equal ``arguments``
    (plain values: numbers, strings, None).

    Ranks that fit different models (another K or family) or for different lengths would send
    collectives of different sizes or counts, which gloo answers by aborting the process
    (SIGABRT), and ranks given different learning rates would drift apart silently. One
    gather of the arguments at the start names the first that differs instead."""
    if group is None:
        return
    import torch.distributed as dist
    parts = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, arguments, group=group)
    for name, value in arguments.items():
        values = [p[name] for p in parts]
        if any(v != value for v in values):
            raise ValueError(f"the ranks of the process group were given different {name}: "
                             f"{values} (in rank order); every rank must fit the same model "
                             "with the same arguments, only its own shard of the data differing")


def rank_generator(g: torch.Generator | None, group) -> torch.Generator | None:
    """A generator of this rank's own, seeded from ``g``'s seed and the rank, for draws that
    must differ between ranks (a shuffle, a sample of the rank's shard) and must leave ``g``,
    which the ranks share, in step; ``g`` itself without a group (or when it is None)."""
    if g is None or group is None:
        return g
    seed = (g.initial_seed() + 1 + rank(group)) % 2 ** 64
    return torch.Generator(device=g.device).manual_seed(seed)


def sample_over_ranks(sample: torch.Tensor, counts: list, size: int, seed: int,
                      local: torch.Generator, group) -> torch.Tensor:
    """A uniform sample of ``min(size, N)`` rows of the union of the ranks' shards, the same on
    every rank, from each rank's uniform sample ``sample`` of ``min(size, n_rows)`` of its own
    rows; ``counts`` are the ranks' row counts ``n_rows``, in rank order (N in all).

    How many rows each rank gives is one multivariate hypergeometric draw over the ranks' row
    counts, from ``seed`` (the same on every rank); each rank then keeps that many of its
    sample, chosen with its own generator ``local``. A uniform subset of a uniform subset is
    uniform, so every set of rows of the union is equally likely, whatever the shard sizes
    (an even split would over-sample a small shard)."""
    import numpy as np
    take = np.random.default_rng(seed).multivariate_hypergeometric(counts, min(size, sum(counts)))
    mine = int(take[rank(group)])  # <= this rank's sample: at most its rows, at most size
    keep = torch.randperm(sample.shape[0], generator=local, device=local.device)[:mine]
    return gather_rows(sample[keep.sort().values.to(sample.device)], group)


def gather_rows(x: torch.Tensor, group) -> torch.Tensor:
    """The rows ``x`` (n_r, D) of every rank, concatenated in rank order, on every rank."""
    if group is None:
        return x
    import torch.distributed as dist
    parts = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, x.cpu(), group=group)
    return torch.cat(parts).to(x.device)
