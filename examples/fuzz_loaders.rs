//! Structured fuzzing of every loader on stable Rust (`scripts/fuzz.sh`).
//!
//! Each loader starts from valid seed files (built here from the test
//! fixtures) and gets inputs mutated structurally: byte flips, insertions,
//! deletions, truncation, splices; JSON / TOML values edited in place (types
//! swapped, numbers made huge, negative or fractional, keys dropped, arrays
//! doubled); safetensors headers edited (shapes, dtypes, offsets, the header
//! length itself); quotes, delimiters and newlines dropped into tables. The
//! mutation choices are drawn with `arbitrary::Unstructured` from a seeded
//! ChaCha stream, so a run is reproducible from its seed.
//!
//! Asserted for every input: no panic (each call under `catch_unwind`), no
//! hang (a watchdog aborts when one input runs past `--timeout` seconds), and
//! bounded memory (the global allocator aborts on any single allocation
//! over 256 MiB + 64 × the input's size: a loader that trusts a length field
//! it read). A failing input is saved under `fuzz-failures/`.
//!
//! Usage: `fuzz_loaders [--inputs N] [--seconds S] [--seed K] [--timeout T] [--only NAME]`.
//! Runs the loaders in turn, half a second each, until N inputs in total or
//! S seconds; prints inputs, errors and panics per loader.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use lpaf::backend::prelude::*;

use lpaf::backend::CpuBackend;
use lpaf::model::io::{read_safetensors, write_safetensors, FloatFormat, HostData, HostTensor};

// ---------------------------------------------------------------- memory bound

struct Bounded;
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static OVER: AtomicBool = AtomicBool::new(false);

unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() > LIMIT.load(Ordering::Relaxed) && !OVER.swap(true, Ordering::Relaxed) {
            // No allocation may happen here: write the message by hand.
            let msg = b"fuzz: an allocation exceeded the memory bound for this input\n";
            let _ = std::io::Write::write_all(&mut std::io::stderr(), msg);
            save_current();
            std::process::abort();
        }
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if n > LIMIT.load(Ordering::Relaxed) && !OVER.swap(true, Ordering::Relaxed) {
            let msg = b"fuzz: a reallocation exceeded the memory bound for this input\n";
            let _ = std::io::Write::write_all(&mut std::io::stderr(), msg);
            save_current();
            std::process::abort();
        }
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Bounded = Bounded;

/// The input under test is always kept in `WORK/current` (written before
/// the call); on abort it is copied to `fuzz-failures/` by the script.
fn save_current() {}

// ------------------------------------------------------------------- mutators

fn byte_mutation(u: &mut Unstructured<'_>, b: &mut Vec<u8>) -> arbitrary::Result<()> {
    let interesting: [&[u8]; 10] = [
        b"\"",
        b",",
        b"\t",
        b"\n",
        b"\r\n",
        b"\xef\xbb\xbf",
        b"\xff\xfe",
        b"0",
        b"-1",
        b"18446744073709551615",
    ];
    let n = b.len();
    match u.int_in_range(0..=7)? {
        0 if n > 0 => {
            let i = u.choose_index(n)?;
            b[i] ^= 1 << u.int_in_range(0..=7)?;
        }
        1 if n > 0 => {
            let i = u.choose_index(n)?;
            b[i] = u.arbitrary()?;
        }
        2 => {
            let i = u.int_in_range(0..=n)?;
            let s = *u.choose(&interesting)?;
            b.splice(i..i, s.iter().copied());
        }
        3 if n > 0 => {
            let i = u.choose_index(n)?;
            let len = u.int_in_range(1..=(n - i).min(64))?;
            b.drain(i..i + len);
        }
        4 if n > 0 => {
            let cut = u.choose_index(n)?;
            b.truncate(cut);
        }
        5 if n > 0 => {
            let i = u.choose_index(n)?;
            let len = u.int_in_range(1..=(n - i).min(256))?;
            let chunk: Vec<u8> = b[i..i + len].to_vec();
            let j = u.int_in_range(0..=n)?;
            b.splice(j..j, chunk);
        }
        6 => {
            let i = u.int_in_range(0..=n)?;
            let k = u.int_in_range(1..=8)?;
            let bytes: Vec<u8> = (0..k).map(|_| u.arbitrary().unwrap_or(0)).collect();
            b.splice(i..i, bytes);
        }
        _ => {}
    }
    Ok(())
}

