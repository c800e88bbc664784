"""No public entry point of gmmlib that takes data modifies its inputs, whatever their memory
layout, and none gives a result that depends on the layout.

The test is one table: every (entry point, layout) pair below. An entry point is a small
function ``call(lay) -> {name: result}`` that builds each array argument it takes as
``lay(values)``: the values (a contiguous float64 NumPy array) in the layout under test. The
test runs it twice:

1. with the layout: afterwards every array it was given, and the array each view looks into,
   must be bit-for-bit what it was before (shape, dtype, strides and bytes);
2. with a fresh contiguous copy of the same values in the same dtype (float64 for ints and
   lists), the same seeds: the results must agree, exactly or to 1e-12 relative in float64
   (1e-5 in float32) -- for fits the fitted weights, means, covariances and the loss history.

Some layouts only fit some entry points: one row and an expanded (stride-0) tensor are
evaluated, never fitted (fitting needs more points than components, and identical points are
degenerate); a plot needs two features; MDNHead takes float tensors only.
"""
from __future__ import annotations

import copy
import functools
import warnings
from dataclasses import dataclass
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import gmmlib
from gmmlib import plot as gplot

ConvergenceWarning = getattr(gmmlib, "ConvergenceWarning", RuntimeWarning)  # whichever module holds it


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------
# the values
# ------------------------------------------------------------------------------------------------
N, K = 48, 2


