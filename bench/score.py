#!/usr/bin/env python
"""Scoring throughput of xent_fast.score against NumPy, SciPy and PyTorch, and the
xent-fast command on a multi-GB file with its peak RSS.

    python bench/score.py                 # full run (a few minutes: writes a 4 GB file)
    python bench/score.py --quick         # small shapes, a 0.25 GB file
    python bench/score.py --cli-gb 0      # no command-line case

Every contender computes the same summary (mean loss, accuracy, top-5 accuracy, mean
entropy, ECE) from the same float32 logits and class indices, in this one process:
a warm-up call, then `repeat` timed calls; medians are reported, as rows/s and GB/s of
logits read, with the speed-up of xent_fast over each. Results go to
bench/results/score.md and score.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PEERS, LoadMonitor, fmt_time, machine_info, time_calls  # noqa: E402

import xent_fast as xf  # noqa: E402
from xent_fast._demo import numpy_summary, summarize, synthetic_batch  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
K = 5
SHAPES = {"1k": ((65536, 1000), (8192, 1000)), "32k": ((2048, 32000), (256, 8000)),
          "c10": ((1048576, 10), (65536, 10))}


def scipy_summary(x: np.ndarray, t: np.ndarray, k: int = K) -> dict:
    """The same summary with scipy.special (log_softmax, entr)."""
    from scipy.special import entr, log_softmax
    lsm = log_softmax(x, axis=1)
    p = np.exp(lsm)
    loss = -lsm[np.arange(len(x)), t]
    pred = p.argmax(axis=1)
    rows = np.arange(len(x))
    brier = (p * p).sum(axis=1) - 2 * p[rows, t] + 1
    return summarize(x, t, loss, pred, p[rows, pred], entr(p).sum(axis=1), k, brier)


def torch_summary_fn(torch, x: np.ndarray, t: np.ndarray, k: int = K):
    """log_softmax + gather + topk, and the same reductions, without autograd."""
    tx, tt = torch.from_numpy(x), torch.from_numpy(t)
    n = x.shape[0]

    def run() -> dict:
        with torch.no_grad():
            lsm = torch.log_softmax(tx, dim=-1)
            loss = -lsm.gather(1, tt[:, None])[:, 0]
            p = lsm.exp()
            conf, pred = p.max(dim=-1)
            entropy = -(p * lsm).sum(dim=-1)
            hit = (tx.topk(k, dim=-1).indices == tt[:, None]).any(dim=-1)
            correct = pred == tt
            bins = torch.clamp(torch.ceil(conf.double() * 15).long() - 1, 0, 14)
            gap = (torch.bincount(bins, weights=correct.double(), minlength=15)
                   - torch.bincount(bins, weights=conf.double(), minlength=15))
            return {"loss": float(loss.double().mean()), "accuracy": float(correct.double().mean()),
                    "top_k_accuracy": float(hit.double().mean()),
                    "mean_entropy": float(entropy.double().mean()),
                    "ece": float(gap.abs().sum() / n)}
    return run


def throughput_case(name: str, shape: tuple[int, int], repeat: int) -> dict:
    x, t = synthetic_batch(*shape, seed=1)
    want = xf.score(x, t, k=K).summary()
    contenders = {
        "xent_fast": lambda: xf.score(x, t, k=K).summary(),
        "xent_fast, 1 thread": lambda: xf.score(x, t, k=K, n_threads=1).summary(),
        "NumPy": lambda: numpy_summary(x, t, K),
    }
    try:
        import scipy.special  # noqa: F401
        contenders["SciPy"] = lambda: scipy_summary(x, t)
    except ImportError:
        pass
    if "torch" in PEERS:
        contenders["PyTorch"] = torch_summary_fn(PEERS["torch"], x, t)
    notes = []
    for label, fn in contenders.items():
        got = fn()
        for key in ("loss", "accuracy", "top_k_accuracy", "mean_entropy", "ece"):
            if not np.isclose(got[key], want[key], rtol=1e-4, atol=1e-5):
                notes.append(f"WARNING: {label}'s {key} {got[key]} differs from xent_fast's "
                             f"{want[key]}")
    times = {}
    with LoadMonitor() as load:
        for label, fn in contenders.items():
            slow = label in ("NumPy", "SciPy")
            times[label] = time_calls(fn, max(1, repeat // 3) if slow else repeat)[0]
    if load.busy:
        notes.append(f"machine busy: other processes used {load.share:.0%} of the CPUs")
    med = {label: statistics.median(v) for label, v in times.items()}
    return {"case": name, "shape": f"{shape[0]}×{shape[1]} float32", "rows": shape[0],
            "bytes": x.nbytes, "median_s": med, "raw_s": times, "notes": notes}


# Runs `python -m xent_fast ARGS` and prints the process's peak RSS (VmHWM, kB) last on
# stderr. ru_maxrss would not do: Linux keeps it across exec, so a child forked from this
# big process (PyTorch and JAX are loaded) would report this process's size.
PEAK_WRAPPER = """import runpy, sys
try:
    runpy.run_module("xent_fast", run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as f:
        print(f.read().split("VmHWM:")[1].split()[0], file=sys.stderr)
"""


def _peak_rss(args: list[str], cwd: str) -> tuple[int, float, float, str]:
    """(exit code, peak RSS in bytes, wall seconds, stdout) of `python -m xent_fast ARGS`."""
    env = dict(os.environ)      # the child imports the xent_fast this process imported
    root = str(Path(xf.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *args], cwd=cwd, env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t0
    return res.returncode, int(res.stderr.split()[-1]) * 1024, wall, res.stdout


def cli_case(gb: float, classes: int = 1000) -> dict:
    """Write a logits file of `gb` GB (random float32, made chunk by chunk) and its
    targets, then time `xent-fast score --json` on it in a child process."""
    rows = int(gb * 1e9 / (4 * classes))
    tmp = tempfile.mkdtemp(prefix="xent_fast_bench_", dir=os.environ.get("XENT_FAST_BENCH_DIR"))
    x_path, t_path = os.path.join(tmp, "x.npy"), os.path.join(tmp, "t.npy")
    try:
        header = {"descr": "<f4", "fortran_order": False, "shape": (rows, classes)}
        block = 50_000
        targets = np.empty(rows, np.int64)
        with open(x_path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            for a in range(0, rows, block):
                x, t = synthetic_batch(min(block, rows - a), classes, seed=a)
                f.write(x.tobytes())
                targets[a:a + len(t)] = t
        np.save(t_path, targets)
        size = os.path.getsize(x_path)
        code, base, _, _ = _peak_rss(["config"], tmp)
        code, peak, wall, out = _peak_rss(["score", "x.npy", "t.npy", "--json"], tmp)
        summary = json.loads(out) if code == 0 else None
        return {"rows": rows, "classes": classes, "file_bytes": size, "exit_code": code,
                "peak_rss_bytes": peak, "baseline_rss_bytes": base, "wall_s": wall,
                "summary": summary}
    finally:
        for p in (x_path, t_path):
            if os.path.exists(p):
                os.unlink(p)
        os.rmdir(tmp)


def report(results: list[dict], cli: dict | None, info: dict, mode: str, repeat: int) -> str:
    lines = [f"# xent_fast scoring benchmark ({mode} run)", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [f"- timing: median of {repeat} calls per contender after a warm-up "
              f"(NumPy and SciPy: {max(1, repeat // 3)}); every contender computes the "
              "summary (mean loss, accuracy, top-5 accuracy, mean entropy, ECE) of the same "
              "float32 logits", ""]
    head = "| case | shape | contender | time | rows/s | GB/s | xent_fast speed-up |"
    lines += [head, "|---|---|---|---:|---:|---:|---:|"]
    for r in results:
        t_xf = r["median_s"]["xent_fast"]
        for i, (label, t) in enumerate(r["median_s"].items()):
            first = [r["case"], r["shape"]] if i == 0 else ["", ""]
            speed = "" if label == "xent_fast" else f"{t / t_xf:.1f}×"
            lines.append(f"| {' | '.join(first)} | {label} | {fmt_time(t)} | "
                         f"{r['rows'] / t:,.0f} | {r['bytes'] / t / 1e9:.2f} | {speed} |")
    notes = [f"- {r['case']}: {n}" for r in results for n in r["notes"]]
    if cli:
        lines += ["", "## The command line on a multi-GB file", ""]
        if cli["exit_code"] != 0:
            lines.append(f"`xent-fast score` FAILED with exit code {cli['exit_code']}")
        else:
            gb = cli["file_bytes"] / 1e9
            lines += [
                "| file | rows × classes | wall time | rows/s | GB/s | peak RSS | "
                "RSS of `xent-fast config` |",
                "|---:|---|---:|---:|---:|---:|---:|",
                f"| {gb:.2f} GB | {cli['rows']:,} × {cli['classes']:,} float32 | "
                f"{cli['wall_s']:.2f} s | {cli['rows'] / cli['wall_s']:,.0f} | "
                f"{gb / cli['wall_s']:.2f} | {cli['peak_rss_bytes'] / 2**20:,.0f} MiB | "
                f"{cli['baseline_rss_bytes'] / 2**20:,.0f} MiB |",
                "",
                "`xent-fast score x.npy t.npy --json` in a child process (start-up and imports "
                "included); peak RSS is the child's VmHWM. The file was just written, so it "
                "is read from the page cache: from a cold disk the time is the disk's."]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small shapes, 3 repeats, 0.25 GB file")
    p.add_argument("--repeat", type=int, help="timed calls per contender (default 9, quick 3)")
    p.add_argument("--cli-gb", type=float, help="size of the command line's file in GB "
                   "(default 4, quick 0.25; 0: skip)")
    p.add_argument("--cases", help=f"comma-separated subset of {', '.join(SHAPES)}")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 9)
    names = args.cases.split(",") if args.cases else list(SHAPES)
    mode = "quick" if args.quick else "full"
    info = machine_info()
    results = []
    for name in names:
        shape = SHAPES[name][1 if args.quick else 0]
        print(f"[{name} {shape}]", file=sys.stderr, flush=True)
        results.append(throughput_case(name, shape, repeat))
    gb = args.cli_gb if args.cli_gb is not None else (0.25 if args.quick else 4.0)
    cli = None
    if gb > 0:
        print(f"[command line, {gb} GB file]", file=sys.stderr, flush=True)
        cli = cli_case(gb)
    text = report(results, cli, info, mode, repeat)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "score.md").write_text(text + "\n")
    (args.out / "score.json").write_text(json.dumps(
        {"mode": mode, "repeat": repeat, "machine": info, "cases": results, "cli": cli},
        indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
