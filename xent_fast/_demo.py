"""``xent-fast demo``: textbook examples of surprisal, entropy and cross-entropy
computed by the package, then a synthetic batch scored and timed against plain NumPy.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, SupportsFloat

import numpy as np

from . import info
from ._binary import binary_cross_entropy, binary_cross_entropy_with_logits
from ._config import config
from ._cross_entropy import cross_entropy, cross_entropy_and_grad
from ._score import score
from ._softmax import softmax

LN2 = math.log(2.0)


def textbook_examples() -> list[tuple[str, float, float]]:
    """(description, value in nats, value in bits) for each textbook example of surprisal,
    entropy and cross-entropy."""
    rows = []

    def add(what: str, nats: SupportsFloat) -> None:
        rows.append((what, float(nats), float(nats) / LN2))

    add("surprisal of meeting a panda, p = 0.001", info.surprisal(0.001))
    add("entropy of [panda, bird, dog] = [0.2, 0.3, 0.5]", info.entropy([0.2, 0.3, 0.5]))
    dog = np.log([0.1, 0.2, 0.7])  # logits whose softmax is the prediction
    add("loss, prediction [0.1, 0.2, 0.7], label dog (index 2)", cross_entropy(dog, 2))
    add("  same, from H(p, q) with p = [0, 0, 1]", info.cross_entropy([0, 0, 1], [0.1, 0.2, 0.7]))
    add("mock question: [0.7, 0.2, 0.1] against [1, 0, 0]",
        info.cross_entropy([1, 0, 0], [0.7, 0.2, 0.1]))
    add("loaded coin: entropy of the truth [0.99, 0.01]", info.entropy([0.99, 0.01]))
    add("loaded coin: cross-entropy of the guess [0.01, 0.99]",
        info.cross_entropy([0.99, 0.01], [0.01, 0.99]))
    add("dog/cat/horse/cheetah: [0.775, 0.116, 0.039, 0.070], label dog",
        cross_entropy(np.log([0.775, 0.116, 0.039, 0.070]), 0))
    add("after training: p(dog) = 0.938 (0.095 bits rounded, i.e. p = 0.936)",
        info.surprisal(0.938))
    add("label smoothing 0.1 on the dog example",
        cross_entropy(dog, 2, label_smoothing=0.1))
    add("mixup target 0.6 dog + 0.4 bird", cross_entropy(dog, np.array([0.0, 0.4, 0.6])))
    add("binary: a cat, predicted cat with q0 = 0.8", binary_cross_entropy(0.8, 1.0))
    add("binary: not a cat, predicted cat with q0 = 0.8", binary_cross_entropy(0.8, 0.0))
    labels = np.array([1.0, 0.0, 1.0])  # multi-label: cat, dog, outdoor
    add("multi-label: sum of 3 binary losses, logits [2, -1, 0.5], labels [1, 0, 1]",
        binary_cross_entropy_with_logits(np.array([2.0, -1.0, 0.5]), labels, reduction="sum"))
    return rows


def print_textbook_examples() -> None:
    print("Textbook examples of surprisal, entropy and cross-entropy")
    print(f"  {'':<76}{'nats':>9}{'bits':>9}")
    for what, nats, bits in textbook_examples():
        print(f"  {what:<76}{nats:9.4f}{bits:9.4f}")
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([0.0, 0.0, 1.0])
    _, grad = cross_entropy_and_grad(a, b, reduction="sum")
    print("  gradient of cross-entropy(a, b) = softmax(a) - b, a = [1, 2, 3], b = [0, 0, 1]:")
    print(f"    xent_fast: {np.array2string(grad, precision=4)}"
          f"   softmax(a) - b: {np.array2string(softmax(a) - b, precision=4)}")


# --- the scoring demo -------------------------------------------------------------------

def synthetic_batch(rows: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Float32 logits of a plausible classifier and its true classes: noise, plus
    evidence for the true class that varies from row to row (some rows are easy, some
    are wrong), so every metric of the summary has something to say."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, rows)
    logits = rng.standard_normal((rows, classes), dtype=np.float32)
    logits *= 1.5
    logits[np.arange(rows), target] += rng.gamma(4.0, 1.5, rows).astype(np.float32)
    return logits, target


def numpy_summary(logits: np.ndarray, target: np.ndarray, k: int = 5) -> dict[str, Any]:
    """The summary of :func:`xent_fast.score` written in plain NumPy, as a user would:
    the baseline of the demo and of the benchmarks. Rows of (N, C) logits, class
    indices, no ignored rows."""
    rows = np.arange(len(logits))
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1)
    log_s = np.log(s)
    loss = log_s - z[rows, target]
    target_prob = e[rows, target] / s
    confidence = 1.0 / s                               # the max has z = 0, e = 1
    entropy = log_s - (e * z).sum(axis=1) / s
    # Brier: sum_c (p_c - [c = t])^2 = sum_c p_c^2 - 2 p_t + 1
    brier = (e * e).sum(axis=1) / (s * s) - 2 * target_prob + 1
    return summarize(logits, target, loss, logits.argmax(axis=1), confidence, entropy, k,
                     brier)


def summarize(logits: np.ndarray, target: np.ndarray, loss: np.ndarray, pred: np.ndarray,
              confidence: np.ndarray, entropy: np.ndarray, k: int,
              brier: np.ndarray) -> dict[str, Any]:
    """The summary from per-row arrays, in plain NumPy (top-k by argpartition, the ECE's
    15 bins by bincount): the reductions the NumPy and SciPy baselines share."""
    n, c = logits.shape
    kk = min(k, c)
    top = np.argpartition(logits, c - kk, axis=1)[:, c - kk:]
    in_top_k = (top == target[:, None]).any(axis=1)
    correct = pred == target
    bins = np.clip(np.ceil(confidence.astype(np.float64) * 15).astype(np.int64) - 1, 0, 14)
    gap = (np.bincount(bins, weights=correct, minlength=15)
           - np.bincount(bins, weights=confidence, minlength=15))
    mean_loss = float(loss.mean(dtype=np.float64))
    support = np.bincount(target, minlength=c)
    predicted = np.bincount(pred, minlength=c)
    hits = np.bincount(target[correct], minlength=c)
    present = (support + predicted) > 0
    macro_f1 = float((2 * hits[present] / (support + predicted)[present]).mean())
    return {"rows": n, "loss": mean_loss, "bits": mean_loss / LN2,
            "perplexity": math.exp(mean_loss), "accuracy": float(correct.mean()),
            "top_k_accuracy": float(in_top_k.mean()), "k": k,
            "mean_entropy": float(entropy.mean(dtype=np.float64)),
            "ece": float(np.abs(gap).sum() / n), "ece_bins": 15,
            "brier": float(brier.mean(dtype=np.float64)), "macro_f1": macro_f1,
            "nonfinite_rows": 0}


def _median_time(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


SUMMARY_LABELS = [("loss", "loss (nats)"), ("bits", "loss (bits)"), ("perplexity", "perplexity"),
                  ("accuracy", "accuracy"), ("top_k_accuracy", "top-{k} accuracy"),
                  ("mean_entropy", "mean entropy (nats)"), ("ece", "ECE (15 bins)"),
                  ("brier", "Brier score"), ("macro_f1", "macro F1")]


def run_scoring_demo(rows: int = 20000, classes: int = 1000, k: int = 5, seed: int = 0,
                     repeat: int = 9, n_threads: int | None = None) -> dict[str, Any]:
    """Score a synthetic batch with xent_fast and with plain NumPy, print both summaries
    and the throughputs; return the numbers."""
    logits, target = synthetic_batch(rows, classes, seed)
    mb = logits.nbytes / 1e6
    print(f"Scoring a synthetic batch: {rows:,} rows x {classes:,} classes, float32 "
          f"({mb:,.0f} MB), k = {k}")
    ours = score(logits, target, k=k, n_threads=n_threads).summary()
    theirs = numpy_summary(logits, target, k)
    t_ours = _median_time(lambda: score(logits, target, k=k, n_threads=n_threads), repeat)
    t_np = _median_time(lambda: numpy_summary(logits, target, k), max(1, min(repeat, 3)))
    print(f"  {'':<22}{'xent_fast':>14}{'NumPy':>14}")
    for key, label in SUMMARY_LABELS:
        print(f"  {label.format(k=k):<22}{ours[key]:>14.6f}{theirs[key]:>14.6f}")
    columns: list[tuple[str, Callable[[float], str]]] = [
        ("time", _fmt_seconds),
        ("rows/s", lambda t: f"{rows / t:,.0f}"),
        ("GB/s", lambda t: f"{logits.nbytes / t / 1e9:.2f}")]
    for label, f in columns:
        print(f"  {label:<22}{f(t_ours):>14}{f(t_np):>14}")
    print(f"  xent_fast is {t_np / t_ours:.1f}x faster than NumPy on this batch "
          f"(median of {repeat} calls; NumPy of {max(1, min(repeat, 3))}).")
    return {"xent_fast": ours, "numpy": theirs, "seconds": {"xent_fast": t_ours, "numpy": t_np}}


def _fmt_seconds(t: float) -> str:
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


def run_demo(rows: int = 20000, classes: int = 1000, k: int = 5, seed: int = 0,
             n_threads: int | None = None) -> None:
    """``xent-fast demo``: the build in one line, textbook examples of surprisal,
    entropy and cross-entropy, then the scoring of a synthetic batch against NumPy."""
    cfg = config()
    omp = f"OpenMP, {cfg['max_threads']} threads" if cfg["openmp"] else "no OpenMP"
    print(f"xent_fast {cfg['version']} ({cfg['simd']} kernels, {omp})")
    print()
    print_textbook_examples()
    print()
    run_scoring_demo(rows, classes, k, seed, n_threads=n_threads)
