//! `flow.toml`: the workspace's configuration, parsed with serde. Every table rejects unknown keys,
//! and every error names the file, the line and the key.
//!
//! ```toml
//! [workspace]
//! default_visibility = ["//visibility:public"]   # for targets without `visibility`
//!
//! [build]
//! jobs = 4                                       # default: the number of cores
//!
//! [vars]                                         # free-form values, read with config("key")
//! python_versions = ["3.11", "3.12"]
//!
//! [ledger]                                       # the deploy ledger (delivery/ledger/)
//! remote = "origin"                              # a git remote sharing it; default: local
//! keep = 5                                       # artifacts pinned per environment
//! [environments.production]                      # every environment a deploy names
//! window = "Tue-Thu 10:00-16:00 America/New_York"   # or a list; absent: always open
//! emergency_approval = true                      # --emergency also needs --approved-by
//! ```

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flow_cache::regular::{read_regular, Links};
use flow_rules::VisibilityRule;
use serde::Deserialize;
use toml::Spanned;

use crate::delivery::ledger::LedgerConfig;
use crate::delivery::window::{Environment, Window, Windows};

/// The file name that marks a workspace root.
pub const CONFIG_FILE: &str = "flow.toml";

/// What `flow init` writes.
pub const TEMPLATE: &str = r#"# flow workspace configuration; see docs/configuration.md.

[workspace]
# Visibility of targets that do not set `visibility`.
default_visibility = ["//visibility:public"]

[build]
# Parallel actions; default: the number of cores.
# jobs = 4
# The PATH actions see (fixed, so that action keys are equal across machines).
# action_path = ["/usr/local/bin", "/usr/bin", "/bin"]
# Where action sandboxes are made; default: a private directory on a tmpfs when one with
# 1 GiB free is at hand ($XDG_RUNTIME_DIR or /dev/shm), else `sandbox/` in the cache directory.
# sandbox_dir = "/dev/shm/flow-sandboxes"

[cache]
# Where results are cached; default `.flow` in the workspace root. FLOW_CACHE_DIR and
# --cache-dir override it.
# dir = ".flow"
# max_size = "10GiB"

[vars]
# Values BUILD files read with config("name"), e.g. a Python test matrix.
# python_versions = ["3.11", "3.12"]

[ledger]
# A git remote (name or URL) whose ref `refs/flow/ledger` shares the deploy ledger, so that CI
# runners that start empty see what is live; default: the ledger stays in `.flow/ledger/`.
# remote = "origin"
# Artifacts kept in the cache per environment for rollbacks, besides the live one.
# keep = 5
"#;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    workspace: RawWorkspace,
    #[serde(default)]
    build: RawBuild,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    vars: BTreeMap<String, toml::Value>,
    #[serde(default)]
    ledger: RawLedger,
    #[serde(default)]
    environments: BTreeMap<String, RawEnvironment>,
    #[serde(default)]
    test: RawTest,
    #[serde(default)]
    remote: crate::remote::config::RawRemote,
}

/// `[test]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    quarantine: Option<Vec<Spanned<String>>>,
}

/// `[environments.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    window: Option<Spanned<OneOrMany>>,
    emergency_approval: Option<bool>,
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a window (a string such as \"Tue-Thu 10:00-16:00 America/New_York\") or a list of them"
)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkspace {
    name: Option<String>,
    default_visibility: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    jobs: Option<Spanned<i64>>,
    keep_going: Option<bool>,
    action_path: Option<Vec<Spanned<String>>>,
    sandbox_dir: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    dir: Option<String>,
    max_size: Option<Spanned<String>>,
}

/// `[ledger]`: where the deploy ledger is shared, and how many artifacts stay pinned.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    remote: Option<Spanned<String>>,
    keep: Option<Spanned<i64>>,
}

impl RawLedger {
    fn validate(
        self,
        err: &dyn Fn(Range<usize>, String) -> ConfigError,
    ) -> Result<LedgerConfig, ConfigError> {
        let remote = match self.remote {
            Some(r) if r.get_ref().trim().is_empty() => {
                return Err(err(r.span(), "invalid value for key `ledger.remote`: an empty remote (a git remote's name or URL)".into()))
            }
            r => r.map(Spanned::into_inner),
        };
        let keep = match self.keep {
            None => crate::delivery::ledger::DEFAULT_KEEP,
            Some(k) if (0..=1000).contains(k.get_ref()) => *k.get_ref() as usize,
            Some(k) => {
                return Err(err(
                    k.span(),
                    format!(
                        "invalid value for key `ledger.keep`: {} (must be between 0 and 1000)",
                        k.get_ref()
                    ),
                ))
            }
        };
        Ok(LedgerConfig { remote, keep })
    }
}

