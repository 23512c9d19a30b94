"""A process forked after xent_fast used its OpenMP threads can call every function.

GNU OpenMP hangs in such a child (the thread pool it inherits has no threads); PyTorch
DataLoader workers are forked children. xent_fast runs serially there instead.
"""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import xent_fast as xf

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _every_function(n_threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 300)).astype(np.float32)   # large enough for threads
    t = rng.integers(0, 300, 3000)
    y = xf.softmax(rng.standard_normal((3000, 300)))
    xf.softmax(x, n_threads=n_threads)
    xf.log_softmax(x, n_threads=n_threads)
    xf.logsumexp(x, n_threads=n_threads)
    xf.cross_entropy_and_grad(x, t, n_threads=n_threads)
    xf.cross_entropy_and_grad(x.astype(np.float64), y, n_threads=n_threads)
    xf.cross_entropy_and_grad(x, t, label_smoothing=0.1, softcap=5.0, n_threads=n_threads)
    xf.binary_cross_entropy_with_logits_and_grad(x, (x > 0).astype(np.float32), n_threads=n_threads)
    xf.binary_cross_entropy_and_grad(y, y, n_threads=n_threads)
    xf.sigmoid_focal_loss_and_grad(x, (x > 0).astype(np.float32), n_threads=n_threads)
    xf.info.entropy(y)
    xf.info.kl_divergence(y, y)
    xf.info.surprisal(y)
    xf.score(x.astype(np.float64), y, n_threads=n_threads)
    summary = xf.score(x, t, n_threads=n_threads).summary()
    assert summary["loss"] == float(xf.score(x, t, n_threads=1).summary()["loss"])
    return float(xf.cross_entropy(x, t, n_threads=n_threads))


def _fork_check(child_threads):
    """Threaded calls in this process, then every function in a forked child."""
    expected = _every_function(2)           # the parent starts its OpenMP threads
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                            # child: never return into the caller
        code = 1
        try:
            os.close(read_end)
            value = _every_function(child_threads)
            os.write(write_end, repr(value).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError("the forked child hung in an xent_fast call")
    got = os.read(read_end, 100).decode()
    os.close(read_end)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    # serial in the child, threaded in the parent: bitwise the same result
    assert float(got) == expected, (got, expected)


@pytest.mark.parametrize("child_threads", [None, 2])
def test_forked_child_after_threaded_parent_finishes(child_threads):
    # In a fresh interpreter: the test process may have imported JAX or PyTorch, whose
    # own threads make fork() unsafe for reasons that have nothing to do with xent_fast.
    parent = os.path.dirname(os.path.dirname(xf.__file__))
    out = subprocess.run([sys.executable, __file__, str(child_threads)], capture_output=True,
                         text=True, timeout=180,
                         env={**os.environ, "PYTHONPATH": parent})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr


if __name__ == "__main__":
    _fork_check(None if sys.argv[1] == "None" else int(sys.argv[1]))
    print("ok")
