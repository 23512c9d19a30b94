"""Conformance with optax's own tests (issue 18).

optax's test module of its classification losses (``optax/losses/_classification_test.py``,
shipped in the installed wheel, not copied) is run as optax runs it, with
``optax.losses._classification``'s ``softmax_cross_entropy``,
``softmax_cross_entropy_with_integer_labels``, ``sigmoid_binary_cross_entropy`` and
``sigmoid_focal_loss`` replaced by ``xent_fast.jax``'s before the tests import them: the
shapes, options, ``where`` masks, ``axis`` values, transformations (``jit``, ``grad``,
``vmap``) and tolerances are optax's. The test classes of those four losses must pass,
and must have called each of ours.
"""

import json
import os
import subprocess
import sys

import pytest

optax = pytest.importorskip("optax")
pytest.importorskip("xent_fast.jax")
pytest.importorskip("absl.testing")

TESTS = os.path.join(os.path.dirname(optax.__file__), "losses", "_classification_test.py")
CLASSES = ["SoftmaxCrossEntropyTest", "SoftmaxCrossEntropyWithIntegerLabelsTest",
           "SigmoidCrossEntropyTest", "SigmoidFocalLossTest"]
SWAPPED = ["softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels",
           "sigmoid_binary_cross_entropy", "sigmoid_focal_loss"]

# A pytest plugin, loaded before optax's test module is collected: it puts our losses in
# optax's place, counts the calls of each, and writes the counts at the end.
SWAP = f"""
import functools, json
import xent_fast.jax as xfj
from optax.losses import _classification

calls = {{}}

def counted(name, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        calls[name] = calls.get(name, 0) + 1
        return fn(*args, **kwargs)
    return wrapper

for name in {SWAPPED!r}:
    setattr(_classification, name, counted(name, getattr(xfj, name)))

def pytest_sessionfinish(session):
    with open("calls.json", "w") as f:
        json.dump(calls, f)
"""


@pytest.mark.skipif(not os.path.exists(TESTS), reason="this optax wheel ships no tests")
def test_optax_classification_tests_pass_with_our_losses(tmp_path):
    (tmp_path / "xent_fast_swap.py").write_text(SWAP)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("JAX_PLATFORMS", "cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "xent_fast_swap",
         "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", str(tmp_path),
         *[f"{TESTS}::{c}" for c in CLASSES]],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    report = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, report
    assert " passed" in proc.stdout and " failed" not in proc.stdout, report
    # the swap took: optax's tests called each of ours
    calls = json.loads((tmp_path / "calls.json").read_text())
    assert all(calls.get(name, 0) > 0 for name in SWAPPED), calls
