"""Interactive figures that work both live in Jupyter and in the static HTML book.

Every control in the book comes in two forms drawn by the SAME function:

* :func:`interactive` – live: ipywidgets controls redraw one figure in Jupyter (a kernel runs
  ``draw`` again on every change);
* :func:`frames` – static: the figure is precomputed for a list of values and shown with a slider
  (``matplotlib.animation.FuncAnimation(...).to_jshtml()``), so a reader of the HTML, with no
  kernel, still moves a slider and sees the picture change.

A chapter writes ``draw(ax, ...)`` once and calls both::

    def draw(ax, rho=0.0, sigma=1.0):
        ...                                   # plot on ax, return nothing

    interactive(draw, rho=(-0.95, 0.95, 0.05), sigma=log_slider("sigma", 0.1, 10, 1.0))
    frames(lambda ax, r: draw(ax, rho=r), np.linspace(-0.9, 0.9, 13), label="rho")

Nothing here prints: a callback's stray stdout would be recorded by nbval as cell output. The
figures are :class:`matplotlib.figure.Figure` objects made without ``pyplot``, so no extra static
copy of them lands in the notebook. matplotlib, ipywidgets and IPython are imported inside the
functions, so ``import gmmlib`` stays light.
"""
from __future__ import annotations

import base64
import hashlib
import io
import itertools
import math
import numbers
import re
import tempfile
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

from .._validation import check_positive, check_positive_int

__all__ = ["frames", "interactive", "log_slider"]


