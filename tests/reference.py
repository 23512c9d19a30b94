"""Independent float64 NumPy reference for the xent_fast test suite.

Plain NumPy in float64 (plus mpmath for the high-precision helpers at the end).
This module must never import xent_fast.

Conventions (the team's contract, see /work/shared/API.md and the test brief):
classes on the last axis; -inf logits are masked classes; a row containing NaN
gives NaN everywhere; an all -inf row gives NaN softmax/log_softmax and -inf
logsumexp; a row containing +inf gives NaN softmax/log_softmax and +inf
logsumexp; cross-entropy semantics are torch.nn.functional.cross_entropy's,
plus z_loss and softcap; "mean" over nothing is 0 with a zero gradient.
"""

import math

import mpmath
import numpy as np


# --------------------------------------------------------------------------
# softmax family
# --------------------------------------------------------------------------

def _rows(x):
    """float64 copy of x reshaped to (rows, C) plus the batch shape."""
    x = np.array(x, dtype=np.float64)  # copy, native byte order
    if x.ndim == 0:
        raise ValueError("reference: 0-d logits")
    batch = x.shape[:-1]
    return x.reshape(-1, x.shape[-1]), batch


def _softmax_parts(x2):
    """Per-row pieces for x2 of shape (R, C), C >= 1.

    Returns (lse, log_softmax, softmax, bad) where ``bad`` marks rows whose
    softmax is undefined (NaN present, all -inf, or +inf present).

    For good rows with max m at (first) argmax j and s = sum_{k != j} exp(x_k - m):
        lse = m + log1p(s);  log_softmax = (x - m) - log1p(s);  softmax = exp(x - m) / (1 + s)
    which keeps full relative accuracy of log_softmax at the max entry.
    """
    R, C = x2.shape
    lse = np.empty(R)
    lsm = np.full((R, C), np.nan)
    sm = np.full((R, C), np.nan)
    has_nan = np.isnan(x2).any(axis=1)
    has_pinf = np.isposinf(x2).any(axis=1)
    all_ninf = np.isneginf(x2).all(axis=1) if C else np.ones(R, bool)
    bad = has_nan | has_pinf | all_ninf
    lse[has_nan] = np.nan
    lse[~has_nan & has_pinf] = np.inf
    lse[~has_nan & ~has_pinf & all_ninf] = -np.inf
    good = ~bad
    if good.any():
        xg = x2[good]
        j = np.argmax(xg, axis=1)
        m = xg[np.arange(xg.shape[0]), j]
        d = xg - m[:, None]  # <= 0, -inf for masked classes
        e = np.exp(d)
        e_others = e.copy()
        e_others[np.arange(xg.shape[0]), j] = 0.0
        s = e_others.sum(axis=1)
        l1 = np.log1p(s)
        lse[good] = m + l1
        lsm[good] = d - l1[:, None]
        sm[good] = e / (1.0 + s)[:, None]
    return lse, lsm, sm, bad


def softmax(x):
    x2, batch = _rows(x)
    _, _, sm, _ = _softmax_parts(x2)
    return sm.reshape(batch + (x2.shape[1],))


def log_softmax(x):
    x2, batch = _rows(x)
    _, lsm, _, _ = _softmax_parts(x2)
    return lsm.reshape(batch + (x2.shape[1],))


def logsumexp(x):
    x2, batch = _rows(x)
    lse, _, _, _ = _softmax_parts(x2)
    return lse.reshape(batch)


# --------------------------------------------------------------------------
# categorical cross-entropy
# --------------------------------------------------------------------------

def _xlogy_coef(coef, logp):
    """coef * logp with exact 0 wherever coef == 0 (even if logp is -inf)."""
    with np.errstate(invalid="ignore"):
        prod = coef * logp
    return np.where(coef == 0, 0.0, prod)


