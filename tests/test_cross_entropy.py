import itertools

import numpy as np
import pytest

import xent_fast as xf
import reference as ref
from helpers import assert_close, assert_scalar, comp_dtype

REDUCTIONS = ["mean", "sum", "none"]


def _case(rng, shape, dtype, n_ignored=0, ignore_index=-100):
    """Logits of `shape` (..., C), class-index targets, some rows set to ignore_index."""
    C = shape[-1]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    t = rng.integers(0, C, size=shape[:-1])
    if n_ignored:
        flat = t.reshape(-1)
        flat[rng.choice(flat.size, n_ignored, replace=False)] = ignore_index
    return x, t


def _probs(rng, shape):
    return rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])


def _grad_output(rng, reduction, batch):
    return rng.standard_normal(batch) if reduction == "none" else 1.7


def _check(x, target, dtype, kw, go=None):
    """Package loss and gradient vs the reference, plus the loss-only function."""
    gkw = {} if go is None else {"grad_output": go}
    loss, grad = xf.cross_entropy_and_grad(x, target, **kw, **gkw)
    rl, rg = ref.cross_entropy_and_grad(x, target, **kw, **({} if go is None else {"grad_output": go}))
    cd = comp_dtype(dtype)
    assert grad.shape == x.shape and grad.dtype == cd
    if kw.get("reduction", "mean") == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == x.shape[:-1] and loss.dtype == cd
    else:
        assert_scalar(loss, cd)
    assert_close(loss, rl, dtype)
    assert_close(grad, rg, dtype)
    assert_close(xf.cross_entropy(x, target, **kw), rl, dtype)
    return loss, grad


# ---------------------------------------------------------------- option grids vs reference

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("weighted", [False, True], ids=["nowt", "wt"])
def test_index_target_options_match_reference(rng, dtype, weighted, ignore_index, label_smoothing, reduction):
    x, t = _case(rng, (13, 5), dtype)
    t[[1, 4]] = 2  # rows hit by ignore_index=2
    w = rng.uniform(0.5, 2.0, 5) if weighted else None
    kw = dict(weight=w, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction)
    _check(x, t, dtype, kw, _grad_output(rng, reduction, (13,)))
    _check(x, t, dtype, kw)  # default grad_output=1.0


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
@pytest.mark.parametrize("weighted", [False, True], ids=["nowt", "wt"])
def test_probability_target_options_match_reference(rng, dtype, weighted, label_smoothing, reduction):
    x = (rng.standard_normal((11, 6)) * 3).astype(dtype)
    y = _probs(rng, (11, 6))
    w = rng.uniform(0.5, 2.0, 6) if weighted else None
    kw = dict(weight=w, label_smoothing=label_smoothing, reduction=reduction)
    _check(x, y, dtype, kw, _grad_output(rng, reduction, (11,)))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("softcap", [None, 1.0, 30.0])
@pytest.mark.parametrize("z_loss", [0.0, 1e-3, 0.1])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_z_loss_and_softcap_match_reference(rng, dt, z_loss, softcap, kind, reduction):
    x, t = _case(rng, (9, 7), dt, n_ignored=2)
    target = t if kind == "index" else _probs(rng, (9, 7)).astype(dt)
    w = rng.uniform(0.5, 2.0, 7)
    kw = dict(weight=w, label_smoothing=0.1, z_loss=z_loss, softcap=softcap, reduction=reduction)
    _check(x, target, dt, kw, _grad_output(rng, reduction, (9,)))


