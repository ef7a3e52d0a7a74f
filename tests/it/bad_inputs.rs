//! Bad inputs (issue 13, input half): the compressed-format validator, bench
//! and flag bounds, a closed stdout pipe, recipe budgets, and CSV / TSV
//! quoting and field counts. Every case must be a clear error naming what is
//! wrong, never a panic or a silently wrong result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lpaf::compress::format::{
    export_dense, load_compressed, recount, validate_dir, COMPRESSION_FILE,
};
use lpaf::compress::pipeline::run_recipe;
use lpaf::model::bert::linear_prefix;
use lpaf::model::io::{read_safetensors, write_safetensors, FloatFormat, HostData, HostTensor};

use crate::compress::{recipe, write_task};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lpaf"))
}

/// Runs the binary; returns (exit code, stderr). A panic (101) or a signal
/// fails the test here, whatever the caller expects.
fn lpaf(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 1,
        "exit {code} (panic or signal): {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    (code, err)
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// A LoSparse-compressed tiny model (every matrix low-rank + sparse).
fn compressed(d: &Path) -> PathBuf {
    write_task(d);
    let r = recipe("losparse", d, "ls", &[]);
    run_recipe(&lpaf::backend::CpuBackend::new(), &r, false, true).unwrap();
    d.join("ls/compressed")
}

fn edit(src: &Path, dst: &Path, f: impl FnOnce(&mut BTreeMap<String, HostTensor>)) {
    copy_dir(src, dst);
    let mut t = read_safetensors(&dst.join("model.safetensors")).unwrap();
    f(&mut t);
    write_safetensors(&dst.join("model.safetensors"), &t, FloatFormat::F32, None).unwrap();
}

fn ints(t: &HostTensor) -> Vec<i64> {
    t.as_i64("t").unwrap()
}

fn set_ints(t: &mut HostTensor, v: Vec<i64>) {
    t.shape = vec![v.len()];
    t.data = HostData::I64(v);
}

/// Every consumer of a compressed directory refuses it with `want` in the
/// message: the validator, loading (eval), export and the `info` recount,
/// and the binary's `info`, `info --rank` and `export --dense` exit 1.
fn refused_everywhere(dir: &Path, want: &str) {
    let be = lpaf::backend::CpuBackend::new();
    let e = validate_dir(dir)
        .err()
        .expect("validator accepted")
        .to_string();
    assert!(e.contains(want), "validator: {e}");
    let e = load_compressed(&be, dir, 0)
        .err()
        .expect("loading accepted")
        .to_string();
    assert!(e.contains(want), "load: {e}");
    let out = dir.with_extension("export");
    let e = export_dense(&be, dir, &out).unwrap_err().to_string();
    assert!(e.contains(want), "export: {e}");
    assert!(!out.exists(), "export wrote {}", out.display());
    assert!(recount(dir).is_err());
    let d = dir.to_str().unwrap();
    for args in [
        vec!["info", d],
        vec!["info", "--rank", d],
        vec!["info", "--json", d],
    ] {
        let (code, err) = lpaf(&args);
        assert_eq!(code, 1, "{args:?} accepted: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let o = out.to_str().unwrap();
    let (code, err) = lpaf(&["export", "--dense", d, o]);
    assert_eq!(code, 1, "export --dense accepted");
    assert!(err.contains(want), "{err}");
}

#[test]
fn compressed_format_validator_refuses_every_malformed_part() {
    let tmp = tempfile::tempdir().unwrap();
    let comp = compressed(tmp.path());
    // The untouched directory validates, and compression.json equals the recount.
    let v = validate_dir(&comp).unwrap();
    let info = v.info.expect("compression.json read");
    assert_eq!(info.matrices, v.matrices);
    assert!(
        v.matrices.iter().all(|m| m.form == "lowrank+sparse"),
        "{:?}",
        v.matrices
    );
    let p = linear_prefix(1, 2);
    let name = |s: &str| format!("{p}.{s}");
    let case = |n: &str| tmp.path().join(n);
    let t0 = read_safetensors(&comp.join("model.safetensors")).unwrap();
    let r = t0[&name("lowrank_u")].shape[1];
    let (o, i) = (
        t0[&name("lowrank_u")].shape[0],
        t0[&name("lowrank_v")].shape[1],
    );

    edit(&comp, &case("no_indptr"), |t| {
        t.remove(&name("sparse_indptr"));
    });
    refused_everywhere(
        &case("no_indptr"),
        &format!("'{}' missing", name("sparse_indptr")),
    );

    edit(&comp, &case("no_v"), |t| {
        t.remove(&name("lowrank_v"));
    });
    refused_everywhere(
        &case("no_v"),
        &format!("'{}' is missing", name("lowrank_v")),
    );

    // U and V both gone: a valid sparse-only matrix, but not what
    // compression.json says the directory holds.
    edit(&comp, &case("no_uv"), |t| {
        t.remove(&name("lowrank_u"));
        t.remove(&name("lowrank_v"));
    });
    refused_everywhere(&case("no_uv"), "compression.json");

    edit(&comp, &case("u_rows"), |t| {
        t.insert(
            name("lowrank_u"),
            HostTensor::f32(&[o + 1, r], vec![0.5; (o + 1) * r]),
        );
    });
    refused_everywhere(
        &case("u_rows"),
        &format!("'{}' has shape [{}, {r}]", name("lowrank_u"), o + 1),
    );

    edit(&comp, &case("u_rank"), |t| {
        t.insert(
            name("lowrank_u"),
            HostTensor::f32(&[o, r + 1], vec![0.5; o * (r + 1)]),
        );
    });
    refused_everywhere(&case("u_rank"), &format!("expected [{}, {i}]", r + 1));

    edit(&comp, &case("v_short"), |t| {
        t.insert(
            name("lowrank_v"),
            HostTensor::f32(&[r, i - 1], vec![0.5; r * (i - 1)]),
        );
    });
    refused_everywhere(
        &case("v_short"),
        &format!("'{}' has shape [{r}, {}]", name("lowrank_v"), i - 1),
    );

    // CSR: find a row with two entries for the duplicate / unsorted cases.
    let ptr = ints(&t0[&name("sparse_indptr")]);
    let idx0 = ints(&t0[&name("sparse_indices")]);
    let row = (0..o)
        .find(|&k| ptr[k + 1] - ptr[k] >= 2)
        .expect("a row with 2 entries");
    let a = ptr[row] as usize;
    edit(&comp, &case("dup"), |t| {
        let mut idx = idx0.clone();
        idx[a + 1] = idx[a];
        set_ints(t.get_mut(&name("sparse_indices")).unwrap(), idx);
    });
    refused_everywhere(
        &case("dup"),
        &format!("row {row} are not sorted and unique"),
    );
    edit(&comp, &case("unsorted"), |t| {
        let mut idx = idx0.clone();
        idx.swap(a, a + 1);
        set_ints(t.get_mut(&name("sparse_indices")).unwrap(), idx);
    });
    refused_everywhere(&case("unsorted"), "not sorted and unique");
    edit(&comp, &case("out_of_range"), |t| {
        let mut idx = idx0.clone();
        let last = ptr[row + 1] as usize - 1;
        idx[last] = i as i64 + 7;
        set_ints(t.get_mut(&name("sparse_indices")).unwrap(), idx);
    });
    refused_everywhere(
        &case("out_of_range"),
        &format!("column index {} at row {row}", i + 7),
    );
    edit(&comp, &case("indptr_end"), |t| {
        let mut q = ptr.clone();
        q[o] -= 1;
        set_ints(t.get_mut(&name("sparse_indptr")).unwrap(), q);
    });
    refused_everywhere(&case("indptr_end"), "ends at");
    edit(&comp, &case("indptr_down"), |t| {
        let mut q = ptr.clone();
        q[row + 1] = q[row] - 1;
        set_ints(t.get_mut(&name("sparse_indptr")).unwrap(), q);
    });
    refused_everywhere(&case("indptr_down"), "decreases");

    // compression.json: missing, truncated, bogus.
    copy_dir(&comp, &case("no_json"));
    std::fs::remove_file(case("no_json").join(COMPRESSION_FILE)).unwrap();
    refused_everywhere(&case("no_json"), "compression.json: missing");
    copy_dir(&comp, &case("cut_json"));
    let text = std::fs::read_to_string(comp.join(COMPRESSION_FILE)).unwrap();
    std::fs::write(
        case("cut_json").join(COMPRESSION_FILE),
        &text[..text.len() / 2],
    )
    .unwrap();
    refused_everywhere(&case("cut_json"), "malformed");
    copy_dir(&comp, &case("bogus_json"));
    let mut j: serde_json::Value = serde_json::from_str(&text).unwrap();
    j["matrices"][3]["rank"] = serde_json::json!(1);
    std::fs::write(case("bogus_json").join(COMPRESSION_FILE), j.to_string()).unwrap();
    refused_everywhere(&case("bogus_json"), "compression.json: says");
}

#[test]
fn bench_refuses_absurd_sizes_before_allocating() {
    for s in ["inf", "nan", "1e30", "0", "-1"] {
        let (code, err) = lpaf(&[
            "bench",
            "kernels",
            "--device",
            "cpu",
            &format!("--scale={s}"),
        ]);
        assert_eq!(code, 1, "--scale {s} accepted");
        assert!(err.contains("--scale") && err.contains("(0, 4]"), "{err}");
    }
    let (code, err) = lpaf(&["bench", "train", "--device", "cpu", "--seq", "100000"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--seq 100000") && err.contains("max_position_embeddings"),
        "{err}"
    );
    let (code, err) = lpaf(&["bench", "train", "--device", "cpu", "--batch", "100000000"]);
    assert_eq!(code, 1);
    assert!(err.contains("--batch"), "{err}");
}

#[test]
fn a_closed_stdout_pipe_is_a_quiet_exit() {
    let m = crate::common::fixture("tiny-bert-cls");
    for args in [vec!["info", "--json"], vec!["info"], vec!["info", "--rank"]] {
        let mut child = Command::new(bin())
            .args(&args)
            .arg(&m)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before lpaf writes (it is still loading).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
        assert!(!err.contains("panicked"), "{err}");
    }
    // A full disk behind a redirect is still an error.
    let full = std::fs::File::create("/dev/full");
    if let Ok(f) = full {
        let out = Command::new(bin())
            .arg("info")
            .arg(&m)
            .stdout(f)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("standard output"));
    }
}

/// finetune on the fixture with extra flags; returns (code, stderr).
fn finetune(d: &Path, extra: &[&str]) -> (i32, String) {
    write_task(d);
    let m = crate::common::fixture("tiny-bert-cls");
    let train = d.join("train.csv");
    let out = d.join("out");
    let mut args = vec![
        "finetune",
        "--device",
        "cpu",
        "--quiet",
        "--task",
        "csv",
        "--text-a",
        "sentence",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--model",
        m.to_str().unwrap(),
        "--train",
        train.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    lpaf(&args)
}

#[test]
fn flag_values_are_checked_at_startup() {
    let d = tempfile::tempdir().unwrap();
    for (flag, key) in [
        ("--lr=-1", "train.lr"),
        ("--lr=0", "train.lr"),
        ("--lr=nan", "train.lr"),
        ("--lr=inf", "train.lr"),
        ("--warmup-ratio=2", "train.warmup_ratio"),
        ("--warmup-ratio=-0.1", "train.warmup_ratio"),
        ("--max-seq-len=100000", "max_position_embeddings = 64"),
    ] {
        let (code, err) = finetune(d.path(), &[flag]);
        assert_eq!(code, 1, "{flag} accepted");
        assert!(err.contains(key), "{flag}: {err}");
        assert!(
            !d.path().join("out/log.jsonl").exists(),
            "{flag}: training started"
        );
    }
    // The same run with sane values trains (the checks are not over-eager).
    let (code, err) = finetune(
        d.path(),
        &["--lr=1e-3", "--warmup-ratio=0.5", "--max-seq-len=32"],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn non_bert_model_type_is_refused_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("gpt");
    copy_dir(&crate::common::fixture("tiny-bert-cls"), &m);
    let p = m.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    c["model_type"] = serde_json::json!("gpt2");
    std::fs::write(&p, c.to_string()).unwrap();
    let e = lpaf::model::config::BertConfig::load(&p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("config.json") && e.contains("gpt2"), "{e}");
    let (code, err) = lpaf(&["info", m.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("config.json") && err.contains("model_type"),
        "{err}"
    );
}

#[test]
fn inconsistent_budgets_are_refused_before_training() {
    let d = tempfile::tempdir().unwrap();
    write_task(d.path());
    let be = lpaf::backend::CpuBackend::new();
    let run = |method: &str, sets: &[(&str, &str)]| -> String {
        let r = recipe(method, d.path(), method, sets);
        let e = run_recipe(&be, &r, false, true)
            .err()
            .expect("accepted")
            .to_string();
        assert!(
            !d.path().join(method).join("log.jsonl").exists(),
            "{e}: trained"
        );
        e
    };
    // Rank 64 of 64×64 and 128×64 matrices: kept 1.5 for a 0.1 target.
    let e = run("svd", &[("svd.rank", "64"), ("target.kept_ratio", "0.1")]);
    assert!(
        e.contains("svd.rank = 64") && e.contains("target.kept_ratio"),
        "{e}"
    );
    for m in ["svd", "lpaf"] {
        let e = run(m, &[("target.kept_ratio", "1e-9")]);
        assert!(
            e.contains("rank 1") && e.contains("target.kept_ratio"),
            "{m}: {e}"
        );
    }
    let e = run(
        "losparse",
        &[("losparse.final_kept", "0.5"), ("target.kept_ratio", "0.1")],
    );
    assert!(
        e.contains("losparse.final_kept = 0.5") && e.contains("target.kept_ratio = 0.1"),
        "{e}"
    );
    // A final_kept consistent with the target is accepted (checked up to training).
    let r = recipe("losparse", d.path(), "ok", &[("target.kept_ratio", "0.6")]);
    let cfg =
        lpaf::model::config::BertConfig::load(&crate::common::fixture("tiny-bert-cls/config.json"))
            .unwrap();
    lpaf::compress::pipeline::check_budgets(&r, &cfg).unwrap();
}

#[test]
fn rank_allocation_keeps_every_matrix_at_rank_one() {
    use lpaf::compress::rank::{allocate, RankAllocation};
    let shapes = vec![(8, 8), (8, 8), (16, 8)];
    let svals = vec![vec![100.0, 50.0, 1.0], vec![0.1, 0.01], vec![1e-3, 1e-4]];
    // 56 parameters = one rank each, exactly.
    for k in [RankAllocation::Energy, RankAllocation::Uniform] {
        let r = allocate(k, &svals, &shapes, 56).unwrap();
        assert_eq!(r, vec![1, 1, 1], "{k:?}");
        let e = allocate(k, &svals, &shapes, 55).unwrap_err().to_string();
        assert!(
            e.contains("rank 1") && e.contains("target.kept_ratio"),
            "{e}"
        );
    }
    // The rest of a larger budget goes by energy: matrix 0's σ₂ = 50 first.
    assert_eq!(
        allocate(RankAllocation::Energy, &svals, &shapes, 72).unwrap(),
        vec![2, 1, 1]
    );
}

#[test]
fn unterminated_quotes_and_extra_fields_name_the_line() {
    use lpaf::data::{read_table, TableFormat, TableSpec};
    let d = tempfile::tempdir().unwrap();
    let spec = |f| TableSpec {
        format: f,
        text_a: "sentence".into(),
        text_b: None,
        label: Some("label".into()),
    };
    // 31 data rows; row 11 (line 12) opens a quote that never closes.
    let mut s = String::from("sentence,label\n");
    for k in 0..31 {
        if k == 10 {
            s.push_str("\"an unterminated quote,1\n");
        } else {
            s.push_str(&format!("row {k},{}\n", k % 2));
        }
    }
    let p = d.path().join("open.csv");
    std::fs::write(&p, &s).unwrap();
    let e = read_table(&p, &spec(TableFormat::Csv), true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("open.csv:12:") && e.contains("unterminated quote"),
        "{e}"
    );
    // The same quote closed by a later row's quote: the text after it shows it.
    let s2 = s.replace("row 30,0", "\"quoted\" row,0");
    let p2 = d.path().join("closed.csv");
    std::fs::write(&p2, &s2).unwrap();
    let e = read_table(&p2, &spec(TableFormat::Csv), true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("closed.csv:12:") && e.contains("closes on line 32"),
        "{e}"
    );
    // RFC 4180 fields spanning lines and doubled quotes still read.
    let p3 = d.path().join("ok.csv");
    std::fs::write(
        &p3,
        "sentence,label\n\"two\nlines, \"\"quoted\"\"\",1\nplain,0\n",
    )
    .unwrap();
    let rows = read_table(&p3, &spec(TableFormat::Csv), true).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].text_a, "two\nlines, \"quoted\"");
    assert_eq!((rows[1].text_a.as_str(), rows[1].line), ("plain", 4));
    // A TSV row with more fields than the header.
    let p4 = d.path().join("extra.tsv");
    std::fs::write(&p4, "sentence\tlabel\ngood\t1\nbad\t0\tstray\n").unwrap();
    let e = read_table(&p4, &spec(TableFormat::Tsv), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("extra.tsv:3:") && e.contains("found 3"), "{e}");
    // The same in a GLUE file (SST-2 has a header).
    let p5 = d.path().join("train.tsv");
    std::fs::write(&p5, "sentence\tlabel\ngood\t1\nbad\t0\tstray\n").unwrap();
    let e = lpaf::data::read_glue(lpaf::data::GlueTask::Sst2, &p5, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train.tsv:3:") && e.contains("more than the header's 2"),
        "{e}"
    );
    // And in the polarity reader (fully quoted CSV).
    let p6 = d.path().join("polarity.csv");
    std::fs::write(
        &p6,
        "\"1\",\"good \n\"\r\n\"-1\",\"bad \n\r\n\"1\",\"fine \n\"\r\n",
    )
    .unwrap();
    let e = lpaf::data::read_polarity(&p6).unwrap_err().to_string();
    assert!(e.contains("polarity.csv:3:"), "{e}");
}

/// The panics the fuzzer found in the tokenizers crate, now errors naming the
/// file: a syntax error inside `decoder`, a template that uses a special
/// token `special_tokens` does not define, and the same under a processor
/// "type" that is not a string.
#[test]
fn malformed_tokenizer_json_is_an_error_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let src =
        std::fs::read_to_string(crate::common::fixture("tiny-bert-cls/tokenizer.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&src).unwrap();
    // The unmodified file loads (the check is not over-eager).
    std::fs::write(d.path().join("tokenizer.json"), &src).unwrap();
    lpaf::data::Tokenizer::from_dir(d.path()).unwrap();
    let rejected = |text: &str| -> String {
        std::fs::write(d.path().join("tokenizer.json"), text).unwrap();
        lpaf::data::Tokenizer::from_dir(d.path())
            .err()
            .expect("accepted")
            .to_string()
    };
    let cut = src.find("\"decoder\"").expect("fixture has a decoder") + 20;
    let e = rejected(&src[..cut]);
    assert!(
        e.contains("tokenizer.json") && e.contains("malformed"),
        "{e}"
    );
    v["post_processor"]["special_tokens"]
        .as_object_mut()
        .unwrap()
        .remove("[CLS]");
    let e = rejected(&v.to_string());
    assert!(e.contains("tokenizer.json") && e.contains("`[CLS]`"), "{e}");
    // The crate still loads the template under this "type", so the check
    // goes by the template's shape.
    v["post_processor"]["type"] = serde_json::json!({});
    let e = rejected(&v.to_string());
    assert!(e.contains("tokenizer.json") && e.contains("`[CLS]`"), "{e}");
}
