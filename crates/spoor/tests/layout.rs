//! The house rules of the code layout, checked against the source tree itself.
//!
//! The crates, and the folders and files inside them, *are* Spoor's architecture (`STYLE.md`):
//! where a line of code stands says what it may know. Two rules keep that picture true, and this
//! test walks `crates/*/src` of the workspace to hold every crate to them:
//!
//! 1. **One screen per file, more or less: no file longer than 1,000 lines**, counting every line,
//!    inline tests included. A file that outgrows that has become two things; split it along the
//!    seam that is already there. Exempt: `crates/traceql/src/parse.rs`, the TraceQL parser, which
//!    reads best whole (one recursive-descent grammar).
//! 2. **No import circles between the files of a crate.** Dependencies point one way, so every
//!    module can be read knowing only what is below it, and a change travels up, never around.
//!    Files that import each other in a loop are one module in disguise: merge them, or move what
//!    they share down into a module both can import.
//!
//! Run it with `cargo test -p spoor --test layout`. It reads files only; nothing is built or run.
//!
//! How rule 2 reads the code (std only, no compiler, so it is a careful approximation):
//! - A node is one module *file*: `src/lib.rs` or `src/main.rs` is the crate root `crate`,
//!   `src/a.rs` or `src/a/mod.rs` is `crate::a`, `src/a/b.rs` is `crate::a::b`. Files named
//!   `tests.rs` or under a `tests/` folder are test code and no node; so is `src/main.rs` or
//!   `src/bin/` next to a `src/lib.rs` (a separate crate that reaches the library by its name).
//! - An edge A → B is a path in A that names module B: `use crate::…`, `use super::…`,
//!   `use self::…`, `use child::…` (grouped `use a::{b, c::{d}}` trees included, over any number of
//!   lines), and the same paths written in code (`crate::x::f()`, `super::Y`, `child::f()`).
//!   `super` and `self` resolve against the module the path stands in, inline `mod x { … }`
//!   blocks included. Declaring a child (`mod x;`) is no edge; using it is.
//! - A path goes to the deepest module file it names (`crate::a::b::Item` → `a/b.rs` when that
//!   file exists). When the rest names something the module brought in with `use` (a re-export
//!   such as `pub use b::Item`, or a private import that children may see), the edge follows it to
//!   where it comes from, so a root that merely re-exports `Error` from `error.rs` is no hub; a
//!   name taken from outside the crate makes no edge. What the module defines itself keeps the edge
//!   on that module: a parent that re-exports from a child while the child uses the parent's own
//!   items is a circle, and is reported.
//! - Ignored: comments, string and char literals, items under `#[cfg(test)]` (test modules
//!   naturally import their parent), self-edges, and paths to nothing the crate has (another
//!   crate, or a module or item not there).
//! - Circles are the strongly connected components of more than one file (Tarjan). Each is
//!   reported as circles (`crate-name: a → b → c → a`) that between them pass through every import
//!   inside it, with its files and the place of each of those imports.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 1_000;
/// Files that may stay longer than [`MAX_LINES`], by path from the workspace root.
const LONG_FILE_EXEMPT: &[&str] = &["crates/traceql/src/parse.rs"];

#[test]
fn no_file_longer_than_a_screenful() {
    let crates = workspace_crates();
    let mut long: Vec<(usize, String)> = Vec::new();
    for krate in &crates {
        for (path, text) in &krate.files {
            let shown = format!("{}/src/{}", krate.dir, path);
            let lines = text.lines().count();
            if lines > MAX_LINES && !LONG_FILE_EXEMPT.contains(&shown.as_str()) {
                long.push((lines, shown));
            }
        }
    }
    long.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    if !long.is_empty() {
        let mut msg = format!("{} files are longer than {MAX_LINES} lines; split each along its seams:\n", long.len());
        for (lines, path) in &long {
            let _ = writeln!(msg, "  {path}: {lines} lines");
        }
        panic!("{msg}");
    }
}

