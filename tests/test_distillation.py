"""xf.distillation_loss(_and_grad) and the adapters' distillation_loss, against a float64
NumPy reference (and mpmath where float64 itself cancels), PyTorch's composite (TRL's
generalized_jsd_loss) and finite differences."""

import doctest
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import xent_fast as xf
import xent_fast._distill

BETAS = [0.0, 0.1, 0.5, 0.9, 1.0]


def _log_softmax(x):
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def reference(s, t, temperature=1.0, beta=0.0):
    """Per-row divergence in float64 (TRL's definitions, 0 log 0 = 0)."""
    a = _log_softmax(np.asarray(s, np.float64) / temperature)
    b = _log_softmax(np.asarray(t, np.float64) / temperature)

    def kl(lx, ly):
        x = np.exp(lx)
        with np.errstate(all="ignore"):
            return np.where(x > 0, x * (lx - ly), 0.0).sum(-1)

    if beta == 0:
        return kl(b, a)
    if beta == 1:
        return kl(a, b)
    lm = np.logaddexp(b + np.log(beta), a + np.log1p(-beta))
    return beta * kl(b, lm) + (1 - beta) * kl(a, lm)


def reference_grad(s, t, temperature=1.0, beta=0.0):
    """d(sum of row losses)/ds in float64, from the closed forms."""
    a = _log_softmax(np.asarray(s, np.float64) / temperature)
    b = _log_softmax(np.asarray(t, np.float64) / temperature)
    q, p = np.exp(a), np.exp(b)
    if beta == 0:
        return (q - p) / temperature
    lm = b if beta == 1 else np.logaddexp(b + np.log(beta), a + np.log1p(-beta))
    lq = np.where(q > 0, a - lm, 0.0)
    c = 1.0 if beta == 1 else 1.0 - beta
    return c * q * (lq - (q * lq).sum(-1, keepdims=True)) / temperature


