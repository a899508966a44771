from pathlib import Path

from machine_learning.domain.model import LinearModel
from machine_learning.infrastructure import model_store
from mlops.application.promote import promote_if_better
from mlops.domain.registry import Registry
from mlops.infrastructure.model_files import r2_score, register_model_file


def test_a_perfect_model_scores_one(tmp_path: Path):
    path = tmp_path / "model.json"
    model_store.save(LinearModel(2.0, 1.0), path)
    assert r2_score(path, [0, 1, 2], [1, 3, 5]) == 1.0


def test_saved_models_are_registered_and_promoted(tmp_path: Path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    model_store.save(LinearModel(1.0, 0.0), good)
    model_store.save(LinearModel(0.0, 0.0), bad)
    registry = Registry()
    first = register_model_file(registry, "churn", good, [1, 2, 3], [1, 2, 3])
    assert promote_if_better(registry, first)
    second = register_model_file(registry, "churn", bad, [1, 2, 3], [1, 2, 3])
    assert second.metrics["r2"] < first.metrics["r2"]
    assert not promote_if_better(registry, second)
