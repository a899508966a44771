//! The prelude: Starlark rule files embedded in the binary and loaded as `@flow//rules:NAME.star`.

/// `(path inside the prelude, contents)`; `load("@flow//rules:python.star")` reads
/// `rules/python.star`.
pub const FILES: &[(&str, &str)] = &[
    (
        "rules/delivery.star",
        include_str!("../prelude/delivery.star"),
    ),
    ("rules/python.star", include_str!("../prelude/python.star")),
    ("rules/util.star", include_str!("../prelude/util.star")),
];

/// The contents of one prelude file.
pub fn get(path: &str) -> Option<&'static str> {
    FILES.iter().find(|(p, _)| *p == path).map(|(_, c)| *c)
}
