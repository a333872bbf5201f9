"""The Pareto front of a race: entrants no other entrant beats on both cost and quality.

A point (cost, loss) dominates another when it is no worse on both and strictly better on one; the front is
every point nothing dominates. Equal points dominate neither, so ties are all kept. Quality where higher is
better (a task score) is compared with its sign flipped.
"""

from __future__ import annotations

from typing import Sequence


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` is at least as good as ``b`` on both axes (lower is better) and strictly better on one."""
    return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


def front(points: Sequence[tuple[float, float] | None]) -> list[bool]:
    """For each (cost, badness) point, whether it is on the front; None (a failed entrant) never is."""
    known = [p for p in points if p is not None]
    return [p is not None and not any(dominates(q, p) for q in known) for p in points]


def front_of(rows: Sequence[dict], cost: str, quality: str, higher_is_better: bool = False) -> list[bool]:
    """The front of result rows by two of their keys; rows missing either value are off the front."""
    points = []
    for row in rows:
        c, q = row.get(cost), row.get(quality)
        ok = isinstance(c, (int, float)) and isinstance(q, (int, float))
        points.append((float(c), -float(q) if higher_is_better else float(q)) if ok else None)
    return front(points)
