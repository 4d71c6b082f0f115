//! Pointing a key path (`pools[1].max`) at a line of the file.

use toml_edit::{Item, Table};

/// 1-based line of a byte offset.
pub(crate) fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Sets `line` on issues that have a path but no line yet. A key that is
/// missing from the file points at the table that should hold it.
pub(crate) fn fill_lines(text: &str, issues: &mut [crate::Issue]) {
    let Ok(doc) = toml_edit::Document::parse(text) else {
        return;
    };
    for issue in issues
        .iter_mut()
        .filter(|i| i.line.is_none() && !i.path.is_empty())
    {
        issue.line = span_of(doc.as_table(), &issue.path).map(|start| line_at(text, start));
    }
}

/// The key path (`pools[1].foo`) of the key or value at byte `offset`, so
/// an error serde reports by position also names the setting.
pub(crate) fn path_at(text: &str, offset: usize) -> Option<String> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let path = path_in(doc.as_table(), offset, String::new());
    (!path.is_empty()).then_some(path)
}

fn path_in(table: &Table, offset: usize, prefix: String) -> String {
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    let contains = |span: Option<std::ops::Range<usize>>| span.is_some_and(|s| s.contains(&offset));
    let mut found = prefix.clone();
    for (key, item) in table.iter() {
        let key_span = table.key(key).and_then(|k| k.span());
        // Table spans may cover only their header: look inside each.
        match item {
            Item::Table(t) => {
                let here = join(key);
                let inner = path_in(t, offset, here.clone());
                if inner != here || contains(t.span()) || contains(key_span) {
                    return inner;
                }
            }
            Item::ArrayOfTables(aot) => {
                for (i, t) in aot.iter().enumerate() {
                    let here = format!("{}[{i}]", join(key));
                    let inner = path_in(t, offset, here.clone());
                    if inner != here || contains(t.span()) {
                        return inner;
                    }
                }
            }
            other if contains(key_span) || contains(other.span()) => {
                found = join(key);
            }
            _ => {}
        }
    }
    found
}

fn span_of(root: &Table, path: &str) -> Option<usize> {
    let mut table = root;
    let mut best = None;
    // Engine-level settings live under [engine].
    let path = if !path.contains('.')
        && !path.contains('[')
        && root.contains_key("engine")
        && !root.contains_key(path)
    {
        format!("engine.{path}")
    } else {
        path.to_string()
    };
    for segment in path.split('.') {
        let (key, index) = match segment.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        // A key the file lacks: point at the table that should hold it.
        let Some(item) = table.get(key) else {
            return best;
        };
        let (next, span) = match (item, index) {
            (Item::ArrayOfTables(aot), Some(i)) => {
                let t = aot.get(i)?;
                (Some(t), t.span())
            }
            (Item::Table(t), None) => (Some(t), t.span()),
            (other, _) => (None, other.span()),
        };
        if let Some(s) = span {
            best = Some(s.start);
        } else if let Some((k, _)) = table.get_key_value(key) {
            best = k.span().map(|s| s.start).or(best);
        }
        match next {
            Some(t) => table = t,
            None => return best,
        }
    }
    best
}
