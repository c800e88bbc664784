"""gmmlib.book.widgets: the static form (jshtml frames) and the live form (ipywidgets) of a control."""
import re
import subprocess
import sys

import numpy as np
import pytest

from gmmlib.book import frames, interactive, log_slider


def draw(ax, k=1.0, amp=1.0):
    x = np.linspace(0, 6, 60)
    ax.plot(x, amp * np.sin(k * x))


def test_frames_embeds_one_png_per_value_and_does_not_autoplay():
    html = frames(lambda ax, k: draw(ax, k=k), np.linspace(1, 3, 7), label="k", figsize=(3, 2))
    s = html.data
    assert "new Array(7)" in s
    frames_src = re.findall(r'frames\[\d+\] = "data:image/png;base64,', s)
    assert len(frames_src) == 7
    assert re.search(r'value="once" id="[^"]+"\s+checked', s)  # plays once, only when asked
    assert "play_animation()" in s and "setInterval" in s  # controls present
    assert repr(html) == "<IPython.core.display.HTML object>"  # what nbval compares


def test_frames_html_is_offline():
    s = frames(lambda ax, k: draw(ax, k=k), [1, 2], figsize=(2, 2)).data
    assert not re.search(r"https?://", s)  # matplotlib's Font Awesome CDN link is removed
    assert 'class="fa ' not in s and s.count('class="anim-icon"') == 9


def test_frames_are_different_and_no_pyplot_figure_is_left_open():
    import matplotlib.pyplot as plt
    before = plt.get_fignums()
    s = frames(lambda ax, k: draw(ax, k=k), [1, 2], figsize=(3, 2)).data
    pngs = re.findall(r'frames\[\d+\] = "(data:image/png;base64,[^"]+)"', s)
    assert len(pngs) == 2 and pngs[0] != pngs[1]
    assert plt.get_fignums() == before


def test_frames_label_format_falls_back_to_str():
    seen = []
    frames(lambda ax, v: seen.append(v), ["a", "b"], label="name", figsize=(2, 2))
    assert seen[-2:] == ["a", "b"]


@pytest.mark.parametrize("values", [[], ()])
def test_frames_rejects_empty_values(values):
    with pytest.raises(ValueError, match="values is empty"):
        frames(draw, values)


@pytest.mark.parametrize("kwargs,match", [(dict(interval=0), "interval"), (dict(dpi=0), "dpi")])
def test_frames_rejects_non_positive_timing_and_resolution(kwargs, match):
    with pytest.raises(ValueError, match=match):
        frames(lambda ax, v: None, [1, 2], **kwargs)


def test_frames_rejects_non_callable():
    with pytest.raises(ValueError, match="draw must be a function"):
        frames(None, [1])


def _png(w):
    (out,) = w.output.outputs
    return out["data"]["image/png"]


def test_interactive_redraws_when_a_control_changes(capsys):
    w = interactive(draw, figsize=(3, 2), k=(1.0, 5.0, 0.5), amp=log_slider("amp", 0.1, 10, 1.0))
    assert set(w.controls) == {"k", "amp"}
    first = _png(w)
    w.controls["k"].value = 4.5
    second = _png(w)
    assert second != first
    w.controls["amp"].value = 5.0
    assert _png(w) != second
    line = w.ax.get_lines()[0]
    assert np.isclose(np.abs(line.get_ydata()).max(), 5.0, rtol=0.05)
    assert capsys.readouterr().out == ""  # nothing printed from callbacks (nbval would see it)
    assert repr(w) == "interactive(k, amp)"


def test_interactive_control_kinds():
    import ipywidgets as W
    w = interactive(lambda ax, n, c, x: None, n=(1, 9), c=["a", "b"], x=(0.0, 1.0))
    assert isinstance(w.controls["n"], W.IntSlider) and w.controls["n"].value == 5
    assert isinstance(w.controls["c"], W.Dropdown)
    assert isinstance(w.controls["x"], W.FloatSlider)
    with pytest.raises(ValueError, match="control 'x'"):
        interactive(draw, x="nope")
    with pytest.raises(ValueError, match="min must be below max"):
        interactive(draw, x=(2.0, 1.0))
    with pytest.raises(ValueError, match="both finite"):
        interactive(draw, x=(0.0, float("inf")))
    for step in (0, -1, 5):
        with pytest.raises(ValueError, match="step must be positive and at most max - min"):
            interactive(draw, n=(1, 3, step))
    with pytest.raises(ValueError, match="at least one control"):
        interactive(draw)


