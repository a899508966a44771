//! `[remote]` of flow.toml: the remote cache's address, instance and whether builds upload
//! (docs/remote.md). Read with the rest of flow.toml (`config.rs`), checked here.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

/// `[remote]`: the remote cache (docs/remote.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemote {
    url: Option<Spanned<String>>,
    instance: Option<String>,
    upload: Option<bool>,
}

/// The remote cache of `[remote]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteConfig {
    pub url: String,
    pub instance: String,
    /// `upload`: None when not set (then: in CI, not for a pull request).
    pub upload: Option<bool>,
}

/// Where in flow.toml, why, and a hint.
pub(crate) type Problem = (Option<Range<usize>>, String, Option<String>);

/// `[remote]` → the remote cache, if any.
pub(crate) fn parse(raw: RawRemote) -> Result<Option<RemoteConfig>, Problem> {
    let Some(url) = raw.url else {
        if raw.upload.is_some() || raw.instance.is_some() {
            return Err((
                None,
                "`[remote]` has no `url`: `upload` and `instance` need the remote cache's address"
                    .into(),
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
    Ok(Some(RemoteConfig {
        url: url.into_inner(),
        instance: raw.instance.unwrap_or_default(),
        upload: raw.upload,
    }))
}
