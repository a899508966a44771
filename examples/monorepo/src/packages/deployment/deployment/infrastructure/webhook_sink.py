"""A fake webhook endpoint for integration tests.

    python3 -m deployment.infrastructure.webhook_sink [--port N]

Listens on 127.0.0.1 (`--port`, default 0: a free port, printed), stores every POST it
receives and answers 200; `GET /received` returns them as JSON ([{"path", "headers",
"body"}, ...]), `GET /health` answers 200. It stands in for Slack and Jira: the BUILD's
`service` starts it for the notification integration test, and a test of flow can point
`SLACK_WEBHOOK_URL` at it.
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional


class Sink(ThreadingHTTPServer):
    """The server on 127.0.0.1:`port`, with the requests it received so far."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), SinkHandler)
        self.received: List[Dict[str, Any]] = []
        self.lock = threading.Lock()


class SinkHandler(BaseHTTPRequestHandler):
    """Records POSTs; answers `GET /received` and `GET /health`."""

    server: Sink

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 -- the name http.server calls
        """Stores the path, headers and body (JSON if it parses) and answers 200."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", errors="replace")
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        with self.server.lock:
            self.server.received.append(
                {"path": self.path, "headers": dict(self.headers), "body": body}
            )
        self._answer(200, {"ok": True})

    def do_GET(self) -> None:  # noqa: N802
        """`/received`: the stored POSTs; `/health`: ok; anything else: 404."""
        if self.path == "/received":
            with self.server.lock:
                self._answer(200, list(self.server.received))
        elif self.path == "/health":
            self._answer(200, {"ok": True})
        else:
            self._answer(404, {"error": f"no route {self.path}"})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Logs each request to stderr."""
        sys.stderr.write(f"{format % args}\n")


def main(argv: Optional[list] = None) -> int:
    """Serves on `--port` (default: a free one, printed) until killed."""
    parser = argparse.ArgumentParser(prog="webhook_sink")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    sink = Sink(args.port)
    print(f"listening on 127.0.0.1:{sink.server_address[1]}", flush=True)
    sink.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
