// LoSparse's sensitivity importance (docs/algorithms.md §5, §6.1): the update
// of Ī and Ū from |S⊙∇S|, alone or fused with AdamW on S (one pass).
//
// Every f32 operation is written with an explicit round-to-nearest intrinsic
// (__fmul_rn, __fadd_rn, ...) so nvcc cannot contract it into an FMA: the
// results equal the CPU reference (src/backend/ops/losparse_importance/cpu.rs)
// bit for bit. Memory-bound: one 16-byte access per tensor per thread and iteration.
#include "common.cuh"

struct ImpParams {
    float count, count_m1;
    int first, close;
    float b1, omb1, b2, omb2;
};

// importance_element of the CPU reference.
__device__ __forceinline__ void importance(float s, float g, float& ipt, float& ibar, float& ubar, bool has_ubar,
                                           const ImpParams& p) {
    float imp = fabsf(__fmul_rn(s, g));
    ipt = p.first ? imp : __fdiv_rn(__fadd_rn(__fmul_rn(p.count_m1, ipt), imp), p.count);
    if (p.close) {
        ibar = __fadd_rn(__fmul_rn(p.b1, ibar), __fmul_rn(p.omb1, ipt));
        if (has_ubar) ubar = __fadd_rn(__fmul_rn(p.b2, ubar), __fmul_rn(p.omb2, fabsf(__fsub_rn(ipt, ibar))));
    }
}

#define F4(p, i) (reinterpret_cast<float4*>(p)[i])
#define CF4(p, i) (reinterpret_cast<const float4*>(p)[i])
#define CU4(p, i) (reinterpret_cast<const uchar4*>(p)[i])

// One element: loads only what the step reads (ipt when count > 1, Ī and Ū
// when the window closes).
__device__ __forceinline__ void importance_at(uint64_t i, float s, float g, float* ipt, float* ibar, float* ubar,
                                              const ImpParams& p) {
    float ip = p.first ? 0.0f : ipt[i];
    float ib = 0.0f, ub = 0.0f;
    if (p.close) {
        ib = ibar[i];
        if (ubar) ub = ubar[i];
    }
    importance(s, g, ip, ib, ub, ubar != nullptr, p);
    ipt[i] = ip;
    if (p.close) {
        ibar[i] = ib;
        if (ubar) ubar[i] = ub;
    }
}

// Vectorised form of importance_at for elements 4v..4v+3.
__device__ __forceinline__ void importance4(uint64_t v, float4 s, float4 g, float* ipt, float* ibar, float* ubar,
                                            const ImpParams& p) {
    const bool hu = ubar != nullptr;
    float4 ip = p.first ? make_float4(0.f, 0.f, 0.f, 0.f) : F4(ipt, v);
    float4 ib = make_float4(0.f, 0.f, 0.f, 0.f), ub = ib;
    if (p.close) {
        ib = F4(ibar, v);
        if (hu) ub = F4(ubar, v);
    }
    importance(s.x, g.x, ip.x, ib.x, ub.x, hu, p);
    importance(s.y, g.y, ip.y, ib.y, ub.y, hu, p);
    importance(s.z, g.z, ip.z, ib.z, ub.z, hu, p);
    importance(s.w, g.w, ip.w, ib.w, ub.w, hu, p);
    F4(ipt, v) = ip;
    if (p.close) {
        F4(ibar, v) = ib;
        if (hu) F4(ubar, v) = ub;
    }
}

extern "C" __global__ void losparse_importance(const float* __restrict__ s, const float* __restrict__ g,
                                               float* __restrict__ ipt, float* __restrict__ ibar,
                                               float* __restrict__ ubar, unsigned long long n, float count,
                                               float count_m1, int first, int close, float b1, float omb1, float b2,
                                               float omb2) {
    const ImpParams p{count, count_m1, first, close, b1, omb1, b2, omb2};
    const uint64_t n4 = n >> 2;
    for (uint64_t v = global_thread(); v < n4; v += global_stride()) importance4(v, CF4(s, v), CF4(g, v), ipt, ibar, ubar, p);
    if (blockIdx.x == 0 && threadIdx.x < (n & 3)) {
        uint64_t i = (n4 << 2) + threadIdx.x;
        importance_at(i, s[i], g[i], ipt, ibar, ubar, p);
    }
}

// adamw_element of the CPU reference (torch.optim.AdamW's order).
__device__ __forceinline__ float adamw(float& p, float grad, float& m, float& v, float grad_scale, float decay,
                                       float omb1, float b2, float omb2, float step_size, float bc2_sqrt, float eps) {
    float g = __fmul_rn(grad, grad_scale);
    p = __fmul_rn(p, decay);
    m = __fadd_rn(m, __fmul_rn(__fsub_rn(g, m), omb1));
    v = __fadd_rn(__fmul_rn(v, b2), __fmul_rn(__fmul_rn(omb2, g), g));
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), bc2_sqrt), eps);
    p = __fsub_rn(p, __fdiv_rn(__fmul_rn(step_size, m), denom));
    return g;  // the gradient AdamW used, for the importance
}

// AdamW on S, then the importance with the updated S and the scaled gradient,
// in one pass over S, ∇S, m, v, ipt (and Ī, Ū when the window closes).
extern "C" __global__ void adamw_importance(float* __restrict__ s, const float* __restrict__ grad,
                                            float* __restrict__ m, float* __restrict__ v, float* __restrict__ ipt,
                                            float* __restrict__ ibar, float* __restrict__ ubar, unsigned long long n,
                                            float grad_scale, float decay, float a_omb1, float a_b2, float a_omb2,
                                            float step_size, float bc2_sqrt, float eps, float count, float count_m1,
                                            int first, int close, float b1, float omb1, float b2, float omb2) {
    const ImpParams p{count, count_m1, first, close, b1, omb1, b2, omb2};
    const uint64_t n4 = n >> 2;
    for (uint64_t i = global_thread(); i < n4; i += global_stride()) {
        float4 s4 = F4(s, i), g4 = CF4(grad, i), m4 = F4(m, i), v4 = F4(v, i), gs;
        gs.x = adamw(s4.x, g4.x, m4.x, v4.x, grad_scale, decay, a_omb1, a_b2, a_omb2, step_size, bc2_sqrt, eps);
        gs.y = adamw(s4.y, g4.y, m4.y, v4.y, grad_scale, decay, a_omb1, a_b2, a_omb2, step_size, bc2_sqrt, eps);
        gs.z = adamw(s4.z, g4.z, m4.z, v4.z, grad_scale, decay, a_omb1, a_b2, a_omb2, step_size, bc2_sqrt, eps);
        gs.w = adamw(s4.w, g4.w, m4.w, v4.w, grad_scale, decay, a_omb1, a_b2, a_omb2, step_size, bc2_sqrt, eps);
        F4(s, i) = s4;
        F4(m, i) = m4;
        F4(v, i) = v4;
        importance4(i, s4, gs, ipt, ibar, ubar, p);
    }
    if (blockIdx.x == 0 && threadIdx.x < (n & 3)) {
        uint64_t i = (n4 << 2) + threadIdx.x;
        float sv = s[i], mv = m[i], vv = v[i];
        float gs = adamw(sv, grad[i], mv, vv, grad_scale, decay, a_omb1, a_b2, a_omb2, step_size, bc2_sqrt, eps);
        s[i] = sv;
        m[i] = mv;
        v[i] = vv;
        importance_at(i, sv, gs, ipt, ibar, ubar, p);
    }
}
