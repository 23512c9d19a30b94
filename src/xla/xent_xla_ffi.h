/* The parts of XLA's FFI C ABI (xla/ffi/api/c_api.h, API version 0.x) that the compiled
 * JAX handlers (src/_xla_*.pyx) read, declared here so that nothing is compiled against
 * jaxlib: the package builds and imports without JAX. The ABI is stable and versioned;
 * every struct starts with its size, and a field is read only after that size is checked
 * to cover it (XLA may pass newer, larger structs; an older, smaller one is refused).
 *
 * Also here: running blocks of work on XLA's own thread pool (the one its CPU runtime
 * computes on), so that large calls use every core without an OpenMP team that would
 * spin against XLA's threads.
 */
#ifndef XENT_XLA_FFI_H
#define XENT_XLA_FFI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(_MSC_VER)
#include <windows.h>
#else
#include <sched.h>
#endif

typedef struct xf_ExtBase {
    size_t struct_size;
    int type;                       /* 1: metadata */
    struct xf_ExtBase *next;
} xf_ExtBase;

typedef struct {
    size_t struct_size;
    xf_ExtBase *extension_start;
    int major;
    int minor;
} xf_Version;

typedef struct {
    size_t struct_size;
    xf_Version api_version;
    uint32_t traits;
} xf_Metadata;

typedef struct {
    xf_ExtBase base;
    xf_Metadata *metadata;
} xf_MetadataExt;

typedef struct {
    size_t struct_size;
    xf_ExtBase *extension_start;
    int dtype;
    void *data;
    int64_t rank;
    int64_t *dims;
} xf_Buffer;

typedef struct {                    /* XLA_FFI_Args and XLA_FFI_Rets have one layout */
    size_t struct_size;
    xf_ExtBase *extension_start;
    int64_t size;
    int *types;
    void **items;
} xf_List;

typedef struct {
    const char *ptr;
    size_t len;                     /* not NUL-terminated */
} xf_ByteSpan;

typedef struct {
    int dtype;
    void *value;
} xf_Scalar;

typedef struct {
    size_t struct_size;
    xf_ExtBase *extension_start;
    int64_t size;
    int *types;                     /* 3: a scalar (xf_Scalar) */
    xf_ByteSpan **names;
    void **attrs;
} xf_Attrs;

typedef struct {
    size_t struct_size;
    xf_ExtBase *extension_start;
    const char *message;
    int errc;
} xf_ErrorArgs;

typedef struct {
    size_t struct_size;
    xf_ExtBase *extension_start;
    void *ctx;
    void (*task)(void *);
    void *data;
} xf_ScheduleArgs;

typedef struct {
    size_t struct_size;
    xf_ExtBase *extension_start;
    void *ctx;
    int64_t *num_threads;
} xf_NumThreadsArgs;

typedef void *xf_fn;                /* an API function we do not call */

typedef struct {
    size_t struct_size;
    xf_ExtBase *extension_start;
    xf_Version api_version;
    void *internal_api;
    void *(*error_create)(xf_ErrorArgs *);
    xf_fn error_get_message, error_destroy, handler_register, stream_get, type_register,
        execution_context_get, state_set, state_get, device_memory_allocate,
        device_memory_free;
    void *(*thread_pool_schedule)(xf_ScheduleArgs *);
    void *(*thread_pool_num_threads)(xf_NumThreadsArgs *);
} xf_Api;

typedef struct {
    size_t struct_size;
    xf_ExtBase *extension_start;
    const xf_Api *api;
    void *ctx;
    int stage;
    xf_List args;
    xf_List rets;
    xf_Attrs attrs;
} xf_CallFrame;

