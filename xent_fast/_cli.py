"""The ``xent-fast`` command (also ``python -m xent_fast``): ``score``, ``demo``, ``config``.

``xent-fast score LOGITS.npy TARGETS.npy`` streams the files in row chunks (see
``_io``), so the resident memory is that of one chunk whatever the files' size; the
totals of the chunks add up exactly, so the summary is the one a single call on the
whole arrays would give.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import stat
import sys
import threading
import time
from typing import Any, Sequence

import numpy as np

from ._io import (ArrayFile, InputError, NpzWriter, StagedOutput, first_invalid_target,
                  split_spec)
from ._score import PER_ROW, ScoreTotals, score, score_totals
from ._validation import position_of

LOGITS_KEYS = ("logits",)
TARGET_KEYS = ("target", "targets", "labels", "label", "y")
CHUNK_BYTES = 32 * 2**20          # default chunk: about 32 MiB of logits
EXIT_INPUT = 1                    # a problem with the files or their contents
EXIT_USAGE = 2                    # argparse's code for a bad command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xent-fast",
        description="Fast softmax cross-entropy: score a classifier's logits, run the "
                    "demo, or show the build configuration. Without a command: the demo.")
    from ._config import __version__
    p.add_argument("--version", action="version", version=f"xent-fast {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{score,demo,config}")

    s = sub.add_parser(
        "score", help="score logits against targets from .npy/.npz files",
        description="Score LOGITS (..., C) against TARGETS: class indices of shape (...) "
                    "or probabilities of shape (..., C). The files are read in chunks "
                    "of rows, so they may be larger than memory. An .npz "
                    "archive is named FILE.npz:ARRAY; without :ARRAY the array 'logits' "
                    "(for LOGITS) or 'target', 'targets', 'labels', 'label' or 'y' (for "
                    "TARGETS) is taken, or the only one; TARGETS may be left out when LOGITS "
                    "is an .npz that holds both.")
    s.add_argument("logits", metavar="LOGITS", help="logits: .npy file, or FILE.npz[:ARRAY]")
    s.add_argument("targets", metavar="TARGETS", nargs="?",
                   help="targets: .npy file, or FILE.npz[:ARRAY]")
    s.add_argument("--k", "--top-k", dest="k", type=int, default=5,
                   help="k of the top-k accuracy (default 5)")
    s.add_argument("--ignore-index", type=int, default=-100,
                   help="class-index target of rows left out (default -100)")
    s.add_argument("--chunk-rows", type=int, metavar="N",
                   help="rows per chunk (default: about 32 MiB of logits)")
    s.add_argument("--threads", type=int, metavar="N",
                   help="OpenMP threads (default: OMP_NUM_THREADS or all cores; -1: all cores)")
    s.add_argument("--json", action="store_true",
                   help="print the summary as JSON on stdout (a NaN or infinite value is "
                        "written NaN or Infinity, as Python's json module does)")
    s.add_argument("--per-row", metavar="OUT.npz",
                   help="save the per-row arrays (" + ", ".join(PER_ROW) + ")")
    s.add_argument("--plot", metavar="RELIABILITY.png",
                   help="draw a reliability diagram (needs matplotlib); with "
                        "--fit-temperature, before and after side by side")
    s.add_argument("--ece-bins", type=int, default=15, metavar="N",
                   help="equal-width confidence bins of the ECE and the diagram (default 15)")
    s.add_argument("--fit-temperature", action="store_true",
                   help="also fit the temperature T of temperature scaling (class-index "
                        "targets) and report the loss, ECE and Brier score before and "
                        "after; with --json the keys 'temperature' and 'calibrated' (the "
                        "summary at T). --per-row saves the rows at T = 1")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    d = sub.add_parser("demo", help="textbook examples of surprisal, entropy and "
                                    "cross-entropy, then a synthetic batch scored and timed "
                                    "against NumPy (the default)")
    d.add_argument("--rows", type=int, default=20000, help="rows of the synthetic batch")
    d.add_argument("--classes", type=int, default=1000, help="classes of the synthetic batch")
    d.add_argument("--k", type=int, default=5, help="k of the top-k accuracy (default 5)")
    d.add_argument("--seed", type=int, default=0, help="random seed of the batch")
    d.add_argument("--threads", type=int, metavar="N", help="OpenMP threads")

    sub.add_parser("config", help="the build configuration (what show_config() prints)")
    return p


class _Signalled(KeyboardInterrupt):
    """Raised by the handler of every signal whose default is to end the process (bar
    SIGKILL, which cannot be caught), so that a kill unwinds through the same cleanup as
    Ctrl-C: no partial output is left behind."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# SIGPIPE is not here: Python ignores it and reports a closed pipe as BrokenPipeError.
