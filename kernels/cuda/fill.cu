/*
 * fill.cu: the CUDA fill kernels of fastinit-philox v2 (docs/stream.md).
 *
 * One extern "C" kernel per distribution and output dtype:
 *
 *   fastinit_{uniform,normal,trunc}_{f32,bf16,f16,f64}
 *     (out, n, offset, k0, k1, s0, s1, parameters...)
 *
 * out      the buffer (float*, bfloat16/float16 bits as unsigned short*, double*)
 * n        elements to write, >= 1; element k gets global index offset + k
 * offset   global index of out[0]; offset + n <= 2^64
 * k0, k1   key words: seed mod 2^32, seed >> 32
 * s0, s1   stream words: stream mod 2^32, stream >> 32
 * uniform  lo, d, floor, top, thr           (thr = 0: plain uniform)
 * normal   mean, std
 * trunc    e0, de, mean, ss, a, b, tail, sign   (far tail, tail = 2: q0, w1 in e0, de)
 * The parameters are in the compute type (float, or double for f64), made
 * by fastinit/_contract.py exactly as for the CPU kernels.
 *
 * Each thread takes whole Philox blocks in a grid-stride loop: block j holds
 * elements 4j..4j+3 (32-bit compute) or 2j..2j+1 (float64), so a value never
 * depends on the launch shape or where the fill starts. A block wholly
 * inside the buffer is stored with one vector store (float4, 4 halves as a
 * uint2, double2) when the destination is aligned for it; blocks at the
 * edges and misaligned buffers are stored element by element.
 *
 * fastinit/cuda.py compiles this file with NVRTC (the header inlined; no
 * -ftz=true, no fast math) and launches FILL_THREADS threads per CUDA
 * block. Compiled as plain C++ (no CUDA compiler), the same loop bodies run
 * on the host through
 * fastinit_emulate_fill, one emulated thread after another: the CPU tests
 * check the kernels' index and store logic that way.
 */
#include "fastinit_philox.cuh"

#define FILL_THREADS 256

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define FI_DEVICE __device__ __forceinline__
#define FI_COUNT_VECTOR_STORE() ((void)0)
#else
#include <string.h>
#define FI_DEVICE inline
static fi_u64 fi_emulated_vector_stores = 0;
#define FI_COUNT_VECTOR_STORE() (++fi_emulated_vector_stores)
#endif

/* ---- values of one Philox block ----------------------------------------------- */
struct Uniform32 {
    float lo, d, fl, top, thr;
    FI_DEVICE void operator()(const philox4x32_block& x, float v[4]) const
    {
        v[0] = masked_uniform_f32(x.x0, lo, d, fl, top, thr);
        v[1] = masked_uniform_f32(x.x1, lo, d, fl, top, thr);
        v[2] = masked_uniform_f32(x.x2, lo, d, fl, top, thr);
        v[3] = masked_uniform_f32(x.x3, lo, d, fl, top, thr);
    }
};

struct Normal32 {
    float mean, sd;
    FI_DEVICE void operator()(const philox4x32_block& x, float v[4]) const
    {
        const normal_pair_f32 p = box_muller_f32(x.x0, x.x1, mean, sd);
        const normal_pair_f32 q = box_muller_f32(x.x2, x.x3, mean, sd);
        v[0] = p.x0;
        v[1] = p.x1;
        v[2] = q.x0;
        v[3] = q.x1;
    }
};

struct Trunc32 {
    float e0, de, mean, ss, a, b, tail, sign;
    FI_DEVICE void operator()(const philox4x32_block& x, float v[4]) const
    {
        v[0] = truncated_normal_f32(x.x0, e0, de, mean, ss, a, b, tail, sign);
        v[1] = truncated_normal_f32(x.x1, e0, de, mean, ss, a, b, tail, sign);
        v[2] = truncated_normal_f32(x.x2, e0, de, mean, ss, a, b, tail, sign);
        v[3] = truncated_normal_f32(x.x3, e0, de, mean, ss, a, b, tail, sign);
    }
};

struct Uniform64 {
    double lo, d, fl, top, thr;
    FI_DEVICE void operator()(const philox4x32_block& x, double v[2]) const
    {
        v[0] = masked_uniform_f64(x.x0, x.x1, lo, d, fl, top, thr);
        v[1] = masked_uniform_f64(x.x2, x.x3, lo, d, fl, top, thr);
    }
};

