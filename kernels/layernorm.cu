// LayerNorm over the last dimension: forward (y, mean, rstd) and backward
// (dx, and dgamma / dbeta accumulated deterministically).
//
// Row kernels: one warp per row, 256-thread blocks (8 rows per block),
// grid-stride over rows, so any grid is correct. Statistics are two-pass in
// f32 like the CPU (mean, then the mean of squared deviations), reduced with
// xor shuffles. The x4 variants (cols % 4 == 0 and cols <= 1024) keep the row
// in registers (up to 8 float4 per lane) and read it from memory once; the
// generic variants re-read the row (it stays in L1) and take any width.
//
// dgamma / dbeta: per-chunk column partials (block (32, 8) as in reduce.cu,
// fixed chunks chosen on the host), then a finalize kernel adding the chunks
// in order. No floating-point atomics.

#include "common.cuh"

#define LN_MAXV 8  // float4 per lane in the register-cached kernels: cols <= 1024

// ---- forward --------------------------------------------------------------------

KERNEL void layer_norm_fwd_f32x4(const float* __restrict__ x, const float* __restrict__ gamma,
                                 const float* __restrict__ beta, float* __restrict__ y, float* __restrict__ mean,
                                 float* __restrict__ rstd, u64 rows, u32 cols, float eps) {
    const u32 lane = threadIdx.x & 31;
    const u64 wpb = blockDim.x >> 5;
    const u64 wstride = (u64)gridDim.x * wpb;
    const u32 cols4 = cols >> 2;
    const float fcols = (float)cols;
    const float4* g4 = reinterpret_cast<const float4*>(gamma);
    const float4* b4 = reinterpret_cast<const float4*>(beta);
    for (u64 row = (u64)blockIdx.x * wpb + (threadIdx.x >> 5); row < rows; row += wstride) {
        const float4* xr = reinterpret_cast<const float4*>(x + row * cols);
        float4* yr = reinterpret_cast<float4*>(y + row * cols);
        float4 v[LN_MAXV];
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < LN_MAXV; ++k) {
            const u32 c = lane + 32u * k;
            v[k] = f4_zero();
            if (c < cols4) {
                v[k] = xr[c];
                s += (v[k].x + v[k].y) + (v[k].z + v[k].w);
            }
        }
        const float mu = __fdiv_rn(warp_sum(s), fcols);
        float q = 0.0f;
#pragma unroll
        for (int k = 0; k < LN_MAXV; ++k) {
            const u32 c = lane + 32u * k;
            if (c < cols4) {
                const float dx = v[k].x - mu, dy = v[k].y - mu, dz = v[k].z - mu, dw = v[k].w - mu;
                q += (dx * dx + dy * dy) + (dz * dz + dw * dw);
            }
        }
        const float var = __fdiv_rn(warp_sum(q), fcols);
        const float rs = __fdiv_rn(1.0f, __fsqrt_rn(var + eps));
#pragma unroll
        for (int k = 0; k < LN_MAXV; ++k) {
            const u32 c = lane + 32u * k;
            if (c < cols4) {
                const float4 g = g4[c];
                const float4 b = b4[c];
                float4 o;
                o.x = __fadd_rn(__fmul_rn(__fmul_rn(v[k].x - mu, rs), g.x), b.x);
                o.y = __fadd_rn(__fmul_rn(__fmul_rn(v[k].y - mu, rs), g.y), b.y);
                o.z = __fadd_rn(__fmul_rn(__fmul_rn(v[k].z - mu, rs), g.z), b.z);
                o.w = __fadd_rn(__fmul_rn(__fmul_rn(v[k].w - mu, rs), g.w), b.w);
                yr[c] = o;
            }
        }
        if (lane == 0) {
            mean[row] = mu;
            rstd[row] = rs;
        }
    }
}

KERNEL void layer_norm_fwd_f32(const float* __restrict__ x, const float* __restrict__ gamma,
                               const float* __restrict__ beta, float* __restrict__ y, float* __restrict__ mean,
                               float* __restrict__ rstd, u64 rows, u64 cols, float eps) {
    const u32 lane = threadIdx.x & 31;
    const u64 wpb = blockDim.x >> 5;
    const u64 wstride = (u64)gridDim.x * wpb;
    const float fcols = (float)cols;
    for (u64 row = (u64)blockIdx.x * wpb + (threadIdx.x >> 5); row < rows; row += wstride) {
        const float* xr = x + row * cols;
        float* yr = y + row * cols;
        float s = 0.0f;
        for (u64 c = lane; c < cols; c += 32) s += xr[c];
        const float mu = __fdiv_rn(warp_sum(s), fcols);
        float q = 0.0f;
        for (u64 c = lane; c < cols; c += 32) {
            const float d = xr[c] - mu;
            q += d * d;
        }
        const float var = __fdiv_rn(warp_sum(q), fcols);
        const float rs = __fdiv_rn(1.0f, __fsqrt_rn(var + eps));
        for (u64 c = lane; c < cols; c += 32) {
            yr[c] = __fadd_rn(__fmul_rn(__fmul_rn(xr[c] - mu, rs), gamma[c]), beta[c]);
        }
        if (lane == 0) {
            mean[row] = mu;
            rstd[row] = rs;
        }
    }
}

