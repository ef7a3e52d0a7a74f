// Standalone check of the emulated cuBLAS (emulator/cublas.cpp), built
// together with it and with fake definitions of the emu_runtime.h entry
// points (a table of fake device allocations and streams), so it needs
// neither the emulated driver nor a GPU. Run by run_cublas_check.sh.
//
// References: a plain double-precision loop (tolerance) and a sequential
// fp32 FMA loop with the emulator's documented rounding (bit for bit).

#include "../emu_runtime.h"

#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

// ---- fake runtime ------------------------------------------------------------

namespace fake {
std::mutex mu;
std::map<uintptr_t, uint64_t> allocs;  // base -> bytes
std::map<std::string, int> counts;
std::vector<const void*> streams;
std::string last_report;

void* dev_alloc(size_t bytes) {
    void* p = std::aligned_alloc(256, ((bytes + 255) / 256) * 256 + 256);
    std::lock_guard<std::mutex> g(mu);
    allocs[uintptr_t(p)] = bytes;
    return p;
}
void dev_free(void* p) {
    {
        std::lock_guard<std::mutex> g(mu);
        allocs.erase(uintptr_t(p));
    }
    std::free(p);
}
int count(const char* name) {
    std::lock_guard<std::mutex> g(mu);
    return counts[name];
}
std::string report() {
    std::lock_guard<std::mutex> g(mu);
    return last_report;
}
}  // namespace fake

extern "C" int lpaf_emu_device_range(const void* p, uint64_t bytes) {
    if (bytes == 0) return 1;
    std::lock_guard<std::mutex> g(fake::mu);
    uintptr_t a = uintptr_t(p);
    auto it = fake::allocs.upper_bound(a);
    if (it == fake::allocs.begin()) return 0;
    --it;
    return a >= it->first && a - it->first <= it->second && bytes <= it->second - (a - it->first);
}
extern "C" void lpaf_emu_count_library_call(const char* name) {
    std::lock_guard<std::mutex> g(fake::mu);
    fake::counts[name]++;
}
extern "C" int lpaf_emu_stream_valid(const void* stream) {
    if (!stream) return 1;
    std::lock_guard<std::mutex> g(fake::mu);
    for (auto s : fake::streams)
        if (s == stream) return 1;
    return 0;
}
extern "C" void lpaf_emu_report(const char* fmt, ...) {
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    std::lock_guard<std::mutex> g(fake::mu);
    fake::last_report = buf;
}

// ---- the API under test --------------------------------------------------------

struct cublasContext;
typedef cublasContext* cublasHandle_t;
extern "C" {
int cublasCreate_v2(cublasHandle_t*);
int cublasDestroy_v2(cublasHandle_t);
int cublasSetStream_v2(cublasHandle_t, void*);
int cublasGetStream_v2(cublasHandle_t, void**);
int cublasSetMathMode(cublasHandle_t, int);
int cublasGetMathMode(cublasHandle_t, int*);
int cublasSetPointerMode_v2(cublasHandle_t, int);
int cublasGetPointerMode_v2(cublasHandle_t, int*);
int cublasSetWorkspace_v2(cublasHandle_t, void*, size_t);
const char* cublasGetStatusString(int);
const char* cublasGetStatusName(int);
int cublasGetVersion_v2(cublasHandle_t, int*);
int cublasGetProperty(int, int*);
int cublasGemmStridedBatchedEx(cublasHandle_t, int, int, int, int, int, const void*, const void*,
                               int, int, long long, const void*, int, int, long long,
                               const void*, void*, int, int, long long, int, int, int);
int cublasGemmEx(cublasHandle_t, int, int, int, int, int, const void*, const void*, int, int,
                 const void*, int, int, const void*, void*, int, int, int, int);
int cublasGemmBatchedEx(cublasHandle_t, int, int, int, int, int, const void*,
                        const void* const[], int, int, const void* const[], int, int,
                        const void*, void* const[], int, int, int, int, int);
int cublasSgemm_v2(cublasHandle_t, int, int, int, int, int, const float*, const float*, int,
                   const float*, int, const float*, float*, int);
int cublasSgemmStridedBatched(cublasHandle_t, int, int, int, int, int, const float*,
                              const float*, int, long long, const float*, int, long long,
                              const float*, float*, int, long long, int);
}

enum {
    SUCCESS = 0,
    NOT_INITIALIZED = 1,
    INVALID_VALUE = 7,
    EXECUTION_FAILED = 13,
    NOT_SUPPORTED = 15
};
enum { OPN = 0, OPT = 1, OPC = 2 };
enum { R32F = 0, R16F = 2, R16BF = 14 };
enum { C32F = 68, C32F_PED = 69, C32F_TF32 = 77 };
enum { ALGO = -1 };

// ---- harness -----------------------------------------------------------------

static int g_pass = 0, g_fail = 0;
#define CHECK(cond, ...)                                 \
    do {                                                 \
        if (cond) {                                      \
            ++g_pass;                                    \
        } else {                                         \
            ++g_fail;                                    \
            std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
            std::printf(__VA_ARGS__);                    \
            std::printf("\n");                           \
        }                                                \
    } while (0)

static uint32_t fbits(float x) {
    uint32_t b;
    std::memcpy(&b, &x, 4);
    return b;
}
static float ffrom(uint32_t b) {
    float x;
    std::memcpy(&x, &b, 4);
    return x;
}
static bool same_bits(float a, float b) { return fbits(a) == fbits(b); }

// TF32 as lpaf's CPU reference (round_tf32) defines it.
static float tf32(float x) {
    if (!std::isfinite(x)) return x;
    uint32_t b = fbits(x);
    uint32_t lsb = (b >> 13) & 1;
    return ffrom((b + 0x0fff + lsb) & ~0x1fffu);
}
static float bf2f(uint16_t h) { return ffrom(uint32_t(h) << 16); }
// Round to nearest even written independently of the library: pick the
// nearer of the two bf16 neighbours in double arithmetic.
static uint16_t f2bf(float x) {
    if (std::isnan(x)) return 0x7fc0;
    uint32_t b = fbits(x);
    uint16_t lo = uint16_t(b >> 16);
    if ((b & 0xffff) == 0) return lo;
    uint16_t hi = uint16_t(lo + 1);  // next away from zero (same sign)
    double dx = x, dlo = bf2f(lo), dhi = bf2f(hi);
    if (std::isinf(dhi)) {
        // Beyond the largest bf16: inf when at or past the midpoint.
        double mid = dlo + (dlo - double(bf2f(uint16_t(lo - 1)))) / 2;
        return std::fabs(dx) >= std::fabs(mid) ? hi : lo;
    }
    double elo = std::fabs(dx - dlo), ehi = std::fabs(dhi - dx);
    if (elo < ehi) return lo;
    if (ehi < elo) return hi;
    return (lo & 1) ? hi : lo;
}

