"""Validation rules: pure functions of one record, no I/O."""

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

Record = Mapping[str, Any]


@dataclass(frozen=True)
class Violation:
    """A rule that failed: the row (from 0), the column and what is wrong."""

    row: int
    column: str
    message: str


@dataclass(frozen=True)
class Rule:
    """A check of one column: `check` returns the problem, or None if there is none."""

    column: str
    check: Callable[[Any], Optional[str]]

    def apply(self, row: int, record: Record) -> Optional[Violation]:
        """The violation of this rule by `record` (row `row`), or None."""
        problem = self.check(record.get(self.column))
        return Violation(row, self.column, problem) if problem else None


def not_null(column: str) -> Rule:
    """A rule: `column` is present, not None and not the empty string."""
    return Rule(column, lambda v: "is missing" if v is None or v == "" else None)


def in_range(column: str, low: float, high: float) -> Rule:
    """A rule: `column` is a number (or parses as one) within [low, high]."""

    def check(value: Any) -> Optional[str]:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"{value!r} is not a number"
        return None if low <= number <= high else f"{number} is outside [{low}, {high}]"

    return Rule(column, check)
