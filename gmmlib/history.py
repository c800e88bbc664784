"""What a fit returns: the loss per step, timings, resets and optional parameter snapshots."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["FitHistory", "Snapshot"]


# eq=False: identity equality, as for most objects; the generated == would compare the NumPy
# fields as a tuple and raise ("the truth value of an array ... is ambiguous")
@dataclass(eq=False)
class Snapshot:
    """The model's parameters after ``step`` steps (NumPy copies, for plotting)."""
    step: int
    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, D)
    covariances: np.ndarray  # (K, D, D)
    loss: float


@dataclass(eq=False)  # identity equality, as Snapshot's
class FitHistory:
    """Record of a fit by :func:`gmmlib.fit_gd`, :func:`gmmlib.fit_em` or :func:`gmmlib.fit_mdn`.

    Attributes
    ----------
    loss : list of float
        Mean negative log-likelihood of the training data at each step (before the update).
    time : list of float
        Seconds since the fit started, at each recorded loss.
    resets : list of (step, component)
        Components the singularity guard reset, and when.
    snapshots : list of Snapshot
        Parameters every ``log_every`` steps (empty when ``log_every`` is 0).
    converged : bool
        Whether a stopping tolerance was met (always False for a fixed-length fit without ``tol``).
    diverged : bool
        Whether the fit stopped on a non-finite value: the loss, its gradient, the parameters
        or (:func:`~gmmlib.fit_gd`) the prior's log-prior; the model then holds the last
        finite parameters.
    n_iter : int
        Steps the model holds: those taken, less the one undone when a diverged fit put back
        the parameters from before it.
    lower_bound : float
        :func:`~gmmlib.fit_em`: scikit-learn's ``lower_bound_``, the mean log-likelihood at the
        kept run's last E-step (before its last M-step). :func:`~gmmlib.fit_gd`:
        ``-final_loss``, minus the fitted model's full-data mean NLL (after a divergence, minus
        the last finite step's loss, a minibatch's with minibatches). NaN for
        :func:`~gmmlib.fit_mdn`.
    method : str
        The fit that made it: ``"em"``, ``"gd"`` or ``"mdn"``.
    restarts : list of float
        :func:`~gmmlib.fit_em`: each of the ``n_init`` runs' final ``-lower_bound`` (the mean NLL
        at its last E-step, which the fit compares to keep the best run), in the order run;
        empty for gradient descent.
    epoch_loss : list of float
        :func:`~gmmlib.fit_gd`: the full-data mean NLL after each epoch, whenever ``epochs``
        is given (always over a stream).
    elapsed : float or None
        Seconds the whole call to the fit took, from entry to return: validation,
        initialisation and every run included (``time`` starts later, with the kept run's
        first step). None in a history not made by a fit.
    """
    loss: list = field(default_factory=list)
    time: list = field(default_factory=list)
    resets: list = field(default_factory=list)
    snapshots: list = field(default_factory=list)
    converged: bool = False
    diverged: bool = False
    n_iter: int = 0
    lower_bound: float = float("nan")
    method: str = ""
    restarts: list = field(default_factory=list)
    epoch_loss: list = field(default_factory=list)
    elapsed: float | None = None

    @property
    def final_loss(self) -> float:
        """The last recorded loss (mean NLL)."""
        return self.loss[-1] if self.loss else float("nan")

    def steps_to(self, target: float, gap: float = 1e-3) -> int | None:
        """The first step whose loss is within ``gap`` of ``target`` (``loss - target < gap``),
        e.g. of the optimum; None if the fit never got there."""
        for step, value in enumerate(self.loss):
            if value - target < gap:
                return step
        return None

    @property
    def seconds_per_step(self) -> float:
        """Mean wall-clock seconds per step, the first step excluded.

        ``time[i]`` is recorded when step ``i``'s loss is known, so consecutive entries are one
        whole step apart (for EM an M-step and the next E-step; for gradient descent a backward
        pass, an optimiser step and the next forward pass). The mean is taken over the gaps
        between the ``n_iter`` steps' records, ``(time[n_iter - 1] - time[0]) / (n_iter - 1)``:
        the first step, which also pays for warming up (allocations, caches), and the final
        evaluation after the last step are left out. NaN with fewer than two steps.

        Examples
        --------
        >>> FitHistory(time=[0.5, 1.5, 2.5, 3.5, 3.6], n_iter=4).seconds_per_step
        1.0
        """
        t = self.time[:min(self.n_iter, len(self.time))]
        return (t[-1] - t[0]) / (len(t) - 1) if len(t) >= 2 else float("nan")

    @property
    def wall_time(self) -> float:
        """Total seconds the fit took, ``elapsed``; for a history not made by a fit (no
        ``elapsed``), the last recorded ``time``.

        Examples
        --------
        >>> FitHistory(time=[0.5, 1.5, 2.5]).wall_time
        2.5
        """
        if self.elapsed is not None:
            return self.elapsed
        return self.time[-1] if self.time else 0.0
