"""The book's support code: not part of the modelling API.

What the chapters of the book need besides gmmlib's models and fits, kept here, tested, so that
notebooks call one function instead of growing private helpers:

* :mod:`gmmlib.book.widgets` – :func:`interactive` (live ipywidgets controls in Jupyter) and
  :func:`frames` (the same figure precomputed as a slider for the static HTML), and
  :func:`log_slider`;
* :mod:`gmmlib.book.teaching` – deliberately naive formulas (:func:`naive_gaussian_log_prob`,
  :func:`naive_mixture_log_prob`) that the first chapters show breaking,
  :func:`covariance_2d`, and what chapter 5 draws: EM's lower bound
  (:func:`em_lower_bound`), the straight line between two mixtures
  (:func:`interpolate_mixtures`) and a penalty that holds the means on a circle
  (:func:`circle_penalty`);
* :mod:`gmmlib.book.checks` – :func:`max_abs_diff`, how a chapter prints a numerical check
  (the size of the disagreement and the tolerance, not ``True``).

Do not build on these for real work: use :mod:`gmmlib` itself. matplotlib, ipywidgets and
IPython are imported inside the functions, so importing this package stays light.
"""
from .checks import Agreement, max_abs_diff
from .teaching import (circle_penalty, covariance_2d, em_lower_bound, interpolate_mixtures,
                       naive_gaussian_log_prob, naive_mixture_log_prob)
from .widgets import frames, interactive, log_slider

__all__ = ["max_abs_diff", "Agreement", "frames", "interactive", "log_slider", "covariance_2d",
           "naive_gaussian_log_prob", "naive_mixture_log_prob", "em_lower_bound",
           "interpolate_mixtures", "circle_penalty"]
