#!/usr/bin/env python3
"""A/B of two flow binaries on the shared 1,000 x 10 workload, scenario by scenario.

  bench/ab.py OLD_FLOW NEW_FLOW [--packages 1000] [--files 10] [--runs 11]
              [--scenarios noop,leaf-edit,root-edit,early-cutoff]
              [--gen ../shared/bench/gen_workspace.py]

Generates one workspace per binary with the shared generator (same seed, byte-identical
sources), builds each once, then alternates timed runs between the binaries (A B, B A, ...):
no-op (`flow build //...` with nothing changed), leaf edit (a line appended to one source of
the leaf package), root edit (a line appended to a source of the root package: about half the
actions run) and early cutoff (a byte moved between two sources of the root package: its lint
runs, its output is the same, nothing else runs; bench/run.py's mutation). Every appended line
is new. Each timed run is one child process, wall time from spawn to exit; the summary line's
count of actions run is checked to be the same for both binaries. Prints the medians and the
ratio new / old. Cold builds and restores: bench/floor.py --old-flow. Python 3 standard library
only.
"""

import argparse
import json
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

import run as R  # noqa: E402  bench/run.py: the summary line, the early-cutoff mutation


def run(binary, ws):
    env = dict(os.environ, CI="1")
    env.pop("FLOW_CACHE_DIR", None)
    t = time.perf_counter()
    out = subprocess.run([binary, "-C", ws, "build", "//...", "-j", "2"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    took = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit("%s failed in %s:\n%s%s" % (binary, ws, out.stdout.decode(), out.stderr.decode()))
    m = None
    for m in R.FLOW_SUMMARY.finditer(out.stdout.decode(errors="replace")):
        pass
    return took, (int(m.group(2)) if m else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--packages", type=int, default=1000)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--scenarios", default="noop,leaf-edit,root-edit,early-cutoff")
    ap.add_argument("--gen", default=os.path.join(REPO, "..", "shared", "bench", "gen_workspace.py"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="flow-ab-")
    try:
        wss = {}
        for name in ("old", "new"):
            ws = os.path.join(tmp, name)
            subprocess.run([sys.executable, args.gen, "-n", str(args.packages), "-f", str(args.files),
                            "--tools", "flow", "--out", ws], check=True, stdout=subprocess.DEVNULL)
            wss[name] = ws
        graph = json.load(open(os.path.join(wss["old"], "graph.json")))
        trees = {name: R.Workspace(wss[name], graph) for name in wss}
        bins = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
        for name in ("old", "new"):
            run(bins[name], wss[name])
            run(bins[name], wss[name])
        scenarios = args.scenarios.split(",")
        line = iter(range(1, 1 << 30))

        def mutate(scenario, name):
            t = trees[name]
            if scenario == "leaf-edit":
                R.append_line(t.src(t.leaf, 0), "// edit %d\n" % next(line))
            elif scenario == "root-edit":
                R.append_line(t.src(t.root, 0), "// edit %d\n" % next(line))
            elif scenario == "early-cutoff":
                R.move_boundary_byte(t)

        times = {(s, n): [] for s in scenarios for n in ("old", "new")}
        ran = {(s, n): set() for s in scenarios for n in ("old", "new")}
        order = ["old", "new"]
        for i in range(args.runs):
            for scenario in scenarios:
                for name in (order if i % 2 == 0 else order[::-1]):
                    mutate(scenario, name)
                    took, count = run(bins[name], wss[name])
                    times[(scenario, name)].append(took)
                    ran[(scenario, name)].add(count)
        print("| scenario | actions run | old median (ms) | new median (ms) | new / old |")
        print("|---|---|---|---|---|")
        bad = False
        for s in scenarios:
            old = statistics.median(times[(s, "old")]) * 1000
            new = statistics.median(times[(s, "new")]) * 1000
            counts = "%s / %s" % (sorted(ran[(s, "old")]), sorted(ran[(s, "new")]))
            bad |= ran[(s, "old")] != ran[(s, "new")]
            print("| %s | %s | %.1f | %.1f | %.2f |" % (s, counts, old, new, new / old))
        print("(%d alternating runs each, %d x %d, load %s)" % (
            args.runs, args.packages, args.files, os.getloadavg()))
        if bad:
            sys.exit("the binaries ran different numbers of actions")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
