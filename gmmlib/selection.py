"""Model selection: fit every (covariance family, number of components) on a grid and rank the
fits by BIC, AIC (both as scikit-learn defines them; lower is better), the mean negative
log-likelihood of held-out data, or that of K-fold cross-validation.

This sits beside the fitting functions it calls (:func:`~gmmlib.fit_em`, :func:`~gmmlib.fit_gd`)
and below plotting; it only loops over them and scores the results.
"""
from __future__ import annotations

import functools
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from ._validation import as_data, check_dtype_device, check_positive_int, checked, float_dtype_like
from .em import fit_em
from .families import get_family
from .gd import fit_gd
from .history import FitHistory
from .init import make_generator
from .mixture import GaussianMixture

__all__ = ["select_model", "Selection", "Candidate", "CRITERIA"]

CRITERIA = ("bic", "aic", "heldout", "cv")


@dataclass
class Candidate:
    """One fitted point of the grid; ``score`` is its criterion value (lower is better).

    ``scores`` holds every criterion computed for it: ``"bic"`` and ``"aic"`` always,
    ``"heldout"`` with ``X_val``, and with cross-validation ``"cv"`` (the mean of the N per-point
    held-out NLLs, each point scored once; scikit-learn's ``cross_val_score`` averages fold
    means instead, the same for equal folds) and ``"cv_se"`` (the standard deviation of the
    per-point NLLs over the square root of N); ``cv_nll`` then holds the per-point held-out
    NLLs (N,) themselves, for paired comparisons of two candidates (the standard error of the
    mean of their difference is usually far smaller than either ``cv_se``). Both standard
    errors treat the points as independent, which the folds' shared training data are not:
    no unbiased estimate of cross-validation's variance exists (Bengio and Grandvalet, 2004),
    so read them as a lower bound. ``history.restarts`` lists the fit's ``n_init`` runs.
    """
    covariance_type: str
    n_components: int
    model: GaussianMixture
    history: FitHistory
    score: float
    scores: dict = field(default_factory=dict)
    cv_nll: torch.Tensor | None = None


@dataclass
class Selection:
    """What :func:`select_model` returns: every candidate, in the grid's order, and the best.

    One grid point is looked up by family and number of components: :meth:`candidate` (the
    :class:`Candidate`), :meth:`model` (its fitted mixture) and :meth:`score` (its criterion
    value). Any criterion can be recomputed from the stored models, e.g.
    ``selection.model("full", 3).aic(X)`` on a grid ranked by BIC.
    """
    criterion: str
    candidates: list = field(default_factory=list)

    @property
    def best(self) -> Candidate:
        """The candidate with the lowest score (the first of equals, in grid order)."""
        return min(self.candidates, key=lambda c: c.score)

    def best_by(self, criterion: str) -> Candidate:
        """The candidate lowest in ``scores[criterion]`` (``"bic"``, ``"aic"``, and ``"heldout"``
        or ``"cv"`` where computed), whatever the grid was ranked by."""
        if criterion not in self.candidates[0].scores:
            raise KeyError(f"no {criterion!r} scores in this selection; it holds "
                           f"{sorted(self.candidates[0].scores)}")
        return min(self.candidates, key=lambda c: c.scores[criterion])

    def candidate(self, covariance_type: str, n_components: int) -> Candidate:
        """The :class:`Candidate` fitted at one grid point (aliases such as ``"diag"`` work).

        Raises
        ------
        KeyError
            When ``(covariance_type, n_components)`` was not on the grid; the message lists
            the grid's families and numbers of components.
        """
        name = get_family(covariance_type).name
        for c in self.candidates:
            if c.covariance_type == name and c.n_components == n_components:
                return c
        families = sorted({c.covariance_type for c in self.candidates})
        Ks = sorted({c.n_components for c in self.candidates})
        raise KeyError(f"({covariance_type!r}, {n_components}) is not on the grid; it has the "
                       f"families {families} and the numbers of components {Ks}")

    def model(self, covariance_type: str, n_components: int) -> GaussianMixture:
        """The fitted :class:`~gmmlib.GaussianMixture` of one grid point: the best of its
        ``n_init`` runs. It is the grid's own model, not a copy; the same call returns the
        same object, so a notebook can ask for a fit by (family, K) as often as it likes
        without refitting.

        Examples
        --------
        >>> import gmmlib
        >>> X = gmmlib.generate_data(300, 2, 2, seed=0).X
        >>> grid = gmmlib.select_model(X, [1, 2], ["full", "diagonal"])
        >>> grid.model("diag", 2).n_components, grid.model("diag", 2).covariance_type
        (2, 'diagonal')
        """
        return self.candidate(covariance_type, n_components).model

    def score(self, covariance_type: str, n_components: int) -> float:
        """The criterion value of one grid point."""
        return self.candidate(covariance_type, n_components).score

    def table(self, rows: int | None = None) -> str:
        """The candidates as a text table, best first (the first ``rows`` of them, or all).
        BIC and AIC print to 0.1, a held-out NLL to 1e-4 nats."""
        digits = 4 if self.criterion in ("heldout", "cv") else 1
        lines = [f"{'covariance':17s} {'K':>3s} {'params':>6s} {'train NLL':>10s} {self.criterion:>10s}"]
        for c in sorted(self.candidates, key=lambda c: c.score)[:rows]:
            lines.append(f"{c.covariance_type:17s} {c.n_components:3d} {c.model.n_parameters():6d} "
                         f"{c.history.final_loss:10.4f} {c.score:10.{digits}f}")
        return "\n".join(lines)


