//! The layering of the crate's top-level modules (docs/ARCHITECTURE.md,
//! "Layers"): a module may use only modules of a lower layer (or its own).
//! Read from the sources: every `crate::<module>` path outside comments.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first; modules on one line are the same layer and must not use
/// each other.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["out", "fault"],
    &["kernels"],
    &["device"],
    &["backend"],
    &["data"],
    &["model"],
    &["train"],
    &["compress"],
    &["sweep", "bench", "plot"],
    &["cli"],
];

/// What the crate root exports (macros, and `pub use` in src/lib.rs) and
/// the module that defines each.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("bail", "error"),
    ("ensure", "error"),
    ("outln", "out"),
    ("out", "out"),
    ("Error", "error"),
    ("Result", "error"),
];

/// The module a name after `crate::` stands for.
fn module_of(name: &str) -> String {
    ROOT_ITEMS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, m)| m.to_string())
        .unwrap_or_else(|| name.to_string())
}

fn layer(m: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&m))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs")
            // An operation's tests.rs is compiled into this test crate
            // (tests/it/main.rs), where `crate::` means the test crate.
            && p.file_name().is_none_or(|f| f != "tests.rs")
        {
            out.push(p);
        }
    }
}

/// The code of a line: string literals blanked, a `//` comment dropped.
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_str => {
                chars.next();
                out.push_str("  ");
            }
            '"' => {
                in_str = !in_str;
                out.push('"');
            }
            '/' if !in_str && chars.peek() == Some(&'/') => break,
            _ if in_str => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// `(file, line, from, to)` for every use of a top-level module by another.
fn uses(src: &Path) -> Vec<(String, usize, String, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap().to_string_lossy().into_owned();
        let top = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = code_of(line);
            let mut rest = code.as_str();
            while let Some(at) = rest.find("crate::") {
                let after = &rest[at + 7..];
                // `crate::{a, b::c}`: every first segment inside the braces.
                let names: Vec<String> = if let Some(group) = after.strip_prefix('{') {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    group
                        .split(',')
                        .map(|p| p.trim().split("::").next().unwrap_or("").to_string())
                        .filter(|n| !n.is_empty())
                        .collect()
                } else {
                    vec![after
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect()]
                };
                for name in names {
                    let module = module_of(&name);
                    if module != top {
                        found.push((rel.clone(), n + 1, top.clone(), module));
                    }
                }
                rest = after;
            }
        }
    }
    found
}

#[test]
fn no_module_uses_one_above_it_or_beside_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut top_level = BTreeSet::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let name = name.trim_end_matches(".rs").to_string();
        if name != "main" && name != "lib" {
            top_level.insert(name);
        }
    }
    for m in &top_level {
        assert!(
            layer(m).is_some(),
            "src/{m}: a top-level module missing from LAYERS (and docs/ARCHITECTURE.md)"
        );
    }
    let all = uses(&src);
    assert!(
        all.iter()
            .any(|(_, _, f, t)| f == "compress" && t == "train"),
        "the scan found no compress → train use: it reads nothing"
    );
    let bad: Vec<String> = all
        .iter()
        .filter(|(_, _, from, to)| match (layer(from), layer(to)) {
            (Some(a), Some(b)) => b >= a,
            _ => true,
        })
        .map(|(file, line, from, to)| format!("src/{file}:{line}: {from} uses {to}"))
        .collect();
    assert!(
        bad.is_empty(),
        "uses against the layering:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_layer_scan_sees_paths_and_macros_but_not_comments_or_strings() {
    let d = tempfile::tempdir().unwrap();
    let s = d.path();
    std::fs::create_dir_all(s.join("data")).unwrap();
    std::fs::write(
        s.join("data/x.rs"),
        "use crate::train::metrics::Metric; // crate::cli in a comment\n\
         // crate::compress only in a comment\n\
         use crate::{bail, model::Bert};\n\
         fn f() -> crate::Result<()> { crate::bail!(\"crate::device in a string\") }\n",
    )
    .unwrap();
    let got: Vec<(String, String)> = uses(s).into_iter().map(|(_, _, f, t)| (f, t)).collect();
    let want: Vec<(String, String)> = [
        ("data", "train"),
        ("data", "error"),
        ("data", "model"),
        ("data", "error"),
        ("data", "error"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
}