// A GEMM problem in column-major storage (host vectors, copied to fake
// device memory for the call).
struct Prob {
    int ta = OPN, tb = OPN, m = 0, n = 0, k = 0, lda = 1, ldb = 1, ldc = 1, batch = 1;
    long long sa = 0, sb = 0, sc = 0;
    int atype = R32F, ctype = R32F, compute = C32F;
    float alpha = 1, beta = 0;
    bool tf = false;  // inputs rounded to TF32
    int a_rows() const { return ta == OPN ? m : k; }
    int a_cols() const { return ta == OPN ? k : m; }
    int b_rows() const { return tb == OPN ? k : n; }
    int b_cols() const { return tb == OPN ? n : k; }
    size_t a_elems() const {
        return size_t((batch - 1) * sa) + size_t(a_cols() > 0 ? (a_cols() - 1) * lda + a_rows() : 0);
    }
    size_t b_elems() const {
        return size_t((batch - 1) * sb) + size_t(b_cols() > 0 ? (b_cols() - 1) * ldb + b_rows() : 0);
    }
    size_t c_elems() const { return size_t((batch - 1) * sc) + size_t(n > 0 ? (n - 1) * ldc + m : 0); }
};

static std::mt19937 rng(12345);
static float urand() { return std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng); }

// Host data for a problem: inputs always kept as fp32 values (bf16-exact when
// the type is bf16), C as fp32 values too.
struct Data {
    std::vector<float> a, b, c;
};
static Data make_data(const Prob& p) {
    Data d;
    d.a.resize(std::max<size_t>(p.a_elems(), 1));
    d.b.resize(std::max<size_t>(p.b_elems(), 1));
    d.c.resize(std::max<size_t>(p.c_elems(), 1));
    auto fill = [&](std::vector<float>& v, int type) {
        for (auto& x : v) {
            x = urand();
            if (type == R16BF) x = bf2f(f2bf(x));
        }
    };
    fill(d.a, p.atype);
    fill(d.b, p.atype);
    fill(d.c, p.ctype);
    return d;
}

static float opa(const Prob& p, const Data& d, int bi, int i, int q) {
    size_t o = size_t(bi * p.sa);
    float v = p.ta == OPN ? d.a[o + i + size_t(q) * p.lda] : d.a[o + q + size_t(i) * p.lda];
    return p.tf ? tf32(v) : v;
}
static float opb(const Prob& p, const Data& d, int bi, int q, int j) {
    size_t o = size_t(bi * p.sb);
    float v = p.tb == OPN ? d.b[o + q + size_t(j) * p.ldb] : d.b[o + j + size_t(q) * p.ldb];
    return p.tf ? tf32(v) : v;
}

// Sequential fp32 FMA reference (the emulator's documented semantics);
// batches in order, so stride-0 C sees earlier batches' results.
static std::vector<float> ref_fma(const Prob& p, const Data& d) {
    std::vector<float> c = d.c;
    for (int bi = 0; bi < p.batch; ++bi)
        for (int j = 0; j < p.n; ++j)
            for (int i = 0; i < p.m; ++i) {
                float& out = c[size_t(bi * p.sc) + i + size_t(j) * p.ldc];
                if (p.k == 0) {
                    out = p.beta == 0 ? 0.0f : p.beta * out;
                } else {
                    float acc = 0.0f;
                    for (int q = 0; q < p.k; ++q) acc = std::fmaf(opa(p, d, bi, i, q), opb(p, d, bi, q, j), acc);
                    out = p.beta == 0 ? p.alpha * acc : p.alpha * acc + p.beta * out;
                }
                if (p.ctype == R16BF) out = bf2f(f2bf(out));
            }
    return c;
}

// Double reference and a tolerance per element, batches in order (so a
// stride-0 C accumulates); true when got matches everywhere.
static bool near_double(const Prob& p, const Data& d, const std::vector<float>& got,
                        double* worst) {
    std::vector<double> c(d.c.begin(), d.c.end()), tol(d.c.size(), 0.0);
    std::vector<char> touched(d.c.size(), 0);
    for (int bi = 0; bi < p.batch; ++bi)
        for (int j = 0; j < p.n; ++j)
            for (int i = 0; i < p.m; ++i) {
                size_t idx = size_t(bi * p.sc) + i + size_t(j) * p.ldc;
                double s = 0, sa = 0;
                for (int q = 0; q < p.k; ++q) {
                    double t = double(opa(p, d, bi, i, q)) * opb(p, d, bi, q, j);
                    s += t;
                    sa += std::fabs(t);
                }
                double want = 0, t = 0;
                if (p.k > 0) {
                    want = p.alpha * s;
                    t = std::fabs(p.alpha) * sa;
                }
                if (p.beta != 0) {
                    want += p.beta * c[idx];
                    t += std::fabs(p.beta * c[idx]);
                }
                double e = (p.k + 4) * 1.2e-7 * t + std::fabs(p.beta) * tol[idx] + 1e-30;
                if (p.ctype == R16BF) e += std::fabs(want) * (1.0 / 256);
                c[idx] = want;
                tol[idx] = e;
                touched[idx] = 1;
            }
    bool ok = true;
    *worst = 0;
    for (size_t idx = 0; idx < c.size(); ++idx) {
        if (!touched[idx]) continue;
        double err = std::fabs(double(got[idx]) - c[idx]);
        if (!(err <= tol[idx])) ok = false;
        if (err / tol[idx] > *worst) *worst = err / tol[idx];
    }
    return ok;
}

struct Dev {
    void* a = nullptr;
    void* b = nullptr;
    void* c = nullptr;
    ~Dev() {
        if (a) fake::dev_free(a);
        if (b) fake::dev_free(b);
        if (c) fake::dev_free(c);
    }
};

