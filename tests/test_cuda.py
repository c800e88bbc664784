"""Every fit path on a GPU: the model and data on CUDA give the CPU's numbers (float64, to
rounding). Skipped, with the reason, where no GPU is present; nothing else needs one."""
import os

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import gmmlib

# GMMLIB_TEST_DEVICE=cpu runs these tests' own code on the CPU (both sides then the same
# device: it checks the tests, not the GPU), before device time is spent on them
DEV = os.environ.get("GMMLIB_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEV == "cuda" and not torch.cuda.is_available(),
                                reason="no CUDA device: the GPU paths are checked where one is lent")

FAMILIES = list(gmmlib.FAMILIES)


def data(N=2000, D=3, K=4):
    return gmmlib.generate_data(N, K, D, seed=0).X.double()


def pair(family, K=4, D=3):
    cpu = gmmlib.GaussianMixture(K, D, family, dtype=torch.float64)
    gmmlib.initialize(cpu, data(), "random_from_data", generator=0)
    gpu = gmmlib.GaussianMixture(K, D, family, dtype=torch.float64).to(DEV)
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu


def close(a, b, tol=1e-9):
    torch.testing.assert_close(a.detach().cpu(), b.detach().cpu(), rtol=tol, atol=tol)


@pytest.mark.parametrize("family", FAMILIES)
def test_em_on_cuda_equals_cpu(family):
    X = data()
    cpu, gpu = pair(family)
    h_cpu = gmmlib.fit_em(cpu, X, init=None, tol=1e-8, max_iter=30, progress=False)
    h_gpu = gmmlib.fit_em(gpu, X.to(DEV), init=None, tol=1e-8, max_iter=30, progress=False)
    assert gpu.loc.device.type == torch.device(DEV).type and h_gpu.n_iter == h_cpu.n_iter
    close(gpu.means, cpu.means)
    close(gpu.covariances, cpu.covariances)


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_em_on_cuda_equals_cpu(family):
    """float32 takes other paths (the float64 form of the axis-aligned E-step, float64
    log-densities in some passes): the GPU's fit is the CPU's to float32 rounding."""
    X = gmmlib.generate_data(20_000, 4, 3, seed=2).X.float()
    cpu = gmmlib.GaussianMixture(4, 3, family, dtype=torch.float32)
    gmmlib.initialize(cpu, X, "kmeans++", generator=0)
    gpu = gmmlib.GaussianMixture(4, 3, family, dtype=torch.float32).to(DEV)
    gpu.load_state_dict(cpu.state_dict())
    h_cpu = gmmlib.fit_em(cpu, X, init=None, tol=0.0, max_iter=10, progress=False)
    h_gpu = gmmlib.fit_em(gpu, X.to(DEV), init=None, tol=0.0, max_iter=10, progress=False)
    assert gpu.means.dtype == torch.float32 and gpu.means.device.type == torch.device(DEV).type
    close(gpu.means, cpu.means, 1e-3)
    close(gpu.covariances, cpu.covariances, 1e-3)
    assert abs(h_gpu.final_loss - h_cpu.final_loss) < 1e-4


