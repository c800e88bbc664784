"""How many threads one fit uses: one on a small problem, fewer when other work holds the cores.

torch sizes its intra-op (OpenMP) pool once, for an idle machine. On a shared machine that is
wrong: each parallel region waits for its slowest thread, and a thread that shares a core with
another process's job runs at half speed or is descheduled for a whole time slice. Measured on
a 2-core machine (``benchmarks/results/contention.md``): with one busy background process,
gmmlib's EM on 2 threads was 2.6-3.2x slower than on an idle machine, on 1 thread it kept its
idle speed; with two busy processes, 2 threads were 48x slower, 1 thread about 1.5x. And on a
small problem the second thread gains nothing even on an idle machine.

:func:`fit_threads` sets torch's thread count for the duration of one fit and restores it on
exit; :func:`choose_threads` is its policy.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch

__all__ = ["fit_threads", "choose_threads", "MIN_PARALLEL_WORK", "mixture_work"]

#: Work per iteration (floating-point operations, the caller's estimate) below which a fit runs
#: on one thread. Measured with full-covariance and diagonal EM on 2 idle cores (work
#: N*K*D*D and N*K*D): the second thread gained 0-4 % up to 1.2e5 (N=1e4, D=2, K=3), 11-28 % at
#: 3.6e5, 30-60 % from 1.3e6 on; the one point above the threshold that gained under 10 % was
#: N=1e3, D=8, K=8 (5.1e5, +3 %).
MIN_PARALLEL_WORK = 2.5e5


def _allowed_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _running_elsewhere() -> int | None:
    """Runnable tasks on the machine now, other than this process's own threads.

    Linux's ``/proc/loadavg`` fourth field, ``running/total``, counts the runnable tasks at this
    instant, the reader included; this process's own runnable threads (``/proc/self/task``: the
    reader, and torch's OpenMP workers, which spin for a while after each parallel region) are
    subtracted. ``None`` where ``/proc`` cannot be read (macOS, Windows, a sandbox).
    """
    try:
        running = int(_read("/proc/loadavg").split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return None
    if running <= 1:
        return 0  # the one runnable task is this one, reading the file
    own = 0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return running - 1
    for tid in tids:
        try:
            stat = _read(f"/proc/self/task/{tid}/stat")
        except OSError:
            continue  # the thread has ended
        state = stat.rfind(b")") + 2  # the command name may hold spaces and parentheses
        own += stat[state:state + 1] == b"R"
    return max(running - max(own, 1), 0)


def choose_threads(work: float, current: int | None = None) -> int:
    """The thread count :func:`fit_threads` sets: the policy, without setting anything.

    Parameters
    ----------
    work : float
        Floating-point operations of one iteration, roughly: ``N*K*D*D`` for full-covariance
        EM, ``N*K*D`` for the diagonal families.
    current : int, optional
        The count to start from and never exceed; default ``torch.get_num_threads()``.

    Returns
    -------
    int
        ``1`` if ``current`` is 1 or ``work < MIN_PARALLEL_WORK``; otherwise ``current``, capped
        at the cores in the affinity mask, less one for each other runnable task (at least 1).

    Raises
    ------
    ValueError
        If ``work`` is negative or NaN.

    Examples
    --------
    >>> choose_threads(1e3)  # too small for a second thread
    1
    """
    if not work >= 0:
        raise ValueError(f"work must be a non-negative number of flops per iteration, got {work!r}")
    n = torch.get_num_threads() if current is None else current
    if n <= 1 or work < MIN_PARALLEL_WORK:
        return 1
    cores = _allowed_cores()
    others = _running_elsewhere()
    free = cores if others is None else cores - others
    return max(1, min(n, free))


@contextmanager
def fit_threads(work: float):
    """Run the block on the number of torch threads that suits this fit, then restore the count.

    On entry the count becomes :func:`choose_threads` ``(work)``; on exit, normal or by an
    exception, it is set back to what it was. The count is never raised above the one at entry,
    so ``torch.set_num_threads(1)`` before a fit is always obeyed, and a fit nested in another
    keeps the outer fit's choice or fewer.

    The policy, and the measurements behind it (2-core machine, ``bench_contention.py``):

    * **One thread below** ``MIN_PARALLEL_WORK`` (2.5e5 flops per iteration): a second thread
      gained 0-4 % there on an idle machine, and risks the losses below on a busy one.
    * **One thread less per busy core**: the other runnable tasks at this instant
      (``/proc/loadavg``'s ``running`` field, less this process's own threads) are subtracted
      from the cores in ``os.sched_getaffinity``. An instantaneous count, because the load
      average of the last minute counts this process's own previous fits and misses a job that
      started a second ago. On 2 cores with one busy process, 2 threads made EM 2.6-3.2x slower
      than idle and 1 thread kept the idle speed; with two busy processes 2 threads were 48x
      slower, 1 thread about 1.5x; on a machine shared with 4-7 other runnable tasks, 2 threads
      were 7-111x slower than 1. Counting a passing task as busy costs at most the second
      thread's gain (under 1.7x here); missing a busy one costs far more, so one snapshot is
      enough.
    * Where ``/proc`` cannot be read (macOS, Windows), only the first rule applies.

    The snapshot is taken once, at entry: a job that starts during a long fit is not seen.
    Tasks are counted machine-wide, so inside a container limited to fewer cores than the host
    runs tasks on, the count errs towards one thread. torch's thread count is not scoped to one
    Python thread: two fits running at once in different Python threads could undo each other's
    setting.
    Choosing costs about 2 microseconds for small work, 10 on an idle machine and 60-120 on a
    busy one (where this process's threads are read too).

    Parameters
    ----------
    work : float
        Floating-point operations of one iteration, roughly: ``N*K*D*D`` for full-covariance
        EM, ``N*K*D`` for the diagonal families.

    Yields
    ------
    int
        The thread count in force inside the block.

    Raises
    ------
    ValueError
        If ``work`` is negative or NaN.

    Examples
    --------
    >>> before = torch.get_num_threads()
    >>> with fit_threads(100 * 3 * 2 * 2) as n:  # full EM, N=100, K=3, D=2: one thread
    ...     n, torch.get_num_threads()
    (1, 1)
    >>> torch.get_num_threads() == before
    True
    """
    entry = torch.get_num_threads()
    n = choose_threads(work, entry)
    if n == entry:
        yield n
        return
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(entry)


def mixture_work(kind: str, rows: int, K: int, D: int) -> float:
    """The work per iteration that :func:`fit_threads` weighs, as its thresholds were measured:
    ``rows * K * D * D`` for the full-matrix families (``kind == "tril"``), ``rows * K * D``
    for the axis-aligned ones."""
    return float(rows) * K * D * (D if kind == "tril" else 1)