def _blobs(seed: int, n: int = N) -> np.ndarray:
    """Two 3-D clusters, (n, 3) float64, spread wide enough that rounding to int keeps them fit-able."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-3.0, -2.0, 1.0], [3.0, 2.0, -1.0]])
    return centres[np.arange(n) % 2] + rng.normal(scale=1.3, size=(n, 3))


DATA = _blobs(0)  # what the layouts rearrange
TRAIN = _blobs(1)  # what the models evaluated on DATA were fitted to (always contiguous)
TARGETS = _blobs(2)[:, :2] * 0.5  # MDN targets
WEIGHTS = np.array([0.25, 0.75])  # exact in float32, rounds to [0, 1]
MEANS = np.array([[-2.6, -1.7, 0.8], [3.2, 2.3, -1.4]])
VARIANCES = np.array([[1.3, 2.7, 1.6], [2.4, 1.2, 3.3]])  # diagonal covariances; ints stay > 0
PRECISIONS = 1.0 / VARIANCES * 3.0  # in [0.9, 2.5]: rounded they stay > 0


# ------------------------------------------------------------------------------------------------
# the layouts: make(V) -> (input, [arrays the input views into]); V is 1-D or 2-D float64
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    name: str
    make: Callable
    kind: str = "numpy"  # numpy, list or torch
    float32: bool = False
    evaluation_only: bool = False  # one row, stride 0: not for fitting

    def __repr__(self):
        return self.name


def _filler(V):
    return V[::-1] * 7.0 + 100.0  # values that change every result if read by mistake


def _np_reversed(V):
    base = V[::-1].copy()
    return base[::-1], [base]


def _np_rows2(V):
    base = np.empty((2 * V.shape[0],) + V.shape[1:])
    base[::2], base[1::2] = V, _filler(V)
    return base[::2], [base]


def _np_cols2(V):
    if V.ndim == 1:
        return _np_rows2(V)
    wide = np.empty((V.shape[0], 2 * V.shape[1]))
    wide[:, ::2], wide[:, 1::2] = V, _filler(V)
    return wide[:, ::2], [wide]


def _one_feature(V):
    return V[:, :1].copy() if V.ndim == 2 else V.copy()


def _one_row(V):
    return V[:1].copy() if V.ndim == 2 else V.copy()


def _t_transposed(V):
    if V.ndim == 1:  # a strided column of a contiguous (n, 2) tensor
        base = torch.tensor(np.stack([V, _filler(V)], axis=1))
        return base[:, 0], [base]
    base = torch.tensor(V.T.copy())  # (D, N), contiguous
    return base.t(), [base]


def _t_expanded(V):
    if V.ndim == 1:  # uniform values (weights still sum to 1)
        base = torch.tensor([V.mean()])
        return base.expand(V.shape[0]), [base]
    base = torch.tensor(V[0].copy())
    return base.expand(V.shape), [base]


def _t_colslice(V):
    if V.ndim == 1:
        base = torch.tensor(np.stack([_filler(V), V, _filler(V)], axis=1))
        return base[:, 1], [base]
    f = _filler(V)
    base = torch.tensor(np.concatenate([f[:, :1], V, f[:, -1:]], axis=1))  # (N, D + 2)
    return base[:, 1:V.shape[1] + 1], [base]


def _t_rows2(V):
    a, [b] = _np_rows2(V)
    base = torch.tensor(b)
    return base[::2], [base]


LAYOUTS = [
    Layout("np_C", lambda V: (V.copy(), [])),
    Layout("np_F", lambda V: (np.asfortranarray(V.copy()), [])),
    Layout("np_reversed", _np_reversed),
    Layout("np_rows_stride2", _np_rows2),
    Layout("np_cols_stride2", _np_cols2),
    Layout("np_one_feature", lambda V: (_one_feature(V), [])),
    Layout("np_one_row", lambda V: (_one_row(V), []), evaluation_only=True),
    Layout("np_int64", lambda V: (np.rint(V).astype(np.int64), [])),
    Layout("np_float32", lambda V: (V.astype(np.float32), []), float32=True),
    Layout("list", lambda V: (V.tolist(), []), kind="list"),
    Layout("torch_f64", lambda V: (torch.tensor(V), []), kind="torch"),
    Layout("torch_f32", lambda V: (torch.tensor(V, dtype=torch.float32), []), kind="torch", float32=True),
    Layout("torch_transposed", _t_transposed, kind="torch"),
    Layout("torch_expanded", _t_expanded, kind="torch", evaluation_only=True),
    Layout("torch_col_slice", _t_colslice, kind="torch"),
    Layout("torch_rows_stride2", _t_rows2, kind="torch"),
    Layout("torch_one_feature", lambda V: (torch.tensor(_one_feature(V)), []), kind="torch"),
    Layout("torch_one_row", lambda V: (torch.tensor(_one_row(V)), []), kind="torch", evaluation_only=True),
]


def fresh_copy(x):
    """A contiguous copy of the same values in the same dtype; float64 NumPy for ints and lists."""
    if isinstance(x, torch.Tensor):
        return x.contiguous().clone()
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    return np.ascontiguousarray(a).copy()


def snapshot(x):
    if isinstance(x, torch.Tensor):
        return x.clone()  # clone keeps the strides of a dense tensor; the record below keeps them anyway
    if isinstance(x, np.ndarray):
        return np.array(x, copy=True)
    return copy.deepcopy(x)


def unchanged(x, before) -> str | None:
    """None when ``x`` is bit-for-bit ``before`` (and has kept its shape, dtype, strides), else why not."""
    if isinstance(x, torch.Tensor):
        if x.dtype != before.dtype or x.shape != before.shape:
            return f"now {x.dtype} {tuple(x.shape)}, was {before.dtype} {tuple(before.shape)}"
        same = torch.equal(x, before) and x.numpy().tobytes() == before.numpy().tobytes()
        return None if same else f"values changed: max |change| {float((x - before).abs().max()):.3g}"
    if isinstance(x, np.ndarray):
        if x.dtype != before.dtype or x.shape != before.shape:
            return f"now {x.dtype} {x.shape}, was {before.dtype} {before.shape}"
        same = np.array_equal(x, before) and x.tobytes() == before.tobytes()
        return None if same else f"values changed: max |change| {np.abs(x - before).max():.3g}"
    return None if x == before and type(x) is type(before) else "the list changed"


# ------------------------------------------------------------------------------------------------
# what the entry points need, built from what a layout hands them
# ------------------------------------------------------------------------------------------------
def shape_of(x) -> tuple:
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def dtype_of(x) -> torch.dtype:
    """The dtype a model takes for input ``x``: float32 for float32 input, float64 otherwise."""
    is32 = getattr(x, "dtype", None) in (torch.float32, np.float32)
    return torch.float32 if is32 else torch.float64


def fixed_model(X, family="full") -> gmmlib.GaussianMixture:
    """A mixture with fixed parameters over X's features, in X's float dtype."""
    D = shape_of(X)[1]
    if family == "diagonal":
        covs = VARIANCES[:, :D]
    else:  # correlated: 0.3 off the diagonal
        covs = np.stack([np.diag(v) + 0.3 * (np.ones((D, D)) - np.eye(D)) for v in VARIANCES[:, :D]])
    return gmmlib.GaussianMixture.from_parameters(WEIGHTS, MEANS[:, :D], covs, family, dtype=dtype_of(X))


def fitted_em(X, **kwargs) -> gmmlib.GaussianMixtureEM:
    """A GaussianMixtureEM fitted to contiguous TRAIN data with X's features and float dtype."""
    D = shape_of(X)[1]
    train = TRAIN[:, :D].astype(np.float32 if dtype_of(X) == torch.float32 else np.float64)
    return gmmlib.GaussianMixtureEM(K, random_state=0, max_iter=3, **kwargs).fit(train)


