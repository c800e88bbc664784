"""The book's code cells read as the style guide asks (issue 11): short cells that fit the page,
and no notebook-private helpers.

* every line of every code cell is at most 88 characters (longer lines are cut off in the HTML);
* every code cell but the first (the imports) has at most 10 lines;
* a cell may define a function only as a widget callback: a ``def`` (or a lambda bound to a
  name) whose name the same cell passes to ``interactive`` or ``frames``. Anything else a
  chapter needs lives in gmmlib, where it is tested;
* a cell that shows a live ``interactive`` widget is tagged ``remove-output``: in the HTML book
  there is no kernel, its sliders would be dead, and the ``frames`` twin is the page's widget.

The notebooks are read as JSON with nbformat; nothing is executed.
"""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
MAX_CHARS, MAX_LINES = 88, 10
WIDGET_CALLS = {"interactive", "frames"}


def code_cells(path: Path) -> list[tuple[int, str]]:
    """(cell index, source) of each code cell of the notebook, in order."""
    nb = nbformat.read(path, as_version=4)
    return [(i, c.source) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def _python(source: str) -> str:
    """The cell without IPython's line magics and shell escapes, which ast cannot parse."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())


def _called_name(node: ast.Call) -> str | None:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def private_helpers(source: str) -> list[str]:
    """Names of the functions the cell defines that it does not pass to a widget call."""
    tree = ast.parse(_python(source))
    defined = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.append(node.name)
        elif isinstance(node, ast.Assign) and any(isinstance(n, ast.Lambda)
                                                  for n in ast.walk(node.value)):
            defined += [t.id for t in node.targets if isinstance(t, ast.Name)]
    callbacks = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _called_name(node) in WIDGET_CALLS:
            args = list(node.args) + [k.value for k in node.keywords]
            callbacks |= {a.id for a in args if isinstance(a, ast.Name)}
    return [name for name in defined if name not in callbacks]


def test_the_book_has_notebooks():
    assert len(NOTEBOOKS) >= 5, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_lines_fit_the_page(path):
    long = [(i, n + 1, len(line)) for i, src in code_cells(path)
            for n, line in enumerate(src.splitlines()) if len(line) > MAX_CHARS]
    assert not long, f"{path.name}: (cell, line, characters) over {MAX_CHARS}: {long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_are_short(path):
    cells = code_cells(path)[1:]  # the first code cell holds the imports
    over = [(i, len(src.splitlines())) for i, src in cells if len(src.splitlines()) > MAX_LINES]
    assert not over, f"{path.name}: (cell, lines) over {MAX_LINES} lines: {over}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_notebook_private_helpers(path):
    found = [(i, name) for i, src in code_cells(path) for name in private_helpers(src)]
    assert not found, (f"{path.name}: (cell, function) defined outside a widget callback; "
                       f"move it to gmmlib: {found}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_live_widgets_are_left_out_of_the_html(path):
    nb = nbformat.read(path, as_version=4)
    live = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(
        isinstance(n, ast.Call) and _called_name(n) == "interactive"
        for n in ast.walk(ast.parse(_python(c.source))))]
    untagged = [i for i in live if "remove-output" not in nb.cells[i].metadata.get("tags", [])]
    assert live, f"{path.name} has no live widget"
    assert not untagged, f"{path.name}: cells {untagged} call interactive() without the tag remove-output"


@pytest.mark.parametrize("source, expected", [
    ("def draw(ax, v):\n    pass\ninteractive(draw, v=(0, 1))", []),
    ("def draw(ax, v):\n    pass\nw = frames(draw, [1, 2])", []),
    ("def fit(k):\n    return k\nfit(3)", ["fit"]),
    ("fitted = functools.cache(lambda k: k)", ["fitted"]),
    ("on_circle = lambda m: m\ninteractive(draw)", ["on_circle"]),
    ("%timeit f(1)\nsorted(xs, key=lambda x: -x)", []),
    ("class Box:\n    pass", ["Box"]),
])
def test_private_helper_detection(source, expected):
    assert private_helpers(source) == expected
