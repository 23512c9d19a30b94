"""Conformance of the modules with PyTorch's ModuleInfo samples and test_nn.py's tests.

Part 1: the samples PyTorch's module tests feed ``torch.nn.CrossEntropyLoss`` and
``torch.nn.BCEWithLogitsLoss`` are generated at test time from the installed wheel's
``torch.testing._internal.common_modules.module_db`` (not copied), for every dtype the
ModuleInfo lists for CPU. ``xent_fast.torch``'s module is built with the same constructor
arguments; the loss (value, dtype, shape) and the gradients of every input that requires
grad (the logits, and probability targets) must match PyTorch's. The ModuleInfo's error
inputs must raise an instance of the exception type PyTorch raises.

Part 2: the behaviours test/test_nn.py checks for cross-entropy and BCE-with-logits
(label smoothing with ignore_index and weights, probability targets with label
smoothing, k-dimensional inputs, empty batches, the reductions, non-contiguous weights,
broadcast weights, stability, ...), exercised by this file's own code on our modules,
each compared with PyTorch's.

Deliberate differences (README, ``xent_fast.torch``'s docstring) are skipped by
``_differs_deliberately`` with the reason; the list stays short.
"""

import copy
import itertools
import pickle

import pytest

torch = pytest.importorskip("torch")
xft = pytest.importorskip("xent_fast.torch")
F = torch.nn.functional


try:
    from torch.testing._internal.common_modules import module_db
except Exception as exc:  # noqa: BLE001 - a PyTorch without its testing package
    pytest.skip(f"PyTorch's ModuleInfo database is not importable: {exc}",
                allow_module_level=True)

OURS = {
    torch.nn.CrossEntropyLoss: xft.CrossEntropyLoss,
    torch.nn.BCEWithLogitsLoss: xft.BCEWithLogitsLoss,
}
INFOS = [mi for mi in module_db if mi.module_cls in OURS]

TOL = {
    torch.float64: dict(rtol=1e-7, atol=1e-7),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    # computed in float32 by xent_fast and rounded once; PyTorch rounds along the way
    torch.float16: dict(rtol=5e-3, atol=5e-3),
    torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
}
LOW = (torch.float16, torch.bfloat16)

DELIBERATE = {}  # (module, dtype, desc) -> reason, filled while the samples run


def _differs_deliberately(module, forward_args):
    """The documented reason a sample is left out, or None."""
    if module.__class__ is torch.nn.CrossEntropyLoss and module.reduction == "mean":
        target = forward_args[1]
        if (not target.is_floating_point() and target.numel()
                and bool((target == module.ignore_index).all())):
            return "a mean over rows that are all ignored is 0 here, nan in PyTorch"
    return None


def _leaf(value, widen=False):
    """A fresh leaf (keeping requires_grad); ``widen``: in float64, the reference for
    bfloat16/float16 (xent_fast computes those in float32)."""
    if isinstance(value, torch.Tensor):
        rg = value.requires_grad
        value = value.detach()
        if widen and value.is_floating_point():
            value = value.double()
        return value.clone().requires_grad_(rg)
    return value


def _cases():
    for mi in INFOS:
        for dtype in sorted(mi.supported_dtypes("cpu"), key=str):
            yield pytest.param(mi, dtype, id=f"{mi.module_cls.__name__}-{dtype}")


def test_module_db_has_both_modules():
    assert {mi.module_cls for mi in INFOS} == set(OURS)


