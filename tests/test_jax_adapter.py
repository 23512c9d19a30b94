"""xent_fast.jax against optax and the float64 reference (skipped without JAX or optax).

Every value and gradient is compared with optax on the same inputs and with the
independent float64 reference (tests/reference.py). The tests that concern the
mechanism run with both: the XLA FFI handler and the jax.pure_callback fallback.
"""

import doctest
import re
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import xent_fast  # noqa: E402
import xent_fast.jax as xfj  # noqa: E402
import reference as ref  # noqa: E402

INT = xfj.softmax_cross_entropy_with_integer_labels
SOFT = xfj.softmax_cross_entropy


def _optax_jit(fn):
    """optax's loss jitted once for the module (a compile per shape, not per call)."""
    loss = jax.jit(fn, static_argnames="axis")

    def grad(x, y, w=None, axis=-1, where=None, argnums=0):
        return _OPTAX_GRAD[fn, argnums](x, y, w, axis=axis, where=where)

    loss.grad = grad
    return loss


def _weighted_sum(fn):
    def total(x, y, w, axis=-1, where=None):
        out = fn(x, y, axis=axis, where=where)
        return (out if w is None else out * w).sum()
    return total


_OPTAX_GRAD = {(fn, argnums): jax.jit(jax.grad(_weighted_sum(fn), argnums=argnums),
                                      static_argnames="axis")
               for fn in (optax.softmax_cross_entropy_with_integer_labels,
                          optax.softmax_cross_entropy)
               for argnums in (0, 1)}
OPTAX = {INT: _optax_jit(optax.softmax_cross_entropy_with_integer_labels),
         SOFT: _optax_jit(optax.softmax_cross_entropy)}
# every mechanism this process registered: the compiled handler, the ctypes one, and
# pure_callback (see xent_fast.jax.mechanism)
MECHANISMS = [m for m in ("ffi", "ctypes") if m in xfj._TARGETS] + ["callback"]
# float32 results against float64 (the reference) or against optax, which rounds
# differently: a few ulps of the row's log-sum-exp.
F32 = dict(rtol=2e-6, atol=2e-6)
F64 = dict(rtol=1e-12, atol=1e-13)


@pytest.fixture(params=MECHANISMS)
def mechanism(request, monkeypatch):
    monkeypatch.setattr(xfj, "_MECHANISM", request.param)
    return request.param


def _inputs(rng, shape, kind, dtype=np.float32):
    """Logits of `shape` and labels of `kind` ("int" or "soft") for them, as NumPy."""
    x = (rng.normal(size=shape) * 3).astype(dtype)
    if kind == "int":
        return x, rng.integers(0, shape[-1], shape[:-1]).astype(np.int32)
    y = rng.random(shape)
    y /= y.sum(axis=-1, keepdims=True)
    return x, y.astype(dtype)


def _fn(kind):
    return INT if kind == "int" else SOFT


def _close(a, b, tol):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               equal_nan=True, **tol)


# --- import ----------------------------------------------------------------------------

def test_import_is_lazy_and_says_what_to_install():
    root = str(Path(xent_fast.__file__).resolve().parent.parent)
    code = (
        "import sys\n"
        "import xent_fast\n"
        "assert 'jax' not in sys.modules and 'optax' not in sys.modules\n"
        "sys.modules['jax'] = None\n"          # as if JAX were not installed
        "try:\n"
        "    import xent_fast.jax\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    env = dict(os.environ, PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'pip install "xent_fast[jax]"' in out.stdout


def test_the_callback_mechanism_can_be_chosen_by_environment():
    root = str(Path(xent_fast.__file__).resolve().parent.parent)
    code = ("import xent_fast.jax as x, jax.numpy as jnp\n"
            "print(x.mechanism(), float(x.softmax_cross_entropy_with_integer_labels("
            "jnp.zeros(4), 1)))\n")
    env = dict(os.environ, PYTHONPATH=root, XENT_FAST_JAX_MECHANISM="callback",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
    name, value = out.stdout.split()
    assert name == "callback" and abs(float(value) - np.log(4)) < 1e-6


def test_public_names_are_all():
    # no module or NumPy function under an adapter name: xent_fast.jax.cross_entropy
    # was NumPy's, and failed under jit with a tracer error
    public = {n for n in dir(xfj) if not n.startswith("_")}
    assert public == set(xfj.__all__)
    for name in xfj.__all__:
        assert getattr(xfj, name).__module__ == "xent_fast.jax"


JAX_GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide" / "jax.md"


@pytest.mark.skipif(not JAX_GUIDE.exists(), reason="not run from a source tree")
def test_jax_guide_examples_run():
    # The user guide's JAX page (moved there from the README): its examples, in order in
    # one namespace. They are {testcode} blocks, skipped by the docs' doctest builder
    # where JAX is missing; here JAX is there.
    text = JAX_GUIDE.read_text()
    blocks = re.findall(r"```\{testcode\}\n(?::skipif:[^\n]*\n)?(.*?)```", text, re.S)
    assert blocks
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(JAX_GUIDE), "exec"), namespace)
    assert abs(float(namespace["loss"]) - np.log(10)) < 1e-6    # as the comment says
    assert namespace["grad"].shape == (16, 10) and float(jnp.abs(namespace["grad"]).max()) > 0


