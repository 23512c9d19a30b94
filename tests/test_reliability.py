"""Regressions of defects that other projects' test suites and a red-team run found in
the core functions: each test failed before its fix."""

import numpy as np
import pytest

import xent_fast as xf


def _as_memoryview(a):
    return memoryview(a)


def _as_tensor(a):
    torch = pytest.importorskip("torch")
    return torch.from_numpy(a)


WRAPPERS = [pytest.param(_as_memoryview, id="memoryview"), pytest.param(_as_tensor, id="tensor")]


@pytest.mark.parametrize("wrap", WRAPPERS)
def test_grad_out_overlapping_grad_output_given_as_buffer_is_refused(wrap):
    # The overlap check used to look only at ndarray arguments: a memoryview or tensor of
    # grad_output sharing grad_out's memory gave a silently wrong gradient.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8))
    t = rng.integers(0, 8, 8)
    buf = np.ones((8, 8))
    with pytest.raises(ValueError, match="grad_out overlaps grad_output"):
        xf.cross_entropy_and_grad(x, t, reduction="none", grad_output=wrap(buf[0]), grad_out=buf)
    with pytest.raises(ValueError, match="grad_out overlaps grad_output"):
        xf.binary_cross_entropy_with_logits_and_grad(
            x, np.full((8, 8), 0.5), reduction="none", grad_output=wrap(buf), grad_out=buf)
    with pytest.raises(ValueError, match="grad_out overlaps grad_output"):
        xf.sigmoid_focal_loss_and_grad(
            x, np.full((8, 8), 0.5), grad_output=wrap(buf), grad_out=buf)
    assert (buf == 1).all()  # nothing was written


@pytest.mark.parametrize("wrap", WRAPPERS)
@pytest.mark.parametrize("arg", ["target", "weight", "pos_weight"])
def test_grad_out_overlapping_any_buffer_argument_is_refused(wrap, arg):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6))
    buf = np.full((4, 6), 0.5)
    kwargs = {"target": np.full((4, 6), 0.5), "weight": None, "pos_weight": None}
    kwargs[arg] = wrap(buf if arg == "target" else buf[1])
    with pytest.raises(ValueError, match=f"grad_out overlaps {arg}"):
        xf.binary_cross_entropy_with_logits_and_grad(x, grad_out=buf, **kwargs)
    if arg != "pos_weight":
        t = wrap(buf) if arg == "target" else rng.dirichlet(np.ones(6), 4)
        w = wrap(buf[1]) if arg == "weight" else None
        with pytest.raises(ValueError, match=f"grad_out overlaps {arg}"):
            xf.cross_entropy_and_grad(x, t, weight=w, grad_out=buf)
    assert (buf == 0.5).all()


@pytest.mark.parametrize("wrap", WRAPPERS)
def test_grad_out_may_be_the_logits_given_as_buffer(wrap):
    # The in-place gradient stays allowed when the logits come as a buffer of grad_out.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 7))
    t = rng.integers(0, 7, 5)
    expected = xf.cross_entropy_and_grad(x, t)
    buf = x.copy()
    loss, grad = xf.cross_entropy_and_grad(wrap(buf), t, grad_out=buf)
    assert grad is buf and loss == expected[0]
    np.testing.assert_array_equal(buf, expected[1])


# --- cross_entropy with the classes on another axis, as PyTorch lays them out (N, C, d)

