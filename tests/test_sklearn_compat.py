"""GaussianMixtureEM behaves as scikit-learn's GaussianMixture wherever a user switches to it:
scikit-learn's own estimator checks, clone / Pipeline / GridSearchCV / cross_val_score against
scikit-learn's GaussianMixture in the same place, one-feature fits iteration for iteration,
verbose printing, warnings, NotFittedError, and the import that stays light."""
import copy
import io
import pickle
import re
import subprocess
import sys
import warnings
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture as SkGMM
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator, parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

import gmmlib
from gmmlib import GaussianMixtureEM
from gmmlib.init import kmeans

FAMILIES = ["full", "tied", "diag", "spherical"]


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------
# scikit-learn's own checks
# ------------------------------------------------------------------------------------------------
@parametrize_with_checks([GaussianMixtureEM(), GaussianMixtureEM(3, covariance_type="diag",
                                                                  init_params="random")])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# The only check not applicable by design: it feeds array-API namespaces (cupy, torch through
# array_api_compat) and runs only with SCIPY_ARRAY_API=1 and array-api-compat installed. gmmlib
# takes torch tensors natively instead, and computes in torch whatever the input.
INAPPLICABLE = {"check_array_api_input"}


def test_check_estimator_passes_every_applicable_check():
    results = check_estimator(GaussianMixtureEM(), on_fail=None, on_skip=None)
    not_passed = {r["check_name"]: r["status"] for r in results if r["status"] != "passed"}
    assert set(not_passed) == INAPPLICABLE and set(not_passed.values()) == {"skipped"}
    assert len(results) > 35  # the whole suite ran


def test_protocol_helpers():
    est = GaussianMixtureEM(2)
    assert not is_classifier(est) and not is_regressor(est)
    assert est.__sklearn_tags__().estimator_type == "density_estimator"
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    for method in ("predict", "predict_proba", "score", "score_samples", "bic", "aic"):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            getattr(est, method)(np.zeros((3, 2)))
    with pytest.raises(NotFittedError):
        est.sample(3)
    est.fit(np.random.default_rng(0).normal(size=(40, 2)))
    check_is_fitted(est)
    twin = clone(est)
    assert twin.get_params() == est.get_params() and not hasattr(twin, "means_")


