"""fit_gd over streams of batches (DataLoader, list of arrays, memmap) and across processes.

The references: the in-memory fit (itself tied to the from-scratch loop and to scikit-learn by
test_gd_scratch.py and test_gd.py), torch.distributions for the full-data NLL, and, for the
distributed fits, the single-process fit of the union of the shards.
"""
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import gmmlib

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return gmmlib.generate_data(400, 3, 2, 6.0, "full", seed=3).X  # float64


def new_model(start=None):
    model = gmmlib.GaussianMixture(3, 2, "full", dtype=torch.float64)
    if start is not None:
        model.load_state_dict(start.state_dict())
    return model


def params(model):
    return [model.weights.detach(), model.means.detach(), model.covariances.detach()]


def assert_same_parameters(a, b, atol):
    for x, y in zip(params(a) if hasattr(a, "weights") else a, params(b) if hasattr(b, "weights") else b):
        torch.testing.assert_close(x, y, rtol=0, atol=atol)


def reference_nll(weights, means, covariances, X) -> float:
    """The mean NLL by torch.distributions, independent of gmmlib's densities."""
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=torch.as_tensor(weights)),
        torch.distributions.MultivariateNormal(torch.as_tensor(means), covariance_matrix=torch.as_tensor(covariances)))
    return float(-mix.log_prob(X).mean())


@pytest.mark.parametrize("init", [None, "kmeans"])
def test_a_loader_of_one_batch_is_the_full_batch_fit(data, init):
    """Each batch is one step, so one batch of every row for E epochs is E full-batch steps; the
    sample to initialise from is then every row in order, so k-means starts alike too."""
    X = data
    start = new_model()
    gmmlib.initialize(start, X, "kmeans++", generator=1)
    prior = gmmlib.RidgePrior(1e-2, len(X))
    ref, a = new_model(start), new_model(start)
    h_ref = gmmlib.fit_gd(ref, X, iterations=40, init=init, generator=0, prior=prior, progress=False)
    loader = DataLoader(TensorDataset(X), batch_size=len(X))
    h = gmmlib.fit_gd(a, loader, epochs=40, init=init, generator=0, prior=prior, progress=False)
    assert_same_parameters(a, ref, atol=1e-10)
    np.testing.assert_allclose(h.loss, h_ref.loss, rtol=0, atol=1e-10)
    assert h.n_iter == 40 and len(h.epoch_loss) == 40
    # full batch: an epoch ends where the next step starts
    np.testing.assert_allclose(h.epoch_loss[:-1], h_ref.loss[1:-1], rtol=0, atol=1e-10)


def test_a_memmap_is_read_as_a_stream(data, tmp_path):
    X = data
    path = tmp_path / "X.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=tuple(X.shape))
    mm[:] = X.numpy()
    mm.flush()
    mm = np.load(path, mmap_mode="r")
    ref, a = new_model(), new_model()
    gmmlib.fit_gd(ref, X, iterations=15, generator=0, progress=False)
    gmmlib.fit_gd(a, mm, epochs=15, generator=0, progress=False)  # one block of 65536 rows: full batch
    assert_same_parameters(a, ref, atol=1e-10)
    assert np.array_equal(np.load(path), X.numpy())


def test_a_list_of_arrays_is_read_as_a_stream(data):
    X = data
    arrays = [X[:150].numpy().copy(), X[150:].numpy().copy()]
    before = [x.copy() for x in arrays]
    b = new_model()
    h = gmmlib.fit_gd(b, arrays, epochs=10, generator=0, progress=False)
    assert h.n_iter == 20 and h.final_loss == pytest.approx(float(b.nll(X).detach()), abs=1e-12)
    assert all(np.array_equal(x, y) for x, y in zip(arrays, before))


