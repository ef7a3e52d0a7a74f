//! One full BERT training step (forward with dropout, loss, backward, the
//! gradient norm and clipping factor, AdamW) on the CUDA backend against the
//! CPU backend, at fp32, TF32 and bf16: the loss, every parameter's gradient
//! and every parameter after the update. Then the same step twice on the
//! CUDA backend: bit-identical.
//!
//! Shape: 2 layers, hidden 128, 4 heads, intermediate 512, batch 4 ×
//! sequence 48 with padding — smaller than BERT-base so that the emulated
//! device runs it in seconds in CI (the per-operation tests in
//! src/backend/ops/*/tests.rs use BERT-base shapes). Both backends round GEMM inputs to TF32 / bf16 the
//! same way, so only summation orders differ.

use lpaf::backend::{Backend, Precision};
use lpaf::data::{Batch, Labels, TaskKind};
use lpaf::model::bert::Bert;
use lpaf::model::{BertConfig, StepCtx};
use lpaf::train::optimizer::{adamw_param, clip_gradients, step_params, AdamWConfig};
use lpaf::train::trainer::{loss_and_backward, NoHooks};

use crate::common::{cpu, rel_err};

fn config() -> BertConfig {
    BertConfig::tiny(500, 128, 2, 4, 512)
}

fn batch() -> Batch {
    let (b, s) = (4, 48);
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for r in 0..b {
        let len = s - 7 * r; // rows padded by 0, 7, 14, 21
        for t in 0..s {
            ids.push(if t == 0 {
                101
            } else if t < len {
                ((r * 131 + t * 17) % 497 + 2) as i32
            } else {
                0
            });
            mask.push((t < len) as u8);
        }
    }
    Batch {
        size: b,
        seq_len: s,
        input_ids: ids,
        token_type_ids: (0..b * s).map(|i| (i % s >= 30) as i32).collect(),
        attention_mask: mask,
        labels: Labels::Class(vec![0, 1, 1, 0]),
        feature_ids: (0..b).collect(),
    }
}

struct StepResult {
    loss: f64,
    norm: f64,
    grads: Vec<(String, Vec<f32>)>,
    params: Vec<(String, Vec<f32>)>,
}

/// One training step on `be`, as the trainer does it.
fn step(be: &dyn Backend, p: Precision) -> StepResult {
    let mut m = Bert::random(be, config(), TaskKind::Classification { num_labels: 2 }, 21).unwrap();
    let b = batch();
    let ctx = StepCtx {
        precision: p,
        training: true,
        seed: 5,
        step: 2,
        micro: 0,
    };
    let logits = m.forward(be, &ctx, &b).unwrap();
    // The loss on the device, as the trainer computes it for classification.
    let mut loss = None;
    let host =
        loss_and_backward(be, &mut m, &mut NoHooks, &ctx, &b, &logits, 1.0, &mut loss).unwrap();
    assert!(
        host.is_none(),
        "a classification loss went through the host"
    );
    let loss = be.to_f32(&loss.unwrap()).unwrap()[0] as f64;
    let mut grads = Vec::new();
    m.visit_params(&mut |prm| {
        grads.push((prm.name.clone(), be.to_f32(&prm.grad)?));
        Ok(())
    })
    .unwrap();
    // The norm alone (max_norm 0: no clipping), then clipped at half of it,
    // so that the factor matters; as the trainer does, on the device.
    let norm = be
        .to_f32(&clip_gradients(be, &mut m, 0.0).unwrap().stats)
        .unwrap()[0] as f64;
    let cfg = AdamWConfig {
        max_grad_norm: (norm * 0.5) as f32,
        ..AdamWConfig::default()
    };
    let clip = clip_gradients(be, &mut m, cfg.max_grad_norm).unwrap();
    let stats = be.to_f32(&clip.stats).unwrap();
    assert!(stats[1] < 0.51 && stats[1] > 0.49, "clip factor {stats:?}");
    let gs = clip.grad_scale;
    m.visit_params(&mut |prm| adamw_param(be, prm, &step_params(&cfg, prm, 3, 1e-3, 1e-2, gs)))
        .unwrap();
    let mut params = Vec::new();
    m.visit_params(&mut |prm| {
        params.push((prm.name.clone(), be.to_f32(&prm.value)?));
        Ok(())
    })
    .unwrap();
    StepResult {
        loss,
        norm,
        grads,
        params,
    }
}

