"""`xent-fast score` run as a user runs it (a child process) on hostile inputs and paths:
it never writes over an input, reads only regular files, reports a file that is corrupt
or cut short (even while it is read) as an error naming it, leaves nothing behind when it
fails or is killed, and never prints a traceback."""

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import xent_fast as xf
from helpers import default_signals

PKG_ROOT = str(Path(xf.__file__).resolve().parent.parent)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="2")
    env["PYTHONPATH"] = PKG_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli(cwd, *args, timeout=120):
    """`python -m xent_fast score ARGS` in ``cwd``: the finished process."""
    return subprocess.run([sys.executable, "-m", "xent_fast", "score", *map(str, args)],
                          cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def start(cwd, *args):
    return subprocess.Popen([sys.executable, "-m", "xent_fast", "score", *map(str, args)],
                            cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)


def assert_clean_error(res, *fragments):
    """Exit 1, one `xent-fast: error:` line naming what it should, no traceback."""
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert res.stderr.startswith("xent-fast: error: "), res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    for f in fragments:
        assert f in res.stderr, (f, res.stderr)


def leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(".xent_fast_"))


@pytest.fixture
def d(tmp_path, rng):
    x = (rng.standard_normal((500, 7)) * 3).astype(np.float32)
    t = rng.integers(0, 7, 500)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "t.npy", t)
    np.savez(tmp_path / "run.npz", logits=x, target=t)
    return tmp_path


# -- 2: outputs that are inputs ---------------------------------------------------------

def _links(d):
    os.symlink(d / "t.npy", d / "sym.npz")
    os.link(d / "t.npy", d / "hard.npz")
    os.symlink(d / "x.npy", d / "xlink.npy")
    (d / "in.png").write_bytes((d / "x.npy").read_bytes())   # an .npy named like an image


@pytest.mark.parametrize("argv, named", [
    (["run.npz", "--per-row", "run.npz"], "LOGITS run.npz"),
    (["run.npz:logits", "run.npz:target", "--per-row", "./run.npz"], "LOGITS run.npz"),
    (["x.npy", "t.npy", "--per-row", "t.npy"], "TARGETS t.npy"),
    (["x.npy", "t.npy", "--per-row", "sym.npz"], "TARGETS t.npy"),        # symlink to input
    (["x.npy", "t.npy", "--per-row", "hard.npz"], "TARGETS t.npy"),       # hard link
    (["xlink.npy", "t.npy", "--per-row", "x.npy"], "LOGITS xlink.npy"),   # input is the link
    (["in.png", "t.npy", "--plot", "in.png"], "LOGITS in.png"),
    (["x.npy", "t.npy", "--per-row", "o.png", "--plot", "o.png"], "--per-row o.png"),
    (["x.npy", "t.npy", "--per-row", "o.png", "--plot", "sub/../o.png"], "--per-row o.png"),
])
def test_an_output_that_is_an_input_is_refused_before_any_work(d, argv, named):
    if "--plot" in argv:
        pytest.importorskip("matplotlib")
    _links(d)
    (d / "sub").mkdir()
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    res = cli(d, *argv)
    over = "the other output" if named.startswith("--") else "an input"
    assert_clean_error(res, "is the same file as " + named, "refusing to write over " + over)
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()} == before
    assert not leftovers(d) and not (d / "o.png").exists()


def test_an_output_that_is_not_a_regular_file_is_refused(d):
    (d / "folder.npz").mkdir()
    os.mkfifo(d / "fifo.npz")
    for out in ("folder.npz", "fifo.npz"):
        assert_clean_error(cli(d, "x.npy", "t.npy", "--per-row", out, timeout=60),
                           f"--per-row {out} exists and is not a regular file")
    assert not leftovers(d)


def test_plot_with_an_unknown_extension_is_refused_before_scoring(d):
    pytest.importorskip("matplotlib")
    for out in ("rel.xyz", "rel"):
        assert_clean_error(cli(d, "x.npy", "t.npy", "--plot", out, "--per-row", "r.npz"),
                           f"--plot {out}: the extension must name an image format")
    assert not (d / "r.npz").exists() and not leftovers(d)
    res = cli(d, "x.npy", "t.npy", "--plot", "rel.PDF", "--json")      # case-blind
    assert res.returncode == 0, res.stderr
    assert (d / "rel.PDF").read_bytes()[:5] == b"%PDF-" and not leftovers(d)


# -- 11: inputs that are not regular files ----------------------------------------------

