from pathlib import Path

from machine_learning.application.train import RejectedDataset, train
from machine_learning.domain.model import LinearModel, fit
from machine_learning.infrastructure import model_store


class FakeValidator:
    def __init__(self, rate):
        self.rate = rate

    def pass_rate(self, records):
        return self.rate


def test_fit_recovers_a_line():
    model = fit([0, 1, 2, 3], [1, 3, 5, 7])
    assert model == LinearModel(2.0, 1.0)
    assert model.predict(10) == 21.0


def test_train_refuses_bad_data():
    records = [{"x": 0, "y": 0}, {"x": 1, "y": 1}]
    try:
        train(records, FakeValidator(0.5))
    except RejectedDataset:
        pass
    else:
        raise AssertionError("a dataset with a 50% pass rate was accepted")
    assert train(records, FakeValidator(1.0)).slope == 1.0


def test_model_store_round_trips(tmp_path: Path):
    path = tmp_path / "model.json"
    model_store.save(LinearModel(0.5, -2.0), path)
    assert model_store.load(path) == LinearModel(0.5, -2.0)
