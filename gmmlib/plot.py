"""Plot helpers at the edge of gmmlib. Each takes ``ax`` first and returns it.

Densities are evaluated on a grid in ONE batched ``log_prob`` call (a 200×200 grid is 40,000
points in a single tensor), never in a Python loop over pixels. Models with more than two
features are drawn through their exact two-dimensional marginal on ``dims``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ._validation import as_data, check_positive_int

__all__ = ["COLOURS", "density_grid", "plot_density", "plot_ellipses", "plot_data", "plot_responsibilities",
           "responsibility_colours", "plot_fit", "plot_loss", "ellipse_points", "plot_selection"]


# Okabe & Ito's palette (2008, "Color Universal Design"): eight colours that readers with any
# common colour-vision deficiency can tell apart; blue, orange, bluish green, vermillion,
# reddish purple, sky blue, yellow, black. Component k is drawn in COLOURS[k % 8]. A notebook
# gives its own line plots the same cycle with
# ``plt.rcParams["axes.prop_cycle"] = plt.cycler(color=plot.COLOURS)``.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def _check_dims(n_features: int, dims) -> list:
    """``dims`` as a list of two distinct feature indices of ``n_features``, or a ValueError."""
    d = list(dims)
    valid = all(isinstance(i, (int, np.integer)) and 0 <= i < n_features for i in d)
    if len(d) != 2 or d[0] == d[1] or not valid:
        raise ValueError(f"dims must be two different feature indices in 0..{n_features - 1}, got "
                         f"{tuple(dims)}" + ("; a model or data with one feature has no 2-D picture"
                                             if n_features < 2 else ""))
    return d


def _columns(X, dims) -> np.ndarray:
    """The two columns ``dims`` of the data ``X`` (tensor or array), (N, 2), as NumPy."""
    Xn = np.asarray(X.detach().cpu() if torch.is_tensor(X) else X)
    if Xn.ndim != 2:
        raise ValueError(f"X must be 2-D with shape (n_samples, n_features), got shape {Xn.shape}; "
                         "the plot draws two of its columns (dims), so it needs two features or more")
    return Xn[:, _check_dims(Xn.shape[1], dims)]


def _params(model_or_snapshot, dims=(0, 1)):
    """(weights (K,), means (K, 2), covariances (K, 2, 2)) as NumPy arrays on ``dims``."""
    w, m, c = (np.asarray(getattr(model_or_snapshot, a).cpu() if torch.is_tensor(getattr(model_or_snapshot, a))
                          else getattr(model_or_snapshot, a)) for a in ("weights", "means", "covariances"))
    d = _check_dims(m.shape[1], dims)
    if not (np.isfinite(w).all() and np.isfinite(m).all() and np.isfinite(c).all()):
        # a blank heat map (every pixel NaN) or matplotlib's message about the axis limits
        raise ValueError("the model's weights, means or covariances hold NaN or infinity; there "
                         "is no density to draw (a fit that diverged? its history says so)")
    return w, m[:, d], c[:, d][:, :, d]


def _marginal(model, dims):
    """The exact marginal mixture of ``model`` on the two features ``dims``."""
    if model.n_features == 2 and tuple(dims) == (0, 1):
        return model
    from .mixture import GaussianMixture
    w, m, c = _params(model, dims)
    return GaussianMixture.from_parameters(w, m, c, "full", dtype=model.loc.dtype)


def _as_model(model_or_snapshot):
    """A :class:`~gmmlib.GaussianMixture` from a model (itself) or a :class:`~gmmlib.Snapshot`
    (its parameters, as a full-covariance model)."""
    from .mixture import GaussianMixture
    if isinstance(model_or_snapshot, GaussianMixture):
        return model_or_snapshot
    s = model_or_snapshot
    return GaussianMixture.from_parameters(s.weights, s.means, s.covariances, "full")


def _colors(colors, K: int, per=("component", "components")) -> list:
    """``colors`` (one per component, or per ``per``: singular and plural), or ``COLOURS``
    (Okabe-Ito) in turn when None."""
    if colors is None:
        return [COLOURS[k % len(COLOURS)] for k in range(K)]
    colors = list(colors)
    if len(colors) < K:
        raise ValueError(f"colors has {len(colors)} entries for {K} {per[1]}; pass one per {per[0]}")
    return colors


def _pair(value, name: str) -> tuple:
    """``value`` as (low, high), two finite floats (a tuple, list, array or tensor), or a ValueError."""
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or not all(map(math.isfinite, pair)):
        raise ValueError(f"{name} must be (low, high), two finite numbers, got {value!r}")
    return pair


def _limits(model, X, dims, pad=0.15):
    w, m, c = _params(model, dims)
    pts = [m]
    if X is not None:  # NaN or inf in X: the check every fit makes, before anything is drawn
        pts.append(_columns(as_data(X, name="X"), dims))
    else:
        s = 3 * np.sqrt(np.stack([np.diagonal(ci) for ci in c]))
        pts += [m - s, m + s]
    allp = np.concatenate(pts)
    lo, hi = allp.min(0), allp.max(0)
    span = np.maximum(hi - lo, 1e-9)
    return (lo[0] - pad * span[0], hi[0] + pad * span[0]), (lo[1] - pad * span[1], hi[1] + pad * span[1])


@torch.no_grad()
def density_grid(model, xlim, ylim, n: int = 200, dims=(0, 1)):
    """Log-density of ``model`` (or a :class:`~gmmlib.Snapshot`) on an ``n``×``n`` grid: returns
    (xx, yy, logp), each (n, n)."""
    n = check_positive_int(n, "n")
    xlim, ylim = _pair(xlim, "xlim"), _pair(ylim, "ylim")  # NaN limits gave an all-NaN grid
    _params(model, dims)  # finite parameters, or a ValueError saying so
    m = _marginal(_as_model(model), dims)
    xs = torch.linspace(*xlim, n, dtype=m.loc.dtype, device=m.loc.device)
    ys = torch.linspace(*ylim, n, dtype=m.loc.dtype, device=m.loc.device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)  # (n*n, 2)
    logp = m._log_prob(grid).reshape(n, n)
    return xx.cpu().numpy(), yy.cpu().numpy(), logp.cpu().numpy()


def plot_density(ax, model, X=None, *, xlim=None, ylim=None, n: int = 200, kind: str = "heatmap",
                 dims=(0, 1), cmap=None, levels=12, colorbar: bool = False, **kwargs):
    """Draw the mixture density of ``model`` (or a :class:`~gmmlib.Snapshot`) as a heat-map
    (``kind="heatmap"``) or contours (``"contour"``).

    The heat-map shows the density ``p(x)``, the contours the log-density at ``levels`` (a
    number of evenly spaced levels, or the levels themselves, increasing). ``colorbar=True``
    adds a colour bar beside ``ax`` labelled ``p(x)`` (heat-map) or ``log p(x)`` (contours);
    pass ``vmin``/``vmax`` to give several panels one scale. ``cmap`` defaults to
    ``"viridis"``; contours take ``colors=`` instead (e.g. ``colors="k"``). Other keywords go
    to ``imshow`` or ``contour``. Each heat-map pixel is centred on a grid point: the grid
    spans ``xlim`` and ``ylim`` from edge point to edge point. Returns ``ax``.
    """
    if kind not in ("heatmap", "contour"):
        raise ValueError(f"kind must be 'heatmap' or 'contour', got {kind!r}")
    if xlim is None or ylim is None:
        xl, yl = _limits(model, X, dims)
        xlim, ylim = xl if xlim is None else xlim, yl if ylim is None else ylim
    xlim, ylim = _pair(xlim, "xlim"), _pair(ylim, "ylim")
    xx, yy, logp = density_grid(model, xlim, ylim, n, dims)
    if cmap is None and "colors" not in kwargs:
        cmap = "viridis"
    if kind == "heatmap":
        # the grid points are pixel centres: the image reaches half a pixel beyond the limits
        hx, hy = ((hi - lo) / max(n - 1, 1) / 2 for lo, hi in (xlim, ylim))
        extent = (xlim[0] - hx, xlim[1] + hx, ylim[0] - hy, ylim[1] + hy)
        mappable = ax.imshow(np.exp(logp), origin="lower", extent=extent, aspect="auto",
                             cmap=cmap, **kwargs)
    else:
        mappable = ax.contour(xx, yy, logp, levels=levels, cmap=cmap, **kwargs)
    if colorbar:
        ax.figure.colorbar(mappable, ax=ax, label="p(x)" if kind == "heatmap" else "log p(x)")
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    return ax


def ellipse_points(mean, cov, nsig: float = 1.0, n: int = 100) -> np.ndarray:
    """Points (n, 2) on the ``nsig``-sigma ellipse ``(x-m)ᵀ Σ⁻¹ (x-m) = nsig²`` of a 2-D Gaussian."""
    mean, cov = np.asarray(mean, dtype=float), np.asarray(cov, dtype=float)
    if mean.shape != (2,) or not np.isfinite(mean).all():
        raise ValueError(f"mean must be two finite numbers, the centre of the ellipse, got {mean.tolist()}")
    if cov.shape != (2, 2):
        raise ValueError(f"cov must be a 2x2 covariance matrix, got shape {cov.shape}; of a larger "
                         "one, pass the two features' block cov[np.ix_(dims, dims)]")
    if np.abs(cov - cov.T).max() > 1e-6 * np.abs(cov).max():  # NaN passes to the check below
        raise ValueError(f"cov must be symmetric, got {cov.tolist()}; a covariance matrix equals "
                         "its transpose (symmetrise it with (cov + cov.T) / 2)")
    try:
        L = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError as exc:
        raise ValueError(f"cov must be a positive-definite 2x2 covariance to draw its ellipse, got "
                         f"{np.asarray(cov).tolist()}") from exc
    if not np.isfinite(L).all():
        raise ValueError(f"cov must be finite to draw its ellipse, got {np.asarray(cov).tolist()}")
    t = np.linspace(0, 2 * math.pi, n)
    circle = np.stack([np.cos(t), np.sin(t)])  # (2, n)
    return mean + nsig * (L @ circle).T


def plot_ellipses(ax, model, *, nsig=(1, 2), dims=(0, 1), colors=None, weight_alpha: bool = False, **kwargs):
    """Draw each component's 1σ and 2σ ellipses (any ``nsig``) and mark its mean.

    ``model`` may be a :class:`~gmmlib.GaussianMixture` or a :class:`~gmmlib.Snapshot`.
    Component k is drawn in ``colors[k]`` (default ``COLOURS``), its first ellipse solid and the
    others dashed, 1.8 points wide. Other keywords are matplotlib ``Line2D`` properties for the
    ellipses (``linewidth``/``lw``, ``linestyle``, ``color`` (all components), ``alpha``,
    ``zorder``, ...); ``color``, ``alpha`` and ``zorder`` also reach the marks of the means, and
    a ``label`` is given once, to the first ellipse, for the legend. ``weight_alpha=True`` scales
    the opacity by each component's weight relative to the largest. Returns ``ax``.
    """
    from matplotlib.cbook import normalize_kwargs
    from matplotlib.lines import Line2D

    kwargs = normalize_kwargs(kwargs, Line2D)  # lw -> linewidth, ls -> linestyle, c -> color
    label = kwargs.pop("label", None)
    w, m, c = _params(model, dims)
    colors = _colors(colors, len(w))
    for k in range(len(w)):
        alpha = kwargs.get("alpha", 1.0) * (0.3 + 0.7 * w[k] / w.max() if weight_alpha else 1.0)
        style = {"color": colors[k], **kwargs, "alpha": alpha}  # the caller's keywords win
        for j, s in enumerate(np.atleast_1d(nsig)):
            pts = ellipse_points(m[k], c[k], s)
            line = {"linewidth": 1.8, "linestyle": "-" if j == 0 else "--", **style}
            if label is not None and k == j == 0:
                line["label"] = label
            ax.plot(pts[:, 0], pts[:, 1], **line)
        mark = {key: style[key] for key in ("color", "alpha", "zorder") if key in style}
        ax.plot(*m[k], marker="x", ms=7, mew=2, **mark)
    return ax


def _scatter_defaults(kwargs: dict, c) -> dict:
    """``scatter``'s keywords: ``kwargs`` over the defaults ``c`` (colours) and no marker edge;
    a colour or line width of the caller's replaces the default, under any of its names."""
    defaults = {}
    if not {"c", "color", "facecolor", "facecolors", "fc"} & kwargs.keys():
        defaults["c"] = c
    if not {"linewidths", "linewidth", "lw"} & kwargs.keys():
        defaults["linewidths"] = 0
    return {**defaults, **kwargs}


