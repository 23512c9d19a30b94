# mypy: disallow-subclassing-any=False, disallow-untyped-decorators=False
# (PyTorch is taken as Any, as for xent_fast.torch in pyproject.toml)
"""PyTorch adapter of the fused linear cross-entropy (exported by ``xent_fast.torch``).

``linear_cross_entropy`` and ``LinearCrossEntropyLoss`` take the arguments of PyTorch
2.13's ``torch.nn.functional.linear_cross_entropy`` and ``torch.nn.LinearCrossEntropyLoss``
(plus ``z_loss``, ``softcap``, ``n_threads``) and compute the loss of
``input @ linear_weight.T + linear_bias`` without its ``N x V`` logits.

Design
------
* The loop is :mod:`xent_fast._linear`'s, with PyTorch's matrix products (MKL in
  float32/float64, oneDNN with AMX in bfloat16): rows are cut into blocks of ``R0`` rows
  fixed by the shapes and the dtype (:func:`xent_fast._linear.block_rows`), every product
  is made one block at a time, and a chunk (a whole number of blocks) goes through the
  cross-entropy kernel at once. Results are therefore bitwise the same for every chunk
  size and every ``n_threads`` of the kernel. (The products themselves are PyTorch's:
  MKL's float32 results change in the last bits with ``torch.set_num_threads``, as
  ``F.linear``'s do.)
* bfloat16/float16: the products run in that dtype (their outputs rounded to it, as
  ``F.linear``'s are); the logits are then widened to float32, where the kernel turns
  them into their gradient, which is rounded back to the product dtype for the two
  gradient products. The weight gradient of each block is added into a float32
  accumulator (in vocabulary tiles, so the rounded per-block partials never sum in
  bfloat16); the loss is the float64 sum of float32 row losses.
* Ignored rows are dropped before any product (their rows of ``grad_input`` are 0).
* Scalar reductions compute every gradient in the forward pass; the backward only scales
  them by the upstream gradient (without a copy for the usual ``loss.backward()``).
  ``reduction="none"`` has a gradient per row that is not known in the forward: its
  backward runs the loop again with the upstream rows (nothing but the inputs is kept).
* Probability targets and PyTorch's K-dimensional loss (``linear_weight`` of more than
  two dimensions) have no fused form here: they fall back to
  ``xent_fast.torch.cross_entropy`` on the materialised logits.
"""

from __future__ import annotations

import math
from typing import Any, NoReturn, Optional, cast

import numpy as np
import numpy.typing as npt
import torch
from torch.nn.modules.loss import _WeightedLoss

from . import _validation as _xv
from ._cross_entropy import _INDEX_KERNEL
from ._linear import block_rows, tile_rows
from .torch import (
    _OURS,
    _IndexError,
    _TypeError,
    _ValueError,
    _apply,
    _check_tensor,
    _guard,
    _not_differentiable,
    _not_scriptable,
    _option_float,
    _option_int,
    _scale,
    _times,
)

__all__ = ["linear_cross_entropy", "LinearCrossEntropyLoss"]

_F32, _F64 = torch.float32, torch.float64
_LOW = (torch.bfloat16, torch.float16)
_FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_NAME = "linear_cross_entropy"

try:
    # True while a backward may run again over the same graph (retain_graph/create_graph)
    from torch._C._autograd import _get_current_graph_task_keep_graph as _keep_graph
except ImportError:  # pragma: no cover - another PyTorch: always hand out a fresh gradient
    def _keep_graph() -> bool:
        return True

try:
    from torch.compiler import is_compiling as _compiling
except ImportError:  # pragma: no cover - older PyTorch
    def _compiling() -> bool:
        return False


def _fail(exc: Exception) -> NoReturn:
    """A core validation error as the adapter's class (also PyTorch's exception type)."""
    if isinstance(exc, _OURS):
        raise exc
    raise (_TypeError if isinstance(exc, TypeError) else _ValueError)(str(exc)) from None


def _options(reduction: Any, ignore_index: Any, label_smoothing: Any, z_loss: Any,
             softcap: Any, n_threads: Any) -> dict[str, Any]:
    try:
        if not isinstance(reduction, str) or reduction not in ("mean", "sum", "none"):
            raise _ValueError(f"{reduction} is not a valid value for reduction")
        return dict(
            reduction=reduction,
            ignore_index=-100 if ignore_index is None else _xv.check_int64(ignore_index,
                                                                          "ignore_index"),
            label_smoothing=_xv.check_number(label_smoothing, "label_smoothing", 0.0, 1.0),
            z_loss=_xv.check_number(z_loss, "z_loss", 0.0),
            softcap=None if softcap is None else _xv.check_number(
                softcap, "softcap", 0.0, low_open=True),
            n_threads=n_threads)
    except (TypeError, ValueError) as exc:
        _fail(exc)


