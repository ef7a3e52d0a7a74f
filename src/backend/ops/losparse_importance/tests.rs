//! LoSparse's importance (alone and fused with AdamW): the CPU against a plain reference, CUDA against the CPU bit for bit.
//!
//! Part of the integration-test crate (`tests/it/main.rs` includes it).

use lpaf::backend::prelude::*;
use lpaf::backend::*;

use crate::common::*;
use crate::ops_support::*;

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

fn losparse_importance_windows_match_naive(be: &dyn Backend) {
    let n = 2048 + 3;
    let (b1, b2) = (0.85f32, 0.95f32);
    let mut ipt = tb(be, vec![0.0; n], &[n]);
    let mut ibar = tb(be, vec![0.0; n], &[n]);
    let mut ubar = tb(be, vec![0.0; n], &[n]);
    let mut ibar_only = tb(be, vec![0.0; n], &[n]);
    let mut ipt2 = tb(be, vec![0.0; n], &[n]);
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
        let (st_, gt_) = (tb(be, s.clone(), &[n]), tb(be, g.clone(), &[n]));
        be.losparse_importance(&st_, &gt_, &mut ipt, &mut ibar, Some(&mut ubar), &st)
            .unwrap();
        be.losparse_importance(&st_, &gt_, &mut ipt2, &mut ibar_only, None, &st)
            .unwrap();
        naive.step(&s, &g, count, close, b1 as f64, b2 as f64);
        assert!(
            rel64(&be.to_f32(&ipt).unwrap(), &naive.ipt) < 1e-6,
            "ipt at step {stepi}"
        );
        assert_eq!(&be.to_f32(&ipt).unwrap(), &be.to_f32(&ipt2).unwrap());
        if stepi >= window - 1 {
            assert!(
                rel64(&be.to_f32(&ibar).unwrap(), &naive.ibar) < 1e-6,
                "ibar at step {stepi}"
            );
            assert!(
                rel64(&be.to_f32(&ubar).unwrap(), &naive.ubar) < 1e-5,
                "ubar at step {stepi}"
            );
            assert_eq!(&be.to_f32(&ibar).unwrap(), &be.to_f32(&ibar_only).unwrap());
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
            &tb(be, vec![0.0; n], &[n]),
            &tb(be, vec![0.0; n], &[n]),
            &mut ipt,
            &mut ibar,
            None,
            &st
        )
        .is_err());
}

fn adamw_with_importance_uses_updated_s_and_scaled_grad(be: &dyn Backend) {
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
        tb(be, s0.clone(), &[n]),
        tb(be, m0.clone(), &[n]),
        tb(be, v0.clone(), &[n]),
    );
    let mut ipt = tb(be, vec![0.0; n], &[n]);
    let mut ibar = tb(be, rand_vec(15, n, 0.01), &[n]);
    let ibar0 = &be.to_f32(&ibar).unwrap().to_vec();
    let st = ImportanceStep {
        count: 1,
        close: true,
        beta1: 0.85,
        beta2: 1.0,
    };
    be.adamw_with_importance(
        &mut s,
        &tb(be, g.clone(), &[n]),
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
    assert!(rel64(&be.to_f32(&s).unwrap(), &want_s) < 1e-6);
    assert!(rel64(&be.to_f32(&ipt).unwrap(), &want_ipt) < 1e-5);
    assert!(rel64(&be.to_f32(&ibar).unwrap(), &want_ibar) < 1e-5);
}

#[test]
fn gpu_losparse_importance_and_fused_adamw_bit_identical() {
    let Some(gpu) =
        lpaf::backend::gpu_for_test("gpu_losparse_importance_and_fused_adamw_bit_identical")
    else {
        return;
    };
    let be = cpu();
    for (o, i) in SHAPES.iter().copied().chain([(33, 31)]) {
        let n = o * i;
        let sh = [o, i];
        for with_ubar in [true, false] {
            // State on both sides, advanced through a window of 3 steps and into the next.
            let mut cs: Vec<Tensor> = (0..6)
                .map(|k| up(&be, &rand_vec(10 + k, n, 0.1), &sh))
                .collect();
            let mut gs: Vec<Tensor> = (0..6)
                .map(|k| up(&*gpu, &rand_vec(10 + k, n, 0.1), &sh))
                .collect();
            // v must be non-negative.
            let v0: Vec<f32> = rand_vec(13, n, 0.01).iter().map(|x| x.abs()).collect();
            cs[3] = up(&be, &v0, &sh);
            gs[3] = up(&*gpu, &v0, &sh);
            for step in 0..5u32 {
                let grad = rand_vec(100 + step as u64, n, 0.05);
                let st = ImportanceStep {
                    count: step % 3 + 1,
                    close: step % 3 == 2,
                    beta1: 0.85,
                    beta2: 0.9,
                };
                let hp = AdamWStep {
                    lr: 1e-3,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: 0.01,
                    step: step as u64 + 1,
                    grad_scale: if step == 1 { 1.0 } else { 0.37 },
                };
                let (gc, gg) = (up(&be, &grad, &sh), up(&*gpu, &grad, &sh));
                {
                    let [s, m, v, ipt, ibar, ubar] = &mut cs[..] else {
                        unreachable!()
                    };
                    be.adamw_with_importance(
                        s,
                        &gc,
                        m,
                        v,
                        &hp,
                        ipt,
                        ibar,
                        with_ubar.then_some(ubar),
                        &st,
                    )
                    .unwrap();
                }
                {
                    let [s, m, v, ipt, ibar, ubar] = &mut gs[..] else {
                        unreachable!()
                    };
                    gpu.adamw_with_importance(
                        s,
                        &gg,
                        m,
                        v,
                        &hp,
                        ipt,
                        ibar,
                        with_ubar.then_some(ubar),
                        &st,
                    )
                    .unwrap();
                }
                // The unfused importance update on its own.
                {
                    let [s, _, _, ipt, ibar, ubar] = &mut cs[..] else {
                        unreachable!()
                    };
                    be.losparse_importance(s, &gc, ipt, ibar, with_ubar.then_some(ubar), &st)
                        .unwrap();
                }
                {
                    let [s, _, _, ipt, ibar, ubar] = &mut gs[..] else {
                        unreachable!()
                    };
                    gpu.losparse_importance(s, &gg, ipt, ibar, with_ubar.then_some(ubar), &st)
                        .unwrap();
                }
                for k in 0..6 {
                    assert_eq!(
                        bits(&host(&*gpu, &gs[k])),
                        bits(&host(&be, &cs[k])),
                        "{o}x{i} step {step} ubar {with_ubar}: state tensor {k}"
                    );
                }
            }
        }
    }
}

test_device!(
    losparse_importance_windows_match_naive,
    adamw_with_importance_uses_updated_s_and_scaled_grad,
);
