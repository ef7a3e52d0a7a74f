//! Movement pruning's score accumulation and the sigmoid mask: the CPU against plainly written references, CUDA against the CPU bit for bit.
//!
//! Part of the integration-test crate (`tests/it/main.rs` includes it).

use lpaf::backend::prelude::*;
use lpaf::backend::*;

use crate::common::*;
use crate::ops_support::*;

/// The L1 term of soft movement on its own (`dscores` starts at zero, so the
/// term is the whole result, not 1/400 of it), against an f64 evaluation of
/// `coef·σ(x)·(1−σ(x))`. One body for every device.
fn sigmoid_l1_term_alone(be: &dyn Backend) {
    let n = 3072 * 768 + 5;
    let x = rand_vec(17, n, 8.0);
    let coef = 3.7e-4f32;
    let mut mask = be.from_u8(&vec![7; n], &[n]).unwrap();
    let mut ds = be.zeros(&[n], DType::F32).unwrap();
    be.sigmoid_mask(&up(be, &x, &[n]), 0.3, &mut mask, Some(&mut ds), coef)
        .unwrap();
    let want: Vec<f32> = x
        .iter()
        .map(|&v| {
            let s = 1.0 / (1.0 + (-(v as f64)).exp());
            (coef as f64 * s * (1.0 - s)) as f32
        })
        .collect();
    let got = host(be, &ds);
    let e = rel_err(&got, &want);
    assert!(e < 2e-6, "soft-movement L1 gradient rel err {e}");
    // Element by element too: a wrong value in a few entries must not hide in
    // the norm. f32's 1 − σ(x) is exact to 2⁻²⁴ absolute, hence coef·2.5e-7.
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs() + 2.5e-7 * coef,
            "entry {i}: {g} vs {w} (x = {})",
            x[i]
        );
    }
}