@pytest.mark.parametrize("shape", [(4, 5, 6), (2, 3, 4, 3), (1, 1, 2)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multi_dim_batches_match_reference(rng, dtype, shape, reduction):
    x, t = _case(rng, shape, dtype, n_ignored=1)
    kw = dict(weight=rng.uniform(0.5, 2, shape[-1]), label_smoothing=0.05, z_loss=1e-2, reduction=reduction)
    _check(x, t, dtype, kw, _grad_output(rng, reduction, shape[:-1]))
    y = _probs(rng, shape)
    _check(x, y, dtype, dict(label_smoothing=0.05, reduction=reduction), _grad_output(rng, reduction, shape[:-1]))


def test_multi_dim_batch_equals_flattened_rows(rng):
    x, t = _case(rng, (3, 4, 6), np.float64, n_ignored=2)
    l3, g3 = xf.cross_entropy_and_grad(x, t, reduction="none")
    l2, g2 = xf.cross_entropy_and_grad(x.reshape(12, 6), t.reshape(12), reduction="none")
    np.testing.assert_array_equal(l3.reshape(12), l2)
    np.testing.assert_array_equal(g3.reshape(12, 6), g2)


# ---------------------------------------------------------------- 1-D logits

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_1d_logits_give_numpy_scalar_loss(dtype, reduction):
    x = np.array([1.0, -0.5, 2.0, 0.25], dtype=dtype)
    loss, grad = xf.cross_entropy_and_grad(x, 2, reduction=reduction)
    assert_scalar(loss, comp_dtype(dtype))
    assert grad.shape == (4,) and grad.dtype == comp_dtype(dtype)
    rl, rg = ref.cross_entropy_and_grad(x[None], np.array([2]), reduction=reduction)
    assert_close(loss, rl, dtype)
    assert_close(grad, rg[0], dtype)
    assert_scalar(xf.cross_entropy(x, np.int64(2), reduction=reduction), comp_dtype(dtype))


def test_1d_logits_with_probability_target(rng):
    x = rng.standard_normal(5)
    y = _probs(rng, (5,))
    loss, grad = xf.cross_entropy_and_grad(x, y, reduction="none", label_smoothing=0.1)
    assert_scalar(loss, np.float64)
    rl, rg = ref.cross_entropy_and_grad(x, y, reduction="none", label_smoothing=0.1)
    assert_close(loss, rl, np.float64)
    assert_close(grad, rg, np.float64)


def test_1d_logits_reduction_none_accepts_0d_grad_output():
    x = np.array([0.3, 1.2, -1.0])
    _, g = xf.cross_entropy_and_grad(x, 1, reduction="none", grad_output=np.array(2.5))
    _, g1 = xf.cross_entropy_and_grad(x, 1, reduction="none")
    assert_close(g, 2.5 * g1, np.float64)


# ---------------------------------------------------------------- gradient formulas

def test_gradient_is_softmax_minus_onehot_for_index_targets(rng, dtype):
    x, t = _case(rng, (8, 5), dtype)
    _, g = xf.cross_entropy_and_grad(x, t, reduction="sum")
    assert_close(g, ref.softmax(x) - ref.one_hot(t, 5), dtype)


def test_gradient_is_softmax_minus_target_for_probability_targets(rng, dtype):
    x = (rng.standard_normal((8, 5)) * 2).astype(dtype)
    y = _probs(rng, (8, 5))
    _, g = xf.cross_entropy_and_grad(x, y, reduction="sum")
    assert_close(g, ref.softmax(x) - y, dtype)


def test_mean_gradient_is_sum_gradient_over_count(rng):
    x, t = _case(rng, (10, 4), np.float64, n_ignored=3)
    _, gs = xf.cross_entropy_and_grad(x, t, reduction="sum")
    _, gm = xf.cross_entropy_and_grad(x, t, reduction="mean")
    assert_close(gm, gs / 7, np.float64)


def test_grad_output_scales_gradient(rng):
    x, t = _case(rng, (6, 4), np.float64)
    for red in ["mean", "sum"]:
        _, g1 = xf.cross_entropy_and_grad(x, t, reduction=red)
        for go in [0.0, -3.5, np.float32(0.5), np.array(2.0)]:
            _, g = xf.cross_entropy_and_grad(x, t, reduction=red, grad_output=go)
            assert_close(g, float(go) * g1, np.float64)


def test_grad_output_array_scales_rows(rng):
    x, t = _case(rng, (2, 3, 4), np.float64)
    go = rng.standard_normal((2, 3))
    _, g1 = xf.cross_entropy_and_grad(x, t, reduction="none")
    _, g = xf.cross_entropy_and_grad(x, t, reduction="none", grad_output=go)
    assert_close(g, go[..., None] * g1, np.float64)
    _, gs = xf.cross_entropy_and_grad(x, t, reduction="none", grad_output=2.0)
    assert_close(gs, 2.0 * g1, np.float64)


def _fd_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


FD_OPTIONS = [
    dict(),
    dict(reduction="sum", weight=[0.5, 2.0, 1.0, 1.5]),
    dict(label_smoothing=0.3, weight=[0.5, 2.0, 1.0, 1.5], ignore_index=1),
    dict(z_loss=0.2, reduction="sum"),
    dict(softcap=1.5, z_loss=0.05, label_smoothing=0.1),
    dict(softcap=0.7, weight=[1.0, 0.2, 3.0, 1.0], reduction="none"),
]


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("opts", FD_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_gradient_matches_central_finite_differences(rng, opts, kind):
    x = rng.standard_normal((3, 4)) * 2
    if kind == "index":
        target = np.array([0, 1, 3])
        opts = dict(opts)
    else:
        target = _probs(rng, (3, 4))
        opts = {k: v for k, v in opts.items() if k != "ignore_index"}
    go = rng.standard_normal(3) if opts.get("reduction") == "none" else 1.3

    def f(z):
        loss = xf.cross_entropy(z, target, **opts)
        return float(np.sum(go * np.asarray(loss, dtype=np.float64)))

    _, g = xf.cross_entropy_and_grad(x, target, grad_output=go, **opts)
    np.testing.assert_allclose(g, _fd_grad(f, x), rtol=1e-6, atol=1e-8)


def test_reference_gradient_matches_finite_differences(rng):
    x = rng.standard_normal((3, 4)) * 2
    t = np.array([2, 0, 1])
    kw = dict(weight=np.array([0.5, 2.0, 1.0, 1.5]), label_smoothing=0.2, z_loss=0.1, softcap=2.0)
    _, g = ref.cross_entropy_and_grad(x, t, **kw)
    np.testing.assert_allclose(g, _fd_grad(lambda z: ref.cross_entropy(z, t, **kw), x), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- z_loss / softcap semantics

def test_z_loss_is_unweighted_and_keeps_mean_denominator():
    x = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [0.2, 0.1, 0.0]])
    t = np.array([0, 1, -100])
    w = np.array([2.0, 1.0, 1.0])
    z = 0.5
    lse = np.log(np.exp(x).sum(axis=1))
    nll = lse - x[np.arange(3), [0, 1, 0]]
    expected = (2.0 * nll[0] + z * lse[0] ** 2 + 1.0 * nll[1] + z * lse[1] ** 2) / 3.0
    loss = xf.cross_entropy(x, t, weight=w, z_loss=z)
    assert loss == pytest.approx(expected, rel=1e-12)
    none = xf.cross_entropy(x, t, weight=w, z_loss=z, reduction="none")
    np.testing.assert_allclose(none, [2 * nll[0] + z * lse[0] ** 2, nll[1] + z * lse[1] ** 2, 0.0], rtol=1e-12)


def test_z_loss_gradient_adds_two_z_lse_softmax(rng):
    x, t = _case(rng, (5, 6), np.float64)
    _, g0 = xf.cross_entropy_and_grad(x, t, reduction="sum")
    _, gz = xf.cross_entropy_and_grad(x, t, reduction="sum", z_loss=0.25)
    extra = 2 * 0.25 * ref.logsumexp(x)[:, None] * ref.softmax(x)
    assert_close(gz - g0, extra, np.float64, atol=1e-13)


def test_z_loss_with_probability_targets_counts_every_row(rng):
    x = rng.standard_normal((4, 3))
    y = _probs(rng, (4, 3))
    base = xf.cross_entropy(x, y)
    with_z = xf.cross_entropy(x, y, z_loss=0.3)
    assert with_z == pytest.approx(base + 0.3 * np.mean(ref.logsumexp(x) ** 2), rel=1e-12)


def test_z_loss_not_added_to_ignored_rows(rng):
    x, t = _case(rng, (5, 4), np.float64)
    t[:] = -100
    for red in ["mean", "sum"]:
        loss, g = xf.cross_entropy_and_grad(x, t, z_loss=0.5, reduction=red)
        assert loss == 0.0
        assert not g.any()
    loss = xf.cross_entropy(x, t, z_loss=0.5, reduction="none")
    np.testing.assert_array_equal(loss, np.zeros(5))


@pytest.mark.parametrize("kind", ["index", "probs"])
def test_softcap_equals_precapped_logits(rng, kind):
    s = 2.5
    x = rng.standard_normal((6, 5)) * 4
    target = rng.integers(0, 5, 6) if kind == "index" else _probs(rng, (6, 5))
    kw = dict(z_loss=0.01, label_smoothing=0.1, reduction="none")
    capped = s * np.tanh(x / s)
    l1, g1 = xf.cross_entropy_and_grad(x, target, softcap=s, **kw)
    l2, g2 = xf.cross_entropy_and_grad(capped, target, **kw)
    assert_close(l1, l2, np.float64)
    assert_close(g1, g2 * (1 - np.tanh(x / s) ** 2), np.float64)


def test_softcap_bounds_huge_logits():
    x = np.array([[1e30, -1e30, 0.0]])
    loss, g = xf.cross_entropy_and_grad(x, np.array([1]), softcap=3.0, reduction="sum")
    z = np.array([3.0, -3.0, 0.0])
    assert loss == pytest.approx(ref.logsumexp(z) + 3.0, rel=1e-12)
    # d softcap/dx is exactly 0 at +-1e30 and 1 at 0
    expected_g = (ref.softmax(z) - np.array([0.0, 1.0, 0.0])) * np.array([0.0, 0.0, 1.0])
    assert_close(g, expected_g[None], np.float64)


# ---------------------------------------------------------------- ignore_index / weights / smoothing

def test_ignored_rows_have_zero_loss_and_zero_gradient(rng, dtype):
    x, t = _case(rng, (8, 5), dtype)
    t[[0, 5]] = -100
    loss, g = xf.cross_entropy_and_grad(x, t, reduction="none", label_smoothing=0.2, z_loss=0.1)
    assert loss[0] == 0 and loss[5] == 0
    assert not g[0].any() and not g[5].any()
    assert (loss[[1, 2, 3, 4, 6, 7]] > 0).all()


@pytest.mark.parametrize("tdtype", [np.int8, np.int16, np.int32, np.int64])
def test_signed_targets_with_negative_ignore_index(rng, tdtype):
    x, t = _case(rng, (6, 4), np.float64)
    t[2] = -1
    l = xf.cross_entropy(x, t.astype(tdtype), ignore_index=-1, reduction="none")
    assert_close(l, ref.cross_entropy(x, t, ignore_index=-1, reduction="none"), np.float64)
    assert l[2] == 0


def test_uint8_targets_with_ignore_index_255(rng):
    x, t = _case(rng, (6, 4), np.float64)
    t8 = t.astype(np.uint8)
    t8[3] = 255
    loss, g = xf.cross_entropy_and_grad(x, t8, ignore_index=255)
    t64 = t.copy()
    t64[3] = 255
    rl, rg = ref.cross_entropy_and_grad(x, t64, ignore_index=255)
    assert_close(loss, rl, np.float64)
    assert_close(g, rg, np.float64)


def test_ignore_index_equal_to_a_valid_class_ignores_it(rng):
    x, t = _case(rng, (10, 3), np.float64)
    t[:4] = 0
    l = xf.cross_entropy(x, t, ignore_index=0, reduction="none")
    assert (l[t == 0] == 0).all()
    assert_close(xf.cross_entropy(x, t, ignore_index=0), ref.cross_entropy(x, t, ignore_index=0), np.float64)


def test_ignore_index_does_not_apply_to_probability_targets(rng):
    x = rng.standard_normal((4, 3))
    y = _probs(rng, (4, 3))
    assert xf.cross_entropy(x, y, ignore_index=0) == xf.cross_entropy(x, y)
    assert xf.cross_entropy(x, y, ignore_index=1, reduction="none")[0] > 0


def test_weighted_mean_divides_by_sum_of_target_weights():
    x = np.array([[0.0, 1.0], [2.0, 0.0], [0.5, 0.5]])
    t = np.array([0, 0, 1])
    w = np.array([3.0, 0.5])
    nll = ref.logsumexp(x) - x[np.arange(3), t]
    expected = (3 * nll[0] + 3 * nll[1] + 0.5 * nll[2]) / 6.5
    assert xf.cross_entropy(x, t, weight=w) == pytest.approx(expected, rel=1e-12)


def test_probability_target_mean_divides_by_rows_even_with_weight(rng):
    x = rng.standard_normal((5, 3))
    y = _probs(rng, (5, 3))
    w = np.array([0.2, 3.0, 1.0])
    s = xf.cross_entropy(x, y, weight=w, reduction="sum")
    m = xf.cross_entropy(x, y, weight=w, reduction="mean")
    assert m == pytest.approx(s / 5, rel=1e-12)


def test_label_smoothing_index_equals_onehot_probability_target_per_row(rng):
    x, t = _case(rng, (7, 5), np.float64)
    w = rng.uniform(0.5, 2, 5)
    kw = dict(weight=w, label_smoothing=0.3, reduction="none")
    li, gi = xf.cross_entropy_and_grad(x, t, **kw)
    lp, gp = xf.cross_entropy_and_grad(x, ref.one_hot(t, 5), **kw)
    assert_close(li, lp, np.float64)
    assert_close(gi, gp, np.float64)


def test_label_smoothing_one_is_allowed(rng):
    x, t = _case(rng, (4, 6), np.float64)
    l = xf.cross_entropy(x, t, label_smoothing=1.0, reduction="none")
    assert_close(l, -ref.log_softmax(x).sum(axis=1) / 6, np.float64)


# ---------------------------------------------------------------- empty / all ignored

@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("shape", [(0, 5), (2, 0, 3)], ids=str)
def test_empty_batch(dtype, kind, shape):
    x = np.zeros(shape, dtype=dtype)
    target = np.zeros(shape[:-1], dtype=np.int64) if kind == "index" else np.zeros(shape)
    cd = comp_dtype(dtype)
    for red in ["mean", "sum"]:
        loss, g = xf.cross_entropy_and_grad(x, target, reduction=red, z_loss=0.1)
        assert_scalar(loss, cd)
        assert loss == 0.0
        assert g.shape == shape and g.dtype == cd
    loss, g = xf.cross_entropy_and_grad(x, target, reduction="none")
    assert loss.shape == shape[:-1] and loss.dtype == cd and g.shape == shape


def test_mean_over_all_ignored_rows_is_zero_with_zero_gradient(dtype):
    x = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], dtype=dtype)
    t = np.array([-100, -100])
    loss, g = xf.cross_entropy_and_grad(x, t, weight=np.array([1.0, 2.0, 3.0]), label_smoothing=0.1)
    assert_scalar(loss, comp_dtype(dtype))
    assert loss == 0.0 and not np.isnan(loss)
    np.testing.assert_array_equal(g, np.zeros((2, 3)))


