"""Distillation loss + gradient at 8192 x 32000 float32 (issue 20's targets), in one
process, min of repeats: xf.distillation_loss_and_grad (gradient in place) against
PyTorch's composite F.kl_div(F.log_softmax(s/T), F.log_softmax(t/T), log_target=True)
(forward KL) and TRL's generalized_jsd_loss form at beta=0.5, and against the floor of
reading two arrays and writing one (np.add(a, b, out=c)).

    python bench/distill.py [--rows 8192] [--classes 32000] [--repeat 3]

With --jax, instead: xent_fast.jax.distillation_loss against the same divergence written
in jax.numpy (xent_fast._jax_distill._composite, TRL's formula), loss + gradient
``jit(value_and_grad(mean of the losses))`` on float32 arrays given to the jitted
function, at the sizes of --jax-sizes; also the loss through jax.pure_callback (what
it ran on before its compiled handler). The contenders are interleaved call by call,
each round in a new order; reported are the min and the median of the repeats and the
composite's time over ours (> 1: xent_fast.jax is faster).

    PYTHONPATH=. python bench/distill.py --jax [--jax-sizes 64x1000,1024x4096] [--repeat 21]
"""

import argparse
import math
import statistics
import time

import numpy as np

import xent_fast as xf


def best(fn, repeat):
    t = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - t0)
    return t


def torch_step(s, t, beta):
    import torch
    import torch.nn.functional as F
    s = s.detach().requires_grad_()
    ls, lt = F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1)
    if beta == 0:
        loss = F.kl_div(ls, lt, reduction="batchmean", log_target=True)
    else:
        b = torch.tensor(beta)
        lm = torch.logsumexp(torch.stack([ls + torch.log1p(-b), lt + torch.log(b)]), dim=0)
        jsd = beta * F.kl_div(lm, lt, reduction="none", log_target=True) + (1 - beta) * F.kl_div(
            lm, ls, reduction="none", log_target=True)
        loss = jsd.sum() / jsd.size(0)
    loss.backward()
    return s.grad


def _ms(t):
    return f"{t * 1e3:.3f}" if t < 1e-2 else f"{t * 1e3:.1f}"