@pytest.mark.parametrize("mi,dtype", list(_cases()))
def test_moduleinfo_samples_match_pytorch(mi, dtype):
    inputs = mi.module_inputs_func(mi, device="cpu", dtype=dtype, requires_grad=True,
                                   training=True)
    assert inputs, "the ModuleInfo gave no samples"
    tol = TOL[dtype]
    widen = dtype in LOW
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for sample in inputs:
        ci, fi = sample.constructor_input, sample.forward_input
        where = f"{sample.desc!r}: ctor {ci.kwargs!r:.160}, forward " + ", ".join(
            f"{tuple(a.shape)} {a.dtype}" for a in fi.args)
        native = mi.module_cls(*ci.args, **ci.kwargs)
        reason = _differs_deliberately(native, fi.args)
        if reason is not None:
            DELIBERATE[(mi.module_cls.__name__, str(dtype), sample.desc)] = reason
            continue
        ours = OURS[mi.module_cls](*map(_leaf, ci.args),
                                   **{k: _leaf(v) for k, v in ci.kwargs.items()})
        ours.train()
        # same state as PyTorch's module (weight/pos_weight buffers, their dtype)
        assert ours.state_dict().keys() == native.state_dict().keys(), where
        for k, v in native.state_dict().items():
            torch.testing.assert_close(ours.state_dict()[k], v, rtol=0, atol=0)
        mine = [_leaf(a) for a in fi.args]
        got = ours(*mine, **fi.kwargs)
        if widen:
            ref_mod = mi.module_cls(*(_leaf(a, True) for a in ci.args),
                                    **{k: _leaf(v, True) for k, v in ci.kwargs.items()})
            theirs = [_leaf(a, True) for a in fi.args]
        else:
            ref_mod = native
            theirs = [_leaf(a) for a in fi.args]
        want = ref_mod(*theirs, **fi.kwargs)
        if widen:  # the dtype PyTorch returns on these inputs, the value rounded to it
            want = want.to(native(*map(_leaf, fi.args), **fi.kwargs).dtype)
        assert got.dtype == want.dtype, where
        assert got.shape == want.shape, where
        torch.testing.assert_close(got, want, msg=lambda m: f"{where}: {m}", **tol)

        leaves = [t for t in mine if isinstance(t, torch.Tensor) and t.requires_grad]
        ref_leaves = [t for t in theirs if isinstance(t, torch.Tensor) and t.requires_grad]
        assert leaves, where
        up = torch.randn(want.shape, generator=gen, dtype=torch.float32).to(want.dtype)
        g_got = torch.autograd.grad(got, leaves, up.to(got.dtype))
        g_want = torch.autograd.grad(want, ref_leaves, up.to(want.dtype))
        for a, b, leaf in zip(g_got, g_want, leaves):
            assert a.dtype == leaf.dtype and a.shape == leaf.shape, where
            torch.testing.assert_close(a, b.to(a.dtype),
                                       msg=lambda m: f"{where} (gradient): {m}", **tol)
        checked += 1
    assert checked >= len(inputs) - 6, "more samples left out than the deliberate ones"


def test_the_deliberate_differences_stay_few():
    assert len(DELIBERATE) <= 6, DELIBERATE


@pytest.mark.parametrize("mi", [m for m in INFOS if m.module_error_inputs_func is not None],
                         ids=lambda m: m.module_cls.__name__)
def test_moduleinfo_error_inputs_raise_pytorchs_exception_type(mi):
    errors = mi.module_error_inputs_func(mi, device="cpu", dtype=torch.float32,
                                         requires_grad=True, training=True)
    assert errors
    for err in errors:
        m = err.module_error_input
        ci, fi = m.constructor_input, m.forward_input
        with pytest.raises(err.error_type):  # (PyTorch's own wording is not required)
            OURS[mi.module_cls](*ci.args, **ci.kwargs)(*fi.args, **fi.kwargs)


# --- Module plumbing: what PyTorch's module tests rely on --------------------------------

@pytest.mark.parametrize("cls,kwargs", [
    (torch.nn.CrossEntropyLoss, dict(weight=torch.rand(3), ignore_index=1,
                                     label_smoothing=0.1, reduction="sum")),
    (torch.nn.BCEWithLogitsLoss, dict(weight=torch.rand(4), pos_weight=torch.rand(4),
                                      reduction="none")),
])
def test_module_state_conversion_copy_and_pickle(cls, kwargs):
    ours, native = OURS[cls](**kwargs), cls(**kwargs)
    assert dict(ours.named_buffers()).keys() == dict(native.named_buffers()).keys()
    assert list(ours.parameters()) == []
    for name in ("reduction", "ignore_index", "label_smoothing"):
        assert getattr(ours, name, None) == getattr(native, name, None)
    x = torch.randn(5, 3 if cls is torch.nn.CrossEntropyLoss else 4, dtype=torch.float64)
    t = (torch.randint(0, 3, (5,)) if cls is torch.nn.CrossEntropyLoss
         else torch.rand(5, 4, dtype=torch.float64))
    ours.double()
    native.double()
    assert all(b.dtype == torch.float64 for b in ours.buffers())
    torch.testing.assert_close(ours(x, t), native(x, t))
    for other in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        torch.testing.assert_close(other(x, t), native(x, t))
    fresh = OURS[cls](**{k: (torch.zeros_like(v) if isinstance(v, torch.Tensor) else v)
                         for k, v in kwargs.items()}).double()
    fresh.load_state_dict(native.state_dict())
    torch.testing.assert_close(fresh(x, t), native(x, t))


