//! The CPU references of the four compression kernels (docs/algorithms.md §6) against
//! plainly written f64 / full-sort computations.

use lpaf::backend::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::common::*;

fn t(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::cpu_f32(data, shape).unwrap()
}

fn tu8(data: Vec<u8>, shape: &[usize]) -> Tensor {
    Tensor::cpu_u8(data, shape).unwrap()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn rel64(a: &[f32], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-300)).sqrt()
}

// ---- score accumulation ----------------------------------------------------

#[test]
fn movement_grads_both_rules_match_naive() {
    let be = cpu();
    let n = 3 * 1000 + 7;
    let w = rand_vec(1, n, 1.0);
    let g = rand_vec(2, n, 0.1);
    let m = rand_mask(3, n, 0.3);
    for rule in [ScoreRule::Adam, ScoreRule::Accumulate] {
        let gw0 = rand_vec(4, n, 0.05);
        let sc0 = rand_vec(5, n, 0.05);
        let mut gw = t(gw0.clone(), &[n]);
        let mut sc = t(sc0.clone(), &[n]);
        be.movement_grads(
            &t(w.clone(), &[n]),
            &t(g.clone(), &[n]),
            &tu8(m.clone(), &[n]),
            &mut gw,
            &mut sc,
            rule,
        )
        .unwrap();
        let sign = if rule == ScoreRule::Adam { 1.0 } else { -1.0 };
        let want_gw: Vec<f64> = (0..n)
            .map(|i| gw0[i] as f64 + g[i] as f64 * m[i] as f64)
            .collect();
        let want_sc: Vec<f64> = (0..n)
            .map(|i| sc0[i] as f64 + sign * g[i] as f64 * w[i] as f64)
            .collect();
        assert!(rel64(gw.host_f32().unwrap(), &want_gw) < 1e-6);
        assert!(rel64(sc.host_f32().unwrap(), &want_sc) < 1e-6);
    }
    // Shape mismatch is an error, not a panic.
    let mut gw = t(vec![0.0; 4], &[4]);
    let mut sc = t(vec![0.0; 5], &[5]);
    assert!(be
        .movement_grads(
            &t(vec![0.0; 4], &[4]),
            &t(vec![0.0; 4], &[4]),
            &tu8(vec![0; 4], &[4]),
            &mut gw,
            &mut sc,
            ScoreRule::Adam
        )
        .is_err());
}

/// The f64 model of LoSparse's importance state.
struct NaiveImportance {
    ipt: Vec<f64>,
    ibar: Vec<f64>,
    ubar: Vec<f64>,
}

impl NaiveImportance {
    fn step(&mut self, s: &[f32], g: &[f32], count: u32, close: bool, b1: f64, b2: f64) {
        for i in 0..s.len() {
            let imp = (s[i] as f64 * g[i] as f64).abs();
            self.ipt[i] = ((count as f64 - 1.0) * self.ipt[i] + imp) / count as f64;
            if close {
                self.ibar[i] = b1 * self.ibar[i] + (1.0 - b1) * self.ipt[i];
                self.ubar[i] = b2 * self.ubar[i] + (1.0 - b2) * (self.ipt[i] - self.ibar[i]).abs();
            }
        }
    }
}

#[test]
fn losparse_importance_windows_match_naive() {
    let be = cpu();
    let n = 2048 + 3;
    let (b1, b2) = (0.85f32, 0.95f32);
    let mut ipt = t(vec![0.0; n], &[n]);
    let mut ibar = t(vec![0.0; n], &[n]);
    let mut ubar = t(vec![0.0; n], &[n]);
    let mut ibar_only = t(vec![0.0; n], &[n]);
    let mut ipt2 = t(vec![0.0; n], &[n]);
    let mut naive = NaiveImportance {
        ipt: vec![0.0; n],
        ibar: vec![0.0; n],
        ubar: vec![0.0; n],
    };
    let window = 3u32;
    for stepi in 0..7u32 {
        let s = rand_vec(100 + stepi as u64, n, 1.0);
        let g = rand_vec(200 + stepi as u64, n, 0.01);
        let count = stepi % window + 1;
        let close = count == window;
        let st = ImportanceStep {
            count,
            close,
            beta1: b1,
            beta2: b2,
        };
        let (st_, gt_) = (t(s.clone(), &[n]), t(g.clone(), &[n]));
        be.losparse_importance(&st_, &gt_, &mut ipt, &mut ibar, Some(&mut ubar), &st)
            .unwrap();
        be.losparse_importance(&st_, &gt_, &mut ipt2, &mut ibar_only, None, &st)
            .unwrap();
        naive.step(&s, &g, count, close, b1 as f64, b2 as f64);
        assert!(
            rel64(ipt.host_f32().unwrap(), &naive.ipt) < 1e-6,
            "ipt at step {stepi}"
        );
        assert_eq!(ipt.host_f32().unwrap(), ipt2.host_f32().unwrap());
        if stepi >= window - 1 {
            assert!(
                rel64(ibar.host_f32().unwrap(), &naive.ibar) < 1e-6,
                "ibar at step {stepi}"
            );
            assert!(
                rel64(ubar.host_f32().unwrap(), &naive.ubar) < 1e-5,
                "ubar at step {stepi}"
            );
            assert_eq!(ibar.host_f32().unwrap(), ibar_only.host_f32().unwrap());
        }
    }
    let st = ImportanceStep {
        count: 0,
        close: false,
        beta1: b1,
        beta2: b2,
    };
    assert!(be
        .losparse_importance(
            &t(vec![0.0; n], &[n]),
            &t(vec![0.0; n], &[n]),
            &mut ipt,
            &mut ibar,
            None,
            &st
        )
        .is_err());
}

