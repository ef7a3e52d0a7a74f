// Runs the kernels of kernels/*.cu on the CPU through cuda_emu.h and checks
// them against reference loops written from src/backend/cpu/mod.rs. Small
// shapes, but chosen to hit every path: vector bodies and scalar tails,
// grid-stride loops that wrap, every softmax variant, chunked reductions with
// partial chunks, scatter segments spanning several pieces.
//
// Build and run: scripts/kernel-emu/run.sh (needs only g++ with C++20).
#include "cuda_emu.h"

#include "../../kernels/attention.cu"
#include "../../kernels/elementwise.cu"
#include "../../kernels/embedding.cu"
#include "../../kernels/layernorm.cu"
#include "../../kernels/adamw.cu"
#include "../../kernels/reduce.cu"

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>

static int g_failures = 0;
static int g_checks = 0;

static void fail(const std::string& what) {
    std::printf("FAIL %s\n", what.c_str());
    ++g_failures;
}

static bool same_bits(float a, float b) { return __float_as_uint(a) == __float_as_uint(b); }

static void expect_bits(const std::string& what, const std::vector<float>& got, const std::vector<float>& want) {
    ++g_checks;
    if (got.size() != want.size()) return fail(what + ": size");
    for (size_t i = 0; i < got.size(); ++i)
        if (!same_bits(got[i], want[i])) {
            char buf[256];
            std::snprintf(buf, sizeof buf, "%s: element %zu is %.9g, expected %.9g", what.c_str(), i, got[i], want[i]);
            return fail(buf);
        }
}

static void expect_close(const std::string& what, const std::vector<float>& got, const std::vector<float>& want,
                         double tol) {
    ++g_checks;
    if (got.size() != want.size()) return fail(what + ": size");
    double num = 0, den = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        if (!std::isfinite(got[i])) {
            char buf[256];
            std::snprintf(buf, sizeof buf, "%s: element %zu is not finite (%g)", what.c_str(), i, got[i]);
            return fail(buf);
        }
        num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
        den += double(want[i]) * want[i];
    }
    const double e = den == 0 ? std::sqrt(num) : std::sqrt(num / den);
    if (e > tol) {
        char buf[256];
        std::snprintf(buf, sizeof buf, "%s: relative error %.3e > %.0e", what.c_str(), e, tol);
        fail(buf);
    }
}

static std::mt19937_64 rng(12345);
static std::vector<float> rnd(size_t n, float scale) {
    std::uniform_real_distribution<float> d(-scale, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}
static std::vector<float> nans(size_t n) { return std::vector<float>(n, NAN); }

// 16-byte aligned host buffers stand in for cuMemAlloc'd ones.
template <class T>
struct Buf {
    std::vector<float4> store;
    size_t n;
    explicit Buf(size_t n_) : store((n_ * sizeof(T) + 15) / 16 + 1), n(n_) {}
    explicit Buf(const std::vector<T>& v) : Buf(v.size()) { std::memcpy(ptr(), v.data(), v.size() * sizeof(T)); }
    T* ptr() { return reinterpret_cast<T*>(store.data()); }
    std::vector<T> get() { return std::vector<T>(ptr(), ptr() + n); }
};

static dim3 d1(unsigned x) { return dim3{x, 1, 1}; }
static dim3 d2(unsigned x, unsigned y) { return dim3{x, y, 1}; }

// ---- references (src/backend/cpu/mod.rs, src/backend/philox.rs) --------------------

static uint4 ref_philox(uint4 c, uint2 k) {
    unsigned ctr[4] = {c.x, c.y, c.z, c.w}, key[2] = {k.x, k.y};
    for (int round = 0; round < 10; ++round) {
        unsigned long long p0 = (unsigned long long)0xD2511F53u * ctr[0];
        unsigned long long p1 = (unsigned long long)0xCD9E8D57u * ctr[2];
        unsigned n[4] = {(unsigned)(p1 >> 32) ^ ctr[1] ^ key[0], (unsigned)p1, (unsigned)(p0 >> 32) ^ ctr[3] ^ key[1],
                         (unsigned)p0};
        std::memcpy(ctr, n, sizeof n);
        if (round < 9) {
            key[0] += 0x9E3779B9u;
            key[1] += 0xBB67AE85u;
        }
    }
    return {ctr[0], ctr[1], ctr[2], ctr[3]};
}

static float ref_gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f)); }
static float ref_gelu_grad(float x) {
    float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752440f));
    float pdf = expf(-0.5f * x * x) * 0.3989423f;
    return cdf + x * pdf;
}

// ---- tests ---------------------------------------------------------------------------

