"""xent_fast.torch.linear_cross_entropy / LinearCrossEntropyLoss against the materialised
PyTorch reference (float64 autograd of ``F.cross_entropy(F.linear(h, W, b), y)``): shapes,
options, chunk sizes and thread counts (bitwise), low-precision dtypes, autocast,
torch.compile, bad input, the module's state and a few SGD steps."""

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
xft = pytest.importorskip("xent_fast.torch")
import xent_fast._linear as _lin  # noqa: E402

if not hasattr(F, "linear_cross_entropy"):  # pragma: no cover - PyTorch < 2.13
    pytest.skip("needs PyTorch's linear_cross_entropy (2.13)", allow_module_level=True)

REDUCTIONS = ["mean", "sum", "none"]
F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _data(batch, h, v, dtype=F64, bias=True, ignored=0.25, seed=0):
    g = _gen(seed)
    x = torch.randn(*batch, h, generator=g, dtype=F64).to(dtype).requires_grad_()
    w = (torch.randn(v, h, generator=g, dtype=F64) / max(h, 1) ** 0.5).to(dtype)
    w.requires_grad_()
    b = (torch.randn(v, generator=g, dtype=F64) * 0.1).to(dtype).requires_grad_() if bias else None
    y = torch.randint(0, v, batch, generator=g)
    if ignored:
        y[torch.rand(batch, generator=g) < ignored] = -100
    return x, w, b, y


def _reference(x, w, b, y, reduction="mean", **kw):
    """The materialised path (classes last, rows flattened): xent_fast.torch.cross_entropy
    when z_loss/softcap are asked for (PyTorch has neither), else PyTorch's own."""
    h = x.reshape(-1, x.shape[-1])
    logits = F.linear(h, w, b)
    if kw.get("z_loss") or kw.get("softcap") is not None:
        loss = xft.cross_entropy(logits, y.reshape(-1), reduction=reduction, **kw)
    else:
        loss = F.cross_entropy(logits, y.reshape(-1), reduction=reduction, **kw)
    return loss.reshape(y.shape) if reduction == "none" else loss


def _grads(loss, inputs, seed=1):
    up = torch.randn(loss.shape, dtype=loss.dtype, generator=_gen(seed))
    inputs = [t for t in inputs if t is not None and t.requires_grad]
    return torch.autograd.grad(loss, inputs, up)


def _same(a, b, **tol):
    torch.testing.assert_close(a, b, **tol)


def _against_reference(x, w, b, y, reduction, **kw):
    ours = xft.linear_cross_entropy(x, w, y, linear_bias=b, reduction=reduction, **kw)
    ref = _reference(x, w, b, y, reduction, **kw)
    if reduction == "mean" and not (y != kw.get("ignore_index", -100)).any():
        # nothing counted: 0 here (PyTorch: nan)
        ref = 0 * (x.sum() + w.sum() + (0 if b is None else b.sum()))
    _same(ours, ref)
    if ours.requires_grad:
        for a, r in zip(_grads(ours, (x, w, b)), _grads(ref, (x, w, b))):
            _same(a, r)


# --- values and gradients ----------------------------------------------------------------

