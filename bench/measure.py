"""Interleaved measurements, confidence intervals, an A/A control and honest verdicts: what every bench reports.

A bench compares variants (the app's loop and a plain loop; a base and a merged model) that the machine's
own noise moves by several percent from one moment to the next. So the variants run in the same process,
interleaved round by round in a rotating order (a slow moment hits all of them, and none always runs first),
after a warm-up; every ratio is computed per round (the two samples were taken a few seconds apart) and
summarised by its median and a 95% confidence interval over rounds. One variant also runs a second time in
every round (the A/A control): the interval of that variant against itself is the bench's resolution, the
smallest difference it can tell from noise in this very run. A target counts as met (or missed) only when
the whole interval lies on one side of it and the median is further from it than the resolution;
otherwise the verdict is "not resolved at this noise level".

The interval of a median (or any quantile) is the distribution-free order-statistic interval: the sorted
samples x(l) .. x(u) whose ranks a binomial(n, q) distribution puts around the quantile with at least 95%
coverage (Conover, Practical Nonparametric Statistics, 3rd ed., §3.2). It assumes only that rounds are
independent, needs no seed and no resampling, and is exact for small n, where a bootstrap of a median is
not. A median needs at least 6 rounds for a two-sided 95% interval, a 95th percentile at least 72; with
fewer, the missing side is reported as unbounded and no verdict is given.

API (for bench/race.py and any new bench; the benches run as scripts, so ``import measure`` finds this file):

    import measure

    rounds = measure.interleave({"app": app_round, "plain": plain_round}, control="plain",
                                seconds=args.seconds, warmup=1, precision=0.01, ratios=[("app", "plain")])
    # Each callable runs one sample and returns its value (tokens/s, ms per token, ...); measure.timed(fn, *args)
    # makes one that returns the seconds fn took. Round r runs measure.rotation(rounds.slots, r); the control
    # runs twice per round, as slot "plain (A/A)". Stops at max_rounds, when the intervals of ``ratios`` and
    # the A/A are within ±precision (after min_rounds=6), or before a round that would pass ``seconds``.
    ratio = rounds.ratio("app", "plain")         # Interval: median of per-round app/plain, 95% CI
    aa = rounds.control_ratio()                  # Interval of plain (A/A) / plain
    p95 = rounds.interval("app", q=0.95)         # any quantile of one slot's samples, with its interval
    figures = [measure.Figure("app / plain tokens/s", ratio, rounds.resolution(), measure.at_least(0.95)),
               measure.Figure("A/A: plain / plain", aa, rounds.resolution())]
    print(measure.final_block("train_throughput", figures, rounds.describe()))
    print(figures[0].line())                     # one sentence: estimate, interval, resolution, verdict

``Interval`` (estimate, low, high, n, kind; ``scaled(factor)`` for units), ``verdict(interval, target,
resolution)``, ``all_of(verdicts)`` (a target every figure must meet), ``median_interval``,
``quantile_interval``, ``spread`` (median and range of at least 3 runs, for figures too slow for 6 rounds)
and the targets ``at_least``, ``at_most``, ``within`` work on their own too, e.g. on samples a bench collects
itself (a race's entrants, one run each: use ``spread`` over repeated races, or ``interleave`` a step function).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

CONFIDENCE = 0.95
CONTROL_SUFFIX = " (A/A)"
MET, MISSED, UNRESOLVED, NO_TARGET = "met", "missed", "not resolved at this noise level", "—"


# --------------------------------------------------------------------------- intervals


@dataclass(frozen=True)
class Interval:
    """A figure's estimate and its interval; ``low``/``high`` are None where too few samples bound that side."""

    estimate: float
    low: float | None
    high: float | None
    n: int
    kind: str = "95% CI"  # or "range" (min .. max over a few runs)

    @property
    def bounded(self) -> bool:
        return self.low is not None and self.high is not None

    def scaled(self, factor: float) -> "Interval":
        """The same interval in other units (seconds to ms, a ratio times FLOPs per token)."""
        times = lambda v: None if v is None else v * factor  # noqa: E731
        return Interval(self.estimate * factor, times(self.low), times(self.high), self.n, self.kind)

    def relative_half_width(self) -> float:
        """How far the interval reaches from the estimate, relative to it (inf when unbounded)."""
        if not self.bounded or not self.estimate:
            return math.inf
        return max(self.high / self.estimate - 1, 1 - self.low / self.estimate)


def _binomial_pmf(i: int, n: int, p: float) -> float:
    """P(B = i) for B ~ binomial(n, p), 0 < p < 1; in logs, as comb(n, i) passes a float's range past n ~ 1000."""
    return math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                    + i * math.log(p) + (n - i) * math.log1p(-p))


