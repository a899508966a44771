//! Probes: the one way delivery asks "is it up?" — a deploy's `health`, a monitor's `probe`, a
//! service's `ready`.
//!
//! A probe is a string (`Probe::parse`):
//! - `http://HOST[:PORT][/PATH]`: one HTTP/1.1 GET (`ureq`, no proxy, redirects followed), passes
//!   on a 2xx answer;
//! - `tcp://HOST:PORT`: passes when a TCP connection opens;
//! - anything else: a shell command (`/bin/sh -c`), passes on exit 0.
//!
//! Invariants:
//! - one attempt ([`check`]) never takes much longer than `ProbeContext::attempt_timeout`;
//! - a command probe runs in a process group of its own with exactly `ProbeContext::env` and no
//!   other variable; when it ends, times out, or its future is dropped, the group is SIGKILLed, so
//!   no process of a probe outlives its attempt (bar one that leaves the group on purpose);
//! - a failure is one sentence that says why: the HTTP status and the first bytes of the body,
//!   the connection error, or the exit code and the tail of the output.
//!
//! Limits: `https://` is refused at parse time (no TLS stack is linked; the example's servers
//! and a service's ports are plain HTTP on 127.0.0.1). An HTTP attempt runs on a blocking thread
//! (`spawn_blocking`): dropping its future abandons the thread, which ends at the attempt timeout.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{sleep, timeout, Instant};

/// How much of a failing answer's body or a command's output a message quotes.
const QUOTE_BYTES: usize = 300;

/// How much of a command probe's output is kept (its tail).
const KEEP_BYTES: usize = 4 << 10;

/// What is probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `http://host:port/path`: a GET that passes on 2xx.
    Http {
        url: String,
        host: String,
        port: u16,
    },
    /// `tcp://host:port`: passes when a connection opens.
    Tcp { host: String, port: u16 },
    /// A shell command: passes on exit 0.
    Command(String),
}

/// Where and how a probe runs.
#[derive(Clone, Debug)]
pub struct ProbeContext {
    /// The working directory of a command probe.
    pub cwd: PathBuf,
    /// The complete environment of a command probe.
    pub env: BTreeMap<String, String>,
    /// The most one attempt may take.
    pub attempt_timeout: Duration,
}

impl Probe {
    /// Reads a probe string (see the module docs).
    pub fn parse(text: &str) -> Result<Probe, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("a probe cannot be empty: write `http://HOST:PORT/PATH`, \
                        `tcp://HOST:PORT` or a shell command such as `./check.sh`"
                .into());
        }
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(format!(
                "`{text}`: only `http://` probes are supported for now (no TLS); probe a plain \
                 HTTP port, e.g. `http://127.0.0.1:8080/health`, or use a command such as \
                 `curl -fsS {text}`"
            ));
        }
        if let Some(rest) = strip_scheme(text, "http://") {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let (host, port) = host_port(authority, Some(80)).ok_or_else(|| {
                format!("`{text}`: expected `http://HOST[:PORT]/PATH`, e.g. `http://127.0.0.1:8080/health`")
            })?;
            return Ok(Probe::Http {
                url: text.to_owned(),
                host,
                port,
            });
        }
        if let Some(rest) = strip_scheme(text, "tcp://") {
            let (host, port) = host_port(rest.trim_end_matches('/'), None).ok_or_else(|| {
                format!("`{text}`: expected `tcp://HOST:PORT`, e.g. `tcp://127.0.0.1:5432`")
            })?;
            return Ok(Probe::Tcp { host, port });
        }
        Ok(Probe::Command(text.to_owned()))
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Http { url, .. } => write!(f, "{url}"),
            Probe::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Probe::Command(cmd) => write!(f, "`{cmd}`"),
        }
    }
}

/// `text` without its scheme, compared case-insensitively.
fn strip_scheme<'a>(text: &'a str, scheme: &str) -> Option<&'a str> {
    let head = text.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &text[scheme.len()..])
}

/// `host:port`, `[v6]:port`, or `host` alone when a default port is given.
fn host_port(authority: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok().filter(|&p| p > 0)?,
        None => default_port?,
    };
    let bracketed = authority.starts_with('[');
    let valid = !host.is_empty() && (bracketed || !host.contains(['@', ' ', '/', ':']));
    valid.then(|| (host.to_owned(), port))
}

/// One attempt: `Ok` when the probe passes, else why not.
pub async fn check(probe: &Probe, ctx: &ProbeContext) -> Result<(), String> {
    match probe {
        Probe::Http { url, .. } => http_get(url.clone(), ctx.attempt_timeout).await,
        Probe::Tcp { host, port } => {
            let target = format!("{host}:{port}");
            match timeout(
                ctx.attempt_timeout,
                tokio::net::TcpStream::connect((host.as_str(), *port)),
            )
            .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(format!("cannot connect to {target}: {error}")),
                Err(_) => Err(format!(
                    "no connection to {target} within {}",
                    human_duration(ctx.attempt_timeout)
                )),
            }
        }
        Probe::Command(cmd) => run_command(cmd, ctx).await,
    }
}

