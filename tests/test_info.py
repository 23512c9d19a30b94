import math

import numpy as np
import pytest

import xent_fast as xf
import reference as ref
from helpers import assert_scalar

BASES = [None, 2, 10, math.e, 0.5, 3.7, 2.0]


def _dist(rng, shape, zeros=False):
    p = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    if zeros:
        p[..., 0] = 0.0
        p /= p.sum(axis=-1, keepdims=True)
    return p


def _close(got, exp, dtype=np.float64):
    if np.dtype(dtype) == np.float32:
        np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(got, exp, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- values vs reference

@pytest.mark.parametrize("base", BASES, ids=str)
@pytest.mark.parametrize("shape", [(5,), (4, 6), (2, 3, 4)], ids=str)
def test_measures_match_reference(rng, base, shape):
    p = _dist(rng, shape, zeros=True)
    q = _dist(rng, shape)
    _close(xf.info.surprisal(p, base=base), ref.surprisal(p, base))
    _close(xf.info.entropy(p, base=base), ref.entropy(p, base))
    _close(xf.info.cross_entropy(p, q, base=base), ref.info_cross_entropy(p, q, base))
    _close(xf.info.kl_divergence(p, q, base=base), ref.kl_divergence(p, q, base))


def test_result_shapes(rng):
    p, q = _dist(rng, (2, 3, 4)), _dist(rng, (2, 3, 4))
    assert xf.info.surprisal(p).shape == (2, 3, 4)
    assert xf.info.entropy(p).shape == (2, 3)
    assert xf.info.cross_entropy(p, q).shape == (2, 3)
    assert xf.info.kl_divergence(p, q).shape == (2, 3)


def test_single_vector_gives_numpy_scalars():
    p, q = [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]
    assert_scalar(xf.info.entropy(p), np.float64)
    assert_scalar(xf.info.cross_entropy(p, q), np.float64)
    assert_scalar(xf.info.kl_divergence(p, q, base=2), np.float64)


def test_surprisal_of_scalar_probability():
    s = xf.info.surprisal(0.25, base=2)
    assert float(s) == pytest.approx(2.0, rel=1e-15)
    assert np.ndim(s) == 0


def test_bases_scale_nats(rng):
    p, q = _dist(rng, (3, 5)), _dist(rng, (3, 5))
    nats = xf.info.cross_entropy(p, q)
    _close(xf.info.cross_entropy(p, q, base=2), nats / np.log(2))
    _close(xf.info.cross_entropy(p, q, base=10), nats / np.log(10))
    _close(xf.info.entropy(p, base=math.e), xf.info.entropy(p))


# ---------------------------------------------------------------- dtypes

def test_float32_inputs_give_float32_results(rng):
    p = _dist(rng, (3, 4)).astype(np.float32)
    q = _dist(rng, (3, 4)).astype(np.float32)
    for r, e in [(xf.info.surprisal(p), ref.surprisal(p)), (xf.info.entropy(p), ref.entropy(p)),
                 (xf.info.cross_entropy(p, q), ref.info_cross_entropy(p, q)),
                 (xf.info.kl_divergence(p, q), ref.kl_divergence(p, q))]:
        assert r.dtype == np.float32
        _close(r, e, np.float32)
    assert_scalar(xf.info.entropy(p[0]), np.float32)


def test_integer_one_hot_lists_are_computed_as_float64():
    p = [0, 0, 1]
    assert_scalar(xf.info.entropy(p), np.float64)
    assert xf.info.entropy(p) == 0.0
    h = xf.info.cross_entropy(p, [0.1, 0.2, 0.7])
    assert_scalar(h, np.float64)
    assert h == pytest.approx(-math.log(0.7), rel=1e-14)
    assert xf.info.surprisal(np.array([1, 1])).dtype == np.float64
    assert xf.info.kl_divergence(np.array([[1, 0], [0, 1]]), np.array([[1, 0], [0, 1]])).dtype == np.float64


def test_float64_results(rng):
    p = _dist(rng, (2, 3))
    assert xf.info.entropy(p).dtype == np.float64
    assert xf.info.surprisal(p).dtype == np.float64


# ---------------------------------------------------------------- zeros and infinities

def test_surprisal_of_zero_is_inf_and_of_one_is_zero():
    s = xf.info.surprisal(np.array([0.0, 1.0, 0.5]))
    assert np.isposinf(s[0]) and s[1] == 0
    assert s[2] == pytest.approx(math.log(2), rel=1e-15)


def test_entropy_zero_log_zero_is_zero():
    assert xf.info.entropy([1.0, 0.0, 0.0]) == 0.0
    assert xf.info.entropy([0.5, 0.0, 0.5]) == pytest.approx(math.log(2), rel=1e-15)
    assert xf.info.entropy([0.0, 0.0]) == 0.0


def test_cross_entropy_zero_p_terms_contribute_zero_even_where_q_is_zero():
    h = xf.info.cross_entropy([0.0, 1.0], [0.0, 1.0])
    assert h == 0.0 and not np.isnan(h)
    assert xf.info.kl_divergence([0.0, 1.0], [0.0, 1.0]) == 0.0


def test_q_zero_where_p_positive_gives_inf_never_nan():
    p = np.array([[0.5, 0.5], [1.0, 0.0], [0.3, 0.7]])
    q = np.array([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]])
    h = xf.info.cross_entropy(p, q)
    kl = xf.info.kl_divergence(p, q)
    assert np.isposinf(h[:2]).all() and np.isposinf(kl[:2]).all()
    assert np.isfinite(h[2]) and abs(kl[2]) < 1e-15
    assert np.isposinf(xf.info.cross_entropy(p, q, base=2)[:2]).all()


