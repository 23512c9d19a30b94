"""Maintainer sessions: ``nox -l`` lists them, ``nox -s NAME`` runs one.

* ``tests-3.10`` ... ``tests-3.13``: build and install the package with its test extra
  into a fresh virtual environment of each CPython found on the machine, and run the
  suite (with XENT_FAST_ORACLES=1 also PyTorch, JAX and optax, the oracles).
* ``docs``: the Sphinx site with warnings as errors, then its doctests.
* ``typing``: ``mypy --strict`` on the package, and ``stubtest`` of the compiled modules'
  stubs (``xent_fast/*.pyi``) against the built modules.
* ``lint``: every pre-commit hook (ruff, ruff format, cython-lint, codespell) on the tree.

Interpreters: those on PATH, and the pyenv versions in ~/.pyenv/versions (or
$PYENV_ROOT), so a machine with pyenv needs no activation. A missing one is skipped.
"""

from __future__ import annotations

import glob
import os

import nox

nox.options.sessions = ["tests", "docs", "typing", "lint"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

# pyenv's interpreters, found by nox as pythonX.Y once their bin/ is on PATH
_pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
for _bin in sorted(glob.glob(os.path.join(_pyenv, "versions", "3.1[0-3]*", "bin"))):
    if _bin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + _bin

# The oracles the suite compares against where XENT_FAST_ORACLES=1: PyTorch's CPU build
# (the version .ci/run pins), JAX and optax. Without them their tests are skipped: .ci/run
# runs them once, with the README's command, and the other interpreters without.
ORACLES = ["torch==2.13.0", "jax", "jaxlib", "optax"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite against the package installed into the session's venv."""
    session.install(".[test]")
    if os.environ.get("XENT_FAST_ORACLES") == "1":
        session.install(*ORACLES)
    # the README's command from the root: pytest (not python -m pytest, which would put
    # the source tree's package, without its compiled modules, first on the path)
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """sphinx-build -W (html), then the doctest builder over the same pages."""
    # the guide runs PyTorch, JAX and dask examples: the oracles .ci/run pins
    session.install(".[docs,dask]", *ORACLES)
    session.chdir(session.create_tmp())
    root = os.path.dirname(os.path.abspath(__file__))
    src, out = os.path.join(root, "docs"), os.path.join(root, "docs", "_build")
    # from outside the source tree, so that the installed package is documented
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", src, os.path.join(out, "html"))
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "doctest", src, os.path.join(out, "doctest")
    )


@nox.session(python="3.11")
def typing(session: nox.Session) -> None:
    """mypy --strict (pyproject's [tool.mypy]) and stubtest of the compiled modules."""
    session.install(".[test]", "mypy")
    root = os.path.dirname(os.path.abspath(__file__))
    session.run("mypy", "--config-file", os.path.join(root, "pyproject.toml"), "-p", "xent_fast")
    session.chdir(session.create_tmp())
    stubs = sorted(
        os.path.basename(p)[:-4] for p in glob.glob(os.path.join(root, "xent_fast", "*.pyi"))
    )
    session.run(
        "python", "-m", "mypy.stubtest", "--ignore-missing-stub", *(f"xent_fast.{s}" for s in stubs)
    )


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """Every pre-commit hook on every file."""
    session.run("pre-commit", "run", "--all-files", "--show-diff-on-failure")