static void* upload(const std::vector<float>& v, int type) {
    size_t es = type == R16BF ? 2 : 4;
    void* p = fake::dev_alloc(v.size() * es);
    if (type == R16BF) {
        auto* h = static_cast<uint16_t*>(p);
        for (size_t i = 0; i < v.size(); ++i) h[i] = f2bf(v[i]);
    } else {
        std::memcpy(p, v.data(), v.size() * 4);
    }
    return p;
}
static std::vector<float> download(const void* p, size_t n, int type) {
    std::vector<float> v(n);
    if (type == R16BF) {
        auto* h = static_cast<const uint16_t*>(p);
        for (size_t i = 0; i < n; ++i) v[i] = bf2f(h[i]);
    } else {
        std::memcpy(v.data(), p, n * 4);
    }
    return v;
}

static int call_sbex(cublasHandle_t h, const Prob& p, const void* a, const void* b, void* c) {
    return cublasGemmStridedBatchedEx(h, p.ta, p.tb, p.m, p.n, p.k, &p.alpha, a, p.atype, p.lda,
                                      p.sa, b, p.atype, p.ldb, p.sb, &p.beta, c, p.ctype, p.ldc,
                                      p.sc, p.batch, p.compute, ALGO);
}

// Runs p through cublasGemmStridedBatchedEx and checks it bit for bit
// against ref_fma and within tolerance against the double reference.
static void run_prob(cublasHandle_t h, const Prob& p, const char* what, Data* keep = nullptr) {
    Data d = make_data(p);
    if (keep) d = *keep;
    Dev dv;
    dv.a = upload(d.a, p.atype);
    dv.b = upload(d.b, p.atype);
    dv.c = upload(d.c, p.ctype);
    int st = call_sbex(h, p, dv.a, dv.b, dv.c);
    CHECK(st == SUCCESS, "%s: status %d", what, st);
    if (st != SUCCESS) return;
    std::vector<float> got = download(dv.c, d.c.size(), p.ctype);
    std::vector<float> want = ref_fma(p, d);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < got.size(); ++i)
        if (!same_bits(got[i], want[i]) && !(std::isnan(got[i]) && std::isnan(want[i]))) {
            if (!bad) first = i;
            ++bad;
        }
    CHECK(bad == 0, "%s: %zu elements differ from the fp32 FMA reference (first at %zu: %.9g vs %.9g)",
          what, bad, first, bad ? got[first] : 0.0f, bad ? want[first] : 0.0f);
    double worst;
    bool ok = near_double(p, d, got, &worst);
    CHECK(ok, "%s: off the double reference (worst err/tol %.3g)", what, worst);
}

static Prob basic(int ta, int tb, int m, int n, int k, int pad = 0) {
    Prob p;
    p.ta = ta;
    p.tb = tb;
    p.m = m;
    p.n = n;
    p.k = k;
    p.lda = std::max(1, p.a_rows()) + pad;
    p.ldb = std::max(1, p.b_rows()) + pad;
    p.ldc = std::max(1, m) + pad;
    return p;
}

// ---- tests -------------------------------------------------------------------

static void test_handle_api() {
    cublasHandle_t h = nullptr;
    CHECK(cublasCreate_v2(&h) == SUCCESS && h, "create");
    CHECK(cublasCreate_v2(nullptr) == INVALID_VALUE, "create(null)");
    void* s = reinterpret_cast<void*>(1);
    CHECK(cublasGetStream_v2(h, &s) == SUCCESS && s == nullptr, "default stream is null");
    int fake_stream;
    {
        std::lock_guard<std::mutex> g(fake::mu);
        fake::streams.push_back(&fake_stream);
    }
    CHECK(cublasSetStream_v2(h, &fake_stream) == SUCCESS, "set stream");
    CHECK(cublasGetStream_v2(h, &s) == SUCCESS && s == &fake_stream, "get stream");
    int mode = -1;
    CHECK(cublasGetMathMode(h, &mode) == SUCCESS && mode == 0, "default math mode");
    CHECK(cublasSetMathMode(h, 3) == SUCCESS, "set TF32 math");
    CHECK(cublasGetMathMode(h, &mode) == SUCCESS && mode == 3, "get math mode");
    CHECK(cublasSetMathMode(h, 3 | 16) == SUCCESS, "math mode | disallow flag");
    CHECK(cublasSetMathMode(h, 77) == INVALID_VALUE, "bad math mode");
    CHECK(cublasGetPointerMode_v2(h, &mode) == SUCCESS && mode == 0, "default pointer mode");
    CHECK(cublasSetPointerMode_v2(h, 1) == SUCCESS, "set pointer mode");
    CHECK(cublasGetPointerMode_v2(h, &mode) == SUCCESS && mode == 1, "get pointer mode");
    CHECK(cublasSetPointerMode_v2(h, 2) == INVALID_VALUE, "bad pointer mode");
    CHECK(cublasGetPointerMode_v2(h, nullptr) == INVALID_VALUE, "get pointer mode(null)");
    void* ws = fake::dev_alloc(4096);
    CHECK(cublasSetWorkspace_v2(h, ws, 4096) == SUCCESS, "set workspace");
    CHECK(cublasSetWorkspace_v2(h, static_cast<char*>(ws) + 4, 64) == INVALID_VALUE,
          "misaligned workspace");
    CHECK(cublasSetWorkspace_v2(h, nullptr, 0) == SUCCESS, "clear workspace");
    fake::dev_free(ws);
    int ver = 0;
    CHECK(cublasGetVersion_v2(h, &ver) == SUCCESS && ver == 130000, "version %d", ver);
    int major = 0;
    CHECK(cublasGetProperty(0, &major) == SUCCESS && major == 13, "major version");
    CHECK(std::strcmp(cublasGetStatusName(7), "CUBLAS_STATUS_INVALID_VALUE") == 0, "status name");
    CHECK(std::strlen(cublasGetStatusString(13)) > 0, "status string");
    CHECK(cublasDestroy_v2(h) == SUCCESS, "destroy");
    CHECK(cublasDestroy_v2(h) == NOT_INITIALIZED, "destroy twice");
    CHECK(cublasSetStream_v2(h, nullptr) == NOT_INITIALIZED, "set stream on destroyed handle");
    CHECK(cublasGetMathMode(nullptr, &mode) == NOT_INITIALIZED, "null handle");
    {
        std::lock_guard<std::mutex> g(fake::mu);
        fake::streams.clear();
    }
}

