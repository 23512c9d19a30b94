# Shared by every kernel module: the fused types, the row primitives of a stable
# softmax, and the fixed partition of rows into blocks that makes reductions
# independent of the thread count.
#
# Row primitives work on one contiguous row through a pointer and do one job each.
# Every sum is accumulated in double, also for float32 rows: the cost is nil next to
# the exp, and it is what keeps tiny losses accurate (see sum_exp_except).

from libc.math cimport exp, INFINITY, NAN, isfinite
from libc.stdint cimport int32_t, int64_t

cdef extern from "xent_omp.h" nogil:
    int xf_omp_max_threads()
    int xf_omp_num_procs()
    int XF_OPENMP_VERSION
    const char* xf_omp_library()

ctypedef fused floating:
    float
    double

ctypedef fused index_t:
    int32_t
    int64_t


cdef struct RowMax:
    double value        # largest entry, -inf for an empty or all -inf/NaN row
    Py_ssize_t index    # its first position
    bint has_nan


cdef inline RowMax row_max(const floating* x, Py_ssize_t n) noexcept nogil:
    cdef RowMax res
    cdef Py_ssize_t j
    res.value = -INFINITY
    res.index = 0
    res.has_nan = False
    for j in range(n):
        if x[j] > res.value:
            res.value = x[j]
            res.index = j
        elif x[j] != x[j]:
            res.has_nan = True
    return res


cdef inline bint row_is_regular(RowMax mx) noexcept nogil:
    # A regular row has a finite max and no NaN; the others give NaN results.
    return isfinite(mx.value) and not mx.has_nan


cdef inline double sum_exp_except(const floating* x, Py_ssize_t n, double m,
                                  Py_ssize_t skip, floating* e) noexcept nogil:
    """Return r = sum over j != skip of exp(x[j] - m), where skip is the argmax.

    The full sum of exps is 1 + r exactly (exp(0) = 1 for the max), so keeping the 1
    out lets callers form log(1 + r) with log1p: a confident row whose loss is 1e-20
    keeps all its digits instead of rounding 1 + 1e-20 to 1.
    If e is not NULL, e[j] = exp(x[j] - m) is stored for every j (e may alias x).
    """
    cdef double r = 0.0, v
    cdef Py_ssize_t j
    if e == NULL:
        for j in range(skip):
            r += exp(<double>x[j] - m)
        for j in range(skip + 1, n):
            r += exp(<double>x[j] - m)
    else:
        for j in range(skip):
            v = exp(<double>x[j] - m)
            e[j] = <floating>v
            r += v
        e[skip] = 1
        for j in range(skip + 1, n):
            v = exp(<double>x[j] - m)
            e[j] = <floating>v
            r += v
    return r


cdef inline void fill(floating* x, Py_ssize_t n, double value) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        x[j] = <floating>value


# --- partition of rows ---------------------------------------------------------------
# Rows are grouped into blocks of about BLOCK_ELEMS elements. Blocks depend only on the
# shape, each block is summed serially, and the block sums are added in block order:
# a total is then bitwise the same for every number of threads.
cdef enum:
    BLOCK_ELEMS = 16384
    # Below this many elements a parallel region costs more than it saves.
    SERIAL_BELOW = 65536


cdef inline Py_ssize_t rows_per_block(Py_ssize_t n_classes) noexcept nogil:
    if n_classes >= BLOCK_ELEMS:
        return 1
    return BLOCK_ELEMS // (n_classes if n_classes > 0 else 1)


cdef inline int effective_threads(int n_threads, Py_ssize_t n_tasks,
                                  Py_ssize_t n_elems) noexcept nogil:
    """Threads to use: 0 means the OpenMP default, -1 every core."""
    cdef int nt = n_threads
    if nt == 0:
        nt = xf_omp_max_threads()
    elif nt < 0:
        nt = xf_omp_num_procs()
    if n_elems < SERIAL_BELOW:
        nt = 1
    if nt > n_tasks:
        nt = <int>n_tasks
    return nt if nt > 0 else 1
