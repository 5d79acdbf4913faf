"""Fitness: the one place that says what the search optimizes.

The paper balances accuracy against compression. Default, `constrained`:
fitness = accuracy while the compression ratio meets `min_ratio`; below it,
accuracy scaled by (ratio / min_ratio)^2, so a config can't win by giving
up compression. Alternative, `product`: accuracy^a * ratio^b.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fitness:
    mode: str = "constrained"
    min_ratio: float = 2.5
    accuracy_weight: float = 1.0
    ratio_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in ("constrained", "product"):
            raise ValueError(f"fitness: mode must be 'constrained' or 'product', got {self.mode!r}")
        if self.min_ratio <= 0:
            raise ValueError(f"fitness: min_ratio must be > 0, got {self.min_ratio}")

    def __call__(self, accuracy: float, ratio: float) -> float:
        """
        >>> Fitness(min_ratio=3.0)(0.9, 3.5)
        0.9
        >>> Fitness(min_ratio=3.0)(0.9, 1.5)  # half the required ratio: a quarter of the accuracy
        0.225
        >>> Fitness("product", accuracy_weight=1, ratio_weight=1)(0.5, 3.0)
        1.5
        """
        accuracy, ratio = max(accuracy, 0.0), max(ratio, 0.0)
        if self.mode == "product":
            return round(accuracy ** self.accuracy_weight * ratio ** self.ratio_weight, 6)
        if ratio >= self.min_ratio:
            return round(accuracy, 6)
        return round(accuracy * (ratio / self.min_ratio) ** 2, 6)

    def describe(self) -> str:
        if self.mode == "product":
            return f"accuracy^{self.accuracy_weight} * compression^{self.ratio_weight}"
        return f"accuracy if compression >= {self.min_ratio}, else accuracy * (compression / {self.min_ratio})^2"