# --- Ports of test/test_nn.py's cross-entropy and BCE-with-logits tests ----------------

REDUCTIONS = ("none", "mean", "sum")


def _pair(cls, **kwargs):
    return OURS[cls](**kwargs), cls(**kwargs)


def _check_same(cls, x, t, tol=None, **kwargs):
    """Ours and PyTorch's module on copies of (x, t): loss and gradients of what requires
    grad (a random upstream gradient for reduction="none")."""
    ours, native = _pair(cls, **kwargs)
    xa, ta = _leaf(x), _leaf(t)
    xb, tb = _leaf(x), _leaf(t)
    got, want = ours(xa, ta), native(xb, tb)
    tol = tol or TOL[x.dtype]
    assert got.dtype == want.dtype and got.shape == want.shape
    torch.testing.assert_close(got, want, **tol)
    la = [v for v in (xa, ta) if v.requires_grad]
    if la and got.numel():
        up = torch.rand(want.shape, dtype=want.dtype) + 0.5
        ga = torch.autograd.grad(got, la, up)
        gb = torch.autograd.grad(want, [v for v in (xb, tb) if v.requires_grad], up)
        for a, b in zip(ga, gb):
            torch.testing.assert_close(a, b, **tol)
    return got, want


def _other_dims(k, gen):
    return [int(v) for v in torch.randint(2, 5, (k,), generator=gen)]


def test_prob_target_all_reductions_k_dims():
    gen = torch.Generator().manual_seed(1)
    for k in range(5):
        dims = _other_dims(k, gen)
        x = torch.randn(5, 4, *dims, generator=gen, requires_grad=True)
        t = torch.randn(5, 4, *dims, generator=gen, requires_grad=True)  # unnormalised
        w = torch.randn(4, generator=gen).abs()
        for reduction, weight in itertools.product(REDUCTIONS, (None, w)):
            _check_same(torch.nn.CrossEntropyLoss, x, t, weight=weight, reduction=reduction)


