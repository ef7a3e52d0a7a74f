// Embedding-table kernels: id validation, row gather, and a deterministic
// scatter-add of rows (the embedding backward).
//
// scatter_add_rows without floating-point atomics:
//  1. rank: the keys (id, position) are unique, so sorting them has exactly
//     one result. rank[i] = #{j : (ids[j], j) < (ids[i], i)} is counted
//     tile by tile (integer atomics add the per-tile counts: exact), then
//     perm[rank[i]] = i and sid[rank[i]] = ids[i]. Positions of equal ids end
//     up consecutive and in increasing order (segments).
//  2. pieces: the sorted sequence is cut into fixed pieces of `piece`
//     positions. Per piece and column, each segment is summed in order; a
//     segment wholly inside the piece adds its sum to the table row (it is
//     the only writer of that row); a segment crossing the piece's start
//     leaves its partial in first[piece], one crossing the piece's end in
//     last[piece].
//  3. combine: for each segment that starts in piece p and continues, sum
//     last[p] + first[p+1] + ... in piece order and add it to the table row.
// The result depends only on the ids and d: identical from run to run.
//
// Cost: step 1 is O(n²) integer comparisons (about 17M for n = 4096 tokens,
// 270M for 16384: microseconds), steps 2-3 read d once.

#include "common.cuh"

// ---- validation ---------------------------------------------------------------------

// *first_bad = min position i with ids[i] < 0 or ids[i] >= rows (the host
// initialises it to INT_MAX). Integer atomics: exact and order-free.
KERNEL void check_ids_i32(const int* __restrict__ ids, u64 n, u64 rows, int* __restrict__ first_bad) {
    const u64 stride = global_stride();
    for (u64 i = global_thread(); i < n; i += stride) {
        const int id = ids[i];
        if (id < 0 || (u64)id >= rows) atomicMin(first_bad, (int)i);
    }
}

// ---- gather ----------------------------------------------------------------------------
// out[i·cols + c] (+)= table[ids[i]·cols + c] for i < n_ids, c < cols. 2-D
// launch: x over columns, y over ids, both grid-stride. Ids were validated
// on the host side; an invalid one is skipped anyway.

template <class T>
__device__ __forceinline__ T add_t(T a, T b);
template <>
__device__ __forceinline__ float add_t<float>(float a, float b) { return a + b; }
template <>
__device__ __forceinline__ float4 add_t<float4>(float4 a, float4 b) { return f4_add(a, b); }

template <class T>
__device__ __forceinline__ void gather_impl(const T* __restrict__ table, const int* __restrict__ ids,
                                            T* __restrict__ out, u64 n_ids, u64 cols, u64 rows, u32 accumulate) {
    const u64 cstride = (u64)gridDim.x * blockDim.x;
    for (u64 i = blockIdx.y; i < n_ids; i += gridDim.y) {
        const int id = ids[i];
        if (id < 0 || (u64)id >= rows) continue;
        const T* src = table + (u64)id * cols;
        T* dst = out + i * cols;
        for (u64 c = (u64)blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += cstride) {
            const T v = src[c];
            dst[c] = accumulate ? add_t(dst[c], v) : v;
        }
    }
}

KERNEL void gather_rows_f32(const float* __restrict__ table, const int* __restrict__ ids, float* __restrict__ out,
                            u64 n_ids, u64 cols, u64 rows, u32 accumulate) {
    gather_impl(table, ids, out, n_ids, cols, rows, accumulate);
}

// float4 units: cols4 = cols / 4 (cols % 4 == 0).
KERNEL void gather_rows_f32x4(const float* __restrict__ table, const int* __restrict__ ids, float* __restrict__ out,
                              u64 n_ids, u64 cols4, u64 rows, u32 accumulate) {
    gather_impl(reinterpret_cast<const float4*>(table), ids, reinterpret_cast<float4*>(out), n_ids, cols4, rows,
                accumulate);
}

// ---- scatter-add: 1. rank -----------------------------------------------------------

#define RANK_TILE 1024

