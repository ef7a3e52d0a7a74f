//! The CUDA compression kernels (docs/algorithms.md §6) against the CPU
//! reference on real BERT-base shapes (768×768, 3072×768, 768×3072; N = 4096
//! tokens). Bounds from docs/measuring.md §5: fp32 1e-5 relative, tf32 ~1e-3,
//! bf16 1e-2; masks bit for bit. Score-accumulation results are bit-identical
//! by construction (no FMA contraction on either side) and are compared bit for
//! bit too.

use lpaf::backend::*;

use crate::common::*;

const SHAPES: [(usize, usize); 3] = [(768, 768), (3072, 768), (768, 3072)];

fn up(be: &dyn Backend, data: &[f32], shape: &[usize]) -> Tensor {
    be.from_f32(data, shape).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
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

fn bert_svd_problems(
    be: &dyn Backend,
    shapes: &[(usize, usize)],
    keep: f64,
) -> (Vec<Tensor>, Vec<Tensor>, Vec<usize>) {
    let mut ws = Vec::new();
    let mut ms = Vec::new();
    let mut ranks = Vec::new();
    for (j, &(o, i)) in shapes.iter().enumerate() {
        let m = rand_mask(80 + j as u64, o * i, keep);
        let w: Vec<f32> = rand_vec(90 + j as u64, o * i, 0.05)
            .iter()
            .zip(&m)
            .map(|(x, &k)| if k != 0 { *x } else { 0.0 })
            .collect();
        ws.push(be.from_f32(&w, &[o, i]).unwrap());
        ms.push(be.from_u8(&m, &[o, i]).unwrap());
        // 10 % of the dense parameters: r·(out + in) = 0.1·out·in.
        ranks.push(((0.1 * (o * i) as f64) / (o + i) as f64).floor() as usize);
    }
    (ws, ms, ranks)
}

fn svd_products(be: &dyn Backend, res: &[WeightedSvdResult]) -> Vec<Vec<f32>> {
    res.iter()
        .map(|r| {
            let (o, k) = (r.u.shape()[0], r.u.shape()[1]);
            let n = r.v.shape()[1];
            let mut c = be.zeros(&[o, n], DType::F32).unwrap();
            be.gemm(&Gemm::nn(o, n, k), &r.u, &r.v, &mut c).unwrap();
            be.to_f32(&c).unwrap()
        })
        .collect()
}

#[test]
fn gpu_weighted_svd_matches_cpu() {
    let Some(gpu) = lpaf::backend::gpu_for_test("gpu_weighted_svd_matches_cpu") else {
        return;
    };
    let be = cpu();
    let shapes = [(768, 768), (768, 768), (3072, 768), (768, 3072), (300, 200)];
    for (omega, extra_rank) in [(0.0f32, None), (0.25, Some(120usize))] {
        let (wc, mc, mut ranks) = bert_svd_problems(&be, &shapes, 0.1);
        if let Some(r) = extra_rank {
            ranks[4] = r; // above the shared-memory Cholesky's limit: host fallback
        }
        let wg: Vec<Tensor> = wc
            .iter()
            .map(|t| gpu.from_f32(t.host_f32().unwrap(), t.shape()).unwrap())
            .collect();
        let mg: Vec<Tensor> = mc
            .iter()
            .map(|t| gpu.from_u8(t.host_u8().unwrap(), t.shape()).unwrap())
            .collect();
        let pc: Vec<WeightedSvdProblem> = (0..shapes.len())
            .map(|j| WeightedSvdProblem {
                w: &wc[j],
                mask: &mc[j],
                omega,
                rank: ranks[j],
            })
            .collect();
        let pg: Vec<WeightedSvdProblem> = (0..shapes.len())
            .map(|j| WeightedSvdProblem {
                w: &wg[j],
                mask: &mg[j],
                omega,
                rank: ranks[j],
            })
            .collect();
        let opts = WeightedSvdOptions {
            max_steps: 10,
            rel_tol: 0.0,
            seed: 11,
            ..Default::default()
        };
        let rc = be.weighted_svd(&pc, &opts).unwrap();
        let rg = gpu.weighted_svd(&pg, &opts).unwrap();
        let (prc, prg) = (svd_products(&be, &rc), svd_products(&*gpu, &rg));
        for j in 0..shapes.len() {
            let err = rel_err(&prg[j], &prc[j]);
            assert!(
                err < 1e-3,
                "problem {j} ({:?}, rank {}): products differ by {err}",
                shapes[j],
                ranks[j]
            );
            assert_eq!(rg[j].objective.len(), rc[j].objective.len());
            for (a, b) in rg[j].objective.iter().zip(&rc[j].objective) {
                assert!(
                    (a - b).abs() <= 1e-4 * b,
                    "problem {j}: objective {a} vs {b}"
                );
            }
            for (a, b) in rg[j].singular_values.iter().zip(&rc[j].singular_values) {
                assert!(
                    (a - b).abs() <= 1e-3 * rc[j].singular_values[0],
                    "problem {j}: σ {a} vs {b}"
                );
            }
            for k in 1..rg[j].objective.len() {
                assert!(
                    rg[j].objective[k] <= rg[j].objective[k - 1] * (1.0 + 1e-5),
                    "problem {j}: objective rose at {k}"
                );
            }
        }
        // Deterministic: same seed, same bits.
        let again = gpu.weighted_svd(&pg, &opts).unwrap();
        for j in 0..shapes.len() {
            assert_eq!(
                bits(&host(&*gpu, &again[j].u)),
                bits(&host(&*gpu, &rg[j].u))
            );
            assert_eq!(
                bits(&host(&*gpu, &again[j].v)),
                bits(&host(&*gpu, &rg[j].v))
            );
            assert_eq!(again[j].objective, rg[j].objective);
        }
    }
}

#[test]
fn gpu_lowrank_sparse_matches_cpu() {
    let Some(gpu) = lpaf::backend::gpu_for_test("gpu_lowrank_sparse_matches_cpu") else {
        return;
    };
    let be = cpu();
    let (n, r) = (4096, 64);
    for (out, inp) in [(3072, 768), (768, 3072)] {
        let x = rand_vec(1, n * inp, 1.0);
        let u = rand_vec(2, out * r, 0.1);
        let v = rand_vec(3, r * inp, 0.1);
        let s = rand_vec(4, out * inp, 0.05);
        let m = rand_mask(5, out * inp, 0.1);
        let b = rand_vec(6, out, 0.1);
        let dy = rand_vec(7, n * out, 0.1);
        let (du0, dv0, ds0, db0) = (
            rand_vec(8, out * r, 0.01),
            rand_vec(9, r * inp, 0.01),
            rand_vec(10, out * inp, 0.01),
            rand_vec(11, out, 0.01),
        );
        for (prec, tol) in [
            (Precision::F32, 1e-5),
            (Precision::Tf32, 2e-3),
            (Precision::Bf16, 1e-5),
        ] {
            let mut res = Vec::new();
            for dev in [&be as &dyn Backend, &*gpu] {
                let t = |d: &[f32], sh: &[usize]| dev.from_f32(d, sh).unwrap();
                let (xt, ut, vt, st, bt) = (
                    t(&x, &[n, inp]),
                    t(&u, &[out, r]),
                    t(&v, &[r, inp]),
                    t(&s, &[out, inp]),
                    t(&b, &[out]),
                );
                let mt = dev.from_u8(&m, &[out, inp]).unwrap();
                let mut weff = t(&vec![f32::NAN; out * inp], &[out, inp]);
                let mut y = t(&vec![f32::NAN; n * out], &[n, out]);
                lpaf::backend::lowrank_sparse::forward(
                    &*dev,
                    &xt,
                    &ut,
                    &vt,
                    Some(&st),
                    Some(&mt),
                    Some(&bt),
                    &mut weff,
                    &mut y,
                    prec,
                )
                .unwrap();
                let mut dx = t(&vec![f32::NAN; n * inp], &[n, inp]);
                let (mut du, mut dv, mut ds, mut db) = (
                    t(&du0, &[out, r]),
                    t(&dv0, &[r, inp]),
                    t(&ds0, &[out, inp]),
                    t(&db0, &[out]),
                );
                let mut scratch = t(&vec![f32::NAN; out * inp], &[out, inp]);
                lpaf::backend::lowrank_sparse::backward(
                    &*dev,
                    &xt,
                    &ut,
                    &vt,
                    Some(&mt),
                    &weff,
                    &t(&dy, &[n, out]),
                    Some(&mut dx),
                    &mut du,
                    &mut dv,
                    Some(&mut ds),
                    Some(&mut db),
                    &mut scratch,
                    prec,
                )
                .unwrap();
                res.push([&weff, &y, &dx, &du, &dv, &ds, &db].map(|t| dev.to_f32(t).unwrap()));
            }
            for (k, name) in ["w_eff", "y", "dx", "du", "dv", "ds", "db"]
                .iter()
                .enumerate()
            {
                let err = rel_err(&res[1][k], &res[0][k]);
                // bf16: dU and dV multiply by a product that was itself
                // rounded to bf16, where an fp32 difference can flip a
                // rounding (measured ~5e-5); every other output ~5e-7, so
                // output rounding (~2e-3) fails either bound.
                let bound = match (*name, prec) {
                    ("db", _) => 1e-5,
                    ("du" | "dv", Precision::Bf16) => 1e-4,
                    _ => tol,
                };
                assert!(err < bound, "{out}x{inp} {prec:?}: {name} differs by {err}");
            }
        }
    }
}

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

#[test]
fn cpu_sigmoid_mask_l1_term_alone() {
    sigmoid_l1_term_alone(&cpu());
}

#[test]
fn gpu_sigmoid_mask_l1_term_alone() {
    let Some(gpu) = lpaf::backend::gpu_for_test("gpu_sigmoid_mask_l1_term_alone") else {
        return;
    };
    sigmoid_l1_term_alone(&*gpu);
}
