// Elementwise kernels: fill, cast, axpby, scale, mul_mask, add_row_bias,
// GELU, tanh, dropout, copy_rows.
//
// All are memory-bound grid-stride loops over 16-byte vectors (float4 /
// uint4 / uchar4 views of whole, 256-byte aligned buffers) followed by a
// scalar tail of at most 3 (or 7, 15) elements. Launch: 1-D, 256 threads,
// any number of blocks (results do not depend on the grid). The row-wise
// ones (add_row_bias, copy_rows) are 2-D: x over columns, y over rows, with
// float4 variants when every size and offset is a multiple of 4.
//
// Arithmetic that the CPU reference writes as `a*b + c` uses __fmul_rn /
// __fadd_rn so that nvcc does not contract it into an FMA: the results then
// round exactly like the CPU's.

#include "common.cuh"

// ---- map helpers ------------------------------------------------------------

template <class T>
__device__ __forceinline__ T add_any(T a, T b);
template <>
__device__ __forceinline__ float add_any<float>(float a, float b) { return a + b; }
template <>
__device__ __forceinline__ float4 add_any<float4>(float4 a, float4 b) { return f4_add(a, b); }

template <class F>
__device__ __forceinline__ void map_unary(const float* __restrict__ x, float* __restrict__ y, u64 n, F f) {
    const u64 n4 = n >> 2;
    const u64 start = global_thread();
    const u64 stride = global_stride();
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* y4 = reinterpret_cast<float4*>(y);
    for (u64 i = start; i < n4; i += stride) {
        const float4 v = x4[i];
        y4[i] = make_float4(f(v.x), f(v.y), f(v.z), f(v.w));
    }
    for (u64 i = (n4 << 2) + start; i < n; i += stride) y[i] = f(x[i]);
}

template <class F>
__device__ __forceinline__ void map_binary(const float* __restrict__ a, const float* __restrict__ b,
                                           float* __restrict__ y, u64 n, F f) {
    const u64 n4 = n >> 2;
    const u64 start = global_thread();
    const u64 stride = global_stride();
    const float4* a4 = reinterpret_cast<const float4*>(a);
    const float4* b4 = reinterpret_cast<const float4*>(b);
    float4* y4 = reinterpret_cast<float4*>(y);
    for (u64 i = start; i < n4; i += stride) {
        const float4 u = a4[i];
        const float4 v = b4[i];
        y4[i] = make_float4(f(u.x, v.x), f(u.y, v.y), f(u.z, v.z), f(u.w, v.w));
    }
    for (u64 i = (n4 << 2) + start; i < n; i += stride) y[i] = f(a[i], b[i]);
}

// ---- fill -------------------------------------------------------------------

// Fills n 32-bit words (F32 / I32 bit patterns computed on the host).
KERNEL void fill_u32(u32* __restrict__ p, u64 n, u32 v) {
    const u64 n4 = n >> 2;
    const u64 start = global_thread();
    const u64 stride = global_stride();
    uint4* p4 = reinterpret_cast<uint4*>(p);
    const uint4 w = make_uint4(v, v, v, v);
    for (u64 i = start; i < n4; i += stride) p4[i] = w;
    for (u64 i = (n4 << 2) + start; i < n; i += stride) p[i] = v;
}

// Fills n 16-bit words (BF16 bit pattern computed on the host).
KERNEL void fill_u16(u16* __restrict__ p, u64 n, u32 v) {
    const u64 n8 = n >> 3;
    const u64 start = global_thread();
    const u64 stride = global_stride();
    uint4* p8 = reinterpret_cast<uint4*>(p);
    const u32 pair = (v & 0xFFFFu) | ((v & 0xFFFFu) << 16);
    const uint4 w = make_uint4(pair, pair, pair, pair);
    for (u64 i = start; i < n8; i += stride) p8[i] = w;
    for (u64 i = (n8 << 3) + start; i < n; i += stride) p[i] = (u16)v;
}

// Fills n bytes (U8 value computed on the host).
KERNEL void fill_u8(u8* __restrict__ p, u64 n, u32 v) {
    const u64 n16 = n >> 4;
    const u64 start = global_thread();
    const u64 stride = global_stride();
    uint4* p16 = reinterpret_cast<uint4*>(p);
    const u32 quad = (v & 0xFFu) * 0x01010101u;
    const uint4 w = make_uint4(quad, quad, quad, quad);
    for (u64 i = start; i < n16; i += stride) p16[i] = w;
    for (u64 i = (n16 << 4) + start; i < n; i += stride) p[i] = (u8)v;
}

// ---- cast -------------------------------------------------------------------