fn odd_number(u: &mut Unstructured<'_>) -> arbitrary::Result<serde_json::Value> {
    use serde_json::json;
    Ok(match u.int_in_range(0..=9)? {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(u64::MAX),
        3 => json!(1e308),
        4 => json!(-1e308),
        5 => json!(0.5),
        6 => json!(i64::MIN),
        7 => json!(1u64 << 40),
        8 => json!(u.int_in_range(0..=1024u32)?),
        _ => json!(3.0e9),
    })
}

fn json_leaf(u: &mut Unstructured<'_>) -> arbitrary::Result<serde_json::Value> {
    use serde_json::json;
    Ok(match u.int_in_range(0..=7)? {
        0 => serde_json::Value::Null,
        1 => json!(true),
        2 => json!(""),
        3 => json!("gpt2"),
        4 => json!([]),
        5 => json!({}),
        6 => json!([odd_number(u)?, odd_number(u)?]),
        _ => odd_number(u)?,
    })
}

/// A random node `depth` levels down (or the last one with children).
fn walk<'a>(
    u: &mut Unstructured<'_>,
    node: &'a mut serde_json::Value,
    depth: usize,
) -> &'a mut serde_json::Value {
    use serde_json::Value;
    let len = match &*node {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    if depth == 0 || len == 0 {
        return node;
    }
    let i = u.choose_index(len).unwrap_or(0);
    match node {
        Value::Object(m) => {
            let v = m.values_mut().nth(i).expect("index below len");
            walk(u, v, depth - 1)
        }
        Value::Array(a) => walk(u, &mut a[i], depth - 1),
        other => other,
    }
}

/// Edits one node of a JSON document in place.
fn json_mutation(u: &mut Unstructured<'_>, v: &mut serde_json::Value) -> arbitrary::Result<()> {
    let depth = u.int_in_range(0..=6)?;
    let node = walk(u, v, depth);
    match u.int_in_range(0..=5)? {
        0 | 1 => *node = json_leaf(u)?,
        2 => {
            if let serde_json::Value::Object(m) = node {
                if !m.is_empty() {
                    let k = m.keys().nth(u.choose_index(m.len())?).cloned().unwrap();
                    m.remove(&k);
                }
            }
        }
        3 => {
            if let serde_json::Value::Array(a) = node {
                let c = a.clone();
                a.extend(c);
            } else if let serde_json::Value::Number(n) = node {
                if let Some(x) = n.as_u64() {
                    *node = serde_json::json!(x.saturating_mul(u.int_in_range(2..=1000)?));
                }
            }
        }
        4 => {
            if let serde_json::Value::Array(a) = node {
                if !a.is_empty() {
                    a.truncate(u.choose_index(a.len())?);
                }
            }
        }
        _ => *node = odd_number(u)?,
    }
    Ok(())
}

fn toml_mutation(u: &mut Unstructured<'_>, t: &mut toml::Table) -> arbitrary::Result<()> {
    let keys: Vec<String> = t.keys().cloned().collect();
    if keys.is_empty() {
        return Ok(());
    }
    let k = &keys[u.choose_index(keys.len())?];
    let v = t.get_mut(k).unwrap();
    let target = match v {
        toml::Value::Table(inner) if !inner.is_empty() && u.arbitrary()? => {
            let ks: Vec<String> = inner.keys().cloned().collect();
            let k2 = ks[u.choose_index(ks.len())?].clone();
            inner.get_mut(&k2).unwrap()
        }
        other => other,
    };
    *target = match u.int_in_range(0..=8)? {
        0 => toml::Value::Integer(-1),
        1 => toml::Value::Integer(0),
        2 => toml::Value::Integer(i64::MAX),
        3 => toml::Value::Float(f64::NAN),
        4 => toml::Value::Float(f64::INFINITY),
        5 => toml::Value::Float(1e-9),
        6 => toml::Value::String("nonsense".into()),
        7 => toml::Value::Boolean(true),
        _ => toml::Value::Float(u.int_in_range(0..=2000u32)? as f64 / 1000.0),
    };
    if u.ratio(1, 8)? {
        t.remove(&keys[u.choose_index(keys.len())?]);
    }
    Ok(())
}

