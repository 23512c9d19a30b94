"""Build and run-time information: what ``xent_fast.config()`` returns."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import _runtime, _simd

try:
    __version__ = version("xent_fast")
except PackageNotFoundError:  # running from a source tree that was built in place
    __version__ = "0.1.0"


def config() -> dict[str, Any]:
    """Return the build configuration and run-time facts as a dict.

    Returns
    -------
    dict
        ``version``, ``openmp`` (bool: built with OpenMP), ``openmp_version`` (the
        ``_OPENMP`` date, 0 for a serial build), ``openmp_runtime`` (file name of the
        loaded OpenMP library, None if unknown), ``max_threads`` (threads
        ``n_threads=None`` uses now), ``num_procs`` (what ``n_threads=-1`` uses),
        ``simd`` (the instruction set the kernels run with: ``baseline``, ``avx2`` or
        ``avx512``; ``XENT_FAST_SIMD`` forces one) and ``simd_available`` (the levels
        this CPU and build can run).

    Examples
    --------
    >>> import xent_fast as xf
    >>> sorted(xf.config())[:3]
    ['max_threads', 'num_procs', 'openmp']
    """
    omp_version = _runtime.openmp_version()
    return {
        "version": __version__,
        "openmp": omp_version > 0,
        "openmp_version": omp_version,
        "openmp_runtime": os.path.basename(_runtime.openmp_library()) or None,
        "max_threads": _runtime.max_threads(),
        "num_procs": _runtime.num_procs(),
        "simd": _simd.LEVEL,
        "simd_available": _simd.available_levels(),
    }


def show_config() -> None:
    """Print :func:`config` as aligned ``key: value`` lines.

    Examples
    --------
    >>> import xent_fast as xf
    >>> xf.show_config()  # doctest: +ELLIPSIS
    xent_fast ...
    """
    cfg = config()
    print(f"xent_fast {cfg['version']}")
    for key, value in cfg.items():
        if key != "version":
            print(f"  {key + ':':<16}{value}")
