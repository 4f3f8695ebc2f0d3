//! The crate's layers import in one direction only.
//!
//! `src/` is layered, each layer importing only the ones before it:
//!
//! | layer | modules |
//! |---|---|
//! | 0 | `core` |
//! | 1 | `connectors` |
//! | 2 | `topology` |
//! | 3 | `dataflow` |
//! | 4 | `runtime` |
//! | 5 | `cli`, `http`, `report`, `svg`, `gen` (the commands on top) |
//!
//! This test reads every source file and fails on any `crate::<module>`
//! path (in a `use` or inline) that reaches a later layer, naming the file,
//! the line and the path. `gen` also may not import the engine at all: it is
//! the synthetic data generator, usable on its own.

use std::path::{Path, PathBuf};

fn layer(module: &str) -> Option<u8> {
    Some(match module {
        "core" => 0,
        "connectors" => 1,
        "topology" => 2,
        "dataflow" => 3,
        "runtime" => 4,
        "cli" | "http" | "report" | "svg" | "gen" => 5,
        _ => return None,
    })
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn ident(c: &char) -> bool {
    c.is_ascii_alphanumeric() || *c == '_'
}

/// The top-level modules `code` names after `crate::`, with the byte offset
/// of each; grouped imports (`crate::{a::x, b}`, over several lines too) included.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let start = from + at;
        let after = &code[start + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let (mut depth, mut item, mut items) = (0, String::new(), Vec::new());
            for c in group.chars() {
                match c {
                    '}' if depth == 0 => break,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    '{' => {
                        depth += 1;
                        item.push(c)
                    }
                    '}' => {
                        depth -= 1;
                        item.push(c)
                    }
                    _ => item.push(c),
                }
            }
            items.push(item);
            for i in items {
                let name: String = i.trim().chars().take_while(ident).collect();
                if !name.is_empty() {
                    out.push((start, name));
                }
            }
        } else {
            out.push((start, after.chars().take_while(ident).collect()));
        }
        from = start + "crate::".len();
    }
    out
}

#[test]
fn the_checker_sees_plain_and_grouped_paths() {
    let names =
        |code: &str| -> Vec<String> { crate_paths(code).into_iter().map(|p| p.1).collect() };
    assert_eq!(names("use crate::runtime::Fault;"), vec!["runtime"]);
    assert_eq!(
        names("use crate::{\n    core::fault::Fault,\n    dataflow::{tap, progress},\n};"),
        vec!["core", "dataflow"]
    );
    assert_eq!(
        names("let f = crate::http::serve(x, crate::runtime::y);"),
        vec!["http", "runtime"]
    );
}

#[test]
fn no_layer_imports_a_later_one() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = top.trim_end_matches(".rs");
        let Some(own) = layer(module) else {
            continue; // lib.rs, main.rs: the crate root and the binary.
        };
        let text = std::fs::read_to_string(f).unwrap();
        // Comments are not code: strip `//` comments, keeping offsets for line numbers.
        let code: String = text
            .lines()
            .map(|l| {
                format!(
                    "{:<width$}\n",
                    l.split("//").next().unwrap_or(""),
                    width = l.len()
                )
            })
            .collect();
        for (at, name) in crate_paths(&code) {
            let gen_alone = module == "gen" && name != "gen";
            if layer(&name).is_some_and(|l| l > own) || gen_alone {
                violations.push(format!(
                    "src/{}:{}: `{module}` (layer {own}) uses `crate::{name}` (layer {:?})",
                    rel.display(),
                    code[..at].matches('\n').count() + 1,
                    layer(&name)
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layers:\n{}",
        violations.join("\n")
    );
    assert!(files.len() > 20, "the test found the sources");
}
