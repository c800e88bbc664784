"""select_model: the grid of families and component counts, against scikit-learn's own BIC/AIC
grid, held-out scoring, the gradient-descent route, and its input checks."""
import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture as SkGMM

import gmmlib
from conftest import SKLEARN


@pytest.fixture(scope="module")
def three_clusters():
    """900 points from three well-separated, strongly correlated 2-D Gaussians (a full
    covariance is needed), and 300 more held out."""
    truth = gmmlib.GaussianMixture.from_parameters(
        [0.3, 0.3, 0.4], [[-6.0, 0.0], [6.0, 0.0], [0.0, 7.0]],
        [[[2.0, 1.6], [1.6, 2.0]], [[2.0, -1.5], [-1.5, 2.0]], [[0.5, 0.6], [0.6, 3.0]]])
    X = truth.sample(1200, generator=torch.Generator().manual_seed(1)).numpy()
    return X[:900], X[900:]


def test_grid_agrees_with_sklearn(three_clusters):
    """scikit-learn's EM on the same grid (its own initialisation, converged tightly) ranks the
    same model first by BIC, and at that model both reach the same optimum: BIC and AIC agree to
    1e-6. (Elsewhere on the grid the two initialisations may end in different local optima:
    at K = 4 scikit-learn's AIC is 7295.6 and ours 7301.3, which is why AIC's winner is not
    compared; AIC ranks K = 3 and 4 within 1.3 of each other there.)"""
    X, _ = three_clusters
    Ks = range(1, 5)
    theirs = {}
    for family, sk_name in SKLEARN.items():
        for K in Ks:
            sk = SkGMM(K, covariance_type=sk_name, n_init=2, tol=1e-10, max_iter=2000, random_state=0).fit(X)
            theirs[family, K] = {"bic": sk.bic(X), "aic": sk.aic(X)}
    for criterion in ("bic", "aic"):
        sel = gmmlib.select_model(X, Ks, list(SKLEARN), criterion=criterion, n_init=2, tol=1e-10,
                                  max_iter=2000)
        if criterion == "bic":
            sk_best = min(theirs, key=lambda key: theirs[key][criterion])
            assert (sel.best.covariance_type, sel.best.n_components) == sk_best == ("full", 3)
        assert sel.score("full", 3) == pytest.approx(theirs["full", 3][criterion], rel=1e-6)
        assert len(sel.candidates) == 4 * 4
        for c in sel.candidates:  # the score is the model's own criterion
            assert c.score == pytest.approx(getattr(c.model, criterion)(X), rel=1e-12)
    assert sel.score("diag", 2) == sel.score("diagonal", 2)  # aliases resolve
    rows = sel.table().splitlines()
    best = sel.best
    assert rows[1].split()[:2] == [best.covariance_type, str(best.n_components)] and len(rows) == 17
    scores = [float(r.split()[-1]) for r in rows[1:]]
    assert scores == sorted(scores) and scores[0] == round(best.score, 1)
    assert sel.table(rows=3).splitlines() == rows[:4]


def test_heldout_and_gradient_descent(three_clusters):
    X, X_val = three_clusters
    sel = gmmlib.select_model(X, [2, 3, 4], ["full", "isotropic"], criterion="heldout", X_val=X_val)
    assert (sel.best.covariance_type, sel.best.n_components) in {("full", 3), ("full", 4)}
    for c in sel.candidates:
        assert c.score == pytest.approx(float(c.model.nll(X_val).detach()), rel=1e-12)
    assert sel.score("full", 3) < sel.score("full", 2) - 0.5  # a missing cluster costs on new data
    gd = gmmlib.select_model(X, [2, 3, 4], ["full"], method="gd", iterations=300)
    assert gd.best.n_components == 3 and gd.best.history.method == "gd"
    em_bic = gmmlib.select_model(X, [3], ["full"]).best.score
    assert gd.best.score == pytest.approx(em_bic, rel=1e-3)


