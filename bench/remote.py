#!/usr/bin/env python3
"""Time a second machine's fully restored build: flow + BuildGrid against turbo + its remote cache.

  bench/remote.py [--packages 1000 --files 10] [--runs 5] [--flow PATH] [--bgd PATH]
                  [--json FILE] [--keep]

Issue 20's benchmark. The workload is the shared generator's (`gen_workspace.py -k 5 --seed 1`),
generated twice, for flow (`--tools flow`: flow.toml and a BUILD per package) and for Turborepo
(`--tools turbo`, bun as the package manager, as in the shared harness); each is committed to a
git repository, the "origin".

Two remote caches run on 127.0.0.1, each on a free port:

  flow    BuildGrid (`bgd server start`), the cache services only (action cache, CAS,
          ByteStream) with an on-disk CAS, configured as tests/remote.rs configures it;
          flow reaches it with `--remote-cache grpc://127.0.0.1:PORT`.
  turbo   turborepo-remote-cache (the npm package; installed with npm into --trc-dir when it is
          not there), STORAGE_PROVIDER=local into a directory of the scratch space, one static
          token; turbo reaches it through TURBO_API / TURBO_TOKEN / TURBO_TEAM.

Both are warmed by machine A: a `git clone` of the origin that builds everything with uploads on
(`flow build //... -j 2 --remote-cache URL --remote-upload true`; `turbo run test
--concurrency=2 --output-logs=none`, which uploads whenever it has a token). The script checks
that every action was uploaded (flow's `remote cache: N result(s) uploaded`; one artifact per
task in turbo's store) and that flow and turbo produced byte-identical outputs.

Then "machine B", --runs rounds after one untimed warm-up round, the two tools alternating (the
order reversed every round: flow turbo, turbo flow, flow turbo, ...). Before each run, untimed: a fresh `git clone` of
the origin (sources only: no `.flow/`, no `flow-out/`, no `.turbo/`, no `node_modules/`, and
each package's `out/` empty, as the generator lays it out; FLOW_CACHE_DIR is unset, so flow's
cache is the clone's own new `.flow/`), then `sync`. Machine A's checkouts are made the same way.
Timed, in the clone, each a whole process (bench/run.py's fork-server timer):

  flow    flow build //... -j 2 --remote-cache grpc://127.0.0.1:PORT --remote-upload false
  turbo   turbo run test --concurrency=2 --output-logs=none

After each run, the checks: exit 0; flow's summary line says `0 ran, 2N cached`; turbo's says
`Cached: 2N cached, 2N total` (`FULL TURBO`); every package's out/lint.txt and out/test.txt is
there and byte-identical to machine A's. In the warm-up round turbo also runs with `--summarize`,
and every task of its run summary must be `HIT` from `REMOTE`; flow's must have no `[RAN]` line
and its cache directory must not have existed before. A failed check is printed, kept in the
JSON and makes the script exit 1. The CPU time the two servers spent during each timed run is
read from /proc (both run on the same 2 cores as the client).

Nothing is deleted until the end (every checkout stays, about 100 MB each at 1,000 packages):
on this machine's ext4, creating files soon after deleting thousands of others is slower (inode
allocation skips recently freed inodes), so a deletion just before a timed run would slow it.
Other processes deleting trees on the same file system have the same effect; --workdir on a
tmpfs (/dev/shm/...) avoids it, at the price of not timing a disk.

Prints the medians, the ratio flow / turbo and writes every sample with --json FILE.
Python 3 standard library only (it imports bench/run.py for the timer and bench/since.py for
turbo's set-up). Not a test; does not run cargo.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import run as R  # noqa: E402  bench/run.py: ForkServer, run_timed, fmt_s, machine_info, ...
import since as S  # noqa: E402  bench/since.py: ensure_turbo, the summary-line readers

TRC_VERSION = "2.12.0"
TOKEN = "flow-bench-token"
TEAM = "flow-bench"
GIT_ID = ["-c", "user.email=bench@example.invalid", "-c", "user.name=bench"]
FLOW_UPLOADED = re.compile(r"remote cache: (\d+) result\(s\) uploaded")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_cpu(sid):
    """CPU seconds (user + sys, all threads, plus reaped children) of every process of session
    `sid` (the servers are started in sessions of their own)"""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for st in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(st) as fh:
                text = fh.read()
        except OSError:
            continue
        f = text[text.rfind(")") + 2:].split()
        # fields after the command: state ppid pgrp session ... utime(11) stime(12) cutime cstime
        if int(f[3]) == sid:
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / tick


class Server:
    """A server process in a session of its own; its output goes to a log file."""

    def __init__(self, name, argv, cwd, env, log_path):
        self.name = name
        self.log_path = log_path
        self.fh = open(log_path, "w")
        self.p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                  stdout=self.fh, stderr=subprocess.STDOUT,
                                  start_new_session=True)

    def alive(self):
        return self.p.poll() is None

    def cpu(self):
        return proc_cpu(self.p.pid)

    def stop(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
            except ProcessLookupError:
                pass
        self.fh.close()


# ---------------------------------------------------------------------------------------------
# the two remote caches
# ---------------------------------------------------------------------------------------------

BUILDGRID_CONFIG = """\
server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
authorization:
  method: none
