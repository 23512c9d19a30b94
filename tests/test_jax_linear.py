"""xent_fast.jax.linear_softmax_cross_entropy_loss against a float64 materialised reference.

The reference is optax's integer-label loss on the materialised logits ``x @ W``,
computed in float64 (jax_enable_x64) from the same values, differentiated by JAX.
Shapes, reductions, chunk sizes, bfloat16, forward mode, second derivatives, the
compiled function's temporary memory and bad input. Skipped without JAX or optax.
"""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402

import xent_fast.jax as xfj  # noqa: E402

LOSS = xfj.linear_softmax_cross_entropy_loss


def _data(rng, n, h, v, dtype=np.float32, scale=0.5):
    x = (rng.normal(size=(n, h)) * scale).astype(dtype)
    w = (rng.normal(size=(h, v)) * scale).astype(dtype)
    t = rng.integers(0, v, n).astype(np.int32)
    return x, w, t


def _reference(x, w, t, reduction):
    """(loss, grad_x, grad_w) of the materialised float64 logits, as NumPy float64."""
    with jax.enable_x64(True):
        def loss(x, w):
            per_row = optax.softmax_cross_entropy_with_integer_labels(x @ w, t)
            return per_row.sum() if reduction == "sum" else per_row.mean()
        x64, w64 = (jnp.asarray(np.asarray(a, np.float64)) for a in (x, w))
        val, (gx, gw) = jax.value_and_grad(loss, argnums=(0, 1))(x64, w64)
        return float(val), np.asarray(gx), np.asarray(gw)


def _ours(x, w, t, reduction, **kw):
    step = jax.jit(jax.value_and_grad(
        lambda x, w: LOSS(x, t, w, reduction=reduction, **kw), argnums=(0, 1)))
    val, (gx, gw) = step(jnp.asarray(x), jnp.asarray(w))
    return val, gx, gw


def _close(actual, expected, rtol, atol):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("n,h,v,chunk", [
    (1, 5, 7, None), (13, 6, 11, 100), (13, 6, 11, 4), (13, 6, 11, 1), (40, 1, 9, 16),
    (9, 4, 1, 2), (64, 16, 300, 24),
])
def test_value_and_grads_match_float64_reference(rng, n, h, v, chunk):
    x, w, t = _data(rng, n, h, v)
    # both reductions in one compiled function (one compile per shape)
    both = jax.jit(lambda x, w: [jax.value_and_grad(
        lambda x, w: LOSS(x, t, w, reduction=r, chunk_rows=chunk), argnums=(0, 1))(x, w)
        for r in ("sum", "mean")])
    ref, rgx, rgw = _reference(x, w, t, "sum")
    for k, (val, (gx, gw)) in enumerate(both(x, w)):
        div = 1 if k == 0 else n
        assert val.shape == () and val.dtype == jnp.float32
        assert gx.shape == x.shape and gx.dtype == jnp.float32
        assert gw.shape == w.shape and gw.dtype == jnp.float32
        _close(val, ref / div, 2e-6, 1e-6)
        _close(gx, rgx / div, 1e-5, 1e-6)
        _close(gw, rgw / div, 1e-5, 1e-6)


def test_eager_equals_jit_and_chunking_changes_only_rounding(rng):
    x, w, t = _data(rng, 50, 8, 33)
    eager = LOSS(x, t, w)
    losses = [jax.jit(lambda x, w, c=c: LOSS(x, t, w, chunk_rows=c))(x, w) for c in (1, 7, 50)]
    # the per-row losses are summed once, whatever the chunks
    assert all(float(v) == float(eager) for v in losses)
    grads = [_ours(x, w, t, "sum", chunk_rows=c)[2] for c in (7, 50)]
    for g in grads[1:]:
        np.testing.assert_allclose(np.asarray(g), np.asarray(grads[0]), rtol=1e-5, atol=1e-6)


def test_empty_batch(rng):
    x, w, t = _data(rng, 0, 4, 6)
    val, gx, gw = _ours(x, w, t, "sum")
    assert float(val) == 0.0 and gx.shape == (0, 4) and not np.asarray(gw).any()
    # "mean" of no rows: 0 / 0, as tokamax's reference
    assert np.isnan(float(LOSS(x, t, w, reduction="mean")))


