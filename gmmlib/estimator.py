"""scikit-learn's face of gmmlib: :class:`GaussianMixtureEM`, a drop-in for
``sklearn.mixture.GaussianMixture`` whose fitting is :func:`gmmlib.fit_em`.

It is built on scikit-learn's own ``BaseEstimator`` and ``DensityMixin``, validates its
parameters from one table (``_parameter_constraints``, scikit-learn's mechanism) and NumPy data
with scikit-learn's ``validate_data``, so ``clone``, ``get_params``/``set_params``, ``Pipeline``,
``GridSearchCV``, ``cross_val_score``, ``check_is_fitted`` and ``check_estimator`` treat it as
any scikit-learn estimator. Torch tensors skip ``validate_data`` (it would copy them to the CPU)
and are checked by gmmlib's own ``as_data``.

This module imports scikit-learn (about 1.8 s), so ``import gmmlib`` loads it only when
``gmmlib.GaussianMixtureEM`` is first used.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
import zlib
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._validation import as_data, as_numbers, check_dtype_device, float_dtype_like, make_generator
from .em import _fit, evaluate
from .exceptions import ConvergenceWarning
from .families import ALIASES, FAMILIES, get_family
from .init import METHODS
from .mixture import GaussianMixture

__all__ = ["GaussianMixtureEM"]

# The fitted attributes scikit-learn's scorers read (score_samples, predict, ...) and those its
# sample() reads: both act on the attributes as they are now, which a user may have set.
_SCORED = ("weights_", "means_", "precisions_cholesky_")
_SAMPLED = ("weights_", "means_", "covariances_")


def _weight_total(weights: np.ndarray) -> float:
    """The sum of ``weights_`` as set, checked to be finite, non-negative and not all zero."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights_ must be a 1-D array of finite, non-negative weights, not all "
                         f"zero (they should be in the range [0, 1]), got {w.tolist()}")
    return float(w.sum())


def _digest(value) -> tuple:
    """What tells an attribute's value from another: dtype, shape and a CRC-32 of the bytes.
    Kept in place of a copy of each exported array, which made a fitted estimator, and its
    pickle, half as large again (a full model's covariances_ and precisions_cholesky_ twice).
    A check, not a seal: it catches any edit of up to 32 bits and a random one but for 1 in
    2^32. zlib's CRC-32 read 38 MB (K = 30, D = 400) in 9 ms, SHA-256 in 21 ms, on every call
    to a scorer (measured; a one-row ``predict`` there takes 3.5-4 ms in scikit-learn)."""
    a = np.ascontiguousarray(value)
    if a.dtype.hasobject:  # no buffer to hash; never what a fit exported
        return a.dtype.str, a.shape, None
    return a.dtype.str, a.shape, zlib.crc32(a.data)


class _Verbose:
    """scikit-learn's ``verbose`` printing, word for word (``sklearn/mixture/_base.py``)."""

    def __init__(self, verbose: int, interval: int):
        self.verbose, self.interval = int(verbose), interval
        self.start_time = self.iter_time = 0.0

    def start(self, run: int):
        print("Initialization %d" % run)
        self.start_time = self.iter_time = time.time()

    def iteration(self, it: int, change: float):
        if it % self.interval:
            return
        if self.verbose == 1:
            print("  Iteration %d" % it)
        else:
            now = time.time()
            print("  Iteration %d\t time lapse %.5fs\t ll change %.5f"
                  % (it, now - self.iter_time, change))
            self.iter_time = now

    def end(self, lower_bound: float, converged: bool):
        msg = "converged" if converged else "did not converge"
        if self.verbose == 1:
            print(f"Initialization {msg}.")
        else:
            t = time.time() - self.start_time
            print(f"Initialization {msg}. time lapse {t:.5f}s\t lower bound {lower_bound:.5f}.")


