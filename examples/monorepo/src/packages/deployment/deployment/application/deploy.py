"""Use case: a blue-green deploy; traffic moves only once the new slot is healthy."""

from typing import Callable, Tuple

from deployment.domain.release import Environment

HealthCheck = Callable[[str, str], bool]  # (environment, slot) -> healthy?


def deploy_blue_green(
    env: Environment, version: str, healthy: HealthCheck
) -> Tuple[Environment, bool]:
    staged = env.stage(version)
    if not healthy(env.name, staged.idle):
        return env, False
    return staged.switch(), True


def rollback(env: Environment) -> Environment:
    """Sends traffic back to the previous slot."""
    return env.switch()
