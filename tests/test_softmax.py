import numpy as np
from scipy import special as scipy_special
import pytest

import xent_fast as xf
import reference as ref
from helpers import assert_close, assert_scalar, comp_dtype

SHAPES = [(7,), (1, 1), (5, 9), (3, 4, 6), (2, 3, 1), (2, 2, 3, 5), (33, 130)]
FUNCS = {"softmax": ref.softmax, "log_softmax": ref.log_softmax, "logsumexp": ref.logsumexp}


def _logits(rng, shape, dtype, scale=4.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ---------------------------------------------------------------- accuracy

@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_family_matches_reference(rng, dtype, name, shape):
    x = _logits(rng, shape, dtype)
    got = getattr(xf, name)(x)
    exp = FUNCS[name](x)
    out_shape = shape[:-1] if name == "logsumexp" else shape
    assert np.shape(got) == out_shape
    assert got.dtype == comp_dtype(dtype)
    assert_close(got, exp, dtype)


def test_logsumexp_of_1d_is_numpy_scalar(dtype):
    x = np.array([1.0, 2.0, 3.0], dtype=dtype)
    r = xf.logsumexp(x)
    assert_scalar(r, comp_dtype(dtype))
    assert_close(r, ref.logsumexp(x), dtype)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_of_1d_keeps_shape(dtype, name):
    x = np.array([1.0, 2.0, 3.0], dtype=dtype)
    r = getattr(xf, name)(x)
    assert isinstance(r, np.ndarray) and r.shape == (3,) and r.dtype == comp_dtype(dtype)
    assert_close(r, FUNCS[name](x), dtype)


def test_single_class_softmax_is_one_and_log_softmax_zero(dtype):
    x = np.array([[3.0], [-7.0], [0.0]], dtype=dtype)
    np.testing.assert_array_equal(xf.softmax(x), np.ones((3, 1)))
    np.testing.assert_array_equal(xf.log_softmax(x), np.zeros((3, 1)))
    assert_close(xf.logsumexp(x), [3.0, -7.0, 0.0], dtype)


def test_log_softmax_of_max_entry_keeps_relative_accuracy_float32():
    x = np.array([0.0, -50.0, -50.0], dtype=np.float32)
    exact = ref.mp_log_softmax(x)
    assert exact[0] == pytest.approx(-2 * np.exp(-50.0), rel=1e-12)  # about -3.86e-22
    got = xf.log_softmax(x)
    assert got[0] < 0
    np.testing.assert_allclose(got[0], exact[0], rtol=1e-5, atol=0)
    np.testing.assert_allclose(got[1:], exact[1:], rtol=1e-6)


def test_log_softmax_of_max_entry_keeps_relative_accuracy_float64():
    x = np.array([[0.0, -40.0, -45.0, -41.5], [3.0, -36.0, -37.0, -38.0]])
    got = xf.log_softmax(x)
    for i in range(2):
        exact = ref.mp_log_softmax(x[i])
        np.testing.assert_allclose(got[i], exact, rtol=1e-12, atol=0)


def test_softmax_of_equal_logits_is_uniform(dtype):
    x = np.full((4, 8), 2.5, dtype=dtype)
    assert_close(xf.softmax(x), np.full((4, 8), 1 / 8), dtype, atol=0)
    assert_close(xf.log_softmax(x), np.full((4, 8), -np.log(8)), dtype)
    assert_close(xf.logsumexp(x), np.full(4, 2.5 + np.log(8)), dtype)


# ---------------------------------------------------------------- extreme / masked

@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_extreme_finite_logits_are_stable(dt):
    big = np.finfo(dt).max / 2
    x = np.array([[big, big, 0.0], [-big, 0.0, -big], [big, -big, 1.0]], dtype=dt)
    sm, lsm, lse = xf.softmax(x), xf.log_softmax(x), xf.logsumexp(x)
    assert np.isfinite(sm).all() and np.isfinite(lse).all()
    assert_close(sm, ref.softmax(x), dt)
    assert_close(lse, ref.logsumexp(x), dt)
    assert_close(lsm, ref.log_softmax(x), dt)


def test_masked_neg_inf_entries_get_zero_probability(dtype):
    x = np.array([[0.0, -np.inf, 1.0, -np.inf], [2.0, 2.0, -np.inf, 0.0]], dtype=dtype)
    sm = xf.softmax(x)
    lsm = xf.log_softmax(x)
    assert sm[0, 1] == 0 and sm[0, 3] == 0 and sm[1, 2] == 0
    assert np.isneginf(lsm[0, 1]) and np.isneginf(lsm[1, 2])
    assert_close(sm, ref.softmax(x), dtype)
    assert_close(lsm, ref.log_softmax(x), dtype)
    assert_close(xf.logsumexp(x), ref.logsumexp(x), dtype)


def test_all_neg_inf_row_gives_nan_softmax_and_neg_inf_logsumexp(dtype):
    x = np.array([[-np.inf] * 3, [0.0, 1.0, 2.0]], dtype=dtype)
    sm, lsm, lse = xf.softmax(x), xf.log_softmax(x), xf.logsumexp(x)
    assert np.isnan(sm[0]).all() and np.isnan(lsm[0]).all()
    assert np.isneginf(lse[0])
    assert_close(sm[1], ref.softmax(x[1]), dtype)
    assert_close(lse[1], ref.logsumexp(x[1]), dtype)


def test_pos_inf_row_gives_nan_softmax_and_pos_inf_logsumexp(dtype):
    x = np.array([[0.0, np.inf, 1.0], [np.inf, np.inf, -np.inf], [0.0, 1.0, 2.0]], dtype=dtype)
    sm, lsm, lse = xf.softmax(x), xf.log_softmax(x), xf.logsumexp(x)
    assert np.isnan(sm[:2]).all() and np.isnan(lsm[:2]).all()
    assert np.isposinf(lse[0]) and np.isposinf(lse[1])
    assert_close(lsm[2], ref.log_softmax(x[2]), dtype)


@pytest.mark.parametrize("name", list(FUNCS))
def test_nan_poisons_only_its_own_row(rng, dtype, name):
    x = _logits(rng, (5, 6), dtype)
    x[2, 3] = np.nan
    x[4, 0] = np.nan
    x[4, 1] = np.inf  # NaN wins over +inf
    got = getattr(xf, name)(x)
    exp = FUNCS[name](x)
    assert np.isnan(got[2]).all() and np.isnan(got[4]).all()
    for i in (0, 1, 3):
        assert_close(got[i], exp[i], dtype)


def test_nan_with_neg_inf_row_is_nan(dtype):
    x = np.array([[np.nan, -np.inf, -np.inf]], dtype=dtype)
    assert np.isnan(xf.logsumexp(x)).all()
    assert np.isnan(xf.softmax(x)).all()


# ---------------------------------------------------------------- empty / errors of shape

@pytest.mark.parametrize("shape", [(0, 5), (2, 0, 3), (0, 1)], ids=str)
def test_empty_batch_returns_empty_results(dtype, shape):
    x = np.zeros(shape, dtype=dtype)
    for name in FUNCS:
        r = getattr(xf, name)(x)
        assert r.shape == (shape[:-1] if name == "logsumexp" else shape)
        assert r.dtype == comp_dtype(dtype)


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 0), (2, 3, 0)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_zero_classes_give_empty_softmax_and_minus_inf_logsumexp(shape, dtype):
    # As SciPy: the log of an empty sum is -inf; an empty row's softmax is empty.
    x = np.zeros(shape, dtype)
    dt = np.float64 if dtype == np.int64 else dtype
    for name in ("softmax", "log_softmax"):
        r = getattr(xf, name)(x)
        assert r.shape == shape and r.dtype == dt
    lse = xf.logsumexp(x)
    assert np.shape(lse) == shape[:-1] and lse.dtype == dt
    assert np.all(lse == -np.inf)
    np.testing.assert_array_equal(lse, scipy_special.logsumexp(x, axis=-1))


