import json
import threading

import pytest

from deployment.application import health
from deployment.infrastructure import cli, server
from deployment.infrastructure.environments import LocalEnvironment, root_dir

HEALTH_MODULE = """
import json, sys
HEALTHY = {healthy}
def main():
    print(json.dumps({{"healthy": HEALTHY, "problems": [] if HEALTHY else ["down"]}}))
    return 0 if HEALTHY else 1
"""


def make_bundle(path, healthy):
    """A release whose health check answers `healthy`."""
    module = path / "deployment" / "application"
    module.mkdir(parents=True)
    (path / "deployment" / "__init__.py").write_text("")
    (module / "__init__.py").write_text("")
    (module / "health.py").write_text(HEALTH_MODULE.format(healthy=healthy))
    return path


@pytest.fixture
def served(tmp_path):
    """A local environment whose server runs in this process."""
    env = LocalEnvironment("staging", tmp_path / "envs")
    env.dir.mkdir(parents=True)
    httpd = server.make_server(env)
    (env.dir / "server.port").write_text(str(httpd.server_address[1]))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield env, httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()
    # A command under test that found no server process started a real one: stop it.
    server.stop(env)


def test_root_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("FLOW_ENVIRONMENTS", raising=False)
    monkeypatch.setenv("FLOW_WORKSPACE", str(tmp_path))
    assert root_dir() == tmp_path / ".environments"
    monkeypatch.setenv("FLOW_ENVIRONMENTS", str(tmp_path / "x"))
    assert root_dir() == tmp_path / "x"
    with pytest.raises(ValueError):
        LocalEnvironment("../etc")


def test_install_and_switch_write_the_slots_and_the_live_switch(tmp_path):
    env = LocalEnvironment("prod", tmp_path)
    assert env.live_version() is None
    env.install("green", make_bundle(tmp_path / "b1", True), "v1")
    env.switch_to("green")
    assert env.live_version() == "v1"
    assert (env.slot_dir("green") / "deployment" / "__init__.py").is_file()
    assert env.load().slot_of("v1") == "green"
    with pytest.raises(ValueError):
        env.switch_to("red")


def test_server_reports_the_live_version_and_its_health(served, tmp_path):
    env, port = served
    assert server.get(port, "/health")[0] == 500  # nothing live yet
    env.install("green", make_bundle(tmp_path / "good", True), "v1")
    env.install("blue", make_bundle(tmp_path / "bad", False), "v2")
    assert server.get(port, "/slots/blue/ready")[0] == 200
    assert server.get(port, "/slots/red/ready")[0] == 404
    env.switch_to("green")
    status, body = server.get(port, "/")
    assert status == 200 and body["live"] == "green" and body["version"] == "v1"
    assert server.get(port, "/health")[0] == 200
    env.switch_to("blue")
    status, body = server.get(port, "/health")
    assert status == 500 and "down" in body["detail"]
    assert server.get(port, "/nowhere")[0] == 404


def test_probe_and_live_commands(served, tmp_path, monkeypatch, capsys):
    env, _ = served
    root = ["--root", str(env.dir.parent), "--environment", "staging"]
    env.install("green", make_bundle(tmp_path / "good", True), "v1")
    env.switch_to("green")
    assert cli.main(["probe", *root]) == 0
    assert cli.main(["live", *root]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "v1"
    monkeypatch.setenv("FLOW_ARTIFACT_DIGEST", "v1")
    assert cli.main(["probe", *root, "--path", "/", "--expect-artifact"]) == 0
    monkeypatch.setenv("FLOW_ARTIFACT_DIGEST", "v9")
    assert cli.main(["probe", *root, "--path", "/", "--expect-artifact"]) == 1
    assert cli.main(["status", *root]) == 0


def test_deploy_rollback_and_stop_through_a_detached_server(tmp_path, monkeypatch):
    root = ["--root", str(tmp_path / "envs"), "--environment", "prod"]
    good, bad = make_bundle(tmp_path / "g", True), make_bundle(tmp_path / "b", False)
    env = LocalEnvironment("prod", tmp_path / "envs")
    try:
        monkeypatch.setenv("FLOW_ARTIFACT_DIGEST", "v1")
        assert cli.main(["deploy", *root, "--bundle", str(good)]) == 0
        assert cli.main(["deploy", *root, "--bundle", str(good)]) == 0  # already live
        assert cli.main(["probe", *root]) == 0
        monkeypatch.setenv("FLOW_ARTIFACT_DIGEST", "v2")
        # Ready (its code loads), so it takes traffic; unhealthy, which a monitor
        # catches.
        assert cli.main(["install", *root, "--bundle", str(bad)]) == 0
        assert cli.main(["install", *root, "--bundle", str(bad)]) == 0
        assert cli.main(["check", *root]) == 0
        assert cli.main(["switch", *root]) == 0
        assert cli.main(["probe", *root]) == 1
        monkeypatch.setenv("FLOW_ARTIFACT_DIGEST", "v1")
        assert cli.main(["deploy", *root]) == 0  # switches back, no bundle needed
        assert cli.main(["probe", *root]) == 0
        monkeypatch.setenv("FLOW_ARTIFACT_DIGEST", "v3")
        assert cli.main(["switch", *root]) == 1  # v3 is in no slot
        with pytest.raises(SystemExit):
            cli.main(["deploy", *root])
        with pytest.raises(SystemExit):
            cli.main(["install", *root])
    finally:
        assert cli.main(["serve-stop", *root]) == 0
    assert server.running(env) is None
    assert cli.main(["probe", *root]) == 1
    assert cli.main(["status", *root]) == 1
    assert not server.stop(env)


def test_a_release_that_cannot_load_is_not_ready(served, tmp_path, capsys):
    env, _ = served
    broken = tmp_path / "broken"
    (broken / "deployment").mkdir(parents=True)
    env.install("green", broken, "v1")
    assert (
        cli.main(
            [
                "check",
                "--root",
                str(env.dir.parent),
                "--environment",
                "staging",
                "--version",
                "v1",
            ]
        )
        == 1
    )
    assert "not ready" in capsys.readouterr().err


def test_health_of_a_release():
    assert health.problems(["json", "os"]) == []
    found = health.problems(["json", "no_such_package_here"])
    assert len(found) == 1 and found[0].startswith("no_such_package_here: ")
    assert health.main(["json"]) == 0
    assert health.main(["no_such_package_here"]) == 1


def test_bundle_version_follows_content(tmp_path):
    (tmp_path / "a.zip").write_bytes(b"one")
    first = cli.bundle_version(tmp_path)
    assert first == cli.bundle_version(tmp_path)
    (tmp_path / "a.zip").write_bytes(b"two")
    assert cli.bundle_version(tmp_path) != first
    assert json.loads(json.dumps(first)) == first
