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

Only CPU tensors are accepted; a tensor on another device raises ``ValueError``.
"""

from __future__ import annotations

from typing import Any, cast

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


def _legacy_reduction(size_average: Any, reduce: Any, reduction: str) -> str:
    if size_average is not None or reduce is not None:
        legacy: str = torch.nn._reduction.legacy_get_string(size_average, reduce)
        return legacy
    return reduction


def _check_tensor(t: Any, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(
            f"{name} is on device {t.device}; xent_fast.torch computes on CPU tensors only "
            "(move it with .cpu(), or use PyTorch's own loss on that device)"
        )
    return t


def _float_input(t: torch.Tensor, name: str) -> None:
    """Accept float32/float64 (computed natively) and bf16/f16 (computed in float32)."""
    if t.dtype in _NATIVE or t.dtype in _WIDENED:
        return
    raise TypeError(f"{name} must be a floating tensor (float32, float64, float16 or "
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


def _optional_np(t: Any, name: str) -> np.ndarray | None:
    return None if t is None else _np(_check_tensor(t, name))


class _CrossEntropy(torch.autograd.Function):
    """Loss and gradient in the forward pass; the backward scales the saved gradient."""

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, target: torch.Tensor, options: dict[str, Any],
                inplace: bool) -> Any:
        ctx.set_materialize_grads(False)
        ctx.reduction = options["reduction"]
        x, t = _rows_layout(input.detach(), target.detach())
        x_np = _np(x)
        loss, grad = _xc.cross_entropy_and_grad(
            x_np, _np(t), grad_out=x_np if inplace else None, **options)
        loss_t = torch.as_tensor(loss).to(input.dtype)
        ctx.target_grad = None
        if ctx.needs_input_grad[1]:
            ctx.target_grad = _from_rows_layout(_soft_target_grad(x_np, options), input)
        if inplace:
            ctx.mark_dirty(input)
            ctx.save_for_backward(input)
            return loss_t, input
        ctx.save_for_backward(_from_rows_layout(torch.from_numpy(grad), input))
        return loss_t

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor | None, *unused: Any) -> Any:
        (grad,) = ctx.saved_tensors
        if grad_loss is None:
            return None, None, None, None
        grad_x = _scale(grad, grad_loss, ctx.reduction)
        grad_t = (None if ctx.target_grad is None
                  else _scale(ctx.target_grad, grad_loss, ctx.reduction))
        return grad_x, grad_t, None, None


def _rows_layout(x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs as the row kernels take them: float32/float64, classes on the last axis
    (PyTorch's ``(N, C, d1..dK)`` has them at dimension 1: one copy, in the kernel call)."""
    soft = target.is_floating_point()
    if x.dtype in _WIDENED:
        x = x.float()
    if x.dim() > 2:
        x = x.movedim(1, -1)
        if soft:
            target = target.movedim(1, -1)
    if soft and target.dtype != x.dtype:
        target = target.to(x.dtype)
    return x, target


