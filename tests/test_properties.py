"""Hypothesis property tests."""

import os

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import xent_fast as xf
import reference as ref
from helpers import assert_close

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# XF_HYP_EXAMPLES raises the example count for a longer local soak; CI runs are derandomized.
SETTINGS = settings(max_examples=int(os.environ.get("XF_HYP_EXAMPLES", "60")), deadline=None,
                    database=None, derandomize=bool(os.environ.get("CI")))

FLOAT_DTYPES = st.sampled_from([np.float32, np.float64])


@st.composite
def logits_arrays(draw, dtype=None, max_rows=6, max_classes=9, lo=-60.0, hi=60.0, ndim=None):
    dt = draw(FLOAT_DTYPES) if dtype is None else dtype
    nd = draw(st.integers(1, 3)) if ndim is None else ndim
    shape = tuple(draw(st.integers(1, max_rows)) for _ in range(nd - 1)) + (draw(st.integers(1, max_classes)),)
    elems = st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=32)
    return draw(hnp.arrays(dt, shape, elements=elems))


@st.composite
def ce_cases(draw, dtype=None):
    x = draw(logits_arrays(dtype=dtype, lo=-30.0, hi=30.0))
    C = x.shape[-1]
    kind = draw(st.sampled_from(["index", "probs"]))
    if kind == "index":
        t = draw(hnp.arrays(np.int64, x.shape[:-1], elements=st.integers(0, C - 1)))
    else:
        raw = draw(hnp.arrays(np.float64, x.shape, elements=st.floats(0, 1)))
        s = raw.sum(axis=-1, keepdims=True)
        t = np.where(s > 0, raw / np.where(s > 0, s, 1), 1.0 / C)
    weighted = draw(st.booleans())
    w = draw(hnp.arrays(np.float64, (C,), elements=st.floats(0.1, 3.0))) if weighted else None
    eps = draw(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0]))
    return x, t, w, eps


# ---------------------------------------------------------------- softmax family

@SETTINGS
@given(logits_arrays())
def test_softmax_rows_sum_to_one_and_lie_in_unit_interval(x):
    p = xf.softmax(x)
    assert np.all(p >= 0) and np.all(p <= 1)
    tol = 1e-12 if x.dtype == np.float64 else 1e-5
    np.testing.assert_allclose(p.sum(axis=-1, dtype=np.float64), 1.0, atol=tol * x.shape[-1])


@SETTINGS
@given(logits_arrays())
def test_log_softmax_is_log_of_softmax_and_non_positive(x):
    lp = xf.log_softmax(x)
    assert np.all(lp <= 0)
    assert_close(lp, ref.log_softmax(x), x.dtype)
    assert_close(xf.softmax(x), ref.softmax(x), x.dtype)


@SETTINGS
@given(logits_arrays())
def test_logsumexp_matches_reference_and_bounds(x):
    lse = xf.logsumexp(x)
    assert_close(lse, ref.logsumexp(x), x.dtype)
    m = x.max(axis=-1).astype(np.float64)
    slack = 1e-12 if x.dtype == np.float64 else 1e-5
    assert np.all(lse >= m - slack * (1 + np.abs(m)))
    assert np.all(lse <= m + np.log(x.shape[-1]) + slack * (1 + np.abs(m)))


