"""optax's cross-entropy losses for JAX, computed by xent_fast's kernels.

``softmax_cross_entropy``, ``softmax_cross_entropy_with_integer_labels``,
``sigmoid_binary_cross_entropy`` and ``sigmoid_focal_loss`` take the arguments of their
optax namesakes and return the same losses; they are differentiable in reverse and
forward mode (``jax.grad``, ``jax.jvp``, ``jax.jacfwd``, second derivatives too) and
work under ``jax.jit`` and ``jax.vmap``.

Design
------
* Each loss is a ``jax.custom_jvp`` around opaque calls to the kernels. Its value
  alone runs the loss-only kernel, one read of the logits. Its JVP runs the fused
  kernel (losses and gradient in one pass) and returns ``sum(grad * logits_dot)``,
  which JAX transposes for reverse mode: ``jax.grad`` costs one fused pass and one
  multiply. The gradient's own JVP (second derivatives) is plain JAX.
* The calls reach the kernels through XLA's typed FFI: a handler registered with
  ``jax.ffi.register_ffi_target`` receives XLA's own buffers, and the kernels read and
  write them in place, without a copy. The handler is compiled (src/_xla_*.pyx) and
  decodes XLA's C call frame (a stable, versioned ABI), so nothing is compiled against
  jaxlib; a ``ctypes`` handler, which runs Python on each call, is its fallback
  (``XENT_FAST_JAX_MECHANISM=ctypes``). The last resort, ``jax.pure_callback``,
  copies every input and output between XLA and NumPy, which on large batches costs
  more than the loss itself; it is used when the handler cannot be registered, or on
  request (``XENT_FAST_JAX_MECHANISM=callback``).
  The host side, the ctypes handler and the registration are in ``_jax_ffi.py``;
  this module holds the losses.
* Everything else is plain ``jax.numpy`` around the call, so JAX differentiates it:
  moving the class axes last, broadcasting, dtype conversions, ``where`` masks.
  A ``where`` that masks classes becomes ``-inf`` logits (and zero soft labels); a row
  with nothing to count is skipped by the kernels (loss 0, gradient 0).
* bfloat16 and float16 are computed in float32, float64 in float64 (with
  ``jax_enable_x64``); the loss is returned in optax's output dtype.
"""

from __future__ import annotations

import operator as _operator
from functools import partial as _partial
from typing import Any as _Any, Sequence as _Sequence, Union as _Union

import numpy as _np

try:
    import jax as _jax
    import jax.numpy as _jnp
    from jax.custom_derivatives import SymbolicZero as _SymbolicZero
except ImportError as exc:  # pragma: no cover - exercised only without JAX
    raise ImportError(
        'xent_fast.jax needs JAX; install it with: pip install "xent_fast[jax]"'
    ) from exc

from ._jax_ffi import (
    _binary_callback,
    _binary_execute,
    _callback,
    _ctypes_handler,
    _execute,
    _register,
)
from ._jax_linear import linear_softmax_cross_entropy_loss
from ._jax_distill import distillation_loss

__all__ = [
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
    "linear_softmax_cross_entropy_loss",
    "distillation_loss",
    "mechanism",
]

_Axis = _Union[int, _Sequence[int], None]

# The ctypes handlers (the compiled handler's fallback) are made here, so that a reload
# of this module makes and registers new ones rather than freeing the old.
_handler = _ctypes_handler(_execute)
_binary_handler = _ctypes_handler(_binary_execute)
_MECHANISM, _TARGETS = _register(_handler, _binary_handler)
# The target of the softmax handler in use (None with pure_callback).
_TARGET = _TARGETS.get(_MECHANISM, {}).get("softmax")
# Whether a call that writes the gradient writes it over the logits' buffer. XLA then
# needs no second buffer of the logits' size when the logits die there (as in a
# training step), but copies them first when they do not (logits passed to jax.jit):
# measured (bench/adapters_jax.py), that copy cost more than the buffer saves, up to
# 1.5x the whole loss + gradient at 8192x1000. Off; the memory cost is one buffer of
# the logits' size.
_ALIAS = False


