# Compiled kernels of the softmax family (src/_softmax_kernels.pyx). They take ndarrays
# and check them in C: C-contiguous, aligned, native float32 or float64 logits of shape
# (n_rows, n_classes), and an output of the same dtype, of that shape (logsumexp:
# (n_rows,)); a wrong array raises ValueError("internal error ..."). n_threads: 0
# default, -1 all cores, k > 0 threads.
from typing import Any

import numpy as np
import numpy.typing as npt

_F = npt.NDArray[np.floating[Any]]

def softmax(logits: _F, out: _F, n_threads: int) -> None: ...
def log_softmax(logits: _F, out: _F, n_threads: int) -> None: ...
def logsumexp(logits: _F, out: _F, n_threads: int) -> None: ...