KERNEL void cast_f32_bf16(const float* __restrict__ x, u16* __restrict__ y, u64 n) {
    const u64 n4 = n >> 2;
    const u64 start = global_thread();
    const u64 stride = global_stride();
    const float4* x4 = reinterpret_cast<const float4*>(x);
    uint2* y4 = reinterpret_cast<uint2*>(y);
    for (u64 i = start; i < n4; i += stride) {
        const float4 v = x4[i];
        const u32 lo = (u32)f32_to_bf16_bits(v.x) | ((u32)f32_to_bf16_bits(v.y) << 16);
        const u32 hi = (u32)f32_to_bf16_bits(v.z) | ((u32)f32_to_bf16_bits(v.w) << 16);
        y4[i] = make_uint2(lo, hi);
    }
    for (u64 i = (n4 << 2) + start; i < n; i += stride) y[i] = f32_to_bf16_bits(x[i]);
}

KERNEL void cast_bf16_f32(const u16* __restrict__ x, float* __restrict__ y, u64 n) {
    const u64 n4 = n >> 2;
    const u64 start = global_thread();
    const u64 stride = global_stride();
    const uint2* x4 = reinterpret_cast<const uint2*>(x);
    float4* y4 = reinterpret_cast<float4*>(y);
    for (u64 i = start; i < n4; i += stride) {
        const uint2 v = x4[i];
        y4[i] = make_float4(bf16_bits_to_f32((u16)(v.x & 0xFFFFu)), bf16_bits_to_f32((u16)(v.x >> 16)),
                            bf16_bits_to_f32((u16)(v.y & 0xFFFFu)), bf16_bits_to_f32((u16)(v.y >> 16)));
    }
    for (u64 i = (n4 << 2) + start; i < n; i += stride) y[i] = bf16_bits_to_f32(x[i]);
}

KERNEL void cast_u8_f32(const u8* __restrict__ x, float* __restrict__ y, u64 n) {
    const u64 n4 = n >> 2;
    const u64 start = global_thread();
    const u64 stride = global_stride();
    const uchar4* x4 = reinterpret_cast<const uchar4*>(x);
    float4* y4 = reinterpret_cast<float4*>(y);
    for (u64 i = start; i < n4; i += stride) {
        const uchar4 v = x4[i];
        y4[i] = make_float4((float)v.x, (float)v.y, (float)v.z, (float)v.w);
    }
    for (u64 i = (n4 << 2) + start; i < n; i += stride) y[i] = (float)x[i];
}

// ---- linear combinations ----------------------------------------------------

// y = alpha·x + beta·y; with use_beta = 0, y = alpha·x and y is not read
// (so NaN garbage in y does not leak through beta = 0).
KERNEL void axpby_f32(const float* __restrict__ x, float* __restrict__ y, u64 n, float alpha, float beta,
                      u32 use_beta) {
    const u64 n4 = n >> 2;
    const u64 start = global_thread();
    const u64 stride = global_stride();
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* y4 = reinterpret_cast<float4*>(y);
    if (use_beta) {
        for (u64 i = start; i < n4; i += stride) {
            const float4 a = x4[i];
            const float4 b = y4[i];
            y4[i] = make_float4(__fadd_rn(__fmul_rn(alpha, a.x), __fmul_rn(beta, b.x)),
                                __fadd_rn(__fmul_rn(alpha, a.y), __fmul_rn(beta, b.y)),
                                __fadd_rn(__fmul_rn(alpha, a.z), __fmul_rn(beta, b.z)),
                                __fadd_rn(__fmul_rn(alpha, a.w), __fmul_rn(beta, b.w)));
        }
        for (u64 i = (n4 << 2) + start; i < n; i += stride) {
            y[i] = __fadd_rn(__fmul_rn(alpha, x[i]), __fmul_rn(beta, y[i]));
        }
    } else {
        for (u64 i = start; i < n4; i += stride) {
            const float4 a = x4[i];
            y4[i] = make_float4(alpha * a.x, alpha * a.y, alpha * a.z, alpha * a.w);
        }
        for (u64 i = (n4 << 2) + start; i < n; i += stride) y[i] = alpha * x[i];
    }
}

KERNEL void scale_f32(float* __restrict__ t, u64 n, float alpha) {
    const u64 n4 = n >> 2;
    const u64 start = global_thread();
    const u64 stride = global_stride();
    float4* t4 = reinterpret_cast<float4*>(t);
    for (u64 i = start; i < n4; i += stride) {
        const float4 v = t4[i];
        t4[i] = make_float4(v.x * alpha, v.y * alpha, v.z * alpha, v.w * alpha);
    }
    for (u64 i = (n4 << 2) + start; i < n; i += stride) t[i] *= alpha;
}

