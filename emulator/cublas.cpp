// Emulated cuBLAS (libcublas.so) for the emulated CUDA device
// (emulator/README.md): the cuBLAS v2 handle API and the real-typed GEMMs
// lpaf needs, computed on the host. Device pointers are host addresses owned
// by the emulated driver (libcuda.so, driver.cpp), which this library asks
// through emu_runtime.h whether an operand lies in device memory.
//
// What it models of real cuBLAS:
// - the argument checks of the GEMM entry points and their status codes,
//   in this order: handle (NOT_INITIALIZED); transa/transb, m/n/k < 0,
//   lda/ldb/ldc below max(1, rows of the stored matrix), batchCount < 0,
//   null alpha/beta (INVALID_VALUE); data/compute type combination or algo
//   (NOT_SUPPORTED); then the quick return for m == 0, n == 0 or
//   batchCount == 0. The leading-dimension checks come before the quick
//   return, as on the real library (an empty product with ld 0 is rejected).
// - memcheck: every matrix of the batch that is read or written must lie in
//   one live device allocation, and the handle's stream must be live; else
//   the emulator reports it and returns EXECUTION_FAILED (what a faulting
//   kernel gives on a GPU).
// - numerics (see the micro-kernels and store_c): fp32 products accumulated
//   with FMA over k in increasing order into one fp32 accumulator per output
//   element, inputs rounded to TF32 / widened from bf16 first; beta == 0
//   means C is not read. The result does not depend on blocking, the kernel
//   (AVX2 or portable) or the thread count.
// - LPAF_EMU_BLAS_GENERIC=1 forces the portable kernel (for testing).
//
// Build with -ffp-contract=off: the epilogue's separate roundings must not be
// fused (only the explicit FMAs of the kernels are).
//
// Threads: LPAF_EMU_THREADS (default 1) worker threads split the output
// columns of large products. Handles are independent; a global mutex guards
// only the handle registry.

#include "emu_runtime.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

#define LPAF_API extern "C" __attribute__((visibility("default")))

namespace {

// Values of the cuBLAS / CUDA enums (C enums are passed as int).
enum : int {
    ST_SUCCESS = 0,
    ST_NOT_INITIALIZED = 1,
    ST_ALLOC_FAILED = 3,
    ST_INVALID_VALUE = 7,
    ST_ARCH_MISMATCH = 8,
    ST_MAPPING_ERROR = 11,
    ST_EXECUTION_FAILED = 13,
    ST_INTERNAL_ERROR = 14,
    ST_NOT_SUPPORTED = 15,
    ST_LICENSE_ERROR = 16,
};
enum : int { OP_N = 0, OP_T = 1, OP_C = 2 };
enum : int { R_32F = 0, R_16BF = 14 };
enum : int {
    COMPUTE_32F = 68,
    COMPUTE_32F_PEDANTIC = 69,
    COMPUTE_32F_FAST_TF32 = 77,
};
enum : int {
    MATH_DEFAULT = 0,
    MATH_TENSOR_OP = 1,
    MATH_PEDANTIC = 2,
    MATH_TF32_TENSOR_OP = 3,
    MATH_FP32_EMULATED_BF16X9 = 4,
    MATH_FP64_EMULATED_FIXEDPOINT = 8,
    MATH_DISALLOW_REDUCED_PRECISION_REDUCTION = 16,
};
enum : int { PTR_HOST = 0, PTR_DEVICE = 1 };

// The version this library claims (cuBLAS encodes major*10000+minor*100+patch).
constexpr int VER_MAJOR = 13, VER_MINOR = 0, VER_PATCH = 0;

}  // namespace

struct cublasContext {
    void* stream = nullptr;
    int math_mode = MATH_DEFAULT;
    int pointer_mode = PTR_HOST;
    int atomics_mode = 0;
    void* workspace = nullptr;
    size_t workspace_bytes = 0;
};
typedef cublasContext* cublasHandle_t;

