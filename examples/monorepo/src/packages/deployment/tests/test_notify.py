import json
import threading

import pytest

from deployment.infrastructure import notify
from deployment.infrastructure.webhook_sink import Sink
from deployment.infrastructure.webhook_sink import main as sink_main

EVENT = {
    "outcome": "failed",
    "failed": ["//src/packages/deployment:monitor_production"],
    "deploys": [{"label": "//x:deploy", "environment": "production", "kind": "deploy"}],
    "commit": "0123456789abcdef",
}


@pytest.fixture
def sink():
    httpd = Sink()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_summary_names_the_outcome_the_failures_and_the_deploys():
    line = notify.summary(EVENT)
    assert line.startswith(
        "flow build failed; failed: //src/packages/deployment:monitor"
    )
    assert "//x:deploy production deploy" in line and "0123456789ab" in line
    assert notify.summary({}) == "flow build finished"


# A made-up token for the fake Jira endpoint. detect-secrets finds it; .secrets.baseline
# lists it, audited as not a secret, so //src/packages/deployment:secrets accepts it.
JIRA_TOKEN = "5c1e0a7f4b9d2e8c6a3f1b7d9e2c4a8f"


def test_slack_and_jira_post_the_event(sink, tmp_path, monkeypatch, capsys):
    httpd, url = sink
    event = tmp_path / "event.json"
    event.write_text(json.dumps(EVENT))
    monkeypatch.setenv("FLOW_EVENT", str(event))
    monkeypatch.setenv("SLACK_WEBHOOK_URL", url + "/hooks/secret-path")
    monkeypatch.setenv("JIRA_URL", url + "/")
    monkeypatch.setenv("JIRA_TOKEN", JIRA_TOKEN)
    assert notify.main(["slack"]) == 0
    assert notify.main(["jira"]) == 0
    slack, jira = httpd.received
    assert slack["path"] == "/hooks/secret-path"
    assert "monitor_production" in slack["body"]["text"]
    assert jira["path"] == "/rest/api/2/issue/REL-1/comment"
    assert jira["headers"]["Authorization"] == "Bearer " + JIRA_TOKEN
    out = capsys.readouterr().out
    assert "secret-path" not in out and JIRA_TOKEN not in out


def test_missing_settings_are_errors(tmp_path, monkeypatch):
    assert notify.main([]) == 2
    monkeypatch.delenv("FLOW_EVENT", raising=False)
    with pytest.raises(SystemExit):
        notify.main(["slack"])
    event = tmp_path / "event.json"
    event.write_text("{}")
    monkeypatch.setenv("FLOW_EVENT", str(event))
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    with pytest.raises(SystemExit):
        notify.main(["slack"])
    with pytest.raises(ValueError):
        notify.post("file:///etc/passwd", {})


def test_sink_answers_get_routes(sink):
    import urllib.error
    import urllib.request

    _, url = sink
    with urllib.request.urlopen(url + "/health") as answer:
        assert answer.status == 200
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(url + "/nowhere")
    with pytest.raises(SystemExit):
        sink_main(["--port", "not-a-number"])
