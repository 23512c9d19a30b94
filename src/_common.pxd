# Shared by every kernel module: the fused types, the row primitives of a stable
# softmax, and the fixed partition of rows into blocks that makes reductions
# independent of the thread count.
#
# Row primitives work on one contiguous row through a pointer and do one job each; the
# vectorised loops behind them are in xent_simd.h. Every sum is accumulated in double,
# also for float32 rows: it is what keeps tiny losses accurate (see sum_exp_below_max).

cimport numpy as cnp
from libc.math cimport INFINITY, NAN, isfinite
from libc.stdint cimport int32_t, int64_t

cdef extern from "xent_omp.h" nogil:
    int xf_omp_max_threads()
    int xf_omp_num_procs()
    int xf_omp_thread_cap()
    int XF_OPENMP_VERSION
    const char* xf_omp_library()

ctypedef fused floating:
    float
    double

ctypedef fused index_t:
    int32_t
    int64_t


cdef extern from "xent_simd.h" nogil:
    float xf_expf(float x)
    double xf_exp(double x)
    float xf_max_f32(const float* x, Py_ssize_t n, int* has_nan)
    double xf_max_f64(const double* x, Py_ssize_t n, int* has_nan)
    double xf_sumexp_f32(const float* x, Py_ssize_t n, float m, float* e)
    double xf_sumexp_f64(const double* x, Py_ssize_t n, double m, double* e)
    void xf_scale_f32(float* e, Py_ssize_t n, float a)
    void xf_scale_f64(double* e, Py_ssize_t n, double a)
    double xf_online_sumexp_f32(const float* x, Py_ssize_t n, float* e, float* cmax,
                                float* m_out, int* has_nan)
    double xf_online_sumexp_f64(const double* x, Py_ssize_t n, double* e, double* cmax,
                                double* m_out, int* has_nan)
    void xf_online_sumexp_rows_f32(const float** x, Py_ssize_t n, float** e, float* cmax,
                                   float* m_out, int* has_nan, double* r_out)
    void xf_online_sumexp_rows_f64(const double** x, Py_ssize_t n, double** e, double* cmax,
                                   double* m_out, int* has_nan, double* r_out)
    double xf_soft_sums_f32(const float* x, const float* y, const float* w, Py_ssize_t n,
                            double m, double keep, double c, double* big_w)
    double xf_soft_sums_f64(const double* x, const double* y, const double* w,
                            Py_ssize_t n, double m, double keep, double c, double* big_w)
    void xf_scale_chunks_f32(float* e, Py_ssize_t n, const float* cmax, float m, double a)
    void xf_scale_chunks_f64(double* e, Py_ssize_t n, const double* cmax, double m, double a)
    void xf_set_tile_gather(int on)
    double xf_small_ce_f32(const float* x, Py_ssize_t rows, Py_ssize_t n, const int64_t* t,
                         const double* wt, const double* g, double z, double* loss, float* grad)
    double xf_small_ce_f64(const double* x, Py_ssize_t rows, Py_ssize_t n, const int64_t* t,
                         const double* wt, const double* g, double z, double* loss, double* grad)
    void xf_small_softmax_f32(const float* x, Py_ssize_t rows, Py_ssize_t n, int kind,
                              float* out)
    void xf_small_softmax_f64(const double* x, Py_ssize_t rows, Py_ssize_t n, int kind,
                              double* out)
    enum:
        XF_BLOCK
        XF_MAX_CHUNKS
        XF_ROWS
        XF_ROWS_MAX_BYTES
        XF_SHORT
        XF_TILE


cdef struct RowMax:
    double value        # largest entry, -inf for an empty or all -inf/NaN row
    bint has_nan


cdef inline RowMax row_max(const floating* x, Py_ssize_t n) noexcept nogil:
    cdef RowMax res
    cdef int nan = 0
    if floating is float:
        res.value = xf_max_f32(x, n, &nan)
    else:
        res.value = xf_max_f64(x, n, &nan)
    res.has_nan = nan
    return res


cdef inline bint row_is_regular(RowMax mx) noexcept nogil:
    # A regular row has a finite max and no NaN; the others give NaN results.
    return isfinite(mx.value) and not mx.has_nan


