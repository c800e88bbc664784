"""Initialisation: choose starting means, then weights and covariances from a hard assignment.

Randomness comes only from the ``generator`` passed in: a ``torch.Generator``, an int seed, or
``None``, which takes one draw from torch's global generator (:func:`make_generator`), so that
``torch.manual_seed`` makes it repeatable.

k-means compares squared distances in float64 about the data's mean: torch.cdist's
``|x|² + |c|² - 2 x·c`` in the data's own dtype cancels whenever the data sit far from the
origin next to their spread (float32 data 3000 out, spread 0.05: 383 of 600 points were
assigned to the wrong centre, and EM's fit from there was 1.9 nats a point worse).
"""
from __future__ import annotations

import math
import warnings

import torch

from ._validation import (as_data, check_nonnegative, check_nonnegative_int,  # noqa: F401
                          check_positive_int, checked, float_dtype_like, make_generator,  # re-exported
                          user_stacklevel)
from .mixture import GaussianMixture
from .moments import COVARIANCE, Moments, Workspace, scatter

__all__ = ["METHODS", "make_generator", "kmeans_plusplus", "random_from_data", "kmeans",
           "initialize", "data_covariance", "data_covariance_as", "check_method", "check_start"]


def _randint(n: int, g: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=g, device=g.device))


def _kmeans_plusplus(X: torch.Tensor, n_components: int, generator: torch.Generator) -> torch.Tensor:
    N = X.shape[0]
    idx = [_randint(N, generator)]
    d2 = (X - X[idx[0]]).square().sum(-1)  # (N,), differences first: nothing cancels
    for _ in range(1, n_components):
        total = d2.sum(dtype=torch.float64)  # float32's sum can overflow (60000 rows at 1e15)
        if float(total) <= 0:  # every point coincides with a centre: pick uniformly
            nxt = _randint(N, generator)
        else:
            p = (d2.double() / total).to(d2.dtype).to(generator.device)
            nxt = int(torch.multinomial(p, 1, generator=generator))
        idx.append(nxt)
        d2 = torch.minimum(d2, (X - X[nxt]).square().sum(-1))
    return X[idx].clone()


def _random_from_data(X: torch.Tensor, n_components: int, generator: torch.Generator) -> torch.Tensor:
    perm = torch.randperm(X.shape[0], generator=generator, device=generator.device)
    return X[perm[:n_components].to(X.device)].clone()


