from pathlib import Path

from mlops.application.promote import promote_if_better
from mlops.domain.registry import Registry
from mlops.infrastructure import json_registry


def test_versions_count_up_per_name():
    registry = Registry()
    assert registry.register("churn", {}).version == 1
    assert registry.register("churn", {}).version == 2
    assert registry.register("fraud", {}).version == 1


def test_only_a_better_model_is_promoted():
    registry = Registry()
    first = registry.register("churn", {"r2": 0.80})
    assert promote_if_better(registry, first)
    worse = registry.register("churn", {"r2": 0.70})
    assert not promote_if_better(registry, worse)
    better = registry.register("churn", {"r2": 0.90})
    assert promote_if_better(registry, better)
    assert first.stage == "archived"
    assert registry.in_stage("churn", "production") is better


def test_json_round_trip(tmp_path: Path):
    registry = Registry()
    registry.register("churn", {"r2": 0.5})
    json_registry.dump(registry, tmp_path / "registry.json")
    restored = json_registry.restore(tmp_path / "registry.json")
    model = restored.in_stage("churn", "none")
    assert model is not None and model.version == 1
