"""Mixture density network head (Bishop, 1994): a layer that turns features into a mixture.

Stack it on any network: ``MDNHead(hidden, K, D)`` maps features ``h`` (B, H) to the
parameters of a Gaussian mixture over targets ``y`` (B, D) — mixture logits (B, K), means
(B, K, D) and a scale per component — and ``head.nll(h, y)`` is the mean negative conditional
log-likelihood to minimise. :func:`fit_mdn` is the training loop (Adam on that NLL, a cosine
schedule) for a whole network ending in the head.

The densities are :func:`gmmlib.numerics.gaussian_log_density`, the formula every other model in
gmmlib uses, and the variance floor means what it means for :class:`~gmmlib.GaussianMixture`.
"""
from __future__ import annotations

import math
import time
import warnings

import torch
from torch import nn

from ._validation import (FLOAT_DTYPES, as_data, check_nonnegative, check_positive,
                          check_positive_int, checked, make_generator, optional, user_stacklevel)
from .families import get_family
from .gd import _restore, minibatches
from .history import FitHistory

__all__ = ["MDNHead", "MDNOutput", "fit_mdn"]

_SUPPORTED = ("full", "diagonal", "isotropic")


class MDNOutput:
    """The conditional mixtures ``p(y | x_b)``, one per input ``x_b`` of a batch: what
    :class:`MDNHead` returns.

    The shapes follow ``torch.distributions`` (batch shape (B,), event shape (D,)) for targets
    that carry the batch dimension: :meth:`log_prob` takes (B, D), or broadcasts extra
    dimensions on the left (``(S, B, D)`` or ``(S, 1, D)`` targets give ``(S, B)``), and
    ``sample(n)`` returns ``(n, B, D)``.
    :meth:`to_distribution` gives the equivalent ``MixtureSameFamily``.

    Attributes
    ----------
    log_weights : (B, K) tensor
        ``log pi_k(x_b)``, normalised.
    means : (B, K, D) tensor
    factor : tensor
        Cholesky factors (B, K, D, D) (``full``) or standard deviations (B, K, D or 1), floor
        included: the family's factor, as in :class:`~gmmlib.GaussianMixture`.
    """

    def __init__(self, log_weights, means, factor, family):
        self.log_weights = log_weights  # (B, K)
        self.means = means  # (B, K, D)
        self.factor = factor  # (B, K, D, D) Cholesky factors, or (B, K, D or 1) standard deviations
        self.family = family

    def __repr__(self) -> str:
        B, K, D = self.means.shape
        return f"MDNOutput(batch={B}, n_components={K}, n_features={D}, family={self.family.name!r})"

    @property
    def weights(self) -> torch.Tensor:
        """Mixing coefficients ``pi_k(x_b)``, (B, K)."""
        return self.log_weights.exp()

    def scale_tril(self) -> torch.Tensor:
        """Cholesky factors (B, K, D, D) for every family."""
        return self.family.scale_tril(self.factor, *self.means.shape[-2:])

    @property
    def component_covariances(self) -> torch.Tensor:
        """``Sigma_k(x_b)``, (B, K, D, D)."""
        L = self.scale_tril()
        return L @ L.mT

    def component_log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """``log N(y | mu_k(x_b), Sigma_k(x_b))``: (B, K) for targets (B, D), (S, B, K) for
        targets (S, B, D) or (S, 1, D)."""
        B, K, D = self.means.shape
        if not isinstance(y, torch.Tensor):
            raise ValueError(f"targets must be a torch.Tensor, got {type(y).__name__}; convert with "
                             f"torch.as_tensor(y, dtype={self.means.dtype})")
        if y.ndim < 2 or y.shape[-1] != D or y.shape[-2] not in (1, B):
            several = f"(..., {B}, {D})" + (" or (..., 1, {D})".format(D=D) if B > 1 else "")
            raise ValueError(f"targets must be a tensor of shape (batch, n_features) = ({B}, {D}), "
                             f"or {several} for several targets per input, got {tuple(y.shape)}"
                             + (" (use y.reshape(-1, 1) for one target feature)"
                                if y.ndim == 1 else ""))
        if y.dtype == torch.bool or y.is_complex():
            raise ValueError(f"targets must be real numbers, got {y.dtype}; convert with "
                             f"y.to({self.means.dtype})")
        if not bool(torch.isfinite(y).all()):  # NaN came back as the log-density, inf as NaN
            raise ValueError("targets contain NaN or infinity: a Gaussian mixture gives them no "
                             "density (torch.distributions refuses them as outside the support); "
                             "drop or impute those rows")
        diff = (y.unsqueeze(-2) - self.means).unsqueeze(-1)  # (..., B, K, D, 1): one point per Gaussian
        return self.family.log_density(diff, self.factor).squeeze(-1)  # the model's formula

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """``log p(y | x_b)``: (B,) for targets (B, D); see :meth:`component_log_prob`."""
        return torch.logsumexp(self.log_weights + self.component_log_prob(y), dim=-1)

    def nll(self, y: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood ``-1/B sum_b log p(y_b | x_b)`` of targets (B, D);
        ``ValueError`` for an empty batch (the mean of nothing)."""
        log_prob = self.log_prob(y)  # (B,), or (S, B)
        if log_prob.numel() == 0:
            raise ValueError(f"nll needs at least one (features, target) pair; the batch is empty "
                             f"(targets of shape {tuple(y.shape)} for {self.means.shape[0]} inputs)")
        return -log_prob.mean()

    @property
    def mean(self) -> torch.Tensor:
        """Conditional mean ``E[y | x_b] = sum_k pi_k mu_k``, (B, D)."""
        return (self.weights.unsqueeze(-1) * self.means).sum(-2)

    @property
    def mode(self) -> torch.Tensor:
        """The mean of the most probable component, ``mu_k*`` with ``k* = argmax_k pi_k(x_b)``,
        (B, D). This is the usual MDN point prediction (Bishop, 1994). It is the mixture's
        highest mode only approximately: when components overlap, or a lighter but narrower
        component has the taller peak, the true mode (which has no closed form) lies elsewhere."""
        k = self.log_weights.argmax(-1)  # (B,)
        return self.means[torch.arange(len(k), device=k.device), k]

    @property
    def covariance(self) -> torch.Tensor:
        """``Cov[y | x_b]`` by the law of total variance,
        ``sum_k pi_k Sigma_k + sum_k pi_k (mu_k - m)(mu_k - m)ᵀ`` with ``m`` the mean, (B, D, D)."""
        w = self.weights[..., None, None]  # (B, K, 1, 1)
        d = (self.means - self.mean.unsqueeze(-2)).unsqueeze(-1)  # (B, K, D, 1)
        return (w * (self.component_covariances + d @ d.mT)).sum(-3)

    @property
    def variance(self) -> torch.Tensor:
        """``Var[y_d | x_b]``, the diagonal of :attr:`covariance`, (B, D) (as
        ``MixtureSameFamily.variance``): ``sum_k pi_k (diag Sigma_k + (mu_k - m)²)``, from
        the factors' rows (no (B, K, D, D) matrix: the axis-aligned families square their
        deviations)."""
        d = self.means - self.mean.unsqueeze(-2)  # (B, K, D)
        f = self.factor.square()
        diag = f.sum(-1) if self.family.kind == "tril" else f.expand_as(d)  # diag(L Lᵀ) = row norms²
        return (self.weights.unsqueeze(-1) * (diag + d.square())).sum(-2)

    def to_distribution(self) -> torch.distributions.MixtureSameFamily:
        """An equivalent batched ``torch.distributions.MixtureSameFamily``."""
        D = torch.distributions
        return D.MixtureSameFamily(D.Categorical(logits=self.log_weights),
                                   D.MultivariateNormal(self.means, scale_tril=self.scale_tril()))

    @torch.no_grad()
    def sample(self, n: int | None = None, generator: torch.Generator | int | None = None) -> torch.Tensor:
        """Draws of ``y`` from each input's mixture: (B, D) for ``n=None`` (one each), else
        ``n`` draws per input, (n, B, D): the shape and distribution of
        ``to_distribution().sample((n,))`` (not the same draws). ``generator``: a
        torch.Generator on the outputs' device, an int seed, or None for torch's global
        generator (as :meth:`GaussianMixture.sample`)."""
        B, K, D = self.means.shape
        m = 1 if n is None else check_positive_int(n, "n")
        dev = self.means.device
        if generator is not None:
            generator = make_generator(generator, device=dev)
        k = torch.multinomial(self.weights, m, replacement=True, generator=generator)  # (B, m)
        rows = torch.arange(B, device=dev).unsqueeze(-1)  # (B, 1)
        eps = torch.randn(B, m, D, generator=generator, dtype=self.means.dtype, device=dev)
        if self.family.kind == "tril":
            noise = (self.factor[rows, k] @ eps.unsqueeze(-1)).squeeze(-1)  # (B, m, D)
        else:
            noise = self.factor[rows, k] * eps  # std (B, m, D or 1) times eps
        y = (self.means[rows, k] + noise).transpose(0, 1)  # (m, B, D)
        return y[0] if n is None else y


def _check_family(covariance_type, name: str):
    try:
        family = get_family(covariance_type)
    except ValueError:  # its message lists families MDNHead does not take
        family = None
    if family is None or family.name not in _SUPPORTED:
        raise ValueError(f"MDNHead supports {name} in {_SUPPORTED} (or scikit-learn's 'diag', "
                         f"'spherical'), got {covariance_type!r}")
    return family


_ARGUMENTS = {"in_features": check_positive_int, "n_components": check_positive_int,
              "n_features": check_positive_int, "covariance_type": _check_family,
              "min_variance": check_nonnegative}


class MDNHead(nn.Module):
    """Linear layer from features to a Gaussian mixture over ``n_features``-dimensional targets.

    Parameters
    ----------
    in_features : int
        Size of the features fed to the head (the last hidden layer of your network).
    n_components, n_features : int
        K mixture components over D-dimensional targets.
    covariance_type : str
        ``full``, ``diagonal`` (default) or ``isotropic``.
    min_variance : float
        The variance floor ``v`` (the singularity guard; an MDN collapses just like a mixture):
        each covariance is ``L Lᵀ + v I`` (variances ``s² + v``), as in
        :class:`~gmmlib.GaussianMixture`, so every eigenvalue is at least ``v`` and every
        density at most ``(2 pi v)^(-D/2)``. 0 switches the floor off.

    Notes
    -----
    The layer's outputs are the mixture logits, the means and the log-scales (the log of the
    free part's standard deviations, or of ``L``'s diagonal). A log-scale is capped at
    ``log(finfo.max) / 2 - 1`` (43 in float32) before it is exponentiated, so that a large
    feature cannot make a standard deviation overflow to infinity (an MDN's features, unlike
    a mixture's parameters, are unbounded); the cap passes no gradient. Only the log-scales
    are capped: the means, and the off-diagonal entries of a ``full`` head's ``L``, are linear
    in the features, so features of order 1e19 (float32) still overflow the covariance.
    Standardise the network's inputs.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(), MDNHead(32, 3, 1))
    >>> out = net(torch.zeros(5, 1))
    >>> out.log_prob(torch.zeros(5, 1)).shape, out.sample(10).shape
    (torch.Size([5]), torch.Size([10, 5, 1]))
    """

    def __init__(self, in_features: int, n_components: int, n_features: int = 1,
                 covariance_type: str = "diagonal", *, min_variance: float = 1e-6):
        super().__init__()
        H, K, D, family, min_variance = checked(_ARGUMENTS, locals()).values()
        self.n_components, self.n_features, self.family = K, D, family
        self.min_variance = min_variance
        self.in_features = H
        n_scale = {"full": D * (D + 1) // 2, "diagonal": D, "isotropic": 1}[family.name]
        self.n_scale = n_scale
        self.linear = nn.Linear(H, K * (1 + D + n_scale))
        rows, cols = torch.tril_indices(D, D) if family.name == "full" else (torch.zeros(0),) * 2
        self.register_buffer("_tril_index", torch.stack([rows, cols]), persistent=False)
        # a full head's raw entries that are log-scales (L's diagonal); a std head's all are
        self.register_buffer("_is_log", rows == cols, persistent=False)

    def forward(self, h: torch.Tensor) -> MDNOutput:
        if not isinstance(h, torch.Tensor):
            raise ValueError(f"features must be a torch.Tensor, got {type(h).__name__}; convert with "
                             "torch.as_tensor(h, dtype=torch.float32)")
        if h.ndim != 2 or h.shape[-1] != self.in_features:
            raise ValueError(f"features must be 2-D (batch, in_features={self.in_features}), got shape "
                             f"{tuple(h.shape)}")
        weight = self.linear.weight
        if not {h.dtype, weight.dtype} <= set(FLOAT_DTYPES):
            raise ValueError(f"MDNHead computes in torch.float32 or torch.float64 only (the covariance "
                             f"factorisations have no half-precision kernels, and a float16 log-scale "
                             f"is capped far too low), got features {h.dtype} and weights "
                             f"{weight.dtype}; convert with head.float() and h.float()")
        if h.dtype != weight.dtype:
            raise ValueError(f"features are {h.dtype} but the head's weights are {weight.dtype}; "
                             f"convert one of them (h.to({weight.dtype}) or head.to({h.dtype}))")
        B = h.shape[0]
        K, D = self.n_components, self.n_features
        logits, means, raw = self.linear(h).split([K, K * D, K * self.n_scale], dim=-1)
        log_weights = torch.log_softmax(logits, dim=-1)  # (B, K)
        means = means.reshape(B, K, D)
        cap = math.log(torch.finfo(raw.dtype).max) / 2 - 1  # exp(cap)² is finite
        raw = raw.reshape(B, K, self.n_scale)
        capped = raw.clamp(max=cap)
        raw = capped if self.family.kind == "std" else torch.where(self._is_log, capped, raw)
        if self.family.name == "full":
            L = raw.new_zeros(B, K, D, D)
            L[..., self._tril_index[0], self._tril_index[1]] = raw
            raw = L
        # the same transform (exp of the log-scales, variance floor) as GaussianMixture's
        return MDNOutput(log_weights, means, self.family.factor(raw, self.min_variance), self.family)

    def nll(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean negative conditional log-likelihood ``-1/B sum_b log p(y_b | h_b)``; see
        :meth:`MDNOutput.nll`."""
        return self(h).nll(y)


def _check_net(net, name: str):
    if not isinstance(net, nn.Module):
        raise ValueError(f"{name} must be a torch.nn.Module whose output has log_prob(targets) (e.g. "
                         f"a network ending in gmmlib.MDNHead), got {type(net).__name__}")
    if not any(p.requires_grad for p in net.parameters()):
        raise ValueError(f"{name} has no trainable parameters")
    return net


def _log_prob(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``net(inputs).log_prob(targets)``, (N,), or a ``ValueError`` saying what ``net`` must return
    (a distribution's log_prob broadcasts silently: Normal(mu (N,), sigma) scores targets (N, 1)
    as (N, N))."""
    out = net(inputs)
    if not callable(getattr(out, "log_prob", None)):
        raise ValueError(f"net(inputs) must return an object with log_prob(targets) (a network ending "
                         f"in gmmlib.MDNHead, or a torch.distributions.Distribution), got "
                         f"{type(out).__name__}; end the network in gmmlib.MDNHead")
    log_prob = out.log_prob(targets)
    N, D = targets.shape
    if not isinstance(log_prob, torch.Tensor) or log_prob.shape != (N,):
        got = tuple(log_prob.shape) if isinstance(log_prob, torch.Tensor) else type(log_prob).__name__
        raise ValueError(f"net(inputs).log_prob(targets) must have shape (N,) = ({N},), one "
                         f"log-density per pair, got {got} for targets of shape ({N}, {D}): net must "
                         f"return a distribution over rows of {D} feature(s) (batch shape ({N},), event "
                         f"shape ({D},)), e.g. torch.distributions.Independent(Normal(mu, sigma), 1) "
                         f"with mu of shape ({N}, {D})")
    return log_prob


def _without_single_rows(batches):
    """``batches`` (index tensors) with a batch of one row joined to the batch before it: a
    BatchNorm in training mode refuses a batch of one row. :func:`~gmmlib.gd.minibatches` ends an
    epoch with one row when ``n % batch_size == 1``; that row joins the epoch's last full batch."""
    held = next(batches)
    for batch in batches:
        if len(batch) == 1 and len(held) > 1:
            yield torch.cat([held, batch])
            held = next(batches)
        else:
            yield held
            held = batch


_FIT_MDN = {"net": _check_net, "steps": check_positive_int, "lr": check_positive,
            "weight_decay": check_nonnegative, "batch_size": optional(check_positive_int),
            "generator": optional(lambda g, name: make_generator(g))}  # never draws for None


def fit_mdn(net: nn.Module, inputs, targets, *, steps: int = 2000, lr: float = 1e-2,
            weight_decay: float = 0.0, batch_size: int | None = None, generator=None,
            progress: bool | None = None) -> FitHistory:
    """Train ``net`` (in place) by Adam on the mean negative log-likelihood of ``targets`` given
    ``inputs``, with a cosine learning-rate schedule that anneals to 0 over ``steps``.

    It is the loop one writes by hand, plus what a long run needs::

        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        for step in range(steps):
            opt.zero_grad()
            loss = net(inputs).nll(targets)
            loss.backward()
            opt.step()
            schedule.step()

    With the same seed it takes exactly these steps. What it adds: a non-finite loss or gradient
    stops the fit with a ``RuntimeWarning``, keeps the last finite parameters and sets
    ``history.diverged`` (it never leaves NaN in the network); minibatches; a progress bar.

    Parameters
    ----------
    net : torch.nn.Module
        ``net(inputs)`` must return an object with ``log_prob(targets)`` of shape (N,): an
        :class:`MDNOutput` (a network ending in :class:`MDNHead`) or any
        ``torch.distributions.Distribution`` with batch shape (N,).
    inputs, targets : (N, H) and (N, D) arrays or tensors
        Converted to the dtype and device of ``net``'s first parameter (never modified).
    steps : int
        Optimiser steps.
    lr, weight_decay : float
        Adam's learning rate (the schedule's start) and L2 penalty.
    batch_size : int, optional
        Minibatches drawn without replacement from a fresh shuffle each epoch, as in
        :func:`~gmmlib.fit_gd`, except that an epoch never ends with a batch of one row (a
        BatchNorm in training mode refuses one): when ``N % batch_size == 1`` that row joins the
        epoch's last full batch. None (default), or ``batch_size >= N``, uses all pairs every step.
    generator : torch.Generator or int, optional
        Randomness of the minibatches (the network's initial weights, and its dropout, are the
        caller's: they draw from torch's global generator as they would in the loop above).
        None takes one draw from torch's global generator, and only when minibatches are drawn:
        a full-batch fit leaves the global generator as it found it.
    progress : bool, optional
        Show a tqdm progress bar; default only when stderr is a terminal.

    Returns
    -------
    FitHistory
        ``loss``: the (minibatch) mean NLL before each step (in training mode), then the
        full-data NLL of the trained network (in evaluation mode: no dropout; every module's
        mode is put back afterwards); ``n_iter``, the steps that led to the parameters the
        network holds (one fewer than were taken when the last one was undone); ``diverged``;
        ``time``. A network in training mode trains in its modules' own modes (a submodule
        frozen with ``.eval()`` stays so); one in evaluation mode is put in training mode for
        the fit. Gradients are enabled during the fit, even when it is called inside
        ``torch.no_grad()``; after a divergence every parameter's ``grad`` is None.

    Raises
    ------
    ValueError
        An argument out of range, ``inputs`` or ``targets`` not 2-D numbers without NaN, or
        ``net(inputs)`` without ``log_prob(targets)`` of shape (N,) (checked at every step, so
        before the first one changes any parameter).
    RuntimeError
        Called inside ``torch.inference_mode()``, where nothing can be trained.

    Examples
    --------
    >>> import torch, gmmlib
    >>> _ = torch.manual_seed(0)
    >>> t = torch.rand(200, 1); x = 2 * t + 0.1 * torch.randn(200, 1)
    >>> net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), gmmlib.MDNHead(8, 2))
    >>> history = gmmlib.fit_mdn(net, t, x, steps=300, progress=False)
    >>> history.final_loss < history.loss[0]
    True
    """
    called = time.perf_counter()  # history.elapsed: the whole call
    net, steps, lr, weight_decay, batch_size, generator = checked(_FIT_MDN, locals()).values()
    if torch.is_inference_mode_enabled():
        raise RuntimeError("fit_mdn cannot train inside torch.inference_mode() (its tensors record no "
                           "gradients); call it outside that block")
    p0 = next(net.parameters())
    inputs = as_data(inputs, dtype=p0.dtype, device=p0.device, name="inputs")
    targets = as_data(targets, dtype=p0.dtype, device=p0.device, name="targets")
    if len(inputs) != len(targets):
        raise ValueError(f"inputs and targets must have the same number of rows, got {len(inputs)} "
                         f"and {len(targets)}")
    N = len(inputs)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    batches = None  # all pairs every step; a generator is made (None: one global draw) only for minibatches
    if batch_size is not None and batch_size < N:
        batches = _without_single_rows(minibatches(N, batch_size, make_generator(generator), p0.device))
    history = FitHistory(method="mdn")
    modes = {m: m.training for m in net.modules()}  # every module's own, put back at the end
    if not net.training:  # a network in training mode trains as it is: a submodule the caller
        net.train()  # froze with .eval() (a BatchNorm being fine-tuned around) stays frozen
    # restored if a step goes non-finite: the trainable parameters and the buffers (a
    # BatchNorm's running statistics move in training mode)
    kept = params + [b for b in net.buffers() if b.is_floating_point()]
    last_good = [p.detach().clone() for p in kept]

    def give_up(at: str) -> None:
        _restore(kept, last_good)  # the parameters before the latest step
        history.n_iter = max(history.n_iter - 1, 0)  # that step undone (none at step 0)
        for p in params:
            p.grad = None  # they may hold NaN or inf
        history.diverged = True
        warnings.warn(f"fit_mdn: the loss or its gradient became non-finite {at} (a component "
                      "collapsed onto targets, or the learning rate is too large); stopped and "
                      "kept the last finite parameters. Raise the head's min_variance or lower "
                      "lr.", RuntimeWarning, stacklevel=user_stacklevel())
    from tqdm.auto import tqdm
    bar = tqdm(total=steps, desc="fit_mdn", unit="step", disable=None if progress is None else not progress)
    start = time.perf_counter()
    try:
        with torch.enable_grad():  # also when called inside torch.no_grad()
            for step in range(steps):
                opt.zero_grad()
                rows = slice(None) if batches is None else next(batches)
                loss = -_log_prob(net, inputs[rows], targets[rows]).mean()
                value = float(loss.detach())
                finite = math.isfinite(value)
                if finite:
                    loss.backward()
                    grads = [p.grad.isfinite().all() for p in params if p.grad is not None]
                    finite = bool(torch.stack(grads).all()) if grads else True  # one sync
                if not finite:
                    give_up(f"at step {step}")
                    break
                history.loss.append(value)
                history.time.append(time.perf_counter() - start)
                torch._foreach_copy_(last_good, [p.detach() for p in kept])
                opt.step()
                schedule.step()
                history.n_iter = step + 1
                bar.update(1)
        net.eval()  # the full-data NLL without dropout's noise or batch statistics
        with torch.no_grad():
            final = float(-net(inputs).log_prob(targets).mean())
            if not math.isfinite(final) and not history.diverged:  # the last step's result
                give_up(f"after the last step ({history.n_iter})")
                final = float(-net(inputs).log_prob(targets).mean())
    finally:
        bar.close()
        for module, training in modes.items():
            module.training = training
    if math.isfinite(final):
        history.loss.append(final)
        history.time.append(time.perf_counter() - start)
    history.elapsed = time.perf_counter() - called
    return history
