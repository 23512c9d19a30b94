# The handler of _xla_cross_entropy compiled for AVX2 (setup.py SIMD_LEVELS).
from ._xla_cross_entropy import cross_entropy_index as cross_entropy_index
from ._xla_cross_entropy import cross_entropy_probs as cross_entropy_probs
from ._xla_cross_entropy import configure as configure
from ._xla_cross_entropy import handler_capsule as handler_capsule