# ---------------------------------------------------------------- masked / extreme rows

def test_zero_probability_target_on_masked_logit_contributes_zero(dtype):
    # PyTorch gives nan here (0 * -inf): a documented difference.
    x = np.array([[0.0, -np.inf, 1.0], [2.0, 1.0, -np.inf]], dtype=dtype)
    y = np.array([[0.3, 0.0, 0.7], [1.0, 0.0, 0.0]])
    loss, g = xf.cross_entropy_and_grad(x, y, reduction="none")
    assert np.isfinite(loss).all() and np.isfinite(g).all()
    rl, rg = ref.cross_entropy_and_grad(x, y, reduction="none")
    assert_close(loss, rl, dtype)
    assert_close(g, rg, dtype)


def test_index_target_with_masked_classes(dtype):
    x = np.array([[0.0, -np.inf, 1.0, -np.inf], [-np.inf, 3.0, 2.0, 1.0]], dtype=dtype)
    t = np.array([2, 3])
    loss, g = xf.cross_entropy_and_grad(x, t, reduction="none")
    rl, rg = ref.cross_entropy_and_grad(x, t, reduction="none")
    assert_close(loss, rl, dtype)
    assert_close(g, rg, dtype)
    assert g[0, 1] == 0 and g[0, 3] == 0 and g[1, 0] == 0