namespace {

std::mutex g_mu;
// Live handles. Destroyed handles are never freed, so their address is never
// handed out again and a use after destroy is reliably NOT_INITIALIZED.
std::unordered_set<cublasContext*>& live_handles() {
    static auto* s = new std::unordered_set<cublasContext*>();
    return *s;
}

// Copies the state of a live handle; false for null or destroyed handles.
bool snapshot(cublasHandle_t h, cublasContext* out) {
    if (!h) return false;
    std::lock_guard<std::mutex> g(g_mu);
    if (!live_handles().count(h)) return false;
    *out = *h;
    return true;
}

// Runs f on a live handle under the registry lock.
template <class F>
int with_handle(cublasHandle_t h, F f) {
    if (!h) return ST_NOT_INITIALIZED;
    std::lock_guard<std::mutex> g(g_mu);
    if (!live_handles().count(h)) return ST_NOT_INITIALIZED;
    return f(h);
}

int env_threads() {
    static const int n = [] {
        const char* s = std::getenv("LPAF_EMU_THREADS");
        int v = s ? std::atoi(s) : 1;
        return std::clamp(v, 1, 64);
    }();
    return n;
}

// The AVX2+FMA kernel when the CPU has it (checked at run time, so the
// library needs no -march); LPAF_EMU_BLAS_GENERIC=1 forces the portable one.
// Both give the same bits: each is one fused multiply-add per step.
bool use_avx2() {
    static const bool v = [] {
        const char* s = std::getenv("LPAF_EMU_BLAS_GENERIC");
        if (s && *s && std::strcmp(s, "0") != 0) return false;
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    return v;
}

// ---- element conversions ---------------------------------------------------

inline uint32_t bits_of(float x) {
    uint32_t b;
    std::memcpy(&b, &x, 4);
    return b;
}
inline float float_of(uint32_t b) {
    float x;
    std::memcpy(&x, &b, 4);
    return x;
}

// TF32: keep 10 mantissa bits, round to nearest even; inf/NaN unchanged
// (the same as lpaf's CPU reference round_tf32).
inline float round_tf32(float x) {
    uint32_t b = bits_of(x);
    if ((b & 0x7f800000u) == 0x7f800000u) return x;
    uint32_t lsb = (b >> 13) & 1u;
    return float_of((b + 0x0fffu + lsb) & ~0x1fffu);
}

inline float bf16_to_f32(uint16_t h) { return float_of(uint32_t(h) << 16); }

// Round to nearest even; a NaN stays a (quiet) NaN instead of rounding to inf.
inline uint16_t f32_to_bf16(float x) {
    uint32_t b = bits_of(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) return uint16_t((b >> 16) | 0x0040u);
    b += 0x7fffu + ((b >> 16) & 1u);
    return uint16_t(b >> 16);
}

template <bool TF32>
inline float load_f32(const float* p, size_t i) {
    return TF32 ? round_tf32(p[i]) : p[i];
}
// bf16 values are exact in TF32, so no rounding applies.
template <bool TF32>
inline float load_bf16(const uint16_t* p, size_t i) {
    return bf16_to_f32(p[i]);
}

// ---- packing ---------------------------------------------------------------
// op(A) (m x k) is packed into slivers of MR rows: sliver s holds, for each
// p in 0..k, the MR values op(A)[s*MR + r][p] contiguously (zero padded).
// op(B) (k x n) into slivers of NR columns: for each p, op(B)[p][s*NR + c].

constexpr int MR = 16;
constexpr int NR = 6;

template <class T, bool TF32>
inline float load(const T* p, size_t i) {
    if constexpr (sizeof(T) == 4)
        return load_f32<TF32>(reinterpret_cast<const float*>(p), i);
    else
        return load_bf16<TF32>(reinterpret_cast<const uint16_t*>(p), i);
}

template <class T, bool TF32>
void pack_a(const T* A, bool trans, int64_t lda, int m, int k, float* dst) {
    const int slivers = (m + MR - 1) / MR;
    for (int s = 0; s < slivers; ++s) {
        const int i0 = s * MR;
        const int rows = std::min(MR, m - i0);
        float* d = dst + size_t(s) * MR * k;
        if (!trans) {
            // A is m x k: op(A)[i][p] = A[i + p*lda], contiguous in i.
            for (int p = 0; p < k; ++p) {
                const T* col = A + size_t(p) * lda + i0;
                float* dp = d + size_t(p) * MR;
                int r = 0;
                for (; r < rows; ++r) dp[r] = load<T, TF32>(col, r);
                for (; r < MR; ++r) dp[r] = 0.0f;
            }
        } else {
            // A is k x m: op(A)[i][p] = A[p + i*lda], contiguous in p.
            for (int r = 0; r < MR; ++r) {
                if (r < rows) {
                    const T* col = A + size_t(i0 + r) * lda;
                    for (int p = 0; p < k; ++p) d[size_t(p) * MR + r] = load<T, TF32>(col, p);
                } else {
                    for (int p = 0; p < k; ++p) d[size_t(p) * MR + r] = 0.0f;
                }
            }
        }
    }
}

template <class T, bool TF32>
void pack_b(const T* B, bool trans, int64_t ldb, int k, int n, float* dst) {
    const int slivers = (n + NR - 1) / NR;
    for (int s = 0; s < slivers; ++s) {
        const int j0 = s * NR;
        const int cols = std::min(NR, n - j0);
        float* d = dst + size_t(s) * NR * k;
        if (!trans) {
            // B is k x n: op(B)[p][j] = B[p + j*ldb], contiguous in p.
            for (int c = 0; c < NR; ++c) {
                if (c < cols) {
                    const T* col = B + size_t(j0 + c) * ldb;
                    for (int p = 0; p < k; ++p) d[size_t(p) * NR + c] = load<T, TF32>(col, p);
                } else {
                    for (int p = 0; p < k; ++p) d[size_t(p) * NR + c] = 0.0f;
                }
            }
        } else {
            // B is n x k: op(B)[p][j] = B[j + p*ldb], contiguous in j.
            for (int p = 0; p < k; ++p) {
                const T* row = B + size_t(p) * ldb + j0;
                float* dp = d + size_t(p) * NR;
                int c = 0;
                for (; c < cols; ++c) dp[c] = load<T, TF32>(row, c);
                for (; c < NR; ++c) dp[c] = 0.0f;
            }
        }
    }
}

// ---- micro-kernels ---------------------------------------------------------
// out[j*MR + i] = sum over p = 0..k-1, in that order, of a[i][p]*b[p][j], each
// step one fused multiply-add into a single fp32 accumulator (acc = fma(a, b,
// acc), starting from +0). GPU SGEMM kernels also accumulate with FMA.

void kernel_generic(int k, const float* __restrict a, const float* __restrict b,
                    float* __restrict out) {
    float acc[NR][MR];
    for (int j = 0; j < NR; ++j)
        for (int i = 0; i < MR; ++i) acc[j][i] = 0.0f;
    for (int p = 0; p < k; ++p) {
        const float* ap = a + size_t(p) * MR;
        const float* bp = b + size_t(p) * NR;
        for (int j = 0; j < NR; ++j) {
            const float bv = bp[j];
            for (int i = 0; i < MR; ++i) acc[j][i] = std::fmaf(ap[i], bv, acc[j][i]);
        }
    }
    std::memcpy(out, acc, sizeof acc);
}

__attribute__((target("avx2,fma"))) void kernel_avx2(int k, const float* __restrict a,
                                                     const float* __restrict b,
                                                     float* __restrict out) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int p = 0; p < k; ++p) {
        const __m256 a0 = _mm256_loadu_ps(a);
        const __m256 a1 = _mm256_loadu_ps(a + 8);
        __m256 bv;
        bv = _mm256_broadcast_ss(b + 0);
        c00 = _mm256_fmadd_ps(a0, bv, c00);
        c01 = _mm256_fmadd_ps(a1, bv, c01);
        bv = _mm256_broadcast_ss(b + 1);
        c10 = _mm256_fmadd_ps(a0, bv, c10);
        c11 = _mm256_fmadd_ps(a1, bv, c11);
        bv = _mm256_broadcast_ss(b + 2);
        c20 = _mm256_fmadd_ps(a0, bv, c20);
        c21 = _mm256_fmadd_ps(a1, bv, c21);
        bv = _mm256_broadcast_ss(b + 3);
        c30 = _mm256_fmadd_ps(a0, bv, c30);
        c31 = _mm256_fmadd_ps(a1, bv, c31);
        bv = _mm256_broadcast_ss(b + 4);
        c40 = _mm256_fmadd_ps(a0, bv, c40);
        c41 = _mm256_fmadd_ps(a1, bv, c41);
        bv = _mm256_broadcast_ss(b + 5);
        c50 = _mm256_fmadd_ps(a0, bv, c50);
        c51 = _mm256_fmadd_ps(a1, bv, c51);
        a += MR;
        b += NR;
    }
    _mm256_storeu_ps(out + 0 * MR, c00);
    _mm256_storeu_ps(out + 0 * MR + 8, c01);
    _mm256_storeu_ps(out + 1 * MR, c10);
    _mm256_storeu_ps(out + 1 * MR + 8, c11);
    _mm256_storeu_ps(out + 2 * MR, c20);
    _mm256_storeu_ps(out + 2 * MR + 8, c21);
    _mm256_storeu_ps(out + 3 * MR, c30);
    _mm256_storeu_ps(out + 3 * MR + 8, c31);
    _mm256_storeu_ps(out + 4 * MR, c40);
    _mm256_storeu_ps(out + 4 * MR + 8, c41);
    _mm256_storeu_ps(out + 5 * MR, c50);
    _mm256_storeu_ps(out + 5 * MR + 8, c51);
}

