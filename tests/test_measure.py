"""bench/measure.py: intervals, verdicts, the A/A control and the rotating order, on synthetic samples."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))

import measure  # noqa: E402


def binomial_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))


# --------------------------------------------------------------------------- intervals


@pytest.mark.parametrize("n,q,ranks", [
    (5, 0.5, (0, 6)),      # 5 rounds cannot bound a median at 95%: 2 * (1/2)^5 = 6.25% > 5%
    (6, 0.5, (1, 6)),      # min .. max of 6: coverage 1 - 2/64 = 96.9%
    (10, 0.5, (2, 9)),
    (20, 0.5, (6, 15)),    # as the sign test's tables give
    (100, 0.5, (40, 61)),
    (71, 0.95, (63, 72)),  # a p95 needs 72 samples for its upper bound: 0.95^71 = 2.6% > 2.5%
    (72, 0.95, (64, 72)),
])
def test_order_statistic_ranks_match_the_binomial_tables(n, q, ranks):
    assert measure.order_statistic_ranks(n, q) == ranks


@pytest.mark.parametrize("n", range(6, 60))
def test_order_statistic_ranks_are_the_narrowest_with_95_percent_coverage(n):
    low, high = measure.order_statistic_ranks(n)
    assert binomial_cdf(low - 1, n, 0.5) <= 0.025 < binomial_cdf(low, n, 0.5)  # one rank up would undercover
    assert 1 - binomial_cdf(high - 1, n, 0.5) <= 0.025 < 1 - binomial_cdf(high - 2, n, 0.5)
    assert binomial_cdf(high - 1, n, 0.5) - binomial_cdf(low - 1, n, 0.5) >= 0.95


def test_median_interval_of_ten_samples():
    i = measure.median_interval([7, 3, 10, 1, 5, 9, 2, 8, 4, 6])
    assert (i.estimate, i.low, i.high, i.n, i.kind) == (5.5, 2, 9, 10, "95% CI")
    assert i.relative_half_width() == pytest.approx(9 / 5.5 - 1)


def test_too_few_samples_leave_the_interval_unbounded():
    i = measure.median_interval([1.0, 1.1, 0.9, 1.2, 1.0, float("nan")])  # nan dropped: 5 samples
    assert (i.estimate, i.low, i.high, i.n) == (1.0, None, None, 5)
    assert not i.bounded and i.relative_half_width() == math.inf


def test_p95_interval_and_sample_quantile():
    values = list(range(1, 101))  # 1 .. 100
    i = measure.quantile_interval(values, 0.95)
    assert i.estimate == pytest.approx(95.05)  # linear interpolation, as numpy
    assert (i.low, i.high) == (90, 100)
    assert measure.quantile_interval(values[:71], 0.95).high is None


def test_intervals_of_thousands_of_samples():
    """A bench's pooled latencies (thousands of answers): comb(n, i) no longer fits a float there."""
    values = [i / 5000 for i in range(5000)]
    p95 = measure.quantile_interval(values, 0.95)
    assert p95.low < p95.estimate < p95.high and 0.943 < p95.low and p95.high < 0.957
    # the normal approximation: 10000 -+ 1.96 * sqrt(20000) / 2 = 9861.4 .. 10138.6 (ranks just outside it)
    assert measure.order_statistic_ranks(20_000, 0.5) == (9861, 10140)


def test_spread_needs_three_runs():
    assert measure.spread([1.0, 2.0]) == measure.Interval(1.5, None, None, 2, "range")
    assert measure.spread([0.9, 0.7, 0.8]) == measure.Interval(0.8, 0.7, 0.9, 3, "range")


# --------------------------------------------------------------------------- verdicts


def rounds_of(ratios: list[float], control: list[float]) -> measure.Rounds:
    """Rounds whose per-round ratio new / ref and A/A ratio are exactly the given values."""
    n = len(ratios)
    return measure.Rounds(["new", "ref", "ref (A/A)"], "ref",
                          {"new": list(ratios), "ref": [1.0] * n, "ref (A/A)": list(control)})


QUIET_CONTROL = [1.0, 0.99, 1.01, 1.0, 0.995, 1.005, 1.0, 1.0, 0.99, 1.01]  # A/A: 0.99 .. 1.01 over 10 rounds


