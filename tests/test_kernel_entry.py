"""The compiled entry points' own checks, and the scalar they return through.

The cross-entropy, softmax and binary kernels take ndarrays and check them in C instead
of acquiring typed memoryviews (cheaper for small calls). The Python layer always hands them kernel-ready
arrays, so these checks only catch a bug there, but they are all that stands between
such a bug and a read or write out of bounds: every kind of wrong array must raise
``ValueError`` and leave the outputs untouched.
"""

import warnings

import numpy as np
import pytest

from xent_fast import _simd
from xent_fast._runtime import float_scalar

LEVELS = _simd.available_levels()
R, C = 5, 7


def _index_args(dt=np.float32):
    """Valid arguments of cross_entropy_index: loss rows and gradient wanted."""
    rng = np.random.default_rng(0)
    return dict(logits=rng.standard_normal((R, C)).astype(dt),
                target=np.arange(R, dtype=np.int64) % C,
                weight=np.ones(C, dt), loss_rows=np.zeros(R, dt), grad=np.zeros((R, C), dt),
                grad_rows=np.ones(R, dt))


def _call_index(kernels, a):
    return kernels.cross_entropy_index(a["logits"], a["target"], a["weight"], a["loss_rows"],
                                       a["grad"], a["grad_rows"], 1.0, False, -100, 0.0, 0.0,
                                       0.0, 1)


def _call_probs(kernels, a):
    return kernels.cross_entropy_probs(a["logits"], a["target"], a["weight"], a["loss_rows"],
                                       a["grad"], a["grad_rows"], 1.0, 0.0, 0.0, 0.0, 1)


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _unaligned(a):
    buf = np.zeros(a.size * a.itemsize + 1, np.uint8)
    out = buf[1:].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _odd_row_stride(a):
    """A 2-D view whose row stride is not a multiple of the item size."""
    row = a.shape[1] * a.itemsize + 1
    buf = np.zeros(a.shape[0] * row + a.itemsize, np.uint8)
    return np.ndarray(a.shape, a.dtype, buf, 0, (row, a.itemsize))


# (argument, how it is spoiled): each must be refused.
SPOILED = [
    ("logits", lambda a: a.astype(np.float16)),
    ("logits", lambda a: a.astype(np.int64)),
    ("logits", lambda a: a[:, :-1]),                     # strided view
    ("logits", lambda a: a.reshape(-1)),                 # wrong rank
    ("logits", lambda a: a.astype(a.dtype.newbyteorder(">"))),
    ("logits", lambda a: [list(r) for r in a]),          # not an ndarray
    ("logits", _unaligned),
    ("logits", np.asfortranarray),
    ("target", _unaligned),
    ("target", lambda a: a.astype(a.dtype.newbyteorder(">"))),
    ("target", lambda a: a[:-1]),
    ("target", lambda a: a.astype(np.float64)),
    ("target", lambda a: a.astype(np.uint64)),
    ("target", lambda a: a.astype(np.int16)),
    ("target", lambda a: a.reshape(-1, 1)),
    ("target", lambda a: None),
    ("weight", lambda a: a[:-1]),
    ("weight", lambda a: a.astype(np.float64) if a.dtype == np.float32 else a.astype(np.float32)),
    ("loss_rows", lambda a: a[:-1]),
    ("loss_rows", _read_only),
    ("grad", lambda a: a[:, :-1].copy()),
    ("grad", lambda a: a[::-1]),                          # negative strides
    ("grad", _read_only),
    ("grad", lambda a: np.zeros((C, R), a.dtype)),
    ("grad_rows", lambda a: np.ones(R + 1, a.dtype)),
    ("grad_rows", lambda a: a.reshape(1, -1)),
]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("name, spoil", SPOILED)
def test_index_kernel_refuses_a_wrong_array(level, dt, name, spoil):
    kernels = _simd.kernels("_cross_entropy_kernels", level)
    a = _index_args(dt)
    a[name] = spoil(a[name])
    with pytest.raises(ValueError, match="internal error"):
        _call_index(kernels, a)
    for out in ("loss_rows", "grad"):
        if isinstance(a[out], np.ndarray):
            assert not a[out].any(), f"{out} was written before the check"


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name, spoil", [s for s in SPOILED if s[0] != "target"]
                         + [("target", lambda a: a[:, :-1]), ("target", lambda a: a[:-1]),
                            ("target", lambda a: a.astype(np.float16))])
