"""Weighted moments of the data: the M-step's arithmetic, shared by EM and initialisation.

EM is a sum over the data: each block of rows contributes, for every component k, the
responsibility-weighted sums ::

    count_k  = sum_n r_nk
    first_k  = sum_n r_nk (x_n - c_k)
    second_k = sum_n r_nk (x_n - c_k)(x_n - c_k)ᵀ     (full, tied)
             = sum_n r_nk (x_n - c_k)²                 (the axis-aligned families, per feature)

about centres ``c_k``, accumulated in float64 whatever the data's dtype (:class:`Moments`).
From them, for any point ``m``, ``sum_n r_nk (x_n - m)(x_n - m)ᵀ = second - d firstᵀ - first dᵀ
+ count d dᵀ`` with ``d = m - c_k`` (:meth:`Moments.scatter_about`): the new means and their
scatter come out of ONE pass, so no (K, N) responsibility matrix is ever kept, and sums from
several blocks, loaders or processes simply add.

* full is centred on the current means (the E-step's), so the scatter is nearly ``second``
  itself: nothing cancels unless a mean moves by many of its own standard deviations in one
  step. The per-block product is a batched ``Z_kᵀ (r_k ∘ Z_k)`` with ``Z_k = X - c_k``.
  For float64 data (any data on a GPU) with ``D < 2K`` (``Workspace.triangle``) it is summed
  about the shift instead, as the axis-aligned families are: ONE (K, n) x (n, D + D(D+1)/2 + 1)
  product, ``r [x; x_i x_j (i <= j); 1]ᵀ``. The batched product's (D, n) x (n, D) pieces ran at a
  third of the speed of one wide product (measured, 1 and 2 threads: 2.8-3.3x faster sums
  at (K, D) = (8, 8), (16, 16), 3.3-6x at (64, 16); 0.75-1.1x at (16, 64) and 0.2x at
  (4, 128), where the D²/2 products per row cost more than the 2KD of the centred form,
  hence the rule). float32 data stay centred on a CPU: their batched product runs in float32,
  and the float64 wide one ran at 0.1-1.1x its speed below K = 64 (1.8-2.1x at (64, 16)). On a
  GPU, where float64 products are not slower in the same way and the batched product's long
  thin pieces are, float32 takes the wide product too: on an H200, full float32 ran an
  iteration 1.8x and 1.5-2.3x faster this way than centred at (1e6, 2, 8) and (1e6, 16, 16),
  timed side by side (``benchmarks/results/cuda.md``). Where a GPU keeps the centred sums
  (``D + 1 > 2K``), each component's rows go in pieces of ``CUDA_PIECE``, one product per
  (component, piece) summed after: K long thin products left most of the device idle.
* tied needs only the scatter summed over the components, and about the data's mean its
  second moment is ``sum_n x xᵀ`` whatever the responsibilities (``pooled``): one (D, D) sum,
  kept for in-memory data. It cancels when the clusters are far apart next to their spread,
  which the guard also measures on the scatter's smallest eigenvalue (:meth:`Moments.suspect`).
* the axis-aligned families are centred on the point the data are shifted to (their mean):
  one (K, n) x (n, 2D + 1) product, ``r [x; x²; 1]ᵀ``, float32 values being exact in
  float64. That costs about ``D / 2`` times less than the centred sum, and cancels only for a
  component narrow and far from the data's mean. The isotropic families keep the second
  moment pooled over the features (``pooled``): ``sum r |x|²`` from the rows' squared norms.

Where the difference has lost more than 5 of float64's 16 digits (``second`` over the scatter
beyond ``_MAX_CANCELLATION`` in a coordinate), the caller repeats the pass for those components
only, centred on the new means (:meth:`Moments.suspect`), so every path is as accurate as the
centred sum: within about 1e-10 of ``sqrt(S_ii S_jj)`` in each entry (the scale that matters to
the Cholesky factor; a tiny off-diagonal is not accurate to its own size, in either form). :class:`Workspace` holds the data as the passes read them.
"""
from __future__ import annotations

import itertools

import torch

from .sources import Source

__all__ = ["Workspace", "Block", "Moments", "COVARIANCE", "scatter"]

