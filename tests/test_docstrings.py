"""Every ``>>>`` example in gmmlib's docstrings runs and prints what it shows (the API page of
the book renders them, so they must stay true)."""
import doctest
import importlib
import pkgutil

import pytest

import gmmlib

# walk_packages, not iter_modules: the subpackage gmmlib.book's modules have examples too
MODULES = sorted(m.name for m in pkgutil.walk_packages(gmmlib.__path__, "gmmlib.")
                 if m.name not in ("gmmlib.__main__",))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS,
                             verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
