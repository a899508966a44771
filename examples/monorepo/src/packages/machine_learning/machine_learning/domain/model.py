"""A one-feature linear model: the domain object the other packages predict with."""

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class LinearModel:
    """y = slope * x + intercept."""

    slope: float
    intercept: float

    def predict(self, x: float) -> float:
        """The model's value at `x`."""
        return self.slope * x + self.intercept


def fit(xs: Sequence[float], ys: Sequence[float]) -> LinearModel:
    """Ordinary least squares."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("fit needs at least two (x, y) pairs")
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var_x = sum((x - mean_x) ** 2 for x in xs)
    if var_x == 0:
        raise ValueError("all x values are equal")
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    slope = cov / var_x
    return LinearModel(slope, mean_y - slope * mean_x)
