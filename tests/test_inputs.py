"""Input layouts, dtypes and argument validation."""

import numpy as np
import pytest

import xent_fast as xf
import reference as ref
from helpers import assert_close

# ---------------------------------------------------------------- layouts

N, C = 6, 5


def _base(rng):
    x = rng.standard_normal((N, C)) * 3
    t = rng.integers(0, C, N)
    t[2] = -100
    y = rng.dirichlet(np.ones(C), N)
    w = rng.uniform(0.5, 2, C)
    return x, t, y, w


def _variants(a, tmp_path, name):
    """The same values in many layouts: (label, array-like)."""
    out = []
    ro = a.copy()
    ro.setflags(write=False)
    out.append(("readonly", ro))
    path = tmp_path / f"{name}.bin"
    mm = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
    mm[...] = a
    mm.flush()
    del mm
    out.append(("memmap_r", np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)))
    out.append(("memmap_c", np.memmap(path, dtype=a.dtype, mode="c", shape=a.shape)))
    out.append(("fortran", np.asfortranarray(a)))
    out.append(("negstride", a[::-1].copy()[::-1]))
    big = np.zeros(tuple(2 * s for s in a.shape), dtype=a.dtype)
    sl = tuple(slice(None, None, 2) for _ in a.shape)
    big[sl] = a
    out.append(("strided", big[sl]))
    out.append(("byteswapped", a.astype(a.dtype.newbyteorder(">" if a.dtype.byteorder != ">" else "<"))))
    out.append(("list", a.tolist()))
    if a.ndim == 2:
        off = np.zeros((a.shape[1], a.shape[0]), dtype=a.dtype)
        off[...] = a.T
        out.append(("transposed_view", off.T))
    return out


def _assert_same_values(label, a, orig):
    if isinstance(a, np.ndarray):
        np.testing.assert_array_equal(np.asarray(a), orig, err_msg=f"{label}: input modified")


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_softmax_family_accepts_every_layout(rng, tmp_path, name):
    x, *_ = _base(rng)
    expected = getattr(ref, name)(x)
    for dt in [np.float32, np.float64]:
        xd = x.astype(dt)
        for label, v in _variants(xd, tmp_path, f"{name}_{np.dtype(dt).name}"):
            got = getattr(xf, name)(v)
            assert got.dtype == (np.float64 if label == "list" else np.dtype(dt)), label
            if label != "list":  # the same answer, bit for bit, as the plain C-contiguous array
                assert got.tobytes() == getattr(xf, name)(xd).tobytes(), label
            assert_close(got, expected if dt == np.float64 else getattr(ref, name)(xd), dt,
                         err_msg=label)
            _assert_same_values(label, v, xd)


@pytest.mark.parametrize("which", ["logits", "target", "weight", "probs"])
def test_cross_entropy_accepts_every_layout(rng, tmp_path, which):
    x, t, y, w = _base(rng)
    kw = dict(label_smoothing=0.1, z_loss=0.01)
    expected = {"index": ref.cross_entropy_and_grad(x, t, weight=w, **kw),
                "probs": ref.cross_entropy_and_grad(x, y, weight=w, **kw)}
    src = {"logits": x, "target": t, "weight": w, "probs": y}[which]
    kinds = {"target": ["index"], "probs": ["probs"]}.get(which, ["index", "probs"])
    for label, v in _variants(src, tmp_path, which):
        args = {"logits": x, "target": t, "weight": w, "probs": y}
        args[which] = v
        for kind in kinds:
            target = args["probs"] if kind == "probs" else args["target"]
            rl, rg = expected[kind]
            loss, g = xf.cross_entropy_and_grad(args["logits"], target, weight=args["weight"], **kw)
            assert_close(loss, rl, np.float64, err_msg=f"{label} {kind}")
            assert_close(g, rg, np.float64, err_msg=f"{label} {kind}")
            plain_l, plain_g = xf.cross_entropy_and_grad(x, y if kind == "probs" else t, weight=w, **kw)
            assert loss == plain_l and g.tobytes() == plain_g.tobytes(), f"{label} {kind}: not bitwise equal"
            assert_close(xf.cross_entropy(args["logits"], target, weight=args["weight"], **kw), rl,
                         np.float64, err_msg=f"{label} {kind}")
            _assert_same_values(label, v, src)