#[test]
fn adamw_with_importance_uses_updated_s_and_scaled_grad() {
    let be = cpu();
    let n = 4099;
    let s0 = rand_vec(11, n, 0.5);
    let g = rand_vec(12, n, 0.02);
    let m0 = rand_vec(13, n, 0.01);
    let v0: Vec<f32> = rand_vec(14, n, 0.001).iter().map(|x| x.abs()).collect();
    let hp = AdamWStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
        step: 5,
        grad_scale: 0.5,
    };
    let (mut s, mut m, mut v) = (
        t(s0.clone(), &[n]),
        t(m0.clone(), &[n]),
        t(v0.clone(), &[n]),
    );
    let mut ipt = t(vec![0.0; n], &[n]);
    let mut ibar = t(rand_vec(15, n, 0.01), &[n]);
    let ibar0 = ibar.host_f32().unwrap().to_vec();
    let st = ImportanceStep {
        count: 1,
        close: true,
        beta1: 0.85,
        beta2: 1.0,
    };
    be.adamw_with_importance(
        &mut s,
        &t(g.clone(), &[n]),
        &mut m,
        &mut v,
        &hp,
        &mut ipt,
        &mut ibar,
        None,
        &st,
    )
    .unwrap();
    // f64 model of torch's AdamW followed by the importance of the new S.
    let (b1, b2, lr, eps, wd, tt) = (0.9f64, 0.999f64, 1e-2f64, 1e-8f64, 0.01f64, 5i32);
    let (bc1, bc2) = (1.0 - b1.powi(tt), 1.0 - b2.powi(tt));
    let mut want_s = vec![0.0; n];
    let mut want_ipt = vec![0.0; n];
    let mut want_ibar = vec![0.0; n];
    for i in 0..n {
        let gi = g[i] as f64 * 0.5;
        let mi = b1 * m0[i] as f64 + (1.0 - b1) * gi;
        let vi = b2 * v0[i] as f64 + (1.0 - b2) * gi * gi;
        let p = s0[i] as f64 * (1.0 - lr * wd) - lr / bc1 * mi / (vi.sqrt() / bc2.sqrt() + eps);
        want_s[i] = p;
        want_ipt[i] = (p * gi).abs();
        want_ibar[i] = 0.85 * ibar0[i] as f64 + 0.15 * want_ipt[i];
    }
    assert!(rel64(s.host_f32().unwrap(), &want_s) < 1e-6);
    assert!(rel64(ipt.host_f32().unwrap(), &want_ipt) < 1e-5);
    assert!(rel64(ibar.host_f32().unwrap(), &want_ibar) < 1e-5);
}

// ---- exact top-k ------------------------------------------------------------