_SIGNALS = tuple(getattr(signal, n) for n in (
    "SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM",
    "SIGPROF", "SIGXCPU", "SIGXFSZ") if hasattr(signal, n))


def _on_signal(signum: int, frame: Any) -> None:
    for s in _SIGNALS:          # a second signal must not cut the cleanup short
        signal.signal(s, signal.SIG_IGN)
    raise _Signalled(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    saved = {}
    if threading.current_thread() is threading.main_thread():
        for s in _SIGNALS:
            if signal.getsignal(s) is not signal.SIG_IGN:    # e.g. SIGHUP under nohup
                saved[s] = signal.signal(s, _on_signal)
    try:
        code = _run(args)
        try:
            sys.stdout.flush()        # inside the try: a closed pipe is reported here
        except BrokenPipeError:
            _quiet_stdout()
        return code
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def _quiet_stdout() -> None:
    """The reader of stdout went away (``| head -1``): that is not an error. Point
    stdout at /dev/null so that the interpreter's own flush at exit stays quiet too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):      # stdout without a file descriptor (tests)
        pass


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "score":
            return _score(args)
        if args.command == "config":
            from ._config import show_config
            show_config()
            return 0
        from ._demo import run_demo
        if args.command is None:
            run_demo()
            return 0
        if args.rows < 1 or args.classes < 1:
            _error("--rows and --classes must be at least 1")
            return EXIT_USAGE
        run_demo(args.rows, args.classes, args.k, args.seed, args.threads)
        return 0
    except InputError as exc:
        _error(str(exc))
        return EXIT_INPUT
    except (ValueError, TypeError) as exc:    # bad option values, bad targets
        _error(str(exc))
        return EXIT_INPUT
    except BrokenPipeError:                    # e.g. piped into head
        _quiet_stdout()
        return 0
    except OSError as exc:                     # unreadable or unwritable files
        _error(str(exc))
        return EXIT_INPUT
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        _error("interrupted" if signum == signal.SIGINT
               else f"terminated by {signal.Signals(signum).name}")
        return 128 + signum
    except Exception as exc:                   # whatever a hostile file may still provoke
        _error(f"{type(exc).__name__}: {exc}")
        return EXIT_INPUT


def _error(message: str) -> None:
    print(f"xent-fast: error: {message}", file=sys.stderr)


# --- score -------------------------------------------------------------------------------

def _open_inputs(args: argparse.Namespace) -> tuple[ArrayFile, ArrayFile]:
    logits = ArrayFile(args.logits, "LOGITS", LOGITS_KEYS)
    try:
        if args.targets is None:
            path, _ = split_spec(args.logits)
            if not path.lower().endswith(".npz"):
                raise InputError("TARGETS is missing (it may be left out only when LOGITS "
                                 "is an .npz archive that holds the targets too)")
            target = ArrayFile(path, "TARGETS", TARGET_KEYS)
            if target.name == logits.name:       # the archive's only array: not targets
                target.close()
                raise InputError(f"TARGETS is missing: {path} holds no targets array "
                                 f"(one of {list(TARGET_KEYS)}) besides the logits")
        else:
            target = ArrayFile(args.targets, "TARGETS", TARGET_KEYS)
    except BaseException:
        logits.close()
        raise
    return logits, target


def _check_inputs(logits: ArrayFile, target: ArrayFile) -> bool:
    """Raise InputError on wrong dtypes or shapes; return True for class indices."""
    if logits.dtype.kind != "f" or logits.dtype.itemsize not in (2, 4, 8):
        raise InputError(f"LOGITS {logits.name} has dtype {logits.dtype}: logits must be "
                         "float16, float32 or float64")
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise InputError(f"LOGITS {logits.name} has shape {logits.shape}: it needs a class "
                         "axis (the last) of length >= 1")
    batch = logits.shape[:-1]
    kind = target.dtype.kind
    if kind in "iu":
        if target.shape != batch:
            raise InputError(f"TARGETS {target.name} has shape {target.shape}, but class "
                             f"indices for LOGITS of shape {logits.shape} need shape {batch}")
        return True
    if kind == "f":
        if target.shape != logits.shape:
            hint = (" (class indices must be integers)" if target.shape == batch else "")
            raise InputError(f"TARGETS {target.name} has dtype {target.dtype} and shape "
                             f"{target.shape}: probabilities need the logits' shape "
                             f"{logits.shape}{hint}")
        return False
    raise InputError(f"TARGETS {target.name} has dtype {target.dtype}: targets must be "
                     "integer class indices or floating probabilities")


def _progress(total: int, quiet: bool) -> Any:
    """A tqdm progress bar on stderr; a stand-in that does nothing when it is hidden
    (--quiet, stderr not a terminal) or tqdm is not installed."""
    if quiet or not sys.stderr.isatty():
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        print("(install tqdm for a progress bar: pip install 'xent_fast[cli]')",
              file=sys.stderr)
        return _NoProgress()
    return tqdm(total=total, unit="rows", unit_scale=True, file=sys.stderr,
                desc="scoring", dynamic_ncols=True)


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bad_target_message(t: np.ndarray, n_classes: int, ignore: int, row0: int,
                        batch: tuple[int, ...], error: ValueError) -> str:
    """The kernel's message with the position in the whole file (not in the chunk that
    starts at flat row ``row0``) and the file's own value."""
    i = first_invalid_target(t, n_classes, ignore)
    if i is None:
        return f"TARGETS: {error}"
    return (f"TARGETS{position_of(row0 + i, batch)} = {t.reshape(-1)[i]} is not a valid "
            f"class index: it must be in [0, {n_classes}) or equal --ignore-index ({ignore})")


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)         # hard links: same device and inode
    except OSError:                           # one of them does not exist
        return False


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, an output that is, or links to, an input or the other
    output, or that is not a regular file, or that has no folder to go to."""
    inputs = [("LOGITS", split_spec(args.logits)[0])]
    if args.targets is not None:
        inputs.append(("TARGETS", split_spec(args.targets)[0]))
    for option, out in (("--per-row", args.per_row), ("--plot", args.plot)):
        if not out:
            continue
        if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
            raise InputError(f"{option}: the folder of {out} does not exist")
        try:
            mode = os.stat(out).st_mode
        except OSError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            raise InputError(f"{option} {out} exists and is not a regular file")
        for role, path in inputs:
            if _same_file(out, path):
                what = "an input" if role in ("LOGITS", "TARGETS") else "the other output"
                raise InputError(f"{option} {out} is the same file as {role} {path}: "
                                 f"refusing to write over {what}")
        inputs.append((option, out))


def _plot_format(path: str) -> str:
    """The image format of ``path``'s extension, refused unless matplotlib writes it."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise InputError("--plot needs matplotlib, which is not installed: "
                         "pip install matplotlib (or pip install 'xent_fast[plot]')") from None
    ext = os.path.splitext(path)[1][1:].lower()
    known = FigureCanvasBase.get_supported_filetypes()
    if ext not in known:
        raise InputError(f"--plot {path}: the extension must name an image format "
                         f"matplotlib writes ({', '.join(sorted(known))})")
    return ext


