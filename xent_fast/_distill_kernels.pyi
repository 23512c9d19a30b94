# Compiled distillation kernels (src/_distill_kernels.pyx). They take ndarrays and check
# them in C: float32 or float64 logits (every float array of the call has their dtype),
# C-contiguous, aligned and native; keep is uint8; an optional array left out is None.
# A wrong array raises ValueError("internal error ...").
from typing import Any

import numpy as np
import numpy.typing as npt

_F = npt.NDArray[np.floating[Any]]

def distillation(
    student: _F, teacher: _F, keep: npt.NDArray[np.uint8] | None, loss_rows: _F | None,
    grad: _F | None, grad_rows: _F | None, grad_scale: float, temperature: float,
    beta: float, n_threads: int,
) -> float:
    """The sum of the row losses over kept rows."""
    ...
