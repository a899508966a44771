"""Blue-green state of one environment: two slots, one of them live."""

from dataclasses import dataclass, replace
from typing import Optional


@dataclass(frozen=True)
class Environment:
    name: str
    live: str = "blue"
    blue: Optional[str] = None
    green: Optional[str] = None

    @property
    def idle(self) -> str:
        return "green" if self.live == "blue" else "blue"

    def live_version(self) -> Optional[str]:
        return self.blue if self.live == "blue" else self.green

    def stage(self, version: str) -> "Environment":
        """Installs `version` in the idle slot; traffic is unchanged."""
        return replace(self, **{self.idle: version})

    def switch(self) -> "Environment":
        """Sends traffic to the idle slot; the old slot stays for rollback."""
        return replace(self, live=self.idle)
