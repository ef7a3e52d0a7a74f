//! Compression methods end to end on the tiny fixture model (CPU): kept
//! ratios against the budget recounted from the saved tensors, schedules,
//! LoSparse's global threshold against a sort, the sparsity-aware SVD against
//! plain SVD, bit-identical resume, export → load → eval, and the errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lpaf::backend::prelude::*;
use lpaf::backend::{CpuBackend, DType, Precision, WeightedSvdOptions, WeightedSvdProblem};
use lpaf::cli::config::ConfigTable;
use lpaf::compress::format::{
    export_dense, load_compressed, read_compression_info, COMPRESSION_FILE,
};
use lpaf::compress::layers::LowRankSparseLinear;
use lpaf::compress::losparse::{
    install_losparse, losparse_layers, LoSparseHooks, LoSparseSettings,
};
use lpaf::compress::pipeline::run_recipe;
use lpaf::compress::recipe::Recipe;
use lpaf::data::TaskKind;
use lpaf::model::bert::{linear_prefix, slot_shape, DenseFactory};
use lpaf::model::io::{read_safetensors, HostTensor};
use lpaf::model::weights::load_model_dir;
use lpaf::train::schedule::CubicSchedule;

fn fixture(name: &str) -> PathBuf {
    crate::common::fixture(name)
}

const POS: [&str; 10] = [
    "good",
    "great",
    "fun",
    "wonderful",
    "best",
    "beautiful",
    "love",
    "loved",
    "like",
    "enjoy",
];
const NEG: [&str; 6] = ["bad", "terrible", "boring", "worst", "hate", "not"];
const NEUTRAL: [&str; 8] = [
    "the", "movie", "film", "story", "plot", "music", "was", "is",
];

/// A small two-class CSV task over the fixture vocabulary.
pub(crate) fn write_task(dir: &Path) {
    let rows = |n: usize, seed: usize| {
        let mut s = String::from("sentence,label\n");
        for i in 0..n {
            let label = (i + seed) % 2;
            let words = if label == 1 { &POS[..] } else { &NEG[..] };
            let k = i * 7 + seed;
            s.push_str(&format!(
                "{} {} {} {},{}\n",
                NEUTRAL[k % NEUTRAL.len()],
                NEUTRAL[(k / 3) % NEUTRAL.len()],
                words[k % words.len()],
                words[(k / 5) % words.len()],
                label
            ));
        }
        s
    };
    std::fs::write(dir.join("train.csv"), rows(64, 0)).unwrap();
    std::fs::write(dir.join("dev.csv"), rows(16, 1)).unwrap();
}

/// A recipe for `method` on the fixture model and the CSV task, with overrides.
pub(crate) fn recipe(method: &str, dir: &Path, out: &str, sets: &[(&str, &str)]) -> Recipe {
    let mut t = ConfigTable::empty();
    // The fixture serves as pre-trained start and, for SVD, as "fine-tuned" model.
    let model = fixture("tiny-bert-cls");
    let s = |v: &Path| toml::Value::String(v.display().to_string());
    t.set_value("method", toml::Value::String(method.into()))
        .unwrap();
    t.set_value("model", s(&model)).unwrap();
    t.set_value("output", s(&dir.join(out))).unwrap();
    t.set_value("data.task", toml::Value::String("csv".into()))
        .unwrap();
    t.set_value("data.train", s(&dir.join("train.csv")))
        .unwrap();
    t.set_value("data.dev", s(&dir.join("dev.csv"))).unwrap();
    t.set_value("data.text_a", toml::Value::String("sentence".into()))
        .unwrap();
    t.set_value("data.max_seq_len", toml::Value::Integer(16))
        .unwrap();
    for (k, v) in [
        ("train.steps", "12"),
        ("train.batch_size", "8"),
        ("train.lr", "1e-3"),
        ("train.log_every", "1"),
        ("train.eval_every", "6"),
        ("train.eval_batch_size", "16"),
        ("target.kept_ratio", "0.2"),
        ("losparse.delta_t", "2"),
        ("losparse.unit_steps", "2"),
        ("losparse.final_warmup", "2"),
        ("lpaf.finetune_steps", "8"),
        ("lpaf.em_steps", "4"),
    ] {
        t.set(k, v).unwrap();
    }
    for (k, v) in sets {
        t.set(k, v).unwrap();
    }
    t.parse().unwrap()
}