# ------------------------------------------------------------------------------------------------
# in scikit-learn's machinery, against scikit-learn's GaussianMixture in the same place
# ------------------------------------------------------------------------------------------------
def three_blobs(n=300, seed=0):
    """Three separated, unequal 2-D clusters far from the origin, in different units; two of
    them close, so that two components have one clear optimum (merge those two)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [5.0, 1.0], [12.0, 14.0]])
    scales = np.array([0.6, 1.0, 1.4])
    k = rng.integers(3, size=n)
    X = centres[k] + scales[k, None] * rng.normal(size=(n, 2))
    return X * [100.0, 0.01] + [5e3, -2.0]


TIGHT = {"tol": 1e-10, "max_iter": 2000, "n_init": 3, "random_state": 0}


def test_pipeline_predict_and_score_agree_with_sklearn():
    X = three_blobs()
    ours = make_pipeline(StandardScaler(), GaussianMixtureEM(3, **TIGHT)).fit(X)
    theirs = make_pipeline(StandardScaler(), SkGMM(3, **TIGHT)).fit(X)
    assert ours.score(X) == pytest.approx(theirs.score(X), abs=1e-6)
    np.testing.assert_allclose(ours.score_samples(X), theirs.score_samples(X), atol=1e-6)
    # the same partition, up to the order of the components
    a, b = ours.predict(X), theirs.predict(X)
    assert len(set(zip(a, b))) == 3


def test_grid_search_and_cross_validation_agree_with_sklearn():
    X = three_blobs(240, seed=1)
    grid = {"gaussianmixtureem__n_components": [1, 2, 3],
            "gaussianmixtureem__covariance_type": FAMILIES}
    ours = GridSearchCV(make_pipeline(StandardScaler(), GaussianMixtureEM(**TIGHT)), grid,
                        cv=KFold(3, shuffle=True, random_state=0)).fit(X)
    sk_grid = {k.replace("gaussianmixtureem", "gaussianmixture"): v for k, v in grid.items()}
    theirs = GridSearchCV(make_pipeline(StandardScaler(), SkGMM(**TIGHT)), sk_grid,
                          cv=KFold(3, shuffle=True, random_state=0)).fit(X)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"],
                               theirs.cv_results_["mean_test_score"], atol=1e-6)
    assert ours.best_params_["gaussianmixtureem__n_components"] == 3
    assert ours.best_score_ == pytest.approx(theirs.best_score_, abs=1e-6)
    scores = cross_val_score(GaussianMixtureEM(3, covariance_type="full", **TIGHT), X, cv=3)
    np.testing.assert_allclose(scores, cross_val_score(SkGMM(3, covariance_type="full", **TIGHT), X, cv=3),
                               atol=1e-6)


# ------------------------------------------------------------------------------------------------
# one feature: the case that used to overwrite the caller's data and fit the wrong clusters
# ------------------------------------------------------------------------------------------------
def one_feature(seed=0):
    rng = np.random.RandomState(seed)
    return np.concatenate([rng.randn(150, 1) + c for c in (7.0, 13.0, 30.0)])


@pytest.mark.parametrize("family", FAMILIES)
def test_one_feature_fit_equals_sklearn_iteration_by_iteration(family):
    X = one_feature()
    before = X.copy()
    start = {"weights_init": [0.2, 0.3, 0.5], "means_init": [[5.0], [15.0], [25.0]]}
    prec = {"full": np.full((3, 1, 1), 0.1), "tied": np.full((1, 1), 0.1),
            "diag": np.full((3, 1), 0.1), "spherical": np.full(3, 0.1)}[family]
    kwargs = {"covariance_type": family, "tol": 0, "max_iter": 25, "precisions_init": prec, **start}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)
        ours = GaussianMixtureEM(3, **kwargs).fit(X)
        theirs = SkGMM(3, **kwargs).fit(X)
    np.testing.assert_array_equal(X, before)
    np.testing.assert_allclose(ours.lower_bounds_, theirs.lower_bounds_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-8)
    assert ours.score(X) == pytest.approx(theirs.score(X), abs=1e-8)


def test_one_feature_default_fit_finds_the_three_clusters():
    X = one_feature()
    before = X.copy()
    est = GaussianMixtureEM(3, random_state=0).fit(X)
    np.testing.assert_allclose(np.sort(est.means_.ravel()), [7.13, 12.94, 29.86], atol=0.01)
    assert est.score(X) == pytest.approx(SkGMM(3, random_state=0).fit(X).score(X), abs=1e-4)
    np.testing.assert_array_equal(X, before)  # the caller's data, untouched (was zero-mean)


# ------------------------------------------------------------------------------------------------
# the same options, messages and warnings
# ------------------------------------------------------------------------------------------------
def test_every_sklearn_constructor_argument_is_accepted():
    ours = set(GaussianMixtureEM().get_params())
    assert set(SkGMM().get_params()) <= ours


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random_from_data"])
def test_init_params_reach_sklearns_optimum(init):
    Xs = StandardScaler().fit_transform(three_blobs(200, seed=2))
    est = GaussianMixtureEM(3, init_params=init, n_init=4, random_state=0, tol=1e-8,
                            max_iter=1000).fit(Xs)
    best = SkGMM(3, n_init=4, random_state=0, tol=1e-8, max_iter=1000).fit(Xs)
    assert est.converged_
    assert est.score(Xs) == pytest.approx(best.score(Xs), abs=1e-5)


def test_random_init_reaches_the_optima_sklearns_random_init_reaches():
    """init_params='random' (random responsibilities: every mean starts near the data's mean)
    is a weak start in both libraries; over ten seeds each, gmmlib's runs end in the same
    optima as scikit-learn's, and the best of them is the global one."""
    Xs = StandardScaler().fit_transform(three_blobs(200, seed=2))
    kw = {"init_params": "random", "tol": 1e-8, "max_iter": 1000}
    ours = {round(GaussianMixtureEM(3, random_state=s, **kw).fit(Xs).score(Xs), 3) for s in range(10)}
    theirs = {round(SkGMM(3, random_state=s, **kw).fit(Xs).score(Xs), 3) for s in range(10)}
    assert ours <= theirs and max(ours) == max(theirs)


def test_k_means_plus_plus_spelling_in_the_torch_api():
    X = torch.as_tensor(three_blobs(100))
    a, b = (gmmlib.GaussianMixture(3, 2, dtype=torch.float64) for _ in range(2))
    gmmlib.initialize(a, X, "k-means++", generator=0)
    gmmlib.initialize(b, X, "kmeans++", generator=0)
    assert torch.equal(a.means, b.means)
    with pytest.raises(ValueError, match=r"unknown init method 'kmeans\+'.*k-means\+\+"):
        gmmlib.fit_em(a, X, init="kmeans+")


def _printed(est, X):
    out = io.StringIO()
    with warnings.catch_warnings(), redirect_stdout(out):
        warnings.simplefilter("ignore", SkConvergenceWarning)
        est.fit(X)
    return out.getvalue()


@pytest.mark.parametrize("verbose", [1, 2])
def test_verbose_prints_what_sklearn_prints(verbose):
    X = three_blobs(150, seed=3)
    start = {"weights_init": [0.3, 0.3, 0.4], "means_init": X[:3], "precisions_init": np.ones(3),
             "covariance_type": "spherical", "max_iter": 7, "tol": 0, "verbose": verbose,
             "verbose_interval": 3}
    ours, theirs = _printed(GaussianMixtureEM(3, **start), X), _printed(SkGMM(3, **start), X)
    times = re.compile(r"time lapse [0-9.]+s")
    assert times.sub("", ours) == times.sub("", theirs)
    assert "Iteration 6" in ours and "Iteration 7" not in ours
    assert _printed(GaussianMixtureEM(3, max_iter=3), X) == ""


def test_convergence_warning_is_sklearns():
    assert issubclass(gmmlib.ConvergenceWarning, SkConvergenceWarning)
    assert issubclass(gmmlib.ConvergenceWarning, RuntimeWarning)
    X = three_blobs(100)
    with pytest.warns(SkConvergenceWarning, match="Best performing initialization did not converge"):
        GaussianMixtureEM(3, max_iter=1).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", SkConvergenceWarning)  # a scikit-learn user's filter
        GaussianMixtureEM(3, max_iter=1).fit(X)
        gmmlib.fit_em(gmmlib.GaussianMixture(3, 2, dtype=torch.float64), X, max_iter=1,
                      progress=False)
    # a filter by scikit-learn's message: warnings.filterwarnings matches it from the start,
    # which the old "fit_em: ..." prefix escaped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message="Best performing initialization did not converge")
        GaussianMixtureEM(3, max_iter=1).fit(X)
    with pytest.warns(SkConvergenceWarning) as caught:
        SkGMM(3, max_iter=1).fit(X)
    sklearns = str(caught[0].message)
    with pytest.warns(SkConvergenceWarning) as caught:
        GaussianMixtureEM(3, max_iter=1).fit(X)
    assert str(caught[0].message).startswith(sklearns)  # its words, then gmmlib's detail


def test_sparse_is_refused_with_a_remedy_and_object_arrays_are_numbers():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    X = three_blobs(60)
    for fit in (GaussianMixtureEM(2).fit,
                lambda S: gmmlib.fit_em(gmmlib.GaussianMixture(2, 2), S, progress=False)):
        with pytest.raises((TypeError, ValueError), match=r"(?i)sparse.*toarray"):
            fit(scipy_sparse.csr_matrix(X))
    a = GaussianMixtureEM(2, random_state=0).fit(X.astype(object))
    b = GaussianMixtureEM(2, random_state=0).fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)
    m = gmmlib.GaussianMixture(2, 2, dtype=torch.float64)
    assert torch.equal(m.log_prob(X.astype(object)), m.log_prob(X))


