"""Initialisation: choose starting means, then weights and covariances from a hard assignment.

Randomness comes only from the ``torch.Generator`` passed in (or a fresh one seeded from an
int); the global RNG state is never touched.
"""
from __future__ import annotations

import torch

from ._validation import as_data, check_nonnegative, checked, make_generator  # make_generator: re-exported
from .mixture import GaussianMixture
from .moments import COVARIANCE, Moments, Workspace, scatter

__all__ = ["METHODS", "make_generator", "kmeans_plusplus", "random_from_data", "kmeans",
           "initialize", "data_covariance", "check_method"]


def _randint(n: int, g: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=g, device=g.device))


def kmeans_plusplus(X: torch.Tensor, n_components: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): (K, D) centres chosen among the points.

    The first centre is a uniformly random point; each next one is drawn with probability
    proportional to the squared distance to the nearest centre chosen so far.
    """
    N = X.shape[0]
    idx = [_randint(N, generator)]
    d2 = (X - X[idx[0]]).square().sum(-1)  # (N,)
    for _ in range(1, n_components):
        total = d2.sum()
        if float(total) <= 0:  # every point coincides with a centre: pick uniformly
            nxt = _randint(N, generator)
        else:
            p = (d2 / total).to(generator.device)
            nxt = int(torch.multinomial(p, 1, generator=generator))
        idx.append(nxt)
        d2 = torch.minimum(d2, (X - X[nxt]).square().sum(-1))
    return X[idx].clone()


def random_from_data(X: torch.Tensor, n_components: int, generator: torch.Generator) -> torch.Tensor:
    """K distinct points of ``X`` drawn uniformly at random as the means, (K, D)."""
    perm = torch.randperm(X.shape[0], generator=generator, device=generator.device)
    return X[perm[:n_components].to(X.device)].clone()


def _lloyd(X: torch.Tensor, C: torch.Tensor, n_iter: int) -> torch.Tensor:
    K = C.shape[0]
    for _ in range(n_iter):
        labels = torch.cdist(X, C).argmin(-1)  # (N,)
        onehot = torch.nn.functional.one_hot(labels, K).to(X.dtype)  # (N, K)
        counts = onehot.sum(0)  # (K,)
        new = (onehot.T @ X) / counts.clamp_min(1).unsqueeze(-1)
        new = torch.where(counts.unsqueeze(-1) > 0, new, C)  # keep empty clusters where they were
        if torch.equal(new, C):
            break
        C = new
    return C


def kmeans(X: torch.Tensor, n_components: int, generator: torch.Generator, n_iter: int = 30,
           n_init: int = 4) -> torch.Tensor:
    """k-means: ``n_init`` k-means++ seedings, each refined by up to ``n_iter`` Lloyd iterations;
    returns the (K, D) centres with the lowest within-cluster sum of squares."""
    best, best_inertia = None, float("inf")
    for _ in range(n_init):
        C = _lloyd(X, kmeans_plusplus(X, n_components, generator), n_iter)
        inertia = float(torch.cdist(X, C).amin(-1).square().sum())
        if inertia < best_inertia:
            best, best_inertia = C, inertia
    return best


# The seedings that choose K means among or around the points; "random" (scikit-learn's random
# responsibilities) has no seeding, see initialize.
SEEDINGS = {"kmeans": kmeans, "kmeans++": kmeans_plusplus, "random_from_data": random_from_data}
# scikit-learn's spellings, accepted everywhere a method is named
METHODS = {"kmeans": "kmeans", "k-means++": "kmeans++", "kmeans++": "kmeans++",
           "random_from_data": "random_from_data", "random": "random"}


def check_method(method, name: str = "init", remedy: str = "") -> str:
    """gmmlib's name for the initialisation ``method`` (scikit-learn's spellings accepted), or a
    ``ValueError`` naming the argument and the choices."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown {name} method {method!r}; choose one of: {', '.join(METHODS)}{remedy}")
    return METHODS[method]


def data_covariance(X: torch.Tensor) -> torch.Tensor:
    """Sample covariance of the data, (D, D), computed centred."""
    Xc = X - X.mean(0)
    return Xc.T @ Xc / max(X.shape[0] - 1, 1)


def check_model(model, name: str = "model") -> GaussianMixture:
    """``model`` if it is a :class:`~gmmlib.GaussianMixture`, else a ``ValueError`` that says so."""
    if not isinstance(model, GaussianMixture):
        raise ValueError(f"{name} must be a gmmlib.GaussianMixture, got {type(model).__name__}; build "
                         "one with gmmlib.GaussianMixture(n_components, n_features, covariance_type)"
                         + (" or convert a fitted scikit-learn model with GaussianMixture.from_sklearn"
                            if type(model).__module__.startswith("sklearn") else ""))
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


_INITIALIZE = {"model": check_model, "method": check_method, "reg_covar": check_nonnegative}


@torch.no_grad()
def _initialize(model, X: torch.Tensor, method: str, g: torch.Generator, reg_covar: float):
    """:func:`initialize` for validated arguments (the fits call this)."""
    K, D, family = model.n_components, model.n_features, model.family
    eps = torch.finfo(X.dtype).eps
    ws = Workspace(X, K, X.mean(0), family)  # the M-step's view of the data
    if method == "random":
        R = torch.rand(X.shape[0], K, generator=g, device=g.device, dtype=X.dtype).to(X.device)
        R /= R.sum(1, keepdim=True)  # (N, K)
        means = (R.T @ X) / R.sum(0).unsqueeze(-1)  # (K, D)
        resp = lambda block: R[block.a:block.b].T  # noqa: E731  (K, n)
    else:
        means = SEEDINGS[method](X, K, g)  # (K, D)
        labels = torch.cdist(X, means).argmin(-1)  # (N,)
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
        cov = COVARIANCE[family.name](S, m.count.clamp_min(1), reg_covar).to(X.dtype)
        if family.per_component:  # fewer than two points: the data covariance instead
            data = data_covariance(X) + reg_covar * torch.eye(D, dtype=X.dtype, device=X.device)
            data = family.project(data.expand(K, D, D), weights).reshape(cov.shape)
            cov = torch.where((counts >= 2).reshape(-1, *[1] * (cov.ndim - 1)), cov, data)
        raw = family.raw_from_covariance(cov, model.min_variance, error=(
            "initialisation gave a component a singular covariance (it holds duplicated points, "
            "or fewer points than features); pass reg_covar > 0 (e.g. 1e-6) or set a variance "
            "floor, min_variance > 0"))
    # written only now, every value computed (and checked): a raise leaves the model as it was
    model.set_parameters(weights=weights, means=means)
    if raw is not None:
        model.raw_scale.copy_(raw.reshape(model.raw_scale.shape))
    return model
