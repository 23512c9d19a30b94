# Shared by the compiled XLA FFI handlers (src/_xla_cross_entropy.pyx, src/_xla_binary.pyx,
# src/_xla_distill.pyx), included by each: the declarations of src/xla/xent_xla_ffi.h they
# use, their thread policy, the error for a call of the wrong form, and the handler
# entry point around each module's own execute().

from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport INT64_MAX, int64_t
from libc.stdio cimport snprintf

cdef extern from "xla/xent_xla_ffi.h" nogil:
    ctypedef struct xf_Buffer:
        int dtype
        void* data
        int64_t rank
        int64_t* dims
    ctypedef struct xf_List:
        int64_t size
    ctypedef struct xf_CallFrame:
        xf_List args
        xf_List rets
    ctypedef void (*xf_block_fn)(void* ctx, int64_t block) noexcept nogil
    ctypedef long long xf_atomic    # the header's own type (an atomic counter)
    int64_t xf_fetch_add(xf_atomic* p, int64_t v)
    int xf_attr_f64(const xf_CallFrame* f, const char* name, double* out)
    int64_t xf_attr_count(const xf_CallFrame* f)
    int xf_begin(xf_CallFrame* f, void** err)
    void* xf_error(const xf_CallFrame* f, int errc, const char* message)
    const xf_Buffer* xf_buffer(const xf_List* l, int64_t i, const char** why)
    int64_t xf_size(const xf_Buffer* b)
    bint xf_same_dims(const xf_Buffer* b, const xf_Buffer* a, int64_t rank)
    int64_t xf_pool_threads(const xf_CallFrame* f)
    int xf_parallel(const xf_CallFrame* f, int64_t n_helpers, int64_t n_blocks,
                    xf_block_fn fn, void* ctx)
    enum:
        XF_ERR_INVALID_ARGUMENT
        XF_ERR_RESOURCE_EXHAUSTED
        XF_ERR_INTERNAL
        XF_PRED
        XF_S32
        XF_S64
        XF_F32
        XF_F64

# --- how calls use threads (configure) -------------------------------------------------
# Below parallel_from elements a call runs on the thread XLA calls it on: the blocks of a
# small call take less time than waking other threads, and an OpenMP team would spin
# against XLA's pool between calls. From there on, the blocks are shared with up to
# `helpers` tasks on XLA's own pool (-1: one per pool thread beyond the caller's), or
# with an OpenMP team of helpers + 1 threads if use_openmp. Measured interleaved with
# optax (bench/adapters_jax.py): sharing gains nothing at 256x100 and a third of the
# time at 1024x1000 (1M elements, below the former threshold of 2**20).
cdef int64_t _parallel_from = 1 << 16
cdef int64_t _helpers = -1
cdef bint _use_openmp = False


def configure(parallel_from=None, helpers=None, use_openmp=None):
    """Set (each argument not None) and return the thread policy as
    (parallel_from, helpers, use_openmp)."""
    global _parallel_from, _helpers, _use_openmp
    if parallel_from is not None:
        _parallel_from = max(0, int(parallel_from))
    if helpers is not None:
        _helpers = max(-1, int(helpers))
    if use_openmp is not None:
        _use_openmp = bool(use_openmp)
    return _parallel_from, _helpers, _use_openmp


cdef void* invalid(const xf_CallFrame* f, const char* what) noexcept nogil:
    cdef char msg[512]
    snprintf(msg, sizeof(msg), "TypeError: the xent_fast FFI call got %s", what)
    return xf_error(f, XF_ERR_INVALID_ARGUMENT, msg)



# --- checks shared by the row handlers (cross-entropy, distillation) --------------------

cdef int64_t batch_rows(const xf_Buffer* x) noexcept nogil:
    """The rows of (..., C) logits, or -1 if their count could overflow."""
    cdef int64_t i, rows = 1
    for i in range(x.rank - 1):
        if x.dims[i] != 0 and rows > (INT64_MAX // 16) // x.dims[i]:
            return -1
        rows *= x.dims[i]
    return rows


cdef const char* row_results(const xf_CallFrame* f, const xf_Buffer* x,
                             const xf_Buffer** losses, const xf_Buffer** grad) noexcept nogil:
    """The results, per-row losses (the batch shape) and/or the gradient (the logits'
    shape), both of the logits' type, told apart by their rank: NULL, or what is wrong."""
    cdef const char* why = NULL
    cdef const xf_Buffer* a
    cdef int64_t i
    for i in range(f.rets.size):
        a = xf_buffer(&f.rets, i, &why)
        if a == NULL:
            return why
        if a.dtype != x.dtype:
            return "a result of a type other than the logits'"
        if a.rank == x.rank and grad[0] == NULL and xf_same_dims(a, x, x.rank):
            grad[0] = a
        elif a.rank == x.rank - 1 and losses[0] == NULL and xf_same_dims(a, x, x.rank - 1):
            losses[0] = a
        else:
            return "results of shapes other than the losses' and the gradient's"
    return NULL

# --- the entry point XLA calls (execute: each module's own) -------------------------------

cdef void* handler(void* frame) noexcept nogil:
    cdef void* err
    cdef xf_CallFrame* f = <xf_CallFrame*>frame
    if xf_begin(f, &err) != 1:
        return err
    return execute(f)


def handler_capsule():
    """The handler as a PyCapsule, for jax.ffi.register_ffi_target."""
    return PyCapsule_New(<void*>handler, NULL, NULL)