def mechanism() -> str:
    """How traced calls reach the kernels: ``"ffi"``, ``"ctypes"`` or ``"callback"``.

    ``"ffi"`` (the default) is a compiled XLA FFI handler that computes on XLA's own
    buffers, on XLA's threads, without Python or the GIL. ``"ctypes"`` is an XLA FFI
    handler written in Python (through ``ctypes``), used when the compiled one cannot be
    registered: the same buffers, but Python runs on every call. ``"callback"`` is
    ``jax.pure_callback``, which copies the inputs and outputs, used when no handler can
    be registered. The environment variable ``XENT_FAST_JAX_MECHANISM`` (``ffi``,
    ``ctypes`` or ``callback``), set before ``xent_fast.jax`` is imported, chooses.

    Returns
    -------
    str
        ``"ffi"``, ``"ctypes"`` or ``"callback"``.

    Examples
    --------
    >>> import xent_fast.jax as xfj
    >>> xfj.mechanism() in ("ffi", "ctypes", "callback")
    True
    """
    return _MECHANISM


def _call(mode: str, x: _Any, y: _Any, rows: _Any) -> _Any:
    """One call of the kernels on canonical arrays (classes last, x of its compute dtype).

    ``mode`` "loss" gives (losses,), "fused" (losses, gradient), from one pass.
    """
    loss_t = _jax.ShapeDtypeStruct(x.shape[:-1], x.dtype)
    grad_t = _jax.ShapeDtypeStruct(x.shape, x.dtype)
    outs = {"loss": (loss_t,), "fused": (loss_t, grad_t)}[mode]
    args = tuple(a for a in (x, y, rows) if a is not None)
    if _MECHANISM in _TARGETS:
        aliases = {0: len(outs) - 1} if mode != "loss" and _ALIAS else None
        call = _jax.ffi.ffi_call(_TARGETS[_MECHANISM]["softmax"], outs,
                                vmap_method="broadcast_all", input_output_aliases=aliases)
        return call(*args)
    return _jax.pure_callback(_callback(mode), outs, *args, vmap_method="broadcast_all")


_BCE, _FOCAL = 1, 2   # the binary kernels' loss kinds


def _binary_call(mode: int, kind: int, x: _Any, y: _Any, alpha: float, gamma: float,
                 g: _Any = None) -> _Any:
    """One call of the binary kernels, elementwise on x and y of one shape and compute
    dtype: mode 0 the losses, mode 1 their gradient scaled elementwise by ``g``.
    alpha < 0: no alpha."""
    out = _jax.ShapeDtypeStruct(x.shape, x.dtype)
    # The options travel as a small constant buffer: vmap may give it a leading axis of
    # copies, which the handlers ignore.
    params = _jnp.asarray(_np.array([mode, kind, alpha, gamma], _np.float64), x.dtype)
    args = tuple(a for a in (params, x, y, g) if a is not None)
    if _MECHANISM in _TARGETS:
        aliases = {1: 0} if mode == 1 and _ALIAS else None
        call = _jax.ffi.ffi_call(_TARGETS[_MECHANISM]["binary"], (out,),
                                vmap_method="broadcast_all", input_output_aliases=aliases)
        return call(*args)[0]
    return _jax.pure_callback(_binary_callback(mode), (out,), *args,
                             vmap_method="broadcast_all")[0]


# --- differentiation -------------------------------------------------------------------
# Each loss is a jax.custom_jvp. Its value alone runs the loss-only kernel, one read of
# the logits. Its JVP runs the fused kernel, the losses and their gradient in one pass,
# and returns the tangent sum(grad * x_dot) over the classes (plus, for soft labels that
# are differentiated, -sum(y_dot * log_softmax(x))). That tangent is linear in x_dot,
# and JAX transposes it for reverse mode: jax.grad runs the fused kernel once and
# multiplies its gradient by the upstream one (an XLA multiply), as the custom_vjp it
# replaces did; jax.jvp, jax.jacfwd and forward-mode checks work as well.
#
# The fused call is a custom_jvp too: its rule differentiates the gradient in plain JAX
# (softmax(x) - labels, differentiated), so second derivatives (jax.hessian,
# jacfwd(grad), grad(grad)) are exact; that JAX runs only when they are asked for.


def _zero(t: _Any) -> bool:
    """Whether a tangent is symbolically zero (its input is not differentiated)."""
    return t is None or isinstance(t, _SymbolicZero)


def _soft(y: _Any) -> bool:
    return bool(_jnp.issubdtype(y.dtype, _jnp.floating))


def _label_tangent(x: _Any, yd: _Any, rows: _Any, cls: _Any) -> _Any:
    """-sum(y_dot * log_softmax(x)) row by row: the loss's tangent in soft labels. A
    class that ``where`` excludes adds nothing (its label is a constant 0), nor does a
    skipped row."""
    logp = _jax.nn.log_softmax(x, axis=-1)
    if cls is not None:
        logp = _jnp.where(cls, logp, 0)
    t = -_jnp.sum(yd * logp, axis=-1)
    return t if rows is None else _jnp.where(rows, t, 0)


