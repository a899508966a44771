"""Use case: compare a series with a forecast and report the anomalies."""

from typing import List, Protocol, Sequence

from anomaly_detection.domain.detector import Anomaly, find_anomalies


class Forecaster(Protocol):
    """Port: a trained model from the machine_learning domain, or a fake in tests."""

    def predict(self, x: float) -> float:
        """The value the model expects at position `x`."""
        ...


def detect(
    series: Sequence[float], forecaster: Forecaster, threshold: float = 3.0
) -> List[Anomaly]:
    """The points whose residual from the forecast has a z-score >= `threshold`."""
    residuals = [y - forecaster.predict(float(x)) for x, y in enumerate(series)]
    return find_anomalies(residuals, threshold)
