# Run-time facts and small helpers for the Python layer: what OpenMP the extension
# was built with, and a cheap test of how two arrays' memory relates (cheaper than
# numpy.may_share_memory on the hot path of a small call).

cimport numpy as cnp
from libc.float cimport FLT_MAX
from libc.math cimport INFINITY, copysign, fabs, ldexp
from libc.stdint cimport uintptr_t

from _common cimport xf_omp_max_threads, xf_omp_num_procs, xf_omp_library, XF_OPENMP_VERSION

cnp.import_array()

cdef extern from "xent_cpu.h" nogil:
    int xf_cpu_level()


def cpu_level():
    """Instruction-set level the CPU supports: 0 baseline, 1 AVX2 + FMA, 2 AVX-512."""
    return xf_cpu_level()


def openmp_version():
    """The ``_OPENMP`` date the kernels were compiled with, 0 for a serial build."""
    return XF_OPENMP_VERSION


def openmp_library():
    """Path of the loaded OpenMP runtime library ("" if unknown or serial build)."""
    return xf_omp_library().decode("utf-8", "replace")


def max_threads():
    """Threads an OpenMP region would use now (honours OMP_NUM_THREADS, threadpoolctl)."""
    return xf_omp_max_threads()


def num_procs():
    """Processors the OpenMP runtime sees (what ``n_threads=-1`` uses)."""
    return xf_omp_num_procs()


def kernel_type(object a):
    """NumPy's type number of ``a`` if it is an ndarray the kernels can use as it is
    (C-contiguous, aligned, native byte order), else -1: one call instead of several
    attribute reads on the hot path of a small call."""
    if not cnp.PyArray_Check(a):
        return -1
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if not (cnp.PyArray_ISCARRAY_RO(arr) and cnp.PyArray_ISNOTSWAPPED(arr)):
        return -1
    return cnp.PyArray_TYPE(arr)


cdef extern from "numpy/arrayobject.h":
    object PyArray_Scalar(void* data, cnp.dtype descr, object base)

cdef cnp.dtype _F32 = cnp.PyArray_DescrFromType(cnp.NPY_FLOAT32)
cdef cnp.dtype _F64 = cnp.PyArray_DescrFromType(cnp.NPY_FLOAT64)


def float_scalar(double value, int type_num):
    """``value`` as a NumPy scalar of type number ``type_num`` (float32 or float64), at a
    fraction of the cost of calling ``numpy.float32``. Rounded to nearest: past float32's
    range that is inf, without NumPy's overflow warning."""
    cdef float f
    if type_num == cnp.NPY_FLOAT64:
        return PyArray_Scalar(&value, _F64, None)
    if type_num != cnp.NPY_FLOAT32:
        raise ValueError(f"type_num {type_num} is neither float32 nor float64")
    # From FLT_MAX + half an ulp on, a value rounds (to even) to inf. C leaves the
    # conversion of a value outside float's range undefined unless the platform follows
    # IEEE 754 (Annex F); the explicit branch makes it defined everywhere.
    if fabs(value) >= FLT_MAX + ldexp(1.0, 103):
        f = <float>copysign(INFINITY, value)
    else:
        f = <float>value
    return PyArray_Scalar(&f, _F32, None)


def memory_relation(cnp.ndarray a, cnp.ndarray b):
    """0 if the byte ranges of a and b are disjoint, 1 if they are the same array
    memory (same start, size and strides), 2 if they overlap otherwise."""
    cdef uintptr_t a0 = <uintptr_t>cnp.PyArray_DATA(a)
    cdef uintptr_t b0 = <uintptr_t>cnp.PyArray_DATA(b)
    cdef Py_ssize_t an = cnp.PyArray_NBYTES(a), bn = cnp.PyArray_NBYTES(b)
    if an == 0 or bn == 0:
        return 0
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_IS_C_CONTIGUOUS(b)):
        # Strided views: fall back to bounds (conservative) via numpy.
        import numpy as np
        if not np.may_share_memory(a, b):
            return 0
        return 2
    if a0 + <uintptr_t>an <= b0 or b0 + <uintptr_t>bn <= a0:
        return 0
    if a0 == b0 and an == bn:
        return 1
    return 2
