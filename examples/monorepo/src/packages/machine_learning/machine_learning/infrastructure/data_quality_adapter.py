"""Adapter: the DatasetValidator port implemented with the data_quality package."""

from typing import Mapping, Sequence

from data_quality import not_null, validate


class DataQualityValidator:
    def pass_rate(self, records: Sequence[Mapping[str, float]]) -> float:
        return validate(records, [not_null("x"), not_null("y")]).pass_rate
