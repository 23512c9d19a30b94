"""PyTorch adapter: drop-in replacements for PyTorch's and torchvision's losses.

``xent_fast.torch.cross_entropy``, ``binary_cross_entropy_with_logits`` and
``sigmoid_focal_loss`` take the arguments of ``torch.nn.functional.cross_entropy``,
``torch.nn.functional.binary_cross_entropy_with_logits`` and
``torchvision.ops.sigmoid_focal_loss``, and give the same values and gradients through
autograd. Each is a ``torch.autograd.Function`` whose forward calls the fused kernel on
the tensor's memory (no copy for contiguous float32/float64 CPU tensors), computing the
loss and its gradient in one pass. Only that gradient is kept for the backward, not the
logits, and the backward only scales it by the upstream gradient.

Differences from PyTorch, on purpose:

- a ``"mean"`` that counts nothing (every row ignored) is 0 with a zero gradient, not nan;
- ``z_loss``, ``softcap``, ``n_threads`` and ``inplace`` are extra keyword arguments;
- bfloat16 and float16 are computed in float32; the loss and the gradient are returned in
  the input's dtype.

Only dense CPU tensors are accepted; a tensor on another device raises ``ValueError``.
A mistake raises ``TypeError`` or ``ValueError`` naming the torch argument (``input``,
``target``, ``weight``, ...), of a class that is also the type PyTorch raises for it
(``RuntimeError``, ``NotImplementedError``, ``IndexError``). Second derivatives are not
supported: differentiating a gradient of these losses (``create_graph=True``, gradient
penalties) raises ``RuntimeError``, never gives zeros.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn, cast

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
from ._softmax import log_softmax as _log_softmax

__all__ = [
    "cross_entropy",
    "binary_cross_entropy_with_logits",
    "sigmoid_focal_loss",
    "CrossEntropyLoss",
    "BCEWithLogitsLoss",
]

_NATIVE = (torch.float32, torch.float64)
_WIDENED = (torch.float16, torch.bfloat16)
_STRIDED = torch.strided

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


def _legacy_reduction(size_average: Any, reduce: Any, reduction: str) -> str:
    if size_average is not None or reduce is not None:
        legacy: str = torch.nn._reduction.legacy_get_string(size_average, reduce)
        return legacy
    return reduction


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


class _NoDoubleBackward(torch.autograd.Function):
    """The gradients a backward under ``create_graph=True`` returns: computed by
    ``fn`` in the forward, and any attempt to differentiate them raises.

    The saved gradient passed in is an output of the loss node, so it carries that node
    as its ``grad_fn`` and connects the result to the logits' graph: a second derivative
    with respect to them reaches this backward and raises, rather than autograd's "does
    not require grad", or a silent ``None`` with ``allow_unused``."""

    @staticmethod
    def forward(ctx: Any, name: str, fn: Any, node: Any, grad_loss: torch.Tensor,
                *saved: torch.Tensor) -> Any:
        ctx.name = name
        return fn(node, grad_loss, saved, True)

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise RuntimeError(_double_backward(ctx.name))


def _double_backward(name: str) -> str:
    return (f"double backward of xent_fast.torch.{name} is not supported: its gradient "
            "cannot be differentiated again (create_graph=True for a gradient penalty, "
            "Hessians, ...); use PyTorch's own loss where second derivatives are needed")


def _backward(name: str, grads: Any, ctx: Any, grad_loss: torch.Tensor | None) -> Any:
    """The gradients of a loss Function: ``grads(ctx, grad_loss, saved, fresh)``, fresh
    tensors whenever the graph may run backward again (a hook may edit what it is given
    in place; the fast path hands out the saved gradient itself)."""
    if grad_loss is None:
        return (None,) * ctx.n_inputs
    saved = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True
        return _NoDoubleBackward.apply(name, grads, ctx, grad_loss, *saved)
    return grads(ctx, grad_loss, saved, _keep_graph())


def _scale(grad: torch.Tensor, grad_loss: torch.Tensor, reduction: str,
           fresh: bool) -> torch.Tensor:
    """grad_output * d(loss)/d(input), from the gradient of the loss's own value."""
    if reduction == "none":
        # per-row (or per-element) upstream gradient, broadcast over the class dimension
        g = grad_loss.to(grad.dtype)
        return grad * (g.unsqueeze(1) if grad.dim() > g.dim() and g.dim() > 0 else g)
    if grad_loss.item() == 1.0:
        # the usual loss.backward(): no N x C pass at all, unless the graph is kept
        return grad.clone() if fresh else grad
    return grad * grad_loss.to(grad.dtype)


