"""Numerics at the bottom of gmmlib: Gaussian log-densities in log space through Cholesky factors.

Dims are named once: ``N`` points, ``K`` components, ``D`` features. Nothing here forms a
determinant or an inverse: the log-determinant is twice the sum of the log of the Cholesky
diagonal, and the Mahalanobis distance comes from a triangular solve.
"""
from __future__ import annotations

import math
import numbers

import torch

__all__ = ["LOG_2PI", "gaussian_log_density", "gaussian_log_prob_tril", "gaussian_log_prob_std", "mixture_log_prob",
           "cholesky", "log_responsibilities", "floor_eigenvalues", "floored_cholesky",
           "cholesky_plus_identity"]

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(diff: torch.Tensor, factor: torch.Tensor, *, tril: bool) -> torch.Tensor:
    """``log N(x | mu, Σ)`` from differences ``x - mu``: the one Gaussian log-density of gmmlib.

    Parameters
    ----------
    diff : (..., D, M) tensor
        Differences of M points from the Gaussian's mean, points in the last dimension.
    factor : tensor broadcastable with ``diff``'s batch dimensions
        ``tril``: (..., D, D) lower-triangular Cholesky factors ``L`` of ``Σ = L Lᵀ``;
        otherwise (..., D', 1) standard deviations, D' = D (diagonal) or 1 (isotropic).

    Returns
    -------
    (..., M) tensor: ``-(D log 2π + |z|²) / 2 - log|L|`` with ``z = L⁻¹ (x - mu)`` (a triangular
    solve) or ``z = (x - mu) / std``.
    """
    D = diff.shape[-2]
    if tril:
        z = torch.linalg.solve_triangular(factor, diff, upper=False)  # (..., D, M)
        half_logdet = torch.diagonal(factor, dim1=-2, dim2=-1).log().sum(-1)  # (...)
    else:
        z = diff / factor  # (..., D, M)
        half_logdet = factor.log().sum((-2, -1)) * (D // factor.shape[-2])  # (...)
    return -0.5 * (D * LOG_2PI + z.square().sum(-2)) - half_logdet.unsqueeze(-1)


def gaussian_log_prob_tril(X: torch.Tensor, means: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """Log-density of each point under each Gaussian with covariance ``L Lᵀ``.

    Parameters
    ----------
    X : (N, D) tensor
    means : (K, D) tensor
    scale_tril : (K, D, D) or (1, D, D) lower-triangular tensor with a positive diagonal

    Returns
    -------
    (N, K) tensor of ``log N(x_n | mu_k, L_k L_kᵀ)`` (:func:`gaussian_log_density`).
    """
    diff = X.T.unsqueeze(0) - means.unsqueeze(-1)  # (K, D, N)
    return gaussian_log_density(diff, scale_tril, tril=True).T


def gaussian_log_prob_std(X: torch.Tensor, means: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Log-density under axis-aligned Gaussians with standard deviations ``std``.

    ``std`` has shape (K or 1, D or 1): per-component or shared, per-feature or isotropic.
    Returns an (N, K) tensor (:func:`gaussian_log_density`).
    """
    diff = X.T.unsqueeze(0) - means.unsqueeze(-1)  # (K, D, N)
    return gaussian_log_density(diff, std.unsqueeze(-1), tril=False).T


def mixture_log_prob(log_weights: torch.Tensor, component_log_prob: torch.Tensor) -> torch.Tensor:
    """``log sum_k w_k N_k(x)`` for each point, with the log-sum-exp trick. (N, K) -> (N,)."""
    return torch.logsumexp(component_log_prob + log_weights, dim=-1)


def log_responsibilities(log_weights: torch.Tensor, component_log_prob: torch.Tensor) -> torch.Tensor:
    """Posterior ``log p(k | x_n)`` for each point and component, (N, K): ``(j - m) - log sum
    exp(j - m)``, ``j`` the joint log-densities and ``m`` their row's largest. Not ``j -
    logsumexp(j)``: far from every component ``j`` is huge and ``logsumexp(j) = m + log s``
    rounds ``log s`` (at most log K) away, which left rows summing to 1.37 in float32 at 5000
    deviations and 0.74 in float64 at 1e8. A row whose every term is -inf is NaN, as in
    scikit-learn."""
    joint = component_log_prob + log_weights  # (N, K)
    top = joint.detach().amax(-1, keepdim=True).nan_to_num(neginf=0.0)  # (N, 1)
    shifted = joint - top  # exact next to the largest term, <= 0
    return shifted - shifted.exp().sum(-1, keepdim=True).log()


def _check_square(cov, name: str) -> None:
    """A ``ValueError`` naming ``name`` unless ``cov`` is a float32 or float64 tensor of square
    matrices (..., D, D): the public factorisations met ints, float16, arrays, vectors and
    rectangles with torch's and numpy's messages."""
    if not isinstance(cov, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of square matrices (..., D, D), got "
                         f"{type(cov).__name__}; convert with torch.as_tensor(..., dtype=torch.float64)")
    if cov.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be float32 or float64 (the factorisations have no other "
                         f"kernels), got {cov.dtype}; convert with .double()")
    if cov.ndim < 2 or cov.shape[-1] != cov.shape[-2]:
        raise ValueError(f"{name} must be square matrices (..., D, D), got shape {tuple(cov.shape)}")


def cholesky(cov: torch.Tensor, name: str = "covariances") -> torch.Tensor:
    """Cholesky factor of symmetric positive-definite matrices, or a ``ValueError`` saying which.

    ``cov`` is (..., D, D). Raises when a matrix is not symmetric or not positive definite.
    """
    _check_square(cov, name)
    if not bool(torch.isfinite(cov).all()):
        raise ValueError(f"{name} contain NaN or infinity")
    # symmetric to scikit-learn's tolerance (np.allclose(S, S.T): 1e-5 of each entry, plus an
    # absolute 1e-8), the latter relative to the largest entry (64 roundings of the dtype where
    # that is more: a matrix built in float32, or through an eigendecomposition, is asymmetric
    # by a few roundings, and is accepted). Absolute below a largest entry of 1, it let a matrix
    # at 1e-12 with off-diagonals 5000x its diagonal through, half of it ignored
    scale = float(cov.abs().amax()) if cov.numel() else 1.0
    asym = (cov - cov.transpose(-1, -2)).abs()
    relative = max(1e-8, 64 * torch.finfo(cov.dtype).eps)
    if bool((asym > relative * scale + 1e-5 * cov.abs()).any()):
        raise ValueError(f"{name} must be symmetric; symmetrise them with (S + S.T) / 2")
    L, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        bad = torch.nonzero(info.reshape(-1)).reshape(-1).tolist()
        raise ValueError(f"{name} must be positive definite, but matrix {bad} is not; add a small "
                         "multiple of the identity (e.g. 1e-6 * I) or check for duplicated features")
    return L


def floor_eigenvalues(cov: torch.Tensor, floor: float) -> torch.Tensor:
    """``cov`` (..., D, D) with every eigenvalue below ``floor`` raised to it: ``Q max(Λ, v) Qᵀ``.

    This is the projection onto ``{Σ : every eigenvalue >= v}``, the nearest such matrix in
    Frobenius norm, and it commutes with rotations: ``floor(Rᵀ C R) = Rᵀ floor(C) R``.
    """
    lam, Q = torch.linalg.eigh(cov)  # (..., D), (..., D, D)
    return (Q * lam.clamp_min(floor).unsqueeze(-2)) @ Q.mT


def floored_cholesky(cov: torch.Tensor, floor: float, *,
                     error: str = "covariances must be positive definite") -> torch.Tensor:
    """A lower-triangular ``L`` (..., D, D) with ``L Lᵀ + v I`` = ``cov`` floored at ``v``.

    Where ``cov - v I`` is positive definite, ``L`` is its Cholesky factor and ``L Lᵀ + v I``
    is ``cov`` itself. Otherwise (an eigenvalue of ``cov`` at or below the floor) the
    eigenvalues of ``cov - v I`` are clipped at a margin of ``10 D eps`` times its largest
    eigenvalue (or ``v``), just enough for a Cholesky factor to exist in the dtype: the result
    is then :func:`floor_eigenvalues` of ``cov`` to within that margin. Without a floor
    (``v <= 0``) there is nothing to clip to: a ``cov`` that is not positive definite raises
    ``ValueError(error)``.
    """
    _check_square(cov, "covariances")
    if not bool(torch.isfinite(cov).all()):  # NaN reached the advice to use float64
        raise ValueError("covariances contain NaN or infinity")
    D = cov.shape[-1]
    eye = torch.eye(D, dtype=cov.dtype, device=cov.device)
    A = cov - floor * eye  # (..., D, D)
    L, info = torch.linalg.cholesky_ex(A)
    diag = torch.diagonal(L, dim1=-2, dim2=-1)  # (..., D)
    bad = (info != 0) | ~torch.isfinite(diag).all(-1)
    if floor <= 0:
        if bool(bad.any()):
            raise ValueError(error)
        return L
    tiny = torch.finfo(cov.dtype).eps * 10 * D
    # the floor binding: a pivot lost to rounding next to its own diagonal entry (its
    # coordinate a combination of the earlier ones to the dtype's precision). Measured against
    # the largest diagonal entry instead, it clipped well-defined variances of features on
    # other scales: diag(1e6, 1) in float32 came back as diag(1e6, 2.38), in every EM M-step
    bad |= (diag.square() < tiny * torch.diagonal(A, dim1=-2, dim2=-1)).any(-1)
    if bool(bad.any()):
        lam, Q = torch.linalg.eigh(A[bad])  # (B, D), (B, D, D)
        margin = tiny * lam.amax(-1, keepdim=True).clamp_min(floor)  # (B, 1)
        for _ in range(4):  # rounding in Q Λ Qᵀ can still defeat the factorisation: widen
            fixed, info = torch.linalg.cholesky_ex((Q * lam.clamp_min(margin).unsqueeze(-2)) @ Q.mT)
            if bool((info == 0).all()):
                break
            margin = margin * 100
        else:
            raise ValueError("covariances could not be floored into positive-definite matrices in "
                             f"{cov.dtype}; use float64, or standardise the data")
        L[bad] = fixed
    return L


def cholesky_plus_identity(L: torch.Tensor, v: float) -> torch.Tensor:
    """The Cholesky factor of ``L Lᵀ + v I`` for lower-triangular ``L`` (..., D, D), differentiable.

    Computed as the R factor of the QR decomposition of the stacked (2D, D) matrix
    ``[Lᵀ; sqrt(v) I]`` (whose Gram matrix is ``L Lᵀ + v I``), so ``L Lᵀ`` is never formed: it
    cannot lose ``v I`` to rounding or fail as a Cholesky of it could in float32.

    Float32 on a GPU is the exception: there a batched QR is slow (2.3 ms for 16 of (128, 64)
    on an H200, a fifth of an EM iteration at (1e5, 64, 16)), so ``L Lᵀ + v I`` is formed and
    factorised in float64 (``_float64_cholesky_plus_identity``) wherever float64's rounding
    of ``L Lᵀ`` stays below float32's resolution of its smallest eigenvalue (bounded below
    by ``v`` and by the factor's inverse), the QR for the matrices where it does not. Only
    where no gradient is taken (EM's M-step, scoring without autograd): its accuracy check
    waits for the GPU, which every gradient step would pay, unmeasured.
    """
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (math.isfinite(v) and v >= 0):
        raise ValueError(f"v must be a finite number >= 0 (the variance added), got {v!r}")
    taped = L.requires_grad and torch.is_grad_enabled()
    if L.is_cuda and L.dtype == torch.float32 and not taped:
        return _float64_cholesky_plus_identity(L, v)[0]
    return _qr_plus_identity(L, v)


def _qr_plus_identity(L: torch.Tensor, v: float) -> torch.Tensor:
    """:func:`cholesky_plus_identity` by the QR of ``[Lᵀ; sqrt(v) I]``."""
    D = L.shape[-1]
    eye = torch.eye(D, dtype=L.dtype, device=L.device).expand_as(L)
    R = torch.linalg.qr(torch.cat([L.mT, math.sqrt(v) * eye], dim=-2)).R  # (..., D, D)
    # R's rows made non-negative on the diagonal; a zero one (a singular L with v = 0) is kept,
    # where torch.sign's 0 wiped its row (L Lᵀ = diag(0, 2) came back as diag(0, 1))
    sign = torch.where(torch.diagonal(R, dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(R.dtype).detach()
    return (sign.unsqueeze(-1) * R).mT


def _float64_cholesky_plus_identity(L: torch.Tensor, v: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``cholesky(L Lᵀ + v I)`` of float32 ``L`` (..., D, D), formed and factorised in float64
    and returned in ``L``'s dtype, differentiable, for every matrix where that is as accurate
    as float32 can be; the others (``declined``, a boolean (...,) on the CPU) by the QR
    (:func:`_qr_plus_identity`), so one nearly singular component leaves the rest on the
    fast route. The products of float32 entries are exact in float64, so only the sums
    round, by at most ``D·2⁻⁵³·s`` an entry with ``s`` the largest diagonal entry of
    ``L Lᵀ`` (an eigenvalue by at most D times that): the rule asks the entry bound to be at
    most ``2⁻²⁴·λ`` for ``λ`` a lower bound of the smallest eigenvalue, ``s / λ <= 2²⁹ / D``
    (accepted factors matched the float64 QR's to float32 rounding up to condition 1e7,
    measured). ``λ`` is the larger of ``v`` (every eigenvalue is at least the floor) and
    ``1 / ||C⁻¹||²_F`` (``= 1 / Σ 1/λ_i``, between ``λ_min / D`` and ``λ_min``; ``C`` the
    factor): a well-conditioned component passes whatever its scale (the benchmark's,
    variances up to 49 at D = 64, s / v = 4.9e7), one nearly singular in unscaled data,
    whose small directions the float64 sum would blur, is declined, as is one whose
    factorisation fails. One host-device synchronisation, for the decision."""
    D = L.shape[-1]
    batch = L.shape[:-2]
    L64 = L.double().reshape(-1, D, D)
    eye = torch.eye(D, dtype=torch.float64, device=L.device)
    A = L64 @ L64.mT + v * eye  # (B, D, D)
    with torch.no_grad():  # the decision; no gradient flows through it
        C, info = torch.linalg.cholesky_ex(A)
        largest = L64.square().sum(-1).amax(-1)  # (B,) the largest diagonal entry of L Lᵀ
        inverse = torch.linalg.solve_triangular(C, eye.expand_as(C), upper=False)
        smallest = inverse.square().sum((-2, -1)).reciprocal().clamp(min=v)  # NaN stays NaN
        bad = (info != 0) | ~(largest * D <= smallest * 2.0 ** 29)  # (B,)
    declined = bad.cpu()  # the one synchronisation
    if bool(declined.all()):
        return _qr_plus_identity(L, v), declined.reshape(batch)
    if L.requires_grad and torch.is_grad_enabled():  # again, on the tape: the declined ones
        # replaced by I, so that no failed factor's backward reaches the gradient
        C = torch.linalg.cholesky(torch.where(bad[:, None, None], eye, A))
    C = C.to(L.dtype)
    if bool(declined.any()):  # the QR's factors put in out of place, by indices from the host
        where = declined.nonzero().squeeze(-1).to(L.device, non_blocking=True)
        C = C.index_put((where,), _qr_plus_identity(L.reshape(-1, D, D)[where], v))
    return C.reshape(L.shape), declined.reshape(batch)