@pytest.mark.parametrize("X,phrase", [
    (np.zeros(5), "Reshape your data"),
    (np.array([[0.0, np.nan], [1, 1], [2, 2]]), "Input X contains NaN"),
    (np.zeros((1, 2)), "1 sample"),
])
def test_messages_carry_sklearns_phrases(X, phrase):
    for fit in (GaussianMixtureEM(1).fit,
                lambda A: gmmlib.fit_em(gmmlib.GaussianMixture(2, 2), A, progress=False)):
        with pytest.raises(ValueError, match=phrase):
            fit(X)


def test_too_few_samples_and_wrong_width_name_sklearns_terms():
    X = np.random.default_rng(0).normal(size=(3, 2))
    with pytest.raises(ValueError, match="Expected n_samples >= n_components"):
        GaussianMixtureEM(4).fit(X)
    est = GaussianMixtureEM(2).fit(X)
    for data in (X[:, :1], torch.as_tensor(X[:, :1])):
        with pytest.raises(ValueError, match="X has 1 features, but GaussianMixtureEM is expecting 2"):
            est.predict(data)


def test_import_gmmlib_does_not_import_sklearn():
    code = "import sys, gmmlib; print('sklearn' in sys.modules); gmmlib.GaussianMixtureEM; " \
           "print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