def test_target_on_masked_logit_gives_infinite_loss(dtype):
    x = np.array([[0.0, -np.inf, 1.0], [0.0, 1.0, 2.0]], dtype=dtype)
    loss, g = xf.cross_entropy_and_grad(x, np.array([1, 0]), reduction="none")
    assert np.isposinf(loss[0])
    assert_close(loss[1], ref.cross_entropy(x[1:], np.array([0]), reduction="none")[0], dtype)
    assert_close(g, ref.cross_entropy_and_grad(x, np.array([1, 0]), reduction="none")[1], dtype)
    assert np.isposinf(xf.cross_entropy(x, np.array([1, 0])))


def test_label_smoothing_with_masked_class_gives_infinite_loss():
    # torch semantics: eps/C * sum_c -log p_c includes the masked class
    x = np.array([[0.0, -np.inf, 1.0]])
    assert np.isposinf(xf.cross_entropy(x, np.array([0]), label_smoothing=0.1))


def test_all_neg_inf_row_gives_nan_loss_other_rows_intact(dtype):
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, 1.0, 2.0]], dtype=dtype)
    loss = xf.cross_entropy(x, np.array([0, 1]), reduction="none")
    assert np.isnan(loss[0])
    assert_close(loss[1], ref.cross_entropy(x[1:], np.array([1]), reduction="none")[0], dtype)


