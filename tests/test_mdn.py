"""The MDN head and its output against torch.distributions, scipy and hand formulas; fit_mdn
against the loop written by hand; Bishop's (1994) inverse problem against its Bayes limit."""
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

import gmmlib
from gmmlib.data import inverse_problem, inverse_problem_log_prob
from gmmlib.mdn import MDNHead, fit_mdn

FAMILIES = ["full", "diagonal", "isotropic"]


def _output(family, B=50, H=6, K=3, D=2, seed=0, scale=1.0):
    torch.manual_seed(seed)
    head = MDNHead(H, K, D, family).double()
    return head, head(scale * torch.randn(B, H, dtype=torch.float64))


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


@pytest.mark.parametrize("family", FAMILIES)
def test_moments_and_broadcasting_match_torch_distributions(family):
    _, out = _output(family)
    ref = out.to_distribution()
    torch.testing.assert_close(out.mean, ref.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.variance, ref.variance, rtol=1e-12, atol=1e-12)
    y = torch.randn(4, 50, 2, dtype=torch.float64)  # several targets per input, torch's convention
    torch.testing.assert_close(out.log_prob(y), ref.log_prob(y), rtol=1e-10, atol=0)
    grid = torch.linspace(-3, 3, 7, dtype=torch.float64).reshape(7, 1, 1).expand(7, 1, 2)
    torch.testing.assert_close(out.log_prob(grid), ref.log_prob(grid), rtol=1e-10, atol=0)
    assert out.log_prob(grid).shape == (7, 50)


