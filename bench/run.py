#!/usr/bin/env python
"""Benchmark suite of xent_fast against the copy/read floors, NumPy, PyTorch and JAX.

    python bench/run.py                  # full run (1.5-3 min on a 2-core machine); judges targets
    python bench/run.py --quick          # CI-sized run: small shapes, 3 repeats
    python bench/run.py --cases ce_grad_32k,threads --repeat 15

Every contender of a case is timed in this one process: a warm-up call, then `repeat`
timed calls in a row (time.perf_counter); the median is reported. Results go to
bench/results/: latest.md (the table), latest.json (all raw timings), speedup.png.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # no probing for GPU/TPU backends
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # no XLA compile-time chatter on stderr

import xent_fast as xf  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MiB = 1024 * 1024
BUSY = 0.05  # share of the CPUs used by other processes above which a case is flagged


# --------------------------------------------------------------------------- optional peers

def _import_peers() -> tuple[dict, list[str]]:
    """PyTorch, JAX and optax if installed; a missing one is skipped with a note."""
    mods, notes = {}, []
    try:
        import torch
        import torch.nn.functional as F
        mods.update(torch=torch, F=F)
    except ImportError:
        notes.append("PyTorch is not installed: its comparisons are skipped.")
    try:
        import jax
        import jax.numpy as jnp
        mods.update(jax=jax, jnp=jnp)
    except ImportError:
        notes.append("JAX is not installed: its comparisons are skipped.")
    try:
        import optax
        mods.update(optax=optax)
    except ImportError:
        if "jax" in mods:
            notes.append("optax is not installed: the JAX loss comparisons are skipped.")
    return mods, notes


PEERS, PEER_NOTES = _import_peers()


# --------------------------------------------------------------------------- data model

@dataclass(frozen=True)
class Target:
    op: str  # ">=", "<=" or "<"
    value: float
    unit: str = ""

    def met(self, x: float) -> bool:
        return {">=": x >= self.value, "<=": x <= self.value, "<": x < self.value}[self.op]

    def __str__(self) -> str:
        symbol = {">=": "≥", "<=": "≤", "<": "<"}[self.op]
        return f"{symbol} {self.value:g}{self.unit}"


@dataclass
class Contender:
    """Something timed against xent_fast. kind "floor": reported as xent_fast time / its
    time; kind "peer": as its time / xent_fast time (speed-up). make() does the untimed
    setup and returns the timed callable; make is None when the peer is not installed."""
    label: str
    kind: str
    make: Callable[[], Callable[[], object]] | None
    target: Target | None = None
    skip: str = ""


@dataclass
class Row:
    versus: str
    measure: str  # "speed-up", "xf / floor" or "extra memory"
    value: float | None  # None when skipped
    target: Target | None = None
    met: bool | None = None
    peer_time: float | None = None
    note: str = ""


@dataclass
class CaseResult:
    case: str
    what: str
    shape: str
    xf_time: float | None  # seconds per call
    rows: list[Row]
    raw: dict[str, list[float]] = field(default_factory=dict)  # seconds per call, each repeat
    notes: list[str] = field(default_factory=list)
    other_load: float | None = None


@dataclass
class Ctx:
    quick: bool
    repeat: int
    rng: np.random.Generator


CASES: dict[str, tuple[str, Callable[[Ctx], CaseResult]]] = {}


def case(name: str, what: str):
    def register(fn):
        CASES[name] = (what, fn)
        return fn
    return register


# --------------------------------------------------------------------------- timing

def time_calls(fn: Callable[[], object], repeat: int, inner: int = 1) -> tuple[list[float], int]:
    """Seconds per call over `repeat` timed runs of `inner` calls each, after a warm-up.
    Each contender is timed in its own block: interleaving them lets one runtime's
    spinning worker threads (OpenMP, Eigen) slow the next one down on a 2-core machine.
    With inner > 1, the warm-up also estimates the call's time and trims inner so that a
    repeat lasts at most ~1 s (only matters on a machine busy elsewhere)."""
    t0 = time.perf_counter()
    warm = min(inner, 10)
    for _ in range(warm):
        fn()
    if inner > 1:
        per_call = (time.perf_counter() - t0) / warm
        inner = max(10, min(inner, int(1.0 / max(per_call, 1e-9))))
    gc.collect()
    gc.disable()
    try:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times.append((time.perf_counter() - t0) / inner)
        return times, inner
    finally:
        gc.enable()


class LoadMonitor:
    """Share of all CPUs used meanwhile by *other* processes (and hypervisor steal):
    /proc/stat busy time minus this process's own CPU time. None where unavailable."""

    def __enter__(self):
        self.share = self.seconds = None
        self.start = self._sample()
        return self

    def __exit__(self, *exc):
        end = self._sample()
        if self.start and end:
            busy, own, wall = (e - s for s, e in zip(self.start, end))
            if wall > 0:
                self.seconds = max(0.0, busy - own)
                self.share = self.seconds / (wall * (os.cpu_count() or 1))

    @property
    def busy(self) -> bool:
        """Other processes took a noticeable share (/proc/stat counts in 10 ms ticks, so a
        few ticks over a short case are not enough)."""
        return self.share is not None and self.share > BUSY and self.seconds >= 0.1

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # not idle/iowait
        r = resource.getrusage(resource.RUSAGE_SELF)
        return busy, r.ru_utime + r.ru_stime, time.monotonic()


