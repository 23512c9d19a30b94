"""Every example in the public docstrings runs and prints what it says."""

import doctest

import pytest

import xent_fast
import xent_fast.dask
from xent_fast import _binary, _config, _cross_entropy, _score, _softmax, info

MODULES = [_softmax, _cross_entropy, _binary, _score, info, _config, xent_fast.dask]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    if module is xent_fast.dask:
        pytest.importorskip("dask.array")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0


def test_every_public_function_has_an_example():
    names = [n for n in xent_fast.__all__ if callable(getattr(xent_fast, n))]
    names += [f"info.{n}" for n in info.__all__]
    for name in names:
        obj = xent_fast
        for part in name.split("."):
            obj = getattr(obj, part)
        assert obj.__doc__ and ">>>" in obj.__doc__, f"{name} lacks a docstring example"
