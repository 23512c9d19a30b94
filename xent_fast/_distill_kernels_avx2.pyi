# The kernels of _distill_kernels compiled for AVX2 (setup.py SIMD_LEVELS).
from ._distill_kernels import distillation as distillation
