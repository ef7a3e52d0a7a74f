// Helpers shared by the compression kernels (score_accum, topk, weighted_svd,
// lowrank_sparse). Self-contained: common.cuh belongs to the basic ops.
#pragma once
#include <stdint.h>

#define CC_FULL_MASK 0xffffffffu

// Dynamic shared memory (the launch's sharedMemBytes). The emulated device
// (emulator/cuda_emu.h) hands out a per-launch buffer instead.
#ifdef LPAF_EMULATED
#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(emu_dynamic_shared())
#else
#define DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

// Order-preserving key of a score: unsigned order == f32::total_cmp order
// (on |x| when abs). Must equal lpaf::backend::topk_key bit for bit.
__device__ __forceinline__ uint32_t cc_topk_key(float x, int abs_) {
    uint32_t b = __float_as_uint(x);
    if (abs_) b &= 0x7fffffffu;
    return b ^ ((uint32_t)((int32_t)b >> 31) | 0x80000000u);
}

// Sum over the 32 lanes of a warp in the fixed xor-tree order (lane i adds
// lane i^16, then i^8, ...): every lane ends with the same bits.
__device__ __forceinline__ double cc_warp_sum_f64(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(CC_FULL_MASK, v, o);
    return v;
}

// Deterministic block sum of f64 values (blockDim.x a multiple of 32, ≤ 1024):
// each warp's xor tree, then warp 0 combines the warp sums with the same tree.
// The result is valid in every thread. `scratch` holds 32 doubles.
__device__ __forceinline__ double cc_block_sum_f64(double v, double* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    v = cc_warp_sum_f64(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double w = lane < nwarps ? scratch[lane] : 0.0;
        w = cc_warp_sum_f64(w);
        if (lane == 0) scratch[0] = w;
    }
    __syncthreads();
    return scratch[0];
}

// Exclusive scan of one unsigned count per thread over the block, in thread
// order (blockDim.x a multiple of 32, ≤ 1024). Returns the thread's exclusive
// prefix; *total receives the block total. `scratch` holds 33 uint64s.
__device__ __forceinline__ uint64_t cc_block_exclusive_scan(uint64_t v, uint64_t* scratch, uint64_t* total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    uint64_t incl = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        uint64_t up = __shfl_up_sync(CC_FULL_MASK, incl, o);
        if (lane >= o) incl += up;
    }
    __syncthreads();
    if (lane == 31) scratch[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        uint64_t w = lane < nwarps ? scratch[lane] : 0;
        uint64_t wi = w;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            uint64_t up = __shfl_up_sync(CC_FULL_MASK, wi, o);
            if (lane >= o) wi += up;
        }
        scratch[lane] = wi - w;  // exclusive prefix of warp sums
        if (lane == 31) scratch[32] = wi;
    }
    __syncthreads();
    uint64_t r = scratch[warp] + incl - v;
    *total = scratch[32];
    __syncthreads();
    return r;
}

// A grid-stride loop bound: first index and stride of this thread.
__device__ __forceinline__ uint64_t cc_tid() { return (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ uint64_t cc_stride() { return (uint64_t)gridDim.x * blockDim.x; }
__device__ __forceinline__ uint64_t cc_min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }
