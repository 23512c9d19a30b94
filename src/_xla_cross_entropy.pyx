# The XLA FFI handler of xent_fast.jax's softmax cross-entropy, compiled: it decodes
# XLA's C call frame (src/xla/xent_xla_ffi.h), checks every buffer, and runs the kernels on
# XLA's buffers in place, without Python and without the GIL.
#
# The kernels are those of src/_cross_entropy_kernels.pyx, included here whole so that
# this module calls their C-level block functions directly (they are not exported by
# that module), built like it once per SIMD level (setup.py); xent_fast.jax registers
# the handler of the level xent_fast._simd chose. Only the driver below is new: the
# loop over blocks of rows, on the calling thread, on XLA's own thread pool, or on an
# OpenMP team (see configure).
#
# The call (xent_fast.jax._call): arguments logits (..., C) float32/float64, labels
# (...) int32/int64 or probabilities (..., C) of the logits' dtype, then optionally a
# row mask (...) bool and the upstream gradient of each row (...) of the logits' dtype
# (a further float argument only orders the call and is not read); results the losses
# (...) and/or the gradient (..., C), told apart by their rank. The gradient may be the
# logits' own buffer.

include "_cross_entropy_kernels.pyx"

from libc.stdint cimport INT64_MIN
from libc.stdio cimport snprintf
from libc.string cimport memset

from _common cimport xf_omp_num_procs

include "xla/_xla_common.pxi"

cdef struct Job:
    bint f64                    # the logits' type: double, else float
    int labels                  # 0: int32 indices, 1: int64 indices, 2: probabilities
    const void* x
    const void* y
    const void* g               # per-row upstream gradient, or NULL (1)
    void* loss                  # per-row losses, or NULL
    void* grad                  # gradient, or NULL
    CEOptions o
    Py_ssize_t rows_per_block
    Py_ssize_t n_rows
    BlockSums* sums


cdef void run_block(void* ctx, int64_t b) noexcept nogil:
    cdef Job* j = <Job*>ctx
    cdef Py_ssize_t start = b * j.rows_per_block
    cdef Py_ssize_t stop = min(start + j.rows_per_block, j.n_rows)
    if not j.f64:
        if j.labels == 0:
            ce_index_block(<const float*>j.x, <const int32_t*>j.y, <const float*>NULL,
                           <const float*>j.g, 1.0, <float*>j.loss, <float*>j.grad,
                           <float*>NULL, &j.o, start, stop, &j.sums[b])
        elif j.labels == 1:
            ce_index_block(<const float*>j.x, <const int64_t*>j.y, <const float*>NULL,
                           <const float*>j.g, 1.0, <float*>j.loss, <float*>j.grad,
                           <float*>NULL, &j.o, start, stop, &j.sums[b])
        else:
            ce_probs_block(<const float*>j.x, <const float*>j.y, <const float*>NULL,
                           <const float*>j.g, 1.0, <float*>j.loss, <float*>j.grad,
                           <float*>NULL, &j.o, start, stop, &j.sums[b])
    else:
        if j.labels == 0:
            ce_index_block(<const double*>j.x, <const int32_t*>j.y, <const double*>NULL,
                           <const double*>j.g, 1.0, <double*>j.loss, <double*>j.grad,
                           <double*>NULL, &j.o, start, stop, &j.sums[b])
        elif j.labels == 1:
            ce_index_block(<const double*>j.x, <const int64_t*>j.y, <const double*>NULL,
                           <const double*>j.g, 1.0, <double*>j.loss, <double*>j.grad,
                           <double*>NULL, &j.o, start, stop, &j.sums[b])
        else:
            ce_probs_block(<const double*>j.x, <const double*>j.y, <const double*>NULL,
                           <const double*>j.g, 1.0, <double*>j.loss, <double*>j.grad,
                           <double*>NULL, &j.o, start, stop, &j.sums[b])


