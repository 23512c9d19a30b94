# Compiled kernels of the softmax family (src/_softmax_kernels.pyx). Each is a fused
# function over float32/float64; ``__signatures__`` maps "float"/"double" to the
# specialisation. Arrays are C-contiguous (n_rows, n_classes); n_threads: 0 default,
# -1 all cores, k > 0 threads.
from typing import Any, Callable, Protocol

import numpy as np
import numpy.typing as npt

_F = npt.NDArray[np.floating[Any]]

class _Fused(Protocol):
    """A Cython fused function: ``__signatures__`` maps a type string to one specialisation."""
    __signatures__: dict[str, Callable[..., Any]]
    def __call__(self, *args: Any) -> Any: ...

# def softmax(logits: _F, out: _F, n_threads: int) -> None: ...
softmax: _Fused

# def log_softmax(logits: _F, out: _F, n_threads: int) -> None: ...
log_softmax: _Fused

# def logsumexp(logits: _F, out: _F, n_threads: int) -> None: ...
logsumexp: _Fused
