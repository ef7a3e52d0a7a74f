// Deterministic reductions: column sums and the sum of squares.
//
// No floating-point atomics. The row range is split into fixed chunks (their
// size is a function of the shape only, chosen on the host), each block sums
// one chunk of one column tile in a fixed order and writes a partial; a second
// kernel adds the partials in chunk order. The sum of squares writes one f64
// partial per block of a grid whose size depends only on n; the host adds
// them in order.

#include "common.cuh"

// ---- column sums --------------------------------------------------------------
// Block (32, 8): threadIdx.x picks the column (one float, or four for the x4
// variant), threadIdx.y the row lane. Grid (ceil(cols / 32), nchunks) in the
// kernel's column units. Thread (tx, ty) sums rows r0+ty, r0+ty+8, ... of its
// chunk; the 8 row lanes are then added in order 0..7.

#define COL_TX 32
#define COL_TY 8

// partials[chunk·cols + c] = Σ_{r in chunk} x[r·cols + c].
KERNEL void col_sum_partials_f32(const float* __restrict__ x, float* __restrict__ partials, u64 rows, u64 cols,
                                 u64 rows_per_chunk) {
    __shared__ float sh[COL_TY][COL_TX];
    const u32 tx = threadIdx.x;
    const u32 ty = threadIdx.y;
    const u64 c = (u64)blockIdx.x * COL_TX + tx;
    const u64 chunk = blockIdx.y;
    const u64 r0 = chunk * rows_per_chunk;
    const u64 r1 = min(r0 + rows_per_chunk, rows);
    float acc = 0.0f;
    if (c < cols) {
        for (u64 r = r0 + ty; r < r1; r += COL_TY) acc += x[r * cols + c];
    }
    sh[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && c < cols) {
        float s = sh[0][tx];
#pragma unroll
        for (int k = 1; k < COL_TY; ++k) s += sh[k][tx];
        partials[chunk * cols + c] = s;
    }
}

// The same in float4 units: cols4 = cols / 4 (cols % 4 == 0); partials keep
// the element layout [nchunks][cols].
KERNEL void col_sum_partials_f32x4(const float* __restrict__ x, float* __restrict__ partials, u64 rows, u64 cols4,
                                   u64 rows_per_chunk) {
    __shared__ float4 sh[COL_TY][COL_TX];
    const u32 tx = threadIdx.x;
    const u32 ty = threadIdx.y;
    const u64 c = (u64)blockIdx.x * COL_TX + tx;
    const u64 chunk = blockIdx.y;
    const u64 r0 = chunk * rows_per_chunk;
    const u64 r1 = min(r0 + rows_per_chunk, rows);
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4 acc = f4_zero();
    if (c < cols4) {
        for (u64 r = r0 + ty; r < r1; r += COL_TY) acc = f4_add(acc, x4[r * cols4 + c]);
    }
    sh[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && c < cols4) {
        float4 s = sh[0][tx];
#pragma unroll
        for (int k = 1; k < COL_TY; ++k) s = f4_add(s, sh[k][tx]);
        reinterpret_cast<float4*>(partials)[chunk * cols4 + c] = s;
    }
}

// out[c] (+)= Σ_{k < nchunks} partials[k·cols + c], k in order. 1-D launch,
// any grid.
KERNEL void col_sum_finalize_f32(const float* __restrict__ partials, float* __restrict__ out, u64 cols,
                                 u64 nchunks, u32 accumulate) {
    const u64 stride = global_stride();
    for (u64 c = global_thread(); c < cols; c += stride) {
        float s = partials[c];
        for (u64 k = 1; k < nchunks; ++k) s += partials[k * cols + c];
        out[c] = accumulate ? out[c] + s : s;
    }
}

// ---- sum of squares -----------------------------------------------------------
// partials[block] = Σ x² (in f64; each square is exact in f64) over the
// elements this block's threads visit in a grid-stride loop. Block: 256
// threads (any multiple of 32 up to 1024). The grid must depend only on n for
// the result to be reproducible; the host adds the partials in order.
KERNEL void sum_squares_f64(const float* __restrict__ x, u64 n, double* __restrict__ partials) {
    const double s = block_sum_squares_f64(x, n, global_thread(), global_stride());
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}
