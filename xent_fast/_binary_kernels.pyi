# Compiled kernels of the binary family (src/_binary_kernels.pyx). They take ndarrays
# and check them in C: every array has x's shape (n_rows, n_cols) and float32 or float64
# dtype; all but w and pw (strided views broadcast to x) are C-contiguous, aligned and
# native; an absent one is None. A wrong array raises ValueError("internal error ...").
from typing import Any

import numpy as np
import numpy.typing as npt

_F = npt.NDArray[np.floating[Any]]

def binary_loss(
    loss: int, x: _F, y: _F, w: _F | None, pw: _F | None, loss_out: _F | None,
    grad: _F | None, g_elems: _F | None, grad_scale: float, alpha: float, gamma: float,
    n_threads: int,
) -> tuple[float, int]:
    """(sum of the elementwise losses, flat position of the first bad probability or -1);
    loss is 0 for probabilities, 1 for logits, 2 for the focal loss."""
    ...
