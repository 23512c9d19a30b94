"""Batch scoring: per-row scores of a classifier's logits and their exact summary
(kernels: src/_score_kernels.pyx)."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np

from ._cross_entropy import _as_target
from ._simd import kernels
from ._validation import (INDEX_BITS, as_float_rows, check_int64, check_number, check_threads,
                          position_of)

_K = kernels("_score_kernels")
_F32, _F64 = np.dtype(np.float32).num, np.dtype(np.float64).num
_INDEX_KERNEL = {
    fnum: {inum: _K.score_index.__signatures__[f"{fname}|int{bits}_t"]
           for inum, bits in INDEX_BITS.items()}
    for fnum, fname in ((_F32, "float"), (_F64, "double"))
}
_PROBS_KERNEL = {_F32: _K.score_probs.__signatures__["float"],
                 _F64: _K.score_probs.__signatures__["double"]}

ECE_BINS: int = _K.ECE_BINS      # the default of ece_bins=
# Layout of the kernels' totals (xent_score.h): rows, correct, top_k, nonfinite, the bins'
# rows and correct ones; the exact sums (loss, entropy, brier, the bins' confidences),
# each as digits of 32 bits from 2**-1074 up and three counts of nan, +inf and -inf; then
# per class the support, the predictions and the correct ones.
_DIGITS = _K.EXACT_DIGITS
_FIXED = 4
_EXACT_WORDS = _DIGITS + 3
_SCALE = 1074          # an exact sum is an integer times 2**-1074
_LN2 = math.log(2.0)
PER_ROW = ("loss", "pred", "target_prob", "in_top_k", "entropy", "confidence", "counted")
_PER_CLASS = ("support", "predicted", "correct", "precision", "recall", "f1")


class _Exact(NamedTuple):
    """An exact sum of doubles: ``value * 2**-1074``, plus its non-finite terms."""
    value: int = 0
    nan: int = 0
    pos_inf: int = 0
    neg_inf: int = 0

    def __add__(self, other: Any) -> _Exact:
        return _Exact(*(a + b for a, b in zip(self, other)))

    @classmethod
    def from_words(cls, w: np.ndarray) -> _Exact:
        # Digits 0..D-2 are normalized to [0, 2**32), the top one is signed.
        low = int.from_bytes(w[:_DIGITS - 1].astype("<u4").tobytes(), "little")
        value = low + (int(w[_DIGITS - 1]) << (32 * (_DIGITS - 1)))
        return cls(value, int(w[_DIGITS]), int(w[_DIGITS + 1]), int(w[_DIGITS + 2]))

    def nonfinite(self) -> float | None:
        """The sum's value if a term is not finite (NaN, or an infinity), else None."""
        if self.nan or (self.pos_inf and self.neg_inf):
            return math.nan
        if self.pos_inf or self.neg_inf:
            return math.inf if self.pos_inf else -math.inf
        return None

    def mean(self, n: int) -> float:
        """The sum divided by ``n``, rounded once."""
        special = self.nonfinite()
        if special is not None:
            return special
        return _divide(self.value, n << _SCALE)


def _divide(num: int, den: int) -> float:
    try:
        return num / den          # int / int is correctly rounded in Python
    except OverflowError:
        return math.copysign(math.inf, num)


def _check_bins(ece_bins: Any) -> int:
    # bounded: each thread holds the bins (and an exact sum per bin) while it scores
    b = check_int64(ece_bins, "ece_bins")
    if not 1 <= b <= 10**6:
        raise ValueError(f"ece_bins must be in [1, 1000000], got {b}")
    return b


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    return a if a.shape[0] == n else np.concatenate([a, np.zeros(n - a.shape[0], np.int64)])


