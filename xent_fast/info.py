"""Information measures of probability vectors: surprisal, entropy, cross-entropy and
the Kullback-Leibler divergence (kernels: src/_info_kernels.pyx).

Probabilities lie along the last axis (``axis=`` picks another, as in
``scipy.stats.entropy``); every function reduces over it (but :func:`surprisal`, which
is elementwise), and a sum over an empty axis is 0, as SciPy's. ``base=None`` gives
nats, ``base=2`` bits and ``base=10`` hartleys (any real number > 0 other than 1; a
string is a ``TypeError``). Rows are not renormalised, and any value outside [0, 1] (NaN
included) raises ``ValueError``. Terms with ``p = 0`` contribute 0; ``q = 0`` where
``p > 0`` gives ``inf``, never nan.

Examples
--------
Textbook examples: a panda met with probability 0.001, the entropy of meeting a
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
from typing import Any, NamedTuple

import numpy as np


from . import _info_kernels as _k
from ._validation import CTYPE, _asarray, check_threads, class_axes, classes_last, position_of

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
    """1 / log(base): base is None (nats) or a real number > 0 other than 1. A NumPy
    scalar or 0-d array of a real dtype is a number; a string, bytes, a bool, a complex
    number or an array of one or more dimensions is a TypeError (float() would take
    "2", b"2", True and a 1-element array)."""
    if base is None:
        return 1.0
    if isinstance(base, (bool, str, bytes, complex, np.bool_, np.complexfloating)) or (
            isinstance(base, np.ndarray) and (base.ndim or base.dtype.kind not in "fiu")):
        raise TypeError(f"base must be None or a real number, got {_describe(base)}")
    try:
        b = float(base)
    except OverflowError:       # an int past float's range: math.log takes it as it is
        if base > 0:
            return 1.0 / math.log(base)
        b = -math.inf
    except (TypeError, ValueError):
        raise TypeError(f"base must be None or a real number, got {_describe(base)}") from None
    if not (b > 0 and b != 1 and math.isfinite(b)):
        got = repr(base) if len(repr(base)) <= 40 else f"{b:g}"
        raise ValueError(f"base must be a positive finite number other than 1, got {got}")
    return 1.0 / math.log(b)


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__


class _Moved(NamedTuple):
    """How the caller's outcome axes were moved last and flattened into one."""
    shape: tuple[int, ...]       # the caller's shape
    axes: tuple[int, ...]        # the outcome axes, sorted


def _not_probability(name: str, arr: np.ndarray, flat: int, moved: _Moved | None = None) -> ValueError:
    """The error for the bad value at ``flat`` in ``arr``; with ``moved``, ``arr`` is the
    caller's array with its outcome axes moved last, and the position is the caller's."""
    value = arr.reshape(-1)[flat]
    if moved is None:
        return ValueError(f"{name}{position_of(flat, arr.shape)} = {value} is not a probability "
                          "(must lie in [0, 1])")
    batch = [i for i in range(len(moved.shape)) if i not in moved.axes]
    order = batch + list(moved.axes)
    idx = np.unravel_index(flat, [moved.shape[i] for i in order])
    pos = [0] * len(moved.shape)
    for axis, i in zip(order, idx):
        pos[axis] = int(i)
    return ValueError(f"{name}[{', '.join(map(str, pos))}] = {value} is not a probability "
                      "(must lie in [0, 1])")


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


def _measure(measure: int, p: Any, q: Any, base: Any, axis: Any) -> Any:
    scale = _scale(base)
    pa = _probabilities(p, "p")
    if measure == _ENTROPY:
        qa = None
    else:
        qa = _probabilities(q, "q")
        if qa.shape != pa.shape:  # broadcast against each other, as scipy.stats.entropy
            try:
                shape = np.broadcast_shapes(pa.shape, qa.shape)
            except ValueError:
                raise ValueError(f"p and q must have the same shape or broadcast to one, got "
                                 f"{pa.shape} and {qa.shape}") from None
            pa = np.ascontiguousarray(np.broadcast_to(pa, shape))
            qa = np.ascontiguousarray(np.broadcast_to(qa, shape))
        if qa.dtype != pa.dtype:
            pa, qa = pa.astype(np.float64), qa.astype(np.float64)
    if pa.ndim == 0:
        raise ValueError("p must have at least one dimension (a probability vector), got a scalar")
    moved = None
    if type(axis) is not int or axis != -1:
        axes = class_axes(axis, pa.ndim)
        if axes != (pa.ndim - 1,):   # the kernels reduce the last axis: one transposed copy
            moved = _Moved(pa.shape, axes)
            pa = classes_last(pa, axes)
            qa = None if qa is None else classes_last(qa, axes)
    n = pa.shape[-1]
    if n == 0:
        # A sum over no outcomes is 0, as scipy.stats.entropy gives for an empty vector.
        out = np.zeros(pa.shape[:-1], pa.dtype)
        return out if out.ndim else out[()]
    p2 = pa.reshape(-1, n)
    q2 = p2[:0, :0] if qa is None else qa.reshape(-1, n)
    out = np.empty(pa.shape[:-1], pa.dtype)
    bad = _MEASURE[CTYPE[pa.dtype]](p2, q2, out.reshape(-1), measure, scale, check_threads(None))
    if bad >= 0:
        # Name the array that holds the first bad value at that position.
        pflat = p2.reshape(-1)
        if qa is not None and 0 <= pflat[bad] <= 1:
            raise _not_probability("q", qa, bad, moved)
        raise _not_probability("p", pa, bad, moved)
    return out if out.ndim else out[()]