def plot_data(ax, X, labels=None, *, dims=(0, 1), s: float = 6, alpha: float = 0.5, **kwargs):
    """Scatter the data, black or coloured by ``labels`` (``COLOURS[label % 8]``) when given.

    Other keywords go to ``ax.scatter`` and override these defaults: a ``color`` or ``c`` of
    your own replaces the default colours, ``linewidths`` the marker edges' width 0.
    Returns ``ax``.
    """
    xy = _columns(X, dims)  # (N, 2)
    c = "k"
    if labels is not None:
        k = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).reshape(-1)  # (N,)
        whole = np.issubdtype(k.dtype, np.integer) or (
            np.issubdtype(k.dtype, np.floating) and bool(np.all(np.isfinite(k) & (k == np.round(k)))))
        if len(k) != len(xy) or not whole:
            raise ValueError(f"labels must be {len(xy)} whole numbers, one per row of X, got "
                             f"{len(k)} values of dtype {k.dtype}; pass the components' "
                             "indices, e.g. model.predict(X)")
        c = [COLOURS[int(i) % len(COLOURS)] for i in k]
    ax.scatter(xy[:, 0], xy[:, 1], s=s, alpha=alpha, **_scatter_defaults(kwargs, c))
    return ax


def responsibility_colours(model, X, colors=None) -> np.ndarray:
    """RGB colours (N, 3): each point's mix of its components' colours, weighted by the
    responsibilities r_nk = p(k | x_n) (a point a component owns outright takes its colour).

    ``colors`` defaults to ``COLOURS``, Okabe and Ito's colour-blind-safe palette (blue,
    orange, bluish green, ...); avoid red/green pairs, which many readers cannot tell apart.
    ``model`` may be a :class:`~gmmlib.GaussianMixture` or a :class:`~gmmlib.Snapshot`; the
    responsibilities use every feature of ``X``.
    """
    from matplotlib.colors import to_rgb

    R = _as_model(model).predict_proba(X).cpu().numpy()  # (N, K)
    K = R.shape[1]
    palette = np.array([to_rgb(c) for c in _colors(colors, K)])  # (K, 3)
    return (R @ palette).clip(0, 1)


