#!/usr/bin/env bash
# Build xent_fast with AddressSanitizer and UndefinedBehaviorSanitizer (gcc) in a
# scratch copy of the tracked sources, then run the test suite under them with the
# sanitizer runtimes preloaded (Python itself is not instrumented). Any out-of-bounds
# access, use after free or undefined behaviour in the kernels stops the run.
#
#   bash tests/sanitize.sh            # the whole suite
#   bash tests/sanitize.sh -k binary  # extra arguments go to pytest
#
# Needs python3 (3.10+), gcc and pip access to a package index, nothing installed: the
# build and test requirements (pyproject.toml's [build-system] requires and its `test`
# extra) go into a venv in the scratch directory. XENT_FAST_SANITIZE_VENV=<dir> keeps
# that venv in <dir> instead, and reuses it on later runs.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$src" && git ls-files -z | xargs -0 cp --parents -t "$work")
cd "$work"

venv=${XENT_FAST_SANITIZE_VENV:-$work/venv}
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
py=$venv/bin/python
"$py" -c 'import tomllib' 2>/dev/null || "$py" -m pip install -q tomli
mapfile -t reqs < <("$py" - <<'EOF'
try:
    import tomllib
except ImportError:                     # Python 3.10
    import tomli as tomllib
with open("pyproject.toml", "rb") as f:
    meta = tomllib.load(f)
print("\n".join(meta["build-system"]["requires"]
                + meta["project"]["optional-dependencies"]["test"]))
EOF
)
"$py" -m pip install -q "${reqs[@]}" > pip.log 2>&1 || { tail -40 pip.log; exit 1; }

# -fexpensive-optimizations: GCC fuses a * b + c into an FMA only with it, which -O2 and
# up turn on and -O1 does not. The hand-written AVX2 and AVX-512 loops fuse by their
# intrinsics, and the portable loops they stand for give the same bits only when the
# compiler fuses them too (tests/test_simd.py: test_fma_levels_agree_bitwise and
# test_hand_written_loops_are_the_portable_code_bitwise); with it the -O1 build rounds
# as the release build does.
XENT_FAST_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1 -fexpensive-optimizations" \
XENT_FAST_LDFLAGS="-fsanitize=address,undefined" \
    "$py" setup.py build_ext --inplace -j 2 > build.log 2>&1 || { tail -40 build.log; exit 1; }
asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
# Leak checks would report CPython's own arenas; the memory test in the suite covers leaks.
# PYTHONPATH: tests that start a child outside the checkout import this in-place build.
PYTHONPATH="$work${PYTHONPATH:+:$PYTHONPATH}" \
LD_PRELOAD="$asan $ubsan" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:symbolize=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$py" -m pytest tests -q -p no:cacheprovider "$@"