def _loss_tangent(x: _Any, grad: _Any, xd: _Any, yd: _Any, rows: _Any, cls: _Any) -> _Any:
    """The tangent of the losses, given their gradient in the logits."""
    t = None
    if not _zero(xd):
        t = _jnp.sum(grad * xd, axis=-1)
    if not _zero(yd) and _soft(yd):
        ty = _label_tangent(x, yd, rows, cls)
        t = ty if t is None else t + ty
    return _jnp.zeros(x.shape[:-1], x.dtype) if t is None else t


def _grad_in_jax(x: _Any, y: _Any, rows: _Any) -> _Any:
    """The kernels' gradient of the losses, in plain JAX: softmax(x) sum(y) - y for soft
    labels, softmax(x) - onehot(y) for class indices; 0 in skipped rows. Only its
    derivatives are used (second derivatives)."""
    p = _jax.nn.softmax(x, axis=-1)
    if _soft(y):
        g = p * _jnp.sum(y, axis=-1, keepdims=True) - y
    else:
        g = p - _jax.nn.one_hot(y, x.shape[-1], dtype=x.dtype)
    return g if rows is None else _jnp.where(rows[..., None], g, 0)


@_jax.custom_jvp
def _xent(x: _Any, y: _Any, rows: _Any, cls: _Any) -> _Any:
    """The losses of the rows of ``x`` (classes last, compute dtype, -inf at the classes
    that ``cls`` excludes) against ``y``; ``rows`` the rows counted (None: all); ``cls``
    is read only by the derivative in soft labels."""
    return _call("loss", x, y, rows)[0]


def _xent_jvp(primals: _Any, tangents: _Any) -> tuple[_Any, _Any]:
    x, y, rows, cls = primals
    xd, yd = tangents[:2]
    if _zero(xd):   # only the soft labels are differentiated: no gradient in the logits
        loss = _xent(x, y, rows, cls)
        return loss, _loss_tangent(x, None, xd, yd, rows, cls)
    loss, grad = _fused(x, y, rows, cls)
    return loss, _loss_tangent(x, grad, xd, yd, rows, cls)


_xent.defjvp(_xent_jvp, symbolic_zeros=True)


@_jax.custom_jvp
def _fused(x: _Any, y: _Any, rows: _Any, cls: _Any) -> tuple[_Any, _Any]:
    """(losses, their gradient in ``x``), from one pass of the fused kernel."""
    loss, grad = _call("fused", x, y, rows)
    return loss, grad


def _fused_jvp(primals: _Any, tangents: _Any) -> tuple[_Any, _Any]:
    # Reached only when the gradient itself is differentiated (second derivatives).
    x, y, rows, cls = primals
    xd, yd = tangents[:2]
    loss, grad = _fused(x, y, rows, cls)
    loss_dot = _loss_tangent(x, grad, xd, yd, rows, cls)
    xd = _jnp.zeros_like(x) if _zero(xd) else xd
    if _soft(y):
        yd = _jnp.zeros_like(y) if _zero(yd) else yd
        grad_dot = _jax.jvp(lambda x, y: _grad_in_jax(x, y, rows), (x, y), (xd, yd))[1]
    else:
        grad_dot = _jax.jvp(lambda x: _grad_in_jax(x, y, rows), (x,), (xd,))[1]
    return (loss, grad), (loss_dot, grad_dot)


_fused.defjvp(_fused_jvp, symbolic_zeros=True)


# --- the optax interface -----------------------------------------------------------------

def _check_logits(logits: _Any) -> _Any:
    try:
        x = _jnp.asarray(logits)
    except TypeError as exc:
        raise TypeError(f"logits could not be converted to a JAX array: {exc}") from None
    if not _jnp.issubdtype(x.dtype, _jnp.floating):
        raise TypeError(f"logits must be a floating array, got dtype {x.dtype}")
    return x


def _compute_dtype(dtype: _Any) -> _Any:
    """float64 stays float64; every narrower float is computed in float32."""
    return _jnp.float64 if _jnp.dtype(dtype).itemsize == 8 else _jnp.float32


