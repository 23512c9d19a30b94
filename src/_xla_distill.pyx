# The XLA FFI handler of xent_fast.jax.distillation_loss, compiled: it decodes XLA's C
# call frame (src/xla/xent_xla_ffi.h), checks every buffer and attribute, and runs the
# distillation kernels on XLA's buffers in place, without Python and without the GIL.
#
# The kernels are those of src/_distill_kernels.pyx, included here whole so that this
# module calls their C-level block function directly (it is not exported by that
# module), built like it once per SIMD level (setup.py); xent_fast.jax registers the
# handler of the level xent_fast._simd chose. Only the driver below is new; its thread
# policy is the cross-entropy handler's (configure, src/xla/_xla_common.pxi).
#
# The call (xent_fast._jax_distill._kernel): arguments student and teacher logits
# (..., C), both float32 or both float64, every leading dimension a batch of rows (vmap
# adds its own there); attributes temperature and beta, float64 scalars; results the
# per-row losses (...) and/or the gradient of each row's loss with respect to the
# student (..., C), of the student's dtype, told apart by their rank. The gradient may
# be the student's own buffer (the kernels read an entry before they write it).

include "_distill_kernels.pyx"

from libc.math cimport INFINITY
from libc.stdint cimport SIZE_MAX, uint64_t

from _common cimport xf_omp_num_procs

include "xla/_xla_common.pxi"

cdef struct Job:
    bint f64                    # the logits' type: double, else float
    const void* s
    const void* t
    void* loss                  # per-row losses, or NULL
    void* grad                  # gradient, or NULL
    Options o
    Py_ssize_t rows_per_block
    Py_ssize_t n_rows
    int64_t n_blocks
    xf_atomic next              # the next block to take
    xf_atomic failed            # workers that could not allocate their scratch rows


cdef void run_worker(void* ctx, int64_t w) noexcept nogil:
    # One worker: it takes blocks until none is left, with scratch rows of its own (the
    # kernels' 4 per-thread rows), allocated once it holds a block, so that a worker
    # that starts late finds nothing to do and allocates nothing. Workers rather than
    # blocks own the scratch: a row of 32000 classes needs 512 KiB of it, whose page
    # faults would cost a fresh allocation per row about as much as the row itself.
    cdef Job* j = <Job*>ctx
    cdef void* scratch = NULL
    cdef int64_t b
    cdef Py_ssize_t start, stop
    cdef size_t item = 8 if j.f64 else 4
    while True:
        b = xf_fetch_add(&j.next, 1)
        if b >= j.n_blocks:
            break
        if scratch == NULL:
            scratch = malloc(4 * <size_t>j.o.n_classes * item)
            if scratch == NULL:
                # the block taken stays undone: the call fails as a whole
                xf_fetch_add(&j.failed, 1)
                break
        start = b * j.rows_per_block
        stop = min(start + j.rows_per_block, j.n_rows)
        if j.f64:
            distill_block(<const double*>j.s, <const double*>j.t, <const unsigned char*>NULL,
                          <const double*>NULL, 1.0, <double*>j.loss, <double*>j.grad,
                          <double*>scratch, &j.o, start, stop)
        else:
            distill_block(<const float*>j.s, <const float*>j.t, <const unsigned char*>NULL,
                          <const float*>NULL, 1.0, <float*>j.loss, <float*>j.grad,
                          <float*>scratch, &j.o, start, stop)
    free(scratch)


cdef int run_workers(const xf_CallFrame* f, Job* j) noexcept nogil:
    """Every block of the job; 0, or -1 if out of memory."""
    cdef int64_t helpers = 0, pool, w
    cdef int nt
    if j.n_rows * j.o.n_classes >= _parallel_from and j.n_blocks > 1:
        helpers = _helpers
        if helpers < 0:
            pool = xf_pool_threads(f) if not _use_openmp else xf_omp_num_procs()
            helpers = pool - 1 if pool > 1 else 0
    if helpers > j.n_blocks - 1:
        helpers = j.n_blocks - 1
    if helpers > 0 and _use_openmp:
        nt = <int>(helpers + 1)
        for w in prange(nt, schedule="static", num_threads=nt):
            run_worker(j, w)
    elif xf_parallel(f, helpers, helpers + 1, run_worker, j) != 0:
        return -1
    return -1 if j.failed != 0 else 0


