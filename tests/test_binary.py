"""Tests of the binary family: binary_cross_entropy(_and_grad),
binary_cross_entropy_with_logits(_and_grad) and sigmoid_focal_loss(_and_grad).

Oracles: a float64 NumPy reference written out below (self-contained: it does not use
tests/reference.py), mpmath for tiny losses, and PyTorch (optional, skipped when absent)
for F.binary_cross_entropy, F.binary_cross_entropy_with_logits and torchvision's
sigmoid_focal_loss formula (torchvision itself is not needed: its formula is spelled out).
"""

import math
import zlib

import mpmath
import numpy as np
import pytest

import xent_fast as xf

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
EPS_F32 = float(np.float32(1e-12))  # PyTorch's BCE gradient clamp, held as a float

KINDS = ["probs", "logits", "focal"]
LOSS = {
    "probs": xf.binary_cross_entropy,
    "logits": xf.binary_cross_entropy_with_logits,
    "focal": xf.sigmoid_focal_loss,
}
LOSS_GRAD = {
    "probs": xf.binary_cross_entropy_and_grad,
    "logits": xf.binary_cross_entropy_with_logits_and_grad,
    "focal": xf.sigmoid_focal_loss_and_grad,
}
XNAME = {"probs": "probs", "logits": "logits", "focal": "logits"}


# =====================================================================================
# float64 NumPy reference
# =====================================================================================

def comp(dt):
    dt = np.dtype(dt)
    return F32 if dt == F16 else dt


def _f64(a, dt=F64):
    """The value the package computes with: cast to the computation dtype, then float64."""
    return np.asarray(np.asarray(a, dtype=comp(dt)), dtype=np.float64)


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(x):
    return np.logaddexp(0.0, x)  # log1p(exp(-|x|)) + max(x, 0): accurate for x << 0


def ref_elementwise(kind, x, y, weight=None, pos_weight=None, alpha=0.25, gamma=2.0):
    """Elementwise (loss, d loss / d x), float64."""
    x = np.asarray(x, np.float64)
    y = np.broadcast_to(np.asarray(y, np.float64), x.shape)
    if kind == "probs":
        with np.errstate(divide="ignore"):
            lp = np.maximum(np.log(x), -100.0)
            lq = np.maximum(np.log1p(-x), -100.0)
        loss = -(y * lp + (1.0 - y) * lq)
        d = (x - y) / np.maximum((1.0 - x) * x, EPS_F32)
    elif kind == "logits":
        pw = 1.0 if pos_weight is None else np.asarray(pos_weight, np.float64)
        loss = (1.0 - y) * _softplus(x) + pw * y * _softplus(-x)
        d = (1.0 - y) * _sigmoid(x) - pw * y * _sigmoid(-x)
    else:
        s, sn = _sigmoid(x), _sigmoid(-x)
        ce = (1.0 - y) * _softplus(x) + y * _softplus(-x)
        m = (1.0 - y) * s + y * sn  # 1 - p_t, without cancellation
        dce = (1.0 - y) * s - y * sn
        dm = s * sn * (1.0 - 2.0 * y)
        mod = m ** gamma
        loss = ce * mod
        if gamma == 0:
            d = dce * mod
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                dmod = np.where(m > 0, gamma * m ** (gamma - 1.0) * dm, 0.0)
            d = dce * mod + ce * dmod
        if alpha >= 0:
            a_t = alpha * y + (1.0 - alpha) * (1.0 - y)
            loss = a_t * loss
            d = a_t * d
    if weight is not None:
        w = np.asarray(weight, np.float64)
        loss = loss * w
        d = d * w
    return np.broadcast_to(loss, x.shape).copy(), np.broadcast_to(d, x.shape).copy()


def ref(kind, x, y, *, weight=None, pos_weight=None, alpha=0.25, gamma=2.0,
        reduction=None, grad_output=1.0):
    """(loss, grad) for a reduction, float64."""
    if reduction is None:
        reduction = "none" if kind == "focal" else "mean"
    loss, d = ref_elementwise(kind, x, y, weight, pos_weight, alpha, gamma)
    go = np.asarray(grad_output, np.float64)
    if reduction == "none":
        return loss, d * go
    if reduction == "sum":
        return loss.sum(), d * go
    n = loss.size
    return (loss.sum() / n if n else 0.0), (d * go / n if n else d * 0.0)


# ------------------------------------------------------------------- tolerances

TOL = {F64: dict(rtol=1e-12, atol=1e-14), F32: dict(rtol=1e-5, atol=1e-6)}


def close(actual, expected, dt, **override):
    tol = dict(TOL[comp(dt)])
    tol.update(override)
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               **tol)


def assert_np_scalar(v, dt):
    assert isinstance(v, np.generic), f"expected a NumPy scalar, got {type(v)!r}"
    assert v.dtype == comp(dt), f"expected {comp(dt)}, got {v.dtype}"


# ------------------------------------------------------------------- data

