"""Data quality: declarative validation rules for tabular records."""

from data_quality.application.validate import validate
from data_quality.domain.rules import Rule, Violation, in_range, not_null

__all__ = ["Rule", "Violation", "in_range", "not_null", "validate"]
