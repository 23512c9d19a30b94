# The handler of _xla_distill compiled for AVX-512 (setup.py SIMD_LEVELS).
from ._xla_distill import distillation as distillation
from ._xla_distill import configure as configure
from ._xla_distill import handler_capsule as handler_capsule