def cross_entropy_and_grad(logits, target, *, weight=None, ignore_index=-100,
                           reduction="mean", label_smoothing=0.0, z_loss=0.0,
                           softcap=None, grad_output=1.0):
    """Reference loss and gradient (float64).

    target: integer class indices of shape logits.shape[:-1], or float
    probabilities of shape logits.shape.
    Returns (loss, grad): loss is a Python float for "mean"/"sum", else an
    array of logits.shape[:-1]; grad has logits' shape.
    """
    x2, batch = _rows(logits)
    R, C = x2.shape
    target = np.asarray(target)
    eps = float(label_smoothing)
    zl = float(z_loss)
    w = np.ones(C) if weight is None else np.asarray(weight, dtype=np.float64).reshape(C)

    # softcap: z = s * tanh(x / s), dz/dx = 1 - tanh(x / s)**2
    if softcap is not None:
        # A masked class (-inf) stays masked under the cap, with derivative 0.
        masked = np.isneginf(x2)
        t = np.where(masked, 0.0, np.tanh(np.where(masked, 0.0, x2) / softcap))
        z = np.where(masked, -np.inf, softcap * t)
        dzdx = np.where(masked, 0.0, 1.0 - t * t)
    else:
        z = x2
        dzdx = np.ones_like(x2)

    lse, lsm, p, bad = _softmax_parts(z)
    rowloss = np.zeros(R)
    rowgrad = np.zeros((R, C))  # d rowloss / d z

    if np.issubdtype(target.dtype, np.integer):
        tg = target.reshape(-1).astype(object)  # python ints: no overflow / wraparound
        counted = np.array([int(v) != ignore_index for v in tg], dtype=bool)
        tidx = np.array([int(v) if c else 0 for v, c in zip(tg, counted)], dtype=np.int64)
        if counted.any():
            bad_t = [int(v) for v, c in zip(tg, counted) if c and not 0 <= int(v) < C]
            if bad_t:
                raise ValueError(f"reference: target out of range: {bad_t[0]}")
        rows = np.arange(R)
        wt = w[tidx]
        nll = -lsm[rows, tidx]
        smooth = -_xlogy_coef(w[None, :], lsm).sum(axis=1)
        with np.errstate(invalid="ignore"):
            # (1-eps)*w_t*nll and eps/C*smooth, each exactly 0 when its coefficient is 0
            nll_term = np.where((1.0 - eps) * wt == 0, 0.0, (1.0 - eps) * wt * nll)
            smooth_term = np.where(eps == 0, 0.0, eps / C * smooth)
            loss_i = nll_term + smooth_term + zl * lse * lse
        loss_i = np.where(bad, np.nan, loss_i)
        rowloss = np.where(counted, loss_i, 0.0)
        W = w.sum()
        onehot = np.zeros((R, C))
        onehot[rows, tidx] = 1.0
        g = ((1.0 - eps) * wt)[:, None] * (p - onehot) + (eps / C) * (W * p - w[None, :])
        if zl != 0.0:
            g = g + 2.0 * zl * lse[:, None] * p
        g = np.where(bad[:, None], np.nan, g)
        rowgrad = np.where(counted[:, None], g, 0.0)
        denom = float(np.sum(wt[counted]))
    else:
        y = np.asarray(target, dtype=np.float64).reshape(R, C)
        y = (1.0 - eps) * y + eps / C
        coef = w[None, :] * y
        loss_i = -_xlogy_coef(coef, lsm).sum(axis=1) + zl * lse * lse
        rowloss = np.where(bad, np.nan, loss_i)
        g = -coef + p * coef.sum(axis=1)[:, None]
        if zl != 0.0:
            g = g + 2.0 * zl * lse[:, None] * p
        rowgrad = np.where(bad[:, None], np.nan, g)
        counted = np.ones(R, dtype=bool)
        denom = float(R)

    rowgrad = rowgrad * dzdx  # chain rule through softcap
    go = np.asarray(grad_output, dtype=np.float64)
    if reduction == "none":
        loss = rowloss.reshape(batch)
        scale = np.broadcast_to(go, batch).reshape(R)[:, None] if go.ndim else float(go)
        grad = rowgrad * scale
    elif reduction == "sum":
        loss = float(rowloss.sum())
        grad = rowgrad * float(go)
    elif reduction == "mean":
        if not counted.any():
            loss = 0.0
            grad = np.zeros((R, C))
        else:
            loss = float(rowloss.sum() / denom)
            grad = rowgrad * (float(go) / denom)
    else:
        raise ValueError(f"reference: bad reduction {reduction!r}")
    return loss, grad.reshape(batch + (C,))


