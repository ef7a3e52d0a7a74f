//! Data: tokenizer, readers (GLUE, CSV/TSV/JSONL, polarity, SQuAD), batching,
//! metrics. Small inline fixtures in temp dirs; the real polarity file and
//! MiniLM tokenizer are checked when present in the asset cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lpaf::data::*;
use lpaf::train::metrics::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const BASE_VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown", "fox", "jump", "##s",
    "##ed", "over", "lazy", "dog", ",", ".", "!", "?", "\"", "'", "-", "un", "##believ", "##able",
    "hello", "world", "a", "an", "is", "where", "what", "cat", "sat", "on", "mat", "good", "bad",
    "movie", "film", "not", "it", "was", "very",
];

/// A tokenizer over `BASE_VOCAB` plus `extra` words, built from vocab.txt.
fn tiny_tokenizer(dir: &Path, extra: &[String]) -> Tokenizer {
    let mut v: Vec<String> = BASE_VOCAB.iter().map(|s| s.to_string()).collect();
    v.extend(extra.iter().cloned());
    write(dir, "vocab.txt", &(v.join("\n") + "\n"));
    Tokenizer::from_dir(dir).unwrap()
}

fn tok() -> (tempfile::TempDir, Tokenizer) {
    let d = tempfile::tempdir().unwrap();
    let t = tiny_tokenizer(d.path(), &[]);
    (d, t)
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("LPAF_CACHE") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/lpaf"),
    }
}

fn assert_data_err<T: std::fmt::Debug>(r: lpaf::Result<T>, file: &Path, line: usize) -> String {
    let e = r.expect_err("expected an error").to_string();
    let want = format!("{}:{line}:", file.display());
    assert!(e.contains(&want), "error `{e}` should name `{want}`");
    e
}

// ---------------------------------------------------------------- tokenizer

#[test]
fn tokenizer_wordpiece_from_vocab() {
    let (_d, t) = tok();
    assert_eq!(
        (t.pad_id(), t.cls_id(), t.sep_id(), t.unk_id()),
        (0, 2, 3, 1)
    );
    assert_eq!(t.vocab_size(), BASE_VOCAB.len());
    let e = t.encode("The QUICK brown fox jumps!", None, 64).unwrap();
    assert_eq!(
        e.tokens,
        ["[CLS]", "the", "quick", "brown", "fox", "jump", "##s", "!", "[SEP]"]
    );
    assert_eq!(e.ids, [2, 5, 6, 7, 8, 9, 10, 17, 3]);
    assert_eq!(e.type_ids, [0; 9]);
    // Character offsets into the original text; (0, 0) for special tokens.
    assert_eq!(e.offsets[5], (20, 24));
    assert_eq!(e.offsets[6], (24, 25));
    assert_eq!(e.offsets[8], (0, 0));
    assert_eq!(e.sequence_ids[0], None);
    assert_eq!(e.sequence_ids[1], Some(0));
    assert!(!e.truncated);

    // Accents stripped with lower-casing; unknown words; punctuation split; subwords.
    let e = t
        .encode("Héllo, zebra-fox unbelievable foxy", None, 64)
        .unwrap();
    assert_eq!(
        e.tokens,
        [
            "[CLS]", "hello", ",", "[UNK]", "-", "fox", "un", "##believ", "##able", "[UNK]",
            "[SEP]"
        ]
    );
    // Offsets are characters, not bytes ("é" is two bytes).
    assert_eq!(e.offsets[1], (0, 5));
    assert_eq!(e.offsets[2], (5, 6));
    // Decoding skips special tokens ([UNK] included, as Hugging Face).
    assert_eq!(t.decode(&e.ids).unwrap(), "hello, - fox unbelievable");
}