class _CrossEntropy(torch.autograd.Function):
    """Loss and gradient in the forward pass; the backward scales the saved gradient.

    The gradient is also the second output (with ``inplace``, the input that now holds
    it), so that its saved copy knows this node: see :class:`_NoDoubleBackward`."""

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None, options: dict[str, Any], inplace: bool) -> Any:
        ctx.set_materialize_grads(False)
        ctx.n_inputs = 5
        ctx.reduction = options["reduction"]
        x, t = _rows_layout(input.detach(), target.detach())
        x_np, t_np = _np(x), _np(t)
        if inplace:
            _check_overlap(x_np, ((t_np, "target"), (options["weight"], "weight")))
        # Probability targets' and weights' gradients need log_softmax(logits), taken
        # before the kernel: in place, it writes the gradient over the logits.
        soft = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        lp = _log_probs(x_np, options["softcap"]) if soft else None
        loss, grad = _xc.cross_entropy_and_grad(
            x_np, t_np, grad_out=x_np if inplace else None, **options)
        loss_t = torch.as_tensor(loss).to(input.dtype)
        if inplace:
            ctx.mark_dirty(input)
            grad_t = input
        else:
            grad_t = _from_rows_layout(torch.from_numpy(grad), input)
        if soft:
            ctx.options = options
            ctx.in_layout = (input.dim(), target.dtype,
                             None if weight is None else weight.dtype)
            ctx.save_for_backward(grad_t, lp, t if ctx.needs_input_grad[2] else None)
        else:
            ctx.save_for_backward(grad_t)
        return loss_t, grad_t

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor | None, *unused: Any) -> Any:
        return _backward("cross_entropy", _cross_entropy_grads, ctx, grad_loss)


def _cross_entropy_grads(ctx: Any, grad_loss: torch.Tensor, saved: tuple[Any, ...],
                         fresh: bool) -> tuple[Any, ...]:
    grad_x = (_scale(saved[0], grad_loss, ctx.reduction, fresh)
              if ctx.needs_input_grad[0] else None)
    if len(saved) == 1:
        return grad_x, None, None, None, None
    _, lp, t = saved
    # loss row r = -sum_c w_c q_rc lp_rc (+ z_loss, free of target and weight), with
    # q = (1 - eps) target + eps / C: d/dtarget = -(1 - eps) w lp, d/dw = -sum_r q lp
    o = ctx.options
    n_classes = lp.shape[-1]
    rows = lp.numel() // n_classes if n_classes else 0
    g = grad_loss.to(torch.float64)
    if ctx.reduction == "none":
        g = g.unsqueeze(-1) if g.dim() else g  # rows layout: classes last
    elif ctx.reduction == "mean":
        g = g / rows if rows else g * 0.0
    glp = lp * g
    eps = o["label_smoothing"]
    dim, t_dtype, w_dtype = ctx.in_layout
    grad_t = grad_w = None
    if ctx.needs_input_grad[1]:
        gt = -(1.0 - eps) * glp
        if o["weight"] is not None:
            gt = gt * torch.from_numpy(o["weight"]).to(torch.float64)
        grad_t = (gt.movedim(-1, 1) if dim > 2 else gt).to(t_dtype)
    if ctx.needs_input_grad[2]:
        q = t.to(torch.float64) * (1.0 - eps) + eps / n_classes
        grad_w = (-(q * glp)).reshape(-1, n_classes).sum(0).to(w_dtype)
    return grad_x, grad_t, grad_w, None, None


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
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_tensor(input, "input")
    _check_tensor(target, "target")
    _float_input(input, "input")
    dtype = input.dtype if input.dtype in _NATIVE else torch.float32
    options: dict[str, Any] = dict(
        weight=_weight_np(weight, "weight", dtype), ignore_index=ignore_index,
        reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss,
        softcap=softcap, n_threads=n_threads)
    grad_mode = torch.is_grad_enabled()
    weight_grad = grad_mode and weight is not None and weight.requires_grad
    try:
        if not (grad_mode and (input.requires_grad or target.requires_grad or weight_grad)):
            x, t = _rows_layout(input.detach(), target.detach())
            loss = _xc.cross_entropy(_np(x), _np(t), **options)
            return torch.as_tensor(loss).to(input.dtype)
        if weight_grad and not target.is_floating_point():
            raise _not_differentiable("nll_loss_forward", "weight")
        inplace = inplace and input.requires_grad  # else no gradient to write
        if inplace:
            _check_inplace(input)
        return cast(torch.Tensor,
                    _apply(_CrossEntropy, input, target, weight, options, inplace)[0])
    except (TypeError, ValueError) as exc:
        if not isinstance(exc, _OURS):
            _explain_cross_entropy(input, target, weight)
        _reraise(exc, {"logits": "input"})


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