def compare(ctx: Ctx, name: str, shape: str, xf_call, contenders: list[Contender],
            inner: int = 1, notes: list[str] | None = None) -> CaseResult:
    raw, calls = {}, {}
    raw["xent_fast"], calls["xent_fast"] = time_calls(xf_call, ctx.repeat, inner)
    for c in contenders:
        if c.make is not None:  # the peer's tensors live only while it is timed
            raw[c.label], calls[c.label] = time_calls(c.make(), ctx.repeat, inner)
    if inner > 1:
        counts = ", ".join(f"{label} {n}" for label, n in calls.items())
        notes = (notes or []) + [f"time per call; calls per repeat: {counts}"]
    med = {k: statistics.median(v) for k, v in raw.items()}
    t_xf = med["xent_fast"]
    rows = []
    for c in contenders:
        if c.make is None:
            rows.append(Row(c.label, "", None, c.target, note=c.skip))
            continue
        t = med[c.label]
        measure, value = ("xf / floor", t_xf / t) if c.kind == "floor" else ("speed-up", t / t_xf)
        met = c.target.met(value) if c.target else None
        rows.append(Row(c.label, measure, value, c.target, met, t))
    return CaseResult(name, CASES[name][0], shape, t_xf, rows, raw, notes or [])


# --------------------------------------------------------------------------- inputs

SHAPES = {  # name: (full run, quick run)
    "32k": ((2048, 32000), (256, 4000)),
    "1k": ((65536, 1000), (8192, 1000)),
    "c10": ((1048576, 10), (65536, 10)),
    "tiny": ((32, 10), (32, 10)),
}


def shape_of(ctx: Ctx, key: str) -> tuple[int, int]:
    return SHAPES[key][1 if ctx.quick else 0]


def describe(x: np.ndarray) -> str:
    return f"{x.shape[0]}×{x.shape[1]} {x.dtype.name}"


def make_logits(ctx: Ctx, shape, dtype=np.float32) -> np.ndarray:
    x = ctx.rng.standard_normal(shape, dtype=np.float32)
    x *= 3
    return x.astype(dtype, copy=False)


def make_target(ctx: Ctx, shape) -> np.ndarray:
    return ctx.rng.integers(0, shape[1], size=shape[0], dtype=np.int64)


