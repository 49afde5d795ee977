//! The import graph as `docs/architecture.md` draws it: every arrow runs downward.
//!
//! Reads every source file of the crate, collects what it imports from the crate (`use` trees
//! and `crate::`, `super::`, `self::` paths; test code excluded), and checks two rules:
//! - the top-level modules form layers, and a module imports only from layers below its own
//!   ([`LAYERS`]): nothing under `docker/` or `auth/` reaches up into `stages`, say;
//! - the files form no import cycle, inside a module or across modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// The layers, from the bottom: a module may import from earlier rows only (its own row
/// excluded, so two modules of one row never import each other).
const LAYERS: &[&[&str]] = &[
    &[
        "util",
        "output",
        "signals",
        "pull_policy",
        "reference",
        "policy",
        "assets",
    ],
    &["error"],
    &["job"],
    &["naming"],
    &["config", "jobdir"],
    &["auth"],
    &["trust"],
    &["docker"],
    &["stages"],
    &["cli"],
];

/// Module paths of test code, which may import anything.
const TEST_MODULES: &[&str] = &["tests", "robustness_tests", "architecture_tests"];

type Module = Vec<String>;

fn layer(top: &str) -> usize {
    LAYERS
        .iter()
        .position(|row| row.contains(&top))
        .unwrap_or_else(|| panic!("module {top} is in no layer of architecture_tests::LAYERS"))
}

/// Every source file of the library with its module path (`src/a/b.rs` and `src/a/b/mod.rs`
/// are `a::b`).
fn files() -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    // At run time when cargo (or the unprivileged CI step, with a copy) says where.
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let src = root.join("src");
    let mut paths = Vec::new();
    walk(&src, &mut paths);
    paths
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let mut module: Module = rel
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            match module.last().map(String::as_str) {
                Some("main") if module.len() == 1 => return None,
                Some("lib") if module.len() == 1 => module.clear(),
                Some("mod") => {
                    module.pop();
                }
                _ => {}
            }
            let test = module.iter().any(|m| TEST_MODULES.contains(&m.as_str()));
            (!test).then_some((module, path))
        })
        .collect()
}

/// Collects the crate paths a file names, resolved to absolute module paths.
struct Imports<'a> {
    here: &'a [String],
    found: BTreeSet<Module>,
}

impl Imports<'_> {
    fn add(&mut self, segments: &[String]) {
        let mut resolved: Module = Vec::new();
        let mut rest = segments;
        match segments.first().map(String::as_str) {
            Some("crate") => rest = &segments[1..],
            Some("self") => {
                resolved = self.here.to_vec();
                rest = &segments[1..];
            }
            Some("super") => {
                resolved = self.here.to_vec();
                while rest.first().map(String::as_str) == Some("super") {
                    resolved.pop();
                    rest = &rest[1..];
                }
            }
            _ => return,
        }
        resolved.extend(rest.iter().cloned());
        self.found.insert(resolved);
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix.clone();
                if n.ident != "self" {
                    full.push(n.ident.to_string());
                }
                self.add(&full);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                if r.ident != "self" {
                    full.push(r.ident.to_string());
                }
                self.add(&full);
            }
            syn::UseTree::Glob(_) => self.add(prefix),
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

impl<'ast> Visit<'ast> for Imports<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_test_only(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_test_only(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.add(&segments);
        syn::visit::visit_path(self, p);
    }
}

/// File-level import edges: (importer, imported), both as module paths of files.
fn edges() -> BTreeSet<(Module, Module)> {
    let files = files();
    let mut edges = BTreeSet::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut imports = Imports {
            here: module,
            found: BTreeSet::new(),
        };
        imports.visit_file(&file);
        for target in imports.found {
            // The file that defines it: the longest file module that is a prefix.
            let owner = (0..=target.len())
                .rev()
                .map(|n| target[..n].to_vec())
                .find(|prefix| files.contains_key(prefix));
            if let Some(owner) = owner
                && owner != *module
                && !owner.is_empty()
            {
                edges.insert((module.clone(), owner));
            }
        }
    }
    edges
}

