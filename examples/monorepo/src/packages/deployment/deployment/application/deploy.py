"""Use case: a blue-green deploy; traffic moves only once the new slot is healthy."""

from typing import Callable, Tuple

from deployment.domain.release import Environment

HealthCheck = Callable[[str, str], bool]  # (environment, slot) -> healthy?
Install = Callable[[str, str], None]  # (slot, version): puts the release into the slot


def deploy_blue_green(
    env: Environment, version: str, healthy: HealthCheck
) -> Tuple[Environment, bool]:
    """Stages `version` in the idle slot and switches to it if `healthy` says so.

    Returns (new state, True) on success, or the unchanged `env` and False.
    """
    staged = env.stage(version)
    if not healthy(env.name, staged.idle):
        return env, False
    return staged.switch(), True


def rollback(env: Environment) -> Environment:
    """Sends traffic back to the previous slot."""
    return env.switch()


def release(
    env: Environment, version: str, install: Install, healthy: HealthCheck
) -> Tuple[Environment, bool, str]:
    """Makes `version` live: (new state, succeeded, what happened).

    Already live: nothing to do. In the idle slot (a rollback to the previous release):
    switch back without installing. Otherwise: install into the idle slot, check it,
    switch. Running it twice with the same version does nothing the second time.
    """
    if env.live_version() == version:
        return env, True, f"{version} is already live on {env.live}"
    how = "switched back to"
    if env.version_in(env.idle) != version:
        install(env.idle, version)
        how = "installed"
    new, ok = deploy_blue_green(env, version, healthy)
    if not ok:
        return env.stage(version), False, f"{version} is not ready on {env.idle}"
    return new, True, f"{how} {version} on {new.live}"
