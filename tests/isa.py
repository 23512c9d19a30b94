"""Which x86-64 instructions beyond the baseline (SSE2) a compiled object contains.

Reads the disassembly of ``objdump -d`` and sorts every instruction that a baseline
x86-64 CPU cannot run into the extension it needs: ``avx`` (VEX encoding, ymm
registers: AVX, AVX2, FMA, F16C), ``avx512`` (zmm or mask registers, EVEX-only forms
and registers), ``sse3+`` (SSE3 to SSE4.2, CRC32, POPCNT) and ``bmi`` (BMI1/2, LZCNT,
ADX, MOVBE, CMPXCHG16B). Used by ``tests/test_isa.py`` on the imported package and by
``.ci/wheel`` on the repaired wheel:

    python tests/isa.py FILE...      # one line per file, exit 1 if a baseline file is not
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

SSE3_PLUS = {
    # SSE3
    "addsubpd", "addsubps", "haddpd", "haddps", "hsubpd", "hsubps", "lddqu", "movddup",
    "movshdup", "movsldup", "fisttp", "fisttps", "fisttpl", "fisttpll",
    # SSSE3
    "pabsb", "pabsw", "pabsd", "palignr", "phaddw", "phaddd", "phaddsw", "phsubw",
    "phsubd", "phsubsw", "pmaddubsw", "pmulhrsw", "pshufb", "psignb", "psignw", "psignd",
    # SSE4.1
    "blendpd", "blendps", "blendvpd", "blendvps", "dppd", "dpps", "extractps", "insertps",
    "movntdqa", "mpsadbw", "packusdw", "pblendvb", "pblendw", "pcmpeqq", "pextrb",
    "pextrd", "pextrq", "phminposuw", "pinsrb", "pinsrd", "pinsrq", "pmaxsb", "pmaxsd",
    "pmaxud", "pmaxuw", "pminsb", "pminsd", "pminud", "pminuw", "pmuldq", "pmulld",
    "ptest", "roundpd", "roundps", "roundsd", "roundss",
    # SSE4.2, POPCNT
    "pcmpestri", "pcmpestrm", "pcmpistri", "pcmpistrm", "pcmpgtq", "crc32", "crc32b",
    "crc32w", "crc32l", "crc32q", "popcnt",
}
SSE3_PLUS_PREFIXES = ("pmovsx", "pmovzx")
BMI = {
    "andn", "bextr", "blsi", "blsmsk", "blsr", "bzhi", "mulx", "pdep", "pext", "rorx",
    "sarx", "shlx", "shrx", "lzcnt", "tzcnt", "adcx", "adox", "movbe", "cmpxchg16b",
}
# AVX-512-only mnemonics that may appear with xmm/ymm operands (AVX512VL).
AVX512_PREFIXES = (
    "vpternlog", "vpermt2", "vpermi2", "vscalef", "vrndscale", "vfixupimm", "vgetexp",
    "vgetmant", "vpcompress", "vcompress", "vpexpand", "vexpand", "vrange", "vreduce",
    "vfpclass", "vpmovm2", "vblendm", "vpblendm", "vpabsq", "vpmaxsq", "vpminsq",
    "vpmaxuq", "vpminuq", "vpmullq", "vpsraq", "vpror", "vprol", "vpconflict", "vplzcnt",
    "vrcp14", "vrsqrt14", "vpopcnt", "valign", "vcvttps2udq", "vcvtps2udq", "vcvtudq2",
    "vcvtuqq2", "vcvtqq2", "vcvttpd2qq", "vcvtpd2qq", "vcvttps2qq", "vcvtps2qq",
    "vcvttpd2uqq", "vcvtpd2uqq", "vcvttps2uqq", "vcvtps2uqq", "vcvtusi2", "vcvttsd2usi",
    "vcvtsd2usi", "vcvttss2usi", "vcvtss2usi", "vextracti64x", "vextracti32x",
    "vextractf64x", "vextractf32x", "vinserti64x", "vinserti32x", "vinsertf64x",
    "vinsertf32x", "vbroadcasti64x", "vbroadcasti32x", "vbroadcastf64x", "vbroadcastf32x",
    "vpbroadcastm", "vpmovq", "vpmovd", "vpmovw",
    # saturating down-conversions; not vpmovsx*, which AVX2 has
    "vpmovsq", "vpmovsd", "vpmovsw", "vpmovus", "vptestm",
    "vptestnm", "vmovdqu8", "vmovdqu16", "vmovdqu32", "vmovdqu64", "vmovdqa32",
    "vmovdqa64", "kmov", "kand", "kor", "kxor", "knot", "kshift", "kunpck", "kortest",
    "ktest", "kadd",
)
AVX512_OPERAND = re.compile(r"%zmm|%k[0-7]\b|%[xy]mm(1[6-9]|2\d|3[01])\b|\{1to\d+\}|\{%k")
AVX_OPERAND = re.compile(r"%ymm")
# Prefixes objdump prints before the mnemonic.
PREFIXES = {"rep", "repz", "repe", "repnz", "repne", "lock", "notrack", "bnd", "data16",
            "addr32", "cs", "ds", "ss", "es", "fs", "gs", "rex", "rex.w", "{vex}", "{evex}"}

LEVELS = ("avx", "avx512", "sse3+", "bmi")


def classify(mnemonic: str, operands: str) -> str | None:
    """The extension an instruction needs beyond baseline x86-64, or None."""
    if AVX512_OPERAND.search(operands) or mnemonic.startswith(AVX512_PREFIXES):
        return "avx512"
    if AVX_OPERAND.search(operands) or (mnemonic.startswith("v") and mnemonic not in
                                        {"verr", "verw"}):
        return "avx"
    if mnemonic in SSE3_PLUS or mnemonic.startswith(SSE3_PLUS_PREFIXES):
        return "sse3+"
    if mnemonic in BMI:
        return "bmi"
    return None


def is_x86_64_elf(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(20)
    # ELF magic, 64-bit, machine 0x3e (x86-64) at offset 18, little endian
    return head[:4] == b"\x7fELF" and head[4] == 2 and head[18:20] == b"\x3e\x00"


def extensions(path: str) -> dict[str, dict[str, int]]:
    """{extension: {mnemonic: count}} of the instructions of ``path`` beyond SSE2."""
    objdump = shutil.which("objdump")
    if objdump is None:
        raise FileNotFoundError("objdump (GNU binutils) is needed")
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", "-M", "att", path],
                          capture_output=True, text=True, check=True).stdout
    found: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].strip().endswith(":"):
            continue
        tokens = parts[1].split(None, 1) if len(parts) == 2 else [parts[1], parts[2]]
        words = " ".join(tokens).split()
        while words and words[0] in PREFIXES:
            words = words[1:]
        if not words:
            continue
        mnemonic, operands = words[0], " ".join(words[1:])
        ext = classify(mnemonic, operands)
        if ext:
            per = found.setdefault(ext, {})
            per[mnemonic] = per.get(mnemonic, 0) + 1
    return found


def simd_level_of(path: str) -> str:
    """The level a module of the package is compiled for, from its name."""
    name = os.path.basename(path).split(".")[0]
    for level in ("avx512", "avx2"):
        if name.endswith("_" + level):
            return level
    return "baseline"


def check(path: str) -> tuple[bool, str]:
    """Whether ``path`` holds only instructions its level allows, and a one-line summary.

    baseline: nothing beyond SSE2. avx2: AVX/AVX2/FMA/BMI allowed, no AVX-512, and some
    AVX present (else the module is not the variant it claims). avx512: some AVX-512.
    """
    level = simd_level_of(path)
    found = extensions(path)
    counts = {k: sum(v.values()) for k, v in found.items()}
    if level == "baseline":
        ok = not found
    elif level == "avx2":
        ok = "avx512" not in found and "avx" in found
    else:
        ok = "avx512" in found
    detail = ", ".join(f"{k} {counts[k]}" for k in LEVELS if k in counts) or "none"
    if level == "baseline" and found:
        detail += " (" + ", ".join(sorted({m for v in found.values() for m in v})[:12]) + ")"
    return ok, f"{'ok  ' if ok else 'FAIL'} {level:<8} {os.path.basename(path)}: beyond SSE2: {detail}"


def main(paths: list[str]) -> int:
    bad = 0
    for path in paths:
        if not is_x86_64_elf(path):
            print(f"skip {path}: not an x86-64 ELF object")
            continue
        ok, line = check(path)
        print(line)
        bad += not ok
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