def check(got, want, what: str) -> list[str]:
    """A warning when xent_fast's answer drifts from a float64 NumPy reference."""
    ok = np.allclose(np.asarray(got, np.float64), np.asarray(want, np.float64),
                     rtol=1e-4, atol=1e-5)
    return [] if ok else [f"WARNING: xent_fast's {what} differs from the NumPy reference"]


def ce_reference(x, t) -> float:
    x = x.astype(np.float64)
    m = x.max(axis=1)
    lse = np.log(np.exp(x - m[:, None]).sum(axis=1)) + m
    return float(np.mean(lse - x[np.arange(len(t)), t]))


def check_ce(x, t) -> list[str]:
    x, t = x[:256], t[:256]
    return check(xf.cross_entropy(x, t), ce_reference(x, t), "CE loss")


# --------------------------------------------------------------------------- contenders

def _missing(*mods: str) -> str:
    missing = [m for m in mods if m not in PEERS]
    return f"skipped: {', '.join(missing)} not installed" if missing else ""


def copy_floor(x, out) -> Contender:
    return Contender("copy floor", "floor", lambda: lambda: np.copyto(out, x), Target("<=", 1.3))


def read_floor(x) -> Contender:
    return Contender("read floor", "floor", lambda: lambda: x.sum(), Target("<=", 1.4))


def numpy_ce_grad(x, t) -> Contender:
    """Plain vectorised NumPy: max, exp, sum, log, one-hot subtract."""
    def make():
        rows = np.arange(len(t))

        def run():
            m = x.max(axis=1, keepdims=True)
            e = np.exp(x - m)
            s = e.sum(axis=1, keepdims=True)
            loss = np.mean(np.log(s[:, 0]) + m[:, 0] - x[rows, t])
            e /= s
            e[rows, t] -= 1
            e /= len(t)
            return loss, e
        return run
    return Contender("NumPy ref", "peer", make)


def torch_peer(target: Target | None, build) -> Contender:
    """build(torch, F) -> timed callable (tensors made there, outside the timed call)."""
    skip = _missing("torch")
    make = None if skip else (lambda: build(PEERS["torch"], PEERS["F"]))
    return Contender("PyTorch", "peer", make, target, skip)


def jax_peer(target: Target | None, build, needs_optax: bool = True) -> Contender:
    """build(jax, jnp, optax) -> (jitted fn, jnp args); timed as a blocking fn(*args)."""
    skip = _missing("jax", "optax") if needs_optax else _missing("jax")

    def make():
        jax = PEERS["jax"]
        fn, args = build(jax, PEERS["jnp"], PEERS.get("optax"))
        return lambda: jax.block_until_ready(fn(*args))
    return Contender("JAX", "peer", None if skip else make, target, skip)


def torch_ce(x, t, grad: bool, target: Target | None) -> Contender:
    def build(torch, F):
        tx, tt = torch.from_numpy(x), torch.from_numpy(t)
        if not grad:
            def fwd():
                with torch.no_grad():
                    return F.cross_entropy(tx, tt)
            return fwd
        tx.requires_grad_()

        def fwd_bwd():
            tx.grad = None
            F.cross_entropy(tx, tt).backward()
        return fwd_bwd
    return torch_peer(target, build)


def jax_ce(x, t, grad: bool, target: Target | None) -> Contender:
    def build(jax, jnp, optax):
        def loss(logits, labels):
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        fn = jax.jit(jax.value_and_grad(loss) if grad else loss)
        return fn, (jnp.asarray(x), jnp.asarray(t.astype(np.int32)))
    return jax_peer(target, build)


# --------------------------------------------------------------------------- cases