class ScoreTotals:
    """The exact totals behind a scoring summary, of constant size whatever the rows.

    What :func:`score` adds up over the counted rows: their number, the correct
    predictions, the top-k hits, the rows without a softmax (left out of the rest), the
    sums of the losses, entropies and Brier scores, per calibration bin the rows, the
    correct ones and the sum of the confidences, and per class the support, the
    predictions and the correct ones. The sums are exact (not rounded floating-point
    sums), so totals merge with ``+`` in any order and grouping with the same result:
    streaming a file chunk by chunk, or scoring its parts on a cluster, gives exactly
    the summary of one call.

    Parameters
    ----------
    k : int, optional
        The ``k`` of the top-k hits. ``None`` (an empty accumulator) takes the ``k`` of
        the first totals added.
    ece_bins : int, optional
        The calibration bins. ``None`` takes those of the first totals added.

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> rng = np.random.default_rng(0)
    >>> logits, target = rng.normal(size=(1000, 10)), rng.integers(0, 10, 1000)
    >>> total = xf.ScoreTotals()
    >>> for start in range(0, 1000, 300):          # stream in chunks
    ...     total += xf.score(logits[start:start + 300], target[start:start + 300]).totals
    >>> total.summary() == xf.score(logits, target).summary()
    True
    """

    __slots__ = ("k", "ece_bins", "rows", "correct", "top_k", "nonfinite", "bin_rows",
                 "bin_correct", "support", "predicted", "class_correct", "_raw", "_exact")

    def __init__(self, k: int | None = None, ece_bins: int | None = None) -> None:
        self.k = None if k is None else _check_k(k)
        self.ece_bins = None if ece_bins is None else _check_bins(ece_bins)
        nb = self.ece_bins or 0
        self.rows = self.correct = self.top_k = self.nonfinite = 0
        self.bin_rows = (0,) * nb
        self.bin_correct = (0,) * nb
        # per class: rows of that target, predictions of it, correct predictions of it
        self.support = np.zeros(0, np.int64)
        self.predicted = np.zeros(0, np.int64)
        self.class_correct = np.zeros(0, np.int64)
        self._raw: np.ndarray | None = None      # the kernel's exact sums, not parsed yet
        self._exact: tuple[_Exact, ...] = (_Exact(),) * (3 + nb)

    @classmethod
    def _from_kernel(cls, words: np.ndarray, k: int, nb: int, n_classes: int) -> ScoreTotals:
        t = cls(k, nb)
        c = words[:_FIXED + 2 * nb].tolist()
        t.rows, t.correct, t.top_k, t.nonfinite = c[0], c[1], c[2], c[3]
        t.bin_rows = tuple(c[_FIXED:_FIXED + nb])
        t.bin_correct = tuple(c[_FIXED + nb:])
        e0 = _FIXED + 2 * nb
        e1 = e0 + (3 + nb) * _EXACT_WORDS
        t._raw = words[e0:e1].reshape(3 + nb, _EXACT_WORDS)
        t.support, t.predicted, t.class_correct = words[e1:].reshape(3, n_classes)
        return t

    def _sums(self) -> tuple[_Exact, ...]:
        # Parsed on first use: a call that never asks for a summary does not pay for it.
        if self._raw is not None:
            self._exact = tuple(_Exact.from_words(w) for w in self._raw)
            self._raw = None
        return self._exact

    @property
    def loss(self) -> _Exact:
        """The exact sum of the losses."""
        return self._sums()[0]

    @property
    def entropy(self) -> _Exact:
        """The exact sum of the entropies."""
        return self._sums()[1]

    @property
    def brier(self) -> _Exact:
        """The exact sum of the Brier scores."""
        return self._sums()[2]

    @property
    def bin_conf(self) -> tuple[_Exact, ...]:
        """Per calibration bin, the exact sum of the confidences."""
        return self._sums()[3:]

    def __add__(self, other: object) -> ScoreTotals:
        if not isinstance(other, ScoreTotals):
            if isinstance(other, Scores):
                raise TypeError("cannot add Scores to ScoreTotals: add scores.totals, or "
                                "merge Scores with Scores")
            return NotImplemented
        if self.k is not None and other.k is not None and self.k != other.k:
            raise ValueError(f"cannot merge totals of different k ({self.k} and {other.k})")
        if (self.ece_bins is not None and other.ece_bins is not None
                and self.ece_bins != other.ece_bins):
            raise ValueError(f"cannot merge totals of different ece_bins ({self.ece_bins} "
                             f"and {other.ece_bins})")
        t = ScoreTotals(self.k if self.k is not None else other.k,
                        self.ece_bins if self.ece_bins is not None else other.ece_bins)
        t.rows, t.correct, t.top_k, t.nonfinite = (
            self.rows + other.rows, self.correct + other.correct, self.top_k + other.top_k,
            self.nonfinite + other.nonfinite)
        a, b = (self, other) if self.ece_bins is not None else (other, self)
        if b.ece_bins is None:      # an empty accumulator: no bins yet
            t.bin_rows, t.bin_correct = a.bin_rows, a.bin_correct
            t._exact = tuple(x + y for x, y in zip(a._sums()[:3], b._sums()[:3])) \
                + a._sums()[3:]
        else:
            t.bin_rows = tuple(x + y for x, y in zip(a.bin_rows, b.bin_rows))
            t.bin_correct = tuple(x + y for x, y in zip(a.bin_correct, b.bin_correct))
            t._exact = tuple(x + y for x, y in zip(a._sums(), b._sums()))
        n = max(self.support.shape[0], other.support.shape[0])   # classes: pad with 0
        t.support = _pad(self.support, n) + _pad(other.support, n)
        t.predicted = _pad(self.predicted, n) + _pad(other.predicted, n)
        t.class_correct = _pad(self.class_correct, n) + _pad(other.class_correct, n)
        return t

    def __radd__(self, other: Any) -> ScoreTotals:
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self             # sum(list_of_totals) starts from 0
        return NotImplemented

    def merge(self: ScoreTotals | Iterable[ScoreTotals],
              *more: ScoreTotals | Iterable[ScoreTotals]) -> ScoreTotals:
        """The totals of all parts together (exactly; order does not matter).

        Every spelling works: ``ScoreTotals.merge([a, b])``, ``ScoreTotals.merge(a, b)``,
        ``a.merge(b)``, ``a.merge([b, c])``, ``a + b`` and ``sum([a, b])``.
        """
        total = ScoreTotals()
        for p in _flatten((self,) + more, ScoreTotals):
            total = total + p
        return total

    def _state(self) -> tuple[Any, ...]:
        return (self.k, self.ece_bins, self.rows, self.correct, self.top_k, self.nonfinite,
                self.bin_rows, self.bin_correct, self._sums(),
                tuple(np.trim_zeros(self.support, "b").tolist()),
                tuple(np.trim_zeros(self.predicted, "b").tolist()),
                tuple(np.trim_zeros(self.class_correct, "b").tolist()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScoreTotals):
            return NotImplemented
        return self._state() == other._state()

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.k, self.ece_bins, self.rows, self.correct, self.top_k, self.nonfinite,
                self.bin_rows, self.bin_correct, self._sums(), self.support,
                self.predicted, self.class_correct)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (self.k, self.ece_bins, self.rows, self.correct, self.top_k, self.nonfinite,
         self.bin_rows, self.bin_correct, exact, self.support, self.predicted,
         self.class_correct) = state
        self._raw, self._exact = None, tuple(_Exact(*e) for e in exact)

    def __repr__(self) -> str:
        return f"ScoreTotals(rows={self.rows}, k={self.k}, ece_bins={self.ece_bins})"

    def summary(self) -> dict[str, Any]:
        """The summary of the counted rows, as :meth:`Scores.summary` describes it."""
        n = self.rows
        bins = self.ece_bins if self.ece_bins is not None else ECE_BINS
        if n == 0:  # a mean over nothing is 0, as everywhere in xent_fast
            return {"rows": 0, "loss": 0.0, "bits": 0.0, "perplexity": 1.0,
                    "accuracy": 0.0, "top_k_accuracy": 0.0, "k": self.k,
                    "mean_entropy": 0.0, "ece": 0.0, "ece_bins": bins, "brier": 0.0,
                    "macro_f1": 0.0, "nonfinite_rows": self.nonfinite}
        loss = self.loss.mean(n)
        return {
            "rows": n,
            "loss": loss,
            "bits": loss / _LN2,
            "perplexity": _exp(loss),
            "accuracy": self.correct / n,
            "top_k_accuracy": self.top_k / n,
            "k": self.k,
            "mean_entropy": self.entropy.mean(n),
            "ece": self._ece(),
            "ece_bins": bins,
            "brier": self.brier.mean(n),
            "macro_f1": self._macro_f1(),
            "nonfinite_rows": self.nonfinite,
        }

    def _ece(self) -> float:
        # sum_b |correct_b - sum of confidences_b| / rows, from the exact sums, rounded once
        special = [c.nonfinite() for c in self.bin_conf]
        if any(s is not None for s in special):
            return math.nan
        gap = sum(abs((c << _SCALE) - s.value) for c, s in zip(self.bin_correct, self.bin_conf))
        return _divide(gap, self.rows << _SCALE)

    def _macro_f1(self) -> float:
        # F1_c = 2 correct_c / (support_c + predicted_c), over the classes that occur among
        # the targets or the predictions (scikit-learn's labels=None); exact fractions,
        # rounded once
        from fractions import Fraction
        den = self.support + self.predicted
        present = np.flatnonzero(den)
        if present.size == 0:
            return 0.0
        total = sum((Fraction(2 * int(self.class_correct[c]), int(den[c])) for c in present),
                    Fraction(0))
        return float(total / present.size)

    def per_class(self) -> dict[str, np.ndarray]:
        """Per class: ``support`` (counted rows of that target), ``predicted`` (rows
        predicted as it), ``correct``, and ``precision``, ``recall``, ``f1`` (0 where
        their denominator is 0, as scikit-learn's ``zero_division=0``). Length: the
        number of classes of the logits.

        Examples
        --------
        >>> import numpy as np, xent_fast as xf
        >>> s = xf.score(np.log([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]]),
        ...              np.array([0, 1, 2]))
        >>> pc = s.per_class()
        >>> pc["support"], pc["predicted"], pc["f1"]
        (array([1, 1, 1]), array([2, 0, 1]), array([0.66666667, 0.        , 1.        ]))
        """
        sup, pred, cor = self.support.copy(), self.predicted.copy(), self.class_correct.copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(pred > 0, cor / np.maximum(pred, 1), 0.0)
            recall = np.where(sup > 0, cor / np.maximum(sup, 1), 0.0)
            f1 = np.where(sup + pred > 0, 2 * cor / np.maximum(sup + pred, 1), 0.0)
        return {"support": sup, "predicted": pred, "correct": cor, "precision": precision,
                "recall": recall, "f1": f1}

    def reliability(self) -> dict[str, np.ndarray]:
        """Per calibration bin: ``edges`` (``ece_bins + 1`` values, bin b is
        ``(edges[b], edges[b+1]]``), ``rows``, ``accuracy`` and ``confidence`` (mean
        confidence; both NaN in an empty bin): what a reliability diagram draws.

        Examples
        --------
        >>> import numpy as np, xent_fast as xf
        >>> s = xf.score(np.array([[2.0, 0.0], [0.0, 3.0]]), np.array([0, 0]))
        >>> r = s.totals.reliability()
        >>> r["rows"][r["rows"] > 0], r["accuracy"][r["rows"] > 0]
        (array([1, 1]), array([1., 0.]))
        """
        nb = self.ece_bins if self.ece_bins is not None else ECE_BINS
        rows = np.array(self.bin_rows or (0,) * nb, dtype=np.int64)
        conf_sums = self.bin_conf or (_Exact(),) * nb
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy = np.array(self.bin_correct or (0,) * nb, dtype=np.float64) / rows
            confidence = np.array([c.mean(int(r)) if r else math.nan
                                   for c, r in zip(conf_sums, rows)])
        return {"edges": np.arange(nb + 1) / nb, "rows": rows,
                "accuracy": accuracy, "confidence": confidence}


