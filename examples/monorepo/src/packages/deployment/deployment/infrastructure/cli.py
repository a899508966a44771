"""The command line of the deploy targets: `python3 -m deployment.infrastructure.cli`.

A release's version is the digest of its bundle's files: an unchanged bundle is the
same version.

The example has no real infrastructure, so the environment's state is a JSON file under
`$DEPLOY_STATE_DIR` (default `.deploy-state`), and the health check is HTTP only when
`DEPLOY_HEALTH_URL` is set.
"""

import argparse
import hashlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from deployment.application.deploy import deploy_blue_green, rollback
from deployment.domain.release import Environment
from deployment.infrastructure.health_check import http_healthy


def _state_file(environment: str) -> Path:
    return (
        Path(os.environ.get("DEPLOY_STATE_DIR", ".deploy-state"))
        / f"{environment}.json"
    )


def _load(environment: str) -> Environment:
    path = _state_file(environment)
    if path.exists():
        return Environment(**json.loads(path.read_text(encoding="utf-8")))
    return Environment(environment)


def _save(env: Environment) -> None:
    path = _state_file(env.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(env)), encoding="utf-8")


def bundle_version(bundle: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        digest.update(
            path.relative_to(bundle).as_posix().encode() + b"\0" + path.read_bytes()
        )
    return digest.hexdigest()[:12]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="deploy")
    parser.add_argument("action", choices=["deploy", "rollback"])
    parser.add_argument("--environment", required=True)
    parser.add_argument("--bundle", type=Path, help="the release bundle directory")
    parser.add_argument("--version", help="default: the digest of the bundle")
    args = parser.parse_args(argv)
    version = args.version or (bundle_version(args.bundle) if args.bundle else "dev")

    env = _load(args.environment)
    if args.action == "rollback":
        env = rollback(env)
        print(f"{env.name}: traffic back on {env.live} ({env.live_version()})")
    else:
        url = os.environ.get("DEPLOY_HEALTH_URL")
        env, ok = deploy_blue_green(
            env, version, lambda _e, _s: url is None or http_healthy(url)
        )
        if not ok:
            print(
                f"{env.name}: {version} is unhealthy; traffic stays on {env.live}",
                file=sys.stderr,
            )
            return 1
        print(f"{env.name}: {version} is live on {env.live}")
    _save(env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