// ---- the product -----------------------------------------------------------

struct FloatBuf {
    float* p = nullptr;
    size_t cap = 0;
    ~FloatBuf() { std::free(p); }
    bool reserve(size_t n) {
        if (n <= cap) return true;
        std::free(p);
        p = static_cast<float*>(std::aligned_alloc(64, ((n * 4 + 63) / 64) * 64));
        cap = p ? n : 0;
        return p != nullptr;
    }
};

// D = alpha*acc + beta*C, written as fp32 or bf16. The epilogue is plain
// fp32: alpha*acc rounded, beta*c rounded, then their sum rounded (no fusion).
// beta == 0 writes alpha*acc and never reads C, so NaN/garbage in C is dropped.
template <class TC>
inline void store_c(TC* c, float acc, float alpha, float beta) {
    if constexpr (sizeof(TC) == 4) {
        float* cf = reinterpret_cast<float*>(c);
        *cf = beta == 0.0f ? alpha * acc : alpha * acc + beta * *cf;
    } else {
        uint16_t* ch = reinterpret_cast<uint16_t*>(c);
        *ch = f32_to_bf16(beta == 0.0f ? alpha * acc : alpha * acc + beta * bf16_to_f32(*ch));
    }
}

// Output tiles for B slivers [s0, s1). A slivers are taken in blocks that fit
// in L2 while one B sliver (k x NR) stays in L1.
template <class TC>
void compute_range(int m, int n, int k, const float* ap, const float* bp, TC* C, int64_t ldc,
                   float alpha, float beta, int s0, int s1, bool avx2) {
    const int a_slivers = (m + MR - 1) / MR;
    const size_t a_bytes = size_t(k) * MR * sizeof(float);
    const int a_block = std::max<int>(1, int((256u * 1024u) / std::max<size_t>(a_bytes, 1)));
    alignas(64) float tile[NR * MR];
    for (int ib = 0; ib < a_slivers; ib += a_block) {
        const int ie = std::min(a_slivers, ib + a_block);
        for (int sb = s0; sb < s1; ++sb) {
            const float* bs = bp + size_t(sb) * NR * k;
            const int j0 = sb * NR;
            const int cols = std::min(NR, n - j0);
            for (int sa = ib; sa < ie; ++sa) {
                const float* as = ap + size_t(sa) * MR * k;
                if (avx2)
                    kernel_avx2(k, as, bs, tile);
                else
                    kernel_generic(k, as, bs, tile);
                const int i0 = sa * MR;
                const int rows = std::min(MR, m - i0);
                for (int j = 0; j < cols; ++j) {
                    TC* cc = C + size_t(j0 + j) * ldc + i0;
                    const float* t = tile + j * MR;
                    for (int i = 0; i < rows; ++i) store_c(cc + i, t[i], alpha, beta);
                }
            }
        }
    }
}