def _check_choice(choices):
    def check(value, name: str):
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value
    return check


def _check_method(method, name: str) -> str:
    if method not in ("em", "gd"):
        raise ValueError(f"{name} must be 'em' or 'gd', got {method!r}")
    return method


def _check_counts(n_components, name: str) -> list[int]:
    if isinstance(n_components, numbers.Integral):
        n_components = [n_components]
    if not isinstance(n_components, Iterable) or isinstance(n_components, str):
        raise ValueError(f"{name} must be an int or an iterable of ints such as range(1, 7), "
                         f"got {n_components!r}")
    return [check_positive_int(K, f"each of {name}") for K in n_components]


def _check_families(covariance_types, name: str) -> list[str]:
    if isinstance(covariance_types, str):  # one family, not its letters
        covariance_types = [covariance_types]
    if not isinstance(covariance_types, Iterable):
        raise ValueError(f"{name} must be a covariance type or a list of them such as "
                         f"['full', 'diagonal'], got {covariance_types!r}")
    families = [get_family(t).name for t in covariance_types]
    if not families:
        raise ValueError(f"{name} is empty; pass at least one, e.g. ['full']")
    return families


def _check_folds(cv, name: str) -> int:
    if isinstance(cv, bool) or not isinstance(cv, numbers.Integral) or cv < 2:
        raise ValueError(f"{name} must be an int >= 2 (the number of folds), got {cv!r}")
    return int(cv)


_SELECT_MODEL = {"criterion": _check_choice(CRITERIA), "method": _check_method,
                 "n_components": _check_counts, "covariance_types": _check_families,
                 "dtype": lambda dtype, name: check_dtype_device(dtype)[0], "cv": _check_folds,
                 # checked up front, kept as given (an int seeds every fit alike)
                 "generator": lambda g, name: g if g is None else (make_generator(g), g)[1]}


def _cross_validated_nll(fit, X: torch.Tensor, folds: list, family: str, K: int, generator_for_fit):
    """Per-point held-out NLL (N,) of ``K``-component ``family`` fits, each point scored by the
    fit that did not see it; ``generator_for_fit()`` gives each fit its generator."""
    N, D = X.shape
    nll = torch.empty(N, dtype=X.dtype, device=X.device)
    for held in folds:
        train = torch.ones(N, dtype=torch.bool, device=X.device)
        train[held] = False
        model = GaussianMixture(K, D, family, dtype=X.dtype, device=X.device)
        fit(model, X[train], generator=generator_for_fit())
        with torch.no_grad():
            nll[held] = -model.log_prob(X[held])
    return nll