def test_reloading_the_module_keeps_every_handler_alive():
    # XLA keeps each registered handler for the life of the process: one freed by a
    # reload would crash the next call of a program compiled before it.
    import gc
    import importlib
    compiled_before = jax.jit(lambda x: INT(x, 1))
    assert np.isclose(float(compiled_before(np.zeros(4, np.float32))), np.log(4))
    mechanism, targets = xfj.mechanism(), xfj._TARGETS
    importlib.reload(xfj)
    gc.collect()
    assert xfj.mechanism() == mechanism
    if "ctypes" in targets:     # a new ctypes handler, under a name of its own
        assert xfj._TARGETS["ctypes"]["softmax"] != targets["ctypes"]["softmax"]
    if "ffi" in targets:        # the compiled handler cannot die: the same one
        assert xfj._TARGETS["ffi"] == targets["ffi"]
    assert np.isclose(float(compiled_before(np.ones(4, np.float32))), np.log(4))
    after = jax.jit(jax.grad(lambda x: INT(x, 2)))(np.zeros(4, np.float32))
    _close(after, [0.25, 0.25, -0.75, 0.25], F32)


def test_docstring_examples_run():
    result = doctest.testmod(xfj, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5 and result.failed == 0


# --- values and gradients ----------------------------------------------------------------

# eager calls go through the same mechanism as jitted ones: one of them is enough there
@pytest.mark.parametrize("jit, mech", [(False, "ffi"), (True, "ffi"), (True, "ctypes"),
                                       (True, "callback")],
                         ids=["eager", "jit", "jit-ctypes", "jit-callback"])
@pytest.mark.parametrize("shape", [(7,), (5, 7), (2, 3, 7), (0, 7), (3, 1)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["int", "soft"])
def test_values_and_gradients_match_optax_and_reference(kind, shape, jit, mech, rng,
                                                         monkeypatch):
    if mech not in MECHANISMS:
        mech = "callback"
    monkeypatch.setattr(xfj, "_MECHANISM", mech)
    x, y = _inputs(rng, shape, kind)
    f, g = _fn(kind), OPTAX[_fn(kind)]
    value_and_grad = jax.value_and_grad(lambda x, y: (f(x, y) * w).sum())
    w = jnp.asarray(rng.random(shape[:-1]).astype(np.float32))  # a per-example cotangent
    if jit:
        value_and_grad = jax.jit(value_and_grad)
    loss = (jax.jit(f) if jit else f)(x, y)
    total, grad = value_and_grad(x, y)
    want = g(x, y)
    want_grad = g.grad(x, y, w)
    assert loss.shape == want.shape and loss.dtype == want.dtype == jnp.float32
    assert grad.shape == x.shape and grad.dtype == jnp.float32
    _close(loss, want, F32)
    _close(grad, want_grad, F32)
    ref_loss, ref_grad = ref.cross_entropy_and_grad(x, y, reduction="none",
                                                    grad_output=np.asarray(w))
    _close(loss, ref_loss, F32)
    _close(grad, ref_grad, F32)
    _close(total, np.sum(ref_loss * np.asarray(w)), F32)


@pytest.mark.parametrize("kind", ["int", "soft"])
def test_float64_with_x64(kind, mechanism, rng):
    with jax.enable_x64(True):
        x, y = _inputs(rng, (4, 6), kind, np.float64)
        if kind == "int":
            y = y.astype(np.int64)
        f, g = _fn(kind), OPTAX[_fn(kind)]
        loss = jax.jit(f)(x, y)
        grad = jax.jit(jax.grad(lambda x: f(x, y).sum()))(x)
        assert loss.dtype == grad.dtype == jnp.float64
        _close(loss, g(x, y), F64)
        _close(grad, g.grad(x, y), F64)
        ref_loss, ref_grad = ref.cross_entropy_and_grad(x, y, reduction="none")
        _close(loss, ref_loss, F64)
        _close(grad, ref_grad, F64)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("kind", ["int", "soft"])
def test_half_precision_is_computed_in_float32(kind, dtype, rng):
    x, y = _inputs(rng, (6, 9), kind)
    x = jnp.asarray(x, dtype)
    y = y if kind == "int" else jnp.asarray(y, dtype)
    f, g = _fn(kind), OPTAX[_fn(kind)]
    loss = f(x, y)
    grad = jax.grad(lambda x: f(x, y).astype(jnp.float32).sum())(x)
    want = g(x, y)
    assert loss.dtype == want.dtype == dtype and grad.dtype == dtype
    # The float64 reference on the half-precision inputs, rounded once to the output:
    # our error is that rounding alone; optax's (computed in half precision) is larger.
    ref_loss, ref_grad = ref.cross_entropy_and_grad(np.asarray(x, np.float64),
                                                    np.asarray(y, np.float64)
                                                    if kind == "soft" else y, reduction="none")
    eps = float(jnp.finfo(dtype).eps)
    _close(loss, ref_loss, dict(rtol=eps, atol=eps))
    _close(grad, ref_grad, dict(rtol=eps, atol=eps / 4))
    _close(want, ref_loss, dict(rtol=8 * eps, atol=8 * eps))


def test_soft_labels_of_another_dtype_give_optax_output_dtype(rng):
    x, y = _inputs(rng, (3, 4), "soft")
    for labels in (jnp.asarray(y, jnp.bfloat16), jnp.asarray(y > 0.3, jnp.int32)):
        out, want = SOFT(jnp.asarray(x, jnp.bfloat16), labels), OPTAX[SOFT](
            jnp.asarray(x, jnp.bfloat16), labels)
        assert out.dtype == want.dtype
    out = SOFT(x, jnp.asarray(y > 0.3))                # one-hot-ish booleans
    _close(out, OPTAX[SOFT](x, jnp.asarray(y > 0.3, jnp.float32)), F32)


def test_soft_labels_broadcast_like_optax(rng):
    x, _ = _inputs(rng, (5, 4), "soft")
    y = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    _close(SOFT(x, y), OPTAX[SOFT](x, y), F32)
    _close(jax.grad(lambda y: SOFT(x, y).sum())(y),
           OPTAX[SOFT].grad(x, y, argnums=1), F32)
    _close(SOFT(x[0], np.broadcast_to(y, (3, 4))), OPTAX[SOFT](x[0], np.broadcast_to(y, (3, 4))), F32)


def test_gradient_with_respect_to_soft_labels(mechanism, rng):
    x, y = _inputs(rng, (4, 5), "soft")
    w = jnp.asarray(rng.random(4).astype(np.float32))
    got = jax.jit(jax.grad(lambda x, y: (SOFT(x, y) * w).sum(), argnums=(0, 1)))(x, y)
    want = [OPTAX[SOFT].grad(x, y, w, argnums=i) for i in (0, 1)]
    for a, b in zip(got, want):
        _close(a, b, F32)
    _close(got[1], -np.asarray(w)[:, None] * ref.log_softmax(x), F32)
    only_labels = jax.grad(lambda y: SOFT(x, y).sum())(y)      # logits not differentiated
    _close(only_labels, -ref.log_softmax(x), F32)


def test_finite_differences_float64(mechanism, rng):
    with jax.enable_x64(True):
        x, t = _inputs(rng, (3, 5), "int", np.float64)
        _, y = _inputs(rng, (3, 5), "soft", np.float64)
        check_grads(lambda x: INT(x, t), (x,), order=1, modes=["rev"], atol=1e-7, rtol=1e-7)
        check_grads(lambda x, y: SOFT(x, y), (x, y), order=1, modes=["rev"], atol=1e-7, rtol=1e-7)
        where = np.array([True, False, True])
        check_grads(lambda x: INT(x, t, where=where), (x,), order=1, modes=["rev"])


# --- transformations -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["int", "soft"])
def test_vmap(kind, mechanism, rng):
    x, y = _inputs(rng, (3, 4, 6), kind)
    f, g = _fn(kind), OPTAX[_fn(kind)]
    _close(jax.vmap(f)(x, y), g(x, y), F32)
    _close(jax.jit(jax.vmap(f, in_axes=(0, None)))(x, y[0]),
           jax.vmap(g, in_axes=(0, None))(x, y[0]), F32)
    # the batch on another axis of the logits than of the labels
    xt = np.moveaxis(x, 0, 1)
    _close(jax.vmap(f, in_axes=(1, 0))(xt, y), g(x, y), F32)
    per_example_grad = jax.vmap(jax.grad(lambda x, y: f(x, y).mean()))(x, y)
    _close(per_example_grad, g.grad(x, y) / 4, F32)
    nested = jax.vmap(jax.vmap(f))(x, y)
    _close(nested, g(x, y), F32)


def test_nested_jit_scan_and_value_and_grad(mechanism, rng):
    x, t = _inputs(rng, (4, 5), "int")

    @jax.jit
    def inner(x, t):
        return INT(x, t).mean()

    @jax.jit
    def outer(x, t):
        def body(carry, s):
            v, g = jax.value_and_grad(inner)(x * s, t)
            return carry + v, g
        return jax.lax.scan(body, 0.0, jnp.arange(1.0, 4.0))

    total, grads = outer(x, t)
    want = sum(float(OPTAX[INT](x * s, t).mean()) for s in (1.0, 2.0, 3.0))
    _close(total, want, F32)
    _close(grads[2], OPTAX[INT].grad(x * 3.0, t) / 4, F32)


def test_two_losses_in_one_computation_and_logits_used_afterwards(mechanism, rng):
    x, t = _inputs(rng, (6, 8), "int")
    x_np = x.copy()

    @jax.jit
    def f(x, t):
        logits = x * 2.0
        loss = INT(logits, t).mean() + INT(x, t[::-1]).mean()
        return loss, logits.sum()      # the logits are still needed after the loss

    (loss, s), grad = jax.value_and_grad(f, has_aux=True)(x, t)
    want_loss, want_grad = jax.value_and_grad(
        lambda x: OPTAX[INT](x * 2.0, t).mean() + OPTAX[INT](x, t[::-1]).mean())(x)
    _close(loss, want_loss, F32)
    _close(grad, want_grad, F32)
    _close(s, 2.0 * x_np.sum(), F32)
    np.testing.assert_array_equal(x, x_np)    # the gradient never overwrites an input


def test_inputs_are_never_written(mechanism, rng):
    x, t = _inputs(rng, (5, 6), "int")
    xj = jnp.asarray(x)
    jax.block_until_ready(jax.jit(jax.grad(lambda x: INT(x, t).sum()))(xj))
    np.testing.assert_array_equal(np.asarray(xj), x)


def test_calls_from_several_threads(rng):
    x, t = _inputs(rng, (64, 50), "int")
    step = jax.jit(jax.value_and_grad(lambda x, t: INT(x, t).mean()))
    want = step(x, t)
    results = [None] * 4

    def work(i):
        results[i] = [step(x * (i + 1), t) for _ in range(5)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i, rs in enumerate(results):
        want = jax.value_and_grad(lambda x: OPTAX[INT](x, t).mean())(x * (i + 1))
        for loss, grad in rs:
            _close(loss, want[0], F32)
            _close(grad, want[1], F32)


# --- axis and where ----------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, -2, (2, 1), (0, 2)], ids=str)
@pytest.mark.parametrize("kind", ["int", "soft"])
def test_class_axes_match_optax(kind, axis, rng):
    shape = (3, 4, 5)
    x = (rng.normal(size=shape) * 2).astype(np.float32)
    axes = (axis,) if isinstance(axis, int) else axis
    axes = tuple(a % 3 for a in axes)
    n = int(np.prod([shape[a] for a in axes]))
    batch = tuple(shape[i] for i in range(3) if i not in axes)
    if kind == "int":
        y = rng.integers(0, n, batch).astype(np.int32)
    else:
        y = rng.random(shape).astype(np.float32)
    f, g = _fn(kind), OPTAX[_fn(kind)]
    _close(f(x, y, axis=axis), g(x, y, axis=axis), F32)
    _close(jax.grad(lambda x: f(x, y, axis=axis).sum())(x),
           g.grad(x, y, axis=axis), F32)


@pytest.mark.parametrize("kind", ["int", "soft"])
def test_where_with_other_class_axes(kind, rng):
    x = (rng.normal(size=(3, 4, 5)) * 2).astype(np.float32)
    f, g = _fn(kind), OPTAX[_fn(kind)]
    for axis, where in ((0, rng.random((4, 5)) > 0.3),            # the batch shape
                        ((2, 0), rng.random((3, 4, 5)) > 0.2)):   # the logits' shape
        axes = (axis,) if isinstance(axis, int) else axis
        batch = tuple(n for i, n in enumerate(x.shape) if i not in axes)
        if kind == "int":
            y = np.zeros(batch, np.int32)      # class 0 of each example: kept included
            if where.ndim == 3:
                where[0, :, 0] = True
        else:
            y = rng.random(x.shape).astype(np.float32)
        _close(f(x, y, axis=axis, where=where), g(x, y, axis=axis, where=where), F32)
        _close(jax.grad(lambda x: f(x, y, axis=axis, where=where).sum())(x),
               g.grad(x, y, axis=axis, where=where), F32)


def test_integer_labels_broadcast_like_optax(rng):
    x, _ = _inputs(rng, (4, 6), "int")
    t = np.array([2], np.int32)
    _close(INT(x, t), OPTAX[INT](x, t), F32)


def test_axis_none_for_soft_labels(rng):
    x, _ = _inputs(rng, (3, 4), "soft")
    y = rng.random((3, 4)).astype(np.float32)
    out = SOFT(x, y, axis=None)
    assert out.shape == ()
    _close(out, OPTAX[SOFT](x, y, axis=None), F32)


@pytest.mark.parametrize("kind", ["int", "soft"])
def test_where_of_the_batch_shape(kind, mechanism, rng):
    x, y = _inputs(rng, (2, 5, 6), kind)
    where = rng.random((2, 5)) > 0.4
    where[1] = False
    if kind == "int":
        y[~where] = 99         # a skipped example's label is never looked at
    f, g = _fn(kind), OPTAX[_fn(kind)]
    loss = jax.jit(f)(x, y, where=where)
    grad = jax.grad(lambda x: f(x, y, where=where).sum())(x)
    y_ok = np.where(where, y, 0) if kind == "int" else y
    _close(loss, g(x, y_ok, where=where), F32)
    _close(grad, g.grad(x, y_ok, where=where), F32)
    assert np.all(np.asarray(loss)[~where] == 0) and np.all(np.asarray(grad)[~where] == 0)
    # the same mask given with the class axis of length 1
    _close(f(x, y, where=where[..., None]), loss, dict(rtol=0, atol=0))


@pytest.mark.parametrize("kind", ["int", "soft"])
def test_where_of_the_logits_shape(kind, mechanism, rng):
    x, y = _inputs(rng, (7, 6), kind)
    where = rng.random((7, 6)) > 0.3
    where[2] = False                   # a row with nothing included
    if kind == "int":
        where[np.arange(7), y] = True  # labels on included classes (see the next test)
        where[2] = False
    f, g = _fn(kind), OPTAX[_fn(kind)]
    loss = f(x, y, where=where)
    grad = jax.jit(jax.grad(lambda x: f(x, y, where=where).sum()))(x)
    _close(loss, g(x, y, where=where), F32)
    _close(grad, g.grad(x, y, where=where), F32)
    assert float(loss[2]) == 0 and np.all(np.asarray(grad)[2] == 0)
    assert np.all(np.asarray(grad)[~where] == 0)
    if kind == "soft":
        # d loss / d labels: -log_softmax over the included classes, 0 at the excluded
        # ones (optax gives nan there: 0 * -inf)
        dy = jax.grad(lambda y: f(x, y, where=where).sum())(y)
        want = g.grad(x, y, where=where, argnums=1)
        _close(np.asarray(dy)[where], np.asarray(want)[where], F32)
        assert np.all(np.asarray(dy)[~where] == 0) and np.isnan(np.asarray(want)[~where]).all()


def test_a_label_on_an_excluded_class_gets_optax_loss_and_gradient(mechanism):
    # optax: logsumexp over the included classes minus the label's own logit, taken
    # even where `where` excludes its class (the red team's case first)
    x = jnp.array([[1., 2., 3.], [0.5, -1., 2.], [0., 0., 0.], [4., 1., -2.]])
    t = jnp.array([1, 2, 2, 0])
    where = jnp.array([[True, False, True], [True, True, False], [True, True, True],
                       [False, False, False]])
    w = jnp.array([1.0, 2.0, 0.5, 3.0])
    loss = INT(x, t, where=where)
    assert abs(float(loss[0]) - 1.1269281) < 1e-6
    _close(loss, OPTAX[INT](x, t, where=where), F32)
    _close(jax.jit(lambda x: INT(x, t, where=where))(x), loss, F32)
    _close(jax.vmap(lambda x, t, w: INT(x, t, where=w))(x, t, where), loss, F32)
    grad = jax.jit(jax.grad(lambda x: (INT(x, t, where=where) * w).sum()))(x)
    _close(grad, OPTAX[INT].grad(x, t, w, where=where), F32)
    assert np.all(np.asarray(grad)[3] == 0)
    _close(jax.vmap(jax.grad(lambda x, t, w: INT(x, t, where=w)))(x, t, where),
           OPTAX[INT].grad(x, t, where=where), F32)
    dx = jnp.asarray(np.random.default_rng(0).normal(size=x.shape), jnp.float32)
    got = jax.jvp(lambda x: INT(x, t, where=where), (x,), (dx,))
    want = jax.jvp(lambda x: optax.softmax_cross_entropy_with_integer_labels(
        x, t, where=where), (x,), (dx,))
    _close(got[0], want[0], F32)
    _close(got[1], want[1], F32)


# --- extreme values ---------------------------------------------------------------------

def test_extreme_logits(mechanism):
    x = np.array([[0.0, 1e4, -1e4],
                  [-np.inf, 0.0, 1.0],
                  [1e4, 1e4, -np.inf],
                  [-3e38, 3e38, 0.0]], np.float32)
    t = np.array([1, 2, 0, 1])
    loss = INT(x, t)
    grad = jax.grad(lambda x: INT(x, t).sum())(x)
    ref_loss, ref_grad = ref.cross_entropy_and_grad(x, t, reduction="none")
    _close(loss, ref_loss, F32)
    _close(grad, ref_grad, F32)
    # optax's own error there is an ulp of the 1e4 logits (~1e-3)
    _close(loss, OPTAX[INT](x, t), dict(rtol=0, atol=2e-3))
    _close(grad, OPTAX[INT].grad(x, t), F32)


def test_zero_labels_on_masked_classes_add_nothing():
    # Documented difference: optax gives nan (0 * -inf); its safe variant gives ours.
    x = np.array([[-np.inf, 0.0, 2.0], [1.0, -np.inf, -np.inf]], np.float32)
    y = np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]], np.float32)
    loss = SOFT(x, y)
    assert np.all(np.isfinite(loss))
    assert np.isnan(OPTAX[SOFT](x, y)).any()
    _close(loss, optax.safe_softmax_cross_entropy(x, y), F32)
    grad = jax.grad(lambda x: SOFT(x, y).sum())(x)
    _close(grad, ref.cross_entropy_and_grad(x, y, reduction="none")[1], F32)