@pytest.mark.parametrize("target_kind", ["prob", "index"])
def test_unit_weights_equal_no_weights(target_kind):
    gen = torch.Generator().manual_seed(2)
    for k in range(5):
        dims = _other_dims(k, gen)
        x = torch.randn(5, 4, *dims, generator=gen, requires_grad=True)
        t = (torch.randn(5, 4, *dims, generator=gen) if target_kind == "prob"
             else torch.randint(0, 4, (5, *dims), generator=gen))
        for reduction in REDUCTIONS:
            plain = xft.CrossEntropyLoss(reduction=reduction)(x, t)
            unit = xft.CrossEntropyLoss(weight=torch.ones(4), reduction=reduction)(x, t)
            torch.testing.assert_close(plain, unit)
            _check_same(torch.nn.CrossEntropyLoss, x, t, weight=torch.ones(4),
                        reduction=reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_no_batch_dim_equals_batch_of_one(reduction, weighted):
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(5, generator=gen) if weighted else None
    m = xft.CrossEntropyLoss(reduction=reduction, weight=w)
    for x, t in ((torch.randn(5, generator=gen).log_softmax(-1),
                  torch.randn(5, generator=gen).softmax(-1)),
                 (torch.randn(5, generator=gen), torch.tensor(3))):
        single = m(x, t)
        batch = m(x.unsqueeze(0), t.unsqueeze(0))
        torch.testing.assert_close(single, batch.squeeze(0) if reduction == "none" else batch)
        _check_same(torch.nn.CrossEntropyLoss, x.requires_grad_(), t, weight=w,
                    reduction=reduction)


def test_one_hot_target_equals_index_target():
    gen = torch.Generator().manual_seed(4)
    for k in range(5):
        dims = _other_dims(k, gen)
        x = torch.randn(5, 4, *dims, generator=gen, requires_grad=True)
        t = torch.randint(0, 4, (5, *dims), generator=gen)
        one_hot = F.one_hot(t, 4).movedim(-1, 1).to(x.dtype)
        w = torch.randn(4, generator=gen).abs()
        for reduction, weight in itertools.product(REDUCTIONS, (None, w)):
            if reduction == "mean" and weight is not None:
                continue  # soft and hard targets divide by different weights (as PyTorch)
            m = xft.CrossEntropyLoss(weight=weight, reduction=reduction)
            torch.testing.assert_close(m(x, t), m(x, one_hot))


@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_label_smoothing_out_of_range_raises(target_kind):
    x = torch.randn(3, 4)
    t = torch.arange(3) if target_kind == "index" else torch.randn(3, 4)
    for eps in (1.2, -0.1):
        with pytest.raises(RuntimeError, match="label_smoothing"):
            xft.CrossEntropyLoss(label_smoothing=eps)(x, t)


def test_label_smoothing_equals_smoothed_probabilities():
    gen = torch.Generator().manual_seed(5)
    for k, reduction, eps in itertools.product(range(5), REDUCTIONS, (0.05, 0.15)):
        dims = _other_dims(k, gen)
        x = torch.randn(10, 4, *dims, dtype=torch.float64, generator=gen, requires_grad=True)
        t = torch.randint(0, 4, (10, *dims), generator=gen)
        one_hot = F.one_hot(t, 4).movedim(-1, 1).to(x.dtype)
        smoothed = one_hot * (1 - eps) + eps / 4
        by_index = xft.CrossEntropyLoss(reduction=reduction, label_smoothing=eps)(x, t)
        by_prob = xft.CrossEntropyLoss(reduction=reduction)(x, smoothed)
        torch.testing.assert_close(by_index, by_prob, rtol=1e-7, atol=1e-5)
        _check_same(torch.nn.CrossEntropyLoss, x, t, reduction=reduction,
                    label_smoothing=eps)


def test_label_smoothing_with_probability_targets():
    gen = torch.Generator().manual_seed(6)
    for k, eps in itertools.product(range(5), (0.05, 0.15)):
        dims = _other_dims(k, gen)
        x = torch.randn(10, 4, *dims, generator=gen, requires_grad=True)
        # log-probabilities as targets, as PyTorch's test (negative "probabilities")
        t = F.log_softmax(torch.randn(10, 4, *dims, generator=gen), dim=1)
        for reduction in REDUCTIONS:
            smoothed = xft.CrossEntropyLoss(reduction=reduction, label_smoothing=eps)(x, t)
            manual = xft.CrossEntropyLoss(reduction=reduction)(x, t * (1 - eps) + eps / 4)
            torch.testing.assert_close(smoothed, manual)
            _check_same(torch.nn.CrossEntropyLoss, x, t.requires_grad_(), reduction=reduction,
                        label_smoothing=eps)


def test_label_smoothing_weight_ignore_index_denominator():
    wgt = torch.tensor([0.3, 0.6])
    inp1 = torch.tensor([[0.3, 0.4], [1.0, 2.0]])
    inp2 = torch.tensor([[0.3, 0.6], [1.0, 2.0]])  # differs only in the ignored row
    for reduction, eps, weight in itertools.product(REDUCTIONS, (0.05, 0.15), (None, wgt)):
        for ignore_index, first in ((-100, -100), (-2, -2), (2, 2)):
            t = torch.tensor([first, 1])
            kw = dict(reduction=reduction, label_smoothing=eps, weight=weight,
                      ignore_index=ignore_index)
            m = xft.CrossEntropyLoss(**kw)
            torch.testing.assert_close(m(inp1, t), m(inp2, t))
            if reduction != "none":  # the ignored row is not counted in the mean
                torch.testing.assert_close(m(inp1, t), m(inp2[1:], t[1:]))
            _check_same(torch.nn.CrossEntropyLoss, inp1.clone().requires_grad_(), t, **kw)


def test_probability_target_with_ignore_index_raises_as_pytorch():
    x, t = torch.randn(2, 3), torch.rand(2, 3)
    for ii in (0, 1, 5):
        with pytest.raises(RuntimeError):
            torch.nn.CrossEntropyLoss(ignore_index=ii)(x, t)
        with pytest.raises(RuntimeError, match="ignore_index"):
            xft.CrossEntropyLoss(ignore_index=ii)(x, t)
    for ii in (-1, -100):  # a negative one is accepted (and has no effect), as in PyTorch
        _check_same(torch.nn.CrossEntropyLoss, x.requires_grad_(), t, ignore_index=ii)


@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 5, 7), (2, 3, 0, 7), (2, 3, 5, 0),
                                   (2, 3, 5, 7, 0)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch(shape, reduction):
    x = torch.rand(shape, requires_grad=True)
    t = torch.randint(0, 3, shape[:1] + shape[2:])
    got = xft.CrossEntropyLoss(reduction=reduction)(x, t)
    want = torch.nn.CrossEntropyLoss(reduction=reduction)(x.detach(), t)
    assert got.shape == want.shape and got.dtype == want.dtype
    if reduction == "mean":
        # deliberate: a mean over no counted rows is 0 here (PyTorch: nan)
        assert bool(want.isnan()) and got.item() == 0.0
    else:
        torch.testing.assert_close(got, want)
    got.sum().backward()
    assert x.grad.shape == x.shape


