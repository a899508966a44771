from deployment.application.deploy import deploy_blue_green, release, rollback
from deployment.domain.release import Environment


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


def test_release_installs_into_the_idle_slot_then_switches_back_without_installing():
    installed = []

    def install(slot, version):
        installed.append((slot, version))

    env = Environment("prod", blue="v1")
    env, ok, what = release(env, "v2", install, lambda e, s: True)
    assert ok and env.live == "green" and installed == [("green", "v2")]
    assert what == "installed v2 on green"
    # A rollback to v1: v1 is in the idle slot, so nothing is copied.
    env, ok, what = release(env, "v1", install, lambda e, s: True)
    assert ok and env.live_version() == "v1" and installed == [("green", "v2")]
    assert what == "switched back to v1 on blue"
    # Again: already live, nothing happens.
    same, ok, what = release(env, "v1", install, lambda e, s: False)
    assert ok and same == env and "already live" in what


def test_release_that_is_not_ready_keeps_traffic():
    env = Environment("prod", blue="v1")
    after, ok, _ = release(env, "v2", lambda s, v: None, lambda e, s: False)
    assert not ok
    assert after.live_version() == "v1" and after.slot_of("v2") == "green"
