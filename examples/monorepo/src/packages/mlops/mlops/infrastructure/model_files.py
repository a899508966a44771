"""Adapter: registers the model files that the machine_learning package saves."""

from pathlib import Path
from typing import Sequence

from machine_learning.infrastructure import model_store
from mlops.domain.registry import ModelVersion, Registry


def r2_score(path: Path, xs: Sequence[float], ys: Sequence[float]) -> float:
    """The coefficient of determination of a saved model on held-out data."""
    model = model_store.load(path)
    mean_y = sum(ys) / len(ys)
    total = sum((y - mean_y) ** 2 for y in ys)
    residual = sum((y - model.predict(x)) ** 2 for x, y in zip(xs, ys))
    return 1.0 - residual / total if total else 0.0


def register_model_file(
    registry: Registry,
    name: str,
    path: Path,
    xs: Sequence[float],
    ys: Sequence[float],
) -> ModelVersion:
    """Registers a saved model under `name`, with its R² on (xs, ys) as metric `r2`."""
    return registry.register(name, {"r2": r2_score(path, xs, ys)})
