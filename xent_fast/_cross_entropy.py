"""Categorical cross-entropy from logits (kernels: src/_cross_entropy_kernels.pyx)."""

from __future__ import annotations

import math
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike

from . import _validation as _v
from ._simd import kernels
from ._runtime import float_scalar, kernel_type
from ._validation import (
    _FLOAT_NUMS,
    _INDEX_NUMS,
    REDUCTIONS,
    FloatArray,
    Losses,
    Reduction,
    Scalar,
    as_class_indices,
    as_float_like,
    as_float_rows,
    check_int64,
    check_number,
    check_out,
    check_reduction,
    check_threads,
    class_axes,
    position_of,
    upstream_gradient,
    _asarray,
)

# Kernels take the arrays as they are and check them in C (cheaper than typed memoryviews).
_k = kernels("_cross_entropy_kernels")
_INDEX_KERNEL, _PROBS_KERNEL = _k.cross_entropy_index, _k.cross_entropy_probs
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# The loss's type follows reduction: "mean"/"sum" (the default) a scalar, else Losses.
@overload
def cross_entropy(
    logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = ...,
    ignore_index: int = ..., reduction: Literal["mean", "sum"] = ...,
    label_smoothing: float = ..., z_loss: float = ..., softcap: float | None = ...,
    axis: int = ..., n_threads: int | None = ...,
) -> Scalar: ...
@overload
def cross_entropy(
    logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = ...,
    ignore_index: int = ..., reduction: Reduction, label_smoothing: float = ...,
    z_loss: float = ..., softcap: float | None = ..., axis: int = ...,
    n_threads: int | None = ...,
) -> Losses: ...
def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    axis: int = -1,
    n_threads: int | None = None,
) -> Losses:
    """Cross-entropy loss between logits and class indices or class probabilities.

    The semantics of ``torch.nn.functional.cross_entropy`` (PyTorch 2.x), with the
    classes on the last axis, plus PaLM's ``z_loss`` and Gemma 2's ``softcap``.

    Parameters
    ----------
    logits : array_like of shape (..., C)
        Unnormalised scores, float32 or float64 (float16 is computed in float32).
        ``-inf`` entries are masked classes.
    target : array_like
        Either class indices, of any integer dtype and shape ``logits.shape[:-1]``, each
        in ``[0, C)`` or equal to ``ignore_index``; or class probabilities (soft labels,
        e.g. from mixup), a float array of exactly ``logits.shape``.
    weight : array_like of shape (C,), optional
        Per-class weights.
    ignore_index : int, default -100
        Class-index rows with this target count for nothing: loss 0, gradient 0, and
        they are left out of the ``"mean"`` denominator. Not used with probabilities.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides the summed loss by the sum of ``weight[target]`` over the
        counted rows (class indices) or by the number of rows (probabilities). If that
        counts nothing (an empty batch, every row ignored) the result is 0.0, where
        PyTorch returns nan.
    label_smoothing : float in [0, 1], default 0.0
        Mixes the target with the uniform distribution: with class indices the row loss
        is ``(1 - eps) * w[t] * nll + eps / C * sum_c w[c] * (-log p_c)``.
    z_loss : float >= 0, default 0.0
        Adds ``z_loss * logsumexp(row) ** 2`` to every counted row's loss.
    softcap : float > 0, optional
        Replaces the logits by ``softcap * tanh(logits / softcap)`` first.
    axis : int, default -1
        The class axis of the logits (and of probability targets); class indices have
        the logits' shape without it. Another axis than the last costs a transposed
        copy of the logits (and of the gradient on its way out).
    n_threads : int, optional
        OpenMP threads: ``None`` for the default, a positive count, or ``-1`` for every
        core. Results are bitwise identical for every value.

    Returns
    -------
    loss : NumPy scalar, or ndarray of shape logits.shape[:-1] for ``reduction="none"``
        In nats, of the computation dtype. A confident, correct prediction keeps full
        relative accuracy (a loss of 1e-20 is returned as 1e-20, not 0). Where a
        probability target is 0 the class adds nothing, even if its logit is ``-inf``
        (PyTorch gives nan there).

    Raises
    ------
    ValueError
        If a class index is out of range (the message names the first one), or an
        option is out of its range.
    TypeError
        If the logits are not floating, or a float target has the shape of class indices.

    Examples
    --------
    A textbook example: a model that gives the true class (a dog) probability 0.7.

    >>> import numpy as np, xent_fast as xf
    >>> logits = np.log(np.array([0.1, 0.2, 0.7]))
    >>> float(xf.cross_entropy(logits, 2))          # nats
    0.35667494393873245
    >>> float(xf.cross_entropy(logits, 2) / np.log(2))  # bits
    0.5145731728297583
    >>> float(xf.cross_entropy(logits, np.array([0.0, 0.0, 1.0])))  # one-hot probabilities
    0.35667494393873245
    """
    if type(axis) is not int or axis != -1:
        return _other_axis(axis, logits, target, weight, ignore_index, reduction,
                           label_smoothing, z_loss, softcap, n_threads, 1.0, None, False)[0]
    return _cross_entropy(logits, target, weight, ignore_index, reduction, label_smoothing,
                          z_loss, softcap, n_threads, None, None, False)[0]