struct Normal64 {
    double mean, sd;
    FI_DEVICE void operator()(const philox4x32_block& x, double v[2]) const
    {
        const normal_pair_f64 p = box_muller_f64(x.x0, x.x1, x.x2, x.x3, mean, sd);
        v[0] = p.x0;
        v[1] = p.x1;
    }
};

struct Trunc64 {
    double e0, de, mean, ss, a, b, tail, sign;
    FI_DEVICE void operator()(const philox4x32_block& x, double v[2]) const
    {
        v[0] = truncated_normal_f64(x.x0, x.x1, e0, de, mean, ss, a, b, tail, sign);
        v[1] = truncated_normal_f64(x.x2, x.x3, e0, de, mean, ss, a, b, tail, sign);
    }
};

/* ---- stores ------------------------------------------------------------------ */
/* aligned(offset): whether out + (lanes * j - offset) is aligned for the vector
 * store, the same for every block j. */
struct StoreF32 {
    float* out;
    FI_DEVICE bool aligned(fi_u64 offset) const
    {
        return ((reinterpret_cast<fi_u64>(out) - offset * 4u) & 15u) == 0;
    }
    FI_DEVICE void one(fi_u64 k, float v) const { out[k] = v; }
    FI_DEVICE void four(fi_u64 k, const float v[4]) const
    {
#if defined(__CUDA_ARCH__)
        float4 q;
        q.x = v[0];
        q.y = v[1];
        q.z = v[2];
        q.w = v[3];
        *reinterpret_cast<float4*>(out + k) = q;
#else
        memcpy(out + k, v, 4 * sizeof(float));
#endif
    }
};

struct ToBF16 {
    static FI_DEVICE fi_u16 bits(float v) { return bf16_bits(v); }
};

struct ToF16 {
    static FI_DEVICE fi_u16 bits(float v) { return f16_bits(v); }
};

template <class To>
struct StoreHalf {
    fi_u16* out;
    FI_DEVICE bool aligned(fi_u64 offset) const
    {
        return ((reinterpret_cast<fi_u64>(out) - offset * 2u) & 7u) == 0;
    }
    FI_DEVICE void one(fi_u64 k, float v) const { out[k] = To::bits(v); }
    FI_DEVICE void four(fi_u64 k, const float v[4]) const
    {
        const fi_u16 h0 = To::bits(v[0]), h1 = To::bits(v[1]);
        const fi_u16 h2 = To::bits(v[2]), h3 = To::bits(v[3]);
#if defined(__CUDA_ARCH__)
        uint2 q; /* little-endian: h0 h1 h2 h3 in memory order */
        q.x = (fi_u32)h0 | ((fi_u32)h1 << 16);
        q.y = (fi_u32)h2 | ((fi_u32)h3 << 16);
        *reinterpret_cast<uint2*>(out + k) = q;
#else
        const fi_u16 h[4] = {h0, h1, h2, h3};
        memcpy(out + k, h, sizeof h);
#endif
    }
};

struct StoreF64 {
    double* out;
    FI_DEVICE bool aligned(fi_u64 offset) const
    {
        return ((reinterpret_cast<fi_u64>(out) - offset * 8u) & 15u) == 0;
    }
    FI_DEVICE void one(fi_u64 k, double v) const { out[k] = v; }
    FI_DEVICE void two(fi_u64 k, const double v[2]) const
    {
#if defined(__CUDA_ARCH__)
        double2 q;
        q.x = v[0];
        q.y = v[1];
        *reinterpret_cast<double2*>(out + k) = q;
#else
        memcpy(out + k, v, 2 * sizeof(double));
#endif
    }
};

/* ---- the grid-stride loops ----------------------------------------------------- */
/* Elements offset .. offset + n - 1 lie in blocks first .. last. For block j,
 * k = lanes * j - offset (mod 2^64) is the buffer index of its lane 0: lane e
 * belongs to the fill iff k + e < n, since an element before offset wraps to
 * at least 2^64 - offset >= n. */
template <class Gen, class Store>
FI_DEVICE void fill_blocks4(const Gen& gen, const Store& st, fi_u64 n, fi_u64 offset,
                            fi_u32 k0, fi_u32 k1, fi_u32 s0, fi_u32 s1,
                            fi_u64 tid, fi_u64 nthreads)
{
    const fi_u64 first = offset >> 2;
    const fi_u64 count = ((offset + (n - 1)) >> 2) - first + 1;
    const bool vec = st.aligned(offset);
    for (fi_u64 t = tid; t < count; t += nthreads) {
        const fi_u64 j = first + t;
        const philox4x32_block x = philox_stream_block(j, k0, k1, s0, s1);
        const fi_u64 k = (j << 2) - offset;
        float v[4];
        gen(x, v);
        if (vec && k < n && n - k >= 4) {
            st.four(k, v);
            FI_COUNT_VECTOR_STORE();
        } else {
            if (k < n) st.one(k, v[0]);
            if (k + 1 < n) st.one(k + 1, v[1]);
            if (k + 2 < n) st.one(k + 2, v[2]);
            if (k + 3 < n) st.one(k + 3, v[3]);
        }
    }
}

