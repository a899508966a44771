"""Writing SARIF 2.1.0, the format code scanners share (GitHub, flow's gates)."""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def rule(rule_id: str, text: str, severity: Optional[str] = None) -> Dict[str, Any]:
    """A rule: its id, its text and, for a security rule, its CVSS-like severity."""
    entry: Dict[str, Any] = {"id": rule_id, "shortDescription": {"text": text}}
    if severity is not None:
        entry["properties"] = {"security-severity": severity}
    return entry


def result(rule_id: str, message: str, path: str, line: int = 1) -> Dict[str, Any]:
    """A finding of `rule_id` at `path`:`line`, at level `error`."""
    return {
        "ruleId": rule_id,
        "level": "error",
        "message": {"text": message},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": path},
                    "region": {"startLine": max(line, 1)},
                }
            }
        ],
    }


def write(
    out: Path, tool: str, rules: List[Dict[str, Any]], results: List[Dict[str, Any]]
) -> None:
    """Writes one run of `tool` to `out`."""
    document = {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": tool, "rules": rules}},
                "results": results,
            }
        ],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def show(results: List[Dict[str, Any]]) -> None:
    """Prints each result as `path:line: rule: message`, as compilers do."""
    for found in results:
        place = found["locations"][0]["physicalLocation"]
        print(
            f"{place['artifactLocation']['uri']}:{place['region']['startLine']}: "
            f"{found['ruleId']}: {found['message']['text']}"
        )