def _chunk_rows(options: Any) -> int | None:
    """The chunk size ``options`` asks for: its ``batch_chunk_size``; None (the blocks'
    default) for PyTorch's heuristics, which are tuned to its own implementation."""
    if options is None:
        return None
    size = getattr(options, "batch_chunk_size", None)
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise _ValueError(f"options.batch_chunk_size must be None or a positive int, "
                          f"got {size!r}")
    return size


def _dtypes(input: torch.Tensor, linear_weight: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
    """(dtype of the products, dtype of the loss). Under CPU autocast to bfloat16/float16
    the products run in that dtype and the loss is float32, as ``F.linear`` (a lower-
    precision op there) followed by ``F.cross_entropy`` (a float32 op) give; float64 is
    left alone by autocast."""
    if (torch.is_autocast_enabled("cpu") and input.dtype is not _F64
            and linear_weight.dtype is not _F64):
        low = torch.get_autocast_dtype("cpu")
        if low in _LOW:
            return low, _F32
    if input.dtype is not linear_weight.dtype:
        raise _TypeError(f"input has dtype {input.dtype} and linear_weight "
                         f"{linear_weight.dtype}: expected them to have the same dtype")
    return input.dtype, input.dtype


def _check(input: torch.Tensor, linear_weight: torch.Tensor, target: torch.Tensor,
           linear_bias: torch.Tensor | None, weight: torch.Tensor | None) -> None:
    for t, name in ((input, "input"), (linear_weight, "linear_weight")):
        if t.dtype not in _FLOATS:
            raise _TypeError(f"{name} must be a floating tensor (float32, float64, float16 "
                             f"or bfloat16), got {t.dtype}")
    if input.dim() < 1:
        raise _ValueError("input must have at least one dimension (in_features last), "
                          "got a 0-d tensor")
    n_hidden = input.shape[-1]
    if linear_weight.dim() != 2 or linear_weight.shape[1] != n_hidden:
        raise _ValueError(f"expected linear_weight of shape (num_classes, {n_hidden}) (its "
                          f"last dimension input's, in_features), got "
                          f"{tuple(linear_weight.shape)}")
    n_classes = linear_weight.shape[0]
    if n_classes == 0:
        raise _ValueError("linear_weight must have at least one class, got shape "
                          f"{tuple(linear_weight.shape)}")
    if target.is_floating_point() or target.is_complex() or target.dtype is torch.bool:
        raise _TypeError(f"expected target dtype to be an integer type (class indices), "
                         f"got {target.dtype}")
    if tuple(target.shape) != tuple(input.shape[:-1]):
        raise _ValueError(f"Expected target of shape {tuple(input.shape[:-1])} (input's "
                          f"without in_features), got {tuple(target.shape)}")
    for t, name in ((linear_bias, "linear_bias"), (weight, "weight")):
        if t is None:
            continue
        if not t.is_floating_point():
            raise _TypeError(f"{name} must be a floating tensor, got {t.dtype}")
        if tuple(t.shape) != (n_classes,):
            raise _ValueError(f"expected {name} shape ({n_classes},), got {tuple(t.shape)}")


# --- the loop ----------------------------------------------------------------------------

def _fused(input: torch.Tensor, linear_weight: torch.Tensor, linear_bias: torch.Tensor | None,
           target: torch.Tensor, weight: torch.Tensor | None, opts: dict[str, Any],
           chunk: int | None, pdt: torch.dtype, out_dtype: torch.dtype,
           need: tuple[bool, bool, bool], grad_rows: torch.Tensor | None = None,
           ) -> tuple[torch.Tensor, Any, Any, Any]:
    """(loss, grad_input, grad_linear_weight, grad_linear_bias): the gradients (each in its
    argument's dtype) of those ``need`` asks for, else None. ``grad_rows`` (reduction
    "none"): the upstream gradient of each row, and the gradients are multiplied by it."""
    with torch.autocast("cpu", enabled=False), torch.no_grad():
        return _fused_loop(input.detach(), linear_weight.detach(),
                           None if linear_bias is None else linear_bias.detach(),
                           target.detach(), None if weight is None else weight.detach(),
                           opts, chunk, pdt, out_dtype, need, grad_rows)


def _fused_loop(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, target: torch.Tensor,
                cw: torch.Tensor | None, opts: dict[str, Any], chunk: int | None,
                pdt: torch.dtype, out_dtype: torch.dtype, need: tuple[bool, bool, bool],
                grad_rows: torch.Tensor | None) -> tuple[torch.Tensor, Any, Any, Any]:
    n_hidden, n_classes = x.shape[-1], w.shape[0]
    low = pdt in _LOW
    adt = _F64 if pdt is _F64 else _F32  # logits, kernel and accumulation dtype
    want_h, want_w = need[0], need[1]
    want_b = need[2] and b is not None
    want = want_h or want_w or want_b
    reduction, ignore = opts["reduction"], opts["ignore_index"]
    try:
        nt = _xv.check_threads(opts["n_threads"])
    except (TypeError, ValueError) as exc:
        _fail(exc)

    # --- targets: validity, kept rows, "mean" denominator ---------------------------------
    batch_shape = tuple(x.shape[:-1])
    t1 = target.reshape(-1).numpy().astype(np.int64, copy=False)
    n_rows = t1.shape[0]
    keep = t1 != ignore
    bad = keep & ((t1 < 0) | (t1 >= n_classes))
    if bad.any():
        first = int(np.argmax(bad))
        raise _IndexError(f"Target {t1[first]} is out of bounds: target"
                          f"{_xv.position_of(first, batch_shape)} must be in "
                          f"[0, {n_classes}) or equal ignore_index ({ignore})")
    n_kept = int(np.count_nonzero(keep))
    idx = None if n_kept == n_rows else np.flatnonzero(keep)
    idx_t = None if idx is None else torch.from_numpy(idx)
    t_kept = np.ascontiguousarray(t1 if idx is None else t1[idx])
    cw_np = None if cw is None else cw.to(adt).contiguous().numpy()
    denom = float(n_kept) if cw_np is None else float(np.sum(cw_np[t_kept], dtype=np.float64))
    scale = 1.0
    if reduction == "mean" and want and n_kept:
        scale = 1.0 / denom if denom else math.inf
    g_kept = None
    if grad_rows is not None:
        g1 = grad_rows.detach().to(adt).reshape(-1).contiguous().numpy()
        g_kept = np.ascontiguousarray(g1 if idx is None else g1[idx])

    # --- operands, outputs, buffers --------------------------------------------------------
    h2 = x.reshape(-1, n_hidden).to(pdt).contiguous()
    wp = w.to(pdt)
    bias = None if b is None else b.to(adt)
    loss_kept: npt.NDArray[np.floating[Any]] = np.empty(
        n_kept, np.float64 if adt is _F64 else np.float32)
    gh2 = gw = gb = None
    gw_acc = None
    if want_h:
        gh2 = (torch.empty if idx is None else torch.zeros)((n_rows, n_hidden), dtype=x.dtype)
    if want_w:
        gw_acc = (torch.empty if n_kept else torch.zeros)((n_classes, n_hidden), dtype=adt)
    if want_b:
        gb = np.zeros(n_classes, loss_kept.dtype)
    r0 = block_rows(n_classes, n_hidden, 6 if low else adt.itemsize)
    step = r0 if chunk is None else -(-chunk // r0) * r0
    buf_rows = min(step, n_kept)
    if n_kept:
        lbuf = torch.empty((buf_rows, n_classes), dtype=adt)
        lbuf_np = lbuf.numpy()
        pbuf = torch.empty((buf_rows, n_classes), dtype=pdt) if low else lbuf
        hbuf = None if idx is None else torch.empty((buf_rows, n_hidden), dtype=pdt)
        direct_h = idx is None and x.dtype is pdt
        ghbuf = (torch.empty((min(r0, n_kept), n_hidden), dtype=pdt)
                 if want_h and not direct_h else None)
        tile = tile_rows(n_classes, n_hidden, 2) if low else n_classes
        wtile = torch.empty((tile, n_hidden), dtype=pdt) if want_w and low else None
        gb_tmp = np.empty_like(gb) if gb is not None else None
    wt = wp.t()

    # --- the chunks -------------------------------------------------------------------
    for s in range(0, n_kept, step):
        e = min(s + step, n_kept)
        m = e - s
        if idx_t is None:
            hc = h2[s:e]
        else:
            assert hbuf is not None
            hc = torch.index_select(h2, 0, idx_t[s:e], out=hbuf[:m])
        logits, prod = lbuf[:m], pbuf[:m]
        for r in range(0, m, r0):
            torch.mm(hc[r:r + r0], wt, out=prod[r:r + r0])
        if low:
            logits.copy_(prod)
        if bias is not None:
            logits.add_(bias)
        l_np = lbuf_np[:m]
        _INDEX_KERNEL(l_np, t_kept[s:e], cw_np, loss_kept[s:e], l_np if want else None,
                      None if g_kept is None else g_kept[s:e], scale, False, ignore,
                      opts["label_smoothing"], opts["z_loss"], opts["softcap"] or 0.0, nt)
        if not want:
            continue
        if low and (want_h or want_w):
            prod.copy_(logits)  # the gradient, rounded to the product dtype
        for r in range(0, m, r0):
            d = prod[r:r + r0]
            rows = d.shape[0]
            first = s + r == 0
            if want_h:
                assert gh2 is not None
                if direct_h:
                    torch.mm(d, wp, out=gh2[s + r:s + r + rows])
                else:
                    assert ghbuf is not None
                    g = torch.mm(d, wp, out=ghbuf[:rows])
                    if idx_t is None:
                        gh2[s + r:s + r + rows].copy_(g)
                    else:
                        gh2.index_copy_(0, idx_t[s + r:s + r + rows], g.to(gh2.dtype))
            if want_w:
                assert gw_acc is not None
                h_b = hc[r:r + r0]
                if not low:
                    # BLAS adds into the accumulator (beta = 1): fixed blocks, fixed order
                    if first:
                        torch.mm(d.t(), h_b, out=gw_acc)
                    else:
                        gw_acc.addmm_(d.t(), h_b)
                else:
                    assert wtile is not None
                    for v0 in range(0, n_classes, tile):
                        v1 = min(v0 + tile, n_classes)
                        part = torch.mm(d[:, v0:v1].t(), h_b, out=wtile[:v1 - v0])
                        if first:
                            gw_acc[v0:v1].copy_(part)
                        else:
                            gw_acc[v0:v1].add_(part)
            if want_b:
                assert gb is not None and gb_tmp is not None
                dl = l_np[r:r + rows]
                if first:
                    np.add.reduce(dl, axis=0, out=gb)
                else:
                    np.add.reduce(dl, axis=0, out=gb_tmp)
                    np.add(gb, gb_tmp, out=gb)

    # --- the loss ---------------------------------------------------------------------
    if reduction == "none":
        rows_np = loss_kept
        if idx is not None:
            rows_np = np.zeros(n_rows, loss_kept.dtype)
            rows_np[idx] = loss_kept
        loss = torch.from_numpy(rows_np).reshape(batch_shape).to(out_dtype)
    else:
        total = float(np.sum(loss_kept, dtype=np.float64))
        if reduction == "mean":
            # 0 when nothing is counted (as xent_fast.torch.cross_entropy; PyTorch: nan)
            total = total / denom if denom else (math.nan if n_kept else 0.0)
        loss = torch.tensor(total, dtype=_F64).to(out_dtype)
    grad_h = None if gh2 is None else gh2.reshape(x.shape)
    if gw_acc is not None:
        gw = gw_acc if gw_acc.dtype is w.dtype else gw_acc.to(w.dtype)
    grad_b = None
    if gb is not None:
        assert b is not None
        grad_b = torch.from_numpy(gb).to(b.dtype)
    return loss, grad_h, gw, grad_b


# --- autograd ----------------------------------------------------------------------------

class _LinearCrossEntropy(torch.autograd.Function):
    """Scalar reductions: the gradients come from the forward and are scaled in the
    backward. ``"none"``: the backward runs the loop again with the upstream rows."""

    @staticmethod
    def forward(input: torch.Tensor, linear_weight: torch.Tensor,
                linear_bias: torch.Tensor | None, target: torch.Tensor,
                weight: torch.Tensor | None, opts: dict[str, Any], chunk: int | None,
                pdt: torch.dtype, out_dtype: torch.dtype,
                need: tuple[bool, bool, bool]) -> Any:
        if opts["reduction"] == "none":
            need = (False, False, False)
        return _fused(input, linear_weight, linear_bias, target, weight, opts, chunk, pdt,
                      out_dtype, need)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        input, linear_weight, linear_bias, target, weight, opts, chunk, pdt, out_dtype, \
            need = inputs
        loss, gh, gw, gb = output
        ctx.set_materialize_grads(False)
        for g in (gh, gw, gb):
            if g is not None:
                ctx.mark_non_differentiable(g)
        ctx.args = (opts, chunk, pdt, out_dtype, need)
        if opts["reduction"] == "none":
            ctx.save_for_backward(loss, input, linear_weight, linear_bias, target, weight)
        else:
            ctx.save_for_backward(loss, gh, gw, gb)

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor | None, *unused: Any) -> Any:
        if grad_loss is None:
            return (None,) * 10
        opts, chunk, pdt, out_dtype, need = ctx.args
        saved = ctx.saved_tensors
        anchor = saved[0]
        guarded = torch.is_grad_enabled()  # create_graph=True, torch.func transforms
        if opts["reduction"] == "none":
            _, input, linear_weight, linear_bias, target, weight = saved
            _, gh, gw, gb = _fused(input, linear_weight, linear_bias, target, weight, opts,
                                   chunk, pdt, out_dtype, need, grad_rows=grad_loss)
            grads: tuple[Any, ...] = (gh, gw, gb)
        else:
            fresh = guarded or _keep_graph()
            grads = tuple(None if g is None or not n else
                          (_times(g, grad_loss) if guarded else _scale(g, grad_loss, fresh))
                          for g, n in zip(saved[1:], need))
        if guarded:
            grads = _guard(_NAME, anchor, grads)
        return grads + (None,) * 7


def _needs(input: torch.Tensor, linear_weight: torch.Tensor,
           linear_bias: torch.Tensor | None) -> tuple[bool, bool, bool]:
    if not torch.is_grad_enabled():
        return (False, False, False)
    return (input.requires_grad, linear_weight.requires_grad,
            linear_bias is not None and linear_bias.requires_grad)


def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: Any = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    n_threads: int | None = None,
) -> torch.Tensor:
    """Drop-in ``torch.nn.functional.linear_cross_entropy`` (PyTorch 2.13) without the
    logits: ``cross_entropy(input @ linear_weight.T + linear_bias, target)``, a chunk of
    rows at a time.

    Parameters
    ----------
    input : torch.Tensor of shape (..., H)
        Hidden states: ``(H,)``, ``(N, H)`` as PyTorch, or ``(B, T, H)`` (any leading
        dimensions, an extension: PyTorch takes 1 or 2). float32, float64, bfloat16 or
        float16 (the products in that dtype, the rest in float32).
    linear_weight : torch.Tensor of shape (V, H)
        The head's weight, in ``torch.nn.Linear``'s layout and ``input``'s dtype.
    target : torch.Tensor of ints, shape input.shape[:-1]
        Class indices in ``[0, V)`` or ``ignore_index``.
    linear_bias : torch.Tensor of shape (V,), optional
    weight : torch.Tensor of shape (V,), optional
        Class weights, as ``F.cross_entropy``; they cannot require grad.
    reduction : {"mean", "sum", "none"}, default "mean"
        As ``F.cross_entropy``; a ``"mean"`` that counts nothing is 0 (PyTorch: nan).
    ignore_index : int, optional
        None (the default) means -100, as PyTorch. Ignored rows cost no products.
    label_smoothing : float in [0, 1], default 0.0
    options : torch.nn.LinearCrossEntropyOptions, optional
        Only ``batch_chunk_size`` is used: rows per chunk (rounded up to a multiple of
        the block, see :func:`xent_fast.linear_cross_entropy`'s ``chunk_rows``). The
        chunking heuristics, ``acc_policy`` and ``acc_dtype`` are PyTorch's own
        implementation's: here bfloat16/float16 always accumulate in float32, and a
        second backward always works (``allow_retain_graph`` is always true).
        ``options=None`` is the fused path too (not PyTorch's reference path).
    z_loss : float >= 0, default 0.0
        Adds ``z_loss * logsumexp(logits_row) ** 2`` to each counted row's loss.
    softcap : float > 0, optional
        Replaces the logits by ``softcap * tanh(logits / softcap)``.
    n_threads : int, optional
        OpenMP threads of the cross-entropy kernel.

    Returns
    -------
    torch.Tensor
        0-d, or of shape ``input.shape[:-1]`` with ``reduction="none"``; in ``input``'s
        dtype (float32 under ``torch.autocast("cpu")``, as PyTorch).

    Raises
    ------
    ValueError, TypeError
        For a mistake, of a class that is also PyTorch's exception for it
        (``RuntimeError``, ``IndexError`` for a class index out of range).
    RuntimeError
        When a second derivative is taken.

    Notes
    -----
    Memory beyond the inputs: the gradients, one chunk of logits (about 80 MiB by
    default) and, for bfloat16/float16, a float32 weight-gradient accumulator. Results
    are bitwise the same for every chunk size and ``n_threads``. Probability targets and
    a ``linear_weight`` of more than two dimensions (PyTorch's K-dimensional loss) are
    computed on the materialised logits by :func:`xent_fast.torch.cross_entropy`.

    Examples
    --------
    >>> import torch, xent_fast.torch as xft
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> hidden = torch.randn(8, 4, requires_grad=True)
    >>> head = torch.randn(10, 4, requires_grad=True)
    >>> labels = torch.tensor([1, 2, 3, -100, 9, 0, 5, 5])
    >>> loss = xft.linear_cross_entropy(hidden, head, labels)
    >>> loss.backward()
    >>> ref = torch.nn.functional.cross_entropy(hidden @ head.T, labels)
    >>> bool(torch.isclose(loss, ref)), hidden.grad.shape, head.grad.shape
    (True, torch.Size([8, 4]), torch.Size([10, 4]))
    """
    if _compiling():
        return _compiled(input, linear_weight, target, linear_bias, weight, reduction,
                         ignore_index, label_smoothing, options, z_loss, softcap, n_threads)
    _check_tensor(input, "input")
    _check_tensor(linear_weight, "linear_weight")
    _check_tensor(target, "target")
    for t, name in ((linear_bias, "linear_bias"), (weight, "weight")):
        if t is not None:
            _check_tensor(t, name)
    if _materialised(input, linear_weight, target):
        return _reference(input, linear_weight, target, linear_bias, weight, reduction,
                          ignore_index, label_smoothing, z_loss, softcap, n_threads)
    opts = _options(reduction, ignore_index, label_smoothing, z_loss, softcap, n_threads)
    chunk = _chunk_rows(options)
    _check(input, linear_weight, target, linear_bias, weight)
    if weight is not None and weight.requires_grad and torch.is_grad_enabled():
        raise _not_differentiable("nll_loss_forward", "weight")
    pdt, out_dtype = _dtypes(input, linear_weight)
    need = _needs(input, linear_weight, linear_bias)
    if not any(need):
        return _fused(input, linear_weight, linear_bias, target, weight, opts, chunk, pdt,
                      out_dtype, need)[0]
    return cast(torch.Tensor, _apply(_LinearCrossEntropy, input, linear_weight, linear_bias,
                                     target, weight, opts, chunk, pdt, out_dtype, need)[0])


