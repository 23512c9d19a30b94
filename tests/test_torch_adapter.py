"""xent_fast.torch against PyTorch's own losses: values, autograd gradients (gradcheck
and PyTorch's backward), dtypes, layouts, the in-place mode and a short training run."""

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
xft = pytest.importorskip("xent_fast.torch")
from torch_reference import focal_reference  # noqa: E402

REDUCTIONS = ["mean", "sum", "none"]
# (input shape, class-index target shape): 1-D, 2-D, K-dimensional (classes at dim 1), empty
SHAPES = [((7,), ()), ((9, 7), (9,)), ((3, 7, 4, 2), (3, 4, 2)), ((0, 7), (0,))]


def _seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def _grads(loss, inputs, upstream):
    return torch.autograd.grad(loss, inputs, upstream, allow_unused=True)


def _check(ours, ref, upstream_like, inputs, **tol):
    """Equal values, and equal gradients for a random upstream gradient."""
    torch.testing.assert_close(ours, ref, **tol)
    g = torch.randn(ref.shape, dtype=ref.dtype, generator=_seeded(1))
    for a, b in zip(_grads(ours, inputs, g), _grads(ref, inputs, g)):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("shape,tshape", SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.2}, {"ignore_index": 3},
                                  {"weight": True}, {"weight": True, "label_smoothing": 0.1}])
def test_cross_entropy_class_indices_match_pytorch(shape, tshape, reduction, opts):
    g = _seeded()
    x = (3 * torch.randn(shape, dtype=torch.float64, generator=g)).requires_grad_()
    t = torch.randint(0, 7, tshape, generator=g)
    opts = dict(opts)
    if opts.pop("weight", False):
        opts["weight"] = torch.rand(7, dtype=torch.float64, generator=g) + 0.1
    ours = xft.cross_entropy(x, t, reduction=reduction, **opts)
    ref = F.cross_entropy(x, t, reduction=reduction, **opts)
    if reduction == "mean" and x.numel() == 0:
        # documented difference: a mean over nothing is 0 (PyTorch: nan)
        assert ours.item() == 0.0 and torch.isnan(ref)
        return
    _check(ours, ref, ref, (x,))


@pytest.mark.parametrize("shape,_", SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.3}, {"weight": True}])
def test_cross_entropy_probabilities_match_pytorch_including_target_grad(shape, _, reduction,
                                                                         opts):
    g = _seeded(2)
    x = torch.randn(shape, dtype=torch.float64, generator=g).requires_grad_()
    cls_dim = 0 if len(shape) == 1 else 1
    p = torch.softmax(torch.randn(shape, dtype=torch.float64, generator=g), cls_dim)
    p.requires_grad_()
    opts = dict(opts)
    if opts.pop("weight", False):
        opts["weight"] = torch.rand(7, dtype=torch.float64, generator=g) + 0.1
    ours = xft.cross_entropy(x, p, reduction=reduction, **opts)
    ref = F.cross_entropy(x, p, reduction=reduction, **opts)
    if reduction == "mean" and x.numel() == 0:
        assert ours.item() == 0.0
        return
    _check(ours, ref, ref, (x, p))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, dict(rtol=1e-5, atol=1e-6)),
                                       (torch.bfloat16, dict(rtol=1.6e-2, atol=1e-2)),
                                       (torch.float16, dict(rtol=1e-3, atol=1e-3))])
def test_cross_entropy_dtypes(dtype, tol):
    g = _seeded(3)
    x64 = 2 * torch.randn(64, 11, dtype=torch.float64, generator=g)
    x = x64.to(dtype).requires_grad_()
    t = torch.randint(0, 11, (64,), generator=g)
    loss = xft.cross_entropy(x, t, label_smoothing=0.1)
    loss.backward()
    assert loss.dtype == dtype and x.grad.dtype == dtype
    # reference: float64 on the same (rounded) inputs, rounded to the dtype at the end
    xr = x.detach().double().requires_grad_()
    ref = F.cross_entropy(xr, t, label_smoothing=0.1)
    ref.backward()
    torch.testing.assert_close(loss.double(), ref.to(dtype).double(), **tol)
    torch.testing.assert_close(x.grad.double(), xr.grad.to(dtype).double(), **tol)