def test_epoch_loss_is_the_full_data_nll_after_each_epoch(data):
    """Batches of 64 (7 steps per epoch, the last one short); a snapshot every 7 steps holds
    the parameters at the start of each epoch, whose NLL torch.distributions computes."""
    X = data
    X_before = X.clone()
    loader = DataLoader(TensorDataset(X), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    model = new_model()
    h = gmmlib.fit_gd(model, loader, epochs=6, generator=0, log_every=7, progress=False)
    assert h.n_iter == 42 and len(h.loss) == 43 and len(h.epoch_loss) == 6
    snaps = h.snapshots[1:]  # after 1, 2, ... 6 epochs (the last: the fitted model)
    assert [s.step for s in snaps] == [7, 14, 21, 28, 35, 42]
    for loss, s in zip(h.epoch_loss, snaps):
        assert loss == pytest.approx(reference_nll(s.weights, s.means, s.covariances, X), abs=1e-10)
    assert h.final_loss == h.epoch_loss[-1] == pytest.approx(float(model.nll(X).detach()), abs=1e-12)
    assert len(set(h.epoch_loss)) == 6  # every epoch moved the parameters
    assert np.std(np.diff(h.loss[:-1])) > 1e-3  # each step saw a different batch
    assert torch.equal(X, X_before)


def test_tuple_batches_use_the_first_element(data):
    X = data
    labels = torch.arange(len(X))
    fits = []
    for dataset in (TensorDataset(X), TensorDataset(X, labels)):
        loader = DataLoader(dataset, batch_size=50, shuffle=True, generator=torch.Generator().manual_seed(5))
        model = new_model()
        gmmlib.fit_gd(model, loader, epochs=3, generator=0, progress=False)
        fits.append(model)
    assert_same_parameters(fits[0], fits[1], atol=0)


def test_an_iterable_dataset_is_a_stream(data):
    class Blocks(IterableDataset):
        def __iter__(self):
            return iter(data.split(100))
    model = new_model()
    h = gmmlib.fit_gd(model, Blocks(), epochs=4, generator=0, progress=False)
    assert h.n_iter == 16 and h.final_loss == pytest.approx(float(model.nll(data).detach()), abs=1e-12)


def test_epochs_over_a_tensor_is_iterations_over_it(data):
    a, b = new_model(), new_model()
    ha = gmmlib.fit_gd(a, data, epochs=5, batch_size=64, generator=0, progress=False)
    hb = gmmlib.fit_gd(b, data, iterations=35, batch_size=64, generator=0, progress=False)
    assert ha.loss == hb.loss and torch.equal(a.means, b.means)
    assert len(ha.epoch_loss) == 5 and ha.epoch_loss[-1] == ha.final_loss and hb.epoch_loss == []


def test_the_init_sample_is_a_uniform_sample_of_the_stream(data):
    """init_sample=100 of 400 rows: k-means runs on 100 of them, and the fit still works."""
    model = new_model()
    loader = DataLoader(TensorDataset(data), batch_size=100)
    h = gmmlib.fit_gd(model, loader, epochs=20, init_sample=100, generator=0, progress=False)
    full = new_model()
    h_full = gmmlib.fit_gd(full, loader, epochs=20, generator=0, progress=False)
    assert not torch.equal(model.means, full.means)  # another start ...
    assert abs(h.final_loss - h_full.final_loss) < 0.05  # ... as good a fit


def test_a_too_large_learning_rate_stops_with_finite_parameters(data):
    loader = DataLoader(TensorDataset(data), batch_size=100)
    model = new_model()
    with pytest.warns(RuntimeWarning, match="overflowed at step"):
        h = gmmlib.fit_gd(model, loader, epochs=30, component_lr=100, generator=0, progress=False)
    assert h.diverged and h.n_iter < 120 and all(math.isfinite(v) for v in h.loss + h.epoch_loss)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


@pytest.mark.parametrize("kwargs,match", [
    ({}, "pass epochs, the number of passes"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"epochs": 2, "iterations": 10}, "choose the length with epochs"),
    ({"epochs": 2, "batch_size": 10}, "set the batch size on the DataLoader"),
    ({"epochs": 2, "tol": 1e-4}, "tol stops on the change of the loss"),
    ({"epochs": 2, "init_sample": 0}, "init_sample must be a positive integer"),
    ({"epochs": 2, "init_sample": 1}, "raise init_sample"),
    ({"epochs": 2, "distributed": True}, "needs an initialised torch.distributed process group"),
])
def test_bad_stream_arguments(data, kwargs, match):
    loader = DataLoader(TensorDataset(data), batch_size=100)
    with pytest.raises(ValueError, match=match):
        gmmlib.fit_gd(new_model(), loader, progress=False, **kwargs)