def test_3d_fortran_and_sliced_batches(rng):
    x = rng.standard_normal((4, 3, 7))
    t = rng.integers(0, 7, (4, 3))
    for v, tv in [(np.asfortranarray(x), np.asfortranarray(t)),
                  (np.swapaxes(np.swapaxes(x, 0, 1).copy(), 0, 1), np.swapaxes(t.T.copy(), 0, 1))]:
        loss, g = xf.cross_entropy_and_grad(v, tv, reduction="none")
        rl, rg = ref.cross_entropy_and_grad(x, t, reduction="none")
        assert_close(loss, rl, np.float64)
        assert_close(g, rg, np.float64)
        assert_close(xf.softmax(v), ref.softmax(x), np.float64)


def test_byteswapped_integer_targets(rng):
    x, t, _, _ = _base(rng)
    for dt in [">i8", ">i4", ">u2"]:
        tt = np.where(t < 0, 0, t).astype(dt)
        assert_close(xf.cross_entropy(x, tt), ref.cross_entropy(x, np.where(t < 0, 0, t)), np.float64)


def test_class_axis_slice_view(rng):
    # a non-contiguous slice along the class axis
    big = rng.standard_normal((5, 12))
    v = big[:, 1:8]
    t = np.array([0, 6, 3, 2, 1])
    assert_close(xf.cross_entropy(v, t, reduction="none"), ref.cross_entropy(v.copy(), t, reduction="none"),
                 np.float64)
    assert_close(xf.logsumexp(v), ref.logsumexp(v.copy()), np.float64)


@pytest.mark.parametrize("tdtype", [np.int8, np.int16, np.int32, np.int64,
                                    np.uint8, np.uint16, np.uint32, np.uint64])
def test_every_integer_target_dtype(rng, tdtype):
    x, t, _, _ = _base(rng)
    t = np.where(t < 0, 1, t)
    loss, g = xf.cross_entropy_and_grad(x, t.astype(tdtype), label_smoothing=0.1)
    rl, rg = ref.cross_entropy_and_grad(x, t, label_smoothing=0.1)
    assert_close(loss, rl, np.float64)
    assert_close(g, rg, np.float64)


def test_nested_lists_work():
    x = [[1.0, 2.0, 3.0], [0.5, -0.5, 0.0]]
    assert_close(xf.softmax(x), ref.softmax(x), np.float64)
    assert_close(xf.logsumexp(x), ref.logsumexp(x), np.float64)
    loss, g = xf.cross_entropy_and_grad(x, [2, 0])
    rl, rg = ref.cross_entropy_and_grad(x, np.array([2, 0]))
    assert_close(loss, rl, np.float64)
    assert_close(g, rg, np.float64)
    assert_close(xf.cross_entropy(x, [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]]),
                 ref.cross_entropy(x, np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])), np.float64)


def test_inputs_never_modified(rng):
    x, t, y, w = _base(rng)
    copies = [a.copy() for a in (x, t, y, w)]
    xf.softmax(x), xf.log_softmax(x), xf.logsumexp(x)
    for tgt in (t, y):
        for red in ["mean", "sum", "none"]:
            xf.cross_entropy(x, tgt, weight=w, reduction=red, label_smoothing=0.2, z_loss=0.1, softcap=3.0)
            xf.cross_entropy_and_grad(x, tgt, weight=w, reduction=red, label_smoothing=0.2, z_loss=0.1,
                                      softcap=3.0)
    for a, c in zip((x, t, y, w), copies):
        np.testing.assert_array_equal(a, c)


def test_float16_inputs_return_float32_everywhere(rng):
    x = (rng.standard_normal((4, 6)) * 2).astype(np.float16)
    t = np.array([0, 5, 2, 3])
    for f in (xf.softmax, xf.log_softmax, xf.logsumexp):
        assert f(x).dtype == np.float32
        assert_close(f(x), getattr(ref, f.__name__)(x), np.float16)
    assert xf.logsumexp(x[0]).dtype == np.float32
    loss, g = xf.cross_entropy_and_grad(x, t)
    assert type(loss) is np.float32 and g.dtype == np.float32
    assert type(xf.cross_entropy(x, t, reduction="sum")) is np.float32
    loss, g = xf.cross_entropy_and_grad(x, x.astype(np.float32) * 0 + 1 / 6, reduction="none")
    assert loss.dtype == np.float32 and g.dtype == np.float32


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_float32_and_float64_keep_their_dtype(rng, dt):
    x = rng.standard_normal((3, 4)).astype(dt)
    t = np.array([0, 1, 3])
    assert xf.softmax(x).dtype == dt and xf.log_softmax(x).dtype == dt and xf.logsumexp(x).dtype == dt
    loss, g = xf.cross_entropy_and_grad(x, t)
    assert type(loss) is np.dtype(dt).type and g.dtype == dt
    assert xf.cross_entropy(x, t, reduction="none").dtype == dt


