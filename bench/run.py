#!/usr/bin/env python3
"""Time flow against peer build tools on generated workspaces; write bench/RESULTS.md.

  bench/run.py [--sizes 100x10,1000x10] [--tools flow,ninja,make,turbo,moon,bazel]
               [--runs N] [--gen PATH/gen_workspace.py] [--out bench/RESULTS.md]

For each size NxF it builds flow in release mode (once), generates one workspace per tool with
the shared generator (`gen_workspace.py`: same graph, same seed, byte-identical sources), builds
each once, and then, scenario by scenario, runs every tool once untimed (warm-up) and then
alternates timed runs between the tools, one round forwards and the next backwards (A1 B1 C1
C2 B2 A2 A3 ...: a tool that keeps working after it exits, Bazel's server, would otherwise
always slow down the same next tool). Mutations and clean steps are
done by this script *before* the timer starts; only the build command itself is timed. Each
timed run is one child process: wall time from spawn to exit, and `os.wait4`'s resource usage
(user+sys CPU of the child and everything it waited for, and `ru_maxrss`: the peak RSS of the
largest single process of the tree).

Scenarios (all tools): cold, noop, leaf-edit, root-edit, early-cutoff, restore.
flow only: BUILD evaluation time (`flow query //...`, `cargo bench --bench eval`) and watch
latency. bench/README.md describes each one and how to read the tables.

Python 3 standard library only. Not part of `cargo test`.
"""

import argparse
import datetime
import json
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

SCENARIOS = ["cold", "noop", "leaf-edit", "root-edit", "early-cutoff", "restore"]
ALL_TOOLS = ["flow", "ninja", "make", "turbo", "moon", "bazel"]

FLOW_SUMMARY = re.compile(
    r"^flow: (ok|FAILED|interrupted|superseded by new changes): (\d+) ran, (\d+) cached, "
    r"(\d+) failed, (\d+) skipped, (\d+) flaky", re.M)



def read(path):
    """The text of `path`; empty when it cannot be read."""
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""

def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------
# formatting helpers
# ---------------------------------------------------------------------------------------------

def fmt_s(x):
    """seconds, as summarize.py in the shared harness prints them"""
    if x is None:
        return "–"
    if x < 0.1:
        return "%.1f ms" % (x * 1000)
    if x < 10:
        return "%.2f s" % x
    return "%.1f s" % x


def fmt_ms(ns):
    return "%.1f ms" % (ns / 1e6)


def med_min_max(xs):
    return statistics.median(xs), min(xs), max(xs)


# ---------------------------------------------------------------------------------------------
# the timer
# ---------------------------------------------------------------------------------------------

class Sample:
    __slots__ = ("wall", "cpu", "peak_mib", "rc", "timed_out")

    def __init__(self, wall, cpu, peak_mib, rc, timed_out=False):
        self.wall, self.cpu, self.peak_mib, self.rc, self.timed_out = wall, cpu, peak_mib, rc, timed_out


# Timed commands are started by a small, long-lived helper process (a fork server), not by this
# script: on Linux a process's peak-RSS record (`ru_maxrss`) starts from the high-water mark of
# the memory it was forked from (the kernel carries it across exec), so a command forked from
# this script would never report less than this script's own RSS (~18 MiB). The helper
# (`python3 -I -S`, a few MiB) receives one request per line, forks, makes the child a process
# group of its own, points its stdin at /dev/null and stdout+stderr at the log, execs the command,
# and reaps it with os.wait4; it takes the wall time from just before fork to just after reaping.
# What is left of the effect, the floor, is measured on `true` and printed in the report.
FORK_SERVER = r"""
import json, os, signal, sys, time
child = 0
fired = []
def on_alarm(signum, frame):
    fired.append(1)
    if child:
        try:
            os.killpg(child, signal.SIGKILL)
        except OSError:
            pass
signal.signal(signal.SIGALRM, on_alarm)
null = os.open("/dev/null", os.O_RDONLY)
for line in sys.stdin:
    req = json.loads(line)
    prog, argv = req["argv"][0], req["argv"]
    if "/" not in prog:
        for d in os.environ["PATH"].split(":"):
            c = os.path.join(d or ".", prog)
            if os.access(c, os.X_OK) and not os.path.isdir(c):
                prog = c
                break
    fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t0 = time.perf_counter()
    child = os.fork()
    if child == 0:
        try:
            os.setpgid(0, 0)
            os.chdir(req["cwd"])
            os.dup2(null, 0)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.execve(prog, argv, os.environ)
        finally:
            os._exit(127)
    del fired[:]
    signal.alarm(max(1, int(req["timeout"])))
    _, status, ru = os.wait4(child, 0)
    t1 = time.perf_counter()
    signal.alarm(0)
    timed_out = bool(fired)
    child = 0
    os.close(fd)
    sys.stdout.write(json.dumps({"wall": t1 - t0, "cpu": ru.ru_utime + ru.ru_stime,
                                 "peak_kib": ru.ru_maxrss, "timed_out": timed_out,
                                 "rc": os.waitstatus_to_exitcode(status)}) + "\n")
    sys.stdout.flush()
"""


