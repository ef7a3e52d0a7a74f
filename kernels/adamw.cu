// AdamW in one fused pass over (p, g, m, v), in exactly the order of
// adamw_element (src/backend/ops/adamw/cpu.rs), i.e. torch.optim.AdamW's
// single-tensor path:
//   g = grad·grad_scale
//   p = p·decay                      (decay = 1 − lr·wd)
//   m = m + (g − m)·(1 − β1)
//   v = v·β2 + (1 − β2)·g·g
//   p = p − step_size·m / (√v / √bc2 + eps)   (step_size = lr / bc1)
// Every scalar is computed on the host in f32 as the CPU computes it, and
// every operation here is an explicitly rounded one (no FMA contraction), so
// the update is bit-identical to the CPU's. 1-D launch, any grid.

#include "common.cuh"

struct AdamWArgs {
    float grad_scale, decay, one_minus_beta1, beta2, one_minus_beta2, eps, step_size, bc2_sqrt;
};

__device__ __forceinline__ void adamw_one(float& p, float grad, float& m, float& v, const AdamWArgs& a) {
    const float g = __fmul_rn(grad, a.grad_scale);
    p = __fmul_rn(p, a.decay);
    m = __fadd_rn(m, __fmul_rn(__fsub_rn(g, m), a.one_minus_beta1));
    v = __fadd_rn(__fmul_rn(v, a.beta2), __fmul_rn(__fmul_rn(a.one_minus_beta2, g), g));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), a.bc2_sqrt), a.eps);
    p = __fsub_rn(p, __fdiv_rn(__fmul_rn(a.step_size, m), denom));
}

KERNEL void adamw_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                      float* __restrict__ v, u64 n, float grad_scale, float decay, float one_minus_beta1, float beta2,
                      float one_minus_beta2, float eps, float step_size, float bc2_sqrt) {
    const AdamWArgs a = {grad_scale, decay, one_minus_beta1, beta2, one_minus_beta2, eps, step_size, bc2_sqrt};
    const u64 n4 = n >> 2;
    const u64 start = global_thread();
    const u64 stride = global_stride();
    float4* p4 = reinterpret_cast<float4*>(p);
    const float4* g4 = reinterpret_cast<const float4*>(g);
    float4* m4 = reinterpret_cast<float4*>(m);
    float4* v4 = reinterpret_cast<float4*>(v);
    for (u64 i = start; i < n4; i += stride) {
        float4 pp = p4[i];
        const float4 gg = g4[i];
        float4 mm = m4[i];
        float4 vv = v4[i];
        adamw_one(pp.x, gg.x, mm.x, vv.x, a);
        adamw_one(pp.y, gg.y, mm.y, vv.y, a);
        adamw_one(pp.z, gg.z, mm.z, vv.z, a);
        adamw_one(pp.w, gg.w, mm.w, vv.w, a);
        p4[i] = pp;
        m4[i] = mm;
        v4[i] = vv;
    }
    for (u64 i = (n4 << 2) + start; i < n; i += stride) {
        float pp = p[i];
        float mm = m[i];
        float vv = v[i];
        adamw_one(pp, g[i], mm, vv, a);
        p[i] = pp;
        m[i] = mm;
        v[i] = vv;
    }
}

// ---- every parameter in one launch ---------------------------------------------
// One entry per parameter: its four tensors, its blocks of the grid and its
// scalars (per parameter: learning rate and weight decay differ by group).
// Each element is updated by adamw_one with its entry's scalars, so the
// result is bit-identical to one adamw_f32 launch per parameter.
struct AdamWEntry {
    float* p;
    const float* g;
    float* m;
    float* v;
    u64 n;
    u32 first_block;
    u32 blocks;
    AdamWArgs a;
};

KERNEL void adamw_many_f32(const AdamWEntry* __restrict__ entries, u32 count) {
    const EntrySpan sp = entry_span(entries, count);
    const AdamWEntry e = entries[sp.entry];
    const u64 start = sp.start;
    const u64 stride = sp.stride;
    const u64 n4 = e.n >> 2;
    float4* p4 = reinterpret_cast<float4*>(e.p);
    const float4* g4 = reinterpret_cast<const float4*>(e.g);
    float4* m4 = reinterpret_cast<float4*>(e.m);
    float4* v4 = reinterpret_cast<float4*>(e.v);
    for (u64 i = start; i < n4; i += stride) {
        float4 pp = p4[i];
        const float4 gg = g4[i];
        float4 mm = m4[i];
        float4 vv = v4[i];
        adamw_one(pp.x, gg.x, mm.x, vv.x, e.a);
        adamw_one(pp.y, gg.y, mm.y, vv.y, e.a);
        adamw_one(pp.z, gg.z, mm.z, vv.z, e.a);
        adamw_one(pp.w, gg.w, mm.w, vv.w, e.a);
        p4[i] = pp;
        m4[i] = mm;
        v4[i] = vv;
    }
    for (u64 i = (n4 << 2) + start; i < e.n; i += stride) {
        float pp = e.p[i];
        float mm = e.m[i];
        float vv = e.v[i];
        adamw_one(pp, e.g[i], mm, vv, e.a);
        e.p[i] = pp;
        e.m[i] = mm;
        e.v[i] = vv;
    }
}
