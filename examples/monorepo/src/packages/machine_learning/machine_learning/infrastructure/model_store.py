"""Adapter: models saved as JSON files."""

import json
from pathlib import Path

from machine_learning.domain.model import LinearModel


def save(model: LinearModel, path: Path) -> None:
    path.write_text(
        json.dumps({"slope": model.slope, "intercept": model.intercept}),
        encoding="utf-8",
    )


def load(path: Path) -> LinearModel:
    data = json.loads(path.read_text(encoding="utf-8"))
    return LinearModel(float(data["slope"]), float(data["intercept"]))
