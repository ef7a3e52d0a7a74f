// Movement pruning (docs/algorithms.md §2, §6.1): the straight-through backward
// (`movement_grads`: grad_w += G⊙M and the scores' update G⊙W in one pass) and
// the soft-movement sigmoid mask.
//
// Every f32 operation is written with an explicit round-to-nearest intrinsic
// (__fmul_rn, __fadd_rn, ...) so nvcc cannot contract it into an FMA: the
// results equal the CPU reference (src/backend/ops/movement/cpu.rs) bit for bit.
// Memory-bound: one 16-byte access per tensor per thread and iteration.
#include "common.cuh"

// movement_element of the CPU reference.
__device__ __forceinline__ void movement(float w, float g, unsigned char m, float& gw, float& sc, int accumulate) {
    if (m) gw = __fadd_rn(gw, g);
    float gw_ = __fmul_rn(g, w);
    sc = accumulate ? __fsub_rn(sc, gw_) : __fadd_rn(sc, gw_);
}

#define F4(p, i) (reinterpret_cast<float4*>(p)[i])
#define CF4(p, i) (reinterpret_cast<const float4*>(p)[i])
#define CU4(p, i) (reinterpret_cast<const uchar4*>(p)[i])

extern "C" __global__ void movement_grads(const float* __restrict__ w, const float* __restrict__ g,
                                          const unsigned char* __restrict__ mask, float* __restrict__ grad_w,
                                          float* __restrict__ scores, unsigned long long n, int accumulate) {
    const uint64_t n4 = n >> 2;
    for (uint64_t v = global_thread(); v < n4; v += global_stride()) {
        float4 w4 = CF4(w, v), g4 = CF4(g, v), a = F4(grad_w, v), s = F4(scores, v);
        uchar4 m4 = CU4(mask, v);
        movement(w4.x, g4.x, m4.x, a.x, s.x, accumulate);
        movement(w4.y, g4.y, m4.y, a.y, s.y, accumulate);
        movement(w4.z, g4.z, m4.z, a.z, s.z, accumulate);
        movement(w4.w, g4.w, m4.w, a.w, s.w, accumulate);
        F4(grad_w, v) = a;
        F4(scores, v) = s;
    }
    // The last n % 4 elements.
    if (blockIdx.x == 0 && threadIdx.x < (n & 3)) {
        uint64_t i = (n4 << 2) + threadIdx.x;
        movement(w[i], g[i], mask[i], grad_w[i], scores[i], accumulate);
    }
}

// Soft movement: mask = (double)x > logit, and dscores += coef·σ(x)(1−σ(x)).
// `count` (one u64) receives the number of kept entries (integer atomics).
extern "C" __global__ void sigmoid_mask(const float* __restrict__ x, unsigned char* __restrict__ mask,
                                        float* __restrict__ ds, unsigned long long n, unsigned long long logit_bits,
                                        float coef, unsigned long long* __restrict__ count) {
    const double logit = __longlong_as_double((long long)logit_bits);
    unsigned int kept = 0;
    for (uint64_t i = global_thread(); i < n; i += global_stride()) {
        float xi = x[i];
        bool k = (double)xi > logit;
        mask[i] = k ? 1 : 0;
        kept += k;
        if (ds) {
            float s = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-xi)));
            ds[i] = __fadd_rn(ds[i], __fmul_rn(__fmul_rn(coef, s), __fsub_rn(1.0f, s)));
        }
    }
    // Warp totals, one atomic per warp.
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) kept += __shfl_xor_sync(FULL_MASK, kept, o);
    if ((threadIdx.x & 31) == 0 && kept) atomicAdd(count, (unsigned long long)kept);
}
