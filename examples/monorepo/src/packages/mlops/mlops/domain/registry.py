"""Model versions move through stages: none -> staging -> production -> archived."""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

STAGES = ("none", "staging", "production", "archived")


@dataclass
class ModelVersion:
    """One version of a named model, its metrics and its stage."""

    name: str
    version: int
    metrics: Dict[str, float] = field(default_factory=dict)
    stage: str = "none"


class Registry:
    """The model versions, keyed by (name, version), held in memory."""

    def __init__(self) -> None:
        self._versions: Dict[Tuple[str, int], ModelVersion] = {}

    def register(self, name: str, metrics: Dict[str, float]) -> ModelVersion:
        """Adds the next version of `name` (1 for the first), in stage "none"."""
        version = 1 + max((v for (n, v) in self._versions if n == name), default=0)
        model = ModelVersion(name, version, dict(metrics))
        self.add(model)
        return model

    def add(self, model: ModelVersion) -> None:
        """Stores `model`, replacing any with the same name and version."""
        self._versions[(model.name, model.version)] = model

    def all(self) -> List[ModelVersion]:
        """Every version, sorted by name then version."""
        return sorted(self._versions.values(), key=lambda m: (m.name, m.version))

    def in_stage(self, name: str, stage: str) -> Optional[ModelVersion]:
        """The latest version of `name` in `stage`, or None."""
        found = [
            m for m in self._versions.values() if m.name == name and m.stage == stage
        ]
        return max(found, key=lambda m: m.version, default=None)

    def move(self, model: ModelVersion, stage: str) -> None:
        """Puts `model` in `stage`; production archives the previous production model.

        Raises ValueError for a stage not in STAGES.
        """
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        if stage == "production":
            current = self.in_stage(model.name, "production")
            if current is not None:
                current.stage = "archived"
        model.stage = stage
