"""xent_fast beside other thread pools: OMP_NUM_THREADS, threadpoolctl, and PyTorch's
OpenMP pool in the same process (imported in either order)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import xent_fast as xf
from xent_fast import _runtime

threadpoolctl = pytest.importorskip("threadpoolctl")
needs_openmp = pytest.mark.skipif(not xf.config()["openmp"], reason="serial build")


def _package_parent():
    return os.path.dirname(os.path.dirname(xf.__file__))


def _run(code, **env):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=_package_parent(), env={**os.environ, **env}, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# A workload large enough to run on several threads, and a digest of its results.
_WORK = """
import hashlib, numpy as np, xent_fast as xf
rng = np.random.default_rng(0)
x = rng.standard_normal((4096, 700)).astype(np.float32)
t = rng.integers(0, 700, 4096)
loss, grad = xf.cross_entropy_and_grad(x, t, label_smoothing=0.1)
digest = hashlib.sha256(loss.tobytes() + grad.tobytes()).hexdigest()
"""


@needs_openmp
def test_threadpool_info_lists_the_openmp_runtime_of_the_kernels():
    libs = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "openmp"]
    ours = os.path.basename(xf.config()["openmp_runtime"])
    assert any(os.path.basename(i["filepath"]).startswith(ours.split(".so")[0]) for i in libs), libs


@needs_openmp
def test_threadpool_limits_bound_the_default_thread_count():
    before = _runtime.max_threads()
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert _runtime.max_threads() == 1
        assert xf.config()["max_threads"] == 1
        x = np.random.default_rng(1).standard_normal((2048, 500)).astype(np.float32)
        limited = xf.cross_entropy(x, np.zeros(2048, np.int64), reduction="none")
    assert _runtime.max_threads() == before
    free = xf.cross_entropy(x, np.zeros(2048, np.int64), reduction="none")
    assert np.array_equal(limited, free)


@needs_openmp
def test_omp_num_threads_sets_the_default():
    assert _run("from xent_fast import _runtime; print(_runtime.max_threads())",
                OMP_NUM_THREADS="1") == "1"


def test_results_do_not_depend_on_the_environment_thread_count():
    one = _run(_WORK + "print(digest)", OMP_NUM_THREADS="1")
    two = _run(_WORK + "print(digest)", OMP_NUM_THREADS="2")
    assert one == two


@pytest.mark.parametrize("order", ["torch first", "xent_fast first"])
def test_next_to_pytorch_in_either_import_order(order):
    pytest.importorskip("torch")
    imports = ("import torch\nimport xent_fast\n" if order == "torch first"
               else "import xent_fast\nimport torch\n")
    code = imports + _WORK + """
import torch.nn.functional as F
ref = F.cross_entropy(torch.from_numpy(x), torch.from_numpy(t), label_smoothing=0.1,
                      ).numpy()
assert np.allclose(loss, ref, rtol=1e-5, atol=1e-6)
torch.set_num_threads(1)
assert hashlib.sha256(b"".join(a.tobytes() for a in xf.cross_entropy_and_grad(
    x, t, label_smoothing=0.1))).hexdigest() == digest
n = torch.get_num_threads()
xf.cross_entropy_and_grad(x, t, n_threads=2)
assert torch.get_num_threads() == n
print(digest)
"""
    # the digest is the one a process without PyTorch computes
    assert _run(code) == _run(_WORK + "print(digest)")