fn compare(p: Precision, tol: f64) {
    let Some(g) = lpaf::backend::gpu_for_test("gpu_training_step_matches_cpu") else {
        return;
    };
    let c = cpu();
    let (rg, rc) = (step(&*g, p), step(&c, p));
    let what = format!("{p:?}");
    assert!(
        (rg.loss - rc.loss).abs() <= tol * rc.loss.abs(),
        "{what}: loss {} vs {}",
        rg.loss,
        rc.loss
    );
    assert!(
        (rg.norm - rc.norm).abs() <= tol * rc.norm,
        "{what}: gradient norm {} vs {}",
        rg.norm,
        rc.norm
    );
    assert_eq!(rg.grads.len(), rc.grads.len());
    // Relative to the parameter's gradient, or to 1e-3 of the whole
    // gradient's norm where a gradient is zero in exact arithmetic (the key
    // bias: softmax ignores it) and only rounding noise is left.
    let floor = 1e-3 * rc.norm;
    let noise: Vec<bool> = rc
        .grads
        .iter()
        .map(|(_, v)| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt() < floor)
        .collect();
    let err = |a: &[f32], b: &[f32]| -> f64 {
        let num: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
        if a.iter().any(|x| !x.is_finite()) {
            return f64::INFINITY;
        }
        num / den.max(floor)
    };
    let mut worst = (0.0f64, String::new());
    for ((ng, vg), (nc, vc)) in rg.grads.iter().zip(&rc.grads) {
        assert_eq!(ng, nc);
        let e = err(vg, vc);
        if e > worst.0 {
            worst = (e, ng.clone());
        }
        assert!(
            e < tol,
            "{what}: gradient of {ng}: rel err {e:.3e} > {tol:.0e}"
        );
    }
    // AdamW divides by √v: a noise-only gradient gives a full-size step in
    // a random direction, so those parameters are left out here.
    for (((ng, vg), (_, vc)), skip) in rg.params.iter().zip(&rc.params).zip(&noise) {
        if *skip {
            continue;
        }
        let e = rel_err(vg, vc);
        assert!(
            e < tol,
            "{what}: {ng} after AdamW: rel err {e:.3e} > {tol:.0e}"
        );
    }
    eprintln!(
        "{what}: worst gradient rel err {:.2e} ({})",
        worst.0, worst.1
    );
}

#[test]
fn gpu_training_step_matches_cpu_fp32() {
    compare(Precision::F32, 1e-5);
}

#[test]
fn gpu_training_step_matches_cpu_tf32() {
    compare(Precision::Tf32, 2e-3);
}

#[test]
fn gpu_training_step_matches_cpu_bf16() {
    // A bf16 rounding flipped by an fp32 difference in its input moves that
    // element by 2⁻⁹: through a whole step this stays near 1e-3.
    compare(Precision::Bf16, 5e-3);
}

#[test]
fn gpu_training_step_is_deterministic() {
    let Some(g) = lpaf::backend::gpu_for_test("gpu_training_step_is_deterministic") else {
        return;
    };
    for p in [Precision::F32, Precision::Bf16] {
        let (a, b) = (step(&*g, p), step(&*g, p));
        assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "{p:?} loss");
        assert_eq!(a.norm.to_bits(), b.norm.to_bits(), "{p:?} norm");
        for ((n, x), (_, y)) in a.params.iter().zip(&b.params) {
            assert!(
                x.iter().zip(y).all(|(u, v)| u.to_bits() == v.to_bits()),
                "{p:?}: {n} differs between two identical steps"
            );
        }
    }
}

/// The step as `lpaf bench train` runs it (the trainer's: device loss,
/// clipping on the device, one AdamW launch, one zeroing), on the CUDA device
/// after two warm-up steps, at every precision: no host synchronisation, no
/// allocation, and the whole-model operations launched once per step. Counted
/// by this test's own backend (the emulator's counters are the process's,
/// shared with the tests running beside it).
#[test]
fn gpu_dense_step_never_waits_and_never_allocates() {
    use lpaf::bench::train::{build, one_step, synthetic_batch};
    let Some(g) = lpaf::backend::gpu_for_test("gpu_dense_step_never_waits_and_never_allocates")
    else {
        return;
    };
    let cfg = config();
    let batch = synthetic_batch(&cfg, 4, 32);
    for p in [Precision::F32, Precision::Tf32, Precision::Bf16] {
        let what = format!("dense {p:?}");
        let (mut m, mut hooks) = build(&*g, &cfg, "dense").unwrap();
        for step in 0..2 {
            one_step(&*g, &mut m, hooks.as_mut(), &batch, p, step).unwrap();
        }
        let (c0, k0) = (g.engine_counters().unwrap(), g.launches_by_kernel());
        for step in 2..4 {
            one_step(&*g, &mut m, hooks.as_mut(), &batch, p, step).unwrap();
        }
        let (c1, k1) = (g.engine_counters().unwrap(), g.launches_by_kernel());
        assert_eq!(c1.syncs - c0.syncs, 0, "{what}: host syncs in two steps");
        assert_eq!(c1.allocs - c0.allocs, 0, "{what}: allocations in two steps");
        let per = |k: &str| {
            let at = |v: &[(String, u64)]| v.iter().find(|(n, _)| n == k).map_or(0, |(_, c)| *c);
            at(&k1) - at(&k0)
        };
        for k in [
            "adamw_many_f32",
            "grad_sumsq_many_f64",
            "grad_norm_finalize",
            "grads_zero_many",
            "cross_entropy_f32",
        ] {
            assert_eq!(per(k), 2, "{what}: {k} in two steps");
        }
        assert_eq!(per("adamw_f32"), 0, "{what}: per-parameter AdamW");
        let kernels: u64 = k1
            .iter()
            .filter(|(n, _)| !n.starts_with("cublas"))
            .map(|(n, _)| per(n))
            .sum();
        assert_eq!(
            kernels,
            c1.launches - c0.launches,
            "{what}: the breakdown adds up"
        );
    }
}
