#!/usr/bin/env python3
"""Time flow's cold build and restore against Ninja and against the file system's floor.

  bench/floor.py [--packages 1000 --files 10] [--runs 7] [--flow-bin PATH] [--old-flow PATH]
                 [--out bench/RESULTS.md]

The workload is the shared generator's (`gen_workspace.py -k 5 --seed 1`): N packages, each with
a `lint` action (`cat` of its F sources) and a `test` action (`cksum` of its lint output and its
dependencies' test outputs), 2N actions and 2N output files.

What is timed, each a whole process started by bench/run.py's fork-server timer (wall from fork
to reaping; CPU of the tree), `sync` run before every timed run so that no run pays for the
write-back of the one before:

  cold      flow        `flow build //... -j 2` after `rm -rf flow-out .flow`
            old flow    the same with --old-flow's binary (an A/B)
            ninja       `ninja -j2 --quiet` after deleting every `packages/*/out/` directory,
                        `.ninja_log` and `.ninja_deps` (ninja creates the directories again)
            floor       the cold floor: the same Ninja build, then every output written once
                        more, into a tree of the same shape (`floor-out/packages/P/out/X`,
                        directories created as needed). A build cache must hold each output
                        once besides the one the build leaves in place, so this is what the
                        disk must do at the least: Ninja's work plus one more write of every
                        output.
  restore   flow        `flow build //... -j 2` after `rm -rf flow-out` (everything cached)
            old flow    the same with --old-flow's binary
            floor       the restore floor: creating the tree flow's restore creates (every
                        directory and file under `flow-out/` after a build, with its bytes and
                        mode), by a program that holds all of it in memory (one read of a
                        packed file), at the same place: `flow-out/` of flow's workspace, after
                        the same `rm -rf flow-out`.

Every tool works in the same workspace (generated with `--tools flow,ninja`: flow writes under
`flow-out/`, Ninja under `packages/*/out/`, the cold floor's copy under `floor-out/`), because
the place matters: on this machine's ext4 (no journal) creating an inode skips, one by one, the
free inodes of its block group that were deleted in the last 30 s, so the same tree created in
a fresh directory elsewhere took a tenth of the time, and two copies of one workspace in two
directories gave the same binary different times.

The floor programs are Python (`python3 -I -S`, about 10 ms to start); each is one process,
timed like the build tools. Each scenario: one untimed warm-up of every command, then --runs
rounds, each running every command once, the order reversed every other round. flow's summary
line is checked after every run (cold: every action ran; restore: none ran, all cached), and
the outputs of flow, Ninja and the floors are compared once (byte-identical `test.txt` of every
package).

The report is a markdown section, "Cold build and restore against the file system's floor",
printed to stdout and, with --out FILE, written into FILE (replacing the section of that name).

Python 3 standard library only (it imports bench/run.py for the timer). Not a test.
"""

import argparse
import datetime
import marshal
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import run as R  # noqa: E402  bench/run.py: ForkServer, fmt_s, machine_info, write_section

SECTION = "## Cold build and restore against the file system's floor"

# The cold floor: Ninja's build, then every output written once more into `floor-out/`.
# argv: ninja-binary jobs workspace outputs-list-file
COLD_FLOOR = r"""
import os, sys
ninja, jobs, ws, listing = sys.argv[1:5]
pid = os.fork()
if pid == 0:
    os.chdir(ws)
    os.execv(ninja, [ninja, "-j" + jobs, "--quiet"])
_, status = os.waitpid(pid, 0)
if os.waitstatus_to_exitcode(status) != 0:
    sys.exit("ninja failed")
made = set()
with open(listing) as fh:
    rels = fh.read().split("\n")
for rel in rels:
    if not rel:
        continue
    with open(os.path.join(ws, rel), "rb") as fh:
        data = fh.read()
    dest = os.path.join(ws, "floor-out", rel)
    parent = os.path.dirname(dest)
    if parent not in made:
        os.makedirs(parent, exist_ok=True)
        made.add(parent)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data)
    os.close(fd)
"""