def make_x(kind, rng, shape, dt=F64, exact01=True):
    if kind == "probs":
        x = rng.uniform(0.0, 1.0, shape)
        if exact01 and x.size >= 4:
            flat = x.reshape(-1)
            flat[0], flat[-1], flat[x.size // 2] = 0.0, 1.0, 1.0
        return x.astype(dt)
    return (rng.standard_normal(shape) * 4.0).astype(dt)


def make_y(rng, shape, soft=True):
    y = rng.integers(0, 2, shape).astype(np.float64)
    if soft and y.size >= 2:
        m = rng.uniform(size=shape) < 0.3
        y[m] = rng.uniform(size=shape)[m]
    return y


def kw_for(kind, rng, shape, with_weights=True):
    kw = {}
    if with_weights and kind != "focal":
        kw["weight"] = rng.uniform(0.2, 2.0, shape[-1:] if shape else ())
    if with_weights and kind == "logits":
        kw["pos_weight"] = rng.uniform(0.5, 3.0, shape[-1:] if shape else ())
    if kind == "focal":
        kw.update(alpha=0.3, gamma=1.5)
    return kw


def cast_kw(kw, dt):
    """Weights rounded to the computation dtype, as the package uses them."""
    return {k: (_f64(v, dt) if k in ("weight", "pos_weight") else v) for k, v in kw.items()}


# =====================================================================================
# The seeds' worked examples
# =====================================================================================

@pytest.mark.parametrize("q0", [0.8, 0.3, 0.99, 0.5])
def test_seed_cat_example(q0):
    # "p0 is 1 if the image is a cat and 0 if not, q0 the predicted probability of cat"
    cat = xf.binary_cross_entropy(np.array([q0]), np.array([1.0]))
    not_cat = xf.binary_cross_entropy(np.array([q0]), np.array([0.0]))
    assert float(cat) == pytest.approx(-math.log(q0), rel=1e-14)
    assert float(not_cat) == pytest.approx(-math.log(1.0 - q0), rel=1e-14)
    # same through a logit
    z = math.log(q0 / (1.0 - q0))
    assert float(xf.binary_cross_entropy_with_logits(np.array([z]), np.array([1.0]))) == \
        pytest.approx(-math.log(q0), rel=1e-12)
    assert float(xf.binary_cross_entropy_with_logits(np.array([z]), np.array([0.0]))) == \
        pytest.approx(-math.log(1.0 - q0), rel=1e-12)
    # d(-log q0)/dq0 = -1/q0 ; d/dz = q0 - 1
    _, g = xf.binary_cross_entropy_and_grad(np.array([q0]), np.array([1.0]))
    assert g[0] == pytest.approx(-1.0 / q0, rel=1e-14)
    _, g = xf.binary_cross_entropy_with_logits_and_grad(np.array([z]), np.array([1.0]))
    assert g[0] == pytest.approx(q0 - 1.0, rel=1e-12, abs=1e-15)


def test_seed_cat_example_exact_value():
    # p = 0.8 for a cat: -log 0.8 = 0.22314...
    v = xf.binary_cross_entropy(np.array([0.8]), np.array([1.0]))
    assert round(float(v), 4) == 0.2231


@pytest.mark.parametrize("kind", ["probs", "logits"])
def test_seed_multilabel_is_sum_of_binary_problems(kind):
    rng = np.random.default_rng(1)
    N, C = 7, 4
    x = make_x(kind, rng, (N, C), exact01=False)
    y = rng.integers(0, 2, (N, C)).astype(np.float64)
    none = LOSS[kind](x, y, reduction="none")
    assert none.shape == (N, C)
    per_sample = none.sum(axis=-1)
    # the seed: multi-label loss = sum over categories of the binary cross-entropies
    separate = np.zeros(N)
    for c in range(C):
        col = LOSS[kind](np.ascontiguousarray(x[:, c]), np.ascontiguousarray(y[:, c]),
                         reduction="none")
        assert col.shape == (N,)
        separate += col
    np.testing.assert_allclose(per_sample, separate, rtol=1e-14)
    # and each per-sample value is -sum_c [y log q + (1-y) log(1-q)]
    q = x if kind == "probs" else 1.0 / (1.0 + np.exp(-x))
    direct = -(y * np.log(q) + (1 - y) * np.log(1 - q)).sum(axis=-1)
    np.testing.assert_allclose(per_sample, direct, rtol=1e-10)
    # the reductions agree with the elementwise loss
    assert float(LOSS[kind](x, y, reduction="sum")) == pytest.approx(none.sum(), rel=1e-13)
    assert float(LOSS[kind](x, y, reduction="mean")) == pytest.approx(none.sum() / (N * C),
                                                                       rel=1e-13)


def test_seed_multilabel_docstring_numbers():
    logits = np.array([[2.0, -1.0, 0.5], [-3.0, 4.0, 1.0]])
    labels = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    per_label = xf.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    expected = np.log1p(np.exp(-np.where(labels == 1, logits, -logits))).sum(axis=-1)
    np.testing.assert_allclose(per_label.sum(axis=-1), expected, rtol=1e-13)
    np.testing.assert_allclose(per_label.sum(axis=-1), [0.9143, 1.38], atol=5e-5)


# =====================================================================================
# Against the NumPy reference: shapes, dtypes, reductions
# =====================================================================================

SHAPES = [(), (1,), (7,), (5, 6), (2, 3, 4), (0,), (0, 3), (3, 0), (2, 0, 4)]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dt", [F16, F32, F64], ids=["f16", "f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_against_reference(kind, shape, dt, reduction):
    rng = np.random.default_rng(zlib.crc32(repr((kind, shape, str(dt), reduction)).encode()))
    x = make_x(kind, rng, shape, dt)
    y = make_y(rng, shape)
    kw = kw_for(kind, rng, shape, with_weights=len(shape) > 0)
    loss = LOSS[kind](x, y, reduction=reduction, **kw)
    loss2, grad = LOSS_GRAD[kind](x, y, reduction=reduction, **kw)
    el, eg = ref(kind, _f64(x, dt), _f64(y, dt), reduction=reduction, **cast_kw(kw, dt))
    if reduction == "none":
        if shape == ():
            assert_np_scalar(loss, dt)
            assert_np_scalar(loss2, dt)
        else:
            assert isinstance(loss, np.ndarray) and loss.shape == shape
            assert loss.dtype == comp(dt)
    else:
        assert_np_scalar(loss, dt)
        assert_np_scalar(loss2, dt)
    assert isinstance(grad, np.ndarray)
    assert grad.shape == shape and grad.dtype == comp(dt)
    close(loss, el, dt)
    close(loss2, el, dt)
    close(grad, eg, dt)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(0,), (0, 5), (4, 0), (2, 0, 3)], ids=str)
def test_empty_mean_is_zero_with_empty_gradient(kind, shape):
    x = np.empty(shape)
    y = np.empty(shape)
    loss = LOSS[kind](x, y, reduction="mean")
    assert_np_scalar(loss, F64)
    assert float(loss) == 0.0 and not np.isnan(loss)
    loss, grad = LOSS_GRAD[kind](x, y, reduction="mean")
    assert float(loss) == 0.0
    assert grad.shape == shape and grad.dtype == F64
    assert float(LOSS[kind](x, y, reduction="sum")) == 0.0
    none = LOSS[kind](x, y, reduction="none")
    assert isinstance(none, np.ndarray) and none.shape == shape


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dt", [F16, F32, F64], ids=["f16", "f32", "f64"])
def test_zero_dim_input(kind, dt):
    x = np.array(0.3 if kind == "probs" else -1.2, dtype=dt)
    y = np.array(1.0)
    for reduction in ["none", "mean", "sum"]:
        v = LOSS[kind](x, y, reduction=reduction)
        assert_np_scalar(v, dt)
        v2, g = LOSS_GRAD[kind](x, y, reduction=reduction)
        assert_np_scalar(v2, dt)
        assert isinstance(g, np.ndarray) and g.shape == () and g.dtype == comp(dt)
        el, eg = ref(kind, _f64(x, dt), 1.0, reduction=reduction)
        close(v, el, dt)
        close(g, eg, dt)


@pytest.mark.parametrize("kind", KINDS)
def test_mean_averages_over_all_elements_even_with_weights(kind):
    rng = np.random.default_rng(3)
    x = make_x(kind, rng, (4, 5))
    y = make_y(rng, (4, 5))
    kw = kw_for(kind, rng, (4, 5))
    s = LOSS[kind](x, y, reduction="sum", **kw)
    m = LOSS[kind](x, y, reduction="mean", **kw)
    assert float(m) == pytest.approx(float(s) / 20, rel=1e-14)
    _, gs = LOSS_GRAD[kind](x, y, reduction="sum", **kw)
    _, gm = LOSS_GRAD[kind](x, y, reduction="mean", **kw)
    np.testing.assert_allclose(gm, gs / 20, rtol=1e-14, atol=0)


def test_focal_default_reduction_is_none_and_bce_default_is_mean():
    x = np.array([[0.5, -1.0], [2.0, 0.0]])
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    f = xf.sigmoid_focal_loss(x, y)
    assert isinstance(f, np.ndarray) and f.shape == (2, 2)
    np.testing.assert_allclose(f, xf.sigmoid_focal_loss(x, y, reduction="none"), rtol=0)
    b = xf.binary_cross_entropy_with_logits(x, y)
    assert_np_scalar(b, F64)
    assert float(b) == pytest.approx(
        float(xf.binary_cross_entropy_with_logits(x, y, reduction="mean")), rel=0)


# =====================================================================================
# weight and pos_weight broadcasting
# =====================================================================================

WEIGHT_CASES = [
    ((5, 6), (6,)),
    ((5, 6), (5, 1)),
    ((5, 6), (5, 6)),
    ((5, 6), ()),
    ((5, 6), "float"),
    ((5, 6), (1, 6)),
    ((2, 3, 4), (2, 1, 4)),
    ((2, 3, 4), (4,)),
    ((2, 3, 4), (3, 1)),
    ((2, 3, 4), (2, 3, 4)),
    ((2, 3, 4), (2, 1, 1)),
    ((9,), (9,)),
    ((9,), ()),
]


def _weight(rng, wshape):
    if wshape == "float":
        return 1.7
    return rng.uniform(0.1, 3.0, wshape)