def _centred64(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``X`` (N, D) in float64 about its mean (a new array; float32 values exact in it), and
    that mean (D,): where :func:`_nearest` compares distances."""
    mean = X.mean(0, dtype=torch.float64)
    return torch.sub(X, mean, out=torch.empty(X.shape, dtype=torch.float64, device=X.device)), mean


def _nearest(Xc: torch.Tensor, C: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's nearest centre and squared distance to it, (N,) and (N,), for the rows ``Xc``
    (N, D) from :func:`_centred64` about ``mean`` and centres ``C`` (K, D, any float dtype): about
    the data's mean, in float64, ``|c|² - 2 x·c`` rounds to the precision of the data's
    spread, not of their offset."""
    Cc = C.to(torch.float64) - mean  # (K, D)
    d2 = torch.addmm(Cc.square().sum(-1), Xc, Cc.T, alpha=-2.0)  # (N, K): |x - c|² - |x|²
    best, labels = d2.min(-1)
    return labels, (best + Xc.square().sum(-1)).clamp_min(0.0)


def _lloyd(X64: torch.Tensor, Xc: torch.Tensor, mean: torch.Tensor, C: torch.Tensor,
           n_iter: int) -> torch.Tensor:
    """Lloyd's iterations from centres ``C`` (K, D) over the rows ``X64`` (N, D, float64) and
    their centred copy ``Xc``; the means are summed from the rows as given, not centred (a
    cluster whose rows share a coordinate keeps it to the rounding of one sum: exactly for
    float32 data, whose sums are exact in float64)."""
    K = C.shape[0]
    C = C.to(torch.float64)
    for _ in range(n_iter):
        labels = _nearest(Xc, C, mean)[0]  # (N,)
        onehot = torch.nn.functional.one_hot(labels, K).to(torch.float64)  # (N, K)
        counts = onehot.sum(0)  # (K,)
        new = (onehot.T @ X64) / counts.clamp_min(1).unsqueeze(-1)
        new = torch.where(counts.unsqueeze(-1) > 0, new, C)  # keep empty clusters where they were
        if torch.equal(new, C):
            break
        C = new
    return C


def _kmeans(X: torch.Tensor, n_components: int, generator: torch.Generator, n_iter: int = 30,
            n_init: int = 4) -> torch.Tensor:
    X64, (Xc, mean) = X.to(torch.float64), _centred64(X)
    best, best_inertia, best_labels = None, float("inf"), None
    for _ in range(n_init):
        C = _lloyd(X64, Xc, mean, _kmeans_plusplus(X, n_components, generator), n_iter)
        labels, d2 = _nearest(Xc, C, mean)
        inertia = float(d2.sum())
        if best is None or inertia < best_inertia:
            best, best_inertia, best_labels = C, inertia, labels
    distinct = int(best_labels.unique().numel())
    if distinct < n_components:  # scikit-learn's KMeans warning, word for word
        from .exceptions import ConvergenceWarning  # imports scikit-learn: only when needed
        warnings.warn(f"Number of distinct clusters ({distinct}) found smaller than n_clusters "
                      f"({n_components}). Possibly due to duplicate points in X.",
                      ConvergenceWarning, stacklevel=user_stacklevel())
    return best.to(X.dtype)


def _check_seeding(X, n_components, generator):
    """The seedings' arguments, checked once: ``X`` (N, D) numbers (never modified; float32
    stays float32, anything else is taken as float64, as scikit-learn's ``check_array`` does:
    float16 held the seeding's squared distances only up to 0.026), ``n_components`` an int
    in 1..N, ``generator`` a ``torch.Generator``, an int seed or None."""
    X = as_data(X, dtype=float_dtype_like(X))
    K = check_positive_int(n_components, "n_components")
    if K > X.shape[0]:
        raise ValueError(f"n_samples={X.shape[0]} should be >= n_components={K}: {K} centres "
                         "need at least as many points; pass more data or use fewer components")
    return X, K, make_generator(generator, device=X.device if X.device.type == "cuda" else "cpu")


def kmeans_plusplus(X, n_components: int, generator=None) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): (K, D) centres chosen among the points.

    The first centre is a uniformly random point; each next one is drawn with probability
    proportional to the squared distance to the nearest centre chosen so far. ``X`` (N, D) is
    never modified; the centres are float32 for float32 data, float64 for any other (integers,
    float16), as scikit-learn's; ``generator`` is a ``torch.Generator``, an int seed, or None (one draw
    from torch's global generator). Bad arguments raise ``ValueError`` naming them.
    """
    return _kmeans_plusplus(*_check_seeding(X, n_components, generator))


def random_from_data(X, n_components: int, generator=None) -> torch.Tensor:
    """K distinct points of ``X`` drawn uniformly at random as the means, (K, D); arguments as
    :func:`kmeans_plusplus`'s."""
    return _random_from_data(*_check_seeding(X, n_components, generator))


def kmeans(X, n_components: int, generator=None, n_iter: int = 30, n_init: int = 4) -> torch.Tensor:
    """k-means: ``n_init`` k-means++ seedings, each refined by up to ``n_iter`` Lloyd iterations;
    returns the (K, D) centres with the lowest within-cluster sum of squares, distances
    compared in float64 about the data's mean whatever X's dtype. Arguments as
    :func:`kmeans_plusplus`'s."""
    X, K, g = _check_seeding(X, n_components, generator)
    return _kmeans(X, K, g, check_nonnegative_int(n_iter, "n_iter"), check_positive_int(n_init, "n_init"))


# The seedings that choose K means among or around the points; "random" (scikit-learn's random
# responsibilities) has no seeding, see initialize.
SEEDINGS = {"kmeans": _kmeans, "kmeans++": _kmeans_plusplus, "random_from_data": _random_from_data}
# scikit-learn's spellings, accepted everywhere a method is named
METHODS = {"kmeans": "kmeans", "k-means++": "kmeans++", "kmeans++": "kmeans++",
           "random_from_data": "random_from_data", "random": "random"}