def test_probs_kernel_refuses_a_wrong_array(level, name, spoil):
    kernels = _simd.kernels("_cross_entropy_kernels", level)
    a = _index_args(np.float32)
    a["target"] = np.full((R, C), 1.0 / C, np.float32)
    a[name] = spoil(a[name])
    with pytest.raises(ValueError, match="internal error"):
        _call_probs(kernels, a)
    if isinstance(a["grad"], np.ndarray):
        assert not a["grad"].any(), "grad was written before the check"


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("t_dtype", [np.int32, np.int64, np.intc, np.int_, np.longlong])
def test_index_kernel_takes_every_c_integer_of_32_or_64_bits(level, t_dtype):
    kernels = _simd.kernels("_cross_entropy_kernels", level)
    a = _index_args(np.float64)
    want = _call_index(kernels, a)
    a["target"] = a["target"].astype(t_dtype)
    a["loss_rows"][:] = 0
    assert _call_index(kernels, a) == want


def test_optional_arrays_may_be_left_out():
    kernels = _simd.kernels("_cross_entropy_kernels")
    a = _index_args()
    full = _call_index(kernels, a)
    for name in ("weight", "loss_rows", "grad", "grad_rows"):
        a[name] = None
    assert _call_index(kernels, a)[0] == pytest.approx(full[0], rel=1e-6)


F32_MAX = float(np.finfo(np.float32).max)
HALF_ULP = 2.0 ** 103        # half of float32's last ulp below inf


@pytest.mark.parametrize("value", [0.0, -0.0, 1.5, 1e-46, -1e-40, 1 / 3, F32_MAX,
                                   F32_MAX + HALF_ULP / 2, F32_MAX + HALF_ULP,
                                   -(F32_MAX + HALF_ULP), 1e300, -1e300, np.inf, -np.inf,
                                   np.nan])
def test_float_scalar_rounds_like_numpy(value):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)    # NumPy's overflow warning
        want32 = np.float32(value)
    got32, got64 = (
        float_scalar(value, np.dtype(np.float32).num), float_scalar(value, np.dtype(np.float64).num))
    assert type(got32) is np.float32 and type(got64) is np.float64
    np.testing.assert_array_equal(got32, want32)
    assert np.signbit(got32) == np.signbit(want32)
    np.testing.assert_array_equal(got64, np.float64(value))


def test_float_scalar_refuses_other_types():
    with pytest.raises(ValueError, match="neither float32 nor float64"):
        float_scalar(1.0, np.dtype(np.int64).num)


SOFTMAX_SPOILED = [s for s in SPOILED if s[0] == "logits"] + [
    ("out", lambda a: a[:-1]),
    ("out", lambda a: a[::-1]),
    ("out", _read_only),
    ("out", lambda a: a.astype(np.float64) if a.dtype == np.float32 else a.astype(np.float32)),
    ("out", lambda a: None),
]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kernel", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("name, spoil", SOFTMAX_SPOILED)
def test_softmax_kernels_refuse_a_wrong_array(level, kernel, name, spoil):
    f = getattr(_simd.kernels("_softmax_kernels", level), kernel)
    x = np.random.default_rng(1).standard_normal((R, C)).astype(np.float32)
    a = {"logits": x, "out": np.zeros(R if kernel == "logsumexp" else (R, C), np.float32)}
    a[name] = spoil(a[name])
    with pytest.raises(ValueError, match="internal error"):
        f(a["logits"], a["out"], 1)
    if isinstance(a["out"], np.ndarray):
        assert not a["out"].any(), "out was written before the check"


@pytest.mark.parametrize("kernel", ["softmax", "log_softmax"])
def test_softmax_kernels_refuse_an_out_of_logsumexp_shape(kernel):
    f = getattr(_simd.kernels("_softmax_kernels"), kernel)
    with pytest.raises(ValueError, match="internal error"):
        f(np.zeros((R, C), np.float32), np.zeros(R, np.float32), 1)


def _binary_args(dt=np.float32):
    rng = np.random.default_rng(2)
    return dict(x=rng.standard_normal((R, C)).astype(dt), y=rng.random((R, C)).astype(dt),
                w=np.broadcast_to(np.ones(C, dt), (R, C)), pw=np.full((R, C), 2.0, dt),
                loss_out=np.zeros((R, C), dt), grad=np.zeros((R, C), dt),
                g_elems=np.ones((R, C), dt))


