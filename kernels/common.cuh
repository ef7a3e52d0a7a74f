// The one header of every kernel file: integer types, Philox4x32-10
// (bit-identical to src/backend/philox.rs), warp/block reductions and scans,
// bf16 conversion, the top-k key, dynamic shared memory and the grid-stride
// helpers.
//
// Conventions of the kernels built on these helpers:
// - every kernel is `extern "C" __global__` (KERNEL below) so the Rust side
//   finds it by name;
// - element counts and offsets are 64-bit (`u64`);
// - device buffers come straight from cuMemAlloc (256-byte aligned) and are
//   never offset by the host unless a kernel says so, so float4 / uchar4
//   views of a whole buffer are aligned;
// - no floating-point atomics: reductions use a fixed partition and a fixed
//   combination order (see reduce.cu, layernorm.cu, embedding.cu).
#pragma once

#include <stdint.h>

typedef unsigned long long u64;
typedef uint32_t u32;
typedef uint16_t u16;
typedef uint8_t u8;

#define KERNEL extern "C" __global__

// ---- grid-stride indexing ---------------------------------------------------

__device__ __forceinline__ u64 global_thread() {
    return (u64)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ u64 global_stride() {
    return (u64)gridDim.x * blockDim.x;
}

// ---- multi-tensor tables -----------------------------------------------------
// A table of entries, one per tensor, each owning the global blocks
// [first_block, first_block + blocks) of one grid (entries sorted by
// first_block): the entry of block b, by binary search.
template <typename Entry>
__device__ __forceinline__ u32 entry_of_block(const Entry* e, u32 count, u32 b) {
    u32 lo = 0, hi = count;
    while (hi - lo > 1) {
        const u32 mid = (lo + hi) >> 1;
        if (e[mid].first_block <= b) lo = mid; else hi = mid;
    }
    return lo;
}

// This thread's part of its block's entry: the entry, and the first index and
// stride of a grid-stride loop over the entry's own blocks.
struct EntrySpan {
    u32 entry;
    u64 start;
    u64 stride;
};

template <typename Entry>
__device__ __forceinline__ EntrySpan entry_span(const Entry* e, u32 count) {
    const u32 t = entry_of_block(e, count, blockIdx.x);
    const u64 local = blockIdx.x - e[t].first_block;
    return {t, local * blockDim.x + threadIdx.x, (u64)e[t].blocks * blockDim.x};
}

// ---- Philox4x32-10 ----------------------------------------------------------
// Salmon et al., SC 2011. The round and key schedule mirror philox.rs line by
// line: ctr = [hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0], key bumped after every
// round but the last.

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

__device__ __forceinline__ uint4 philox4x32_10(uint4 ctr, uint2 key) {
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        const u32 hi0 = __umulhi(PHILOX_M0, ctr.x);
        const u32 lo0 = PHILOX_M0 * ctr.x;
        const u32 hi1 = __umulhi(PHILOX_M1, ctr.z);
        const u32 lo1 = PHILOX_M1 * ctr.z;
        ctr = make_uint4(hi1 ^ ctr.y ^ key.x, lo1, hi0 ^ ctr.w ^ key.y, lo0);
        if (round < 9) {
            key.x += PHILOX_W0;
            key.y += PHILOX_W1;
        }
    }
    return ctr;
}

// Uniform in [0, 1) with 24 random bits for element `index` of `stream`
// (philox::uniform): counter [index lo, index hi, stream lo, stream hi], key
// [seed lo, seed hi], first output word's top 24 bits times 2^-24 (exact).
__device__ __forceinline__ float philox_uniform(u64 seed, u64 stream, u64 index) {
    const uint4 out = philox4x32_10(
        make_uint4((u32)index, (u32)(index >> 32), (u32)stream, (u32)(stream >> 32)),
        make_uint2((u32)seed, (u32)(seed >> 32)));
    return (float)(out.x >> 8) * (1.0f / 16777216.0f);
}

// ---- bf16 -------------------------------------------------------------------
// Round to nearest even exactly as half::bf16::from_f32: NaN keeps its high
// mantissa bits with the quiet bit set; otherwise add one ulp when the
// dropped half is above one half, or exactly one half with an odd kept part.

