"""Argument checks shared by the public functions.

Every check raises ``TypeError`` (wrong kind of thing) or ``ValueError`` (right kind,
wrong value) with the argument's name in the message. The fast paths come first: an
array that is already C-contiguous, aligned, native float32/float64 passes with a few
attribute reads, because small calls in training loops pay for every microsecond.
"""

from __future__ import annotations

import math
import operator
import os
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ._runtime import kernel_type, memory_relation

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
_KERNEL_FLOATS = (F32, F64)
_INT64 = np.dtype(np.int64)
_INT32 = np.dtype(np.int32)
_FLOAT_NUMS = frozenset((F32.num, F64.num))
_F16_NUM = np.dtype(np.float16).num
_LONGDOUBLE_NUM = np.dtype(np.longdouble).num
# NumPy type numbers of the integer types the kernels take: C int, long and long long,
# whichever are 32 or 64 bits here (int64 is 'long' on Linux, 'long long' on Windows).
INDEX_BITS = {np.dtype(c).num: np.dtype(c).itemsize * 8 for c in "ilq"
              if np.dtype(c).itemsize in (4, 8)}
_INDEX_NUMS = frozenset(INDEX_BITS)
REDUCTIONS = frozenset(("mean", "sum", "none"))
# The type of every public ``reduction`` argument: a type checker catches "avg".
Reduction = Literal["mean", "sum", "none"]
# What the losses return (their overloads pick it from ``reduction``): "mean" and "sum"
# give a NumPy float scalar of the computation dtype; "none" gives an array of losses,
# or a NumPy scalar where the loss has no dimension (one 1-D row of logits, a 0-d
# binary input), as ``numpy.sum(x, axis=-1)`` does.
FloatArray = npt.NDArray[np.floating[Any]]
Scalar = np.floating[Any]
Losses = FloatArray | Scalar
# The name of a float dtype in the kernels' fused signatures (``__signatures__`` keys).
CTYPE = {F32: "float", F64: "double"}


def _asarray(x: Any, name: str) -> np.ndarray:
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and objects numpy cannot take
        raise TypeError(f"{name} could not be converted to an array: {exc}") from None


def as_float_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a C-contiguous, aligned, native float32 or float64 array of any shape.
    float16 becomes float32; anything non-float is a TypeError. The input is returned as
    is when it already qualifies (never copied, never written)."""
    if kernel_type(x) in _FLOAT_NUMS:
        return x  # type: ignore[no-any-return]
    arr = x if isinstance(x, np.ndarray) else _asarray(x, name)
    dt = arr.dtype
    if dt.kind != "f":
        raise TypeError(
            f"{name} must be a floating array (float32 or float64; float16 is computed "
            f"in float32), got dtype {dt}"
        )
    if dt.num == _F16_NUM:
        return np.asarray(arr, dtype=F32, order="C")  # C order whatever the input's
    if dt.num not in _FLOAT_NUMS:
        if dt.num == _LONGDOUBLE_NUM and dt.itemsize == 8:   # long double is double (MSVC)
            return np.asarray(arr, dtype=F64, order="C")
        # extended long double, and float types of other packages (float8, ...)
        raise TypeError(f"{name} has dtype {dt}; only float16, float32 and float64 are supported")
    if not (dt.isnative and arr.flags.c_contiguous and arr.flags.aligned):
        # numpy.asarray would return an unaligned array as it is: require the alignment.
        return np.require(arr, dt.newbyteorder("="), ("C", "A"))
    return arr


def as_float_rows(x: Any, name: str) -> np.ndarray:
    """:func:`as_float_array` for rows of classes: ndim >= 1 and a non-empty last axis."""
    if kernel_type(x) in _FLOAT_NUMS and x.ndim and x.shape[-1]:
        return x  # type: ignore[no-any-return]     # kernel-ready: no further call
    arr = as_float_array(x, name)
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (classes on the last axis), got a 0-d array")
    if arr.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one class: its last axis has length 0 (shape {arr.shape})")
    return arr


def class_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """``axis`` (an int, a tuple of ints, or None for every axis) as sorted, distinct,
    non-negative axes of an array of ``ndim`` dimensions."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    axes = []
    for a in items:
        if isinstance(a, (bool, np.bool_)):
            raise TypeError("axis must be an int, a tuple of ints or None, got a bool")
        try:
            i = operator.index(a)
        except TypeError:
            raise TypeError(f"axis must be an int, a tuple of ints or None, got "
                            f"{type(a).__name__}") from None
        if not -ndim <= i < ndim:
            raise np.exceptions.AxisError(i, ndim, "axis")
        axes.append(i % ndim)
    if len(set(axes)) != len(axes):
        raise ValueError(f"axis {axis!r} names an axis more than once")
    return tuple(sorted(axes))


