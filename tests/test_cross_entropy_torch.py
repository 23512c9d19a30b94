"""xent_fast against PyTorch (optional oracle: skipped when torch is not installed)."""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import xent_fast as xf  # noqa: E402
import reference as ref  # noqa: E402
from helpers import assert_close, comp_dtype  # noqa: E402

REDUCTIONS = ["mean", "sum", "none"]


def torch_ce_and_grad(x, target, *, weight=None, ignore_index=-100, reduction="mean",
                      label_smoothing=0.0, z_loss=0.0, softcap=None, grad_output=1.0):
    """float64 torch autograd of a hand-written expression (z_loss/softcap added by hand).

    x: (..., C) numpy; classes moved to dim 1 for torch, as a (B, T, C) model would do.
    """
    xt = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    C = xt.shape[-1]
    z = softcap * torch.tanh(xt / softcap) if softcap is not None else xt
    tt = torch.as_tensor(np.asarray(target))
    is_index = not torch.is_floating_point(tt)
    if is_index:
        tt = tt.to(torch.int64)
    else:
        tt = tt.to(torch.float64)
    wt = None if weight is None else torch.tensor(np.asarray(weight, dtype=np.float64))
    if z.dim() == 1:
        zin, tin = z[None], tt[None]
    else:
        # (N, d1, ..., C) -> (N, C, d1, ...)
        zin = torch.movedim(z, -1, 1)
        tin = tt if is_index else torch.movedim(tt, -1, 1)
    kw = dict(weight=wt, label_smoothing=label_smoothing, reduction="none")
    if is_index:
        kw["ignore_index"] = ignore_index
    per = F.cross_entropy(zin, tin, **kw)
    if z.dim() == 1:
        per = per[0]
    counted = (tt != ignore_index) if is_index else torch.ones(per.shape, dtype=torch.bool)
    lse = torch.logsumexp(z, dim=-1)
    per = per + torch.where(counted, z_loss * lse**2, torch.zeros_like(lse))
    if reduction == "none":
        loss = per
    elif reduction == "sum":
        loss = per.sum()
    else:
        if is_index:
            w = torch.ones(C, dtype=torch.float64) if wt is None else wt
            denom = w[tt.clamp(0, C - 1)][counted].sum()
        else:
            denom = float(per.numel())
        loss = per.sum() / denom
    go = torch.as_tensor(np.asarray(grad_output, dtype=np.float64))
    (loss * go).sum().backward()
    return loss.detach().numpy(), xt.grad.numpy()


def _setup(seed, shape, dtype):
    rng = np.random.default_rng(seed)
    C = shape[-1]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    t = rng.integers(0, C, size=shape[:-1])
    t.reshape(-1)[:2] = 2
    y = rng.dirichlet(np.ones(C), size=shape[:-1])
    w = rng.uniform(0.3, 2.5, C)
    return rng, x, t, y, w


def _go(rng, reduction, batch):
    return rng.standard_normal(batch) if reduction == "none" else 1.7


# ---------------------------------------------------------------- the oracle itself

@pytest.mark.parametrize("combo", list(itertools.product([False, True], [-100, 2], [0.0, 0.1], REDUCTIONS)),
                         ids=lambda c: f"wt{int(c[0])}-ii{c[1]}-ls{c[2]}-{c[3]}")
