//! Import check of the library crates (`cargo xtask layers`, also run by
//! `cargo xtask test`), listed in [`CRATES`]: in each, no import cycle joins
//! the modules of one folder; in the agent (`fdr-agent`) also, imports only
//! point down the stage list.
//!
//! A small hand-written scanner, no compiler: each `.rs` file under a
//! crate's `src` has its comments and string/char literals blanked out, then
//! every `use` tree and every inline `crate::`/`super::`/`self::` path is
//! resolved to an absolute module path (`super` counts the inline `mod x {}`
//! blocks it sits in, so `super::` in a `mod tests {}` is the file's module).
//! `main.rs` and `bin/*` are separate crates (they use `fdr_agent::`,
//! `fdr_cli::`) and the assembly anyway, so they are not scanned; nor is
//! generated code pulled in with `include!` / `tonic::include_proto!` (not a
//! file under `src`; its inline `mod` is still a module others may name).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::Path,
};

use anyhow::{bail, Context, Result};

/// A library crate the import check covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crate {
    /// Its `src` folder, from the workspace root: `agent/src`.
    pub src: &'static str,
    /// Whether the layer lists below apply (the agent only); every crate is
    /// checked for import cycles.
    pub layered: bool,
}

/// `fdr-agent`: layer order and no cycles.
pub const AGENT: Crate = Crate {
    src: "agent/src",
    layered: true,
};

/// Every crate checked, in the order `cargo xtask layers` reports them:
/// `fdr-agent`, `fdr-cli` (fdrctl's commands), `fdr-proto` (the generated
/// code and what agent and client share about it), `fdr-console`.
pub const CRATES: &[Crate] = &[
    AGENT,
    Crate {
        src: "cli/src",
        layered: false,
    },
    Crate {
        src: "proto/src",
        layered: false,
    },
    Crate {
        src: "console/src",
        layered: false,
    },
    Crate {
        src: "export/src",
        layered: false,
    },
];

// ---------------------------------------------------------------------------
// The layering: the one place it is written down. Every top-level module of
// `fdr-agent` (`agent/src/<name>.rs` or `agent/src/<name>/`) must be in
// exactly one of these lists; one that is in none is a violation.
// ---------------------------------------------------------------------------

/// Foundation: may be imported by any module; imports only other foundation
/// modules.
pub const FOUNDATION: &[&str] = &["event", "config", "util"];

/// Stages, in data order: a stage imports foundation modules and the stages
/// at or before its own position, never a later one.
pub const STAGES: &[&str] = &[
    "probes",
    "pipeline",
    "process",
    "attribution",
    "derive",
    // The database and its committer thread: what analysis (models,
    // incidents) and the recorder (snapshots) write into, so below both.
    "store",
    "analysis",
    "recorder",
    "api",
];

/// Assembly: imports anything; nothing imports it. (`lib.rs`, `main.rs` and
/// `bin/*` are assembly too.)
pub const ASSEMBLY: &[&str] = &["daemon"];

/// Where a top-level module sits in the layering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Foundation,
    /// Index into [`STAGES`].
    Stage(usize),
    Assembly,
}

fn layer_of(module: &str) -> Option<Layer> {
    if FOUNDATION.contains(&module) {
        Some(Layer::Foundation)
    } else if let Some(i) = STAGES.iter().position(|s| *s == module) {
        Some(Layer::Stage(i))
    } else if ASSEMBLY.contains(&module) {
        Some(Layer::Assembly)
    } else {
        None
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Foundation => write!(f, "foundation"),
            Layer::Stage(i) => write!(f, "stage {}", i + 1),
            Layer::Assembly => write!(f, "assembly"),
        }
    }
}

/// Why an import from top-level module `from` to `to` breaks the layering.
fn layer_rule(from: &str, to: &str) -> Option<String> {
    let (from_layer, to_layer) = (layer_of(from)?, layer_of(to)?);
    match (from_layer, to_layer) {
        (_, Layer::Assembly) => Some(format!("nothing may import the assembly module `{to}`")),
        (Layer::Assembly, _) => None,
        (Layer::Foundation, Layer::Foundation) => None,
        (Layer::Foundation, _) => Some(format!(
            "foundation module `{from}` may import only foundation modules ({})",
            FOUNDATION.join(", ")
        )),
        (Layer::Stage(_), Layer::Foundation) => None,
        (Layer::Stage(i), Layer::Stage(j)) if j <= i => None,
        (Layer::Stage(i), Layer::Stage(j)) => Some(format!(
            "stage {} `{from}` may not import the later stage {} `{to}`",
            i + 1,
            j + 1
        )),
    }
}

