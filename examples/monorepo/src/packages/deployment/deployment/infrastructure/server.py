"""Adapter: the HTTP server of a local environment, on 127.0.0.1, and its process.

    GET /                  {"environment", "live", "version",
                            "slots": {"blue", "green"}}
    GET /health            200 when the live release is healthy, 500 otherwise,
                           with its problems
    GET /slots/SLOT/ready  200 when SLOT holds a release whose code loads
                           (checked before a switch)

The server decides nothing itself: on every request it reads the `live` switch and runs
the release's own health check (`deployment.application.health`) from the slot, in a
child interpreter with the slot's code on its path. So a new release answers with its
own code the moment traffic switches to it, and the server never has to restart.

The process: `start` copies this package's code into the environment directory (the
deploy that starts it runs in a sandbox that is deleted afterwards), starts `python3 -m
deployment.infrastructure.server DIR` in a session of its own (flow ends a deploy's
process group when the deploy ends; the server must outlive it), output to `server.log`,
and waits until it answers. The server binds a free port and writes `server.port` and
`server.pid`. `stop` sends SIGTERM to its process group, then SIGKILL after a grace
period.
"""

import json
import os
import shutil
import signal
import subprocess  # nosec B404
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from deployment.domain.release import SLOTS, Environment
from deployment.infrastructure.environments import LocalEnvironment

HEALTH = "import sys; from deployment.application.health import main; sys.exit(main())"
READY = "import deployment.application.health"
CHECK_TIMEOUT = 20.0
START_TIMEOUT = 15.0
STOP_GRACE = 5.0


def run_release(release: Path, code: str) -> Tuple[bool, str]:
    """Runs `code` in a fresh interpreter with `release` first on its path."""
    if not release.is_dir():
        return False, f"no release in {release}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(release),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
    }
    try:
        # A fixed interpreter and module (bandit B603 reviewed).
        done = subprocess.run(  # nosec B603
            [sys.executable, "-B", "-c", code],
            cwd=release,
            env=env,
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"the check did not answer within {CHECK_TIMEOUT:.0f}s"
    return done.returncode == 0, (done.stdout + done.stderr).strip()


class Handler(BaseHTTPRequestHandler):
    """The routes of one environment; `make_server` binds a subclass to it."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    environment: LocalEnvironment  # set on the subclass `serve` makes

    def _answer(self, status: int, body: Dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 -- the name http.server calls
        """Answers the routes of the module docstring; 404 for any other path."""
        state = self.environment.load()
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        if not parts:
            self._get_root(state)
        elif parts == ["health"]:
            self._get_health(state)
        elif len(parts) == 3 and parts[0] == "slots" and parts[2] == "ready":
            self._get_slot_ready(state, parts[1])
        else:
            self._answer(404, {"error": f"no route {self.path}"})

    def _get_root(self, state: Environment) -> None:
        env = self.environment
        version = env.live_version(state)
        self._answer(
            200,
            {
                "environment": env.name,
                "live": state.live if version else None,
                "version": version,
                "slots": {slot: state.version_in(slot) for slot in SLOTS},
            },
        )

    def _get_health(self, state: Environment) -> None:
        env = self.environment
        version = env.live_version()
        if version is None:
            self._answer(500, {"healthy": False, "problems": ["nothing is live"]})
            return
        ok, output = run_release(env.slot_dir(state.live), HEALTH)
        body = {"healthy": ok, "version": version, "slot": state.live}
        body["detail"] = output
        self._answer(200 if ok else 500, body)

    def _get_slot_ready(self, state: Environment, slot: str) -> None:
        if slot not in SLOTS or state.version_in(slot) is None:
            self._answer(404, {"ready": False, "detail": f"no release in {slot}"})
            return
        ok, output = run_release(self.environment.slot_dir(slot), READY)
        body = {"ready": ok, "slot": slot, "version": state.version_in(slot)}
        body["detail"] = output
        self._answer(200 if ok else 500, body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Logs each request to stderr, with its time."""
        sys.stderr.write(f"{self.log_date_time_string()} {format % args}\n")


def make_server(environment: LocalEnvironment, port: int = 0) -> ThreadingHTTPServer:
    """A threading server for `environment` on 127.0.0.1:`port` (0: a free port)."""
    handler = type("EnvironmentHandler", (Handler,), {"environment": environment})
    return ThreadingHTTPServer(("127.0.0.1", port), handler)


def write_atomically(path: Path, text: str) -> None:
    """Writes `text` to a temporary file, then renames it to `path`."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def serve(environment: LocalEnvironment) -> None:
    """Runs the server in this process until it is killed (the detached main)."""
    server = make_server(environment)
    write_atomically(environment.dir / "server.pid", f"{os.getpid()}\n")
    write_atomically(environment.dir / "server.port", f"{server.server_address[1]}\n")
    print(f"serving {environment.name} on {server.server_address[1]}", flush=True)
    server.serve_forever()


# --------------------------------------------------------------------------------------
# ------- The detached process ---------------------------------------------------------
# ------------------------------------


def port_of(environment: LocalEnvironment) -> Optional[int]:
    """The port in `server.port`; None when the file is missing or not a number."""
    try:
        return int((environment.dir / "server.port").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, left unreaped in some containers, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return not Path("/proc").is_dir()


def _pid_of(environment: LocalEnvironment) -> Optional[int]:
    try:
        return int((environment.dir / "server.pid").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def get(port: int, path: str, timeout: float = 30.0) -> Tuple[int, Dict[str, Any]]:
    """GET http://127.0.0.1:PORT/PATH: (status, JSON body); status 0: no answer."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # nosec B310
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"{}")
        except ValueError:
            return error.code, {}
    except (OSError, ValueError) as error:
        return 0, {"error": str(error)}


def running(environment: LocalEnvironment) -> Optional[int]:
    """The port of the environment's server when it runs and answers; None otherwise."""
    pid, port = _pid_of(environment), port_of(environment)
    if pid is None or port is None or not _alive(pid):
        return None
    status, body = get(port, "/", timeout=5.0)
    if status != 200 or body.get("environment") != environment.name:
        return None
    return port


def start(environment: LocalEnvironment) -> int:
    """Starts the server unless it runs; returns its port."""
    port = running(environment)
    if port is not None:
        return port
    stop(environment)
    code = environment.dir / "server" / "code"
    shutil.rmtree(code, ignore_errors=True)
    shutil.copytree(
        Path(__file__).resolve().parents[1],
        code / "deployment",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(code),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
    }
    module = "deployment.infrastructure.server"
    with open(environment.dir / "server.log", "ab") as log:
        # A fixed interpreter and module (bandit B603 reviewed).
        subprocess.Popen(  # nosec B603
            [sys.executable, "-B", "-m", module, str(environment.dir.resolve())],
            cwd=environment.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        port = running(environment)
        if port is not None:
            return port
        time.sleep(0.05)
    log_text = (environment.dir / "server.log").read_text(errors="replace")
    raise RuntimeError(f"the server of {environment.name} did not start:\n{log_text}")


def stop(environment: LocalEnvironment) -> bool:
    """Stops the server (its whole process group); True when one was running."""
    pid = _pid_of(environment)
    was_running = pid is not None and _alive(pid)
    if pid is not None and was_running:
        for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, STOP_GRACE)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if not _alive(pid):
                break
    for name in ("server.pid", "server.port"):
        (environment.dir / name).unlink(missing_ok=True)
    return was_running


def main(argv: Optional[list] = None) -> int:
    """Serves the environment whose directory is the first argument, until killed."""
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0])
    serve(LocalEnvironment(directory.name, directory.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