def _ce_grad(ctx: Ctx, name: str, shape_key: str, dtype, torch_target: Target,
             jax_target: Target | None = None, floor: bool = True, numpy_ref: bool = False):
    """CE loss+grad into a preallocated grad_out, against the chosen contenders."""
    shape = shape_of(ctx, shape_key)
    x, t = make_logits(ctx, shape, dtype), make_target(ctx, shape)
    g = np.empty_like(x)
    contenders = [copy_floor(x, g)] if floor else []
    if numpy_ref:
        contenders.append(numpy_ce_grad(x, t))
    contenders.append(torch_ce(x, t, True, torch_target))
    if jax_target is not None:
        contenders.append(jax_ce(x, t, True, jax_target))
    return compare(ctx, name, describe(x), lambda: xf.cross_entropy_and_grad(x, t, grad_out=g),
                   contenders, notes=check_ce(x, t))


@case("ce_grad_32k", "CE loss+grad, grad_out preallocated")
def ce_grad_32k(ctx):
    return _ce_grad(ctx, "ce_grad_32k", "32k", np.float32, Target(">=", 10, "×"),
                    Target(">=", 5, "×"), numpy_ref=True)


@case("ce_loss_32k", "CE loss only")
def ce_loss_32k(ctx):
    shape = shape_of(ctx, "32k")
    x, t = make_logits(ctx, shape), make_target(ctx, shape)
    contenders = [read_floor(x),
                  torch_ce(x, t, False, Target(">=", 8, "×")),
                  jax_ce(x, t, False, Target(">=", 2.5, "×"))]
    return compare(ctx, "ce_loss_32k", describe(x), lambda: xf.cross_entropy(x, t), contenders,
                   notes=check_ce(x, t))


@case("ce_grad_1k", "CE loss+grad, grad_out preallocated")
def ce_grad_1k(ctx):
    return _ce_grad(ctx, "ce_grad_1k", "1k", np.float32, Target(">=", 10, "×"),
                    Target(">=", 5, "×"), numpy_ref=True)


@case("ce_grad_c10", "CE loss+grad, grad_out preallocated")
def ce_grad_c10(ctx):
    return _ce_grad(ctx, "ce_grad_c10", "c10", np.float32, Target(">=", 20, "×"),
                    Target(">=", 4, "×"), floor=False)


@case("ce_loss_c10", "CE loss only")
def ce_loss_c10(ctx):
    shape = shape_of(ctx, "c10")
    x, t = make_logits(ctx, shape), make_target(ctx, shape)
    contenders = [torch_ce(x, t, False, None), jax_ce(x, t, False, Target(">=", 1.5, "×"))]
    return compare(ctx, "ce_loss_c10", describe(x), lambda: xf.cross_entropy(x, t), contenders,
                   notes=check_ce(x, t))


@case("ce_grad_32k_f64", "CE loss+grad float64, grad_out preallocated")
def ce_grad_32k_f64(ctx):
    return _ce_grad(ctx, "ce_grad_32k_f64", "32k", np.float64, Target(">=", 8, "×"))


@case("ce_tiny", "CE loss+grad, validation included, no grad_out; time per call")
def ce_tiny(ctx):
    shape = shape_of(ctx, "tiny")
    x, t = make_logits(ctx, shape), make_target(ctx, shape)
    inner = 200 if ctx.quick else 2000
    return compare(ctx, "ce_tiny", describe(x), lambda: xf.cross_entropy_and_grad(x, t),
                   [torch_ce(x, t, True, Target(">=", 10, "×"))], inner=inner,
                   notes=check_ce(x, t))


@case("softmax_1k", "softmax, out= preallocated")
def softmax_1k(ctx):
    shape = shape_of(ctx, "1k")
    x = make_logits(ctx, shape)
    out = np.empty_like(x)

    def torch_build(torch, F):
        tx = torch.from_numpy(x)
        return lambda: torch.softmax(tx, dim=-1)

    def jax_build(jax, jnp, _):
        return jax.jit(lambda a: jax.nn.softmax(a, axis=-1)), (jnp.asarray(x),)

    e = np.exp(x[:64].astype(np.float64) - x[:64].max(axis=1, keepdims=True))
    notes = check(xf.softmax(x[:64]), e / e.sum(axis=1, keepdims=True), "softmax")
    contenders = [copy_floor(x, out), torch_peer(Target(">=", 5, "×"), torch_build),
                  jax_peer(None, jax_build, needs_optax=False)]
    return compare(ctx, "softmax_1k", describe(x), lambda: xf.softmax(x, out=out), contenders,
                   notes=notes)


