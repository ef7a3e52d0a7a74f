//! Exact top-k: the CPU against full sorts (ties, signed zeros, mixed shapes, row means), CUDA against the CPU bit for bit.
//!
//! Part of the integration-test crate (`tests/it/main.rs` includes it).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use lpaf::backend::prelude::*;
use lpaf::backend::*;

use crate::common::*;
use crate::ops_support::*;

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

/// Threshold + apply on both backends; masks, applied tensors and thresholds must agree exactly.
fn compare_topk(
    gpu: &dyn Backend,
    mats: &[(Vec<f32>, usize, usize)],
    k: usize,
    rule: TopkRule,
    scope: TopkScope,
    abs: bool,
) {
    let be = cpu();
    let mut out = Vec::new();
    for dev in [&be as &dyn Backend, gpu] {
        let scores: Vec<Tensor> = mats
            .iter()
            .map(|(d, r, c)| dev.from_f32(d, &[*r, *c]).unwrap())
            .collect();
        let refs: Vec<&Tensor> = scores.iter().collect();
        let th = dev.topk_threshold(&refs, k, rule, scope, abs).unwrap();
        let mut masks: Vec<Tensor> = mats
            .iter()
            .map(|(d, _, _)| dev.from_u8(&vec![5; d.len()], &[d.len()]).unwrap())
            .collect();
        let mut apply: Vec<Tensor> = mats
            .iter()
            .enumerate()
            .map(|(j, (d, _, _))| {
                dev.from_f32(&rand_vec(50 + j as u64, d.len(), 1.0), &[d.len()])
                    .unwrap()
            })
            .collect();
        let kept = {
            let mut mr: Vec<&mut Tensor> = masks.iter_mut().collect();
            let mut ar: Vec<&mut Tensor> = apply.iter_mut().collect();
            dev.topk_apply(&refs, &th, &mut mr, &mut ar).unwrap()
        };
        let m: Vec<Vec<u8>> = masks.iter().map(|t| dev.to_u8(t).unwrap()).collect();
        let a: Vec<Vec<u32>> = apply
            .iter()
            .map(|t| bits(&dev.to_f32(t).unwrap()))
            .collect();
        out.push((th, kept, m, a));
    }
    let (c, g) = (&out[0], &out[1]);
    let what = format!("k {k} {rule:?} {scope:?} abs {abs}");
    assert_eq!(g.0, c.0, "threshold, {what}");
    assert_eq!(g.1, c.1, "kept, {what}");
    for j in 0..mats.len() {
        assert!(g.2[j] == c.2[j], "mask {j} differs, {what}");
        assert!(g.3[j] == c.3[j], "applied tensor {j} differs, {what}");
    }
}

/// A subset of BERT-base's matrices: every shape, plus an odd one for the tails.
fn bert_like(seed: u64, quantize: Option<f32>) -> Vec<(Vec<f32>, usize, usize)> {
    let shapes = [(768, 768), (768, 768), (3072, 768), (768, 3072), (1001, 7)];
    shapes
        .iter()
        .enumerate()
        .map(|(j, &(o, i))| {
            let mut d = rand_vec(seed + j as u64, o * i, 1.0);
            if let Some(q) = quantize {
                d.iter_mut().for_each(|x| *x = (*x / q).round() * q);
            }
            (d, o, i)
        })
        .collect()
}

fn topk_single_matrix_matches_full_sort(be: &dyn Backend) {
    let (r, c) = (37, 41);
    let x = rand_vec(21, r * c, 1.0);
    for k in [0, 1, 17, r * c / 2, r * c - 1, r * c] {
        for abs in [false, true] {
            for rule in [TopkRule::ExactK, TopkRule::KeepTies] {
                check_topk(be, &[(x.clone(), c)], k, rule, TopkScope::Entries, abs);
            }
        }
    }
}

fn topk_ties_and_signed_zeros_match_full_sort(be: &dyn Backend) {
    let mats = vec![
        (tied_scores(31, 30 * 20), 20),
        (tied_scores(32, 7 * 50), 50),
        (tied_scores(33, 64 * 3), 3),
    ];
    let total: usize = mats.iter().map(|m| m.0.len()).sum();
    for k in [0, 1, 2, 5, 100, 333, total / 2, total - 3, total] {
        for abs in [false, true] {
            for rule in [TopkRule::ExactK, TopkRule::KeepTies] {
                check_topk(be, &mats, k, rule, TopkScope::Entries, abs);
            }
        }
    }
}

fn topk_global_over_mixed_shapes_matches_full_sort(be: &dyn Backend) {
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
            check_topk(be, &mats, k, rule, TopkScope::Entries, false);
        }
    }
}