/// A safetensors file with its header edited as JSON (shapes, dtypes,
/// offsets) and, sometimes, the header length lying.
fn safetensors_mutation(u: &mut Unstructured<'_>, b: &mut Vec<u8>) -> arbitrary::Result<()> {
    if b.len() < 8 {
        return byte_mutation(u, b);
    }
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    if n > b.len() - 8 {
        return byte_mutation(u, b);
    }
    let Ok(mut header) = serde_json::from_slice::<serde_json::Value>(&b[8..8 + n]) else {
        return byte_mutation(u, b);
    };
    json_mutation(u, &mut header)?;
    let mut h = serde_json::to_vec(&header).unwrap();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut len = h.len() as u64;
    if u.ratio(1, 10)? {
        len = match u.int_in_range(0..=3)? {
            0 => u64::MAX,
            1 => len + 8,
            2 => len.saturating_sub(8),
            _ => 1 << 40,
        };
    }
    let body = b[8 + n..].to_vec();
    b.clear();
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&h);
    b.extend_from_slice(&body);
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    Bytes,
    Json,
    Toml,
    Safetensors,
}

fn mutate(kind: Kind, seed: &[u8], u: &mut Unstructured<'_>) -> Vec<u8> {
    let mut b = seed.to_vec();
    let rounds = u.int_in_range(1..=4).unwrap_or(1);
    for _ in 0..rounds {
        let structured = u.ratio(2, 3).unwrap_or(false);
        let _ = match (kind, structured) {
            (Kind::Json, true) => match serde_json::from_slice::<serde_json::Value>(&b) {
                Ok(mut v) => {
                    json_mutation(u, &mut v).map(|_| b = serde_json::to_vec_pretty(&v).unwrap())
                }
                Err(_) => byte_mutation(u, &mut b),
            },
            (Kind::Toml, true) => match std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse::<toml::Table>().ok())
            {
                Some(mut t) => toml_mutation(u, &mut t)
                    .map(|_| b = toml::to_string(&t).unwrap_or_default().into_bytes()),
                None => byte_mutation(u, &mut b),
            },
            (Kind::Safetensors, true) => safetensors_mutation(u, &mut b),
            _ => byte_mutation(u, &mut b),
        };
    }
    b
}

// -------------------------------------------------------------------- loaders