/// Masks by a full stable sort of (key descending, global index ascending):
/// the definition of `ExactK`; `KeepTies` keeps everything ≥ the k-th key.
fn naive_topk(
    mats: &[(Vec<f32>, usize)],
    k: usize,
    rule: TopkRule,
    scope: TopkScope,
    abs: bool,
) -> Vec<Vec<u8>> {
    let mut keys: Vec<f32> = Vec::new();
    for (data, cols) in mats {
        for row in data.chunks(*cols) {
            match scope {
                TopkScope::Entries => {
                    keys.extend(row.iter().map(|&x| if abs { x.abs() } else { x }))
                }
                TopkScope::RowMean => {
                    let mean = row
                        .iter()
                        .map(|&x| if abs { x.abs() as f64 } else { x as f64 })
                        .sum::<f64>()
                        / row.len() as f64;
                    let mean = mean as f32;
                    let mean = if mean.is_nan() { f32::NAN } else { mean };
                    keys.extend(std::iter::repeat_n(mean, row.len()));
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| keys[b].total_cmp(&keys[a])); // stable: ties stay in index order
    let mut flat = vec![0u8; keys.len()];
    if k > 0 {
        match rule {
            TopkRule::ExactK => order[..k].iter().for_each(|&i| flat[i] = 1),
            TopkRule::KeepTies => {
                let kth = keys[order[k - 1]];
                for i in 0..keys.len() {
                    flat[i] = (keys[i].total_cmp(&kth) != std::cmp::Ordering::Less) as u8;
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut off = 0;
    for (data, _) in mats {
        out.push(flat[off..off + data.len()].to_vec());
        off += data.len();
    }
    out
}

/// Runs threshold + apply on the backend and checks masks, applied tensors and counts.
fn check_topk(
    be: &dyn Backend,
    mats: &[(Vec<f32>, usize)],
    k: usize,
    rule: TopkRule,
    scope: TopkScope,
    abs: bool,
) {
    let scores: Vec<Tensor> = mats
        .iter()
        .map(|(d, c)| be.from_f32(d, &[d.len() / c, *c]).unwrap())
        .collect();
    let refs: Vec<&Tensor> = scores.iter().collect();
    let th = be.topk_threshold(&refs, k, rule, scope, abs).unwrap();
    let mut masks: Vec<Tensor> = mats
        .iter()
        .map(|(d, _)| be.from_u8(&vec![7u8; d.len()], &[d.len()]).unwrap())
        .collect();
    let applied0: Vec<Vec<f32>> = mats
        .iter()
        .enumerate()
        .map(|(i, (d, _))| rand_vec(900 + i as u64, d.len(), 1.0))
        .collect();
    let mut applied: Vec<Tensor> = applied0
        .iter()
        .map(|d| be.from_f32(d, &[d.len()]).unwrap())
        .collect();
    let kept = {
        let mut mrefs: Vec<&mut Tensor> = masks.iter_mut().collect();
        let mut arefs: Vec<&mut Tensor> = applied.iter_mut().collect();
        be.topk_apply(&refs, &th, &mut mrefs, &mut arefs).unwrap()
    };
    let want = naive_topk(mats, k, rule, scope, abs);
    let want_kept: usize = want
        .iter()
        .map(|m| m.iter().map(|&x| x as usize).sum::<usize>())
        .sum();
    for (i, w) in want.iter().enumerate() {
        let got = be.to_u8(&masks[i]).unwrap();
        assert_eq!(
            &got, w,
            "mask {i} differs (k {k}, {rule:?}, {scope:?}, abs {abs})"
        );
        let a = be.to_f32(&applied[i]).unwrap();
        for j in 0..a.len() {
            let e = if w[j] != 0 { applied0[i][j] } else { 0.0 };
            assert_eq!(a[j].to_bits(), e.to_bits(), "applied {i}[{j}]");
        }
    }
    assert_eq!(kept, want_kept);
    assert_eq!(th.kept, want_kept);
    if rule == TopkRule::ExactK {
        assert_eq!(th.kept, k);
    }
    // A mask-only apply gives the same masks.
    let mut masks2: Vec<Tensor> = mats
        .iter()
        .map(|(d, _)| be.from_u8(&vec![3u8; d.len()], &[d.len()]).unwrap())
        .collect();
    let mut mrefs: Vec<&mut Tensor> = masks2.iter_mut().collect();
    be.topk_apply(&refs, &th, &mut mrefs, &mut []).unwrap();
    for (i, w) in want.iter().enumerate() {
        assert_eq!(&be.to_u8(&masks2[i]).unwrap(), w);
    }
}

/// Scores with many ties, ±0, ±∞ and a NaN.
fn tied_scores(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pool = [
        -2.0f32,
        -1.0,
        -0.5,
        -0.0,
        0.0,
        0.25,
        0.5,
        1.0,
        2.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    (0..n)
        .map(|_| {
            if rng.random_bool(0.002) {
                f32::NAN
            } else {
                pool[rng.random_range(0..pool.len())]
            }
        })
        .collect()
}

#[test]
fn topk_single_matrix_matches_full_sort() {
    let be = cpu();
    let (r, c) = (37, 41);
    let x = rand_vec(21, r * c, 1.0);
    for k in [0, 1, 17, r * c / 2, r * c - 1, r * c] {
        for abs in [false, true] {
            for rule in [TopkRule::ExactK, TopkRule::KeepTies] {
                check_topk(&be, &[(x.clone(), c)], k, rule, TopkScope::Entries, abs);
            }
        }
    }
}

#[test]
fn topk_ties_and_signed_zeros_match_full_sort() {
    let be = cpu();
    let mats = vec![
        (tied_scores(31, 30 * 20), 20),
        (tied_scores(32, 7 * 50), 50),
        (tied_scores(33, 64 * 3), 3),
    ];
    let total: usize = mats.iter().map(|m| m.0.len()).sum();
    for k in [0, 1, 2, 5, 100, 333, total / 2, total - 3, total] {
        for abs in [false, true] {
            for rule in [TopkRule::ExactK, TopkRule::KeepTies] {
                check_topk(&be, &mats, k, rule, TopkScope::Entries, abs);
            }
        }
    }
}

#[test]
fn topk_global_over_mixed_shapes_matches_full_sort() {
    let be = cpu();
    // Large enough that the partial-tie path crosses several 16 Ki chunks.
    let mut big = rand_vec(41, 200 * 180, 1.0);
    big.iter_mut().step_by(7).for_each(|x| *x = 0.125);
    let mats = vec![
        (big, 180),
        (rand_vec(42, 30 * 12, 1.0), 12),
        (vec![0.125; 5 * 9], 9),
    ];
    let total: usize = mats.iter().map(|m| m.0.len()).sum();
    let n_ge = mats
        .iter()
        .flat_map(|m| m.0.iter())
        .filter(|&&x| x >= 0.125)
        .count();
    for k in [1, 1000, n_ge - 2000, n_ge - 1, n_ge, total - 1] {
        for rule in [TopkRule::ExactK, TopkRule::KeepTies] {
            check_topk(&be, &mats, k, rule, TopkScope::Entries, false);
        }
    }
}

#[test]
fn topk_row_mean_with_rows_of_different_lengths() {
    let be = cpu();
    // Row sums of halves are exact in any order, so ties between rows are real.
    let mut rng = ChaCha8Rng::seed_from_u64(51);
    let tied = |rows: usize, cols: usize, rng: &mut ChaCha8Rng| -> Vec<f32> {
        (0..rows * cols)
            .map(|_| rng.random_range(-2i32..=2) as f32 * 0.5)
            .collect()
    };
    let mats = vec![
        (tied(20, 8, &mut rng), 8),
        (rand_vec(52, 9 * 33, 1.0), 33),
        (tied(40, 2, &mut rng), 2),
        (vec![0.0; 3 * 70], 70),
    ];
    let total: usize = mats.iter().map(|m| m.0.len()).sum();
    for k in [0, 1, 7, 8, 9, 100, total / 3, total - 5, total] {
        for abs in [false, true] {
            for rule in [TopkRule::ExactK, TopkRule::KeepTies] {
                check_topk(&be, &mats, k, rule, TopkScope::RowMean, abs);
            }
        }
    }
}

#[test]
fn topk_row_mean_definition() {
    // The documented 32-lane summation order, checked on a row where it matters
    // only through rounding: the mean of 1..=100 is exact.
    let row: Vec<f32> = (1..=100).map(|i| i as f32).collect();
    assert_eq!(topk_row_mean(&row, false), 50.5);
    let neg: Vec<f32> = row.iter().map(|x| -x).collect();
    assert_eq!(topk_row_mean(&neg, true), 50.5);
    assert!(topk_row_mean(&[1.0, f32::NAN], false).to_bits() == f32::NAN.to_bits());
    // Keys order like total_cmp.
    let vals = [
        f32::NEG_INFINITY,
        -1.0,
        -0.0,
        0.0,
        1e-30,
        1.0,
        f32::INFINITY,
        f32::NAN,
    ];
    for w in vals.windows(2) {
        assert!(
            topk_key(w[0], false) < topk_key(w[1], false),
            "{} < {}",
            w[0],
            w[1]
        );
        assert_eq!(
            topk_key_value(topk_key(w[0], false)).to_bits(),
            w[0].to_bits()
        );
    }
    assert_eq!(topk_key(-0.0, true), topk_key(0.0, true));
}

#[test]
fn topk_errors() {
    let be = cpu();
    let a = t(vec![1.0; 6], &[2, 3]);
    let b = t(vec![1.0; 4], &[4]);
    assert!(be
        .topk_threshold(&[&a, &b], 11, TopkRule::ExactK, TopkScope::Entries, false)
        .is_err());
    assert!(be
        .topk_threshold(
            &[&tu8(vec![1; 4], &[4])],
            1,
            TopkRule::ExactK,
            TopkScope::Entries,
            false
        )
        .is_err());
    let th = be
        .topk_threshold(&[&a, &b], 10, TopkRule::ExactK, TopkScope::Entries, false)
        .unwrap();
    assert_eq!(th.kept, 10);
    let mut m_bad = tu8(vec![0; 5], &[5]);
    let mut m_ok = tu8(vec![0; 6], &[6]);
    assert!(be
        .topk_apply(&[&a, &b], &th, &mut [&mut m_ok, &mut m_bad], &mut [])
        .is_err());
    let mut m_ok2 = tu8(vec![0; 4], &[4]);
    assert!(be
        .topk_apply(&[&a, &b], &th, &mut [&mut m_ok], &mut [])
        .is_err());
    let mut ap_bad = t(vec![0.0; 3], &[3]);
    let mut ap_ok = t(vec![0.0; 6], &[6]);
    assert!(be
        .topk_apply(
            &[&a, &b],
            &th,
            &mut [&mut m_ok, &mut m_ok2],
            &mut [&mut ap_ok, &mut ap_bad]
        )
        .is_err());
    let mut m_f32 = t(vec![0.0; 6], &[6]);
    let mut m_ok3 = tu8(vec![0; 4], &[4]);
    assert!(be
        .topk_apply(&[&a, &b], &th, &mut [&mut m_f32, &mut m_ok3], &mut [])
        .is_err());
    assert_eq!(
        be.topk_apply(&[&a, &b], &th, &mut [&mut m_ok, &mut m_ok3], &mut [])
            .unwrap(),
        10
    );
}

#[test]
fn sigmoid_mask_matches_naive() {
    let be = cpu();
    let n = 5000;
    let x = rand_vec(61, n, 4.0);
    let d0 = rand_vec(62, n, 0.1);
    let mut mask = tu8(vec![9; n], &[n]);
    let mut d = t(d0.clone(), &[n]);
    let tau = 0.3f32;
    let coef = 0.01f32;
    let kept = be
        .sigmoid_mask(&t(x.clone(), &[n]), tau, &mut mask, Some(&mut d), coef)
        .unwrap();
    let mut want_kept = 0;
    let mut want_d = vec![0.0f64; n];
    for i in 0..n {
        let s = 1.0 / (1.0 + (-(x[i] as f64)).exp());
        let keep = s > tau as f64;
        assert_eq!(
            mask.host_u8().unwrap()[i],
            keep as u8,
            "entry {i}: x = {}",
            x[i]
        );
        want_kept += keep as usize;
        want_d[i] = d0[i] as f64 + coef as f64 * s * (1.0 - s);
    }
    assert_eq!(kept, want_kept);
    assert!(rel64(d.host_f32().unwrap(), &want_d) < 1e-6);
    assert!(be
        .sigmoid_mask(&t(x.clone(), &[n]), 1.0, &mut mask, None, 0.0)
        .is_err());
    assert!(be
        .sigmoid_mask(&t(x, &[n]), 0.0, &mut mask, None, 0.0)
        .is_err());
}

// ---- fused low-rank + sparse layer -------------------------------------------

/// `C = A·B` in f64 (row-major, `A` m×k, `B` k×n).
fn mm(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for l in 0..k {
            let x = a[i * k + l];
            for j in 0..n {
                c[i * n + j] += x * b[l * n + j];
            }
        }
    }
    c
}

fn tr(a: &[f64], m: usize, n: usize) -> Vec<f64> {
    let mut t = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            t[j * m + i] = a[i * n + j];
        }
    }
    t
}

#[test]
fn lowrank_sparse_forward_backward_match_naive() {
    let be = cpu();
    let (n, inp, out, r) = (23, 19, 13, 4);
    let x = rand_vec(71, n * inp, 1.0);
    let u = rand_vec(72, out * r, 0.5);
    let v = rand_vec(73, r * inp, 0.5);
    let s = rand_vec(74, out * inp, 0.3);
    let m = rand_mask(75, out * inp, 0.4);
    let b = rand_vec(76, out, 0.2);
    let dy = rand_vec(77, n * out, 1.0);
    for (with_s, with_m, with_b) in [
        (true, true, true),
        (true, false, false),
        (false, false, true),
    ] {
        for (prec, tol) in [
            (Precision::F32, 1e-5),
            (Precision::Tf32, 3e-3),
            (Precision::Bf16, 2e-2),
        ] {
            // Naive f64.
            let mut weff = mm(&f64s(&u), &f64s(&v), out, r, inp);
            if with_s {
                for i in 0..out * inp {
                    if !with_m || m[i] != 0 {
                        weff[i] += s[i] as f64;
                    }
                }
            }
            let mut y = mm(&f64s(&x), &tr(&weff, out, inp), n, inp, out);
            if with_b {
                for i in 0..n {
                    for j in 0..out {
                        y[i * out + j] += b[j] as f64;
                    }
                }
            }
            let dw = mm(&tr(&f64s(&dy), n, out), &f64s(&x), out, n, inp);
            let dx = mm(&f64s(&dy), &weff, n, out, inp);
            // Accumulation: start from non-zero gradients.
            let du0 = rand_vec(78, out * r, 0.1);
            let dv0 = rand_vec(79, r * inp, 0.1);
            let ds0 = rand_vec(80, out * inp, 0.1);
            let db0 = rand_vec(81, out, 0.1);
            let du: Vec<f64> = mm(&dw, &tr(&f64s(&v), r, inp), out, inp, r)
                .iter()
                .zip(&du0)
                .map(|(a, b)| a + *b as f64)
                .collect();
            let dv: Vec<f64> = mm(&tr(&f64s(&u), out, r), &dw, r, out, inp)
                .iter()
                .zip(&dv0)
                .map(|(a, b)| a + *b as f64)
                .collect();
            let ds: Vec<f64> = (0..out * inp)
                .map(|i| ds0[i] as f64 + if !with_m || m[i] != 0 { dw[i] } else { 0.0 })
                .collect();
            let db: Vec<f64> = (0..out)
                .map(|j| db0[j] as f64 + (0..n).map(|i| dy[i * out + j] as f64).sum::<f64>())
                .collect();

            let xt = t(x.clone(), &[n, inp]);
            let ut = t(u.clone(), &[out, r]);
            let vt = t(v.clone(), &[r, inp]);
            let st = t(s.clone(), &[out, inp]);
            let mt = tu8(m.clone(), &[out, inp]);
            let bt = t(b.clone(), &[out]);
            let mut weff_t = t(vec![f32::NAN; out * inp], &[out, inp]);
            let mut y_t = t(vec![f32::NAN; n * out], &[n, out]);
            lpaf::backend::lowrank_sparse::forward(
                &be,
                &xt,
                &ut,
                &vt,
                with_s.then_some(&st),
                with_m.then_some(&mt),
                with_b.then_some(&bt),
                &mut weff_t,
                &mut y_t,
                prec,
            )
            .unwrap();
            assert!(
                rel64(weff_t.host_f32().unwrap(), &weff) < tol,
                "w_eff {prec:?}"
            );
            assert!(rel64(y_t.host_f32().unwrap(), &y) < tol, "y {prec:?}");
            let mut dx_t = t(vec![f32::NAN; n * inp], &[n, inp]);
            let mut du_t = t(du0.clone(), &[out, r]);
            let mut dv_t = t(dv0.clone(), &[r, inp]);
            let mut ds_t = t(ds0.clone(), &[out, inp]);
            let mut db_t = t(db0.clone(), &[out]);
            let mut scratch = t(vec![f32::NAN; out * inp], &[out, inp]);
            lpaf::backend::lowrank_sparse::backward(
                &be,
                &xt,
                &ut,
                &vt,
                with_m.then_some(&mt),
                &weff_t,
                &t(dy.clone(), &[n, out]),
                Some(&mut dx_t),
                &mut du_t,
                &mut dv_t,
                Some(&mut ds_t),
                Some(&mut db_t),
                &mut scratch,
                prec,
            )
            .unwrap();
            assert!(rel64(scratch.host_f32().unwrap(), &dw) < tol, "dW {prec:?}");
            assert!(rel64(dx_t.host_f32().unwrap(), &dx) < tol, "dx {prec:?}");
            assert!(rel64(du_t.host_f32().unwrap(), &du) < tol, "du {prec:?}");
            assert!(rel64(dv_t.host_f32().unwrap(), &dv) < tol, "dv {prec:?}");
            assert!(rel64(ds_t.host_f32().unwrap(), &ds) < tol, "ds {prec:?}");
            assert!(rel64(db_t.host_f32().unwrap(), &db) < 1e-5, "db {prec:?}");
        }
    }
    // Shape errors.
    let mut weff = t(vec![0.0; out * inp], &[out, inp]);
    let mut y = t(vec![0.0; n * out], &[n, out]);
    let bad_v = t(vec![0.0; (r + 1) * inp], &[r + 1, inp]);
    assert!(lpaf::backend::lowrank_sparse::forward(
        &be,
        &t(x.clone(), &[n, inp]),
        &t(u.clone(), &[out, r]),
        &bad_v,
        None,
        None,
        None,
        &mut weff,
        &mut y,
        Precision::F32
    )
    .is_err());
    let bad_x = t(vec![0.0; n * (inp + 1)], &[n, inp + 1]);
    assert!(lpaf::backend::lowrank_sparse::forward(
        &be,
        &bad_x,
        &t(u, &[out, r]),
        &t(v, &[r, inp]),
        None,
        None,
        None,
        &mut weff,
        &mut y,
        Precision::F32
    )
    .is_err());
}

// ---- weighted SVD -------------------------------------------------------------

/// A matrix with singular values `decay^i` (up to scale), from random factors.
fn gapped(seed: u64, o: usize, n: usize, decay: f64) -> Vec<f32> {
    let k = o.min(n);
    let a = rand_vec(seed, o * k, 1.0);
    let b = rand_vec(seed + 1, k * n, 1.0);
    let mut w = vec![0.0f32; o * n];
    for l in 0..k {
        let s = decay.powi(l as i32);
        for i in 0..o {
            for j in 0..n {
                w[i * n + j] += (s * a[i * k + l] as f64 * b[l * n + j] as f64) as f32;
            }
        }
    }
    w
}

/// Plain truncated SVD (faer, f64): the rank-r product and the singular values.
fn plain_svd(w: &[f32], o: usize, n: usize, r: usize) -> (Vec<f64>, Vec<f64>) {
    let m = faer::Mat::<f64>::from_fn(o, n, |i, j| w[i * n + j] as f64);
    let svd = m.thin_svd().unwrap();
    let (u, s, v) = (svd.U(), svd.S(), svd.V());
    let sv: Vec<f64> = (0..o.min(n)).map(|i| s.column_vector()[i]).collect();
    let mut prod = vec![0.0; o * n];
    for l in 0..r {
        for i in 0..o {
            for j in 0..n {
                prod[i * n + j] += u[(i, l)] * sv[l] * v[(j, l)];
            }
        }
    }
    (prod, sv)
}

fn product(res: &WeightedSvdResult) -> Vec<f64> {
    let (o, r) = (res.u.shape()[0], res.u.shape()[1]);
    let n = res.v.shape()[1];
    mm(
        &f64s(res.u.host_f32().unwrap()),
        &f64s(res.v.host_f32().unwrap()),
        o,
        r,
        n,
    )
}

fn weighted_obj(w: &[f32], m: &[u8], omega: f64, a: &[f64]) -> f64 {
    w.iter()
        .zip(m)
        .zip(a)
        .map(|((&w, &m), &a)| if m != 0 { 1.0 } else { omega } * (w as f64 - a).powi(2))
        .sum()
}

#[test]
fn weighted_svd_objective_is_monotone_and_beats_plain_svd() {
    let be = cpu();
    let (o, n, r) = (48, 36, 6);
    let w0 = gapped(91, o, n, 0.85);
    let m = rand_mask(92, o * n, 0.5);
    let ws: Vec<f32> = w0
        .iter()
        .zip(&m)
        .map(|(w, &m)| if m != 0 { *w } else { 0.0 })
        .collect();
    let wt = t(ws.clone(), &[o, n]);
    let mt = tu8(m.clone(), &[o, n]);
    for omega in [0.0f32, 0.3] {
        let opts = WeightedSvdOptions {
            max_steps: 25,
            rel_tol: 0.0,
            ..Default::default()
        };
        let res = be
            .weighted_svd(
                &[WeightedSvdProblem {
                    w: &wt,
                    mask: &mt,
                    omega,
                    rank: r,
                }],
                &opts,
            )
            .unwrap();
        let res = &res[0];
        assert_eq!(res.objective.len(), 26);
        for k in 1..res.objective.len() {
            let (a, b) = (res.objective[k - 1], res.objective[k]);
            assert!(
                b <= a * (1.0 + 1e-6),
                "omega {omega}: objective rose at step {k}: {a} -> {b}"
            );
        }
        assert!(
            res.objective.last().unwrap() < &(0.9 * res.objective[0]),
            "EM should improve: {:?}",
            res.objective
        );
        // The reported objective is that of the returned factors.
        let prod = product(res);
        let obj = weighted_obj(&ws, &m, omega as f64, &prod);
        assert!(
            (obj - res.objective.last().unwrap()).abs() <= 1e-5 * obj,
            "{obj} vs {:?}",
            res.objective.last()
        );
        // On the kept entries, below plain SVD of W_s at the same rank.
        let (plain, _) = plain_svd(&ws, o, n, r);
        let kept_plain = weighted_obj(&ws, &m, 0.0, &plain);
        let kept_em = weighted_obj(&ws, &m, 0.0, &prod);
        assert!(
            kept_em < kept_plain,
            "omega {omega}: {kept_em} !< {kept_plain}"
        );
        // Factors are balanced: UᵀU = V·Vᵀ = diag(σ), σ descending.
        let u = f64s(res.u.host_f32().unwrap());
        let v = f64s(res.v.host_f32().unwrap());
        let utu = mm(&tr(&u, o, r), &u, r, o, r);
        let vvt = mm(&v, &tr(&v, r, n), r, n, r);
        for i in 0..r {
            for j in 0..r {
                let want = if i == j {
                    res.singular_values[i] as f64
                } else {
                    0.0
                };
                assert!((utu[i * r + j] - want).abs() < 1e-4 * res.singular_values[0] as f64);
                assert!((vvt[i * r + j] - want).abs() < 1e-4 * res.singular_values[0] as f64);
            }
        }
        assert!(res.singular_values.windows(2).all(|w| w[0] >= w[1]));
    }
}

#[test]
fn weighted_svd_with_omega_one_is_plain_svd() {
    let be = cpu();
    for (o, n, r) in [(40, 30, 5), (20, 50, 7)] {
        let w = gapped(101, o, n, 0.6);
        let wt = t(w.clone(), &[o, n]);
        let mt = tu8(rand_mask(102, o * n, 0.3), &[o, n]);
        let opts = WeightedSvdOptions {
            max_steps: 30,
            rel_tol: 0.0,
            ..Default::default()
        };
        let res = be
            .weighted_svd(
                &[WeightedSvdProblem {
                    w: &wt,
                    mask: &mt,
                    omega: 1.0,
                    rank: r,
                }],
                &opts,
            )
            .unwrap();
        let (plain, sv) = plain_svd(&w, o, n, r);
        let prod = product(&res[0]);
        let err = rel64(&prod.iter().map(|&x| x as f32).collect::<Vec<_>>(), &plain);
        assert!(err < 1e-5, "{o}x{n} r{r}: product differs by {err}");
        for i in 0..r {
            let (a, b) = (res[0].singular_values[i] as f64, sv[i]);
            assert!((a - b).abs() <= 1e-5 * sv[0], "sigma {i}: {a} vs {b}");
        }
    }
}

#[test]
fn weighted_svd_is_deterministic_and_batches_mixed_shapes() {
    let be = cpu();
    let shapes = [
        (30, 20, 4),
        (16, 40, 6),
        (25, 25, 0),
        (12, 9, 9),
        (33, 17, 3),
    ];
    let ws: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(o, n, _))| t(rand_vec(110 + i as u64, o * n, 1.0), &[o, n]))
        .collect();
    let ms: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(o, n, _))| tu8(rand_mask(120 + i as u64, o * n, 0.4), &[o, n]))
        .collect();
    let problems: Vec<WeightedSvdProblem> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(_, _, r))| WeightedSvdProblem {
            w: &ws[i],
            mask: &ms[i],
            omega: 0.1,
            rank: r,
        })
        .collect();
    let opts = WeightedSvdOptions {
        seed: 7,
        ..Default::default()
    };
    let a = be.weighted_svd(&problems, &opts).unwrap();
    let b = be.weighted_svd(&problems, &opts).unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let (o, n, r) = shapes[i];
        assert_eq!(x.u.shape(), &[o, r]);
        assert_eq!(x.v.shape(), &[r, n]);
        assert_eq!(x.singular_values.len(), r);
        assert_eq!(
            x.u.host_f32().unwrap(),
            y.u.host_f32().unwrap(),
            "problem {i}"
        );
        assert_eq!(
            x.v.host_f32().unwrap(),
            y.v.host_f32().unwrap(),
            "problem {i}"
        );
        assert_eq!(x.objective, y.objective);
        assert!(!x.objective.is_empty() && x.objective.len() <= opts.max_steps + 1);
        // Solving alone gives the same answer as in the batch (problem index 0 → other start).
        if r > 0 {
            assert!(x.objective.iter().all(|v| v.is_finite()));
        }
    }
    // Full rank reconstructs the weighted entries exactly.
    let full = &a[3];
    assert!(*full.objective.last().unwrap() < 1e-8 * full.objective[0].max(1.0));
    // Rank 0: empty factors, objective Σ Ω W².
    let w2 = ws[2].host_f32().unwrap();
    let m2 = ms[2].host_u8().unwrap();
    let want: f64 = w2
        .iter()
        .zip(m2)
        .map(|(&w, &m)| if m != 0 { 1.0 } else { 0.1f32 as f64 } * (w as f64).powi(2))
        .sum();
    assert!((a[2].objective[0] - want).abs() < 1e-9 * want);
    // A different seed gives a (slightly) different answer.
    let c = be
        .weighted_svd(&problems, &WeightedSvdOptions { seed: 8, ..opts })
        .unwrap();
    assert_ne!(c[0].u.host_f32().unwrap(), a[0].u.host_f32().unwrap());
}