fn be() -> CpuBackend {
    CpuBackend::new()
}

/// Storage recounted naively from a saved compressed model.
/// (name, numel, rank, nnz) of each matrix.
type MatrixCount = (String, usize, usize, usize);

fn recount(dir: &Path) -> (usize, usize, Vec<MatrixCount>) {
    let t = read_safetensors(&dir.join("model.safetensors")).unwrap();
    let cfg = lpaf::model::BertConfig::load(&dir.join("config.json")).unwrap();
    let mut dense = 0;
    let mut stored = 0;
    let mut per = Vec::new();
    for l in 0..cfg.num_hidden_layers {
        for s in 0..6 {
            let p = linear_prefix(l, s);
            let (o, i) = slot_shape(&cfg, s);
            dense += o * i;
            let rank = t
                .get(&format!("{p}.lowrank_u"))
                .map(|u| u.shape[1])
                .unwrap_or(0);
            let nnz = t
                .get(&format!("{p}.sparse_values"))
                .map(|v| v.as_f32("v").unwrap().iter().filter(|x| **x != 0.0).count())
                .unwrap_or(0);
            let here = if t.contains_key(&format!("{p}.weight")) {
                o * i
            } else {
                rank * (o + i) + nnz
            };
            stored += here;
            per.push((p, o * i, rank, nnz));
        }
    }
    (dense, stored, per)
}

fn check_saved_stats(out: &Path) -> f64 {
    let dir = out.join("compressed");
    let info = read_compression_info(&dir).unwrap();
    let (dense, stored, _) = recount(&dir);
    assert_eq!(info.total.dense_params, dense);
    assert_eq!(
        info.total.stored_params, stored,
        "compression.json disagrees with a recount"
    );
    assert!((info.total.kept_ratio - stored as f64 / dense as f64).abs() < 1e-12);
    info.total.kept_ratio
}

#[test]
fn pruning_hits_the_budget_exactly_per_matrix() {
    let d = tempfile::tempdir().unwrap();
    write_task(d.path());
    for method in ["movement", "magnitude"] {
        let r = recipe(method, d.path(), method, &[]);
        let o = run_recipe(&be(), &r, false, true).unwrap();
        assert!(!o.stopped);
        check_saved_stats(&d.path().join(method));
        let (_, _, per) = recount(&d.path().join(method).join("compressed"));
        for (name, numel, rank, nnz) in per {
            assert_eq!(rank, 0, "{method} {name}");
            assert_eq!(
                nnz,
                (0.2 * numel as f64).floor() as usize,
                "{method} {name}: kept entries"
            );
        }
        assert!(
            (o.kept_ratio - 0.2).abs() < 1e-3,
            "{method}: kept ratio {}",
            o.kept_ratio
        );
    }
}

#[test]
fn movement_log_follows_the_cubic_schedule() {
    let d = tempfile::tempdir().unwrap();
    write_task(d.path());
    let r = recipe(
        "movement",
        d.path(),
        "mv",
        &[
            ("train.steps", "20"),
            ("pruning.initial_warmup", "0.1"),
            ("pruning.final_warmup", "0.2"),
        ],
    );
    run_recipe(&be(), &r, false, true).unwrap();
    let sched = CubicSchedule::new(1.0, 0.2, 20, 2, 4);
    let log = std::fs::read_to_string(d.path().join("mv/log.jsonl")).unwrap();
    let mut seen = 0;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["event"] == "step" {
            // Logged after step `step` (1-based count): its mask used kept(step − 1).
            let step = v["step"].as_u64().unwrap();
            let want = sched.kept(step - 1);
            assert!(
                (v["kept_target"].as_f64().unwrap() - want).abs() < 1e-12,
                "step {step}"
            );
            let got = v["kept_ratio"].as_f64().unwrap();
            assert!(
                (got - want).abs() < 0.01,
                "step {step}: kept {got} vs {want}"
            );
            assert!(v["mask_churn"].is_null() || v["mask_churn"].as_f64().unwrap() <= 1.0);
            seen += 1;
        }
    }
    assert_eq!(seen, 20);
    // Spot values of the schedule itself.
    assert_eq!(sched.kept(0), 1.0);
    assert_eq!(sched.kept(1), 1.0);
    assert!((sched.kept(9) - (0.2 + 0.8 * (1.0 - 7.0 / 14.0f64).powi(3))).abs() < 1e-12);
    assert_eq!(sched.kept(16), 0.2);
}

