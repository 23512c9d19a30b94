#!/usr/bin/env bash
# Run tests/valgrind_calls.py under valgrind memcheck at every SIMD level valgrind can
# execute (it has no AVX-512, and its CPUID hides it, so the default picks AVX2).
# Exit status 1 on any invalid read or write, use of uninitialised memory or bad free.
# Python's own allocator is switched to malloc so that memcheck sees every allocation.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for level in baseline avx2; do
    echo "== XENT_FAST_SIMD=$level"
    XENT_FAST_SIMD=$level PYTHONMALLOC=malloc valgrind --tool=memcheck --error-exitcode=1 \
        --errors-for-leak-kinds=none --leak-check=no --quiet \
        python "$here/valgrind_calls.py"
done
