"""PyTorch adapter: drop-in replacements for PyTorch's and torchvision's losses.

``xent_fast.torch.cross_entropy``, ``binary_cross_entropy_with_logits`` and
``sigmoid_focal_loss`` take the arguments of ``torch.nn.functional.cross_entropy``,
``torch.nn.functional.binary_cross_entropy_with_logits`` and
``torchvision.ops.sigmoid_focal_loss``, and give the same values and gradients through
autograd. The forward calls the fused kernel on the tensor's memory (no copy for
contiguous float32/float64 CPU tensors), computing the loss and its gradient in one pass.
Only that gradient is kept for the backward, not the logits, and the backward only
scales it by the upstream gradient.

They behave as PyTorch's own ops inside PyTorch's machinery:

- ``torch.func.grad``, ``torch.func.vmap`` / ``torch.vmap`` (per-sample gradients of a
  ``functional_call`` model; extra leading dimensions): the batched dimension is folded
  into the rows, one kernel call computes every sample's rows, and the loss is reduced
  per sample;
- ``torch.compile(fullgraph=True)``: the kernels are registered as ``torch.library``
  custom ops (``torch.ops.xent_fast.cross_entropy``, ``torch.ops.xent_fast.binary_loss``)
  with fake implementations and autograd formulas, used while compiling, so no graph
  breaks (eager calls keep a cheaper ``autograd.Function`` path);
- ``torch.autocast("cpu", dtype=torch.bfloat16 or torch.float16)``: a bfloat16/float16
  input gives a float32 loss, as PyTorch's losses do there, and its gradient in the
  input's dtype;
- ``torch.jit.script``: scripting the functions, the modules, or code that calls them
  raises an error that says to use ``torch.compile`` instead (TorchScript cannot compile
  a call into these kernels).

Differences from PyTorch, on purpose:

- a ``"mean"`` that counts nothing (every row ignored) is 0 with a zero gradient, not nan;
- ``z_loss``, ``softcap``, ``n_threads`` and ``inplace`` are extra keyword arguments;
- bfloat16 and float16 are computed in float32 (rounded once); the loss is returned in
  the dtype PyTorch returns it in (the input's, promoted with a floating target's; float32
  under autocast), the gradient in the input's dtype;
- second derivatives are not supported: differentiating a gradient of these losses
  (``create_graph=True``, gradient penalties, ``torch.func.hessian``) raises
  ``RuntimeError``, never gives zeros; forward-mode AD (``torch.func.jvp``) is not
  implemented.

Per call, an eager ``cross_entropy`` on a contiguous float32/float64 ``(N, C)`` input with
class indices (and ``binary_cross_entropy_with_logits``/``sigmoid_focal_loss`` on 2-D
inputs without weights) calls the kernel directly on the tensors' memory and wraps the
result in a minimal ``autograd.Function``; what remains of the cost is mostly autograd's
own (creating the node, running the backward engine), which PyTorch's losses pay too.
Threads: PyTorch and the kernels share one OpenMP runtime (libgomp, on Linux), so
``torch.set_num_threads(k)`` also sets the kernels' default thread count (``n_threads=``
overrides it per call); inputs below 65536 elements run on the calling thread.

Only dense CPU tensors are accepted; a tensor on another device raises ``ValueError``.
A mistake raises ``TypeError`` or ``ValueError`` naming the torch argument (``input``,
``target``, ``weight``, ...), of a class that is also the type PyTorch raises for it
(``RuntimeError``, ``NotImplementedError``, ``IndexError``).
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any, NoReturn, Optional, cast

try:
    import torch
    from torch.nn.modules.loss import _Loss, _WeightedLoss
except ImportError as exc:  # pragma: no cover - exercised without torch only
    raise ImportError(
        "xent_fast.torch needs PyTorch: pip install torch "
        "(or pip install \"xent_fast[torch]\")"
    ) from exc

import numpy as np

from . import _binary as _xb
from . import _cross_entropy as _xc
from . import _validation as _xv
from ._runtime import float_scalar as _float_scalar
from ._softmax import log_softmax as _log_softmax

__all__ = [
    "cross_entropy",
    "binary_cross_entropy_with_logits",
    "sigmoid_focal_loss",
    "CrossEntropyLoss",
    "BCEWithLogitsLoss",
    "linear_cross_entropy",
    "LinearCrossEntropyLoss",
    "distillation_loss",
]

_NATIVE = (torch.float32, torch.float64)
_WIDENED = (torch.float16, torch.bfloat16)
_STRIDED = torch.strided
_F32, _F64 = torch.float32, torch.float64

# The hot path's names, bound once (each global or attribute lookup costs per call).
_Tensor = torch.Tensor
_from_numpy = torch.from_numpy
_empty = np.empty
_np_array = np.array
_grad_enabled = torch.is_grad_enabled
_transforms_active = torch._C._are_functorch_transforms_active
_INDEX_KERNEL = _xc._INDEX_KERNEL
_BINARY_KERNEL = _xb._KERNEL
_BCE_LOGITS, _FOCAL = _xb._BCE_LOGITS, _xb._FOCAL
_FLT_MAX = float(np.finfo(np.float32).max)
_INF = math.inf
_NAN = math.nan
_REDUCTIONS = ("mean", "sum", "none")

try:
    from torch.compiler import is_compiling as _compiling
except ImportError:  # pragma: no cover - older PyTorch
    def _compiling() -> bool:
        return False

try:
    # True while a backward may run again over the same graph (retain_graph/create_graph)
    from torch._C._autograd import _get_current_graph_task_keep_graph as _keep_graph
except ImportError:  # pragma: no cover - another PyTorch: always hand out a fresh gradient
    def _keep_graph() -> bool:
        return True


class _ValueError(ValueError, RuntimeError):
    """A wrong shape or value; PyTorch raises RuntimeError (or ValueError) for these."""


class _TypeError(TypeError, NotImplementedError):
    """A wrong dtype or layout; PyTorch raises NotImplementedError, a RuntimeError."""


class _IndexError(ValueError, IndexError):
    """A class index out of range; PyTorch raises IndexError."""


_OURS = (_ValueError, _TypeError, _IndexError)
_CORE_NAMES = re.compile(r"\b(logits|target)\b")


def _reraise(exc: Exception, names: dict[str, str]) -> NoReturn:
    """Re-raise an error of the NumPy core in the adapter's terms: the torch argument
    names, and a class that is also the exception type PyTorch raises for the mistake."""
    if isinstance(exc, _OURS):
        raise exc
    msg = _CORE_NAMES.sub(lambda m: names.get(m.group(1), m.group(1)), str(exc))
    if isinstance(exc, TypeError):
        raise _TypeError(msg) from None
    raise (_IndexError if "valid class index" in msg else _ValueError)(msg) from None


def _option_float(value: Any, name: str) -> float:
    """An option as a float for a custom op's schema while compiling, with the type check
    of the eager path first: float() alone took True as 1.0 and "2" as 2.0. Its range is
    checked when the op runs (the NumPy core)."""
    try:
        return _xv.check_number(value, name)
    except (TypeError, ValueError) as exc:
        _reraise(exc, {})


def _option_int(value: Any, name: str) -> int:
    """An int option for a custom op's schema (as :func:`_option_float`)."""
    try:
        return _xv.check_int64(value, name)
    except (TypeError, ValueError) as exc:
        _reraise(exc, {})