def test_pos_inf_row_gives_nan_loss(dtype):
    x = np.array([[0.0, np.inf, 2.0], [0.0, 1.0, 2.0]], dtype=dtype)
    for t in (0, 1):
        loss = xf.cross_entropy(x, np.array([t, 1]), reduction="none")
        assert np.isnan(loss[0])
        assert np.isfinite(loss[1])


@pytest.mark.parametrize("kind", ["index", "probs"])
def test_nan_row_gives_nan_loss_and_gradient_other_rows_intact(rng, dtype, kind):
    x, t = _case(rng, (5, 4), dtype)
    x[1, 2] = np.nan
    target = t if kind == "index" else _probs(rng, (5, 4))
    loss, g = xf.cross_entropy_and_grad(x, target, reduction="none", z_loss=0.01)
    rl, rg = ref.cross_entropy_and_grad(x, target, reduction="none", z_loss=0.01)
    assert np.isnan(loss[1]) and np.isnan(g[1]).all()
    good = [0, 2, 3, 4]
    assert_close(loss[good], rl[good], dtype)
    assert_close(g[good], rg[good], dtype)
    for red in ["mean", "sum"]:
        lm, gm = xf.cross_entropy_and_grad(x, target, reduction=red)
        assert np.isnan(lm)
        assert np.isfinite(gm[good]).all()
        assert_close(gm[good], ref.cross_entropy_and_grad(x, target, reduction=red)[1][good], dtype)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_huge_finite_logits_loss_matches_reference(dt):
    big = float(np.finfo(dt).max) / 4
    x = np.array([[big, 0.0, -big], [big, big, 0.0], [-big, -big, -big]], dtype=dt)
    t = np.array([0, 2, 1])
    loss, g = xf.cross_entropy_and_grad(x, t, reduction="none")
    rl, rg = ref.cross_entropy_and_grad(x, t, reduction="none")
    assert np.isfinite(g).all()
    assert_close(loss, rl, dt)
    assert_close(g, rg, dt)


