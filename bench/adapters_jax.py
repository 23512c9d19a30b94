#!/usr/bin/env python
"""Per-call cost of xent_fast.jax against optax, and a small MLP training step.

    PYTHONPATH=. python bench/adapters_jax.py            # ~2-4 min on an idle 2-core machine
    PYTHONPATH=. python bench/adapters_jax.py --quick    # fewer repeats, seconds

Loss + gradient: ``jax.jit(jax.value_and_grad(lambda x, y: loss(x, y).mean()))`` on
float32 logits given to the jitted function, integer labels, at four sizes (batch ×
classes). The contenders are interleaved call by call (each round in a new order)
as a training step interleaves XLA's own work with the loss: a busy spell of the
machine hits them alike, and each runs right after the other's threads went idle, as
in a real step. Reported: the min and the median of the repeats, and optax's time over
ours (> 1: xent_fast.jax is faster).

Training step: an MLP (features → 256 → 256 → classes, ReLU) trained with optax.adam
on a few thousand rows, one jitted step (forward, loss, backward, update) per
mini-batch, optax's integer-label loss against xent_fast.jax's; the two runs' parameters
are compared at the end.

The table is printed and, unless --quick or --no-save, written to
bench/results/adapters_jax.md.
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
SIZES = [(32, 10), (256, 100), (1024, 1000), (8192, 1000)]


def _cpu_seconds() -> tuple[float, float]:
    """(CPU seconds of every process, of this one) so far; (0, 0) without /proc."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    return busy, time.process_time()


def _with_mechanism(mech: str | None):
    """xent_fast.jax's integer-label loss traced with a given mechanism."""
    def loss(logits, labels):
        saved = xfj._MECHANISM
        if mech is not None:
            xfj._MECHANISM = mech
        try:
            return xfj.softmax_cross_entropy_with_integer_labels(logits, labels)
        finally:
            xfj._MECHANISM = saved
    return loss


# Thread policies of the compiled handler (its configure(): parallel_from, helpers,
# use_openmp), timed with --policies: the default shares the blocks of a call of at
# least 2**16 elements with XLA's own thread pool.
POLICIES = {"serial": (1 << 62, -1, False), "openmp": (1 << 16, -1, True)}


def _with_policy(fn, policy):
    """``fn`` run with the compiled handler's thread policy set first (None: the
    default policy), so that contenders with different policies can interleave."""
    from xent_fast._simd import kernels
    module = kernels("_xla_cross_entropy")
    default = module.configure()
    chosen = default if policy is None else policy

    def run(*args):
        module.configure(*chosen)
        try:
            return fn(*args)
        finally:
            module.configure(*default)
    return run


def _interleaved(contenders: dict, repeat: int) -> dict[str, list[float]]:
    """Seconds of each call, contenders alternating call by call."""
    for fn, args in contenders.values():
        jax.block_until_ready(fn(*args))   # compile and warm up
        jax.block_until_ready(fn(*args))
    times: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    order = np.random.default_rng(0)
    for _ in range(repeat):
        # in a new order each round: the call right after another contender's pays for
        # that one's threads going idle, or for its use of the caches, and no contender
        # should always be the one that does
        for name in order.permutation(names):
            fn, args = contenders[name]
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - t0)
    return times


def _us(t: float) -> str:
    return f"{t * 1e6:.1f} µs" if t < 1e-3 else f"{t * 1e3:.2f} ms"


def loss_and_grad(sizes, repeat_scale: float, extra: list[str],
                  policies: bool = False) -> list[str]:
    rng = np.random.default_rng(0)
    losses = {"optax": optax.softmax_cross_entropy_with_integer_labels,
              "xent_fast.jax": _with_mechanism(None)}
    for mech in extra:
        losses[f"xent_fast.jax ({mech})"] = _with_mechanism(mech)
    names = list(losses) + ([f"xent_fast.jax ({p})" for p in POLICIES] if policies else [])
    lines = ["| batch × classes | " + " | ".join(f"{n} min | {n} median" for n in names)
             + " | optax / ours (min) | optax / ours (median) |",
             "|---|" + "---:|---:|" * len(names) + "---:|---:|"]
    worst = 0.0
    for rows, classes in sizes:
        x = jnp.asarray(rng.normal(size=(rows, classes)).astype(np.float32) * 3)
        y = jnp.asarray(rng.integers(0, classes, rows).astype(np.int32))
        fns = {k: (jax.jit(jax.value_and_grad(lambda x, y, f=f: f(x, y).mean())), (x, y))
               for k, f in losses.items()}
        if policies:
            ours = fns["xent_fast.jax"][0]
            fns["xent_fast.jax"] = (_with_policy(ours, None), (x, y))
            for p, setting in POLICIES.items():
                fns[f"xent_fast.jax ({p})"] = (_with_policy(ours, setting), (x, y))
        (l0, g0), (l1, g1) = (fns[k][0](x, y) for k in ("optax", "xent_fast.jax"))
        worst = max(worst, abs(float(l1) - float(l0)) / abs(float(l0)),
                    float(jnp.max(jnp.abs(g1 - g0)) / jnp.max(jnp.abs(g0))))
        repeat = max(30, int(repeat_scale * 2e6 / (rows * classes + 2e4)))
        t = _interleaved(fns, repeat)
        mins = {k: min(v) for k, v in t.items()}
        meds = {k: statistics.median(v) for k, v in t.items()}
        ours = "xent_fast.jax"
        lines.append(f"| {rows}×{classes} | "
                     + " | ".join(f"{_us(mins[k])} | {_us(meds[k])}" for k in names)
                     + f" | {mins['optax'] / mins[ours]:.2f}× | {meds['optax'] / meds[ours]:.2f}× |")
        print(lines[-1], flush=True)
    lines.append("")
    lines.append(f"Largest relative difference from optax (loss, gradient): {worst:.1e}.")
    return lines