enum {
    XF_EXT_METADATA = 1, XF_STAGE_EXECUTE = 3, XF_KIND_BUFFER = 1, XF_ATTR_SCALAR = 3,
    XF_ERR_INVALID_ARGUMENT = 3, XF_ERR_RESOURCE_EXHAUSTED = 8, XF_ERR_INTERNAL = 13,
    XF_PRED = 1, XF_S32 = 4, XF_S64 = 5, XF_F32 = 11, XF_F64 = 12,
    XF_MAX_RANK = 64,
};

#define XF_COVERS(ptr, type, field) \
    ((ptr)->struct_size >= offsetof(type, field) + sizeof(((type *)0)->field))

/* An XLA error with the given code and message, or NULL if the API cannot make one
 * (then XLA sees success: only for an API too old to report anything). */
static inline void *xf_error(const xf_CallFrame *f, int errc, const char *message) {
    xf_ErrorArgs a;
    if (f == NULL || f->api == NULL || !XF_COVERS(f->api, xf_Api, error_create)
            || f->api->error_create == NULL)
        return NULL;
    a.struct_size = sizeof(xf_ErrorArgs);
    a.extension_start = NULL;
    a.message = message;
    a.errc = errc;
    return f->api->error_create(&a);
}

/* What a handler does first. Returns 1 when the call is to compute (the execute stage),
 * 0 when the handler is done (the metadata query answered, another stage), -1 on an
 * error, then stored in *err (which may be NULL, see xf_error). */
static inline int xf_begin(xf_CallFrame *f, void **err) {
    xf_ExtBase *ext;
    *err = NULL;
    if (f == NULL || f->struct_size < offsetof(xf_CallFrame, attrs)) {
        *err = xf_error(f != NULL && f->struct_size >= offsetof(xf_CallFrame, ctx) ? f : NULL,
                        XF_ERR_INTERNAL, "XLA FFI call frame is smaller than expected");
        return -1;
    }
    if (f->api == NULL || !XF_COVERS(f->api, xf_Api, api_version)
            || f->api->api_version.major != 0) {
        *err = xf_error(f, XF_ERR_INTERNAL,
                        "this XLA FFI API version is not supported; set "
                        "XENT_FAST_JAX_MECHANISM=callback");
        return -1;
    }
    ext = f->extension_start;
    if (ext != NULL && ext->type == XF_EXT_METADATA) {
        /* XLA asks which FFI version the handler speaks: the one it runs (the handler
         * reads only fields whose size it checks), and no traits. */
        xf_Metadata *md;
        if (ext->struct_size < sizeof(xf_MetadataExt)) {
            *err = xf_error(f, XF_ERR_INTERNAL, "XLA FFI metadata extension is too small");
            return -1;
        }
        md = ((xf_MetadataExt *)ext)->metadata;
        if (md == NULL || md->struct_size < offsetof(xf_Metadata, traits) + sizeof(uint32_t)) {
            *err = xf_error(f, XF_ERR_INTERNAL, "XLA FFI metadata is too small");
            return -1;
        }
        md->api_version.struct_size = sizeof(xf_Version);
        md->api_version.extension_start = NULL;
        md->api_version.major = f->api->api_version.major;
        md->api_version.minor = f->api->api_version.minor;
        md->traits = 0;
        return 0;
    }
    return f->stage == XF_STAGE_EXECUTE ? 1 : 0;
}

/* The i-th buffer of an argument or result list, or NULL (with the reason in *why) if
 * it is not a buffer or its struct is too small. */
static inline const xf_Buffer *xf_buffer(const xf_List *l, int64_t i, const char **why) {
    const xf_Buffer *b;
    if (l->struct_size < sizeof(xf_List) || i < 0 || i >= l->size || l->types == NULL
            || l->items == NULL) {
        *why = "an XLA FFI argument list of an unexpected layout";
        return NULL;
    }
    if (l->types[i] != XF_KIND_BUFFER) {
        *why = "the xent_fast FFI call takes and returns buffers only";
        return NULL;
    }
    b = (const xf_Buffer *)l->items[i];
    if (b == NULL || b->struct_size < sizeof(xf_Buffer) || b->rank < 0
            || b->rank > XF_MAX_RANK || (b->rank > 0 && b->dims == NULL)) {
        *why = "an XLA FFI buffer of an unexpected layout";
        return NULL;
    }
    return b;
}

