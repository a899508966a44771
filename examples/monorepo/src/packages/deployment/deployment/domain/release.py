"""Blue-green state of one environment: two slots, one of them live."""

from dataclasses import dataclass, replace
from typing import Optional

SLOTS = ("blue", "green")


@dataclass(frozen=True)
class Environment:
    """An environment's slots, the version each holds, and which one is live."""

    name: str
    live: str = "blue"
    blue: Optional[str] = None
    green: Optional[str] = None

    @property
    def idle(self) -> str:
        """The slot that is not live."""
        return "green" if self.live == "blue" else "blue"

    def live_version(self) -> Optional[str]:
        """The version in the live slot, if any."""
        return self.version_in(self.live)

    def version_in(self, slot: str) -> Optional[str]:
        """The version installed in `slot`, if any."""
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