fn show(m: &Module) -> String {
    m.join("::")
}

#[test]
fn modules_import_only_from_layers_below() {
    let mut wrong = Vec::new();
    for (from, to) in edges() {
        let (Some(a), Some(b)) = (from.first(), to.first()) else {
            continue;
        };
        if a != b && layer(b) >= layer(a) {
            wrong.push(format!("{} -> {}", show(&from), show(&to)));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that run up or sideways (see docs/architecture.md):\n{}",
        wrong.join("\n")
    );
}

/// A cycle of the graph, if it has one.
fn find_cycle(edges: &BTreeSet<(Module, Module)>) -> Option<Vec<String>> {
    let mut graph: BTreeMap<&Module, Vec<&Module>> = BTreeMap::new();
    for (from, to) in edges {
        graph.entry(from).or_default().push(to);
    }
    // Depth-first search; a node met again on the current path closes a cycle.
    fn visit<'a>(
        node: &'a Module,
        graph: &BTreeMap<&'a Module, Vec<&'a Module>>,
        path: &mut Vec<&'a Module>,
        done: &mut BTreeSet<&'a Module>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = path[start..].iter().map(|m| show(m)).collect();
            cycle.push(show(node));
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, &graph, &mut Vec::new(), &mut done))
}

#[test]
fn files_import_each_other_in_no_cycle() {
    if let Some(cycle) = find_cycle(&edges()) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_checker_sees_imports_and_cycles() {
    // The test above would pass on a crate it cannot read: make sure it reads this one.
    let edges = edges();
    let has = |from: &str, to: &str| edges.iter().any(|(a, b)| show(a) == from && show(b) == to);
    assert!(has("stages::run", "docker::shell"), "{edges:?}");
    assert!(has("docker::pull", "auth"), "{edges:?}");
    assert!(has("auth::cache", "util"), "{edges:?}");
    assert!(edges.len() > 60, "only {} edges found", edges.len());
    let module = |s: &str| s.split("::").map(str::to_owned).collect::<Module>();
    let mut cyclic: BTreeSet<(Module, Module)> = [("a", "b"), ("b", "c"), ("c", "d")]
        .iter()
        .map(|(x, y)| (module(x), module(y)))
        .collect();
    assert_eq!(find_cycle(&cyclic), None);
    cyclic.insert((module("d"), module("b")));
    assert_eq!(find_cycle(&cyclic).unwrap(), ["b", "c", "d", "b"]);
}

/// The module graph as `docs/architecture.md` states it: the lines of its `imports` block,
/// `module → imported, ...`, one per module that imports from the crate.
fn documented_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap_or_default();
    let block = doc
        .split("```imports\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap_or_default();
    block
        .lines()
        .filter_map(|line| line.split_once('→'))
        .map(|(from, to)| {
            let to = to
                .split(',')
                .map(|m| m.trim().to_owned())
                .filter(|m| !m.is_empty());
            (from.trim().to_owned(), to.collect())
        })
        .collect()
}

#[test]
fn the_diagram_in_the_docs_is_the_import_graph() {
    let mut actual: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges() {
        let (Some(a), Some(b)) = (from.first(), to.first()) else {
            continue;
        };
        if a != b {
            actual.entry(a.clone()).or_default().insert(b.clone());
        }
    }
    let documented = documented_graph();
    if documented != actual {
        // Ordered as the layers, top first, as the document shows them.
        let mut block = String::new();
        for row in LAYERS.iter().rev() {
            for module in row.iter() {
                if let Some(to) = actual.get(*module) {
                    let mut to: Vec<&String> = to.iter().collect();
                    to.sort_by_key(|m| (std::cmp::Reverse(layer(m)), m.as_str()));
                    let to: Vec<&str> = to.iter().map(|m| m.as_str()).collect();
                    block.push_str(&format!("{module:<8} → {}\n", to.join(", ")));
                }
            }
        }
        panic!(
            "docs/architecture.md's `imports` block differs from the code's imports; it should \
             read:\n```imports\n{block}```"
        );
    }
}