/// The step records of a run's log.jsonl.
fn step_records(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "step")
        .collect()
}

/// Regression for the collapse of movement pruning on short runs: with
/// scores starting at zero, the mask is no better than a random one of the
/// same size (`magnitude_overlap` ≈ kept) and MiniLM on polarity ends at the
/// majority class. The shipped recipes' `[pruning]` settings (movement, and
/// LPAF's stage 1) must give a mask clearly above chance — at least halfway
/// from chance to the magnitude mask — and a falling loss.
#[test]
fn shipped_movement_settings_beat_chance_overlap_and_learn() {
    let d = tempfile::tempdir().unwrap();
    write_task(d.path());
    let root = crate::common::repo_root();
    for (method, log) in [("movement", "log.jsonl"), ("lpaf", "stage1/log.jsonl")] {
        let path = root.join(format!("recipes/{method}.toml"));
        let shipped: Recipe = ConfigTable::from_file(&path).unwrap().parse().unwrap();
        // The tiny model cannot show MiniLM's collapse with a weak prior
        // (0.4 collapsed there, 1.33 and 4 learned: recipes/movement.toml).
        assert!(
            shipped.pruning.score_init_scale >= 1.33,
            "{method}: score_init_scale {} is below the weakest prior that learned on MiniLM",
            shipped.pruning.score_init_scale
        );
        let mut r = recipe(method, d.path(), method, &[("train.steps", "40")]);
        r.pruning = shipped.pruning.clone();
        r.train.score_lr = shipped.train.score_lr;
        r.train.warmup_ratio = shipped.train.warmup_ratio;
        run_recipe(&be(), &r, false, true).unwrap();
        let recs = step_records(&d.path().join(method).join(log));
        assert_eq!(recs.len(), 40, "{method}");
        let mut pruned_points = 0;
        for v in &recs {
            let kept = v["kept_ratio"].as_f64().unwrap();
            if kept > 0.95 {
                continue;
            }
            let overlap = v["magnitude_overlap"].as_f64().unwrap();
            assert!(
                overlap >= kept + 0.5 * (1.0 - kept),
                "{method} step {}: magnitude overlap {overlap:.3} at kept {kept:.3} \
                 (chance = kept): the movement mask is close to random",
                v["step"]
            );
            pruned_points += 1;
        }
        assert!(
            pruned_points >= 20,
            "{method}: only {pruned_points} pruned log points"
        );
        let loss = |vs: &[serde_json::Value]| {
            vs.iter().map(|v| v["loss"].as_f64().unwrap()).sum::<f64>() / vs.len() as f64
        };
        let (first, last) = (loss(&recs[..8]), loss(&recs[recs.len() - 8..]));
        assert!(
            last < first - 0.05,
            "{method}: loss did not fall ({first:.4} → {last:.4})"
        );
    }
}

#[test]
fn factorized_methods_stay_within_the_budget() {
    let d = tempfile::tempdir().unwrap();
    write_task(d.path());
    for method in ["svd", "lpaf"] {
        let r = recipe(method, d.path(), method, &[]);
        let o = run_recipe(&be(), &r, false, true).unwrap();
        let kept = check_saved_stats(&d.path().join(method));
        let (dense, stored, per) = recount(&d.path().join(method).join("compressed"));
        let budget = (0.2 * dense as f64).floor() as usize;
        assert!(stored <= budget, "{method}: {stored} > {budget}");
        // Within one rank of the largest matrix of the budget.
        assert!(
            budget - stored < 64 + 128,
            "{method}: {stored} far under {budget}"
        );
        assert!(per.iter().all(|p| p.3 == 0), "{method}: no sparse part");
        assert_eq!(o.kept_ratio, kept);
    }
}

