// Fused low-rank + sparse layer (docs/algorithms.md §6.4): the elementwise passes around
// the cuBLAS products of backend/cuda/compress.rs.
//   forward:  w_eff = M⊙S (lrs_mask_copy), w_eff += U·V (GEMM, beta 1),
//             y = x·w_effᵀ (GEMM) + b (lrs_add_bias)
//   backward: dW = dyᵀ·x, dx = dy·w_eff, dU += dW·Vᵀ, dV += Uᵀ·dW (GEMMs),
//             dS += M⊙dW (lrs_masked_acc), db += Σ_rows dy (lrs_colsum_*,
//             a fixed two-stage order: no floating-point atomics).
#include "compress_common.cuh"

// out = mask ? s : 0.
extern "C" __global__ void lrs_mask_copy(const float* __restrict__ s, const unsigned char* __restrict__ mask,
                                         float* __restrict__ out, unsigned long long n) {
    const uint64_t n4 = n >> 2;
    for (uint64_t v = cc_tid(); v < n4; v += cc_stride()) {
        float4 x = reinterpret_cast<const float4*>(s)[v];
        uchar4 m = reinterpret_cast<const uchar4*>(mask)[v];
        x.x = m.x ? x.x : 0.0f;
        x.y = m.y ? x.y : 0.0f;
        x.z = m.z ? x.z : 0.0f;
        x.w = m.w ? x.w : 0.0f;
        reinterpret_cast<float4*>(out)[v] = x;
    }
    if (blockIdx.x == 0 && threadIdx.x < (n & 3)) {
        uint64_t i = (n4 << 2) + threadIdx.x;
        out[i] = mask[i] ? s[i] : 0.0f;
    }
}

// ds += mask ? dw : 0 (no mask: ds += dw).
extern "C" __global__ void lrs_masked_acc(const float* __restrict__ dw, const unsigned char* __restrict__ mask,
                                          float* __restrict__ ds, unsigned long long n) {
    const uint64_t n4 = n >> 2;
    for (uint64_t v = cc_tid(); v < n4; v += cc_stride()) {
        float4 g = reinterpret_cast<const float4*>(dw)[v];
        float4 d = reinterpret_cast<float4*>(ds)[v];
        uchar4 m = mask ? reinterpret_cast<const uchar4*>(mask)[v] : make_uchar4(1, 1, 1, 1);
        if (m.x) d.x = __fadd_rn(d.x, g.x);
        if (m.y) d.y = __fadd_rn(d.y, g.y);
        if (m.z) d.z = __fadd_rn(d.z, g.z);
        if (m.w) d.w = __fadd_rn(d.w, g.w);
        reinterpret_cast<float4*>(ds)[v] = d;
    }
    if (blockIdx.x == 0 && threadIdx.x < (n & 3)) {
        uint64_t i = (n4 << 2) + threadIdx.x;
        if (!mask || mask[i]) ds[i] = __fadd_rn(ds[i], dw[i]);
    }
}

// y[r, c] += b[c]; grid (column blocks, row blocks), rows walked by stride.
extern "C" __global__ void lrs_add_bias(float* __restrict__ y, const float* __restrict__ b, unsigned int rows,
                                        unsigned int cols) {
    const unsigned int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    const float bc = b[c];
    for (unsigned int r = blockIdx.y; r < rows; r += gridDim.y) {
        float* p = y + (size_t)r * cols + c;
        *p = __fadd_rn(*p, bc);
    }
}

// partial[chunk, c] = Σ of rows [chunk·rpc, (chunk+1)·rpc) of column c, in row order.
extern "C" __global__ void lrs_colsum_partial(const float* __restrict__ x, unsigned int rows, unsigned int cols,
                                              unsigned int rows_per_chunk, float* __restrict__ partial) {
    const unsigned int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    const unsigned int r0 = blockIdx.y * rows_per_chunk;
    const unsigned int r1 = min(rows, r0 + rows_per_chunk);
    float s = 0.0f;
    for (unsigned int r = r0; r < r1; r++) s = __fadd_rn(s, x[(size_t)r * cols + c]);
    partial[(size_t)blockIdx.y * cols + c] = s;
}

// out[c] += Σ_chunks partial[chunk, c], chunks in order.
extern "C" __global__ void lrs_colsum_finish(const float* __restrict__ partial, unsigned int chunks,
                                             unsigned int cols, float* __restrict__ out) {
    const unsigned int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.0f;
    for (unsigned int k = 0; k < chunks; k++) s = __fadd_rn(s, partial[(size_t)k * cols + c]);
    out[c] = __fadd_rn(out[c], s);
}