def plot_responsibilities(ax, model, X, *, dims=(0, 1), colors=None, s: float = 5,
                          size_by_max: bool = False, key: bool = False, **kwargs):
    """Scatter ``X`` with each point coloured by its responsibilities under ``model`` (see
    :func:`responsibility_colours`): the E-step, drawn.

    ``size_by_max=True`` makes each marker's area ``s * max_k r_nk``: a point one component
    owns outright is drawn at full size, a point shared by several smaller (as in
    VanderPlas's *Python Data Science Handbook*). ``key=True`` adds a legend naming the colour
    of each component. Other keywords go to ``ax.scatter`` and override the defaults, as in
    :func:`plot_data`. Returns ``ax``.
    """
    xy = _columns(X, dims)  # (N, 2)
    colours = responsibility_colours(model, X, colors)  # (N, 3)
    size = s
    if size_by_max:
        size = s * _as_model(model).predict_proba(X).cpu().numpy().max(1)  # (N,)
    ax.scatter(xy[:, 0], xy[:, 1], s=size, **_scatter_defaults(kwargs, colours))
    if key:
        K = _as_model(model).n_components
        for k, c in enumerate(_colors(colors, K)[:K]):
            ax.scatter([], [], color=c, s=max(float(s), 20.0), label=f"component {k + 1}")
        ax.legend(fontsize="small")
    return ax


