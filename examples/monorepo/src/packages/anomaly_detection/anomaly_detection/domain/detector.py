"""Z-score detection over forecast residuals: pure arithmetic."""

from dataclasses import dataclass
from statistics import mean, pstdev
from typing import List, Sequence


@dataclass(frozen=True)
class Anomaly:
    """One flagged point: its index, its residual and the residual's z-score."""

    index: int
    residual: float
    score: float


def find_anomalies(residuals: Sequence[float], threshold: float = 3.0) -> List[Anomaly]:
    """The residuals at least `threshold` population standard deviations from the mean.

    Fewer than two residuals, or residuals that are all equal, have no anomalies.
    """
    if len(residuals) < 2:
        return []
    center, spread = mean(residuals), pstdev(residuals)
    if spread == 0:
        return []
    scored = [(i, r, abs(r - center) / spread) for i, r in enumerate(residuals)]
    return [Anomaly(i, r, s) for i, r, s in scored if s >= threshold]