// ---- backward: dx ---------------------------------------------------------------
// dx = rstd · (dyg − Σdyg/n − x̂ · Σ(dyg·x̂)/n) with dyg = dy·γ, x̂ = (x − μ)·rstd.

KERNEL void layer_norm_bwd_dx_f32x4(const float* __restrict__ dy, const float* __restrict__ x,
                                    const float* __restrict__ gamma, const float* __restrict__ mean,
                                    const float* __restrict__ rstd, float* __restrict__ dx, u64 rows, u32 cols) {
    const u32 lane = threadIdx.x & 31;
    const u64 wpb = blockDim.x >> 5;
    const u64 wstride = (u64)gridDim.x * wpb;
    const u32 cols4 = cols >> 2;
    const float inv_n = __fdiv_rn(1.0f, (float)cols);
    const float4* g4 = reinterpret_cast<const float4*>(gamma);
    for (u64 row = (u64)blockIdx.x * wpb + (threadIdx.x >> 5); row < rows; row += wstride) {
        const float4* xr = reinterpret_cast<const float4*>(x + row * cols);
        const float4* dyr = reinterpret_cast<const float4*>(dy + row * cols);
        float4* dxr = reinterpret_cast<float4*>(dx + row * cols);
        const float mu = mean[row];
        const float rsd = rstd[row];
        float4 xh[LN_MAXV];
        float4 dg[LN_MAXV];
        float s1 = 0.0f;
        float s2 = 0.0f;
#pragma unroll
        for (int k = 0; k < LN_MAXV; ++k) {
            const u32 c = lane + 32u * k;
            xh[k] = f4_zero();
            dg[k] = f4_zero();
            if (c < cols4) {
                const float4 xv = xr[c];
                const float4 dv = dyr[c];
                const float4 g = g4[c];
                xh[k] = make_float4(__fmul_rn(xv.x - mu, rsd), __fmul_rn(xv.y - mu, rsd),
                                    __fmul_rn(xv.z - mu, rsd), __fmul_rn(xv.w - mu, rsd));
                dg[k] = make_float4(dv.x * g.x, dv.y * g.y, dv.z * g.z, dv.w * g.w);
                s1 += (dg[k].x + dg[k].y) + (dg[k].z + dg[k].w);
                s2 += (dg[k].x * xh[k].x + dg[k].y * xh[k].y) + (dg[k].z * xh[k].z + dg[k].w * xh[k].w);
            }
        }
        const float a = __fmul_rn(inv_n, warp_sum(s1));
        const float sb = warp_sum(s2);
#pragma unroll
        for (int k = 0; k < LN_MAXV; ++k) {
            const u32 c = lane + 32u * k;
            if (c < cols4) {
                float4 o;
                o.x = __fmul_rn(rsd, __fsub_rn(__fsub_rn(dg[k].x, a), __fmul_rn(__fmul_rn(xh[k].x, inv_n), sb)));
                o.y = __fmul_rn(rsd, __fsub_rn(__fsub_rn(dg[k].y, a), __fmul_rn(__fmul_rn(xh[k].y, inv_n), sb)));
                o.z = __fmul_rn(rsd, __fsub_rn(__fsub_rn(dg[k].z, a), __fmul_rn(__fmul_rn(xh[k].z, inv_n), sb)));
                o.w = __fmul_rn(rsd, __fsub_rn(__fsub_rn(dg[k].w, a), __fmul_rn(__fmul_rn(xh[k].w, inv_n), sb)));
                dxr[c] = o;
            }
        }
    }
}

KERNEL void layer_norm_bwd_dx_f32(const float* __restrict__ dy, const float* __restrict__ x,
                                  const float* __restrict__ gamma, const float* __restrict__ mean,
                                  const float* __restrict__ rstd, float* __restrict__ dx, u64 rows, u64 cols) {
    const u32 lane = threadIdx.x & 31;
    const u64 wpb = blockDim.x >> 5;
    const u64 wstride = (u64)gridDim.x * wpb;
    const float inv_n = __fdiv_rn(1.0f, (float)cols);
    for (u64 row = (u64)blockIdx.x * wpb + (threadIdx.x >> 5); row < rows; row += wstride) {
        const float* xr = x + row * cols;
        const float* dyr = dy + row * cols;
        float* dxr = dx + row * cols;
        const float mu = mean[row];
        const float rsd = rstd[row];
        float s1 = 0.0f;
        float s2 = 0.0f;
        for (u64 c = lane; c < cols; c += 32) {
            const float xh = __fmul_rn(xr[c] - mu, rsd);
            const float dg = dyr[c] * gamma[c];
            s1 += dg;
            s2 += dg * xh;
        }
        const float a = __fmul_rn(inv_n, warp_sum(s1));
        const float sb = warp_sum(s2);
        for (u64 c = lane; c < cols; c += 32) {
            const float xh = __fmul_rn(xr[c] - mu, rsd);
            const float dg = dyr[c] * gamma[c];
            dxr[c] = __fmul_rn(rsd, __fsub_rn(__fsub_rn(dg, a), __fmul_rn(__fmul_rn(xh, inv_n), sb)));
        }
    }
}