def entropy(p: Any, *, base: float | None = None,
            axis: int | tuple[int, ...] | None = -1) -> Any:
    """Shannon entropy ``H(p) = -sum p log p`` of each row (``0 log 0 = 0``).

    Parameters
    ----------
    p : array_like of shape (..., C)
        Probability vectors along the last axis.
    base : float, optional
        Logarithm base: ``None`` for nats, 2 for bits, 10 for hartleys.
    axis : int, tuple of ints or None, default -1
        The axis of the outcomes, as ``scipy.stats.entropy``: several axes are taken as
        one, None takes every axis. Another axis than the last costs one transposed copy.

    Returns
    -------
    ndarray of p's shape without ``axis``, or a NumPy scalar for one vector

    Examples
    --------
    >>> from xent_fast import info
    >>> round(float(info.entropy([0.2, 0.3, 0.5])), 4), round(float(info.entropy([0.2, 0.3, 0.5], base=2)), 4)
    (1.0297, 1.4855)
    """
    return _measure(_ENTROPY, p, None, base, axis)


def cross_entropy(p: Any, q: Any, *, base: float | None = None,
                  axis: int | tuple[int, ...] | None = -1) -> Any:
    """Cross-entropy ``H(p, q) = -sum p log q`` of each row: ``p`` true, ``q`` predicted.

    ``H(p, q) >= H(p)``, with equality when ``q = p``.

    Parameters
    ----------
    p : array_like of shape (..., C)
        True probabilities (a one-hot label, or soft labels).
    q : array_like of the same shape (or broadcastable with p)
        Predicted probabilities.
    base : float, optional
        Logarithm base: ``None`` for nats, 2 for bits, 10 for hartleys.
    axis : int, tuple of ints or None, default -1
        The axis of the outcomes, as ``scipy.stats.entropy``: several axes are taken as
        one, None takes every axis. Another axis than the last costs one transposed copy.

    Returns
    -------
    ndarray of p's shape without ``axis``, or a NumPy scalar for one vector
        ``inf`` where ``q = 0`` under ``p > 0``.

    Examples
    --------
    A textbook 4-class example (dog, cat, horse, cheetah), in bits:

    >>> from xent_fast import info
    >>> round(float(info.cross_entropy([1, 0, 0, 0], [0.775, 0.116, 0.039, 0.070], base=2)), 4)
    0.3677
    """
    return _measure(_CROSS_ENTROPY, p, q, base, axis)


def kl_divergence(p: Any, q: Any, *, base: float | None = None,
                  axis: int | tuple[int, ...] | None = -1) -> Any:
    """Kullback-Leibler divergence ``sum p log(p / q)`` of each row.

    It is ``H(p, q) - H(p)``: >= 0 for normalised rows, 0 when ``q = p``.

    Parameters
    ----------
    p : array_like of shape (..., C)
        True probabilities.
    q : array_like of the same shape (or broadcastable with p)
        Predicted probabilities.
    base : float, optional
        Logarithm base: ``None`` for nats, 2 for bits, 10 for hartleys.
    axis : int, tuple of ints or None, default -1
        The axis of the outcomes, as ``scipy.stats.entropy``: several axes are taken as
        one, None takes every axis. Another axis than the last costs one transposed copy.

    Returns
    -------
    ndarray of p's shape without ``axis``, or a NumPy scalar for one vector

    Examples
    --------
    >>> from xent_fast import info
    >>> round(float(info.kl_divergence([0.5, 0.5], [0.9, 0.1], base=2)), 4)
    0.737
    """
    return _measure(_KL_DIVERGENCE, p, q, base, axis)
