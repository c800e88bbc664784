"""gmmlib: Gaussian mixture models in PyTorch.

Layers, imported one way only:

* :mod:`gmmlib.numerics` – Gaussian and mixture log-densities through Cholesky factors;
* :mod:`gmmlib.families` – the covariance families and their parametrisations;
* :mod:`gmmlib.mixture` – :class:`GaussianMixture`, a ``torch.nn.Module``;
* :mod:`gmmlib.init`, :mod:`gmmlib.gd` – initialisation and gradient-descent fitting;
* :mod:`gmmlib.data` – mock data; :mod:`gmmlib.mdn` – the mixture density network head;
* :mod:`gmmlib.plot`, :mod:`gmmlib.widgets`, :mod:`gmmlib.cli` – at the edge (imported lazily).
"""
from .data import GeneratedData, generate_data
from .em import GaussianMixtureEM, fit_em
from .families import FAMILIES, get_family
from .gd import fit_gd
from .history import FitHistory, Snapshot
from .init import initialize, kmeans_plusplus
from .mdn import MDNHead
from .mixture import GaussianMixture
from .priors import InverseWishartPrior, RidgePrior, inverse_wishart_log_prob

__all__ = ["GaussianMixture", "FAMILIES", "get_family", "fit_gd", "initialize", "kmeans_plusplus",
           "generate_data", "GeneratedData", "FitHistory", "Snapshot", "MDNHead"]
__all__ += ["fit_em", "GaussianMixtureEM"]
__all__ += ["InverseWishartPrior", "RidgePrior", "inverse_wishart_log_prob"]
__version__ = "0.1.0"
