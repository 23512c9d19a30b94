#!/usr/bin/env python
"""A jitted JAX training step of a language-model head, with optax's loss and with
xent_fast.jax's.

    PYTHONPATH=. python bench/train_step_jax.py            # ~1-2 min on an idle 2-core machine
    PYTHONPATH=. python bench/train_step_jax.py --quick    # small shapes, seconds

The step: hidden states h (rows, H) @ W (H, V) -> logits -> mean cross-entropy over the
rows against integer labels -> gradients with respect to W and h, all in one jax.jit.
The cases:

- step: that whole step (value_and_grad of the loss wrt W and h), and its temporary
  memory as XLA's compiled program reports it;
- step minus matmuls: the step less its three matrix products alone (timed with the
  loss's gradient given): the loss's share of the step;
- loss+grad, loss: the loss on given logits (a jit argument, which the gradient may
  not overwrite: XLA copies it first), with its gradient, and alone;
- loss+grad, donated: the same with the logits donated to the jitted function
  (``donate_argnums``), so that the gradient may take their buffer.

Each contender gets a compile-and-warm-up call, then ``--repeat`` timed calls; contenders
are interleaved call by call so that a busy spell of the machine hits them alike, and the
median is reported. ``pure_callback`` is xent_fast.jax's fallback mechanism, shown to say
what the FFI handler saves. The table is printed and written to
bench/results/train_step_jax.md.
"""

from __future__ import annotations

import argparse
import os
import platform
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

import xent_fast  # noqa: E402
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


def _mechanism_loss(mech: str):
    """xent_fast.jax's integer-label loss with a given mechanism, fixed at trace time."""
    def loss(logits, labels):
        xfj._MECHANISM = mech
        try:
            return xfj.softmax_cross_entropy_with_integer_labels(logits, labels)
        finally:
            xfj._MECHANISM = _DEFAULT
    return loss


_DEFAULT = xfj.mechanism()
LOSSES = {
    "optax": optax.softmax_cross_entropy_with_integer_labels,
    "xent_fast.jax": _mechanism_loss(_DEFAULT),
}
if _DEFAULT != "callback":
    LOSSES["pure_callback"] = _mechanism_loss("callback")


def _cases(rows: int, hidden: int, vocab: int):
    """{case: (description, {contender: (jitted function, arguments)})}."""
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(rows, hidden)).astype(np.float32))
    w = jnp.asarray((rng.normal(size=(hidden, vocab)) / np.sqrt(hidden)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, vocab, rows).astype(np.int32))
    logits = jnp.asarray(rng.normal(size=(rows, vocab)).astype(np.float32))
    dlogits = jnp.full((rows, vocab), 1.0 / (rows * vocab), jnp.float32)
    cases = {}

    def step_of(loss):
        def objective(w, h, y):
            return loss(h @ w, y).mean()
        return jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))

    cases["step"] = (f"{rows}×{hidden} @ {hidden}×{vocab}, loss, grad wrt W and h",
                     {k: (step_of(f), (w, h, y)) for k, f in LOSSES.items()})
    matmuls = jax.jit(lambda w, h, g: (h @ w, h.T @ g, g @ w.T))
    cases["matmuls"] = ("", {"floor": (matmuls, (w, h, dlogits))})
    cases["loss+grad"] = (f"{rows}×{vocab} logits given, mean loss and its gradient",
                          {k: (jax.jit(jax.value_and_grad(lambda x, y, f=f: f(x, y).mean())),
                               (logits, y)) for k, f in LOSSES.items()})
    cases["loss+grad, donated"] = (
        "as loss+grad, with the logits donated (donate_argnums)",
        {k: (jax.jit(jax.value_and_grad(lambda x, y, f=f: f(x, y).mean()), donate_argnums=0),
             lambda: (jnp.array(logits, copy=True), y)) for k, f in LOSSES.items()})
    cases["loss"] = (f"{rows}×{vocab} logits given, mean loss",
                     {k: (jax.jit(lambda x, y, f=f: f(x, y).mean()), (logits, y))
                      for k, f in LOSSES.items()})
    return cases


def _check(cases) -> float:
    """Largest relative difference of the adapter's step from optax's (loss and grads)."""
    fns = cases["step"][1]
    (l0, g0), (l1, g1) = (fns[k][0](*fns[k][1]) for k in ("optax", "xent_fast.jax"))
    diffs = [abs(float(l1) - float(l0)) / abs(float(l0))]
    for a, b in zip(g1, g0):
        diffs.append(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))))
    return max(diffs)


