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


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture(params=[np.float16, np.float32, np.float64], ids=["f16", "f32", "f64"])
def dtype(request):
    return np.dtype(request.param)
