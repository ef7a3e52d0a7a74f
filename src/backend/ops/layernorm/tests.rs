//! LayerNorm forward and backward: CUDA against the CPU, deterministic parameter gradients.
//!
//! Part of the integration-test crate (`tests/it/main.rs` includes it).

use lpaf::backend::prelude::*;
use lpaf::backend::*;

use crate::common::*;
use crate::ops_support::*;

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

/// LayerNorm forward (y, mean, rstd) and backward (dx; dγ, dβ accumulated)
/// against f64 loops.
fn layer_norm_matches_naive(be: &dyn Backend) {
    let (rows, d) = (45, 96);
    let eps = 1e-5f32;
    let x = rand_vec(1, rows * d, 2.0);
    let gamma = rand_vec(2, d, 1.0);
    let beta = rand_vec(3, d, 0.5);
    let dy = rand_vec(4, rows * d, 1.0);
    let dg0 = rand_vec(5, d, 0.1);
    let db0 = rand_vec(6, d, 0.1);
    let (xt, gt, bt) = (
        tb(be, x.clone(), &[rows, d]),
        tb(be, gamma.clone(), &[d]),
        tb(be, beta.clone(), &[d]),
    );
    let mut y = tb(be, vec![f32::NAN; rows * d], &[rows, d]);
    let mut mean = tb(be, vec![f32::NAN; rows], &[rows]);
    let mut rstd = tb(be, vec![f32::NAN; rows], &[rows]);
    be.layer_norm(&xt, &gt, &bt, eps, &mut y, &mut mean, &mut rstd)
        .unwrap();
    let (mut wy, mut wm, mut wr) = (vec![0.0; rows * d], vec![0.0; rows], vec![0.0; rows]);
    let (mut wdx, mut wdg, mut wdb) = (vec![0.0; rows * d], f64s(&dg0), f64s(&db0));
    for r in 0..rows {
        let row = &x[r * d..(r + 1) * d];
        let mu = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / d as f64;
        let rs = 1.0 / (var + eps as f64).sqrt();
        wm[r] = mu;
        wr[r] = rs;
        let xhat: Vec<f64> = row.iter().map(|&v| (v as f64 - mu) * rs).collect();
        let g: Vec<f64> = (0..d)
            .map(|c| dy[r * d + c] as f64 * gamma[c] as f64)
            .collect();
        let mg = g.iter().sum::<f64>() / d as f64;
        let mgx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / d as f64;
        for c in 0..d {
            wy[r * d + c] = xhat[c] * gamma[c] as f64 + beta[c] as f64;
            wdx[r * d + c] = rs * (g[c] - mg - xhat[c] * mgx);
            wdg[c] += dy[r * d + c] as f64 * xhat[c];
            wdb[c] += dy[r * d + c] as f64;
        }
    }
    let check = |what: &str, t: &Tensor, want: &[f64]| {
        let e = rel64(&be.to_f32(t).unwrap(), want);
        assert!(e < 1e-5, "{what}: {e:e}");
    };
    check("y", &y, &wy);
    check("mean", &mean, &wm);
    check("rstd", &rstd, &wr);
    let mut dx = tb(be, vec![f32::NAN; rows * d], &[rows, d]);
    let mut dg = tb(be, dg0, &[d]);
    let mut db = tb(be, db0, &[d]);
    be.layer_norm_backward(
        &tb(be, dy, &[rows, d]),
        &xt,
        &gt,
        &mean,
        &rstd,
        &mut dx,
        &mut dg,
        &mut db,
    )
    .unwrap();
    check("dx", &dx, &wdx);
    check("dgamma", &dg, &wdg);
    check("dbeta", &db, &wdb);
}

test_device!(layer_norm_matches_naive);