def classes_last(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """A C-contiguous copy of ``a`` with the axes ``axes`` (sorted) moved last and
    flattened into one: rows of classes, the other axes in their order."""
    rest = [i for i in range(a.ndim) if i not in axes]
    moved = a.transpose(rest + list(axes))
    n = math.prod(a.shape[i] for i in axes)
    return np.ascontiguousarray(moved).reshape([a.shape[i] for i in rest] + [n])


def as_float_like(x: Any, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` as a C-contiguous array of ``dtype`` and exactly ``shape`` (a copy if needed)."""
    arr = x if isinstance(x, np.ndarray) else _asarray(x, name)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real array, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if arr.dtype is not dtype or not arr.flags.c_contiguous or not arr.flags.aligned:
        arr = np.require(arr, dtype, ("C", "A"))
    return arr


def as_class_indices(t: np.ndarray, name: str, batch_shape: tuple[int, ...]) -> np.ndarray:
    """Integer class indices as C-contiguous native int32 or int64 of ``batch_shape``."""
    if t.shape != batch_shape:
        raise ValueError(
            f"{name} holds class indices and must have shape {batch_shape} "
            f"(the logits' shape without the class axis), got {t.shape}"
        )
    if kernel_type(t) in _INDEX_NUMS:
        return t
    dt = t.dtype
    if dt.kind == "u" and dt.itemsize == 8 and t.size:
        # uint64 values past the int64 range would wrap into (possibly valid) negatives.
        too_big = t > np.iinfo(np.int64).max
        if too_big.any():
            pos = np.unravel_index(int(np.argmax(too_big)), t.shape)
            raise ValueError(
                f"{name}{_position(pos)} = {t[pos]} is not a valid class index"
            )
    return np.require(t, _INT64 if dt.itemsize >= 4 else _INT32, ("C", "A"))


def check_out(out: Any, name: str, shape: tuple[int, ...], dtype: np.dtype,
              inputs: tuple[tuple[Any, str, bool], ...]) -> np.ndarray:
    """Validate a caller-supplied output array; ``inputs`` lists (array, name,
    may_be_the_same_array) for the overlap check."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{name} has dtype {out.dtype}, expected {dtype}")
    if out.shape != shape:
        raise ValueError(f"{name} has shape {out.shape}, expected {shape}")
    if not (out.flags.c_contiguous and out.flags.aligned):
        raise ValueError(f"{name} must be C-contiguous and aligned")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    for arr, arr_name, may_alias in inputs:
        if isinstance(arr, np.ndarray):
            rel = memory_relation(out, arr)
            if rel == 2 or (rel == 1 and not may_alias):
                raise ValueError(f"{name} overlaps {arr_name}")
    return out


def check_reduction(reduction: Any) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return reduction


# GNU OpenMP hangs in a forked child whose parent had started its thread pool (PyTorch
# DataLoader workers fork by default): in any forked child the kernels run on the
# calling thread, whatever n_threads says.
_forked_child = False


def _after_fork_in_child() -> None:
    global _forked_child
    _forked_child = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def check_threads(n_threads: Any) -> int:
    """Kernel convention: 0 = OpenMP default, -1 = all cores, k > 0 = k threads."""
    if _forked_child:
        if n_threads is not None:
            _thread_count(n_threads)
        return 1
    if n_threads is None:
        return 0
    return _thread_count(n_threads)


def _thread_count(n_threads: Any) -> int:
    """A validated explicit thread count (kernel convention, as check_threads)."""
    if isinstance(n_threads, (bool, np.bool_)):
        raise TypeError("n_threads must be None or an int, got a bool")
    try:
        n = operator.index(n_threads)
    except TypeError:
        raise TypeError(f"n_threads must be None or an int, got {type(n_threads).__name__}") from None
    if n > 0:
        return min(n, 1 << 16)
    if n == -1:
        return -1
    raise ValueError(f"n_threads must be None, a positive int or -1 (all cores), got {n}")


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def check_int64(value: Any, name: str) -> int:
    """An int (or anything with ``__index__``, not a bool) that fits in int64."""
    if isinstance(value, (bool, np.bool_)):   # NumPy < 2.3 indexes np.bool_ with a warning
        raise TypeError(f"{name} must be an int, got a bool")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise ValueError(f"{name} must fit in int64, got {v}")
    return v


def check_number(value: Any, name: str, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    """A finite real in [low, high] (or (low, high] with low_open). A 0-d array or NumPy
    scalar of a real dtype is a number; a bool, a string, a complex number or an array
    of one or more dimensions is a TypeError."""
    if isinstance(value, (bool, str, bytes, complex, np.bool_, np.complexfloating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if isinstance(value, np.ndarray):
        if value.ndim or value.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be a real number, got an array of shape "
                            f"{value.shape} and dtype {value.dtype}")
    try:
        v = float(value)
    except OverflowError:   # an int past float's range
        v = float("inf")
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    ok = v == v and abs(v) != float("inf")
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v <= high
    if not ok:
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else f"<= {high}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        got = repr(value) if len(repr(value)) <= 40 else f"{v:g}"   # a huge int: its size
        raise ValueError(f"{name} must be finite{' and ' + bounds if bounds else ''}, got {got}")
    return v


def upstream_gradient(grad_output: Any, reduction: str, loss_shape: tuple[int, ...],
                      dt: np.dtype) -> tuple[float, np.ndarray | None]:
    """(scalar factor, None) or (1.0, C-contiguous array of ``loss_shape``) from
    ``grad_output``: a scalar, or with ``reduction="none"`` one value per loss."""
    if isinstance(grad_output, (float, int)) and not isinstance(grad_output, bool):
        try:
            return float(grad_output), None
        except OverflowError:  # an int past float's range: as autograd, an infinite factor
            return (math.inf if grad_output > 0 else -math.inf), None
    if isinstance(grad_output, (bool, np.bool_)):
        raise TypeError("grad_output must be a real number or array, got a bool")
    g = _asarray(grad_output, "grad_output")
    if g.dtype.kind not in "fiu":
        raise TypeError(f"grad_output must be a real number or array, got dtype {g.dtype}")
    if g.ndim == 0:
        return float(g), None
    if reduction == "none" and g.shape == loss_shape:
        return 1.0, np.require(g, dt, ("C", "A"))
    expected = f"a scalar or an array of shape {loss_shape}" if reduction == "none" else "a scalar"
    raise ValueError(
        f"grad_output must be {expected} for reduction={reduction!r}, got shape {g.shape}"
    )


def _position(pos: tuple[Any, ...]) -> str:
    return "[" + ", ".join(str(int(p)) for p in pos) + "]"


def position_of(flat: int, shape: tuple[int, ...]) -> str:
    """``[i, j]`` for a flat row-major position in ``shape``."""
    if not shape:
        return ""
    return _position(np.unravel_index(flat, shape))