static void test_products(cublasHandle_t h) {
    const char* names[2] = {"N", "T"};
    char what[128];
    // All op combinations, ragged sizes (not multiples of the tiles), ld > rows.
    for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb)
            for (int pad : {0, 3}) {
                Prob p = basic(ta, tb, 37, 29, 23, pad);
                p.alpha = 1.5f;
                p.beta = -0.75f;
                std::snprintf(what, sizeof what, "op %s%s pad %d", names[ta], names[tb], pad);
                run_prob(h, p, what);
            }
    // CUBLAS_OP_C acts as T for real types.
    {
        Prob p = basic(OPT, OPT, 20, 13, 9);
        Data d = make_data(p);
        Prob pc = p;
        pc.ta = OPC;
        pc.tb = OPC;
        Dev dv;
        dv.a = upload(d.a, R32F);
        dv.b = upload(d.b, R32F);
        dv.c = upload(d.c, R32F);
        CHECK(call_sbex(h, pc, dv.a, dv.b, dv.c) == SUCCESS, "op C status");
        auto got = download(dv.c, d.c.size(), R32F);
        auto want = ref_fma(p, d);
        CHECK(std::memcmp(got.data(), want.data(), got.size() * 4) == 0, "op C == op T");
    }
    // Tiny and single-element shapes.
    run_prob(h, basic(OPN, OPN, 1, 1, 1), "1x1x1");
    run_prob(h, basic(OPT, OPN, 1, 7, 300), "1x7x300");
    run_prob(h, basic(OPN, OPT, 17, 1, 5), "17x1x5");
    // Larger than one block, so several A blocks and (with LPAF_EMU_THREADS)
    // several threads.
    {
        Prob p = basic(OPT, OPN, 300, 203, 501, 1);
        p.beta = 0.5f;
        run_prob(h, p, "300x203x501");
    }
    // Strided batches, including stride 0 (broadcast) for A, B and C.
    {
        Prob p = basic(OPN, OPT, 19, 11, 7, 2);
        p.batch = 4;
        p.sa = (long long)p.lda * p.a_cols() + 5;
        p.sb = (long long)p.ldb * p.b_cols() + 1;
        p.sc = (long long)p.ldc * p.n + 3;
        p.beta = 1.0f;
        run_prob(h, p, "strided batch");
        Prob q = p;
        q.sa = 0;
        run_prob(h, q, "batch, strideA 0");
        q = p;
        q.sb = 0;
        run_prob(h, q, "batch, strideB 0");
        q = p;
        q.sc = 0;
        q.beta = 0.5f;
        run_prob(h, q, "batch, strideC 0 (accumulates in batch order)");
    }
}

static void test_beta_zero_and_k_zero(cublasHandle_t h) {
    // beta == 0: C is not read, NaN and inf in C do not propagate.
    {
        Prob p = basic(OPN, OPN, 21, 8, 5, 1);
        p.alpha = 2.0f;
        Data d = make_data(p);
        for (size_t i = 0; i < d.c.size(); ++i) d.c[i] = (i % 2) ? NAN : INFINITY;
        Dev dv;
        dv.a = upload(d.a, R32F);
        dv.b = upload(d.b, R32F);
        dv.c = upload(d.c, R32F);
        CHECK(call_sbex(h, p, dv.a, dv.b, dv.c) == SUCCESS, "beta 0 status");
        auto got = download(dv.c, d.c.size(), R32F);
        bool finite = true;
        for (int j = 0; j < p.n; ++j)
            for (int i = 0; i < p.m; ++i) finite &= std::isfinite(got[i + size_t(j) * p.ldc]);
        CHECK(finite, "beta 0 with NaN/inf in C gives finite results");
        auto want = ref_fma(p, d);
        bool same = true;
        for (int j = 0; j < p.n; ++j)
            for (int i = 0; i < p.m; ++i)
                same &= same_bits(got[i + size_t(j) * p.ldc], want[i + size_t(j) * p.ldc]);
        CHECK(same, "beta 0 equals alpha*acc");
        // Padding rows (ld > m) are not touched.
        CHECK(std::isnan(got[p.m + 1 * p.ldc]) || std::isinf(got[p.m + 1 * p.ldc]),
              "beta 0 leaves the padding alone");
    }
    // Same through bf16 output.
    {
        Prob p = basic(OPT, OPN, 9, 4, 6);
        p.atype = R16BF;
        p.ctype = R16BF;
        Data d = make_data(p);
        for (auto& x : d.c) x = NAN;
        run_prob(h, p, "bf16 out, beta 0, NaN C", &d);
    }
    // k == 0: C = beta*C; beta == 0 writes zeros even over NaN.
    {
        Prob p = basic(OPN, OPN, 6, 5, 0);
        p.alpha = NAN;  // unused when k == 0
        p.beta = 3.0f;
        run_prob(h, p, "k = 0, beta 3");
        p.beta = 0.0f;
        Data d = make_data(p);
        for (auto& x : d.c) x = NAN;
        run_prob(h, p, "k = 0, beta 0 over NaN", &d);
        Dev dv;
        dv.c = upload(d.c, R32F);
        // A and B are not read when k == 0 (no device memory needed).
        int st = call_sbex(h, p, nullptr, nullptr, dv.c);
        CHECK(st == SUCCESS, "k = 0 with null A/B: status %d", st);
        auto got = download(dv.c, d.c.size(), R32F);
        CHECK(got[0] == 0.0f && got[6 * 5 - 1] == 0.0f, "k = 0 beta 0 zeros");
    }
    // m == 0, n == 0, batch == 0: success, nothing touched, nothing counted.
    {
        int before = fake::count("cublasGemmStridedBatchedEx");
        float c = 7.0f;
        Prob p = basic(OPN, OPN, 0, 4, 3);
        CHECK(call_sbex(h, p, nullptr, nullptr, &c) == SUCCESS, "m = 0");
        p = basic(OPN, OPN, 4, 0, 3);
        CHECK(call_sbex(h, p, nullptr, nullptr, &c) == SUCCESS, "n = 0");
        p = basic(OPN, OPN, 4, 4, 3);
        p.batch = 0;
        CHECK(call_sbex(h, p, nullptr, nullptr, &c) == SUCCESS, "batch = 0");
        CHECK(c == 7.0f, "quick returns do not touch C");
        CHECK(fake::count("cublasGemmStridedBatchedEx") == before, "quick returns are not counted");
    }
}

