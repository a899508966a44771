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

/// `bgd`, or None after saying why the test is skipped (an error when BuildGrid is required).
fn required_bgd() -> Option<PathBuf> {
    let found = bgd();
    if found.is_none() {
        assert!(
            std::env::var_os("FLOW_REQUIRE_BUILDGRID").is_none(),
            "BuildGrid is required (FLOW_REQUIRE_BUILDGRID is set) but `bgd` was not found"
        );
        eprintln!("skipping: BuildGrid's `bgd` is not installed (.ci/run installs it)");
    }
    found
}

#[test]
fn remote_check_against_buildgrid() {
    let Some(bgd) = required_bgd() else { return };
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

/// A blob damaged on the server is refused before anything is written: the action runs
/// locally, with a warning naming the blob, and its output is the right one.
#[test]
fn a_corrupted_blob_on_the_server_is_refused() {
    let Some(bgd) = required_bgd() else { return };
    let (_first, server) = uploaded(&bgd);
    let url = server.url.clone();
    // BuildGrid's disk storage keeps a blob at cas/objects/HH/REST of its SHA-256.
    use sha2::Digest as _;
    let hash: String = sha2::Sha256::digest(b"HELLO\n")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let blob = server
        ._dir
        .path()
        .join("cas/cas/objects")
        .join(&hash[..2])
        .join(&hash[2..]);
    assert!(blob.is_file(), "no blob at {}", blob.display());
    std::fs::write(&blob, b"EVIL!\n").unwrap();
    let second = checkout();
    let run = second.run(&["build", "--remote-cache", &url]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("[RAN] //p:a ("), "{}", run.stdout);
    assert!(
        run.stderr.contains("refused the remote result for key")
            && run
                .stderr
                .contains(&format!("{hash}/6 has 6 bytes that hash to")),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(second.path().join("flow-out/p/a.txt")).unwrap(),
        "HELLO\n"
    );
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
    // A bearer token never goes in plain text to another machine.
    let plain = ws.run_env(
        ws.path(),
        &["remote", "check", "grpc://cache.example.com:9092"],
        &[("FLOW_REMOTE_TOKEN", "s3cr3t-token")],
    );
    assert_eq!(plain.code, 2);
    assert!(!plain.stderr.contains("s3cr3t"), "{}", plain.stderr);
    golden("remote_token_in_plain_text", &plain.stderr);
    let no_ca = ws.run(&[
        "remote",
        "check",
        "grpcs://127.0.0.1:1",
        "--ca-file",
        "/nonexistent/ca.pem",
    ]);
    assert_eq!(no_ca.code, 2);
    golden("remote_ca_file_missing", &no_ca.stderr);
    let ws = checkout();
    let empty = ws.run(&["build", "--remote-cache="]);
    assert_eq!(empty.code, 2);
    assert!(
        empty
            .stderr
            .contains("--remote-cache: `` is not a remote cache address"),
        "{}",
        empty.stderr
    );
    let alone = ws.run(&["build", "--remote-upload", "true"]);
    assert_eq!(alone.code, 2);
    assert!(
        alone
            .stderr
            .contains("--remote-upload: no remote cache to upload to"),
        "{}",
        alone.stderr
    );
}

const PIPELINE: &str = "task(name = \"a\", srcs = [\"in.txt\"], outs = [\"a.txt\"], cmd = \"tr a-z A-Z < in.txt > a.txt; echo made a\")\n\
task(name = \"b\", deps = [\":a\"], outs = [\"b.txt\", \"run.sh\"], cmd = \"cat $(location :a) $(location :a) > b.txt; printf '#!/bin/sh\\\\necho hi\\\\n' > run.sh; chmod +x run.sh\")\n\
task(name = \"d\", outs = [\"dir/\"], cmd = \"mkdir -p dir/sub/deeper dir/empty && echo x > dir/x && printf '#!/bin/sh\\\\n' > dir/sub/tool && chmod +x dir/sub/tool && ln -s ../x dir/sub/link\")\n";

/// A BuildGrid holding what a first checkout's build uploaded, and that checkout.
fn uploaded(bgd: &Path) -> (Ws, BuildGrid) {
    let first = checkout();
    let server = start_buildgrid(bgd, &first);
    let run = first.run(&[
        "build",
        "--remote-cache",
        &server.url,
        "--remote-upload",
        "true",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    (first, server)
}

/// A checkout of the same sources, with a cache of its own (`.flow/` in it).
fn checkout() -> Ws {
    Ws::new()
        .file("p/BUILD", PIPELINE)
        .file("p/in.txt", "hello\n")
}

/// Two checkouts with separate local caches and one BuildGrid: the second checkout's build
/// restores what the first uploaded (file outputs, a directory output as a REAPI Tree with its
/// nested, empty and executable entries and a link, the logs), its outputs byte-identical.
#[test]
fn a_second_checkout_restores_from_buildgrid() {
    let Some(bgd) = required_bgd() else { return };
    let first = checkout();
    let server = start_buildgrid(&bgd, &first);
    let url = server.url.clone();
    let one = first.run(&["build", "--remote-cache", &url, "--remote-upload", "true"]);
    assert_eq!(one.code, 0, "{}", one.stderr);
    assert!(
        one.stderr
            .contains("flow: remote cache: 3 result(s) uploaded"),
        "{}",
        one.stderr
    );
    let second = checkout();
    let two = second.run(&["build", "--remote-cache", &url]);
    assert_eq!(two.code, 0, "{}", two.stderr);
    for line in ["[CACHED] //p:a\n", "[CACHED] //p:b\n", "[CACHED] //p:d\n"] {
        assert!(two.stdout.contains(line), "{line}\n{}", two.stdout);
    }
    assert!(two.stdout.contains("0 ran, 3 cached"), "{}", two.stdout);
    for file in [
        "p/a.txt",
        "p/b.txt",
        "p/run.sh",
        "p/dir/x",
        "p/dir/sub/tool",
    ] {
        let a = std::fs::read(first.path().join("flow-out").join(file)).unwrap();
        let b = std::fs::read(second.path().join("flow-out").join(file)).unwrap();
        assert_eq!(a, b, "{file}");
    }
    let out = second.path().join("flow-out/p/dir");
    assert!(out.join("empty").is_dir() && out.join("sub/deeper").is_dir());
    assert_eq!(
        std::fs::read_link(out.join("sub/link")).unwrap(),
        Path::new("../x")
    );
    use std::os::unix::fs::PermissionsExt;
    for exe in ["flow-out/p/run.sh", "flow-out/p/dir/sub/tool"] {
        let mode = std::fs::metadata(second.path().join(exe))
            .unwrap()
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "{exe} lost its executable bit: {mode:o}");
    }
    let log = second.run(&["log", "//p:a"]);
    assert!(log.stdout.contains("made a"), "{}", log.stdout);
}

/// Two outputs of 3 MB each: each under the server's batch limit (about 4 MiB), together over
/// it; they are read back in separate calls and restored.
#[test]
fn outputs_over_the_batch_limit_together_are_restored() {
    let Some(bgd) = required_bgd() else { return };
    let build = "task(name = \"two\", outs = [\"t1.bin\", \"t2.bin\"], cmd = \"head -c 3000000 /dev/urandom > t1.bin; head -c 3000000 /dev/urandom > t2.bin\")\n";
    let first = Ws::new().file("p/BUILD", build);
    let server = start_buildgrid(&bgd, &first);
    let url = server.url.clone();
    let one = first.run(&["build", "--remote-cache", &url, "--remote-upload", "true"]);
    assert!(
        one.stderr.contains("1 result(s) uploaded"),
        "{}",
        one.stderr
    );
    let second = Ws::new().file("p/BUILD", build);
    let two = second.run(&["build", "--remote-cache", &url]);
    assert!(
        two.stdout.contains("[CACHED] //p:two"),
        "{}\n{}",
        two.stdout,
        two.stderr
    );
    assert!(!two.stderr.contains("warning"), "{}", two.stderr);
    for f in ["p/t1.bin", "p/t2.bin"] {
        assert_eq!(
            std::fs::read(first.path().join("flow-out").join(f)).unwrap(),
            std::fs::read(second.path().join("flow-out").join(f)).unwrap()
        );
    }
}

/// `--remote-upload false` reads but writes nothing: a second checkout finds no result.
#[test]
fn a_build_that_may_not_upload_writes_nothing() {
    let Some(bgd) = required_bgd() else { return };
    let first = checkout();
    let server = start_buildgrid(&bgd, &first);
    let url = server.url.clone();
    let one = first.run(&["build", "--remote-cache", &url, "--remote-upload", "false"]);
    assert_eq!(one.code, 0, "{}", one.stderr);
    assert!(!one.stderr.contains("uploaded"), "{}", one.stderr);
    let two = checkout().run(&["build", "--remote-cache", &url]);
    assert!(two.stdout.contains("[RAN] //p:a ("), "{}", two.stdout);
}

/// A remote cache that is not there: one warning, and a correct local build.
#[test]
fn a_build_with_the_remote_cache_down_is_a_local_build() {
    let ws = checkout();
    let url = format!("grpc://127.0.0.1:{}", free_port());
    let run = ws.run(&["build", "--remote-cache", &url, "--remote-upload", "true"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stderr
            .matches("warning: cannot reach the remote cache")
            .count(),
        1,
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("building without the remote cache"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("flow-out/p/a.txt")).unwrap(),
        "HELLO\n"
    );
}

/// `[remote]` in flow.toml: an address that is not one, and settings without an address, are
/// config errors at the file and line.
#[test]
fn remote_config_errors() {
    let bad = Ws::bare()
        .file(
            "flow.toml",
            "[remote]\nurl = \"grpcs://cache.example.com\"\n",
        )
        .file("BUILD", "");
    let run = bad.run(&["query", "//..."]);
    assert_eq!(run.code, 2);
    golden("remote_config_bad_url", &run.stderr);
    let alone = Ws::bare()
        .file("flow.toml", "[remote]\nupload = true\n")
        .file("BUILD", "");
    let run = alone.run(&["query", "//..."]);
    assert_eq!(run.code, 2);
    golden("remote_config_no_url", &run.stderr);
    let token_env = Ws::bare()
        .file(
            "flow.toml",
            "[remote]\nurl = \"grpcs://cache.example.com:443\"\ntoken_env = \"$TOKEN\"\n",
        )
        .file("BUILD", "");
    let run = token_env.run(&["query", "//..."]);
    assert_eq!(run.code, 2);
    golden("remote_config_bad_token_env", &run.stderr);
}

/// `[remote]` in flow.toml applies to `flow watch` too, which connects from inside its own
/// runtime: its first cycle restores from the remote cache, and Ctrl-C ends it cleanly.
#[test]
fn watch_uses_the_remote_cache_of_flow_toml() {
    let Some(bgd) = required_bgd() else { return };
    let (_first, server) = uploaded(&bgd);
    let url = server.url.clone();
    let second = checkout().file("flow.toml", &format!("[remote]\nurl = \"{url}\"\n"));
    let out = Command::new("timeout")
        .args(["-s", "INT", "4"])
        .arg(crate::support::flow_bin())
        .arg("watch")
        .current_dir(second.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stdout.contains("[CACHED] //p:a"), "{stdout}\n{stderr}");
}

/// `flow ARGS` in `ws`, and the most anonymous memory it held (RssAnon: its heap and stacks,
/// not the file pages its mmap hashing maps, which are page cache), sampled from /proc every
/// 10 ms until it ends, in MiB.
fn run_measuring_memory(ws: &Ws, args: &[&str]) -> (crate::support::Run, u64) {
    let child = Command::new(crate::support::flow_bin())
        .current_dir(ws.path())
        .args(["--color", "never"])
        .args(args)
        .env_remove("FLOW_CACHE_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    let mut peak_kb = 0u64;
    while !waiter.is_finished() {
        let anon = std::fs::read_to_string(&status).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
        peak_kb = peak_kb.max(anon.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = waiter.join().unwrap();
    let run = crate::support::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (run, peak_kb / 1024)
}

/// A 200 MB output goes to BuildGrid and back through ByteStream (far over the batch limit),
/// byte-identical, while neither build holds more than 64 MiB of anonymous memory.
#[test]
fn a_200_mb_output_goes_through_bytestream_in_bounded_memory() {
    let Some(bgd) = required_bgd() else { return };
    let build = "task(name = \"big\", outs = [\"big.bin\"], cmd = \"head -c 200000000 /dev/urandom > big.bin\")\n";
    let first = Ws::new().file("p/BUILD", build);
    let server = start_buildgrid(&bgd, &first);
    let url = server.url.clone();
    let (one, up_mib) = run_measuring_memory(
        &first,
        &["build", "--remote-cache", &url, "--remote-upload", "true"],
    );
    assert!(
        one.stderr.contains("1 result(s) uploaded"),
        "{}",
        one.stderr
    );
    let second = Ws::new().file("p/BUILD", build);
    let (two, down_mib) = run_measuring_memory(&second, &["build", "--remote-cache", &url]);
    assert!(
        two.stdout.contains("[CACHED] //p:big"),
        "{}\n{}",
        two.stdout,
        two.stderr
    );
    assert!(!two.stderr.contains("warning"), "{}", two.stderr);
    let (a, b) = (
        first.path().join("flow-out/p/big.bin"),
        second.path().join("flow-out/p/big.bin"),
    );
    assert_eq!(std::fs::metadata(&b).unwrap().len(), 200_000_000);
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    eprintln!("peak memory: upload {up_mib} MiB, download {down_mib} MiB");
    assert!(up_mib < 64, "the uploading build held {up_mib} MiB");
    assert!(down_mib < 64, "the restoring build held {down_mib} MiB");
}
