// Attention helpers: head split / merge permutations, the masked scaled
// softmax over keys (in place on [B, H, S, S] scores) and its backward.
//
// Softmax kernels: one warp per row, 256-thread blocks (8 rows per block),
// grid-stride over rows. The _vN variants (S % 4 == 0, S <= 128·N) keep the
// row in registers as N float4 per lane and do scale + mask + max + exp + sum
// + normalise with one read and one write of the row; the generic variants
// take any S and re-read the row (from L1).

#include "common.cuh"

// ---- head permutations ------------------------------------------------------------
// Destination row `row` (of dv units) is (bi·P + p)·Q + q; it is copied from
// source row (bi·Q + q)·P + p. split_heads ([B·S, H·D] → [B, H, S, D]) is
// P = H, Q = S; merge_heads is P = S, Q = H. 1-D launch over rows·dv units.

template <class T, class I>
__device__ __forceinline__ void permute_rows_impl(const T* __restrict__ x, T* __restrict__ out, I total, I p_dim,
                                                  I q_dim, I dv) {
    const I start = (I)global_thread();
    const I stride = (I)global_stride();
    for (I idx = start; idx < total; idx += stride) {
        const I row = idx / dv;
        const I k = idx - row * dv;
        const I q = row % q_dim;
        const I t = row / q_dim;
        const I p = t % p_dim;
        const I bi = t / p_dim;
        const I src = (bi * q_dim + q) * p_dim + p;
        out[idx] = x[src * dv + k];
    }
}

template <class T>
__device__ __forceinline__ void permute_rows(const T* __restrict__ x, T* __restrict__ out, u64 total, u64 p_dim,
                                             u64 q_dim, u64 dv) {
    // 32-bit index math when every index (and idx + grid stride, the grid
    // being capped far below 2^31 threads by the host) fits: always for BERT.
    if (total <= 0x7FFFFFFFull && global_stride() <= 0x7FFFFFFFull) {
        permute_rows_impl<T, u32>(x, out, (u32)total, (u32)p_dim, (u32)q_dim, (u32)dv);
    } else {
        permute_rows_impl<T, u64>(x, out, total, p_dim, q_dim, dv);
    }
}

// total = rows·d elements, dv = d.
KERNEL void permute_heads_f32(const float* __restrict__ x, float* __restrict__ out, u64 total, u64 p_dim,
                              u64 q_dim, u64 dv) {
    permute_rows(x, out, total, p_dim, q_dim, dv);
}

// float4 units: total = rows·d/4, dv = d/4 (d % 4 == 0).
KERNEL void permute_heads_f32x4(const float* __restrict__ x, float* __restrict__ out, u64 total, u64 p_dim,
                                u64 q_dim, u64 dv) {
    permute_rows(reinterpret_cast<const float4*>(x), reinterpret_cast<float4*>(out), total, p_dim, q_dim, dv);
}

// ---- masked softmax ------------------------------------------------------------------
// Row `row` of scores (rows = B·H·S, each of length S) belongs to batch
// row / (H·S); key j is kept when mask[batch·S + j] != 0. p_j = exp(scale·s_j
// − max) / Σ over kept keys, 0 for masked keys, and a row with no kept key
// (max = −inf) becomes all zeros. scale·s_j is rounded before the subtraction
// (no FMA) as on the CPU.