def test_tiny_losses_keep_their_digits():
    x = np.array([[0.0, -30.0], [40.0, 0.0]], np.float32)
    loss = INT(x, np.array([0, 0]))
    want = np.log1p(np.exp([-30.0, -40.0]))            # 9.4e-14 and 4.2e-18
    _close(loss, want, dict(rtol=1e-6, atol=0))
    assert np.all(OPTAX[INT](x, np.array([0, 0])) == 0)  # optax rounds them to 0


def test_nan_stays_in_its_row():
    x = np.array([[np.nan, 0.0], [0.0, 1.0]], np.float32)
    loss = INT(x, np.array([0, 1]))
    assert np.isnan(loss[0]) and np.isclose(loss[1], np.log1p(np.exp(-1.0)))


# --- training ---------------------------------------------------------------------------

@pytest.mark.parametrize("x64", [False, True], ids=["f32", "f64"])
def test_training_a_linear_classifier_gives_optax_parameters(x64, mechanism, rng):
    with jax.enable_x64(x64):
        dt = np.float64 if x64 else np.float32
        feats = rng.normal(size=(96, 12)).astype(dt)
        labels = np.argmax(feats @ rng.normal(size=(12, 5)) + rng.normal(size=(96, 5)), axis=1)
        params0 = {"w": jnp.asarray(rng.normal(size=(12, 5)).astype(dt) * 0.1),
                   "b": jnp.zeros(5, dt)}
        opt = optax.sgd(0.5, momentum=0.9)

        def train(loss_fn):
            def loss(p, xb, yb):
                return loss_fn(xb @ p["w"] + p["b"], yb).mean()

            @jax.jit
            def step(p, s, xb, yb):
                l, g = jax.value_and_grad(loss)(p, xb, yb)
                u, s = opt.update(g, s, p)
                return optax.apply_updates(p, u), s, l

            p, s = params0, opt.init(params0)
            losses = []
            for i in range(30):
                sl = slice(32 * (i % 3), 32 * (i % 3 + 1))
                p, s, l = step(p, s, feats[sl], labels[sl])
                losses.append(float(l))
            return p, losses

        ours, our_losses = train(INT)
        theirs, their_losses = train(OPTAX[INT])
    assert our_losses[-1] < 0.5 * our_losses[0]        # it did learn
    # Per step the two gradients differ by rounding only (~1 ulp of float32, 1e-16 in
    # float64); 30 momentum steps of a well-conditioned problem amplify that a little.
    tol = dict(rtol=1e-12, atol=1e-12) if x64 else dict(rtol=2e-5, atol=2e-5)
    for k in ours:
        _close(ours[k], theirs[k], tol)
    _close(our_losses, their_losses, tol)