def params(model) -> dict:
    return {"weights": model.weights.numpy(), "means": model.means.numpy(),
            "covariances": model.covariances.numpy()}


def em_params(est) -> dict:
    return {"weights": est.weights_, "means": est.means_, "covariances": est.covariances_,
            "lower_bounds": np.asarray(est.lower_bounds_)}


def new_model(X, family="full"):
    return gmmlib.GaussianMixture(K, shape_of(X)[1], family, dtype=dtype_of(X))


def numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def figure(draw):
    fig, ax = plt.subplots()
    try:
        draw(ax)
        out = {f"offsets{i}": np.asarray(c.get_offsets()) for i, c in enumerate(ax.collections)
               if hasattr(c, "get_offsets") and len(c.get_offsets())}
        out |= {f"colours{i}": np.asarray(c.get_facecolors()) for i, c in enumerate(ax.collections)
                if hasattr(c, "get_facecolors")}
        out |= {f"image{i}": np.asarray(im.get_array()) for i, im in enumerate(ax.images)}
        out |= {"xlim": np.array(ax.get_xlim()), "ylim": np.array(ax.get_ylim())}
        return out
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------
# the entry points: call(lay) -> {name: result}
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    name: str
    call: Callable
    fits: bool = False  # fits the data: needs more rows than components, distinct rows
    needs_2d: bool = False  # plots: two features
    tensors_only: bool = False  # MDNHead, kmeans_plusplus: float tensors

    def __repr__(self):
        return self.name

    def accepts(self, layout: Layout) -> bool:
        return not ((self.fits and layout.evaluation_only)
                    or (self.needs_2d and "one_feature" in layout.name)
                    or (self.tensors_only and (layout.kind != "torch")))


def _fit_gd(lay, family="full", **kw):
    X = lay(DATA)
    model = new_model(X, family)
    h = gmmlib.fit_gd(model, X, iterations=6, generator=0, progress=False, **kw)
    return params(model) | {"loss": np.asarray(h.loss)}


def _fit_em(lay, family="full", **kw):
    X = lay(DATA)
    model = new_model(X, family)
    h = gmmlib.fit_em(model, X, max_iter=3, generator=0, progress=False, **kw)
    return params(model) | {"loss": np.asarray(h.loss)}


def _initialize(lay, method):
    X = lay(DATA)
    return params(gmmlib.initialize(new_model(X), X, method, generator=0))


def _kmeans_plusplus(lay):
    X = lay(DATA)
    return {"centres": numpy(gmmlib.kmeans_plusplus(X, K, torch.Generator().manual_seed(0)))}


def _select(lay, heldout=False):
    X = lay(DATA)
    kw = {"criterion": "heldout", "X_val": lay(TRAIN)} if heldout else {}
    sel = gmmlib.select_model(X, [1, 2], ["full", "diagonal"], generator=0, max_iter=3, **kw)
    return {"scores": np.array([c.score for c in sel.candidates])} | params(sel.best.model)


def _gm(method, family="full"):
    def call(lay):
        X = lay(DATA)
        return {"out": numpy(getattr(fixed_model(X, family), method)(X))}
    return call


def _parameter_arrays(lay):
    """weights, means, diagonal covariances in the layout, consistent in K and D."""
    means = lay(MEANS)
    k, D = shape_of(means)
    weights = lay(WEIGHTS[:k] / WEIGHTS[:k].sum())
    return weights, means, lay(VARIANCES), D


def _set_parameters(lay):
    w, m, c, D = _parameter_arrays(lay)
    model = gmmlib.GaussianMixture(len(w), D, "diagonal", dtype=torch.float64)
    return params(model.set_parameters(weights=w, means=m, covariances=c))


