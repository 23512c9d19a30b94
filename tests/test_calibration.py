"""Temperature scaling (fit_temperature, temperature_loss, score(temperature=)), the
Brier score, macro F1, per-class figures, ece_bins and every spelling of a merge
(issue 21), against float64 NumPy/SciPy references."""

import math
import pickle

import numpy as np
import pytest

import xent_fast as xf
import reference as ref

scipy_optimize = pytest.importorskip("scipy.optimize")
from scipy.special import logsumexp  # noqa: E402


def _nll(x, t, T, ignore=-100):
    """The float64 mean loss of softmax(x / T) over rows whose target is not ignored."""
    x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    t = np.asarray(t).reshape(-1)
    keep = t != ignore
    z = x[keep] / T
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(keep.sum()), t[keep]]))


def _dataset(rng, kind, n=3000, c=12):
    t = rng.integers(0, c, n)
    x = rng.standard_normal((n, c)) + 2.0 * np.eye(c)[t]
    if kind == "overconfident":
        x *= 4.0
    elif kind == "underconfident":
        x *= 0.25
    elif kind == "ignored":
        x *= 2.0
        t[::3] = -100
        x[1::3] *= 10           # junk in some of the ignored rows must not matter
        x[::3] *= 10
    elif kind == "label_noise":
        flip = rng.random(n) < 0.3
        t[flip] = rng.integers(0, c, flip.sum())
        x *= 3.0
    return x, t


