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

import numpy as np
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
# The annotations are written against NumPy 2.3+'s stubs, where a bare np.ndarray or
# np.dtype has default type arguments; older stubs (NumPy 2.2, which CPython 3.10 gets)
# make every bare one an error under --strict.
_NUMPY = tuple(int(p) for p in np.__version__.split(".")[:2])
needs_numpy_stubs = pytest.mark.skipif(_NUMPY < (2, 3),
                                       reason="type checks need NumPy >= 2.3's stubs")


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
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

import xent_fast as xf
from xent_fast import info

Floats = npt.NDArray[np.floating[Any]]
x: npt.NDArray[np.float32] = np.zeros((4, 5), np.float32)
t = np.array([0, 1, 2, 3])
p: np.ndarray = xf.softmax(x, n_threads=2)
lp: np.ndarray = xf.log_softmax(x, out=np.empty_like(x))
cfg: dict[str, Any] = xf.config()
h = info.entropy([0.5, 0.5], base=2)
version: str = xf.__version__
# the losses' types follow reduction: "mean" (the default) and "sum" give a NumPy scalar
loss: np.floating[Any] = xf.cross_entropy(x, t, label_smoothing=0.1, softcap=30.0)
total: np.floating[Any] = xf.binary_cross_entropy(x, x, reduction="sum")
focal_mean: np.floating[Any] = xf.sigmoid_focal_loss(x, x, reduction="mean")
# "none" gives the losses: an array, or a scalar for one 1-D row (the loss has no axis)
rows: Floats | np.floating[Any] = xf.cross_entropy(x, t, reduction="none")
focal: Floats | np.floating[Any] = xf.sigmoid_focal_loss(x, x)   # torchvision's "none"
per_row = np.asarray(xf.binary_cross_entropy_with_logits(x, x, reduction="none"))
per_row[0] = 0.0
how: Literal["mean", "sum", "none"] = "sum"
either: Floats | np.floating[Any] = xf.cross_entropy(x, t, reduction=how)
# the *_and_grad twins: (loss, gradient), the loss typed as above
ce_loss, grad = xf.cross_entropy_and_grad(x, t, grad_out=x)
scalar: np.floating[Any] = ce_loss
grad_rows: tuple[Floats | np.floating[Any], Floats] = xf.cross_entropy_and_grad(
    x, t, reduction="none", grad_output=np.ones(4))
bce, g = xf.binary_cross_entropy_with_logits_and_grad(x, np.ones_like(x), pos_weight=[2.0] * 5)
focal_pair: tuple[np.floating[Any], Floats] = xf.sigmoid_focal_loss_and_grad(
    x, x, reduction="sum")
# the linear head: the bias gradient is None without a bias
w = np.ones((7, 5), np.float32)
lin: np.floating[Any] = xf.linear_cross_entropy(x, w, t)
lin_loss, g_hidden, g_weight, g_bias = xf.linear_cross_entropy_and_grad(
    x, w, t, linear_bias=np.zeros(7, np.float32))
if g_bias is not None:
    g_bias_norm = float(np.abs(g_bias).max())
"""

# Mistakes the annotations catch before anything runs, with what mypy's report names.
MISTAKES = [
    ('xf.softmax(x, n_threads="two")', '"n_threads"'),
    # reduction is a Literal: a misspelt one matches no overload
    ('xf.cross_entropy(x, t, reduction="avg")', "reduction: Literal["),
    # the loss, not the (loss, grad) of cross_entropy_and_grad
    ("loss_, grad_ = xf.cross_entropy(x, t)", '"floating[Any]" object is not iterable'),
    # the "mean" loss is a scalar, not one loss per row
    ("arr: np.ndarray = xf.cross_entropy(x, t)", "Incompatible types in assignment"),
    # sigmoid_focal_loss's default reduction is "none" (torchvision's): not a scalar
    ("s: np.floating[Any] = xf.sigmoid_focal_loss(x, x)", "Incompatible types in assignment"),
    # "none" of a single row is a scalar: index it only after np.asarray
    # (NumPy < 2.5's stubs: "is not indexable"; 2.5's: no __getitem__ overload for an int)
    ('xf.cross_entropy(x, t, reduction="none")[0]', ("is not indexable", '"__getitem__"')),
    # linear_cross_entropy_and_grad returns 4 values
    ("l_, g_ = xf.linear_cross_entropy_and_grad(x, w, t)", "Too many values to unpack"),
    # ... and the bias gradient is None without a bias
    ("xf.linear_cross_entropy_and_grad(x, w, t)[3].sum()", 'Item "None"'),
]


@needs_mypy
@needs_numpy_stubs
def test_users_code_is_checked_against_the_annotations(tmp_path):
    (tmp_path / "good.py").write_text(USER_CODE)
    # every mistake on its own line after the good code: mypy must report each one there
    (tmp_path / "bad.py").write_text(USER_CODE + "".join(m + "\n" for m, _ in MISTAKES))
    env = dict(os.environ)
    if IN_PLACE:
        env["MYPYPATH"] = HOME
    cache = ["--cache-dir", str(tmp_path / "cache")]
    good = _mypy(["mypy", "--strict", *cache, "good.py"], str(tmp_path), env)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = _mypy(["mypy", "--strict", *cache, "bad.py"], str(tmp_path), env)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    first = USER_CODE.count("\n") + 1
    for line, (mistake, named) in enumerate(MISTAKES, first):
        report = [r for r in bad.stdout.splitlines() if r.startswith(f"bad.py:{line}:")]
        assert any(" error: " in r for r in report), f"not caught: {mistake}\n{bad.stdout}"
        names = named if isinstance(named, tuple) else (named,)
        assert any(n in "\n".join(report) for n in names), \
            f"{mistake}: {named} not in\n{bad.stdout}"


@needs_mypy
@needs_numpy_stubs
@pytest.mark.skipif(CHECKOUT is None, reason="checks the checkout's sources")
def test_package_passes_mypy_strict():
    # The sources of the checkout, with its configuration (optional frameworks taken as
    # Any), and --strict on the command line too: strict whatever the configuration says.
    res = _mypy(["mypy", *CONFIG, "--strict", "-p", "xent_fast"], CHECKOUT)
    assert res.returncode == 0, res.stdout + res.stderr
