//! GEMM: the CUDA products against the CPU on BERT-base shapes at every precision, strided batches, empty dimensions.
//!
//! Part of the integration-test crate (`tests/it/main.rs` includes it).

use lpaf::backend::prelude::*;
use lpaf::backend::*;

use crate::common::*;
use crate::ops_support::*;

const TF32_TOL: f64 = 2e-3;

/// bf16 GEMMs: both devices round the inputs to bf16 the same way and
/// accumulate in fp32, so only the summation order differs (~2e-7 at
/// 4096×3072×768). 1e-5 fails on bf16 output rounding (~2e-3), input
/// truncation and skipped input rounding; gemm_case checks that it would.
const BF16_TOL: f64 = 1e-5;

#[allow(clippy::too_many_arguments)]
fn gemm_case(
    g: &dyn Backend,
    c: &CpuBackend,
    what: &str,
    gm: &Gemm,
    a_len: usize,
    b_len: usize,
    c_len: usize,
    seed: u64,
) {
    let a = rand_vec(seed, a_len, 1.0);
    let b = rand_vec(seed + 1, b_len, 1.0);
    let c0 = rand_vec(seed + 2, c_len, 1.0);
    let mut cg = put(g, &c0, &[c_len]);
    let mut cc = put(c, &c0, &[c_len]);
    g.gemm(gm, &put(g, &a, &[a_len]), &put(g, &b, &[b_len]), &mut cg)
        .unwrap();
    c.gemm(gm, &put(c, &a, &[a_len]), &put(c, &b, &[b_len]), &mut cc)
        .unwrap();
    let tol = match gm.precision {
        Precision::F32 => F32_TOL,
        Precision::Tf32 => TF32_TOL,
        Precision::Bf16 => BF16_TOL,
    };
    let want = c.to_f32(&cc).unwrap();
    assert_close(what, &g.to_f32(&cg).unwrap(), &want, tol);
    if gm.precision == Precision::Bf16 && gm.beta == 0.0 {
        // The bound is tight enough to catch a bf16 GEMM that rounds its
        // output to bf16, or truncates its inputs instead of rounding them.
        let out_rounded: Vec<f32> = want
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect();
        let e = rel_err(&out_rounded, &want);
        assert!(
            e > tol,
            "{what}: output rounding ({e:.2e}) would pass {tol:.0e}"
        );
        let trunc = |v: &[f32]| -> Vec<f32> {
            v.iter()
                .map(|x| f32::from_bits(x.to_bits() & 0xffff_0000))
                .collect()
        };
        let mut ct = put(c, &c0, &[c_len]);
        let g32 = (*gm).precision(Precision::F32);
        c.gemm(
            &g32,
            &put(c, &trunc(&a), &[a_len]),
            &put(c, &trunc(&b), &[b_len]),
            &mut ct,
        )
        .unwrap();
        let e = rel_err(&c.to_f32(&ct).unwrap(), &want);
        assert!(
            e > tol,
            "{what}: truncated inputs ({e:.2e}) would pass {tol:.0e}"
        );
    }
}

/// GEMMs with an empty dimension on one device: k = 0 (a rank-0 factor,
/// which energy allocation can produce) gives C = beta·C and never reads C
/// when beta is 0; m or n = 0 touches nothing. cuBLAS rejects leading
/// dimensions below 1, which a k = 0 operand has: the backend must not pass
/// them through.
fn gemm_with_empty_dimensions(be: &dyn Backend) {
    for (m, n, k) in [(5, 7, 0), (1, 1, 0), (0, 7, 3), (5, 0, 3), (0, 0, 0)] {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            for beta in [0.0f32, 0.5] {
                for p in [Precision::F32, Precision::Tf32, Precision::Bf16] {
                    let what = format!("gemm {m}x{n}x{k} ta {ta} tb {tb} beta {beta} {p:?}");
                    let g = Gemm::new(m, n, k, ta, tb)
                        .precision(p)
                        .beta(beta)
                        .alpha(1.5);
                    let mut c0 = rand_vec(3, m * n, 1.0);
                    if beta == 0.0 && !c0.is_empty() {
                        c0[0] = f32::NAN; // must not be read
                    }
                    let mut c = put(be, &c0, &[m * n]);
                    be.gemm(
                        &g,
                        &put(be, &rand_vec(1, m * k, 1.0), &[m * k]),
                        &put(be, &rand_vec(2, k * n, 1.0), &[k * n]),
                        &mut c,
                    )
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                    let want: Vec<f32> = c0
                        .iter()
                        .map(|&v| if beta == 0.0 { 0.0 } else { beta * v })
                        .collect();
                    assert_bits(&what, &host(be, &c), &want);
                }
            }
        }
    }
}

