# The compiled XLA FFI handler of xent_fast.jax (src/_xla_binary.pyx), which includes
# the kernels of src/_binary_kernels.pyx and so also exports their entry points:
# re-exported from xent_fast/_binary_kernels.pyi, then the handler's own functions.
from typing import Any

from ._binary_kernels import binary_loss as binary_loss

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
