"""tokamax's linear softmax cross-entropy for JAX, without the N x V logits.

``linear_softmax_cross_entropy_loss(x, labels, weights)`` is the loss of the logits
``x @ weights`` (``weights`` is ``(H, V)``, tokamax's layout) computed a chunk of rows
at a time inside ``lax.scan``; the logits of one chunk are the only array of ``V``
columns that exists at a time.

Design
------
* Each chunk's logits go through xent_fast.jax's own call of the fused kernel (the
  compiled XLA FFI handler, or its fallbacks), which turns them into the chunk's losses
  and their gradient in one pass. That call is an ordinary XLA custom call, so it runs
  inside the scan's loop like any other op.
* The loss is a ``jax.custom_jvp``. Its value alone runs one product per chunk and the
  loss-only kernel. Its JVP runs the fused pass: per chunk, the logits, the kernel's
  gradient ``G``, then ``G @ weights.T`` into the rows of ``grad_x`` and
  ``x_chunk.T @ G`` added to ``grad_w``; it returns
  ``sum(grad_x * x_dot) + sum(grad_w * w_dot)`` (times ``1/N`` for "mean"), which JAX
  transposes for reverse mode: ``jax.grad`` is one chunked pass plus one multiply of
  each gradient by the cotangent, and no backward pass over the vocabulary. Inputs
  whose tangent is symbolically zero skip their product (a gradient in ``x`` alone
  costs two products per chunk, not three).
* ``grad_w`` is accumulated in the compute dtype (float32, or float64 for float64
  inputs) in chunk order, so it depends on ``chunk_rows`` at the level of rounding; the
  per-row losses are kept (N values) and summed once at the end, so the loss does not.
* bfloat16/float16 inputs: the products run in that dtype with float32 results
  (``preferred_element_type``), ``G`` is rounded to the inputs' dtype before its two
  products, and the logits, the kernel, the sums and ``grad_w`` stay float32; the
  gradients are rounded to the inputs' dtypes once, after the cotangent is applied.
* The loss is returned as a float32 scalar whatever the inputs' dtype, as tokamax
  returns it.
* Second derivatives: the fused pass is a ``custom_jvp`` of its own, whose rule
  differentiates the same chunked pass written in plain JAX (still no N x V array). The
  kernel's call cannot carry the rule inside the loop: JAX drops custom rules in a
  scan's body when it partially evaluates it (``jax.hessian`` of xent_fast.jax's
  per-example loss inside a user's ``lax.scan`` fails for that reason).
"""

from __future__ import annotations

import operator
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

__all__ = ["linear_softmax_cross_entropy_loss"]

# Rows of a chunk when chunk_rows is None: at least _CHUNK_MIN_ROWS, more when the
# logits of that many rows take less than _CHUNK_BYTES. Each chunk adds its (H, V)
# product to the weights' gradient, a pass over H x V values against 6 x rows x H x V
# flops of products: at 256 rows that pass is about 1% of the products' time, at 64
# rows (8 MiB of logits at V = 32000) it measured 1.3-1.5x slower end to end.
_CHUNK_MIN_ROWS = 256
_CHUNK_BYTES = 8 << 20
# Default chunks hold a multiple of this many rows (full register tiles of the products).
_CHUNK_MULTIPLE = 16


def default_chunk_rows(n_rows: int, n_classes: int, itemsize: int = 4) -> int:
    """Rows per chunk when ``chunk_rows`` is None: 256, or more if their logits take
    less than 8 MiB (a multiple of 16 rows), and no more than ``n_rows`` (at least 1)."""
    rows = _CHUNK_BYTES // max(1, n_classes * itemsize) // _CHUNK_MULTIPLE * _CHUNK_MULTIPLE
    return max(1, min(max(_CHUNK_MIN_ROWS, rows), n_rows))


def _xfj() -> Any:
    # xent_fast.jax imports this module to export the loss; it is imported here, at
    # call time, when it is complete.
    from . import jax as xfj
    return xfj


def _dot(a: Any, b: Any, contract: tuple[int, int], out: Any, precision: Any) -> Any:
    """``a`` times ``b`` over axis ``contract[0]`` of ``a`` and ``contract[1]`` of ``b``,
    in their dtype, with results of dtype ``out``."""
    return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())),
                           precision=precision, preferred_element_type=out)