def test_kl_is_non_negative_and_zero_for_identical(rng):
    p, q = _dist(rng, (50, 7), zeros=True), _dist(rng, (50, 7))
    kl = xf.info.kl_divergence(p, q)
    assert (kl >= -1e-12).all()
    np.testing.assert_allclose(xf.info.kl_divergence(p, p), 0.0, atol=1e-14)


def test_kl_equals_cross_entropy_minus_entropy(rng):
    p, q = _dist(rng, (6, 5), zeros=True), _dist(rng, (6, 5))
    _close(xf.info.kl_divergence(p, q), xf.info.cross_entropy(p, q) - xf.info.entropy(p))


def test_rows_are_not_renormalised():
    p = [0.5, 0.25]
    assert xf.info.entropy(p) == pytest.approx(-(0.5 * math.log(0.5) + 0.25 * math.log(0.25)), rel=1e-14)
    assert xf.info.cross_entropy(p, [0.25, 0.25]) == pytest.approx(-0.75 * math.log(0.25), rel=1e-14)
    assert xf.info.kl_divergence(p, [0.5, 0.5]) == pytest.approx(0.25 * math.log(0.5), rel=1e-14)


# ---------------------------------------------------------------- errors

BAD_VALUES = [[-0.1, 1.1], [0.5, 1.5], [0.5, np.nan], [np.inf, 0.0], [-np.inf, 0.0]]


@pytest.mark.parametrize("bad", BAD_VALUES, ids=str)
def test_out_of_range_p_raises_value_error(bad):
    with pytest.raises(ValueError, match=r"\bp\b"):
        xf.info.entropy(bad)
    with pytest.raises(ValueError, match=r"\bp\b"):
        xf.info.surprisal(bad)
    with pytest.raises(ValueError, match=r"\bp\b"):
        xf.info.cross_entropy(bad, [0.5, 0.5])
    with pytest.raises(ValueError, match=r"\bp\b"):
        xf.info.kl_divergence(bad, [0.5, 0.5])


@pytest.mark.parametrize("bad", BAD_VALUES, ids=str)
def test_out_of_range_q_raises_value_error(bad):
    with pytest.raises(ValueError, match=r"\bq\b"):
        xf.info.cross_entropy([0.5, 0.5], bad)
    with pytest.raises(ValueError, match=r"\bq\b"):
        xf.info.kl_divergence([0.5, 0.5], bad)


def test_out_of_range_single_element_in_batch_raises():
    p = np.full((10, 4), 0.25)
    p[7, 2] = 1.0000001
    with pytest.raises(ValueError):
        xf.info.entropy(p)
    p[7, 2] = -1e-300
    with pytest.raises(ValueError):
        xf.info.entropy(p)


def test_mismatched_shapes_raise_value_error():
    with pytest.raises(ValueError):
        xf.info.cross_entropy([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError):
        xf.info.kl_divergence(np.full((2, 3), 1 / 3), np.full((2,), 1 / 3))
    with pytest.raises(ValueError):
        xf.info.cross_entropy(np.full((2, 3), 1 / 3), np.full((3, 2), 0.5))


@pytest.mark.parametrize("base", [1, 1.0, 0, 0.0, -2, -0.5, np.nan])
def test_invalid_base_raises_value_error(base):
    p, q = [0.5, 0.5], [0.25, 0.75]
    with pytest.raises(ValueError, match="base"):
        xf.info.surprisal(p, base=base)
    with pytest.raises(ValueError, match="base"):
        xf.info.entropy(p, base=base)
    with pytest.raises(ValueError, match="base"):
        xf.info.cross_entropy(p, q, base=base)
    with pytest.raises(ValueError, match="base"):
        xf.info.kl_divergence(p, q, base=base)


def test_inputs_are_not_modified(rng):
    p, q = _dist(rng, (4, 3), zeros=True), _dist(rng, (4, 3))
    p0, q0 = p.copy(), q.copy()
    xf.info.surprisal(p)
    xf.info.entropy(p, base=2)
    xf.info.cross_entropy(p, q)
    xf.info.kl_divergence(p, q)
    np.testing.assert_array_equal(p, p0)
    np.testing.assert_array_equal(q, q0)
