//! The module import graph of every workspace crate has no cycles (issue 13).
//!
//! Reads each crate's `src/` as text: a file's module path comes from its place in the tree
//! (`a/b.rs` and `a/b/mod.rs` are `a::b`), and its dependencies from the `crate::…` and
//! `super::…` paths it names before its first `#[cfg(test)]` module (test modules sit at the bottom). A dependency counts at
//! the deepest module it names; a module naming its own ancestor or descendant (a `mod.rs`
//! re-exporting its children, a child using its parent's types) is not a cycle of interest.
//! Any strongly connected component of more than one module fails the test and is printed.
//!
//! Two levels are checked: files (`runtime::scatter` -> `runtime::invoke`), and, for the crates
//! listed in `LAYERED`, top-level modules (`runtime` -> `partition`), which must form layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Workspace crates whose `src/` is checked, relative to the workspace root.
const CRATES: &[&str] = &[
    "broker",
    "engine",
    "replication",
    "kafka-wire",
    "loadgen",
    "sluice",
    "tuning",
];

type Module = Vec<String>;

#[test]
fn no_module_import_cycles_in_any_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut failures = Vec::new();
    for name in CRATES {
        let src = root.join(name).join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = import_graph(&src);
        for cycle in cycles(&file_level(&graph)) {
            failures.push(format!("{name}: {}", render(&cycle)));
        }
    }
    assert!(
        failures.is_empty(),
        "module import cycles:\n{}",
        failures.join("\n")
    );
}

/// Every module's dependencies on other modules of the same crate.
fn import_graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    collect_rs(src, &mut files);
    let modules: BTreeMap<Module, PathBuf> =
        files.into_iter().map(|f| (module_of(src, &f), f)).collect();
    let path_re = regex::Regex::new(r"\b(crate|super)((?:::\w+)+)").expect("regex");
    let group_re = regex::Regex::new(r"(?s)use\s+crate::\{([^;]*)\};").expect("regex");
    let item_re = regex::Regex::new(r"\w+(?:::\w+)*").expect("regex");
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let text = strip(&std::fs::read_to_string(file).expect("read source"));
        let is_dir_module = matches!(
            file.file_name().and_then(|n| n.to_str()),
            Some("mod.rs" | "lib.rs" | "main.rs")
        );
        let mut deps = BTreeSet::new();
        for m in path_re.captures_iter(&text) {
            let mut parts: Vec<String> = m[2].split("::").skip(1).map(str::to_owned).collect();
            let mut base: Module = Vec::new();
            if &m[1] == "super" {
                base = module.clone();
                if !is_dir_module || !base.is_empty() {
                    base.pop();
                }
                while parts.first().is_some_and(|p| p == "super") {
                    base.pop();
                    parts.remove(0);
                }
            }
            base.extend(parts);
            deps.extend(resolve(&modules, &base));
        }
        for m in group_re.captures_iter(&text) {
            for item in item_re.find_iter(&m[1]) {
                let path = item
                    .as_str()
                    .split("::")
                    .map(str::to_owned)
                    .collect::<Vec<_>>();
                deps.extend(resolve(&modules, &path));
            }
        }
        deps.remove(module);
        graph.insert(module.clone(), deps);
    }
    graph
}

/// Edges between files, leaving out a module's edges to its own ancestors and descendants.
fn file_level(graph: &BTreeMap<Module, BTreeSet<Module>>) -> BTreeMap<Module, BTreeSet<Module>> {
    graph
        .iter()
        .map(|(a, deps)| {
            let deps = deps
                .iter()
                .filter(|b| !a.starts_with(b) && !b.starts_with(a))
                .cloned();
            (a.clone(), deps.collect())
        })
        .collect()
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let Some((w, _)) = s.graph.get_key_value(w) else {
                continue;
            };
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// The deepest module that `path` names, if any.
fn resolve(modules: &BTreeMap<Module, PathBuf>, path: &[String]) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains_key(m))
}

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Module = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

/// The source without comments and without the test modules at its bottom.
fn strip(text: &str) -> String {
    let tests = regex::Regex::new(r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod ").expect("regex");
    let code = match tests.find(text) {
        Some(at) => &text[..at.start()],
        None => text,
    };
    code.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn render(cycle: &[Module]) -> String {
    cycle
        .iter()
        .map(|m| m.join("::"))
        .collect::<Vec<_>>()
        .join(", ")
}
