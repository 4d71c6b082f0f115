//! The subset of Compute Engine's list filter language the fake
//! understands: comparisons `FIELD = VALUE` and `FIELD != VALUE` on
//! `name`, `status`, `zone` and `labels.KEY`, joined by `AND` (or by
//! juxtaposition, as the API allows), each optionally in parentheses. A
//! filter outside that subset is refused with a 400, never ignored, so a
//! test cannot pass because the fake listed too much.

use serde_json::Value;

/// One comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    field: String,
    negated: bool,
    value: String,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    terms: Vec<Term>,
}

impl Filter {
    /// Parses `text`; the error says what was not understood.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut terms = Vec::new();
        let mut words = text.split_whitespace().peekable();
        while let Some(first) = words.next() {
            if first.eq_ignore_ascii_case("AND") {
                continue;
            }
            if first.eq_ignore_ascii_case("OR") {
                return Err("OR is not supported by this fake".into());
            }
            let field = first.trim_start_matches('(').to_string();
            let op = words
                .next()
                .ok_or_else(|| format!("expected = or != after {field}"))?;
            let negated = match op {
                "=" | "eq" => false,
                "!=" | "ne" => true,
                other => return Err(format!("unsupported operator {other:?}")),
            };
            let value = words
                .next()
                .ok_or_else(|| format!("expected a value after {field} {op}"))?
                .trim_end_matches(')')
                .trim_matches('"')
                .to_string();
            let known = field == "name"
                || field == "status"
                || field == "zone"
                || field.strip_prefix("labels.").is_some_and(|k| !k.is_empty());
            if !known {
                return Err(format!("unsupported field {field:?}"));
            }
            terms.push(Term {
                field,
                negated,
                value,
            });
        }
        Ok(Filter { terms })
    }

    /// Whether an instance resource (as JSON) passes.
    pub fn matches(&self, instance: &Value) -> bool {
        self.terms.iter().all(|t| {
            let actual = match t.field.strip_prefix("labels.") {
                Some(key) => instance.get("labels").and_then(|l| l.get(key)),
                None => instance.get(t.field.as_str()),
            }
            .and_then(Value::as_str);
            let actual = if t.field == "zone" {
                actual.map(|z| z.rsplit('/').next().unwrap_or(z))
            } else {
                actual
            };
            (actual == Some(t.value.as_str())) != t.negated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_and_name_terms_are_anded_and_unknown_syntax_is_refused() {
        let i =
            serde_json::json!({"name": "a", "labels": {"c": "x"}, "zone": "https://h/zones/z1"});
        assert!(Filter::parse("labels.c = x").expect("parse").matches(&i));
        assert!(!Filter::parse("labels.c = y").expect("parse").matches(&i));
        assert!(
            Filter::parse("(labels.c = x) AND (name = a)")
                .expect("parse")
                .matches(&i)
        );
        assert!(
            !Filter::parse("labels.c = x name != a")
                .expect("parse")
                .matches(&i)
        );
        assert!(Filter::parse("zone = z1").expect("parse").matches(&i));
        assert!(Filter::parse("labels.c = x OR name = b").is_err());
        assert!(Filter::parse("cpuPlatform = x").is_err());
        assert!(Filter::parse("name ~ a").is_err());
    }
}
