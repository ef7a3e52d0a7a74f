//! Trainer tests on the CPU: a run interrupted and resumed from its
//! checkpoint ends bit-identical to an uninterrupted one; loss decreases.

use std::path::Path;

use lpaf::backend::{Backend, CpuBackend, Precision};
use lpaf::data::{Batch, Labels, TaskKind};
use lpaf::model::{Bert, BertConfig};
use lpaf::train::optimizer::AdamWConfig;
use lpaf::train::trainer::{self, BatchSource, EvalResult, NoHooks, TrainConfig};
use lpaf::Result;

/// Synthetic batches, a pure function of (epoch, position): label = parity of the first token.
struct Synthetic {
    epoch: u64,
    pos: u64,
    per_epoch: u64,
}

impl BatchSource for Synthetic {
    fn next_batch(&mut self) -> Result<Batch> {
        let (b, s) = (4usize, 6usize);
        let mut ids = Vec::new();
        let mut labels = Vec::new();
        for r in 0..b {
            let k = (self.epoch * 1000 + self.pos * 10 + r as u64) as i32;
            let first = 4 + (k * 7 % 11);
            ids.extend([2, first, 4 + (k * 3 % 9), 5, 3, 0]);
            labels.push((first % 2) as u32);
        }
        self.pos += 1;
        if self.pos == self.per_epoch {
            self.pos = 0;
            self.epoch += 1;
        }
        Ok(Batch {
            size: b,
            seq_len: s,
            input_ids: ids,
            token_type_ids: vec![0; b * s],
            attention_mask: (0..b * s).map(|i| (i % s != 5) as u8).collect(),
            labels: Labels::Class(labels),
            feature_ids: (0..b).collect(),
        })
    }
    fn cursor(&self) -> (u64, u64) {
        (self.epoch, self.pos)
    }
    fn set_cursor(&mut self, epoch: u64, position: u64) -> Result<()> {
        self.epoch = epoch;
        self.pos = position;
        Ok(())
    }
}

fn config(out: &Path, stop_after: u64) -> TrainConfig {
    TrainConfig {
        seed: 5,
        batch_size: 4,
        grad_accum: 2,
        total_steps: 8,
        warmup_steps: 2,
        optimizer: AdamWConfig {
            lr: 1e-3,
            ..AdamWConfig::default()
        },
        precision: Precision::F32,
        log_every: 1,
        eval_every: 4,
        checkpoint_every: 0,
        output_dir: out.to_path_buf(),
        keep_best: false,
        quiet: true,
        stop_after,
        divergence: trainer::DivergenceRule::default(),
    }
}

fn model(be: &dyn Backend) -> Bert {
    Bert::random(
        be,
        BertConfig::tiny(16, 16, 2, 2, 32),
        TaskKind::Classification { num_labels: 2 },
        3,
    )
    .unwrap()
}

fn params(be: &dyn Backend, m: &mut Bert) -> Vec<(String, Vec<f32>)> {
    let mut v = Vec::new();
    m.visit_params(&mut |p| {
        v.push((p.name.clone(), be.to_f32(&p.value)?));
        Ok(())
    })
    .unwrap();
    v
}

fn run(
    be: &dyn Backend,
    m: &mut Bert,
    out: &Path,
    stop_after: u64,
    resume: bool,
) -> trainer::TrainSummary {
    let mut data = Synthetic {
        epoch: 0,
        pos: 0,
        per_epoch: 5,
    };
    let mut eval =
        |_: &dyn Backend, _: &mut Bert| -> Result<EvalResult> { Ok(EvalResult::default()) };
    let mut save = |_: &dyn Backend, _: &mut Bert, _: &Path| -> Result<()> { Ok(()) };
    trainer::train(
        be,
        m,
        &mut data,
        &config(out, stop_after),
        &mut NoHooks,
        &mut eval,
        &mut save,
        resume,
        "fp",
    )
    .unwrap()
}

#[test]
fn resumed_run_is_bit_identical() {
    resume_check(&CpuBackend::new());
}

#[test]
fn gpu_resumed_run_is_bit_identical() {
    // Same seed and inputs on the same GPU: bit-identical (no atomics in
    // reductions that feed training state), interrupted or not.
    let Some(be) = lpaf::backend::gpu_for_test("gpu_resumed_run_is_bit_identical") else {
        return;
    };
    resume_check(be.as_ref());
}

fn resume_check(be: &dyn Backend) {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut full = model(be);
    let s = run(be, &mut full, a.path(), 0, false);
    assert_eq!(s.steps, 8);
    // Interrupted after 3 steps, then resumed (dropout on: masks depend on the step).
    let mut part = model(be);
    let s1 = run(be, &mut part, b.path(), 3, false);
    assert_eq!(s1.steps, 3);
    let mut resumed = model(be);
    let s2 = run(be, &mut resumed, b.path(), 0, true);
    assert_eq!(s2.steps, 8);
    let pa = params(be, &mut full);
    let pb = params(be, &mut resumed);
    assert_eq!(pa.len(), pb.len());
    for ((na, va), (nb, vb)) in pa.iter().zip(&pb) {
        assert_eq!(na, nb);
        assert!(
            va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{na} differs after resume"
        );
    }
    assert_eq!(
        s.final_loss.unwrap().to_bits(),
        s2.final_loss.unwrap().to_bits()
    );
    // The log has one line per step of both invocations plus evals and summaries.
    let log = std::fs::read_to_string(b.path().join("log.jsonl")).unwrap();
    let steps = log
        .lines()
        .filter(|l| l.contains("\"event\":\"step\""))
        .count();
    assert_eq!(steps, 8);
}

#[test]
fn changed_settings_refuse_to_resume() {
    let be = CpuBackend::new();
    let d = tempfile::tempdir().unwrap();
    let mut m = model(&be);
    run(&be, &mut m, d.path(), 2, false);
    let mut data = Synthetic {
        epoch: 0,
        pos: 0,
        per_epoch: 5,
    };
    let mut eval =
        |_: &dyn Backend, _: &mut Bert| -> Result<EvalResult> { Ok(EvalResult::default()) };
    let mut save = |_: &dyn Backend, _: &mut Bert, _: &Path| -> Result<()> { Ok(()) };
    let mut m2 = model(&be);
    let err = trainer::train(
        &be,
        &mut m2,
        &mut data,
        &config(d.path(), 0),
        &mut NoHooks,
        &mut eval,
        &mut save,
        true,
        "other",
    )
    .unwrap_err();
    assert!(err.to_string().contains("other settings"), "{err}");
}
