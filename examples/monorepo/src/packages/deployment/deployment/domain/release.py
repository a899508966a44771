"""Blue-green state of one environment: two slots, one of them live."""

from dataclasses import dataclass, replace
from typing import Optional

SLOTS = ("blue", "green")


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
        return self.version_in(self.live)

    def version_in(self, slot: str) -> Optional[str]:
        return self.blue if slot == "blue" else self.green

    def slot_of(self, version: str) -> Optional[str]:
        """The slot holding `version`, the live one first; None when neither does."""
        for slot in (self.live, self.idle):
            if self.version_in(slot) == version:
                return slot
        return None

    def stage(self, version: str) -> "Environment":
        """Installs `version` in the idle slot; traffic is unchanged."""
        return replace(self, **{self.idle: version})

    def switch(self) -> "Environment":
        """Sends traffic to the idle slot; the old slot stays for rollback."""
        return replace(self, live=self.idle)
