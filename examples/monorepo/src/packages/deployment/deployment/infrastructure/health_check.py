"""Adapter: an HTTP health check (`GET <url>/healthz` must answer 200)."""

import urllib.request


def http_healthy(base_url: str, timeout: float = 5.0) -> bool:
    try:
        url = f"{base_url}/healthz"
        with urllib.request.urlopen(url, timeout=timeout) as response:  # nosec B310
            return response.status == 200
    except OSError:
        return False