@SETTINGS
@given(logits_arrays(dtype=np.float64), st.floats(-100, 100))
def test_softmax_is_shift_invariant(x, c):
    np.testing.assert_allclose(xf.softmax(x + c), xf.softmax(x), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(xf.logsumexp(x + c), xf.logsumexp(x) + c, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- cross-entropy

@SETTINGS
@given(ce_cases(), st.floats(0, 0.5), st.sampled_from([None, 0.5, 5.0]))
def test_loss_is_non_negative(case, z_loss, softcap):
    x, t, w, eps = case
    loss = xf.cross_entropy(x, t, weight=w, label_smoothing=eps, z_loss=z_loss, softcap=softcap,
                            reduction="none")
    assert np.all(np.asarray(loss) >= 0)


@SETTINGS
@given(ce_cases(), st.sampled_from(["mean", "sum", "none"]), st.sampled_from([0.0, 1e-3]))
def test_loss_and_gradient_match_reference(case, reduction, z_loss):
    x, t, w, eps = case
    kw = dict(weight=w, label_smoothing=eps, reduction=reduction, z_loss=z_loss)
    loss, g = xf.cross_entropy_and_grad(x, t, **kw)
    rl, rg = ref.cross_entropy_and_grad(x, t, **kw)
    assert_close(loss, rl, x.dtype)
    assert_close(g, rg, x.dtype)


@SETTINGS
@given(ce_cases())
def test_gradient_rows_sum_to_zero_without_z_loss_or_softcap(case):
    x, t, w, eps = case
    _, g = xf.cross_entropy_and_grad(x, t, weight=w, label_smoothing=eps, reduction="none")
    scale = 1.0 if w is None else float(np.sum(w))
    tol = (1e-13 if x.dtype == np.float64 else 1e-5) * scale * x.shape[-1]
    np.testing.assert_allclose(g.sum(axis=-1, dtype=np.float64), 0.0, atol=tol)


@SETTINGS
@given(logits_arrays(ndim=2, lo=-20, hi=20), st.data())
def test_index_gradient_without_weights_rows_sum_to_zero_even_with_ignored_rows(x, data):
    N, C = x.shape
    t = data.draw(hnp.arrays(np.int64, (N,), elements=st.sampled_from(list(range(C)) + [-100])))
    _, g = xf.cross_entropy_and_grad(x, t, reduction="mean")
    tol = 1e-14 if x.dtype == np.float64 else 1e-6
    np.testing.assert_allclose(g.sum(axis=-1, dtype=np.float64), 0.0, atol=tol * C)
    assert np.all(g[t == -100] == 0)


@SETTINGS
@given(logits_arrays(dtype=np.float64, ndim=2, lo=-20, hi=20), st.data())
def test_index_target_equals_onehot_probability_target(x, data):
    N, C = x.shape
    t = data.draw(hnp.arrays(np.int64, (N,), elements=st.integers(0, C - 1)))
    eps = data.draw(st.sampled_from([0.0, 0.25]))
    li, gi = xf.cross_entropy_and_grad(x, t, label_smoothing=eps, reduction="mean")
    lp, gp = xf.cross_entropy_and_grad(x, ref.one_hot(t, C), label_smoothing=eps, reduction="mean")
    assert_close(li, lp, np.float64)
    assert_close(gi, gp, np.float64)


@SETTINGS
@given(logits_arrays(dtype=np.float64, ndim=2, lo=-20, hi=20), st.data())
def test_loss_is_minus_log_softmax_at_target(x, data):
    N, C = x.shape
    t = data.draw(hnp.arrays(np.int64, (N,), elements=st.integers(0, C - 1)))
    loss = xf.cross_entropy(x, t, reduction="none")
    lp = xf.log_softmax(x)
    assert_close(loss, -lp[np.arange(N), t], np.float64)


# ---------------------------------------------------------------- information measures

@st.composite
def distributions(draw, shape):
    raw = draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)))
    s = raw.sum(axis=-1, keepdims=True)
    return np.where(s > 0, raw / np.where(s > 0, s, 1), 1.0 / shape[-1])


@st.composite
def pq_pairs(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=8))
    return draw(distributions(shape)), draw(distributions(shape))


@SETTINGS
@given(pq_pairs(), st.sampled_from([None, 2, 10]))
def test_cross_entropy_is_at_least_entropy(pq, base):
    p, q = pq
    assume(np.all(np.abs(p.sum(-1) - 1) < 1e-12) and np.all(np.abs(q.sum(-1) - 1) < 1e-12))
    h = np.asarray(xf.info.entropy(p, base=base))
    ce = np.asarray(xf.info.cross_entropy(p, q, base=base))
    assert np.all(ce >= h - 1e-12 * (1 + np.abs(h)))
    kl = np.asarray(xf.info.kl_divergence(p, q, base=base))
    assert np.all(kl >= -1e-12)


@SETTINGS
@given(pq_pairs())
def test_cross_entropy_equals_entropy_when_q_equals_p(pq):
    p, _ = pq
    np.testing.assert_allclose(xf.info.cross_entropy(p, p), xf.info.entropy(p), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(xf.info.kl_divergence(p, p), 0.0, atol=1e-14)


@SETTINGS
@given(pq_pairs(), st.sampled_from([None, 2, 0.5, 7.0]))
def test_information_measures_match_reference(pq, base):
    p, q = pq
    np.testing.assert_allclose(xf.info.entropy(p, base=base), ref.entropy(p, base), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(xf.info.cross_entropy(p, q, base=base), ref.info_cross_entropy(p, q, base),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(xf.info.kl_divergence(p, q, base=base), ref.kl_divergence(p, q, base),
                               rtol=1e-12, atol=1e-12)


@SETTINGS
@given(logits_arrays(dtype=np.float64, ndim=2, lo=-20, hi=20), st.data())
def test_loss_with_probability_target_equals_info_cross_entropy_of_softmax(x, data):
    y = data.draw(distributions(x.shape))
    loss = xf.cross_entropy(x, y, reduction="none")
    expected = xf.info.cross_entropy(y, ref.softmax(x))
    # where softmax underflows to 0 the info measure is inf; compare only finite rows
    finite = np.isfinite(expected)
    np.testing.assert_allclose(np.asarray(loss)[finite], np.asarray(expected)[finite], rtol=1e-10, atol=1e-12)