@pytest.mark.parametrize("soft", [False, True], ids=["indices", "probabilities"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 3), (2, 5, 3, 2)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_axis_matches_torch_class_dimension(soft, reduction, shape, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(dtype)
    batch = shape[:1] + shape[2:]
    t = (np.moveaxis(rng.dirichlet(np.ones(5), batch), -1, 1).astype(dtype) if soft
         else rng.integers(0, 5, batch))
    w = rng.uniform(0.5, 2.0, 5).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    expected = F.cross_entropy(xt, torch.tensor(t), weight=torch.tensor(w), reduction=reduction,
                               label_smoothing=0.1)
    expected.backward(torch.ones_like(expected))
    g_up = np.ones(expected.shape) if reduction == "none" else 1.0
    loss, grad = xf.cross_entropy_and_grad(x, t, weight=w, reduction=reduction,
                                           label_smoothing=0.1, axis=1, grad_output=g_up)
    tol = (dict(rtol=1e-12, atol=1e-15) if dtype == np.float64
           else dict(rtol=2e-5, atol=1e-6))
    np.testing.assert_allclose(loss, expected.detach().numpy(), **tol)
    np.testing.assert_allclose(grad, xt.grad.numpy(), **tol)
    assert grad.dtype == dtype and grad.flags.c_contiguous
    assert np.array_equal(xf.cross_entropy(x, t, weight=w, reduction=reduction,
                                           label_smoothing=0.1, axis=1 - len(shape)), loss)
    buf = x.copy()
    assert xf.cross_entropy_and_grad(buf, t, weight=w, reduction=reduction, label_smoothing=0.1,
                                     axis=1, grad_output=g_up, grad_out=buf)[1] is buf
    np.testing.assert_array_equal(buf, grad)


@pytest.mark.parametrize("bad, exc", [(3, np.exceptions.AxisError), ((0, 1), TypeError),
                                      (None, TypeError), (1.0, TypeError)])
def test_cross_entropy_bad_axis_names_axis(bad, exc):
    with pytest.raises(exc, match="axis"):
        xf.cross_entropy(np.zeros((2, 3, 4)), np.zeros((2, 4), np.int64), axis=bad)


# --- options: an array where a number is wanted

@pytest.mark.parametrize("option", ["label_smoothing", "z_loss", "softcap"])
@pytest.mark.parametrize("value", [np.array([0.1, 0.2]), np.array([0.1]), [0.1], 0.1 + 0j,
                                   np.complex64(0.1), "0.1", True], ids=repr)
def test_number_option_given_an_array_or_non_real_is_a_type_error(option, value):
    # label_smoothing=np.array([0.1, 0.2]) used to raise NumPy's "truth value of an
    # array ... is ambiguous" from a truth test before the check.
    with pytest.raises(TypeError, match=option):
        xf.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), **{option: value})


@pytest.mark.parametrize("option", ["label_smoothing", "z_loss", "softcap"])
def test_number_option_accepts_numpy_scalars_and_0d_arrays(option):
    x, t = np.random.default_rng(5).standard_normal((3, 4)), np.array([0, 1, 3])
    expected = xf.cross_entropy(x, t, **{option: 0.25})
    for value in (np.float32(0.25), np.float64(0.25), np.array(0.25), np.array(0.25, np.float32)):
        assert xf.cross_entropy(x, t, **{option: value}) == expected


@pytest.mark.parametrize("value", [2**2000, -(2**2000), float("inf"), float("nan")], ids=repr)
def test_number_option_huge_or_nonfinite_is_a_value_error(value):
    with pytest.raises(ValueError, match="z_loss must be finite"):
        xf.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), z_loss=value)


# --- JAX: soft labels with where= on one example (1-D logits)

