"""xent_fast.torch inside PyTorch's machinery (issue 18, item 2): torch.func.grad, per-sample
gradients with vmap(grad(...)) of a functional_call model, torch.vmap over extra leading
dimensions, torch.compile(fullgraph=True), autocast, second derivatives, torch.jit.script,
and the eager hot path against the NumPy core. PyTorch's own losses are the oracle
(float64, 1e-10, where the issue asks for it)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
xft = pytest.importorskip("xent_fast.torch")
from torch_reference import focal_reference  # noqa: E402
import xent_fast as xf  # noqa: E402

from torch.func import functional_call, grad, jacrev, vmap  # noqa: E402

D = torch.float64
TIGHT = dict(rtol=1e-10, atol=1e-10)
REDUCTIONS = ["mean", "sum", "none"]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)




def _close(a, b, **tol):
    for u, v in zip(a, b) if isinstance(a, (tuple, list)) else ((a, b),):
        torch.testing.assert_close(u, v, **(tol or TIGHT))


# --- torch.func.grad -------------------------------------------------------------------

CE_CASES = {
    "plain": ((6, 5), {}),
    "one row (C,)": ((5,), {}),
    "spatial (N, C, d)": ((3, 5, 4), {}),
    "options": ((6, 5), {"label_smoothing": 0.2, "weight": True, "ignore_index": 1}),
    "z_loss softcap": ((6, 5), {"z_loss": 1e-2, "softcap": 3.0}),
}


def _ce_args(shape, opts, seed=0, soft=False):
    g = _gen(seed)
    x = 3 * torch.randn(shape, dtype=D, generator=g)
    cdim = 0 if len(shape) == 1 else 1
    c = shape[cdim]
    if soft:
        t = torch.softmax(torch.randn(shape, dtype=D, generator=g), cdim)
    else:
        t = torch.randint(0, c, shape[:cdim] + shape[cdim + 1:], generator=g)
    opts = dict(opts)
    if opts.pop("weight", False):
        opts["weight"] = torch.rand(c, dtype=D, generator=g) + 0.2
    return x, t, opts


def _torch_ce(x, t, **opts):
    """PyTorch's loss with our extra options spelled out in PyTorch operations."""
    z_loss, cap = opts.pop("z_loss", 0.0), opts.pop("softcap", None)
    if cap is not None:
        x = cap * torch.tanh(x / cap)
    loss = F.cross_entropy(x, t, **opts)
    if z_loss:
        assert opts.get("reduction", "mean") == "mean" and "weight" not in opts
        loss = loss + z_loss * (torch.logsumexp(x, 1 if x.dim() > 1 else 0) ** 2).mean()
    return loss


@pytest.mark.parametrize("case", sorted(CE_CASES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("soft", [False, True])
def test_func_grad_matches_pytorch(case, reduction, soft):
    shape, opts = CE_CASES[case]
    if case == "z_loss softcap" and reduction != "mean":
        pytest.skip("the z_loss reference is written for the mean")
    x, t, opts = _ce_args(shape, opts, soft=soft)
    if soft:
        opts.pop("ignore_index", None)
    up = torch.randn(x.shape[:1] + x.shape[2:] if x.dim() > 1 else (), dtype=D,
                     generator=_gen(7))

    def total(fn):
        def f(z, y):
            loss = fn(z, y, reduction=reduction, **opts)
            return (loss * up).sum() if reduction == "none" else loss
        return f

    argnums = (0, 1) if soft else 0
    got = grad(total(xft.cross_entropy), argnums=argnums)(x, t)
    want = grad(total(_torch_ce), argnums=argnums)(x, t)
    _close(got, want)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_func_grad_of_the_binary_losses(reduction):
    g = _gen(1)
    x = 3 * torch.randn(4, 6, dtype=D, generator=g)
    y = torch.rand(4, 6, dtype=D, generator=g)
    w, pw = torch.rand(6, dtype=D, generator=g), 2 * torch.rand(6, dtype=D, generator=g)

    def bce(fn):
        return lambda z, q: fn(z, q, w, reduction=reduction, pos_weight=pw).sum()

    _close(grad(bce(xft.binary_cross_entropy_with_logits), argnums=(0, 1))(x, y),
           grad(bce(F.binary_cross_entropy_with_logits), argnums=(0, 1))(x, y))
    _close(grad(lambda z: xft.sigmoid_focal_loss(z, y, reduction=reduction).sum())(x),
           grad(lambda z: focal_reference(z, y, reduction=reduction).sum())(x))


# --- per-sample gradients: vmap(grad(loss of a batch of one)) ---------------------------

def _model(seed=2):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, 5)).double()


