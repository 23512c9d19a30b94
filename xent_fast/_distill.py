"""Distillation from teacher logits: forward KL, reverse KL and the generalized
Jensen-Shannon divergence between the softmaxes of student and teacher logits (kernels:
src/_distill_kernels.pyx)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _validation as _v
from ._runtime import float_scalar
from ._simd import kernels
from ._validation import (
    REDUCTIONS,
    Reduction,
    _asarray,
    as_class_indices,
    as_float_like,
    as_float_rows,
    check_int64,
    check_number,
    check_out,
    check_reduction,
    check_threads,
    position_of,
    upstream_gradient,
)

_KERNEL = kernels("_distill_kernels").distillation


def distillation_loss(
    student_logits: Any,
    teacher_logits: Any,
    *,
    temperature: float = 1.0,
    beta: float = 0.0,
    target: Any = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    n_threads: int | None = None,
) -> Any:
    """Divergence between the teacher's and the student's softmax, per row of logits.

    With ``p_s = softmax(student_logits / temperature)`` and ``p_t`` the teacher's, the
    row loss is, with the semantics of TRL's ``GKDTrainer.generalized_jsd_loss``:
    ``beta=0`` forward KL ``KL(p_t || p_s)`` (Hinton's distillation), ``beta=1`` reverse
    KL ``KL(p_s || p_t)``, and ``0 < beta < 1`` the generalized Jensen-Shannon divergence
    ``beta KL(p_t || m) + (1 - beta) KL(p_s || m)`` with ``m = beta p_t + (1 - beta) p_s``.
    No ``temperature ** 2`` factor is applied (multiply by it for Hinton's scaling).

    Parameters
    ----------
    student_logits : array_like of shape (..., C)
        The student's unnormalised scores, float32 or float64 (float16 is computed in
        float32). ``-inf`` entries are masked classes.
    teacher_logits : array_like of the same shape
        The teacher's, converted to the student's computation dtype.
    temperature : float > 0, default 1.0
        Both logits are divided by it first, in their dtype (as PyTorch's ``s / T``); a
        temperature that rounds to 0 in that dtype (below about 7e-46 in float32) is
        refused.
    beta : float in [0, 1], default 0.0
        Selects the divergence (see above).
    target : array_like of integers, shape ``student_logits.shape[:-1]``, optional
        Class indices, only used as a mask: rows equal to ``ignore_index`` count for
        nothing (loss 0, gradient 0, left out of the ``"mean"``). Any other value must
        be in ``[0, C)``.
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` averages over the counted rows (0.0 if none is counted).
    n_threads : int, optional
        OpenMP threads: ``None`` for the default, a positive count, or ``-1`` for every
        core. Results are bitwise identical for every value.

    Returns
    -------
    loss : NumPy scalar, or ndarray of shape ``student_logits.shape[:-1]`` for
        ``reduction="none"``. In nats, in the computation dtype. Each row is summed as
        non-negative terms, so two nearly equal distributions keep full relative
        accuracy (a divergence of 1e-12 is not lost in the cancellation of
        ``sum p log p - sum p log q``). A class that the teacher gives mass and the
        student masks (``-inf``) makes forward KL ``inf``; rows with a NaN, a ``+inf`` or
        no unmasked class give NaN.

    Raises
    ------
    ValueError
        If the shapes differ, a ``target`` is neither ``ignore_index`` nor in ``[0, C)``
        (the message names its position), or an option is out of its range.
    TypeError
        If the logits are not floating, or ``target`` not integer.

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> teacher = np.log(np.array([0.7, 0.2, 0.1]))
    >>> student = np.log(np.array([0.5, 0.3, 0.2]))
    >>> float(xf.distillation_loss(student, teacher))            # KL(p_t || p_s)
    0.08512282595722159
    >>> float(xf.distillation_loss(student, teacher, beta=0.5))  # Jensen-Shannon
    0.02190117896849383
    """
    return _distillation(student_logits, teacher_logits, temperature, beta, target,
                         ignore_index, reduction, n_threads, None, None, False)[0]


def distillation_loss_and_grad(
    student_logits: Any,
    teacher_logits: Any,
    *,
    temperature: float = 1.0,
    beta: float = 0.0,
    target: Any = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    n_threads: int | None = None,
    grad_output: Any = 1.0,
    grad_out: np.ndarray | None = None,
) -> tuple[Any, np.ndarray]:
    """:func:`distillation_loss` and its gradient with respect to the student logits.

    The loss and the gradient come from one pass over both arrays; the teacher is a
    constant. Takes every argument of :func:`distillation_loss`, and:

    Parameters
    ----------
    grad_output : float or array_like, default 1.0
        Upstream gradient of the returned loss: a scalar, or with ``reduction="none"``
        also an array of shape ``student_logits.shape[:-1]``.
    grad_out : ndarray, optional
        C-contiguous, writable array of the student logits' shape and computation dtype
        that receives the gradient. It may be ``student_logits`` itself (the gradient
        then replaces them); any other overlap with an argument raises ``ValueError``.

    Returns
    -------
    loss : NumPy scalar or ndarray
        As :func:`distillation_loss`.
    grad : ndarray of the student logits' shape
        ``grad_output * d(loss)/d(student_logits)``; for forward KL and
        ``reduction="sum"`` that is ``(p_s - p_t) / temperature``.

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> student = np.array([[1.0, 2.0, 3.0]])
    >>> teacher = np.array([[3.0, 2.0, 1.0]])
    >>> loss, grad = xf.distillation_loss_and_grad(student, teacher)
    >>> grad.round(4)           # softmax(student) - softmax(teacher)
    array([[-0.5752,  0.    ,  0.5752]])
    """
    return _distillation(student_logits, teacher_logits, temperature, beta, target,
                         ignore_index, reduction, n_threads, grad_output, grad_out, True)


def _distillation(student: Any, teacher: Any, temperature: Any, beta: Any, target: Any,
                  ignore_index: Any, reduction: Any, n_threads: Any, grad_output: Any,
                  grad_out: Any, want_grad: bool) -> tuple[Any, Any]:
    x = as_float_rows(student, "student_logits")
    dt = x.dtype
    n = x.shape[-1]
    batch_shape = x.shape[:-1]
    tt = teacher if isinstance(teacher, np.ndarray) else _asarray(teacher, "teacher_logits")
    if tt.dtype.kind != "f":
        raise TypeError(f"teacher_logits must be a floating array, got dtype {tt.dtype}")
    y = as_float_like(tt, "teacher_logits", dt, x.shape)
    if type(reduction) is not str or reduction not in REDUCTIONS:
        check_reduction(reduction)
    temp = 1.0 if type(temperature) is float and temperature == 1.0 else check_number(
        temperature, "temperature", 0.0, low_open=True)
    if temp != 1.0 and dt.type(temp) == 0:
        # the kernels divide by T in the logits' dtype: every row would be NaN (x / 0)
        raise ValueError(f"temperature must be positive in {dt} (the logits are divided by "
                         f"it in their dtype), but {temperature!r} rounds to 0 there")
    b = 0.0 if type(beta) is float and beta == 0.0 else check_number(beta, "beta", 0.0, 1.0)
    nt = check_threads(n_threads) if n_threads is not None or _v._forked_child else 0
    ignore = check_int64(ignore_index, "ignore_index")
    x2, y2 = x.reshape(-1, n), y.reshape(-1, n)
    n_rows = x2.shape[0]

    keep = None
    count = n_rows
    t = None
    if target is not None:
        t0 = target if isinstance(target, np.ndarray) else _asarray(target, "target")
        if t0.dtype.kind not in "iu":
            raise TypeError(f"target must hold integer class indices, got dtype {t0.dtype}")
        t = as_class_indices(t0, "target", batch_shape).reshape(-1)
        ignored = t == ignore
        bad = ~ignored & ((t < 0) | (t >= n))
        if bad.any():
            first = int(np.argmax(bad))
            raise ValueError(
                f"target{position_of(first, batch_shape)} = {t[first]} is not a valid class "
                f"index: it must be in [0, {n}) or equal ignore_index ({ignore})")
        keep = np.logical_not(ignored).view(np.uint8)
        count = int(n_rows - np.count_nonzero(ignored))

    grad = g_rows = None
    g_scalar = 1.0
    if want_grad:
        g_scalar, g_rows = upstream_gradient(grad_output, reduction, batch_shape, dt)
        if g_rows is not None:
            g_rows = g_rows.reshape(-1)
        if grad_out is None:
            grad = np.empty(x.shape, dt)
        else:
            grad = check_out(grad_out, "grad_out", x.shape, dt, (
                (student, "student_logits", True), (x, "student_logits", True),
                (teacher, "teacher_logits", False), (y, "teacher_logits", False),
                (target, "target", False), (t, "target", False),
                (grad_output, "grad_output", False), (g_rows, "grad_output", False)))
    mean = reduction == "mean"
    loss_rows = np.empty(batch_shape, dt) if reduction == "none" else None
    scale = g_scalar / count if (mean and count) else (0.0 if mean else g_scalar)
    total = _KERNEL(x2, y2, keep, None if loss_rows is None else loss_rows.reshape(-1),
                    None if grad is None else grad.reshape(-1, n), g_rows, scale, temp, b, nt)
    if loss_rows is not None:
        return (loss_rows if loss_rows.ndim else loss_rows[()]), grad
    if mean:
        total = total / count if count else 0.0
    return float_scalar(total, dt.num), grad


__all__ = ["distillation_loss", "distillation_loss_and_grad"]