def _chunked(x: Any, w: Any, t: Any, chunk: int, precision: Any, want_gx: bool,
             want_gw: bool, fused: bool, in_jax: bool = False) -> tuple[Any, Any, Any]:
    """One pass over the rows of ``x`` ``chunk`` at a time.

    ``x`` (N, H) and ``w`` (H, V) of one dtype, ``t`` (N,) int32/int64. Returns the
    per-row losses (N,) and, when ``fused``, the gradients of their sum in ``x``
    (N, H) and ``w`` (H, V) (None where not wanted), all in the compute dtype.
    ``in_jax``: the kernel's work written in plain JAX, to be differentiated.
    """
    xfj = _xfj()
    n, h = x.shape
    v = w.shape[1]
    pd = x.dtype
    comp = xfj._compute_dtype(pd)

    def one(xc: Any, tc: Any) -> tuple[Any, Any, Any]:
        logits = _dot(xc, w, (1, 0), comp, precision)
        if in_jax:
            loss = (jax.nn.logsumexp(logits, axis=-1)
                    - jnp.take_along_axis(logits, tc[:, None], axis=-1)[:, 0])
            g = xfj._grad_in_jax(logits, tc, None)
        elif not fused:
            return xfj._call("loss", logits, tc, None)[0], None, None
        else:
            loss, g = xfj._call("fused", logits, tc, None)
        g = g.astype(pd)   # the products run in the inputs' dtype
        gx = _dot(g, w, (1, 1), comp, precision) if want_gx else None
        gw = _dot(xc, g, (0, 0), comp, precision) if want_gw else None
        return loss, gx, gw

    loss = jnp.zeros((n,), comp)
    gx = jnp.zeros((n, h), comp) if fused and want_gx else None
    gw = jnp.zeros((h, v), comp) if fused and want_gw else None

    def put(carry: tuple[Any, Any, Any], start: Any, xc: Any, tc: Any) -> tuple[Any, Any, Any]:
        loss, gx, gw = carry
        lc, gxc, gwc = one(xc, tc)
        loss = lax.dynamic_update_slice_in_dim(loss, lc, start, 0)
        if gx is not None:
            gx = lax.dynamic_update_slice_in_dim(gx, gxc, start, 0)
        if gw is not None:
            gw = gw + gwc   # chunk order: the same sum for every run
        return loss, gx, gw

    full, rest = divmod(n, chunk)
    carry = (loss, gx, gw)
    if full:
        def body(carry: tuple[Any, Any, Any], i: Any) -> tuple[tuple[Any, Any, Any], None]:
            start = i * chunk
            xc = lax.dynamic_slice_in_dim(x, start, chunk, 0)
            tc = lax.dynamic_slice_in_dim(t, start, chunk, 0)
            return put(carry, start, xc, tc), None

        carry = lax.scan(body, carry, jnp.arange(full, dtype=jnp.int32))[0]
    if rest:
        start = full * chunk
        carry = put(carry, start, lax.slice(x, (start, 0), (n, h)), lax.slice(t, (start,), (n,)))
    return carry


def _zero(t: Any) -> bool:
    return t is None or isinstance(t, SymbolicZero)


@partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5, 6))
def _fused(x: Any, w: Any, t: Any, chunk: int, precision: Any, want_gx: bool,
           want_gw: bool) -> tuple[Any, Any, Any]:
    """The fused pass: per-row losses and the wanted gradients (see _chunked)."""
    return _chunked(x, w, t, chunk, precision, want_gx, want_gw, fused=True)


def _fused_jvp(chunk: int, precision: Any, want_gx: bool, want_gw: bool, primals: Any,
               tangents: Any) -> tuple[Any, Any]:
    # Reached only when the gradients are differentiated (second derivatives): the
    # same chunked pass in plain JAX, differentiated by JAX. (The kernel's call inside
    # the scan cannot carry a rule of its own: JAX drops custom rules when it
    # partially evaluates a scan's body.)
    x, w, t = primals
    xd, wd = (jnp.zeros_like(p) if _zero(d) else d for p, d in zip(primals[:2], tangents[:2]))
    out = _fused(x, w, t, chunk, precision, want_gx, want_gw)
    dots = jax.jvp(lambda x, w: _chunked(x, w, t, chunk, precision, want_gx, want_gw,
                                         fused=True, in_jax=True), (x, w), (xd, wd))[1]
    return out, dots