template <class TC>
void scale_c(int m, int n, TC* C, int64_t ldc, float beta) {
    // k == 0: C = beta*C (alpha is not used; beta == 0 writes zeros unread).
    for (int j = 0; j < n; ++j) {
        TC* cc = C + size_t(j) * ldc;
        for (int i = 0; i < m; ++i) {
            if constexpr (sizeof(TC) == 4) {
                float* cf = reinterpret_cast<float*>(cc + i);
                *cf = beta == 0.0f ? 0.0f : beta * *cf;
            } else {
                uint16_t* ch = reinterpret_cast<uint16_t*>(cc + i);
                *ch = f32_to_bf16(beta == 0.0f ? 0.0f : beta * bf16_to_f32(*ch));
            }
        }
    }
}

template <class TC>
void multiply(int m, int n, int k, const float* ap, const float* bp, TC* C, int64_t ldc,
              float alpha, float beta) {
    const bool avx2 = use_avx2();
    const int b_slivers = (n + NR - 1) / NR;
    int threads = env_threads();
    const double flops = 2.0 * m * double(n) * k;
    if (flops < 8.0e6) threads = 1;
    threads = std::min(threads, b_slivers);
    if (threads <= 1) {
        compute_range<TC>(m, n, k, ap, bp, C, ldc, alpha, beta, 0, b_slivers, avx2);
        return;
    }
    // Disjoint column ranges: each element is computed by exactly one thread,
    // the same way as single-threaded.
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    auto lo = [&](int t) { return int(int64_t(b_slivers) * t / threads); };
    for (int t = 1; t < threads; ++t)
        pool.emplace_back([=] {
            compute_range<TC>(m, n, k, ap, bp, C, ldc, alpha, beta, lo(t), lo(t + 1), avx2);
        });
    compute_range<TC>(m, n, k, ap, bp, C, ldc, alpha, beta, lo(0), lo(1), avx2);
    for (auto& th : pool) th.join();
}

// ---- the GEMM entry point shared by all variants ---------------------------

struct GemmCall {
    const char* name;
    cublasHandle_t handle;
    int transa, transb, m, n, k;
    const void* alpha;
    const void* beta;
    const void* A;
    int atype, lda;
    long long stride_a;
    const void* B;
    int btype, ldb;
    long long stride_b;
    void* C;
    int ctype, ldc;
    long long stride_c;
    // Pointer-array batches (cublas*Batched): device arrays of matrix pointers.
    const void* const* a_array = nullptr;
    const void* const* b_array = nullptr;
    void* const* c_array = nullptr;
    int batch = 1;
    int compute = COMPUTE_32F;
    int algo = -1;
};

int elem_size(int t) { return t == R_16BF ? 2 : 4; }
const char* type_name(int t) { return t == R_16BF ? "bf16" : "f32"; }
const char* op_name(int op) { return op == OP_N ? "N" : op == OP_T ? "T" : "C"; }

bool valid_algo(int algo) {
    return (algo >= -1 && algo <= 23) || (algo >= 99 && algo <= 115) || algo == 999;
}

// Bytes a column-major rows x cols matrix with leading dimension ld spans.
unsigned __int128 span_bytes(int rows, int cols, int ld, int es) {
    if (rows <= 0 || cols <= 0) return 0;
    return ((unsigned __int128)(cols - 1) * unsigned(ld) + unsigned(rows)) * unsigned(es);
}

bool in_device(__int128 addr, unsigned __int128 bytes) {
    if (bytes == 0) return true;
    if (addr < 0 || (unsigned __int128)addr + bytes > (unsigned __int128)UINT64_MAX) return false;
    return lpaf_emu_device_range(reinterpret_cast<const void*>(uintptr_t(addr)),
                                 uint64_t(bytes)) == 1;
}

