//! Interpreter errors as `AnalysisError`s: the location and the chain of macro calls kept, an
//! error raised inside the prelude moved to the BUILD file's call, hints for the messages users
//! meet most, and "did you mean" for an unknown parameter of a `.star` function.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{AnalysisError, AnalysisErrorKind as K, SourceSpan};

/// Converts an error of the interpreter into an `AnalysisError`, keeping its location and, for an
/// error inside a macro, the chain of calls that led there.
pub(super) fn starlark_error(e: starlark::Error) -> AnalysisError {
    let message = e.without_diagnostic().to_string();
    let at = e.span().map(|s| {
        SourceSpan::new(
            s.file.filename(),
            Arc::from(s.file.source()),
            s.span.begin().get() as usize,
            s.span.end().get() as usize,
        )
    });
    let hint = hint_for(&message);
    let message = match (&hint, message.split_once("; ")) {
        (Some(_), Some((head, _))) if message.starts_with("unknown configuration value") => {
            head.to_owned()
        }
        _ => message,
    };
    let mut err = AnalysisError::new(K::Starlark { message, hint }, at);
    for frame in &e.call_stack().frames {
        if let Some(loc) = &frame.location {
            let span = SourceSpan::new(
                loc.file.filename(),
                Arc::from(loc.file.source()),
                loc.span.begin().get() as usize,
                loc.span.end().get() as usize,
            );
            if err
                .at
                .as_ref()
                .is_some_and(|a| a.file == span.file && a.start == span.start)
            {
                continue;
            }
            err.related
                .push((span, format!("in a call to `{}`", frame.name)));
        }
    }
    // An error raised inside the prelude (a macro's own argument check) is the caller's
    // mistake: point at the BUILD file's call, and keep the prelude's line as context.
    let in_prelude = err
        .at
        .as_ref()
        .is_some_and(|a| a.file.starts_with("@flow//"));
    if in_prelude {
        if let Some(k) = err
            .related
            .iter()
            .position(|(s, _)| !s.file.starts_with("@flow//"))
        {
            let (caller, _) = err.related.remove(k);
            let inner = err.at.replace(caller).expect("checked above");
            // The prelude's inner calls are flow's business, not the user's: keep one line.
            err.related.retain(|(s, _)| !s.file.starts_with("@flow//"));
            err.related
                .insert(0, (inner, "raised here, in the prelude".to_owned()));
            narrow_to_named_parameter(&mut err);
        }
    }
    err
}

/// For a message naming "parameter `x`", narrows a call span to the `x = ...` keyword in it.
fn narrow_to_named_parameter(err: &mut AnalysisError) {
    let K::Starlark { message, .. } = &*err.kind else {
        return;
    };
    let Some(name) = message
        .split("parameter `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
    else {
        return;
    };
    let Some(at) = &mut err.at else { return };
    let text = at.text();
    let found = text.match_indices(name).find(|(i, _)| {
        let before = text[..*i].chars().next_back();
        let after = text[i + name.len()..].trim_start();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && after.starts_with('=')
            && !after.starts_with("==")
    });
    if let Some((i, _)) = found {
        *at = at.sub(i, i + name.len());
    }
}

/// Hints for interpreter messages that users meet most.
fn hint_for(message: &str) -> Option<String> {
    if message.starts_with("unknown configuration value") {
        if let Some((_, hint)) = message.split_once("; ") {
            return Some(hint.to_owned());
        }
    }
    if message.contains("`def` is not allowed") || message.contains("`lambda` is not allowed") {
        return Some(
            "BUILD files cannot define functions: put the `def` in a `.star` file and `load()` it"
                .into(),
        );
    }
    None
}

/// For "Found `x` extra named parameter(s) for call to MODULE.f": the closest parameter of `f`,
/// read from the `def` in the module's source.
pub(super) fn suggest_parameter(err: &mut AnalysisError, sources: &HashMap<String, Arc<str>>) {
    let K::Starlark { message, hint } = &mut *err.kind else {
        return;
    };
    let Some(rest) = message.strip_prefix("Found `") else {
        return;
    };
    let Some((bad, rest)) = rest.split_once('`') else {
        return;
    };
    let bad_owned = bad.to_owned();
    let bad = bad_owned.as_str();
    let Some(callee) = rest.split("for call to ").nth(1) else {
        return;
    };
    let Some((module, function)) = callee.trim().rsplit_once('.') else {
        return;
    };
    let Some(source) = sources.get(module) else {
        return;
    };
    let params = def_parameters(source, function);
    if let Some(s) = crate::suggest::closest(bad, params.iter().map(|p| p.as_str())) {
        *hint = Some(format!("did you mean `{s}`?"));
    } else if !params.is_empty() {
        *hint = Some(format!(
            "`{function}` takes {}",
            params
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    *message = format!("unknown parameter `{bad}` in a call to `{function}` (from `{module}`)");
    // Narrow the span from the whole call to the offending keyword.
    if let Some(at) = &mut err.at {
        let text = at.text();
        let found = text.match_indices(bad).find(|(i, _)| {
            let before = text[..*i].chars().next_back();
            let after = text[i + bad.len()..].trim_start();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                && after.starts_with('=')
                && !after.starts_with("==")
        });
        if let Some((i, _)) = found {
            *at = at.sub(i, i + bad.len());
        }
    }
}

/// The parameter names of `def function(...)` in `source`.
fn def_parameters(source: &str, function: &str) -> Vec<String> {
    let needle = format!("def {function}(");
    let Some(start) = source.find(&needle) else {
        return Vec::new();
    };
    let mut depth = 0usize;
    let mut params = Vec::new();
    let mut current = String::new();
    let mut in_default = false;
    for c in source[start + needle.len()..].chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth > 0 => depth -= 1,
            ')' => break,
            ',' if depth == 0 => {
                params.push(std::mem::take(&mut current));
                in_default = false;
                continue;
            }
            '=' if depth == 0 => in_default = true,
            _ => {}
        }
        if depth == 0 && !in_default && (c.is_alphanumeric() || c == '_') {
            current.push(c);
        }
    }
    params.push(current);
    params.retain(|p| !p.is_empty());
    params
}