@overload
def cross_entropy_and_grad(
    logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = ...,
    ignore_index: int = ..., reduction: Literal["mean", "sum"] = ...,
    label_smoothing: float = ..., z_loss: float = ..., softcap: float | None = ...,
    axis: int = ..., n_threads: int | None = ..., grad_output: ArrayLike = ...,
    grad_out: np.ndarray | None = ...,
) -> tuple[Scalar, FloatArray]: ...
@overload
def cross_entropy_and_grad(
    logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = ...,
    ignore_index: int = ..., reduction: Reduction, label_smoothing: float = ...,
    z_loss: float = ..., softcap: float | None = ..., axis: int = ...,
    n_threads: int | None = ..., grad_output: ArrayLike = ...,
    grad_out: np.ndarray | None = ...,
) -> tuple[Losses, FloatArray]: ...
def cross_entropy_and_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    axis: int = -1,
    n_threads: int | None = None,
    grad_output: ArrayLike = 1.0,
    grad_out: np.ndarray | None = None,
) -> tuple[Losses, FloatArray]:
    """Cross-entropy loss and its gradient with respect to the logits, in one pass.

    Takes every argument of :func:`cross_entropy`, and:

    Parameters
    ----------
    grad_output : float or array_like, default 1.0
        Upstream gradient of the returned loss: a scalar, or with ``reduction="none"``
        also an array of shape ``logits.shape[:-1]`` (one value per row).
    grad_out : ndarray, optional
        C-contiguous, writable array of the logits' shape and computation dtype that
        receives the gradient. It may be ``logits`` itself: the gradient then replaces
        the logits, and no memory of the logits' size is used. Any other overlap with
        an argument raises ``ValueError``.

    Returns
    -------
    loss : NumPy scalar or ndarray
        As :func:`cross_entropy`.
    grad : ndarray of the logits' shape
        ``grad_output * d(loss)/d(logits)``; for one-hot targets and ``reduction="sum"``
        that is ``softmax(logits) - onehot(target)``.

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> logits = np.array([[1.0, 2.0, 3.0]])
    >>> loss, grad = xf.cross_entropy_and_grad(logits, np.array([2]))
    >>> grad.round(4)          # softmax(a) - b
    array([[ 0.09  ,  0.2447, -0.3348]])
    """
    if type(axis) is not int or axis != -1:
        return _other_axis(axis, logits, target, weight, ignore_index, reduction,
                           label_smoothing, z_loss, softcap, n_threads, grad_output, grad_out, True)
    return _cross_entropy(logits, target, weight, ignore_index, reduction, label_smoothing,
                          z_loss, softcap, n_threads, grad_output, grad_out, True)


