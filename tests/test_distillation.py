"""xf.distillation_loss(_and_grad) and the adapters' distillation_loss, against a float64
NumPy reference (and mpmath where float64 itself cancels), PyTorch's composite (TRL's
generalized_jsd_loss) and finite differences."""

import doctest
import math

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
