/*
 * host_fill.c: the CUDA header's transforms on the host, element by element,
 * for the tests (tests/test_cuda_host.py builds it with the system C compiler
 * and loads it with ctypes).
 *
 * Unlike the kernels (fill.cu), which walk Philox blocks, this file computes
 * each element from its global index alone, as docs/stream.md section 3
 * states it: an independent check of the kernels' block/lane mapping.
 *
 * Build: cc -std=c99 -O2 -ffp-contract=off -fno-fast-math -shared -fPIC
 *        -I kernels/cuda tests/c/host_fill.c -o host_fill.so -lm
 */
#include <stdint.h>

#include "fastinit_philox.cuh"

/* kind: 0 uniform (incl. masked), 1 normal, 2 truncated normal (every form of
 * contract 3.6, the far tail included: truncated_normal_f32/f64 pick it by the
 * parameters);
 * fmt: 0 float32, 1 bfloat16, 2 float16, 3 float64 (kernels/_abi.py). */

/* The float32 compute value of global element i. */
static float element_f32(int kind, uint64_t i, uint32_t k0, uint32_t k1, uint32_t s0,
                         uint32_t s1, const float* p)
{
    const philox4x32_block x = philox_stream_block(i >> 2, k0, k1, s0, s1);
    const uint32_t w[4] = {x.x0, x.x1, x.x2, x.x3};
    const unsigned lane = (unsigned)(i & 3u);
    if (kind == 0) return masked_uniform_f32(w[lane], p[0], p[1], p[2], p[3], p[4]);
    if (kind == 1) {
        /* the pair (2m, 2m + 1) uses words 2m and 2m + 1 */
        const unsigned first = lane & 2u;
        const normal_pair_f32 pr = box_muller_f32(w[first], w[first + 1], p[0], p[1]);
        return (lane & 1u) ? pr.x1 : pr.x0;
    }
    return truncated_normal_f32(w[lane], p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]);
}

/* The float64 value of global element i: words 2i and 2i + 1. */
static double element_f64(int kind, uint64_t i, uint32_t k0, uint32_t k1, uint32_t s0,
                          uint32_t s1, const double* p)
{
    const philox4x32_block x = philox_stream_block(i >> 1, k0, k1, s0, s1);
    const uint32_t w[4] = {x.x0, x.x1, x.x2, x.x3};
    const unsigned lane = (unsigned)(i & 1u);
    if (kind == 0)
        return masked_uniform_f64(w[2 * lane], w[2 * lane + 1], p[0], p[1], p[2], p[3], p[4]);
    if (kind == 1) {
        /* the pair (2m, 2m + 1) uses words 4m..4m+1 and 4m+2..4m+3: one block */
        const normal_pair_f64 pr = box_muller_f64(w[0], w[1], w[2], w[3], p[0], p[1]);
        return lane ? pr.x1 : pr.x0;
    }
    return truncated_normal_f64(w[2 * lane], w[2 * lane + 1], p[0], p[1], p[2], p[3], p[4],
                                p[5], p[6], p[7]);
}

/* Fill out[0..n) with elements offset .. offset + n - 1. Returns 0, or -1 for
 * an unknown kind or fmt. */
int fastinit_host_fill(int kind, int fmt, void* out, uint64_t n, uint64_t offset,
                       uint32_t k0, uint32_t k1, uint32_t s0, uint32_t s1, const void* params)
{
    uint64_t e;
    if (kind < 0 || kind > 2 || fmt < 0 || fmt > 3) return -1;
    if (fmt == 3) {
        double* o = (double*)out;
        for (e = 0; e < n; ++e)
            o[e] = element_f64(kind, offset + e, k0, k1, s0, s1, (const double*)params);
    } else if (fmt == 0) {
        float* o = (float*)out;
        for (e = 0; e < n; ++e)
            o[e] = element_f32(kind, offset + e, k0, k1, s0, s1, (const float*)params);
    } else {
        uint16_t* o = (uint16_t*)out;
        for (e = 0; e < n; ++e) {
            const float v = element_f32(kind, offset + e, k0, k1, s0, s1, (const float*)params);
            o[e] = (fmt == 1) ? bf16_bits(v) : f16_bits(v);
        }
    }
    return 0;
}

/* One Philox4x32-10 block: out[0..3] for counter c[0..3] and key (k0, k1). */
void fastinit_host_philox(const uint32_t c[4], uint32_t k0, uint32_t k1, uint32_t out[4])
{
    const philox4x32_block x = philox4x32(c[0], c[1], c[2], c[3], k0, k1);
    out[0] = x.x0;
    out[1] = x.x1;
    out[2] = x.x2;
    out[3] = x.x3;
}

/* Half-precision bits of n float32 values (contract 5). */
void fastinit_host_half_bits(const float* v, uint64_t n, int bf16, uint16_t* out)
{
    uint64_t e;
    for (e = 0; e < n; ++e) out[e] = bf16 ? bf16_bits(v[e]) : f16_bits(v[e]);
}

