"""Every instruction-set level this CPU supports gives the reference's answers.

The hot kernels are compiled once per level (baseline, avx2, avx512) and xent_fast runs
the widest one; here the public functions are pointed at each level in turn, so that
the narrower levels (what other machines run) are tested on this machine too.
"""

import ast
import os
import shutil
import subprocess
import sys

import mpmath
import numpy as np
import pytest

import xent_fast as xf
from xent_fast import _binary, _cross_entropy, _simd, _softmax
import reference as ref
from helpers import assert_close

LEVELS = _simd.available_levels()


@pytest.fixture(params=LEVELS)
def level(request, monkeypatch):
    _use_level(request.param, monkeypatch)
    return request.param


def _use_level(lvl, monkeypatch):
    soft = _simd.kernels("_softmax_kernels", lvl)
    ce = _simd.kernels("_cross_entropy_kernels", lvl)
    binary = _simd.kernels("_binary_kernels", lvl)
    monkeypatch.setattr(_softmax, "_SOFTMAX", soft.softmax)
    monkeypatch.setattr(_softmax, "_LOG_SOFTMAX", soft.log_softmax)
    monkeypatch.setattr(_softmax, "_LOGSUMEXP", soft.logsumexp)
    monkeypatch.setattr(_cross_entropy, "_INDEX_KERNEL", ce.cross_entropy_index)
    monkeypatch.setattr(_cross_entropy, "_PROBS_KERNEL", ce.cross_entropy_probs)
    monkeypatch.setattr(_binary, "_KERNEL", binary.binary_loss)


# Row lengths around the vector widths and the 256-entry summation chunks.
WIDTHS = [1, 2, 7, 8, 15, 16, 17, 31, 33, 255, 256, 257, 1000, 4099]


