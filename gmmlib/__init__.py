"""gmmlib: Gaussian mixture models in PyTorch.

Layers, imported one way only:

* :mod:`gmmlib.numerics` – Gaussian and mixture log-densities through Cholesky factors;
* :mod:`gmmlib.families` – the covariance families and their parametrisations;
* :mod:`gmmlib.mixture` – :class:`GaussianMixture`, a ``torch.nn.Module``;
* :mod:`gmmlib.moments` – the M-step's weighted moments, shared by EM and initialisation;
* :mod:`gmmlib.init`, :mod:`gmmlib.gd`, :mod:`gmmlib.em`, :mod:`gmmlib.priors` – initialisation,
  gradient-descent and EM fitting, and MAP priors against the singularity;
* :mod:`gmmlib.estimator` – :class:`GaussianMixtureEM`, scikit-learn's ``GaussianMixture``
  interface on :func:`fit_em`; :mod:`gmmlib.exceptions` – its warning (both import scikit-learn,
  so they load on first use);
* :mod:`gmmlib.selection` – the grid of families and component counts, ranked by BIC, AIC
  or held-out likelihood;
* :mod:`gmmlib.data` – mock data; :mod:`gmmlib.mdn` – the mixture density network head and
  :func:`fit_mdn`, its training loop;
* :mod:`gmmlib.plot`, :mod:`gmmlib.cli` – at the edge (imported lazily);
* :mod:`gmmlib.book` – the book's support code (widgets with a static twin, the naive formulas
  the first chapters show breaking), outside the modelling API.
"""
from .data import GeneratedData, generate_data, load_faithful
from .em import fit_em
from .families import FAMILIES, get_family
from .gd import fit_gd
from .history import FitHistory, Snapshot
from .init import initialize, kmeans_plusplus
from .mdn import MDNHead, MDNOutput, fit_mdn
from .mixture import GaussianMixture, match_components
from .priors import InverseWishartPrior, RidgePrior, inverse_wishart_log_prob
from .selection import Selection, select_model

__all__ = ["GaussianMixture", "FAMILIES", "get_family", "fit_gd", "fit_em", "GaussianMixtureEM",
           "ConvergenceWarning", "initialize", "kmeans_plusplus", "InverseWishartPrior", "RidgePrior",
           "inverse_wishart_log_prob", "generate_data", "GeneratedData", "load_faithful", "FitHistory", "Snapshot",
           "MDNHead", "MDNOutput", "fit_mdn", "select_model", "Selection", "match_components"]
__version__ = "0.1.0"

# Loaded on first use: they import scikit-learn, which would add ~1.8 s to `import gmmlib`.
_LAZY = {"GaussianMixtureEM": "estimator", "ConvergenceWarning": "exceptions"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'gmmlib' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