def test_z_loss_and_softcap_match_their_formulas():
    g = _seeded(4)
    x = (10 * torch.randn(16, 9, dtype=torch.float64, generator=g)).requires_grad_()
    t = torch.randint(0, 9, (16,), generator=g)
    t[3] = -100
    ours = xft.cross_entropy(x, t, z_loss=1e-3, softcap=5.0, reduction="none")
    z = 5.0 * torch.tanh(x / 5.0)
    counted = (t != -100).double()
    ref = (F.cross_entropy(z, t, reduction="none")
           + 1e-3 * torch.logsumexp(z, 1) ** 2 * counted)
    _check(ours, ref, ref, (x,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_cross_entropy(reduction):
    g = _seeded(5)
    x = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.tensor([0, 3, -100, 1, 2])
    p = torch.softmax(torch.randn(5, 4, dtype=torch.float64, generator=g), 1).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: xft.cross_entropy(a, t, reduction=reduction, label_smoothing=0.1,
                                    z_loss=0.01, softcap=3.0), (x,))
    assert torch.autograd.gradcheck(
        lambda a, b: xft.cross_entropy(a, b, reduction=reduction), (x, p))
    x3 = torch.randn(2, 4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    t3 = torch.randint(0, 4, (2, 3), generator=g)
    assert torch.autograd.gradcheck(lambda a: xft.cross_entropy(a, t3, reduction=reduction),
                                     (x3,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weights", [(None, None), ("w", None), (None, "pw"), ("w", "pw")])
@pytest.mark.parametrize("shape", [(13,), (6, 5), (2, 3, 5), (0, 5)])
def test_bce_with_logits_matches_pytorch(reduction, weights, shape):
    g = _seeded(6)
    x = (4 * torch.randn(shape, dtype=torch.float64, generator=g)).requires_grad_()
    y = torch.rand(shape, dtype=torch.float64, generator=g).requires_grad_()
    w = torch.rand(shape[-1:], dtype=torch.float64, generator=g) if weights[0] else None
    pw = torch.rand(shape[-1:], dtype=torch.float64, generator=g) * 3 if weights[1] else None
    ours = xft.binary_cross_entropy_with_logits(x, y, w, reduction=reduction, pos_weight=pw)
    ref = F.binary_cross_entropy_with_logits(x, y, w, reduction=reduction, pos_weight=pw)
    if reduction == "mean" and x.numel() == 0:
        assert ours.item() == 0.0
        return
    _check(ours, ref, ref, (x, y))


def test_gradcheck_binary_losses():
    g = _seeded(7)
    x = torch.randn(4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.rand(4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    pw = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    for red in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda a, b: xft.binary_cross_entropy_with_logits(a, b, reduction=red,
                                                              pos_weight=pw), (x, y))
        assert torch.autograd.gradcheck(
            lambda a: xft.sigmoid_focal_loss(a, y.detach(), 0.3, 1.5, red), (x,))




@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2), (-1, 2), (0.5, 0), (0.25, 0.5)])
def test_sigmoid_focal_loss_matches_torchvision_formula(reduction, alpha, gamma):
    g = _seeded(8)
    x = (3 * torch.randn(8, 6, dtype=torch.float64, generator=g)).requires_grad_()
    y = (torch.rand(8, 6, dtype=torch.float64, generator=g) > 0.7).double()
    ours = xft.sigmoid_focal_loss(x, y, alpha, gamma, reduction)
    ref = focal_reference(x, y, alpha, gamma, reduction)
    _check(ours, ref, ref, (x,), rtol=1e-10, atol=1e-12)


def test_focal_loss_refuses_a_target_that_requires_grad():
    x = torch.randn(3, requires_grad=True)
    with pytest.raises(ValueError, match="targets"):
        xft.sigmoid_focal_loss(x, torch.rand(3, requires_grad=True))


def test_modules_match_pytorch_modules():
    g = _seeded(9)
    x = torch.randn(10, 6, generator=g, requires_grad=True)
    t = torch.randint(0, 6, (10,), generator=g)
    w = torch.rand(6, generator=g)
    ours = xft.CrossEntropyLoss(weight=w, label_smoothing=0.05, ignore_index=2)
    ref = torch.nn.CrossEntropyLoss(weight=w, label_smoothing=0.05, ignore_index=2)
    _check(ours(x, t), ref(x, t), None, (x,))
    assert set(ours.state_dict()) == {"weight"}
    y = torch.rand(10, 6, generator=g)
    pw = torch.rand(6, generator=g)
    ours = xft.BCEWithLogitsLoss(pos_weight=pw, reduction="sum")
    ref = torch.nn.BCEWithLogitsLoss(pos_weight=pw, reduction="sum")
    _check(ours(x, y), ref(x, y), None, (x,))
    # legacy size_average/reduce arguments are honoured as PyTorch does
    _check(xft.CrossEntropyLoss(reduce=False)(x, t), torch.nn.CrossEntropyLoss(reduce=False)(x, t),
           None, (x,))


def test_without_grad_gives_the_same_values():
    g = _seeded(10)
    x = torch.randn(20, 9, generator=g)
    t = torch.randint(0, 9, (20,), generator=g)
    with_grad = xft.cross_entropy(x.clone().requires_grad_(), t, reduction="none")
    with torch.no_grad():
        plain = xft.cross_entropy(x.clone().requires_grad_(), t, reduction="none")
    assert not plain.requires_grad
    assert torch.equal(plain, with_grad.detach())
    torch.testing.assert_close(xft.cross_entropy(x, t), F.cross_entropy(x, t))


def test_backward_keeps_only_the_gradient_not_the_logits():
    g = _seeded(11)
    lin = torch.nn.Linear(8, 50)
    h = torch.randn(32, 8, generator=g)
    t = torch.randint(0, 50, (32,), generator=g)
    logits = lin(h)
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = xft.cross_entropy(logits, t)
    # one N x C tensor is saved, the gradient, and it is not the logits' memory (the
    # other is the 0-d loss, the anchor that makes a second derivative an error)
    assert [tuple(s.shape) for s in saved] == [tuple(logits.shape), ()]
    assert saved[0].untyped_storage().data_ptr() != logits.untyped_storage().data_ptr()
    loss.backward()
    ref = F.cross_entropy(lin(h), t)
    gw = torch.autograd.grad(ref, lin.weight)[0]
    torch.testing.assert_close(lin.weight.grad, gw)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_inplace_gradient_gives_the_same_parameter_gradients(reduction):
    g = _seeded(12)
    lin = torch.nn.Linear(8, 30).double()
    h = torch.randn(16, 8, dtype=torch.float64, generator=g)
    t = torch.randint(0, 30, (16,), generator=g)
    logits = lin(h)
    ptr = logits.data_ptr()
    loss = xft.cross_entropy(logits, t, reduction=reduction, inplace=True)
    up = torch.randn(loss.shape, dtype=torch.float64, generator=g)
    grads = torch.autograd.grad(loss, (lin.weight, lin.bias), up)
    ref = F.cross_entropy(lin(h), t, reduction=reduction)
    refg = torch.autograd.grad(ref, (lin.weight, lin.bias), up)
    torch.testing.assert_close(loss, ref)
    for a, b in zip(grads, refg):
        torch.testing.assert_close(a, b)
    assert logits.data_ptr() == ptr  # the gradient was written into the logits' memory


def test_inplace_mode_keeps_autograd_version_checks():
    g = _seeded(13)
    lin = torch.nn.Linear(4, 6)
    t = torch.randint(0, 6, (5,), generator=g)
    # tanh saves its output for the backward: overwriting it must be detected
    logits = torch.tanh(lin(torch.randn(5, 4, generator=g)))
    loss = xft.cross_entropy(logits, t, inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    leaf = torch.randn(5, 6, requires_grad=True)
    with pytest.raises(ValueError, match="leaf"):
        xft.cross_entropy(leaf, t, inplace=True)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        xft.cross_entropy(lin(torch.randn(2, 3, 4)).movedim(2, 1).contiguous(),
                          torch.zeros(2, 3, dtype=torch.long), inplace=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("inplace", [False, True])
def test_training_ends_with_the_same_parameters(dtype, inplace):
    """A small MLP trained for 25 SGD steps with either loss ends in the same place."""
    g = _seeded(14)
    h = torch.randn(64, 10, generator=g, dtype=dtype)
    t = torch.randint(0, 7, (64,), generator=g)

    def train(loss_fn):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(),
                                    torch.nn.Linear(32, 7)).to(dtype)
        opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        for _ in range(25):
            opt.zero_grad()
            loss_fn(model(h), t).backward()
            opt.step()
        return [p.detach() for p in model.parameters()], loss_fn(model(h), t).item()

    ours, loss_ours = train(lambda z, y: xft.cross_entropy(z, y, label_smoothing=0.1,
                                                           inplace=inplace))
    ref, loss_ref = train(lambda z, y: F.cross_entropy(z, y, label_smoothing=0.1))
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-3,
                                                                          atol=1e-4)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, **tol)
    assert loss_ours < 1.0  # it did learn


def test_thread_counts_give_bitwise_identical_results():
    g = _seeded(15)
    x = torch.randn(300, 1000, generator=g)
    t = torch.randint(0, 1000, (300,), generator=g)
    out = []
    for n in (1, 2):
        xi = x.clone().requires_grad_()
        loss = xft.cross_entropy(xi, t, n_threads=n)
        loss.backward()
        out.append((loss.detach(), xi.grad))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def test_non_contiguous_and_integer_label_dtypes():
    g = _seeded(16)
    x = torch.randn(12, 20, generator=g, dtype=torch.float64)[:, ::2].requires_grad_()
    t = torch.randint(0, 10, (12,), generator=g)
    ours = xft.cross_entropy(x, t.to(torch.int32), reduction="none")
    _check(ours, F.cross_entropy(x, t, reduction="none"), None, (x,))


def test_bad_input_raises_clear_errors():
    x = torch.randn(4, 3)
    t = torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="cpu"):
        xft.cross_entropy(x.to("meta"), t)
    with pytest.raises(ValueError, match="device"):
        xft.binary_cross_entropy_with_logits(x, x.to("meta"))
    with pytest.raises(TypeError, match="input must be a floating tensor"):
        xft.cross_entropy(torch.ones(4, 3, dtype=torch.int64), t)
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        xft.cross_entropy(np.ones((4, 3), np.float32), t)
    with pytest.raises(ValueError, match=r"target\[1\]"):
        xft.cross_entropy(x.requires_grad_(), torch.tensor([0, 3, 1, 1]))
    with pytest.raises(ValueError, match="same as input size"):
        xft.binary_cross_entropy_with_logits(x, torch.rand(4, 2))
    with pytest.raises(ValueError, match="reduction"):
        xft.cross_entropy(x, t, reduction="avg")


def test_import_is_lazy_and_explains_a_missing_torch():
    code = ("import sys, xent_fast; assert 'torch' not in sys.modules; "
            "sys.modules['torch'] = None\n"
            "try:\n    import xent_fast.torch\nexcept ImportError as e:\n"
            "    assert 'pip install' in str(e), e\n    print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=_package_parent())
    assert out.stdout.strip() == "ok", out.stderr


def _package_parent():
    import os

    import xent_fast
    return os.path.dirname(os.path.dirname(xent_fast.__file__))


def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(xft, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0