template <class Gen>
FI_DEVICE void fill_blocks2(const Gen& gen, const StoreF64& st, fi_u64 n, fi_u64 offset,
                            fi_u32 k0, fi_u32 k1, fi_u32 s0, fi_u32 s1,
                            fi_u64 tid, fi_u64 nthreads)
{
    const fi_u64 first = offset >> 1;
    const fi_u64 count = ((offset + (n - 1)) >> 1) - first + 1;
    const bool vec = st.aligned(offset);
    for (fi_u64 t = tid; t < count; t += nthreads) {
        const fi_u64 j = first + t;
        const philox4x32_block x = philox_stream_block(j, k0, k1, s0, s1);
        const fi_u64 k = (j << 1) - offset;
        double v[2];
        gen(x, v);
        if (vec && k < n && n - k >= 2) {
            st.two(k, v);
            FI_COUNT_VECTOR_STORE();
        } else {
            if (k < n) st.one(k, v[0]);
            if (k + 1 < n) st.one(k + 1, v[1]);
        }
    }
}

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
/* ---- the kernels ---------------------------------------------------------------- */
#define FI_TID ((fi_u64)blockIdx.x * blockDim.x + threadIdx.x)
#define FI_NTHREADS ((fi_u64)gridDim.x * blockDim.x)

/* Run once per loaded module by fastinit/cuda.py: the build must keep
 * subnormals (no -ftz=true, which CuPy's RawModule(code=...) would add) and
 * must not contract a * b + c. With tiny = 2^-149 (bits 1), a = 1 + 2^-12
 * and c = -(1 + 2^-11), out must read {2, 3, 1, 0, 0x80000001}. */
extern "C" __global__ void fastinit_selfcheck(float tiny, float a, float c, fi_u32* out)
{
    out[0] = fi_f32_bits(fi_addf(tiny, tiny));
    out[1] = fi_f32_bits(fi_mulf(tiny, 3.0f));
    out[2] = (tiny > 0.0f) ? 1u : 0u;
    out[3] = fi_f32_bits(fi_addf(fi_mulf(a, a), c));
    out[4] = fi_f32_bits(-tiny);
}

extern "C" __global__ void __launch_bounds__(FILL_THREADS)
fastinit_uniform_f32(float* __restrict__ out, fi_u64 n, fi_u64 offset, fi_u32 k0, fi_u32 k1,
                     fi_u32 s0, fi_u32 s1, float lo, float d, float fl, float top, float thr)
{
    const Uniform32 gen = {lo, d, fl, top, thr};
    const StoreF32 st = {out};
    fill_blocks4(gen, st, n, offset, k0, k1, s0, s1, FI_TID, FI_NTHREADS);
}

extern "C" __global__ void __launch_bounds__(FILL_THREADS)
fastinit_uniform_bf16(fi_u16* __restrict__ out, fi_u64 n, fi_u64 offset, fi_u32 k0, fi_u32 k1,
                      fi_u32 s0, fi_u32 s1, float lo, float d, float fl, float top, float thr)
{
    const Uniform32 gen = {lo, d, fl, top, thr};
    const StoreHalf<ToBF16> st = {out};
    fill_blocks4(gen, st, n, offset, k0, k1, s0, s1, FI_TID, FI_NTHREADS);
}

extern "C" __global__ void __launch_bounds__(FILL_THREADS)
fastinit_uniform_f16(fi_u16* __restrict__ out, fi_u64 n, fi_u64 offset, fi_u32 k0, fi_u32 k1,
                     fi_u32 s0, fi_u32 s1, float lo, float d, float fl, float top, float thr)
{
    const Uniform32 gen = {lo, d, fl, top, thr};
    const StoreHalf<ToF16> st = {out};
    fill_blocks4(gen, st, n, offset, k0, k1, s0, s1, FI_TID, FI_NTHREADS);
}

