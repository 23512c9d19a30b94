"""Scoring dask arrays, on one machine or a ``dask.distributed`` cluster.

``score(logits, target, k=5)`` scores every block of rows where the data lives (one
task per block, each calling the compiled kernels) and merges the blocks' exact totals
in a tree: the summary is exactly that of :func:`xent_fast.score` on the whole arrays,
on whatever scheduler is active (threads, processes, or a ``distributed.Client``).
``from_npy(path)`` opens an ``.npy`` file as a dask array whose tasks each read their
own rows, so a file on storage that the workers share is never sent over the network.

Needs ``pip install 'xent_fast[dask]'`` (dask[array] and distributed), on the client
and on every worker.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ._io import ArrayFile, first_invalid_target, read_block
from ._score import ScoreTotals, _check_k, score_totals
from ._validation import check_int64

__all__ = ["score", "from_npy"]


def _import_dask() -> Any:
    try:
        import dask
        import dask.array
    except ImportError:
        raise ImportError("xent_fast.dask needs dask: pip install 'xent_fast[dask]'") from None
    return dask


def _block_totals(x: np.ndarray, t: np.ndarray, k: int, ignore_index: int,
                  n_threads: int | None, offset: tuple[int, ...]) -> ScoreTotals:
    """One block's totals; an invalid target is reported at its position in the whole
    array (``offset``: the block's first index along each batch axis)."""
    try:
        return score_totals(x, t, k=k, ignore_index=ignore_index, n_threads=n_threads)
    except ValueError as exc:
        if "is not a valid class index" not in str(exc):
            raise
        t = np.asarray(t)
        flat = first_invalid_target(t, x.shape[-1], ignore_index)
        if flat is None:
            raise
        local = np.unravel_index(flat, t.shape) if t.ndim else ()
        pos = tuple(o + int(p) for o, p in zip(offset, local))
        where = "[" + ", ".join(map(str, pos)) + "]" if pos else ""
        raise ValueError(f"target{where} = {t[local] if t.ndim else t} is not a valid class "
                         f"index: it must be in [0, {x.shape[-1]}) or equal ignore_index "
                         f"({ignore_index})") from None


def _merge(*parts: ScoreTotals) -> ScoreTotals:
    return ScoreTotals.merge(parts)


def _summary(total: ScoreTotals, k: int) -> dict[str, Any]:
    if total.k is None:
        total.k = k
    return total.summary()


def score(logits: Any, target: Any, k: int = 5, *, ignore_index: int = -100,
          n_threads: int | None = 1, split_every: int = 8, compute: bool = True) -> Any:
    """The summary of :func:`xent_fast.score` for dask arrays, computed blockwise.

    Parameters
    ----------
    logits : dask.array.Array of shape (..., C)
        Floating logits, chunked along the rows (the leading axes). The class axis is
        rechunked into one chunk if it is not.
    target : dask.array.Array
        Class indices of shape ``logits.shape[:-1]`` or probabilities of the logits'
        shape; rechunked to the logits' row chunks if needed. NumPy arrays are accepted
        for either argument and wrapped.
    k, ignore_index : int
        As in :func:`xent_fast.score`.
    n_threads : int or None, default 1
        OpenMP threads of each task. Dask already runs tasks in parallel, so each task
        uses one thread; ``None`` lets each use the OpenMP default.
    split_every : int, default 8
        How many blocks' totals one task of the reduction tree merges.
    compute : bool, default True
        ``False`` returns a ``dask.delayed`` object of the summary instead.

    Returns
    -------
    dict
        The summary, exactly as ``xent_fast.score(logits, target, ...).summary()`` on
        the computed arrays would give it, whatever the chunks and the scheduler.

    Examples
    --------
    >>> import numpy as np, dask.array as da, xent_fast as xf
    >>> import xent_fast.dask as xfd
    >>> x = np.random.default_rng(0).normal(size=(1000, 10))
    >>> t = np.arange(1000) % 10
    >>> s = xfd.score(da.from_array(x, chunks=(128, 10)), da.from_array(t, chunks=128))
    >>> s == xf.score(x, t).summary()
    True
    """
    dask = _import_dask()
    da = dask.array
    x = logits if isinstance(logits, da.Array) else da.asarray(logits)
    t = target if isinstance(target, da.Array) else da.asarray(target)
    if x.dtype.kind != "f":
        raise TypeError(f"logits must be a floating array, got dtype {x.dtype}")
    # Arrays of unknown chunk sizes (after boolean indexing) learn them first: the shapes
    # must be known to pair the blocks. That computes the blocks once more.
    if any(math.isnan(n) for n in x.shape):
        x = x.compute_chunk_sizes()
    if any(math.isnan(n) for n in t.shape):
        t = t.compute_chunk_sizes()
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"logits must have a class axis of length >= 1, got shape {x.shape}")
    kk = _check_k(k)
    ignore = check_int64(ignore_index, "ignore_index")
    if not isinstance(split_every, int) or split_every < 2:
        raise ValueError(f"split_every must be an int >= 2, got {split_every!r}")
    if x.numblocks[-1] != 1:
        x = x.rechunk({x.ndim - 1: -1})
    batch = x.shape[:-1]
    if t.dtype.kind in "iu":
        if t.shape != batch:
            raise ValueError(f"target holds class indices and must have shape {batch}, "
                             f"got {t.shape}")
        if t.chunks != x.chunks[:-1]:
            t = t.rechunk(x.chunks[:-1])
    elif t.dtype.kind == "f":
        if t.shape == batch and t.shape != x.shape:
            raise TypeError(f"target has dtype {t.dtype} and the shape of class indices "
                            f"{batch}: class indices must be integers")
        if t.shape != x.shape:
            raise ValueError(f"target must be class indices of shape {batch} or "
                             f"probabilities of shape {x.shape}, got shape {t.shape}")
        if t.chunks != x.chunks:
            t = t.rechunk(x.chunks)
    else:
        raise TypeError(f"target must hold integer class indices or floating "
                        f"probabilities, got dtype {t.dtype}")

    x_blocks = x.to_delayed().reshape(-1)
    t_blocks = t.to_delayed().reshape(-1)
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in x.chunks[:-1]]
    index = np.ndindex(*x.numblocks[:-1]) if batch else iter([()])
    delayed = dask.delayed
    parts = [delayed(_block_totals, pure=True)(
                 xb, tb, kk, ignore, n_threads,
                 tuple(int(starts[a][i]) for a, i in enumerate(idx)))
             for xb, tb, idx in zip(x_blocks, t_blocks, index)]
    while len(parts) > 1:
        parts = [delayed(_merge, pure=True)(*parts[i:i + split_every])
                 for i in range(0, len(parts), split_every)]
    result = delayed(_summary, pure=True)(parts[0], kk)
    return result.compute() if compute else result