# ---------------------------------------------------------------- logits errors

BAD_LOGITS = [
    np.array([[1, 2, 3]]),
    np.array([[1, 2, 3]], dtype=np.uint8),
    np.array([[True, False]]),
    np.array([[1 + 1j, 2]]),
    np.array([[1.0, "a"]], dtype=object),
    np.array([["a", "b"]]),
    None,
]


@pytest.mark.parametrize("bad", BAD_LOGITS, ids=["int", "uint8", "bool", "complex", "object", "str", "None"])
def test_non_float_logits_raise_type_error(bad):
    for f in (xf.softmax, xf.log_softmax, xf.logsumexp):
        if isinstance(bad, np.ndarray) and bad.dtype.kind in "iub":
            continue  # the softmax family computes them in float64 (test_softmax.py)
        with pytest.raises(TypeError, match="logits"):
            f(bad)
    with pytest.raises(TypeError, match="logits"):
        xf.cross_entropy(bad, np.array([0]))
    with pytest.raises(TypeError, match="logits"):
        xf.cross_entropy_and_grad(bad, np.array([0]))


@pytest.mark.parametrize("shape", [(0,), (4, 0), (0, 0), (2, 3, 0)], ids=str)
def test_zero_classes_raise_value_error_in_cross_entropy(shape):
    x = np.zeros(shape)
    t = np.zeros(shape[:-1], dtype=np.int64)
    with pytest.raises(ValueError, match="logits"):
        xf.cross_entropy(x, t)
    with pytest.raises(ValueError, match="logits"):
        xf.cross_entropy_and_grad(x, t)


def test_zero_dim_logits_raise_value_error_in_cross_entropy():
    with pytest.raises(ValueError, match="logits"):
        xf.cross_entropy(np.array(1.0), np.array(0))
    with pytest.raises(ValueError, match="logits"):
        xf.cross_entropy_and_grad(2.0, 0)


# ---------------------------------------------------------------- target errors

def test_float_target_of_batch_shape_raises_type_error():
    x = np.zeros((3, 4))
    for dt in [np.float64, np.float32, np.float16]:
        with pytest.raises(TypeError, match="class indices must be integers"):
            xf.cross_entropy(x, np.array([0.0, 1.0, 2.0], dtype=dt))
        with pytest.raises(TypeError, match="class indices must be integers"):
            xf.cross_entropy_and_grad(x, np.array([0.0, 1.0, 2.0], dtype=dt))
    with pytest.raises(TypeError, match="class indices must be integers"):
        xf.cross_entropy(np.zeros(4), np.float64(1.0))


def test_bool_target_raises_type_error():
    x = np.zeros((3, 2))
    with pytest.raises(TypeError, match="target"):
        xf.cross_entropy(x, np.array([True, False, True]))
    with pytest.raises(TypeError, match="target"):
        xf.cross_entropy_and_grad(x, np.ones((3, 2), dtype=bool))


WRONG_SHAPES = [(4,), (2,), (3, 1), (1, 3), (3, 4, 1), (3, 5), (4, 3), ()]


@pytest.mark.parametrize("tshape", WRONG_SHAPES + [(3, 4)], ids=str)
def test_integer_target_of_wrong_shape_raises_value_error(tshape):
    # (3, 4): an integer array of logits' shape is neither indices nor probabilities
    x = np.zeros((3, 4))
    t = np.zeros(tshape, dtype=np.int64)
    with pytest.raises(ValueError, match="target"):
        xf.cross_entropy(x, t)
    with pytest.raises(ValueError, match="target"):
        xf.cross_entropy_and_grad(x, t)


@pytest.mark.parametrize("tshape", WRONG_SHAPES, ids=str)
def test_float_target_of_wrong_shape_raises_value_error(tshape):
    x = np.zeros((3, 4))
    y = np.full(tshape, 0.25)
    with pytest.raises(ValueError, match="target"):
        xf.cross_entropy(x, y)
    with pytest.raises(ValueError, match="target"):
        xf.cross_entropy_and_grad(x, y)