#[test]
fn weighted_svd_errors() {
    let be = cpu();
    let w = t(rand_vec(1, 12, 1.0), &[3, 4]);
    let m = tu8(vec![1; 12], &[3, 4]);
    let m_bad = tu8(vec![1; 12], &[4, 3]);
    let opts = WeightedSvdOptions::default();
    assert!(be
        .weighted_svd(
            &[WeightedSvdProblem {
                w: &w,
                mask: &m,
                omega: 0.0,
                rank: 4
            }],
            &opts
        )
        .is_err());
    assert!(be
        .weighted_svd(
            &[WeightedSvdProblem {
                w: &w,
                mask: &m_bad,
                omega: 0.0,
                rank: 1
            }],
            &opts
        )
        .is_err());
    assert!(be
        .weighted_svd(
            &[WeightedSvdProblem {
                w: &w,
                mask: &m,
                omega: 1.5,
                rank: 1
            }],
            &opts
        )
        .is_err());
    assert!(be
        .weighted_svd(
            &[WeightedSvdProblem {
                w: &w,
                mask: &m,
                omega: -0.1,
                rank: 1
            }],
            &opts
        )
        .is_err());
    assert!(be
        .weighted_svd(
            &[WeightedSvdProblem {
                w: &w,
                mask: &m,
                omega: f32::NAN,
                rank: 1
            }],
            &opts
        )
        .is_err());
    assert!(be
        .weighted_svd(
            &[WeightedSvdProblem {
                w: &w,
                mask: &m,
                omega: 0.0,
                rank: 3
            }],
            &opts
        )
        .is_ok());
}

