"""Adapter: a Forecaster loaded from a machine_learning model file."""

from pathlib import Path


def load_forecaster(path: Path):
    # Imported here so that the domain and application layers never depend on it.
    from machine_learning.infrastructure import model_store

    return model_store.load(path)