#[test]
fn losparse_runs_and_prunes_s_to_its_share() {
    let d = tempfile::tempdir().unwrap();
    write_task(d.path());
    let r = recipe(
        "losparse",
        d.path(),
        "ls",
        &[("losparse.rank_ratio", "0.05")],
    );
    let o = run_recipe(&be(), &r, false, true).unwrap();
    let kept = check_saved_stats(&d.path().join("ls"));
    assert!((kept - 0.2).abs() < 0.03, "LoSparse kept {kept}");
    assert_eq!(o.kept_ratio, kept);
    let (_, _, per) = recount(&d.path().join("ls").join("compressed"));
    assert!(
        per.iter().all(|p| p.2 > 0),
        "every matrix has a low-rank part"
    );
}

#[test]
fn losparse_with_uncertainty_prunes_before_its_first_window_closes() {
    // 6 steps, Δ = 10: pruning starts before any importance window closed;
    // with β2 < 1 that indexed an empty list of Ī·Ū products.
    let d = tempfile::tempdir().unwrap();
    write_task(d.path());
    let r = recipe(
        "losparse",
        d.path(),
        "ls",
        &[
            ("losparse.beta2", "0.85"),
            ("train.steps", "6"),
            ("losparse.delta_t", "10"),
            ("losparse.unit_steps", "1"),
            ("losparse.final_warmup", "2"),
        ],
    );
    let o = run_recipe(&be(), &r, false, true).unwrap();
    // No window closed, so every S entry tied and was kept: U·V plus all of S.
    assert!(o.kept_ratio > 1.0, "{}", o.kept_ratio);
    assert_eq!(o.kept_ratio, check_saved_stats(&d.path().join("ls")));
    assert!(o.dev_metrics.iter().all(|(_, v)| v.is_finite()));
}

#[test]
fn losparse_global_threshold_matches_a_sort() {
    let be = be();
    let (mut m, _) =
        load_model_dir(&be, &fixture("tiny-bert-cls"), None, 0, &DenseFactory).unwrap();
    let s = LoSparseSettings {
        rank_ratio: 0.05,
        final_kept: 0.3,
        delta_t: 1,
        beta1: 0.85,
        beta2: 1.0,
        structured: true,
        hard_mask: false,
        unit_steps: 1,
        initial_warmup: 0,
        final_warmup: 0,
    };
    install_losparse(&be, &mut m, &s, 1).unwrap();
    // Random Ī, then one pruning at 30 %.
    for (seed, l) in (10u64..).zip(losparse_layers(&mut m)) {
        let n = l.ibar.numel();
        l.ibar = be
            .from_f32(
                &crate::common::rand_vec(seed, n, 1.0)
                    .iter()
                    .map(|v| v.abs())
                    .collect::<Vec<_>>(),
                l.ibar.shape(),
            )
            .unwrap();
    }
    let mut expected_rows: Vec<(f32, usize, usize, usize)> = Vec::new(); // (row mean, layer, row, cols)
    for (li, l) in losparse_layers(&mut m).iter().enumerate() {
        let v = be.to_f32(&l.ibar).unwrap();
        let (rows, cols) = l.ibar.rows_cols();
        for r in 0..rows {
            let mean = (v[r * cols..(r + 1) * cols]
                .iter()
                .map(|&x| x as f64)
                .sum::<f64>()
                / cols as f64) as f32;
            expected_rows.push((mean, li, r, cols));
        }
    }
    let total: usize = expected_rows.iter().map(|r| r.3).sum();
    let k = (0.3 * total as f64).floor() as usize;
    // Sort rows by score (descending); the k-th entry's row score is the threshold; ties kept.
    let mut sorted = expected_rows.clone();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut acc = 0;
    let mut th = f32::INFINITY;
    for r in &sorted {
        acc += r.3;
        if acc >= k {
            th = r.0;
            break;
        }
    }
    let mut hooks = LoSparseHooks::new(s, 10);
    hooks.windows_closed = 1;
    hooks.prune(&be, &mut m, 0.3).unwrap();
    for (li, l) in losparse_layers(&mut m).iter().enumerate() {
        let l: &LowRankSparseLinear = l;
        let mask = be.to_u8(&l.mask).unwrap();
        let sv = be.to_f32(&l.s.value).unwrap();
        let (rows, cols) = l.mask.rows_cols();
        for r in 0..rows {
            let score = expected_rows
                .iter()
                .find(|e| e.1 == li && e.2 == r)
                .unwrap()
                .0;
            let keep = score >= th;
            for c in 0..cols {
                assert_eq!(mask[r * cols + c] != 0, keep, "layer {li} row {r}");
                if !keep {
                    assert_eq!(sv[r * cols + c], 0.0, "pruned S entry not zeroed");
                }
            }
        }
    }
}

