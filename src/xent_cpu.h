/* Which instruction-set level this CPU (and OS) can run: 0 baseline, 1 AVX2 + FMA (with
 * F16C, BMI2 and POPCNT, which that level's modules are compiled for too; every AVX2 CPU
 * has them), 2 AVX-512 (F, BW, DQ, VL) on top of level 1. GCC's and clang's
 * __builtin_cpu_supports also check that the OS saves the wide registers; the MSVC path
 * reads CPUID and XCR0 itself. Every other compiler or CPU (aarch64, say) reports
 * baseline: only x86-64 builds contain wider kernels. */
#ifndef XENT_CPU_H
#define XENT_CPU_H

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#include <cpuid.h>

static inline int xf_cpu_level(void)
{
    unsigned a, b, c, d;
    int v3;
    __builtin_cpu_init();
    /* F16C from CPUID leaf 1 (ECX bit 29): __builtin_cpu_supports knows "f16c" only
     * since GCC 11 and clang 18. The OS check on the wide registers is the builtin's. */
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 29) & 1))
        return 0;
    v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
         && __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
    if (v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return 2;
    return v3 ? 1 : 0;
}

#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_AMD64))
#include <intrin.h>

static inline int xf_cpu_level(void)
{
    int r[4];
    unsigned long long xcr0;
    int avx512;
    __cpuid(r, 0);
    if (r[0] < 7)
        return 0;
    __cpuid(r, 1);
    /* ECX: FMA (12), POPCNT (23), OSXSAVE (27), AVX (28), F16C (29) */
    if (!((r[2] >> 12) & 1) || !((r[2] >> 23) & 1) || !((r[2] >> 27) & 1)
        || !((r[2] >> 28) & 1) || !((r[2] >> 29) & 1))
        return 0;
    xcr0 = _xgetbv(0);
    if ((xcr0 & 0x6) != 0x6)                 /* the OS saves XMM and YMM state */
        return 0;
    __cpuidex(r, 7, 0);
    if (!((r[1] >> 5) & 1) || !((r[1] >> 8) & 1))      /* EBX: AVX2 (5), BMI2 (8) */
        return 0;
    /* EBX: AVX512F (16), DQ (17), BW (30), VL (31); XCR0: opmask and ZMM state (5-7) */
    avx512 = ((r[1] >> 16) & 1) && ((r[1] >> 17) & 1) && ((r[1] >> 30) & 1)
             && ((r[1] >> 31) & 1) && (xcr0 & 0xe0) == 0xe0;
    return avx512 ? 2 : 1;
}

#else

static inline int xf_cpu_level(void) { return 0; }

#endif

#endif