cdef void* execute(xf_CallFrame* f) noexcept nogil:
    cdef const char* why = NULL
    cdef const xf_Buffer* sb
    cdef const xf_Buffer* tb
    cdef const xf_Buffer* lb = NULL
    cdef const xf_Buffer* db = NULL
    cdef int64_t n, n_rows
    cdef int ft
    cdef size_t item
    cdef double temperature = 0.0, beta = 0.0
    cdef char msg[256]
    cdef Job j

    if not (f.args.size == 2 and 1 <= f.rets.size <= 2):
        return invalid(f, "a number of buffers other than 2 arguments and 1 or 2 results")
    sb = xf_buffer(&f.args, 0, &why)
    tb = xf_buffer(&f.args, 1, &why) if sb != NULL else NULL
    if tb == NULL:
        return invalid(f, why)
    ft = sb.dtype
    if (ft != XF_F32 and ft != XF_F64) or sb.rank < 1:
        return invalid(f, "student logits that are not a float32 or float64 array of rank >= 1")
    if tb.dtype != ft or not xf_same_dims(tb, sb, sb.rank):
        return invalid(f, "teacher logits of another type or shape than the student's")
    item = 8 if ft == XF_F64 else 4
    if xf_size(sb) < 0:
        return invalid(f, "logits of an impossible shape")
    n = sb.dims[sb.rank - 1]
    n_rows = batch_rows(sb)
    if n_rows < 0:
        return invalid(f, "logits of an impossible shape")
    if n == 0 and n_rows > 0:
        return invalid(f, "logits without classes")
    why = row_results(f, sb, &lb, &db)
    if why != NULL:
        return invalid(f, why)
    if (xf_attr_count(f) != 2 or xf_attr_f64(f, "temperature", &temperature) != 1
            or xf_attr_f64(f, "beta", &beta) != 1):
        return invalid(f, "attributes other than temperature and beta, two float64 scalars")
    if not (0 < temperature < INFINITY and 0 <= beta <= 1):
        snprintf(msg, sizeof(msg), "ValueError: the xent_fast FFI call got temperature %g and "
                 "beta %g: temperature must be finite and > 0, beta in [0, 1]", temperature, beta)
        return xf_error(f, XF_ERR_INVALID_ARGUMENT, msg)
    if n_rows == 0:
        return NULL
    if (sb.data == NULL or tb.data == NULL or (lb != NULL and lb.data == NULL)
            or (db != NULL and db.data == NULL)):
        return invalid(f, "a buffer without memory")
    if <uint64_t>n > SIZE_MAX // (4 * item):     # a worker's scratch rows (32-bit size_t)
        return xf_error(f, XF_ERR_RESOURCE_EXHAUSTED, "out of memory")

    j.f64 = ft == XF_F64
    j.s = sb.data
    j.t = tb.data
    j.loss = lb.data if lb != NULL else NULL
    j.grad = db.data if db != NULL else NULL
    j.o.n_classes = n
    j.o.temperature = temperature
    j.o.beta = beta
    j.o.log_beta = log(beta) if beta > 0 else 0.0
    j.o.log_1m_beta = log1p(-beta) if beta < 1 else 0.0
    j.n_rows = n_rows
    j.rows_per_block = rows_per_block(n)
    j.n_blocks = (n_rows + j.rows_per_block - 1) // j.rows_per_block
    j.next = 0
    j.failed = 0
    if run_workers(f, &j) != 0:
        return xf_error(f, XF_ERR_RESOURCE_EXHAUSTED, "out of memory")
    return NULL