#[test]
fn sparsity_aware_svd_beats_plain_svd_on_kept_entries() {
    let be = be();
    let (o, i, r) = (48, 32, 6);
    let w = crate::common::rand_vec(3, o * i, 1.0);
    let mask = crate::common::rand_mask(4, o * i, 0.3);
    let ws: Vec<f32> = w
        .iter()
        .zip(&mask)
        .map(|(w, m)| if *m != 0 { *w } else { 0.0 })
        .collect();
    let wt = be.from_f32(&ws, &[o, i]).unwrap();
    let mt = be.from_u8(&mask, &[o, i]).unwrap();
    let opts = WeightedSvdOptions {
        max_steps: 10,
        rel_tol: 0.0,
        ..Default::default()
    };
    let weighted = be
        .weighted_svd(
            &[WeightedSvdProblem {
                w: &wt,
                mask: &mt,
                omega: 0.0,
                rank: r,
            }],
            &opts,
        )
        .unwrap();
    let plain = be
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
    let kept_err = |res: &lpaf::backend::WeightedSvdResult| {
        let u = be.to_f32(&res.u).unwrap();
        let v = be.to_f32(&res.v).unwrap();
        let mut e = 0.0f64;
        for a in 0..o {
            for b in 0..i {
                if mask[a * i + b] != 0 {
                    let p: f64 = (0..r)
                        .map(|k| u[a * r + k] as f64 * v[k * i + b] as f64)
                        .sum();
                    e += (ws[a * i + b] as f64 - p).powi(2);
                }
            }
        }
        e
    };
    let (ew, ep) = (kept_err(&weighted[0]), kept_err(&plain[0]));
    assert!(ew < 0.9 * ep, "weighted {ew} vs plain {ep}");
    let obj = &weighted[0].objective;
    assert!(
        obj.windows(2).all(|p| p[1] <= p[0] * (1.0 + 1e-6)),
        "objective increased: {obj:?}"
    );
}

pub(crate) fn final_tensors(dir: &Path) -> BTreeMap<String, HostTensor> {
    read_safetensors(&dir.join("compressed/model.safetensors")).unwrap()
}

#[test]
fn resumed_compression_is_bit_identical() {
    let d = tempfile::tempdir().unwrap();
    write_task(d.path());
    // Movement also with magnitude-initialised scores and a mask interval
    // that does not divide the stop points.
    let mag: &[(&str, &str)] = &[
        ("pruning.score_init", "\"magnitude\""),
        ("pruning.mask_interval", "3"),
    ];
    for (method, name, extra) in [
        ("movement", "movement", &[][..]),
        ("movement", "movement-mag", mag),
        ("losparse", "losparse", &[][..]),
        ("lpaf", "lpaf", mag),
    ] {
        let full = recipe(method, d.path(), &format!("{name}-full"), extra);
        run_recipe(&be(), &full, false, true).unwrap();
        // Interrupted twice (LPAF: once in stage 1, once in stage 3), then resumed.
        let stop = [extra, &[("train.stop_after", "5")][..]].concat();
        let part = recipe(method, d.path(), &format!("{name}-part"), &stop);
        let o = run_recipe(&be(), &part, false, true).unwrap();
        assert!(o.stopped, "{name}: should have stopped");
        let mut resumed = recipe(method, d.path(), &format!("{name}-part"), &stop);
        let mut guard = 0;
        loop {
            let o = run_recipe(&be(), &resumed, true, true).unwrap();
            if !o.stopped {
                break;
            }
            guard += 1;
            assert!(guard < 10, "{name}: never finished");
            if guard == 3 {
                resumed.train.stop_after = 0;
            }
        }
        let a = final_tensors(&d.path().join(format!("{name}-full")));
        let b = final_tensors(&d.path().join(format!("{name}-part")));
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{name}"
        );
        for (k, ta) in &a {
            assert_eq!(ta, &b[k], "{name}: {k} differs after resume");
        }
    }
}

