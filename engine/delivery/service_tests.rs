use std::net::TcpListener;

use super::*;
use crate::executor::kill_left;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spec(dir: &Path, start: &str, ready: &str, timeout: Duration) -> ServiceSpec {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    ServiceSpec {
        label: "//it:svc".into(),
        start: start.into(),
        ready: Probe::parse(ready).unwrap(),
        stop: None,
        timeout,
        cwd: dir.to_path_buf(),
        env: BTreeMap::from([("PATH".to_owned(), path)]),
        log: dir.join("logs/svc.log"),
    }
}

fn pgid_in(dir: &Path) -> i32 {
    std::fs::read_to_string(dir.join("pgid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Waits (up to 2 s) until no process of `pgid` is alive; whether none is.
fn gone(pgid: i32) -> bool {
    crate::executor::gone_within(pgid, Duration::from_secs(2))
}

#[tokio::test]
async fn an_http_server_gets_ready_and_stop_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = spec(
        dir.path(),
        &format!("python3 -m http.server {port} --bind 127.0.0.1"),
        &format!("http://127.0.0.1:{port}/"),
        Duration::from_secs(20),
    );
    let service = RunningService::start(s).await.unwrap();
    let pgid = service.pgid();
    assert!(group_alive(pgid));
    // Ready means ready: the port answers now.
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    service.stop().await.unwrap();
    assert!(!group_alive(pgid), "stop() left a process of the group");
    let log = std::fs::read_to_string(dir.path().join("logs/svc.log")).unwrap();
    assert!(log.contains("GET / HTTP/1.1"), "{log}");
}

#[tokio::test]
async fn one_that_never_gets_ready_fails_in_time_with_its_log_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = spec(
        dir.path(),
        "echo $$ > pgid; echo booting; echo cannot bind port >&2; sleep 30 & sleep 30",
        &format!("tcp://127.0.0.1:{port}"),
        Duration::from_millis(600),
    );
    let started = std::time::Instant::now();
    let e = RunningService::start(s).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let log = dir.path().join("logs/svc.log");
    assert!(
        e.starts_with(&format!(
            "service //it:svc did not get ready within 600ms: tcp://127.0.0.1:{port} never passed within 600ms ("
        )),
        "{e}"
    );
    assert!(
        e.ends_with(&format!(
            "its log `{}` ends: booting | cannot bind port",
            log.display()
        )),
        "{e}"
    );
    assert!(
        !group_alive(pgid_in(dir.path())),
        "a failed start left a process"
    );
}

#[tokio::test]
async fn one_that_exits_first_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        "echo bad config; exit 2",
        "false",
        Duration::from_secs(30),
    );
    let started = std::time::Instant::now();
    let e = RunningService::start(s).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        e.starts_with("service //it:svc exited with code 2 before it was ready (ready: `false`)"),
        "{e}"
    );
    assert!(e.ends_with("ends: bad config"), "{e}");
}

#[tokio::test]
async fn a_shell_that_leaves_a_daemon_in_its_group_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        "(sleep 0.3; touch up; sleep 30) & exit 0",
        "test -f up",
        Duration::from_secs(10),
    );
    let service = RunningService::start(s).await.unwrap();
    let pgid = service.pgid();
    drop(service);
    assert!(gone(pgid), "drop left the daemon running");
}

#[tokio::test]
async fn stop_runs_the_stop_command_then_ends_even_a_group_that_ignores_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(
        dir.path(),
        "trap '' TERM; touch up; sleep 30 & sleep 30",
        "test -f up",
        Duration::from_secs(10),
    );
    s.stop = Some("echo stopping > stopped".into());
    let service = RunningService::start(s).await.unwrap();
    let pgid = service.pgid();
    let started = std::time::Instant::now();
    service.stop().await.unwrap();
    assert!(started.elapsed() >= TERM_GRACE, "SIGTERM was not ignored?");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("stopped")).unwrap(),
        "stopping\n"
    );
    assert!(!group_alive(pgid));
}

#[tokio::test]
async fn a_failing_stop_command_is_reported_and_the_group_ends_anyway() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(
        dir.path(),
        "touch up; sleep 30",
        "test -f up",
        Duration::from_secs(10),
    );
    s.stop = Some("echo no pid file; exit 4".into());
    let service = RunningService::start(s).await.unwrap();
    let pgid = service.pgid();
    let e = service.stop().await.unwrap_err();
    assert_eq!(
        e,
        "service //it:svc: its stop command failed: `echo no pid file; exit 4` exited with code 4: no pid file"
    );
    assert!(!group_alive(pgid));
}

#[tokio::test]
async fn dropping_the_service_or_its_start_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        "touch up; sleep 30 & sleep 30",
        "test -f up",
        Duration::from_secs(10),
    );
    let service = RunningService::start(s).await.unwrap();
    let pgid = service.pgid();
    drop(service);
    assert!(gone(pgid), "drop left a process of the group");

    let s = spec(
        dir.path(),
        "echo $$ > pgid; sleep 30",
        "false",
        Duration::from_secs(30),
    );
    let dropped = tokio::time::timeout(Duration::from_millis(500), RunningService::start(s)).await;
    assert!(dropped.is_err());
    assert!(
        gone(pgid_in(dir.path())),
        "a dropped start left its process"
    );
}

/// flow killed with SIGKILL runs no destructor: the group's record in the lock file is what the
/// next flow command kills from (`executor::kill_left`).
#[tokio::test]
async fn a_service_is_recorded_for_the_next_command_to_kill() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("flow-lock");
    std::fs::write(&lock, "pid 1\n").unwrap();
    let groups = GroupLog::default();
    groups.set(Some(lock.clone()));
    let s = spec(
        dir.path(),
        "touch up; sleep 30 & sleep 30",
        "test -f up",
        Duration::from_secs(10),
    );
    let service = RunningService::start_recorded(s, Some(&groups))
        .await
        .unwrap();
    let pgid = service.pgid();
    let record = std::fs::read_to_string(&lock).unwrap();
    assert!(record.contains(&format!("group {pgid} ")), "{record}");
    std::mem::forget(service); // as if flow died here
    assert!(group_alive(pgid));
    kill_left(&record);
    assert!(!group_alive(pgid), "kill_left did not end the service");

    // A stopped service is recorded as ended: nothing is left for the next command.
    let s = spec(dir.path(), "sleep 30", "true", Duration::from_secs(10));
    let service = RunningService::start_recorded(s, Some(&groups))
        .await
        .unwrap();
    let pgid = service.pgid();
    service.stop().await.unwrap();
    let record = std::fs::read_to_string(&lock).unwrap();
    assert!(record.contains(&format!("ended {pgid} ")), "{record}");
}