def _materialised(input: Any, linear_weight: Any, target: Any) -> bool:
    """Probability targets, or PyTorch's K-dimensional loss: no fused form."""
    if not all(isinstance(t, torch.Tensor) for t in (input, linear_weight, target)):
        return False
    return linear_weight.dim() > 2 or (target.is_floating_point() and input.dim() >= 1
                                       and tuple(target.shape) == (*input.shape[:-1],
                                                                   *linear_weight.shape[:1]))


def _reference(input: torch.Tensor, linear_weight: torch.Tensor, target: torch.Tensor,
               linear_bias: Any, weight: Any, reduction: Any, ignore_index: Any,
               label_smoothing: Any, z_loss: Any, softcap: Any, n_threads: Any) -> torch.Tensor:
    """``xent_fast.torch.cross_entropy`` on the logits, laid out as PyTorch lays them."""
    from .torch import cross_entropy
    if target.is_floating_point() and ignore_index is not None:
        raise _ValueError("ignore_index cannot be specified when target contains "
                          "probabilities")
    if input.dim() > 2 and linear_weight.dim() > 2:
        raise _ValueError(f"expected input with dimensionality 1 or 2 for a K-dimensional "
                          f"loss, got {input.dim()}")
    n_classes, out_features = linear_weight.shape[0], tuple(linear_weight.shape[1:-1])
    flat_w = linear_weight.reshape(-1, linear_weight.shape[-1])
    flat_b = None if linear_bias is None else linear_bias.reshape(-1)
    logits = torch.nn.functional.linear(input, flat_w, flat_b)
    logits = logits.reshape(*input.shape[:-1], n_classes, *out_features)
    if input.dim() > 2:  # (B, T, V) with probabilities (B, T, V): classes at 1
        logits, target = logits.movedim(-1, 1), target.movedim(-1, 1)
    return cross_entropy(logits, target, weight, reduction=reduction,
                         ignore_index=-100 if ignore_index is None else ignore_index,
                         label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
                         n_threads=n_threads)


