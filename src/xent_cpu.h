/* Which instruction-set level this CPU (and OS) can run: 0 baseline, 1 AVX2 + FMA,
 * 2 AVX-512 (F, BW, DQ, VL). GCC's and clang's __builtin_cpu_supports also check that
 * the OS saves the wide registers. Other compilers and CPUs report baseline. */
#ifndef XENT_CPU_H
#define XENT_CPU_H

static inline int xf_cpu_level(void)
{
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return 1;
#endif
    return 0;
}

#endif