static void test_invalid(cublasHandle_t h) {
    float a[64] = {}, b[64] = {}, c[64] = {};
    struct Case {
        const char* what;
        int ta, tb, m, n, k, lda, ldb, ldc, batch, want;
    };
    const Case cases[] = {
        {"valid", OPN, OPN, 2, 2, 2, 2, 2, 2, 1, SUCCESS},
        {"m < 0", OPN, OPN, -1, 2, 2, 2, 2, 2, 1, INVALID_VALUE},
        {"n < 0", OPN, OPN, 2, -1, 2, 2, 2, 2, 1, INVALID_VALUE},
        {"k < 0", OPN, OPN, 2, 2, -1, 2, 2, 2, 1, INVALID_VALUE},
        {"batch < 0", OPN, OPN, 2, 2, 2, 2, 2, 2, -1, INVALID_VALUE},
        {"transa 3 (CONJG)", 3, OPN, 2, 2, 2, 2, 2, 2, 1, INVALID_VALUE},
        {"transb 9", OPN, 9, 2, 2, 2, 2, 2, 2, 1, INVALID_VALUE},
        {"lda < m (N)", OPN, OPN, 3, 2, 2, 2, 2, 3, 1, INVALID_VALUE},
        {"lda < k (T)", OPT, OPN, 2, 2, 3, 2, 3, 2, 1, INVALID_VALUE},
        {"lda = k (T) ok although < m", OPT, OPN, 4, 2, 2, 2, 2, 4, 1, SUCCESS},
        {"ldb < k (N)", OPN, OPN, 2, 2, 3, 2, 2, 2, 1, INVALID_VALUE},
        {"ldb < n (T)", OPN, OPT, 2, 3, 2, 2, 2, 2, 1, INVALID_VALUE},
        {"ldb = n (T) ok although < k", OPN, OPT, 2, 2, 4, 2, 2, 2, 1, SUCCESS},
        {"ldc < m", OPN, OPN, 3, 2, 2, 3, 2, 2, 1, INVALID_VALUE},
        {"k = 0, lda = 0 (N)", OPN, OPN, 2, 2, 0, 0, 1, 2, 1, INVALID_VALUE},
        {"k = 0, lda = 0 (T)", OPT, OPN, 2, 2, 0, 0, 1, 2, 1, INVALID_VALUE},
        {"k = 0, ldb = 0 (N)", OPN, OPN, 2, 2, 0, 2, 0, 2, 1, INVALID_VALUE},
        {"k = 0, valid lds", OPT, OPN, 2, 2, 0, 1, 1, 2, 1, SUCCESS},
        {"m = 0, ldc = 0", OPN, OPN, 0, 2, 2, 1, 2, 0, 1, INVALID_VALUE},
        {"m = 0, lda = 0", OPN, OPN, 0, 2, 2, 0, 2, 1, 1, INVALID_VALUE},
        {"n = 0, ldb = 0 (T)", OPN, OPT, 2, 0, 2, 2, 0, 2, 1, INVALID_VALUE},
        {"n = 0, ldb = 1 (T)", OPN, OPT, 2, 0, 2, 2, 1, 2, 1, SUCCESS},
        {"batch 0, lda bad", OPN, OPN, 2, 2, 2, 1, 2, 2, 0, INVALID_VALUE},
    };
    void* da = fake::dev_alloc(sizeof a);
    void* db = fake::dev_alloc(sizeof b);
    void* dc = fake::dev_alloc(sizeof c);
    std::memset(da, 0, sizeof a);
    std::memset(db, 0, sizeof b);
    std::memset(dc, 0, sizeof c);
    float one = 1, zero = 0;
    for (const Case& t : cases) {
        int st = cublasGemmStridedBatchedEx(h, t.ta, t.tb, t.m, t.n, t.k, &one, da, R32F, t.lda, 0,
                                            db, R32F, t.ldb, 0, &zero, dc, R32F, t.ldc, 0, t.batch,
                                            C32F, ALGO);
        CHECK(st == t.want, "GemmStridedBatchedEx %s: status %d, want %d", t.what, st, t.want);
        if (t.batch == 1) {
            st = cublasGemmEx(h, t.ta, t.tb, t.m, t.n, t.k, &one, da, R32F, t.lda, db, R32F, t.ldb,
                              &zero, dc, R32F, t.ldc, C32F, ALGO);
            CHECK(st == t.want, "GemmEx %s: status %d, want %d", t.what, st, t.want);
            st = cublasSgemm_v2(h, t.ta, t.tb, t.m, t.n, t.k, &one, (float*)da, t.lda, (float*)db,
                                t.ldb, &zero, (float*)dc, t.ldc);
            CHECK(st == t.want, "Sgemm %s: status %d, want %d", t.what, st, t.want);
        }
    }
    auto sb = [&](cublasHandle_t hh, const void* al, const void* be, int at, int bt, int ct,
                  int comp, int algo) {
        return cublasGemmStridedBatchedEx(hh, OPN, OPN, 2, 2, 2, al, da, at, 2, 0, db, bt, 2, 0,
                                          be, dc, ct, 2, 0, 1, comp, algo);
    };
    CHECK(sb(h, nullptr, &zero, R32F, R32F, R32F, C32F, ALGO) == INVALID_VALUE, "alpha null");
    CHECK(sb(h, &one, nullptr, R32F, R32F, R32F, C32F, ALGO) == INVALID_VALUE, "beta null");
    CHECK(sb(nullptr, &one, &zero, R32F, R32F, R32F, C32F, ALGO) == NOT_INITIALIZED, "null handle");
    cublasHandle_t dead;
    cublasCreate_v2(&dead);
    cublasDestroy_v2(dead);
    CHECK(sb(dead, &one, &zero, R32F, R32F, R32F, C32F, ALGO) == NOT_INITIALIZED,
          "destroyed handle");
    // Handle checked before anything else.
    CHECK(cublasGemmStridedBatchedEx(nullptr, 9, 9, -1, -1, -1, nullptr, da, R32F, 0, 0, db, R32F,
                                     0, 0, nullptr, dc, R32F, 0, 0, -1, C32F, ALGO) ==
              NOT_INITIALIZED,
          "handle checked first");
    // Unsupported types / compute / algo.
    CHECK(sb(h, &one, &zero, R16F, R16F, R32F, C32F, ALGO) == NOT_SUPPORTED, "fp16 inputs");
    CHECK(sb(h, &one, &zero, R32F, R16BF, R32F, C32F, ALGO) == NOT_SUPPORTED, "mixed A/B types");
    CHECK(sb(h, &one, &zero, R32F, R32F, R16BF, C32F, ALGO) == NOT_SUPPORTED, "f32 in, bf16 out");
    CHECK(sb(h, &one, &zero, R16BF, R16BF, R32F, C32F_TF32, ALGO) == NOT_SUPPORTED,
          "bf16 with FAST_TF32");
    CHECK(sb(h, &one, &zero, R32F, R32F, R32F, 70 /*64F*/, ALGO) == NOT_SUPPORTED, "64F compute");
    CHECK(sb(h, &one, &zero, R32F, R32F, R32F, C32F, 50) == NOT_SUPPORTED, "bad algo");
    CHECK(sb(h, &one, &zero, R32F, R32F, R32F, C32F, 99) == SUCCESS, "tensor-op algo");
    CHECK(sb(h, &one, &zero, R16BF, R16BF, R16BF, C32F, ALGO) == SUCCESS, "bf16 -> bf16");
    CHECK(sb(h, &one, &zero, R16BF, R16BF, R32F, C32F_PED, ALGO) == SUCCESS, "bf16 -> f32");
    fake::dev_free(da);
    fake::dev_free(db);
    fake::dev_free(dc);
}

