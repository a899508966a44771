"""Adapter: local environments, one directory each, for the example's deploys.

The example has no servers, so an environment is a directory on this machine:

    <root>/<name>/
        blue/version   blue/release/    a slot: the artifact digest and the bundle
        green/version  green/release/   the other slot
        live                            the name of the live slot ("blue" or "green"),
                                        replaced atomically
        server/                         a copy of the server's code (it outlives the
                                        deploy's sandbox)
        server.pid  server.port  server.log   the local HTTP server (server.py)

`<root>` is `$FLOW_ENVIRONMENTS` when set, else `$FLOW_WORKSPACE/.environments` (flow
sets FLOW_WORKSPACE for deploys, monitors and their probes), else `.environments`.

Invariants: a slot's `version` is written after its files, and removed before they are
replaced, so a slot with a version holds that version's complete files. `live` is
written through a temporary file and a rename: a reader sees the old slot or the new
one, never a partial name.
"""

import os
import shutil
from pathlib import Path
from typing import Optional

from deployment.domain.release import SLOTS, Environment


def root_dir() -> Path:
    """The directory of the environments (see the module docstring for the defaults)."""
    explicit = os.environ.get("FLOW_ENVIRONMENTS")
    if explicit:
        return Path(explicit)
    workspace = os.environ.get("FLOW_WORKSPACE")
    if workspace:
        return Path(workspace) / ".environments"
    return Path(".environments")


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


class LocalEnvironment:
    """One environment's directory: its slots, its live switch, its server's files."""

    def __init__(self, name: str, root: Optional[Path] = None) -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad environment name {name!r}")
        self.name = name
        self.dir = (root if root is not None else root_dir()) / name

    def slot_dir(self, slot: str) -> Path:
        """The directory of the release installed in `slot`."""
        return self.dir / slot / "release"

    def _read(self, path: Path) -> Optional[str]:
        try:
            return path.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def load(self) -> Environment:
        """The state on disk; live is "blue" until a switch, an empty slot is None."""
        live = self._read(self.dir / "live")
        versions = {slot: self._read(self.dir / slot / "version") for slot in SLOTS}
        return Environment(
            self.name,
            live=live if live in SLOTS else "blue",
            blue=versions["blue"],
            green=versions["green"],
        )

    def live_version(self, state: Optional[Environment] = None) -> Optional[str]:
        """The version traffic goes to; None before the first switch.

        `state`: the environment as just loaded, to read it only once.
        """
        if self._read(self.dir / "live") is None:
            return None
        return (state or self.load()).live_version()

    def install(self, slot: str, bundle: Path, version: str) -> None:
        """Replaces the slot's release with a copy of `bundle`, then its version."""
        if slot not in SLOTS:
            raise ValueError(f"bad slot {slot!r}")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / slot / "version").unlink(missing_ok=True)
        incoming = self.dir / f".incoming-{slot}-{os.getpid()}"
        shutil.rmtree(incoming, ignore_errors=True)
        shutil.copytree(bundle, incoming, ignore=shutil.ignore_patterns("__pycache__"))
        target = self.slot_dir(slot)
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(incoming, target)
        _write_atomically(self.dir / slot / "version", version + "\n")

    def switch_to(self, slot: str) -> None:
        """Makes `slot` live by rewriting the `live` file atomically."""
        if slot not in SLOTS:
            raise ValueError(f"bad slot {slot!r}")
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_atomically(self.dir / "live", slot + "\n")

    def save(self, env: Environment) -> None:
        """Writes the live switch of `env` (slots are written by `install`)."""
        self.switch_to(env.live)