// Block 128 threads, grid (ceil(n / 128), ceil(n / RANK_TILE)). rank must be
// zeroed. n < 2^31.
KERNEL void scatter_rank_count(const int* __restrict__ ids, u32 n, u32* __restrict__ rank) {
    __shared__ int tile[RANK_TILE];
    const u32 i = blockIdx.x * blockDim.x + threadIdx.x;
    const u32 j0 = blockIdx.y * RANK_TILE;
    const u32 jn = min((u32)RANK_TILE, n - j0);
    for (u32 t = threadIdx.x; t < jn; t += blockDim.x) tile[t] = ids[j0 + t];
    __syncthreads();
    if (i < n) {
        const int mine = ids[i];
        u32 cnt = 0;
        for (u32 t = 0; t < jn; ++t) {
            const int other = tile[t];
            cnt += (other < mine || (other == mine && j0 + t < i)) ? 1u : 0u;
        }
        if (cnt) atomicAdd(&rank[i], cnt);
    }
}

// perm[rank[i]] = i, sid[rank[i]] = ids[i] (rank is a permutation of 0..n).
KERNEL void scatter_rank_place(const int* __restrict__ ids, const u32* __restrict__ rank, u32 n,
                               int* __restrict__ perm, int* __restrict__ sid) {
    const u64 stride = global_stride();
    for (u64 i = global_thread(); i < n; i += stride) {
        const u32 r = rank[i];
        perm[r] = (int)i;
        sid[r] = ids[i];
    }
}

// ---- scatter-add: 2. pieces ---------------------------------------------------------
// Block 256 threads over columns, grid (ceil(cols / 256), npieces).
KERNEL void scatter_pieces_f32(const float* __restrict__ d, const int* __restrict__ perm,
                               const int* __restrict__ sid, float* __restrict__ tg, float* __restrict__ first,
                               float* __restrict__ last, u32 n, u64 cols, u32 piece) {
    const u64 c = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    const u32 p = blockIdx.y;
    const u32 r0 = p * piece;
    if (r0 >= n) return;
    const u32 r1 = min(r0 + piece, n);
    int cur = sid[r0];
    bool starts_here = (r0 == 0) || (sid[r0 - 1] != cur);
    float acc = 0.0f;
    for (u32 r = r0; r < r1; ++r) {
        acc += d[(u64)perm[r] * cols + c];
        const bool last_in_piece = (r + 1 == r1) || (sid[r + 1] != cur);
        if (last_in_piece) {
            const bool ends_here = (r + 1 < r1) || (r1 == n) || (sid[r1] != cur);
            if (!starts_here) {
                first[(u64)p * cols + c] = acc;
            } else if (!ends_here) {
                last[(u64)p * cols + c] = acc;
            } else {
                tg[(u64)cur * cols + c] += acc;
            }
            if (r + 1 < r1) {
                cur = sid[r + 1];
                starts_here = true;
                acc = 0.0f;
            }
        }
    }
}

// ---- scatter-add: 3. combine --------------------------------------------------------
// Block 256 threads over columns, grid (ceil(cols / 256), npieces).
KERNEL void scatter_combine_f32(const int* __restrict__ sid, float* __restrict__ tg,
                                const float* __restrict__ first, const float* __restrict__ last, u32 n, u64 cols,
                                u32 piece, u32 npieces) {
    const u64 c = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    const u32 p = blockIdx.y;
    const u32 r0 = p * piece;
    if (r0 >= n) return;
    const u32 r1 = min(r0 + piece, n);
    const int id = sid[r1 - 1];
    // The piece's last segment must start in this piece and continue past it.
    const bool starts_here = (r0 == 0) || (sid[r0 - 1] != id);
    const bool continues = (r1 < n) && (sid[r1] == id);
    if (!starts_here || !continues) return;
    float total = last[(u64)p * cols + c];
    for (u32 q = p + 1; q < npieces; ++q) {
        total += first[(u64)q * cols + c];
        const u32 q1 = min((q + 1) * piece, n);
        if (q1 == n || sid[q1] != id) break;
    }
    tg[(u64)id * cols + c] += total;
}
