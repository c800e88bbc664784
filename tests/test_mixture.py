"""GaussianMixture against independent references: scipy.stats, torch.distributions, scikit-learn."""
import copy
import math

import numpy as np
import pytest
import torch
from scipy import special, stats
from sklearn.mixture import GaussianMixture as SkGMM

import gmmlib
from conftest import FAMILIES, SKLEARN, random_model


def scipy_mixture_logpdf(model, X):
    w, m, c = model.weights.numpy(), model.means.numpy(), model.covariances.numpy()
    comps = np.stack([stats.multivariate_normal(m[k], c[k]).logpdf(X) for k in range(len(w))], axis=1)
    comps = comps.reshape(len(X), len(w))
    top = comps.max(1, keepdims=True)
    return (top + np.log((w * np.exp(comps - top)).sum(1, keepdims=True)))[:, 0]


@pytest.mark.parametrize("D", [1, 2, 5])
def test_log_prob_matches_scipy_for_every_family(family, D):
    model = random_model(family, K=4, D=D, seed=D)
    X = np.random.default_rng(1).normal(scale=4, size=(300, D))
    ours = model.log_prob(X).detach().numpy()
    ref = scipy_mixture_logpdf(model, X)
    np.testing.assert_allclose(ours, ref, rtol=1e-10)
    dist = model.to_distribution().log_prob(torch.as_tensor(X)).detach().numpy()
    np.testing.assert_allclose(dist, ref, rtol=1e-10)


def test_covariances_follow_the_family_structure(family):
    model = random_model(family, K=3, D=3)
    cov = model.covariances
    off = cov - torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
    if family in ("diagonal", "isotropic", "shared_isotropic", "constant"):
        assert torch.count_nonzero(off) == 0
    if family in ("isotropic", "shared_isotropic", "constant"):
        d = torch.diagonal(cov, dim1=-2, dim2=-1)
        assert torch.allclose(d, d[:, :1].expand_as(d))
    if family in ("tied", "shared_isotropic", "constant"):
        assert torch.allclose(cov, cov[:1].expand_as(cov))
    if family == "constant":
        assert torch.allclose(cov, 0.7 * torch.eye(3, dtype=cov.dtype).expand_as(cov))
    assert bool((torch.linalg.eigvalsh(cov) > 0).all())


def test_univariate_reduces_to_normal_mixture():
    model = random_model("full", K=3, D=1, seed=4)
    x = np.linspace(-10, 10, 41)
    w, m, s = model.weights.numpy(), model.means.numpy()[:, 0], np.sqrt(model.covariances.numpy()[:, 0, 0])
    ref = np.log(sum(w[k] * stats.norm(m[k], s[k]).pdf(x) for k in range(3)))
    np.testing.assert_allclose(model.log_prob(x[:, None]).detach().numpy(), ref, rtol=1e-10)


