"""Fused linear cross-entropy (NumPy API) against its matrix-product floor.

One language-model head step in float32 (loss, gradients of hidden and weight), hidden
(N, H), weight (V, H), class-index targets:

- ``floor``: the three matrix products alone (``h @ W.T``, ``G @ W``, ``G.T @ h``) into
  preallocated outputs: what any method must at least pay;
- ``ours``: ``xf.linear_cross_entropy_and_grad`` (chunked; no N x V array);
- ``materialised``: the logits made in full, ``xf.cross_entropy_and_grad`` turning them
  into their gradient in place, then the two gradient products;
- ``ours, 75% ignored``: ``ours`` with three rows in four at ``ignore_index``;
- ``ours, loss only``: ``xf.linear_cross_entropy`` (forward only), for information.

Each contender runs in its own process (so no contender inherits another's memory high-
water mark or thread pools): inputs made, one warm-up call, then the peak extra memory
of one call (``/proc/self/clear_refs`` reset, then ``VmHWM`` minus the ``VmRSS`` before
the call, minus the outputs the call returns), then ``--repeat`` timed calls. The
processes are started in ``--rounds`` interleaved rounds and each contender's best time
is reported (on a machine shared with other work the best is the least disturbed run);
a run during which other processes took over 5% of the CPUs is flagged.

    python bench/linear.py                    # V = 32000 and 128256, several minutes
    python bench/linear.py --vocab 32000      # one shape
    python bench/linear.py --quick            # small shape, seconds

On a machine shared with other work, ``nice -n -10 python bench/linear.py`` (as root)
keeps the others from taking the cores in the middle of a BLAS call: OpenBLAS's threads
wait for each other, so a call slows by far more than the share of the CPU it loses,
and more so for many mid-sized calls (ours) than for three big ones (the floor).

With ``--torch``, the PyTorch adapter (``xent_fast.torch.linear_cross_entropy``) in
float32 and bfloat16, each contender in its own process as above, one whole step
(forward and backward, gradients of hidden and weight) per call:

- ``t_floor``: the three matrix products alone, in the dtype, into preallocated outputs;
- ``t_ref``: PyTorch's reference path, ``F.cross_entropy(F.linear(h, W), y)`` (bfloat16:
  the logits ``.float()``) and its backward;
- ``t_chunked``: ``F.linear_cross_entropy(h, W, y, options=LinearCrossEntropyOptions())``;
- ``t_ours``: ``xent_fast.torch.linear_cross_entropy(h, W, y)``;
- ``step_ref``, ``step_chunked``, ``step_ours``: a whole SGD step of a small causal LM
  (embedding, one causal transformer layer, head of V classes; float32) with each loss.

Peak extra memory there is VmHWM growth over the step, the gradients included (every
contender makes them). ``--torch`` writes its section after the NumPy one in
bench/results/linear.md, keeping the latter.

    python bench/linear.py --torch --repeat 1 --rounds 1

Writes the table to bench/results/linear.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

MiB = 1 << 20
CONTENDERS = ("floor", "ours", "materialised", "ours75", "ours_loss")
LABELS = {
    "floor": "three matrix products alone (floor)",
    "ours": "`xf.linear_cross_entropy_and_grad`",
    "materialised": "materialised: logits, `xf.cross_entropy_and_grad` in place, products",
    "ours75": "`xf.linear_cross_entropy_and_grad`, 75% of rows ignored",
    "ours_loss": "`xf.linear_cross_entropy` (loss only)",
}


# ----------------------------------------------------------------------------- child

def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(name: str, n: int, h: int, v: int, repeat: int, block_mib: float | None,
          tile_mib: float | None) -> dict:
    import xent_fast as xf
    import xent_fast._linear as lin
    from run import LoadMonitor

    if block_mib is not None:
        lin._BLOCK_BYTES = int(block_mib * MiB)
    if tile_mib is not None:
        lin._TILE_BYTES = int(tile_mib * MiB)
    rng = np.random.default_rng(0)
    hid = rng.standard_normal((n, h), dtype=np.float32)
    w = rng.standard_normal((v, h), dtype=np.float32) * np.float32(1 / np.sqrt(h))
    y = rng.integers(0, v, n)
    if name == "ours75":
        y[rng.permutation(n)[: 3 * n // 4]] = -100

    if name == "floor":
        g = np.empty((n, v), np.float32)
        gh = np.empty((n, h), np.float32)
        gw = np.empty((v, h), np.float32)

        def call():
            np.matmul(hid, w.T, out=g)
            np.matmul(g, w, out=gh)
            np.matmul(g.T, hid, out=gw)
            return None
    elif name in ("ours", "ours75"):
        def call():
            return xf.linear_cross_entropy_and_grad(hid, w, y)
    elif name == "ours_loss":
        def call():
            return (xf.linear_cross_entropy(hid, w, y),)
    elif name == "materialised":
        def call():
            logits = hid @ w.T
            loss, g = xf.cross_entropy_and_grad(logits, y, grad_out=logits)
            return loss, g @ w, g.T @ hid
    else:
        raise SystemExit(f"unknown contender {name}")

    def out_bytes(res) -> int:
        return 0 if res is None else sum(a.nbytes for a in res if isinstance(a, np.ndarray))

    res = call()                          # warm-up: BLAS buffers, thread pools
    loss = None if res is None else float(res[0])
    del res
    gc.collect()
    extra = None
    if _reset_peak():
        before = _status_kib("VmRSS")
        res = call()
        peak = _status_kib("VmHWM")
        extra = (peak - before) * 1024 - out_bytes(res)
        del res
        gc.collect()
    times = []
    with LoadMonitor() as load:
        for _ in range(repeat):
            t0 = time.perf_counter()
            res = call()
            times.append(time.perf_counter() - t0)
            del res
    return {"times": times, "extra": extra, "loss": loss, "busy": load.share,
            "r0": lin.block_rows(v, h, 4)}



TORCH_CONTENDERS = ("t_floor", "t_ref", "t_chunked", "t_ours")
STEP_CONTENDERS = ("step_ref", "step_chunked", "step_ours")
TORCH_LABELS = {
    "t_floor": "three matrix products alone (floor)",
    "t_ref": "PyTorch reference `F.cross_entropy(F.linear(h, W), y)`",
    "t_chunked": "PyTorch chunked `F.linear_cross_entropy(..., options=LinearCrossEntropyOptions())`",
    "t_ours": "`xent_fast.torch.linear_cross_entropy`",
    "step_ref": "LM step, PyTorch reference loss",
    "step_chunked": "LM step, PyTorch chunked loss",
    "step_ours": "LM step, `xent_fast.torch.linear_cross_entropy`",
}
STEP_SHAPE = (8, 512, 512)  # batch, sequence, model width of the small causal LM


def torch_child(name: str, n: int, h: int, v: int, dtype: str, repeat: int) -> dict:
    import torch
    import torch.nn.functional as F

    import xent_fast.torch as xft
    from run import LoadMonitor

    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(0)
    if name.startswith("step"):
        call, loss_of = _lm_step(name, v, g)
    else:
        hid = torch.randn(n, h, generator=g).to(dt).requires_grad_()
        w = (torch.randn(v, h, generator=g) / h ** 0.5).to(dt).requires_grad_()
        y = torch.randint(0, v, (n,), generator=g)
        if name == "t_floor":
            with torch.no_grad():
                lg = torch.empty(n, v, dtype=dt)
                gh = torch.empty(n, h, dtype=dt)
                gw = torch.empty(v, h, dtype=dt)
                hd, wd = hid.detach(), w.detach()

            def call():
                torch.mm(hd, wd.t(), out=lg)
                torch.mm(lg, wd, out=gh)
                torch.mm(lg.t(), hd, out=gw)
                return None
        else:
            if name == "t_ref":
                def loss_fn():
                    logits = F.linear(hid, w)
                    return F.cross_entropy(logits.float() if dt != torch.float32 else logits, y)
            elif name == "t_chunked":
                opts = torch.nn.LinearCrossEntropyOptions()

                def loss_fn():
                    return F.linear_cross_entropy(hid, w, y, options=opts)
            elif name == "t_ours":
                def loss_fn():
                    return xft.linear_cross_entropy(hid, w, y)
            else:
                raise SystemExit(f"unknown contender {name}")

            def call():
                hid.grad = w.grad = None
                loss = loss_fn()
                loss.backward()
                return float(loss)

    loss = call()                          # warm-up: thread pools, oneDNN kernels
    gc.collect()
    times, extra, before = [], None, None
    with LoadMonitor() as load:
        for i in range(repeat):
            if i == 0 and _reset_peak():
                before = _status_kib("VmRSS")
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
            if i == 0 and before is not None:
                extra = (_status_kib("VmHWM") - before) * 1024
            gc.collect()
    out = {"times": times, "extra": extra, "loss": loss, "busy": load.share}
    if name == "t_ours" and dt != torch.float32:
        # the float32 loss of the same (bfloat16-rounded) values: the accuracy target
        with torch.no_grad():
            out["loss_f32"] = float(xft.linear_cross_entropy(hid.float(), w.float(), y))
    return out


def _lm_step(name: str, v: int, g) -> tuple:
    """One SGD step of a small causal LM: embedding, one causal transformer layer, final
    norm, bias-free head of V classes; next-token targets (the last position ignored)."""
    import torch
    import torch.nn.functional as F

    import xent_fast.torch as xft

    b, t, d = STEP_SHAPE
    torch.manual_seed(0)
    emb = torch.nn.Embedding(v, d)
    layer = torch.nn.TransformerEncoderLayer(d, 8, 2 * d, dropout=0.0, batch_first=True,
                                             norm_first=True)
    norm = torch.nn.LayerNorm(d)
    head = torch.nn.Linear(d, v, bias=False)
    params = [*emb.parameters(), *layer.parameters(), *norm.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=1e-2)
    tokens = torch.randint(0, v, (b, t), generator=g)
    target = torch.cat([tokens[:, 1:], torch.full((b, 1), -100)], 1)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(t)
    opts = torch.nn.LinearCrossEntropyOptions()

    def call():
        opt.zero_grad(set_to_none=True)
        x = norm(layer(emb(tokens), src_mask=mask, is_causal=True)).reshape(b * t, d)
        y = target.reshape(-1)
        if name == "step_ref":
            loss = F.cross_entropy(head(x), y)
        elif name == "step_chunked":
            loss = F.linear_cross_entropy(x, head.weight, y, options=opts)
        else:
            loss = xft.linear_cross_entropy(x, head.weight, y)
        loss.backward()
        opt.step()
        return float(loss)

    return call, None


def torch_table(n: int, h: int, v: int, dtype: str, results: dict[str, list[dict]]) -> list[str]:
    best = {k: min(t for r in rs for t in r["times"]) for k, rs in results.items()}
    extra = {k: max((r["extra"] for r in rs if r["extra"] is not None), default=None)
             for k, rs in results.items()}
    busy = {k: max((r["busy"] or 0.0) for r in rs) for k, rs in results.items()}
    step = next(iter(results)).startswith("step")
    if step:
        b, t, d = STEP_SHAPE
        head = f"### A whole training step: causal LM, batch {b}×{t} tokens, width {d}, V={v}, float32"
    else:
        head = (f"### PyTorch, {dtype}, N={n}, H={h}, V={v} (float32 logits "
                f"{n * v * 4 / MiB:.0f} MiB)")
    lines = [head, "", "| contender | best time | × floor | ours faster by | peak extra memory | loss |",
             "|---|---:|---:|---:|---:|---|"]
    ours = "step_ours" if step else "t_ours"
    for k in results:
        t_ = best[k]
        xf_ = f"{t_ / best['t_floor']:.2f}" if "t_floor" in best else ""
        sp = f"{t_ / best[ours]:.2f}×" if ours in best and k != ours and k != "t_floor" else ""
        mem = "" if extra[k] is None or k == "t_floor" else f"{extra[k] / MiB:.0f} MiB"
        loss = results[k][0]["loss"]
        flag = " (busy)" if busy[k] > 0.05 else ""
        lines.append(f"| {TORCH_LABELS[k]} | {t_:.3f} s{flag} | {xf_} | {sp} | {mem} | "
                     f"{'' if loss is None else f'{loss:.6f}'} |")
    lines.append("")
    if step:
        return lines
    checks = []
    f32 = dtype == "float32"
    if "t_ours" in best:
        if "t_floor" in best and f32:
            r = best["t_ours"] / best["t_floor"]
            checks.append(f"time ≤ 1.15× the three products: {r:.2f}× {'✓' if r <= 1.15 else '✗'}")
        for k, goal in (("t_ref", 1.3 if f32 else 1.8), ("t_chunked", 3.0 if f32 else 8.0)):
            if k in best:
                r = best[k] / best["t_ours"]
                checks.append(f"≥ {goal}× faster than {k[2:]}: {r:.2f}× {'✓' if r >= goal else '✗'}")
        if "t_ref" in extra and extra["t_ref"] and extra["t_ours"] is not None:
            r = extra["t_ours"] / extra["t_ref"]
            checks.append(f"peak extra ≤ 1/8 of the reference's: 1/{1 / r:.1f} "
                          f"{'✓' if r <= 1 / 8 else '✗'}")
        ref32 = results["t_ours"][0].get("loss_f32")
        if ref32:
            for k in ("t_ours", "t_ref", "t_chunked"):
                if k in results:
                    e = abs(results[k][0]["loss"] - ref32) / abs(ref32)
                    checks.append(f"{k[2:]} loss within 2^-8 relative of the float32 loss "
                                  f"({ref32:.6f}): {e:.1e} {'✓' if e <= 2 ** -8 else '✗'}")
    lines += [f"- {c}" for c in checks] + [""]
    return lines


def run_torch(args, argv_text: str) -> None:
    shapes = [(4096, 512, int(v)) for v in args.vocab.split(",")]
    names = [c for c in args.contenders.split(",") if c in TORCH_CONTENDERS]
    steps = [c for c in args.contenders.split(",") if c in STEP_CONTENDERS]
    if args.contenders == ",".join(CONTENDERS):
        names, steps = list(TORCH_CONTENDERS), list(STEP_CONTENDERS)
    import torch

    import xent_fast as xf
    lines = [TORCH_MARK, "", "# Fused linear cross-entropy, PyTorch adapter", "",
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; torch "
             f"{torch.__version__} ({torch.get_num_threads()} threads); xent_fast "
             f"{xf.__version__}; niceness {os.nice(0)}.", "",
             f"`python bench/linear.py {argv_text}`", "",
             f"Best of {args.rounds} process(es) × {args.repeat} call(s) per contender, "
             "after one warm-up call; a call is a whole step (forward, backward: gradients "
             "of hidden and weight). Peak extra memory = VmHWM growth during the first "
             "timed call (after resetting it through /proc/self/clear_refs), gradients "
             "included. \"busy\": other processes took over 5% of the CPUs meanwhile.", ""]
    jobs = [(dt, shape, names) for shape in shapes for dt in args.dtypes.split(",")]
    if steps:
        jobs.append(("float32", (0, 0, 128256), steps))
    for dt, (n, h, v), group in jobs:
        results: dict[str, list[dict]] = {k: [] for k in group}
        for rnd in range(args.rounds):
            for k in group:
                r = run_child(k, n, h, v, args.repeat, ["--dtype", dt])
                results[k].append(r)
                mem = "-" if r["extra"] is None else f"{r['extra'] / MiB:.0f} MiB"
                print(f"  {dt} V={v} round {rnd + 1} {k}: {min(r['times']):.3f} s, extra "
                      f"{mem}, busy {r['busy'] or 0:.0%}", file=sys.stderr, flush=True)
        lines += torch_table(n, h, v, dt, results)
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    old = out.read_text() if out.exists() else ""
    keep = old.split(TORCH_MARK)[0].rstrip("\n")
    out.write_text((keep + "\n\n" if keep else "") + text + "\n")


TORCH_MARK = "<!-- PyTorch adapter: bench/linear.py --torch -->"


# ---------------------------------------------------------------------------- parent

def run_child(name: str, n: int, h: int, v: int, repeat: int, extra_args: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--shape", f"{n},{h},{v}",
           "--repeat", str(repeat), *extra_args]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(n: int, h: int, v: int, results: dict[str, list[dict]]) -> list[str]:
    best = {k: min(t for r in rs for t in r["times"]) for k, rs in results.items()}
    extra = {k: max((r["extra"] for r in rs if r["extra"] is not None), default=None)
             for k, rs in results.items()}
    busy = {k: max((r["busy"] or 0.0) for r in rs) for k, rs in results.items()}
    out_mib = (n * h + v * h) * 4 / MiB
    r0 = results["ours"][0]["r0"] if "ours" in results else None
    lines = [f"### float32, N={n}, H={h}, V={v} (logits {n * v * 4 / MiB:.0f} MiB; outputs "
             f"{out_mib:.0f} MiB; block R0 = {r0} rows)", "",
             "| contender | best time | × floor | × ours | peak extra memory | loss |",
             "|---|---:|---:|---:|---:|---|"]
    for k in results:
        t = best[k]
        xf_ = f"{t / best['floor']:.2f}" if "floor" in best else ""
        xo = f"{t / best['ours']:.2f}" if "ours" in best and k != "ours" else ""
        mem = "" if extra[k] is None or k == "floor" else f"{extra[k] / MiB:.0f} MiB"
        loss = results[k][0]["loss"]
        flag = " (busy)" if busy[k] > 0.05 else ""
        lines.append(f"| {LABELS[k]} | {t:.3f} s{flag} | {xf_} | {xo} | {mem} | "
                     f"{'' if loss is None else f'{loss:.6f}'} |")
    lines.append("")
    checks = []
    if "ours" in best and "floor" in best:
        r = best["ours"] / best["floor"]
        checks.append(f"time ≤ 1.2× the three products: {r:.2f}× "
                      f"{'✓' if r <= 1.2 else '✗'}")
    if "ours" in extra and extra["ours"] is not None:
        m = extra["ours"] / MiB
        checks.append(f"peak extra memory ≤ outputs + 128 MiB: {m:.0f} MiB beyond the "
                      f"outputs {'✓' if m <= 128 else '✗'}")
    if "ours75" in best and "ours" in best:
        r = best["ours75"] / best["ours"]
        checks.append(f"75% ignored ≤ 0.5× all counted: {r:.2f}× {'✓' if r <= 0.5 else '✗'}")
    if v != 32000:
        checks = [c.replace("✓", "(✓)").replace("✗", "(✗)") for c in checks]
        checks.append("(targets are set for V=32000; shown here for information)")
    lines += [f"- {c}" for c in checks] + [""]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="N=1024, H=256, V=8000")
    p.add_argument("--vocab", default="32000,128256", help="comma-separated V (N=4096, H=512)")
    p.add_argument("--repeat", type=int, default=3, help="timed calls per process")
    p.add_argument("--rounds", type=int, default=2, help="processes per contender, interleaved")
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--block-mib", type=float, default=None,
                   help="override xent_fast._linear._BLOCK_BYTES (tuning)")
    p.add_argument("--tile-mib", type=float, default=None,
                   help="override xent_fast._linear._TILE_BYTES (tuning)")
    p.add_argument("--out", default=str(HERE / "results" / "linear.md"))
    p.add_argument("--torch", action="store_true",
                   help="the PyTorch adapter against PyTorch's reference and chunked paths")
    p.add_argument("--dtypes", default="float32,bfloat16", help="with --torch")
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child in TORCH_CONTENDERS or args.child in STEP_CONTENDERS:
        n, h, v = (int(x) for x in args.shape.split(","))
        print(json.dumps(torch_child(args.child, n, h, v, args.dtype, args.repeat)))
        return 0
    if args.child:
        n, h, v = (int(x) for x in args.shape.split(","))
        print(json.dumps(child(args.child, n, h, v, args.repeat, args.block_mib,
                               args.tile_mib)))
        return 0

    if args.torch:
        run_torch(args, " ".join(argv if argv is not None else sys.argv[1:]))
        return 0
    extra_args = []
    if args.block_mib is not None:
        extra_args += ["--block-mib", str(args.block_mib)]
    if args.tile_mib is not None:
        extra_args += ["--tile-mib", str(args.tile_mib)]
    shapes = ([(1024, 256, 8000)] if args.quick else
              [(4096, 512, int(v)) for v in args.vocab.split(",")])
    names = [c for c in args.contenders.split(",") if c]
    import xent_fast as xf
    from threadpoolctl import threadpool_info
    pools = ", ".join(f"{i['internal_api']} {i.get('version') or ''} "
                      f"({i['num_threads']} threads)" for i in threadpool_info())
    lines = ["# Fused linear cross-entropy, NumPy API", "",
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
             f"numpy {np.__version__}; xent_fast {xf.__version__}; {pools}; "
             f"niceness {os.nice(0)}.", "",
             f"`python bench/linear.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             "",
             f"Best of {args.rounds} processes × {args.repeat} calls per contender "
             "(processes interleaved); peak extra memory = VmHWM growth during one call "
             "(after resetting it through /proc/self/clear_refs) minus the arrays the call "
             "returns. The floor writes into preallocated arrays, so it has no memory "
             "figure (its logits alone are N×V×4 bytes).", ""]
    for n, h, v in shapes:
        results: dict[str, list[dict]] = {k: [] for k in names}
        for rnd in range(args.rounds):
            for k in names:
                r = run_child(k, n, h, v, args.repeat, extra_args)
                results[k].append(r)
                mem = "-" if r["extra"] is None else f"{r['extra'] / MiB:.0f} MiB"
                print(f"  V={v} round {rnd + 1} {k}: {min(r['times']):.3f} s, extra {mem}, "
                      f"busy {r['busy'] or 0:.0%}", file=sys.stderr, flush=True)
        lines += table(n, h, v, results)
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
