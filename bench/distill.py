"""Distillation loss + gradient at 8192 x 32000 float32 (issue 20's targets), in one
process, min of repeats: xf.distillation_loss_and_grad (gradient in place) against
PyTorch's composite F.kl_div(F.log_softmax(s/T), F.log_softmax(t/T), log_target=True)
(forward KL) and TRL's generalized_jsd_loss form at beta=0.5, and against the floor of
reading two arrays and writing one (np.add(a, b, out=c)).

    python bench/distill.py [--rows 8192] [--classes 32000] [--repeat 3]
"""

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

import xent_fast as xf


def best(fn, repeat):
    t = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - t0)
    return t


def torch_step(s, t, beta):
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--classes", type=int, default=32000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
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
