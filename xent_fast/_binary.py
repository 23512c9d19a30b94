"""Binary and multi-label cross-entropy, and the sigmoid focal loss
(kernels: src/_binary_kernels.pyx).

Every element of the input is one binary problem: a ``(N,)`` input is N binary
classifications, an ``(N, C)`` input N samples with C labels each (multi-label).
"""

from __future__ import annotations

import math
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike

from . import _validation as _v
from ._runtime import float_scalar, kernel_type
from ._simd import kernels
from ._validation import (
    _FLOAT_NUMS,
    REDUCTIONS,
    FloatArray,
    Losses,
    Reduction,
    Scalar,
    as_float_array,
    as_float_like,
    check_number,
    check_out,
    check_reduction,
    check_threads,
    position_of,
    upstream_gradient,
    _asarray,
)

# The kernel takes the arrays as they are and checks them in C; None is an absent one.
_KERNEL = kernels("_binary_kernels").binary_loss
_BCE_PROBS, _BCE_LOGITS, _FOCAL = 0, 1, 2


def _as_2d(a: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    # The kernels see any shape as (rows, last axis); a 0-d input is one element.
    return a if a.ndim == 2 else a.reshape(n_rows, n_cols)


def _broadcast_weight(w: Any, name: str, shape: tuple[int, ...], dt: np.dtype,
                      n_rows: int, n_cols: int) -> np.ndarray:
    if isinstance(w, (bool, np.bool_)):
        # weight=True is a mistake, not a weight of 1 (a bool *array* is a mask: taken).
        raise TypeError(f"{name} must be a real number or array, got a bool")
    if type(w) is int:
        # A Python int past int64 would be an object array: it is a (huge) real weight.
        try:
            w = float(w)
        except OverflowError:
            w = math.copysign(math.inf, w)
    arr = _asarray(w, name)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real array, got dtype {arr.dtype}")
    # C order first: the broadcast view then steps 0 or 1 entry along the last axis,
    # which the vectorised kernel takes, whatever the caller's layout.
    arr = np.require(arr, dt, ("C", "A"))      # aligned too: numpy.asarray keeps an unaligned array
    try:
        view = np.broadcast_to(arr, shape)
    except ValueError:
        raise ValueError(f"{name} of shape {arr.shape} does not broadcast to the input's shape {shape}") from None
    # A view with zero strides where it broadcasts; reshape copies only for weights
    # that broadcast along a middle axis.
    return view.reshape(n_rows, n_cols)


def _binary(kind: int, x_in: Any, x_name: str, target: Any, weight: Any, pos_weight: Any,
            reduction: str, alpha: float, gamma: float, n_threads: Any, grad_output: Any,
            grad_out: Any, want_grad: bool) -> tuple[Losses, Any]:
    # Small calls pay for every attribute read: kernel-ready arrays skip the conversions.
    x = x_in if kernel_type(x_in) in _FLOAT_NUMS else as_float_array(x_in, x_name)
    dt = x.dtype
    shape = x.shape
    two_d = len(shape) == 2
    n_cols = shape[-1] if shape else 1
    n_rows = shape[0] if two_d else (math.prod(shape[:-1]) if shape else 1)
    size = n_rows * n_cols
    if type(reduction) is not str or reduction not in REDUCTIONS:
        check_reduction(reduction)
    nt = check_threads(n_threads) if n_threads is not None or _v._forked_child else 0

    if kernel_type(target) == dt.num and target.shape == shape:
        t = target
    else:
        t = as_float_like(target, "target", dt, shape)

    w2 = None if weight is None else _broadcast_weight(weight, "weight", shape, dt, n_rows, n_cols)
    pw2 = None if pos_weight is None else _broadcast_weight(
        pos_weight, "pos_weight", shape, dt, n_rows, n_cols)

    grad = None
    g_scalar, g_elems = 1.0, None
    if want_grad:
        if type(grad_output) is float:
            g_scalar = grad_output
        else:
            g_scalar, g_elems = upstream_gradient(grad_output, reduction, shape, dt)
        if grad_out is None:
            grad = np.empty(x.shape, x.dtype)
        else:
            # The converted arrays are what the kernel reads: an argument given as a
            # memoryview or tensor overlaps grad_out through them.
            grad = check_out(grad_out, "grad_out", shape, dt, (
                (x_in, x_name, True), (x, x_name, True), (target, "target", False),
                (t, "target", False), (weight, "weight", False), (w2, "weight", False),
                (pos_weight, "pos_weight", False), (pw2, "pos_weight", False),
                (grad_output, "grad_output", False), (g_elems, "grad_output", False)))
    g2 = None if g_elems is None else _as_2d(g_elems, n_rows, n_cols)
    if reduction == "mean":
        g_scalar = g_scalar / size if size else 0.0

    loss = np.empty(shape, dt) if reduction == "none" else None
    if two_d:
        total, first_bad = _KERNEL(kind, x, t, w2, pw2, loss, grad, g2, g_scalar, alpha, gamma, nt)
    else:
        total, first_bad = _KERNEL(
            kind, _as_2d(x, n_rows, n_cols), _as_2d(t, n_rows, n_cols), w2, pw2,
            None if loss is None else _as_2d(loss, n_rows, n_cols),
            None if grad is None else _as_2d(grad, n_rows, n_cols), g2,
            g_scalar, alpha, gamma, nt)
    if first_bad >= 0:
        raise ValueError(
            f"{x_name}{position_of(first_bad, shape)} = {x.reshape(-1)[first_bad]} is not a "
            "probability: binary_cross_entropy takes probabilities in [0, 1] (use "
            "binary_cross_entropy_with_logits for logits)"
        )
    result: Losses
    if loss is not None:
        result = loss if loss.ndim else loss[()]
    elif reduction == "mean":
        result = float_scalar(total / size if size else 0.0, dt.num)
    else:
        result = float_scalar(total, dt.num)
    return result, grad


# The loss's type follows reduction: "mean"/"sum" a scalar, else Losses (as cross_entropy).
@overload
def binary_cross_entropy(probs: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = ...,
                         reduction: Literal["mean", "sum"] = ...,
                         n_threads: int | None = ...) -> Scalar: ...
@overload
def binary_cross_entropy(probs: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = ...,
                         reduction: Reduction, n_threads: int | None = ...) -> Losses: ...
def binary_cross_entropy(probs: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = None,
                         reduction: Reduction = "mean",
                         n_threads: int | None = None) -> Losses:
    """Binary cross-entropy between predicted probabilities and targets.

    ``-w (y log p + (1 - y) log(1 - p))`` per element, each log clamped at -100, the
    semantics of ``torch.nn.functional.binary_cross_entropy``.

    Parameters
    ----------
    probs : array_like
        Predicted probabilities in [0, 1], any shape; float32 or float64 (float16 is
        computed in float32). A value outside [0, 1] raises ``ValueError``.
    target : array_like
        Targets of the same shape: 0/1 labels or soft labels in [0, 1].
    weight : array_like, optional
        Rescaling weight, broadcast to the input's shape.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` averages over all elements (0.0 for an empty input); ``"none"``
        returns the elementwise loss. For multi-label classification the per-sample
        loss is the ``"none"`` loss summed over the last axis.
    n_threads : int, optional
        OpenMP threads: ``None`` for the default, a positive count, or ``-1`` for all.

    Returns
    -------
    loss : NumPy scalar, or ndarray of the input's shape for ``reduction="none"``

    Examples
    --------
    A textbook example: an image that is a cat, predicted a cat with p = 0.8.

    >>> import numpy as np, xent_fast as xf
    >>> round(float(xf.binary_cross_entropy(np.array([0.8]), np.array([1.0]))), 4)  # -log 0.8
    0.2231
    """
    return _binary(_BCE_PROBS, probs, "probs", target, weight, None, reduction, 0.0, 0.0,
                   n_threads, None, None, False)[0]


@overload
def binary_cross_entropy_and_grad(
    probs: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = ...,
    reduction: Literal["mean", "sum"] = ..., n_threads: int | None = ...,
    grad_output: ArrayLike = ..., grad_out: np.ndarray | None = ...,
) -> tuple[Scalar, FloatArray]: ...
@overload
def binary_cross_entropy_and_grad(
    probs: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = ...,
    reduction: Reduction, n_threads: int | None = ...,
    grad_output: ArrayLike = ..., grad_out: np.ndarray | None = ...,
) -> tuple[Losses, FloatArray]: ...
def binary_cross_entropy_and_grad(probs: ArrayLike, target: ArrayLike, *,
                                  weight: ArrayLike | None = None,
                                  reduction: Reduction = "mean", n_threads: int | None = None,
                                  grad_output: ArrayLike = 1.0,
                                  grad_out: np.ndarray | None = None,
                                  ) -> tuple[Losses, FloatArray]:
    """:func:`binary_cross_entropy` and its gradient with respect to ``probs``.

    The gradient is ``w (p - y) / max(p (1 - p), 1e-12)`` per element (PyTorch's, finite
    at p = 0 and 1), times ``grad_output`` and divided by the element count for
    ``"mean"``.

    Parameters
    ----------
    grad_output : float or array_like, default 1.0
        Upstream gradient: a scalar, or with ``reduction="none"`` an array of the
        input's shape.
    grad_out : ndarray, optional
        C-contiguous, writable array of the input's shape and dtype for the gradient;
        it may be ``probs`` itself.

    Other parameters are those of :func:`binary_cross_entropy`.

    Returns
    -------
    loss, grad

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> loss, grad = xf.binary_cross_entropy_and_grad(np.array([0.8]), np.array([1.0]))
    >>> grad   # -1 / 0.8
    array([-1.25])
    """
    return _binary(_BCE_PROBS, probs, "probs", target, weight, None, reduction, 0.0, 0.0,
                   n_threads, grad_output, grad_out, True)


@overload
def binary_cross_entropy_with_logits(
    logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = ...,
    pos_weight: ArrayLike | None = ..., reduction: Literal["mean", "sum"] = ...,
    n_threads: int | None = ...,
) -> Scalar: ...
@overload
def binary_cross_entropy_with_logits(
    logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = ...,
    pos_weight: ArrayLike | None = ..., reduction: Reduction, n_threads: int | None = ...,
) -> Losses: ...
def binary_cross_entropy_with_logits(logits: ArrayLike, target: ArrayLike, *,
                                     weight: ArrayLike | None = None,
                                     pos_weight: ArrayLike | None = None,
                                     reduction: Reduction = "mean",
                                     n_threads: int | None = None) -> Losses:
    """Binary cross-entropy of ``sigmoid(logits)`` against targets, computed stably.

    ``w ((1 - y) softplus(x) + pw y softplus(-x))`` per element: the semantics of
    ``torch.nn.functional.binary_cross_entropy_with_logits``, finite for any logit
    (+-1e4 included) and accurate for tiny losses.

    Parameters
    ----------
    logits : array_like
        Any shape; float32 or float64 (float16 is computed in float32).
    target : array_like
        Same shape: 0/1 labels or soft labels in [0, 1].
    weight : array_like, optional
        Rescaling weight, broadcast to the input's shape.
    pos_weight : array_like, optional
        Weight of the positive term, broadcast along the last axis (one per label for
        multi-label problems: ``negatives / positives`` balances a rare label).
    reduction : {"mean", "sum", "none"}, default "mean"
        As in :func:`binary_cross_entropy`.
    n_threads : int, optional
        OpenMP threads.

    Returns
    -------
    loss : NumPy scalar, or ndarray of the input's shape for ``reduction="none"``

    Examples
    --------
    Multi-label classification: 2 images, labels (cat, dog, outdoor); the per-image loss
    is the sum of the three binary losses.

    >>> import numpy as np, xent_fast as xf
    >>> logits = np.array([[2.0, -1.0, 0.5], [-3.0, 4.0, 1.0]])
    >>> labels = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    >>> per_label = xf.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    >>> per_label.sum(axis=-1).round(4)
    array([0.9143, 1.38  ])
    """
    return _binary(_BCE_LOGITS, logits, "logits", target, weight, pos_weight, reduction,
                   0.0, 0.0, n_threads, None, None, False)[0]


@overload
def binary_cross_entropy_with_logits_and_grad(
    logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = ...,
    pos_weight: ArrayLike | None = ..., reduction: Literal["mean", "sum"] = ...,
    n_threads: int | None = ...,
    grad_output: ArrayLike = ..., grad_out: np.ndarray | None = ...,
) -> tuple[Scalar, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits_and_grad(
    logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = ...,
    pos_weight: ArrayLike | None = ..., reduction: Reduction, n_threads: int | None = ...,
    grad_output: ArrayLike = ..., grad_out: np.ndarray | None = ...,
) -> tuple[Losses, FloatArray]: ...
def binary_cross_entropy_with_logits_and_grad(
    logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None, reduction: Reduction = "mean",
    n_threads: int | None = None, grad_output: ArrayLike = 1.0,
    grad_out: np.ndarray | None = None,
) -> tuple[Losses, FloatArray]:
    """:func:`binary_cross_entropy_with_logits` and its gradient with respect to the logits.

    Without weights the gradient is ``sigmoid(x) - y``; in general
    ``w ((1 - y) sigmoid(x) - pw y sigmoid(-x))``.

    Parameters
    ----------
    grad_output : float or array_like, default 1.0
        Upstream gradient: a scalar, or with ``reduction="none"`` an array of the
        input's shape.
    grad_out : ndarray, optional
        C-contiguous, writable array of the input's shape and dtype for the gradient;
        it may be ``logits`` itself.

    Other parameters are those of :func:`binary_cross_entropy_with_logits`.

    Returns
    -------
    loss, grad

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> loss, grad = xf.binary_cross_entropy_with_logits_and_grad(
    ...     np.array([0.0, 2.0]), np.array([1.0, 0.0]), reduction="sum")
    >>> grad.round(4)   # sigmoid(x) - y
    array([-0.5   ,  0.8808])
    """
    return _binary(_BCE_LOGITS, logits, "logits", target, weight, pos_weight, reduction,
                   0.0, 0.0, n_threads, grad_output, grad_out, True)


def _focal_options(alpha: Any, gamma: Any) -> tuple[float, float]:
    a = check_number(alpha, "alpha", high=1.0)
    g = check_number(gamma, "gamma", 0.0)
    return a, g


# The default reduction is "none" here (torchvision's): a scalar only for "mean"/"sum".
@overload
def sigmoid_focal_loss(logits: ArrayLike, target: ArrayLike, *, alpha: float = ...,
                       gamma: float = ..., reduction: Literal["mean", "sum"],
                       n_threads: int | None = ...) -> Scalar: ...
@overload
def sigmoid_focal_loss(logits: ArrayLike, target: ArrayLike, *, alpha: float = ...,
                       gamma: float = ..., reduction: Reduction = ...,
                       n_threads: int | None = ...) -> Losses: ...
def sigmoid_focal_loss(logits: ArrayLike, target: ArrayLike, *, alpha: float = 0.25,
                       gamma: float = 2.0, reduction: Reduction = "none",
                       n_threads: int | None = None) -> Losses:
    """Focal loss of RetinaNet on logits: ``alpha_t (1 - p_t)^gamma bce(x, y)``.

    The semantics and defaults of ``torchvision.ops.sigmoid_focal_loss``: ``p =
    sigmoid(x)``, ``p_t = p y + (1 - p)(1 - y)``, ``alpha_t = alpha y + (1 - alpha)(1 - y)``;
    the factor ``(1 - p_t)^gamma`` shrinks the loss of easy, well-classified elements.

    Parameters
    ----------
    logits : array_like
        Any shape; float32 or float64 (float16 is computed in float32).
    target : array_like
        Same shape: 0/1 labels or soft labels in [0, 1].
    alpha : float <= 1, default 0.25
        Weight of the positives; a negative value disables the balancing term.
    gamma : float >= 0, default 2.0
        Focusing exponent; 0 gives the (alpha-weighted) binary cross-entropy.
    reduction : {"none", "mean", "sum"}, default "none"
        As torchvision: the elementwise loss by default.
    n_threads : int, optional
        OpenMP threads.

    Returns
    -------
    loss : ndarray of the input's shape, or a NumPy scalar for "mean"/"sum"

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> loss = xf.sigmoid_focal_loss(np.array([3.0, -1.0]), np.array([1.0, 1.0]))
    >>> [f"{v:.4g}" for v in loss]   # the easy positive counts for almost nothing
    ['2.732e-05', '0.1755']
    """
    a, g = _focal_options(alpha, gamma)
    return _binary(_FOCAL, logits, "logits", target, None, None, reduction, a, g,
                   n_threads, None, None, False)[0]


@overload
def sigmoid_focal_loss_and_grad(
    logits: ArrayLike, target: ArrayLike, *, alpha: float = ..., gamma: float = ...,
    reduction: Literal["mean", "sum"], n_threads: int | None = ...,
    grad_output: ArrayLike = ..., grad_out: np.ndarray | None = ...,
) -> tuple[Scalar, FloatArray]: ...
@overload
def sigmoid_focal_loss_and_grad(
    logits: ArrayLike, target: ArrayLike, *, alpha: float = ..., gamma: float = ...,
    reduction: Reduction = ..., n_threads: int | None = ...,
    grad_output: ArrayLike = ..., grad_out: np.ndarray | None = ...,
) -> tuple[Losses, FloatArray]: ...
def sigmoid_focal_loss_and_grad(
    logits: ArrayLike, target: ArrayLike, *, alpha: float = 0.25, gamma: float = 2.0,
    reduction: Reduction = "none", n_threads: int | None = None, grad_output: ArrayLike = 1.0,
    grad_out: np.ndarray | None = None,
) -> tuple[Losses, FloatArray]:
    """:func:`sigmoid_focal_loss` and its gradient with respect to the logits.

    Parameters
    ----------
    grad_output : float or array_like, default 1.0
        Upstream gradient: a scalar, or with ``reduction="none"`` an array of the
        input's shape.
    grad_out : ndarray, optional
        C-contiguous, writable array of the input's shape and dtype for the gradient;
        it may be ``logits`` itself.

    Other parameters are those of :func:`sigmoid_focal_loss`.

    Returns
    -------
    loss, grad

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> loss, grad = xf.sigmoid_focal_loss_and_grad(np.array([0.0]), np.array([1.0]))
    >>> grad.round(5)
    array([-0.07457])
    """
    a, g = _focal_options(alpha, gamma)
    return _binary(_FOCAL, logits, "logits", target, None, None, reduction, a, g,
                   n_threads, grad_output, grad_out, True)
