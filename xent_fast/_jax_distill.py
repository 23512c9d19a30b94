"""``xent_fast.jax.distillation_loss``: the fused distillation kernel under ``jit`` and
``grad``, with a custom VJP.

The forward runs the kernel through XLA's typed FFI: the compiled handler
(src/_xla_distill.pyx) reads XLA's buffers in place and writes the per-row losses and
the gradient with respect to the student logits, without Python on the call; without
that handler (``xent_fast.jax.mechanism()`` other than ``"ffi"``, or a build that lacks
it) the same kernel runs through ``jax.pure_callback``. The value alone asks for the
losses only; the VJP's forward asks for both, and its backward scales that gradient.
The teacher's cotangent, when asked for, is the VJP of the composite formula (TRL's),
so it is correct rather than silently zero; under ``jit`` it is dead code when unused.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _distill as _xd
from ._validation import check_number


def _target() -> str | None:
    """The FFI target of the compiled handler, or None to use ``jax.pure_callback``."""
    # xent_fast.jax imports this module to export the loss and registers the handlers
    # afterwards: it is read at trace time, when it is complete.
    from . import jax as xfj
    target: str | None = xfj._TARGETS.get(xfj._MECHANISM, {}).get("distill")
    return target


def _host(s: np.ndarray, t: np.ndarray, temperature: float, beta: float,
          want_grad: bool) -> tuple[Any, ...]:
    s = np.asarray(s)
    if not want_grad:
        return (np.asarray(_xd.distillation_loss(s, np.asarray(t), temperature=temperature,
                                                 beta=beta, reduction="none"), s.dtype),)
    loss, grad = _xd.distillation_loss_and_grad(
        s, np.asarray(t), temperature=temperature, beta=beta, reduction="none",
        grad_output=np.ones(s.shape[:-1], s.dtype))
    return np.asarray(loss, s.dtype), grad


def _kernel(s: Any, t: Any, temperature: float, beta: float, want_grad: bool) -> tuple[Any, ...]:
    """One kernel call on (..., C) arrays of one dtype: (losses,), or (losses, gradient)
    if ``want_grad``."""
    loss_t = jax.ShapeDtypeStruct(s.shape[:-1], s.dtype)
    outs = (loss_t, jax.ShapeDtypeStruct(s.shape, s.dtype)) if want_grad else (loss_t,)
    target = _target()
    # vmap: both arrays get the batch axis in front, which the kernel takes as more rows
    if target is not None:
        call = jax.ffi.ffi_call(target, outs, vmap_method="broadcast_all")
        out: tuple[Any, ...] = call(s, t, temperature=np.float64(temperature),
                                    beta=np.float64(beta))
        return tuple(out)
    out = jax.pure_callback(
        functools.partial(_host, temperature=temperature, beta=beta, want_grad=want_grad),
        outs, s, t, vmap_method="broadcast_all")
    return tuple(out)


def _composite(s: Any, t: Any, temperature: float, beta: float) -> Any:
    """The divergence of every row in plain JAX (TRL's formula), for the derivatives
    that the kernel does not give. A class masked (-inf) on a side is kept out of the
    arithmetic, not only out of the sum: inf - inf there would make its derivative NaN."""
    ls = jax.nn.log_softmax(s / temperature, axis=-1)
    lt = jax.nn.log_softmax(t / temperature, axis=-1)

    def kl(lx: Any, ly: Any) -> Any:     # KL(x || y) per row, 0 log 0 = 0
        keep = lx > -jnp.inf
        d = jnp.where(keep, lx - jnp.where(keep, ly, 0.0), 0.0)
        return jnp.sum(jnp.where(keep, jnp.exp(lx) * d, 0.0), axis=-1)

    if beta == 0:
        return kl(lt, ls)
    if beta == 1:
        return kl(ls, lt)
    either = (ls > -jnp.inf) | (lt > -jnp.inf)
    lm = jnp.where(either, jnp.logaddexp(jnp.where(either, ls, 0.0) + math.log1p(-beta),
                                         jnp.where(either, lt, 0.0) + math.log(beta)),
                   -jnp.inf)
    return beta * kl(lt, lm) + (1 - beta) * kl(ls, lm)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _fused(s: Any, t: Any, temperature: float, beta: float) -> tuple[Any, Any]:
    """(losses, their gradient in ``s``) from one kernel call."""
    loss, grad = _kernel(s, t, temperature, beta, True)
    return loss, grad


def _fused_jvp(temperature: float, beta: float, primals: Any,
               tangents: Any) -> tuple[Any, Any]:
    # Reached only for second derivatives: differentiate the composite's gradient.
    s, t = primals
    out = _fused(s, t, temperature, beta)

    def loss_and_grad(s: Any, t: Any) -> tuple[Any, Any]:
        loss, vjp = jax.vjp(lambda ss: _composite(ss, t, temperature, beta), s)
        return loss, vjp(jnp.ones_like(loss))[0]
    return out, jax.jvp(loss_and_grad, (s, t), tuple(tangents))[1]


_fused.defjvp(_fused_jvp)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _distill(s: Any, t: Any, temperature: float, beta: float) -> Any:
    return _kernel(s, t, temperature, beta, False)[0]


def _fwd(s: Any, t: Any, temperature: float, beta: float) -> tuple[Any, Any]:
    loss, grad = _fused(s, t, temperature, beta)
    return loss, (grad, s, t)


def _bwd(temperature: float, beta: float, res: Any, g: Any) -> tuple[Any, Any]:
    grad, s, t = res
    _, vjp = jax.vjp(lambda tt: _composite(s, tt, temperature, beta), t)
    return grad * g[..., None].astype(grad.dtype), vjp(g)[0]


_distill.defvjp(_fwd, _bwd)


def distillation_loss(student_logits: Any, teacher_logits: Any, *, temperature: float = 1.0,
                      beta: float = 0.0) -> Any:
    """Per-row distillation divergence between teacher and student logits.

    The semantics of :func:`xent_fast.distillation_loss` with ``reduction="none"``
    (optax's per-example convention; reduce with ``jnp.mean`` or a masked mean):
    ``beta=0`` forward KL ``KL(p_t || p_s)``, ``beta=1`` reverse KL, in between TRL's
    generalized JSD, both softmaxes taken of the logits over ``temperature``. Usable
    under ``jax.jit``, ``jax.grad`` and ``jax.vmap``; the gradient with respect to the
    student comes from the same kernel call as the loss. Second derivatives
    (``jax.hessian``, a gradient of a gradient) differentiate that gradient as written
    in plain JAX; forward mode (``jax.jvp``) is not offered (the loss has a custom VJP).

    Parameters
    ----------
    student_logits : Array of shape (..., C), float32 or float64
    teacher_logits : Array of the same shape
    temperature : float > 0, default 1.0
    beta : float in [0, 1], default 0.0

    Returns
    -------
    Array of shape ``student_logits.shape[:-1]``
        The divergence of every row, in nats.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from xent_fast.jax import distillation_loss
    >>> s = jnp.array([[1.0, 2.0, 3.0]]); t = jnp.array([[3.0, 2.0, 1.0]])
    >>> np.asarray(jax.grad(lambda s: distillation_loss(s, t).sum())(s)).round(4)
    array([[-0.5752,  0.    ,  0.5752]], dtype=float32)
    """
    s = jnp.asarray(student_logits)
    t = jnp.asarray(teacher_logits)
    if not jnp.issubdtype(s.dtype, jnp.floating):
        raise TypeError(f"student_logits must be floating, got dtype {s.dtype}")
    if not jnp.issubdtype(t.dtype, jnp.floating):
        raise TypeError(f"teacher_logits must be floating, got dtype {t.dtype}")
    if s.shape != t.shape:
        raise ValueError(f"teacher_logits must have shape {s.shape}, got {t.shape}")
    if s.ndim == 0 or s.shape[-1] == 0:
        raise ValueError(f"student_logits must have a non-empty class axis, got shape {s.shape}")
    temp = check_number(temperature, "temperature", 0.0, low_open=True)
    b = check_number(beta, "beta", 0.0, 1.0)
    work = s.dtype if s.dtype in (jnp.float32, jnp.float64) else jnp.float32
    out = _distill(s.astype(work), t.astype(work), temp, b)
    return out.astype(s.dtype)


distillation_loss.__module__ = "xent_fast.jax"   # a public name of xent_fast.jax