#[test]
fn tokenizer_pairs_and_truncation() {
    let (_d, t) = tok();
    let e = t
        .encode("the quick fox", Some("over the lazy dog"), 64)
        .unwrap();
    assert_eq!(
        e.tokens,
        ["[CLS]", "the", "quick", "fox", "[SEP]", "over", "the", "lazy", "dog", "[SEP]"]
    );
    assert_eq!(e.type_ids, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    assert_eq!(e.sequence_ids[5], Some(1));
    assert_eq!(e.offsets[5], (0, 4)); // into text B

    // Longest first: both too long -> half each (first gets the floor).
    let e = t
        .encode("the quick brown fox", Some("over the lazy dog"), 9)
        .unwrap();
    assert_eq!(
        e.tokens,
        ["[CLS]", "the", "quick", "brown", "[SEP]", "over", "the", "lazy", "[SEP]"]
    );
    assert!(e.truncated);
    let e = t
        .encode("the quick brown fox", Some("over the lazy dog"), 10)
        .unwrap();
    assert_eq!(
        e.tokens,
        ["[CLS]", "the", "quick", "brown", "[SEP]", "over", "the", "lazy", "dog", "[SEP]"]
    );
    // Only the longer side is cut when the shorter fits in its half.
    let e = t
        .encode(
            "fox",
            Some("the quick brown fox jumps over the lazy dog"),
            8,
        )
        .unwrap();
    assert_eq!(
        e.tokens,
        ["[CLS]", "fox", "[SEP]", "the", "quick", "brown", "fox", "[SEP]"]
    );
    // Single sentence.
    let e = t.encode("the quick brown fox", None, 4).unwrap();
    assert_eq!(e.tokens, ["[CLS]", "the", "quick", "[SEP]"]);
    assert!(t.encode("the", None, 2).is_err());
    // The id-only path agrees.
    for (a, b, m) in [
        ("the quick brown fox", Some("over the lazy dog"), 9),
        ("Héllo, foxy!", None, 64),
    ] {
        let e = t.encode(a, b, m).unwrap();
        assert_eq!(
            t.encode_ids(a, b, m).unwrap(),
            (e.ids, e.type_ids, e.truncated)
        );
    }
}

#[test]
fn tokenizer_config_and_errors() {
    // do_lower_case false from tokenizer_config.json: "The" is not in the vocab.
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "tokenizer_config.json",
        r#"{"do_lower_case": false}"#,
    );
    let t = tiny_tokenizer(d.path(), &[]);
    assert_eq!(
        t.encode("The fox", None, 16).unwrap().tokens,
        ["[CLS]", "[UNK]", "fox", "[SEP]"]
    );
    // ... or from config.json.
    let d2 = tempfile::tempdir().unwrap();
    write(d2.path(), "config.json", r#"{"do_lower_case": false}"#);
    let t = tiny_tokenizer(d2.path(), &[]);
    assert_eq!(
        t.encode("The fox", None, 16).unwrap().tokens,
        ["[CLS]", "[UNK]", "fox", "[SEP]"]
    );

    // Neither file: the error names the directory.
    let empty = tempfile::tempdir().unwrap();
    let e = Tokenizer::from_dir(empty.path()).unwrap_err().to_string();
    assert!(
        e.contains(&empty.path().display().to_string()) && e.contains("vocab.txt"),
        "{e}"
    );
    // Malformed tokenizer.json.
    write(empty.path(), "tokenizer.json", "{ not json");
    let e = Tokenizer::from_dir(empty.path()).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    // A vocab without [UNK].
    let d3 = tempfile::tempdir().unwrap();
    write(d3.path(), "vocab.txt", "[CLS]\n[SEP]\nthe\n");
    let e = Tokenizer::from_dir(d3.path()).unwrap_err().to_string();
    assert!(e.contains("vocab.txt") && e.contains("[UNK]"), "{e}");
    // Malformed tokenizer_config.json names file and line.
    let d4 = tempfile::tempdir().unwrap();
    let cfg = write(
        d4.path(),
        "tokenizer_config.json",
        "{\n\"do_lower_case\": true false\n}",
    );
    assert_data_err(Tokenizer::from_dir(d4.path()), &cfg, 2);
}

#[test]
fn tokenizer_minilm_json_matches_vocab() {
    let dir = cache_dir().join("minilm");
    if !dir.join("tokenizer.json").is_file() || !dir.join("vocab.txt").is_file() {
        println!("skipped: MiniLM tokenizer not fetched ({})", dir.display());
        return;
    }
    let json = Tokenizer::from_json(dir.join("tokenizer.json")).unwrap();
    let vocab = Tokenizer::from_vocab(dir.join("vocab.txt"), true).unwrap();
    let from_dir = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(json.vocab_size(), 30522);
    assert_eq!(vocab.vocab_size(), 30522);
    assert_eq!(from_dir.vocab_size(), 30522);
    assert_eq!(
        (json.pad_id(), json.cls_id(), json.sep_id(), json.unk_id()),
        (0, 101, 102, 100)
    );
    assert_eq!(
        (
            vocab.pad_id(),
            vocab.cls_id(),
            vocab.sep_id(),
            vocab.unk_id()
        ),
        (0, 101, 102, 100)
    );
    assert_eq!(
        json.encode("Hello world!", None, 128).unwrap().ids,
        [101, 7592, 2088, 999, 102]
    );
    let sentences = [
        (
            "The rock is destined to be the 21st Century's new \"Conan\".",
            None,
        ),
        (
            "Héllo naïve café — 東京 tokenization, [MASK] and unaffable!!",
            Some("Is this a pair? Yes: 42 %"),
        ),
        ("a    spaced\ttext\nwith control\u{7} chars", Some("x")),
        (
            "supercalifragilisticexpialidocious antidisestablishmentarianism",
            None,
        ),
    ];
    for (a, b) in sentences {
        for max_len in [128, 12] {
            let x = json.encode(a, b, max_len).unwrap();
            let y = vocab.encode(a, b, max_len).unwrap();
            assert_eq!(x, y, "{a:?} / {b:?} at {max_len}");
        }
    }
    // Truncation / padding stored in tokenizer.json (128, fixed padding) are off.
    assert_eq!(json.encode("hello", None, 512).unwrap().len(), 3);
}

// ---------------------------------------------------------------- GLUE

fn classes(d: &TextData) -> Vec<Option<u32>> {
    d.examples
        .iter()
        .map(|e| match e.label {
            Some(Target::Class(c)) => Some(c),
            Some(Target::Value(_)) => panic!("regression label"),
            None => None,
        })
        .collect()
}

#[test]
fn glue_single_sentence_tasks() {
    let d = tempfile::tempdir().unwrap();
    // CoLA: no header.
    let p = write(
        d.path(),
        "cola.tsv",
        "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one.\n\
         gj04\t0\t*\tThey drank the pub \"dry.\n",
    );
    let c = read_glue(GlueTask::Cola, &p, false).unwrap();
    assert_eq!(c.examples.len(), 2);
    assert_eq!(c.examples[1].text_a, "They drank the pub \"dry."); // quotes are plain characters
    assert_eq!(classes(&c), [Some(1), Some(0)]);
    assert_eq!(c.label_names, ["unacceptable", "acceptable"]);
    assert_eq!(c.examples[1].line, 2);
    // CoLA test file: header, no labels.
    let p = write(
        d.path(),
        "cola_test.tsv",
        "index\tsentence\n0\tBill whistled past the house.\n",
    );
    let c = read_glue(GlueTask::Cola, &p, false).unwrap();
    assert_eq!(c.examples[0].text_a, "Bill whistled past the house.");
    assert!(!c.is_labeled());
    // Malformed CoLA row (3 fields).
    let p = write(
        d.path(),
        "cola_bad.tsv",
        "gj04\t1\t\tfine.\ngj04\t1\tmissing sentence\n",
    );
    assert_data_err(read_glue(GlueTask::Cola, &p, false), &p, 2);
    let lenient = read_glue(GlueTask::Cola, &p, true).unwrap();
    assert_eq!(
        (lenient.examples.len(), lenient.skipped.clone()),
        (1, vec![2])
    );

    // SST-2.
    let p = write(
        d.path(),
        "sst2.tsv",
        "sentence\tlabel\nit 's a \" charming journey . \t1\nbad . \t0\n",
    );
    let s = read_glue(GlueTask::Sst2, &p, false).unwrap();
    assert_eq!(s.examples[0].text_a, "it 's a \" charming journey . ");
    assert_eq!(classes(&s), [Some(1), Some(0)]);
    assert_eq!(s.kind, TaskKind::Classification { num_labels: 2 });
    let p = write(
        d.path(),
        "sst2_test.tsv",
        "index\tsentence\n0\tuneasy mishmash .\n",
    );
    assert!(!read_glue(GlueTask::Sst2, &p, false).unwrap().is_labeled());
    let p = write(
        d.path(),
        "sst2_bad.tsv",
        "sentence\tlabel\nfine\t1\nbad label\t2\n",
    );
    let e = assert_data_err(read_glue(GlueTask::Sst2, &p, false), &p, 3);
    assert!(e.contains("label"), "{e}");
}

#[test]
fn glue_pair_tasks() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "mrpc.tsv",
        "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n\
         1\t702876\t702977\tAmrozi accused his brother .\tReferring to him as \"the witness\" .\n\
         0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's .\n",
    );
    let m = read_glue(GlueTask::Mrpc, &p, false).unwrap();
    assert_eq!(
        m.examples[0].text_b.as_deref(),
        Some("Referring to him as \"the witness\" .")
    );
    assert_eq!(classes(&m), [Some(1), Some(0)]);

    let p = write(
        d.path(),
        "qqp.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n\
         133273\t213221\t213222\tHow is the life of a math student?\tWhich level of prepration?\t0\n\
         402555\t536040\t536041\tHow do I control my horny emotions?\tHow do you control your horniness?\t1\n",
    );
    let q = read_glue(GlueTask::Qqp, &p, false).unwrap();
    assert_eq!(classes(&q), [Some(0), Some(1)]);
    assert_eq!(q.examples[1].text_a, "How do I control my horny emotions?");
    let p = write(
        d.path(),
        "qqp_test.tsv",
        "id\tquestion1\tquestion2\n0\tWhy?\tWhy not?\n",
    );
    let q = read_glue(GlueTask::Qqp, &p, false).unwrap();
    assert!(!q.is_labeled());
    assert_eq!(q.examples[0].text_b.as_deref(), Some("Why not?"));

    let p = write(
        d.path(),
        "stsb.tsv",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n\
         0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n\
         1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man is playing a flute.\tA man is playing a flute.\t3.800\n",
    );
    let s = read_glue(GlueTask::Stsb, &p, false).unwrap();
    assert_eq!(s.kind, TaskKind::Regression);
    assert_eq!(s.examples[1].label, Some(Target::Value(3.8)));
    assert!(s.label_names.is_empty());
    let p = write(
        d.path(),
        "stsb_bad.tsv",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n\
         0\tmain\tMSRvid\t2012\t1\tnone\tnone\tA.\tB.\tfive\n",
    );
    assert_data_err(read_glue(GlueTask::Stsb, &p, false), &p, 2);

    let mnli_header = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t\
                       sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n";
    let p = write(
        d.path(),
        "dev_matched.tsv",
        &format!(
            "{mnli_header}0\t1\t1e\tgov\t(\t(\t(\t(\tConceptually cream skimming has \"two\" dimensions.\tProduct and geography.\tneutral\tneutral\n\
             1\t2\t2c\tfic\t(\t(\t(\t(\tYou know.\tYou don't know.\tcontradiction\tcontradiction\n\
             2\t3\t3e\tfic\t(\t(\t(\t(\tHe went.\tHe moved.\tentailment\tentailment\n"
        ),
    );
    let m = read_glue(GlueTask::Mnli, &p, false).unwrap();
    assert_eq!(classes(&m), [Some(1), Some(2), Some(0)]);
    assert_eq!(m.label_names, ["entailment", "neutral", "contradiction"]);
    assert_eq!(
        m.examples[0].text_a,
        "Conceptually cream skimming has \"two\" dimensions."
    );
    let p = write(
        d.path(),
        "mnli_bad.tsv",
        &format!("{mnli_header}0\t1\t1e\tgov\t(\t(\t(\t(\tA.\tB.\tneutral\tneutral\n1\t2\t2c\tfic\t(\t(\n"),
    );
    let e = assert_data_err(read_glue(GlueTask::Mnli, &p, false), &p, 3);
    assert!(e.contains("fields"), "{e}");
    let p = write(
        d.path(),
        "mnli_badlabel.tsv",
        &format!("{mnli_header}0\t1\t1e\tgov\t(\t(\t(\t(\tA.\tB.\tneutral\tmaybe\n"),
    );
    assert_data_err(read_glue(GlueTask::Mnli, &p, false), &p, 2);

    let p = write(
        d.path(),
        "qnli.tsv",
        "index\tquestion\tsentence\tlabel\n0\tWhat came into force?\tThe law came into force.\tentailment\n\
         1\tWhat is it?\tNothing.\tnot_entailment\n",
    );
    assert_eq!(
        classes(&read_glue(GlueTask::Qnli, &p, false).unwrap()),
        [Some(0), Some(1)]
    );
    let p = write(
        d.path(),
        "rte.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\tNo weapons found.\tWeapons found.\tnot_entailment\n\
         1\tA place of sorrow.\tSorrow.\tentailment\n",
    );
    assert_eq!(
        classes(&read_glue(GlueTask::Rte, &p, false).unwrap()),
        [Some(1), Some(0)]
    );
    let p = write(
        d.path(),
        "wnli.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin.\tThe pin had a hole.\t1\n1\tJohn left.\tHe left.\t0\n",
    );
    let w = read_glue(GlueTask::Wnli, &p, false).unwrap();
    assert_eq!(classes(&w), [Some(1), Some(0)]);
    assert_eq!(w.label_names, ["not_entailment", "entailment"]);
    let p = write(
        d.path(),
        "wnli_test.tsv",
        "index\tsentence1\tsentence2\n0\tA.\tB.\n",
    );
    assert!(!read_glue(GlueTask::Wnli, &p, false).unwrap().is_labeled());
    // A header missing a text column.
    let p = write(
        d.path(),
        "rte_bad.tsv",
        "index\tsentence1\tlabel\n0\tA.\tentailment\n",
    );
    let e = assert_data_err(read_glue(GlueTask::Rte, &p, false), &p, 1);
    assert!(e.contains("sentence2"), "{e}");
}

