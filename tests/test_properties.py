"""Property tests (hypothesis) for shapes and identities that must hold for any mixture."""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gmmlib
from conftest import FAMILIES, random_model

models = st.builds(lambda fam, K, D, seed: random_model(fam, K=K, D=D, seed=seed),
                   st.sampled_from(FAMILIES), st.integers(1, 4), st.integers(1, 4), st.integers(0, 10_000))


@settings(max_examples=40, deadline=None)
@given(model=models, n=st.integers(1, 30), seed=st.integers(0, 10_000))
def test_shapes_and_normalisation(model, n, seed):
    K, D = model.n_components, model.n_features
    X = torch.as_tensor(np.random.default_rng(seed).normal(scale=5, size=(n, D)))
    lp = model.log_prob(X)
    R = model.predict_proba(X)
    assert lp.shape == (n,) and R.shape == (n, K) and model.predict(X).shape == (n,)
    assert torch.allclose(R.sum(-1), torch.ones(n, dtype=R.dtype))
    # log p(x) = log sum_k w_k N_k(x), and the argmax of the responsibilities is the prediction
    comp = model.component_log_prob(X)
    assert torch.allclose(lp, torch.logsumexp(comp + model.weights.log(), -1))
    assert torch.equal(model.predict(X), R.argmax(-1))


@settings(max_examples=25, deadline=None)
@given(model=models, shift=st.floats(-50, 50), scale=st.floats(0.1, 10))
def test_affine_change_of_variables(model, shift, scale):
    """Scaling data by s and shifting it moves the density by -D log s (a Jacobian)."""
    D = model.n_features
    X = torch.as_tensor(np.random.default_rng(0).normal(scale=3, size=(10, D)))
    moved = gmmlib.GaussianMixture.from_parameters(
        model.weights, model.means * scale + shift, model.sklearn_covariances() * scale ** 2,
        model.covariance_type)
    expected = model.log_prob(X) - D * np.log(scale)
    assert torch.allclose(moved.log_prob(X * scale + shift), expected, rtol=1e-9, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(model=models)
def test_parameters_round_trip_through_from_parameters(model):
    again = gmmlib.GaussianMixture.from_parameters(model.weights, model.means, model.sklearn_covariances(),
                                                   model.covariance_type)
    assert torch.allclose(again.covariances, model.covariances, rtol=1e-12, atol=1e-14)
    assert torch.allclose(again.weights, model.weights, rtol=1e-12)