def test_a_clear_win_is_met():
    r = rounds_of([1.00, 1.01, 0.99, 1.02, 1.00, 1.01, 0.98, 1.00, 1.01, 1.00], QUIET_CONTROL)
    ratio = r.ratio("new", "ref")
    assert (ratio.estimate, ratio.low, ratio.high) == (1.0, 0.99, 1.01)
    assert r.control_ratio() == measure.Interval(1.0, 0.99, 1.01, 10)
    assert r.resolution() == pytest.approx(0.01)
    assert measure.verdict(ratio, measure.at_least(0.95), r.resolution()) == measure.MET


def test_a_clear_miss_is_missed():
    r = rounds_of([0.80, 0.82, 0.79, 0.81, 0.80, 0.83, 0.78, 0.80, 0.81, 0.80], QUIET_CONTROL)
    assert measure.verdict(r.ratio("new", "ref"), measure.at_least(0.95), r.resolution()) == measure.MISSED


def test_an_interval_across_the_target_is_not_resolved():
    r = rounds_of([0.90, 0.97, 0.93, 1.00, 0.95, 0.92, 0.99, 0.94, 0.96, 0.91], QUIET_CONTROL)
    ratio = r.ratio("new", "ref")
    assert (ratio.low, ratio.high) == (0.91, 0.99)
    assert measure.verdict(ratio, measure.at_least(0.95), r.resolution()) == measure.UNRESOLVED


def test_a_difference_smaller_than_the_a_a_noise_is_not_resolved():
    """The interval is above the target, but the bench's own A/A noise (±6%) is larger than the margin."""
    noisy_control = [1.0, 0.94, 1.06, 1.0, 0.97, 1.03, 1.0, 1.0, 0.95, 1.05]
    r = rounds_of([0.98, 0.99, 0.97, 0.98, 0.98, 0.99, 0.97, 0.98, 0.98, 0.98], noisy_control)
    ratio = r.ratio("new", "ref")
    assert ratio.low >= 0.95 and r.resolution() == pytest.approx(0.05)
    assert measure.verdict(ratio, measure.at_least(0.95), r.resolution()) == measure.UNRESOLVED
    assert measure.verdict(ratio, measure.at_least(0.95), 0.01) == measure.MET


def test_a_biased_a_a_control_widens_the_resolution():
    """An A/A interval that excludes 1 means the slot order favours one sample: the bias counts as noise."""
    r = rounds_of([1.0] * 10, [1.03, 1.04, 1.05, 1.04, 1.04, 1.03, 1.05, 1.04, 1.06, 1.02])
    assert r.control_ratio().low > 1 and r.resolution() == pytest.approx(0.05)


def test_too_few_rounds_or_no_control_give_no_verdict():
    r = rounds_of([1.0] * 5, [1.0] * 5)
    assert r.resolution() is None
    assert measure.verdict(r.ratio("new", "ref"), measure.at_least(0.95), 0.01) == measure.UNRESOLVED
    assert measure.verdict(measure.Interval(1.0, 0.99, 1.01, 10), measure.at_least(0.95), None) == measure.UNRESOLVED
    assert measure.verdict(measure.Interval(1.0, 0.99, 1.01, 10), None, 0.01) == measure.NO_TARGET


@pytest.mark.parametrize("interval,expected", [
    ((1.00, 0.99, 1.01), measure.MET),
    ((1.05, 1.04, 1.06), measure.MISSED),      # all above the upper bound, by more than the noise
    ((0.95, 0.94, 0.96), measure.MISSED),      # all below the lower bound
    ((1.02, 1.01, 1.04), measure.UNRESOLVED),  # reaches past 1.03
    ((1.035, 1.032, 1.038), measure.UNRESOLVED),  # past 1.03, but by less than the noise
])
def test_within_checks_both_bounds(interval, expected):
    assert measure.verdict(measure.Interval(*interval, 10), measure.within(0.97, 1.03), 0.01) == expected


def test_at_most_and_all_of():
    assert measure.verdict(measure.Interval(41.0, 39.0, 45.0, 100), measure.at_most(100), 0.03) == measure.MET
    assert measure.verdict(measure.Interval(130.0, 120.0, 140.0, 100), measure.at_most(100), 0.03) == measure.MISSED
    assert measure.all_of([measure.MET, measure.MET]) == measure.MET
    assert measure.all_of([measure.MET, measure.UNRESOLVED]) == measure.UNRESOLVED
    assert measure.all_of([measure.UNRESOLVED, measure.MISSED]) == measure.MISSED
    assert measure.all_of([]) == measure.UNRESOLVED
    assert [str(t) for t in (measure.at_least(0.95), measure.at_most(100), measure.within(0.97, 1.03))] == \
        [">= 0.95", "<= 100", "0.97 .. 1.03"]


# --------------------------------------------------------------------------- interleaving