static void test_tf32(cublasHandle_t h) {
    // The rounding itself: ties go to even, 1 + 2^-11 is exactly halfway.
    CHECK(tf32(1.0f + 0x1p-11f) == 1.0f, "tie to even (down)");
    CHECK(tf32(1.0f + 3 * 0x1p-11f) == 1.0f + 0x1p-9f, "tie to even (up)");
    CHECK(tf32(1.0f + 0x1p-12f) == 1.0f, "below half");
    // A product where TF32 and fp32 differ: a = 1 + 2^-12 rounds to 1.
    float av[4] = {1.0f + 0x1p-12f, 1.0f + 3 * 0x1p-11f, -2.0f - 0x1p-13f, 0.3f};
    float bv[4] = {1.0f + 0x1p-13f, 1.0f, 0.7f, 1.0f + 0x1p-11f};
    float *da = (float*)fake::dev_alloc(16), *db = (float*)fake::dev_alloc(16),
          *dc = (float*)fake::dev_alloc(4);
    std::memcpy(da, av, 16);
    std::memcpy(db, bv, 16);
    float one = 1, zero = 0;
    float want_tf = 0, want_32 = 0;
    for (int q = 0; q < 4; ++q) {
        want_tf = std::fmaf(tf32(av[q]), tf32(bv[q]), want_tf);
        want_32 = std::fmaf(av[q], bv[q], want_32);
    }
    CHECK(!same_bits(want_tf, want_32), "test inputs distinguish TF32 from fp32");
    // 1 x 1 x 4: A is 1 x 4 (lda 1), B is 4 x 1.
    auto run = [&](int compute) {
        *dc = NAN;
        int st = cublasGemmStridedBatchedEx(h, OPN, OPN, 1, 1, 4, &one, da, R32F, 1, 0, db, R32F, 4,
                                            0, &zero, dc, R32F, 1, 0, 1, compute, ALGO);
        return st == SUCCESS ? *dc : -12345.0f;
    };
    CHECK(same_bits(run(C32F_TF32), want_tf), "FAST_TF32 bit-exact (%.9g vs %.9g)", run(C32F_TF32), want_tf);
    CHECK(same_bits(run(C32F), want_32), "COMPUTE_32F is plain fp32");
    CHECK(same_bits(run(C32F_PED), want_32), "PEDANTIC is plain fp32");
    cublasSetMathMode(h, 3);  // CUBLAS_TF32_TENSOR_OP_MATH
    CHECK(same_bits(run(C32F), want_tf), "COMPUTE_32F + TF32 math mode rounds to TF32");
    CHECK(same_bits(run(C32F_PED), want_32), "PEDANTIC ignores TF32 math mode");
    *dc = 0;
    CHECK(cublasSgemm_v2(h, OPN, OPN, 1, 1, 4, &one, da, 1, db, 4, &zero, dc, 1) == SUCCESS &&
              same_bits(*dc, want_tf),
          "Sgemm follows TF32 math mode");
    cublasSetMathMode(h, 3 | 16);
    CHECK(same_bits(run(C32F), want_tf), "TF32 math mode with the disallow flag");
    cublasSetMathMode(h, 2);  // PEDANTIC
    CHECK(same_bits(run(C32F), want_32), "pedantic math mode");
    cublasSetMathMode(h, 0);
    *dc = 0;
    CHECK(cublasSgemm_v2(h, OPN, OPN, 1, 1, 4, &one, da, 1, db, 4, &zero, dc, 1) == SUCCESS &&
              same_bits(*dc, want_32),
          "Sgemm default math is fp32");
    fake::dev_free(da);
    fake::dev_free(db);
    fake::dev_free(dc);
    // A full random problem with TF32 inputs.
    Prob p = basic(OPT, OPN, 33, 14, 40, 1);
    p.compute = C32F_TF32;
    p.tf = true;
    p.beta = 0.25f;
    run_prob(h, p, "TF32 33x14x40");
}

static void test_bf16(cublasHandle_t h) {
    // Rounding helper sanity (independent of the library).
    CHECK(f2bf(1.0f) == 0x3f80, "bf16(1)");
    CHECK(f2bf(ffrom(0x3f808000)) == 0x3f80, "bf16 tie to even (down)");
    CHECK(f2bf(ffrom(0x3f818000)) == 0x3f82, "bf16 tie to even (up)");
    CHECK(f2bf(ffrom(0x3f808001)) == 0x3f81, "bf16 above half");
    CHECK(f2bf(ffrom(0x7f7fffff)) == 0x7f80, "bf16 overflow to inf");
    for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
            Prob p = basic(ta, tb, 25, 13, 31, 1);
            p.atype = R16BF;
            p.alpha = 0.5f;
            p.beta = 2.0f;
            run_prob(h, p, "bf16 in, f32 out");
            p.ctype = R16BF;
            run_prob(h, p, "bf16 in, bf16 out");
        }
    // Output rounding on values built to hit ties and NaN exactly: a 1 x 1 x 1
    // product alpha*a*b with b = 1 gives alpha*a.
    uint16_t* da = (uint16_t*)fake::dev_alloc(2);
    uint16_t* db = (uint16_t*)fake::dev_alloc(2);
    uint16_t* dc = (uint16_t*)fake::dev_alloc(2);
    *db = 0x3f80;  // 1
    const uint32_t outs[] = {0x3f808000, 0x3f818000, 0x3f808001, 0xbf80ffff, 0x7f7fffff, 0x00000001};
    for (uint32_t o : outs) {
        // alpha = value, a = 1.
        float alpha = ffrom(o), zero = 0;
        *da = 0x3f80;
        int st = cublasGemmEx(h, OPN, OPN, 1, 1, 1, &alpha, da, R16BF, 1, db, R16BF, 1, &zero, dc,
                              R16BF, 1, C32F, ALGO);
        CHECK(st == SUCCESS && *dc == f2bf(alpha), "bf16 output of 0x%08x: 0x%04x want 0x%04x", o,
              *dc, f2bf(alpha));
    }
    {
        float alpha = NAN, zero = 0;
        *da = 0x3f80;
        cublasGemmEx(h, OPN, OPN, 1, 1, 1, &alpha, da, R16BF, 1, db, R16BF, 1, &zero, dc, R16BF, 1,
                     C32F, ALGO);
        CHECK(std::isnan(bf2f(*dc)), "NaN stays NaN in bf16 output (0x%04x)", *dc);
        // A NaN whose payload sits only in the low 16 bits must not become inf.
        alpha = ffrom(0x7f800001);
        cublasGemmEx(h, OPN, OPN, 1, 1, 1, &alpha, da, R16BF, 1, db, R16BF, 1, &zero, dc, R16BF, 1,
                     C32F, ALGO);
        CHECK(std::isnan(bf2f(*dc)), "low-payload NaN stays NaN (0x%04x)", *dc);
    }
    fake::dev_free(da);
    fake::dev_free(db);
    fake::dev_free(dc);
}

