/*
 * fastinit_philox.cuh: Philox4x32-10 and the transforms of the stream
 * contract fastinit-philox v2 (docs/stream.md), for CUDA and plain C/C++.
 *
 * This is the C twin of kernels/cpu/philox.py and must stay bit-identical to
 * it: the same constants (same decimal digits), the same operations in the
 * same order. Every floating-point operation below is one IEEE-754
 * operation rounded to nearest even, with no fused multiply-add and no
 * flush of subnormals:
 *
 * - under CUDA every +, -, *, / and sqrt goes through the _rn intrinsics
 *   (__fadd_rn, __dmul_rn, ...), which are never contracted into an FMA
 *   whatever -fmad says; still compile with -ftz=false (nvcc's and NVRTC's
 *   default; --use_fast_math turns it on, and so does cupy.RawModule(code=...),
 *   which appends -ftz=true: fastinit/cuda.py calls NVRTC itself);
 * - in plain C/C++ the operations are the language's own: compile with
 *   -ffp-contract=off and without -ffast-math on a target whose float
 *   evaluation method is 0 (SSE2 or any 64-bit target), both checked below
 *   where the compiler tells.
 *
 * The header compiles as C99, as C++ (host), under nvcc and under NVRTC
 * (which has no standard headers: nothing below needs one on the device).
 * All functions are inline and marked host+device by FASTINIT_HD.
 *
 * Names follow kernels/cpu/philox.py: philox4x32, log_f32, cossin2pi_f32,
 * erfinv_f32, erfcinv_far_f32, bf16_bits, f16_bits, ... The contract's section numbers are
 * given with each part.
 */
#ifndef FASTINIT_PHILOX_CUH
#define FASTINIT_PHILOX_CUH

/* ==== platform block: the only place that differs between CUDA and C ==== */
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define FASTINIT_HD __host__ __device__ __forceinline__
#else
#define FASTINIT_HD static inline
#if defined(__FAST_MATH__)
#error "fastinit_philox.cuh: -ffast-math breaks the stream contract; compile without it"
#endif
#if defined(__FLT_EVAL_METHOD__) && __FLT_EVAL_METHOD__ != 0
#error "fastinit_philox.cuh: needs FLT_EVAL_METHOD 0 (SSE2 arithmetic: -msse2 -mfpmath=sse)"
#endif
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif
#endif

#if !defined(__CUDACC_RTC__)
#include <math.h>   /* sqrtf, sqrt: correctly rounded, for the host path */
#include <string.h> /* memcpy, for the host bit casts */
#endif

/* Fixed-width integers from the built-in types (NVRTC has no <stdint.h>);
 * the typedefs below fail to compile where a width is wrong. */
typedef unsigned int fi_u32;
typedef int fi_i32;
typedef unsigned long long fi_u64;
typedef long long fi_i64;
typedef unsigned short fi_u16;
typedef char fi_check_u32_width[(sizeof(fi_u32) == 4) ? 1 : -1];
typedef char fi_check_u64_width[(sizeof(fi_u64) == 8) ? 1 : -1];
typedef char fi_check_u16_width[(sizeof(fi_u16) == 2) ? 1 : -1];

/* Bit casts (contract 4: f2b). */
FASTINIT_HD fi_u32 fi_f32_bits(float x)
{
#if defined(__CUDA_ARCH__)
    return __float_as_uint(x);
#else
    fi_u32 b;
    memcpy(&b, &x, sizeof b);
    return b;
#endif
}

FASTINIT_HD float fi_bits_f32(fi_u32 b)
{
#if defined(__CUDA_ARCH__)
    return __uint_as_float(b);
#else
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
#endif
}

FASTINIT_HD fi_u64 fi_f64_bits(double x)
{
#if defined(__CUDA_ARCH__)
    return (fi_u64)__double_as_longlong(x);
#else
    fi_u64 b;
    memcpy(&b, &x, sizeof b);
    return b;
#endif
}

FASTINIT_HD double fi_bits_f64(fi_u64 b)
{
#if defined(__CUDA_ARCH__)
    return __longlong_as_double((long long)b);
#else
    double x;
    memcpy(&x, &b, sizeof x);
    return x;
#endif
}

/* One IEEE operation each, round to nearest even, never contracted. */
#if defined(__CUDA_ARCH__)
FASTINIT_HD float fi_addf(float a, float b) { return __fadd_rn(a, b); }
FASTINIT_HD float fi_subf(float a, float b) { return __fsub_rn(a, b); }
FASTINIT_HD float fi_mulf(float a, float b) { return __fmul_rn(a, b); }
FASTINIT_HD float fi_divf(float a, float b) { return __fdiv_rn(a, b); }
FASTINIT_HD float fi_sqrtf(float a) { return __fsqrt_rn(a); }
FASTINIT_HD double fi_add(double a, double b) { return __dadd_rn(a, b); }
FASTINIT_HD double fi_sub(double a, double b) { return __dsub_rn(a, b); }
FASTINIT_HD double fi_mul(double a, double b) { return __dmul_rn(a, b); }
FASTINIT_HD double fi_div(double a, double b) { return __ddiv_rn(a, b); }
FASTINIT_HD double fi_sqrt(double a) { return __dsqrt_rn(a); }
#else
FASTINIT_HD float fi_addf(float a, float b) { return a + b; }
FASTINIT_HD float fi_subf(float a, float b) { return a - b; }
FASTINIT_HD float fi_mulf(float a, float b) { return a * b; }
FASTINIT_HD float fi_divf(float a, float b) { return a / b; }
FASTINIT_HD float fi_sqrtf(float a) { return sqrtf(a); }
FASTINIT_HD double fi_add(double a, double b) { return a + b; }
FASTINIT_HD double fi_sub(double a, double b) { return a - b; }
FASTINIT_HD double fi_mul(double a, double b) { return a * b; }
FASTINIT_HD double fi_div(double a, double b) { return a / b; }
FASTINIT_HD double fi_sqrt(double a) { return sqrt(a); }
#endif
/* ==== end of the platform block ==== */