@pytest.mark.parametrize("C", [1, 5])
def test_out_of_range_class_index_raises_value_error_naming_it(C):
    x = np.zeros((3, C))
    t = np.zeros(3, dtype=np.int64)
    t[1] = C
    with pytest.raises(ValueError, match="target") as e:
        xf.cross_entropy(x, t)
    assert str(C) in str(e.value)
    with pytest.raises(ValueError, match="target"):
        xf.cross_entropy_and_grad(x, t, reduction="none")


@pytest.mark.parametrize("value,dt", [(-1, np.int64), (-1, np.int8), (-101, np.int32), (2**62, np.int64),
                                      (2**63 - 1, np.int64), (-(2**63), np.int64), (2**63, np.uint64),
                                      (2**64 - 1, np.uint64), (2**32 + 1, np.uint64), (300, np.uint16)])
def test_bad_index_values_raise_value_error_with_value(value, dt):
    x = np.zeros((4, 3))
    t = np.array([0, 1, 2, 0], dtype=dt)
    t[2] = value
    for f in (xf.cross_entropy, xf.cross_entropy_and_grad):
        with pytest.raises(ValueError, match="target") as e:
            f(x, t)
        assert str(value) in str(e.value)


def test_minus_one_is_invalid_unless_it_is_the_ignore_index():
    x = np.zeros((2, 3))
    t = np.array([0, -1])
    with pytest.raises(ValueError, match="target"):
        xf.cross_entropy(x, t)
    assert xf.cross_entropy(x, t, ignore_index=-1) == pytest.approx(np.log(3), rel=1e-14)


def test_out_of_range_index_reports_batch_position():
    x = np.zeros((2, 3, 4))
    t = np.zeros((2, 3), dtype=np.int64)
    t[1, 2] = 7
    with pytest.raises(ValueError, match="target") as e:
        xf.cross_entropy(x, t)
    assert "7" in str(e.value)


def test_first_offending_position_is_reported():
    x = np.zeros((6, 3))
    t = np.array([0, 1, 99, 2, 77, 1])
    with pytest.raises(ValueError, match="target") as e:
        xf.cross_entropy(x, t)
    assert "99" in str(e.value)
    assert "77" not in str(e.value)


def test_out_of_range_index_in_1d_logits():
    with pytest.raises(ValueError, match="target"):
        xf.cross_entropy(np.zeros(3), 3)
    with pytest.raises(ValueError, match="target"):
        xf.cross_entropy_and_grad(np.zeros(3), np.int8(-5))


# ---------------------------------------------------------------- option errors

X = np.zeros((3, 4))
T = np.array([0, 1, 2])


@pytest.mark.parametrize("reduction", ["avg", "MEAN", "", "elementwise_mean", "batchmean"])
def test_invalid_reduction_raises_value_error(reduction):
    with pytest.raises(ValueError, match="reduction"):
        xf.cross_entropy(X, T, reduction=reduction)
    with pytest.raises(ValueError, match="reduction"):
        xf.cross_entropy_and_grad(X, T, reduction=reduction)


@pytest.mark.parametrize("eps", [-0.1, 1.0000001, 2.0, np.nan, np.inf])
def test_invalid_label_smoothing_raises_value_error(eps):
    with pytest.raises(ValueError, match="label_smoothing"):
        xf.cross_entropy(X, T, label_smoothing=eps)
    with pytest.raises(ValueError, match="label_smoothing"):
        xf.cross_entropy_and_grad(X, T, label_smoothing=eps)


@pytest.mark.parametrize("z", [-1e-9, -1.0, np.nan, np.inf, -np.inf])
def test_invalid_z_loss_raises_value_error(z):
    with pytest.raises(ValueError, match="z_loss"):
        xf.cross_entropy(X, T, z_loss=z)
    with pytest.raises(ValueError, match="z_loss"):
        xf.cross_entropy_and_grad(X, T, z_loss=z)


@pytest.mark.parametrize("s", [0.0, 0, -1.0, np.nan, np.inf, -np.inf])
def test_invalid_softcap_raises_value_error(s):
    with pytest.raises(ValueError, match="softcap"):
        xf.cross_entropy(X, T, softcap=s)
    with pytest.raises(ValueError, match="softcap"):
        xf.cross_entropy_and_grad(X, T, softcap=s)


