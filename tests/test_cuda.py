"""Every fit path on a GPU: the model and data on CUDA give the CPU's numbers (float64, to
rounding). Skipped, with the reason, where no GPU is present; nothing else needs one."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import gmmlib

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device: the GPU paths are checked where one is lent")

FAMILIES = list(gmmlib.FAMILIES)


def data(N=2000, D=3, K=4):
    return gmmlib.generate_data(N, K, D, seed=0).X.double()


def pair(family, K=4, D=3):
    cpu = gmmlib.GaussianMixture(K, D, family, dtype=torch.float64)
    gmmlib.initialize(cpu, data(), "random_from_data", generator=0)
    gpu = gmmlib.GaussianMixture(K, D, family, dtype=torch.float64).to("cuda")
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu


def close(a, b, tol=1e-9):
    torch.testing.assert_close(a.detach().cpu(), b.detach().cpu(), rtol=tol, atol=tol)


@pytest.mark.parametrize("family", FAMILIES)
def test_em_on_cuda_equals_cpu(family):
    X = data()
    cpu, gpu = pair(family)
    h_cpu = gmmlib.fit_em(cpu, X, init=None, tol=1e-8, max_iter=30, progress=False)
    h_gpu = gmmlib.fit_em(gpu, X.cuda(), init=None, tol=1e-8, max_iter=30, progress=False)
    assert gpu.loc.device.type == "cuda" and h_gpu.n_iter == h_cpu.n_iter
    close(gpu.means, cpu.means)
    close(gpu.covariances, cpu.covariances)


def test_em_streams_a_pinned_cpu_loader_to_the_gpu():
    X = data()
    cpu, gpu = pair("full")
    gmmlib.fit_em(cpu, X, init=None, tol=1e-8, max_iter=30, progress=False)
    loader = DataLoader(TensorDataset(X), batch_size=256, pin_memory=True)
    gmmlib.fit_em(gpu, loader, init=None, tol=1e-8, max_iter=30, progress=False)
    close(gpu.means, cpu.means)
    close(gpu.log_prob(loader), cpu.log_prob(X))


def test_a_cpu_fit_reads_a_stream_of_gpu_batches_whole():
    """A CPU model fitted over batches that live on the GPU: each batch is copied to host
    memory, synchronously (an asynchronous copy into host memory may return before the data
    are there, and the fit would read what the memory held before). Large batches, so that a
    copy still in flight would be caught."""
    X = gmmlib.generate_data(200_000, 4, 3, seed=1).X.double()
    batches = list(X.cuda().split(50_000))
    a, _ = pair("full")
    b = gmmlib.GaussianMixture(4, 3, "full", dtype=torch.float64)
    b.load_state_dict(a.state_dict())
    gmmlib.fit_em(a, X, init=None, tol=0.0, max_iter=5, progress=False)
    gmmlib.fit_em(b, batches, init=None, tol=0.0, max_iter=5, progress=False)
    close(b.means, a.means)
    close(b.covariances, a.covariances)


def test_em_with_kmeans_start_on_cuda():
    X = data().cuda()
    model = gmmlib.GaussianMixture(4, 3, "full", dtype=torch.float64).to("cuda")
    history = gmmlib.fit_em(model, X, generator=0, progress=False)
    assert history.converged and torch.isfinite(model.means).all()


def test_gd_on_cuda_equals_cpu():
    X = data()
    cpu, gpu = pair("full")
    gmmlib.fit_gd(cpu, X, init=None, iterations=50, progress=False)
    gmmlib.fit_gd(gpu, X.cuda(), init=None, iterations=50, progress=False)
    close(gpu.means, cpu.means, 1e-7)


def test_scorers_estimator_and_sampling_on_cuda():
    X = data()
    cpu, gpu = pair("diagonal")
    close(gpu.log_prob(X.cuda()), cpu.log_prob(X))
    close(gpu.predict_proba(X.cuda()), cpu.predict_proba(X))
    assert gpu.sample(10, generator=0).device.type == "cuda"
    est = gmmlib.GaussianMixtureEM(4, device="cuda", random_state=0).fit(X.numpy())
    assert est.score(X.numpy()) > -10


def test_mdn_on_cuda():
    t, x = gmmlib.data.inverse_problem(500, seed=0, dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(1, 20), torch.nn.Tanh(),
                              gmmlib.MDNHead(20, 1, 3)).to("cuda")
    history = gmmlib.fit_mdn(net, t.cuda(), x.cuda(), steps=50, progress=False)
    assert history.final_loss < history.loss[0]


def test_distributed_em_over_nccl_equals_one_process(tmp_path):
    """The command line under torchrun with --device cuda joins an NCCL group (one rank per
    GPU present, at most 2) and saves the same model as the plain 1-process fit."""
    import socket
    import subprocess
    import sys
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ranks = min(2, torch.cuda.device_count())
    args = ["-m", "gmmlib", "--method", "em", "--samples", "4000", "--components", "3",
            "--device", "cuda", "--no-progress"]
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
