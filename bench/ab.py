#!/usr/bin/env python3
"""A/B of two flow binaries on the shared 1,000 x 10 workload: no-op and leaf edit.

  bench/ab.py OLD_FLOW NEW_FLOW [--packages 1000] [--files 10] [--runs 11]
              [--gen ../shared/bench/gen_workspace.py]

Generates one workspace per binary with the shared generator (same seed, byte-identical
sources), builds each once, then alternates timed runs between the binaries (A B, B A, ...):
no-op (`flow build //...` with nothing changed) and leaf edit (a line appended to one source
of the leaf package, then `flow build //...`). Each timed run is one child process, wall time
from spawn to exit. Prints the medians and the ratio new / old. Python 3 standard library only.
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


def run(binary, ws):
    env = dict(os.environ, CI="1")
    env.pop("FLOW_CACHE_DIR", None)
    t = time.perf_counter()
    out = subprocess.run([binary, "-C", ws, "build", "//...", "-j", "2"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    took = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit("%s failed in %s:\n%s%s" % (binary, ws, out.stdout.decode(), out.stderr.decode()))
    return took


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--packages", type=int, default=1000)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--runs", type=int, default=11)
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
        leaf = graph["stats"]["leaf_package"]
        leaf_src = graph["packages"][0]["srcs"][0]
        bins = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
        for name in ("old", "new"):
            run(bins[name], wss[name])
            run(bins[name], wss[name])
        times = {(s, n): [] for s in ("noop", "leaf-edit") for n in ("old", "new")}
        order = ["old", "new"]
        for i in range(args.runs):
            for name in (order if i % 2 == 0 else order[::-1]):
                times[("noop", name)].append(run(bins[name], wss[name]))
            for name in (order if i % 2 == 0 else order[::-1]):
                src = os.path.join(wss[name], "packages", leaf, leaf_src)
                with open(src, "a") as fh:
                    fh.write("// edit %d\n" % i)
                times[("leaf-edit", name)].append(run(bins[name], wss[name]))
        print("| scenario | old median (ms) | new median (ms) | new / old |")
        print("|---|---|---|---|")
        for s in ("noop", "leaf-edit"):
            old = statistics.median(times[(s, "old")]) * 1000
            new = statistics.median(times[(s, "new")]) * 1000
            print("| %s | %.1f | %.1f | %.2f |" % (s, old, new, new / old))
        print("(%d alternating runs each, %d x %d, load %s)" % (
            args.runs, args.packages, args.files, os.getloadavg()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
