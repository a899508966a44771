"""The release's load test: the seed's performance gates, measured on this machine.

    python3 -m perf.load_test --bundle DIR --out FILE.json [--rate 1250] [--seconds 5]

It installs the release bundle DIR into a throwaway local environment (blue slot, live),
starts that environment's HTTP server (deployment.infrastructure.server, the code that
serves staging and production) and offers it a constant arrival rate of `GET /`
requests, as k6's constant-arrival-rate executor does: request i is sent at i/RATE
seconds, by a pool of workers with a kept-alive connection each. It then writes a
metrics.json for the performance gate:

    p95_ms               95th percentile of the response times, in milliseconds
    rps                  requests answered per second over the whole run
    error_rate_percent   requests that failed or did not answer 200, in percent
    utilization_percent  the server's CPU time over the run's wall time and the CPUs

A real pipeline points the same measurement at staging after its deploy; here the
server runs beside the test, so the figures are this machine's.
"""

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional, Tuple

from deployment.infrastructure import server
from deployment.infrastructure.environments import LocalEnvironment

WORKERS = 8


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time of process `pid` so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1]
    parts = fields.split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


class Load:
    """Offers `rate` requests per second for `seconds` to 127.0.0.1:`port`."""

    def __init__(self, port: int, rate: float, seconds: float) -> None:
        self.port = port
        self.rate = rate
        self.total = int(rate * seconds)
        self.times: List[float] = []
        self.errors = 0
        self.lock = threading.Lock()
        self.start = 0.0

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)

    def _worker(self, first: int) -> None:
        times, errors = [], 0
        connection = self._connect()
        for i in range(first, self.total, WORKERS):
            delay = self.start + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent = time.monotonic()
            try:
                connection.request("GET", "/")
                answer = connection.getresponse()
                answer.read()
                errors += answer.status != 200
            except (OSError, http.client.HTTPException):
                errors += 1
                connection.close()
                connection = self._connect()
            times.append(time.monotonic() - sent)
        connection.close()
        with self.lock:
            self.times += times
            self.errors += errors

    def run(self) -> float:
        """Runs the load; returns the wall time it took, in seconds."""
        workers = [
            threading.Thread(target=self._worker, args=(i,)) for i in range(WORKERS)
        ]
        self.start = time.monotonic() + 0.05
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return time.monotonic() - self.start


def measure(bundle: Path, rate: float, seconds: float) -> Tuple[dict, str]:
    """Serves `bundle` from a throwaway environment and measures it under load."""
    root = Path(tempfile.mkdtemp(prefix="load-test-"))
    environment = LocalEnvironment("load-test", root)
    try:
        environment.install("blue", bundle, "load-test")
        environment.switch_to("blue")
        port = server.start(environment)
        pid = int((environment.dir / "server.pid").read_text(encoding="utf-8"))
        before = cpu_seconds(pid)
        load = Load(port, rate, seconds)
        wall = load.run()
        busy = cpu_seconds(pid) - before
    finally:
        server.stop(environment)
        shutil.rmtree(root, ignore_errors=True)
    times = sorted(load.times)
    p95 = times[max(0, int(len(times) * 0.95 + 0.5) - 1)] if times else 0.0
    metrics = {
        "p95_ms": round(p95 * 1000, 3),
        "rps": round(load.total / wall, 1),
        "error_rate_percent": round(100.0 * load.errors / max(load.total, 1), 3),
        "utilization_percent": round(100.0 * busy / wall / (os.cpu_count() or 1), 1),
        "requests": load.total,
    }
    said = (
        f"{load.total} requests offered at {rate:g}/s: {metrics['rps']} answered/s, "
        f"p95 {metrics['p95_ms']} ms, {load.errors} error(s), server CPU "
        f"{metrics['utilization_percent']}% of {os.cpu_count()} CPU(s)"
    )
    return metrics, said


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the load test and writes its metrics.json."""
    parser = argparse.ArgumentParser(prog="perf.load_test")
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=1250.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    metrics, said = measure(args.bundle.resolve(), args.rate, args.seconds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(said)
    return 0


if __name__ == "__main__":
    sys.exit(main())
