//! `flow remote check` against a real REAPI server: BuildGrid 0.4.4 from PyPI (`.ci/run`
//! installs it and sets `FLOW_TEST_BGD` and `FLOW_REQUIRE_BUILDGRID`), started by the test on
//! 127.0.0.1 with an on-disk CAS. BuildGrid offers SHA-256 only, so flow speaks SHA-256 to it.
//! Without BuildGrid the server test is skipped with a note, unless it is required.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{golden, Ws};

/// The `bgd` program: `FLOW_TEST_BGD`, else `bgd` on PATH.
fn bgd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLOW_TEST_BGD") {
        return Some(PathBuf::from(p));
    }
    Command::new("bgd")
        .arg("--help")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("bgd"))
}

/// A BuildGrid server with the cache services only, stopped on drop.
struct BuildGrid {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for BuildGrid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_buildgrid(bgd: &Path, flow: &Ws) -> BuildGrid {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "server:\n  - !channel\n    address: \"127.0.0.1:{port}\"\n    insecure-mode: true\n\
         authorization:\n  method: none\n\
         storages:\n  - !disk-storage &cas\n    path: {cas}\n\
         caches:\n  - !lru-action-cache &ac\n    storage: *cas\n    max-cached-refs: 10000\n    allow-updates: true\n    cache-failed-actions: false\n\
         instances:\n  - name: \"\"\n    services:\n      - !action-cache\n        cache: *ac\n      - !cas\n        storage: *cas\n      - !bytestream\n        storage: *cas\n",
        cas = dir.path().join("cas").display()
    );
    std::fs::write(dir.path().join("config.yml"), config).unwrap();
    let child = Command::new(bgd)
        .args(["server", "start", "config.yml"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("grpc://127.0.0.1:{port}");
    let server = BuildGrid {
        child,
        url,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while flow.run(&["remote", "check", &server.url]).code != 0 {
        assert!(
            Instant::now() < deadline,
            "BuildGrid did not start on {}",
            server.url
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

#[test]
fn remote_check_against_buildgrid() {
    let Some(bgd) = bgd() else {
        assert!(
            std::env::var_os("FLOW_REQUIRE_BUILDGRID").is_none(),
            "BuildGrid is required (FLOW_REQUIRE_BUILDGRID is set) but `bgd` was not found"
        );
        eprintln!("skipping: BuildGrid's `bgd` is not installed (.ci/run installs it)");
        return;
    };
    let ws = Ws::new();
    let server = start_buildgrid(&bgd, &ws);
    let run = ws.run(&["remote", "check", &server.url, "--write"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = run.stdout;
    for part in [
        format!("remote cache {} (instance \"\"): REAPI 2.0 to 2.", server.url),
        "  digest functions offered: SHA256; spoken: SHA256 (computed beside flow's blake3)\n".into(),
        "  action cache updates: allowed\n".into(),
        "  storage: answers (a blob never written is missing, as it should be)\n".into(),
        // SHA-256 of the blob flow writes, by `sha256sum` of the same 55 bytes.
        "  write: 55 bytes written as 5b99b42fe0397e6184bdb9b77bb31be323790a5dae8487ff1b37839782f43151/55, found, read back and verified\n".into(),
    ] {
        assert!(out.contains(&part), "{part}\n---\n{out}");
    }
}

/// A server that is not there, and an address that is not one: clear errors, exit 2.
#[test]
fn remote_check_errors() {
    let ws = Ws::new();
    let port = free_port();
    let down = ws.run(&["remote", "check", &format!("grpc://127.0.0.1:{port}")]);
    assert_eq!(down.code, 2);
    golden(
        "remote_unreachable",
        &down.stderr.replace(&port.to_string(), "PORT"),
    );
    let bad = ws.run(&["remote", "check", "ftp://cache.example.com"]);
    assert_eq!(bad.code, 2);
    golden("remote_bad_url", &bad.stderr);
}