def _logits(rng, n_rows, c, dtype):
    x = rng.standard_normal((n_rows, c)) * 4
    if c > 3:
        x[0, 1] = -np.inf                    # a masked class
        x[1, :] = x[1, 0]                    # ties everywhere
        x[2, 2] = x[2].max() + 60            # a very confident row: tiny loss
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", WIDTHS)
def test_softmax_family_at_every_level(level, dtype, c):
    rng = np.random.default_rng(c)
    x = _logits(rng, 6, c, dtype)
    assert_close(xf.softmax(x), ref.softmax(x), dtype)
    assert_close(xf.log_softmax(x), ref.log_softmax(x), dtype)
    assert_close(xf.logsumexp(x), ref.logsumexp(x), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", WIDTHS)
def test_cross_entropy_at_every_level(level, dtype, c):
    rng = np.random.default_rng(100 + c)
    x = _logits(rng, 6, c, dtype)
    t = rng.integers(0, c, 6)
    if c > 3:
        t[2] = 2                             # the confident row predicts its target
    for kw in ({}, {"label_smoothing": 0.1, "weight": rng.uniform(0.5, 2, c)},
               {"z_loss": 1e-3, "softcap": 5.0}):
        loss, grad = xf.cross_entropy_and_grad(x, t, reduction="none", **kw)
        r_loss, r_grad = ref.cross_entropy_and_grad(x, t, reduction="none", **kw)
        assert_close(loss, r_loss, dtype)
        assert_close(grad, r_grad, dtype)
    y = rng.dirichlet(np.ones(c), 6).astype(dtype)
    loss, grad = xf.cross_entropy_and_grad(np.where(np.isinf(x), 0, x), y, reduction="none")
    r_loss, r_grad = ref.cross_entropy_and_grad(np.where(np.isinf(x), 0, x), y, reduction="none")
    assert_close(loss, r_loss, dtype)
    assert_close(grad, r_grad, dtype)


# Row lengths around the max's lanes (64 floats at AVX-512) and its 2048-entry blocks.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [31, 32, 33, 63, 64, 65, 127, 128, 129, 2047, 2049, 4161])
def test_max_and_nan_found_at_every_position_at_every_level(level, dtype, c):
    # Row i holds its max (or a NaN) at position i: a lane, tail or block that the max
    # sweep missed would give exp of a positive number, or a finite loss.
    rng = np.random.default_rng(c)
    pos = np.arange(c) if c < 3000 else np.r_[0:200, c - 200:c, rng.integers(0, c, 200)]
    rows = np.arange(len(pos))
    x = rng.uniform(-3, 3, (len(pos), c)).astype(dtype)
    x[rows, pos] = 40.0
    assert_close(xf.logsumexp(x), ref.logsumexp(x), dtype)
    x[rows, pos] = np.nan
    x[rows, (pos + 1) % c] = -np.inf             # NaN beside a masked class, as in padding
    t = (pos + 2) % c
    loss = xf.cross_entropy(x, t, reduction="none")
    assert np.isnan(loss).all()
    assert np.isnan(xf.softmax(x)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_rows", [1, 15, 16, 17, 40])
def test_softmax_family_short_rows_tiles_at_every_level(level, dtype, n_rows):
    # The softmax family also takes rows of fewer than 16 classes 16 at a time: every
    # class count, full and partial tiles, rows that must give NaN or +-inf anywhere in
    # a tile, one thread and two, a separate output and in place.
    rng = np.random.default_rng(n_rows + 100)
    funcs = {"softmax": ref.softmax, "log_softmax": ref.log_softmax,
             "logsumexp": ref.logsumexp}
    for c in range(1, 16):
        x = (rng.standard_normal((n_rows, c)) * 4).astype(dtype)
        special = [np.nan, np.inf, -np.inf]
        for k, i in enumerate(range(0, n_rows, 7)):
            x[i, k % c] = special[k % 3]
            if k % 3 == 2:
                x[i] = -np.inf                    # a fully masked row
        if n_rows > 3 and c > 1:
            x[3, 1:] = x[3, 0]                    # ties
        if n_rows > 9 and c > 1:
            # A row whose entries fall far below its max (-inf, -100) beside, in the
            # other half of the tile's lanes, a row that must give NaN or -inf: the
            # second row's NaN must not change the first row's exps.
            x[1, 1] = -np.inf
            x[0, 1] = x[0].max() - 100
            x[9] = -np.inf
            x[8, 0] = np.nan
        for name, f in funcs.items():
            want = f(x.astype(np.float64))
            for nt in (1, 2):
                got = getattr(xf, name)(x, n_threads=nt)
                assert_close(got, want.astype(dtype), dtype)
            if name != "logsumexp":
                guard = np.full((n_rows + 2, c), 7.0, dtype)   # neighbours stay as they were
                guard[1:-1] = x
                inner = guard[1:-1]
                getattr(xf, name)(inner, out=inner)
                assert_close(inner, want.astype(dtype), dtype)
                assert (guard[0] == 7).all() and (guard[-1] == 7).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_short_rows_tiles_same_bits_on_two_threads(level, dtype):
    # Large enough for the kernels to start threads (small calls run serial).
    rng = np.random.default_rng(7)
    for c in (3, 10):
        x = (rng.standard_normal((20011, c)) * 4).astype(dtype)
        x[::97, 1] = -np.inf
        x[5::101] = np.nan
        t = rng.integers(0, c, len(x))
        for name in ("softmax", "log_softmax", "logsumexp"):
            f = getattr(xf, name)
            np.testing.assert_array_equal(f(x, n_threads=2), f(x, n_threads=1))
        one = xf.cross_entropy_and_grad(x, t, reduction="sum", n_threads=1)
        two = xf.cross_entropy_and_grad(x, t, reduction="sum", n_threads=2)
        np.testing.assert_array_equal(one[0], two[0])
        np.testing.assert_array_equal(one[1], two[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_padded_batch_with_masked_classes_in_short_rows(level, dtype):
    # Padding rows (all -inf, ignored) in the same tile as real rows with a masked class:
    # the real rows' losses and gradients are those of the rows alone.
    x = np.zeros((16, 4), dtype)
    x[:, 3] = -np.inf
    x[8:] = -np.inf
    t = np.zeros(16, np.int64)
    t[8:] = -100
    loss, grad = xf.cross_entropy_and_grad(x, t, reduction="none")
    r_loss, r_grad = ref.cross_entropy_and_grad(x[:8], t[:8], reduction="none")
    assert_close(loss[:8], r_loss, dtype)
    assert_close(grad[:8], r_grad, dtype)
    assert (loss[8:] == 0).all() and (grad[8:] == 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_rows", [1, 15, 16, 17, 40])
def test_short_rows_tiles_at_every_level(level, dtype, n_rows):
    # Rows of fewer than 16 classes go 16 at a time through a transposed tile (the
    # gradient out by a register transpose and masked stores with AVX-512): every class
    # count, full and partial tiles, a separate gradient array and in place.
    rng = np.random.default_rng(n_rows)
    for c in range(1, 16):
        x = (rng.standard_normal((n_rows, c)) * 4).astype(dtype)
        t = rng.integers(0, c, n_rows)
        t[n_rows // 2] = -100                       # an ignored row in the tile
        for kw in ({"reduction": "none"}, {"reduction": "mean", "weight": rng.uniform(0.5, 2, c)},
                   {"reduction": "sum", "z_loss": 1e-3}):
            r_loss, r_grad = ref.cross_entropy_and_grad(x, t, **kw)
            for tt in (t, t.astype(np.int32)):
                loss, grad = xf.cross_entropy_and_grad(x, tt, **kw)
                assert_close(loss, r_loss, dtype)
                assert_close(grad, r_grad, dtype)
        r_loss, r_grad = ref.cross_entropy_and_grad(x, t, reduction="none")
        guard = np.full((n_rows + 2, c), 7.0, dtype)   # rows before and after stay as they were
        guard[1:-1] = x
        inner = guard[1:-1]
        xf.cross_entropy_and_grad(inner, t, reduction="none", grad_out=inner)
        assert_close(inner, r_grad, dtype)
        assert (guard[0] == 7).all() and (guard[-1] == 7).all()


def test_tiny_loss_keeps_its_digits_at_every_level(level):
    x = np.array([[0.0, -50.0, -50.0]], dtype=np.float32)
    exact = 2 * np.exp(-50.0)
    loss = xf.cross_entropy(x, np.array([0]), reduction="none")
    assert abs(loss[0] / exact - 1) < 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_at_every_level(level, dtype):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((5, 37)) * 5).astype(dtype)
    y = (rng.uniform(size=(5, 37)) > 0.5).astype(dtype)
    base_loss, base_grad = xf.binary_cross_entropy_with_logits_and_grad(
        x.astype(np.float64), y.astype(np.float64), reduction="none")
    loss, grad = xf.binary_cross_entropy_with_logits_and_grad(x, y, reduction="none")
    assert_close(loss, base_loss, dtype)
    assert_close(grad, base_grad, dtype)


@pytest.mark.skipif(not {"avx2", "avx512"} <= set(LEVELS), reason="needs AVX-512")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fma_levels_agree_bitwise(dtype, monkeypatch):
    # The row sums run in 16 explicit lanes at every level, and the AVX-512 loop by hand
    # does the portable loop's operations in its order; short rows go through the same
    # tile arithmetic (only the transpose out differs, and it moves values exactly):
    # with FMA at both, AVX2 and AVX-512 give the same bits (the baseline, without FMA,
    # rounds differently). That holds where the compiler fuses the portable code's
    # a * b + c as the intrinsics do: GCC does from -O2 on (the release build's -O3),
    # not at -O1 without -fexpensive-optimizations, which tests/sanitize.sh adds for this
    # (4 of 111 float32 softmax values were an ulp apart: the AVX2 build's hand-written
    # tile exps fuse, the AVX-512 build's portable ones did not).
    results = []
    for lvl in ("avx2", "avx512"):
        _use_level(lvl, monkeypatch)
        out = []
        for c in [1, 3, 10, 15, 16, 17, 255, 257, 1000, 4099, 70000]:
            x = _logits(np.random.default_rng(c), 37 if c < 16 else 6, c, dtype)
            x[3, ::7] = x[3].max() - 100         # exps that underflow or are subnormal
            t = np.random.default_rng(c + 1).integers(0, c, len(x))
            p = np.random.default_rng(c + 2).dirichlet(np.ones(c), len(x)).astype(dtype)
            w = np.random.default_rng(c + 3).random(c).astype(dtype)
            out += [xf.softmax(x), xf.logsumexp(x), *xf.cross_entropy_and_grad(x, t),
                    xf.cross_entropy(x, t, reduction="none"),
                    # the soft-target sums run in 16 lanes too (xf_soft_sums)
                    *xf.cross_entropy_and_grad(x, t, label_smoothing=0.1, weight=w),
                    *xf.cross_entropy_and_grad(x, p, reduction="none")]
        results.append(out)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")


def _level_flags():
    # The compiler flags of each level's modules, read from setup.py's SIMD_LEVELS.
    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SIMD_LEVELS":
            return ast.literal_eval(node.value)["gcc"]
    raise AssertionError("SIMD_LEVELS not found in setup.py")


@pytest.mark.skipif(not (shutil.which("cc") and os.path.exists(os.path.join(SRC, "xent_simd.h"))
                         and os.path.exists(os.path.join(ROOT, "setup.py"))),
                    reason="needs a C compiler and the source tree")
@pytest.mark.parametrize("lvl", [lvl for lvl in LEVELS if lvl != "baseline"])
def test_hand_written_loops_are_the_portable_code_bitwise(lvl, tmp_path):
    # The loops written with intrinsics (AVX2, AVX-512) must give the bits of the
    # portable loops they replace, built with the same flags: tests/hand_loops_check.c
    # prints a hash of the sums, tie counts and stored exps of 6,000 rows (ties, -inf,
    # exps with subnormal results, all tail lengths) and of the losses, gradients and
    # softmax-family outputs of 4,000 tiles of short rows (some rows NaN, +inf or all
    # -inf), and the sweeps of 3,000 groups of medium rows taken side by side, built
    # both ways.
    # The hand build runs twice: short-row tiles loaded as the portable code does, and
    # (AVX-512) by gathers.
    here = os.path.dirname(os.path.abspath(__file__))
    outputs = []
    for extra, runs in (([], [[], ["gather"]]), (["-DXF_PORTABLE"], [[]])):
        exe = str(tmp_path / ("check" + "".join(extra)))
        subprocess.run(["cc", "-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd",
                        *_level_flags()[lvl], *extra, "-I", SRC,
                        os.path.join(here, "hand_loops_check.c"), "-o", exe, "-lm"], check=True)
        for args in runs:
            outputs.append(subprocess.run([exe, *args], capture_output=True, text=True,
                                          check=True).stdout.splitlines())
    hand, hand_gather, portable = outputs
    assert len(hand) == len(hand_gather) == 13000
    for got in (hand, hand_gather):
        differ = [a for a, b in zip(got, portable) if a != b]
        assert not differ, f"{len(differ)} rows differ, first: {differ[0]}"


def test_levels_are_the_cpus():
    assert LEVELS[0] == "baseline"
    assert xf.config()["simd"] == LEVELS[-1] or os.environ.get("XENT_FAST_SIMD")
    assert xf.config()["simd_available"] == LEVELS


def _config_under(env_value):
    env = dict(os.environ, XENT_FAST_SIMD=env_value)
    # Run beside the package this process imported (the source tree of an in-place
    # build, or site-packages), so that the child imports that same package.
    home = os.path.dirname(os.path.dirname(os.path.abspath(xf.__file__)))
    out = subprocess.run(
        [sys.executable, "-W", "always", "-c",
         "import xent_fast as xf; print(xf.config()['simd'])"],
        capture_output=True, text=True, env=env, check=True, cwd=home)
    return out.stdout.strip(), out.stderr


def test_environment_forces_a_level():
    for lvl in LEVELS:
        assert _config_under(lvl)[0] == lvl


def test_unknown_level_warns_and_falls_back():
    chosen, err = _config_under("sse9")
    assert chosen == LEVELS[-1]
    assert "XENT_FAST_SIMD" in err


_TILES_IN_CHILD = """
import hashlib, numpy as np, xent_fast as xf, xent_fast._simd as s
rng = np.random.default_rng(5)
h = hashlib.sha256()
for c in (2, 10, 15):
    x = (rng.standard_normal((1003, c)) * 4).astype(np.float32)
    x[7] = np.nan
    x[9, :] = -np.inf
    t = rng.integers(0, c, len(x))
    for a in (*xf.cross_entropy_and_grad(x, t), xf.softmax(x), xf.log_softmax(x),
              xf.logsumexp(x)):
        h.update(np.ascontiguousarray(a).tobytes())
print(s.TILE_GATHER, h.hexdigest())
"""


def _tiles_under(env_value):
    env = dict(os.environ, XENT_FAST_TILE_GATHER=env_value, XENT_FAST_SIMD="avx512")
    home = os.path.dirname(os.path.dirname(os.path.abspath(xf.__file__)))
    out = subprocess.run([sys.executable, "-W", "always", "-c", _TILES_IN_CHILD],
                         capture_output=True, text=True, env=env, check=True, cwd=home)
    return out.stdout.split(), out.stderr


@pytest.mark.skipif("avx512" not in LEVELS, reason="the gathers are AVX-512 code")
def test_short_row_tiles_by_gathers_or_not_give_the_same_bits():
    # XENT_FAST_TILE_GATHER decides how full float tiles come in (AVX-512 gathers, or
    # the portable loads); the results must not depend on it.
    (on, digest_on), _ = _tiles_under("1")
    (off, digest_off), _ = _tiles_under("0")
    assert (on, off) == ("True", "False")
    assert digest_on == digest_off
    (chosen, _), err = _tiles_under("yes")
    assert chosen in ("True", "False") and "XENT_FAST_TILE_GATHER" in err


@pytest.mark.parametrize("dtype, low", [(np.float64, -744.0), (np.float32, -103.0)])
def test_exp_is_accurate_to_a_few_ulp_at_every_level(level, dtype, low):
    # logsumexp([0, d]) = log1p(exp(d)), which is exp(d) to within exp(d)^2 for d << 0:
    # it shows the kernels' exp directly, down into the subnormal range.
    d = np.linspace(low, -40.0 if dtype == np.float64 else -18.0, 3001).astype(dtype)
    x = np.stack([np.zeros_like(d), d], axis=1)
    got = xf.logsumexp(x).astype(np.float64)
    exact = np.array([float(mpmath.log1p(mpmath.exp(mpmath.mpf(float(v))))) for v in d])
    tiny = np.finfo(dtype).smallest_subnormal
    ulp = np.maximum(np.spacing(exact.astype(dtype)).astype(np.float64), tiny)
    assert np.max(np.abs(got - exact) / ulp) <= 3.0