fn movement_grads_both_rules_match_naive(be: &dyn Backend) {
    let n = 3 * 1000 + 7;
    let w = rand_vec(1, n, 1.0);
    let g = rand_vec(2, n, 0.1);
    let m = rand_mask(3, n, 0.3);
    for rule in [ScoreRule::Adam, ScoreRule::Accumulate] {
        let gw0 = rand_vec(4, n, 0.05);
        let sc0 = rand_vec(5, n, 0.05);
        let mut gw = tb(be, gw0.clone(), &[n]);
        let mut sc = tb(be, sc0.clone(), &[n]);
        be.movement_grads(
            &tb(be, w.clone(), &[n]),
            &tb(be, g.clone(), &[n]),
            &tu8b(be, m.clone(), &[n]),
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
        assert!(rel64(&be.to_f32(&gw).unwrap(), &want_gw) < 1e-6);
        assert!(rel64(&be.to_f32(&sc).unwrap(), &want_sc) < 1e-6);
    }
    // Shape mismatch is an error, not a panic.
    let mut gw = tb(be, vec![0.0; 4], &[4]);
    let mut sc = tb(be, vec![0.0; 5], &[5]);
    assert!(be
        .movement_grads(
            &tb(be, vec![0.0; 4], &[4]),
            &tb(be, vec![0.0; 4], &[4]),
            &tu8b(be, vec![0; 4], &[4]),
            &mut gw,
            &mut sc,
            ScoreRule::Adam
        )
        .is_err());
}

fn sigmoid_mask_matches_naive(be: &dyn Backend) {
    let n = 5000;
    let x = rand_vec(61, n, 4.0);
    let d0 = rand_vec(62, n, 0.1);
    let mut mask = tu8b(be, vec![9; n], &[n]);
    let mut d = tb(be, d0.clone(), &[n]);
    let tau = 0.3f32;
    let coef = 0.01f32;
    let kept = be
        .sigmoid_mask(&tb(be, x.clone(), &[n]), tau, &mut mask, Some(&mut d), coef)
        .unwrap();
    let mut want_kept = 0;
    let mut want_d = vec![0.0f64; n];
    let got_mask = be.to_u8(&mask).unwrap();
    for i in 0..n {
        let s = 1.0 / (1.0 + (-(x[i] as f64)).exp());
        let keep = s > tau as f64;
        assert_eq!(got_mask[i], keep as u8, "entry {i}: x = {}", x[i]);
        want_kept += keep as usize;
        want_d[i] = d0[i] as f64 + coef as f64 * s * (1.0 - s);
    }
    assert_eq!(kept, want_kept);
    assert!(rel64(&be.to_f32(&d).unwrap(), &want_d) < 1e-6);
    assert!(be
        .sigmoid_mask(&tb(be, x.clone(), &[n]), 1.0, &mut mask, None, 0.0)
        .is_err());
    assert!(be
        .sigmoid_mask(&tb(be, x, &[n]), 0.0, &mut mask, None, 0.0)
        .is_err());
}

#[test]
fn gpu_movement_grads_bit_identical() {
    let Some(gpu) = lpaf::backend::gpu_for_test("gpu_movement_grads_bit_identical") else {
        return;
    };
    let be = cpu();
    for (o, i) in SHAPES.iter().copied().chain([(1001, 7)]) {
        let n = o * i;
        let w = rand_vec(1, n, 1.0);
        let g = rand_vec(2, n, 0.1);
        let m = rand_mask(3, n, 0.1);
        let gw0 = rand_vec(4, n, 0.01);
        let sc0 = rand_vec(5, n, 0.01);
        for rule in [ScoreRule::Adam, ScoreRule::Accumulate] {
            let (mut gw_c, mut sc_c) = (up(&be, &gw0, &[o, i]), up(&be, &sc0, &[o, i]));
            be.movement_grads(
                &up(&be, &w, &[o, i]),
                &up(&be, &g, &[o, i]),
                &be.from_u8(&m, &[o, i]).unwrap(),
                &mut gw_c,
                &mut sc_c,
                rule,
            )
            .unwrap();
            let (mut gw_g, mut sc_g) = (up(&*gpu, &gw0, &[o, i]), up(&*gpu, &sc0, &[o, i]));
            gpu.movement_grads(
                &up(&*gpu, &w, &[o, i]),
                &up(&*gpu, &g, &[o, i]),
                &gpu.from_u8(&m, &[o, i]).unwrap(),
                &mut gw_g,
                &mut sc_g,
                rule,
            )
            .unwrap();
            assert_eq!(
                bits(&host(&*gpu, &gw_g)),
                bits(&host(&be, &gw_c)),
                "{o}x{i} {rule:?} grad_w"
            );
            assert_eq!(
                bits(&host(&*gpu, &sc_g)),
                bits(&host(&be, &sc_c)),
                "{o}x{i} {rule:?} scores"
            );
        }
    }
}

#[test]
fn gpu_sigmoid_mask_matches_cpu() {
    let Some(gpu) = lpaf::backend::gpu_for_test("gpu_sigmoid_mask_matches_cpu") else {
        return;
    };
    let be = cpu();
    for (o, i) in SHAPES {
        let n = o * i;
        let x = rand_vec(7, n, 6.0);
        let d0 = rand_vec(8, n, 0.1);
        let (mut mc, mut dc) = (be.from_u8(&vec![9; n], &[n]).unwrap(), up(&be, &d0, &[n]));
        let (mut mg, mut dg) = (
            gpu.from_u8(&vec![9; n], &[n]).unwrap(),
            up(&*gpu, &d0, &[n]),
        );
        let kc = be
            .sigmoid_mask(&up(&be, &x, &[n]), 0.4, &mut mc, Some(&mut dc), 1e-3)
            .unwrap();
        let kg = gpu
            .sigmoid_mask(&up(&*gpu, &x, &[n]), 0.4, &mut mg, Some(&mut dg), 1e-3)
            .unwrap();
        assert_eq!(kc, kg);
        assert_eq!(gpu.to_u8(&mg).unwrap(), be.to_u8(&mc).unwrap());
        assert!(rel_err(&host(&*gpu, &dg), &host(&be, &dc)) < 1e-5);
    }
}

test_device!(
    sigmoid_l1_term_alone,
    movement_grads_both_rules_match_naive,
    sigmoid_mask_matches_naive,
);