# ---------------------------------------------------------------- tiny-loss relative accuracy

def test_tiny_loss_keeps_relative_accuracy_float32():
    x = np.array([0.0, -50.0, -50.0], dtype=np.float32)
    exact = ref.mp_nll(x, 0)
    assert exact == pytest.approx(2 * np.exp(-50.0), rel=1e-12)  # ~3.86e-22; PyTorch gives 0
    loss = xf.cross_entropy(x, 0, reduction="none")
    assert loss > 0
    np.testing.assert_allclose(loss, exact, rtol=1e-5, atol=0)
    np.testing.assert_allclose(xf.cross_entropy(x[None], np.array([0])), exact, rtol=1e-5, atol=0)


def test_tiny_losses_keep_relative_accuracy_batch(dtype):
    rows = np.array([[0.0, -50.0, -50.0], [5.0, -20.0, -30.0], [1.0, -15.0, -14.0], [-3.0, -30.0, -25.0]])
    x = rows.astype(dtype)
    t = np.array([0, 0, 0, 0])
    loss = xf.cross_entropy(x, t, reduction="none")
    exact = [ref.mp_nll(r, 0) for r in x]
    np.testing.assert_allclose(loss, exact, rtol=1e-12 if dtype == np.float64 else 1e-5, atol=0)
    s = xf.cross_entropy(x, t, reduction="sum")
    np.testing.assert_allclose(s, sum(exact), rtol=1e-12 if dtype == np.float64 else 1e-5, atol=0)


def test_tiny_loss_float64_deep():
    x = np.array([[0.0, -700.0, -701.0], [10.0, -36.0, -40.0]])
    loss = xf.cross_entropy(x, np.array([0, 0]), reduction="none")
    exact = [ref.mp_nll(r, 0) for r in x]
    assert exact[0] > 0
    np.testing.assert_allclose(loss, exact, rtol=1e-12, atol=0)


# ---------------------------------------------------------------- grad_out / in place

@pytest.mark.parametrize("kind", ["index", "probs"])
def test_grad_out_is_filled_and_returned(rng, dtype, kind):
    x, t = _case(rng, (6, 5), dtype, n_ignored=1)
    target = t if kind == "index" else _probs(rng, (6, 5))
    go = np.full((6, 5), 99.0, dtype=comp_dtype(dtype))
    loss, g = xf.cross_entropy_and_grad(x, target, grad_out=go, weight=np.linspace(0.5, 2, 5))
    assert g is go
    rl, rg = ref.cross_entropy_and_grad(x, target, weight=np.linspace(0.5, 2, 5))
    assert_close(go, rg, dtype)
    assert_close(loss, rl, dtype)


OPTION_SETS = [
    dict(),
    dict(weight=[0.5, 1.0, 2.0, 1.5, 1.0], label_smoothing=0.1, reduction="sum"),
    dict(z_loss=0.1, softcap=2.0, reduction="none"),
    dict(ignore_index=3, label_smoothing=0.2, z_loss=1e-3),
]


