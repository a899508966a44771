"""Use case: validate a batch of records against a set of rules."""

from dataclasses import dataclass, field
from typing import Iterable, List, Sequence

from data_quality.domain.rules import Record, Rule, Violation


@dataclass
class Report:
    """The outcome of a validation: how many rows were checked, and what failed."""

    rows: int = 0
    violations: List[Violation] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether no rule was violated."""
        return not self.violations

    @property
    def pass_rate(self) -> float:
        """The share of rows with no violation; 1.0 when there are no rows."""
        bad_rows = {v.row for v in self.violations}
        return 1.0 if self.rows == 0 else (self.rows - len(bad_rows)) / self.rows


def validate(records: Iterable[Record], rules: Sequence[Rule]) -> Report:
    """Applies every rule to every record, numbering rows from 0."""
    report = Report()
    for row, record in enumerate(records):
        report.rows += 1
        for rule in rules:
            violation = rule.apply(row, record)
            if violation:
                report.violations.append(violation)
    return report