def test_grad_of_one_argument_and_labels_of_other_int_types(rng):
    x, w, t = _data(rng, 21, 5, 12)
    _, rgx, rgw = _reference(x, w, t, "mean")
    for tt in (t.astype(np.int8), t.astype(np.uint16)):
        gx = jax.jit(jax.grad(lambda x: LOSS(x, tt, w, reduction="mean", chunk_rows=8)))(x)
        _close(gx, rgx, 1e-5, 1e-6)
    gw = jax.jit(jax.grad(lambda w: LOSS(x, t, w, chunk_rows=8)))(w)
    _close(gw, rgw * 21, 1e-5, 1e-6)


def test_cotangent_scales_both_gradients(rng):
    x, w, t = _data(rng, 17, 4, 9)
    _, rgx, rgw = _reference(x, w, t, "sum")
    gx, gw = jax.jit(jax.grad(lambda x, w: -2.5 * LOSS(x, t, w, chunk_rows=5),
                              argnums=(0, 1)))(x, w)
    _close(gx, -2.5 * rgx, 1e-5, 1e-6)
    _close(gw, -2.5 * rgw, 1e-5, 1e-6)


def test_forward_mode_and_second_derivatives(rng):
    x, w, t = _data(rng, 11, 3, 6)
    xd, wd = _data(rng, 11, 3, 6)[:2]

    def ref(x, w):
        return optax.softmax_cross_entropy_with_integer_labels(x @ w, t).mean()

    def ours(x, w):
        return LOSS(x, t, w, reduction="mean", chunk_rows=4)

    with jax.enable_x64(True):
        x64, w64, xd64, wd64 = (jnp.asarray(np.asarray(a, np.float64)) for a in (x, w, xd, wd))
        expected = jax.jvp(ref, (x64, w64), (xd64, wd64))[1]
        hvp = jax.jvp(jax.grad(ref, argnums=(0, 1)), (x64, w64), (xd64, wd64))[1]
        got = jax.jit(lambda *a: jax.jvp(ours, a[:2], a[2:])[1])(x64, w64, xd64, wd64)
        got_hvp = jax.jit(lambda *a: jax.jvp(jax.grad(ours, argnums=(0, 1)), a[:2], a[2:])[1])(
            x64, w64, xd64, wd64)
    _close(got, float(expected), 1e-7, 0)   # the loss, and so its tangent, is float32
    for a, b in zip(got_hvp, hvp):
        _close(a, np.asarray(b), 1e-10, 1e-12)


def test_float64_is_computed_in_float64_and_returned_as_float32(rng):
    x, w, t = _data(rng, 19, 5, 8, np.float64)
    ref, rgx, rgw = _reference(x, w, t, "sum")
    with jax.enable_x64(True):
        val, gx, gw = _ours(x, w, t, "sum", chunk_rows=6)
    assert val.dtype == jnp.float32 and gx.dtype == jnp.float64 and gw.dtype == jnp.float64
    _close(val, ref, 1e-7, 0)
    _close(gx, rgx, 1e-12, 1e-14)
    _close(gw, rgw, 1e-12, 1e-14)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_products_in_that_dtype_sums_in_float32(rng, dtype):
    x, w, t = _data(rng, 96, 32, 500, np.float32, scale=0.3)
    xh, wh = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
    # the reference on the same (rounded) values
    ref, rgx, rgw = _reference(np.asarray(xh, np.float32), np.asarray(wh, np.float32), t, "sum")
    val, gx, gw = _ours(xh, wh, t, "sum", chunk_rows=40)
    assert val.dtype == jnp.float32 and gx.dtype == dtype and gw.dtype == dtype
    eps = float(jnp.finfo(dtype).eps)
    # the logits of products in that dtype with float32 results: the loss is close to
    # the float64 one, far inside one rounding of the dtype (PyTorch's chunked path with
    # bfloat16 sums was 10% off)
    _close(val, ref, eps / 4, 0)
    # G is rounded to the dtype before its products, the gradients once at the end
    scale_x, scale_w = np.abs(rgx).max(), np.abs(rgw).max()
    _close(gx, rgx, 0, 2 * eps * scale_x)
    _close(gw, rgw, 0, 2 * eps * scale_w)


def test_mixed_dtypes_promote_and_gradients_keep_each_dtype(rng):
    x, w, t = _data(rng, 10, 4, 7)
    xh = jnp.asarray(x, jnp.bfloat16)
    ref, rgx, rgw = _reference(np.asarray(xh, np.float32), w, t, "sum")
    val, gx, gw = _ours(xh, w, t, "sum")
    assert gx.dtype == jnp.bfloat16 and gw.dtype == jnp.float32
    _close(val, ref, 2e-6, 1e-6)
    _close(gw, rgw, 1e-5, 1e-6)


