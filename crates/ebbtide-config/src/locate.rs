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
        let item = table.get(key)?;
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
