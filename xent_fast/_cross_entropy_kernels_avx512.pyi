# The kernels of _cross_entropy_kernels compiled for AVX512 (setup.py SIMD_LEVELS).
from ._cross_entropy_kernels import cross_entropy_index as cross_entropy_index
from ._cross_entropy_kernels import cross_entropy_probs as cross_entropy_probs