def jax_table(sizes, repeat):
    """Loss + gradient under jit: xent_fast.jax.distillation_loss (its compiled handler,
    and jax.pure_callback) against the jax.numpy composite, interleaved."""
    import jax
    import jax.numpy as jnp
    import xent_fast.jax as xfj
    from xent_fast._jax_distill import _composite

    def ours(mech):
        def loss(s, t, beta):
            saved = xfj._MECHANISM       # read while tracing: the call is compiled in
            xfj._MECHANISM = mech
            try:
                return xfj.distillation_loss(s, t, beta=beta)
            finally:
                xfj._MECHANISM = saved
        return loss

    losses = {"xent_fast.jax": ours(xfj.mechanism()), "composite": lambda s, t, beta: (
        _composite(s, t, 1.0, beta)), "pure_callback": ours("callback")}
    print(f"xent_fast.jax mechanism {xfj.mechanism()}, SIMD {xf.config()['simd']}, "
          f"jax {jax.__version__}, {repeat} interleaved repeats; times in ms")
    print("| rows × classes | divergence | ours min | ours median | composite min "
          "| composite median | pure_callback median | composite / ours (min) "
          "| composite / ours (median) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    order = np.random.default_rng(1)
    for rows, classes in sizes:
        s = jnp.asarray(rng.standard_normal((rows, classes), dtype=np.float32) * 3)
        t = jnp.asarray(rng.standard_normal((rows, classes), dtype=np.float32) * 3)
        for name, beta in (("forward KL", 0.0), ("JSD beta=0.5", 0.5), ("reverse KL", 1.0)):
            fns = {k: jax.jit(jax.value_and_grad(
                lambda s, t, f=f, beta=beta: f(s, t, beta).mean())) for k, f in losses.items()}
            for fn in fns.values():
                jax.block_until_ready(fn(s, t))      # compile and warm up
            (l0, g0), (l1, g1) = fns["composite"](s, t), fns["xent_fast.jax"](s, t)
            assert abs(float(l1) - float(l0)) <= 1e-4 * abs(float(l0)) + 1e-7
            assert float(jnp.max(jnp.abs(g1 - g0))) <= 1e-4 * float(jnp.max(jnp.abs(g0)))
            times = {k: [] for k in fns}
            for _ in range(repeat):
                for k in order.permutation(list(fns)):
                    t0 = time.perf_counter()
                    jax.block_until_ready(fns[k](s, t))
                    times[k].append(time.perf_counter() - t0)
            lo = {k: min(v) for k, v in times.items()}
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"| {rows}×{classes} | {name} | {_ms(lo['xent_fast.jax'])} "
                  f"| {_ms(med['xent_fast.jax'])} | {_ms(lo['composite'])} "
                  f"| {_ms(med['composite'])} | {_ms(med['pure_callback'])} "
                  f"| {lo['composite'] / lo['xent_fast.jax']:.2f}× "
                  f"| {med['composite'] / med['xent_fast.jax']:.2f}× |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--classes", type=int, default=32000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jax", action="store_true",
                    help="time xent_fast.jax.distillation_loss against the jax.numpy composite")
    ap.add_argument("--jax-sizes", default="64x1000,1024x4096,512x32000",
                    help="rows x classes, comma-separated, for --jax")
    args = ap.parse_args()
    if args.jax:
        sizes = [tuple(int(v) for v in size.split("x")) for size in args.jax_sizes.split(",")]
        jax_table(sizes, args.repeat)
        return
    import torch
    rng = np.random.default_rng(0)
    shape = (args.rows, args.classes)
    s = rng.standard_normal(shape, dtype=np.float32)
    t = rng.standard_normal(shape, dtype=np.float32)
    out = np.empty_like(s)
    floor = best(lambda: np.add(s, t, out=out), args.repeat)
    print(f"{args.rows}x{args.classes} float32, {torch.get_num_threads()} torch threads, "
          f"SIMD {xf.config()['simd']}")
    print(f"floor np.add(a, b, out=c): {floor * 1e3:.1f} ms")
    print("| divergence | xent_fast ms | torch ms | speed-up (target >= 8) | / floor (target <= 1.4) |")
    print("|---|---|---|---|---|")
    ts, tt = torch.from_numpy(s), torch.from_numpy(t)
    for name, beta in (("forward KL", 0.0), ("JSD beta=0.5", 0.5), ("reverse KL", 1.0)):
        ours = best(lambda: xf.distillation_loss_and_grad(s, t, beta=beta, grad_out=out),
                    args.repeat)
        theirs = best(lambda: torch_step(ts, tt, beta), args.repeat) if beta < 1 else math.nan
        print(f"| {name} | {ours * 1e3:.0f} | {theirs * 1e3:.0f} | {theirs / ours:.1f} | "
              f"{ours / floor:.2f} |")
    # accuracy: a row whose divergence is ~1e-12 (float64, the accurate path)
    x = rng.standard_normal(32000) * 2
    y = x + 1.4e-6 * rng.standard_normal(32000)
    ref = 0.5 * np.sum(np.exp(y - np.logaddexp.reduce(y)) * ((y - x) - np.sum(
        np.exp(y - np.logaddexp.reduce(y)) * (y - x))) ** 2)   # second-order estimate
    got = float(xf.distillation_loss(x, y))
    print(f"near agreement (float64): divergence {got:.6e}, second-order estimate {ref:.6e}")
    # the same in float32 rows (float arithmetic), against the float64 path on their values
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    for beta in (0.0, 0.5, 1.0):
        want = float(xf.distillation_loss(x32.astype(np.float64), y32.astype(np.float64),
                                          beta=beta))
        got = float(xf.distillation_loss(x32, y32, beta=beta))
        print(f"near agreement (float32, beta={beta}): divergence {want:.3e}, "
              f"relative error {abs(got - want) / want:.1e} (target <= 1e-6)")


if __name__ == "__main__":
    main()
