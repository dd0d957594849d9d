//! The module layering check: every `crate::…` path in `src/` must point down
//! the layer list that docs/architecture.md declares between the markers
//! `<!-- layers:begin -->` and `<!-- layers:end -->`, and every top-level
//! module must be listed there. The doc is the single source: change the
//! picture and this test follows; add an upward import and it fails with the
//! file and line.
//!
//! Paths are read as text: `use crate::{a::X, b}` groups, inline
//! `crate::a::f()` calls and `super::super::a` climbs out of a nested module
//! all count. Comments are skipped, so docs may mention any module.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Layer number of each top-level module, lower layers first.
type Layers = BTreeMap<String, usize>;

/// One import that points up (or sideways within a layer).
#[derive(Debug, PartialEq)]
struct Violation {
    file: String,
    line: usize,
    from: String,
    to: String,
}

#[test]
fn every_import_points_down_the_documented_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = fs::read_to_string(root.join("docs/architecture.md")).expect("docs/architecture.md is readable");
    let layers = parse_layers(&doc).expect("docs/architecture.md declares the layers between the markers");

    let mut unlisted = Vec::new();
    let mut violations = Vec::new();
    for file in rust_files(&root.join("src")) {
        let relative = file.strip_prefix(root.join("src")).expect("under src/").to_path_buf();
        let Some(module) = module_path(&relative) else { continue };
        if !layers.contains_key(&module[0]) {
            unlisted.push(module[0].clone());
            continue;
        }
        let text = fs::read_to_string(&file).expect("source is readable");
        violations.extend(check_file(&relative.display().to_string(), &module, &text, &layers));
    }
    unlisted.sort();
    unlisted.dedup();
    assert!(unlisted.is_empty(), "modules missing from the layer list in docs/architecture.md: {unlisted:?}");
    let report: Vec<String> = violations
        .iter()
        .map(|v| {
            format!(
                "src/{}:{}: {} (L{}) imports {} (L{})",
                v.file, v.line, v.from, layers[&v.from], v.to, layers[&v.to]
            )
        })
        .collect();
    assert!(report.is_empty(), "imports that do not point down the layers:\n{}", report.join("\n"));
}

#[test]
fn an_upward_or_sideways_import_is_reported() {
    let layers =
        parse_layers("<!-- layers:begin -->\n```\nL0  ids, ws\nL1  room\nL2  shard, store\n```\n<!-- layers:end -->\n")
            .expect("layers parse");
    let room = ["room".to_string(), "meeting".to_string()];
    let text = "use crate::ids::RoomKey;\nuse crate::{ws::Frame, store::Event};\n// crate::shard in a comment\n\
                fn f() { crate::shard::go(); super::super::store::x(); super::sim::y(); }\n\
                use crate::{\n    ids::{A, B},\n    shard::{C, D},\n};\n";
    let found = check_file("room/meeting.rs", &room, text, &layers);
    let mut targets: Vec<(&str, usize)> = found.iter().map(|v| (v.to.as_str(), v.line)).collect();
    targets.sort();
    assert_eq!(targets, vec![("shard", 4), ("shard", 7), ("store", 2), ("store", 4)]);

    let shard = ["shard".to_string()];
    let sideways = check_file("shard/mod.rs", &shard, "use crate::store::Handle;\nuse crate::room::Rooms;\n", &layers);
    assert_eq!(sideways.len(), 1, "a module may not import another of its own layer: {sideways:?}");
    assert_eq!(sideways[0].to, "store");
}

/// Reads `L<n>  a, b (notes…), c` lines between the markers.
fn parse_layers(doc: &str) -> Option<Layers> {
    let start = doc.find("<!-- layers:begin -->")?;
    let end = doc[start..].find("<!-- layers:end -->")? + start;
    let mut layers = Layers::new();
    for line in doc[start..end].lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix('L') else { continue };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(level) = digits.parse::<usize>() else { continue };
        let names = strip_parentheses(&rest[digits.len()..]);
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            layers.insert(name.to_string(), level);
        }
    }
    (!layers.is_empty()).then_some(layers)
}

/// Drops `( … )` notes so a layer line can explain its modules.
fn strip_parentheses(text: &str) -> String {
    let mut depth = 0usize;
    text.chars()
        .filter(|c| {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => return depth == 0,
            }
            false
        })
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("src/ is readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// `room/meeting.rs` → `["room", "meeting"]`; `shard/mod.rs` → `["shard"]`;
/// the crate root files (lib.rs, main.rs) sit above every layer: `None`.
fn module_path(relative: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?.to_string();
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return None;
    }
    if stem != "mod" {
        parts.push(stem);
    }
    Some(parts)
}

/// Every crate-level module `text` reaches that is not strictly below `module[0]`.
fn check_file(file: &str, module: &[String], text: &str, layers: &Layers) -> Vec<Violation> {
    let own = &module[0];
    let own_level = layers[own];
    let code = without_comments(text);
    let mut found = Vec::new();
    for (offset, target) in referenced_modules(&code, module) {
        if &target == own || !layers.contains_key(&target) {
            continue;
        }
        if layers[&target] >= own_level {
            let line = code[..offset].matches('\n').count() + 1;
            found.push(Violation { file: file.into(), line, from: own.clone(), to: target });
        }
    }
    found
}

/// `text` with each `//` comment blanked out, lines kept in place.
fn without_comments(text: &str) -> String {
    text.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Top-level modules (with the byte offset where each is named) reached by
/// `crate::` paths, including `{…}` groups over several lines, and by
/// `super::` chains that climb to the crate root.
fn referenced_modules(code: &str, module: &[String]) -> Vec<(usize, String)> {
    let mut targets = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find("crate::") {
        let at = from + found;
        let start = at + "crate::".len();
        let preceded_by_ident =
            code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
        if !preceded_by_ident {
            if code[start..].starts_with('{') {
                targets.extend(group_heads(code, start + 1));
            } else {
                targets.push((start, ident(&code[start..])));
            }
        }
        from = start;
    }
    // `super::super::x` from `room/meeting.rs` (depth 2) reaches the root's `x`.
    let depth = module.len();
    let mut from = 0;
    while let Some(found) = code[from..].find("super::") {
        let at = from + found;
        let mut tail = at;
        let mut climbs = 0;
        while code[tail..].starts_with("super::") {
            climbs += 1;
            tail += "super::".len();
        }
        if climbs >= depth {
            targets.push((tail, ident(&code[tail..])));
        }
        from = tail;
    }
    targets.retain(|(_, t)| !t.is_empty() && t != "self");
    targets
}

/// The first path segment of each top-level item of the `use` group that
/// opens just before `start`: `a::X, b, c::{d, e}` → a, b, c.
fn group_heads(code: &str, start: usize) -> Vec<(usize, String)> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut awaiting_item = true;
    for (i, c) in code[start..].char_indices() {
        let at = start + i;
        if awaiting_item && !c.is_whitespace() {
            heads.push((at, ident(&code[at..])));
            awaiting_item = false;
        }
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => awaiting_item = true,
            _ => {}
        }
    }
    heads
}

fn ident(text: &str) -> String {
    text.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}
