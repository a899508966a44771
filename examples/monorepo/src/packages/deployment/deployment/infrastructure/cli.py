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
    """The SHA-256 of the bundle's files: relative paths and contents, in path order."""
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
    """Makes `version` live in one step (`release`), saves it, starts the server.

    Returns 0, or 1 with traffic unchanged when the idle slot is not ready.
    """

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
    """Copies `bundle` into the idle slot, unless a slot already holds `version`."""
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
    """GETs `path`: 0 on a 200 whose version is `expect` (when given), else 1."""
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


def _run_deploy(args: argparse.Namespace, environment: LocalEnvironment) -> int:
    return deploy(environment, _version(args), args.bundle)


def _run_install(args: argparse.Namespace, environment: LocalEnvironment) -> int:
    return install(environment, _version(args), args.bundle)


def _run_check(args: argparse.Namespace, environment: LocalEnvironment) -> int:
    slot = _slot_of(environment, _version(args))
    if slot is None:
        return 1
    return 0 if _ready(environment, slot) else 1


def _run_switch(args: argparse.Namespace, environment: LocalEnvironment) -> int:
    version = _version(args)
    slot = _slot_of(environment, version)
    if slot is None:
        return 1
    environment.switch_to(slot)
    server.start(environment)
    print(f"{environment.name}: traffic on {slot} ({version})")
    return 0


def _run_live(args: argparse.Namespace, environment: LocalEnvironment) -> int:
    print(environment.live_version() or "")
    return 0


def _run_probe(args: argparse.Namespace, environment: LocalEnvironment) -> int:
    expect = os.environ.get("FLOW_ARTIFACT_DIGEST") if args.expect_artifact else None
    return probe(environment, args.path, expect)


def _run_status(args: argparse.Namespace, environment: LocalEnvironment) -> int:
    port = server.port_of(environment)
    status, body = server.get(port, "/") if port else (0, {"error": "no server"})
    print(json.dumps(body, indent=2))
    return 0 if status == 200 else 1


def _run_serve_stop(args: argparse.Namespace, environment: LocalEnvironment) -> int:
    stopped = server.stop(environment)
    print(f"{environment.name}: server {'stopped' if stopped else 'was not running'}")
    return 0


# The function that runs each action of the command line; it returns the exit status.
ACTIONS = {
    "deploy": _run_deploy,
    "install": _run_install,
    "check": _run_check,
    "switch": _run_switch,
    "live": _run_live,
    "probe": _run_probe,
    "status": _run_status,
    "serve-stop": _run_serve_stop,
}

COMMANDS = list(ACTIONS)


def _parser() -> argparse.ArgumentParser:
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
    return parser


def main(argv: Optional[list] = None) -> int:
    """Runs the action `argv` names (see the module docstring); its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.environment:
        parser.error("--environment is required (or $FLOW_ENVIRONMENT)")
    environment = LocalEnvironment(args.environment, args.root)
    if args.action == "install" and args.bundle is None:
        parser.error("install needs --bundle")
    return ACTIONS[args.action](args, environment)


if __name__ == "__main__":
    sys.exit(main())
