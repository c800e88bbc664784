"""Label switching: GaussianMixture.permuted and match_components (issue 11), and the book's
printed checks (gmmlib.book.max_abs_diff)."""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import gmmlib
from gmmlib import GaussianMixture, match_components
from gmmlib.book import max_abs_diff

LEARNED = ["full", "tied", "diagonal", "isotropic", "shared_isotropic"]


def _model(family, K=4, D=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = GaussianMixture(K, D, family, dtype=torch.float64)
    with torch.no_grad():
        model.logits.copy_(torch.randn(K, generator=g, dtype=torch.float64))
        model.loc.copy_(5 * torch.randn(K, D, generator=g, dtype=torch.float64))
        model.raw_scale.add_(0.3 * torch.randn(model.raw_scale.shape, generator=g, dtype=torch.float64))
    return model


@pytest.mark.parametrize("family", LEARNED + ["constant"])
def test_every_permutation_is_the_same_distribution(family):
    model = _model(family) if family != "constant" else GaussianMixture(3, 2, "constant", dtype=torch.float64)
    K = model.n_components
    X = torch.randn(40, model.n_features, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = model.to_distribution().log_prob(X)  # torch.distributions, independent of gmmlib's density
    for order in itertools.permutations(range(K)):
        p = model.permuted(list(order))
        torch.testing.assert_close(p.log_prob(X), ref, rtol=0, atol=1e-12)
        # component k of the copy is component order[k] of the original
        torch.testing.assert_close(p.means, model.means[list(order)])
        torch.testing.assert_close(p.weights, model.weights[list(order)])
        torch.testing.assert_close(p.covariances, model.covariances[list(order)])


def test_permuted_leaves_the_model_alone_and_keeps_its_settings():
    model = _model("full")
    before = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    p = model.permuted(torch.tensor([3, 1, 0, 2]))
    for k, v in model.state_dict().items():
        if torch.is_tensor(v):
            assert torch.equal(v, before[k]), k
    assert p.min_variance == model.min_variance and p.covariance_type == "full"
    assert p.loc.requires_grad and p.loc.data_ptr() != model.loc.data_ptr()


@pytest.mark.parametrize("order", [[0, 1, 2], [0, 0, 1, 2], [0, 1, 2, 4], [0.0, 1.0, 2.0, 3.0]])
def test_permuted_rejects_what_is_not_a_permutation(order):
    with pytest.raises(ValueError, match="order must be a permutation of 0..3"):
        _model("diagonal").permuted(order)


@settings(max_examples=30, deadline=None)
@given(st.permutations(range(5)), st.sampled_from(LEARNED), st.integers(0, 10_000))
def test_match_components_undoes_any_relabelling(order, family, seed):
    model = _model(family, K=5, D=2, seed=seed)
    shuffled = model.permuted(order)
    back = shuffled.permuted(match_components(shuffled, model))
    torch.testing.assert_close(back.means, model.means, rtol=0, atol=0)
    torch.testing.assert_close(back.weights, model.weights)


def test_match_components_is_optimal_against_brute_force():
    g = torch.Generator().manual_seed(3)
    a = GaussianMixture.from_parameters(torch.full((5,), 0.2), torch.randn(5, 2, generator=g), torch.ones(5), "isotropic")
    b = GaussianMixture.from_parameters(torch.full((5,), 0.2), torch.randn(5, 2, generator=g), torch.ones(5), "isotropic")
    cost = lambda order: float((a.means - b.means[list(order)]).square().sum())  # noqa: E731
    best = min(itertools.permutations(range(5)), key=cost)
    assert cost(match_components(b, a).tolist()) == pytest.approx(cost(best), rel=1e-12)


def test_match_components_of_many_means_far_from_the_origin():
    """30 means 1e8 out, 1 apart, and a copy moved by 0.1 and shuffled: torch.cdist (past 25
    rows it expands |a|² + |b|² - 2 a·b, which rounds by ~1 here against squared
    distances of 0.01 and 0.81) matched them wrongly; the differences match them back."""
    g = torch.Generator().manual_seed(0)
    means = 1e8 + torch.arange(30.0, dtype=torch.float64).unsqueeze(-1)  # (30, 1)
    order = torch.randperm(30, generator=g)
    a = GaussianMixture.from_parameters(torch.full((30,), 1 / 30), means, torch.ones(30), "isotropic")
    b = GaussianMixture.from_parameters(torch.full((30,), 1 / 30), means[order] + 0.1, torch.ones(30),
                                        "isotropic")
    assert torch.equal(order[match_components(b, a)], torch.arange(30))


@pytest.mark.parametrize("K, K_ref", [(5, 3), (2, 4), (1, 3)])
def test_match_components_with_different_counts_matches_what_it_can(K, K_ref):
    """Matched components first, in the reference's order; the unmatched follow in their own."""
    ref = _model("diagonal", K=K_ref, D=2, seed=1)
    order = list(range(K))[::-1]
    # a model whose components sit near the reference's, in reverse order, plus far-away extras
    means = torch.cat([ref.means, 100 + torch.arange(max(K - K_ref, 0) * 2.0).reshape(-1, 2)])[:K]
    model = GaussianMixture.from_parameters(torch.full((K,), 1 / K), means[order] + 0.01,
                                            torch.ones(K, 2), "diagonal")
    got = match_components(model, ref).tolist()
    assert sorted(got) == list(range(K))
    n = min(K, K_ref)
    matched = model.means[got[:n]]
    if K <= K_ref:  # every model component matched to its own reference component
        assert torch.cdist(matched, ref.means).argmin(1).tolist() == sorted(
            torch.cdist(matched, ref.means).argmin(1).tolist())
        assert torch.cdist(matched, ref.means).amin(1).max() < 0.1
    else:  # the reference's components are matched in order, the extras come last
        torch.testing.assert_close(matched, ref.means + 0.01)
        assert got[n:] == sorted(got[n:])


def test_match_components_checks_its_arguments():
    with pytest.raises(ValueError, match="must be equal"):
        match_components(_model("full", K=3, D=3), _model("full", K=3, D=2))
    with pytest.raises(TypeError, match="GaussianMixture"):
        match_components(_model("full"), "reference")


def test_max_abs_diff_reports_size_and_verdict():
    ok = max_abs_diff(torch.tensor([1.0, 2.0]), np.array([1.0, 2.0 + 2 ** -40]), tol=1e-9)
    assert bool(ok) and ok.value == 2 ** -40 and str(ok) == "max |diff| = 9e-13 (within 1e-09)"
    bad = max_abs_diff([0.0, 1.0], [0.0, 1.5], tol=0.1)
    assert not bad and str(bad) == "max |diff| = 5e-01 (EXCEEDS 1e-01)"


def test_max_abs_diff_treats_nan_as_disagreement_and_equal_infinities_as_agreement():
    assert max_abs_diff([-np.inf, 1.0], [-np.inf, 1.0], tol=0).value == 0
    assert max_abs_diff([np.nan], [np.nan], tol=1).value == np.inf
    assert max_abs_diff([np.inf], [1.0], tol=1).value == np.inf


@pytest.mark.parametrize("kwargs, match", [({"tol": -1}, "tol must be a number >= 0"),
                                           ({"tol": "1e-3"}, "tol must be a number >= 0")])
def test_max_abs_diff_rejects_bad_tolerance(kwargs, match):
    with pytest.raises(ValueError, match=match):
        max_abs_diff(1.0, 1.0, **kwargs)


def test_max_abs_diff_rejects_shapes_that_do_not_match():
    with pytest.raises(ValueError, match="same shape"):
        max_abs_diff(np.zeros(3), np.zeros(4), tol=1)


def test_the_sanitizer_masks_only_the_number():
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "nbval_sanitize.cfg").read_text()
    rules = re.findall(r"regex: (.*)\nreplace: (.*)", text)
    line = "vs scipy: max |diff| = 3e-15 (within 1e-12)"
    for pattern, repl in rules:
        line = re.sub(pattern, repl, line)
    assert line == "vs scipy: max |diff| = <DIFF> (within 1e-12)"
