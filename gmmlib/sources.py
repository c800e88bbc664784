"""Data as the fits read them: an in-memory tensor, or a stream of row batches.

EM and the scorers read the data in row blocks, so they accept, besides a tensor or an array,
any *re-iterable* source of batches: a ``torch.utils.data.DataLoader`` (batches may be tensors,
or tuples whose first element is the data, as a ``TensorDataset`` yields), an
``IterableDataset``, a list of arrays, or a NumPy ``memmap`` (read in blocks of
``MEMMAP_ROWS`` = 65536 rows). The fits read the data once per pass, so a one-shot iterator
(a generator) is refused. A plain ``DataLoader`` over a ``TensorDataset`` (its own
``BatchSampler``, default collate, no worker processes) is read batch by batch by index,
with that batch sampler, not row by row: unshuffled, as slices; with ``pin_memory=True``,
into pinned memory, as the loader would.

:func:`as_source` validates at the edge: a tensor once, a stream batch by batch on its first
pass (shape, dtype, NaN/inf, the same checks as ``gmmlib._validation.as_data``), and later
passes only convert each batch to the model's dtype and device. Nothing here writes to the
caller's data.
"""
from __future__ import annotations

import collections.abc

import numpy as np
import torch

from ._validation import as_data, numeric_array

__all__ = ["Source", "as_source", "is_stream", "survey"]

# Rows per block read from a memmap: 2^16 rows of 64 float64 features is 32 MB.
MEMMAP_ROWS = 1 << 16


def is_stream(X) -> bool:
    """Whether ``X`` is read as a stream of batches rather than as one array."""
    if isinstance(X, (torch.Tensor, np.memmap)):
        return isinstance(X, np.memmap)
    if isinstance(X, np.ndarray) or hasattr(X, "__array__") or hasattr(X, "tocsr"):
        return False  # arrays, pandas frames, sparse matrices (refused by as_data)
    if isinstance(X, (list, tuple)):  # a list of arrays is a stream; a list of rows an array
        return len(X) > 0 and all(_batch_like(b) for b in X)
    return isinstance(X, torch.utils.data.Dataset) or hasattr(X, "__iter__")


def _batch_like(b) -> bool:
    if isinstance(b, (list, tuple)):
        return len(b) > 0 and _batch_like(b[0]) and isinstance(b[0], (torch.Tensor, np.ndarray))
    return isinstance(b, (torch.Tensor, np.ndarray)) and b.ndim == 2


class Source:
    """Row blocks of validated data, (n, D), on the model's dtype and device.

    ``tensor`` is the whole data when they are in memory (``None`` for a stream); ``n_rows`` is
    the number of rows, known for a tensor and after the first full pass of a stream. Blocks may
    share memory with the caller's data: never write to them.
    """

    def __init__(self, *, tensor=None, batches=None, n_features, dtype, device, name="X"):
        self.tensor, self._batches = tensor, batches
        self.n_features, self.dtype, self.device, self.name = n_features, dtype, device, name
        self.n_rows = None if tensor is None else tensor.shape[0]
        self._validated = tensor is not None

    @classmethod
    def of_tensor(cls, X: torch.Tensor, name: str = "X") -> "Source":
        """In-memory data ``X`` (N, D) that were validated already, as a source."""
        return cls(tensor=X, n_features=X.shape[1], dtype=X.dtype, device=X.device, name=name)

    @property
    def in_memory(self) -> bool:
        return self.tensor is not None

    def __iter__(self):
        if self.tensor is not None:
            yield self.tensor
            return
        rows = 0
        for i, batch in enumerate(self._batches()):
            x = _unwrap(batch, self.name, i)
            if getattr(x, "ndim", None) == 1:  # a row, not a batch of rows
                raise ValueError(f"{self.name} batch {i} is 1-D, shape {tuple(x.shape)}, but each "
                                 "batch must be 2-D (n_samples, n_features): a DataLoader with "
                                 "batch_size=None yields single rows (give it a batch_size); "
                                 "batches of one feature need x.reshape(-1, 1)")
            if self._validated:
                if not isinstance(x, torch.Tensor):
                    x = torch.from_numpy(numeric_array(x, f"{self.name} batch {i}"))
                if x.ndim != 2 or x.shape[1] != self.n_features:  # cheap: the data may change
                    x = as_data(x, n_features=self.n_features, name=f"{self.name} batch {i}")
                # detached: a batch computed by the caller's network (or a leaf that requires
                # grad) must not take part in fit_gd's backward pass (as_data detaches too).
                # Asynchronous only onto a GPU, where the stream orders the copy before the
                # kernels that read it: a copy from a GPU into host memory may return before
                # the data are there, and the CPU would read whatever was in the memory
                onto_gpu = torch.device(self.device).type == "cuda" and x.device.type == "cpu"
                x = x.detach().to(device=self.device, dtype=self.dtype, non_blocking=onto_gpu)
            else:
                x = as_data(x, n_features=self.n_features, dtype=self.dtype, device=self.device,
                            min_rows=0, name=f"{self.name} batch {i}")
            if x.shape[0]:
                rows += x.shape[0]
                yield x
        if not self._validated:
            self.n_rows, self._validated = rows, True
        elif rows != self.n_rows:
            remedy = ("it can be read only once (an IterableDataset whose __iter__ hands out "
                      "the same generator every time?): make each iteration start a new pass"
                      if rows == 0 else "shuffling is fine, dropping rows is not (set "
                      "drop_last=False on the DataLoader)")
            raise ValueError(f"{self.name} yielded {rows} rows on this pass but {self.n_rows} on "
                             "the first: the fits read the data once per pass and need the same "
                             f"data every pass; {remedy}")