@pytest.mark.parametrize("which", ["logits", "targets"])
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "directory"])
def test_inputs_must_be_regular_files(d, which, kind):
    if kind == "fifo":
        os.mkfifo(d / "special")            # nobody writes: opening it would block forever
        special = "special"
    elif kind == "directory":
        (d / "special").mkdir()
        special = "special"
    else:
        if not os.path.exists(kind):
            pytest.skip("no /dev/zero")
        special = kind
    argv = [special, "t.npy"] if which == "logits" else ["x.npy", special]
    res = cli(d, *argv, timeout=60)
    role = "LOGITS" if which == "logits" else "TARGETS"
    assert_clean_error(res, role, special,
                       "is a directory" if kind == "directory" else "not a regular file")


# -- 12: .npy format version 3.0, and hostile headers -----------------------------------

def test_npy_format_version_3(d, rng):
    x = rng.standard_normal((300, 5))
    t = rng.integers(0, 5, 300)
    for name, a in (("x3.npy", x), ("t3.npy", t)):
        with open(d / name, "wb") as f:
            np.lib.format.write_array(f, a, version=(3, 0))
    res = cli(d, "x3.npy", "t3.npy", "--json", "--chunk-rows", 64)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == xf.score(x, t).summary()


def _npy(header, version=(1, 0), data=b""):
    """The bytes of an .npy file with the given header text (padded as NumPy pads)."""
    text = header.encode("latin1" if version < (3, 0) else "utf8")
    size = "<H" if version == (1, 0) else "<I"
    pad = -(6 + 2 + struct.calcsize(size) + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack(size, len(text)) + text + data


HOSTILE = {
    "empty.npy": b"",
    "object.npy": _npy("{'descr': '|O', 'fortran_order': False, 'shape': (500, 7)}",
                       data=bytes(500 * 7 * 8)),
    "huge.npy": _npy("{'descr': '<f4', 'fortran_order': False, "
                     "'shape': (4611686018427387904, 4611686018427387904)}"),
    "negative.npy": _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-500, 7)}"),
    "notdict.npy": _npy("[('descr', '<f4'), ('shape', (500, 7))]"),
    "notdict3.npy": _npy("['<f4', False, (500, 7)]", version=(3, 0)),
    "code.npy": _npy("{'descr': __import__('os').getcwd(), 'fortran_order': False, "
                     "'shape': (1,)}", version=(3, 0)),
    "shape_float.npy": _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (500.0, 7)}",
                            version=(3, 0)),
    "long3.npy": b"\x93NUMPY\x03\x00" + struct.pack("<I", 2**31) + b"{" * 20000,
    "long2.npy": b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 1) + b"{" * 20000,
    "version9.npy": b"\x93NUMPY\x09\x00" + bytes(100),
    "badutf8.npy": _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
                        version=(3, 0)).replace(b"descr", b"d\xffscr"),
    "unbalanced.npy": _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (500, 7}"),
    "zero.npz": b"",
    "junk.npz": b"PK\x03\x04" + bytes(200),
    "fortran3d.npy": None,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_file_is_a_clean_error(d, name):
    if name == "fortran3d.npy":
        np.save(d / name, np.asfortranarray(np.zeros((500, 2, 7), np.float32)))
    else:
        (d / name).write_bytes(HOSTILE[name])
    assert_clean_error(cli(d, name, "t.npy", timeout=60), name)
    if name.endswith(".npy"):
        assert_clean_error(cli(d, "x.npy", name, timeout=60), "TARGETS", name)


def test_an_archive_of_logits_alone_does_not_serve_as_its_own_targets(d):
    np.savez(d / "only.npz", logits=np.load(d / "x.npy"))
    assert_clean_error(cli(d, "only.npz"), "TARGETS is missing: only.npz holds no targets")


def test_missing_and_unreadable_files(d):
    assert_clean_error(cli(d, "nope.npy", "t.npy"), "LOGITS file not found: nope.npy")
    os.symlink(d / "gone.npy", d / "dangling.npy")
    assert_clean_error(cli(d, "x.npy", "dangling.npy"), "TARGETS file not found")
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    os.chmod(d / "t.npy", 0)
    assert_clean_error(cli(d, "x.npy", "t.npy"), "TARGETS: cannot read t.npy")


def test_fortran_order_is_read_by_rows(d, rng):
    x = rng.standard_normal((300, 9)).astype(np.float32)
    t = rng.integers(0, 9, 300)
    np.save(d / "xf.npy", np.asfortranarray(x))
    np.save(d / "t9.npy", t)
    np.savez(d / "f.npz", logits=np.asfortranarray(x), target=t)
    x3 = rng.standard_normal((20, 15, 4))
    t2 = rng.integers(0, 4, (20, 15))
    np.save(d / "x3.npy", x3)
    np.save(d / "t2.npy", np.asfortranarray(t2))    # chunks of flat rows cut its rows
    y = xf.softmax(x)
    np.save(d / "yf.npy", np.asfortranarray(y))
    for argv, want in ((["xf.npy", "t9.npy"], xf.score(x, t)), (["f.npz"], xf.score(x, t)),
                       (["x3.npy", "t2.npy"], xf.score(x3, t2)),
                       (["xf.npy", "yf.npy"], xf.score(x, y))):
        res = cli(d, *argv, "--json", "--chunk-rows", 7)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout) == want.summary()


