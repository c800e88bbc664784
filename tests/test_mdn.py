"""The MDN head against torch.distributions, and a fit of Bishop's (1994) inverse problem."""
import numpy as np
import pytest
import torch

from gmmlib.mdn import MDNHead


@pytest.mark.parametrize("family", ["full", "diagonal", "isotropic"])
def test_log_prob_matches_torch_distributions(family):
    torch.manual_seed(0)
    head = MDNHead(6, 3, 2, family).double()
    h = torch.randn(50, 6, dtype=torch.float64)
    y = torch.randn(50, 2, dtype=torch.float64) * 2
    out = head(h)
    ref = out.to_distribution().log_prob(y)
    assert torch.allclose(out.log_prob(y), ref, rtol=1e-10)
    cov = out.scale_tril() @ out.scale_tril().transpose(-1, -2)
    off = cov - torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
    assert (torch.count_nonzero(off) == 0) == (family != "full")


def test_gradcheck_of_the_head():
    torch.manual_seed(0)
    head = MDNHead(3, 2, 2, "full").double()
    h = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(8, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda h: head.nll(h, y), (h,))


def test_sample_follows_the_conditional_mixture():
    torch.manual_seed(0)
    head = MDNHead(2, 2, 1).double()
    h = torch.randn(1, 2, dtype=torch.float64).expand(100_000, 2)
    out = head(h)
    y = out.sample(torch.Generator().manual_seed(0))
    assert torch.allclose(y.mean(0), out.mean()[0], atol=0.02)
    assert torch.allclose(y.var(0), out.to_distribution().variance[0], rtol=0.03)


def test_mdn_solves_the_inverse_problem_a_regression_cannot():
    """Bishop (1994): x = t + 0.3 sin(2 pi t) + noise; predict t from x. The map is one-to-many,
    so a single Gaussian (least squares) fits poorly and a 3-component MDN fits well."""
    g = torch.Generator().manual_seed(0)
    t = torch.rand(1000, 1, generator=g)
    x = t + 0.3 * torch.sin(2 * np.pi * t) + 0.1 * (torch.rand(1000, 1, generator=g) - 0.5)
    torch.manual_seed(0)

    def fit(K):
        net = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(), MDNHead(32, K, 1))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(800):
            opt.zero_grad()
            loss = net[-1].nll(net[:-1](x), t)
            loss.backward()
            opt.step()
        return float(loss.detach())

    single, mixture = fit(1), fit(3)
    assert mixture < single - 0.5  # nats per point


def test_bad_input():
    with pytest.raises(ValueError, match="covariance_type"):
        MDNHead(3, 2, 2, "tied")
    head = MDNHead(3, 2, 2)
    h = torch.randn(4, 3)
    cases = [
        (lambda: head.nll(h, torch.randn(4, 3)), r"targets must be a tensor of shape \(batch, n_features\) = \(4, 2\)"),
        (lambda: MDNHead(3, 2, 1)(h).log_prob(torch.randn(4)), r"reshape\(-1, 1\)"),  # would broadcast
        (lambda: head(torch.randn(4, 5)), "in_features=3"),
        (lambda: head(h.numpy()), "must be a torch.Tensor"),
        (lambda: head(h.double()), "features are torch.float64 but the head's weights are torch.float32"),
        (lambda: head.nll(torch.randn(0, 3), torch.randn(0, 2)), "batch is empty"),
        (lambda: MDNHead(3, 2, 2, min_variance=-1.0), "min_variance must be a finite number >= 0"),
        (lambda: MDNHead(3, 2, 2, min_variance=float("nan")), "min_variance"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
