// Weighted power-iteration SVD (docs/algorithms.md §4.2, §6.3): the small
// kernels between the cuBLAS strided-batched products of
// src/backend/ops/weighted_svd/batched.rs (the driver) and cuda.rs.
//
// svd_chol_inv: CholeskyQR's r×r step for a batch of Gram matrices.
// svd_blend + svd_sum_partials: the EM blend X = Ω⊙W + (1−Ω)⊙A fused with the
// weighted objective Σ Ω (W − A)², reduced in a fixed order (per-block f64
// partial sums, then one block per matrix) — no floating-point atomics.
#include "common.cuh"

// One block per matrix of the batch; dynamic shared memory r·r floats.
// G = L·Lᵀ (lower triangle of G read), with the diagonal shifted by
// r·2⁻²⁰·max diag when `shift` (the first CholeskyQR pass) and pivots below
// r·2⁻²²·max diag treated as zero: their column of L and of L⁻¹ is zero, so
// the matching column of Q is zero instead of noise (or NaN). Writes
// Rinv = L⁻ᵀ (upper, row-major) and, when R is not null, R = Lᵀ.
// The host runs the same algorithm in f64 when r·r floats exceed 48 KB.
extern "C" __global__ void svd_chol_inv(const float* __restrict__ G, float* __restrict__ Rinv, float* __restrict__ R,
                                        int r, int shift) {
    DYNAMIC_SHARED(float, A);
    __shared__ float s_tol;
    const size_t off = (size_t)blockIdx.x * r * r;
    const int nt = blockDim.x, tid = threadIdx.x;
    for (int idx = tid; idx < r * r; idx += nt) {
        int i = idx / r, j = idx - i * r;
        A[idx] = j <= i ? G[off + idx] : 0.0f;
    }
    __syncthreads();
    if (tid == 0) {
        float maxd = 0.0f;
        for (int i = 0; i < r; i++) maxd = fmaxf(maxd, A[i * r + i]);
        float s = shift ? (float)r * 0x1p-20f * maxd : 0.0f;
        for (int i = 0; i < r; i++) A[i * r + i] += s;
        s_tol = (float)r * 0x1p-22f * maxd;
    }
    __syncthreads();
    const float tol = s_tol;
    for (int j = 0; j < r; j++) {
        const float d = A[j * r + j];
        const bool ok = d > tol;
        const float ljj = ok ? sqrtf(d) : 0.0f;
        const float inv = ok ? 1.0f / ljj : 0.0f;
        __syncthreads();  // everyone has read A[j][j]
        for (int i = j + 1 + tid; i < r; i += nt) A[i * r + j] *= inv;
        if (tid == 0) A[j * r + j] = ljj;
        __syncthreads();
        const int m = r - j - 1;
        for (int idx = tid; idx < m * m; idx += nt) {
            int ii = j + 1 + idx / m, kk = j + 1 + idx % m;
            if (kk <= ii) A[ii * r + kk] -= A[ii * r + j] * A[kk * r + j];
        }
        __syncthreads();
    }
    if (R) {
        for (int idx = tid; idx < r * r; idx += nt) {
            int i = idx / r, j = idx - i * r;
            R[off + idx] = j >= i ? A[j * r + i] : 0.0f;
        }
    }
    // Column c of L⁻¹ by forward substitution, kept as row c of Rinv = L⁻ᵀ:
    // each thread reads back only what it wrote itself.
    for (int c = tid; c < r; c += nt) {
        float* x = Rinv + off + (size_t)c * r;
        for (int i = 0; i < c; i++) x[i] = 0.0f;
        for (int i = c; i < r; i++) {
            float acc = i == c ? 1.0f : 0.0f;
            for (int k = c; k < i; k++) acc -= A[i * r + k] * x[k];
            const float lii = A[i * r + i];
            x[i] = lii != 0.0f ? acc / lii : 0.0f;
        }
    }
}

// The EM blend for a batch of matrices of `numel` entries (grid: blocks ×
// batch): XA = A on entry, X = mask ? W : ω·W + (1−ω)·A on exit (when
// write_x), and partial[b·gridDim.x + block] = Σ Ω (W − A)² over the block's
// fixed share. VEC: 4-wide accesses (numel % 4 == 0).
template <bool VEC>
__device__ void blend(const float* __restrict__ W, const unsigned char* __restrict__ M, float* __restrict__ XA,
                      unsigned long long numel, float omega, int write_x, double* __restrict__ partial) {
    __shared__ double scratch[32];
    const size_t base = (size_t)blockIdx.y * numel;
    const float om1 = 1.0f - omega;
    const double om = (double)omega;
    double acc = 0.0;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    const uint64_t first = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    auto one = [&](float w, unsigned char m, float& a) {
        const double d = (double)w - (double)a;
        acc += m ? d * d : om * d * d;
        if (write_x) a = m ? w : __fadd_rn(__fmul_rn(omega, w), __fmul_rn(om1, a));
    };
    if (VEC) {
        const float4* W4 = reinterpret_cast<const float4*>(W + base);
        const uchar4* M4 = reinterpret_cast<const uchar4*>(M + base);
        float4* X4 = reinterpret_cast<float4*>(XA + base);
        for (uint64_t v = first; v < numel / 4; v += stride) {
            float4 w = W4[v], a = X4[v];
            uchar4 m = M4[v];
            one(w.x, m.x, a.x);
            one(w.y, m.y, a.y);
            one(w.z, m.z, a.z);
            one(w.w, m.w, a.w);
            if (write_x) X4[v] = a;
        }
    } else {
        for (uint64_t i = first; i < numel; i += stride) {
            float a = XA[base + i];
            one(W[base + i], M[base + i], a);
            if (write_x) XA[base + i] = a;
        }
    }
    const double s = block_sum_f64(acc, scratch);
    if (threadIdx.x == 0) partial[(size_t)blockIdx.y * gridDim.x + blockIdx.x] = s;
}

extern "C" __global__ void svd_blend4(const float* W, const unsigned char* M, float* XA, unsigned long long numel,
                                      float omega, int write_x, double* partial) {
    blend<true>(W, M, XA, numel, omega, write_x, partial);
}

extern "C" __global__ void svd_blend1(const float* W, const unsigned char* M, float* XA, unsigned long long numel,
                                      float omega, int write_x, double* partial) {
    blend<false>(W, M, XA, numel, omega, write_x, partial);
}

// out[b] = Σ_i partial[b·n + i], one block per matrix, in a fixed order.
extern "C" __global__ void svd_sum_partials(const double* __restrict__ partial, int n, double* __restrict__ out) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partial[(size_t)blockIdx.x * n + i];
    const double s = block_sum_f64(acc, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}
