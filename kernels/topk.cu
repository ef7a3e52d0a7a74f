// Exact top-k (docs/algorithms.md §6.2): a radix select of the k-th largest key
// over one or many score tensors, and the pass that writes the masks and
// applies them.
//
// Keys are topk_key (unsigned order == f32::total_cmp). The selection
// reads the scores twice:
//   pass 1 (topk_hist1): histogram of the top 12 key bits;
//   topk_select1 picks the bin holding the k-th largest key;
//   pass 2 (topk_hist2): for keys in that bin, a histogram of the low 20 bits
//     (global, 2^20 bins) plus a coarse one of their top 8 bits;
//   topk_select2 picks the exact key, the count above it and its ties.
// All counts are integer atomics, so the result is exact and deterministic.
//
// Work is cut into tiles of TILE elements that never straddle two tensors
// (large tiles: fewer flushes of block histograms into the few hot global
// bins); the segment table (8 u64 per non-empty tensor, see `Seg`) maps a
// block to its tensor. The apply pass ranks ties in global index order when only some of
// them are kept: per-tile tie counts, a scan over tiles, then a block scan
// per round inside the tile (element order = index order).
#include "common.cuh"

#define TILE 8192
#define TPB 256
#define ROUNDS (TILE / (4 * TPB))

struct Seg {
    const float* scores;
    unsigned char* mask;
    float* apply;  // null: masks only
    uint64_t len;
    uint64_t tile_begin;  // index of the segment's first tile
    uint64_t row_begin;   // global index of the segment's first row
    uint64_t cols;        // row length (RowMean)
};

__device__ __forceinline__ Seg load_seg(const unsigned long long* t, int s) {
    const unsigned long long* e = t + 8 * s;
    Seg g;
    g.scores = reinterpret_cast<const float*>(e[0]);
    g.mask = reinterpret_cast<unsigned char*>(e[1]);
    g.apply = reinterpret_cast<float*>(e[2]);
    g.len = e[3];
    g.tile_begin = e[4];
    g.row_begin = e[5];
    g.cols = e[6];
    return g;
}

// The last segment whose field `f` (tile_begin or row_begin) is ≤ x.
__device__ __forceinline__ int find_seg(const unsigned long long* t, int nseg, int f, uint64_t x) {
    int lo = 0, hi = nseg - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (t[8 * mid + f] <= x)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

// This block's tile: its segment, first element and length.
struct Tile {
    Seg seg;
    uint64_t start;
    uint32_t len;
};

__device__ __forceinline__ Tile block_tile(const unsigned long long* segs, int nseg) {
    Tile t;
    int s = find_seg(segs, nseg, 4, blockIdx.x);
    t.seg = load_seg(segs, s);
    t.start = ((uint64_t)blockIdx.x - t.seg.tile_begin) * TILE;
    uint64_t rest = t.seg.len - t.start;
    t.len = (uint32_t)(rest < TILE ? rest : TILE);
    return t;
}

// Valid elements (a prefix of 0..4) of the vector starting at tile offset e0.
__device__ __forceinline__ int valid4(uint32_t e0, uint32_t len) {
    return e0 >= len ? 0 : (len - e0 >= 4 ? 4 : (int)(len - e0));
}

// Loads the valid elements of a vector (one 16-byte load when all 4 are).
// The pointers come from the segment table, so the global address space is
// spelled out (__ldg / __ldcs / __stcs) instead of left to generic accesses;
// the streaming hints fit data touched once.
__device__ __forceinline__ void load4(const float* p, uint64_t i0, int c, float v[4]) {
    if (c == 4) {
        float4 f = __ldg(reinterpret_cast<const float4*>(p + i0));
        v[0] = f.x;
        v[1] = f.y;
        v[2] = f.z;
        v[3] = f.w;
    } else {
#pragma unroll
        for (int j = 0; j < 4; j++) v[j] = j < c ? __ldg(p + i0 + j) : 0.0f;
    }
}

// Writes the mask of a vector and zeroes the pruned entries of `apply`.
__device__ __forceinline__ void store4(const Seg& s, uint64_t i0, int c, const bool k[4]) {
    if (c == 4) {
        __stcs(reinterpret_cast<uchar4*>(s.mask + i0), make_uchar4(k[0], k[1], k[2], k[3]));
        if (s.apply) {
            float4* ap = reinterpret_cast<float4*>(s.apply + i0);
            float4 a = __ldcs(ap);
            a.x = k[0] ? a.x : 0.0f;
            a.y = k[1] ? a.y : 0.0f;
            a.z = k[2] ? a.z : 0.0f;
            a.w = k[3] ? a.w : 0.0f;
            __stcs(ap, a);
        }
    } else {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (j < c) {
                s.mask[i0 + j] = k[j] ? 1 : 0;
                if (s.apply && !k[j]) s.apply[i0 + j] = 0.0f;
            }
        }
    }
}