def test_rotation_order():
    assert [measure.rotation(["A", "B"], r) for r in range(3)] == [["A", "B"], ["B", "A"], ["A", "B"]]
    assert [measure.rotation(["A", "B", "C"], r) for r in range(4)] == \
        [["A", "B", "C"], ["B", "C", "A"], ["C", "A", "B"], ["A", "B", "C"]]


def test_interleave_runs_the_control_twice_per_round_in_rotating_order():
    calls = []

    def variant(name, values):
        values = iter(values)

        def run():
            calls.append(name)
            return next(values)
        return run

    rounds = measure.interleave({"app": variant("app", [0, 10, 11, 12]),
                                 "plain": variant("plain", [0, 0, 10, 20, 22, 11, 24, 12])},
                                control="plain", warmup=1, max_rounds=3, seconds=1e9)
    assert rounds.slots == ["app", "plain", "plain (A/A)"]
    assert calls == ["app", "plain", "plain",        # warm-up, not recorded
                     "app", "plain", "plain",        # round 0: app, plain, plain (A/A)
                     "plain", "plain", "app",        # round 1: plain, plain (A/A), app
                     "plain", "app", "plain"]        # round 2: plain (A/A), app, plain
    assert rounds.samples == {"app": [10, 11, 12], "plain": [10, 22, 12], "plain (A/A)": [20, 11, 24]}
    assert rounds.per_round_ratios("app", "plain") == [1.0, 0.5, 1.0]
    assert rounds.per_round_ratios("plain (A/A)", "plain") == [2.0, 0.5, 2.0]
    assert rounds.stopped == "3 rounds" and rounds.count == 3


def test_interleave_stops_before_a_round_that_would_pass_the_time_cap():
    now = [0.0]

    def one_second():
        now[0] += 1.0
        return 1.0

    rounds = measure.interleave({"a": one_second, "b": one_second}, seconds=10, warmup=1, clock=lambda: now[0])
    # warm-up ends at 2 s; rounds of 2 s end at 4, 6, 8, 10; an 11th second would be past the cap
    assert rounds.count == 4 and now[0] == 10.0 and rounds.seconds == 10.0
    assert rounds.stopped == "time cap 10 s"


def test_interleave_stops_once_the_intervals_are_narrow_enough():
    rounds = measure.interleave({"a": lambda: 2.0, "b": lambda: 1.0}, control="b", seconds=1e9, precision=0.01,
                                ratios=[("a", "b")], min_rounds=6)
    assert rounds.count == 6 and rounds.stopped == "intervals within ±1.0%"
    assert rounds.ratio("a", "b") == measure.Interval(2.0, 2.0, 2.0, 6)
    assert rounds.resolution() == 0.0


def test_timed_returns_seconds():
    assert 0 <= measure.timed(sum, [1, 2])() < 1


# --------------------------------------------------------------------------- the final block


def test_final_block_shows_interval_resolution_and_verdict():
    figures = [measure.Figure("app / plain", measure.Interval(0.97, 0.93, 1.01, 10), 0.02, measure.at_least(0.95)),
               measure.Figure("MFU", measure.Interval(0.281, 0.27, 0.29, 10), 0.02, fmt="{:.1%}"),
               measure.Figure("few", measure.Interval(1.0, None, None, 3), None, measure.at_least(0.95))]
    lines = measure.final_block("bench", figures, "10 rounds").splitlines()
    assert lines[0] == "== bench == (10 rounds)"
    assert lines[1].split() == ["figure", "estimate", "interval", "A/A", "resolution", "target", "verdict"]
    assert lines[2].split() == ["app", "/", "plain", "0.970", "95%", "CI", "0.930", "..", "1.010", "±2.0%", ">=",
                                "0.95", "not", "resolved", "at", "this", "noise", "level"]
    assert lines[3].split() == ["MFU", "28.1%", "95%", "CI", "27.0%", "..", "29.0%", "±2.0%", "—", "—"]
    assert "-inf .. inf (n=3: too few)  unknown" in lines[4]


def test_scaled_interval_and_one_line_summary():
    i = measure.Interval(0.5, 0.25, None, 7).scaled(4)
    assert i == measure.Interval(2.0, 1.0, None, 7)
    fig = measure.Figure("worst p95 ms", measure.Interval(41.0, 39.5, 45.25, 100), 0.031, measure.at_most(100),
                         fmt="{:.1f}")
    assert fig.line() == "worst p95 ms 41.0 (95% CI 39.5 .. 45.2; A/A resolution ±3.1%; target <= 100: met)"