__device__ __forceinline__ u16 f32_to_bf16_bits(float v) {
    const u32 x = __float_as_uint(v);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) {
        return (u16)((x >> 16) | 0x0040u);
    }
    const u32 round_bit = 0x00008000u;
    if ((x & round_bit) != 0 && (x & (3u * round_bit - 1u)) != 0) {
        return (u16)((x >> 16) + 1u);
    }
    return (u16)(x >> 16);
}

// Exact widening, as half::bf16::to_f32 (a NaN gets its quiet bit set).
__device__ __forceinline__ float bf16_bits_to_f32(u16 b) {
    const u32 w = (b & 0x7FFFu) > 0x7F80u ? ((u32)b | 0x0040u) : (u32)b;
    return __uint_as_float(w << 16);
}

// ---- reductions -------------------------------------------------------------
// Butterfly (xor) reductions: every lane ends with the same value, combined in
// a fixed order, so results are reproducible.

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Σ x² in f64 (each square exact) over x[start], x[start + stride], … of a
// grid-stride loop (float4 loads, then the scalar tail), added over the
// block: warps first, then the warps in order. Every thread of the block
// must call it; the total is valid in thread 0. Block: a multiple of 32
// threads up to 1024.
__device__ __forceinline__ double block_sum_squares_f64(const float* x, u64 n, u64 start, u64 stride) {
    __shared__ double sh[32];
    const u64 n4 = n >> 2;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    double acc = 0.0;
    for (u64 i = start; i < n4; i += stride) {
        const float4 v = x4[i];
        acc += (double)v.x * (double)v.x;
        acc += (double)v.y * (double)v.y;
        acc += (double)v.z * (double)v.z;
        acc += (double)v.w * (double)v.w;
    }
    for (u64 i = (n4 << 2) + start; i < n; i += stride) acc += (double)x[i] * (double)x[i];
    acc = warp_sum_f64(acc);
    const u32 warp = threadIdx.x >> 5;
    const u32 lane = threadIdx.x & 31;
    if (lane == 0) sh[warp] = acc;
    __syncthreads();
    double s = 0.0;
    if (threadIdx.x == 0) {
        const u32 warps = blockDim.x >> 5;
        for (u32 w = 0; w < warps; ++w) s += sh[w];
    }
    return s;
}

// max that propagates NaN (fmaxf returns the other operand when one is NaN,
// which would turn a NaN score into a zero probability); as the CPU's nan_max.
__device__ __forceinline__ float nan_max(float a, float b) { return (b > a || b != b) ? b : a; }

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = nan_max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float4 f4_add(float4 a, float4 b) {
    return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

__device__ __forceinline__ float4 f4_zero() {
    return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
}

// ---- block reductions, scans and the top-k key (compression kernels) -------

#define FULL_MASK 0xffffffffu

// Dynamic shared memory (the launch's sharedMemBytes). The emulated device
// (emulator/cuda_emu.h) hands out a per-launch buffer instead.
#ifdef LPAF_EMULATED
#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(emu_dynamic_shared())
#else
#define DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

// Order-preserving key of a score: unsigned order == f32::total_cmp order
// (on |x| when abs). Must equal lpaf::backend::topk_key bit for bit.
__device__ __forceinline__ uint32_t topk_key(float x, int abs_) {
    uint32_t b = __float_as_uint(x);
    if (abs_) b &= 0x7fffffffu;
    return b ^ ((uint32_t)((int32_t)b >> 31) | 0x80000000u);
}

// Deterministic block sum of f64 values (blockDim.x a multiple of 32, ≤ 1024):
// each warp's xor tree, then warp 0 combines the warp sums with the same tree.
// The result is valid in every thread. `scratch` holds 32 doubles.
__device__ __forceinline__ double block_sum_f64(double v, double* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    v = warp_sum_f64(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double w = lane < nwarps ? scratch[lane] : 0.0;
        w = warp_sum_f64(w);
        if (lane == 0) scratch[0] = w;
    }
    __syncthreads();
    return scratch[0];
}

// Exclusive scan of one unsigned count per thread over the block, in thread
// order (blockDim.x a multiple of 32, ≤ 1024). Returns the thread's exclusive
// prefix; *total receives the block total. `scratch` holds 33 uint64s.
__device__ __forceinline__ uint64_t block_exclusive_scan(uint64_t v, uint64_t* scratch, uint64_t* total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    uint64_t incl = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        uint64_t up = __shfl_up_sync(FULL_MASK, incl, o);
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
            uint64_t up = __shfl_up_sync(FULL_MASK, wi, o);
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

__device__ __forceinline__ uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }
