"""Information measures of probability vectors: surprisal, entropy, cross-entropy and
the Kullback-Leibler divergence (kernels: src/_info_kernels.pyx).

Probabilities lie along the last axis; every function reduces over it (but
:func:`surprisal`, which is elementwise). ``base=None`` gives nats, ``base=2`` bits and
``base=10`` hartleys. Rows are not renormalised, and any value outside [0, 1] (NaN
included) raises ``ValueError``. Terms with ``p = 0`` contribute 0; ``q = 0`` where
``p > 0`` gives ``inf``, never nan.

Examples
--------
The seeds' examples: a panda met with probability 0.001, the entropy of meeting a
panda, a bird or a dog with probabilities [0.2, 0.3, 0.5], and a model that gives the
true class probability 0.7.

>>> from xent_fast import info
>>> round(float(info.surprisal(0.001, base=2)), 4)
9.9658
>>> round(float(info.entropy([0.2, 0.3, 0.5], base=2)), 4)
1.4855
>>> round(float(info.cross_entropy([0, 0, 1], [0.1, 0.2, 0.7])), 4)
0.3567
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _info_kernels as _k
from ._validation import CTYPE, _asarray, check_threads, position_of

__all__ = ["surprisal", "entropy", "cross_entropy", "kl_divergence"]

_MEASURE = _k.measure_rows.__signatures__
_SURPRISAL = _k.surprisal.__signatures__
_ENTROPY, _CROSS_ENTROPY, _KL_DIVERGENCE = 0, 1, 2


def _probabilities(p: Any, name: str, dtype: np.dtype | None = None) -> np.ndarray:
    arr = p if isinstance(p, np.ndarray) else _asarray(p, name)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold probabilities (a real array), got dtype {arr.dtype}")
    if dtype is None:
        # float32 stays float32 and float16 is computed in float32, as everywhere else.
        small = arr.dtype.kind == "f" and arr.dtype.itemsize <= 4
        dtype = np.dtype(np.float32) if small else np.dtype(np.float64)
    return np.require(arr, dtype, ("C", "A"))   # aligned too: numpy.asarray keeps an unaligned array


def _scale(base: Any) -> float:
    if base is None:
        return 1.0
    try:
        b = float(base)
    except (TypeError, ValueError):
        raise TypeError(f"base must be None or a positive number, got {type(base).__name__}") from None
    if not (b > 0 and b != 1 and math.isfinite(b)):
        raise ValueError(f"base must be a positive finite number other than 1, got {base!r}")
    return 1.0 / math.log(b)


def _not_probability(name: str, arr: np.ndarray, flat: int) -> ValueError:
    pos = position_of(flat, arr.shape)
    return ValueError(f"{name}{pos} = {arr.reshape(-1)[flat]} is not a probability (must lie in [0, 1])")


def surprisal(p: Any, *, base: float | None = None) -> Any:
    """Surprisal (self-information) ``-log_base(p)`` of each probability.

    Parameters
    ----------
    p : array_like
        Probabilities in [0, 1], any shape.
    base : float, optional
        Logarithm base: ``None`` for nats, 2 for bits, 10 for hartleys.

    Returns
    -------
    ndarray of p's shape, or a NumPy scalar for a scalar ``p``
        ``inf`` where ``p = 0``.

    Examples
    --------
    >>> from xent_fast import info
    >>> round(float(info.surprisal(0.001)), 4), round(float(info.surprisal(0.001, base=2)), 4)
    (6.9078, 9.9658)
    """
    scale = _scale(base)
    arr = _probabilities(p, "p")
    out = np.empty(arr.shape, arr.dtype)
    bad = _SURPRISAL[CTYPE[arr.dtype]](arr.reshape(-1), out.reshape(-1), scale, check_threads(None))
    if bad >= 0:
        raise _not_probability("p", arr, bad)
    return out if out.ndim else out[()]


def _measure(measure: int, p: Any, q: Any, base: Any) -> Any:
    scale = _scale(base)
    pa = _probabilities(p, "p")
    if measure == _ENTROPY:
        qa = None
    else:
        qa = _probabilities(q, "q")
        if qa.shape != pa.shape:
            raise ValueError(f"p and q must have the same shape, got {pa.shape} and {qa.shape}")
        if qa.dtype != pa.dtype:
            pa, qa = pa.astype(np.float64), qa.astype(np.float64)
    if pa.ndim == 0:
        raise ValueError("p must have at least one dimension (a probability vector), got a scalar")
    if pa.shape[-1] == 0:
        raise ValueError(f"p must have at least one outcome: its last axis has length 0 (shape {pa.shape})")
    n = pa.shape[-1]
    p2 = pa.reshape(-1, n)
    q2 = p2[:0, :0] if qa is None else qa.reshape(-1, n)
    out = np.empty(pa.shape[:-1], pa.dtype)
    bad = _MEASURE[CTYPE[pa.dtype]](p2, q2, out.reshape(-1), measure, scale, check_threads(None))
    if bad >= 0:
        # Name the array that holds the first bad value at that position.
        pflat = p2.reshape(-1)
        if qa is not None and 0 <= pflat[bad] <= 1:
            raise _not_probability("q", qa, bad)
        raise _not_probability("p", pa, bad)
    return out if out.ndim else out[()]


def entropy(p: Any, *, base: float | None = None) -> Any:
    """Shannon entropy ``H(p) = -sum p log p`` of each row (``0 log 0 = 0``).

    Parameters
    ----------
    p : array_like of shape (..., C)
        Probability vectors along the last axis.
    base : float, optional
        Logarithm base: ``None`` for nats, 2 for bits, 10 for hartleys.

    Returns
    -------
    ndarray of shape p.shape[:-1], or a NumPy scalar for one vector

    Examples
    --------
    >>> from xent_fast import info
    >>> round(float(info.entropy([0.2, 0.3, 0.5])), 4), round(float(info.entropy([0.2, 0.3, 0.5], base=2)), 4)
    (1.0297, 1.4855)
    """
    return _measure(_ENTROPY, p, None, base)


def cross_entropy(p: Any, q: Any, *, base: float | None = None) -> Any:
    """Cross-entropy ``H(p, q) = -sum p log q`` of each row: ``p`` true, ``q`` predicted.

    ``H(p, q) >= H(p)``, with equality when ``q = p``.

    Parameters
    ----------
    p : array_like of shape (..., C)
        True probabilities (a one-hot label, or soft labels).
    q : array_like of the same shape
        Predicted probabilities.
    base : float, optional
        Logarithm base: ``None`` for nats, 2 for bits, 10 for hartleys.

    Returns
    -------
    ndarray of shape p.shape[:-1], or a NumPy scalar for one vector
        ``inf`` where ``q = 0`` under ``p > 0``.

    Examples
    --------
    The seeds' 4-class example (dog, cat, horse, cheetah), in bits:

    >>> from xent_fast import info
    >>> round(float(info.cross_entropy([1, 0, 0, 0], [0.775, 0.116, 0.039, 0.070], base=2)), 4)
    0.3677
    """
    return _measure(_CROSS_ENTROPY, p, q, base)


def kl_divergence(p: Any, q: Any, *, base: float | None = None) -> Any:
    """Kullback-Leibler divergence ``sum p log(p / q)`` of each row.

    It is ``H(p, q) - H(p)``: >= 0 for normalised rows, 0 when ``q = p``.

    Parameters
    ----------
    p : array_like of shape (..., C)
        True probabilities.
    q : array_like of the same shape
        Predicted probabilities.
    base : float, optional
        Logarithm base: ``None`` for nats, 2 for bits, 10 for hartleys.

    Returns
    -------
    ndarray of shape p.shape[:-1], or a NumPy scalar for one vector

    Examples
    --------
    >>> from xent_fast import info
    >>> round(float(info.kl_divergence([0.5, 0.5], [0.9, 0.1], base=2)), 4)
    0.737
    """
    return _measure(_KL_DIVERGENCE, p, q, base)
