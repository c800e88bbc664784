"""Warnings gmmlib issues, subclassing scikit-learn's so that filters written for scikit-learn
catch them too.

This module imports scikit-learn (about 1.8 s on top of torch), so gmmlib imports it only when a
warning is issued or ``gmmlib.ConvergenceWarning`` is first looked up.
"""
from __future__ import annotations

from sklearn.exceptions import ConvergenceWarning as _SklearnConvergenceWarning

__all__ = ["ConvergenceWarning"]


class ConvergenceWarning(_SklearnConvergenceWarning, RuntimeWarning):
    """EM stopped at ``max_iter`` before the log-likelihood gain fell below ``tol``.

    A ``sklearn.exceptions.ConvergenceWarning`` (so ``warnings.simplefilter("ignore",
    ConvergenceWarning)`` and ``pytest.warns`` written for scikit-learn catch it) and a
    ``RuntimeWarning`` (as in gmmlib before, and as ``fit_gd``'s warnings are).
    """