def _unwrap(batch, name: str, i: int):
    """The data of one batch: a tensor or array, or the first element of a tuple/list."""
    if isinstance(batch, (list, tuple)):
        if not batch:
            raise ValueError(f"{name} batch {i} is an empty {type(batch).__name__}; each batch must "
                             "be a tensor or array (n, D), or a tuple whose first element is one")
        batch = batch[0]
    if isinstance(batch, dict):
        raise ValueError(f"{name} batch {i} is a dict; pass batches that are tensors (n, D) or "
                         "tuples whose first element is the data (as TensorDataset yields), "
                         "for instance with a collate_fn that returns the data tensor")
    return batch


def _dropped_rows(X) -> tuple[int | None, int | None] | None:
    """``(rows, rows left out per pass)`` of a DataLoader whose batch sampler drops a short
    last batch (``DataLoader(drop_last=True)``, or a ``BatchSampler(drop_last=True)`` given as
    its sampler or batch_sampler) of a sized dataset, ``(None, None)`` for an IterableDataset
    (it may drop rows, every pass alike, unseen); None when it drops nothing."""
    if not isinstance(X, torch.utils.data.DataLoader):
        return None
    batches = X.batch_sampler if X.batch_sampler is not None else X.sampler
    if not isinstance(batches, torch.utils.data.BatchSampler) or not batches.drop_last:
        return None
    try:
        n = len(batches.sampler)
    except TypeError:  # an IterableDataset: how many rows it drops cannot be known beforehand
        return (None, None)
    return (n, n % batches.batch_size) if n % batches.batch_size else None


def _varying_sampler(X):
    """The sampler of a DataLoader whose passes yield different rows, with why, else None: one
    that draws with replacement (``RandomSampler(replacement=True)``, ``WeightedRandomSampler``)
    or a random sampler whose ``num_samples`` is not a multiple of its population (a new subset
    every pass, or some rows once more than others). A shuffle of all the rows, or of them all
    k times over, yields the same rows every pass."""
    if not isinstance(X, torch.utils.data.DataLoader):
        return None
    for sampler in (X.sampler, X.batch_sampler):
        if isinstance(sampler, torch.utils.data.BatchSampler):  # batches of its own sampler's rows
            sampler = sampler.sampler
        if getattr(sampler, "replacement", False):  # the attribute both torch samplers have
            return sampler, "draws rows with replacement"
        if isinstance(sampler, torch.utils.data.RandomSampler):
            population = len(sampler.data_source)
        elif isinstance(sampler, torch.utils.data.WeightedRandomSampler):
            population = len(sampler.weights)
        else:
            continue
        if sampler.num_samples % population:  # (a multiple: every row as often, each pass)
            return sampler, (f"draws num_samples={sampler.num_samples} of its {population} rows "
                             "at random")
    return None


