# The compiled XLA FFI handler of xent_fast.jax (src/_xla_cross_entropy.pyx), which includes
# the kernels of src/_cross_entropy_kernels.pyx and so also exports their entry points:
# the stub of xent_fast/_cross_entropy_kernels.pyi, then the handler's own functions.
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
