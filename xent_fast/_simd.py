"""Choice of the instruction-set level the kernels run with.

The hot kernel modules are compiled from the same source for several levels: the
baseline (any x86-64, or any other CPU), ``avx2`` (AVX2 + FMA) and ``avx512`` (AVX-512
F/BW/DQ/VL). At import xent_fast takes the widest level that both the CPU supports and
the build contains; ``XENT_FAST_SIMD=baseline|avx2|avx512`` asks for a level (a level
the CPU cannot run is refused with a warning, never executed). ``TILE_GATHER`` says
whether the AVX-512 kernels load full tiles of short float32 rows by gathers; both are
read once, at import.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

from . import _runtime

LEVELS = ("baseline", "avx2", "avx512")


def _gathers_fast() -> bool:
    """Whether the kernels may load short-row tiles by AVX-512 gathers.

    Only where Linux reports the CPU not affected by Gather Data Sampling: the microcode
    that mitigates it makes gathers several times slower. ``XENT_FAST_TILE_GATHER=0|1``
    decides instead (the results are the same either way).
    """
    forced = os.environ.get("XENT_FAST_TILE_GATHER", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        warnings.warn(f"XENT_FAST_TILE_GATHER={forced!r} is not 0 or 1; ignored",
                      RuntimeWarning, stacklevel=2)
    try:
        with open("/sys/devices/system/cpu/vulnerabilities/gather_data_sampling") as f:
            return f.read().strip() == "Not affected"
    except OSError:
        return False


# Read by the kernel modules when they are imported (xf_set_tile_gather): it must stay
# above LEVEL = _choose(), whose _built() imports some of them.
TILE_GATHER = _gathers_fast()


def _built(level: str) -> bool:
    if level == "baseline":
        return True
    try:
        importlib.import_module(f"xent_fast._softmax_kernels_{level}")
    except ImportError:
        return False
    return True


def available_levels() -> list[str]:
    """Levels that this CPU can run and this build contains, narrowest first."""
    cpu = _runtime.cpu_level()
    return [lvl for i, lvl in enumerate(LEVELS) if i <= cpu and _built(lvl)]


def _choose() -> str:
    levels = available_levels()
    wanted = os.environ.get("XENT_FAST_SIMD", "").strip().lower()
    if not wanted:
        return levels[-1]
    if wanted not in LEVELS:
        warnings.warn(f"XENT_FAST_SIMD={wanted!r} is not one of {LEVELS}; using {levels[-1]}",
                      RuntimeWarning, stacklevel=2)
        return levels[-1]
    if wanted not in levels:
        warnings.warn(f"XENT_FAST_SIMD={wanted!r} is not available on this CPU or build "
                      f"(available: {levels}); using {levels[-1]}", RuntimeWarning, stacklevel=2)
        return levels[-1]
    return wanted


LEVEL = _choose()


def kernels(name: str, level: str = LEVEL) -> ModuleType:
    """The compiled module ``xent_fast.<name>`` for the chosen level."""
    suffix = "" if level == "baseline" else f"_{level}"
    return importlib.import_module(f"xent_fast.{name}{suffix}")
