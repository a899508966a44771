"""The command line of the deploy targets: `python3 -m deployment.infrastructure.cli`.

    deploy  --environment E --bundle DIR  blue-green in one step: install into the
                                          idle slot, check it is ready, switch to it
    install --environment E --bundle DIR  the three steps one by one (the `blue_green`
    check   --environment E               macro of flow's prelude runs them in order)
    switch  --environment E
    live    --environment E               prints the version traffic goes to (nothing
                                          if none)
    probe   --environment E --path /health  exits 0 when the server answers 200 there
    status  --environment E               the server's `GET /`
    serve-stop --environment E            stops the environment's server

The version of a release is `$FLOW_ARTIFACT_DIGEST` (flow sets it for deploys: the
digest of the artifact), else `--version`, else the digest of the bundle's files.
`--environment` defaults to `$FLOW_ENVIRONMENT`. Every step is idempotent: a version
already live is left alone, a version in the idle slot (a rollback) is switched back to
without copying, so re-running a deploy, or a rollback to the previous release, is fast.
Environments are local directories with a small HTTP server (environments.py,
server.py): nothing leaves this machine.
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Optional

from deployment.application.deploy import release
from deployment.infrastructure import server
from deployment.infrastructure.environments import LocalEnvironment


def bundle_version(bundle: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        digest.update(
            path.relative_to(bundle).as_posix().encode() + b"\0" + path.read_bytes()
        )
    return digest.hexdigest()


def _version(args: argparse.Namespace) -> str:
    version = os.environ.get("FLOW_ARTIFACT_DIGEST") or args.version
    if version:
        return str(version)
    if args.bundle is None:
        raise SystemExit("error: no version: pass --bundle or --version")
    return bundle_version(args.bundle)


def _ready(environment: LocalEnvironment, slot: str) -> bool:
    port = server.start(environment)
    status, body = server.get(port, f"/slots/{slot}/ready")
    if status != 200:
        print(f"{environment.name}: {slot} is not ready: {body}", file=sys.stderr)
    return status == 200


def deploy(environment: LocalEnvironment, version: str, bundle: Optional[Path]) -> int:
    def install(slot: str, version: str) -> None:
        if bundle is None:
            raise SystemExit(f"error: {version} is in no slot: pass --bundle")
        environment.install(slot, bundle, version)

    state, ok, what = release(
        environment.load(), version, install, lambda _e, slot: _ready(environment, slot)
    )
    if not ok:
        print(
            f"{environment.name}: {what}; traffic stays on {state.live}",
            file=sys.stderr,
        )
        return 1
    environment.save(state)
    server.start(environment)
    print(f"{environment.name}: {what}")
    return 0


def install(environment: LocalEnvironment, version: str, bundle: Path) -> int:
    state = environment.load()
    slot = state.slot_of(version)
    if slot is not None:
        print(f"{environment.name}: {version} is already in {slot}")
        return 0
    environment.install(state.idle, bundle, version)
    print(f"{environment.name}: installed {version} in {state.idle}")
    return 0


def _slot_of(environment: LocalEnvironment, version: str) -> Optional[str]:
    slot = environment.load().slot_of(version)
    if slot is None:
        print(f"{environment.name}: {version} is in no slot", file=sys.stderr)
    return slot


def probe(environment: LocalEnvironment, path: str, expect: Optional[str]) -> int:
    port = server.port_of(environment)
    if port is None:
        print(f"{environment.name}: no server", file=sys.stderr)
        return 1
    status, body = server.get(port, path)
    print(f"{environment.name} {path}: {status} {json.dumps(body)}")
    if status != 200:
        return 1
    if expect is not None and body.get("version") != expect:
        print(f"{environment.name}: serves {body.get('version')}, not {expect}")
        return 1
    return 0


COMMANDS = [
    "deploy",
    "install",
    "check",
    "switch",
    "live",
    "probe",
    "status",
    "serve-stop",
]


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy")
    parser.add_argument("action", choices=COMMANDS)
    parser.add_argument("--environment", default=os.environ.get("FLOW_ENVIRONMENT"))
    parser.add_argument(
        "--root", type=Path, help="default: $FLOW_WORKSPACE/.environments"
    )
    parser.add_argument("--bundle", type=Path, help="the release bundle directory")
    parser.add_argument("--version", help="default: $FLOW_ARTIFACT_DIGEST")
    parser.add_argument("--path", default="/health", help="probe: the path to GET")
    parser.add_argument(
        "--expect-artifact",
        action="store_true",
        help="probe: also require that the live version is $FLOW_ARTIFACT_DIGEST",
    )
    args = parser.parse_args(argv)
    if not args.environment:
        parser.error("--environment is required (or $FLOW_ENVIRONMENT)")
    environment = LocalEnvironment(args.environment, args.root)
    if args.action == "deploy":
        return deploy(environment, _version(args), args.bundle)
    if args.action == "install":
        if args.bundle is None:
            parser.error("install needs --bundle")
        return install(environment, _version(args), args.bundle)
    if args.action in ("check", "switch"):
        slot = _slot_of(environment, _version(args))
        if slot is None:
            return 1
        if args.action == "check":
            return 0 if _ready(environment, slot) else 1
        environment.switch_to(slot)
        server.start(environment)
        print(f"{environment.name}: traffic on {slot} ({_version(args)})")
        return 0
    if args.action == "live":
        print(environment.live_version() or "")
        return 0
    if args.action == "probe":
        expect = (
            os.environ.get("FLOW_ARTIFACT_DIGEST") if args.expect_artifact else None
        )
        return probe(environment, args.path, expect)
    if args.action == "status":
        port = server.port_of(environment)
        status, body = server.get(port, "/") if port else (0, {"error": "no server"})
        print(json.dumps(body, indent=2))
        return 0 if status == 200 else 1
    stopped = server.stop(environment)
    print(f"{environment.name}: server {'stopped' if stopped else 'was not running'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