# -- 13: files cut short, before or while they are read ---------------------------------

def _cut_header(path, rows):
    """Rewrite ``path``'s .npy header so that it claims ``rows`` rows (more than it has)."""
    a = np.load(path)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(a.dtype),
                                                 "fortran_order": False,
                                                 "shape": (rows,) + a.shape[1:]})
        f.write(a.tobytes())


@pytest.mark.parametrize("case", ["logits", "targets", "stored member", "compressed member",
                                  "compressed targets"])
def test_a_header_that_claims_more_rows_than_the_data_holds(d, case):
    x, t = np.load(d / "x.npy"), np.load(d / "t.npy")
    if case in ("logits", "targets"):
        name = "x.npy" if case == "logits" else "t.npy"
        _cut_header(d / name, 600)
        np.save(d / ("t.npy" if case == "logits" else "x.npy"),
                np.zeros(600, np.int64) if case == "logits" else np.zeros((600, 7), np.float32))
        argv, named = ["x.npy", "t.npy"], name
    else:
        fake = d / "fake.npy"
        np.save(fake, x if case != "compressed targets" else t)
        _cut_header(fake, 600)
        big = np.zeros(600, np.int64) if case != "compressed targets" else np.zeros((600, 7))
        method = zipfile.ZIP_STORED if case == "stored member" else zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(d / "cut.npz", "w", method) as z:
            if case == "compressed targets":
                z.writestr("logits.npy", _npy_bytes(big.astype(np.float32)))
                z.write(fake, "target.npy")
            else:
                z.write(fake, "logits.npy")
                z.writestr("target.npy", _npy_bytes(big))
        argv = ["cut.npz"]
        named = "cut.npz:" + ("target" if case == "compressed targets" else "logits")
    res = cli(d, *argv, "--chunk-rows", 64, "--per-row", "r.npz")
    assert_clean_error(res, named, "truncated")
    assert not (d / "r.npz").exists() and not leftovers(d)


def _npy_bytes(a):
    import io
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _wait_until_open(proc, path, timeout=60):
    """Wait until ``proc`` has ``path`` open (or mapped)."""
    real = os.path.realpath(path)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        try:
            fds = [os.readlink(f"/proc/{proc.pid}/fd/{fd}")
                   for fd in os.listdir(f"/proc/{proc.pid}/fd")]
            with open(f"/proc/{proc.pid}/maps") as f:
                maps = f.read()
        except OSError:
            fds, maps = [], ""
        if real in fds or real in maps:
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} was never opened")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")
@pytest.mark.parametrize("which", ["x.npy", "t.npy"])
def test_a_file_truncated_while_it_is_scored_is_an_error_not_sigbus(tmp_path, which):
    rows = 100_000                     # ~10 s in chunks of one row; cut after ~0.3 s
    np.save(tmp_path / "x.npy", np.zeros((rows, 16), np.float32))
    np.save(tmp_path / "t.npy", np.zeros(rows, np.int64))
    proc = start(tmp_path, "x.npy", "t.npy", "--chunk-rows", 1, "--per-row", "r.npz")
    try:
        _wait_until_open(proc, tmp_path / which)
        time.sleep(0.3)
        os.truncate(tmp_path / which, 4096)     # rows already scored and some more
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, (proc.returncode, err)     # -7 was SIGBUS
    assert err.startswith("xent-fast: error: ") and "Traceback" not in err
    assert which in err and "truncated" in err
    assert not (tmp_path / "r.npz").exists() and not leftovers(tmp_path)


# -- 14: no partial output after a signal or a failure ----------------------------------

@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGALRM"])
def test_a_signal_during_per_row_leaves_nothing_behind(tmp_path, sig):
    rows = 100_000
    np.save(tmp_path / "x.npy", np.zeros((rows, 16), np.float32))
    np.save(tmp_path / "t.npy", np.zeros(rows, np.int64))
    (tmp_path / "r.npz").write_bytes(b"the previous result")
    proc = start(tmp_path, "x.npy", "t.npy", "--chunk-rows", 1, "--per-row", "r.npz")
    try:
        end = time.monotonic() + 60
        while not leftovers(tmp_path) and time.monotonic() < end:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
        time.sleep(0.2)                # the per-row files are being written
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    signum = getattr(signal, sig)
    assert proc.returncode == 128 + signum, (proc.returncode, err)
    assert err.startswith("xent-fast: error: ") and "Traceback" not in err
    assert not leftovers(tmp_path)
    assert (tmp_path / "r.npz").read_bytes() == b"the previous result"


