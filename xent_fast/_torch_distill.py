"""``xent_fast.torch.distillation_loss``: the fused distillation kernel under autograd.

The forward computes the loss and the gradient with respect to the student logits in
one kernel call; the backward only scales that gradient. A teacher that requires grad
(a teacher trained jointly, say) gets its gradient from PyTorch's composite formula
(TRL's ``generalized_jsd_loss``), differentiated by autograd: correct, never ``None``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import _distill as _xd

_NATIVE = (torch.float32, torch.float64)


def _as_np(t: torch.Tensor) -> np.ndarray:
    return np.asarray(t.detach().contiguous().numpy())


class _Distill(torch.autograd.Function):  # type: ignore[misc]
    @staticmethod
    def forward(ctx: Any, student: torch.Tensor, teacher: torch.Tensor, target: Any,
                options: dict[str, Any]) -> torch.Tensor:
        work = student if student.dtype in _NATIVE else student.float()
        s = _as_np(work)
        t = _as_np(teacher.to(work.dtype))
        tg = None if target is None else _as_np(target)
        loss, grad = _xd.distillation_loss_and_grad(s, t, target=tg, **options)
        ctx.in_dtype = student.dtype
        ctx.rows = options["reduction"] == "none"
        ctx.save_for_backward(torch.from_numpy(grad))
        out = torch.as_tensor(np.asarray(loss), dtype=work.dtype)
        return out.to(student.dtype) if student.dtype not in _NATIVE else out

    @staticmethod
    @once_differentiable  # type: ignore[untyped-decorator]
    def backward(ctx: Any, grad_loss: torch.Tensor) -> Any:
        (grad,) = ctx.saved_tensors
        g = grad_loss.to(grad.dtype)
        grad = grad * (g.unsqueeze(-1) if ctx.rows else g)
        return grad.to(ctx.in_dtype), None, None, None


def _composite(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
               beta: float, mask: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """TRL's formula with torch ops, for a teacher that requires grad."""
    ls = F.log_softmax(student / temperature, dim=-1)
    lt = F.log_softmax(teacher / temperature, dim=-1)
    if beta == 0:
        rows = F.kl_div(ls, lt, reduction="none", log_target=True).sum(-1)
    elif beta == 1:
        rows = F.kl_div(lt, ls, reduction="none", log_target=True).sum(-1)
    else:
        lm = torch.logaddexp(ls + math.log1p(-beta), lt + math.log(beta))
        rows = (beta * F.kl_div(lm, lt, reduction="none", log_target=True)
                + (1 - beta) * F.kl_div(lm, ls, reduction="none", log_target=True)).sum(-1)
    if mask is not None:
        rows = torch.where(mask, rows, torch.zeros_like(rows))
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    count = rows.numel() if mask is None else int(mask.sum())
    return rows.sum() / count if count else rows.sum() * 0.0


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    beta: float = 0.0,
    target: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    n_threads: int | None = None,
) -> torch.Tensor:
    """Distillation divergence between teacher and student logits, differentiable.

    The semantics of :func:`xent_fast.distillation_loss` (TRL's generalized JSD family:
    ``beta=0`` forward KL, ``beta=1`` reverse KL, between them the generalized JSD), on
    CPU tensors with the classes on the last dimension, as TRL and Liger-Kernel lay out
    ``(B, T, V)`` logits. The gradient flows to ``student_logits``; the teacher is a
    constant, unless it requires grad: then the loss is computed by PyTorch's composite
    formula and autograd gives both gradients.

    Parameters
    ----------
    student_logits : Tensor of shape (..., C)
        float32 or float64 (bfloat16/float16 computed in float32, the gradient returned
        in their dtype).
    teacher_logits : Tensor of the same shape
    temperature : float > 0, default 1.0
    beta : float in [0, 1], default 0.0
    target : Tensor of integers, shape ``student_logits.shape[:-1]``, optional
        Rows equal to ``ignore_index`` are left out.
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}, default "mean"
    n_threads : int, optional

    Returns
    -------
    Tensor
        A scalar, or one value per row for ``reduction="none"``.

    Examples
    --------
    >>> import torch
    >>> from xent_fast.torch import distillation_loss
    >>> student = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    >>> teacher = torch.tensor([[3.0, 2.0, 1.0]])
    >>> loss = distillation_loss(student, teacher, temperature=2.0)
    >>> loss.backward()
    >>> student.grad.round(decimals=4)
    tensor([[-0.1601,  0.0000,  0.1601]])
    """
    for t, name in ((student_logits, "student_logits"), (teacher_logits, "teacher_logits")):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device.type != "cpu" or t.layout != torch.strided:
            raise ValueError(f"{name} must be a dense CPU tensor, got {t.device} {t.layout}")
    if target is not None and not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor or None, got {type(target).__name__}")
    options: dict[str, Any] = dict(temperature=temperature, beta=beta, ignore_index=ignore_index,
                   reduction=reduction, n_threads=n_threads)
    if teacher_logits.requires_grad and torch.is_grad_enabled():
        # checks every argument as the kernel path does, then differentiates the formula
        _xd.distillation_loss(_as_np(student_logits.float() if student_logits.dtype
                                     not in _NATIVE else student_logits),
                              _as_np(teacher_logits.to(torch.float64)),
                              target=None if target is None else _as_np(target), **options)
        mask = None if target is None else target != ignore_index
        return _composite(student_logits, teacher_logits, float(temperature), float(beta),
                          mask, reduction)
    return _Distill.apply(student_logits, teacher_logits.detach(),
                          None if target is None else target.detach(), options)


distillation_loss.__module__ = "xent_fast.torch"   # a public name of xent_fast.torch