cdef int run_blocks(const xf_CallFrame* f, Job* j, Py_ssize_t n_blocks) noexcept nogil:
    """Every block of the job; 0, or -1 if out of memory."""
    cdef int64_t helpers = 0, pool
    cdef Py_ssize_t b
    cdef int nt
    if j.n_rows * j.o.n_classes >= _parallel_from and n_blocks > 1:
        helpers = _helpers
        if helpers < 0:
            pool = xf_pool_threads(f) if not _use_openmp else xf_omp_num_procs()
            helpers = pool - 1 if pool > 1 else 0
    if helpers > 0 and _use_openmp:
        nt = <int>min(helpers + 1, n_blocks)
        for b in prange(n_blocks, schedule="static", num_threads=nt):
            run_block(j, b)
        return 0
    return xf_parallel(f, helpers, n_blocks, run_block, j)


cdef int64_t label_at(const void* y, bint y64, Py_ssize_t i) noexcept nogil:
    return (<const int64_t*>y)[i] if y64 else (<const int32_t*>y)[i]


cdef void* bad_label_error(const xf_CallFrame* f, const xf_Buffer* yb, bint y64,
                           const char* rows, Py_ssize_t n_rows, Py_ssize_t n) noexcept nogil:
    """The error that names the first counted label outside [0, n), as the Python
    handler words it: labels[i, j] = v is not a valid class index: ..."""
    cdef char msg[1400]
    cdef char where[1024]
    cdef Py_ssize_t i, rest, k
    cdef int64_t v = 0
    cdef int64_t d
    cdef int64_t idx[64]
    cdef int w
    for i in range(n_rows):
        v = label_at(yb.data, y64, i)
        if (v < 0 or v >= n) and (rows == NULL or rows[i]):
            break
    else:
        return xf_error(f, XF_ERR_INTERNAL, "internal error: a kernel reported a bad label "
                        "that is not there")
    rest = i
    for k in range(yb.rank - 1, -1, -1):
        d = yb.dims[k]
        idx[k] = rest % d if d > 0 else 0
        rest = rest // d if d > 0 else 0
    where[0] = 0
    if yb.rank > 0:
        w = snprintf(where, sizeof(where), "[")
        for k in range(yb.rank):
            if w >= <int>sizeof(where) - 32:
                break
            w += snprintf(where + w, sizeof(where) - w, "%lld%s", <long long>idx[k],
                          ", " if k + 1 < yb.rank else "]")
    snprintf(msg, sizeof(msg), "labels%s = %lld is not a valid class index: it must be "
             "in [0, %lld)", where, <long long>v, <long long>n)
    return xf_error(f, XF_ERR_INVALID_ARGUMENT, msg)


