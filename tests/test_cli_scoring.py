"""The command line as a user runs it (subprocesses), issue 21: --version, --top-k,
a closed pipe, --plot refused before any work, a file of a format not read, rows
without a softmax, --fit-temperature (table, JSON, side-by-side diagram)."""

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import xent_fast as xf

PKG_ROOT = str(Path(xf.__file__).resolve().parent.parent)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="2")
    env["PYTHONPATH"] = PKG_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def xent_fast(cwd, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "xent_fast", *map(str, args)], cwd=cwd,
                          env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def d(tmp_path, rng):
    t = rng.integers(0, 10, 4000)
    x = (rng.standard_normal((4000, 10)) + 2 * np.eye(10)[t]) * 3     # overconfident
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    np.save(tmp_path / "t.npy", t)
    return tmp_path


def test_version(tmp_path):
    # from outside the checkout: there "-m xent_fast" would find the source tree first
    res = xent_fast(tmp_path, "--version")
    assert res.returncode == 0 and res.stdout.strip() == f"xent-fast {xf.__version__}"


def test_top_k_is_an_alias_of_k(d):
    a = json.loads(xent_fast(d, "score", "x.npy", "t.npy", "--k", 3, "--json").stdout)
    b = json.loads(xent_fast(d, "score", "x.npy", "t.npy", "--top-k", 3, "--json").stdout)
    assert a == b and a["k"] == 3


@pytest.mark.parametrize("argv", [["score", "x.npy", "t.npy"], ["demo", "--rows", "3000"]])
def test_quiet_when_piped_into_head(d, argv):
    cmd = " ".join([sys.executable, "-m", "xent_fast", *argv]) + " | head -1"
    res = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=d, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "" and len(res.stdout.splitlines()) == 1


def test_plot_with_an_unsupported_extension_is_refused_before_reading_anything(d):
    pytest.importorskip("matplotlib")
    res = xent_fast(d, "score", "missing.npy", "t.npy", "--plot", "out.docx")
    assert res.returncode == 1 and "--plot out.docx" in res.stderr
    assert "not found" not in res.stderr and not (d / "out.docx").exists()


def test_a_pytorch_file_gets_a_message_naming_the_formats_read(d):
    with zipfile.ZipFile(d / "model.pt", "w") as z:       # what torch.save writes
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("archive/version", b"3\n")
    res = xent_fast(d, "score", "model.pt", "t.npy")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert ".npy files and .npz archives" in res.stderr and "numpy.save" in res.stderr
    (d / "notes.txt").write_text("hello")
    res = xent_fast(d, "score", "notes.txt", "t.npy")
    assert res.returncode == 1 and ".npy files and .npz archives" in res.stderr


def test_rows_without_a_softmax_are_counted_and_warned_about(d, rng):
    x = np.load(d / "x.npy")
    x[:7, 3] = np.nan
    x[7:9, 0] = np.inf
    np.save(d / "bad.npy", x)
    res = xent_fast(d, "score", "bad.npy", "t.npy", "--json")
    assert res.returncode == 0
    s = json.loads(res.stdout)
    assert s["nonfinite_rows"] == 9 and s["rows"] == 4000 - 9
    assert "warning: 9 rows" in res.stderr
    assert s["loss"] == pytest.approx(
        xf.score(x[9:], np.load(d / "t.npy")[9:]).summary()["loss"], rel=1e-12)


def test_fit_temperature_prints_t_and_the_figures_before_and_after(d):
    x, t = np.load(d / "x.npy"), np.load(d / "t.npy")
    T = xf.fit_temperature(x, t)
    res = xent_fast(d, "score", "x.npy", "t.npy", "--fit-temperature", "--chunk-rows", 999)
    assert res.returncode == 0, res.stderr
    assert f"T = {T:.6g}" in res.stdout
    for label in ("loss (nats)", "ECE (15 bins)", "Brier score"):
        line = next(ln for ln in res.stdout.splitlines()[-6:] if label in ln)
        before, after = map(float, line.split()[-2:])
        assert after < before, line
    res = xent_fast(d, "score", "x.npy", "t.npy", "--fit-temperature", "--json")
    out = json.loads(res.stdout)
    assert out["temperature"] == pytest.approx(T, rel=1e-6)
    assert out["calibrated"]["ece"] < out["ece"]
    assert out["calibrated"]["accuracy"] == out["accuracy"]


def test_fit_temperature_with_a_plot_draws_before_and_after(d):
    pytest.importorskip("matplotlib")
    res = xent_fast(d, "score", "x.npy", "t.npy", "--fit-temperature", "--plot", "rel.png",
                    "--ece-bins", 10)
    assert res.returncode == 0, res.stderr
    assert "ECE (10 bins)" in res.stdout
    png = (d / "rel.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(png[16:20], "big")
    height = int.from_bytes(png[20:24], "big")
    assert width > 1.3 * height                  # two diagrams side by side


def test_fit_temperature_needs_class_indices(d, rng):
    np.save(d / "p.npy", xf.softmax(rng.standard_normal((4000, 10))).astype(np.float32))
    res = xent_fast(d, "score", "x.npy", "p.npy", "--fit-temperature")
    assert res.returncode == 1 and "class-index targets" in res.stderr


def test_fit_temperature_ignores_a_row_whose_target_is_masked(d):
    # one row whose target class is -inf made the streamed fit run to T = 1000
    x, t = np.load(d / "x.npy"), np.load(d / "t.npy")
    want = xf.fit_temperature(x[1:], t[1:])
    x[0, t[0]] = -np.inf
    np.save(d / "xm.npy", x)
    res = xent_fast(d, "score", "xm.npy", "t.npy", "--fit-temperature", "--json",
                    "--chunk-rows", 999)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["temperature"] == pytest.approx(want, rel=1e-6)
    assert out["loss"] == math.inf          # the figures themselves still count the row
