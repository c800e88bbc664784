import os

import matplotlib
import pytest
import torch
from hypothesis import settings

matplotlib.use("Agg")

# Property tests draw the same examples on every run by default, so `make test` passes or fails
# the same way anywhere (a random draw once failed CI on a test that was right to fail, but only
# for that draw). To search new examples: HYPOTHESIS_PROFILE=explore pytest tests/ ...
settings.register_profile("reproducible", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "reproducible"))

FAMILIES = ["full", "tied", "diagonal", "isotropic", "shared_isotropic", "constant"]
SKLEARN = {"full": "full", "tied": "tied", "diagonal": "diag", "isotropic": "spherical"}


@pytest.fixture(scope="module")
def one_thread():
    """Small problems: one thread is fastest, and on a loaded 2-core machine torch's thread pool
    was seen to make them 50x slower (each parallel region waits for a descheduled worker).
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def random_model(family, K=3, D=2, seed=0, dtype=torch.float64):
    """A mixture of ``family`` with random (non-trivial) parameters."""
    import numpy as np

    from gmmlib import GaussianMixture
    from gmmlib.data import random_covariances
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(K) * 2)
    m = rng.normal(scale=3, size=(K, D))
    c = random_covariances(rng, K, D, family, constant_variance=0.7)
    return GaussianMixture.from_parameters(w, m, c, family, dtype=dtype)
