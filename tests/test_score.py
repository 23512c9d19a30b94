"""Batch scoring: xf.score, Scores, ScoreTotals against the float64 NumPy reference,
PyTorch, exact arithmetic (fractions) and the semantics documented in the contract."""

import math
import pickle
from fractions import Fraction

import numpy as np
import pytest

import xent_fast as xf
import reference as ref
from helpers import assert_close, comp_dtype, readonly

FLOAT_KEYS = ("loss", "target_prob", "entropy", "confidence")
SUMMARY_KEYS = ["rows", "loss", "bits", "perplexity", "accuracy", "top_k_accuracy", "k",
                "mean_entropy", "ece", "ece_bins", "brier", "macro_f1", "nonfinite_rows"]


def _logits(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _check_rows(s, want, dtype, **tol):
    """Per-row arrays of Scores `s` against the reference dict `want`."""
    cd = comp_dtype(dtype)
    for key in FLOAT_KEYS:
        got = getattr(s, key)
        assert got.dtype == cd and got.shape == want[key].shape, key
        assert_close(got, want[key], dtype, **tol)
    np.testing.assert_array_equal(s.pred, want["pred"])
    assert s.pred.dtype == np.int64
    np.testing.assert_array_equal(s.in_top_k, want["in_top_k"])
    np.testing.assert_array_equal(s.counted, want["counted"])
    assert s.in_top_k.dtype == s.counted.dtype == np.bool_


def _check_summary(got, want, dtype, rtol=None):
    assert list(got) == SUMMARY_KEYS
    assert got["rows"] == want["rows"] and got["k"] == want["k"]
    assert type(got["rows"]) is int
    r = rtol or (1e-12 if comp_dtype(dtype) == np.float64 else 2e-5)
    assert got["ece_bins"] == want["ece_bins"]
    assert got["nonfinite_rows"] == want["nonfinite_rows"]
    assert got["macro_f1"] == pytest.approx(want["macro_f1"], rel=1e-12)
    # Brier: its absolute error is what matters (a sum of squares of probabilities)
    assert got["brier"] == pytest.approx(want["brier"], rel=r, abs=r, nan_ok=True)
    for key in ("loss", "bits", "perplexity", "mean_entropy"):
        assert type(got[key]) is float
        assert got[key] == pytest.approx(want[key], rel=r, abs=r, nan_ok=True), key
    assert got["accuracy"] == want["accuracy"]
    assert got["top_k_accuracy"] == want["top_k_accuracy"]
    # the ECE may move a row across a bin edge only through rounding of its confidence
    assert got["ece"] == pytest.approx(want["ece"], rel=r, abs=10 * r, nan_ok=True)


# ---------------------------------------------------------------- against the reference

@pytest.mark.parametrize("shape", [(64, 1), (64, 2), (200, 7), (70, 15), (70, 16),
                                   (50, 17), (33, 300), (5, 5000), (4, 3, 11), (6,)])
def test_class_indices_against_reference(rng, dtype, shape):
    x = _logits(rng, shape, dtype)
    t = rng.integers(0, shape[-1], size=shape[:-1])
    if t.ndim and t.size > 3:
        t.reshape(-1)[::4] = -100                       # ignored rows
    s = xf.score(x, t, k=3)
    want = ref.score(x.astype(np.float64), t, k=3)
    _check_rows(s, want, dtype)
    _check_summary(s.summary(), ref.score_summary(want, k=3), dtype)


def test_long_rows_whose_max_comes_late_and_ties_in_later_chunks(rng, dtype):
    # The sweep goes chunk by chunk (256 entries): the first argmax past the first
    # chunks, ties of the max in later chunks, masked classes, and a target tied with
    # the max or below it.
    n = 1300
    x = _logits(rng, (6, n), dtype)
    x[:, ::9] = -np.inf
    for i, first in enumerate([300, 511, 512, 777, 1025, 1299]):
        x[i, first] = 20
        x[i, first + 1::250] = 20                     # ties in later chunks
    t = np.array([300, 5, 900, 777, 0, 1299])
    s = xf.score(x, t, k=2)
    want = ref.score(x.astype(np.float64), t, k=2)
    _check_rows(s, want, dtype)
    np.testing.assert_array_equal(s.pred, [300, 511, 512, 777, 1025, 1299])
    _check_summary(s.summary(), ref.score_summary(want, k=2), dtype)


@pytest.mark.parametrize("shape", [(64, 3), (40, 15), (40, 16), (20, 700), (2, 3, 9)])
def test_probability_targets_against_reference(rng, dtype, shape):
    x = _logits(rng, shape, dtype)
    y = ref.softmax(rng.standard_normal(shape) * 2).astype(dtype)
    y.reshape(-1, shape[-1])[::3] = ref.one_hot(rng.integers(0, shape[-1], y.size // shape[-1]
                                                             )[::3], shape[-1])
    s = xf.score(x, y)
    want = ref.score(x.astype(np.float64), y.astype(np.float64))
    _check_rows(s, want, dtype)
    _check_summary(s.summary(), ref.score_summary(want), dtype)


def test_one_hot_probabilities_score_as_class_indices(rng):
    x = _logits(rng, (300, 12), np.float64)
    t = rng.integers(0, 12, 300)
    a, b = xf.score(x, t), xf.score(x, ref.one_hot(t, 12))
    for key in ("pred", "in_top_k", "target_prob", "entropy", "confidence"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-13, atol=1e-15)
    assert a.summary()["accuracy"] == b.summary()["accuracy"]


def test_single_row_gives_zero_d_arrays():
    s = xf.score(np.log([0.1, 0.2, 0.7]), 2)
    assert s.loss.shape == s.pred.shape == s.in_top_k.shape == ()
    assert float(s.loss) == pytest.approx(-math.log(0.7), rel=1e-15)
    assert float(s.target_prob) == pytest.approx(0.7, rel=1e-15)
    assert float(s.confidence) == pytest.approx(0.7, rel=1e-15)
    assert float(s.entropy) == pytest.approx(ref.entropy([0.1, 0.2, 0.7]), rel=1e-15)
    assert len(s) == 1


def test_empty_batch(dtype):
    s = xf.score(np.zeros((0, 4), dtype), np.zeros(0, np.int64))
    assert s.loss.shape == (0,) and s.loss.dtype == comp_dtype(dtype)
    assert s.summary() == {"rows": 0, "loss": 0.0, "bits": 0.0, "perplexity": 1.0,
                           "accuracy": 0.0, "top_k_accuracy": 0.0, "k": 5,
                           "mean_entropy": 0.0, "ece": 0.0, "ece_bins": 15, "brier": 0.0,
                           "macro_f1": 0.0, "nonfinite_rows": 0}


def test_every_row_ignored_counts_nothing(rng):
    x = _logits(rng, (10, 4), np.float32)
    s = xf.score(x, np.full(10, 7), ignore_index=7)
    assert s.summary()["rows"] == 0 and s.summary()["loss"] == 0.0
    assert np.isnan(s.loss).all() and np.isnan(s.target_prob).all()
    assert not s.in_top_k.any() and not s.counted.any()
    np.testing.assert_array_equal(s.pred, x.argmax(axis=1))        # still predicted
    assert np.isfinite(s.entropy).all() and np.isfinite(s.confidence).all()


def test_against_pytorch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for dtype in (np.float32, np.float64):
        x = _logits(rng, (500, 37), dtype)
        t = rng.integers(0, 37, 500)
        s = xf.score(x, t, k=5)
        tx, tt = torch.from_numpy(x), torch.from_numpy(t)
        lsm = F.log_softmax(tx, dim=-1)
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(s.loss, F.cross_entropy(tx, tt, reduction="none"), **tol)
        np.testing.assert_allclose(s.target_prob, lsm.gather(1, tt[:, None])[:, 0].exp(), **tol)
        np.testing.assert_array_equal(s.pred, tx.argmax(dim=-1).numpy())
        np.testing.assert_array_equal(
            s.in_top_k, (tx.topk(5, dim=-1).indices == tt[:, None]).any(dim=-1).numpy())
        np.testing.assert_allclose(
            s.entropy, torch.distributions.Categorical(logits=tx).entropy(), **tol)
        np.testing.assert_allclose(s.confidence, lsm.exp().max(dim=-1).values, **tol)
        assert s.summary()["loss"] == pytest.approx(
            float(F.cross_entropy(tx.double(), tt)), rel=1e-6)


# ---------------------------------------------------------------- exactness of the summary

def _exact_mean(values):
    values = np.asarray(values, np.float64).reshape(-1)
    return float(sum(map(Fraction, values.tolist()), Fraction(0)) / len(values))


def _exact_ece(conf, correct):
    """ECE from the float values with rational arithmetic, rounded once."""
    conf = np.asarray(conf, np.float64).reshape(-1)
    correct = np.asarray(correct).reshape(-1)
    gap = Fraction(0)
    for lo, hi in zip(ref.ECE_EDGES[:-1], ref.ECE_EDGES[1:]):
        b = (conf > lo) & (conf <= hi)
        gap += abs(int(correct[b].sum()) - sum(map(Fraction, conf[b].tolist()), Fraction(0)))
    return float(gap / len(conf))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_summary_is_the_exact_mean_of_the_per_row_values(rng, dt):
    x = _logits(rng, (3000, 6), dt, scale=4.0)
    t = rng.integers(0, 6, 3000)
    t[::7] = -100
    s = xf.score(x, t)
    got, c = s.summary(), s.counted
    correct = s.pred[c] == t[c]
    assert got["loss"] == _exact_mean(s.loss[c])
    assert got["mean_entropy"] == _exact_mean(s.entropy[c])
    assert got["accuracy"] == correct.sum() / c.sum()
    assert got["top_k_accuracy"] == s.in_top_k[c].sum() / c.sum()
    assert got["ece"] == _exact_ece(s.confidence[c], correct)
    assert got["bits"] == got["loss"] / math.log(2)
    assert got["perplexity"] == math.exp(got["loss"])


def test_exact_sums_are_not_fooled_by_cancellation_or_range():
    # losses from 1e-300 to 1e300 in one batch: a rounded sum would lose the small ones
    x = np.array([[0.0, -1e300], [0.0, -690.0], [1e300, 0.0], [0.0, -30.0]])
    t = np.array([0, 0, 1, 0])
    s = xf.score(x, t, k=1)
    assert s.summary()["loss"] == _exact_mean(s.loss)
    assert s.loss[2] == 1e300
    assert s.loss[1] > 0 and s.loss[1] == pytest.approx(math.exp(-690.0), rel=1e-14)


def test_streaming_and_merging_give_exactly_one_calls_summary(rng):
    x = _logits(rng, (5000, 9), np.float32, scale=5.0)
    t = rng.integers(0, 9, 5000)
    t[::11] = -100
    whole = xf.score(x, t, k=2)
    for cuts in ([0, 5000], [0, 1, 2, 4999, 5000], [0, 1234, 1235, 3000, 5000],
                 list(range(0, 5001, 97)) + [5000]):
        parts = [xf.score(x[a:b], t[a:b], k=2) for a, b in zip(cuts[:-1], cuts[1:])]
        merged = xf.Scores.merge(parts)
        assert merged.summary() == whole.summary()
        for key in xf._score.PER_ROW:
            np.testing.assert_array_equal(getattr(merged, key), getattr(whole, key))
        total = xf.ScoreTotals()
        for p in reversed(parts):                     # any order
            total += p.totals
        assert total == whole.totals
        assert total.summary() == whole.summary()


def test_summary_does_not_depend_on_row_order(rng):
    x = _logits(rng, (4000, 40), np.float64, scale=6.0)
    t = rng.integers(0, 40, 4000)
    perm = rng.permutation(4000)
    assert xf.score(x, t).summary() == xf.score(x[perm], t[perm]).summary()


@pytest.mark.parametrize("n_threads", [1, 2, 3, -1])
def test_bitwise_identical_for_every_thread_count(rng, n_threads):
    x = _logits(rng, (40000, 12), np.float32)       # large enough to run in parallel
    y = _logits(rng, (300, 400), np.float64)
    t, ty = rng.integers(0, 12, 40000), rng.integers(0, 400, 300)
    for logits, target in ((x, t), (y, ty), (y, ref.softmax(y))):
        one = xf.score(logits, target, n_threads=1)
        many = xf.score(logits, target, n_threads=n_threads)
        assert one.totals == many.totals
        for key in xf._score.PER_ROW:
            np.testing.assert_array_equal(getattr(one, key), getattr(many, key))


def test_totals_without_per_row_arrays_are_the_same(rng):
    from xent_fast._score import score_totals
    x = _logits(rng, (500, 20), np.float32)
    t = rng.integers(0, 20, 500)
    assert score_totals(x, t, k=3) == xf.score(x, t, k=3).totals


def test_totals_pickle_and_merge_rules(rng):
    x = _logits(rng, (50, 5), np.float64)
    t = rng.integers(0, 5, 50)
    a = xf.score(x, t, k=2).totals
    b = pickle.loads(pickle.dumps(a))
    assert a == b and b.summary() == a.summary()
    assert (a + b).rows == 100
    with pytest.raises(ValueError, match="different k"):
        a + xf.score(x, t, k=3).totals
    assert xf.ScoreTotals().summary()["rows"] == 0
    assert (xf.ScoreTotals() + a) == a
    with pytest.raises(ValueError, match="at least one"):
        xf.Scores.merge([])


def test_merge_of_differently_shaped_batches_flattens(rng):
    a = xf.score(_logits(rng, (2, 3, 4), np.float64), rng.integers(0, 4, (2, 3)))
    b = xf.score(_logits(rng, (5, 4), np.float64), rng.integers(0, 4, 5))
    c = xf.score(_logits(rng, (4,), np.float64), 1)
    m = xf.Scores.merge([a, b, c])
    assert m.loss.shape == (12,)
    np.testing.assert_array_equal(m.loss, np.concatenate([a.loss.ravel(), b.loss, [c.loss]]))
    assert m.summary() == (a.totals + b.totals + c.totals).summary()
    same = xf.Scores.merge([a, a])
    assert same.loss.shape == (4, 3)


# ---------------------------------------------------------------- accuracy and extremes

def test_tiny_loss_and_entropy_keep_their_digits():
    # p(target) = 1 / (1 + e^-50): loss = log1p(e^-50) ~ 1.9e-22
    for dt in (np.float32, np.float64):
        x = np.array([[0.0, -50.0], [0.0, -80.0]], dt)
        s = xf.score(x, np.array([0, 0]))
        for i, gap in enumerate((50.0, 80.0)):
            e = math.exp(-gap)
            want_loss = math.log1p(e)
            want_ent = math.log1p(e) + e * gap / (1 + e)
            rtol = 1e-5 if dt == np.float32 else 1e-14
            assert float(s.loss[i]) == pytest.approx(want_loss, rel=rtol)
            assert float(s.entropy[i]) == pytest.approx(want_ent, rel=rtol)
            assert float(s.confidence[i]) == 1.0


def test_accuracy_against_mpmath(rng):
    x = _logits(rng, (20, 50), np.float64, scale=8.0)
    t = rng.integers(0, 50, 20)
    s = xf.score(x, t)
    for i in range(20):
        assert s.loss[i] == pytest.approx(ref.mp_nll(x[i], t[i]), rel=1e-14)
        p = ref.mp_softmax(x[i])
        assert s.target_prob[i] == pytest.approx(p[t[i]], rel=1e-13)
        assert s.confidence[i] == pytest.approx(p.max(), rel=1e-14)


@pytest.mark.parametrize("n", [3, 40])       # the short-row (tiles) and long-row paths
def test_masked_classes_and_rows_without_softmax(n):
    x = np.zeros((6, n))
    x[0, 1] = -np.inf                 # a masked class, not the target
    x[1, 2] = -np.inf                 # the target masked: p = 0, loss inf
    x[2, 1] = np.nan                  # NaN row
    x[3, 2] = np.inf                  # +inf row
    x[4, :] = -np.inf                 # only -inf
    x[5, 0] = 1.0
    t = np.array([0, 2, 0, 2, 1, 0])
    s = xf.score(x, t, k=1)
    want = ref.score(x, t, k=1)
    for key in FLOAT_KEYS:
        np.testing.assert_allclose(getattr(s, key), want[key], rtol=1e-14, equal_nan=True)
    np.testing.assert_array_equal(s.pred, np.argmax(x, axis=1))
    np.testing.assert_array_equal(s.in_top_k, want["in_top_k"])
    assert s.loss[1] == np.inf and s.target_prob[1] == 0.0
    assert np.isnan(s.loss[2:5]).all() and np.isnan(s.confidence[2:5]).all()
    assert s.pred[2] == 1 and s.pred[3] == 2 and s.pred[4] == 0
    assert s.in_top_k[3] and not s.in_top_k[2]       # NaN ranks above the target
    # rows without a softmax are counted apart and left out of every other figure
    summary = s.summary()
    np.testing.assert_array_equal(s.counted, [1, 1, 0, 0, 0, 1])
    assert summary["nonfinite_rows"] == 3 and summary["rows"] == 3
    assert summary == xf.score(x[[0, 1, 5]], t[[0, 1, 5]], k=1).summary() | {
        "nonfinite_rows": 3}
    assert summary["accuracy"] == 2 / 3
    assert summary["loss"] == math.inf and summary["perplexity"] == math.inf
    assert math.isfinite(summary["ece"]) and math.isfinite(summary["brier"])


def test_probability_target_with_nan_row():
    x = np.zeros((3, 4))
    y = np.full((3, 4), 0.25)
    y[1, 2] = np.nan
    s = xf.score(x, y)
    assert np.isnan(s.loss[1]) and np.isfinite(s.loss[[0, 2]]).all()
    np.testing.assert_allclose(s.loss[[0, 2]], math.log(4), rtol=1e-15)


def test_top_k_ties_count_in_the_targets_favour():
    x = np.array([[3.0, 2.0, 2.0, 2.0, 1.0]] * 5)
    t = np.arange(5)
    np.testing.assert_array_equal(xf.score(x, t, k=2).in_top_k, [1, 1, 1, 1, 0])
    np.testing.assert_array_equal(xf.score(x, t, k=1).in_top_k, [1, 0, 0, 0, 0])
    # all equal: every target is in the top 1, but only class 0 is the argmax
    s = xf.score(np.zeros((4, 4)), np.arange(4), k=1)
    assert s.in_top_k.all() and s.summary()["accuracy"] == 0.25
    assert s.summary()["top_k_accuracy"] == 1.0
    # k beyond the class count: every target is in
    assert xf.score(x, t, k=10).in_top_k.all()
    huge = xf.score(x, t, k=2**70)
    assert huge.in_top_k.all() and huge.summary()["k"] == 2**70


@pytest.mark.parametrize("n", [2, 3, 5, 15, 30])
def test_confidences_on_bin_edges(n):
    # equal logits: confidence 1/n, for n = 3, 5, 15 exactly on an edge (lo, hi]
    x = np.zeros((n, n))
    s = xf.score(x, np.arange(n))
    conf = float(s.confidence[0])
    correct = s.pred == np.arange(n)
    assert s.summary()["ece"] == _exact_ece(s.confidence, correct)
    assert s.summary()["ece"] == pytest.approx(ref.ece(s.confidence, correct), abs=1e-15)
    r = s.totals.reliability()
    b = int(np.flatnonzero(r["rows"])[0])
    assert r["edges"][b] < conf <= r["edges"][b + 1]
    assert r["rows"].sum() == n


def test_ece_of_a_hand_computed_example():
    # two rows of confidence 0.9 (one right), two of 0.6 (both right):
    # ece = 2/4 |0.5 - 0.9| + 2/4 |1 - 0.6| = 0.4
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    s = xf.score(np.log(p), np.array([0, 1, 0, 0]))
    assert s.summary()["ece"] == pytest.approx(0.4, rel=1e-14)
    assert s.summary()["accuracy"] == 0.75


def test_inputs_read_only_non_contiguous_and_untouched(rng, tmp_path):
    x = _logits(rng, (40, 30), np.float32)
    t = rng.integers(0, 30, 40)
    want = xf.score(x, t)
    xr, tr = readonly(x), readonly(t)
    got = xf.score(xr, tr)
    assert got.totals == want.totals
    np.testing.assert_array_equal(xr, x)
    path = tmp_path / "x.npy"
    np.save(path, x)
    assert xf.score(np.load(path, mmap_mode="r"), t).totals == want.totals
    xf_order = np.asfortranarray(x)
    assert xf.score(xf_order, t).totals == want.totals
    wide = np.zeros((40, 60), np.float32)
    wide[:, ::2] = x
    assert xf.score(wide[:, ::2], t[::1].astype(np.int16)).totals == want.totals
    assert xf.score(x.astype(">f4"), t.astype(">i8")).totals == want.totals
    assert xf.score(x, t.astype(np.uint8)).totals == want.totals


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, exc, match", [
    ({"k": 0}, ValueError, "k must be a positive int"),
    ({"k": -3}, ValueError, "k must be a positive int"),
    ({"k": True}, TypeError, "k must be a positive int"),
    ({"k": 2.0}, TypeError, "k must be a positive int"),
    ({"ignore_index": 1.5}, TypeError, "ignore_index"),
    ({"ignore_index": 2**70}, ValueError, "ignore_index"),
    ({"n_threads": 0}, ValueError, "n_threads"),
])
def test_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        xf.score(np.zeros((2, 3)), np.zeros(2, np.int64), **kwargs)


