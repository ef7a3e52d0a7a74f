//! AdamW in torch.optim.AdamW's order: CUDA against the CPU.
//!
//! Part of the integration-test crate (`tests/it/main.rs` includes it).

use lpaf::Error;

use lpaf::backend::prelude::*;
use lpaf::backend::*;

use crate::common::*;
use crate::ops_support::*;

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

/// AdamW against the update written out in torch.optim.AdamW's order, in f32
/// (bit for bit: both devices round every operation the same way).
fn adamw_matches_naive(be: &dyn Backend) {
    let n = 4099;
    let p0 = rand_vec(1, n, 1.0);
    let g = rand_vec(2, n, 0.1);
    let m0 = rand_vec(3, n, 0.01);
    let v0: Vec<f32> = rand_vec(4, n, 0.01).iter().map(|x| x * x).collect();
    let hp = AdamWStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
        step: 7,
        grad_scale: 0.5,
    };
    let mut p = tb(be, p0.clone(), &[n]);
    let mut m = tb(be, m0.clone(), &[n]);
    let mut v = tb(be, v0.clone(), &[n]);
    be.adamw(&mut p, &tb(be, g.clone(), &[n]), &mut m, &mut v, &hp)
        .unwrap();
    let (bc1, bc2) = hp.bias_corrections();
    let (step_size, bc2_sqrt, decay) = (hp.lr / bc1, bc2.sqrt(), 1.0 - hp.lr * hp.weight_decay);
    let (gp, gm, gv) = (
        be.to_f32(&p).unwrap(),
        be.to_f32(&m).unwrap(),
        be.to_f32(&v).unwrap(),
    );
    for i in 0..n {
        let gi = g[i] * hp.grad_scale;
        let pi = p0[i] * decay;
        let mi = m0[i] + (gi - m0[i]) * (1.0 - hp.beta1);
        let vi = v0[i] * hp.beta2 + (1.0 - hp.beta2) * gi * gi;
        let pi = pi - step_size * mi / (vi.sqrt() / bc2_sqrt + hp.eps);
        assert_eq!(
            (gp[i].to_bits(), gm[i].to_bits(), gv[i].to_bits()),
            (pi.to_bits(), mi.to_bits(), vi.to_bits()),
            "element {i}"
        );
    }
}

/// The multi-tensor step over parameters of several sizes (empty, a scalar
/// tail, several blocks, the 1024-block clamp), each with its own
/// hyper-parameters, equals one `adamw` per parameter bit for bit.
fn adamw_many_matches_one_call_per_parameter(be: &dyn Backend) {
    let sizes = [3usize, 0, 4096, 4101, 1_200_007, 1];
    let hp_of = |i: usize| AdamWStep {
        lr: 1e-3 * (i + 1) as f32,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: if i % 2 == 0 { 0.01 } else { 0.0 },
        step: 3 + i as u64,
        grad_scale: 1.0 - 0.1 * i as f32,
    };
    let make = |k: u64| -> Vec<[Tensor; 4]> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let s = 10 * i as u64 + k;
                let v: Vec<f32> = rand_vec(s + 3, n, 0.01).iter().map(|x| x * x).collect();
                [
                    tb(be, rand_vec(s, n, 1.0), &[n]),
                    tb(be, rand_vec(s + 1, n, 0.1), &[n]),
                    tb(be, rand_vec(s + 2, n, 0.01), &[n]),
                    tb(be, v, &[n]),
                ]
            })
            .collect()
    };
    let mut one = make(100);
    for (i, [p, g, m, v]) in one.iter_mut().enumerate() {
        be.adamw(p, g, m, v, &hp_of(i)).unwrap();
    }
    let mut many = make(100);
    be.adamw_many(&mut |f| {
        many.iter_mut()
            .enumerate()
            .try_for_each(|(i, [p, g, m, v])| {
                f(AdamWSlot {
                    p,
                    g,
                    m,
                    v,
                    hp: hp_of(i),
                })
            })
    })
    .unwrap();
    for (i, (a, b)) in one.iter().zip(&many).enumerate() {
        for (k, name) in [(0, "param"), (1, "grad"), (2, "m"), (3, "v")] {
            assert!(
                same_bits(&be.to_f32(&a[k]).unwrap(), &be.to_f32(&b[k]).unwrap()),
                "parameter {i} (n = {}): {name} differs",
                sizes[i]
            );
        }
    }
    // A length mismatch names the tensor.
    let (mut p, g, mut m, mut v) = (
        tb(be, vec![0.0; 4], &[4]),
        tb(be, vec![0.0; 4], &[4]),
        tb(be, vec![0.0; 5], &[5]),
        tb(be, vec![0.0; 4], &[4]),
    );
    let e = be
        .adamw_many(&mut |f| {
            f(AdamWSlot {
                p: &mut p,
                g: &g,
                m: &mut m,
                v: &mut v,
                hp: hp_of(0),
            })
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("m has 5 elements, expected 4"), "{e}");
}

test_device!(
    adamw_matches_naive,
    adamw_many_matches_one_call_per_parameter
);
