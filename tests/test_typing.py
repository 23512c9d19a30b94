"""The package is typed for its users: py.typed and a stub for every compiled module are
shipped beside the imported package, the stubs match the compiled modules, the package
passes ``mypy --strict``, and a user's code is checked against its annotations.

The imported package may be an in-place build in the checkout, or an installed copy
(CI installs the checkout; .ci/wheel runs a copy of the tests against the wheel): the
stub and py.typed checks look at what is imported, so they check what the wheel holds.
"""

import glob
import importlib.util
import os
import subprocess
import sys

import pytest

import xent_fast
from xent_fast import _simd

PACKAGE = os.path.dirname(os.path.abspath(xent_fast.__file__))
HOME = os.path.dirname(PACKAGE)          # the directory the package is imported from
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the checkout these tests belong to, if they are run from one
CHECKOUT = _ROOT if os.path.isfile(os.path.join(_ROOT, "pyproject.toml")) \
    and os.path.isfile(os.path.join(_ROOT, "xent_fast", "__init__.py")) else None
IN_PLACE = HOME == CHECKOUT
CONFIG = ["--config-file", os.path.join(CHECKOUT, "pyproject.toml")] if CHECKOUT else []
COMPILED = sorted({os.path.basename(p).split(".")[0]
                   for p in glob.glob(os.path.join(PACKAGE, "*.so"))
                   + glob.glob(os.path.join(PACKAGE, "*.pyd"))})
needs_mypy = pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                                reason="mypy is not installed")


def test_py_typed_marker_is_there():
    assert os.path.isfile(os.path.join(PACKAGE, "py.typed"))


def test_every_compiled_module_has_a_stub():
    assert COMPILED, "no compiled module found beside the package"
    missing = [m for m in COMPILED if not os.path.isfile(os.path.join(PACKAGE, m + ".pyi"))]
    assert not missing, f"compiled modules without a .pyi stub: {missing}"


def _mypy(args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _where_imported(tmp_path):
    """Directory to run mypy in so that it sees the imported package: the checkout for
    an in-place build, else anywhere else (mypy finds the installed copy by its py.typed)."""
    return HOME if IN_PLACE else str(tmp_path)


def _runs_here(module):
    # stubtest imports each module: one built for an instruction set this CPU lacks
    # (an _avx512 variant on an AVX2 machine) would die of SIGILL; it is checked where
    # it runs (its stub is its siblings' stub).
    level = next((lvl for lvl in ("avx2", "avx512") if module.endswith("_" + lvl)), "baseline")
    return level in _simd.available_levels()


@needs_mypy
def test_stubs_match_the_compiled_modules(tmp_path):
    allow = tmp_path / "allowlist.txt"
    allow.write_text("xent_fast\\..*\\.__test__\n")   # Cython's empty doctest table
    config = ["--mypy-config-file", CONFIG[1]] if CONFIG else []
    res = _mypy(["mypy.stubtest", "--allowlist", str(allow), *config,
                 *[f"xent_fast.{m}" for m in COMPILED if _runs_here(m)]],
                _where_imported(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr


USER_CODE = """
from typing import Any

import numpy as np
import numpy.typing as npt

import xent_fast as xf
from xent_fast import info

x: npt.NDArray[np.float32] = np.zeros((4, 5), np.float32)
t = np.array([0, 1, 2, 3])
p: np.ndarray = xf.softmax(x, n_threads=2)
lp: np.ndarray = xf.log_softmax(x, out=np.empty_like(x))
loss = xf.cross_entropy(x, t, label_smoothing=0.1, softcap=30.0)
pair: tuple[Any, np.ndarray] = xf.cross_entropy_and_grad(x, t, grad_out=x)
bce, g = xf.binary_cross_entropy_with_logits_and_grad(x, np.ones_like(x))
cfg: dict[str, Any] = xf.config()
h = info.entropy([0.5, 0.5], base=2)
version: str = xf.__version__
"""


@needs_mypy
def test_users_code_is_checked_against_the_annotations(tmp_path):
    (tmp_path / "good.py").write_text(USER_CODE)
    # a mistake the annotations must catch: n_threads is an int, not a str
    (tmp_path / "bad.py").write_text(USER_CODE + 'xf.softmax(x, n_threads="two")\n')
    env = dict(os.environ)
    if IN_PLACE:
        env["MYPYPATH"] = HOME
    cache = ["--cache-dir", str(tmp_path / "cache")]
    good = _mypy(["mypy", "--strict", *cache, "good.py"], str(tmp_path), env)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = _mypy(["mypy", "--strict", *cache, "bad.py"], str(tmp_path), env)
    assert bad.returncode == 1 and '"n_threads"' in bad.stdout, bad.stdout + bad.stderr
    # reduction is a Literal: a misspelt one is caught before it runs
    (tmp_path / "avg.py").write_text(USER_CODE + 'xf.cross_entropy(x, [0], reduction="avg")\n')
    avg = _mypy(["mypy", "--strict", *cache, "avg.py"], str(tmp_path), env)
    assert avg.returncode == 1 and '"reduction"' in avg.stdout, avg.stdout + avg.stderr


@needs_mypy
@pytest.mark.skipif(CHECKOUT is None, reason="checks the checkout's sources")
def test_package_passes_mypy_strict():
    # The sources of the checkout, with its configuration (optional frameworks taken as
    # Any), and --strict on the command line too: strict whatever the configuration says.
    res = _mypy(["mypy", *CONFIG, "--strict", "-p", "xent_fast"], CHECKOUT)
    assert res.returncode == 0, res.stdout + res.stderr