def _other_axis(axis: Any, logits: Any, target: Any, weight: Any, ignore_index: Any,
                reduction: Any, label_smoothing: Any, z_loss: Any, softcap: Any, n_threads: Any,
                grad_output: Any, grad_out: Any, want_grad: bool) -> tuple[Losses, Any]:
    """:func:`_cross_entropy` with the classes on ``axis``: the logits (and probability
    targets) with that axis moved last, the gradient moved back."""
    x = _asarray(logits, "logits")
    if isinstance(axis, tuple) and len(axis) == 1:
        axis = axis[0]
    if isinstance(axis, tuple) or axis is None:
        raise TypeError(f"axis must be an int for cross_entropy, got {axis!r}")
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (the class axis), got a 0-d array")
    (ax,) = class_axes(axis, x.ndim)
    options = (weight, ignore_index, reduction, label_smoothing, z_loss, softcap, n_threads)
    if ax == x.ndim - 1:
        return _cross_entropy(logits, target, *options, grad_output, grad_out, want_grad)
    t = target if isinstance(target, np.ndarray) else _asarray(target, "target")
    if t.dtype.kind == "f" and t.shape == x.shape:
        t = np.moveaxis(t, ax, -1)
    grad = None
    if grad_out is not None:
        dt = np.dtype(np.float32) if x.dtype == np.float16 else x.dtype
        # Every argument as the arrays it will be read through (a memoryview or a tensor
        # shares memory with grad_out through them), as on the last-axis path.
        views = [(a if isinstance(a, np.ndarray) else _asarray(a, name), name)
                 for a, name in ((target, "target"), (weight, "weight"), (grad_output, "grad_output"))
                 if a is not None and not isinstance(a, (int, float))]
        grad = check_out(grad_out, "grad_out", x.shape, dt, (
            (logits, "logits", True), (x, "logits", True),
            *((a, name, False) for a, name in views)))
    loss, g = _cross_entropy(np.moveaxis(x, ax, -1), t, *options, grad_output, None, want_grad)
    if g is None:
        return loss, None
    g = np.moveaxis(g, -1, ax)
    if grad is None:
        return loss, np.ascontiguousarray(g)
    np.copyto(grad, g)
    return loss, grad