/// One loader: the file it reads (relative to its directory), the seed of
/// that file, how to mutate it, and the call.
struct Loader {
    name: &'static str,
    dir: PathBuf,
    file: &'static str,
    seed: Vec<u8>,
    kind: Kind,
    run: Box<dyn FnMut(&Path) -> lpaf::Result<()>>,
    inputs: u64,
    errors: u64,
    panics: u64,
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

/// A compressed copy of the fixture: every matrix as rank-2 factors plus a
/// CSR part of its largest entries, with a matching compression.json.
fn make_compressed(fixture: &Path, dst: &Path) {
    copy_dir(fixture, dst);
    let (config, mut t, _) = lpaf::model::weights::read_model_dir(fixture).unwrap();
    for l in 0..config.num_hidden_layers {
        for s in 0..6 {
            let p = lpaf::model::bert::linear_prefix(l, s);
            let (o, i) = lpaf::model::bert::slot_shape(&config, s);
            let w = t.remove(&format!("{p}.weight")).unwrap();
            let w = w.as_f32("w").unwrap().to_vec();
            let r = 2;
            let u: Vec<f32> = (0..o * r).map(|k| w[k % w.len()]).collect();
            let v: Vec<f32> = (0..r * i).map(|k| w[(k * 7) % w.len()]).collect();
            let (mut vals, mut idx, mut ptr) = (Vec::new(), Vec::new(), vec![0i64]);
            for row in 0..o {
                for c in 0..i {
                    let x = w[row * i + c];
                    if x.abs() > 0.03 {
                        vals.push(x);
                        idx.push(c as i32);
                    }
                }
                ptr.push(vals.len() as i64);
            }
            t.insert(format!("{p}.lowrank_u"), HostTensor::f32(&[o, r], u));
            t.insert(format!("{p}.lowrank_v"), HostTensor::f32(&[r, i], v));
            t.insert(
                format!("{p}.sparse_values"),
                HostTensor::f32(&[vals.len()], vals),
            );
            t.insert(
                format!("{p}.sparse_indices"),
                HostTensor::i32(&[idx.len()], idx),
            );
            t.insert(
                format!("{p}.sparse_indptr"),
                HostTensor {
                    shape: vec![ptr.len()],
                    data: HostData::I64(ptr),
                },
            );
        }
    }
    let (matrices, total) = lpaf::compress::format::stats_from_tensors(&config, &t).unwrap();
    let info = lpaf::compress::format::CompressionInfo {
        engine: "fuzz".into(),
        method: "losparse".into(),
        recipe: serde_json::json!({}),
        matrices,
        total,
    };
    write_safetensors(&dst.join("model.safetensors"), &t, FloatFormat::F32, None).unwrap();
    std::fs::write(
        dst.join("compression.json"),
        serde_json::to_vec_pretty(&info).unwrap(),
    )
    .unwrap();
    lpaf::compress::format::validate_dir(dst).expect("seed compressed dir is valid");
}

fn small_safetensors(p: &Path) {
    let mut t = BTreeMap::new();
    t.insert(
        "a.weight".to_string(),
        HostTensor::f32(&[3, 4], (0..12).map(|x| x as f32).collect()),
    );
    t.insert(
        "b.ids".to_string(),
        HostTensor {
            shape: vec![5],
            data: HostData::I64(vec![0, 1, 2, 3, 4]),
        },
    );
    t.insert(
        "c.idx".to_string(),
        HostTensor::i32(&[2, 2], vec![1, 2, 3, 4]),
    );
    t.insert(
        "d.mask".to_string(),
        HostTensor::u8(&[6], vec![1, 0, 1, 0, 1, 1]),
    );
    write_safetensors(p, &t, FloatFormat::Bf16, None).unwrap();
}

fn loaders(work: &Path, root: &Path) -> Vec<Loader> {
    let fx = root.join("tests/fixtures/tiny-bert-cls");
    let be: &'static CpuBackend = Box::leak(Box::new(CpuBackend::new()));
    let read = |p: &Path| std::fs::read(p).unwrap();
    let mut v: Vec<Loader> = Vec::new();
    let mut add = |name: &'static str,
                   file: &'static str,
                   seed: Vec<u8>,
                   kind: Kind,
                   run: Box<dyn FnMut(&Path) -> lpaf::Result<()>>| {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        v.push(Loader {
            name,
            dir,
            file,
            seed,
            kind,
            run,
            inputs: 0,
            errors: 0,
            panics: 0,
        });
    };

    // safetensors reader (every dtype), and a whole model directory.
    small_safetensors(&work.join("small.safetensors"));
    add(
        "safetensors",
        "x.safetensors",
        read(&work.join("small.safetensors")),
        Kind::Safetensors,
        Box::new(|d| read_safetensors(&d.join("x.safetensors")).map(|_| ())),
    );
    let md = work.join("model");
    copy_dir(&fx, &md);
    add(
        "model_dir",
        "model.safetensors",
        read(&fx.join("model.safetensors")),
        Kind::Safetensors,
        Box::new(move |d| {
            copy_once(&md, d);
            lpaf::model::weights::load_model_dir(be, d, None, 0, &lpaf::model::bert::DenseFactory)
                .map(|_| ())
        }),
    );
    add(
        "config_json",
        "config.json",
        read(&fx.join("config.json")),
        Kind::Json,
        Box::new(|d| lpaf::model::config::BertConfig::load(&d.join("config.json")).map(|_| ())),
    );

    // The compressed format: tensors, and compression.json.
    let cd = work.join("compressed-seed");
    make_compressed(&fx, &cd);
    let cd2 = cd.clone();
    add(
        "compressed_tensors",
        "model.safetensors",
        read(&cd.join("model.safetensors")),
        Kind::Safetensors,
        Box::new(move |d| {
            copy_once(&cd2, d);
            lpaf::compress::format::load_compressed(be, d, 0)?;
            let v = lpaf::compress::format::validate_dir(d)?;
            for l in 0..v.config.num_hidden_layers {
                for s in 0..6 {
                    let (o, i) = lpaf::model::bert::slot_shape(&v.config, s);
                    lpaf::compress::format::dense_matrix(
                        &v.tensors,
                        &lpaf::model::bert::linear_prefix(l, s),
                        o,
                        i,
                    )?;
                }
            }
            Ok(())
        }),
    );
    let cd3 = cd.clone();
    add(
        "compression_json",
        "compression.json",
        read(&cd.join("compression.json")),
        Kind::Json,
        Box::new(move |d| {
            copy_once(&cd3, d);
            lpaf::compress::format::validate_dir(d).map(|_| ())
        }),
    );

    // Recipes (every shipped one is a seed; one is picked per loader run).
    let recipe = read(&root.join("recipes/lpaf.toml"));
    add(
        "recipe_toml",
        "r.toml",
        recipe,
        Kind::Toml,
        Box::new(|d| {
            let t = lpaf::cli::config::ConfigTable::from_file(&d.join("r.toml"))?;
            let r: lpaf::compress::recipe::Recipe = t.parse()?;
            r.validate()?;
            let c = lpaf::compress::pipeline::check_budgets(&r, &lpaf::model::BertConfig::base());
            c.map(|_| ())
        }),
    );
    add(
        "finetune_toml",
        "f.toml",
        read(&root.join("recipes/finetune.toml")),
        Kind::Toml,
        Box::new(|d| {
            let t = lpaf::cli::config::ConfigTable::from_file(&d.join("f.toml"))?;
            let f: lpaf::cli::config::FinetuneConfig = t.parse()?;
            f.train.validate()
        }),
    );

    // Data readers.
    use lpaf::data::{read_table, TableFormat, TableSpec};
    let spec = |f| TableSpec {
        format: f,
        text_a: "sentence".into(),
        text_b: Some("other".into()),
        label: Some("label".into()),
    };
    let csv = b"sentence,other,label\n\"a, quoted\nfield\",x,1\nplain,\"y \"\"q\"\"\",0\n\xef\xbc\xa1,z,1\n".to_vec();
    let s1 = spec(TableFormat::Csv);
    add(
        "csv",
        "t.csv",
        csv,
        Kind::Bytes,
        Box::new(move |d| read_table(d.join("t.csv"), &s1, true).map(|_| ())),
    );
    let tsv = b"sentence\tother\tlabel\ngood\tx\t1\nbad\ty\t0\n".to_vec();
    let s2 = spec(TableFormat::Tsv);
    add(
        "tsv",
        "t.tsv",
        tsv,
        Kind::Bytes,
        Box::new(move |d| read_table(d.join("t.tsv"), &s2, true).map(|_| ())),
    );
    let jsonl = b"{\"sentence\": \"good\", \"other\": \"x\", \"label\": 1}\n{\"sentence\": \"bad\", \"other\": \"y\", \"label\": \"0\"}\n".to_vec();
    let s3 = spec(TableFormat::Jsonl);
    add(
        "jsonl",
        "t.jsonl",
        jsonl,
        Kind::Bytes,
        Box::new(move |d| read_table(d.join("t.jsonl"), &s3, false).map(|_| ())),
    );
    let glue = b"sentence1\tsentence2\tlabel\nA man.\tA person.\tentailment\nA cat.\tA dog.\tcontradiction\n".to_vec();
    add(
        "glue_tsv",
        "g.tsv",
        glue,
        Kind::Bytes,
        Box::new(|d| {
            let p = d.join("g.tsv");
            lpaf::data::read_glue(lpaf::data::GlueTask::Rte, &p, false)?;
            lpaf::data::read_glue(lpaf::data::GlueTask::Cola, &p, true).map(|_| ())
        }),
    );
    let pol = b"\xef\xbb\xbf\"1\",\"a fine film \n\"\r\n\"-1\",\"a dull one \n\"\r\n".to_vec();
    add(
        "polarity_csv",
        "p.csv",
        pol,
        Kind::Bytes,
        Box::new(|d| lpaf::data::read_polarity(d.join("p.csv")).map(|_| ())),
    );
    let squad = serde_json::to_vec_pretty(&serde_json::json!({"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": "The film was shot in Paris in 1999.", "qas": [
            {"id": "q1", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 21}], "is_impossible": false},
            {"id": "q2", "question": "Who?", "answers": [], "is_impossible": true}]}]}]})).unwrap();
    add(
        "squad_json",
        "s.json",
        squad,
        Kind::Json,
        Box::new(|d| lpaf::data::read_squad(d.join("s.json")).map(|_| ())),
    );

    // Tokenizer: load, then encode a pair.
    let tk = work.join("tok-seed");
    std::fs::create_dir_all(&tk).unwrap();
    std::fs::copy(
        fx.join("tokenizer_config.json"),
        tk.join("tokenizer_config.json"),
    )
    .unwrap();
    add(
        "tokenizer_json",
        "tokenizer.json",
        read(&fx.join("tokenizer.json")),
        Kind::Json,
        Box::new(move |d| {
            copy_once(&tk, d);
            let t = lpaf::data::Tokenizer::from_dir(d)?;
            t.encode("the movie was good", Some("a b c"), 16)
                .map(|_| ())
        }),
    );

    // Checkpoints: trainer state JSON and the tensors.
    let ck = work.join("ckpt-seed");
    let (mut m, _) =
        lpaf::model::weights::load_model_dir(be, &fx, None, 0, &lpaf::model::bert::DenseFactory)
            .unwrap();
    m.visit_params(&mut |p| p.adam_state(be).map(|_| ()))
        .unwrap();
    let state = lpaf::train::checkpoint::TrainerState {
        lpaf_version: "fuzz".into(),
        step: 3,
        total_steps: 10,
        seed: 1,
        epoch: 0,
        position: 8,
        best_metric: Some(0.5),
        best_step: Some(2),
        method: serde_json::json!({"k": [1, 2]}),
        config_fingerprint: "f".into(),
        reference_loss: Some(0.7),
        recent_losses: vec![0.7, 0.6],
    };
    lpaf::train::checkpoint::save_checkpoint(be, &mut m, &state, &ck).unwrap();
    let model = std::cell::RefCell::new(m);
    let model: &'static std::cell::RefCell<lpaf::model::Bert> = Box::leak(Box::new(model));
    for (name, file, kind) in [
        ("ckpt_trainer_json", "trainer.json", Kind::Json),
        ("ckpt_params", "params.safetensors", Kind::Safetensors),
        ("ckpt_optimizer", "optimizer.safetensors", Kind::Safetensors),
    ] {
        let ck = ck.clone();
        add(
            name,
            file,
            read(&ck.join(file)),
            kind,
            Box::new(move |d| {
                copy_once(&ck, d);
                lpaf::train::checkpoint::load_checkpoint(be, &mut model.borrow_mut(), d).map(|_| ())
            }),
        );
    }
    let _ = be.name();
    v
}

