# The XLA FFI handler of xent_fast.jax's sigmoid binary cross-entropy and sigmoid focal
# loss, compiled: it decodes XLA's C call frame (src/xla/xent_xla_ffi.h), checks every
# buffer, and runs the binary kernels on XLA's buffers in place, without Python and
# without the GIL.
#
# The kernels are those of src/_binary_kernels.pyx, included here whole so that this
# module calls their C-level block function directly, built like it once per SIMD level
# (setup.py). Only the driver below is new (see src/_xla_cross_entropy.pyx for the
# thread policy, which configure sets here too).
#
# The call (xent_fast.jax._binary_call): arguments params (4,) of the logits' dtype =
# (mode, kind, alpha, gamma), logits (...) float32/float64, labels of their shape and
# dtype, then for mode 1 the upstream gradient of each element (a further argument only
# orders the call and is not read); one result of the logits' shape and dtype: mode 0
# the losses, mode 1 the gradient (it may be the logits' own buffer). kind 1 is the
# binary cross-entropy on logits, 2 the focal loss; alpha < 0 means no alpha.

include "_binary_kernels.pyx"

from libc.stdint cimport int64_t

from _common cimport xf_omp_num_procs

include "xla/_xla_common.pxi"

cdef struct Job:
    bint f64
    const void* x
    const void* y
    const void* g               # per-element upstream gradient, or NULL
    void* loss
    void* grad
    Options o
    Py_ssize_t size
    BlockSums* sums


cdef void run_block(void* ctx, int64_t b) noexcept nogil:
    cdef Job* j = <Job*>ctx
    cdef Py_ssize_t start = b * BLOCK_ELEMS
    cdef Py_ssize_t stop = min(start + <Py_ssize_t>BLOCK_ELEMS, j.size)
    # everything as one row of j.size elements (no weights: nothing varies by row)
    if not j.f64:
        binary_block(<const float*>j.x, <const float*>j.y, <const float*>NULL, 0, 0,
                     <const float*>NULL, 0, 0, <const float*>j.g, <float*>j.loss,
                     <float*>j.grad, j.size, &j.o, start, stop, &j.sums[b])
    else:
        binary_block(<const double*>j.x, <const double*>j.y, <const double*>NULL, 0, 0,
                     <const double*>NULL, 0, 0, <const double*>j.g, <double*>j.loss,
                     <double*>j.grad, j.size, &j.o, start, stop, &j.sums[b])


cdef void* execute(xf_CallFrame* f) noexcept nogil:
    cdef const char* why = NULL
    cdef const xf_Buffer* pb
    cdef const xf_Buffer* xb
    cdef const xf_Buffer* yb
    cdef const xf_Buffer* gb = NULL
    cdef const xf_Buffer* ob
    cdef int64_t size, helpers = 0, pool
    cdef int ft, nt
    cdef double mode, kind, alpha, gamma
    cdef Job j
    cdef BlockSums few[16]
    cdef Py_ssize_t n_blocks, b
    cdef int rc = 0

    if not (3 <= f.args.size <= 5 and f.rets.size == 1):
        return invalid(f, "a number of buffers other than 3 to 5 arguments and 1 result")
    pb = xf_buffer(&f.args, 0, &why)
    xb = xf_buffer(&f.args, 1, &why) if pb != NULL else NULL
    yb = xf_buffer(&f.args, 2, &why) if xb != NULL else NULL
    ob = xf_buffer(&f.rets, 0, &why) if yb != NULL else NULL
    if ob == NULL:
        return invalid(f, why)
    ft = xb.dtype
    if ft != XF_F32 and ft != XF_F64:
        return invalid(f, "logits that are not float32 or float64")
    # params (4,), or (..., 4) when vmap gave it leading axes of copies: the first 4
    if (pb.dtype != ft or pb.rank < 1 or pb.dims[pb.rank - 1] != 4 or xf_size(pb) < 4
            or pb.data == NULL):
        return invalid(f, "parameters that are not 4 numbers of the logits' type")
    if ft == XF_F64:
        mode = (<const double*>pb.data)[0]
        kind = (<const double*>pb.data)[1]
        alpha = (<const double*>pb.data)[2]
        gamma = (<const double*>pb.data)[3]
    else:
        mode = (<const float*>pb.data)[0]
        kind = (<const float*>pb.data)[1]
        alpha = (<const float*>pb.data)[2]
        gamma = (<const float*>pb.data)[3]
    if not ((mode == 0 or mode == 1) and (kind == 1 or kind == 2)):
        return invalid(f, "an unknown mode or loss")
    size = xf_size(xb)
    if size < 0:
        return invalid(f, "logits of an impossible shape")
    if not (yb.dtype == ft and xf_same_dims(yb, xb, xb.rank)
            and ob.dtype == ft and xf_same_dims(ob, xb, xb.rank)):
        return invalid(f, "labels or a result of another type or shape than the logits'")
    if mode == 1:
        if f.args.size < 4:
            return invalid(f, "no upstream gradient")
        gb = xf_buffer(&f.args, 3, &why)
        if gb == NULL:
            return invalid(f, why)
        if not (gb.dtype == ft and xf_same_dims(gb, xb, xb.rank)):
            return invalid(f, "an upstream gradient of another type or shape than the logits'")
    if size == 0:
        return NULL
    if (xb.data == NULL or yb.data == NULL or ob.data == NULL
            or (gb != NULL and gb.data == NULL)):
        return invalid(f, "a buffer without memory")

    j.f64 = ft == XF_F64
    j.x = xb.data
    j.y = yb.data
    j.g = gb.data if gb != NULL else NULL
    j.loss = ob.data if mode == 0 else NULL
    j.grad = ob.data if mode == 1 else NULL
    j.size = size
    j.o.loss = FOCAL if kind == 2 else BCE_LOGITS
    j.o.alpha = alpha if alpha >= 0 else -1.0
    j.o.gamma = gamma
    j.o.grad_scale = 1.0
    n_blocks = (size + BLOCK_ELEMS - 1) // BLOCK_ELEMS
    j.sums = &few[0]
    if n_blocks > 16:
        j.sums = <BlockSums*>malloc(n_blocks * sizeof(BlockSums))
        if j.sums == NULL:
            return xf_error(f, XF_ERR_RESOURCE_EXHAUSTED, "out of memory")
    if size >= _parallel_from and n_blocks > 1:
        helpers = _helpers
        if helpers < 0:
            pool = xf_pool_threads(f) if not _use_openmp else xf_omp_num_procs()
            helpers = pool - 1 if pool > 1 else 0
    if helpers > 0 and _use_openmp:
        nt = <int>min(helpers + 1, n_blocks)
        for b in prange(n_blocks, schedule="static", num_threads=nt):
            run_block(&j, b)
    else:
        rc = xf_parallel(f, helpers, n_blocks, run_block, &j)
    if j.sums != &few[0]:
        free(j.sums)
    if rc != 0:
        return xf_error(f, XF_ERR_RESOURCE_EXHAUSTED, "out of memory")
    return NULL