# --- errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [5, -1, 2**31 - 1, -2**31])
def test_a_label_out_of_range_raises_naming_it(bad, mechanism):
    x = np.zeros((3, 5), np.float32)
    t = np.array([0, 1, 2], np.int32)
    t[1] = bad
    with pytest.raises(Exception, match=rf"labels\[1\] = {bad} is not a valid class index"):
        jax.block_until_ready(jax.jit(lambda x: INT(x, t))(x))
    with pytest.raises(Exception, match=r"labels\[1\]"):
        jax.block_until_ready(jax.grad(lambda x: INT(x, t).sum())(x))
    # the process goes on as before, and a skipped example's label is never checked
    _close(INT(x, t, where=np.array([True, False, True])), [np.log(5), 0, np.log(5)], F32)


def test_an_int64_label_out_of_range_raises(mechanism):
    with jax.enable_x64(True):
        t = np.array([0, np.iinfo(np.int64).min], np.int64)
        with pytest.raises(Exception, match=r"labels\[1\] = -9223372036854775808"):
            jax.block_until_ready(INT(np.zeros((2, 3)), t))
        t = np.array([0, 2**40], np.int64)
        with pytest.raises(Exception, match=r"labels\[1\] = 1099511627776"):
            jax.block_until_ready(INT(np.zeros((2, 3)), t))