BINARY_SPOILED = [
    ("x", lambda a: a[:, :-1]),
    ("x", lambda a: a.astype(np.float16)),
    ("x", lambda a: a.reshape(-1)),
    ("y", lambda a: a[:-1]),
    ("y", lambda a: a[:, ::2].repeat(2, axis=1)[:, :C] if C % 2 else a[:, ::2]),
    ("y", lambda a: np.asfortranarray(a)),
    ("y", lambda a: None),
    ("w", lambda a: a[:-1]),
    ("w", lambda a: a.astype(np.float64)),
    ("w", lambda a: a.astype(a.dtype.newbyteorder(">"))),
    ("w", _unaligned),
    ("w", _odd_row_stride),
    ("pw", lambda a: a.reshape(-1)),
    ("pw", lambda a: a.T),
    ("loss_out", _read_only),
    ("loss_out", lambda a: a[::-1]),
    ("grad", _read_only),
    ("grad", lambda a: a[:, :-1]),
    ("g_elems", lambda a: np.asfortranarray(a)),
    ("g_elems", lambda a: a.astype(np.float64)),
]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name, spoil", BINARY_SPOILED)
def test_binary_kernel_refuses_a_wrong_array(level, name, spoil):
    f = _simd.kernels("_binary_kernels", level).binary_loss
    a = _binary_args()
    a[name] = spoil(a[name])
    with pytest.raises(ValueError, match="internal error"):
        f(1, a["x"], a["y"], a["w"], a["pw"], a["loss_out"], a["grad"], a["g_elems"],
          1.0, -1.0, 2.0, 1)
    for out in ("loss_out", "grad"):
        if isinstance(a[out], np.ndarray) and a[out].flags.writeable:
            assert not a[out].any(), f"{out} was written before the check"


@pytest.mark.parametrize("kind", [-1, 3])
def test_binary_kernel_refuses_an_unknown_loss(kind):
    f = _simd.kernels("_binary_kernels").binary_loss
    a = _binary_args()
    with pytest.raises(ValueError, match="internal error"):
        f(kind, a["x"], a["y"], None, None, None, a["grad"], None, 1.0, -1.0, 2.0, 1)
    assert not a["grad"].any()


@pytest.mark.parametrize("kind", [0, 1, 2])
def test_binary_kernel_reads_weights_through_any_strides(kind):
    # A weight view with stride 0 along rows, a reversed one and a transposed copy's view
    # give the answer of the same weights made contiguous (to rounding: odd strides take
    # the element-by-element path, contiguous ones the vectorised one).
    f = _simd.kernels("_binary_kernels").binary_loss
    a = _binary_args(np.float64)
    a["x"] = np.clip(a["x"], 0.0, 1.0) if kind == 0 else a["x"]
    base = np.random.default_rng(3).uniform(0.5, 2.0, (C, R))
    for w in (np.broadcast_to(base[:, 0], (R, C)), base.T, base.T[::-1, ::-1]):
        got = np.zeros((R, C))
        want = np.zeros((R, C))
        f(kind, a["x"], a["y"], w, None, got, None, None, 1.0, 0.25, 2.0, 1)
        f(kind, a["x"], a["y"], np.ascontiguousarray(w), None, want, None, None, 1.0, 0.25,
          2.0, 1)
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_kernels_take_rows_of_no_classes(level, dt):
    # The Python layer refuses logits without classes; called directly, the kernels
    # must still neither crash nor write anything.
    ce = _simd.kernels("_cross_entropy_kernels", level)
    x = np.zeros((3, 0), dt)
    g = np.zeros((3, 0), dt)
    loss = np.full(3, 5.0, dt)
    for w in (None, np.zeros(0, dt)):
        ce.cross_entropy_index(x, np.full(3, -100), w, loss, g, None, 1.0, True, -100, 0.1,
                               0.0, 0.0, 1)
        ce.cross_entropy_probs(x, np.zeros((3, 0), dt), w, None, g, None, 1.0, 0.0, 0.0, 2.0, 1)
    soft = _simd.kernels("_softmax_kernels", level)
    soft.softmax(x, g, 1)
    soft.logsumexp(x, np.zeros(3, dt), 1)
    _simd.kernels("_binary_kernels", level).binary_loss(1, x, x, None, None, None, g, None,
                                                         1.0, -1.0, 2.0, 1)