def _flatten(items: Iterable[Any], kind: type) -> list[Any]:
    """The parts of a merge: each item is one ``kind`` or an iterable of them."""
    out = []
    for item in items:
        if isinstance(item, kind):
            out.append(item)
            continue
        if isinstance(item, (str, bytes, np.ndarray)) or not hasattr(item, "__iter__"):
            raise TypeError(f"{kind.__name__}.merge takes {kind.__name__} objects or "
                            f"iterables of them, got {type(item).__name__}")
        for p in item:
            if not isinstance(p, kind):
                raise TypeError(f"{kind.__name__}.merge takes {kind.__name__} objects or "
                                f"iterables of them, got an iterable holding "
                                f"{type(p).__name__}")
            out.append(p)
    return out


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


class Scores:
    """Per-row scores of a batch of logits, and their summary (see :func:`score`).

    Attributes
    ----------
    loss : ndarray
        Cross-entropy of each row, in nats (NaN where the target is ``ignore_index``).
    pred : ndarray of int64
        The predicted class: the first largest logit, as ``numpy.argmax``.
    target_prob : ndarray
        Softmax probability of the target class (NaN where ignored).
    in_top_k : ndarray of bool
        Whether the target is among the ``k`` largest logits.
    entropy : ndarray
        Entropy of the predicted distribution, in nats.
    confidence : ndarray
        The largest softmax probability.
    counted : ndarray of bool
        The rows that enter the summary (target not ``ignore_index``, and logits that
        have a softmax).
    totals : ScoreTotals
        The exact totals of the counted rows.

    Every array has the shape ``logits.shape[:-1]``; the floating ones have the
    computation dtype.

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> a = xf.score(np.log([[0.1, 0.2, 0.7]]), np.array([2]))
    >>> b = xf.score(np.log([[0.7, 0.2, 0.1]]), np.array([1]))
    >>> both = xf.Scores.merge([a, b])
    >>> both.pred, both.summary()["accuracy"]
    (array([2, 0]), 0.5)
    """

    __slots__ = PER_ROW + ("totals",)

    def __init__(self, loss: np.ndarray, pred: np.ndarray, target_prob: np.ndarray,
                 in_top_k: np.ndarray, entropy: np.ndarray, confidence: np.ndarray,
                 counted: np.ndarray, totals: ScoreTotals) -> None:
        self.loss, self.pred, self.target_prob = loss, pred, target_prob
        self.in_top_k, self.entropy, self.confidence = in_top_k, entropy, confidence
        self.counted, self.totals = counted, totals

    @property
    def k(self) -> int | None:
        """The k of the top-k hits (None before any rows were scored)."""
        return self.totals.k

    def summary(self) -> dict[str, Any]:
        """The summary of the counted rows, as a dict with exactly these keys.

        ``rows`` (counted rows), ``loss`` (mean, nats), ``bits`` (mean, bits),
        ``perplexity`` (exp of the mean loss), ``accuracy`` (prediction equals the
        target), ``top_k_accuracy``, ``k``, ``mean_entropy`` (nats), ``ece`` (expected
        calibration error: over ``ece_bins`` equal-width bins of the confidence, the
        rows' share times ``|accuracy - mean confidence|`` of each bin), ``ece_bins``,
        ``brier`` (mean over rows of ``sum_c (p_c - [c = target])**2``, from 0 to 2),
        ``macro_f1`` (unweighted mean F1 over the classes that occur among the targets
        or the predictions, as scikit-learn's ``f1_score(average="macro")``) and
        ``nonfinite_rows`` (rows whose logits have no softmax: a NaN, a ``+inf``, or
        only ``-inf``; they are left out of ``rows`` and of every other figure).

        The sums behind them are exact and each value is rounded once, so the summary
        is the same whatever the thread count or the split of the rows into calls. With
        no counted rows every mean is 0 (the perplexity 1), as elsewhere in xent_fast.

        Examples
        --------
        >>> import numpy as np, xent_fast as xf
        >>> s = xf.score(np.log([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]]), np.array([2, 1]), k=2)
        >>> {key: round(v, 4) for key, v in s.summary().items()}  # doctest: +NORMALIZE_WHITESPACE
        {'rows': 2, 'loss': 0.7803, 'bits': 1.1258, 'perplexity': 2.1822, 'accuracy': 0.5,
         'top_k_accuracy': 1.0, 'k': 2, 'mean_entropy': 0.9157, 'ece': 0.4, 'ece_bins': 15,
         'brier': 0.46, 'macro_f1': 0.3333, 'nonfinite_rows': 0}
        """
        return self.totals.summary()

    def per_class(self) -> dict[str, np.ndarray]:
        """Per class: support, predictions, correct ones, precision, recall and F1 (see
        :meth:`ScoreTotals.per_class`); they merge exactly with the totals."""
        return self.totals.per_class()

    def per_row(self) -> dict[str, np.ndarray]:
        """The per-row arrays by name (what ``numpy.savez`` takes)."""
        return {name: getattr(self, name) for name in PER_ROW}

    def merge(self: Scores | Iterable[Scores], *more: Scores | Iterable[Scores]) -> Scores:
        """The scores of several batches as one: per-row arrays concatenated along the
        first axis (flattened if their other axes differ), totals merged exactly.

        Every spelling works: ``Scores.merge([a, b])``, ``Scores.merge(a, b)``,
        ``a.merge(b)``, ``a.merge([b, c])``, ``a + b`` and ``sum([a, b])``; anything
        but ``Scores`` raises ``TypeError``, and scores of different ``k`` or
        ``ece_bins`` raise ``ValueError``.

        Examples
        --------
        >>> import numpy as np, xent_fast as xf
        >>> a = xf.score(np.log([[0.1, 0.2, 0.7]]), np.array([2]))
        >>> b = xf.score(np.log([[0.7, 0.2, 0.1]]), np.array([1]))
        >>> (a + b).summary() == a.merge(b).summary() == xf.Scores.merge([a, b]).summary()
        True
        """
        parts = _flatten((self,) + more, Scores)
        if not parts:
            raise ValueError("Scores.merge needs at least one Scores")
        arrays = []
        for name in PER_ROW:
            pieces = [getattr(p, name) for p in parts]
            if any(a.ndim == 0 for a in pieces) or len({a.shape[1:] for a in pieces}) > 1:
                pieces = [a.reshape(-1) for a in pieces]
            arrays.append(np.concatenate(pieces))
        return Scores(*arrays, totals=ScoreTotals.merge(p.totals for p in parts))  # type: ignore[misc, arg-type]

    def __add__(self, other: object) -> Scores:
        if not isinstance(other, Scores):
            if isinstance(other, ScoreTotals):
                raise TypeError("cannot add ScoreTotals to Scores: add scores.totals to "
                                "the totals instead")
            return NotImplemented
        return self.merge(other)

    def __radd__(self, other: Any) -> Scores:
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self             # sum(list_of_scores) starts from 0
        return NotImplemented

    def __iter__(self) -> Any:
        # Not iterable: without this, list(scores) would go through __len__ and fail
        # with a confusing message.
        raise TypeError("'Scores' object is not iterable: use .per_row() for the arrays, "
                        "or Scores.merge(a, b) / a + b to combine scores")

    def __len__(self) -> int:
        return int(self.loss.size)

    def __repr__(self) -> str:
        return (f"Scores(shape={self.loss.shape}, counted={self.totals.rows}, "
                f"k={self.totals.k}, dtype={self.loss.dtype})")