def _figure(figsize):
    """A pyplot-free figure and its single axes (nothing is displayed behind our back)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots()


def _clear(fig, ax) -> None:
    """Undo the previous ``draw``: clear ``ax`` and remove what it added to the figure beside it
    (a colour bar's axes, figure legends and texts; the suptitle is kept and rewritten), so that
    every frame and redraw starts from the same figure."""
    for other in fig.axes:
        if other is not ax:
            bar = getattr(other, "_colorbar", None)  # a colour bar gives its space back to ax
            (bar or other).remove()
    for artist in [*fig.legends, *(t for t in fig.texts if t is not getattr(fig, "_suptitle", None))]:
        artist.remove()
    ax.clear()
    ax.set_subplotspec(ax.get_subplotspec())  # back to the first frame's position (a colour bar shrank it)


def _format(fmt: str, value) -> str:
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def frames(draw: Callable[[Any, Any], Any], values: Iterable, *, figsize=(5, 4),
           label: str | None = None, fmt: str = "{:.3g}", interval: int = 400, dpi: float = 80):
    """Precompute one figure per value and show them with a slider (works with no kernel).

    This is the static form of a widget: the HTML book cannot run Python, so the figure is drawn
    for every value in advance and embedded as PNG frames with a JavaScript slider and play
    buttons. It does not start playing on its own.

    Parameters
    ----------
    draw : callable
        ``draw(ax, value)`` plots on ``ax`` for one value; the axes is cleared before each call,
        and whatever the previous call added to the figure beside it (a colour bar, a figure
        legend) removed; the return value is ignored.
    values : iterable
        The values, one frame each, in slider order (e.g. ``np.linspace(-0.9, 0.9, 13)`` or a
        list of fit snapshots). Keep it to a few dozen: every frame is an embedded PNG.
    figsize : (float, float), default (5, 4)
        Figure size in inches.
    label : str, optional
        If given, each frame's figure title reads ``f"{label} = {fmt.format(value)}"``.
    fmt : str, default "{:.3g}"
        Format of the value in the title; values it cannot format are shown with ``str``.
    interval : int, default 400
        Milliseconds between frames when the reader presses play.
    dpi : float, default 80
        Resolution of the embedded frames (80 keeps a 30-frame animation near 1 MB), whatever
        ``rcParams["savefig.dpi"]`` says.

    Returns
    -------
    IPython.display.HTML
        The animation; as the last expression of a cell it is displayed. Its plain-text form is
        the constant ``<IPython.core.display.HTML object>``, so nbval sees no difference between
        runs.

    Raises
    ------
    ValueError
        If ``values`` is empty, ``draw`` is not callable, or ``interval`` or ``dpi`` is not
        positive.

    Examples
    --------
    >>> import numpy as np
    >>> html = frames(lambda ax, s: ax.plot(np.sin(s * np.linspace(0, 6, 50))), [1, 2, 3],
    ...               label="s")
    >>> html.data.count("frames[2]")
    1
    """
    if not callable(draw):
        raise ValueError(f"draw must be a function draw(ax, value), got {type(draw).__name__}; "
                         "pass the plotting function itself, not its result.")
    values = list(values)
    if not values:
        raise ValueError("values is empty: pass at least one value to draw a frame for, "
                         "e.g. np.linspace(lo, hi, 11).")
    interval = check_positive_int(interval, "interval")
    dpi = check_positive(dpi, "dpi")
    from IPython.display import HTML
    from matplotlib.animation import FuncAnimation, HTMLWriter

    fig, ax = _figure(figsize)
    fig.set_dpi(dpi)

    def update(i):
        _clear(fig, ax)
        draw(ax, values[i])
        if label is not None:
            fig.suptitle(f"{label} = {_format(fmt, values[i])}")
        return []

    anim = FuncAnimation(fig, update, frames=len(values), init_func=lambda: [], interval=interval,
                         repeat=False, blit=False)
    # anim.to_jshtml(default_mode="once"), with the dpi passed on: to_jshtml saves at
    # rcParams["savefig.dpi"] whenever that is a number
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "animation.html")
        anim.save(str(path), writer=HTMLWriter(fps=1000 / interval, embed_frames=True, default_mode="once"),
                  dpi=dpi)
        return HTML(_offline(path.read_text()))


# matplotlib's jshtml links Font Awesome from a CDN for its button icons; the book must work
# offline, so the link is dropped and each icon becomes a plain character (buttons keep titles).
_ICONS = {"fa-minus": "\u2212", "fa-fast-backward": "\u21e4", "fa-step-backward": "\u2039",
          "fa-play fa-flip-horizontal": "\u25c0", "fa-pause": "\u275a\u275a", "fa-play": "\u25b6",
          "fa-step-forward": "\u203a", "fa-fast-forward": "\u21e5", "fa-plus": "+"}


_COUNTER = itertools.count()


def _offline(html: str) -> str:
    """The jshtml with no remote reference: CDN stylesheet removed, icons as characters.

    matplotlib names the animation's elements with a random uuid; it is replaced by a hash of
    the content and of the call's position in the session, so re-running a notebook rewrites
    the same HTML (clean diffs) while two animations on one page still get different ids.
    """
    old = re.search(r'id="_anim_img([0-9a-f]+)"', html)
    if old:
        stripped = html.replace(old.group(1), "")
        new = hashlib.sha1(f"{next(_COUNTER)}:{stripped}".encode()).hexdigest()[:32]
        html = html.replace(old.group(1), new)
    html = re.sub(r'<link rel="stylesheet"\s+href="https?://[^"]*"\s*/?>', "", html)
    return re.sub(r'<i class="fa ([a-z -]+)"></i>',
                  lambda m: f'<span class="anim-icon">{_ICONS.get(m.group(1), "?")}</span>', html)


def _control(name: str, spec):
    """An ipywidgets control from a widget (returned as it is, never modified), a
    (min, max[, step]) tuple of numbers (NumPy scalars too) or a list of options."""
    import ipywidgets as W
    if isinstance(spec, W.ValueWidget):
        return spec
    if isinstance(spec, tuple) and len(spec) in (2, 3) \
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in spec):
        integer = all(isinstance(v, numbers.Integral) for v in spec)
        spec = tuple(int(v) if integer else float(v) for v in spec)  # plain numbers for traitlets
        lo, hi = spec[0], spec[1]
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"control {name!r}: min must be below max, both finite, got {spec}; "
                             "write (min, max) or (min, max, step).")
        if len(spec) == 3 and not (math.isfinite(spec[2]) and 0 < spec[2] <= hi - lo):
            raise ValueError(f"control {name!r}: step must be positive and at most max - min, got "
                             f"{spec[2]!r}")
        step = spec[2] if len(spec) == 3 else (1 if integer else (hi - lo) / 20)
        cls = W.IntSlider if integer else W.FloatSlider
        value = lo + step * round((hi - lo) / 2 / step)
        kwargs = {} if integer else {"readout_format": ".3g"}
        return cls(value=value, min=lo, max=hi, step=step, description=name,
                   continuous_update=False, **kwargs)
    if isinstance(spec, list) and spec:
        return W.Dropdown(options=spec, value=spec[0], description=name)
    raise ValueError(f"control {name!r}: expected an ipywidgets control, a (min, max) or "
                     f"(min, max, step) tuple of numbers, or a list of options; got {spec!r}.")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)  # not rcParams["savefig.dpi"]
    return base64.b64encode(buf.getvalue()).decode("ascii")


def interactive(draw: Callable[..., Any], *, figsize=(5, 4), dpi: float = 80, **controls):
    """Live controls that redraw one figure in Jupyter whenever a value changes.

    Parameters
    ----------
    draw : callable
        ``draw(ax, **values)`` plots on ``ax``; it receives one keyword argument per control,
        named as the control. The axes is cleared before each call, and whatever the previous
        call added to the figure beside it (a colour bar, a figure legend) removed.
    figsize : (float, float), default (5, 4)
        Figure size in inches.
    dpi : float, default 80
        Resolution of the figure, as in :func:`frames` (so both forms look the same), whatever
        ``rcParams["savefig.dpi"]`` says.
    **controls
        One per keyword argument of ``draw``: an ipywidgets control (e.g. from
        :func:`log_slider`), a ``(min, max)`` or ``(min, max, step)`` tuple of numbers (Python
        or NumPy; an ``IntSlider`` if all are integers, else a ``FloatSlider`` starting
        mid-range), or a list of options (a ``Dropdown``). Sliders made from tuples redraw when
        released (``continuous_update=False``). A control passed in is used as it is, not
        modified: one without a ``description`` is shown with a ``Label`` of its name beside it.

    Returns
    -------
    ipywidgets.VBox
        The controls above an ``Output`` holding the figure as PNG. Extra attributes for tests
        and advanced use: ``.controls`` (dict name -> control), ``.output``, ``.figure``, ``.ax``,
        ``.redraw()``. Its plain-text form names only the controls, so nbval compares no pixels.

    Raises
    ------
    ValueError
        If ``draw`` is not callable, no control is given or a control cannot be understood.

    Notes
    -----
    The figure is written into the ``Output`` widget's ``outputs`` directly, not printed from the
    callback, so nothing leaks into the cell's recorded stdout. In the static HTML a saved widget
    does not recompute; pair every ``interactive`` with a :func:`frames` of the same ``draw``.

    Examples
    --------
    >>> import numpy as np
    >>> def draw(ax, k):
    ...     ax.plot(np.sin(k * np.linspace(0, 6, 50)))
    >>> w = interactive(draw, k=(1, 5))
    >>> w.controls["k"].value = 4  # redraws the figure
    """
    if not callable(draw):
        raise ValueError(f"draw must be a function draw(ax, **values), got {type(draw).__name__}.")
    if not controls:
        raise ValueError("interactive needs at least one control, e.g. rho=(-0.9, 0.9, 0.05).")
    import ipywidgets as W

    ctrls = {name: _control(name, spec) for name, spec in controls.items()}
    dpi = check_positive(dpi, "dpi")
    fig, ax = _figure(figsize)
    fig.set_dpi(dpi)
    out = W.Output()

    def redraw(change=None):
        _clear(fig, ax)
        draw(ax, **{name: c.value for name, c in ctrls.items()})
        out.outputs = ({"output_type": "display_data",
                        "data": {"image/png": _png(fig), "text/plain": "<Figure>"},
                        "metadata": {}},)

    for c in ctrls.values():
        c.observe(redraw, names="value")
    rows = [c if c.description else W.HBox([W.Label(name), c]) for name, c in ctrls.items()]
    box = _interactive_class()(children=[*rows, out])
    box.controls, box.output, box.figure, box.ax, box.redraw = ctrls, out, fig, ax, redraw
    redraw()
    return box


@cache
def _interactive_class():
    import ipywidgets as W

    class Interactive(W.VBox):
        """A VBox whose repr names its controls only (stable text for nbval)."""

        def __repr__(self):
            return f"interactive({', '.join(self.controls)})"

    return Interactive


def log_slider(name: str, min: float, max: float, value: float, *, steps: int = 40):
    """A slider on a log scale (``ipywidgets.FloatLogSlider``) between two positive values.

    Parameters
    ----------
    name : str
        The description shown beside it; pass the same name as the keyword to
        :func:`interactive`.
    min, max : float
        The range, in the quantity's own units (not exponents); ``0 < min < max``.
    value : float
        Starting value, inside ``[min, max]``.
    steps : int, default 40
        Number of (geometrically equal) steps across the range.

    Returns
    -------
    ipywidgets.FloatLogSlider

    Raises
    ------
    ValueError
        If the bounds are not positive and increasing, or ``value`` lies outside them.

    Examples
    --------
    >>> s = log_slider("sigma", 0.01, 10, 1.0)
    >>> round(s.value, 6)
    1.0
    """
    if not (0 < min < max):
        raise ValueError(f"log_slider {name!r}: need 0 < min < max, got min={min}, max={max}; "
                         "a log scale cannot reach zero or negative values.")
    if not (min <= value <= max):
        raise ValueError(f"log_slider {name!r}: value={value} lies outside [{min}, {max}].")
    steps = check_positive_int(steps, "steps")
    import ipywidgets as W
    lo, hi = math.log10(min), math.log10(max)
    return W.FloatLogSlider(value=value, base=10, min=lo, max=hi, step=(hi - lo) / steps,
                            description=name, readout_format=".3g", continuous_update=False)
