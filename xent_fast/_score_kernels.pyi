# Compiled batch-scoring kernels (src/_score_kernels.pyx). Fused over float32/float64
# logits and int32/int64 class indices; ``__signatures__`` maps "float|int64_t" and the
# like to the specialisation. The per-row outputs are all arrays or all None.
from typing import Any, Callable, Protocol

import numpy as np
import numpy.typing as npt

_F = npt.NDArray[np.floating[Any]]

EXACT_DIGITS: int
ECE_BINS: int

def totals_words(nbins: int, n_classes: int) -> int:
    """The length of the totals array of nbins calibration bins and n_classes classes."""

class _Fused(Protocol):
    """A Cython fused function: ``__signatures__`` maps a type string to one specialisation."""
    __signatures__: dict[str, Callable[..., Any]]
    def __call__(self, *args: Any) -> Any: ...

# def score_index(
#     logits: _F, target: npt.NDArray[np.integer[Any]], k: int, ignore_index: int,
#     inv_t: float, nbins: int, loss: _F | None, pred: npt.NDArray[np.int64] | None, target_prob: _F | None,
#     in_top_k: npt.NDArray[np.uint8] | None, entropy: _F | None,
#     confidence: _F | None, counted: npt.NDArray[np.uint8] | None,
#     totals_out: npt.NDArray[np.int64], n_threads: int,
# ) -> int:
#     """The first row with an invalid class index, or -1."""
score_index: _Fused

# def score_probs(
#     logits: _F, target: _F, k: int, inv_t: float, nbins: int,
#     <the per-row outputs as score_index>,
#     totals_out: npt.NDArray[np.int64], n_threads: int,
# ) -> None: ...
score_probs: _Fused

# def temperature_sums(
#     logits: _F, target: npt.NDArray[np.integer[Any]], ignore_index: int, inv_t: float,
#     n_threads: int,
# ) -> tuple[int, int, float, float, float, int]:
#     """(rows, nonfinite rows, sum of losses, of dL/ds, of d2L/ds2, first bad row or -1)."""
temperature_sums: _Fused