def _check_k(k: Any) -> int:
    if isinstance(k, (bool, np.bool_)):
        raise TypeError("k must be a positive int, got a bool")
    try:
        kk = int(k.__index__())
    except (AttributeError, TypeError):
        raise TypeError(f"k must be a positive int, got {type(k).__name__}") from None
    if kk < 1:
        raise ValueError(f"k must be a positive int, got {kk}")
    return kk


def _check_temperature(temperature: Any) -> float:
    return check_number(temperature, "temperature", low=0.0, low_open=True)


def _inverse_temperature(temperature: Any, dtype: np.dtype) -> float:
    """1 / T, which the kernels multiply the logits by in their dtype: it must be finite
    there (1 / 1e-40 is inf in float32, and 0 * inf made every loss NaN)."""
    inv_t = 1.0 / _check_temperature(temperature)
    top = float(np.finfo(dtype).max)
    if not inv_t <= top:
        raise ValueError(f"temperature must be at least {1 / top:.4g} for {dtype} logits "
                         f"(its reciprocal scales them and must be finite), got {temperature!r}")
    return inv_t


def _run(logits: Any, target: Any, k: Any, ignore_index: Any, n_threads: Any,
         per_row: bool, temperature: Any = 1.0,
         ece_bins: Any = ECE_BINS) -> tuple[ScoreTotals, tuple[np.ndarray, ...] | None]:
    x = as_float_rows(logits, "logits")
    n = x.shape[-1]
    batch_shape = x.shape[:-1]
    by_index, t = _as_target(target, x, batch_shape)
    kk = _check_k(k)
    ignore = check_int64(ignore_index, "ignore_index")
    nt = check_threads(n_threads)
    inv_t = _inverse_temperature(temperature, x.dtype)
    nb = _check_bins(ece_bins)

    x2 = x.reshape(-1, n)
    outputs = None
    flat: tuple[Any, ...] = (None,) * 7
    if per_row:
        dt = x.dtype
        outputs = (np.empty(batch_shape, dt), np.empty(batch_shape, np.int64),
                   np.empty(batch_shape, dt), np.empty(batch_shape, np.bool_),
                   np.empty(batch_shape, dt), np.empty(batch_shape, dt),
                   np.empty(batch_shape, np.bool_))
        flat = tuple(a.reshape(-1) if a.dtype != np.bool_ else a.reshape(-1).view(np.uint8)
                     for a in outputs)
    words = np.empty(_K.totals_words(nb, n), np.int64)
    k_rows = min(kk, n)         # fewer than n logits are above any one: same test, no overflow
    if by_index:
        t1 = t.reshape(-1)
        first_bad = _INDEX_KERNEL[x.dtype.num][t1.dtype.num](
            x2, t1, k_rows, ignore, inv_t, nb, *flat, words, nt)
        if first_bad >= 0:
            _raise_bad_target(t1, first_bad, batch_shape, n, ignore)
    else:
        _PROBS_KERNEL[x.dtype.num](x2, t.reshape(-1, n), k_rows, inv_t, nb, *flat, words, nt)
    return ScoreTotals._from_kernel(words, kk, nb, n), outputs