def check_method(method, name: str = "init", remedy: str = "") -> str:
    """gmmlib's name for the initialisation ``method`` (scikit-learn's spellings accepted), or a
    ``ValueError`` naming the argument and the choices."""
    if not isinstance(method, str) or method not in METHODS:
        what = name if name == "method" else f"{name} method"  # not "unknown method method"
        raise ValueError(f"unknown {what} {method!r}; choose one of: {', '.join(METHODS)}{remedy}")
    return METHODS[method]


def check_start(model: GaussianMixture) -> None:
    """A ``ValueError`` naming ``model`` when a fit with ``init=None`` would start from
    parameters that are not numbers: NaN or infinite means or scales, NaN or +inf logits, or
    no weight left (a logit of -inf is a weight of 0, which is allowed). Such a start was
    blamed on the data ("the log-likelihood became nan ...; scale the data")."""
    bad = [name for name, t in (("loc (the means)", model.loc),
                                ("raw_scale (the covariances)", model.raw_scale))
           if not bool(torch.isfinite(t).all())]
    logits = model.logits.detach()
    if bool(torch.isnan(logits).any()) or bool((logits == math.inf).any()) \
            or bool((logits == -math.inf).all()):
        bad.append("logits (the weights)")
    if bad:
        verb = "holds" if len(bad) == 1 else "hold"
        raise ValueError(f"model's {' and '.join(bad)} {verb} NaN or infinity, and init=None starts "
                         "the fit from them: set them with model.set_parameters(...), or pass an "
                         "init such as 'kmeans'")


def data_covariance(X: torch.Tensor) -> torch.Tensor:
    """Sample covariance of the data, (D, D), computed centred."""
    Xc = X - X.mean(0)
    return Xc.T @ Xc / max(X.shape[0] - 1, 1)


def data_covariance_as(family, X: torch.Tensor, weights: torch.Tensor, ridge: float) -> torch.Tensor:
    """The data's sample covariance plus ``ridge`` on the diagonal as the covariance of each of
    ``len(weights)`` components of ``family``, in scikit-learn's shape: what a component with
    too few points (initialisation) or a reset one (the guard) takes. The axis-aligned families
    compute only the D variances, never the (D, D) matrix."""
    K, D = weights.shape[0], X.shape[1]
    if family.kind == "std":
        cov = (X - X.mean(0)).square().sum(0) / max(X.shape[0] - 1, 1) + ridge  # (D,)
    else:
        cov = data_covariance(X) + ridge * torch.eye(D, dtype=X.dtype, device=X.device)
    return family.project(cov.expand(K, *cov.shape), weights)


def check_model(model, name: str = "model") -> GaussianMixture:
    """``model`` if it is a :class:`~gmmlib.GaussianMixture`, else a ``ValueError`` that says so."""
    if not isinstance(model, GaussianMixture):
        raise ValueError(f"{name} must be a gmmlib.GaussianMixture, got {type(model).__name__}; build "
                         "one with gmmlib.GaussianMixture(n_components, n_features, covariance_type)"
                         + (" or convert a fitted scikit-learn model with GaussianMixture.from_sklearn"
                            if type(model).__module__.startswith("sklearn") else ""))
    model._check_dtype()
    return model


