# Compiled kernels of the binary family (src/_binary_kernels.pyx), fused over
# float32/float64; ``__signatures__`` maps "float"/"double" to the specialisation.
from typing import Any, Callable, Protocol

class _Fused(Protocol):
    """A Cython fused function: ``__signatures__`` maps a type string to one specialisation."""
    __signatures__: dict[str, Callable[..., Any]]
    def __call__(self, *args: Any) -> Any: ...

# def binary_loss(loss: int, x, y, w, pw, loss_out, grad, g_elems, grad_scale: float,
#                 alpha: float, gamma: float, n_threads: int) -> tuple[float, int]:
#     """(sum of the elementwise losses, flat position of the first bad probability or -1);
#     arrays are (n_rows, n_cols), w and pw strided broadcast views, absent ones (0, 0)."""
binary_loss: _Fused
