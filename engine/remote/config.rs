//! `[remote]` of flow.toml: the remote cache's address, instance and whether builds upload
//! (docs/remote.md). Read with the rest of flow.toml (`config.rs`), checked here.

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

/// `[remote]`: the remote cache (docs/remote.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemote {
    url: Option<Spanned<String>>,
    instance: Option<String>,
    upload: Option<bool>,
    ca_file: Option<String>,
    token_env: Option<Spanned<String>>,
}

/// The remote cache of `[remote]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteConfig {
    pub url: String,
    pub instance: String,
    /// `upload`: None when not set (then: in CI, not for a pull request).
    pub upload: Option<bool>,
    /// `ca_file`: certificates to trust besides the system's, relative to the workspace root.
    pub ca_file: Option<String>,
    /// `token_env`: the variable holding the bearer token (default `FLOW_REMOTE_TOKEN`).
    pub token_env: String,
}

/// Where in flow.toml, why, and a hint.
pub(crate) type Problem = (Option<Range<usize>>, String, Option<String>);

/// `[remote]` → the remote cache, if any.
pub(crate) fn parse(raw: RawRemote) -> Result<Option<RemoteConfig>, Problem> {
    let Some(url) = raw.url else {
        if raw.upload.is_some()
            || raw.instance.is_some()
            || raw.ca_file.is_some()
            || raw.token_env.is_some()
        {
            return Err((
                None,
                "`[remote]` has no `url`: its other keys need the remote cache's address".into(),
                Some("add `url = \"grpc://HOST:PORT\"`, or remove the section".into()),
            ));
        }
        return Ok(None);
    };
    crate::remote::endpoint_uri(url.get_ref()).map_err(|e| {
        (
            Some(url.span()),
            format!("invalid value for key `remote.url`: {e}"),
            None,
        )
    })?;
    let token_env = match raw.token_env {
        Some(name) if !flow_rules::valid_env_name(name.get_ref()) => {
            return Err((
                Some(name.span()),
                format!(
                    "invalid value for key `remote.token_env`: `{}` is not an environment \
                     variable's name",
                    name.get_ref()
                ),
                Some("name the variable that holds the token, e.g. \"FLOW_REMOTE_TOKEN\"".into()),
            ))
        }
        Some(name) => name.into_inner(),
        None => crate::remote::TOKEN_ENV.to_owned(),
    };
    Ok(Some(RemoteConfig {
        url: url.into_inner(),
        instance: raw.instance.unwrap_or_default(),
        upload: raw.upload,
        ca_file: raw.ca_file,
        token_env,
    }))
}

/// The remote cache of a command and whether it uploads: `--remote-cache URL` over `[remote]
/// url` (the instance, certificates and token variable still from `[remote]`), `--remote-upload`
/// over `[remote] upload` over [`default_upload`]. The token is read from its variable now.
pub fn choose(
    flag_url: Option<&str>,
    flag_upload: Option<bool>,
    configured: Option<&RemoteConfig>,
    root: &Path,
) -> Option<(super::Target, bool)> {
    let url = flag_url.or(configured.map(|c| c.url.as_str()))?;
    let token_env = configured.map_or(super::TOKEN_ENV, |c| c.token_env.as_str());
    let target = super::Target {
        url: url.to_owned(),
        instance: configured.map(|c| c.instance.clone()).unwrap_or_default(),
        ca_file: configured
            .and_then(|c| c.ca_file.as_ref())
            .map(|f| root.join(f)),
        token: super::Token::from_env(token_env),
    };
    let upload = flag_upload
        .or(configured.and_then(|c| c.upload))
        .unwrap_or_else(default_upload);
    Some((target, upload))
}

/// Whether a build uploads to the remote cache when neither the flag nor `[remote] upload`
/// says: in CI (`CI` set, as every CI service sets it, to anything but a false value), not for
/// a pull or merge request, whose code is not trusted to write what others restore.
fn default_upload() -> bool {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let falsy = |v: &str| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "0" | "false" | "no" | "off"
        )
    };
    let ci = var("CI").is_some_and(|v| !falsy(&v));
    ci && !pull_request(&var)
}

/// Whether the CI service says this build is for a pull (merge) request: GitHub Actions,
/// GitLab, Buildkite, Jenkins, CircleCI, Travis CI, Azure Pipelines.
fn pull_request(var: &dyn Fn(&str) -> Option<String>) -> bool {
    var("GITHUB_EVENT_NAME").is_some_and(|e| e.starts_with("pull_request"))
        || var("CI_MERGE_REQUEST_IID").is_some()
        || var("BUILDKITE_PULL_REQUEST").is_some_and(|v| v != "false")
        || var("CHANGE_ID").is_some()
        || var("CIRCLE_PULL_REQUEST").is_some()
        || var("TRAVIS_PULL_REQUEST").is_some_and(|v| v != "false")
        || var("SYSTEM_PULLREQUEST_PULLREQUESTID").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_requests_of_each_ci_service_are_seen() {
        let with = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            pull_request(&move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
        };
        assert!(with(&[("GITHUB_EVENT_NAME", "pull_request_target")]));
        assert!(!with(&[("GITHUB_EVENT_NAME", "push")]));
        assert!(with(&[("CI_MERGE_REQUEST_IID", "7")]));
        assert!(with(&[("BUILDKITE_PULL_REQUEST", "12")]));
        assert!(!with(&[("BUILDKITE_PULL_REQUEST", "false")]));
        assert!(with(&[("CHANGE_ID", "3")]));
        assert!(with(&[(
            "CIRCLE_PULL_REQUEST",
            "https://github.com/o/r/pull/1"
        )]));
        assert!(!with(&[("TRAVIS_PULL_REQUEST", "false")]));
        assert!(with(&[("SYSTEM_PULLREQUEST_PULLREQUESTID", "9")]));
        assert!(!with(&[]));
    }
}