# --- torch.compile: the loop as a torch.library custom op --------------------------------

_SCHEMA = ("(Tensor input, Tensor linear_weight, Tensor? linear_bias, Tensor target, "
           "Tensor? weight, Tensor? grad_rows, str reduction, int ignore_index, "
           "float label_smoothing, float z_loss, float? softcap, int? n_threads, "
           "int? chunk, ScalarType pdt, ScalarType out_dtype, bool[] need) "
           "-> (Tensor, Tensor, Tensor, Tensor)")


def _op_opts(reduction: str, ignore_index: int, label_smoothing: float, z_loss: float,
             softcap: Optional[float], n_threads: Optional[int]) -> dict[str, Any]:
    return dict(reduction=reduction, ignore_index=ignore_index,
                label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
                n_threads=n_threads)


def _op_need(reduction: str, grad_rows: Optional[torch.Tensor],
             need: list[bool]) -> tuple[bool, bool, bool]:
    """The gradients a call makes: "none" makes them in the backward's call only (the
    one given the upstream rows), the scalar reductions in the forward."""
    if reduction == "none" and grad_rows is None:
        return (False, False, False)
    return (need[0], need[1], need[2])


@torch.library.custom_op("xent_fast::linear_cross_entropy", mutates_args=(), schema=_SCHEMA)
def _lce_op(input: torch.Tensor, linear_weight: torch.Tensor,
            linear_bias: Optional[torch.Tensor], target: torch.Tensor,
            weight: Optional[torch.Tensor], grad_rows: Optional[torch.Tensor], reduction: str,
            ignore_index: int, label_smoothing: float, z_loss: float,
            softcap: Optional[float], n_threads: Optional[int], chunk: Optional[int],
            pdt: torch.dtype, out_dtype: torch.dtype,
            need: list[bool]) -> tuple[torch.Tensor, ...]:
    """(loss, grad_input, grad_linear_weight, grad_linear_bias), empty where not needed."""
    _check(input, linear_weight, target, linear_bias, weight)
    opts = _op_opts(reduction, ignore_index, label_smoothing, z_loss, softcap, n_threads)
    out = _fused(input, linear_weight, linear_bias, target, weight, opts, chunk, pdt,
                 out_dtype, _op_need(reduction, grad_rows, need), grad_rows)
    # (a fresh empty tensor each: custom ops' outputs may not alias one another)
    return tuple(input.new_empty((0,)) if g is None else g.contiguous() for g in out)


