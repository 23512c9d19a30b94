/* Vectorisable exp and the row primitives of a stable softmax.
 *
 * Why C: the loops below need `#pragma omp simd` to vectorise their reductions without
 * -ffast-math (which would also break inf/nan), and the exp must be inline arithmetic
 * rather than a libm call. Cython can express neither. The kernel modules include this
 * header and are compiled once per instruction set (baseline x86-64, x86-64-v3 = AVX2 +
 * FMA, x86-64-v4 = AVX-512); xent_fast picks the module at import from the CPU. A few
 * hot loops are also written with AVX2 or AVX-512 intrinsics, doing the portable loop's
 * operations in its order; defining XF_PORTABLE leaves them out, which is how
 * tests/hand_loops_check.c checks that they give the portable code's bits.
 *
 * Accuracy: xf_expf and xf_exp are within 2 ulp of exp for x <= 0, subnormal results
 * included, exactly 1 at 0 and exactly 0 at -inf. They take x <= 0 only (a logit minus
 * its row max, or -|x|) and no NaN: callers give NaN rows NaN results before any exp.
 */
/* Layout: this header includes, in order,
 *   xent_math.h    portability macros, bit casts, the scalar exp and log1p
 *   xent_rows.h    prefetching, row max, exp-sums below the max, scaling, online sums,
 *                  soft-target sums
 *     xent_avx512.h  the exp-sum loop by hand with AVX-512 (AVX-512 builds only)
 *     xent_avx2.h    the exp-sum loop by hand with AVX2 + FMA (AVX2 builds only)
 *   xent_tiles.h   short rows, 16 at a time across the lanes (cross-entropy, softmax)
 *   xent_binary.h  binary cross-entropy and focal loss on logits
 * The kernel modules (.pyx), xent_score.h and xent_distill.h include this header only.
 */
#ifndef XENT_SIMD_H
#define XENT_SIMD_H

#include "xent_math.h"
#include "xent_rows.h"
#include "xent_tiles.h"
#include "xent_binary.h"

/* The functions of both float types, instantiated from the headers' macros here, after
 * every definition, in the order they had when this was one header: the preprocessed
 * code is the same token for token as before the split, so the compiled kernels are. */
XF_ROW_PRIMITIVES(float, f32, xf_expf, float)
XF_ROW_PRIMITIVES(double, f64, xf_exp, double)
XF_ONLINE_PRIMITIVES(float, f32, xf_expf, float)
XF_ONLINE_PRIMITIVES(double, f64, xf_exp, double)
XF_SOFT_SUMS(float, f32)
XF_SOFT_SUMS(double, f64)
XF_SMALL_CE(float, f32, xf_expf)
XF_SMALL_CE(double, f64, xf_exp)
XF_SMALL_SOFTMAX(float, f32)
XF_SMALL_SOFTMAX(double, f64)
XF_BCE_LOGITS(float, f32, xf_expf, xf_log1p_unit_inv_f32)
XF_BCE_LOGITS(double, f64, xf_exp, xf_log1p_unit_inv_f64)
XF_FOCAL_LOGITS(float, f32)
XF_FOCAL_LOGITS(double, f64)

#endif