static void test_memcheck(cublasHandle_t h) {
    const char* name = "cublasGemmStridedBatchedEx";
    Prob p = basic(OPN, OPN, 8, 6, 5);
    Data d = make_data(p);
    float one = 1, zero = 0;
    // B one element short.
    {
        Dev dv;
        dv.a = upload(d.a, R32F);
        std::vector<float> shortb(d.b.begin(), d.b.end() - 1);
        dv.b = upload(shortb, R32F);
        dv.c = upload(d.c, R32F);
        int before = fake::count(name);
        int st = call_sbex(h, p, dv.a, dv.b, dv.c);
        CHECK(st == EXECUTION_FAILED, "short B: status %d", st);
        std::string r = fake::report();
        CHECK(r.find("operand B") != std::string::npos && r.find("outside device memory") != std::string::npos,
              "short B report: %s", r.c_str());
        CHECK(fake::count(name) == before, "a failed call is not counted");
        auto got = download(dv.c, d.c.size(), R32F);
        CHECK(std::memcmp(got.data(), d.c.data(), got.size() * 4) == 0, "C untouched on failure");
    }
    // C in host memory.
    {
        Dev dv;
        dv.a = upload(d.a, R32F);
        dv.b = upload(d.b, R32F);
        std::vector<float> hostc = d.c;
        int st = call_sbex(h, p, dv.a, dv.b, hostc.data());
        CHECK(st == EXECUTION_FAILED, "host C: status %d", st);
        CHECK(fake::report().find("operand C") != std::string::npos, "host C report");
    }
    // A read with lda larger than the allocation allows.
    {
        Dev dv;
        Prob q = p;
        q.lda = 20;
        dv.a = upload(d.a, R32F);  // sized for lda 8
        dv.b = upload(d.b, R32F);
        dv.c = upload(d.c, R32F);
        CHECK(call_sbex(h, q, dv.a, dv.b, dv.c) == EXECUTION_FAILED, "A with big lda");
        CHECK(fake::report().find("operand A") != std::string::npos, "A report");
    }
    // The second batch matrix past the end.
    {
        Dev dv;
        Prob q = p;
        q.batch = 2;
        q.sb = (long long)q.ldb * q.n;
        q.sa = 0;
        q.sc = 0;
        dv.a = upload(d.a, R32F);
        dv.b = upload(d.b, R32F);  // one batch only
        dv.c = upload(d.c, R32F);
        CHECK(call_sbex(h, q, dv.a, dv.b, dv.c) == EXECUTION_FAILED, "batch 1 of B out of range");
        CHECK(fake::report().find("batch 1 of 2") != std::string::npos, "batch index reported: %s",
              fake::report().c_str());
    }
    // Batches in separate allocations, all valid (pointer arrays).
    {
        std::vector<void*> as, bs, cs;
        std::vector<Data> ds;
        for (int i = 0; i < 3; ++i) {
            ds.push_back(make_data(p));
            as.push_back(upload(ds[i].a, R32F));
            bs.push_back(upload(ds[i].b, R32F));
            cs.push_back(upload(ds[i].c, R32F));
        }
        void** arr = (void**)fake::dev_alloc(9 * sizeof(void*));
        for (int i = 0; i < 3; ++i) {
            arr[i] = as[i];
            arr[3 + i] = bs[i];
            arr[6 + i] = cs[i];
        }
        float beta = 0.5f;
        int st = cublasGemmBatchedEx(h, OPN, OPN, p.m, p.n, p.k, &one, arr, R32F, p.lda, arr + 3,
                                     R32F, p.ldb, &beta, arr + 6, R32F, p.ldc, 3, C32F, ALGO);
        CHECK(st == SUCCESS, "GemmBatchedEx status %d", st);
        bool ok = true;
        for (int i = 0; i < 3; ++i) {
            Prob q = p;
            q.beta = beta;
            auto want = ref_fma(q, ds[i]);
            auto got = download(cs[i], ds[i].c.size(), R32F);
            ok &= std::memcmp(got.data(), want.data(), got.size() * 4) == 0;
        }
        CHECK(ok, "GemmBatchedEx results");
        // A host pointer array.
        void* host_arr[3] = {as[0], as[1], as[2]};
        st = cublasGemmBatchedEx(h, OPN, OPN, p.m, p.n, p.k, &one, host_arr, R32F, p.lda, arr + 3,
                                 R32F, p.ldb, &beta, arr + 6, R32F, p.ldc, 3, C32F, ALGO);
        CHECK(st == EXECUTION_FAILED, "host pointer array: status %d", st);
        for (int i = 0; i < 3; ++i) {
            fake::dev_free(as[i]);
            fake::dev_free(bs[i]);
            fake::dev_free(cs[i]);
        }
        fake::dev_free(arr);
    }
    // A dead stream.
    {
        Dev dv;
        dv.a = upload(d.a, R32F);
        dv.b = upload(d.b, R32F);
        dv.c = upload(d.c, R32F);
        int s;
        cublasSetStream_v2(h, &s);  // never registered as live
        CHECK(call_sbex(h, p, dv.a, dv.b, dv.c) == EXECUTION_FAILED, "dead stream");
        CHECK(fake::report().find("stream") != std::string::npos, "stream report");
        cublasSetStream_v2(h, nullptr);
    }
    // Device pointer mode: alpha/beta read from device memory; host ones fail.
    {
        Dev dv;
        dv.a = upload(d.a, R32F);
        dv.b = upload(d.b, R32F);
        dv.c = upload(d.c, R32F);
        float* scal = (float*)fake::dev_alloc(8);
        scal[0] = 1.0f;
        scal[1] = 0.0f;
        cublasSetPointerMode_v2(h, 1);
        int st = cublasGemmStridedBatchedEx(h, OPN, OPN, p.m, p.n, p.k, scal, dv.a, R32F, p.lda, 0,
                                            dv.b, R32F, p.ldb, 0, scal + 1, dv.c, R32F, p.ldc, 0, 1,
                                            C32F, ALGO);
        CHECK(st == SUCCESS, "device pointer mode: status %d", st);
        auto got = download(dv.c, d.c.size(), R32F);
        auto want = ref_fma(p, d);
        CHECK(std::memcmp(got.data(), want.data(), got.size() * 4) == 0, "device pointer mode result");
        st = cublasGemmStridedBatchedEx(h, OPN, OPN, p.m, p.n, p.k, &one, dv.a, R32F, p.lda, 0,
                                        dv.b, R32F, p.ldb, 0, &zero, dv.c, R32F, p.ldc, 0, 1, C32F,
                                        ALGO);
        CHECK(st == EXECUTION_FAILED, "host scalars in device pointer mode: status %d", st);
        cublasSetPointerMode_v2(h, 0);
        fake::dev_free(scal);
    }
    // Counting: one per call that does work, under the entry point's name.
    {
        Dev dv;
        dv.a = upload(d.a, R32F);
        dv.b = upload(d.b, R32F);
        dv.c = upload(d.c, R32F);
        int before = fake::count(name);
        call_sbex(h, p, dv.a, dv.b, dv.c);
        call_sbex(h, p, dv.a, dv.b, dv.c);
        CHECK(fake::count(name) == before + 2, "two calls counted");
        int s0 = fake::count("cublasSgemmStridedBatched");
        float beta = 0;
        CHECK(cublasSgemmStridedBatched(h, OPN, OPN, p.m, p.n, p.k, &one, (float*)dv.a, p.lda, 0,
                                        (float*)dv.b, p.ldb, 0, &beta, (float*)dv.c, p.ldc, 0,
                                        1) == SUCCESS &&
                  fake::count("cublasSgemmStridedBatched") == s0 + 1,
              "SgemmStridedBatched counted under its name");
    }
}

