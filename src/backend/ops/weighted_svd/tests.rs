//! The weighted SVD: the CPU reference's objective and determinism, the errors, CUDA against the CPU.
//!
//! Part of the integration-test crate (`tests/it/main.rs` includes it).

use lpaf::backend::prelude::*;
use lpaf::backend::*;

use crate::common::*;
use crate::ops_support::*;

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

fn weighted_obj(w: &[f32], m: &[u8], omega: f64, a: &[f64]) -> f64 {
    w.iter()
        .zip(m)
        .zip(a)
        .map(|((&w, &m), &a)| if m != 0 { 1.0 } else { omega } * (w as f64 - a).powi(2))
        .sum()
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

fn weighted_svd_objective_is_monotone_and_beats_plain_svd(be: &dyn Backend) {
    let (o, n, r) = (48, 36, 6);
    let w0 = gapped(91, o, n, 0.85);
    let m = rand_mask(92, o * n, 0.5);
    let ws: Vec<f32> = w0
        .iter()
        .zip(&m)
        .map(|(w, &m)| if m != 0 { *w } else { 0.0 })
        .collect();
    let wt = tb(be, ws.clone(), &[o, n]);
    let mt = tu8b(be, m.clone(), &[o, n]);
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
        let prod = product(be, res);
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
        let u = f64s(&be.to_f32(&res.u).unwrap());
        let v = f64s(&be.to_f32(&res.v).unwrap());
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

fn weighted_svd_with_omega_one_is_plain_svd(be: &dyn Backend) {
    for (o, n, r) in [(40, 30, 5), (20, 50, 7)] {
        let w = gapped(101, o, n, 0.6);
        let wt = tb(be, w.clone(), &[o, n]);
        let mt = tu8b(be, rand_mask(102, o * n, 0.3), &[o, n]);
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
        let prod = product(be, &res[0]);
        let err = rel64(&prod.iter().map(|&x| x as f32).collect::<Vec<_>>(), &plain);
        assert!(err < 1e-5, "{o}x{n} r{r}: product differs by {err}");
        for i in 0..r {
            let (a, b) = (res[0].singular_values[i] as f64, sv[i]);
            assert!((a - b).abs() <= 1e-5 * sv[0], "sigma {i}: {a} vs {b}");
        }
    }
}

fn weighted_svd_is_deterministic_and_batches_mixed_shapes(be: &dyn Backend) {
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
        .map(|(i, &(o, n, _))| tb(be, rand_vec(110 + i as u64, o * n, 1.0), &[o, n]))
        .collect();
    let ms: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(o, n, _))| tu8b(be, rand_mask(120 + i as u64, o * n, 0.4), &[o, n]))
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
            &be.to_f32(&x.u).unwrap(),
            &be.to_f32(&y.u).unwrap(),
            "problem {i}"
        );
        assert_eq!(
            &be.to_f32(&x.v).unwrap(),
            &be.to_f32(&y.v).unwrap(),
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
    let w2 = &be.to_f32(&ws[2]).unwrap();
    let m2 = &be.to_u8(&ms[2]).unwrap();
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
    assert_ne!(&be.to_f32(&c[0].u).unwrap(), &be.to_f32(&a[0].u).unwrap());
}

fn weighted_svd_errors(be: &dyn Backend) {
    let w = tb(be, rand_vec(1, 12, 1.0), &[3, 4]);
    let m = tu8b(be, vec![1; 12], &[3, 4]);
    let m_bad = tu8b(be, vec![1; 12], &[4, 3]);
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

test_device!(
    weighted_svd_objective_is_monotone_and_beats_plain_svd,
    weighted_svd_with_omega_one_is_plain_svd,
    weighted_svd_is_deterministic_and_batches_mixed_shapes,
    weighted_svd_errors,
);
