"""``xent_fast.torch.distillation_loss``: the fused distillation kernel under autograd.

The forward computes the loss and the gradient with respect to the student logits in
one kernel call; the backward only scales that gradient. A teacher that requires grad
(a teacher trained jointly, say) gets its gradient from PyTorch's composite formula
(TRL's ``generalized_jsd_loss``), differentiated by autograd: correct, never ``None``.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import _distill as _xd
from . import _validation as _v
from .torch import _guard

try:
    from torch.compiler import is_compiling as _compiling
except ImportError:  # pragma: no cover - older PyTorch
    def _compiling() -> bool:
        return False

_NATIVE = (torch.float32, torch.float64)
_WIDENED = (torch.float16, torch.bfloat16)


def _xt() -> Any:
    """xent_fast.torch, imported at call time: it imports this module at its end."""
    from . import torch as xt
    return xt


def _as_np(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.is_conj() or t.is_neg():   # .numpy() refuses lazily negated/conjugated views
        t = t.resolve_conj().resolve_neg()
    return np.asarray(t.contiguous().numpy())


def _out_dtype(student: torch.Tensor) -> torch.dtype:
    """The loss dtype PyTorch's composite gives: the student's, float32 for
    bfloat16/float16 under CPU autocast (kl_div runs in float32 there)."""
    if student.dtype in _WIDENED and torch.is_autocast_enabled("cpu"):
        return torch.float32
    return student.dtype


def _forward(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor | None,
             options: dict[str, Any],
             out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, gradient of the loss with respect to the student logits), one kernel call."""
    work = student if student.dtype in _NATIVE else student.float()
    s = _as_np(work)
    t = _as_np(teacher.to(work.dtype))
    tg = None if target is None else _as_np(target)
    try:
        loss, grad = _xd.distillation_loss_and_grad(s, t, target=tg, **options)
    except (TypeError, ValueError) as exc:
        _xt()._reraise(exc, {})
    out = torch.as_tensor(np.asarray(loss), dtype=work.dtype)
    return (out.to(out_dtype or student.dtype),
            torch.from_numpy(grad).to(student.dtype))


def _times(grad: torch.Tensor, grad_loss: torch.Tensor) -> torch.Tensor:
    """The upstream gradient times the saved one: a per-row gradient (reduction "none")
    broadcasts over the class dimension. Torch ops only, so torch.func can trace it."""
    g = grad_loss.to(grad.dtype)
    return grad * (g.unsqueeze(-1) if g.dim() else g)


class _Distill(torch.autograd.Function):  # type: ignore[misc]
    """Loss and gradient in the forward, the backward scales the saved gradient.
    setup_context style with a vmap rule, so that torch.func.grad / vmap work."""

    @staticmethod
    def forward(student: torch.Tensor, teacher: torch.Tensor, target: Any,
                options: dict[str, Any], out_dtype: torch.dtype) -> Any:
        return _forward(student, teacher, target, options, out_dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1], output[0])    # the loss: _guard's anchor

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, *unused: Any) -> Any:
        grad, anchor = ctx.saved_tensors
        grads = (_times(grad, grad_loss),)
        if torch.is_grad_enabled():     # create_graph=True, and torch.func transforms
            # the saved gradient is a constant to autograd: differentiated again it would
            # drop the second-order term in silence (a gradient penalty's, say)
            grads = _guard("distillation_loss", anchor, grads)
        return grads + (None, None, None, None)

    @staticmethod
    def vmap(info: Any, in_dims: Any, student: torch.Tensor, teacher: torch.Tensor,
             target: Any, options: dict[str, Any], out_dtype: torch.dtype) -> Any:
        """One kernel call for every sample: the samples' rows together, per-row losses,
        then each sample's reduction ("mean" over its own counted rows)."""
        b = info.batch_size

        def lead(x: torch.Tensor, d: Any) -> torch.Tensor:
            return x.movedim(d, 0) if d is not None else x.expand(b, *x.shape)

        s, t = lead(student, in_dims[0]), lead(teacher, in_dims[1])
        tg = None if target is None else lead(target, in_dims[2])
        # through apply, not _forward: under an outer vmap the tensors are still batched
        loss, grad = _Distill.apply(s, t, tg, dict(options, reduction="none"), out_dtype)
        reduction = options["reduction"]
        if reduction != "none":
            per = loss.reshape(b, -1)
            loss = per.sum(1)
            if reduction == "mean":
                count = (per.shape[1] if tg is None else
                         (tg.reshape(b, -1) != options["ignore_index"]).sum(1))
                count = torch.as_tensor(count, dtype=loss.dtype).expand(b)
                scale = torch.where(count > 0, 1.0 / count.clamp(min=1), 0.0)
                loss = loss * scale
                grad = grad * scale.to(grad.dtype).reshape(b, *(1,) * (grad.dim() - 1))
        return (loss, grad), (0, 0)


