import os
import sys

import numpy as np
import pytest

# make tests/reference.py and tests/helpers.py importable as top-level modules
sys.path.insert(0, os.path.dirname(__file__))

from hypothesis import settings

settings.register_profile("xent", max_examples=60, deadline=None, database=None,
                          derandomize=bool(os.environ.get("CI")))
settings.load_profile("xent")


def pytest_configure(config):
    # Registered here rather than only in pyproject.toml: .ci/wheel runs a copy of the
    # tests outside the source tree, where pyproject.toml is not read.
    config.addinivalue_line(
        "markers", "wheel: builds, repairs and installs the wheel, then tests it (minutes; "
        "deselected by default, run with -m wheel)")


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture(params=[np.float16, np.float32, np.float64], ids=["f16", "f32", "f64"])
def dtype(request):
    return np.dtype(request.param)


def pytest_collection_modifyitems(config, items):
    # Tests marked slow run only with XENT_FAST_SLOW=1 (or -m slow).
    if os.environ.get("XENT_FAST_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: set XENT_FAST_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
