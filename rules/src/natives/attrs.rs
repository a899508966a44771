//! Reading the keyword arguments of `task` and `group`: each attribute type-checked, every
//! mistake collected as an `AnalysisError` that points at the attribute (or at the string literal
//! in it) in the BUILD file, and evaluation left to go on.

use std::collections::BTreeMap;
use std::time::Duration;

use starlark::collections::SmallMap;
use starlark::values::dict::DictRef;
use starlark::values::list_or_tuple::UnpackListOrTuple;
use starlark::values::{UnpackValue, Value};

use crate::error::{AnalysisError, AnalysisErrorKind as K, SourceSpan};

/// The span of `name = ` inside a call's text, or the whole call.
pub(super) fn attr_span(call: &SourceSpan, name: &str) -> SourceSpan {
    let text = call.text();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find(name) {
        let start = from + i;
        let end = start + name.len();
        let before_ok = start == 0 || !is_ident(bytes[start - 1]);
        let rest = text[end..].trim_start();
        let after_ok = rest.starts_with('=') && !rest.starts_with("==");
        if before_ok && after_ok {
            return call.sub(start, end);
        }
        from = end;
    }
    call.clone()
}

/// The span of a string literal `"value"` inside an attribute's text, or the attribute.
pub(super) fn literal_span(call: &SourceSpan, attr: &SourceSpan, value: &str) -> SourceSpan {
    let text = call.text();
    let from = attr.start.saturating_sub(call.start).min(text.len());
    for quote in ['"', '\''] {
        let needle = format!("{quote}{value}{quote}");
        if let Some(i) = text[from..].find(&needle) {
            return call.sub(from + i, from + i + needle.len());
        }
    }
    attr.clone()
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn describe(v: Value) -> String {
    let mut repr = v.to_repr();
    if repr.len() > 40 {
        let mut cut = 37;
        while !repr.is_char_boundary(cut) {
            cut -= 1;
        }
        repr.truncate(cut);
        repr.push_str("...");
    }
    format!("`{}` ({repr})", v.get_type())
}

/// Reads and type-checks attributes out of keyword arguments, collecting errors.
pub(super) struct Attrs<'a, 'v> {
    pub rule: &'static str,
    pub kwargs: &'a SmallMap<String, Value<'v>>,
    pub call: &'a SourceSpan,
    pub errors: Vec<AnalysisError>,
}

impl<'v> Attrs<'_, 'v> {
    pub fn get(&self, name: &str) -> Option<Value<'v>> {
        self.kwargs.get(name).copied().filter(|v| !v.is_none())
    }

    pub fn span(&self, name: &str) -> SourceSpan {
        attr_span(self.call, name)
    }

    fn type_error(&mut self, name: &str, expected: &'static str, got: Value) {
        self.errors.push(AnalysisError::new(
            K::AttributeType {
                rule: self.rule,
                attr: name.to_owned(),
                expected,
                got: describe(got),
            },
            Some(self.span(name)),
        ));
    }

    pub fn bad_value(&mut self, name: &str, reason: String) {
        self.errors.push(AnalysisError::new(
            K::BadValue {
                attr: name.to_owned(),
                reason,
            },
            Some(self.span(name)),
        ));
    }

    pub fn string(&mut self, name: &str) -> Option<String> {
        let v = self.get(name)?;
        match v.unpack_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                self.type_error(name, "a string", v);
                None
            }
        }
    }

    pub fn strings(&mut self, name: &str) -> Vec<String> {
        let Some(v) = self.get(name) else {
            return Vec::new();
        };
        match UnpackListOrTuple::<String>::unpack_value(v) {
            Ok(Some(list)) => list.items,
            _ => {
                self.type_error(name, "a list of strings", v);
                Vec::new()
            }
        }
    }

    pub fn string_dict(&mut self, name: &str) -> BTreeMap<String, String> {
        let Some(v) = self.get(name) else {
            return BTreeMap::new();
        };
        let Some(dict) = DictRef::from_value(v) else {
            self.type_error(name, "a dict of strings to strings", v);
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for (k, val) in dict.iter() {
            match (k.unpack_str(), val.unpack_str()) {
                (Some(k), Some(val)) => {
                    out.insert(k.to_owned(), val.to_owned());
                }
                _ => {
                    self.type_error(name, "a dict of strings to strings", v);
                    return BTreeMap::new();
                }
            }
        }
        out
    }

    pub fn bool(&mut self, name: &str, default: bool) -> bool {
        let Some(v) = self.get(name) else {
            return default;
        };
        match v.unpack_bool() {
            Some(b) => b,
            None => {
                self.type_error(name, "`True` or `False`", v);
                default
            }
        }
    }

    pub fn count(&mut self, name: &str) -> u32 {
        let Some(v) = self.get(name) else {
            return 0;
        };
        match v.unpack_i32() {
            Some(n) if n >= 0 => n as u32,
            Some(n) => {
                self.bad_value(name, format!("must not be negative, got {n}"));
                0
            }
            None => {
                self.type_error(name, "a non-negative int", v);
                0
            }
        }
    }

    pub fn duration(&mut self, name: &str) -> Option<Duration> {
        let v = self.get(name)?;
        if let Some(n) = v.unpack_i32() {
            if n <= 0 {
                self.bad_value(name, format!("must be positive, got {n}"));
                return None;
            }
            return Some(Duration::from_secs(n as u64));
        }
        if let Some(s) = v.unpack_str() {
            return match parse_duration(s) {
                Some(d) => Some(d),
                None => {
                    self.bad_value(
                        name,
                        format!(
                            "`{s}` is not a duration; write seconds (`90`) or `30s`, `5m`, `1h`"
                        ),
                    );
                    None
                }
            };
        }
        self.type_error(name, "seconds as an int, or a string such as `5m`", v);
        None
    }
}

/// `90`, `30s`, `5m`, `1h`, `1.5m` → a duration.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.trim().parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs > 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5 parsecs"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
