"""Fixtures for the browser tests: Debian's chromium driven by playwright, and the built site.

Playwright never downloads a browser here (`playwright install` cannot reach its CDN); it drives
the system chromium (`apt-get install chromium`, which `make test` does when it is missing).
Without a chromium these tests are skipped with a message saying how to get one. They run on the
site in ``_build/html`` (``make book``; override with ``GMM_BOOK_HTML=/path/to/html``).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def site_dir() -> Path:
    return Path(os.environ.get("GMM_BOOK_HTML", ROOT / "_build" / "html")).resolve()


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(item.path).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium on this machine: install it with `apt-get install -y chromium` "
                    "(as root; `make test` does this) to run the browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -r requirements.txt")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def site() -> Path:
    html = site_dir()
    if not (html / "index.html").is_file():
        pytest.skip(f"no built book at {html}: run `make book` first (`make test` does)")
    return html
