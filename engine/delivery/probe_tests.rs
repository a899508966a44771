use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

use super::*;
use crate::executor::gone_within;

fn ctx(dir: &Path) -> ProbeContext {
    ProbeContext {
        cwd: dir.to_path_buf(),
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        attempt_timeout: Duration::from_secs(5),
    }
}

/// Answers every request on a fresh port with `status` and `body`, from a thread.
fn responder(status: &'static str, body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear(); // up to the blank line that ends the headers
            }
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn parses_the_three_kinds() {
    assert_eq!(
        Probe::parse("http://127.0.0.1:8080/health").unwrap(),
        Probe::Http {
            url: "http://127.0.0.1:8080/health".into(),
            host: "127.0.0.1".into(),
            port: 8080
        }
    );
    assert!(matches!(
        Probe::parse("http://localhost").unwrap(),
        Probe::Http { port: 80, .. }
    ));
    assert_eq!(
        Probe::parse(" tcp://[::1]:5432 ").unwrap(),
        Probe::Tcp {
            host: "::1".into(),
            port: 5432
        }
    );
    assert_eq!(
        Probe::parse("./check.sh --quick").unwrap(),
        Probe::Command("./check.sh --quick".into())
    );
    let e = Probe::parse("https://example.com/health").unwrap_err();
    assert!(e.contains("only `http://`"), "{e}");
    let e = Probe::parse("tcp://127.0.0.1").unwrap_err();
    assert!(e.contains("expected `tcp://HOST:PORT`"), "{e}");
    assert!(Probe::parse("http://:80/").is_err());
    assert!(Probe::parse("tcp://h:0").is_err());
    assert!(Probe::parse("  ").unwrap_err().contains("cannot be empty"));
}

#[tokio::test]
async fn tcp_passes_on_a_listening_port_and_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = Probe::parse(&format!("tcp://127.0.0.1:{port}")).unwrap();
    check(&probe, &ctx(dir.path())).await.unwrap();
    drop(listener);
    let e = check(&probe, &ctx(dir.path())).await.unwrap_err();
    assert!(
        e.starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")) && e.contains("refused"),
        "{e}"
    );
}

#[tokio::test]
async fn http_passes_on_2xx_and_quotes_status_and_body_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let ok = responder("200 OK", "fine");
    check(
        &Probe::parse(&format!("http://127.0.0.1:{ok}/health")).unwrap(),
        &ctx(dir.path()),
    )
    .await
    .unwrap();
    let down = responder("503 Service Unavailable", "down:\ndatabase unreachable\n");
    let e = check(
        &Probe::parse(&format!("http://127.0.0.1:{down}/health")).unwrap(),
        &ctx(dir.path()),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        format!("http://127.0.0.1:{down}/health answered 503 Service Unavailable: down: | database unreachable")
    );
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let e = check(
        &Probe::parse(&format!("http://127.0.0.1:{port}/")).unwrap(),
        &ctx(dir.path()),
    )
    .await
    .unwrap_err();
    assert!(e.starts_with("cannot reach"), "{e}");
}

#[tokio::test]
async fn a_command_sees_exactly_its_env_and_cwd_and_reports_exit_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("marker"), "").unwrap();
    let mut c = ctx(dir.path());
    c.env.insert("ONLY".into(), "yes".into());
    // HOME is set in any test run: it must not leak into the probe.
    let passing =
        Probe::Command(r#"test "$ONLY" = yes && test -z "$HOME" && test -f marker"#.into());
    check(&passing, &c).await.unwrap();
    let failing = Probe::Command("echo first; echo oops >&2; exit 3".into());
    let e = check(&failing, &c).await.unwrap_err();
    assert_eq!(
        e,
        "`echo first; echo oops >&2; exit 3` exited with code 3: first | oops"
    );
    let silent = check(&Probe::Command("false".into()), &c)
        .await
        .unwrap_err();
    assert_eq!(silent, "`false` exited with code 1 and printed nothing");
}

#[tokio::test]
async fn a_slow_command_is_killed_with_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ctx(dir.path());
    c.attempt_timeout = Duration::from_millis(300);
    let probe = Probe::Command("echo $$ > pgid; sleep 30 & sleep 30".into());
    let started = std::time::Instant::now();
    let e = check(&probe, &c).await.unwrap_err();
    assert_eq!(
        e,
        "`echo $$ > pgid; sleep 30 & sleep 30` did not finish within 300ms"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let pgid: i32 = std::fs::read_to_string(dir.path().join("pgid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Killed (SIGKILL to the group) before `check` returns; under load a member may take a
    // moment to be gone (CI saw one still there right after).
    assert!(
        gone_within(pgid, Duration::from_secs(2)),
        "the probe's group outlived it"
    );
}

#[tokio::test]
async fn dropping_a_running_probe_kills_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let c = ctx(dir.path());
    let probe = Probe::Command("echo $$ > pgid; sleep 30 & sleep 30".into());
    let dropped = timeout(Duration::from_millis(500), check(&probe, &c)).await;
    assert!(dropped.is_err(), "the probe finished on its own");
    let pgid: i32 = std::fs::read_to_string(dir.path().join("pgid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        gone_within(pgid, Duration::from_secs(2)),
        "a dropped probe left its group running"
    );
}

#[tokio::test]
async fn wait_until_retries_until_it_passes_or_gives_up_with_the_last_reason() {
    let dir = tempfile::tempdir().unwrap();
    let c = ctx(dir.path());
    let third = Probe::Command(
        "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; echo try $n; test $n -ge 3"
            .into(),
    );
    let took = wait_until(
        &third,
        &c,
        Duration::from_millis(50),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("n")).unwrap(),
        "3\n"
    );

    let never = Probe::Command("echo not yet; exit 1".into());
    let started = std::time::Instant::now();
    let e = wait_until(
        &never,
        &c,
        Duration::from_millis(50),
        Duration::from_millis(400),
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        e.starts_with("`echo not yet; exit 1` never passed within 400ms (")
            && e.ends_with(" attempts); last: `echo not yet; exit 1` exited with code 1: not yet"),
        "{e}"
    );
}

#[test]
fn durations_read_like_build_files() {
    assert_eq!(human_duration(Duration::from_millis(300)), "300ms");
    assert_eq!(human_duration(Duration::from_secs(30)), "30s");
    assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
}