def _temp_mib(fn, args) -> float:
    """MiB of temporary buffers in XLA's compiled program (beyond inputs and outputs)."""
    return fn.lower(*args).compile().memory_analysis().temp_size_in_bytes / 2**20


def _args(args):
    """The arguments of one call: a tuple, or made afresh (outside the timing) by a
    function when the call consumes them (donated buffers)."""
    return jax.block_until_ready(args() if callable(args) else args)


def _time(contenders, repeat: int) -> dict[str, float]:
    for fn, args in contenders.values():
        jax.block_until_ready(fn(*_args(args)))  # compile and warm up
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeat):
        for name, (fn, args) in contenders.items():
            a = _args(args)
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*a))
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _ms(t: float | None) -> str:
    return "" if t is None else f"{t * 1e3:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, 3 repeats")
    ap.add_argument("--rows", type=int, help="rows of the batch, B*T (default 2048)")
    ap.add_argument("--hidden", type=int, help="hidden size H (default 512)")
    ap.add_argument("--vocab", type=int, help="vocabulary size V (default 32000)")
    ap.add_argument("--repeat", type=int, help="timed calls per contender (default 7)")
    ap.add_argument("--no-save", action="store_true", help="do not write bench/results")
    a = ap.parse_args(argv)
    rows = a.rows or (256 if a.quick else 2048)
    hidden = a.hidden or (128 if a.quick else 512)
    vocab = a.vocab or (4000 if a.quick else 32000)
    repeat = a.repeat or (3 if a.quick else 7)

    cases = _cases(rows, hidden, vocab)
    worst = _check(cases)
    memory = {k: _temp_mib(fn, _args(args)) for k, (fn, args) in cases["step"][1].items()}
    busy0, own0 = _cpu_seconds()
    wall0 = time.monotonic()
    results = {name: (desc, _time(contenders, repeat)) for name, (desc, contenders) in cases.items()}
    busy1, own1 = _cpu_seconds()
    others = max(0.0, (busy1 - busy0) - (own1 - own0)) / max(1e-9, time.monotonic() - wall0)

    lines = [
        f"# JAX training step: optax vs xent_fast.jax ({'quick' if a.quick else 'full'} run)",
        "",
        f"- cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"xent_fast {xent_fast.__version__} ({xent_fast.config()['simd']}), "
        f"jax {jax.__version__}, optax {optax.__version__}, mechanism: {_DEFAULT}",
        f"- shapes: rows (B*T) {rows}, hidden {hidden}, vocabulary {vocab}, float32; "
        f"median of {repeat} timed calls after a warm-up, contenders interleaved",
        f"- other processes used {others:.1f} of the {os.cpu_count()} CPUs during the run"
        + (" (busy: treat the timings with care)" if others > 0.1 else ""),
        f"- the adapter's step agrees with optax's to {worst:.1e} (largest relative "
        "difference of the loss and the gradients)",
        "",
        "| case | what | optax | xent_fast.jax | pure_callback | optax / xent_fast.jax |",
        "|---|---|---:|---:|---:|---:|",
    ]
    floor = results.pop("matmuls")[1]["floor"]
    desc, step = results["step"]
    rows_out = [("step", desc, step),
                ("step minus matmuls", f"the loss's share: the step less its 3 matrix "
                 f"products alone ({_ms(floor)})", {k: v - floor for k, v in step.items()})]
    rows_out += [(name, d, t) for name, (d, t) in results.items() if name != "step"]
    for name, d, t in rows_out:
        ratio = t["optax"] / t["xent_fast.jax"]
        lines.append(f"| {name} | {d} | {_ms(t['optax'])} | {_ms(t['xent_fast.jax'])} "
                     f"| {_ms(t.get('pure_callback'))} | {ratio:.2f}× |")
    lines.append(f"| step memory | XLA's temporary buffers of the compiled step "
                 f"| {memory['optax']:.0f} MiB | {memory['xent_fast.jax']:.0f} MiB "
                 f"| {memory.get('pure_callback', 0):.0f} MiB "
                 f"| {memory['optax'] / memory['xent_fast.jax']:.2f}× |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not a.no_save and not a.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "train_step_jax.md").write_text(text)
        print(f"written to {RESULTS / 'train_step_jax.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