@case("bce_grad_1k", "BCE-with-logits loss+grad, 0/1 targets, grad_out preallocated")
def bce_grad_1k(ctx):
    shape = shape_of(ctx, "1k")
    x = make_logits(ctx, shape)
    y = (ctx.rng.random(shape, dtype=np.float32) < 0.5).astype(np.float32)
    g = np.empty_like(x)

    def torch_build(torch, F):
        tx, ty = torch.from_numpy(x).requires_grad_(), torch.from_numpy(y)

        def fwd_bwd():
            tx.grad = None
            F.binary_cross_entropy_with_logits(tx, ty).backward()
        return fwd_bwd

    def jax_build(jax, jnp, optax):
        def loss(logits, labels):
            return optax.sigmoid_binary_cross_entropy(logits, labels).mean()
        return jax.jit(jax.value_and_grad(loss)), (jnp.asarray(x), jnp.asarray(y))

    xs, ys = x[:64].astype(np.float64), y[:64]
    want = np.mean(np.maximum(xs, 0) - xs * ys + np.log1p(np.exp(-np.abs(xs))))
    notes = check(xf.binary_cross_entropy_with_logits(x[:64], ys), want, "BCE loss")
    contenders = [torch_peer(Target(">=", 10, "×"), torch_build), jax_peer(None, jax_build)]
    return compare(ctx, "bce_grad_1k", describe(x),
                   lambda: xf.binary_cross_entropy_with_logits_and_grad(x, y, grad_out=g),
                   contenders, notes=notes)


@case("threads", "CE loss, n_threads=2 against n_threads=1")
def threads(ctx):
    shape = shape_of(ctx, "32k")
    x, t = make_logits(ctx, shape), make_target(ctx, shape)
    one = Contender("n_threads=1", "peer", lambda: lambda: xf.cross_entropy(x, t, n_threads=1),
                    Target(">=", 1.6, "×"))
    return compare(ctx, "threads", describe(x), lambda: xf.cross_entropy(x, t, n_threads=2),
                   [one], notes=["xent_fast column: n_threads=2; speed-up = t(1 thread) / "
                                 "t(2 threads)"])


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def extra_memory(call, repeat: int) -> tuple[int, int, str]:
    """Worst over `repeat` calls of (tracemalloc peak, peak-RSS growth), in bytes."""
    call()  # warm-up: thread pool, first touch of the output pages
    traced = rss = 0
    can_reset = _reset_peak_rss()
    for _ in range(repeat):
        gc.collect()
        tracemalloc.start()
        tracemalloc.reset_peak()
        call()
        traced = max(traced, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        gc.collect()
        if can_reset:
            _reset_peak_rss()
            before = _status_kib("VmRSS")
            call()
            after = _status_kib("VmHWM")
        else:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            call()
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss = max(rss, (after - before) * 1024)
    how = ("VmHWM growth after resetting it through /proc/self/clear_refs" if can_reset else
           "ru_maxrss growth (lifetime peak, so only a lower bound: clear_refs not permitted)")
    return traced, rss, how


@case("memory", "extra memory during one call: tracemalloc peak and peak-RSS growth")
def memory(ctx):
    shape = shape_of(ctx, "32k")
    x, t = make_logits(ctx, shape), make_target(ctx, shape)
    g = np.empty_like(x)
    target = Target("<", 1, " MiB")
    calls = {"loss+grad, grad_out": lambda: xf.cross_entropy_and_grad(x, t, grad_out=g),
             "loss only": lambda: xf.cross_entropy(x, t)}
    rows, how = [], ""
    for label, call in calls.items():
        traced, rss, how = extra_memory(call, max(3, ctx.repeat // 3))
        for kind, nbytes in [("tracemalloc", traced), ("peak RSS", rss)]:
            v = nbytes / MiB
            rows.append(Row(f"{label}: {kind}", "extra memory", v, target, target.met(v)))
    return CaseResult("memory", CASES["memory"][0], describe(x), None, rows,
                      notes=[f"RSS measured as {how}"])


# --------------------------------------------------------------------------- report

def fmt_time(s: float | None) -> str:
    if s is None:
        return ""
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.3f} s"


def fmt_value(r: Row) -> str:
    if r.value is None:
        return "—"
    if r.measure == "speed-up":
        return f"{r.value:.2f}×"
    if r.measure == "extra memory":
        return f"{r.value:.3f} MiB"
    return f"{r.value:.3f}"


def markdown_table(results: list[CaseResult]) -> str:
    head = ["case", "shape", "xent_fast", "versus", "its time", "measure", "value", "target", "met"]
    right = {2, 4, 6}
    body = []
    for res in results:
        for i, r in enumerate(res.rows):
            met = "" if r.met is None else ("✓" if r.met else "✗")
            first = [res.case, res.shape, fmt_time(res.xf_time)] if i == 0 else ["", "", ""]
            body.append(first + [r.versus, fmt_time(r.peer_time), r.measure or r.note,
                                 fmt_value(r), str(r.target or ""), met])
    widths = [max([len(h)] + [len(line[j]) for line in body]) for j, h in enumerate(head)]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if j in right else c.ljust(w)
                                 for j, (c, w) in enumerate(zip(cells, widths))) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ":" if j in right else "-" * (w + 2)
                          for j, w in enumerate(widths)) + "|"
    return "\n".join([line(head), rule] + [line(cells) for cells in body])