/// Checks `probe` every `every` until it passes (`Ok(how long that took)`) or `within` has
/// elapsed (`Err`: the last failure, and that it never passed). Each attempt is bounded by
/// `ctx.attempt_timeout` and by what is left of `within`.
pub async fn wait_until(
    probe: &Probe,
    ctx: &ProbeContext,
    every: Duration,
    within: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let deadline = start + within;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = ProbeContext {
            attempt_timeout: ctx.attempt_timeout.min(left.max(Duration::from_millis(50))),
            ..ctx.clone()
        };
        let last = match check(probe, &attempt).await {
            Ok(()) => return Ok(start.elapsed()),
            Err(why) => why,
        };
        if Instant::now() + every >= deadline {
            let s = if attempts == 1 { "" } else { "s" };
            return Err(format!(
                "{probe} never passed within {} ({attempts} attempt{s}); last: {last}",
                human_duration(within)
            ));
        }
        sleep(every).await;
    }
}

/// `1.5s`, `30s`, `200ms`: the way BUILD files write durations.
pub fn human_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

async fn http_get(url: String, limit: Duration) -> Result<(), String> {
    let blocking = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(limit))
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        let mut response = agent.get(&url).call().map_err(|error| match error {
            ureq::Error::Timeout(_) => {
                format!("no answer from {url} within {}", human_duration(limit))
            }
            ureq::Error::Io(io) => format!("cannot reach {url}: {io}"),
            other => format!("cannot GET {url}: {other}"),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let mut head = Vec::new();
        let _ = response
            .body_mut()
            .as_reader()
            .take(QUOTE_BYTES as u64)
            .read_to_end(&mut head);
        let body = one_line(&String::from_utf8_lossy(&head));
        Err(if body.is_empty() {
            format!("{url} answered {status} with an empty body")
        } else {
            format!("{url} answered {status}: {body}")
        })
    });
    blocking
        .await
        .unwrap_or_else(|e| Err(format!("the HTTP probe panicked: {e}")))
}

/// Kills the probe's process group when dropped (on every path, including a dropped future).
struct Group(Pid);

impl Drop for Group {
    fn drop(&mut self) {
        // ESRCH (nobody left) is the good case.
        let _ = killpg(self.0, Signal::SIGKILL);
    }
}

async fn run_command(cmd: &str, ctx: &ProbeContext) -> Result<(), String> {
    let (status, mut out, err) = run_captured(cmd, ctx).await?;
    if status.success() {
        return Ok(());
    }
    let how = describe_exit(status);
    out.extend_from_slice(&err);
    let output = quote_tail(&out);
    Err(if output.is_empty() {
        format!("`{cmd}` {how} and printed nothing")
    } else {
        format!("`{cmd}` {how}: {output}")
    })
}

/// Runs `cmd` as a command probe would, and returns what it printed on stdout when it exits 0
/// (a deploy's `live` command).
pub async fn output(cmd: &str, ctx: &ProbeContext) -> Result<String, String> {
    let (status, mut out, err) = run_captured(cmd, ctx).await?;
    if status.success() {
        return Ok(String::from_utf8_lossy(&out).into_owned());
    }
    out.extend_from_slice(&err);
    Err(match quote_tail(&out) {
        tail if tail.is_empty() => format!("`{cmd}` {} and printed nothing", describe_exit(status)),
        tail => format!("`{cmd}` {}: {tail}", describe_exit(status)),
    })
}

/// Runs `cmd` in its own process group within `ctx.attempt_timeout`: its status and the tails
/// of its stdout and stderr.
async fn run_captured(
    cmd: &str,
    ctx: &ProbeContext,
) -> Result<(std::process::ExitStatus, Vec<u8>, Vec<u8>), String> {
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(&ctx.cwd)
        .env_clear()
        .envs(&ctx.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run `/bin/sh` in `{}` for probe `{cmd}`: {e}",
                ctx.cwd.display()
            )
        })?;
    let pid = child.id().expect("a child that was just spawned has a pid");
    let group = Group(Pid::from_raw(pid as i32));
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut out = Vec::new();
    let mut err = Vec::new();
    let finished = timeout(ctx.attempt_timeout, async {
        let (status, _, _) = tokio::join!(
            async {
                let status = child.wait().await;
                // Leftover background processes must not hold the pipes open.
                let _ = killpg(group.0, Signal::SIGKILL);
                status
            },
            tail(stdout, &mut out),
            tail(stderr, &mut err)
        );
        status
    })
    .await;
    drop(group);
    let status = match finished {
        Err(_) => {
            return Err(format!(
                "`{cmd}` did not finish within {}",
                human_duration(ctx.attempt_timeout)
            ))
        }
        Ok(Err(e)) => return Err(format!("cannot wait for `{cmd}`: {e}")),
        Ok(Ok(status)) => status,
    };
    Ok((status, out, err))
}

/// `exited with code 3`, `was killed by signal 9`.
pub(super) fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended with {status}"),
    }
}

/// Reads `pipe` to its end, keeping its last [`KEEP_BYTES`].
async fn tail(mut pipe: impl AsyncRead + Unpin, into: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        into.extend_from_slice(&buf[..n]);
        if into.len() > 2 * KEEP_BYTES {
            into.drain(..into.len() - KEEP_BYTES);
        }
    }
}

/// The last [`QUOTE_BYTES`] of `output` on one line (newlines shown as ` | `).
pub(super) fn quote_tail(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let text = one_line(&text);
    if text.len() <= QUOTE_BYTES {
        return text;
    }
    let mut cut = text.len() - QUOTE_BYTES;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &text[cut..])
}

/// Non-empty lines, trimmed, joined with ` | `.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