// ---- backward: dgamma / dbeta partials ------------------------------------------
// pg[chunk·cols + c] = Σ_{r in chunk} dy·x̂, pb[chunk·cols + c] = Σ_{r in chunk} dy.
// Block (32, 8), grid (ceil(cols / 32), nchunks) in the kernel's column units.

#define LNP_TX 32
#define LNP_TY 8

KERNEL void ln_param_partials_f32(const float* __restrict__ dy, const float* __restrict__ x,
                                  const float* __restrict__ mean, const float* __restrict__ rstd,
                                  float* __restrict__ pg, float* __restrict__ pb, u64 rows, u64 cols,
                                  u64 rows_per_chunk) {
    __shared__ float shg[LNP_TY][LNP_TX];
    __shared__ float shb[LNP_TY][LNP_TX];
    const u32 tx = threadIdx.x;
    const u32 ty = threadIdx.y;
    const u64 c = (u64)blockIdx.x * LNP_TX + tx;
    const u64 chunk = blockIdx.y;
    const u64 r0 = chunk * rows_per_chunk;
    const u64 r1 = min(r0 + rows_per_chunk, rows);
    float ag = 0.0f;
    float ab = 0.0f;
    if (c < cols) {
        for (u64 r = r0 + ty; r < r1; r += LNP_TY) {
            const float d = dy[r * cols + c];
            const float xh = __fmul_rn(x[r * cols + c] - mean[r], rstd[r]);
            ag += d * xh;
            ab += d;
        }
    }
    shg[ty][tx] = ag;
    shb[ty][tx] = ab;
    __syncthreads();
    if (ty == 0 && c < cols) {
        float sg = shg[0][tx];
        float sb = shb[0][tx];
#pragma unroll
        for (int k = 1; k < LNP_TY; ++k) {
            sg += shg[k][tx];
            sb += shb[k][tx];
        }
        pg[chunk * cols + c] = sg;
        pb[chunk * cols + c] = sb;
    }
}

// float4 units: cols4 = cols / 4; partials keep the element layout.
KERNEL void ln_param_partials_f32x4(const float* __restrict__ dy, const float* __restrict__ x,
                                    const float* __restrict__ mean, const float* __restrict__ rstd,
                                    float* __restrict__ pg, float* __restrict__ pb, u64 rows, u64 cols4,
                                    u64 rows_per_chunk) {
    __shared__ float4 shg[LNP_TY][LNP_TX];
    __shared__ float4 shb[LNP_TY][LNP_TX];
    const u32 tx = threadIdx.x;
    const u32 ty = threadIdx.y;
    const u64 c = (u64)blockIdx.x * LNP_TX + tx;
    const u64 chunk = blockIdx.y;
    const u64 r0 = chunk * rows_per_chunk;
    const u64 r1 = min(r0 + rows_per_chunk, rows);
    const float4* dy4 = reinterpret_cast<const float4*>(dy);
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4 ag = f4_zero();
    float4 ab = f4_zero();
    if (c < cols4) {
        for (u64 r = r0 + ty; r < r1; r += LNP_TY) {
            const float4 d = dy4[r * cols4 + c];
            const float4 xv = x4[r * cols4 + c];
            const float m = mean[r];
            const float rs = rstd[r];
            ag.x += d.x * __fmul_rn(xv.x - m, rs);
            ag.y += d.y * __fmul_rn(xv.y - m, rs);
            ag.z += d.z * __fmul_rn(xv.z - m, rs);
            ag.w += d.w * __fmul_rn(xv.w - m, rs);
            ab = f4_add(ab, d);
        }
    }
    shg[ty][tx] = ag;
    shb[ty][tx] = ab;
    __syncthreads();
    if (ty == 0 && c < cols4) {
        float4 sg = shg[0][tx];
        float4 sb = shb[0][tx];
#pragma unroll
        for (int k = 1; k < LNP_TY; ++k) {
            sg = f4_add(sg, shg[k][tx]);
            sb = f4_add(sb, shb[k][tx]);
        }
        reinterpret_cast<float4*>(pg)[chunk * cols4 + c] = sg;
        reinterpret_cast<float4*>(pb)[chunk * cols4 + c] = sb;
    }
}

// dgamma[c] += Σ_k pg[k·cols + c], dbeta[c] += Σ_k pb[k·cols + c], k in order.
KERNEL void ln_param_finalize_f32(const float* __restrict__ pg, const float* __restrict__ pb,
                                  float* __restrict__ dgamma, float* __restrict__ dbeta, u64 cols, u64 nchunks) {
    const u64 stride = global_stride();
    for (u64 c = global_thread(); c < cols; c += stride) {
        float sg = pg[c];
        float sb = pb[c];
        for (u64 k = 1; k < nchunks; ++k) {
            sg += pg[k * cols + c];
            sb += pb[k * cols + c];
        }
        dgamma[c] += sg;
        dbeta[c] += sb;
    }
}