def _subscript(i: int) -> str:
    return str(i).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


def plot_fit(ax, model, X, *, labels=None, dims=(0, 1), kind: str = "contour", title: str | None = None,
             quantiles=(0.05, 0.5), n: int = 200):
    """Data, density and ellipses of a fitted model (or a :class:`~gmmlib.Snapshot`) in one panel.

    With ``kind="contour"`` the log-density is drawn only where the data are: at the
    ``quantiles`` of the data's own log-densities under the model, each contour labelled with
    the share of the points it encloses (the contour at quantile ``q`` encloses the ``1 - q``
    of the points the model finds most likely: by default 95 % and 50 %). ``kind="heatmap"``
    draws the density as a heat-map instead. The axes are labelled x₁, x₂ (the features
    ``dims``, counted from 1); ``n`` is the grid size. Returns ``ax``.
    """
    xlim, ylim = _limits(model, X, dims)
    if kind == "contour":
        xy = _columns(X, dims)
        with torch.no_grad():
            logp = _marginal(_as_model(model), dims).log_prob(xy).cpu().numpy()  # (N,)
        qs = sorted(float(q) for q in np.atleast_1d(quantiles))
        levels = np.quantile(logp[np.isfinite(logp)], qs) if np.isfinite(logp).any() else []
        levels, first = np.unique(levels, return_index=True)  # contour needs increasing levels
        if len(levels):
            xx, yy, grid = density_grid(model, xlim, ylim, n, dims)
            cs = ax.contour(xx, yy, grid, levels=levels, colors="0.55", linewidths=0.9,
                            linestyles="solid")
            names = {float(lv): f"{100 * (1 - qs[i]):.0f}%" for lv, i in zip(levels, first)}
            ax.clabel(cs, fmt=lambda lv: names.get(float(lv), ""), fontsize=7, inline=True,
                      colors="0.3")
        ax.set_xlim(xlim)
        ax.set_ylim(ylim)
    else:
        plot_density(ax, model, xlim=xlim, ylim=ylim, n=n, kind=kind, dims=dims)
    plot_data(ax, X, labels, dims=dims)
    plot_ellipses(ax, model, dims=dims)
    ax.set_xlabel(f"x{_subscript(dims[0] + 1)}")
    ax.set_ylabel(f"x{_subscript(dims[1] + 1)}")
    if title:
        ax.set_title(title)
    return ax