@pytest.mark.parametrize("dt", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape,wshape", WEIGHT_CASES, ids=str)
@pytest.mark.parametrize("kind", ["probs", "logits"])
def test_weight_broadcasts_to_input(kind, shape, wshape, dt):
    rng = np.random.default_rng(11)
    x = make_x(kind, rng, shape, dt)
    y = make_y(rng, shape)
    w = _weight(rng, wshape)
    for reduction in ["none", "sum", "mean"]:
        loss, grad = LOSS_GRAD[kind](x, y, weight=w, reduction=reduction)
        el, eg = ref(kind, _f64(x, dt), _f64(y, dt), weight=_f64(w, dt), reduction=reduction)
        close(loss, el, dt)
        close(grad, eg, dt)
        close(LOSS[kind](x, y, weight=w, reduction=reduction), el, dt)
    # the weight really is applied where expected: weight 1 everywhere changes nothing
    np.testing.assert_array_equal(
        LOSS[kind](x, y, weight=np.ones(shape[-1:]), reduction="none"),
        LOSS[kind](x, y, reduction="none"))


@pytest.mark.parametrize("shape,pwshape", [((5, 6), (6,)), ((5, 6), ()), ((2, 3, 4), (4,)),
                                           ((8,), (8,)), ((5, 6), (1, 6))], ids=str)
@pytest.mark.parametrize("dt", [F32, F64], ids=["f32", "f64"])
def test_pos_weight_broadcasts_along_last_axis(shape, pwshape, dt):
    rng = np.random.default_rng(12)
    x = make_x("logits", rng, shape, dt)
    y = make_y(rng, shape)
    pw = rng.uniform(0.5, 4.0, pwshape)
    w = rng.uniform(0.5, 2.0, shape[-1:])
    for reduction in ["none", "sum", "mean"]:
        loss, grad = xf.binary_cross_entropy_with_logits_and_grad(
            x, y, pos_weight=pw, weight=w, reduction=reduction)
        el, eg = ref("logits", _f64(x, dt), _f64(y, dt), pos_weight=_f64(pw, dt),
                     weight=_f64(w, dt), reduction=reduction)
        close(loss, el, dt)
        close(grad, eg, dt)
    # pos_weight scales only the positive term: with y = 0 it has no effect
    y0 = np.zeros(shape)
    np.testing.assert_array_equal(
        xf.binary_cross_entropy_with_logits(x, y0, pos_weight=pw, reduction="none"),
        xf.binary_cross_entropy_with_logits(x, y0, reduction="none"))
    # and with y = 1 it multiplies the loss
    y1 = np.ones(shape)
    close(xf.binary_cross_entropy_with_logits(x, y1, pos_weight=pw, reduction="none"),
          _f64(pw, dt) * _f64(xf.binary_cross_entropy_with_logits(x, y1, reduction="none")),
          dt)


# =====================================================================================
# exact 0/1 probabilities, targets, extreme and tiny values
# =====================================================================================

@pytest.mark.parametrize("dt", [F32, F64], ids=["f32", "f64"])
def test_exact_zero_one_probabilities(dt):
    p = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1.0], dtype=dt)
    y = np.array([0.0, 1.0, 0.0, 1.0, 0.5, 0.25], dtype=dt)
    loss, grad = xf.binary_cross_entropy_and_grad(p, y, reduction="none")
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    # log terms clamped at -100
    np.testing.assert_array_equal(np.abs(loss), np.array([0, 100, 100, 0, 50, 75], dtype=dt))
    e = dt.type(EPS_F32)
    expected_grad = np.array([0.0, -1.0 / e, 1.0 / e, 0.0, -0.5 / e, 0.75 / e])
    close(grad, expected_grad, dt, rtol=1e-6)
    # gradients of a "mean"
    _, gm = xf.binary_cross_entropy_and_grad(p, y)
    close(gm, expected_grad / 6, dt, rtol=1e-6)


@pytest.mark.parametrize("kind", ["probs", "logits"])
def test_targets_are_not_validated(kind):
    x = np.array([0.3, 0.9, 0.6]) if kind == "probs" else np.array([-1.0, 2.5, 0.3])
    y = np.array([1.5, -0.5, 3.0])
    loss, grad = LOSS_GRAD[kind](x, y, reduction="none")
    el, eg = ref(kind, x, y, reduction="none")
    close(loss, el, F64)
    close(grad, eg, F64)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tdtype", [np.int64, np.int32, np.uint8, np.bool_, np.float16,
                                    np.float32])
def test_integer_and_bool_targets_are_converted(kind, tdtype):
    rng = np.random.default_rng(5)
    x = make_x(kind, rng, (4, 3))
    y = rng.integers(0, 2, (4, 3))
    expected = LOSS_GRAD[kind](x, y.astype(np.float64), reduction="sum")
    got = LOSS_GRAD[kind](x, y.astype(tdtype), reduction="sum")
    assert float(got[0]) == pytest.approx(float(expected[0]), rel=1e-15)
    np.testing.assert_array_equal(got[1], expected[1])
    # and a plain Python list of ints
    got = LOSS[kind](x, y.tolist(), reduction="none")
    np.testing.assert_array_equal(got, LOSS[kind](x, y.astype(np.float64), reduction="none"))


@pytest.mark.parametrize("dt", [F16, F32, F64], ids=["f16", "f32", "f64"])
def test_extreme_logits_are_finite(dt):
    x = np.array([-1e4, 1e4, -1e4, 1e4, -1e4, 1e4, 0.0, -1e4], dtype=dt)
    y = np.array([0.0, 1.0, 1.0, 0.0, 0.5, 0.5, 1.0, 0.3])
    pw = 2.0
    loss, grad = xf.binary_cross_entropy_with_logits_and_grad(x, y, reduction="none")
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    close(loss, [0.0, 0.0, 1e4, 1e4, 5e3, 5e3, math.log(2.0), 3e3], dt)
    close(grad, [0.0, 0.0, -1.0, 1.0, -0.5, 0.5, -0.5, -0.3], dt)
    loss, grad = xf.binary_cross_entropy_with_logits_and_grad(
        x, y, pos_weight=np.array(pw), reduction="none")
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    el, eg = ref("logits", _f64(x, dt), _f64(y, dt), pos_weight=pw, reduction="none")
    close(loss, el, dt)
    close(grad, eg, dt)
    for reduction in ["mean", "sum"]:
        v, g = xf.binary_cross_entropy_with_logits_and_grad(x, y, reduction=reduction)
        assert np.isfinite(v) and np.all(np.isfinite(g))
    for alpha, gamma in [(0.25, 2.0), (-1.0, 0.5), (0.5, 0.0), (1.0, 3.0)]:
        loss, grad = xf.sigmoid_focal_loss_and_grad(x, y, alpha=alpha, gamma=gamma)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad)), (alpha, gamma)
        el, eg = ref("focal", _f64(x, dt), _f64(y, dt), alpha=alpha, gamma=gamma)
        close(loss, el, dt)
        close(grad, eg, dt)


def _mp_logits(x, y, pw=1.0):
    with mpmath.workdps(60):
        x, y, pw = mpmath.mpf(float(x)), mpmath.mpf(float(y)), mpmath.mpf(float(pw))
        sp = lambda z: mpmath.log1p(mpmath.exp(z))  # noqa: E731
        sig = lambda z: 1 / (1 + mpmath.exp(-z))  # noqa: E731
        loss = (1 - y) * sp(x) + pw * y * sp(-x)
        grad = (1 - y) * sig(x) - pw * y * sig(-x)
        return float(loss), float(grad)


