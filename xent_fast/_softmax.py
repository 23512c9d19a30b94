"""softmax, log_softmax and logsumexp over the last axis (kernels: src/_softmax_kernels.pyx)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._runtime import kernel_type
from ._simd import kernels
from ._validation import (_FLOAT_NUMS, _asarray, as_float_array, check_out, check_threads,
                          class_axes, classes_last)

# The kernels take the arrays as they are and check them in C.
_k = kernels("_softmax_kernels")
_SOFTMAX, _LOG_SOFTMAX, _LOGSUMEXP = _k.softmax, _k.log_softmax, _k.logsumexp


def _as_logits(logits: Any) -> np.ndarray:
    """Kernel-ready float logits; integer and bool input in float64, as SciPy computes it."""
    if kernel_type(logits) in _FLOAT_NUMS:
        return logits  # type: ignore[no-any-return]
    arr = logits if isinstance(logits, np.ndarray) else _asarray(logits, "logits")
    if arr.dtype.kind in "iub":
        return np.asarray(arr, dtype=np.float64, order="C")
    return as_float_array(arr, "logits")


def _classes_last(x: np.ndarray, axis: Any) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]:
    """(rows of classes, the batch shape, the moved layout's shape) for the class axes
    ``axis``: a copy with those axes last and flattened into one."""
    if x.ndim == 0 and axis is not None:
        raise np.exceptions.AxisError(
            f"logits is 0-d: it has no axis {axis!r} (axis=None takes it as one class)")
    axes = class_axes(axis, x.ndim)
    rest = tuple(i for i in range(x.ndim) if i not in axes)
    rows = classes_last(x, axes)
    return rows, rows.shape[:-1], tuple(x.shape[i] for i in rest + axes)


def _rowwise(kernel: Any, logits: Any, axis: Any, out: np.ndarray | None,
             n_threads: int | None) -> Any:
    x = _as_logits(logits)
    nt = check_threads(n_threads)
    if type(axis) is int and axis == -1 and x.ndim:
        rows, moved_shape = x, None
    else:
        rows, _, moved_shape = _classes_last(x, axis)
    if out is not None:
        check_out(out, "out", x.shape, x.dtype, ((logits, "logits", True), (x, "logits", True)))
    n = rows.shape[-1]
    if moved_shape is None and out is not None:
        res = out
    else:
        res = np.empty(rows.shape, rows.dtype)
    if n and res.size:  # an empty class axis gives an empty result
        kernel(rows.reshape(-1, n), res.reshape(-1, n), nt)
    if moved_shape is not None:  # back to the input's layout
        axes = class_axes(axis, x.ndim)
        rest = tuple(i for i in range(x.ndim) if i not in axes)
        back = tuple(int(i) for i in np.argsort(rest + axes))
        res = res.reshape(moved_shape).transpose(back)
        if out is None:
            # a NumPy scalar for a 0-d input (axis=None), as SciPy gives it
            return np.ascontiguousarray(res) if res.ndim else res[()]
        np.copyto(out, res)
        return out
    return res


def softmax(logits: Any, *, axis: int | tuple[int, ...] | None = -1,
                   out: np.ndarray | None = None, n_threads: int | None = None) -> Any:
    """Softmax along the last axis, ``exp(x - logsumexp(x))``, computed stably.

    Parameters
    ----------
    logits : array_like of shape (..., C)
        float32 or float64 (float16 is computed and returned in float32; integer and
        bool input in float64, as SciPy does). ``-inf`` entries are masked classes and
        get probability 0.
    axis : int, tuple of ints or None, default -1
        The class axis. Another axis than the last, several (taken as one class axis)
        or None (every axis) cost one transposed copy in and one out. An empty class
        axis gives an empty result.
    out : ndarray, optional
        C-contiguous, writable array of the result's shape and dtype to write into. It
        may be ``logits`` itself (in place); any other overlap raises ``ValueError``.
    n_threads : int, optional
        OpenMP threads: ``None`` for the default (``OMP_NUM_THREADS``, threadpoolctl
        limits), a positive count, or ``-1`` for every core. Results do not depend on it.

    Returns
    -------
    ndarray, or a NumPy scalar for a 0-d input with ``axis=None``
        Probabilities of the logits' shape; each row sums to 1. A row holding NaN or
        ``+inf``, or with every entry ``-inf``, is all NaN.

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> xf.softmax(np.array([1.0, 2.0, 3.0])).round(4)
    array([0.09  , 0.2447, 0.6652])
    """
    return _rowwise(_SOFTMAX, logits, axis, out, n_threads)


def log_softmax(logits: Any, *, axis: int | tuple[int, ...] | None = -1,
                       out: np.ndarray | None = None, n_threads: int | None = None) -> Any:
    """Logarithm of the softmax along the last axis, ``x - logsumexp(x)``, computed stably.

    Unlike ``log(softmax(x))`` it keeps full relative accuracy where the probability
    is close to 1 (the log-probability is then a tiny negative number, not 0) and
    where it underflows (a large negative number, not ``-inf``).

    Parameters
    ----------
    logits : array_like of shape (..., C)
        float32 or float64 (float16 is computed and returned in float32; integer and
        bool input in float64).
    axis : int, tuple of ints or None, default -1
        The class axis (see :func:`softmax`).
    out : ndarray, optional
        Output array (see :func:`softmax`); may be ``logits`` itself.
    n_threads : int, optional
        OpenMP threads (see :func:`softmax`).

    Returns
    -------
    ndarray, or a NumPy scalar for a 0-d input with ``axis=None``
        Log-probabilities of the logits' shape; ``-inf`` for masked classes.

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> float(xf.log_softmax(np.array([0.0, -50.0, -50.0]))[0])   # -2 exp(-50)
    -3.8574996959278356e-22
    """
    return _rowwise(_LOG_SOFTMAX, logits, axis, out, n_threads)


def logsumexp(logits: Any, *, axis: int | tuple[int, ...] | None = -1, keepdims: bool = False,
              out: np.ndarray | None = None, n_threads: int | None = None) -> Any:
    """``log(sum(exp(x)))`` along the last axis, computed stably.

    Parameters
    ----------
    logits : array_like of shape (..., C)
        float32 or float64 (float16 is computed and returned in float32; integer and
        bool input in float64).
    axis : int, tuple of ints or None, default -1
        The class axis (see :func:`softmax`); the result has the logits' shape without
        it. An empty class axis gives ``-inf``, the log of an empty sum, as SciPy.
    keepdims : bool, default False
        Keep the class axes in the result, with length 1 (as NumPy's reductions).
    out : ndarray of shape (...), optional
        C-contiguous, writable array of the result's shape and dtype.
    n_threads : int, optional
        OpenMP threads (see :func:`softmax`).

    Returns
    -------
    ndarray of shape logits.shape[:-1], or a NumPy scalar for one row
        ``+inf`` for a row holding ``+inf``, ``-inf`` for an all ``-inf`` row, NaN for
        a row holding NaN. With ``out=`` the ``out`` array is returned.

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> float(xf.logsumexp(np.array([1000.0, 1000.0])))
    1000.6931471805599
    """
    x = _as_logits(logits)
    nt = check_threads(n_threads)
    if not isinstance(keepdims, (bool, np.bool_)):
        raise TypeError(f"keepdims must be a bool, got {type(keepdims).__name__}")
    if type(axis) is int and axis == -1 and x.ndim:
        rows, batch_shape = x, x.shape[:-1]
    else:
        rows, batch_shape, _ = _classes_last(x, axis)
    out_shape = np.expand_dims(np.empty(batch_shape, np.int8), class_axes(axis, x.ndim)).shape \
        if keepdims else batch_shape
    if out is None:
        res = np.empty(batch_shape, dtype=x.dtype)
    else:
        check_out(out, "out", out_shape, x.dtype, ((logits, "logits", False), (x, "logits", False)))
        res = out.reshape(batch_shape)  # a view: out is C-contiguous
    n = rows.shape[-1]
    if n == 0:
        res[...] = -np.inf  # the log of an empty sum, as SciPy
    elif res.size:
        _LOGSUMEXP(rows.reshape(-1, n), res.reshape(-1), nt)
    if out is not None:
        return out
    if keepdims:
        return res.reshape(out_shape)
    return res if res.ndim else res[()]