@pytest.mark.parametrize("opts", OPTION_SETS, ids=lambda o: ",".join(o) or "default")
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_in_place_gradient_into_logits(rng, dt, kind, opts):
    x, t = _case(rng, (2, 3, 5), dt)
    t[0, 1] = 3
    target = t if kind == "index" else _probs(rng, (2, 3, 5))
    if kind == "probs":
        opts = {k: v for k, v in opts.items() if k != "ignore_index"}
    go = rng.standard_normal((2, 3)) if opts.get("reduction") == "none" else 0.7
    x0 = x.copy()
    rl, rg = ref.cross_entropy_and_grad(x0, target, grad_output=go, **opts)
    loss, g = xf.cross_entropy_and_grad(x, target, grad_output=go, grad_out=x, **opts)
    assert g is x
    assert np.shares_memory(g, x)
    assert_close(loss, rl, dt)
    assert_close(x, rg, dt)


def test_float16_logits_with_float32_grad_out(rng):
    x = (rng.standard_normal((4, 3))).astype(np.float16)
    t = np.array([0, 1, 2, 1])
    go = np.empty((4, 3), np.float32)
    loss, g = xf.cross_entropy_and_grad(x, t, grad_out=go)
    assert g is go
    assert_scalar(loss, np.float32)
    assert_close(go, ref.cross_entropy_and_grad(x, t)[1], np.float16)


# ---------------------------------------------------------------- dtypes

@pytest.mark.parametrize("kind", ["index", "probs"])
def test_result_dtypes(rng, dtype, kind):
    x = rng.standard_normal((3, 4)).astype(dtype)
    target = np.array([0, 3, 1]) if kind == "index" else _probs(rng, (3, 4)).astype(dtype)
    cd = comp_dtype(dtype)
    for red in ["mean", "sum"]:
        loss, g = xf.cross_entropy_and_grad(x, target, reduction=red)
        assert_scalar(loss, cd)
        assert_scalar(xf.cross_entropy(x, target, reduction=red), cd)
        assert g.dtype == cd
    loss, g = xf.cross_entropy_and_grad(x, target, reduction="none")
    assert loss.dtype == cd and g.dtype == cd


def test_float32_target_and_weight_with_float64_logits(rng):
    x = rng.standard_normal((5, 4))
    y = _probs(rng, (5, 4)).astype(np.float32)
    w = np.array([1.0, 2.0, 0.5, 1.5], dtype=np.float32)
    loss, g = xf.cross_entropy_and_grad(x, y, weight=w)
    assert_scalar(loss, np.float64)
    rl, rg = ref.cross_entropy_and_grad(x, y.astype(np.float64), weight=w.astype(np.float64))
    assert_close(loss, rl, np.float64)
    assert_close(g, rg, np.float64)


def test_cross_entropy_and_grad_loss_equals_cross_entropy(rng):
    x, t = _case(rng, (20, 7), np.float64, n_ignored=3)
    for kw in itertools.product(["mean", "sum"], [0.0, 0.1]):
        red, eps = kw
        a = xf.cross_entropy(x, t, reduction=red, label_smoothing=eps, z_loss=0.01)
        b, _ = xf.cross_entropy_and_grad(x, t, reduction=red, label_smoothing=eps, z_loss=0.01)
        assert_close(a, b, np.float64, rtol=1e-14, atol=0)


# ---------------------------------------------------------------- softcap keeps masks

@pytest.mark.parametrize("kind", ["index", "probs"])
def test_softcap_keeps_masked_classes_masked(kind):
    # cap * tanh(-inf / cap) would be -cap: a masked class would get probability again.
    x = np.array([[1.0, -np.inf, 2.0, 0.5], [-np.inf, 0.3, -1.0, 4.0]])
    keep = [[0, 2, 3], [1, 2, 3]]
    if kind == "index":
        t, t_kept = np.array([2, 3]), [np.array(1), np.array(2)]
    else:
        t = np.array([[0.2, 0.0, 0.5, 0.3], [0.0, 0.1, 0.1, 0.8]])
        t_kept = [t[i, keep[i]] for i in range(2)]
    loss, grad = xf.cross_entropy_and_grad(x, t, softcap=3.0, reduction="none")
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    for i in range(2):
        l_i, g_i = xf.cross_entropy_and_grad(x[i, keep[i]], t_kept[i], softcap=3.0, reduction="none")
        assert_close(loss[i], l_i, np.float64)
        assert_close(grad[i, keep[i]], g_i, np.float64)
    assert grad[0, 1] == 0 and grad[1, 0] == 0


