"""The xent-fast command line: score (files in, table / JSON / per-row file / plot out,
streaming with bounded memory), demo and config, and its error messages."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xent_fast as xf
from xent_fast import _cli, _demo

# the child processes import the same xent_fast as this test (source tree or installed)
PKG_ROOT = str(Path(xf.__file__).resolve().parent.parent)


def _child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


@pytest.fixture
def files(tmp_path, rng):
    x = (rng.standard_normal((1000, 23)) * 3).astype(np.float32)
    t = rng.integers(0, 23, 1000)
    t[::13] = -100
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "t.npy", t)
    return tmp_path, x, t


def run(capsys, *argv):
    code = _cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_summary_equals_one_call_for_any_chunking(files, capsys):
    d, x, t = files
    want = xf.score(x, t, k=3).summary()
    for chunk in (1000, 7, 1, 999):
        code, out, err = run(capsys, "score", d / "x.npy", d / "t.npy", "--k", 3, "--json",
                             "--chunk-rows", chunk)
        assert code == 0 and err == ""          # stderr is no terminal: no progress bar
        assert json.loads(out) == want


def test_table_output(files, capsys):
    d, x, t = files
    s = xf.score(x, t).summary()
    code, out, _ = run(capsys, "score", d / "x.npy", d / "t.npy")
    assert code == 0
    assert f"{s['rows']:,} (of 1,000; {1000 - s['rows']} ignored)" in out
    assert f"{s['loss']:.6f} nats" in out and f"({s['bits']:.6f} bits)" in out
    assert f"{s['top_k_accuracy']:.6f}" in out and f"{s['ece']:.6f}" in out
    assert "rows/s" in out and "GB/s" in out


def test_per_row_file_reads_back(files, capsys):
    d, x, t = files
    code, _, _ = run(capsys, "score", d / "x.npy", d / "t.npy", "--per-row", d / "rows.npz",
                     "--chunk-rows", 64, "--json")
    assert code == 0
    s = xf.score(x, t)
    with np.load(d / "rows.npz") as saved:
        assert sorted(saved.files) == sorted(xf._score.PER_ROW)
        for name in saved.files:
            np.testing.assert_array_equal(saved[name], getattr(s, name))
            assert saved[name].dtype == getattr(s, name).dtype
    assert not [p for p in d.iterdir() if p.name.startswith(".xent_fast_")]  # temp files gone


def test_plot_file_is_created(files, capsys):
    pytest.importorskip("matplotlib")
    d, _, _ = files
    code, out, _ = run(capsys, "score", d / "x.npy", d / "t.npy", "--plot", d / "rel.png")
    assert code == 0 and "reliability diagram" in out
    assert (d / "rel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_so(files, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import fails
    d, _, _ = files
    code, out, err = run(capsys, "score", d / "x.npy", d / "t.npy", "--plot", d / "rel.png")
    assert code == 1 and out == ""
    assert "--plot needs matplotlib" in err and "pip install" in err
    assert not (d / "rel.png").exists()


def test_npz_inputs_stored_compressed_and_named(files, capsys):
    d, x, t = files
    want = xf.score(x, t).summary()
    np.savez(d / "both.npz", logits=x, target=t)
    np.savez_compressed(d / "packed.npz", scores=x, labels=t, other=np.zeros(3))
    for argv in (["both.npz"], ["both.npz:logits", "both.npz:target"],
                 ["packed.npz:scores", "packed.npz"], ["packed.npz:scores", "t.npy"]):
        code, out, err = run(capsys, "score", *[d / a for a in argv], "--json",
                             "--chunk-rows", 300)
        assert code == 0, err
        assert json.loads(out) == want


def test_probability_targets_nd_logits_and_float16(tmp_path, rng, capsys):
    x = rng.standard_normal((4, 25, 6)).astype(np.float16)
    y = xf.softmax(rng.standard_normal((4, 25, 6)))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    code, out, _ = run(capsys, "score", tmp_path / "x.npy", tmp_path / "y.npy", "--json",
                       "--chunk-rows", 9, "--per-row", tmp_path / "r.npz")
    assert code == 0
    s = xf.score(x, y)
    assert json.loads(out) == s.summary()
    with np.load(tmp_path / "r.npz") as saved:
        assert saved["loss"].shape == (4, 25) and saved["loss"].dtype == np.float32
        np.testing.assert_array_equal(saved["entropy"], s.entropy)


@pytest.mark.parametrize("make, argv, message", [
    (None, ["missing.npy", "t.npy"], "LOGITS file not found"),
    (None, ["x.npy", "missing.npy"], "TARGETS file not found"),
    (None, ["x.npy"], "TARGETS is missing"),
    (lambda d, x, t: np.save(d / "xi.npy", x.astype(np.int32)), ["xi.npy", "t.npy"],
     "logits must be float16, float32 or float64"),
    (lambda d, x, t: np.save(d / "t2.npy", t[:999]), ["x.npy", "t2.npy"],
     r"has shape \(999,\), but class indices .* need shape \(1000,\)"),
    (lambda d, x, t: np.save(d / "tf.npy", t.astype(np.float32)), ["x.npy", "tf.npy"],
     "class indices must be integers"),
    (lambda d, x, t: np.save(d / "ts.npy", t.astype(str)), ["x.npy", "ts.npy"],
     "targets must be integer class indices or floating probabilities"),
    (lambda d, x, t: np.save(d / "tb.npy", np.where(np.arange(1000) == 731, 23, t)),
     ["x.npy", "tb.npy", "--chunk-rows", "100"], r"TARGETS\[731\] = 23 is not a valid class"),
    (lambda d, x, t: np.savez(d / "m.npz", a=x, b=t), ["m.npz"], "name the one to use"),
    (lambda d, x, t: np.savez(d / "m.npz", a=x, b=t), ["m.npz:c", "t.npy"], "has no array 'c'"),
    (lambda d, x, t: (d / "bad.npy").write_bytes(b"not an array"), ["bad.npy", "t.npy"],
     "not a valid .npy array"),
    (None, ["x.npy", "t.npy", "--k", "0"], "--k must be at least 1"),
    (None, ["x.npy", "t.npy", "--chunk-rows", "0"], "--chunk-rows must be at least 1"),
    (None, ["x.npy", "t.npy", "--threads", "0"], "--threads must be a positive count or -1"),
    (None, ["x.npy", "t.npy", "--plot", "nowhere/rel.png"], "folder of nowhere/rel.png"),
    (None, ["x.npy", "t.npy", "--per-row", "nowhere/r.npz"], "folder of nowhere/r.npz"),
])
def test_errors_are_clear_and_exit_non_zero(files, capsys, monkeypatch, make, argv, message):
    d, x, t = files
    if make is not None:
        make(d, x, t)
    monkeypatch.chdir(d)
    code, out, err = run(capsys, "score", *argv)
    assert code == 1 and out == ""
    assert err.startswith("xent-fast: error: ")
    assert pytest.importorskip("re").search(message, err), err


def test_truncated_file(files, capsys):
    d, x, _ = files
    data = (d / "x.npy").read_bytes()
    (d / "cut.npy").write_bytes(data[:-100])
    code, _, err = run(capsys, "score", d / "cut.npy", d / "t.npy")
    assert code == 1 and "truncated" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        _cli.main(["score"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        _cli.main(["nonsense"])
    assert exc.value.code == 2
    capsys.readouterr()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_and_hidden_with_quiet(files, capsys, monkeypatch):
    pytest.importorskip("tqdm")
    d, _, _ = files
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert _cli.main(["score", str(d / "x.npy"), str(d / "t.npy"), "--json",
                      "--chunk-rows", "100"]) == 0
    assert "scoring" in term.getvalue() and "rows" in term.getvalue()
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert _cli.main(["score", str(d / "x.npy"), str(d / "t.npy"), "--json", "-q"]) == 0
    assert quiet.getvalue() == ""
    capsys.readouterr()


def test_demo_prints_the_seed_examples_and_the_comparison(capsys):
    code, out, _ = run(capsys, "demo", "--rows", 600, "--classes", 30)
    assert code == 0
    assert "0.3567   0.5146" in out             # the dog example, nats and bits
    assert "0.2549   0.3677" in out             # dog/cat/horse/cheetah in bits
    assert "600 rows x 30 classes" in out and "faster than NumPy" in out
    rows = {line.split()[0]: line.split()[-2:] for line in out.splitlines()
            if line.strip().startswith(("perplexity", "accuracy", "ECE"))}
    for ours, theirs in rows.values():           # xent_fast and NumPy agree
        assert float(ours) == pytest.approx(float(theirs), rel=1e-5, abs=1e-6)


def test_demo_is_the_default_and_config_prints_the_configuration(capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(_demo, "run_demo", lambda *a: calls.append(a))
    assert _cli.main([]) == 0 and calls == [()]
    code, out, _ = run(capsys, "config")
    assert code == 0 and out.startswith(f"xent_fast {xf.__version__}") and "simd" in out


def test_numpy_baseline_of_the_demo_matches_score(rng):
    x, t = _demo.synthetic_batch(3000, 40, seed=3)
    ours, theirs = xf.score(x, t, k=4).summary(), _demo.numpy_summary(x, t, 4)
    assert list(ours) == list(theirs)
    for key in ours:
        assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), key


def test_python_dash_m_in_a_child_process(files):
    d, x, t = files
    res = subprocess.run([sys.executable, "-m", "xent_fast", "score", "x.npy", "t.npy",
                          "--json"], cwd=d, env=_child_env(), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == xf.score(x, t).summary()
    bad = subprocess.run([sys.executable, "-m", "xent_fast", "score", "nope.npy", "t.npy"],
                         cwd=d, env=_child_env(), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "not found" in bad.stderr


# ---------------------------------------------------------------- bounded memory

def _sparse_npy(path, shape, dtype):
    """An .npy file of zeros whose data is a hole: no disk, no time to write."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
              "fortran_order": False, "shape": shape}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.truncate(f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)