def test_reference_matches_torch_index_targets(combo):
    weighted, ii, eps, red = combo
    rng, x, t, _, w = _setup(1, (9, 5), np.float64)
    kw = dict(weight=w if weighted else None, ignore_index=ii, label_smoothing=eps, reduction=red)
    go = _go(rng, red, (9,))
    tl, tg = torch_ce_and_grad(x, t, grad_output=go, **kw)
    # the hand-written torch expression without extras equals plain F.cross_entropy
    xt = torch.tensor(x, requires_grad=True)
    plain = F.cross_entropy(xt, torch.tensor(t), weight=None if kw["weight"] is None else torch.tensor(w),
                            ignore_index=ii, label_smoothing=eps, reduction=red)
    np.testing.assert_allclose(tl, plain.detach().numpy(), rtol=1e-13, atol=1e-15)
    rl, rg = ref.cross_entropy_and_grad(x, t, grad_output=go, **kw)
    np.testing.assert_allclose(rl, tl, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(rg, tg, rtol=1e-12, atol=1e-14)


def test_reference_matches_torch_probability_targets_and_extras():
    rng, x, t, y, w = _setup(2, (3, 4, 6), np.float64)
    for target, zl, sc in [(t, 0.01, None), (y, 0.01, None), (t, 0.0, 2.0), (y, 0.1, 1.5)]:
        kw = dict(weight=w, label_smoothing=0.1, z_loss=zl, softcap=sc, reduction="mean")
        if target is t:
            kw["ignore_index"] = 2
        tl, tg = torch_ce_and_grad(x, target, **kw)
        rl, rg = ref.cross_entropy_and_grad(x, target, **kw)
        np.testing.assert_allclose(rl, tl, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(rg, tg, rtol=1e-12, atol=1e-14)


def test_reference_softmax_family_matches_torch():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 7)) * 5
    x[1, 2] = -np.inf
    xt = torch.tensor(x)
    np.testing.assert_allclose(ref.softmax(x), torch.softmax(xt, -1).numpy(), rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(ref.log_softmax(x), torch.log_softmax(xt, -1).numpy(), rtol=1e-13)
    np.testing.assert_allclose(ref.logsumexp(x), torch.logsumexp(xt, -1).numpy(), rtol=1e-13)


# ---------------------------------------------------------------- the package

@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("combo", list(itertools.product([False, True], [-100, 2], [0.0, 0.1], REDUCTIONS)),
                         ids=lambda c: f"wt{int(c[0])}-ii{c[1]}-ls{c[2]}-{c[3]}")
def test_index_targets_match_torch(combo, dt):
    weighted, ii, eps, red = combo
    rng, x, t, _, w = _setup(4, (12, 6), dt)
    kw = dict(weight=w if weighted else None, ignore_index=ii, label_smoothing=eps, reduction=red)
    go = _go(rng, red, (12,))
    tl, tg = torch_ce_and_grad(x, t, grad_output=go, **kw)
    loss, g = xf.cross_entropy_and_grad(x, t, grad_output=go, **kw)
    assert_close(loss, tl, dt)
    assert_close(g, tg, dt)
    assert_close(xf.cross_entropy(x, t, **kw), tl, dt)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("combo", list(itertools.product([False, True], [0.0, 0.2], REDUCTIONS)),
                         ids=lambda c: f"wt{int(c[0])}-ls{c[1]}-{c[2]}")
def test_probability_targets_match_torch(combo, dt):
    weighted, eps, red = combo
    rng, x, _, y, w = _setup(5, (10, 5), dt)
    kw = dict(weight=w if weighted else None, label_smoothing=eps, reduction=red)
    go = _go(rng, red, (10,))
    tl, tg = torch_ce_and_grad(x, y, grad_output=go, **kw)
    loss, g = xf.cross_entropy_and_grad(x, y, grad_output=go, **kw)
    assert_close(loss, tl, dt)
    assert_close(g, tg, dt)


@pytest.mark.parametrize("shape", [(2, 5, 7), (3, 2, 2, 4), (6,)], ids=str)
@pytest.mark.parametrize("kind", ["index", "probs"])
def test_multi_dim_and_1d_match_torch(shape, kind):
    rng, x, t, y, w = _setup(6, shape, np.float64)
    target = (t if kind == "index" else y)
    if len(shape) == 1:
        target = 2 if kind == "index" else y
    for red in REDUCTIONS:
        kw = dict(weight=w, label_smoothing=0.05, reduction=red)
        if kind == "index":
            kw["ignore_index"] = 2 if len(shape) > 1 else -100
        go = _go(rng, red, shape[:-1])
        tl, tg = torch_ce_and_grad(x, target, grad_output=go, **kw)
        loss, g = xf.cross_entropy_and_grad(x, target, grad_output=go, **kw)
        assert_close(loss, tl, np.float64)
        assert_close(g, tg, np.float64)


@pytest.mark.parametrize("softcap", [None, 0.5, 5.0])
@pytest.mark.parametrize("z_loss", [0.0, 1e-4, 0.3])
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_z_loss_and_softcap_match_torch_autograd(dt, kind, z_loss, softcap):
    rng, x, t, y, w = _setup(7, (11, 8), dt)
    target = t if kind == "index" else y
    for red, weighted, eps in [("mean", True, 0.1), ("sum", False, 0.0), ("none", True, 0.0)]:
        kw = dict(weight=w if weighted else None, label_smoothing=eps, z_loss=z_loss, softcap=softcap,
                  reduction=red)
        if kind == "index":
            kw["ignore_index"] = 2
        go = _go(rng, red, (11,))
        tl, tg = torch_ce_and_grad(x, target, grad_output=go, **kw)
        loss, g = xf.cross_entropy_and_grad(x, target, grad_output=go, **kw)
        assert_close(loss, tl, dt)
        assert_close(g, tg, dt)


def test_float16_logits_match_torch_on_upcast_values():
    rng, x, t, _, w = _setup(8, (16, 9), np.float16)
    tl, tg = torch_ce_and_grad(x.astype(np.float64), t, weight=w, label_smoothing=0.1)
    loss, g = xf.cross_entropy_and_grad(x, t, weight=w, label_smoothing=0.1)
    assert loss.dtype == np.float32 and g.dtype == np.float32
    assert_close(loss, tl, np.float32)
    assert_close(g, tg, np.float32)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_softmax_family_matches_torch(dt):
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((5, 4, 13)) * 4).astype(dt)
    x[0, 0, 3] = -np.inf
    xt = torch.tensor(x.astype(np.float64))
    assert_close(xf.softmax(x), torch.softmax(xt, -1).numpy(), dt)
    assert_close(xf.log_softmax(x), torch.log_softmax(xt, -1).numpy(), dt)
    assert_close(xf.logsumexp(x), torch.logsumexp(xt, -1).numpy(), dt)


def test_torch_tensors_are_accepted_as_inputs():
    rng = np.random.default_rng(10)
    xt = torch.tensor(rng.standard_normal((4, 5)))
    tt = torch.tensor([0, 4, 2, 1])
    x, t = xt.numpy().copy(), tt.numpy().copy()
    assert_close(xf.softmax(xt), ref.softmax(x), np.float64)
    assert_close(xf.logsumexp(xt), ref.logsumexp(x), np.float64)
    loss, g = xf.cross_entropy_and_grad(xt, tt)
    rl, rg = ref.cross_entropy_and_grad(x, t)
    assert_close(loss, rl, np.float64)
    assert_close(g, rg, np.float64)
    np.testing.assert_array_equal(xt.numpy(), x)  # input untouched


def test_large_vocab_batch_matches_torch():
    # a (B, T, V) language-model style batch with padding ignored
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((2, 16, 1000)) * 2).astype(np.float32)
    t = rng.integers(0, 1000, size=(2, 16))
    t[1, 10:] = -100
    tl, tg = torch_ce_and_grad(x, t, z_loss=1e-4)
    loss, g = xf.cross_entropy_and_grad(x, t, z_loss=1e-4)
    assert_close(loss, tl, np.float32)
    assert_close(g, tg, np.float32)
    assert comp_dtype(x.dtype) == g.dtype