@pytest.mark.parametrize("n_classes", [3, 40])     # the short-rows tiles, the row kernel
def test_weighted_mean_loss_and_gradient_share_one_denominator(n_classes):
    # Weights whose sum depends on the order of the additions: 1e16 + 1 - 1e16 is 0 row
    # by row and 1 in other orders. The loss and the gradient must divide by the same
    # sum (here 0: nan, as for any zero sum), not by two sums taken in two orders.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, n_classes))
    w = np.ones(n_classes)
    w[:3] = [1e16, 1.0, -1e16]
    t = np.array([0, 1, 2])
    loss, grad = xf.cross_entropy_and_grad(x, t, weight=w)
    assert np.isnan(loss) and np.isnan(xf.cross_entropy(x, t, weight=w))
    assert not np.isfinite(grad).all()


def test_weighted_mean_with_zero_weight_sum_is_nan_like_torch():
    x = np.random.default_rng(0).standard_normal((3, 4))
    t = np.array([0, 0, 0])
    w = np.array([0.0, 1.0, 1.0, 1.0])
    assert np.isnan(xf.cross_entropy(x, t, weight=w))
    assert np.isnan(xf.cross_entropy(x, t, weight=w, label_smoothing=0.1))


@pytest.mark.parametrize("n_classes", [5, 40])      # the short-rows tiles, the row kernel
@pytest.mark.parametrize("bad_rows", [[3], [20], [20, 3], [39, 17]])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_first_invalid_index_is_reported_in_every_tile(n_classes, bad_rows, reduction, weighted):
    # Full tiles of short rows are set up branch-free and done again row by row when they
    # hold an invalid index: whichever path, the first invalid row is the one named, and
    # a "mean" gradient (whose targets are checked first) leaves grad_out untouched.
    rng = np.random.default_rng(len(bad_rows))
    x, t = _case(rng, (40, n_classes), np.float32, n_ignored=6)
    for row, value in zip(bad_rows, [n_classes, -5]):
        t[row] = value
    w = rng.uniform(0.5, 2.0, n_classes) if weighted else None
    first = min(bad_rows)
    for call in (lambda: xf.cross_entropy(x, t, weight=w, reduction=reduction),
                 lambda: xf.cross_entropy_and_grad(x, t, weight=w, reduction=reduction,
                                                   grad_out=g)):
        g = np.zeros_like(x)
        with pytest.raises(ValueError, match=rf"target\[{first}\] = {t[first]} is not a valid"):
            call()
        assert reduction != "mean" or not g.any()


@pytest.mark.parametrize("n_rows", [16, 17, 48])
def test_short_rows_with_ignored_rows_in_full_tiles(n_rows):
    rng = np.random.default_rng(n_rows)
    x, t = _case(rng, (n_rows, 7), np.float64, n_ignored=5)
    for reduction in REDUCTIONS:
        loss, grad = xf.cross_entropy_and_grad(x, t, reduction=reduction)
        r_loss, r_grad = ref.cross_entropy_and_grad(x, t, reduction=reduction)
        assert_close(loss, r_loss, np.float64)
        assert_close(grad, r_grad, np.float64)


@pytest.mark.parametrize("n_classes", [16, 17, 100, 2048, 2049])
@pytest.mark.parametrize("n_rows", [1, 15, 16, 17, 40])
def test_rows_of_a_tile_equal_each_row_alone(rng, dtype, n_rows, n_classes):
    # Rows of 16 to 2048 classes are done XF_TILE (16) at a time, their tails together:
    # a row's loss and gradient must not depend on the rows around it, ignored, invalid
    # or irregular (NaN, all -inf) ones included, nor on where the tile starts.
    x = rng.normal(0, 4, (n_rows, n_classes)).astype(dtype)
    y = rng.integers(0, n_classes, n_rows)
    y[::5] = -100
    if n_rows > 2:
        x[1, 3] = np.nan
        x[2] = -np.inf
    w = rng.uniform(0.5, 2.0, n_classes).astype(dtype)
    for opts in ({}, {"weight": w, "z_loss": 1e-3}):
        loss, grad = xf.cross_entropy_and_grad(x, y, reduction="none", **opts)
        for i in range(n_rows):
            li, gi = xf.cross_entropy_and_grad(x[i:i + 1], y[i:i + 1], reduction="none", **opts)
            np.testing.assert_array_equal(loss[i:i + 1], li)
            np.testing.assert_array_equal(grad[i:i + 1], gi)
        if dtype == np.float16:     # computed in float32: no in-place gradient
            continue
        # and in place, the gradient written over the logits
        xc = x.copy()
        loss2, _ = xf.cross_entropy_and_grad(xc, y, reduction="none", grad_out=xc, **opts)
        np.testing.assert_array_equal(loss2, loss)
        np.testing.assert_array_equal(xc, grad)
