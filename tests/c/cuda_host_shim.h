/*
 * cuda_host_shim.h: just enough of CUDA for kernels/cuda/fill.cu to compile
 * as host C++ and run on the CPU, for the tests (tests/c/cuda_host.cpp).
 *
 * - the qualifiers (__global__, __device__, __host__, __forceinline__,
 *   __launch_bounds__) are dropped or made inline;
 * - threadIdx, blockIdx, blockDim and gridDim are globals that the launcher
 *   (fastinit_shim_launch) sets before it runs each (block, thread) of the
 *   grid, one after another;
 * - the __*_rn intrinsics are the plain IEEE operations, and the bit casts
 *   memcpy: the same values as the device's, given -ffp-contract=off, no
 *   -ffast-math and SSE2 arithmetic (checked below);
 * - float4, uint2 and double2 have CUDA's sizes and alignments;
 * - every store of fill.cu goes through FI_STORE, which here checks the
 *   address's alignment for the stored type, counts the store per element
 *   of a watched buffer (so the tests see that each element is written
 *   exactly once and nothing outside it), and refuses to write outside it.
 *
 * __CUDACC__ and __CUDA_ARCH__ are defined, so the header
 * (fastinit_philox.cuh) and fill.cu take their device branches: the
 * intrinsics, the vector stores, the kernels themselves.
 */
#ifndef FASTINIT_CUDA_HOST_SHIM_H
#define FASTINIT_CUDA_HOST_SHIM_H

#if defined(__CUDACC__) || defined(__CUDA_ARCH__)
#error "cuda_host_shim.h is for a host C++ compiler, not a CUDA one"
#endif
#if defined(__FAST_MATH__)
#error "cuda_host_shim.h: -ffast-math breaks the stream contract; compile without it"
#endif
#if defined(__FLT_EVAL_METHOD__) && __FLT_EVAL_METHOD__ != 0
#error "cuda_host_shim.h: needs FLT_EVAL_METHOD 0 (SSE2 arithmetic)"
#endif
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include <math.h>
#include <stdint.h>
#include <string.h>

#define __CUDACC__ 1
#define __CUDA_ARCH__ 900
#define FASTINIT_CUDA_HOST_SHIM 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

/* ---- the built-in variables ------------------------------------------------- */
struct fi_shim_dim3 {
    unsigned int x, y, z;
};
static fi_shim_dim3 threadIdx, blockIdx, blockDim, gridDim;

/* ---- intrinsics: one IEEE operation each, round to nearest even ------------- */
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __dsqrt_rn(double a) { return sqrt(a); }

static inline unsigned int __float_as_uint(float x)
{
    unsigned int b;
    memcpy(&b, &x, sizeof b);
    return b;
}
static inline float __uint_as_float(unsigned int b)
{
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}
static inline long long __double_as_longlong(double x)
{
    long long b;
    memcpy(&b, &x, sizeof b);
    return b;
}
static inline double __longlong_as_double(long long b)
{
    double x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* ---- vector types: CUDA's sizes and alignments ------------------------------- */
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned int x, y;
};
struct alignas(16) double2 {
    double x, y;
};
static_assert(sizeof(float4) == 16 && alignof(float4) == 16, "float4");
static_assert(sizeof(uint2) == 8 && alignof(uint2) == 8, "uint2");
static_assert(sizeof(double2) == 16 && alignof(double2) == 16, "double2");

/* ---- checked stores ----------------------------------------------------------- */
template <class T> struct fi_shim_is_vector { static const bool value = false; };
template <> struct fi_shim_is_vector<float4> { static const bool value = true; };
template <> struct fi_shim_is_vector<uint2> { static const bool value = true; };
template <> struct fi_shim_is_vector<double2> { static const bool value = true; };

struct fi_shim_watch {
    unsigned char* lo;       /* the watched buffer [lo, hi), guards included */
    unsigned char* hi;
    uint64_t elsize;         /* bytes per element */
    unsigned char* counts;   /* stores per element of [lo, hi), saturating at 255 */
};
struct fi_shim_stats {
    uint64_t scalar;         /* stores of one element */
    uint64_t vector;         /* stores of several elements at once */
    uint64_t misaligned;     /* stores to an address not aligned for their type */
    uint64_t wild;           /* stores outside the watched buffer (not written) */
};
static fi_shim_watch fi_shim_watched = {0, 0, 0, 0};
static fi_shim_stats fi_shim_counted = {0, 0, 0, 0};

template <class T>
static inline void fi_shim_store(T* p, const T& v)
{
    unsigned char* a = reinterpret_cast<unsigned char*>(p);
    if (reinterpret_cast<uintptr_t>(p) % alignof(T)) ++fi_shim_counted.misaligned;
    if (fi_shim_watched.lo) {
        if (a < fi_shim_watched.lo || a + sizeof(T) > fi_shim_watched.hi) {
            ++fi_shim_counted.wild;
            return;
        }
        const uint64_t first = (uint64_t)(a - fi_shim_watched.lo) / fi_shim_watched.elsize;
        const uint64_t count = sizeof(T) / fi_shim_watched.elsize;
        for (uint64_t e = first; e < first + (count ? count : 1); ++e)
            if (fi_shim_watched.counts[e] < 255) ++fi_shim_watched.counts[e];
    }
    if (fi_shim_is_vector<T>::value) ++fi_shim_counted.vector; else ++fi_shim_counted.scalar;
    memcpy(p, &v, sizeof(T));
}

#define FI_STORE(p, v) fi_shim_store((p), (v))

#endif /* FASTINIT_CUDA_HOST_SHIM_H */
