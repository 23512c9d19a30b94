"""n_threads: validation and bitwise identity of results for every thread count."""

import os
import subprocess
import sys

import numpy as np
import pytest

import xent_fast as xf
import reference as ref
from helpers import assert_close

THREADS = [1, 2, 3, -1, None]
SHAPES = [(300, 257), (4096, 10), (3, 50, 129)]


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    t = rng.integers(0, shape[-1], size=shape[:-1])
    t.reshape(-1)[::17] = -100
    y = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    w = rng.uniform(0.5, 2.0, shape[-1])
    return x, t, y, w


def _same(results):
    first = results[0]
    for r in results[1:]:
        for a, b in zip(first, r):
            a, b = np.asarray(a), np.asarray(b)
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes(), "results differ between thread counts"


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_softmax_family_bitwise_identical_across_threads(shape, dt):
    x, *_ = _data(shape, dt)
    _same([(xf.softmax(x, n_threads=n), xf.log_softmax(x, n_threads=n), xf.logsumexp(x, n_threads=n))
           for n in THREADS])


OPTS = [
    dict(),
    dict(weight="w", label_smoothing=0.1),
    dict(z_loss=1e-3, softcap=5.0, label_smoothing=0.05),
]


@pytest.mark.parametrize("opts", OPTS, ids=lambda o: ",".join(o) or "default")
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_cross_entropy_bitwise_identical_across_threads(dt, shape, kind, opts):
    x, t, y, w = _data(shape, dt)
    target = t if kind == "index" else y
    kw = dict(opts)
    if "weight" in kw:
        kw["weight"] = w
    results = []
    for n in THREADS:
        r = []
        for red in ["mean", "sum", "none"]:
            loss, g = xf.cross_entropy_and_grad(x, target, reduction=red, n_threads=n, **kw)
            r += [loss, g, xf.cross_entropy(x, target, reduction=red, n_threads=n, **kw)]
        results.append(r)
    _same(results)


def test_threaded_results_are_correct(rng):
    x, t, y, w = _data((300, 257), np.float64, seed=1)
    for n in [2, -1]:
        loss, g = xf.cross_entropy_and_grad(x, t, weight=w, label_smoothing=0.1, n_threads=n)
        rl, rg = ref.cross_entropy_and_grad(x, t, weight=w, label_smoothing=0.1)
        assert_close(loss, rl, np.float64)
        assert_close(g, rg, np.float64)
        assert_close(xf.logsumexp(x, n_threads=n), ref.logsumexp(x), np.float64)


def test_in_place_gradient_bitwise_identical_across_threads():
    x, t, _, _ = _data((4096, 10), np.float32)
    results = []
    for n in THREADS:
        xc = x.copy()
        loss, g = xf.cross_entropy_and_grad(xc, t, grad_out=xc, n_threads=n)
        results.append((loss, xc))
    _same(results)


def test_in_place_softmax_bitwise_identical_across_threads():
    x, *_ = _data((300, 257), np.float64)
    results = []
    for n in THREADS:
        xc = x.copy()
        xf.log_softmax(xc, out=xc, n_threads=n)
        results.append((xc,))
    _same(results)


def test_more_threads_than_rows_is_fine():
    x, t, _, _ = _data((2, 7), np.float64)
    _same([xf.cross_entropy_and_grad(x, t, n_threads=n) for n in [1, 8, 64]])
    _same([(xf.softmax(x, n_threads=n),) for n in [1, 8, 64]])


def test_empty_batch_with_threads():
    x = np.zeros((0, 5))
    for n in THREADS:
        assert xf.cross_entropy(x, np.zeros(0, np.int64), n_threads=n) == 0.0
        assert xf.softmax(x, n_threads=n).shape == (0, 5)


# A count past what the system can start used to end the process ("libgomp: Thread
# creation failed"): the kernels cap it at four threads per processor. Each case runs in
# a child process, which also counts the threads the OpenMP pool left alive.
_HUGE_THREADS = """
import os, sys, numpy as np, xent_fast as xf
x = np.zeros((40000, 16), np.float32)
t = np.zeros(40000, np.int64)
y = np.full((40000, 16), 1 / 16, np.float32)
calls = [lambda n: xf.softmax(x, n_threads=n), lambda n: xf.log_softmax(x, n_threads=n),
         lambda n: xf.logsumexp(x, n_threads=n), lambda n: xf.cross_entropy(x, t, n_threads=n),
         lambda n: xf.cross_entropy_and_grad(x, y, n_threads=n),
         lambda n: xf.binary_cross_entropy_with_logits(x, y, n_threads=n),
         lambda n: xf.score(x, t, n_threads=n), lambda n: xf.info.entropy(y)]
most = 0
for call in calls:
    call(int(sys.argv[1]) if sys.argv[1] != "None" else None)
    most = max(most, len(os.listdir("/proc/self/task")))  # libgomp keeps its pool alive
print(most)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
@pytest.mark.parametrize("n_threads, env", [(10**9, {}), (2**31 - 1, {}),
                                            (None, {"OMP_NUM_THREADS": "100000"})])
def test_thread_count_beyond_the_system_is_capped(n_threads, env, tmp_path):
    # run outside the checkout: an installed (not in-place) package is the one to import
    proc = subprocess.run([sys.executable, "-c", _HUGE_THREADS, str(n_threads)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    n_tasks = int(proc.stdout)
    # the pool's threads, plus a few of the interpreter's and NumPy's own
    assert n_tasks <= 4 * max(xf.config()["num_procs"], 1) + 8, proc.stdout