def _class_axes(axis: _Axis, ndim: int) -> tuple[int, ...]:
    """optax's ``axis`` as non-negative class axes, in the given order."""
    axes: tuple[_Any, ...]
    if axis is None:
        axes = tuple(range(ndim))
    elif isinstance(axis, (tuple, list)):
        axes = tuple(axis)
    else:
        axes = (axis,)
    out = []
    for a in axes:
        try:
            if isinstance(a, _np.bool_):    # NumPy < 2.3 indexes it with a warning
                raise TypeError
            a = _operator.index(a)
        except TypeError:
            raise TypeError(f"axis must be an int, a tuple of ints or None, got {axis!r}") from None
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of bounds for logits of dimension {ndim}")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis!r} repeats an axis")
    if not out:
        raise ValueError("axis must name at least one class axis")
    return tuple(out)


def _labels_array(labels: _Any) -> _Any:
    try:
        return _jnp.asarray(labels)
    except TypeError as exc:
        raise TypeError(f"labels could not be converted to a JAX array: {exc}") from None


def _nonempty_class_axes(axis: _Axis, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The class axes of an array of ``shape``, which must have at least one class."""
    if len(shape) == 0:
        raise ValueError("logits must have at least one dimension (the classes)")
    axes = _class_axes(axis, len(shape))
    if any(shape[a] == 0 for a in axes):
        raise ValueError(f"logits must have at least one class: the class axes of shape "
                         f"{shape} have length 0")
    return axes


def _classes_last(a: _Any, axes: tuple[int, ...]) -> _Any:
    """``a`` with the class axes moved last (in the given order) and flattened to one."""
    batch = tuple(i for i in range(a.ndim) if i not in axes)
    order = batch + axes
    if order != tuple(range(a.ndim)):
        a = _jnp.transpose(a, order)
    if len(axes) != 1:
        a = a.reshape(a.shape[:len(batch)] + (-1,))
    return a


def _masks(where: _Any, axis: _Axis, axes: tuple[int, ...],
           shape: tuple[int, ...]) -> tuple[_Any, _Any]:
    """optax's ``where`` as (row mask of the batch shape or None, class mask or None)."""
    if where is None:
        return None, None
    try:
        w = _jnp.asarray(where)
    except TypeError as exc:
        raise TypeError(f"where could not be converted to a JAX array: {exc}") from None
    ndim = len(shape)
    if w.ndim != ndim:  # optax: a mask of the batch shape gains the class axes
        if axis is None or w.ndim + len(axes) != ndim:
            raise ValueError(f"where of shape {w.shape} is neither of the logits' shape "
                             f"{shape} nor of the batch shape")
        w = _jnp.expand_dims(w, axes)
    try:
        fits = _jnp.broadcast_shapes(w.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"where of shape {_jnp.shape(where)} does not broadcast to the "
                         f"logits' shape {shape}")
    w = w.astype(bool)
    if all(w.shape[a] == 1 for a in axes):   # the same for every class: it selects examples
        batch = tuple(shape[i] for i in range(ndim) if i not in axes)
        return _jnp.broadcast_to(_classes_last(w, axes)[..., 0], batch), None
    w = _classes_last(_jnp.broadcast_to(w, shape), axes)
    return _jnp.any(w, axis=-1), w


def softmax_cross_entropy(
    logits: _Any,
    labels: _Any,
    axis: _Axis = -1,
    where: _Any = None,
) -> _jax.Array:
    """Softmax cross-entropy between logits and probability labels, per example.

    ``optax.softmax_cross_entropy`` computed by xent_fast's kernels: the same arguments
    and the same per-example losses, in one pass over the logits; differentiable (the
    gradient comes out of the same pass) and usable under ``jax.jit`` and ``jax.vmap``.

    Parameters
    ----------
    logits : array_like of floats
        Unnormalised log-probabilities, classes along ``axis``. bfloat16 and float16 are
        computed in float32; float64 (with ``jax_enable_x64``) in float64. ``-inf``
        entries are masked classes.
    labels : array_like
        Class probabilities (one-hot or soft), broadcastable with ``logits``. Rows need
        not sum to 1: the loss is ``-sum(labels * log_softmax(logits))``.
    axis : int, tuple of ints or None, default -1
        The class axis or axes (several are flattened into one class axis; None means
        all axes, one example).
    where : array_like of bools, optional
        Elements to include, of the logits' shape, or of the batch shape (one value per
        example). Excluded classes leave the softmax; an example with nothing included
        has loss 0 and gradient 0.

    Returns
    -------
    jax.Array
        One loss per example (the logits' shape without the class axes), in nats, of
        the dtype optax returns (that of ``logits * labels``).

    Notes
    -----
    Where a label is 0 its class adds nothing, even when its logit is ``-inf``: optax
    gives nan there (``0 * -inf``), as ``optax.safe_softmax_cross_entropy`` does not.
    A tiny loss keeps its digits (optax rounds a loss below about 1e-7 to 0 in float32).
    The gradient with respect to ``labels`` is ``-log_softmax(logits)``, as in optax
    (0 at the classes ``where`` excludes, where optax gives nan); it is computed in
    JAX, only when the labels are differentiated. Forward mode (``jax.jvp``,
    ``jax.jacfwd``) and second derivatives (``jax.hessian``) work as in optax.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> import xent_fast.jax as xfj
    >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> labels = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> print(np.asarray(xfj.softmax_cross_entropy(logits, labels)).round(4))
    [0.2761 2.9518]
    >>> grad = jax.grad(lambda x: xfj.softmax_cross_entropy(x, labels).mean())(logits)
    >>> print(np.asarray(grad).round(4))          # (softmax(logits) - labels) / 2
    [[-0.1206  0.0513  0.0693]
     [ 0.2133 -0.4739  0.2606]]
    """
    x = _check_logits(logits)
    y = _labels_array(labels)
    if not (_jnp.issubdtype(y.dtype, _jnp.floating) or _jnp.issubdtype(y.dtype, _jnp.integer)
            or y.dtype == _jnp.bool_):
        raise TypeError(f"labels must be real numbers (probabilities), got dtype {y.dtype}")
    out_dtype = _jnp.result_type(x.dtype, y.dtype)
    try:
        shape = _jnp.broadcast_shapes(x.shape, y.shape)
    except ValueError:
        raise ValueError(f"labels of shape {y.shape} do not broadcast with logits of shape "
                         f"{x.shape}") from None
    axes = _nonempty_class_axes(axis, shape)
    rows, cls = _masks(where, axis, axes, shape)
    comp = _compute_dtype(x.dtype)
    xc = _classes_last(_jnp.broadcast_to(x, shape), axes).astype(comp)
    yc = _classes_last(_jnp.broadcast_to(y, shape), axes).astype(comp)
    if cls is not None:
        xc = _jnp.where(cls, xc, -_jnp.inf)
        yc = _jnp.where(cls, yc, 0)
    return _xent(xc, yc, rows, cls).astype(out_dtype)


def softmax_cross_entropy_with_integer_labels(
    logits: _Any,
    labels: _Any,
    axis: _Axis = -1,
    where: _Any = None,
) -> _jax.Array:
    """Softmax cross-entropy between logits and integer class labels, per example.

    ``optax.softmax_cross_entropy_with_integer_labels`` computed by xent_fast's
    kernels: the same arguments and per-example losses, in one pass over the logits;
    differentiable with respect to the logits (the gradient comes out of the same
    pass) and usable under ``jax.jit`` and ``jax.vmap``.

    Parameters
    ----------
    logits : array_like of floats
        Unnormalised log-probabilities, classes along ``axis``. bfloat16 and float16 are
        computed in float32; float64 (with ``jax_enable_x64``) in float64. ``-inf``
        entries are masked classes.
    labels : array_like of ints
        The class of each example, in ``[0, C)``, of the logits' shape without the
        class axes (or broadcastable to it). With several class axes a label is a flat
        (C-order) index into them.
    axis : int or tuple of ints, default -1
        The class axis or axes.
    where : array_like of bools, optional
        Elements to include, of the logits' shape, or of the batch shape (one value per
        example). An example with nothing included has loss 0 and gradient 0, whatever
        its label.

    Returns
    -------
    jax.Array
        One loss per example, in nats, of the logits' dtype.

    Raises
    ------
    ValueError
        When the computation runs, if a label of a counted example lies outside
        ``[0, C)``: the message names the first (optax returns nan there, or, for
        labels in ``[-C, 0)``, the loss of class ``C + label``). Under ``jax.jit``
        the error is raised where the result is first used.

    Notes
    -----
    A label whose class ``where`` excludes gets optax's loss: the log-sum-exp of the
    included classes minus the label's own logit (not the infinite loss of a class
    of probability 0), and its gradient.
    A tiny loss keeps its digits (optax rounds a loss below about 1e-7 to 0 in float32).
    Forward mode (``jax.jvp``, ``jax.jacfwd``) and second derivatives
    (``jax.hessian``) work as in optax.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> import xent_fast.jax as xfj
    >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> labels = jnp.array([0, 1])
    >>> print(np.asarray(xfj.softmax_cross_entropy_with_integer_labels(logits, labels)).round(4))
    [0.2761 2.9518]
    >>> step = jax.jit(jax.value_and_grad(
    ...     lambda x: xfj.softmax_cross_entropy_with_integer_labels(x, labels).mean()))
    >>> loss, grad = step(logits)
    >>> print(np.asarray(grad).round(4))          # (softmax(logits) - onehot(labels)) / 2
    [[-0.1206  0.0513  0.0693]
     [ 0.2133 -0.4739  0.2606]]
    """
    x = _check_logits(logits)
    t = _labels_array(labels)
    if not _jnp.issubdtype(t.dtype, _jnp.integer):
        raise TypeError(f"labels must be integer class indices, got dtype {t.dtype}")
    if axis is None:
        raise TypeError("axis must be an int or a tuple of ints for integer labels, got None")
    axes = _nonempty_class_axes(axis, x.shape)
    rows, cls = _masks(where, axis, axes, x.shape)
    xc = _classes_last(x, axes).astype(_compute_dtype(x.dtype))
    batch = xc.shape[:-1]
    try:
        t = _jnp.broadcast_to(t, batch)
    except ValueError:
        raise ValueError(f"labels of shape {t.shape} do not match the logits' batch shape "
                         f"{batch}") from None
    if t.dtype not in (_jnp.int32, _jnp.int64):
        # The kernels take int32 and int64; narrower types fit in int32.
        t = t.astype(_jnp.int64 if t.dtype.itemsize == 8 else _jnp.int32)
    if cls is None:
        return _xent(xc, t, rows, None).astype(x.dtype)
    # optax: the log-sum-exp of the included classes minus the label's logit, taken
    # even where ``where`` excludes the label's class. For such a label the kernels are
    # given an included class instead, whose logit is added back and the label's
    # subtracted; JAX differentiates that correction, which turns the kernels'
    # softmax - onehot(stand-in) into optax's softmax - onehot(label).
    n = xc.shape[-1]
    inside = (t >= 0) & (t < n)
    on_excluded = inside & ~_jnp.take_along_axis(cls, _jnp.where(inside, t, 0)[..., None],
                                                 axis=-1)[..., 0]
    if rows is not None:
        on_excluded &= rows
    xm = _jnp.where(cls, xc, -_jnp.inf)
    # the included class of the largest logit: its loss is small, the sum exact
    stand_in = _jnp.argmax(xm, axis=-1).astype(t.dtype)
    t_in = _jnp.where(on_excluded, stand_in, t)
    loss = _xent(xm, t_in, rows, cls)
    at = _partial(_jnp.take_along_axis, axis=-1)
    shift = (at(xc, stand_in[..., None]) - at(xc, _jnp.where(inside, t, 0)[..., None]))[..., 0]
    return (loss + _jnp.where(on_excluded, shift, 0)).astype(x.dtype)


# --- the binary losses -------------------------------------------------------------------

# As for the softmax: the losses alone run one kernel pass; their JVP runs the gradient
# kernel too and returns grad * x_dot (+ d loss / d labels * y_dot), which JAX transposes
# for reverse mode. The gradient kernel's own JVP (second derivatives) differentiates
# the loss written in plain JAX.

@_partial(_jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _binary(x: _Any, y: _Any, kind: int, alpha: float, gamma: float) -> _Any:
    return _binary_call(0, kind, x, y, alpha, gamma)


def _binary_jvp(kind: int, alpha: float, gamma: float, primals: _Any,
                tangents: _Any) -> tuple[_Any, _Any]:
    x, y = primals
    xd, yd = tangents
    loss = _binary(x, y, kind, alpha, gamma)
    t = None
    if not _zero(xd):
        t = _binary_grad(x, y, kind, alpha, gamma) * xd
    if not _zero(yd):
        ty = _binary_label_grad(x, y, kind, alpha, gamma) * yd
        t = ty if t is None else t + ty
    return loss, _jnp.zeros_like(loss) if t is None else t


_binary.defjvp(_binary_jvp, symbolic_zeros=True)


@_partial(_jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _binary_grad(x: _Any, y: _Any, kind: int, alpha: float, gamma: float) -> _Any:
    """d loss / d logits, elementwise, from the kernel."""
    return _binary_call(1, kind, x, y, alpha, gamma, _jnp.ones_like(x))


def _binary_grad_jvp(kind: int, alpha: float, gamma: float, primals: _Any,
                     tangents: _Any) -> tuple[_Any, _Any]:
    # Reached only when the gradient itself is differentiated (second derivatives).
    x, y = primals
    xd, yd = (_jnp.zeros_like(p) if _zero(t) else t for p, t in zip(primals, tangents))

    def grad_in_jax(x: _Any, y: _Any) -> _Any:
        return _jax.grad(lambda x: _jnp.sum(_binary_in_jax(x, y, kind, alpha, gamma)))(x)

    return (_binary_grad(x, y, kind, alpha, gamma),
            _jax.jvp(grad_in_jax, (x, y), (xd, yd))[1])


_binary_grad.defjvp(_binary_grad_jvp, symbolic_zeros=True)


def _binary_in_jax(x: _Any, y: _Any, kind: int, alpha: float, gamma: _Any) -> _Any:
    """The kernels' binary losses in plain JAX (optax's formulas), for derivatives the
    kernels do not give, and for a traced gamma."""
    ce = (1 - y) * _jax.nn.softplus(x) + y * _jax.nn.softplus(-x)
    if kind == _BCE:
        return ce
    log_p, log_q = _jax.nn.log_sigmoid(x), _jax.nn.log_sigmoid(-x)
    log_1mpt = _jax.scipy.special.logsumexp(_jnp.stack([log_p, log_q], axis=-1), axis=-1,
                                           b=_jnp.stack([1 - y, y], axis=-1))
    loss = ce * _jnp.exp(gamma * log_1mpt)
    if alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss


def _binary_label_grad(x: _Any, y: _Any, kind: int, alpha: float, gamma: float) -> _Any:
    """d loss / d labels, elementwise: -x for the cross-entropy; for the focal loss
    a_t q^gamma ce with a_t = alpha y + (1 - alpha)(1 - y), q = p (1 - y) + (1 - p) y,
    ce = (1 - y) softplus(x) + y softplus(-x), differentiated in y."""
    if kind == _BCE:
        return -x
    p = _jax.nn.sigmoid(x)
    q = p * (1 - y) + (1 - p) * y
    ce = (1 - y) * _jax.nn.softplus(x) + y * _jax.nn.softplus(-x)
    mod = q ** gamma if gamma != 0 else _jnp.ones_like(q)
    dmod = (gamma * _jnp.where(q > 0, q ** (gamma - 1) if gamma != 1 else 1.0, 0.0)
            * (1 - 2 * p)) if gamma != 0 else _jnp.zeros_like(q)
    d = dmod * ce - mod * x
    if alpha >= 0:
        a_t = alpha * y + (1 - alpha) * (1 - y)
        d = a_t * d + (2 * alpha - 1) * mod * ce
    return d




def _binary_inputs(logits: _Any, labels: _Any) -> tuple[_Any, _Any, _Any]:
    """(logits, labels) broadcast to one shape in the compute dtype, and the output
    dtype (the logits'), as optax casts the labels to the logits' dtype."""
    x = _check_logits(logits)
    y = _labels_array(labels)
    if not (_jnp.issubdtype(y.dtype, _jnp.floating) or _jnp.issubdtype(y.dtype, _jnp.integer)
            or y.dtype == _jnp.bool_):
        raise TypeError(f"labels must be real numbers, got dtype {y.dtype}")
    try:
        shape = _jnp.broadcast_shapes(x.shape, y.shape)
    except ValueError:
        raise ValueError(f"labels of shape {y.shape} do not broadcast with logits of shape "
                         f"{x.shape}") from None
    comp = _compute_dtype(x.dtype)
    # labels rounded to the logits' dtype first, as optax does
    y = y.astype(x.dtype)
    return (_jnp.broadcast_to(x, shape).astype(comp), _jnp.broadcast_to(y, shape).astype(comp),
            x.dtype)


def _static_number(v: _Any) -> float | None:
    """``v`` as a float if it is a concrete real scalar (not traced), else None."""
    if isinstance(v, (bool, _np.bool_)) or _np.ndim(v) != 0:
        return None
    try:
        f = float(v)
    except (TypeError, _jax.errors.ConcretizationTypeError):
        return None
    return f if _np.isfinite(f) else None


def sigmoid_binary_cross_entropy(logits: _Any, labels: _Any) -> _jax.Array:
    """Sigmoid cross-entropy between logits and binary or probability labels, per element.

    ``optax.sigmoid_binary_cross_entropy`` computed by xent_fast's binary kernels: the
    same arguments and elementwise losses ``-labels log sigmoid(logits) - (1 - labels)
    log sigmoid(-logits)``, in one pass; differentiable with ``jax.grad`` (in the
    logits and the labels) and usable under ``jax.jit`` and ``jax.vmap``.

    Parameters
    ----------
    logits : array_like of floats
        Unnormalised log-odds of each binary prediction. bfloat16 and float16 are
        computed in float32; float64 (with ``jax_enable_x64``) in float64.
    labels : array_like
        Binary labels or target probabilities, broadcastable with ``logits``; cast to
        the logits' dtype, as optax does.

    Returns
    -------
    jax.Array
        One loss per element (the broadcast shape of logits and labels), in nats, of the
        logits' dtype.

    Notes
    -----
    Each loss is ``(1 - labels) softplus(logits) + labels softplus(-logits)``, every
    term >= 0: a tiny loss keeps its digits, and any finite logit, +-1e4 included,
    gives a finite loss. Forward mode (``jax.jvp``) and second derivatives work.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> import xent_fast.jax as xfj
    >>> logits = jnp.array([2.0, -1.0, 0.0])
    >>> labels = jnp.array([1.0, 1.0, 0.0])
    >>> print(np.asarray(xfj.sigmoid_binary_cross_entropy(logits, labels)).round(4))
    [0.1269 1.3133 0.6931]
    >>> grad = jax.grad(lambda x: xfj.sigmoid_binary_cross_entropy(x, labels).sum())(logits)
    >>> print(np.asarray(grad).round(4))          # sigmoid(logits) - labels
    [-0.1192 -0.7311  0.5   ]
    """
    x, y, out_dtype = _binary_inputs(logits, labels)
    return _binary(x, y, _BCE, -1.0, 0.0).astype(out_dtype)


def sigmoid_focal_loss(logits: _Any, labels: _Any, *, alpha: _Any = None,
                       gamma: _Any = 2.0) -> _jax.Array:
    """Sigmoid focal loss, per element (Lin et al., 2017).

    ``optax.sigmoid_focal_loss`` computed by xent_fast's binary kernels: the same
    arguments and elementwise losses ``alpha_t (1 - p_t)^gamma ce``, with ``ce`` the
    sigmoid cross-entropy, ``1 - p_t = p (1 - labels) + (1 - p) labels`` and ``alpha_t
    = alpha labels + (1 - alpha)(1 - labels)`` (1 without alpha); differentiable with
    ``jax.grad`` and usable under ``jax.jit`` and ``jax.vmap``.

    Parameters
    ----------
    logits : array_like of floats
        Unnormalised log-odds. bfloat16 and float16 are computed in float32; float64
        (with ``jax_enable_x64``) in float64.
    labels : array_like
        Binary labels or target probabilities in [0, 1], broadcastable with ``logits``.
    alpha : float or array_like, optional
        Weight of the positive class, in (0, 1); None (the default) weights nothing.
    gamma : float or array_like, default 2.0
        Exponent of the modulating factor ``(1 - p_t)``.

    Returns
    -------
    jax.Array
        One loss per element, of the logits' dtype.

    Notes
    -----
    A number ``alpha >= 0`` and a number ``gamma`` (not traced) run in the kernel's one
    pass. A traced or array ``alpha``, or a negative one, multiplies the kernel's loss
    in JAX (and is differentiable, as in optax); a traced or array ``gamma`` computes
    the loss with ``jax.numpy`` as optax does. Forward mode (``jax.jvp``) and second
    derivatives work.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> import xent_fast.jax as xfj
    >>> logits = jnp.array([2.0, -1.0, 0.0])
    >>> labels = jnp.array([1.0, 1.0, 0.0])
    >>> print(np.asarray(xfj.sigmoid_focal_loss(logits, labels, alpha=0.25)).round(4))
    [0.0005 0.1755 0.13  ]
    """
    x, y, out_dtype = _binary_inputs(logits, labels)
    g = _static_number(gamma)
    a = None if alpha is None else _static_number(alpha)
    kernel_alpha = a if g is not None and a is not None and a >= 0 else -1.0
    if g is None:
        # optax's formula, for a gamma that is traced or varies by element
        loss = _binary_in_jax(x, y, _FOCAL, -1.0, _jnp.asarray(gamma).astype(x.dtype))
    else:
        loss = _binary(x, y, _FOCAL, kernel_alpha, g)
    if alpha is not None and kernel_alpha < 0:
        al = _jnp.asarray(alpha)
        loss = (al * y + (1.0 - al) * (1.0 - y)) * loss
    return loss.astype(out_dtype)


del annotations  # bound by the __future__ import; the module's public names are __all__