/// The parsed and validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Absolute path of `flow.toml`.
    pub path: PathBuf,
    pub name: Option<String>,
    pub default_visibility: Vec<VisibilityRule>,
    pub jobs: Option<usize>,
    pub keep_going: bool,
    /// The `PATH` every action sees: fixed, so that keys are equal across machines.
    pub action_path: Vec<String>,
    /// `[build] sandbox_dir`: where action sandboxes are made (absolute); `None`: chosen by
    /// `executor::sandbox_root`.
    pub sandbox_dir: Option<PathBuf>,
    /// `[cache] dir`, relative to the workspace root unless absolute.
    pub cache_dir: Option<PathBuf>,
    /// `[cache] max_size` in bytes: the target of `flow cache gc` without `--max-size`.
    pub cache_max_size: Option<u64>,
    /// `[vars]`, as JSON values (what Starlark's `config()` returns).
    pub vars: BTreeMap<String, serde_json::Value>,
    /// `[ledger]`: the deploy ledger's remote and how many artifacts it pins.
    pub ledger: LedgerConfig,
    /// `[environments.NAME]`: where deploys may go, with their windows.
    pub environments: BTreeMap<String, Environment>,
    /// `[test] quarantine`: target patterns whose failures are reported as warnings, still
    /// recorded as failures, and fail no build (docs/configuration.md).
    pub quarantine: Vec<flow_rules::pattern::TargetPattern>,
    /// `[remote]`: the remote cache, if any.
    pub remote: Option<crate::remote::config::RemoteConfig>,
}

