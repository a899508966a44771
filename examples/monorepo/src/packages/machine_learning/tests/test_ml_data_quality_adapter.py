from machine_learning.application.train import RejectedDataset, train
from machine_learning.infrastructure.data_quality_adapter import DataQualityValidator


def test_the_data_quality_package_validates_training_data():
    validator = DataQualityValidator()
    clean = [{"x": 0.0, "y": 1.0}, {"x": 1.0, "y": 3.0}]
    assert validator.pass_rate(clean) == 1.0
    assert train(clean, validator).slope == 2.0


def test_missing_values_reject_the_dataset():
    records = [{"x": 0.0, "y": 1.0}, {"x": 1.0, "y": None}]
    assert DataQualityValidator().pass_rate(records) == 0.5
    try:
        train(records, DataQualityValidator())
    except RejectedDataset as e:
        assert "0.50" in str(e)
    else:
        raise AssertionError("a dataset with missing values was accepted")
