#!/usr/bin/env python
"""What bounds the big cases on this machine: memory floors by plain C loops, beside
the kernels' own arithmetic timed in cache.

    python bench/floors.py               # 2048x32000 float32, 1 and 2 threads (under a minute)
    python bench/floors.py --rows 65536 --cols 1000

`floors.c` is compiled for this CPU (needs a C compiler with OpenMP) and times, on the
batch's size, a read (sum of every entry), a copy with ordinary stores (plain, and
with software prefetches as the kernels make) and a copy with streaming stores.
xent_fast's loss, loss+grad (into `grad_out`) and softmax (`out=`) are timed twice:
on the batch in memory, and on its first rows (about 128 KB, which stay in L2)
repeated to the batch's size, less the calls' own cost: the time of the arithmetic
alone. A kernel with ordinary stores cannot beat the larger of its
arithmetic and its floor, and reaches it only if the core's memory traffic fully
overlaps its arithmetic. Medians of the repeats (and the best, for the C loops);
written to bench/results/floors.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

import xent_fast as xf

HERE = Path(__file__).resolve().parent


def build_floors(workdir: Path) -> Path | None:
    """floors.c compiled for this CPU, or None (with a note) if that fails."""
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    if not cc or shutil.which(cc[0]) is None:
        print(f"note: no C compiler ({' '.join(cc)}); the C floors are skipped")
        return None
    exe = workdir / "floors"
    errors = ""
    for arch in (["-march=native"], []):
        cmd = [*cc, "-O2", *arch, "-fopenmp", str(HERE / "floors.c"), "-o", str(exe)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode == 0:
            if not arch:
                print("note: floors.c built without -march=native: its loops may use "
                      "narrower vectors than this CPU has")
            return exe
        errors = done.stderr
    print(f"note: {' '.join(cc)} could not build floors.c with OpenMP; the C floors are "
          f"skipped. The compiler said:\n{errors}")
    return None


def c_floors(exe: Path, rows: int, cols: int, threads: int,
             repeats: int) -> dict[str, list[float]]:
    """Seconds per repeat of each C loop, or {} (with a note) if the program failed."""
    done = subprocess.run([str(exe), str(rows), str(cols), str(threads), str(repeats)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        print(f"note: floors failed ({done.stderr.strip()}); the C floors are skipped")
        return {}
    res = {}
    for line in done.stdout.splitlines():
        name, *times = line.split()
        res[name] = [float(t) for t in times]
    return res


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def kernels(x: np.ndarray, t: np.ndarray, threads: int) -> dict[str, Callable[[], object]]:
    g = np.empty_like(x)
    return {
        "loss": lambda: xf.cross_entropy(x, t, n_threads=threads),
        "loss+grad": lambda: xf.cross_entropy_and_grad(x, t, grad_out=g, n_threads=threads),
        "softmax": lambda: xf.softmax(x, out=g, n_threads=threads),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--cols", type=int, default=32000)
    ap.add_argument("--repeat", type=int, default=11)
    args = ap.parse_args(argv)
    rows, cols = args.rows, args.cols
    if rows < 1 or cols < 1 or args.repeat < 1:
        ap.error("--rows, --cols and --repeat must be positive")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((rows, cols), dtype=np.float32) * 3).astype(np.float32)
    t = rng.integers(0, cols, rows)
    # "in cache": about 128 KB of rows, with their output 256 KB, in L2 on every machine
    # this project has met (at least one row)
    small_rows = max(1, min(rows, (1 << 15) // cols))
    xs, ts = x[:small_rows].copy(), t[:small_rows].copy()
    inner = max(1, rows // small_rows)
    scale = rows / (inner * small_rows)     # the rows that `inner` calls leave out
    empty_x, empty_t = x[:0].copy(), t[:0].copy()

    lines = [f"# Floors and arithmetic: {rows}×{cols} float32 "
             f"({x.nbytes / 1e6:.0f} MB), SIMD level {xf.config()['simd']}", ""]
    floor_of = {"loss": "read", "loss+grad": "copy", "softmax": "copy"}
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_floors(Path(tmp))
        for threads in (1, 2):
            lines += [f"## {threads} thread{'s' if threads > 1 else ''}", ""]
            fl = {}
            if exe is not None:
                fl = c_floors(exe, rows, cols, threads, args.repeat)
                lines += ["| C loop | median | best |", "|---|---:|---:|"]
                for name, what in (("read", "read (sum of every entry)"),
                                   ("copy", "copy, ordinary stores"),
                                   ("copy_pf", "copy, ordinary stores, prefetched"),
                                   ("copy_nt", "copy, streaming stores")):
                    lines.append(f"| {what} | {ms(statistics.median(fl[name]))} "
                                 f"| {ms(min(fl[name]))} |")
                lines.append("")
            lines += ["| xent_fast | arithmetic alone | C floor | both overlapped: max "
                      "| not at all: sum | measured |", "|---|---:|---:|---:|---:|---:|"]
            big = kernels(x, t, threads)
            small = kernels(xs, ts, 1)
            empty = kernels(empty_x, empty_t, 1)
            for name in big:
                # in cache: one thread on the first rows, `inner` times, less the calls'
                # own cost (a call on no rows), scaled to the batch and shared among the
                # threads (as the batch's rows are)
                def repeated(f: Callable[[], object] = small[name]) -> None:
                    for _ in range(inner):
                        f()

                def overhead(f: Callable[[], object] = empty[name]) -> None:
                    for _ in range(inner):
                        f()
                calls = median_time(repeated, args.repeat) - median_time(overhead, args.repeat)
                arith = max(calls, 0.0) * scale / threads
                mem = median_time(big[name], args.repeat)
                if fl:
                    kinds = ("copy", "copy_pf") if floor_of[name] == "copy" else ("read",)
                    floor = min(min(fl[k]) for k in kinds)
                    cells = [ms(floor), ms(max(arith, floor)), ms(arith + floor)]
                else:
                    cells = ["", "", ""]
                lines.append(f"| {name} | {ms(arith)} | " + " | ".join(cells)
                             + f" | {ms(mem)} |")
            lines.append("")
    lines.append(f"Arithmetic alone: {small_rows} row(s) (in L2) on one thread, "
                 f"repeated to the batch's size, less the same calls on no rows, divided "
                 f"by the thread count. C floor: the best of the C read (loss) or copies "
                 f"with ordinary stores (loss+grad into `grad_out`, softmax with `out=`; "
                 f"a kernel with streaming stores could go below it). Medians of "
                 f"{args.repeat} repeats.")
    text = "\n".join(lines)
    print(text)
    out = HERE / "results" / "floors.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
