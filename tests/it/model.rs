//! Model tests: finite-difference gradient check on a tiny random BERT, and
//! parity with transformers on the committed fixtures.

use lpaf::backend::{Backend, CpuBackend, Precision};
use lpaf::data::{Batch, Labels, TaskKind};
use lpaf::model::bert::Bert;
use lpaf::model::loss;
use lpaf::model::{BertConfig, StepCtx};

fn tiny_batch() -> Batch {
    // Two rows, the second padded.
    Batch {
        size: 2,
        seq_len: 5,
        input_ids: vec![2, 7, 9, 11, 3, 2, 5, 3, 0, 0],
        token_type_ids: vec![0, 0, 0, 1, 1, 0, 0, 0, 0, 0],
        attention_mask: vec![1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
        labels: Labels::Class(vec![1, 2]),
        feature_ids: vec![0, 1],
    }
}

fn loss_of(be: &CpuBackend, m: &mut Bert, b: &Batch, ctx: &StepCtx) -> f64 {
    let logits = m.forward(be, ctx, b).unwrap();
    let z = be.to_f32(&logits).unwrap();
    let Labels::Class(y) = &b.labels else {
        unreachable!()
    };
    loss::cross_entropy(&z, y, 3, 1.0).unwrap().loss
}

#[test]
fn backward_matches_finite_differences() {
    gradient_check(StepCtx::eval(Precision::F32));
}

#[test]
fn backward_matches_finite_differences_with_dropout() {
    // Training mode: dropout masks are a function of (seed, step, site), so the
    // perturbed forwards draw the same masks as the analytic pass.
    gradient_check(StepCtx {
        precision: Precision::F32,
        training: true,
        seed: 11,
        step: 3,
        micro: 0,
    });
}

fn gradient_check(ctx: StepCtx) {
    let be = CpuBackend::new();
    let mut cfg = BertConfig::tiny(16, 8, 2, 2, 12);
    cfg.initializer_range = 0.5;
    let mut m = Bert::random(&be, cfg, TaskKind::Classification { num_labels: 3 }, 7).unwrap();
    let b = tiny_batch();
    let logits = m.forward(&be, &ctx, &b).unwrap();
    let z = be.to_f32(&logits).unwrap();
    let lg = loss::cross_entropy(&z, &[1, 2], 3, 1.0).unwrap();
    let d = be.from_f32(&lg.dlogits, &[2, 3]).unwrap();
    m.zero_grads(&be).unwrap();
    m.backward(&be, &d, None).unwrap();
    // Collect (name, analytic grad) for every parameter.
    let mut grads = Vec::new();
    m.visit_params(&mut |p| {
        grads.push((
            p.name.clone(),
            be.to_f32(&p.grad).unwrap(),
            p.value.shape().to_vec(),
        ));
        Ok(())
    })
    .unwrap();
    let mut checked = 0;
    for (name, g, _) in &grads {
        // Probe the 3 largest-gradient entries of each parameter.
        let mut idx: Vec<usize> = (0..g.len()).collect();
        idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &i in idx.iter().take(3) {
            let h = 1e-2f32;
            let mut plus = 0.0;
            let mut minus = 0.0;
            for (sign, out) in [(1.0f32, &mut plus), (-1.0f32, &mut minus)] {
                m.visit_params(&mut |p| {
                    if &p.name == name {
                        let v = p.value.host_f32_mut()?;
                        v[i] += sign * h;
                    }
                    Ok(())
                })
                .unwrap();
                *out = loss_of(&be, &mut m, &b, &ctx);
                m.visit_params(&mut |p| {
                    if &p.name == name {
                        let v = p.value.host_f32_mut()?;
                        v[i] -= sign * h;
                    }
                    Ok(())
                })
                .unwrap();
            }
            let num = (plus - minus) / (2.0 * h as f64);
            let ana = g[i] as f64;
            let tol = 2e-3 + 2e-2 * ana.abs().max(num.abs());
            assert!(
                (num - ana).abs() <= tol,
                "{name}[{i}]: analytic {ana} vs numeric {num}"
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "checked {checked}");
}