// ---- selection ----------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(TPB) topk_hist1(const unsigned long long* __restrict__ segs, int nseg,
                                                            int abs_, unsigned long long* __restrict__ hist) {
    __shared__ unsigned int sh[4096];
    for (int b = threadIdx.x; b < 4096; b += TPB) sh[b] = 0;
    __syncthreads();
    const Tile t = block_tile(segs, nseg);
#pragma unroll
    for (int r = 0; r < ROUNDS; r++) {
        uint32_t e0 = 4u * (r * TPB + threadIdx.x);
        int c = valid4(e0, t.len);
        float v[4];
        load4(t.seg.scores, t.start + e0, c, v);
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (j < c) atomicAdd(&sh[topk_key(v[j], abs_) >> 20], 1u);
    }
    __syncthreads();
    for (int b = threadIdx.x; b < 4096; b += TPB)
        if (sh[b]) atomicAdd(&hist[b], (unsigned long long)sh[b]);
}

// Finds, over bins scanned from the highest down, the bin where the running
// count reaches k (1 ≤ k ≤ total): *bin and the count of the bins above it.
// blockDim.x == TPB, nbins a multiple of TPB. Called by the whole block.
template <typename T>
__device__ void find_desc(const T* h, int nbins, uint64_t k, int* bin, uint64_t* above) {
    __shared__ uint64_t part[TPB];
    __shared__ int s_bin;
    __shared__ uint64_t s_above;
    const int per = nbins / TPB, t = threadIdx.x;
    const int hi = nbins - t * per;  // thread t owns bins [hi − per, hi)
    uint64_t sum = 0;
    for (int b = hi - 1; b >= hi - per; b--) sum += h[b];
    __syncthreads();
    part[t] = sum;
    __syncthreads();
    if (t == 0) {
        uint64_t run = 0;
        for (int i = 0; i < TPB; i++) {
            uint64_t x = part[i];
            part[i] = run;
            run += x;
        }
    }
    __syncthreads();
    const uint64_t excl = part[t];
    if (excl < k && k <= excl + sum) {  // exactly one thread
        uint64_t a = excl;
        for (int b = hi - 1; b >= hi - per; b--) {
            if (a + h[b] >= k) {
                s_bin = b;
                s_above = a;
                break;
            }
            a += h[b];
        }
    }
    __syncthreads();
    *bin = s_bin;
    *above = s_above;
}

// state: [0] k remaining, [1] count above, [2] key prefix / key, [3] ties.
extern "C" __global__ void __launch_bounds__(TPB) topk_select1(const unsigned long long* __restrict__ hist,
                                                              unsigned long long* __restrict__ state,
                                                              unsigned long long k) {
    int b;
    uint64_t above;
    find_desc(hist, 4096, k, &b, &above);
    if (threadIdx.x == 0) {
        state[0] = k - above;
        state[1] = above;
        state[2] = (unsigned long long)b << 20;
        state[3] = hist[b];
    }
}

extern "C" __global__ void __launch_bounds__(TPB) topk_hist2(const unsigned long long* __restrict__ segs, int nseg,
                                                            int abs_, const unsigned long long* __restrict__ state,
                                                            unsigned int* __restrict__ fine,
                                                            unsigned int* __restrict__ coarse) {
    __shared__ unsigned int shc[256];
    shc[threadIdx.x] = 0;
    __syncthreads();
    const uint32_t top = (uint32_t)(state[2] >> 20);
    const int lane = threadIdx.x & 31;
    const Tile t = block_tile(segs, nseg);
#pragma unroll
    for (int r = 0; r < ROUNDS; r++) {
        uint32_t e0 = 4u * (r * TPB + threadIdx.x);
        int c = valid4(e0, t.len);
        float v[4];
        load4(t.seg.scores, t.start + e0, c, v);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint32_t key = topk_key(v[j], abs_);
            bool in = j < c && (key >> 20) == top;
            // Few keys fall in the chosen bin; when some do, lanes with the same
            // low bits are merged first so equal keys cost one global atomic.
            if (__ballot_sync(FULL_MASK, in)) {
                uint32_t low = in ? (key & 0xfffffu) : 0xffffffffu;
                unsigned int peers = __match_any_sync(FULL_MASK, low);
                if (in && lane == __ffs(peers) - 1) {
                    unsigned int cnt = __popc(peers);
                    atomicAdd(&fine[low], cnt);
                    atomicAdd(&shc[low >> 12], cnt);
                }
            }
        }
    }
    __syncthreads();
    if (shc[threadIdx.x]) atomicAdd(&coarse[threadIdx.x], shc[threadIdx.x]);
}