_PEAK = """
import resource, numpy as np, torch, gmmlib
X = np.random.default_rng(0).normal(size=(60, 3000))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
est = gmmlib.GaussianMixtureEM(10, covariance_type="{0}", max_iter=2, random_state=0).fit(X)
est.sample(10)
model = gmmlib.GaussianMixture.from_parameters(est.weights_, est.means_, est.covariances_, "{0}")
model.sample(10, generator=0), model.sklearn_covariances()
gmmlib.initialize(model, X[:15], "random", generator=0)  # 10 components on 15 points: fallbacks
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in kB is Linux's")
@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_axis_aligned_fits_and_samples_never_form_k_by_d_by_d_arrays(covariance_type):
    """scikit-learn keeps K x D numbers for these types. covariances_ was a diagonal view of
    the (K, D, D) matrices L Lᵀ, keeping them alive, and sample() and the initialisation's
    fallback made (K, D, D) and (D, D) arrays: at K = 10, D = 3000 the peak grew by 2.1 GB
    (one (K, D, D) array is 720 MB); now by about 50 MB, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _PEAK.format(covariance_type)], capture_output=True,
                         text=True, check=True)
    assert float(out.stdout.split()[-1]) < 300, out.stdout  # MB


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_sklearn_init_starts_scikit_learn_where_the_model_is(covariance_type):
    """model.sklearn_init() hands scikit-learn its own precisions back (no matrix inverted), and
    scikit-learn's EM started from it takes the same step as from its own fitted attributes."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
    from sklearn.mixture import GaussianMixture as SkGM

    X = np.random.default_rng(0).normal(size=(300, 3)) * [1.0, 2.0, 0.5]
    sk = SkGM(3, covariance_type=covariance_type, random_state=0).fit(X)
    model = gmmlib.GaussianMixture.from_sklearn(sk)
    init = model.sklearn_init()
    np.testing.assert_allclose(init["precisions_init"], sk.precisions_, rtol=1e-10)
    np.testing.assert_allclose(init["means_init"], sk.means_, rtol=1e-12)
    np.testing.assert_allclose(init["weights_init"], sk.weights_, rtol=1e-12)
    precisions, cholesky = model.sklearn_precisions()
    np.testing.assert_allclose(cholesky.numpy(), sk.precisions_cholesky_, rtol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)
        again = SkGM(3, covariance_type=covariance_type, max_iter=1, **init).fit(X)
        own = SkGM(3, covariance_type=covariance_type, max_iter=1, weights_init=sk.weights_,
                   means_init=sk.means_, precisions_init=sk.precisions_).fit(X)
    np.testing.assert_allclose(again.means_, own.means_, rtol=1e-9)
    np.testing.assert_allclose(again.covariances_, own.covariances_, rtol=1e-9)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_no_random_state_follows_numpys_global_seed_as_sklearn():
    """random_state=None is scikit-learn's NumPy global RandomState: np.random.seed makes fit
    and sample repeatable, for scikit-learn and for gmmlib alike, and another seed changes them
    (gmmlib used to seed from entropy, so nothing made them repeatable)."""
    X = three_blobs(200)

    def run(cls, seed):
        np.random.seed(seed)
        gm = cls(3, init_params="random_from_data", max_iter=1).fit(X)
        return gm.means_, gm.sample(5)[0]
    for cls in (SkGMM, GaussianMixtureEM):
        (m0, s0), (m0_again, s0_again), (m1, s1) = run(cls, 0), run(cls, 0), run(cls, 1)
        assert np.array_equal(m0, m0_again) and np.array_equal(s0, s0_again), cls.__name__
        assert not np.array_equal(m0, m1) and not np.array_equal(s0, s1), cls.__name__


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_an_asymmetric_precisions_init_is_refused_as_sklearn_refuses_it(covariance_type):
    """The factorisation reads one triangle only: [[1, .9], [0, 1]] started the fit from the
    identity and [[1, 0], [.9, 1]] from [[1, .9], [.9, 1]], matrices the user did not pass.
    scikit-learn refuses both; so does gmmlib, by name, with the remedy."""
    X = three_blobs(60)
    for P in ([[1, .9], [0, 1]], [[1, 0], [.9, 1]]):
        P = np.array(P, float) if covariance_type == "tied" else np.array([P] * 3, float)
        with pytest.raises(ValueError, match="symmetric"):
            SkGMM(3, covariance_type=covariance_type, precisions_init=P).fit(X)
        with pytest.raises(ValueError, match=r"precisions_init must be symmetric.*\(S \+ S\.T\) / 2"):
            GaussianMixtureEM(3, covariance_type=covariance_type, precisions_init=P).fit(X)


def test_a_constant_familys_precisions_init_must_agree_with_its_variance():
    """The constant family's variance is constant_variance, not learned: a precisions_init
    was dropped in silence and the fit ran at another variance than the one passed. One that
    agrees (a model's own sklearn_init()) is taken; one that disagrees is refused by name."""
    X = three_blobs(60)
    with pytest.raises(ValueError, match=r"precisions_init 4 disagrees.*constant_variance=1\b"):
        GaussianMixtureEM(3, covariance_type="constant", precisions_init=np.array(4.0)).fit(X)
    est = GaussianMixtureEM(3, covariance_type="constant", constant_variance=0.25).fit(X)
    np.testing.assert_allclose(est.covariances_, 0.25)
    again = GaussianMixtureEM(3, covariance_type="constant", constant_variance=0.25,
                              **est.model_.sklearn_init()).fit(X)
    np.testing.assert_allclose(again.means_, est.means_, rtol=1e-6)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_a_singular_start_carries_sklearns_phrase(covariance_type):
    """Duplicated points with reg_covar=0: both refuse at the initialisation, and gmmlib's
    message carries scikit-learn's sentence (its users search for it) besides its own remedy."""
    X = np.repeat(three_blobs(30)[:3], 10, axis=0)
    for cls in (SkGMM, GaussianMixtureEM):
        with pytest.raises(ValueError, match="ill-defined empirical covariance"):
            cls(3, covariance_type=covariance_type, reg_covar=0.0, random_state=0).fit(X)


def _twins(covariance_type, X, **kw):
    """scikit-learn's GaussianMixture and GaussianMixtureEM fitted from one start."""
    sk = SkGMM(3, covariance_type=covariance_type, random_state=0, max_iter=5).fit(X)
    start = {"weights_init": sk.weights_, "means_init": sk.means_, "precisions_init": sk.precisions_}
    return (SkGMM(3, covariance_type=covariance_type, **start, **kw).fit(X),
            GaussianMixtureEM(3, covariance_type=covariance_type, **start, **kw).fit(X))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_scorers_and_sample_read_the_fitted_attributes_as_they_are_now(covariance_type):
    """scikit-learn's scorers read weights_, means_ and precisions_cholesky_, and sample() reads
    covariances_, afresh on every call: a changed attribute changes the answer, and an
    estimator given those attributes by hand (the usual way to rebuild a saved model) works.
    gmmlib's used model_ only: a changed attribute was silently ignored, and a rebuilt one
    raised NotFittedError."""
    X = three_blobs(300)
    sk, ours = _twins(covariance_type, X, max_iter=20)
    for est in (sk, ours):
        est.means_ += 1.0  # in place: the same array object, other values
        est.precisions_cholesky_ = est.precisions_cholesky_ * 1.5
    np.testing.assert_allclose(ours.score_samples(X), sk.score_samples(X), rtol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), atol=1e-9)
    np.testing.assert_allclose(ours.bic(X), sk.bic(X), rtol=1e-9)
    for est in (sk, ours):  # one entry of the array the scorers last read, in place
        est.precisions_cholesky_.flat[0] *= 1.25
    np.testing.assert_allclose(ours.score_samples(X), sk.score_samples(X), rtol=1e-9)
    rebuilt = GaussianMixtureEM(3, covariance_type=covariance_type)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        setattr(rebuilt, name, getattr(sk, name))
    check_is_fitted(rebuilt)
    np.testing.assert_allclose(rebuilt.score_samples(X), sk.score_samples(X), rtol=1e-9)
    assert np.array_equal(rebuilt.predict(X), sk.predict(X))
    sk.covariances_ = sk.covariances_ * 1e-4  # sample() reads covariances_, not the precisions
    rebuilt.covariances_, rebuilt.random_state = sk.covariances_, 0
    drawn, labels = rebuilt.sample(2000)
    assert drawn.dtype == sk.sample(3)[0].dtype == np.float64
    # every draw within 6 of the shrunken standard deviations (0.01 of the fitted ones)
    assert np.abs(drawn - sk.means_[labels]).max() < 6 * np.sqrt(sk.covariances_.max())


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("scale", [2.0, 0.25])
def test_weights_set_to_another_sum_score_as_in_sklearn(scale):
    """scikit-learn scores with log(weights_) as they are: weights set by hand that do not sum
    to 1 shift every log-density by log of their sum, and leave the responsibilities. gmmlib
    raised "weights must sum to 1" from its scorers."""
    X = three_blobs(300)
    sk, ours = _twins("full", X, max_iter=20)
    for est in (sk, ours):
        est.weights_ = est.weights_ * scale * np.array([1.0, 1.5, 0.5])
    np.testing.assert_allclose(ours.score_samples(X), sk.score_samples(X), rtol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), atol=1e-9)
    np.testing.assert_allclose([ours.score(X), ours.bic(X), ours.aic(X)],
                               [sk.score(X), sk.bic(X), sk.aic(X)], rtol=1e-9)
    assert np.array_equal(ours.predict(X), sk.predict(X))
    for est in (sk, ours):  # within any tolerance of 1: shifted all the same
        est.weights_ = est.weights_ / est.weights_.sum() * (1 + 5e-7)
    np.testing.assert_allclose(ours.score_samples(X), sk.score_samples(X), rtol=1e-12)
    ours.weights_ = np.array([0.5, -0.2, 0.7])  # scikit-learn: NaN scores
    with pytest.raises(ValueError, match="weights_ must be .* non-negative"):
        ours.score(X)


