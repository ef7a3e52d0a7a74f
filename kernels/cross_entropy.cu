// Cross-entropy of classification logits on the device, so that a training
// step needs neither the logits on the host nor their gradient uploaded.
// Rows are few (the batch), classes fewer: one block, f64 arithmetic, and
// the row losses added in row order by one thread (no atomics), exactly the
// order of the CPU reference (src/backend/ops/cross_entropy/cpu.rs).

#include "common.cuh"

// One block of 256 threads; thread t does rows t, t + 256, ...:
//   lse = max + log Σ exp(x - max), row_loss[r] = lse - x[y],
//   dlogits[r, c] = (float)((exp(x[c] - lse) - [c == y]) * scale / rows);
// then loss[0] = (accumulate ? loss[0] : 0) + (float)(scale * Σ_r row_loss[r] / rows).
// Labels are in range (checked on the host).
KERNEL void cross_entropy_f32(const float* __restrict__ logits, const int* __restrict__ labels,
                              u32 rows, u32 classes, float scale, u32 accumulate,
                              float* __restrict__ dlogits, double* __restrict__ row_loss,
                              float* __restrict__ loss) {
    for (u32 r = threadIdx.x; r < rows; r += blockDim.x) {
        const float* x = logits + (u64)r * classes;
        double mx = -INFINITY;
        for (u32 c = 0; c < classes; ++c) mx = fmax(mx, (double)x[c]);
        double se = 0.0;
        for (u32 c = 0; c < classes; ++c) se += exp((double)x[c] - mx);
        const double lse = mx + log(se);
        const u32 y = (u32)labels[r];
        row_loss[r] = -((double)x[y] - lse);
        for (u32 c = 0; c < classes; ++c) {
            const double p = exp((double)x[c] - lse);
            const double g = p - (c == y ? 1.0 : 0.0);
            dlogits[(u64)r * classes + c] = (float)(g * (double)scale / (double)rows);
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (u32 r = 0; r < rows; ++r) total += row_loss[r];
        const double mean = total / (double)(rows > 0 ? rows : 1);
        const float v = (float)((double)scale * mean);
        loss[0] = accumulate ? loss[0] + v : v;
    }
}