def select_model(X, n_components=range(1, 7), covariance_types=("full", "tied", "diagonal", "isotropic"),
                 *, criterion: str = "bic", X_val=None, cv: int = 5, method: str = "em", generator=0,
                 dtype=None, **fit_kwargs) -> Selection:
    """Fit a mixture for every covariance type and number of components, and rank the fits.

    Parameters
    ----------
    X : (N, D) array or tensor
        Training data.
    n_components : iterable of int
        The numbers of components to try (each at most N).
    covariance_types : iterable of str
        Families to try (any name or alias :class:`~gmmlib.GaussianMixture` accepts).
    criterion : str
        ``"bic"`` or ``"aic"`` on the training data (scikit-learn's definitions), or
        ``"heldout"``: the mean negative log-likelihood of ``X_val``; ``"cv"``: that of
        ``cv``-fold cross-validation (each point scored by a fit on the other folds, as
        scikit-learn's ``cross_val_score`` with a ``KFold`` split shuffled once by
        ``generator``; the folds are the same for every candidate, so candidates can be
        compared point by point). Every candidate's ``scores`` holds BIC and AIC besides.
        The fits stop at ``fit_kwargs``' ``tol`` (fit_em's default, scikit-learn's 1e-3, can
        leave a fit 0.01 nats per point short of its optimum: pass a smaller ``tol`` to
        compare close candidates).
    X_val : (M, D) array or tensor, optional
        Held-out data; required for ``criterion="heldout"`` and only then.
    cv : int, default 5
        Number of folds for ``criterion="cv"``. Each grid point is then fitted ``cv + 1``
        times: once per fold, and once on all of ``X`` (the candidate's model).
    method : str
        ``"em"`` (:func:`~gmmlib.fit_em`) or ``"gd"`` (:func:`~gmmlib.fit_gd`).
    generator : int or torch.Generator
        An int seeds every fit alike, so each grid point is reproducible on its own; a
        generator is drawn from in grid order.
    dtype : torch.dtype, optional
        Defaults to float32 for float32 input, float64 otherwise.
    **fit_kwargs
        Passed to the fitting function (e.g. ``n_init``, ``max_iter``, ``reg_covar`` for EM;
        ``iterations``, ``min_variance`` for gradient descent).

    Returns
    -------
    Selection
        ``candidates`` in grid order (family-major); ``best`` the lowest score; ``table()``;
        one fit by (family, K) with ``model(covariance_type, n_components)``.

    Raises
    ------
    ValueError
        On an unknown criterion, method or covariance type, ``X_val`` missing for (or given
        without) ``"heldout"``, a number of components below 1 or above N, or malformed data.

    Examples
    --------
    >>> import gmmlib
    >>> X = gmmlib.generate_data(600, 3, 2, radius=6.0, seed=0).X
    >>> sel = gmmlib.select_model(X, range(1, 5), ["full", "diagonal"], max_iter=200)
    >>> sel.best.covariance_type, sel.best.n_components
    ('full', 3)
    """
    criterion, method, Ks, families, dtype, cv, generator = checked(_SELECT_MODEL, locals()).values()
    if (criterion == "heldout") != (X_val is not None):
        raise ValueError("criterion='heldout' scores held-out data: pass X_val with it, and only with it"
                         if X_val is None else
                         f"X_val is only used by criterion='heldout', not {criterion!r}; drop X_val "
                         "or choose criterion='heldout'")
    X = as_data(X, dtype=dtype or float_dtype_like(X))
    dtype = X.dtype
    N, D = X.shape
    if not Ks or max(Ks) > N:
        raise ValueError(f"n_components must list numbers of components from 1 to N = {N}, got {Ks}")
    X_val = None if X_val is None else as_data(X_val, n_features=D, dtype=dtype, name="X_val")
    shared = generator if isinstance(generator, torch.Generator) else None
    fit_kwargs.setdefault("progress", False)
    fit = functools.partial({"em": fit_em, "gd": fit_gd}[method], **fit_kwargs)

    def generator_for_fit() -> torch.Generator:
        """A shared generator is drawn from in grid order; an int seeds every fit alike."""
        return shared if shared is not None else make_generator(generator)
    folds = None
    if criterion == "cv":
        n_train = N - -(-N // cv)  # the smallest training part: N minus the largest fold
        if cv > N:
            raise ValueError(f"cv={cv} folds of {N} points: cv must be at most n_samples={N}, "
                             "so that every fold holds a point; use fewer folds")
        if n_train < max(Ks):
            raise ValueError(f"cv={cv} folds leave {n_train} training points, fewer than "
                             f"n_components={max(Ks)}; use fewer folds or components")
        order = torch.randperm(N, generator=generator_for_fit())
        folds = [f.to(X.device) for f in order.tensor_split(cv)]

    selection = Selection(criterion)
    for family in families:
        for K in Ks:
            model = GaussianMixture(K, D, family, dtype=dtype, device=X.device)
            try:
                history = fit(model, X, generator=generator_for_fit())
            except ValueError as exc:
                raise ValueError(f"select_model: fitting covariance_type={family!r} with "
                                 f"n_components={K} failed: {exc}") from exc
            with torch.no_grad():
                scores = {"bic": float(model.bic(X)), "aic": float(model.aic(X))}
                if X_val is not None:
                    scores["heldout"] = float(model.nll(X_val))
            if folds is not None:
                nll = _cross_validated_nll(fit, X, folds, family, K, generator_for_fit)
                scores["cv"] = float(nll.mean())
                scores["cv_se"] = float(nll.std() / N ** 0.5)
            selection.candidates.append(Candidate(family, K, model, history, scores[criterion], scores,
                                                  None if folds is None else nll))
    return selection