// ---------------------------------------------------------------- tables

#[test]
fn csv_tsv_jsonl_tables() {
    let d = tempfile::tempdir().unwrap();
    let spec = TableSpec {
        format: TableFormat::Csv,
        text_a: "text".into(),
        text_b: None,
        label: Some("label".into()),
    };
    let p = write(
        d.path(),
        "train.csv",
        "\u{feff}id,text,label\n1,\"Hello, \"\"world\"\"\nsecond line\",pos\n2,plain,neg\n3,again,pos\n",
    );
    let rows = read_table(&p, &spec, true).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].text_a, "Hello, \"world\"\nsecond line");
    assert_eq!(rows[1].line, 4); // the quoted field spans lines 2-3
    let (kind, names) = LabelSpec::Auto.vocabulary(&rows).unwrap();
    assert_eq!(names, ["neg", "pos"]);
    assert_eq!(kind, TaskKind::Classification { num_labels: 2 });
    let data = LabelSpec::Auto.resolve(&p, rows, &kind, &names).unwrap();
    assert_eq!(data.examples[0].label, Some(Target::Class(1)));
    // An unseen label in another file names file and line.
    let p2 = write(d.path(), "dev.csv", "text,label\na,pos\nb,meh\n");
    let rows2 = read_table(&p2, &spec, true).unwrap();
    assert_data_err(LabelSpec::Auto.resolve(&p2, rows2, &kind, &names), &p2, 3);
    // Missing column.
    let p3 = write(d.path(), "nolabel.csv", "text\nx\n");
    assert_data_err(read_table(&p3, &spec, true), &p3, 1);
    assert_eq!(read_table(&p3, &spec, false).unwrap()[0].label, None);
    // Explicit names and integer labels.
    let names = vec!["pos".to_string(), "neg".to_string()];
    let rows = read_table(&p, &spec, true).unwrap();
    let data = LabelSpec::Names(names.clone())
        .resolve(&p, rows, &kind, &names)
        .unwrap();
    assert_eq!(data.examples[1].label, Some(Target::Class(1)));

    // TSV with quoting, a pair and numeric labels sorted numerically.
    let tspec = TableSpec {
        format: TableFormat::Tsv,
        text_a: "a".into(),
        text_b: Some("b".into()),
        label: Some("y".into()),
    };
    let p = write(
        d.path(),
        "t.tsv",
        "a\tb\ty\n\"tab\there\"\tsecond\t10\nx\ty\t2\nu\tv\t2\n",
    );
    let rows = read_table(&p, &tspec, true).unwrap();
    assert_eq!(rows[0].text_a, "tab\there");
    assert_eq!(rows[0].text_b.as_deref(), Some("second"));
    assert_eq!(LabelSpec::Auto.vocabulary(&rows).unwrap().1, ["2", "10"]);
    let (k, n) = LabelSpec::Integer.vocabulary(&rows).unwrap();
    assert_eq!(n.len(), 11);
    let data = LabelSpec::Integer.resolve(&p, rows, &k, &n).unwrap();
    assert_eq!(data.examples[0].label, Some(Target::Class(10)));

    // JSONL with BOM, numbers, regression, a malformed line.
    let jspec = TableSpec {
        format: TableFormat::Jsonl,
        text_a: "s1".into(),
        text_b: Some("s2".into()),
        label: Some("score".into()),
    };
    let p = write(
        d.path(),
        "r.jsonl",
        "\u{feff}{\"s1\": \"a \\\"q\\\"\", \"s2\": \"b\", \"score\": 4.5}\n\n{\"s1\": \"c\", \"s2\": \"d\", \"score\": \"1\"}\n",
    );
    let rows = read_table(&p, &jspec, true).unwrap();
    assert_eq!(rows[0].text_a, "a \"q\"");
    assert_eq!(rows[1].line, 3);
    let (k, n) = LabelSpec::Regression.vocabulary(&rows).unwrap();
    assert_eq!(k, TaskKind::Regression);
    let data = LabelSpec::Regression.resolve(&p, rows, &k, &n).unwrap();
    assert_eq!(data.examples[0].label, Some(Target::Value(4.5)));
    assert_eq!(data.examples[1].label, Some(Target::Value(1.0)));
    let p = write(
        d.path(),
        "bad.jsonl",
        "{\"s1\": \"a\", \"s2\": \"b\", \"score\": 1}\n{\"s1\": \"a\", \"s2\": \n",
    );
    assert_data_err(read_table(&p, &jspec, true), &p, 2);
    let p = write(
        d.path(),
        "bad2.jsonl",
        "{\"s1\": 3, \"s2\": \"b\", \"score\": 1}\n",
    );
    assert_data_err(read_table(&p, &jspec, true), &p, 1);
    // A malformed CSV row (too few fields).
    let p = write(d.path(), "short.csv", "id,text,label\n1,a,pos\n2\n");
    assert_data_err(read_table(&p, &spec, true), &p, 3);
}