def _gathers(X) -> bool:
    """Whether ``X`` is a plain ``DataLoader`` over a ``TensorDataset`` that batches with its
    own ``BatchSampler`` and default collate in this process: its batches can then be read by
    index, as :func:`_gathered` does."""
    data = torch.utils.data
    # the stock BatchSampler only: its __iter__ is a generator, so making the loader's iterator
    # (which calls it) runs none of it, and _gathered's own pass draws what the loader's would;
    # a batch sampler that shuffles inside __iter__ itself would run twice
    return (type(X) is data.DataLoader and type(X.dataset) is data.TensorDataset
            and type(X.batch_sampler) is data.BatchSampler
            and X.collate_fn is data.default_collate and X.num_workers == 0)


def _gathered(loader):
    """The data of the batches ``loader`` (see :func:`_gathers`) yields (their first tensor:
    labels and other tensors are not read), the same rows in the same order, each gathered by
    one indexing: the DataLoader fetches a ``TensorDataset`` row by row and stacks the rows
    (9.4 s a pass over (1e6, 8) float32 in batches of 4096, against 0.4 s read by index,
    measured). Unshuffled batches are slices, not index lists (turning a list of 2^20 indices
    into a tensor took 0.23 s a batch on this machine's CPU, which was what an H200 fit from
    pinned memory waited on). With ``pin_memory=True`` (and an accelerator, as the loader
    asks) the batches are in pinned memory, as the loader's own would be, so their copies onto
    a GPU are asynchronous; a slice of data already pinned is not copied. The batch sampler
    is the loader's own, and the loader's iterator is made first, so a pass draws from torch's
    random generator what the loader's own pass would (its base seed, then a shuffling
    sampler's seed): the same shuffled order, and the same generator state after."""
    iter(loader)  # draws the pass's base seed; fetches nothing
    data = loader.dataset.tensors[0]  # the batch's first element, all a source reads (_unwrap)
    batches = loader.batch_sampler
    # the loader's own test (torch.accelerator is torch 2.6's; CUDA before it)
    accelerator = getattr(torch, "accelerator", torch.cuda)
    pin = loader.pin_memory and data.device.type == "cpu" and accelerator.is_available()
    if (type(batches.sampler) is torch.utils.data.SequentialSampler
            and batches.sampler.data_source is loader.dataset):  # rows 0, 1, ... in order
        n, size = len(loader.dataset), batches.batch_size
        if batches.drop_last:  # as_source refuses these loaders; kept exact all the same
            n -= n % size
        parts = (data[a:a + size] for a in range(0, n, size))
    else:
        parts = (data[torch.as_tensor(indices, dtype=torch.long)] for indices in batches)
    for x in parts:
        yield x.pin_memory() if pin else x