static void test_philox_and_bf16() {
    struct {
        uint4 c;
        uint2 k;
        uint4 want;
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}, {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}, {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (auto& t : kat) {
        ++g_checks;
        uint4 o = philox4x32_10(t.c, t.k);
        if (o.x != t.want.x || o.y != t.want.y || o.z != t.want.z || o.w != t.want.w) fail("philox KAT");
        uint4 r = ref_philox(t.c, t.k);
        if (r.x != o.x || r.w != o.w) fail("philox reference");
    }
    // bf16 rounding corner cases (half::bf16::from_f32 results).
    struct {
        unsigned in;
        unsigned short out;
    } bf[] = {
        {0x3f808000, 0x3f80},  // tie, kept part even: down
        {0x3f818000, 0x3f82},  // tie, kept part odd: up
        {0x3f808001, 0x3f81},  // just above the tie: up
        {0x3f807fff, 0x3f80},  // just below: down
        {0x7f7fffff, 0x7f80},  // f32::MAX rounds to inf
        {0x7fc00000, 0x7fc0},  // quiet NaN
        {0x7f800001, 0x7fc0},  // signalling NaN gets the quiet bit
        {0xff800000, 0xff80},  // -inf
        {0x80000000, 0x8000},  // -0
        {0x00018000, 0x0002},  // subnormal tie, odd: up
    };
    // widening: a NaN gets its quiet bit (half::bf16::to_f32)
    for (auto [in, out] : {std::pair{0x7f81u, 0x7fc10000u}, std::pair{0xffc0u, 0xffc00000u}, std::pair{0x3f80u, 0x3f800000u},
                           std::pair{0x0001u, 0x00010000u}, std::pair{0x7f80u, 0x7f800000u}}) {
        ++g_checks;
        if (__float_as_uint(bf16_bits_to_f32((u16)in)) != out) fail("bf16 widening of " + std::to_string(in));
    }
    for (auto& t : bf) {
        ++g_checks;
        if (f32_to_bf16_bits(__uint_as_float(t.in)) != t.out) {
            char buf[128];
            std::snprintf(buf, sizeof buf, "bf16 of %#x is %#x, expected %#x", t.in,
                          f32_to_bf16_bits(__uint_as_float(t.in)), t.out);
            fail(buf);
        }
    }
}

static void test_elementwise() {
    for (size_t n : {0ul, 1ul, 3ul, 4ul, 7ul, 1000ul, 4099ul}) {
        const std::string sn = " n=" + std::to_string(n);
        // fill
        {
            Buf<unsigned> a(n);
            emu_launch(d1(2), d1(64), fill_u32, a.ptr(), (u64)n, 0xdeadbeefu);
            auto g = a.get();
            ++g_checks;
            for (auto v : g)
                if (v != 0xdeadbeefu) { fail("fill_u32" + sn); break; }
            Buf<unsigned short> b(n + 5);
            emu_launch(d1(3), d1(32), fill_u16, b.ptr(), (u64)(n + 5), 0x3f81u);
            ++g_checks;
            for (auto v : b.get())
                if (v != 0x3f81) { fail("fill_u16" + sn); break; }
            Buf<unsigned char> c(n + 13);
            emu_launch(d1(2), d1(32), fill_u8, c.ptr(), (u64)(n + 13), 255u);
            ++g_checks;
            for (auto v : c.get())
                if (v != 255) { fail("fill_u8" + sn); break; }
        }
        auto x = rnd(n, 6.0f), y = rnd(n, 2.0f), dy = rnd(n, 1.0f);
        std::vector<float> want(n);
        // casts
        {
            Buf<float> bx(x);
            Buf<unsigned short> b16(n);
            emu_launch(d1(2), d1(64), cast_f32_bf16, bx.ptr(), b16.ptr(), (u64)n);
            auto h = b16.get();
            std::vector<float> got(n);
            for (size_t i = 0; i < n; ++i) {
                got[i] = __uint_as_float((unsigned)h[i] << 16);
                want[i] = __uint_as_float((unsigned)f32_to_bf16_bits(x[i]) << 16);
            }
            expect_bits("cast_f32_bf16" + sn, got, want);
            Buf<float> back(nans(n));
            emu_launch(d1(2), d1(64), cast_bf16_f32, b16.ptr(), back.ptr(), (u64)n);
            expect_bits("cast_bf16_f32" + sn, back.get(), want);
            std::vector<unsigned char> m(n);
            for (size_t i = 0; i < n; ++i) m[i] = (unsigned char)(i * 37);
            Buf<unsigned char> bm(m);
            Buf<float> f(nans(n));
            emu_launch(d1(2), d1(64), cast_u8_f32, bm.ptr(), f.ptr(), (u64)n);
            for (size_t i = 0; i < n; ++i) want[i] = (float)m[i];
            expect_bits("cast_u8_f32" + sn, f.get(), want);
        }
        // axpby / scale / mul_mask
        {
            Buf<float> bx(x), by(y);
            emu_launch(d1(3), d1(64), axpby_f32, bx.ptr(), by.ptr(), (u64)n, 0.3f, -1.7f, 1u);
            for (size_t i = 0; i < n; ++i) want[i] = 0.3f * x[i] + -1.7f * y[i];
            expect_bits("axpby" + sn, by.get(), want);
            Buf<float> bn(nans(n));
            emu_launch(d1(3), d1(64), axpby_f32, bx.ptr(), bn.ptr(), (u64)n, 0.3f, 0.0f, 0u);
            for (size_t i = 0; i < n; ++i) want[i] = 0.3f * x[i];
            expect_bits("axpby beta=0" + sn, bn.get(), want);
            Buf<float> bs(x);
            emu_launch(d1(1), d1(32), scale_f32, bs.ptr(), (u64)n, 0.37f);
            for (size_t i = 0; i < n; ++i) want[i] = x[i] * 0.37f;
            expect_bits("scale" + sn, bs.get(), want);
            std::vector<unsigned char> m(n);
            for (size_t i = 0; i < n; ++i) m[i] = (i * 7919) % 3 != 0;
            Buf<unsigned char> bm(m);
            Buf<float> out(nans(n));
            emu_launch(d1(2), d1(64), mul_mask_f32, bx.ptr(), bm.ptr(), out.ptr(), (u64)n);
            for (size_t i = 0; i < n; ++i) want[i] = m[i] ? x[i] : 0.0f;
            expect_bits("mul_mask" + sn, out.get(), want);
        }
        // activations
        {
            Buf<float> bx(x), bdy(dy), out(nans(n));
            emu_launch(d1(2), d1(64), gelu_f32, bx.ptr(), out.ptr(), (u64)n);
            for (size_t i = 0; i < n; ++i) want[i] = ref_gelu(x[i]);
            expect_bits("gelu" + sn, out.get(), want);
            Buf<float> out2(nans(n));
            emu_launch(d1(2), d1(64), gelu_backward_f32, bx.ptr(), bdy.ptr(), out2.ptr(), (u64)n);
            for (size_t i = 0; i < n; ++i) want[i] = dy[i] * ref_gelu_grad(x[i]);
            expect_bits("gelu_backward" + sn, out2.get(), want);
            Buf<float> out3(nans(n));
            emu_launch(d1(2), d1(64), tanh_f32, bx.ptr(), out3.ptr(), (u64)n);
            for (size_t i = 0; i < n; ++i) want[i] = tanhf(x[i]);
            expect_bits("tanh" + sn, out3.get(), want);
            Buf<float> out4(nans(n));
            emu_launch(d1(2), d1(64), tanh_backward_f32, out3.ptr(), bdy.ptr(), out4.ptr(), (u64)n);
            for (size_t i = 0; i < n; ++i) {
                float t = tanhf(x[i]);
                want[i] = dy[i] * (1.0f - t * t);
            }
            expect_bits("tanh_backward" + sn, out4.get(), want);
        }
        // dropout
        for (auto [p, seed, stream] : {std::tuple{0.1f, 42ull, 7ull}, std::tuple{0.5f, 0xDEADBEEF12345678ull, (1ull << 33) + 5}}) {
            Buf<float> bx(x), out(nans(n));
            const float scale = 1.0f / (1.0f - p);
            emu_launch(d1(2), d1(64), dropout_f32, bx.ptr(), out.ptr(), (u64)n, p, scale, (u64)seed, (u64)stream);
            for (size_t i = 0; i < n; ++i) {
                uint4 o = ref_philox({(unsigned)i, (unsigned)((u64)i >> 32), (unsigned)stream, (unsigned)(stream >> 32)},
                                     {(unsigned)seed, (unsigned)(seed >> 32)});
                float u = (float)(o.x >> 8) * (1.0f / 16777216.0f);
                want[i] = u >= p ? x[i] * scale : 0.0f;
            }
            expect_bits("dropout" + sn, out.get(), want);
        }
    }
    // add_row_bias (both variants)
    for (auto [rows, cols] : {std::pair{5ul, 12ul}, std::pair{7ul, 13ul}, std::pair{3ul, 1ul}, std::pair{4ul, 200ul}, std::pair{3ul, 70ul}}) {
        auto y = rnd(rows * cols, 1), b = rnd(cols, 1);
        std::vector<float> want(y);
        for (size_t i = 0; i < y.size(); ++i) want[i] += b[i % cols];
        Buf<float> by(y), bb(b);
        // grid (1, 2): both strides wrap (columns past 32, rows past 2).
        if (cols % 4 == 0)
            emu_launch(d2(1, 2), d1(32), add_row_bias_f32x4, by.ptr(), bb.ptr(), (u64)rows, (u64)(cols / 4));
        else
            emu_launch(d2(1, 2), d1(32), add_row_bias_f32, by.ptr(), bb.ptr(), (u64)rows, (u64)cols);
        expect_bits("add_row_bias " + std::to_string(rows) + "x" + std::to_string(cols), by.get(), want);
    }
}

static void test_copy_rows() {
    struct Spec {
        size_t rows, cols, so, ss, doff, ds;
        bool acc;
    } specs[] = {
        {10, 8, 4, 24, 0, 8, false},  // aligned: x4
        {10, 8, 4, 24, 0, 8, true},
        {9, 7, 1, 24, 5, 7, false},  // unaligned
        {1, 5, 3, 0, 2, 0, true},
    };
    for (auto s : specs) {
        size_t src_len = s.so + (s.rows - 1) * s.ss + s.cols + 3;
        size_t dst_len = s.doff + (s.rows - 1) * s.ds + s.cols + 2;
        auto src = rnd(src_len, 1), dst = rnd(dst_len, 1);
        std::vector<float> want(dst);
        for (size_t r = 0; r < s.rows; ++r)
            for (size_t c = 0; c < s.cols; ++c) {
                float v = src[s.so + r * s.ss + c];
                float& d = want[s.doff + r * s.ds + c];
                d = s.acc ? d + v : v;
            }
        Buf<float> bs(src), bd(dst);
        bool al = s.cols % 4 == 0 && s.so % 4 == 0 && s.ss % 4 == 0 && s.doff % 4 == 0 && s.ds % 4 == 0;
        size_t q = al ? 4 : 1;
        // grid.y smaller than rows: exercises the row stride.
        emu_launch(d2(1, 3), d1(32), al ? copy_rows_f32x4 : copy_rows_f32, bs.ptr(), bd.ptr(), (u64)s.rows,
                   (u64)(s.cols / q), (u64)(s.so / q), (u64)(s.ss / q), (u64)(s.doff / q), (u64)(s.ds / q), (u32)s.acc);
        expect_bits("copy_rows", bd.get(), want);
    }
}

// Mirror of ops.rs col_chunks.
static std::pair<size_t, size_t> col_chunks(size_t rows) {
    size_t rpc = std::max<size_t>((rows + 255) / 256, 64);
    return {rpc, (rows + rpc - 1) / rpc};
}

static void test_reductions() {
    for (auto [rows, cols] : {std::pair{200ul, 12ul}, std::pair{130ul, 13ul}, std::pair{3ul, 40ul}, std::pair{20000ul, 4ul}}) {
        auto x = rnd(rows * cols, 1), o0 = rnd(cols, 1);
        auto [rpc, chunks] = col_chunks(rows);
        for (u32 acc : {0u, 1u}) {
            std::vector<float> want(cols);
            for (size_t c = 0; c < cols; ++c) {
                float a = 0;
                for (size_t r = 0; r < rows; ++r) a += x[r * cols + c];
                want[c] = acc ? o0[c] + a : a;
            }
            Buf<float> bx(x), part(nans(chunks * cols)), out(acc ? o0 : nans(cols));
            bool v = cols % 4 == 0;
            size_t units = v ? cols / 4 : cols;
            emu_launch(d2((unsigned)((units + 31) / 32), (unsigned)chunks), d2(32, 8),
                       v ? col_sum_partials_f32x4 : col_sum_partials_f32, bx.ptr(), part.ptr(), (u64)rows, (u64)units,
                       (u64)rpc);
            emu_launch(d1(1), d1(64), col_sum_finalize_f32, part.ptr(), out.ptr(), (u64)cols, (u64)chunks, acc);
            expect_close("col_sum " + std::to_string(rows) + "x" + std::to_string(cols), out.get(), want, 1e-6);
        }
    }
    for (size_t n : {1ul, 5ul, 4096ul, 100003ul}) {
        auto x = rnd(n, 3);
        double want = 0;
        for (float v : x) want += (double)v * v;
        size_t blocks = std::min<size_t>(std::max<size_t>((n + 4095) / 4096, 1), 1024);
        std::vector<double> part(blocks, NAN);
        emu_launch(d1((unsigned)blocks), d1(256), sum_squares_f64, Buf<float>(x).ptr(), (u64)n, part.data());
        double got = 0;
        for (double p : part) got += p;
        ++g_checks;
        if (!(std::fabs(got - want) <= 1e-12 * want)) fail("sum_squares n=" + std::to_string(n));
    }
}

static void test_layer_norm() {
    for (auto [rows, cols] : {std::pair{11ul, 768ul}, std::pair{9ul, 1024ul}, std::pair{10ul, 20ul}, std::pair{5ul, 30ul},
                              std::pair{3ul, 1030ul}, std::pair{130ul, 8ul}}) {
        const std::string what = " " + std::to_string(rows) + "x" + std::to_string(cols);
        auto x = rnd(rows * cols, 2), g = rnd(cols, 1), b = rnd(cols, 0.1f), dy = rnd(rows * cols, 1);
        for (size_t r = 0; r < rows; ++r)
            for (size_t c = 0; c < cols; ++c) x[r * cols + c] += 0.5f * r;
        const float eps = 1e-5f;
        std::vector<float> wy(rows * cols), wm(rows), wr(rows);
        for (size_t r = 0; r < rows; ++r) {
            float mu = 0, var = 0;
            for (size_t c = 0; c < cols; ++c) mu += x[r * cols + c];
            mu /= cols;
            for (size_t c = 0; c < cols; ++c) var += (x[r * cols + c] - mu) * (x[r * cols + c] - mu);
            var /= cols;
            float rs = 1.0f / std::sqrt(var + eps);
            for (size_t c = 0; c < cols; ++c) wy[r * cols + c] = (x[r * cols + c] - mu) * rs * g[c] + b[c];
            wm[r] = mu;
            wr[r] = rs;
        }
        Buf<float> bx(x), bg(g), bb(b), y(nans(rows * cols)), m(nans(rows)), rs(nans(rows));
        // Two blocks of 8 warps: rows beyond 16 take the grid stride.
        if (cols % 4 == 0 && cols <= 1024)
            emu_launch(d1(2), d1(256), layer_norm_fwd_f32x4, bx.ptr(), bg.ptr(), bb.ptr(), y.ptr(), m.ptr(), rs.ptr(),
                       (u64)rows, (u32)cols, eps);
        else
            emu_launch(d1(2), d1(256), layer_norm_fwd_f32, bx.ptr(), bg.ptr(), bb.ptr(), y.ptr(), m.ptr(), rs.ptr(),
                       (u64)rows, (u64)cols, eps);
        // The row mean is summed in another order than the reference's; with
        // row offsets far from 0 the centring amplifies that to ~1e-6.
        expect_close("layer_norm y" + what, y.get(), wy, 1e-5);
        expect_close("layer_norm mean" + what, m.get(), wm, 1e-6);
        expect_close("layer_norm rstd" + what, rs.get(), wr, 1e-6);

        // backward with the reference statistics
        std::vector<float> wdx(rows * cols), wdg = rnd(cols, 1), wdb = rnd(cols, 1);
        std::vector<float> dg0 = wdg, db0 = wdb;
        for (size_t r = 0; r < rows; ++r) {
            float s1 = 0, s2 = 0;
            for (size_t c = 0; c < cols; ++c) {
                float xh = (x[r * cols + c] - wm[r]) * wr[r], dgc = dy[r * cols + c] * g[c];
                s1 += dgc;
                s2 += dgc * xh;
            }
            float inv = 1.0f / cols;
            for (size_t c = 0; c < cols; ++c) {
                float xh = (x[r * cols + c] - wm[r]) * wr[r], dgc = dy[r * cols + c] * g[c];
                wdx[r * cols + c] = wr[r] * (dgc - inv * s1 - xh * inv * s2);
            }
        }
        std::vector<float> sg(cols, 0), sb(cols, 0);
        for (size_t r = 0; r < rows; ++r)
            for (size_t c = 0; c < cols; ++c) {
                sg[c] += dy[r * cols + c] * ((x[r * cols + c] - wm[r]) * wr[r]);
                sb[c] += dy[r * cols + c];
            }
        for (size_t c = 0; c < cols; ++c) {
            wdg[c] += sg[c];
            wdb[c] += sb[c];
        }
        Buf<float> bdy(dy), bm(wm), br(wr), dx(nans(rows * cols)), dgam(dg0), dbet(db0);
        if (cols % 4 == 0 && cols <= 1024)
            emu_launch(d1(2), d1(256), layer_norm_bwd_dx_f32x4, bdy.ptr(), bx.ptr(), bg.ptr(), bm.ptr(), br.ptr(),
                       dx.ptr(), (u64)rows, (u32)cols);
        else
            emu_launch(d1(2), d1(256), layer_norm_bwd_dx_f32, bdy.ptr(), bx.ptr(), bg.ptr(), bm.ptr(), br.ptr(),
                       dx.ptr(), (u64)rows, (u64)cols);
        expect_close("layer_norm_backward dx" + what, dx.get(), wdx, 1e-5);
        auto [rpc, chunks] = col_chunks(rows);
        Buf<float> pg(nans(chunks * cols)), pb(nans(chunks * cols));
        bool v = cols % 4 == 0;
        size_t units = v ? cols / 4 : cols;
        emu_launch(d2((unsigned)((units + 31) / 32), (unsigned)chunks), d2(32, 8),
                   v ? ln_param_partials_f32x4 : ln_param_partials_f32, bdy.ptr(), bx.ptr(), bm.ptr(), br.ptr(),
                   pg.ptr(), pb.ptr(), (u64)rows, (u64)units, (u64)rpc);
        emu_launch(d1(1), d1(64), ln_param_finalize_f32, pg.ptr(), pb.ptr(), dgam.ptr(), dbet.ptr(), (u64)cols,
                   (u64)chunks);
        expect_close("layer_norm_backward dgamma" + what, dgam.get(), wdg, 1e-6);
        expect_close("layer_norm_backward dbeta" + what, dbet.get(), wdb, 1e-6);
    }
}

static void test_attention() {
    // head permutations
    for (auto [b, s, h, d] : {std::tuple{2ul, 3ul, 4ul, 8ul}, std::tuple{2ul, 5ul, 3ul, 7ul}}) {
        size_t n = b * s * h * d;
        auto x = rnd(n, 1);
        for (int split = 0; split < 2; ++split) {
            std::vector<float> want(n);
            for (size_t row = 0; row < b * s * h; ++row) {
                size_t src;
                if (split) {
                    size_t bi = row / (h * s), rem = row % (h * s), hi = rem / s, si = rem % s;
                    src = (bi * s + si) * h + hi;
                } else {
                    size_t bi = row / (s * h), rem = row % (s * h), si = rem / h, hi = rem % h;
                    src = (bi * h + hi) * s + si;
                }
                for (size_t k = 0; k < d; ++k) want[row * d + k] = x[src * d + k];
            }
            size_t pd = split ? h : s, qd = split ? s : h;
            Buf<float> bx(x), out(nans(n));
            if (d % 4 == 0)
                emu_launch(d1(2), d1(32), permute_heads_f32x4, bx.ptr(), out.ptr(), (u64)(n / 4), (u64)pd, (u64)qd,
                           (u64)(d / 4));
            else
                emu_launch(d1(2), d1(32), permute_heads_f32, bx.ptr(), out.ptr(), (u64)n, (u64)pd, (u64)qd, (u64)d);
            expect_bits(std::string(split ? "split" : "merge") + "_heads d=" + std::to_string(d), out.get(), want);
        }
    }
    // masked softmax, every variant
    for (size_t s : {8ul, 128ul, 132ul, 256ul, 260ul, 512ul, 1024ul, 30ul, 1030ul}) {
        size_t b = 3, h = 2, rows = b * h * s;
        if (s > 300) h = 1, rows = b * h * s;
        auto sc = rnd(rows * s, 8);
        std::vector<unsigned char> mask(b * s, 0);
        for (size_t bi = 0; bi < b; ++bi) {
            size_t len = bi == 1 ? 0 : (bi == 0 ? s : 1 + (s * 2) / 3);
            for (size_t j = 0; j < len; ++j) mask[bi * s + j] = 1;
        }
        const float scale = 0.125f;
        std::vector<float> want(sc);
        for (size_t row = 0; row < rows; ++row) {
            float* r = &want[row * s];
            const unsigned char* m = &mask[(row / (h * s)) * s];
            float mx = -INFINITY;
            for (size_t j = 0; j < s; ++j)
                if (m[j]) mx = std::fmax(mx, scale * r[j]);
            if (mx == -INFINITY) {
                for (size_t j = 0; j < s; ++j) r[j] = 0;
                continue;
            }
            float sum = 0;
            for (size_t j = 0; j < s; ++j) {
                r[j] = m[j] ? expf(scale * r[j] - mx) : 0.0f;
                sum += r[j];
            }
            float inv = 1.0f / sum;
            for (size_t j = 0; j < s; ++j) r[j] *= inv;
        }
        Buf<float> bs(sc);
        Buf<unsigned char> bm(mask);
        auto k = s % 4 != 0 || s > 1024 ? softmax_fwd_generic
                 : s <= 128             ? softmax_fwd_v1
                 : s <= 256             ? softmax_fwd_v2
                 : s <= 512             ? softmax_fwd_v4
                                        : softmax_fwd_v8;
        emu_launch(d1(1), d1(128), k, bs.ptr(), bm.ptr(), (u64)rows, (u32)s, (u32)h, scale);
        auto got = bs.get();
        expect_close("attention_softmax s=" + std::to_string(s), got, want, 1e-6);
        ++g_checks;
        for (size_t i = 0; i < got.size(); ++i)
            if (!mask[((i / s) / (h * s)) * s + i % s] && __float_as_uint(got[i]) != 0) {
                fail("attention_softmax: masked key not exactly 0, s=" + std::to_string(s));
                break;
            }
        // backward on these probabilities
        auto d = rnd(rows * s, 1);
        std::vector<float> wd(d);
        for (size_t row = 0; row < rows; ++row) {
            float dot = 0;
            for (size_t j = 0; j < s; ++j) dot += want[row * s + j] * d[row * s + j];
            for (size_t j = 0; j < s; ++j) wd[row * s + j] = scale * want[row * s + j] * (d[row * s + j] - dot);
        }
        Buf<float> bp(want), bd(d);
        auto kb = s % 4 != 0 || s > 1024 ? softmax_bwd_generic
                  : s <= 128             ? softmax_bwd_v1
                  : s <= 256             ? softmax_bwd_v2
                  : s <= 512             ? softmax_bwd_v4
                                         : softmax_bwd_v8;
        emu_launch(d1(1), d1(128), kb, bp.ptr(), bd.ptr(), (u64)rows, (u32)s, scale);
        expect_close("softmax_backward s=" + std::to_string(s), bd.get(), wd, 1e-5);
    }
}

static void test_embedding() {
    // check_ids
    {
        std::vector<int> ids = {3, 0, 9, 10, 2, -1, 11};
        Buf<int> bi(ids);
        int flag = 0x7fffffff;
        emu_launch(d1(2), d1(32), check_ids_i32, bi.ptr(), (u64)ids.size(), (u64)10, &flag);
        ++g_checks;
        if (flag != 3) fail("check_ids first bad position " + std::to_string(flag));
        flag = 0x7fffffff;
        emu_launch(d1(2), d1(32), check_ids_i32, bi.ptr(), (u64)3, (u64)10, &flag);
        ++g_checks;
        if (flag != 0x7fffffff) fail("check_ids all good");
    }
    // gather
    for (auto [rows, cols] : {std::pair{50ul, 8ul}, std::pair{50ul, 7ul}, std::pair{50ul, 300ul}, std::pair{50ul, 45ul}}) {
        size_t n = 37;
        auto table = rnd(rows * cols, 1), o0 = rnd(n * cols, 1);
        std::vector<int> ids(n);
        for (size_t i = 0; i < n; ++i) ids[i] = (int)((i * 7919) % rows);
        for (u32 acc : {0u, 1u}) {
            std::vector<float> want(o0);
            for (size_t i = 0; i < n; ++i)
                for (size_t c = 0; c < cols; ++c) {
                    float v = table[ids[i] * cols + c];
                    want[i * cols + c] = acc ? want[i * cols + c] + v : v;
                }
            Buf<float> bt(table), out(acc ? o0 : nans(n * cols));
            Buf<int> bi(ids);
            if (cols % 4 == 0)
                emu_launch(d2(1, 5), d1(32), gather_rows_f32x4, bt.ptr(), bi.ptr(), out.ptr(), (u64)n,
                           (u64)(cols / 4), (u64)rows, acc);
            else
                emu_launch(d2(1, 5), d1(32), gather_rows_f32, bt.ptr(), bi.ptr(), out.ptr(), (u64)n, (u64)cols,
                           (u64)rows, acc);
            expect_bits("gather_rows cols=" + std::to_string(cols), out.get(), want);
        }
    }
    // scatter-add: many id distributions and piece sizes (small pieces make
    // segments cross several of them).
    std::uniform_int_distribution<int> coin(0, 99);
    for (int trial = 0; trial < 40; ++trial) {
        size_t n = 1 + (size_t)coin(rng) * 3 + (trial % 5 == 0 ? 700 : 0);
        size_t rows = 1 + (size_t)coin(rng) % (trial % 3 == 0 ? 2 : 40);
        size_t cols = 1 + (size_t)coin(rng) % 10;
        u32 piece = 1 + (u32)(coin(rng) % 9);
        if (trial % 4 == 0) piece = 32;
        std::vector<int> ids(n);
        for (auto& v : ids) v = coin(rng) < 40 ? 0 : (int)((size_t)coin(rng) % rows);
        auto d = rnd(n * cols, 1), t0 = rnd(rows * cols, 1);
        std::vector<double> exact(t0.begin(), t0.end());
        for (size_t i = 0; i < n; ++i)
            for (size_t c = 0; c < cols; ++c) exact[ids[i] * cols + c] += d[i * cols + c];
        std::vector<float> want(exact.begin(), exact.end());
        size_t pieces = (n + piece - 1) / piece;
        Buf<int> bi(ids), perm(n), sid(n);
        Buf<unsigned> rank(std::vector<unsigned>(n, 0));
        Buf<float> bd(d), tg(t0), first(nans(pieces * cols)), last(nans(pieces * cols));
        emu_launch(d2((unsigned)((n + 127) / 128), (unsigned)((n + 1023) / 1024)), d1(128), scatter_rank_count,
                   bi.ptr(), (u32)n, rank.ptr());
        emu_launch(d1(2), d1(64), scatter_rank_place, bi.ptr(), rank.ptr(), (u32)n, perm.ptr(), sid.ptr());
        // the ranks must be the stable sort by id
        {
            std::vector<int> order(n);
            for (size_t i = 0; i < n; ++i) order[i] = (int)i;
            std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return ids[a] < ids[b]; });
            ++g_checks;
            if (perm.get() != order) fail("scatter rank: not the stable sort, trial " + std::to_string(trial));
        }
        // (ops.rs uses 256-thread blocks; the kernels take any width, and 32
        // keeps the emulation fast.)
        dim3 grid = d2((unsigned)((cols + 31) / 32), (unsigned)pieces);
        emu_launch(grid, d1(32), scatter_pieces_f32, bd.ptr(), perm.ptr(), sid.ptr(), tg.ptr(), first.ptr(),
                   last.ptr(), (u32)n, (u64)cols, piece);
        emu_launch(grid, d1(32), scatter_combine_f32, sid.ptr(), tg.ptr(), first.ptr(), last.ptr(), (u32)n, (u64)cols,
                   piece, (u32)pieces);
        expect_close("scatter_add_rows trial " + std::to_string(trial) + " n=" + std::to_string(n) + " piece=" +
                         std::to_string(piece),
                     tg.get(), want, 1e-6);
    }
}

