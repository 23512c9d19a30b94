"""Fused linear cross-entropy: the loss of a classifier head without its logits.

``hidden @ linear_weight.T (+ linear_bias)`` is computed a chunk of rows at a time into
one reused buffer; the cross-entropy kernel turns each chunk's logits into their
gradient in place, and that gradient is multiplied back into the gradients of
``hidden``, ``linear_weight`` and ``linear_bias``. No array of N x V is ever allocated.

Design
------
* Ignored rows are dropped before any product: the kept rows' indices are gathered
  once (from the targets only), and each chunk's hidden rows are gathered into a
  reused buffer. Rows of ``grad_hidden`` that belong to ignored rows are 0.
* The rows are cut into blocks of ``R0`` rows (:func:`block_rows`), chosen from the
  shapes and the dtype only. Every matrix product is made one block at a time, so each
  BLAS call has the same operands whatever ``chunk_rows`` is; ``chunk_rows`` is rounded
  up to a multiple of ``R0`` and only decides how many blocks the cross-entropy kernel
  takes at once (and the size of the logits buffer).
* The weight gradient is a sum over rows. It is accumulated block by block in block
  order, ``gW = (((P_0 + P_1) + P_2) + ...)`` with ``P_b = dL_b.T @ h_b`` made by BLAS
  calls of fixed shapes, so it is bitwise the same for every ``chunk_rows``; the
  bias gradient likewise. ``P_b`` is made a vocabulary tile at a time (``_TILE_BYTES``,
  16 MiB) into a scratch array and added to the output while it is still in cache; the
  first block writes straight into the output. (Cache-sized tiles of a few hundred
  rows were measured and are slower with OpenBLAS on two cores: many small BLAS calls
  cost more than the additions they save; see bench/linear.py.)
* Blocks are large (``_BLOCK_BYTES`` of logits, 80 MiB) because every block costs a
  pass over the weight and its gradient, and a hidden-gradient product of at most
  512 x 512 outputs runs on one thread in OpenBLAS.
* The loss total is the float64 sum of the per-row losses of all the kept rows, taken
  once at the end, so it does not depend on the chunking either; the "mean"
  denominator (the count of kept rows, or the sum of ``weight[target]`` over them) is
  computed up front from the targets, and the kernel is given the upstream gradient
  already divided by it.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike

from ._cross_entropy import _INDEX_KERNEL
from ._runtime import float_scalar
from ._validation import (
    _FLOAT_NUMS,
    _asarray,
    FloatArray,
    Losses,
    Reduction,
    Scalar,
    as_class_indices,
    as_float_array,
    as_float_like,
    check_int64,
    check_number,
    check_reduction,
    check_threads,
    position_of,
    upstream_gradient,
)

# Bytes of one block's buffers (its logits, gathered hidden rows and hidden gradient):
# 80 MiB gives blocks of 640 rows for V = 32000, H = 512 in float32.
_BLOCK_BYTES = 80 << 20
# Outputs a hidden-gradient product (R0 x H) needs before OpenBLAS runs it on more than
# one thread (it keeps products of at most 512 x 512 outputs on one): blocks grow to
# more than this many outputs, up to 4 x _BLOCK_BYTES of logits.
_MIN_THREADED_OUTPUTS = 1 << 18
# Bytes of the scratch array of one weight-gradient product (None: the weight's size).
_TILE_BYTES: int | None = 16 << 20
# Blocks hold a multiple of this many rows (full BLAS register tiles).
_BLOCK_MULTIPLE = 16


def block_rows(n_classes: int, hidden_size: int, itemsize: int) -> int:
    """Rows per block ``R0``, a function of the shapes and the dtype only.

    The buffers of one block (``n_classes + 2 * hidden_size`` values a row) take about
    ``_BLOCK_BYTES``; a block is made larger, up to four times that, when its hidden-
    gradient product would otherwise have too few outputs for BLAS to use its threads.
    A multiple of 16 rows, at least 16.
    """
    per_row = max(1, (n_classes + 2 * hidden_size) * itemsize)
    rows = _BLOCK_BYTES // per_row
    threaded = _MIN_THREADED_OUTPUTS // max(1, hidden_size) + 1
    rows = max(rows, min(threaded, 4 * rows))
    rows = -(-rows // _BLOCK_MULTIPLE) * _BLOCK_MULTIPLE
    return max(_BLOCK_MULTIPLE, rows)


def tile_rows(n_classes: int, hidden_size: int, itemsize: int) -> int:
    """Rows of the weight gradient made by one product for the blocks after the first:
    all ``n_classes``, or with ``_TILE_BYTES`` set, tiles of about that many bytes."""
    if _TILE_BYTES is None:
        return n_classes
    rows = _TILE_BYTES // max(1, hidden_size * itemsize)
    return min(n_classes, max(_BLOCK_MULTIPLE, rows))


# The loss's type follows reduction: "mean"/"sum" (the default) a scalar, else Losses.
@overload
def linear_cross_entropy(
    hidden: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
    linear_bias: ArrayLike | None = ..., weight: ArrayLike | None = ...,
    ignore_index: int = ..., reduction: Literal["mean", "sum"] = ...,
    label_smoothing: float = ..., z_loss: float = ..., softcap: float | None = ...,
    chunk_rows: int | None = ...,
    n_threads: int | None = ...,
) -> Scalar: ...
@overload
def linear_cross_entropy(
    hidden: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
    linear_bias: ArrayLike | None = ..., weight: ArrayLike | None = ...,
    ignore_index: int = ..., reduction: Reduction, label_smoothing: float = ...,
    z_loss: float = ..., softcap: float | None = ..., chunk_rows: int | None = ...,
    n_threads: int | None = ...,
) -> Losses: ...
def linear_cross_entropy(
    hidden: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    *,
    linear_bias: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_rows: int | None = None,
    n_threads: int | None = None,
) -> Losses:
    """Cross-entropy of the logits ``hidden @ linear_weight.T + linear_bias`` without
    materialising them.

    The loss of a classifier head (a language model's vocabulary projection): the
    logits are computed a chunk of rows at a time into one reused buffer, so no array
    of ``N x V`` is allocated. The semantics of every option are those of
    :func:`cross_entropy` with class indices on those logits (and of PyTorch 2.13's
    ``torch.nn.functional.linear_cross_entropy`` where it has the option).

    Parameters
    ----------
    hidden : array_like of shape (..., H)
        Hidden states, float32 or float64 (float16 is computed in float32); the rows are
        the flattened leading dimensions, so a ``(B, T, H)`` batch works as is.
    linear_weight : array_like of shape (V, H)
        The head's weight in the layout of ``torch.nn.Linear``, of the dtype of
        ``hidden`` (mixed dtypes are a ``TypeError``). A C- or Fortran-contiguous array
        is used as it is (so the transpose of an ``(H, V)`` array costs no copy).
    target : array_like of ints, shape hidden.shape[:-1]
        Class indices, each in ``[0, V)`` or equal to ``ignore_index``.
    linear_bias : array_like of shape (V,), optional
        The head's bias, converted to the computation dtype.
    weight : array_like of shape (V,), optional
        Per-class weights, as in :func:`cross_entropy`.
    ignore_index : int, default -100
        Rows with this target count for nothing, and cost no matrix products.
    reduction : {"mean", "sum", "none"}, default "mean"
        As in :func:`cross_entropy`: ``"mean"`` divides by the sum of
        ``weight[target]`` over the counted rows and is 0.0 when nothing is counted
        (PyTorch: nan).
    label_smoothing : float in [0, 1], default 0.0
        As in :func:`cross_entropy`.
    z_loss : float >= 0, default 0.0
        Adds ``z_loss * logsumexp(logits_row) ** 2`` to every counted row's loss.
    softcap : float > 0, optional
        Replaces the logits by ``softcap * tanh(logits / softcap)`` first.
    chunk_rows : int > 0, optional
        Rows of logits computed at once. The rows are cut into blocks of ``R0`` rows
        fixed by the shapes and the dtype (about 80 MiB of logits and hidden rows: 640
        rows for V=32000, H=512 in float32; see ``xent_fast._linear.block_rows``), and
        ``chunk_rows`` is rounded up to a multiple of ``R0``. ``None`` (the default) is
        one block. Results are bitwise the same for every value.
    n_threads : int, optional
        OpenMP threads of the cross-entropy kernel (``None``, a positive count, or -1
        for every core); the matrix products use NumPy's BLAS and its own threads.
        Results are bitwise the same for every value.

    Returns
    -------
    loss : NumPy scalar, or ndarray of shape hidden.shape[:-1] for ``reduction="none"``
        In nats, of the computation dtype. The total is the float64 sum of the
        per-row losses (each rounded to the computation dtype), taken once.

    Raises
    ------
    TypeError
        If an argument is of the wrong kind: non-floating ``hidden`` or
        ``linear_weight``, the two of different dtypes, non-integer ``target``.
    ValueError
        If a shape does not match (the message names the argument), a class index is
        out of range (the message names the first one, at its position in ``target``),
        or an option is out of its range.

    See Also
    --------
    linear_cross_entropy_and_grad : the loss and its gradients in one pass.

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> rng = np.random.default_rng(0)
    >>> hidden = rng.standard_normal((6, 4))             # 6 rows, H = 4
    >>> w = rng.standard_normal((10, 4))                 # V = 10 classes
    >>> target = np.array([1, 2, 3, -100, 9, 0])         # row 3 is ignored
    >>> loss = xf.linear_cross_entropy(hidden, w, target)
    >>> bool(np.isclose(loss, xf.cross_entropy(hidden @ w.T, target)))
    True
    """
    return _linear(hidden, linear_weight, target, linear_bias, weight, ignore_index,
                   reduction, label_smoothing, z_loss, softcap, chunk_rows, n_threads,
                   1.0, False)[0]


@overload
def linear_cross_entropy_and_grad(
    hidden: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
    linear_bias: ArrayLike | None = ..., weight: ArrayLike | None = ...,
    ignore_index: int = ..., reduction: Literal["mean", "sum"] = ...,
    label_smoothing: float = ..., z_loss: float = ..., softcap: float | None = ...,
    chunk_rows: int | None = ...,
    n_threads: int | None = ..., grad_output: ArrayLike = ...,
) -> tuple[Scalar, FloatArray, FloatArray, FloatArray | None]: ...
@overload
def linear_cross_entropy_and_grad(
    hidden: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
    linear_bias: ArrayLike | None = ..., weight: ArrayLike | None = ...,
    ignore_index: int = ..., reduction: Reduction, label_smoothing: float = ...,
    z_loss: float = ..., softcap: float | None = ..., chunk_rows: int | None = ...,
    n_threads: int | None = ..., grad_output: ArrayLike = ...,
) -> tuple[Losses, FloatArray, FloatArray, FloatArray | None]: ...
def linear_cross_entropy_and_grad(
    hidden: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    *,
    linear_bias: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_rows: int | None = None,
    n_threads: int | None = None,
    grad_output: ArrayLike = 1.0,
) -> tuple[Losses, FloatArray, FloatArray, FloatArray | None]:
    """Fused linear cross-entropy and its gradients with respect to ``hidden``,
    ``linear_weight`` and ``linear_bias``, in one pass over the rows.

    Takes every argument of :func:`linear_cross_entropy`, and:

    Parameters
    ----------
    grad_output : float or array_like, default 1.0
        Upstream gradient of the returned loss: a scalar, or with ``reduction="none"``
        also an array of shape ``hidden.shape[:-1]`` (one value per row).

    Returns
    -------
    loss : NumPy scalar or ndarray
        As :func:`linear_cross_entropy` (the same value, bitwise).
    grad_hidden : ndarray of the shape of hidden
        ``grad_output * d(loss)/d(hidden)``; 0 on ignored rows.
    grad_linear_weight : ndarray of shape (V, H)
        ``grad_output * d(loss)/d(linear_weight)``, C-contiguous.
    grad_linear_bias : ndarray of shape (V,), or None
        ``grad_output * d(loss)/d(linear_bias)``; None without ``linear_bias``.

    Notes
    -----
    Each chunk's logits are made by BLAS into a reused buffer, the cross-entropy kernel
    replaces them by their gradient ``dL``, and then, one block of ``R0`` rows at a
    time, ``dL @ linear_weight`` gives those rows of ``grad_hidden``, ``dL.T @ hidden``
    is added to ``grad_linear_weight`` and the column sums of ``dL`` to
    ``grad_linear_bias``, in block order: results are bitwise the same for every
    ``chunk_rows`` and ``n_threads``. Extra memory beyond the outputs: the logits of
    one chunk, the gathered hidden rows of one chunk (when rows are ignored), and a
    16 MiB scratch array for the weight-gradient products of the blocks after the
    first (93 MiB in all for N=4096, H=512, V=32000 in float32, whose logits alone
    would be 500 MiB).

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> rng = np.random.default_rng(0)
    >>> hidden = rng.standard_normal((2, 3, 4))          # (B, T, H)
    >>> w = rng.standard_normal((10, 4))                 # (V, H)
    >>> b = np.zeros(10)
    >>> target = np.array([[1, 2, 3], [4, -100, 9]])
    >>> loss, g_hidden, g_w, g_b = xf.linear_cross_entropy_and_grad(
    ...     hidden, w, target, linear_bias=b)
    >>> g_hidden.shape, g_w.shape, g_b.shape
    ((2, 3, 4), (10, 4), (10,))
    >>> _, g_logits = xf.cross_entropy_and_grad(hidden @ w.T + b, target)
    >>> bool(np.allclose(g_w, g_logits.reshape(-1, 10).T @ hidden.reshape(-1, 4)))
    True
    >>> float(np.abs(g_hidden[1, 1]).max())             # the ignored row
    0.0
    """
    loss, gh, gw, gb = _linear(hidden, linear_weight, target, linear_bias, weight,
                               ignore_index, reduction, label_smoothing, z_loss, softcap,
                               chunk_rows, n_threads, grad_output, True)
    assert gh is not None and gw is not None
    return loss, gh, gw, gb


def _float_input(x: Any, name: str) -> np.ndarray:
    arr = x if isinstance(x, np.ndarray) else _asarray(x, name)
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{name} must be a floating array (float32 or float64; float16 is computed "
            f"in float32), got dtype {arr.dtype}"
        )
    return arr


def _weight_matrix(w: np.ndarray) -> np.ndarray:
    """``linear_weight`` as float32/float64 usable by BLAS without a copy when it is C-
    or Fortran-contiguous, aligned and native; anything else a C-contiguous copy."""
    if (w.dtype.num in _FLOAT_NUMS and w.dtype.isnative and w.flags.aligned
            and w.flags.f_contiguous and not w.flags.c_contiguous):
        return w
    return as_float_array(w, "linear_weight")


def _check_chunk_rows(chunk_rows: Any) -> int | None:
    if chunk_rows is None:
        return None
    if isinstance(chunk_rows, (bool, np.bool_)):
        raise TypeError("chunk_rows must be None or a positive int, got a bool")
    try:
        c = operator.index(chunk_rows)
    except TypeError:
        raise TypeError(
            f"chunk_rows must be None or a positive int, got {type(chunk_rows).__name__}"
        ) from None
    if c <= 0:
        raise ValueError(f"chunk_rows must be None or a positive int, got {c}")
    return c


def _linear(hidden: Any, linear_weight: Any, target: Any, linear_bias: Any, weight: Any,
            ignore_index: Any, reduction: Any, label_smoothing: Any, z_loss: Any,
            softcap: Any, chunk_rows: Any, n_threads: Any, grad_output: Any,
            want_grad: bool,
            ) -> tuple[Losses, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    # --- arrays ---------------------------------------------------------------------
    h_in = _float_input(hidden, "hidden")
    w_in = _float_input(linear_weight, "linear_weight")
    if h_in.dtype != w_in.dtype:
        raise TypeError(
            f"hidden has dtype {h_in.dtype} and linear_weight {w_in.dtype}: they must "
            "have one dtype (convert one of them)"
        )
    if h_in.ndim == 0:
        raise ValueError("hidden must have at least one dimension (the hidden size on the "
                         "last axis), got a 0-d array")
    if w_in.ndim != 2:
        raise ValueError(f"linear_weight must have shape (V, H), got {w_in.shape}")
    n_hidden = h_in.shape[-1]
    n_classes = w_in.shape[0]
    if w_in.shape[1] != n_hidden:
        raise ValueError(
            f"linear_weight must have shape (V, {n_hidden}) (its second axis the last of "
            f"hidden {h_in.shape}), got {w_in.shape}"
        )
    if n_classes == 0:
        raise ValueError(f"linear_weight must have at least one class: its shape is {w_in.shape}")
    h = as_float_array(h_in, "hidden")
    w_mat = _weight_matrix(w_in)
    dt = h.dtype
    batch_shape = h.shape[:-1]

    t_in = target if isinstance(target, np.ndarray) else _asarray(target, "target")
    if t_in.dtype.kind not in "iu":
        if t_in.dtype.kind == "f":
            raise TypeError(f"target has dtype {t_in.dtype}: class indices must be integers "
                            "(linear_cross_entropy takes class indices only)")
        raise TypeError(f"target must hold integer class indices, got dtype {t_in.dtype}")
    t = as_class_indices(t_in, "target", batch_shape)

    bias = None if linear_bias is None else as_float_like(
        linear_bias, "linear_bias", dt, (n_classes,))
    w = None if weight is None else as_float_like(weight, "weight", dt, (n_classes,))

    # --- options --------------------------------------------------------------------
    check_reduction(reduction)
    eps = check_number(label_smoothing, "label_smoothing", 0.0, 1.0)
    z = check_number(z_loss, "z_loss", 0.0)
    cap = 0.0 if softcap is None else check_number(softcap, "softcap", 0.0, low_open=True)
    ignore = check_int64(ignore_index, "ignore_index")
    nt = check_threads(n_threads)
    chunk = _check_chunk_rows(chunk_rows)
    g_scalar, g_rows = 1.0, None
    if want_grad:
        g_scalar, g_rows = upstream_gradient(grad_output, reduction, batch_shape, dt)

    # --- targets: validity, kept rows, denominator ------------------------------------
    h2 = h.reshape(-1, n_hidden)
    t1 = t.reshape(-1)
    n_rows = t1.shape[0]
    keep = t1 != ignore
    bad = keep & ((t1 < 0) | (t1 >= n_classes))
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(
            f"target{position_of(first, batch_shape)} = {t1[first]} is not a valid "
            f"class index: it must be in [0, {n_classes}) or equal ignore_index ({ignore})"
        )
    n_kept = int(np.count_nonzero(keep))
    idx = None if n_kept == n_rows else np.flatnonzero(keep)
    t_kept = t1 if idx is None else t1[idx]
    mean = reduction == "mean"
    denom = float(n_kept) if w is None else float(np.sum(w[t_kept], dtype=np.float64))
    scale = g_scalar
    if mean and want_grad and n_kept:
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = float(np.float64(g_scalar) / np.float64(denom))
    g_kept = None
    if g_rows is not None:
        g1 = g_rows.reshape(-1)
        g_kept = g1 if idx is None else g1[idx]

    # --- outputs and buffers ----------------------------------------------------------
    loss_kept = np.empty(n_kept, dt)
    gh2 = gw = gb = None
    if want_grad:
        gh2 = (np.empty if idx is None else np.zeros)((n_rows, n_hidden), dt)
        gw = (np.empty if n_kept else np.zeros)((n_classes, n_hidden), dt)
        if bias is not None:
            gb = (np.empty if n_kept else np.zeros)(n_classes, dt)
    r0 = block_rows(n_classes, n_hidden, dt.itemsize)
    step = r0 if chunk is None else -(-chunk // r0) * r0
    buf_rows = min(step, n_kept)
    if n_kept:
        logits_buf = np.empty((buf_rows, n_classes), dt)
        h_buf = None if idx is None else np.empty((buf_rows, n_hidden), dt)
        gh_buf = None if idx is None or not want_grad else np.empty((min(r0, n_kept), n_hidden), dt)
        # Scratch of one weight-gradient tile for the blocks after the first; bias likewise.
        tile = tile_rows(n_classes, n_hidden, dt.itemsize)
        gw_tmp = np.empty((tile, n_hidden), dt) if want_grad and n_kept > r0 else None
        gb_tmp = np.empty(n_classes, dt) if gb is not None and n_kept > r0 else None
    w_t = w_mat.T

    # --- the chunks -------------------------------------------------------------------
    for s in range(0, n_kept, step):
        e = min(s + step, n_kept)
        m = e - s
        if idx is None:
            hc = h2[s:e]
        else:
            assert h_buf is not None
            hc = np.take(h2, idx[s:e], axis=0, out=h_buf[:m], mode="clip")  # valid: unbuffered
        logits = logits_buf[:m]
        for b in range(0, m, r0):
            np.matmul(hc[b:b + r0], w_t, out=logits[b:b + r0])
        if bias is not None:
            np.add(logits, bias, out=logits)
        _INDEX_KERNEL(logits, t_kept[s:e], w, loss_kept[s:e], logits if want_grad else None,
                      None if g_kept is None else g_kept[s:e], scale, False, ignore, eps, z,
                      cap, nt)
        if not want_grad:
            continue
        assert gh2 is not None and gw is not None
        for b in range(0, m, r0):
            d_l = logits[b:b + r0]
            h_b = hc[b:b + r0]
            rows = d_l.shape[0]
            if idx is None:
                np.matmul(d_l, w_mat, out=gh2[s + b:s + b + rows])
            else:
                assert gh_buf is not None
                np.matmul(d_l, w_mat, out=gh_buf[:rows])
                gh2[idx[s + b:s + b + rows]] = gh_buf[:rows]
            if s + b == 0:
                np.matmul(d_l.T, h_b, out=gw)
                if gb is not None:
                    np.add.reduce(d_l, axis=0, out=gb)
            else:
                assert gw_tmp is not None
                for v0 in range(0, n_classes, tile):
                    v1 = min(v0 + tile, n_classes)
                    part = gw_tmp[:v1 - v0]
                    np.matmul(d_l[:, v0:v1].T, h_b, out=part)
                    np.add(gw[v0:v1], part, out=gw[v0:v1])
                if gb is not None:
                    assert gb_tmp is not None
                    np.add.reduce(d_l, axis=0, out=gb_tmp)
                    np.add(gb, gb_tmp, out=gb)

    # --- the loss ---------------------------------------------------------------------
    loss: Any
    if reduction == "none":
        if idx is None:
            loss_rows = loss_kept
        else:
            loss_rows = np.zeros(n_rows, dt)
            loss_rows[idx] = loss_kept
        loss_rows = loss_rows.reshape(batch_shape)
        loss = loss_rows if loss_rows.ndim else loss_rows[()]
    else:
        total = float(np.sum(loss_kept, dtype=np.float64))
        if mean:
            # 0 when nothing is counted (PyTorch: nan); counted rows whose weights sum
            # to 0 give nan, as in PyTorch.
            total = total / denom if denom else (math.nan if n_kept else 0.0)
        loss = float_scalar(total, dt.num)
    gh = None if gh2 is None else gh2.reshape(h.shape)
    return loss, gh, gw, gb
