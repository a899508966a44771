//! A `gate` call's own attributes: its checks (each parsed, an error at its string when it is
//! not a check, with the metrics that exist), the denied licenses, and the output it writes.

use super::attrs::{literal_span, Attrs};
use crate::error::{AnalysisError, AnalysisErrorKind as K};
use crate::gate::{canonical, parse_check};
use crate::label::Label;

/// The file a gate writes in its package: its table as JSON (`NAME.gate.json`).
pub(super) fn output(name: &str) -> String {
    format!("{name}.gate.json")
}

/// The gate's command ([`canonical`]) from `checks` and `licenses_denied`; errors go to `a`.
pub(super) fn command(a: &mut Attrs<'_, '_>, deps: &[Label]) -> Option<String> {
    let span = a.span("checks");
    let texts = a.strings("checks");
    if a.get("checks").is_none() {
        a.errors.push(AnalysisError::new(
            K::MissingAttribute {
                rule: "gate",
                attr: "checks",
            },
            Some(a.call.clone()),
        ));
        return None;
    }
    if texts.is_empty() {
        a.bad_value("checks", "a gate needs at least one check".into());
    }
    if deps.is_empty() {
        a.bad_value(
            "deps",
            "a gate reads the reports of its dependencies: list the targets that write them".into(),
        );
    }
    let mut checks = Vec::new();
    for text in &texts {
        match parse_check(text) {
            Ok(c) => checks.push(c),
            Err(e) => {
                let at = literal_span(a.call, &span, text);
                // Inside the string: past its opening quote.
                let inner = match at.text().starts_with(['"', '\'']) {
                    true => at.sub(1 + e.start, 1 + e.end),
                    false => at,
                };
                a.errors.push(AnalysisError::new(
                    K::BadCheck {
                        check: text.clone(),
                        message: e.message,
                        help: e.help,
                    },
                    Some(inner),
                ));
            }
        }
    }
    let denied = a.strings("licenses_denied");
    for l in &denied {
        if l.trim().is_empty() || l.contains('\n') {
            a.bad_value(
                "licenses_denied",
                format!("`{l}` is not a license name (e.g. `GPL-3.0`, `AGPL*`)"),
            );
        } else if l.trim_matches('*').contains('*') {
            a.bad_value(
                "licenses_denied",
                format!(
                    "`{l}`: a `*` matches only at the start or the end of a name (`*GPL*`, `AGPL*`)"
                ),
            );
        }
    }
    (!checks.is_empty() && checks.len() == texts.len()).then(|| canonical(&checks, &denied))
}