def _from_parameters(lay):
    w, m, c, _ = _parameter_arrays(lay)
    return params(gmmlib.GaussianMixture.from_parameters(w, m, c, "diagonal"))


def _em_fit(lay):
    X = lay(DATA)
    return em_params(gmmlib.GaussianMixtureEM(K, random_state=0, max_iter=3).fit(X))


def _em_fit_predict(lay):
    X = lay(DATA)
    est = gmmlib.GaussianMixtureEM(K, random_state=0, max_iter=3)
    return {"labels": est.fit_predict(X)} | em_params(est)


def _em_warm_start(lay):
    X = lay(DATA)
    est = gmmlib.GaussianMixtureEM(K, random_state=0, max_iter=2, warm_start=True).fit(X)
    first = em_params(est)
    return {f"first_{k}": v for k, v in first.items()} | em_params(est.fit(X))


def _em_init_arrays(lay):
    """weights_init, means_init, precisions_init in the layout; the data contiguous."""
    means = lay(MEANS)
    k, D = shape_of(means)
    est = gmmlib.GaussianMixtureEM(k, covariance_type="diag", max_iter=2, random_state=0,
                                   weights_init=lay(WEIGHTS[:k] / WEIGHTS[:k].sum()),
                                   means_init=means, precisions_init=lay(PRECISIONS))
    return em_params(est.fit(TRAIN[:, :D].copy()))


def _em_method(method):
    def call(lay):
        X = lay(DATA)
        return {"out": np.asarray(getattr(fitted_em(X), method)(X))}
    return call


def _em_method_diag(lay):
    X = lay(DATA)
    return {"out": fitted_em(X, covariance_type="diag").score_samples(X)}


def _plot(draw):
    def call(lay):
        X = lay(DATA)
        return figure(lambda ax: draw(ax, fixed_model(X), X))
    return call


def _responsibility_colours(lay):
    X = lay(DATA)
    return {"out": gplot.responsibility_colours(fixed_model(X), X)}


def _mdn(family, method):
    def call(lay):
        h, y = lay(DATA), lay(TARGETS)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            head = gmmlib.MDNHead(h.shape[1], K, y.shape[1], family).to(h.dtype)
        if method == "nll":
            loss = head.nll(h, y)
            loss.backward()
            return {"nll": numpy(loss)} | {n: numpy(p.grad) for n, p in head.named_parameters()}
        out = head(h)
        return {"log_prob": numpy(out.log_prob(y)), "component_log_prob": numpy(out.component_log_prob(y)),
                "mean": numpy(out.mean), "variance": numpy(out.variance), "mode": numpy(out.mode),
                "log_weights": numpy(out.log_weights)}
    return call


def _fit_mdn(lay):
    h, y = lay(DATA), lay(TARGETS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(np.shape(h)[1], 4), torch.nn.Tanh(),
                                  gmmlib.MDNHead(4, K, np.shape(y)[1])).double()
    history = gmmlib.fit_mdn(net, h, y, steps=5, progress=False)
    return {"loss": np.asarray(history.loss)} | {n: numpy(p) for n, p in net.named_parameters()}