// ---------------------------------------------------------------------------
// Lexing: blank out comments and literals, then split into tokens.
// ---------------------------------------------------------------------------

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `src` with every comment (line, nested block, doc) and every string, byte
/// string, raw string and char literal replaced by spaces; newlines are kept
/// so line numbers stay right. Lifetimes and labels (`'a`) are kept.
pub fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, range: &[char]| {
        for &ch in range {
            out.push(if ch == '\n' { '\n' } else { ' ' });
        }
    };
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        let end = match c[i] {
            '/' if next == Some('/') => {
                let mut j = i;
                while j < c.len() && c[j] != '\n' {
                    j += 1;
                }
                Some(j)
            }
            '/' if next == Some('*') => Some(block_comment_end(&c, i)),
            '"' => Some(string_end(&c, i + 1)),
            '\'' => char_literal_end(&c, i),
            'r' | 'b' | 'c' => raw_string_end(&c, i),
            _ => None,
        };
        match end {
            Some(end) => {
                blank(&mut out, &c[i..end]);
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

/// End (exclusive) of the nested block comment starting at `i` (`/*`).
fn block_comment_end(c: &[char], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    c.len()
}

/// End (exclusive) of a `"` string whose body starts at `i`.
fn string_end(c: &[char], mut i: usize) -> usize {
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    c.len()
}

/// End (exclusive) of the char literal starting at `i` (`'`), or `None` for
/// a lifetime or label.
fn char_literal_end(c: &[char], i: usize) -> Option<usize> {
    if c.get(i + 1) == Some(&'\\') {
        // An escape: '\n', '\'', '\u{1F600}'.
        let mut j = i + 3;
        while j < c.len() && j < i + 14 {
            if c[j] == '\'' {
                return Some(j + 1);
            }
            j += 1;
        }
        return None;
    }
    match (c.get(i + 1), c.get(i + 2)) {
        (Some(&ch), Some(&'\'')) if ch != '\'' && ch != '\n' => Some(i + 3),
        _ => None,
    }
}

/// End (exclusive) of the raw string (`r"…"`, `r#"…"#`, `br#"…"#`,
/// `cr"…"`) starting at `i`, or `None` when there is none there (a raw
/// identifier `r#type`, or just an identifier).
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    if i > 0 && is_ident_char(c[i - 1]) {
        return None;
    }
    let mut j = i;
    if c[j] != 'r' {
        j += 1; // the `b` or `c` of `br` / `cr`
        if c.get(j) != Some(&'r') {
            return None;
        }
    }
    j += 1;
    let mut hashes = 0;
    while c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if c.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < c.len() {
        if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(c.len())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    /// An identifier or keyword (`r#` removed; `$crate` kept whole), `::`,
    /// or a single punctuation character; numbers are `0`.
    text: String,
    line: usize,
}

impl Token {
    fn is_ident(&self) -> bool {
        self.text
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
    }
}

/// Tokens of stripped source.
fn tokenize(stripped: &str) -> Vec<Token> {
    let c: Vec<char> = stripped.chars().collect();
    let mut toks = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let ident_end = |mut j: usize| {
        while j < c.len() && is_ident_char(c[j]) {
            j += 1;
        }
        j
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_ascii_digit() {
            i = ident_end(i);
            toks.push(Token {
                text: "0".into(),
                line,
            });
        } else if ch == 'r'
            && c.get(i + 1) == Some(&'#')
            && c.get(i + 2).is_some_and(|&n| is_ident_char(n))
        {
            let end = ident_end(i + 2);
            toks.push(Token {
                text: c[i + 2..end].iter().collect(),
                line,
            });
            i = end;
        } else if is_ident_char(ch) {
            let end = ident_end(i);
            toks.push(Token {
                text: c[i..end].iter().collect(),
                line,
            });
            i = end;
        } else if ch == '$'
            && ident_end(i + 1) == i + 6
            && c[i + 1..i + 6] == ['c', 'r', 'a', 't', 'e']
        {
            toks.push(Token {
                text: "$crate".into(),
                line,
            });
            i += 6;
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            toks.push(Token {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            toks.push(Token {
                text: ch.to_string(),
                line,
            });
            i += 1;
        }
    }
    toks
}

// ---------------------------------------------------------------------------
// Scanning one file: the paths it names, resolved to absolute module paths.
// ---------------------------------------------------------------------------

/// One path a file names, resolved from the crate root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRef {
    /// The module the path is written in (the file's module, plus any inline
    /// `mod x {}` around it).
    pub from: Vec<String>,
    /// The absolute path (without `crate`): `["api", "convert", "kind_to_pb"]`.
    pub path: Vec<String>,
    pub line: usize,
}

#[derive(Debug, Default)]
pub struct FileScan {
    pub refs: Vec<RawRef>,
    /// Inline modules (`mod tests { … }`), as absolute paths.
    pub inline_mods: Vec<Vec<String>>,
}

/// Resolves a path as written (`crate::a`, `super::super::b`, `self::c`)
/// in module `cur`; `None` for paths that leave the crate (`std::…`,
/// `::x`), relative paths and `super` above the root.
fn resolve(segs: &[String], cur: &[String]) -> Option<Vec<String>> {
    let first = segs.first()?.as_str();
    match first {
        "crate" | "$crate" => Some(segs[1..].to_vec()),
        "self" | "super" => {
            let mut m = cur.to_vec();
            let mut k = usize::from(first == "self");
            while k < segs.len() && segs[k] == "super" {
                m.pop()?;
                k += 1;
            }
            m.extend_from_slice(&segs[k..]);
            Some(m)
        }
        _ => None,
    }
}

/// A leaf of a use tree: the path as written, and its line.
type Leaf = (Vec<String>, usize);

/// Parses the use tree starting at `toks[j]` (just after `use`); returns the
/// leaf paths as written (a glob or `{self}` gives its prefix) with the line
/// of each leaf, and the index after the closing `;`. `None` when this is
/// not a use tree (`use<'a>` bounds, or anything unexpected), in which case
/// the caller scans the tokens as ordinary code.
fn parse_use(toks: &[Token], j: usize) -> Option<(Vec<Leaf>, usize)> {
    let mut out = Vec::new();
    let mut j = j;
    parse_tree(toks, &mut j, Vec::new(), &mut out)?;
    (toks.get(j)?.text == ";").then_some((out, j + 1))
}

fn parse_tree(
    toks: &[Token],
    j: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<Leaf>,
) -> Option<()> {
    let mut segs = prefix;
    if toks.get(*j)?.text == "::" {
        if segs.is_empty() {
            segs.push("::".into()); // `use ::x` names another crate
        }
        *j += 1;
    }
    loop {
        let tok = toks.get(*j)?;
        match tok.text.as_str() {
            "*" => {
                *j += 1;
                out.push((segs, tok.line));
                return Some(());
            }
            "{" => {
                *j += 1;
                loop {
                    if toks.get(*j)?.text == "}" {
                        *j += 1;
                        return Some(());
                    }
                    parse_tree(toks, j, segs.clone(), out)?;
                    match toks.get(*j)?.text.as_str() {
                        "," => *j += 1,
                        "}" => {}
                        _ => return None,
                    }
                }
            }
            _ if tok.is_ident() && tok.text != "as" => {
                segs.push(tok.text.clone());
                *j += 1;
                if toks.get(*j)?.text == "::" {
                    *j += 1;
                    continue;
                }
                if toks.get(*j)?.text == "as" {
                    if !toks.get(*j + 1)?.is_ident() {
                        return None;
                    }
                    *j += 2;
                }
                if segs.len() > 1 && segs.last().is_some_and(|s| s == "self") {
                    segs.pop();
                }
                out.push((segs, tok.line));
                return Some(());
            }
            _ => return None,
        }
    }
}

/// Every path that file `module`'s source names, resolved.
pub fn scan(src: &str, module: &[String]) -> FileScan {
    let toks = tokenize(&strip(src));
    let mut scan = FileScan::default();
    // Inline modules we are inside, with the brace depth of their `{`.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let cur = |inline: &[(String, usize)]| {
        let mut m = module.to_vec();
        m.extend(inline.iter().map(|(n, _)| n.clone()));
        m
    };
    let text = |k: usize| toks.get(k).map_or("", |t| t.text.as_str());
    let mut i = 0;
    while i < toks.len() {
        match text(i) {
            "mod" if toks.get(i + 1).is_some_and(Token::is_ident) && text(i + 2) == "{" => {
                depth += 1;
                inline.push((text(i + 1).to_string(), depth));
                scan.inline_mods.push(cur(&inline));
                i += 3;
                continue;
            }
            "{" => depth += 1,
            "}" => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            "use" => {
                if let Some((leaves, end)) = parse_use(&toks, i + 1) {
                    let from = cur(&inline);
                    for (segs, line) in leaves {
                        if let Some(path) = resolve(&segs, &from) {
                            scan.refs.push(RawRef {
                                from: from.clone(),
                                path,
                                line,
                            });
                        }
                    }
                    i = end;
                    continue;
                }
            }
            "crate" | "$crate" | "super" | "self" if text(i + 1) == "::" => {
                let line = toks[i].line;
                let mut segs = vec![text(i).to_string()];
                let mut j = i + 1;
                while text(j) == "::" && toks.get(j + 1).is_some_and(Token::is_ident) {
                    segs.push(text(j + 1).to_string());
                    j += 2;
                }
                let from = cur(&inline);
                if let Some(path) = resolve(&segs, &from) {
                    scan.refs.push(RawRef { from, path, line });
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    scan
}

// ---------------------------------------------------------------------------
// The checks over the whole crate.
// ---------------------------------------------------------------------------

/// The module of a file, from its path under the crate's `src`; `None` for the
/// binaries (`main.rs`, `bin/*`), which are other crates.
pub fn module_of(rel: &str) -> Option<Vec<String>> {
    let stem = rel.strip_suffix(".rs")?;
    if stem == "main" || stem.starts_with("bin/") {
        return None;
    }
    if stem == "lib" {
        return Some(Vec::new());
    }
    let mut segs: Vec<String> = stem.split('/').map(String::from).collect();
    if segs.last().is_some_and(|s| s == "mod") {
        segs.pop();
    }
    Some(segs)
}

/// A reference from one module to another, where it is written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    /// From the workspace root: `agent/src/api/mod.rs`.
    pub file: String,
    pub line: usize,
    pub from: Vec<String>,
    /// The deepest known module the path names.
    pub to: Vec<String>,
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} imports {}",
            self.file,
            self.line,
            self.from.join("::"),
            self.to.join("::")
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An import that breaks the layer order.
    Layer { edge: Edge, reason: String },
    /// A top-level module in no layer list (`file` from the workspace root).
    Unclassified { module: String, file: String },
    /// Child modules of `parent` that import each other in a cycle, with one
    /// example edge per pair.
    Cycle {
        /// The crate's `src` folder: `agent/src`.
        src: String,
        parent: Vec<String>,
        members: Vec<String>,
        edges: Vec<Edge>,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Layer { edge, reason } => write!(f, "{edge} ({reason})"),
            Violation::Unclassified { module, file } => write!(
                f,
                "{file}:1: {module} is in no layer (classify it: add it to \
                 FOUNDATION, STAGES or ASSEMBLY in xtask/src/layers.rs)"
            ),
            Violation::Cycle {
                src,
                parent,
                members,
                edges,
            } => {
                let (name, dir) = if parent.is_empty() {
                    ("crate".to_string(), format!("{src}/"))
                } else {
                    (parent.join("::"), format!("{src}/{}/", parent.join("/")))
                };
                write!(
                    f,
                    "import cycle among the modules of `{name}` ({dir}): {}",
                    members.join(", ")
                )?;
                for e in edges {
                    write!(f, "\n    {e}")?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug)]
pub struct Report {
    pub krate: Crate,
    pub files: usize,
    pub refs: usize,
    /// Top-level module → the top-level modules it imports.
    pub graph: BTreeMap<String, BTreeSet<String>>,
    pub violations: Vec<Violation>,
}

impl Report {
    /// One line for the crate; for a layered crate, then the module graph,
    /// one top-level module a line, in layer order.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} files, {} top-level modules, {} crate paths{}\n",
            self.krate.src,
            self.files,
            self.graph.len(),
            self.refs,
            if self.krate.layered {
                ""
            } else {
                " (import cycles checked, no layers)"
            }
        );
        if !self.krate.layered {
            return s;
        }
        let order = |m: &String| match layer_of(m) {
            Some(Layer::Foundation) => (0, FOUNDATION.iter().position(|f| f == m)),
            Some(Layer::Stage(i)) => (1, Some(i)),
            Some(Layer::Assembly) => (2, None),
            None => (3, None),
        };
        let mut mods: Vec<&String> = self.graph.keys().collect();
        mods.sort_by_key(|m| (order(m), m.to_string()));
        for m in mods {
            let layer = layer_of(m).map_or("unclassified".to_string(), |l| l.to_string());
            let deps = &self.graph[m];
            let deps = if deps.is_empty() {
                "-".to_string()
            } else {
                deps.iter().cloned().collect::<Vec<_>>().join(", ")
            };
            s += &format!("  {layer:<13} {m:<12} -> {deps}\n");
        }
        let absent: Vec<&str> = FOUNDATION
            .iter()
            .chain(STAGES)
            .chain(ASSEMBLY)
            .copied()
            .filter(|m| !self.graph.contains_key(*m))
            .collect();
        if !absent.is_empty() {
            s += &format!("  (listed, not present: {})\n", absent.join(", "));
        }
        s
    }
}

impl Crate {
    /// Checks the files of this crate: `(path under its src, source)`.
    pub fn analyse(&self, files: &[(String, String)]) -> Report {
        analyse(self, files)
    }
}

fn analyse(krate: &Crate, files: &[(String, String)]) -> Report {
    let mut report = Report {
        krate: *krate,
        files: 0,
        refs: 0,
        graph: BTreeMap::new(),
        violations: Vec::new(),
    };
    let path = |rel: &str| format!("{}/{rel}", krate.src);
    let mut modules: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut scans = Vec::new();
    // Top-level module → the file that defines it (for unclassified).
    let mut tops: BTreeMap<String, String> = BTreeMap::new();
    for (rel, src) in files {
        let Some(module) = module_of(rel) else {
            continue;
        };
        report.files += 1;
        for k in 0..=module.len() {
            modules.insert(module[..k].to_vec());
        }
        if let Some(top) = module.first() {
            let entry = tops.entry(top.clone()).or_insert_with(|| path(rel));
            // Prefer `x.rs` / `x/mod.rs` over a file deeper in the folder.
            if module.len() == 1 {
                *entry = path(rel);
            }
        }
        let scan = scan(src, &module);
        modules.extend(scan.inline_mods.iter().cloned());
        scans.push((rel.clone(), scan));
    }
    for top in tops.keys() {
        report.graph.insert(top.clone(), BTreeSet::new());
    }

    let mut edges: BTreeSet<Edge> = BTreeSet::new();
    for (rel, scan) in &scans {
        for r in &scan.refs {
            report.refs += 1;
            let Some(to) = (1..=r.path.len())
                .rev()
                .map(|k| &r.path[..k])
                .find(|p| modules.contains(*p))
            else {
                continue; // an item of the crate root (a macro, …)
            };
            edges.insert(Edge {
                file: path(rel),
                line: r.line,
                from: r.from.clone(),
                to: to.to_vec(),
            });
        }
    }

    // 1. Unclassified modules, and the layer order between top-level modules
    // (layered crates only; every crate gets the graph for its summary).
    for (module, file) in &tops {
        if krate.layered && layer_of(module).is_none() {
            report.violations.push(Violation::Unclassified {
                module: module.clone(),
                file: file.clone(),
            });
        }
    }
    for e in &edges {
        let (Some(from), Some(to)) = (e.from.first(), e.to.first()) else {
            continue;
        };
        if from == to {
            continue;
        }
        report
            .graph
            .entry(from.clone())
            .or_default()
            .insert(to.clone());
        let reason = if krate.layered {
            layer_rule(from, to)
        } else {
            None
        };
        if let Some(reason) = reason {
            report.violations.push(Violation::Layer {
                edge: e.clone(),
                reason,
            });
        }
    }

    // 2. Cycles among the children of each module: an edge from child A to
    // child B of P when code under P::A names a path under P::B. P is the
    // longest common prefix; a parent↔child reference has none.
    let mut sibling: BTreeMap<Vec<String>, BTreeMap<(String, String), Edge>> = BTreeMap::new();
    for e in &edges {
        let common = e.from.iter().zip(&e.to).take_while(|(a, b)| a == b).count();
        let (Some(a), Some(b)) = (e.from.get(common), e.to.get(common)) else {
            continue;
        };
        sibling
            .entry(e.from[..common].to_vec())
            .or_default()
            .entry((a.clone(), b.clone()))
            .or_insert_with(|| e.clone());
    }
    for (parent, graph) in &sibling {
        for members in cycles(graph.keys()) {
            let edges = graph
                .iter()
                .filter(|((a, b), _)| members.contains(a) && members.contains(b))
                .map(|(_, e)| e.clone())
                .collect();
            report.violations.push(Violation::Cycle {
                src: krate.src.to_string(),
                parent: parent.clone(),
                members,
                edges,
            });
        }
    }
    report
}

/// The strongly connected components with more than one node (Tarjan).
fn cycles<'a>(edges: impl Iterator<Item = &'a (String, String)>) -> Vec<Vec<String>> {
    let mut adj: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
        adj.entry(a).or_default().push(b);
        adj.entry(b).or_default();
    }
    let names: Vec<&str> = adj.keys().copied().collect();
    let id = |n: &str| names.iter().position(|m| *m == n).unwrap_or(0);
    let succ: Vec<Vec<usize>> = names
        .iter()
        .map(|n| adj[n].iter().map(|m| id(m)).collect())
        .collect();

    struct Tarjan<'s> {
        succ: &'s [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        sccs: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for k in 0..self.succ[v].len() {
                let w = self.succ[v][k];
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                self.sccs.push(scc);
            }
        }
    }
    let n = names.len();
    let mut t = Tarjan {
        succ: &succ,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        sccs: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    let mut out: Vec<Vec<String>> = t
        .sccs
        .into_iter()
        .filter(|scc| scc.len() > 1)
        .map(|scc| {
            let mut m: Vec<String> = scc.into_iter().map(|v| names[v].to_string()).collect();
            m.sort();
            m
        })
        .collect();
    out.sort();
    out
}

