# The kernels of _score_kernels compiled for AVX2 (setup.py SIMD_LEVELS).
from ._score_kernels import ECE_BINS as ECE_BINS
from ._score_kernels import EXACT_DIGITS as EXACT_DIGITS
from ._score_kernels import score_index as score_index
from ._score_kernels import score_probs as score_probs
from ._score_kernels import temperature_sums as temperature_sums
from ._score_kernels import totals_words as totals_words
