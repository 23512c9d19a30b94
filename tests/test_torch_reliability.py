"""xent_fast.torch where PyTorch's own test suites found it wrong: the in-place mode
(target gradients, views, foreign memory, overlaps), low-precision and differentiable
weights, second derivatives, gradient hooks with a retained graph, and the errors (the
torch argument names, and an instance of the exception type PyTorch raises).

PyTorch's (and torchvision's formula, in PyTorch operations) results are the oracle."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
xft = pytest.importorskip("xent_fast.torch")
from torch_reference import focal_reference  # noqa: E402

REDUCTIONS = ["mean", "sum", "none"]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)




def _upstream(loss, seed=1):
    return torch.randn(loss.shape, dtype=loss.dtype, generator=_gen(seed))


# --- item 3: target gradient with inplace=True --------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.2, "weight": True}])
def test_inplace_probability_target_gradient_matches_pytorch(reduction, opts):
    """The target's gradient needs the logits, which the in-place kernel overwrites."""
    g = _gen(3)
    lin = torch.nn.Linear(5, 7).double()
    h = torch.randn(9, 5, dtype=torch.float64, generator=g)
    p = torch.softmax(torch.randn(9, 7, dtype=torch.float64, generator=g), 1).requires_grad_()
    opts = dict(opts)
    if opts.pop("weight", False):
        opts["weight"] = torch.rand(7, dtype=torch.float64, generator=g) + 0.1
    ours = xft.cross_entropy(lin(h), p, reduction=reduction, inplace=True, **opts)
    ref = F.cross_entropy(lin(h), p, reduction=reduction, **opts)
    torch.testing.assert_close(ours, ref)
    up = _upstream(ref)
    got = torch.autograd.grad(ours, (p, lin.weight, lin.bias), up)
    want = torch.autograd.grad(ref, (p, lin.weight, lin.bias), up)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


# --- item 4: in-place writes only into memory the input alone owns ------------------

def _lin_out(rows=8, classes=6, seed=4):
    g = _gen(seed)
    lin = torch.nn.Linear(4, classes)
    return lin, lin(torch.randn(rows, 4, generator=g))


@pytest.mark.parametrize("case", ["slice", "view", "as_strided", "numpy_memory", "leaf"])
def test_inplace_refuses_views_and_foreign_memory_before_writing(case):
    lin, out = _lin_out()
    a = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    if case == "slice":
        z, base = out[2:5], out
    elif case == "view":
        z, base = out.view(8, 6), out
    elif case == "as_strided":
        z, base = out.as_strided((3, 6), (6, 1), 6), out
    elif case == "numpy_memory":
        # non-leaf (an in-place op with a parameter) over memory that NumPy owns
        base = torch.from_numpy(a)
        z = base.mul_(lin.weight[0, 0])
    else:
        z = base = torch.randn(8, 6, requires_grad=True)
    before = base.detach().clone()
    t = torch.zeros(z.shape[0], dtype=torch.long)
    with pytest.raises(ValueError, match="inplace") as info:
        xft.cross_entropy(z, t, inplace=True)
    assert isinstance(info.value, RuntimeError)  # what PyTorch raises for such in-place use
    assert torch.equal(base.detach(), before)  # nothing was written


def test_inplace_leaves_an_input_that_needs_no_gradient_alone():
    """Only the target requires grad: the input's gradient is not wanted, so the input
    (a user's tensor) must not be overwritten."""
    g = _gen(5)
    x = torch.randn(6, 4, dtype=torch.float64, generator=g)
    before = x.clone()
    p = torch.softmax(torch.randn(6, 4, dtype=torch.float64, generator=g), 1).requires_grad_()
    ours = xft.cross_entropy(x, p, inplace=True)
    assert torch.equal(x, before)
    (got,) = torch.autograd.grad(ours, p)
    (want,) = torch.autograd.grad(F.cross_entropy(x, p), p)
    torch.testing.assert_close(got, want)