// Base address of operand X in batch i.
const void* batch_ptr(const void* base, const void* const* array, long long stride, int es,
                      int i) {
    if (array) return array[i];
    return reinterpret_cast<const void*>(
        uintptr_t(base) + uintptr_t((__int128)i * stride * es));
}

// Checks every batch matrix of one operand lies in device memory.
bool check_operand(const GemmCall& g, char which, const void* base, const void* const* array,
                   long long stride, int rows, int cols, int ld, int type) {
    const int es = elem_size(type);
    const unsigned __int128 span = span_bytes(rows, cols, ld, es);
    if (span == 0) return true;
    if (!array) {
        // Fast path: the hull of all batch matrices in one allocation.
        const __int128 last = (__int128)(g.batch - 1) * stride * es;
        const __int128 lo = std::min<__int128>(0, last);
        const __int128 hi = std::max<__int128>(0, last) + (__int128)span;
        if (in_device((__int128)uintptr_t(base) + lo, (unsigned __int128)(hi - lo))) return true;
    }
    for (int i = 0; i < g.batch; ++i) {
        __int128 addr;
        if (array)
            addr = (__int128)uintptr_t(array[i]);
        else
            addr = (__int128)uintptr_t(base) + (__int128)i * stride * es;
        if (!in_device(addr, span)) {
            lpaf_emu_report(
                "%s: operand %c (batch %d of %d: %d x %d %s, ld %d, %llu bytes at 0x%llx; "
                "m=%d n=%d k=%d op(A)=%s op(B)=%s) lies outside device memory",
                g.name, which, i, g.batch, rows, cols, type_name(type), ld,
                (unsigned long long)span, (unsigned long long)addr, g.m, g.n, g.k,
                op_name(g.transa), op_name(g.transb));
            return false;
        }
    }
    return true;
}

// Reads a float scalar in the handle's pointer mode; false (reported) when a
// device-mode scalar is not in device memory.
bool read_scalar(const GemmCall& g, int pointer_mode, const void* p, const char* what,
                 float* out) {
    if (pointer_mode == PTR_DEVICE && !lpaf_emu_device_range(p, 4)) {
        lpaf_emu_report("%s: %s at %p lies outside device memory (pointer mode DEVICE)", g.name,
                        what, p);
        return false;
    }
    std::memcpy(out, p, 4);
    return true;
}

template <class TA, class TC, bool TF32>
int run_batches(const GemmCall& g, float alpha, float beta) {
    const bool ta = g.transa != OP_N, tb = g.transb != OP_N;
    const int m = g.m, n = g.n, k = g.k;
    const bool shared_a = !g.a_array && g.stride_a == 0;
    const bool shared_b = !g.b_array && g.stride_b == 0;
    FloatBuf abuf, bbuf;
    if (k > 0) {
        const size_t a_elems = size_t((m + MR - 1) / MR) * MR * size_t(k);
        const size_t b_elems = size_t((n + NR - 1) / NR) * NR * size_t(k);
        if (!abuf.reserve(a_elems) || !bbuf.reserve(b_elems)) {
            lpaf_emu_report("%s: out of host memory for packing %d x %d x %d", g.name, m, n, k);
            return ST_EXECUTION_FAILED;
        }
    }
    for (int i = 0; i < g.batch; ++i) {
        TC* c = static_cast<TC*>(const_cast<void*>(batch_ptr(
            g.C, reinterpret_cast<const void* const*>(g.c_array), g.stride_c, sizeof(TC), i)));
        if (k == 0) {
            scale_c<TC>(m, n, c, g.ldc, beta);
            continue;
        }
        if (i == 0 || !shared_a)
            pack_a<TA, TF32>(
                static_cast<const TA*>(batch_ptr(g.A, g.a_array, g.stride_a, sizeof(TA), i)), ta,
                g.lda, m, k, abuf.p);
        if (i == 0 || !shared_b)
            pack_b<TA, TF32>(
                static_cast<const TA*>(batch_ptr(g.B, g.b_array, g.stride_b, sizeof(TA), i)), tb,
                g.ldb, k, n, bbuf.p);
        multiply<TC>(m, n, k, abuf.p, bbuf.p, c, g.ldc, alpha, beta);
    }
    return ST_SUCCESS;
}