def _mp_focal(x, y, alpha, gamma):
    with mpmath.workdps(80):
        y, a, g = mpmath.mpf(float(y)), mpmath.mpf(float(alpha)), mpmath.mpf(float(gamma))

        def f(z):
            p = 1 / (1 + mpmath.exp(-z))
            ce = (1 - y) * mpmath.log1p(mpmath.exp(z)) + y * mpmath.log1p(mpmath.exp(-z))
            p_t = p * y + (1 - p) * (1 - y)
            a_t = a * y + (1 - a) * (1 - y) if alpha >= 0 else 1
            return a_t * ce * (1 - p_t) ** g

        xm = mpmath.mpf(float(x))
        return float(f(xm)), float(mpmath.diff(f, xm))


@pytest.mark.parametrize("dt,xs", [
    (F64, [-40.0, -100.0, -300.0, 40.0, 100.0, 300.0, -20.0, 25.0]),
    (F32, [-40.0, -80.0, 40.0, 80.0, -17.0, 30.0]),
], ids=["f64", "f32"])
@pytest.mark.parametrize("pw", [None, 3.0])
def test_tiny_logit_losses_keep_relative_accuracy(dt, xs, pw):
    x = np.array(xs, dtype=dt)
    y = (x > 0).astype(np.float64)  # every element confidently right: tiny loss
    kw = {} if pw is None else {"pos_weight": np.array(pw)}
    loss, grad = xf.binary_cross_entropy_with_logits_and_grad(x, y, reduction="none", **kw)
    expected = [_mp_logits(a, b, 1.0 if pw is None else pw) for a, b in zip(x, y)]
    el = np.array([e[0] for e in expected])
    eg = np.array([e[1] for e in expected])
    assert np.all(el > 0)
    rtol = 1e-13 if dt == F64 else 2e-6
    np.testing.assert_allclose(loss.astype(np.float64), el, rtol=rtol, atol=0)
    np.testing.assert_allclose(grad.astype(np.float64), eg, rtol=rtol, atol=0)
    # and the case named in the brief
    if dt == F64:
        v = xf.binary_cross_entropy_with_logits(np.array(-40.0), np.array(0.0), reduction="none")
        assert float(v) == pytest.approx(4.248354255291589e-18, rel=1e-14)
        assert float(v) == pytest.approx(math.log1p(math.exp(-40.0)), rel=1e-15)


@pytest.mark.parametrize("dt,xs", [
    (F64, [-40.0, 40.0, -20.0, 20.0, -9.0, 12.0]),
    (F32, [-10.0, 10.0, -6.0, 7.0]),
], ids=["f64", "f32"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 1.0), (0.6, 0.5), (0.25, 3.5)])
def test_tiny_focal_losses_keep_relative_accuracy(dt, xs, alpha, gamma):
    x = np.array(xs, dtype=dt)
    y = (x > 0).astype(np.float64)
    loss = xf.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma)
    el = np.array([_mp_focal(a, b, alpha, gamma)[0] for a, b in zip(x, y)])
    assert np.all(el > 0)
    rtol = 1e-12 if dt == F64 else 2e-5
    np.testing.assert_allclose(loss.astype(np.float64), el, rtol=rtol, atol=0)


@pytest.mark.parametrize("dt,xs", [
    (F64, [-40.0, 40.0, -20.0, 20.0, -9.0, 12.0]),
    (F32, [-10.0, 10.0, -6.0, 7.0]),
], ids=["f64", "f32"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 1.0), (0.6, 0.5), (0.25, 3.5)])
def test_tiny_focal_gradients_keep_relative_accuracy(dt, xs, alpha, gamma):
    # For a confident positive (y = 1, x >> 0) the gradient is tiny and must not lose
    # its digits to sigmoid(x) - 1 (use -sigmoid(-x)), as the BCE-with-logits gradient
    # (1 - y) sigmoid(x) - y sigmoid(-x) does.
    x = np.array(xs, dtype=dt)
    y = (x > 0).astype(np.float64)
    _, grad = xf.sigmoid_focal_loss_and_grad(x, y, alpha=alpha, gamma=gamma)
    eg = np.array([_mp_focal(a, b, alpha, gamma)[1] for a, b in zip(x, y)])
    assert np.all(eg != 0)
    rtol = 1e-12 if dt == F64 else 2e-5
    np.testing.assert_allclose(grad.astype(np.float64), eg, rtol=rtol, atol=0)


def test_tiny_probability_losses():
    # -log(1 - p) for tiny p is p (log1p), and -log(q) near q = 1
    p = np.array([1e-20, 1e-10, 1.0 - 2.0**-40])
    y = np.array([0.0, 0.0, 1.0])
    loss = xf.binary_cross_entropy(p, y, reduction="none")
    np.testing.assert_allclose(loss, [1e-20, -math.log1p(-1e-10), -math.log(1.0 - 2.0**-40)],
                               rtol=1e-14, atol=0)


# =====================================================================================
# focal loss specifics
# =====================================================================================

def test_focal_gamma_zero_alpha_negative_is_bce_with_logits():
    rng = np.random.default_rng(21)
    x = make_x("logits", rng, (6, 5))
    y = make_y(rng, (6, 5))
    f, gf = xf.sigmoid_focal_loss_and_grad(x, y, alpha=-1.0, gamma=0.0)
    b, gb = xf.binary_cross_entropy_with_logits_and_grad(x, y, reduction="none")
    np.testing.assert_allclose(f, b, rtol=1e-14, atol=0)
    np.testing.assert_allclose(gf, gb, rtol=1e-13, atol=1e-16)
    # alpha balances positives and negatives: alpha y + (1 - alpha)(1 - y), with hard labels
    yh = (y > 0.5).astype(np.float64)
    f = xf.sigmoid_focal_loss(x, yh, alpha=0.2, gamma=0.0)
    b = xf.binary_cross_entropy_with_logits(x, yh, reduction="none")
    np.testing.assert_allclose(f, np.where(yh == 1, 0.2, 0.8) * b, rtol=1e-14)


@pytest.mark.parametrize("alpha", [-1.0, -0.001, 0.0, 0.25, 1.0])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.5])
def test_focal_alpha_gamma_against_reference(alpha, gamma):
    rng = np.random.default_rng(22)
    x = make_x("logits", rng, (4, 7))
    y = make_y(rng, (4, 7))
    for reduction in ["none", "mean", "sum"]:
        loss, grad = xf.sigmoid_focal_loss_and_grad(x, y, alpha=alpha, gamma=gamma,
                                                    reduction=reduction)
        el, eg = ref("focal", x, y, alpha=alpha, gamma=gamma, reduction=reduction)
        close(loss, el, F64)
        close(grad, eg, F64)
    if alpha < 0:
        # any negative alpha disables balancing: same as alpha = -1
        np.testing.assert_array_equal(
            xf.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma),
            xf.sigmoid_focal_loss(x, y, alpha=-1.0, gamma=gamma))