def _raise_bad_target(t1: np.ndarray, first_bad: int, batch_shape: tuple[int, ...], n: int,
                      ignore: int) -> None:
    raise ValueError(
        f"target{position_of(first_bad, batch_shape)} = {t1[first_bad]} is not a valid "
        f"class index: it must be in [0, {n}) or equal ignore_index ({ignore})"
    )


def score(logits: Any, target: Any, *, k: int = 5, ignore_index: int = -100,
          temperature: float = 1.0, ece_bins: int = ECE_BINS,
          n_threads: int | None = None) -> Scores:
    """Score a classifier's logits against targets in one pass over each row.

    For every row: the cross-entropy ``loss``, the prediction ``pred``, the target's
    probability, whether the target is in the top ``k``, the entropy of the predicted
    distribution and its confidence; and a summary of them all
    (:meth:`Scores.summary`: loss, accuracy, top-k accuracy, ECE, Brier score, macro
    F1, ...) and per-class figures (:meth:`Scores.per_class`). Nothing of the logits'
    size is allocated, the rows are scored in parallel with the GIL released, and a
    tiny loss or entropy keeps full relative accuracy.

    Parameters
    ----------
    logits : array_like of shape (..., C)
        Unnormalised scores, float32 or float64 (float16 is computed in float32).
        ``-inf`` entries are masked classes.
    target : array_like
        Class indices, of any integer dtype and shape ``logits.shape[:-1]``, each in
        ``[0, C)`` or equal to ``ignore_index``; or class probabilities of the logits'
        shape, whose target class (for ``pred``, ``target_prob``, the top-k test and
        the Brier score) is their argmax and whose loss is the cross-entropy
        ``-sum_c y_c log p_c``.
    k : int, default 5
        The top-k test: the target is in the top ``k`` when fewer than ``k`` logits are
        strictly larger than its own, so a tie with the k-th largest counts in its
        favour. ``k`` may exceed C (every target is then in the top k).
    ignore_index : int, default -100
        Class-index rows with this target are left out of the summary; their ``loss``
        and ``target_prob`` are NaN and ``in_top_k`` False.
    temperature : float, default 1.0
        Score ``softmax(logits / temperature)``, as temperature scaling calibrates a
        model (see :func:`fit_temperature`). The logits are read as they are: no
        divided copy is made.
    ece_bins : int, default 15
        The equal-width confidence bins of the ECE and of the reliability diagram.
    n_threads : int, optional
        OpenMP threads: ``None`` for the default, a positive count, or ``-1`` for every
        core. Results are bitwise identical for every value.

    Returns
    -------
    Scores
        Per-row arrays of shape ``logits.shape[:-1]`` and the exact totals.

    Notes
    -----
    ``pred`` is ``numpy.argmax`` of the row (the first largest logit), and a row is
    correct when ``pred`` equals the target; ``in_top_k`` counts ties in the target's
    favour, so with ``k=1`` the top-k accuracy can exceed the accuracy on tied rows.
    A row holding NaN, ``+inf`` or only ``-inf`` has no softmax: its loss, target
    probability, entropy and confidence are NaN, its prediction is numpy's argmax (the
    first NaN, else the first maximum), and its top-k test ranks NaN above every
    number; it is counted in the summary's ``nonfinite_rows`` and left out of every
    other figure (``counted`` is False).

    Raises
    ------
    ValueError
        If a class index is out of range (the message names the first one), ``k``
        or ``ece_bins`` is below 1, or ``temperature`` is not positive and finite.
    TypeError
        If the logits are not floating, or a float target has the shape of class indices.

    Examples
    --------
    A textbook example: the model gives the true class (a dog) probability 0.7.

    >>> import numpy as np, xent_fast as xf
    >>> s = xf.score(np.log([0.1, 0.2, 0.7]), 2)
    >>> float(s.loss), int(s.pred), float(s.target_prob), float(s.confidence)
    (0.35667494393873245, 2, 0.7, 0.7)
    >>> summary = s.summary()
    >>> round(summary["bits"], 4), summary["accuracy"], round(summary["brier"], 4)
    (0.5146, 1.0, 0.14)

    Calibrating an overconfident model: fit the temperature, score with it.

    >>> rng = np.random.default_rng(0)
    >>> target = rng.integers(0, 10, 5000)
    >>> logits = rng.normal(size=(5000, 10)) + 2 * np.eye(10)[target]
    >>> logits *= 3                          # overconfident
    >>> T = xf.fit_temperature(logits, target)
    >>> before, after = xf.score(logits, target), xf.score(logits, target, temperature=T)
    >>> round(T, 2), after.summary()["ece"] < before.summary()["ece"]
    (1.48, True)
    """
    totals, outputs = _run(logits, target, k, ignore_index, n_threads, True, temperature,
                           ece_bins)
    return Scores(*outputs, totals=totals)  # type: ignore[misc]