#[test]
fn no_import_circles_between_the_files_of_a_crate() {
    let crates = workspace_crates();
    let mut report = String::new();
    let mut count = 0usize;
    for krate in &crates {
        let graph = Graph::build(&krate.name, &krate.dir, &krate.files);
        for component in graph.circles() {
            count += 1;
            report.push_str(&graph.describe(&component));
        }
    }
    if count > 0 {
        panic!(
            "{count} groups of files import each other in circles; cut one import of each loop (move what both \
             sides need below both, or merge the files):\n\n{report}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The workspace on disk.

struct CrateFiles {
    /// The package name from its `Cargo.toml` (the directory name if there is none yet).
    name: String,
    /// `crates/<dir>`, from the workspace root.
    dir: String,
    /// Every `.rs` file under `src`, by path from `src` with `/` separators, and its text.
    files: Vec<(String, String)>,
}

fn workspace_crates() -> Vec<CrateFiles> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let mut dirs: Vec<PathBuf> = match std::fs::read_dir(root.join("crates")) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("src").is_dir()).collect(),
        Err(e) => panic!("cannot list {}/crates: {e}", root.display()),
    };
    dirs.sort();
    let crates: Vec<CrateFiles> = dirs
        .iter()
        .map(|dir| {
            let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let name = std::fs::read_to_string(dir.join("Cargo.toml"))
                .ok()
                .and_then(|toml| package_name(&toml))
                .unwrap_or_else(|| dir_name.clone());
            let mut files = Vec::new();
            collect_rust_files(&dir.join("src"), "", &mut files);
            files.sort();
            CrateFiles { name, dir: format!("crates/{dir_name}"), files }
        })
        .collect();
    // A walk that finds nothing must not pass: this very crate has to be among those read.
    assert!(
        crates.iter().any(|c| c.dir == "crates/spoor" && c.files.iter().any(|(p, _)| p == "main.rs")),
        "the layout test found no crates/spoor/src/main.rs under {}; is the workspace root right?",
        root.display()
    );
    crates
}