def machine_info() -> dict:
    cfg = xf.config()
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "xent_fast": f"{cfg.get('version')} (git {_git_rev()})",
        "simd": cfg.get("simd"),
        "xent_fast max_threads": cfg.get("max_threads"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
        "numpy": np.__version__,
        "torch": "not installed",
        "jax": "not installed",
    }
    if "torch" in PEERS:
        info["torch"] = f"{PEERS['torch'].__version__} ({PEERS['torch'].get_num_threads()} threads)"
    if "jax" in PEERS:
        devices = ", ".join(str(d) for d in PEERS["jax"].devices())
        info["jax"] = f"{PEERS['jax'].__version__} ({devices})"
    info["optax"] = PEERS["optax"].__version__ if "optax" in PEERS else "not installed"
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_rev() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        return out or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def draw_chart(results: list[CaseResult], path: Path, title: str) -> str:
    """Grouped bars: speed-up of xent_fast over each peer (floors too), log scale."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart drawn (pip install matplotlib)."
    colors = {"copy floor": "#9e9e9e", "read floor": "#c7c7c7", "NumPy ref": "#4c72b0",
              "PyTorch": "#dd8452", "JAX": "#55a868"}
    groups = []  # (case, [(peer, speed-up, speed-up the target asks for)])
    for res in results:
        bars = []
        for r in res.rows:
            if r.value is None or r.versus not in colors:
                continue
            floor = r.measure == "xf / floor"
            needed = None if r.target is None else (1 / r.target.value if floor else r.target.value)
            bars.append((r.versus, 1 / r.value if floor else r.value, needed))
        if bars:
            groups.append((res.case, bars))
    if not groups:
        return "no comparison to chart."
    fig, ax = plt.subplots(figsize=(max(8.0, 1.2 * len(groups) + 2), 5.5), dpi=110)
    width = 0.8 / max(len(bars) for _, bars in groups)
    labelled = set()
    for gi, (_, bars) in enumerate(groups):
        for bi, (peer, speed, needed) in enumerate(bars):
            x = gi + (bi - (len(bars) - 1) / 2) * width
            ax.bar(x, speed, width * 0.92, color=colors[peer],
                   label=None if peer in labelled else peer)
            labelled.add(peer)
            ax.annotate(f"{speed:.2g}×", (x, speed), ha="center", va="bottom", fontsize=7)
            if needed is not None:
                ax.hlines(needed, x - width / 2, x + width / 2, colors="black", linewidth=2,
                          label=None if "target" in labelled else "target")
                labelled.add("target")
    ax.axhline(1, color="red", linewidth=1, linestyle="--")
    ax.set_yscale("log")
    top = max(max(speed, needed or 0) for _, bars in groups for _, speed, needed in bars)
    ax.set_ylim(top=max(top, 1) * 4)  # headroom for the legend
    ax.set_xticks(range(len(groups)), [case_ for case_, _ in groups], rotation=20, ha="right")
    ax.set_ylabel("speed-up of xent_fast (peer time / xent_fast time)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncols=3)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return f"chart: {path}"


# --------------------------------------------------------------------------- main

def run_case(name: str, ctx: Ctx) -> CaseResult:
    print(f"[{name}]", end=" ", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with LoadMonitor() as load:
        res = CASES[name][1](ctx)
    gc.collect()  # free this case's arrays (and the peers' copies) before the next one
    res.other_load = load.share
    if res.raw and load.busy:
        res.notes.append(f"machine busy: other processes used {load.share:.0%} of the CPUs "
                         "meanwhile; its timings are unreliable")
    print(f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes, 3 repeats")
    parser.add_argument("--cases", help=f"comma-separated subset of: {', '.join(CASES)}")
    parser.add_argument("--repeat", type=int, help="timed calls per contender (default 15, quick 3)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output folder (bench/results)")
    args = parser.parse_args(argv)

    names = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}; choose from {', '.join(CASES)}")
    repeat = args.repeat or (3 if args.quick else 15)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    ctx = Ctx(args.quick, repeat, np.random.default_rng(0))
    mode = "quick" if args.quick else "full"

    start = time.perf_counter()
    info = machine_info()
    head = [f"# xent_fast benchmark ({mode} run)", ""]
    head += [f"- {k}: {v}" for k, v in info.items()]
    head.append(f"- timing: median of {repeat} timed calls after a warm-up call, per contender")
    notes = list(PEER_NOTES)
    if args.quick:
        notes.insert(0, "Quick run on small shapes: the targets are judged on the full run "
                        "only; the ✓/✗ below are indicative.")
    if notes:
        head += [""] + [f"> {note}" for note in notes]
    print("\n".join(head), flush=True)

    with LoadMonitor() as run_load:
        results = [run_case(name, ctx) for name in names]
    elapsed = time.perf_counter() - start

    foot = [f"- {r.case}: {note}" for r in results for note in r.notes]
    foot += ["- speed-up = peer time / xent_fast time (higher is better); "
             "xf / floor = xent_fast time / floor time (lower is better).",
             f"- total wall time: {elapsed:.1f} s; other processes used "
             + ("an unknown share" if run_load.share is None else f"{run_load.share:.0%}")
             + " of the CPUs meanwhile"]
    tail = "\n" + markdown_table(results) + "\n\n" + "\n".join(foot)
    print(tail)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text("\n".join(head) + "\n" + tail + "\n")
    payload = {
        "mode": mode, "repeat": repeat, "machine": info, "notes": PEER_NOTES,
        "wall_time_s": elapsed, "other_load": run_load.share,
        "cases": [{**asdict(r), "median_s": {k: statistics.median(v) for k, v in r.raw.items()}}
                  for r in results],
    }
    (args.out / "latest.json").write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    print(draw_chart(results, args.out / "speedup.png",
                     f"xent_fast speed-up ({mode} run; {info['cpu_count']} CPUs, "
                     f"{info['simd']}); black ticks: targets"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