/// Reads every `.rs` file under `dir`, with its path relative to `base`.
fn read_tree(base: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            read_tree(base, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(base)
                .context("a file under the crate's src")?
                .to_string_lossy()
                .replace('\\', "/");
            let src = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            out.push((rel, src));
        }
    }
    Ok(())
}

/// Checks `agent/src` of the workspace at `root`; prints the module graph
/// (when `summary`) and every violation; fails when there is one.
pub fn run(root: &Path, summary: bool) -> Result<()> {
    let (mut files, mut refs, mut violations) = (0, 0, 0);
    for krate in CRATES {
        let src = root.join(krate.src);
        let mut sources = Vec::new();
        read_tree(&src, &src, &mut sources)?;
        let report = krate.analyse(&sources);
        if summary {
            print!("{}", report.summary());
        }
        for v in &report.violations {
            println!("{v}");
        }
        files += report.files;
        refs += report.refs;
        violations += report.violations.len();
    }
    if violations > 0 {
        bail!("import check: {violations} violation(s) of the layering in xtask/src/layers.rs");
    }
    let crates: Vec<&str> = CRATES.iter().map(|c| c.src).collect();
    eprintln!(
        "import check: {files} files, {refs} crate paths in {}, no violation",
        crates.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn paths(src: &str, module: &[&str]) -> Vec<(Vec<String>, Vec<String>, usize)> {
        scan(src, &s(module))
            .refs
            .into_iter()
            .map(|r| (r.from, r.path, r.line))
            .collect()
    }

    fn only_paths(src: &str, module: &[&str]) -> Vec<String> {
        paths(src, module)
            .into_iter()
            .map(|(_, p, _)| p.join("::"))
            .collect()
    }

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn lines(report: &Report) -> Vec<String> {
        report.violations.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn strip_blanks_comments_and_literals_keeping_lines() {
        let src = "a /* x /* nested crate::a */ still */ b // crate::c\n\
                   /// doc crate::d\n\
                   //! inner crate::e\n\
                   let s = r#\"raw \"crate::f\" \"#; let t = br\"crate::g\";\n\
                   let u = \"esc \\\" crate::h\"; let v = b\"crate::i\";\n\
                   fn f<'a>(x: &'a str) -> &'a str { 'outer: loop {} }\n\
                   let q = '\"'; let w = '\\''; let z = b'x'; crate::kept::path";
        let out = strip(src);
        assert_eq!(out.lines().count(), src.lines().count());
        assert!(out.starts_with("a "));
        assert!(out.contains(" b "));
        for hidden in ["crate::a", "crate::c", "crate::d", "crate::e", "crate::f"] {
            assert!(!out.contains(hidden), "{hidden} in {out}");
        }
        for hidden in ["crate::g", "crate::h", "crate::i", "still", "nested"] {
            assert!(!out.contains(hidden), "{hidden} in {out}");
        }
        // Lifetimes and labels stay; the `'"'` literal does not open a string.
        assert!(out.contains("fn f<'a>(x: &'a str) -> &'a str { 'outer: loop {} }"));
        assert!(out.ends_with("crate::kept::path"), "{out}");
        assert!(
            out.contains("let q =    ; let w =     ; let z = b   ;"),
            "{out}"
        );
        // Raw identifiers are not raw strings.
        assert_eq!(strip("r#type crate::x"), "r#type crate::x");
        // Only the last line's path survives, on line 7.
        assert_eq!(
            paths(src, &["m"]),
            vec![(s(&["m"]), s(&["kept", "path"]), 7)]
        );
    }

    #[test]
    fn use_trees_with_nested_braces_self_super_glob_and_rename() {
        let src = "use crate::{a::{b, c as d}, e::*, f::{self, g::{self as h}}};\n\
                   pub use super::x::Y;\n\
                   pub(crate) use self::inner::{Z,\n  W};\n\
                   use super::super::top as t;\n\
                   use std::collections::HashMap;\n\
                   use ::other::Thing;\n\
                   use local_child::Q;";
        assert_eq!(
            paths(src, &["p", "m"]),
            vec![
                (s(&["p", "m"]), s(&["a", "b"]), 1),
                (s(&["p", "m"]), s(&["a", "c"]), 1),
                (s(&["p", "m"]), s(&["e"]), 1),
                (s(&["p", "m"]), s(&["f"]), 1),
                (s(&["p", "m"]), s(&["f", "g"]), 1),
                (s(&["p", "m"]), s(&["p", "x", "Y"]), 2),
                (s(&["p", "m"]), s(&["p", "m", "inner", "Z"]), 3),
                (s(&["p", "m"]), s(&["p", "m", "inner", "W"]), 4),
                (s(&["p", "m"]), s(&["top"]), 5),
            ]
        );
        // `use<'a>` bounds are not use trees; inline paths still count.
        assert_eq!(
            only_paths(
                "fn f<'a>() -> impl Sized + use<'a> { crate::q::r() }",
                &["m"]
            ),
            vec!["q::r"]
        );
    }

    #[test]
    fn inline_paths_and_visibility() {
        let src = "pub(crate) fn f(x: crate::a::B) -> super::C {\n\
                   let y = <crate::d::E as crate::f::G>::new(); $crate::h::i!();\n\
                   pub(in crate::m) struct S; self.x; Self::new(); }";
        assert_eq!(
            only_paths(src, &["p", "m"]),
            vec!["a::B", "p::C", "d::E", "f::G", "h::i", "m"]
        );
    }

    #[test]
    fn super_in_file_module_vs_inline_mod_tests() {
        let src = "use super::sibling::X;\n\
                   fn f() { if true { super::other::g(); } }\n\
                   #[cfg(test)]\n\
                   mod tests {\n\
                       use super::*;\n\
                       use super::super::sibling::Y;\n\
                       fn t() { let m = HashMap::<u8, u8>::new(); { super::f(); } }\n\
                       mod deeper { use super::super::z; }\n\
                       fn after() { super::f(); }\n\
                   }\n\
                   fn g() { super::last(); }";
        let file = s(&["stage", "file"]);
        let tests = s(&["stage", "file", "tests"]);
        let deeper = s(&["stage", "file", "tests", "deeper"]);
        assert_eq!(
            paths(src, &["stage", "file"]),
            vec![
                (file.clone(), s(&["stage", "sibling", "X"]), 1),
                (file.clone(), s(&["stage", "other", "g"]), 2),
                (tests.clone(), s(&["stage", "file"]), 5),
                (tests.clone(), s(&["stage", "sibling", "Y"]), 6),
                (tests.clone(), s(&["stage", "file", "f"]), 7),
                (deeper, s(&["stage", "file", "z"]), 8),
                (tests, s(&["stage", "file", "f"]), 9),
                (file, s(&["stage", "last"]), 11),
            ]
        );
        let scanned = scan(src, &s(&["stage", "file"]));
        assert_eq!(
            scanned.inline_mods,
            vec![
                s(&["stage", "file", "tests"]),
                s(&["stage", "file", "tests", "deeper"])
            ]
        );
    }

    #[test]
    fn module_paths_from_file_paths() {
        assert_eq!(module_of("lib.rs"), Some(vec![]));
        assert_eq!(module_of("main.rs"), None);
        assert_eq!(module_of("bin/fdrctl.rs"), None);
        assert_eq!(module_of("api/mod.rs"), Some(s(&["api"])));
        assert_eq!(module_of("api.rs"), Some(s(&["api"])));
        assert_eq!(
            module_of("api/query/page.rs"),
            Some(s(&["api", "query", "page"]))
        );
    }

    #[test]
    fn a_stage_importing_a_later_stage_is_a_violation() {
        let report = AGENT.analyse(&files(&[
            (
                "lib.rs",
                "pub mod analysis; pub mod recorder; pub mod event;",
            ),
            (
                "analysis/mod.rs",
                "use crate::event::Event;\nuse crate::recorder::Ring;\nmod rules;",
            ),
            (
                "analysis/rules.rs",
                "fn f() {\n\n crate::recorder::snapshot::take(); }",
            ),
            (
                "recorder/mod.rs",
                "use crate::analysis::Model; pub mod snapshot;",
            ),
            ("recorder/snapshot.rs", "use super::super::event::Event;"),
            ("event.rs", "use crate::recorder::Ring;"),
            ("main.rs", "use fdr_agent::daemon; mod crate_local { }"),
        ]));
        assert_eq!(
            lines(&report),
            vec![
                "agent/src/analysis/mod.rs:2: analysis imports recorder \
                 (stage 7 `analysis` may not import the later stage 8 `recorder`)",
                "agent/src/analysis/rules.rs:3: analysis::rules imports recorder::snapshot \
                 (stage 7 `analysis` may not import the later stage 8 `recorder`)",
                "agent/src/event.rs:1: event imports recorder (foundation module `event` \
                 may import only foundation modules (event, config, util))",
                "import cycle among the modules of `crate` (agent/src/): analysis, event, recorder\
                 \n    agent/src/analysis/mod.rs:1: analysis imports event\
                 \n    agent/src/analysis/mod.rs:2: analysis imports recorder\
                 \n    agent/src/event.rs:1: event imports recorder\
                 \n    agent/src/recorder/mod.rs:1: recorder imports analysis\
                 \n    agent/src/recorder/snapshot.rs:1: recorder::snapshot imports event",
            ]
        );
        assert_eq!(
            report.graph["analysis"],
            ["event", "recorder"]
                .iter()
                .map(|x| x.to_string())
                .collect()
        );
        assert!(report
            .summary()
            .contains("stage 7       analysis     -> event, recorder"));
    }

    #[test]
    fn the_assembly_imports_anything_and_nothing_imports_it() {
        let report = AGENT.analyse(&files(&[
            ("daemon.rs", "use crate::{api::Server, event::Event};"),
            (
                "api/mod.rs",
                "use crate::store::Db; fn f() { crate::daemon::run() }",
            ),
            ("store.rs", "use crate::event::Event;"),
            ("event.rs", ""),
        ]));
        assert_eq!(
            lines(&report),
            vec![
                "agent/src/api/mod.rs:1: api imports daemon \
                 (nothing may import the assembly module `daemon`)",
                "import cycle among the modules of `crate` (agent/src/): api, daemon\
                 \n    agent/src/api/mod.rs:1: api imports daemon\
                 \n    agent/src/daemon.rs:1: daemon imports api",
            ]
        );
    }

    #[test]
    fn a_cycle_between_siblings_is_reported_with_one_edge_each() {
        let report = AGENT.analyse(&files(&[
            ("analysis/mod.rs", "pub mod model; pub mod incidents; pub mod rules;"),
            (
                "analysis/model.rs",
                "use super::incidents::Incident;\nuse super::rules::Rule;\nuse super::incidents::Other;",
            ),
            ("analysis/incidents.rs", "fn f() {\n super::model::Model::new(); }"),
            ("analysis/rules.rs", "pub struct Rule;"),
        ]));
        assert_eq!(
            lines(&report),
            vec![
                "import cycle among the modules of `analysis` (agent/src/analysis/): incidents, model\
                 \n    agent/src/analysis/incidents.rs:2: analysis::incidents imports analysis::model\
                 \n    agent/src/analysis/model.rs:1: analysis::model imports analysis::incidents"
            ]
        );
    }

    #[test]
    fn parent_and_child_referring_to_each_other_is_not_a_cycle() {
        let report = AGENT.analyse(&files(&[
            (
                "recorder/mod.rs",
                "mod buffer; pub use buffer::Ring; pub use self::buffer::Other;\n\
                 pub struct Shared; fn f() { buffer::g(); self::buffer::h(); }",
            ),
            (
                "recorder/buffer.rs",
                "use super::Shared; use crate::recorder::Shared as S;\n\
                 #[cfg(test)] mod tests { use super::*; use super::super::Shared; }",
            ),
        ]));
        assert!(report.violations.is_empty(), "{:?}", lines(&report));
        // An inline test module and its file are parent and child too.
        let report = AGENT.analyse(&files(&[(
            "store.rs",
            "fn f() { tests::helper() }\nmod tests { use super::f; pub fn helper() {} }",
        )]));
        assert!(report.violations.is_empty(), "{:?}", lines(&report));
    }

    #[test]
    fn a_module_in_no_list_must_be_classified() {
        let report = AGENT.analyse(&files(&[
            ("lib.rs", "pub mod widgets; pub mod event;"),
            ("widgets/mod.rs", "pub mod gear;"),
            ("widgets/gear.rs", "use crate::event::Event;"),
            ("event.rs", ""),
        ]));
        assert_eq!(
            lines(&report),
            vec![
                "agent/src/widgets/mod.rs:1: widgets is in no layer (classify it: add it to \
                 FOUNDATION, STAGES or ASSEMBLY in xtask/src/layers.rs)"
            ]
        );
        assert!(report
            .summary()
            .contains("unclassified  widgets      -> event"));
    }

    const CLI: Crate = CRATES[1];
    const PROTO: Crate = CRATES[2];

    #[test]
    fn the_crates_checked() {
        let srcs: Vec<(&str, bool)> = CRATES.iter().map(|c| (c.src, c.layered)).collect();
        assert_eq!(
            srcs,
            [
                ("agent/src", true),
                ("cli/src", false),
                ("proto/src", false),
                ("console/src", false),
                ("export/src", false)
            ]
        );
    }

    #[test]
    fn a_cycle_in_another_crate_is_reported_with_its_path() {
        let report = CLI.analyse(&files(&[
            ("lib.rs", "pub mod client; pub mod ctl;"),
            ("main.rs", "use fdr_cli::ctl; fn main() { ctl::run() }"),
            ("ctl/mod.rs", "mod events; mod query;\npub use events::run;"),
            (
                "ctl/events.rs",
                "use crate::client::Client;\n\n\nuse super::query::Filter;",
            ),
            (
                "ctl/query.rs",
                "fn f() {\n\n\n\n\n\n\n\n\n\n\n super::events::print(); }",
            ),
            ("client.rs", "use crate::ctl::events::Row;"),
        ]));
        assert_eq!(
            lines(&report),
            vec![
                "import cycle among the modules of `crate` (cli/src/): client, ctl\
                 \n    cli/src/client.rs:1: client imports ctl::events\
                 \n    cli/src/ctl/events.rs:1: ctl::events imports client",
                "import cycle among the modules of `ctl` (cli/src/ctl/): events, query\
                 \n    cli/src/ctl/events.rs:4: ctl::events imports ctl::query\
                 \n    cli/src/ctl/query.rs:12: ctl::query imports ctl::events",
            ]
        );
        assert_eq!(report.files, 5, "main.rs is another crate");
        assert_eq!(
            report.summary(),
            "cli/src: 5 files, 2 top-level modules, 4 crate paths \
             (import cycles checked, no layers)\n"
        );

        let report = PROTO.analyse(&files(&[
            ("names.rs", "use crate::render::Text;"),
            ("render/mod.rs", "mod json;"),
            ("render/json.rs", "fn f() {\n crate::names::kind_name() }"),
        ]));
        assert_eq!(
            lines(&report),
            vec![
                "import cycle among the modules of `crate` (proto/src/): names, render\
                 \n    proto/src/names.rs:1: names imports render\
                 \n    proto/src/render/json.rs:2: render::json imports names"
            ]
        );
    }

    #[test]
    fn another_crate_has_no_layers() {
        // Top-level modules in no list, a "foundation" name importing a
        // "stage" name: none of it matters outside the agent.
        let sources = files(&[
            (
                "lib.rs",
                "pub mod render; pub mod transport; pub mod event; pub mod api;\n\
                 pub mod v1 { tonic::include_proto!(\"fdr.v1\"); }\n\
                 pub mod daemon { pub struct X; }",
            ),
            (
                "render/mod.rs",
                "mod json; use crate::v1::Event; use crate::transport::Channel;",
            ),
            ("render/json.rs", "use super::super::v1::Kind;"),
            ("transport.rs", "use crate::daemon::X;"),
            ("event.rs", "use crate::api::Y;"),
            ("api.rs", ""),
        ]);
        let report = PROTO.analyse(&sources);
        assert!(report.violations.is_empty(), "{:?}", lines(&report));
        // The inline module of generated code is a module others import.
        assert_eq!(
            report.graph["render"],
            ["transport", "v1"].iter().map(|x| x.to_string()).collect()
        );
        assert!(report
            .summary()
            .starts_with("proto/src: 6 files, 4 top-level modules, 5 crate paths"));
        // The same files break the agent's layering.
        let agent = AGENT.analyse(&sources);
        assert_eq!(
            lines(&agent),
            vec![
                "agent/src/render/mod.rs:1: render is in no layer (classify it: add it to \
                 FOUNDATION, STAGES or ASSEMBLY in xtask/src/layers.rs)",
                "agent/src/transport.rs:1: transport is in no layer (classify it: add it to \
                 FOUNDATION, STAGES or ASSEMBLY in xtask/src/layers.rs)",
                "agent/src/event.rs:1: event imports api (foundation module `event` \
                 may import only foundation modules (event, config, util))",
            ]
        );
    }

    #[test]
    fn the_lists_do_not_overlap() {
        let all: Vec<&str> = FOUNDATION
            .iter()
            .chain(STAGES)
            .chain(ASSEMBLY)
            .copied()
            .collect();
        let unique: BTreeSet<&str> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len());
    }
}