def test_single_component_is_a_gaussian(family):
    model = random_model(family, K=1, D=3, seed=2)
    X = np.random.default_rng(0).normal(size=(50, 3))
    ref = stats.multivariate_normal(model.means.numpy()[0], model.covariances.numpy()[0]).logpdf(X)
    np.testing.assert_allclose(model.log_prob(X).detach().numpy(), ref, rtol=1e-10)
    np.testing.assert_allclose(model.predict_proba(X).numpy(), 1.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_predict_proba_rows_sum_to_one_however_far_the_point(family, dtype):
    """Far from every component the joint log-densities are huge (-5e17 at 1e9 deviations) and
    ``j - logsumexp(j)`` rounded the log of the row's sum away where components tie: rows
    summed to 0.74 in float64 and 1.37 in float32. Ties far out: two mirrored components
    (means m and -m, one covariance), points along a direction u with uᵀ Σ⁻¹ m = 0. Near the
    components, the responsibilities are scipy's softmax of scipy.stats' log-densities."""
    from gmmlib.data import random_covariances
    rng = np.random.default_rng(2)
    c = random_covariances(rng, 1, 3, family, constant_variance=0.7)
    c = np.concatenate([c, c]) if gmmlib.get_family(family).per_component else c
    m = rng.normal(scale=3, size=3)
    model = gmmlib.GaussianMixture.from_parameters([0.5, 0.5], [m, -m], c, family, dtype=dtype)
    v = np.linalg.solve(model.covariances[0].double().numpy(), m)
    u = rng.normal(size=3)
    u -= (u @ v) / (v @ v) * v
    scales = [0.0, 1.0, 10.0, 1e3, 1e6, 1e9] if dtype == torch.float64 else [0.0, 1.0, 10.0, 1e3]
    X = np.concatenate([rng.normal(size=(20, 3)) + s * u for s in scales])
    ours = model.predict_proba(torch.as_tensor(X, dtype=dtype)).double().numpy()
    np.testing.assert_allclose(ours.sum(1), 1.0, atol=4 * torch.finfo(dtype).eps)
    w, m, c = (t.double().numpy() for t in (model.weights, model.means, model.covariances))
    near = X[:60]  # scales 0, 1 and 10
    joint = np.stack([stats.multivariate_normal(m[k], c[k]).logpdf(near) for k in range(2)], 1)
    ref = special.softmax(joint + np.log(w), axis=1)
    np.testing.assert_allclose(ours[:60], ref, atol=1e-10 if dtype == torch.float64 else 1e-4)


@pytest.mark.parametrize("family", list(SKLEARN))
@pytest.mark.parametrize("K,D", [(1, 1), (3, 2), (5, 7)])
def test_n_parameters_equals_sklearn(family, K, D):
    X = np.random.default_rng(0).normal(size=(60, D))
    sk = SkGMM(K, covariance_type=SKLEARN[family], max_iter=200, random_state=0).fit(X)
    assert gmmlib.GaussianMixture(K, D, family).n_parameters() == sk._n_parameters()
    ours = gmmlib.GaussianMixture.from_sklearn(sk)
    assert math.isclose(ours.bic(X), sk.bic(X), rel_tol=1e-10)
    assert math.isclose(ours.aic(X), sk.aic(X), rel_tol=1e-10)
    np.testing.assert_allclose(ours.log_prob(X).detach().numpy(), sk.score_samples(X), rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(X).numpy(), sk.predict_proba(X), atol=1e-10)
    np.testing.assert_array_equal(ours.predict(X).numpy(), sk.predict(X))


@pytest.mark.parametrize("family", FAMILIES[:5])
def test_n_parameters_in_one_dimension_is_the_univariate_count(family):
    # K-component univariate mixture: K - 1 weights, K means, and K variances (1 if shared)
    K = 4
    shared = family in ("tied", "shared_isotropic")
    assert gmmlib.GaussianMixture(K, 1, family).n_parameters() == (K - 1) + K + (1 if shared else K)


def test_n_parameters_of_the_other_families():
    # weights K-1, means K*D, then one shared variance or none
    assert gmmlib.GaussianMixture(4, 3, "shared_isotropic").n_parameters() == 3 + 12 + 1
    assert gmmlib.GaussianMixture(4, 3, "constant").n_parameters() == 3 + 12


def test_gradcheck_of_the_nll(family):
    model = random_model(family, K=3, D=2, seed=5)
    X = torch.as_tensor(np.random.default_rng(0).normal(scale=3, size=(20, 2)))
    params = [p for p in model.parameters()]
    names = [n for n, _ in model.named_parameters()]

    def nll(*values):
        out = torch.func.functional_call(model, dict(zip(names, values)), (X,), {})
        return -out.mean()

    assert torch.autograd.gradcheck(nll, tuple(p.detach().clone().requires_grad_() for p in params))


def test_sample_moments_match_the_parameters(family):
    model = random_model(family, K=3, D=2, seed=7)
    X, labels = model.sample(200_000, generator=torch.Generator().manual_seed(0), return_labels=True)
    freq = torch.bincount(labels, minlength=3).double() / len(labels)
    assert torch.allclose(freq, model.weights, atol=5e-3)
    for k in range(3):
        Xk = X[labels == k]
        assert torch.allclose(Xk.mean(0), model.means[k], atol=0.03)
        assert torch.allclose(torch.cov(Xk.T), model.covariances[k], atol=0.03)
    # overall mixture mean and covariance (law of total covariance)
    w, m, c = model.weights, model.means, model.covariances
    mu = w @ m
    total = (w[:, None, None] * (c + torch.einsum("ki,kj->kij", m - mu, m - mu))).sum(0)
    assert torch.allclose(X.mean(0), mu, atol=0.03)
    assert torch.allclose(torch.cov(X.T), total, rtol=0.02, atol=0.03)


def test_sample_is_reproducible_with_a_generator_and_leaves_global_rng_alone():
    model = random_model("full")
    state = torch.random.get_rng_state()
    a = model.sample(10, generator=torch.Generator().manual_seed(3))
    b = model.sample(10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(state, torch.random.get_rng_state())


def test_state_dict_round_trip(family, tmp_path):
    model = random_model(family, K=3, D=3, seed=9)
    model.min_variance = 1e-4
    path = tmp_path / "gmm.pt"
    torch.save(model.state_dict(), path)
    other = gmmlib.GaussianMixture(3, 3, family, dtype=torch.float64)
    other.load_state_dict(torch.load(path))
    X = torch.randn(40, 3, dtype=torch.float64)
    assert torch.equal(model.log_prob(X), other.log_prob(X))
    assert other.min_variance == 1e-4


def test_to_float32_follows(family):
    model = random_model(family, K=2, D=2)
    X = np.random.default_rng(0).normal(size=(30, 2))
    ref = model.log_prob(X)
    model32 = model.to(torch.float32)
    out = model32.log_prob(X)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), ref, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(family):
    model = random_model(family, K=3, D=2)
    X = torch.randn(100, 2, dtype=torch.float64)
    ref = model.log_prob(X)
    cuda = model.to("cuda")
    assert torch.allclose(cuda.log_prob(X.cuda()).cpu(), ref, rtol=1e-10)
    assert cuda.sample(5, generator=torch.Generator("cuda").manual_seed(0)).device.type == "cuda"
    h = gmmlib.fit_gd(cuda, X.cuda(), iterations=50, generator=0, progress=False)
    assert math.isfinite(h.final_loss)


def test_from_parameters_checks_its_input():
    m = np.zeros((2, 2))
    with pytest.raises(ValueError, match="sum to 1"):
        gmmlib.GaussianMixture.from_parameters([0.5, 0.6], m, np.stack([np.eye(2)] * 2))
    with pytest.raises(ValueError, match="positive definite"):
        gmmlib.GaussianMixture.from_parameters([0.5, 0.5], m, np.stack([np.eye(2), -np.eye(2)]))
    with pytest.raises(ValueError, match="symmetric"):
        gmmlib.GaussianMixture.from_parameters([0.5, 0.5], m, np.stack([np.eye(2), [[1, 0.5], [0, 1]]]))
    with pytest.raises(ValueError, match=r"shape of \(2, 2\)"):
        gmmlib.GaussianMixture.from_parameters([0.5, 0.5], m, np.ones((2, 3)), "diagonal")
    with pytest.raises(ValueError, match="positive variances"):
        gmmlib.GaussianMixture.from_parameters([0.5, 0.5], m, [1.0, -1.0], "spherical")


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown covariance_type 'ful'.*full, tied, diagonal"):
        gmmlib.GaussianMixture(2, 2, "ful")
    with pytest.raises(ValueError, match="n_components"):
        gmmlib.GaussianMixture(0, 2)
    with pytest.raises(ValueError, match="n_features"):
        gmmlib.GaussianMixture(2, 2.5)
    with pytest.raises(ValueError, match="constant_variance"):
        gmmlib.GaussianMixture(2, 2, "constant", constant_variance=0)
    assert gmmlib.GaussianMixture(2, 2, "spherical").covariance_type == "isotropic"
    assert gmmlib.GaussianMixture(2, 2, "diag").covariance_type == "diagonal"


@pytest.mark.parametrize("X,match", [
    (np.zeros(5), "2-D"),
    (np.zeros((5, 3)), "X has 3 features, but the model is expecting 2 features as input"),
    (np.array([[0.0, np.nan], [1, 1]]), "Input X contains NaN in 1 row"),
    (np.array([[0.0, np.inf], [1, 1]]), "Input X contains infinity"),
    (np.array([[np.inf, 1.0], [-np.inf, 1]]), "contains infinity in 2 row"),  # the sum is NaN
    (np.array([["a", "b"]]), "numbers"),
])
def test_bad_data_is_named(X, match):
    model = gmmlib.GaussianMixture(2, 2)
    with pytest.raises(ValueError, match=match):
        model.log_prob(X)


def test_data_too_large_for_the_dtype_is_refused_with_a_remedy():
    """Squared distances of values beyond ~sqrt(max float) overflow and turn every density and
    responsibility into inf or NaN: refused up front. Values that overflow float32 when a float32
    model converts them are named as such; complex data are refused."""
    m64 = gmmlib.GaussianMixture(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"values up to 1e\+200, too large for torch.float64.*rescale X"):
        m64.log_prob(np.array([[1e200, 0.0], [0.0, 1.0]]))
    assert torch.isfinite(m64.log_prob(np.array([[1e100, 0.0], [0.0, 1.0]]))).all()
    with pytest.raises(ValueError, match="too large for torch.float32"):
        gmmlib.GaussianMixture(2, 2, dtype=torch.float32).log_prob(np.array([[1e20, 0.0]]))
    with pytest.raises(ValueError, match="overflow torch.float32 when converted"):
        gmmlib.GaussianMixture(2, 2, dtype=torch.float32).log_prob(np.array([[1e39, 0.0]]))
    # a NaN or infinity the data hold already is not blamed on the conversion (nor on "fitting")
    for X in (np.float32([[np.nan, 0.0]]), np.array([[np.nan, 0.0]]), np.array([[np.inf, 0.0]])):
        with pytest.raises(ValueError, match=r"contains (NaN|infinity) in 1 row\(s\); remove or "
                                             r"impute those rows$"):
            gmmlib.GaussianMixture(2, 2, dtype=torch.float32).log_prob(X)
    with pytest.raises(ValueError, match="complex"):
        m64.log_prob(np.array([[1 + 1j, 0.0]]))
    with pytest.raises(ValueError, match="too large"):
        gmmlib.fit_em(gmmlib.GaussianMixture(2, 2, dtype=torch.float64), np.full((10, 2), 1e200))


def test_variance_floor_bounds_the_density():
    model = gmmlib.GaussianMixture.from_parameters([1.0], [[0.0, 0.0]], [[[1e-12, 0], [0, 1e-12]]], min_variance=0)
    model.min_variance = 1e-4
    assert torch.allclose(model.covariances, 1e-4 * torch.eye(2, dtype=torch.float64))
    bound = -math.log(2 * math.pi * 1e-4)  # log of (2 pi floor)^(-D/2) for D = 2
    assert float(model.log_prob([[0.0, 0.0]]).detach()) == pytest.approx(bound, rel=1e-12)


def test_sample_takes_an_int_seed_and_refuses_other_generators():
    model = gmmlib.GaussianMixture.from_parameters([0.5, 0.5], [[0.0, 0.0], [5.0, 5.0]], np.eye(2)[None].repeat(2, 0))
    assert torch.equal(model.sample(50, generator=3), model.sample(50, generator=torch.Generator().manual_seed(3)))
    for bad in ["abc", 1.5, np.random.default_rng(0)]:
        with pytest.raises(ValueError, match="generator must be None, an int seed or a torch.Generator"):
            model.sample(5, generator=bad)
    with pytest.raises(ValueError, match="out of range"):
        model.sample(5, generator=2 ** 70)


@pytest.mark.parametrize("kwargs,match", [
    (dict(dtype=torch.float16), "dtype must be torch.float32 or torch.float64"),
    (dict(dtype=torch.int64), "dtype must be torch.float32 or torch.float64"),
    (dict(device="bogus"), "device must be a torch device"),
    (dict(device=3.5), "device must be a torch device"),
])
def test_unsupported_dtype_and_device_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gmmlib.GaussianMixture(2, 2, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_says_so():
    with pytest.raises(ValueError, match="needs CUDA, which this machine does not have"):
        gmmlib.GaussianMixture(2, 2, device="cuda")
    with pytest.raises(ValueError, match="needs CUDA"):
        gmmlib.GaussianMixtureEM(2, device="cuda").fit(np.random.default_rng(0).normal(size=(20, 2)))


@pytest.mark.parametrize("make,match", [
    (lambda: gmmlib.GaussianMixture.from_parameters([1.0], [["a", "b"]], np.eye(2)[None]), "means must be an array of numbers"),
    (lambda: gmmlib.GaussianMixture.from_parameters([0.5, 0.5], [[0.0], [1.0, 2.0]], np.eye(2)[None]), "means must be an array"),
    (lambda: gmmlib.GaussianMixture.from_parameters(["x"], [[0.0, 0.0]], np.eye(2)[None]), "weights must be an array"),
    (lambda: gmmlib.GaussianMixture(1, 2).set_parameters(covariances="big"), "covariances must be an array"),
    (lambda: gmmlib.GaussianMixture(1, 2, ["full"]), "unknown covariance_type"),
])
def test_parameters_that_are_not_numbers_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("bad", ["weights", "means", "covariances"])
@pytest.mark.parametrize("family", FAMILIES)
def test_set_parameters_that_rejects_one_value_writes_none(family, bad):
    """set_parameters checks every value before writing any: with valid new values for the
    other two arguments and a rejected one (in any position), every parameter is as before,
    bit for bit. The first version wrote weights and means and then raised on the covariances."""
    model = random_model(family, K=3, D=2, seed=4)
    before = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    other = random_model(family, K=3, D=2, seed=5)
    rejected = {"weights": [0.5, 0.5, 0.5], "means": [[0.0, float("nan")]] * 3,
                "covariances": -other.sklearn_covariances()}
    values = {"weights": other.weights, "means": other.means,
              "covariances": other.sklearn_covariances(), bad: rejected[bad]}
    if family == "constant" and bad == "covariances":
        values[bad] = torch.tensor(-1.0)  # the constant family's one variance
    elif family == "constant":
        values["covariances"] = model.sklearn_covariances()  # its fixed variance, accepted
    with pytest.raises(ValueError):
        model.set_parameters(**values)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model.set_parameters(**{k: v for k, v in values.items() if k != bad})  # the valid ones go in
    good = "weights" if bad == "means" else "means"
    assert torch.allclose(getattr(model, good), getattr(other, good))


@pytest.mark.parametrize("family", FAMILIES)
def test_no_grad_paths_are_chunked_and_equal_the_autograd_path(family):
    """Without a gradient, log_prob, predict and predict_proba run in row chunks of ~2^20 /
    (K D) rows; over many chunks they equal the one-shot differentiable evaluation, and
    torch.distributions (an independent reference)."""
    model = random_model(family, K=4, D=3, seed=2)
    X = torch.randn(3 * (1 << 20) // 12 + 5, 3, dtype=torch.float64) * 3  # 3 chunks and a bit
    one_shot = model.log_prob(X)  # parameters require grad: not chunked
    assert one_shot.requires_grad
    with torch.no_grad():
        chunked = model.log_prob(X)
        reference = model.to_distribution().log_prob(X)
        component = model.component_log_prob(X)
    assert torch.allclose(chunked, one_shot.detach(), rtol=0, atol=1e-12)
    assert torch.allclose(chunked, reference, rtol=1e-12, atol=1e-10)
    resp = (component + model.log_weights.detach()).softmax(-1)
    assert torch.allclose(model.predict_proba(X), resp, atol=1e-12)
    assert torch.equal(model.predict(X), resp.argmax(-1))


def test_densities_are_differentiable_in_x(family):
    """log_prob and component_log_prob pass the gradient to X, as torch.distributions does
    (a mixture as the prior of an encoder's output, a score d log p / dx): X was detached, so
    an encoder in front of the mixture got no gradient and no error was raised."""
    model = random_model(family, K=3, D=2, seed=1)
    X = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    reference = torch.autograd.grad(model.to_distribution().log_prob(X).sum(), X)[0]
    torch.testing.assert_close(torch.autograd.grad(model.log_prob(X).sum(), X)[0], reference)
    comps = model.component_log_prob(X)  # (N, K) -> back through the log-sum-exp by hand
    mixed = torch.logsumexp(comps + model.log_weights, -1)
    torch.testing.assert_close(torch.autograd.grad(mixed.sum(), X)[0], reference)
    model.requires_grad_(False)  # a frozen prior still passes the gradient on to X
    encoder = torch.nn.Linear(2, 2).double()
    model.log_prob(encoder(X.detach())).sum().backward()
    assert encoder.weight.grad is not None and bool(torch.isfinite(encoder.weight.grad).all())


def test_a_weight_of_zero_counts_for_nothing():
    """A weight of exactly 0 was clamped to the smallest normal number (log -708), so a point
    far from the weighted component took the weightless one: log p = -709 and predict 1,
    where the density is N(100 | 0, 1) (scipy: -5000.92) and scikit-learn predicts 0."""
    model = gmmlib.GaussianMixture.from_parameters([1.0, 0.0], [[0.0], [100.0]], [1.0, 1.0],
                                                   "isotropic")
    x = np.array([[100.0], [0.5]])
    np.testing.assert_allclose(model.log_prob(x).detach().numpy(), stats.norm.logpdf(x[:, 0]),
                               rtol=1e-12)
    sk = SkGMM(2, covariance_type="spherical")
    sk.weights_, sk.means_ = np.array([1.0, 0.0]), np.array([[0.0], [100.0]])
    sk.covariances_ = sk.precisions_cholesky_ = np.ones(2)
    with np.errstate(divide="ignore"):  # scikit-learn takes log(0) = -inf too
        assert model.predict(x).tolist() == sk.predict(x).tolist() == [0, 0]
    for fit in (gmmlib.fit_em, gmmlib.fit_gd):  # a fit from such a start stays finite
        m = gmmlib.GaussianMixture.from_parameters([1.0, 0.0], [[0.0], [100.0]], [1.0, 1.0],
                                                   "isotropic")
        h = fit(m, torch.randn(50, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
                init=None, progress=False, **({"iterations": 20} if fit is gmmlib.fit_gd else {}))
        assert math.isfinite(h.final_loss) and not getattr(h, "diverged", False)


@pytest.mark.parametrize("family", ["full", "tied"])
@pytest.mark.parametrize("floor", [0.0, 1e-7])
def test_a_float32_model_keeps_the_small_eigenvalue_of_the_covariance_it_is_given(family, floor):
    """from_parameters/set_parameters rounded float64 covariances to float32 before
    factorising them: the smallest eigenvalue of a nearly collinear pair's covariance (4.4e-7
    next to 2) came back 5 % off (with the default floor's margin, lifted further). The factor
    is now computed in float64 and rounded: the eigenvalue to float32's precision of it."""
    rng = np.random.default_rng(0)
    t = rng.normal(size=(500, 1))
    X = np.hstack([t, t + 1e-3 * rng.normal(size=(500, 1))])
    C = np.cov(X.T, bias=True)[None]
    want = np.linalg.eigvalsh(C[0])[0]
    m = gmmlib.GaussianMixture.from_parameters([1.0], X.mean(0)[None],
                                               C if family == "full" else C[0], family,
                                               dtype=torch.float32, min_variance=floor)
    got = np.linalg.eigvalsh(m.double().covariances.numpy())[0, 0]
    assert got == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("name", ["weights", "means", "covariances"])
def test_parameters_that_overflow_the_models_dtype_are_named_as_such(name):
    """Finite float64 values past float32's range became inf in the conversion and were
    reported as if the caller had passed infinity ("means contain NaN or infinity")."""
    given = {"weights": [1.0], "means": [[0.0]], "covariances": [1.0]}
    given[name] = {"weights": [1e39], "means": [[1e39]], "covariances": [1e39]}[name]
    with pytest.raises(ValueError, match=f"{name} has values beyond ±3.4e\\+38, which overflow "
                                         "torch.float32: rescale them, or use torch.float64"):
        gmmlib.GaussianMixture.from_parameters(given["weights"], given["means"],
                                               given["covariances"], "isotropic",
                                               dtype=torch.float32)
    with pytest.raises(ValueError, match="NaN or infinity|finite|positive"):  # a real inf
        bad = dict(given, **{name: {"weights": [math.inf], "means": [[math.inf]],
                                    "covariances": [math.inf]}[name]})
        gmmlib.GaussianMixture.from_parameters(bad["weights"], bad["means"], bad["covariances"],
                                               "isotropic", dtype=torch.float32)


@pytest.mark.parametrize("scale", [1e-12, 1e-6, 1.0, 1e6])
def test_symmetry_is_checked_relative_to_the_matrix_at_any_scale(scale):
    """An off-diagonal 0.9 above, 0 below, of a matrix with unit diagonal, times any scale, is
    refused (below a largest entry of 1 the tolerance was an absolute 1e-8: at 1e-12 it was
    accepted and its upper triangle dropped); a float32 covariance built as Xᵀ X / n, with its
    rounding asymmetry, and a float64 one through an eigendecomposition, are accepted."""
    asym = scale * torch.tensor([[[1.0, 0.9], [0.0, 1.0]]], dtype=torch.float64)
    with pytest.raises(ValueError, match="must be symmetric"):
        gmmlib.GaussianMixture.from_parameters([1.0], [[0.0, 0.0]], asym, "full")
    X = torch.randn(1000, 6, generator=torch.Generator().manual_seed(0)) * math.sqrt(scale)
    X[:, 1] = X[:, 0] * 0.999 + X[:, 1] * 0.01  # correlated: off-diagonals of every size
    C32 = X.T @ X / 1000  # float32, its rounding asymmetric
    lam, Q = torch.linalg.eigh(C32.double())
    for C in (C32, (Q * lam) @ Q.T):
        gmmlib.GaussianMixture.from_parameters([1.0], [[0.0] * 6], C[None], "full",
                                               dtype=C.dtype, min_variance=0.0)


@pytest.mark.parametrize("family", ["full", "diagonal", "isotropic"])
def test_a_refused_state_dict_leaves_the_model_as_it_was(family):
    """torch's load_state_dict loads every entry that fits before it raises: a state_dict of a
    mixture with more components brought its floor (0.0) in, and the covariances, stored
    relative to the floor, moved (1.0 to 0.5); a NaN floor scored NaN, a negative one switched
    the floor off. Now a refused state_dict loads nothing."""
    a = gmmlib.GaussianMixture.from_parameters([0.5, 0.5], [[0.0], [1.0]], torch.ones(2, 1, 1),
                                               "full", dtype=torch.float64, min_variance=0.5)
    if family != "full":
        a = gmmlib.GaussianMixture.from_parameters([0.5, 0.5], [[0.0], [1.0]],
                                                   [1.0, 1.0] if family == "isotropic"
                                                   else [[1.0], [1.0]], family,
                                                   dtype=torch.float64, min_variance=0.5)
    before = copy.deepcopy(a.state_dict())
    bigger = gmmlib.GaussianMixture(3, 1, family, dtype=torch.float64, min_variance=0.0)
    bad = []
    for value in (math.nan, -1.0):
        sd = copy.deepcopy(a.state_dict())
        sd["_extra_state"] = {"min_variance": value, "covariance_type": family}
        bad.append((sd, ValueError, "min_variance must be a finite number >= 0"))
    sd = copy.deepcopy(a.state_dict())
    sd["_extra_state"] = {"covariance_type": family}
    bad.append((sd, ValueError, "_extra_state must be a GaussianMixture's"))
    for sd, error, match in [(bigger.state_dict(), RuntimeError, "size mismatch"), *bad]:
        with pytest.raises(error, match=match):
            a.load_state_dict(sd)
        after = a.state_dict()
        assert after["_extra_state"] == before["_extra_state"] and a.min_variance == 0.5
        assert all(torch.equal(before[k], after[k]) for k in before if k != "_extra_state")
        torch.testing.assert_close(a.covariances, torch.ones(2, 1, 1, dtype=torch.float64))


def test_a_state_dict_loads_only_into_its_own_family():
    """constant's buffer and shared_isotropic's parameter have the same shape: the state_dict
    loaded silently, and the constant model held a variance of 1e-4 under its floor of 0.1.
    Refused now, by torch's mechanism (RuntimeError listing the mismatch), loading nothing;
    a state_dict saved before the family was recorded still loads."""
    a = gmmlib.GaussianMixture(2, 2, "shared_isotropic", dtype=torch.float64, min_variance=0.1)
    with torch.no_grad():
        a.raw_scale.fill_(math.log(0.01))
    b = gmmlib.GaussianMixture(2, 2, "constant", dtype=torch.float64, min_variance=0.1)
    before = {k: v.clone() for k, v in b.state_dict().items() if isinstance(v, torch.Tensor)}
    with pytest.raises(RuntimeError, match="covariance_type='shared_isotropic'"):
        b.load_state_dict(a.state_dict())
    assert all(torch.equal(before[k], v) for k, v in b.state_dict().items() if k in before)
    old = a.state_dict()
    old["_extra_state"] = {"min_variance": 0.1}  # as saved before
    c = gmmlib.GaussianMixture(2, 2, "shared_isotropic", dtype=torch.float64)
    c.load_state_dict(old)
    torch.testing.assert_close(c.covariances, a.covariances)
    outer = torch.nn.Sequential(b)  # inside another module, the same refusal
    with pytest.raises(RuntimeError, match="covariance_type='shared_isotropic'"):
        outer.load_state_dict(torch.nn.Sequential(a).state_dict())


def test_sample_draws_each_component_from_its_own_factor(family):
    """x = mu_k + L_k eps, now component by component (L[labels] made an (n, D, D) tensor: 1.5 GB
    for 10,000 float32 draws at D = 200): the same draws as the formula row by row."""
    model = random_model(family, K=3, D=4, seed=2)
    X, labels = model.sample(500, generator=7, return_labels=True)
    g = torch.Generator().manual_seed(7)  # the same draws, in the same order
    again = torch.multinomial(model.weights, 500, replacement=True, generator=g)
    eps = torch.randn(500, 4, generator=g, dtype=torch.float64)
    L = model.scale_tril()
    reference = model.loc[again] + (L[again] @ eps.unsqueeze(-1)).squeeze(-1)
    assert torch.equal(labels, again)
    torch.testing.assert_close(X, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_parameters_are_refused_by_name(half):
    """The constructor refuses float16, Module.to does not: scoring said 'X has values up to
    1.6, too large for torch.float16', sampling failed in torch's geqrf."""
    model = gmmlib.GaussianMixture(2, 3).to(half)
    for use in (lambda: model.log_prob(torch.randn(3, 3)), lambda: model.sample(2),
                lambda: model.predict(np.zeros((2, 3))), lambda: model.covariances,
                lambda: model.to_distribution(), lambda: model.set_parameters(means=np.zeros((2, 3))),
                lambda: gmmlib.fit_em(model, torch.randn(20, 3), progress=False)):
        with pytest.raises(ValueError, match="computes in torch.float32 or torch.float64.*model.float"):
            use()


def test_parameters_are_refused_when_complex_or_misnamed():
    """Complex parameters lost their imaginary part with only torch's warning; a bad constant
    variance was blamed on constant_variance, which the caller had not passed; permuted's bad
    orders failed inside torch."""
    model = gmmlib.GaussianMixture(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="means must be .*complex"):
        model.set_parameters(means=np.array([[1 + 5j, 0], [0, 0]]))
    with pytest.raises(ValueError, match="weights must be .*complex"):
        gmmlib.GaussianMixture.from_parameters(np.array([0.5 + 1j, 0.5]), np.zeros((2, 1)),
                                               np.ones(2), "isotropic")
    for bad in (-1.0, np.nan):
        with pytest.raises(ValueError, match="^covariances must be a positive finite variance"):
            gmmlib.GaussianMixture.from_parameters([1.0], [[0.0]], bad, "constant")
    for order in (None, "10", [[1], [0]], [0.0, 1.0], [1, 1]):
        with pytest.raises(ValueError, match="order must be a permutation of 0..1"):
            model.permuted(order)


@pytest.mark.parametrize("family", ["full", "tied", "diagonal", "isotropic"])
def test_a_zero_covariance_is_floored_as_documented(family):
    """set_parameters: semi-definite is enough when min_variance > 0. An all-zero covariance
    was refused for full and tied ('must be positive definite'), floored for the others."""
    K, D = (1, 2)
    zero = {"full": np.zeros((K, D, D)), "tied": np.zeros((D, D)), "diagonal": np.zeros((K, D)),
            "isotropic": np.zeros(K)}[family]
    model = gmmlib.GaussianMixture(K, D, family, min_variance=1e-3, dtype=torch.float64)
    model.set_parameters(covariances=zero)
    torch.testing.assert_close(model.covariances, torch.eye(D, dtype=torch.float64).expand(K, D, D) * 1e-3,
                               rtol=1e-9, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_constant_familys_floor_can_be_set_to_its_own_variance(dtype):
    """The constructor takes constant_variance == min_variance; setting the same floor later
    was refused for 0.7 ('variance 0.7 is below min_variance=0.7'): the stored variance is
    exp(2 log s), a rounding away. A floor clearly above it is still refused."""
    for v in (0.2, 0.3, 0.7, 2.0, 1e-3, 1e-6):
        model = gmmlib.GaussianMixture(1, 2, "constant", constant_variance=v, min_variance=v, dtype=dtype)
        model.min_variance = 0.0
        model.min_variance = v
        with pytest.raises(ValueError, match="below min_variance"):
            model.min_variance = 1.001 * v


def test_a_model_on_the_meta_device_says_it_has_no_values_until_given_them():
    """The constructor takes device='meta' (torch's deferred initialisation), but log_prob,
    sample and set_parameters then failed deep inside torch (".item() cannot be called on meta
    tensors", "aten::bincount"); now one ValueError with the remedy, which works."""
    meta = gmmlib.GaussianMixture(2, 2, "full", device="meta", dtype=torch.float64)
    for call in (lambda: meta.log_prob(torch.zeros(1, 2, device="meta")), lambda: meta.sample(3),
                 lambda: meta.sample(3, generator=0), meta.sklearn_init,
                 lambda: meta.set_parameters(weights=[0.5, 0.5])):
        with pytest.raises(ValueError, match="on the 'meta' device.*to_empty"):
            call()
    ref = gmmlib.GaussianMixture.from_parameters([0.3, 0.7], [[0.0, 0.0], [1.0, 2.0]],
                                                 torch.eye(2).expand(2, 2, 2) * 0.5, "full",
                                                 dtype=torch.float64)
    real = meta.to_empty(device="cpu")
    real.load_state_dict(ref.state_dict())
    X = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(real.log_prob(X), ref.log_prob(X))


def test_the_floor_of_a_half_precision_constant_model_is_refused_like_the_others():
    """Setting min_variance on a float16 model raised the half-precision error for the learned
    families, but the constant family's check ran first with float16's rounding as its
    tolerance: a floor of 1.005 above its variance of 1 was taken."""
    model = gmmlib.GaussianMixture(2, 2, "constant", constant_variance=1.0).half()
    with pytest.raises(ValueError, match="computes in torch.float32 or torch.float64 only"):
        model.min_variance = 1.005
    assert model.min_variance == 1e-6