def _cross_entropy(logits: Any, target: Any, weight: Any, ignore_index: Any, reduction: Any,
                   label_smoothing: Any, z_loss: Any, softcap: Any, n_threads: Any,
                   grad_output: Any, grad_out: Any, want_grad: bool) -> tuple[Losses, Any]:
    # Small calls in training loops pay for every attribute read here: arrays that the
    # kernels take as they are skip the general conversions (kernel_type is one C call).
    x_type = kernel_type(logits)
    if x_type in _FLOAT_NUMS and logits.ndim and logits.shape[-1]:
        x = logits
    else:
        x = as_float_rows(logits, "logits")
        x_type = x.dtype.num
    dt = x.dtype
    n = x.shape[-1]
    batch_shape = x.shape[:-1]
    x2 = x if x.ndim == 2 else x.reshape(-1, n)
    n_rows = x2.shape[0]
    if type(reduction) is not str or reduction not in REDUCTIONS:
        check_reduction(reduction)

    t_type = kernel_type(target)
    if t_type in _INDEX_NUMS and target.shape == batch_shape:
        by_index, t = True, target
    else:
        by_index, t = _as_target(target, x, batch_shape)
    t1 = t if t.ndim == (1 if by_index else 2) else t.reshape((-1,) if by_index else (-1, n))

    w = None if weight is None else as_float_like(weight, "weight", dt, (n,))
    # Defaults pass on a type test (no truth test: an array option must reach the check).
    eps = 0.0 if type(label_smoothing) is float and label_smoothing == 0.0 else check_number(
        label_smoothing, "label_smoothing", 0.0, 1.0)
    z = 0.0 if type(z_loss) is float and z_loss == 0.0 else check_number(z_loss, "z_loss", 0.0)
    cap = 0.0 if softcap is None else check_number(softcap, "softcap", 0.0, low_open=True)
    nt = check_threads(n_threads) if n_threads is not None or _v._forked_child else 0
    # Checked with probability targets too (which do not use it), as PyTorch does.
    ignore = ignore_index
    if type(ignore) is not int or not _INT64_MIN <= ignore <= _INT64_MAX:
        ignore = check_int64(ignore_index, "ignore_index")

    # Optional arrays the kernels do not need are passed as None.
    grad = grad2 = g_rows = None
    g_scalar = 1.0
    if want_grad:
        if type(grad_output) is float:
            g_scalar = grad_output
        else:
            g_scalar, g_rows = upstream_gradient(grad_output, reduction, batch_shape, dt)
            if g_rows is not None and g_rows.ndim != 1:
                g_rows = g_rows.reshape(-1)
        if grad_out is None:
            grad = np.empty(x.shape, x.dtype)
        else:
            # The converted arrays are what the kernel reads: an argument given as a
            # memoryview or tensor overlaps grad_out through them.
            grad = check_out(grad_out, "grad_out", x.shape, dt, (
                (logits, "logits", True), (x, "logits", True), (target, "target", False),
                (t, "target", False), (weight, "weight", False), (w, "weight", False),
                (grad_output, "grad_output", False), (g_rows, "grad_output", False)))
        grad2 = grad if grad.ndim == 2 else grad.reshape(-1, n)

    loss_rows = loss1 = None
    if reduction == "none":
        loss_rows = np.empty(batch_shape, dt)
        loss1 = loss_rows if loss_rows.ndim == 1 else loss_rows.reshape(-1)
    mean = reduction == "mean"

    if by_index:
        total, denom, count, first_bad = _INDEX_KERNEL(
            x2, t1, w, loss1, grad2, g_rows, g_scalar, mean, ignore, eps, z, cap, nt)
        if first_bad >= 0:
            raise ValueError(
                f"target{position_of(first_bad, batch_shape)} = {t1[first_bad]} is not a valid "
                f"class index: it must be in [0, {n}) or equal ignore_index ({ignore})"
            )
    else:
        denom = count = n_rows
        scale = g_scalar / n_rows if (mean and n_rows) else g_scalar
        total = _PROBS_KERNEL(x2, t1, w, loss1, grad2, g_rows, scale, eps, z, cap, nt)

    if loss_rows is not None:
        return (loss_rows if loss_rows.ndim else loss_rows[()]), grad
    if mean:
        # "mean": 0 when nothing is counted (PyTorch: nan); counted rows whose weights
        # sum to 0 give nan, as in PyTorch.
        total = total / denom if denom else (math.nan if count else 0.0)
    return float_scalar(total, x_type), grad


def _as_target(target: Any, x: np.ndarray, batch_shape: tuple[int, ...]) -> tuple[bool, np.ndarray]:
    """(True, class indices) or (False, probabilities) as kernel-ready arrays."""
    t = target if isinstance(target, np.ndarray) else _asarray(target, "target")
    kind = t.dtype.kind
    if kind in "iu":
        return True, as_class_indices(t, "target", batch_shape)
    if kind == "f" and t.shape == x.shape:
        return False, as_float_like(t, "target", x.dtype, x.shape)
    if kind == "f" and t.shape == batch_shape:
        raise TypeError(
            f"target has dtype {t.dtype} and the shape of class indices {batch_shape}: "
            "class indices must be integers (probability targets need the logits' shape)"
        )
    if kind == "f":
        raise ValueError(
            f"target must be class indices of shape {batch_shape} or probabilities of "
            f"shape {x.shape}, got shape {t.shape}"
        )
    raise TypeError(
        f"target must hold integer class indices or floating probabilities, got dtype {t.dtype}"
    )