extern "C" __global__ void __launch_bounds__(TPB) topk_select2(const unsigned int* __restrict__ coarse,
                                                              const unsigned int* __restrict__ fine,
                                                              unsigned long long* __restrict__ state) {
    const uint64_t k = state[0];
    int c, f;
    uint64_t above_c, above_f;
    find_desc(coarse, 256, k, &c, &above_c);
    find_desc(fine + (size_t)c * 4096, 4096, k - above_c, &f, &above_f);
    __syncthreads();  // every thread has read state[0]
    if (threadIdx.x == 0) {
        state[0] = k - above_c - above_f;
        state[1] += above_c + above_f;
        state[2] |= ((unsigned long long)c << 12) | (unsigned long long)f;
        state[3] = fine[(size_t)c * 4096 + f];
    }
}

// ---- row means (TopkScope::RowMean) ------------------------------------------------

// One warp per row: lane l sums entries l, l+32, … in f64, the lanes combine
// in the xor-tree order, the mean is rounded to f32 (lpaf::backend::topk_row_mean).
// Writes the row's key and its length.
extern "C" __global__ void topk_row_keys(const unsigned long long* __restrict__ segs, int nseg, int abs_,
                                         unsigned long long rows, unsigned int* __restrict__ keys,
                                         unsigned int* __restrict__ cols_out) {
    const uint64_t row = ((uint64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // whole warps leave together
    const Seg s = load_seg(segs, find_seg(segs, nseg, 5, row));
    const uint64_t cols = s.cols;
    const float* p = s.scores + (row - s.row_begin) * cols;
    double acc = 0.0;
    for (uint64_t j = lane; j < cols; j += 32) {
        float x = __ldg(p + j);
        acc += (double)(abs_ ? fabsf(x) : x);
    }
    acc = warp_sum_f64(acc);
    if (lane == 0) {
        float m = __double2float_rn(acc / (double)cols);
        if (isnan(m)) m = __uint_as_float(0x7fc00000u);
        keys[row] = topk_key(m, abs_);
        cols_out[row] = (unsigned int)cols;
    }
}

// Entries kept per row, in place of its length: whole rows above the
// threshold, none below, and of the tied rows the first `quota` entries in
// index order (all of them unless `partial`). One block of 1024 threads.
extern "C" __global__ void __launch_bounds__(1024) topk_row_keep(const unsigned int* __restrict__ keys,
                                                                unsigned int* __restrict__ cols,
                                                                unsigned long long rows, unsigned int kth,
                                                                int partial, unsigned long long quota) {
    __shared__ uint64_t scratch[33];
    const uint64_t per = (rows + blockDim.x - 1) / blockDim.x;
    const uint64_t lo = min_u64(rows, per * threadIdx.x), hi = min_u64(rows, lo + per);
    uint64_t ties = 0;
    for (uint64_t r = lo; r < hi; r++)
        if (keys[r] == kth) ties += cols[r];
    uint64_t total;
    uint64_t before = block_exclusive_scan(ties, scratch, &total);
    for (uint64_t r = lo; r < hi; r++) {
        uint32_t key = keys[r], c = cols[r];
        uint32_t keep;
        if (key > kth) {
            keep = c;
        } else if (key < kth) {
            keep = 0;
        } else {
            keep = c;
            if (partial) {
                uint64_t left = quota > before ? quota - before : 0;
                keep = left < c ? (uint32_t)left : c;
            }
            before += c;
        }
        cols[r] = keep;
    }
}

// ---- masks --------------------------------------------------------------------------

// Ties per tile (for ranking them when only some are kept).
extern "C" __global__ void __launch_bounds__(TPB) topk_tie_count(const unsigned long long* __restrict__ segs, int nseg,
                                                                int abs_, unsigned int kth,
                                                                unsigned int* __restrict__ counts) {
    __shared__ unsigned int total;
    if (threadIdx.x == 0) total = 0;
    __syncthreads();
    const Tile t = block_tile(segs, nseg);
    unsigned int n = 0;
#pragma unroll
    for (int r = 0; r < ROUNDS; r++) {
        uint32_t e0 = 4u * (r * TPB + threadIdx.x);
        int c = valid4(e0, t.len);
        float v[4];
        load4(t.seg.scores, t.start + e0, c, v);
#pragma unroll
        for (int j = 0; j < 4; j++) n += (j < c && topk_key(v[j], abs_) == kth);
    }
    if (n) atomicAdd(&total, n);
    __syncthreads();
    if (threadIdx.x == 0) counts[blockIdx.x] = total;
}

// Exclusive scan of the per-tile tie counts, in tile order. One block of 1024.
extern "C" __global__ void __launch_bounds__(1024) topk_scan_tiles(const unsigned int* __restrict__ counts,
                                                                  unsigned long long n,
                                                                  unsigned long long* __restrict__ base) {
    __shared__ uint64_t scratch[33];
    const uint64_t per = (n + blockDim.x - 1) / blockDim.x;
    const uint64_t lo = min_u64(n, per * threadIdx.x), hi = min_u64(n, lo + per);
    uint64_t s = 0;
    for (uint64_t i = lo; i < hi; i++) s += counts[i];
    uint64_t total;
    uint64_t run = block_exclusive_scan(s, scratch, &total);
    for (uint64_t i = lo; i < hi; i++) {
        base[i] = run;
        run += counts[i];
    }
}

// mode 0: keep nothing; 1: keep key ≥ kth; 2: keep key > kth and the ties
// whose rank (global index order) is below `quota` (needs tile_base).
extern "C" __global__ void __launch_bounds__(TPB) topk_apply_entries(const unsigned long long* __restrict__ segs,
                                                                    int nseg, int abs_, unsigned int kth, int mode,
                                                                    unsigned long long quota,
                                                                    const unsigned long long* __restrict__ tile_base) {
    __shared__ uint64_t scratch[33];
    const Tile t = block_tile(segs, nseg);
    uint64_t rank = mode == 2 ? tile_base[blockIdx.x] : 0;
#pragma unroll
    for (int r = 0; r < ROUNDS; r++) {
        uint32_t e0 = 4u * (r * TPB + threadIdx.x);
        int c = valid4(e0, t.len);
        bool k[4] = {false, false, false, false};
        bool tie[4] = {false, false, false, false};
        if (mode != 0) {
            float v[4];
            load4(t.seg.scores, t.start + e0, c, v);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                uint32_t key = topk_key(v[j], abs_);
                k[j] = j < c && (mode == 1 ? key >= kth : key > kth);
                tie[j] = mode == 2 && j < c && key == kth;
            }
        }
        if (mode == 2) {  // uniform over the block
            uint64_t mine = (uint64_t)tie[0] + tie[1] + tie[2] + tie[3], total;
            uint64_t rk = rank + block_exclusive_scan(mine, scratch, &total);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                if (tie[j]) {
                    k[j] = rk < quota;
                    rk++;
                }
            }
            rank += total;
        }
        store4(t.seg, t.start + e0, c, k);
    }
}

// RowMean masks: entry (row, col) is kept when col < keep[row]. Segment
// lengths are below 2^32 (checked by the host).
extern "C" __global__ void __launch_bounds__(TPB) topk_apply_rows(const unsigned long long* __restrict__ segs,
                                                                 int nseg, const unsigned int* __restrict__ keep) {
    const Tile t = block_tile(segs, nseg);
    const uint32_t cols = (uint32_t)t.seg.cols;
#pragma unroll
    for (int r = 0; r < ROUNDS; r++) {
        uint32_t e0 = 4u * (r * TPB + threadIdx.x);
        int c = valid4(e0, t.len);
        bool k[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint32_t e = (uint32_t)t.start + e0 + j;
            uint32_t row = e / cols, col = e - row * cols;
            k[j] = j < c && col < __ldg(keep + t.seg.row_begin + row);
        }
        store4(t.seg, t.start + e0, c, k);
    }
}
