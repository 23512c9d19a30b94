#!/usr/bin/env bash
# Build xent_fast with AddressSanitizer and UndefinedBehaviorSanitizer (gcc) in a
# scratch copy of the tracked sources, then run the test suite under them with the
# sanitizer runtimes preloaded (Python itself is not instrumented). Any out-of-bounds
# access, use after free or undefined behaviour in the kernels stops the run.
#
#   bash tests/sanitize.sh            # the whole suite
#   bash tests/sanitize.sh -k binary  # extra arguments go to pytest
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$src" && git ls-files -z | xargs -0 cp --parents -t "$work")
cd "$work"
XENT_FAST_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1" \
XENT_FAST_LDFLAGS="-fsanitize=address,undefined" \
    python setup.py build_ext --inplace -j 2 > build.log 2>&1 || { tail -40 build.log; exit 1; }
asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
# Leak checks would report CPython's own arenas; the memory test in the suite covers leaks.
LD_PRELOAD="$asan $ubsan" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:symbolize=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    python -m pytest tests -q -p no:cacheprovider "$@"