def test_sample_takes_a_whole_number_of_any_type_as_in_sklearn():
    """sample(2.0) works in scikit-learn; gmmlib refused every float. 2.5, which scikit-learn
    silently cuts to 2, is refused with the reason."""
    X = three_blobs(300)
    ours = GaussianMixtureEM(3, random_state=0).fit(X)
    sk = SkGMM(3, random_state=0).fit(X)
    for n in (2.0, np.int64(3), np.float32(4.0)):
        assert ours.sample(n)[0].shape == sk.sample(n)[0].shape == (int(n), 2)
    for bad in (2.5, 0, -1.0, float("nan"), "3", True):
        with pytest.raises(ValueError, match="Invalid value for 'n_samples'"):
            ours.sample(bad)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_a_lower_triangular_precisions_cholesky_scores_as_in_sklearn(covariance_type):
    """scikit-learn scores with any triangular P with P Pᵀ the precision (log|P| from its
    diagonal), so np.linalg.cholesky(precisions_), a lower one, is a natural way to rebuild a
    saved model. gmmlib read only P's upper triangle: such a P was taken for its diagonal and
    scored 0.23 nats a point off, silently. A P with entries on both sides is refused (it
    has no log-determinant on its diagonal, and scikit-learn's score for it is wrong)."""
    X = three_blobs(300) @ np.array([[1.0, 0.6], [0.0, 0.8]])  # correlated features
    sk, ours = _twins(covariance_type, X, max_iter=20)
    lower = np.linalg.cholesky(sk.precisions_)
    assert np.abs(np.tril(lower, -1)).max() > 0.1  # truly lower triangular, not diagonal
    rebuilt = GaussianMixtureEM(3, covariance_type=covariance_type)
    for est in (sk, ours, rebuilt):
        est.weights_, est.means_, est.precisions_cholesky_ = sk.weights_, sk.means_, lower
    for est in (ours, rebuilt):  # to 1e-7: scikit-learn expands the squares in these raw
        # units (1e2 and 1e-2, means 5e3 out), which rounds ~5e-8; the bug was 0.2 nats off
        np.testing.assert_allclose(est.score_samples(X), sk.score_samples(X), rtol=1e-7)
        np.testing.assert_allclose(est.predict_proba(X), sk.predict_proba(X), atol=1e-7)
    ours.precisions_cholesky_ = lower + np.swapaxes(lower, -1, -2)
    with pytest.raises(ValueError, match="precisions_cholesky_ must be triangular"):
        ours.score(X)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lower_bounds_are_numpy_scalars_of_the_fits_dtype_as_in_sklearn(dtype):
    """scikit-learn's lower_bound_ and lower_bounds_ are NumPy scalars of the data's dtype
    (means of its log-densities); gmmlib's were Python floats."""
    X = three_blobs(200).astype(dtype)
    sk, ours = _twins("full", X, max_iter=3)
    assert type(ours.lower_bound_) is type(sk.lower_bound_) is np.dtype(dtype).type
    assert [type(v) for v in ours.lower_bounds_] == [type(v) for v in sk.lower_bounds_]
    assert len(ours.lower_bounds_) == len(sk.lower_bounds_) == ours.n_iter_ > 0


