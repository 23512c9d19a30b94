"""Batch scoring: per-row scores of a classifier's logits and their exact summary
(kernels: src/_score_kernels.pyx)."""

from __future__ import annotations

import math
from typing import Any, Iterable, NamedTuple

import numpy as np

from ._cross_entropy import _as_target
from ._simd import kernels
from ._validation import INDEX_BITS, as_float_rows, check_int64, check_threads, position_of

_K = kernels("_score_kernels")
_F32, _F64 = np.dtype(np.float32).num, np.dtype(np.float64).num
_INDEX_KERNEL = {
    fnum: {inum: _K.score_index.__signatures__[f"{fname}|int{bits}_t"]
           for inum, bits in INDEX_BITS.items()}
    for fnum, fname in ((_F32, "float"), (_F64, "double"))
}
_PROBS_KERNEL = {_F32: _K.score_probs.__signatures__["float"],
                 _F64: _K.score_probs.__signatures__["double"]}

ECE_BINS: int = _K.ECE_BINS
# Layout of the kernels' totals (xent_score.h): counts, then the exact sums, each as
# digits of 32 bits from 2**-1074 up and three counts of nan, +inf and -inf.
_DIGITS = _K.EXACT_DIGITS
_COUNTS = 3 + 2 * ECE_BINS
_EXACT_WORDS = _DIGITS + 3
_SCALE = 1074          # an exact sum is an integer times 2**-1074
_LN2 = math.log(2.0)
PER_ROW = ("loss", "pred", "target_prob", "in_top_k", "entropy", "confidence", "counted")


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