/* |x| by clearing the sign bit (exact, as numpy's abs). */
FASTINIT_HD float fi_absf(float x) { return fi_bits_f32(fi_f32_bits(x) & 0x7FFFFFFFu); }
FASTINIT_HD double fi_abs(double x) { return fi_bits_f64(fi_f64_bits(x) & 0x7FFFFFFFFFFFFFFFull); }

/* ---- Philox4x32-10 (contract 1; Random123) -------------------------------- */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* A counter or an output block of four 32-bit words. */
typedef struct {
    fi_u32 x0, x1, x2, x3;
} philox4x32_block;

FASTINIT_HD philox4x32_block philox_round(philox4x32_block c, fi_u32 k0, fi_u32 k1)
{
    const fi_u64 p0 = (fi_u64)PHILOX_M0 * c.x0;
    const fi_u64 p1 = (fi_u64)PHILOX_M1 * c.x2;
    philox4x32_block r;
    r.x0 = (fi_u32)(p1 >> 32) ^ c.x1 ^ k0;
    r.x1 = (fi_u32)p1;
    r.x2 = (fi_u32)(p0 >> 32) ^ c.x3 ^ k1;
    r.x3 = (fi_u32)p0;
    return r;
}

/* Ten rounds on counter (c0..c3) with key (k0, k1); nine key bumps. */
FASTINIT_HD philox4x32_block philox4x32(fi_u32 c0, fi_u32 c1, fi_u32 c2, fi_u32 c3,
                                        fi_u32 k0, fi_u32 k1)
{
    philox4x32_block c;
    c.x0 = c0;
    c.x1 = c1;
    c.x2 = c2;
    c.x3 = c3;
    c = philox_round(c, k0, k1);
    k0 += PHILOX_W0; k1 += PHILOX_W1; c = philox_round(c, k0, k1);
    k0 += PHILOX_W0; k1 += PHILOX_W1; c = philox_round(c, k0, k1);
    k0 += PHILOX_W0; k1 += PHILOX_W1; c = philox_round(c, k0, k1);
    k0 += PHILOX_W0; k1 += PHILOX_W1; c = philox_round(c, k0, k1);
    k0 += PHILOX_W0; k1 += PHILOX_W1; c = philox_round(c, k0, k1);
    k0 += PHILOX_W0; k1 += PHILOX_W1; c = philox_round(c, k0, k1);
    k0 += PHILOX_W0; k1 += PHILOX_W1; c = philox_round(c, k0, k1);
    k0 += PHILOX_W0; k1 += PHILOX_W1; c = philox_round(c, k0, k1);
    k0 += PHILOX_W0; k1 += PHILOX_W1; c = philox_round(c, k0, k1);
    return c;
}

/* Block j of stream (s0, s1) under key (k0, k1) (contract 2). */
FASTINIT_HD philox4x32_block philox_stream_block(fi_u64 j, fi_u32 k0, fi_u32 k1,
                                                 fi_u32 s0, fi_u32 s1)
{
    return philox4x32((fi_u32)j, (fi_u32)(j >> 32), s0, s1, k0, k1);
}

/* ---- bits to uniforms (contract 3.1) --------------------------------------- */
#define TWO_M24_F32 5.9604644775390625e-08f                      /* 2^-24, exact */
#define TWO_M53_F64 1.1102230246251565404236316680908203125e-16  /* 2^-53, exact */

/* The 24 uniform bits of a word, and the 53 of the words (lo, hi). */
FASTINIT_HD fi_i32 k24(fi_u32 w) { return (fi_i32)(w >> 8); }
FASTINIT_HD fi_i64 k53(fi_u32 lo, fi_u32 hi)
{
    return (fi_i64)((((fi_u64)hi << 32) | (fi_u64)lo) >> 11);
}

/* U in [0, 1), U1 in (0, 1], Um in (0, 1): T(k), T(k + 1), T(k | 1) times 2^-B. */
FASTINIT_HD float uniform_from_bits_f32(fi_u32 w)
{
    return fi_mulf((float)k24(w), TWO_M24_F32);
}
FASTINIT_HD float uniform1_from_bits_f32(fi_u32 w)
{
    return fi_mulf((float)(k24(w) + 1), TWO_M24_F32);
}
FASTINIT_HD float uniform_mid_from_bits_f32(fi_u32 w)
{
    return fi_mulf((float)(k24(w) | 1), TWO_M24_F32);
}
FASTINIT_HD double uniform_from_bits_f64(fi_u32 lo, fi_u32 hi)
{
    return fi_mul((double)k53(lo, hi), TWO_M53_F64);
}
FASTINIT_HD double uniform1_from_bits_f64(fi_u32 lo, fi_u32 hi)
{
    return fi_mul((double)(k53(lo, hi) + 1), TWO_M53_F64);
}
FASTINIT_HD double uniform_mid_from_bits_f64(fi_u32 lo, fi_u32 hi)
{
    return fi_mul((double)(k53(lo, hi) | 1), TWO_M53_F64);
}

