"""Adapter: a registry persisted as one JSON document."""

import json
from dataclasses import asdict
from pathlib import Path

from mlops.domain.registry import ModelVersion, Registry


def dump(registry: Registry, path: Path) -> None:
    """Writes every model version to `path` as a JSON list."""
    models = [asdict(m) for m in registry.all()]
    path.write_text(json.dumps(models, indent=2, sort_keys=True), encoding="utf-8")


def restore(path: Path) -> Registry:
    """A registry with the versions written by `dump`."""
    registry = Registry()
    for data in json.loads(path.read_text(encoding="utf-8")):
        registry.add(ModelVersion(**data))
    return registry