cdef inline double sum_exp_below_max(const floating* x, Py_ssize_t n, double m,
                                     floating* e) noexcept nogil:
    """Return r with sum_j exp(x[j] - m) = 1 + r exactly (m the row max).

    Keeping the 1 out lets callers form log(1 + r) with log1p: a confident row whose
    loss is 1e-20 keeps all its digits instead of rounding 1 + 1e-20 to 1.
    If e is not NULL, e[j] = exp(x[j] - m) is stored for every j (e may alias x).
    """
    if floating is float:
        return xf_sumexp_f32(x, n, <float>m, e)
    else:
        return xf_sumexp_f64(x, n, m, e)


cdef inline void scale(floating* e, Py_ssize_t n, double a) noexcept nogil:
    if floating is float:
        xf_scale_f32(e, n, <float>a)
    else:
        xf_scale_f64(e, n, a)


cdef inline double online_sumexp(const floating* x, Py_ssize_t n, floating* e,
                                 floating* cmax, RowMax* mx) noexcept nogil:
    """sum_exp_below_max and row_max in one sweep over the row (n <= XF_BLOCK *
    XF_MAX_CHUNKS): e[j] = exp(x[j] - cmax[j // XF_BLOCK]) is stored if e is not NULL,
    for scale_chunks to finish."""
    cdef int nan = 0
    cdef floating m
    cdef double r
    if floating is float:
        r = xf_online_sumexp_f32(x, n, e, cmax, &m, &nan)
    else:
        r = xf_online_sumexp_f64(x, n, e, cmax, &m, &nan)
    mx.value = m
    mx.has_nan = nan
    return r


cdef inline void online_sumexp_rows(const floating** x, Py_ssize_t n, floating** e,
                                    floating* cmax, floating* m, int* has_nan,
                                    double* r) noexcept nogil:
    """online_sumexp of XF_ROWS rows x[q] of XF_SHORT to XF_BLOCK entries, their sweeps
    side by side (e: their rows of e, or NULL); per row the same r, cmax, max and NaN
    flag, bit for bit."""
    if floating is float:
        xf_online_sumexp_rows_f32(x, n, e, cmax, m, has_nan, r)
    else:
        xf_online_sumexp_rows_f64(x, n, e, cmax, m, has_nan, r)


cdef inline double soft_sums(const floating* x, const floating* y, const floating* w,
                             Py_ssize_t n, double m, double keep, double c,
                             double* big_w) noexcept nogil:
    """sum_j a_j (m - x_j) over the classes with a_j != 0, and *big_w = sum_j a_j, for
    a_j = (keep y_j + c) w_j (y or w NULL: 0 or 1); see xent_rows.h."""
    if floating is float:
        return xf_soft_sums_f32(x, y, w, n, m, keep, c, big_w)
    else:
        return xf_soft_sums_f64(x, y, w, n, m, keep, c, big_w)


cdef inline void scale_chunks(floating* e, Py_ssize_t n, const floating* cmax, double m,
                              double a) noexcept nogil:
    """e[j] = a * exp(x[j] - m) from what online_sumexp stored."""
    if floating is float:
        xf_scale_chunks_f32(e, n, cmax, <float>m, a)
    else:
        xf_scale_chunks_f64(e, n, cmax, m, a)


cdef inline double small_ce(const floating* x, Py_ssize_t rows, Py_ssize_t n, const int64_t* t,
                          const double* wt, const double* g, double z, double* loss,
                          floating* grad) noexcept nogil:
    """Cross-entropy of up to XF_TILE rows of n < XF_SHORT logits at once (see
    xent_simd.h): t[i] = -1 for a row that counts for nothing. Returns the sum of
    loss[:XF_TILE]."""
    if floating is float:
        return xf_small_ce_f32(x, rows, n, t, wt, g, z, loss, grad)
    else:
        return xf_small_ce_f64(x, rows, n, t, wt, g, z, loss, grad)


cdef inline void small_softmax(const floating* x, Py_ssize_t rows, Py_ssize_t n, int kind,
                               floating* out) noexcept nogil:
    """softmax (kind 0), log_softmax (1) or logsumexp (2) of up to XF_TILE rows of
    n < XF_SHORT logits at once (see xent_simd.h)."""
    if floating is float:
        xf_small_softmax_f32(x, rows, n, kind, out)
    else:
        xf_small_softmax_f64(x, rows, n, kind, out)


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
    # An element whose gradient is written costs about three loss-only elements (a
    # second exp and a store): the unit of SERIAL_BELOW for such calls.
    GRAD_WORK = 3


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
    elif nt > 4:  # the cap is at least 4; it costs a system call, so only past that
        nt = min(nt, xf_omp_thread_cap())
    if nt > n_tasks:
        nt = <int>n_tasks
    return nt if nt > 0 else 1


