// A tiny host emulation of the CUDA features kernels/*.cu use, to run the
// real kernel source on the CPU (no GPU needed) and check its index math,
// tails, bounds and reductions against plain reference loops.
//
// Each block runs as blockDim OS threads (blocks one after another, so
// `__shared__` becomes a function-local static shared by the block's
// threads); __syncthreads is a block barrier, warp shuffles exchange through
// a per-warp buffer between two warp barriers. Threads leave the barriers
// when they return. Floating-point: compile with -ffp-contract=off so that
// the __f*_rn intrinsics (plain operators here) round like the device's.
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static

struct uint3_ {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline thread_local uint3_ threadIdx;
inline thread_local uint3_ blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned x, y;
};
struct alignas(4) uchar4 {
    unsigned char x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uchar4 make_uchar4(unsigned char x, unsigned char y, unsigned char z, unsigned char w) { return {x, y, z, w}; }

template <class A, class B>
inline A min(A a, B b) {
    static_assert(std::is_same<A, B>::value, "min of mixed types (CUDA would convert silently)");
    return a < b ? a : b;
}

inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
inline int atomicMin(int* p, int v) {
    std::atomic_ref<int> a(*p);
    int cur = a.load();
    while (v < cur && !a.compare_exchange_weak(cur, v)) {
    }
    return cur;
}

// ---- block / warp synchronisation ------------------------------------------------

struct EmuBlock {
    std::unique_ptr<std::barrier<>> block;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<double> exch;  // 32 slots per warp
};
inline EmuBlock* g_block = nullptr;

inline unsigned emu_tid() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

inline void __syncthreads() { g_block->block->arrive_and_wait(); }

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int o) {
    static_assert(sizeof(T) <= sizeof(double), "shuffle of a wide type");
    const unsigned t = emu_tid();
    const unsigned w = t / 32, lane = t % 32;
    double slot = 0.0;
    std::memcpy(&slot, &v, sizeof(T));
    g_block->exch[w * 32 + lane] = slot;
    g_block->warps[w]->arrive_and_wait();
    const double got = g_block->exch[w * 32 + (lane ^ (unsigned)o)];
    g_block->warps[w]->arrive_and_wait();
    T r;
    std::memcpy(&r, &got, sizeof(T));
    return r;
}

// Runs kernel(args...) over grid × block, one block after another.
template <class K, class... A>
void emu_launch(dim3 grid, dim3 block, K kernel, A... args) {
    blockDim = block;
    gridDim = grid;
    const unsigned nthreads = block.x * block.y * block.z;
    const unsigned nwarps = (nthreads + 31) / 32;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                EmuBlock eb;
                eb.block = std::make_unique<std::barrier<>>(nthreads);
                for (unsigned w = 0; w < nwarps; ++w) {
                    const unsigned in_warp = std::min(32u, nthreads - w * 32);
                    eb.warps.push_back(std::make_unique<std::barrier<>>(in_warp));
                }
                eb.exch.assign(nwarps * 32, 0.0);
                g_block = &eb;
                std::vector<std::thread> ts;
                ts.reserve(nthreads);
                for (unsigned tz = 0; tz < block.z; ++tz)
                    for (unsigned ty = 0; ty < block.y; ++ty)
                        for (unsigned tx = 0; tx < block.x; ++tx)
                            ts.emplace_back([=, &eb] {
                                threadIdx = {tx, ty, tz};
                                blockIdx = {bx, by, bz};
                                kernel(args...);
                                const unsigned w = emu_tid() / 32;
                                eb.warps[w]->arrive_and_drop();
                                eb.block->arrive_and_drop();
                            });
                for (auto& t : ts) t.join();
                g_block = nullptr;
            }
}