@_lce_op.register_fake
def _lce_fake(input: torch.Tensor, linear_weight: torch.Tensor,
              linear_bias: Optional[torch.Tensor], target: torch.Tensor,
              weight: Optional[torch.Tensor], grad_rows: Optional[torch.Tensor],
              reduction: str, ignore_index: int, label_smoothing: float, z_loss: float,
              softcap: Optional[float], n_threads: Optional[int], chunk: Optional[int],
              pdt: torch.dtype, out_dtype: torch.dtype,
              need: list[bool]) -> tuple[torch.Tensor, ...]:
    loss = input.new_empty(tuple(input.shape[:-1]) if reduction == "none" else (),
                           dtype=out_dtype)
    need = list(_op_need(reduction, grad_rows, need))
    gh = input.new_empty(input.shape if need[0] else (0,))
    gw = linear_weight.new_empty(linear_weight.shape) if need[1] else input.new_empty((0,))
    gb = (linear_bias.new_empty(linear_bias.shape)
          if need[2] and linear_bias is not None else input.new_empty((0,)))
    return loss, gh, gw, gb


def _lce_setup(ctx: Any, inputs: Any, output: Any) -> None:
    ctx.args = inputs[6:]
    ctx.none = inputs[6] == "none"
    # the loss last: _guard's anchor
    if ctx.none:
        ctx.save_for_backward(*inputs[:5], output[0])
    else:
        ctx.save_for_backward(*output[1:], output[0])