@pytest.mark.parametrize("family", FAMILIES)
def test_covariance_and_mode_by_hand(family):
    """Law of total variance, written out in NumPy per row; the mode is the heaviest component's mean."""
    _, out = _output(family, B=5)
    w, mu = out.weights.detach().numpy(), out.means.detach().numpy()
    L = out.scale_tril().detach().numpy()
    for b in range(5):
        m = w[b] @ mu[b]
        cov = sum(w[b, k] * (L[b, k] @ L[b, k].T + np.outer(mu[b, k] - m, mu[b, k] - m))
                  for k in range(3))
        np.testing.assert_allclose(out.covariance[b].detach().numpy(), cov, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(out.mode[b].detach().numpy(), mu[b, w[b].argmax()])


@pytest.mark.parametrize("family", FAMILIES)
def test_a_batch_of_one_equals_its_row_in_a_batch_of_ten_thousand(family):
    head, _ = _output(family)
    h = torch.randn(10_000, 6, dtype=torch.float64)
    y = torch.randn(10_000, 2, dtype=torch.float64)
    big = head(h)
    for i in (0, 1, 4_999, 9_999):
        one = head(h[i:i + 1])
        for name in ("mean", "mode", "variance", "covariance", "weights"):
            torch.testing.assert_close(getattr(one, name)[0], getattr(big, name)[i], rtol=1e-13, atol=1e-14)
        torch.testing.assert_close(one.log_prob(y[i:i + 1])[0], big.log_prob(y)[i], rtol=1e-13, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_gradient_step_lowers_the_nll(family):
    head, _ = _output(family)
    h = torch.randn(200, 6, dtype=torch.float64)
    y = torch.randn(200, 2, dtype=torch.float64)
    before = head.nll(h, y)
    before.backward()
    with torch.no_grad():
        for p in head.parameters():
            p -= 1e-3 * p.grad
    assert head.nll(h, y) < before


def test_sample_n_follows_each_inputs_mixture():
    """n draws per input, (n, B, D): a Kolmogorov-Smirnov test against the mixture's CDF (scipy)."""
    head, out = _output("diagonal", B=3, K=3, D=1)
    y = out.sample(20_000, generator=torch.Generator().manual_seed(0))
    assert y.shape == (20_000, 3, 1) and out.sample().shape == (3, 1)
    # an int seed, as GaussianMixture.sample takes (it reached torch.multinomial's TypeError)
    assert torch.equal(out.sample(20_000, generator=0), y)
    w, mu, sd = out.weights.detach(), out.means.detach()[..., 0], out.factor.detach()[..., 0]
    for b in range(3):
        def cdf(v, b=b):
            return sum(w[b, k].item() * stats.norm.cdf(v, mu[b, k].item(), sd[b, k].item()) for k in range(3))
        assert stats.kstest(y[:, b, 0].numpy(), cdf).pvalue > 1e-3
    _, full = _output("full", B=2, K=2, D=2)
    z = full.sample(100_000, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(z.mean(0), full.mean.detach(), atol=0.03, rtol=0)
    cov = torch.stack([torch.cov(z[:, b].T) for b in range(2)])
    torch.testing.assert_close(cov, full.covariance.detach(), rtol=0.05, atol=0.02)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_nan_for_huge_inputs_or_targets_far_away(family):
    torch.manual_seed(0)
    head = MDNHead(4, 3, 2, family)  # float32, default floor
    net = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.Tanh(), head)
    far = torch.full((5, 2), 1e6)
    for out in (net(torch.tensor([[1e6], [-1e6], [0.0], [3e38], [-3e38]])), head(torch.full((5, 4), 1e6)),
                head(torch.full((5, 4), -1e6))):
        for y in (far, -far, torch.zeros(5, 2)):
            lp = out.log_prob(y)
            assert not lp.isnan().any()
        assert torch.isfinite(out.factor).all() and torch.isfinite(out.mean).all()
    loss = net(torch.tensor([[1e6], [-1e6]])).nll(torch.full((2, 2), 1e3))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("bad", ["nan", "inf", "bool", "complex"])
def test_targets_that_are_not_finite_real_numbers_are_refused(family, bad):
    """torch.distributions refuses NaN targets (outside the support); MDNOutput gave NaN for
    them and NaN (full) or -inf for infinite ones; complex targets lost their imaginary part
    (full) or gave complex log-densities (diagonal); bool ones reached torch's RuntimeError.
    All are refused by name, as GaussianMixture refuses such data."""
    _, out = _output(family, B=3)
    y = torch.zeros(3, 2, dtype=torch.float64)
    y = {"nan": y.index_fill(0, torch.tensor([2]), math.nan),
         "inf": y.index_fill(0, torch.tensor([0]), math.inf),
         "bool": y.bool(), "complex": y.to(torch.complex128)}[bad]
    if bad == "nan":  # (inf passes torch's support check and gives -inf)
        with pytest.raises(ValueError):
            out.to_distribution().log_prob(y)
    match = "NaN or infinity" if bad in ("nan", "inf") else "targets must be real numbers"
    for call in (out.log_prob, out.component_log_prob, out.nll):
        with pytest.raises(ValueError, match=match):
            call(y)


def test_gradcheck_of_the_head():
    torch.manual_seed(0)
    head = MDNHead(3, 2, 2, "full").double()
    h = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(8, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda h: head.nll(h, y), (h,))


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


def _net(K, family="diagonal", H=20, D=1, seed=0, min_variance=1e-6):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(1, H), torch.nn.Tanh(),
                               MDNHead(H, K, D, family, min_variance=min_variance)).double()


def _hand_loop(net, t, x, steps, T_max, lr=1e-2):
    """The loop of fit_mdn's docstring: the losses before each step."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T_max)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = net(t).nll(x)
        losses.append(loss.item())
        loss.backward()
        opt.step()
        schedule.step()
    return losses


def test_fit_mdn_takes_the_steps_of_the_loop_written_by_hand():
    t, x = inverse_problem(300, seed=0, dtype=torch.float64)
    net = _net(3)
    losses = _hand_loop(net, t, x, 100, T_max=100)
    ours = _net(3)
    history = fit_mdn(ours, t, x, steps=100, lr=1e-2, progress=False)
    assert history.loss[:-1] == losses and history.n_iter == 100 and not history.diverged
    for a, b in zip(net.parameters(), ours.parameters()):
        assert torch.equal(a, b)
    assert history.final_loss == pytest.approx(net(t).nll(x).item(), rel=1e-14)


def test_the_inverse_problem_names_bad_arguments_and_scores_only_numbers():
    """inverse_problem(dtype=torch.int64) truncated every t and x to 0 in silence; seed=-1 and
    1.5 reached numpy's messages and seed=True was taken as 1. inverse_problem_log_prob gave
    -inf (\"impossible\") for a NaN target, and torch's messages for shapes that do not
    broadcast and for strings. An infinite x is outside A(t): -inf, as the density says."""
    from gmmlib.data import generate_data
    for kwargs, match in [({"dtype": torch.int64}, "dtype must be torch.float32 or torch.float64"),
                          ({"seed": -1}, "seed must be a non-negative int or None, got -1"),
                          ({"seed": 1.5}, "seed must be"), ({"seed": True}, "seed must be")]:
        with pytest.raises(ValueError, match=match):
            inverse_problem(3, **kwargs)
        if "seed" in kwargs:  # generate_data names it alike (the same check)
            with pytest.raises(ValueError, match=match):
                generate_data(10, 2, 2, **kwargs)
    for args, match in [((torch.tensor([math.nan]), torch.tensor([0.5])), "x contains NaN"),
                        ((torch.tensor([0.5]), torch.tensor([math.nan])), "t contains NaN"),
                        ((torch.zeros(3), torch.zeros(4)), r"must broadcast.*\(3,\) and \(4,\)"),
                        (("a", 0.5), "x must be a tensor or array of numbers")]:
        with pytest.raises(ValueError, match=match):
            inverse_problem_log_prob(*args)
    got = inverse_problem_log_prob(torch.tensor([math.inf, 0.5, -math.inf]), torch.tensor([0.5]))
    assert got[0] == got[2] == -math.inf and math.isfinite(float(got[1]))


def test_fit_mdn_solves_the_inverse_problem_near_the_bayes_limit():
    """Held-out NLL below -0.9 nats (the exact conditional density's is -1.28): least squares'
    unimodal answer cannot get there."""
    t, x = inverse_problem(1000, seed=0)
    tt, xt = inverse_problem(4000, seed=1)
    bayes = -inverse_problem_log_prob(xt, tt).mean().item()
    assert bayes == pytest.approx(-1.278, abs=0.005)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 20), torch.nn.Tanh(), MDNHead(20, 3, 1))
    fit_mdn(net, t, x, steps=1000, lr=1e-2, progress=False)
    single = torch.nn.Sequential(torch.nn.Linear(1, 20), torch.nn.Tanh(), MDNHead(20, 1, 1))
    fit_mdn(single, t, x, steps=1000, lr=1e-2, progress=False)
    with torch.no_grad():
        mdn, one = net(tt).nll(xt).item(), single(tt).nll(xt).item()
    assert bayes < mdn < -0.9 and one > mdn + 0.3


def test_fit_mdn_stops_at_a_non_finite_loss_and_keeps_finite_parameters():
    t, x = inverse_problem(100, seed=0, dtype=torch.float64)
    for floor, diverges in ((0.0, True), (1e-6, False)):
        net = _net(2, min_variance=floor)
        with torch.no_grad():
            net[-1].linear.bias[-2:] = -800.0  # log-scales: exp(-800) = 0 in float64
        start = [p.detach().clone() for p in net.parameters()]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = fit_mdn(net, t, x, steps=20, progress=False)
        assert history.diverged is diverges
        assert all(torch.isfinite(p).all() for p in net.parameters())
        if diverges:
            assert history.n_iter == 0 and "min_variance" in str(caught[0].message)
            assert all(torch.equal(a, b) for a, b in zip(start, net.parameters()))
        else:
            assert history.n_iter == 20 and np.isfinite(history.final_loss)


def test_fit_mdn_minibatches_and_leaves_its_inputs_alone():
    t, x = inverse_problem(256, seed=0, dtype=torch.float64)
    t0, x0 = t.clone(), x.clone()
    net = _net(3)
    history = fit_mdn(net, t.numpy(), x, steps=50, batch_size=64, generator=0, progress=False)
    assert torch.equal(t, t0) and torch.equal(x, x0)
    assert len(history.loss) == 51 and history.final_loss == pytest.approx(net(t).nll(x).item(), rel=1e-12)


def test_fit_mdn_bad_input():
    t, x = inverse_problem(10, seed=0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.Tanh(), MDNHead(4, 2, 1))
    cases = [
        (lambda: fit_mdn(lambda v: v, t, x), "net must be a torch.nn.Module"),
        (lambda: fit_mdn(net, t, x[:5]), "same number of rows, got 10 and 5"),
        (lambda: fit_mdn(net, t, x, steps=0), "steps"),
        (lambda: fit_mdn(net, t, x, lr=-1.0), "lr"),
        (lambda: fit_mdn(net, t[:, 0], x), "inputs must be 2-D"),
        (lambda: net(t).sample(0), "n must be"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()


def test_inverse_problem_support_against_a_grid_and_the_marginal_of_t():
    """|A(t)| from the inverse of f against a grid count; p(t) = 5 |A(t)| (x uniform, noise of
    density 5) against a histogram of a million draws; every draw lies in its support."""
    from gmmlib.data import _support_length, _forward_map
    ts = torch.linspace(-0.15, 1.15, 27, dtype=torch.float64)
    xs = torch.linspace(0, 1, 400_001, dtype=torch.float64)
    grid = ((ts[:, None] - _forward_map(xs)).abs() < 0.1).double().mean(1)
    torch.testing.assert_close(_support_length(ts), grid, atol=2e-5, rtol=0)
    t, x = inverse_problem(1_000_000, seed=3, dtype=torch.float64)
    assert torch.isfinite(inverse_problem_log_prob(x[:10_000], t[:10_000])).all()
    counts, edges = np.histogram(t.numpy(), bins=26, range=(-0.1, 1.2))
    centres = torch.from_numpy((edges[:-1] + edges[1:]) / 2)
    width = edges[1] - edges[0]
    fine = torch.linspace(0, 1, 50, dtype=torch.float64)
    expected = torch.stack([5 * _support_length(c - width / 2 + width * fine).mean() for c in centres])
    np.testing.assert_allclose(counts / (1e6 * width), expected.numpy(), atol=0.02)
    assert torch.isinf(inverse_problem_log_prob(torch.tensor([0.9]), torch.tensor([0.1])))



def test_fit_mdn_scores_the_trained_network_in_eval_mode_and_restores_its_mode():
    t, x = inverse_problem(200, seed=0, dtype=torch.float64)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Dropout(0.5),
                              MDNHead(16, 2, 1)).double()
    for mode in (True, False):
        net.train(mode)
        history = fit_mdn(net, t, x, steps=20, progress=False)
        assert net.training is mode
        net.eval()
        with torch.no_grad():
            assert history.final_loss == pytest.approx(net(t).nll(x).item(), rel=1e-12)
        assert np.isnan(history.lower_bound)  # not a bound: an MDN's fit has none


def test_a_last_step_that_breaks_the_network_is_undone_and_reported():
    """The loss was checked before each step only: one step at lr=50 left a network whose NLL
    is NaN while the history said 1.40 and diverged=False. The last step is checked too: it is
    undone, reported, and final_loss is the returned network's NLL."""
    torch.manual_seed(1)
    t = torch.rand(100, 1)
    x = 2 * t + 0.1 * torch.randn(100, 1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), MDNHead(8, 2, 1, min_variance=0.0))
    with pytest.warns(RuntimeWarning, match="non-finite after the last step"):
        history = fit_mdn(net, t, x, steps=1, lr=50.0, progress=False)
    with torch.no_grad():
        nll = float(-net(t).log_prob(x).mean())
    assert history.diverged and history.n_iter == 0 and math.isfinite(nll)
    assert history.final_loss == nll


def test_fit_mdn_keeps_a_frozen_batchnorm_frozen_and_every_modules_mode():
    """net.train() inside the fit unfroze a BatchNorm the caller had put in eval mode (its
    running statistics moved) and net.train(was) at the end reset every submodule's mode."""
    torch.manual_seed(0)
    t, x = torch.randn(200, 3), torch.randn(200, 1)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(),
                              MDNHead(8, 2, 1))
    net.train()
    net[1].eval()
    net[1].requires_grad_(False)
    modes = {name: m.training for name, m in net.named_modules()}
    running = net[1].running_mean.clone()
    fit_mdn(net, t, x, steps=5, progress=False)
    assert {name: m.training for name, m in net.named_modules()} == modes
    assert torch.equal(net[1].running_mean, running)
    net.eval()  # a network in eval mode trains in training mode, then is put back
    fit_mdn(net, t, x, steps=2, progress=False)
    assert not any(m.training for m in net.modules())


def _dropout_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Dropout(0.2),
                               MDNHead(8, 2, 1)).double()