@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("gamma", [0, 1, 2, 3, 4])
def test_integer_gamma_agrees_with_the_general_power(dt, gamma):
    # An integer gamma up to 4 takes a vectorised loop with the powers as products; any
    # other gamma the element-by-element one with pow. Two implementations of one
    # formula: a gamma a hair away must give the same values to ~1e-9, soft and hard
    # labels, extreme logits included, and float32 rounded from the same double values.
    rng = np.random.default_rng(40)
    x = np.concatenate([rng.normal(0, 4, 3000), [0.0, 1e-30, -1e-30, 40, -40, 100, -100,
                                                 700, -700]]).astype(dt)
    for y in (rng.random(x.size).astype(dt), (rng.random(x.size) < 0.3).astype(dt)):
        for alpha in (0.25, -1.0):
            li, gi = xf.sigmoid_focal_loss_and_grad(x, y, alpha=alpha, gamma=gamma)
            lg, gg = xf.sigmoid_focal_loss_and_grad(x, y, alpha=alpha, gamma=gamma + 1e-12)
            np.testing.assert_allclose(li, lg, rtol=1e-9 if dt == np.float64 else 1.2e-7,
                                       atol=0)
            # (near a zero of a soft label's gradient, the gamma offset itself shows)
            np.testing.assert_allclose(gi, gg, rtol=1e-9 if dt == np.float64 else 1.2e-7,
                                       atol=1e-13 if dt == np.float64 else 1e-30)

def test_focal_shrinks_easy_examples():
    x = np.array([3.0, -1.0])
    y = np.array([1.0, 1.0])
    loss = xf.sigmoid_focal_loss(x, y)
    bce = xf.binary_cross_entropy_with_logits(x, y, reduction="none")
    assert loss[0] < 0.25 * bce[0] * 0.01  # easy positive almost vanishes
    np.testing.assert_allclose(loss, [2.732e-05, 0.1755], rtol=1e-3)


# =====================================================================================
# gradients: finite differences (float64) and grad_output
# =====================================================================================

FD_CASES = [
    ("probs", {}),
    ("probs", {"weight": "C"}),
    ("logits", {}),
    ("logits", {"weight": "N1", "pos_weight": "C"}),
    ("focal", {"alpha": 0.25, "gamma": 2.0}),
    ("focal", {"alpha": -1.0, "gamma": 1.5}),
    ("focal", {"alpha": 0.7, "gamma": 0.0}),
]


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("kind,opts", FD_CASES, ids=lambda v: str(v))
def test_gradient_matches_central_differences(kind, opts, soft):
    rng = np.random.default_rng(31)
    shape = (3, 4)
    if kind == "probs":
        x = rng.uniform(0.1, 0.9, shape)
    else:
        x = rng.standard_normal(shape) * 2.5
    y = make_y(rng, shape, soft=soft)
    kw = {}
    for k, v in opts.items():
        if v == "C":
            kw[k] = rng.uniform(0.5, 2.0, (4,))
        elif v == "N1":
            kw[k] = rng.uniform(0.5, 2.0, (3, 1))
        else:
            kw[k] = v
    _, grad = LOSS_GRAD[kind](x, y, reduction="sum", **kw)
    fd = np.empty(shape)
    for idx in np.ndindex(shape):
        h = 1e-6
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = (float(LOSS[kind](xp, y, reduction="sum", **kw))
                   - float(LOSS[kind](xm, y, reduction="sum", **kw))) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dt", [F32, F64], ids=["f32", "f64"])
def test_grad_output(kind, dt):
    rng = np.random.default_rng(32)
    shape = (5, 3)
    x = make_x(kind, rng, shape, dt, exact01=False)
    y = make_y(rng, shape)
    kw = kw_for(kind, rng, shape)
    _, g1 = LOSS_GRAD[kind](x, y, reduction="mean", **kw)
    for go in [2.5, -0.5, 0, np.float32(3.0), np.array(1.5)]:
        _, g = LOSS_GRAD[kind](x, y, reduction="mean", grad_output=go, **kw)
        el, eg = ref(kind, _f64(x, dt), _f64(y, dt), reduction="mean", grad_output=float(go),
                     **cast_kw(kw, dt))
        close(g, eg, dt)
        close(g, _f64(g1) * float(go), dt)
    _, g = LOSS_GRAD[kind](x, y, reduction="sum", grad_output=-2.0, **kw)
    close(g, ref(kind, _f64(x, dt), _f64(y, dt), reduction="sum", grad_output=-2.0,
                 **cast_kw(kw, dt))[1], dt)
    go = rng.standard_normal(shape)
    for gov in [go, go.astype(np.float32), go.tolist()]:
        _, g = LOSS_GRAD[kind](x, y, reduction="none", grad_output=gov, **kw)
        el, eg = ref(kind, _f64(x, dt), _f64(y, dt), reduction="none",
                     grad_output=_f64(gov, dt), **cast_kw(kw, dt))
        close(g, eg, dt)


@pytest.mark.parametrize("kind", KINDS)
def test_grad_output_errors(kind):
    rng = np.random.default_rng(33)
    x = make_x(kind, rng, (4, 3))
    y = make_y(rng, (4, 3))
    for reduction in ["mean", "sum"]:
        with pytest.raises(ValueError, match="grad_output"):
            LOSS_GRAD[kind](x, y, reduction=reduction, grad_output=np.ones((4, 3)))
    for bad in [np.ones((3, 4)), np.ones((4,)), np.ones((4, 3, 1)), np.ones(12)]:
        with pytest.raises(ValueError, match="grad_output"):
            LOSS_GRAD[kind](x, y, reduction="none", grad_output=bad)


# =====================================================================================
# PyTorch oracle
# =====================================================================================

def _torch():
    return pytest.importorskip("torch")


def _torch_loss(torch, kind, x, y, *, weight=None, pos_weight=None, alpha=0.25, gamma=2.0,
                reduction="mean", grad_output=1.0, dtype=None):
    """(loss, grad) from PyTorch autograd; torch computes in `dtype` (default float64)."""
    F = torch.nn.functional
    tdt = dtype or torch.float64
    tx = torch.tensor(np.asarray(x, np.float64), dtype=tdt, requires_grad=True)
    ty = torch.tensor(np.asarray(y, np.float64), dtype=tdt)
    tw = None if weight is None else torch.tensor(np.asarray(weight, np.float64), dtype=tdt)
    tpw = None if pos_weight is None else torch.tensor(np.asarray(pos_weight, np.float64),
                                                       dtype=tdt)
    if kind == "probs":
        loss = F.binary_cross_entropy(tx, ty, weight=tw, reduction=reduction)
    elif kind == "logits":
        loss = F.binary_cross_entropy_with_logits(tx, ty, weight=tw, pos_weight=tpw,
                                                  reduction=reduction)
    else:  # torchvision.ops.sigmoid_focal_loss, written out
        p = torch.sigmoid(tx)
        ce = F.binary_cross_entropy_with_logits(tx, ty, reduction="none")
        p_t = p * ty + (1 - p) * (1 - ty)
        loss = ce * ((1 - p_t) ** gamma)
        if alpha >= 0:
            alpha_t = alpha * ty + (1 - alpha) * (1 - ty)
            loss = alpha_t * loss
        if reduction == "mean":
            loss = loss.mean()
        elif reduction == "sum":
            loss = loss.sum()
    go = torch.tensor(np.asarray(grad_output, np.float64), dtype=tdt)
    if reduction != "none":
        loss.backward(go)
    else:
        loss.backward(go.expand_as(loss) if go.ndim == 0 else go)
    return loss.detach().numpy().astype(np.float64), tx.grad.numpy().astype(np.float64)


TORCH_CASES = [
    ("probs", (6, 5), {}),
    ("probs", (6, 5), {"weight": (5,)}),
    ("probs", (6, 5), {"weight": (6, 1)}),
    ("probs", (2, 3, 4), {"weight": (2, 1, 4)}),
    ("probs", (11,), {"weight": ()}),
    ("logits", (6, 5), {}),
    ("logits", (6, 5), {"weight": (5,), "pos_weight": (5,)}),
    ("logits", (6, 5), {"weight": (6, 1), "pos_weight": (5,)}),
    ("logits", (2, 3, 4), {"weight": (2, 1, 4), "pos_weight": (4,)}),
    ("logits", (2, 3, 4), {"weight": (2, 3, 4)}),
    ("logits", (), {}),
    ("focal", (6, 5), {"alpha": 0.25, "gamma": 2.0}),
    ("focal", (2, 3, 4), {"alpha": -1.0, "gamma": 1.0}),
    ("focal", (9,), {"alpha": 1.0, "gamma": 0.0}),
    ("focal", (6, 5), {"alpha": 0.4, "gamma": 0.5}),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dt", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind,shape,opts", TORCH_CASES, ids=lambda v: str(v))