def test_bad_streams_are_refused(data):
    with pytest.raises(ValueError, match="iterator.*read only once.*re-iterable"):
        gmmlib.fit_gd(new_model(), (b for b in data.split(100)), epochs=2, progress=False)
    with pytest.raises(ValueError, match="iterations.*or epochs.*not both"):
        gmmlib.fit_gd(new_model(), data, iterations=10, epochs=2, progress=False)
    with pytest.raises(ValueError, match="n_samples=2 should be >= n_components=3"):
        gmmlib.fit_gd(new_model(), [data[:1].numpy(), data[1:2].numpy()], epochs=2, progress=False)
    with pytest.raises(ValueError, match="batch 1.*NaN"):
        bad = data[100:200].clone()
        bad[5, 0] = float("nan")
        gmmlib.fit_gd(new_model(), [data[:100], bad], epochs=2, progress=False)

    class Shrinking(IterableDataset):  # 4 batches on the first pass, then 2 bigger ones
        passes = 0

        def __iter__(self):
            self.passes += 1
            yield from data.split(100 if self.passes == 1 else 200)
    with pytest.raises(ValueError, match="2 batches in epoch 1 but 4 on the first pass"):
        gmmlib.fit_gd(new_model(), Shrinking(), epochs=2, progress=False)


# --- across processes ----------------------------------------------------------------------

SCRIPT = r"""
import sys
import torch, torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset
import gmmlib

torch.set_num_threads(1)
dist.init_process_group("gloo")
r = dist.get_rank()
X = gmmlib.generate_data(600, 3, 2, 6.0, "full", seed=5).X
shard = X[:301] if r == 0 else X[301:]  # uneven halves


def start():  # k-means++ on all the data, one component's weight ~0: reset at the first step
    m = gmmlib.GaussianMixture(3, 2, "full", dtype=torch.float64)
    gmmlib.initialize(m, X, "kmeans++", generator=1)
    w = m.weights.clone()
    w[1] = 1e-7
    return m.set_parameters(weights=w / w.sum())


def fit(model, data, **kw):
    h = gmmlib.fit_gd(model, data, distributed=True, progress=False, **kw)
    return {"params": [model.weights.detach(), model.means.detach(), model.covariances.detach()],
            "loss": h.loss, "epoch_loss": h.epoch_loss, "resets": h.resets, "n_iter": h.n_iter}


fresh = lambda: gmmlib.GaussianMixture(3, 2, "full", dtype=torch.float64)
out = {}
out["none"] = fit(start(), shard, init=None, iterations=30, generator=0)
out["kmeans"] = fit(fresh(), shard, init="kmeans", iterations=30, generator=3,
                    prior=gmmlib.RidgePrior(1e-2, 600))
# each rank its own seed; each shard sampled to 100 rows
out["unseeded"] = fit(fresh(), shard, init="kmeans", iterations=30, init_sample=200)
out["unseeded_reset"] = fit(start(), shard, init=None, iterations=5)  # reset: rank 0's generator
out["minibatch"] = fit(fresh(), shard, iterations=20, batch_size=64, generator=0)
loader = DataLoader(TensorDataset(shard, torch.arange(len(shard))), batch_size=151 if r == 0 else 150)
out["stream"] = fit(fresh(), loader, epochs=10, init="kmeans", generator=0)  # 2 batches each
try:
    fit(fresh(), DataLoader(TensorDataset(shard), batch_size=100), epochs=2)  # 4 and 3 batches
except ValueError as e:
    out["mismatch"] = str(e)
torch.save(out, f"{sys.argv[1]}/rank{r}.pt")
dist.barrier()  # tear down together: a rank leaving early can abort the other's exit
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """The script's results on ranks 0 and 1 (one launch of two gloo processes, ~10 s)."""
    import torch.distributed as dist
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")
    tmp = tmp_path_factory.mktemp("ranks")
    (tmp / "script.py").write_text(textwrap.dedent(SCRIPT))
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
           "127.0.0.1", "--master_port", str(free_port()), str(tmp / "script.py"), str(tmp)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def union_fit(model, X, **kw):
    h = gmmlib.fit_gd(model, X, progress=False, **kw)
    return model, h