def test_valid_edge_options_are_accepted():
    xf.cross_entropy(X, T, label_smoothing=0.0, z_loss=0.0, softcap=None)
    xf.cross_entropy(X, T, label_smoothing=1.0, z_loss=1e9, softcap=1e-3)
    xf.cross_entropy(X, T, softcap=1)


@pytest.mark.parametrize("wshape", [(3,), (5,), (4, 1), (1, 4), ()], ids=str)
def test_weight_of_wrong_shape_raises_value_error(wshape):
    with pytest.raises(ValueError, match="weight"):
        xf.cross_entropy(X, T, weight=np.ones(wshape))
    with pytest.raises(ValueError, match="weight"):
        xf.cross_entropy_and_grad(X, T, weight=np.ones(wshape))


@pytest.mark.parametrize("n", [0, -2, -100])
def test_invalid_n_threads_raise_value_error(n):
    for f in (xf.softmax, xf.log_softmax, xf.logsumexp):
        with pytest.raises(ValueError, match="n_threads"):
            f(X, n_threads=n)
    with pytest.raises(ValueError, match="n_threads"):
        xf.cross_entropy(X, T, n_threads=n)
    with pytest.raises(ValueError, match="n_threads"):
        xf.cross_entropy_and_grad(X, T, n_threads=n)


# ---------------------------------------------------------------- grad_output errors

@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_array_grad_output_with_reduction_raises_value_error(reduction):
    with pytest.raises(ValueError, match="grad_output"):
        xf.cross_entropy_and_grad(X, T, reduction=reduction, grad_output=np.ones(3))


@pytest.mark.parametrize("gshape", [(4,), (3, 1), (1, 3), (2,), (3, 4)], ids=str)
def test_grad_output_of_wrong_shape_raises_value_error(gshape):
    with pytest.raises(ValueError, match="grad_output"):
        xf.cross_entropy_and_grad(X, T, reduction="none", grad_output=np.ones(gshape))


# ---------------------------------------------------------------- grad_out errors

def test_grad_out_of_wrong_dtype_raises_type_error():
    with pytest.raises(TypeError, match="grad_out"):
        xf.cross_entropy_and_grad(X, T, grad_out=np.zeros((3, 4), np.float32))
    with pytest.raises(TypeError, match="grad_out"):
        xf.cross_entropy_and_grad(X.astype(np.float32), T, grad_out=np.zeros((3, 4)))
    x16 = X.astype(np.float16)
    with pytest.raises(TypeError, match="grad_out"):
        xf.cross_entropy_and_grad(x16, T, grad_out=x16)  # float16 computes in float32


@pytest.mark.parametrize("gshape", [(4, 3), (12,), (3, 4, 1), (3,)], ids=str)
def test_grad_out_of_wrong_shape_raises_value_error(gshape):
    with pytest.raises(ValueError, match="grad_out"):
        xf.cross_entropy_and_grad(X, T, grad_out=np.zeros(gshape))


def test_grad_out_non_contiguous_or_read_only_raises_value_error():
    with pytest.raises(ValueError, match="grad_out"):
        xf.cross_entropy_and_grad(X, T, grad_out=np.zeros((3, 8))[:, ::2])
    with pytest.raises(ValueError, match="grad_out"):
        xf.cross_entropy_and_grad(X, T, grad_out=np.zeros((4, 3)).T)
    ro = np.zeros((3, 4))
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="grad_out"):
        xf.cross_entropy_and_grad(X, T, grad_out=ro)


def test_grad_out_as_logits_when_logits_need_a_copy_raises():
    xt = np.zeros((4, 3)).T  # not C-contiguous
    with pytest.raises(ValueError, match="grad_out"):
        xf.cross_entropy_and_grad(xt, T, grad_out=xt)


def test_grad_out_partially_overlapping_logits_raises_value_error():
    buf = np.zeros(3 * 4 + 4)
    x = buf[:12].reshape(3, 4)
    g = buf[4:16].reshape(3, 4)
    with pytest.raises(ValueError, match="grad_out"):
        xf.cross_entropy_and_grad(x, T, grad_out=g)


def test_grad_out_overlapping_weight_raises_value_error():
    buf = np.ones(3 * 4 + 3)
    g = buf[:12].reshape(3, 4)
    w = buf[11:15]
    with pytest.raises(ValueError, match="grad_out"):
        xf.cross_entropy_and_grad(X, T, weight=w, grad_out=g)


