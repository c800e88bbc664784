"""Weighted moments of the data: the M-step's arithmetic, shared by EM and initialisation.

:class:`Workspace` holds the data as EM reads them (copied once, shifted by their mean,
transposed) and the responsibilities; the functions below turn responsibilities into each
family's covariance estimate, centred on given means (see :mod:`gmmlib.em`'s docstring for
why each is computed the way it is). Initialisation calls the same functions with one-hot
responsibilities, so there is one implementation of the M-step's formulas.
"""
from __future__ import annotations

import torch

__all__ = ["Workspace", "COVARIANCE"]


class Workspace:
    """The data as EM reads them, and buffers reused by every iteration.

    ``XT`` holds the data shifted by ``shift`` and transposed, (D, N): a row chunk is the view
    ``XT[:, a:b].T`` for the E-step's product, and a contiguous (D, n) block for the M-step's
    centred scatter, whose batched products then run along contiguous memory (measured ~1.4x
    faster than the (n, D) layout). ``RT`` holds the responsibilities, (K, N).

    Rows per chunk keep every (K, D, n) temporary near ``budget`` elements (measured at
    (1e5, 16, 16) and (1e5, 64, 16) on 2 cores: best between 2^18 and 2^20); the E-step of the
    diagonal families only makes (n, K) temporaries and takes longer chunks.
    """

    def __init__(self, X: torch.Tensor, K: int, shift: torch.Tensor, family, chunk: int | None = None):
        N, D = X.shape
        self.N, self.D, self.K = N, D, K
        self.shift = shift  # (D,)
        self.X = X  # (N, D), the data as given, read (never written) by the centred E-step
        # always a new array: X may be the caller's own memory (as_data shares it), and
        # X.T.contiguous() IS that memory for one feature, one row or a transposed view
        self.XT = torch.sub(X.T, shift.unsqueeze(-1),
                            out=torch.empty(D, N, dtype=X.dtype, device=X.device))  # (D, N)
        budget = 1 << 24 if X.device.type == "cuda" else 1 << 19
        self.chunk = min(N, int(chunk or max(256, budget // (K * D))))  # M-step, tril E-step
        self.chunk_e = self.chunk if family.kind == "tril" else \
            min(N, int(chunk or max(256, budget // (K + D))))
        self.RT = None  # (K, N), allocated on first use
        self._buffers = {}

    def resp(self) -> torch.Tensor:
        if self.RT is None:
            self.RT = torch.empty(self.K, self.N, dtype=self.XT.dtype, device=self.XT.device)
        return self.RT

    def buffer(self, name: str, shape) -> torch.Tensor:
        b = self._buffers.get(name)
        if b is None or b.shape != tuple(shape):
            b = self._buffers[name] = torch.empty(shape, dtype=self.XT.dtype, device=self.XT.device)
        return b

    def float64_columns(self, a: int, b: int) -> torch.Tensor:
        """Points ``a:b`` as the columns of ``[x²; x]``, shifted in float64, (2D, n): made once
        per workspace on first use (16 bytes per value, only for float32 data with components
        of a diagonal family beyond float32's offset limit), then read at no cost."""
        if "xx64" not in self._buffers:
            f64 = torch.float64
            x64 = self.X.T.to(f64) - self.shift.to(f64).unsqueeze(-1)  # (D, N), float32 values exact
            self._buffers["xx64"] = torch.cat([x64.square(), x64])  # (2D, N)
        return self._buffers["xx64"][:, a:b]

    def chunks(self, size: int):
        for a in range(0, self.N, size):
            yield a, min(a + size, self.N)


# ------------------------------------------------------------------------------------------------
# Covariance estimates: one small function per kind of covariance, picked by the family's name.
# ------------------------------------------------------------------------------------------------
def _scatter_full(ws: Workspace, means):
    """sum_n r_nk (x_n - mu_k)(x_n - mu_k)ᵀ, centred on the new means, (K, D, D)."""
    K, D = means.shape
    S = torch.zeros(K, D, D, dtype=means.dtype, device=means.device)
    Zb, Wb = ws.buffer("z", (K, D, ws.chunk)), ws.buffer("w", (K, D, ws.chunk))
    mu = means.unsqueeze(-1)  # (K, D, 1)
    for a, b in ws.chunks(ws.chunk):
        n = b - a
        Z = torch.sub(ws.XT[:, a:b], mu, out=Zb[:, :, :n])  # (K, D, n)
        W = torch.mul(Z, ws.RT[:, a:b].unsqueeze(1), out=Wb[:, :, :n])  # (K, D, n)
        S.baddbmm_(Z, W.mT)
    return S


# Largest tolerated ratio sum_n r x² / sum_n r (x - mu)² in the fast diagonal scatter: past it
# the float64 difference has lost more than 5 of its 16 digits and the component is recomputed
# centred. A component sits this far out only when it lies ~300 of its own standard deviations
# from the data's mean.
_MAX_CANCELLATION = 1e5


def _scatter_diag(ws: Workspace, means):
    """sum_n r_nk (x_nd - mu_kd)², (K, D), in the data's dtype.

    Fast path: the data are already centred on their global mean, so the moments
    ``A = sum_n r x²`` and ``B = sum_n r x`` are two (K, N) x (N, D) products, accumulated in
    float64 whatever the data's dtype (float32 values and their squares are exact in float64),
    and the scatter is ``A - B² / n_k + n_k (B / n_k - mu_k)²``. The difference cancels where a
    component is narrow and far from the global mean; every component whose ratio ``A / scatter`` exceeds
    ``_MAX_CANCELLATION`` in any coordinate (or whose scatter is not positive) is recomputed
    by the exact centred sum :func:`_scatter_diag_centred`. In float32 this is never the
    E[x²] - E[x]² of the data's own precision, which goes negative: the accumulation is in
    float64 and the guard bounds what cancellation can cost.
    """
    K, D = means.shape
    f64 = torch.float64
    A = torch.zeros(K, D, dtype=f64, device=means.device)
    B = torch.zeros(K, D, dtype=f64, device=means.device)
    n = torch.zeros(K, dtype=f64, device=means.device)
    for a, b in ws.chunks(ws.chunk_e):
        x = ws.XT[:, a:b].to(f64)  # (D, n); the data themselves when they are float64
        r = ws.RT[:, a:b].to(f64)  # (K, n)
        B.addmm_(r, x.T)
        A.addmm_(r, torch.square(x).T)  # not in place: x may be ws.XT
        n += r.sum(1)
    n = n.clamp_min(torch.finfo(f64).tiny).unsqueeze(-1)  # (K, 1)
    S = A - B.square() / n  # (K, D), about the weighted means B / n
    S += n * (B / n - means.to(f64)).square()  # about ``means`` (0 to rounding in the M-step)
    bad = (S * _MAX_CANCELLATION <= A).any(-1)  # (K,)
    if bool(bad.any()):
        idx = bad.nonzero().squeeze(-1)
        S[idx] = _scatter_diag_centred(ws, means[idx], idx).to(f64)
    return S.to(means.dtype)


def _scatter_diag_centred(ws: Workspace, means, components):
    """sum_n r_nk (x_nd - mu_kd)² for the listed ``components`` (with their ``means``),
    centred on the means: the squared norms of the rows of ``sqrt(r_k) ∘ (x - mu_k)``; N·K·D
    element-wise work, against the fast path's two products."""
    K, D = means.shape
    S = torch.zeros(K, D, dtype=means.dtype, device=means.device)
    Zb = ws.buffer("z", (K, D, ws.chunk))
    mu = means.unsqueeze(-1)  # (K, D, 1)
    for a, b in ws.chunks(ws.chunk):
        n = b - a
        r = ws.RT[components, a:b]  # (K, n)
        Z = torch.sub(ws.XT[:, a:b], mu, out=Zb[:, :, :n]).mul_(r.sqrt_().unsqueeze(1))
        S += torch.linalg.vector_norm(Z, dim=-1).square_()  # (K, D)
    return S


def _cov_full(ws, nk, means, reg):
    D = means.shape[1]
    return _scatter_full(ws, means) / nk.reshape(-1, 1, 1) \
        + reg * torch.eye(D, dtype=means.dtype, device=means.device)  # (K, D, D)


def _cov_tied(ws, nk, means, reg):
    D = means.shape[1]
    return (_scatter_full(ws, means).sum(0, keepdim=True) / nk.sum()
            + reg * torch.eye(D, dtype=means.dtype, device=means.device))  # (1, D, D)


def _var_diagonal(ws, nk, means, reg):
    return _scatter_diag(ws, means) / nk.unsqueeze(-1) + reg  # (K, D)


def _var_isotropic(ws, nk, means, reg):
    return _var_diagonal(ws, nk, means, reg).mean(-1, keepdim=True)  # (K, 1)


def _var_shared_isotropic(ws, nk, means, reg):
    D = means.shape[1]
    return (_scatter_diag(ws, means).sum() / (nk.sum() * D) + reg).reshape(1, 1)  # (1, 1)


COVARIANCE = {"full": _cov_full, "tied": _cov_tied, "diagonal": _var_diagonal,
               "isotropic": _var_isotropic, "shared_isotropic": _var_shared_isotropic}