@pytest.mark.parametrize("axis", [-1, 0, 1, (0, 2), (2, 0), None, (1,), -3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axis_matches_scipy(axis, dtype):
    x = (np.random.default_rng(3).standard_normal((3, 4, 5)) * 5).astype(dtype)
    x64 = x.astype(np.float64)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
    for name in FUNCS:
        ours = getattr(xf, name)(x, axis=axis)
        theirs = getattr(scipy_special, name)(x64, axis=axis)
        assert ours.dtype == dtype and np.shape(ours) == np.shape(theirs)
        np.testing.assert_allclose(ours, theirs, **tol)
        out = np.empty(np.shape(theirs), dtype)
        assert getattr(xf, name)(x, axis=axis, out=out) is out
        np.testing.assert_array_equal(out, ours)


@pytest.mark.parametrize("shape", [(7,), (6, 1), (3, 4, 5), (2, 3, 1, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.bool_])
def test_every_axis_matches_scipy_over_shapes_and_dtypes(shape, dtype):
    # every single axis, negative too, a pair of axes and all of them; integer and bool
    # input computed in float64, as SciPy does
    x = np.random.default_rng(5).standard_normal(shape) * 4
    x = x > 0 if dtype == np.bool_ else x.astype(dtype)
    x64 = x.astype(np.float64)
    out_dt = dtype if dtype in (np.float32, np.float64) else np.float64
    tol = dict(rtol=1e-5, atol=1e-6) if out_dt == np.float32 else dict(rtol=1e-13, atol=1e-15)
    nd = len(shape)
    axes = [*range(nd), *range(-nd, 0), None] + ([(0, nd - 1)] if nd > 1 else [])
    for axis in axes:
        for name in FUNCS:
            ours = getattr(xf, name)(x, axis=axis)
            theirs = getattr(scipy_special, name)(x64, axis=axis)
            assert ours.dtype == out_dt and np.shape(ours) == np.shape(theirs), (name, axis)
            np.testing.assert_allclose(ours, theirs, **tol, err_msg=f"{name} axis={axis}")


def test_integer_and_bool_logits_are_computed_in_float64():
    for x in (np.arange(6).reshape(2, 3), np.array([[True, False, True]]), [1, 2, 3]):
        for name in FUNCS:
            ours = getattr(xf, name)(x)
            assert ours.dtype == np.float64
            np.testing.assert_allclose(ours, getattr(scipy_special, name)(np.asarray(x, float), axis=-1),
                                       rtol=1e-14)


@pytest.mark.parametrize("bad, exc", [(3, np.exceptions.AxisError), (-4, np.exceptions.AxisError),
                                      ((0, 0), ValueError), (1.0, TypeError), ("a", TypeError),
                                      (True, TypeError), ([0], TypeError)])
def test_bad_axis_names_axis(bad, exc):
    for name in FUNCS:
        with pytest.raises(exc, match="axis"):
            getattr(xf, name)(np.zeros((2, 3, 4)), axis=bad)


@pytest.mark.parametrize("name", list(FUNCS))
def test_zero_dim_logits_raise_value_error(name):
    with pytest.raises(ValueError, match="logits"):
        getattr(xf, name)(np.float64(1.0))
    with pytest.raises(ValueError, match="logits"):
        getattr(xf, name)(np.array(1.0))


# ---------------------------------------------------------------- out=

@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_out_is_filled_and_returned(rng, dtype, name):
    x = _logits(rng, (6, 7), dtype)
    out = np.full((6, 7), -123.0, dtype=comp_dtype(dtype))
    r = getattr(xf, name)(x, out=out)
    assert r is out
    assert np.shares_memory(r, out)
    assert_close(out, FUNCS[name](x), dtype)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6, 7), (7,), (2, 3, 4)], ids=str)