def test_grad_out_overlapping_index_target_raises_value_error():
    raw = np.zeros(12 + 3)
    g = raw[:12].reshape(3, 4)
    t = raw[11:14].view(np.int64)
    t[:] = [0, 1, 2]
    with pytest.raises(ValueError, match="grad_out"):
        xf.cross_entropy_and_grad(X, t, grad_out=g)


def test_grad_out_equal_to_probability_target_raises_value_error():
    y = np.full((3, 4), 0.25)
    with pytest.raises(ValueError, match="grad_out"):
        xf.cross_entropy_and_grad(X, y, grad_out=y)
    buf = np.full(16, 0.25)
    with pytest.raises(ValueError, match="grad_out"):
        xf.cross_entropy_and_grad(X, buf[:12].reshape(3, 4), grad_out=buf[4:].reshape(3, 4))


def test_failed_validation_leaves_inputs_untouched():
    x = np.arange(12.0).reshape(3, 4)
    x0 = x.copy()
    g = np.full((3, 4), 7.0)
    with pytest.raises(ValueError):
        xf.cross_entropy_and_grad(x, np.array([0, 1, 9]), grad_out=g)
    np.testing.assert_array_equal(x, x0)


# ---------------------------------------------------------------- config / version

def test_version_and_config():
    assert isinstance(xf.__version__, str) and xf.__version__
    cfg = xf.config()
    assert isinstance(cfg, dict)
    for key in ["version", "openmp", "openmp_runtime", "max_threads", "simd"]:
        assert key in cfg, key
    assert cfg["version"] == xf.__version__
    assert isinstance(cfg["openmp"], bool)
    assert isinstance(cfg["max_threads"], int) and cfg["max_threads"] >= 1
    assert isinstance(cfg["simd"], str) and cfg["simd"]


def test_show_config_prints_the_config(capsys):
    cfg = xf.config()
    xf.show_config()
    out = capsys.readouterr().out
    for key in ["version", "openmp", "openmp_runtime", "max_threads", "simd"]:
        assert key in out, key
    assert xf.__version__ in out
    assert str(cfg["simd"]) in out
    assert str(cfg["max_threads"]) in out



def _unaligned(a):
    """A copy of `a` whose data starts one byte past an aligned address."""
    a = np.ascontiguousarray(a)
    buf = bytearray(a.nbytes + 1)
    out = np.frombuffer(buf, dtype=a.dtype, offset=1, count=a.size).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned or a.dtype.itemsize == 1
    return out


def test_unaligned_inputs_give_the_aligned_results():
    # Arrays deserialized from a byte stream (an .npz member, a pickle frame of
    # dask.distributed) can be unaligned: they must be copied, not read as they are
    # (a misaligned load is undefined behaviour in the kernels' C).
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 7)).astype(np.float32)
    t = rng.integers(0, 7, 40)
    y = xf.softmax(x)
    w = rng.uniform(0.5, 2, 7).astype(np.float32)
    g = rng.standard_normal(40).astype(np.float32)
    ux, ut, uy, uw, ug = map(_unaligned, (x, t, y, w, g))
    from xent_fast import _validation as v
    assert v.as_float_array(ux, "x").flags.aligned
    assert v.as_class_indices(ut, "t", (40,)).flags.aligned
    assert v.as_float_like(uw, "w", np.dtype(np.float32), (7,)).flags.aligned
    assert v.upstream_gradient(ug, "none", (40,), np.dtype(np.float32))[1].flags.aligned
    assert xf.score(ux, ut).totals == xf.score(x, t).totals
    assert xf.score(ux, uy).totals == xf.score(x, y).totals
    for got, want in zip(
            xf.cross_entropy_and_grad(ux, ut, weight=uw, reduction="none", grad_output=ug),
            xf.cross_entropy_and_grad(x, t, weight=w, reduction="none", grad_output=g)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(xf.softmax(ux), xf.softmax(x))
    np.testing.assert_array_equal(
        xf.binary_cross_entropy_with_logits(ux, uy, pos_weight=uw, reduction="none"),
        xf.binary_cross_entropy_with_logits(x, y, pos_weight=w, reduction="none"))
    np.testing.assert_array_equal(xf.info.entropy(uy), xf.info.entropy(y))