def test_a_failure_after_the_per_row_files_are_started_leaves_the_old_output(d):
    t = np.load(d / "t.npy")
    t[-1] = 99
    np.save(d / "tb.npy", t)
    (d / "r.npz").write_bytes(b"old")
    res = cli(d, "x.npy", "tb.npy", "--per-row", "r.npz", "--chunk-rows", 50)
    assert_clean_error(res, "TARGETS[499] = 99")
    assert (d / "r.npz").read_bytes() == b"old" and not leftovers(d)


# -- 15: corrupt, encrypted and unsupported .npz members --------------------------------

def _member_data(path, name):
    """(start, size) of ``name``'s bytes in the archive."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    raw = path.read_bytes()
    local = raw[info.header_offset:info.header_offset + 30]
    start = (info.header_offset + 30 + int.from_bytes(local[26:28], "little")
             + int.from_bytes(local[28:30], "little"))
    return start, info.compress_size


def _patch_headers(path, name, local_at, central_at, value, fmt="<H", mask=None):
    """Set a field of ``name``'s local and central headers (at those offsets)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    central = raw.index(b"PK\x01\x02")
    while raw[central + 46:central + 46 + len(name)] != name.encode():
        central = raw.index(b"PK\x01\x02", central + 4)
    for at in (info.header_offset + local_at, central + central_at):
        old = struct.unpack_from(fmt, raw, at)[0]
        struct.pack_into(fmt, raw, at, old | value if mask else value)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("case", ["flipped deflate", "flipped deflate targets", "encrypted",
                                  "encrypted compressed", "method 99", "cut archive"])
def test_a_corrupt_npz_is_a_clean_error_naming_it(d, rng, case):
    x = rng.integers(0, 5, (500, 7)).astype(np.float32)       # compressible
    t = rng.integers(0, 7, 500)
    p = d / "bad.npz"
    if case.startswith("flipped"):
        np.savez_compressed(p, logits=x, target=t)
        member = "target.npy" if "targets" in case else "logits.npy"
        start, size = _member_data(p, member)
        raw = bytearray(p.read_bytes())
        for i in range(start + size // 3, start + size // 3 + 8):
            raw[i] ^= 0x5A
        p.write_bytes(bytes(raw))
        named = "bad.npz:" + member[:-4]
    elif case.startswith("encrypted"):
        (np.savez_compressed if "compressed" in case else np.savez)(p, logits=x, target=t)
        _patch_headers(p, "logits.npy", 6, 8, 0x1, mask=True)
        named = "encrypted"
    elif case == "method 99":
        np.savez_compressed(p, logits=x, target=t)
        _patch_headers(p, "logits.npy", 8, 10, 99)
        named = "bad.npz"
    else:
        np.savez_compressed(p, logits=x, target=t)
        p.write_bytes(p.read_bytes()[:-200])
        named = "bad.npz"
    res = cli(d, "bad.npz", "--chunk-rows", 64, "--per-row", "r.npz")
    assert_clean_error(res, named)
    assert not (d / "r.npz").exists() and not leftovers(d)


# -- 16: positions and values of bad targets are those of the file ----------------------

def test_a_bad_uint64_target_is_named_at_its_row_with_its_value(d):
    t = np.load(d / "t.npy").astype(np.uint64)
    t[331] = 2**64 - 100            # would wrap to -100, the ignore index
    np.save(d / "tu.npy", t)
    res = cli(d, "x.npy", "tu.npy", "--chunk-rows", 100)
    assert_clean_error(res, f"TARGETS[331] = {2**64 - 100} is not a valid class index")
    t[331] = 3
    t[460] = 7
    np.save(d / "tu.npy", t)
    assert_clean_error(cli(d, "x.npy", "tu.npy", "--chunk-rows", 100), "TARGETS[460] = 7 ")


def test_a_bad_target_of_a_2d_batch_is_named_at_its_position_in_the_file(d, rng):
    np.save(d / "x2.npy", rng.standard_normal((10, 50, 4)).astype(np.float32))
    t = rng.integers(0, 4, (10, 50)).astype(np.int8)
    t[7, 31] = -5
    np.save(d / "t2.npy", t.astype(">i2"))                 # big-endian: values as stored
    assert_clean_error(cli(d, "x2.npy", "t2.npy", "--chunk-rows", 64),
                       "TARGETS[7, 31] = -5 is not a valid class index")
