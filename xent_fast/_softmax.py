"""softmax, log_softmax and logsumexp over the last axis (kernels: src/_softmax_kernels.pyx)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._simd import kernels
from ._validation import as_float_rows, check_out, check_threads

# The kernels take the arrays as they are and check them in C.
_k = kernels("_softmax_kernels")
_SOFTMAX, _LOG_SOFTMAX, _LOGSUMEXP = _k.softmax, _k.log_softmax, _k.logsumexp


def _rowwise(kernel: Any, logits: Any, out: np.ndarray | None,
             n_threads: int | None) -> np.ndarray:
    x = as_float_rows(logits, "logits")
    if out is None:
        out = np.empty(x.shape, x.dtype)
    else:
        check_out(out, "out", x.shape, x.dtype, ((logits, "logits", True), (x, "logits", True)))
    n = x.shape[-1]
    x2, out2 = (x, out) if x.ndim == 2 else (x.reshape(-1, n), out.reshape(-1, n))
    kernel(x2, out2, check_threads(n_threads))
    return out


def softmax(logits: Any, *, out: np.ndarray | None = None, n_threads: int | None = None) -> np.ndarray:
    """Softmax along the last axis, ``exp(x - logsumexp(x))``, computed stably.

    Parameters
    ----------
    logits : array_like of shape (..., C)
        float32 or float64 (float16 is computed and returned in float32). ``-inf``
        entries are masked classes and get probability 0.
    out : ndarray, optional
        C-contiguous, writable array of the result's shape and dtype to write into. It
        may be ``logits`` itself (in place); any other overlap raises ``ValueError``.
    n_threads : int, optional
        OpenMP threads: ``None`` for the default (``OMP_NUM_THREADS``, threadpoolctl
        limits), a positive count, or ``-1`` for every core. Results do not depend on it.

    Returns
    -------
    ndarray
        Probabilities of the logits' shape; each row sums to 1. A row holding NaN or
        ``+inf``, or with every entry ``-inf``, is all NaN.

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> xf.softmax(np.array([1.0, 2.0, 3.0])).round(4)
    array([0.09  , 0.2447, 0.6652])
    """
    return _rowwise(_SOFTMAX, logits, out, n_threads)


def log_softmax(logits: Any, *, out: np.ndarray | None = None, n_threads: int | None = None) -> np.ndarray:
    """Logarithm of the softmax along the last axis, ``x - logsumexp(x)``, computed stably.

    Unlike ``log(softmax(x))`` it keeps full relative accuracy where the probability
    is close to 1 (the log-probability is then a tiny negative number, not 0) and
    where it underflows (a large negative number, not ``-inf``).

    Parameters
    ----------
    logits : array_like of shape (..., C)
        float32 or float64 (float16 is computed and returned in float32).
    out : ndarray, optional
        Output array (see :func:`softmax`); may be ``logits`` itself.
    n_threads : int, optional
        OpenMP threads (see :func:`softmax`).

    Returns
    -------
    ndarray
        Log-probabilities of the logits' shape; ``-inf`` for masked classes.

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> float(xf.log_softmax(np.array([0.0, -50.0, -50.0]))[0])   # -2 exp(-50)
    -3.8574996959278356e-22
    """
    return _rowwise(_LOG_SOFTMAX, logits, out, n_threads)


def logsumexp(logits: Any, *, out: np.ndarray | None = None, n_threads: int | None = None) -> Any:
    """``log(sum(exp(x)))`` along the last axis, computed stably.

    Parameters
    ----------
    logits : array_like of shape (..., C)
        float32 or float64 (float16 is computed and returned in float32).
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
    x = as_float_rows(logits, "logits")
    batch_shape = x.shape[:-1]
    if out is None:
        res = np.empty(batch_shape, dtype=x.dtype)
    else:
        check_out(out, "out", batch_shape, x.dtype, ((logits, "logits", False), (x, "logits", False)))
        res = out
    _LOGSUMEXP(x.reshape(-1, x.shape[-1]), res.reshape(-1), check_threads(n_threads))
    return res if out is not None or res.ndim else res[()]