class ScoreTotals:
    """The exact totals behind a scoring summary, of constant size whatever the rows.

    What :func:`score` adds up over the counted rows: their number, the correct
    predictions, the top-k hits, the sums of the losses and entropies, and per
    calibration bin the rows, the correct ones and the sum of the confidences. The sums
    are exact (not rounded floating-point sums), so totals merge with ``+`` in any
    order and grouping with the same result: streaming a file chunk by chunk, or
    scoring its parts on a cluster, gives exactly the summary of one call.

    Parameters
    ----------
    k : int, optional
        The ``k`` of the top-k hits. ``None`` (an empty accumulator) takes the ``k`` of
        the first totals added.

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

    __slots__ = ("k", "rows", "correct", "top_k", "bin_rows", "bin_correct", "_raw", "_exact")

    def __init__(self, k: int | None = None) -> None:
        self.k = None if k is None else _check_k(k)
        self.rows = self.correct = self.top_k = 0
        self.bin_rows = (0,) * ECE_BINS
        self.bin_correct = (0,) * ECE_BINS
        self._raw: np.ndarray | None = None      # the kernel's exact sums, not parsed yet
        self._exact: tuple[_Exact, ...] = (_Exact(),) * (2 + ECE_BINS)

    @classmethod
    def _from_kernel(cls, words: np.ndarray, k: int) -> ScoreTotals:
        t = cls(k)
        c = words[:_COUNTS].tolist()
        t.rows, t.correct, t.top_k = c[0], c[1], c[2]
        t.bin_rows = tuple(c[3:3 + ECE_BINS])
        t.bin_correct = tuple(c[3 + ECE_BINS:])
        t._raw = words[_COUNTS:].reshape(2 + ECE_BINS, _EXACT_WORDS)
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
    def bin_conf(self) -> tuple[_Exact, ...]:
        """Per calibration bin, the exact sum of the confidences."""
        return self._sums()[2:]

    def __add__(self, other: ScoreTotals) -> ScoreTotals:
        if not isinstance(other, ScoreTotals):
            return NotImplemented
        if self.k is not None and other.k is not None and self.k != other.k:
            raise ValueError(f"cannot merge totals of different k ({self.k} and {other.k})")
        t = ScoreTotals(self.k if self.k is not None else other.k)
        t.rows, t.correct, t.top_k = (self.rows + other.rows, self.correct + other.correct,
                                      self.top_k + other.top_k)
        t.bin_rows = tuple(a + b for a, b in zip(self.bin_rows, other.bin_rows))
        t.bin_correct = tuple(a + b for a, b in zip(self.bin_correct, other.bin_correct))
        t._exact = tuple(a + b for a, b in zip(self._sums(), other._sums()))
        return t

    @classmethod
    def merge(cls, parts: Iterable[ScoreTotals]) -> ScoreTotals:
        """The totals of all ``parts`` together (exactly; order does not matter)."""
        total = cls()
        for p in parts:
            total = total + p
        return total

    def _state(self) -> tuple[Any, ...]:
        return (self.k, self.rows, self.correct, self.top_k, self.bin_rows,
                self.bin_correct, self._sums())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScoreTotals):
            return NotImplemented
        return self._state() == other._state()

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> tuple[Any, ...]:
        return self._state()

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (self.k, self.rows, self.correct, self.top_k, self.bin_rows, self.bin_correct,
         exact) = state
        self._raw, self._exact = None, tuple(_Exact(*e) for e in exact)

    def __repr__(self) -> str:
        return f"ScoreTotals(rows={self.rows}, k={self.k})"

    def summary(self) -> dict[str, Any]:
        """The summary of the counted rows, as :meth:`Scores.summary` describes it."""
        n = self.rows
        if n == 0:  # a mean over nothing is 0, as everywhere in xent_fast
            return {"rows": 0, "loss": 0.0, "bits": 0.0, "perplexity": 1.0,
                    "accuracy": 0.0, "top_k_accuracy": 0.0, "k": self.k,
                    "mean_entropy": 0.0, "ece": 0.0}
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
        }

    def _ece(self) -> float:
        # sum_b |correct_b - sum of confidences_b| / rows, from the exact sums, rounded once
        special = [c.nonfinite() for c in self.bin_conf]
        if any(s is not None for s in special):
            return math.nan      # a confidence is NaN (a row without a softmax)
        gap = sum(abs((c << _SCALE) - s.value) for c, s in zip(self.bin_correct, self.bin_conf))
        return _divide(gap, self.rows << _SCALE)

    def reliability(self) -> dict[str, np.ndarray]:
        """Per calibration bin: ``edges`` (16 values, bin b is ``(edges[b], edges[b+1]]``),
        ``rows``, ``accuracy`` and ``confidence`` (mean confidence; both NaN in an
        empty bin): what a reliability diagram draws.

        Examples
        --------
        >>> import numpy as np, xent_fast as xf
        >>> s = xf.score(np.array([[2.0, 0.0], [0.0, 3.0]]), np.array([0, 0]))
        >>> r = s.totals.reliability()
        >>> r["rows"][r["rows"] > 0], r["accuracy"][r["rows"] > 0]
        (array([1, 1]), array([1., 0.]))
        """
        rows = np.array(self.bin_rows, dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy = np.array(self.bin_correct, dtype=np.float64) / rows
            confidence = np.array([c.mean(r) if r else math.nan
                                   for c, r in zip(self.bin_conf, self.bin_rows)])
        return {"edges": np.arange(ECE_BINS + 1) / ECE_BINS, "rows": rows,
                "accuracy": accuracy, "confidence": confidence}


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
        The rows that enter the summary (target not ``ignore_index``).
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
        target), ``top_k_accuracy``, ``k``, ``mean_entropy`` (nats) and ``ece`` (expected
        calibration error: over 15 equal-width bins of the confidence, the rows'
        share times ``|accuracy - mean confidence|`` of each bin).

        The sums behind them are exact and each value is rounded once, so the summary
        is the same whatever the thread count or the split of the rows into calls. With
        no counted rows every mean is 0 (the perplexity 1), as elsewhere in xent_fast.

        Examples
        --------
        >>> import numpy as np, xent_fast as xf
        >>> s = xf.score(np.log([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]]), np.array([2, 1]), k=2)
        >>> {key: round(v, 4) for key, v in s.summary().items()}  # doctest: +NORMALIZE_WHITESPACE
        {'rows': 2, 'loss': 0.7803, 'bits': 1.1258, 'perplexity': 2.1822, 'accuracy': 0.5,
         'top_k_accuracy': 1.0, 'k': 2, 'mean_entropy': 0.9157, 'ece': 0.4}
        """
        return self.totals.summary()

    def per_row(self) -> dict[str, np.ndarray]:
        """The per-row arrays by name (what ``numpy.savez`` takes)."""
        return {name: getattr(self, name) for name in PER_ROW}

    @classmethod
    def merge(cls, parts: Iterable[Scores]) -> Scores:
        """The scores of several batches as one: per-row arrays concatenated along the
        first axis (flattened if their other axes differ), totals merged exactly."""
        parts = list(parts)
        if not parts:
            raise ValueError("Scores.merge needs at least one Scores")
        arrays = []
        for name in PER_ROW:
            pieces = [getattr(p, name) for p in parts]
            if any(a.ndim == 0 for a in pieces) or len({a.shape[1:] for a in pieces}) > 1:
                pieces = [a.reshape(-1) for a in pieces]
            arrays.append(np.concatenate(pieces))
        return cls(*arrays, totals=ScoreTotals.merge(p.totals for p in parts))  # type: ignore[misc, arg-type]

    def __len__(self) -> int:
        return int(self.loss.size)

    def __repr__(self) -> str:
        return (f"Scores(shape={self.loss.shape}, counted={self.totals.rows}, "
                f"k={self.totals.k}, dtype={self.loss.dtype})")