extern "C" __global__ void __launch_bounds__(FILL_THREADS)
fastinit_uniform_f64(double* __restrict__ out, fi_u64 n, fi_u64 offset, fi_u32 k0, fi_u32 k1,
                     fi_u32 s0, fi_u32 s1, double lo, double d, double fl, double top,
                     double thr)
{
    const Uniform64 gen = {lo, d, fl, top, thr};
    const StoreF64 st = {out};
    fill_blocks2(gen, st, n, offset, k0, k1, s0, s1, FI_TID, FI_NTHREADS);
}

extern "C" __global__ void __launch_bounds__(FILL_THREADS)
fastinit_normal_f32(float* __restrict__ out, fi_u64 n, fi_u64 offset, fi_u32 k0, fi_u32 k1,
                    fi_u32 s0, fi_u32 s1, float mean, float sd)
{
    const Normal32 gen = {mean, sd};
    const StoreF32 st = {out};
    fill_blocks4(gen, st, n, offset, k0, k1, s0, s1, FI_TID, FI_NTHREADS);
}

extern "C" __global__ void __launch_bounds__(FILL_THREADS)
fastinit_normal_bf16(fi_u16* __restrict__ out, fi_u64 n, fi_u64 offset, fi_u32 k0, fi_u32 k1,
                     fi_u32 s0, fi_u32 s1, float mean, float sd)
{
    const Normal32 gen = {mean, sd};
    const StoreHalf<ToBF16> st = {out};
    fill_blocks4(gen, st, n, offset, k0, k1, s0, s1, FI_TID, FI_NTHREADS);
}

extern "C" __global__ void __launch_bounds__(FILL_THREADS)
fastinit_normal_f16(fi_u16* __restrict__ out, fi_u64 n, fi_u64 offset, fi_u32 k0, fi_u32 k1,
                    fi_u32 s0, fi_u32 s1, float mean, float sd)
{
    const Normal32 gen = {mean, sd};
    const StoreHalf<ToF16> st = {out};
    fill_blocks4(gen, st, n, offset, k0, k1, s0, s1, FI_TID, FI_NTHREADS);
}

extern "C" __global__ void __launch_bounds__(FILL_THREADS)
fastinit_normal_f64(double* __restrict__ out, fi_u64 n, fi_u64 offset, fi_u32 k0, fi_u32 k1,
                    fi_u32 s0, fi_u32 s1, double mean, double sd)
{
    const Normal64 gen = {mean, sd};
    const StoreF64 st = {out};
    fill_blocks2(gen, st, n, offset, k0, k1, s0, s1, FI_TID, FI_NTHREADS);
}

extern "C" __global__ void __launch_bounds__(FILL_THREADS)
fastinit_trunc_f32(float* __restrict__ out, fi_u64 n, fi_u64 offset, fi_u32 k0, fi_u32 k1,
                   fi_u32 s0, fi_u32 s1, float e0, float de, float mean, float ss, float a,
                   float b, float tail, float sign)
{
    const Trunc32 gen = {e0, de, mean, ss, a, b, tail, sign};
    const StoreF32 st = {out};
    fill_blocks4(gen, st, n, offset, k0, k1, s0, s1, FI_TID, FI_NTHREADS);
}

extern "C" __global__ void __launch_bounds__(FILL_THREADS)
fastinit_trunc_bf16(fi_u16* __restrict__ out, fi_u64 n, fi_u64 offset, fi_u32 k0, fi_u32 k1,
                    fi_u32 s0, fi_u32 s1, float e0, float de, float mean, float ss, float a,
                    float b, float tail, float sign)
{
    const Trunc32 gen = {e0, de, mean, ss, a, b, tail, sign};
    const StoreHalf<ToBF16> st = {out};
    fill_blocks4(gen, st, n, offset, k0, k1, s0, s1, FI_TID, FI_NTHREADS);
}

extern "C" __global__ void __launch_bounds__(FILL_THREADS)
fastinit_trunc_f16(fi_u16* __restrict__ out, fi_u64 n, fi_u64 offset, fi_u32 k0, fi_u32 k1,
                   fi_u32 s0, fi_u32 s1, float e0, float de, float mean, float ss, float a,
                   float b, float tail, float sign)
{
    const Trunc32 gen = {e0, de, mean, ss, a, b, tail, sign};
    const StoreHalf<ToF16> st = {out};
    fill_blocks4(gen, st, n, offset, k0, k1, s0, s1, FI_TID, FI_NTHREADS);
}

