//! The CUDA backend's basic operations against the CPU reference, on BERT-base
//! shapes (4096 tokens × 768 hidden, 3072 intermediate, attention
//! [32, 12, 128, 128] with padded keys, a 30522-row vocabulary).
//!
//! Each test asks `gpu_for_test` first and returns (passing, after printing
//! "skipped: no CUDA device") when there is no GPU. Outputs the operation
//! overwrites are poisoned with NaN before the GPU run so that an unwritten
//! element fails the comparison (`rel_err` rejects non-finite values).
//! Bounds (‖gpu − cpu‖ / ‖cpu‖): fp32 1e-5, TF32 2e-3, bf16 1e-2; masks,
//! copies, u8 / i32 results and dropout bit for bit; the deterministic
//! reductions are run twice and must agree bit for bit.

use lpaf::backend::cuda::CudaBackend;
use lpaf::backend::{gpu_for_test, select_backend};
use lpaf::backend::{AdamWStep, Backend, CpuBackend, DType, Gemm, Precision, RowCopy, Tensor};
use lpaf::device::{cuda_available, DeviceChoice};
use lpaf::Error;

use crate::common::{cpu, host, rand_mask, rand_vec, rel_err};

const TOKENS: usize = 4096;
const HIDDEN: usize = 768;
const INTER: usize = 3072;
const VOCAB: usize = 30522;
const BATCH: usize = 32;
const HEADS: usize = 12;
const SEQ: usize = 128;

const F32_TOL: f64 = 1e-5;
const TF32_TOL: f64 = 2e-3;
/// bf16 GEMMs: both devices round the inputs to bf16 the same way and
/// accumulate in fp32, so only the summation order differs (~2e-7 at
/// 4096×3072×768). 1e-5 fails on bf16 output rounding (~2e-3), input
/// truncation and skipped input rounding; gemm_case checks that it would.
const BF16_TOL: f64 = 1e-5;

/// The GPU backend, or return from the test (skipped) when there is none.
macro_rules! gpu_or_skip {
    ($name:expr) => {
        match gpu_for_test($name) {
            Some(g) => g,
            None => return,
        }
    };
}

fn put(be: &dyn Backend, data: &[f32], shape: &[usize]) -> Tensor {
    be.from_f32(data, shape).expect("from_f32")
}

/// A device tensor full of NaN (an output the operation must overwrite).
fn poisoned(g: &dyn Backend, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    put(g, &vec![f32::NAN; n], shape)
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let e = rel_err(got, want);
    assert!(e <= tol, "{what}: relative error {e:.3e} exceeds {tol:.0e}");
}