int gemm(const GemmCall& g) {
    cublasContext h;
    if (!snapshot(g.handle, &h)) return ST_NOT_INITIALIZED;

    auto valid_op = [](int op) { return op == OP_N || op == OP_T || op == OP_C; };
    if (!valid_op(g.transa) || !valid_op(g.transb)) return ST_INVALID_VALUE;
    if (g.m < 0 || g.n < 0 || g.k < 0) return ST_INVALID_VALUE;
    // Rows of the stored (not transposed) matrices.
    const int a_rows = g.transa == OP_N ? g.m : g.k;
    const int b_rows = g.transb == OP_N ? g.k : g.n;
    if (g.lda < std::max(1, a_rows)) return ST_INVALID_VALUE;
    if (g.ldb < std::max(1, b_rows)) return ST_INVALID_VALUE;
    if (g.ldc < std::max(1, g.m)) return ST_INVALID_VALUE;
    if (g.batch < 0) return ST_INVALID_VALUE;
    if (!g.alpha || !g.beta) return ST_INVALID_VALUE;

    // Supported combinations (scale type fp32 throughout):
    //   f32 x f32 -> f32 with COMPUTE_32F, _PEDANTIC or _FAST_TF32;
    //   bf16 x bf16 -> bf16 or f32 with COMPUTE_32F or _PEDANTIC.
    const int math = h.math_mode & ~MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    bool tf32 = false;
    if (g.atype != g.btype) return ST_NOT_SUPPORTED;
    if (g.atype == R_32F) {
        if (g.ctype != R_32F) return ST_NOT_SUPPORTED;
        if (g.compute == COMPUTE_32F_FAST_TF32) {
            tf32 = true;
        } else if (g.compute == COMPUTE_32F) {
            // COMPUTE_32F follows the math mode; _PEDANTIC ignores it.
            if (math == MATH_TF32_TENSOR_OP) {
                tf32 = true;
            } else if (math == MATH_TENSOR_OP || math == MATH_FP32_EMULATED_BF16X9) {
                // These let the real library use fp16 / bf16x9 arithmetic,
                // which the emulator does not model: refuse loudly.
                lpaf_emu_report("%s: math mode %d with fp32 compute is not emulated", g.name,
                                h.math_mode);
                return ST_NOT_SUPPORTED;
            }
        } else if (g.compute != COMPUTE_32F_PEDANTIC) {
            return ST_NOT_SUPPORTED;
        }
    } else if (g.atype == R_16BF) {
        if (g.ctype != R_32F && g.ctype != R_16BF) return ST_NOT_SUPPORTED;
        if (g.compute != COMPUTE_32F && g.compute != COMPUTE_32F_PEDANTIC)
            return ST_NOT_SUPPORTED;
    } else {
        return ST_NOT_SUPPORTED;
    }
    if (!valid_algo(g.algo)) return ST_NOT_SUPPORTED;

    if (g.m == 0 || g.n == 0 || g.batch == 0) return ST_SUCCESS;

    if (!lpaf_emu_stream_valid(h.stream)) {
        lpaf_emu_report("%s: the handle's stream %p is not a live stream", g.name, h.stream);
        return ST_EXECUTION_FAILED;
    }
    float alpha, beta;
    if (!read_scalar(g, h.pointer_mode, g.alpha, "alpha", &alpha) ||
        !read_scalar(g, h.pointer_mode, g.beta, "beta", &beta))
        return ST_EXECUTION_FAILED;

    // Pointer arrays are device memory read by the kernel (those of A and B
    // only when k > 0).
    const uint64_t arr_bytes = uint64_t(g.batch) * sizeof(void*);
    const struct {
        const void* p;
        char which;
        bool read;
    } arrays[3] = {{g.a_array, 'A', g.k > 0}, {g.b_array, 'B', g.k > 0}, {g.c_array, 'C', true}};
    if (g.a_array || g.b_array || g.c_array) {
        for (const auto& a : arrays) {
            if (a.read && (!a.p || !lpaf_emu_device_range(a.p, arr_bytes))) {
                lpaf_emu_report("%s: pointer array %c (%d pointers at %p) lies outside device "
                                "memory",
                                g.name, a.which, g.batch, a.p);
                return ST_EXECUTION_FAILED;
            }
        }
    }
    // A and B are read only when there is something to multiply; C is always
    // written (and read unless beta == 0).
    if (g.k > 0) {
        if (!check_operand(g, 'A', g.A, g.a_array, g.stride_a, a_rows,
                           g.transa == OP_N ? g.k : g.m, g.lda, g.atype) ||
            !check_operand(g, 'B', g.B, g.b_array, g.stride_b, b_rows,
                           g.transb == OP_N ? g.n : g.k, g.ldb, g.btype))
            return ST_EXECUTION_FAILED;
    }
    if (!check_operand(g, 'C', g.C, reinterpret_cast<const void* const*>(g.c_array), g.stride_c,
                       g.m, g.n, g.ldc, g.ctype))
        return ST_EXECUTION_FAILED;

    lpaf_emu_count_library_call(g.name);

    if (g.atype == R_32F)
        return tf32 ? run_batches<float, float, true>(g, alpha, beta)
                    : run_batches<float, float, false>(g, alpha, beta);
    if (g.ctype == R_32F) return run_batches<uint16_t, float, false>(g, alpha, beta);
    return run_batches<uint16_t, uint16_t, false>(g, alpha, beta);
}

}  // namespace

// ---- exported API ------------------------------------------------------------

LPAF_API int cublasCreate_v2(cublasHandle_t* handle) {
    if (!handle) return ST_INVALID_VALUE;
    auto* h = new (std::nothrow) cublasContext();
    if (!h) return ST_ALLOC_FAILED;
    {
        std::lock_guard<std::mutex> g(g_mu);
        live_handles().insert(h);
    }
    *handle = h;
    return ST_SUCCESS;
}

