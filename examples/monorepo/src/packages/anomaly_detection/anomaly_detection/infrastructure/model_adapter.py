"""Adapter: a Forecaster loaded from a machine_learning model file."""

from pathlib import Path

from anomaly_detection.application.detect import Forecaster
from machine_learning.infrastructure import model_store


def load_forecaster(path: Path) -> Forecaster:
    """The model that the machine_learning package saved at `path`."""
    return model_store.load(path)