def score_totals(logits: Any, target: Any, *, k: int = 5, ignore_index: int = -100,
                 temperature: float = 1.0, ece_bins: int = ECE_BINS,
                 n_threads: int | None = None) -> ScoreTotals:
    """:func:`score` without the per-row arrays: only the exact totals (what streaming
    and distributed scoring need)."""
    return _run(logits, target, k, ignore_index, n_threads, False, temperature, ece_bins)[0]


# --- temperature scaling ---------------------------------------------------------------

_TEMP_KERNEL = {
    fnum: {inum: _K.temperature_sums.__signatures__[f"{fname}|int{bits}_t"]
           for inum, bits in INDEX_BITS.items()}
    for fnum, fname in ((_F32, "float"), (_F64, "double"))
}
TEMPERATURE_BOUNDS = (1e-3, 1e3)


class _TemperatureSums(NamedTuple):
    """Sums over the counted rows at s = 1 / T: the loss, dL/ds and d2L/ds2."""
    rows: int
    nonfinite: int
    loss: float
    grad_s: float
    curv_s: float

    def __add__(self, other: Any) -> _TemperatureSums:
        return _TemperatureSums(*(a + b for a, b in zip(self, other)))


def _temperature_pass(logits: Any, target: Any, temperature: float, ignore_index: int = -100,
                      n_threads: int | None = None, fit: bool = False) -> _TemperatureSums:
    """One fused pass: the sums of the loss of ``softmax(logits / temperature)`` and of
    its first two derivatives in ``s = 1 / temperature``, over the counted rows (with
    ``fit``, not over rows whose target is masked: see :func:`_possible_targets`)."""
    x = as_float_rows(logits, "logits")
    n = x.shape[-1]
    by_index, t = _as_target(target, x, x.shape[:-1])
    if not by_index:
        raise TypeError("fit_temperature takes class indices as targets, not probabilities")
    ignore = check_int64(ignore_index, "ignore_index")
    inv_t = _inverse_temperature(temperature, x.dtype)
    t1 = t.reshape(-1)
    if fit:
        t1 = _possible_targets(x.reshape(-1, n), t1, ignore)
    rows, nonfinite, loss, g, h, bad = _TEMP_KERNEL[x.dtype.num][t1.dtype.num](
        x.reshape(-1, n), t1, ignore, inv_t, check_threads(n_threads))
    if bad >= 0:
        _raise_bad_target(t1, bad, x.shape[:-1], n, ignore)
    return _TemperatureSums(rows, nonfinite, loss, g, h)


