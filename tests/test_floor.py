"""The variance floor is a constraint: every eigenvalue of every covariance >= min_variance.

References are closed forms: the eigenvalues (``torch.linalg.eigvalsh`` in float64), the
projection ``Q max(Λ, v) Qᵀ``, the rotation of the data; and two independent fitting methods
(gradient descent and EM) that must reach the same constrained optimum.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import gmmlib
from gmmlib.numerics import floor_eigenvalues

pytestmark = [pytest.mark.usefixtures("one_thread"),
              # tol=0 runs every iteration on purpose
              pytest.mark.filterwarnings("ignore::gmmlib.exceptions.ConvergenceWarning")]

LEARNED = ["full", "tied", "diagonal", "isotropic", "shared_isotropic"]
DTYPES = [torch.float64, torch.float32]


def smallest_eigenvalue(model) -> float:
    return float(torch.linalg.eigvalsh(model.covariances.double()).min())


def slack(model) -> float:
    """What rounding may take off the floor: a few units of the dtype's epsilon of the largest
    eigenvalue (the covariances are formed as F Fᵀ in the model's dtype)."""
    lam = torch.linalg.eigvalsh(model.covariances.double())
    return 8 * model.n_features * torch.finfo(model.loc.dtype).eps * float(lam.max())


def random_rotation(D, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(D, D)))
    return torch.tensor(q * np.sign(np.diag(r)), dtype=torch.float64)