class ForkServer:
    def __init__(self, env):
        self.env = env
        self.p = None

    def start(self):
        self.p = subprocess.Popen([sys.executable, "-I", "-S", "-c", FORK_SERVER], env=self.env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  start_new_session=True)

    def run(self, argv, cwd, log_path, timeout):
        if self.p is None or self.p.poll() is not None:
            self.start()
        self.p.stdin.write(json.dumps({"argv": list(argv), "cwd": cwd, "log": log_path,
                                       "timeout": timeout}) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("the timing helper died (running %s)" % " ".join(argv))
        r = json.loads(line)
        return Sample(r["wall"], r["cpu"], r["peak_kib"] / 1024.0, r["rc"], r["timed_out"])

    def close(self):
        if self.p is not None:
            self.p.stdin.close()
            self.p.wait()
            self.p = None


SERVER = None


def run_timed(argv, cwd, env, log_path, timeout):
    """Runs argv to completion through the fork server (env is the server's); returns a Sample.

    stdout and stderr go to log_path (a file, so no pipe has to be drained). wall: from fork to
    reaping; cpu and peak come from os.wait4's rusage, which covers the command and every
    descendant it waited for: ru_maxrss is the largest single process's peak RSS (KiB). After
    `timeout` seconds the command's process group is killed."""
    return SERVER.run(argv, cwd, log_path, timeout)


def run_quiet(argv, cwd=None, env=None, check=True, timeout=None):
    r = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError("`%s` failed (exit %d):\n%s" % (
            " ".join(argv), r.returncode, r.stdout.decode(errors="replace")[-3000:]))
    return r


def tail(path, n=15):
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------------------------

def rm_f(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def rm_rf(path):
    if os.path.islink(path):
        rm_f(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


class Tool:
    """One build tool: how to build, clean and restore-clean a generated workspace."""

    def __init__(self, name, ctx):
        self.name = name
        self.ctx = ctx
        self.gen_tool = name
        self.git = name in ("turbo", "moon")
        j = str(ctx.jobs)
        peers = ctx.peers
        self.reason = None  # why it is unavailable
        self.version_argv = None
        if name == "flow":
            self.argv = [ctx.flow_bin, "build", "//...", "-j", j]
            self.version_argv = [ctx.flow_bin, "--version"]
            self.out_fmt = "flow-out/packages/%s/out/test.txt"
            if not os.access(ctx.flow_bin, os.X_OK):
                self.reason = "no flow binary at %s" % ctx.flow_bin
        elif name == "ninja":
            self.argv = ["ninja", "-j" + j, "--quiet"]
            self.version_argv = ["ninja", "--version"]
            self.out_fmt = "packages/%s/out/test.txt"
            if not shutil.which("ninja"):
                self.reason = "`ninja` not on PATH (Debian: apt-get install ninja-build)"
        elif name == "make":
            self.argv = ["make", "-j" + j, "-s"]
            self.version_argv = ["make", "--version"]
            self.out_fmt = "packages/%s/out/test.txt"
            if not shutil.which("make"):
                self.reason = "`make` not on PATH"
        elif name == "turbo":
            binp = os.environ.get("TURBO_BIN",
                                  os.path.join(peers, "node_modules/@turbo/linux-64/bin/turbo"))
            self.argv = [binp, "run", "test", "--concurrency=" + j, "--output-logs=none"]
            self.version_argv = [binp, "--version"]
            self.out_fmt = "packages/%s/out/test.txt"
            if not os.access(binp, os.X_OK):
                self.reason = "no turbo binary at %s (shared/bench/setup_peers.sh installs it)" % binp
            elif not shutil.which("bun", path=ctx.env["PATH"]):
                self.reason = "turbo runs its tasks through bun, which is not on PATH (%s/bin)" % peers
        elif name == "moon":
            binp = os.environ.get("MOON_BIN",
                                  os.path.join(peers, "node_modules/@moonrepo/core-linux-x64-gnu/moon"))
            self.argv = [binp, "run", ":test", "--concurrency", j, "--quiet"]
            self.version_argv = [binp, "--version"]
            self.out_fmt = "packages/%s/out/test.txt"
            if not os.access(binp, os.X_OK):
                self.reason = "no moon binary at %s (shared/bench/setup_peers.sh installs it)" % binp
        elif name == "bazel":
            self.bazel_root = os.path.join(ctx.work, "bazel-root")
            self.argv = ["bazel", "--output_user_root=" + self.bazel_root, "build",
                         "--spawn_strategy=local", "--jobs=" + j, "--color=no", "--curses=no",
                         "--show_progress_rate_limit=5", "//packages/..."]
            self.version_argv = ["bazel", "--version"]
            self.out_fmt = "bazel-bin/packages/%s/test.txt"
            if not shutil.which("bazel"):
                self.reason = "`bazel` not on PATH (Debian: apt-get install bazel-bootstrap)"
        else:
            raise SystemExit("unknown tool %s (known: %s)" % (name, ", ".join(ALL_TOOLS)))

    def version(self):
        try:
            r = run_quiet(self.version_argv, env=self.ctx.env, check=False, timeout=120)
            first = r.stdout.decode(errors="replace").strip().splitlines()
            return first[0] if first else "?"
        except Exception as e:  # noqa: BLE001 - report whatever went wrong
            return "? (%s)" % e

    def invocation(self):
        argv = list(self.argv)
        if self.name in ("turbo", "moon"):
            argv[0] = argv[0].replace(self.ctx.peers, "$PEERS")
        if self.name == "flow":
            argv[0] = "target/release/flow"
        return " ".join(argv).replace(self.ctx.work, "$SCRATCH")

    # Outputs are deleted per package (faster than globbing at 5,000 packages).
    def rm_outputs(self, ws):
        for p in ws.packages:
            for f in ("lint.txt", "test.txt"):
                rm_f(os.path.join(ws.dir, "packages", p, "out", f))

    def clean(self, ws):
        """cold: delete all outputs and the tool's state"""
        d = ws.dir
        if self.name == "flow":
            rm_rf(os.path.join(d, "flow-out"))
            rm_rf(os.path.join(d, ".flow"))
        elif self.name == "ninja":
            self.rm_outputs(ws)
            rm_f(os.path.join(d, ".ninja_log"))
            rm_f(os.path.join(d, ".ninja_deps"))
        elif self.name == "make":
            self.rm_outputs(ws)
        elif self.name == "turbo":
            self.rm_outputs(ws)
            rm_rf(os.path.join(d, ".turbo"))
            for p in ws.packages:
                rm_rf(os.path.join(d, "packages", p, ".turbo"))
        elif self.name == "moon":
            self.rm_outputs(ws)
            rm_rf(os.path.join(d, ".moon", "cache"))
        elif self.name == "bazel":
            run_quiet(["bazel", "--output_user_root=" + self.bazel_root, "clean"], cwd=d,
                      env=self.ctx.env)

    def has_restore(self):
        return self.name in ("flow", "turbo", "moon")

    def restore_clean(self, ws):
        """restore: delete all outputs, keep the cache"""
        if self.name == "flow":
            rm_rf(os.path.join(ws.dir, "flow-out"))
        else:
            self.rm_outputs(ws)

    def shutdown(self, ws):
        if self.name == "bazel":
            run_quiet(["bazel", "--output_user_root=" + self.bazel_root, "shutdown"], cwd=ws.dir,
                      env=self.ctx.env, check=False, timeout=120)


# ---------------------------------------------------------------------------------------------
# workspaces and mutations
# ---------------------------------------------------------------------------------------------

class Workspace:
    def __init__(self, directory, graph):
        self.dir = directory
        self.graph = graph
        self.packages = [p["name"] for p in graph["packages"]]
        self.srcs = graph["packages"][0]["srcs"]  # e.g. src/f00.txt ... (same in every package)
        self.root = graph["stats"]["root_package"]
        self.leaf = graph["stats"]["leaf_package"]

    def src(self, package, i):
        return os.path.join(self.dir, "packages", package, self.srcs[i])


class Counter:
    """Every appended line is new, so no edit ever brings back bytes a cache has seen."""

    def __init__(self):
        self.n = 0

    def next(self):
        self.n += 1
        return self.n


def append_line(path, text):
    with open(path, "a") as fh:
        fh.write(text)


def move_boundary_byte(ws):
    """The early-cutoff mutation: move the last byte of the first non-empty source of the root
    package (among all but its last) to the front of the next source. The lint action is
    `cat SRCS > out/lint.txt` over the sources in order, so its output keeps the same bytes while
    two of its inputs change. Boundaries only ever move towards the front, so no set of source
    contents repeats (every run is a real cache miss for the lint action)."""
    paths = [ws.src(ws.root, i) for i in range(len(ws.srcs))]
    for a, b in zip(paths, paths[1:]):
        with open(a, "rb") as fh:
            da = fh.read()
        if not da:
            continue
        with open(b, "rb") as fh:
            db = fh.read()
        with open(a, "wb") as fh:
            fh.write(da[:-1])
        with open(b, "wb") as fh:
            fh.write(da[-1:] + db)
        return
    raise RuntimeError("early-cutoff: no byte left to move in %s" % ws.root)


# ---------------------------------------------------------------------------------------------
# machine description
# ---------------------------------------------------------------------------------------------

def machine_info():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem = "%.1f GiB" % (int(line.split()[1]) / 1024 / 1024)
                    break
    except OSError:
        pass
    try:
        uname = subprocess.run(["uname", "-a"], stdout=subprocess.PIPE).stdout.decode().strip()
    except OSError:
        uname = " ".join(platform.uname())
    return {"uname": uname, "cpu": cpu, "cores": os.cpu_count(), "mem": mem}


def first_line(argv, cwd=None):
    try:
        r = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return r.stdout.decode(errors="replace").strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


# ---------------------------------------------------------------------------------------------
# the benchmark of one size
# ---------------------------------------------------------------------------------------------

class Context:
    pass


def generate(ctx, tool_gen, directory, n, f):
    rm_rf(directory)
    r = run_quiet([sys.executable, ctx.gen, "-n", str(n), "-f", str(f), "-k", str(ctx.deps),
                   "--seed", str(ctx.seed), "--tools", tool_gen, "-o", directory])
    info = json.loads(r.stdout.decode().strip().splitlines()[-1])
    with open(os.path.join(directory, "graph.json")) as fh:
        graph = json.load(fh)
    return Workspace(directory, graph), info


def git_init(directory, env):
    run_quiet(["git", "init", "-q", "-b", "main"], cwd=directory, env=env)
    run_quiet(["git", "add", "-A"], cwd=directory, env=env)
    run_quiet(["git", "-c", "user.email=bench@example.invalid", "-c", "user.name=bench",
               "commit", "-qm", "init"], cwd=directory, env=env)


def flow_counts(log_path):
    """(ran, cached) from flow's summary line, or None"""
    try:
        with open(log_path, errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    m = None
    for m in FLOW_SUMMARY.finditer(text):
        pass
    return (int(m.group(2)), int(m.group(3))) if m else None


def bench_size(ctx, n, f, tools):
    size = "n%d-f%d" % (n, f)
    base = os.path.join(ctx.work, size)
    logs = os.path.join(base, "logs")
    os.makedirs(logs, exist_ok=True)
    res = {"size": size, "n": n, "f": f, "tools": [], "skipped": {}, "samples": {},
           "flow_counts": {}, "checks": [], "notes": []}
    if f < 2:
        res["notes"].append("early-cutoff needs at least 2 sources per package: not run")
    workspaces = {}
    for t in tools:
        d = os.path.join(base, t.name)
        log("[%s] generate %s workspace in %s" % (size, t.name, d))
        ws, info = generate(ctx, t.gen_tool, d, n, f)
        if t.git:
            git_init(d, ctx.env)
        workspaces[t.name] = ws
        res["stats"] = info
    # let the kernel write the generated files back before anything is timed
    os.sync()
    time.sleep(1)

    # One full build each, then the leaf output check (all tools must produce the same bytes).
    active = []
    outputs = {}
    for t in tools:
        ws = workspaces[t.name]
        lp = os.path.join(logs, "%s-setup.log" % t.name)
        s = run_timed(t.argv, ws.dir, ctx.env, lp, ctx.timeout)
        if s.rc != 0:
            res["skipped"][t.name] = "initial build failed (exit %d): see %s" % (s.rc, lp)
            log("  !! %s: initial build failed (exit %d):\n%s" % (t.name, s.rc, tail(lp)))
            continue
        try:
            with open(os.path.join(ws.dir, t.out_fmt % ws.leaf), "rb") as fh:
                outputs[t.name] = fh.read().decode(errors="replace").strip()
        except OSError:
            outputs[t.name] = "MISSING"
        active.append(t)
    if len(set(outputs.values())) > 1:
        res["checks"].append("leaf `test` output differs across tools: %s" % outputs)
    res["leaf_output"] = outputs
    res["tools"] = [t.name for t in active]
    stats = res["stats"]
    expected_ran = {"cold": stats["targets"], "noop": 0, "leaf-edit": stats["leaf_change_actions"],
                    "root-edit": stats["root_change_actions"], "early-cutoff": 1, "restore": 0}

    counter = ctx.counter
    for sc in ctx.scenarios:
        if sc == "early-cutoff" and f < 2:
            continue
        runners = [t for t in active if sc != "restore" or t.has_restore()]
        if not runners:
            continue

        def prepare(t, sc=sc):
            ws = workspaces[t.name]
            if sc == "cold":
                t.clean(ws)
            elif sc == "leaf-edit":
                append_line(ws.src(ws.leaf, 0), "// edit %d\n" % counter.next())
            elif sc == "root-edit":
                append_line(ws.src(ws.root, 0), "// edit %d\n" % counter.next())
            elif sc == "early-cutoff":
                move_boundary_byte(ws)
            elif sc == "restore":
                t.restore_clean(ws)

        log("[%s] %s: %s, 1 warm-up + %d runs each, alternating" % (
            size, sc, " ".join(t.name for t in runners), ctx.runs))
        samples = {t.name: [] for t in runners}
        counts = []
        for r in range(-1, ctx.runs):  # -1: the warm-up, not counted
            # Every other round backwards: no tool always runs right after the same other one.
            for t in (runners if r % 2 else runners[::-1]):
                ws = workspaces[t.name]
                prepare(t)
                lp = os.path.join(logs, "%s-%s.log" % (t.name, sc))
                s = run_timed(t.argv, ws.dir, ctx.env, lp, ctx.timeout)
                if s.rc != 0:
                    log("  !! %s %s run %d: exit %d%s\n%s" % (
                        t.name, sc, r + 1, s.rc, " (timed out)" if s.timed_out else "", tail(lp)))
                if t.name == "flow":
                    c = flow_counts(lp)
                    if r >= 0:
                        counts.append(c)
                    want = expected_ran[sc]
                    got = c[0] if c else None
                    if got != want:
                        msg = "flow %s run %s: %s actions ran, expected %d" % (
                            sc, "warm-up" if r < 0 else r + 1, got, want)
                        if r >= 0 or sc == "early-cutoff":
                            res["checks"].append(msg)
                        log("  !! " + msg)
                if r >= 0:
                    samples[t.name].append(s)
        for name, xs in samples.items():
            res["samples"].setdefault(name, {})[sc] = xs
            w = med_min_max([x.wall for x in xs])
            log("    %-6s %-12s wall %s [%s – %s]  peak %.0f MiB" % (
                name, sc, fmt_s(w[0]), fmt_s(w[1]), fmt_s(w[2]),
                statistics.median(x.peak_mib for x in xs)))
        if "flow" in samples:
            res["flow_counts"][sc] = {"expected": expected_ran[sc], "observed": counts}

    if "flow" in res["tools"] and ctx.eval_time:
        res["eval"] = bench_eval(ctx, workspaces["flow"], logs)
    if "flow" in res["tools"] and ctx.watch_iterations > 0:
        try:
            res["watch"] = bench_watch(ctx, base, n, f, logs)
            odd = [x for x in res["watch"]["ran"] if x != res["stats"]["leaf_change_actions"]]
            if odd:
                res["checks"].append("watch: a cycle ran %s actions, expected %d" % (
                    odd, res["stats"]["leaf_change_actions"]))
        except Exception as e:  # noqa: BLE001 - keep the other results
            res["checks"].append("watch latency not measured: %s" % e)
            log("  !! watch: %s" % e)
    for t in active:
        t.shutdown(workspaces[t.name])
    return res


def bench_eval(ctx, ws, logs):
    """BUILD evaluation time, flow only."""
    out = {}
    lp = os.path.join(logs, "flow-query.log")
    # (a) whole process, a fresh cache directory each run: no evaluation snapshot to reuse
    fresh, warm = [], []
    for r in range(-1, ctx.runs):
        qdir = os.path.join(ctx.work, "query-cache-%d" % r)
        rm_rf(qdir)
        s = run_timed([ctx.flow_bin, "--cache-dir", qdir, "query", "//..."], ws.dir, ctx.env,
                      lp, ctx.timeout)
        rm_rf(qdir)
        if s.rc != 0:
            log("  !! flow query exited %d:\n%s" % (s.rc, tail(lp)))
        if r >= 0:
            fresh.append(s)
    # (b) whole process, the workspace's own cache directory (what a repeated command sees)
    for r in range(-1, ctx.runs):
        s = run_timed([ctx.flow_bin, "query", "//..."], ws.dir, ctx.env, lp, ctx.timeout)
        if r >= 0:
            warm.append(s)
    out["query_fresh"] = fresh
    out["query_warm"] = warm
    log("    flow query //... fresh cache dir: %s, workspace cache dir: %s (medians)" % (
        fmt_s(statistics.median(x.wall for x in fresh)),
        fmt_s(statistics.median(x.wall for x in warm))))
    # (c) in process: the eval bench on this very workspace
    if ctx.eval_bench:
        # cargo needs the real HOME (rustup's toolchains); the tools get a scratch one
        env = dict(os.environ, FLOW_BENCH_WORKSPACE=ws.dir, FLOW_BENCH_RUNS=str(max(ctx.runs, 5)))
        log("    cargo bench --bench eval on the generated flow workspace")
        r = subprocess.run(["cargo", "bench", "--bench", "eval"], cwd=REPO, env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        text = r.stdout.decode(errors="replace").strip()
        if r.returncode != 0:
            text += "\n(exit %d)\n%s" % (r.returncode, r.stderr.decode(errors="replace")[-2000:])
        out["cargo_bench"] = text.replace(ws.dir, "<flow workspace>")
        log("      " + "\n      ".join(out["cargo_bench"].splitlines()))
    return out


def bench_watch(ctx, base, n, f, logs):
    """Watch latency: write to the leaf source -> the leaf's lint action starts (stamped from
    inside the action) -> the cycle's summary line is printed."""
    d = os.path.join(base, "flow-watch")
    ws, _ = generate(ctx, "flow", d, n, f)
    stamps = os.path.join(base, "watch-stamps.txt")
    rm_f(stamps)
    build_file = os.path.join(d, "packages", ws.leaf, "BUILD")
    with open(build_file) as fh:
        text = fh.read()
    old = 'cmd = "cat $(SRCS) > out/lint.txt"'
    if text.count(old) != 1 or '"' in stamps or "$" in stamps:
        raise RuntimeError("cannot instrument %s" % build_file)
    text = text.replace(old, 'cmd = "date +%%s%%N >> %s; cat $(SRCS) > out/lint.txt"' % stamps)
    with open(build_file, "w") as fh:
        fh.write(text)
    os.sync()
    # Fill the cache, then delete flow-out/ so that the watcher's initial cycle restores every
    # output and prints a summary line (a cycle with nothing to do prints nothing).
    lp = os.path.join(logs, "flow-watch-setup.log")
    s = run_timed([ctx.flow_bin, "build", "//...", "-j", str(ctx.jobs)], d, ctx.env, lp, ctx.timeout)
    if s.rc != 0:
        raise RuntimeError("build of the watch workspace failed:\n" + tail(lp))
    rm_rf(os.path.join(d, "flow-out"))
    rm_f(stamps)

    argv = [ctx.flow_bin, "watch", "//...", "--debounce", str(ctx.debounce), "-j", str(ctx.jobs)]
    wlog = open(os.path.join(logs, "flow-watch.log"), "w")
    p = subprocess.Popen(argv, cwd=d, env=ctx.env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines = queue.Queue()

    def reader():
        for raw in p.stdout:
            now = time.time_ns()
            line = raw.decode(errors="replace").rstrip("\n")
            wlog.write("%d %s\n" % (now, line))
            wlog.flush()
            lines.put((now, line))
        lines.put((time.time_ns(), None))

    th = threading.Thread(target=reader, daemon=True)
    th.start()

    def wait_summary(limit):
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("no summary line from `flow watch` within %.0f s" % limit)
            try:
                when, line = lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError("`flow watch` exited (code %s)" % p.poll())
            m = FLOW_SUMMARY.match(line)
            if m:
                return when, line, int(m.group(2))

    def read_stamps():
        try:
            with open(stamps) as fh:
                return [int(x) for x in fh.read().split()]
        except (OSError, ValueError):
            return []

    start_lat, end_lat, ran = [], [], []
    try:
        wait_summary(ctx.timeout)
        time.sleep(ctx.settle)
        leaf_src = ws.src(ws.leaf, 0)
        for i in range(ctx.watch_iterations + 1):  # the first one is a warm-up
            while not lines.empty():
                lines.get_nowait()
            before = len(read_stamps())
            t0 = time.time_ns()
            append_line(leaf_src, "// watch %d %d\n" % (i, t0))
            t_end, line, nran = wait_summary(60)
            st = read_stamps()
            if len(st) != before + 1:
                raise RuntimeError("expected one new stamp from the leaf's lint action, got %d (%s)"
                                   % (len(st) - before, line))
            if i > 0:
                start_lat.append(st[-1] - t0)
                end_lat.append(t_end - t0)
                ran.append(nran)
            time.sleep(ctx.settle)
    finally:
        try:
            os.killpg(p.pid, signal.SIGINT)
            p.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        th.join(timeout=5)
        wlog.close()
    m0 = med_min_max(start_lat)
    m1 = med_min_max(end_lat)
    log("    watch: write -> leaf lint starts %s [%s – %s]; -> summary %s [%s – %s] (debounce %d ms)"
        % (fmt_ms(m0[0]), fmt_ms(m0[1]), fmt_ms(m0[2]), fmt_ms(m1[0]), fmt_ms(m1[1]),
           fmt_ms(m1[2]), ctx.debounce))
    return {"start_ns": start_lat, "end_ns": end_lat, "ran": ran, "debounce_ms": ctx.debounce,
            "stamp_file": "watch-stamps.txt"}


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------

def cell_wall(xs):
    if not xs:
        return "–"
    m, lo, hi = med_min_max([x.wall for x in xs])
    bad = [x.rc for x in xs if x.rc != 0]
    flag = " (exit %s!)" % ",".join(map(str, sorted(set(bad)))) if bad else ""
    return "**%s** [%s – %s]%s" % (fmt_s(m), fmt_s(lo), fmt_s(hi), flag)


def cell_ratio(fx, px):
    if not fx or not px:
        return "–"
    ratio = statistics.median(x.wall for x in fx) / statistics.median(x.wall for x in px)
    pairs = [a.wall / b.wall for a, b in zip(fx, px)]
    return "**%.2f** [%.2f – %.2f]" % (ratio, min(pairs), max(pairs))


def write_section(path, section, md):
    """Writes `md` (which starts with the heading `section`) into the file at `path`, replacing
    the section of that heading up to the next `## ` heading, else appended."""
    try:
        with open(path) as fh:
            text = fh.read()
    except FileNotFoundError:
        text = ""
    start = text.find(section)
    if start < 0:
        text = text.rstrip("\n") + ("\n\n" if text else "") + md
    else:
        nxt = text.find("\n## ", start + len(section))
        text = text[:start] + md + (text[nxt + 1:] if nxt >= 0 else "")
        text = text.replace(md + "## ", md + "\n## ")
    with open(path, "w") as fh:
        fh.write(text)


def report(ctx, machine, versions, unavailable, results, started, finished):
    L = []
    w = L.append
    w("# flow benchmark results")
    w("")
    w("Written by `bench/run.py` (how to run it and how to read these tables: "
      "[README.md](README.md)). %s UTC." % started.strftime("%Y-%m-%d %H:%M"))
    w("")
    w("Command: `%s`" % ctx.command)
    w("")
    w("## Machine")
    w("")
    w("* `uname -a`: `%s`" % machine["uname"])
    w("* CPU: %s, %s cores (`os.cpu_count()`), %s RAM" % (machine["cpu"], machine["cores"],
                                                          machine["mem"]))
    w("* Load average (1 min) at the start: %.2f, at the end: %.2f. With other work running, "
      "quote nothing from this file." % (ctx.load_start, os.getloadavg()[0]))
    w("* Parallelism: %d for every tool. Workload: `gen_workspace.py -k %d --seed %d` "
      "(256-byte sources); run took %.0f s." % (ctx.jobs, ctx.deps, ctx.seed,
                                              (finished - started).total_seconds()))
    w("* Timer floor, measured on `true`: %s wall, %.1f MiB peak RSS. A peak at the floor means "
      "\"at most this\" (see README.md)." % (fmt_s(ctx.floor[0]), ctx.floor[1]))
    w("")
    w("## Tools")
    w("")
    w("| tool | version | timed command (in the workspace root) |")
    w("|---|---|---|")
    for name, (ver, inv) in versions.items():
        w("| %s | %s | `%s` |" % (name, ver.replace("|", "\\|"), inv))
    for name, why in unavailable.items():
        w("| %s | not run | %s |" % (name, why))
    w("")
    w("Other: %s; %s; %s." % (ctx.rustc, ctx.git_version, "Python " + platform.python_version()))
    w("")
    w("## Workloads")
    w("")
    w("| size | packages | source files | targets (actions) | dep edges | longest chain | "
      "re-run by a root edit | by a leaf edit |")
    w("|---|---|---|---|---|---|---|---|")
    for r in results:
        s = r["stats"]
        w("| %s | %d | %d | %d | %d | %d | %d | %d |" % (
            r["size"], r["n"], s["source_files"], s["targets"], s["edges"], s["longest_chain"],
            s["root_change_actions"], s["leaf_change_actions"]))
    w("")
    for r in results:
        scen = [s for s in ctx.scenarios if any(s in r["samples"].get(t, {}) for t in r["tools"])]
        head = "| tool | " + " | ".join(scen) + " |"
        rule = "|---|" + "---|" * len(scen)
        w("## %s: %d packages × %d files" % (r["size"], r["n"], r["f"]))
        w("")
        for name, why in r["skipped"].items():
            w("* %s: %s" % (name, why))
        for note in r["notes"]:
            w("* %s" % note)
        if r["skipped"] or r["notes"]:
            w("")
        w("### Wall time: median [min – max], %d run(s) each after one warm-up, alternating" % ctx.runs)
        w("")
        w(head)
        w(rule)
        for t in r["tools"]:
            w("| %s | %s |" % (t, " | ".join(cell_wall(r["samples"].get(t, {}).get(s)) for s in scen)))
        w("")
        peers = [t for t in r["tools"] if t != "flow"]
        if "flow" in r["tools"] and peers:
            w("### Ratio flow / peer: median(flow) / median(peer) [min – max of run i of flow / "
              "run i of the peer]; below 1: flow is faster")
            w("")
            w(head.replace("| tool |", "| peer |"))
            w(rule)
            for t in peers:
                fl = r["samples"].get("flow", {})
                pe = r["samples"].get(t, {})
                w("| %s | %s |" % (t, " | ".join(cell_ratio(fl.get(s), pe.get(s)) for s in scen)))
            w("")
        w("### Peak RSS (median MiB; the largest single process of the tree) and CPU "
          "(median user+sys of the tree)")
        w("")
        w(head)
        w(rule)
        for t in r["tools"]:
            cells = []
            for s in scen:
                xs = r["samples"].get(t, {}).get(s)
                cells.append("%.0f MiB, cpu %s" % (statistics.median(x.peak_mib for x in xs),
                                                   fmt_s(statistics.median(x.cpu for x in xs)))
                             if xs else "–")
            w("| %s | %s |" % (t, " | ".join(cells)))
        if "bazel" in r["tools"]:
            w("")
            w("Bazel's figures cover its client only: the server is not a child of the timed "
              "command.")
        w("")
        if r["flow_counts"]:
            w("### flow: actions run in each timed run (from its summary line)")
            w("")
            w("| scenario | expected | observed | |")
            w("|---|---|---|---|")
            for s in scen:
                c = r["flow_counts"].get(s)
                if not c:
                    continue
                obs = [x[0] if x else None for x in c["observed"]]
                ok = all(o == c["expected"] for o in obs)
                w("| %s | %d ran | %s | %s |" % (s, c["expected"],
                                                 ", ".join(str(o) for o in obs),
                                                 "ok" if ok else "**MISMATCH**"))
            w("")
        if "eval" in r:
            e = r["eval"]
            w("### flow: BUILD evaluation (%d BUILD files)" % r["n"])
            w("")
            w("| measurement | wall: median [min – max] | per BUILD file | peak RSS |")
            w("|---|---|---|---|")
            for key, what in (("query_fresh", "`flow query //...`, fresh `--cache-dir` each run "
                                              "(walk + evaluate + graph; no snapshot to reuse)"),
                              ("query_warm", "`flow query //...`, the workspace's `.flow/` "
                                             "(what a repeated command pays)")):
                xs = e[key]
                m, lo, hi = med_min_max([x.wall for x in xs])
                w("| %s | **%s** [%s – %s] | %.0f µs | %.0f MiB |" % (
                    what, fmt_s(m), fmt_s(lo), fmt_s(hi), m * 1e6 / r["n"],
                    statistics.median(x.peak_mib for x in xs)))
            w("")
            if "cargo_bench" in e:
                w("`cargo bench --bench eval` with `FLOW_BENCH_WORKSPACE` set to this workspace "
                  "(in process, no start-up, no query output):")
                w("")
                w("```")
                w(e["cargo_bench"])
                w("```")
                w("")
        if "watch" in r:
            wt = r["watch"]
            a = med_min_max(wt["start_ns"])
            b = med_min_max(wt["end_ns"])
            w("### flow: watch latency (%d edits after one warm-up, debounce %d ms)" % (
                len(wt["start_ns"]), wt["debounce_ms"]))
            w("")
            w("| from appending a line to the leaf's source to | median [min – max] |")
            w("|---|---|")
            w("| the start of the leaf's lint action (its first command stamps `date +%%s%%N`) "
              "| **%s** [%s – %s] |" % (fmt_ms(a[0]), fmt_ms(a[1]), fmt_ms(a[2])))
            w("| the cycle's summary line read from `flow watch`'s stdout | **%s** [%s – %s] |" % (
                fmt_ms(b[0]), fmt_ms(b[1]), fmt_ms(b[2])))
            w("")
            w("Nothing is subtracted: both include the %d ms debounce window. Actions run per "
              "cycle: %s." % (wt["debounce_ms"], ", ".join(map(str, wt["ran"]))))
            w("")
        w("### Checks")
        w("")
        outs = r.get("leaf_output", {})
        same = len(set(outs.values())) == 1
        w("* Leaf `test` output after the first full build identical across tools: %s (%s)." % (
            "yes" if same else "**NO**", "; ".join("%s `%s`" % kv for kv in outs.items())))
        for c in r["checks"]:
            w("* **%s**" % c)
        w("")
    return "\n".join(L) + "\n"


def samples_json(results):
    def enc(o):
        if isinstance(o, Sample):
            return {"wall": o.wall, "cpu": o.cpu, "peak_mib": o.peak_mib, "rc": o.rc}
        raise TypeError(type(o))
    return json.dumps(results, default=enc, indent=1)


# ---------------------------------------------------------------------------------------------

def parse_sizes(text):
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)x(\d+)\s*", part)
        if not m:
            raise argparse.ArgumentTypeError("size `%s` is not NxF (e.g. 1000x10)" % part)
        out.append((int(m.group(1)), int(m.group(2))))
    return out


def main():
    ap = argparse.ArgumentParser(
        description="Time flow against peer build tools on generated workspaces and write "
                    "a Markdown report (see bench/README.md).")
    ap.add_argument("--sizes", type=parse_sizes, default=parse_sizes("100x10,1000x10"),
                    help="comma list of PACKAGESxFILES (default 100x10,1000x10; add 5000x20 "
                         "when time allows)")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS),
                    help="comma list of %s (default: all; those not installed are skipped and "
                         "listed in the report)" % ",".join(ALL_TOOLS))
    ap.add_argument("--runs", type=int, default=5, help="timed runs per tool and scenario, after "
                                                       "one warm-up (default 5)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help="comma list of %s (default: all)" % ",".join(SCENARIOS))
    ap.add_argument("--gen", default=None,
                    help="path to gen_workspace.py (default: ../shared/bench/gen_workspace.py "
                         "relative to the repository)")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"),
                    help="the Markdown report (default bench/RESULTS.md)")
    ap.add_argument("--json", default=None, help="also write every sample to this JSON file")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="parallelism for every tool "
                                                              "(default 2)")
    ap.add_argument("--deps", type=int, default=5, help="generator's -k (default 5)")
    ap.add_argument("--seed", type=int, default=1, help="generator's --seed (default 1)")
    ap.add_argument("--watch-iterations", type=int, default=10,
                    help="edits timed by the watch-latency measurement (0: skip it; default 10)")
    ap.add_argument("--debounce", type=int, default=30, help="flow watch --debounce in ms "
                                                            "(default 30, flow's default)")
    ap.add_argument("--no-eval", dest="eval_time", action="store_false",
                    help="skip the BUILD evaluation measurements")
    ap.add_argument("--no-eval-bench", dest="eval_bench", action="store_false",
                    help="skip `cargo bench --bench eval` (still times `flow query`)")
    ap.add_argument("--no-build", action="store_true",
                    help="do not run `cargo build --release` (use the existing binary)")
    ap.add_argument("--flow-bin", default=None,
                    help="the flow binary (default: target/release/flow of this repository)")
    ap.add_argument("--workdir", default=None,
                    help="scratch directory (default: a new temporary one, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--timeout", type=float, default=900, help="seconds before one build is "
                                                              "killed (default 900)")
    ap.add_argument("--peers", default=os.environ.get("PEERS", "/tmp/peers"),
                    help="where shared/bench/setup_peers.sh installed turbo, moon and bun "
                         "(default $PEERS or /tmp/peers)")
    a = ap.parse_args()

    ctx = Context()
    ctx.command = "bench/run.py " + " ".join(sys.argv[1:])
    ctx.runs = max(1, a.runs)
    ctx.jobs, ctx.deps, ctx.seed = a.jobs, a.deps, a.seed
    ctx.timeout = a.timeout
    ctx.watch_iterations, ctx.debounce = a.watch_iterations, a.debounce
    ctx.eval_time, ctx.eval_bench = a.eval_time, a.eval_bench
    ctx.settle = 0.3
    ctx.peers = a.peers
    ctx.counter = Counter()
    ctx.scenarios = [s for s in a.scenarios.split(",") if s]
    bad = [s for s in ctx.scenarios if s not in SCENARIOS]
    if bad:
        ap.error("unknown scenario(s) %s (known: %s)" % (",".join(bad), ",".join(SCENARIOS)))
    names = [t for t in a.tools.split(",") if t]
    bad = [t for t in names if t not in ALL_TOOLS]
    if bad:
        ap.error("unknown tool(s) %s (known: %s)" % (",".join(bad), ",".join(ALL_TOOLS)))

    gen = a.gen or os.path.normpath(os.path.join(REPO, "..", "shared", "bench", "gen_workspace.py"))
    if not os.path.isfile(gen):
        sys.exit("bench/run.py: the workload generator is not at %s.\n"
                 "It is gen_workspace.py of the shared peer-benchmark harness (shared/bench/ next "
                 "to this repository); copy that directory next to the repository or pass "
                 "--gen PATH/TO/gen_workspace.py." % gen)
    ctx.gen = os.path.abspath(gen)

    if not a.no_build and "flow" in names:
        log("cargo build --release")
        r = subprocess.run(["cargo", "build", "--release", "--bin", "flow"], cwd=REPO)
        if r.returncode != 0:
            sys.exit("bench/run.py: cargo build --release failed")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    ctx.flow_bin = os.path.abspath(a.flow_bin or os.path.join(target, "release", "flow"))

    ctx.work = os.path.abspath(a.workdir) if a.workdir else tempfile.mkdtemp(prefix="flow-bench-")
    os.makedirs(os.path.join(ctx.work, "home"), exist_ok=True)
    env = dict(os.environ)
    for k in ("CI", "FLOW_CACHE_DIR", "MAKEFLAGS", "MFLAGS"):
        env.pop(k, None)
    env.update({"HOME": os.path.join(ctx.work, "home"),
                "PATH": os.path.join(ctx.peers, "bin") + os.pathsep + env.get("PATH", ""),
                "TURBO_TELEMETRY_DISABLED": "1", "DO_NOT_TRACK": "1",
                "TURBO_NO_UPDATE_NOTIFIER": "1", "MOON_TELEMETRY": "false", "NO_COLOR": "1"})
    ctx.env = env
    global SERVER
    SERVER = ForkServer(env)

    tools, unavailable = [], {}
    for name in names:
        t = Tool(name, ctx)
        if t.reason:
            unavailable[name] = t.reason
            log("skipping %s: %s" % (name, t.reason))
        else:
            tools.append(t)
    if not tools:
        sys.exit("bench/run.py: none of the tools is available")
    versions = {}
    for t in tools:
        ver = t.version()
        if t.name == "turbo":
            ver += "; tasks through bun " + first_line(
                [shutil.which("bun", path=ctx.env["PATH"]) or "bun", "--version"])
        if t.name == "flow":
            ver += " (commit %s)" % first_line(["git", "describe", "--always", "--dirty"], cwd=REPO)
        versions[t.name] = (ver, t.invocation())
    ctx.rustc = first_line(["rustc", "--version"], cwd=REPO)
    ctx.git_version = first_line(["git", "--version"])
    machine = machine_info()
    ctx.load_start = os.getloadavg()[0]
    floor = [run_timed(["true"], ctx.work, env, os.path.join(ctx.work, "floor.log"), 60)
             for _ in range(5)]
    ctx.floor = (statistics.median(x.wall for x in floor), min(x.peak_mib for x in floor))
    log("scratch: %s; tools: %s; sizes: %s; %d runs" % (
        ctx.work, ", ".join(t.name for t in tools),
        ", ".join("%dx%d" % s for s in a.sizes), ctx.runs))

    started = datetime.datetime.now(datetime.timezone.utc)
    results = []
    try:
        for n, f in a.sizes:
            results.append(bench_size(ctx, n, f, tools))
    finally:
        SERVER.close()
        if a.keep or a.workdir:
            log("scratch kept: %s" % ctx.work)
        else:
            rm_rf(ctx.work)
    finished = datetime.datetime.now(datetime.timezone.utc)
    text = report(ctx, machine, versions, unavailable, results, started, finished)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as fh:
        fh.write(text)
    log("wrote %s" % a.out)
    if a.json:
        with open(a.json, "w") as fh:
            fh.write(samples_json(results))
        log("wrote %s" % a.json)
    failed = [c for r in results for c in r["checks"]]
    if failed:
        log("CHECKS FAILED:\n  " + "\n  ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
