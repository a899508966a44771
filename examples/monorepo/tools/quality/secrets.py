"""Secrets against a baseline: detect-secrets' scan in, SARIF out.

    python3 -m quality.secrets SCAN.json [--baseline .secrets.baseline] --out FILE.sarif

A secret the scan finds is accepted when the baseline lists it (same file and hashed
secret) and its audit did not mark it as a real secret (`"is_secret": true`); every
other one is a finding (high severity), printed as `file:line`, and the exit code is 1.
Update the baseline after an audit with `detect-secrets scan FILES > .secrets.baseline`
and `detect-secrets audit .secrets.baseline`, in the package directory.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from quality import sarif

RULE = "secret-not-in-baseline"


def _load(path: Optional[Path]) -> Dict[str, List[Dict[str, Any]]]:
    if path is None:
        return {}
    results: Dict[str, List[Dict[str, Any]]] = json.loads(
        path.read_text(encoding="utf-8")
    ).get("results", {})
    return results


def findings(
    scan: Dict[str, List[Dict[str, Any]]], baseline: Dict[str, List[Dict[str, Any]]]
) -> List[Dict[str, Any]]:
    """The SARIF results of the secrets in `scan` that `baseline` does not accept."""
    accepted: Set[Tuple[str, str]] = {
        (name, entry["hashed_secret"])
        for name, entries in baseline.items()
        for entry in entries
        if entry.get("is_secret") is not True
    }
    out = []
    for name, entries in sorted(scan.items()):
        for entry in entries:
            if (name, entry["hashed_secret"]) in accepted:
                continue
            message = f"{entry['type']}: a secret that the baseline does not accept"
            out.append(sarif.result(RULE, message, name, entry.get("line_number", 1)))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """Writes the SARIF report; 1 when a secret is not accepted."""
    parser = argparse.ArgumentParser(prog="quality.secrets")
    parser.add_argument("scan", type=Path)
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    scan = _load(args.scan)
    results = findings(scan, _load(args.baseline))
    rules = [sarif.rule(RULE, "a committed secret (detect-secrets)", "8.0")]
    sarif.write(args.out, "detect-secrets", rules, results)
    sarif.show(results)
    return 1 if results else 0


if __name__ == "__main__":
    sys.exit(main())