@pytest.mark.parametrize("covariance_type, bad, phrase", [
    ("full", "precisions", r"'full precision' should be symmetric, positive-definite"),
    ("tied", "precisions", r"'tied precision' should be symmetric, positive-definite"),
    ("diag", "precisions", r"'diag precision' should be positive"),
    ("spherical", "precisions", r"'spherical precision' should be positive"),
    ("full", "weights", r"should be in the range \[0, 1\]")])
def test_bad_start_parameters_are_refused_in_sklearns_words(covariance_type, bad, phrase):
    """A bad weights_init or precisions_init carries scikit-learn's phrase, which its users
    search for, besides gmmlib's remedy; both libraries refuse the same input."""
    X = three_blobs(60)
    sk, _ = _twins(covariance_type, X, max_iter=2)
    start = {"weights_init": sk.weights_, "means_init": sk.means_, "precisions_init": sk.precisions_}
    if bad == "weights":
        start["weights_init"] = np.array([-0.5, 1.0, 0.5])
    else:
        start["precisions_init"] = -sk.precisions_
    for cls in (SkGMM, GaussianMixtureEM):
        with pytest.raises(ValueError, match=phrase):
            cls(3, covariance_type=covariance_type, **start).fit(X)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_a_subnormal_full_precision_is_named(covariance_type):
    """A subnormal eigenvalue of a full or tied precision: its inverse is infinite, and the
    error read "covariances contain NaN or infinity", naming neither precisions_init nor
    scikit-learn's phrase."""
    X = three_blobs(60)
    P = np.eye(2) * 1e-320 if covariance_type == "tied" else np.stack([np.eye(2)] * 2 + [np.eye(2) * 1e-320])
    with pytest.raises(ValueError, match=f"'{covariance_type} precision' should be symmetric, "
                                         "positive-definite: precisions_init must have a finite"):
        GaussianMixtureEM(3, covariance_type=covariance_type, precisions_init=P).fit(X)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
@pytest.mark.parametrize("value", [np.inf, 1e-320])
def test_infinite_or_subnormal_precisions_init_is_named(covariance_type, value):
    """An infinite precision passed the "> 0" check and came back as "covariances ... must be
    positive variances" (1/inf = 0), a subnormal one as an infinite variance; neither named
    precisions_init. scikit-learn refuses the infinite one too (its message is about
    infinity) and fits from the subnormal one with an infinite variance."""
    X = three_blobs(60)
    P = np.ones((3, 2)) if covariance_type == "diag" else np.ones(3)
    P[1] = value
    with pytest.raises(ValueError, match=f"'{covariance_type} precision' should be positive: "
                                         "precisions_init must be strictly positive and finite"):
        GaussianMixtureEM(3, covariance_type=covariance_type, precisions_init=P).fit(X)
    if value == np.inf:
        with pytest.raises(ValueError, match="infinity"):
            SkGMM(3, covariance_type=covariance_type, precisions_init=P, random_state=0).fit(X)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_fitted_estimator_holds_one_copy_of_its_parameters():
    """Telling changed attributes from the fitted ones must not keep a second copy of each:
    it made a fitted full estimator, and its pickle, half as large again (K D² floats twice
    more). Counted: the pickle is the fitted arrays, model_'s tensors and a small rest."""
    X = three_blobs(300) @ np.random.default_rng(0).normal(size=(2, 40))  # D = 40
    est = GaussianMixtureEM(8, max_iter=2, reg_covar=1e-3, random_state=0).fit(X)
    arrays = sum(getattr(est, a).nbytes for a in
                 ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"))
    tensors = sum(t.nbytes for t in est.model_.state_dict().values()
                  if isinstance(t, torch.Tensor))
    assert len(pickle.dumps(est)) < arrays + tensors + 50_000  # history_, settings: ~3 kB
    assert pickle.loads(pickle.dumps(est)).score(X) == est.score(X)
    old = pickle.loads(pickle.dumps(est))  # pickled before the digests: copies of the arrays
    old._exported = {a: getattr(old, a).copy() for a in old._exported}
    assert old.score(X) == pytest.approx(est.score(X), rel=1e-9)  # rebuilt, not an error


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_dtypes_follow_numpys_promotion_as_in_sklearn():
    """A float32 fit scores float64 data in float64 (it rounded them to float32: float64
    results and values of 1e17 raised "too large for torch.float32"); sample() returns
    float64; a warm start continues on data of the other dtype, in float64 (it raised); a warm
    start with max_iter=0 leaves lower_bound_ at -inf. All as scikit-learn does."""
    X = three_blobs(300)
    sk, ours = _twins("full", X.astype(np.float32), max_iter=20)
    for est in (sk, ours):
        assert est.means_.dtype == np.float32
        assert est.score_samples(X).dtype == est.predict_proba(X).dtype == np.float64
        assert est.sample(4)[0].dtype == np.float64
    mirror = SkGMM(3)  # scikit-learn scoring gmmlib's fitted float32 attributes in float64,
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):  # whose
        setattr(mirror, name, getattr(ours, name))  # rounding (precisions_cholesky_ is derived
    for data in (X, X * 1e17):  # in float32) moves log p by up to ~1e-5 of itself
        np.testing.assert_allclose(ours.score_samples(data), mirror.score_samples(data), rtol=1e-4)
    for first, second in ((X, X.astype(np.float32)), (X.astype(np.float32), X)):
        sk, ours = _twins("diag", first, warm_start=True, max_iter=3, tol=0)
        sk.fit(second), ours.fit(second)
        assert ours.means_.dtype == sk.means_.dtype == np.float64
        np.testing.assert_allclose(ours.means_, sk.means_, rtol=1e-5)
        sk.max_iter = ours.max_iter = 0
        sk.fit(second), ours.fit(second)
        assert ours.lower_bound_ == sk.lower_bound_ == -np.inf