/* ---- log (contract 4.1) ------------------------------------------------------ */
#define LOG_SQRT2_F32 1.41421356f
#define LOG_LN2_HI_F32 0.693359375f
#define LOG_LN2_LO_F32 -2.12194440e-4f
#define LOG_L1_F32 0.666666667f
#define LOG_L2_F32 0.4f
#define LOG_L3_F32 0.285714286f
#define LOG_L4_F32 0.222222222f
#define LOG_SQRT2_F64 1.4142135623730951
#define LOG_LN2_HI_F64 6.93147180369123816490e-01
#define LOG_LN2_LO_F64 1.90821492927058770002e-10
#define LOG_L1_F64 0.66666666666666667
#define LOG_L2_F64 0.4
#define LOG_L3_F64 0.28571428571428571
#define LOG_L4_F64 0.22222222222222222
#define LOG_L5_F64 0.18181818181818182
#define LOG_L6_F64 0.15384615384615385
#define LOG_L7_F64 0.13333333333333333
#define LOG_L8_F64 0.11764705882352941
#define LOG_L9_F64 0.10526315789473684

/* Natural log of a normal float32 in (0, 1]. */
FASTINIT_HD float log_f32(float x)
{
    const fi_u32 b = fi_f32_bits(x);
    fi_i32 e = (fi_i32)((b >> 23) & 0xFFu) - 127;
    float m = fi_bits_f32((b & 0x7FFFFFu) | 0x3F800000u);
    float f, s, z, r, hfsq, lm, ef;
    if (m > LOG_SQRT2_F32) {
        m = fi_mulf(m, 0.5f);
        e = e + 1;
    }
    f = fi_subf(m, 1.0f);
    s = fi_divf(f, fi_addf(2.0f, f));
    z = fi_mulf(s, s);
    r = LOG_L4_F32;
    r = fi_addf(LOG_L3_F32, fi_mulf(z, r));
    r = fi_addf(LOG_L2_F32, fi_mulf(z, r));
    r = fi_addf(LOG_L1_F32, fi_mulf(z, r));
    r = fi_mulf(z, r);
    hfsq = fi_mulf(fi_mulf(0.5f, f), f);
    lm = fi_subf(f, fi_subf(hfsq, fi_mulf(s, fi_addf(hfsq, r))));
    ef = (float)e;
    return fi_addf(fi_mulf(ef, LOG_LN2_HI_F32), fi_addf(lm, fi_mulf(ef, LOG_LN2_LO_F32)));
}

