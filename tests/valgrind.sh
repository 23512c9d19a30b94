#!/usr/bin/env bash
# Run tests/valgrind_calls.py under valgrind memcheck at every SIMD level valgrind can
# execute (it has no AVX-512, and its CPUID hides it, so the default picks AVX2), on the
# xent_fast that python imports (the in-place build of this tree, or the one installed;
# set PYTHONPATH to pick another). Exit status 1 if any level gives an invalid read or
# write, a use of uninitialised memory or a bad free; every level runs either way.
#
# Python's own allocator is switched to malloc so that memcheck sees every allocation,
# and tests/valgrind-python.supp suppresses what memcheck reports inside the interpreter
# and the dynamic loader on any script (34 contexts with CPython 3.11). valgrind
# runs the interpreter's own binary: a pyenv shim is a shell script, and memcheck would
# check the shell and not follow it into python.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)') || exit 1
failed=()
for level in baseline avx2; do
    echo "== XENT_FAST_SIMD=$level"
    XENT_FAST_SIMD=$level PYTHONMALLOC=malloc valgrind --tool=memcheck --error-exitcode=99 \
        --suppressions="$here/valgrind-python.supp" --num-callers=30 \
        --errors-for-leak-kinds=none --leak-check=no --quiet \
        "$py" "$here/valgrind_calls.py"
    case $? in
        0) ;;
        99) failed+=("$level (memcheck errors above)") ;;
        *) failed+=("$level (valgrind_calls.py failed)") ;;
    esac
done
if [ ${#failed[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "valgrind: no errors at baseline or avx2"