@pytest.mark.parametrize("bad,phrase", [
    ({"weights_init": [0.3, 0.3, 0.0]}, "should be normalized"),
    ({"means_init": np.zeros((3, 3))}, "should have the shape of"),
    ({"weights_init": np.full(4, 0.25)}, "should have the shape of"),
    ({"covariance_type": "diag", "precisions_init": np.ones((3, 3))}, "should have the shape of"),
])
def test_bad_starting_parameters_are_refused_with_sklearns_phrase(bad, phrase):
    """Both refuse; gmmlib's message names its argument and carries scikit-learn's phrase,
    which its users search for."""
    X = three_blobs(60)
    for cls in (SkGMM, GaussianMixtureEM):
        with pytest.raises(ValueError, match=phrase):
            cls(3, **bad).fit(X)


def test_a_float32_estimator_rebuilt_from_its_attributes_scores_as_scikit_learn():
    """Rebuilt from changed attributes, a float32 fit's mixture is built in float64 from
    precisions_cholesky_ by one triangular solve. Built in float32 through the precision and
    its inverse (the condition number squared twice), nearly collinear data scored up to 1
    nat off. Reversing the components changes nothing, so scikit-learn's formula on the same
    attributes, in float64, is the reference."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(600, 1))
    X = np.hstack([base + 1e-3 * rng.normal(size=(600, 1)) for _ in range(5)]).astype(np.float32)
    X[:300] += 3
    ours = GaussianMixtureEM(2, random_state=0).fit(X)
    for name in ("weights_", "means_", "precisions_cholesky_"):
        setattr(ours, name, getattr(ours, name)[::-1].copy())
    mirror = SkGMM(2)
    for name in ("weights_", "means_", "precisions_cholesky_"):
        setattr(mirror, name, getattr(ours, name).astype(np.float64))
    # to 1e-6: gmmlib's weights are normalised (float32 ones sum to 1 to ~1e-7), not the rest
    np.testing.assert_allclose(ours.score_samples(X.astype(np.float64)),
                               mirror.score_samples(X.astype(np.float64)), rtol=0, atol=1e-6)


def test_a_warning_made_an_error_keeps_the_completed_fit_and_its_attributes():
    """Under warnings.simplefilter("error") the ConvergenceWarning raises after the fit: the
    fitted mixture stays (it was rolled back to the start), and a warm start's model_ and
    attributes agree (model_ had advanced, the attributes had not)."""
    X = three_blobs(200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = GaussianMixtureEM(3, warm_start=True, max_iter=2, tol=0, random_state=0).fit(X)
    before = est.means_.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SkConvergenceWarning):
            est.fit(X)
    assert not np.array_equal(est.means_, before)  # the second fit's result, everywhere
    np.testing.assert_array_equal(est.means_, est.model_.means.numpy())
    model = gmmlib.GaussianMixture(3, 2, dtype=torch.float64)
    start = copy.deepcopy(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SkConvergenceWarning):
            gmmlib.fit_em(model, X, max_iter=3, tol=0, generator=0, progress=False)
    assert not torch.equal(model.loc, start["loc"])


def test_warm_start_checks_its_settings_first_and_a_rebuilt_estimator_fits_afresh():
    """A changed attribute and a new covariance_type gave the rebuild's error, not the
    settings' one; an estimator given its attributes by hand (no converged_) raised
    AttributeError on a warm fit, where scikit-learn initialises afresh."""
    X = three_blobs(200)
    est = GaussianMixtureEM(3, warm_start=True, random_state=0).fit(X)
    est.means_ = est.means_ + 0.1
    est.set_params(covariance_type="diag")
    with pytest.raises(ValueError, match="covariance_type was full and is now diagonal"):
        est.fit(X)
    rebuilt = GaussianMixtureEM(3, warm_start=True, random_state=0)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        setattr(rebuilt, name, getattr(est, name))
    assert rebuilt.fit(X).converged_


def test_a_precision_asymmetric_by_rounding_is_accepted_as_by_sklearn():
    """The symmetry check's tolerance is scikit-learn's (np.allclose): a float32 precision
    rebuilt from its eigendecomposition, off by float32 rounding (6e-8 of its largest entry
    here), was refused by a 1e-8 tolerance, in float32 and cast to float64 alike."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(3, 3)).astype(np.float32)
    lam, Q = np.linalg.eigh(A @ A.T + np.eye(3, dtype=np.float32))
    P = (Q * (1 / lam)) @ Q.T
    assert not np.array_equal(P, P.T)
    X = rng.normal(size=(100, 3))
    for precisions in (P[None], P[None].astype(np.float64)):
        for cls in (SkGMM, GaussianMixtureEM):
            cls(1, precisions_init=precisions, max_iter=5).fit(X)


