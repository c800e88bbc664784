"""Sphinx extension for the book's API page (loaded from _config.yml as a local extension).

Two jobs, so that chapters and modules added later need no edit here:

* ``source-read``: in ``book/api.md`` the marker ``<!-- gmmlib-api -->`` becomes one section per
  public module of ``gmmlib`` (found with :mod:`pkgutil`; names starting with ``_`` and
  ``__main__`` are skipped), in the library's layer order, each an ``automodule`` with members.
* ``html-page-context``: drop repeated identical ``<script>`` entries. sphinx-thebe and
  sphinx-togglebutton register their inline scripts twice under jupyter-book 1.0.4, and the
  second ``const THEBE_JS_URL`` is a JavaScript error on every page.
* ``missing-reference``: docstrings write ``:class:`gmmlib.GaussianMixture``` or a bare
  ``Snapshot`` (names re-exported by ``gmmlib/__init__.py`` or imported into a module); such a
  reference is resolved to where the object is documented (``obj.__module__ + qualname``).
  A single word inside a numpydoc *type* (``means : ndarray (K, D)``, ``list of (step,
  component)``) that names nothing in gmmlib is shown as plain text instead of failing the
  ``-n`` build: those words are prose, not references. Dotted names and explicit roles
  (``:class:`gmmlib.Foo```) are still checked.
"""
from __future__ import annotations

import importlib
import pkgutil
import re

MARKER = "<!-- gmmlib-api -->"
# Reading order of the library's layers; modules not listed follow alphabetically.
LAYERS = ["numerics", "families", "mixture", "moments", "init", "gd", "em", "estimator", "exceptions", "priors",
          "history", "data", "mdn", "plot", "cli", "book"]


def public_modules(package: str = "gmmlib") -> list[str]:
    """Dotted names of the package's public modules, subpackages' included, in layer order."""
    pkg = importlib.import_module(package)
    names = [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}.")
             if not any(part.startswith("_") for part in m.name.split("."))]
    order = {n: i for i, n in enumerate(LAYERS)}
    names.sort(key=lambda n: (order.get(n.split(".")[1], len(LAYERS)), n))
    return names


def api_markdown(package: str = "gmmlib") -> str:
    parts = []
    for mod in public_modules(package):
        parts.append(f"## `{mod}`\n\n```{{eval-rst}}\n.. automodule:: {mod}\n   :members:\n```\n")
    return "\n".join(parts)


def _source_read(app, docname, source):
    if MARKER in source[0]:
        source[0] = source[0].replace(MARKER, api_markdown())


def _lookup(dotted: str):
    """The object a dotted name points to, importing modules on the way; None if there is none."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _missing_reference(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    context = node.get("py:module") or ""
    candidates = [target] + ([f"{context}.{target}"] if context else []) + [f"gmmlib.{target}"]
    name = target.removeprefix("gmmlib.")
    if "." not in name:  # a name some public module defines but the package does not re-export
        candidates += [f"{mod}.{name}" for mod in public_modules()]
    domain = env.get_domain("py")
    for cand in candidates:
        if not cand.startswith("gmmlib"):
            continue
        obj = _lookup(cand)
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if module is None and type(obj).__name__ == "module":
            module, qualname = obj.__name__, None
        if not module or not module.startswith("gmmlib"):
            continue
        canonical = f"{module}.{qualname}" if qualname else module
        if canonical == node["reftarget"]:
            continue
        ref = domain.resolve_xref(env, node.get("refdoc", ""), app.builder, node["reftype"],
                                  canonical, node, contnode)
        if ref is None and node["reftype"] in ("class", "func", "meth"):
            ref = domain.resolve_xref(env, node.get("refdoc", ""), app.builder, "obj",
                                      canonical, node, contnode)
        if ref is not None:
            return ref
    # Sphinx marks the xrefs it makes from docstring type fields as "refspecific"; a lone word
    # there that is not a gmmlib object is a description ("ndarray", "K", "step"): plain text.
    if (node.get("refspecific") and node.get("reftype") == "class"
            and re.fullmatch(r"\w+", node["reftarget"]) and not node.get("refexplicit")):
        return contnode
    return None


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        key = (getattr(js, "filename", str(js)) or "",  # the copy has filename '' vs None
               tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app):
    app.connect("source-read", _source_read)
    app.connect("html-page-context", _dedupe_scripts)
    app.connect("missing-reference", _missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