LPAF_API int cublasDestroy_v2(cublasHandle_t handle) {
    if (!handle) return ST_NOT_INITIALIZED;
    std::lock_guard<std::mutex> g(g_mu);
    // Not freed: see live_handles.
    return live_handles().erase(handle) ? ST_SUCCESS : ST_NOT_INITIALIZED;
}

LPAF_API int cublasSetStream_v2(cublasHandle_t handle, void* stream) {
    // Like the real library, the stream is not validated here but when work
    // is issued on it.
    return with_handle(handle, [&](cublasContext* h) {
        h->stream = stream;
        return int(ST_SUCCESS);
    });
}

LPAF_API int cublasGetStream_v2(cublasHandle_t handle, void** stream) {
    return with_handle(handle, [&](cublasContext* h) {
        if (!stream) return int(ST_INVALID_VALUE);
        *stream = h->stream;
        return int(ST_SUCCESS);
    });
}

LPAF_API int cublasSetMathMode(cublasHandle_t handle, int mode) {
    return with_handle(handle, [&](cublasContext* h) {
        const int base = mode & ~MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
        switch (base) {
            case MATH_DEFAULT:
            case MATH_TENSOR_OP:
            case MATH_PEDANTIC:
            case MATH_TF32_TENSOR_OP:
            case MATH_FP32_EMULATED_BF16X9:
            case MATH_FP64_EMULATED_FIXEDPOINT:
                h->math_mode = mode;
                return int(ST_SUCCESS);
            default:
                return int(ST_INVALID_VALUE);
        }
    });
}

LPAF_API int cublasGetMathMode(cublasHandle_t handle, int* mode) {
    return with_handle(handle, [&](cublasContext* h) {
        if (!mode) return int(ST_INVALID_VALUE);
        *mode = h->math_mode;
        return int(ST_SUCCESS);
    });
}

LPAF_API int cublasSetPointerMode_v2(cublasHandle_t handle, int mode) {
    return with_handle(handle, [&](cublasContext* h) {
        if (mode != PTR_HOST && mode != PTR_DEVICE) return int(ST_INVALID_VALUE);
        h->pointer_mode = mode;
        return int(ST_SUCCESS);
    });
}

LPAF_API int cublasGetPointerMode_v2(cublasHandle_t handle, int* mode) {
    return with_handle(handle, [&](cublasContext* h) {
        if (!mode) return int(ST_INVALID_VALUE);
        *mode = h->pointer_mode;
        return int(ST_SUCCESS);
    });
}

LPAF_API int cublasSetAtomicsMode(cublasHandle_t handle, int mode) {
    return with_handle(handle, [&](cublasContext* h) {
        if (mode != 0 && mode != 1) return int(ST_INVALID_VALUE);
        h->atomics_mode = mode;
        return int(ST_SUCCESS);
    });
}

LPAF_API int cublasGetAtomicsMode(cublasHandle_t handle, int* mode) {
    return with_handle(handle, [&](cublasContext* h) {
        if (!mode) return int(ST_INVALID_VALUE);
        *mode = h->atomics_mode;
        return int(ST_SUCCESS);
    });
}

LPAF_API int cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes) {
    return with_handle(handle, [&](cublasContext* h) {
        // The real library requires 256-byte alignment of a user workspace.
        // It is only recorded: no emulated GEMM uses a workspace.
        if (workspace && (uintptr_t(workspace) % 256) != 0) return int(ST_INVALID_VALUE);
        h->workspace = workspace;
        h->workspace_bytes = workspace ? bytes : 0;
        return int(ST_SUCCESS);
    });
}

LPAF_API const char* cublasGetStatusName(int status) {
    switch (status) {
        case ST_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case ST_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
        case ST_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
        case ST_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case ST_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
        case ST_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
        case ST_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
        case ST_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
        case ST_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
        case ST_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
        default: return "CUBLAS_STATUS_UNKNOWN";
    }
}

LPAF_API const char* cublasGetStatusString(int status) {
    switch (status) {
        case ST_SUCCESS: return "the operation completed successfully";
        case ST_NOT_INITIALIZED: return "the library was not initialized";
        case ST_ALLOC_FAILED: return "the resource allocation failed";
        case ST_INVALID_VALUE: return "an invalid numeric value was used as an argument";
        case ST_ARCH_MISMATCH: return "an absent device architectural feature is required";
        case ST_MAPPING_ERROR: return "an access to GPU memory space failed";
        case ST_EXECUTION_FAILED: return "the GPU program failed to execute";
        case ST_INTERNAL_ERROR: return "an internal operation failed";
        case ST_NOT_SUPPORTED: return "the functionality requested is not supported";
        case ST_LICENSE_ERROR: return "the functionality requested requires some license";
        default: return "unknown error";
    }
}