# `python -m xent_fast ARGS`, then its peak RSS (VmHWM, kB) printed last on stderr.
# (ru_maxrss would count the size of the forking parent: Linux keeps it across exec.)
PEAK_WRAPPER = """import runpy, sys
try:
    runpy.run_module("xent_fast", run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as f:
        print(f.read().split("VmHWM:")[1].split()[0], file=sys.stderr)
"""


def _peak_rss_of(args, cwd):
    """Run `python -m xent_fast ARGS`; return (exit code, its peak RSS in bytes, stdout)."""
    res = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *args], cwd=cwd,
                         env=_child_env(), capture_output=True, text=True, timeout=600)
    return res.returncode, int(res.stderr.split()[-1]) * 1024, res.stdout


def _check_bounded(tmp_path, rows, classes, limit):
    _sparse_npy(tmp_path / "x.npy", (rows, classes), np.float32)
    np.save(tmp_path / "t.npy", np.zeros(rows, np.int64))
    size = os.path.getsize(tmp_path / "x.npy")
    if os.stat(tmp_path / "x.npy").st_blocks * 512 > 2**20:
        pytest.skip("the filesystem does not keep the file sparse")
    code, base, _ = _peak_rss_of(["config"], tmp_path)
    assert code == 0
    code, peak, out = _peak_rss_of(["score", "x.npy", "t.npy", "--json"], tmp_path)
    assert code == 0
    summary = json.loads(out)
    assert summary["rows"] == rows and summary["accuracy"] == 1.0   # all-zero logits: ties
    assert summary["loss"] == pytest.approx(np.log(classes), rel=1e-6)
    # every page of the file was read; without handing them back RSS would pass its size
    assert peak - base < limit, f"peak RSS grew by {(peak - base) / 2**20:.0f} MiB " \
                                f"over {base / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB file"
    return peak, base, size


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_memory_stays_bounded_on_a_file_larger_than_the_chunks(tmp_path):
    # 400 MB of logits in chunks of 32 MiB: the peak grows by a few chunks at most
    _check_bounded(tmp_path, 100_000, 1000, 160 * 2**20)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_memory_stays_bounded_on_a_4gb_file(tmp_path):
    peak, _, size = _check_bounded(tmp_path, 1_050_000, 1000, 400 * 2**20)
    assert size > 4e9 and peak < 2**30
