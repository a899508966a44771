//! The crates' dependency direction (STYLE.md): `rules` and `cache` never depend on `engine`
//! (the root package `flow`), `rules` never on tokio or rusqlite, `cache` never on starlark.
//! Read from the manifests, as Buck2 does, so a stray dependency fails CI.

use std::path::Path;

fn dependencies(manifest: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(manifest);
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    let mut names = Vec::new();
    for table in ["dependencies", "build-dependencies"] {
        if let Some(deps) = doc.get(table).and_then(|d| d.as_table()) {
            for (name, spec) in deps {
                names.push(name.clone());
                if let Some(pkg) = spec.get("package").and_then(|p| p.as_str()) {
                    names.push(pkg.to_owned());
                }
            }
        }
    }
    names
}

fn assert_no(manifest: &str, forbidden: &[&str]) {
    let deps = dependencies(manifest);
    assert!(
        !deps.is_empty(),
        "{manifest} lists no dependencies: is the test reading the right file?"
    );
    for f in forbidden {
        assert!(
            !deps.iter().any(|d| d == f),
            "{manifest} must not depend on `{f}` (deps: {deps:?})"
        );
    }
}

#[test]
fn rules_depends_on_neither_engine_nor_runtime() {
    assert_no(
        "rules/Cargo.toml",
        &["flow", "flow-cache", "tokio", "rusqlite"],
    );
}

#[test]
fn cache_depends_on_neither_engine_nor_starlark() {
    assert_no("cache/Cargo.toml", &["flow", "flow-rules", "starlark"]);
}

#[test]
fn engine_uses_both_crates() {
    let deps = dependencies("Cargo.toml");
    assert!(deps.iter().any(|d| d == "flow-rules"));
    assert!(deps.iter().any(|d| d == "flow-cache"));
}
