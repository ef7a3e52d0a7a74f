//! Model tests: finite-difference gradient check on a tiny random BERT, and
//! parity with transformers on the committed fixtures.

use lpaf::backend::prelude::*;

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

// ---- parity with transformers (fixtures made by scripts/make_fixtures.py) ----

use std::collections::BTreeMap;
use std::path::PathBuf;

use lpaf::model::bert::DenseFactory;
use lpaf::model::io::{read_safetensors, HostTensor};
use lpaf::model::weights::load_model_dir;

use crate::common::rel_err;

fn fixture(name: &str) -> PathBuf {
    crate::common::fixture(name)
}

fn ints(r: &BTreeMap<String, HostTensor>, name: &str) -> Vec<i64> {
    r[name].as_i64(name).unwrap()
}

fn floats<'a>(r: &'a BTreeMap<String, HostTensor>, name: &str) -> &'a [f32] {
    r[name].as_f32(name).unwrap()
}

fn reference_batch(r: &BTreeMap<String, HostTensor>, labels: Labels) -> Batch {
    let shape = &r["input_ids"].shape;
    Batch {
        size: shape[0],
        seq_len: shape[1],
        input_ids: ints(r, "input_ids").iter().map(|&v| v as i32).collect(),
        token_type_ids: ints(r, "token_type_ids")
            .iter()
            .map(|&v| v as i32)
            .collect(),
        attention_mask: ints(r, "attention_mask").iter().map(|&v| v as u8).collect(),
        labels,
        feature_ids: (0..shape[0]).collect(),
    }
}

/// Runs forward + loss + backward on the fixture and compares everything.
fn check_parity(be: &dyn Backend, dir: &str, tol: f64) {
    let d = fixture(dir);
    let r = read_safetensors(&d.join("reference.safetensors")).unwrap();
    let (mut m, report) = load_model_dir(be, &d, None, 0, &DenseFactory).unwrap();
    assert!(
        report.created.is_empty(),
        "heads created: {:?}",
        report.created
    );
    let labels = match &m.task {
        TaskKind::Classification { .. } => {
            Labels::Class(ints(&r, "labels").iter().map(|&v| v as u32).collect())
        }
        TaskKind::Regression => Labels::Regression(floats(&r, "labels").to_vec()),
        TaskKind::QuestionAnswering => Labels::Span {
            start: ints(&r, "start_positions")
                .iter()
                .map(|&v| v as u32)
                .collect(),
            end: ints(&r, "end_positions")
                .iter()
                .map(|&v| v as u32)
                .collect(),
        },
    };
    let batch = reference_batch(&r, labels);
    let ctx = StepCtx::eval(Precision::F32);
    let logits_t = m.forward(be, &ctx, &batch).unwrap();
    let logits = be.to_f32(&logits_t).unwrap();
    // Hidden states.
    let hs: Vec<Vec<f32>> = m
        .hidden_states()
        .unwrap()
        .iter()
        .map(|t| be.to_f32(t).unwrap())
        .collect();
    for (i, h) in hs.iter().enumerate() {
        let e = rel_err(h, floats(&r, &format!("hidden_states.{i}")));
        assert!(e < tol, "{dir}: hidden_states.{i} rel err {e}");
    }
    // Logits (QA: interleaved start/end).
    let lg = match &m.task {
        TaskKind::QuestionAnswering => {
            let (s, e) = (floats(&r, "start_logits"), floats(&r, "end_logits"));
            let got_s: Vec<f32> = logits.chunks(2).map(|c| c[0]).collect();
            let got_e: Vec<f32> = logits.chunks(2).map(|c| c[1]).collect();
            let es = rel_err(&got_s, s);
            let ee = rel_err(&got_e, e);
            assert!(
                es < tol && ee < tol,
                "{dir}: start/end logits rel err {es} {ee}"
            );
            lpaf::train::trainer::task_loss(&m, &batch, &logits, 1.0).unwrap()
        }
        _ => {
            let e = rel_err(&logits, floats(&r, "logits"));
            assert!(e < tol, "{dir}: logits rel err {e}");
            lpaf::train::trainer::task_loss(&m, &batch, &logits, 1.0).unwrap()
        }
    };
    let want_loss = floats(&r, "loss")[0] as f64;
    assert!(
        ((lg.loss - want_loss) / want_loss).abs() < tol,
        "{dir}: loss {} vs {want_loss}",
        lg.loss
    );
    // Gradients of every parameter.
    let d_logits = be.from_f32(&lg.dlogits, logits_t.shape()).unwrap();
    m.zero_grads(be).unwrap();
    m.backward(be, &d_logits, None).unwrap();
    let mut checked = 0;
    m.visit_params(&mut |p| {
        let key = format!("grad.{}", p.name);
        let want = r
            .get(&key)
            .unwrap_or_else(|| panic!("{dir}: reference has no {key}"));
        let got = be.to_f32(&p.grad).unwrap();
        let want = want.as_f32(&key).unwrap();
        let norm = want.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let diff = got
            .iter()
            .zip(want)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        // Gradients that are zero in exact arithmetic are stored as float noise: absolute bound.
        assert!(
            diff <= tol * norm || diff < 1e-6,
            "{dir}: {key} abs diff {diff}, norm {norm}"
        );
        checked += 1;
        Ok(())
    })
    .unwrap();
    assert!(checked >= 39, "{dir}: only {checked} parameters compared");
}