template <int NV>
__device__ __forceinline__ void softmax_fwd_vec(float* __restrict__ scores, const u8* __restrict__ mask, u64 rows,
                                                u32 s, u32 heads, float scale) {
    const u32 lane = threadIdx.x & 31;
    const u64 wpb = blockDim.x >> 5;
    const u64 wstride = (u64)gridDim.x * wpb;
    const u32 s4 = s >> 2;
    const u64 hs = (u64)heads * s;
    for (u64 row = (u64)blockIdx.x * wpb + (threadIdx.x >> 5); row < rows; row += wstride) {
        float4* r4 = reinterpret_cast<float4*>(scores + row * s);
        const uchar4* m4 = reinterpret_cast<const uchar4*>(mask + (row / hs) * s);
        float4 v[NV];
        uchar4 mk[NV];
        float mx = -INFINITY;
#pragma unroll
        for (int k = 0; k < NV; ++k) {
            const u32 c = lane + 32u * k;
            v[k] = f4_zero();
            mk[k] = make_uchar4(0, 0, 0, 0);
            if (c < s4) {
                const float4 t = r4[c];
                mk[k] = m4[c];
                v[k] = make_float4(__fmul_rn(scale, t.x), __fmul_rn(scale, t.y), __fmul_rn(scale, t.z),
                                   __fmul_rn(scale, t.w));
                if (mk[k].x) mx = nan_max(mx, v[k].x);
                if (mk[k].y) mx = nan_max(mx, v[k].y);
                if (mk[k].z) mx = nan_max(mx, v[k].z);
                if (mk[k].w) mx = nan_max(mx, v[k].w);
            }
        }
        mx = warp_max(mx);
        if (mx == -INFINITY) {
#pragma unroll
            for (int k = 0; k < NV; ++k) {
                const u32 c = lane + 32u * k;
                if (c < s4) r4[c] = f4_zero();
            }
            continue;
        }
        float sum = 0.0f;
#pragma unroll
        for (int k = 0; k < NV; ++k) {
            const u32 c = lane + 32u * k;
            if (c < s4) {
                v[k].x = mk[k].x ? expf(v[k].x - mx) : 0.0f;
                v[k].y = mk[k].y ? expf(v[k].y - mx) : 0.0f;
                v[k].z = mk[k].z ? expf(v[k].z - mx) : 0.0f;
                v[k].w = mk[k].w ? expf(v[k].w - mx) : 0.0f;
                sum += (v[k].x + v[k].y) + (v[k].z + v[k].w);
            }
        }
        const float inv = __fdiv_rn(1.0f, warp_sum(sum));
#pragma unroll
        for (int k = 0; k < NV; ++k) {
            const u32 c = lane + 32u * k;
            if (c < s4) r4[c] = make_float4(v[k].x * inv, v[k].y * inv, v[k].z * inv, v[k].w * inv);
        }
    }
}

KERNEL void softmax_fwd_v1(float* scores, const u8* mask, u64 rows, u32 s, u32 heads, float scale) {
    softmax_fwd_vec<1>(scores, mask, rows, s, heads, scale);
}
KERNEL void softmax_fwd_v2(float* scores, const u8* mask, u64 rows, u32 s, u32 heads, float scale) {
    softmax_fwd_vec<2>(scores, mask, rows, s, heads, scale);
}
KERNEL void softmax_fwd_v4(float* scores, const u8* mask, u64 rows, u32 s, u32 heads, float scale) {
    softmax_fwd_vec<4>(scores, mask, rows, s, heads, scale);
}
KERNEL void softmax_fwd_v8(float* scores, const u8* mask, u64 rows, u32 s, u32 heads, float scale) {
    softmax_fwd_vec<8>(scores, mask, rows, s, heads, scale);
}

// Any S (scalar, three passes over the row; each lane re-reads only what it wrote).
KERNEL void softmax_fwd_generic(float* __restrict__ scores, const u8* __restrict__ mask, u64 rows, u32 s, u32 heads,
                                float scale) {
    const u32 lane = threadIdx.x & 31;
    const u64 wpb = blockDim.x >> 5;
    const u64 wstride = (u64)gridDim.x * wpb;
    const u64 hs = (u64)heads * s;
    for (u64 row = (u64)blockIdx.x * wpb + (threadIdx.x >> 5); row < rows; row += wstride) {
        float* r = scores + row * s;
        const u8* m = mask + (row / hs) * s;
        float mx = -INFINITY;
        for (u32 c = lane; c < s; c += 32) {
            if (m[c]) mx = nan_max(mx, __fmul_rn(scale, r[c]));
        }
        mx = warp_max(mx);
        if (mx == -INFINITY) {
            for (u32 c = lane; c < s; c += 32) r[c] = 0.0f;
            continue;
        }
        float sum = 0.0f;
        for (u32 c = lane; c < s; c += 32) {
            const float e = m[c] ? expf(__fmul_rn(scale, r[c]) - mx) : 0.0f;
            r[c] = e;
            sum += e;
        }
        const float inv = __fdiv_rn(1.0f, warp_sum(sum));
        for (u32 c = lane; c < s; c += 32) r[c] *= inv;
    }
}