def _load_rows(path: str, offset: int, dtype: str, shape: tuple[int, ...], start: int,
               stop: int) -> np.ndarray:
    # Plain reads, not a memory map: a file cut short meanwhile is an error, not SIGBUS.
    row = math.prod(shape[1:]) * np.dtype(dtype).itemsize
    return read_block(path, offset + start * row, np.dtype(dtype),
                      (stop - start,) + tuple(shape[1:]))


def from_npy(path: str, rows_per_chunk: int | None = None) -> Any:
    """An ``.npy`` file as a dask array chunked along its first axis, each chunk read
    from the file by the task that needs it (workers need the same path).

    Parameters
    ----------
    path : str
        The file, on storage every worker can read at that path; or an uncompressed
        ``.npz`` member as ``FILE.npz:NAME``.
    rows_per_chunk : int, optional
        Length of the chunks along the first axis; by default about 128 MiB each.

    Returns
    -------
    dask.array.Array
        The file's array, read lazily chunk by chunk.

    Raises
    ------
    ValueError
        If ``path`` is not a regular file holding a valid array readable by rows (not
        compressed, C order); the tasks raise it too if the file is cut short later.

    Examples
    --------
    >>> import numpy as np, tempfile, os, xent_fast.dask as xfd
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.arange(12.0).reshape(6, 2))
    >>> a = xfd.from_npy(path, rows_per_chunk=4)
    >>> a.chunks, float(a.sum().compute())
    (((4, 2), (2,)), 66.0)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if rows_per_chunk is not None:
        if isinstance(rows_per_chunk, bool) or not isinstance(rows_per_chunk, (int, np.integer)):
            raise TypeError(f"rows_per_chunk must be a positive int, got "
                            f"{type(rows_per_chunk).__name__}")
        if rows_per_chunk < 1:
            raise ValueError(f"rows_per_chunk must be a positive int, got {rows_per_chunk!r}")
    dask = _import_dask()
    da = dask.array
    with ArrayFile(os.fspath(path), "path", ()) as f:
        shape, dtype, fortran, offset, file = f.shape, f.dtype, f.fortran, f.data_offset, f.path
    if offset is None:
        raise ValueError(f"{path}: a compressed .npz member cannot be read by rows")
    if not shape:
        raise ValueError(f"{path} holds a 0-d array")
    if fortran and len(shape) > 1:
        raise ValueError(f"{path} is stored in Fortran order; save it in C order")
    row_bytes = max(1, math.prod(shape[1:]) * dtype.itemsize)
    rows = max(1, (128 * 2**20) // row_bytes) if rows_per_chunk is None else int(rows_per_chunk)
    blocks = [da.from_delayed(dask.delayed(_load_rows, pure=True)(
                  file, offset, dtype.str, shape, a, min(a + rows, shape[0])),
                  shape=(min(a + rows, shape[0]) - a,) + tuple(shape[1:]), dtype=dtype)
              for a in range(0, shape[0], rows)]
    if not blocks:
        return da.zeros(shape, dtype=dtype)
    return da.concatenate(blocks, axis=0) if len(blocks) > 1 else blocks[0]