def test_log_slider_bounds():
    s = log_slider("s", 0.01, 100, 1.0)
    assert s.min == pytest.approx(-2) and s.max == pytest.approx(2) and s.value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="0 < min < max"):
        log_slider("s", 0, 1, 0.5)
    with pytest.raises(ValueError, match="outside"):
        log_slider("s", 1, 2, 3)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        log_slider("s", 1, 2, 1.5, steps=0)


def test_import_gmmlib_stays_light():
    code = ("import sys, gmmlib, gmmlib.book; "
            "print(sorted(m for m in ('matplotlib', 'ipywidgets', 'IPython') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_frames_ids_are_stable_across_runs_but_unique_within_one(monkeypatch):
    import itertools

    import gmmlib.book.widgets as widgets

    def ids():
        monkeypatch.setattr(widgets, "_COUNTER", itertools.count())  # a fresh kernel
        return [re.search(r'_anim_img(\w+)"', frames(lambda ax, v: ax.plot([v]), [1, 2],
                                                       figsize=(2, 2)).data).group(1)
                for _ in range(2)]

    first, second = ids(), ids()
    assert first == second  # re-running a notebook rewrites the same HTML
    assert first[0] != first[1]  # two animations on one page do not share element ids


def _colour_bar(ax, k=1.0, amp=1.0):
    """A draw function that adds a colour bar: an axes of the figure beside ``ax``."""
    im = ax.imshow(amp * np.arange(6.0).reshape(2, 3))
    ax.figure.colorbar(im, ax=ax)
    ax.figure.legend(["a"])
    return len(ax.figure.axes)


def test_frames_and_interactive_remove_what_the_previous_draw_added():
    """Only ax was cleared: a colour bar added by draw stayed, and every frame or redraw added
    another axes (and shrank the plot)."""
    counts = []
    s = frames(lambda ax, k: counts.append(_colour_bar(ax, k)), [1, 1, 1], figsize=(3, 2)).data
    assert counts == [2, 2, 2]  # the plot and one colour bar, every frame
    pngs = re.findall(r'frames\[\d+\] = "(data:image/png;base64,[^"]+)"', s)
    assert len(pngs) == 3 and len(set(pngs)) == 1  # the same value draws the same picture
    counts.clear()
    w = interactive(lambda ax, k: counts.append(_colour_bar(ax, k)), figsize=(3, 2), k=(1, 5))
    first = _png(w)
    w.controls["k"].value = 2
    w.controls["k"].value = 3
    assert counts == [2, 2, 2] and len(w.figure.axes) == 2 and len(w.figure.legends) == 1
    assert _png(w) == first  # k changes nothing in this drawing: the same picture every time


def _png_size(b64: str) -> tuple:
    import base64
    data = base64.b64decode(b64.split(",")[-1])
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # IHDR


def test_frames_and_interactive_use_their_dpi_whatever_savefig_dpi_says():
    """With rcParams["savefig.dpi"] a number, the frames were saved at that and dpi ignored."""
    import matplotlib
    with matplotlib.rc_context({"savefig.dpi": 200}):
        s = frames(lambda ax, k: draw(ax, k=k), [1], figsize=(3, 2), dpi=50).data
        w = interactive(draw, figsize=(3, 2), dpi=50, k=(1, 5))
    (png,) = re.findall(r'frames\[\d+\] = "(data:image/png;base64,[^"]+)"', s)
    assert _png_size(png) == (150, 100)
    assert _png_size(_png(w)) == (150, 100)


def test_interactive_takes_numpy_numbers_and_refuses_bools():
    """(np.int64(1), np.int64(5)) was refused as 'not a (min, max) tuple of numbers'."""
    import ipywidgets as W
    w = interactive(lambda ax, k, x: None, k=(np.int64(1), np.int64(5)),
                    x=(np.float32(0.0), np.float64(1.0), np.float64(0.25)))
    k, x = w.controls["k"], w.controls["x"]
    assert isinstance(k, W.IntSlider) and (k.min, k.max, k.value) == (1, 5, 3)
    assert isinstance(x, W.FloatSlider) and (x.min, x.max, x.step) == (0.0, 1.0, 0.25)
    with pytest.raises(ValueError, match="control 'k'"):
        interactive(draw, k=(True, 5))


def test_interactive_does_not_modify_the_callers_widget():
    """A FloatSlider() passed in came back with .description == 'x' written into it."""
    import ipywidgets as W
    bare, named = W.FloatSlider(), W.FloatSlider(description="σ")
    w = interactive(lambda ax, x, y: None, x=bare, y=named)
    assert bare.description == "" and named.description == "σ"
    assert w.controls == {"x": bare, "y": named}
    row = w.children[0]  # the bare one is labelled beside it, the named one shown as it is
    assert isinstance(row, W.HBox) and row.children[0].value == "x" and row.children[1] is bare
    assert w.children[1] is named