static void test_adamw() {
    for (size_t n : {1ul, 6ul, 1001ul}) {
        auto p = rnd(n, 0.05f), g = rnd(n, 1e-2f), m = rnd(n, 1e-3f), v = rnd(n, 1e-5f);
        for (auto& x : v) x = std::fabs(x);
        const float lr = 2e-5f, b1 = 0.9f, b2 = 0.999f, eps = 1e-6f, wd = 0.01f, gs = 0.5f;
        const int t = 7;
        const float bc1 = 1.0f - std::pow(b1, (float)t), bc2 = 1.0f - std::pow(b2, (float)t);
        const float step = lr / bc1, bc2s = std::sqrt(bc2), decay = 1.0f - lr * wd;
        std::vector<float> wp(p), wm(m), wv(v);
        for (size_t i = 0; i < n; ++i) {
            float gg = g[i] * gs;
            wp[i] *= decay;
            wm[i] += (gg - wm[i]) * (1.0f - b1);
            wv[i] = wv[i] * b2 + (1.0f - b2) * gg * gg;
            float denom = std::sqrt(wv[i]) / bc2s + eps;
            wp[i] -= step * wm[i] / denom;
        }
        Buf<float> bp(p), bg(g), bm(m), bv(v);
        emu_launch(d1(2), d1(64), adamw_f32, bp.ptr(), bg.ptr(), bm.ptr(), bv.ptr(), (u64)n, gs, decay, 1.0f - b1, b2,
                   1.0f - b2, eps, step, bc2s);
        expect_bits("adamw p n=" + std::to_string(n), bp.get(), wp);
        expect_bits("adamw m n=" + std::to_string(n), bm.get(), wm);
        expect_bits("adamw v n=" + std::to_string(n), bv.get(), wv);
    }
}

int main() {
    test_philox_and_bf16();
    test_elementwise();
    test_copy_rows();
    test_reductions();
    test_layer_norm();
    test_attention();
    test_embedding();
    test_adamw();
    std::printf("%d checks, %d failures\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