// ---------------------------------------------------------------- polarity

#[test]
fn polarity_format() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "pol.csv",
        "\u{feff}\"1\",\"the rock is destined to be the 21st century's new \"\" conan \"\" . \n\"\r\n\
         \"-1\",\"simplistic , silly and tedious . \n\"\r\n\"1\",\"effective but too-tepid biopic\n\"",
    );
    let data = read_polarity(&p).unwrap();
    assert_eq!(data.examples.len(), 3);
    assert_eq!(
        data.examples[0].text_a,
        "the rock is destined to be the 21st century's new \" conan \" ."
    );
    assert_eq!(data.examples[2].text_a, "effective but too-tepid biopic");
    assert_eq!(classes(&data), [Some(1), Some(0), Some(1)]);
    assert_eq!(data.label_names, ["negative", "positive"]);
    assert_eq!(data.examples[1].line, 3);
    let p = write(
        d.path(),
        "bad.csv",
        "\"1\",\"fine\n\"\r\n\"0\",\"zero is not a label\n\"\r\n",
    );
    assert_data_err(read_polarity(&p), &p, 3);
}

#[test]
fn polarity_real_file() {
    let p = cache_dir().join("polarity/polarity.csv");
    if !p.is_file() {
        println!("skipped: polarity data not fetched");
        return;
    }
    let data = read_polarity(&p).unwrap();
    assert_eq!(data.examples.len(), 4000);
    let pos = data
        .examples
        .iter()
        .filter(|e| e.label == Some(Target::Class(1)))
        .count();
    assert!((1900..=2100).contains(&pos), "{pos} positive of 4000");
    assert!(data
        .examples
        .iter()
        .all(|e| !e.text_a.is_empty() && !e.text_a.ends_with('\n')));
}