extern "C" __global__ void __launch_bounds__(FILL_THREADS)
fastinit_trunc_f64(double* __restrict__ out, fi_u64 n, fi_u64 offset, fi_u32 k0, fi_u32 k1,
                   fi_u32 s0, fi_u32 s1, double e0, double de, double mean, double ss,
                   double a, double b, double tail, double sign)
{
    const Trunc64 gen = {e0, de, mean, ss, a, b, tail, sign};
    const StoreF64 st = {out};
    fill_blocks2(gen, st, n, offset, k0, k1, s0, s1, FI_TID, FI_NTHREADS);
}

#else
/* ---- host emulation of the kernels, for the CPU tests ----------------------------- */
/* Runs the kernel body for emulated threads 0 .. nthreads - 1 in turn, with the
 * kernels' argument order; kind 0 uniform, 1 normal, 2 trunc; fmt 0 float32,
 * 1 bfloat16, 2 float16, 3 float64 (fastinit/_dispatch.py's KINDS and FMT).
 * params points to 5, 2 or 8 floats (doubles for fmt 3). Returns the number
 * of vector stores, or -1 for an unknown kind or fmt. */
template <class Gen, class Store>
static void emulate4(const Gen& gen, const Store& st, fi_u64 n, fi_u64 offset, fi_u32 k0,
                     fi_u32 k1, fi_u32 s0, fi_u32 s1, fi_u64 nthreads)
{
    for (fi_u64 tid = 0; tid < nthreads; ++tid)
        fill_blocks4(gen, st, n, offset, k0, k1, s0, s1, tid, nthreads);
}

template <class Gen>
static void emulate2(const Gen& gen, const StoreF64& st, fi_u64 n, fi_u64 offset, fi_u32 k0,
                     fi_u32 k1, fi_u32 s0, fi_u32 s1, fi_u64 nthreads)
{
    for (fi_u64 tid = 0; tid < nthreads; ++tid)
        fill_blocks2(gen, st, n, offset, k0, k1, s0, s1, tid, nthreads);
}

template <class Gen>
static int emulate32(const Gen& gen, int fmt, void* out, fi_u64 n, fi_u64 offset, fi_u32 k0,
                     fi_u32 k1, fi_u32 s0, fi_u32 s1, fi_u64 nthreads)
{
    if (fmt == 0) {
        const StoreF32 st = {static_cast<float*>(out)};
        emulate4(gen, st, n, offset, k0, k1, s0, s1, nthreads);
    } else if (fmt == 1) {
        const StoreHalf<ToBF16> st = {static_cast<fi_u16*>(out)};
        emulate4(gen, st, n, offset, k0, k1, s0, s1, nthreads);
    } else if (fmt == 2) {
        const StoreHalf<ToF16> st = {static_cast<fi_u16*>(out)};
        emulate4(gen, st, n, offset, k0, k1, s0, s1, nthreads);
    } else {
        return -1;
    }
    return 0;
}

extern "C" long long fastinit_emulate_fill(int kind, int fmt, void* out, fi_u64 n,
                                           fi_u64 offset, fi_u32 k0, fi_u32 k1, fi_u32 s0,
                                           fi_u32 s1, const void* params, fi_u64 nthreads)
{
    int rc = -1;
    fi_emulated_vector_stores = 0;
    if (n == 0 || nthreads == 0) return 0;
    if (fmt == 3) {
        const double* p = static_cast<const double*>(params);
        const StoreF64 st = {static_cast<double*>(out)};
        rc = 0;
        if (kind == 0) {
            const Uniform64 gen = {p[0], p[1], p[2], p[3], p[4]};
            emulate2(gen, st, n, offset, k0, k1, s0, s1, nthreads);
        } else if (kind == 1) {
            const Normal64 gen = {p[0], p[1]};
            emulate2(gen, st, n, offset, k0, k1, s0, s1, nthreads);
        } else if (kind == 2) {
            const Trunc64 gen = {p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]};
            emulate2(gen, st, n, offset, k0, k1, s0, s1, nthreads);
        } else {
            rc = -1;
        }
    } else {
        const float* p = static_cast<const float*>(params);
        if (kind == 0) {
            const Uniform32 gen = {p[0], p[1], p[2], p[3], p[4]};
            rc = emulate32(gen, fmt, out, n, offset, k0, k1, s0, s1, nthreads);
        } else if (kind == 1) {
            const Normal32 gen = {p[0], p[1]};
            rc = emulate32(gen, fmt, out, n, offset, k0, k1, s0, s1, nthreads);
        } else if (kind == 2) {
            const Trunc32 gen = {p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]};
            rc = emulate32(gen, fmt, out, n, offset, k0, k1, s0, s1, nthreads);
        }
    }
    return rc < 0 ? -1 : (long long)fi_emulated_vector_stores;
}
#endif