# Largest tolerated ratio second / scatter (per variance): past it the float64 difference has
# lost more than 5 of its 16 digits and the component's sums are recomputed centred.
_MAX_CANCELLATION = 1e5
# Tied's and full's sums about the shift are redone for an ill-conditioned scatter when their
# difference is this many times larger than the centred sum's (Moments.suspect).
_MAX_EIGEN_LOSS = 2.0


class Block:
    """One block of rows: ``x`` (n, D) as given (read only), ``xt`` (D, n) shifted by the
    workspace's ``shift``, and the rows' positions ``a:b`` in the pass."""
    __slots__ = ("x", "xt", "a", "b", "_ws", "_memo", "_serial")

    def __init__(self, x, xt, a, b, ws):
        self.x, self.xt, self.a, self.b, self._ws = x, xt, a, b, ws
        self._memo = {}
        self._serial = next(ws._serials)  # unique in the workspace, pass after pass

    def float64(self) -> torch.Tensor:
        """The shifted rows ``xt`` (D, n) in float64 (float32 values are exact in it), made once
        per block: the tied family's E-step and its sums both read it."""
        x = self._memo.get("x64")
        if x is None:
            x = self._memo["x64"] = self.xt.to(torch.float64)
        return x

    def outer(self) -> torch.Tensor:
        """``sum_n x_n x_nᵀ`` of the shifted rows in float64, (D, D) (the tied family's second
        moment; for in-memory data :meth:`Workspace.outer` keeps the total instead)."""
        x = self.float64()  # (D, n)
        return x @ x.T

    def square_norms(self) -> torch.Tensor:
        """``|x_n|²`` of the shifted rows in float64, (n,) (the isotropic families' one data
        term besides ``x``): kept in the workspace for in-memory data (8 bytes a row; every
        pass cuts the same blocks), once per block of a stream (the E-step's and the sums')."""
        ws = self._ws
        kept = ws._buffers.setdefault("norms", {}) if ws.in_memory else self._memo
        if (self.a, self.b) not in kept:
            x = self.float64()  # (D, n)
            kept[self.a, self.b] = torch.linalg.vecdot(x, x, dim=0)
        return kept[self.a, self.b]

    def columns(self) -> torch.Tensor:
        """``[x; x²; 1]`` ((2D + 1, n); ``[x; |x|²; 1]``, (D + 2, n), for the workspace's
        ``pooled_columns``) of the shifted rows in float64, float32 values exact (the squares
        too): the axis-aligned families' sums are one product with it, and their E-step another
        (``gmmlib.em._EStep``). It lives in one buffer of the workspace, built once per block
        and again only when another block has used the buffer since (the E-step holds blocks
        for a while)."""
        ws = self._ws
        D, n = ws.D, self.xt.shape[1]
        S = 1 if ws.pooled_columns else D
        cols = ws.buffer("columns", ((D + S + 1) * ws.chunk,), torch.float64)
        cols = cols[:(D + S + 1) * n].view(D + S + 1, n)
        if ws._buffers.get("columns of") != self._serial:
            cols[:D].copy_(self.xt)
            if ws.pooled_columns:
                cols[D].copy_(self.square_norms())
            else:
                torch.square(cols[:D], out=cols[D:D + S])
            cols[-1].fill_(1.0)
            ws._buffers["columns of"] = self._serial
        return cols

    def triangle_columns(self) -> torch.Tensor:
        """``[x; x_i x_j (i <= j, row-major); 1]`` (D + D(D+1)/2 + 1, n) of the shifted rows, in
        float64 (the full family's sums about the shift, :class:`Moments`), in a buffer of
        the workspace: one product per row ``i`` of the triangle (D calls a block; a gather of
        both index rows ran 1.6x slower)."""
        ws, (D, n) = self._ws, self.xt.shape
        T = D * (D + 1) // 2
        cols = ws.buffer("triangle", ((D + T + 1) * ws.chunk,), torch.float64)
        cols = cols[:(D + T + 1) * n].view(D + T + 1, n)
        x = cols[:D]
        x.copy_(self.xt)
        o = D
        for i in range(D):
            torch.mul(x[i:], x[i], out=cols[o:o + D - i])
            o += D - i
        cols[-1].fill_(1.0)
        return cols