def cross_entropy(logits, target, **kw):
    kw.pop("grad_output", None)
    return cross_entropy_and_grad(logits, target, **kw)[0]


def one_hot(target, C):
    t = np.asarray(target)
    out = np.zeros(t.shape + (C,))
    np.put_along_axis(out, t[..., None].astype(np.int64), 1.0, axis=-1)
    return out


# --------------------------------------------------------------------------
# information measures (float64, natural log, divided by log(base))
# --------------------------------------------------------------------------

def _log_base(base):
    return 1.0 if base is None else math.log(base)


def surprisal(p, base=None):
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return -np.log(p) / _log_base(base)


def entropy(p, base=None):
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=-1) / _log_base(base)


def info_cross_entropy(p, q, base=None):
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(q), 0.0)  # q == 0 < p gives -inf
    return -terms.sum(axis=-1) / _log_base(base)


def kl_divergence(p, q, base=None):
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(q)), 0.0)
    return terms.sum(axis=-1) / _log_base(base)


# --------------------------------------------------------------------------
# high precision (mpmath) helpers for accuracy tests
# --------------------------------------------------------------------------

def mp_logsumexp(row, dps=60):
    with mpmath.workdps(dps):
        return mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in row))


def mp_nll(row, t, dps=60):
    """-log softmax(row)[t] = log1p(sum_{k != t} exp(row_k - row_t)) with `dps` digits.

    The log1p form keeps full relative accuracy however small the result is.
    """
    with mpmath.workdps(dps):
        xt = mpmath.mpf(float(row[t]))
        s = mpmath.fsum(mpmath.exp(mpmath.mpf(float(v)) - xt) for k, v in enumerate(row) if k != t)
        return float(mpmath.log1p(s))


def mp_log_softmax(row, dps=60):
    """log_softmax of a 1-D row as floats, each entry with full relative accuracy."""
    return np.array([-mp_nll(row, c, dps) for c in range(len(row))])


def mp_softmax(row, dps=60):
    with mpmath.workdps(dps):
        lse = mp_logsumexp(row, dps)
        return np.array([float(mpmath.exp(mpmath.mpf(float(v)) - lse)) for v in row])


# --------------------------------------------------------------------------
# batch scoring
# --------------------------------------------------------------------------

ECE_EDGES = np.arange(16) / 15  # 15 equal-width bins (lo, hi]


