# The kernels of _binary_kernels compiled for AVX512 (setup.py SIMD_LEVELS).
from ._binary_kernels import binary_loss as binary_loss
