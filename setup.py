"""Build the compiled kernels of xent_fast.

The Cython sources live in ``src/`` and compile into extension modules inside the
``xent_fast`` package. OpenMP is used when the compiler supports it; otherwise, or when
``XENT_FAST_NO_OPENMP=1`` is set, the kernels are built serial (they stay correct,
``n_threads`` is then ignored) and the build says so.

Environment switches (all off by default):

``XENT_FAST_NO_OPENMP=1``
    Build without OpenMP.
``XENT_FAST_BOUNDSCHECK=1``
    Turn Cython's bounds and wraparound checks back on, for debugging.
``XENT_FAST_CFLAGS``
    Extra compiler flags appended to the defaults (for sanitizer builds, say).
``XENT_FAST_BUILD_JOBS``
    Extensions compiled at once (default: the CPU count), also under ``pip install``
    and ``python -m build``, which cannot pass ``build_ext -j``.

``-march=native`` and ``-ffast-math`` are never used: the first makes a wheel crash on
older CPUs, the second breaks inf/nan handling that the kernels rely on.
"""

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# One extension module per family of kernels: a public function in xent_fast/_<name>.py
# calls into xent_fast/_<name>_kernels, built from src/_<name>_kernels.pyx.
BASELINE_MODULES = ["_runtime", "_info_kernels"]
# The hot kernels are also compiled for wider instruction sets, from the same source,
# as xent_fast/_<name>_kernels_<level>; xent_fast/_simd.py picks one at import.
SIMD_MODULES = ["_softmax_kernels", "_cross_entropy_kernels", "_binary_kernels", "_score_kernels",
                 "_distill_kernels",
                # xent_fast.jax's compiled XLA FFI handlers: each includes a kernel source
                # (src/_xla_*.pyx), so it is built for the same levels
                "_xla_cross_entropy", "_xla_binary", "_xla_distill"]
SIMD_LEVELS = {
    "gcc": {
        "avx2": ["-mavx2", "-mfma", "-mf16c", "-mbmi2", "-mpopcnt"],
        "avx512": ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma",
                   "-mf16c", "-mbmi2", "-mpopcnt", "-mprefer-vector-width=512"],
    },
    "msvc": {"avx2": ["/arch:AVX2"], "avx512": ["/arch:AVX512"]},
}


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _openmp_flags():
    """Return (compile_args, link_args) for OpenMP, or None if it cannot be used."""
    if _env_flag("XENT_FAST_NO_OPENMP"):
        return None
    cc = sysconfig.get_config_var("CC") or "cc"
    if sys.platform == "win32":
        return ["/openmp"], []
    if sys.platform == "darwin":
        # Apple clang needs the preprocessor spelling and Homebrew's libomp.
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    for cflags, ldflags in candidates:
        if _compiles_with_openmp(cc, cflags, ldflags):
            return cflags, ldflags
    return None


def _compiles_with_openmp(cc, cflags, ldflags):
    source = (
        "#include <omp.h>\n"
        "int main(void) { int n = 0;\n"
        "#pragma omp parallel reduction(+:n)\n"
        "n += 1;\n"
        "return omp_get_max_threads() > 0 && n > 0 ? 0 : 1; }\n"
    )
    tmp = tempfile.mkdtemp(prefix="xent_fast_omp_")
    try:
        src = os.path.join(tmp, "check.c")
        with open(src, "w") as f:
            f.write(source)
        # The flags setuptools adds from the environment too: macOS builds find
        # Homebrew's keg-only libomp only through CPPFLAGS/LDFLAGS.
        env = [shlex.split(os.environ.get(v, "")) for v in ("CPPFLAGS", "CFLAGS", "LDFLAGS")]
        cmd = (cc.split() + env[0] + env[1] + cflags + [src, "-o", os.path.join(tmp, "check")]
               + env[2] + ldflags)
        return subprocess.run(cmd, capture_output=True).returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _target_is_x86_64():
    """Whether the extensions are built for x86-64. The target platform, not the build
    machine: cibuildwheel cross-builds (macOS arm64 on an Intel runner) set it through
    _PYTHON_HOST_PLATFORM, which sysconfig.get_platform() honours; a universal2 build
    gets no AVX flags since its arm64 half could not take them."""
    return sysconfig.get_platform().lower().endswith(("x86_64", "amd64"))