def test_the_issue_example_is_floored_in_every_direction():
    """C = Q diag(4, 1, 1e-3) Qᵀ under min_variance=0.01: the clamp on the Cholesky diagonal
    left an eigenvalue of 1.5e-3; the floor raises exactly that eigenvalue to 0.01."""
    Q = random_rotation(3, 0)
    C = Q @ torch.diag(torch.tensor([4.0, 1.0, 1e-3], dtype=torch.float64)) @ Q.T
    model = gmmlib.GaussianMixture(2, 3, "full", min_variance=0.01, dtype=torch.float64)
    model.set_parameters(covariances=torch.stack([C, torch.eye(3, dtype=torch.float64)]))
    lam = torch.linalg.eigvalsh(model.covariances[0])
    assert torch.allclose(lam, torch.tensor([0.01, 1.0, 4.0], dtype=torch.float64), rtol=1e-12, atol=1e-13)
    expected = Q @ torch.diag(torch.tensor([4.0, 1.0, 0.01], dtype=torch.float64)) @ Q.T
    assert torch.allclose(model.covariances[0], expected, atol=1e-13)
    assert torch.allclose(model.covariances[1], torch.eye(3, dtype=torch.float64), atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", LEARNED)
def test_set_parameters_floors_any_covariance(family, dtype):
    rng = np.random.default_rng(1)
    K, D, v = 3, 4, 0.05
    fam = gmmlib.get_family(family)
    model = gmmlib.GaussianMixture(K, D, family, min_variance=v, dtype=dtype)
    for trial in range(5):
        # eigenvalues spread over 1e-6 .. 10, some far below the floor
        lam = 10.0 ** rng.uniform(-6, 1, size=(K, D))
        Q = np.stack([random_rotation(D, 10 * trial + k).numpy() for k in range(K)])
        full = torch.tensor(Q @ (lam[:, :, None] * np.swapaxes(Q, 1, 2)))
        full = 0.5 * (full + full.mT)
        cov = fam.project(full, torch.ones(K, dtype=torch.float64) / K)
        model.set_parameters(covariances=cov.to(dtype))
        assert smallest_eigenvalue(model) >= v - slack(model)
        # and what was above the floor is kept: the floored target, computed independently
        target = floor_eigenvalues(fam.project(full, torch.ones(K, dtype=torch.float64) / K).reshape(-1, D, D), v) \
            if fam.kind == "tril" else cov.clamp_min(v)
        got = fam.to_sklearn(model.covariances.double()).reshape(target.shape)
        tol = 1e-12 if dtype == torch.float64 else 1e-4  # float32: the margin is 10 D eps λmax
        assert torch.allclose(got, target, rtol=tol, atol=tol)


def test_floor_is_rotation_equivariant():
    rng = np.random.default_rng(2)
    for seed in range(10):
        D = int(rng.integers(2, 6))
        A = torch.tensor(rng.normal(size=(D, D)))
        C = A @ A.T * torch.tensor(10.0 ** rng.uniform(-4, 1))  # rank D, some directions tiny
        R = random_rotation(D, seed)
        v = float(10.0 ** rng.uniform(-3, 0))
        assert torch.allclose(floor_eigenvalues(R.T @ C @ R, v), R.T @ floor_eigenvalues(C, v) @ R,
                              atol=1e-12, rtol=0)
        # the model stores the same floored covariance, whichever axes C is written in
        a = gmmlib.GaussianMixture(1, D, "full", min_variance=v, dtype=torch.float64)
        b = gmmlib.GaussianMixture(1, D, "full", min_variance=v, dtype=torch.float64)
        a.set_parameters(covariances=C[None])
        b.set_parameters(covariances=(R.T @ C @ R)[None])
        assert torch.allclose(b.covariances[0], R.T @ a.covariances[0] @ R, atol=1e-12, rtol=0)


def collapse_sets():
    """Data built to collapse: duplicated points, points on a line, a constant feature."""
    rng = np.random.default_rng(3)
    blob = rng.normal(size=(60, 3))
    duplicated = np.concatenate([blob, np.repeat([[6.0, -6.0, 6.0]], 5, axis=0)])
    t = rng.normal(size=(40, 1))
    line = np.concatenate([blob, 4.0 + t @ np.array([[1.0, 2.0, -1.0]]) / math.sqrt(6)])
    constant = blob.copy()
    constant[:, 2] = 1.5
    return {"duplicated": duplicated, "line": line, "constant feature": constant}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", LEARNED)
@pytest.mark.parametrize("method", ["gd", "em"])
def test_guarded_fits_on_collapsing_data_respect_the_floor(method, family, dtype):
    v = 1e-2
    for name, X in collapse_sets().items():
        model = gmmlib.GaussianMixture(3, 3, family, min_variance=v, dtype=dtype)
        if method == "gd":
            h = gmmlib.fit_gd(model, X, iterations=150, component_lr=0.2, generator=0, progress=False)
            assert not h.diverged
        else:
            gmmlib.fit_em(model, X, max_iter=50, reg_covar=0.0, tol=0.0, generator=0, progress=False)
        assert smallest_eigenvalue(model) >= v - slack(model), name
        assert math.isfinite(float(model.nll(X).detach()))


@pytest.mark.parametrize("family", ["full", "diagonal"])
def test_mdn_head_respects_the_floor(family):
    torch.manual_seed(0)
    head = gmmlib.MDNHead(4, 3, 2, family, min_variance=0.3).double()
    with torch.no_grad():
        head.linear.weight.mul_(50.0)  # raw scales far below and above 0
    with torch.no_grad():
        L = head(torch.randn(64, 4, dtype=torch.float64)).scale_tril()  # (64, 3, 2, 2)
    lam = torch.linalg.eigvalsh(L @ L.mT)
    assert float(lam.min()) >= 0.3 * (1 - 1e-12)
    assert float(lam.min()) <= 0.3 * 1.01  # the floor is reached, not a looser bound


def test_changing_the_floor_keeps_the_covariances():
    C = torch.tensor([[[2.0, 0.5], [0.5, 0.3]]], dtype=torch.float64)
    model = gmmlib.GaussianMixture.from_parameters([1.0], [[0.0, 0.0]], C, min_variance=0.0)
    for v in [1e-6, 0.1, 0.0]:
        model.min_variance = v
        assert torch.allclose(model.covariances, C, atol=1e-12)
    model.min_variance = 1.0  # above the smaller eigenvalue: only that one is raised
    lam = torch.linalg.eigvalsh(model.covariances[0])
    assert lam[0] == pytest.approx(1.0, rel=1e-12)
    assert lam[1] == pytest.approx(float(torch.linalg.eigvalsh(C[0])[1]), rel=1e-12)


def test_constant_family_variance_must_respect_the_floor():
    with pytest.raises(ValueError, match="below min_variance"):
        gmmlib.GaussianMixture(2, 2, "constant", constant_variance=1e-3, min_variance=1e-2)
    model = gmmlib.GaussianMixture(2, 2, "constant", constant_variance=0.5, min_variance=1e-2)
    with pytest.raises(ValueError, match="below min_variance"):
        model.min_variance = 1.0
    assert torch.allclose(model.covariances, 0.5 * torch.eye(2).expand(2, 2, 2).to(model.loc.dtype))


# ------------------------------------------------------------------------------------------------
# EM under the floor: the exact constrained M-step
# ------------------------------------------------------------------------------------------------
def floor_binding_data(seed=4, direction=(0.8, 0.6)):
    """Two clusters in 2-D, one of them exactly on a line: its scatter across the line is 0,
    so the floor binds there (for the diagonal family when the line is along an axis)."""
    rng = np.random.default_rng(seed)
    blob = rng.normal(size=(80, 2)) * [1.0, 0.5]
    t = rng.normal(size=(40, 1))
    line = np.array([5.0, 1.0]) + t * np.array([direction])
    return np.concatenate([blob, line])


def start_model(X, family, v, seed=0):
    model = gmmlib.GaussianMixture(2, 2, family, min_variance=v, dtype=torch.float64)
    return gmmlib.initialize(model, X, "kmeans", generator=seed, reg_covar=0.1)


@pytest.mark.parametrize("family", ["full", "diagonal", "isotropic", "tied"])
def test_em_and_gd_reach_the_same_constrained_optimum(family):
    """The same floor, the same start: EM with reg_covar=0 (the exact constrained M-step) and
    gradient descent (covariance L Lᵀ + v I) end at the same mean NLL, with the floor binding
    (an eigenvalue at v) in full and diagonal."""
    X = floor_binding_data(direction=(1.0, 0.0) if family == "diagonal" else (0.8, 0.6))
    v = 0.05
    em = start_model(X, family, v)
    gd = start_model(X, family, v)
    h_em = gmmlib.fit_em(em, X, init=None, reg_covar=0.0, tol=0.0, max_iter=500, progress=False)
    h_gd = gmmlib.fit_gd(gd, X, init=None, iterations=3000, component_lr=0.05, reset_collapsed=False,
                         progress=False)
    assert h_gd.final_loss == pytest.approx(h_em.final_loss, abs=1e-4)
    if family in ("full", "diagonal"):
        assert smallest_eigenvalue(em) == pytest.approx(v, rel=1e-9)  # the floor binds
        assert smallest_eigenvalue(gd) == pytest.approx(v, rel=1e-3)


def test_em_fit_is_rotation_equivariant_under_the_floor():
    X = floor_binding_data()
    R = random_rotation(2, 7)
    v = 0.05
    a = start_model(X, "full", v)
    b = gmmlib.GaussianMixture(2, 2, "full", min_variance=v, dtype=torch.float64)
    b.set_parameters(weights=a.weights, means=a.means @ R, covariances=R.T @ a.covariances @ R)
    XR = torch.tensor(X) @ R
    ha = gmmlib.fit_em(a, X, init=None, reg_covar=0.0, tol=1e-14, max_iter=1000, progress=False)
    hb = gmmlib.fit_em(b, XR, init=None, reg_covar=0.0, tol=1e-14, max_iter=1000, progress=False)
    assert ha.converged and hb.converged
    assert hb.final_loss == pytest.approx(ha.final_loss, abs=1e-8)
    assert torch.allclose(b.covariances, R.T @ a.covariances @ R, atol=1e-6)
    assert smallest_eigenvalue(a) == pytest.approx(v, rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(family=st.sampled_from(LEARNED), v=st.floats(1e-4, 0.5), n_dup=st.integers(0, 6),
       seed=st.integers(0, 10_000))
def test_em_never_decreases_the_likelihood_under_the_floor(family, v, n_dup, seed):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(size=(30, 2)), rng.normal(size=(20, 2)) * 0.1 + 3,
                        np.repeat(rng.normal(size=(1, 2)) * 3, n_dup, axis=0)])
    model = gmmlib.GaussianMixture(3, 2, family, min_variance=v, dtype=torch.float64)
    h = gmmlib.fit_em(model, X, reg_covar=0.0, tol=0.0, max_iter=30, generator=seed, progress=False)
    loss = np.array(h.loss)  # each iteration's NLL, then the fitted model's
    assert np.all(np.diff(loss) <= 1e-10 * np.abs(loss[1:]).clip(1))
    assert smallest_eigenvalue(model) >= v * (1 - 1e-9)


