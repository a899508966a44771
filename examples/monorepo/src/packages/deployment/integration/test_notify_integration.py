"""Integration: the notify adapter against the webhook sink of the BUILD's `service`.

The service (`//src/packages/deployment:webhook_sink`) is started by flow before this
test and stopped after it; `WEBHOOK_SINK_URL` is its address.
"""

import json
import os
import urllib.request

from deployment.infrastructure import notify


def test_a_notification_reaches_the_running_sink(tmp_path, monkeypatch):
    url = os.environ["WEBHOOK_SINK_URL"]
    marker = f"integration-{os.getpid()}"
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"outcome": "succeeded", "commit": marker}))
    monkeypatch.setenv("FLOW_EVENT", str(event))
    monkeypatch.setenv("SLACK_WEBHOOK_URL", url + "/hooks/slack")
    assert notify.main(["slack"]) == 0
    with urllib.request.urlopen(url + "/received", timeout=10) as answer:  # nosec B310
        received = json.loads(answer.read())
    assert any(marker in r["body"]["text"] for r in received), received