def test_against_torch(kind, shape, opts, dt, reduction):
    torch = _torch()
    rng = np.random.default_rng(41)
    if kind == "probs":
        x = make_x(kind, rng, shape, dt)  # includes exact 0 and 1
    else:
        x = np.clip(rng.standard_normal(shape) * 3.0, -8, 8).astype(dt)
    y = make_y(rng, shape)
    kw = {}
    for k, v in opts.items():
        kw[k] = rng.uniform(0.3, 2.5, v) if isinstance(v, tuple) else v
    go = 0.7 if reduction != "none" else rng.standard_normal(shape)
    loss, grad = LOSS_GRAD[kind](x, y, reduction=reduction, grad_output=go, **kw)
    tl, tg = _torch_loss(torch, kind, _f64(x, dt), _f64(y, dt), reduction=reduction,
                         grad_output=_f64(go, dt), **cast_kw(kw, dt))
    close(loss, tl, dt, rtol=1e-11 if dt == F64 else 1e-5)
    close(grad, tg, dt, rtol=1e-11 if dt == F64 else 1e-5)
    close(LOSS[kind](x, y, reduction=reduction, **kw), tl, dt,
          rtol=1e-11 if dt == F64 else 1e-5)


@pytest.mark.parametrize("dt", [F32, F64], ids=["f32", "f64"])
def test_probs_clamps_match_torch_exactly(dt):
    """p in {0, 1} and near them: PyTorch's -100 clamp and 1e-12f gradient clamp, bitwise."""
    torch = _torch()
    tdt = {F32: torch.float32, F64: torch.float64}[dt]
    p = np.array([1.0, 0.0, 1.0, 0.0, 1e-13, 1.0 - 1e-7, 0.5, 1e-45, 0.0, 1.0], dtype=dt)
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.3, 0.6], dtype=dt)
    for reduction in ["none", "sum"]:
        loss, grad = xf.binary_cross_entropy_and_grad(p, y, reduction=reduction)
        tl, tg = _torch_loss(torch, "probs", p, y, reduction=reduction, dtype=tdt)
        np.testing.assert_array_equal(grad.astype(np.float64), tg)
        if reduction == "none":
            np.testing.assert_array_equal(loss.astype(np.float64), tl)
        else:
            close(loss, tl, dt)


@pytest.mark.parametrize("dt", [F32, F64], ids=["f32", "f64"])
def test_extreme_logits_match_torch(dt):
    torch = _torch()
    tdt = {F32: torch.float32, F64: torch.float64}[dt]
    x = np.array([-1e4, 1e4, -1e4, 1e4, 1e4, -1e4, -50.0, 50.0], dtype=dt)
    y = np.array([0.0, 1.0, 1.0, 0.0, 0.5, 0.5, 1.0, 0.0], dtype=dt)
    pw = np.array(2.5, dtype=dt)
    for kw in [{}, {"pos_weight": pw}]:
        loss, grad = xf.binary_cross_entropy_with_logits_and_grad(x, y, reduction="none", **kw)
        tl, tg = _torch_loss(torch, "logits", x, y, reduction="none", dtype=tdt, **kw)
        assert np.all(np.isfinite(tl)) and np.all(np.isfinite(tg))  # sanity of the oracle
        close(loss, tl, dt)
        close(grad, tg, dt)


def test_torch_formula_loses_tiny_loss_but_package_keeps_it():
    """The brief's example: (1-y) x + softplus(-x) cancels for x = -40, y = 0."""
    torch = _torch()
    x = torch.tensor([-40.0], dtype=torch.float64)
    naive = float((1 - 0.0) * x + torch.nn.functional.softplus(-x))
    exact = _mp_logits(-40.0, 0.0)[0]
    assert abs(naive - exact) > 0.5 * exact  # the cancellation the package must avoid
    got = float(xf.binary_cross_entropy_with_logits(np.array([-40.0]), np.array([0.0])))
    assert got == pytest.approx(exact, rel=1e-14)


# =====================================================================================
# threads
# =====================================================================================

def _thread_case(kind, rng, shape, dt):
    x = make_x(kind, rng, shape, dt)
    y = make_y(rng, shape)
    kw = kw_for(kind, rng, shape)
    return x, y, kw


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(300, 700), (200000,)], ids=str)
@pytest.mark.parametrize("dt", [F32, F64], ids=["f32", "f64"])
def test_results_bitwise_identical_for_every_thread_count(kind, shape, dt):
    rng = np.random.default_rng(51)
    x, y, kw = _thread_case(kind, rng, shape, dt)
    go_arr = rng.standard_normal(shape)
    results = {}
    for nt in [1, 2, -1, None]:
        r = []
        for reduction in ["mean", "sum", "none"]:
            r.append(LOSS[kind](x, y, reduction=reduction, n_threads=nt, **kw))
            r.extend(LOSS_GRAD[kind](x, y, reduction=reduction, n_threads=nt, **kw))
        r.extend(LOSS_GRAD[kind](x, y, reduction="none", grad_output=go_arr, n_threads=nt,
                                 **kw))
        results[nt] = r
    base = results[1]
    for nt, r in results.items():
        for a, b in zip(base, r):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), f"n_threads={nt}"
    # and the values are right
    el, eg = ref(kind, _f64(x, dt), _f64(y, dt), reduction="sum", **cast_kw(kw, dt))
    close(base[3], el, dt, rtol=1e-10 if dt == F64 else 1e-5)
    close(base[5], eg, dt)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [0, -2, -7])
def test_bad_n_threads(kind, bad):
    x = np.array([0.5, 0.25])
    y = np.array([1.0, 0.0])
    with pytest.raises(ValueError, match="n_threads"):
        LOSS[kind](x, y, n_threads=bad)
    with pytest.raises(ValueError, match="n_threads"):
        LOSS_GRAD[kind](x, y, n_threads=bad)


# =====================================================================================
# validation errors
# =====================================================================================

@pytest.mark.parametrize("fn", [xf.binary_cross_entropy, xf.binary_cross_entropy_and_grad])
@pytest.mark.parametrize("bad,shape,pos,pattern", [
    (1.5, (5,), (3,), r"probs\[3\]"),
    (-0.1, (5,), (0,), r"probs\[0\]"),
    (np.nan, (4, 6), (2, 5), r"probs\[2, 5\]"),
    (np.inf, (2, 3, 4), (1, 0, 2), r"probs\[1, 0, 2\]"),
    (-np.inf, (4, 6), (3, 0), r"probs\[3, 0\]"),
    (1.0000001, (), (), r"probs"),
])
def test_probs_outside_unit_interval_raise(fn, bad, shape, pos, pattern):
    p = np.full(shape, 0.5)
    p[pos] = bad
    y = np.ones(shape)
    with pytest.raises(ValueError, match=pattern):
        fn(p, y)
    with pytest.raises(ValueError, match=pattern):
        fn(p.astype(np.float32), y, reduction="none")