def binary_losses(rows: int, classes: int, repeat_scale: float) -> list[str]:
    """Loss + gradient of optax's sigmoid losses against xent_fast.jax's, interleaved."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(rows, classes)).astype(np.float32) * 3)
    y = jnp.asarray((rng.random((rows, classes)) > 0.5).astype(np.float32))
    pairs = {"sigmoid_binary_cross_entropy": (optax.sigmoid_binary_cross_entropy,
                                              xfj.sigmoid_binary_cross_entropy),
             "sigmoid_focal_loss(alpha=0.25)": (
                 lambda x, y: optax.sigmoid_focal_loss(x, y, alpha=0.25),
                 lambda x, y: xfj.sigmoid_focal_loss(x, y, alpha=0.25))}
    lines = ["| loss | optax min | optax median | xent_fast.jax min | xent_fast.jax median "
             "| optax / ours (min) | optax / ours (median) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    repeat = max(10, int(repeat_scale * 2e6 / (rows * classes + 2e4)))
    for name, (theirs, ours) in pairs.items():
        fns = {k: (jax.jit(jax.value_and_grad(lambda x, y, f=f: f(x, y).mean())), (x, y))
               for k, f in (("optax", theirs), ("ours", ours))}
        t = _interleaved(fns, repeat)
        mins = {k: min(v) for k, v in t.items()}
        meds = {k: statistics.median(v) for k, v in t.items()}
        lines.append(f"| {name} | {_us(mins['optax'])} | {_us(meds['optax'])} "
                     f"| {_us(mins['ours'])} | {_us(meds['ours'])} "
                     f"| {mins['optax'] / mins['ours']:.2f}× "
                     f"| {meds['optax'] / meds['ours']:.2f}× |")
        print(lines[-1], flush=True)
    return [f"{rows}×{classes} float32 logits, 0/1 labels, `jit(value_and_grad(mean of the "
            f"loss))`, interleaved, {repeat} repeats.", "", *lines]


def _mlp_step(loss_fn, opt):
    def objective(params, x, y):
        h = x
        for w, b in params[:-1]:
            h = jax.nn.relu(h @ w + b)
        w, b = params[-1]
        return loss_fn(h @ w + b, y).mean()

    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(objective)(params, x, y)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss
    return step


def training_step(rows: int, features: int, classes: int, batch: int, epochs: int,
                  repeat: int) -> list[str]:
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(classes, features)) * 0.3
    y_np = rng.integers(0, classes, rows)
    x_np = (centers[y_np] + rng.normal(size=(rows, features))).astype(np.float32)
    x_all, y_all = jnp.asarray(x_np), jnp.asarray(y_np.astype(np.int32))
    sizes = [features, 256, 256, classes]
    params0 = [(jnp.asarray(rng.normal(size=(a, b)).astype(np.float32) / np.sqrt(a)),
                jnp.zeros(b, jnp.float32)) for a, b in zip(sizes[:-1], sizes[1:])]
    opt = optax.adam(1e-3)
    steps = {"optax": _mlp_step(optax.softmax_cross_entropy_with_integer_labels, opt),
             "xent_fast.jax": _mlp_step(xfj.softmax_cross_entropy_with_integer_labels, opt)}
    batches = [(x_all[i:i + batch], y_all[i:i + batch]) for i in range(0, rows, batch)]

    def epoch(step, params, state):
        for xb, yb in batches:
            params, state, loss = step(params, state, xb, yb)
        return params, state, loss

    # the same training with both losses: their parameters must agree
    final = {}
    for name, step in steps.items():
        p, s = params0, opt.init(params0)
        for _ in range(epochs):
            p, s, loss = epoch(step, p, s)
        final[name] = (jax.block_until_ready(p), float(loss))
    diff = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
               for (wa, ba), (wb, bb) in zip(final["optax"][0], final["xent_fast.jax"][0])
               for a, b in ((wa, wb), (ba, bb)))
    # timing: one step at a time, interleaved
    state0 = opt.init(params0)
    xb, yb = batches[0]
    t = _interleaved({k: (s, (params0, state0, xb, yb)) for k, s in steps.items()}, repeat)
    mins = {k: min(v) for k, v in t.items()}
    meds = {k: statistics.median(v) for k, v in t.items()}
    return [
        f"MLP {features}→256→256→{classes} (ReLU), optax.adam, {rows} rows in mini-batches "
        f"of {batch}, float32; one jitted step (forward, loss, backward, update), "
        f"{repeat} interleaved repeats. After {epochs} epochs with each loss the "
        f"parameters agree to {diff:.1e} (largest relative difference), final losses "
        f"{final['optax'][1]:.4f} (optax) and {final['xent_fast.jax'][1]:.4f}.",
        "",
        "| step | optax min | optax median | xent_fast.jax min | xent_fast.jax median "
        "| optax / ours (min) | optax / ours (median) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| batch {batch} × {classes} classes | {_us(mins['optax'])} | {_us(meds['optax'])} "
        f"| {_us(mins['xent_fast.jax'])} | {_us(meds['xent_fast.jax'])} "
        f"| {mins['optax'] / mins['xent_fast.jax']:.2f}× "
        f"| {meds['optax'] / meds['xent_fast.jax']:.2f}× |",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the repeats")
    ap.add_argument("--repeat-scale", type=float, default=1.0,
                    help="multiply the number of repeats (default 1)")
    ap.add_argument("--mechanisms", default="",
                    help="comma-separated other mechanisms to time too (ctypes,callback)")
    ap.add_argument("--policies", action="store_true",
                    help="also time the compiled handler's other thread policies "
                         "(serial, an OpenMP team) against its default (XLA's pool)")
    ap.add_argument("--sizes", default="",
                    help="comma-separated ROWSxCLASSES (default: the four of issue 18)")
    ap.add_argument("--no-step", action="store_true", help="skip the training step")
    ap.add_argument("--no-binary", action="store_true", help="skip the sigmoid losses")
    ap.add_argument("--no-save", action="store_true", help="do not write bench/results")
    a = ap.parse_args(argv)
    scale = a.repeat_scale * (0.1 if a.quick else 1.0)
    sizes = ([tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
             if a.sizes else SIZES)
    extra = [m for m in a.mechanisms.split(",") if m]

    busy0, own0 = _cpu_seconds()
    wall0 = time.monotonic()
    table = loss_and_grad(sizes, scale, extra, a.policies)
    binary = [] if a.no_binary else binary_losses(1024, 1000, scale)
    step: list[str] = []
    if not a.no_step:
        step = training_step(4096, 64, 10, 256, 3, max(30, int(1000 * scale)))
        step += training_step(4096, 64, 100, 1024, 3, max(30, int(300 * scale)))[-1:]
    busy1, own1 = _cpu_seconds()
    others = max(0.0, (busy1 - busy0) - (own1 - own0)) / max(1e-9, time.monotonic() - wall0)

    lines = [
        f"# JAX adapter: optax vs xent_fast.jax ({'quick' if a.quick else 'full'} run)",
        "",
        f"- cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"xent_fast {xent_fast.__version__} ({xent_fast.config()['simd']}), "
        f"jax {jax.__version__}, optax {optax.__version__}, mechanism: {xfj.mechanism()}",
        "- thread policy of the compiled handler (default): a call of at least 2**16 "
        "elements shares its blocks with XLA's own thread pool, a smaller one runs on "
        "XLA's calling thread"
        + ("; also timed: (serial) every call on the calling thread, (openmp) an OpenMP "
           "team instead of XLA's pool" if a.policies else ""),
        "- loss + gradient: `jit(value_and_grad(mean of the loss))`, float32 logits given "
        "to the jitted function, int32 labels; contenders interleaved call by call, "
        "each round in a new order",
        f"- other processes used {others:.1f} of the {os.cpu_count()} CPUs during the run"
        + (" (busy: treat the timings with care)" if others > 0.1 else ""),
        "",
        "## Loss + gradient",
        "",
        *table,
    ]
    if binary:
        lines += ["", "## Sigmoid losses: loss + gradient", "", *binary]
    if step:
        lines += ["", "## A small training step", "", *step]
    text = "\n".join(lines) + "\n"
    print(text)
    if not a.no_save and not a.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "adapters_jax.md").write_text(text)
        print(f"written to {RESULTS / 'adapters_jax.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
