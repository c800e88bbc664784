"""EM and the scorers over data streamed in batches (gmmlib.sources): a DataLoader, an
IterableDataset, a list of arrays, a memmap. The reference is the same fit over the tensor: the
per-block sums only regroup the same additions, so the two agree to rounding (1e-10)."""
import copy
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import gmmlib
from gmmlib.sources import as_source, survey

FAMILIES = list(gmmlib.FAMILIES)


def blobs(N=700, D=3, K=4, seed=0):
    return gmmlib.generate_data(N, K, D, seed=seed).X.double()  # (N, D) float64


def fitted(X, family, source=None, **kw):
    model = gmmlib.GaussianMixture(4, X.shape[1], family, dtype=torch.float64)
    history = gmmlib.fit_em(model, X if source is None else source, generator=3, progress=False,
                            tol=1e-8, max_iter=40, **kw)
    return model, history


def assert_same_fit(a, b, ha, hb, tol=1e-10):
    torch.testing.assert_close(a.weights, b.weights, rtol=tol, atol=tol)
    torch.testing.assert_close(a.means, b.means, rtol=tol, atol=tol)
    torch.testing.assert_close(a.covariances, b.covariances, rtol=tol, atol=tol)
    assert ha.n_iter == hb.n_iter
    np.testing.assert_allclose(ha.loss, hb.loss, rtol=tol, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("batch_size", [7, 128, 700])
def test_em_over_a_dataloader_equals_em_over_the_tensor(family, batch_size):
    """Batches of 7 (the last one ragged: 700 = 100 x 7), 128 (ragged: 60) and all at once, as
    the (x,) tuples a TensorDataset yields: the same iterations and parameters to 1e-10. The
    k-means start reads the same rows (fewer than init_sample, so the sample is every row, in
    order), so the whole fit is the same."""
    X = blobs()
    loader = DataLoader(TensorDataset(X), batch_size=batch_size)
    ref, h_ref = fitted(X, family)
    got, h_got = fitted(X, family, loader)
    assert_same_fit(got, ref, h_got, h_ref)


@pytest.mark.parametrize("family", ["full", "diagonal"])
def test_em_over_other_sources(family, tmp_path):
    """A list of arrays, an IterableDataset of tensors, a shuffled loader (each pass a new
    order: the sums do not depend on it), and a float32 memmap read 2^16 rows at a time."""
    X = blobs()
    ref, h_ref = fitted(X, family)

    class Chunks(IterableDataset):
        def __iter__(self):
            return iter(X.split(50))
    g = torch.Generator().manual_seed(0)
    shuffled = DataLoader(X, batch_size=64, shuffle=True, generator=g)
    start = gmmlib.GaussianMixture(4, 3, family, dtype=torch.float64)
    gmmlib.initialize(start, X, generator=3)
    for source in [list(X.numpy().reshape(7, 100, 3)), Chunks()]:
        got, h_got = fitted(X, family, source)
        assert_same_fit(got, ref, h_got, h_ref)
    a, b = (start.permuted(range(4)) for _ in range(2))
    ha = gmmlib.fit_em(a, X, init=None, tol=1e-8, max_iter=40, progress=False)
    hb = gmmlib.fit_em(b, shuffled, init=None, tol=1e-8, max_iter=40, progress=False)
    assert_same_fit(a, b, ha, hb)
    path = tmp_path / "x.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(700, 3))
    mm[:] = X.numpy()
    mm.flush()
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=(700, 3))
    got, h_got = fitted(X, family, mm)
    ref32, h32 = fitted(torch.from_numpy(np.array(mm)).double(), family)
    assert_same_fit(got, ref32, h_got, h32)