#[test]
fn export_load_eval_gives_the_same_predictions() {
    let d = tempfile::tempdir().unwrap();
    write_task(d.path());
    let be = be();
    let r = recipe("losparse", d.path(), "ls", &[]);
    run_recipe(&be, &r, false, true).unwrap();
    let comp = d.path().join("ls/compressed");
    let dense = d.path().join("dense");
    export_dense(&be, &comp, &dense).unwrap();
    let spec = lpaf::data::task::TaskSpec {
        task: "csv".into(),
        dev: Some(d.path().join("dev.csv")),
        text_a: "sentence".into(),
        max_seq_len: Some(16),
        ..Default::default()
    };
    let tok = lpaf::data::tokenizer::Tokenizer::from_dir(&comp).unwrap();
    let data = lpaf::data::task::load_task(&spec, &tok).unwrap();
    let ds = data.dev.unwrap();
    let (mut mc, _) = load_compressed(&be, &comp, 0).unwrap();
    let (mut md, rep) = load_model_dir(&be, &dense, None, 0, &DenseFactory).unwrap();
    assert!(rep.created.is_empty() && rep.ignored.is_empty(), "{rep:?}");
    assert_eq!(md.task, TaskKind::Classification { num_labels: 2 });
    let (pc, _) = lpaf::train::eval::predict(&be, &mut mc, &ds, 16, Precision::F32).unwrap();
    let (pd, _) = lpaf::train::eval::predict(&be, &mut md, &ds, 16, Precision::F32).unwrap();
    assert_eq!(pc, pd, "dense export predicts differently");
    // The dense export is a plain checkpoint: only `.weight` matrices, no factors.
    let t = read_safetensors(&dense.join("model.safetensors")).unwrap();
    assert!(t
        .keys()
        .all(|k| !k.contains("lowrank") && !k.contains("sparse")));
    let _ = DType::F32;
}

#[test]
fn bad_recipes_and_budgets_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    write_task(d.path());
    // Unknown key.
    let mut t = ConfigTable::empty();
    t.set("method", "movement").unwrap();
    t.set("model", "m").unwrap();
    t.set("output", "o").unwrap();
    t.set("data.task", "csv").unwrap();
    t.set("pruning.scoop", "\"global\"").unwrap();
    let e = t.parse::<Recipe>().unwrap_err().to_string();
    assert!(e.contains("scoop"), "{e}");
    // Impossible budgets.
    for k in ["0", "1.5", "-0.1"] {
        let r = recipe("movement", d.path(), "x", &[("target.kept_ratio", k)]);
        let e = run_recipe(&be(), &r, false, true).unwrap_err().to_string();
        assert!(e.contains("kept_ratio"), "{k}: {e}");
    }
    let r = recipe(
        "losparse",
        d.path(),
        "x",
        &[
            ("target.kept_ratio", "0.05"),
            ("losparse.rank_ratio", "0.3"),
        ],
    );
    let e = run_recipe(&be(), &r, false, true).unwrap_err().to_string();
    assert!(e.contains("impossible budget"), "{e}");
    // The score options name their key.
    for (k, v) in [
        ("pruning.score_init_scale", "0"),
        ("pruning.score_init_scale", "-1"),
        ("pruning.mask_interval", "0"),
    ] {
        let r = recipe("movement", d.path(), "x", &[(k, v)]);
        let e = run_recipe(&be(), &r, false, true).unwrap_err().to_string();
        assert!(e.contains(k), "{k} = {v}: {e}");
    }
    let r = recipe(
        "soft_movement",
        d.path(),
        "x",
        &[("pruning.score_init", "\"magnitude\"")],
    );
    let e = run_recipe(&be(), &r, false, true).unwrap_err().to_string();
    assert!(e.contains("pruning.score_init"), "{e}");
    let r = recipe(
        "movement",
        d.path(),
        "x",
        &[
            ("pruning.score_init", "\"magnitude\""),
            ("pruning.score_rule", "\"accumulate\""),
        ],
    );
    let e = run_recipe(&be(), &r, false, true).unwrap_err().to_string();
    assert!(e.contains("pruning.score_init"), "{e}");
    let mut t = ConfigTable::empty();
    t.set("method", "movement").unwrap();
    t.set("model", "m").unwrap();
    t.set("output", "o").unwrap();
    t.set("data.task", "csv").unwrap();
    t.set("pruning.score_init", "\"weights\"").unwrap();
    let e = t.parse::<Recipe>().unwrap_err().to_string();
    assert!(e.contains("score_init") || e.contains("weights"), "{e}");
    let r = recipe("svd", d.path(), "x", &[("svd.rank", "65")]);
    let e = run_recipe(&be(), &r, false, true).unwrap_err().to_string();
    assert!(e.contains("rank 65 is larger than matrix"), "{e}");
}