fn collect_rust_files(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let shown = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        if path.is_dir() {
            collect_rust_files(&path, &shown, out);
        } else if name.ends_with(".rs") {
            // Files being moved by someone else may vanish between listing and reading.
            if let Ok(bytes) = std::fs::read(&path) {
                out.push((shown, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
}

fn package_name(toml: &str) -> Option<String> {
    let mut in_package = false;
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(rest) = line.strip_prefix("name") {
            let value = rest.trim_start().strip_prefix('=')?.trim();
            return Some(value.trim_matches('"').to_string());
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Source text → tokens, with comments, literals and test-only items gone.

/// The code with comments, string literals and char literals blanked to spaces; line breaks
/// stay, so line numbers still hold.
fn blank_code(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        match comment_or_literal_end(&c, i) {
            Some(end) => {
                out.extend(c[i..end.min(c.len())].iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }));
                i = end;
            }
            None => {
                out.push(c[i]);
                i += 1;
            }
        }
    }
    out
}

/// Where the comment, string or char literal that starts at `i` ends, if one starts there.
fn comment_or_literal_end(c: &[char], i: usize) -> Option<usize> {
    let at = |k: usize| c.get(k).copied();
    match (c[i], at(i + 1)) {
        ('/', Some('/')) => Some((i..c.len()).find(|&j| c[j] == '\n').unwrap_or(c.len())),
        ('/', Some('*')) => {
            let (mut j, mut depth) = (i + 2, 1);
            while j < c.len() && depth > 0 {
                match (c[j], at(j + 1)) {
                    ('/', Some('*')) => (depth, j) = (depth + 1, j + 2),
                    ('*', Some('/')) => (depth, j) = (depth - 1, j + 2),
                    _ => j += 1,
                }
            }
            Some(j)
        }
        ('"', _) => {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            Some(j + 1)
        }
        // A char literal ('x', '\n', '\u{1F600}', '"'); any other quote is a lifetime or label.
        ('\'', Some('\\')) => Some((i + 3..c.len()).find(|&j| c[j] == '\'' || c[j] == '\n').map_or(c.len(), |j| j + 1)),
        ('\'', Some(n)) if n != '\'' && at(i + 2) == Some('\'') => Some(i + 3),
        _ if i == 0 || !is_ident_char(c[i - 1]) => raw_string_end(c, i),
        _ => None,
    }
}

/// Where a raw string (`r"…"`, `r#"…"#`, `br"…"`, `cr"…"`) starting at `i` ends, if one does.
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    let j = if matches!(c.get(i), Some('b' | 'c')) { i + 1 } else { i };
    if c.get(j) != Some(&'r') {
        return None;
    }
    let hashes = (j + 1..c.len()).take_while(|&k| c[k] == '#').count();
    let open = j + 1 + hashes;
    if c.get(open) != Some(&'"') {
        return None;
    }
    let close = (open + 1..c.len()).find(|&k| c[k] == '"' && (0..hashes).all(|h| c.get(k + 1 + h) == Some(&'#')));
    Some(close.map_or(c.len(), |k| k + 1 + hashes))
}

fn is_ident_char(ch: char) -> bool {
    ch == '_' || ch.is_alphanumeric()
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
    Number,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

fn tokenize(code: &str) -> Vec<Token> {
    let c: Vec<char> = code.chars().collect();
    let mut toks = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_ascii_digit() {
            while i < c.len() && is_ident_char(c[i]) {
                i += 1;
            }
            toks.push(Token { tok: Tok::Number, line });
        } else if is_ident_char(ch) {
            let start = i;
            while i < c.len() && is_ident_char(c[i]) {
                i += 1;
            }
            toks.push(Token { tok: Tok::Ident(c[start..i].iter().collect()), line });
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            toks.push(Token { tok: Tok::PathSep, line });
            i += 2;
        } else {
            toks.push(Token { tok: Tok::Punct(ch), line });
            i += 1;
        }
    }
    toks
}

fn is_word(t: Option<&Token>, word: &str) -> bool {
    matches!(t, Some(Token { tok: Tok::Ident(w), .. }) if w == word)
}

fn is_sep(t: Option<&Token>) -> bool {
    matches!(t, Some(Token { tok: Tok::PathSep, .. }))
}

fn is_punct(t: Option<&Token>, ch: char) -> bool {
    matches!(t, Some(Token { tok: Tok::Punct(p), .. }) if *p == ch)
}

/// The tokens without items under `#[cfg(test)]`; `None` when the whole file is test-only
/// (`#![cfg(test)]`).
fn drop_test_items(toks: Vec<Token>) -> Option<Vec<Token>> {
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        if let Some(end) = attribute_end(&toks, i)
            && is_cfg_test(&toks[i..end])
        {
            if is_punct(toks.get(i + 1), '!') {
                return None;
            }
            let mut j = end;
            while let Some(next) = attribute_end(&toks, j) {
                j = next;
            }
            i = item_end(&toks, j);
            continue;
        }
        out.push(toks[i].clone());
        i += 1;
    }
    Some(out)
}

/// The index just past the attribute `#[…]` or `#![…]` that starts at `i`, if one does.
fn attribute_end(toks: &[Token], i: usize) -> Option<usize> {
    if !is_punct(toks.get(i), '#') {
        return None;
    }
    let open = if is_punct(toks.get(i + 1), '!') { i + 2 } else { i + 1 };
    if !is_punct(toks.get(open), '[') {
        return None;
    }
    Some(closing(toks, open, ('[', ']')))
}

/// The index just past the bracket that closes the one at `open`.
fn closing(toks: &[Token], open: usize, (o, c): (char, char)) -> usize {
    let mut depth = 0usize;
    for (j, t) in toks.iter().enumerate().skip(open) {
        match t.tok {
            Tok::Punct(p) if p == o => depth += 1,
            Tok::Punct(p) if p == c => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// `#[cfg(test)]` or `#[cfg(all(test, …))]`.
fn is_cfg_test(attr: &[Token]) -> bool {
    let words: Vec<&Tok> = attr.iter().map(|t| &t.tok).filter(|t| !matches!(t, Tok::Punct('#' | '!' | '['))).collect();
    let is = |k: usize, w: &str| matches!(words.get(k), Some(Tok::Ident(x)) if x == w);
    let open = |k: usize| matches!(words.get(k), Some(Tok::Punct('(')));
    is(0, "cfg")
        && open(1)
        && (is(2, "test") && matches!(words.get(3), Some(Tok::Punct(')'))) || is(2, "all") && open(3) && is(4, "test"))
}

/// The index just past the item that starts at `i`: its `;`, or the `}` closing its body.
fn item_end(toks: &[Token], i: usize) -> usize {
    let mut depth = 0isize;
    let mut j = i;
    while j < toks.len() {
        match toks[j].tok {
            Tok::Punct('(' | '[') => depth += 1,
            Tok::Punct(')' | ']') => depth -= 1,
            Tok::Punct(';') if depth <= 0 => return j + 1,
            Tok::Punct('{') if depth <= 0 => return closing(toks, j, ('{', '}')),
            _ => {}
        }
        j += 1;
    }
    toks.len()
}

// ---------------------------------------------------------------------------------------------
// Tokens → the module paths a file names.

type ModPath = Vec<String>;

/// One leaf of a `use` tree: `use a::{b, c::d as e}` has `a::b` (binding `b`) and `a::c::d`
/// (binding `e`).
struct UseLeaf {
    path: Vec<String>,
    /// The name it brings into scope; `None` for a glob or `as _`.
    binding: Option<String>,
    glob: bool,
    line: usize,
}

/// Parses the use tree starting at `i` under `prefix`; returns the index after it.
fn use_tree(toks: &[Token], mut i: usize, prefix: &[String], out: &mut Vec<UseLeaf>) -> usize {
    let mut path = prefix.to_vec();
    if path.is_empty() && is_sep(toks.get(i)) {
        path.push("::".to_string()); // `use ::name`: always another crate
        i += 1;
    }
    loop {
        match toks.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(seg)) => {
                path.push(seg.clone());
                let line = toks[i].line;
                i += 1;
                if is_sep(toks.get(i)) {
                    i += 1;
                    continue;
                }
                if path.len() > 1 && path.last().is_some_and(|s| s == "self") {
                    path.pop();
                }
                let mut binding = path.last().cloned();
                if is_word(toks.get(i), "as") {
                    binding = match toks.get(i + 1).map(|t| &t.tok) {
                        Some(Tok::Ident(alias)) if alias != "_" => Some(alias.clone()),
                        _ => None,
                    };
                    i += 2;
                }
                out.push(UseLeaf { path, binding, glob: false, line });
                return i;
            }
            Some(Tok::Punct('*')) => {
                out.push(UseLeaf { path, binding: None, glob: true, line: toks[i].line });
                return i + 1;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.tok) {
                        None | Some(Tok::Punct(';')) => return i,
                        Some(Tok::Punct('}')) => return i + 1,
                        Some(Tok::Punct(',')) => i += 1,
                        _ => {
                            let before = i;
                            i = use_tree(toks, i, &path, out);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
            }
            _ => return i,
        }
    }
}

/// A path written in a file, resolved to an absolute module path (segments after `crate`).
struct Reference {
    target: ModPath,
    line: usize,
    written: String,
}

#[derive(Default)]
struct ParsedFile {
    refs: Vec<Reference>,
    /// Names brought in at the top of the file by `use`, and where from (`None`: another crate).
    imports: HashMap<String, Option<ModPath>>,
    /// Whether the top of the file also has a glob import from the crate (`use crate::a::*`),
    /// which may bring in names this test cannot list.
    local_glob: bool,
    /// Names of the items the file defines (`fn`, `struct`, inline `mod x { … }`, …).
    defines: BTreeSet<String>,
}

const ITEM_KEYWORDS: &[&str] = &["fn", "struct", "enum", "union", "trait", "type", "const", "static", "macro_rules"];

/// Resolves `path`, written in module `here`, to an absolute path in the crate; `None` when it
/// leaves the crate or names nothing known.
fn resolve(here: &[String], path: &[String], is_module: &dyn Fn(&[String]) -> bool) -> Option<ModPath> {
    let first = path.first()?;
    match first.as_str() {
        "::" => None,
        "crate" => Some(path[1..].to_vec()),
        "self" => Some(here.iter().chain(&path[1..]).cloned().collect()),
        "super" => {
            let mut m = here.to_vec();
            let supers = path.iter().take_while(|s| *s == "super").count();
            for _ in 0..supers {
                m.pop()?;
            }
            m.extend(path[supers..].iter().cloned());
            Some(m)
        }
        _ => {
            let mut child = here.to_vec();
            child.push(first.clone());
            is_module(&child).then(|| here.iter().chain(path).cloned().collect())
        }
    }
}

fn parse_file(module: &[String], text: &str, is_module: &dyn Fn(&[String]) -> bool) -> ParsedFile {
    let mut parsed = ParsedFile::default();
    let Some(toks) = drop_test_items(tokenize(&blank_code(text))) else { return parsed };
    let mut depth = 0usize;
    // Inline `mod x { … }` blocks open around the current token, with the depth inside each.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let here: ModPath = module.iter().cloned().chain(inline.iter().map(|(n, _)| n.clone())).collect();
        match &toks[i].tok {
            Tok::Punct('{') => {
                depth += 1;
                if i >= 2
                    && is_word(toks.get(i - 2), "mod")
                    && let Tok::Ident(name) = &toks[i - 1].tok
                {
                    inline.push((name.clone(), depth));
                }
                i += 1;
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            Tok::Ident(w) if w == "use" => {
                let mut leaves = Vec::new();
                let mut j = use_tree(&toks, i + 1, &[], &mut leaves);
                while j < toks.len() && !matches!(toks[j].tok, Tok::Punct(';' | '{' | '}')) {
                    j += 1;
                }
                if is_punct(toks.get(j), ';') {
                    j += 1;
                }
                for leaf in leaves {
                    let target = resolve(&here, &leaf.path, is_module);
                    if depth == 0 {
                        if let Some(name) = &leaf.binding {
                            parsed.imports.insert(name.clone(), target.clone());
                        }
                        parsed.local_glob |= leaf.glob && target.is_some();
                    }
                    if let Some(target) = target {
                        parsed.refs.push(Reference { target, line: leaf.line, written: leaf.path.join("::") });
                    }
                }
                i = j.max(i + 1);
            }
            Tok::Ident(w) => {
                let mut name_at = i + 1;
                if w == "macro_rules" && is_punct(toks.get(i + 1), '!') {
                    name_at += 1;
                }
                if let Some(Token { tok: Tok::Ident(name), .. }) = toks.get(name_at) {
                    let inline_mod = w == "mod" && is_punct(toks.get(name_at + 1), '{');
                    if inline_mod || ITEM_KEYWORDS.contains(&w.as_str()) {
                        parsed.defines.insert(name.clone());
                    }
                }
                let after_sep = i > 0 && matches!(toks[i - 1].tok, Tok::PathSep | Tok::Punct('.'));
                let before_sep = is_sep(toks.get(i + 1));
                let starts_path = matches!(w.as_str(), "crate" | "super" | "self") || {
                    let mut child = here.clone();
                    child.push(w.clone());
                    is_module(&child)
                };
                if after_sep || !before_sep || !starts_path {
                    i += 1;
                    continue;
                }
                let mut path = vec![w.clone()];
                let mut j = i + 1;
                while is_sep(toks.get(j))
                    && let Some(Token { tok: Tok::Ident(seg), .. }) = toks.get(j + 1)
                {
                    path.push(seg.clone());
                    j += 2;
                }
                if let Some(target) = resolve(&here, &path, is_module) {
                    parsed.refs.push(Reference { target, line: toks[i].line, written: path.join("::") });
                }
                i = j;
            }
            _ => i += 1,
        }
    }
    parsed
}

/// The module a file under `src` is, or `None` when it is no node of the graph.
fn module_of(path: &str, has_lib: bool) -> Option<ModPath> {
    let stem = path.strip_suffix(".rs")?;
    let mut segs: Vec<String> = stem.split('/').map(str::to_string).collect();
    if segs.iter().any(|s| s == "tests") || segs[0] == "bin" || (has_lib && stem == "main") {
        return None;
    }
    if stem == "lib" || stem == "main" {
        return Some(Vec::new());
    }
    if segs.last().is_some_and(|s| s == "mod") {
        segs.pop();
    }
    Some(segs)
}

// ---------------------------------------------------------------------------------------------
// The graph of one crate, and its circles.

struct Node {
    module: ModPath,
    /// From the workspace root.
    file: String,
    parsed: ParsedFile,
}

/// Where an import is written: `file:line` and the path as written.
struct Evidence {
    line: usize,
    written: String,
}

struct Graph {
    name: String,
    nodes: Vec<Node>,
    edges: BTreeMap<(usize, usize), Vec<Evidence>>,
}

struct Component {
    members: Vec<usize>,
    circles: Vec<Vec<usize>>,
}

impl Graph {
    /// `files`: paths from `src` and their text.
    fn build(name: &str, dir: &str, files: &[(String, String)]) -> Graph {
        let has_lib = files.iter().any(|(p, _)| p == "lib.rs");
        let mut index: HashMap<ModPath, usize> = HashMap::new();
        let mut found: Vec<(ModPath, &String, &String)> = Vec::new();
        for (path, text) in files {
            if let Some(module) = module_of(path, has_lib)
                && !index.contains_key(&module)
            {
                index.insert(module.clone(), found.len());
                found.push((module, path, text));
            }
        }
        let is_module = |m: &[String]| index.contains_key(m);
        let nodes: Vec<Node> = found
            .into_iter()
            .map(|(module, path, text)| {
                let parsed = parse_file(&module, text, &is_module);
                Node { module, file: format!("{dir}/src/{path}"), parsed }
            })
            .collect();
        let mut graph = Graph { name: name.to_string(), nodes, edges: BTreeMap::new() };
        let mut edges: BTreeMap<(usize, usize), Vec<Evidence>> = BTreeMap::new();
        for (from, node) in graph.nodes.iter().enumerate() {
            for r in &node.parsed.refs {
                if let Some(to) = graph.locate(&index, &r.target, 0)
                    && to != from
                {
                    edges.entry((from, to)).or_default().push(Evidence { line: r.line, written: r.written.clone() });
                }
            }
        }
        graph.edges = edges;
        graph
    }

    /// The module file an absolute path lands in: the deepest module file it names, then through
    /// that module's imports when the rest of the path is a name it brought in. `None` when the
    /// path leaves the crate or names nothing the module has.
    fn locate(&self, index: &HashMap<ModPath, usize>, path: &[String], hops: usize) -> Option<usize> {
        let deepest = (0..=path.len()).rev().find(|&k| index.contains_key(&path[..k]))?;
        let node = index[&path[..deepest]];
        let Some(name) = path.get(deepest) else { return Some(node) };
        let file = &self.nodes[node].parsed;
        if let Some(source) = file.imports.get(name) {
            let mut next = source.clone()?;
            next.extend(path[deepest + 1..].iter().cloned());
            // An import that leads back to itself (`use crate::gone;` for a module not there) ends.
            return if hops < 16 { self.locate(index, &next, hops + 1) } else { None };
        }
        (file.defines.contains(name) || file.local_glob).then_some(node)
    }

    fn successors(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        self.edges.range((n, 0)..(n + 1, 0)).map(|(&(_, to), _)| to)
    }

    /// Every strongly connected component of more than one file, with circles (shortest first)
    /// that between them pass through every import inside it.
    fn circles(&self) -> Vec<Component> {
        let mut components = Vec::new();
        for members in self.strongly_connected().into_iter().filter(|c| c.len() > 1) {
            let inside: BTreeSet<usize> = members.iter().copied().collect();
            let mut circles: BTreeSet<Vec<usize>> = BTreeSet::new();
            for (&(from, to), _) in self.edges.iter().filter(|((f, t), _)| inside.contains(f) && inside.contains(t)) {
                if let Some(back) = self.shortest_path(to, from, &inside) {
                    let mut circle = vec![from];
                    circle.extend(&back[..back.len() - 1]);
                    let start = (0..circle.len()).min_by_key(|&k| circle[k]).unwrap_or(0);
                    circle.rotate_left(start);
                    circles.insert(circle);
                }
            }
            let mut circles: Vec<Vec<usize>> = circles.into_iter().collect();
            circles.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            // Shortest first, keep a circle only when it closes an import no kept circle has.
            let mut covered: BTreeSet<(usize, usize)> = BTreeSet::new();
            circles.retain(|c| {
                let steps: Vec<(usize, usize)> = (0..c.len()).map(|k| (c[k], c[(k + 1) % c.len()])).collect();
                let new = steps.iter().any(|s| !covered.contains(s));
                covered.extend(steps);
                new
            });
            let mut members = members;
            members.sort();
            components.push(Component { members, circles });
        }
        components.sort_by(|a, b| a.members.cmp(&b.members));
        components
    }

    /// Tarjan's algorithm.
    fn strongly_connected(&self) -> Vec<Vec<usize>> {
        #[derive(Default)]
        struct State {
            next: usize,
            index: Vec<Option<usize>>,
            low: Vec<usize>,
            stack: Vec<usize>,
            on_stack: Vec<bool>,
            out: Vec<Vec<usize>>,
        }
        fn visit(g: &Graph, v: usize, s: &mut State) {
            s.index[v] = Some(s.next);
            s.low[v] = s.next;
            s.next += 1;
            s.stack.push(v);
            s.on_stack[v] = true;
            for w in g.successors(v).collect::<Vec<_>>() {
                match s.index[w] {
                    None => {
                        visit(g, w, s);
                        s.low[v] = s.low[v].min(s.low[w]);
                    }
                    Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(s.low[v]) == s.index[v] {
                let mut component = Vec::new();
                while let Some(w) = s.stack.pop() {
                    s.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                s.out.push(component);
            }
        }
        let n = self.nodes.len();
        let mut s = State { index: vec![None; n], low: vec![0; n], on_stack: vec![false; n], ..State::default() };
        for v in 0..n {
            if s.index[v].is_none() {
                visit(self, v, &mut s);
            }
        }
        s.out
    }

    /// The nodes after `from` up to and including `to`, staying inside `within` (breadth first).
    fn shortest_path(&self, from: usize, to: usize, within: &BTreeSet<usize>) -> Option<Vec<usize>> {
        let mut came_from: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([from]);
        let mut seen = BTreeSet::from([from]);
        while let Some(v) = queue.pop_front() {
            if v == to {
                let mut path = vec![to];
                let mut at = to;
                while let Some(&p) = came_from.get(&at) {
                    path.push(p);
                    at = p;
                }
                path.reverse();
                return Some(path);
            }
            for w in self.successors(v) {
                if within.contains(&w) && seen.insert(w) {
                    came_from.insert(w, v);
                    queue.push_back(w);
                }
            }
        }
        None
    }

    fn module_name(&self, n: usize) -> String {
        let m = &self.nodes[n].module;
        if m.is_empty() { "crate".to_string() } else { m.join("::") }
    }

    /// `crate-name: a → b → c → a`.
    fn circle_line(&self, circle: &[usize]) -> String {
        let names: Vec<String> = circle.iter().chain(circle.first()).map(|&n| self.module_name(n)).collect();
        format!("{}: {}", self.name, names.join(" → "))
    }

    fn describe(&self, c: &Component) -> String {
        let mut s = String::new();
        let names: Vec<String> = c.members.iter().map(|&n| self.module_name(n)).collect();
        let _ = writeln!(s, "{}: {} files import each other ({}):", self.name, c.members.len(), names.join(", "));
        for circle in &c.circles {
            let _ = writeln!(s, "  {}", self.circle_line(circle));
        }
        let _ = writeln!(s, "  files:");
        for &n in &c.members {
            let _ = writeln!(s, "    {:<24} {}", self.module_name(n), self.nodes[n].file);
        }
        let _ = writeln!(s, "  the imports inside it:");
        let inside: BTreeSet<usize> = c.members.iter().copied().collect();
        for ((from, to), evidence) in self.edges.iter().filter(|((f, t), _)| inside.contains(f) && inside.contains(t)) {
            let first = &evidence[0];
            let more = if evidence.len() > 1 { format!(" (+{} more)", evidence.len() - 1) } else { String::new() };
            let (a, b) = (self.module_name(*from), self.module_name(*to));
            let _ = writeln!(s, "    {a} → {b}: {}:{} `{}`{more}", self.nodes[*from].file, first.line, first.written);
        }
        s.push('\n');
        s
    }
}

// ---------------------------------------------------------------------------------------------
// The detector itself, on small trees held in memory.

mod detector {
    use super::*;

    fn graph(files: &[(&str, &str)]) -> Graph {
        let files: Vec<(String, String)> = files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect();
        Graph::build("demo", "crates/demo", &files)
    }

    fn edges(g: &Graph) -> Vec<String> {
        g.edges.keys().map(|&(f, t)| format!("{} → {}", g.module_name(f), g.module_name(t))).collect()
    }

    fn circles(g: &Graph) -> Vec<String> {
        g.circles().iter().flat_map(|c| c.circles.iter().map(|circle| g.circle_line(circle))).collect()
    }

    #[test]
    fn grouped_uses_over_several_lines_reach_the_deepest_module_file() {
        let g = graph(&[
            ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
            ("a.rs", "use crate::{\n    b::{self, x::{Y, Z as W}},\n    c::Item as Other,\n};\nuse std::fmt;\n"),
            ("b/mod.rs", "pub mod x;\n"),
            ("b/x.rs", "pub struct Y;\n"),
            ("c.rs", "pub struct Item;\n"),
        ]);
        assert_eq!(edges(&g), ["a → b", "a → b::x", "a → c"]);
        let a = &g.nodes.iter().find(|n| n.module == ["a"]).unwrap().parsed;
        let lines: Vec<usize> = a.refs.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 2, 2, 3], "each leaf is placed on its own line");
    }

    #[test]
    fn super_and_self_resolve_against_the_module_they_stand_in() {
        let g = graph(&[
            ("lib.rs", "mod x;\nmod z;\n"),
            ("x/mod.rs", "mod y;\nmod w;\npub struct Thing;\nfn f() { self::w::g(); }\n"),
            ("x/y.rs", "use super::super::z::Q;\nfn f() -> super::Thing { todo!() }\n"),
            ("x/w.rs", "pub fn g() {}\n"),
            ("z.rs", "pub struct Q;\n"),
        ]);
        assert_eq!(edges(&g), ["x → x::w", "x::y → x", "x::y → z"]);
    }

    #[test]
    fn code_paths_name_modules_but_not_fields_methods_or_other_crates() {
        let g = graph(&[
            (
                "lib.rs",
                "mod config;\nmod query;\nmod gone;\nuse crate::gone;\nfn f(config: u8) { query::run(); let c = config; x.config::<u8>(); std::config::X; }\n",
            ),
            ("config.rs", "pub fn g() {}\n"),
            (
                "query.rs",
                "pub fn run() { crate::config::g(); ::config::h(); crate::gone::f(); crate::Missing::new(); }\n",
            ),
        ]);
        assert_eq!(edges(&g), ["crate → query", "query → config"], "unknown paths make no edge");
    }

    #[test]
    fn test_code_comments_and_literals_make_no_edge() {
        let g = graph(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            (
                "a.rs",
                concat!(
                    "// use crate::b;\n/// see crate::b::f\n/* crate::b::f() /* nested */ crate::b */\n",
                    "const S: &str = \"crate::b::f\";\nconst R: &str = r#\"crate::b::f \"quoted\" \"#;\n",
                    "const Q: char = '\"'; fn l<'a>(x: &'a str) {}\n",
                    "#[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::b::f;\n    fn t() { crate::b::f() }\n}\n",
                    "#[cfg(test)]\n#[allow(unused)]\nuse crate::b::f;\n",
                    "#[cfg(all(test, feature = \"x\"))]\nfn helper() { crate::b::f() }\n",
                ),
            ),
            ("b.rs", "pub fn f() {}\n"),
            ("b/tests.rs", "use crate::a::S;\n"),
        ]);
        assert_eq!(edges(&g), Vec::<String>::new());
    }

    #[test]
    fn inline_modules_resolve_super_inside_the_file() {
        let g = graph(&[
            ("lib.rs", "mod otlp;\nmod b;\n"),
            (
                "otlp.rs",
                "pub struct Array;\npub mod any_value {\n    pub enum V { A(super::Array) }\n    use super::super::b::F;\n}\n",
            ),
            ("b.rs", "pub struct F;\n"),
        ]);
        assert_eq!(edges(&g), ["otlp → b"]);
    }

    #[test]
    fn a_planted_circle_is_found_and_spelled_out() {
        let g = graph(&[
            ("lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\n"),
            ("a.rs", "pub fn f() { crate::b::g() }\n"),
            ("b.rs", "use crate::c::{H};\npub fn g() {}\n"),
            ("c.rs", "pub struct H;\nfn k() { super::a::f(); super::d::x(); }\n"),
            ("d.rs", "pub fn x() {}\n"),
        ]);
        assert_eq!(circles(&g), ["demo: a → b → c → a"]);
        let report = g.describe(&g.circles()[0]);
        assert!(report.contains("c → a: crates/demo/src/c.rs:2 `super::a::f`"), "{report}");
    }

    #[test]
    fn re_exports_are_followed_so_a_root_that_only_hands_names_on_ties_nothing() {
        let g = graph(&[
            ("lib.rs", "pub mod error;\npub mod a;\nmod b;\npub use error::Error;\npub use b::B;\nuse a::A;\n"),
            ("error.rs", "pub enum Error {}\n"),
            ("a.rs", "use crate::{B, Error};\npub struct A(B);\n"),
            ("b.rs", "pub struct B;\nfn f() -> crate::Error { todo!() }\n"),
        ]);
        assert!(circles(&g).is_empty(), "{:?}", circles(&g));
        assert_eq!(edges(&g), ["crate → error", "crate → a", "crate → b", "a → error", "a → b", "b → error"]);
    }

    #[test]
    fn a_parent_re_exporting_a_child_that_uses_the_parent_is_a_circle() {
        let g = graph(&[
            ("lib.rs", "mod inner;\npub use inner::Thing;\npub const LIMIT: usize = 3;\n"),
            ("inner.rs", "pub struct Thing([u8; crate::LIMIT]);\n"),
        ]);
        assert_eq!(circles(&g), ["demo: crate → inner → crate"]);
    }

    #[test]
    fn declaring_children_is_not_importing_them() {
        let g = graph(&[
            ("lib.rs", "pub mod a;\nmod b;\npub const LIMIT: usize = 3;\n"),
            ("a.rs", "use super::LIMIT;\n"),
            ("b.rs", "use crate::LIMIT;\n"),
        ]);
        assert!(circles(&g).is_empty());
        assert_eq!(edges(&g), ["a → crate", "b → crate"]);
    }

    #[test]
    fn odd_code_does_not_panic() {
        for text in [
            "use",
            "use crate::{",
            "use crate::{a,, ::b};",
            "mod x {",
            "}}}",
            "'",
            "r#\"",
            "\"",
            "#[cfg(test)]",
            "super::",
        ] {
            let g = graph(&[("lib.rs", "mod a;\n"), ("a.rs", text)]);
            let _ = g.circles();
        }
    }
}