def _lce_backward(ctx: Any, grad_loss: torch.Tensor, *unused: Any) -> Any:
    need = list(ctx.args[-1])
    *saved, anchor = ctx.saved_tensors
    if ctx.none:
        input, linear_weight, linear_bias, target, weight = saved
        _, gh, gw, gb = torch.ops.xent_fast.linear_cross_entropy(
            input, linear_weight, linear_bias, target, weight, grad_loss, *ctx.args)
    else:
        gh, gw, gb = (_times(g, grad_loss) if n else g for g, n in zip(saved, need))
    grads = (gh if need[0] else None, gw if need[1] else None, gb if need[2] else None)
    if torch.is_grad_enabled():
        # create_graph=True (torch.compile with the eager backend): the gradients are
        # outputs of the op, whose backward ignores their own gradients; differentiated
        # again they would give silent zeros
        grads = _guard(_NAME, anchor, grads)
    return grads + (None,) * 13


_lce_op.register_autograd(_lce_backward, setup_context=_lce_setup)


def _compiled(input: Any, linear_weight: Any, target: Any, linear_bias: Any, weight: Any,
              reduction: Any, ignore_index: Any, label_smoothing: Any, options: Any,
              z_loss: Any, softcap: Any, n_threads: Any) -> torch.Tensor:
    if _materialised(input, linear_weight, target):
        return _reference(input, linear_weight, target, linear_bias, weight, reduction,
                          ignore_index, label_smoothing, z_loss, softcap, n_threads)
    if weight is not None and weight.requires_grad and torch.is_grad_enabled():
        raise _not_differentiable("nll_loss_forward", "weight")
    pdt, out_dtype = _dtypes(input, linear_weight)
    need = list(_needs(input, linear_weight, linear_bias))
    chunk = None if options is None else options.batch_chunk_size
    out = torch.ops.xent_fast.linear_cross_entropy(
        input, linear_weight, linear_bias, target, weight, None, reduction,
        -100 if ignore_index is None else _option_int(ignore_index, "ignore_index"),
        _option_float(label_smoothing, "label_smoothing"), _option_float(z_loss, "z_loss"),
        None if softcap is None else _option_float(softcap, "softcap"), n_threads, chunk, pdt,
        out_dtype, need)
    return cast(torch.Tensor, out[0])


