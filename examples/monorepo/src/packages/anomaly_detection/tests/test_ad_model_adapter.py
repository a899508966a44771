from pathlib import Path

from anomaly_detection.application.detect import detect
from anomaly_detection.infrastructure.model_adapter import load_forecaster
from machine_learning.domain.model import fit
from machine_learning.infrastructure import model_store


def test_a_trained_model_is_the_forecaster(tmp_path: Path):
    xs = list(range(30))
    ys = [2.0 * x + 1.0 for x in xs]
    path = tmp_path / "trend.json"
    model_store.save(fit(xs, ys), path)
    series = list(ys)
    series[17] += 40.0
    anomalies = detect(series, load_forecaster(path), threshold=3.0)
    assert [a.index for a in anomalies] == [17]
