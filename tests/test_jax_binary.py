"""xent_fast.jax's sigmoid_binary_cross_entropy and sigmoid_focal_loss against optax's,
values and gradients, under jit, grad and vmap, for every mechanism (skipped without
JAX or optax)."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import xent_fast.jax as xfj  # noqa: E402

BCE, FOCAL = xfj.sigmoid_binary_cross_entropy, xfj.sigmoid_focal_loss
OPTAX = {BCE: optax.sigmoid_binary_cross_entropy, FOCAL: optax.sigmoid_focal_loss}
MECHANISMS = [m for m in ("ffi", "ctypes") if m in xfj._TARGETS] + ["callback"]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-13),
       jnp.bfloat16: dict(rtol=2e-2, atol=1e-2), np.float16: dict(rtol=2e-3, atol=1e-3)}


@pytest.fixture(params=MECHANISMS)
def mechanism(request, monkeypatch):
    monkeypatch.setattr(xfj, "_MECHANISM", request.param)
    return request.param


def _close(a, b, tol):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               equal_nan=True, **tol)


def _inputs(rng, shape, dtype=np.float32, soft=False):
    x = (rng.normal(size=shape) * 4).astype(dtype)
    y = rng.random(shape) if soft else rng.integers(0, 2, shape)
    return x, y.astype(dtype)


def _check(fn, x, y, tol, label_grad=True, **kw):
    """Values and gradients (in logits and, if label_grad, labels) against optax's,
    under jit."""
    ours = jax.jit(lambda x, y: fn(x, y, **kw))(x, y)
    want = OPTAX[fn](x, y, **kw)
    assert ours.shape == want.shape and ours.dtype == want.dtype
    _close(ours, want, tol)
    w = jnp.asarray(np.linspace(0.5, 1.5, ours.size).reshape(ours.shape), ours.dtype)

    def total(f):
        return jax.jit(jax.grad(lambda x, y: (f(x, y, **kw) * w).sum(), argnums=(0, 1)))
    for a, b in list(zip(total(fn)(x, y), total(OPTAX[fn])(x, y)))[:2 if label_grad else 1]:
        assert a.dtype == b.dtype
        _close(a, b, tol)


OPTIONS = [dict(), dict(alpha=0.25), dict(gamma=0.0), dict(gamma=1.0),
           dict(alpha=0.6, gamma=0.5), dict(alpha=-0.5, gamma=3.0)]


@pytest.mark.parametrize("shape", [(7,), (4, 9), (2, 3, 5), (0, 3), ()],
                         ids=lambda s: "x".join(map(str, s)) or "scalar")
def test_bce_matches_optax(shape, rng):
    x, y = _inputs(rng, shape, soft=True)
    _check(BCE, x, y, TOL[np.float32])


@pytest.mark.parametrize("fn", [BCE, FOCAL], ids=["bce", "focal"])
def test_every_mechanism(fn, mechanism, rng):
    x, y = _inputs(rng, (3, 7), soft=True)
    _check(fn, x, y, TOL[np.float32], **({} if fn is BCE else dict(alpha=0.25)))


@pytest.mark.parametrize("kw", OPTIONS, ids=str)
@pytest.mark.parametrize("soft", [False, True], ids=["binary", "soft"])
def test_focal_matches_optax(kw, soft, rng):
    x, y = _inputs(rng, (6, 5), soft=soft)
    # optax's gradient in binary labels is one-sided: its logsumexp drops the term of a
    # label of 0 (b = 0), and with it that term's derivative; ours is the derivative
    _check(FOCAL, x, y, TOL[np.float32], label_grad=soft, **kw)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("fn", [BCE, FOCAL], ids=["bce", "focal"])
def test_half_precision_inputs(fn, dtype, rng):
    x, y = _inputs(rng, (5, 8), np.float32)
    x, y = jnp.asarray(x / 4, dtype), jnp.asarray(y, dtype)
    # computed in float32, returned in the input's dtype: within its rounding of optax
    _check(fn, x, y, TOL[dtype], label_grad=fn is BCE)   # binary labels: see above


@pytest.mark.parametrize("fn", [BCE, FOCAL], ids=["bce", "focal"])
def test_float64_with_x64(fn, rng):
    with jax.enable_x64(True):
        x, y = _inputs(rng, (4, 6), np.float64, soft=True)
        _check(fn, x, y, TOL[np.float64], **({} if fn is BCE else dict(alpha=0.3, gamma=1.5)))


def test_traced_alpha_and_gamma_and_their_gradients(rng):
    x, y = _inputs(rng, (3, 4), soft=True)

    def f(fn):
        return jax.jit(jax.value_and_grad(
            lambda a, g: fn(x, y, alpha=a, gamma=g).sum(), argnums=(0, 1)))
    (l0, g0), (l1, g1) = f(FOCAL)(0.3, 1.7), f(OPTAX[FOCAL])(0.3, 1.7)
    _close(l0, l1, TOL[np.float32])
    for a, b in zip(g0, g1):
        _close(a, b, dict(rtol=1e-4, atol=1e-5))


def test_labels_broadcast_and_integer_labels(rng):
    x, _ = _inputs(rng, (4, 3))
    for y in (np.array([1, 0, 1]), np.array([[1], [0], [1], [0]], bool)):
        _close(BCE(x, y), OPTAX[BCE](x, y), TOL[np.float32])
        _close(FOCAL(x, y, alpha=0.25), OPTAX[FOCAL](x, y, alpha=0.25), TOL[np.float32])


@pytest.mark.parametrize("fn", [BCE, FOCAL], ids=["bce", "focal"])
def test_vmap(fn, rng):
    x, y = _inputs(rng, (3, 4, 5), soft=True)
    ours = jax.jit(jax.vmap(jax.grad(lambda x, y: fn(x, y).sum())))(x, y)
    want = jax.vmap(jax.grad(lambda x, y: OPTAX[fn](x, y).sum()))(x, y)
    _close(ours, want, TOL[np.float32])
    _close(jax.vmap(fn)(x, y), OPTAX[fn](x, y), TOL[np.float32])


def test_extreme_logits_stay_finite():
    x = jnp.array([-1e4, -30.0, 0.0, 30.0, 1e4], jnp.float32)
    y = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0], jnp.float32)
    loss = BCE(x, y)
    assert np.all(np.isfinite(np.asarray(loss)))
    _close(loss, [1e4, 0, np.log(2), 0, 1e4], dict(rtol=1e-6, atol=1e-12))
    grad = jax.grad(lambda x: FOCAL(x, y).sum())(x)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_bad_arguments_raise_at_trace_time():
    with pytest.raises(TypeError, match="logits must be a floating"):
        BCE(np.zeros(3, np.int32), np.zeros(3))
    with pytest.raises(ValueError, match="do not broadcast"):
        FOCAL(np.zeros(3), np.zeros(4))
    with pytest.raises(TypeError):
        FOCAL(np.zeros(3), np.zeros(3), 0.25)        # alpha and gamma are keyword-only


@pytest.mark.parametrize("kw", [None] + OPTIONS, ids=lambda k: "bce" if k is None else
                         ",".join(f"{a}={v}" for a, v in k.items()) or "focal")
def test_forward_mode_and_second_derivatives(kw, mechanism, rng):
    # jax.jvp / jacfwd / check_grads(modes=("fwd", "rev")), as optax's own tests ask,
    # and second derivatives, in the logits and the labels
    fn, kw = (BCE, {}) if kw is None else (FOCAL, kw)
    with jax.enable_x64(True):
        x, y = _inputs(rng, (3, 4), np.float64, soft=True)
        f = lambda x, y: fn(x, y, **kw)  # noqa: E731
        check_grads(f, (x, y), order=2, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)
        dx, dy = rng.normal(size=x.shape), rng.normal(size=y.shape)
        got = jax.jit(lambda x, y: jax.jvp(f, (x, y), (dx, dy)))(x, y)
        want = jax.jvp(lambda x, y: OPTAX[fn](x, y, **kw), (x, y), (dx, dy))
        for a, b in zip(got, want):
            _close(a, b, dict(rtol=1e-9, atol=1e-12))
        hess = jax.hessian(lambda x: f(x, y).sum())(x)
        want = jax.hessian(lambda x: OPTAX[fn](x, y, **kw).sum())(x)
        _close(hess, want, dict(rtol=1e-9, atol=1e-12))
