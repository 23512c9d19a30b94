#!/usr/bin/env python
"""xent_fast.jax.linear_softmax_cross_entropy_loss against the materialised optax path.

    PYTHONPATH=. python bench/linear_jax.py              # ~1-2 min on an idle 2-core machine
    PYTHONPATH=. python bench/linear_jax.py --repeat 2   # fewer rounds

One LM-head step under ``jax.jit``: the loss (reduction "sum") and its gradients in
``x`` and ``weights``, ``jax.value_and_grad(..., argnums=(0, 1))``, at N=4096, H=512,
V=32000 float32 (``--vocab``, ``--rows``, ``--hidden`` change the shape). Contenders:

* floor: the three matrix products alone (``x @ W``, ``G @ W.T``, ``x.T @ G`` with a
  given ``G``), which any exact method has to make;
* ours: ``linear_softmax_cross_entropy_loss`` (default chunks, and ``--chunks``);
* optax: ``optax.softmax_cross_entropy_with_integer_labels(x @ W, labels).sum()``;
* xent_fast.jax materialised: the same with ``xent_fast.jax``'s integer-label loss.

The calls are interleaved, each round in a new (seeded) order, so that a busy spell of
the shared machine hits every contender alike. Reported: the best and the median time,
each over ours' best, and the compiled function's temporary memory
(``memory_analysis().temp_size_in_bytes``: XLA's scratch beyond the arguments and the
outputs; the logits alone are N x V x 4 bytes). "(busy)": other processes used more
than 5% of the CPUs during the timed rounds. The table is printed and, unless
--no-save, written to bench/results/linear_jax.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import xent_fast.jax as xfj  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _cpu_seconds() -> tuple[float, float]:
    """(CPU seconds of every process, of this one) so far; (0, 0) without /proc."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    return busy, time.process_time()


def _contenders(t, chunks):
    """name -> (function of (x, w, g) to jit, label)."""
    def grad_of(loss):
        vg = jax.value_and_grad(loss, argnums=(0, 1))
        return lambda x, w, g: vg(x, w)

    def floor(x, w, g):
        # the three products of a step, as ours makes them (float32 results); g stands
        # for the logits' gradient
        def dot(a, b, ca, cb):
            return jax.lax.dot_general(a, b, (((ca,), (cb,)), ((), ())),
                                       preferred_element_type=jnp.float32)
        return dot(x, w, 1, 0), dot(g, w, 1, 1), dot(x, g, 0, 0)

    out = {"floor": (floor, "three matrix products alone (floor)")}
    for c in [None] + chunks:
        name = "ours" if c is None else f"ours_{c}"
        label = ("`linear_softmax_cross_entropy_loss`" + ("" if c is None else
                 f", chunk_rows={c}"))
        out[name] = (grad_of(lambda x, w, c=c: xfj.linear_softmax_cross_entropy_loss(
            x, t, w, chunk_rows=c)), label)
    out["optax"] = (grad_of(lambda x, w: optax.softmax_cross_entropy_with_integer_labels(
        x @ w, t).sum()), "optax on materialised logits `x @ W`")
    out["xfj"] = (grad_of(lambda x, w: xfj.softmax_cross_entropy_with_integer_labels(
        x @ w, t).sum()), "`xent_fast.jax.softmax_cross_entropy_with_integer_labels(x @ W)`")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--repeat", type=int, default=4, help="interleaved rounds")
    ap.add_argument("--chunks", default="", help="extra chunk_rows to time, e.g. 128,1024")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "linear_jax.md"))
    args = ap.parse_args()

    n, h, v = args.rows, args.hidden, args.vocab
    dtype = jnp.dtype(args.dtype)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, h)) * 0.05, dtype)
    w = jnp.asarray(rng.normal(size=(h, v)) * 0.05, dtype)
    g = jnp.asarray(rng.normal(size=(n, v)) * 1e-4, dtype)
    t = jnp.asarray(rng.integers(0, v, n), jnp.int32)
    chunks = [int(c) for c in args.chunks.split(",") if c]

    compiled, temp, labels, losses = {}, {}, {}, {}
    for name, (fn, label) in _contenders(t, chunks).items():
        c = jax.jit(fn).lower(x, w, g).compile()
        compiled[name], labels[name] = c, label
        temp[name] = c.memory_analysis().temp_size_in_bytes
        out = jax.block_until_ready(c(x, w, g))   # warm-up
        if name != "floor":
            losses[name] = float(out[0])
        print(f"compiled {name}: temp {temp[name] / 2**20:.0f} MiB", file=sys.stderr, flush=True)

    times: dict[str, list[float]] = {k: [] for k in compiled}
    order = list(compiled)
    shuffle = random.Random(1)
    cpu0 = _cpu_seconds()
    wall0 = time.perf_counter()
    for r in range(args.repeat):
        shuffle.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            jax.block_until_ready(compiled[name](x, w, g))
            times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{args.repeat}: " + ", ".join(
            f"{k} {times[k][-1]:.2f}s" for k in compiled), file=sys.stderr, flush=True)
    cpu1 = _cpu_seconds()
    wall = time.perf_counter() - wall0
    others = (cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1])
    ncpu = os.cpu_count() or 1
    share = max(0.0, others) / (wall * ncpu) if wall > 0 else 0.0
    flag = " (busy)" if share > 0.05 else ""

    best = {k: min(ts) for k, ts in times.items()}
    med = {k: statistics.median(ts) for k, ts in times.items()}
    logits_mib = n * v * 4 / 2**20
    lines = [
        "# Fused linear cross-entropy, JAX adapter",
        "",
        f"{platform.machine()}, {ncpu} CPUs; jax {jax.__version__}, optax {optax.__version__}; "
        f"xent_fast.jax mechanism `{xfj.mechanism()}`.",
        "",
        f"`python bench/linear_jax.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"One jitted step (loss, gradients in x and W), {args.dtype}, N={n}, H={h}, V={v} "
        f"(logits {logits_mib:.0f} MiB in float32); {args.repeat} interleaved rounds; "
        f"other processes used {share:.0%} of the CPUs meanwhile{flag}. Temp memory: "
        "XLA's scratch of the compiled step beyond its arguments and outputs.",
        "",
        "| contender | best | median | best × ours | × floor | temp memory | loss |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for k in compiled:
        loss = "" if k == "floor" else f"{losses[k]:.6f}"
        lines.append(f"| {labels[k]} | {best[k]:.3f} s{flag} | {med[k]:.3f} s | "
                     f"{best[k] / best['ours']:.2f} | {best[k] / best['floor']:.2f} | "
                     f"{temp[k] / 2**20:.0f} MiB | {loss} |")
    lines += [
        "",
        f"- ours against optax: {best['optax'] / best['ours']:.2f}× the speed, "
        f"{temp['optax'] / max(temp['ours'], 1):.1f}× less temporary memory.",
        f"- ours against the three products alone: {best['ours'] / best['floor']:.2f}× "
        "their time.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_save:
        Path(args.out).write_text(text)
        print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