/// A problem in `flow.toml`, with the span of the offending key or value when known.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// The file as the user should see it (relative to the current directory when possible).
    pub file: String,
    pub text: Arc<str>,
    pub span: Option<Range<usize>>,
    pub message: String,
    pub help: Option<String>,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path, display: &str) -> Result<Config, crate::error::Error> {
        let io = |e: std::io::Error| crate::error::Error::Io {
            path: path.to_path_buf(),
            action: "read",
            error: e.to_string(),
        };
        // A regular file (a link to one is followed), at most 16 MiB: a FIFO or a device
        // there must not make flow wait or read without end.
        let bytes = read_regular(path, Links::Follow, 16 << 20).map_err(io)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        Config::parse(path, display, &text).map_err(crate::error::Error::Config)
    }

    /// Parses the text of a `flow.toml`.
    pub fn parse(path: &Path, display: &str, text: &str) -> Result<Config, ConfigError> {
        let source: Arc<str> = Arc::from(text);
        let err = |span: Option<Range<usize>>, message: String, help: Option<String>| ConfigError {
            file: display.to_owned(),
            text: source.clone(),
            span,
            message,
            help,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (message, help) = explain_toml_error(e.message());
            err(e.span(), message, help)
        })?;
        let mut default_visibility = Vec::new();
        match raw.workspace.default_visibility {
            None => default_visibility.push(VisibilityRule::Public),
            Some(list) => {
                for v in list {
                    let rule = VisibilityRule::parse(v.get_ref()).map_err(|e| {
                        err(
                            Some(v.span()),
                            format!(
                                "invalid value for key `workspace.default_visibility`: `{}`: {}",
                                v.get_ref(),
                                e.kind
                            ),
                            Some("use `//visibility:public`, `//visibility:private` or a package pattern such as `//src/...`".into()),
                        )
                    })?;
                    default_visibility.push(rule);
                }
            }
        }
        let jobs = match raw.build.jobs {
            None => None,
            Some(j) if *j.get_ref() >= 1 && *j.get_ref() <= 4096 => Some(*j.get_ref() as usize),
            Some(j) => {
                return Err(err(
                    Some(j.span()),
                    format!(
                        "invalid value for key `build.jobs`: {} (must be between 1 and 4096)",
                        j.get_ref()
                    ),
                    None,
                ))
            }
        };
        let mut action_path = Vec::new();
        for dir in raw.build.action_path.unwrap_or_else(|| {
            DEFAULT_ACTION_PATH
                .iter()
                .map(|d| Spanned::new(0..0, (*d).to_owned()))
                .collect()
        }) {
            if !dir.get_ref().starts_with('/') || dir.get_ref().contains(':') {
                return Err(err(
                    Some(dir.span()),
                    format!(
                        "invalid value for key `build.action_path`: `{}` (each entry is one absolute directory)",
                        dir.get_ref()
                    ),
                    None,
                ));
            }
            action_path.push(dir.into_inner());
        }
        let sandbox_dir = match raw.build.sandbox_dir {
            Some(d) if !d.get_ref().starts_with('/') => {
                return Err(err(
                    Some(d.span()),
                    format!(
                        "invalid value for key `build.sandbox_dir`: `{}` (an absolute directory)",
                        d.get_ref()
                    ),
                    None,
                ))
            }
            d => d.map(|d| PathBuf::from(d.into_inner())),
        };
        let cache_max_size = match raw.cache.max_size {
            None => None,
            Some(s) => Some(parse_size(s.get_ref()).ok_or_else(|| {
                err(
                    Some(s.span()),
                    format!("invalid value for key `cache.max_size`: `{}`", s.get_ref()),
                    Some("write a size such as `500MiB`, `10GiB` or `2GB`".into()),
                )
            })?),
        };
        let ledger = raw
            .ledger
            .validate(&|span, message| err(Some(span), message, None))?;
        let vars = raw
            .vars
            .into_iter()
            .map(|(k, v)| (k, toml_to_json(v)))
            .collect();
        let environments = parse_environments(raw.environments)
            .map_err(|(span, message)| err(Some(span), message, None))?;
        let mut quarantine = Vec::new();
        for p in raw.test.quarantine.unwrap_or_default() {
            let pattern = flow_rules::pattern::TargetPattern::parse(p.get_ref()).map_err(|e| {
                err(
                    Some(p.span()),
                    format!(
                        "invalid value for key `test.quarantine`: `{}`: {}",
                        p.get_ref(),
                        e.kind
                    ),
                    Some(
                        "write absolute labels or patterns: `//pkg:test_py3_11`, `//flaky/...`"
                            .into(),
                    ),
                )
            })?;
            quarantine.push(pattern);
        }
        let remote = crate::remote::config::parse(raw.remote)
            .map_err(|(span, message, help)| err(span, message, help))?;
        Ok(Config {
            path: path.to_path_buf(),
            name: raw.workspace.name,
            default_visibility,
            jobs,
            keep_going: raw.build.keep_going.unwrap_or(false),
            action_path,
            sandbox_dir,
            cache_dir: raw.cache.dir.map(PathBuf::from),
            cache_max_size,
            vars,
            ledger,
            environments,
            quarantine,
            remote,
        })
    }
}

/// `[environments.*]` → environments; `Err`: the span of the bad window and why.
fn parse_environments(
    raw: BTreeMap<String, RawEnvironment>,
) -> Result<BTreeMap<String, Environment>, (Range<usize>, String)> {
    let mut environments = BTreeMap::new();
    for (name, env) in raw {
        let mut windows = Vec::new();
        if let Some(value) = env.window {
            let span = value.span();
            let texts = match value.into_inner() {
                OneOrMany::One(text) => vec![text],
                OneOrMany::Many(texts) => texts,
            };
            for text in texts {
                let window = Window::parse(&text).map_err(|why| {
                    (
                        span.clone(),
                        format!("invalid value for key `environments.{name}.window`: {why}"),
                    )
                })?;
                windows.push(window);
            }
        }
        let environment = Environment {
            name: name.clone(),
            windows: Windows(windows),
            emergency_approval: env.emergency_approval.unwrap_or(false),
        };
        environments.insert(name, environment);
    }
    Ok(environments)
}

/// The action `PATH` when `flow.toml` does not set `build.action_path`.
pub const DEFAULT_ACTION_PATH: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin"];

/// `10GiB`, `500MiB`, `2GB`, `1024` (bytes) → bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = n * mult;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