@pytest.mark.parametrize("batch,h,v", [((0,), 4, 6), ((1,), 4, 6), ((37,), 5, 11),
                                       ((9,), 1, 7), ((9,), 4, 1), ((2, 5), 3, 8)],
                         ids=["N=0", "N=1", "N=37", "H=1", "V=1", "3-D"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_shapes(batch, h, v, reduction):
    x, w, b, y = _data(batch, h, v)
    _against_reference(x, w, b, y, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", [
    dict(weight=True), dict(label_smoothing=0.2), dict(ignore_index=3),
    dict(weight=True, label_smoothing=0.1, ignore_index=-100), dict(z_loss=1e-2),
    dict(softcap=2.0), dict(z_loss=1e-3, softcap=5.0, label_smoothing=0.1, weight=True),
], ids=["weight", "smoothing", "ignore=3", "all-pytorch", "z_loss", "softcap", "all"])
def test_options(opts, reduction):
    x, w, b, y = _data((29,), 6, 13)
    kw = dict(opts)
    if kw.pop("weight", False):
        kw["weight"] = torch.rand(13, dtype=F64, generator=_gen(5)) + 0.5
    y[y == -100] = kw.get("ignore_index", -100)
    _against_reference(x, w, b, y, reduction, **kw)


def test_no_bias_no_input_grad_and_1d_input():
    x, w, _, y = _data((15,), 4, 9, bias=False)
    x = x.detach()  # a frozen trunk: only the head's gradient
    _against_reference(x, w, None, y, "mean")
    x1, y1 = x[0], y[0].clamp(min=0)  # (H,) and a 0-d target, as PyTorch
    _same(xft.linear_cross_entropy(x1, w, y1), F.linear_cross_entropy(x1, w, y1))


def test_ignore_index_none_means_minus_100():
    x, w, b, y = _data((20,), 4, 7)
    ours = xft.linear_cross_entropy(x, w, y, linear_bias=b, ignore_index=None)
    _same(ours, F.linear_cross_entropy(x, w, y, linear_bias=b, ignore_index=None))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_ignored(reduction):
    x, w, b, y = _data((6,), 4, 5, ignored=0)
    y[:] = -100
    loss = xft.linear_cross_entropy(x, w, y, linear_bias=b, reduction=reduction)
    assert not loss.any()  # "mean" is 0 here (PyTorch: nan), as xft.cross_entropy's
    gx, gw, gb = torch.autograd.grad(loss.sum(), (x, w, b))
    assert not gx.any() and not gw.any() and not gb.any()


def test_fallbacks_probability_targets_and_k_dimensional():
    x, w, b, _ = _data((5,), 4, 6)
    p = torch.softmax(torch.randn(5, 6, dtype=F64, generator=_gen(3)), 1)
    _same(xft.linear_cross_entropy(x, w, p, linear_bias=b),
          F.linear_cross_entropy(x, w, p, linear_bias=b))
    wk = torch.randn(6, 3, 4, dtype=F64, generator=_gen(4))
    yk = torch.randint(0, 6, (5, 3), generator=_gen(4))
    _same(xft.linear_cross_entropy(x, wk, yk), F.linear_cross_entropy(x, wk, yk))


# --- determinism -------------------------------------------------------------------------

@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 16 rows and weight-gradient tiles of 16 classes, so that small inputs
    take many blocks, chunks and tiles."""
    monkeypatch.setattr(_lin, "_BLOCK_BYTES", 1)
    monkeypatch.setattr(_lin, "_MIN_THREADED_OUTPUTS", 1)
    monkeypatch.setattr(_lin, "_TILE_BYTES", 1)


def _run(dtype, chunk=None, n_threads=None, reduction="sum", seed=0):
    x, w, b, y = _data((203,), 24, 70, dtype=dtype, seed=seed)
    opts = None if chunk is None else torch.nn.LinearCrossEntropyOptions(
        batch_chunk_size=chunk, chunking_method=None)
    loss = xft.linear_cross_entropy(x, w, y, linear_bias=b, reduction=reduction,
                                    options=opts, n_threads=n_threads, label_smoothing=0.1)
    return (loss,) + _grads(loss, (x, w, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_bitwise_same_for_every_chunk_size_and_thread_count(small_blocks, dtype, reduction):
    base = _run(dtype, reduction=reduction)
    for chunk, nt in ((1, None), (16, 1), (50, 2), (100000, None), (None, 1), (None, 2)):
        for a, b in zip(base, _run(dtype, chunk, nt, reduction)):
            assert torch.equal(a, b), (chunk, nt)


def test_blocks_match_reference(small_blocks):
    x, w, b, y = _data((203,), 24, 70)
    _against_reference(x, w, b, y, "mean", label_smoothing=0.1)


# --- low precision, autocast -------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_low_precision(dtype):
    x, w, b, y = _data((300,), 64, 500, dtype=dtype, ignored=0.1)
    loss = xft.linear_cross_entropy(x, w, y, linear_bias=b)
    assert loss.dtype == dtype  # as F.linear_cross_entropy's
    gx, gw, gb = torch.autograd.grad(loss, (x, w, b))
    assert (gx.dtype, gw.dtype, gb.dtype) == (dtype,) * 3
    x32, w32, b32 = (t.detach().float().requires_grad_() for t in (x, w, b))
    ref = xft.linear_cross_entropy(x32, w32, y, linear_bias=b32)  # same values, float32
    assert abs(loss.item() - ref.item()) <= 2 ** -8 * abs(ref.item())
    for a, r in zip((gx, gw, gb), torch.autograd.grad(ref, (x32, w32, b32))):
        _same(a.float(), r, atol=2e-2 * r.abs().max().item(), rtol=0)


def test_autocast_matches_pytorch():
    x, w, b, y = _data((64,), 32, 100, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = xft.linear_cross_entropy(x, w, y, linear_bias=b)
        ref = F.linear_cross_entropy(x, w, y, linear_bias=b)
    assert ours.dtype == ref.dtype == torch.float32
    _same(ours, ref, atol=1e-2, rtol=1e-2)
    for a, r in zip(_grads(ours, (x, w, b)), _grads(ref, (x, w, b))):
        assert a.dtype == r.dtype == torch.float32
        _same(a, r, atol=2e-2 * r.abs().max().item(), rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float64 is left alone, as PyTorch
        x64, w64, _, _ = _data((8,), 4, 5)
        assert xft.linear_cross_entropy(x64, w64, y[:8] % 5).dtype == F64


# --- torch.compile -----------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compile_fullgraph(reduction):
    torch._dynamo.reset()
    x, w, b, y = _data((17,), 8, 12, dtype=torch.float32)

    def step(x, w, b, y):
        loss = xft.linear_cross_entropy(x, w, y, linear_bias=b, reduction=reduction,
                                        z_loss=1e-3)
        return loss.sum() if reduction == "none" else loss

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = compiled(x, w, b, y)
    want = step(x, w, b, y)
    _same(got, want)
    for a, r in zip(torch.autograd.grad(got, (x, w, b)), torch.autograd.grad(want, (x, w, b))):
        _same(a, r)


# --- errors ------------------------------------------------------------------------------

def _bad_cases():
    x, w, b, y = _data((5,), 4, 7, ignored=0)
    return [
        ("dtype mix", (x, w.float(), y), {}, (RuntimeError, TypeError)),
        ("out of range", (x, w, y + 7), {}, (IndexError, ValueError)),
        ("negative class", (x, w, y - 50), {}, (IndexError, ValueError)),
        ("float target of wrong shape", (x, w, y.double()), {}, (RuntimeError, TypeError)),
        ("target shape", (x, w, y[:3]), {}, (RuntimeError, ValueError)),
        ("in_features", (x, w[:, :3], y), {}, (RuntimeError, ValueError)),
        ("reduction", (x, w, y), dict(reduction="avg"), (ValueError,)),
        ("smoothing", (x, w, y), dict(label_smoothing=2.0), (RuntimeError, ValueError)),
        ("z_loss", (x, w, y), dict(z_loss=-1.0), (RuntimeError, ValueError)),
        ("weight shape", (x, w, y), dict(weight=torch.ones(3, dtype=F64)),
         (RuntimeError, ValueError)),
        ("bias shape", (x, w, y), dict(linear_bias=torch.ones(3, dtype=F64)),
         (RuntimeError, ValueError)),
        ("integer input", (x.detach().int(), w.detach().int(), y), {},
         (NotImplementedError, TypeError)),
        ("not a tensor", (x.tolist(), w, y), {}, (TypeError,)),
        ("weight requires grad", (x, w, y),
         dict(weight=torch.ones(7, dtype=F64, requires_grad=True)), (RuntimeError,)),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_input(case):
    _, args, kw, types = case
    for t in types:
        with pytest.raises(t):
            xft.linear_cross_entropy(*args, **kw)


def test_double_backward_is_an_error():
    x, w, b, y = _data((9,), 4, 6)
    loss = xft.linear_cross_entropy(x, w, y, linear_bias=b)
    gx, = torch.autograd.grad(loss, x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(gx.sum(), w)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_double_backward_is_an_error_when_compiled_eagerly(reduction):
    # the custom op's autograd formula runs with create_graph under the eager backend:
    # its gradients, differentiated again, gave silent zeros
    x, w, b, y = _data((9,), 4, 6)
    w = w.detach().requires_grad_()
    fn = torch.compile(lambda x, w: xft.linear_cross_entropy(
        x, w, y, linear_bias=b, reduction=reduction).sum(), fullgraph=True, backend="eager")
    gw, = torch.autograd.grad(fn(x, w), w, create_graph=True)
    want, = torch.autograd.grad(
        xft.linear_cross_entropy(x, w, y, linear_bias=b, reduction=reduction).sum(), w)
    torch.testing.assert_close(gw.detach(), want)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(gw.pow(2).sum(), w)


# --- the module --------------------------------------------------------------------------

def test_module_state_dict_round_trip():
    weight = torch.rand(10) + 0.5
    theirs = torch.nn.LinearCrossEntropyLoss(6, 10, bias=True, weight=weight,
                                             label_smoothing=0.1)
    ours = xft.LinearCrossEntropyLoss(6, 10, bias=True, weight=torch.ones(10),
                                      label_smoothing=0.1)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x, y = torch.randn(12, 6, generator=_gen()), torch.randint(0, 10, (12,), generator=_gen())
    _same(ours(x, y), theirs(x, y))
    theirs.load_state_dict(xft.LinearCrossEntropyLoss(6, 10, bias=True,
                                                      weight=weight).state_dict())
    assert {n for n, _ in ours.named_parameters()} == {n for n, _ in theirs.named_parameters()}


def test_sgd_steps_give_pytorchs_parameters():
    def model(cls):
        torch.manual_seed(0)
        trunk = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh()).double()
        head = cls(16, 30, bias=True, dtype=F64, label_smoothing=0.05)
        return trunk, head

    runs = []
    for cls in (torch.nn.LinearCrossEntropyLoss, xft.LinearCrossEntropyLoss):
        trunk, head = model(cls)
        params = [*trunk.parameters(), *head.parameters()]
        opt = torch.optim.SGD(params, lr=0.5, momentum=0.9)
        g = _gen(7)
        for _ in range(5):
            x = torch.randn(2, 11, 8, generator=g, dtype=F64)  # (B, T, H) batches
            y = torch.randint(0, 30, (2, 11), generator=g)
            y[0, -1] = -100
            opt.zero_grad()
            h = trunk(x)
            if cls is torch.nn.LinearCrossEntropyLoss:  # PyTorch takes (N, H) only
                loss = head(h.reshape(-1, 16), y.reshape(-1))
            else:
                loss = head(h, y)
            loss.backward()
            opt.step()
        runs.append(params)
    for a, b in zip(*runs):
        _same(a, b)
