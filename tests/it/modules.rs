//! The shape of `src/`: no cycle between top-level modules.
//!
//! Reads every `.rs` file under `src/`, takes the `crate::a` paths (and the
//! first names of `use crate::{a, b::c}` groups) outside comments and
//! outside test code (`tests.rs`, `*_tests.rs`, and a `#[cfg(test)] mod`),
//! and fails on a cycle between top-level
//! modules, naming it (`a → b → a`) with the file and line of each edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// module → (module it uses → where, first seen).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

#[test]
fn no_cycle_between_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    // The parser sees the edges it must see: a broken parser passes nothing.
    assert!(
        graph
            .get("listener")
            .is_some_and(|d| d.contains_key("state")),
        "the parser found no listener → state edge: {graph:#?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        let mut text = cycle.join(" → ");
        for pair in cycle.windows(2) {
            text.push_str(&format!(
                "\n  {} → {} at {}",
                pair[0], pair[1], graph[&pair[0]][&pair[1]]
            ));
        }
        panic!("module cycle in src/: {text}");
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut graph = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph
            .entry(a.to_owned())
            .or_default()
            .insert(b.to_owned(), String::new());
    }
    let cycle = find_cycle(&graph).expect("a → b → c → a");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    graph.get_mut("c").unwrap().remove("a");
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn the_parser_reads_paths_and_groups_but_not_comments() {
    let text = "use crate::a::X;\n// crate::commented\nuse crate::{b::Y, c,\n    d::{e, f}};\n\
                fn x() { crate::g::h(); } // crate::trailing\n#[cfg(test)]\nmod t;\n\
                #[cfg(test)]\nfn only() { crate::i::j(); }\n#[cfg(test)]\nmod tests {\n    use crate::tested;\n}\n";
    let names: BTreeSet<String> = used_modules(text).into_iter().map(|(m, _)| m).collect();
    let want: BTreeSet<String> = ["a", "b", "c", "d", "g", "i"].map(String::from).into();
    assert_eq!(names, want);
}

fn module_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(src, f)).collect();
    for file in &files {
        let Some(top) = top_module(src, file) else {
            continue;
        };
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let shown = file.strip_prefix(src.parent().unwrap()).unwrap_or(file);
        let edges = graph.entry(top.clone()).or_default();
        for (used, line) in used_modules(&text) {
            if used != top && modules.contains(&used) {
                edges
                    .entry(used)
                    .or_insert_with(|| format!("{}:{line}", shown.display()));
            }
        }
    }
    graph
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a.rs` and `src/a/**.rs` → `a`; `lib.rs` and `main.rs` are the root.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?;
    let first = first.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// The top-level modules `text` names through `crate::`, with the line of
/// each mention, up to its inline `#[cfg(test)] mod tests { … }`.
fn used_modules(text: &str) -> Vec<(String, usize)> {
    // Code only: comments dropped, line numbers kept.
    let mut code = String::new();
    let mut lines = Vec::new();
    let mut test_only = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            test_only = true;
            continue;
        }
        if test_only && !trimmed.starts_with("#[") && !trimmed.is_empty() {
            test_only = false;
            if trimmed.starts_with("mod ") && trimmed.ends_with('{') {
                break; // the inline test module, last in the file
            }
            if trimmed.starts_with("mod ") {
                continue; // a test module in its own file (skipped there)
            }
        }
        let line = line.split("//").next().unwrap_or("");
        for _ in line.chars() {
            lines.push(i + 1);
        }
        lines.push(i + 1);
        code.push_str(line);
        code.push('\n');
    }
    let chars: Vec<char> = code.chars().collect();
    let ident = |from: usize| -> String {
        chars[from..]
            .iter()
            .take_while(|c| c.is_alphanumeric() || **c == '_')
            .collect()
    };
    let mut found = Vec::new();
    let pattern: Vec<char> = "crate::".chars().collect();
    let mut i = 0;
    while i + pattern.len() <= chars.len() {
        let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if !(starts_word && chars[i..i + pattern.len()] == pattern[..]) {
            i += 1;
            continue;
        }
        let at = i + pattern.len();
        if chars.get(at) == Some(&'{') {
            // A group: the first name of each item at depth one.
            let mut depth = 0;
            let mut expect_name = true;
            let mut j = at;
            while j < chars.len() {
                match chars[j] {
                    '{' => {
                        depth += 1;
                        if depth == 1 {
                            expect_name = true;
                        }
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect_name = true,
                    c if depth == 1 && expect_name && (c.is_alphabetic() || c == '_') => {
                        found.push((ident(j), lines[j]));
                        expect_name = false;
                    }
                    _ => {}
                }
                j += 1;
            }
            i = j;
        } else {
            let name = ident(at);
            if !name.is_empty() {
                found.push((name, lines[at]));
            }
            i = at;
        }
    }
    found
}

/// A cycle as `[a, b, …, a]`, or `None`.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| n == node)?;
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(BTreeMap::keys) {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}