def test_probs_error_names_first_position_in_a_large_threaded_input():
    p = np.full((300, 700), 0.5)
    p[250, 600] = 2.0
    p[37, 11] = -3.0
    p[120, 5] = np.nan
    y = np.zeros_like(p)
    for nt in [1, 2, -1, None]:
        with pytest.raises(ValueError, match=r"probs\[37, 11\]"):
            xf.binary_cross_entropy(p, y, n_threads=nt)
    q = np.full(200000, 0.25)
    q[199999] = 1.5
    with pytest.raises(ValueError, match=r"probs\[199999\]"):
        xf.binary_cross_entropy_and_grad(q, np.zeros_like(q), n_threads=2)


def test_probs_boundaries_are_accepted():
    p = np.array([0.0, -0.0, 1.0, np.nextafter(1.0, 0.0), 5e-324])
    v = xf.binary_cross_entropy(p, np.array([0.0, 1.0, 1.0, 0.0, 1.0]), reduction="none")
    assert np.all(np.isfinite(v))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tshape", [(6,), (6, 5), (1, 5), (5, 6, 1), (), (30,)], ids=str)
def test_target_of_another_shape_raises(kind, tshape):
    x = make_x(kind, np.random.default_rng(0), (5, 6))
    y = np.zeros(tshape)
    with pytest.raises(ValueError, match="target"):
        LOSS[kind](x, y)
    with pytest.raises(ValueError, match="target"):
        LOSS_GRAD[kind](x, y)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [
    np.array([1, 0, 1]),
    np.array([1, 0, 1], dtype=np.int8),
    np.array([True, False, True]),
    np.array([0.5, 0.25, 0.5], dtype=np.complex128),
    np.array([0.5, 0.25, 0.5], dtype=object),
    np.array(["a", "b", "c"]),
    [1, 0, 1],
], ids=["int64", "int8", "bool", "complex", "object", "str", "intlist"])
def test_non_float_input_raises_type_error(kind, bad):
    y = np.array([1.0, 0.0, 1.0])
    with pytest.raises(TypeError, match=XNAME[kind]):
        LOSS[kind](bad, y)
    with pytest.raises(TypeError, match=XNAME[kind]):
        LOSS_GRAD[kind](bad, y)


@pytest.mark.parametrize("kind", ["probs", "logits"])
@pytest.mark.parametrize("wshape", [(5,), (6, 1), (5, 6, 2), (2, 5, 6), (3,)], ids=str)
def test_weight_that_does_not_broadcast_raises(kind, wshape):
    x = make_x(kind, np.random.default_rng(0), (5, 6))
    y = np.zeros((5, 6))
    w = np.ones(wshape)
    with pytest.raises(ValueError, match="weight"):
        LOSS[kind](x, y, weight=w)
    with pytest.raises(ValueError, match="weight"):
        LOSS_GRAD[kind](x, y, weight=w)


@pytest.mark.parametrize("pwshape", [(5,), (6, 1), (3,), (2, 5, 6)], ids=str)
def test_pos_weight_that_does_not_broadcast_raises(pwshape):
    x = np.zeros((5, 6))
    y = np.zeros((5, 6))
    pw = np.ones(pwshape)
    with pytest.raises(ValueError, match="pos_weight"):
        xf.binary_cross_entropy_with_logits(x, y, pos_weight=pw)
    with pytest.raises(ValueError, match="pos_weight"):
        xf.binary_cross_entropy_with_logits_and_grad(x, y, pos_weight=pw, weight=np.ones(6))