def test_scorers_over_a_loader_equal_the_tensor():
    """log_prob, component_log_prob, predict_proba, predict, nll, bic and aic over a loader
    (batches of 64, ragged) equal the tensor's; so do the estimator-facing fast scorer."""
    from gmmlib.em import evaluate
    X = blobs()
    model, _ = fitted(X, "full")
    loader = DataLoader(TensorDataset(X), batch_size=64)
    for name in ["log_prob", "component_log_prob", "predict_proba", "predict", "nll"]:
        torch.testing.assert_close(getattr(model, name)(loader), getattr(model, name)(X).detach(),
                                   rtol=1e-12, atol=1e-12)
    assert model.bic(loader) == pytest.approx(model.bic(X), rel=1e-12)
    assert model.aic(loader) == pytest.approx(model.aic(X), rel=1e-12)
    source = as_source(loader, n_features=3, dtype=torch.float64, device="cpu")
    lp, resp = evaluate(model, source, resp=True)
    torch.testing.assert_close(lp, model.log_prob(X).detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(resp, model.predict_proba(X), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shuffle,seeded", [(False, False), (True, False), (True, True)])
def test_a_tensor_dataloader_is_read_by_index_with_the_loaders_own_batches(shuffle, seeded,
                                                                          monkeypatch):
    """A plain DataLoader over a TensorDataset is read by gathering each batch's indices (the
    loader itself fetches and stacks row by row, ~20x slower): the batches are the loader's
    own, the same rows in the same order pass after pass, shuffled or not, ragged last batch
    included, and torch's random generator ends where the loader's own passes leave it."""
    X = blobs(N=1003)
    y = torch.arange(len(X))
    generator = torch.Generator().manual_seed(7) if seeded else None
    loader = DataLoader(TensorDataset(X, y), batch_size=100, shuffle=shuffle,
                        generator=generator)
    source = as_source(loader, n_features=3, dtype=torch.float64, device="cpu")
    torch.manual_seed(11)
    expected = [batch[0].clone() for _ in range(3) for batch in loader]  # three passes
    state = torch.get_rng_state()
    if seeded:
        generator_state = generator.get_state()
        generator.manual_seed(7)
    torch.manual_seed(11)
    fetched = []
    monkeypatch.setattr(TensorDataset, "__getitem__", lambda self, i: fetched.append(i))
    got = [x for _ in range(3) for x in source]
    assert not fetched  # no row was fetched one by one
    assert len(got) == len(expected) == 3 * 11
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert torch.equal(torch.get_rng_state(), state)
    if seeded:  # the loader's own generator too
        assert torch.equal(generator.get_state(), generator_state)


@pytest.mark.parametrize("drop_last", [False, True])
def test_an_unshuffled_tensor_loader_is_read_as_slices_of_its_own_batches(drop_last):
    """Unshuffled, the batches are read as slices, not index lists: the loader's own batches,
    a short last one dropped exactly when the loader drops it (as_source refuses such loaders,
    but the reader does not rely on that)."""
    from gmmlib.sources import _gathered
    X = blobs(N=1003)
    loader = DataLoader(TensorDataset(X), batch_size=100, drop_last=drop_last)
    expected, got = [b[0] for b in loader], list(_gathered(loader))
    assert len(got) == len(expected) == (10 if drop_last else 11)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert all(g.untyped_storage().data_ptr() == X.untyped_storage().data_ptr() for g in got)


def test_a_loader_whose_batch_sampler_shuffles_eagerly_is_iterated_as_it_is():
    """A batch sampler of the user's own whose ``__iter__`` draws its order at once (not a
    generator) would run twice if gmmlib made the loader's iterator and then read the sampler:
    such loaders are iterated as they are, with the loader's batches and epochs."""
    from torch.utils.data import Sampler
    X = blobs(N=20)

    class Buckets(Sampler):
        epoch = 0

        def __len__(self):
            return 4

        def __iter__(self):
            Buckets.epoch += 1
            order = torch.randperm(20).tolist()
            return iter([order[a:a + 6] for a in range(0, 20, 6)])
    loader = DataLoader(TensorDataset(X), batch_sampler=Buckets())
    torch.manual_seed(0)
    expected = [batch[0] for batch in loader]
    state = torch.get_rng_state()
    torch.manual_seed(0)
    got = list(as_source(loader, n_features=3, dtype=torch.float64, device="cpu"))
    assert all(torch.equal(a, b) for a, b in zip(got, expected)) and len(got) == 4
    assert torch.equal(torch.get_rng_state(), state) and Buckets.epoch == 2


def test_the_fast_scorer_reads_a_stream_once():
    """evaluate (the estimator's score_samples, predict_proba, predict) reads a stream in one
    pass, batch by batch: it used to read the first batch once more for its centre. Its
    numbers equal the in-memory path's."""
    from gmmlib.em import evaluate
    X = blobs()
    model, _ = fitted(X, "diagonal")

    class Counted:  # a re-iterable source that counts its passes and batches
        passes = batches = 0

        def __iter__(self):
            Counted.passes += 1
            for a in range(0, len(X), 50):
                Counted.batches += 1
                yield X[a:a + 50]
    source = as_source(Counted(), n_features=3, dtype=torch.float64, device="cpu")
    lp, resp = evaluate(model, source, resp=True)
    assert (Counted.passes, Counted.batches) == (1, -(-len(X) // 50))
    in_memory = evaluate(model, X, resp=True)
    torch.testing.assert_close(lp, in_memory[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(resp, in_memory[1], rtol=1e-10, atol=1e-12)


def test_streams_are_not_modified():
    X = blobs()
    copy = X.clone()
    loader = DataLoader(TensorDataset(X), batch_size=100)
    model, _ = fitted(X, "full", loader)
    model.log_prob(loader), model.predict(loader)
    assert torch.equal(X, copy)


def test_bad_streams_raise_clear_errors():
    X = blobs()
    model = gmmlib.GaussianMixture(4, 3, "full", dtype=torch.float64)
    fit = lambda source: gmmlib.fit_em(model, source, progress=False)  # noqa: E731
    with pytest.raises(ValueError, match="iterator.*read only once.*DataLoader"):
        fit(x for x in X.split(10))
    with pytest.raises(ValueError, match="map-style Dataset.*DataLoader"):
        fit(TensorDataset(X))
    with pytest.raises(ValueError, match="batch 0 is a dict"):
        fit(DataLoader([{"x": x} for x in X], batch_size=10))
    bad = X.clone()
    bad[150, 1] = math.nan
    with pytest.raises(ValueError, match="X batch 1 contains NaN in 1 row"):
        fit(list(bad.split(100)))
    with pytest.raises(ValueError, match="X batch 0 has 2 features.*expecting 3"):
        fit([X[:, :2]])
    with pytest.raises(ValueError, match="batch 0 is 1-D.*batch_size=None yields single rows"):
        fit(DataLoader(TensorDataset(X), batch_size=None))
    with pytest.raises(ValueError, match="X has 3 sample.*n_components=4"):
        fit([X[:3]])

    class Shrinking:  # yields one row fewer every pass
        def __init__(self):
            self.n = 700

        def __iter__(self):
            self.n -= 1
            return iter(X[:self.n].split(100))
    with pytest.raises(ValueError, match="rows on this pass.*same data every pass"):
        fit(Shrinking())


def test_a_loader_that_drops_rows_is_refused_by_every_fit_and_scorer():
    """drop_last=True with a remainder never yields all the data (with shuffle, other rows on
    each pass, and no row count changes to give it away): refused by name with the remedy. A
    shuffling loader that drops nothing fits as the tensor does."""
    X = blobs()  # 700 rows
    model = gmmlib.GaussianMixture(4, 3, "diagonal", dtype=torch.float64)
    drops = DataLoader(TensorDataset(X), batch_size=64, shuffle=True, drop_last=True)
    calls = [lambda L: gmmlib.fit_em(model, L, progress=False),
             lambda L: gmmlib.fit_gd(model, L, epochs=1, progress=False),
             lambda L: model.nll(L), lambda L: model.predict(L)]
    rows = torch.utils.data.RandomSampler(range(700))
    sampled = DataLoader(TensorDataset(X), batch_size=None,  # batches of indices: one fetch each
                         sampler=torch.utils.data.BatchSampler(rows, 64, drop_last=True))
    for call in calls:
        for loader in (drops, sampled):
            with pytest.raises(ValueError, match="drop_last=True.*leaves out 60 of its 700 rows"
                                                 ".*set drop_last=False"):
                call(loader)
    # the rows are the sampler's: a subset of 640 in batches of 64 drops nothing
    subset = DataLoader(TensorDataset(X), batch_size=64, drop_last=True,
                        sampler=torch.utils.data.SubsetRandomSampler(range(640)))
    gmmlib.fit_em(gmmlib.GaussianMixture(4, 3, dtype=torch.float64), subset, progress=False)
    exact = DataLoader(TensorDataset(X), batch_size=70, shuffle=True, drop_last=True,
                       generator=torch.Generator().manual_seed(0))
    a, ha = fitted(X, "diagonal")
    b, hb = fitted(X, "diagonal", exact)
    # the same mixture; its components' order is k-means++'s on the shuffled initialisation
    # sample, whose rows come in another order
    assert_same_fit(a, b.permuted(gmmlib.match_components(b, a)), ha, hb)


def test_an_iterable_dataset_with_drop_last_is_refused():
    """An IterableDataset has no length: a drop_last=True loader over it leaves out its short
    last batch on every pass alike, unseen by the pass-to-pass row count (650 rows read as 640).
    Refused by every fit and scorer, with the remedy."""
    X = blobs(650)

    class Rows(IterableDataset):
        def __iter__(self):
            return iter(X)
    loader = DataLoader(Rows(), batch_size=64, drop_last=True)
    model = gmmlib.GaussianMixture(4, 3, "diagonal", dtype=torch.float64)
    for call in (lambda: gmmlib.fit_em(model, loader, progress=False),
                 lambda: gmmlib.fit_gd(model, loader, epochs=1, progress=False),
                 lambda: model.log_prob(loader), lambda: model.predict(loader)):
        with pytest.raises(ValueError, match="drop_last=True.*short last batch.*drop_last=False"):
            call()
    assert model.log_prob(DataLoader(Rows(), batch_size=64)).shape == (650,)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_batches_that_require_grad_take_no_part_in_fit_gds_backward():
    """Batches computed by the caller's network, or a leaf tensor that requires grad, are data:
    fit_gd's backward pass used to reach them (the network's weights got gradients) and fit_em
    failed inside torch. Both now fit them as the same values detached."""
    X = blobs().float()
    encoder = torch.nn.Linear(3, 3)

    class Embedded(IterableDataset):
        def __iter__(self):
            return (encoder(b) for b in X.split(100))
    leaf = X.clone().requires_grad_()
    with torch.no_grad():
        plain = [encoder(b) for b in X.split(100)]
    for source, reference in ((Embedded(), plain), (list(leaf.split(100)), list(X.split(100)))):
        for fit in (lambda m, s: gmmlib.fit_em(m, s, generator=0, max_iter=3, progress=False),
                    lambda m, s: gmmlib.fit_gd(m, s, epochs=2, generator=0, progress=False)):
            a, b = gmmlib.GaussianMixture(4, 3), gmmlib.GaussianMixture(4, 3)
            fit(a, source)
            fit(b, reference)
            assert torch.equal(a.means, b.means)
    assert encoder.weight.grad is None and encoder.bias.grad is None and leaf.grad is None


def test_an_empty_stream_and_a_small_init_sample_name_the_remedy():
    """No rows at all (an empty loader) reached torch.cat inside the reservoir sample; an
    init_sample below n_components failed inside the sums (random_from_data) or started three
    components from two rows (kmeans) for in-memory data, where a stream was refused."""
    X = blobs()
    model = gmmlib.GaussianMixture(4, 3, "full", dtype=torch.float64)
    empty = DataLoader(TensorDataset(X[:0]), batch_size=10)
    with pytest.raises(ValueError, match="0 sample.*n_components=4"):
        gmmlib.fit_em(model, empty, progress=False)
    with pytest.raises(ValueError, match="0 sample.*n_components=4"):
        gmmlib.fit_gd(model, empty, epochs=1, progress=False)
    for init in ("random_from_data", "kmeans"):
        for data in (X, list(X.split(100))):
            with pytest.raises(ValueError, match="init_sample=2 rows cannot initialise 4 "
                                                 "components; pass init_sample >= 4"):
                gmmlib.fit_em(model, data, init=init, init_sample=2, progress=False)


def test_reservoir_sample_is_every_row_when_small_and_uniform_when_not():
    X = torch.arange(50.0).reshape(50, 1)
    src = as_source(list(X.split(7)), n_features=1, dtype=torch.float64, device="cpu")
    total, sample = survey(src, 60, torch.Generator().manual_seed(0))
    assert torch.equal(sample, X.double()) and float(total) == X.sum()
    hits = torch.zeros(50)
    g = torch.Generator().manual_seed(1)
    for _ in range(1000):
        _, sample = survey(src, 10, g)
        assert sample.shape == (10, 1) and len(set(sample[:, 0].tolist())) == 10
        hits[sample[:, 0].long()] += 1
    freq = hits / 1000  # each row's inclusion probability is 10/50; binomial sd 0.013
    assert float((freq - 0.2).abs().max()) < 0.06
    assert float(freq[:10].mean()) == pytest.approx(0.2, abs=0.03)  # not biased to the first rows


MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys, torch, gmmlib
    from torch.utils.data import IterableDataset, DataLoader
    torch.set_num_threads(1)
    N, B = int(sys.argv[1]), 8192
    class Generated(IterableDataset):  # the rows are made batch by batch, never all held
        def __iter__(self):
            for i in range(0, N, B):
                g = torch.Generator().manual_seed(i)
                n = min(B, N - i)
                yield torch.randn(n, 8, generator=g) + 4 * torch.randint(4, (n, 1), generator=g)
    loader = DataLoader(Generated(), batch_size=None)
    model = gmmlib.GaussianMixture(8, 8, "full", dtype=torch.float32)
    gmmlib.fit_em(model, loader, max_iter=1, tol=0, progress=False, init_sample=4096, generator=0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gmmlib.fit_em(model, loader, max_iter=2, tol=0, progress=False, init_sample=4096, generator=0)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
""")


def test_streamed_fit_memory_does_not_grow_with_n(tmp_path):
    """Peak resident memory added by a streamed fit (after a warm-up fit): 10x more points
    (2e5 against 2e6 rows, (N, 8) float32) costs no more than a few MB more. (Below ~2^19 / K
    = 65,536 rows, the blocks EM holds while their sums wait, memory still grows with N.) An
    in-memory fit would hold the data (58 MB more) and, before this change, a (K, N) matrix."""
    script = tmp_path / "memory.py"
    script.write_text(MEMORY_SCRIPT)
    grown = [int(subprocess.run([sys.executable, "-W", "ignore", str(script), str(n)], check=True,
                                capture_output=True, text=True).stdout) for n in (200_000, 2_000_000)]
    assert grown[1] - grown[0] < 3 * 1024, grown  # KiB


def test_the_start_reads_at_most_init_sample_rows_of_in_memory_data():
    """With more rows than init_sample, the k-means start is the start of a sample of exactly
    that many distinct rows of X: initialize() on them gives the same parameters."""
    X = blobs(N=3000)
    model = gmmlib.GaussianMixture(4, 3, "full", dtype=torch.float64)
    seen = []
    real = gmmlib.em._initialize

    def spy(model, sample, *args, **kwargs):
        seen.append(sample.clone())
        return real(model, sample, *args, **kwargs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gmmlib.em, "_initialize", spy)
        gmmlib.fit_em(model, X, max_iter=0, init_sample=500, generator=7, progress=False)
    (sample,) = seen
    assert sample.shape == (500, 3)
    index = {tuple(row): i for i, row in enumerate(X.tolist())}
    rows = sorted(index[tuple(row)] for row in sample.tolist())
    assert len(set(rows)) == 500  # distinct rows of X
    # from all over X, not its first rows: 500 of 3000 drawn uniformly leave no gap of 300
    # (each gap's chance is about 500 (5/6)^300, 1e-21) and about half fall past row 1500
    assert max(np.diff([-1, *rows, 3000])) < 300 and 200 < sum(r >= 1500 for r in rows) < 300
    whole = gmmlib.GaussianMixture(4, 3, "full", dtype=torch.float64)
    gmmlib.fit_em(whole, X, max_iter=0, generator=7, progress=False)  # 3000 <= 100_000: all
    ref = gmmlib.initialize(gmmlib.GaussianMixture(4, 3, "full", dtype=torch.float64), X,
                            generator=7)
    assert torch.equal(whole.loc, ref.loc)


@pytest.mark.parametrize("family", ["full", "diagonal"])
@pytest.mark.parametrize("batch_size", [7, 333, 3000])
def test_em_over_a_dataloader_equals_em_over_the_tensor_with_more_rows_than_init_sample(
        family, batch_size):
    """The start reads a sample of init_sample rows, in memory as over a stream: the same
    reservoir sample whatever the batches, so the whole fit is the same to 1e-10. In memory
    it was a randperm's sample, the stream's a reservoir: EM over a loader of 120k rows (the
    default init_sample is 100k) ended 2e-5 nats and 2.5e-3 in the means from the tensor's."""
    X = blobs(N=3000)
    loader = DataLoader(TensorDataset(X), batch_size=batch_size)
    fits = []
    for data in (X, loader):
        model = gmmlib.GaussianMixture(4, 3, family, dtype=torch.float64)
        fits.append((model, gmmlib.fit_em(model, data, init_sample=500, generator=7, tol=1e-8,
                                          max_iter=40, progress=False)))
    (a, ha), (b, hb) = fits
    assert_same_fit(a, b, ha, hb)


def _state(model):
    return {k: v.clone() if torch.is_tensor(v) else dict(v) for k, v in model.state_dict().items()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")  # the singular case's duplicates
@pytest.mark.parametrize("fit", ["fit_em", "fit_gd"])
def test_a_fit_that_raises_leaves_the_model_as_it_was(fit):
    """Every way a fit found failing part-way: a one-shot source (it fails on the second pass,
    after the initialisation was written; its message now names the cause, not drop_last), an
    initialisation that gives a singular covariance (weights and means were written before the
    covariances were checked), NaN in the third batch after fit_gd set min_variance. The
    model's parameters and floor are bit for bit those of before."""
    X = blobs(600)

    class Once(IterableDataset):
        def __init__(self):
            self.batches = iter(X.split(100))

        def __iter__(self):
            return self.batches
    nan = torch.full((10, 3), math.nan, dtype=torch.float64)
    run = {"fit_em": lambda m, data, **kw: gmmlib.fit_em(m, data, progress=False, **kw),
           "fit_gd": lambda m, data, **kw: gmmlib.fit_gd(m, data, epochs=1, progress=False,
                                                         **kw)}[fit]
    cases = [(Once(), {}, "0 rows on this pass.*read only once"),
             ([X[:100], X[100:200], nan], {"min_variance": 0.5} if fit == "fit_gd" else {},
              "batch 2 contains NaN")]
    if fit == "fit_em":  # (fit_gd's start adds reg_covar=1e-6: never singular)
        cases.append(([X[:1].repeat(50, 1)], {"reg_covar": 0.0}, "singular covariance"))
    for data, kw, message in cases:
        model = gmmlib.GaussianMixture(4, 3, "full", dtype=torch.float64, min_variance=0.0)
        model.set_parameters(means=X[:4])
        before = _state(model)
        with pytest.raises(ValueError, match=message):
            run(model, data, **kw)
        assert _same_state(_state(model), before), message


def test_initialize_checks_every_value_before_writing_any():
    X = blobs(600)[:1].repeat(50, 1)  # one point: every component's covariance is singular
    model = gmmlib.GaussianMixture(4, 3, "full", dtype=torch.float64, min_variance=0.0)
    before = _state(model)
    with pytest.raises(ValueError, match="singular covariance"):
        gmmlib.initialize(model, X, "kmeans++", generator=0, reg_covar=0.0)
    assert _same_state(_state(model), before)


def _every_reader_refuses(model, loader, match):
    """fit_em, fit_gd and nll each refuse ``loader`` with a ValueError matching ``match``."""
    for call in (lambda: gmmlib.fit_em(model, loader, progress=False),
                 lambda: gmmlib.fit_gd(model, loader, epochs=1, progress=False),
                 lambda: model.nll(loader)):
        with pytest.raises(ValueError, match=match):
            call()


def test_a_loader_that_samples_with_replacement_is_refused():
    """A sampler with replacement yields other rows every pass (some twice, some never), with
    the same row count: refused by name with the remedy. Shuffling without replacement, the
    same rows in a new order every pass, is fine."""
    X = blobs()  # 700 rows
    model = gmmlib.GaussianMixture(4, 3, "diagonal", dtype=torch.float64)
    samplers = [torch.utils.data.RandomSampler(range(700), replacement=True),
                torch.utils.data.WeightedRandomSampler(torch.ones(700), 700)]
    for sampler in samplers:
        loaders = [DataLoader(TensorDataset(X), batch_size=64, sampler=sampler),
                   DataLoader(TensorDataset(X), batch_size=None,
                              sampler=torch.utils.data.BatchSampler(sampler, 64, drop_last=False)),
                   DataLoader(TensorDataset(X),
                              batch_sampler=torch.utils.data.BatchSampler(sampler, 64, drop_last=False))]
        for loader in loaders:
            _every_reader_refuses(model, loader, f"sampler \\({type(sampler).__name__}\\) draws "
                                                 "rows with replacement.*without replacement")
    shuffled = DataLoader(TensorDataset(X), batch_size=64, shuffle=True)
    gmmlib.fit_em(model, shuffled, progress=False)


@pytest.mark.parametrize("sampler", [
    torch.utils.data.RandomSampler(range(700), num_samples=200),  # a new subset every pass
    torch.utils.data.RandomSampler(range(700), num_samples=900),  # all, then 200 of them again
    torch.utils.data.WeightedRandomSampler(torch.ones(700), 300, replacement=False)],
    ids=["fewer", "more", "weighted fewer"])
def test_a_loader_that_samples_another_number_of_rows_is_refused(sampler):
    """Without replacement, but num_samples is not a multiple of the rows there are: every
    pass yields other rows (a multiple, every row k times, is the same data every pass). Accepted before (the check read only ``replacement``): EM over 200 of
    503 rows a pass returned a loss of 3.04 where the fitted model's NLL on the data was 3.14."""
    X = blobs()
    model = gmmlib.GaussianMixture(4, 3, "diagonal", dtype=torch.float64)
    loader = DataLoader(TensorDataset(X), batch_size=64, sampler=sampler)
    _every_reader_refuses(model, loader, f"draws num_samples={sampler.num_samples} of its 700 "
                                         "rows at random.*shuffle=True")
    start = gmmlib.GaussianMixture(4, 3, "diagonal", dtype=torch.float64)
    gmmlib.initialize(start, X, generator=0)
    ref = copy.deepcopy(start)
    h_ref = gmmlib.fit_em(ref, X, init=None, tol=1e-8, max_iter=40, progress=False)
    for n in (700, 1400):  # all the rows in a new order, or all of them twice: the same rows
        full = DataLoader(TensorDataset(X), batch_size=64,
                          sampler=torch.utils.data.RandomSampler(range(700), num_samples=n))
        got = copy.deepcopy(start)
        h_got = gmmlib.fit_em(got, full, init=None, tol=1e-8, max_iter=40, progress=False)
        assert_same_fit(got, ref, h_got, h_ref)