storages:
  - !disk-storage &cas
    path: {cas}
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: {refs}
    allow-updates: true
    cache-failed-actions: false
instances:
  - name: ""
    services:
      - !action-cache
        cache: *ac
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
"""


def find_bgd(arg):
    for c in (arg, os.environ.get("FLOW_TEST_BGD"), "/tmp/bgvenv/bin/bgd", shutil.which("bgd")):
        if c and os.access(c, os.X_OK):
            return os.path.abspath(c)
    return None


def start_buildgrid(bgd, flow_bin, work, env, refs, logs):
    d = os.path.join(work, "buildgrid")
    os.makedirs(d, exist_ok=True)
    port = free_port()
    config = BUILDGRID_CONFIG.format(port=port, cas=os.path.join(d, "cas"), refs=refs)
    with open(os.path.join(d, "config.yml"), "w") as fh:
        fh.write(config)
    srv = Server("buildgrid", [bgd, "server", "start", "config.yml"], d, env,
                 os.path.join(logs, "buildgrid.log"))
    srv.url = "grpc://127.0.0.1:%d" % port
    srv.config = config
    deadline = time.monotonic() + 90
    while True:
        r = subprocess.run([flow_bin, "remote", "check", srv.url], cwd=work, env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        if r.returncode == 0:
            srv.check = r.stdout.decode(errors="replace").strip()
            return srv
        if not srv.alive() or time.monotonic() > deadline:
            srv.stop()
            sys.exit("bench/remote.py: BuildGrid did not start on %s:\n%s\n%s" % (
                srv.url, r.stdout.decode(errors="replace"), R.tail(srv.log_path)))
        time.sleep(0.3)


def ensure_trc(trc_dir, version, install, env):
    """the path of turborepo-remote-cache's cli.js, installing the npm package when missing"""
    cli = os.path.join(trc_dir, "node_modules", "turborepo-remote-cache", "dist", "cli.js")
    if not os.path.isfile(cli):
        if not install:
            sys.exit("bench/remote.py: no turborepo-remote-cache in %s (--no-install)" % trc_dir)
        if not shutil.which("npm") or not shutil.which("node"):
            sys.exit("bench/remote.py: node and npm are needed for turborepo-remote-cache")
        os.makedirs(trc_dir, exist_ok=True)
        log("installing turborepo-remote-cache@%s into %s" % (version, trc_dir))
        # the real HOME: npm's own cache lives there
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", trc_dir,
                            "turborepo-remote-cache@%s" % version], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0 or not os.path.isfile(cli):
            sys.exit("bench/remote.py: npm install turborepo-remote-cache failed:\n%s" %
                     r.stdout.decode(errors="replace")[-3000:])
    with open(os.path.join(os.path.dirname(os.path.dirname(cli)), "package.json")) as fh:
        got = json.load(fh)["version"]
    return cli, got


