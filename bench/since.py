#!/usr/bin/env python3
"""Time `flow affected/build --since HEAD^` against `turbo query/ls/run --affected` on one leaf edit.

  bench/since.py [--packages 1000 --files 10] [--runs N] [--out bench/RESULTS.md]

The workload is the shared generator's (`gen_workspace.py -k 5 --seed 1`), generated twice: once
for flow (`--tools flow`) and once for Turborepo (`--tools turbo`, bun as the package manager, as
in the shared harness). Each is a git repository:

  commit 1  the generated workspace; both tools build it in full (untimed), so that their caches
            hold every action / task of commit 1;
  commit 2  one leaf edit: a line appended to `src/f00.txt` of the last package (nothing depends
            on it).

Before every timed round, commit 2 is *amended* (`git commit --amend -a`) with a line that no
earlier round used: HEAD^ is always commit 1, which both caches hold, and HEAD is a leaf edit that
neither tool has seen. So each round does the same, real work (the leaf's lint and test run, the
52-odd dependency tasks are cache hits), and no cache entry ever has to be deleted. (Toggling the
edit back and forth would make every round after the first a pure cache hit; deleting cache
entries by hand would time a state no user ever has.) Mutations are done before the timer starts.

What is timed, in the workspace root, each command a whole process (`bench/run.py`'s fork-server
timer: wall from fork to reaping, CPU of the tree, peak RSS of its largest process):

  affected   flow affected --since HEAD^
             turbo ls --affected                                (TURBO_SCM_BASE=HEAD^)
             turbo query affected --packages --base HEAD^ --head HEAD
             turbo query affected --base HEAD^ --head HEAD      (tasks)
  build      flow build --since HEAD^ -j 2
             turbo run test --affected --concurrency=2 --output-logs=none   (TURBO_SCM_BASE=HEAD^)
             (a `--since` build keeps no build record: each one analyses and answers afresh,
             so every round costs what the first build against a base costs)
  plain      flow build //... -j 2 / turbo run test --concurrency=2 --output-logs=none: the same
             edit without --since / --affected, for context (--no-plain leaves it out)

Each case: one untimed warm-up of every command, then --runs rounds; in each round every command
runs once, the order reversed every other round (A B C, C B A, ...). After every run the output
is checked: what each tool selected (targets, packages, tasks) and, for builds, that exactly the
leaf's 2 actions ran (flow's summary line; turbo's `Tasks:`/`Cached:` lines). A failed check is
listed in the report and makes the script exit 1.

The report is a markdown section, "`--since` against `turbo run --affected`", printed to stdout
and, with --out FILE, written into FILE (replacing the section of that name up to the next `## `
heading, else appended). If the turbo binary is missing and the peers directory does not exist,
the shared harness's `setup_peers.sh` installs it (SKIP_BAZEL=1; --no-install to skip); a tool
that cannot be run is reported as such and its rows are left out.

Python 3 standard library only (it imports bench/run.py for the timer and helpers). Not a test.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import run as R  # noqa: E402  bench/run.py: ForkServer, fmt_s, machine_info, ...

SECTION = "## `--since` against `turbo run --affected`"
CASES = ("affected", "build", "plain")
GIT_ID = ["-c", "user.email=bench@example.invalid", "-c", "user.name=bench"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# checks: what each command selected, read from its log
# ---------------------------------------------------------------------------------------------

TURBO_TASKS = re.compile(r"Tasks:\s+(\d+) successful, (\d+) total")
TURBO_CACHED = re.compile(r"Cached:\s+(\d+) cached, (\d+) total")
FLOW_ACTIONS = re.compile(r"\((\d+) actions?\)")


def sel_flow_affected(text):
    labels = [ln.strip() for ln in text.splitlines() if ln.startswith("//")]
    return len(labels), "%d target(s): %s" % (len(labels), ", ".join(labels[:4]) +
                                              (" …" if len(labels) > 4 else ""))


def sel_turbo_ls(text):
    m = re.search(r"^(\d+) packages? \(", text, re.M)
    if not m:
        return None, "? (no package count in the output)"
    names = re.findall(r"^\s+(\S+) packages/\S+$", text, re.M)
    return int(m.group(1)), "%s package(s): %s" % (m.group(1), ", ".join(names[:4]))


def sel_turbo_query(text):
    i = text.find("{")
    try:
        data = json.loads(text[i:text.rfind("}") + 1])["data"]
    except (ValueError, KeyError, TypeError):
        return None, "? (no JSON in the output)"
    (kind, body), = data.items()
    items = body.get("items", [])
    reasons = {}
    for it in items:
        r = (it.get("reason") or {}).get("__typename", "?")
        reasons[r] = reasons.get(r, 0) + 1
    what = "task(s)" if kind == "affectedTasks" else "package(s)"
    detail = ", ".join("%d %s" % (v, k) for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return len(items), "%d %s (%s)" % (len(items), what, detail)


def sel_flow_build(text):
    m = None
    for m in R.FLOW_SUMMARY.finditer(text):
        pass
    if not m:
        if "nothing to do" in text:
            return 0, "nothing affected (0 ran)"
        return None, "? (no summary line)"
    ran, cached = int(m.group(2)), int(m.group(3))
    a = FLOW_ACTIONS.findall(text)
    total = a[-1] if a else "?"
    return ran, "%d ran, %d cached (%s actions)" % (ran, cached, total)


def sel_turbo_run(text):
    t = TURBO_TASKS.findall(text)
    c = TURBO_CACHED.findall(text)
    if not t or not c:
        return None, "? (no Tasks:/Cached: lines)"
    total, cached = int(c[-1][1]), int(c[-1][0])
    return total - cached, "%d ran, %d cached (%d tasks)" % (total - cached, cached, total)


# ---------------------------------------------------------------------------------------------
# set-up
# ---------------------------------------------------------------------------------------------

def git(args, cwd, env):
    return R.run_quiet(["git"] + GIT_ID + args, cwd=cwd, env=env)


def transitive_deps(graph, name):
    deps = {p["name"]: p["deps"] for p in graph["packages"]}
    seen, todo = set(), list(deps[name])
    while todo:
        d = todo.pop()
        if d not in seen:
            seen.add(d)
            todo.extend(deps[d])
    return seen


def ensure_turbo(a, env):
    """(turbo binary, bun binary, None) or (None, None, why not)"""
    turbo = os.environ.get("TURBO_BIN",
                           os.path.join(a.peers, "node_modules/@turbo/linux-64/bin/turbo"))
    if not os.access(turbo, os.X_OK) and not os.path.exists(a.peers) and a.install:
        setup = os.path.join(os.path.dirname(a.gen), "setup_peers.sh")
        log("no %s: installing the peers with %s (SKIP_BAZEL=1)" % (a.peers, setup))
        r = subprocess.run(["bash", setup], env=dict(env, PEERS=a.peers, SKIP_BAZEL="1"),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        log(r.stdout.decode(errors="replace")[-2000:])
        if r.returncode != 0:
            return None, None, "`%s` failed (exit %d): %s" % (
                setup, r.returncode, r.stdout.decode(errors="replace").strip()[-300:])
    if not os.access(turbo, os.X_OK):
        return None, None, "no turbo binary at %s (shared/bench/setup_peers.sh installs it)" % turbo
    bun = shutil.which("bun", path=env["PATH"])
    if not bun:
        return None, None, "turbo runs its tasks through bun, which is not on PATH (%s/bin)" % a.peers
    return turbo, bun, None


class Cmd:
    """One timed command: a tool, a case, an argv, a workspace and how to read its selection."""

    def __init__(self, case, tool, label, argv, cwd, selection, expect, prepare=None):
        self.case, self.tool, self.label, self.argv, self.cwd = case, tool, label, argv, cwd
        self.selection, self.expect, self.prepare = selection, expect, prepare
        self.samples, self.selected, self.failures = [], [], []


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packages", "-n", type=int, default=1000)
    ap.add_argument("--files", "-f", type=int, default=10)
    ap.add_argument("--deps", type=int, default=5, help="generator's -k (default 5)")
    ap.add_argument("--seed", type=int, default=1, help="generator's --seed (default 1)")
    ap.add_argument("--runs", type=int, default=5, help="timed rounds per case (default 5)")
    ap.add_argument("--jobs", "-j", type=int, default=2)
    ap.add_argument("--gen", default=os.path.join(REPO, "..", "shared", "bench", "gen_workspace.py"))
    ap.add_argument("--flow-bin", default=os.environ.get("FLOW_BIN",
                                                         os.path.join(REPO, "target/release/flow")))
    ap.add_argument("--peers", default=os.environ.get("PEERS", "/tmp/peers"))
    ap.add_argument("--no-install", dest="install", action="store_false",
                    help="do not run setup_peers.sh when turbo is missing")
    ap.add_argument("--no-plain", dest="plain", action="store_false",
                    help="leave out the context rows without --since / --affected")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--out", default=None, help="write the section into this markdown file")
    ap.add_argument("--json", default=None, help="also write every sample to this JSON file")
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    a.gen = os.path.abspath(a.gen)
    a.flow_bin = os.path.abspath(a.flow_bin)
    if not os.path.exists(a.gen):
        sys.exit("bench/since.py: no generator at %s (--gen)" % a.gen)
    if not os.access(a.flow_bin, os.X_OK):
        sys.exit("bench/since.py: no flow binary at %s (--flow-bin or FLOW_BIN; "
                 "cargo build --release --bin flow)" % a.flow_bin)

    started = time.time()
    load_start = os.getloadavg()[0]
    work = os.path.abspath(a.workdir) if a.workdir else tempfile.mkdtemp(prefix="flow-since-")
    os.makedirs(os.path.join(work, "home"), exist_ok=True)
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)
    env = dict(os.environ)
    for k in ("CI", "FLOW_CACHE_DIR", "MAKEFLAGS", "MFLAGS", "GITHUB_ACTIONS", "GITHUB_BASE_REF",
              "TURBO_SCM_HEAD", "FLOW_PROFILE"):
        env.pop(k, None)
    env.update({"HOME": os.path.join(work, "home"),
                "PATH": os.path.join(a.peers, "bin") + os.pathsep + env.get("PATH", ""),
                "TURBO_TELEMETRY_DISABLED": "1", "DO_NOT_TRACK": "1",
                "TURBO_NO_UPDATE_NOTIFIER": "1", "NO_COLOR": "1",
                # turbo run/ls --affected compare with this ref (default: main / origin/main);
                # flow ignores it. Every timed command runs with it.
                "TURBO_SCM_BASE": "HEAD^"})
    R.SERVER = R.ForkServer(env)

    turbo, bun, turbo_why = ensure_turbo(a, env)
    if turbo_why:
        log("turbo left out: " + turbo_why)

    # -- the two workspaces, commit 1, full builds ------------------------------------------
    n, f = a.packages, a.files
    gen_args = [sys.executable, a.gen, "-n", str(n), "-f", str(f), "-k", str(a.deps),
                "--seed", str(a.seed)]
    wss = {}
    for tool in ["flow"] + (["turbo"] if turbo else []):
        d = os.path.join(work, tool)
        R.rm_rf(d)
        extra = ["--tools", "flow"] if tool == "flow" else ["--tools", "turbo", "--turbo-pm", "bun"]
        R.run_quiet(gen_args + extra + ["-o", d], env=env)
        git(["init", "-q", "-b", "main"], d, env)
        git(["add", "-A"], d, env)
        git(["commit", "-qm", "commit 1: the generated workspace"], d, env)
        wss[tool] = d
    with open(os.path.join(wss["flow"], "graph.json")) as fh:
        graph = json.load(fh)
    leaf = graph["stats"]["leaf_package"]
    leaf_src = "packages/%s/%s" % (leaf, graph["packages"][-1]["srcs"][0])
    closure = transitive_deps(graph, leaf)
    exp_tasks = 2 + 2 * len(closure)  # the leaf's lint and test + lint and test of every dep
    log("workspaces in %s: %d packages x %d files; leaf %s depends on %d packages" % (
        work, n, f, leaf, len(closure)))

    j = str(a.jobs)
    full = {"flow": [a.flow_bin, "build", "//...", "-j", j]}
    if turbo:
        full["turbo"] = [turbo, "run", "test", "--concurrency=" + j, "--output-logs=none"]
    warm = {}
    for tool, argv in full.items():
        log("commit 1: full build with %s" % tool)
        s = R.run_timed(argv, wss[tool], env, os.path.join(logs, "%s-commit1.txt" % tool),
                        a.timeout)
        if s.rc != 0:
            sys.exit("bench/since.py: %s failed at commit 1:\n%s" % (
                tool, R.tail(os.path.join(logs, "%s-commit1.txt" % tool))))
        warm[tool] = s.wall

    checks = []
    if turbo:
        outs = []
        for p in (os.path.join(wss["flow"], "flow-out/packages/%s/out/test.txt" % leaf),
                  os.path.join(wss["turbo"], "packages/%s/out/test.txt" % leaf)):
            with open(p, "rb") as fh:
                outs.append(fh.read())
        checks.append("leaf `test` output after the commit-1 builds: %s" % (
            "identical in flow and turbo" if outs[0] == outs[1] else "DIFFERS between flow and turbo"))
        if outs[0] != outs[1]:
            checks.append("FAILED: leaf outputs differ")

    # -- commit 2 and its amendments --------------------------------------------------------
    with open(os.path.join(wss["flow"], leaf_src), "rb") as fh:
        original = fh.read()
    counter = [0]

    def new_edit():
        counter[0] += 1
        for d in wss.values():
            with open(os.path.join(d, leaf_src), "wb") as fh:
                fh.write(original + b"since edit %d\n" % counter[0])
            amend = ["--amend"] if counter[0] > 1 else []
            git(["commit", "-q", "-a", "-m", "commit 2: one leaf edit"] + amend, d, env)

    # -- the timed commands -----------------------------------------------------------------
    fl, tu = wss["flow"], wss.get("turbo")
    cmds = [Cmd("affected", "flow", "flow affected --since HEAD^",
                [a.flow_bin, "affected", "--since", "HEAD^"], fl, sel_flow_affected, 2)]
    if turbo:
        cmds += [
            Cmd("affected", "turbo", "turbo ls --affected",
                [turbo, "ls", "--affected"], tu, sel_turbo_ls, 1),
            Cmd("affected", "turbo", "turbo query affected --packages --base HEAD^ --head HEAD",
                [turbo, "query", "affected", "--packages", "--base", "HEAD^", "--head", "HEAD"],
                tu, sel_turbo_query, 1),
            Cmd("affected", "turbo", "turbo query affected --base HEAD^ --head HEAD",
                [turbo, "query", "affected", "--base", "HEAD^", "--head", "HEAD"],
                tu, sel_turbo_query, exp_tasks)]
    cmds.append(Cmd("build", "flow", "flow build --since HEAD^ -j %s" % j,
                    [a.flow_bin, "build", "--since", "HEAD^", "-j", j], fl, sel_flow_build, 2))
    if turbo:
        cmds.append(Cmd("build", "turbo",
                        "turbo run test --affected --concurrency=%s --output-logs=none" % j,
                        [turbo, "run", "test", "--affected", "--concurrency=" + j,
                         "--output-logs=none"], tu, sel_turbo_run, 2))
    if a.plain:
        cmds.append(Cmd("plain", "flow", "flow build //... -j %s" % j, full["flow"], fl,
                        sel_flow_build, 2))
        if turbo:
            cmds.append(Cmd("plain", "turbo",
                            "turbo run test --concurrency=%s --output-logs=none" % j,
                            full["turbo"], tu, sel_turbo_run, 2))

    def run_one(c, tag, timed):
        path = os.path.join(logs, "%s-%d-%s-%s.txt" % (c.case, cmds.index(c), c.tool, tag))
        if c.prepare:
            c.prepare()
        s = R.run_timed(c.argv, c.cwd, env, path, a.timeout)
        text = R.read(path)
        count, what = c.selection(text)
        if s.rc != 0 or s.timed_out:
            c.failures.append("%s run %s: exit %d%s\n%s" % (c.label, tag, s.rc,
                                                            " (timed out)" if s.timed_out else "",
                                                            R.tail(path)))
        elif count != c.expect:
            c.failures.append("%s run %s: selected/ran %s, expected %d (%s)" % (
                c.label, tag, count, c.expect, what))
        if timed:
            c.samples.append(s)
            c.selected.append(what)
        else:
            c.warmup = (s, what)
        log("  %-62s %s  %s%s" % (c.label, R.fmt_s(s.wall), what,
                                  "" if timed else "  (warm-up)"))

    for case in CASES:
        group = [c for c in cmds if c.case == case]
        if not group:
            continue
        log("case %s: warm-up" % case)
        new_edit()
        for c in group:
            run_one(c, "warmup", False)
        for r in range(a.runs):
            log("case %s: round %d" % (case, r + 1))
            new_edit()
            for c in (group if r % 2 == 0 else list(reversed(group))):
                run_one(c, str(r + 1), True)

    # one profiled flow build --since (untimed), to show where flow's time goes
    new_edit()
    prof_env = dict(env, FLOW_PROFILE="1")
    r = subprocess.run([a.flow_bin, "build", "--since", "HEAD^", "-j", j], cwd=fl, env=prof_env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    profile = [ln for ln in r.stdout.decode(errors="replace").splitlines()
               if ln.startswith("flow profile:") or ln.startswith("flow: ")]

    floor = R.run_timed(["true"], work, env, os.path.join(logs, "true.txt"), 30)
    finished = time.time()
    load_end = os.getloadavg()[0]
    R.SERVER.close()

    # -- versions and the report ------------------------------------------------------------
    versions = {"flow": "%s (`%s`, modified %s UTC)" % (
        R.first_line([a.flow_bin, "--version"]), a.flow_bin,
        datetime.datetime.utcfromtimestamp(os.path.getmtime(a.flow_bin)).strftime("%Y-%m-%d %H:%M"))}
    if turbo:
        versions["turbo"] = "%s (`%s`); tasks through bun %s" % (
            R.first_line([turbo, "--version"]), turbo.replace(a.peers, "$PEERS"),
            R.first_line([bun, "--version"]))
    versions["git"] = R.first_line(["git", "--version"])
    versions["python"] = "Python " + platform.python_version()
    repo_commit = R.first_line(["git", "-C", REPO, "describe", "--always", "--dirty"])
    machine = R.machine_info()

    failures = [x for c in cmds for x in c.failures] + [x for x in checks if x.startswith("FAILED")]
    md = report(a, cmds, machine, versions, repo_commit, load_start, load_end, started, finished,
                floor, graph, leaf, closure, exp_tasks, warm, checks, failures, turbo_why, profile)
    print(md)
    if a.out:
        R.write_section(a.out, SECTION, md)
        log("wrote the section into %s" % a.out)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump([{"case": c.case, "tool": c.tool, "command": c.label,
                        "wall": [s.wall for s in c.samples], "cpu": [s.cpu for s in c.samples],
                        "peak_mib": [s.peak_mib for s in c.samples], "selected": c.selected}
                       for c in cmds], fh, indent=1)
    if a.keep or a.workdir:
        log("kept %s" % work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        log("FAILED checks:\n" + "\n".join(failures))
        return 1
    return 0


def report(a, cmds, machine, versions, repo_commit, load_start, load_end, started, finished,
           floor, graph, leaf, closure, exp_tasks, warm, checks, failures, turbo_why, profile):
    st = graph["stats"]
    out = []
    w = out.append
    w(SECTION)
    w("")
    w("Written by `bench/since.py` (issue 17's benchmark; how it works: the script's docstring and "
      "[README.md](README.md)). %s UTC." % datetime.datetime.utcfromtimestamp(started).strftime(
          "%Y-%m-%d %H:%M"))
    cmdline = "python3 bench/since.py --packages %d --files %d --runs %d" % (
        a.packages, a.files, a.runs)
    w("")
    w("Command: `%s` (flow binary: `FLOW_BIN`/`--flow-bin`). Repository at %s." % (
        cmdline, repo_commit))
    w("")
    w("* Machine: `%s`; %s, %s cores, %s RAM." % (machine["uname"], machine["cpu"],
                                                    machine["cores"], machine["mem"]))
    w("* Load average (1 min) at the start: %.2f, at the end: %.2f; run took %.0f s. Timer floor "
      "(`true`): %s wall, %.1f MiB peak RSS." % (load_start, load_end, finished - started,
                                                 R.fmt_s(floor.wall), floor.peak_mib))
    for k, v in versions.items():
        w("* %s: %s" % (k, v))
    if turbo_why:
        w("* **turbo could not be run: %s.** Its rows are missing." % turbo_why)
    w("* Workload: `gen_workspace.py -n %d -f %d -k %d --seed %d` (flow: `--tools flow`; turbo: "
      "`--tools turbo --turbo-pm bun`): %d packages, %d targets, %d dependency edges. The leaf, "
      "`%s`, depends transitively on %d packages; the edit appends a new line to its `%s`." % (
          a.packages, a.files, a.deps, a.seed, a.packages, st["targets"], st["edges"], leaf,
          len(closure), graph["packages"][-1]["srcs"][0]))
    w("* Commit 1 built in full first (untimed: flow %s, turbo %s). Before every run of every case "
      "commit 2 (the leaf edit) is amended with a line no earlier run saw, so HEAD^ is always the "
      "built commit 1 and the leaf's 2 actions really run each round. `TURBO_SCM_BASE=HEAD^` is set "
      "for every command. Parallelism %d." % (
          R.fmt_s(warm.get("flow")), R.fmt_s(warm.get("turbo")), a.jobs))
    w("")
    w("Wall time, median [min – max] of %d round(s) after one warm-up, commands alternating (the "
      "order reversed every other round); ratio = median(flow) / median(turbo command) [range of "
      "the per-round ratios]; below 1: flow is faster. CPU (user+sys of the tree) and peak RSS "
      "(largest process) are medians." % a.runs)
    w("")
    w("| case | timed command (workspace root) | wall | ratio flow / this | cpu | peak RSS | "
      "selected (every timed run) |")
    w("|---|---|---|---|---|---|---|")
    titles = {"affected": "affected set", "build": "build",
              "plain": "build, no `--since` / `--affected` (context)"}
    for case in CASES:
        group = [c for c in cmds if c.case == case and c.samples]
        flow = next((c for c in group if c.tool == "flow"), None)
        for c in group:
            walls = [s.wall for s in c.samples]
            med, lo, hi = R.med_min_max(walls)
            if c.tool == "flow" or flow is None:
                ratio = "–"
            else:
                fw = [s.wall for s in flow.samples]
                pairs = [x / y for x, y in zip(fw, walls)]
                ratio = "**%.2f** [%.2f – %.2f]" % (statistics.median(fw) / med, min(pairs),
                                                   max(pairs))
            sel = sorted(set(c.selected))
            w("| %s | `%s` | **%s** [%s – %s] | %s | %s | %.0f MiB | %s |" % (
                titles[case], c.label, R.fmt_s(med), R.fmt_s(lo), R.fmt_s(hi), ratio,
                R.fmt_s(statistics.median(s.cpu for s in c.samples)),
                statistics.median(s.peak_mib for s in c.samples), "; ".join(sel)))
    w("")
    w("Expected selections: the leaf's 2 targets/tasks are affected; a build runs exactly those 2 "
      "and finds the %d lint and test tasks of the leaf's %d transitive dependencies in the cache "
      "(%d in all)." % (exp_tasks - 2, len(closure), exp_tasks))
    w("")
    w("Checks: " + ("; ".join(checks) + "; " if checks else "") +
      ("**%d failed**:" % len(failures) if failures else "every timed run selected and ran what "
       "was expected."))
    for x in failures:
        w("")
        w("    " + x.replace("\n", "\n    "))
    if profile:
        w("")
        w("One more (untimed) `FLOW_PROFILE=1 flow build --since HEAD^` after a new edit:")
        w("")
        w("```")
        out.extend(profile)
        w("```")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