// ---------------------------------------------------------------- SQuAD

/// 90 words `w0 … w89`, with punctuation every ten words.
fn long_context() -> String {
    let mut s = String::new();
    for i in 0..90 {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("w{i}"));
        if i % 10 == 9 {
            s.push(',');
        }
    }
    s
}

fn squad_json(context: &str, qas: &str) -> String {
    format!(
        r#"{{"version": "x", "data": [{{"title": "T", "paragraphs": [{{"context": {}, "qas": [{qas}]}}]}}]}}"#,
        serde_json::to_string(context).unwrap()
    )
}

fn squad_tok(d: &Path) -> Tokenizer {
    let words: Vec<String> = (0..90).map(|i| format!("w{i}")).collect();
    tiny_tokenizer(d, &words)
}

#[test]
fn squad_v1_windows_and_decoding() {
    let d = tempfile::tempdir().unwrap();
    let t = squad_tok(d.path());
    let ctx = long_context();
    let answer = "w71 w72 w73";
    let start = ctx.find(answer).unwrap();
    let qas = format!(
        r#"{{"id": "q1", "question": "  where is the w5?", "answers": [{{"text": "{answer}", "answer_start": {start}}}, {{"text": "w72", "answer_start": {}}}]}},
           {{"id": "q2", "question": "what", "answers": [{{"text": "w0", "answer_start": 0}}]}}"#,
        start + 4
    );
    let p = write(d.path(), "squad.json", &squad_json(&ctx, &qas));
    let examples = read_squad(&p).unwrap();
    assert_eq!(examples.len(), 2);
    assert!(Arc::ptr_eq(&examples[0].context, &examples[1].context));
    let cfg = SquadConfig {
        max_seq_len: 40,
        doc_stride: 10,
        max_query_len: 64,
    };
    let ds = Dataset::from_squad("squad/dev", examples.clone(), &t, &cfg, false).unwrap();
    let sq: &SquadData = ds.squad.as_ref().unwrap();
    let f_q1: Vec<usize> = (0..ds.len())
        .filter(|&f| sq.metas[f].example == 0)
        .collect();
    // Context: 99 tokens (90 words + 9 commas); question "where is the w5 ?" = 5 tokens;
    // window 40 - 5 - 3 = 32, step 22: windows start at 0, 22, 44, 66, 88.
    assert_eq!(f_q1.len(), 5);
    let mut hits = 0;
    for &f in &f_q1 {
        let feat = &ds.features[f];
        let meta = &sq.metas[f];
        assert!(feat.input_ids.len() <= 40);
        assert_eq!(feat.input_ids[0], t.cls_id());
        assert_eq!(
            &feat.input_ids[1..6],
            t.pieces("where is the w5?").unwrap().ids.as_slice()
        );
        assert_eq!(feat.token_type_ids[6], 0);
        assert_eq!(feat.token_type_ids[7], 1);
        assert_eq!(*feat.input_ids.last().unwrap(), t.sep_id());
        assert!(meta.offsets[..7].iter().all(|o| o.is_none()));
        match feat.label {
            FeatureLabel::Span { start: 0, end: 0 } => {}
            FeatureLabel::Span { start: s, end: e } => {
                hits += 1;
                let (c0, _) = meta.offsets[s as usize].unwrap();
                let (_, c1) = meta.offsets[e as usize].unwrap();
                let text: String = ctx
                    .chars()
                    .skip(c0 as usize)
                    .take((c1 - c0) as usize)
                    .collect();
                assert_eq!(text, answer);
                assert_eq!(e - s, 2);
            }
            other => panic!("{other:?}"),
        }
    }
    // The answer (context tokens 78-80) lies wholly only in the window starting at 66.
    assert_eq!(hits, 1);

    // Decoding: logits that peak at the labelled span give back the exact text.
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    for feat in &ds.features {
        let n = feat.input_ids.len() + 3; // padded rows are fine
        let mut s = vec![0.0f32; n];
        let mut e = vec![0.0f32; n];
        if let FeatureLabel::Span { start, end } = feat.label {
            if start > 0 {
                let (start, end) = (start as usize, end as usize);
                s[start] = 5.0;
                e[end] = 5.0;
                // A decoy with a higher score but end before start must be skipped.
                s[end + 2] = 6.0;
                e[start.saturating_sub(2)] = 6.0;
            }
        }
        s[0] = 1.0;
        e[0] = 1.0;
        starts.push(s);
        ends.push(e);
    }
    let qa = QaConfig::default();
    let preds = squad_postprocess(&sq.examples, &sq.metas, &starts, &ends, &qa).unwrap();
    assert_eq!(preds[0].id, "q1");
    assert_eq!(preds[0].text, answer);
    assert_eq!(preds[1].text, "w0");
    let scores = squad_evaluate(&sq.examples, &preds, false);
    assert_eq!((scores.exact, scores.f1, scores.total), (1.0, 1.0, 2));
    // A held-out split of SQuAD moves whole examples with all their windows.
    let (tr, dv) = ds.split(0.5, 3, true).unwrap();
    assert_eq!(tr.len() + dv.len(), ds.len());
    for part in [&tr, &dv] {
        let sq = part.squad.as_ref().unwrap();
        assert_eq!(sq.examples.len(), 1);
        assert_eq!(sq.metas.len(), part.len());
        assert!(sq.metas.iter().all(|m| m.example == 0));
        let n = if sq.examples[0].id == "q1" { 5 } else { 4 };
        assert_eq!(part.len(), n);
    }
    // Too-long answers are dropped.
    let short = QaConfig {
        max_answer_len: 2,
        ..qa.clone()
    };
    let preds = squad_postprocess(&sq.examples, &sq.metas, &starts, &ends, &short).unwrap();
    assert_ne!(preds[0].text, answer);

    // Errors: an answer outside its context; a JSON syntax error with its line.
    let bad = write(
        d.path(),
        "bad.json",
        &squad_json(
            "short",
            r#"{"id": "z", "question": "q", "answers": [{"text": "toolong", "answer_start": 3}]}"#,
        ),
    );
    let e = read_squad(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.json") && e.contains("z"), "{e}");
    let bad = write(
        d.path(),
        "bad2.json",
        "{\"data\": [\n{\"paragraphs\": [}\n]}",
    );
    assert_data_err(read_squad(&bad), &bad, 2);
    // A stride that leaves no progress.
    let cfg = SquadConfig {
        max_seq_len: 12,
        doc_stride: 10,
        max_query_len: 64,
    };
    assert!(Dataset::from_squad("x", examples, &t, &cfg, false).is_err());
}

#[test]
fn squad_v2_no_answer() {
    let d = tempfile::tempdir().unwrap();
    let t = squad_tok(d.path());
    let ctx = long_context();
    let start = ctx.find("w30").unwrap();
    let qas = format!(
        r#"{{"id": "imp", "question": "what is w3", "answers": [], "is_impossible": true}},
           {{"id": "ans", "question": "what is w3", "answers": [{{"text": "w30", "answer_start": {start}}}], "is_impossible": false}}"#
    );
    let p = write(d.path(), "v2.json", &squad_json(&ctx, &qas));
    let examples = read_squad(&p).unwrap();
    assert!(examples[0].is_impossible);
    let cfg = SquadConfig {
        max_seq_len: 48,
        doc_stride: 16,
        max_query_len: 2,
    };
    let ds = Dataset::from_squad("squad_v2/dev", examples, &t, &cfg, true).unwrap();
    let sq = ds.squad.as_ref().unwrap();
    // The question is cut to 2 tokens.
    assert_eq!(
        &ds.features[0].input_ids[..4],
        &[t.cls_id(), 31, 29, t.sep_id()]
    );
    for (f, feat) in ds.features.iter().enumerate() {
        if sq.metas[f].example == 0 {
            assert_eq!(feat.label, FeatureLabel::Span { start: 0, end: 0 });
        }
    }
    let batch = ds.batch(&[0, 1], 8).unwrap();
    assert!(matches!(batch.labels, Labels::Span { .. }));
    // Logits: the null score wins for "imp", a span wins for "ans".
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    for (f, feat) in ds.features.iter().enumerate() {
        let n = feat.input_ids.len();
        let (mut s, mut e) = (vec![0.0f32; n], vec![0.0f32; n]);
        match (sq.metas[f].example, feat.label) {
            (0, _) => {
                s[0] = 3.0;
                e[0] = 3.0;
                s[10] = 1.0;
                e[10] = 1.0;
            }
            (_, FeatureLabel::Span { start, end }) if start > 0 => {
                s[start as usize] = 3.0;
                e[end as usize] = 3.0;
            }
            _ => {}
        }
        starts.push(s);
        ends.push(e);
    }
    let qa = QaConfig {
        v2: true,
        ..QaConfig::default()
    };
    let preds = squad_postprocess(&sq.examples, &sq.metas, &starts, &ends, &qa).unwrap();
    assert_eq!(preds[0].text, "");
    assert!(preds[0].null_score_diff.unwrap() > 0.0);
    assert_eq!(preds[1].text, "w30");
    let s = squad_evaluate(&sq.examples, &preds, true);
    assert_eq!((s.exact, s.f1), (1.0, 1.0));
    assert_eq!(s.has_ans, Some((1.0, 1.0, 1)));
    assert_eq!(s.no_ans, Some((1.0, 1.0, 1)));
    // A wrong "no answer" on the answerable question.
    let wrong = vec![
        preds[0].clone(),
        SquadPrediction {
            text: String::new(),
            ..preds[1].clone()
        },
    ];
    assert_eq!(squad_evaluate(&sq.examples, &wrong, true).exact, 0.5);
}

#[test]
fn squad_official_normalisation() {
    assert_eq!(normalize_answer("The  Quick, brown-fox!"), "quick brownfox");
    assert_eq!(normalize_answer("an apple a day\tthe end"), "apple day end");
    assert_eq!(normalize_answer("Theatre"), "theatre");
    assert_eq!(normalize_answer("a—the—b"), "— —b"); // \b around non-word chars
    let (em, f1) = squad_em_f1("the cat sat", &["a cat sat on the mat"]);
    assert_eq!(em, 0.0);
    assert!((f1 - 2.0 / 3.0).abs() < 1e-12);
    let (em, f1) = squad_em_f1("Cat sat.", &["dog", "the cat sat"]);
    assert_eq!((em, f1), (1.0, 1.0));
    assert_eq!(squad_em_f1("", &[]), (1.0, 1.0));
    assert_eq!(squad_em_f1("something", &[]), (0.0, 0.0));
    // Repeated tokens count as a multiset.
    let (_, f1) = squad_em_f1("cat cat cat", &["cat"]);
    assert!((f1 - 0.5).abs() < 1e-12);
}

// ---------------------------------------------------------------- metrics

#[test]
fn metrics_by_hand() {
    let gold = [1, 1, 1, 1, 1, 0, 0, 0];
    let pred = [1, 1, 1, 0, 0, 0, 0, 1];
    // tp 3, fn 2, tn 2, fp 1
    assert!((accuracy(&pred, &gold).unwrap() - 5.0 / 8.0).abs() < 1e-12);
    assert!((f1_binary(&pred, &gold).unwrap() - 6.0 / 9.0).abs() < 1e-12);
    let mcc = 4.0 / (240.0f64).sqrt();
    assert!((matthews_corr(&pred, &gold).unwrap() - mcc).abs() < 1e-12);
    // Multi-class MCC (sklearn's definition).
    let mc = matthews_corr(&[0, 1, 1, 0, 0, 2], &[0, 1, 2, 0, 1, 2]).unwrap();
    assert!((mc - 12.0 / 528.0f64.sqrt()).abs() < 1e-12);
    assert_eq!(matthews_corr(&[1, 1, 1], &[0, 1, 1]).unwrap(), 0.0); // undefined -> 0
    assert_eq!(f1_binary(&[0, 0], &[0, 0]).unwrap(), 0.0);
    assert!(accuracy(&[1], &[1, 0]).is_err());

    let r = pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 7.0]).unwrap();
    assert!((r - 5.0 / (2.0f64 * 114.0 / 9.0).sqrt()).abs() < 1e-9);
    assert_eq!(
        average_ranks(&[10.0, 20.0, 20.0, 5.0, 20.0]),
        [2.0, 4.0, 4.0, 1.0, 4.0]
    );
    // Spearman with ties: scipy.stats.spearmanr([1,2,2,3], [1,3,2,4]) = 0.9486832980505138.
    let rho = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
    assert!((rho - 0.9486832980505138).abs() < 1e-12);
    assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]).unwrap(), 0.0);

    assert_eq!(
        argmax_rows(&[0.1, 0.9, 0.5, 0.2, 0.3, 0.3], 2).unwrap(),
        [1, 0, 0]
    );
    assert_eq!(glue_metrics(GlueTask::Cola), [Metric::Mcc]);
    assert_eq!(glue_metrics(GlueTask::Mrpc), [Metric::F1, Metric::Accuracy]);
    assert_eq!(glue_metrics(GlueTask::Qqp), [Metric::F1, Metric::Accuracy]);
    assert_eq!(
        glue_metrics(GlueTask::Stsb),
        [Metric::Pearson, Metric::Spearman]
    );
    for t in [
        GlueTask::Sst2,
        GlueTask::Mnli,
        GlueTask::Qnli,
        GlueTask::Rte,
        GlueTask::Wnli,
    ] {
        assert_eq!(glue_metrics(t), [Metric::Accuracy]);
    }
    let m = classification_metrics(&[Metric::F1, Metric::Accuracy], &pred, &gold).unwrap();
    assert_eq!(m[1], (Metric::Accuracy, 5.0 / 8.0));
    assert!(regression_metrics(&[Metric::Accuracy], &[1.0], &[1.0]).is_err());
}