def test_a_full_batch_fit_leaves_the_global_generator_alone_and_dropout_takes_the_hand_loops_steps():
    """generator=None took one draw from the global generator even without minibatches: the
    dropout masks then differed from the hand-written loop's from the same seed."""
    t = torch.linspace(0, 1, 50, dtype=torch.float64).reshape(-1, 1)
    x = (2 * t).sin()
    net = _dropout_net()
    losses = _hand_loop(net, t, x, 20, T_max=20)
    ours = _dropout_net()
    history = fit_mdn(ours, t, x, steps=20, lr=1e-2, progress=False)
    assert history.loss[:-1] == losses
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), ours.parameters()))
    plain = torch.nn.Sequential(torch.nn.Linear(1, 4), MDNHead(4, 1, 1)).double()  # no dropout
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    fit_mdn(plain, t, x, steps=2, progress=False)
    fit_mdn(plain, t, x, steps=2, batch_size=50, progress=False)  # batch_size >= N: full batch
    assert torch.equal(torch.rand(3), expected)
    with pytest.raises(ValueError, match="generator must be None, an int seed or a torch.Generator"):
        fit_mdn(plain, t, x, steps=1, generator="seed", progress=False)  # checked without minibatches


class _BreaksAt(torch.nn.Module):
    """``net``, except that its output's means are NaN from forward call number ``at`` (0-based) on."""

    def __init__(self, net, at):
        super().__init__()
        self.net, self.at, self.calls = net, at, 0

    def forward(self, h):
        out = self.net(h)
        if self.calls >= self.at:
            out.means = out.means * float("nan")
        self.calls += 1
        return out