#[test]
fn mismatched_teacher_is_refused() {
    let d = tempfile::tempdir().unwrap();
    write_task(d.path());
    let be = be();
    // A teacher with another vocabulary size.
    let mut cfg = lpaf::model::BertConfig::load(&fixture("tiny-bert-cls/config.json")).unwrap();
    cfg.vocab_size += 10;
    let teacher =
        lpaf::model::Bert::random(&be, cfg, TaskKind::Classification { num_labels: 2 }, 1).unwrap();
    let tdir = d.path().join("teacher");
    lpaf::model::weights::save_model_dir(
        &be,
        &teacher,
        &tdir,
        None,
        None,
        lpaf::model::io::FloatFormat::F32,
    )
    .unwrap();
    let r = recipe(
        "movement",
        d.path(),
        "x",
        &[("distill.teacher", &format!("\"{}\"", tdir.display()))],
    );
    let e = run_recipe(&be, &r, false, true).unwrap_err().to_string();
    assert!(e.contains("vocabulary"), "{e}");
    // A teacher with other labels (3-way head vs the task's 2 classes).
    let r = recipe(
        "movement",
        d.path(),
        "x",
        &[(
            "distill.teacher",
            &format!("\"{}\"", fixture("tiny-bert-cls").display()),
        )],
    );
    let e = run_recipe(&be, &r, false, true).unwrap_err().to_string();
    assert!(e.contains("head") || e.contains("labels"), "{e}");
}

#[test]
fn compressed_dir_with_a_missing_tensor_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    write_task(d.path());
    let be = be();
    run_recipe(&be, &recipe("lpaf", d.path(), "lp", &[]), false, true).unwrap();
    let comp = d.path().join("lp/compressed");
    let mut t = read_safetensors(&comp.join("model.safetensors")).unwrap();
    let victim = format!("{}.lowrank_v", linear_prefix(1, 2));
    t.remove(&victim).unwrap();
    lpaf::model::io::write_safetensors(
        &comp.join("model.safetensors"),
        &t,
        lpaf::model::io::FloatFormat::F32,
        None,
    )
    .unwrap();
    let e = match load_compressed(&be, &comp, 0) {
        Ok(_) => panic!("loading a model with a missing tensor succeeded"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(&victim) && e.contains("missing"), "{e}");
    assert!(comp.join(COMPRESSION_FILE).is_file());
}

#[test]
fn every_shipped_recipe_parses() {
    let dir = crate::common::repo_root().join("recipes");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        let t = ConfigTable::from_file(&p).unwrap();
        if name == "finetune" {
            t.parse::<lpaf::cli::config::FinetuneConfig>().unwrap();
        } else {
            let r: Recipe = t.parse().unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            r.validate().unwrap();
            assert_eq!(r.method.name(), name);
        }
        n += 1;
    }
    assert_eq!(n, 7);
}