def test_zero_classes_probability_target_does_not_divide_by_zero():
    # (test_nn's zero_div test: probabilities over an empty class dimension)
    for shape in ((5, 0), (0,), (2, 0, 3)):
        x = torch.rand(shape, requires_grad=True)
        t = torch.rand(shape)
        for reduction in REDUCTIONS:
            got = xft.cross_entropy(x, t, reduction=reduction)
            want = F.cross_entropy(x.detach(), t, reduction=reduction)
            assert got.shape == want.shape and got.dtype == want.dtype
            if reduction == "mean":  # deliberate: 0 (PyTorch: nan, 0 / 0 rows of classes)
                assert got.item() == 0.0
            else:
                torch.testing.assert_close(got, want)
            got.sum().backward()
            assert x.grad.shape == x.shape


def test_total_weight_zero():
    for shape in ((2, 3), (2, 3, 5, 7), (2, 3, 5, 7, 9)):
        x = torch.ones(shape, requires_grad=True)
        t = torch.zeros(shape[:1] + shape[2:], dtype=torch.long)
        w = torch.zeros(shape[1])
        for reduction in REDUCTIONS:
            got = xft.cross_entropy(x, t, w, reduction=reduction)
            want = F.cross_entropy(x.detach(), t, w, reduction=reduction)
            torch.testing.assert_close(got, want, equal_nan=True)


def test_all_ignored():
    for shape in ((2, 3), (2, 3, 5, 7)):
        x = torch.ones(shape, requires_grad=True)
        t = torch.zeros(shape[:1] + shape[2:], dtype=torch.long)
        for reduction in ("sum", "none"):
            got = xft.cross_entropy(x, t, ignore_index=0, reduction=reduction)
            torch.testing.assert_close(got, torch.zeros_like(got))
            got.sum().backward()
            torch.testing.assert_close(x.grad, torch.zeros_like(x))
            x.grad = None
        # deliberate: "mean" with every row ignored is 0 (PyTorch: nan), zero gradient
        got = xft.cross_entropy(x, t, ignore_index=0)
        assert got.item() == 0.0


def test_byte_target_matches_long():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(10, 4, generator=gen, requires_grad=True)
    t = torch.randint(0, 4, (10,), generator=gen)
    for reduction in REDUCTIONS:
        a = _check_same(torch.nn.CrossEntropyLoss, x, t, reduction=reduction)[0]
        b = _check_same(torch.nn.CrossEntropyLoss, x, t.to(torch.uint8),
                        reduction=reduction)[0]
        torch.testing.assert_close(a, b)


def test_out_of_range_class_index_raises():
    x = torch.randn(6, 3)
    for bad in (3, 255, -1):
        t = torch.tensor([0, 1, bad, 0, 1, 2])
        with pytest.raises(IndexError):
            xft.cross_entropy(x, t)
    # ignore_index out of the class range is fine (PyTorch's out_of_bounds_ignore_index)
    x.requires_grad_()
    t = torch.tensor([0, 1, 255, 0, 1, 2])
    for reduction in ("mean", "none"):
        _check_same(torch.nn.CrossEntropyLoss, x, t, ignore_index=255, reduction=reduction)


def test_weight_non_contiguous():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(7, 5, 3, generator=gen, requires_grad=True)
    t = torch.randint(0, 5, (7, 3), generator=gen)
    w_nc = torch.rand(5, 2, generator=gen)[:, 0]
    assert not w_nc.is_contiguous()
    for reduction in REDUCTIONS:
        got = xft.CrossEntropyLoss(weight=w_nc, reduction=reduction)(x, t)
        torch.testing.assert_close(
            got, xft.CrossEntropyLoss(weight=w_nc.contiguous(), reduction=reduction)(x, t))
        _check_same(torch.nn.CrossEntropyLoss, x, t, weight=w_nc, reduction=reduction)
        _check_same(torch.nn.CrossEntropyLoss, x, torch.rand(7, 5, 3, generator=gen),
                    weight=w_nc, reduction=reduction)