class _Binary(torch.autograd.Function):
    """Elementwise losses: the gradient with respect to the logits comes from the forward
    kernel; the target's gradient (rare) from the logits, while they are at hand. The
    gradient is also the second output, as in :class:`_CrossEntropy`."""

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, target: torch.Tensor, kind: str,
                options: dict[str, Any]) -> Any:
        ctx.set_materialize_grads(False)
        ctx.n_inputs = 4
        ctx.name = "binary_cross_entropy_with_logits" if kind == "bce" else "sigmoid_focal_loss"
        ctx.reduction = options["reduction"]
        x, t = _binary_layout(input.detach(), target.detach())
        fn = (_xb.binary_cross_entropy_with_logits_and_grad if kind == "bce"
              else _xb.sigmoid_focal_loss_and_grad)
        loss, grad = fn(_np(x), _np(t), **options)
        grad_t = torch.from_numpy(grad).to(input.dtype)
        if ctx.needs_input_grad[1]:
            ctx.save_for_backward(grad_t, _bce_target_grad(x, options).to(target.dtype))
        else:
            ctx.save_for_backward(grad_t)
        return torch.as_tensor(loss).to(input.dtype), grad_t

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor | None, *unused: Any) -> Any:
        return _backward(ctx.name, _binary_grads, ctx, grad_loss)


def _binary_grads(ctx: Any, grad_loss: torch.Tensor, saved: tuple[Any, ...],
                  fresh: bool) -> tuple[Any, ...]:
    out: list[torch.Tensor | None] = []
    for grad, needed in zip(saved, ctx.needs_input_grad):
        if not needed:
            out.append(None)
        elif ctx.reduction == "none":  # elementwise: the gradient's shape
            out.append(grad * grad_loss.to(grad.dtype))
        else:
            out.append(_scale(grad, grad_loss, ctx.reduction, fresh))
    return out[0], out[1] if len(out) > 1 else None, None, None


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
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_tensor(input, "input")
    _check_tensor(target, "target")
    _float_input(input, "input")
    if input.shape != target.shape:
        raise _ValueError(f"target size ({tuple(target.shape)}) must be the same as input "
                          f"size ({tuple(input.shape)})")
    dtype = input.dtype if input.dtype in _NATIVE else torch.float32
    if torch.is_grad_enabled():
        for w, name in ((weight, "weight"), (pos_weight, "pos_weight")):
            if w is not None and w.requires_grad:
                raise _not_differentiable("binary_cross_entropy_with_logits", name)
    options: dict[str, Any] = dict(weight=_weight_np(weight, "weight", dtype),
                                   pos_weight=_weight_np(pos_weight, "pos_weight", dtype),
                                   reduction=reduction, n_threads=n_threads)
    return _binary("bce", input, target, options, {"logits": "input"})


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
    _check_tensor(inputs, "inputs")
    _check_tensor(targets, "targets")
    _float_input(inputs, "inputs")
    if inputs.shape != targets.shape:
        raise _ValueError(f"targets size ({tuple(targets.shape)}) must be the same as inputs "
                          f"size ({tuple(inputs.shape)})")
    if targets.requires_grad and torch.is_grad_enabled():
        raise _ValueError("xent_fast.torch.sigmoid_focal_loss does not differentiate with "
                          "respect to targets; pass targets.detach()")
    options: dict[str, Any] = dict(alpha=alpha, gamma=gamma, reduction=reduction,
                                   n_threads=n_threads)
    return _binary("focal", inputs, targets, options, {"logits": "inputs", "target": "targets"})


def _binary(kind: str, input: torch.Tensor, target: torch.Tensor,
            options: dict[str, Any], names: dict[str, str]) -> torch.Tensor:
    try:
        if not (torch.is_grad_enabled() and (input.requires_grad or target.requires_grad)):
            fn = (_xb.binary_cross_entropy_with_logits if kind == "bce"
                  else _xb.sigmoid_focal_loss)
            x, t = _binary_layout(input.detach(), target.detach())
            return torch.as_tensor(fn(_np(x), _np(t), **options)).to(input.dtype)
        return cast(torch.Tensor, _apply(_Binary, input, target, kind, options)[0])
    except (TypeError, ValueError) as exc:
        _reraise(exc, names)


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

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return binary_cross_entropy_with_logits(input, target, cast(Any, self.weight),
                                                reduction=self.reduction,
                                                pos_weight=cast(Any, self.pos_weight),
                                                n_threads=self.n_threads)