def _possible_targets(x2: np.ndarray, t1: np.ndarray, ignore: int) -> np.ndarray:
    """``t1`` with ``ignore`` in place of the targets whose logit is ``-inf``: their
    probability is 0 at every temperature, so their loss is infinite whatever T and says
    nothing about it (one such row made the mean loss inf, its slope -inf, and the fit
    ran to the upper bound). A gather of one logit per row, not a pass over the logits."""
    rows = np.flatnonzero((t1 >= 0) & (t1 < x2.shape[1]) & (t1 != ignore))
    impossible = x2[rows, t1[rows]] == -np.inf
    if not impossible.any():
        return t1
    out = t1.astype(np.int64)          # a copy, wide enough for any ignore_index
    out[rows[impossible]] = ignore
    return out


def temperature_loss(logits: Any, target: Any, temperature: float, *,
                     ignore_index: int = -100,
                     n_threads: int | None = None) -> tuple[float, float]:
    """The mean loss of ``softmax(logits / temperature)`` over the counted rows and its
    derivative in the temperature, from one pass over the logits.

    ``L(T) = mean(logsumexp(x / T) - x_t / T)`` and
    ``dL/dT = mean(x_t - sum_c p_c x_c) / T**2`` with ``p = softmax(x / T)``; rows
    whose target is ``ignore_index``, or whose logits have no softmax, are left out.
    This is the pass each step of :func:`fit_temperature` makes.

    Parameters
    ----------
    logits : array_like of shape (..., C)
        Logits, float32 or float64 (float16 is computed in float32).
    target : array_like of int
        Class indices of shape ``logits.shape[:-1]``.
    temperature : float
        ``T > 0``.
    ignore_index : int, default -100
        Rows with this target are left out.
    n_threads : int, optional
        OpenMP threads, as in :func:`score`; the result is the same for every value.

    Returns
    -------
    (float, float)
        ``L(T)`` and ``dL/dT`` (both 0 if no row counts).

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> loss, dloss = xf.temperature_loss(np.array([[2.0, 0.0]]), np.array([0]), 1.0)
    >>> round(loss, 6), round(dloss, 6)     # log(1 + e^-2); 2 p_1 > 0: softer is worse here
    (0.126928, 0.238406)
    """
    T = _check_temperature(temperature)
    s = _temperature_pass(logits, target, T, ignore_index, n_threads)
    if s.rows == 0:
        return 0.0, 0.0
    # / T / T: T * T underflows to 0 for T < 1e-162 (a ZeroDivisionError)
    return s.loss / s.rows, -s.grad_s / s.rows / T / T