def test_no_logits_sized_buffer_in_the_compiled_step(rng):
    # V large against H: the logits (N x V float32) are 64 MiB, the weights 1 MiB
    n, h, v = 2048, 16, 8192
    x, w, t = _data(rng, n, h, v, scale=0.1)
    logits_bytes = n * v * 4

    def temp(fn):
        step = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
        return step.lower(x, w).compile().memory_analysis().temp_size_in_bytes

    chunk = 64
    ours = temp(lambda x, w: LOSS(x, t, w, chunk_rows=chunk))
    materialised = temp(lambda x, w: optax.softmax_cross_entropy_with_integer_labels(
        x @ w, t).sum())
    assert materialised >= logits_bytes          # the check can see an N x V buffer
    # one chunk's logits and their gradient, one (H, V) product, and small change
    bound = 2 * chunk * v * 4 + h * v * 4 + (1 << 20)
    assert ours < min(bound, logits_bytes / 8), (ours, bound, logits_bytes)


def test_labels_out_of_range_raise_value_error(rng):
    x, w, t = _data(rng, 6, 3, 5)
    bad = t.copy()
    bad[4] = 5
    with pytest.raises(ValueError, match=r"labels\[4\] = 5 is not a valid class index"):
        LOSS(x, bad, w)
    bad[4] = -1
    with pytest.raises(ValueError, match="not a valid class index"):
        LOSS(x, bad, w)
    # traced labels: the kernel's error, raised by XLA (a JaxRuntimeError) where the
    # result is used; the row is counted within its chunk (row 4 is row 0 of chunk 1)
    with pytest.raises(Exception, match=r"labels\[0\] = -1 is not a valid class index"):
        jax.block_until_ready(jax.jit(lambda t: LOSS(x, t, w, chunk_rows=4))(bad))


@pytest.mark.parametrize("call,exc,match", [
    (lambda x, t, w: LOSS(x.astype(np.int32), t, w), TypeError, "x must be a floating"),
    (lambda x, t, w: LOSS(x, t, w.astype(np.int32)), TypeError, "weights must be a floating"),
    (lambda x, t, w: LOSS(x, t.astype(np.float32), w), TypeError, "labels must be integer"),
    (lambda x, t, w: LOSS(x, t, w, chunk_rows=2.5), TypeError, "chunk_rows must be an int"),
    (lambda x, t, w: LOSS(x, t, w, chunk_rows=0), ValueError, "chunk_rows must be at least 1"),
    (lambda x, t, w: LOSS(x, t, w, reduction="none"), ValueError, "reduction must be"),
    (lambda x, t, w: LOSS(x, t, w, implementation="triton"), ValueError, "implementation"),
    (lambda x, t, w: LOSS(x[None], t, w), ValueError, r"x must have shape \(N, H\)"),
    (lambda x, t, w: LOSS(x, t, w[None]), ValueError, r"weights must have shape \(H, V\)"),
    (lambda x, t, w: LOSS(x, t, w.T), ValueError, "do not fit x"),
    (lambda x, t, w: LOSS(x, t, w[:, :0]), ValueError, "at least one class"),
    (lambda x, t, w: LOSS(x, t[:-1], w), ValueError, r"labels must have shape \(6,\)"),
    (lambda x, t, w: LOSS(x, t, w, "mean"), TypeError, "positional"),
    (lambda x, t, w: LOSS(x, object(), w), TypeError, "labels could not be converted"),
])
def test_bad_input_is_named(rng, call, exc, match):
    x, w, t = _data(rng, 6, 3, 5)
    with pytest.raises(exc, match=match):
        call(x, t, w)


def test_training_steps_follow_the_materialised_path(rng):
    # a few SGD steps of a linear head: the same parameters as optax's loss on x @ W
    x, w, t = _data(rng, 48, 8, 40, scale=0.3)

    def train(loss_fn):
        step = jax.jit(lambda x, w: jax.tree.map(
            lambda p, g: p - 0.05 * g, (x, w), jax.grad(loss_fn, argnums=(0, 1))(x, w)))
        params = (jnp.asarray(x), jnp.asarray(w))
        for _ in range(5):
            params = step(*params)
        return params

    ours = train(lambda x, w: LOSS(x, t, w, reduction="mean", chunk_rows=16))
    ref = train(lambda x, w: optax.softmax_cross_entropy_with_integer_labels(x @ w, t).mean())
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
