// Operations over every gradient of the model at once, over one table of
// entries (pointer, length, blocks). Gradient-norm clipping in three
// launches, with the result kept on the device (no host round trip in a step):
//   1. grad_sumsq_many_f64: f64 partial sums of squares, the blocks of all
//      tensors in one grid (a table of entries says which block is whose);
//   2. grad_norm_finalize: per-tensor sums in block order, then the tensors
//      in table order -> stats = [norm, clip factor];
//   3. grad_scale_many: g *= factor (nothing when the factor is 1);
// and grads_zero_many: g = 0, the whole model in one launch.
// Each tensor is split exactly as sum_squares_f64 (reduce.cu) splits it, and
// the additions happen in the order the host used to do them, so the result
// is the one of per-tensor sum_squares calls added on the host. No atomics.

#include "common.cuh"

// One gradient of the table (filled on the host, uploaded once per table).
struct GradEntry {
    float* x;
    u64 n;
    u32 first_block;  // blocks of earlier entries
    u32 blocks;       // this tensor's blocks: ceil(n / 4096) clamped to [1, 1024]
};

// partials[first_block + k] = Σ x² over block k of its tensor's own grid
// (the partition and order of sum_squares_f64). Block: 256 threads.
KERNEL void grad_sumsq_many_f64(const GradEntry* __restrict__ entries, u32 count,
                                double* __restrict__ partials) {
    const EntrySpan sp = entry_span(entries, count);
    const GradEntry e = entries[sp.entry];
    const double s = block_sum_squares_f64(e.x, e.n, sp.start, sp.stride);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// One block of 256 threads. tensor_sums[t] = Σ_k partials[first_block + k] in
// k order (thread t % 256 does tensor t); then thread 0 adds the tensors in
// order: stats[0] = sqrt(total) (as f32), stats[1] = the clip factor
// min(1, max_norm / (norm + 1e-6)) computed in f64 (1 when max_norm <= 0;
// a NaN norm gives 1, as f64::min does on the host).
KERNEL void grad_norm_finalize(const GradEntry* __restrict__ entries, u32 count,
                               const double* __restrict__ partials,
                               double* __restrict__ tensor_sums, float max_norm,
                               float* __restrict__ stats) {
    for (u32 t = threadIdx.x; t < count; t += blockDim.x) {
        const GradEntry e = entries[t];
        double s = 0.0;
        for (u32 k = 0; k < e.blocks; ++k) s += partials[e.first_block + k];
        tensor_sums[t] = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (u32 t = 0; t < count; ++t) total += tensor_sums[t];
        const double norm = sqrt(total);
        double factor = 1.0;
        if (max_norm > 0.0f) factor = fmin((double)max_norm / (norm + 1e-6), 1.0);
        stats[0] = (float)norm;
        stats[1] = (float)factor;
    }
}

// x *= stats[1] for every entry, the same block table as the sum of squares.
KERNEL void grad_scale_many(const GradEntry* __restrict__ entries, u32 count,
                            const float* __restrict__ stats) {
    const float f = stats[1];
    if (f == 1.0f) return;
    const EntrySpan sp = entry_span(entries, count);
    const GradEntry e = entries[sp.entry];
    for (u64 i = sp.start; i < e.n; i += sp.stride) e.x[i] *= f;
}

// x = 0 for every entry (the same block table).
KERNEL void grads_zero_many(const GradEntry* __restrict__ entries, u32 count) {
    const EntrySpan sp = entry_span(entries, count);
    const GradEntry e = entries[sp.entry];
    for (u64 i = sp.start; i < e.n; i += sp.stride) e.x[i] = 0.0f;
}