def _centred_rows(ws, K: int) -> int:
    """Rows whose (K, D, rows) temporaries hold about the workspace's budget of values."""
    return max(256, ws.budget // (K * ws.D))


# rows per piece of the full family's centred products on a GPU (Moments._add_centred): one
# (D, n) x (n, D) product per component kept an H200 on 32x32 tiles at ~9 TFLOP/s; pieces of
# 4096 rows ran full float32 EM 1.29x faster at (1e5, 64, 16), 1.23x at (1e5, 128, 8) and
# 4.4x at (1e6, 32, 8), side by side (benchmarks/results/gpu/session17). CPUs keep one
# product per component (pieces 0.91-0.94x at (2e4, 8..16, 4), 1.00-1.03x at (1e5, 64, 16)
# and (3e5, 32, 8): nothing to gain, measured on 2 threads).
CUDA_PIECE = 4096
CPU_PIECE = 0  # 0: one product per component

# values per temporary on a GPU, at most: 2^26 against 2^24 ran full float32 EM 1.06-1.68x
# faster on an H200 (fewer, larger kernels), diagonal 1.00-1.06x; bench_cuda.py compares them
CUDA_VALUES = 1 << 26


def _cuda_values(device) -> int:
    """Values per temporary on a GPU: the power of two at or below its memory in bytes / 512
    (a float64 temporary then takes at most 1/64 of the memory: 2^24 values on an 8 GiB card,
    2^26 from 32 GiB), within [2^22, CUDA_VALUES]."""
    total = torch.cuda.get_device_properties(torch.device(device)).total_memory
    return max(1 << 22, min(CUDA_VALUES, 1 << max(0, (total // 512).bit_length() - 1)))


def sums_about_shift(dtype: torch.dtype, cuda: bool, D: int, K: int) -> bool:
    """Whether the full family's sums take the one wide product about the shift
    (``Workspace.triangle``; the module docstring says when and why)."""
    return (dtype == torch.float64 or cuda) and D + 1 <= 2 * K


class Workspace:
    """The data as EM reads them, in blocks, and buffers reused by every pass.

    In-memory data are copied once, shifted by ``shift`` and transposed, ``XT`` (D, N): a block
    is the view ``XT[:, a:b]``, whose rows run along contiguous memory for the batched products
    (measured ~1.4x faster than the (n, D) layout). A stream's batches are shifted into a
    (D, n) array batch by batch, so memory stays flat whatever N is.

    Rows per block keep every (K, D, n) temporary of the full family near ``budget`` values
    (2^20 on a CPU: with the E-step's (K·D, n) products, at (1e5, 16, 16) 4096-8192 rows a
    block ran a pass 15-20% faster than 2048, at (1e5, 64, 16) 1024 rows 10% faster than 512
    or 2048, measured on 2 cores); the tied and axis-aligned families only make (K, n) and
    (D, n) temporaries, about 2^19 values a block (best at (1e5, 64, 16) and (1e6, 2, 8)).
    """

    def __init__(self, source, K: int, shift: torch.Tensor, family, chunk: int | None = None):
        if isinstance(source, torch.Tensor):  # a validated tensor (initialisation, scorers)
            source = Source.of_tensor(source)
        self.source, self.K, self.D = source, K, source.n_features
        D = self.D
        self.shift = shift  # (D,)
        self.dtype, self.device = source.dtype, source.device
        self.in_memory = source.in_memory
        # values per temporary: (K, D, n) ones (the full family's, and centred recomputations)
        cuda = torch.device(source.device).type == "cuda"
        self.budget = _cuda_values(source.device) if cuda else 1 << 20
        self.piece = CUDA_PIECE if cuda else CPU_PIECE  # rows per piece of the centred products
        if family.kind == "tril" and family.per_component:
            self.chunk = int(chunk or _centred_rows(self, K))
        else:  # (K, n) and (D, n) temporaries
            self.chunk = int(chunk or max(256, (self.budget if cuda else 1 << 19) // (K + D)))
        self._buffers = {}
        self._serials = itertools.count()
        # the axis-aligned families' float64 columns (Block.columns): [x; |x|²; 1] when each
        # component has one variance, [x; x²; 1] otherwise; the E-step and the sums both read them
        self.pooled_columns = family.kind == "std" and not family.per_feature
        # full's sums about the shift, from [x; x_i x_j (i <= j); 1] (module docstring)
        self.triangle = (family.kind == "tril" and family.per_component
                         and sums_about_shift(self.dtype, cuda, D, K))
        if self.in_memory:
            X = source.tensor
            self.X = X  # (N, D), the data as given, read (never written) by the centred E-step
            # always a new array: X may be the caller's own memory (as_data shares it), and
            # X.T.contiguous() IS that memory for one feature, one row or a transposed view
            self.XT = self._shifted_columns(X)
            self.chunk = min(self.chunk, max(1, X.shape[0]))

    def _shifted_columns(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - shift)ᵀ`` (D, n) of rows ``x`` (n, D), a new array, written in slices of about
        2^16 values on a CPU: one transposing subtraction over (1e5, 64) float32 ran 3x slower
        (28-37 ms against 9-10, measured; for D = 2 or 16 the slices cost 1 ms more than one).
        Elsewhere in one call."""
        n = x.shape[0]
        out = torch.empty(self.D, n, dtype=self.dtype, device=self.device)
        step = max(1, (1 << 16) // self.D if out.device.type == "cpu" else n)
        for a in range(0, n, step):
            torch.sub(x[a:a + step].T, self.shift.unsqueeze(-1), out=out[:, a:a + step])
        return out

    def outer(self) -> torch.Tensor:
        """``sum_n x_n x_nᵀ`` of all the in-memory data, shifted, in float64 (D, D): computed
        block by block once, then kept (the tied family's second moment about the shift,
        which does not depend on the responsibilities)."""
        if "outer" not in self._buffers:
            total = torch.zeros(self.D, self.D, dtype=torch.float64, device=self.device)
            for block in self.blocks():
                total += block.outer()
            self._buffers["outer"] = total
        return self._buffers["outer"]

    @property
    def N(self) -> int | None:
        return self.source.n_rows

    def buffer(self, name: str, shape, dtype=None) -> torch.Tensor:
        """A scratch array kept between blocks and passes (new when the shape or the dtype
        changes: the E-step's log-densities are float64 in some passes of a float32 fit)."""
        b = self._buffers.get(name)
        dtype = dtype or self.dtype
        if b is None or b.shape != tuple(shape) or b.dtype != dtype:
            b = self._buffers[name] = torch.empty(shape, dtype=dtype, device=self.device)
        return b

    def blocks(self):
        """Every row once, as :class:`Block` s of at most ``chunk`` rows."""
        size = self.chunk
        if self.in_memory:
            for a in range(0, self.XT.shape[1], size):
                b = min(a + size, self.XT.shape[1])
                yield Block(self.X[a:b], self.XT[:, a:b], a, b, self)
            return
        start = 0
        for batch in self.source:
            n = batch.shape[0]
            # a new array per batch (never a reused buffer: the E-step holds blocks a while)
            xt = self._shifted_columns(batch)  # (D, n)
            for a in range(0, n, size):
                b = min(a + size, n)
                yield Block(batch[a:b], xt[:, a:b], start + a, start + b, self)
            start += n


class Moments:
    """Responsibility-weighted sums about centres ``c_k`` (module docstring), float64.

    ``centre`` (K', D) is in the workspace's shifted coordinates; ``None`` means the shift
    itself (zero), which the axis-aligned families' two-product path needs. ``components``
    restricts the sums to those components (a recomputation). ``second=False`` keeps only
    counts and first moments (the constant family). ``pooled=True`` keeps only what a shared
    or isotropic covariance needs: for the std kind the second moment averaged over the
    features, ``sum_n r_nk mean_d (x_nd - c_kd)²`` (K', 1); for the tril kind (tied) its sum
    over the components, ``sum_k sum_n r_nk (x_n - c_k)(x_n - c_k)ᵀ`` (1, D, D), which about
    the shift is ``sum_n x_n x_nᵀ`` (the responsibilities of a row sum to 1: they are
    renormalised in float64 to make that exact), one (D, n) x (n, D) product per block instead
    of K.
    """

    @classmethod
    def of(cls, ws: Workspace, family, centre=None, *, components=None) -> "Moments":
        """The sums the M-step of ``family`` needs, about ``centre``."""
        pooled = not family.per_feature if family.kind == "std" else not family.per_component
        return cls(ws, family.kind, centre, components=components, second=family.learned,
                   pooled=pooled)

    def __init__(self, ws: Workspace, kind: str, centre=None, *, components=None,
                 second: bool = True, pooled: bool = False):
        K = ws.K if components is None else len(components)
        D, f64, dev = ws.D, torch.float64, ws.device
        self.ws, self.kind, self.components = ws, kind, components
        self.centre = centre  # (K', D) or None
        self.count = torch.zeros(K, dtype=f64, device=dev)  # (K',)
        self.first = torch.zeros(K, D, dtype=f64, device=dev)  # (K', D)
        if kind == "tril" and pooled and components is not None:
            raise ValueError("the pooled (tied) sums are over all the components")
        shape = (1 if pooled else K, D, D) if kind == "tril" else (K, 1 if pooled else D)
        self.pooled = pooled and second
        self.second = torch.zeros(shape, dtype=f64, device=dev) if second else None
        self._tied_about_shift = kind == "tril" and pooled and centre is None
        if kind == "tril" and not pooled and centre is None:  # full about the shift
            if components is not None or not second:
                raise ValueError("the full family's sums about the shift are over every component")
            i, j = torch.triu_indices(D, D, device=dev)  # the triangle's (i, j), row-major
            lower = i < j  # and their mirror images below the diagonal
            self._to_square = torch.cat([i * D + j, (j * D + i)[lower]])  # (T + T - D,)
            self._from_triangle = torch.cat([torch.arange(len(i), device=dev),
                                             lower.nonzero().squeeze(-1)])
        if self._tied_about_shift and second and ws.in_memory:  # the whole pass's, at once
            self.second[0] = ws.outer()
        self.log_lik = torch.zeros((), dtype=f64, device=dev)  # the E-step's, when it adds it

    def add(self, block: Block, r: torch.Tensor) -> None:
        """Add a block's sums; ``r`` (K, n) are its responsibilities (read, never written), in
        the data's dtype or float64."""
        if self.components is not None:
            r = r[self.components]
        r = r.contiguous()  # the E-step's already is; a strided one runs the products 3-6x slower
        f64 = torch.float64
        if self._tied_about_shift:  # sum_n x xᵀ whatever r (in-memory: added at the start)
            r64 = r.to(f64)
            r64 = r64 / r64.sum(0)  # each point's sum to 1 (float32's to ~1e-7); r is read only
            self.count += r64.sum(1)
            self.first.addmm_(r64, block.float64().T)
            if self.second is not None and not self.ws.in_memory:
                self.second[0] += block.outer()
            return
        if self.centre is None and self.kind == "tril":  # full, about the shift (triangle)
            D = self.first.shape[1]
            sums = r.to(f64) @ block.triangle_columns().T  # (K', D + T + 1)
            self.first += sums[:, :D]
            # x_i x_j (i <= j) into both triangles of (K', D, D): one index_add_ a block
            self.second.view(len(sums), D * D).index_add_(1, self._to_square, sums[:, D:-1][:, self._from_triangle])
            self.count += sums[:, -1]
            return
        if self.centre is None:  # about the shift: ONE product, r [x; x²; 1]ᵀ (or [x; |x|²; 1])
            # with the block's float64 columns: measured 1.3-1.7x faster than a product and a
            # sum for each of the three, with new float64 copies of the block
            D = self.first.shape[1]
            sums = r.to(f64) @ block.columns().T  # (K', D + S + 1)
            self.first += sums[:, :D]
            if self.second is not None:  # second moment: mean_d x_d² (pooled) or x²
                self.second += sums[:, D:-1] / D if self.pooled else sums[:, D:-1]
            self.count += sums[:, -1]
            return
        self.count += r.sum(1, dtype=f64)
        # the centred sums make (K', D, n) temporaries: rows of a block a slice at a time, in
        # buffers sized for a whole block (a ragged last block must not resize them, or every
        # pass would allocate them twice more)
        rows = min(self.ws.chunk, _centred_rows(self.ws, r.shape[0]))
        for a in range(0, r.shape[1], rows):
            self._add_centred(block.xt[:, a:a + rows], r[:, a:a + rows], rows)

    def _add_centred(self, xt: torch.Tensor, r: torch.Tensor, rows: int) -> None:
        ws, n = self.ws, xt.shape[1]
        piece = ws.piece if self.kind == "tril" else 0
        s = n // piece if piece else 0
        if s < 2:
            self._add_pieces(xt, r, 1, n, rows)
            return
        # on a GPU: each component's rows in pieces, one (D, piece) x (piece, D) product per
        # (component, piece), the pieces summed after (a split-K GEMM, written out); the rows
        # short of a whole piece as one more product
        self._add_pieces(xt[:, :s * piece], r[:, :s * piece], s, piece, rows)
        if s * piece < n:
            self._add_pieces(xt[:, s * piece:], r[:, s * piece:], 1, n - s * piece, rows)

    def _add_pieces(self, xt: torch.Tensor, r: torch.Tensor, s: int, m: int, rows: int) -> None:
        """The centred sums of ``s`` pieces of ``m`` rows each (``xt`` (D, s·m), ``r`` (K', s·m)):
        (K', s, D, m) temporaries in the buffers, their products summed over the pieces."""
        ws, f64, K, D = self.ws, torch.float64, r.shape[0], self.ws.D
        size = K * s * D * m
        Z = ws.buffer("z", (K * D * rows,))[:size].view(K, s, D, m)
        torch.sub(xt.reshape(D, s, m).transpose(0, 1), self.centre.view(K, 1, D, 1), out=Z)
        W = ws.buffer("w", (K * D * rows,))[:size].view(K, s, D, m)
        torch.mul(Z, r.reshape(K, s, 1, m), out=W)
        Zb, Wb = Z.view(K * s, D, m), W.view(K * s, D, m)
        if self.kind == "tril":
            # sum_n r (x - c) as a batched (1, n) x (n, D) product: 2-4x faster than W.sum(-1)
            first = torch.bmm(r.reshape(K * s, 1, m), Zb.mT).view(K, s, D)
            self.first += first.sum(1, dtype=f64) if s > 1 else first.squeeze(1).to(f64)
        else:
            self.first += W.sum((1, 3), dtype=f64)
        if self.second is None:
            return
        if self.kind == "tril":
            if self.pooled:
                self.second += torch.bmm(Zb, Wb.mT).sum(0, keepdim=True, dtype=f64)  # (1, D, D)
            elif s > 1:
                self.second += torch.bmm(Zb, Wb.mT).view(K, s, D, D).sum(1, dtype=f64)
            elif Z.dtype == f64:
                self.second.baddbmm_(Zb, Wb.mT)
            else:
                self.second += torch.bmm(Zb, Wb.mT).to(f64)  # (K', D, D)
        else:
            sq = (W * Z).sum((1, 3), dtype=f64)  # (K', D)
            self.second += sq.mean(-1, keepdim=True) if self.pooled else sq

    def vector(self) -> torch.Tensor:
        """Every sum in one flat float64 tensor (one all-reduce across processes)."""
        parts = [self.count, self.first.flatten(), self.log_lik.reshape(1)]
        if self.second is not None:
            parts.append(self.second.flatten())
        return torch.cat(parts)

    def load(self, flat: torch.Tensor) -> None:
        """Set every sum from :meth:`vector`'s layout."""
        K, D = self.first.shape
        self.count.copy_(flat[:K])
        self.first.copy_(flat[K:K + K * D].view(K, D))
        self.log_lik.copy_(flat[K + K * D])
        if self.second is not None:
            self.second.copy_(flat[K + K * D + 1:].view(self.second.shape))

    def _centre64(self) -> torch.Tensor:
        c = self.centre
        return torch.zeros_like(self.first) if c is None else c.to(torch.float64)

    def means(self, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``n_k = count_k + 10 eps`` (scikit-learn's) and the weighted means
        ``sum_n r_nk x_n / n_k`` in shifted coordinates, float64: (K',), (K', D)."""
        nk = self.count + 10 * eps
        return nk, (self.first + self.count.unsqueeze(-1) * self._centre64()) / nk.unsqueeze(-1)

    def scatter_about(self, m: torch.Tensor) -> torch.Tensor:
        """``sum_n r_nk (x_n - m_k)(x_n - m_k)ᵀ`` (K', D, D), or its diagonal (K', D), float64;
        ``m`` (K', D) in shifted coordinates."""
        d = m.to(torch.float64) - self._centre64()  # (K', D)
        S, F, c = self.second, self.first, self.count
        if self.kind == "tril":
            cross = d.unsqueeze(-1) * F.unsqueeze(-2)  # (K', D, D): d Fᵀ
            correction = cross + cross.mT - c.reshape(-1, 1, 1) * d.unsqueeze(-1) * d.unsqueeze(-2)
            return S - (correction.sum(0, keepdim=True) if self.pooled else correction)
        correction = 2.0 * d * F - c.unsqueeze(-1) * d.square()  # (K', D)
        return S - (correction.mean(-1, keepdim=True) if self.pooled else correction)

    def suspect(self, scatter: torch.Tensor) -> torch.Tensor:
        """Components whose scatter (from :meth:`scatter_about`) lost more than 5 digits to
        cancellation, or came out non-positive while the sums are not zero: indices (K",).

        Tied's and full's sums about the shift (the data's mean) are also redone when the
        difference costs the scatter's smallest eigenvalue more than 1e-9 of itself and more
        than twice what the centred sum would: the difference loses about
        ``u max_d second_dd`` in every direction (the centred sum ``u max_d scatter_dd``),
        which an ill-conditioned covariance's smallest eigenvalue feels first. (A gate of 10x,
        "a digit", let a component 3 of its deviations out lose 27x more of it than the
        centred sum, and EM drift 1.2e-8 from scikit-learn at a condition number of 1e8.)
        """
        S = self.second
        s2, sc = (S.diagonal(dim1=-2, dim2=-1), scatter.diagonal(dim1=-2, dim2=-1)) \
            if self.kind == "tril" else (S, scatter)
        bad = ((s2 > 0) & (sc * _MAX_CANCELLATION <= s2)).any(-1)  # (K',)
        if self.kind == "tril" and self.centre is None:
            big = s2.amax(-1)  # (K',) or (1,)
            cancelled = (big > _MAX_EIGEN_LOSS * sc.amax(-1)) & ~bad  # only those need an eigenvalue
            if bool(cancelled.any()):
                smallest = torch.linalg.eigvalsh(scatter[cancelled])[..., 0]
                bad[cancelled] = torch.finfo(torch.float64).eps * big[cancelled] > 1e-9 * smallest
        return bad.nonzero().squeeze(-1)


def scatter(m: Moments, means: torch.Tensor, repass) -> torch.Tensor:
    """``sum_n r_nk (x_n - mu_k)(x_n - mu_k)ᵀ`` (or its diagonal) about ``means`` (K, D,
    shifted), float64, from the sums ``m``; components whose difference cancelled are summed
    again centred on their means by ``repass(components, centres) -> Moments``."""
    S = m.scatter_about(means)
    bad = m.suspect(S)
    if bad.numel() and m.kind == "tril" and m.pooled:  # tied: every component, centred
        return repass(None, means.to(m.ws.dtype)).scatter_about(means)
    if bad.numel():
        again = repass(bad, means[bad].to(m.ws.dtype))
        S[bad] = again.scatter_about(means[bad])
    return S


# ------------------------------------------------------------------------------------------------
# Covariance estimates from the scatter about the means: one small function per kind of
# covariance, picked by the family's name. ``scatter`` (K, D, D) or (K, D), ``nk`` (K,).
# ------------------------------------------------------------------------------------------------
def _cov_full(scatter, nk, reg):
    D = scatter.shape[-1]
    return scatter / nk.reshape(-1, 1, 1) + reg * torch.eye(D, dtype=scatter.dtype, device=scatter.device)


def _cov_tied(scatter, nk, reg):
    D = scatter.shape[-1]
    return (scatter.sum(0, keepdim=True) / nk.sum()
            + reg * torch.eye(D, dtype=scatter.dtype, device=scatter.device))  # (1, D, D)


def _var_diagonal(scatter, nk, reg):
    return scatter / nk.unsqueeze(-1) + reg  # (K, D)


def _var_isotropic(scatter, nk, reg):
    return _var_diagonal(scatter, nk, reg).mean(-1, keepdim=True)  # (K, 1)


def _var_shared_isotropic(scatter, nk, reg):
    D = scatter.shape[-1]
    return (scatter.sum() / (nk.sum() * D) + reg).reshape(1, 1)  # (1, 1)


COVARIANCE = {"full": _cov_full, "tied": _cov_tied, "diagonal": _var_diagonal,
              "isotropic": _var_isotropic, "shared_isotropic": _var_shared_isotropic}