@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.1},
                                  {"weight": True}, {"reduction": "sum"}])
def test_per_sample_gradients_as_opacus_computes_them(opts):
    model = _model()
    params = {k: v.detach() for k, v in model.named_parameters()}
    g = _gen(3)
    x = torch.randn(9, 4, dtype=D, generator=g)
    y = torch.randint(0, 5, (9,), generator=g)
    opts = dict(opts)
    if opts.pop("weight", False):
        opts["weight"] = torch.rand(5, dtype=D, generator=g) + 0.2

    def loss_fn(fn):
        def f(p, xi, yi):
            out = functional_call(model, p, (xi.unsqueeze(0),))
            return fn(out, yi.unsqueeze(0), **opts)
        return f

    got = vmap(grad(loss_fn(xft.cross_entropy)), in_dims=(None, 0, 0))(params, x, y)
    want = vmap(grad(loss_fn(F.cross_entropy)), in_dims=(None, 0, 0))(params, x, y)
    assert got.keys() == want.keys()
    for k in got:
        assert got[k].shape == (9, *params[k].shape)
        torch.testing.assert_close(got[k], want[k], **TIGHT)
    # and they are the per-sample gradients: one sample's by plain autograd
    model.zero_grad()
    xft.cross_entropy(model(x[4:5]), y[4:5], **opts).backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(got[k][4], p.grad, **TIGHT)


def test_per_sample_gradients_of_a_multilabel_model():
    model = _model(4)
    params = {k: v.detach() for k, v in model.named_parameters()}
    g = _gen(5)
    x = torch.randn(7, 4, dtype=D, generator=g)
    y = (torch.rand(7, 5, dtype=D, generator=g) > 0.5).to(D)
    pw = torch.rand(5, dtype=D, generator=g) + 0.5

    def loss_fn(fn):
        return lambda p, xi, yi: fn(functional_call(model, p, (xi.unsqueeze(0),)),
                                    yi.unsqueeze(0), pos_weight=pw)

    got = vmap(grad(loss_fn(xft.binary_cross_entropy_with_logits)),
               in_dims=(None, 0, 0))(params, x, y)
    want = vmap(grad(loss_fn(F.binary_cross_entropy_with_logits)),
                in_dims=(None, 0, 0))(params, x, y)
    for k in got:
        torch.testing.assert_close(got[k], want[k], **TIGHT)


# --- torch.vmap over extra leading dimensions ---------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", ["plain", "ignored rows and weight", "spatial", "one row",
                                  "probabilities", "unbatched target", "all ignored"])
