# Compiled cross-entropy kernels (src/_cross_entropy_kernels.pyx). They take ndarrays
# and check them in C: float32 or float64 logits (every float array of the call has
# their dtype), int32 or int64 class indices, C-contiguous, aligned and native; an
# optional array left out is None. A wrong array raises ValueError("internal error ...").
from typing import Any

import numpy as np
import numpy.typing as npt

_F = npt.NDArray[np.floating[Any]]
_I = npt.NDArray[np.signedinteger[Any]]

def cross_entropy_index(
    logits: _F, target: _I, weight: _F | None, loss_rows: _F | None, grad: _F | None,
    grad_rows: _F | None, grad_output: float, mean: bool, ignore_index: int,
    label_smoothing: float, z_loss: float, softcap: float, n_threads: int,
) -> tuple[float, float, int, int]:
    """(loss sum, sum of weight[target], counted rows, first invalid row or -1)."""
    ...

def cross_entropy_probs(
    logits: _F, target: _F, weight: _F | None, loss_rows: _F | None, grad: _F | None,
    grad_rows: _F | None, grad_scale: float, label_smoothing: float, z_loss: float,
    softcap: float, n_threads: int,
) -> float:
    """The sum of the row losses."""
    ...
