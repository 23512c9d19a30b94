"""The compiled modules run on any x86-64 CPU: outside the AVX2/AVX-512 variants (which
are imported only when the CPU has those instructions, see test_simd.py) no instruction
goes beyond the x86-64 baseline. Checked on the disassembly of the imported package's
objects, so a run against an installed wheel checks the wheel's."""

import glob
import os
import platform
import shutil
import subprocess
import sys

import pytest

import xent_fast
import isa

PACKAGE = os.path.dirname(xent_fast.__file__)
OBJECTS = sorted(glob.glob(os.path.join(PACKAGE, "*.so")))

pytestmark = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.machine() == "x86_64"
         and shutil.which("objdump")),
    reason="needs an x86-64 Linux build and GNU objdump")


def test_every_simd_module_has_every_level():
    names = {os.path.basename(p).split(".")[0] for p in OBJECTS}
    variants = {n for n in names if isa.simd_level_of(n) != "baseline"}
    if not variants:
        pytest.skip("built without the SIMD variants (XENT_FAST_NO_SIMD=1)")
    # the same baseline modules have an avx2 and an avx512 variant
    avx2 = {n[: -len("_avx2")] for n in variants if n.endswith("_avx2")}
    avx512 = {n[: -len("_avx512")] for n in variants if n.endswith("_avx512")}
    assert avx2 == avx512
    assert avx2 and avx2 <= names


@pytest.mark.parametrize("path", OBJECTS, ids=os.path.basename)
def test_object_uses_only_its_levels_instructions(path):
    ok, summary = isa.check(path)
    assert ok, summary


@pytest.mark.skipif(not shutil.which("cc"), reason="needs a C compiler")
@pytest.mark.parametrize("flags, name, expected_ok", [
    ([], "mod_baseline.so", True),
    (["-msse4.1", "-mpopcnt"], "mod_baseline.so", False),
    (["-mavx2", "-mfma"], "mod_baseline.so", False),
    (["-mavx2", "-mfma"], "mod_avx2.so", True),
    (["-mavx512f", "-mavx512vl", "-mprefer-vector-width=512"], "mod_avx2.so", False),
    (["-mavx512f", "-mavx512vl", "-mprefer-vector-width=512"], "mod_avx512.so", True),
])
def test_the_check_catches_wider_instructions(tmp_path, flags, name, expected_ok):
    # The checker itself: code built for wider CPUs is caught under a narrower name.
    src = tmp_path / "mod.c"
    src.write_text("#include <math.h>\n"
                   "int count(unsigned x) { return __builtin_popcount(x); }\n"
                   "void fl(float *restrict a, const float *restrict b, int n)\n"
                   "{ for (int i = 0; i < n; i++) a[i] = floorf(a[i]) * b[i] + a[i]; }\n")
    out = tmp_path / name
    subprocess.run(["cc", "-O3", "-shared", "-fPIC", *flags, str(src), "-o", str(out)],
                   check=True)
    assert isa.check(str(out))[0] is expected_ok


@pytest.mark.parametrize("mnemonic, operands, level", [
    ("vpmovsxdq", "%xmm3,%ymm1", "avx"),        # sign extension: AVX2
    ("vpmovzxbd", "%xmm0,%ymm2", "avx"),
    ("vpmovsqd", "%ymm1,%xmm0", "avx512"),      # saturating down-conversion: AVX-512VL
    ("vpmovdb", "%xmm1,%xmm0", "avx512"),
    ("vaddps", "%zmm1,%zmm2,%zmm3", "avx512"),
    ("pmovsxdq", "%xmm1,%xmm0", "sse3+"),
    ("addps", "%xmm1,%xmm0", None),
])
def test_classify_names_the_extension(mnemonic, operands, level):
    assert isa.classify(mnemonic, operands) == level