def _legacy_reduction(size_average: Any, reduce: Any, reduction: str) -> str:
    """PyTorch's deprecated ``size_average``/``reduce`` as a ``reduction``, with its
    deprecation warning. Written out rather than calling ``torch.nn._reduction``, which
    ``torch.compile(fullgraph=True)`` cannot trace from outside ``torch.nn``."""
    if size_average is None and reduce is None:
        return reduction
    if reduce is not None and not reduce:
        legacy = "none"
    elif size_average is None or size_average:
        legacy = "mean"
    else:
        legacy = "sum"
    if not _compiling():    # dynamo cannot trace warnings.warn here (a graph break)
        warnings.warn(f"size_average and reduce are deprecated; use reduction='{legacy}'",
                      UserWarning, stacklevel=3)
    return legacy


def _check_tensor(t: Any, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout is not _STRIDED:
        raise _TypeError(f"{name} is a {t.layout} tensor; xent_fast.torch takes dense tensors "
                         f"(pass {name}.to_dense())")
    if not t.is_cpu:  # (t.device costs a microsecond: only for the message)
        raise _ValueError(
            f"{name} is on device {t.device}; xent_fast.torch computes on CPU tensors only "
            "(move it with .cpu(), or use PyTorch's own loss on that device)"
        )
    return t


def _float_input(t: torch.Tensor, name: str) -> None:
    """Accept float32/float64 (computed natively) and bf16/f16 (computed in float32)."""
    if t.dtype in _NATIVE or t.dtype in _WIDENED:
        return
    raise _TypeError(f"{name} must be a floating tensor (float32, float64, float16 or "
                     f"bfloat16), got {t.dtype}")


def _loss_dtype(input: torch.Tensor, target: torch.Tensor | None = None,
                bce: bool = False) -> torch.dtype:
    """The dtype PyTorch returns the loss in: the input's, promoted with a floating
    target's for cross_entropy and the target's own for binary_cross_entropy_with_logits
    (as PyTorch does); float32 for bfloat16/float16 under CPU autocast (where PyTorch's
    losses run in float32)."""
    dt = input.dtype
    if target is not None and target.dtype is not dt and target.is_floating_point():
        dt = target.dtype if bce else torch.promote_types(dt, target.dtype)
    if dt in _WIDENED and torch.is_autocast_enabled("cpu"):
        return _F32
    return dt


def _np(t: torch.Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor's memory (no copy)."""
    t = t.detach()
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    view: np.ndarray = t.numpy()
    return view


def _apply(fn: Any, *args: Any) -> Any:
    """``fn.apply(*args)``: autograd's entry point, untyped in PyTorch's annotations."""
    return fn.apply(*args)


def _weight_np(w: Any, name: str, dtype: torch.dtype) -> np.ndarray | None:
    """A weight tensor's values in the computation dtype (bf16/f16 weights convert)."""
    if w is None:
        return None
    _check_tensor(w, name)
    if w.dtype is not dtype:
        if w.is_complex():
            raise _TypeError(f"{name} must be a real tensor, got {w.dtype}")
        w = w.detach().to(dtype)
    return _np(w)


def _not_differentiable(fn: str, name: str) -> _ValueError:
    # PyTorch's own words (and a RuntimeError, as there) for a weight it cannot differentiate
    return _ValueError(f"The function '{fn}' is not differentiable with respect to argument "
                       f"'{name}'. This input cannot have requires_grad True.")


def _double_backward(name: str) -> str:
    return (f"double backward of xent_fast.torch.{name} is not supported: its gradient "
            "cannot be differentiated again (create_graph=True for a gradient penalty, "
            "Hessians, ...); use PyTorch's own loss where second derivatives are needed")


class _NoDoubleBackward(torch.autograd.Function):
    """The gradients a backward returns under ``create_graph=True`` (and inside
    ``torch.func`` transforms, which differentiate that way): copies of the gradients
    computed from the forward's, and any attempt to differentiate them raises.

    ``anchor`` is the loss itself, saved by the loss node: it carries that node as its
    ``grad_fn`` and so connects the result to the logits' graph. A second derivative
    with respect to them reaches this backward and raises, rather than autograd's "does
    not require grad", or a silent ``None`` with ``allow_unused``. The forward is plain
    tensor operations, so functorch derives its vmap rule."""

    generate_vmap_rule = True

    @staticmethod
    def forward(name: str, anchor: torch.Tensor, *grads: torch.Tensor) -> Any:
        return tuple(g.clone() for g in grads)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        ctx.name = inputs[0]

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise RuntimeError(_double_backward(ctx.name))


def _guard(name: str, anchor: torch.Tensor, grads: tuple[Any, ...]) -> tuple[Any, ...]:
    """``grads`` (None where no gradient) made non-differentiable but for an error."""
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    out = iter(_apply(_NoDoubleBackward, name, anchor, *present))
    return tuple(None if g is None else next(out) for g in grads)


def _times(grad: torch.Tensor, grad_loss: torch.Tensor) -> torch.Tensor:
    """``grad_output * d(loss)/d(input)`` from the gradient of the loss's own value: a
    per-row (or per-element) upstream gradient broadcasts over the class dimension."""
    g = grad_loss if grad_loss.dtype is grad.dtype else grad_loss.to(grad.dtype)
    if grad.dim() > g.dim() > 0:
        g = g.unsqueeze(1)
    return grad * g


def _scale(grad: torch.Tensor, grad_loss: torch.Tensor, fresh: bool) -> torch.Tensor:
    """:func:`_times`, without an N x C pass for the usual ``loss.backward()`` (a scalar
    upstream gradient of 1); a copy only where the graph is kept (a hook may edit the
    gradient it is handed in place), and otherwise in place in the saved gradient."""
    if grad_loss.dim() or _transforms_active():
        return _times(grad, grad_loss)
    if grad_loss.item() == 1.0:
        return grad.clone() if fresh else grad
    if fresh:
        return _times(grad, grad_loss)
    return grad.mul_(grad_loss)


# --- cross_entropy ---------------------------------------------------------------------

class _FastCrossEntropy(torch.autograd.Function):
    """The eager hot path: the kernel already ran (in :func:`cross_entropy`, on the
    tensors' memory); the forward wraps its loss and gradient, the backward scales the
    gradient. The gradient is saved (autograd releases it once the node has run, so that
    it becomes ``input.grad`` without a copy), and so is the loss (a few bytes), the
    anchor of :class:`_NoDoubleBackward`."""

    loss_name = "cross_entropy"

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, loss: np.ndarray, grad: np.ndarray) -> Any:
        out = _from_numpy(loss)
        ctx.save_for_backward(_from_numpy(grad), out)
        return out

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> Any:
        grad, anchor = ctx.saved_tensors
        if _grad_enabled():  # create_graph=True
            name = ctx._forward_cls.loss_name  # (ctx.name is the node's own method)
            return _guard(name, anchor, (_times(grad, grad_loss),)) + (None, None)
        # _scale inline (this Function never runs under torch.func transforms)
        if not grad_loss.dim() and grad_loss.item() == 1.0:
            return (grad.clone() if _keep_graph() else grad), None, None
        return _scale(grad, grad_loss, _keep_graph()), None, None


def _rows_layout(x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs as the row kernels take them: float32/float64, classes on the last axis
    (PyTorch's ``(N, C, d1..dK)`` has them at dimension 1: one copy, in the kernel call)."""
    soft = target.is_floating_point()
    if x.dtype in _WIDENED:
        x = x.float()
    if x.dim() > 2:
        x = x.movedim(1, -1)
        if soft and target.dim() == x.dim():  # else the core reports the shape mismatch
            target = target.movedim(1, -1)
    if soft and target.dtype != x.dtype:
        target = target.to(x.dtype)
    return x, target


def _from_rows_layout(g: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    """A class-last gradient back in ``input``'s layout and dtype."""
    if g.dtype != input.dtype:
        g = g.to(input.dtype)  # bf16/f16: keep the saved gradient at the input's size
    return g.movedim(-1, 1) if input.dim() > 2 else g


def _log_probs(x: np.ndarray, cap: Any) -> torch.Tensor:
    """log_softmax of the (soft-capped) logits in float64, classes last."""
    z = x.astype(np.float64)
    if cap is not None:
        z = cap * np.tanh(z / cap)
    return torch.from_numpy(np.asarray(_log_softmax(z)))


def _check_overlap(x: np.ndarray, others: tuple[tuple[Any, str], ...]) -> None:
    """In place, the kernel writes over ``x``: no other argument may share its memory
    (checked on the arrays the kernel gets, not on the tensors they came from)."""
    for arr, name in others:
        if arr is not None and np.may_share_memory(x, arr):
            raise _ValueError(f"inplace=True would write the gradient over {name}, which "
                              "shares memory with input; use inplace=False")


def _ce_forward(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                options: dict[str, Any], inplace: bool, soft: bool,
                out_dtype: torch.dtype | None) -> tuple[Any, Any, Any]:
    """(loss in ``out_dtype``, gradient in ``input``'s layout and dtype, float64
    log-probabilities classes last if ``soft`` else None), every option checked by the
    core. ``out_dtype=None`` leaves the loss in the computation dtype."""
    dtype = input.dtype if input.dtype in _NATIVE else _F32
    w = _weight_np(weight, "weight", dtype)
    x, t = _rows_layout(input.detach(), target.detach())
    x_np, t_np = _np(x), _np(t)
    if inplace:
        _check_overlap(x_np, ((t_np, "target"), (w, "weight")))
    # Probability targets' and weights' gradients need log_softmax(logits), taken
    # before the kernel: in place, it writes the gradient over the logits.
    lp = _log_probs(x_np, options["softcap"]) if soft else None
    loss, grad = _xc.cross_entropy_and_grad(
        x_np, t_np, weight=w, grad_out=x_np if inplace else None, **options)
    loss_t = torch.as_tensor(loss)
    if out_dtype is not None and loss_t.dtype is not out_dtype:
        loss_t = loss_t.to(out_dtype)
    grad_t = input if inplace else _from_rows_layout(torch.from_numpy(grad), input)
    return loss_t, grad_t, lp


class _CrossEntropy(torch.autograd.Function):
    """Every case the hot path leaves: loss and gradient in the forward pass, the
    backward scales the saved gradient (and, for probability targets and weights that
    require grad, their gradients from the log-probabilities). ``setup_context`` style,
    with a ``vmap`` rule, so that ``torch.func`` transforms work."""

    @staticmethod
    def forward(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                options: dict[str, Any], inplace: bool, soft: bool,
                out_dtype: torch.dtype | None) -> Any:
        return _ce_forward(input, target, weight, options, inplace, soft, out_dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        input, target, weight, options, inplace, soft, _ = inputs
        loss, grad, lp = output
        ctx.set_materialize_grads(False)
        if inplace:
            ctx.mark_dirty(input)
        ctx.mark_non_differentiable(grad)
        ctx.options = options
        if soft:
            ctx.mark_non_differentiable(lp)
            ctx.in_layout = (input.dim(), target.dtype,
                             None if weight is None else weight.dtype)
            ctx.save_for_backward(grad, loss, lp, target if ctx.needs_input_grad[2] else None,
                                  weight)
        else:
            ctx.save_for_backward(grad, loss)

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor | None, *unused: Any) -> Any:
        if grad_loss is None:
            return (None,) * 7
        saved = ctx.saved_tensors
        guarded = _grad_enabled()  # create_graph=True, and torch.func transforms
        grad = saved[0]
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (_times(grad, grad_loss) if guarded
                      else _scale(grad, grad_loss, _keep_graph()))
        grad_t = grad_w = None
        if len(saved) > 2:
            _, _, lp, t, weight = saved
            grad_t, grad_w = _soft_grads(
                lp, t, weight, grad_loss, ctx.options["reduction"],
                ctx.options["label_smoothing"], ctx.in_layout,
                ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        grads = (grad_x, grad_t, grad_w)
        if guarded:
            grads = _guard("cross_entropy", saved[1], grads)
        return grads + (None,) * 4

    @staticmethod
    def vmap(info: Any, in_dims: Any, input: torch.Tensor, target: torch.Tensor,
             weight: torch.Tensor | None, options: dict[str, Any], inplace: bool,
             soft: bool, out_dtype: torch.dtype | None) -> Any:
        """One kernel call for every sample: the vmapped dimension folded into the rows,
        per-row losses, then each sample's reduction (its own "mean" denominator)."""
        b = info.batch_size
        xd, td, wd = in_dims[:3]
        if wd is not None:  # a weight per sample: one call per sample
            return _per_sample(_CrossEntropy, info, in_dims, (
                input, target, weight, options, False, soft, out_dtype), (0, 0, 0))
        x = input.movedim(xd, 0) if xd is not None else input.expand(b, *input.shape)
        t = target.movedim(td, 0) if td is not None else target.expand(b, *target.shape)
        one_row = x.dim() == 2  # samples of shape (C,): one row each
        xf = x if one_row else x.reshape(-1, *x.shape[2:])
        tf = t if one_row or t.dim() < 2 else t.reshape(-1, *t.shape[2:])
        reduction = options["reduction"]
        rows_opts = dict(options, reduction="none")
        loss_rows, grad_rows, lp = _apply(_CrossEntropy, xf, tf, weight, rows_opts, False,
                                          soft, None)
        grad = grad_rows.reshape(x.shape)
        if lp is not None and not one_row:
            lp = lp.reshape(b, -1, *lp.shape[1:])
        if reduction == "none":
            loss = loss_rows if one_row else loss_rows.reshape(b, x.shape[1], *x.shape[3:])
        else:
            per = loss_rows.reshape(b, -1)
            loss = per.sum(1)
            if reduction == "mean":
                if tf.is_floating_point():
                    count = torch.full((b,), per.shape[1], dtype=per.dtype)
                    denom = count
                else:
                    valid = tf.reshape(b, -1) != options["ignore_index"]
                    count = valid.sum(1)
                    if weight is None:
                        denom = count.to(per.dtype)
                    else:
                        n_classes = x.shape[-1] if one_row else x.shape[2]
                        w = weight.detach().to(per.dtype)
                        wt = w[tf.reshape(b, -1).clamp(0, max(n_classes - 1, 0))]
                        denom = torch.where(valid, wt, torch.zeros((), dtype=per.dtype)).sum(1)
                # 0 when a sample counts nothing (as the core), nan when its weights sum to 0
                empty = torch.where(count > 0, _NAN, 0.0).to(per.dtype)
                safe = torch.where(denom != 0, denom, torch.ones((), dtype=per.dtype))
                loss = torch.where(denom != 0, loss / safe, empty)
                scale = torch.where(denom != 0, 1.0 / safe, empty)
                grad = grad * scale.to(grad.dtype).reshape(b, *(1,) * (grad.dim() - 1))
        if out_dtype is not None:
            loss = loss.to(out_dtype)
        return (loss, grad, lp), (0, 0, None if lp is None else 0)


def _per_sample(fn: Any, info: Any, in_dims: Any, args: tuple[Any, ...],
                out_dims: tuple[Any, ...]) -> Any:
    """A vmap rule by a loop over the samples (for a weight that differs per sample)."""
    outs = []
    for i in range(info.batch_size):
        sample = tuple(a.select(d, i) if isinstance(a, torch.Tensor) and d is not None
                       else a for a, d in zip(args, in_dims))
        outs.append(_apply(fn, *sample))
    stacked = tuple(None if o[0] is None else torch.stack(o) for o in zip(*outs))
    return stacked, tuple(None if s is None else d for s, d in zip(stacked, out_dims))


def _soft_grads(lp: torch.Tensor, t: torch.Tensor | None, weight: torch.Tensor | None,
                grad_loss: torch.Tensor, reduction: str, eps: float,
                in_layout: tuple[Any, ...], want_t: bool, want_w: bool) -> tuple[Any, Any]:
    """The gradients of probability targets and class weights, in tensor operations.

    Loss row r = -sum_c w_c q_rc lp_rc (+ z_loss, free of target and weight), with
    q = (1 - eps) target + eps / C: d/dtarget = -(1 - eps) w lp, d/dw = -sum_r q lp."""
    n_classes = lp.shape[-1]
    rows = lp.numel() // n_classes if n_classes else 0
    g = grad_loss.to(torch.float64)
    if reduction == "none":
        g = g.unsqueeze(-1) if g.dim() else g  # rows layout: classes last
    elif reduction == "mean":
        g = g / rows if rows else g * 0.0
    glp = lp * g
    dim, t_dtype, w_dtype = in_layout
    grad_t = grad_w = None
    if want_t:
        gt = -(1.0 - eps) * glp
        if weight is not None:
            gt = gt * weight.detach().to(torch.float64)
        grad_t = (gt.movedim(-1, 1) if dim > 2 else gt).to(t_dtype)
    if want_w and t is not None:
        tt = t.movedim(1, -1) if dim > 2 else t
        q = tt.to(torch.float64) * (1.0 - eps) + eps / n_classes
        grad_w = (-(q * glp)).reshape(-1, n_classes).sum(0).to(w_dtype)
    return grad_t, grad_w


def _explain_cross_entropy(input: torch.Tensor, target: torch.Tensor,
                           weight: torch.Tensor | None) -> None:
    """Raise the shape mistake behind a core error in the torch layout (classes at
    dimension 1), where the core saw the classes last; return if there is none."""
    if input.dim() == 0:
        raise _ValueError("input must have shape (C,), (N, C) or (N, C, d1, ..., dK), got a "
                          "0-d tensor")
    cdim = 0 if input.dim() == 1 else 1
    shape = tuple(input.shape)
    n_classes, batch = shape[cdim], shape[:cdim] + shape[cdim + 1:]
    if n_classes == 0:
        raise _IndexError(f"input has no classes: dimension {cdim} of its shape {shape} "
                          "has length 0")
    tshape = tuple(target.shape)
    if target.is_floating_point() and tshape != shape:
        if tshape == batch:
            raise _TypeError(f"target has dtype {target.dtype} and the shape of class indices "
                             f"{batch}: class indices must be integers (probability "
                             f"targets need input's shape {shape})")
        raise _ValueError(f"target must hold class indices of shape {batch} or "
                          f"probabilities of input's shape {shape}, got shape {tshape}")
    if not target.is_floating_point() and tshape != batch:
        raise _ValueError(f"target holds class indices and must have shape {batch} (input's "
                          f"shape without the class dimension {cdim}), got {tshape}")
    if weight is not None and tuple(weight.shape) != (n_classes,):
        raise _ValueError(f"weight must have shape ({n_classes},), one value per class, got "
                          f"{tuple(weight.shape)}")


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
    n_threads: int | None = None,
    inplace: bool = False,
) -> torch.Tensor:
    """Drop-in ``torch.nn.functional.cross_entropy`` on CPU tensors.

    The class dimension is dimension 1 (or 0 for a 1-D input), as in PyTorch: ``input``
    is ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``; ``target`` holds class indices of
    shape ``(N, d1, ..., dK)`` or class probabilities of ``input``'s shape.

    Parameters
    ----------
    input : torch.Tensor
        Logits; float32/float64 computed natively, bfloat16/float16 in float32.
    target : torch.Tensor
        Class indices (any integer dtype) or probabilities.
    weight, size_average, ignore_index, reduce, reduction, label_smoothing : optional
        As ``torch.nn.functional.cross_entropy``. A ``weight`` of another floating dtype
        (bfloat16, float16, ...) is converted to the computation dtype. As in PyTorch,
        a ``weight`` that requires grad gets its gradient with probability targets, and
        raises ``RuntimeError`` with class indices.
    z_loss : float, default 0.0
        Adds ``z_loss * logsumexp(row)**2`` to each counted row (PaLM's auxiliary loss).
    softcap : float, optional
        Computes on ``softcap * tanh(input / softcap)`` (Gemma 2's logit soft-capping).
    n_threads : int, optional
        OpenMP threads; by default those allowed by ``OMP_NUM_THREADS`` and threadpoolctl.
    inplace : bool, default False
        Write the gradient into ``input``'s memory in the forward pass, so that no N x C
        buffer is allocated. ``input`` then holds the gradient, and autograd knows it was
        modified (using its old values afterwards raises autograd's in-place error). It
        needs a contiguous float32/float64 ``(N, C)`` or ``(C,)`` input computed by
        autograd (not a leaf) that owns its memory: a view (a slice, ``.view()``,
        ``.reshape()``), memory shared with NumPy, or an ``input`` sharing memory with
        ``target`` or ``weight`` raises ``ValueError`` before anything is written.
        Without autograd, or when ``input`` does not require grad, nothing is written.

    Returns
    -------
    torch.Tensor
        The loss: a 0-d tensor, or per row with ``reduction="none"``.

    Raises
    ------
    ValueError, TypeError
        For a mistake, of a class that is also the exception PyTorch raises for it
        (``IndexError`` for a class index out of range, ``RuntimeError`` for a shape).
    RuntimeError
        When a second derivative is taken (double backward is not supported).

    Examples
    --------
    >>> import torch, xent_fast.torch as xft
    >>> logits = torch.tensor([[2.0, 1.0, 0.1]], requires_grad=True)
    >>> loss = xft.cross_entropy(logits, torch.tensor([0]))
    >>> loss.backward()
    >>> round(loss.item(), 4), [round(v, 4) for v in logits.grad[0].tolist()]
    (0.417, [-0.341, 0.2424, 0.0986])
    """
    # The hot path: a dense (N, C) float32/float64 CPU input with class indices and no
    # weight, eager and outside torch.func: the kernel runs here, on the tensors' memory,
    # and checks the arrays itself; anything it refuses takes the general path below,
    # which names the mistake.
    if (type(input) is _Tensor and type(target) is _Tensor and weight is None
            and size_average is None and reduce is None and softcap is None and not inplace
            and type(label_smoothing) is float and 0.0 <= label_smoothing <= 1.0
            and type(z_loss) is float and 0.0 <= z_loss < _INF
            and type(ignore_index) is int and type(reduction) is str
            and reduction in _REDUCTIONS and input.is_cpu
            and not _transforms_active() and not _compiling()):
        try:
            x = input.numpy(force=True)
            t = target.numpy()
            grad = _empty(x.shape, x.dtype) if input.requires_grad and _grad_enabled() else None
            rows = _empty(t.shape, x.dtype) if reduction == "none" else None
            nt = (0 if n_threads is None and not _xv._forked_child
                  else _xv.check_threads(n_threads))
            total, denom, count, bad = _INDEX_KERNEL(
                x, t, None, rows, grad, None, 1.0, reduction == "mean", ignore_index,
                label_smoothing, z_loss, 0.0, nt)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            bad = 0
        if bad < 0 and not count and not x.shape[1]:
            bad = 0  # an empty class dimension: the general path names the mistake
        if bad < 0:
            if rows is None:
                if reduction == "mean":
                    total = total / denom if denom else (_NAN if count else 0.0)
                rows = (_np_array(total, x.dtype) if -_FLT_MAX <= total <= _FLT_MAX
                        else _scalar_array(total, x))
            if grad is None:
                return _from_numpy(rows)
            return _fast_apply(input, rows, grad)
    return _cross_entropy(input, target, weight, size_average, ignore_index, reduce,
                          reduction, label_smoothing, z_loss, softcap, n_threads, inplace)


_fast_apply = super(torch.autograd.Function, _FastCrossEntropy).apply


def _cross_entropy(input: Any, target: Any, weight: Any, size_average: Any, ignore_index: Any,
                   reduce: Any, reduction: Any, label_smoothing: Any, z_loss: Any,
                   softcap: Any, n_threads: Any, inplace: Any) -> torch.Tensor:
    """Every case the hot path leaves (and every mistake)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if (isinstance(input, torch.Tensor) and isinstance(target, torch.Tensor)
            and target.is_floating_point() and target.shape == input.shape
            and type(ignore_index) is int and ignore_index >= 0):
        # probability targets have no class to ignore: PyTorch refuses a non-negative one
        # (a RuntimeError) rather than leave it without effect
        raise _ValueError(f"ignore_index is not supported for floating point target "
                          f"(probabilities), got ignore_index={ignore_index}; only a "
                          "negative value (the default -100) is accepted")
    if _compiling():
        return _compiled_cross_entropy(input, target, weight, ignore_index, reduction,
                                       label_smoothing, z_loss, softcap, n_threads)
    _check_tensor(input, "input")
    _check_tensor(target, "target")
    _float_input(input, "input")
    if (isinstance(input, torch.Tensor) and isinstance(target, torch.Tensor)
            and input.dim() and target.shape == input.shape and target.is_floating_point()
            and not input.shape[1 if input.dim() > 1 else 0] and reduction in _REDUCTIONS
            and isinstance(label_smoothing, (int, float)) and 0 <= label_smoothing <= 1
            and not _compiling()):
        # probabilities over no classes (the core refuses an empty class axis): each row's
        # loss is an empty sum, 0, as in PyTorch (whose "mean" is nan there, 0 here)
        rows = (input * target).sum(1 if input.dim() > 1 else 0).to(
            _loss_dtype(input, target)).abs()
        return rows if reduction == "none" else rows.sum()
    options: dict[str, Any] = dict(
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap, n_threads=n_threads)
    grad_mode = _grad_enabled()
    functorch = _transforms_active()
    weight_grad = grad_mode and weight is not None and weight.requires_grad
    out_dtype = _loss_dtype(input, target)
    try:
        if not functorch and not (grad_mode and (input.requires_grad or target.requires_grad
                                                 or weight_grad)):
            dtype = input.dtype if input.dtype in _NATIVE else _F32
            x, t = _rows_layout(input.detach(), target.detach())
            loss = _xc.cross_entropy(_np(x), _np(t), weight=_weight_np(weight, "weight", dtype),
                                     **options)
            return torch.as_tensor(loss).to(out_dtype)
        if weight_grad and not target.is_floating_point():
            raise _not_differentiable("nll_loss_forward", "weight")
        inplace = inplace and input.requires_grad and grad_mode and not functorch
        if inplace:
            _check_inplace(input)
        soft = grad_mode and target.is_floating_point() and (target.requires_grad or weight_grad)
        return cast(torch.Tensor, _apply(_CrossEntropy, input, target, weight, options,
                                         inplace, soft, out_dtype)[0])
    except (TypeError, ValueError) as exc:
        if not isinstance(exc, _OURS):
            _explain_cross_entropy(input, target, weight)
        _reraise(exc, {"logits": "input"})


def _scalar_array(value: float, x: np.ndarray) -> np.ndarray:
    """A 0-d array of ``x``'s dtype holding ``value``, rounded once."""
    if -_FLT_MAX <= value <= _FLT_MAX or x.dtype.num == 12:
        return _np_array(value, x.dtype)
    return _np_array(_float_scalar(value, 11))  # float32 overflow (to inf, no warning), nan


def _check_inplace(input: torch.Tensor) -> None:
    if input.dtype not in _NATIVE or not input.is_contiguous() or input.dim() > 2:
        raise _ValueError("inplace=True needs a contiguous float32 or float64 input of shape "
                          "(N, C) or (C,); this input would be copied anyway")
    if input.is_leaf:
        raise _ValueError("inplace=True would overwrite a leaf tensor that requires grad; "
                          "use it on computed logits (e.g. the output of a Linear layer)")
    storage = input.untyped_storage()
    if (input._base is not None or input.storage_offset()
            or storage.nbytes() != input.numel() * input.element_size()
            or not storage.resizable()):
        # A view (its base would change under autograd's feet), or memory that PyTorch
        # does not own alone (torch.from_numpy, DLPack): refuse before writing anything.
        raise _ValueError("inplace=True writes the gradient into input's memory, which "
                          "input does not own alone: it is a view of another tensor (a "
                          "slice, .view(), .reshape()) or memory shared with NumPy. Use "
                          "inplace=False, or compute the logits in their (N, C) shape")


# --- binary_cross_entropy_with_logits, sigmoid_focal_loss ---------------------------------

def _binary_layout(x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dtype in _WIDENED:
        x = x.float()
    if target.dtype != x.dtype:
        if target.is_complex():  # (named in the caller's terms by _reraise)
            raise TypeError(f"target must be a real tensor, got {target.dtype}")
        target = target.to(x.dtype)
    return x, target


def _bce_target_grad(x: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
    """d(loss)/d(target) of BCE on logits: w (pw softplus(-x) - softplus(x)), divided as
    the reduction divides."""
    xd = x.detach().double()
    sp = torch.nn.functional.softplus
    pw = options["pos_weight"]
    pos = sp(-xd) if pw is None else torch.as_tensor(pw, dtype=torch.float64) * sp(-xd)
    g = pos - sp(xd)
    if options["weight"] is not None:
        g = g * torch.as_tensor(options["weight"], dtype=torch.float64)
    if options["reduction"] == "mean" and g.numel():
        g = g / g.numel()
    return g


def _binary_forward(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                    pos_weight: torch.Tensor | None, kind: str, options: dict[str, Any],
                    soft: bool, out_dtype: torch.dtype | None) -> tuple[Any, Any, Any]:
    """(loss, gradient in ``input``'s dtype, the target's gradient if ``soft``)."""
    dtype = input.dtype if input.dtype in _NATIVE else _F32
    x, t = _binary_layout(input.detach(), target.detach())
    opts = dict(options)
    if kind == "bce":
        opts["weight"] = _weight_np(weight, "weight", dtype)
        opts["pos_weight"] = _weight_np(pos_weight, "pos_weight", dtype)
        fn: Any = _xb.binary_cross_entropy_with_logits_and_grad
    else:
        fn = _xb.sigmoid_focal_loss_and_grad
    loss, grad = fn(_np(x), _np(t), **opts)
    grad_t = torch.from_numpy(grad).to(input.dtype)
    tgrad = _bce_target_grad(x, opts).to(target.dtype) if soft else None
    loss_t = torch.as_tensor(loss)
    if out_dtype is not None and loss_t.dtype is not out_dtype:
        loss_t = loss_t.to(out_dtype)
    return loss_t, grad_t, tgrad


_BINARY_NAMES = {"bce": "binary_cross_entropy_with_logits", "focal": "sigmoid_focal_loss"}


class _FastBCE(_FastCrossEntropy):
    """:class:`_FastCrossEntropy` for the elementwise losses."""

    loss_name = "binary_cross_entropy_with_logits"


class _FastFocal(_FastCrossEntropy):
    loss_name = "sigmoid_focal_loss"


_FAST_BINARY_APPLY = {
    _BCE_LOGITS: super(torch.autograd.Function, _FastBCE).apply,
    _FOCAL: super(torch.autograd.Function, _FastFocal).apply,
}


class _Binary(torch.autograd.Function):
    """Elementwise losses: the gradient with respect to the logits comes from the forward
    kernel; the target's gradient (rare) from the logits, while they are at hand.
    ``setup_context`` style with a ``vmap`` rule, as :class:`_CrossEntropy`."""

    @staticmethod
    def forward(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                pos_weight: torch.Tensor | None, kind: str, options: dict[str, Any],
                soft: bool, out_dtype: torch.dtype | None) -> Any:
        return _binary_forward(input, target, weight, pos_weight, kind, options, soft,
                               out_dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        kind = inputs[4]
        loss, grad, tgrad = output
        ctx.set_materialize_grads(False)
        ctx.name = _BINARY_NAMES[kind]
        ctx.mark_non_differentiable(grad)
        if tgrad is not None:
            ctx.mark_non_differentiable(tgrad)
        ctx.save_for_backward(grad, loss, tgrad)

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor | None, *unused: Any) -> Any:
        if grad_loss is None:
            return (None,) * 8
        grad, anchor, tgrad = ctx.saved_tensors
        guarded = _grad_enabled()  # create_graph=True, and torch.func transforms
        fresh = guarded or _keep_graph()
        out: list[Any] = []
        for g, needed in ((grad, ctx.needs_input_grad[0]), (tgrad, ctx.needs_input_grad[1])):
            if not needed or g is None:
                out.append(None)
            else:
                out.append(_times(g, grad_loss) if guarded else _scale(g, grad_loss, fresh))
        grads = tuple(out)
        if guarded:
            grads = _guard(ctx.name, anchor, grads)
        return grads + (None,) * 6

    @staticmethod
    def vmap(info: Any, in_dims: Any, input: torch.Tensor, target: torch.Tensor,
             weight: torch.Tensor | None, pos_weight: torch.Tensor | None, kind: str,
             options: dict[str, Any], soft: bool, out_dtype: torch.dtype | None) -> Any:
        """Every sample's elements in one call, then each sample's reduction."""
        b = info.batch_size
        xd, td, wd, pd = in_dims[:4]
        if wd is not None or pd is not None:
            return _per_sample(_Binary, info, in_dims, (
                input, target, weight, pos_weight, kind, options, soft, out_dtype), (0, 0, 0))
        x = input.movedim(xd, 0) if xd is not None else input.expand(b, *input.shape)
        t = target.movedim(td, 0) if td is not None else target.expand(b, *target.shape)
        reduction = options["reduction"]
        loss, grad, tgrad = _apply(_Binary, x, t, weight, pos_weight, kind,
                                   dict(options, reduction="none"), soft, None)
        if reduction != "none":
            loss = loss.reshape(b, -1).sum(1)
            if reduction == "mean":
                size = x[0].numel()
                loss = loss / size if size else loss * 0.0
                grad = grad / size if size else grad * 0.0
                if tgrad is not None:
                    tgrad = tgrad / size if size else tgrad * 0.0
        if out_dtype is not None:
            loss = loss.to(out_dtype)
        return (loss, grad, tgrad), (0, 0, None if tgrad is None else 0)


def binary_cross_entropy_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: torch.Tensor | None = None,
    *,
    n_threads: int | None = None,
) -> torch.Tensor:
    """Drop-in ``torch.nn.functional.binary_cross_entropy_with_logits`` on CPU tensors.

    Parameters
    ----------
    input : torch.Tensor
        Logits of any shape; each element is one binary problem (multi-label: ``(N, C)``).
    target : torch.Tensor
        Same shape, 0/1 or soft labels. Differentiable, as in PyTorch.
    weight, size_average, reduce, reduction, pos_weight : optional
        As PyTorch: ``weight`` broadcasts to the input, ``pos_weight`` along the last axis;
        other floating dtypes (bfloat16, ...) are converted to the computation dtype. As
        in PyTorch, they cannot require grad (``RuntimeError``).
    n_threads : int, optional
        OpenMP threads.

    Returns
    -------
    torch.Tensor
        A 0-d loss, or elementwise with ``reduction="none"``.

    Examples
    --------
    >>> import torch, xent_fast.torch as xft
    >>> x = torch.tensor([[1.5, -0.5]], requires_grad=True)
    >>> loss = xft.binary_cross_entropy_with_logits(x, torch.tensor([[1.0, 0.0]]))
    >>> loss.backward()
    >>> round(loss.item(), 4), [round(v, 4) for v in x.grad[0].tolist()]
    (0.3377, [-0.0912, 0.1888])
    """
    # The hot path, as cross_entropy's: a dense 2-D float32/float64 CPU input and a target
    # of its dtype and shape that needs no gradient, no weights, eager, outside torch.func.
    if (type(input) is _Tensor and type(target) is _Tensor and weight is None
            and pos_weight is None and size_average is None and reduce is None
            and type(reduction) is str and reduction in _REDUCTIONS and input.is_cpu
            and not _transforms_active() and not _compiling()):
        result = _binary_fast(_BCE_LOGITS, input, target, reduction, 0.0, 0.0, n_threads)
        if result is not None:
            return result
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if not _compiling():
        _check_tensor(input, "input")
        _check_tensor(target, "target")
        _float_input(input, "input")
    if input.shape != target.shape:
        raise _ValueError(f"target size ({tuple(target.shape)}) must be the same as input "
                          f"size ({tuple(input.shape)})")
    if _grad_enabled():
        for w, name in ((weight, "weight"), (pos_weight, "pos_weight")):
            if w is not None and w.requires_grad:
                raise _not_differentiable("binary_cross_entropy_with_logits", name)
    options: dict[str, Any] = dict(reduction=reduction, n_threads=n_threads)
    return _binary("bce", input, target, weight, pos_weight, options, {"logits": "input"})


def sigmoid_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2,
    reduction: str = "none",
    *,
    n_threads: int | None = None,
) -> torch.Tensor:
    """Drop-in ``torchvision.ops.sigmoid_focal_loss`` on CPU tensors (RetinaNet's loss).

    Parameters
    ----------
    inputs : torch.Tensor
        Logits of any shape.
    targets : torch.Tensor
        Same shape, 0/1 or soft labels. Its gradient is not computed: a target that
        requires grad raises ``ValueError``.
    alpha : float <= 1, default 0.25
        Weight of the positives; negative disables the balancing term.
    gamma : float >= 0, default 2
        Focusing exponent.
    reduction : {"none", "mean", "sum"}, default "none"
        As torchvision.
    n_threads : int, optional
        OpenMP threads.

    Returns
    -------
    torch.Tensor

    Examples
    --------
    >>> import torch, xent_fast.torch as xft
    >>> x = torch.tensor([3.0, -1.0], requires_grad=True)
    >>> loss = xft.sigmoid_focal_loss(x, torch.tensor([1.0, 1.0]), reduction="sum")
    >>> loss.backward()
    >>> round(loss.item(), 4), [round(v, 4) for v in x.grad.tolist()]
    (0.1755, [-0.0001, -0.1921])
    """
    if (type(inputs) is _Tensor and type(targets) is _Tensor and type(alpha) is float
            and -_INF < alpha <= 1.0 and (type(gamma) is float or type(gamma) is int)
            and 0 <= gamma < _INF
            and type(reduction) is str and reduction in _REDUCTIONS and inputs.is_cpu
            and not _transforms_active() and not _compiling()):
        result = _binary_fast(_FOCAL, inputs, targets, reduction, alpha, gamma, n_threads)
        if result is not None:
            return result
    if not _compiling():
        _check_tensor(inputs, "inputs")
        _check_tensor(targets, "targets")
        _float_input(inputs, "inputs")
    if inputs.shape != targets.shape:
        raise _ValueError(f"targets size ({tuple(targets.shape)}) must be the same as inputs "
                          f"size ({tuple(inputs.shape)})")
    if targets.requires_grad and _grad_enabled():
        raise _ValueError("xent_fast.torch.sigmoid_focal_loss does not differentiate with "
                          "respect to targets; pass targets.detach()")
    options: dict[str, Any] = dict(alpha=alpha, gamma=gamma, reduction=reduction,
                                   n_threads=n_threads)
    return _binary("focal", inputs, targets, None, None, options,
                   {"logits": "inputs", "target": "targets"})


def _binary_fast(kind: int, input: torch.Tensor, target: torch.Tensor, reduction: str,
                 alpha: float, gamma: float, n_threads: Any) -> Any:
    """The elementwise losses' hot path (None: take the general one)."""
    try:
        x = input.numpy(force=True)
        t = target.numpy()  # (refuses a target that requires grad: its gradient is general)
        grad = _empty(x.shape, x.dtype) if input.requires_grad and _grad_enabled() else None
        rows = _empty(x.shape, x.dtype) if reduction == "none" else None
        size = x.size
        scale = (1.0 / size if size else 0.0) if reduction == "mean" else 1.0
        nt = 0 if n_threads is None and not _xv._forked_child else _xv.check_threads(n_threads)
        if x.ndim == 2:
            total, _ = _BINARY_KERNEL(kind, x, t, None, None, rows, grad, None, scale, alpha,
                                      gamma, nt)
        elif t.shape == x.shape and x.ndim and x.flags.c_contiguous:
            # (N,) or (N, d1, ...): the kernel's rows are the last axis
            shape = (-1, x.shape[-1]) if x.shape[-1] else (0, 0)
            total, _ = _BINARY_KERNEL(
                kind, x.reshape(shape), t.reshape(shape), None, None,
                None if rows is None else rows.reshape(shape),
                None if grad is None else grad.reshape(shape), None, scale, alpha, gamma, nt)
        else:
            return None
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return None
    if rows is None:
        if reduction == "mean":
            total = total / size if size else 0.0
        rows = _scalar_array(total, x)
    if grad is None:
        return _from_numpy(rows)
    return _FAST_BINARY_APPLY[kind](input, rows, grad)


def _binary(kind: str, input: torch.Tensor, target: torch.Tensor, weight: Any,
            pos_weight: Any, options: dict[str, Any], names: dict[str, str]) -> torch.Tensor:
    if _compiling():
        return _compiled_binary(kind, input, target, weight, pos_weight, options)
    functorch = _transforms_active()
    grad_mode = _grad_enabled()
    out_dtype = _loss_dtype(input, target, bce=True)
    try:
        if not functorch and not (grad_mode and (input.requires_grad or target.requires_grad)):
            dtype = input.dtype if input.dtype in _NATIVE else _F32
            x, t = _binary_layout(input.detach(), target.detach())
            opts = dict(options)
            if kind == "bce":
                opts["weight"] = _weight_np(weight, "weight", dtype)
                opts["pos_weight"] = _weight_np(pos_weight, "pos_weight", dtype)
            fn = (_xb.binary_cross_entropy_with_logits if kind == "bce"
                  else _xb.sigmoid_focal_loss)
            return torch.as_tensor(fn(_np(x), _np(t), **opts)).to(out_dtype)
        soft = grad_mode and target.requires_grad
        return cast(torch.Tensor, _apply(_Binary, input, target, weight, pos_weight, kind,
                                         options, soft, out_dtype)[0])
    except (TypeError, ValueError) as exc:
        _reraise(exc, names)


# --- torch.compile: the kernels as torch.library custom ops ------------------------------
# While compiling, the losses call these ops, which Dynamo puts in the graph as they are
# (no graph break), with shapes from the fake implementations and the backward from the
# registered autograd formulas. Eager calls take the autograd.Functions above, which cost
# less per call than the dispatcher's route to a Python kernel.

_CE_SCHEMA = ("(Tensor input, Tensor target, Tensor? weight, int ignore_index, str reduction, "
              "float label_smoothing, float z_loss, float? softcap, int? n_threads, "
              "bool soft, ScalarType out_dtype) -> (Tensor, Tensor, Tensor)")
_BINARY_SCHEMA = ("(Tensor input, Tensor target, Tensor? weight, Tensor? pos_weight, "
                  "str kind, str reduction, float alpha, float gamma, int? n_threads, "
                  "bool soft, ScalarType out_dtype) -> (Tensor, Tensor, Tensor)")


@torch.library.custom_op("xent_fast::cross_entropy", mutates_args=(), schema=_CE_SCHEMA)
def _ce_op(input: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor],
           ignore_index: int, reduction: str, label_smoothing: float, z_loss: float,
           softcap: Optional[float], n_threads: Optional[int], soft: bool,
           out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, gradient, float64 log-probabilities classes last or an empty tensor)."""
    options = dict(ignore_index=ignore_index, reduction=reduction,
                   label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
                   n_threads=n_threads)
    try:
        loss, grad, lp = _ce_forward(input, target, weight, options, False, soft, out_dtype)
    except (TypeError, ValueError) as exc:
        if not isinstance(exc, _OURS):
            _explain_cross_entropy(input, target, weight)
        _reraise(exc, {"logits": "input"})
    if lp is None:
        lp = torch.empty((0,), dtype=torch.float64)
    return loss, grad.contiguous(), lp


@_ce_op.register_fake
def _ce_op_fake(input: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor],
                ignore_index: int, reduction: str, label_smoothing: float, z_loss: float,
                softcap: Optional[float], n_threads: Optional[int], soft: bool,
                out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shape = tuple(input.shape)
    batch = shape[:1] + shape[2:] if len(shape) > 1 else ()
    loss = input.new_empty(batch if reduction == "none" else (), dtype=out_dtype)
    grad = input.new_empty(shape)
    rows = (shape[:1] + shape[2:] + shape[1:2]) if len(shape) > 2 else shape
    lp = input.new_empty(rows if soft else (0,), dtype=torch.float64)
    return loss, grad, lp


def _ce_op_setup(ctx: Any, inputs: Any, output: Any) -> None:
    input, target, weight, _, reduction, eps = inputs[:6]
    soft = inputs[9]
    ctx.reduction, ctx.eps, ctx.soft = reduction, eps, soft
    ctx.in_layout = (input.dim(), target.dtype, None if weight is None else weight.dtype)
    loss, grad, lp = output
    # the loss is the anchor of _NoDoubleBackward (see _FastCrossEntropy)
    ctx.save_for_backward(grad, lp, target if soft else None, weight if soft else None, loss)


def _ce_op_backward(ctx: Any, grad_loss: torch.Tensor, *unused: Any) -> Any:
    grad, lp, t, w, anchor = ctx.saved_tensors
    grad_x = _times(grad, grad_loss) if ctx.needs_input_grad[0] else None
    grad_t = grad_w = None
    if ctx.soft:
        grad_t, grad_w = _soft_grads(lp, t, w, grad_loss, ctx.reduction, ctx.eps,
                                     ctx.in_layout, ctx.needs_input_grad[1],
                                     ctx.needs_input_grad[2])
    grads = (grad_x, grad_t, grad_w)
    if _grad_enabled():
        # create_graph=True (torch.compile with the eager backend, or the op called
        # directly): the saved gradient is an output of this node, whose backward ignores
        # its own gradient, so differentiating it again would silently give zeros
        grads = _guard("cross_entropy", anchor, grads)
    return grads + (None,) * 8


_ce_op.register_autograd(_ce_op_backward, setup_context=_ce_op_setup)


def _compiled_cross_entropy(input: Any, target: Any, weight: Any, ignore_index: Any,
                            reduction: Any, label_smoothing: Any, z_loss: Any, softcap: Any,
                            n_threads: Any) -> torch.Tensor:
    grad_mode = _grad_enabled()
    weight_grad = grad_mode and weight is not None and weight.requires_grad
    if weight_grad and not target.is_floating_point():
        raise _not_differentiable("nll_loss_forward", "weight")
    soft = grad_mode and target.is_floating_point() and (target.requires_grad or weight_grad)
    return cast(torch.Tensor, torch.ops.xent_fast.cross_entropy(
        input, target, weight, _option_int(ignore_index, "ignore_index"), reduction,
        _option_float(label_smoothing, "label_smoothing"), _option_float(z_loss, "z_loss"),
        None if softcap is None else _option_float(softcap, "softcap"), n_threads, soft,
        _loss_dtype(input, target))[0])


@torch.library.custom_op("xent_fast::binary_loss", mutates_args=(), schema=_BINARY_SCHEMA)
def _binary_op(input: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor],
               pos_weight: Optional[torch.Tensor], kind: str, reduction: str, alpha: float,
               gamma: float, n_threads: Optional[int], soft: bool,
               out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, gradient, the target's gradient or an empty tensor)."""
    options: dict[str, Any] = dict(reduction=reduction, n_threads=n_threads)
    if kind == "focal":
        options.update(alpha=alpha, gamma=gamma)
    names = ({"logits": "input"} if kind == "bce"
             else {"logits": "inputs", "target": "targets"})
    try:
        loss, grad, tgrad = _binary_forward(input, target, weight, pos_weight, kind, options,
                                            soft, out_dtype)
    except (TypeError, ValueError) as exc:
        _reraise(exc, names)
    if tgrad is None:
        tgrad = torch.empty((0,), dtype=target.dtype)
    return loss, grad, tgrad


@_binary_op.register_fake
def _binary_op_fake(input: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor],
                    pos_weight: Optional[torch.Tensor], kind: str, reduction: str,
                    alpha: float, gamma: float, n_threads: Optional[int], soft: bool,
                    out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    loss = input.new_empty(input.shape if reduction == "none" else (), dtype=out_dtype)
    tgrad = target.new_empty(target.shape if soft else (0,))
    return loss, input.new_empty(input.shape), tgrad


def _binary_op_setup(ctx: Any, inputs: Any, output: Any) -> None:
    ctx.soft = inputs[9]
    ctx.loss_name = ("binary_cross_entropy_with_logits" if inputs[4] == "bce"
                     else "sigmoid_focal_loss")
    loss, grad, tgrad = output
    ctx.save_for_backward(grad, tgrad, loss)


def _binary_op_backward(ctx: Any, grad_loss: torch.Tensor, *unused: Any) -> Any:
    grad, tgrad, anchor = ctx.saved_tensors
    grad_x = _times(grad, grad_loss) if ctx.needs_input_grad[0] else None
    grad_t = _times(tgrad, grad_loss) if ctx.soft and ctx.needs_input_grad[1] else None
    grads = (grad_x, grad_t)
    if _grad_enabled():     # create_graph=True: as in _ce_op_backward
        grads = _guard(ctx.loss_name, anchor, grads)
    return grads + (None,) * 9


_binary_op.register_autograd(_binary_op_backward, setup_context=_binary_op_setup)


def _compiled_binary(kind: str, input: Any, target: Any, weight: Any, pos_weight: Any,
                     options: dict[str, Any]) -> torch.Tensor:
    soft = _grad_enabled() and target.requires_grad
    return cast(torch.Tensor, torch.ops.xent_fast.binary_loss(
        input, target, weight, pos_weight, kind, options["reduction"],
        _option_float(options.get("alpha", 0.0), "alpha"),
        _option_float(options.get("gamma", 0.0), "gamma"),
        options["n_threads"], soft, _loss_dtype(input, target, bce=True))[0])


class _NotScriptable(RuntimeError):
    """torch.jit.script of code that calls these losses."""


def _not_scriptable(name: str) -> Any:
    def prepare(*unused: Any) -> NoReturn:
        raise _NotScriptable(
            f"xent_fast.torch.{name} cannot be compiled by torch.jit.script: it runs "
            "compiled NumPy kernels, which TorchScript cannot see. Use torch.compile "
            "instead (code that calls it compiles without a graph break, fullgraph=True "
            "included), or leave the loss outside the scripted code.")
    return prepare


# torch.jit.script calls __prepare_scriptable__ on a function it is about to compile
# (and on a module): it raises there, with the message above, instead of failing on
# this module's source.
_fn: Any
for _fn in (cross_entropy, binary_cross_entropy_with_logits, sigmoid_focal_loss):
    _fn.__prepare_scriptable__ = _not_scriptable(_fn.__name__)


class CrossEntropyLoss(_WeightedLoss):
    """Drop-in ``torch.nn.CrossEntropyLoss`` computed by :func:`cross_entropy`.

    Takes the same arguments, plus the keyword-only ``z_loss``, ``softcap``,
    ``n_threads`` and ``inplace`` of :func:`cross_entropy`.

    Examples
    --------
    >>> import torch, xent_fast.torch as xft
    >>> criterion = xft.CrossEntropyLoss(label_smoothing=0.1)
    >>> round(criterion(torch.tensor([[2.0, 1.0, 0.1]]), torch.tensor([0])).item(), 4)
    0.5137
    """

    __constants__ = ["ignore_index", "reduction", "label_smoothing"]

    def __init__(self, weight: torch.Tensor | None = None, size_average: bool | None = None,
                 ignore_index: int = -100, reduce: bool | None = None,
                 reduction: str = "mean", label_smoothing: float = 0.0, *,
                 z_loss: float = 0.0, softcap: float | None = None,
                 n_threads: int | None = None, inplace: bool = False) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.softcap = softcap
        self.n_threads = n_threads
        self.inplace = inplace

    __prepare_scriptable__ = _not_scriptable("CrossEntropyLoss")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing,
                             z_loss=self.z_loss, softcap=self.softcap,
                             n_threads=self.n_threads, inplace=self.inplace)


class BCEWithLogitsLoss(_Loss):
    """Drop-in ``torch.nn.BCEWithLogitsLoss`` computed by
    :func:`binary_cross_entropy_with_logits`.

    Examples
    --------
    >>> import torch, xent_fast.torch as xft
    >>> criterion = xft.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0, 1.0]))
    >>> round(criterion(torch.tensor([[1.5, -0.5]]), torch.tensor([[1.0, 0.0]])).item(), 4)
    0.4385
    """

    def __init__(self, weight: torch.Tensor | None = None, size_average: bool | None = None,
                 reduce: bool | None = None, reduction: str = "mean",
                 pos_weight: torch.Tensor | None = None, *,
                 n_threads: int | None = None) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.n_threads = n_threads

    __prepare_scriptable__ = _not_scriptable("BCEWithLogitsLoss")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return binary_cross_entropy_with_logits(input, target, cast(Any, self.weight),
                                                reduction=self.reduction,
                                                pos_weight=cast(Any, self.pos_weight),
                                                n_threads=self.n_threads)


# The fused linear cross-entropy lives in its own module, which uses the helpers above:
# imported last, once they exist.
from ._torch_linear import LinearCrossEntropyLoss, linear_cross_entropy  # noqa: E402
# The distillation loss lives in its own module too.
from ._torch_distill import distillation_loss  # noqa: E402