def _check_k(k: Any) -> int:
    if isinstance(k, bool):
        raise TypeError("k must be a positive int, got a bool")
    try:
        kk = int(k.__index__())
    except (AttributeError, TypeError):
        raise TypeError(f"k must be a positive int, got {type(k).__name__}") from None
    if kk < 1:
        raise ValueError(f"k must be a positive int, got {kk}")
    return kk


def _run(logits: Any, target: Any, k: Any, ignore_index: Any, n_threads: Any,
         per_row: bool) -> tuple[ScoreTotals, tuple[np.ndarray, ...] | None]:
    x = as_float_rows(logits, "logits")
    n = x.shape[-1]
    batch_shape = x.shape[:-1]
    by_index, t = _as_target(target, x, batch_shape)
    kk = _check_k(k)
    ignore = check_int64(ignore_index, "ignore_index")
    nt = check_threads(n_threads)

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
    words = np.empty(_K.TOTALS_WORDS, np.int64)
    k_rows = min(kk, n)         # fewer than n logits are above any one: same test, no overflow
    if by_index:
        t1 = t.reshape(-1)
        first_bad = _INDEX_KERNEL[x.dtype.num][t1.dtype.num](
            x2, t1, k_rows, ignore, *flat, words, nt)
        if first_bad >= 0:
            raise ValueError(
                f"target{position_of(first_bad, batch_shape)} = {t1[first_bad]} is not a valid "
                f"class index: it must be in [0, {n}) or equal ignore_index ({ignore})"
            )
    else:
        _PROBS_KERNEL[x.dtype.num](x2, t.reshape(-1, n), k_rows, *flat, words, nt)
    return ScoreTotals._from_kernel(words, kk), outputs


def score(logits: Any, target: Any, *, k: int = 5, ignore_index: int = -100,
          n_threads: int | None = None) -> Scores:
    """Score a classifier's logits against targets in one pass over each row.

    For every row: the cross-entropy ``loss``, the prediction ``pred``, the target's
    probability, whether the target is in the top ``k``, the entropy of the predicted
    distribution and its confidence; and a summary of them all
    (:meth:`Scores.summary`). Nothing of the logits' size is allocated, the rows are
    scored in parallel with the GIL released, and a tiny loss or entropy keeps full
    relative accuracy.

    Parameters
    ----------
    logits : array_like of shape (..., C)
        Unnormalised scores, float32 or float64 (float16 is computed in float32).
        ``-inf`` entries are masked classes.
    target : array_like
        Class indices, of any integer dtype and shape ``logits.shape[:-1]``, each in
        ``[0, C)`` or equal to ``ignore_index``; or class probabilities of the logits'
        shape, whose target class (for ``pred``, ``target_prob`` and the top-k test) is
        their argmax and whose loss is the cross-entropy ``-sum_c y_c log p_c``.
    k : int, default 5
        The top-k test: the target is in the top ``k`` when fewer than ``k`` logits are
        strictly larger than its own, so a tie with the k-th largest counts in its
        favour. ``k`` may exceed C (every target is then in the top k).
    ignore_index : int, default -100
        Class-index rows with this target are left out of the summary; their ``loss``
        and ``target_prob`` are NaN and ``in_top_k`` False.
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
    probability, entropy and confidence are NaN (and so are the summary's means and
    ECE), its prediction is numpy's argmax (the first NaN, else the first maximum),
    and its top-k test ranks NaN above every number.

    Raises
    ------
    ValueError
        If a class index is out of range (the message names the first one), or ``k``
        is below 1.
    TypeError
        If the logits are not floating, or a float target has the shape of class indices.

    Examples
    --------
    The seeds' example: the model gives the true class (a dog) probability 0.7.

    >>> import numpy as np, xent_fast as xf
    >>> s = xf.score(np.log([0.1, 0.2, 0.7]), 2)
    >>> float(s.loss), int(s.pred), float(s.target_prob), float(s.confidence)
    (0.35667494393873245, 2, 0.7, 0.7)
    >>> summary = s.summary()
    >>> round(summary["bits"], 4), summary["accuracy"]
    (0.5146, 1.0)
    """
    totals, outputs = _run(logits, target, k, ignore_index, n_threads, True)
    return Scores(*outputs, totals=totals)  # type: ignore[misc]


def score_totals(logits: Any, target: Any, *, k: int = 5, ignore_index: int = -100,
                 n_threads: int | None = None) -> ScoreTotals:
    """:func:`score` without the per-row arrays: only the exact totals (what streaming
    and distributed scoring need)."""
    return _run(logits, target, k, ignore_index, n_threads, False)[0]