#[test]
fn cpu_matches_transformers_classification() {
    check_parity(&CpuBackend::new(), "tiny-bert-cls", 1e-5);
}

#[test]
fn cpu_matches_transformers_regression() {
    check_parity(&CpuBackend::new(), "tiny-bert-reg", 1e-5);
}

#[test]
fn cpu_matches_transformers_question_answering() {
    check_parity(&CpuBackend::new(), "tiny-bert-qa", 1e-5);
}

#[test]
fn gpu_matches_transformers() {
    let Some(be) = lpaf::backend::gpu_for_test("gpu_matches_transformers") else {
        return;
    };
    for dir in ["tiny-bert-cls", "tiny-bert-reg", "tiny-bert-qa"] {
        check_parity(be.as_ref(), dir, 1e-4);
    }
}

/// The MiniLM assets fetched by scripts/fetch-assets.sh, if present.
pub fn minilm_dir() -> Option<PathBuf> {
    let cache = std::env::var_os("LPAF_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/lpaf")))?;
    let d = cache.join("minilm");
    d.join("model.safetensors").is_file().then_some(d)
}

#[test]
fn minilm_hidden_states_match_transformers() {
    let Some(dir) = minilm_dir() else {
        eprintln!("minilm_hidden_states_match_transformers: skipped: MiniLM assets not fetched (scripts/fetch-assets.sh)");
        return;
    };
    let be = CpuBackend::new();
    let r = read_safetensors(&fixture("minilm-reference.safetensors")).unwrap();
    let (mut m, report) = load_model_dir(
        &be,
        &dir,
        Some(TaskKind::Classification { num_labels: 2 }),
        0,
        &DenseFactory,
    )
    .unwrap();
    // The sentence-transformers checkpoint has no classifier: created fresh, nothing else.
    assert_eq!(report.created, vec!["classifier".to_string()]);
    let batch = reference_batch(&r, Labels::None);
    // The reference comes from the F32 weights; an F16 copy (carried to a GPU
    // machine) rounds the weights first.
    let format = lpaf::model::io::stored_float_format(&dir.join("model.safetensors")).unwrap();
    let tol = if format == Some(lpaf::model::io::FloatFormat::F32) {
        1e-4
    } else {
        5e-3
    };
    m.forward(&be, &StepCtx::eval(Precision::F32), &batch)
        .unwrap();
    for (i, h) in m.hidden_states().unwrap().iter().enumerate() {
        let e = rel_err(
            &be.to_f32(h).unwrap(),
            floats(&r, &format!("hidden_states.{i}")),
        );
        assert!(
            e < tol,
            "MiniLM hidden_states.{i} rel err {e} (weights {format:?})"
        );
    }
}