def score(logits, target, k=5, ignore_index=-100):
    """Per-row scores (float64) as a dict of arrays of logits.shape[:-1].

    Class-index targets (ignored rows: loss and target_prob nan, in_top_k False,
    counted False) or probability targets of logits' shape (target class = argmax).
    Rows without a softmax (NaN, +inf or only -inf) get nan loss, target_prob,
    entropy and confidence, and are not counted (``nonfinite`` True); pred is
    numpy.argmax; the top-k test counts the entries ranked above the target's (NaN above
    every number): fewer than k means a hit. ``brier`` is sum_c (p_c - [c = target])^2.
    """
    x2, batch = _rows(logits)
    R, C = x2.shape
    _, lsm, p, bad = _softmax_parts(x2)
    target = np.asarray(target)
    rows = np.arange(R)
    if np.issubdtype(target.dtype, np.integer):
        t = target.reshape(-1).astype(np.int64)
        counted = t != ignore_index
        if np.any(counted & ((t < 0) | (t >= C))):
            raise ValueError("reference: target out of range")
        tc = np.where(counted, t, 0)
        loss = np.where(counted, -lsm[rows, tc], np.nan)
    else:
        y = np.asarray(target, dtype=np.float64).reshape(R, C)
        tc = np.argmax(y, axis=1)
        counted = np.ones(R, bool)
        loss = -_xlogy_coef(y, lsm).sum(axis=1)
        loss = np.where(bad, np.nan, loss)
    xt = x2[rows, tc]
    with np.errstate(invalid="ignore"):
        above = (x2 > xt[:, None]) | (np.isnan(x2) & ~np.isnan(xt)[:, None])
    in_top_k = counted & (above.sum(axis=1) < k)
    target_prob = np.where(counted, p[rows, tc], np.nan)
    entropy_ = -_xlogy_coef(p, lsm).sum(axis=1)
    confidence = p.max(axis=1)
    onehot = np.zeros_like(p)
    onehot[rows, tc] = 1.0
    brier = np.where(counted & ~bad, ((p - onehot) ** 2).sum(axis=1), np.nan)
    out = dict(loss=loss, pred=np.argmax(x2, axis=1), target_prob=target_prob,
               in_top_k=in_top_k, entropy=np.where(bad, np.nan, entropy_),
               confidence=np.where(bad, np.nan, confidence), counted=counted & ~bad,
               target=tc, nonfinite=counted & bad, brier=brier)
    return {key: v.reshape(batch) for key, v in out.items()}


def ece(confidence, correct, bins=ECE_EDGES):
    """Expected calibration error: sum over bins (lo, hi] of the share of rows times
    |accuracy - mean confidence| (confidence <= 0 falls in the first bin)."""
    confidence = np.asarray(confidence, np.float64).reshape(-1)
    correct = np.asarray(correct, np.float64).reshape(-1)
    n = len(confidence)
    if n == 0:
        return 0.0
    if np.isnan(confidence).any():
        return float("nan")
    total = 0.0
    for b, (lo, hi) in enumerate(zip(bins[:-1], bins[1:])):
        in_bin = (confidence > lo) & (confidence <= hi)
        if b == 0:
            in_bin |= confidence <= lo
        if in_bin.any():
            total += in_bin.sum() / n * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def macro_f1(target, pred):
    """scikit-learn's f1_score(average="macro"): over the classes in target or pred."""
    labels = np.union1d(target, pred)
    if labels.size == 0:
        return 0.0
    f1 = []
    for c in labels:
        tp = np.sum((pred == c) & (target == c))
        den = np.sum(target == c) + np.sum(pred == c)
        f1.append(2 * tp / den)
    return float(np.mean(f1))


def score_summary(scores, k=5, bins=15):
    """The summary dict of per-row scores (from `score`), in float64."""
    c = scores["counted"].reshape(-1)
    n = int(c.sum())
    nonfinite = int(scores["nonfinite"].sum())
    if n == 0:
        return dict(rows=0, loss=0.0, bits=0.0, perplexity=1.0, accuracy=0.0,
                    top_k_accuracy=0.0, k=k, mean_entropy=0.0, ece=0.0, ece_bins=bins,
                    brier=0.0, macro_f1=0.0, nonfinite_rows=nonfinite)
    loss = float(scores["loss"].reshape(-1)[c].mean())
    correct = (scores["pred"] == scores["target"]).reshape(-1)[c]
    with np.errstate(over="ignore"):
        perplexity = float(np.exp(loss))
    return dict(rows=n, loss=loss, bits=loss / math.log(2), perplexity=perplexity,
                accuracy=float(correct.mean()),
                top_k_accuracy=float(scores["in_top_k"].reshape(-1)[c].mean()), k=k,
                mean_entropy=float(scores["entropy"].reshape(-1)[c].mean()),
                ece=ece(scores["confidence"].reshape(-1)[c], correct,
                        np.arange(bins + 1) / bins),
                ece_bins=bins, brier=float(scores["brier"].reshape(-1)[c].mean()),
                macro_f1=macro_f1(scores["target"].reshape(-1)[c],
                                  scores["pred"].reshape(-1)[c]),
                nonfinite_rows=nonfinite)
