//! One bad element of a list that several targets share is one error, at the element.
//!
//! `SRCS = ["a.py", "mispelt.py"]` used by eight targets gave eight errors, each at a
//! `srcs = SRCS` use and none at the string. Here the errors of a package about the same bad
//! source, reported at uses of the same expression (`srcs = SRCS`) rather than at a literal,
//! become one: at the string when the top-level assignments of the names in that expression
//! (`SRCS = [...]`) hold it exactly once outside comments, with every use as a related span;
//! otherwise at the first use, with the others related. Limit: a list defined in a loaded
//! `.star` file is not looked into (the error stays at the first use of each package).

use std::collections::HashMap;

use crate::error::{AnalysisError, AnalysisErrorKind as K, SourceSpan};
use crate::label::Label;

/// `errors` with the ones about a shared bad source merged and placed at the element.
pub(super) fn merge(errors: Vec<AnalysisError>) -> Vec<AnalysisError> {
    let mut out: Vec<AnalysisError> = Vec::with_capacity(errors.len());
    // (file, path, reason) → the index in `out` of the error that stands for all.
    let mut first: HashMap<(String, String, String), usize> = HashMap::new();
    let mut uses: HashMap<usize, Vec<(SourceSpan, Label)>> = HashMap::new();
    for e in errors {
        let Some((key, label, at)) = at_a_use(&e) else {
            out.push(e);
            continue;
        };
        match first.get(&key) {
            Some(&i) => {
                push_also(&mut out[i], label.clone());
                uses.entry(i).or_default().push((at, label));
            }
            None => {
                first.insert(key, out.len());
                uses.insert(out.len(), vec![(at, label)]);
                out.push(e);
            }
        }
    }
    for (i, uses) in uses {
        place(&mut out[i], uses);
    }
    out
}

/// For an error about a source placed at a use (not at a string literal): its group's key, its
/// target and its place.
fn at_a_use(e: &AnalysisError) -> Option<((String, String, String), Label, SourceSpan)> {
    let at = e.at.as_ref()?;
    if at.text().starts_with(['"', '\'']) {
        return None;
    }
    let (label, path, reason) = match &*e.kind {
        K::MissingSource { label, path, .. } => (label, path, String::new()),
        K::BadSource {
            label,
            path,
            reason,
            ..
        } => (label, path, reason.clone()),
        _ => return None,
    };
    // Uses of another expression (another list with the same string) are other errors.
    let key = (
        at.file.clone(),
        format!("{path}\0{}", value_text(at)),
        reason,
    );
    Some((key, label.clone(), at.clone()))
}

fn push_also(e: &mut AnalysisError, other: Label) {
    if let K::MissingSource { also, .. } | K::BadSource { also, .. } = &mut *e.kind {
        also.push(other);
    }
}

/// Moves `e` to the string literal of its path when the file has exactly one, with each use
/// related; otherwise leaves it at the first use, with the others related.
fn place(e: &mut AnalysisError, uses: Vec<(SourceSpan, Label)>) {
    let (K::MissingSource { path, .. } | K::BadSource { path, .. }) = &*e.kind else {
        return;
    };
    let Some(first) = uses.first().map(|(at, _)| at.clone()) else {
        return;
    };
    let literals: Vec<(usize, usize)> = names_in(value_text(&first))
        .into_iter()
        .flat_map(|name| assignments_of(&first.source, name))
        .flat_map(|(from, to)| {
            literals_of(&first.source[from..to], path)
                .into_iter()
                .map(move |(s, e)| (from + s, from + e))
        })
        .collect();
    let mut related: Vec<(SourceSpan, String)> = Vec::new();
    if let [(start, end)] = literals[..] {
        e.at = Some(SourceSpan::new(
            first.file.clone(),
            first.source.clone(),
            start,
            end,
        ));
        for (at, label) in &uses {
            related.push((at.clone(), format!("used by `{label}`")));
        }
    } else {
        for (at, label) in uses.iter().skip(1) {
            related.push((at.clone(), format!("the same list, used by `{label}`")));
        }
    }
    related.append(&mut e.related);
    e.related = related;
}