@torch.no_grad()
def initialize(model, X, method: str = "kmeans", generator=None, *, reg_covar: float = 1e-6):
    """Set ``model``'s parameters from data and return the model.

    ``method`` chooses responsibilities ``r_nk``; the weights and covariances are then one
    M-step's, computed by EM's own functions (:mod:`gmmlib.moments`): the weighted moments of
    the data in the model's covariance family, plus ``reg_covar`` on the diagonal, floored at
    the model's ``min_variance`` (in a per-component family, a component with fewer than two
    points' worth of responsibility takes the data covariance instead):

    * ``"kmeans"`` (default): the best of four k-means++ seedings refined by Lloyd iterations,
      like scikit-learn's default, then each point assigned to its nearest mean;
    * ``"k-means++"`` (or ``"kmeans++"``) and ``"random_from_data"``: K points chosen by
      k-means++ or uniformly, each point then assigned to the nearest (scikit-learn instead
      gives each component its one chosen point, and so a covariance of ``reg_covar``);
    * ``"random"``: scikit-learn's random responsibilities, uniform on [0, 1) and normalised
      per point (the means all start near the data's mean).

    For the first three the means are the chosen centres and the covariances are taken about
    them; for ``"random"`` the means are the weighted means.

    ``X`` is never modified.
    """
    model, method, reg_covar = checked(_INITIALIZE, locals()).values()
    X = as_data(X, n_features=model.n_features, dtype=model.loc.dtype, device=model.loc.device,
                min_rows=model.n_components)
    g = make_generator(generator, device=X.device if X.device.type == "cuda" else "cpu")
    return _initialize(model, X, method, g, reg_covar)


# scikit-learn's words for a covariance that is not positive definite, which its users search
# for (the fits' own message, gmmlib.em._FAIL, starts with them too)
ILL_DEFINED = ("Fitting the mixture model failed because some components have ill-defined "
               "empirical covariance (for instance caused by singleton or collapsed samples)")

_INITIALIZE = {"model": check_model, "method": check_method, "reg_covar": check_nonnegative}


@torch.no_grad()
def _initialize(model, X: torch.Tensor, method: str, g: torch.Generator, reg_covar: float):
    """:func:`initialize` for validated arguments (the fits call this)."""
    K, family = model.n_components, model.family
    eps = torch.finfo(X.dtype).eps
    ws = Workspace(X, K, X.mean(0), family)  # the M-step's view of the data
    if method == "random":
        R = torch.rand(X.shape[0], K, generator=g, device=g.device, dtype=X.dtype).to(X.device)
        R /= R.sum(1, keepdim=True)  # (N, K)
        means = (R.T @ X) / R.sum(0).unsqueeze(-1)  # (K, D)
        resp = lambda block: R[block.a:block.b].T  # noqa: E731  (K, n)
    else:
        means = SEEDINGS[method](X, K, g)  # (K, D)
        Xc, mean = _centred64(X)  # distances in float64 about the data's mean
        labels = _nearest(Xc, means, mean)[0]  # (N,)
        resp = lambda block: torch.nn.functional.one_hot(  # noqa: E731  (K, n), one-hot
            labels[block.a:block.b], K).T.to(X.dtype)
    centre = (means - ws.shift) if family.kind == "tril" else None

    def moments(components=None, centres=centre):  # the sums; again for ``components``
        m = Moments.of(ws, family, centres, components=components)
        for block in ws.blocks():
            m.add(block, resp(block))
        return m
    m = moments()
    counts = m.count.to(X.dtype)  # (K,)
    weights = (counts + 10 * eps) / (counts.sum() + 10 * K * eps)
    raw = None
    if family.learned:  # one M-step's covariances, about these means
        S = scatter(m, (means - ws.shift).to(torch.float64), moments)  # about these means
        # float64, factorised before the factor is rounded to X's dtype (as EM's M-step: a
        # covariance rounded to float32 first loses its small eigenvalues)
        cov = COVARIANCE[family.name](S, m.count.clamp_min(1), reg_covar)
        few = counts < 2  # (K,) such components take the data covariance instead
        if family.per_component and bool(few.any()):
            data = data_covariance_as(family, X, weights, reg_covar).reshape(cov.shape)
            cov = torch.where(few.reshape(-1, *[1] * (cov.ndim - 1)), data.to(cov.dtype), cov)
        raw = family.raw_from_covariance(cov, model.min_variance, error=(
            "initialisation gave a component a singular covariance (it holds duplicated points, "
            f"or fewer points than features). {ILL_DEFINED}. Pass reg_covar > 0 (e.g. 1e-6) or "
            "set a variance floor, min_variance > 0")).to(X.dtype)
    # written only now, every value computed (and checked): a raise leaves the model as it was
    model.set_parameters(weights=weights, means=means)
    if raw is not None:
        model.raw_scale.copy_(raw.reshape(model.raw_scale.shape))
    return model
