"""Use case: promote a model to production only if it beats the one serving now."""

from mlops.domain.registry import ModelVersion, Registry


def promote_if_better(
    registry: Registry, candidate: ModelVersion, metric: str = "r2"
) -> bool:
    """Moves `candidate` to production if its `metric` beats the production model's.

    A missing metric counts as 0.0; a tie keeps the current model. Returns whether the
    candidate was promoted.
    """
    live = registry.in_stage(candidate.name, "production")
    if live is not None and candidate.metrics.get(metric, 0.0) <= live.metrics.get(
        metric, 0.0
    ):
        return False
    registry.move(candidate, "production")
    return True
