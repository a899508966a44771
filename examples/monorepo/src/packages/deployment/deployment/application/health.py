"""The health of a release: what a deployed bundle answers to `GET /health`.

This module ships inside the release (the bundle of //src/packages/deployment holds the
code of every package), and the environment's server runs it from the live slot on every
request:

    python3 -B -c "from deployment.application.health import main; main()"

with the slot's code first on the path. So the health of a version is decided by that
version's code: change it, rebuild the bundle, deploy, and `/health` answers what the
new code says.

Two levels, as a load balancer sees a new instance:
- ready: the release's code loads (this module imports). The deploy checks that on the
  idle slot before it switches traffic; a release that cannot even load never takes
  traffic.
- healthy: every package a release must ship imports, with its dependencies. A release
  can be ready and still unhealthy; that is what the monitor, watching `/health` after
  the switch, catches (and rolls back).
"""

import importlib
import json
import sys
from typing import List, Optional, Sequence, Tuple

# The packages a release must ship: the services of the monorepo and this one.
REQUIRED_PACKAGES: Tuple[str, ...] = (
    "anomaly_detection",
    "data_quality",
    "deployment",
    "machine_learning",
    "mlops",
)


def problems(required: Optional[Sequence[str]] = None) -> List[str]:
    """What is wrong with the release on the current path; empty when it is healthy."""
    found = []
    for name in REQUIRED_PACKAGES if required is None else required:
        try:
            importlib.import_module(name)
        except Exception as error:  # any failure to load is a health problem
            found.append(f"{name}: {type(error).__name__}: {error}")
    return found


def main(required: Optional[Sequence[str]] = None) -> int:
    """Prints `{"healthy": ..., "problems": [...]}`; exit status 0 when healthy."""
    found = problems(required)
    print(json.dumps({"healthy": not found, "problems": found}))
    sys.stdout.flush()
    return 0 if not found else 1
