//! `lpaf sweep` on the CPU: expansion and stable names, the table from
//! fabricated summaries, skipping finished and resuming interrupted runs of
//! tiny real sweeps (the table then equals an uninterrupted sweep's), a
//! failing run, the Slurm scripts, bad sweep files, and what each run's
//! summary records for reproduction.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sha2::{Digest, Sha256};

use lpaf::sweep::{self, Run, RunRecord};

fn lpaf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lpaf"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn p(x: &Path) -> String {
    x.display().to_string()
}

/// Two tiny recipes (and a broken one) in `dir/recipes`; the CSV task in `dir`.
fn setup(dir: &Path) {
    crate::compress::write_task(dir);
    let r = dir.join("recipes");
    std::fs::create_dir_all(&r).unwrap();
    std::fs::write(r.join("magnitude.toml"), "method = \"magnitude\"\n").unwrap();
    std::fs::write(
        r.join("movement.toml"),
        "method = \"movement\"\n[pruning]\nscore_init = \"magnitude\"\n",
    )
    .unwrap();
    std::fs::write(r.join("finetune.toml"), "[train]\nlr = 1e-3\n").unwrap();
    std::fs::write(r.join("svd.toml"), "method = \"svd\"\n").unwrap();
    std::fs::write(
        r.join("broken.toml"),
        "method = \"magnitude\"\n[pruning]\nno_such_key = 1\n",
    )
    .unwrap();
}

/// A sweep file over the fixture; `head` goes before the tables.
fn sweep_file(dir: &Path, head: &str) -> PathBuf {
    sweep_file_with(dir, head, "")
}

/// The same, with more `[set]` lines.
fn sweep_file_with(dir: &Path, head: &str, sets: &str) -> PathBuf {
    let f = dir.join("sweep.toml");
    let text = format!(
        "output = {root:?}\nmodel = {model:?}\ndevice = \"cpu\"\nrecipes_dir = {rd:?}\n{head}\n\
         [data]\ntask = \"csv\"\ntrain = {train:?}\ndev = {dev:?}\ntext_a = \"sentence\"\n\
         max_seq_len = 16\n\
         [set]\n\"train.steps\" = 12\n\"train.batch_size\" = 8\n\"train.lr\" = 1e-3\n\
         \"train.eval_every\" = 6\n\"train.eval_batch_size\" = 16\n\"train.log_every\" = 1\n{sets}",
        root = p(&dir.join("root")),
        model = p(&crate::common::fixture("tiny-bert-cls")),
        rd = p(&dir.join("recipes")),
        train = p(&dir.join("train.csv")),
        dev = p(&dir.join("dev.csv")),
    );
    // A key in `sets` replaces the default line of the same key.
    let keys: Vec<&str> = sets.lines().filter_map(|l| l.split(" =").next()).collect();
    let text: String = text
        .lines()
        .enumerate()
        .filter(|(i, l)| {
            let from_sets = text.lines().count() - sets.lines().count() <= *i;
            from_sets || !keys.iter().any(|k| l.starts_with(&format!("{k} =")))
        })
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(&f, text).unwrap();
    f
}