def _simd_levels():
    """Instruction-set levels to build beyond the baseline: x86-64 only."""
    if _env_flag("XENT_FAST_NO_SIMD") or not _target_is_x86_64():
        return {}
    return SIMD_LEVELS["msvc" if sys.platform == "win32" else "gcc"]


def _copy_source(name, level):
    """The kernel source under the module name of its level (Cython names a module after
    its file). Rewritten only when it changed, so rebuilds stay incremental."""
    os.makedirs(os.path.join("build", "simd_src"), exist_ok=True)
    target = os.path.join("build", "simd_src", f"{name}_{level}.pyx")
    with open(os.path.join("src", f"{name}.pyx")) as f:
        text = f.read()
    if not os.path.exists(target) or open(target).read() != text:
        with open(target, "w") as f:
            f.write(text)
    return target


def _extensions():
    debug_checks = _env_flag("XENT_FAST_BOUNDSCHECK")
    openmp = _openmp_flags()
    if openmp is None:
        warnings.warn(
            "xent_fast: building WITHOUT OpenMP (compiler support missing or "
            "XENT_FAST_NO_OPENMP=1); kernels will run on one thread.",
            stacklevel=1,
        )
        sys.stderr.write("*** xent_fast: OpenMP disabled, serial kernels ***\n")
        omp_cflags, omp_ldflags = [], []
    else:
        omp_cflags, omp_ldflags = openmp

    if sys.platform == "win32":
        cflags = ["/O2"]
    else:
        # -fno-trapping-math lets GCC if-convert the clamps of the vectorised exp; it
        # changes no value (inf and nan stay exact), only which FP status flags may be
        # raised, and no caller reads those.
        cflags = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-Wno-unused-function"]
    cflags += os.environ.get("XENT_FAST_CFLAGS", "").split()

    common = dict(
        include_dirs=["src", np.get_include()],
        # rebuild every module when a shared header or .pxd changes
        depends=[os.path.join("src", f) for f in sorted(os.listdir("src"))
                 if f.endswith((".h", ".pxd"))],
        extra_link_args=omp_ldflags + os.environ.get("XENT_FAST_LDFLAGS", "").split(),
        # The oldest NumPy C API the modules may use: the runtime requirement numpy>=1.25.
        # Built against NumPy 2 headers, the modules then import under NumPy 1.25+ and 2.x.
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION"),
                       ("NPY_TARGET_VERSION", "NPY_1_25_API_VERSION")],
        # dladdr (which OpenMP runtime is loaded) lives in libdl before glibc 2.34.
        libraries=["dl"] if sys.platform.startswith("linux") else [],
    )
    # omp simd pragmas vectorise the row loops even in a serial build.
    simd_pragmas = [] if (openmp is not None or sys.platform == "win32") else ["-fopenmp-simd"]
    base_flags = cflags + omp_cflags + simd_pragmas
    exts = [Extension(f"xent_fast.{name}", [f"src/{name}.pyx"], extra_compile_args=base_flags,
                      **common) for name in BASELINE_MODULES + SIMD_MODULES]
    for level, flags in _simd_levels().items():
        for name in SIMD_MODULES:
            source = _copy_source(name, level)
            exts.append(Extension(f"xent_fast.{name}_{level}", [source],
                                  extra_compile_args=base_flags + flags, **common))
    directives = {
        "language_level": 3,
        "boundscheck": debug_checks,
        "wraparound": debug_checks,
        "initializedcheck": debug_checks,
        "cdivision": True,
        "embedsignature": True,
    }
    return cythonize(
        exts,
        compiler_directives=directives,
        include_path=["src"],
    )


class _ParallelBuildExt(build_ext):
    """build_ext that compiles the extensions in parallel unless told otherwise (-j)."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            jobs = os.environ.get("XENT_FAST_BUILD_JOBS", "").strip()
            self.parallel = int(jobs) if jobs else (os.cpu_count() or 1)


setup(ext_modules=_extensions(), cmdclass={"build_ext": _ParallelBuildExt})