fn topk_row_mean_with_rows_of_different_lengths(be: &dyn Backend) {
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
                check_topk(be, &mats, k, rule, TopkScope::RowMean, abs);
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

fn topk_errors(be: &dyn Backend) {
    let a = tb(be, vec![1.0; 6], &[2, 3]);
    let b = tb(be, vec![1.0; 4], &[4]);
    assert!(be
        .topk_threshold(&[&a, &b], 11, TopkRule::ExactK, TopkScope::Entries, false)
        .is_err());
    assert!(be
        .topk_threshold(
            &[&tu8b(be, vec![1; 4], &[4])],
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
    let mut m_bad = tu8b(be, vec![0; 5], &[5]);
    let mut m_ok = tu8b(be, vec![0; 6], &[6]);
    assert!(be
        .topk_apply(&[&a, &b], &th, &mut [&mut m_ok, &mut m_bad], &mut [])
        .is_err());
    let mut m_ok2 = tu8b(be, vec![0; 4], &[4]);
    assert!(be
        .topk_apply(&[&a, &b], &th, &mut [&mut m_ok], &mut [])
        .is_err());
    let mut ap_bad = tb(be, vec![0.0; 3], &[3]);
    let mut ap_ok = tb(be, vec![0.0; 6], &[6]);
    assert!(be
        .topk_apply(
            &[&a, &b],
            &th,
            &mut [&mut m_ok, &mut m_ok2],
            &mut [&mut ap_ok, &mut ap_bad]
        )
        .is_err());
    let mut m_f32 = tb(be, vec![0.0; 6], &[6]);
    let mut m_ok3 = tu8b(be, vec![0; 4], &[4]);
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
fn gpu_topk_entries_matches_cpu_bit_for_bit() {
    let Some(gpu) = lpaf::backend::gpu_for_test("gpu_topk_entries_matches_cpu_bit_for_bit") else {
        return;
    };
    // Continuous scores, then heavily tied ones (±0 included) so that the
    // tie-ranking pass runs across many tiles and tensors.
    for quant in [None, Some(1.0 / 64.0)] {
        let mats = bert_like(60, quant);
        let total: usize = mats.iter().map(|m| m.0.len()).sum();
        for k in [0, 1, total / 10, total / 2 + 12345, total - 1, total] {
            for rule in [TopkRule::ExactK, TopkRule::KeepTies] {
                for abs in [false, true] {
                    compare_topk(&*gpu, &mats, k, rule, TopkScope::Entries, abs);
                }
            }
        }
    }
    // One tensor, everything tied: the worst case of the second pass.
    let flat = vec![(vec![0.5f32; 3072 * 768], 3072, 768)];
    compare_topk(
        &*gpu,
        &flat,
        1000,
        TopkRule::ExactK,
        TopkScope::Entries,
        false,
    );
    compare_topk(
        &*gpu,
        &flat,
        1000,
        TopkRule::KeepTies,
        TopkScope::Entries,
        false,
    );
}

#[test]
fn gpu_topk_row_mean_matches_cpu_bit_for_bit() {
    let Some(gpu) = lpaf::backend::gpu_for_test("gpu_topk_row_mean_matches_cpu_bit_for_bit") else {
        return;
    };
    for quant in [None, Some(0.5)] {
        let mut mats = bert_like(70, None);
        if let Some(q) = quant {
            // Rows of small integers times q: their means tie exactly across rows.
            for (d, _, c) in mats.iter_mut() {
                for (r, row) in d.chunks_mut(*c).enumerate() {
                    row.iter_mut().for_each(|x| *x = q * ((r % 5) as f32 - 2.0));
                }
            }
        }
        let total: usize = mats.iter().map(|m| m.0.len()).sum();
        for k in [1, 700, total / 10, total / 3, total] {
            for rule in [TopkRule::ExactK, TopkRule::KeepTies] {
                for abs in [false, true] {
                    compare_topk(&*gpu, &mats, k, rule, TopkScope::RowMean, abs);
                }
            }
        }
    }
}

#[test]
fn gpu_topk_errors() {
    let Some(gpu) = lpaf::backend::gpu_for_test("gpu_topk_errors") else {
        return;
    };
    let a = gpu.from_f32(&[1.0; 6], &[2, 3]).unwrap();
    assert!(gpu
        .topk_threshold(&[&a], 7, TopkRule::ExactK, TopkScope::Entries, false)
        .is_err());
    let th = gpu
        .topk_threshold(&[&a], 2, TopkRule::ExactK, TopkScope::Entries, false)
        .unwrap();
    let mut bad = gpu.from_u8(&[0; 5], &[5]).unwrap();
    assert!(gpu
        .topk_apply(&[&a], &th, &mut [&mut bad], &mut [])
        .is_err());
}

test_device!(
    topk_single_matrix_matches_full_sort,
    topk_ties_and_signed_zeros_match_full_sort,
    topk_global_over_mixed_shapes_matches_full_sort,
    topk_row_mean_with_rows_of_different_lengths,
    topk_errors,
);