// ---------------------------------------------------------------- batching

fn toy_dataset(n: usize) -> (tempfile::TempDir, Dataset) {
    let d = tempfile::tempdir().unwrap();
    let t = tiny_tokenizer(d.path(), &[]);
    let words = [
        "the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog",
    ];
    let mut s = String::from("sentence\tlabel\n");
    for i in 0..n {
        let len = 1 + (i * 7) % words.len();
        s.push_str(&format!("{}\t{}\n", words[..len].join(" "), i % 3 % 2));
    }
    let p = write(d.path(), "train.tsv", &s);
    let data = read_glue(GlueTask::Sst2, &p, false).unwrap();
    let ds = Dataset::from_text("sst2/train", &data, &t, 8).unwrap();
    (d, ds)
}

#[test]
fn shuffle_is_a_pure_function_of_seed_and_epoch() {
    let a = epoch_order(100, 7, 3);
    assert_eq!(a, epoch_order(100, 7, 3));
    assert_ne!(a, epoch_order(100, 7, 4));
    assert_ne!(a, epoch_order(100, 8, 3));
    let mut s = a.clone();
    s.sort();
    assert_eq!(s, (0..100).collect::<Vec<_>>());
    assert_eq!(epoch_order(0, 1, 1), Vec::<usize>::new());
}

