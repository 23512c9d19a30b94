# The compiled XLA FFI handler of xent_fast.jax.distillation_loss (src/_xla_distill.pyx),
# which includes the kernels of src/_distill_kernels.pyx and so also exports their entry
# point: re-exported from xent_fast/_distill_kernels.pyi, then the handler's own functions.
from typing import Any

from ._distill_kernels import distillation as distillation

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