# --- torch.compile: the kernel as a torch.library custom op ----------------------------
# While compiling, distillation_loss calls this op, which Dynamo keeps in the graph (no
# graph break), with its shapes from the fake implementation and its backward from the
# registered autograd formula. Eager calls take _Distill, cheaper per call.

_SCHEMA = ("(Tensor student, Tensor teacher, Tensor? target, float temperature, float beta, "
           "int ignore_index, str reduction, int? n_threads, ScalarType out_dtype) "
           "-> (Tensor, Tensor)")


@torch.library.custom_op(  # type: ignore[untyped-decorator]
    "xent_fast::distillation", mutates_args=(), schema=_SCHEMA)
def _distill_op(student: torch.Tensor, teacher: torch.Tensor, target: Optional[torch.Tensor],
                temperature: float, beta: float, ignore_index: int, reduction: str,
                n_threads: Optional[int],
                out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, gradient with respect to the student logits)."""
    loss, grad = _forward(student, teacher, target, dict(
        temperature=temperature, beta=beta, ignore_index=ignore_index, reduction=reduction,
        n_threads=n_threads), out_dtype)
    return loss, grad.contiguous()


@_distill_op.register_fake  # type: ignore[untyped-decorator]
def _distill_op_fake(student: torch.Tensor, teacher: torch.Tensor,
                     target: Optional[torch.Tensor], temperature: float, beta: float,
                     ignore_index: int, reduction: str, n_threads: Optional[int],
                     out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    shape = tuple(student.shape)
    loss = student.new_empty(shape[:-1] if reduction == "none" else (), dtype=out_dtype)
    return loss, student.new_empty(shape)


def _distill_op_setup(ctx: Any, inputs: Any, output: Any) -> None:
    ctx.save_for_backward(output[1], output[0])


def _distill_op_backward(ctx: Any, grad_loss: torch.Tensor, *unused: Any) -> Any:
    grad, anchor = ctx.saved_tensors
    grads = (_times(grad, grad_loss),)
    if torch.is_grad_enabled():     # create_graph=True: as in _Distill.backward
        grads = _guard("distillation_loss", anchor, grads)
    return grads + (None,) * 8


_distill_op.register_autograd(_distill_op_backward, setup_context=_distill_op_setup)


def _kl_rows(lx: torch.Tensor, ly: torch.Tensor) -> torch.Tensor:
    """KL(x || y) = sum x (lx - ly) per row, 0 log 0 = 0. Masked classes (lx = -inf) are
    kept out of the arithmetic, so their gradient is 0, not the nan of 0 * inf."""
    kept = lx != -math.inf
    zero = torch.zeros((), dtype=lx.dtype)
    lx0, ly0 = torch.where(kept, lx, zero), torch.where(kept, ly, zero)
    return torch.where(kept, lx0.exp() * (lx0 - ly0), zero).sum(-1)


def _composite(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
               beta: float, mask: torch.Tensor | None, reduction: str,
               out_dtype: torch.dtype) -> torch.Tensor:
    """TRL's formula with torch ops, for a teacher that requires grad: the kernel's
    values (float32 for bfloat16/float16, the teacher in the student's computation dtype,
    masked classes, ignored rows with a zero gradient), differentiable in both logits."""
    work = student.dtype if student.dtype in _NATIVE else torch.float32
    s, t = student.to(work), teacher.to(work)
    zero = torch.zeros((), dtype=work)
    if mask is not None:
        # ignored rows out of the arithmetic: a NaN there must not reach the gradients
        keep = mask.unsqueeze(-1)
        s, t = torch.where(keep, s, zero), torch.where(keep, t, zero)
    with torch.autocast("cpu", enabled=False):
        ls = F.log_softmax(s / temperature, dim=-1)
        lt = F.log_softmax(t / temperature, dim=-1)
        if beta == 0:
            rows = _kl_rows(lt, ls)
        elif beta == 1:
            rows = _kl_rows(ls, lt)
        else:
            # a class both mask: m = 0 there, and logaddexp(-inf, -inf) has a nan gradient
            both = (ls == -math.inf) & (lt == -math.inf)
            lm = torch.logaddexp(torch.where(both, zero, ls) + math.log1p(-beta),
                                 torch.where(both, zero, lt) + math.log(beta))
            rows = beta * _kl_rows(lt, lm) + (1 - beta) * _kl_rows(ls, lm)
        if mask is not None:
            rows = torch.where(mask, rows, zero)
        if reduction == "sum":
            rows = rows.sum()
        elif reduction == "mean":
            # no data-dependent branch (torch.compile): an all-ignored batch sums to 0
            count = rows.numel() if mask is None else mask.sum().clamp(min=1).to(work)
            rows = rows.sum() / count if rows.numel() else rows.sum()
    return rows.to(out_dtype)


def _check_tensors(student: Any, teacher: Any, target: Any) -> None:
    """Types, layouts, devices and dtypes: attribute reads only (also while compiling)."""
    xt = _xt()
    for t, name in ((student, "student_logits"), (teacher, "teacher_logits")):
        xt._check_tensor(t, name)
        if t.dtype not in _NATIVE and t.dtype not in _WIDENED:
            raise xt._TypeError(f"{name} must be a floating tensor (float32, float64, "
                                f"float16 or bfloat16), got {t.dtype}")
    if target is not None:
        xt._check_tensor(target, "target")
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise xt._TypeError(f"target must hold integer class indices, got {target.dtype}")


def _check_options(temperature: Any, beta: Any, ignore_index: Any, reduction: Any,
                   n_threads: Any) -> tuple[float, float, int]:
    """The options as the NumPy core checks them; (temperature, beta, ignore_index)."""
    xt = _xt()
    try:
        temp = _v.check_number(temperature, "temperature", 0.0, low_open=True)
        b = _v.check_number(beta, "beta", 0.0, 1.0)
        ignore = _v.check_int64(ignore_index, "ignore_index")
        _v.check_reduction(reduction)
        _v.check_threads(n_threads)
    except (TypeError, ValueError) as exc:
        xt._reraise(exc, {})
    return temp, b, ignore


def _check_composite(student: torch.Tensor, teacher: torch.Tensor,
                     target: torch.Tensor | None, ignore: int) -> None:
    """The shape and target checks of the kernel path, with torch ops (the composite
    path may run under torch.func transforms, whose tensors have no NumPy view)."""
    xt = _xt()
    shape = tuple(student.shape)
    if not shape or not shape[-1]:
        raise xt._ValueError(f"student_logits must have at least one dimension and one "
                             f"class (classes on the last axis), got shape {shape}")
    if tuple(teacher.shape) != shape:
        raise xt._ValueError(f"teacher_logits must have shape {shape}, got "
                             f"{tuple(teacher.shape)}")
    if target is None:
        return
    if tuple(target.shape) != shape[:-1]:
        raise xt._ValueError(f"target holds class indices and must have shape {shape[:-1]} "
                             f"(the logits' shape without the class axis), got "
                             f"{tuple(target.shape)}")
    if _compiling() or torch._C._are_functorch_transforms_active():
        return      # values cannot be read here; a target only masks rows
    bad = (target != ignore) & ((target < 0) | (target >= shape[-1]))
    if bool(bad.any()):
        first = int(bad.reshape(-1).nonzero()[0])
        value = int(target.reshape(-1)[first])
        raise xt._IndexError(
            f"target{_v.position_of(first, shape[:-1])} = {value} is not a valid class "
            f"index: it must be in [0, {shape[-1]}) or equal ignore_index ({ignore})")


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
        in their dtype); integer, bool and complex tensors raise ``TypeError``.
    teacher_logits : Tensor of the same shape
        Floating, converted to the student's computation dtype.
    temperature : float > 0, default 1.0
        A float (or a 0-d tensor that does not require grad: it is not differentiated).
    beta : float in [0, 1], default 0.0
    target : Tensor of integers, shape ``student_logits.shape[:-1]``, optional
        Rows equal to ``ignore_index`` are left out.
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}, default "mean"
    n_threads : int, optional

    Returns
    -------
    Tensor
        A scalar, or one value per row for ``reduction="none"``, in the student's dtype
        (float32 for bfloat16/float16 under ``torch.autocast("cpu")``, as PyTorch's
        ``kl_div`` there).

    Raises
    ------
    TypeError, ValueError
        As :func:`xent_fast.distillation_loss`; the classes are also those PyTorch raises
        for the mistake (``NotImplementedError``, ``RuntimeError``, ``IndexError``).

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
    _check_tensors(student_logits, teacher_logits, target)
    grad_mode = torch.is_grad_enabled()
    for value, name in ((temperature, "temperature"), (beta, "beta")):
        if isinstance(value, torch.Tensor) and value.requires_grad and grad_mode:
            raise _xt()._ValueError(
                f"{name} is a tensor that requires grad, and distillation_loss does not "
                f"differentiate it: pass a float (or {name}.detach())")
    out_dtype = _out_dtype(student_logits)
    if teacher_logits.requires_grad and grad_mode:
        temp, b, ignore = _check_options(temperature, beta, ignore_index, reduction, n_threads)
        _check_composite(student_logits, teacher_logits, target, ignore)
        mask = None if target is None else target != ignore
        return _composite(student_logits, teacher_logits, temp, b, mask, reduction, out_dtype)
    tg = None if target is None else target.detach()
    if _compiling():
        temp, b, ignore = _check_options(temperature, beta, ignore_index, reduction, n_threads)
        return torch.ops.xent_fast.distillation(
            student_logits, teacher_logits.detach(), tg, temp, b, ignore, reduction,
            n_threads, out_dtype)[0]
    options: dict[str, Any] = dict(temperature=temperature, beta=beta, ignore_index=ignore_index,
                                   reduction=reduction, n_threads=n_threads)
    return _Distill.apply(student_logits, teacher_logits.detach(), tg, options, out_dtype)[0]


distillation_loss.__module__ = "xent_fast.torch"   # a public name of xent_fast.torch
