from deployment.application.deploy import deploy_blue_green, rollback
from deployment.domain.release import Environment
from deployment.infrastructure import cli


def test_healthy_release_switches_traffic():
    env, ok = deploy_blue_green(Environment("prod", blue="v1"), "v2", lambda e, s: True)
    assert ok
    assert (env.live, env.live_version()) == ("green", "v2")
    assert rollback(env).live_version() == "v1"


def test_unhealthy_release_keeps_traffic():
    before = Environment("prod", blue="v1")
    env, ok = deploy_blue_green(before, "v2", lambda e, s: False)
    assert not ok
    assert env == before


def test_cli_records_state(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOY_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("DEPLOY_HEALTH_URL", raising=False)
    assert cli.main(["deploy", "--environment", "staging", "--version", "abc123"]) == 0
    assert (tmp_path / "staging.json").exists()
    assert cli.main(["rollback", "--environment", "staging"]) == 0


def test_bundle_version_follows_content(tmp_path):
    (tmp_path / "a.zip").write_bytes(b"one")
    first = cli.bundle_version(tmp_path)
    assert first == cli.bundle_version(tmp_path)
    (tmp_path / "a.zip").write_bytes(b"two")
    assert cli.bundle_version(tmp_path) != first