def _newton_inverse_temperature(sums_at: Callable[[float], _TemperatureSums],
                                bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
                                rtol: float = 1e-10,
                                max_passes: int = 40) -> tuple[float, int]:
    """The minimiser over s = 1 / T of the mean loss, and the passes it took.

    The loss is convex in s (a log-sum-exp of functions linear in s), so its derivative
    g(s) is increasing: every pass narrows a bracket [lo, hi] around the root of g, and
    the Newton step (curvature from the same pass) is taken when it stays inside the
    bracket, else the geometric middle of the bracket (Numerical Recipes' rtsafe, on a
    log scale). Newton converges quadratically from s = 1 in a handful of passes. It
    stops when a step moves s by at most ``rtol`` relative: float32 sums carry noise
    of about 1e-7, so their iteration stops at 1e-6 rather than chase it.
    """
    lo, hi = 1.0 / bounds[1], 1.0 / bounds[0]
    s, g_prev = 1.0, 0.0
    for passes in range(1, max_passes + 1):
        r = sums_at(1.0 / s)
        if r.rows == 0:
            return 1.0, passes
        g, h = r.grad_s / r.rows, r.curv_s / r.rows
        if g > 0:
            hi = s
        elif g < 0:
            lo = s
        else:
            return s, passes
        step = -g / h if h > 0 else math.nan
        if abs(g) * s <= 1e-14 and not abs(step) <= rtol * s:
            # Far in a tail: doubling s would change the mean loss by less than 1e-14
            # nats, yet Newton is not converging. The infimum lies at the bound.
            return (hi if g < 0 else lo) if hi / lo > 1 + rtol else s, passes
        if g * g_prev > 0 and abs(g) > 0.25 * abs(g_prev):
            # Newton is converging linearly, not quadratically: the minimum lies far out
            # in an exponential tail (data nearly all right, or pure noise), where the
            # loss's curvature shrinks as fast as its slope. Double (or halve) s instead.
            step = s if g < 0 else -s / 2
        new = s + step
        if not lo < new < hi:              # also for NaN: bisect on a log scale
            new = math.sqrt(lo * hi)
        g_prev = g
        if abs(new - s) <= rtol * s or hi <= lo * (1 + rtol):
            return new, passes
        s = new
    return s, max_passes


def fit_temperature(logits: Any, target: Any, *, ignore_index: int = -100,
                    n_threads: int | None = None) -> float:
    """The temperature ``T`` that minimises the mean loss of ``softmax(logits / T)``.

    Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural
    Networks"): one scalar, fitted on held-out logits, that makes a model's confidence
    match its accuracy without changing a single prediction. Score with it by
    ``score(logits, target, temperature=T)``.

    Each step is one fused pass over the logits that gives the loss and its first and
    second derivatives (no probabilities are materialised); the loss is convex in
    ``1 / T``, and a Newton iteration safeguarded by bisection finds the minimum in a
    handful of passes.

    Parameters
    ----------
    logits : array_like of shape (..., C)
        Held-out logits, float32 or float64 (float16 is computed in float32).
    target : array_like of int
        Class indices of shape ``logits.shape[:-1]``.
    ignore_index : int, default -100
        Rows with this target are left out, as are rows whose logits have no softmax
        and rows whose target's logit is ``-inf`` (a masked class: its loss is infinite
        at every temperature, so it says nothing about T).
    n_threads : int, optional
        OpenMP threads, as in :func:`score`. The result is the same for every value.

    Returns
    -------
    float
        ``T > 0``, searched in ``[1e-3, 1e3]`` (a bound is returned when the loss
        keeps decreasing towards it: towards 1e-3 on data every row of which is right
        by a margin, towards 1e3 on logits that carry no information). 1.0 if no
        row counts. ``T > 1`` softens an overconfident model, ``T < 1`` sharpens an
        underconfident one.

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> rng = np.random.default_rng(0)
    >>> target = rng.integers(0, 10, 5000)
    >>> logits = rng.normal(size=(5000, 10)) + 2 * np.eye(10)[target]
    >>> round(xf.fit_temperature(3 * logits, target) / xf.fit_temperature(logits, target), 6)
    3.0
    """
    x = as_float_rows(logits, "logits")
    by_index, t = _as_target(target, x, x.shape[:-1])
    if not by_index:
        raise TypeError("fit_temperature takes class indices as targets, not probabilities")
    ignore = check_int64(ignore_index, "ignore_index")
    check_threads(n_threads)
    t = _possible_targets(x.reshape(-1, x.shape[-1]), t.reshape(-1), ignore)   # once
    s, _ = _newton_inverse_temperature(
        lambda T: _temperature_pass(x, t, T, ignore, n_threads),
        rtol=1e-6 if x.dtype == np.float32 else 1e-10)
    return 1.0 / s