_fused.defjvp(_fused_jvp, symbolic_zeros=True)


@partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5))
def _loss(x: Any, w: Any, t: Any, mean: bool, chunk: int, precision: Any) -> Any:
    """The float32 loss of the logits ``x @ w`` against ``t`` (sum, or mean over rows)."""
    rows = _chunked(x, w, t, chunk, precision, False, False, fused=False)[0]
    return _reduce(rows, mean)


def _reduce(rows: Any, mean: bool) -> Any:
    # One sum of the per-row losses, in the compute dtype; then tokamax's float32.
    total = jnp.sum(rows)
    if mean:
        total = total / rows.shape[0]
    return total.astype(jnp.float32)


def _loss_jvp(mean: bool, chunk: int, precision: Any, primals: Any,
              tangents: Any) -> tuple[Any, Any]:
    x, w, t = primals
    xd, wd = tangents[:2]
    if _zero(xd) and _zero(wd):
        return _loss(x, w, t, mean, chunk, precision), jnp.zeros((), jnp.float32)
    rows, gx, gw = _fused(x, w, t, chunk, precision, not _zero(xd), not _zero(wd))
    comp = rows.dtype
    tan = jnp.zeros((), comp)
    if gx is not None:
        tan = tan + jnp.sum(gx * xd.astype(comp))
    if gw is not None:
        tan = tan + jnp.sum(gw * wd.astype(comp))
    if mean:
        tan = tan / rows.shape[0]
    return _reduce(rows, mean), tan.astype(jnp.float32)


_loss.defjvp(_loss_jvp, symbolic_zeros=True)


def _float_array(a: Any, name: str) -> Any:
    try:
        a = jnp.asarray(a)
    except TypeError as exc:
        raise TypeError(f"{name} could not be converted to a JAX array: {exc}") from None
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating array, got dtype {a.dtype}")
    return a


def _check_labels(t: Any, n: int, v: int) -> Any:
    """Labels as int32/int64 of shape (n,); concrete labels outside [0, v) raise here,
    naming the first (traced ones raise from the kernel when the result is used)."""
    try:
        t = jnp.asarray(t)
    except TypeError as exc:
        raise TypeError(f"labels could not be converted to a JAX array: {exc}") from None
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class indices, got dtype {t.dtype}")
    if t.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) (one class per row of x), got "
                         f"{t.shape}")
    if not isinstance(t, jax.core.Tracer) and n:
        # On the host: jnp would stage the check into an enclosing jit's trace.
        host = np.asarray(t)
        bad = (host < 0) | (host >= v)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"labels[{i}] = {host[i]} is not a valid class index: it "
                             f"must be in [0, {v})")
    if t.dtype not in (jnp.int32, jnp.int64):
        t = t.astype(jnp.int64 if t.dtype.itemsize == 8 else jnp.int32)
    return t