def _score(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise InputError(f"--k must be at least 1, got {args.k}")
    if args.chunk_rows is not None and args.chunk_rows < 1:
        raise InputError(f"--chunk-rows must be at least 1, got {args.chunk_rows}")
    if args.threads is not None and (args.threads == 0 or args.threads < -1):
        raise InputError(f"--threads must be a positive count or -1, got {args.threads}")
    if not 1 <= args.ece_bins <= 10**6:
        raise InputError(f"--ece-bins must be in [1, 1000000], got {args.ece_bins}")
    plot_format = _plot_format(args.plot) if args.plot else None
    _check_outputs(args)

    logits, target = _open_inputs(args)
    writer = plot = None
    try:
        by_index = _check_inputs(logits, target)
        if args.fit_temperature and not by_index:
            raise InputError("--fit-temperature needs class-index targets, and TARGETS "
                             f"{target.name} holds probabilities")
        n_classes = logits.shape[-1]
        batch = logits.shape[:-1]
        n_rows = math.prod(batch)
        comp = np.dtype(np.float32) if logits.dtype.itemsize == 2 else logits.dtype
        chunk = args.chunk_rows or max(1, CHUNK_BYTES // (n_classes * comp.itemsize))
        t_shape = () if by_index else (n_classes,)
        if args.plot:
            plot = StagedOutput(args.plot)
        if args.per_row:
            writer = NpzWriter(args.per_row, {
                "loss": (batch, comp), "pred": (batch, np.dtype(np.int64)),
                "target_prob": (batch, comp), "in_top_k": (batch, np.dtype(np.bool_)),
                "entropy": (batch, comp), "confidence": (batch, comp),
                "counted": (batch, np.dtype(np.bool_))})

        def chunks() -> Any:
            for start in range(0, n_rows, chunk):
                stop = min(start + chunk, n_rows)
                yield (start, stop, logits.rows(start, stop, (n_classes,)),
                       target.rows(start, stop, t_shape))

        totals = ScoreTotals(args.k, args.ece_bins)
        bar = _progress(n_rows, args.quiet)
        t0 = time.perf_counter()
        try:
            for start, stop, x, t in chunks():
                try:
                    if writer is not None:
                        s = score(x, t, k=args.k, ignore_index=args.ignore_index,
                                  ece_bins=args.ece_bins, n_threads=args.threads)
                        writer.write(s.per_row())
                        part = s.totals
                    else:
                        part = score_totals(x, t, k=args.k, ignore_index=args.ignore_index,
                                            ece_bins=args.ece_bins, n_threads=args.threads)
                except ValueError as exc:
                    if by_index and "is not a valid class index" in str(exc):
                        raise InputError(_bad_target_message(
                            t, n_classes, args.ignore_index, start, batch, exc)) from None
                    raise
                totals += part
                bar.update(stop - start)
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        summary = totals.summary()
        fit: tuple[float, int, ScoreTotals] | None = None
        if args.fit_temperature:
            fit = _fit_temperature(args, chunks)
        logits.close()
        target.close()
        # Both outputs are made in full first, then moved into place together.
        if writer is not None:
            writer.close()
        if plot is not None:
            draw_reliability(totals, str(plot.temp), title=os.path.basename(logits.name),
                             format=plot_format, after=None if fit is None else fit[2],
                             temperature=None if fit is None else fit[0])
        if writer is not None:
            writer.commit()
            writer = None
        if plot is not None:
            plot.commit()
            plot = None
    finally:
        for out in (writer, plot):
            if out is not None:
                out.abort()
        logits.close()
        target.close()

    if summary["nonfinite_rows"]:
        print(f"xent-fast: warning: {summary['nonfinite_rows']:,} rows have logits without "
              "a softmax (a NaN, a +inf, or only -inf); they are left out of every figure",
              file=sys.stderr)
    if args.json:
        out = dict(summary)
        if fit is not None:
            out["temperature"] = fit[0]
            out["calibrated"] = fit[2].summary()
        print(json.dumps(out))
    else:
        print(_table(args, logits, target, n_rows, summary, seconds))
        if fit is not None:
            print(_fit_table(fit[0], fit[1], summary, fit[2].summary()))
        if args.plot:
            print(f"reliability diagram: {args.plot}")
    return 0


def _fit_temperature(args: argparse.Namespace,
                     chunks: Any) -> tuple[float, int, ScoreTotals]:
    """Fit T over the whole file (each Newton step one streamed pass), then score at T:
    (T, passes, the totals at T)."""
    from ._score import _newton_inverse_temperature, _temperature_pass, _TemperatureSums

    def sums_at(temperature: float) -> _TemperatureSums:
        total = _TemperatureSums(0, 0, 0.0, 0.0, 0.0)
        for _, _, x, t in chunks():
            total += _temperature_pass(x, t, temperature, args.ignore_index, args.threads,
                                       fit=True)
        return total

    s, passes = _newton_inverse_temperature(sums_at, rtol=1e-6)
    temperature = 1.0 / s
    after = ScoreTotals(args.k, args.ece_bins)
    for _, _, x, t in chunks():
        after += score_totals(x, t, k=args.k, ignore_index=args.ignore_index,
                              temperature=temperature, ece_bins=args.ece_bins,
                              n_threads=args.threads)
    return temperature, passes, after


def _fit_table(temperature: float, passes: int, before: dict[str, Any],
               after: dict[str, Any]) -> str:
    lines = ["", f"  temperature scaling: T = {temperature:.6g} (fitted in {passes} passes; "
                 "predictions unchanged)",
             f"  {'':<20}{'before':>12}{'after':>12}"]
    for key, label in (("loss", "loss (nats)"), ("ece", f"ECE ({before['ece_bins']} bins)"),
                       ("brier", "Brier score"), ("mean_entropy", "mean entropy")):
        lines.append(f"  {label:<20}{before[key]:>12.6f}{after[key]:>12.6f}")
    return "\n".join(lines)


def _table(args: argparse.Namespace, logits: ArrayFile, target: ArrayFile, n_rows: int,
           s: dict[str, Any], seconds: float) -> str:
    shape = " x ".join(f"{d:,}" for d in logits.shape)
    ignored = n_rows - s["rows"] - s["nonfinite_rows"]
    notes = ([f"{ignored:,} ignored"] if ignored else []) + (
        [f"{s['nonfinite_rows']:,} without a softmax"] if s["nonfinite_rows"] else [])
    rows = f"{s['rows']:,}" + (f" (of {n_rows:,}; {', '.join(notes)})" if notes else "")
    gb = n_rows * logits.shape[-1] * logits.dtype.itemsize / 1e9
    speed = (f"{seconds:.2f} s, {n_rows / seconds:,.0f} rows/s, {gb / seconds:.2f} GB/s"
             if seconds > 0 else f"{seconds:.2f} s")
    lines = [
        f"logits   {logits.name}  ({shape}, {logits.dtype})",
        f"targets  {target.name}  ({' x '.join(f'{d:,}' for d in target.shape) or 'scalar'}, "
        f"{target.dtype})",
        "",
        f"  {'rows':<20}{rows}",
        f"  {'loss':<20}{s['loss']:.6f} nats  ({s['bits']:.6f} bits)",
        f"  {'perplexity':<20}{s['perplexity']:.6g}",
        f"  {'accuracy':<20}{s['accuracy']:.6f}",
        f"  {'top-' + str(s['k']) + ' accuracy':<20}{s['top_k_accuracy']:.6f}",
        f"  {'mean entropy':<20}{s['mean_entropy']:.6f} nats",
        f"  {'ECE (' + str(s['ece_bins']) + ' bins)':<20}{s['ece']:.6f}",
        f"  {'Brier score':<20}{s['brier']:.6f}",
        f"  {'macro F1':<20}{s['macro_f1']:.6f}",
        "",
        f"  scored in {speed}",
    ]
    return "\n".join(lines)


# Bins with fewer rows than this get no bar: their accuracy is a few coin flips, not a
# measurement, and a full bar would look as sure as a bin of thousands. They are drawn
# as an open dot with its 95% (Wilson) interval and the count.
SPARSE_BIN_ROWS = 10


def draw_reliability(totals: ScoreTotals, path: str, title: str = "",
                     format: str | None = None, after: ScoreTotals | None = None,
                     temperature: float | None = None) -> None:
    """Draw a reliability diagram into an image file.

    Per confidence bin, the accuracy (a bar) and the mean confidence (a dot) against the
    diagonal of perfect calibration; under it, the rows per bin. Bins of fewer than
    ``SPARSE_BIN_ROWS`` rows are drawn hollow, with their count. With ``after`` (the
    totals at a fitted ``temperature``) the diagrams before and after temperature
    scaling are drawn side by side.

    Parameters
    ----------
    totals : ScoreTotals
        The totals of the scored rows.
    path : str
        The image file to write.
    title : str, optional
        The title above the diagram.
    format : str, optional
        The image format (``"png"``, ``"pdf"``, ...); by default that of ``path``'s
        extension.
    after : ScoreTotals, optional
        The totals of the same rows scored at ``temperature``.
    temperature : float, optional
        The fitted temperature, named in the title of the second diagram.

    Examples
    --------
    >>> import numpy as np, xent_fast as xf
    >>> from xent_fast._cli import draw_reliability
    >>> rng = np.random.default_rng(0)
    >>> x, t = 3 * rng.normal(size=(2000, 10)), rng.integers(0, 10, 2000)
    >>> draw_reliability(xf.score(x, t).totals, "/tmp/reliability.png")  # doctest: +SKIP
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    panels = [(totals, "before temperature scaling" if after is not None else "")]
    if after is not None:
        panels.append((after, f"after: T = {temperature:.4g}" if temperature else "after"))
    height = 6.6 if len(panels) > 1 else 7.2           # one column: the legend in 4 rows
    fig, axes = plt.subplots(2, len(panels), figsize=(5.2 * len(panels), height), dpi=110,
                             sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.1]})
    for col, (tot, label) in enumerate(panels):
        _reliability_panel(axes[0, col], axes[1, col], tot, label)
    handles = [
        Patch(facecolor="#4c72b0", edgecolor="black", label="accuracy of a bin"),
        plt.Line2D([], [], marker="o", markerfacecolor="white", markeredgecolor="#4c72b0",
                   color="#9bb0d6", label=f"bin of < {SPARSE_BIN_ROWS} rows: accuracy, "
                                          "95% interval, count"),
        plt.Line2D([], [], marker="D", markersize=3.5, linestyle="none", color="#c44e52",
                   label="(mean confidence, accuracy) of a bin"),
        plt.Line2D([], [], linestyle="--", color="gray", label="perfect calibration"),
    ]
    if title:
        fig.suptitle(title, fontsize=10)
    # The legend goes below every axes, so it can never hide a bar.
    two = len(panels) > 1
    fig.legend(handles=handles, loc="lower center", ncol=2 if two else 1, fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.08 if two else 0.15, 1, 0.97 if title else 1))
    fig.savefig(path, format=format)
    plt.close(fig)


def _reliability_panel(top: Any, bottom: Any, totals: ScoreTotals, label: str) -> None:
    r = totals.reliability()
    s = totals.summary()
    edges, rows = r["edges"], r["rows"]
    centers = (edges[:-1] + edges[1:]) / 2
    width = (edges[1] - edges[0]) * 0.92
    full = rows >= SPARSE_BIN_ROWS
    sparse = (rows > 0) & ~full
    acc, conf = r["accuracy"], r["confidence"]
    top.bar(centers[full], acc[full], width=width, color="#4c72b0", edgecolor="black",
            linewidth=0.5)
    n = rows[sparse].astype(np.float64)
    z = 1.96
    centre = (acc[sparse] + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(acc[sparse] * (1 - acc[sparse]) / n + z * z / (4 * n * n))
    top.errorbar(centers[sparse], acc[sparse],
                 yerr=[acc[sparse] - (centre - half), centre + half - acc[sparse]],
                 fmt="o", markerfacecolor="white", markeredgecolor="#4c72b0",
                 ecolor="#9bb0d6", elinewidth=1, capsize=2, markersize=5, clip_on=False,
                 zorder=3)
    for c, k in zip(centers[sparse], rows[sparse]):
        top.annotate(f"n={k}", (c, 0), xytext=(0, 2), textcoords="offset points",
                     ha="center", va="bottom", fontsize=6.5, color="#333333")
    filled = rows > 0
    top.plot(conf[filled], acc[filled], "D", color="#c44e52", markersize=3.5,
             clip_on=False, zorder=4)
    top.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, zorder=3)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.08)           # room above 1.0: a bar or dot at 1 is not cut off
    top.set_yticks(np.linspace(0, 1, 6))
    top.set_ylabel("accuracy")
    head = f"{label}\n" if label else ""
    if math.isnan(s["ece"]):
        top.set_title(head.strip(), fontsize=9)
    else:
        top.set_title(f"{head}ECE {s['ece']:.4f}, loss {s['loss']:.4f}, Brier "
                      f"{s['brier']:.4f}\naccuracy {s['accuracy']:.4f}, {s['rows']:,} rows",
                      fontsize=8.5)
    bottom.bar(centers, rows, width=width, color="#8c8c8c")
    bottom.set_yscale("symlog", linthresh=1)      # bins of 1 row and of 10^6 both show
    bottom.set_ylim(0, max(10, int(rows.max(initial=0))) * 3)
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (largest softmax probability)")
    bottom.set_ylabel("rows per bin")
