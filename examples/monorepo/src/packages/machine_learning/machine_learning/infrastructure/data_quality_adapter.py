"""Adapter: the DatasetValidator port implemented with the data_quality package."""

from typing import Mapping, Sequence

from data_quality import not_null, validate


class DataQualityValidator:
    """Validates training records with data_quality's rules."""

    def pass_rate(self, records: Sequence[Mapping[str, float]]) -> float:
        """The share of records in which `x` and `y` are present and non-empty."""
        return validate(records, [not_null("x"), not_null("y")]).pass_rate
