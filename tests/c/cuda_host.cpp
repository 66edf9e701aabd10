/*
 * cuda_host.cpp: kernels/cuda/fill.cu's __global__ kernels, compiled as host
 * C++ through cuda_host_shim.h and launched on the CPU, for the tests
 * (tests/test_cuda_host.py builds it with the system C++ compiler and loads
 * it with ctypes).
 *
 * fastinit_shim_launch(name, grid, block, args) runs kernel `name` for every
 * (blockIdx.x, threadIdx.x) of a (grid, block) launch, one after another;
 * args holds a pointer to each argument's value, as cuLaunchKernel takes
 * them. fastinit_shim_signature(name) gives the kernel's parameter types,
 * one letter each (p pointer, Q 64-bit and I 32-bit unsigned, f float,
 * d double), so the caller can check what it passes.
 *
 * Build: c++ -std=c++14 -O2 -ffp-contract=off -fno-fast-math -shared -fPIC
 *        -I tests/c -I kernels/cuda tests/c/cuda_host.cpp -o cuda_host.so
 */
#include "cuda_host_shim.h"

#include "fill.cu"

#include <string>
#include <utility>

namespace {

template <class T> struct Code;
template <class T> struct Code<T*> { static const char value = 'p'; };
template <> struct Code<fi_u64> { static const char value = 'Q'; };
template <> struct Code<fi_u32> { static const char value = 'I'; };
template <> struct Code<float> { static const char value = 'f'; };
template <> struct Code<double> { static const char value = 'd'; };

template <class... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>)
{
    kernel(*static_cast<A*>(args[I])...);
}

template <class... A>
void run(void* kernel, void** args)
{
    call(reinterpret_cast<void (*)(A...)>(kernel), args, std::index_sequence_for<A...>{});
}

struct Entry {
    const char* name;
    void* kernel;
    void (*run)(void*, void**);
    std::string signature;
};

template <class... A>
Entry entry(const char* name, void (*kernel)(A...))
{
    const char codes[] = {Code<A>::value..., '\0'};
    return Entry{name, reinterpret_cast<void*>(kernel), &run<A...>, std::string(codes)};
}

#define FI_ENTRY(name) entry(#name, &name)
#define FI_ENTRIES(kind, suffix) \
    FI_ENTRY(fastinit_##kind##_##suffix), FI_ENTRY(fastinit_##kind##_##suffix##_rows)

const Entry KERNELS[] = {
    FI_ENTRY(fastinit_selfcheck),
    FI_ENTRIES(uniform, f32), FI_ENTRIES(uniform, bf16), FI_ENTRIES(uniform, f16),
    FI_ENTRIES(uniform, f64), FI_ENTRIES(normal, f32), FI_ENTRIES(normal, bf16),
    FI_ENTRIES(normal, f16), FI_ENTRIES(normal, f64), FI_ENTRIES(trunc, f32),
    FI_ENTRIES(trunc, bf16), FI_ENTRIES(trunc, f16), FI_ENTRIES(trunc, f64),
};

const Entry* find(const char* name)
{
    for (const Entry& e : KERNELS)
        if (strcmp(e.name, name) == 0) return &e;
    return nullptr;
}

}  // namespace

/* The kernels' names, one per line. */
extern "C" const char* fastinit_shim_names(void)
{
    static std::string names;
    if (names.empty())
        for (const Entry& e : KERNELS) names += std::string(e.name) + "\n";
    return names.c_str();
}

/* The parameter types of kernel `name` (see above), or NULL if there is none. */
extern "C" const char* fastinit_shim_signature(const char* name)
{
    const Entry* e = find(name);
    return e ? e->signature.c_str() : nullptr;
}

/* Run kernel `name` over a (grid, block) launch; returns 0, or -1 for an unknown
 * kernel or an empty launch. */
extern "C" int fastinit_shim_launch(const char* name, unsigned grid, unsigned block,
                                    void** args)
{
    const Entry* e = find(name);
    if (!e || grid == 0 || block == 0) return -1;
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        for (unsigned t = 0; t < block; ++t) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            e->run(e->kernel, args);
        }
    }
    return 0;
}

/* Watch [lo, lo + nbytes) of elements of elsize bytes: stores are counted per
 * element into counts (nbytes / elsize bytes, saturating at 255), and stores
 * outside it are counted as wild and dropped. lo = NULL stops watching. */
extern "C" void fastinit_shim_watch(void* lo, uint64_t nbytes, uint64_t elsize,
                                    unsigned char* counts)
{
    fi_shim_watched.lo = static_cast<unsigned char*>(lo);
    fi_shim_watched.hi = lo ? static_cast<unsigned char*>(lo) + nbytes : nullptr;
    fi_shim_watched.elsize = elsize;
    fi_shim_watched.counts = counts;
}

/* The store counts since the last call: scalar, vector, misaligned, wild. */
extern "C" void fastinit_shim_stats(uint64_t out[4])
{
    out[0] = fi_shim_counted.scalar;
    out[1] = fi_shim_counted.vector;
    out[2] = fi_shim_counted.misaligned;
    out[3] = fi_shim_counted.wild;
    fi_shim_counted = fi_shim_stats{0, 0, 0, 0};
}
