"""A PyTorch training step with PyTorch's loss vs xent_fast.torch's, in one process.

The step is a language-model head: hidden states (N, H) -> Linear(H, V) -> cross-entropy
-> backward -> SGD update. Times are medians of whole steps; "loss part" is the step minus
the same step with the loss replaced by a plain sum of the logits (whose backward is a
constant fill), i.e. what the loss's forward and backward cost inside the step.

    python bench/train_step_torch.py            # about a minute
    python bench/train_step_torch.py --quick    # seconds

Writes the table to bench/results/train_step_torch.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import LoadMonitor, time_calls  # noqa: E402  (the shared timing discipline)

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    sys.exit("this benchmark needs PyTorch: pip install torch")

import xent_fast  # noqa: E402
import xent_fast.torch as xft  # noqa: E402

CONFIGS = {  # name: (rows N, hidden H, vocabulary V), full and quick
    "LM head 2048x512 -> 32000": ((2048, 512, 32000), (256, 128, 8000)),
    "classifier 65536x128 -> 1000": ((65536, 128, 1000), (4096, 64, 1000)),
}


def step_fn(head: torch.nn.Linear, h: torch.Tensor, t: torch.Tensor, loss_fn):
    opt = torch.optim.SGD(head.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(head(h), t)
        loss.backward()
        opt.step()
        return loss

    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeat", type=int, default=None)
    args = p.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 9)

    losses = {
        "PyTorch F.cross_entropy": lambda z, y: F.cross_entropy(z, y),
        "xent_fast.torch": lambda z, y: xft.cross_entropy(z, y),
        "xent_fast.torch, inplace": lambda z, y: xft.cross_entropy(z, y, inplace=True),
        "(no loss: logits.sum())": lambda z, y: z.sum(),
    }
    lines = [
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), xent_fast "
        f"{xent_fast.__version__} (SIMD {xent_fast.config()['simd']}), float32, "
        f"median of {repeat} steps",
        "",
        "| step | config | step time | loss part | loss part vs PyTorch | step vs PyTorch |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, (full, quick) in CONFIGS.items():
        n, hdim, v = quick if args.quick else full
        g = torch.Generator().manual_seed(0)
        h = torch.randn(n, hdim, generator=g)
        t = torch.randint(0, v, (n,), generator=g)
        torch.manual_seed(0)
        head = torch.nn.Linear(hdim, v)
        med = {}
        with LoadMonitor() as load:
            for label, fn in losses.items():
                times, _ = time_calls(step_fn(head, h, t, fn), repeat)
                med[label] = statistics.median(times)
        base = med["(no loss: logits.sum())"]
        ref_step = med["PyTorch F.cross_entropy"]
        ref_loss = ref_step - base
        cfg = f"{n}x{hdim} -> {v}" if args.quick else name
        for label in losses:
            if label.startswith("("):
                lines.append(f"| {label} | {cfg} | {med[label] * 1e3:.1f} ms | | | |")
                continue
            part = med[label] - base
            lines.append(
                f"| {label} | {cfg} | {med[label] * 1e3:.1f} ms | {part * 1e3:.1f} ms | "
                f"{ref_loss / part:.1f}x | {ref_step / med[label]:.2f}x |"
                if part > 0 else
                f"| {label} | {cfg} | {med[label] * 1e3:.1f} ms | ~0 | | "
                f"{ref_step / med[label]:.2f}x |")
        if load.busy:
            lines.append(f"| (other processes used {load.share:.0%} of the CPUs meanwhile: "
                         "treat these rows with care) | | | | | |")
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "train_step_torch.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