def test_bad_targets_and_logits():
    x = np.zeros((2, 3, 4))
    t = np.zeros((2, 3), np.int64)
    t[1, 2] = 4
    with pytest.raises(ValueError, match=r"target\[1, 2\] = 4 is not a valid class index"):
        xf.score(x, t)
    with pytest.raises(ValueError, match=r"target\[0\] = -1"):
        xf.score(np.zeros((2, 20)), np.array([-1, 0]))
    with pytest.raises(TypeError, match="class indices must be integers"):
        xf.score(x, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="target"):
        xf.score(x, np.zeros((2, 4), np.int64))
    with pytest.raises(TypeError, match="logits must be a floating array"):
        xf.score(np.zeros((2, 3), np.int64), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="at least one class"):
        xf.score(np.zeros((2, 0)), np.zeros(2, np.int64))
    with pytest.raises(TypeError, match="target"):
        xf.score(np.zeros((2, 3)), np.array(["a", "b"]))


def test_exact_sums_of_losses_of_both_signs(rng):
    # probability targets outside [0, 1] give negative losses: the sums keep their sign
    x = rng.standard_normal((2000, 3)) * 5
    y = rng.standard_normal((2000, 3)) * 3
    s = xf.score(x, y)
    assert (s.loss < 0).any() and (s.loss > 0).any()
    assert s.summary()["loss"] == _exact_mean(s.loss)
    halves = xf.score(x[:777], y[:777]).totals + xf.score(x[777:], y[777:]).totals
    assert halves.summary() == s.summary()