DIST_X = lambda: gmmlib.generate_data(600, 3, 2, 6.0, "full", seed=5).X  # noqa: E731


def dist_start():
    m = new_model()
    gmmlib.initialize(m, DIST_X(), "kmeans++", generator=1)
    w = m.weights.clone()
    w[1] = 1e-7
    return m.set_parameters(weights=w / w.sum())


@pytest.mark.slow
@pytest.mark.parametrize("case", ["none", "kmeans", "unseeded", "unseeded_reset", "minibatch", "stream"])
def test_ranks_end_with_the_same_parameters(two_ranks, case):
    a, b = two_ranks[0][case], two_ranks[1][case]
    assert a["resets"] if case.endswith("reset") else True
    assert_same_parameters(a["params"], b["params"], atol=0)
    assert a["loss"] == b["loss"] and a["resets"] == b["resets"] and a["epoch_loss"] == b["epoch_loss"]


@pytest.mark.slow
def test_distributed_full_batch_is_the_fit_of_the_union(two_ranks):
    """From the same start (a reset at step 1, drawn from the gathered sample with rank 0's
    generator), 30 steps on 301 + 299 rows are the 30 steps of one process on all 600."""
    X = DIST_X()
    ref, h = union_fit(dist_start(), X, init=None, iterations=30, generator=0)
    got = two_ranks[0]["none"]
    assert h.resets == [(1, 1)] and got["resets"] == h.resets
    assert_same_parameters(got["params"], ref, atol=1e-8)
    np.testing.assert_allclose(got["loss"], h.loss, rtol=0, atol=1e-10)


@pytest.mark.slow
def test_distributed_kmeans_init_and_prior_are_the_fit_of_the_union(two_ranks):
    X = DIST_X()
    ref, h = union_fit(new_model(), X, init="kmeans", iterations=30, generator=3,
                       prior=gmmlib.RidgePrior(1e-2, 600))
    assert_same_parameters(two_ranks[0]["kmeans"]["params"], ref, atol=1e-8)
    np.testing.assert_allclose(two_ranks[0]["kmeans"]["loss"], h.loss, rtol=0, atol=1e-10)


@pytest.mark.slow
def test_distributed_stream_steps_on_the_union_of_the_ranks_batches(two_ranks):
    """Rank 0's batches are rows [0, 151) and [151, 301), rank 1's [301, 451) and [451, 600):
    each step is the step of one process on the union of the two ranks' batches. The gathered
    sample is all 600 rows in order, so k-means starts where it does on X."""
    X = DIST_X()
    ref = new_model()
    gmmlib.initialize(ref, X, "kmeans", generator=0)
    batches = [torch.cat([X[0:151], X[301:451]]), torch.cat([X[151:301], X[451:]])]
    ref, h = union_fit(ref, batches, init=None, epochs=10, generator=0)
    got = two_ranks[0]["stream"]
    assert got["n_iter"] == 20 and got["resets"] == h.resets == []
    assert_same_parameters(got["params"], ref, atol=1e-8)
    np.testing.assert_allclose(got["epoch_loss"], h.epoch_loss, rtol=0, atol=1e-10)
    assert got["epoch_loss"][-1] == pytest.approx(float(ref.nll(X).detach()), abs=1e-8)


@pytest.mark.slow
def test_ranks_with_different_batch_counts_are_refused_on_every_rank(two_ranks):
    for r in (0, 1):
        assert "[4, 3] steps per epoch" in two_ranks[r]["mismatch"]


@pytest.mark.slow
def test_the_batch_count_remedy_does_not_recommend_a_sampler_that_repeats_rows(two_ranks):
    """DistributedSampler(drop_last=False) pads the shards by repeating rows (601 rows over 2
    ranks: 602 indices, row 0 twice), so the fit is no longer the union's: not recommended."""
    message = two_ranks[0]["mismatch"]
    assert "drop_last=False" not in message
    assert "repeating rows" in message and "torch.tensor_split" in message