@pytest.mark.parametrize("family", ["full", "diagonal", "tied"])
def test_em_over_several_gpu_blocks_equals_cpu(family):
    """More rows than one GPU block (2^24 values' worth), the last block ragged: the buffers
    the E-step reuses between blocks are sized for a whole block and sliced for the last."""
    X = gmmlib.generate_data(3_000_001, 4, 3, seed=3).X.double()
    cpu, gpu = pair(family)
    gmmlib.fit_em(cpu, X, init=None, tol=0.0, max_iter=3, progress=False)
    gmmlib.fit_em(gpu, X.to(DEV), init=None, tol=0.0, max_iter=3, progress=False)
    close(gpu.means, cpu.means)
    close(gpu.covariances, cpu.covariances)
    close(gpu.log_prob(X[:1000].to(DEV)), cpu.log_prob(X[:1000]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_centred_full_sums_in_pieces_on_cuda_equal_cpu(monkeypatch, dtype):
    """Where a GPU keeps the full family's sums centred (D + 1 > 2K), it cuts each
    component's rows into pieces (``moments.CUDA_PIECE``), the last one ragged; the CPU takes
    one product per component: the same fit, to float64 (float32) rounding."""
    from gmmlib import moments
    pieces = []
    shipped = moments.Moments._add_pieces
    monkeypatch.setattr(moments.Moments, "_add_pieces", lambda self, xt, r, s, m, rows:
                        pieces.append((xt.device.type, s)) or shipped(self, xt, r, s, m, rows))
    X = gmmlib.generate_data(20_003, 3, 12, seed=4).X.to(dtype)
    cpu = gmmlib.GaussianMixture(3, 12, "full", dtype=dtype)
    gmmlib.initialize(cpu, X, "kmeans++", generator=0)
    gpu = gmmlib.GaussianMixture(3, 12, "full", dtype=dtype).to(DEV)
    gpu.load_state_dict(cpu.state_dict())
    gmmlib.fit_em(cpu, X, init=None, tol=0.0, max_iter=5, progress=False)
    gmmlib.fit_em(gpu, X.to(DEV), init=None, tol=0.0, max_iter=5, progress=False)
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    close(gpu.means, cpu.means, tol)
    close(gpu.covariances, cpu.covariances, tol)
    if torch.device(DEV).type == "cuda":
        assert ("cuda", 20_003 // moments.CUDA_PIECE) in pieces


def test_gd_over_a_pinned_loader_on_cuda_equals_cpu():
    """Minibatch Adam over a loader (epochs), batches copied to the GPU as they come."""
    X = data()
    cpu, gpu = pair("diagonal")
    loader = DataLoader(TensorDataset(X), batch_size=500, pin_memory=True)
    h_cpu = gmmlib.fit_gd(cpu, DataLoader(TensorDataset(X), batch_size=500), init=None,
                          epochs=5, progress=False)
    h_gpu = gmmlib.fit_gd(gpu, loader, init=None, epochs=5, progress=False)
    close(gpu.means, cpu.means, 1e-7)
    assert abs(h_gpu.final_loss - h_cpu.final_loss) < 1e-7


def test_gd_with_a_prior_on_cuda_equals_cpu():
    X = data()
    cpu, gpu = pair("full")
    prior = gmmlib.InverseWishartPrior(df=5.0, scale=0.5)
    gmmlib.fit_gd(cpu, X, init=None, iterations=30, prior=prior, progress=False)
    gmmlib.fit_gd(gpu, X.to(DEV), init=None, iterations=30, prior=prior, progress=False)
    close(gpu.covariances, cpu.covariances, 1e-7)


def test_scorers_over_a_loader_on_cuda():
    X = data()
    cpu, gpu = pair("full")
    loader = DataLoader(TensorDataset(X), batch_size=300, pin_memory=True)
    close(gpu.log_prob(loader), cpu.log_prob(X))
    assert torch.equal(gpu.predict(loader).cpu(), cpu.predict(X))
    close(gpu.predict_proba(loader), cpu.predict_proba(X))


def test_select_model_on_cuda():
    X = data()
    sel = gmmlib.select_model(X.to(DEV), n_components=[2, 4], covariance_types=["full"],
                              dtype=torch.float64)
    ref = gmmlib.select_model(X, n_components=[2, 4], covariance_types=["full"],
                              dtype=torch.float64)
    assert sel.best.model.means.device.type == torch.device(DEV).type
    assert sel.best.n_components == ref.best.n_components == 4
    close(sel.best.model.means, ref.best.model.means, 1e-7)


def test_em_streams_a_pinned_cpu_loader_to_the_gpu():
    X = data()
    cpu, gpu = pair("full")
    gmmlib.fit_em(cpu, X, init=None, tol=1e-8, max_iter=30, progress=False)
    loader = DataLoader(TensorDataset(X), batch_size=256, pin_memory=True)
    gmmlib.fit_em(gpu, loader, init=None, tol=1e-8, max_iter=30, progress=False)
    close(gpu.means, cpu.means)
    close(gpu.log_prob(loader), cpu.log_prob(X))


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_pinned_tensor_loader_is_read_by_index_into_pinned_memory(shuffle):
    """gmmlib reads a plain DataLoader over a TensorDataset by index (sources._gathered), not
    through the loader: with pin_memory=True its batches are pinned, as the loader's own are
    (so the copies onto the GPU are asynchronous), and the same rows in the same order."""
    from gmmlib.sources import _gathered
    X = data(N=1003)
    loader = DataLoader(TensorDataset(X), batch_size=100, shuffle=shuffle, pin_memory=True)
    torch.manual_seed(3)
    expected = [b[0] for b in loader]
    torch.manual_seed(3)
    got = list(_gathered(loader))
    assert len(got) == len(expected) == 11
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert all(g.is_pinned() == e.is_pinned() for g, e in zip(got, expected))
    if torch.cuda.is_available():
        assert all(g.is_pinned() for g in got)


def test_a_cpu_fit_reads_a_stream_of_gpu_batches_whole():
    """A CPU model fitted over batches that live on the GPU: each batch is copied to host
    memory, synchronously (an asynchronous copy into host memory may return before the data
    are there, and the fit would read what the memory held before). Large batches, so that a
    copy still in flight would be caught."""
    X = gmmlib.generate_data(200_000, 4, 3, seed=1).X.double()
    batches = list(X.to(DEV).split(50_000))
    a, _ = pair("full")
    b = gmmlib.GaussianMixture(4, 3, "full", dtype=torch.float64)
    b.load_state_dict(a.state_dict())
    gmmlib.fit_em(a, X, init=None, tol=0.0, max_iter=5, progress=False)
    gmmlib.fit_em(b, batches, init=None, tol=0.0, max_iter=5, progress=False)
    close(b.means, a.means)
    close(b.covariances, a.covariances)


def test_em_with_kmeans_start_on_cuda():
    X = data().to(DEV)
    model = gmmlib.GaussianMixture(4, 3, "full", dtype=torch.float64).to(DEV)
    history = gmmlib.fit_em(model, X, generator=0, progress=False)
    assert history.converged and torch.isfinite(model.means).all()


def test_gd_on_cuda_equals_cpu():
    X = data()
    cpu, gpu = pair("full")
    gmmlib.fit_gd(cpu, X, init=None, iterations=50, progress=False)
    gmmlib.fit_gd(gpu, X.to(DEV), init=None, iterations=50, progress=False)
    close(gpu.means, cpu.means, 1e-7)


def test_scorers_estimator_and_sampling_on_cuda():
    X = data()
    cpu, gpu = pair("diagonal")
    close(gpu.log_prob(X.to(DEV)), cpu.log_prob(X))
    close(gpu.predict_proba(X.to(DEV)), cpu.predict_proba(X))
    assert gpu.sample(10, generator=0).device.type == torch.device(DEV).type
    est = gmmlib.GaussianMixtureEM(4, device=DEV, random_state=0).fit(X.numpy())
    assert est.score(X.numpy()) > -10


def test_the_plot_helpers_draw_a_gpu_model_and_gpu_data():
    """The book's helpers read a GPU mixture and GPU data (each copies to host memory what it
    draws): the same picture data as the CPU twin's."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gmmlib import plot as gplot
    X = data(N=400, D=2, K=3)
    cpu = gmmlib.GaussianMixture(3, 2, "full", dtype=torch.float64)
    gmmlib.initialize(cpu, X, "random_from_data", generator=0)
    gpu = gmmlib.GaussianMixture(3, 2, "full", dtype=torch.float64).to(DEV)
    gpu.load_state_dict(cpu.state_dict())
    fig, axes = plt.subplots(1, 3)
    gplot.plot_fit(axes[0], gpu, X.to(DEV), title="gpu")
    gplot.plot_responsibilities(axes[1], gpu, X.to(DEV))
    gplot.plot_density(axes[2], gpu, X.to(DEV), kind="contour")
    plt.close(fig)
    grid_gpu = gplot.density_grid(gpu, (-5, 5), (-5, 5), n=20)
    grid_cpu = gplot.density_grid(cpu, (-5, 5), (-5, 5), n=20)
    torch.testing.assert_close(torch.as_tensor(grid_gpu[2]), torch.as_tensor(grid_cpu[2]))
    colours = gplot.responsibility_colours(gpu, X.to(DEV))
    torch.testing.assert_close(torch.as_tensor(colours),
                               torch.as_tensor(gplot.responsibility_colours(cpu, X)))


def test_mdn_on_cuda():
    t, x = gmmlib.data.inverse_problem(500, seed=0, dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(1, 20), torch.nn.Tanh(),
                              gmmlib.MDNHead(20, 3, 1)).to(DEV)
    history = gmmlib.fit_mdn(net, t.to(DEV), x.to(DEV), steps=50, progress=False)
    assert history.final_loss < history.loss[0]


@pytest.mark.parametrize("method", ["em", "gd"])
def test_distributed_fit_over_nccl_equals_one_process(tmp_path, method):
    """The command line under torchrun with --device cuda joins an NCCL group (one rank per
    GPU present, at most 2) and saves the same model as the plain 1-process fit."""
    import socket
    import subprocess
    import sys
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ranks = min(2, torch.cuda.device_count()) if DEV == "cuda" else 2
    args = ["-m", "gmmlib", "--method", method, "--samples", "4000", "--components", "3",
            "--device", DEV, "--no-progress"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                          str(ranks), "--master_addr", "127.0.0.1", "--master_port", str(port),
                          *args, "--distributed", "--save", str(tmp_path / "d.pt")],
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, *args, "--save", str(tmp_path / "o.pt")],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = (torch.load(tmp_path / f"{n}.pt", weights_only=False) for n in "do")
    close(a["loc"], b["loc"])


def test_float32_factors_on_the_gpu_match_the_float64_reference():
    """cholesky_plus_identity in float32 on a GPU (a float64 Cholesky where that is as
    accurate, the QR elsewhere: a batch of unit-scale factors, and one with a component of
    variance ~1e8, beyond the Cholesky's reach) against the float64 QR on the CPU, to
    float32's rounding."""
    from gmmlib.numerics import cholesky_plus_identity
    torch.manual_seed(0)
    D, v = 16, 1e-6
    L = torch.tril(torch.randn(3, D, D) * 0.5).double()
    wide = L.clone()
    wide[2] *= 1e4
    for batch in (L, wide):
        ref = cholesky_plus_identity(batch, v)
        got = cholesky_plus_identity(batch.float().to(DEV), v).double().cpu()
        for k in range(3):
            torch.testing.assert_close(got[k], ref[k], rtol=0,
                                       atol=1e-5 * float(ref[k].abs().max()))


def test_the_float64_factor_route_is_taken_only_without_gradients(monkeypatch):
    """On a GPU, float32 factors take the float64 Cholesky where no gradient is recorded (EM,
    scoring) and the QR under autograd (gradient descent: the route's check would wait for the
    GPU every step). On the CPU neither call takes it."""
    import gmmlib.numerics as numerics
    calls = []
    route = numerics._float64_cholesky_plus_identity
    monkeypatch.setattr(numerics, "_float64_cholesky_plus_identity",
                        lambda L, v: calls.append(L.requires_grad) or route(L, v))
    L = torch.tril(torch.randn(2, 4, 4)).to(DEV)
    numerics.cholesky_plus_identity(L, 1e-6)
    numerics.cholesky_plus_identity(L.clone().requires_grad_(), 1e-6).sum().backward()
    assert calls == ([False] if torch.device(DEV).type == "cuda" else [])
