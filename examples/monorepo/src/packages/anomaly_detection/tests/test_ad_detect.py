from anomaly_detection.application.detect import detect
from anomaly_detection.domain.detector import find_anomalies


class Flat:
    def predict(self, x):
        return 10.0


def test_flat_series_has_no_anomalies():
    assert find_anomalies([1.0, 1.0, 1.0]) == []
    assert find_anomalies([5.0]) == []


def test_spike_is_detected():
    series = [10.0] * 20 + [60.0] + [10.0] * 20
    anomalies = detect(series, Flat(), threshold=3.0)
    assert [a.index for a in anomalies] == [20]
    assert anomalies[0].residual == 50.0