def test_out_may_be_the_logits_in_place(rng, dt, name, shape):
    x = _logits(rng, shape, dt)
    expected = FUNCS[name](x)
    r = getattr(xf, name)(x, out=x)
    assert r is x
    assert_close(x, expected, dt)


def test_logsumexp_out_is_filled_and_returned(rng, dtype):
    x = _logits(rng, (3, 4, 5), dtype)
    out = np.zeros((3, 4), dtype=comp_dtype(dtype))
    r = xf.logsumexp(x, out=out)
    assert r is out
    assert_close(out, ref.logsumexp(x), dtype)


def test_logsumexp_1d_with_out_returns_the_0d_out(rng):
    x = _logits(rng, (5,), np.float64)
    out = np.zeros((), dtype=np.float64)
    r = xf.logsumexp(x, out=out)
    assert r is out
    assert_close(out, ref.logsumexp(x), np.float64)


def test_out_on_empty_batch_is_returned(dtype):
    x = np.zeros((0, 4), dtype=dtype)
    out = np.zeros((0, 4), dtype=comp_dtype(dtype))
    assert xf.softmax(x, out=out) is out


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_out_of_wrong_dtype_raises_type_error(name):
    x = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(TypeError, match="out"):
        getattr(xf, name)(x, out=np.zeros((3, 4), dtype=np.float64))
    with pytest.raises(TypeError, match="out"):  # float16 logits compute in float32
        getattr(xf, name)(x.astype(np.float16), out=np.zeros((3, 4), dtype=np.float16))
    with pytest.raises(TypeError, match="out"):
        xf.logsumexp(x, out=np.zeros(3, dtype=np.float64))


