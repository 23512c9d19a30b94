"""xf.linear_cross_entropy(_and_grad) against the materialised reference: float64 PyTorch
autograd of F.cross_entropy(F.linear(h, W, b), y, ...) (z_loss and softcap added by
hand), and its gradients with respect to h, W and b.

Most tests shrink the row blocks to 16 rows (``_BLOCK_BYTES``) so that small inputs
already go through several blocks and chunks, and check that every chunk_rows and
n_threads gives bitwise the same results.
"""

import math
import tracemalloc

import numpy as np
import pytest

import xent_fast as xf
import xent_fast._linear as lin

torch = pytest.importorskip("torch")
F = torch.nn.functional

REDUCTIONS = ["mean", "sum", "none"]
DTYPES = [np.float32, np.float64]


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 16 rows whatever the shape (the default is about 64 MiB of logits)."""
    monkeypatch.setattr(lin, "_BLOCK_BYTES", 1)


def reference(h, W, y, *, linear_bias=None, weight=None, ignore_index=-100,
              reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=None,
              grad_output=1.0):
    """float64 torch autograd: (loss, grad_h, grad_W, grad_b or None)."""
    ht = torch.tensor(np.asarray(h, np.float64), requires_grad=True)
    Wt = torch.tensor(np.asarray(W, np.float64), requires_grad=True)
    bt = (None if linear_bias is None
          else torch.tensor(np.asarray(linear_bias, np.float64), requires_grad=True))
    logits = F.linear(ht, Wt, bt)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    V = Wt.shape[0]
    tt = torch.as_tensor(np.asarray(y)).to(torch.int64)
    z2, t1 = logits.reshape(-1, V), tt.reshape(-1)
    wt = None if weight is None else torch.tensor(np.asarray(weight, np.float64))
    per = F.cross_entropy(z2, t1, weight=wt, ignore_index=ignore_index, reduction="none",
                          label_smoothing=label_smoothing)
    counted = t1 != ignore_index
    lse = torch.logsumexp(z2, dim=-1)
    per = per + torch.where(counted, z_loss * lse**2, torch.zeros_like(lse))
    if reduction == "none":
        loss = per.reshape(tt.shape)
    elif reduction == "sum":
        loss = per.sum()
    else:
        w = torch.ones(V, dtype=torch.float64) if wt is None else wt
        denom = w[t1.clamp(0, V - 1)][counted].sum()
        # xent_fast: "mean" over nothing is 0 with a zero gradient (PyTorch: nan)
        loss = per.sum() / denom if counted.any() else per.sum() * 0.0
    go = torch.as_tensor(np.asarray(grad_output, dtype=np.float64))
    (loss * go).sum().backward()
    return (loss.detach().numpy(), ht.grad.numpy(), Wt.grad.numpy(),
            None if bt is None else bt.grad.numpy())


def close(got, want, dt, what):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    if dt == np.float64:
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * max(scale, 1.0),
                                   err_msg=what)
    else:
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * max(scale, 1e-3),
                                   err_msg=what)


def check(result, ref, dt, has_bias):
    loss, gh, gw, gb = result
    rl, rh, rw, rb = ref
    close(loss, rl, dt, "loss")
    close(gh, rh, dt, "grad_hidden")
    close(gw, rw, dt, "grad_linear_weight")
    if has_bias:
        close(gb, rb, dt, "grad_linear_bias")
    else:
        assert gb is None
    for g in (gh, gw) + (() if gb is None else (gb,)):
        assert g.dtype == dt and g.flags.c_contiguous


def make(seed, batch, H, V, dt, ignored=0.25, scale=1.0):
    rng = np.random.default_rng(seed)
    h = (rng.standard_normal(batch + (H,)) * scale).astype(dt)
    W = (rng.standard_normal((V, H)) / math.sqrt(max(H, 1)) * 2).astype(dt)
    b = (rng.standard_normal(V) * 0.5).astype(dt)
    y = rng.integers(0, V, size=batch)
    if ignored:
        y[rng.random(batch) < ignored] = -100
    w = rng.uniform(0.3, 2.5, V)
    return rng, h, W, b, y, w


OPTIONS = {
    "plain": {},
    "weight": {"weight": True},
    "bias": {"bias": True},
    "smoothing+weight": {"weight": True, "label_smoothing": 0.1},
    "z_loss": {"z_loss": 1e-2},
    "softcap": {"softcap": 2.0},
    "ignore_valid_class": {"ignore_index": 3},
    "everything": {"weight": True, "bias": True, "label_smoothing": 0.2, "z_loss": 1e-3,
                   "softcap": 3.0},
}
SHAPES = {  # id: (batch shape, H, V)
    "N37": ((37,), 5, 11),
    "N0": ((0,), 5, 11),
    "N1": ((1,), 5, 11),
    "3d": ((3, 7), 6, 13),
    "H1": ((9,), 1, 11),
    "V1": ((9,), 5, 1),
    "1d_hidden": ((), 5, 11),
}


def _kwargs(opts, b, w):
    kw = dict(opts)
    kw.pop("bias", None)
    if kw.pop("weight", False):
        kw["weight"] = w
    if opts.get("bias"):
        kw["linear_bias"] = b
    return kw


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opt", list(OPTIONS))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_matches_torch_reference(small_blocks, shape, opt, reduction, dt):
    batch, H, V = SHAPES[shape]
    rng, h, W, b, y, w = make(hash((shape, opt)) % 2**32, batch, H, V, dt)
    if opt == "ignore_valid_class":
        y[y == -100] = 3 if V > 3 else 0          # ignore_index=3 is a class (V > 3)
    kw = _kwargs(OPTIONS[opt], b, w)
    g_out = 0.7 if reduction != "none" else rng.uniform(-1, 2, batch)
    got = xf.linear_cross_entropy_and_grad(h, W, y, reduction=reduction, grad_output=g_out,
                                           chunk_rows=16, **kw)
    check(got, reference(h, W, y, reduction=reduction, grad_output=g_out, **kw), dt,
          "linear_bias" in kw)
    loss_only = xf.linear_cross_entropy(h, W, y, reduction=reduction, **kw)
    np.testing.assert_array_equal(loss_only, got[0])     # the same value, bitwise
    if reduction != "none":
        assert isinstance(got[0], np.floating) and got[0].dtype == dt
    else:
        assert np.shape(got[0]) == batch


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_every_row_ignored_or_no_rows(small_blocks, dt, reduction):
    for batch in [(20,), (0,), (2, 0)]:
        _, h, W, b, y, w = make(1, batch, 4, 6, dt)
        y[...] = -100
        loss, gh, gw, gb = xf.linear_cross_entropy_and_grad(
            h, W, y, linear_bias=b, weight=w, reduction=reduction)
        if reduction == "none":
            assert loss.shape == batch and not loss.any()
        else:
            assert loss == 0.0 and loss.dtype == dt     # "mean" of nothing: 0, not nan
        assert gh.shape == h.shape and not gh.any()
        assert gw.shape == W.shape and not gw.any() and not gb.any()


def test_weights_of_the_counted_rows_summing_to_zero_give_nan():
    _, h, W, b, y, w = make(2, (5,), 3, 4, np.float64, ignored=0)
    w[:] = 0.0
    loss, gh, gw, _ = xf.linear_cross_entropy_and_grad(h, W, y, weight=w)
    assert math.isnan(loss)                               # as PyTorch
    assert math.isnan(xf.cross_entropy(h @ W.T, y, weight=w))


@pytest.mark.parametrize("tiles", [False, True], ids=["whole", "tiles"])
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("opt", ["plain", "everything"])
def test_bitwise_same_for_every_chunk_rows_and_n_threads(small_blocks, monkeypatch, dt, opt,
                                                         tiles):
    # tiles: the weight gradient of the blocks after the first in tiles of 16 classes
    monkeypatch.setattr(lin, "_TILE_BYTES", 1 if tiles else None)
    batch, H, V = (4, 75), 24, 190
    rng, h, W, b, y, w = make(3, batch, H, V, dt, ignored=0.3, scale=2.0)
    kw = _kwargs(OPTIONS[opt], b, w)
    for reduction in REDUCTIONS:
        g_out = 1.5 if reduction != "none" else rng.uniform(-1, 2, batch)
        results = []
        for chunk in [None, 1, 16, 17, 48, 100, 299, 10**12]:
            for nt in [1, 2, -1]:
                results.append(xf.linear_cross_entropy_and_grad(
                    h, W, y, reduction=reduction, chunk_rows=chunk, n_threads=nt,
                    grad_output=g_out, **kw))
        first = results[0]
        for r in results[1:]:
            for a, bb in zip(first, r):
                np.testing.assert_array_equal(a, bb)
        check(first, reference(h, W, y, reduction=reduction, grad_output=g_out, **kw), dt,
              "linear_bias" in kw)
        for chunk in [None, 33]:
            np.testing.assert_array_equal(
                xf.linear_cross_entropy(h, W, y, reduction=reduction, chunk_rows=chunk, **kw),
                first[0])


def test_default_blocks_and_several_of_them():
    # The default block size, with rows for two blocks and a part (logits of 170 MB),
    # against float64 made a slice of rows at a time.
    V, H = 20000, 256
    r0 = lin.block_rows(V, H, 4)
    assert r0 % 16 == 0 and r0 * H > lin._MIN_THREADED_OUTPUTS
    assert r0 * (V + 2 * H) * 4 <= 4 * lin._BLOCK_BYTES
    rng, h, W, b, y, w = make(4, (2 * r0 + 5,), H, V, np.float32, ignored=0.1)
    a = xf.linear_cross_entropy_and_grad(h, W, y, linear_bias=b, reduction="sum")
    c = xf.linear_cross_entropy_and_grad(h, W, y, linear_bias=b, reduction="sum",
                                         chunk_rows=3 * r0)
    for x, z in zip(a, c):
        np.testing.assert_array_equal(x, z)
    h64, W64, b64 = (v.astype(np.float64) for v in (h, W, b))
    loss, gh, gw, gb = 0.0, np.zeros(h.shape), np.zeros(W.shape), np.zeros(V)
    for s in range(0, len(y), 500):
        rows = slice(s, s + 500)
        part, g = xf.cross_entropy_and_grad(h64[rows] @ W64.T + b64, y[rows], reduction="sum")
        loss += part
        gh[rows] = g @ W64
        gw += g.T @ h64[rows]
        gb += g.sum(0)
    check(a, (loss, gh, gw, gb), np.float32, True)


def test_matches_materialised_xent_fast_and_torch_linear_cross_entropy():
    _, h, W, b, y, w = make(5, (64,), 16, 300, np.float64)
    loss, gh, gw, gb = xf.linear_cross_entropy_and_grad(h, W, y, linear_bias=b, weight=w,
                                                        label_smoothing=0.1)
    ref_loss, g = xf.cross_entropy_and_grad(h @ W.T + b, y, weight=w, label_smoothing=0.1)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    np.testing.assert_allclose(gh, g @ W, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gw, g.T @ h, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gb, g.sum(0), rtol=1e-12, atol=1e-15)
    if hasattr(F, "linear_cross_entropy"):     # PyTorch >= 2.13
        tl = F.linear_cross_entropy(torch.tensor(h), torch.tensor(W), torch.tensor(y),
                                    linear_bias=torch.tensor(b), weight=torch.tensor(w),
                                    label_smoothing=0.1)
        np.testing.assert_allclose(loss, tl.item(), rtol=1e-12)


def test_layouts_and_dtypes_of_the_inputs():
    _, h, W, b, y, w = make(6, (3, 10), 7, 12, np.float64)
    want = xf.linear_cross_entropy_and_grad(h, W, y, linear_bias=b)
    # a transposed (H, V) weight is used as it is; a strided hidden is copied
    Wf = np.asfortranarray(W)
    hs = np.zeros(h.shape[:-1] + (2 * h.shape[-1],))[..., ::2]
    hs[...] = h
    for args in [(hs, W), (h, Wf), (h, W[::-1][::-1]), (h.tolist(), W.tolist())]:
        got = xf.linear_cross_entropy_and_grad(*args, y.astype(np.int32), linear_bias=list(b))
        for g, r in zip(got, want):
            np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-15)
    # read-only inputs work and no input is written
    for a in (h, W, b, y):
        a.setflags(write=False)
    copies = [a.copy() for a in (h, W, b, y)]
    xf.linear_cross_entropy_and_grad(h, W, y, linear_bias=b)
    for a, c in zip((h, W, b, y), copies):
        np.testing.assert_array_equal(a, c)
    # float16 is computed in float32
    loss, gh, gw, gb = xf.linear_cross_entropy_and_grad(
        h.astype(np.float16), W.astype(np.float16), y, linear_bias=b)
    assert loss.dtype == gh.dtype == gw.dtype == gb.dtype == np.float32
    # the class index targets may be any integer dtype
    for tdt in (np.int8, np.uint16, np.int32, np.uint64):
        yy = np.where(y < 0, 0, y).astype(tdt)
        np.testing.assert_array_equal(xf.linear_cross_entropy(h, W, yy),
                                      xf.linear_cross_entropy(h, W, yy.astype(np.int64)))


def test_no_logits_sized_allocation(monkeypatch):
    monkeypatch.setattr(lin, "_BLOCK_BYTES", 1 << 20)
    monkeypatch.setattr(lin, "_MIN_THREADED_OUTPUTS", 0)
    N, H, V = 4096, 16, 4000             # logits: 62.5 MiB; outputs: 0.5 MiB
    _, h, W, b, y, w = make(7, (N,), H, V, np.float32, ignored=0.5)
    xf.linear_cross_entropy_and_grad(h[:16], W, y[:16])     # warm up
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        res = xf.linear_cross_entropy_and_grad(h, W, y, linear_bias=b)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    outputs = sum(a.nbytes for a in res[1:])
    # one block of logits and gathered rows, a weight-gradient tile, target bookkeeping
    block = lin.block_rows(V, H, 4) * (V + 2 * H) * 4
    tile = lin.tile_rows(V, H, 4) * H * 4
    assert peak - outputs < block + tile + (1 << 20), (peak, block, tile)
    assert peak < N * V * 4 / 16


def test_sgd_steps_give_pytorchs_parameters():
    rng = np.random.default_rng(8)
    B, T, H, V = 3, 11, 6, 17
    W = rng.standard_normal((V, H)) * 0.3
    b = np.zeros(V)
    cls_w = rng.uniform(0.5, 2.0, V)
    batches = [(rng.standard_normal((B, T, H)), rng.integers(0, V, (B, T))) for _ in range(5)]
    for _, y in batches:
        y[:, -2:] = -100                               # padding
    lr = 0.5

    head = torch.nn.Linear(H, V, dtype=torch.float64)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(W))
        head.bias.copy_(torch.tensor(b))
    opt = torch.optim.SGD(head.parameters(), lr=lr)
    for x, y in batches:
        opt.zero_grad()
        loss = F.cross_entropy(head(torch.tensor(x)).reshape(-1, V),
                               torch.tensor(y).reshape(-1), weight=torch.tensor(cls_w),
                               label_smoothing=0.05)
        loss.backward()
        opt.step()

    for chunk in [None, 1]:
        Wn, bn = W.copy(), b.copy()
        for x, y in batches:
            _, _, gw, gb = xf.linear_cross_entropy_and_grad(
                x, Wn, y, linear_bias=bn, weight=cls_w, label_smoothing=0.05,
                chunk_rows=chunk)
            Wn -= lr * gw
            bn -= lr * gb
        np.testing.assert_allclose(Wn, head.weight.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(bn, head.bias.detach().numpy(), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------ bad input

def _good():
    rng = np.random.default_rng(9)
    return (rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)),
            rng.integers(0, 5, (2, 3)))


BAD = [  # (what to change, exception, words the message must contain)
    (dict(hidden=np.ones((2, 3, 4), np.int64)), TypeError, "hidden"),
    (dict(hidden=None), TypeError, "hidden"),
    (dict(hidden=np.float64(1.0)), ValueError, "hidden"),
    (dict(hidden="abc"), TypeError, "hidden"),
    (dict(linear_weight=np.ones((5, 4), np.int32)), TypeError, "linear_weight"),
    (dict(linear_weight=np.ones((5, 4), np.float32)), TypeError, "linear_weight"),
    (dict(linear_weight=np.ones(4)), ValueError, "linear_weight"),
    (dict(linear_weight=np.ones((5, 3))), ValueError, "linear_weight"),
    (dict(linear_weight=np.ones((0, 4))), ValueError, "linear_weight"),
    (dict(linear_weight=np.ones((5, 4, 1))), ValueError, "linear_weight"),
    (dict(target=np.zeros((2, 3))), TypeError, "target"),
    (dict(target=np.zeros((2, 3), bool)), TypeError, "target"),
    (dict(target=np.zeros((3, 2), int)), ValueError, "target"),
    (dict(target=np.zeros(6, int)), ValueError, "target"),
    (dict(target=np.array([[0, 1, 2], [3, 5, 0]])), ValueError, "target[1, 1] = 5"),
    (dict(target=np.array([[0, 1, 2], [3, -1, 7]])), ValueError, "target[1, 1] = -1"),
    (dict(target=np.array([[0, 1, 2], [3, 4, 2**63]], np.uint64)), ValueError, "target[1, 2]"),
    (dict(linear_bias=np.ones(4)), ValueError, "linear_bias"),
    (dict(linear_bias=np.ones((1, 5))), ValueError, "linear_bias"),
    (dict(linear_bias="abc"), TypeError, "linear_bias"),
    (dict(weight=np.ones(4)), ValueError, "weight"),
    (dict(weight=2.0), ValueError, "weight"),
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(reduction=None), ValueError, "reduction"),
    (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
    (dict(label_smoothing="0.1"), TypeError, "label_smoothing"),
    (dict(z_loss=-1.0), ValueError, "z_loss"),
    (dict(z_loss=math.nan), ValueError, "z_loss"),
    (dict(softcap=0.0), ValueError, "softcap"),
    (dict(softcap=True), TypeError, "softcap"),
    (dict(ignore_index=1.5), TypeError, "ignore_index"),
    (dict(ignore_index=2**64), ValueError, "ignore_index"),
    (dict(n_threads=0), ValueError, "n_threads"),
    (dict(n_threads=1.0), TypeError, "n_threads"),
    (dict(chunk_rows=0), ValueError, "chunk_rows"),
    (dict(chunk_rows=-5), ValueError, "chunk_rows"),
    (dict(chunk_rows=2.0), TypeError, "chunk_rows"),
    (dict(chunk_rows=True), TypeError, "chunk_rows"),
    (dict(chunk_rows="8"), TypeError, "chunk_rows"),
    (dict(chunk_rows=np.ones(2, int)), TypeError, "chunk_rows"),
]
BAD_GRAD = [
    (dict(grad_output=np.ones((2, 3))), ValueError, "grad_output"),            # "mean"
    (dict(grad_output=np.ones(6), reduction="none"), ValueError, "grad_output"),
    (dict(grad_output="x"), TypeError, "grad_output"),
    (dict(grad_output=None), TypeError, "grad_output"),
]


@pytest.mark.parametrize("change, exc, words", BAD + BAD_GRAD,
                         ids=[f"{list(c)[0]}-{i}" for i, (c, _, _) in enumerate(BAD + BAD_GRAD)])
def test_bad_input_names_the_argument(change, exc, words):
    h, W, y = _good()
    args = dict(hidden=h, linear_weight=W, target=y)
    kw = {k: v for k, v in change.items() if k not in args}
    args.update({k: v for k, v in change.items() if k in args})
    with pytest.raises(exc, match=words.replace("[", r"\[").replace("]", r"\]")):
        xf.linear_cross_entropy_and_grad(args["hidden"], args["linear_weight"],
                                         args["target"], **kw)
    if "grad_output" not in change:
        with pytest.raises(exc, match=words.replace("[", r"\[").replace("]", r"\]")):
            xf.linear_cross_entropy(args["hidden"], args["linear_weight"], args["target"], **kw)


def test_good_edge_values_are_accepted():
    h, W, y = _good()
    for kw in [dict(chunk_rows=np.int64(3)), dict(chunk_rows=2**70), dict(n_threads=-1),
               dict(ignore_index=2**63 - 1), dict(grad_output=np.float32(2.0)),
               dict(grad_output=np.array(2.0)), dict(softcap=np.float64(5.0)),
               dict(reduction="none", grad_output=np.ones((2, 3), np.float32))]:
        xf.linear_cross_entropy_and_grad(h, W, y, **kw)