@pytest.mark.parametrize("D", [2, 8, 32])
def test_floored_cholesky_survives_float32_rank_deficient_input(D):
    """A rank-3 covariance with eigenvalues up to ~1e7 in float32: the floored factor exists,
    every eigenvalue of L Lᵀ + v I is >= v, and the margin stays within its documented size
    (10 D eps of the largest eigenvalue, widened at most 100^4 times if rounding demands)."""
    from gmmlib.numerics import floored_cholesky
    torch.manual_seed(D)
    A = torch.randn(D, 3)
    C = (A @ A.T * 1e6).float()[None]
    v = 1e-6
    L = floored_cholesky(C, v)
    lam = torch.linalg.eigvalsh((L @ L.mT).double() + v * torch.eye(D, dtype=torch.float64))
    assert bool(torch.isfinite(L).all()) and float(lam.min()) >= v
    lam_c = torch.linalg.eigvalsh(C.double())
    assert torch.allclose(lam[0, -3:], lam_c[0, -3:], rtol=1e-4)  # the large ones are kept


@settings(max_examples=60, deadline=None)
@given(D=st.integers(2, 12), spread=st.floats(0.0, 4.0), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_floored_cholesky_keeps_a_covariance_above_the_floor_whatever_its_features_scales(
        D, spread, seed, dtype):
    """``cov - v I`` positive definite: ``L Lᵀ + v I`` is ``cov`` itself (the docstring), to the
    dtype's rounding of each entry next to ``sqrt(C_ii C_jj)``, whatever the features' scales
    (S C S with S = diag(10^u), u up to ``spread`` decades; C a well-conditioned correlation).
    The floor-binding check compared each pivot with the largest diagonal entry: diag(1e6, 1)
    came back in float32 as diag(1e6, 2.38), and fit_em's M-step with it."""
    from gmmlib.numerics import floored_cholesky
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(D, 2 * D, generator=g, dtype=torch.float64)
    C = A @ A.T / (2 * D) + 0.5 * torch.eye(D, dtype=torch.float64)  # eigenvalues >= 0.5
    S = 10.0 ** (spread * torch.rand(D, generator=g, dtype=torch.float64))
    cov = (S[:, None] * C * S[None, :]).to(dtype)
    v = 1e-6 * float(S.min()) ** 2  # well below every variance
    L = floored_cholesky(cov, v)
    got = (L.double() @ L.double().T) + v * torch.eye(D, dtype=torch.float64)
    scale = torch.sqrt(torch.outer(cov.double().diagonal(), cov.double().diagonal()))
    err = ((got - cov.double()).abs() / scale).max()
    assert float(err) < 100 * D * torch.finfo(dtype).eps


def test_float32_em_keeps_the_variance_of_a_feature_on_a_small_scale():
    """fit_em in float32 on features 1000:1 apart: every covariance entry as numpy's (the
    M-step's floored Cholesky inflated the small variance from 1.025 to 2.26)."""
    X = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([1000., 1.])
    ref = np.cov(X.double().numpy().T, bias=True)
    for family in ("full", "tied"):
        model = gmmlib.GaussianMixture(1, 2, family, dtype=torch.float32)
        gmmlib.fit_em(model, X, max_iter=5, progress=False, generator=0)
        got = model.covariances[0].double().numpy()
        scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))  # each entry's own size
        assert (np.abs(got - ref) / scale).max() < 1e-5, (got, ref)


