"""The technical-debt ratio, as SonarQube defines it: remediation / development cost.

    python3 -m quality.tech_debt --out FILE.json REPORT...

REPORTs are ruff JSON reports (`ruff check --output-format json`: each finding costs
MINUTES_PER_FINDING to fix) and radon raw JSON reports (`radon raw -j`: their source
lines of code, at MINUTES_PER_LINE each to write); other JSON files (radon's cc and mi
reports beside them) are left alone, and no report of either kind is an error. The
output is a metrics.json for a gate: `tech_debt_percent`, `tech_debt_minutes`, `sloc`.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any, List, Optional, Tuple

MINUTES_PER_FINDING = 5
MINUTES_PER_LINE = 30


def totals(reports: List[Any]) -> Tuple[int, int]:
    """(findings, source lines) over the ruff and radon raw reports among `reports`."""
    found = lines = ruff = raw = 0
    for report in reports:
        if isinstance(report, list):
            found, ruff = found + len(report), ruff + 1
        elif (
            isinstance(report, dict)
            and report
            and all(isinstance(v, dict) and "sloc" in v for v in report.values())
        ):
            lines, raw = lines + sum(v["sloc"] for v in report.values()), raw + 1
    if not ruff or not raw:
        raise ValueError(f"{ruff} ruff and {raw} radon raw report(s): need both")
    return found, lines


def main(argv: Optional[List[str]] = None) -> int:
    """Writes the metrics; 2 when a report is of the wrong shape."""
    parser = argparse.ArgumentParser(prog="quality.tech_debt")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("reports", type=Path, nargs="+")
    args = parser.parse_args(argv)
    try:
        found, lines = totals(
            [json.loads(p.read_text(encoding="utf-8")) for p in args.reports]
        )
    except ValueError as error:
        print(f"quality.tech_debt: {error}", file=sys.stderr)
        return 2
    debt = found * MINUTES_PER_FINDING
    ratio = 100.0 * debt / (lines * MINUTES_PER_LINE) if lines else 0.0
    metrics = {"tech_debt_percent": round(ratio, 3), "tech_debt_minutes": debt}
    metrics["sloc"] = lines
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"{found} finding(s) in {lines} source lines: {ratio:.2f}% technical debt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