def as_source(X, *, n_features, dtype, device, min_rows=1, name="X") -> Source:
    """``X`` as a :class:`Source`: a validated tensor (checked once, now) or a stream (checked
    batch by batch on its first pass).

    Raises
    ------
    ValueError
        As ``gmmlib._validation.as_data`` for arrays; for an iterator that can be read
        only once; for a map-style ``Dataset`` that is not wrapped in a ``DataLoader``; for a
        ``DataLoader`` whose ``drop_last=True`` leaves rows out of every pass; for a
        ``DataLoader`` whose sampler draws rows with replacement, or a number of rows
        that is not a multiple of those it has.
    """
    if not is_stream(X):
        t = as_data(X, n_features=n_features, dtype=dtype, device=device, min_rows=min_rows,
                    name=name)
        return Source.of_tensor(t, name)
    if isinstance(X, np.memmap):
        if X.ndim != 2:
            as_data(X[:1] if X.ndim > 2 else X, name=name)  # raises the 2-D message
        batches = lambda: (X[a:a + MEMMAP_ROWS] for a in range(0, X.shape[0], MEMMAP_ROWS))  # noqa: E731
    elif isinstance(X, torch.utils.data.Dataset) and not isinstance(X, torch.utils.data.IterableDataset):
        raise ValueError(f"{name} is a map-style Dataset ({type(X).__name__}), which yields one "
                         "row at a time; wrap it in torch.utils.data.DataLoader(dataset, "
                         "batch_size=4096) to read it in batches")
    elif dropped := _dropped_rows(X):
        n, r = dropped
        lost = (f"leaves out {r} of its {n} rows on every pass (others on each pass when it "
                "shuffles)") if n is not None else "leaves out a short last batch of its dataset"
        raise ValueError(f"{name} is a DataLoader with drop_last=True, which {lost}, but the "
                         "fits and scorers read all the data every pass; set drop_last=False (a "
                         "short last batch is fine)")
    elif (varying := _varying_sampler(X)) is not None:
        sampler, why = varying
        raise ValueError(f"{name} is a DataLoader whose sampler ({type(sampler).__name__}) {why}, "
                         "so each pass yields different rows (some twice, some not at all), but "
                         "the fits and scorers need the same rows every pass; use a sampler of "
                         "all the rows without replacement (shuffle=True or RandomSampler("
                         "replacement=False) is fine: the same rows in a new order)")
    elif isinstance(X, collections.abc.Iterator):
        raise ValueError(f"{name} is an iterator ({type(X).__name__}), which can be read only "
                         "once, but the fits read the data once per pass: pass a re-iterable "
                         "source (a DataLoader, an IterableDataset, a list of arrays, a memmap)")
    elif _gathers(X):
        batches = lambda: _gathered(X)  # noqa: E731
    else:
        batches = lambda: iter(X)  # noqa: E731
    return Source(batches=batches, n_features=n_features, dtype=dtype, device=device, name=name)


#: Rows :func:`survey` reads at a time: its float64 draws and indices for a piece are about 40
#: bytes a row (an in-memory tensor of 2e7 rows made 629 MB of them at once, for 80 MB of data)
_SURVEY_PIECE = 1 << 16


def survey(source: Source, size: int, generator: torch.Generator | None, *, sums: bool = True):
    """One pass over ``source``: the float64 sum of its rows (D,) (zeros with ``sums=False``)
    and, with a ``generator``, a uniform random sample of ``min(size, N)`` rows (Vitter's
    algorithm R; every row, in order, when ``N <= size``), else None. Completes a stream's first
    pass (validation, ``n_rows``). Batches are read in pieces of at most ``_SURVEY_PIECE`` rows,
    so its temporaries stay small whatever a batch's size (an in-memory tensor is one batch);
    on a CPU the sample does not depend on how the rows are batched."""
    total = torch.zeros(source.n_features, dtype=torch.float64, device=source.device)
    kept, seen, buf = [], 0, None
    for x in (piece for batch in source for piece in batch.split(_SURVEY_PIECE)):
        if sums:
            total += x.sum(0, dtype=torch.float64)
        if generator is None:
            continue
        if buf is None:  # still filling the reservoir with the first rows
            take = min(size - seen, x.shape[0])
            kept.append(x[:take].clone())
            seen += take
            x = x[take:]
            if seen == size:
                buf = torch.cat(kept)
            if not x.shape[0]:
                continue
        # row i (0-based, i >= size) replaces slot j ~ U{0..i} when j < size; later rows win
        n = x.shape[0]
        i = torch.arange(seen, seen + n, dtype=torch.float64)
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device).cpu()
        j = (u * (i + 1)).floor().long().numpy()
        rows = np.nonzero(j < size)[0]
        if rows.size:
            slots, last = np.unique(j[rows][::-1], return_index=True)  # the last writer wins
            src = torch.from_numpy(rows[::-1][last].copy()).to(x.device)
            buf[torch.from_numpy(slots).to(x.device)] = x[src]
        seen += n
    if generator is None:
        return total, None
    if not kept:  # no rows at all: the caller's "n_samples >= n_components" check names it
        return total, torch.empty(0, source.n_features, dtype=source.dtype, device=source.device)
    return total, buf if buf is not None else torch.cat(kept)