def _pair(shape, dtype=np.float64, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    return ((rng.normal(size=shape) * scale).astype(dtype),
            (rng.normal(size=shape) * scale).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("temperature", [1.0, 0.5, 4.0])
@pytest.mark.parametrize("n", [1, 2, 7, 100, 4100])
def test_matches_float64_reference(dtype, beta, temperature, n):
    s, t = _pair((5, n), dtype)
    loss, grad = xf.distillation_loss_and_grad(s, t, beta=beta, temperature=temperature,
                                               reduction="sum")
    rs = (s / dtype(temperature)).astype(np.float64)   # divided in the dtype, as PyTorch
    rt = (t / dtype(temperature)).astype(np.float64)
    ref = reference(rs, rt, 1.0, beta)
    tol = 2e-6 if dtype == np.float32 else 1e-12
    assert loss.dtype == dtype
    assert abs(float(loss) - ref.sum()) <= tol * abs(ref.sum()) + (1e-6 if dtype == np.float32 else 1e-14)
    rows = xf.distillation_loss(s, t, beta=beta, temperature=temperature, reduction="none")
    np.testing.assert_allclose(rows, ref, rtol=tol, atol=1e-7 if dtype == np.float32 else 1e-15)
    ref_grad = reference_grad(rs, rt, 1.0, beta) / temperature
    # float32 rows are computed in float: an entry q (log(q/m) - sum q log(q/m)) whose two
    # logs nearly cancel keeps an absolute error of a few ulps of q / T (q up to 0.83 here)
    q_max = np.exp(rs - np.logaddexp.reduce(rs, axis=-1, keepdims=True)).max()
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4 if dtype == np.float32 else 1e-10,
                               atol=(1e-6 * q_max / temperature + 1e-7)
                               if dtype == np.float32 else 1e-15)


def _mp_divergence(s, t, beta):
    import mpmath
    mpmath.mp.dps = 50
    ls = [mpmath.mpf(float(v)) for v in s]
    lt = [mpmath.mpf(float(v)) for v in t]
    zs = mpmath.log(sum(mpmath.exp(v) for v in ls))
    zt = mpmath.log(sum(mpmath.exp(v) for v in lt))
    q = [mpmath.exp(v - zs) for v in ls]
    p = [mpmath.exp(v - zt) for v in lt]
    if beta == 0:
        return float(sum(pi * mpmath.log(pi / qi) for pi, qi in zip(p, q)))
    if beta == 1:
        return float(sum(qi * mpmath.log(qi / pi) for pi, qi in zip(p, q)))
    b = mpmath.mpf(beta)
    m = [b * pi + (1 - b) * qi for pi, qi in zip(p, q)]
    return float(sum(b * pi * mpmath.log(pi / mi) + (1 - b) * qi * mpmath.log(qi / mi)
                     for pi, qi, mi in zip(p, q, m)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("shift", [0.0, 3.0])
def test_near_agreement_keeps_relative_accuracy(dtype, beta, shift):
    # A row whose divergence is ~1e-12: the textbook sum p log p - p log q would
    # cancel to ~1e-16 absolute; the Bregman terms keep it to 1e-6 relative (issue 20).
    # beta 0.1 and 0.9 take the two sides of the float JSD loops; a shift of the
    # teacher's logits (the same softmax) makes the float log-ratios subtract the
    # log-sum-exps' difference, not just the logits'.
    rng = np.random.default_rng(3)
    s = (rng.normal(size=200) * 2).astype(dtype)
    t = (s.astype(np.float64) + shift + 1.4e-6 * rng.normal(size=200)).astype(dtype)
    exact = _mp_divergence(s, t, beta)
    assert 1e-14 < exact < 1e-10
    got = float(xf.distillation_loss(s, t, beta=beta))
    assert abs(got - exact) <= 1e-6 * exact


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("offset", [2.0**30, 2.0**45, 2.0**52])
def test_a_common_far_offset_changes_nothing(beta, offset):
    # Softmaxes do not see a shift of both rows; logits near 2**45 are still exact here
    # (integers), and the divergence and its gradient must not lose the log-sum-exps'
    # small parts to the offset's rounding.
    s = np.array([[0.0, 1.0, 2.0, 3.0], [5.0, -1.0, 0.0, 2.0]])
    t = np.array([[2.0, 0.0, 1.0, 1.0], [4.0, 0.0, -3.0, 2.0]])
    loss, grad = xf.distillation_loss_and_grad(s, t, beta=beta, reduction="none")
    far, far_grad = xf.distillation_loss_and_grad(s + offset, t + offset, beta=beta,
                                                  reduction="none")
    np.testing.assert_allclose(far, loss, rtol=1e-12)
    np.testing.assert_allclose(far_grad, grad, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("beta", BETAS)
def test_identical_rows_give_zero(beta):
    s, _ = _pair((3, 50))
    loss, grad = xf.distillation_loss_and_grad(s, s.copy(), beta=beta, reduction="none")
    assert np.all(np.abs(loss) <= 1e-30) and np.all(np.abs(grad) <= 1e-17)


@pytest.mark.parametrize("shape", [(0, 5), (5,), (2, 3, 7), (4, 1), (1,)])
def test_shapes(shape):
    s, t = _pair(shape)
    rows = xf.distillation_loss(s, t, reduction="none")
    assert np.shape(rows) == shape[:-1]
    np.testing.assert_allclose(rows, reference(s, t), rtol=1e-12, atol=1e-15)
    loss, grad = xf.distillation_loss_and_grad(s, t)
    assert grad.shape == shape
    expected = reference(s, t).mean() if s.size else 0.0
    assert np.isclose(float(loss), expected, rtol=1e-12, atol=1e-15)
    if shape[-1] == 1:
        assert np.all(rows == 0) and np.all(grad == 0)


def test_float16_computed_in_float32():
    s, t = _pair((3, 9), np.float16)
    loss, grad = xf.distillation_loss_and_grad(s, t)
    assert loss.dtype == np.float32 and grad.dtype == np.float32
    assert np.isclose(loss, reference(s, t).mean(), rtol=1e-5)


@pytest.mark.parametrize("beta", BETAS)
def test_ignore_index_and_mean(beta):
    s, t = _pair((6, 11))
    target = np.array([1, -100, 3, -100, 0, 10])
    keep = target != -100
    rows = xf.distillation_loss(s, t, beta=beta, target=target, reduction="none")
    ref = reference(s, t, 1.0, beta)
    np.testing.assert_allclose(rows, np.where(keep, ref, 0.0), rtol=1e-12, atol=1e-15)
    loss, grad = xf.distillation_loss_and_grad(s, t, beta=beta, target=target)
    assert np.isclose(float(loss), ref[keep].mean(), rtol=1e-12)
    g = reference_grad(s, t, 1.0, beta) / keep.sum()
    np.testing.assert_allclose(grad, np.where(keep[:, None], g, 0.0), rtol=1e-9, atol=1e-15)
    # every row ignored: 0, as the other losses here
    loss, grad = xf.distillation_loss_and_grad(s, t, target=np.full(6, -100))
    assert float(loss) == 0.0 and np.all(grad == 0)


def test_masked_classes():
    s = np.array([[0.0, 1.0, -np.inf, 2.0], [0.0, 1.0, -np.inf, 2.0], [1.0, -np.inf, 0.0, 0.5]])
    t = np.array([[0.5, -np.inf, -np.inf, 1.0], [0.0, 1.0, 3.0, 2.0], [-np.inf, 0.3, 0.2, 0.1]])
    for beta in BETAS:
        rows, grad = xf.distillation_loss_and_grad(s, t, beta=beta, reduction="none")
        ref = reference(s, t, 1.0, beta)
        np.testing.assert_allclose(rows, ref, rtol=1e-12)
        assert not np.isnan(rows).any()
        if beta == 0:
            # the teacher gives mass to a class the student masks: +inf (rows 1, 2)
            assert np.isinf(rows[1]) and np.isinf(rows[2]) and np.isfinite(rows[0])
            np.testing.assert_allclose(grad, reference_grad(s, t), atol=1e-15)
        if 0 < beta < 1:
            assert np.all(np.isfinite(rows))
            np.testing.assert_allclose(grad, reference_grad(s, t, 1.0, beta), rtol=1e-9,
                                       atol=1e-15)
        # a class masked in both contributes nothing, with a zero gradient
        assert grad[0, 2] == 0


def test_irregular_rows_give_nan():
    s, t = _pair((3, 5))
    s[0, 1] = np.nan
    t[1, :] = -np.inf
    rows, grad = xf.distillation_loss_and_grad(s, t, reduction="none")
    assert np.isnan(rows[:2]).all() and np.isfinite(rows[2])
    assert np.isnan(grad[:2]).all() and np.isfinite(grad[2]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(300, 1000), (24, 5000)])
@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_thread_counts_bitwise(beta, shape, dtype):
    s, t = _pair(shape, dtype, seed=5)
    results = [xf.distillation_loss_and_grad(s, t, beta=beta, n_threads=k)
               for k in (1, 2, 3, -1)]
    for loss, grad in results[1:]:
        assert loss.tobytes() == results[0][0].tobytes()
        assert grad.tobytes() == results[0][1].tobytes()


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("n", [255, 256, 257, 2047, 2048, 2049, 2303, 2305])
def test_float32_row_tails(beta, n):
    # The float sweeps work in chunks of 256 entries (XF_F32_CHUNK) within blocks of
    # 2048 (XF_BLOCK): rows ending just before, at and after those boundaries.
    s, t = _pair((3, n), np.float32, seed=n)
    loss, grad = xf.distillation_loss_and_grad(s, t, beta=beta, reduction="none")
    rs, rt = s.astype(np.float64), t.astype(np.float64)
    np.testing.assert_allclose(loss, reference(rs, rt, 1.0, beta), rtol=2e-6, atol=1e-7)
    q_max = np.exp(rs - np.logaddexp.reduce(rs, axis=-1, keepdims=True)).max()
    np.testing.assert_allclose(grad, reference_grad(rs, rt, 1.0, beta), rtol=1e-4,
                               atol=1e-6 * q_max + 1e-7)


@pytest.mark.parametrize("beta", BETAS + [1e-6, 1 - 1e-6])
def test_float32_masked_classes_and_far_logits(beta):
    # Float rows compute in float (xent_distill.h): a class masked in one row only, and
    # logits so far apart that the exp of their difference leaves float's range, must
    # get the float64 path's limits (the float JSD gave NaN and 0 there); and 1 - beta
    # must not come from a float beta.
    s = np.array([[0.0, 1.0, -np.inf, 2.0], [0.0, 1.0, -np.inf, 2.0], [1.0, -np.inf, 0.0, 0.5],
                  [0, -95, 3, 1], [0, 95, 3, 1], [0, 40, 0, 0], [0, -40, 0, 0]])
    t = np.array([[0.5, -np.inf, -np.inf, 1.0], [0.0, 1.0, 3.0, 2.0], [-np.inf, 0.3, 0.2, 0.1],
                  [0, 3, -95, 1], [0, 3, 1, 100], [0, 0, 0, 0], [0, 0, 0, 0]])
    r32, g32 = xf.distillation_loss_and_grad(s.astype(np.float32), t.astype(np.float32),
                                             beta=beta, reduction="none")
    r64, g64 = xf.distillation_loss_and_grad(s, t, beta=beta, reduction="none")
    np.testing.assert_allclose(r32, r64, rtol=1e-6)
    if 0 < beta < 1:
        np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("beta", BETAS)
def test_finite_differences(beta):
    s, t = _pair((2, 6), seed=7, scale=1.0)
    w = np.array([0.3, 1.7])
    _, grad = xf.distillation_loss_and_grad(s, t, beta=beta, temperature=1.5,
                                            reduction="none", grad_output=w)
    h = 1e-6
    num = np.zeros_like(s)
    for idx in np.ndindex(*s.shape):
        up, down = s.copy(), s.copy()
        up[idx] += h
        down[idx] -= h
        f = lambda x: float(np.dot(w, xf.distillation_loss(x, t, beta=beta, temperature=1.5,
                                                             reduction="none")))
        num[idx] = (f(up) - f(down)) / (2 * h)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-9)


def test_in_place_gradient():
    s, t = _pair((4, 3000), np.float32)
    for beta in BETAS:
        expected = xf.distillation_loss_and_grad(s, t, beta=beta)
        x = s.copy()
        loss, grad = xf.distillation_loss_and_grad(x, t, beta=beta, grad_out=x)
        assert grad is x
        assert loss == expected[0]
        np.testing.assert_array_equal(grad, expected[1])
    with pytest.raises(ValueError, match="grad_out overlaps teacher_logits"):
        xf.distillation_loss_and_grad(s, t, grad_out=t)


def test_bad_input_named():
    s, t = _pair((2, 4))
    with pytest.raises(ValueError, match="teacher_logits"):
        xf.distillation_loss(s, t[:, :3])
    with pytest.raises(TypeError, match="teacher_logits"):
        xf.distillation_loss(s, t.astype(int))
    with pytest.raises(TypeError, match="student_logits"):
        xf.distillation_loss(s.astype(int), t)
    with pytest.raises(ValueError, match="temperature"):
        xf.distillation_loss(s, t, temperature=0.0)
    with pytest.raises(ValueError, match="beta"):
        xf.distillation_loss(s, t, beta=1.5)
    with pytest.raises(ValueError, match="beta"):
        xf.distillation_loss(s, t, beta=math.nan)
    with pytest.raises(ValueError, match=r"target\[1\] = 4"):
        xf.distillation_loss(s, t, target=np.array([0, 4]))
    with pytest.raises(TypeError, match="target"):
        xf.distillation_loss(s, t, target=np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="reduction"):
        xf.distillation_loss(s, t, reduction="batchmean")
    with pytest.raises(ValueError, match="n_threads"):
        xf.distillation_loss(s, t, n_threads=0)
    with pytest.raises(ValueError, match="grad_output"):
        xf.distillation_loss_and_grad(s, t, grad_output=np.ones(3))


def test_docstring_examples():
    assert doctest.testmod(xent_fast._distill, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0


# --- PyTorch ---------------------------------------------------------------------------

def _trl(student, teacher, beta, temperature, labels=None):
    """TRL's GKDTrainer.generalized_jsd_loss, written out with torch ops (the oracle)."""
    import torch
    import torch.nn.functional as F
    ls = F.log_softmax(student / temperature, dim=-1)
    lt = F.log_softmax(teacher / temperature, dim=-1)
    if beta == 0:
        jsd = F.kl_div(ls, lt, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(lt, ls, reduction="none", log_target=True)
    else:
        b = torch.tensor(beta, dtype=ls.dtype)
        lm = torch.logsumexp(torch.stack([ls + torch.log1p(-b), lt + torch.log(b)]), dim=0)
        jsd = beta * F.kl_div(lm, lt, reduction="none", log_target=True) + (1 - beta) * F.kl_div(
            lm, ls, reduction="none", log_target=True)
    rows = jsd.sum(-1)
    if labels is not None:
        rows = rows[labels != -100]
    return rows.mean()


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_matches_trl_composite(beta, dtype):
    torch = pytest.importorskip("torch")
    from xent_fast.torch import distillation_loss
    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    s = (torch.randn(2, 5, 40, generator=gen, dtype=dt) * 2).requires_grad_()
    t = torch.randn(2, 5, 40, generator=gen, dtype=dt) * 2
    labels = torch.randint(0, 40, (2, 5), generator=gen)
    labels[0, 1] = labels[1, 3] = -100
    loss = distillation_loss(s, t, beta=beta, temperature=2.0, target=labels)
    (g,) = torch.autograd.grad(loss, s)
    s2 = s.detach().clone().requires_grad_()
    ref = _trl(s2, t, beta, 2.0, labels)
    (g2,) = torch.autograd.grad(ref, s2)
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == "float32" else dict(rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(loss, ref, **tol)
    torch.testing.assert_close(g, g2, **tol)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_torch_teacher_requiring_grad_gets_its_gradient(beta):
    torch = pytest.importorskip("torch")
    from xent_fast.torch import distillation_loss
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(3, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    gs, gt = torch.autograd.grad(distillation_loss(s, t, beta=beta), (s, t))
    rs, rt = torch.autograd.grad(_trl(s, t, beta, 1.0), (s, t))
    assert gt is not None
    torch.testing.assert_close(gs, rs)
    torch.testing.assert_close(gt, rt)


def test_torch_reductions_bfloat16_and_double_backward():
    torch = pytest.importorskip("torch")
    from xent_fast.torch import distillation_loss
    s = torch.randn(4, 6, dtype=torch.bfloat16, requires_grad=True)
    t = torch.randn(4, 6, dtype=torch.bfloat16)
    rows = distillation_loss(s, t, reduction="none")
    assert rows.shape == (4,) and rows.dtype == torch.bfloat16
    rows.sum().backward()
    assert s.grad.dtype == torch.bfloat16
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(distillation_loss(x, t.double()), x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(g.sum(), x)
    with pytest.raises(TypeError, match="teacher_logits"):
        distillation_loss(x, np.zeros((4, 6)))


def test_torch_speed_parity_smoke():
    # the adapter calls the kernel on the tensors' memory: the result is the NumPy one
    torch = pytest.importorskip("torch")
    from xent_fast.torch import distillation_loss
    s, t = _pair((8, 33), np.float32)
    loss = distillation_loss(torch.from_numpy(s), torch.from_numpy(t), beta=0.5)
    assert float(loss) == float(xf.distillation_loss(s, t, beta=0.5))


# --- JAX -------------------------------------------------------------------------------

@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_jax_jit_grad(beta):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    from xent_fast.jax import distillation_loss
    from xent_fast._jax_distill import _composite
    s, t = _pair((3, 4, 9), np.float32)
    f = jax.jit(lambda a, b: distillation_loss(a, b, beta=beta, temperature=2.0).mean())
    loss = f(s, t)
    np.testing.assert_allclose(loss, reference(s / np.float32(2), t / np.float32(2), 1.0,
                                               beta).mean(), rtol=1e-5)
    gs, gt = jax.jit(jax.grad(f, argnums=(0, 1)))(jnp.asarray(s), jnp.asarray(t))
    rs, rt = jax.grad(lambda a, b: _composite(a, b, 2.0, beta).mean(), argnums=(0, 1))(
        jnp.asarray(s), jnp.asarray(t))
    np.testing.assert_allclose(gs, rs, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(gt, rt, rtol=1e-4, atol=1e-7)
    v = jax.vmap(lambda a, b: distillation_loss(a, b, beta=beta))(s, t)
    assert v.shape == (3, 4)
    with pytest.raises(ValueError, match="teacher_logits"):
        distillation_loss(s, t[..., :3])


def _jax():
    """(jax, jax.numpy, xent_fast.jax), or the test is skipped without JAX."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    import xent_fast.jax as xfj
    return jax, jnp, xfj


def _distill_target():
    """The compiled handler's FFI target, or None (a build without it, or the JAX
    mechanism is not "ffi")."""
    _, _, xfj = _jax()
    return xfj._TARGETS.get("ffi", {}).get("distill") if xfj.mechanism() == "ffi" else None


def _use_mechanism(name, monkeypatch):
    _, _, xfj = _jax()
    if name == "ffi" and _distill_target() is None:
        pytest.skip("no compiled distillation handler registered")
    monkeypatch.setattr(xfj, "_MECHANISM", name)
    return name


@pytest.fixture(params=["ffi", "callback"])
def jax_mechanism(request, monkeypatch):
    """Each way distillation_loss reaches the kernel: the compiled FFI handler, and
    jax.pure_callback (what the "ctypes" and "callback" mechanisms use)."""
    return _use_mechanism(request.param, monkeypatch)


# every shape through the handler; pure_callback, the fallback, on one
JAX_CASES = [("ffi", s) for s in [(0, 5), (7,), (3, 4, 9), (5, 1), (2, 4100)]] + [
    ("callback", (3, 4, 9))]


@pytest.mark.parametrize("mechanism, shape", JAX_CASES,
                         ids=lambda v: v if isinstance(v, str) else "x".join(map(str, v)))
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jax_matches_reference_and_composite(dtype, beta, temperature, mechanism, shape,
                                             monkeypatch):
    _use_mechanism(mechanism, monkeypatch)
    jax, jnp, xfj = _jax()
    from xent_fast._jax_distill import _composite
    with jax.enable_x64(dtype == np.float64):
        s, t = _pair(shape, dtype, seed=11)
        w = np.linspace(0.5, 1.5, int(np.prod(shape[:-1]))).reshape(shape[:-1]).astype(dtype)
        kw = dict(beta=beta, temperature=temperature)
        loss = jax.jit(lambda a, b: xfj.distillation_loss(a, b, **kw))(s, t)
        assert loss.shape == shape[:-1] and loss.dtype == dtype
        rs = (s / dtype(temperature)).astype(np.float64)    # divided in the dtype
        rt = (t / dtype(temperature)).astype(np.float64)
        f32 = dtype == np.float32
        np.testing.assert_allclose(loss, reference(rs, rt, 1.0, beta),
                                   rtol=2e-6 if f32 else 1e-12, atol=1e-7 if f32 else 1e-15)

        def total(f):
            return jax.jit(jax.grad(lambda a, b: (f(a, b) * w).sum(), argnums=(0, 1)))
        gs, gt = total(lambda a, b: xfj.distillation_loss(a, b, **kw))(s, t)
        cs, ct = total(lambda a, b: _composite(a, b, temperature, beta))(s, t)
        assert gs.shape == gt.shape == shape and gs.dtype == gt.dtype == dtype
        want = reference_grad(rs, rt, 1.0, beta) / temperature * np.asarray(w)[..., None]
        np.testing.assert_allclose(gs, want, rtol=1e-4 if f32 else 1e-10,
                                   atol=1e-6 if f32 else 1e-14)
        np.testing.assert_allclose(gs, cs, rtol=1e-4 if f32 else 1e-10,
                                   atol=1e-6 if f32 else 1e-14)
        # the teacher's: the composite's own VJP
        np.testing.assert_allclose(gt, ct, rtol=1e-5 if f32 else 1e-12,
                                   atol=1e-7 if f32 else 1e-15)
        if shape[-1] == 1:
            assert np.all(np.asarray(loss) == 0) and np.all(np.asarray(gs) == 0)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_jax_vmap_flattens_batches_into_rows(beta, jax_mechanism):
    jax, jnp, xfj = _jax()
    s, t = _pair((4, 3, 9), np.float32, seed=2)

    def f(a, b):
        return xfj.distillation_loss(a, b, beta=beta, temperature=2.0)
    whole = f(s, t)
    np.testing.assert_array_equal(jax.jit(jax.vmap(f))(s, t), whole)
    np.testing.assert_array_equal(jax.vmap(jax.vmap(f))(s, t), whole)
    # a teacher shared by every example: broadcast, the same rows
    np.testing.assert_array_equal(jax.vmap(f, in_axes=(0, None))(s, t[0]), f(s, t[:1].repeat(4, 0)))
    # per-example gradients, under jit, against the batched gradient
    g = jax.jit(jax.vmap(jax.grad(lambda a, b: f(a, b).sum())))(s, t)
    np.testing.assert_allclose(g, jax.grad(lambda a: f(a, t).sum())(s), rtol=1e-6, atol=1e-8)


def test_jax_masked_classes(jax_mechanism):
    jax, jnp, xfj = _jax()
    with jax.enable_x64(True):
        s = np.array([[0.0, 1.0, -np.inf, 2.0], [0.0, 1.0, -np.inf, 2.0], [1.0, -np.inf, 0.0, 0.5]])
        t = np.array([[0.5, -np.inf, -np.inf, 1.0], [0.0, 1.0, 3.0, 2.0], [-np.inf, 0.3, 0.2, 0.1]])
        for beta in (0.0, 0.5, 1.0):
            rows = jax.jit(lambda a, b: xfj.distillation_loss(a, b, beta=beta))(s, t)
            np.testing.assert_allclose(rows, reference(s, t, 1.0, beta), rtol=1e-12)
            g = jax.jit(jax.grad(lambda a: xfj.distillation_loss(a, t, beta=beta).sum()))(s)
            if beta == 0:
                assert np.isinf(rows[1]) and np.isinf(rows[2]) and np.isfinite(rows[0])
            if beta < 1:    # reverse KL of row 0 is infinite: its gradient is not compared
                with np.errstate(invalid="ignore"):     # -inf - -inf, masked where used
                    want = reference_grad(s, t, 1.0, beta)
                np.testing.assert_allclose(g, want, rtol=1e-9, atol=1e-15)
            assert g[0, 2] == 0      # masked in both: no mass, no gradient


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_jax_teacher_cotangent(beta, jax_mechanism):
    jax, jnp, xfj = _jax()
    from xent_fast._jax_distill import _composite
    with jax.enable_x64(True):
        s, t = _pair((3, 7), seed=4)
        w = np.array([0.5, 1.0, 2.0])
        gt = jax.jit(jax.grad(lambda b: (xfj.distillation_loss(s, b, beta=beta,
                                                                temperature=1.5) * w).sum()))(t)
        ct = jax.grad(lambda b: (_composite(s, b, 1.5, beta) * w).sum())(t)
        np.testing.assert_allclose(gt, ct, rtol=1e-12, atol=1e-15)
        eps = 1e-6                   # and against finite differences of our own loss
        d = np.zeros_like(t)
        d[1, 2] = eps
        fd = ((xfj.distillation_loss(s, t + d, beta=beta, temperature=1.5)
               - xfj.distillation_loss(s, t - d, beta=beta, temperature=1.5)) * w).sum() / (2 * eps)
        assert abs(float(fd) - float(gt[1, 2])) <= 1e-7


def test_jax_teacher_cotangent_with_masked_classes(jax_mechanism):
    # A class masked on both sides, and one masked by the teacher alone: the teacher's
    # gradient is finite, 0 at the classes it masks, and matches finite differences.
    jax, jnp, xfj = _jax()
    with jax.enable_x64(True):
        s = np.array([[0.0, -np.inf, 1.0, 2.0]])
        t = np.array([[0.5, -np.inf, 1.0, 0.0]])
        for beta in (0.0, 0.5, 1.0):
            gt = np.asarray(jax.grad(lambda b: xfj.distillation_loss(s, b, beta=beta).sum())(t))
            assert np.isfinite(gt).all() and gt[0, 1] == 0
            eps = 1e-6
            for j in (0, 2, 3):
                d = np.zeros_like(t)
                d[0, j] = eps
                fd = (xfj.distillation_loss(s, t + d, beta=beta)
                      - xfj.distillation_loss(s, t - d, beta=beta)).sum() / (2 * eps)
                assert abs(float(fd) - gt[0, j]) <= 1e-7


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_jax_second_derivatives(beta, jax_mechanism):
    # The kernel's gradient is differentiated as the composite's: hessians in student
    # and teacher and a gradient of a gradient norm agree with plain JAX's.
    jax, jnp, xfj = _jax()
    from xent_fast._jax_distill import _composite
    with jax.enable_x64(True):
        s, t = _pair((3, 5), seed=7)
        w = np.array([0.5, 1.0, 2.0])

        def ours(a, b):
            return (xfj.distillation_loss(a, b, beta=beta, temperature=1.5) * w).sum()

        def plain(a, b):
            return (_composite(a, b, 1.5, beta) * w).sum()
        for got, want in zip(jax.tree.leaves(jax.hessian(ours, argnums=(0, 1))(s, t)),
                             jax.tree.leaves(jax.hessian(plain, argnums=(0, 1))(s, t))):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)

        def norm(f):
            return jax.grad(lambda a: jnp.sum(jax.grad(f)(a, t) ** 2))(s)
        np.testing.assert_allclose(jax.jit(lambda: norm(ours))(), norm(plain), rtol=1e-10,
                                   atol=1e-13)


def test_jax_runs_no_python_per_call():
    jax, jnp, xfj = _jax()
    target = _distill_target()
    if target is None:
        pytest.skip("no compiled distillation handler registered")
    s, t = _pair((8, 5), np.float32)
    step = jax.jit(jax.value_and_grad(lambda a: xfj.distillation_loss(a, t, beta=0.5).mean()))
    jaxpr = str(jax.make_jaxpr(step)(s))
    assert "pure_callback" not in jaxpr and "ffi_call" in jaxpr
    hlo = step.lower(s).compile().as_text()
    assert hlo.count("custom_call_target=") == 1 and hlo.count(target) == 1   # one fused call
    # the value alone asks the kernel for the losses only
    loss_only = jax.jit(lambda a: xfj.distillation_loss(a, t)).lower(s).compile().as_text()
    calls = [line for line in loss_only.splitlines() if target in line]
    assert len(calls) == 1 and "f32[8,5]" not in calls[0].split("custom-call(")[0]
    np.testing.assert_allclose(step(s)[0], reference(s, t, 1.0, 0.5).mean(), rtol=1e-5)


@pytest.mark.parametrize("policy", [dict(parallel_from=0), dict(parallel_from=0, helpers=0),
                                    dict(parallel_from=0, use_openmp=True), dict()], ids=str)
def test_jax_threads_give_the_numpy_kernel_bits(policy):
    # every row computed by the same kernel as xf.distillation_loss_and_grad, whichever
    # thread runs it: bitwise equal
    jax, jnp, xfj = _jax()
    if _distill_target() is None:
        pytest.skip("no compiled distillation handler registered")
    from xent_fast._simd import kernels
    module = kernels("_xla_distill")
    default = module.configure()
    s, t = _pair((300, 4000), np.float32, seed=6)     # past the default parallel_from
    try:
        module.configure(**policy)
        for beta in (0.0, 0.5):
            loss, grad = jax.jit(jax.vmap(jax.value_and_grad(
                lambda a, b: xfj.distillation_loss(a, b, beta=beta))))(s, t)
            want, want_grad = xf.distillation_loss_and_grad(s, t, beta=beta, reduction="none",
                                                            grad_output=np.ones(300, np.float32))
            assert np.asarray(loss).tobytes() == want.tobytes()
            assert np.asarray(grad).tobytes() == want_grad.tobytes()
    finally:
        module.configure(*default)


def test_jax_handler_checks_every_buffer():
    jax, jnp, xfj = _jax()
    target = _distill_target()
    if target is None:
        pytest.skip("no compiled distillation handler registered")

    def call(args, outs, **attrs):
        attrs = {"temperature": np.float64(1.0), "beta": np.float64(0.0), **attrs}
        attrs = {k: v for k, v in attrs.items() if v is not None}
        outs = tuple(jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in outs)
        return jax.block_until_ready(jax.ffi.ffi_call(target, outs)(*args, **attrs))

    with jax.enable_x64(True):
        x = np.zeros((2, 3), np.float32)
        rows, full = ((2,), np.float32), ((2, 3), np.float32)
        bad = [
            ((x,), (rows,), {}, "number of buffers"),
            ((x, x, x), (rows,), {}, "number of buffers"),
            ((x, x), (rows, full, rows), {}, "number of buffers"),
            ((x, x.astype(np.float64)), (rows,), {}, "teacher logits"),
            ((x, x[:, :2]), (rows,), {}, "teacher logits"),
            ((x.astype(np.int32), x.astype(np.int32)), (rows,), {}, "student logits"),
            ((np.zeros((), np.float32),) * 2, (((), np.float32),), {}, "student logits"),
            ((x, x), (((2,), np.float64),), {}, "a result of a type"),
            ((x, x), (((3,), np.float32),), {}, "results of shapes"),
            ((x, x), (rows, rows), {}, "results of shapes"),
            ((np.zeros((2, 0), np.float32),) * 2, (rows,), {}, "without classes"),
            ((x, x), (rows,), dict(beta=None), "attributes"),
            ((x, x), (rows,), dict(beta=np.float32(0.5)), "attributes"),
            ((x, x), (rows,), dict(gamma=np.float64(0.5)), "attributes"),
            ((x, x), (rows,), dict(temperature=np.float64(0.0)), "temperature"),
            ((x, x), (rows,), dict(temperature=np.float64(np.inf)), "temperature"),
            ((x, x), (rows,), dict(beta=np.float64(1.5)), "beta"),
            ((x, x), (rows,), dict(beta=np.float64(np.nan)), "beta"),
        ]
        for args, outs, attrs, match in bad:
            with pytest.raises(Exception, match=match):
                call(args, outs, **attrs)
        # an empty batch, with or without classes, is a valid call that computes nothing
        e = np.zeros((0, 0), np.float32)
        assert call((e, e), (((0,), np.float32), ((0, 0), np.float32)))[1].shape == (0, 0)
        # the gradient alone, and a 1-D student (a 0-d loss)
        g = call((x, x), (full,))[0]
        assert np.all(np.asarray(g) == 0)
        assert call((x[0], x[0]), (((), np.float32),))[0] == 0


_OUT_OF_MEMORY = """
import resource
import numpy as np
import jax, jax.numpy as jnp
import xent_fast.jax as xfj

n = 1 << 26     # a row of 256 MiB: a worker's 4 scratch rows take 1 GiB
s = jnp.asarray(np.zeros((1, n), np.float32))       # zero pages: nothing is touched
f = jax.jit(lambda a, b: jax.ffi.ffi_call(
    xfj._TARGETS["ffi"]["distill"], (jax.ShapeDtypeStruct((1,), jnp.float32),))(
    a, b, temperature=np.float64(1.0), beta=np.float64(0.0)))
call = f.lower(s, s).compile()
with open("/proc/self/status") as status:
    vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
# room for copies of both inputs, not for the scratch rows
resource.setrlimit(resource.RLIMIT_AS, (vm + (700 << 20), resource.RLIM_INFINITY))
try:
    jax.block_until_ready(call(s, s))
    print("no error")
except Exception as exc:
    print(type(exc).__name__, exc)
resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print("after:", float(call(s, s)[0][0]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is Linux's")
@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's allocator aborts where malloc returns NULL")
def test_jax_handler_out_of_memory_is_an_xla_error(tmp_path):
    # the scratch rows cannot be allocated: the call fails with an XLA error and the
    # process goes on (the same call succeeds once memory is there)
    if _distill_target() is None:
        pytest.skip("no compiled distillation handler registered")
    home = os.path.dirname(os.path.dirname(os.path.abspath(xf.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [home] + [p for p in [os.environ.get("PYTHONPATH")] if p]), JAX_PLATFORMS="cpu")
    # from an empty directory: "python -c" puts the working directory first on sys.path,
    # and from a checkout's root that is the unbuilt source tree
    res = subprocess.run([sys.executable, "-c", _OUT_OF_MEMORY], env=env, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "RESOURCE_EXHAUSTED: out of memory" in res.stdout, res.stdout + res.stderr[-2000:]
    assert "after: 0.0" in res.stdout


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_torch_compile_fullgraph(beta):
    # the kernel is a torch.library custom op with a fake implementation: no graph break
    torch = pytest.importorskip("torch")
    from xent_fast.torch import distillation_loss
    gen = torch.Generator().manual_seed(2)
    s = torch.randn(2, 3, 17, generator=gen)
    t = torch.randn(2, 3, 17, generator=gen)
    labels = torch.tensor([[1, -100, 2], [0, 4, -100]])

    def f(x, y, lab):
        return 2.0 * distillation_loss(x, y, beta=beta, temperature=2.0, target=lab)

    torch._dynamo.reset()
    results = []
    for fn in (torch.compile(f, fullgraph=True, backend="aot_eager"), f):
        x = s.clone().requires_grad_()
        loss = fn(x, t, labels)
        loss.backward()
        results.append((loss.detach(), x.grad))
    torch.testing.assert_close(results[0], results[1])
    rows = torch.compile(lambda x, y: distillation_loss(x, y, beta=beta, reduction="none"),
                         fullgraph=True, backend="aot_eager")(s, t)
    torch.testing.assert_close(rows, distillation_loss(s, t, beta=beta, reduction="none"))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_torch_func_grad_and_vmap(beta, reduction):
    torch = pytest.importorskip("torch")
    from torch.func import grad, vmap
    from xent_fast.torch import distillation_loss
    gen = torch.Generator().manual_seed(3)
    s = torch.randn(4, 3, 9, generator=gen, dtype=torch.float64)
    t = torch.randn(4, 3, 9, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 9, (4, 3), generator=gen)
    labels[1] = -100                  # one sample counts nothing: its mean is 0
    labels[2, 0] = -100

    def f(x, y, lab):
        return distillation_loss(x, y, beta=beta, target=lab, reduction=reduction).sum()

    def ref(x, y, lab):
        return _trl_rows(x, y, beta, lab, reduction).sum()

    torch.testing.assert_close(grad(f)(s[0], t[0], labels[0]), grad(ref)(s[0], t[0], labels[0]))
    # per-sample gradients, and a teacher shared by every sample (in_dims None)
    torch.testing.assert_close(vmap(grad(f))(s, t, labels), vmap(grad(ref))(s, t, labels))
    torch.testing.assert_close(vmap(grad(f), in_dims=(0, None, 0))(s, t[0], labels),
                               vmap(grad(ref), in_dims=(0, None, 0))(s, t[0], labels))
    torch.testing.assert_close(vmap(f)(s, t, labels), vmap(ref)(s, t, labels))


def _trl_rows(s, t, beta, labels, reduction):
    import torch
    import torch.nn.functional as F
    ls, lt = F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1)
    if beta == 0:
        rows = (lt.exp() * (lt - ls)).sum(-1)
    else:
        lm = torch.logaddexp(ls + math.log1p(-beta), lt + math.log(beta))
        rows = (beta * lt.exp() * (lt - lm) + (1 - beta) * ls.exp() * (ls - lm)).sum(-1)
    keep = labels != -100
    rows = torch.where(keep, rows, torch.zeros_like(rows))
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    n = keep.sum()
    return torch.where(n > 0, rows.sum() / n.clamp(min=1), rows.sum() * 0)


# --- PyTorch: hostile inputs (each once silently accepted, wrong or an internal error) ---

@pytest.mark.parametrize("dtype", ["int64", "bool", "complex64", "float8_e4m3fn"])
@pytest.mark.parametrize("which", ["student_logits", "teacher_logits"])
def test_torch_rejects_non_float_dtypes(dtype, which):
    # an int64 student once gave an int64 loss of 0, a complex one a complex loss
    torch = pytest.importorskip("torch")
    from xent_fast.torch import distillation_loss
    x, y = torch.randn(3, 5), torch.randn(3, 5)
    bad = (x if which == "student_logits" else y).to(getattr(torch, dtype))
    args = (bad, y) if which == "student_logits" else (x, bad)
    with pytest.raises(TypeError, match=which) as info:
        distillation_loss(*args)
    assert isinstance(info.value, NotImplementedError)     # PyTorch's class for a dtype
    f = torch.compile(lambda a, b: distillation_loss(a, b), fullgraph=True, backend="eager")
    with pytest.raises((TypeError, RuntimeError), match=which):
        f(*args)


def test_torch_mistakes_raise_pytorchs_classes_and_check_options_when_compiled():
    torch = pytest.importorskip("torch")
    from xent_fast.torch import distillation_loss
    x, y = torch.randn(3, 5), torch.randn(3, 5)
    with pytest.raises(RuntimeError, match="teacher_logits"):
        distillation_loss(x, y[:, :4])
    with pytest.raises(IndexError, match=r"target\[1\] = 7"):
        distillation_loss(x, y, target=torch.tensor([0, 7, 1]))
    with pytest.raises(IndexError, match=r"target\[1\] = 7"):   # the composite path too
        distillation_loss(x, y.requires_grad_(), target=torch.tensor([0, 7, 1]))
    y = y.detach()
    # while compiling the options were converted with float()/int() unchecked
    for bad in (dict(temperature=True), dict(temperature="2"), dict(ignore_index=-100.5),
                dict(beta=np.True_)):
        torch._dynamo.reset()
        f = torch.compile(lambda a, b: distillation_loss(a, b, **bad), fullgraph=True,
                          backend="eager")
        with pytest.raises((TypeError, RuntimeError), match=next(iter(bad))):
            f(x, y)
    t = torch.tensor(2.0, requires_grad=True)   # not differentiated: never a silent None
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(x.requires_grad_(), y, temperature=t)


def test_torch_negated_views():
    # .numpy() refuses a tensor with the negative bit: an internal RuntimeError before
    torch = pytest.importorskip("torch")
    from xent_fast.torch import distillation_loss
    x, y = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    assert distillation_loss(torch._neg_view(x), y) == distillation_loss(-x, y)
    assert distillation_loss(x, torch._neg_view(y)) == distillation_loss(x, -y)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_torch_teacher_requiring_grad_masked_classes_and_ignored_rows(beta):
    # the composite gave nan (0 * inf) for a class both mask, nan gradients for an
    # ignored row holding a NaN, and computed bfloat16 in bfloat16
    torch = pytest.importorskip("torch")
    from xent_fast.torch import distillation_loss
    gen = torch.Generator().manual_seed(4)
    s = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    t = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    s[:, 0] = t[:, 0] = -math.inf
    s[2, 3] = math.nan
    labels = torch.tensor([1, 2, -100, 0])
    x, y = s.clone().requires_grad_(), t.clone().requires_grad_()
    loss = distillation_loss(x, y, beta=beta, target=labels)
    gx, gy = torch.autograd.grad(loss, (x, y))
    x2 = s.clone().requires_grad_()
    kernel = distillation_loss(x2, t, beta=beta, target=labels)
    (kx,) = torch.autograd.grad(kernel, x2)
    torch.testing.assert_close(loss, kernel.detach())
    torch.testing.assert_close(gx, kx)
    # the masked class out: the same loss, the teacher's gradient of the rest
    keep = labels != -100
    xs, ys = s[keep, 1:].clone().requires_grad_(), t[keep, 1:].clone().requires_grad_()
    (ry,) = torch.autograd.grad(_trl(xs, ys, beta, 1.0), ys)
    assert (gy[:, 0] == 0).all() and (gy[2] == 0).all() and (gx[2] == 0).all()
    torch.testing.assert_close(gy[keep, 1:], ry)
    b16 = distillation_loss(s.bfloat16(), t.bfloat16().requires_grad_(), beta=beta,
                            target=labels)
    assert b16.dtype == torch.bfloat16
    assert b16 == distillation_loss(s.bfloat16(), t.bfloat16(), beta=beta, target=labels)


def test_torch_autocast_gives_pytorchs_loss_dtype():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from xent_fast.torch import distillation_loss
    s = torch.randn(4, 6).bfloat16().requires_grad_()
    t = torch.randn(4, 6).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="none",
                       log_target=True).sum(-1).mean()
        loss = distillation_loss(s, t)
        composite = distillation_loss(s, t.clone().requires_grad_())
        compiled = torch.compile(lambda a, b: distillation_loss(a, b), fullgraph=True,
                                 backend="eager")(s, t)
    assert loss.dtype == composite.dtype == compiled.dtype == ref.dtype == torch.float32
    loss.backward()
    assert s.grad.dtype == torch.bfloat16


def test_torch_compile_func_and_nested_vmap_with_a_teacher_requiring_grad():
    # int(mask.sum()) broke the graph; the argument check read the tensors through NumPy,
    # which torch.func's wrapped tensors have not; an inner vmap called the kernel on
    # tensors still batched by the outer one
    torch = pytest.importorskip("torch")
    from torch.func import grad, vmap
    from xent_fast.torch import distillation_loss
    gen = torch.Generator().manual_seed(5)
    s = torch.randn(2, 3, 4, 7, generator=gen, dtype=torch.float64)
    t = torch.randn(2, 3, 4, 7, generator=gen, dtype=torch.float64)
    labels = torch.tensor([1, -100, 2, 0])
    x, y = s[0, 0].clone().requires_grad_(), t[0, 0].clone().requires_grad_()
    f = torch.compile(lambda a, b: distillation_loss(a, b, beta=0.5, target=labels),
                      fullgraph=True, backend="aot_eager")
    loss = f(x, y)
    gx, gy = torch.autograd.grad(loss, (x, y))
    x2, y2 = s[0, 0].clone().requires_grad_(), t[0, 0].clone().requires_grad_()
    ref = distillation_loss(x2, y2, beta=0.5, target=labels)
    torch.testing.assert_close((loss, gx, gy), (ref, *torch.autograd.grad(ref, (x2, y2))))

    def ref_rows(a, b):
        return _trl_rows(a, b, 0.0, torch.zeros(a.shape[:-1], dtype=torch.long), "mean")

    def ours(a, b):
        return distillation_loss(a, b)

    torch.testing.assert_close(grad(ours, argnums=1)(s[0, 0], t[0, 0]),
                               grad(ref_rows, argnums=1)(s[0, 0], t[0, 0]))
    torch.testing.assert_close(vmap(grad(ours, argnums=(0, 1)))(s[0], t[0]),
                               vmap(grad(ref_rows, argnums=(0, 1)))(s[0], t[0]))
    torch.testing.assert_close(vmap(vmap(ours))(s, t), vmap(vmap(ref_rows))(s, t))


def test_a_temperature_that_rounds_to_zero_in_float32_is_refused():
    # the kernel divided float32 logits by float32(1e-50) = 0: every row NaN
    s, t = _pair((2, 4), np.float32)
    with pytest.raises(ValueError, match="temperature"):
        xf.distillation_loss(s, t, temperature=1e-50)
    with pytest.raises(ValueError, match="temperature"):
        xf.distillation_loss_and_grad(s.astype(np.float16), t, temperature=1e-46)
    loss = xf.distillation_loss(s.astype(np.float64), t, temperature=1e-50)
    assert np.isfinite(loss)            # float64 holds it: a huge but finite divergence