def test_one_family_as_a_string():
    X = gmmlib.generate_data(200, 2, 2, seed=4).X
    sel = gmmlib.select_model(X, 2, "diag")
    assert [(c.covariance_type, c.n_components) for c in sel.candidates] == [("diagonal", 2)]


def test_float32_in_float32_out():
    X = gmmlib.generate_data(300, 2, 2, seed=2).X.float()
    sel = gmmlib.select_model(X, [1, 2], ["diagonal"])
    assert sel.best.model.loc.dtype == torch.float32 and np.isfinite(sel.best.score)


@pytest.mark.parametrize("kwargs,match", [
    (dict(criterion="loglik"), "criterion must be one of bic, aic, heldout"),
    (dict(criterion="heldout"), "pass X_val"),
    (dict(X_val=np.zeros((5, 2))), "X_val is only used by criterion='heldout'"),
    (dict(method="newton"), "method must be 'em' or 'gd'"),
    (dict(n_components=[0, 1]), "n_components must be a positive integer"),
    (dict(n_components=[1, 50]), "from 1 to N = 40"),
    (dict(n_components=[]), "from 1 to N = 40"),
    (dict(covariance_types=["round"]), "round"),
    (dict(covariance_types=[]), "covariance_types is empty"),
    (dict(criterion="heldout", X_val=np.zeros((5, 3))), "3 features"),
    (dict(max_iter=-1), "fitting covariance_type='full' with n_components=1 failed: max_iter"),
    (dict(n_components=2.5), "n_components must be an int or an iterable of ints"),
    (dict(dtype=torch.int64), "dtype must be torch.float32 or torch.float64"),
    (dict(generator="abc"), "^generator must be None, an int seed or a torch.Generator"),
    (dict(covariance_types=None), "covariance_types must be a covariance type or a list"),
])
def test_bad_arguments_say_what_to_do(kwargs, match):
    X = gmmlib.generate_data(40, 2, 2, seed=3).X
    args = dict(n_components=[1, 2], covariance_types=["full"])
    with pytest.raises(ValueError, match=match):
        gmmlib.select_model(X, **{**args, **kwargs})


def test_one_grid_point_by_family_and_k():
    """candidate/model/score look a fit up by (family, K), aliases included; model is the
    grid's own fitted mixture (no refit, no copy), and other criteria can be computed from it."""
    X = gmmlib.generate_data(300, 2, 2, seed=5).X
    sel = gmmlib.select_model(X, [1, 2, 3], ["full", "diagonal"], n_init=2)
    for c in sel.candidates:
        assert sel.candidate(c.covariance_type, c.n_components) is c
        assert sel.model(c.covariance_type, c.n_components) is c.model
        assert sel.score(c.covariance_type, c.n_components) == c.score
    m = sel.model("diag", 2)
    assert m is sel.model("diagonal", 2) and (m.covariance_type, m.n_components) == ("diagonal", 2)
    assert sel.score("diag", 2) == pytest.approx(m.bic(X), rel=1e-12)
    again = gmmlib.select_model(X, [2], ["diagonal"], n_init=2).model("diagonal", 2)
    assert again.nll(X).item() == pytest.approx(m.nll(X).item(), abs=1e-12)  # reproducible


@pytest.mark.parametrize("family,K", [("full", 4), ("tied", 2), ("isotropic", 1)])
def test_a_point_off_the_grid_is_a_key_error(family, K):
    X = gmmlib.generate_data(100, 2, 2, seed=6).X
    sel = gmmlib.select_model(X, [1, 2, 3], ["full", "diagonal"])
    for lookup in (sel.candidate, sel.model, sel.score):
        with pytest.raises(KeyError, match=r"not on the grid; it has the families "
                                           r"\['diagonal', 'full'\] and the numbers of "
                                           r"components \[1, 2, 3\]"):
            lookup(family, K)