def start_trc(cli, work, env, logs):
    d = os.path.join(work, "turbo-cache")
    store = os.path.join(d, "store")
    os.makedirs(store, exist_ok=True)
    port = free_port()
    senv = dict(env, HOST="127.0.0.1", PORT=str(port), STORAGE_PROVIDER="local",
                STORAGE_PATH=store, STORAGE_PATH_USE_TMP_FOLDER="false", TURBO_TOKEN=TOKEN,
                LOG_LEVEL="warn", ENABLE_STATUS_LOG="false", NODE_ENV="production")
    srv = Server("turborepo-remote-cache", ["node", cli], d, senv,
                 os.path.join(logs, "turborepo-remote-cache.log"))
    srv.url = "http://127.0.0.1:%d" % port
    srv.store = store
    deadline = time.monotonic() + 60
    req = urllib.request.Request(srv.url + "/v8/artifacts/status",
                                 headers={"Authorization": "Bearer " + TOKEN})
    while True:
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                body = resp.read().decode(errors="replace")
                if resp.status == 200 and "enabled" in body:
                    srv.check = body
                    return srv
        except (urllib.error.URLError, OSError):
            pass
        if not srv.alive() or time.monotonic() > deadline:
            srv.stop()
            sys.exit("bench/remote.py: turborepo-remote-cache did not start on %s:\n%s" % (
                srv.url, R.tail(srv.log_path)))
        time.sleep(0.3)


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------

def flow_summary(text):
    m = None
    for m in R.FLOW_SUMMARY.finditer(text):
        pass
    return (int(m.group(2)), int(m.group(3))) if m else None


def turbo_summary(text):
    c = S.TURBO_CACHED.findall(text)
    t = S.TURBO_TASKS.findall(text)
    if not c or not t:
        return None
    return int(t[-1][0]), int(c[-1][0]), int(c[-1][1])  # successful, cached, total


def notable_lines(text, limit=12):
    """flow's warnings and remote-cache lines, turbo's warnings and errors"""
    keep = [ln for ln in text.splitlines()
            if re.search(r"warning|error|refused|remote cache|cannot reach|WARN|ERROR", ln)]
    return keep[:limit]


def outputs_of(root, packages, fmt):
    out = {}
    for p in packages:
        for f in ("lint.txt", "test.txt"):
            try:
                with open(os.path.join(root, fmt % p, f), "rb") as fh:
                    out[(p, f)] = fh.read()
            except OSError:
                out[(p, f)] = None
    return out


def compare_outputs(got, ref):
    missing = [k for k, v in got.items() if v is None]
    differ = [k for k, v in got.items() if v is not None and v != ref.get(k)]
    problems = []
    if missing:
        problems.append("%d output(s) missing, e.g. %s" % (
            len(missing), ", ".join("%s/out/%s" % k for k in missing[:3])))
    if differ:
        problems.append("%d output(s) differ from machine A's, e.g. %s" % (
            len(differ), ", ".join("%s/out/%s" % k for k in differ[:3])))
    return problems


def count_files(d):
    return sum(len(files) for _, _, files in os.walk(d))


# ---------------------------------------------------------------------------------------------

def git(args, cwd, env):
    return R.run_quiet(["git"] + GIT_ID + args, cwd=cwd, env=env)


def clone(origin, dest, packages, env):
    """a checkout of the origin as the generator laid it out: its committed files and each
    package's empty `out/` directory (git keeps no empty directory, and turbo's tasks write
    into it)"""
    R.rm_rf(dest)
    git(["clone", "-q", "--no-hardlinks", origin, dest], os.path.dirname(dest), env)
    for p in packages:
        os.makedirs(os.path.join(dest, "packages", p, "out"), exist_ok=True)