#[test]
fn sweep_expands_into_stable_names() {
    let d = tempfile::tempdir().unwrap();
    setup(d.path());
    let f = sweep_file(
        d.path(),
        "recipes = [\"finetune\", \"magnitude\", \"svd\"]\nkept_ratios = [0.2, 0.05]\n\
         seeds = [1, 2]\nstart_from_finetune = [\"svd\"]\n\
         [recipe_set.svd]\n\"train.warmup_ratio\" = 0.25\n\
         [[overrides]]\ntag = \"base\"\n[[overrides]]\ntag = \"lr3\"\nset = { \"train.lr\" = 3e-3 }\n",
    );
    let plan = sweep::plan(&f, None).unwrap();
    let names: Vec<&str> = plan.runs.iter().map(|r| r.name.as_str()).collect();
    let mut want = Vec::new();
    for s in [1, 2] {
        for t in ["base", "lr3"] {
            want.push(format!("finetune-s{s}-{t}"));
        }
    }
    for s in [1, 2] {
        for k in ["0.2", "0.05"] {
            for r in ["magnitude", "svd"] {
                for t in ["base", "lr3"] {
                    want.push(format!("{r}-k{k}-s{s}-{t}"));
                }
            }
        }
    }
    assert_eq!(names, want);
    for (i, r) in plan.runs.iter().enumerate() {
        assert_eq!(r.index, i);
        assert_eq!(r.output, d.path().join("root").join(&r.name));
        assert_eq!(r.phase, (r.recipe != "finetune") as u8);
    }
    // SVD starts from its seed's and variant's fine-tuned model.
    let svd = plan
        .runs
        .iter()
        .find(|r| r.name == "svd-k0.05-s2-lr3")
        .unwrap();
    assert_eq!(svd.depends_on.as_deref(), Some("finetune-s2-lr3"));
    let at = svd.args.iter().position(|a| a == "--model").unwrap();
    assert_eq!(
        svd.args[at + 1],
        p(&d.path().join("root/finetune-s2-lr3/best"))
    );
    assert!(
        svd.args.contains(&"train.lr=0.003".to_string()),
        "{:?}",
        svd.args
    );
    assert!(svd.args.contains(&"--resume".to_string()));
    // `[recipe_set.svd]` reaches the SVD runs only.
    assert!(svd.args.contains(&"train.warmup_ratio=0.25".to_string()));
    for r in &plan.runs {
        let has = r.args.iter().any(|a| a.starts_with("train.warmup_ratio="));
        assert_eq!(has, r.recipe == "svd", "{}: {:?}", r.name, r.args);
    }
    let mag = plan
        .runs
        .iter()
        .find(|r| r.name == "magnitude-k0.2-s1-base")
        .unwrap();
    let at = mag.args.iter().position(|a| a == "--kept-ratio").unwrap();
    assert_eq!(mag.args[at + 1], "0.2");
    assert!(!mag.args.iter().any(|a| a.starts_with("train.lr=0.003")));
    assert!(
        mag.args.contains(&"data.task=\"csv\"".to_string()),
        "{:?}",
        mag.args
    );
    // The same file expands the same way again.
    assert_eq!(sweep::plan(&f, None).unwrap().runs, plan.runs);
    // --output moves the root.
    let other = sweep::plan(&f, Some(&d.path().join("elsewhere"))).unwrap();
    assert_eq!(
        other.runs[0].output,
        d.path().join("elsewhere/finetune-s1-base")
    );
}

fn fabricate(
    root: &Path,
    index: usize,
    recipe: &str,
    k: Option<f64>,
    seed: u64,
    summary: Option<Value>,
) {
    let name = match k {
        Some(k) => format!("{recipe}-k{k}-s{seed}"),
        None => format!("{recipe}-s{seed}"),
    };
    let out = root.join(&name);
    let rec = RunRecord {
        run: Run {
            index,
            name: name.clone(),
            recipe: recipe.into(),
            tag: None,
            kept_ratio: k,
            seed,
            phase: k.is_some() as u8,
            depends_on: None,
            metric: None,
            args: vec!["compress".into()],
            output: out.clone(),
        },
        exit_code: Some(0),
        signal: None,
        wall_seconds: Some(1.0),
        log: root.join("logs").join(format!("{name}.log")),
    };
    std::fs::create_dir_all(root.join("logs")).unwrap();
    std::fs::write(
        sweep::record_path(root, &name),
        serde_json::to_string(&rec).unwrap(),
    )
    .unwrap();
    if let Some(s) = summary {
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("summary.json"), s.to_string()).unwrap();
    }
}