/* The float64 scalar attribute `name` into *out. Returns 1, 0 if the call has no attribute
 * of that name, or -1 if it has one that is not a float64 scalar. Looked up by name
 * rather than by position: XLA sorts attributes by name, but nothing here relies on it. */
static inline int xf_attr_f64(const xf_CallFrame *f, const char *name, double *out) {
    const xf_Attrs *a;
    const xf_ByteSpan *s;
    const xf_Scalar *v;
    size_t len = strlen(name);
    int64_t i;
    if (!XF_COVERS(f, xf_CallFrame, attrs))
        return 0;
    a = &f->attrs;
    if (a->struct_size < sizeof(xf_Attrs) || a->size <= 0 || a->types == NULL
            || a->names == NULL || a->attrs == NULL)
        return 0;
    for (i = 0; i < a->size; i++) {
        s = a->names[i];
        if (s == NULL || s->len != len || s->ptr == NULL || memcmp(s->ptr, name, len) != 0)
            continue;
        v = (const xf_Scalar *)a->attrs[i];
        if (a->types[i] != XF_ATTR_SCALAR || v == NULL || v->dtype != XF_F64 || v->value == NULL)
            return -1;
        memcpy(out, v->value, sizeof(double));
        return 1;
    }
    return 0;
}

/* Number of attributes of the call (0 if the frame has none). */
static inline int64_t xf_attr_count(const xf_CallFrame *f) {
    if (!XF_COVERS(f, xf_CallFrame, attrs) || f->attrs.struct_size < sizeof(xf_Attrs))
        return 0;
    return f->attrs.size;
}

/* Number of elements of a buffer, or -1 if a dimension is negative or the product
 * overflows what an address space can hold. */
static inline int64_t xf_size(const xf_Buffer *b) {
    int64_t n = 1, i, d;
    for (i = 0; i < b->rank; i++) {
        d = b->dims[i];
        if (d < 0)
            return -1;
        if (d != 0 && n > (INT64_MAX / 16) / d)
            return -1;
        n *= d;
    }
    return n;
}

/* Whether buffer b has the dims of a's first `rank` dims. */
static inline int xf_same_dims(const xf_Buffer *b, const xf_Buffer *a, int64_t rank) {
    int64_t i;
    if (b->rank != rank || rank > a->rank)
        return 0;
    for (i = 0; i < rank; i++)
        if (b->dims[i] != a->dims[i])
            return 0;
    return 1;
}

/* --- blocks of work on XLA's thread pool -------------------------------------------
 * The caller and up to n_helpers tasks scheduled on XLA's pool take blocks from a shared
 * counter until none is left; the caller returns once every block is done. A task that
 * starts late finds no block left and touches nothing but the shared state, which the
 * last of its holders frees: the caller never waits for a task to start, so a busy or
 * one-thread pool cannot deadlock it (at worst the caller does every block itself). */

typedef void (*xf_block_fn)(void *ctx, int64_t block);