def order_statistic_ranks(n: int, q: float = 0.5, confidence: float = CONFIDENCE) -> tuple[int, int]:
    """1-based ranks (l, u) such that sorted samples x(l) .. x(u) cover the q-quantile with probability at
    least ``confidence``; l = 0 (u = n + 1) when n samples are too few to bound that side.

    The number B of samples below the quantile is binomial(n, q); the coverage is P(l <= B < u), so l is the
    largest rank with P(B < l) <= alpha/2 and u the smallest with P(B >= u) <= alpha/2."""
    alpha = (1 - confidence) / 2
    low, below = 0, 0.0
    for rank in range(1, n + 1):
        below += _binomial_pmf(rank - 1, n, q)  # P(B < rank) = P(B <= rank - 1)
        if below > alpha:
            break
        low = rank
    high, above = n + 1, 0.0
    for rank in range(n, 0, -1):
        above += _binomial_pmf(rank, n, q)  # P(B >= rank)
        if above > alpha:
            break
        high = rank
    return low, high


def sample_quantile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default): the median for q = 0.5."""
    xs = sorted(values)
    h = (len(xs) - 1) * q
    i = math.floor(h)
    f = h - i
    return xs[i] if i + 1 >= len(xs) or f == 0 else (1 - f) * xs[i] + f * xs[i + 1]


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def quantile_interval(values, q: float = 0.5, confidence: float = CONFIDENCE) -> Interval:
    """The sample q-quantile and its distribution-free confidence interval (non-finite values dropped)."""
    xs = sorted(_finite(values))
    if not xs:
        return Interval(math.nan, None, None, 0)
    low, high = order_statistic_ranks(len(xs), q, confidence)
    return Interval(sample_quantile(xs, q), xs[low - 1] if low >= 1 else None,
                    xs[high - 1] if high <= len(xs) else None, len(xs))


def median_interval(values, confidence: float = CONFIDENCE) -> Interval:
    return quantile_interval(values, 0.5, confidence)


def spread(values, minimum: int = 3) -> Interval:
    """Median and min .. max of a few runs: for figures too slow to repeat the 6 times a 95% interval needs.
    Fewer than ``minimum`` runs give no range (and so no verdict): one run says nothing of the next."""
    xs = sorted(_finite(values))
    if not xs:
        return Interval(math.nan, None, None, 0, "range")
    if len(xs) < minimum:
        return Interval(sample_quantile(xs, 0.5), None, None, len(xs), "range")
    return Interval(sample_quantile(xs, 0.5), xs[0], xs[-1], len(xs), "range")


def resolution(control: Interval) -> float | None:
    """The A/A interval's largest relative distance from 1: differences this small are the machine's noise.
    An A/A interval that excludes 1 (a slot favoured by its position) widens it, as it should."""
    if not control.bounded:
        return None
    return max(1 - control.low, control.high - 1, 0.0)


# --------------------------------------------------------------------------- targets and verdicts


@dataclass(frozen=True)
class Target:
    """The figure must be >= low and <= high (either may be None); bounds are positive."""

    low: float | None = None
    high: float | None = None

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.low:g} .. {self.high:g}"
        return f">= {self.low:g}" if self.low is not None else f"<= {self.high:g}"


def at_least(bound: float) -> Target:
    return Target(low=bound)


def at_most(bound: float) -> Target:
    return Target(high=bound)


def within(low: float, high: float) -> Target:
    return Target(low, high)


def verdict(interval: Interval, target: Target | None, noise: float | None) -> str:
    """met / missed only when the whole interval is on one side of every bound concerned and the estimate is
    further from that bound than the A/A resolution ``noise`` (relative); otherwise not resolved."""
    if target is None:
        return NO_TARGET
    if not interval.bounded or noise is None:
        return UNRESOLVED
    est, clear = interval.estimate, []

    def far(bound: float) -> bool:
        return abs(est / bound - 1) > noise

    if target.low is not None:
        if interval.high < target.low and far(target.low):
            return MISSED
        clear.append(interval.low >= target.low and far(target.low))
    if target.high is not None:
        if interval.low > target.high and far(target.high):
            return MISSED
        clear.append(interval.high <= target.high and far(target.high))
    return MET if all(clear) else UNRESOLVED


def all_of(verdicts: list[str]) -> str:
    """One verdict for a target every figure must meet: met if all are, missed if any is, else not resolved."""
    if verdicts and all(v == MET for v in verdicts):
        return MET
    return MISSED if MISSED in verdicts else UNRESOLVED


# --------------------------------------------------------------------------- interleaved rounds


def rotation(slots: list[str], round_index: int) -> list[str]:
    """The order of round ``round_index``: the slots rotated by one each round (A B, B A, A B, ... for two),
    so every slot takes every position equally often and none always follows the same one."""
    k = round_index % len(slots)
    return slots[k:] + slots[:k]


def timed(fn: Callable, *args, **kwargs) -> Callable[[], float]:
    """A callable that runs ``fn(*args, **kwargs)`` and returns the seconds it took."""
    def run() -> float:
        start = time.perf_counter()
        fn(*args, **kwargs)
        return time.perf_counter() - start
    return run


@dataclass
class Rounds:
    """The samples of interleaved rounds: ``samples[slot][r]`` is slot's value in round r."""

    slots: list[str]
    control: str | None
    samples: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    stopped: str = ""

    @property
    def count(self) -> int:
        return min((len(v) for v in self.samples.values()), default=0)

    def per_round_ratios(self, numerator: str, denominator: str) -> list[float]:
        return [a / b if b else math.nan for a, b in zip(self.samples[numerator], self.samples[denominator])]

    def ratio(self, numerator: str, denominator: str, confidence: float = CONFIDENCE) -> Interval:
        """Median and interval of numerator / denominator taken round by round."""
        return median_interval(self.per_round_ratios(numerator, denominator), confidence)

    def interval(self, slot: str, q: float = 0.5, confidence: float = CONFIDENCE) -> Interval:
        return quantile_interval(self.samples[slot], q, confidence)

    def control_ratio(self) -> Interval:
        """The A/A comparison: the control's second sample of each round over its first."""
        if self.control is None:
            return Interval(math.nan, None, None, 0)
        return self.ratio(self.control + CONTROL_SUFFIX, self.control)

    def resolution(self) -> float | None:
        return resolution(self.control_ratio())

    def describe(self) -> str:
        return f"{self.count} rounds of {', '.join(self.slots)} in rotating order, {self.seconds:.0f} s, " \
               f"stopped: {self.stopped}"