def test_a_divergence_mid_fit_counts_the_steps_to_the_restored_parameters_and_clears_the_grads():
    """A NaN loss at step 5 restored the parameters after 4 steps but n_iter said 5."""
    t, x = inverse_problem(100, seed=0, dtype=torch.float64)
    net = _net(2)
    losses = _hand_loop(net, t, x, 4, T_max=10)  # the parameters after 4 steps of 10
    broken = _BreaksAt(_net(2), at=5)
    with pytest.warns(RuntimeWarning, match="non-finite at step 5"):
        history = fit_mdn(broken, t, x, steps=10, lr=1e-2, progress=False)
    assert history.diverged and history.n_iter == 4
    assert history.loss[:4] == losses and len(history.loss) == 5  # the loss at the restored parameters last
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), broken.net.parameters()))
    assert all(p.grad is None for p in broken.parameters())


class _InfiniteGradient(torch.nn.Module):
    """A finite loss whose gradient is infinite: sigma is 1 in value, sqrt(0)'s derivative in w."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, h):
        sigma = 1 + torch.sqrt(self.w - self.w.detach())
        return torch.distributions.Independent(torch.distributions.Normal(self.linear(h), sigma), 1)


def test_a_non_finite_gradient_leaves_no_non_finite_grad_in_the_network():
    torch.manual_seed(0)
    t, x = torch.randn(20, 1), torch.randn(20, 1)
    net = _InfiniteGradient()
    start = [p.detach().clone() for p in net.parameters()]
    with pytest.warns(RuntimeWarning, match="non-finite at step 0"):
        history = fit_mdn(net, t, x, steps=3, progress=False)
    assert history.diverged and history.n_iter == 0
    assert all(torch.equal(a, b) for a, b in zip(start, net.parameters()))
    assert all(p.grad is None for p in net.parameters())


def test_fit_mdn_inside_no_grad_trains_as_outside_it():
    """Inside torch.no_grad() the fit failed with 'element 0 of tensors does not require grad'."""
    t, x = inverse_problem(100, seed=0, dtype=torch.float64)
    outside, inside = _net(2), _net(2)
    expected = fit_mdn(outside, t, x, steps=5, progress=False)
    with torch.no_grad():
        history = fit_mdn(inside, t, x, steps=5, progress=False)
    assert history.loss == expected.loss and history.n_iter == 5
    assert all(torch.equal(a, b) for a, b in zip(outside.parameters(), inside.parameters()))
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        fit_mdn(inside, t, x, steps=1, progress=False)


class _NormalOverRows(torch.nn.Module):
    """Normal(mu (N,), sigma): batch shape (N,), event shape (), so targets (N, 1) broadcast to
    (N, N); with ``event=True`` the remedy, Independent(Normal(mu (N, 1), sigma), 1)."""

    def __init__(self, event=False):
        super().__init__()
        self.linear, self.event = torch.nn.Linear(1, 2), event

    def forward(self, h):
        mu, log_sigma = self.linear(h).unbind(-1)  # (N,), (N,)
        if self.event:
            return torch.distributions.Independent(
                torch.distributions.Normal(mu.unsqueeze(-1), log_sigma.exp().unsqueeze(-1)), 1)
        return torch.distributions.Normal(mu, log_sigma.exp())


def test_fit_mdn_refuses_a_net_whose_log_prob_is_not_one_value_per_pair():
    """A log_prob of shape (N, N) trained the mean over all pairs silently; a net returning a
    tensor failed with AttributeError inside the loop."""
    t = torch.linspace(0, 1, 50).reshape(-1, 1)
    x = (2 * t).sin()
    net = _NormalOverRows()
    start = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(ValueError, match=r"net\(inputs\)\.log_prob\(targets\) must have shape \(N,\) = "
                                         r"\(50,\).*got \(50, 50\).*Independent"):
        fit_mdn(net, t, x, steps=3, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(start, net.parameters()))  # refused before any step
    with pytest.raises(ValueError, match=r"\(32,\).*got \(32, 32\)"):  # minibatches: the first one's shape
        fit_mdn(net, t, x, steps=3, batch_size=32, progress=False)
    with pytest.raises(ValueError, match=r"must return an object with log_prob\(targets\).*got Tensor"):
        fit_mdn(torch.nn.Linear(1, 1), t, x, steps=2, progress=False)
    assert fit_mdn(_NormalOverRows(event=True), t, x, steps=3, progress=False).n_iter == 3  # the remedy


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("family", ["full", "diagonal"])
def test_the_head_refuses_half_precision(dtype, family):
    """float16 capped a log-scale of 6 at 4.5 (a standard deviation of 94 instead of 403); a
    full head failed in geqrf."""
    head = MDNHead(3, 2, 2, family).to(dtype)
    with pytest.raises(ValueError, match=rf"float32 or torch.float64 only.*features {dtype} and "
                                         rf"weights {dtype}.*head.float\(\)"):
        head(torch.zeros(4, 3, dtype=dtype))
    with pytest.raises(ValueError, match=rf"features {dtype} and weights torch.float32"):
        MDNHead(3, 2, 2, family)(torch.zeros(4, 3, dtype=dtype))


def test_the_heads_nll_validates_features_first_and_an_empty_batch_has_no_nll():
    head = MDNHead(4, 2, 2, "full")
    with pytest.raises(ValueError, match=r"features must be 2-D \(batch, in_features=4\), got shape \(\)"):
        head.nll(torch.tensor(1.0), torch.zeros(3, 2))  # was IndexError
    with pytest.raises(ValueError, match="batch is empty"):
        head(torch.zeros(0, 4)).nll(torch.zeros(0, 2))  # was NaN
    with pytest.raises(ValueError, match="batch is empty"):
        head(torch.zeros(3, 4)).nll(torch.zeros(0, 3, 2))  # no targets
    assert torch.isfinite(head(torch.zeros(3, 4)).nll(torch.zeros(3, 2)))


def test_targets_that_are_not_a_tensor_are_named_as_such():
    out = MDNHead(4, 2, 2)(torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"targets must be a torch.Tensor, got ndarray; convert with "
                                         r"torch.as_tensor\(y, dtype=torch.float32\)"):
        out.log_prob(np.zeros((3, 2)))


def test_an_unknown_family_lists_only_those_the_head_takes():
    with pytest.raises(ValueError, match=r"covariance_type in \('full', 'diagonal', 'isotropic'\)") as err:
        MDNHead(4, 2, 2, "foo")
    assert not any(other in str(err.value) for other in ("tied", "shared_isotropic", "constant"))
    for name in ("tied", "shared_isotropic", "constant", "shared"):
        with pytest.raises(ValueError, match=rf"covariance_type in \('full', 'diagonal', 'isotropic'\).*got '{name}'"):
            MDNHead(4, 2, 2, name)
    assert MDNHead(4, 2, 2, "diag").family.name == "diagonal"
    assert MDNHead(4, 2, 2, "spherical").family.name == "isotropic"


class _Recorder(torch.nn.Module):
    """``net`` that records column 0 of the inputs it is given."""

    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, h):
        self.seen.append(h[:, 0].detach().clone())
        return self.net(h)


@pytest.mark.parametrize("N, sizes", [(65, [65]), (129, [64, 65]), (193, [64, 64, 65]), (130, [64, 64, 2])])
def test_minibatches_never_hand_a_batch_of_one_row(N, sizes):
    """N=65, batch_size=64 ended every epoch with a batch of one row, which a BatchNorm in
    training mode refuses (mid-fit, after the parameters had moved). That row joins the epoch's
    last full batch; the order is the reference shuffle, one torch.randperm per epoch."""
    t = torch.arange(N, dtype=torch.float64).reshape(-1, 1)
    x = torch.randn(N, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.manual_seed(0)
    net = _Recorder(torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(),
                                        MDNHead(8, 2, 1)).double())
    steps = 3 * len(sizes)  # three epochs
    history = fit_mdn(net, t / N, x, steps=steps, batch_size=64, generator=0, progress=False)
    assert history.n_iter == steps and not history.diverged
    g = torch.Generator().manual_seed(0)
    expected = [part for _ in range(3) for part in torch.randperm(N, generator=g).split(sizes)]
    seen = [(column * N).round().long() for column in net.seen[:steps]]  # inputs were t / N
    assert len(seen) == len(expected)
    assert all(torch.equal(a, b) for a, b in zip(seen, expected))