cdef void* execute(xf_CallFrame* f) noexcept nogil:
    cdef const char* why = NULL
    cdef const xf_Buffer* xb
    cdef const xf_Buffer* yb
    cdef const xf_Buffer* rb = NULL
    cdef const xf_Buffer* gb = NULL
    cdef const xf_Buffer* lb = NULL
    cdef const xf_Buffer* db = NULL
    cdef const xf_Buffer* a
    cdef int64_t i, size, n, n_rows
    cdef int ft
    cdef Job j
    cdef BlockSums few[16]
    cdef Py_ssize_t n_blocks, b, first_bad = -1, row
    cdef int64_t* masked = NULL
    cdef const char* rows = NULL
    cdef size_t item
    cdef void* err = NULL

    if not (2 <= f.args.size <= 5 and 1 <= f.rets.size <= 2):
        return invalid(f, "a number of buffers other than 2 to 5 arguments and 1 or 2 results")
    xb = xf_buffer(&f.args, 0, &why)
    yb = xf_buffer(&f.args, 1, &why) if xb != NULL else NULL
    if yb == NULL:
        return invalid(f, why)
    ft = xb.dtype
    if (ft != XF_F32 and ft != XF_F64) or xb.rank < 1:
        return invalid(f, "logits that are not a float32 or float64 array of rank >= 1")
    item = 8 if ft == XF_F64 else 4
    size = xf_size(xb)
    if size < 0:
        return invalid(f, "logits of an impossible shape")
    n = xb.dims[xb.rank - 1]
    n_rows = batch_rows(xb)
    if n_rows < 0:
        return invalid(f, "logits of an impossible shape")
    if n == 0 and n_rows > 0:
        return invalid(f, "logits without classes")
    # labels: indices of the batch shape, or probabilities of the logits' shape and type
    if yb.dtype == XF_S32 or yb.dtype == XF_S64:
        if not xf_same_dims(yb, xb, xb.rank - 1):
            return invalid(f, "labels whose shape is not the logits' batch shape")
        j.labels = 0 if yb.dtype == XF_S32 else 1
    elif yb.dtype == ft:
        if not xf_same_dims(yb, xb, xb.rank):
            return invalid(f, "probabilities whose shape is not the logits'")
        j.labels = 2
    else:
        return invalid(f, "labels of a type other than int32, int64 or the logits' type")
    for i in range(2, f.args.size):
        a = xf_buffer(&f.args, i, &why)
        if a == NULL:
            return invalid(f, why)
        if a.dtype == XF_PRED and rb == NULL:
            rb = a
        elif a.dtype == ft and gb == NULL:
            gb = a
        elif a.dtype != ft:
            return invalid(f, "an extra argument that is neither a row mask nor a float")
        # a second float argument only orders the call: not read
    if ((rb != NULL and not xf_same_dims(rb, xb, xb.rank - 1))
            or (gb != NULL and not xf_same_dims(gb, xb, xb.rank - 1))):
        return invalid(f, "a row mask or upstream gradient whose shape is not the logits' "
                       "batch shape")
    why = row_results(f, xb, &lb, &db)
    if why != NULL:
        return invalid(f, why)
    if n_rows == 0:
        return NULL
    if (xb.data == NULL or yb.data == NULL or (rb != NULL and rb.data == NULL)
            or (gb != NULL and gb.data == NULL) or (lb != NULL and lb.data == NULL)
            or (db != NULL and db.data == NULL)):
        return invalid(f, "a buffer without memory")

    j.f64 = ft == XF_F64
    j.x = xb.data
    j.y = yb.data
    j.g = gb.data if gb != NULL else NULL
    j.loss = lb.data if lb != NULL else NULL
    j.grad = db.data if db != NULL else NULL
    j.n_rows = n_rows
    j.rows_per_block = rows_per_block(n)
    n_blocks = (n_rows + j.rows_per_block - 1) // j.rows_per_block
    if j.f64:
        j.o = make_options(n, <const double*>NULL, INT64_MIN, 0.0, 0.0, 0.0)
    else:
        j.o = make_options(n, <const float*>NULL, INT64_MIN, 0.0, 0.0, 0.0)
    rows = <const char*>rb.data if rb != NULL else NULL

    if j.labels != 2:
        # Rows that a mask leaves out get INT64_MIN, which the kernels skip (their
        # ignore_index); an int64 label that holds it is a bad label, caught first.
        if j.labels == 1:
            for row in range(n_rows):
                if (<const int64_t*>yb.data)[row] == INT64_MIN and (rows == NULL or rows[row]):
                    return bad_label_error(f, yb, True, rows, n_rows, n)
        if rows != NULL:
            masked = <int64_t*>malloc(n_rows * sizeof(int64_t))
            if masked == NULL:
                return xf_error(f, XF_ERR_RESOURCE_EXHAUSTED, "out of memory")
            for row in range(n_rows):
                masked[row] = label_at(yb.data, j.labels == 1, row) if rows[row] else INT64_MIN
            j.y = masked
            j.labels = 1

    j.sums = &few[0]
    if n_blocks > 16:
        j.sums = <BlockSums*>malloc(n_blocks * sizeof(BlockSums))
        if j.sums == NULL:
            free(masked)
            return xf_error(f, XF_ERR_RESOURCE_EXHAUSTED, "out of memory")
    if run_blocks(f, &j, n_blocks) != 0:
        err = xf_error(f, XF_ERR_RESOURCE_EXHAUSTED, "out of memory")
    else:
        for b in range(n_blocks):
            if j.sums[b].first_bad >= 0:
                first_bad = j.sums[b].first_bad
                break
        if first_bad >= 0:
            err = bad_label_error(f, yb, yb.dtype == XF_S64, rows, n_rows, n)
        elif j.labels == 2 and rows != NULL:
            # skipped rows of probabilities: loss 0 and gradient 0
            for row in range(n_rows):
                if not rows[row]:
                    if j.loss != NULL:
                        memset(<char*>j.loss + row * item, 0, item)
                    if j.grad != NULL:
                        memset(<char*>j.grad + row * n * item, 0, n * item)
    if j.sums != &few[0]:
        free(j.sums)
    free(masked)
    return err