// out = a ⊙ b.
KERNEL void mul_f32(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out, u64 n) {
    const u64 n4 = n >> 2;
    const u64 start = global_thread();
    const u64 stride = global_stride();
    const float4* a4 = reinterpret_cast<const float4*>(a);
    const float4* b4 = reinterpret_cast<const float4*>(b);
    float4* o4 = reinterpret_cast<float4*>(out);
    for (u64 i = start; i < n4; i += stride) {
        const float4 x = a4[i];
        const float4 y = b4[i];
        o4[i] = make_float4(x.x * y.x, x.y * y.y, x.z * y.z, x.w * y.w);
    }
    for (u64 i = (n4 << 2) + start; i < n; i += stride) out[i] = a[i] * b[i];
}

// out = mask != 0 ? x : 0 (a select, so NaN·0 never arises).
KERNEL void mul_mask_f32(const float* __restrict__ x, const u8* __restrict__ mask, float* __restrict__ out,
                         u64 n) {
    const u64 n4 = n >> 2;
    const u64 start = global_thread();
    const u64 stride = global_stride();
    const float4* x4 = reinterpret_cast<const float4*>(x);
    const uchar4* m4 = reinterpret_cast<const uchar4*>(mask);
    float4* o4 = reinterpret_cast<float4*>(out);
    for (u64 i = start; i < n4; i += stride) {
        const float4 v = x4[i];
        const uchar4 m = m4[i];
        o4[i] = make_float4(m.x ? v.x : 0.0f, m.y ? v.y : 0.0f, m.z ? v.z : 0.0f, m.w ? v.w : 0.0f);
    }
    for (u64 i = (n4 << 2) + start; i < n; i += stride) out[i] = mask[i] ? x[i] : 0.0f;
}

// out += mask != 0 ? x : 0 (a select; mask null: out += x). LoSparse's
// dS += M⊙dW (src/backend/ops/lowrank_sparse/mod.rs).
KERNEL void masked_add_f32(const float* __restrict__ x, const u8* __restrict__ mask, float* __restrict__ out,
                           u64 n) {
    const u64 n4 = n >> 2;
    const u64 start = global_thread();
    const u64 stride = global_stride();
    const float4* x4 = reinterpret_cast<const float4*>(x);
    const uchar4* m4 = reinterpret_cast<const uchar4*>(mask);
    float4* o4 = reinterpret_cast<float4*>(out);
    for (u64 i = start; i < n4; i += stride) {
        const float4 v = x4[i];
        const uchar4 m = mask ? m4[i] : make_uchar4(1, 1, 1, 1);
        float4 o = o4[i];
        if (m.x) o.x = __fadd_rn(o.x, v.x);
        if (m.y) o.y = __fadd_rn(o.y, v.y);
        if (m.z) o.z = __fadd_rn(o.z, v.z);
        if (m.w) o.w = __fadd_rn(o.w, v.w);
        o4[i] = o;
    }
    for (u64 i = (n4 << 2) + start; i < n; i += stride)
        if (!mask || mask[i]) out[i] = __fadd_rn(out[i], x[i]);
}

// y[r·cols + c] += bias[c] for r < rows, c < cols. 2-D launch: x over
// columns (each thread keeps its bias value), y over rows, both grid-stride.
template <class T>
__device__ __forceinline__ void add_row_bias_impl(T* __restrict__ y, const T* __restrict__ bias, u64 rows, u64 cols) {
    const u64 cstride = (u64)gridDim.x * blockDim.x;
    for (u64 c = (u64)blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += cstride) {
        const T b = bias[c];
        for (u64 r = blockIdx.y; r < rows; r += gridDim.y) y[r * cols + c] = add_any(y[r * cols + c], b);
    }
}

KERNEL void add_row_bias_f32(float* __restrict__ y, const float* __restrict__ bias, u64 rows, u64 cols) {
    add_row_bias_impl(y, bias, rows, cols);
}

// The same in float4 units: cols4 = cols / 4 (cols % 4 == 0).
KERNEL void add_row_bias_f32x4(float* __restrict__ y, const float* __restrict__ bias, u64 rows, u64 cols4) {
    add_row_bias_impl(reinterpret_cast<float4*>(y), reinterpret_cast<const float4*>(bias), rows, cols4);
}

// ---- activations --------------------------------------------------------------

#define LPAF_FRAC_1_SQRT_2 0.70710678118654752440f
#define LPAF_INV_SQRT_2PI 0.3989423f

struct GeluOp {
    __device__ __forceinline__ float operator()(float x) const {
        return 0.5f * x * (1.0f + erff(x * LPAF_FRAC_1_SQRT_2));
    }
};

