"""fit_temperature against cross_entropy on 200000 x 1000 float32 (issue 21's target:
a fit costs at most 25 cross_entropy calls), and the passes it takes.

    python bench/temperature.py [--rows 200000] [--classes 1000] [--repeat 3]

Timings are medians of --repeat runs, in one process; on a shared or busy machine they
are noisy, and the ratio is what to read.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import xent_fast as xf
from xent_fast import _score


def _median(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, c = args.rows, args.classes
    target = rng.integers(0, c, n)
    x = rng.standard_normal((n, c), dtype=np.float32)
    x[np.arange(n), target] += rng.gamma(4.0, 1.5, n).astype(np.float32)
    x *= 2.5                                          # (T comes out near 0.86)
    passes = []
    orig = _score._temperature_pass

    def counting(*a, **k):
        passes.append(1)
        return orig(*a, **k)

    _score._temperature_pass = counting
    T = xf.fit_temperature(x, target)
    _score._temperature_pass = orig
    t_ce = _median(lambda: xf.cross_entropy(x, target), args.repeat)
    t_pass = _median(lambda: xf.temperature_loss(x, target, 2.0), args.repeat)
    t_fit = _median(lambda: xf.fit_temperature(x, target), args.repeat)
    print(f"{n} x {c} float32 ({x.nbytes / 1e9:.2f} GB), {xf.config()['simd']} kernels, "
          f"{xf.config()['max_threads']} threads")
    print(f"T = {T:.6f}, {len(passes)} passes over the logits")
    print(f"cross_entropy        {t_ce * 1e3:8.1f} ms")
    print(f"one fused pass       {t_pass * 1e3:8.1f} ms  ({t_pass / t_ce:.2f} cross_entropy)")
    print(f"fit_temperature      {t_fit * 1e3:8.1f} ms  ({t_fit / t_ce:.2f} cross_entropy calls; "
          f"target <= 25)")


if __name__ == "__main__":
    main()
