"""How the book prints a numerical check: the size of the disagreement, not ``True``.

``print("log-densities vs scipy:", max_abs_diff(ours, scipy_values, tol=1e-12))`` prints
``log-densities vs scipy: max |diff| = 3e-15 (within 1e-12)``. The reader sees how close the two
computations are; the tolerance says what "agree" means. The digits of a rounding-level
difference depend on the machine's floating-point library, so the book's nbval run masks the
number (``nbval_sanitize.cfg``) and compares the verdict ``within``/``EXCEEDS``: a check that
starts failing still fails the tests.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["Agreement", "max_abs_diff"]


def _array(value, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, on any device
        value = value.detach().cpu()
    try:
        arr = np.asarray(value)
        real = None if np.iscomplexobj(arr) else arr.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be numbers (a tensor, an array or a float): {err}") from None
    if real is None:  # float64 would drop the imaginary part, and 1+1j would "agree" with 1+5j
        raise ValueError(f"{name} is complex, and max_abs_diff compares real numbers: compare the "
                         f"real and imaginary parts separately ({name}.real, then {name}.imag)")
    return real


def _tolerance(tol) -> float:
    """``tol`` as a float: any real number >= 0 (int, float, NumPy scalar, 0-d tensor or array)."""
    if hasattr(tol, "detach") or isinstance(tol, np.ndarray):  # a 0-d tensor or array
        tol = tol.item() if tol.ndim == 0 else tol
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    return float(tol)


@dataclass(frozen=True)
class Agreement:
    """The largest absolute difference between two computations, and the tolerance it is held to.

    ``bool(agreement)`` is True when ``value <= tol``; it prints as
    ``max |diff| = 3e-15 (within 1e-12)`` or ``max |diff| = 2e-02 (EXCEEDS 1e-12)``.
    """
    value: float
    tol: float

    def __bool__(self) -> bool:
        return self.value <= self.tol

    def __str__(self) -> str:
        verdict = "within" if self else "EXCEEDS"
        return f"max |diff| = {self.value:.0e} ({verdict} {self.tol:.0e})"

    __repr__ = __str__


def max_abs_diff(a, b, *, tol: float) -> Agreement:
    """``max |a - b|`` over all entries, checked against ``tol``.

    Parameters
    ----------
    a, b : tensors, arrays or floats
        Two computations of the same quantity, real numbers, of the same shape (nothing is
        broadcast), not empty; one side may be a single number (a float or 0-d array), which
        every entry of the other is compared with. NaN or infinity where the other side
        differs counts as an infinite difference; equal infinities (two ``-inf``
        log-densities, say) agree.
    tol : float
        The largest difference that counts as agreement (>= 0): a Python or NumPy number, or a
        0-d tensor.

    Returns
    -------
    Agreement
        Prints as ``max |diff| = 3e-15 (within 1e-12)``.

    Raises
    ------
    ValueError
        If ``tol`` is not a number >= 0, ``a`` or ``b`` is complex or empty, or their shapes
        differ (and neither is a single number).
    TypeError
        If ``a`` or ``b`` is not numbers.

    Examples
    --------
    >>> print(max_abs_diff([1.0, 2.0], [1.0, 2.001], tol=0.01))
    max |diff| = 1e-03 (within 1e-02)
    """
    tol = _tolerance(tol)
    x, y = _array(a, "a"), _array(b, "b")
    if x.shape != y.shape and x.ndim > 0 and y.ndim > 0:
        raise ValueError(f"a and b must have the same shape, got {x.shape} and {y.shape}; "
                         "reshape one to the other's shape (nothing is broadcast), or pass a "
                         "single number to compare every entry with")
    if x.size == 0 or y.size == 0:
        raise ValueError(f"a and b must not be empty, got shapes {x.shape} and {y.shape}; an "
                         "empty comparison agrees with anything: compare the values themselves")
    x, y = np.broadcast_arrays(x, y)  # at most a single number against an array
    same = (x == y)  # also true for equal infinities
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(same, 0.0, np.abs(x - y))
    diff = np.where(np.isnan(diff), np.inf, diff)
    return Agreement(float(diff.max()), float(tol))