@pytest.mark.parametrize("name", list(FUNCS))
def test_out_of_wrong_shape_raises_value_error(name):
    x = np.zeros((3, 4))
    for shape in [(4, 3), (12,), (3, 4, 1), (3,), (4,)]:
        if name == "logsumexp" and shape == (3,):
            continue  # the right shape for logsumexp
        with pytest.raises(ValueError, match="out"):
            getattr(xf, name)(x, out=np.zeros(shape))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_out_non_contiguous_or_read_only_raises_value_error(name):
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match="out"):
        getattr(xf, name)(x, out=np.zeros((3, 8))[:, ::2])
    with pytest.raises(ValueError, match="out"):
        getattr(xf, name)(x, out=np.zeros((4, 3)).T)
    ro = np.zeros((3, 4))
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="out"):
        getattr(xf, name)(x, out=ro)


def test_logsumexp_out_non_contiguous_or_read_only_raises_value_error():
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match="out"):
        xf.logsumexp(x, out=np.zeros(6)[::2])
    ro = np.zeros(3)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="out"):
        xf.logsumexp(x, out=ro)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_out_partially_overlapping_logits_raises_value_error(name):
    buf = np.arange(5 * 4 + 4, dtype=np.float64)
    x = buf[:20].reshape(5, 4)
    out = buf[4:24].reshape(5, 4)
    before = buf.copy()
    with pytest.raises(ValueError, match="out"):
        getattr(xf, name)(x, out=out)
    np.testing.assert_array_equal(buf, before)


def test_logsumexp_out_overlapping_logits_raises_value_error():
    buf = np.arange(5 * 4 + 4, dtype=np.float64)
    x = buf[:20].reshape(5, 4)
    out = buf[18:23]
    with pytest.raises(ValueError, match="out"):
        xf.logsumexp(x, out=out)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_out_not_an_ndarray_raises(name):
    with pytest.raises((TypeError, ValueError), match="out"):
        getattr(xf, name)(np.zeros((2, 3)), out=[[0.0] * 3] * 2)


@pytest.mark.parametrize("axis", [-1, 0, (0, 2), None])
def test_logsumexp_keepdims_matches_scipy(axis):
    x = np.random.default_rng(6).standard_normal((3, 4, 5))
    expected = scipy_special.logsumexp(x, axis=axis, keepdims=True)
    ours = xf.logsumexp(x, axis=axis, keepdims=True)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-14)
    out = np.empty(expected.shape)
    assert xf.logsumexp(x, axis=axis, keepdims=True, out=out) is out
    np.testing.assert_array_equal(out, ours)
    with pytest.raises(TypeError, match="keepdims"):
        xf.logsumexp(x, keepdims="yes")