#[test]
fn batches_pad_dynamically() {
    let (_d, ds) = toy_dataset(13);
    assert!(ds.truncated > 0 && ds.features.iter().all(|f| f.input_ids.len() <= 8));
    let b = ds.batch(&[0, 1], 1).unwrap();
    let l0 = ds.features[0].input_ids.len();
    let l1 = ds.features[1].input_ids.len();
    assert_eq!(b.seq_len, l0.max(l1));
    assert_eq!(b.size, 2);
    assert_eq!(b.tokens(), 2 * b.seq_len);
    let b8 = ds.batch(&[0, 1], 8).unwrap();
    assert_eq!(b8.seq_len, 8);
    for (r, &len) in [l0, l1].iter().enumerate() {
        let row = &b8.attention_mask[r * 8..(r + 1) * 8];
        assert_eq!(row.iter().map(|&m| m as usize).sum::<usize>(), len);
        assert!(b8.input_ids[r * 8 + len..(r + 1) * 8]
            .iter()
            .all(|&id| id == ds.pad_id as i32));
    }
    assert_eq!(b8.labels, Labels::Class(vec![0, 1]));
    assert_eq!(b8.feature_ids, [0, 1]);
    assert!(ds.batch(&[99], 1).is_err());
    let eval: Vec<Batch> = ds.eval_batches(5, 1).collect();
    assert_eq!(eval.iter().map(|b| b.size).collect::<Vec<_>>(), [5, 5, 3]);
    assert_eq!(eval[2].feature_ids, [10, 11, 12]);
}

#[test]
fn resume_from_cursor_gives_the_same_batches() {
    let (_d, ds) = toy_dataset(13);
    let ds = Arc::new(ds);
    for drop_last in [false, true] {
        let cfg = BatchConfig {
            batch_size: 4,
            shuffle: true,
            seed: 11,
            drop_last,
            pad_multiple: 8,
        };
        let all: Vec<Batch> = BatchIter::new(ds.clone(), cfg.clone())
            .unwrap()
            .take(11)
            .collect();
        // Each epoch visits every row once (drop_last: all but one).
        let per_epoch = if drop_last { 3 } else { 4 };
        let mut seen: Vec<usize> = all[..per_epoch]
            .iter()
            .flat_map(|b| b.feature_ids.clone())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), if drop_last { 12 } else { 13 });
        assert_ne!(
            all[0].feature_ids, all[per_epoch].feature_ids,
            "epochs reshuffle"
        );
        for stop in [1, 3, 4, 6, 9] {
            let mut it = BatchIter::new(ds.clone(), cfg.clone()).unwrap();
            for b in all.iter().take(stop) {
                assert_eq!(&it.next_batch().unwrap(), b);
            }
            let saved = serde_json::to_string(&it.cursor()).unwrap();
            let cursor: Cursor = serde_json::from_str(&saved).unwrap();
            let resumed: Vec<Batch> = BatchIter::resume(ds.clone(), cfg.clone(), cursor)
                .unwrap()
                .take(11 - stop)
                .collect();
            assert_eq!(
                resumed.as_slice(),
                &all[stop..],
                "resume after {stop} (drop_last {drop_last})"
            );
        }
    }
    let cfg = BatchConfig {
        batch_size: 4,
        shuffle: false,
        seed: 0,
        drop_last: false,
        pad_multiple: 1,
    };
    let mut it = BatchIter::new(ds.clone(), cfg.clone()).unwrap();
    assert_eq!(it.batches_per_epoch(), 4);
    assert_eq!(it.next().unwrap().feature_ids, [0, 1, 2, 3]);
    assert_eq!(
        it.cursor(),
        Cursor {
            epoch: 0,
            position: 4
        }
    );
    it.nth(2);
    assert_eq!(
        it.cursor(),
        Cursor {
            epoch: 1,
            position: 0
        }
    );
    assert!(BatchIter::resume(
        ds.clone(),
        cfg.clone(),
        Cursor {
            epoch: 0,
            position: 99
        }
    )
    .is_err());
    assert!(BatchIter::new(
        ds,
        BatchConfig {
            batch_size: 0,
            ..cfg
        }
    )
    .is_err());
}