ENTRIES = [
    # fitting functions
    Entry("fit_gd", _fit_gd, fits=True),
    Entry("fit_gd[diagonal,batch_size=16]", functools.partial(_fit_gd, family="diagonal", batch_size=16), fits=True),
    Entry("fit_em", _fit_em, fits=True),
    Entry("fit_em[diagonal]", functools.partial(_fit_em, family="diagonal"), fits=True),
    Entry("initialize[kmeans]", functools.partial(_initialize, method="kmeans"), fits=True),
    Entry("initialize[random_from_data]", functools.partial(_initialize, method="random_from_data"), fits=True),
    Entry("kmeans_plusplus", _kmeans_plusplus, fits=True, tensors_only=True),  # takes a tensor
    Entry("select_model", _select, fits=True),
    Entry("select_model[heldout, X_val]", functools.partial(_select, heldout=True), fits=True),
    # GaussianMixture
    *[Entry(f"GaussianMixture.{m}", _gm(m)) for m in
      ("log_prob", "component_log_prob", "nll", "predict_proba", "predict", "bic", "aic")],
    Entry("GaussianMixture.log_prob[diagonal]", _gm("log_prob", "diagonal")),
    Entry("GaussianMixture.set_parameters", _set_parameters),
    Entry("GaussianMixture.from_parameters", _from_parameters),
    # GaussianMixtureEM
    Entry("GaussianMixtureEM.fit", _em_fit, fits=True),
    Entry("GaussianMixtureEM.fit_predict", _em_fit_predict, fits=True),
    Entry("GaussianMixtureEM.fit[warm_start]", _em_warm_start, fits=True),
    Entry("GaussianMixtureEM(*_init arrays).fit", _em_init_arrays),
    *[Entry(f"GaussianMixtureEM.{m}", _em_method(m)) for m in
      ("predict", "predict_proba", "score", "score_samples", "bic", "aic")],
    Entry("GaussianMixtureEM.score_samples[diag]", _em_method_diag),
    # plots
    Entry("plot.plot_data", _plot(lambda ax, model, X: gplot.plot_data(ax, X)), needs_2d=True),
    Entry("plot.plot_fit", _plot(lambda ax, model, X: gplot.plot_fit(ax, model, X)), needs_2d=True),
    Entry("plot.plot_responsibilities", _plot(gplot.plot_responsibilities), needs_2d=True),
    Entry("plot.plot_density[X]", _plot(lambda ax, model, X: gplot.plot_density(ax, model, X, n=16)), needs_2d=True),
    Entry("plot.responsibility_colours", _responsibility_colours),
    # the mixture density network head
    Entry("MDNHead.nll+backward[diagonal]", _mdn("diagonal", "nll"), tensors_only=True),
    Entry("MDNHead.nll+backward[full]", _mdn("full", "nll"), tensors_only=True),
    Entry("MDNHead.forward+log_prob[diagonal]", _mdn("diagonal", "forward"), tensors_only=True),
    Entry("MDNHead.forward+log_prob[full]", _mdn("full", "forward"), tensors_only=True),
    Entry("fit_mdn", _fit_mdn),
]

CASES = [pytest.param(e, lay, id=f"{e.name}-{lay.name}") for e in ENTRIES for lay in LAYOUTS if e.accepts(lay)]


# ------------------------------------------------------------------------------------------------
# the test
# ------------------------------------------------------------------------------------------------
def run(entry: Entry, lay) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return entry.call(lay)


def differences(got: dict, want: dict, tol: float) -> list:
    out = []
    assert got.keys() == want.keys()
    for key in want:
        a, b = np.asarray(got[key]), np.asarray(want[key])
        if a.shape != b.shape:
            out.append(f"{key}: shape {a.shape} != {b.shape}")
        elif not np.issubdtype(b.dtype, np.floating):
            if not np.array_equal(a, b):
                out.append(f"{key}: {np.count_nonzero(a != b)} of {b.size} differ")
        elif b.size:
            scale = max(1.0, float(np.nanmax(np.abs(b))))
            if not np.allclose(a, b, rtol=tol, atol=tol * scale, equal_nan=True):
                out.append(f"{key}: max |difference| {float(np.nanmax(np.abs(a - b))):.3g} (scale {scale:.3g})")
    return out


@pytest.mark.parametrize("entry, layout", CASES)
def test_input_unchanged_and_result_independent_of_layout(entry: Entry, layout: Layout):
    given = []  # (what, array, its copy before the call)

    def lay(values):
        x, bases = layout.make(np.array(values, dtype=np.float64))
        given.append((f"input #{len(given)}", x, snapshot(x)))
        given.extend((f"base of input #{len(given) - 1}", b, snapshot(b)) for b in bases)
        return x

    def lay_contiguous(values):
        return fresh_copy(layout.make(np.array(values, dtype=np.float64))[0])

    got = run(entry, lay)
    problems = [f"{what} modified ({why})" for what, x, before in given
                if (why := unchanged(x, before)) is not None]
    want = run(entry, lay_contiguous)
    tol = 1e-5 if layout.float32 else 1e-12
    problems += [f"result differs from a contiguous copy's: {d}" for d in differences(got, want, tol)]
    assert not problems, f"{entry.name} on {layout.name}:\n  " + "\n  ".join(problems)


def test_the_table_covers_every_layout_and_entry_point():
    assert {c.values[1].name for c in CASES} == {lay.name for lay in LAYOUTS}
    assert {c.values[0].name for c in CASES} == {e.name for e in ENTRIES}