def median(xs):
    return statistics.median(xs) if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packages", "-n", type=int, default=1000)
    ap.add_argument("--files", "-f", type=int, default=10)
    ap.add_argument("--deps", type=int, default=5, help="generator's -k (default 5)")
    ap.add_argument("--seed", type=int, default=1, help="generator's --seed (default 1)")
    ap.add_argument("--runs", type=int, default=5, help="timed rounds after one warm-up (default 5)")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="parallelism of both tools (default 2)")
    ap.add_argument("--flow", "--flow-bin", dest="flow_bin",
                    default=os.environ.get("FLOW_BIN", os.path.join(REPO, "target/release/flow")),
                    help="the flow binary (default $FLOW_BIN, else target/release/flow)")
    ap.add_argument("--bgd", default=None,
                    help="BuildGrid's bgd (default $FLOW_TEST_BGD, /tmp/bgvenv/bin/bgd, bgd on PATH)")
    ap.add_argument("--gen", default=os.path.join(REPO, "..", "shared", "bench", "gen_workspace.py"))
    ap.add_argument("--peers", default=os.environ.get("PEERS", "/tmp/peers"),
                    help="where shared/bench/setup_peers.sh installed turbo and bun")
    ap.add_argument("--trc-dir", default=None,
                    help="npm prefix of turborepo-remote-cache (default "
                         "/tmp/flow-bench-trc-VERSION; installed there when missing)")
    ap.add_argument("--trc-version", default=TRC_VERSION)
    ap.add_argument("--no-install", dest="install", action="store_false",
                    help="install neither turbo (setup_peers.sh) nor turborepo-remote-cache")
    ap.add_argument("--workdir", default=None, help="scratch directory (default: a new one)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--json", default=None, help="write every sample and check to this file")
    ap.add_argument("--timeout", type=float, default=900, help="seconds before a build is killed")
    a = ap.parse_args()
    a.gen = os.path.abspath(a.gen)
    a.flow_bin = os.path.abspath(a.flow_bin)
    a.trc_dir = os.path.abspath(a.trc_dir or "/tmp/flow-bench-trc-%s" % a.trc_version)
    if not os.path.exists(a.gen):
        sys.exit("bench/remote.py: no generator at %s (--gen)" % a.gen)
    if not os.access(a.flow_bin, os.X_OK):
        sys.exit("bench/remote.py: no flow binary at %s (--flow)" % a.flow_bin)
    bgd = find_bgd(a.bgd)
    if not bgd:
        sys.exit("bench/remote.py: no BuildGrid `bgd` (--bgd, FLOW_TEST_BGD; "
                 "pip install buildgrid==0.4.4)")
    if a.runs < 1 or a.packages < 1 or a.files < 1:
        ap.error("--runs, --packages and --files must be >= 1")

    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = os.getloadavg()
    work = os.path.abspath(a.workdir) if a.workdir else tempfile.mkdtemp(prefix="flow-remote-")
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)
    os.makedirs(os.path.join(work, "home"), exist_ok=True)
    env = dict(os.environ)
    for k in ("CI", "FLOW_CACHE_DIR", "MAKEFLAGS", "MFLAGS", "GITHUB_ACTIONS", "GITHUB_EVENT_NAME",
              "FLOW_PROFILE", "TURBO_CACHE", "TURBO_CACHE_DIR", "TURBO_REMOTE_ONLY",
              "TURBO_REMOTE_CACHE_READ_ONLY", "XDG_CACHE_HOME"):
        env.pop(k, None)
    env.update({"HOME": os.path.join(work, "home"),
                "PATH": os.path.join(a.peers, "bin") + os.pathsep + env.get("PATH", ""),
                "TURBO_TELEMETRY_DISABLED": "1", "DO_NOT_TRACK": "1",
                "TURBO_NO_UPDATE_NOTIFIER": "1", "NO_COLOR": "1"})

    turbo, bun, why = S.ensure_turbo(a, env)
    if why:
        sys.exit("bench/remote.py: " + why)
    trc_cli, trc_version = ensure_trc(a.trc_dir, a.trc_version, a.install, env)

    servers = []
    checks = []
    res = {"command": "bench/remote.py " + " ".join(sys.argv[1:]),
           "started": started.isoformat(timespec="seconds"),
           "params": {"packages": a.packages, "files": a.files, "deps": a.deps, "seed": a.seed,
                      "runs": a.runs, "jobs": a.jobs},
           "load_start": load_start}
    R.SERVER = R.ForkServer(env)
    try:
        # -- the origins ---------------------------------------------------------------------
        gen_args = [sys.executable, a.gen, "-n", str(a.packages), "-f", str(a.files),
                    "-k", str(a.deps), "--seed", str(a.seed)]
        origin = {}
        for tool in ("flow", "turbo"):
            d = os.path.join(work, "origin", tool)
            extra = ["--tools", "flow"] if tool == "flow" else ["--tools", "turbo",
                                                                "--turbo-pm", "bun"]
            r = R.run_quiet(gen_args + extra + ["-o", d], env=env)
            res["workload"] = json.loads(r.stdout.decode().strip().splitlines()[-1])
            git(["init", "-q", "-b", "main"], d, env)
            git(["add", "-A"], d, env)
            git(["commit", "-qm", "the generated workspace"], d, env)
            origin[tool] = d
        with open(os.path.join(origin["flow"], "graph.json")) as fh:
            packages = [p["name"] for p in json.load(fh)["packages"]]
        n_actions = 2 * len(packages)
        log("workload: %d packages x %d files, %d actions (tasks) per tool; scratch %s" % (
            a.packages, a.files, n_actions, work))

        # -- the servers ---------------------------------------------------------------------
        bg = start_buildgrid(bgd, a.flow_bin, work, env, max(10000, 4 * n_actions), logs)
        servers.append(bg)
        log("BuildGrid on %s" % bg.url)
        tc = start_trc(trc_cli, work, env, logs)
        servers.append(tc)
        log("turborepo-remote-cache %s on %s" % (trc_version, tc.url))
        env.update({"TURBO_API": tc.url, "TURBO_TOKEN": TOKEN, "TURBO_TEAM": TEAM})
        # the fork server was started before TURBO_* were set: start it again with them
        R.SERVER.close()
        R.SERVER = R.ForkServer(env)

        j = str(a.jobs)
        argv = {
            "flow": [a.flow_bin, "build", "//...", "-j", j, "--remote-cache", bg.url,
                     "--remote-upload", "false"],
            "turbo": [turbo, "run", "test", "--concurrency=" + j, "--output-logs=none"],
        }
        warm_argv = {
            "flow": [a.flow_bin, "build", "//...", "-j", j, "--remote-cache", bg.url,
                     "--remote-upload", "true"],
            "turbo": argv["turbo"],
        }
        out_fmt = {"flow": "flow-out/packages/%s/out", "turbo": "packages/%s/out"}
        res["commands"] = {
            "warm (machine A)": {t: " ".join(v).replace(a.flow_bin, "flow").replace(turbo, "turbo")
                                 for t, v in warm_argv.items()},
            "timed (machine B)": {t: " ".join(v).replace(a.flow_bin, "flow").replace(turbo, "turbo")
                                  for t, v in argv.items()},
        }

        # -- machine A: warm both remote caches ----------------------------------------------
        ref = {}
        res["warm"] = {}
        for tool in ("flow", "turbo"):
            d = os.path.join(work, "machine-a", tool)
            os.makedirs(os.path.dirname(d), exist_ok=True)
            clone(origin[tool], d, packages, env)
            os.sync()
            lp = os.path.join(logs, "%s-machine-a.log" % tool)
            s = R.run_timed(warm_argv[tool], d, env, lp, a.timeout)
            text = R.read(lp)
            if s.rc != 0:
                sys.exit("bench/remote.py: machine A's %s build failed (exit %d):\n%s" % (
                    tool, s.rc, R.tail(lp)))
            if tool == "flow":
                c = flow_summary(text)
                up = FLOW_UPLOADED.findall(text)
                uploaded = int(up[-1]) if up else 0
                detail = "%s ran, %s cached, %d uploaded" % (c[0] if c else "?",
                                                             c[1] if c else "?", uploaded)
                if uploaded != n_actions:
                    checks.append("machine A: flow uploaded %d result(s), expected %d (%s)" % (
                        uploaded, n_actions, "; ".join(notable_lines(text))))
            else:
                c = turbo_summary(text)
                stored = count_files(tc.store)
                detail = "%s successful, %s cached, %d artifacts in the store" % (
                    c[0] if c else "?", c[1] if c else "?", stored)
                if stored != n_actions:
                    checks.append("machine A: turbo's store holds %d artifact(s), expected %d" % (
                        stored, n_actions))
            res["warm"][tool] = {"wall": s.wall, "cpu": s.cpu, "peak_mib": s.peak_mib,
                                 "detail": detail}
            log("machine A %-5s %s  (%s)" % (tool, R.fmt_s(s.wall), detail))
            ref[tool] = outputs_of(d, packages, out_fmt[tool])
        bad = [k for k in ref["flow"] if ref["flow"][k] is None or ref["flow"][k] != ref["turbo"][k]]
        if bad:
            checks.append("machine A: %d output(s) differ between flow and turbo, e.g. %s" % (
                len(bad), ", ".join("%s/out/%s" % k for k in bad[:3])))
        res["bg_cas_files"] = count_files(os.path.join(work, "buildgrid", "cas"))

        # -- machine B: fresh clones, timed restores -----------------------------------------
        samples = {"flow": [], "turbo": []}
        res["warmup"] = {}
        for rnd in range(-1, a.runs):  # -1: the warm-up round
            order = ("flow", "turbo") if rnd % 2 else ("turbo", "flow")
            tag = "warmup" if rnd < 0 else str(rnd + 1)
            for tool in order:
                # Each run's checkout stays until the end: deleting thousands of files just
                # before a timed run slows down the file creations of that run (ext4 avoids
                # reusing recently freed inodes and searches for others; seen in `perf`).
                d = os.path.join(work, "machine-b", "%s-%s" % (tool, tag))
                os.makedirs(os.path.dirname(d), exist_ok=True)
                clone(origin[tool], d, packages, env)
                for stale in (".flow", "flow-out", ".turbo", "node_modules"):
                    if os.path.exists(os.path.join(d, stale)):
                        checks.append("machine B %s run %s: %s exists before the build" % (
                            tool, tag, stale))
                run_argv = list(argv[tool])
                if tool == "turbo" and rnd < 0:
                    run_argv.append("--summarize")
                os.sync()
                time.sleep(0.5)
                lp = os.path.join(logs, "%s-machine-b-%s.log" % (tool, tag))
                cpu0 = {sv.name: sv.cpu() for sv in servers}
                s = R.run_timed(run_argv, d, env, lp, a.timeout)
                server_cpu = {sv.name: sv.cpu() - cpu0[sv.name] for sv in servers}
                text = R.read(lp)
                problems = []
                if s.rc != 0 or s.timed_out:
                    problems.append("exit %d%s" % (s.rc, " (timed out)" if s.timed_out else ""))
                if tool == "flow":
                    c = flow_summary(text)
                    ran = c[0] if c else None
                    cached = c[1] if c else None
                    what = "%s ran, %s cached" % (ran, cached)
                    if c != (0, n_actions):
                        problems.append("flow's summary says %s, expected 0 ran, %d cached" % (
                            what if c else "nothing (no summary line)", n_actions))
                        ran_lines = [ln for ln in text.splitlines() if ln.startswith("[RAN]")]
                        if ran_lines:
                            problems.append("ran: " + "; ".join(ran_lines[:5]) +
                                            (" …" if len(ran_lines) > 5 else ""))
                else:
                    c = turbo_summary(text)
                    ran = (c[2] - c[1]) if c else None
                    cached = c[1] if c else None
                    what = "%s cached of %s%s" % (cached, c[2] if c else None,
                                                   ", FULL TURBO" if "FULL TURBO" in text else "")
                    if not c or c[1] != n_actions or c[2] != n_actions:
                        problems.append("turbo's summary says %s, expected %d cached of %d" % (
                            what if c else "nothing (no Tasks:/Cached: lines)", n_actions,
                            n_actions))
                    if rnd < 0:
                        runs_json = glob.glob(os.path.join(d, ".turbo", "runs", "*.json"))
                        kinds = {}
                        if runs_json:
                            with open(runs_json[0]) as fh:
                                for t in json.load(fh).get("tasks", []):
                                    k = "%s/%s" % (t["cache"].get("status"),
                                                   t["cache"].get("source"))
                                    kinds[k] = kinds.get(k, 0) + 1
                        res["warmup"]["turbo_summarize"] = kinds
                        if kinds != {"HIT/REMOTE": n_actions}:
                            problems.append("turbo --summarize: task cache sources %s, expected "
                                            "%d HIT/REMOTE" % (kinds, n_actions))
                if not os.path.isdir(os.path.join(d, ".flow" if tool == "flow" else ".turbo")):
                    problems.append("no local cache directory was written")
                problems += compare_outputs(outputs_of(d, packages, out_fmt[tool]), ref[tool])
                notes = notable_lines(text)
                if problems:
                    msg = "machine B %s run %s: %s" % (tool, tag, "; ".join(problems))
                    if notes:
                        msg += " | output: " + " / ".join(notes)
                    checks.append(msg)
                    log("  !! " + msg)
                    shutil.copy(lp, os.path.join(logs, "FAILED-%s-%s.log" % (tool, tag)))
                entry = {"wall": s.wall, "cpu": s.cpu, "peak_mib": s.peak_mib, "rc": s.rc,
                         "ran": ran, "cached": cached, "server_cpu": server_cpu,
                         "ok": not problems, "load1_after": os.getloadavg()[0]}
                if rnd < 0:
                    res["warmup"][tool] = entry
                else:
                    samples[tool].append(entry)
                log("  round %-6s %-5s %8s  cpu %6s  server cpu %6s  %s%s" % (
                    tag, tool, R.fmt_s(s.wall), R.fmt_s(s.cpu),
                    R.fmt_s(server_cpu[bg.name if tool == "flow" else tc.name]), what,
                    "" if not problems else "  (CHECK FAILED)"))
        res["samples"] = samples
    finally:
        for sv in servers:
            sv.stop()
        R.SERVER.close()

    # -- summary -----------------------------------------------------------------------------
    finished = datetime.datetime.now(datetime.timezone.utc)
    res["finished"] = finished.isoformat(timespec="seconds")
    res["load_end"] = os.getloadavg()
    res["checks"] = checks
    res["machine"] = R.machine_info()
    res["versions"] = {
        "flow": "%s (%s, modified %s UTC)" % (
            R.first_line([a.flow_bin, "--version"]), a.flow_bin,
            datetime.datetime.fromtimestamp(os.path.getmtime(a.flow_bin), datetime.timezone.utc)
            .strftime("%Y-%m-%d %H:%M")),
        "flow_repo": R.first_line(["git", "-C", REPO, "describe", "--always", "--dirty"]),
        "buildgrid": "%s (%s)" % (R.first_line([os.path.join(os.path.dirname(bgd), "python"), "-c",
                                                "import importlib.metadata as m; "
                                                "print(m.version('buildgrid'))"]), bgd),
        "turbo": "%s (%s)" % (R.first_line([turbo, "--version"]), turbo),
        "bun": R.first_line([bun, "--version"]),
        "turborepo-remote-cache": "%s (%s)" % (trc_version, a.trc_dir),
        "node": R.first_line(["node", "--version"]),
        "git": R.first_line(["git", "--version"]),
        "python": platform.python_version(),
    }
    w = {t: [x["wall"] for x in samples[t]] for t in samples}
    med = {t: median(w[t]) for t in w}
    res["median_wall"] = med
    res["median_cpu"] = {t: median([x["cpu"] for x in samples[t]]) for t in samples}
    res["median_server_cpu"] = {
        "flow": median([x["server_cpu"]["buildgrid"] for x in samples["flow"]]),
        "turbo": median([x["server_cpu"]["turborepo-remote-cache"] for x in samples["turbo"]])}
    ratio = med["flow"] / med["turbo"] if med["flow"] and med["turbo"] else None
    pairs = [x / y for x, y in zip(w["flow"], w["turbo"])]
    res["ratio_flow_turbo"] = ratio
    res["ratio_pairs"] = pairs

    L = []
    L.append("")
    L.append("Second machine, empty local cache, warm remote cache: %d packages x %d files, "
             "%d actions each; -j %d; %d timed runs after one warm-up, alternating" % (
                 a.packages, a.files, n_actions, a.jobs, a.runs))
    L.append("load average at start %.2f, at end %.2f (1 min)" % (load_start[0],
                                                                  res["load_end"][0]))
    L.append("")
    L.append("| tool (remote cache) | wall: median [min – max] | CPU (client tree) | "
             "server CPU during the run | machine A's warming build |")
    L.append("|---|---|---|---|---|")
    names = {"flow": "flow (BuildGrid)", "turbo": "turbo (turborepo-remote-cache %s)" % trc_version}
    for t in ("flow", "turbo"):
        if w[t]:
            L.append("| %s | **%s** [%s – %s] | %s | %s | %s |" % (
                names[t], R.fmt_s(med[t]), R.fmt_s(min(w[t])), R.fmt_s(max(w[t])),
                R.fmt_s(res["median_cpu"][t]), R.fmt_s(res["median_server_cpu"][t]),
                R.fmt_s(res["warm"][t]["wall"])))
    if ratio:
        L.append("")
        L.append("ratio flow / turbo: **%.2f** [%.2f – %.2f per round]%s" % (
            ratio, min(pairs), max(pairs), "  (below 1: flow is faster)"))
    L.append("")
    L.append("checks: " + ("all passed (every run restored all %d outputs from the remote "
                           "cache, byte-identical to machine A's)" % (2 * n_actions)
                           if not checks else "%d FAILED" % len(checks)))
    for c in checks:
        L.append("  * " + c)
    print("\n".join(L))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)
        log("wrote %s" % a.json)
    if a.keep or a.workdir:
        log("kept %s" % work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if checks else 0


if __name__ == "__main__":
    sys.exit(main())
