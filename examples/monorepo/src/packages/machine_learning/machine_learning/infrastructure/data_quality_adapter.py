"""Adapter: the DatasetValidator port implemented with the data_quality package."""

from typing import Mapping, Sequence


class DataQualityValidator:
    def pass_rate(self, records: Sequence[Mapping[str, float]]) -> float:
        # Imported here so that the domain and application layers never depend on it.
        from data_quality import not_null, validate

        return validate(records, [not_null("x"), not_null("y")]).pass_rate
