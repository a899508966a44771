//! `flow remote check URL [--instance NAME] [--ca-file FILE] [--token-env NAME] [--write]`: connects to a remote cache (REAPI v2,
//! `remote/`), prints what it offers and the digest function flow would speak to it, checks
//! that its content-addressable storage answers, and with `--write` writes a small blob, finds
//! it and reads it back verified (docs/remote.md).

use std::time::Instant;

use crate::error::Error;
use crate::remote::{Remote, RemoteError, Target, Token};

#[derive(clap::Subcommand, Debug)]
pub enum RemoteCommand {
    /// Connect to a remote cache and say what it offers; with --write, a blob round trip
    Check {
        /// grpc://HOST:PORT (grpcs:// for TLS)
        url: String,
        /// The REAPI instance name (most servers: empty)
        #[arg(long, default_value = "")]
        instance: String,
        /// Certificates (PEM) to trust besides the system's, for grpcs://
        #[arg(long, value_name = "FILE")]
        ca_file: Option<std::path::PathBuf>,
        /// The environment variable holding a bearer token, sent when set
        #[arg(long, value_name = "NAME", default_value = crate::remote::TOKEN_ENV)]
        token_env: String,
        /// Also write a small blob, find it and read it back (it stays on the server)
        #[arg(long)]
        write: bool,
    },
}

pub fn run(command: &RemoteCommand) -> Result<i32, Error> {
    let RemoteCommand::Check {
        url,
        instance,
        ca_file,
        token_env,
        write,
    } = command;
    let target = Target {
        ca_file: ca_file.clone(),
        token: Token::from_env(token_env),
        ..Target::new(url, instance)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage {
            message: format!("cannot start the async runtime: {e}"),
            help: None,
        })?;
    runtime
        .block_on(check(&target, *write))
        .map_err(|e| Error::Usage {
            message: crate::executor::printable(&e.to_string()),
            help: match e {
                RemoteError::BadUrl { .. }
                | RemoteError::TokenInPlainText { .. }
                | RemoteError::BadToken
                | RemoteError::CaFile { .. }
                | RemoteError::NoDigestFunction { .. } => None,
                RemoteError::Refused { .. } => Some(
                    "the server wants a token that allows this: set it in the variable \
                     --token-env names (FLOW_REMOTE_TOKEN by default)"
                        .into(),
                ),
                _ => Some("check the address, and that a REAPI v2 cache server runs there".into()),
            },
        })?;
    Ok(0)
}

async fn check(target: &Target, write: bool) -> Result<(), RemoteError> {
    let (url, instance) = (&target.url, &target.instance);
    let started = Instant::now();
    let remote = Remote::connect(target).await?;
    let c = &remote.capabilities;
    let mut out = format!(
        "remote cache {url} (instance {instance:?}): REAPI {} to {}\n",
        c.api.0, c.api.1
    );
    out.push_str(&format!(
        "  digest functions offered: {}; spoken: {}{}\n",
        c.offered.join(", "),
        c.function.name(),
        match c.function {
            crate::remote::HashFunction::Blake3 => " (flow's own keys and blobs)",
            crate::remote::HashFunction::Sha256 => " (computed beside flow's blake3)",
        }
    ));
    out.push_str(&format!(
        "  action cache updates: {}\n  batch limit: {}\n",
        if c.update_enabled {
            "allowed"
        } else {
            "refused (read only)"
        },
        match c.max_batch_bytes {
            0 => "none said".to_owned(),
            n => format!("{n} bytes"),
        }
    ));
    // A digest no one wrote: the storage answers, and says it is missing.
    let probe = remote
        .function()
        .digest(format!("flow remote check {:?}", started).as_bytes());
    let missing = remote.find_missing(std::slice::from_ref(&probe)).await?;
    out.push_str(&format!(
        "  storage: answers ({})\n",
        if missing.len() == 1 {
            "a blob never written is missing, as it should be"
        } else {
            "it claims to hold a blob never written"
        }
    ));
    if write {
        let blob = b"flow remote check: a blob written, found and read back\n".to_vec();
        let digests = remote.upload(std::slice::from_ref(&blob)).await?;
        let missing = remote.find_missing(&digests).await?;
        let read = remote.download(&digests).await?;
        if !missing.is_empty() || read.first().and_then(|b| b.as_ref()) != Some(&blob) {
            return Err(RemoteError::Call {
                url: url.clone(),
                call: "BatchReadBlobs",
                why: "a blob just written is not there".into(),
            });
        }
        out.push_str(&format!(
            "  write: {} bytes written as {}/{}, found, read back and verified\n",
            blob.len(),
            digests[0].hash,
            digests[0].size_bytes
        ));
    }
    out.push_str(&format!("  in {} ms\n", started.elapsed().as_millis()));
    crate::reporter::write_stdout(out.as_bytes());
    Ok(())
}
