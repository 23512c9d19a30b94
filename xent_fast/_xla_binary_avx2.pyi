# The handler of _xla_binary compiled for AVX2 (setup.py SIMD_LEVELS).
from ._xla_binary import binary_loss as binary_loss
from ._xla_binary import configure as configure
from ._xla_binary import handler_capsule as handler_capsule