// Several threads, each with its own handle, at once.
static void test_threads() {
    const int T = 4;
    std::vector<std::thread> ts;
    std::vector<int> bad(T, 0);
    for (int t = 0; t < T; ++t)
        ts.emplace_back([t, &bad] {
            cublasHandle_t h;
            cublasCreate_v2(&h);
            std::mt19937 r(77 + t);
            for (int it = 0; it < 6; ++it) {
                int m = 20 + int(r() % 90), n = 10 + int(r() % 70), k = 1 + int(r() % 120);
                Prob p = basic(int(r() % 2), int(r() % 2), m, n, k, int(r() % 3));
                p.beta = 0.5f;
                std::vector<float> a(p.a_elems()), b(p.b_elems()), c(p.c_elems());
                for (auto& x : a) x = float(int(r() % 2001) - 1000) / 1000;
                for (auto& x : b) x = float(int(r() % 2001) - 1000) / 1000;
                for (auto& x : c) x = float(int(r() % 2001) - 1000) / 1000;
                Data d{a, b, c};
                Dev dv;
                dv.a = upload(a, R32F);
                dv.b = upload(b, R32F);
                dv.c = upload(c, R32F);
                if (call_sbex(h, p, dv.a, dv.b, dv.c) != SUCCESS) {
                    bad[t]++;
                    continue;
                }
                auto got = download(dv.c, c.size(), R32F);
                auto want = ref_fma(p, d);
                if (std::memcmp(got.data(), want.data(), got.size() * 4) != 0) bad[t]++;
            }
            cublasDestroy_v2(h);
        });
    for (auto& th : ts) th.join();
    int total = 0;
    for (int b : bad) total += b;
    CHECK(total == 0, "concurrent handles: %d bad results", total);
}

static void timing(cublasHandle_t h) {
    const char* s = std::getenv("LPAF_CHECK_TIMING_N");
    const int N = s ? std::atoi(s) : 1024;
    if (N <= 0) return;
    std::vector<float> a(size_t(N) * N), b(size_t(N) * N);
    for (auto& x : a) x = urand();
    for (auto& x : b) x = urand();
    float* da = (float*)upload(a, R32F);
    float* db = (float*)upload(b, R32F);
    float* dc = (float*)fake::dev_alloc(size_t(N) * N * 4);
    float one = 1, zero = 0;
    for (int compute : {C32F, C32F_TF32}) {
        // One warm-up, then the best of three.
        double best = 1e30;
        for (int rep = 0; rep < 4; ++rep) {
            auto t0 = std::chrono::steady_clock::now();
            int st = cublasGemmStridedBatchedEx(h, OPN, OPT, N, N, N, &one, da, R32F, N, 0, db, R32F,
                                                N, 0, &zero, dc, R32F, N, 0, 1, compute, ALGO);
            double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (st != SUCCESS) {
                CHECK(false, "timing status %d", st);
                break;
            }
            if (rep > 0) best = std::min(best, dt);
        }
        std::printf("timing %s %dx%dx%d: %.3f s, %.2f GFLOP/s (LPAF_EMU_THREADS=%s)\n",
                    compute == C32F ? "fp32" : "tf32", N, N, N, best, 2.0 * N * N * double(N) / best / 1e9,
                    std::getenv("LPAF_EMU_THREADS") ? std::getenv("LPAF_EMU_THREADS") : "1");
    }
    fake::dev_free(da);
    fake::dev_free(db);
    fake::dev_free(dc);
}

int main() {
    test_handle_api();
    cublasHandle_t h;
    if (cublasCreate_v2(&h) != SUCCESS) {
        std::printf("cannot create a handle\n0 passed, 1 failed\n");
        return 1;
    }
    test_products(h);
    test_beta_zero_and_k_zero(h);
    test_invalid(h);
    test_tf32(h);
    test_bf16(h);
    test_memcheck(h);
    test_threads();
    timing(h);
    cublasDestroy_v2(h);
    std::printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