// ---- softmax backward -------------------------------------------------------------
// In place: d ← scale · p ⊙ (d − Σ_j p_j·d_j) per row of length s.

template <int NV>
__device__ __forceinline__ void softmax_bwd_vec(const float* __restrict__ probs, float* __restrict__ dprobs,
                                                u64 rows, u32 s, float scale) {
    const u32 lane = threadIdx.x & 31;
    const u64 wpb = blockDim.x >> 5;
    const u64 wstride = (u64)gridDim.x * wpb;
    const u32 s4 = s >> 2;
    for (u64 row = (u64)blockIdx.x * wpb + (threadIdx.x >> 5); row < rows; row += wstride) {
        const float4* p4 = reinterpret_cast<const float4*>(probs + row * s);
        float4* d4 = reinterpret_cast<float4*>(dprobs + row * s);
        float4 p[NV];
        float4 d[NV];
        float dot = 0.0f;
#pragma unroll
        for (int k = 0; k < NV; ++k) {
            const u32 c = lane + 32u * k;
            p[k] = f4_zero();
            d[k] = f4_zero();
            if (c < s4) {
                p[k] = p4[c];
                d[k] = d4[c];
                dot += (p[k].x * d[k].x + p[k].y * d[k].y) + (p[k].z * d[k].z + p[k].w * d[k].w);
            }
        }
        dot = warp_sum(dot);
#pragma unroll
        for (int k = 0; k < NV; ++k) {
            const u32 c = lane + 32u * k;
            if (c < s4) {
                d4[c] = make_float4(__fmul_rn(__fmul_rn(scale, p[k].x), d[k].x - dot),
                                    __fmul_rn(__fmul_rn(scale, p[k].y), d[k].y - dot),
                                    __fmul_rn(__fmul_rn(scale, p[k].z), d[k].z - dot),
                                    __fmul_rn(__fmul_rn(scale, p[k].w), d[k].w - dot));
            }
        }
    }
}

KERNEL void softmax_bwd_v1(const float* probs, float* dprobs, u64 rows, u32 s, float scale) {
    softmax_bwd_vec<1>(probs, dprobs, rows, s, scale);
}
KERNEL void softmax_bwd_v2(const float* probs, float* dprobs, u64 rows, u32 s, float scale) {
    softmax_bwd_vec<2>(probs, dprobs, rows, s, scale);
}
KERNEL void softmax_bwd_v4(const float* probs, float* dprobs, u64 rows, u32 s, float scale) {
    softmax_bwd_vec<4>(probs, dprobs, rows, s, scale);
}
KERNEL void softmax_bwd_v8(const float* probs, float* dprobs, u64 rows, u32 s, float scale) {
    softmax_bwd_vec<8>(probs, dprobs, rows, s, scale);
}

KERNEL void softmax_bwd_generic(const float* __restrict__ probs, float* __restrict__ dprobs, u64 rows, u32 s,
                                float scale) {
    const u32 lane = threadIdx.x & 31;
    const u64 wpb = blockDim.x >> 5;
    const u64 wstride = (u64)gridDim.x * wpb;
    for (u64 row = (u64)blockIdx.x * wpb + (threadIdx.x >> 5); row < rows; row += wstride) {
        const float* p = probs + row * s;
        float* d = dprobs + row * s;
        float dot = 0.0f;
        for (u32 c = lane; c < s; c += 32) dot += p[c] * d[c];
        dot = warp_sum(dot);
        for (u32 c = lane; c < s; c += 32) d[c] = __fmul_rn(__fmul_rn(scale, p[c]), d[c] - dot);
    }
}