#[test]
fn sweep_collects_mean_and_sd_over_seeds() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let compress = |acc: f64, kept: f64, secs: f64, sps: f64| {
        serde_json::json!({
            "method": "movement", "kept_ratio": kept, "stopped": false,
            "dev_metrics": [["accuracy", acc], ["f1", acc / 2.0]], "main_metric": acc,
            "train_seconds": secs, "samples_per_second": sps
        })
    };
    fabricate(
        root,
        0,
        "finetune",
        None,
        1,
        Some(serde_json::json!({
            "final_eval": {"metrics": [["accuracy", 0.9]], "main": "accuracy", "loss": 0.1},
            "train_seconds": 4.0, "samples_per_second": 100.0
        })),
    );
    fabricate(
        root,
        1,
        "movement",
        Some(0.2),
        1,
        Some(compress(0.5, 0.2, 10.0, 50.0)),
    );
    fabricate(
        root,
        2,
        "movement",
        Some(0.2),
        2,
        Some(compress(0.6, 0.2, 12.0, 60.0)),
    );
    fabricate(
        root,
        3,
        "movement",
        Some(0.2),
        3,
        Some(compress(0.7, 0.2, 14.0, 70.0)),
    );
    fabricate(
        root,
        4,
        "movement",
        Some(0.1),
        1,
        Some(compress(0.55, 0.1, 1.0, 1.0)),
    );
    fabricate(root, 5, "movement", Some(0.1), 2, None);
    let t = sweep::collect(root).unwrap();
    assert_eq!(t.cells.len(), 3);
    let ft = &t.cells[0];
    assert_eq!(
        (ft.recipe.as_str(), ft.target_kept_ratio, ft.mean, ft.sd),
        ("finetune", None, 0.9, None)
    );
    assert_eq!(ft.kept_ratio, 1.0);
    let m = &t.cells[1];
    assert_eq!(m.target_kept_ratio, Some(0.2));
    assert_eq!(m.metric, "accuracy");
    assert_eq!(m.seeds, vec![1, 2, 3]);
    assert!((m.mean - 0.6).abs() < 1e-12, "{}", m.mean);
    // Sample sd of 0.5, 0.6, 0.7.
    assert!((m.sd.unwrap() - 0.1).abs() < 1e-12, "{:?}", m.sd);
    assert!((m.train_seconds - 12.0).abs() < 1e-12);
    assert!((m.samples_per_second - 60.0).abs() < 1e-12);
    let k1 = &t.cells[2];
    assert_eq!(k1.seeds, vec![1]);
    assert_eq!(k1.missing, vec!["movement-k0.1-s2".to_string()]);
    let md = t.markdown();
    assert!(
        md.contains("| movement | 0.2 | 0.2000 | accuracy | 0.6000 ± 0.1000 | 3 | 12.0 | 60.0 |"),
        "{md}"
    );
    assert!(
        md.contains("| movement | 0.1 | 0.1000 | accuracy | 0.5500 | 1 of 2 |"),
        "{md}"
    );
    assert!(md.contains("Not finished: movement-k0.1-s2"), "{md}");
    // The command-line collect writes both files; the JSON lines parse back.
    let o = lpaf(&["sweep", "--collect", &p(root)]);
    assert!(o.status.success(), "{}", text(&o));
    let jl = std::fs::read_to_string(root.join("results.jsonl")).unwrap();
    let rows: Vec<Value> = jl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["seeds"], serde_json::json!([1, 2, 3]));
    assert_eq!(
        std::fs::read_to_string(root.join("results.md")).unwrap(),
        md
    );
}

/// The table's fields that do not depend on timing.
fn table_values(root: &Path) -> Vec<Value> {
    std::fs::read_to_string(root.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let m = v.as_object_mut().unwrap();
            m.remove("train_seconds");
            m.remove("samples_per_second");
            v
        })
        .collect()
}