def test_non_contiguous_input_and_target():
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(6, 4, 3, generator=gen).transpose(0, 2).requires_grad_()  # (3, 4, 6)
    t = torch.randint(0, 4, (6, 3), generator=gen).t()
    assert not x.is_contiguous() and not t.is_contiguous()
    for reduction in REDUCTIONS:
        _check_same(torch.nn.CrossEntropyLoss, x, t, reduction=reduction,
                    label_smoothing=0.1)
    xs = torch.randn(8, 10, generator=gen)[::2, ::2].requires_grad_()
    _check_same(torch.nn.CrossEntropyLoss, xs, torch.randint(0, 5, (4,), generator=gen))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_against_float32(dtype):
    gen = torch.Generator().manual_seed(10)
    for shape in ((8, 5), (4, 5, 3, 2)):
        x32 = torch.randn(shape, generator=gen)
        t = torch.randint(0, 5, shape[:1] + shape[2:], generator=gen)
        for reduction in REDUCTIONS:
            x = x32.to(dtype).requires_grad_()
            ref = x32.to(dtype).float().requires_grad_()
            got = xft.CrossEntropyLoss(reduction=reduction)(x, t)
            want = F.cross_entropy(ref, t, reduction=reduction)
            assert got.dtype == dtype
            torch.testing.assert_close(got, want.to(dtype), **TOL[dtype])
            got.sum().backward()
            want.sum().backward()
            assert x.grad.dtype == dtype
            torch.testing.assert_close(x.grad, ref.grad.to(dtype), **TOL[dtype])