def test_jax_soft_labels_with_where_on_one_example_match_optax():
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    jnp = jax.numpy
    import xent_fast.jax as xfj
    x = jnp.array([0.5, -1.0, 2.0, 0.1, 0.3])
    y = jnp.array([0.1, 0.2, 0.3, 0.25, 0.15])
    for where in (jnp.array([1, 0, 1, 1, 0], bool), jnp.zeros(5, bool), jnp.array(True)):
        ours = xfj.softmax_cross_entropy(x, y, where=where)
        theirs = optax.softmax_cross_entropy(x, y, where=where)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
        f_ours = jax.grad(lambda x: xfj.softmax_cross_entropy(x, y, where=where))
        f_theirs = jax.grad(lambda x: optax.softmax_cross_entropy(x, y, where=where))
        np.testing.assert_allclose(jax.jit(f_ours)(x), f_theirs(x), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(
            xfj.softmax_cross_entropy_with_integer_labels(x, 2, where=where),
            optax.softmax_cross_entropy_with_integer_labels(x, 2, where=where), rtol=1e-6, atol=1e-7)
    assert float(xfj.softmax_cross_entropy(x, y, where=jnp.array([1, 0, 1, 1, 0], bool))) == \
        pytest.approx(0.83090615, rel=1e-6)


# --- found by the red-team review of the fixes above

def test_huge_integer_grad_output_is_an_infinite_factor_not_an_overflow():
    x, t = np.zeros((2, 3)), np.array([0, 1])
    loss, grad = xf.cross_entropy_and_grad(x, t, grad_output=10**400)
    assert np.isinf(grad).any() and not np.isnan(grad[grad != 0]).any()
    loss, grad = xf.binary_cross_entropy_with_logits_and_grad(x, np.zeros((2, 3)), grad_output=-(10**400))
    assert np.isneginf(grad).all()
    with pytest.raises(TypeError, match="grad_output"):
        xf.cross_entropy_and_grad(x, t, grad_output=np.True_)


def test_ignore_index_is_checked_with_probability_targets_too():
    x = np.zeros((2, 3))
    with pytest.raises(TypeError, match="ignore_index"):
        xf.cross_entropy(x, np.full((2, 3), 1 / 3), ignore_index="a")


@pytest.mark.parametrize("wrap", WRAPPERS)
def test_grad_out_overlap_is_refused_on_another_class_axis(wrap):
    a = np.random.default_rng(7).random((3, 4))
    t = np.array([0, 1, 2, 0])
    with pytest.raises(ValueError, match="grad_out overlaps grad_output"):
        xf.cross_entropy_and_grad(a, t, axis=0, reduction="none", grad_output=wrap(a[0]), grad_out=a)
    with pytest.raises(ValueError, match="grad_out overlaps weight"):
        xf.cross_entropy_and_grad(a, t, axis=0, weight=wrap(a.reshape(-1)[:3]), grad_out=a)


def test_softmax_of_a_scalar_is_a_numpy_scalar_as_scipy():
    assert isinstance(xf.softmax(1.0, axis=None), np.float64)
    assert isinstance(xf.log_softmax(np.float32(2.0), axis=None), np.float32)


@pytest.mark.parametrize("shape", [(5,), (4, 3), (2, 3, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("base", [None, 2.0])
def test_info_measures_match_scipy_on_every_axis(shape, dtype, base):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(9)
    nd = len(shape)
    tol = dict(rtol=2e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-15)
    for axis in [*range(nd), *range(-nd, 0)]:
        p = np.moveaxis(rng.dirichlet(np.ones(shape[axis]), shape[:axis % nd]
                                      + shape[axis % nd + 1:]), -1, axis).astype(dtype)
        q = np.moveaxis(rng.dirichlet(np.ones(shape[axis]), shape[:axis % nd]
                                      + shape[axis % nd + 1:]), -1, axis).astype(dtype)
        p64, q64 = p.astype(np.float64), q.astype(np.float64)
        scale = 1.0 if base is None else np.log(base)
        np.testing.assert_allclose(xf.info.entropy(p, base=base, axis=axis),
                                   stats.entropy(p64, base=base, axis=axis), **tol)
        np.testing.assert_allclose(xf.info.kl_divergence(p, q, base=base, axis=axis),
                                   stats.entropy(p64, q64, base=base, axis=axis), **tol)
        np.testing.assert_allclose(xf.info.cross_entropy(p, q, base=base, axis=axis),
                                   -(p64 * np.log(q64)).sum(axis) / scale, **tol)


def test_info_measures_broadcast_p_and_q_as_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(8)
    p = rng.dirichlet(np.ones(3))
    q = rng.dirichlet(np.ones(3), 2)
    np.testing.assert_allclose(xf.info.kl_divergence(p, q), stats.entropy(p, q, axis=-1), rtol=1e-13)
    np.testing.assert_allclose(xf.info.cross_entropy(q, p), -(q * np.log(p)).sum(-1), rtol=1e-13)
    with pytest.raises(ValueError, match="broadcast"):
        xf.info.kl_divergence(p, np.full((2, 4), 0.25))