#[test]
fn deterministic_splits() {
    let labels: Vec<u32> = (0..100).map(|i| (i % 4 == 0) as u32).collect();
    let (tr, dv) = split_indices(100, Some(&labels), 0.2, 5).unwrap();
    assert_eq!((tr.len(), dv.len()), (80, 20));
    assert_eq!(dv.iter().filter(|&&i| labels[i] == 1).count(), 5); // 25 % of 20
    assert_eq!(
        split_indices(100, Some(&labels), 0.2, 5).unwrap(),
        (tr.clone(), dv.clone())
    );
    assert_ne!(split_indices(100, Some(&labels), 0.2, 6).unwrap().1, dv);
    let mut all: Vec<usize> = tr.iter().chain(&dv).copied().collect();
    all.sort();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    assert!(split_indices(3, None, 0.01, 1).is_err());
    assert!(split_indices(10, None, 1.5, 1).is_err());
}

// ---------------------------------------------------------------- tasks

#[test]
fn load_tasks() {
    let e = Task::from_name("sst3").unwrap_err().to_string();
    for n in TASK_NAMES {
        assert!(e.contains(n), "{e}");
    }
    assert_eq!(
        Task::from_name("SST-2").unwrap(),
        Task::Glue(GlueTask::Sst2)
    );
    assert_eq!(
        Task::from_name("squad_v2").unwrap(),
        Task::Squad { v2: true }
    );

    let d = tempfile::tempdir().unwrap();
    let t = tiny_tokenizer(d.path(), &[]);
    let mnli = d.path().join("mnli");
    std::fs::create_dir(&mnli).unwrap();
    let header = "index\tsentence1\tsentence2\tgold_label\n";
    write(
        &mnli,
        "train.tsv",
        &format!("{header}0\tthe fox\tthe dog\tneutral\n1\tthe cat\tthe cat\tentailment\n"),
    );
    write(
        &mnli,
        "dev_matched.tsv",
        &format!("{header}0\ta fox\ta dog\tcontradiction\n"),
    );
    write(
        &mnli,
        "dev_mismatched.tsv",
        &format!("{header}0\tthe\tthe\tentailment\n"),
    );
    let td = load_task(&TaskSpec::new("mnli", &mnli), &t).unwrap();
    assert_eq!(td.kind, TaskKind::Classification { num_labels: 3 });
    assert_eq!(td.train.as_ref().unwrap().len(), 2);
    assert_eq!(td.dev.as_ref().unwrap().name, "mnli/dev_matched");
    assert_eq!(td.extra_dev.len(), 1);
    assert_eq!(td.metrics, [Metric::Accuracy]);
    assert_eq!(td.dev.as_ref().unwrap().class_labels().unwrap(), [2]);

    // A directory without the files.
    let e = load_task(&TaskSpec::new("rte", d.path()), &t)
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.tsv"), "{e}");

    // Polarity with a held-out split.
    let mut pol = String::from("\u{feff}");
    for i in 0..20 {
        pol.push_str(&format!(
            "\"{}\",\"the movie was {} . \n\"\r\n",
            if i % 2 == 0 { "1" } else { "-1" },
            if i % 2 == 0 { "good" } else { "bad" }
        ));
    }
    let pp = write(d.path(), "polarity.csv", &pol);
    let spec = TaskSpec {
        task: "polarity".into(),
        train: Some(pp),
        dev_split: Some(0.25),
        ..TaskSpec::default()
    };
    let td = load_task(&spec, &t).unwrap();
    let (tr, dv) = (td.train.unwrap(), td.dev.unwrap());
    assert_eq!((tr.len(), dv.len()), (14, 6));
    assert_eq!(
        dv.class_labels()
            .unwrap()
            .iter()
            .filter(|&&c| c == 1)
            .count(),
        3
    );
    assert_eq!(td.metrics, [Metric::Accuracy, Metric::F1]);

    // CSV with named columns and string labels.
    let csvd = d.path().join("csv");
    std::fs::create_dir(&csvd).unwrap();
    write(
        &csvd,
        "train.csv",
        "txt,lab\ngood movie,yes\nbad movie,no\n",
    );
    write(&csvd, "dev.csv", "txt,lab\n\"good, good\",yes\n");
    let spec = TaskSpec {
        text_a: "txt".into(),
        label: Some("lab".into()),
        ..TaskSpec::new("csv", &csvd)
    };
    let td = load_task(&spec, &t).unwrap();
    assert_eq!(td.label_names, ["no", "yes"]);
    assert_eq!(td.dev.as_ref().unwrap().class_labels().unwrap(), [1]);
    let spec = TaskSpec {
        text_a: String::new(),
        ..spec
    };
    assert!(load_task(&spec, &t).is_err());

    // SQuAD through the loader.
    let sqd = d.path().join("squad");
    std::fs::create_dir(&sqd).unwrap();
    write(
        &sqd,
        "dev-v1.1.json",
        &squad_json(
            "the quick brown fox",
            r#"{"id": "a", "question": "what", "answers": [{"text": "brown fox", "answer_start": 10}]}"#,
        ),
    );
    let td = load_task(&TaskSpec::new("squad", &sqd), &t).unwrap();
    assert_eq!(td.kind, TaskKind::QuestionAnswering);
    let dev = td.dev.unwrap();
    assert_eq!(
        dev.features[0].label,
        FeatureLabel::Span { start: 5, end: 6 }
    );
    assert!(td.train.is_none());
}
