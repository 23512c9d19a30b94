"""Property-based fuzzing with hypothesis: random shapes (empty and 1-D included),
dtypes (invalid ones included), memory layouts, option values (valid and invalid) and
target contents (in and out of range). Whatever the input, only TypeError or ValueError
may escape; and a call on valid input agrees with the float64 reference."""

import os

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import xent_fast as xf
import reference as ref
from helpers import assert_close

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

SETTINGS = settings(max_examples=int(os.environ.get("XF_HYP_EXAMPLES", "150")), deadline=None,
                    database=None, derandomize=bool(os.environ.get("CI")))

# Valid choices are listed several times so that most examples reach the kernels.
ANY_DTYPES = [np.float32, np.float64] * 4 + [np.float16, np.int32, np.bool_, np.complex64]
LAYOUTS = ["C", "F", "reversed", "readonly", "strided"]


def _layout(a, how):
    if how == "F":
        return np.asfortranarray(a)
    if how == "reversed" and a.ndim:
        return a[::-1]
    if how == "readonly":
        a = a.copy()
        a.setflags(write=False)
        return a
    if how == "strided" and a.ndim:
        return np.repeat(a, 2, axis=-1)[..., ::2]
    return a


@st.composite
def inputs(draw):
    ndim = draw(st.sampled_from([0, 1, 2, 2, 2, 3]))
    shape = tuple(draw(st.sampled_from([0, 1, 2, 3, 4, 5, 5, 5])) for _ in range(ndim))
    dtype = draw(st.sampled_from(ANY_DTYPES))
    finite = st.floats(-50, 50, width=32)
    values = draw(st.lists(st.one_of(finite, finite, finite, st.floats(width=32)),
                           min_size=1, max_size=8))
    n = int(np.prod(shape))
    with np.errstate(all="ignore"):
        x = np.resize(np.array(values, dtype=np.float64), n).reshape(shape).astype(dtype)
    x = _layout(x, draw(st.sampled_from(LAYOUTS)))
    c = shape[-1] if shape else 0
    kind = draw(st.sampled_from(["index"] * 4 + ["probs"] * 2 + ["index_bad", "wrong_shape", "float_index"]))
    batch = shape[:-1] if shape else ()
    if kind == "index":
        t = np.array(draw(st.lists(st.integers(0, max(c - 1, 0)), min_size=1, max_size=4)))
        t = np.resize(t, int(np.prod(batch))).reshape(batch)
    elif kind == "index_bad":
        t = np.resize(np.array([c, -1, 2**40]), int(np.prod(batch))).reshape(batch)
    elif kind == "probs":
        t = np.full(shape, 1.0 / max(c, 1))
    elif kind == "wrong_shape":
        t = np.zeros(tuple(s + 1 for s in shape))
    else:
        t = np.zeros(batch)
    options = {
        "reduction": draw(st.sampled_from(["mean", "sum", "none"] * 3 + ["avg"])),
        "label_smoothing": draw(st.sampled_from([0.0] * 6 + [0.2, 1.0, -0.1, float("nan")])),
        "z_loss": draw(st.sampled_from([0.0] * 6 + [1e-3, -1.0])),
        "softcap": draw(st.sampled_from([None] * 6 + [3.0, 0.0])),
        "n_threads": draw(st.sampled_from([None, 1, 2, -1] * 2 + [0])),
    }
    return x, t, options


@SETTINGS
@given(inputs())
def test_cross_entropy_raises_only_type_or_value_errors_and_matches_reference(case):
    x, t, options = case
    try:
        loss, grad = xf.cross_entropy_and_grad(x, t, **options)
    except (TypeError, ValueError) as exc:
        event(f"rejected: {type(exc).__name__}")
        return
    event("accepted and checked against the reference")
    # It accepted the input: then it was valid, and the answer is the reference's.
    assert x.dtype in (np.float16, np.float32, np.float64)
    assert grad.shape == x.shape
    r_loss, r_grad = ref.cross_entropy_and_grad(np.asarray(x, dtype=np.float64), t, **{
        k: v for k, v in options.items() if k != "n_threads"})
    dt = np.float32 if x.dtype == np.float16 else x.dtype
    with np.errstate(over="ignore", invalid="ignore"):
        # a value beyond the computation dtype's range is inf there: compare it so
        r_loss, r_grad = np.asarray(r_loss).astype(dt), np.asarray(r_grad).astype(dt)
    assert_close(loss, r_loss, dt, rtol=1e-4, atol=1e-5)
    assert_close(grad, r_grad, dt, rtol=1e-4, atol=1e-5)


@SETTINGS
@given(inputs(), st.sampled_from(["softmax", "log_softmax", "logsumexp", "bce_logits",
                                  "bce", "focal", "entropy"]))
def test_other_functions_raise_only_type_or_value_errors(case, which):
    x, t, options = case
    nt = options["n_threads"]
    y = np.clip(np.nan_to_num(np.asarray(t, dtype=np.float64)), 0, 1) if t.shape == x.shape else t
    calls = {
        "softmax": lambda: xf.softmax(x, n_threads=nt),
        "log_softmax": lambda: xf.log_softmax(x, n_threads=nt),
        "logsumexp": lambda: xf.logsumexp(x, n_threads=nt),
        "bce_logits": lambda: xf.binary_cross_entropy_with_logits_and_grad(
            x, y, reduction=options["reduction"], n_threads=nt),
        "bce": lambda: xf.binary_cross_entropy_and_grad(x, y, reduction=options["reduction"],
                                                        n_threads=nt),
        "focal": lambda: xf.sigmoid_focal_loss_and_grad(x, y, reduction=options["reduction"],
                                                        n_threads=nt),
        "entropy": lambda: xf.info.entropy(x),
    }
    try:
        calls[which]()
    except (TypeError, ValueError):
        pass


@SETTINGS
@given(inputs(), st.sampled_from([1, 1, 2, 5, 0]))
def test_score_raises_only_type_or_value_errors_and_matches_reference(case, k):
    x, t, options = case
    try:
        s = xf.score(x, t, k=k, n_threads=options["n_threads"])
    except (TypeError, ValueError) as exc:
        event(f"rejected: {type(exc).__name__}")
        return
    event("accepted and checked against the reference")
    assert x.dtype in (np.float16, np.float32, np.float64) and k >= 1
    dt = np.float32 if x.dtype == np.float16 else x.dtype
    x64 = np.asarray(x, dtype=dt).astype(np.float64)      # the values the kernel saw
    want = ref.score(x64, t, k=k)
    for key in ("loss", "target_prob", "entropy", "confidence"):
        with np.errstate(over="ignore", invalid="ignore"):
            assert_close(getattr(s, key), want[key].astype(dt), dt, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(s.pred, want["pred"])
    np.testing.assert_array_equal(s.in_top_k, want["in_top_k"])
    np.testing.assert_array_equal(s.counted, want["counted"])
    # the summary of any two halves is the summary of the whole, exactly
    rows = int(np.prod(x.shape[:-1])) if x.ndim > 1 else 1
    if x.ndim > 1 and rows > 1:
        x2, t2 = np.asarray(x).reshape(-1, x.shape[-1]), np.asarray(t).reshape(
            (-1,) + t.shape[x.ndim - 1:])
        half = rows // 2
        parts = xf.score(x2[:half], t2[:half], k=k).totals + xf.score(x2[half:], t2[half:],
                                                                       k=k).totals
        assert parts == s.totals