# --- arrays passed to a kernel ---------------------------------------------------------
# Entry points that small calls go through take ndarrays and check them here with a few
# C-API reads: a typed memoryview costs a buffer acquisition per array, about a tenth of
# a 32x10 call. The Python layer has already made every array kernel-ready, so a failed
# check is a bug there; it raises rather than read or write out of bounds.

cdef inline int kernel_error(str what) except -1:
    raise ValueError(f"internal error: {what} passed to a kernel")


cdef inline char* array_data(object a, int type_num, Py_ssize_t d0, Py_ssize_t d1,
                             bint writable) except? NULL:
    """The data of ``a``: an aligned, C-contiguous, native ndarray of NumPy type
    ``type_num`` and shape (d0,), or (d0, d1) if d1 >= 0, writable if ``writable``."""
    if not cnp.PyArray_Check(a):
        kernel_error("a non-array")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int nd = 1 if d1 < 0 else 2
    if (cnp.PyArray_TYPE(arr) != type_num or cnp.PyArray_NDIM(arr) != nd
            or not (cnp.PyArray_ISCARRAY_RO(arr) and cnp.PyArray_ISNOTSWAPPED(arr))):
        kernel_error("an array of the wrong type, rank or layout")
    if cnp.PyArray_DIMS(arr)[0] != d0 or (nd == 2 and cnp.PyArray_DIMS(arr)[1] != d1):
        kernel_error("an array of the wrong shape")
    if writable and not cnp.PyArray_ISWRITEABLE(arr):
        kernel_error("a read-only output")
    return cnp.PyArray_BYTES(arr)


cdef inline char* strided_data(object a, int type_num, Py_ssize_t d0, Py_ssize_t d1,
                               Py_ssize_t* s0, Py_ssize_t* s1) except? NULL:
    """The data of ``a``, an aligned, native ndarray of NumPy type ``type_num`` and shape
    (d0, d1) with any strides (0 where it broadcasts), or NULL for None; s0 and s1
    receive its strides in elements. Indices within the shape stay within its memory."""
    s0[0] = s1[0] = 0
    if a is None:
        return NULL
    if not cnp.PyArray_Check(a):
        kernel_error("a non-array")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef Py_ssize_t size = cnp.PyArray_ITEMSIZE(arr)
    if (cnp.PyArray_TYPE(arr) != type_num or cnp.PyArray_NDIM(arr) != 2
            or not (cnp.PyArray_ISALIGNED(arr) and cnp.PyArray_ISNOTSWAPPED(arr))
            or cnp.PyArray_STRIDES(arr)[0] % size or cnp.PyArray_STRIDES(arr)[1] % size):
        kernel_error("an array of the wrong type, rank or layout")
    if cnp.PyArray_DIMS(arr)[0] != d0 or cnp.PyArray_DIMS(arr)[1] != d1:
        kernel_error("an array of the wrong shape")
    s0[0] = cnp.PyArray_STRIDES(arr)[0] // size
    s1[0] = cnp.PyArray_STRIDES(arr)[1] // size
    return cnp.PyArray_BYTES(arr)


cdef inline char* optional_data(object a, int type_num, Py_ssize_t d0, Py_ssize_t d1,
                                bint writable) except? NULL:
    """array_data, or NULL for None (an optional array left out)."""
    if a is None:
        return NULL
    return array_data(a, type_num, d0, d1, writable)


cdef inline int float_type(object a, int nd) except -1:
    """NumPy type number of ``a``, an ndarray of rank ``nd``, float32 or float64."""
    if not cnp.PyArray_Check(a) or cnp.PyArray_NDIM(<cnp.ndarray>a) != nd:
        kernel_error("a non-array or an array of the wrong rank")
    cdef int tn = cnp.PyArray_TYPE(<cnp.ndarray>a)
    if tn != cnp.NPY_FLOAT32 and tn != cnp.NPY_FLOAT64:
        kernel_error("a non-float array")
    return tn


cdef inline int index_type(object a) except -1:
    """NumPy type number of ``a``, an ndarray of 32- or 64-bit signed integers."""
    if not cnp.PyArray_Check(a):
        kernel_error("a non-array")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if not cnp.PyArray_ISSIGNED(arr) or (cnp.PyArray_ITEMSIZE(arr) != 4
                                         and cnp.PyArray_ITEMSIZE(arr) != 8):
        kernel_error("class indices that are not int32 or int64")
    return cnp.PyArray_TYPE(arr)
