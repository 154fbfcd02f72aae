"""Median and spread of a sample, the only statistics the benchmark reports."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    q1: float
    q3: float
    minimum: float
    maximum: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary | None:
        if not values:
            return None
        ordered = sorted(values)
        if len(ordered) == 1:
            q1 = q3 = ordered[0]
        else:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        return cls(len(ordered), statistics.median(ordered), q1, q3, ordered[0], ordered[-1])


def ms(value: float | None) -> str:
    return "–" if value is None else f"{value * 1000:.1f}"


def ms_summary(s: Summary | None) -> str:
    """'123.4 ms (IQR 3.2)' for a table cell."""
    return "–" if s is None else f"{ms(s.median)} (IQR {ms(s.iqr)})"


def ratio(a: Summary | None, b: Summary | None) -> float | None:
    if a is None or b is None or b.median == 0:
        return None
    return a.median / b.median