# --- the module --------------------------------------------------------------------------

class LinearCrossEntropyLoss(_WeightedLoss):
    """Drop-in ``torch.nn.LinearCrossEntropyLoss`` (PyTorch 2.13) computed by
    :func:`linear_cross_entropy`.

    The same constructor and state: a ``linear`` submodule (``torch.nn.Linear(in_features,
    num_classes * prod(out_features), bias)``) and the class ``weight`` buffer, so the
    state dict of one loads into the other. Also takes the keyword-only ``z_loss``,
    ``softcap`` and ``n_threads`` of :func:`linear_cross_entropy`.

    Examples
    --------
    >>> import torch, xent_fast.torch as xft
    >>> criterion = xft.LinearCrossEntropyLoss(4, 10, bias=True)
    >>> criterion.load_state_dict(torch.nn.LinearCrossEntropyLoss(4, 10, bias=True).state_dict())
    <All keys matched successfully>
    >>> loss = criterion(torch.randn(6, 4), torch.randint(0, 10, (6,)))
    >>> loss.shape
    torch.Size([])
    """

    __constants__ = ["num_classes", "out_features", "reduction", "ignore_index",
                     "label_smoothing"]

    def __init__(self, in_features: int, num_classes: int, *,
                 out_features: tuple[int, ...] = (), bias: bool = False, device: Any = None,
                 dtype: Any = None, reduction: str = "mean",
                 weight: torch.Tensor | None = None, ignore_index: int | None = None,
                 label_smoothing: float = 0.0, options: Any = None, z_loss: float = 0.0,
                 softcap: float | None = None, n_threads: int | None = None) -> None:
        if weight is not None and tuple(weight.shape) != (num_classes,):
            raise _ValueError(f"expected weight shape to be {(num_classes,)}, got "
                              f"{tuple(weight.shape)}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise _ValueError(f"expected label_smoothing to be in range [0, 1], got "
                              f"{label_smoothing}")
        super().__init__(weight=weight, size_average=None, reduce=None, reduction=reduction)
        self.num_classes = num_classes
        self.out_features = tuple(out_features)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.linear = torch.nn.Linear(in_features, math.prod(out_features, start=num_classes),
                                      bias=bias, device=device, dtype=dtype)
        self.options = options
        self.z_loss = z_loss
        self.softcap = softcap
        self.n_threads = n_threads

    __prepare_scriptable__ = _not_scriptable("LinearCrossEntropyLoss")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        linear_weight = self.linear.weight.reshape(
            (self.num_classes, *self.out_features, self.linear.in_features))
        linear_bias = (None if self.linear.bias is None
                       else self.linear.bias.reshape((self.num_classes, *self.out_features)))
        return linear_cross_entropy(
            input, linear_weight, target, linear_bias=linear_bias,
            weight=cast(Any, self.weight), reduction=self.reduction,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
            options=self.options, z_loss=self.z_loss, softcap=self.softcap,
            n_threads=self.n_threads)

    def extra_repr(self) -> str:
        return (f"in_features={self.linear.in_features}, num_classes={self.num_classes}, "
                f"out_features={self.out_features}, bias={self.linear.bias is not None}, "
                f"reduction={self.reduction}, ignore_index={self.ignore_index}, "
                f"label_smoothing={self.label_smoothing}, options={self.options}, "
                f"z_loss={self.z_loss}, softcap={self.softcap}")


linear_cross_entropy.__prepare_scriptable__ = _not_scriptable(  # type: ignore[attr-defined]
    "linear_cross_entropy")


# public names of xent_fast.torch
linear_cross_entropy.__module__ = LinearCrossEntropyLoss.__module__ = "xent_fast.torch"