#if defined(_MSC_VER)
typedef volatile LONG64 xf_atomic;
static inline int64_t xf_fetch_add(xf_atomic *p, int64_t v) {
    return InterlockedExchangeAdd64(p, v);
}
static inline int64_t xf_load(xf_atomic *p) { return InterlockedCompareExchange64(p, 0, 0); }
static inline void xf_yield(void) { SwitchToThread(); }
#else
typedef int64_t xf_atomic;
static inline int64_t xf_fetch_add(xf_atomic *p, int64_t v) {
    return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL);
}
static inline int64_t xf_load(xf_atomic *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void xf_yield(void) { sched_yield(); }
#endif

typedef struct {
    xf_atomic next;                 /* the next block to take */
    xf_atomic done;                 /* blocks finished */
    xf_atomic refs;                 /* the caller and the scheduled tasks not yet ended */
    int64_t n_blocks;
    xf_block_fn fn;
    void *ctx;
} xf_Work;

static inline void xf_work_blocks(xf_Work *w) {
    int64_t b;
    while ((b = xf_fetch_add(&w->next, 1)) < w->n_blocks) {
        w->fn(w->ctx, b);
        xf_fetch_add(&w->done, 1);
    }
}

static inline void xf_release(xf_Work *w) {
    if (xf_fetch_add(&w->refs, -1) == 1)
        free(w);
}

static void xf_task(void *data) {
    xf_Work *w = (xf_Work *)data;
    xf_work_blocks(w);
    xf_release(w);
}

/* Destroy an error returned by an API call (the caller's to destroy). */
typedef struct { size_t struct_size; xf_ExtBase *extension_start; void *error; } xf_DestroyArgs;

static inline void xf_destroy(const xf_CallFrame *f, void *e) {
    xf_DestroyArgs d;
    if (XF_COVERS(f->api, xf_Api, error_destroy) && f->api->error_destroy != NULL) {
        d.struct_size = sizeof(d);
        d.extension_start = NULL;
        d.error = e;
        ((void (*)(xf_DestroyArgs *))f->api->error_destroy)(&d);
    }
}

/* Threads of XLA's pool, 0 if it has none or the API cannot tell. */
static inline int64_t xf_pool_threads(const xf_CallFrame *f) {
    xf_NumThreadsArgs a;
    int64_t n = 0;
    void *e;
    if (f->ctx == NULL || !XF_COVERS(f->api, xf_Api, thread_pool_num_threads)
            || f->api->thread_pool_num_threads == NULL)
        return 0;
    a.struct_size = sizeof(a);
    a.extension_start = NULL;
    a.ctx = f->ctx;
    a.num_threads = &n;
    e = f->api->thread_pool_num_threads(&a);
    if (e != NULL) {
        xf_destroy(f, e);
        return 0;
    }
    return n;
}

/* Run fn(ctx, b) for every b in [0, n_blocks), on the calling thread and on up to
 * n_helpers tasks of XLA's pool. Returns 0, or -1 if the shared state could not be
 * allocated (nothing was run). */
static inline int xf_parallel(const xf_CallFrame *f, int64_t n_helpers, int64_t n_blocks,
                              xf_block_fn fn, void *ctx) {
    xf_Work *w;
    xf_ScheduleArgs a;
    int64_t i, spins = 0;
    if (n_helpers > n_blocks - 1)
        n_helpers = n_blocks - 1;
    if (n_helpers <= 0 || !XF_COVERS(f->api, xf_Api, thread_pool_schedule)
            || f->api->thread_pool_schedule == NULL || f->ctx == NULL) {
        for (i = 0; i < n_blocks; i++)
            fn(ctx, i);
        return 0;
    }
    w = (xf_Work *)malloc(sizeof(xf_Work));
    if (w == NULL)
        return -1;
    w->next = 0;
    w->done = 0;
    w->refs = 1 + n_helpers;
    w->n_blocks = n_blocks;
    w->fn = fn;
    w->ctx = ctx;
    for (i = 0; i < n_helpers; i++) {
        void *e;
        a.struct_size = sizeof(a);
        a.extension_start = NULL;
        a.ctx = f->ctx;
        a.task = xf_task;
        a.data = w;
        e = f->api->thread_pool_schedule(&a);
        if (e != NULL) {            /* no pool: the tasks not scheduled hold no reference */
            xf_destroy(f, e);
            xf_fetch_add(&w->refs, -(n_helpers - i));
            break;
        }
    }
    xf_work_blocks(w);
    while (xf_load(&w->done) < n_blocks) {
        if (++spins > 64)
            xf_yield();
    }
    xf_release(w);
    return 0;
}

#endif