def interleave(variants: dict[str, Callable[[], float]], *, control: str | None = None, seconds: float = 60.0,
               warmup: int = 1, max_rounds: int | None = None, min_rounds: int = 6, precision: float | None = None,
               ratios: list[tuple[str, str]] = (), progress: Callable[[Rounds], None] | None = None,
               clock: Callable[[], float] = time.perf_counter) -> Rounds:
    """Run every variant once per round, in rotating order, after ``warmup`` unrecorded rounds.

    ``control``: a variant that also runs a second time each round, as slot "<control> (A/A)".
    Stops at ``max_rounds``; or once every interval of ``ratios`` and the A/A has a relative half-width
    of at most ``precision`` (after at least ``min_rounds``); or before a round that would end past
    ``seconds`` (judged by the mean round so far; warm-up included, the first round always runs).
    """
    slots = list(variants) + ([control + CONTROL_SUFFIX] if control else [])
    call = dict(variants, **({control + CONTROL_SUFFIX: variants[control]} if control else {}))
    result = Rounds(slots, control, {slot: [] for slot in slots})
    start = clock()
    for r in range(warmup):
        for slot in rotation(slots, r):
            call[slot]()
    rounds_start = clock()
    while True:
        r = result.count
        if max_rounds is not None and r >= max_rounds:
            result.stopped = f"{max_rounds} rounds"
            break
        if precision is not None and r >= min_rounds and _precise_enough(result, ratios, precision):
            result.stopped = f"intervals within ±{precision:.1%}"
            break
        now = clock()
        if r and now - start + (now - rounds_start) / r > seconds:
            result.stopped = f"time cap {seconds:.0f} s"
            break
        for slot in rotation(slots, r):
            result.samples[slot].append(float(call[slot]()))
        result.seconds = clock() - start
        if progress:
            progress(result)
    result.seconds = clock() - start
    return result


def _precise_enough(result: Rounds, ratios, precision: float) -> bool:
    intervals = [result.ratio(a, b) for a, b in ratios] + ([result.control_ratio()] if result.control else [])
    return all(i.relative_half_width() <= precision for i in intervals)


# --------------------------------------------------------------------------- the final block


@dataclass(frozen=True)
class Figure:
    """One reported figure: its interval, the A/A resolution beside it, its target (None: none)."""

    name: str
    interval: Interval
    noise: float | None
    target: Target | None = None
    fmt: str = "{:.3f}"

    @property
    def verdict(self) -> str:
        return verdict(self.interval, self.target, self.noise)

    def cells(self) -> list[str]:
        """name, estimate, interval, A/A resolution, target, verdict: as text."""
        i, f = self.interval, self.fmt.format
        bounds = f"{'-inf' if i.low is None else f(i.low)} .. {'inf' if i.high is None else f(i.high)}"
        if not i.bounded:
            bounds += f" (n={i.n}: too few)"
        noise = "unknown" if self.noise is None else f"±{self.noise:.1%}"
        target = "—" if self.target is None else str(self.target)
        return [self.name, "—" if math.isnan(i.estimate) else f(i.estimate), f"{i.kind} {bounds}", noise,
                target, self.verdict]

    def line(self) -> str:
        """The figure in one sentence, e.g. for a bench's last line or a README table cell."""
        name, estimate, interval, noise, target, verdict = self.cells()
        goal = "" if self.target is None else f"; target {target}: {verdict}"
        return f"{name} {estimate} ({interval}; A/A resolution {noise}{goal})"


def final_block(title: str, figures: list[Figure], note: str = "") -> str:
    """The figures as an aligned table under a title: estimate (the median, or the quantile a figure is of),
    interval, A/A resolution, target, verdict."""
    header = ["figure", "estimate", "interval", "A/A resolution", "target", "verdict"]
    rows = [header] + [fig.cells() for fig in figures]
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    lines = [f"== {title} ==" + (f" ({note})" if note else "")]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)
