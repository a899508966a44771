"""Adapter: models saved as JSON files."""

import json
from pathlib import Path

from machine_learning.domain.model import LinearModel


def save(model: LinearModel, path: Path) -> None:
    """Writes the model's slope and intercept to `path` as JSON."""
    path.write_text(
        json.dumps({"slope": model.slope, "intercept": model.intercept}),
        encoding="utf-8",
    )


def load(path: Path) -> LinearModel:
    """Reads a model written by `save`."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return LinearModel(float(data["slope"]), float(data["intercept"]))
