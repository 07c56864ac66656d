"""Paired comparisons of two runs scored on the same items (the study and ``plugin.eval compare`` both)."""

from __future__ import annotations

import math
import statistics


def paired_difference(ours: dict[str, list[float]], reference: dict[str, list[float]]) -> tuple[float, float]:
    """Difference of task-averaged accuracy on the same items, and its standard error from the per-item
    differences: far tighter than comparing two unpaired stderrs, since both score identical questions."""
    means, variances = [], []
    for task in ours:
        diffs = [a - b for a, b in zip(ours[task], reference[task])]
        means.append(statistics.mean(diffs))
        variances.append(statistics.variance(diffs) / len(diffs) if len(diffs) > 1 else 0.0)
    return statistics.mean(means), math.sqrt(sum(variances)) / len(means)