#[test]
fn sweep_skips_finished_and_resumes_interrupted_runs() {
    let d = tempfile::tempdir().unwrap();
    setup(d.path());
    // Long enough (a checkpoint every step) to be killed part way.
    let f = sweep_file_with(
        d.path(),
        "recipes = [\"magnitude\", \"movement\"]\nkept_ratios = [0.2]\nseeds = [1, 2]\n",
        "\"train.steps\" = 150\n\"train.checkpoint_every\" = 1\n\"train.eval_every\" = 50\n",
    );
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    // Uninterrupted, two at a time.
    let o = lpaf(&["sweep", &p(&f), "--output", &p(&a), "--jobs", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let full = table_values(&a);
    assert_eq!(full.len(), 2, "{full:?}");
    for c in &full {
        assert_eq!(c["seeds"], serde_json::json!([1, 2]), "{c}");
        assert!(c["mean"].as_f64().unwrap() > 0.0);
        assert!(c["sd"].is_number(), "{c}");
    }
    // The other root: run 0 alone (as a Slurm task would), run 1 killed
    // once it has a checkpoint (it leaves no summary).
    let o = lpaf(&["sweep", &p(&f), "--output", &p(&b), "--run-index", "0"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = lpaf(&["sweep", &p(&f), "--output", &p(&b), "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    let listing = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<&str> = listing.lines().skip(1).collect();
    assert_eq!(lines.len(), 4, "{listing}");
    let run1: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!(run1[1], "movement-k0.2-s1");
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("exec {}", run1[3]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = b.join("movement-k0.2-s1/checkpoint");
    let t0 = std::time::Instant::now();
    while !ckpt.is_dir() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(t0.elapsed().as_secs() < 120, "no checkpoint after 2 min");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !b.join("movement-k0.2-s1/summary.json").exists(),
        "the run finished before it was killed: the test needs longer runs"
    );
    let o = lpaf(&["sweep", &p(&f), "--output", &p(&b), "--dry-run"]);
    let listing = String::from_utf8_lossy(&o.stdout).to_string();
    let states: Vec<&str> = listing
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(2).unwrap())
        .collect();
    assert_eq!(
        states,
        ["finished (skipped)", "interrupted (resumes)", "new", "new"],
        "{listing}"
    );
    let o = lpaf(&["sweep", &p(&f), "--output", &p(&b)]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("magnitude-k0.2-s1: finished before, skipped"),
        "{out}"
    );
    assert!(out.contains("movement-k0.2-s1: resuming"), "{out}");
    assert!(out.contains("resumed from its checkpoint"), "{out}");
    assert_eq!(table_values(&b), full);
    // A third call runs nothing.
    let o = lpaf(&["sweep", &p(&f), "--output", &p(&b)]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert_eq!(out.matches("finished before, skipped").count(), 4, "{out}");

    // What each summary records for a reproduction.
    let s: Value = serde_json::from_str(
        &std::fs::read_to_string(b.join("movement-k0.2-s2/summary.json")).unwrap(),
    )
    .unwrap();
    let r = &s["reproduction"];
    assert_eq!(r["lpaf_version"], env!("CARGO_PKG_VERSION"));
    let commit = r["git_commit"].as_str().unwrap();
    assert!(
        commit == "unknown"
            || (commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );
    let cuda = lpaf::device::BUILD_CUDA_VERSION;
    assert_eq!(
        r["build_cuda_version"],
        format!("{}.{}", cuda / 1000, cuda % 1000 / 10)
    );
    assert!(
        r["machine"]["device"].as_str().unwrap().starts_with("cpu"),
        "{r}"
    );
    assert!(!r["machine"]["cpu_model"].as_str().unwrap().is_empty());
    assert_eq!(r["precision"], "f32");
    assert_eq!(r["seed"], 2);
    // The recipe with its defaults: set keys and ones the file never named.
    // train.lr is an f32.
    assert!(
        (r["config"]["train"]["lr"].as_f64().unwrap() - 1e-3).abs() < 1e-9,
        "{r}"
    );
    assert_eq!(r["config"]["target"]["kept_ratio"], 0.2);
    assert_eq!(r["config"]["pruning"]["score_init"], "magnitude");
    assert!(r["config"]["train"]["weight_decay"].is_number(), "{r}");
    let sha = |x: &Path| -> String {
        Sha256::digest(std::fs::read(x).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let train = d.path().join("train.csv");
    assert_eq!(r["data_sha256"][p(&train)], sha(&train), "{r}");
    let weights = crate::common::fixture("tiny-bert-cls").join("model.safetensors");
    assert_eq!(r["model_weights"]["sha256"], sha(&weights), "{r}");
}

#[test]
fn sweep_failing_run_is_reported_and_the_others_finish() {
    let d = tempfile::tempdir().unwrap();
    setup(d.path());
    let f = sweep_file(
        d.path(),
        "recipes = [\"broken\", \"magnitude\"]\nkept_ratios = [0.2]\nseeds = [3]\n",
    );
    let o = lpaf(&["sweep", &p(&f)]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    let log = d.path().join("root/logs/broken-k0.2-s3.log");
    assert!(out.contains("broken-k0.2-s3: FAILED: exit code 1"), "{out}");
    assert!(out.contains(&p(&log)), "{out}");
    assert!(out.contains("1 of 2 runs failed"), "{out}");
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("no_such_key"));
    assert!(d
        .path()
        .join("root/magnitude-k0.2-s3/summary.json")
        .is_file());
    let md = std::fs::read_to_string(d.path().join("root/results.md")).unwrap();
    assert!(md.contains("Not finished: broken-k0.2-s3"), "{md}");
}

#[test]
fn sweep_emits_resumable_slurm_arrays() {
    let d = tempfile::tempdir().unwrap();
    setup(d.path());
    let f = sweep_file(
        d.path(),
        "recipes = [\"finetune\", \"magnitude\", \"svd\"]\nkept_ratios = [0.2, 0.1]\n\
         seeds = [1, 2, 3]\nstart_from_finetune = [\"svd\"]\n",
    );
    let o = lpaf(&[
        "sweep",
        &p(&f),
        "--emit",
        "slurm",
        "--sbatch=--partition=a100",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let root = d.path().join("root");
    let dir = root.join("slurm");
    // Nothing ran.
    assert!(!root.join("finetune-s1").exists());
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
    let (ft, runs, collect, submit) = (
        read("finetune.sbatch"),
        read("runs.sbatch"),
        read("collect.sbatch"),
        read("submit.sh"),
    );
    for n in [
        "finetune.sbatch",
        "runs.sbatch",
        "collect.sbatch",
        "submit.sh",
    ] {
        let b = Command::new("bash")
            .arg("-n")
            .arg(dir.join(n))
            .output()
            .unwrap();
        assert!(b.status.success(), "{n}: {}", text(&b));
    }
    // 3 fine-tuning runs, then 2 ratios × 2 recipes × 3 seeds: every index once.
    assert!(ft.contains("#SBATCH --array=0-2\n"), "{ft}");
    assert!(runs.contains("#SBATCH --array=3-14\n"), "{runs}");
    let plan = sweep::plan(&f, None).unwrap();
    assert_eq!(plan.runs.len(), 15);
    for s in [&ft, &runs] {
        assert!(s.contains("#SBATCH --partition=a100\n"), "{s}");
        assert!(s.contains("#SBATCH --gres=gpu:1\n"), "{s}");
        assert!(s.contains("--run-index \"$SLURM_ARRAY_TASK_ID\""), "{s}");
        assert!(s.contains(&format!("--output {}", p(&root))), "{s}");
        assert!(s.contains(env!("CARGO_BIN_EXE_lpaf")), "{s}");
    }
    assert!(
        collect.contains(&format!("sweep --collect {}", p(&root))),
        "{collect}"
    );
    assert!(submit.contains("--dependency=afterany:$FT "), "{submit}");
    assert!(
        submit.contains("--dependency=afterany:$FT:$RUNS"),
        "{submit}"
    );
    // An array task's command is the resumable one-run command.
    let task = runs
        .lines()
        .find(|l| l.starts_with("exec "))
        .unwrap()
        .trim_start_matches("exec ")
        .replace("\"$SLURM_ARRAY_TASK_ID\"", "99");
    let o = Command::new("bash").arg("-c").arg(&task).output().unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("--run-index 99: "), "{}", text(&o));
    if Command::new("sbatch").arg("--version").output().is_ok() {
        for n in ["finetune.sbatch", "runs.sbatch", "collect.sbatch"] {
            let t = Command::new("sbatch")
                .arg("--test-only")
                .arg(dir.join(n))
                .output()
                .unwrap();
            assert!(t.status.success(), "sbatch --test-only {n}: {}", text(&t));
        }
    } else {
        eprintln!("sweep_emits_resumable_slurm_arrays: no sbatch here; checked with bash -n only");
    }
}

#[test]
fn bad_sweep_files_name_the_file_and_the_key() {
    let d = tempfile::tempdir().unwrap();
    setup(d.path());
    let cases: &[(&str, &[&str])] = &[
        ("recipes = [\"magnitude\"]\nkept_ratios = [0.2]\nseeds = [1]\nseedz = [2]\n", &["seedz"]),
        ("recipes = [\"magnitude\"]\nkept_ratios = [0.2]\nseeds = []\n", &["`seeds` is empty"]),
        ("recipes = []\nkept_ratios = [0.2]\nseeds = [1]\n", &["`recipes` is empty"]),
        ("recipes = [\"magnitude\"]\nkept_ratios = []\nseeds = [1]\n", &["`kept_ratios` is empty"]),
        ("recipes = [\"magnitude\"]\nkept_ratios = [1.5]\nseeds = [1]\n", &["kept_ratios", "1.5"]),
        ("recipes = [\"nosuch\"]\nkept_ratios = [0.2]\nseeds = [1]\n", &["`recipes`", "nosuch"]),
        ("recipes = [\"magnitude\"]\nkept_ratios = [0.2]\n", &["seeds"]),
        (
            "recipes = [\"magnitude\", \"svd\"]\nkept_ratios = [0.2]\nseeds = [1]\nstart_from_finetune = [\"svd\"]\n",
            &["start_from_finetune", "finetune"],
        ),
        (
            "recipes = [\"magnitude\"]\nkept_ratios = [0.2]\nseeds = [1]\n[[overrides]]\ntag = \"a b\"\n",
            &["overrides[0].tag"],
        ),
        (
            "recipes = [\"magnitude\"]\nkept_ratios = [0.2]\nseeds = [1]\n[recipe_set.lpaf]\n\"lpaf.p0\" = 0.1\n",
            &["recipe_set.lpaf", "not in `recipes`"],
        ),
    ];
    for (head, want) in cases {
        let f = sweep_file(d.path(), head);
        let o = lpaf(&["sweep", &p(&f), "--dry-run"]);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success(), "{head}");
        assert!(err.contains(&p(&f)), "{head}: {err}");
        for w in *want {
            assert!(err.contains(w), "{head}: wanted '{w}' in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
    let o = lpaf(&["sweep", "--collect", &p(&d.path().join("nothing"))]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not a sweep root"), "{}", text(&o));
}