struct GeluBackwardOp {
    // (x, dy) -> dy · gelu'(x)
    __device__ __forceinline__ float operator()(float x, float dy) const {
        const float cdf = 0.5f * (1.0f + erff(x * LPAF_FRAC_1_SQRT_2));
        const float pdf = __fmul_rn(expf(__fmul_rn(-0.5f * x, x)), LPAF_INV_SQRT_2PI);
        return dy * __fadd_rn(cdf, __fmul_rn(x, pdf));
    }
};

struct TanhOp {
    __device__ __forceinline__ float operator()(float x) const { return tanhf(x); }
};

struct TanhBackwardOp {
    // (y, dy) -> dy · (1 − y²)
    __device__ __forceinline__ float operator()(float y, float dy) const {
        return dy * __fsub_rn(1.0f, __fmul_rn(y, y));
    }
};

KERNEL void gelu_f32(const float* __restrict__ x, float* __restrict__ y, u64 n) { map_unary(x, y, n, GeluOp()); }

KERNEL void gelu_backward_f32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx,
                              u64 n) {
    map_binary(x, dy, dx, n, GeluBackwardOp());
}

KERNEL void tanh_f32(const float* __restrict__ x, float* __restrict__ y, u64 n) { map_unary(x, y, n, TanhOp()); }

KERNEL void tanh_backward_f32(const float* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx,
                              u64 n) {
    map_binary(y, dy, dx, n, TanhBackwardOp());
}

// ---- dropout ------------------------------------------------------------------

// y_i = u_i >= p ? x_i·scale : 0 with u_i = philox_uniform(seed, stream, i)
// and scale = 1/(1−p) computed on the host in f32 (as the CPU does).
KERNEL void dropout_f32(const float* __restrict__ x, float* __restrict__ y, u64 n, float p, float scale, u64 seed,
                        u64 stream) {
    const u64 n4 = n >> 2;
    const u64 start = global_thread();
    const u64 stride = global_stride();
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* y4 = reinterpret_cast<float4*>(y);
    for (u64 i = start; i < n4; i += stride) {
        const float4 v = x4[i];
        const u64 e = i << 2;
        float4 o;
        o.x = philox_uniform(seed, stream, e + 0) >= p ? v.x * scale : 0.0f;
        o.y = philox_uniform(seed, stream, e + 1) >= p ? v.y * scale : 0.0f;
        o.z = philox_uniform(seed, stream, e + 2) >= p ? v.z * scale : 0.0f;
        o.w = philox_uniform(seed, stream, e + 3) >= p ? v.w * scale : 0.0f;
        y4[i] = o;
    }
    for (u64 i = (n4 << 2) + start; i < n; i += stride) {
        y[i] = philox_uniform(seed, stream, i) >= p ? x[i] * scale : 0.0f;
    }
}

// ---- strided row copy -----------------------------------------------------------

// dst[dst_off + r·dst_stride + c] (+)= src[src_off + r·src_stride + c] for
// r < rows, c < cols. 2-D launch: x over columns, y over rows, both
// grid-stride. The host checked every row lies inside both buffers and that
// destination rows do not overlap.

template <class T>
__device__ __forceinline__ void copy_rows_impl(const T* __restrict__ src, T* __restrict__ dst, u64 rows, u64 cols,
                                               u64 src_off, u64 src_stride, u64 dst_off, u64 dst_stride,
                                               u32 accumulate) {
    const u64 cstride = (u64)gridDim.x * blockDim.x;
    for (u64 r = blockIdx.y; r < rows; r += gridDim.y) {
        const T* s = src + src_off + r * src_stride;
        T* d = dst + dst_off + r * dst_stride;
        for (u64 c = (u64)blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += cstride) {
            const T v = s[c];
            d[c] = accumulate ? add_any(d[c], v) : v;
        }
    }
}

KERNEL void copy_rows_f32(const float* __restrict__ src, float* __restrict__ dst, u64 rows, u64 cols, u64 src_off,
                          u64 src_stride, u64 dst_off, u64 dst_stride, u32 accumulate) {
    copy_rows_impl(src, dst, rows, cols, src_off, src_stride, dst_off, dst_stride, accumulate);
}

// The same with every size, offset and stride in float4 units (the host
// checked they are all multiples of 4 elements).
KERNEL void copy_rows_f32x4(const float* __restrict__ src, float* __restrict__ dst, u64 rows, u64 cols4,
                            u64 src_off4, u64 src_stride4, u64 dst_off4, u64 dst_stride4, u32 accumulate) {
    copy_rows_impl(reinterpret_cast<const float4*>(src), reinterpret_cast<float4*>(dst), rows, cols4, src_off4,
                   src_stride4, dst_off4, dst_stride4, accumulate);
}