class GaussianMixtureEM(DensityMixin, BaseEstimator):
    """A Gaussian mixture fitted by EM, with scikit-learn's ``GaussianMixture`` interface.

    A drop-in for ``sklearn.mixture.GaussianMixture`` 1.9: every constructor argument, method
    and fitted attribute of that class, with the same meaning and shapes, computed by
    :func:`~gmmlib.fit_em` in PyTorch; the fitted :class:`~gmmlib.GaussianMixture` is
    ``model_``. Started from the same parameters, the per-iteration lower bounds equal
    scikit-learn's to rounding.

    Parameters
    ----------
    n_components : int
    covariance_type : str
        ``"full"``, ``"tied"``, ``"diag"``, ``"spherical"`` (scikit-learn's names), or gmmlib's
        ``"diagonal"``, ``"isotropic"``, ``"shared_isotropic"``, ``"constant"``.
    tol, reg_covar, max_iter, n_init
        As in scikit-learn and :func:`~gmmlib.fit_em`.
    init_params : str
        ``"kmeans"`` (default), ``"k-means++"``, ``"random"`` or ``"random_from_data"`` (see
        :func:`~gmmlib.initialize` and the differences below).
    weights_init, means_init, precisions_init : array-like, optional
        Starting parameters, in scikit-learn's shapes and any memory layout; those given
        replace the initialisation's. Never modified. For the ``constant`` family, whose
        variance is ``constant_variance``, a ``precisions_init`` that disagrees with it is refused.
    random_state : None, int, numpy RandomState or Generator, or torch.Generator
        Seeds the initialisation and :meth:`sample` (an int gives the same draws every call,
        as in scikit-learn; None draws the seed from NumPy's global random state, as
        scikit-learn does, so ``np.random.seed`` makes both repeatable).
    warm_start : bool
        As in scikit-learn: each :meth:`fit` after the first continues from the fitted
        parameters (``n_init`` and the initialisation are then skipped), and its first
        iteration's gain is measured from the previous ``lower_bound_``. Fitting ``max_iter``
        iterations at a time this way retraces one long fit, iteration for iteration. Data of
        the other float dtype continue the fit in float64 (NumPy's promotion, as there).
        One difference: ``weights_`` set by hand to another sum are normalised before the
        continued fit, whose first lower bound is then not shifted by their log sum as
        scikit-learn's first E-step shifts it (the parameters it reaches are the same).
    verbose : int
        0 prints nothing; 1 prints each initialisation and every ``verbose_interval``-th
        iteration; 2 adds the time per iteration, the change of the lower bound and the final
        lower bound: scikit-learn's messages, word for word.
    verbose_interval : int
        Iterations between two messages.
    constant_variance : float
        The fixed variance of the ``constant`` family (gmmlib only).
    min_variance : float
        The model's variance floor (gmmlib only; 0, the default, is scikit-learn's behaviour):
        a constraint, every eigenvalue of every covariance >= ``min_variance``, met by the
        exact constrained M-step (eigenvalues below it raised to it). ``reg_covar`` is
        scikit-learn's ridge instead: every eigenvalue shifted up by it.
    dtype : torch.dtype or str, optional
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
    lower_bound_ : numpy.float64 or numpy.float32
        Mean log-likelihood before the last M-step of the best run (scikit-learn's meaning),
        a NumPy scalar of the fit's dtype; ``-inf`` when ``max_iter=0``.
    lower_bounds_ : list of numpy.float64 or numpy.float32
        The lower bound at each iteration of the best run.
    n_features_in_ : int
    model_ : gmmlib.GaussianMixture
    history_ : FitHistory

    Notes
    -----
    Deliberate differences from scikit-learn's ``GaussianMixture``:

    * **Random starts.** For a given ``random_state`` the initial means (hence the order of the
      fitted components, and the optimum reached on hard data) differ: gmmlib draws from
      ``torch.Generator`` and runs its own k-means (best of four k-means++ seedings). With
      ``"k-means++"`` and ``"random_from_data"`` each point is assigned to the nearest chosen
      centre to start the covariances, where scikit-learn gives each component its one chosen
      point and a covariance of ``reg_covar``, a start that fits the outliers first. Likewise
      with ``"kmeans"``, a cluster of fewer than two points starts with the data's covariance
      (scikit-learn: ``reg_covar``, a component collapsed onto its point), so with about as
      many components as points the fits, and the BIC and AIC that pick K, differ.
    * **Accuracy.** scikit-learn's E-step expands squared distances (``x² p - 2 x mu p + mu² p``)
      in raw coordinates, which loses every digit for a narrow component far from the
      origin (measured: a score 4e4 nats wrong for a component collapsed onto an outlier).
      Here every E-step and scoring path agrees with ``model_.log_prob`` (centred form where
      the expanded one would cancel), and the diagonal M-step is accumulated in float64.
    * **Empty components.** A component with no responsibility gets the data's mean (scikit-
      learn: the origin), a covariance of ``reg_covar`` and a weight of ``10 eps / N``.
    * **Outputs are NumPy arrays**, also for tensor input; tensors (CPU or CUDA) are used
      where they are, without a copy to NumPy. Fitted attributes are NumPy arrays, as there,
      and as there the scorers read ``weights_``, ``means_`` and ``precisions_cholesky_``,
      and :meth:`sample` ``covariances_``, as they are at the call (``model_`` is the fit's
      mixture, used while those attributes are unchanged); ``weights_`` that no longer sum to
      1 count as they are, as there (each log-density moves by the log of their sum), but
      negative ones are refused rather than scored NaN, and :meth:`sample` wants them to sum
      to 1 and ``n_samples`` whole (2.0, not 2.5). Scores are in NumPy's promotion of
      the fit's dtype and the data's (a float32 fit scores float64 data in float64).
    * **Extra families and parameters**: ``shared_isotropic`` and ``constant``,
      ``constant_variance``, ``min_variance``, ``dtype``, ``device``.
    * ``ConvergenceWarning`` is :class:`gmmlib.exceptions.ConvergenceWarning`, a subclass of
      scikit-learn's (filters for either catch it).

    Examples
    --------
    >>> import gmmlib
    >>> X = gmmlib.generate_data(500, 3, 2, seed=0).X.numpy()
    >>> gm = gmmlib.GaussianMixtureEM(3, random_state=0).fit(X)
    >>> gm.means_.shape, gm.predict(X[:4]).shape
    ((3, 2), (4,))
    """

    # scikit-learn's table of parameter checks, applied once per fit by _validate_params
    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions(set(FAMILIES) | set(ALIASES))],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions(set(METHODS))],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "random_state": ["random_state", np.random.Generator, torch.Generator],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "constant_variance": [Interval(Real, 0.0, None, closed="neither")],
        "min_variance": [Interval(Real, 0.0, None, closed="left")],
        "dtype": [None, str, type, np.dtype, torch.dtype],
        "device": [None, str, torch.device],
    }

    def __init__(self, n_components: int = 1, *, covariance_type: str = "full", tol: float = 1e-3,
                 reg_covar: float = 1e-6, max_iter: int = 100, n_init: int = 1,
                 init_params: str = "kmeans", weights_init=None, means_init=None,
                 precisions_init=None, random_state=None, warm_start: bool = False,
                 verbose: int = 0, verbose_interval: int = 10, constant_variance: float = 1.0,
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
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.constant_variance = constant_variance
        self.min_variance = min_variance
        self.dtype = dtype
        self.device = device

    def __sklearn_is_fitted__(self) -> bool:
        # fitted, or given the attributes scikit-learn's scorers read (a model rebuilt by
        # setting weights_, means_ and precisions_cholesky_ works there, so here too)
        return hasattr(self, "model_") or all(hasattr(self, a) for a in _SCORED)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    # -- helpers ----------------------------------------------------------------------------
    def _seed(self):
        """A torch seed or generator for the initialisation or :meth:`sample`."""
        rs = self.random_state
        if rs is None:  # scikit-learn's check_random_state(None): NumPy's global RandomState
            rs = np.random.mtrand._rand  # so np.random.seed makes fit and sample repeatable
        if isinstance(rs, torch.Generator):
            return rs
        if isinstance(rs, Integral):
            return int(rs)
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(2 ** 31))
        return int(rs.randint(2 ** 31))  # a RandomState (checked by _validate_params)

    def _fit_dtype_device(self, X):
        dtype = self.dtype
        if dtype is not None and not isinstance(dtype, torch.dtype):
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
        return check_dtype_device(dtype, device)

    def _data(self, X, *, reset: bool, model=None) -> torch.Tensor:
        """``X`` checked once, as a tensor in the fit's dtype and device (maybe sharing the
        caller's memory, which nothing here writes to); to score with ``model``
        (``reset=False``), on its device, in its dtype promoted with X's."""
        name = type(self).__name__
        if not isinstance(X, torch.Tensor):
            # scikit-learn's checks: sparse, object dtype, 1-D, NaN, feature names, n_features_in_
            X = validate_data(self, X, dtype=[np.float64, np.float32], reset=reset,
                              ensure_min_samples=2 if reset else 1)
        elif reset:  # a tensor has no column names: forget those of an earlier fit
            self.__dict__.pop("feature_names_in_", None)
        if reset:
            dtype, device = self._fit_dtype_device(X)
            if self.warm_start and self.dtype is None and hasattr(self, "converged_"):
                # a warm start continues in numpy's promotion of the two, as scikit-learn's (a
                # mixture rebuilt from its attributes is float64)
                model = getattr(self, "model_", None)
                dtype = torch.promote_types(dtype, torch.float64 if model is None else model.loc.dtype)
            X = as_data(X, dtype=dtype, device=device, min_rows=2, owner=name)
            self.n_features_in_ = X.shape[1]  # (validate_data set it already for NumPy input)
            return X
        loc = model.loc
        D = getattr(self, "n_features_in_", loc.shape[-1])
        # numpy's promotion, as scikit-learn's arithmetic: float64 data are scored in float64
        # by a float32 fit (not rounded to float32, where 1e17 would overflow its squares)
        dtype = torch.promote_types(loc.dtype, float_dtype_like(X))
        return as_data(X, n_features=D, dtype=dtype, device=loc.device, owner=name)

    def _initial_covariances(self, family, K, D, like):
        """Covariances in scikit-learn's shape from ``precisions_init``."""
        P = as_numbers(self.precisions_init, "precisions_init", "an array of numbers", **like)
        return family.covariances_from_precisions(family.check_shape(P, K, D, name="precisions_init"))

    def _initial_model(self, X, K, D):
        """A new model holding the ``*_init`` parameters given; returns it, those parameters,
        and the initialisation to run (None when every parameter was given)."""
        model = GaussianMixture(K, D, self.covariance_type, constant_variance=self.constant_variance,
                                min_variance=self.min_variance, dtype=X.dtype, device=X.device)
        like = {"dtype": X.dtype, "device": X.device}
        given = {}
        if self.weights_init is not None:
            given["weights"] = as_numbers(self.weights_init, "weights_init", "an array of numbers", **like)
        if self.means_init is not None:
            given["means"] = as_numbers(self.means_init, "means_init", "an array of numbers", **like)
        if self.precisions_init is not None:
            cov = self._initial_covariances(model.family, K, D, like)
            if model.family.learned:
                given["covariances"] = cov
            elif not torch.allclose(cov, torch.full_like(cov, self.constant_variance), atol=0.0,
                                    rtol=8 * torch.finfo(cov.dtype).eps):
                # not ignored in silence: the constant family's variance is not learned
                raise ValueError(f"precisions_init {float(1 / cov):g} disagrees with the constant "
                                 f"family's fixed variance, constant_variance="
                                 f"{self.constant_variance:g} (precision "
                                 f"{1 / self.constant_variance:g}): set constant_variance to 1 / "
                                 "the precision, or leave precisions_init out")
        everything = {"weights", "means"} | ({"covariances"} if model.family.learned else set())
        if given:
            model.set_parameters(**given)  # validates shapes early
        init = None if set(given) >= everything else METHODS[self.init_params]  # canonical name
        return model, given, init

    def _warm_model(self, X, K):
        """A copy of the fitted mixture (its attributes as they are now, as scikit-learn
        continues from them) to continue from, once checked against this call's settings and
        data; ``model_`` itself is replaced only by a fit that completes."""
        ref = getattr(self, "model_", None)
        m = self._model(_SCORED)
        was = (m.n_components, m.family.name, m.n_features, m.loc.device)
        now = (K, get_family(self.covariance_type).name, X.shape[1], X.device)
        if was != now:
            names = ("n_components", "covariance_type", "n_features", "device")
            diff = "; ".join(f"{n} was {a} and is now {b}" for n, a, b in zip(names, was, now) if a != b)
            raise ValueError(f"warm_start=True continues the previous fit, which no longer "
                             f"matches: {diff}. Set warm_start=False to fit afresh.")
        if m is ref:
            m = copy.deepcopy(m)
        m.to(X.dtype)  # promoted by _data: a previous fit of the other dtype goes on in float64
        m.min_variance = float(self.min_variance)
        return m

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, X, y=None) -> "GaussianMixtureEM":
        """Fit the mixture to ``X`` (n_samples, n_features) by EM; returns ``self``.
        ``X`` is never modified."""
        self._validate_params()
        X = self._data(X, reset=True)
        K, (N, D) = self.n_components, X.shape
        if N < K:
            raise ValueError(f"Expected n_samples >= n_components but got n_components = {K}, "
                             f"n_samples = {N}: pass more data or use fewer components")
        monitor = _Verbose(self.verbose, self.verbose_interval) if self.verbose else None
        settings = {"max_iter": self.max_iter, "tol": self.tol, "reg_covar": self.reg_covar,
                    "monitor": monitor}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            # one run from the fitted parameters, once fitted (scikit-learn asks for converged_)
            if self.warm_start and hasattr(self, "converged_"):
                model = self._warm_model(X, K)
                history = _fit(model, X, previous=self.lower_bound_, **settings)
            else:
                model, given, init = self._initial_model(X, K, D)
                history = _fit(model, X, n_init=self.n_init if init else 1, init=init,
                               generator=self._seed(),
                               override=(lambda m: m.set_parameters(**given)) if given and init else None,
                               **settings)
        self.model_, self.history_ = model, history
        self.converged_ = history.converged
        self.n_iter_ = history.n_iter
        # scikit-learn's: the best run's bound, -inf when no iteration ran (max_iter=0); NumPy
        # scalars of the fit's dtype, as its means of float32 or float64 log-densities are
        scalar = np.dtype(str(model.loc.dtype).removeprefix("torch.")).type
        self.lower_bound_ = scalar(history.lower_bound) if self.max_iter > 0 else -math.inf
        self.lower_bounds_ = [scalar(-v) for v in history.loss[:history.n_iter]]
        self._set_fitted_attributes()
        for w in caught:  # re-raised from here, once the fit's attributes are all set (a
            warnings.warn(w.message, w.category, stacklevel=2)  # filter may make it an error)
        return self

    @torch.no_grad()
    def _set_fitted_attributes(self):
        m = self.model_
        self.weights_ = m.weights.cpu().numpy()
        self.means_ = m.means.cpu().numpy()
        self.covariances_ = m.sklearn_covariances().cpu().numpy()
        precisions, precisions_cholesky = m.sklearn_precisions()
        self.precisions_cholesky_ = precisions_cholesky.cpu().numpy()
        self.precisions_ = precisions.cpu().numpy()
        # what model_ holds, to tell whether the attributes were changed since
        self._exported = {a: _digest(getattr(self, a)) for a in set(_SCORED + _SAMPLED)}

    def _model(self, attributes) -> GaussianMixture:
        """The mixture the fitted ``attributes`` (``_SCORED`` or ``_SAMPLED``) describe now:
        ``model_`` while they are what the fit left, else one built from them, in float64,
        where ``model_`` is, as scikit-learn reads its attributes afresh on every call."""
        check_is_fitted(self)
        model = getattr(self, "model_", None)
        exported = getattr(self, "_exported", {})
        if model is not None and all(isinstance(exported.get(a), tuple)  # (a pickle from before
                                     and exported[a] == _digest(getattr(self, a))  # digests: rebuilt)
                                     for a in attributes):
            return model
        weights, means, cov = (np.asarray(getattr(self, a)) for a in attributes)
        if attributes is _SCORED:  # scored with weights_ as given: see _log_weight_total
            weights = weights / _weight_total(weights)
        like = {"dtype": torch.float64, "device": model.loc.device if model is not None else "cpu"}
        family = model.family if model is not None else get_family(self.covariance_type)
        if attributes is _SCORED:  # covariances from precisions_cholesky_ P: Σ⁻¹ = P Pᵀ
            P = as_numbers(cov, "precisions_cholesky_", "an array of numbers", **like)
            diagonal = torch.diagonal(P, dim1=-2, dim2=-1) if family.kind == "tril" else P
            if not (bool(torch.isfinite(P).all()) and bool((diagonal > 0).all())):
                raise ValueError("precisions_cholesky_ must be finite with a positive diagonal "
                                 "(P triangular, the precision P Pᵀ)")
            if family.kind == "tril":
                # scikit-learn scores with any triangular P (log|P| from its diagonal, |(x - mu)
                # P|²): its own upper one, or a lower one such as np.linalg.cholesky(precisions_).
                # Σ = L Lᵀ with L = P⁻ᵀ, one triangular solve (no precision formed and inverted:
                # that squares its condition number)
                upper = bool((P.tril(-1) == 0).all())
                if not upper and not bool((P.triu(1) == 0).all()):
                    raise ValueError("precisions_cholesky_ must be triangular (upper, as fit "
                                     "leaves it, or lower), with the precision P Pᵀ; got a "
                                     "matrix with entries on both sides of the diagonal")
                eye = torch.eye(P.shape[-1], dtype=P.dtype, device=P.device).expand_as(P)
                L = torch.linalg.solve_triangular(P, eye, upper=upper).mT
            else:
                L = family.precision_factor(P)
            cov = family.square(L)
        # in float64, whatever the attributes' dtype: float32 ones are exact in it
        return GaussianMixture.from_parameters(weights, means, cov, family.name, **like)

    def fit_predict(self, X, y=None) -> np.ndarray:
        """``fit(X).predict(X)``: the component of each training point after fitting."""
        return self.fit(X).predict(X)

    # -- evaluation (the E-step's fast path) ------------------------------------------------
    def _evaluate(self, X, resp: bool = False):
        model = self._model(_SCORED)
        X = self._data(X, reset=False, model=model)
        if X.dtype != model.loc.dtype:  # float64 data, float32 fit: scored in float64
            model = copy.deepcopy(model).to(X.dtype)
        return evaluate(model, X, resp=resp)

    def _log_weight_total(self) -> float:
        """``log sum(weights_)``: 0 for the fit's own weights, to rounding.

        scikit-learn scores with ``log weights_`` as they are, normalised or not: every
        log-density then moves by this constant, and the responsibilities do not change. The
        scorers here build their mixture from the normalised weights and add it back (always:
        a threshold would leave sums within it, 1 + 5e-7 say, off by as much)."""
        return math.log(_weight_total(np.asarray(self.weights_)))

    def score_samples(self, X) -> np.ndarray:
        """log p(x_n) of each sample, (n_samples,), with ``log weights_`` as they are (as in
        scikit-learn: weights set by hand that do not sum to 1 shift every value alike)."""
        out = self._evaluate(X)[0].cpu().numpy()
        offset = self._log_weight_total()
        return out + out.dtype.type(offset) if offset else out

    def score(self, X, y=None) -> float:
        """Mean log-likelihood of ``X`` (scikit-learn's sign: higher is better)."""
        return float(self.score_samples(X).mean())

    def predict_proba(self, X) -> np.ndarray:
        """Responsibilities p(k | x_n), (n_samples, n_components)."""
        return self._evaluate(X, resp=True)[1].cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """The most responsible component of each sample, (n_samples,) int64."""
        return self._evaluate(X, resp=True)[1].argmax(1).cpu().numpy()

    def _n_parameters(self) -> int:
        return self._model(_SCORED).n_parameters()

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
        check_is_fitted(self)
        # a whole number of any numeric type (2.0 too, as scikit-learn takes it); 2.5 is
        # refused rather than cut to 2 as scikit-learn's multinomial draw does
        if (isinstance(n_samples, bool) or not isinstance(n_samples, Real)
                or not float(n_samples).is_integer() or n_samples < 1):
            raise ValueError(f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires "
                             "at least one sample, a whole number.")
        seed = self._seed()
        g = seed if isinstance(seed, torch.Generator) else make_generator(seed, device="cpu")
        Xs, labels = self._model(_SAMPLED).sample(int(n_samples), generator=g, return_labels=True)
        order = torch.argsort(labels, stable=True)
        # float64, as scikit-learn's sample returns whatever the fit's dtype
        return Xs[order].cpu().numpy().astype(np.float64), labels[order].cpu().numpy()