/// Copies the other files of a seed directory into a loader's directory
/// once (the mutated file is rewritten for every input).
fn copy_once(seed: &Path, d: &Path) {
    let marker = d.join(".seeded");
    if !marker.exists() {
        for e in std::fs::read_dir(seed).unwrap() {
            let p = e.unwrap().path();
            let dst = d.join(p.file_name().unwrap());
            if p.is_file() && !dst.exists() {
                std::fs::copy(&p, dst).unwrap();
            }
        }
        std::fs::write(marker, b"").unwrap();
    }
}

// ----------------------------------------------------------------------- main

static STARTED_MS: AtomicU64 = AtomicU64::new(0);
static CURRENT: AtomicUsize = AtomicUsize::new(usize::MAX);

fn now_ms(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64 + 1
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let total: u64 = get("--inputs").map_or(u64::MAX, |s| s.parse().expect("--inputs N"));
    let seconds: f64 = get("--seconds").map_or(f64::INFINITY, |s| s.parse().expect("--seconds S"));
    let seed: u64 = get("--seed").map_or(1, |s| s.parse().expect("--seed K"));
    let timeout: u64 = get("--timeout").map_or(10, |s| s.parse().expect("--timeout T"));
    let only = get("--only");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir_in(
        std::env::var_os("LPAF_FUZZ_TMP")
            .map(PathBuf::from)
            .unwrap_or(std::env::temp_dir()),
    )
    .unwrap();
    let failures = root.join("fuzz-failures");
    let mut loaders = loaders(work.path(), &root);
    if let Some(o) = &only {
        loaders.retain(|l| l.name == o);
        assert!(!loaders.is_empty(), "--only {o}: no such loader");
    }
    let names: Vec<&'static str> = loaders.iter().map(|l| l.name).collect();
    let paths: Vec<PathBuf> = loaders.iter().map(|l| l.dir.join(l.file)).collect();
    // Watchdog: one input running past the timeout is a hang.
    let t0 = Instant::now();
    let fdir = failures.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(200));
        let s = STARTED_MS.load(Ordering::Relaxed);
        if s != 0 && now_ms(t0).saturating_sub(s) > timeout * 1000 {
            let i = CURRENT.load(Ordering::Relaxed);
            eprintln!("fuzz: HANG: {} ran one input past {timeout} s", names[i]);
            let _ = std::fs::create_dir_all(&fdir);
            let _ = std::fs::copy(&paths[i], fdir.join(format!("{}-hang", names[i])));
            std::process::exit(3);
        }
    });
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut entropy = vec![0u8; 4096];
    let mut done = 0u64;
    let mut panics = Vec::new();
    'outer: loop {
        for (li, l) in loaders.iter_mut().enumerate() {
            let slice = Instant::now();
            while slice.elapsed() < Duration::from_millis(500) {
                if done >= total || t0.elapsed().as_secs_f64() >= seconds {
                    break 'outer;
                }
                rng.fill_bytes(&mut entropy);
                let mut u = Unstructured::new(&entropy);
                let input = mutate(l.kind, &l.seed, &mut u);
                let path = l.dir.join(l.file);
                std::fs::write(&path, &input).unwrap();
                CURRENT.store(li, Ordering::Relaxed);
                LIMIT.store(
                    (256 << 20) + 64 * input.len().max(l.seed.len()),
                    Ordering::Relaxed,
                );
                STARTED_MS.store(now_ms(t0), Ordering::Relaxed);
                let r = std::panic::catch_unwind(AssertUnwindSafe(|| (l.run)(&l.dir)));
                STARTED_MS.store(0, Ordering::Relaxed);
                LIMIT.store(usize::MAX, Ordering::Relaxed);
                l.inputs += 1;
                done += 1;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => l.errors += 1,
                    Err(p) => {
                        l.panics += 1;
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        std::fs::create_dir_all(&failures).unwrap();
                        let f = failures.join(format!("{}-{}", l.name, l.panics));
                        std::fs::write(&f, &input).unwrap();
                        panics.push(format!(
                            "{}: {msg} (input saved to {})",
                            l.name,
                            f.display()
                        ));
                    }
                }
            }
        }
    }
    println!("| loader | inputs | rejected with an error | accepted | panics |");
    println!("|---|---|---|---|---|");
    for l in &loaders {
        println!(
            "| {} | {} | {} | {} | {} |",
            l.name,
            l.inputs,
            l.errors,
            l.inputs - l.errors - l.panics,
            l.panics
        );
    }
    let np: u64 = loaders.iter().map(|l| l.panics).sum();
    println!(
        "total: {done} inputs in {:.0} s, {np} panics, 0 hangs, memory bound held",
        t0.elapsed().as_secs_f64()
    );
    for p in panics.iter().take(20) {
        println!("panic: {p}");
    }
    if np > 0 {
        std::process::exit(1);
    }
}
