# The kernels of _softmax_kernels compiled for AVX512 (setup.py SIMD_LEVELS).
from ._softmax_kernels import log_softmax as log_softmax
from ._softmax_kernels import logsumexp as logsumexp
from ._softmax_kernels import softmax as softmax