@pytest.mark.parametrize("kind", ["overconfident", "underconfident", "ignored", "label_noise"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fit_temperature_matches_scipy_minimize_scalar(rng, kind, dtype):
    x, t = _dataset(rng, kind)
    xd = x.astype(dtype)
    T = xf.fit_temperature(xd, t)
    want = scipy_optimize.minimize_scalar(lambda T: _nll(xd, t, T), bounds=(1e-3, 1e3),
                                          method="bounded",
                                          options={"xatol": 1e-10}).x
    assert T == pytest.approx(want, rel=1e-5 if dtype == np.float64 else 1e-4)
    # and it is a minimum of the float64 loss, not only close to scipy's answer
    assert _nll(xd, t, T) <= _nll(xd, t, want) + 1e-12
    if kind == "overconfident":
        assert T > 1
    if kind == "underconfident":
        assert T < 1


def test_fit_temperature_is_the_same_for_any_thread_count_and_scale(rng):
    x, t = _dataset(rng, "overconfident", n=2000)
    T1 = xf.fit_temperature(x, t, n_threads=1)
    assert xf.fit_temperature(x, t, n_threads=2) == T1
    assert xf.fit_temperature(2.5 * x, t) == pytest.approx(2.5 * T1, rel=1e-9)


def test_fit_temperature_edge_cases(rng):
    x, t = _dataset(rng, "overconfident", n=200, c=5)
    assert xf.fit_temperature(x, np.full(200, -100)) == 1.0        # no row counts
    x2 = x.copy()
    x2[0, 1] = np.nan                                               # left out
    x2[1, :] = -np.inf
    assert xf.fit_temperature(x2, t) == pytest.approx(
        xf.fit_temperature(x[2:], t[2:]), rel=1e-12)
    right = np.eye(5)[np.arange(50) % 5] * 5                        # all right: T -> 0
    assert xf.fit_temperature(right, np.arange(50) % 5) == pytest.approx(1e-3, rel=1e-3)
    with pytest.raises(TypeError, match="class indices"):
        xf.fit_temperature(x, xf.softmax(x))
    with pytest.raises(ValueError, match="not a valid class index"):
        xf.fit_temperature(x, np.full(200, 7))


@pytest.mark.parametrize("T", [0.3, 1.0, 2.7])
def test_temperature_loss_and_its_derivative(rng, T):
    x, t = _dataset(rng, "ignored", n=500, c=40)
    loss, d = xf.temperature_loss(x, t, T)
    assert loss == pytest.approx(_nll(x, t, T), rel=1e-12)
    h = 1e-5 * T
    fd = (_nll(x, t, T + h) - _nll(x, t, T - h)) / (2 * h)
    assert d == pytest.approx(fd, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("n", [5, 40, 700])          # tiles, one chunk, several chunks
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_score_at_a_temperature_is_score_of_the_divided_logits(rng, n, dtype):
    x = (rng.standard_normal((300, n)) * 3).astype(dtype)
    t = rng.integers(0, n, 300)
    T = 1.7
    got = xf.score(x, t, temperature=T)
    want = ref.score(x.astype(np.float64) / T, t)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    for key in ("loss", "target_prob", "entropy", "confidence"):
        np.testing.assert_allclose(getattr(got, key), want[key], rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(got.pred, want["pred"])
    s = got.summary()
    assert s["brier"] == pytest.approx(ref.score_summary(want)["brier"], rel=rtol, abs=rtol)
    with pytest.raises(ValueError, match="temperature"):
        xf.score(x, t, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        xf.score(x, t, temperature=math.nan)


# --- Brier, macro F1, per-class figures, bins ---------------------------------------------

@pytest.mark.parametrize("n", [3, 16, 300])
def test_brier_macro_f1_and_per_class_against_numpy(rng, n):
    x = rng.standard_normal((400, n)) * 2
    t = rng.integers(0, n, 400)
    t[::7] = -100
    s = xf.score(x, t)
    keep = t != -100
    p = xf.softmax(x)[keep]
    onehot = np.eye(n)[t[keep]]
    assert s.summary()["brier"] == pytest.approx(((p - onehot) ** 2).sum(1).mean(), rel=1e-13)
    pred = x.argmax(1)[keep]
    tk = t[keep]
    pc = s.per_class()
    np.testing.assert_array_equal(pc["support"], np.bincount(tk, minlength=n))
    np.testing.assert_array_equal(pc["predicted"], np.bincount(pred, minlength=n))
    np.testing.assert_array_equal(pc["correct"], np.bincount(tk[pred == tk], minlength=n))
    for c in range(n):
        tp = np.sum((pred == c) & (tk == c))
        prec = tp / np.sum(pred == c) if np.sum(pred == c) else 0.0
        rec = tp / np.sum(tk == c) if np.sum(tk == c) else 0.0
        assert pc["precision"][c] == pytest.approx(prec)
        assert pc["recall"][c] == pytest.approx(rec)
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        assert pc["f1"][c] == pytest.approx(f1)
    assert s.summary()["macro_f1"] == pytest.approx(ref.macro_f1(tk, pred), rel=1e-15)


def test_brier_of_a_confident_right_row_keeps_its_digits():
    x = np.array([[40.0, 0.0, 0.0]])
    want = 2 * math.exp(-40) ** 2 + (2 * math.exp(-40)) ** 2       # (1-p_t)^2 + sum p_c^2
    assert xf.score(x, np.array([0])).summary()["brier"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("bins", [1, 10, 15, 100])
def test_ece_bins(rng, bins):
    x = rng.standard_normal((2000, 6)) * 2
    t = rng.integers(0, 6, 2000)
    s = xf.score(x, t, ece_bins=bins)
    want = ref.score_summary(ref.score(x, t), bins=bins)
    assert s.summary()["ece"] == pytest.approx(want["ece"], rel=1e-12, abs=1e-15)
    r = s.totals.reliability()
    assert r["rows"].shape == (bins,) and r["rows"].sum() == 2000
    np.testing.assert_array_equal(r["edges"], np.arange(bins + 1) / bins)
    with pytest.raises(ValueError, match="ece_bins"):
        xf.score(x, t, ece_bins=0)


# --- merging ------------------------------------------------------------------------------

def test_every_spelling_of_a_merge(rng):
    x = rng.standard_normal((900, 8))
    t = rng.integers(0, 8, 900)
    whole = xf.score(x, t).summary()
    a, b, c = (xf.score(x[i:i + 300], t[i:i + 300]) for i in (0, 300, 600))
    for merged in (xf.Scores.merge([a, b, c]), xf.Scores.merge(a, b, c), a.merge(b, c),
                   a.merge([b, c]), a + b + c, sum([a, b, c]), a.merge(b) + c):
        assert merged.summary() == whole
        assert len(merged) == 900
    for merged in (xf.ScoreTotals.merge([a.totals, b.totals, c.totals]),
                   a.totals.merge(b.totals, c.totals), a.totals + b.totals + c.totals,
                   sum([a.totals, b.totals, c.totals])):
        assert merged.summary() == whole
    per_class = xf.Scores.merge([a, b, c]).per_class()
    for key, v in xf.score(x, t).per_class().items():
        np.testing.assert_array_equal(per_class[key], v)
    assert pickle.loads(pickle.dumps(a.totals)) == a.totals


def test_a_merge_of_the_wrong_things_fails_clearly(rng):
    x = rng.standard_normal((10, 4))
    t = rng.integers(0, 4, 10)
    a = xf.score(x, t)
    with pytest.raises(TypeError, match="Scores.merge takes Scores"):
        a.merge(3)
    with pytest.raises(TypeError, match="Scores.merge takes Scores"):
        xf.Scores.merge([a, a.totals])
    with pytest.raises(TypeError, match="add scores.totals"):
        a + a.totals
    with pytest.raises(TypeError, match="add scores.totals"):
        a.totals + a
    with pytest.raises(TypeError):
        a + 1
    with pytest.raises(TypeError, match="not iterable"):
        list(a)
    with pytest.raises(ValueError, match="different k"):
        a + xf.score(x, t, k=2)
    with pytest.raises(ValueError, match="different ece_bins"):
        a + xf.score(x, t, ece_bins=10)
    with pytest.raises(ValueError, match="at least one"):
        xf.Scores.merge([])


def test_merging_scores_with_different_class_counts_pads(rng):
    a = xf.score(rng.standard_normal((20, 3)), rng.integers(0, 3, 20))
    b = xf.score(rng.standard_normal((20, 5)), rng.integers(0, 5, 20))
    pc = (a.totals + b.totals).per_class()
    assert pc["support"].shape == (5,) and pc["support"].sum() == 40


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_row_whose_target_is_masked_does_not_move_the_fit(rng, dtype):
    # its loss is inf at every T: it made the mean loss inf, the slope -inf, and the fit
    # ran to the upper bound 1e3 whatever the other rows said
    x, t = _dataset(rng, "overconfident")
    x = x.astype(dtype)
    want = xf.fit_temperature(x[2:], t[2:])
    x[0, t[0]] = -np.inf
    x[1, :] = -np.inf                     # no softmax: left out as before
    rel = 1e-9 if dtype == np.float64 else 1e-6      # the rows' blocks are summed anew
    assert xf.fit_temperature(x, t) == pytest.approx(want, rel=rel)
    assert xf.fit_temperature(x, t.astype(np.int32), ignore_index=2**40) == pytest.approx(
        want, rel=rel)
    loss, slope = xf.temperature_loss(x, t, 1.0)     # the loss itself stays inf
    assert loss == math.inf


@pytest.mark.parametrize("dtype, tiny", [(np.float64, 1e-310), (np.float32, 1e-40)])
def test_a_temperature_whose_reciprocal_overflows_is_refused(rng, dtype, tiny):
    # 1 / T overflowed to inf in the kernels' dtype: every loss NaN (0 * inf), and
    # temperature_loss divided by T * T = 0 (ZeroDivisionError)
    x, t = _dataset(rng, "overconfident", n=50, c=4)
    x = x.astype(dtype)
    for f in (lambda T: xf.score(x, t, temperature=T),
              lambda T: xf.temperature_loss(x, t, T)):
        with pytest.raises(ValueError, match="temperature must be at least"):
            f(tiny)
    smallest = 1 / float(np.finfo(dtype).max)
    assert not math.isnan(xf.score(x, t, temperature=smallest * 1.01).summary()["loss"])
    loss, slope = xf.temperature_loss(x.astype(np.float64), t, 1e-200)
    assert loss > 1e190 and not math.isnan(slope)