LPAF_API int cublasGetVersion_v2(cublasHandle_t /*handle*/, int* version) {
    // The version does not depend on the handle (may be null).
    if (!version) return ST_INVALID_VALUE;
    *version = VER_MAJOR * 10000 + VER_MINOR * 100 + VER_PATCH;
    return ST_SUCCESS;
}

LPAF_API int cublasGetProperty(int type, int* value) {
    if (!value) return ST_INVALID_VALUE;
    switch (type) {
        case 0: *value = VER_MAJOR; return ST_SUCCESS;
        case 1: *value = VER_MINOR; return ST_SUCCESS;
        case 2: *value = VER_PATCH; return ST_SUCCESS;
        default: return ST_INVALID_VALUE;
    }
}

LPAF_API size_t cublasGetCudartVersion(void) { return 13000; }

LPAF_API int cublasGemmStridedBatchedEx(cublasHandle_t handle, int transa, int transb, int m,
                                        int n, int k, const void* alpha, const void* A,
                                        int Atype, int lda, long long strideA, const void* B,
                                        int Btype, int ldb, long long strideB, const void* beta,
                                        void* C, int Ctype, int ldc, long long strideC,
                                        int batchCount, int computeType, int algo) {
    GemmCall g{"cublasGemmStridedBatchedEx", handle, transa, transb, m, n, k, alpha, beta,
               A, Atype, lda, strideA, B, Btype, ldb, strideB, C, Ctype, ldc, strideC};
    g.batch = batchCount;
    g.compute = computeType;
    g.algo = algo;
    return gemm(g);
}

LPAF_API int cublasGemmEx(cublasHandle_t handle, int transa, int transb, int m, int n, int k,
                          const void* alpha, const void* A, int Atype, int lda, const void* B,
                          int Btype, int ldb, const void* beta, void* C, int Ctype, int ldc,
                          int computeType, int algo) {
    GemmCall g{"cublasGemmEx", handle, transa, transb, m, n, k, alpha, beta,
               A, Atype, lda, 0, B, Btype, ldb, 0, C, Ctype, ldc, 0};
    g.batch = 1;
    g.compute = computeType;
    g.algo = algo;
    return gemm(g);
}

LPAF_API int cublasGemmBatchedEx(cublasHandle_t handle, int transa, int transb, int m, int n,
                                 int k, const void* alpha, const void* const Aarray[], int Atype,
                                 int lda, const void* const Barray[], int Btype, int ldb,
                                 const void* beta, void* const Carray[], int Ctype, int ldc,
                                 int batchCount, int computeType, int algo) {
    GemmCall g{"cublasGemmBatchedEx", handle, transa, transb, m, n, k, alpha, beta,
               nullptr, Atype, lda, 0, nullptr, Btype, ldb, 0, nullptr, Ctype, ldc, 0};
    g.a_array = Aarray;
    g.b_array = Barray;
    g.c_array = Carray;
    g.batch = batchCount;
    g.compute = computeType;
    g.algo = algo;
    return gemm(g);
}

// The S variants: fp32 everywhere, COMPUTE_32F (so the math mode applies).
LPAF_API int cublasSgemm_v2(cublasHandle_t handle, int transa, int transb, int m, int n, int k,
                            const float* alpha, const float* A, int lda, const float* B,
                            int ldb, const float* beta, float* C, int ldc) {
    GemmCall g{"cublasSgemm_v2", handle, transa, transb, m, n, k, alpha, beta,
               A, R_32F, lda, 0, B, R_32F, ldb, 0, C, R_32F, ldc, 0};
    g.batch = 1;
    g.compute = COMPUTE_32F;
    g.algo = -1;
    return gemm(g);
}

LPAF_API int cublasSgemmStridedBatched(cublasHandle_t handle, int transa, int transb, int m,
                                       int n, int k, const float* alpha, const float* A,
                                       int lda, long long strideA, const float* B, int ldb,
                                       long long strideB, const float* beta, float* C, int ldc,
                                       long long strideC, int batchCount) {
    GemmCall g{"cublasSgemmStridedBatched", handle, transa, transb, m, n, k, alpha, beta,
               A, R_32F, lda, strideA, B, R_32F, ldb, strideB, C, R_32F, ldc, strideC};
    g.batch = batchCount;
    g.compute = COMPUTE_32F;
    g.algo = -1;
    return gemm(g);
}

LPAF_API int cublasSgemmBatched(cublasHandle_t handle, int transa, int transb, int m, int n,
                                int k, const float* alpha, const float* const Aarray[], int lda,
                                const float* const Barray[], int ldb, const float* beta,
                                float* const Carray[], int ldc, int batchCount) {
    GemmCall g{"cublasSgemmBatched", handle, transa, transb, m, n, k, alpha, beta,
               nullptr, R_32F, lda, 0, nullptr, R_32F, ldb, 0, nullptr, R_32F, ldc, 0};
    g.a_array = reinterpret_cast<const void* const*>(Aarray);
    g.b_array = reinterpret_cast<const void* const*>(Barray);
    g.c_array = reinterpret_cast<void* const*>(Carray);
    g.batch = batchCount;
    g.compute = COMPUTE_32F;
    g.algo = -1;
    return gemm(g);
}