def test_inplace_on_logits_another_node_saved_is_detected():
    _, out = _lin_out(seed=6)
    other = (out ** 2).sum()  # pow saves its input for the backward
    loss = xft.cross_entropy(out, torch.zeros(8, dtype=torch.long), inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (loss + other).backward()


# --- item 5: an output overlapping an input ----------------------------------------

@pytest.mark.parametrize("case", ["same_target", "target_alias", "weight_alias"])
def test_inplace_overlap_with_another_argument_is_refused(case):
    _, z = _lin_out(seed=7)
    before = z.detach().clone()
    kw = {}
    if case == "same_target":
        t = z
    elif case == "target_alias":
        t = z.detach()
    else:
        t = torch.zeros(8, dtype=torch.long)
        kw["weight"] = z.detach()[0]
    with pytest.raises(ValueError, match="inplace"):
        xft.cross_entropy(z, t, inplace=True, **kw)
    assert torch.equal(z.detach(), before)


# --- item 7: bfloat16 / float16 weights ---------------------------------------------

@pytest.mark.parametrize("dtype,wdtype", [(torch.bfloat16, torch.bfloat16),
                                          (torch.float16, torch.float16),
                                          (torch.float32, torch.bfloat16)])
@pytest.mark.parametrize("soft", [False, True])
def test_low_precision_class_weights_are_accepted(dtype, wdtype, soft):
    g = _gen(8)
    x = (2 * torch.randn(16, 5, generator=g)).to(dtype).requires_grad_()
    w = (torch.rand(5, generator=g) + 0.5).to(wdtype)
    t = (torch.softmax(torch.randn(16, 5, generator=g), 1).to(dtype) if soft
         else torch.randint(0, 5, (16,), generator=g))
    loss = xft.cross_entropy(x, t, weight=w)
    loss.backward()
    assert loss.dtype == dtype and x.grad.dtype == dtype
    xr = x.detach().double().requires_grad_()
    ref = F.cross_entropy(xr, t.double() if soft else t, weight=w.double())
    ref.backward()
    tol = dict(rtol=2e-2, atol=2e-2) if dtype != torch.float32 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.double(), ref.to(dtype).double(), **tol)
    torch.testing.assert_close(x.grad.double(), xr.grad.to(dtype).double(), **tol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_bce_weights_are_accepted(dtype):
    g = _gen(9)
    x = (2 * torch.randn(6, 4, generator=g)).to(dtype).requires_grad_()
    y = torch.rand(6, 4, generator=g).to(dtype)
    w = torch.rand(6, 1, generator=g).to(dtype)
    pw = (3 * torch.rand(4, generator=g)).to(dtype)
    loss = xft.binary_cross_entropy_with_logits(x, y, w, pos_weight=pw)
    loss.backward()
    assert loss.dtype == dtype and x.grad.dtype == dtype
    xr = x.detach().double().requires_grad_()
    ref = F.binary_cross_entropy_with_logits(xr, y.double(), w.double(),
                                             pos_weight=pw.double())
    ref.backward()
    torch.testing.assert_close(loss.double(), ref.to(dtype).double(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(x.grad.double(), xr.grad.to(dtype).double(), rtol=2e-2,
                               atol=2e-2)
    # and what PyTorch itself returns on these dtypes
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(
        x.detach(), y, w, pos_weight=pw), rtol=2e-2, atol=2e-2)


# --- item 8: weights and targets that require grad ----------------------------------

def _pytorch_error(fn, otherwise=None):
    """The exception PyTorch raises, or ``otherwise()`` where PyTorch takes the input."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the oracle's exception, whatever it is
        return exc
    if otherwise is None:
        raise AssertionError("PyTorch raised nothing")
    return otherwise()


@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_class_weight_requiring_grad_with_class_indices_raises_as_pytorch(ls):
    x = torch.randn(4, 3, requires_grad=True)
    t = torch.tensor([0, 1, 2, 0])
    w = torch.ones(3, requires_grad=True)
    ref = _pytorch_error(lambda: F.cross_entropy(x, t, weight=w, label_smoothing=ls))
    with pytest.raises(type(ref), match="not differentiable with respect to argument 'weight'"):
        xft.cross_entropy(x, t, weight=w, label_smoothing=ls)
    with torch.no_grad():  # as PyTorch: without autograd there is nothing to refuse
        xft.cross_entropy(x, t, weight=w)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape,opts", [((6, 5), {}), ((6, 5), {"label_smoothing": 0.3}),
                                        ((6, 5), {"inplace": True}), ((2, 5, 3), {}),
                                        ((2, 5, 3), {"label_smoothing": 0.3})])
def test_class_weight_gradient_with_probabilities_matches_pytorch(reduction, shape, opts):
    g = _gen(10)
    lin = torch.nn.Linear(3, 5).double()
    h = torch.randn(shape[0], *shape[2:], 3, dtype=torch.float64, generator=g)

    def logits():
        z = lin(h)
        return z if z.dim() == 2 else z.movedim(-1, 1).contiguous()

    p = torch.softmax(torch.randn(shape, dtype=torch.float64, generator=g), 1).requires_grad_()
    w = (torch.rand(5, dtype=torch.float64, generator=g) + 0.2).requires_grad_()
    opts = dict(opts)
    ours = xft.cross_entropy(logits(), p, weight=w, reduction=reduction, **opts)
    opts.pop("inplace", None)
    ref = F.cross_entropy(logits(), p, weight=w, reduction=reduction, **opts)
    torch.testing.assert_close(ours, ref)
    up = _upstream(ref)
    got = torch.autograd.grad(ours, (w, p, lin.weight), up)
    want = torch.autograd.grad(ref, (w, p, lin.weight), up)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("arg", ["weight", "pos_weight"])
def test_bce_weights_requiring_grad_raise_as_pytorch(arg):
    x = torch.randn(4, 3, requires_grad=True)
    y = torch.rand(4, 3)
    kw = {arg: torch.rand(3, requires_grad=True)}
    ref = _pytorch_error(lambda: F.binary_cross_entropy_with_logits(x, y, **kw))
    with pytest.raises(type(ref), match=f"not differentiable with respect to argument '{arg}'"):
        xft.binary_cross_entropy_with_logits(x, y, **kw)
    with pytest.raises(type(ref), match=arg):
        xft.BCEWithLogitsLoss(**kw)(x, y)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bce_target_gradient_with_broadcast_weights_matches_pytorch(reduction, dtype):
    g = _gen(11)
    x = (3 * torch.randn(2, 3, 4, dtype=dtype, generator=g)).requires_grad_()
    y = torch.rand(2, 3, 4, dtype=torch.float64, generator=g).requires_grad_()
    w = torch.rand(3, 1, dtype=dtype, generator=g)
    pw = 3 * torch.rand(4, dtype=dtype, generator=g)
    ours = xft.binary_cross_entropy_with_logits(x, y, w, reduction=reduction, pos_weight=pw)
    ref = F.binary_cross_entropy_with_logits(x, y.to(dtype), w, reduction=reduction,
                                             pos_weight=pw)
    up = _upstream(ref)
    got = torch.autograd.grad(ours, (x, y), up)
    want = torch.autograd.grad(ref, (x, y), up)
    assert got[1].dtype == y.dtype
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-6)


# --- item 9: second derivatives ------------------------------------------------------

def _losses():
    """(name, loss function of a (6, 4) float64 tensor) for every adapter entry point."""
    g = _gen(12)
    t = torch.randint(0, 4, (6,), generator=g)
    p = torch.softmax(torch.randn(6, 4, dtype=torch.float64, generator=g), 1)
    y = torch.rand(6, 4, dtype=torch.float64, generator=g)
    return [
        ("cross_entropy", lambda z: xft.cross_entropy(z, t)),
        ("cross_entropy", lambda z: xft.cross_entropy(z, t, reduction="none").sum()),
        ("cross_entropy", lambda z: xft.cross_entropy(z, p, label_smoothing=0.1)),
        ("cross_entropy", lambda z: xft.cross_entropy(z * 1, t, inplace=True)),
        ("binary_cross_entropy_with_logits",
         lambda z: xft.binary_cross_entropy_with_logits(z, y)),
        ("sigmoid_focal_loss", lambda z: xft.sigmoid_focal_loss(z, y, reduction="sum")),
        ("distillation_loss", lambda z: xft.distillation_loss(z, y, temperature=2.0)),
    ]


@pytest.mark.parametrize("i", range(7))
def test_second_derivative_is_a_clear_error_never_zeros(i):
    name, fn = _losses()[i]
    x = torch.randn(6, 4, dtype=torch.float64, generator=_gen(13), requires_grad=True)
    # the first derivative under create_graph=True is still right
    (gx,) = torch.autograd.grad(fn(x), x, create_graph=True)
    xr = x.detach().requires_grad_()
    (want,) = torch.autograd.grad(fn(xr), xr)
    torch.testing.assert_close(gx.detach(), want)
    msg = f"double backward of xent_fast.torch.{name} is not supported"
    with pytest.raises(RuntimeError, match=msg):
        torch.autograd.grad(gx.sum(), x)
    (gx,) = torch.autograd.grad(fn(x), x, create_graph=True)
    with pytest.raises(RuntimeError, match=msg):
        torch.autograd.grad((gx ** 2).sum(), x, allow_unused=True)
    # a gradient penalty step must not silently drop its second-order term
    loss = fn(x)
    (gx,) = torch.autograd.grad(loss, x, create_graph=True)
    with pytest.raises(RuntimeError, match=msg):
        (loss + gx.norm() ** 2).backward()


@pytest.mark.parametrize("i", range(7))
def test_second_derivative_is_a_clear_error_when_compiled_eagerly(i):
    # torch.compile with the eager backend runs the custom ops' autograd formulas with
    # create_graph honoured (aot_eager and inductor refuse double backward themselves):
    # their saved gradient, differentiated again, gave silent zeros
    name, fn = _losses()[i]
    compiled = torch.compile(fn, fullgraph=True, backend="eager")
    x = torch.randn(6, 4, dtype=torch.float64, generator=_gen(16), requires_grad=True)
    (gx,) = torch.autograd.grad(compiled(x), x, create_graph=True)
    xr = x.detach().requires_grad_()
    (want,) = torch.autograd.grad(fn(xr), xr)
    torch.testing.assert_close(gx.detach(), want)
    with pytest.raises(RuntimeError, match=f"double backward of xent_fast.torch.{name}"):
        torch.autograd.grad((gx ** 2).sum(), x)


def test_second_derivative_through_a_layer_is_a_clear_error():
    g = _gen(14)
    lin = torch.nn.Linear(3, 5)
    h = torch.randn(7, 3, generator=g)
    t = torch.randint(0, 5, (7,), generator=g)
    loss = xft.cross_entropy(lin(h), t)
    (gw,) = torch.autograd.grad(loss, lin.weight, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        (loss + gw.pow(2).sum()).backward()


# --- item 10: hooks that edit the gradient in place, with a retained graph -------------

def _hooked_grads(loss_fn, target_grad, seed=15):
    """Parameter (and target) gradients of two backwards through one retained graph,
    with a hook on the logits (and on the target) that doubles the gradient in place."""
    torch.manual_seed(seed)
    g = _gen(seed)
    lin = torch.nn.Linear(3, 4).double()
    h = torch.randn(6, 3, dtype=torch.float64, generator=g)
    y = torch.rand(6, 4, dtype=torch.float64, generator=g)
    y = (y / y.sum(1, keepdim=True)).requires_grad_(target_grad)
    z = lin(h)
    z.register_hook(lambda grad: grad.mul_(2))
    inputs = (lin.weight, lin.bias)
    if target_grad:
        y.register_hook(lambda grad: grad.mul_(2))
        inputs += (y,)
    loss = loss_fn(z, y)
    first = torch.autograd.grad(loss, inputs, retain_graph=True)
    second = torch.autograd.grad(loss, inputs)
    return first + second


@pytest.mark.parametrize("ours,ref,target_grad", [
    (lambda z, y: xft.cross_entropy(z, y), lambda z, y: F.cross_entropy(z, y), True),
    (lambda z, y: xft.cross_entropy(z, y, inplace=True), lambda z, y: F.cross_entropy(z, y),
     True),
    (lambda z, y: xft.cross_entropy(z, y.argmax(1), reduction="sum"),
     lambda z, y: F.cross_entropy(z, y.argmax(1), reduction="sum"), False),
    (lambda z, y: xft.binary_cross_entropy_with_logits(z, y),
     lambda z, y: F.binary_cross_entropy_with_logits(z, y), True),
    (lambda z, y: xft.sigmoid_focal_loss(z, y, reduction="mean"),
     lambda z, y: focal_reference(z, y, reduction="mean"), False),
])
def test_hooks_editing_gradients_in_place_with_a_retained_graph(ours, ref, target_grad):
    got, want = _hooked_grads(ours, target_grad), _hooked_grads(ref, target_grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_a_single_backward_hands_out_the_saved_gradient_without_a_copy():
    """The fast path stays: without retain_graph the saved gradient becomes x.grad."""
    x = torch.randn(64, 100, requires_grad=True)
    t = torch.randint(0, 100, (64,))
    for retain in (False, True):
        loss = xft.cross_entropy(x, t)
        # (the saved gradient's address only: a tensor kept alive here could not be handed
        # out without a copy)
        saved = loss.grad_fn.saved_tensors[0].data_ptr()
        x.grad = None
        loss.backward(retain_graph=retain)
        # retained: a copy, which a hook may edit without touching the saved gradient
        assert (x.grad.data_ptr() == saved) != retain


# --- item 17: errors name the torch arguments and are PyTorch's exception types ------

def _x():
    return torch.randn(4, 3, requires_grad=True)


T = torch.tensor([0, 1, 2, 0])
CE_MISTAKES = {
    "sparse input": (lambda: (_x().detach().to_sparse(), T, {}), "input"),
    "complex input": (lambda: (torch.ones(4, 3, dtype=torch.complex64), T, {}), "input"),
    "int input": (lambda: (torch.ones(4, 3, dtype=torch.int64), T, {}), "input"),
    "0-d input": (lambda: (torch.tensor(1.0, requires_grad=True), torch.tensor(0), {}),
                  "input"),
    "sparse weight": (lambda: (_x(), T, {"weight": torch.ones(3).to_sparse()}), "weight"),
    "sparse target": (lambda: (_x(), torch.rand(4, 3).to_sparse(), {}), "target"),
    "target out of range": (lambda: (_x(), torch.tensor([0, 3, 1, 1]), {}), r"target\[1\]"),
    "batch mismatch": (lambda: (_x(), T[:3], {}), "target"),
    "spatial mismatch": (lambda: (torch.randn(2, 3, 4, requires_grad=True),
                                  torch.zeros(2, 5, dtype=torch.long), {}), "target"),
    "probabilities' shape": (lambda: (_x(), torch.rand(4, 2), {}), "target"),
    "float class indices": (lambda: (_x(), torch.rand(4), {}), "target"),
    "weight shape": (lambda: (_x(), T, {"weight": torch.ones(2)}), "weight"),
    "label_smoothing": (lambda: (_x(), T, {"label_smoothing": 1.5}), "label_smoothing"),
    "reduction": (lambda: (_x(), T, {"reduction": "avg"}), "reduction"),
}


@pytest.mark.parametrize("case", sorted(CE_MISTAKES))
@pytest.mark.parametrize("grad", [True, False])
def test_cross_entropy_mistakes_raise_pytorchs_type_naming_the_argument(case, grad):
    make, name = CE_MISTAKES[case]
    x, t, kw = make()
    # where PyTorch takes it (a sparse target or weight), a TypeError
    ref = _pytorch_error(lambda: F.cross_entropy(x, t, **kw), TypeError)
    with torch.set_grad_enabled(grad), pytest.raises(type(ref), match=name) as info:
        xft.cross_entropy(x, t, **kw)
    assert isinstance(info.value, (TypeError, ValueError))
    assert "logits" not in str(info.value) and "grad_out" not in str(info.value)


Y = torch.rand(4, 3)
BCE_MISTAKES = {
    "sparse input": (lambda: (_x().detach().to_sparse(), Y, {}), "input"),
    "complex input": (lambda: (torch.ones(4, 3, dtype=torch.complex64), Y, {}), "input"),
    "int input": (lambda: (torch.ones(4, 3, dtype=torch.int64), Y, {}), "input"),
    "shape": (lambda: (_x(), Y[:, :2], {}), "input"),
    "weight shape": (lambda: (_x(), Y, {"weight": torch.ones(2)}), "weight"),
    "pos_weight shape": (lambda: (_x(), Y, {"pos_weight": torch.ones(2)}), "pos_weight"),
    "sparse pos_weight": (lambda: (_x(), Y, {"pos_weight": torch.ones(3).to_sparse()}),
                          "pos_weight"),
}


@pytest.mark.parametrize("case", sorted(BCE_MISTAKES))
def test_bce_mistakes_raise_pytorchs_type_naming_the_argument(case):
    make, name = BCE_MISTAKES[case]
    x, y, kw = make()
    ref = _pytorch_error(lambda: F.binary_cross_entropy_with_logits(x, y, **kw), TypeError)
    with pytest.raises(type(ref), match=name) as info:
        xft.binary_cross_entropy_with_logits(x, y, **kw)
    assert isinstance(info.value, (TypeError, ValueError))
    assert "logits" not in str(info.value)


def test_focal_loss_errors_use_torchvisions_argument_names():
    with pytest.raises(TypeError, match="inputs") as info:
        xft.sigmoid_focal_loss(torch.ones(3, dtype=torch.int64), torch.ones(3))
    assert "logits" not in str(info.value)
    with pytest.raises(TypeError, match="targets"):
        xft.sigmoid_focal_loss(torch.ones(3), torch.ones(3).to_sparse())
    with pytest.raises(TypeError, match="targets must be a real tensor"):
        xft.sigmoid_focal_loss(torch.ones(3), torch.ones(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="targets size"):
        xft.sigmoid_focal_loss(torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="inputs"):
        xft.sigmoid_focal_loss(torch.ones(3, device="meta"), torch.ones(3))


@pytest.mark.parametrize("fn", [xft.cross_entropy, xft.binary_cross_entropy_with_logits])
def test_meta_tensors_are_refused_naming_the_argument(fn):
    x = torch.randn(4, 3)
    t = T if fn is xft.cross_entropy else Y
    with pytest.raises(ValueError, match="input .*device meta"):
        fn(x.to("meta"), t)
    with pytest.raises(ValueError, match="target .*device meta"):
        fn(x, t.to("meta"))
