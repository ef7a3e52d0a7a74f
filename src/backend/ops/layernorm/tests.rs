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