/// Turns serde's wording into flow's house style and adds a hint for unknown keys.
fn explain_toml_error(message: &str) -> (String, Option<String>) {
    let message = message.trim().replace('\n', "; ");
    if let Some(rest) = message.strip_prefix("unknown field ") {
        // "unknown field `x`, expected one of `a`, `b`"
        let (field, expected) = rest.split_once(", expected").unwrap_or((rest, ""));
        let candidates: Vec<&str> = expected
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s)
            .collect();
        let field_name = field.trim_matches('`');
        let help = match flow_rules::suggest::closest(field_name, candidates.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("expected{expected}"),
        };
        return (format!("unknown key {field}"), Some(help));
    }
    (message, None)
}

fn toml_to_json(v: toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s),
        toml::Value::Integer(i) => serde_json::Value::from(i),
        toml::Value::Float(f) => serde_json::Value::from(f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(toml_to_json).collect())
        }
        toml::Value::Table(t) => {
            serde_json::Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/w/flow.toml"), "flow.toml", text)
    }

    #[test]
    fn defaults_and_vars() {
        let c = parse("[vars]\npython_versions = [\"3.11\"]\n").unwrap();
        assert_eq!(c.default_visibility, vec![VisibilityRule::Public]);
        assert_eq!(c.vars["python_versions"], serde_json::json!(["3.11"]));
        assert!(parse(TEMPLATE).is_ok());
    }

    #[test]
    fn unknown_key_names_line_and_suggests() {
        let e = parse("[build]\njbos = 3\n").unwrap_err();
        assert_eq!(e.message, "unknown key `jbos`");
        assert_eq!(e.help.as_deref(), Some("did you mean `jobs`?"));
        assert_eq!(e.span, Some(8..12));
    }

    #[test]
    fn ledger_table() {
        let c = parse("").unwrap();
        assert_eq!(c.ledger, LedgerConfig::default());
        let c = parse("[ledger]\nremote = \"origin\"\nkeep = 2\n").unwrap();
        assert_eq!(
            (c.ledger.remote.as_deref(), c.ledger.keep),
            (Some("origin"), 2)
        );
        let e = parse("[ledger]\nkeep = -1\n").unwrap_err();
        assert!(e.message.contains("`ledger.keep`"), "{}", e.message);
        let e = parse("[ledger]\nremot = \"origin\"\n").unwrap_err();
        assert_eq!(e.help.as_deref(), Some("did you mean `remote`?"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10GiB"), Some(10 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("2GB"), Some(2_000_000_000));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("1.5 MiB"), Some(1_572_864));
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn environments_with_windows() {
        let c = parse(
            "[environments.staging]\n\
             [environments.production]\n\
             window = [\"Tue-Thu 10:00-16:00 America/New_York\", \"Sat 06:00-07:00 UTC\"]\n\
             emergency_approval = true\n\
             [environments.qa]\nwindow = \"Mon 09:00-10:00 UTC\"\n",
        )
        .unwrap();
        let names: Vec<&String> = c.environments.keys().collect();
        assert_eq!(names, ["production", "qa", "staging"]);
        let production = &c.environments["production"];
        assert_eq!(production.windows.0.len(), 2);
        assert!(production.emergency_approval);
        assert_eq!(c.environments["qa"].windows.0.len(), 1);
        assert!(c.environments["staging"].windows.0.is_empty());
        assert!(!c.environments["staging"].emergency_approval);

        let text = "[environments.production]\nwindow = \"Tues 10:00-16:00 UTC\"\n";
        let e = parse(text).unwrap_err();
        assert!(
            e.message
                .starts_with("invalid value for key `environments.production.window`: `Tues`"),
            "{}",
            e.message
        );
        assert_eq!(&text[e.span.unwrap()], "\"Tues 10:00-16:00 UTC\"");
        let e =
            parse("[environments.production]\nwindows = \"Tue 10:00-16:00 UTC\"\n").unwrap_err();
        assert_eq!(e.message, "unknown key `windows`");
        assert_eq!(e.help.as_deref(), Some("did you mean `window`?"));
        assert!(parse("[environments.p]\nwindow = 3\n").is_err());
    }

    #[test]
    fn wrong_type_and_bad_value() {
        let e = parse("[build]\njobs = \"many\"\n").unwrap_err();
        assert!(e.message.contains("invalid type"), "{}", e.message);
        let e = parse("[build]\njobs = 0\n").unwrap_err();
        assert!(e.message.contains("`build.jobs`"));
        let e = parse("[workspace]\ndefault_visibility = [\"//a/../b\"]\n").unwrap_err();
        assert!(e.message.contains("default_visibility"));
    }
}
