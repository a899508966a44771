from pathlib import Path

from data_quality import in_range, not_null, validate
from data_quality.infrastructure.csv_source import read_records


def test_validate_reports_every_violation():
    records = [{"id": 1, "age": 30}, {"id": None, "age": 200}, {"id": 3, "age": 5}]
    report = validate(records, [not_null("id"), in_range("age", 0, 120)])
    assert report.rows == 3
    assert [(v.row, v.column) for v in report.violations] == [(1, "id"), (1, "age")]
    assert not report.passed
    assert abs(report.pass_rate - 2 / 3) < 1e-9


def test_csv_source_feeds_the_validator(tmp_path: Path):
    path = tmp_path / "people.csv"
    path.write_text("id,age\n1,30\n2,31\n", encoding="utf-8")
    assert validate(read_records(path), [not_null("id")]).passed
