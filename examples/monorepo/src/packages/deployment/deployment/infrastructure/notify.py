"""Adapter: build notifications to Slack and Jira, from flow's event file.

    python3 -m deployment.infrastructure.notify slack   POST {"text": ...} to
                                                        $SLACK_WEBHOOK_URL
    python3 -m deployment.infrastructure.notify jira    POST {"body": ...} to
        $JIRA_URL/rest/api/2/issue/$JIRA_ISSUE/comment with
        `Authorization: Bearer $JIRA_TOKEN`

flow runs a `notify` target at the end of a build with `FLOW_EVENT`, the path of a JSON
file describing the build's outcome; the message is a summary line followed by that
event, verbatim. The URLs and the token are secrets: they are never printed (flow masks
them in its logs too). Standard library only (urllib): the machines that run it need no
curl.
"""

import json
import os
import sys
import urllib.request
from typing import Any, Dict, List, Optional

TIMEOUT = 30.0


def _names(items: Any) -> List[str]:
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            parts = [
                str(item[k])
                for k in ("label", "environment", "kind", "outcome")
                if item.get(k)
            ]
            out.append(" ".join(parts))
        else:
            out.append(str(item))
    return out


def summary(event: Dict[str, Any]) -> str:
    """One line: the outcome, the failed targets, the deploys."""
    line = f"flow build {event.get('outcome', 'finished')}"
    failed = _names(event.get("failed"))
    if failed:
        line += "; failed: " + ", ".join(failed)
    deploys = _names(event.get("deploys") or event.get("ledger"))
    if deploys:
        line += "; deploys: " + ", ".join(deploys)
    if event.get("commit"):
        line += f" (commit {str(event['commit'])[:12]})"
    return line


def message(event: Dict[str, Any]) -> str:
    """The summary line followed by the event as indented JSON in a code block."""
    return summary(event) + "\n```\n" + json.dumps(event, indent=2) + "\n```"


def post(url: str, body: Dict[str, Any], token: Optional[str] = None) -> int:
    """POSTs `body` as JSON; the HTTP status (raises on an error or a 4xx/5xx)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError("the URL must start with http:// or https://")
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # nosec B310
        return int(answer.status)


def _secret(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(
            f"error: ${name} is not set (declare it in the target's `secrets`)"
        )
    return value


def main(argv: Optional[list] = None) -> int:
    """Posts the event of $FLOW_EVENT to Slack or Jira; 2 on a usage error."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in ("slack", "jira"):
        print("usage: notify slack|jira", file=sys.stderr)
        return 2
    path = os.environ.get("FLOW_EVENT")
    if not path:
        raise SystemExit("error: $FLOW_EVENT is not set: flow's notify targets set it")
    with open(path, encoding="utf-8") as handle:
        event = json.load(handle)
    if args[0] == "slack":
        status = post(_secret("SLACK_WEBHOOK_URL"), {"text": message(event)})
    else:
        base = _secret("JIRA_URL").rstrip("/")
        issue = os.environ.get("JIRA_ISSUE", "REL-1")
        url = f"{base}/rest/api/2/issue/{issue}/comment"
        status = post(url, {"body": message(event)}, _secret("JIRA_TOKEN"))
    print(f"{args[0]}: posted {summary(event)!r} (HTTP {status})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