@pytest.mark.parametrize("v", [0.0, 1e-6, 0.5])
def test_cholesky_plus_identity_of_singular_factors(v):
    """K Kᵀ = L Lᵀ + v I for lower-triangular L with zero, negative and positive diagonal
    entries, checked against the product formed in float64; K's diagonal is >= 0. With v = 0
    and a zero diagonal entry, torch.sign's 0 wiped that row of the QR's R: L Lᵀ = diag(0, 2)
    came back as diag(0, 1)."""
    from gmmlib.numerics import cholesky_plus_identity
    g = torch.Generator().manual_seed(3)
    L = torch.randn(6, 4, 4, generator=g, dtype=torch.float64).tril()
    L[0, 0, 0] = L[1, 2, 2] = L[2, 3, 3] = 0.0  # singular factors
    L[3] = torch.tensor([[0.0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [2, 0, 1, 0]])
    K = cholesky_plus_identity(L, v)
    want = L @ L.mT + v * torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(K @ K.mT, want, rtol=0, atol=1e-12)
    assert bool((torch.diagonal(K, dim1=-2, dim2=-1) >= 0).all())
    for bad in (-1.0, math.nan, math.inf, True):
        with pytest.raises(ValueError, match="v must be a finite number >= 0"):
            cholesky_plus_identity(L, bad)


@pytest.mark.parametrize("D,scale", [(3, 1.0), (16, 0.5), (64, 0.1)])
def test_float64_cholesky_plus_identity_agrees_with_the_qr_route(D, scale):
    """Float32 factors on a GPU take cholesky(L Lᵀ + v I) formed in float64 instead of the QR:
    run here on the CPU, both routes give the float64 reference's factor to float32 rounding,
    and their gradients the closed form's (d tr(C Cᵀ)/dL = 2L)."""
    from gmmlib.numerics import _float64_cholesky_plus_identity, cholesky_plus_identity
    torch.manual_seed(D)
    L = torch.tril(torch.randn(4, D, D) * scale).double()  # float32 values, held exactly
    v = 1e-6
    ref = torch.linalg.cholesky(L @ L.mT + v * torch.eye(D, dtype=torch.float64))
    tol = 1e-5 * float(ref.abs().amax())
    # gradients to float32's rounding, relative to the largest: the QR's ~2e-4 at D = 16,
    # the float64 route's ~1e-5 (measured)
    float64_route = lambda L, v: _float64_cholesky_plus_identity(L, v)[0]  # noqa: E731
    for route, grad_tol in ((cholesky_plus_identity, 1e-3), (float64_route, 1e-4)):
        L32 = L.float().requires_grad_()
        C = route(L32, v)
        assert C.dtype == torch.float32 and bool(torch.tril(C).eq(C).all())
        torch.testing.assert_close(C.double(), ref, rtol=0, atol=tol)
        C.square().sum().backward()  # d(sum C²)/dL = d(tr(L Lᵀ + v I))/dL = 2L
        err = (L32.grad.double() - 2 * L).abs().amax() / (2 * L).abs().amax()
        assert float(err) < grad_tol


@pytest.mark.parametrize("D", [2, 8, 32])
def test_float64_cholesky_plus_identity_declines_where_float64_blurs_v(D):
    """A component collapsing onto a line, covariance s² u uᵀ + 10 v I with the default floor
    v = 1e-6: its small directions hold 10 v, which float64's sum of L Lᵀ blurs once s² is
    large (logdet off by 1e-5 at s = 1e3 and 1e-3 at s = 1e4, measured). The float64 route
    answers only where its log-determinant matches the float64 QR's to float32's resolution,
    declines (None) elsewhere, and both happen in this sweep."""
    from gmmlib.numerics import _float64_cholesky_plus_identity, cholesky_plus_identity
    torch.manual_seed(D)
    v, answered, declined = 1e-6, 0, 0
    eye = torch.eye(D, dtype=torch.float64)
    for sd in (1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4):
        for _ in range(10):
            u = torch.randn(D, dtype=torch.float64)
            u /= u.norm()
            cov = sd ** 2 * torch.outer(u, u) + 10 * v * eye
            L = torch.linalg.cholesky(cov - v * eye).float()
            C, no = _float64_cholesky_plus_identity(L[None], v)
            declined += int(no[0])
            answered += int(not no[0])
            ref = cholesky_plus_identity(L.double(), v)  # the QR in float64
            logdet = 2 * C[0].double().diagonal().log().sum()  # either route's, accurate
            assert abs(float(logdet - 2 * ref.diagonal().log().sum())) < 1e-5 * D
    assert answered >= 20 and declined >= 20
    rank_one = torch.zeros(2, D, D)  # L Lᵀ = x² 11ᵀ ~ 1e22: declined, whatever the pivots
    rank_one[..., 0] = 1e11
    assert bool(_float64_cholesky_plus_identity(rank_one, v)[1].all())


@pytest.mark.parametrize("D", [8, 64])
def test_float64_cholesky_plus_identity_answers_for_well_conditioned_components(D):
    """The route's bound is on the smallest eigenvalue, not on the floor alone: components of
    condition number ~100 at standard deviations 1e-1 to 1e4 (s / v up to 1e14) take the
    float64 Cholesky, and their factors match the float64 QR's to float32 rounding, as do
    their log-determinants (an earlier rule, s / v <= 2^29 / D, declined every one from
    sd 1e1 on, and at D = 64 the benchmark's variances up to 49 too)."""
    from gmmlib.numerics import _float64_cholesky_plus_identity, cholesky_plus_identity
    torch.manual_seed(D)
    v = 1e-6
    for sd in (1e-1, 1.0, 1e1, 1e2, 1e4):
        Q = torch.linalg.qr(torch.randn(3, D, D, dtype=torch.float64)).Q
        lam = sd ** 2 * torch.logspace(-2, 0, D, dtype=torch.float64)  # condition 100
        L = torch.linalg.cholesky(Q @ torch.diag_embed(lam) @ Q.mT).float()
        C, declined = _float64_cholesky_plus_identity(L, v)
        assert not bool(declined.any()), f"declined at sd {sd}"
        ref = cholesky_plus_identity(L.double(), v)  # the QR in float64
        torch.testing.assert_close(C.double(), ref, rtol=0, atol=1e-5 * float(ref.abs().amax()))
        logdet = 2 * C.double().diagonal(dim1=-2, dim2=-1).log().sum(-1)
        want = 2 * ref.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        assert float((logdet - want).abs().max()) < 1e-5 * D


def test_float64_cholesky_plus_identity_declines_only_the_components_it_must():
    """A batch of three well-conditioned components, one collapsing onto a line in unscaled
    data and one whose float64 factorisation fails (rank one at 1e8): the float64 Cholesky
    answers for the three, the QR for the other two, exactly as the QR alone would (before,
    one declined component sent the whole batch to the QR), all matching the float64 QR to
    float32 rounding, in a batch of two dimensions too; and the gradient through the mixed
    batch, in float32 and float64, is the closed form's 2L, finite (a failed factor's
    backward must not reach it)."""
    from gmmlib.numerics import (_float64_cholesky_plus_identity, _qr_plus_identity,
                                 cholesky_plus_identity)
    torch.manual_seed(1)
    D, v = 16, 1e-6
    eye = torch.eye(D, dtype=torch.float64)
    Q = torch.linalg.qr(torch.randn(4, D, D, dtype=torch.float64)).Q
    cov = Q @ torch.diag_embed(torch.logspace(-1, 1, D, dtype=torch.float64)) @ Q.mT
    u = torch.randn(D, dtype=torch.float64)
    cov[3] = 1e8 * torch.outer(u, u) / u.dot(u) + 10 * v * eye
    L = torch.cat([torch.linalg.cholesky(cov - v * eye), torch.zeros(1, D, D, dtype=torch.float64)])
    L[4, :, 0] = 1e8
    L = L.float()
    C, declined = _float64_cholesky_plus_identity(L, v)
    assert declined.tolist() == [False, False, False, True, True]
    torch.testing.assert_close(C[3:], _qr_plus_identity(L[3:], v), rtol=0, atol=0)
    ref = cholesky_plus_identity(L.double(), v)
    for k in range(5):
        torch.testing.assert_close(C[k].double(), ref[k], rtol=0, atol=1e-5 * float(ref[k].abs().max()))
    C2, declined2 = _float64_cholesky_plus_identity(L[1:].reshape(2, 2, D, D), v)
    assert declined2.tolist() == [[False, False], [True, True]]
    torch.testing.assert_close(C2.reshape(4, D, D), C[1:], rtol=0, atol=0)
    for dtype in (torch.float32, torch.float64):
        Lg = L.detach().to(dtype).clone().requires_grad_()
        _float64_cholesky_plus_identity(Lg, v)[0].square().sum().backward()  # d tr(C Cᵀ)/dL = 2L
        assert bool(torch.isfinite(Lg.grad).all())
        torch.testing.assert_close(Lg.grad[:3], 2 * Lg.detach()[:3], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("D", [2, 8])
def test_float64_cholesky_plus_identity_bound_is_the_documented_one(D):
    """Diagonal ``L`` (eigenvalues in closed form: ``λ_i = l_i² + v``) placed at half and at
    twice the documented limit ``s D <= 2^29 / Σ_i 1/λ_i`` (``s`` the largest ``l_i²``):
    answered below it, declined above (a bound D times looser or tighter fails one side)."""
    from gmmlib.numerics import _float64_cholesky_plus_identity
    v = 1e-6
    rest = torch.full((D - 1,), 1e-2, dtype=torch.float64)  # the other l_i²
    for factor, want in ((0.5, False), (2.0, True)):
        lo, hi = 1e-6, 1e30  # s solved from s D = factor 2^29 / Σ 1/λ_i, on a log scale
        for _ in range(200):
            s = math.sqrt(lo * hi)
            limit = 2.0 ** 29 / float(1 / (s + v) + (1 / (rest + v)).sum())
            lo, hi = (s, hi) if s * D < factor * limit else (lo, s)
        L = torch.diag(torch.cat([torch.tensor([s], dtype=torch.float64), rest]).sqrt()).float()
        assert bool(_float64_cholesky_plus_identity(L[None], v)[1][0]) is want, (factor, s)


@pytest.mark.parametrize("bad,match", [
    (torch.eye(2, dtype=torch.int64), "must be float32 or float64.*got torch.int64"),
    (torch.eye(2).half(), "must be float32 or float64.*got torch.float16"),
    (np.eye(2), "must be a torch.Tensor of square matrices.*got ndarray"),
    (torch.ones(3, dtype=torch.float64), r"must be square matrices \(\.\.\., D, D\), got shape \(3,\)"),
    (torch.ones(2, 3, dtype=torch.float64), r"must be square.*got shape \(2, 3\)")])
def test_the_public_factorisations_name_malformed_input(bad, match):
    """numerics.cholesky and floored_cholesky met ints, float16, arrays, vectors and rectangles
    with torch's or numpy's messages (RuntimeError, NotImplementedError, TypeError,
    IndexError); floored_cholesky told a float64 matrix holding NaN to use float64."""
    from gmmlib.numerics import cholesky, floored_cholesky
    for call in (lambda: cholesky(bad), lambda: floored_cholesky(bad, 1e-3)):
        with pytest.raises(ValueError, match=f"covariances {match}"):
            call()
    with pytest.raises(ValueError, match="covariances contain NaN or infinity"):
        floored_cholesky(torch.full((2, 2), math.nan, dtype=torch.float64), 1e-3)
