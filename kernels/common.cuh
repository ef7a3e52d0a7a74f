// Shared device helpers: integer types, Philox4x32-10 (bit-identical to
// src/backend/philox.rs), warp/block reductions, bf16 conversion and the
// grid-stride helpers every kernel file uses.
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