def test_vmap_over_leading_dimensions(reduction, case):
    g = _gen(6)
    b, n, c = 3, 6, 5
    opts = {"reduction": reduction}
    in_dims = (0, 0)
    if case == "spatial":
        x = torch.randn(b, n, c, 2, dtype=D, generator=g)
        t = torch.randint(0, c, (b, n, 2), generator=g)
    elif case == "one row":
        x = torch.randn(b, c, dtype=D, generator=g)
        t = torch.randint(0, c, (b,), generator=g)
    elif case == "probabilities":
        x = torch.randn(b, n, c, dtype=D, generator=g)
        t = torch.softmax(torch.randn(b, n, c, dtype=D, generator=g), -1)
        opts["label_smoothing"] = 0.1
    else:
        x = torch.randn(b, n, c, dtype=D, generator=g)
        t = torch.randint(0, c, (b, n), generator=g)
        if case == "ignored rows and weight":
            t[0, :2] = -100
            t[2, 3] = -100
            opts["weight"] = torch.rand(c, dtype=D, generator=g) + 0.2
        elif case == "unbatched target":
            t, in_dims = t[0], (0, None)
        elif case == "all ignored":
            t[1] = -100
    got = vmap(lambda z, y: xft.cross_entropy(z, y, **opts), in_dims=in_dims)(x, t)
    want = vmap(lambda z, y: F.cross_entropy(z, y, **opts), in_dims=in_dims)(x, t)
    if case == "all ignored" and reduction == "mean":
        # the documented difference: a mean that counts nothing is 0, not nan
        assert torch.isnan(want[1]) and got[1] == 0
        got, want = got[[0, 2]], want[[0, 2]]
    torch.testing.assert_close(got, want, **TIGHT)
    # and through grad: vmap(grad) and grad(vmap)
    if case != "all ignored":
        def per(fn):
            return lambda z, y: fn(z, y, **opts).sum()
        torch.testing.assert_close(vmap(grad(per(xft.cross_entropy)), in_dims=in_dims)(x, t),
                                   vmap(grad(per(F.cross_entropy)), in_dims=in_dims)(x, t),
                                   **TIGHT)
        torch.testing.assert_close(
            grad(lambda z: vmap(per(xft.cross_entropy), in_dims=in_dims)(z, t).sum())(x),
            grad(lambda z: vmap(per(F.cross_entropy), in_dims=in_dims)(z, t).sum())(x),
            **TIGHT)


def test_vmap_with_a_weight_per_sample_and_nested_vmap():
    g = _gen(8)
    x = torch.randn(2, 3, 4, 5, dtype=D, generator=g)
    t = torch.randint(0, 5, (2, 3, 4), generator=g)
    w = torch.rand(2, 5, dtype=D, generator=g) + 0.2
    got = vmap(lambda z, y, ww: xft.cross_entropy(z[0], y[0], weight=ww))(x, t, w)
    want = vmap(lambda z, y, ww: F.cross_entropy(z[0], y[0], weight=ww))(x, t, w)
    torch.testing.assert_close(got, want, **TIGHT)
    nested = vmap(vmap(lambda z, y: xft.cross_entropy(z, y, reduction="sum")))(x, t)
    torch.testing.assert_close(
        nested, vmap(vmap(lambda z, y: F.cross_entropy(z, y, reduction="sum")))(x, t), **TIGHT)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_vmap_of_the_binary_losses(reduction):
    g = _gen(9)
    x = torch.randn(3, 4, 5, dtype=D, generator=g)
    y = torch.rand(3, 4, 5, dtype=D, generator=g)
    w = torch.rand(4, 1, dtype=D, generator=g)
    got = vmap(lambda z, q: xft.binary_cross_entropy_with_logits(z, q, w,
                                                                 reduction=reduction))(x, y)
    want = vmap(lambda z, q: F.binary_cross_entropy_with_logits(z, q, w,
                                                                reduction=reduction))(x, y)
    torch.testing.assert_close(got, want, **TIGHT)
    got = vmap(grad(lambda z, q: xft.sigmoid_focal_loss(z, q, reduction=reduction).sum()))(x, y)
    want = vmap(grad(lambda z, q: focal_reference(z, q, reduction=reduction).sum()))(x, y)
    torch.testing.assert_close(got, want, **TIGHT)


def test_a_mistake_under_vmap_is_still_pytorchs_exception_type():
    x = torch.randn(2, 4, 3)
    t = torch.tensor([[0, 1, 2, 0], [0, 3, 1, 1]])
    with pytest.raises(IndexError, match="target") as info:
        vmap(xft.cross_entropy)(x, t)
    assert isinstance(info.value, ValueError)


# --- torch.compile(fullgraph=True) ----------------------------------------------------------

@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


COMPILED = {
    "cross_entropy": (lambda z, t, p: xft.cross_entropy(z, t, label_smoothing=0.1),
                      lambda z, t, p: F.cross_entropy(z, t, label_smoothing=0.1)),
    "cross_entropy none, spatial": (
        lambda z, t, p: xft.cross_entropy(z.reshape(4, 5, 2), t.reshape(4, 2)[:, :2] * 0
                                          + t[:4, None] % 5, reduction="none").sum(),
        lambda z, t, p: F.cross_entropy(z.reshape(4, 5, 2), t.reshape(4, 2)[:, :2] * 0
                                        + t[:4, None] % 5, reduction="none").sum()),
    "probabilities": (lambda z, t, p: xft.cross_entropy(z, p),
                      lambda z, t, p: F.cross_entropy(z, p)),
    "bce": (lambda z, t, p: xft.binary_cross_entropy_with_logits(z, p, pos_weight=p[0] + 1),
            lambda z, t, p: F.binary_cross_entropy_with_logits(z, p, pos_weight=p[0] + 1)),
    "focal": (lambda z, t, p: xft.sigmoid_focal_loss(z, p, reduction="mean"),
              lambda z, t, p: focal_reference(z, p, reduction="mean")),
    # the deprecated size_average/reduce (a graph break when torch.nn._reduction read them)
    "cross_entropy size_average": (
        lambda z, t, p: xft.cross_entropy(z, t, size_average=False),
        lambda z, t, p: F.cross_entropy(z, t, reduction="sum")),
    "bce reduce": (
        lambda z, t, p: xft.binary_cross_entropy_with_logits(z, p, reduce=False).sum(),
        lambda z, t, p: F.binary_cross_entropy_with_logits(z, p, reduction="none").sum()),
}


@pytest.mark.parametrize("case", sorted(COMPILED))
def test_compile_fullgraph_gives_pytorchs_values_and_gradients(case, fresh_dynamo):
    ours, ref = COMPILED[case]
    g = _gen(10)
    lin = torch.nn.Linear(3, 5).double()
    h = torch.randn(8, 3, dtype=D, generator=g)
    t = torch.randint(0, 5, (8,), generator=g)
    p = torch.softmax(torch.randn(8, 5, dtype=D, generator=g), 1).requires_grad_(
        case == "probabilities")

    def step(fn):
        def f(h, t, p):
            return fn(lin(h) * 2, t, p)
        return f

    compiled = torch.compile(step(ours), fullgraph=True, backend="aot_eager")
    loss = compiled(h, t, p)
    inputs = (lin.weight, lin.bias) + ((p,) if p.requires_grad else ())
    got = torch.autograd.grad(loss, inputs)
    want_loss = step(ref)(h, t, p)
    want = torch.autograd.grad(want_loss, inputs)
    torch.testing.assert_close(loss, want_loss, **TIGHT)
    _close(got, want)


def test_compile_with_inductor_and_the_ops_in_the_graph(fresh_dynamo):
    model = torch.nn.Linear(6, 4)
    g = _gen(11)
    x = torch.randn(16, 6, generator=g)
    t = torch.randint(0, 4, (16,), generator=g)

    def step(x, t):
        return xft.cross_entropy(model(x), t)

    explained = torch._dynamo.explain(step)(x, t)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    compiled = torch.compile(step, fullgraph=True)
    loss = compiled(x, t)
    loss.backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref = F.cross_entropy(model(x), t)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    for a, p in zip(got, model.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_the_custom_ops_pass_pytorchs_op_checks():
    g = _gen(12)
    x = torch.randn(5, 4, dtype=D, generator=g, requires_grad=True)
    t = torch.randint(0, 4, (5,), generator=g)
    y = torch.rand(5, 4, dtype=D, generator=g)
    torch.library.opcheck(torch.ops.xent_fast.cross_entropy.default,
                          (x, t, None, -100, "mean", 0.0, 0.0, None, None, False, D))
    torch.library.opcheck(torch.ops.xent_fast.binary_loss.default,
                          (x, y, None, None, "bce", "none", 0.0, 0.0, None, False, D))


# --- autocast ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("which", ["cross_entropy", "bce"])
def test_autocast_returns_the_loss_in_pytorchs_dtype(dtype, which):
    g = _gen(13)
    lin = torch.nn.Linear(8, 5)
    h = torch.randn(12, 8, generator=g)
    t = torch.randint(0, 5, (12,), generator=g)
    y = torch.rand(12, 5, generator=g)
    ours, ref = ((xft.cross_entropy, F.cross_entropy) if which == "cross_entropy" else
                 (xft.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits))
    target = t if which == "cross_entropy" else y
    with torch.autocast("cpu", dtype=dtype):
        z = lin(h)
        assert z.dtype == dtype
        loss = ours(z, target)
        want = ref(z, target)
    assert loss.dtype == want.dtype == torch.float32
    (gz,) = torch.autograd.grad(loss, z, retain_graph=True)
    (wz,) = torch.autograd.grad(want, z, retain_graph=True)
    assert gz.dtype == wz.dtype == dtype
    torch.testing.assert_close(loss, want, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(gz.float(), wz.float(), rtol=2e-2, atol=1e-3)
    # outside autocast, the dtype PyTorch gives (for BCE, the float32 target's)
    assert ours(z.detach(), target).dtype == ref(z.detach(), target).dtype


@pytest.mark.parametrize("x_dtype,t_dtype", [
    (torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16),
    (torch.float32, torch.float64), (torch.float16, torch.bfloat16),
    (torch.float64, torch.float32)])
def test_mixed_dtypes_give_pytorchs_loss_dtype(x_dtype, t_dtype):
    g = _gen(18)
    x = torch.randn(5, 4, generator=g).to(x_dtype).requires_grad_()
    y = torch.rand(5, 4, generator=g).to(t_dtype)
    p = torch.softmax(torch.randn(5, 4, generator=g), 1).to(t_dtype)
    for ours, ref, target in ((xft.binary_cross_entropy_with_logits,
                               F.binary_cross_entropy_with_logits, y),
                              (xft.cross_entropy, F.cross_entropy, p)):
        loss, want = ours(x, target), ref(x, target)
        assert loss.dtype == want.dtype
        torch.testing.assert_close(loss, want, rtol=2e-2, atol=2e-2)
        (gx,) = torch.autograd.grad(loss, x)
        assert gx.dtype == x_dtype


def test_autocast_under_compile(fresh_dynamo):
    lin = torch.nn.Linear(8, 5)
    h = torch.randn(12, 8, generator=_gen(14))
    t = torch.randint(0, 5, (12,), generator=_gen(14))

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(h, t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return xft.cross_entropy(lin(h), t)

    loss = f(h, t)
    assert loss.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(loss, F.cross_entropy(lin(h), t), rtol=1e-3, atol=1e-3)


# --- second derivatives: a clear error, also through torch.func -----------------------------

@pytest.mark.parametrize("fn", [
    lambda z: xft.cross_entropy(z, torch.tensor([0, 2, 1])),
    lambda z: xft.cross_entropy(z, torch.full((3, 4), 0.25, dtype=D), label_smoothing=0.1),
    lambda z: xft.binary_cross_entropy_with_logits(z, torch.ones(3, 4, dtype=D)),
    lambda z: xft.sigmoid_focal_loss(z, torch.ones(3, 4, dtype=D), reduction="sum"),
])
def test_second_derivatives_are_a_clear_error_in_torch_func_too(fn):
    x = torch.randn(3, 4, dtype=D, generator=_gen(15), requires_grad=True)
    with pytest.raises(RuntimeError, match="double backward of xent_fast.torch"):
        jacrev(jacrev(fn))(x.detach())
    with pytest.raises(RuntimeError, match="double backward of xent_fast.torch"):
        grad(lambda z: grad(fn)(z).pow(2).sum())(x.detach())
    with pytest.raises(RuntimeError, match="double backward of xent_fast.torch"):
        torch.autograd.gradgradcheck(fn, (x,))
    # the first derivative passes gradcheck
    assert torch.autograd.gradcheck(fn, (x,))


# --- torch.jit.script -----------------------------------------------------------------------

def _scripted_call(x, t):
    return xft.cross_entropy(x, t)


@pytest.mark.parametrize("obj", [_scripted_call, xft.cross_entropy,
                                 xft.binary_cross_entropy_with_logits, xft.sigmoid_focal_loss,
                                 xft.CrossEntropyLoss(), xft.BCEWithLogitsLoss()])
def test_jit_script_says_to_use_torch_compile(obj):
    with pytest.raises(RuntimeError, match="torch.compile"):
        torch.jit.script(obj)


# --- the eager hot path ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.3, "z_loss": 1e-3,
                                       "ignore_index": 2}])