def plot_loss(ax, history, *, label: str | None = None, x: str = "step", shift: float | None = None,
              logy: bool = False, **kwargs):
    """Loss curve of a :class:`~gmmlib.FitHistory` against steps (``x="step"``) or seconds (``"time"``).

    With ``shift`` the curve shows ``loss - shift`` (e.g. the distance to the optimum, log-scaled).
    """
    if x not in ("step", "time"):
        raise ValueError(f"x must be 'step' or 'time' (seconds), got {x!r}")
    loss = np.asarray(history.loss, dtype=float)
    xs = np.arange(len(loss)) if x == "step" else np.asarray(history.time, dtype=float)
    ys = loss - shift if shift is not None else loss
    ax.plot(xs, ys, label=label, **kwargs)
    for step, _ in getattr(history, "resets", []):
        if x == "step":
            ax.axvline(step, color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("step" if x == "step" else "seconds")
    ax.set_ylabel("mean NLL" if shift is None else "mean NLL − optimum")
    if logy:
        ax.set_yscale("log")
    return ax


_CRITERION_LABELS = {"bic": "BIC", "aic": "AIC", "heldout": "held-out NLL per point",
                     "cv": "cross-validated NLL per point"}


def plot_selection(axes, selection, criteria=None, *, colors=None, error_bars: bool = False):
    """One panel per criterion of a :class:`~gmmlib.Selection`: the criterion against the number
    of components, one line per covariance family, the lowest point of each panel starred.

    Parameters
    ----------
    axes : matplotlib Axes or sequence of Axes
        One per criterion.
    selection : Selection
        From :func:`~gmmlib.select_model`.
    criteria : str or sequence of str, optional
        Any of the candidates' ``scores`` (``"bic"``, ``"aic"``, ``"heldout"``, ``"cv"``), one
        name or several; default: all that the selection computed, in that order.
    colors : sequence, optional
        One colour per family (default ``COLOURS``, in the order of the grid's families).
    error_bars : bool, default False
        Shade ± one standard error on ``"cv"`` (the candidates' ``"cv_se"``). Off by default:
        two candidates are scored on the same points, so compare them by the standard error of
        their paired differences (from ``Candidate.cv_nll``), which is usually far smaller.

    Returns
    -------
    list of Axes
    """
    first = selection.candidates[0].scores
    if isinstance(criteria, str):
        criteria = [criteria]
    criteria = [c for c in _CRITERION_LABELS if c in first] if criteria is None else list(criteria)
    axes = list(np.atleast_1d(axes))
    if len(axes) != len(criteria):
        raise ValueError(f"axes must hold one Axes per criterion: {len(criteria)} criteria "
                         f"{criteria}, got {len(axes)} axes")
    missing = [c for c in criteria if c not in first]
    if missing:
        raise ValueError(f"the selection has no {missing} scores; it holds {sorted(first)} "
                         "(held-out needs X_val, cv needs criterion='cv' in select_model)")
    families = list(dict.fromkeys(c.covariance_type for c in selection.candidates))
    colors = _colors(colors, len(families), per=("covariance family", "covariance families"))
    styles = ["-", "--", ":", "-."]
    for ax, criterion in zip(axes, criteria):
        best = selection.best_by(criterion)
        for i, family in enumerate(families):
            cands = sorted((c for c in selection.candidates if c.covariance_type == family),
                           key=lambda c: c.n_components)
            Ks = [c.n_components for c in cands]
            ys = np.array([c.scores[criterion] for c in cands])
            ax.plot(Ks, ys, styles[i % 4], marker="o", ms=4, color=colors[i], label=family)
            if criterion == "cv" and error_bars and "cv_se" in cands[0].scores:
                se = np.array([c.scores["cv_se"] for c in cands])
                ax.fill_between(Ks, ys - se, ys + se, color=colors[i], alpha=0.12, lw=0)
        ax.plot(best.n_components, best.scores[criterion], "*", ms=16, color="k", zorder=5,
                label=f"lowest: {best.covariance_type}, K = {best.n_components}")
        ax.set(xlabel="number of components K", ylabel=_CRITERION_LABELS.get(criterion, criterion))
    return axes