def test_fewer_distinct_points_than_components_warn_as_sklearns_kmeans_does():
    """scikit-learn's KMeans start warns when its clusters are fewer than K (duplicate points),
    and so its GaussianMixture does; gmmlib's k-means was silent. Same words, same category;
    no warning once there are K distinct points."""
    X = np.vstack([np.ones((10, 2)), np.zeros((10, 2))])
    phrase = r"Number of distinct clusters \(2\) found smaller than n_clusters \(3\)"
    for cls in (SkGMM, GaussianMixtureEM):
        with pytest.warns(SkConvergenceWarning, match=phrase):
            cls(3, random_state=0).fit(X)
    with pytest.warns(SkConvergenceWarning, match=phrase):
        kmeans(torch.as_tensor(X), 3, generator=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GaussianMixtureEM(2, random_state=0).fit(X)
        kmeans(torch.as_tensor(X), 2, generator=0)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_scoring_a_few_rows_gives_the_numbers_of_scoring_them_among_many():
    """Fewer rows than features under full covariances are scored by the model's own
    log-density, not the E-step's fast path (whose set-up, each component's inverse factor,
    made predict on one row 20x slower than scikit-learn at D = 300): the same numbers either
    way, and scikit-learn's."""
    X = three_blobs(400) @ np.random.default_rng(1).normal(size=(2, 12))  # D = 12, rank 2
    X = X + 1e-2 * np.random.default_rng(2).normal(size=X.shape)
    sk, ours = _twins("full", X, max_iter=5, reg_covar=1e-4)
    few = X[:5]  # 5 rows < 12 features
    np.testing.assert_allclose(ours.score_samples(few), ours.score_samples(X)[:5], rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(few), ours.predict_proba(X)[:5], atol=1e-10)
    np.testing.assert_allclose(ours.score_samples(few), sk.score_samples(few), rtol=1e-7)
    assert np.array_equal(ours.predict(few), sk.predict(few))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("dtype, scale, far", [(np.float64, 1e-6, 1e149), (np.float32, 1e-5, 1e15)])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # scikit-learn's
def test_a_point_no_component_reaches_scores_minus_inf_as_in_sklearn(covariance_type, dtype,
                                                                      scale, far):
    """A row so far out from narrow components that every log-density is -inf: scikit-learn
    and the model's own log_prob give -inf, the E-step's scorers gave NaN (-inf - (-inf) in
    the log-sum-exp). Its responsibilities are NaN in both, the other rows' unchanged."""
    rng = np.random.default_rng(0)
    X = (np.concatenate([rng.normal(size=(100, 5)) + c for c in rng.normal(size=(3, 5)) * 4])
         * scale).astype(dtype)
    ours = GaussianMixtureEM(3, covariance_type=covariance_type, random_state=0, reg_covar=0).fit(X)
    sk = SkGMM(3, covariance_type=covariance_type)
    sk.weights_, sk.means_, sk.precisions_cholesky_ = ours.weights_, ours.means_, ours.precisions_cholesky_
    rows = np.vstack([np.full((1, 5), far, dtype=dtype), X[:9]])
    got, want = ours.score_samples(rows), sk.score_samples(rows)
    assert got[0] == want[0] == -np.inf
    assert ours.model_.log_prob(torch.from_numpy(rows[:1]))[0].item() == -np.inf
    np.testing.assert_allclose(got[1:], want[1:], rtol=1e-4 if dtype == np.float32 else 1e-9)
    proba = ours.predict_proba(rows)
    assert np.isnan(proba[0]).all() and np.isfinite(proba[1:]).all()