#[test]
fn kernel_bench_report_runs_small_on_cpu() {
    use lpaf::bench::kernels::{run, KernelBenchOptions};
    let be = cpu();
    let report = run(&be, &KernelBenchOptions::quick(0.005)).unwrap();
    assert!(report.copy_bytes_per_s > 0.0);
    assert!(report.gemm_flops_per_s.iter().all(|(_, r)| *r > 0.0));
    assert_eq!(report.rows.len(), 15);
    for r in &report.rows {
        assert!(r.error.is_none(), "{}: {:?}", r.kernel, r.error);
        assert!(r.seconds.unwrap() > 0.0);
    }
    let text = report.to_string();
    assert!(text.contains("| kernel | size | time (ms) |"));
    assert!(text.contains("global top-k threshold"));
    assert!(text.contains("weighted SVD"));
}

/// Prints the kernel report on the CPU: `LPAF_BENCH_SCALE=0.1 cargo test --release
/// --test it print_kernel_bench -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_kernel_bench() {
    use lpaf::bench::kernels::{run, KernelBenchOptions};
    let scale = std::env::var("LPAF_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.05);
    let opts = KernelBenchOptions {
        scale,
        warmup: 1,
        repeats: 5,
        min_sample_s: 0.05,
        seed: 0,
    };
    println!("{}", run(&cpu(), &opts).unwrap());
}