#[test]
fn gpu_gemm_linear_layer_shapes() {
    let g = gpu_or_skip!("gpu_gemm_linear_layer_shapes");
    let c = cpu();
    for p in [Precision::F32, Precision::Tf32, Precision::Bf16] {
        // Forward y = x·Wᵀ (nt): [4096, 768] · [3072, 768]ᵀ.
        let nt = Gemm::nt(TOKENS, INTER, HIDDEN).precision(p);
        gemm_case(
            &*g,
            &c,
            &format!("gemm nt {p:?}"),
            &nt,
            TOKENS * HIDDEN,
            INTER * HIDDEN,
            TOKENS * INTER,
            100,
        );
        // Input gradient dx = dy·W (nn): [4096, 3072] · [3072, 768].
        let nn = Gemm::nn(TOKENS, HIDDEN, INTER).precision(p);
        gemm_case(
            &*g,
            &c,
            &format!("gemm nn {p:?}"),
            &nn,
            TOKENS * INTER,
            INTER * HIDDEN,
            TOKENS * HIDDEN,
            200,
        );
        // Weight gradient dW = dyᵀ·x (tn) accumulated: beta = 1.
        let tn = Gemm::tn(HIDDEN, HIDDEN, TOKENS).precision(p).beta(1.0);
        gemm_case(
            &*g,
            &c,
            &format!("gemm tn {p:?}"),
            &tn,
            TOKENS * HIDDEN,
            TOKENS * HIDDEN,
            HIDDEN * HIDDEN,
            300,
        );
    }
}

#[test]
fn gpu_gemm_strided_batched_with_offsets() {
    let g = gpu_or_skip!("gpu_gemm_strided_batched_with_offsets");
    let c = cpu();
    let (s, d, batch) = (SEQ, 64, 2 * HEADS);
    for p in [Precision::F32, Precision::Tf32, Precision::Bf16] {
        // Scores = alpha · Q·Kᵀ + beta · C over a batch of heads, with padded
        // leading dimensions, buffer offsets and gaps between matrices.
        let mut gm = Gemm::nt(s, s, d)
            .precision(p)
            .alpha(0.125)
            .beta(0.5)
            .batched(batch);
        gm.lda = d + 8;
        gm.ldb = d;
        gm.ldc = s + 2;
        gm.offset_a = 3;
        gm.offset_b = 7;
        gm.offset_c = 11;
        gm.stride_a = s * gm.lda + 5;
        gm.stride_b = s * d;
        gm.stride_c = s * gm.ldc + 5;
        let a_len = gm.offset_a + batch * gm.stride_a;
        let b_len = gm.offset_b + batch * gm.stride_b;
        let c_len = gm.offset_c + batch * gm.stride_c;
        gemm_case(
            &*g,
            &c,
            &format!("gemm batched nt {p:?}"),
            &gm,
            a_len,
            b_len,
            c_len,
            400,
        );

        // Context = P·V (nn) and its gradient dV = Pᵀ·dC (tn), batched.
        let nn = Gemm::nn(s, d, s).precision(p).batched(batch);
        gemm_case(
            &*g,
            &c,
            &format!("gemm batched nn {p:?}"),
            &nn,
            batch * s * s,
            batch * s * d,
            batch * s * d,
            500,
        );
        let tn = Gemm::tn(s, d, s).precision(p).batched(batch);
        gemm_case(
            &*g,
            &c,
            &format!("gemm batched tn {p:?}"),
            &tn,
            batch * s * s,
            batch * s * d,
            batch * s * d,
            600,
        );
    }
}

/// Every transpose pair, alpha/beta and a strided batch against an f64
/// product of the inputs rounded as the precision rounds them.
fn gemm_matches_naive(be: &dyn Backend) {
    let (m, n, k, batch) = (37, 29, 45, 3);
    for prec in [Precision::F32, Precision::Tf32, Precision::Bf16] {
        let round = |x: f32| match prec {
            Precision::F32 => x,
            Precision::Tf32 => lpaf::backend::cpu::round_tf32(x),
            Precision::Bf16 => lpaf::backend::cpu::round_bf16(x),
        };
        for (ta, tb_) in [(false, false), (false, true), (true, false), (true, true)] {
            let a = rand_vec(1, batch * m * k, 1.0);
            let b = rand_vec(2, batch * k * n, 1.0);
            let c0 = rand_vec(3, batch * m * n, 1.0);
            let g = Gemm::new(m, n, k, ta, tb_)
                .alpha(0.75)
                .beta(0.5)
                .precision(prec)
                .batched(batch);
            let (at, bt) = (tb(be, a.clone(), &[a.len()]), tb(be, b.clone(), &[b.len()]));
            let mut ct = tb(be, c0.clone(), &[c0.len()]);
            be.gemm(&g, &at, &bt, &mut ct).unwrap();
            let mut want = vec![0.0f64; c0.len()];
            for bi in 0..batch {
                for i in 0..m {
                    for j in 0..n {
                        let mut acc = 0.0f64;
                        for l in 0..k {
                            let av = if ta {
                                a[bi * m * k + l * m + i]
                            } else {
                                a[bi * m * k + i * k + l]
                            };
                            let bv = if tb_ {
                                b[bi * k * n + j * k + l]
                            } else {
                                b[bi * k * n + l * n + j]
                            };
                            acc += round(av) as f64 * round(bv) as f64;
                        }
                        let o = bi * m * n + i * n + j;
                        want[o] = 0.75 * acc + 0.5 * c0[o] as f64;
                    }
                }
            }
            let e = rel64(&be.to_f32(&ct).unwrap(), &want);
            assert!(e < 1e-5, "{prec:?} trans ({ta}, {tb_}): {e:e}");
        }
    }
}

test_device!(gemm_matches_naive, gemm_with_empty_dimensions);
