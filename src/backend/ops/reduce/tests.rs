//! Column sums and sums of squares: close to the CPU and deterministic (bit-identical reruns).
//!
//! Part of the integration-test crate (`tests/it/main.rs` includes it).

use lpaf::backend::prelude::*;
use lpaf::backend::*;

use crate::common::*;
use crate::ops_support::*;

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

/// col_sum (overwrite, accumulate) and sum_squares against f64 sums.
fn reduce_matches_naive(be: &dyn Backend) {
    let (rows, cols) = (517, 70);
    let x = rand_vec(1, rows * cols, 1.0);
    let xt = tb(be, x.clone(), &[rows, cols]);
    let base = rand_vec(2, cols, 1.0);
    let mut out = tb(be, base.clone(), &[cols]);
    be.col_sum(&xt, &mut out, true).unwrap();
    let want: Vec<f64> = (0..cols)
        .map(|c| base[c] as f64 + (0..rows).map(|r| x[r * cols + c] as f64).sum::<f64>())
        .collect();
    assert!(rel64(&be.to_f32(&out).unwrap(), &want) < 1e-6);
    be.col_sum(&xt, &mut out, false).unwrap();
    let want: Vec<f64> = (0..cols)
        .map(|c| (0..rows).map(|r| x[r * cols + c] as f64).sum())
        .collect();
    assert!(rel64(&be.to_f32(&out).unwrap(), &want) < 1e-6);
    let ss = be.sum_squares(&xt).unwrap();
    let want: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
    assert!(((ss - want) / want).abs() < 1e-12, "{ss} vs {want}");
}

test_device!(reduce_matches_naive);