/// The text of the value of the attribute named at `at` (`srcs` in `srcs = SRCS + X,`): up to
/// the next `,` or `)` outside brackets and strings.
fn value_text(at: &SourceSpan) -> &str {
    let source = &at.source[at.end.min(at.source.len())..];
    let Some(eq) = source.find('=') else {
        return "";
    };
    let rest = &source[eq + 1..];
    let end = top_level_end(rest, |c| c == ',' || c == ')');
    rest[..end].trim()
}

/// The index in `text` of the first character `stop` accepts outside brackets and strings, or
/// the end.
fn top_level_end(text: &str, stop: impl Fn(char) -> bool) -> usize {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if "([{".contains(c) => depth += 1,
            None if ")]}".contains(c) && depth > 0 => depth -= 1,
            None if depth == 0 && stop(c) => return i,
            None => {}
        }
    }
    text.len()
}

/// The identifiers of an expression (outside strings).
fn names_in(expr: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut quote: Option<char> = None;
    let mut start: Option<usize> = None;
    for (i, c) in expr
        .char_indices()
        .chain(std::iter::once((expr.len(), ' ')))
    {
        let ident = c == '_' || c.is_ascii_alphanumeric();
        match (quote, start) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, Some(s)) if !ident => {
                names.push(&expr[s..i]);
                start = None;
                if c == '"' || c == '\'' {
                    quote = Some(c);
                }
            }
            (None, None) if c == '"' || c == '\'' => quote = Some(c),
            (None, None) if ident && !c.is_ascii_digit() => start = Some(i),
            _ => {}
        }
    }
    names
}

/// The byte ranges of the values of the top-level assignments to `name` (`NAME = [...]`,
/// `NAME += [...]`) in `source`.
fn assignments_of(source: &str, name: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    for line in source.split_inclusive('\n') {
        let start = at;
        at += line.len();
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(value) = rest
            .strip_prefix("+=")
            .or_else(|| rest.strip_prefix('=').filter(|r| !r.starts_with('=')))
        else {
            continue;
        };
        let from = start + (line.len() - value.len());
        let end = top_level_end(&source[from..], |c| c == '\n');
        out.push((from, from + end));
    }
    out
}

/// The byte ranges of the string literals `"value"` and `'value'` in `source`, outside
/// comments.
fn literals_of(source: &str, value: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    for quote in ['"', '\''] {
        let needle = format!("{quote}{value}{quote}");
        for (i, _) in source.match_indices(&needle) {
            let line_start = source[..i].rfind('\n').map_or(0, |n| n + 1);
            if !in_comment(&source[line_start..i]) {
                found.push((i, i + needle.len()));
            }
        }
    }
    found.sort_unstable();
    found
}

/// Whether a `#` outside a string starts a comment in `line_before` (the text of a line up to
/// a point): the point is then in the comment.
fn in_comment(line_before: &str) -> bool {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in line_before.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '#' => return true,
            None if c == '"' || c == '\'' => quote = Some(c),
            None => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_their_assignments() {
        assert_eq!(
            names_in("SRCS + [\"a.py\", X] + glob([\"*.py\"])"),
            ["SRCS", "X", "glob"]
        );
        let src = "SRCS = [\n  \"a.py\",\n  \"b.py\",\n]\nOTHER = {\"k\": \"b.py\"}\nSRCS += [\"c.py\"]\n";
        let ranges = assignments_of(src, "SRCS");
        assert_eq!(ranges.len(), 2);
        assert!(src[ranges[0].0..ranges[0].1].contains("\"b.py\""));
        assert!(!src[ranges[0].0..ranges[0].1].contains("OTHER"));
        assert_eq!(&src[ranges[1].0..ranges[1].1], " [\"c.py\"]");
    }

    #[test]
    fn literals_outside_comments_only() {
        let src = "# \"a.py\" is old\nSRCS = [\"a.py\", 'b.py']  # not \"b.py\"\nX = 'c' + \"#\" + \"a.py\"\n";
        assert_eq!(literals_of(src, "a.py").len(), 2);
        assert_eq!(literals_of(src, "b.py").len(), 1);
        assert_eq!(literals_of(src, "z.py").len(), 0);
    }
}
