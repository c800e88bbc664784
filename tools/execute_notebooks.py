"""Clean restart-and-run-all of the book's notebooks, in place, saving widget state.

Chapter authors run this (``make notebooks`` or ``make notebooks NB=book/01_gaussian_pdf.ipynb``)
before committing a notebook, so that the committed outputs are those of one clean run from a
fresh kernel, and ``metadata.widgets`` holds the widget state the HTML book renders. The book
build never executes (``execute_notebooks: off``); ``pytest --nbval`` re-runs the notebooks and
compares with these outputs.

Usage::

    python tools/execute_notebooks.py [NOTEBOOK ...]      # default: every book/*.ipynb

Per-cell timeout 120 s (see TOOLCHAIN.md: a widget cell can stall intermittently). Prints the
wall time of each notebook and warns above 20 s (the book's budget is < 30 s on 2 cores).
Exit status 1 if any notebook fails; the failing notebook is left unchanged on disk.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 20.0


def execute(path: Path, timeout: int = 120) -> float:
    """Execute ``path`` in a fresh kernel (cwd = its folder) and write it back; return seconds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # a clean slate: nothing from an earlier run survives
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                            store_widget_state=True, record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to run (default: every book/*.ipynb)")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "book").glob("*.ipynb"))
    if not paths:
        print("no notebooks found in book/", file=sys.stderr)
        return 0
    # Deterministic kernels: the same hash seed as nbval runs get (Makefile exports it too).
    os.environ.setdefault("PYTHONHASHSEED", "0")
    failed = []
    for path in paths:
        if not path.is_file():
            print(f"{path}: no such notebook", file=sys.stderr)
            failed.append(path)
            continue
        try:
            seconds = execute(path.resolve(), args.timeout)
        except Exception as exc:  # report every notebook, then fail
            print(f"FAILED {path}: {type(exc).__name__}: {str(exc)[-2000:]}", file=sys.stderr)
            failed.append(path)
            continue
        slow = f"  (over the {BUDGET_S:.0f} s budget: make it faster)" if seconds > BUDGET_S else ""
        print(f"{seconds:6.1f} s  {path}{slow}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
