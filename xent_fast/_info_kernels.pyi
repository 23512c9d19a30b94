# Compiled kernels of the information measures (src/_info_kernels.pyx), fused over
# float32/float64. Both return the flat position of the first value outside [0, 1],
# or -1.
from typing import Any, Callable, Protocol

import numpy as np
import numpy.typing as npt

_F = npt.NDArray[np.floating[Any]]

class _Fused(Protocol):
    """A Cython fused function: ``__signatures__`` maps a type string to one specialisation."""
    __signatures__: dict[str, Callable[..., Any]]
    def __call__(self, *args: Any) -> Any: ...

# def measure_rows(p: _F, q: _F, out: _F, measure: int, scale: float, n_threads: int) -> int: ...
measure_rows: _Fused

# def surprisal(p: _F, out: _F, scale: float, n_threads: int) -> int: ...
surprisal: _Fused