@pytest.mark.parametrize("call, exc, match", [
    (lambda: INT(np.zeros((2, 3), np.int32), np.zeros(2, np.int32)), TypeError, "logits must be a floating"),
    (lambda: SOFT(np.zeros((2, 3), bool), np.zeros((2, 3))), TypeError, "logits must be a floating"),
    (lambda: INT(np.zeros((2, 3)), np.zeros(2)), TypeError, "labels must be integer"),
    (lambda: SOFT(np.zeros((2, 3)), np.zeros((2, 3), np.complex64)), TypeError, "labels must be real"),
    (lambda: INT(np.zeros((2, 3)), np.zeros(3, np.int32)), ValueError, "labels of shape"),
    (lambda: SOFT(np.zeros((2, 3)), np.zeros((2, 4))), ValueError, "labels of shape"),
    (lambda: INT(np.zeros((2, 0)), np.zeros(2, np.int32)), ValueError, "at least one class"),
    (lambda: SOFT(np.zeros(()), np.zeros(())), ValueError, "at least one dimension"),
    (lambda: INT(np.zeros((2, 3)), np.zeros(2, np.int32), axis=2), ValueError, "out of bounds"),
    (lambda: INT(np.zeros((2, 3)), np.zeros(2, np.int32), axis=(1, -1)), ValueError, "repeats"),
    (lambda: INT(np.zeros((2, 3)), np.zeros(2, np.int32), axis=None), TypeError, "axis"),
    (lambda: INT(np.zeros((2, 3)), np.zeros(2, np.int32), axis=1.0), TypeError, "axis"),
    (lambda: INT(np.zeros((2, 3)), np.zeros(2, np.int32), where=np.ones(3, bool)), ValueError, "where"),
    (lambda: SOFT(np.zeros((2, 3)), np.zeros((2, 3)), where=np.ones((2, 2), bool)), ValueError, "where"),
    (lambda: SOFT(np.zeros((2, 3)), np.zeros((2, 3)), axis=None, where=np.ones(2, bool)),
     ValueError, "where"),
    (lambda: SOFT("abc", np.zeros(3)), TypeError, "logits"),
])
def test_bad_arguments_raise_at_trace_time(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --- forward mode and second derivatives ----------------------------------------------

def _losses(rng, x, n):
    """Each loss as a function of the logits (and the soft labels), with optax's twin."""
    t = rng.integers(0, n, x.shape[:-1])
    y = rng.dirichlet(np.ones(n), x.shape[:-1])
    where = rng.random(x.shape) > 0.3
    where[..., 0] = True
    rows = rng.random(x.shape[:-1]) > 0.3
    yb = rng.random(x.shape)
    return {
        "int": (lambda x: INT(x, t),
                lambda x: optax.softmax_cross_entropy_with_integer_labels(x, t), (x,)),
        "int-where": (lambda x: INT(x, t, where=where),
                      lambda x: optax.softmax_cross_entropy_with_integer_labels(
                          x, t, where=where), (x,)),
        "int-rows": (lambda x: INT(x, t, where=rows),
                     lambda x: optax.softmax_cross_entropy_with_integer_labels(
                         x, t, where=rows), (x,)),
        "soft": (SOFT, optax.softmax_cross_entropy, (x, y)),
        "soft-where": (lambda x, y: SOFT(x, y, where=where),
                       lambda x, y: optax.softmax_cross_entropy(x, y, where=where), (x,)),
        "bce": (xfj.sigmoid_binary_cross_entropy, optax.sigmoid_binary_cross_entropy, (x, yb)),
        "focal": (lambda x, y: xfj.sigmoid_focal_loss(x, y, alpha=0.25),
                  lambda x, y: optax.sigmoid_focal_loss(x, y, alpha=0.25), (x, yb)),
    }


LOSS_NAMES = ["int", "int-where", "int-rows", "soft", "soft-where", "bce", "focal"]


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_check_grads_forward_and_reverse(name, mechanism, rng):
    # optax's own test_gradient: check_grads(order=1) checks forward mode too
    with jax.enable_x64(True):
        x = rng.normal(size=(3, 5)) * 2
        f, _, args = _losses(rng, x, 5)[name]
        if name == "soft-where":          # soft labels are not differentiated there:
            y = rng.dirichlet(np.ones(5), 3)  # optax's gradient is nan at excluded classes
            f, args = (lambda x, f=f: f(x, y)), (x,)
        check_grads(f, args, order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)
        check_grads(f, args, order=2, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_jvp_and_second_derivatives_match_optax(name, rng):
    x = (rng.normal(size=(4, 6)) * 2).astype(np.float32)
    ours, theirs, args = _losses(rng, x, 6)[name]
    args = tuple(jnp.asarray(a, jnp.float32) for a in args)
    if name == "soft-where":
        args = args + (jnp.asarray(rng.dirichlet(np.ones(6), 4), jnp.float32),)
        ours = (lambda x, y, f=ours: f(x, y))
        theirs = (lambda x, y, f=theirs: f(x, y))
    tangents = tuple(jnp.asarray(rng.normal(size=a.shape), jnp.float32) for a in args)
    if name == "soft-where":      # optax's tangent in the labels is nan at excluded classes
        tangents = (tangents[0], jnp.zeros_like(args[1]))
    got = jax.jit(lambda *a: jax.jvp(ours, a, tangents))(*args)
    want = jax.jvp(theirs, args, tangents)
    for a, b in zip(got, want):
        _close(a, b, dict(rtol=1e-5, atol=1e-5))
    total = lambda f: lambda *a: f(*a).sum()  # noqa: E731
    for transform in (jax.hessian, lambda f: jax.jacfwd(jax.grad(f)),
                      lambda f: jax.grad(lambda *a: jax.grad(f)(*a).sum())):
        _close(transform(total(ours))(*args), transform(total(theirs))(*args),
               dict(rtol=1e-4, atol=1e-5))
    _close(jax.jacfwd(ours)(*args), jax.jacrev(theirs)(*args), dict(rtol=1e-5, atol=1e-6))


def test_value_and_grad_runs_one_fused_kernel_call():
    # the JVP's tangent, transposed: one call of the kernels (losses and gradient in
    # one pass) and a multiply, as the custom_vjp it replaced
    x, t = jnp.zeros((8, 5)), jnp.zeros(8, jnp.int32)
    step = jax.jit(jax.value_and_grad(lambda x: INT(x, t).mean()))
    hlo = step.lower(x).compile().as_text()
    if "ffi" in xfj._TARGETS and xfj.mechanism() == "ffi":
        assert hlo.count("custom_call_target=") == 1
        assert hlo.count(xfj._TARGETS["ffi"]["softmax"]) == 1
    loss_only = jax.jit(lambda x: INT(x, t)).lower(x).compile().as_text()
    assert "f32[8,5]{1,0} get-tuple-element" not in loss_only   # no gradient computed


def test_numpy_inputs_of_any_layout(rng):
    x, t = _inputs(rng, (6, 5), "int")
    xr = np.asfortranarray(x)[::-1]           # non-contiguous
    xr.setflags(write=False)
    _close(INT(xr, list(t)), OPTAX[INT](xr, t), F32)
    _close(jax.grad(lambda x: INT(x, t).sum())(xr), OPTAX[INT].grad(xr, t), F32)