/* The header's constants, in the order of tests/test_cuda_host.py's
 * CONSTANTS_F32 / CONSTANTS_F64 lists; returns how many were written. */
int fastinit_host_constants_f32(float* out)
{
    const float c[] = {
        TWO_M24_F32, LOG_SQRT2_F32, LOG_LN2_HI_F32, LOG_LN2_LO_F32,
        LOG_L1_F32, LOG_L2_F32, LOG_L3_F32, LOG_L4_F32,
        PIO2_F32, SC_X_F32,
        SIN_S1_F32, SIN_S2_F32, SIN_S3_F32, SIN_S4_F32,
        COS_C2_F32, COS_C3_F32, COS_C4_F32, COS_C5_F32,
        ERFINV_A0_F32, ERFINV_A1_F32, ERFINV_A2_F32, ERFINV_A3_F32, ERFINV_A4_F32,
        ERFINV_A5_F32, ERFINV_A6_F32, ERFINV_A7_F32, ERFINV_A8_F32,
        ERFINV_B0_F32, ERFINV_B1_F32, ERFINV_B2_F32, ERFINV_B3_F32, ERFINV_B4_F32,
        ERFINV_B5_F32, ERFINV_B6_F32, ERFINV_B7_F32, ERFINV_B8_F32,
        ERFINV_SPLIT_F32, ERFINV_SHIFT_A_F32, ERFINV_SHIFT_B_F32,
        BELOW_ONE_F32, TINY_F32,
        FAR_C0_F32, FAR_K_F32, FAR_D3_F32,
    };
    int i;
    for (i = 0; i < (int)(sizeof c / sizeof c[0]); ++i) out[i] = c[i];
    return i;
}

int fastinit_host_constants_f64(double* out)
{
    const double c[] = {
        TWO_M53_F64, LOG_SQRT2_F64, LOG_LN2_HI_F64, LOG_LN2_LO_F64,
        LOG_L1_F64, LOG_L2_F64, LOG_L3_F64, LOG_L4_F64, LOG_L5_F64, LOG_L6_F64,
        LOG_L7_F64, LOG_L8_F64, LOG_L9_F64,
        PIO2_F64, SC_X_F64,
        SIN_S1_F64, SIN_S2_F64, SIN_S3_F64, SIN_S4_F64, SIN_S5_F64, SIN_S6_F64,
        SIN_S7_F64, SIN_S8_F64,
        COS_C2_F64, COS_C3_F64, COS_C4_F64, COS_C5_F64, COS_C6_F64, COS_C7_F64,
        COS_C8_F64, COS_C9_F64,
        ERFINV_A0_F64, ERFINV_A1_F64, ERFINV_A2_F64, ERFINV_A3_F64, ERFINV_A4_F64,
        ERFINV_A5_F64, ERFINV_A6_F64, ERFINV_A7_F64, ERFINV_A8_F64, ERFINV_A9_F64,
        ERFINV_A10_F64, ERFINV_A11_F64, ERFINV_A12_F64, ERFINV_A13_F64, ERFINV_A14_F64,
        ERFINV_A15_F64, ERFINV_A16_F64, ERFINV_A17_F64, ERFINV_A18_F64, ERFINV_A19_F64,
        ERFINV_A20_F64, ERFINV_A21_F64, ERFINV_A22_F64,
        ERFINV_B0_F64, ERFINV_B1_F64, ERFINV_B2_F64, ERFINV_B3_F64, ERFINV_B4_F64,
        ERFINV_B5_F64, ERFINV_B6_F64, ERFINV_B7_F64, ERFINV_B8_F64, ERFINV_B9_F64,
        ERFINV_B10_F64, ERFINV_B11_F64, ERFINV_B12_F64, ERFINV_B13_F64, ERFINV_B14_F64,
        ERFINV_B15_F64, ERFINV_B16_F64, ERFINV_B17_F64, ERFINV_B18_F64,
        ERFINV_C0_F64, ERFINV_C1_F64, ERFINV_C2_F64, ERFINV_C3_F64, ERFINV_C4_F64,
        ERFINV_C5_F64, ERFINV_C6_F64, ERFINV_C7_F64, ERFINV_C8_F64, ERFINV_C9_F64,
        ERFINV_C10_F64, ERFINV_C11_F64, ERFINV_C12_F64, ERFINV_C13_F64, ERFINV_C14_F64,
        ERFINV_C15_F64, ERFINV_C16_F64,
        ERFINV_SPLIT1_F64, ERFINV_SPLIT2_F64, ERFINV_SHIFT_A_F64, ERFINV_SHIFT_B_F64,
        ERFINV_SHIFT_C_F64,
        BELOW_ONE_F64, TINY_F64,
        FAR_C0_F64, FAR_K_F64, FAR_D3_F64,
    };
    int i;
    for (i = 0; i < (int)(sizeof c / sizeof c[0]); ++i) out[i] = c[i];
    return i;
}
