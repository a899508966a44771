from data_quality.domain.rules import in_range, not_null


def test_not_null_flags_missing_values():
    rule = not_null("id")
    assert rule.apply(0, {"id": 7}) is None
    assert rule.apply(3, {"id": ""}).row == 3
    assert rule.apply(4, {}).message == "is missing"


def test_in_range_checks_bounds_and_types():
    rule = in_range("age", 0, 120)
    assert rule.apply(0, {"age": "42"}) is None
    assert "outside" in rule.apply(1, {"age": 130}).message
    assert "not a number" in rule.apply(2, {"age": "old"}).message