def linear_softmax_cross_entropy_loss(
    x: Any,
    labels: Any,
    weights: Any,
    *,
    reduction: Literal["sum", "mean"] = "sum",
    precision: lax.PrecisionLike = None,
    implementation: None = None,
    chunk_rows: int | None = None,
) -> jax.Array:
    """Softmax cross-entropy of the logits ``x @ weights``, without the logits.

    ``tokamax.linear_softmax_cross_entropy_loss`` computed by xent_fast's kernels: the
    same arguments, layout and result. The rows of ``x`` are taken ``chunk_rows`` at a
    time inside ``lax.scan``; each chunk's logits go through the fused cross-entropy
    kernel (loss and gradient in one pass), so no ``N x V`` array is ever made.
    Differentiable in ``x`` and ``weights`` (``jax.grad``, ``jax.jvp``) and usable
    under ``jax.jit``; ``jax.grad`` computes both gradients in the same chunked pass
    as the loss.

    Parameters
    ----------
    x : array_like of floats, shape (N, H)
        The hidden states (the last layer's output), one row per token.
    labels : array_like of ints, shape (N,)
        The class of each row, in ``[0, V)``.
    weights : array_like of floats, shape (H, V)
        The projection onto the ``V`` classes (tokamax's layout: ``x @ weights``).
        ``x`` and ``weights`` are promoted to a common dtype for the products.
    reduction : {"sum", "mean"}, default "sum"
        The sum of the rows' losses, or their mean (the sum over ``N``).
    precision : jax.lax.PrecisionLike, optional
        Passed to the matrix products (tokamax accepts only None).
    implementation : None
        tokamax's choice of kernel; xent_fast has one, so only None is accepted.
    chunk_rows : int, optional
        Rows per chunk (not in tokamax). None: 256 rows, or more when their logits
        would take less than 8 MiB. Memory grows with it; time falls up to a few
        hundred rows (each chunk adds an ``(H, V)`` product to the weights' gradient).

    Returns
    -------
    jax.Array
        The loss, a float32 scalar (tokamax's dtype for every input dtype), in nats.

    Raises
    ------
    TypeError
        ``x`` or ``weights`` not floating, ``labels`` not integer, ``chunk_rows`` not
        an int.
    ValueError
        Shapes that do not fit, an unknown ``reduction`` or ``implementation``,
        ``chunk_rows < 1``, or a concrete label outside ``[0, V)`` (naming the first).
        A traced label (under ``jax.jit``) outside ``[0, V)`` makes the kernel fail
        where the result is first used, with XLA's ``jax.errors.JaxRuntimeError``
        naming the label and its row within its chunk.

    Notes
    -----
    bfloat16 and float16 inputs run their matrix products in that dtype with float32
    results; the logits, the kernel, the sums and the accumulation of the weights'
    gradient are float32, and the gradients are rounded to the inputs' dtypes once.
    float64 (with ``jax_enable_x64``) is computed in float64 and the loss rounded to
    float32. Memory beyond the inputs and the gradients: one chunk's logits and their
    gradient, and one ``(H, V)`` product. ``N = 0`` gives 0 for "sum" and nan for
    "mean", as tokamax.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> import xent_fast.jax as xfj
    >>> rng = np.random.default_rng(0)
    >>> x = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    >>> w = jnp.asarray(rng.normal(size=(4, 10)), jnp.float32)
    >>> labels = jnp.array([0, 3, 9, 2, 2, 7])
    >>> loss = xfj.linear_softmax_cross_entropy_loss(x, labels, w, reduction="mean")
    >>> ref = -jax.nn.log_softmax(x @ w)[jnp.arange(6), labels].mean()
    >>> bool(jnp.allclose(loss, ref))
    True
    >>> step = jax.jit(jax.value_and_grad(
    ...     lambda x, w: xfj.linear_softmax_cross_entropy_loss(x, labels, w, chunk_rows=4),
    ...     argnums=(0, 1)))
    >>> loss, (gx, gw) = step(x, w)
    >>> gx.shape, gw.shape
    ((6, 4), (4, 10))
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f'reduction must be "sum" or "mean", got {reduction!r}')
    if implementation is not None:
        raise ValueError(f"implementation must be None (xent_fast has one), got "
                         f"{implementation!r}")
    xa = _float_array(x, "x")
    wa = _float_array(weights, "weights")
    if xa.ndim != 2:
        raise ValueError(f"x must have shape (N, H), got {xa.shape}")
    if wa.ndim != 2:
        raise ValueError(f"weights must have shape (H, V), got {wa.shape}")
    n, h = xa.shape
    if wa.shape[0] != h:
        raise ValueError(f"weights of shape {wa.shape} do not fit x of shape {xa.shape}: "
                         f"weights must have shape ({h}, V)")
    v = wa.shape[1]
    if v == 0:
        raise ValueError("weights must have at least one class (V >= 1), got shape "
                         f"{wa.shape}")
    t = _check_labels(labels, n, v)
    if chunk_rows is None:
        chunk = default_chunk_rows(n, v, jnp.dtype(_xfj()._compute_dtype(xa.dtype)).itemsize)
    elif isinstance(chunk_rows, (bool, np.bool_)):
        raise TypeError("chunk_rows must be an int or None, got a bool")
    else:
        try:
            chunk = operator.index(chunk_rows)
        except TypeError:
            raise TypeError(f"chunk_rows must be an int or None, got {chunk_rows!r}") from None
        if chunk < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk}")
        chunk = min(chunk, max(n, 1))
    pd = jnp.result_type(xa.dtype, wa.dtype)
    return _loss(xa.astype(pd), wa.astype(pd), t, reduction == "mean", chunk, precision)


# Public as xent_fast.jax.linear_softmax_cross_entropy_loss: named so in help() and
# reprs, as the module's other functions are.
linear_softmax_cross_entropy_loss.__module__ = "xent_fast.jax"
