/* OpenMP queries that also compile without OpenMP.
 *
 * Cython cannot test the _OPENMP macro, and cimporting `openmp` would leave unresolved
 * omp_* symbols in a serial build, so the few runtime calls the package needs live here.
 */
#ifndef XENT_OMP_H
#define XENT_OMP_H

#ifdef _OPENMP
#include <omp.h>
#define XF_OPENMP_VERSION _OPENMP
static inline int xf_omp_max_threads(void) { return omp_get_max_threads(); }
static inline int xf_omp_num_procs(void) { return omp_get_num_procs(); }
/* The most threads a kernel asks for. A runtime that cannot start a requested thread
 * ends the process (libgomp: "Thread creation failed"), so a count from the caller or
 * OMP_NUM_THREADS is capped at four per processor, past which a kernel gains nothing.
 * (The runtime itself keeps a team within OMP_THREAD_LIMIT.) */
static inline int xf_omp_thread_cap(void) {
    int procs = omp_get_num_procs();
    return procs > 1 ? 4 * procs : 4;
}

#if defined(__linux__) || defined(__APPLE__)
#include <dlfcn.h>
/* Path of the shared library that provides the OpenMP runtime, or "" if unknown. */
static inline const char *xf_omp_library(void) {
    Dl_info info;
    if (dladdr((void *)&omp_get_max_threads, &info) && info.dli_fname)
        return info.dli_fname;
    return "";
}
#else
static inline const char *xf_omp_library(void) { return ""; }
#endif

#else
#define XF_OPENMP_VERSION 0
static inline int xf_omp_max_threads(void) { return 1; }
static inline int xf_omp_num_procs(void) { return 1; }
static inline int xf_omp_thread_cap(void) { return 4; }
static inline const char *xf_omp_library(void) { return ""; }
#endif

#endif
