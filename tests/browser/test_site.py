"""The built HTML book in a real headless Chromium, offline (file://, every remote request
blocked): every page loads without console errors, its equations are typeset, its images are
loaded, and every widget fallback (a ``gmmlib.book.frames`` animation) changes its picture
when its slider moves. Pages are discovered from the build, so new chapters are covered without
editing this file.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import site_dir

# Sphinx's own index/search pages are not chapters (search.html needs no math or figures).
NOT_CHAPTERS = {"genindex.html", "search.html", "py-modindex.html"}


def pages() -> list[Path]:
    html = site_dir()
    if not html.is_dir():
        return []
    found = [p for p in sorted(html.rglob("*.html"))
             if p.name not in NOT_CHAPTERS and "_static" not in p.parts and "_sources" not in p.parts
             and p.relative_to(html).as_posix() != "index.html"]  # index.html only redirects
    return found


def _ids(paths):
    return [p.relative_to(site_dir()).as_posix() for p in paths]


PAGES = pages()
REMOTE = re.compile(r"^(https?:)?//", re.I)


def test_site_has_pages(site):
    assert PAGES, f"no pages found under {site}"
    assert any(p.name == "intro.html" for p in PAGES)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    remote: list[str] = []

    def block(route):  # the book must work offline: any non-file request is recorded and refused
        remote.append(route.request.url)
        route.abort()

    context.route(re.compile(r"^(https?|wss?|ftp)://.*"), block)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.remote_requests = remote
    yield pg
    context.close()


@pytest.mark.parametrize("path", PAGES, ids=_ids(PAGES))
def test_page_renders_offline(page, path):
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"failed request: {r.url} ({r.failure})")
            if r.url.startswith("file:") else None)
    page.goto(path.as_uri(), wait_until="load")

    # Equations: MathJax 3 (served from _static/mathjax) replaces every math node.
    n_math = page.locator("article .math, article span.math, article div.math").count()
    if n_math:
        page.wait_for_function(
            "n => document.querySelectorAll('article mjx-container').length >= n", arg=n_math)
        assert page.locator("mjx-merror").count() == 0, "MathJax reported a TeX error"

    # Widget fallbacks: matplotlib jshtml animations (gmmlib.book.frames) set their first
    # frame on a timer; moving the slider must show a different picture.
    anims = page.locator("div.animation")
    for i in range(anims.count()):
        anim = anims.nth(i)
        img, slider = anim.locator("img"), anim.locator("input.anim-slider")
        page.wait_for_function("el => el.src.startsWith('data:image')", arg=img.element_handle())
        n = int(slider.get_attribute("max"))
        assert n >= 1, f"animation {i} has a single frame: nothing for its slider to do"
        before = img.get_attribute("src")
        slider.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", n)
        after = img.get_attribute("src")
        assert after != before, f"moving the slider of animation {i} did not change the frame"
        anim.locator("button[title='First frame']").click()
        assert img.get_attribute("src") == before and slider.input_value() == "0"

    # Saved ipywidgets views: rendered by the offline embed-amd.js, never a blank box. (The
    # chapters tag their live `interactive` cells `remove-output`: without a kernel those
    # sliders are dead, and the frames animation is the HTML's widget. The notebook's saved
    # state may still be embedded, with no view to render.)
    if page.locator("script[type='application/vnd.jupyter.widget-view+json']").count():
        page.wait_for_function(
            "() => document.querySelectorAll('.jupyter-widgets, .widget-slider').length > 0",
            timeout=30_000)

    # Figures: every image loaded (after the animations set theirs).
    bad = page.evaluate("""() => [...document.images]
        .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 80))""")
    assert not bad, f"images that did not load: {bad}"

    page.wait_for_timeout(300)  # late async errors (MathJax fonts, widget manager)
    assert not errors, "\n".join(errors)
    assert not page.remote_requests, f"page tried the network: {page.remote_requests}"


def _remote_refs(text: str) -> list[str]:
    refs = []
    for tag in re.findall(r"<(?:script|link|img|iframe|source|embed|object)\b[^>]*>", text, re.I):
        is_link = tag.lower().startswith("<link")
        for attr, url in re.findall(r"\b(src|href|data)\s*=\s*[\"']([^\"']*)[\"']", tag, re.I):
            if not REMOTE.match(url):
                continue
            # <link rel="canonical|next|prev|index|search"> are hyperlinks, not loaded resources
            rel = re.search(r"\brel\s*=\s*[\"']([^\"']*)", tag, re.I)
            if is_link and rel and not re.search(r"stylesheet|preload|icon|modulepreload|prefetch|manifest",
                                                 rel.group(1), re.I):
                continue
            refs.append(tag[:160])
    refs += [m[:160] for m in re.findall(r"@import\s+(?:url\()?\s*[\"']?(?:https?:)?//[^;]*", text)]
    refs += [m[:160] for m in re.findall(r"url\(\s*[\"']?(?:https?:)?//[^)]*\)", text)]
    return refs


def test_no_page_references_a_remote_script_stylesheet_or_font(site):
    offenders = {}
    for path in sorted(site.rglob("*")):
        if path.suffix not in {".html", ".css"} or not path.is_file():
            continue
        refs = _remote_refs(path.read_text(encoding="utf-8", errors="replace"))
        if refs:
            offenders[path.relative_to(site).as_posix()] = refs
    assert not offenders, f"remote resources referenced: {offenders}"


def test_remote_reference_detector():
    assert _remote_refs('<script src="https://cdn.x/y.js"></script>')
    assert _remote_refs('<link rel="stylesheet" href="//fonts.googleapis.com/css">')
    assert _remote_refs("@font-face { src: url(https://x/f.woff2) }")
    assert not _remote_refs('<script src="../_static/require.js"></script>')
    assert not _remote_refs('<a href="https://doi.org/10.1/x">doi</a>')
    assert not _remote_refs('<link rel="canonical" href="https://example.org/book/">')