def test_cross_validation_equals_scikit_learns_cross_val_score_on_the_same_folds():
    """K = 1 has one optimum (the sample mean and covariance), so gmmlib's cv score must equal
    scikit-learn's cross_val_score on the same four folds: each point scored by the fit that did
    not see it."""
    from sklearn.model_selection import cross_val_score
    from gmmlib.init import make_generator
    X = gmmlib.load_faithful()
    Z = ((X - X.mean(0)) / X.std(0)).numpy()
    for family in ("full", "diagonal"):
        sel = gmmlib.select_model(Z, [1], [family], criterion="cv", cv=4, generator=0, reg_covar=0.0)
        order = torch.randperm(len(Z), generator=make_generator(0)).numpy()
        folds = [(np.setdiff1d(order, held), held) for held in np.array_split(order, 4)]
        sk = cross_val_score(SkGMM(1, covariance_type=SKLEARN[family], reg_covar=0.0), Z, cv=folds)
        cand = sel.best
        assert cand.scores["cv"] == pytest.approx(-sk.mean(), rel=1e-10)
        assert cand.score == cand.scores["cv"]
        assert cand.scores["bic"] == pytest.approx(cand.model.bic(Z), rel=1e-12)
        assert cand.scores["aic"] == pytest.approx(cand.model.aic(Z), rel=1e-12)
        assert 0 < cand.scores["cv_se"] < 0.2
        assert cand.cv_nll.shape == (len(Z),) and cand.cv_nll.mean().item() == cand.scores["cv"]


def test_every_candidate_reports_all_criteria_and_its_restarts(three_clusters):
    X, X_val = three_clusters
    sel = gmmlib.select_model(X, [2, 3], ["full"], criterion="heldout", X_val=X_val, n_init=4)
    for c in sel.candidates:
        assert set(c.scores) == {"bic", "aic", "heldout"} and c.score == c.scores["heldout"]
        assert c.scores["bic"] == pytest.approx(c.model.bic(X)) and len(c.history.restarts) == 4
        assert -c.history.lower_bound == min(c.history.restarts)  # the kept run is the best
    assert sel.best_by("heldout") is sel.best
    assert sel.best_by("bic").scores["bic"] == min(c.model.bic(X) for c in sel.candidates)
    with pytest.raises(KeyError, match="no 'cv' scores"):
        sel.best_by("cv")


def test_cross_validation_input_checks(three_clusters):
    X, _ = three_clusters
    for cv in (1, 2.5, True):
        with pytest.raises(ValueError, match="cv must be an int >= 2"):
            gmmlib.select_model(X, [2], ["full"], criterion="cv", cv=cv)
    with pytest.raises(ValueError, match="cv=5 folds leave 8 training points, fewer than n_components=9"):
        gmmlib.select_model(X[:10], [9], ["full"], criterion="cv", cv=5)
    gmmlib.select_model(X[:10], [8], ["isotropic"], criterion="cv", cv=5)  # 8 points for 8: allowed
    # more folds than points: said so (it claimed 4 training points were fewer than 1)
    with pytest.raises(ValueError, match="cv must be at most n_samples=5"):
        gmmlib.select_model(X[:5], [1], ["full"], criterion="cv", cv=6)


def test_plot_selection_draws_one_line_per_family_and_stars_the_best():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from gmmlib import plot
    X = gmmlib.load_faithful()
    sel = gmmlib.select_model(X, [1, 2, 3], ["full", "tied"], criterion="cv", cv=3, n_init=2)
    fig, axes = plt.subplots(1, 3)
    plot.plot_selection(axes, sel)
    for ax, criterion in zip(axes, ("bic", "aic", "cv")):
        lines = ax.get_lines()
        assert [line.get_label() for line in lines[:2]] == ["full", "tied"]
        best = min(sel.candidates, key=lambda c: c.scores[criterion])
        star = lines[-1]
        assert star.get_xdata()[0] == best.n_components and star.get_ydata()[0] == best.scores[criterion]
    with pytest.raises(ValueError, match="no \\['heldout'\\] scores"):
        plot.plot_selection(axes[0], sel, ["heldout"])
    with pytest.raises(ValueError, match="one Axes per criterion"):
        plot.plot_selection(axes[:2], sel)
    plt.close(fig)
