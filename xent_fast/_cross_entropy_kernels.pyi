# Compiled cross-entropy kernels (src/_cross_entropy_kernels.pyx). Fused over
# float32/float64 logits and int32/int64 class indices; ``__signatures__`` maps
# "float|int64_t" and the like to the specialisation. Absent optional arrays are
# passed with length 0.
from typing import Any, Callable, Protocol

import numpy as np
import numpy.typing as npt

_F = npt.NDArray[np.floating[Any]]
_I = npt.NDArray[np.integer[Any]]

class _Fused(Protocol):
    """A Cython fused function: ``__signatures__`` maps a type string to one specialisation."""
    __signatures__: dict[str, Callable[..., Any]]
    def __call__(self, *args: Any) -> Any: ...

# def cross_entropy_index(
#     logits: _F, target: _I, weight: _F, loss_rows: _F, grad: _F, grad_rows: _F,
#     grad_output: float, mean: bool, ignore_index: int, label_smoothing: float,
#     z_loss: float, softcap: float, n_threads: int,
# ) -> tuple[float, float, int, int]:
#     """(loss sum, sum of weight[target], counted rows, first invalid row or -1)."""
#     ...
cross_entropy_index: _Fused

# def cross_entropy_probs(
#     logits: _F, target: _F, weight: _F, loss_rows: _F, grad: _F, grad_rows: _F,
#     grad_scale: float, label_smoothing: float, z_loss: float, softcap: float,
#     n_threads: int,
# ) -> float:
#     """The sum of the row losses."""
#     ...
cross_entropy_probs: _Fused
