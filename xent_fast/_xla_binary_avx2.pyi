# The compiled XLA FFI handler of xent_fast.jax (src/_xla_binary.pyx), which includes
# the kernels of src/_binary_kernels.pyx and so also exports their entry points:
# the stub of xent_fast/_binary_kernels.pyi, then the handler's own functions.
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

def configure(
    parallel_from: int | None = None, helpers: int | None = None,
    use_openmp: bool | None = None,
) -> tuple[int, int, bool]:
    """Set (each argument not None) and return the thread policy of the handler as
    (parallel_from, helpers, use_openmp)."""
    ...

def handler_capsule() -> Any:
    """The handler as a PyCapsule, for jax.ffi.register_ffi_target."""
    ...