def _from_rows_layout(g: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    """A class-last gradient back in ``input``'s layout and dtype."""
    if g.dtype != input.dtype:
        g = g.to(input.dtype)  # bf16/f16: keep the saved gradient at the input's size
    return g.movedim(-1, 1) if input.dim() > 2 else g


def _scale(grad: torch.Tensor, grad_loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """grad_output * d(loss)/d(input), from the gradient of the loss's own value."""
    if reduction == "none":
        # per-row (or per-element) upstream gradient, broadcast over the class dimension
        g = grad_loss.to(grad.dtype)
        return grad * (g.unsqueeze(1) if grad.dim() > g.dim() and g.dim() > 0 else g)
    if grad_loss.item() == 1.0:
        return grad  # the usual loss.backward(): no N x C pass at all
    return grad * grad_loss.to(grad.dtype)


def _soft_target_grad(x: np.ndarray, options: dict[str, Any]) -> torch.Tensor:
    """d(loss)/d(target) for probability targets, -(1 - eps) w_c log_softmax(z)_c per row,
    divided as "mean" divides (rare: only when the target itself requires grad)."""
    z = x.astype(np.float64)
    cap = options["softcap"]
    if cap is not None:
        z = cap * np.tanh(z / cap)
    g = -(1.0 - options["label_smoothing"]) * _log_softmax(z)
    if options["weight"] is not None:
        g = g * np.asarray(options["weight"], dtype=np.float64)
    rows = int(np.prod(z.shape[:-1]))
    if options["reduction"] == "mean" and rows:
        g = g / rows
    return torch.from_numpy(g)


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
        As ``torch.nn.functional.cross_entropy``.
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
        needs a contiguous float32/float64 ``(N, C)`` or ``(C,)`` input that is not a leaf
        requiring grad.

    Returns
    -------
    torch.Tensor
        The loss: a 0-d tensor, or per row with ``reduction="none"``.

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
    options: dict[str, Any] = dict(weight=_optional_np(weight, "weight"), ignore_index=ignore_index, reduction=reduction,
                   label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
                   n_threads=n_threads)
    if not (torch.is_grad_enabled() and (input.requires_grad or target.requires_grad)):
        x, t = _rows_layout(input.detach(), target.detach())
        return torch.as_tensor(_xc.cross_entropy(_np(x), _np(t), **options)).to(input.dtype)
    if target.requires_grad and not target.is_floating_point():
        raise ValueError("target holds class indices and cannot require grad")
    if inplace:
        _check_inplace(input)
        loss, _ = _apply(_CrossEntropy, input, target, options, True)
        return cast(torch.Tensor, loss)
    return cast(torch.Tensor, _apply(_CrossEntropy, input, target, options, False))


def _check_inplace(input: torch.Tensor) -> None:
    if input.dtype not in _NATIVE or not input.is_contiguous() or input.dim() > 2:
        raise ValueError("inplace=True needs a contiguous float32 or float64 input of shape "
                         "(N, C) or (C,); this input would be copied anyway")
    if input.is_leaf and input.requires_grad:
        raise ValueError("inplace=True would overwrite a leaf tensor that requires grad; "
                         "use it on computed logits (e.g. the output of a Linear layer)")


class _Binary(torch.autograd.Function):
    """Elementwise losses: the gradient with respect to the logits comes from the forward
    kernel; the target's gradient (rare) from the logits, while they are at hand."""

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, target: torch.Tensor, kind: str,
                options: dict[str, Any]) -> torch.Tensor:
        ctx.set_materialize_grads(False)
        ctx.reduction = options["reduction"]
        x, t = _binary_layout(input.detach(), target.detach())
        fn = (_xb.binary_cross_entropy_with_logits_and_grad if kind == "bce"
              else _xb.sigmoid_focal_loss_and_grad)
        loss, grad = fn(_np(x), _np(t), **options)
        ctx.target_grad = None
        if ctx.needs_input_grad[1]:
            ctx.target_grad = _bce_target_grad(x, options).to(input.dtype)
        ctx.save_for_backward(torch.from_numpy(grad).to(input.dtype))
        return torch.as_tensor(loss).to(input.dtype)

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor | None) -> Any:
        (grad,) = ctx.saved_tensors
        if grad_loss is None:
            return None, None, None, None
        if ctx.reduction == "none":  # elementwise: same shape as the gradient
            gl = grad_loss.to(grad.dtype)
            return (grad * gl, None if ctx.target_grad is None else ctx.target_grad * gl,
                    None, None)
        return (_scale(grad, grad_loss, ctx.reduction),
                None if ctx.target_grad is None
                else _scale(ctx.target_grad, grad_loss, ctx.reduction), None, None)


def _binary_layout(x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dtype in _WIDENED:
        x = x.float()
    return x, target.to(x.dtype) if target.dtype != x.dtype else target


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
        Same shape, 0/1 or soft labels.
    weight, size_average, reduce, reduction, pos_weight : optional
        As PyTorch: ``weight`` broadcasts to the input, ``pos_weight`` along the last axis.
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
    if input.shape != target.shape:
        raise ValueError(f"target size ({tuple(target.shape)}) must be the same as input "
                         f"size ({tuple(input.shape)})")
    options: dict[str, Any] = dict(weight=_optional_np(weight, "weight"),
                                   pos_weight=_optional_np(pos_weight, "pos_weight"),
                                   reduction=reduction, n_threads=n_threads)
    return _binary("bce", input, target, options)


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
    if inputs.shape != targets.shape:
        raise ValueError(f"targets size ({tuple(targets.shape)}) must be the same as inputs "
                         f"size ({tuple(inputs.shape)})")
    if targets.requires_grad and torch.is_grad_enabled():
        raise ValueError("xent_fast.torch.sigmoid_focal_loss does not differentiate with "
                         "respect to targets; pass targets.detach()")
    options: dict[str, Any] = dict(alpha=alpha, gamma=gamma, reduction=reduction,
                                   n_threads=n_threads)
    return _binary("focal", inputs, targets, options)


def _binary(kind: str, input: torch.Tensor, target: torch.Tensor,
            options: dict[str, Any]) -> torch.Tensor:
    _float_input(input, "input" if kind == "bce" else "inputs")
    if not (torch.is_grad_enabled() and (input.requires_grad or target.requires_grad)):
        fn = (_xb.binary_cross_entropy_with_logits if kind == "bce"
              else _xb.sigmoid_focal_loss)
        x, t = _binary_layout(input.detach(), target.detach())
        return torch.as_tensor(fn(_np(x), _np(t), **options)).to(input.dtype)
    return cast(torch.Tensor, _apply(_Binary, input, target, kind, options))


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