def test_hot_path_is_bitwise_the_numpy_core(dtype, reduction, opts):
    g = _gen(16)
    x = (4 * torch.randn(33, 7, generator=g)).to(dtype).requires_grad_()
    t = torch.randint(0, 7, (33,), generator=g)
    loss = xft.cross_entropy(x, t, reduction=reduction, **opts)
    loss.backward(torch.ones_like(loss))  # (another upstream gradient: a product after)
    want, gwant = xf.cross_entropy_and_grad(x.detach().numpy(), t.numpy(),
                                            reduction=reduction, **opts)
    assert loss.dtype == dtype and np.array_equal(loss.detach().numpy(), want)
    assert np.array_equal(x.grad.numpy(), gwant)
    y = torch.rand(33, 7, generator=g).to(dtype)
    for ours, core in ((xft.binary_cross_entropy_with_logits,
                        xf.binary_cross_entropy_with_logits_and_grad),
                       (xft.sigmoid_focal_loss, xf.sigmoid_focal_loss_and_grad)):
        x.grad = None
        loss = ours(x, y, reduction=reduction)
        loss.backward(torch.ones_like(loss))
        want, gwant = core(x.detach().numpy(), y.numpy(), reduction=reduction)
        assert np.array_equal(loss.detach().numpy(), want)
        assert np.array_equal(x.grad.numpy(), gwant)


@pytest.mark.parametrize("case", ["non-contiguous", "int32 target", "numpy ignore_index",
                                  "float32 overflow", "nan", "no grad", "subclass"])
def test_hot_path_leaves_what_it_does_not_take_to_the_general_path(case):
    g = _gen(17)
    x = torch.randn(6, 5, generator=g)
    t = torch.randint(0, 5, (6,), generator=g)
    kw = {}
    if case == "non-contiguous":
        x = torch.randn(5, 6, generator=g).t()
    elif case == "int32 target":
        t = t.int()
    elif case == "numpy ignore_index":
        kw["ignore_index"] = np.int64(2)
    elif case == "float32 overflow":
        x = torch.tensor([[3e38, -3e38]])
        t = torch.tensor([1])
    elif case == "nan":
        x[2, 1] = float("nan")
    elif case == "subclass":
        x = torch.nn.Parameter(x)
    x.requires_grad_(case != "no grad")
    loss = xft.cross_entropy(x, t, **kw)
    t = t.long()  # (PyTorch takes int64 class indices only; xent_fast any integer dtype)
    kw = {k: int(v) for k, v in kw.items()}
    ref = F.cross_entropy(x.detach(), t, **kw)
    torch.testing.assert_close(loss, ref, equal_nan=True)
    if case != "no grad":
        (gx,) = torch.autograd.grad(loss, x)
        xr = x.detach().requires_grad_()
        (want,) = torch.autograd.grad(F.cross_entropy(xr, t, **kw), xr)
        torch.testing.assert_close(gx, want, equal_nan=True)
    else:
        assert not loss.requires_grad


@pytest.mark.parametrize("shape", [(33,), (3, 11, 7), (0,), (1,)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_hot_path_on_other_ranks_is_bitwise_the_numpy_core(shape, reduction):
    g = _gen(19)
    x = (3 * torch.randn(shape, generator=g)).requires_grad_()
    y = torch.rand(shape, generator=g)
    for ours, core in ((xft.binary_cross_entropy_with_logits,
                        xf.binary_cross_entropy_with_logits_and_grad),
                       (xft.sigmoid_focal_loss, xf.sigmoid_focal_loss_and_grad)):
        x.grad = None
        loss = ours(x, y, reduction=reduction)
        loss.backward(torch.ones_like(loss))
        want, gwant = core(x.detach().numpy(), y.numpy(), reduction=reduction)
        assert loss.shape == torch.Size(np.shape(want))
        assert np.array_equal(loss.detach().numpy(), want)
        assert np.array_equal(x.grad.numpy(), gwant)
