"""Use case: train a model on a dataset that first passes a data-quality port."""

from typing import Mapping, Protocol, Sequence

from machine_learning.domain.model import LinearModel, fit


class DatasetValidator(Protocol):
    """Port: the data-quality domain, or a fake in tests."""

    def pass_rate(self, records: Sequence[Mapping[str, float]]) -> float:
        """The share of records that pass validation, from 0.0 to 1.0."""
        ...


class RejectedDataset(Exception):
    """The dataset's pass rate is below the minimum: no model is trained."""


def train(
    records: Sequence[Mapping[str, float]],
    validator: DatasetValidator,
    min_pass_rate: float = 0.95,
) -> LinearModel:
    """Fits y on x; raises RejectedDataset if the pass rate is below `min_pass_rate`."""
    rate = validator.pass_rate(records)
    if rate < min_pass_rate:
        raise RejectedDataset(f"pass rate {rate:.2f} is below {min_pass_rate:.2f}")
    return fit([r["x"] for r in records], [r["y"] for r in records])