@pytest.mark.parametrize("alpha", [1.0001, 2.0, np.nan, np.inf, -np.inf])
def test_focal_bad_alpha(alpha):
    x = np.zeros(3)
    y = np.ones(3)
    with pytest.raises(ValueError, match="alpha"):
        xf.sigmoid_focal_loss(x, y, alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
        xf.sigmoid_focal_loss_and_grad(x, y, alpha=alpha)


@pytest.mark.parametrize("gamma", [-0.5, -1e-9, np.nan, np.inf])
def test_focal_bad_gamma(gamma):
    x = np.zeros(3)
    y = np.ones(3)
    with pytest.raises(ValueError, match="gamma"):
        xf.sigmoid_focal_loss(x, y, gamma=gamma)
    with pytest.raises(ValueError, match="gamma"):
        xf.sigmoid_focal_loss_and_grad(x, y, gamma=gamma)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_reduction(kind):
    with pytest.raises(ValueError, match="reduction"):
        LOSS[kind](np.array([0.5]), np.array([1.0]), reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        LOSS_GRAD[kind](np.array([0.5]), np.array([1.0]), reduction="batchmean")


# =====================================================================================
# grad_out
# =====================================================================================

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dt", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_grad_out_in_place_and_preallocated(kind, dt, reduction):
    rng = np.random.default_rng(61)
    shape = (8, 5)
    x = make_x(kind, rng, shape, dt)
    y = make_y(rng, shape)
    kw = kw_for(kind, rng, shape)
    el, eg = LOSS_GRAD[kind](x, y, reduction=reduction, **kw)
    # preallocated
    buf = np.full(shape, np.nan, dtype=dt)
    loss, g = LOSS_GRAD[kind](x, y, reduction=reduction, grad_out=buf, **kw)
    assert g is buf
    np.testing.assert_array_equal(buf, eg)
    np.testing.assert_array_equal(np.asarray(loss), np.asarray(el))
    # in place: the input itself
    xi = x.copy()
    loss, g = LOSS_GRAD[kind](xi, y, reduction=reduction, grad_out=xi, **kw)
    assert g is xi
    np.testing.assert_array_equal(xi, eg)
    np.testing.assert_array_equal(np.asarray(loss), np.asarray(el))


def test_grad_out_in_place_on_large_threaded_input():
    rng = np.random.default_rng(62)
    x = rng.standard_normal((300, 700))
    y = make_y(rng, x.shape)
    _, eg = xf.binary_cross_entropy_with_logits_and_grad(x, y, n_threads=1)
    xi = x.copy()
    xf.binary_cross_entropy_with_logits_and_grad(xi, y, grad_out=xi, n_threads=-1)
    np.testing.assert_array_equal(xi, eg)


def test_grad_out_float32_for_float16_input():
    rng = np.random.default_rng(63)
    x = (rng.standard_normal((4, 3))).astype(np.float16)
    y = make_y(rng, (4, 3))
    _, eg = xf.binary_cross_entropy_with_logits_and_grad(x, y)
    buf = np.empty((4, 3), np.float32)
    _, g = xf.binary_cross_entropy_with_logits_and_grad(x, y, grad_out=buf)
    assert g is buf
    np.testing.assert_array_equal(buf, eg)
    with pytest.raises(TypeError, match="grad_out"):
        xf.binary_cross_entropy_with_logits_and_grad(x, y, grad_out=x.copy())


@pytest.mark.parametrize("kind", KINDS)
def test_grad_out_errors(kind):
    rng = np.random.default_rng(64)
    shape = (6, 4)
    x = make_x(kind, rng, shape)
    y = make_y(rng, shape)
    f = LOSS_GRAD[kind]
    with pytest.raises(TypeError, match="grad_out"):
        f(x, y, grad_out=np.empty(shape, np.float32))
    with pytest.raises(TypeError, match="grad_out"):
        f(x.astype(np.float32), y, grad_out=np.empty(shape, np.float64))
    with pytest.raises(ValueError, match="grad_out"):
        f(x, y, grad_out=np.empty((4, 6)))
    with pytest.raises(ValueError, match="grad_out"):
        f(x, y, grad_out=np.empty((24,)))
    ro = np.empty(shape)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="grad_out"):
        f(x, y, grad_out=ro)
    with pytest.raises(ValueError, match="grad_out"):
        f(x, y, grad_out=np.empty((6, 8))[:, ::2])
    with pytest.raises(ValueError, match="grad_out"):
        f(x, y, grad_out=np.asfortranarray(np.empty(shape)))
    # overlapping the target
    yy = y.copy()
    with pytest.raises(ValueError, match="grad_out"):
        f(x, yy, grad_out=yy)
    # partially overlapping the input
    buf = np.empty(25)
    buf[:24] = x.reshape(-1)
    xv = buf[:24].reshape(shape)
    with pytest.raises(ValueError, match="grad_out"):
        f(xv, y, grad_out=buf[1:].reshape(shape))
    np.testing.assert_array_equal(xv, x)


@pytest.mark.parametrize("kind", ["probs", "logits"])
def test_grad_out_overlapping_weight_raises(kind):
    rng = np.random.default_rng(65)
    x = make_x(kind, rng, (6, 4))
    y = make_y(rng, (6, 4))
    w = rng.uniform(0.5, 2, (6, 4))
    w0 = w.copy()
    with pytest.raises(ValueError, match="grad_out"):
        LOSS_GRAD[kind](x, y, weight=w, grad_out=w)
    np.testing.assert_array_equal(w, w0)
    if kind == "logits":
        pw = rng.uniform(0.5, 2, (6, 4))
        with pytest.raises(ValueError, match="grad_out"):
            LOSS_GRAD[kind](x, y, pos_weight=pw, grad_out=pw)


@pytest.mark.parametrize("kind", KINDS)
def test_grad_out_overlapping_grad_output(kind):
    # the contract: "A grad_out that overlaps any other argument raises ValueError"
    rng = np.random.default_rng(66)
    shape = (6, 4)
    x = make_x(kind, rng, shape)
    y = make_y(rng, shape)
    buf = np.empty(25)
    buf[:24] = rng.standard_normal(24)
    go = buf[:24].reshape(shape)
    with pytest.raises(ValueError, match="grad_out"):
        LOSS_GRAD[kind](x, y, reduction="none", grad_output=go, grad_out=buf[1:].reshape(shape))


# =====================================================================================
# inputs are never modified; read-only, non-contiguous, big-endian inputs work
# =====================================================================================

def _layouts(a):
    out = [("contiguous", a)]
    ro = a.copy()
    ro.setflags(write=False)
    out.append(("readonly", ro))
    out.append(("fortran", np.asfortranarray(a)))
    big = np.zeros(tuple(2 * s for s in a.shape), dtype=a.dtype)
    sl = tuple(slice(None, None, 2) for _ in a.shape)
    big[sl] = a
    out.append(("strided", big[sl]))
    out.append(("negstride", a[::-1].copy()[::-1]))
    swapped = a.dtype.newbyteorder(">" if a.dtype.byteorder != ">" else "<")
    out.append(("byteswapped", a.astype(swapped)))
    tr = np.zeros(a.shape[::-1], a.dtype)
    tr[...] = a.T
    out.append(("transposed_view", tr.T))
    return out


LAYOUT_CASES = [("probs", "x"), ("probs", "target"), ("probs", "weight"),
                ("logits", "x"), ("logits", "target"), ("logits", "weight"),
                ("logits", "pos_weight"), ("focal", "x"), ("focal", "target")]


@pytest.mark.parametrize("kind,which", LAYOUT_CASES)
@pytest.mark.parametrize("dt", [F32, F64], ids=["f32", "f64"])
def test_layouts_give_the_same_result(kind, which, dt):
    rng = np.random.default_rng(71)
    shape = (5, 6)
    args = {"x": make_x(kind, rng, shape, dt), "target": make_y(rng, shape).astype(dt)}
    if kind != "focal":
        args["weight"] = rng.uniform(0.5, 2.0, shape).astype(dt)
    if kind == "logits":
        args["pos_weight"] = rng.uniform(0.5, 2.0, shape).astype(dt)

    def call(a, reduction):
        kw = {k: v for k, v in a.items() if k in ("weight", "pos_weight")}
        return LOSS_GRAD[kind](a["x"], a["target"], reduction=reduction, **kw)

    expected = {r: call(args, r) for r in ["none", "sum"]}
    el, eg = ref(kind, _f64(args["x"]), _f64(args["target"]), reduction="none",
                 **{k: _f64(v) for k, v in args.items() if k in ("weight", "pos_weight")})
    close(expected["none"][0], el, dt)
    close(expected["none"][1], eg, dt)
    for label, v in _layouts(args[which]):
        a = dict(args)
        a[which] = v
        snapshot = np.array(v, copy=True)
        for r in ["none", "sum"]:
            loss, grad = call(a, r)
            if r == "none":
                np.testing.assert_array_equal(loss, expected[r][0], err_msg=label)
            else:
                close(loss, expected[r][0], dt, rtol=1e-13 if dt == F64 else 1e-6)
            np.testing.assert_array_equal(grad, expected[r][1], err_msg=label)
            assert grad.dtype == dt and grad.flags.c_contiguous
        np.testing.assert_array_equal(v, snapshot, err_msg=f"{label}: input modified")


@pytest.mark.parametrize("kind", KINDS)
def test_inputs_are_never_modified(kind):
    rng = np.random.default_rng(72)
    shape = (7, 5)
    x = make_x(kind, rng, shape)
    y = make_y(rng, shape)
    w = rng.uniform(0.5, 2.0, (5,))
    pw = rng.uniform(0.5, 2.0, (5,))
    go = rng.standard_normal(shape)
    kw = {"focal": {}, "probs": {"weight": w}, "logits": {"weight": w, "pos_weight": pw}}[kind]
    saved = [a.copy() for a in (x, y, w, pw, go)]
    for reduction in ["mean", "sum", "none"]:
        LOSS[kind](x, y, reduction=reduction, **kw)
        LOSS_GRAD[kind](x, y, reduction=reduction, **kw)
    LOSS_GRAD[kind](x, y, reduction="none", grad_output=go, **kw)
    for a, s in zip((x, y, w, pw, go), saved):
        np.testing.assert_array_equal(a, s)
    # float16 input is converted, never written either
    x16 = x.astype(np.float16)
    s16 = x16.copy()
    LOSS_GRAD[kind](x16, y, **kw)
    np.testing.assert_array_equal(x16, s16)


@pytest.mark.parametrize("kind", KINDS)
def test_array_likes(kind):
    rng = np.random.default_rng(73)
    x = make_x(kind, rng, (3, 4))
    y = make_y(rng, (3, 4))
    expected = LOSS[kind](x, y, reduction="none")
    np.testing.assert_array_equal(LOSS[kind](x.tolist(), y.tolist(), reduction="none"),
                                  expected)
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(
        LOSS[kind](torch.from_numpy(x), torch.from_numpy(y), reduction="none"), expected)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("loss", ["bce", "focal2", "focal2.5"])
def test_an_element_does_not_depend_on_its_position(dt, loss):
    # The vectorised loops run a body over whole vectors and a remainder element by
    # element; both must give an element the same bits, wherever the array starts.
    rng = np.random.default_rng(41)
    x = rng.normal(0, 3, 700).astype(dt)
    y = rng.random(700).astype(dt)

    def run(a, b):
        if loss == "bce":
            return xf.binary_cross_entropy_with_logits_and_grad(a, b, reduction="none")
        return xf.sigmoid_focal_loss_and_grad(a, b, gamma=float(loss[5:]))

    full = run(x, y)
    for shift in range(1, 40):
        part = run(x[shift:], y[shift:])
        for f, p in zip(full, part):
            assert f[shift:].tobytes() == p.tobytes(), f"shift {shift}"