def test_precision_of_large_sums():
    # test_nn's precision test, scaled down: float64 logits, many rows
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(64, 2, 64, 64, dtype=torch.float64, generator=gen)
    t = torch.randint(0, 2, (64, 64, 64), generator=gen)
    for reduction in ("mean", "sum"):
        got = xft.cross_entropy(x, t, reduction=reduction)
        torch.testing.assert_close(got, F.cross_entropy(x, t, reduction=reduction),
                                   rtol=1e-12, atol=1e-12)


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(3, 4, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    t = torch.randint(0, 4, (3, 2), generator=gen)
    p = torch.rand(3, 4, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.rand(4, dtype=torch.float64, generator=gen)
    for reduction in REDUCTIONS:
        m = xft.CrossEntropyLoss(weight=w, reduction=reduction, label_smoothing=0.1)
        assert torch.autograd.gradcheck(lambda a: m(a, t), (x,))
        assert torch.autograd.gradcheck(m, (x, p))
        b = xft.BCEWithLogitsLoss(weight=w[:2], pos_weight=w[2:], reduction=reduction)
        assert torch.autograd.gradcheck(b, (x[:, 0], p[:, 0]))


# BCEWithLogitsLoss

def test_bce_with_logits_shape_mismatch_raises_value_error():
    for x, t in ((torch.rand(5, 1), torch.rand(5)), (torch.rand(5), torch.rand(5, 1))):
        with pytest.raises(ValueError):
            xft.BCEWithLogitsLoss()(x, t)


def test_bce_with_logits_equals_sigmoid_then_bce():
    gen = torch.Generator().manual_seed(13)
    t = torch.rand(64, 4, generator=gen)
    x = torch.rand(64, 4, generator=gen) - 0.5
    torch.testing.assert_close(xft.BCEWithLogitsLoss()(x, t),
                               torch.nn.BCELoss()(torch.sigmoid(x), t))
    w = torch.rand(4, generator=gen)
    torch.testing.assert_close(xft.BCEWithLogitsLoss(w)(x, t),
                               torch.nn.BCELoss(w)(torch.sigmoid(x), t))
    t0, x0 = torch.zeros(4, 1), torch.full((4, 1), -100.0)
    for reduction in ("mean", "none"):
        torch.testing.assert_close(xft.BCEWithLogitsLoss(reduction=reduction)(x0, t0),
                                   torch.nn.BCELoss(reduction=reduction)(torch.sigmoid(x0),
                                                                         t0))
    w1 = torch.rand(1, generator=gen)
    torch.testing.assert_close(xft.BCEWithLogitsLoss(w1)(x0, t0),
                               torch.nn.BCELoss(w1)(torch.sigmoid(x0), t0))


def test_bce_with_logits_large_tensors_with_grad():
    gen = torch.Generator().manual_seed(14)
    t = torch.rand(512, 256, generator=gen)
    for reduction in REDUCTIONS:
        x = (torch.rand(512, 256, generator=gen) - 0.5).requires_grad_()
        w = torch.rand(256, generator=gen)
        _check_same(torch.nn.BCEWithLogitsLoss, x, t, weight=w, reduction=reduction)
        _check_same(torch.nn.BCEWithLogitsLoss, x, t, pos_weight=w, reduction=reduction)


def test_bce_with_logits_grad_at_zero():
    for pos_weight in (None, torch.ones(3, 1)):
        x = torch.zeros(3, 1, requires_grad=True)
        xft.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="sum")(x, torch.zeros(3, 1)
                                                                      ).backward()
        torch.testing.assert_close(x.grad, torch.full((3, 1), 0.5))


def test_bce_with_logits_broadcasts_weights_and_pos_weights():
    gen = torch.Generator().manual_seed(15)
    t = torch.rand(16, 4, generator=gen)
    x = torch.rand(16, 4, generator=gen) - 0.5
    for w in (torch.rand(4, generator=gen), torch.rand(16, 1, generator=gen)):
        torch.testing.assert_close(xft.BCEWithLogitsLoss(w)(x, t),
                                   xft.BCEWithLogitsLoss(w.expand(16, 4).contiguous())(x, t))
        _check_same(torch.nn.BCEWithLogitsLoss, x.clone().requires_grad_(), t, weight=w)
    pw = torch.rand(4, generator=gen)
    ref = xft.BCEWithLogitsLoss(pos_weight=pw)(x, t)
    for expanded in (pw.expand(1, 4), pw.expand(16, 4)):  # (expanded: non-contiguous)
        torch.testing.assert_close(xft.BCEWithLogitsLoss(pos_weight=expanded)(x, t), ref)
        _check_same(torch.nn.BCEWithLogitsLoss, x.clone().requires_grad_(), t,
                    pos_weight=expanded)
    torch.testing.assert_close(xft.BCEWithLogitsLoss(pos_weight=torch.ones(16, 4))(x, t),
                               xft.BCEWithLogitsLoss()(x, t))


def test_bce_with_logits_stability():
    x, t = torch.tensor([0.0, -120.0]), torch.tensor([0.0, 1.0])
    for pos_weight in (None, torch.tensor([1.0, 1.0])):
        out = xft.BCEWithLogitsLoss(pos_weight=pos_weight)(x, t)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)(x, t))


def test_bce_with_logits_target_gradient_and_shapes():
    gen = torch.Generator().manual_seed(16)
    for shape in ((), (7,), (3, 5), (2, 3, 4)):
        x = torch.randn(shape, dtype=torch.float64, generator=gen, requires_grad=True)
        t = torch.rand(shape, dtype=torch.float64, generator=gen, requires_grad=True)
        for reduction in REDUCTIONS:
            _check_same(torch.nn.BCEWithLogitsLoss, x, t, reduction=reduction)
    x = torch.randn(0, 4, requires_grad=True)
    for reduction in REDUCTIONS:
        got = xft.BCEWithLogitsLoss(reduction=reduction)(x, torch.rand(0, 4))
        want = torch.nn.BCEWithLogitsLoss(reduction=reduction)(x.detach(), torch.rand(0, 4))
        assert got.shape == want.shape and got.dtype == want.dtype
        if reduction == "mean":  # deliberate: 0 over no elements (PyTorch: nan)
            assert bool(want.isnan()) and got.item() == 0.0
        else:
            torch.testing.assert_close(got, want)


def test_legacy_size_average_and_reduce():
    gen = torch.Generator().manual_seed(17)
    x = torch.randn(6, 3, generator=gen, requires_grad=True)
    t = torch.randint(0, 3, (6,), generator=gen)
    p = torch.rand(6, 3, generator=gen)
    with pytest.warns(UserWarning):
        for size_average, reduce in itertools.product((None, True, False), repeat=2):
            kw = dict(size_average=size_average, reduce=reduce)
            _check_same(torch.nn.CrossEntropyLoss, x, t, **kw)
            _check_same(torch.nn.BCEWithLogitsLoss, x, p, **kw)