/* Natural log of a normal float64 in (0, 1]. */
FASTINIT_HD double log_f64(double x)
{
    const fi_u64 b = fi_f64_bits(x);
    fi_i64 e = (fi_i64)((b >> 52) & 0x7FFull) - 1023;
    double m = fi_bits_f64((b & 0xFFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
    double f, s, z, r, hfsq, lm, ef;
    if (m > LOG_SQRT2_F64) {
        m = fi_mul(m, 0.5);
        e = e + 1;
    }
    f = fi_sub(m, 1.0);
    s = fi_div(f, fi_add(2.0, f));
    z = fi_mul(s, s);
    r = LOG_L9_F64;
    r = fi_add(LOG_L8_F64, fi_mul(z, r));
    r = fi_add(LOG_L7_F64, fi_mul(z, r));
    r = fi_add(LOG_L6_F64, fi_mul(z, r));
    r = fi_add(LOG_L5_F64, fi_mul(z, r));
    r = fi_add(LOG_L4_F64, fi_mul(z, r));
    r = fi_add(LOG_L3_F64, fi_mul(z, r));
    r = fi_add(LOG_L2_F64, fi_mul(z, r));
    r = fi_add(LOG_L1_F64, fi_mul(z, r));
    r = fi_mul(z, r);
    hfsq = fi_mul(fi_mul(0.5, f), f);
    lm = fi_sub(f, fi_sub(hfsq, fi_mul(s, fi_add(hfsq, r))));
    ef = (double)e;
    return fi_add(fi_mul(ef, LOG_LN2_HI_F64), fi_add(lm, fi_mul(ef, LOG_LN2_LO_F64)));
}

/* ---- sin2pi / cos2pi (contract 4.2) ------------------------------------------ */
/* PIO2 rounded to T, then scaled exactly by 2^-(B-2). S_n = (-1)^n/(2n+1)!,
 * C_n = (-1)^n/(2n)!, each the double quotient rounded to T, as
 * kernels/cpu/philox.py computes them. */
#define PIO2_F32 1.5707963267948966f
#define PIO2_F64 1.5707963267948966
#define SC_X_F32 (PIO2_F32 * 2.384185791015625e-07f)          /* * 2^-22, exact */
#define SC_X_F64 (PIO2_F64 * 4.44089209850062616169452667236328125e-16) /* * 2^-51 */
#define SIN_S1_F32 ((float)(-1.0 / 6.0))
#define SIN_S2_F32 ((float)(1.0 / 120.0))
#define SIN_S3_F32 ((float)(-1.0 / 5040.0))
#define SIN_S4_F32 ((float)(1.0 / 362880.0))
#define COS_C2_F32 ((float)(1.0 / 24.0))
#define COS_C3_F32 ((float)(-1.0 / 720.0))
#define COS_C4_F32 ((float)(1.0 / 40320.0))
#define COS_C5_F32 ((float)(-1.0 / 3628800.0))
#define SIN_S1_F64 (-1.0 / 6.0)
#define SIN_S2_F64 (1.0 / 120.0)
#define SIN_S3_F64 (-1.0 / 5040.0)
#define SIN_S4_F64 (1.0 / 362880.0)
#define SIN_S5_F64 (-1.0 / 39916800.0)
#define SIN_S6_F64 (1.0 / 6227020800.0)
#define SIN_S7_F64 (-1.0 / 1307674368000.0)
#define SIN_S8_F64 (1.0 / 355687428096000.0)
#define COS_C2_F64 (1.0 / 24.0)
#define COS_C3_F64 (-1.0 / 720.0)
#define COS_C4_F64 (1.0 / 40320.0)
#define COS_C5_F64 (-1.0 / 3628800.0)
#define COS_C6_F64 (1.0 / 479001600.0)
#define COS_C7_F64 (-1.0 / 87178291200.0)
#define COS_C8_F64 (1.0 / 20922789888000.0)
#define COS_C9_F64 (-1.0 / 6402373705728000.0)

typedef struct {
    float c, s;
} cossin_f32;

typedef struct {
    double c, s;
} cossin_f64;

/* (cos, sin) of x + q pi/2 from C = cos x, S = sin x: by q mod 4,
 * (C, S), (-S, C), (-C, -S), (S, -C). */
FASTINIT_HD cossin_f32 quadrant_f32(float c, float s, fi_i64 q)
{
    const fi_i64 q3 = q & 3;
    cossin_f32 r;
    r.c = (q & 1) ? s : c;
    r.s = (q & 1) ? c : s;
    if (q3 == 1 || q3 == 2) r.c = -r.c;
    if (q3 >= 2) r.s = -r.s;
    return r;
}

FASTINIT_HD cossin_f64 quadrant_f64(double c, double s, fi_i64 q)
{
    const fi_i64 q3 = q & 3;
    cossin_f64 r;
    r.c = (q & 1) ? s : c;
    r.s = (q & 1) ? c : s;
    if (q3 == 1 || q3 == 2) r.c = -r.c;
    if (q3 >= 2) r.s = -r.s;
    return r;
}

/* cos and sin of 2 pi k 2^-24, k in [0, 2^24): the quarter turn is taken off
 * the integer k, so |x| <= pi/4 exactly. */
FASTINIT_HD cossin_f32 cossin2pi_f32(fi_i32 k)
{
    const fi_i64 q = ((fi_i64)k + (1 << 21)) >> 22;
    const fi_i32 j = (fi_i32)((fi_i64)k - (q << 22));
    const float x = fi_mulf((float)j, SC_X_F32);
    const float z = fi_mulf(x, x);
    float ps, pc, s, c;
    ps = SIN_S4_F32;
    ps = fi_addf(SIN_S3_F32, fi_mulf(z, ps));
    ps = fi_addf(SIN_S2_F32, fi_mulf(z, ps));
    ps = fi_addf(SIN_S1_F32, fi_mulf(z, ps));
    s = fi_addf(x, fi_mulf(fi_mulf(x, z), ps));
    pc = COS_C5_F32;
    pc = fi_addf(COS_C4_F32, fi_mulf(z, pc));
    pc = fi_addf(COS_C3_F32, fi_mulf(z, pc));
    pc = fi_addf(COS_C2_F32, fi_mulf(z, pc));
    c = fi_addf(fi_subf(1.0f, fi_mulf(0.5f, z)), fi_mulf(fi_mulf(z, z), pc));
    return quadrant_f32(c, s, q);
}

/* cos and sin of 2 pi k 2^-53, k in [0, 2^53). */
FASTINIT_HD cossin_f64 cossin2pi_f64(fi_i64 k)
{
    const fi_i64 q = (k + ((fi_i64)1 << 50)) >> 51;
    const fi_i64 j = k - (q << 51);
    const double x = fi_mul((double)j, SC_X_F64);
    const double z = fi_mul(x, x);
    double ps, pc, s, c;
    ps = SIN_S8_F64;
    ps = fi_add(SIN_S7_F64, fi_mul(z, ps));
    ps = fi_add(SIN_S6_F64, fi_mul(z, ps));
    ps = fi_add(SIN_S5_F64, fi_mul(z, ps));
    ps = fi_add(SIN_S4_F64, fi_mul(z, ps));
    ps = fi_add(SIN_S3_F64, fi_mul(z, ps));
    ps = fi_add(SIN_S2_F64, fi_mul(z, ps));
    ps = fi_add(SIN_S1_F64, fi_mul(z, ps));
    s = fi_add(x, fi_mul(fi_mul(x, z), ps));
    pc = COS_C9_F64;
    pc = fi_add(COS_C8_F64, fi_mul(z, pc));
    pc = fi_add(COS_C7_F64, fi_mul(z, pc));
    pc = fi_add(COS_C6_F64, fi_mul(z, pc));
    pc = fi_add(COS_C5_F64, fi_mul(z, pc));
    pc = fi_add(COS_C4_F64, fi_mul(z, pc));
    pc = fi_add(COS_C3_F64, fi_mul(z, pc));
    pc = fi_add(COS_C2_F64, fi_mul(z, pc));
    c = fi_add(fi_sub(1.0, fi_mul(0.5, z)), fi_mul(fi_mul(z, z), pc));
    return quadrant_f64(c, s, q);
}

/* ---- erfinv (contract 4.3; Giles 2011, published coefficients) --------------- */
/* Horner order, highest degree first: p = A0; p = A_i + p * t. */
#define ERFINV_A0_F32 2.81022636e-08f
#define ERFINV_A1_F32 3.43273939e-07f
#define ERFINV_A2_F32 -3.5233877e-06f
#define ERFINV_A3_F32 -4.39150654e-06f
#define ERFINV_A4_F32 0.00021858087f
#define ERFINV_A5_F32 -0.00125372503f
#define ERFINV_A6_F32 -0.00417768164f
#define ERFINV_A7_F32 0.246640727f
#define ERFINV_A8_F32 1.50140941f
#define ERFINV_B0_F32 -0.000200214257f
#define ERFINV_B1_F32 0.000100950558f
#define ERFINV_B2_F32 0.00134934322f
#define ERFINV_B3_F32 -0.00367342844f
#define ERFINV_B4_F32 0.00573950773f
#define ERFINV_B5_F32 -0.0076224613f
#define ERFINV_B6_F32 0.00943887047f
#define ERFINV_B7_F32 1.00167406f
#define ERFINV_B8_F32 2.83297682f
#define ERFINV_SPLIT_F32 5.0f
#define ERFINV_SHIFT_A_F32 2.5f
#define ERFINV_SHIFT_B_F32 3.0f

#define ERFINV_A0_F64 -3.6444120640178196996e-21
#define ERFINV_A1_F64 -1.685059138182016589e-19
#define ERFINV_A2_F64 1.2858480715256400167e-18
#define ERFINV_A3_F64 1.115787767802518096e-17
#define ERFINV_A4_F64 -1.333171662854620906e-16
#define ERFINV_A5_F64 2.0972767875968561637e-17
#define ERFINV_A6_F64 6.6376381343583238325e-15
#define ERFINV_A7_F64 -4.0545662729752068639e-14
#define ERFINV_A8_F64 -8.1519341976054721522e-14
#define ERFINV_A9_F64 2.6335093153082322977e-12
#define ERFINV_A10_F64 -1.2975133253453532498e-11
#define ERFINV_A11_F64 -5.4154120542946279317e-11
#define ERFINV_A12_F64 1.051212273321532285e-09
#define ERFINV_A13_F64 -4.1126339803469836976e-09
#define ERFINV_A14_F64 -2.9070369957882005086e-08
#define ERFINV_A15_F64 4.2347877827932403518e-07
#define ERFINV_A16_F64 -1.3654692000834678645e-06
#define ERFINV_A17_F64 -1.3882523362786468719e-05
#define ERFINV_A18_F64 0.0001867342080340571352
#define ERFINV_A19_F64 -0.00074070253416626697512
#define ERFINV_A20_F64 -0.0060336708714301490533
#define ERFINV_A21_F64 0.24015818242558961693
#define ERFINV_A22_F64 1.6536545626831027356
#define ERFINV_B0_F64 2.2137376921775787049e-09
#define ERFINV_B1_F64 9.0756561938885390979e-08
#define ERFINV_B2_F64 -2.7517406297064545428e-07
#define ERFINV_B3_F64 1.8239629214389227755e-08
#define ERFINV_B4_F64 1.5027403968909827627e-06
#define ERFINV_B5_F64 -4.013867526981545969e-06
#define ERFINV_B6_F64 2.9234449089955446044e-06
#define ERFINV_B7_F64 1.2475304481671778723e-05
#define ERFINV_B8_F64 -4.7318229009055733981e-05
#define ERFINV_B9_F64 6.8284851459573175448e-05
#define ERFINV_B10_F64 2.4031110387097893999e-05
#define ERFINV_B11_F64 -0.0003550375203628474796
#define ERFINV_B12_F64 0.00095328937973738049703
#define ERFINV_B13_F64 -0.0016882755560235047313
#define ERFINV_B14_F64 0.0024914420961078508066
#define ERFINV_B15_F64 -0.0037512085075692412107
#define ERFINV_B16_F64 0.005370914553590063617
#define ERFINV_B17_F64 1.0052589676941592334
#define ERFINV_B18_F64 3.0838856104922207635
#define ERFINV_C0_F64 -2.7109920616438573243e-11
#define ERFINV_C1_F64 -2.5556418169965252055e-10
#define ERFINV_C2_F64 1.5076572693500548083e-09
#define ERFINV_C3_F64 -3.7894654401267369937e-09
#define ERFINV_C4_F64 7.6157012080783393804e-09
#define ERFINV_C5_F64 -1.4960026627149240478e-08
#define ERFINV_C6_F64 2.9147953450901080826e-08
#define ERFINV_C7_F64 -6.7711997758452339498e-08
#define ERFINV_C8_F64 2.2900482228026654717e-07
#define ERFINV_C9_F64 -9.9298272942317002539e-07
#define ERFINV_C10_F64 4.5260625972231537039e-06
#define ERFINV_C11_F64 -1.9681778105531670567e-05
#define ERFINV_C12_F64 7.5995277030017761139e-05
#define ERFINV_C13_F64 -0.00021503011930044477347
#define ERFINV_C14_F64 -0.00013871931833623122026
#define ERFINV_C15_F64 1.0103004648645343977
#define ERFINV_C16_F64 4.8499064014085844221
#define ERFINV_SPLIT1_F64 6.25
#define ERFINV_SPLIT2_F64 16.0
#define ERFINV_SHIFT_A_F64 3.125
#define ERFINV_SHIFT_B_F64 3.25
#define ERFINV_SHIFT_C_F64 5.0

/* erfinv(x) given w = -log((1 - x)(1 + x)) (contract 4.3). */
FASTINIT_HD float erfinv_xw_f32(float x, float w)
{
    float p, t;
    if (w < ERFINV_SPLIT_F32) {
        t = fi_subf(w, ERFINV_SHIFT_A_F32);
        p = ERFINV_A0_F32;
        p = fi_addf(ERFINV_A1_F32, fi_mulf(p, t));
        p = fi_addf(ERFINV_A2_F32, fi_mulf(p, t));
        p = fi_addf(ERFINV_A3_F32, fi_mulf(p, t));
        p = fi_addf(ERFINV_A4_F32, fi_mulf(p, t));
        p = fi_addf(ERFINV_A5_F32, fi_mulf(p, t));
        p = fi_addf(ERFINV_A6_F32, fi_mulf(p, t));
        p = fi_addf(ERFINV_A7_F32, fi_mulf(p, t));
        p = fi_addf(ERFINV_A8_F32, fi_mulf(p, t));
    } else {
        t = fi_subf(fi_sqrtf(w), ERFINV_SHIFT_B_F32);
        p = ERFINV_B0_F32;
        p = fi_addf(ERFINV_B1_F32, fi_mulf(p, t));
        p = fi_addf(ERFINV_B2_F32, fi_mulf(p, t));
        p = fi_addf(ERFINV_B3_F32, fi_mulf(p, t));
        p = fi_addf(ERFINV_B4_F32, fi_mulf(p, t));
        p = fi_addf(ERFINV_B5_F32, fi_mulf(p, t));
        p = fi_addf(ERFINV_B6_F32, fi_mulf(p, t));
        p = fi_addf(ERFINV_B7_F32, fi_mulf(p, t));
        p = fi_addf(ERFINV_B8_F32, fi_mulf(p, t));
    }
    return fi_mulf(p, x);
}

FASTINIT_HD double erfinv_xw_f64(double x, double w)
{
    double p, t;
    if (w < ERFINV_SPLIT1_F64) {
        t = fi_sub(w, ERFINV_SHIFT_A_F64);
        p = ERFINV_A0_F64;
        p = fi_add(ERFINV_A1_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A2_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A3_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A4_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A5_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A6_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A7_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A8_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A9_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A10_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A11_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A12_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A13_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A14_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A15_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A16_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A17_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A18_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A19_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A20_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A21_F64, fi_mul(p, t));
        p = fi_add(ERFINV_A22_F64, fi_mul(p, t));
    } else if (w < ERFINV_SPLIT2_F64) {
        t = fi_sub(fi_sqrt(w), ERFINV_SHIFT_B_F64);
        p = ERFINV_B0_F64;
        p = fi_add(ERFINV_B1_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B2_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B3_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B4_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B5_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B6_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B7_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B8_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B9_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B10_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B11_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B12_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B13_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B14_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B15_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B16_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B17_F64, fi_mul(p, t));
        p = fi_add(ERFINV_B18_F64, fi_mul(p, t));
    } else {
        t = fi_sub(fi_sqrt(w), ERFINV_SHIFT_C_F64);
        p = ERFINV_C0_F64;
        p = fi_add(ERFINV_C1_F64, fi_mul(p, t));
        p = fi_add(ERFINV_C2_F64, fi_mul(p, t));
        p = fi_add(ERFINV_C3_F64, fi_mul(p, t));
        p = fi_add(ERFINV_C4_F64, fi_mul(p, t));
        p = fi_add(ERFINV_C5_F64, fi_mul(p, t));
        p = fi_add(ERFINV_C6_F64, fi_mul(p, t));
        p = fi_add(ERFINV_C7_F64, fi_mul(p, t));
        p = fi_add(ERFINV_C8_F64, fi_mul(p, t));
        p = fi_add(ERFINV_C9_F64, fi_mul(p, t));
        p = fi_add(ERFINV_C10_F64, fi_mul(p, t));
        p = fi_add(ERFINV_C11_F64, fi_mul(p, t));
        p = fi_add(ERFINV_C12_F64, fi_mul(p, t));
        p = fi_add(ERFINV_C13_F64, fi_mul(p, t));
        p = fi_add(ERFINV_C14_F64, fi_mul(p, t));
        p = fi_add(ERFINV_C15_F64, fi_mul(p, t));
        p = fi_add(ERFINV_C16_F64, fi_mul(p, t));
    }
    return fi_mul(p, x);
}

/* erfinv(x) given t = (1 - x)(1 + x), which the caller may know better
 * (contract 4.3, 3.6). */
FASTINIT_HD float erfinv_xt_f32(float x, float tt)
{
    return erfinv_xw_f32(x, -log_f32(tt));
}

FASTINIT_HD double erfinv_xt_f64(double x, double tt)
{
    return erfinv_xw_f64(x, -log_f64(tt));
}

/* ---- the far tail (contract 4.4) ---------------------------------------------- */
/* x > 0 with -log(2 erfc(x)) = w, for w beyond Giles' range (y = erfc(x) below
 * 2^-24, 2^-53). u = x^2; S(x) = x sqrt(pi) exp(u) erfc(x) = 2u / D with D the
 * even continued fraction D = v + 1 - 1*2 / (v + 5 - 3*4 / (v + 9 - ...)),
 * v = 2u, of depth N = 3 (float32) or 6 (float64); then u - w = log(h) / 2 with
 * h = 16 u / (pi D^2). First guess from the asymptotic expansion, then Newton
 * steps (1 for float32, 2 for float64) on g(u) = u - w - log(h) / 2 with
 * g'(u) ~ 1 + 1/(2u) - 1/(2u^2) + 5/(4u^3). */
#define FAR_C0_F32 1.2732395447351627f     /* 4 / pi */
#define FAR_K_F32 5.0929581789406507f      /* 16 / pi */
#define FAR_D3_F32 1.25f
#define FAR_C0_F64 1.2732395447351627
#define FAR_K_F64 5.0929581789406507
#define FAR_D3_F64 1.25

FASTINIT_HD float far_step_f32(float u, float w)
{
    const float v = fi_addf(u, u);
    float d, h, g, iu;
    d = fi_addf(v, 13.0f);
    d = fi_subf(fi_addf(v, 9.0f), fi_divf(30.0f, d));
    d = fi_subf(fi_addf(v, 5.0f), fi_divf(12.0f, d));
    d = fi_subf(fi_addf(v, 1.0f), fi_divf(2.0f, d));
    h = fi_divf(fi_mulf(FAR_K_F32, fi_divf(u, d)), d);
    g = fi_subf(fi_subf(u, w), fi_mulf(0.5f, log_f32(h)));
    iu = fi_divf(1.0f, u);
    return fi_subf(u, fi_divf(g, fi_addf(1.0f, fi_mulf(iu, fi_subf(0.5f, fi_mulf(iu,
                   fi_subf(0.5f, fi_mulf(FAR_D3_F32, iu))))))));
}

FASTINIT_HD float erfcinv_far_f32(float w)
{
    const float a = fi_mulf(0.5f, log_f32(fi_divf(FAR_C0_F32, w)));
    float u = fi_subf(fi_addf(w, a), fi_divf(fi_addf(a, 1.0f), fi_addf(w, w)));
    u = far_step_f32(u, w);
    return fi_sqrtf(u);
}

FASTINIT_HD double far_step_f64(double u, double w)
{
    const double v = fi_add(u, u);
    double d, h, g, iu;
    d = fi_add(v, 25.0);
    d = fi_sub(fi_add(v, 21.0), fi_div(132.0, d));
    d = fi_sub(fi_add(v, 17.0), fi_div(90.0, d));
    d = fi_sub(fi_add(v, 13.0), fi_div(56.0, d));
    d = fi_sub(fi_add(v, 9.0), fi_div(30.0, d));
    d = fi_sub(fi_add(v, 5.0), fi_div(12.0, d));
    d = fi_sub(fi_add(v, 1.0), fi_div(2.0, d));
    h = fi_div(fi_mul(FAR_K_F64, fi_div(u, d)), d);
    g = fi_sub(fi_sub(u, w), fi_mul(0.5, log_f64(h)));
    iu = fi_div(1.0, u);
    return fi_sub(u, fi_div(g, fi_add(1.0, fi_mul(iu, fi_sub(0.5, fi_mul(iu,
                  fi_sub(0.5, fi_mul(FAR_D3_F64, iu))))))));
}

FASTINIT_HD double erfcinv_far_f64(double w)
{
    const double a = fi_mul(0.5, log_f64(fi_div(FAR_C0_F64, w)));
    double u = fi_sub(fi_add(w, a), fi_div(fi_add(a, 1.0), fi_add(w, w)));
    u = far_step_f64(u, w);
    u = far_step_f64(u, w);
    return fi_sqrt(u);
}

FASTINIT_HD float erfinv_f32(float x)
{
    return erfinv_xt_f32(x, fi_mulf(fi_subf(1.0f, x), fi_addf(1.0f, x)));
}

FASTINIT_HD double erfinv_f64(double x)
{
    return erfinv_xt_f64(x, fi_mul(fi_sub(1.0, x), fi_add(1.0, x)));
}

/* ---- the distributions, one element or pair at a time ------------------------ */
/* Parameters (lo, d, floor, top, thr), (mean, std) and (e0, de, mean, ss, a, b,
 * tail, sign) are the host's (fastinit/_contract.py), already rounded into T. */

/* uniform(low, high) and masked_uniform (contract 3.3, 3.4): clamp to
 * [floor, top], then 0 where |v| < thr (thr = 0 for plain uniform). */
FASTINIT_HD float masked_uniform_f32(fi_u32 w, float lo, float d, float floor_, float top,
                                     float thr)
{
    float v = fi_addf(lo, fi_mulf(d, uniform_from_bits_f32(w)));
    v = (v < floor_) ? floor_ : v;
    v = (v > top) ? top : v;
    return (fi_absf(v) < thr) ? 0.0f : v;
}

FASTINIT_HD float uniform_f32(fi_u32 w, float lo, float d, float floor_, float top)
{
    return masked_uniform_f32(w, lo, d, floor_, top, 0.0f);
}

FASTINIT_HD double masked_uniform_f64(fi_u32 lo_word, fi_u32 hi_word, double lo, double d,
                                      double floor_, double top, double thr)
{
    double v = fi_add(lo, fi_mul(d, uniform_from_bits_f64(lo_word, hi_word)));
    v = (v < floor_) ? floor_ : v;
    v = (v > top) ? top : v;
    return (fi_abs(v) < thr) ? 0.0 : v;
}

FASTINIT_HD double uniform_f64(fi_u32 lo_word, fi_u32 hi_word, double lo, double d,
                               double floor_, double top)
{
    return masked_uniform_f64(lo_word, hi_word, lo, d, floor_, top, 0.0);
}

/* normal(mean, std) (contract 3.5): Box-Muller on the pair (2m, 2m + 1),
 * u1 = U1 of the first word(s), u2 = U of the second. */
typedef struct {
    float x0, x1;
} normal_pair_f32;

typedef struct {
    double x0, x1;
} normal_pair_f64;

FASTINIT_HD normal_pair_f32 box_muller_f32(fi_u32 wa, fi_u32 wb, float mean, float std_)
{
    const float r = fi_sqrtf(fi_mulf(-2.0f, log_f32(uniform1_from_bits_f32(wa))));
    const cossin_f32 cs = cossin2pi_f32(k24(wb));
    normal_pair_f32 out;
    out.x0 = fi_addf(mean, fi_mulf(std_, fi_mulf(r, cs.c)));
    out.x1 = fi_addf(mean, fi_mulf(std_, fi_mulf(r, cs.s)));
    return out;
}

FASTINIT_HD normal_pair_f64 box_muller_f64(fi_u32 w0, fi_u32 w1, fi_u32 w2, fi_u32 w3,
                                           double mean, double std_)
{
    const double r = fi_sqrt(fi_mul(-2.0, log_f64(uniform1_from_bits_f64(w0, w1))));
    const cossin_f64 cs = cossin2pi_f64(k53(w2, w3));
    normal_pair_f64 out;
    out.x0 = fi_add(mean, fi_mul(std_, fi_mul(r, cs.c)));
    out.x1 = fi_add(mean, fi_mul(std_, fi_mul(r, cs.s)));
    return out;
}

/* truncated_normal(mean, std, a, b) (contract 3.6). Parameters (e0, de, mean,
 * ss, a, b, tail, sign): y = e0 + de * Um; in the central form (tail = 0)
 * x = y, clamped inside (-1, 1); in the tail form (tail = 1) y = 1 - |x| is
 * drawn directly (erfc space), clamped to [TINY, 1], and inverted by Giles'
 * polynomial, or by erfcinv_far where y < 2^-B (past the polynomial's range);
 * in the far-tail form (tail = 2; (e0, de) hold (q0, w1)) q = q0 + (1 - q0) Um,
 * clamped to [TINY, 1], is y / e1 and w = -log(2y) = w1 - log(q); then
 * v = mean + ss * (z * sign), clamped to [a, b] = [up(a), down(b)]. */
#define BELOW_ONE_F32 0.999999940395355224609375f     /* largest float below 1 */
#define TINY_F32 1.17549435082228750797e-38f          /* smallest normal float */
#define BELOW_ONE_F64 0.99999999999999988897769753748434595763683319091796875
#define TINY_F64 2.22507385850720138309e-308

FASTINIT_HD float truncated_normal_f32(fi_u32 w, float e0, float de, float mean, float ss,
                                       float a, float b, float tail, float sign)
{
    float y, z, v, lw;
    if (tail > 1.0f) {
        y = fi_addf(e0, fi_mulf(fi_subf(1.0f, e0), uniform_mid_from_bits_f32(w)));
        y = (y < TINY_F32) ? TINY_F32 : y;
        y = (y > 1.0f) ? 1.0f : y;
        z = erfcinv_far_f32(fi_subf(de, log_f32(y)));
    } else if (tail > 0.0f) {
        y = fi_addf(e0, fi_mulf(de, uniform_mid_from_bits_f32(w)));
        y = (y < TINY_F32) ? TINY_F32 : y;
        y = (y > 1.0f) ? 1.0f : y;
        lw = -log_f32(fi_mulf(y, fi_subf(2.0f, y)));
        z = (y < TWO_M24_F32) ? erfcinv_far_f32(lw) : erfinv_xw_f32(fi_subf(1.0f, y), lw);
    } else {
        y = fi_addf(e0, fi_mulf(de, uniform_mid_from_bits_f32(w)));
        y = (y < -BELOW_ONE_F32) ? -BELOW_ONE_F32 : y;
        y = (y > BELOW_ONE_F32) ? BELOW_ONE_F32 : y;
        z = erfinv_xt_f32(y, fi_mulf(fi_subf(1.0f, y), fi_addf(1.0f, y)));
    }
    v = fi_addf(mean, fi_mulf(ss, fi_mulf(z, sign)));
    v = (v < a) ? a : v;
    return (v > b) ? b : v;
}

FASTINIT_HD double truncated_normal_f64(fi_u32 lo_word, fi_u32 hi_word, double e0, double de,
                                        double mean, double ss, double a, double b,
                                        double tail, double sign)
{
    double y, z, v, lw;
    if (tail > 1.0) {
        y = fi_add(e0, fi_mul(fi_sub(1.0, e0), uniform_mid_from_bits_f64(lo_word, hi_word)));
        y = (y < TINY_F64) ? TINY_F64 : y;
        y = (y > 1.0) ? 1.0 : y;
        z = erfcinv_far_f64(fi_sub(de, log_f64(y)));
    } else if (tail > 0.0) {
        y = fi_add(e0, fi_mul(de, uniform_mid_from_bits_f64(lo_word, hi_word)));
        y = (y < TINY_F64) ? TINY_F64 : y;
        y = (y > 1.0) ? 1.0 : y;
        lw = -log_f64(fi_mul(y, fi_sub(2.0, y)));
        z = (y < TWO_M53_F64) ? erfcinv_far_f64(lw) : erfinv_xw_f64(fi_sub(1.0, y), lw);
    } else {
        y = fi_add(e0, fi_mul(de, uniform_mid_from_bits_f64(lo_word, hi_word)));
        y = (y < -BELOW_ONE_F64) ? -BELOW_ONE_F64 : y;
        y = (y > BELOW_ONE_F64) ? BELOW_ONE_F64 : y;
        z = erfinv_xt_f64(y, fi_mul(fi_sub(1.0, y), fi_add(1.0, y)));
    }
    v = fi_add(mean, fi_mul(ss, fi_mul(z, sign)));
    v = (v < a) ? a : v;
    return (v > b) ? b : v;
}

/* ---- float32 to half precision (contract 5), round to nearest even ----------- */
/* No NaN input (the contract produces none); 32-bit arithmetic cannot
 * overflow below the NaN bit patterns. */
FASTINIT_HD fi_u16 bf16_bits(float v)
{
    const fi_u32 b = fi_f32_bits(v);
    return (fi_u16)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

/* IEEE binary16, subnormals included, past 65520 to infinity. */
FASTINIT_HD fi_u16 f16_bits(float v)
{
    const fi_u32 b = fi_f32_bits(v);
    const fi_u32 sign = (b >> 16) & 0x8000u;
    const fi_u32 a = b & 0x7FFFFFFFu;
    fi_u32 h;
    if (a >= 0x47800000u) {          /* >= 65536: infinity */
        h = 0x7C00u;
    } else if (a < 0x38800000u) {    /* below 2^-14: subnormal or zero; adding 0.5
                                        (bits 0x3F000000) rounds at 2^-24 */
        h = fi_f32_bits(fi_addf(fi_bits_f32(a), 0.5f)) - 0x3F000000u;
    } else {
        h = (a - 0x38000000u + 0xFFFu + ((a >> 13) & 1u)) >> 13;
    }
    return (fi_u16)(h | sign);
}

#endif /* FASTINIT_PHILOX_CUH */