/// Bit-for-bit equality (NaN payloads included).
fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: element {i} is {:e} ({:#010x}), expected {:e} ({:#010x})",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Positive values in [lo, hi).
fn rand_pos(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    rand_vec(seed, n, 1.0)
        .into_iter()
        .map(|u| lo + (u + 1.0) * 0.5 * (hi - lo))
        .collect()
}

/// Token ids the way a padded BERT batch has them: many padding zeros, one
/// [CLS] (101, or 101 mod a small vocabulary) per sequence, the rest
/// spread over the vocabulary.
fn bert_ids(seed: u64, n: usize, vocab: usize) -> Vec<i32> {
    let u = rand_pos(seed, n, 0.0, 1.0);
    (0..n)
        .map(|i| {
            if i % SEQ == 0 {
                (101 % vocab) as i32
            } else if u[i] < 0.35 {
                0
            } else {
                ((u[i] as f64 * 1e6) as usize % vocab) as i32
            }
        })
        .collect()
}

// ---- device probing (these run everywhere) --------------------------------------

#[test]
fn cuda_backend_new_fails_cleanly_without_a_gpu() {
    match CudaBackend::new(0) {
        Ok(b) => {
            assert!(cuda_available());
            assert!(!b.name().is_empty());
        }
        Err(e) => {
            assert!(matches!(e, Error::Cuda { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains("driver") || msg.contains("nvcc") || msg.contains("device"),
                "the error should say what is missing: {msg}"
            );
            assert!(!cuda_available());
        }
    }
}

#[test]
fn cuda_backend_rejects_a_missing_ordinal() {
    let e = CudaBackend::new(1 << 20).expect_err("no machine has 2^20 GPUs");
    assert!(matches!(e, Error::Cuda { .. }), "{e:?}");
}

#[test]
fn auto_device_falls_back_to_the_cpu() {
    let mut notes = Vec::new();
    let be = select_backend(DeviceChoice::Auto, &mut |n| notes.push(n.to_string()))
        .expect("auto never fails");
    if CudaBackend::new(0).is_ok() {
        assert_eq!(be.kind(), lpaf::backend::DeviceKind::Cuda);
    } else {
        assert_eq!(be.kind(), lpaf::backend::DeviceKind::Cpu);
        assert!(
            notes.iter().any(|n| n.contains("no usable GPU")),
            "{notes:?}"
        );
    }
}

// ---- memory: fill and cast ------------------------------------------------------

#[test]
fn gpu_fill_all_dtypes() {
    let g = gpu_or_skip!("gpu_fill_all_dtypes");
    let c = cpu();
    // Odd lengths exercise the scalar tails of the 16-byte stores.
    for (dtype, n, value) in [
        (DType::F32, TOKENS * HIDDEN + 3, -2.75f32),
        (DType::F32, 5, f32::NAN),
        (DType::Bf16, 1003, 1.0f32 + 1.0 / 256.0),
        (DType::Bf16, 16, -3.3),
        (DType::U8, 1000 + 13, 300.0),
        (DType::U8, 7, 1.9),
        (DType::I32, 4099, -7.8),
        (DType::I32, 4, 3.0e10),
    ] {
        let mut tg = g.zeros(&[n], dtype).unwrap();
        let mut tc = c.zeros(&[n], dtype).unwrap();
        g.fill(&mut tg, value).unwrap();
        c.fill(&mut tc, value).unwrap();
        let what = format!("fill {dtype:?} n={n} value={value}");
        match dtype {
            DType::F32 | DType::Bf16 => {
                assert_bits(&what, &g.to_f32(&tg).unwrap(), &c.to_f32(&tc).unwrap())
            }
            DType::U8 => assert_eq!(g.to_u8(&tg).unwrap(), c.to_u8(&tc).unwrap(), "{what}"),
            DType::I32 => assert_eq!(g.to_i32(&tg).unwrap(), c.to_i32(&tc).unwrap(), "{what}"),
        }
    }
}

#[test]
fn gpu_cast_matches_cpu_bit_for_bit() {
    let g = gpu_or_skip!("gpu_cast_matches_cpu_bit_for_bit");
    let c = cpu();
    let mut x = rand_vec(11, TOKENS * HIDDEN + 2, 4.0);
    // Rounding corner cases: exact ties (even and odd kept part), values just
    // above a tie, signed zeros, infinities, NaN, subnormals, overflow to inf.
    let specials = [
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 256.0,
        f32::from_bits(0x3f80_8001),
        -0.0,
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7fa0_0001),
        f32::from_bits(0x0000_8000),
        f32::from_bits(0x0001_8000),
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
    ];
    x[..specials.len()].copy_from_slice(&specials);
    let n = x.len();
    let xg = put(&*g, &x, &[n]);
    let xc = put(&c, &x, &[n]);
    let mut bg = g.zeros(&[n], DType::Bf16).unwrap();
    let mut bc = c.zeros(&[n], DType::Bf16).unwrap();
    g.cast(&xg, &mut bg).unwrap();
    c.cast(&xc, &mut bc).unwrap();
    assert_bits(
        "cast f32 -> bf16",
        &g.to_f32(&bg).unwrap(),
        &c.to_f32(&bc).unwrap(),
    );

    let mut back_g = poisoned(&*g, &[n]);
    let mut back_c = c.zeros(&[n], DType::F32).unwrap();
    g.cast(&bg, &mut back_g).unwrap();
    c.cast(&bc, &mut back_c).unwrap();
    assert_bits(
        "cast bf16 -> f32",
        &g.to_f32(&back_g).unwrap(),
        &c.to_f32(&back_c).unwrap(),
    );

    let m: Vec<u8> = (0..100_003u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mg = g.from_u8(&m, &[m.len()]).unwrap();
    let mc = c.from_u8(&m, &[m.len()]).unwrap();
    let mut fg = poisoned(&*g, &[m.len()]);
    let mut fc = c.zeros(&[m.len()], DType::F32).unwrap();
    g.cast(&mg, &mut fg).unwrap();
    c.cast(&mc, &mut fc).unwrap();
    assert_bits(
        "cast u8 -> f32",
        &g.to_f32(&fg).unwrap(),
        &c.to_f32(&fc).unwrap(),
    );

    // f32 -> f32 is a copy; anything else is refused.
    let mut same = poisoned(&*g, &[n]);
    g.cast(&xg, &mut same).unwrap();
    assert_bits("cast f32 -> f32", &g.to_f32(&same).unwrap(), &x);
    let mut bad = g.zeros(&[n], DType::I32).unwrap();
    assert!(matches!(g.cast(&xg, &mut bad), Err(Error::Shape { .. })));
}

// ---- gemm -----------------------------------------------------------------------

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
fn cpu_gemm_with_empty_dimensions() {
    gemm_with_empty_dimensions(&cpu());
}

#[test]
fn gpu_gemm_with_empty_dimensions() {
    let g = gpu_or_skip!("gpu_gemm_with_empty_dimensions");
    gemm_with_empty_dimensions(&*g);
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

// ---- elementwise ----------------------------------------------------------------

#[test]
fn gpu_axpby_scale_mul_mask() {
    let g = gpu_or_skip!("gpu_axpby_scale_mul_mask");
    let c = cpu();
    let n = TOKENS * HIDDEN + 1;
    let x = rand_vec(1, n, 2.0);
    let y = rand_vec(2, n, 2.0);
    // y = 0.3·x − 1.7·y
    let mut yg = put(&*g, &y, &[n]);
    let mut yc = put(&c, &y, &[n]);
    g.axpby(0.3, &put(&*g, &x, &[n]), -1.7, &mut yg).unwrap();
    c.axpby(0.3, &put(&c, &x, &[n]), -1.7, &mut yc).unwrap();
    assert_close("axpby", &host(&*g, &yg), &host(&c, &yc), F32_TOL);
    // beta = 0 must not read y (NaN there must not leak through 0·NaN).
    let mut yg = poisoned(&*g, &[n]);
    let mut yc = c.zeros(&[n], DType::F32).unwrap();
    g.axpby(-2.5, &put(&*g, &x, &[n]), 0.0, &mut yg).unwrap();
    c.axpby(-2.5, &put(&c, &x, &[n]), 0.0, &mut yc).unwrap();
    assert_bits("axpby beta=0", &host(&*g, &yg), &host(&c, &yc));

    let mut tg = put(&*g, &x, &[n]);
    let mut tc = put(&c, &x, &[n]);
    g.scale(&mut tg, 0.37).unwrap();
    c.scale(&mut tc, 0.37).unwrap();
    assert_bits("scale", &host(&*g, &tg), &host(&c, &tc));

    let mask = rand_mask(3, n, 0.6);
    let mut x_nan = x.clone();
    x_nan[17] = f32::NAN; // masked or not, the select must keep exact semantics
    let mut og = poisoned(&*g, &[n]);
    let mut oc = c.zeros(&[n], DType::F32).unwrap();
    // assert_bits compares NaN payloads too (rel_err would reject the NaN).
    g.mul_mask(
        &put(&*g, &x_nan, &[n]),
        &g.from_u8(&mask, &[n]).unwrap(),
        &mut og,
    )
    .unwrap();
    c.mul_mask(
        &put(&c, &x_nan, &[n]),
        &c.from_u8(&mask, &[n]).unwrap(),
        &mut oc,
    )
    .unwrap();
    assert_bits("mul_mask", &host(&*g, &og), &host(&c, &oc));

    // out += mask ⊙ x, and out += x without a mask; bit for bit, odd length.
    for with_mask in [true, false] {
        let base = rand_vec(4, n, 1.0);
        let mut og = put(&*g, &base, &[n]);
        let mut oc = put(&c, &base, &[n]);
        let (mg, mc) = (
            g.from_u8(&mask, &[n]).unwrap(),
            c.from_u8(&mask, &[n]).unwrap(),
        );
        g.masked_add(&put(&*g, &x, &[n]), with_mask.then_some(&mg), &mut og)
            .unwrap();
        c.masked_add(&put(&c, &x, &[n]), with_mask.then_some(&mc), &mut oc)
            .unwrap();
        let want: Vec<f32> = (0..n)
            .map(|i| {
                if !with_mask || mask[i] != 0 {
                    base[i] + x[i]
                } else {
                    base[i]
                }
            })
            .collect();
        assert_bits("masked_add (cpu)", &host(&c, &oc), &want);
        assert_bits("masked_add", &host(&*g, &og), &host(&c, &oc));
    }

    // Errors: length mismatch, host tensor, wrong dtype.
    let mut short = g.zeros(&[n - 1], DType::F32).unwrap();
    assert!(matches!(
        g.axpby(1.0, &put(&*g, &x, &[n]), 1.0, &mut short),
        Err(Error::Shape { .. })
    ));
    let mut on_gpu = put(&*g, &y, &[n]);
    assert!(matches!(
        g.axpby(1.0, &put(&c, &x, &[n]), 1.0, &mut on_gpu),
        Err(Error::Shape { .. })
    ));
    let mut og = g.zeros(&[n], DType::F32).unwrap();
    assert!(matches!(
        g.mul_mask(&put(&*g, &x, &[n]), &put(&*g, &x, &[n]), &mut og),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn gpu_add_row_bias() {
    let g = gpu_or_skip!("gpu_add_row_bias");
    let c = cpu();
    for (rows, cols) in [(TOKENS, HIDDEN), (TOKENS, INTER), (37, 13), (5, 1)] {
        let y = rand_vec(10, rows * cols, 1.0);
        let b = rand_vec(11, cols, 1.0);
        let mut yg = put(&*g, &y, &[rows, cols]);
        let mut yc = put(&c, &y, &[rows, cols]);
        g.add_row_bias(&mut yg, &put(&*g, &b, &[cols])).unwrap();
        c.add_row_bias(&mut yc, &put(&c, &b, &[cols])).unwrap();
        assert_bits(
            &format!("add_row_bias {rows}x{cols}"),
            &host(&*g, &yg),
            &host(&c, &yc),
        );
    }
    let mut y = g.zeros(&[10, 7], DType::F32).unwrap();
    assert!(matches!(
        g.add_row_bias(&mut y, &g.zeros(&[3], DType::F32).unwrap()),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn gpu_col_sum_is_close_and_deterministic() {
    let g = gpu_or_skip!("gpu_col_sum_is_close_and_deterministic");
    let c = cpu();
    for (rows, cols) in [
        (TOKENS, HIDDEN),
        (TOKENS, INTER),
        (1000, 13),
        (3, 5),
        (100_000, 2),
    ] {
        let x = rand_vec(20 + rows as u64, rows * cols, 1.0);
        let o0 = rand_vec(21, cols, 1.0);
        let xg = put(&*g, &x, &[rows, cols]);
        let xc = put(&c, &x, &[rows, cols]);
        for accumulate in [false, true] {
            let what = format!("col_sum {rows}x{cols} accumulate={accumulate}");
            let run = || {
                let mut og = if accumulate {
                    put(&*g, &o0, &[cols])
                } else {
                    poisoned(&*g, &[cols])
                };
                g.col_sum(&xg, &mut og, accumulate).unwrap();
                host(&*g, &og)
            };
            let first = run();
            let second = run();
            assert!(same_bits(&first, &second), "{what}: two runs differ");
            let mut oc = put(&c, &o0, &[cols]);
            c.col_sum(&xc, &mut oc, accumulate).unwrap();
            assert_close(&what, &first, &host(&c, &oc), F32_TOL);
        }
    }
}

#[test]
fn gpu_gelu_and_tanh() {
    let g = gpu_or_skip!("gpu_gelu_and_tanh");
    let c = cpu();
    let n = TOKENS * INTER + 3;
    let x = rand_vec(30, n, 6.0);
    let dy = rand_vec(31, n, 1.0);
    let (xg, xc) = (put(&*g, &x, &[n]), put(&c, &x, &[n]));
    let (dyg, dyc) = (put(&*g, &dy, &[n]), put(&c, &dy, &[n]));

    let mut yg = poisoned(&*g, &[n]);
    let mut yc = c.zeros(&[n], DType::F32).unwrap();
    g.gelu(&xg, &mut yg).unwrap();
    c.gelu(&xc, &mut yc).unwrap();
    assert_close("gelu", &host(&*g, &yg), &host(&c, &yc), F32_TOL);

    let mut dxg = poisoned(&*g, &[n]);
    let mut dxc = c.zeros(&[n], DType::F32).unwrap();
    g.gelu_backward(&xg, &dyg, &mut dxg).unwrap();
    c.gelu_backward(&xc, &dyc, &mut dxc).unwrap();
    assert_close("gelu_backward", &host(&*g, &dxg), &host(&c, &dxc), F32_TOL);

    // tanh: the pooler, [32, 768].
    let m = BATCH * HIDDEN + 1;
    let (tg, tc) = (put(&*g, &x[..m], &[m]), put(&c, &x[..m], &[m]));
    let mut yg = poisoned(&*g, &[m]);
    let mut yc = c.zeros(&[m], DType::F32).unwrap();
    g.tanh(&tg, &mut yg).unwrap();
    c.tanh(&tc, &mut yc).unwrap();
    assert_close("tanh", &host(&*g, &yg), &host(&c, &yc), F32_TOL);

    let mut dxg = poisoned(&*g, &[m]);
    let mut dxc = c.zeros(&[m], DType::F32).unwrap();
    g.tanh_backward(&yc_to(&*g, &c, &yc), &put(&*g, &dy[..m], &[m]), &mut dxg)
        .unwrap();
    c.tanh_backward(&yc, &put(&c, &dy[..m], &[m]), &mut dxc)
        .unwrap();
    assert_close("tanh_backward", &host(&*g, &dxg), &host(&c, &dxc), F32_TOL);
}

/// A CPU tensor's values uploaded to the GPU.
fn yc_to(g: &dyn Backend, c: &CpuBackend, t: &Tensor) -> Tensor {
    put(g, &host(c, t), t.shape())
}

#[test]
fn gpu_dropout_masks_are_bit_identical() {
    let g = gpu_or_skip!("gpu_dropout_masks_are_bit_identical");
    let c = cpu();
    for (n, p, seed, stream) in [
        (TOKENS * HIDDEN, 0.1f32, 42u64, 7u64),
        (BATCH * HEADS * SEQ * SEQ, 0.1, 1234, 3),
        (1001, 0.5, 0xDEAD_BEEF_1234_5678, (1u64 << 33) + 5),
        (4096 + 3, 0.9, u64::MAX, u64::MAX),
    ] {
        let x = rand_vec(40, n, 1.0);
        let mut yg = poisoned(&*g, &[n]);
        let mut yc = c.zeros(&[n], DType::F32).unwrap();
        g.dropout(&put(&*g, &x, &[n]), &mut yg, p, seed, stream)
            .unwrap();
        c.dropout(&put(&c, &x, &[n]), &mut yc, p, seed, stream)
            .unwrap();
        assert_bits(
            &format!("dropout n={n} p={p} seed={seed:#x} stream={stream:#x}"),
            &host(&*g, &yg),
            &host(&c, &yc),
        );
    }
    // p = 0 copies; p outside [0, 1) is an error.
    let x = rand_vec(41, 999, 1.0);
    let mut yg = poisoned(&*g, &[999]);
    g.dropout(&put(&*g, &x, &[999]), &mut yg, 0.0, 1, 1)
        .unwrap();
    assert_bits("dropout p=0", &host(&*g, &yg), &x);
    assert!(g
        .dropout(&put(&*g, &x, &[999]), &mut yg, 1.0, 1, 1)
        .is_err());
}

// ---- LayerNorm --------------------------------------------------------------------

struct LnInputs {
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    dy: Vec<f32>,
}

fn ln_inputs(rows: usize, cols: usize, seed: u64) -> LnInputs {
    // Residual-stream-like rows: an offset per row, unit-ish spread.
    let offs = rand_vec(seed, rows, 3.0);
    let x = rand_vec(seed + 1, rows * cols, 2.0)
        .iter()
        .enumerate()
        .map(|(i, v)| v + offs[i / cols])
        .collect();
    LnInputs {
        x,
        gamma: rand_pos(seed + 2, cols, 0.8, 1.2),
        beta: rand_vec(seed + 3, cols, 0.1),
        dy: rand_vec(seed + 4, rows * cols, 1.0),
    }
}

#[test]
fn gpu_layer_norm_forward() {
    let g = gpu_or_skip!("gpu_layer_norm_forward");
    let c = cpu();
    // 768: register-cached path; 1030 (> 1024) and 30 (not a multiple of 4): generic.
    for (rows, cols) in [(TOKENS, HIDDEN), (64, 1030), (33, 30), (7, 1024)] {
        let inp = ln_inputs(rows, cols, 50);
        let eps = 1e-12;
        let mut yg = poisoned(&*g, &[rows, cols]);
        let mut mg = poisoned(&*g, &[rows]);
        let mut rg = poisoned(&*g, &[rows]);
        g.layer_norm(
            &put(&*g, &inp.x, &[rows, cols]),
            &put(&*g, &inp.gamma, &[cols]),
            &put(&*g, &inp.beta, &[cols]),
            eps,
            &mut yg,
            &mut mg,
            &mut rg,
        )
        .unwrap();
        let mut yc = c.zeros(&[rows, cols], DType::F32).unwrap();
        let mut mc = c.zeros(&[rows], DType::F32).unwrap();
        let mut rc = c.zeros(&[rows], DType::F32).unwrap();
        c.layer_norm(
            &put(&c, &inp.x, &[rows, cols]),
            &put(&c, &inp.gamma, &[cols]),
            &put(&c, &inp.beta, &[cols]),
            eps,
            &mut yc,
            &mut mc,
            &mut rc,
        )
        .unwrap();
        assert_close(
            &format!("layer_norm y {rows}x{cols}"),
            &host(&*g, &yg),
            &host(&c, &yc),
            F32_TOL,
        );
        assert_close(
            &format!("layer_norm mean {rows}x{cols}"),
            &host(&*g, &mg),
            &host(&c, &mc),
            F32_TOL,
        );
        assert_close(
            &format!("layer_norm rstd {rows}x{cols}"),
            &host(&*g, &rg),
            &host(&c, &rc),
            F32_TOL,
        );
    }
}

#[test]
fn gpu_layer_norm_backward_is_close_and_deterministic() {
    let g = gpu_or_skip!("gpu_layer_norm_backward_is_close_and_deterministic");
    let c = cpu();
    for (rows, cols) in [(TOKENS, HIDDEN), (64, 1030), (33, 30), (5000, 8)] {
        let inp = ln_inputs(rows, cols, 60);
        // Statistics from the CPU forward, shared by both backwards.
        let mut yc = c.zeros(&[rows, cols], DType::F32).unwrap();
        let mut mc = c.zeros(&[rows], DType::F32).unwrap();
        let mut rc = c.zeros(&[rows], DType::F32).unwrap();
        let xc = put(&c, &inp.x, &[rows, cols]);
        let gc = put(&c, &inp.gamma, &[cols]);
        c.layer_norm(
            &xc,
            &gc,
            &put(&c, &inp.beta, &[cols]),
            1e-12,
            &mut yc,
            &mut mc,
            &mut rc,
        )
        .unwrap();
        let (mean, rstd) = (host(&c, &mc), host(&c, &rc));
        let dg0 = rand_vec(61, cols, 1.0);
        let db0 = rand_vec(62, cols, 1.0);

        let mut dxc = c.zeros(&[rows, cols], DType::F32).unwrap();
        let mut dgc = put(&c, &dg0, &[cols]);
        let mut dbc = put(&c, &db0, &[cols]);
        c.layer_norm_backward(
            &put(&c, &inp.dy, &[rows, cols]),
            &xc,
            &gc,
            &mc,
            &rc,
            &mut dxc,
            &mut dgc,
            &mut dbc,
        )
        .unwrap();

        let (dyg, xg, gg) = (
            put(&*g, &inp.dy, &[rows, cols]),
            put(&*g, &inp.x, &[rows, cols]),
            put(&*g, &inp.gamma, &[cols]),
        );
        let (mg, rg) = (put(&*g, &mean, &[rows]), put(&*g, &rstd, &[rows]));
        let run = || {
            let mut dx = poisoned(&*g, &[rows, cols]);
            let mut dgm = put(&*g, &dg0, &[cols]);
            let mut dbt = put(&*g, &db0, &[cols]);
            g.layer_norm_backward(&dyg, &xg, &gg, &mg, &rg, &mut dx, &mut dgm, &mut dbt)
                .unwrap();
            (host(&*g, &dx), host(&*g, &dgm), host(&*g, &dbt))
        };
        let (dx1, dg1, db1) = run();
        let (dx2, dg2, db2) = run();
        let what = format!("layer_norm_backward {rows}x{cols}");
        assert!(
            same_bits(&dx1, &dx2) && same_bits(&dg1, &dg2) && same_bits(&db1, &db2),
            "{what}: two runs differ"
        );
        assert_close(&format!("{what} dx"), &dx1, &host(&c, &dxc), F32_TOL);
        assert_close(&format!("{what} dgamma"), &dg1, &host(&c, &dgc), F32_TOL);
        assert_close(&format!("{what} dbeta"), &db1, &host(&c, &dbc), F32_TOL);
    }
}

// ---- attention --------------------------------------------------------------------

#[test]
fn gpu_split_and_merge_heads() {
    let g = gpu_or_skip!("gpu_split_and_merge_heads");
    let c = cpu();
    // d = 64 (float4 path) and d = 7 (scalar path).
    for (b, s, h, d) in [(BATCH, SEQ, HEADS, 64), (2, 5, 3, 7)] {
        let n = b * s * h * d;
        let x = rand_vec(70, n, 1.0);
        let mut sg = poisoned(&*g, &[b, h, s, d]);
        let mut sc = c.zeros(&[b, h, s, d], DType::F32).unwrap();
        g.split_heads(&put(&*g, &x, &[b * s, h * d]), &mut sg, b, s, h)
            .unwrap();
        c.split_heads(&put(&c, &x, &[b * s, h * d]), &mut sc, b, s, h)
            .unwrap();
        assert_bits(
            &format!("split_heads d={d}"),
            &host(&*g, &sg),
            &host(&c, &sc),
        );
        let mut mg = poisoned(&*g, &[b * s, h * d]);
        let mut mc = c.zeros(&[b * s, h * d], DType::F32).unwrap();
        g.merge_heads(&sg, &mut mg, b, s, h).unwrap();
        c.merge_heads(&sc, &mut mc, b, s, h).unwrap();
        assert_bits(
            &format!("merge_heads d={d}"),
            &host(&*g, &mg),
            &host(&c, &mc),
        );
        assert_bits(&format!("merge(split(x)) d={d}"), &host(&*g, &mg), &x);
    }
    let mut out = g.zeros(&[10], DType::F32).unwrap();
    assert!(matches!(
        g.split_heads(&g.zeros(&[10], DType::F32).unwrap(), &mut out, 3, 1, 1),
        Err(Error::Shape { .. })
    ));
}

/// A [B, S] key mask with a random valid length per sequence; sequence 1 is
/// fully masked (its rows must come out all zero).
fn key_mask(seed: u64, b: usize, s: usize) -> Vec<u8> {
    let u = rand_pos(seed, b, 0.0, 1.0);
    let mut m = vec![0u8; b * s];
    for bi in 0..b {
        let len = if bi == 1 {
            0
        } else {
            1 + (u[bi] * s as f32) as usize % s
        };
        m[bi * s..bi * s + len].iter_mut().for_each(|v| *v = 1);
    }
    m
}

#[test]
fn gpu_attention_softmax() {
    let g = gpu_or_skip!("gpu_attention_softmax");
    let c = cpu();
    // S = 128 / 384 / 1024: register-cached rows; 130 and 1030: generic.
    for (b, h, s) in [
        (BATCH, HEADS, SEQ),
        (2, HEADS, 384),
        (2, 2, 1024),
        (3, 2, 130),
        (2, 1, 1030),
    ] {
        let n = b * h * s * s;
        let scores = rand_vec(80, n, 8.0);
        let mask = key_mask(81, b, s);
        let scale = 1.0 / 8.0;
        let mut pg = put(&*g, &scores, &[b, h, s, s]);
        let mut pc = put(&c, &scores, &[b, h, s, s]);
        g.attention_softmax(&mut pg, &g.from_u8(&mask, &[b, s]).unwrap(), h, scale)
            .unwrap();
        c.attention_softmax(&mut pc, &c.from_u8(&mask, &[b, s]).unwrap(), h, scale)
            .unwrap();
        let (got, want) = (host(&*g, &pg), host(&c, &pc));
        let what = format!("attention_softmax [{b}, {h}, {s}, {s}]");
        assert_close(&what, &got, &want, F32_TOL);
        for (i, v) in got.iter().enumerate() {
            let (row, j) = (i / s, i % s);
            let bi = row / (h * s);
            if mask[bi * s + j] == 0 {
                assert_eq!(
                    v.to_bits(),
                    0,
                    "{what}: masked key {j} of row {row} has probability {v}"
                );
            }
        }
    }
    let mut bad = g.zeros(&[2, 3, 4, 5], DType::F32).unwrap();
    let m = g.from_u8(&[1; 8], &[2, 4]).unwrap();
    assert!(matches!(
        g.attention_softmax(&mut bad, &m, 3, 1.0),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn gpu_softmax_backward() {
    let g = gpu_or_skip!("gpu_softmax_backward");
    let c = cpu();
    for (b, h, s) in [(BATCH, HEADS, SEQ), (2, HEADS, 512), (3, 2, 130)] {
        let n = b * h * s * s;
        let mut pc = put(&c, &rand_vec(90, n, 8.0), &[b, h, s, s]);
        c.attention_softmax(
            &mut pc,
            &c.from_u8(&key_mask(91, b, s), &[b, s]).unwrap(),
            h,
            0.125,
        )
        .unwrap();
        let probs = host(&c, &pc);
        let d = rand_vec(92, n, 1.0);
        let mut dg = put(&*g, &d, &[b, h, s, s]);
        let mut dc = put(&c, &d, &[b, h, s, s]);
        g.softmax_backward(&put(&*g, &probs, &[b, h, s, s]), &mut dg, 0.125)
            .unwrap();
        c.softmax_backward(&pc, &mut dc, 0.125).unwrap();
        assert_close(
            &format!("softmax_backward s={s}"),
            &host(&*g, &dg),
            &host(&c, &dc),
            F32_TOL,
        );
    }
}

// ---- embeddings -------------------------------------------------------------------

#[test]
fn gpu_gather_rows() {
    let g = gpu_or_skip!("gpu_gather_rows");
    let c = cpu();
    for (rows, cols) in [(VOCAB, HIDDEN), (100, 7)] {
        let table = rand_vec(100, rows * cols, 1.0);
        let ids = bert_ids(101, TOKENS, rows);
        let (tg, tc) = (
            put(&*g, &table, &[rows, cols]),
            put(&c, &table, &[rows, cols]),
        );
        let (ig, ic) = (
            g.from_i32(&ids, &[TOKENS]).unwrap(),
            c.from_i32(&ids, &[TOKENS]).unwrap(),
        );
        let mut og = poisoned(&*g, &[TOKENS, cols]);
        let mut oc = c.zeros(&[TOKENS, cols], DType::F32).unwrap();
        g.gather_rows(&tg, &ig, &mut og, false).unwrap();
        c.gather_rows(&tc, &ic, &mut oc, false).unwrap();
        assert_bits(
            &format!("gather_rows {rows}x{cols}"),
            &host(&*g, &og),
            &host(&c, &oc),
        );
        // Accumulate (token + position + type embeddings add up).
        g.gather_rows(&tg, &ig, &mut og, true).unwrap();
        c.gather_rows(&tc, &ic, &mut oc, true).unwrap();
        assert_bits(
            &format!("gather_rows accumulate {rows}x{cols}"),
            &host(&*g, &og),
            &host(&c, &oc),
        );
    }
    // An out-of-range id is an error naming it and its position.
    let table = g.zeros(&[10, 4], DType::F32).unwrap();
    let mut out = g.zeros(&[3, 4], DType::F32).unwrap();
    for (bad, want) in [
        ([1, 10, 2], "id 10 at position 1"),
        ([1, 2, -1], "id -1 at position 2"),
    ] {
        let e = g
            .gather_rows(&table, &g.from_i32(&bad, &[3]).unwrap(), &mut out, false)
            .expect_err("bad id");
        let msg = e.to_string();
        assert!(
            msg.contains(want) && msg.contains("outside the table's 10 rows"),
            "{msg}"
        );
    }
}

#[test]
fn gpu_scatter_add_rows_is_close_and_deterministic() {
    let g = gpu_or_skip!("gpu_scatter_add_rows_is_close_and_deterministic");
    let c = cpu();
    let word = bert_ids(110, TOKENS, VOCAB);
    let position: Vec<i32> = (0..TOKENS).map(|i| (i % SEQ) as i32).collect();
    // Token types: one long run of 0 then 1 per sequence, so segments span many pieces.
    let types: Vec<i32> = (0..TOKENS).map(|i| (i % SEQ >= 40) as i32).collect();
    let all_same = vec![3i32; 1000];
    let odd: Vec<i32> = bert_ids(111, 1000, 50);
    for (what, rows, cols, ids) in [
        ("word", VOCAB, HIDDEN, &word),
        ("position", 512, HIDDEN, &position),
        ("token type", 2, HIDDEN, &types),
        ("one id", 5, 13, &all_same),
        ("odd sizes", 50, 13, &odd),
    ] {
        let n = ids.len();
        let d = rand_vec(112, n * cols, 1.0);
        let t0 = rand_vec(113, rows * cols, 0.5);
        let (dg, ig) = (put(&*g, &d, &[n, cols]), g.from_i32(ids, &[n]).unwrap());
        let run = || {
            let mut tg = put(&*g, &t0, &[rows, cols]);
            g.scatter_add_rows(&dg, &ig, &mut tg).unwrap();
            host(&*g, &tg)
        };
        let first = run();
        let second = run();
        assert!(
            same_bits(&first, &second),
            "scatter_add_rows {what}: two runs differ"
        );
        let mut tc = put(&c, &t0, &[rows, cols]);
        c.scatter_add_rows(
            &put(&c, &d, &[n, cols]),
            &c.from_i32(ids, &[n]).unwrap(),
            &mut tc,
        )
        .unwrap();
        assert_close(
            &format!("scatter_add_rows {what}"),
            &first,
            &host(&c, &tc),
            F32_TOL,
        );
    }
    let mut t = g.zeros(&[4, 2], DType::F32).unwrap();
    let e = g
        .scatter_add_rows(
            &g.zeros(&[2, 2], DType::F32).unwrap(),
            &g.from_i32(&[0, 4], &[2]).unwrap(),
            &mut t,
        )
        .expect_err("id 4 of 4 rows");
    assert!(e.to_string().contains("id 4 at position 1"), "{e}");
}

#[test]
fn gpu_copy_rows() {
    let g = gpu_or_skip!("gpu_copy_rows");
    let c = cpu();
    // The K block of a fused QKV projection [4096, 2304] into [4096, 768]
    // (float4 path), then an unaligned block (scalar path), then accumulate.
    let qkv = rand_vec(120, TOKENS * 3 * HIDDEN, 1.0);
    let specs = [
        RowCopy {
            rows: TOKENS,
            cols: HIDDEN,
            src_offset: HIDDEN,
            src_stride: 3 * HIDDEN,
            dst_offset: 0,
            dst_stride: HIDDEN,
            accumulate: false,
        },
        RowCopy {
            rows: TOKENS - 1,
            cols: HIDDEN - 1,
            src_offset: 1,
            src_stride: 3 * HIDDEN,
            dst_offset: 5,
            dst_stride: HIDDEN,
            accumulate: false,
        },
        RowCopy {
            rows: TOKENS,
            cols: HIDDEN,
            src_offset: 2 * HIDDEN,
            src_stride: 3 * HIDDEN,
            dst_offset: 0,
            dst_stride: HIDDEN,
            accumulate: true,
        },
        RowCopy {
            rows: 70_000,
            cols: 1,
            src_offset: 3,
            src_stride: 4,
            dst_offset: 0,
            dst_stride: 1,
            accumulate: true,
        },
    ];
    for spec in specs {
        let dst_len =
            (spec.dst_offset + (spec.rows - 1) * spec.dst_stride + spec.cols).max(TOKENS * HIDDEN);
        let src_len = qkv
            .len()
            .max(spec.src_offset + (spec.rows - 1) * spec.src_stride + spec.cols);
        let src: Vec<f32> = (0..src_len).map(|i| qkv[i % qkv.len()]).collect();
        let d0 = rand_vec(121, dst_len, 1.0);
        let mut dg = put(&*g, &d0, &[dst_len]);
        let mut dc = put(&c, &d0, &[dst_len]);
        g.copy_rows(&put(&*g, &src, &[src_len]), &mut dg, &spec)
            .unwrap();
        c.copy_rows(&put(&c, &src, &[src_len]), &mut dc, &spec)
            .unwrap();
        assert_bits(
            &format!("copy_rows {spec:?}"),
            &host(&*g, &dg),
            &host(&c, &dc),
        );
    }
    // A full overwrite leaves no poison behind.
    let spec = specs[0];
    let mut dg = poisoned(&*g, &[TOKENS, HIDDEN]);
    g.copy_rows(&put(&*g, &qkv, &[TOKENS, 3 * HIDDEN]), &mut dg, &spec)
        .unwrap();
    let got = host(&*g, &dg);
    assert!(got.iter().all(|v| v.is_finite()));
    // Out of bounds is an error.
    let bad = RowCopy {
        rows: 2,
        cols: 4,
        src_offset: 0,
        src_stride: 4,
        dst_offset: 5,
        dst_stride: 4,
        accumulate: false,
    };
    let mut small = g.zeros(&[12], DType::F32).unwrap();
    assert!(matches!(
        g.copy_rows(&g.zeros(&[8], DType::F32).unwrap(), &mut small, &bad),
        Err(Error::Shape { .. })
    ));
}

// ---- reductions and the optimizer -------------------------------------------------------

#[test]
fn gpu_sum_squares_is_close_and_deterministic() {
    let g = gpu_or_skip!("gpu_sum_squares_is_close_and_deterministic");
    let c = cpu();
    for n in [TOKENS * HIDDEN, 1_000_003, 7, 110_000_000 / 16] {
        let x = rand_vec(130 + n as u64, n, 3.0);
        let xg = put(&*g, &x, &[n]);
        let a = g.sum_squares(&xg).unwrap();
        let b = g.sum_squares(&xg).unwrap();
        assert_eq!(
            a.to_bits(),
            b.to_bits(),
            "sum_squares n={n}: two runs differ"
        );
        let want = c.sum_squares(&put(&c, &x, &[n])).unwrap();
        assert!(
            ((a - want) / want).abs() < 1e-12,
            "sum_squares n={n}: {a} vs {want}"
        );
    }
    assert_eq!(
        g.sum_squares(&g.zeros(&[0], DType::F32).unwrap()).unwrap(),
        0.0
    );
}

#[test]
fn gpu_adamw_matches_torch_order() {
    let g = gpu_or_skip!("gpu_adamw_matches_torch_order");
    let c = cpu();
    let n = HIDDEN * INTER + 3;
    let p0 = rand_vec(140, n, 0.05);
    let g0 = rand_vec(141, n, 1e-2);
    let m0 = rand_vec(142, n, 1e-3);
    let v0 = rand_pos(143, n, 0.0, 1e-5);
    for hp in [
        AdamWStep {
            lr: 2e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-6,
            weight_decay: 0.01,
            step: 7,
            grad_scale: 0.5,
        },
        AdamWStep {
            lr: 1e-3,
            beta1: 0.8,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            step: 1,
            grad_scale: 1.0,
        },
    ] {
        let (mut pg, mut mg, mut vg) = (
            put(&*g, &p0, &[n]),
            put(&*g, &m0, &[n]),
            put(&*g, &v0, &[n]),
        );
        let (mut pc, mut mc, mut vc) = (put(&c, &p0, &[n]), put(&c, &m0, &[n]), put(&c, &v0, &[n]));
        g.adamw(&mut pg, &put(&*g, &g0, &[n]), &mut mg, &mut vg, &hp)
            .unwrap();
        c.adamw(&mut pc, &put(&c, &g0, &[n]), &mut mc, &mut vc, &hp)
            .unwrap();
        let (gp, cp) = (host(&*g, &pg), host(&c, &pc));
        // Relative to the update itself, not to p (which barely moves).
        let dg: Vec<f32> = gp.iter().zip(&p0).map(|(a, b)| a - b).collect();
        let dc: Vec<f32> = cp.iter().zip(&p0).map(|(a, b)| a - b).collect();
        assert_close("adamw update", &dg, &dc, F32_TOL);
        assert_close("adamw p", &gp, &cp, F32_TOL);
        assert_close("adamw m", &host(&*g, &mg), &host(&c, &mc), F32_TOL);
        assert_close("adamw v", &host(&*g, &vg), &host(&c, &vc), F32_TOL);
        // Every operation is explicitly rounded in the CPU's order: expected bit-exact.
        let differing = gp
            .iter()
            .zip(&cp)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        eprintln!(
            "adamw step {}: {differing} of {n} parameters differ in any bit from the CPU",
            hp.step
        );
    }
    let mut short = g.zeros(&[n - 1], DType::F32).unwrap();
    let hp = AdamWStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
        grad_scale: 1.0,
    };
    let (mut pg, mut vg) = (put(&*g, &p0, &[n]), put(&*g, &v0, &[n]));
    assert!(matches!(
        g.adamw(&mut pg, &put(&*g, &g0, &[n]), &mut short, &mut vg, &hp),
        Err(Error::Shape { .. })
    ));
}

/// copy (every dtype), clone_tensor and mul, on a BERT-base activation with
/// an odd tail, against the CPU.
#[test]
fn gpu_copy_clone_and_mul() {
    let g = gpu_or_skip!("gpu_copy_clone_and_mul");
    let c = cpu();
    let n = TOKENS * HIDDEN + 3;
    let a = rand_vec(140, n, 2.0);
    let b = rand_vec(141, n, 2.0);
    let (ag, bg) = (put(&*g, &a, &[n]), put(&*g, &b, &[n]));
    let mut og = poisoned(&*g, &[n]);
    g.mul(&ag, &bg, &mut og).unwrap();
    let mut oc = c.zeros(&[n], DType::F32).unwrap();
    c.mul(&put(&c, &a, &[n]), &put(&c, &b, &[n]), &mut oc)
        .unwrap();
    assert_bits("mul", &host(&*g, &og), &host(&c, &oc));
    let mut cg = poisoned(&*g, &[n]);
    g.copy(&ag, &mut cg).unwrap();
    assert_bits("copy f32", &host(&*g, &cg), &a);
    assert_bits(
        "clone_tensor",
        &host(&*g, &g.clone_tensor(&ag).unwrap()),
        &a,
    );
    let m: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
    let mg = g.from_u8(&m, &[n]).unwrap();
    let mut mg2 = g.from_u8(&vec![0; n], &[n]).unwrap();
    g.copy(&mg, &mut mg2).unwrap();
    assert_eq!(g.to_u8(&mg2).unwrap(), m, "copy u8");
    let ids: Vec<i32> = (0..n as i32).map(|i| i.wrapping_mul(-7919)).collect();
    let ig = g.from_i32(&ids, &[n]).unwrap();
    assert_eq!(
        g.to_i32(&g.clone_tensor(&ig).unwrap()).unwrap(),
        ids,
        "clone i32"
    );
    // Mismatched lengths are an error, not a partial copy.
    let mut short = g.zeros(&[n - 1], DType::F32).unwrap();
    assert!(g.copy(&ag, &mut short).is_err());
}