# The restore floor: the directories and files of a packed tree, created under `dest`.
# argv: pack-file dest
RESTORE_FLOOR = r"""
import marshal, os, sys
pack, dest = sys.argv[1:3]
with open(pack, "rb") as fh:
    dirs, files = marshal.load(fh)
os.mkdir(dest)
for d in dirs:
    os.mkdir(os.path.join(dest, d))
for rel, mode, data in files:
    fd = os.open(os.path.join(dest, rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.write(fd, data)
    os.close(fd)
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def pack_tree(root, pack):
    """Writes (directories, [(file, mode, bytes)]) of the tree at `root` to `pack` (marshal);
    returns the counts. Directories come parents first."""
    dirs, files = [], []
    for d, subdirs, names in os.walk(root):
        subdirs.sort()
        rel = os.path.relpath(d, root)
        if rel != ".":
            dirs.append(rel)
        for n in sorted(names):
            p = os.path.join(d, n)
            st = os.lstat(p)
            with open(p, "rb") as fh:
                files.append((os.path.relpath(p, root), st.st_mode & 0o777, fh.read()))
    with open(pack, "wb") as fh:
        marshal.dump((dirs, files), fh)
    return len(dirs), len(files)


class Cmd:
    """One timed command of one scenario."""

    def __init__(self, name, argv, cwd, prepare, check):
        self.name, self.argv, self.cwd, self.prepare, self.check = name, argv, cwd, prepare, check
        self.samples, self.failures = [], []

    def run(self, logs, timed=True):
        self.prepare()
        os.sync()
        log_path = os.path.join(logs, "%s.log" % self.name.replace(" ", "-"))
        s = R.run_timed(self.argv, self.cwd, None, log_path, 1800)
        why = self.check(s, log_path)
        if why:
            self.failures.append(why)
            log("  %s: %s" % (self.name, why))
        if timed:
            self.samples.append(s)
        return s


def flow_check(expect_ran, expect_cached):
    def check(s, log_path):
        if s.rc != 0:
            return "exit %d (%s)" % (s.rc, R.tail(log_path, 3))
        counts = R.flow_counts(log_path)
        if counts != (expect_ran, expect_cached):
            return "expected %d ran, %d cached; the summary says %s" % (
                expect_ran, expect_cached, counts)
        return None
    return check


def exit_check(s, log_path):
    return None if s.rc == 0 else "exit %d (%s)" % (s.rc, R.tail(log_path, 3))


def med(samples, field="wall"):
    return statistics.median(getattr(s, field) for s in samples)


def ratio_cell(a, b):
    return R.cell_ratio(a.samples, b.samples)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packages", type=int, default=1000)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--flow-bin", default=os.path.join(REPO, "target", "release", "flow"))
    ap.add_argument("--old-flow", help="a previous flow binary, timed beside (an A/B)")
    ap.add_argument("--gen", default=os.path.join(REPO, "..", "shared", "bench",
                                                  "gen_workspace.py"))
    ap.add_argument("--workdir", help="where the workspaces go (default: a new temp directory)")
    ap.add_argument("--keep", action="store_true", help="keep the workspaces")
    ap.add_argument("--out", help="write the section into this file (e.g. bench/RESULTS.md)")
    a = ap.parse_args()

    ninja = shutil.which("ninja")
    if not ninja:
        sys.exit("ninja is not on PATH (apt-get install ninja-build)")
    work = a.workdir or tempfile.mkdtemp(prefix="flow-floor-")
    os.makedirs(work, exist_ok=True)
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)
    env = dict(os.environ, CI="1")
    env.pop("FLOW_CACHE_DIR", None)
    R.SERVER = R.ForkServer(env)
    started = time.time()
    load_start = os.getloadavg()[0]
    n, f, j = a.packages, a.files, str(a.jobs)
    actions = 2 * n

    def gen(name, tools):
        d = os.path.join(work, name)
        R.rm_rf(d)
        R.run_quiet([sys.executable, a.gen, "-n", str(n), "-f", str(f), "-k", "5", "--seed", "1",
                     "--tools", tools, "-o", d])
        return d

    flows = {"flow": os.path.abspath(a.flow_bin)}
    if a.old_flow:
        flows["old flow"] = os.path.abspath(a.old_flow)
    # One workspace for every tool (flow writes under flow-out/, Ninja under packages/*/out/):
    # on ext4 the cost of creating an inode depends on what was deleted near it lately, so
    # tools timed in separate directories would be timed on different ground.
    ws_dir = gen("ws", "flow,ninja")
    ws = {name: ws_dir for name in flows}
    nws = ws_dir
    packages = sorted(os.listdir(os.path.join(nws, "packages")))
    outputs = ["packages/%s/out/%s" % (p, o) for p in packages for o in ("lint.txt", "test.txt")]
    listing = os.path.join(work, "outputs.txt")
    with open(listing, "w") as fh:
        fh.write("\n".join(outputs) + "\n")

    def clean_ninja():
        for p in packages:
            R.rm_rf(os.path.join(nws, "packages", p, "out"))
        for name in (".ninja_log", ".ninja_deps"):
            R.rm_f(os.path.join(nws, name))
        R.rm_rf(os.path.join(nws, "floor-out"))

    def flow_cmd(name, prepare, check):
        return Cmd(name, [flows[name], "build", "//...", "-j", j], ws[name], prepare, check)

    def cold_prepare(d):
        return lambda: (R.rm_rf(os.path.join(d, "flow-out")), R.rm_rf(os.path.join(d, ".flow")))

    cold = [flow_cmd(name, cold_prepare(ws[name]), flow_check(actions, 0)) for name in flows]
    cold.append(Cmd("ninja", [ninja, "-j" + j, "--quiet"], nws, clean_ninja, exit_check))
    cold.append(Cmd("floor", [sys.executable, "-I", "-S", "-c", COLD_FLOOR, ninja, j, nws,
                              listing], nws, clean_ninja, exit_check))

    # The restore floor needs the tree a build leaves: packed from flow's own flow-out/.
    cold_prepare(ws_dir)()
    R.run_quiet([flows["flow"], "build", "//...", "-j", j], cwd=ws_dir, env=env)
    pack = os.path.join(work, "flow-out.pack")
    ndirs, nfiles = pack_tree(os.path.join(ws["flow"], "flow-out"), pack)
    floor_dest = os.path.join(ws["flow"], "flow-out")

    def restore_prepare(d):
        return lambda: R.rm_rf(os.path.join(d, "flow-out"))

    restore = [flow_cmd(name, restore_prepare(ws[name]), flow_check(0, actions))
               for name in flows]
    restore.append(Cmd("floor", [sys.executable, "-I", "-S", "-c", RESTORE_FLOOR, pack,
                                 floor_dest], work, restore_prepare(ws["flow"]), exit_check))

    for title, cmds in (("cold", cold), ("restore", restore)):
        log("%s: warm-up" % title)
        for c in cmds:
            c.run(logs, timed=False)
        for i in range(a.runs):
            order = cmds if i % 2 == 0 else cmds[::-1]
            for c in order:
                s = c.run(logs)
                log("  %s %d %-8s %s" % (title, i + 1, c.name, R.fmt_s(s.wall)))

    # Same bytes everywhere: each package's test output.
    same = True
    for p in packages:
        want = open(os.path.join(nws, "packages", p, "out", "test.txt"), "rb").read()
        for got in [os.path.join(ws[name], "flow-out", "packages", p, "out", "test.txt")
                    for name in flows] + [os.path.join(nws, "floor-out", "packages", p, "out",
                                                       "test.txt")]:
            if open(got, "rb").read() != want:
                same = False
                log("differs: %s" % got)
    R.SERVER.close()
    finished = time.time()

    md = report(a, cold, restore, ndirs, nfiles, same, started, finished, load_start, flows)
    print(md)
    if a.out:
        R.write_section(a.out, SECTION, md)
    if not a.keep and not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    failed = [c for c in cold + restore if c.failures] or not same
    return 1 if failed else 0


def report(a, cold, restore, ndirs, nfiles, same, started, finished, load_start, flows):
    out = []
    w = out.append
    by = {("cold", c.name): c for c in cold}
    by.update({("restore", c.name): c for c in restore})
    stamp = datetime.datetime.fromtimestamp(started, datetime.timezone.utc)
    w(SECTION)
    w("")
    w("Written by `bench/floor.py` (issue 21; how it works: the script's docstring). %s UTC." %
      stamp.strftime("%Y-%m-%d %H:%M"))
    w("")
    commit = R.first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    w("Command: `bench/floor.py --packages %d --files %d --runs %d%s` at commit %s; %d "
      "packages × %d files, %d actions, flow-out/ holds %d directories and %d files. "
      "Load average (1 min) at the start %.2f, at the end %.2f; %d s in all." % (
          a.packages, a.files, a.runs, " --old-flow OLD" if a.old_flow else "", commit,
          a.packages, a.files, 2 * a.packages, ndirs, nfiles, load_start, os.getloadavg()[0],
          finished - started))
    w("")
    w("Wall time, median [min – max] of %d alternating runs, `sync` before each:" % a.runs)
    w("")
    w("| scenario | " + " | ".join(c.name for c in cold) + " |")
    w("|---|" + "---|" * len(cold) + "")
    for title, cmds in (("cold", cold), ("restore", restore)):
        cells = []
        for c in cold:
            x = by.get((title, c.name))
            cells.append(R.cell_wall(x.samples) if x and x.samples else "–")
        w("| %s | %s |" % (title, " | ".join(cells)))
    w("")
    w("CPU (user + sys of the tree), median:")
    w("")
    w("| scenario | " + " | ".join(c.name for c in cold) + " |")
    w("|---|" + "---|" * len(cold) + "")
    for title in ("cold", "restore"):
        cells = []
        for c in cold:
            x = by.get((title, c.name))
            cells.append(R.fmt_s(med(x.samples, "cpu")) if x and x.samples else "–")
        w("| %s | %s |" % (title, " | ".join(cells)))
    w("")
    w("Ratios, median / median [min – max of run i / run i]:")
    w("")
    w("| ratio | measured | target |")
    w("|---|---|---|")
    f = by[("cold", "flow")]
    w("| cold: flow / ninja | %s | ≤ 1.4 |" % ratio_cell(f, by[("cold", "ninja")]))
    w("| cold: flow / cold floor | %s | ≤ 1.2 |" % ratio_cell(f, by[("cold", "floor")]))
    w("| cold: cold floor / ninja | %s | |" % ratio_cell(by[("cold", "floor")],
                                                       by[("cold", "ninja")]))
    w("| restore: flow / restore floor | %s | ≤ 1.3 |" % ratio_cell(
        by[("restore", "flow")], by[("restore", "floor")]))
    if "old flow" in flows:
        w("| cold: flow / old flow | %s | ≤ 1 |" % ratio_cell(f, by[("cold", "old flow")]))
        w("| restore: flow / old flow | %s | ≤ 1 |" % ratio_cell(
            by[("restore", "flow")], by[("restore", "old flow")]))
    w("")
    checks = [(c.name, t, c.failures) for t, cmds in (("cold", cold), ("restore", restore))
              for c in cmds if c.failures]
    w("Checks: every package's `test.txt` byte-identical across flow, Ninja and the floors: %s. "
      "Summary lines: %s." % ("yes" if same else "**no**",
                             "as expected in every run" if not checks else "; ".join(
                                 "**%s %s: %s**" % (t, n, fs[0]) for n, t, fs in checks)))
    w("")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
